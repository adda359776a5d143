//! The coordinator: starts a job's tasks as real processes, watches them, collects their
//! traces and stops the parameter servers when the workers are done.
//!
//! The `local` launcher runs every task on 127.0.0.1: each shard binds port 0 and reports the
//! port it got on stdout (no race for free ports), then the workers start with the shards'
//! addresses. If any task dies, the job fails with that task's exit status and the last lines
//! of its log, and every other task is stopped (by PID; only processes this launcher started).
//! Ctrl-C stops the job the same way.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use topolab_core::plan::Plan;
use topolab_core::profile::GemmPrecision;
use topolab_core::records::{self, Breakdown, ComputeInfo, ReplayInfo, Restart, RunSummary, StepRecord, Utilization};
use topolab_core::scenario::{Backend as BackendKind, Mode, Scenario, ScenarioFile, Topology};

use crate::checkpoint;
use crate::cluster::Job;
use crate::proxy::Proxy;
use crate::wire::{Token, monotonic_ns};

/// Where a replay's tasks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LauncherKind {
    /// Processes on 127.0.0.1.
    Local,
    /// Processes in network namespaces with shaped links (root).
    Netns,
    /// Pods of a Kubernetes cluster ([`crate::k8s`]).
    K8s,
}

impl LauncherKind {
    /// The launcher's name on the command line and in summaries.
    pub fn name(self) -> &'static str {
        match self {
            LauncherKind::Local => "local",
            LauncherKind::Netns => "netns",
            LauncherKind::K8s => "k8s",
        }
    }
}

/// What runs the tasks of a replay.
#[derive(Debug, Clone, PartialEq)]
pub enum Engine {
    /// topolab's own runtime (`topolab node`).
    Topolab,
    /// Real TensorFlow (its v1 distributed runtime), with this Python.
    Tensorflow(crate::tensorflow::TensorFlow),
}

impl Engine {
    /// The engine's name in summaries, with TensorFlow's version.
    pub fn describe(&self) -> String {
        match self {
            Engine::Topolab => "topolab".into(),
            Engine::Tensorflow(tf) => format!("tensorflow {}", tf.version),
        }
    }
}

/// How to run a replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Local processes or a virtual cluster.
    pub launcher: LauncherKind,
    /// What runs the tasks.
    pub engine: Engine,
    /// The `topolab` executable (its `node` subcommand runs a task).
    pub exe: PathBuf,
    /// Output directory.
    pub out: PathBuf,
    /// Continue from the last complete checkpoint.
    pub resume: bool,
    /// Seconds to wait for a peer before a task gives up.
    pub timeout_s: u64,
    /// Where to report progress while the tasks run (a progress bar, say): worker-steps done
    /// and to do, about five times a second.
    pub progress: Option<std::sync::mpsc::Sender<Progress>>,
}

/// Progress of a running replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Worker-steps done (over every worker, since the start or the checkpoint resumed from).
    pub done: u64,
    /// Worker-steps of the whole run.
    pub total: u64,
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The scenario cannot be replayed here (bad input).
    #[error("cannot replay {scenario}: {reason}")]
    Refused {
        /// Scenario.
        scenario: String,
        /// Why.
        reason: String,
    },
    /// A task died.
    #[error("task {task} failed ({status}); last lines of its log ({log}):\n{tail}")]
    TaskFailed {
        /// Which task.
        task: String,
        /// Exit status in words.
        status: String,
        /// Its log file.
        log: String,
        /// Its last log lines.
        tail: String,
    },
    /// Interrupted (Ctrl-C).
    #[error("interrupted; every task was stopped")]
    Interrupted,
    /// I/O.
    #[error("{0}")]
    Io(String),
}

/// What a replay produced.
#[derive(Debug, Clone)]
pub struct ReplayOutcome {
    /// Summary of the measured run.
    pub summary: RunSummary,
    /// Step records.
    pub steps: Vec<StepRecord>,
    /// The effective scenario that ran.
    pub effective: PathBuf,
    /// First step run (0, or the checkpoint resumed from).
    pub start_step: u64,
    /// Mean loss per step (over workers), in step order.
    pub loss: Vec<(u64, f64)>,
    /// How it ran: launcher, congestion control, latency (also in the summary).
    pub info: ReplayInfo,
}

/// PIDs of a job's tasks, written to `pids.json` for `--cleanup` and for tests.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pids {
    /// Shard PIDs.
    pub ps: Vec<u32>,
    /// Worker PIDs.
    pub worker: Vec<u32>,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Asks a running [`replay`] to stop: every task is stopped, the namespaces are removed, and
/// it returns [`ReplayError::Interrupted`]. Async-signal-safe (one atomic store): the binary's
/// SIGINT handler calls it; the library installs no handler of its own.
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn io(e: impl std::fmt::Display) -> ReplayError {
    ReplayError::Io(e.to_string())
}

fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

/// Where a replay's workers compute.
#[derive(Debug, Clone)]
pub enum ReplayCompute {
    /// ndarray on the machine's cores.
    Cpu,
    /// One CUDA device, shared by every worker.
    Cuda {
        /// The device, as probed before the tasks started.
        device: crate::compute::DeviceInfo,
        /// Its measured 4096^3 GEMM rate per precision it runs.
        rates: Vec<(GemmPrecision, topolab_core::units::FlopRate)>,
    },
    /// One GPU per worker pod (`nvidia.com/gpu: 1`) on a Kubernetes cluster's nodes: not
    /// probed from here, so the effective scenario keeps the scenario's own GPU.
    ClusterGpu,
}

