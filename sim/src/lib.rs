//! topolab-sim: a deterministic discrete-event simulator of parameter-server training.
//!
//! The pieces, from the bottom up:
//!
//! - [`engine::EventQueue`]: a heap of events keyed by (integer ns, insertion sequence) with
//!   lazy cancellation. Knows nothing of GPUs or networks.
//! - [`maxmin`]: max-min fair sharing by progressive filling, an incremental entry point and a
//!   plain reference.
//! - [`network::Network`]: connections (flows) that carry queued messages over capacitated
//!   resources (NIC directions, rack uplinks); re-solves only the affected component.
//! - [`training`]: executes the core [`Plan`] (pulls, per-layer compute, pushes, aggregation,
//!   apply, barrier) for sync, backup-worker, async and stale-synchronous training.
//!
//! - [`failures`]: failures, checkpoints and restarts over a whole run (Young, Daly, and a
//!   seeded event-by-event check of them), charged to the time to a target.
//! - [`sweep`]: every configuration of a sweep in parallel, as sweep.csv records.
//!
//! [`simulate`] ties them together and returns a [`SimRun`]: step records (the same columns
//! as a real replay), a [`RunSummary`] with a bottleneck in words, and a Chrome trace.
//! Same scenario and seed, same bytes: nothing depends on wall-clock time, hash-map order or
//! thread scheduling.
#![warn(missing_docs)]

pub mod allreduce;
pub mod engine;
pub mod failures;
pub mod fit;
pub mod maxmin;
pub mod measured;
pub mod network;
pub mod rng;
pub(crate) mod steady;
pub mod sweep;
pub mod target;
pub mod training;

use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use topolab_core::plan::{Plan, PlanError};
use topolab_core::records::{self, Breakdown, RunSummary, StepRecord, Utilization, VERSION};
use topolab_core::scenario::{AllReduce, PsHosts, Scenario, Topology};
use topolab_core::units::{Bytes, Time};

pub use topolab_core::atomic::write_atomic;
pub use training::{Outcome, ResourceOwner, ResourceUse, Span};

/// Knobs of a simulation that are not part of the scenario.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Record a Chrome trace of the first `training.trace_steps` steps.
    pub trace: bool,
    /// Stop with an error after this many events (a guard against runaway runs).
    pub max_events: u64,
    /// Simulate every worker on its own even when workers are interchangeable (tests).
    pub no_classes: bool,
    /// Record every pull, push and per-layer compute of every worker and step
    /// ([`SimRun::ops`]), for conformance checks against the Plan and the runtime.
    pub op_log: bool,
    /// Time every connection with the max-min solver, without the hub fast path (tests that
    /// check the fast path against it).
    pub exact_network: bool,
    /// Simulate every step even when a deterministic run's steps have settled into a period
    /// (tests that check the extrapolation of [`steady`] against it).
    pub every_step: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            trace: true,
            max_events: 2_000_000_000,
            no_classes: false,
            op_log: false,
            exact_network: false,
            every_step: false,
        }
    }
}

/// Why a scenario cannot be simulated.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The scenario asks for something the simulator cannot run (bad input, exit 2).
    #[error("cannot simulate {scenario}: {reason}")]
    Refused {
        /// Scenario name.
        scenario: String,
        /// Why.
        reason: String,
    },
    /// The plan could not be built (bad input).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// No event is left but workers have not finished: a model bug or an impossible scenario.
    #[error("simulation stuck at {at}: worker {worker} in step {step}: {what}")]
    Stuck {
        /// Simulated time of the last event.
        at: Time,
        /// A worker that did not finish.
        worker: u32,
        /// Its step.
        step: u64,
        /// The op it waits for.
        what: String,
    },
    /// The run exceeded the event budget.
    #[error("simulation exceeded {events} events; lower training.steps")]
    TooLong {
        /// The budget.
        events: u64,
    },
}

impl SimError {
    /// True for errors caused by the scenario (exit code 2).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, SimError::Refused { .. } | SimError::Plan(_))
    }
}

