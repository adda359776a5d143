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

/// Sets namespace `ns`'s TCP congestion control to [`CONGESTION_CONTROL`] if the kernel has it;
/// returns the one in force.
fn set_congestion_control(ns: &str) -> Result<String, String> {
    const KNOB: &str = "/proc/sys/net/ipv4/tcp_congestion_control";
    let script = format!(
        "grep -qw {CONGESTION_CONTROL} /proc/sys/net/ipv4/tcp_available_congestion_control && echo {CONGESTION_CONTROL} > {KNOB}; cat {KNOB}"
    );
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", &script])
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
    /// TCP congestion control inside the hosts' namespaces ([`CONGESTION_CONTROL`] where the
    /// kernel has it, else the kernel's default, named).
    pub congestion_control: String,
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
            self.congestion_control = set_congestion_control(ns)?;
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
        Ok(())
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
        let path = format!("/var/run/netns/{}", self.hosts[i]);
        let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a namespace file descriptor we hold open; affects this thread only.
        let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        if r != 0 {
            return Err(format!("setns into {}: {}", self.hosts[i], std::io::Error::last_os_error()));
        }
        Ok(())
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
