//! Parameter-server training: executes the core [`Plan`] on the engine and the network.
//!
//! **Worker classes.** Workers that are interchangeable (same compute speed every step, same
//! place in the network, no shard on their host) are simulated once, as a class with a
//! multiplicity: their connections form one flow group whose weight on shared resources is
//! the class size. In the fluid model this is exact, not an approximation: symmetric
//! connections get equal max-min shares, so identical workers stay in lock-step. Jitter,
//! stragglers, co-located shards, racks and the asynchronous modes (where a shard applies the
//! gradients of identical workers one after another) break the symmetry, and then each worker
//! is a class of its own.
//!
//! **What a step is** (per class, following the Plan): pulls of every variable part are queued
//! on the shard-to-worker connections at step start; forward layers run as soon as their
//! variables have arrived (consecutive ready layers run as one event); backward layers run in
//! reverse and each one's gradients are queued on the worker-to-shard connections when it
//! ends (or all at the end, without overlap); shards aggregate, apply on a FIFO "apply server"
//! whose speed is the PS host's memory bandwidth, and release the barrier (sync, backup) once
//! every part is applied.

use std::collections::BTreeMap;

use topolab_core::plan::{Host, Op, Plan};
use topolab_core::records::{StepRecord, VERSION};
use topolab_core::scenario::{Mode, Noise, ParameterServers, PsHosts, Scenario, SwitchKind};
use topolab_core::step::{Aggregation, Pushed, Release, ShardProgress};
use topolab_core::units::Time;

use crate::engine::EventQueue;
use crate::maxmin::Use;
use crate::network::{Message, Network, Timer};
use crate::{SimError, SimOptions};

/// Bytes of a request or a Ready: a frame header, so latency and message overhead dominate.
const REQUEST_BYTES: f64 = 16.0;

/// Share of a network flow against compute on shared cores: the kernel moves packets before
/// user processes compute, so flows take their CPU first (any large factor does).
pub(crate) const NETWORK_PRIORITY: f64 = 1e4;

/// What a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tag {
    /// Variable part `part` of step `step` to class `class`.
    Pull { class: usize, part: usize, step: u64 },
    /// Gradient of `part` from class `class` for `step`.
    Push { class: usize, part: usize, step: u64 },
    /// Sync, backup: class `class` asks shard `shard` for step `step` (after its last push to it).
    Request { class: usize, shard: usize, step: u64 },
    /// Sync, backup: shard `shard` has applied step `step - 1` and answers the class's request.
    Ready { class: usize, shard: usize, step: u64 },
    /// Sync, backup: class `class`, released into `step`, asks shard `shard` for its values.
    Fetch { class: usize, shard: usize, step: u64 },
    /// Compute of class `class` on shared cores (bytes are core-nanoseconds).
    Compute { class: usize },
}

#[derive(Debug, Clone, Copy)]
enum Ev {
    Net(Timer),
    Deliver(Tag),
    ComputeDone { class: usize },
    BusDone { class: usize, part: usize, broadcast: bool, step: u64 },
    ApplyDone { shard: usize, part: usize, step: u64, class: usize },
    StartStep { class: usize },
}

/// A set of interchangeable workers.
#[derive(Debug, Clone)]
pub(crate) struct Class {
    pub(crate) workers: Vec<u32>,
    slowdown: f64,
    jitter: bool,
    egress: usize,
    ingress: usize,
    /// Flow index of the pull (shard -> class) and push (class -> shard) connection per shard;
    /// `None` when the shard is on this class's host (no NIC).
    pull_flow: Vec<Option<usize>>,
    push_flow: Vec<Option<usize>>,
    /// With shared cores: the class's compute, a flow over its own core and the machine's.
    compute_flow: Option<usize>,
}

#[derive(Debug, Clone, Default)]
struct ClassState {
    step: u64,
    step_start: Time,
    /// Parts not yet arrived (and broadcast) per layer.
    missing: Vec<u32>,
    next_forward: usize,
    /// Next backward layer + 1 (0 = backward done).
    next_backward: usize,
    in_backward: bool,
    computing: bool,
    /// Compute time of the step so far.
    compute_ns: u64,
    /// When the running compute chain started.
    compute_started: Time,
    jitter_factor: f64,
    pushes_in_flight: u32,
    applies_in_flight: u32,
    backward_done: bool,
    own_done_at: Option<Time>,
    bus_free: Time,
    finished: bool,
    /// Version of each part as pulled this step (async staleness).
    pulled_version: Vec<u64>,
    /// Sync, backup: the release into the next step (core's rule: every shard's Ready).
    release: Option<Release>,

    /// Started steps count toward `steps`.
    blocked_ssp: bool,
}

/// Busy intervals for the Chrome trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// Process (host) label.
    pub pid: String,
    /// Thread (lane) label.
    pub tid: &'static str,
    /// What ran.
    pub name: String,
    /// Start.
    pub start: Time,
    /// End.
    pub end: Time,
}

/// Everything a simulated run produces.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// One record per worker per step, ordered by (step, worker).
    pub steps: Vec<StepRecord>,
    /// Makespan of the run.
    pub makespan: Time,
    /// Events processed.
    pub events: u64,
    /// Bytes carried and capacity (bytes/ns) per named resource: (label, bytes, capacity).
    pub resources: Vec<ResourceUse>,
    /// Total GPU-busy ns over all workers.
    pub gpu_busy_ns: u128,
    /// Staleness histogram of async applies: staleness -> count.
    pub staleness: BTreeMap<u64, u64>,
    /// Trace spans of the first steps.
    pub trace: Vec<Span>,
    /// Worker classes simulated.
    pub classes: usize,
    /// Ops of every worker (with `op_log`).
    pub ops: Vec<crate::SimOp>,
    /// The last step simulated when the later ones repeat it (see [`crate::steady`]).
    pub steady_from: Option<u64>,
}

/// One network resource's use over the run.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceUse {
    /// Which host or link.
    pub owner: ResourceOwner,
    /// Egress (out) or ingress (in).
    pub outbound: bool,
    /// Bytes carried per host of the owner.
    pub bytes_per_host: f64,
    /// Capacity, bytes per ns.
    pub capacity: f64,
}

/// Who owns a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceOwner {
    /// The NIC of each worker host of a class (first worker named).
    Worker(u32),
    /// The NIC of a dedicated PS host.
    Ps(u32),
    /// A rack's uplink.
    Rack(u32),
    /// The bus joining the GPUs of a worker host (all-reduce: the ring's hops inside it).
    HostBus(u32),
}

struct Shard {
    apply_free: Time,
    /// Sync, backup: each part's aggregation (indexed by global part), the shard's progress,
    /// and the requests it has not answered yet (class, step).
    aggregation: Vec<Aggregation>,
    progress: ShardProgress,
    waiting: Vec<(usize, u64)>,
    /// Sync, backup: the class's last part on this shard, in push order (its request follows).
    last_push: Option<usize>,
    /// Async: updates applied to each part so far.
    version: Vec<u64>,
}