/// What a simulation produces.
#[derive(Debug, Clone)]
pub struct SimRun {
    /// The summary (without wall time; see `sim_wall_s`).
    pub summary: RunSummary,
    /// Step records, ordered by (step, worker).
    pub steps: Vec<StepRecord>,
    /// Extra figures of the simulator.
    pub detail: SimDetail,
    /// Trace spans of the first steps.
    pub trace: Vec<Span>,
    /// Wall-clock seconds the simulation took (printed, never written to run files).
    pub sim_wall_s: f64,
    /// With [`SimOptions::op_log`]: every op of every worker and step.
    pub ops: Vec<SimOp>,
}

/// One op a simulated worker performed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SimOp {
    /// Worker.
    pub worker: u32,
    /// Step.
    pub step: u64,
    /// "compute-forward", "compute-backward", "pull", "push" or "all-reduce".
    pub op: &'static str,
    /// Layer (compute), part (pull, push) or the step's fusion bucket (all-reduce).
    pub index: u64,
    /// Payload bytes (pull, push; all-reduce: the bucket's gradients).
    pub bytes: u64,
    /// Simulated start and end, ns: a transfer from when it was queued to its arrival, a
    /// layer's compute within its chain.
    pub start_ns: u64,
    /// End, ns.
    pub end_ns: u64,
}

/// Simulator-specific figures that go with a summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimDetail {
    /// Simulated time of the whole run, seconds.
    pub makespan_s: f64,
    /// Compute time of one step on one GPU (forward + backward), seconds.
    pub compute_per_step_s: f64,
    /// Worker classes simulated (interchangeable workers are simulated once).
    pub worker_classes: usize,
    /// The last step simulated when a deterministic run's later steps repeat it and were
    /// extrapolated from its period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steady_from: Option<u64>,
    /// Busiest resource: label and busy fraction.
    pub busiest: Vec<(String, f64)>,
    /// Async staleness histogram: (staleness, count).
    pub staleness: Vec<(u64, u64)>,
    /// Memory a GPU needs for this model and batch.
    pub gpu_memory_needed: Bytes,
}

/// GPU memory a worker replica needs (see [`topolab_core::scenario::gpu_memory_needed`]).
/// With all-reduce the optimizer's slots live on every GPU too (there is no PS to hold them).
pub fn gpu_memory_needed(s: &Scenario) -> Bytes {
    let base = topolab_core::scenario::gpu_memory_needed(&s.model, s.spec.batch);
    if all_reduce(s) { Bytes(base.0 + s.model.bytes().0 * s.spec.optimizer.kind.slots()) } else { base }
}

fn all_reduce(s: &Scenario) -> bool {
    matches!(s.topology(), Topology::AllReduce(_))
}

/// The next event of a run, or [`SimError::TooLong`] once the run has taken more events than
/// `opts.max_events` allows.
pub(crate) fn next_event<E: Copy>(
    q: &mut engine::EventQueue<E>,
    opts: &SimOptions,
) -> Result<Option<(Time, E)>, SimError> {
    let next = q.pop();
    if q.popped() > opts.max_events {
        return Err(SimError::TooLong { events: opts.max_events });
    }
    Ok(next)
}

/// The parameter-server run of `s` as a workload file for SimGrid's engine
/// (sim/tests/simgrid/ps_step.cpp replays it): the same step, messages and compute, every
/// worker on its own. Refused for what that replay does not model (see the reason).
pub fn simgrid_workload(s: &Scenario) -> Result<String, SimError> {
    let Topology::ParameterServer(t) = s.topology() else {
        return Err(SimError::Refused {
            scenario: s.spec.name.clone(),
            reason: "the SimGrid replay runs parameter-server scenarios".into(),
        });
    };
    let plan = Plan::new(s)?;
    let opts = SimOptions { trace: false, no_classes: true, ..SimOptions::default() };
    training::Sim::new(s, t, &plan, &opts)?
        .workload()
        .map_err(|reason| SimError::Refused { scenario: s.spec.name.clone(), reason })
}

