//! Scenarios: the user's input, parsed in two stages.
//!
//! 1. **Raw**: TOML into [`ScenarioFile`] with serde. Unknown fields are rejected, quantities
//!    carry units ([`crate::units`]), omitted fields take documented defaults. Errors here are
//!    syntax, types, units and unknown names.
//! 2. **Validated**: [`Scenario::from_file`] checks the meaning (workers >= 1, backup workers <
//!    workers, ...), resolves catalogue names (model, GPU, NIC, host bus) and reports *all*
//!    problems at once, each located at the field that causes it.
//!
//! Every [`Diagnostic`] names `file:line:column`, the field path, the offending line with a
//! caret and, where it can, a fix ("did you mean `workers`?").

use std::fmt;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::diagnostic::{Diagnostic, SourceMap, SpanIndex, did_you_mean};
use crate::hardware::{self, Gpu, HostBus};
use crate::models::{self, Model};
use crate::units::{BitRate, Bytes, FlopRate, Time};

/// A scenario file as written, with defaults filled in (stage 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// Short name; defaults to the file's stem.
    #[serde(default)]
    pub name: String,
    /// Free text shown in reports.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Seed of the run's single random number generator.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Samples per GPU replica per step (images or sequences).
    pub batch: u64,
    /// Which model to train.
    pub model: ModelSpec,
    /// Optimizer (decides how many bytes a parameter-server update touches).
    #[serde(default)]
    pub optimizer: Optimizer,
    /// GPUs and hosts.
    #[serde(default)]
    pub hardware: HardwareSpec,
    /// NICs, latency and switch fabric.
    #[serde(default)]
    pub network: NetworkSpec,
    /// Parameter servers and workers, or all-reduce.
    #[serde(default)]
    pub topology: TopologySpec,
    /// How long to train: a step count or a target accuracy.
    #[serde(default)]
    pub training: TrainingSpec,
    /// Stragglers, jitter, failures and checkpoints.
    #[serde(default)]
    pub faults: FaultsSpec,
    /// Prices.
    #[serde(default)]
    pub cost: CostSpec,
    /// Axes to sweep (cartesian product); empty = a single run.
    #[serde(default, skip_serializing_if = "SweepSpec::is_empty")]
    pub sweep: SweepSpec,
    /// Overrides for real replays (scale-down).
    #[serde(default)]
    pub runtime: RuntimeSpec,
}

fn default_seed() -> u64 {
    1
}

/// Which model to train: a built-in name or a layer-table CSV file (exactly one).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Built-in model name (`topolab models` lists them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Path to a layer-table CSV, relative to the scenario file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<PathBuf>,
}

/// Optimizer kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// Plain SGD: no slot variables.
    #[default]
    Sgd,
    /// SGD with momentum: one slot per variable.
    Momentum,
    /// RMSProp (Inception-v3's optimizer): two slots (mean square, momentum).
    Rmsprop,
    /// Adam: two slots (m, v).
    Adam,
}

impl OptimizerKind {
    /// Slot tensors per variable (each the variable's size) that an apply reads and writes.
    pub fn slots(self) -> u64 {
        match self {
            OptimizerKind::Sgd => 0,
            OptimizerKind::Momentum => 1,
            OptimizerKind::Rmsprop | OptimizerKind::Adam => 2,
        }
    }
}

/// The optimizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Optimizer {
    /// Kind of optimizer.
    #[serde(default)]
    pub kind: OptimizerKind,
    /// Learning rate (used by real replays).
    #[serde(default = "default_lr")]
    pub learning_rate: f64,
}

fn default_lr() -> f64 {
    0.01
}

impl Default for Optimizer {
    fn default() -> Self {
        Optimizer { kind: OptimizerKind::Sgd, learning_rate: default_lr() }
    }
}

/// Numeric precision of training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// FP32 everywhere.
    #[default]
    Fp32,
    /// FP32 storage, GEMMs on TF32 tensor cores (Ampere and later; cuBLAS's
    /// `CUBLAS_COMPUTE_32F_FAST_TF32`).
    Tf32,
    /// Mixed precision: FP16/BF16 math (tensor cores), FP32 variables.
    Fp16,
}

/// Fields of a GPU that a scenario may override, or all of them for a custom device.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuOverride {
    /// Peak FP32 rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp32: Option<FlopRate>,
    /// Peak FP16/BF16 rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp16: Option<FlopRate>,
    /// Peak TF32 tensor-core rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tf32: Option<FlopRate>,
    /// Device memory bandwidth, e.g. "288 GB/s".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bandwidth: Option<BitRate>,
    /// Device memory, e.g. "12 GiB".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Bytes>,
    /// Where the figures come from (required for a custom device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// GPUs and hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HardwareSpec {
    /// GPU catalogue name (`topolab hardware` lists them) or a custom name with `[hardware.gpu_spec]`.
    #[serde(default = "default_gpu")]
    pub gpu: String,
    /// Overrides of the catalogue GPU's figures, or all figures of a custom GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_spec: Option<GpuOverride>,
    /// Fraction of peak a training step reaches on the arithmetic it executes (in FP32, 3x3
    /// stride-1 convolutions by Winograd's algorithm, 4x fewer multiplies than their nominal
    /// FLOPs); default: the GPU's catalogue efficiency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efficiency: Option<f64>,
    /// Training precision.
    #[serde(default)]
    pub precision: Precision,
    /// GPUs per worker host (each a replica with `batch` samples).
    #[serde(default = "one")]
    pub gpus_per_host: u32,
    /// Bus between a host's GPUs: pcie3-x16, pcie4-x16, pcie5-x16, nvlink2, nvlink3, nvlink4,
    /// or a rate per direction ("20 Gbit/s").
    #[serde(default = "default_bus")]
    pub host_bus: String,
    /// Aggregate gradients of a multi-GPU host locally before pushing (TensorFlow's
    /// `distributed_replicated`); when false every GPU pushes and pulls on its own.
    #[serde(default = "yes")]
    pub local_aggregation: bool,
    /// Memory bandwidth of a parameter-server host; bounds its apply rate.
    #[serde(default = "default_ps_mem_bw")]
    pub ps_memory_bandwidth: BitRate,
    /// A calibrated hardware profile (TOML, from `topolab calibrate`) whose measured compute
    /// rate, link goodput, message overhead, PS memory bandwidth and shared cores replace the
    /// catalogue's. Relative to the scenario file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<PathBuf>,
    /// The worker and PS processes share this many CPU cores of one machine (a replay's
    /// machine): compute is max-min shared among them. Unset: every worker has its own device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_cores: Option<u32>,
    /// The workers' compute runs on this many GPUs of one machine, time-shared among the worker
    /// processes (a CUDA replay's GPUs; compute is max-min shared over them, while the cores of
    /// `shared_cores` carry the network's CPU work). Unset: every worker has its own GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_gpus: Option<u32>,
}

fn default_gpu() -> String {
    "k40".into()
}
fn default_bus() -> String {
    "pcie3-x16".into()
}
fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}
fn default_ps_mem_bw() -> BitRate {
    BitRate::from_bytes_per_sec(hardware::DEFAULT_PS_MEMORY_BANDWIDTH_GBS * 1e9)
}

impl Default for HardwareSpec {
    fn default() -> Self {
        HardwareSpec {
            gpu: default_gpu(),
            gpu_spec: None,
            efficiency: None,
            precision: Precision::Fp32,
            gpus_per_host: 1,
            shared_cores: None,
            shared_gpus: None,
            host_bus: default_bus(),
            local_aggregation: true,
            ps_memory_bandwidth: default_ps_mem_bw(),
            profile: None,
        }
    }
}

/// Switch fabric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SwitchKind {
    /// One non-blocking switch: only NICs constrain.
    #[default]
    Single,
    /// Racks of `hosts_per_rack` under top-of-rack switches whose uplinks are oversubscribed.
    TwoTier,
}

/// NICs, latency and switch fabric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// NIC of every host: a preset (1GbE, 10GbE, 25GbE, 40GbE, 100GbE, 200GbE, 400GbE) or a rate ("10 Gbit/s").
    #[serde(default = "default_nic", deserialize_with = "nic_text")]
    pub nic: String,
    /// One-way latency between two hosts.
    #[serde(default = "default_latency")]
    pub latency: Time,
    /// Switch fabric.
    #[serde(default)]
    pub switch: SwitchKind,
    /// Hosts under one top-of-rack switch (two-tier only).
    #[serde(default = "default_rack")]
    pub hosts_per_rack: u32,
    /// Oversubscription of each rack's uplink: (hosts x NIC rate) / uplink rate (two-tier only).
    #[serde(default = "default_oversub")]
    pub oversubscription: f64,
    /// Fraction of the line rate that TCP payload reaches. Default 0.94: a 1500-byte MTU carries
    /// 1448 payload bytes per 1538 bytes on the wire (Ethernet preamble, header, FCS and
    /// inter-frame gap; IPv4 and TCP headers with timestamps) = 0.9415.
    #[serde(default = "default_goodput")]
    pub goodput: f64,
    /// Fixed cost per message (RPC framing, syscalls). Default 20 us, the order of gRPC's
    /// per-message streaming overhead in its published benchmarks; calibration replaces it.
    #[serde(default = "default_overhead")]
    pub message_overhead: Time,
    /// TCP's unequal sharing: each connection gets `exp(unfairness x z)` times a fair share for
    /// a busy period (z standard normal, keyed by the seed). 0 (default) is exact max-min
    /// fairness; calibration measures it with two flows on one shaped link.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub unfairness: f64,
    /// Window ramp-up: a connection that turns busy starts with `ramp_share` of a fair share
    /// and reaches all of it after `ramp` (its log grows in steps). 0 (default): no ramp.
    #[serde(default, skip_serializing_if = "is_zero_time")]
    pub ramp: Time,
    /// Share a new connection starts with, in (0, 1] (with `ramp`). Default 1: no ramp.
    #[serde(default = "full_share", skip_serializing_if = "is_full_share")]
    pub ramp_share: f64,
    /// CPU time per payload byte moved (ns, sender and receiver, kernel included), charged to
    /// `hardware.shared_cores` when the job shares one machine. 0 (default): free.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub cpu_ns_per_byte: f64,
    /// First come, first served, as a drop-tail queue serves what reached it first: a
    /// connection that turned busy `d` after the oldest busy one it competes with gets
    /// `exp(-d / fifo)` of a share until it has waited out `queue`. 0 (default): fair sharing.
    #[serde(default, skip_serializing_if = "is_zero_time")]
    pub fifo: Time,
    /// The links' drop-tail queue, as time at the NIC rate: with `fifo`, how long a late
    /// connection waits behind the bytes queued ahead of it at most. 0 (default): no limit.
    #[serde(default, skip_serializing_if = "is_zero_time")]
    pub queue: Time,
}

fn is_gaussian(n: &Noise) -> bool {
    *n == Noise::Gaussian
}

fn is_zero_u32(x: &u32) -> bool {
    *x == 0
}
fn is_zero_f64(x: &f64) -> bool {
    *x == 0.0
}
fn is_zero_time(t: &Time) -> bool {
    t.0 == 0
}
fn full_share() -> f64 {
    1.0
}
fn is_full_share(x: &f64) -> bool {
    *x == 1.0
}

/// A NIC as text; a bare number gets the unit hint that quantities get.
fn nic_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a NIC preset such as \"10GbE\" or a rate such as \"10 Gbit/s\"")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            Err(E::custom(format!(
                "bare number {v} has no unit; write a rate with its unit, e.g. \"{v} Gbit/s\", or a preset such as \"{v}GbE\""
            )))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            self.visit_i64(v as i64)
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
            Err(E::custom(format!("bare number {v} has no unit; write a rate with its unit, e.g. \"{v} Gbit/s\"")))
        }
    }
    d.deserialize_any(V)
}

fn default_nic() -> String {
    "10GbE".into()
}
fn default_latency() -> Time {
    Time(50_000)
}
fn default_rack() -> u32 {
    32
}
fn default_oversub() -> f64 {
    1.0
}
fn default_goodput() -> f64 {
    0.94
}
fn default_overhead() -> Time {
    Time(20_000)
}