pub(crate) struct Sim<'a> {
    s: &'a Scenario,
    /// The topology.
    t: ParameterServers,
    plan: &'a Plan,
    opts: &'a SimOptions,
    q: EventQueue<Ev>,
    net: Network<Tag>,
    classes: Vec<Class>,
    state: Vec<ClassState>,
    shards: Vec<Shard>,
    /// Layer of each part, and parts per layer.
    layer_parts: Vec<Vec<usize>>,
    fwd_ns: Vec<u64>,
    bwd_ns: Vec<u64>,
    /// Memory-bound apply time per part.
    apply_ns: Vec<u64>,
    bus_bytes_per_ns: f64,
    latency: Time,
    overhead_bytes: f64,
    /// Wire bytes per payload byte. The ends copy a whole message before the next one moves
    /// (the PS encodes a pull's values, decodes and aggregates a push, under its shard lock),
    /// so a message holds its connection `copy_ns_per_byte` longer per byte; the fluid model
    /// charges that time as extra bytes at the NIC's rate.
    copy_factor: f64,
    copies: u32,
    local_agg: bool,
    records: Vec<StepRecord>,
    gpu_busy_ns: u128,
    staleness: BTreeMap<u64, u64>,
    trace: Vec<Span>,
    resources: Vec<(ResourceOwner, bool, usize)>,
    bytes_sent_per_step: Vec<u64>,
    bytes_recv_per_step: Vec<u64>,
    done_classes: usize,
    total_steps: u64,
    /// Async: worker-steps started so far, against `total_steps x workers`: fast workers keep
    /// stepping while slow ones are busy, so each worker does the steps it really has time for.
    started_worker_steps: u64,
    ops: Vec<crate::SimOp>,
    /// With `op_log`: when each transfer in flight started, by (class, op, part, step).
    op_started: std::collections::HashMap<(usize, &'static str, usize, u64), Time>,
}

/// Each layer's forward and backward compute time on one GPU for the scenario's batch, ns:
/// from the GPU's effective rate on the FLOPs it executes ([`Scenario::winograd`]) (plus,
/// with a calibrated profile, the measured cost per activation value and per call), or from a
/// GPU profile's measured kernel rates.
pub(crate) fn layer_times(s: &Scenario) -> (Vec<u64>, Vec<u64>) {
    let spec = &s.spec;
    let rate = s.effective_rate();
    // Per layer: FLOPs at the effective rate; with a calibrated profile, also the measured
    // cost per activation value (element-wise work the FLOP count leaves out) and per call.
    let (per_value, per_call) = s
        .profile
        .as_ref()
        .map_or((0.0, 0.0), |p| (p.fitted.elementwise_ns_per_value, p.fitted.layer_overhead.0 as f64));
    let extra = |l: &topolab_core::models::Layer| {
        if l.variables.is_empty() {
            0.0
        } else {
            per_value * (l.activation_bytes.0 / 4) as f64 * spec.batch as f64 + per_call
        }
    };
    match s.profile.as_ref().and_then(|p| p.fitted.gpu.as_ref()) {
        // A GPU profile: each layer's kernels and copies, as the cuda backend runs them,
        // timed at the measured rates of their shape classes.
        Some(g) => {
            let precision = topolab_core::profile::GemmPrecision::of(spec.hardware.precision);
            let bf16 = precision == topolab_core::profile::GemmPrecision::Bf16;
            s.model
                .layers
                .iter()
                .map(|l| match l.gemm_shape(spec.batch) {
                    Some((m, k, n)) => {
                        let (f, b) = topolab_core::profile::proxy_layer_ops(m, k, n, l.variables.len() > 1, bf16);
                        (g.time_ns(precision, &f).round() as u64, g.time_ns(precision, &b).round() as u64)
                    }
                    None => (0, 0),
                })
                .unzip()
        }
        None => s
            .model
            .layers
            .iter()
            .map(|l| {
                let flops = l.executed_forward_flops(s.winograd()) * spec.batch as f64;
                (
                    rate.compute_time(flops).0 + (extra(l) / 3.0).round() as u64,
                    rate.compute_time(2.0 * flops).0 + (extra(l) * 2.0 / 3.0).round() as u64,
                )
            })
            .unzip(),
    }
}

/// The compute multiplier of `worker`'s step `step`, starting at `now`: its straggler
/// slowdown, its noise (per seed, worker and step, independent of event order), and a
/// slow-node episode if one is under way on its host.
pub(crate) fn compute_factor(s: &Scenario, worker: u32, slowdown: f64, jitter: bool, step: u64, now: Time) -> f64 {
    let faults = &s.spec.faults;
    let mut f = slowdown;
    let worker = u64::from(worker);
    if jitter {
        let key = s.spec.seed ^ (worker << 32) ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let z = crate::rng::normal(key);
        let cv = s.jitter();
        f *= match faults.noise {
            Noise::Gaussian => (1.0 + cv * z).max(0.1),
            // Mean 1, coefficient of variation cv: sigma^2 = ln(1 + cv^2), mu = -sigma^2 / 2.
            Noise::Lognormal | Noise::HeavyTailed => {
                let s2 = (1.0 + cv * cv).ln();
                (-s2 / 2.0 + s2.sqrt() * z).exp()
            }
        };
        if let (Noise::HeavyTailed, Some(tail)) = (faults.noise, &faults.tail) {
            let u = crate::rng::uniform(crate::rng::splitmix64(key ^ 0x7A11));
            if u < tail.probability {
                f *= tail.slowdown;
            }
        }
    }
    if let Some(e) = &faults.episodes
        && crate::rng::in_episode(s.spec.seed ^ (worker << 20) ^ 0xE915, e.every, e.duration, now)
    {
        f *= e.slowdown;
    }
    f
}

/// A network with the scenario's sharing model: unequal luck, window ramp-up and queue order
/// (see [`Network`]).
pub(crate) fn sharing_network<T: Copy>(s: &Scenario) -> Network<T> {
    let mut net = Network::new();
    net.set_unfairness(s.unfairness(), s.spec.seed);
    let (ramp, ramp_share) = s.ramp();
    if ramp.0 > 0 && ramp_share < 1.0 {
        net.set_ramp(-ramp_share.ln(), ramp.0 as f64);
    }
    let (fifo, queue) = (s.fifo(), s.spec.network.queue);
    net.set_fifo(fifo.0 as f64, if queue.0 > 0 { queue.0 as f64 } else { f64::INFINITY });
    net
}

/// NIC capacity in bytes per ns after TCP/IP framing.
pub(crate) fn nic_bytes_per_ns(s: &Scenario) -> f64 {
    s.nic.bytes_per_sec() * s.goodput() / 1e9
}