impl ReplayCompute {
    /// What the summary records.
    pub fn info(&self, workers: u32, precision: topolab_core::scenario::Precision) -> ComputeInfo {
        match self {
            ReplayCompute::Cpu => ComputeInfo {
                backend: "cpu".into(),
                device: crate::calibrate::cpu_model(),
                ordinal: 0,
                compute_capability: String::new(),
                workers_per_device: 1,
                precision: "fp32".into(),
            },
            ReplayCompute::ClusterGpu => ComputeInfo {
                backend: "cuda".into(),
                device: "a GPU of the pod's node (nvidia.com/gpu: 1; not probed)".into(),
                ordinal: 0,
                compute_capability: String::new(),
                workers_per_device: 1,
                precision: gemm_precision_name(precision).into(),
            },
            ReplayCompute::Cuda { device, .. } => ComputeInfo {
                backend: "cuda".into(),
                device: device.name.clone(),
                ordinal: device.ordinal,
                compute_capability: device.compute_capability.clone(),
                workers_per_device: workers,
                precision: gemm_precision_name(precision).into(),
            },
        }
    }
}

fn gemm_precision_name(precision: topolab_core::scenario::Precision) -> &'static str {
    match GemmPrecision::of(precision) {
        GemmPrecision::Fp32 => "fp32",
        GemmPrecision::Tf32 => "tf32",
        GemmPrecision::Bf16 => "bf16",
    }
}

/// Writes the effective scenario (the proxy as a layer table, scale 1) next to the run.
pub fn effective_scenario(
    s: &Scenario,
    proxy: &Proxy,
    out: &Path,
    launcher: LauncherKind,
    compute: &ReplayCompute,
) -> Result<(PathBuf, Scenario), ReplayError> {
    let csv = out.join("effective-model.csv");
    let mut buf = Vec::new();
    topolab_core::models::write_layer_table(&proxy.model(), &mut buf).map_err(io)?;
    checkpoint::write_atomic(&csv, &buf).map_err(io)?;
    let mut f: ScenarioFile = s.spec.clone();
    f.name = format!("{}-effective", s.spec.name);
    f.model = topolab_core::scenario::ModelSpec { name: None, layers: Some(PathBuf::from("effective-model.csv")) };
    f.runtime.scale = topolab_core::scenario::Scale::default();
    f.runtime.target_step_time = None;
    // What the shards really apply.
    f.optimizer.learning_rate = s.spec.optimizer.learning_rate.min(MAX_LEARNING_RATE);
    f.sweep = Default::default();
    // The replay machine: its cores, shared by every task, each as fast as a measured GEMM.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let rate = crate::proxy::gemm_rate();
    let all_reduce = matches!(s.topology(), Topology::AllReduce(_));
    f.hardware.gpu = "replay-cpu".into();
    f.hardware.gpu_spec = Some(topolab_core::scenario::GpuOverride {
        fp32: Some(topolab_core::units::FlopRate(rate)),
        fp16: None,
        tf32: None,
        // Every worker of an all-reduce applies the summed gradients itself, at this rate.
        memory_bandwidth: all_reduce
            .then(|| topolab_core::units::BitRate(8.0 * crate::proxy::apply_rate(1 << 22, Duration::from_millis(50)))),
        memory: Some(topolab_core::units::Bytes(mem_available().unwrap_or(1 << 34))),
        source: Some(format!("measured by topolab replay: f32 GEMM 256x256x256 on one core, {cores} cores")),
    });
    f.hardware.efficiency = Some(1.0);
    f.hardware.precision = topolab_core::scenario::Precision::Fp32;
    // An all-reduce's multi-GPU host runs a process per GPU in one namespace (or on loopback):
    // its bus is loopback, as fast as one stream measured here.
    let bus = match s.topology() {
        Topology::AllReduce(_) if s.spec.hardware.gpus_per_host > 1 => {
            let rate = crate::calibrate::loopback_rate().map_err(ReplayError::Io)?;
            f.hardware.host_bus = format!("{:.3} Gbit/s", rate / 1e9);
            format!(
                "# Host bus: the {} processes of a host meet over loopback ({:.3} Gbit/s, one stream, measured),\n# not the scenario's {}.\n",
                s.spec.hardware.gpus_per_host,
                rate / 1e9,
                s.spec.hardware.host_bus
            )
        }
        _ => {
            f.hardware.gpus_per_host = 1;
            String::new()
        }
    };
    // On Kubernetes each task has a core of its own (its request), on nodes assumed as fast as
    // this machine; elsewhere every task shares this machine's cores.
    f.hardware.shared_cores = (launcher != LauncherKind::K8s).then_some(cores);
    if let ReplayCompute::ClusterGpu = compute {
        // The scenario's GPU, one per worker pod (device 0 of the pod's own), at its precision.
        f.hardware.gpu = s.spec.hardware.gpu.clone();
        f.hardware.gpu_spec = s.spec.hardware.gpu_spec.clone();
        f.hardware.efficiency = s.spec.hardware.efficiency;
        f.hardware.precision = s.spec.hardware.precision;
        f.runtime.device = 0;
    }
    if let ReplayCompute::Cuda { device, rates } = compute {
        // The workers' GPU, as measured: its GEMM rate at each precision it runs, time-shared
        // by every worker (one device); the cores keep the network's CPU work.
        let rate = |p: GemmPrecision| rates.iter().find(|r| r.0 == p).map(|r| r.1);
        f.hardware.gpu = "replay-cuda".into();
        f.hardware.gpu_spec = Some(topolab_core::scenario::GpuOverride {
            fp32: rate(GemmPrecision::Fp32),
            tf32: rate(GemmPrecision::Tf32),
            fp16: rate(GemmPrecision::Bf16),
            memory_bandwidth: None,
            memory: Some(topolab_core::units::Bytes(device.memory)),
            source: Some(format!(
                "measured by topolab replay: 4096^3 GEMMs (fp32, tf32, bf16 where present) on {} (CUDA device {}, compute capability {})",
                device.name, device.ordinal, device.compute_capability
            )),
        });
        f.hardware.precision = s.spec.hardware.precision;
        f.hardware.shared_gpus = Some(1);
    }
    let links = match launcher {
        // The shaped links' drop-tail queue is stated, not set: `network.queue` takes effect only
        // with a queue-order time constant, which a calibrated profile fits (validate adds both).
        LauncherKind::Netns => format!(
            "# Links: tc tbf at the scenario's NIC rate, drop-tail queue of {} (network.queue with a profile).\n",
            crate::netns::QUEUE
        ),
        LauncherKind::K8s => {
            "# Links: the Kubernetes cluster's own network (not shaped by topolab): set nic to its rate.\n".to_string()
        }
        LauncherKind::Local => {
            // Loopback is not shaped: the NIC the tasks really had is this machine's loopback.
            let rate = crate::calibrate::loopback_rate().map_err(ReplayError::Io)?;
            f.network.nic = format!("{:.3} Gbit/s", rate / 1e9);
            format!(
                "# Links: loopback, unshaped: nic is this machine's measured loopback rate ({:.3} Gbit/s, one stream),\n# not the scenario's {}.\n",
                rate / 1e9,
                s.spec.network.nic
            )
        }
    };
    let path = out.join("effective.toml");
    let text = format!(
        "# The scenario this replay ran: the proxy model as built (scaled), so that the simulator can\n# be run on exactly the same thing: topolab run {}\n{links}{bus}{}",
        path.display(),
        topolab_core::scenario::normalized_toml(&f)
    );
    checkpoint::write_atomic(&path, text.as_bytes()).map_err(io)?;
    let eff = Scenario::load(&path).map_err(|e| ReplayError::Io(e.to_string()))?;
    Ok((path, eff))
}

