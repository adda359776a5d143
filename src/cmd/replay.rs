//! `topolab replay` and `topolab node`: run a scenario for real.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use topolab_core::scenario::{Scenario, Topology};
use topolab_runtime::launcher::{self, ReplayError, ReplayOptions};

use super::BadInput;
use crate::output::{Format, print_json};

/// Where a replay's tasks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Launcher {
    /// Processes on 127.0.0.1.
    Local,
    /// A network namespace per host, links shaped by tc to the scenario's NIC rate (root).
    Netns,
    /// Pods of a Kubernetes cluster (kubeconfig; see `topolab k8s manifests`).
    K8s,
}

/// Compute backend of a replay's workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// ndarray on the machine's cores.
    Cpu,
    /// cuBLAS on a CUDA device (the NVIDIA driver and CUDA 12 libraries at run time).
    Cuda,
}

impl BackendArg {
    /// The scenario's backend this stands for.
    pub fn kind(self) -> topolab_core::scenario::Backend {
        match self {
            BackendArg::Cpu => topolab_core::scenario::Backend::Cpu,
            BackendArg::Cuda => topolab_core::scenario::Backend::Cuda,
        }
    }
}

/// What runs a replay's tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum EngineArg {
    /// topolab's own runtime.
    #[default]
    Topolab,
    /// Real TensorFlow (tensorflow-cpu in a virtual environment: scripts/setup-tensorflow.sh).
    Tensorflow,
}

impl EngineArg {
    /// The engine, TensorFlow found and its version checked (bad input when it is missing).
    pub fn engine(self) -> anyhow::Result<launcher::Engine> {
        Ok(match self {
            EngineArg::Topolab => launcher::Engine::Topolab,
            EngineArg::Tensorflow => launcher::Engine::Tensorflow(
                topolab_runtime::tensorflow::find()
                    .map_err(|e| BadInput(format!("error: --engine tensorflow: {e}")))?,
            ),
        })
    }
}