/// Racks' uplinks (two-tier; none with one switch) for `hosts` hosts: up and down per rack,
/// each `hosts_per_rack` x NIC / oversubscription, recorded in `resources`.
pub(crate) fn add_racks<T: Copy>(
    s: &Scenario,
    net: &mut Network<T>,
    hosts: u32,
    resources: &mut Vec<(ResourceOwner, bool, usize)>,
) -> (Vec<usize>, Vec<usize>) {
    let n = &s.spec.network;
    let racks = if n.switch == SwitchKind::TwoTier { hosts.div_ceil(n.hosts_per_rack) } else { 0 };
    let uplink = f64::from(n.hosts_per_rack) * nic_bytes_per_ns(s) / n.oversubscription;
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for r in 0..racks {
        up.push(net.add_resource(uplink));
        resources.push((ResourceOwner::Rack(r), true, up[r as usize]));
        down.push(net.add_resource(uplink));
        resources.push((ResourceOwner::Rack(r), false, down[r as usize]));
    }
    (up, down)
}

/// What each recorded resource carried over the run.
pub(crate) fn resource_uses<T: Copy>(net: &Network<T>, resources: &[(ResourceOwner, bool, usize)]) -> Vec<ResourceUse> {
    resources
        .iter()
        .map(|&(owner, outbound, r)| ResourceUse {
            owner,
            outbound,
            bytes_per_host: net.carried(r),
            capacity: net.capacity(r),
        })
        .collect()
}

/// Network noise (`faults.network_noise`): the stretch of `worker`'s transfers in `step`,
/// log-normal with mean 1 and the given coefficient of variation (1 without noise).
pub(crate) fn network_noise(s: &Scenario, worker: u32, step: u64) -> f64 {
    let cv = s.spec.faults.network_noise;
    if cv <= 0.0 {
        return 1.0;
    }
    let key = s.spec.seed ^ 0x4E77_0000 ^ (u64::from(worker) << 32) ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let s2 = (1.0 + cv * cv).ln();
    (-s2 / 2.0 + s2.sqrt() * crate::rng::normal(key)).exp()
}

fn synchronous(m: Mode) -> bool {
    matches!(m, Mode::Sync | Mode::Backup)
}