/// Simulates `s`.
pub fn simulate(s: &Scenario, opts: &SimOptions) -> Result<SimRun, SimError> {
    let started = Instant::now();
    let need = gpu_memory_needed(s);
    if need > s.gpu.memory {
        return Err(SimError::Refused {
            scenario: s.spec.name.clone(),
            reason: format!(
                "{} at batch {} needs {:.2} per GPU (weights {:.2} + gradients + activations {:.2}) but the {} has {}; \
                 lower `batch` or pick a GPU with more memory",
                s.model.name,
                s.spec.batch,
                need,
                s.model.bytes(),
                Bytes(s.model.activation_bytes().0 * s.spec.batch),
                s.gpu.name,
                s.gpu.memory
            ),
        });
    }
    let (outcome, summary) = match s.topology() {
        Topology::AllReduce(t) => {
            let outcome = allreduce::run(s, t, opts)?;
            let summary = summarize(s, None, &outcome);
            (outcome, summary)
        }
        Topology::ParameterServer(t) => {
            let plan = Plan::new(s)?;
            let outcome = training::Sim::new(s, t, &plan, opts)?.run()?;
            let summary = summarize(s, Some(&plan), &outcome);
            (outcome, summary)
        }
    };
    let compute_per_step_s = outcome
        .steps
        .iter()
        .filter(|r| r.worker == s.topology().workers() - 1)
        .map(|r| r.compute_ns)
        .min()
        .unwrap_or(0) as f64
        / 1e9;
    let mut busiest: Vec<(String, f64)> = outcome
        .resources
        .iter()
        .map(|r| (resource_label(r), busy(r, outcome.makespan)))
        .filter(|(_, b)| *b > 0.0)
        .collect();
    busiest.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    busiest.truncate(5);
    let detail = SimDetail {
        makespan_s: outcome.makespan.secs_f64(),
        compute_per_step_s,
        worker_classes: outcome.classes,
        steady_from: outcome.steady_from,
        busiest,
        staleness: outcome.staleness.iter().map(|(&k, &v)| (k, v)).collect(),
        gpu_memory_needed: need,
    };
    Ok(SimRun {
        summary,
        steps: outcome.steps,
        detail,
        trace: outcome.trace,
        sim_wall_s: started.elapsed().as_secs_f64(),
        ops: outcome.ops,
    })
}

fn resource_label(r: &ResourceUse) -> String {
    let dir = if r.outbound { "egress" } else { "ingress" };
    match r.owner {
        ResourceOwner::Worker(w) => format!("worker{w} {dir}"),
        ResourceOwner::Ps(p) => format!("ps{p} {dir}"),
        ResourceOwner::Rack(k) => format!("rack{k} {}", if r.outbound { "uplink" } else { "downlink" }),
        ResourceOwner::HostBus(w) => format!("worker{w} host bus"),
    }
}

fn busy(r: &ResourceUse, makespan: Time) -> f64 {
    if makespan.0 == 0 { 0.0 } else { r.bytes_per_host / (r.capacity * makespan.0 as f64) }
}