/// What a replay takes from a scenario besides its topology and model: the settings of the
/// proxy model and of the tasks. Each field is what the tasks really use.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplaySettings {
    /// Multiplier on parameter counts (`runtime.scale.params`).
    pub params_scale: f64,
    /// Multiplier on FLOPs: `runtime.scale.flops`, or the one that makes a step's compute take
    /// `runtime.target_step_time` at this machine's measured GEMM rate.
    pub flops_scale: f64,
    /// The SGD step the shards apply (`optimizer.learning_rate`, at most [`MAX_LEARNING_RATE`]).
    pub learning_rate: f32,
    /// Shards checkpoint every this many steps (0: never).
    pub checkpoint_every: u64,
    /// Seeds the initial parameters, the data and the teacher.
    pub seed: u64,
    /// Tasks to kill and when (seconds after the tasks started), in time order; each kill is
    /// followed by a restart of the job from the last complete checkpoint.
    pub kills: Vec<(String, f64)>,
    /// The workers' compute backend (`runtime.backend`).
    pub backend: BackendKind,
    /// Their CUDA device (`runtime.device`; the cuda backend).
    pub device: u32,
}

/// The largest SGD step the proxy model stays stable with (its layers regress onto a fixed
/// teacher; larger steps diverge). A scenario asking for more is replayed with this, and the
/// effective scenario says so.
pub const MAX_LEARNING_RATE: f64 = 0.2;

impl ReplaySettings {
    /// The settings of `s` on this machine.
    pub fn of(s: &Scenario) -> ReplaySettings {
        let flops_scale = match s.spec.runtime.target_step_time {
            // Choose the FLOP scale that makes one step's compute (forward + backward = 3 x the
            // forward FLOPs) take the target time at this machine's measured GEMM rate.
            Some(target) => {
                let rate = crate::proxy::gemm_rate();
                let per_step = 3.0 * s.model.forward_flops() * s.spec.batch as f64;
                (target.secs_f64() * rate / per_step).min(1.0)
            }
            None => s.spec.runtime.scale.flops,
        };
        ReplaySettings {
            params_scale: s.spec.runtime.scale.params,
            flops_scale,
            learning_rate: s.spec.optimizer.learning_rate.min(MAX_LEARNING_RATE) as f32,
            checkpoint_every: s.spec.runtime.checkpoint_every,
            seed: s.spec.seed,
            kills: {
                let mut k: Vec<(String, f64)> =
                    s.spec.faults.kills.iter().map(|k| (k.task.clone(), k.at.secs_f64())).collect();
                k.sort_by(|a, b| a.1.total_cmp(&b.1));
                k
            },
            backend: s.spec.runtime.backend,
            device: s.spec.runtime.device,
        }
    }
}