impl Default for NetworkSpec {
    fn default() -> Self {
        NetworkSpec {
            nic: default_nic(),
            latency: default_latency(),
            switch: SwitchKind::Single,
            hosts_per_rack: default_rack(),
            oversubscription: default_oversub(),
            goodput: default_goodput(),
            message_overhead: default_overhead(),
            unfairness: 0.0,
            ramp: Time::ZERO,
            ramp_share: 1.0,
            fifo: Time::ZERO,
            queue: Time::ZERO,
            cpu_ns_per_byte: 0.0,
        }
    }
}

/// Topology kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TopologyKind {
    /// Parameter servers and workers.
    #[default]
    ParameterServer,
    /// Collective all-reduce among workers.
    AllReduce,
}

/// How workers and parameter servers synchronise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Synchronous: each step aggregates every worker's gradients.
    #[default]
    Sync,
    /// Asynchronous: each gradient is applied on arrival.
    Async,
    /// Synchronous with backup workers: the first `workers - backup_workers` gradients count.
    Backup,
    /// Stale-synchronous: a worker may run at most `staleness` steps ahead of the slowest.
    StaleSynchronous,
}

impl Mode {
    /// Kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sync => "sync",
            Mode::Async => "async",
            Mode::Backup => "backup",
            Mode::StaleSynchronous => "stale-synchronous",
        }
    }
}

/// How variables are placed on parameter-server shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PlacementKind {
    /// Variable i goes to shard i mod ps, in creation order (TensorFlow's replica_device_setter).
    #[default]
    RoundRobin,
    /// Largest variable first onto the least-loaded shard.
    Greedy,
    /// Variables above `partition_threshold` are split evenly across all shards; the rest greedy.
    Partitioned,
}

impl PlacementKind {
    /// Kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            PlacementKind::RoundRobin => "round-robin",
            PlacementKind::Greedy => "greedy",
            PlacementKind::Partitioned => "partitioned",
        }
    }
}

/// Where parameter servers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PsHosts {
    /// Each shard on a host of its own.
    #[default]
    Dedicated,
    /// Shard i on worker host i (sharing its NIC).
    Colocated,
}

/// All-reduce algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AllReduceAlgorithm {
    /// Ring reduce-scatter + all-gather.
    #[default]
    Ring,
    /// Intra-host reduce, inter-host ring, intra-host broadcast.
    Hierarchical,
    /// Binary tree reduce + broadcast.
    Tree,
}

impl AllReduceAlgorithm {
    /// Kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            AllReduceAlgorithm::Ring => "ring",
            AllReduceAlgorithm::Hierarchical => "hierarchical",
            AllReduceAlgorithm::Tree => "tree",
        }
    }
}

impl TopologyKind {
    /// Kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            TopologyKind::ParameterServer => "parameter-server",
            TopologyKind::AllReduce => "all-reduce",
        }
    }
}

/// Parameter servers and workers, or all-reduce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopologySpec {
    /// Parameter server or all-reduce.
    #[serde(default)]
    pub kind: TopologyKind,
    /// Worker hosts.
    #[serde(default = "one")]
    pub workers: u32,
    /// Parameter-server shards (parameter-server topology).
    #[serde(default = "one")]
    pub ps: u32,
    /// Synchronisation mode.
    #[serde(default)]
    pub mode: Mode,
    /// Backup workers whose gradients are dropped each step (mode = "backup").
    #[serde(default)]
    pub backup_workers: u32,
    /// Steps a worker may run ahead (mode = "stale-synchronous").
    #[serde(default)]
    pub staleness: u32,
    /// Placement of variables on shards.
    #[serde(default)]
    pub placement: PlacementKind,
    /// Variables larger than this are split across shards (placement = "partitioned").
    #[serde(default = "default_threshold")]
    pub partition_threshold: Bytes,
    /// Dedicated or co-located parameter servers.
    #[serde(default)]
    pub ps_hosts: PsHosts,
    /// All-reduce algorithm (all-reduce topology).
    #[serde(default)]
    pub algorithm: AllReduceAlgorithm,
    /// Tensor fusion buffer for all-reduce: ready gradients are fused up to this size and
    /// all-reduced together (Horovod's HOROVOD_FUSION_THRESHOLD; 0 turns fusion off).
    #[serde(default = "default_fusion")]
    pub fusion_buffer: Bytes,
    /// How often ready gradients are collected into a fusion buffer (Horovod's
    /// HOROVOD_CYCLE_TIME; 0: as soon as a bucket is full or backward ends).
    #[serde(default = "default_fusion_cycle")]
    pub fusion_cycle: Time,
}

/// The topology of a validated scenario, each kind with only the fields that belong to it
/// (the file's [`TopologySpec`] holds every field, and validation refuses those of the other
/// kind with their location). The engines take it apart by kind ([`Scenario::topology`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Topology {
    /// Workers and parameter-server shards.
    ParameterServer(ParameterServers),
    /// Workers that sum their gradients among themselves.
    AllReduce(AllReduce),
}

/// A parameter-server topology.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParameterServers {
    /// Worker hosts.
    pub workers: u32,
    /// Parameter-server shards.
    pub ps: u32,
    /// Synchronisation mode.
    pub mode: Mode,
    /// Backup workers whose gradients are dropped each step (mode = "backup").
    pub backup_workers: u32,
    /// Steps a worker may run ahead (mode = "stale-synchronous").
    pub staleness: u32,
    /// Placement of variables on shards.
    pub placement: PlacementKind,
    /// Variables larger than this are split across shards (placement = "partitioned").
    pub partition_threshold: Bytes,
    /// Dedicated or co-located parameter servers.
    pub ps_hosts: PsHosts,
}

/// An all-reduce topology.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AllReduce {
    /// Worker hosts.
    pub workers: u32,
    /// The collective.
    pub algorithm: AllReduceAlgorithm,
    /// Tensor fusion threshold (bytes of one bucket at most; 0: no fusion).
    pub fusion_buffer: Bytes,
    /// The coordinator's fusion cycle.
    pub fusion_cycle: Time,
}

impl Topology {
    /// The resolved topology of a file's `[topology]` (its fields of the other kind dropped).
    pub fn of(t: &TopologySpec) -> Topology {
        match t.kind {
            TopologyKind::ParameterServer => Topology::ParameterServer(ParameterServers {
                workers: t.workers,
                ps: t.ps,
                mode: t.mode,
                backup_workers: t.backup_workers,
                staleness: t.staleness,
                placement: t.placement,
                partition_threshold: t.partition_threshold,
                ps_hosts: t.ps_hosts,
            }),
            TopologyKind::AllReduce => Topology::AllReduce(AllReduce {
                workers: t.workers,
                algorithm: t.algorithm,
                fusion_buffer: t.fusion_buffer,
                fusion_cycle: t.fusion_cycle,
            }),
        }
    }

    /// Worker hosts.
    pub fn workers(&self) -> u32 {
        match self {
            Topology::ParameterServer(t) => t.workers,
            Topology::AllReduce(t) => t.workers,
        }
    }

    /// Parameter-server shards (none in an all-reduce).
    pub fn ps(&self) -> u32 {
        match self {
            Topology::ParameterServer(t) => t.ps,
            Topology::AllReduce(_) => 0,
        }
    }

    /// The synchronisation mode (an all-reduce is synchronous).
    pub fn mode(&self) -> Mode {
        match self {
            Topology::ParameterServer(t) => t.mode,
            Topology::AllReduce(_) => Mode::Sync,
        }
    }
}

fn default_threshold() -> Bytes {
    Bytes(16 << 20)
}
/// Horovod's defaults since v0.21.0: a 128 MB fusion threshold and a 1 ms cycle (they were
/// 64 MB and 5 ms; Horovod changelog v0.21.0, "Changed default cycle time from 5ms to 1ms and
/// fusion threshold from 64MB to 128MB", horovod/horovod#2468).
fn default_fusion() -> Bytes {
    Bytes(128 << 20)
}
fn default_fusion_cycle() -> Time {
    Time(1_000_000)
}

impl Default for TopologySpec {
    fn default() -> Self {
        TopologySpec {
            kind: TopologyKind::ParameterServer,
            workers: 1,
            ps: 1,
            mode: Mode::Sync,
            backup_workers: 0,
            staleness: 0,
            placement: PlacementKind::RoundRobin,
            partition_threshold: default_threshold(),
            ps_hosts: PsHosts::Dedicated,
            algorithm: AllReduceAlgorithm::Ring,
            fusion_buffer: default_fusion(),
            fusion_cycle: default_fusion_cycle(),
        }
    }
}

/// A target accuracy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Metric name, e.g. "top1".
    pub metric: String,
    /// Value to reach, as a fraction (0.78 = 78%).
    pub value: f64,
}

/// How long to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainingSpec {
    /// Steps to simulate or replay.
    #[serde(default = "default_steps")]
    pub steps: u64,
    /// Train until this accuracy (uses the convergence model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// Overlap gradient pushes with the rest of backprop.
    #[serde(default = "yes")]
    pub overlap: bool,
    /// Steps written to the Chrome trace.
    #[serde(default = "default_trace_steps")]
    pub trace_steps: u32,
    /// Async modes: extra examples needed per update of mean staleness (see
    /// `topolab_core::convergence`).
    #[serde(default = "default_staleness_penalty")]
    pub staleness_penalty: f64,
}

fn default_staleness_penalty() -> f64 {
    crate::convergence::DEFAULT_STALENESS_PENALTY
}

fn default_steps() -> u64 {
    100
}
fn default_trace_steps() -> u32 {
    3
}

impl Default for TrainingSpec {
    fn default() -> Self {
        TrainingSpec {
            steps: default_steps(),
            target: None,
            overlap: true,
            trace_steps: default_trace_steps(),
            staleness_penalty: default_staleness_penalty(),
        }
    }
}

/// The distribution of the per-step compute noise (`faults.jitter` is its coefficient of
/// variation). Each worker host draws its own, deterministic for the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Noise {
    /// `1 + jitter z` for a standard normal z (clamped at 0.1): symmetric, thin tails.
    #[default]
    Gaussian,
    /// Log-normal with mean 1 and coefficient of variation `jitter`: skewed to slow steps, as
    /// per-request and per-task times of shared machines are (Dean and Barroso, "The Tail at
    /// Scale", CACM 56(2), 2013).
    Lognormal,
    /// Log-normal, and with probability `faults.tail.probability` a step `faults.tail.slowdown`
    /// times slower (garbage collection, page faults, a background daemon: the rare slow
    /// requests of Dean and Barroso 2013).
    HeavyTailed,
}

/// The rare slow steps of `noise = "heavy-tailed"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tail {
    /// Chance that a step is slow, in (0, 1).
    pub probability: f64,
    /// How much slower a slow step computes (>= 1).
    pub slowdown: f64,
}

/// Slow-node episodes: every worker host is slowed now and then for a while (thermal
/// throttling, a noisy neighbour, a failing disk), independently of the others: the slow
/// servers of Chen et al., "Revisiting Distributed Synchronous SGD" (2016), that backup workers
/// hide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Episodes {
    /// Mean time between episodes of one host (exponential gaps).
    pub every: Time,
    /// How long an episode lasts.
    pub duration: Time,
    /// Compute multiplier during an episode (>= 1).
    pub slowdown: f64,
}

/// Slow workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Straggler {
    /// How many workers are slow (the last ones by index).
    pub count: u32,
    /// Compute time multiplier of a slow worker (2.0 = twice as slow).
    pub slowdown: f64,
}