fn summarize(s: &Scenario, plan: Option<&Plan>, o: &Outcome) -> RunSummary {
    let topology = s.topology();
    let n = o.steps.len().max(1) as f64;
    let mean = |f: fn(&StepRecord) -> u64| o.steps.iter().map(|r| f(r) as f64).sum::<f64>() / n / 1e9;
    let breakdown =
        Breakdown { compute: mean(|r| r.compute_ns), exposed_comm: mean(|r| r.comm_ns), wait: mean(|r| r.wait_ns) };
    let makespan = o.makespan;
    let samples = o.steps.len() as f64 * s.spec.batch as f64 * f64::from(s.spec.hardware.gpus_per_host);
    let throughput = if makespan.0 > 0 { samples / makespan.secs_f64() } else { 0.0 };
    let max_busy = |pred: &dyn Fn(&ResourceUse) -> bool| -> (f64, Option<&ResourceUse>) {
        let mut best: (f64, Option<&ResourceUse>) = (0.0, None);
        for r in o.resources.iter().filter(|r| pred(r)) {
            let b = busy(r, makespan);
            if b > best.0 {
                best = (b, Some(r));
            }
        }
        best
    };
    let hosts_shard = |r: &ResourceUse| match (r.owner, topology) {
        (ResourceOwner::Ps(_), _) => true,
        (ResourceOwner::Worker(w), Topology::ParameterServer(t)) => t.ps_hosts == PsHosts::Colocated && w < t.ps,
        _ => false,
    };
    let ps_in = max_busy(&|r| hosts_shard(r) && !r.outbound);
    let ps_out = max_busy(&|r| hosts_shard(r) && r.outbound);
    let w_in = max_busy(&|r| matches!(r.owner, ResourceOwner::Worker(_)) && !hosts_shard(r) && !r.outbound);
    let w_out = max_busy(&|r| matches!(r.owner, ResourceOwner::Worker(_)) && !hosts_shard(r) && r.outbound);
    let rack = max_busy(&|r| matches!(r.owner, ResourceOwner::Rack(_)));
    let host_bus = max_busy(&|r| matches!(r.owner, ResourceOwner::HostBus(_)));
    let workers = topology.workers();
    let gpu = if makespan.0 > 0 { o.gpu_busy_ns as f64 / (f64::from(workers) * makespan.0 as f64) } else { 0.0 };
    let ps = plan.is_some();
    let utilization = Utilization {
        gpu,
        ps_nic_in_max: ps.then_some(ps_in.0),
        ps_nic_out_max: ps.then_some(ps_out.0),
        worker_nic_in_max: Some(w_in.0),
        worker_nic_out_max: Some(w_out.0),
    };
    let step_time = records::step_time_stats(&o.steps);
    let bottleneck = match (plan, topology) {
        (Some(plan), _) => bottleneck(s, plan, &breakdown, step_time.mean, [ps_in, ps_out, w_in, w_out, rack], gpu),
        (None, Topology::AllReduce(t)) => {
            collective_bottleneck(s, &t, &breakdown, step_time.mean, [w_in, w_out, rack, host_bus], gpu)
        }
        (None, Topology::ParameterServer(_)) => unreachable!("a parameter-server run has a plan"),
    };
    RunSummary {
        scenario: s.spec.name.clone(),
        scenario_hash: s.hash.clone(),
        seed: s.spec.seed,
        version: VERSION.into(),
        source: "sim".into(),
        workers,
        ps: topology.ps(),
        steps: s.spec.training.steps,
        step_time_s: step_time,
        throughput_samples_per_s: throughput,
        breakdown_s: breakdown,
        utilization,
        bottleneck,
        events: o.events,
        wall_s: None,
        target: None,
        replay: None,
    }
}

