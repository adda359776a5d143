//! The local and netns launchers: a job's tasks as child processes of this one, on 127.0.0.1
//! or each in its host's network namespace of a [`VirtualCluster`].
//!
//! Each topolab shard binds port 0 (on loopback) or its host's address and reports the port it
//! got on stdout (no race for free ports); then the workers start with the shards' addresses.
//! TensorFlow's tasks and the workers of a ring all-reduce get reserved ports (loopback) or
//! fixed ones per host. The tasks write their traces into the run directory themselves, so
//! collecting them is nothing to do. Only processes this launcher started are ever stopped, by
//! PID.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use topolab_core::scenario::{PsHosts, Scenario, TopologyKind};

use crate::checkpoint;
use crate::cluster::{ClusterSpec, ENV, Job, Task};
use crate::launcher::{Engine, Launcher, LauncherKind, NetworkInfo, Pids, ReplayError, TF_JOB, TF_PROGRAM, TaskCounts};
use crate::netns::VirtualCluster;

/// First port of the tasks with reserved addresses on a virtual cluster (each host has its own
/// address; a co-located shard and its worker differ by port).
const BASE_PORT: u16 = 20_000;

fn io(e: impl std::fmt::Display) -> ReplayError {
    ReplayError::Io(e.to_string())
}

/// Tasks as local processes, on loopback or in network namespaces.
pub struct Processes {
    kind: LauncherKind,
    cluster: Option<VirtualCluster>,
    engine: Engine,
    exe: PathBuf,
    out: PathBuf,
    timeout_s: u64,
    workers: u32,
    start_step: u64,
    /// (task name, log file, child)
    children: Vec<(String, PathBuf, Child)>,
}

impl Processes {
    /// Tasks on 127.0.0.1.
    pub fn local(engine: Engine, exe: &Path, out: &Path, timeout_s: u64) -> Processes {
        Processes {
            kind: LauncherKind::Local,
            cluster: None,
            engine,
            exe: exe.into(),
            out: out.into(),
            timeout_s,
            workers: 0,
            start_step: 0,
            children: Vec::new(),
        }
    }

    /// Tasks in the network namespaces of a virtual cluster (root), made by
    /// [`Launcher::prepare`]: one host per worker, plus one per shard when the shards are
    /// dedicated, links shaped to the scenario's NIC and latency. Its hosts are written to
    /// `out`/netns.json; the namespaces go when this launcher does.
    pub fn netns(engine: Engine, exe: &Path, out: &Path, timeout_s: u64) -> Processes {
        let mut p = Processes::local(engine, exe, out, timeout_s);
        p.kind = LauncherKind::Netns;
        p
    }

    fn stop_children(&mut self) {
        for (_, _, c) in &mut self.children {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        self.children.clear();
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        // Tasks first: a task inside a namespace keeps it busy.
        self.stop_children();
    }
}

impl Launcher for Processes {
    fn kind(&self) -> LauncherKind {
        self.kind
    }