/// Stragglers, jitter, failures and checkpoints.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultsSpec {
    /// Coefficient of variation of per-step compute time (0 = deterministic).
    #[serde(default)]
    pub jitter: f64,
    /// Distribution of that noise.
    #[serde(default, skip_serializing_if = "is_gaussian")]
    pub noise: Noise,
    /// The slow steps of `noise = "heavy-tailed"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<Tail>,
    /// Slow-node episodes of every worker host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub episodes: Option<Episodes>,
    /// Persistently slow workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stragglers: Option<Straggler>,
    /// Network noise: coefficient of variation of a worker host's transfer times, log-normal
    /// with mean 1, one draw per host and step shared by all its pulls and pushes of that step
    /// (shared-cloud links vary per instance and over time: Schad, Dittrich and Quiané-Ruiz,
    /// "Runtime measurements in the cloud", PVLDB 3(1), 2010). 0: none.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub network_noise: f64,
    /// Mean time between failures of one host (worker or parameter server): with a
    /// [training.target], the time to it includes the failures, restarts and checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtbf: Option<Time>,
    /// Instead of `mtbf`: failures per GPU, as the GPU-hours between two interruptions of a
    /// job ("50677 h"), or "llama3" for the published large-scale rate ([`LLAMA3_GPU_MTBF_H`]);
    /// the job fails every `gpu_mtbf / GPUs` (parameter-server hosts, without GPUs, are not
    /// counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub gpu_mtbf: Option<GpuMtbf>,
    /// Work between two checkpoints, or "auto" (default with `mtbf`): Daly's optimum for the
    /// checkpoint's write time and the job's MTBF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_interval: Option<CheckpointInterval>,
    /// Bandwidth of checkpoint storage, shared by all shards (needed with `mtbf`): a
    /// checkpoint writes the parameters and optimizer slots, a restart reads them back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_bandwidth: Option<BitRate>,
    /// Time a restart takes after a failure before the checkpoint is read back (rescheduling,
    /// starting the processes). Default 0: only the read-back is counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<Time>,
    /// Tasks a replay kills (SIGKILL) at given times after it started; the launcher then
    /// restarts the whole job from the last complete checkpoint, as a TFJob restart policy
    /// would, and measures the work lost and the restart's duration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kills: Vec<Kill>,
}

/// GPU-hours between two unexpected interruptions of a large training job: Meta's Llama 3
/// pre-training saw 419 in a 54-day snapshot on 16,384 H100 GPUs (Dubey et al., "The Llama 3
/// Herd of Models", 2024, section 3.3.4): 16,384 x 54 x 24 / 419 = 50,677 GPU-hours.
pub const LLAMA3_GPU_MTBF_H: f64 = 16_384.0 * 54.0 * 24.0 / 419.0;

/// Failures per GPU: a published rate by name, or a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GpuMtbf {
    /// The Llama 3 pre-training rate ([`LLAMA3_GPU_MTBF_H`]).
    Llama3,
    /// GPU-hours (as a time) between two interruptions.
    Every(Time),
}

impl GpuMtbf {
    /// The GPU-time between two interruptions.
    pub fn time(self) -> Time {
        match self {
            GpuMtbf::Llama3 => Time::from_secs_f64(LLAMA3_GPU_MTBF_H * 3600.0),
            GpuMtbf::Every(t) => t,
        }
    }
}

/// Serializes a value written either as a keyword or as a time.
fn keyword_or_time<S: serde::Serializer>(s: S, keyword: &str, time: Option<&Time>) -> Result<S::Ok, S::Error> {
    match time {
        Some(t) => t.serialize(s),
        None => s.serialize_str(keyword),
    }
}

impl Serialize for GpuMtbf {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        keyword_or_time(s, "llama3", if let GpuMtbf::Every(t) = self { Some(t) } else { None })
    }
}

impl<'de> Deserialize<'de> for GpuMtbf {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim().eq_ignore_ascii_case("llama3") {
            return Ok(GpuMtbf::Llama3);
        }
        text.parse::<Time>()
            .map(GpuMtbf::Every)
            .map_err(|e| serde::de::Error::custom(format!("{e}; or \"llama3\" for the published Llama 3 rate")))
    }
}

/// A task a replay kills.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Kill {
    /// "worker N" or "ps N" (0-based).
    pub task: String,
    /// Time after the replay started its tasks.
    pub at: Time,
}

impl Kill {
    /// The task as (role, index): ("worker" | "ps", N), if it is written that way.
    pub fn parsed(&self) -> Option<(&'static str, u32)> {
        let mut it = self.task.split_whitespace();
        let role = match it.next()? {
            "worker" => "worker",
            "ps" => "ps",
            _ => return None,
        };
        let index = it.next()?.parse().ok()?;
        it.next().is_none().then_some((role, index))
    }
}

/// How often to checkpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CheckpointInterval {
    /// Daly's optimum for the checkpoint's write time and the job's MTBF.
    Auto,
    /// After this much work.
    Every(Time),
}

impl Serialize for CheckpointInterval {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        keyword_or_time(s, "auto", if let CheckpointInterval::Every(t) = self { Some(t) } else { None })
    }
}

impl<'de> Deserialize<'de> for CheckpointInterval {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = CheckpointInterval;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"auto\" or a time such as \"30 min\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CheckpointInterval, E> {
                if v.trim().eq_ignore_ascii_case("auto") {
                    return Ok(CheckpointInterval::Auto);
                }
                v.parse::<Time>().map(CheckpointInterval::Every).map_err(|e| E::custom(format!("{e}; or \"auto\"")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<CheckpointInterval, E> {
                Err(E::custom(format!("bare number {v} has no unit; write e.g. \"{v} min\", or \"auto\"")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<CheckpointInterval, E> {
                self.visit_i64(v as i64)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<CheckpointInterval, E> {
                Err(E::custom(format!("bare number {v} has no unit; write e.g. \"{v} min\", or \"auto\"")))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for CheckpointInterval {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CheckpointInterval".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "\"auto\" (Daly's optimum) or a time with its unit",
            "examples": ["auto", "30 min"],
        })
    }
}

/// Prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CostSpec {
    /// Price of one GPU-hour. Default 0.90: AWS p2.xlarge on-demand (one K80 chip), us-east-1.
    #[serde(default = "default_gpu_hour")]
    pub gpu_hour: f64,
    /// Price of one parameter-server host-hour (CPU only), paid per dedicated PS host (an
    /// all-reduce configuration has none). Default 0.10: AWS c4.large-class host.
    #[serde(default = "default_ps_hour")]
    pub ps_hour: f64,
    /// Currency of the prices.
    #[serde(default = "default_currency")]
    pub currency: String,
}

fn default_gpu_hour() -> f64 {
    0.90
}
fn default_ps_hour() -> f64 {
    0.10
}
fn default_currency() -> String {
    "USD".into()
}

impl Default for CostSpec {
    fn default() -> Self {
        CostSpec { gpu_hour: default_gpu_hour(), ps_hour: default_ps_hour(), currency: default_currency() }
    }
}

/// Axes to sweep; the cartesian product of the non-empty ones is run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// Worker counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<u32>,
    /// Parameter-server counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ps: Vec<u32>,
    /// NICs (presets or rates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nic: Vec<String>,
    /// Per-replica batch sizes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch: Vec<u64>,
    /// GPUs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpu: Vec<String>,
    /// Placements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<PlacementKind>,
    /// Modes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mode: Vec<Mode>,
    /// Built-in models.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model: Vec<String>,
    /// Topology kinds: parameter servers or all-reduce (a point of kind all-reduce takes no
    /// parameter-server fields from the base scenario).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kind: Vec<TopologyKind>,
    /// All-reduce fusion buffer sizes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fusion_buffer: Vec<Bytes>,
    /// All-reduce algorithms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub algorithm: Vec<AllReduceAlgorithm>,
    /// Explicit configurations (e.g. paired workers and PS), each combined with the axes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<SweepPoint>,
}

/// One explicit configuration of a sweep: any subset of the axes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SweepPoint {
    /// Worker hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
    /// Parameter-server shards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ps: Option<u32>,
    /// NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic: Option<String>,
    /// Per-replica batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u64>,
    /// GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
    /// Placement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementKind>,
    /// Mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Built-in model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Topology kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<TopologyKind>,
    /// All-reduce fusion buffer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fusion_buffer: Option<Bytes>,
    /// All-reduce algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<AllReduceAlgorithm>,
}

impl SweepPoint {
    /// Sets every value `other` sets.
    fn overlay(&mut self, other: &SweepPoint) {
        fn set<T: Clone>(dst: &mut Option<T>, src: &Option<T>) {
            if src.is_some() {
                dst.clone_from(src);
            }
        }
        set(&mut self.workers, &other.workers);
        set(&mut self.ps, &other.ps);
        set(&mut self.nic, &other.nic);
        set(&mut self.batch, &other.batch);
        set(&mut self.gpu, &other.gpu);
        set(&mut self.placement, &other.placement);
        set(&mut self.mode, &other.mode);
        set(&mut self.model, &other.model);
        set(&mut self.kind, &other.kind);
        set(&mut self.fusion_buffer, &other.fusion_buffer);
        set(&mut self.algorithm, &other.algorithm);
    }

    /// Applies this point to `spec`.
    fn apply(&self, spec: &mut ScenarioFile) {
        if let Some(x) = self.workers {
            spec.topology.workers = x;
        }
        if let Some(x) = self.ps {
            spec.topology.ps = x;
        }
        if let Some(x) = &self.nic {
            spec.network.nic = x.clone();
        }
        if let Some(x) = self.batch {
            spec.batch = x;
        }
        if let Some(x) = &self.gpu {
            spec.hardware.gpu = x.clone();
        }
        if let Some(x) = self.placement {
            spec.topology.placement = x;
        }
        if let Some(x) = self.mode {
            spec.topology.mode = x;
        }
        if let Some(x) = &self.model {
            spec.model = ModelSpec { name: Some(x.clone()), layers: None };
        }
        if let Some(x) = self.kind {
            spec.topology.kind = x;
            if x == TopologyKind::AllReduce {
                // The base's parameter-server fields describe its PS configurations; a point
                // of kind all-reduce keeps only what it sets itself (and is refused for it).
                let d = TopologySpec::default();
                let t = &mut spec.topology;
                t.ps = self.ps.unwrap_or(d.ps);
                t.placement = self.placement.unwrap_or(d.placement);
                (t.ps_hosts, t.partition_threshold) = (d.ps_hosts, d.partition_threshold);
            }
        }
        if let Some(x) = self.fusion_buffer {
            spec.topology.fusion_buffer = x;
        }
        if let Some(x) = self.algorithm {
            spec.topology.algorithm = x;
        }
    }

    /// The axis values this point sets, as (axis, value) text.
    pub fn values(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        if let Some(x) = self.workers {
            v.push(("workers", x.to_string()));
        }
        if let Some(x) = self.ps {
            v.push(("ps", x.to_string()));
        }
        if let Some(x) = &self.nic {
            v.push(("nic", x.clone()));
        }
        if let Some(x) = self.batch {
            v.push(("batch", x.to_string()));
        }
        if let Some(x) = &self.gpu {
            v.push(("gpu", x.clone()));
        }
        if let Some(x) = self.placement {
            v.push(("placement", x.as_str().to_string()));
        }
        if let Some(x) = self.mode {
            v.push(("mode", x.as_str().to_string()));
        }
        if let Some(x) = &self.model {
            v.push(("model", x.clone()));
        }
        if let Some(x) = self.kind {
            v.push(("kind", x.as_str().to_string()));
        }
        if let Some(x) = self.fusion_buffer {
            v.push(("fusion_buffer", x.to_string()));
        }
        if let Some(x) = self.algorithm {
            v.push(("algorithm", x.as_str().to_string()));
        }
        v
    }
}

impl SweepSpec {
    /// Every configuration of the sweep: the cartesian product of the axes times the explicit
    /// points (the points vary fastest, then workers, ps, placement, mode, batch, nic, gpu,
    /// model, kind, fusion_buffer, algorithm).
    pub fn expand(&self) -> Vec<SweepPoint> {
        let mut out = vec![SweepPoint::default()];
        macro_rules! axis {
            ($field:ident, $conv:expr) => {
                if !self.$field.is_empty() {
                    out = out
                        .into_iter()
                        .flat_map(|p| {
                            self.$field.iter().map(move |x| {
                                let mut q = p.clone();
                                q.$field = Some($conv(x));
                                q
                            })
                        })
                        .collect();
                }
            };
        }
        axis!(algorithm, |x: &AllReduceAlgorithm| *x);
        axis!(fusion_buffer, |x: &Bytes| *x);
        axis!(kind, |x: &TopologyKind| *x);
        axis!(model, |x: &String| x.clone());
        axis!(gpu, |x: &String| x.clone());
        axis!(nic, |x: &String| x.clone());
        axis!(batch, |x: &u64| *x);
        axis!(mode, |x: &Mode| *x);
        axis!(placement, |x: &PlacementKind| *x);
        axis!(ps, |x: &u32| *x);
        axis!(workers, |x: &u32| *x);
        if !self.points.is_empty() {
            out = out
                .into_iter()
                .flat_map(|p| {
                    self.points.iter().map(move |pt| {
                        let mut q = p.clone();
                        q.overlay(pt);
                        q
                    })
                })
                .collect();
        }
        out
    }

    /// The scenario file of one point: `base` with the point applied, no sweep, and a name
    /// that says which point it is.
    pub fn point_file(base: &ScenarioFile, point: &SweepPoint) -> ScenarioFile {
        let mut f = base.clone();
        f.sweep = SweepSpec::default();
        point.apply(&mut f);
        let label: Vec<String> = point.values().iter().map(|(k, v)| format!("{k}={v}")).collect();
        if !label.is_empty() {
            f.name = format!("{}[{}]", base.name, label.join(","));
        }
        f
    }
    /// True when no axis is set.
    pub fn is_empty(&self) -> bool {
        self.points() == 0
    }

    /// Number of points in the sweep (0 if no axis or point is set).
    pub fn points(&self) -> usize {
        let axes = self.axis_points();
        match (axes, self.points.len()) {
            (0, n) => n,
            (a, 0) => a,
            (a, n) => a * n,
        }
    }

    /// Number of points in the cartesian product of the axes alone.
    fn axis_points(&self) -> usize {
        let lens = [
            self.workers.len(),
            self.ps.len(),
            self.nic.len(),
            self.batch.len(),
            self.gpu.len(),
            self.placement.len(),
            self.mode.len(),
            self.model.len(),
            self.kind.len(),
            self.fusion_buffer.len(),
            self.algorithm.len(),
        ];
        if lens.iter().all(|&l| l == 0) { 0 } else { lens.iter().filter(|&&l| l > 0).product() }
    }
}

/// Compute backend of real replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// ndarray on the CPU.
    #[default]
    Cpu,
    /// cuBLAS through cudarc.
    Cuda,
}

/// Scale-down factors of a real replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scale {
    /// Multiplier on parameter counts (and so bytes on the wire).
    #[serde(default = "unit_scale")]
    pub params: f64,
    /// Multiplier on FLOPs.
    #[serde(default = "unit_scale")]
    pub flops: f64,
}