/// Where a job's tasks run: local processes, network namespaces, pods. The coordinator
/// ([`replay_with`]) owns everything else: the checks, the effective scenario, the job and its
/// token, the watch loop (progress, `faults.kills`, Ctrl-C, failures, the shards' exit),
/// restarts, and merging the traces into the run's files and summary.
///
/// Contract: [`Launcher::start`] starts every task of one attempt of the job (after it, the
/// tasks run or it failed and nothing of the attempt runs); [`Launcher::poll`] says how many
/// tasks still run, or fails with the first task that failed (its status in words and the
/// last lines of its log); [`Launcher::stop`] leaves nothing of the attempt running (and is
/// safe to call twice); [`Launcher::collect`] makes every worker's trace files
/// (`worker-I.steps.csv`, `.ops.csv`, `.loss.csv`) exist in the run's `trace` directory.
/// Every task's log goes to the run's `logs/ROLE-INDEX.log`.
pub trait Launcher {
    /// Which launcher this is (in summaries).
    fn kind(&self) -> LauncherKind;
    /// How its network behaves.
    fn network(&self) -> NetworkInfo;
    /// Why this launcher cannot replay `s` as `opts` asks, checked before anything starts.
    fn refusal(&self, _s: &Scenario, _opts: &ReplayOptions) -> Option<String> {
        None
    }
    /// Makes what the tasks will run on (namespaces, a client), once the run directory
    /// exists and every check has passed; before [`Launcher::network`].
    fn prepare(&mut self, _s: &Scenario) -> Result<(), ReplayError> {
        Ok(())
    }
    /// Starts every task of the job `job` of the effective scenario `s`.
    fn start(&mut self, s: &Scenario, job: &Job) -> Result<(), ReplayError>;
    /// Steps each worker has completed, from the start of training (the job's start step for
    /// a worker that has not reported yet).
    fn progress(&mut self) -> Vec<u64>;
    /// How many tasks still run; a task that failed fails the job.
    fn poll(&mut self) -> Result<TaskCounts, ReplayError>;
    /// Kills task `task` ("worker 1", "ps 0") now.
    fn kill(&mut self, task: &str) -> Result<(), ReplayError>;
    /// Stops every task still running.
    fn stop(&mut self) -> Result<(), ReplayError>;
    /// Puts every worker's traces into `trace`.
    fn collect(&mut self, trace: &Path) -> Result<(), ReplayError>;
}

/// How a launcher's network behaves, for the job and the summary.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NetworkInfo {
    /// The kernel adds the scenario's latency (netem): the transport must not.
    pub kernel_latency: bool,
    /// How latency is produced, when the launcher decides it ("netem"); empty: by the
    /// transport, or none.
    pub latency_method: String,
    /// TCP congestion control of the tasks' connections.
    pub congestion_control: String,
    /// Why the congestion control is not the one asked for, if it is not.
    pub congestion_warning: Option<String>,
}

/// Tasks of a job still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TaskCounts {
    /// Workers not finished.
    pub workers_running: usize,
    /// Shards not finished.
    pub ps_running: usize,
}

/// Replays `s` with the launcher `opts` names (local or netns; a Kubernetes replay needs its
/// cluster: [`crate::pods::Pods`] through [`replay_with`]).
pub fn replay(s: &Scenario, opts: &ReplayOptions) -> Result<ReplayOutcome, ReplayError> {
    let refuse = |reason: String| ReplayError::Refused { scenario: s.spec.name.clone(), reason };
    match opts.launcher {
        LauncherKind::Local => {
            let mut l = crate::processes::Processes::local(opts.engine.clone(), &opts.exe, &opts.out, opts.timeout_s);
            replay_with(s, opts, &mut l)
        }
        LauncherKind::Netns => {
            let mut l = crate::processes::Processes::netns(opts.engine.clone(), &opts.exe, &opts.out, opts.timeout_s);
            replay_with(s, opts, &mut l)
        }
        LauncherKind::K8s => Err(refuse(
            "a replay on Kubernetes runs with `topolab replay --launcher k8s` (its cluster, image and namespace); validate and calibrate use the local or netns launcher".into(),
        )),
    }
}

/// The worker processes of a replay: one per worker host, and in an all-reduce one per GPU of
/// each host (rank `host x gpus_per_host + gpu`, ordered by host as the schedule's ranks are).
pub fn worker_tasks(s: &Scenario) -> u32 {
    match s.topology() {
        Topology::AllReduce(t) => t.workers * s.spec.hardware.gpus_per_host,
        _ => s.topology().workers(),
    }
}