    fn prepare(&mut self, s: &Scenario) -> Result<(), ReplayError> {
        if self.kind != LauncherKind::Netns || self.cluster.is_some() {
            return Ok(());
        }
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let t = &s.spec.topology;
        let id = format!("{}-{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        let hosts = (t.workers + s.ps_hosts()) as usize;
        let c = VirtualCluster::create(&id, hosts, s.nic, s.spec.network.latency).map_err(|e| {
            if crate::netns::is_root() {
                ReplayError::Io(e)
            } else {
                ReplayError::Refused { scenario: s.spec.name.clone(), reason: e }
            }
        })?;
        checkpoint::write_atomic(
            &self.out.join("netns.json"),
            serde_json::to_string(&c.hosts).expect("JSON").as_bytes(),
        )
        .map_err(io)?;
        self.cluster = Some(c);
        Ok(())
    }

    fn network(&self) -> NetworkInfo {
        match &self.cluster {
            Some(c) => NetworkInfo {
                kernel_latency: c.kernel_latency(),
                latency_method: c.latency_method.clone(),
                congestion_control: c.congestion_control.clone(),
                congestion_warning: c.congestion_warning.clone(),
            },
            None => NetworkInfo {
                kernel_latency: false,
                latency_method: String::new(),
                congestion_control: crate::launcher::host_congestion_control(),
                congestion_warning: None,
            },
        }
    }

    fn start(&mut self, s: &Scenario, job: &Job) -> Result<(), ReplayError> {
        let t = &s.spec.topology;
        self.workers = crate::launcher::worker_tasks(s);
        self.start_step = job.start_step;
        let cluster = self.cluster.as_ref();
        let workers: Vec<String> = (0..t.workers).map(|i| format!("worker{i}")).collect();
        let mut addrs = Vec::new();
        let mut pids = Pids::default();
        let spec_for = |kind: &str, index: u32, ps: Vec<String>, bind: String| ClusterSpec {
            ps,
            worker: workers.clone(),
            task: Task { kind: kind.into(), index },
            job: Job { bind, ..job.clone() },
        };
        // Hosts: worker i on host i; shard j on host workers + j, or on worker j's host when
        // co-located.
        let ps_host = |j: u32| if t.ps_hosts == PsHosts::Dedicated { (t.workers + j) as usize } else { j as usize };
        let bind = |host: usize| cluster.map_or_else(|| job.bind.clone(), |c| format!("{}:0", c.addrs[host]));
        let logs = self.out.join("logs");
        if let Engine::Tensorflow(tf) = &self.engine {
            let hosts: Vec<usize> = (0..t.ps).map(ps_host).chain((0..t.workers).map(|i| i as usize)).collect();
            let all = reserved_addresses(&hosts, cluster)?;
            let (ps, workers) = all.split_at(t.ps as usize);
            for (k, &h) in hosts.iter().enumerate() {
                let (kind, index) =
                    if k < t.ps as usize { ("ps", k as u32) } else { ("worker", (k - t.ps as usize) as u32) };
                let log = logs.join(format!("{kind}-{index}.log"));
                let config = crate::tensorflow::tf_config(ps, workers, kind, index);
                let child = spawn_tf(tf, &self.out, config, &log, cluster.map(|c| (c, h)))?;
                if kind == "ps" {
                    pids.ps.push(child.id())
                } else {
                    pids.worker.push(child.id())
                }
                self.children.push((format!("{kind} {index}"), log, child));
            }
        } else if t.kind == TopologyKind::AllReduce {
            // A ring: each rank listens at its own address (reserved, as TensorFlow's) and
            // connects to the next; no shards. A multi-GPU host runs a rank per GPU, in its
            // namespace (named `worker H gpu G`: a kill of `worker H` stops the whole host).
            let gpus = s.spec.hardware.gpus_per_host;
            let hosts: Vec<usize> = (0..self.workers).map(|r| (r / gpus) as usize).collect();
            let ring = reserved_addresses(&hosts, cluster)?;
            for i in 0..self.workers {
                let (h, g) = (i / gpus, i % gpus);
                let (name, log) = if gpus == 1 {
                    (format!("worker {i}"), logs.join(format!("worker-{i}.log")))
                } else {
                    (format!("worker {h} gpu {g}"), logs.join(format!("worker-{h}-gpu-{g}.log")))
                };
                let host = cluster.map(|c| (c, h as usize));
                let spec = ClusterSpec {
                    ps: Vec::new(),
                    worker: ring.clone(),
                    task: Task { kind: "worker".into(), index: i },
                    job: Job { bind: ring[i as usize].clone(), ..job.clone() },
                };
                let child = spawn(&self.exe, &spec, &log, false, host)?;
                pids.worker.push(child.id());
                self.children.push((name, log, child));
            }
        } else {
            for i in 0..t.ps {
                let log = logs.join(format!("ps-{i}.log"));
                let host = cluster.map(|c| (c, ps_host(i)));
                let mut child = spawn(&self.exe, &spec_for("ps", i, Vec::new(), bind(ps_host(i))), &log, true, host)?;
                pids.ps.push(child.id());
                let stdout = child.stdout.take().expect("piped");
                self.children.push((format!("ps {i}"), log.clone(), child));
                // The shard reports the address it bound.
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let mut line = String::new();
                    let _ = BufReader::new(stdout).read_line(&mut line);
                    let _ = tx.send(line);
                });
                let line = rx.recv_timeout(Duration::from_secs(self.timeout_s)).unwrap_or_default();
                match line.trim().strip_prefix("LISTENING ") {
                    Some(a) => addrs.push(a.to_string()),
                    None => {
                        let (name, log, c) = self.children.last_mut().expect("just pushed");
                        let status =
                            c.try_wait().ok().flatten().map_or("did not report its address".into(), status_words);
                        return Err(ReplayError::TaskFailed {
                            task: name.clone(),
                            status,
                            log: log.display().to_string(),
                            tail: tail(log, 10),
                        });
                    }
                }
            }
            for i in 0..t.workers {
                let log = logs.join(format!("worker-{i}.log"));
                let host = cluster.map(|c| (c, i as usize));
                let child =
                    spawn(&self.exe, &spec_for("worker", i, addrs.clone(), bind(i as usize)), &log, false, host)?;
                pids.worker.push(child.id());
                self.children.push((format!("worker {i}"), log, child));
            }
        }
        checkpoint::write_atomic(&self.out.join("pids.json"), serde_json::to_string(&pids).expect("JSON").as_bytes())
            .map_err(io)
    }

    fn progress(&mut self) -> Vec<u64> {
        // Each worker rewrites its progress file after every step.
        (0..self.workers)
            .map(|i| {
                std::fs::read_to_string(self.out.join("trace").join(format!("worker-{i}.progress")))
                    .ok()
                    .and_then(|x| x.trim().parse::<u64>().ok())
                    .unwrap_or(self.start_step)
            })
            .collect()
    }