fn unit_scale() -> f64 {
    1.0
}

impl Default for Scale {
    fn default() -> Self {
        Scale { params: 1.0, flops: 1.0 }
    }
}

/// Overrides for real replays.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSpec {
    /// Scale-down of the model.
    #[serde(default)]
    pub scale: Scale,
    /// Instead of `scale.flops`: choose the FLOP scale that gives this compute time per step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_step_time: Option<Time>,
    /// Compute backend.
    #[serde(default)]
    pub backend: Backend,
    /// CUDA device ordinal the workers of every host use (the cuda backend); several workers on
    /// one machine share it.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub device: u32,
    /// Checkpoint every this many steps (0 = never).
    #[serde(default)]
    pub checkpoint_every: u64,
}

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The scenario is malformed or meaningless; every problem found is listed.
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

fn render(ds: &[Diagnostic]) -> String {
    let mut s = String::new();
    for d in ds {
        s.push_str(&d.to_string());
        s.push('\n');
    }
    s.push_str(&format!("{} error{} in scenario", ds.len(), if ds.len() == 1 { "" } else { "s" }));
    s
}

impl ScenarioError {
    /// The diagnostics, if the scenario was read but is invalid.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ScenarioError::Invalid(d) => d,
            ScenarioError::Io { .. } => &[],
        }
    }
}

/// A validated scenario with its catalogue names resolved (stage 2).
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The scenario as written, with defaults.
    pub spec: ScenarioFile,
    /// Where it came from (a path, or `<built-in NAME>`).
    pub origin: String,
    /// The folder relative file references (layer tables, profiles) are resolved against.
    pub base_dir: Option<PathBuf>,
    /// The model, built.
    pub model: Model,
    /// The GPU with overrides applied.
    pub gpu: Gpu,
    /// Effective fraction of peak.
    pub efficiency: f64,
    /// NIC line rate.
    pub nic: BitRate,
    /// Host bus between GPUs of one host.
    pub host_bus: HostBus,
    /// Hash of the normalized scenario (hex, 16 digits).
    pub hash: String,
    /// The calibrated profile, if the scenario names one.
    pub profile: Option<crate::profile::Profile>,
}