/// What every launcher refuses: modes, algorithms and hosts the runtime does not replay.
fn check(s: &Scenario, opts: &ReplayOptions) -> Result<(), ReplayError> {
    let refuse = |reason: String| ReplayError::Refused { scenario: s.spec.name.clone(), reason };
    if let Topology::AllReduce(_) = s.topology() {
        if matches!(opts.engine, Engine::Tensorflow(_)) {
            return Err(refuse(
                "with --engine tensorflow: the TensorFlow engine runs parameter servers (its ParameterServerStrategy); an all-reduce replays on topolab's own engine".into(),
            ));
        }
        if s.spec.hardware.gpus_per_host > 1 && opts.launcher == LauncherKind::K8s {
            return Err(refuse(
                "hardware.gpus_per_host > 1 replays one process per GPU on the local and netns launchers; on Kubernetes a pod is one rank (set gpus_per_host = 1)".into(),
            ));
        }
        if s.spec.runtime.backend == BackendKind::Cuda {
            return Err(refuse(
                "runtime.backend = \"cuda\" with an all-reduce is not replayed yet (its ring runs on the cpu backend); set runtime.backend = \"cpu\"".into(),
            ));
        }
        if let Some((i, k)) =
            s.spec.faults.kills.iter().enumerate().find(|(_, k)| matches!(k.parsed(), Some(("ps", _))))
        {
            return Err(refuse(format!(
                "faults.kills[{i}]: an all-reduce has no parameter servers to kill (`{}`); kill a worker",
                k.task
            )));
        }
    }
    if s.topology().mode() == Mode::StaleSynchronous {
        return Err(refuse(
            "the runtime replays sync, backup and async modes; stale-synchronous is simulated only".into(),
        ));
    }
    if s.spec.hardware.gpus_per_host > 1 && !matches!(s.topology(), Topology::AllReduce(_)) {
        return Err(refuse(
            "a parameter-server replay runs one replica per worker host (its local aggregation is simulated only); set hardware.gpus_per_host = 1, or replay an all-reduce, whose hosts run a process per GPU".into(),
        ));
    }
    if let Engine::Tensorflow(_) = opts.engine {
        let plan = Plan::new(s).map_err(|e| refuse(e.to_string()))?;
        if let Some(why) = crate::tensorflow::refusal(s, &plan, opts.resume, opts.launcher == LauncherKind::Netns) {
            return Err(refuse(format!("with --engine tensorflow: {why}")));
        }
    }
    Ok(())
}

