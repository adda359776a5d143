//! The cluster spec every task reads from one environment variable, shaped like TF_CONFIG.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Name of the environment variable holding the [`ClusterSpec`] as JSON.
pub const ENV: &str = "TOPOLAB_CLUSTER";

/// Names a file holding the job token (a mounted Kubernetes Secret), when the spec's
/// `job.token` is empty: the token then never sits in an environment variable.
pub const TOKEN_FILE_ENV: &str = "TOPOLAB_TOKEN_FILE";

/// `{"ps": [...], "worker": [...], "task": {"type": "worker", "index": 0}, "job": {...}}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// Addresses of the parameter-server shards (host:port).
    pub ps: Vec<String>,
    /// Worker names (workers listen on nothing; they connect to the shards).
    pub worker: Vec<String>,
    /// This task.
    pub task: Task,
    /// What the job is.
    pub job: Job,
}

/// A task's role and index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// "ps" or "worker".
    #[serde(rename = "type")]
    pub kind: String,
    /// Index within its role.
    pub index: u32,
}

/// Job-wide settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The job token (hex), for the handshake.
    pub token: String,
    /// The effective scenario file to run.
    pub scenario: PathBuf,
    /// Where traces and results go.
    pub out: PathBuf,
    /// Where checkpoints go.
    pub checkpoint_dir: PathBuf,
    /// Step to start from (0, or a checkpoint's step when resuming).
    pub start_step: u64,
    /// Address a shard listens on (port 0: any free port, reported on stdout).
    pub bind: String,
    /// One-way latency emulated in the transport, ns (0: none).
    pub latency_ns: u64,
    /// Seconds to wait for a peer before giving up.
    pub timeout_s: u64,
    /// CLOCK_MONOTONIC ns at launch: the time origin of every trace.
    pub epoch_ns: u64,
}

impl ClusterSpec {
    /// Reads the spec from [`ENV`].
    pub fn from_env() -> Result<ClusterSpec, String> {
        let text = std::env::var(ENV)
            .map_err(|_| format!("{ENV} is not set; `topolab node` is started by `topolab replay`"))?;
        let mut spec: ClusterSpec =
            serde_json::from_str(&text).map_err(|e| format!("{ENV} is not a valid cluster spec: {e}"))?;
        if spec.job.token.is_empty()
            && let Some(path) = std::env::var_os(TOKEN_FILE_ENV)
        {
            let token = std::fs::read_to_string(&path)
                .map_err(|e| format!("{TOKEN_FILE_ENV}: cannot read the job token {}: {e}", path.to_string_lossy()))?;
            spec.job.token = token.trim().to_string();
        }
        Ok(spec)
    }
}