impl<'a> Sim<'a> {
    pub(crate) fn new(
        s: &'a Scenario,
        t: ParameterServers,
        plan: &'a Plan,
        opts: &'a SimOptions,
    ) -> Result<Self, SimError> {
        let spec = &s.spec;
        let net_spec = &spec.network;
        // NIC capacity in bytes per ns after TCP/IP framing.
        let nic = s.nic.bytes_per_sec() * s.goodput() / 1e9;
        let layers = s.model.layers.len();
        let (fwd_ns, bwd_ns) = layer_times(s);
        let mut layer_parts = vec![Vec::new(); layers];
        for (i, p) in plan.placement.parts.iter().enumerate() {
            layer_parts[p.layer].push(i);
        }
        let mem_bw = s.ps_memory_bandwidth().bytes_per_sec() / 1e9;
        let apply_ns: Vec<u64> = plan
            .shards
            .iter()
            .flatten()
            .filter_map(|po| match po.op {
                Op::Apply { part, memory_bytes, .. } => Some((part, (memory_bytes.0 as f64 / mem_bw).ceil() as u64)),
                _ => None,
            })
            .fold(vec![0u64; plan.placement.parts.len()], |mut v, (p, ns)| {
                v[p] = ns;
                v
            });
        let local_agg = plan.worker.iter().any(|p| matches!(p.op, Op::LocalAggregate { .. }));
        let copies = if local_agg { 1 } else { plan.gpus_per_host };

        // Worker classes: key = (slowdown bits, rack, hosted shard); unique per worker when
        // jitter, asynchrony or co-location break symmetry.
        let w = t.workers;
        let stragglers = spec.faults.stragglers.as_ref();
        let slowdown = |i: u32| match stragglers {
            Some(st) if i >= w - st.count.min(w) => st.slowdown,
            _ => 1.0,
        };
        let two_tier = net_spec.switch == SwitchKind::TwoTier;
        let rack_of_host = |host_index: u32| if two_tier { host_index / net_spec.hosts_per_rack } else { 0 };
        let unfairness = s.unfairness();
        let (ramp, ramp_share) = s.ramp();
        let ramping = ramp.0 > 0 && ramp_share < 1.0;
        let fifo = s.fifo();
        // Unequal sharing tells identical workers apart: one class each.
        let per_worker = s.jitter() > 0.0
            || spec.faults.tail.is_some()
            || spec.faults.episodes.is_some()
            || unfairness > 0.0
            || ramping
            || fifo.0 > 0
            || spec.faults.network_noise > 0.0
            || !synchronous(t.mode)
            || opts.no_classes;
        let mut keys: BTreeMap<(u64, u32, Option<u32>, u32), Vec<u32>> = BTreeMap::new();
        for i in 0..w {
            let hosted = (t.ps_hosts == PsHosts::Colocated && i < t.ps).then_some(i);
            let unique = if per_worker || hosted.is_some() { i } else { u32::MAX };
            keys.entry((slowdown(i).to_bits(), rack_of_host(i), hosted, unique)).or_default().push(i);
        }
        let mut groups: Vec<Vec<u32>> = keys.into_values().collect();
        groups.sort_by_key(|g| g[0]);

        let mut net: Network<Tag> = sharing_network(s);
        let mut resources = Vec::new();
        let hosts_total = w + if t.ps_hosts == PsHosts::Dedicated { t.ps } else { 0 };
        let (rack_up, rack_down) = add_racks(s, &mut net, hosts_total, &mut resources);
        let mut classes: Vec<Class> = Vec::new();
        for g in &groups {
            let e = net.add_resource(nic);
            let i = net.add_resource(nic);
            resources.push((ResourceOwner::Worker(g[0]), true, e));
            resources.push((ResourceOwner::Worker(g[0]), false, i));
            classes.push(Class {
                workers: g.clone(),
                slowdown: slowdown(g[0]),
                jitter: s.jitter() > 0.0 || spec.faults.tail.is_some(),
                egress: e,
                ingress: i,
                pull_flow: vec![],
                push_flow: vec![],
                compute_flow: None,
            });
        }
        // Shared cores: one machine's cores, max-min shared by the workers' compute (each
        // worker process runs on at most one core at a time).
        let machine = s.shared_core_capacity().map(|cores| net.add_resource(cores));
        // Shared GPUs: the workers' compute time-shares them (the cores keep the network's CPU
        // work); else compute shares the cores.
        let compute_pool = s.shared_gpus().map(|gpus| net.add_resource(f64::from(gpus))).or(machine);
        if let Some(pool) = compute_pool {
            for class in &mut classes {
                let own = net.add_resource(1.0);
                let k = class.workers.len() as f64;
                let f = net.add_flow(vec![Use { resource: own, weight: 1.0 }, Use { resource: pool, weight: k }]);
                net.set_fair(f);
                class.compute_flow = Some(f);
            }
        }
        // Shard hosts: dedicated NICs, or the NIC of the worker class hosting them.
        let mut shard_nic: Vec<(usize, usize, u32, Option<usize>)> = Vec::new(); // (egress, ingress, rack, hosting class)
        for sh in 0..t.ps {
            match plan.shard_host(sh) {
                Host::Ps(p) => {
                    let e = net.add_resource(nic);
                    let i = net.add_resource(nic);
                    resources.push((ResourceOwner::Ps(p), true, e));
                    resources.push((ResourceOwner::Ps(p), false, i));
                    shard_nic.push((e, i, rack_of_host(w + p), None));
                }
                Host::Worker(h) => {
                    let c =
                        classes.iter().position(|c| c.workers == [h]).expect("a co-located shard's host is a class");
                    shard_nic.push((classes[c].egress, classes[c].ingress, rack_of_host(h), Some(c)));
                }
            }
        }
        // User-space copies (serialize, frame, decode, place) are CPU work that runs while
        // earlier bytes are on the wire: on a shared machine a load on its cores next to the
        // kernel's, else time a message holds its connection (`copy_factor`, extra bytes).
        let (copy_factor, cpu_per_byte) = match machine {
            Some(_) => (1.0, s.network_cpu_ns_per_byte() + s.copy_ns_per_byte()),
            _ => {
                let f = 1.0 + s.copy_ns_per_byte() * nic;
                (f, s.network_cpu_ns_per_byte() / f)
            }
        };
        for (ci, class) in classes.iter_mut().enumerate() {
            let k = class.workers.len() as f64;
            let rack = rack_of_host(class.workers[0]);
            for &(se, si, srack, host_class) in &shard_nic {
                if host_class == Some(ci) {
                    class.pull_flow.push(None);
                    class.push_flow.push(None);
                    continue;
                }
                let cross = two_tier && srack != rack;
                let mut pull = vec![Use { resource: se, weight: k }];
                let mut push = vec![Use { resource: class.egress, weight: 1.0 }];
                if cross {
                    pull.push(Use { resource: rack_up[srack as usize], weight: k });
                    pull.push(Use { resource: rack_down[rack as usize], weight: k });
                    push.push(Use { resource: rack_up[rack as usize], weight: k });
                    push.push(Use { resource: rack_down[srack as usize], weight: k });
                }
                pull.push(Use { resource: class.ingress, weight: 1.0 });
                push.push(Use { resource: si, weight: k });
                // Moving bytes costs CPU on a shared machine; the kernel does it first.
                let cpu = match machine {
                    Some(m) if cpu_per_byte > 0.0 => Some(Use { resource: m, weight: k * cpu_per_byte }),
                    _ => None,
                };
                pull.extend(cpu);
                push.extend(cpu);
                let (pf, uf) = (net.add_flow(pull), net.add_flow(push));
                // A host's connections share one luck: named by the NIC they leave by.
                net.set_sender(pf, se);
                net.set_sender(uf, class.egress);
                if cpu.is_some() {
                    net.set_priority(pf, NETWORK_PRIORITY);
                    net.set_priority(uf, NETWORK_PRIORITY);
                }
                class.pull_flow.push(Some(pf));
                class.push_flow.push(Some(uf));
            }
        }

        // The shards' dedicated NICs are the hubs every worker's connections meet at: timed by
        // their clocks, with the worker NICs that bind solved apart (exactly max-min; the
        // network declines when the structure does not allow it, e.g. racks or shared cores).
        let hubs: Vec<usize> = shard_nic.iter().filter(|n| n.3.is_none()).flat_map(|&(e, i, _, _)| [e, i]).collect();
        if !opts.exact_network {
            net.use_hubs(&hubs);
        }

        // Bytes each worker sends and receives per step (plan bytes that cross its NIC).
        let mut sent = vec![0u64; w as usize];
        let mut recv = vec![0u64; w as usize];
        for class in &classes {
            let mut up = 0;
            let mut down = 0;
            for po in &plan.worker {
                match po.op {
                    Op::Pull { part, bytes, copies }
                        if class.pull_flow[plan.placement.parts[part].shard as usize].is_some() =>
                    {
                        down += bytes.0 * u64::from(copies)
                    }
                    Op::Push { part, bytes, copies }
                        if class.push_flow[plan.placement.parts[part].shard as usize].is_some() =>
                    {
                        up += bytes.0 * u64::from(copies)
                    }
                    _ => {}
                }
            }
            for &wi in &class.workers {
                sent[wi as usize] = up;
                recv[wi as usize] = down;
            }
        }

        let state = classes
            .iter()
            .map(|_| ClassState {
                pulled_version: vec![0; plan.placement.parts.len()],
                release: synchronous(t.mode).then(|| Release::new(t.ps, 1)),
                jitter_factor: 1.0,
                ..ClassState::default()
            })
            .collect();
        let parts = plan.placement.parts.len();
        let inputs = t.workers - if t.mode == Mode::Backup { t.backup_workers } else { 0 };
        let shards = (0..t.ps)
            .map(|sh| {
                let mine: Vec<usize> = (0..parts).filter(|&p| plan.placement.parts[p].shard == sh).collect();
                // Pushes go in reverse part order: the shard's lowest part is its last.
                Shard {
                    apply_free: Time::ZERO,
                    aggregation: vec![Aggregation::new(inputs, 0); parts],
                    progress: ShardProgress::new(mine.len(), 0),
                    waiting: Vec::new(),
                    last_push: mine.first().copied(),
                    version: vec![0; parts],
                }
            })
            .collect();
        let bus = s.host_bus.bandwidth.bytes_per_sec() / 1e9;
        Ok(Sim {
            s,
            t,
            plan,
            opts,
            q: EventQueue::new(),
            net,
            classes,
            state,
            shards,
            layer_parts,
            fwd_ns,
            bwd_ns,
            apply_ns,
            bus_bytes_per_ns: bus,
            latency: net_spec.latency,
            overhead_bytes: s.message_overhead().0 as f64 * nic,
            copy_factor,
            copies,
            local_agg,
            records: Vec::new(),
            gpu_busy_ns: 0,
            staleness: BTreeMap::new(),
            trace: Vec::new(),
            resources,
            bytes_sent_per_step: sent,
            bytes_recv_per_step: recv,
            done_classes: 0,
            total_steps: spec.training.steps,
            started_worker_steps: 0,
            ops: Vec::new(),
            op_started: std::collections::HashMap::new(),
        })
    }