/// Replays `s` on `launcher`: checks, the effective scenario, the job, then attempts until
/// the job finishes (a kill of `faults.kills` restarts it from the last complete checkpoint),
/// then the traces are merged and summarized.
pub fn replay_with(
    s: &Scenario,
    opts: &ReplayOptions,
    launcher: &mut dyn Launcher,
) -> Result<ReplayOutcome, ReplayError> {
    let refuse = |reason: String| ReplayError::Refused { scenario: s.spec.name.clone(), reason };
    let t = &s.spec.topology;
    if let Some(why) = launcher.refusal(s, opts) {
        return Err(refuse(why));
    }
    check(s, opts)?;
    let settings = ReplaySettings::of(s);
    let proxy = Proxy::new(s, settings.params_scale, settings.flops_scale);
    let params_bytes: u64 = proxy.var_sizes().iter().map(|&n| n as u64 * 4).sum();
    let need = u64::from(worker_tasks(s)) * (proxy.worker_memory() + 3 * params_bytes) + 3 * params_bytes;
    if launcher.kind() != LauncherKind::K8s
        && let Some(avail) = mem_available()
        && need > avail / 5 * 4
    {
        return Err(refuse(format!(
            "it needs about {:.2} of memory after scaling but {:.2} is available; lower runtime.scale",
            topolab_core::units::Bytes(need),
            topolab_core::units::Bytes(avail)
        )));
    }
    // The GPU, before anything starts: libraries, device, memory for every worker sharing it.
    let compute = match s.spec.runtime.backend {
        BackendKind::Cpu => ReplayCompute::Cpu,
        // The pods' GPUs are the cluster's, not this machine's.
        BackendKind::Cuda if launcher.kind() == LauncherKind::K8s => ReplayCompute::ClusterGpu,
        BackendKind::Cuda => {
            let precision = s.spec.hardware.precision;
            let device = crate::cuda::preflight(s.spec.runtime.device, precision, &proxy, t.workers)
                .map_err(|e| refuse(format!("runtime.backend = \"cuda\": {e}")))?;
            let rates = crate::cuda::quick_rates(device.ordinal)
                .map_err(|e| refuse(format!("runtime.backend = \"cuda\": {e}")))?;
            ReplayCompute::Cuda { device, rates }
        }
    };
    std::fs::create_dir_all(&opts.out).map_err(io)?;
    let (effective, eff) = effective_scenario(s, &proxy, &opts.out, launcher.kind(), &compute)?;
    let ckpt = opts.out.join("checkpoints");
    let start_step = if opts.resume {
        checkpoint::latest_complete(&ckpt, t.ps)
            .ok_or_else(|| refuse(format!("--resume: no complete checkpoint in {}", ckpt.display())))?
    } else {
        0
    };
    if start_step >= eff.spec.training.steps {
        return Err(refuse(format!(
            "the checkpoint is at step {start_step}, training ends at {}",
            eff.spec.training.steps
        )));
    }
    let logs = opts.out.join("logs");
    let trace = opts.out.join("trace");
    let _ = std::fs::remove_dir_all(&trace);
    std::fs::create_dir_all(&logs).map_err(io)?;
    launcher.prepare(s)?;
    let net = launcher.network();
    let mut latency_ns = s.spec.network.latency.0;
    let mut latency_method = if latency_ns == 0 { "none".to_string() } else { "emulated in the transport".to_string() };
    if !net.latency_method.is_empty() {
        latency_method = net.latency_method.clone();
    }
    if net.kernel_latency {
        latency_ns = 0;
    } else if launcher.kind() == LauncherKind::Netns
        && matches!(opts.engine, Engine::Tensorflow(_))
        && let Some(why) =
            crate::tensorflow::refusal(s, &Plan::new(s).map_err(|e| refuse(e.to_string()))?, opts.resume, false)
    {
        return Err(refuse(format!("with --engine tensorflow: {why}")));
    }
    let mut job = Job {
        token: Token::random().hex(),
        scenario: effective.clone(),
        out: opts.out.clone(),
        checkpoint_dir: ckpt,
        start_step,
        bind: "127.0.0.1:0".into(),
        latency_ns,
        timeout_s: opts.timeout_s,
        epoch_ns: monotonic_ns(),
    };
    if let Engine::Tensorflow(_) = &opts.engine {
        // The task program and its job, next to the run (the effective scenario's proxy and Plan).
        let eff_plan = Plan::new(&eff).map_err(|e| refuse(e.to_string()))?;
        let eff_proxy = Proxy::from_effective(&eff);
        checkpoint::write_atomic(&opts.out.join(TF_PROGRAM), crate::tensorflow::TASK_PROGRAM.as_bytes()).map_err(io)?;
        let j = crate::tensorflow::job(
            &eff,
            &eff_plan,
            &eff_proxy,
            &trace,
            job.epoch_ns,
            f64::from(settings.learning_rate),
            opts.timeout_s,
        );
        checkpoint::write_atomic(&opts.out.join(TF_JOB), j.to_string().as_bytes()).map_err(io)?;
    }
    let mut watch = Watch {
        started: Instant::now(),
        kills: s.spec.faults.kills.iter().enumerate().map(|(i, k)| (i, k.task.clone(), k.at.secs_f64())).collect(),
        first_step: None,
    };
    watch.kills.sort_by(|a, b| a.2.total_cmp(&b.2));
    let mut restarts: Vec<Restart> = Vec::new();
    let mut startup_s = 0.0;
    let mut killed_at: Option<Instant> = None;
    let tensorflow = matches!(opts.engine, Engine::Tensorflow(_));
    let result = loop {
        let attempt =
            launcher.start(&eff, &job).and_then(|()| watch_attempt(launcher, &eff, &job, opts, &mut watch, tensorflow));
        // Traces before the tasks go: a pod's log goes with its pod.
        let attempt = match attempt {
            Ok(Attempt::Finished) => launcher.collect(&trace).map(|()| Attempt::Finished),
            other => other,
        };
        let stopped = launcher.stop();
        if let Some(first) = watch.first_step.take() {
            match (killed_at.take(), restarts.last_mut()) {
                (Some(k), Some(last)) => last.restart_s = first.duration_since(k).as_secs_f64(),
                _ => startup_s = first.duration_since(watch.started).as_secs_f64(),
            }
        }
        match attempt {
            Ok(Attempt::Killed { task, at_s, steps_done, at }) => {
                stopped?;
                // As a TFJob restart policy would: the whole job again, from the last
                // complete checkpoint (or the start).
                let checkpoint_step = checkpoint::latest_complete(&job.checkpoint_dir, t.ps).unwrap_or(0);
                restarts.push(Restart {
                    task,
                    at_s,
                    steps_done,
                    checkpoint_step,
                    lost_steps: steps_done.saturating_sub(checkpoint_step),
                    restart_s: 0.0,
                });
                killed_at = Some(at);
                let _ = std::fs::remove_dir_all(&trace);
                job.start_step = checkpoint_step;
            }
            Ok(Attempt::Finished) => break stopped,
            Err(e) => break Err(e),
        }
    };
    result?;
    if let Some((i, task, at)) = watch.kills.first() {
        return Err(refuse(format!(
            "faults.kills[{i}]: the kill of {task} at {at} s never happened: the run ended after {:.1} s",
            watch.started.elapsed().as_secs_f64()
        )));
    }
    let start_step = job.start_step;
    let info = ReplayInfo {
        launcher: launcher.kind().name().into(),
        congestion_control: net.congestion_control,
        congestion_warning: net.congestion_warning,
        latency_method,
        latencies: Vec::new(),
        startup_s,
        restarts,
        compute: Some(compute.info(worker_tasks(s), s.spec.hardware.precision)),
        engine: opts.engine.describe(),
    };
    collect(&eff, &opts.out, start_step, info)
}

/// The TensorFlow task program and its job file, in the run directory.
pub(crate) const TF_PROGRAM: &str = "tf_task.py";
pub(crate) const TF_JOB: &str = "tf_job.json";

/// What the watch loop of a replay keeps between attempts: when the tasks first started, the
/// kills still to come (index in `faults.kills`, task, seconds after the start), and when the
/// current attempt first completed a step.
struct Watch {
    started: Instant,
    kills: Vec<(usize, String, f64)>,
    first_step: Option<Instant>,
}