impl Scenario {
    /// The topology, each kind with its own fields.
    pub fn topology(&self) -> Topology {
        Topology::of(&self.spec.topology)
    }

    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ScenarioError::Io { path: path.display().to_string(), source })?;
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Scenario::parse(&text, &path.display().to_string(), &stem, path.parent())
    }

    /// Parses and validates scenario `text`. `origin` names it in errors, `default_name` is
    /// used when the scenario has no `name`, and `base_dir` resolves relative file references.
    pub fn parse(
        text: &str,
        origin: &str,
        default_name: &str,
        base_dir: Option<&Path>,
    ) -> Result<Scenario, ScenarioError> {
        let map = SourceMap::new(origin, text);
        let index = SpanIndex::new(text);
        let mut spec: ScenarioFile =
            toml::from_str(text).map_err(|e| ScenarioError::Invalid(vec![parse_diagnostic(&e, &map, &index)]))?;
        if spec.name.is_empty() {
            spec.name = default_name.to_string();
        }
        Scenario::from_file(spec, origin, base_dir)
            .map_err(|problems| ScenarioError::Invalid(problems.into_iter().map(|p| p.locate(&map, &index)).collect()))
    }

    /// Validates an already-parsed scenario (e.g. a sweep point); problems carry field paths.
    pub fn from_file(spec: ScenarioFile, origin: &str, base_dir: Option<&Path>) -> Result<Scenario, Vec<Problem>> {
        let mut v = Problems::default();
        validate(&spec, &mut v);

        let model = match (&spec.model.name, &spec.model.layers) {
            (Some(_), Some(_)) => {
                v.push("model.layers", "give either `model.name` or `model.layers`, not both", None);
                None
            }
            (None, None) => {
                v.push(
                    "model",
                    "no model: set `name` to a built-in model or `layers` to a layer-table CSV",
                    Some(format!("built-in models: {}", models::BUILTIN.join(", "))),
                );
                None
            }
            (Some(name), None) => match models::builtin(name) {
                Ok(m) => Some(m),
                Err(_) => {
                    let hint = did_you_mean(name, models::BUILTIN.iter().copied())
                        .map(|s| format!("did you mean `{s}`? "))
                        .unwrap_or_default();
                    v.push(
                        "model.name",
                        &format!("unknown model `{name}`"),
                        Some(format!("{hint}built-in models: {}", models::BUILTIN.join(", "))),
                    );
                    None
                }
            },
            (None, Some(file)) => {
                let path = base_dir.map_or_else(|| file.clone(), |d| d.join(file));
                match models::read_layer_table(&path) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        v.push("model.layers", &e.to_string(), None);
                        None
                    }
                }
            }
        };

        let gpu = resolve_gpu(&spec.hardware, &mut v);
        let nic = resolve_nic(&spec.network.nic, "network.nic", &mut v);
        let host_bus = resolve_host_bus(&spec.hardware.host_bus, &mut v);
        let sw = &spec.sweep;
        let any_all_reduce = spec.topology.kind == TopologyKind::AllReduce
            || sw.kind.contains(&TopologyKind::AllReduce)
            || sw.points.iter().any(|p| p.kind == Some(TopologyKind::AllReduce));
        if !sw.fusion_buffer.is_empty() && !any_all_reduce {
            v.push(
                "sweep.fusion_buffer",
                "`sweep.fusion_buffer` has no effect without an all-reduce configuration (it sizes all-reduce fusion buckets)",
                Some("add `kind = [\"parameter-server\", \"all-reduce\"]` to [sweep], or remove the axis".into()),
            );
        }
        if (!sw.algorithm.is_empty() || sw.points.iter().any(|p| p.algorithm.is_some())) && !any_all_reduce {
            v.push(
                "sweep.algorithm",
                "`sweep.algorithm` has no effect without an all-reduce configuration (it picks the collective)",
                Some("add `kind = [\"parameter-server\", \"all-reduce\"]` to [sweep], or remove the axis".into()),
            );
        }
        for (i, g) in spec.sweep.gpu.iter().enumerate() {
            if hardware::gpu_by_name(g).is_none() && !g.eq_ignore_ascii_case(&spec.hardware.gpu) {
                let names: Vec<String> = hardware::gpus().into_iter().map(|g| g.name).collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                v.unknown(&format!("sweep.gpu[{i}]"), "GPU", g, &names);
            }
        }
        for (i, n) in spec.sweep.nic.iter().enumerate() {
            resolve_nic(n, &format!("sweep.nic[{i}]"), &mut v);
        }

        let profile = match &spec.hardware.profile {
            Some(p) => {
                let path = base_dir.map_or_else(|| p.clone(), |d| d.join(p));
                match crate::profile::Profile::load(&path) {
                    Ok(pr) => Some(pr),
                    Err(e) => {
                        v.push(
                            "hardware.profile",
                            &e,
                            Some("make one with `topolab calibrate --out profile.toml`".into()),
                        );
                        None
                    }
                }
            }
            None => None,
        };
        if let Some(pr) = &profile
            && pr.fitted.compute_jitter > 0.0
            && spec.faults.jitter > 0.0
        {
            v.push(
                "faults.jitter",
                &format!(
                    "`faults.jitter` has no effect with hardware.profile, whose fitted compute_jitter ({}) is the runs' compute noise",
                    pr.fitted.compute_jitter
                ),
                Some("remove faults.jitter, or compute_jitter from the profile".into()),
            );
        }
        if let Some(c) = spec.hardware.shared_gpus {
            v.check(c >= 1, "hardware.shared_gpus", || "shared_gpus must be >= 1".into());
        }
        if let Some(c) = spec.hardware.shared_cores {
            v.check(c >= 1, "hardware.shared_cores", || "shared_cores must be >= 1".into());
        }
        no_effect(&spec, gpu.as_ref(), &mut v);
        if let (Some(m), Some(bw), Some(CheckpointInterval::Every(t))) =
            (&model, spec.faults.checkpoint_bandwidth, spec.faults.checkpoint_interval)
            && bw.0 > 0.0
        {
            let write = checkpoint_bytes(m, spec.optimizer.kind).0 as f64 / bw.bytes_per_sec();
            v.check(t.secs_f64() > write, "faults.checkpoint_interval", || {
                format!(
                    "a checkpoint every {t} is shorter than writing one ({:.1} s for {:.2} at {}): training would never progress",
                    write,
                    checkpoint_bytes(m, spec.optimizer.kind),
                    crate::units::ByteRate(bw)
                )
            });
        }
        if let (Some(t), Some(m)) = (&spec.training.target, &model)
            && t.metric == "top1"
            && t.value > 0.0
            && t.value < 1.0
        {
            // Time to accuracy needs the model's convergence profile.
            match crate::convergence::profile_for(&m.name, &t.metric) {
                Err(e) => v.push(
                    "training.target",
                    &e.to_string(),
                    Some("remove [training.target], or pick a model with a profile".into()),
                ),
                Ok(p) => {
                    if let Err(e) = p.e_min(t.value) {
                        v.push("training.target.value", &e.to_string(), None);
                    }
                }
            }
        }
        if let (Some(m), Some(g)) = (&model, &gpu) {
            let need = gpu_memory_needed(m, spec.batch);
            v.check(need <= g.memory, "batch", || {
                format!(
                    "{} at batch {} needs {:.2} per GPU (weights {:.2} + gradients + activations {:.2}) but the {} has {}; \
                     lower `batch` or pick a GPU with more memory",
                    m.name,
                    spec.batch,
                    need,
                    m.bytes(),
                    Bytes(m.activation_bytes().0 * spec.batch),
                    g.name,
                    g.memory
                )
            });
        }
        match (v.0.is_empty(), model, gpu, nic, host_bus) {
            (true, Some(model), Some(gpu), Some(nic), Some(host_bus)) => {
                let efficiency = spec.hardware.efficiency.unwrap_or(match spec.hardware.precision {
                    Precision::Fp32 => gpu.efficiency,
                    // Checked above: an explicit efficiency or a profile (none is catalogued).
                    Precision::Tf32 => gpu.efficiency,
                    // Checked above: present, or an explicit efficiency or a profile.
                    Precision::Fp16 => gpu.fp16_efficiency.unwrap_or(gpu.efficiency),
                });
                let hash = scenario_hash(&spec);
                Ok(Scenario {
                    spec,
                    origin: origin.to_string(),
                    base_dir: base_dir.map(Path::to_path_buf),
                    model,
                    gpu,
                    efficiency,
                    nic,
                    host_bus,
                    hash,
                    profile,
                })
            }
            _ => Err(v.0),
        }
    }

    /// The scenario with `change` applied to its file, validated again (so that its hash is the
    /// hash of what runs): command-line overrides go through here, never into `spec` directly.
    pub fn with(&self, change: impl FnOnce(&mut ScenarioFile)) -> Result<Scenario, Vec<Problem>> {
        let mut f = self.spec.clone();
        change(&mut f);
        Scenario::from_file(f, &self.origin, self.base_dir.as_deref())
    }

    /// Every configuration of the scenario's sweep, each validated (one, the scenario itself,
    /// when it has no sweep). Problems name the sweep point they belong to.
    pub fn configurations(&self) -> Result<Vec<(SweepPoint, Scenario)>, Vec<String>> {
        let points = if self.spec.sweep.points() == 0 { vec![SweepPoint::default()] } else { self.spec.sweep.expand() };
        let mut out = Vec::new();
        let mut problems = Vec::new();
        for p in points {
            let file = SweepSpec::point_file(&self.spec, &p);
            match Scenario::from_file(file.clone(), &self.origin, self.base_dir.as_deref()) {
                Ok(s) => out.push((p, s)),
                Err(ps) => problems.extend(ps.into_iter().map(|pr| format!("sweep point {}: {pr}", file.name))),
            }
        }
        if problems.is_empty() { Ok(out) } else { Err(problems) }
    }

    /// The normalized scenario as TOML (defaults filled in).
    pub fn normalized(&self) -> String {
        normalized_toml(&self.spec)
    }

    /// Peak rate at the scenario's precision.
    pub fn peak(&self) -> FlopRate {
        match self.spec.hardware.precision {
            Precision::Fp32 => self.gpu.fp32,
            Precision::Tf32 => self.gpu.tf32.unwrap_or(self.gpu.fp32),
            Precision::Fp16 => self.gpu.fp16.unwrap_or(self.gpu.fp32),
        }
    }

    /// Whether the step's 3x3 stride-1 convolutions run by Winograd's minimal filtering
    /// ([`crate::models::WINOGRAD_3X3_REDUCTION`] times fewer multiplies): on a catalogued or custom
    /// GPU in FP32, as cuDNN runs them on CUDA cores. Not with a profile, whose rate was
    /// measured against the direct multiply-adds (the CPU runtime's GEMMs, a fitted run), nor
    /// on tensor cores (TF32, FP16), which run convolutions as implicit GEMMs.
    pub fn winograd(&self) -> bool {
        self.profile.is_none() && self.spec.hardware.precision == Precision::Fp32
    }

    /// A sample's forward FLOPs as the GPU executes them and as the model counts them, when
    /// [`Scenario::winograd`] makes the first fewer; `None` otherwise.
    pub fn winograd_flops(&self) -> Option<(f64, f64)> {
        let (executed, nominal) = (self.model.executed_forward_flops(self.winograd()), self.model.forward_flops());
        (executed < nominal).then_some((executed, nominal))
    }

    /// Rate a training step reaches: the profile's measured rate, else peak x efficiency.
    pub fn effective_rate(&self) -> FlopRate {
        match &self.profile {
            Some(p) => p.fitted.compute_rate,
            None => FlopRate(self.peak().0 * self.efficiency),
        }
    }

    /// Link goodput factor: the profile's (at this NIC rate where it measured links), else the
    /// scenario's.
    pub fn goodput(&self) -> f64 {
        self.profile
            .as_ref()
            .map_or(self.spec.network.goodput, |p| p.fitted.goodput_at(self.nic).unwrap_or(p.fitted.goodput))
    }

    /// Per-message overhead: the profile's, else the scenario's.
    pub fn message_overhead(&self) -> Time {
        self.profile.as_ref().map_or(self.spec.network.message_overhead, |p| p.fitted.message_overhead)
    }

    /// What the machine's shared cores give together, in cores: `hardware.shared_cores` times
    /// the profile's parallel efficiency (each core's share of one core's rate when all
    /// compute; 1 without one). `None` without shared cores.
    pub fn shared_core_capacity(&self) -> Option<f64> {
        let efficiency = self.profile.as_ref().and_then(|p| p.fitted.parallel_efficiency).unwrap_or(1.0);
        self.shared_cores().map(|cores| f64::from(cores) * efficiency)
    }

    /// User-space ns per payload byte of a message (both ends): the profile's, else 0.
    pub fn copy_ns_per_byte(&self) -> f64 {
        self.profile.as_ref().map_or(0.0, |p| p.fitted.copy_ns_per_byte)
    }

    /// Of [`Scenario::copy_ns_per_byte`], what a sender does before a message leaves and a
    /// receiver once it has arrived whole, ns per payload byte: the profile's measured split,
    /// else half and half (a profile from before the split was measured).
    pub fn serial_copy_ns_per_byte(&self) -> (f64, f64) {
        let Some(p) = &self.profile else { return (0.0, 0.0) };
        let f = &p.fitted;
        let half = f.copy_ns_per_byte / 2.0;
        (f.encode_ns_per_byte.unwrap_or(half), f.decode_ns_per_byte.unwrap_or(half))
    }

    /// TCP unfairness spread at this scenario's NIC rate: the profile's, else the scenario's.
    pub fn unfairness(&self) -> f64 {
        self.profile.as_ref().and_then(|p| p.fitted.unfairness_at(self.nic)).unwrap_or(self.spec.network.unfairness)
    }

    /// First-come-first-served time constant at this scenario's NIC rate: the profile's, else the
    /// scenario's (0: fair sharing).
    pub fn fifo(&self) -> Time {
        self.profile.as_ref().and_then(|p| p.fitted.fifo_at(self.nic)).unwrap_or(self.spec.network.fifo)
    }

    /// Window ramp-up (time, starting share) at this scenario's NIC rate: the profile's, else the
    /// scenario's.
    pub fn ramp(&self) -> (Time, f64) {
        self.profile
            .as_ref()
            .and_then(|p| p.fitted.ramp_at(self.nic))
            .unwrap_or((self.spec.network.ramp, self.spec.network.ramp_share))
    }

    /// CPU per payload byte at this scenario's NIC rate: the profile's (interpolated between
    /// its measured link rates), else the scenario's.
    pub fn network_cpu_ns_per_byte(&self) -> f64 {
        self.profile
            .as_ref()
            .and_then(|p| p.fitted.cpu_ns_per_byte_at(self.nic))
            .unwrap_or(self.spec.network.cpu_ns_per_byte)
    }

    /// Coefficient of variation of a step's compute: `faults.jitter`, else the profile's fitted
    /// one (never both: refused), else 0.
    pub fn jitter(&self) -> f64 {
        if self.spec.faults.jitter > 0.0 {
            return self.spec.faults.jitter;
        }
        self.profile.as_ref().map_or(0.0, |p| p.fitted.compute_jitter)
    }

    /// PS memory bandwidth: the profile's, else the scenario's.
    pub fn ps_memory_bandwidth(&self) -> BitRate {
        self.profile.as_ref().map_or(self.spec.hardware.ps_memory_bandwidth, |p| p.fitted.ps_memory_bandwidth)
    }

    /// Cores shared by every process of the job, if they share one machine.
    pub fn shared_cores(&self) -> Option<u32> {
        self.spec.hardware.shared_cores
    }

    /// GPUs of one machine the workers' compute time-shares, if they share any.
    pub fn shared_gpus(&self) -> Option<u32> {
        self.spec.hardware.shared_gpus
    }

    /// Hosts that run only a parameter server (none with all-reduce or co-located shards).
    pub fn ps_hosts(&self) -> u32 {
        match self.topology() {
            Topology::ParameterServer(t) if t.ps_hosts == PsHosts::Dedicated => t.ps,
            _ => 0,
        }
    }

    /// A one-line description for tables.
    pub fn label(&self) -> String {
        let (model, batch, gpu) = (&self.model.name, self.spec.batch, &self.gpu.name);
        match self.topology() {
            Topology::AllReduce(t) => {
                format!("{model} x{batch} {gpu} / {}w {} all-reduce", t.workers, t.algorithm.as_str())
            }
            Topology::ParameterServer(t) => {
                format!("{model} x{batch} {gpu} / {}w {}ps {}", t.workers, t.ps, t.mode.as_str())
            }
        }
    }
}

/// Bytes a checkpoint writes: the parameters and the optimizer's slots (the shards' state).
pub fn checkpoint_bytes(model: &Model, optimizer: OptimizerKind) -> Bytes {
    Bytes(model.bytes().0 * (1 + optimizer.slots()))
}

/// GPU memory a worker replica needs: weights and gradients (FP32) plus the activations of
/// one batch kept for the backward pass. Optimizer slots live on the parameter servers.
pub fn gpu_memory_needed(model: &Model, batch: u64) -> Bytes {
    Bytes(2 * model.bytes().0 + model.activation_bytes().0 * batch)
}

