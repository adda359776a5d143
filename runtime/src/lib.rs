//! topolab-runtime: a real parameter-server training system that replays scenarios.
//!
//! The pieces:
//!
//! - [`wire`]: length-delimited frames over TCP, raw little-endian f32 payloads, a frame cap
//!   checked before allocating, an HMAC-SHA256 handshake with the job's token, read timeouts,
//!   and latency emulation in the transport.
//! - [`proxy`]: the scenario's model as real GEMMs, scaled to fit the machine, whose loss
//!   really falls; [`compute`]: the backend trait that runs it, on the CPU (ndarray) or on a
//!   GPU ([`cuda`]: cuBLAS through cudarc, loaded at run time).
//! - [`ps`] and [`worker`]: the two task roles; [`cluster`]: the spec each task reads from one
//!   environment variable, like TF_CONFIG.
//! - [`checkpoint`]: atomic shard checkpoints with manifests and checksums.
//! - [`launcher`]: the coordinator (checks, effective scenario, job, watch loop, restarts,
//!   merged traces and summary) over the [`launcher::Launcher`] trait (start, progress, poll,
//!   kill, stop, collect), with three launchers: [`processes`] (local processes on 127.0.0.1,
//!   or in the network namespaces of [`netns`]) and [`pods`] (a Kubernetes cluster through
//!   kube-rs, the objects of [`k8s`], traces back through the pods' logs by [`tracelog`]).
//!
//! The runtime executes the same core Plan the simulator times: the same variable parts, the
//! same shards, the same pulls and pushes, in the same order.
#![warn(missing_docs)]

pub mod calibrate;
pub mod checkpoint;
pub mod cluster;
pub mod compute;
pub mod cuda;
pub mod k8s;
pub mod launcher;
pub mod netns;
pub mod pods;
pub mod processes;
pub mod proxy;
pub mod ps;
pub mod ring;
pub mod tensorflow;
pub mod tracelog;
pub mod wire;
pub mod worker;

/// Why a task failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The task could not start (bad spec, scenario, checkpoint).
    #[error("setup: {0}")]
    Setup(String),
    /// I/O.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The wire.
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    /// The compute backend failed (or could not open its device).
    #[error("compute: {0}")]
    Compute(#[from] compute::ComputeError),
    /// A peer broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// One timed operation of a worker (ops.csv).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpRecord {
    /// Worker.
    pub worker: u32,
    /// Step.
    pub step: u64,
    /// "compute-forward", "compute-backward", "pull", "push" or "all-reduce".
    pub op: &'static str,
    /// Layer (compute), part (pull, push) or fusion bucket (all-reduce).
    pub index: u64,
    /// Payload bytes (pull, push).
    pub bytes: u64,
    /// Start, ns since launch.
    pub start_ns: u64,
    /// End, ns since launch.
    pub end_ns: u64,
}

/// Runs the task described by the cluster spec in the environment (`topolab node`).
pub fn run_node() -> Result<(), NodeError> {
    let spec = cluster::ClusterSpec::from_env().map_err(NodeError::Setup)?;
    let s = topolab_core::scenario::Scenario::load(&spec.job.scenario).map_err(|e| NodeError::Setup(e.to_string()))?;
    // Workers of an all-reduce have no shards: they sum among themselves (a collective).
    use topolab_core::scenario::Topology;
    match (spec.task.kind.as_str(), s.topology()) {
        ("ps", Topology::ParameterServer(t)) => ps::run(&spec, &s, t),
        ("worker", Topology::AllReduce(t)) => ring::run(&spec, &s, t),
        ("worker", Topology::ParameterServer(t)) => worker::run(&spec, &s, t),
        ("ps", Topology::AllReduce(_)) => Err(NodeError::Setup("an all-reduce has no parameter servers".into())),
        (other, _) => Err(NodeError::Setup(format!("unknown task type `{other}` (ps or worker)"))),
    }
}