    /// This run as the workload file that SimGrid's engine replays
    /// (sim/tests/simgrid/ps_step.cpp): the same step, messages and compute, for the speed
    /// comparison and cross-check. The replay covers a synchronous step over dedicated shards
    /// on one switch, one GPU per host, fair sharing and no time-dependent noise; anything
    /// else is refused with the reason. Every worker is listed on its own.
    pub(crate) fn workload(&self) -> Result<String, String> {
        use std::fmt::Write;
        let s = self.s;
        let f = &s.spec.faults;
        let refuse = [
            (self.t.mode != Mode::Sync, "mode is not sync"),
            (self.t.ps_hosts != PsHosts::Dedicated, "shards are co-located with workers"),
            (self.copies != 1 || self.local_agg, "hosts have more than one GPU"),
            (s.spec.network.switch != SwitchKind::Single, "the network has racks"),
            (s.shared_core_capacity().is_some() || s.shared_gpus().is_some(), "workers share cores or GPUs"),
            (
                s.unfairness() > 0.0 || s.fifo().0 > 0 || (s.ramp().0.0 > 0 && s.ramp().1 < 1.0),
                "sharing is not fair max-min",
            ),
            (f.network_noise > 0.0 || f.episodes.is_some(), "noise depends on more than worker and step"),
            (self.classes.iter().any(|c| c.workers.len() != 1), "workers are grouped in classes"),
        ];
        if let Some((_, why)) = refuse.iter().find(|(bad, _)| *bad) {
            return Err(format!("the SimGrid replay does not model this scenario: {why}"));
        }
        let nic = self.classes.first().map_or(0.0, |c| self.net.capacity(c.egress)) * 1e9;
        let mut out = String::from("# topolab parameter-server workload, version 1\n");
        let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
        let _ = write!(
            out,
            "nic_bytes_per_s {nic}\nlatency_ns {}\noverhead_bytes {}\ncopy_factor {}\nrequest_bytes {REQUEST_BYTES}\n\
             overlap {}\nworkers {}\nshards {}\nsteps {}\nlayers {}\nfwd {}\nbwd {}\nparts {}\n",
            self.latency.0,
            self.overhead_bytes,
            self.copy_factor,
            u8::from(s.spec.training.overlap),
            self.t.workers,
            self.t.ps,
            self.total_steps,
            self.fwd_ns.len(),
            list(&self.fwd_ns),
            list(&self.bwd_ns),
            self.plan.placement.parts.len()
        );
        for (i, p) in self.plan.placement.parts.iter().enumerate() {
            let _ = writeln!(out, "part {} {} {} {}", p.layer, p.shard, p.bytes.0, self.apply_ns[i]);
        }
        out.push_str("factors\n");
        for c in 0..self.classes.len() {
            let row: Vec<String> =
                (0..self.total_steps).map(|k| self.jitter_factor(c, k, Time::ZERO).to_string()).collect();
            let _ = writeln!(out, "{}", row.join(" "));
        }
        Ok(out)
    }

    fn schedule_timers(&mut self, timers: Vec<Timer>) {
        for t in timers {
            self.q.schedule(t.at, Ev::Net(t));
        }
    }

    fn send(&mut self, flow: Option<usize>, bytes: f64, tag: Tag) {
        let now = self.q.now();
        match flow {
            Some(f) => {
                let bytes = bytes * self.network_factor(tag);
                let timers =
                    self.net.send(now, f, Message { bytes: bytes * self.copy_factor + self.overhead_bytes, tag });
                self.schedule_timers(timers);
            }
            // Same host: in memory, no NIC, no latency.
            None => self.q.schedule(now, Ev::Deliver(tag)),
        }
    }

    /// Records `op` of `step`, from `start` to `end`, for every worker of `class` (with
    /// `op_log`).
    #[allow(clippy::too_many_arguments)]
    fn log(&mut self, class: usize, step: u64, op: &'static str, index: usize, bytes: u64, start: Time, end: Time) {
        if !self.opts.op_log {
            return;
        }
        for &w in &self.classes[class].workers {
            self.ops.push(crate::SimOp {
                worker: w,
                step,
                op,
                index: index as u64,
                bytes,
                start_ns: start.0,
                end_ns: end.0,
            });
        }
    }

    /// With `op_log`: a transfer of `class` started now (its end is logged on arrival).
    fn transfer_started(&mut self, class: usize, op: &'static str, part: usize, step: u64) {
        if self.opts.op_log {
            let now = self.q.now();
            self.op_started.insert((class, op, part, step), now);
        }
    }

    /// With `op_log`: the transfer of `class` ended now.
    fn transfer_done(&mut self, class: usize, op: &'static str, part: usize, step: u64, bytes: u64) {
        if self.opts.op_log {
            let now = self.q.now();
            let start = self.op_started.remove(&(class, op, part, step)).expect("a transfer is logged when it starts");
            self.log(class, step, op, part, bytes, start, now);
        }
    }

    fn tracing(&self, step: u64) -> bool {
        step < u64::from(self.s.spec.training.trace_steps)
    }

    /// Runs to the end; returns the outcome.
    pub(crate) fn run(mut self) -> Result<Outcome, SimError> {
        for c in 0..self.classes.len() {
            self.started_worker_steps += self.classes[c].workers.len() as u64;
            self.q.schedule(Time::ZERO, Ev::StartStep { class: c });
        }
        let mut last_progress = Time::ZERO;
        while let Some((now, ev)) = crate::next_event(&mut self.q, self.opts)? {
            // Transfers an event starts settle the network once, when it is handled.
            self.net.hold();
            match ev {
                Ev::Net(t) => {
                    let (msg, timers) = self.net.on_timer(now, t);
                    self.schedule_timers(timers);
                    match msg {
                        Some((_, Message { tag: Tag::Compute { class }, .. })) => self.compute_done(class),
                        Some((flow, msg)) => {
                            if self.opts.trace && self.trace_message(&msg.tag) {
                                self.trace_transfer(flow, &msg.tag, now);
                            }
                            let at = now + self.latency;
                            self.q.schedule(at, Ev::Deliver(msg.tag));
                        }
                        None => {}
                    }
                }
                Ev::Deliver(tag) => self.deliver(tag),
                Ev::ComputeDone { class } => self.compute_done(class),
                Ev::BusDone { class, part, broadcast, step } => {
                    if broadcast {
                        self.part_arrived(class, part, step);
                    } else {
                        self.push_part(class, part, step);
                    }
                }
                Ev::ApplyDone { shard, part, step, class } => self.apply_done(shard, part, step, class),
                Ev::StartStep { class } => self.start_step(class),
            }
            let timers = self.net.release(now);
            self.schedule_timers(timers);
            last_progress = now;
            if self.done_classes == self.classes.len() {
                break;
            }
        }
        if self.done_classes < self.classes.len() {
            return Err(self.stuck(last_progress));
        }
        let makespan = self.records.iter().map(|r| Time(r.end_ns)).max().unwrap_or(Time::ZERO);
        self.records.sort_by_key(|r| (r.step, r.worker));
        let resources = resource_uses(&self.net, &self.resources);
        Ok(Outcome {
            steps: self.records,
            makespan,
            events: self.q.popped(),
            resources,
            gpu_busy_ns: self.gpu_busy_ns,
            staleness: self.staleness,
            trace: self.trace,
            classes: self.classes.len(),
            ops: {
                let mut ops = self.ops;
                ops.sort();
                ops
            },
            steady_from: None,
        })
    }