/// Refuses fields that would change nothing: not implemented yet, or without effect in this
/// scenario's setting. A field either takes effect or is refused with the reason; a test walks
/// the schema and proves it for every field.
fn no_effect(s: &ScenarioFile, gpu: Option<&Gpu>, v: &mut Problems) {
    let not_yet = |v: &mut Problems, path: &str, what: &str, issue: &str| {
        v.push(
            path,
            &format!("{what} is not implemented yet ({issue}); it would change nothing, so it is refused"),
            Some("remove the field".into()),
        )
    };
    let no_effect_with = |v: &mut Problems, path: &str, why: &str| {
        v.push(
            path,
            &format!("`{path}` has no effect {why}"),
            Some("remove the field, or change what it depends on".into()),
        )
    };
    let t = &s.topology;
    let td = TopologySpec::default();
    if t.kind == TopologyKind::AllReduce {
        match t.algorithm {
            AllReduceAlgorithm::Hierarchical if s.hardware.gpus_per_host == 1 => v.push(
                "topology.algorithm",
                "a hierarchical all-reduce reduces inside multi-GPU hosts first, but hardware.gpus_per_host = 1",
                Some("use algorithm = \"ring\", or hosts with several GPUs (hardware.gpus_per_host)".into()),
            ),
            _ => {}
        }
        // Parameter-server fields have no meaning without parameter servers.
        let why = "with kind = \"all-reduce\" (there are no parameter servers: the workers sum their gradients among themselves)";
        for (path, set) in [
            ("topology.ps", t.ps != td.ps),
            ("topology.placement", t.placement != td.placement),
            ("topology.partition_threshold", t.partition_threshold != td.partition_threshold),
            ("topology.ps_hosts", t.ps_hosts != td.ps_hosts),
            ("topology.backup_workers", t.backup_workers != td.backup_workers),
            (
                "hardware.ps_memory_bandwidth",
                s.hardware.ps_memory_bandwidth != HardwareSpec::default().ps_memory_bandwidth,
            ),
            ("hardware.local_aggregation", s.hardware.local_aggregation != HardwareSpec::default().local_aggregation),
        ] {
            if set {
                no_effect_with(v, path, why);
            }
        }
        if t.mode != Mode::Sync {
            v.push(
                "topology.mode",
                &format!(
                    "mode = \"{}\" needs parameter servers; an all-reduce is synchronous: every worker waits for the sum",
                    t.mode.as_str()
                ),
                Some("remove `mode` (or set kind = \"parameter-server\")".into()),
            );
        }
        if s.hardware.shared_gpus.is_some() {
            not_yet(
                v,
                "hardware.shared_gpus",
                "sharing one machine's GPUs in an all-reduce",
                "it is modelled for parameter servers only (shared cores are modelled for both)",
            );
        }
        if t.workers == 1 {
            v.push(
                "topology.workers",
                "an all-reduce among one worker exchanges nothing",
                Some("use workers >= 2, or kind = \"parameter-server\" to simulate one worker".into()),
            );
        }
    } else {
        if t.algorithm != td.algorithm {
            no_effect_with(
                v,
                "topology.algorithm",
                "with kind = \"parameter-server\" (it picks an all-reduce algorithm)",
            );
        }
        if t.fusion_buffer != td.fusion_buffer {
            no_effect_with(
                v,
                "topology.fusion_buffer",
                "with kind = \"parameter-server\" (it sizes all-reduce fusion buckets)",
            );
        }
        if t.fusion_cycle != td.fusion_cycle {
            no_effect_with(
                v,
                "topology.fusion_cycle",
                "with kind = \"parameter-server\" (it paces all-reduce fusion buckets)",
            );
        }
    }
    if t.mode != Mode::StaleSynchronous && t.staleness != td.staleness {
        no_effect_with(
            v,
            "topology.staleness",
            &format!("with mode = \"{}\" (only stale-synchronous bounds staleness)", t.mode.as_str()),
        );
    }
    if t.placement != PlacementKind::Partitioned && t.partition_threshold != td.partition_threshold {
        no_effect_with(
            v,
            "topology.partition_threshold",
            &format!("with placement = \"{}\" (only partitioned splits variables)", t.placement.as_str()),
        );
    }
    let f = &s.faults;
    // `gpu_mtbf` stands in for `mtbf` everywhere below, under its own name.
    let rate_field = if f.mtbf.is_none() && f.gpu_mtbf.is_some() { "faults.gpu_mtbf" } else { "faults.mtbf" };
    if f.mtbf.is_some() && f.gpu_mtbf.is_some() {
        v.push(
            "faults.gpu_mtbf",
            "give failures either per host (`mtbf`) or per GPU (`gpu_mtbf`), not both",
            Some("remove one of them".into()),
        );
    }
    let failures = f.mtbf.is_some() || f.gpu_mtbf.is_some();
    if failures && s.training.target.is_none() {
        no_effect_with(v, rate_field, "without [training.target] (failures lengthen the time to the target)");
    }
    if !failures {
        for (path, set) in [
            ("faults.checkpoint_interval", f.checkpoint_interval.is_some()),
            ("faults.checkpoint_bandwidth", f.checkpoint_bandwidth.is_some()),
            ("faults.restart", f.restart.is_some()),
        ] {
            if set {
                no_effect_with(
                    v,
                    path,
                    "without faults.mtbf or faults.gpu_mtbf (checkpoints and restarts are paid for failures)",
                );
            }
        }
    } else if f.checkpoint_bandwidth.is_none() {
        v.push(
            rate_field,
            "failures need `faults.checkpoint_bandwidth`: what a checkpoint and a restart cost depends on the storage",
            Some("add e.g. `checkpoint_bandwidth = \"1 GB/s\"` (shared by all shards) under [faults]".into()),
        );
    }
    let r = &s.runtime;
    if r.backend == Backend::Cuda && r.target_step_time.is_some() {
        v.push(
            "runtime.target_step_time",
            "the FLOP scale it chooses comes from this machine's CPU GEMM rate, not the GPU's",
            Some("with backend = \"cuda\", set runtime.scale.flops instead".into()),
        );
    }
    if r.backend == Backend::Cpu && r.device != 0 {
        no_effect_with(v, "runtime.device", "with backend = \"cpu\" (it picks the CUDA device)");
    }
    if r.target_step_time.is_some() && r.scale.flops != 1.0 {
        no_effect_with(v, "runtime.scale.flops", "with runtime.target_step_time (which chooses the FLOP scale)");
    }
    let h = &s.hardware;
    let hd = HardwareSpec::default();
    if h.gpus_per_host == 1 {
        if h.host_bus != hd.host_bus {
            no_effect_with(v, "hardware.host_bus", "with gpus_per_host = 1 (it joins the GPUs of one host)");
        }
        if h.local_aggregation != hd.local_aggregation {
            no_effect_with(
                v,
                "hardware.local_aggregation",
                "with gpus_per_host = 1 (it aggregates the GPUs of one host)",
            );
        }
    }
    let all_reduce = s.topology.kind == TopologyKind::AllReduce;
    if let Some(o) = &h.gpu_spec
        && o.memory_bandwidth.is_some()
        && !all_reduce
    {
        v.push(
            "hardware.gpu_spec.memory_bandwidth",
            "a GPU's memory bandwidth times only the optimizer update of an all-reduce (the workers apply it); \
             with parameter servers compute time comes from FLOPs x peak x efficiency",
            Some("remove the field (the catalogue lists it for reference only)".into()),
        );
    }
    if all_reduce && gpu.is_some_and(|g| g.memory_bandwidth.0 <= 0.0) {
        v.push(
            "hardware.gpu_spec",
            "an all-reduce needs the GPU's memory bandwidth: every worker applies the summed gradients on its GPU",
            Some("add `memory_bandwidth = \"...\"` to [hardware.gpu_spec], with its source".into()),
        );
    }
    if h.precision == Precision::Fp16
        && h.efficiency.is_none()
        && h.profile.is_none()
        && gpu.is_some_and(|g| g.fp16.is_some() && g.fp16_efficiency.is_none())
    {
        v.push(
            "hardware.precision",
            &format!(
                "no published mixed-precision training efficiency is catalogued for the {}, and the FP32 one does not carry over to its FP16 peak",
                h.gpu
            ),
            Some("set `hardware.efficiency` (a fraction of the FP16 peak, with your source) or use precision = \"fp32\"".into()),
        );
    }
    if h.precision == Precision::Tf32 {
        if gpu.is_some_and(|g| g.tf32.is_none()) {
            v.push(
                "hardware.precision",
                &format!("the {} has no TF32 tensor cores (Ampere and later have them)", h.gpu),
                Some("pick an A100, H100 or H200, or use precision = \"fp32\"".into()),
            );
        } else if h.efficiency.is_none() && h.profile.is_none() {
            v.push(
                "hardware.precision",
                "no published TF32 training efficiency is catalogued, and the FP32 one does not carry over to the TF32 peak",
                Some("set `hardware.efficiency` (a fraction of the TF32 peak, with your source), or a profile from `topolab calibrate --backend cuda`".into()),
            );
        }
    }
    if h.precision == Precision::Fp16 && gpu.is_some_and(|g| g.fp16.is_none()) {
        v.push(
            "hardware.precision",
            &format!("the {} has no FP16 rate, so precision = \"fp16\" would run at its FP32 rate", h.gpu),
            Some("give `hardware.gpu_spec.fp16`, pick a GPU with tensor cores, or remove the field".into()),
        );
    }
    let n = &s.network;
    let nd = NetworkSpec::default();
    if n.switch == SwitchKind::Single {
        if n.hosts_per_rack != nd.hosts_per_rack {
            no_effect_with(v, "network.hosts_per_rack", "with switch = \"single\" (racks exist with two-tier)");
        }
        if n.oversubscription != nd.oversubscription {
            no_effect_with(v, "network.oversubscription", "with switch = \"single\" (racks exist with two-tier)");
        }
    }
    if n.ramp != Time::ZERO && n.ramp_share == nd.ramp_share {
        no_effect_with(v, "network.ramp", "with ramp_share = 1 (a ramp from a full share is no ramp)");
    }
    if h.shared_cores.is_none() && n.cpu_ns_per_byte != nd.cpu_ns_per_byte {
        no_effect_with(
            v,
            "network.cpu_ns_per_byte",
            "without hardware.shared_cores (it loads the cores the job shares)",
        );
    }
    if n.ramp == Time::ZERO && n.ramp_share != nd.ramp_share {
        no_effect_with(v, "network.ramp_share", "with ramp = 0 (it is where a ramp starts)");
    }
    if n.fifo == Time::ZERO && n.queue != nd.queue && h.profile.is_none() {
        no_effect_with(
            v,
            "network.queue",
            "without network.fifo or a hardware.profile that fits one (it bounds queue order)",
        );
    }
    if h.profile.is_some() {
        // What a calibrated profile measured replaces the scenario's figure.
        let overridden: [(&str, bool); 9] = [
            ("hardware.efficiency", h.efficiency.is_some()),
            ("hardware.precision", h.precision != hd.precision),
            ("hardware.ps_memory_bandwidth", h.ps_memory_bandwidth != hd.ps_memory_bandwidth),
            ("network.goodput", n.goodput != nd.goodput),
            ("network.message_overhead", n.message_overhead != nd.message_overhead),
            ("network.unfairness", n.unfairness != nd.unfairness),
            ("network.ramp", n.ramp != nd.ramp),
            ("network.fifo", n.fifo != nd.fifo),
            ("network.cpu_ns_per_byte", n.cpu_ns_per_byte != nd.cpu_ns_per_byte),
        ];
        for (path, set) in overridden {
            if set {
                no_effect_with(v, path, "with hardware.profile (the profile's measured value is used)");
            }
        }
    }
    let tr = &s.training;
    let asynchronous = matches!(t.mode, Mode::Async | Mode::StaleSynchronous);
    if tr.staleness_penalty != TrainingSpec::default().staleness_penalty && (!asynchronous || tr.target.is_none()) {
        no_effect_with(
            v,
            "training.staleness_penalty",
            "unless mode is async or stale-synchronous and [training.target] is set",
        );
    }
    if t.ps_hosts == PsHosts::Colocated && s.cost.ps_hour != CostSpec::default().ps_hour {
        no_effect_with(v, "cost.ps_hour", "with ps_hosts = \"colocated\" (no host runs a PS alone)");
    }
    if tr.target.is_none() {
        let c = &s.cost;
        let cd = CostSpec::default();
        for (path, set) in [
            ("cost.gpu_hour", c.gpu_hour != cd.gpu_hour),
            ("cost.ps_hour", c.ps_hour != cd.ps_hour),
            ("cost.currency", c.currency != cd.currency),
        ] {
            if set {
                no_effect_with(v, path, "without [training.target] (cost is the price of training to the target)");
            }
        }
    }
}

/// The normalized TOML text of a scenario file.
pub fn normalized_toml(spec: &ScenarioFile) -> String {
    toml::to_string(spec).expect("a ScenarioFile always serializes: all its fields are TOML-representable")
}

