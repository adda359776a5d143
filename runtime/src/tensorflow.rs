//! The `tensorflow` replay engine: the same scenario run by real TensorFlow (its v1 distributed
//! runtime: one `Server` per task, `replica_device_setter`, `SyncReplicasOptimizer`), started
//! by the same launchers on the same virtual cluster, writing the same trace files.
//!
//! The task program is `runtime/tensorflow/tf_task.py`, built into the binary and written
//! into each run directory; it runs under the Python of a virtual environment with
//! `tensorflow-cpu` (`bash scripts/setup-tensorflow.sh` makes `.venv-tensorflow`; or set
//! `TOPOLAB_TF_PYTHON`). [`refusal`] says, before anything starts, what TensorFlow cannot
//! express of a scenario.

use std::path::{Path, PathBuf};
use std::process::Command;

use topolab_core::plan::Plan;
use topolab_core::scenario::{Backend, Mode, Scenario};

use crate::proxy::Proxy;

/// The task program (Python).
pub const TASK_PROGRAM: &str = include_str!("../tensorflow/tf_task.py");

/// Oldest TensorFlow the task program is written for (`tf.distribute.Server`, resource
/// variables under `replica_device_setter`, the v1 `Supervisor`).
pub const MIN_VERSION: (u32, u32) = (2, 12);

/// The virtual environment `scripts/setup-tensorflow.sh` creates, relative to the working
/// directory.
pub const VENV: &str = ".venv-tensorflow";

/// Environment variable naming the Python to run TensorFlow with.
pub const PYTHON_ENV: &str = "TOPOLAB_TF_PYTHON";

/// A Python with TensorFlow.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorFlow {
    /// The interpreter.
    pub python: PathBuf,
    /// `tf.__version__`.
    pub version: String,
}

const INSTALL: &str = "run `bash scripts/setup-tensorflow.sh` (a virtual environment with tensorflow-cpu in .venv-tensorflow) or set TOPOLAB_TF_PYTHON to a Python that has TensorFlow";

/// Finds TensorFlow: `$TOPOLAB_TF_PYTHON`, else `.venv-tensorflow/bin/python`, else `python3`,
/// and checks its version. The error is one line saying what is missing and how to install it.
pub fn find() -> Result<TensorFlow, String> {
    let python = match std::env::var_os(PYTHON_ENV) {
        Some(p) => PathBuf::from(p),
        None => {
            // Absolute (tasks start in other directories' namespaces), not canonical: the
            // venv's python is a symlink whose own path selects the environment.
            let venv = Path::new(VENV).join("bin/python");
            if venv.exists() { std::path::absolute(&venv).unwrap_or(venv) } else { PathBuf::from("python3") }
        }
    };
    let out = Command::new(&python)
        .args(["-c", "import tensorflow as tf; print(tf.__version__)"])
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .output()
        .map_err(|e| format!("TensorFlow is not installed: cannot run {} ({e}); {INSTALL}", python.display()))?;
    if !out.status.success() {
        return Err(format!("TensorFlow is not installed for {}; {INSTALL}", python.display()));
    }
    let version = String::from_utf8_lossy(&out.stdout).trim().lines().last().unwrap_or("").to_string();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < MIN_VERSION {
        return Err(format!(
            "TensorFlow {version} ({}) is older than {}.{}, the oldest the task program supports; {INSTALL}",
            python.display(),
            MIN_VERSION.0,
            MIN_VERSION.1
        ));
    }
    Ok(TensorFlow { python, version })
}