    /// Says which op a stuck run waits for.
    fn stuck(&self, at: Time) -> SimError {
        for (ci, st) in self.state.iter().enumerate() {
            if st.finished {
                continue;
            }
            let w = self.classes[ci].workers[0];
            let what = if !st.in_backward && st.next_forward < self.s.model.layers.len() && !st.computing {
                let layer = &self.s.model.layers[st.next_forward];
                format!(
                    "forward of layer `{}` waits for {} variable part(s) to arrive",
                    layer.name, st.missing[st.next_forward]
                )
            } else if st.pushes_in_flight > 0 {
                format!("{} gradient push(es) never arrived", st.pushes_in_flight)
            } else if st.applies_in_flight > 0 {
                format!("{} apply(ies) never finished", st.applies_in_flight)
            } else {
                "the barrier of the step was never released".to_string()
            };
            return SimError::Stuck { at, worker: w, step: st.step, what };
        }
        SimError::Stuck { at, worker: 0, step: 0, what: "no event left".into() }
    }

    /// Network noise (`faults.network_noise`): the stretch of a pull or push of a worker in its
    /// current step, log-normal with mean 1 and the given coefficient of variation, one draw
    /// per host and step (every transfer of that host in that step shares it: the host's
    /// link is slow for a while), independent of event order.
    fn network_factor(&self, tag: Tag) -> f64 {
        let cv = self.s.spec.faults.network_noise;
        let class = match tag {
            Tag::Pull { class, .. } | Tag::Push { class, .. } if cv > 0.0 => class,
            _ => return 1.0,
        };
        network_noise(self.s, self.classes[class].workers[0], self.state[class].step)
    }

    /// The compute multiplier of `class`'s step `step`, starting at `now`: its straggler
    /// slowdown, its noise (per seed, worker and step, independent of event order), and a
    /// slow-node episode if one is under way on its host.
    fn jitter_factor(&self, class: usize, step: u64, now: Time) -> f64 {
        let c = &self.classes[class];
        compute_factor(self.s, c.workers[0], c.slowdown, c.jitter, step, now)
    }

    fn start_step(&mut self, class: usize) {
        let now = self.q.now();
        let parts_by_layer: Vec<u32> = self.layer_parts.iter().map(|p| p.len() as u32).collect();
        let factor = self.jitter_factor(class, self.state[class].step, now);
        {
            let st = &mut self.state[class];
            st.step_start = now;
            st.missing = parts_by_layer;
            st.next_forward = 0;
            st.next_backward = 0;
            st.in_backward = false;
            st.computing = false;
            st.compute_ns = 0;
            st.backward_done = false;
            st.own_done_at = None;
            st.pushes_in_flight = 0;
            st.applies_in_flight = 0;
            st.jitter_factor = factor;
        }
        if synchronous(self.t.mode) {
            // Released into this step (or the first): fetch every shard's values.
            let step = self.state[class].step;
            for shard in 0..self.shards.len() {
                let flow = self.classes[class].push_flow[shard];
                self.send(flow, REQUEST_BYTES, Tag::Fetch { class, shard, step });
            }
            return;
        }
        // Async: pull every part in creation order.
        for (i, p) in self.plan.placement.parts.iter().enumerate() {
            let flow = self.classes[class].pull_flow[p.shard as usize];
            let bytes = p.bytes.0 as f64 * f64::from(self.copies);
            if self.t.mode == Mode::Async || self.t.mode == Mode::StaleSynchronous {
                self.state[class].pulled_version[i] = self.shards[p.shard as usize].version[i];
            }
            let step = self.state[class].step;
            self.transfer_started(class, "pull", i, step);
            self.send(flow, bytes, Tag::Pull { class, part: i, step });
        }
        self.try_forward(class);
    }

    /// Sends class `class`'s request for step `step` to shard `shard` (on its push connection,
    /// after its pushes).
    fn request(&mut self, class: usize, shard: usize, step: u64) {
        let flow = self.classes[class].push_flow[shard];
        self.send(flow, REQUEST_BYTES, Tag::Request { class, shard, step });
    }

    /// Shard `shard` answers class `class`'s request for step `step` with its Ready.
    fn answer(&mut self, class: usize, shard: usize, step: u64) {
        let flow = self.classes[class].pull_flow[shard];
        self.send(flow, REQUEST_BYTES, Tag::Ready { class, shard, step });
    }

    /// Shard `shard` sends class `class` the values of its parts for `step`, in part order.
    fn fetched(&mut self, class: usize, shard: usize, step: u64) {
        let flow = self.classes[class].pull_flow[shard];
        for i in 0..self.plan.placement.parts.len() {
            let p = self.plan.placement.parts[i];
            if p.shard as usize == shard {
                let bytes = p.bytes.0 as f64 * f64::from(self.copies);
                self.transfer_started(class, "pull", i, step);
                self.send(flow, bytes, Tag::Pull { class, part: i, step });
            }
        }
    }

    fn deliver(&mut self, tag: Tag) {
        match tag {
            Tag::Pull { class, part, step } => {
                let bytes = self.plan.placement.parts[part].bytes.0 * u64::from(self.copies);
                self.transfer_done(class, "pull", part, step, bytes);
                if self.local_agg {
                    let bytes = self.plan.placement.parts[part].bytes.0 as f64;
                    let g = f64::from(self.plan.gpus_per_host - 1);
                    self.bus_op(class, part, bytes * g, true, step);
                } else {
                    self.part_arrived(class, part, step);
                }
            }
            Tag::Push { class, part, step } => self.push_arrived(class, part, step),
            Tag::Compute { class } => self.compute_done(class),
            Tag::Request { class, shard, step } => {
                if self.shards[shard].progress.answers(step) {
                    self.answer(class, shard, step);
                } else {
                    self.shards[shard].waiting.push((class, step));
                }
            }
            Tag::Fetch { class, shard, step } => {
                debug_assert!(self.shards[shard].progress.answers(step), "a released worker's shards are ready");
                self.fetched(class, shard, step);
            }
            Tag::Ready { class, step, .. } => {
                let st = &mut self.state[class];
                if st.finished {
                    return;
                }
                let release = st.release.as_mut().expect("only synchronous modes exchange Readys");
                if release.ready(step) {
                    self.end_step(class);
                }
            }
        }
    }

    fn bus_op(&mut self, class: usize, part: usize, bytes: f64, broadcast: bool, step: u64) {
        let now = self.q.now();
        let dur = Time((bytes / self.bus_bytes_per_ns).ceil() as u64);
        let st = &mut self.state[class];
        let start = st.bus_free.max(now);
        st.bus_free = start + dur;
        self.q.schedule(start + dur, Ev::BusDone { class, part, broadcast, step });
    }

    fn part_arrived(&mut self, class: usize, part: usize, step: u64) {
        let layer = self.plan.placement.parts[part].layer;
        let st = &mut self.state[class];
        debug_assert_eq!(step, st.step, "values arrive in the step that fetched them");
        st.missing[layer] -= 1;
        self.try_forward(class);
    }