    fn poll(&mut self) -> Result<TaskCounts, ReplayError> {
        let mut n = TaskCounts::default();
        for (name, log, c) in &mut self.children {
            match c.try_wait().map_err(io)? {
                Some(st) if !st.success() => {
                    return Err(ReplayError::TaskFailed {
                        task: name.clone(),
                        status: status_words(st),
                        log: log.display().to_string(),
                        tail: tail(log, 10),
                    });
                }
                Some(_) => {}
                None if name.starts_with("worker") => n.workers_running += 1,
                None => n.ps_running += 1,
            }
        }
        Ok(n)
    }

    fn kill(&mut self, task: &str) -> Result<(), ReplayError> {
        // A host's GPUs are ranks of their own: the kill of `worker H` takes them all.
        let gpu_of_host = format!("{task} gpu ");
        for (_, _, c) in self.children.iter_mut().filter(|(name, _, _)| name == task || name.starts_with(&gpu_of_host))
        {
            // SIGKILL to a task this launcher started (its own child, by PID).
            let _ = c.kill();
        }
        Ok(())
    }

    fn stop(&mut self) -> Result<(), ReplayError> {
        self.stop_children();
        Ok(())
    }

    fn collect(&mut self, _trace: &Path) -> Result<(), ReplayError> {
        // The tasks wrote their traces into the run directory themselves.
        Ok(())
    }
}

/// Starts a TensorFlow task: the task program under the engine's Python, its cluster spec in
/// TF_CONFIG, in its host's namespace.
fn spawn_tf(
    tf: &crate::tensorflow::TensorFlow,
    out: &Path,
    tf_config: String,
    log: &Path,
    host: Option<(&VirtualCluster, usize)>,
) -> Result<Child, ReplayError> {
    let err = std::fs::File::create(log).map_err(io)?;
    let mut cmd = match host {
        Some((c, i)) => c.command(i, &tf.python),
        None => Command::new(&tf.python),
    };
    cmd.arg(out.join(TF_PROGRAM))
        .env("TF_CONFIG", tf_config)
        .env("TOPOLAB_TF_JOB", out.join(TF_JOB))
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
    cmd.spawn().map_err(|e| ReplayError::Io(format!("cannot start {}: {e}", tf.python.display())))
}

/// Addresses of tasks that must know each other's before they start (TensorFlow's, shards
/// then workers; a ring's workers): on loopback, free ports below the ephemeral range
/// ([`reserve_loopback`], released just before the tasks start); on a virtual cluster, each
/// host's address and a fixed port.
fn reserved_addresses(hosts: &[usize], cluster: Option<&VirtualCluster>) -> Result<Vec<String>, ReplayError> {
    match cluster {
        Some(c) => {
            Ok(hosts.iter().enumerate().map(|(k, &h)| format!("{}:{}", c.addrs[h], BASE_PORT + k as u16)).collect())
        }
        None => {
            let listeners = reserve_loopback(hosts.len()).map_err(io)?;
            listeners.iter().map(|l| l.local_addr().map(|a| a.to_string()).map_err(io)).collect()
        }
    }
}

/// Lowest port of the loopback reservations.
const RESERVED_LOW: u16 = 10_000;

/// `n` free loopback ports, held until the caller drops them, chosen below the kernel's
/// ephemeral range: outgoing connections take their source ports from that range, so a port
/// reserved there and released could be taken by any connection (another replay's, say)
/// before its task binds it. Each replay starts its search at its own place, so that replays
/// running at once rarely look at the same ports.
fn reserve_loopback(n: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|x| x.parse::<u16>().ok()))
        .unwrap_or(32_768);
    let span = u32::from(ephemeral_low.saturating_sub(RESERVED_LOW));
    if span < 1_000 {
        // No room below the ephemeral range: let the kernel choose.
        return (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect();
    }
    let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let start = (std::process::id().wrapping_mul(7_919) ^ k.wrapping_mul(104_729)) % span;
    let mut out = Vec::with_capacity(n);
    for i in 0..span {
        if out.len() == n {
            break;
        }
        let port = RESERVED_LOW + ((start + i) % span) as u16;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            out.push(l);
        }
    }
    if out.len() < n {
        return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "no free loopback ports to reserve"));
    }
    Ok(out)
}

fn spawn(
    exe: &Path,
    spec: &ClusterSpec,
    log: &Path,
    stdout: bool,
    host: Option<(&VirtualCluster, usize)>,
) -> Result<Child, ReplayError> {
    let err = std::fs::File::create(log).map_err(io)?;
    let mut cmd = match host {
        Some((c, i)) => c.command(i, exe),
        None => Command::new(exe),
    };
    cmd.arg("node").env(ENV, serde_json::to_string(spec).expect("JSON")).stdin(Stdio::null()).stderr(err);
    cmd.stdout(if stdout { Stdio::piped() } else { Stdio::null() });
    cmd.spawn().map_err(|e| ReplayError::Io(format!("cannot start {}: {e}", exe.display())))
}

/// The last `n` lines of a log file.
pub(crate) fn tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn status_words(st: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown status".into(),
    }
}