/// Replay a scenario for real: parameter servers and workers as processes over TCP.
#[derive(clap::Args)]
#[command(after_help = "\
The scenario's model is replayed as a proxy of real GEMMs scaled by [runtime] scale; the run
directory gets effective.toml (the scenario as replayed, for `topolab run`), steps.csv (the
simulator's columns), ops.csv (every compute, pull and push with its time and bytes), loss.csv,
summary.json, logs/ and checkpoints/ (every runtime.checkpoint_every steps).

Examples:
  topolab replay scenarios/examples/tiny-mlp-custom-gpu.toml --launcher local --out runs/tiny
  topolab replay scenarios/examples/tiny-mlp-custom-gpu.toml --launcher local --out runs/tiny --resume
  topolab run runs/tiny/effective.toml --out runs/tiny-sim     # the simulator on what was replayed
  topolab report runs/tiny-sim runs/tiny --out reports/tiny    # predicted vs measured
  topolab replay scenarios/examples/tiny-mlp-custom-gpu.toml --launcher netns --out runs/ns   # as root
  topolab replay --cleanup --out runs/tiny                     # stop leftovers of a crashed run
  topolab replay scenarios/examples/tiny-mlp-custom-gpu.toml --launcher k8s --kind --image topolab:dev --out runs/k8s
  topolab replay --cleanup --launcher k8s --namespace default  # delete what a killed k8s replay left
  topolab replay scenarios/gpu/inception-v3-gpu.toml --backend cuda --out runs/gpu   # on a GPU
  topolab replay scenarios/examples/tiny-mlp-tensorflow.toml --engine tensorflow --launcher netns --out runs/tf

With --engine tensorflow the same tasks are real TensorFlow processes (tensorflow-cpu from a
virtual environment that `bash scripts/setup-tensorflow.sh` creates in .venv-tensorflow, or the
Python in TOPOLAB_TF_PYTHON): one tf.distribute.Server per task, variables placed by
replica_device_setter on the Plan's shards, SyncReplicasOptimizer for sync and backup, plain
SGD for async. What TensorFlow cannot express (split variables, stale-synchronous mode,
checkpoints and kills, latency without netem) is refused before anything starts.

With --backend cuda (or [runtime] backend = \"cuda\") the workers compute on CUDA device
runtime.device (default 0), all of them on the same one (the driver time-slices them; the
summary says how many shared it); precision fp32, tf32 or fp16 (BF16 products) as the
scenario's hardware.precision says. Without a driver, a device or enough device memory it
exits 2 before any task starts.")]
pub struct Args {
    /// Scenario file.
    #[arg(required_unless_present = "cleanup")]
    scenario: Option<PathBuf>,
    /// Where the tasks run.
    #[arg(long, value_enum, default_value = "local")]
    launcher: Launcher,
    /// What runs the tasks: topolab's runtime, or real TensorFlow (same cluster, same files).
    #[arg(long, value_enum, default_value_t)]
    engine: EngineArg,
    /// Compute backend of the workers (default: the scenario's runtime.backend).
    #[arg(long, value_enum)]
    backend: Option<BackendArg>,
    /// CUDA device of the workers (default: the scenario's runtime.device).
    #[arg(long, value_name = "N")]
    device: Option<u32>,
    /// Run directory (not needed by --cleanup --launcher k8s).
    #[arg(long, value_name = "DIR", required_unless_present = "cleanup")]
    out: Option<PathBuf>,
    /// Kubernetes context (--launcher k8s; default: the kubeconfig's current one).
    #[arg(long, value_name = "C")]
    context: Option<String>,
    /// Kubernetes namespace (--launcher k8s).
    #[arg(long, default_value = "default", value_name = "NS")]
    namespace: String,
    /// Container image of the pods (--launcher k8s; default topolab:latest, or
    /// topolab-tensorflow:latest with --engine tensorflow: Dockerfile, Dockerfile.tensorflow).
    #[arg(long, value_name = "IMG")]
    image: Option<String>,
    /// --launcher k8s on kind: checkpoints on a hostPath backed by the kind config's
    /// extraMounts (kind/cluster.yaml) instead of a ReadWriteMany PersistentVolumeClaim.
    #[arg(long)]
    kind: bool,
    /// Continue from the last complete checkpoint in DIR/checkpoints.
    #[arg(long)]
    resume: bool,
    /// Stop the leftover tasks of a crashed run in DIR and exit (with --launcher k8s: delete
    /// every topolab job left in the namespace).
    #[arg(long)]
    cleanup: bool,
    /// Seconds a task waits for a peer before giving up.
    #[arg(long, default_value_t = 30, value_name = "S")]
    timeout: u64,
    /// Also write a report of the run into this directory.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Output format of the printed summary (summary.json is written either way).
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    if a.cleanup && a.launcher == Launcher::K8s {
        k8s_preflight(&a)?;
        let jobs = topolab_runtime::pods::cleanup(a.context.as_deref(), &a.namespace)?;
        eprintln!(
            "deleted {} topolab job(s) in namespace {}{}",
            jobs.len(),
            a.namespace,
            if jobs.is_empty() { String::new() } else { format!(": {}", jobs.join(", ")) }
        );
        return Ok(ExitCode::SUCCESS);
    }
    let Some(out) = a.out.clone() else {
        return Err(BadInput("error: --out DIR is required (the run directory)".into()).into());
    };
    if a.cleanup {
        let (n, namespaces) = launcher::cleanup(&out)?;
        eprintln!(
            "stopped {n} leftover task(s) of {}; removed {} network namespace(s)",
            out.display(),
            namespaces.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut s = super::load_scenario(a.scenario.as_deref())?;
    if a.backend.is_some() || a.device.is_some() {
        s = s
            .with(|f| {
                if let Some(b) = a.backend {
                    f.runtime.backend = b.kind();
                }
                if let Some(d) = a.device {
                    f.runtime.device = d;
                }
            })
            .map_err(super::problems)?;
    }
    if a.kind && a.launcher != Launcher::K8s {
        return Err(BadInput(
            "error: --kind is for --launcher k8s (checkpoints on the kind nodes' extraMounts)".into(),
        )
        .into());
    }
    let kind = match a.launcher {
        Launcher::Local => launcher::LauncherKind::Local,
        Launcher::Netns => launcher::LauncherKind::Netns,
        Launcher::K8s => {
            // The cluster first: no kubeconfig, an unreachable API server or a missing
            // namespace is one clear line, before anything is created.
            k8s_preflight(&a)?;
            launcher::LauncherKind::K8s
        }
    };
    let (progress, bar) = progress_bar(&s.spec.name);
    // On Kubernetes TensorFlow is the image's, not this machine's.
    let engine = match (a.launcher, a.engine) {
        (Launcher::K8s, EngineArg::Tensorflow) => {
            launcher::Engine::Tensorflow(topolab_runtime::tensorflow::TensorFlow {
                python: "python3".into(),
                version: format!("(image {})", image(&a)),
            })
        }
        _ => a.engine.engine()?,
    };
    let opts = ReplayOptions {
        launcher: kind,
        engine,
        exe: std::env::current_exe()?,
        out: out.clone(),
        resume: a.resume,
        timeout_s: a.timeout,
        progress: Some(progress),
    };
    let outcome = match kind {
        launcher::LauncherKind::K8s => {
            let settings = launcher::ReplaySettings::of(&s);
            let proxy = topolab_runtime::proxy::Proxy::new(&s, settings.params_scale, settings.flops_scale);
            let params: u64 = proxy.var_sizes().iter().map(|&n| n as u64 * 4).sum();
            let target = topolab_runtime::pods::Target {
                context: a.context.clone(),
                namespace: a.namespace.clone(),
                image: image(&a),
                checkpoints: super::k8s::checkpoint_volume(a.kind, params),
            };
            topolab_runtime::pods::Pods::connect(target, &opts.engine, &s.spec.name, &out, a.timeout).and_then(
                |mut pods| {
                    eprintln!("job {} in namespace {}", pods.job(), a.namespace);
                    launcher::replay_with(&s, &opts, &mut pods)
                },
            )
        }
        _ => launcher::replay(&s, &opts),
    };
    drop(opts);
    let _ = bar.join();
    let outcome = match outcome {
        Ok(o) => o,
        Err(e @ ReplayError::Refused { .. }) => return Err(BadInput(format!("error: {e}")).into()),
        Err(e) => return Err(e.into()),
    };
    let sum = &outcome.summary;
    let predicted = predict_restarts(&outcome)?;
    match a.format {
        Format::Json => {
            let mut v = serde_json::to_value(sum)?;
            v["start_step"] = serde_json::json!(outcome.start_step);
            v["restarts_predicted"] = serde_json::json!(
                predicted.iter().map(|p| serde_json::json!({"lost_steps": p.0, "restart_s": p.1})).collect::<Vec<_>>()
            );
            v["effective"] = serde_json::json!(outcome.effective.display().to_string());
            print_json(&v)?;
        }
        Format::Csv => topolab_core::records::write_summaries_csv(std::slice::from_ref(sum), std::io::stdout().lock())?,
        Format::Table => print_replay(&s, &outcome, &predicted),
    }
    if let Some(w) = &outcome.info.congestion_warning {
        eprintln!("warning: {w}; the measured run is recorded with the congestion control really in force");
    }
    if let Some(dir) = &a.report {
        super::report::make(std::slice::from_ref(&out), dir)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The pods' image: --image, or the default image of the engine.
fn image(a: &Args) -> String {
    a.image.clone().unwrap_or_else(|| super::k8s::default_image(a.engine).into())
}

/// Checks the inputs and the cluster of a Kubernetes replay before anything is created.
fn k8s_preflight(a: &Args) -> anyhow::Result<()> {
    use topolab_runtime::k8s;
    k8s::check_label("namespace", &a.namespace, 63).map_err(|e| BadInput(format!("error: --namespace: {e}")))?;
    k8s::check_image(&image(a)).map_err(|e| BadInput(format!("error: --image: {e}")))?;
    let version = k8s::connect(a.context.as_deref(), &a.namespace)
        .map_err(|e| BadInput(format!("error: --launcher k8s: {e}")))?;
    eprintln!("Kubernetes {version}, namespace {}", a.namespace);
    Ok(())
}

/// What the simulator predicts for each kill of the replay: the steps lost (done since the last
/// checkpoint when the kill came, at the simulated step time of the effective scenario) and the
/// restart's duration (a restart starts the job again: the measured first start-up).
fn predict_restarts(outcome: &launcher::ReplayOutcome) -> anyhow::Result<Vec<(u64, f64)>> {
    if outcome.info.restarts.is_empty() {
        return Ok(Vec::new());
    }
    let eff = topolab_core::scenario::Scenario::load(&outcome.effective).map_err(|e| BadInput(e.to_string()))?;
    let step = super::run::simulate(&eff)?.summary.step_time_s.p50.max(1e-9);
    let every = eff.spec.runtime.checkpoint_every;
    let startup = outcome.info.startup_s;
    Ok(outcome
        .info
        .restarts
        .iter()
        .map(|r| {
            let k = if r.at_s < startup { 0 } else { 1 + ((r.at_s - startup) / step) as u64 };
            let lost = if every > 0 { k % every } else { k };
            (lost, startup)
        })
        .collect())
}

fn print_replay(s: &Scenario, outcome: &launcher::ReplayOutcome, predicted: &[(u64, f64)]) {
    let sum = &outcome.summary;
    for (r, p) in outcome.info.restarts.iter().zip(predicted) {
        println!(
            "Killed        {} at {:.2} s after {} steps; restarted from the checkpoint at step {}: {} steps lost (predicted {}), restart {:.2} s (predicted {:.2} s)",
            r.task, r.at_s, r.steps_done, r.checkpoint_step, r.lost_steps, p.0, r.restart_s, p.1
        );
    }
    let (gpus, exchange) = match s.topology() {
        Topology::AllReduce(t) => {
            let g = s.spec.hardware.gpus_per_host;
            (if g > 1 { format!(" x {g} GPUs") } else { String::new() }, format!("{} all-reduce", t.algorithm.as_str()))
        }
        _ => (String::new(), format!("{} PS", sum.ps)),
    };
    println!(
        "Replayed {} ({} workers{gpus}, {exchange}) from step {}: {} step records",
        sum.scenario,
        sum.workers,
        outcome.start_step,
        outcome.steps.len()
    );
    println!(
        "Step time     p10 {:.4} s   p50 {:.4} s   p90 {:.4} s   p99 {:.4} s   mean {:.4} s",
        sum.step_time_s.p10, sum.step_time_s.p50, sum.step_time_s.p90, sum.step_time_s.p99, sum.step_time_s.mean
    );
    println!("Throughput    {:.1} samples/s", sum.throughput_samples_per_s);
    println!("Breakdown     {}", sum.bottleneck);
    if let (Some(first), Some(last)) = (outcome.loss.first(), outcome.loss.last()) {
        println!("Loss          {:.5} (step {}) -> {:.5} (step {})", first.1, first.0, last.1, last.0);
    }
    for l in &outcome.info.latencies {
        println!(
            "Latency of {:<4} p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  ({} measured)",
            l.what, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.count
        );
    }
    if let Some(c) = &outcome.info.compute {
        let shared = match c.workers_per_device {
            1 => String::new(),
            n => format!(", shared by {n} worker processes (time-sliced)"),
        };
        match c.backend.as_str() {
            "cuda" => println!(
                "Compute       cuda: {} (device {}, compute capability {}), {}{shared}",
                c.device, c.ordinal, c.compute_capability, c.precision
            ),
            _ => println!("Compute       cpu: {}", c.device),
        }
    }
    println!("Engine        {}", outcome.info.engine);
    println!("Launcher      {}", outcome.info.launcher);
    println!("Latency       {}", outcome.info.latency_method);
    println!("TCP           {} congestion control", outcome.info.congestion_control);
    println!("Effective scenario: {} (simulate it with `topolab run`)", outcome.effective.display());
}

/// A progress bar on stderr (drawn only on a terminal) fed by a replay's progress reports; the
/// thread ends when the sender is dropped.
pub fn progress_bar(name: &str) -> (std::sync::mpsc::Sender<launcher::Progress>, std::thread::JoinHandle<()>) {
    use std::io::IsTerminal;
    let (tx, rx) = std::sync::mpsc::channel::<launcher::Progress>();
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} worker-steps {msg}",
            )
            .expect("a valid template"),
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_message(name.to_string());
    let handle = std::thread::spawn(move || {
        for p in rx {
            bar.set_length(p.total);
            bar.set_position(p.done);
        }
        bar.finish_and_clear();
    });
    (tx, handle)
}

/// Run one task of a replay (started by `topolab replay`; reads TOPOLAB_CLUSTER).
#[derive(clap::Args)]
pub struct NodeArgs {}

pub fn node(_: NodeArgs) -> anyhow::Result<ExitCode> {
    match topolab_runtime::run_node() {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(3))
        }
    }
}

impl Launcher {
    /// The launcher's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Launcher::Local => "local",
            Launcher::Netns => "netns",
            Launcher::K8s => "k8s",
        }
    }
}