    /// Starts the next forward chain if the GPU is idle and the next layer's variables are here.
    fn try_forward(&mut self, class: usize) {
        let layers = self.s.model.layers.len();
        let st = &self.state[class];
        if st.computing || st.in_backward || st.next_forward >= layers || st.missing[st.next_forward] > 0 {
            return;
        }
        let mut end = st.next_forward;
        let mut ns = 0u64;
        while end < layers && st.missing[end] == 0 {
            ns += self.fwd_ns[end];
            end += 1;
        }
        let from = st.next_forward;
        self.run_compute(class, ns, from, end, "forward");
        self.state[class].next_forward = end;
    }

    fn run_compute(&mut self, class: usize, ns: u64, from: usize, to: usize, pass: &str) {
        let now = self.q.now();
        let factor = self.state[class].jitter_factor;
        if self.opts.op_log {
            // Each layer of the chain in turn, at the chain's pace.
            let step = self.state[class].step;
            let (layers, times, op): (Vec<usize>, &[u64], _) = if pass == "forward" {
                ((from..to).collect(), &self.fwd_ns, "compute-forward")
            } else {
                ((to..from).rev().collect(), &self.bwd_ns, "compute-backward")
            };
            let times = times.to_vec();
            let mut done = 0u64;
            for l in layers {
                let start = now + Time((done as f64 * factor).round() as u64);
                done += times[l];
                let end = now + Time((done as f64 * factor).round() as u64);
                self.log(class, step, op, l, 0, start, end);
            }
        }
        let ns = (ns as f64 * factor).round() as u64;
        let st = &mut self.state[class];
        st.computing = true;
        st.compute_started = now;
        if self.classes[class].compute_flow.is_none() {
            st.compute_ns += ns;
        }
        let step = st.step;
        self.gpu_busy_ns += u128::from(ns) * self.classes[class].workers.len() as u128;
        if self.opts.trace && self.tracing(step) {
            let names = &self.s.model.layers;
            let (a, b) = if pass == "forward" { (from, to - 1) } else { (to, from - 1) };
            let name = if a == b {
                format!("{pass} {}", names[a].name)
            } else {
                format!("{pass} {}..{}", names[a].name, names[b].name)
            };
            self.trace.push(Span {
                pid: format!("worker{}", self.classes[class].workers[0]),
                tid: "gpu",
                name,
                start: now,
                end: now + Time(ns),
            });
        }
        match self.classes[class].compute_flow {
            Some(flow) => {
                // Core-nanoseconds through the shared cores; done when the flow delivers them.
                let timers = self.net.send(now, flow, Message { bytes: ns as f64, tag: Tag::Compute { class } });
                self.schedule_timers(timers);
            }
            None => self.q.schedule(now + Time(ns), Ev::ComputeDone { class }),
        }
    }

    fn compute_done(&mut self, class: usize) {
        let layers = self.s.model.layers.len();
        self.state[class].computing = false;
        if self.classes[class].compute_flow.is_some() {
            // Shared cores: the compute took as long as the cores gave it.
            let now = self.q.now();
            let st = &mut self.state[class];
            st.compute_ns += now.0 - st.compute_started.0;
        }
        if !self.state[class].in_backward {
            if self.state[class].next_forward < layers {
                self.try_forward(class);
                return;
            }
            // Forward done: start backward from the last layer.
            self.state[class].in_backward = true;
            self.state[class].next_backward = layers;
            self.next_backward_chain(class);
            return;
        }
        // A backward chain ended at layer `next_backward`: push its gradients.
        let overlap = self.s.spec.training.overlap;
        let nb = self.state[class].next_backward;
        let finished_layers: Vec<usize> = if overlap { vec![nb] } else { (0..layers).rev().collect() };
        let step = self.state[class].step;
        for l in finished_layers {
            for i in (0..self.layer_parts[l].len()).rev() {
                let part = self.layer_parts[l][i];
                self.state[class].pushes_in_flight += 1;
                if self.local_agg {
                    let bytes = self.plan.placement.parts[part].bytes.0 as f64;
                    let g = f64::from(self.plan.gpus_per_host - 1);
                    self.bus_op(class, part, bytes * g, false, step);
                } else {
                    self.push_part(class, part, step);
                }
            }
        }
        if nb == 0 || !overlap {
            self.state[class].backward_done = true;
            self.state[class].next_backward = 0;
            if synchronous(self.t.mode) {
                // Shards that hold no part: asked when backward ends.
                for shard in 0..self.shards.len() {
                    if self.shards[shard].last_push.is_none() {
                        self.request(class, shard, step + 1);
                    }
                }
            }
            self.maybe_own_done(class);
        } else {
            self.next_backward_chain(class);
        }
    }

    /// Runs backward from `next_backward - 1` down to the next layer that has variables (or
    /// to layer 0), as one compute event; without overlap, the whole backward pass.
    fn next_backward_chain(&mut self, class: usize) {
        let overlap = self.s.spec.training.overlap;
        let top = self.state[class].next_backward;
        let mut l = top;
        let mut ns = 0;
        loop {
            l -= 1;
            ns += self.bwd_ns[l];
            if l == 0 || (overlap && !self.layer_parts[l].is_empty()) {
                break;
            }
        }
        self.state[class].next_backward = l;
        self.run_compute(class, ns, top, l, "backward");
    }

    fn push_part(&mut self, class: usize, part: usize, step: u64) {
        let p = self.plan.placement.parts[part];
        self.transfer_started(class, "push", part, step);
        let flow = self.classes[class].push_flow[p.shard as usize];
        let bytes = p.bytes.0 as f64 * f64::from(self.copies);
        self.send(flow, bytes, Tag::Push { class, part, step });
        let shard = p.shard as usize;
        if synchronous(self.t.mode) && self.shards[shard].last_push == Some(part) {
            // The request for the next step follows the shard's last push.
            self.request(class, shard, step + 1);
        }
    }

    fn push_arrived(&mut self, class: usize, part: usize, step: u64) {
        let shard = self.plan.placement.parts[part].shard as usize;
        let mode = self.t.mode;
        let bytes = self.plan.placement.parts[part].bytes.0 * u64::from(self.copies);
        self.transfer_done(class, "push", part, step, bytes);
        {
            let st = &mut self.state[class];
            if st.step == step {
                st.pushes_in_flight -= 1;
            }
        }
        if synchronous(mode) {
            let k = self.classes[class].workers.len() as u32;
            if self.shards[shard].aggregation[part].push(step, k) == Pushed::Complete {
                self.enqueue_apply(shard, part, step, usize::MAX);
            }
            self.maybe_own_done(class);
        } else {
            // Async: apply every gradient on arrival, in arrival order.
            self.state[class].applies_in_flight += 1;
            let staleness = self.shards[shard].version[part] - self.state[class].pulled_version[part];
            *self.staleness.entry(staleness).or_default() += 1;
            self.shards[shard].version[part] += 1;
            self.enqueue_apply(shard, part, step, class);
        }
    }