/// How one attempt of the job ended.
enum Attempt {
    /// Every task finished.
    Finished,
    /// A kill of `faults.kills` stopped it.
    Killed { task: String, at_s: f64, steps_done: u64, at: Instant },
}

/// Watches one attempt: progress, kills, Ctrl-C; any failure fails the job; success when every
/// worker has finished and the shards have exited (TensorFlow's shards serve until stopped).
fn watch_attempt(
    launcher: &mut dyn Launcher,
    s: &Scenario,
    job: &Job,
    opts: &ReplayOptions,
    watch: &mut Watch,
    tensorflow: bool,
) -> Result<Attempt, ReplayError> {
    let mut workers_done: Option<Instant> = None;
    let total = u64::from(worker_tasks(s)) * (s.spec.training.steps - job.start_step);
    let mut polls = 0u64;
    loop {
        let fresh = polls.is_multiple_of(10) || watch.first_step.is_none();
        if fresh {
            let steps = launcher.progress();
            if watch.first_step.is_none() && steps.iter().any(|&x| x > job.start_step) {
                watch.first_step = Some(Instant::now());
            }
            if let Some(tx) = &opts.progress {
                let done: u64 = steps.iter().map(|x| x.saturating_sub(job.start_step)).sum();
                let _ = tx.send(Progress { done: done.min(total), total });
            }
        }
        polls += 1;
        if let Some((_, task, at_s)) = watch.kills.first().cloned()
            && watch.started.elapsed().as_secs_f64() >= at_s
        {
            watch.kills.remove(0);
            let steps_done = launcher.progress().into_iter().max().unwrap_or(job.start_step);
            launcher.kill(&task)?;
            return Ok(Attempt::Killed { task, at_s, steps_done, at: Instant::now() });
        }
        if INTERRUPTED.swap(false, Ordering::SeqCst) {
            return Err(ReplayError::Interrupted);
        }
        let n = launcher.poll()?;
        if n.workers_running == 0 {
            if n.ps_running == 0 || tensorflow {
                return Ok(Attempt::Finished);
            }
            // Shards exit once every worker said Done; give them a moment, then stop them.
            let since = *workers_done.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(30) {
                return Err(ReplayError::TaskFailed {
                    task: "ps".into(),
                    status: "still running 30 s after the workers finished; stopped".into(),
                    log: opts.out.join("logs").display().to_string(),
                    tail: String::new(),
                });
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether [`interrupt`] was called and not yet seen by a replay (for launchers waiting on
/// their own, as while collecting traces).
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Percentiles of `durations_ns` through an HDR histogram (1 ns to 1 h, 3 significant digits).
fn latency(what: &str, durations_ns: impl Iterator<Item = u64>) -> Option<records::Latency> {
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds");
    for d in durations_ns {
        h.saturating_record(d.max(1));
    }
    (!h.is_empty()).then(|| {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e6;
        records::Latency {
            what: what.into(),
            count: h.len(),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: h.max() as f64 / 1e6,
        }
    })
}

/// Merges the workers' traces into steps.csv, ops.csv and loss.csv and summarizes the run.
fn collect(s: &Scenario, out: &Path, start_step: u64, mut info: ReplayInfo) -> Result<ReplayOutcome, ReplayError> {
    let trace = out.join("trace");
    let mut steps = Vec::new();
    let mut ops = String::from("worker,step,op,index,bytes,start_ns,end_ns\n");
    let mut loss: std::collections::BTreeMap<u64, (f64, u32)> = Default::default();
    // A multi-GPU host of an all-reduce runs a process per GPU (rank host x gpus + gpu): its
    // steps and ops are its first GPU's, as the simulator records them; the loss is every rank's.
    let gpus = if matches!(s.topology(), Topology::AllReduce(_)) { s.spec.hardware.gpus_per_host } else { 1 };
    for i in 0..worker_tasks(s) {
        if i % gpus == 0 {
            let p = trace.join(format!("worker-{i}.steps.csv"));
            let f = std::fs::File::open(&p).map_err(|e| ReplayError::Io(format!("{}: {e}", p.display())))?;
            steps.extend(records::read_steps_csv(f, &p.display().to_string()).map_err(io)?);
            let o = std::fs::read_to_string(trace.join(format!("worker-{i}.ops.csv"))).map_err(io)?;
            ops.extend(o.lines().skip(1).map(|l| format!("{l}\n")));
        }
        let l = std::fs::read_to_string(trace.join(format!("worker-{i}.loss.csv"))).map_err(io)?;
        for line in l.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            if let (Some(st), Some(v)) =
                (f.get(1).and_then(|x| x.parse::<u64>().ok()), f.get(2).and_then(|x| x.parse::<f64>().ok()))
            {
                let e = loss.entry(st).or_default();
                e.0 += v;
                e.1 += 1;
            }
        }
    }
    steps.sort_by_key(|r| (r.step, r.worker));
    let mut buf = Vec::new();
    records::write_steps_csv(&steps, &mut buf).map_err(io)?;
    checkpoint::write_atomic(&out.join("steps.csv"), &buf).map_err(io)?;
    checkpoint::write_atomic(&out.join("ops.csv"), ops.as_bytes()).map_err(io)?;
    let loss: Vec<(u64, f64)> = loss.into_iter().map(|(k, (sum, n))| (k, sum / f64::from(n))).collect();
    let mut lt = String::from("step,mean_loss\n");
    for (k, v) in &loss {
        lt.push_str(&format!("{k},{v}\n"));
    }
    checkpoint::write_atomic(&out.join("loss.csv"), lt.as_bytes()).map_err(io)?;
    let n = steps.len().max(1) as f64;
    let mean = |f: fn(&StepRecord) -> u64| steps.iter().map(|r| f(r) as f64).sum::<f64>() / n / 1e9;
    let breakdown =
        Breakdown { compute: mean(|r| r.compute_ns), exposed_comm: mean(|r| r.comm_ns), wait: mean(|r| r.wait_ns) };
    let t0 = steps.iter().map(|r| r.start_ns).min().unwrap_or(0);
    let t1 = steps.iter().map(|r| r.end_ns).max().unwrap_or(0);
    let span = (t1 - t0) as f64 / 1e9;
    let step_time = records::step_time_stats(&steps);
    let total = step_time.mean.max(1e-12);
    // ops.csv rows: worker,step,op,index,bytes,start_ns,end_ns.
    let op_durations = |kind: &str| -> Vec<u64> {
        ops.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.trim_end().split(',').collect();
                if f.get(2) != Some(&kind) {
                    return None;
                }
                let (a, b) = (f.get(5)?.parse::<u64>().ok()?, f.get(6)?.parse::<u64>().ok()?);
                Some(b.saturating_sub(a))
            })
            .collect()
    };
    info.latencies = [
        latency("step", steps.iter().map(|r| r.end_ns.saturating_sub(r.start_ns))),
        latency("pull", op_durations("pull").into_iter()),
        latency("push", op_durations("push").into_iter()),
        latency("all-reduce", op_durations("all-reduce").into_iter()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let summary = RunSummary {
        scenario: s.spec.name.clone(),
        scenario_hash: s.hash.clone(),
        seed: s.spec.seed,
        version: records::VERSION.into(),
        source: "replay".into(),
        workers: s.topology().workers(),
        ps: s.topology().ps(),
        steps: s.spec.training.steps - start_step,
        step_time_s: step_time,
        // Every GPU's samples: a host's records stand for its GPUs.
        throughput_samples_per_s: if span > 0.0 {
            steps.len() as f64 * s.spec.batch as f64 * f64::from(gpus) / span
        } else {
            0.0
        },
        breakdown_s: breakdown,
        utilization: Utilization {
            gpu: if span > 0.0 {
                steps.iter().map(|r| r.compute_ns as f64).sum::<f64>()
                    / 1e9
                    / (span * f64::from(s.topology().workers()))
            } else {
                0.0
            },
            ..Utilization::default()
        },
        bottleneck: format!(
            "measured: compute {:.0}%, exposed communication {:.0}%, waiting for aggregation {:.0}% of the mean step",
            breakdown.compute / total * 100.0,
            breakdown.exposed_comm / total * 100.0,
            breakdown.wait / total * 100.0
        ),
        events: ops.lines().count() as u64 - 1,
        wall_s: Some(span),
        target: None,
        replay: Some(info.clone()),
    };
    let mut buf = Vec::new();
    records::write_summary_json(&summary, &mut buf).map_err(io)?;
    buf.push(b'\n');
    checkpoint::write_atomic(&out.join("summary.json"), &buf).map_err(io)?;
    Ok(ReplayOutcome { summary, steps, effective: out.join("effective.toml"), start_step, loss, info })
}

/// Stops leftover tasks of a crashed run in `out` (PIDs from pids.json that still run
/// `topolab node`) and removes network namespaces left by crashed runs. Returns how many
/// tasks and namespaces were removed.
pub fn cleanup(out: &Path) -> Result<(usize, Vec<String>), ReplayError> {
    let stopped = cleanup_tasks(out)?;
    let namespaces = if crate::netns::is_root() { crate::netns::cleanup_all() } else { Vec::new() };
    Ok((stopped, namespaces))
}

fn cleanup_tasks(out: &Path) -> Result<usize, ReplayError> {
    let p = out.join("pids.json");
    let Ok(text) = std::fs::read_to_string(&p) else { return Ok(0) };
    let pids: Pids = serde_json::from_str(&text).map_err(io)?;
    let mut stopped = 0;
    let mut killed = Vec::new();
    for pid in pids.ps.iter().chain(&pids.worker) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let ours = (args.len() >= 2 && args[1] == b"node" && args[0].ends_with(b"topolab"))
            || args.iter().any(|a| a.ends_with(TF_PROGRAM.as_bytes()));
        if ours {
            // SAFETY: kill(2) on a PID we started, checked to still be a `topolab node` or our
            // TensorFlow task program.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
            stopped += 1;
            killed.push(*pid);
        }
    }
    // Wait until they are gone: a task inside a namespace keeps it busy.
    let deadline = Instant::now() + Duration::from_secs(10);
    let alive = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.split_whitespace().nth(2) != Some("Z"))
    };
    while killed.iter().any(alive) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(stopped)
}

/// This machine's TCP congestion control (the loopback launcher's tasks use it).
pub fn host_congestion_control() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_string())
}