/// Hash of the normalized scenario: equal for files that differ only in comments, layout or
/// written-out defaults.
pub fn scenario_hash(spec: &ScenarioFile) -> String {
    let digest = Sha256::digest(normalized_toml(spec).as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A problem found in stage 2, before it is located in the source text.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Dotted field path.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
}

impl Problem {
    fn locate(self, map: &SourceMap<'_>, index: &SpanIndex) -> Diagnostic {
        map.diagnostic(index.span_of(&self.path), &self.path, self.message, self.help)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)?;
        if let Some(h) = &self.help {
            write!(f, " ({h})")?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, path: &str, message: &str, help: Option<String>) {
        self.0.push(Problem { path: path.to_string(), message: message.to_string(), help });
    }
    fn check(&mut self, ok: bool, path: &str, message: impl FnOnce() -> String) {
        if !ok {
            let m = message();
            self.push(path, &m, None);
        }
    }
    fn unknown(&mut self, path: &str, what: &str, name: &str, known: &[&str]) {
        let hint =
            did_you_mean(name, known.iter().copied()).map(|s| format!("did you mean `{s}`? ")).unwrap_or_default();
        self.push(path, &format!("unknown {what} `{name}`"), Some(format!("{hint}known: {}", known.join(", "))));
    }
}

fn resolve_gpu(h: &HardwareSpec, v: &mut Problems) -> Option<Gpu> {
    let base = hardware::gpu_by_name(&h.gpu);
    let o = h.gpu_spec.clone().unwrap_or_default();
    let mut gpu = match base {
        Some(g) => g,
        None => {
            if h.gpu_spec.is_none() {
                let names: Vec<String> = hardware::gpus().into_iter().map(|g| g.name).collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let hint = did_you_mean(&h.gpu, names.iter().copied())
                    .map(|s| format!("did you mean `{s}`? "))
                    .unwrap_or_default();
                v.push(
                    "hardware.gpu",
                    &format!("unknown GPU `{}`", h.gpu),
                    Some(format!(
                        "{hint}known: {}; or describe a custom GPU in [hardware.gpu_spec] (fp32, memory_bandwidth, memory, source)",
                        names.join(", ")
                    )),
                );
                return None;
            }
            let mut missing = Vec::new();
            for (field, present) in
                [("fp32", o.fp32.is_some()), ("memory", o.memory.is_some()), ("source", o.source.is_some())]
            {
                if !present {
                    missing.push(field);
                }
            }
            if !missing.is_empty() {
                v.push(
                    "hardware.gpu_spec",
                    &format!("custom GPU `{}` needs {}", h.gpu, missing.join(", ")),
                    Some("a GPU outside the catalogue must give all its figures and their source".into()),
                );
                return None;
            }
            Gpu {
                name: h.gpu.clone(),
                fp32: FlopRate(0.0),
                fp16: None,
                tf32: None,
                memory_bandwidth: BitRate(0.0),
                memory: Bytes(0),
                efficiency: hardware::MODERN_EFFICIENCY,
                fp16_efficiency: None,
                fp16_efficiency_source: None,
                source: String::new(),
            }
        }
    };
    if let Some(x) = o.fp32 {
        gpu.fp32 = x;
    }
    if let Some(x) = o.fp16 {
        gpu.fp16 = Some(x);
    }
    if let Some(x) = o.tf32 {
        gpu.tf32 = Some(x);
    }
    if let Some(x) = o.memory_bandwidth {
        gpu.memory_bandwidth = x;
    }
    if let Some(x) = o.memory {
        gpu.memory = x;
    }
    if let Some(x) = o.source {
        gpu.source = x;
    }
    let mut ok = true;
    for (field, value) in [("fp32", gpu.fp32.0), ("memory", gpu.memory.0 as f64)] {
        if value <= 0.0 {
            v.push(&format!("hardware.gpu_spec.{field}"), &format!("{field} must be > 0"), None);
            ok = false;
        }
    }
    ok.then_some(gpu)
}

/// A NIC written as a preset name or a rate.
pub fn resolve_nic_name(text: &str) -> Option<BitRate> {
    hardware::nic_by_name(text).map(|n| n.rate).or_else(|| text.parse::<BitRate>().ok().filter(|r| r.0 > 0.0))
}

/// A host bus by name, or a rate per direction ("20 Gbit/s": a bus the catalogue does not
/// list, such as a replay's loopback between the processes of one virtual host).
fn resolve_host_bus(text: &str, v: &mut Problems) -> Option<hardware::HostBus> {
    if let Some(b) = hardware::host_bus_by_name(text) {
        return Some(b);
    }
    if let Ok(rate) = text.parse::<BitRate>() {
        if rate.0 > 0.0 {
            return Some(hardware::HostBus { name: "custom", bandwidth: rate, source: "given in the scenario" });
        }
        v.push("hardware.host_bus", &format!("`{text}`: a host bus's rate must be > 0"), None);
        return None;
    }
    let names: Vec<&str> = hardware::host_buses().iter().map(|b| b.name).collect();
    let hint = did_you_mean(text, names.iter().copied()).map(|s| format!("did you mean `{s}`? ")).unwrap_or_default();
    v.push(
        "hardware.host_bus",
        &format!("`{text}` is neither a host bus nor a rate"),
        Some(format!("{hint}host buses: {}; or a rate per direction such as \"20 Gbit/s\"", names.join(", "))),
    );
    None
}

fn resolve_nic(text: &str, path: &str, v: &mut Problems) -> Option<BitRate> {
    if let Some(r) = resolve_nic_name(text) {
        return Some(r);
    }
    let presets: Vec<&str> = hardware::nic_presets().iter().map(|n| n.name).collect();
    let why = match text.parse::<BitRate>() {
        Ok(_) => "the rate must be > 0".to_string(),
        Err(e) => e.to_string(),
    };
    let hint = did_you_mean(text, presets.iter().copied()).map(|s| format!("did you mean `{s}`? ")).unwrap_or_default();
    v.push(
        path,
        &format!("`{text}` is neither a NIC preset nor a rate: {why}"),
        Some(format!("{hint}presets: {}; or a rate such as \"10 Gbit/s\"", presets.join(", "))),
    );
    None
}

fn validate(s: &ScenarioFile, v: &mut Problems) {
    v.check(s.batch > 0, "batch", || "batch must be > 0 (samples per GPU replica per step)".into());
    v.check(s.optimizer.learning_rate > 0.0, "optimizer.learning_rate", || "learning_rate must be > 0".into());
    let h = &s.hardware;
    if let Some(e) = h.efficiency {
        v.check(e > 0.0 && e <= 1.0, "hardware.efficiency", || {
            format!("efficiency is a fraction of peak in (0, 1], got {e}")
        });
    }
    v.check(h.gpus_per_host >= 1, "hardware.gpus_per_host", || "gpus_per_host must be >= 1".into());
    v.check(h.ps_memory_bandwidth.0 > 0.0, "hardware.ps_memory_bandwidth", || "ps_memory_bandwidth must be > 0".into());

    let n = &s.network;
    v.check(n.goodput > 0.0 && n.goodput <= 1.0, "network.goodput", || {
        format!("goodput is a fraction in (0, 1], got {}", n.goodput)
    });
    v.check(n.oversubscription >= 1.0, "network.oversubscription", || {
        format!("oversubscription is >= 1 (1 = non-blocking), got {}", n.oversubscription)
    });
    v.check(n.hosts_per_rack >= 1, "network.hosts_per_rack", || "hosts_per_rack must be >= 1".into());
    v.check(n.unfairness >= 0.0 && n.unfairness <= 3.0, "network.unfairness", || {
        format!("unfairness is a log-normal spread in [0, 3], got {}", n.unfairness)
    });
    v.check(n.ramp_share > 0.0 && n.ramp_share <= 1.0, "network.ramp_share", || {
        format!("ramp_share is a fraction of a fair share in (0, 1], got {}", n.ramp_share)
    });
    v.check(n.cpu_ns_per_byte >= 0.0 && n.cpu_ns_per_byte.is_finite(), "network.cpu_ns_per_byte", || {
        format!("cpu_ns_per_byte must be >= 0, got {}", n.cpu_ns_per_byte)
    });

    let t = &s.topology;
    v.check(t.workers >= 1, "topology.workers", || "workers must be >= 1".into());
    if t.kind == TopologyKind::ParameterServer {
        v.check(t.ps >= 1, "topology.ps", || "ps must be >= 1 for the parameter-server topology".into());
        if t.ps_hosts == PsHosts::Colocated {
            v.check(t.ps <= t.workers, "topology.ps", || {
                format!("co-located PS run on worker hosts: ps ({}) must be <= workers ({})", t.ps, t.workers)
            });
        }
    }
    match t.mode {
        Mode::Backup => {
            v.check(t.backup_workers >= 1, "topology.backup_workers", || {
                "mode = \"backup\" needs backup_workers >= 1".into()
            });
            v.check(t.backup_workers < t.workers.max(1), "topology.backup_workers", || {
                format!("backup_workers ({}) must be < workers ({})", t.backup_workers, t.workers)
            });
        }
        _ => v.check(t.backup_workers == 0, "topology.backup_workers", || {
            format!("backup_workers is only used with mode = \"backup\" (mode is \"{}\")", t.mode.as_str())
        }),
    }
    if t.mode == Mode::StaleSynchronous {
        v.check(t.staleness >= 1, "topology.staleness", || "mode = \"stale-synchronous\" needs staleness >= 1".into());
    }
    v.check(t.partition_threshold.0 > 0, "topology.partition_threshold", || "partition_threshold must be > 0".into());

    let tr = &s.training;
    v.check(tr.steps >= 1, "training.steps", || "steps must be >= 1".into());
    if let Some(target) = &tr.target {
        v.check(target.value > 0.0 && target.value < 1.0, "training.target.value", || {
            format!("target value is a fraction in (0, 1), got {} (write 78% as 0.78)", target.value)
        });
        v.check(target.metric == "top1", "training.target.metric", || {
            format!("unknown metric `{}`; supported: top1", target.metric)
        });
    }

    let f = &s.faults;
    v.check(f.jitter >= 0.0 && f.jitter.is_finite(), "faults.jitter", || "jitter must be >= 0".into());
    if let Some(st) = &f.stragglers {
        v.check(st.count <= t.workers, "faults.stragglers.count", || {
            format!("stragglers.count ({}) exceeds workers ({})", st.count, t.workers)
        });
        v.check(st.slowdown >= 1.0, "faults.stragglers.slowdown", || {
            format!("slowdown is a multiplier >= 1, got {}", st.slowdown)
        });
    }
    if let Some(m) = f.mtbf {
        v.check(m.0 > 0, "faults.mtbf", || "mtbf must be > 0".into());
    }
    if let Some(m) = f.gpu_mtbf {
        v.check(m.time().0 > 0, "faults.gpu_mtbf", || "gpu_mtbf must be > 0".into());
    }
    v.check(f.network_noise >= 0.0 && f.network_noise <= 10.0, "faults.network_noise", || {
        format!("network_noise is a coefficient of variation in [0, 10], got {}", f.network_noise)
    });
    if f.noise != Noise::Gaussian && f.jitter == 0.0 && f.noise != Noise::HeavyTailed {
        v.push(
            "faults.noise",
            "`faults.noise` has no effect with jitter = 0 (it is the distribution of the jitter)",
            None,
        );
    }
    match (&f.tail, f.noise) {
        (Some(_), n) if n != Noise::HeavyTailed => {
            v.push("faults.tail", "`faults.tail` has no effect unless noise = \"heavy-tailed\"", None)
        }
        (None, Noise::HeavyTailed) => v.push(
            "faults.noise",
            "noise = \"heavy-tailed\" needs `faults.tail = { probability = 0.01, slowdown = 5.0 }` (your measured figures)",
            None,
        ),
        (Some(tail), _) => {
            v.check(tail.probability > 0.0 && tail.probability < 1.0, "faults.tail.probability", || {
                format!("probability is a fraction in (0, 1), got {}", tail.probability)
            });
            v.check(tail.slowdown > 1.0, "faults.tail.slowdown", || {
                format!("slowdown is a multiplier > 1 (1 would change nothing), got {}", tail.slowdown)
            });
        }
        _ => {}
    }
    if let Some(e) = &f.episodes {
        v.check(e.every.0 > 0, "faults.episodes.every", || "every must be > 0".into());
        v.check(e.duration.0 > 0, "faults.episodes.duration", || "duration must be > 0".into());
        v.check(e.slowdown > 1.0, "faults.episodes.slowdown", || {
            format!("slowdown is a multiplier > 1 (1 would change nothing), got {}", e.slowdown)
        });
    }
    for (i, k) in f.kills.iter().enumerate() {
        let path = format!("faults.kills[{i}].task");
        match k.parsed() {
            None => v.push(
                &path,
                &format!("`{}` names no task", k.task),
                Some("write \"worker N\" or \"ps N\" (0-based)".into()),
            ),
            Some(("worker", n)) if n >= t.workers => v.push(
                &path,
                &format!("there is no worker {n}: the scenario has {} (worker 0 to {})", t.workers, t.workers - 1),
                None,
            ),
            Some(("ps", n)) if n >= t.ps => v.push(
                &path,
                &format!("there is no ps {n}: the scenario has {} (ps 0 to {})", t.ps, t.ps.max(1) - 1),
                None,
            ),
            Some(_) => {}
        }
    }
    if let Some(CheckpointInterval::Every(t)) = f.checkpoint_interval {
        v.check(t.0 > 0, "faults.checkpoint_interval", || "checkpoint_interval must be > 0 (or \"auto\")".into());
    }
    if let Some(b) = f.checkpoint_bandwidth {
        v.check(b.0 > 0.0, "faults.checkpoint_bandwidth", || "checkpoint_bandwidth must be > 0".into());
    }

    let c = &s.cost;
    v.check(c.gpu_hour >= 0.0, "cost.gpu_hour", || "gpu_hour must be >= 0".into());
    v.check(c.ps_hour >= 0.0, "cost.ps_hour", || "ps_hour must be >= 0".into());

    for (i, w) in s.sweep.workers.iter().enumerate() {
        v.check(*w >= 1, &format!("sweep.workers[{i}]"), || "workers must be >= 1".into());
    }
    for (i, p) in s.sweep.ps.iter().enumerate() {
        v.check(*p >= 1, &format!("sweep.ps[{i}]"), || "ps must be >= 1".into());
    }
    for (i, p) in s.sweep.points.iter().enumerate() {
        if let Some(w) = p.workers {
            v.check(w >= 1, &format!("sweep.points[{i}].workers"), || "workers must be >= 1".into());
        }
        if let Some(x) = p.ps {
            v.check(x >= 1, &format!("sweep.points[{i}].ps"), || "ps must be >= 1".into());
        }
    }
    for (i, b) in s.sweep.batch.iter().enumerate() {
        v.check(*b >= 1, &format!("sweep.batch[{i}]"), || "batch must be > 0".into());
    }

    let r = &s.runtime;
    for (field, x) in [("params", r.scale.params), ("flops", r.scale.flops)] {
        v.check(x > 0.0 && x <= 1.0, &format!("runtime.scale.{field}"), || {
            format!("scale.{field} is a scale-down factor in (0, 1], got {x}")
        });
    }
}

/// Turns a TOML/serde error into a located diagnostic, with "did you mean" for unknown names.
fn parse_diagnostic(e: &toml::de::Error, map: &SourceMap<'_>, index: &SpanIndex) -> Diagnostic {
    let span = e.span();
    let raw = e.message().trim().to_string();
    let path = match raw.strip_prefix("missing field `") {
        // A missing field is reported on its table: name the table and the field.
        Some(rest) => {
            let table = span.as_ref().map(|s| index.table_with_span(s)).unwrap_or_default();
            let field = rest.trim_end_matches('`');
            if table.is_empty() { field.to_string() } else { format!("{table}.{field}") }
        }
        None => span.as_ref().and_then(|s| index.path_at(s.start)).unwrap_or_default(),
    };
    let (message, help) = explain_serde_message(&raw);
    map.diagnostic(span, &path, message, help)
}

/// Rewrites serde's "unknown field `x`, expected one of `a`, `b`" into a message and a hint.
fn explain_serde_message(raw: &str) -> (String, Option<String>) {
    for (prefix, what) in [("unknown field `", "field"), ("unknown variant `", "value")] {
        if let Some(rest) = raw.strip_prefix(prefix) {
            let Some((name, tail)) = rest.split_once('`') else { break };
            let expected: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
            let hint = did_you_mean(name, expected.iter().copied())
                .map(|s| format!("did you mean `{s}`? "))
                .unwrap_or_default();
            let list = if expected.is_empty() { "none".to_string() } else { expected.join(", ") };
            return (format!("unknown {what} `{name}`"), Some(format!("{hint}valid {what}s: {list}")));
        }
    }
    if let Some(f) = raw.strip_prefix("missing field `") {
        let f = f.trim_end_matches('`');
        return (format!("missing required field `{f}`"), Some(required_help(f)));
    }
    (raw.to_string(), None)
}

fn required_help(field: &str) -> String {
    match field {
        "batch" => "add e.g. `batch = 32` (samples per GPU replica per step) at the top of the file".into(),
        "model" => "add a [model] table with `name = \"inception-v3\"` or `layers = \"my-model.csv\"`".into(),
        other => format!("add `{other} = ...`"),
    }
}

/// The JSON Schema of the scenario format (for editor completion).
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(ScenarioFile);
    serde_json::to_value(schema).expect("a JSON schema is JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(text, "t.toml", "t", None)
    }

    const MINIMAL: &str = "batch = 32\n[model]\nname = \"inception-v3\"\n";

    #[test]
    fn convolutions_run_by_winograd_only_in_fp32_on_cuda_cores() {
        let on = |gpu: &str, precision: &str| {
            // TF32 has no catalogued efficiency: the scenario gives one.
            let text = format!("{MINIMAL}[hardware]\ngpu = \"{gpu}\"\nprecision = \"{precision}\"\nefficiency = 0.3\n");
            parse(&text).unwrap_or_else(|e| panic!("{e}")).winograd()
        };
        assert!(on("k40", "fp32") && on("a100-80gb", "fp32"));
        // Tensor cores run convolutions as implicit GEMMs.
        assert!(!on("a100-80gb", "tf32") && !on("v100", "fp16"));
    }

    #[test]
    fn minimal_scenario_takes_defaults() {
        let s = parse(MINIMAL).unwrap();
        assert_eq!(s.spec.name, "t");
        assert_eq!(s.gpu.name, "k40");
        assert_eq!(s.nic.0, 10e9);
        assert_eq!(s.spec.topology.workers, 1);
        assert_eq!(s.model.variable_count(), 190);
    }

    #[test]
    fn the_topology_holds_only_the_fields_of_its_kind() {
        let ps = parse(&format!("{MINIMAL}[topology]\nworkers = 4\nps = 2\nmode = \"async\"\n")).unwrap();
        match ps.topology() {
            Topology::ParameterServer(t) => assert_eq!((t.workers, t.ps, t.mode), (4, 2, Mode::Async)),
            t => panic!("{t:?}"),
        }
        assert_eq!((ps.topology().ps(), ps.ps_hosts()), (2, 2));
        let ar =
            parse(&format!("{MINIMAL}[topology]\nkind = \"all-reduce\"\nworkers = 8\nalgorithm = \"tree\"\n")).unwrap();
        match ar.topology() {
            Topology::AllReduce(t) => {
                assert_eq!((t.workers, t.algorithm, t.fusion_buffer), (8, AllReduceAlgorithm::Tree, default_fusion()))
            }
            t => panic!("{t:?}"),
        }
        // The file's defaults of the other kind (ps = 1) are not the all-reduce's.
        assert_eq!((ar.topology().ps(), ar.topology().mode(), ar.ps_hosts()), (0, Mode::Sync, 0));
    }

    #[test]
    fn normalized_text_reparses_to_the_same_scenario_and_hash() {
        let s = parse(MINIMAL).unwrap();
        let again = parse(&s.normalized()).unwrap();
        assert_eq!(again.spec, s.spec);
        assert_eq!(again.hash, s.hash);
    }

    #[test]
    fn a_host_bus_is_a_catalogue_name_or_a_rate() {
        let base = "batch = 32\n[model]\nname = \"alexnet\"\n[topology]\nkind = \"all-reduce\"\nworkers = 2\n[hardware]\ngpus_per_host = 2\n";
        let s = parse(&format!("{base}host_bus = \"20 Gbit/s\"\n")).unwrap();
        assert_eq!(s.host_bus.bandwidth.bytes_per_sec(), 2.5e9);
        assert_eq!(parse(&format!("{base}host_bus = \"nvlink2\"\n")).unwrap().host_bus.name, "nvlink2");
        let e = parse(&format!("{base}host_bus = \"nvlnk2\"\n")).unwrap_err();
        let d = &e.diagnostics()[0];
        assert_eq!((d.path.as_str(), d.line), ("hardware.host_bus", 9), "{d}");
        assert!(d.help.as_ref().unwrap().contains("did you mean `nvlink2`?"), "{d}");
        let e = parse(&format!("{base}host_bus = \"0 Gbit/s\"\n")).unwrap_err();
        assert!(e.diagnostics()[0].message.contains("must be > 0"), "{e}");
    }

    #[test]
    fn unknown_field_suggests_the_closest_name() {
        let e = parse("batch = 32\n[model]\nname = \"alexnet\"\n[topology]\nwokers = 4\n").unwrap_err();
        let d = &e.diagnostics()[0];
        assert_eq!((d.line, d.column), (5, 1));
        assert_eq!(d.path, "topology.wokers");
        assert!(d.help.as_ref().unwrap().contains("did you mean `workers`?"), "{d}");
    }

    #[test]
    fn semantic_errors_are_all_reported_at_their_fields() {
        let e = parse("batch = 0\n[model]\nname = \"alexnet\"\n[topology]\nworkers = 0\nps = 0\n").unwrap_err();
        let ds = e.diagnostics();
        let paths: Vec<&str> = ds.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["batch", "topology.workers", "topology.ps"]);
        assert_eq!((ds[1].line, ds[1].column), (5, 11));
    }

    #[test]
    fn a_sweep_is_the_product_of_its_axes_and_points() {
        let s = parse(&format!(
            "{MINIMAL}[sweep]\nworkers = [1, 2]\nnic = [\"1GbE\", \"10GbE\"]\npoints = [{{ ps = 1 }}, {{ ps = 2, mode = \"async\" }}]\n"
        ))
        .unwrap();
        let pts = s.spec.sweep.expand();
        // 2 workers x 2 NICs x 2 points; the points vary fastest, then workers.
        assert_eq!(pts.len(), 8);
        assert_eq!(s.spec.sweep.points(), 8);
        assert_eq!((pts[0].ps, pts[1].ps), (Some(1), Some(2)));
        assert_eq!((pts[0].workers, pts[1].workers, pts[2].workers), (Some(1), Some(1), Some(2)));
        assert!(pts.iter().filter(|p| p.mode == Some(Mode::Async)).all(|p| p.ps == Some(2)));
        let f = SweepSpec::point_file(&s.spec, &pts[7]);
        assert_eq!((f.topology.workers, f.topology.ps, f.network.nic.as_str()), (2, 2, "10GbE"));
        assert!(f.name.contains("workers=2") && f.sweep.points() == 0);
    }

    #[test]
    fn bare_number_for_a_nic_shows_the_unit_hint_too() {
        let e = parse("batch = 32\n[model]\nname = \"alexnet\"\n[network]\nnic = 10\n").unwrap_err();
        let d = &e.diagnostics()[0];
        assert!(d.message.contains("no unit") && d.message.contains("10 Gbit/s"), "{d}");
        assert_eq!(d.path, "network.nic");
    }

    #[test]
    fn bare_number_for_a_quantity_shows_an_example() {
        let e = parse("batch = 32\n[model]\nname = \"alexnet\"\n[network]\nlatency = 50\n").unwrap_err();
        let d = &e.diagnostics()[0];
        assert!(d.message.contains("no unit") && d.message.contains("50 us"), "{d}");
        assert_eq!(d.path, "network.latency");
    }
}