    fn enqueue_apply(&mut self, shard: usize, part: usize, step: u64, class: usize) {
        let now = self.q.now();
        let dur = Time(self.apply_ns[part]);
        let sh = &mut self.shards[shard];
        let start = sh.apply_free.max(now);
        sh.apply_free = start + dur;
        if self.opts.trace && self.tracing(step) {
            self.trace.push(Span {
                pid: format!("ps{shard}"),
                tid: "apply",
                name: format!("apply part {part}"),
                start,
                end: start + dur,
            });
        }
        self.q.schedule(start + dur, Ev::ApplyDone { shard, part, step, class });
    }

    fn apply_done(&mut self, shard: usize, _part: usize, _step: u64, class: usize) {
        if synchronous(self.t.mode) {
            if let Some(ready) = self.shards[shard].progress.applied() {
                // Ready for the next step: answer the requests that wait for it.
                let waiting = std::mem::take(&mut self.shards[shard].waiting);
                let (now, later): (Vec<_>, Vec<_>) = waiting.into_iter().partition(|&(_, st)| st <= ready);
                self.shards[shard].waiting = later;
                for (c, st) in now {
                    self.answer(c, shard, st);
                }
            }
        } else {
            let st = &mut self.state[class];
            st.applies_in_flight -= 1;
            self.maybe_own_done(class);
        }
    }

    /// Sync, backup: the step every shard is ready for (training ends when it reaches the
    /// step count).
    fn global_step(&self) -> u64 {
        self.shards.iter().map(|sh| sh.progress.ready_for()).min().unwrap_or(u64::MAX)
    }

    /// The class has done its own part of the step (backward done, pushes delivered, and in
    /// async modes its applies done).
    fn maybe_own_done(&mut self, class: usize) {
        let now = self.q.now();
        let st = &mut self.state[class];
        if !st.backward_done || st.pushes_in_flight > 0 || st.applies_in_flight > 0 || st.own_done_at.is_some() {
            return;
        }
        st.own_done_at = Some(now);
        if !synchronous(self.t.mode) {
            // Sync steps end at the release (every shard's Ready).
            self.end_step(class);
        }
    }

    fn end_step(&mut self, class: usize) {
        let now = self.q.now();
        let (step, start, compute, own) = {
            let st = &self.state[class];
            (st.step, st.step_start, st.compute_ns, st.own_done_at.expect("a step ends after the worker's own part"))
        };
        let wait = now.0 - own.0;
        let dur = now.0 - start.0;
        let comm = dur.saturating_sub(compute).saturating_sub(wait);
        let hash = &self.s.hash;
        for &wi in &self.classes[class].workers {
            self.records.push(StepRecord {
                run: "sim".into(),
                worker: wi,
                step,
                start_ns: start.0,
                end_ns: now.0,
                compute_ns: compute,
                comm_ns: comm,
                wait_ns: wait,
                bytes_sent: self.bytes_sent_per_step[wi as usize],
                bytes_received: self.bytes_recv_per_step[wi as usize],
                scenario_hash: hash.clone(),
                seed: self.s.spec.seed,
                version: VERSION.into(),
            });
        }
        let mode = self.t.mode;
        let global_done = synchronous(mode) && self.global_step() >= self.total_steps;
        let st = &mut self.state[class];
        st.step += 1;
        // Async: the run is `steps` updates per worker on average, shared out by speed; every
        // other mode runs `steps` steps per worker.
        let budget = self.total_steps * u64::from(self.t.workers);
        let own_done =
            if mode == Mode::Async { self.started_worker_steps >= budget } else { st.step >= self.total_steps };
        if own_done || global_done {
            st.finished = true;
            self.done_classes += 1;
            if mode == Mode::Backup && global_done {
                // Training is over at the global step count: abandon stragglers mid-step
                // (classes done with the last step still get their token and end normally).
                let last = self.total_steps - 1;
                for (c, other) in self.state.iter_mut().enumerate() {
                    let awaiting_token = other.step == last && other.own_done_at.is_some();
                    if c != class && !other.finished && !awaiting_token {
                        other.finished = true;
                        self.done_classes += 1;
                    }
                }
            }
            self.unblock_ssp();
            return;
        }
        if mode == Mode::StaleSynchronous {
            self.state[class].blocked_ssp = true;
            self.unblock_ssp();
        } else {
            if mode == Mode::Async {
                self.started_worker_steps += self.classes[class].workers.len() as u64;
            }
            self.q.schedule(now, Ev::StartStep { class });
        }
    }

    /// Stale-synchronous: a worker may start step k while k - (slowest step) <= staleness.
    fn unblock_ssp(&mut self) {
        if self.t.mode != Mode::StaleSynchronous {
            return;
        }
        let slowest = self.state.iter().filter(|s| !s.finished).map(|s| s.step).min().unwrap_or(u64::MAX);
        let bound = u64::from(self.t.staleness);
        let now = self.q.now();
        for c in 0..self.state.len() {
            let st = &mut self.state[c];
            if st.blocked_ssp && !st.finished && st.step <= slowest.saturating_add(bound) {
                st.blocked_ssp = false;
                self.q.schedule(now, Ev::StartStep { class: c });
            }
        }
    }

    fn trace_message(&self, tag: &Tag) -> bool {
        match *tag {
            Tag::Pull { step, .. } | Tag::Push { step, .. } => self.tracing(step),
            Tag::Ready { step, .. } => self.tracing(step.saturating_sub(1)),
            Tag::Compute { class } => self.tracing(self.state[class].step),
            Tag::Request { .. } | Tag::Fetch { .. } => false,
        }
    }

    fn trace_transfer(&mut self, flow: usize, tag: &Tag, now: Time) {
        let start = self.net.head_started(flow);
        let (pid, tid, name) = match *tag {
            Tag::Pull { class, part, .. } => {
                (format!("worker{}", self.classes[class].workers[0]), "nic-in", format!("pull {}", self.var_name(part)))
            }
            Tag::Push { class, part, .. } => (
                format!("worker{}", self.classes[class].workers[0]),
                "nic-out",
                format!("push {}", self.var_name(part)),
            ),
            Tag::Ready { class, shard, step } => (
                format!("worker{}", self.classes[class].workers[0]),
                "nic-in",
                format!("ps{shard} ready for step {step}"),
            ),
            Tag::Request { class, shard, step } | Tag::Fetch { class, shard, step } => (
                format!("worker{}", self.classes[class].workers[0]),
                "nic-out",
                format!("request step {step} from ps{shard}"),
            ),
            Tag::Compute { class } => (
                format!("worker{}", self.classes[class].workers[0]),
                "gpu",
                if self.s.shared_gpus().is_some() {
                    "compute (shared GPU)".into()
                } else {
                    "compute (shared cores)".into()
                },
            ),
        };
        self.trace.push(Span { pid, tid, name, start, end: now });
    }

    fn var_name(&self, part: usize) -> String {
        let p = self.plan.placement.parts[part];
        let v = self.s.model.variables().nth(p.var).map(|v| v.name.clone()).unwrap_or_default();
        if p.parts > 1 { format!("{v} [part {}/{}]", p.part + 1, p.parts) } else { v }
    }
}