/// Names the bottleneck in words: what limits the step, and what would help. A step is compute,
/// exposed communication and waiting for aggregation; when compute is not nearly all of it, the
/// larger of the other two is named, with the busiest network resource and why it is busy.
///
/// A link's busy fraction is over the whole run: where pulls and pushes alternate (a PS shard
/// sends during the pull phase, receives during the push phase) a link that is saturated
/// whenever it is used shows about 50% in each direction, so the text says so instead of
/// reading as half idle.
fn bottleneck(
    s: &Scenario,
    plan: &Plan,
    b: &Breakdown,
    step_mean: f64,
    nets: [(f64, Option<&ResourceUse>); 5],
    gpu: f64,
) -> String {
    let step = step_mean.max(1e-12);
    let (c, e, w) = (b.compute / step * 100.0, b.exposed_comm / step * 100.0, b.wait / step * 100.0);
    if c >= 90.0 {
        return format!(
            "GPU compute limits the step: {c:.0}% of it computes on the {} ({:.0}% busy overall); \
             more workers raise throughput, a faster GPU shortens the step",
            s.gpu.name,
            gpu * 100.0
        );
    }
    if w > e {
        return format!(
            "waiting for aggregation limits the step: {w:.0}% of it waits for other workers' gradients and the PS apply; \
             backup workers (mode = \"backup\") or async training stop fast workers waiting for slow ones"
        );
    }
    let (busy, res) = nets.iter().fold((0.0, None), |acc, &(x, r)| if x > acc.0 { (x, r) } else { acc });
    let tail = format!("communication not hidden behind compute is {e:.0}% of the step, compute {c:.0}%");
    let Some(r) = res.filter(|_| busy >= 0.2) else {
        return format!(
            "latency limits the step: {tail}, with no link busy; latency {} and per-message overhead {} per message dominate: \
             fewer, larger messages (fewer variables or PS shards) would help",
            s.spec.network.latency, s.spec.network.message_overhead
        );
    };
    let pct = busy * 100.0;
    let dir = if r.outbound { "egress" } else { "ingress" };
    let phase = if r.outbound { "pulls" } else { "pushes" };
    let shard_of = |owner: ResourceOwner| match owner {
        ResourceOwner::Ps(p) => Some(p),
        ResourceOwner::Worker(w) if plan.ps_hosts == PsHosts::Colocated && w < plan.ps => Some(w),
        _ => None,
    };
    if let Some(shard) = shard_of(r.owner) {
        let bytes = plan.placement.shard_bytes();
        let total: u64 = bytes.iter().map(|x| x.0).sum();
        let share = bytes[shard as usize].0 as f64 / total.max(1) as f64 * 100.0;
        let even = 100.0 / f64::from(plan.ps.max(1));
        let help = if share > even * 1.2 {
            format!(
                "a placement that spreads the bytes (placement = \"greedy\" or \"partitioned\": {even:.0}% per shard), more PS shards or faster NICs would help"
            )
        } else {
            "more PS shards or faster NICs would help".to_string()
        };
        return format!(
            "PS shard {shard}'s NIC limits the step: {} placement put {share:.0}% of the bytes on it; its {dir} is busy {pct:.0}% of the \
             whole run, carrying the {phase} (pulls and pushes alternate, so a link saturated while in use reads about 50%); {tail}; {help}",
            plan.placement.kind.as_str()
        );
    }
    match r.owner {
        ResourceOwner::Rack(k) => format!(
            "rack {k}'s {} limits the step: busy {pct:.0}% of the run at {}:1 oversubscription; {tail}; a less oversubscribed fabric or fewer racks would help",
            if r.outbound { "uplink" } else { "downlink" },
            s.spec.network.oversubscription
        ),
        _ => format!(
            "the workers' {} NICs limit the step: their {dir} is busy {pct:.0}% of the whole run, carrying the {phase}; {tail}; \
             faster NICs, or overlapping pushes with backprop (training.overlap), would help",
            s.nic
        ),
    }
}

/// The bottleneck of an all-reduce step in words: compute, waiting for the slowest worker,
/// the collective's slowest link, or the latency of its many rounds.
fn collective_bottleneck(
    s: &Scenario,
    t: &AllReduce,
    b: &Breakdown,
    step_mean: f64,
    nets: [(f64, Option<&ResourceUse>); 4],
    gpu: f64,
) -> String {
    let step = step_mean.max(1e-12);
    let (c, e, w) = (b.compute / step * 100.0, b.exposed_comm / step * 100.0, b.wait / step * 100.0);
    let ring = format!("the {} all-reduce", t.algorithm.as_str());
    if c >= 90.0 {
        return format!(
            "GPU compute limits the step: {c:.0}% of it computes on the {} ({:.0}% busy overall); {ring} hides behind backward; \
             a faster GPU shortens the step",
            s.gpu.name,
            gpu * 100.0
        );
    }
    if w > e {
        return format!(
            "waiting for the slowest worker limits the step: {w:.0}% of it waits for other workers to hand over their gradients; \
             every worker of {ring} waits for the slowest, so stragglers cost all of them"
        );
    }
    let tail = format!("communication not hidden behind compute is {e:.0}% of the step, compute {c:.0}%");
    let (busy, res) = nets.iter().fold((0.0, None), |acc, &(x, r)| if x > acc.0 { (x, r) } else { acc });
    // Messages rank 0 sends per bucket of a small bucket (latency-bound), over its streams.
    let sched = topolab_core::collective::Schedule::of(t.algorithm, t.workers, s.spec.hardware.gpus_per_host);
    let rounds: u64 = (0..sched.streams()).map(|st| sched.stream_len(0, st, 1)).sum();
    let Some(r) = res.filter(|_| busy >= 0.2) else {
        return format!(
            "latency limits the step: {tail}, with no link busy; each bucket takes {rounds} rounds of latency {} and per-message overhead {}: \
             fewer buckets (a larger topology.fusion_buffer) would help",
            s.spec.network.latency, s.spec.network.message_overhead
        );
    };
    let pct = busy * 100.0;
    use topolab_core::scenario::AllReduceAlgorithm as A;
    let (whose, carry) = match t.algorithm {
        A::Ring => ("the ring's", "NICs carry 2(n-1)/n of the gradients each way per step"),
        A::Hierarchical => {
            ("the hierarchical all-reduce's", "NICs carry 2(n-1)/n of the gradients each way per step, n hosts")
        }
        A::Tree => ("the trees'", "NICs carry each half of the gradients up one tree and down it"),
    };
    match r.owner {
        ResourceOwner::Rack(k) => format!(
            "{whose} slowest link, rack {k}'s {}, is busy {pct:.0}% of the run at {}:1 oversubscription; {tail}; \
             a less oversubscribed fabric or placing the ring's hosts in fewer racks would help",
            if r.outbound { "uplink" } else { "downlink" },
            s.spec.network.oversubscription
        ),
        ResourceOwner::HostBus(h) => format!(
            "{whose} slowest link, host {h}'s bus between its GPUs, is busy {pct:.0}% of the run; {tail}; a faster host bus \
             (NVLink) would help"
        ),
        ResourceOwner::Worker(h) | ResourceOwner::Ps(h) => format!(
            "{whose} slowest link, host {h} {}, is busy {pct:.0}% of the run ({} {carry}); {tail}; faster NICs would help",
            if r.outbound { "egress" } else { "ingress" },
            s.nic
        ),
    }
}