/// What TensorFlow cannot run of `s` (with its `plan`), before anything starts; `None` if it can.
/// `resume` and `latency_in_kernel` (netem on the virtual cluster) are the launcher's.
pub fn refusal(s: &Scenario, plan: &Plan, resume: bool, latency_in_kernel: bool) -> Option<String> {
    let t = &s.spec.topology;
    if matches!(t.mode, Mode::StaleSynchronous) {
        return Some("TensorFlow has no stale-synchronous mode".into());
    }
    if plan.placement.parts.iter().any(|p| p.part > 0) {
        return Some(format!(
            "placement = \"{}\" splits variables across shards; the engine places whole variables (use round-robin or greedy)",
            t.placement.as_str()
        ));
    }
    if !s.spec.training.overlap {
        return Some(
            "training.overlap = false: TensorFlow's dataflow sends each gradient as soon as it is computed; the engine cannot hold them until backward ends".into(),
        );
    }
    if s.spec.runtime.backend == Backend::Cuda {
        return Some("the engine runs tensorflow-cpu; runtime.backend = \"cuda\" is the topolab engine's".into());
    }
    if !s.spec.faults.kills.is_empty() {
        return Some("faults.kills restart the job from topolab's checkpoints; the engine has none".into());
    }
    if s.spec.runtime.checkpoint_every > 0 || resume {
        return Some("checkpoints (runtime.checkpoint_every, --resume) are the topolab engine's".into());
    }
    if s.spec.network.latency.0 > 0 && !latency_in_kernel {
        return Some(format!(
            "network.latency = {} would not be applied: TensorFlow's gRPC has no user-space latency emulation and this kernel has no netem; set latency = \"0 us\" or use the topolab engine",
            s.spec.network.latency
        ));
    }
    None
}

/// The job file of the task program: the proxy's layers and variables in creation order, each
/// variable's shard, and the run's settings.
pub fn job(
    s: &Scenario,
    plan: &Plan,
    proxy: &Proxy,
    trace_dir: &Path,
    epoch_ns: u64,
    learning_rate: f64,
    timeout_s: u64,
) -> serde_json::Value {
    let names: Vec<String> = proxy.layers.iter().flat_map(|l| l.vars.iter().map(|(n, _)| n.clone())).collect();
    let mut shard_of = serde_json::Map::new();
    for p in &plan.placement.parts {
        shard_of.insert(names[p.var].clone(), serde_json::json!(p.shard));
    }
    shard_of.insert("global_step".into(), serde_json::json!(0));
    serde_json::json!({
        "layers": proxy.layers.iter().map(|l| serde_json::json!({
            "name": l.name,
            "k": l.k,
            "n": l.n,
            "rows": l.rows,
            "vars": l.vars.iter().map(|(n, shape)| serde_json::json!({"name": n, "shape": shape})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "shard_of_var": shard_of,
        "batch": s.spec.batch,
        "steps": s.spec.training.steps,
        "mode": match s.spec.topology.mode {
            Mode::Sync => "sync",
            Mode::Backup => "backup",
            Mode::Async => "async",
            Mode::StaleSynchronous => "ssp",
        },
        "backup_workers": if s.spec.topology.mode == Mode::Backup { s.spec.topology.backup_workers } else { 0 },
        "learning_rate": learning_rate,
        "seed": s.spec.seed,
        "trace_dir": trace_dir,
        "epoch_ns": epoch_ns,
        "timeout_s": timeout_s,
        "scenario_hash": s.hash,
        "version": topolab_core::records::VERSION,
    })
}

/// TF_CONFIG of one task.
pub fn tf_config(ps: &[String], workers: &[String], kind: &str, index: u32) -> String {
    serde_json::json!({
        "cluster": {"ps": ps, "worker": workers},
        "task": {"type": kind, "index": index},
    })
    .to_string()
}

/// Where the chief wrote TensorFlow's placement: variable name to device.
pub fn placement(trace_dir: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(trace_dir.join("placement.json")).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_engine_cannot_hold_is_refused() {
        let text = |training: &str| {
            format!(
                "name = \"t\"\nbatch = 8\n[model]\nname = \"alexnet\"\n[topology]\nworkers = 2\nps = 1\n[training]\nsteps = 2\n{training}\n"
            )
        };
        let s = Scenario::parse(&text(""), "t.toml", "t", None).unwrap();
        let plan = Plan::new(&s).unwrap();
        assert_eq!(refusal(&s, &plan, false, true), None);
        let s = Scenario::parse(&text("overlap = false"), "t.toml", "t", None).unwrap();
        let why = refusal(&s, &plan, false, true).unwrap();
        assert!(why.contains("training.overlap = false"), "{why}");
    }
}
