//! A virtual cluster on one machine: a network namespace per host, a bridge in a namespace of
//! its own, a veth per host, and `tc` tbf on both directions of every host's link so that each
//! host behaves like a NIC of the scenario's rate. Needs root.
//!
//! Addresses come from a fixed test range (10.213.0.0/24) that exists only inside these
//! namespaces; there is no default route, so nothing can leave them. One-way latency uses
//! `tc netem` where the kernel has it; otherwise (as on kernels without netem) it is emulated
//! in the transport, and [`VirtualCluster::latency_method`] says which.
//!
//! Everything is torn down when the cluster is dropped (normal end, error, Ctrl-C through the
//! launcher), and [`cleanup_all`] removes what a crashed run left.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use topolab_core::units::{BitRate, Time};

/// Prefix of every namespace this module creates.
pub const PREFIX: &str = "topolab-";

/// True when running as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("cannot run `ip` (install iproute2): {e}"))?;
    if !out.status.success() {
        return Err(format!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn tc(ns: &str, args: &[&str]) -> Result<(), String> {
    let mut all = vec!["netns", "exec", ns, "tc"];
    all.extend_from_slice(args);
    let out = Command::new("ip").args(&all).output().map_err(|e| format!("cannot run `tc`: {e}"))?;
    if !out.status.success() {
        return Err(format!("`tc {}` in {ns} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// Each shaped link's queue, as time at its rate (tbf `latency`): drop-tail, as a switch port's.
pub const QUEUE: Time = Time(50_000_000);

/// The TCP congestion control every virtual host uses: CUBIC, Linux's default, whatever the
/// machine running the replay has chosen for itself (its sharing of a drop-tail queue is what
/// real clusters see; a pacing one such as BBR shares a burst out differently).
pub const CONGESTION_CONTROL: &str = "cubic";

/// The route every virtual host reaches the others by (its addresses' /16).
const CLUSTER_ROUTE: &str = "10.213.0.0/16";

/// Makes every connection of namespace `ns` to the other virtual hosts use
/// [`CONGESTION_CONTROL`], through the `congctl` metric of the cluster route.
///
/// Why a route and not the namespace's `net.ipv4.tcp_congestion_control`: a host may allow
/// only some algorithms (`net.ipv4.tcp_allowed_congestion_control`, global, e.g. `reno bbr`),
/// and a namespace other than the first cannot then select one outside that list (the sysctl
/// write fails). A route's congestion control applies to active and passive connections alike,
/// needs only CAP_NET_ADMIN inside the namespace, and changes nothing outside it. The one really
/// in force is measured afterwards ([`VirtualCluster::probe_congestion_control`]).
fn route_congestion_control(ns: &str, addr: Ipv4Addr) -> Result<(), String> {
    let src = addr.to_string();
    ip(&[
        "-n",
        ns,
        "route",
        "replace",
        CLUSTER_ROUTE,
        "dev",
        "eth0",
        "proto",
        "kernel",
        "scope",
        "link",
        "src",
        &src,
        "congctl",
        CONGESTION_CONTROL,
    ])
    .map(|_| ())
}

/// The congestion control of a connected TCP socket (`TCP_CONGESTION`).
fn socket_congestion_control(s: &std::net::TcpStream) -> Result<String, String> {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 32];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `buf`, which outlives the call.
    let r = unsafe {
        libc::getsockopt(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_CONGESTION, buf.as_mut_ptr().cast(), &mut len)
    };
    if r != 0 {
        return Err(format!("getsockopt(TCP_CONGESTION): {}", std::io::Error::last_os_error()));
    }
    let n = buf[..len as usize].iter().position(|&b| b == 0).unwrap_or(len as usize);
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The default congestion control of namespace `ns` (what its connections use without a route
/// metric).
fn namespace_congestion_control(ns: &str) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", "/proc/sys/net/ipv4/tcp_congestion_control"])
        .output()
        .map_err(|e| format!("cannot run `ip netns exec`: {e}"))?;
    let cc = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || cc.is_empty() {
        return Err(format!(
            "cannot read TCP congestion control in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(cc)
}

/// Namespaces of a virtual cluster.
#[derive(Debug)]
pub struct VirtualCluster {
    /// Run identifier in the namespace names.
    pub id: String,
    bridge: String,
    /// Host namespaces, in host order.
    pub hosts: Vec<String>,
    /// Host addresses.
    pub addrs: Vec<Ipv4Addr>,
    /// "netem" or "emulated in the transport".
    pub latency_method: String,
    /// TCP congestion control a connection between two virtual hosts really uses, measured on
    /// both ends of a probe connection ([`CONGESTION_CONTROL`] where the kernel has it).
    pub congestion_control: String,
    /// Why the hosts do not use [`CONGESTION_CONTROL`], when they do not (printed and recorded).
    pub congestion_warning: Option<String>,
    torn_down: bool,
}

impl VirtualCluster {
    /// Creates `hosts` hosts whose links are shaped to `rate` in both directions, with one-way
    /// `latency` (netem where available).
    pub fn create(id: &str, hosts: usize, rate: BitRate, latency: Time) -> Result<VirtualCluster, String> {
        if !is_root() {
            return Err(
                "the netns launcher needs root (network namespaces, veth and tc); run as root or use --launcher local"
                    .into(),
            );
        }
        let mut c = VirtualCluster {
            id: id.into(),
            bridge: format!("{PREFIX}{id}-br"),
            hosts: (0..hosts).map(|i| format!("{PREFIX}{id}-h{i}")).collect(),
            addrs: (0..hosts).map(|i| Ipv4Addr::new(10, 213, (i / 250) as u8, (i % 250 + 1) as u8)).collect(),
            latency_method: "none".into(),
            congestion_control: String::new(),
            congestion_warning: None,
            torn_down: false,
        };
        // On any error the partly built cluster is dropped, which tears it down.
        c.build(rate, latency)?;
        Ok(c)
    }

    fn build(&mut self, rate: BitRate, latency: Time) -> Result<(), String> {
        ip(&["netns", "add", &self.bridge])?;
        ip(&["-n", &self.bridge, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &self.bridge, "link", "set", "br0", "up"])?;
        // tbf: rate in bit/s and a 50 ms queue. The bucket holds one 64 KiB GSO segment or
        // 1 ms at the rate, whichever is more: enough for full-rate TCP (with one segment at
        // 1 Gbit/s, CUBIC lost 5-10 % of the rate and the qdisc's timers burnt about a core),
        // small enough that a transfer after an idle spell rushes out ahead of the line rate by
        // little (which a fluid model of the link cannot know about).
        let rate_s = format!("{}bit", rate.0.round() as u64);
        let queue = format!("{}ms", QUEUE.0 / 1_000_000);
        let burst = format!("{}", ((rate.0 / 8.0 * 0.001) as u64).max(64 * 1024 + 1514));
        let mut netem = true;
        for (i, ns) in self.hosts.clone().iter().enumerate() {
            ip(&["netns", "add", ns])?;
            let port = format!("p{i}");
            ip(&["-n", &self.bridge, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", ns])?;
            ip(&["-n", &self.bridge, "link", "set", &port, "master", "br0", "up"])?;
            let cidr = format!("{}/16", self.addrs[i]);
            ip(&["-n", ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            if let Err(e) = route_congestion_control(ns, self.addrs[i]) {
                // Recorded and reported, never silent: the probe below says what is in force.
                self.congestion_warning =
                    Some(format!("cannot give the virtual hosts {CONGESTION_CONTROL} congestion control: {e}"));
            }
            // Host -> switch: shape the host's egress; switch -> host: shape the bridge port.
            if latency.0 > 0 && netem {
                let delay = format!("{}us", latency.0 / 1000);
                if tc(ns, &["qdisc", "add", "dev", "eth0", "root", "handle", "1:", "netem", "delay", &delay]).is_ok() {
                    tc(
                        ns,
                        &[
                            "qdisc", "add", "dev", "eth0", "parent", "1:", "handle", "2:", "tbf", "rate", &rate_s,
                            "burst", &burst, "latency", &queue,
                        ],
                    )?;
                } else {
                    netem = false;
                }
            }
            if latency.0 == 0 || !netem {
                tc(
                    ns,
                    &[
                        "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", &rate_s, "burst", &burst, "latency",
                        &queue,
                    ],
                )?;
            }
            tc(
                &self.bridge,
                &["qdisc", "add", "dev", &port, "root", "tbf", "rate", &rate_s, "burst", &burst, "latency", &queue],
            )?;
        }
        self.latency_method = if latency.0 == 0 {
            "none".into()
        } else if netem {
            "netem".into()
        } else {
            "emulated in the transport (this kernel has no netem)".into()
        };
        self.congestion_control = self.probe_congestion_control()?;
        if self.congestion_control != CONGESTION_CONTROL && self.congestion_warning.is_none() {
            self.congestion_warning = Some(format!(
                "the virtual hosts use {} congestion control, not {CONGESTION_CONTROL}",
                self.congestion_control
            ));
        }
        Ok(())
    }

    /// The congestion control in force between the virtual hosts: one probe connection from
    /// host 1 to host 0, read on both ends (they must agree). A one-host cluster has no
    /// connection between hosts: its namespace's default is reported.
    pub fn probe_congestion_control(&self) -> Result<String, String> {
        if self.hosts.len() < 2 {
            return namespace_congestion_control(&self.hosts[0]);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let server = {
            let c = (self.hosts[0].clone(), self.addrs[0]);
            std::thread::spawn(move || -> Result<String, String> {
                enter_namespace(&c.0)?;
                let l = std::net::TcpListener::bind((c.1, 0)).map_err(|e| format!("probe listener: {e}"))?;
                let port = l.local_addr().map_err(|e| e.to_string())?.port();
                let _ = tx.send(port);
                l.set_nonblocking(true).map_err(|e| e.to_string())?;
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                loop {
                    match l.accept() {
                        Ok((s, _)) => return socket_congestion_control(&s),
                        Err(e)
                            if e.kind() == std::io::ErrorKind::WouldBlock && std::time::Instant::now() < deadline =>
                        {
                            std::thread::sleep(std::time::Duration::from_millis(2));
                        }
                        Err(e) => return Err(format!("probe accept: {e}")),
                    }
                }
            })
        };
        let port = rx.recv_timeout(std::time::Duration::from_secs(5)).map_err(|_| "probe listener did not start")?;
        let client = {
            let (ns, to) = (self.hosts[1].clone(), std::net::SocketAddr::from((self.addrs[0], port)));
            std::thread::spawn(move || -> Result<String, String> {
                enter_namespace(&ns)?;
                let s = std::net::TcpStream::connect_timeout(&to, std::time::Duration::from_secs(5))
                    .map_err(|e| format!("probe connect to {to}: {e}"))?;
                socket_congestion_control(&s)
            })
        };
        let a = client.join().map_err(|_| "probe client panicked")??;
        let b = server.join().map_err(|_| "probe server panicked")??;
        if a != b {
            return Err(format!("a probe connection uses {a} on one end and {b} on the other"));
        }
        Ok(a)
    }

    /// True when the kernel delays packets itself (the transport must not add latency).
    pub fn kernel_latency(&self) -> bool {
        self.latency_method == "netem"
    }

    /// A command that runs `exe` inside host `i`'s namespace (`ip netns exec` keeps the PID).
    pub fn command(&self, i: usize, exe: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.hosts[i]]).arg(exe);
        c
    }

    /// Moves the calling thread into host `i`'s namespace (sockets it opens then live there).
    pub fn enter(&self, i: usize) -> Result<(), String> {
        enter_namespace(&self.hosts[i])
    }

    /// Deletes every namespace of the cluster (their veths and qdiscs go with them).
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        for ns in self.hosts.iter().chain(std::iter::once(&self.bridge)) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

impl Drop for VirtualCluster {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Moves the calling thread into namespace `ns`.
fn enter_namespace(ns: &str) -> Result<(), String> {
    let path = format!("/var/run/netns/{ns}");
    let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    use std::os::fd::AsRawFd;
    // SAFETY: setns on a namespace file descriptor we hold open; affects this thread only.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(format!("setns into {ns}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Names of existing namespaces created by this module.
pub fn leftovers() -> Vec<String> {
    ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(String::from)
        .collect()
}

/// Deletes namespaces left by crashed runs whose launcher process is gone. Returns their names.
pub fn cleanup_all() -> Vec<String> {
    let mut removed = Vec::new();
    for ns in leftovers() {
        // Names are topolab-<launcher pid>[-<n>]-br|-h<i>.
        let pid: Option<u32> = ns.strip_prefix(PREFIX).and_then(|r| r.split('-').next()).and_then(|p| p.parse().ok());
        let alive = pid.is_some_and(|p| p != std::process::id() && Path::new(&format!("/proc/{p}")).exists());
        // A namespace still held by an exiting process is busy for a moment: retry.
        if !alive
            && (0..50).any(|_| {
                ip(&["netns", "del", &ns]).is_ok() || {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    false
                }
            })
        {
            removed.push(ns);
        }
    }
    removed
}