#[cfg(test)]
mod no_panic {
    use super::*;

    const VALID: &str = "batch = 32\nseed = 3\n[model]\nname = \"alexnet\"\n[network]\nnic = \"10 Gbit/s\"\nlatency = \"50 us\"\n\
                         [topology]\nworkers = 4\nps = 2\nmode = \"backup\"\nbackup_workers = 1\n[sweep]\nworkers = [1, 2]\n";

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 512, rng_seed: proptest::test_runner::RngSeed::Fixed(0x7090_1ab5), ..Default::default() })]

        /// Arbitrary text never panics the parser; it parses or gives located diagnostics.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            if let Err(ScenarioError::Invalid(ds)) = Scenario::parse(&text, "f.toml", "f", None) {
                proptest::prop_assert!(!ds.is_empty());
                for d in ds {
                    proptest::prop_assert!(d.line >= 1 && d.column >= 1);
                }
            }
        }

        /// A valid scenario with one byte replaced or removed never panics.
        #[test]
        fn mutated_scenario_never_panics(pos in 0usize..VALID.len(), byte in proptest::num::u8::ANY, delete in proptest::bool::ANY) {
            let mut bytes = VALID.as_bytes().to_vec();
            if delete { bytes.remove(pos); } else { bytes[pos] = byte; }
            if let Ok(text) = String::from_utf8(bytes) {
                let _ = Scenario::parse(&text, "f.toml", "f", None);
            }
        }
    }
}