/// Writes `summary.json`, `steps.csv` and `trace.json` into `dir` atomically (each file is
/// written to a temporary name and renamed, so a crash never leaves a half-written file).
pub fn write_run_dir(run: &SimRun, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut summary = Vec::new();
    records::write_summary_json(&run.summary, &mut summary).map_err(std::io::Error::other)?;
    summary.push(b'\n');
    write_atomic(&dir.join("summary.json"), &summary)?;
    let mut steps = Vec::new();
    records::write_steps_csv(&run.steps, &mut steps).map_err(std::io::Error::other)?;
    write_atomic(&dir.join("steps.csv"), &steps)?;
    write_atomic(&dir.join("trace.json"), &chrome_trace(&run.trace))?;
    Ok(())
}

/// The Chrome trace event format (opens in Perfetto and chrome://tracing): one complete
/// ("X") event per span, microsecond timestamps, a process per host and a thread per lane.
pub fn chrome_trace(spans: &[Span]) -> Vec<u8> {
    let mut pids: Vec<&str> = spans.iter().map(|s| s.pid.as_str()).collect();
    pids.sort_by_key(|p| (!p.starts_with("worker"), p.len(), *p));
    pids.dedup();
    let lanes = ["gpu", "nic-in", "nic-out", "apply"];
    let mut events: Vec<serde_json::Value> = Vec::new();
    for (i, p) in pids.iter().enumerate() {
        events.push(serde_json::json!({"name": "process_name", "ph": "M", "pid": i, "args": {"name": p}}));
        for (j, l) in lanes.iter().enumerate() {
            events.push(serde_json::json!({"name": "thread_name", "ph": "M", "pid": i, "tid": j, "args": {"name": l}}));
        }
    }
    for s in spans {
        let pid = pids.iter().position(|p| *p == s.pid).unwrap_or(0);
        let tid = lanes.iter().position(|l| *l == s.tid).unwrap_or(0);
        events.push(serde_json::json!({
            "name": s.name, "cat": s.tid, "ph": "X", "pid": pid, "tid": tid,
            "ts": s.start.0 as f64 / 1e3, "dur": (s.end.0 - s.start.0) as f64 / 1e3,
        }));
    }
    let mut out = serde_json::to_vec(&serde_json::json!({"traceEvents": events, "displayTimeUnit": "ms"}))
        .expect("trace events are JSON");
    out.push(b'\n');
    out
}
