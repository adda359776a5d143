//! All-reduce training: executes the collective step of [`topolab_core::collective`] on the
//! engine and the flow-level network.
//!
//! **Ranks.** One rank per GPU, ordered by host, so that a host's GPUs are neighbours on the
//! ring (as NCCL orders a flat ring): the hop between two GPUs of one host crosses the host
//! bus, the hop from a host's last GPU to the next host's first crosses both NICs (and the
//! racks' uplinks when they are in different racks). Every rank has one connection to the
//! next rank; its messages queue inside it in order.
//!
//! **A step, per rank:** forward, then backward layer by layer at the GPU's rate (times the
//! host's straggler and noise factor for the step); a layer's gradients are ready when its
//! backward ends (all at the end of backward without `training.overlap`).
//!
//! **Fusion** follows [`topolab_core::collective::next_bucket`]: one coordinator, as Horovod's
//! negotiation, hands the gradients that are ready on every rank to the collective as one
//! bucket, at a tick of the fusion cycle, one bucket at a time: the next cycle starts a cycle
//! after the previous one or when every rank has finished its bucket, whichever is later.
//!
//! **The ring:** message `m` of a rank (bucket `m / R`, round `m % R`, `R` rounds per bucket) is
//! sent once its bucket is handed over and the rank has received `m` messages: for round 0
//! that is every message of the buckets before, for a later round the previous round's chunk,
//! which it reduces and passes on. When every bucket of the step is reduced and backward is
//! done the rank applies the summed gradients to its copy (memory-bound, at the GPU's memory
//! bandwidth) and starts the next step.
//!
//! **Negotiation** goes over the network too: a rank's report that a gradient is ready reaches
//! the coordinator (rank 0) a latency and a message's overhead later (from another host), and
//! a bucket starts when its order has reached the ranks, as Horovod's (and the runtime's)
//! control messages do. A tick waits for the last report it needs.
//!
//! Chunks cross the network like the parameter-server messages do: at max-min fair rates
//! (with the scenario's unfairness, drawn per sending host, ramp-up and queue order), plus the
//! network latency and the per-message overhead on each NIC hop. Between hosts, the sender
//! encodes a chunk before it leaves and the receiver decodes it and adds it into place once it
//! has arrived whole (the profile's `encode_ns_per_byte` and `decode_ns_per_byte`), one message
//! at a time on the rank's copy flow: a ring's next round waits for both, a tree's next chunk
//! is on the wire meanwhile. The kernel's share of the copies moves with the bytes.

use std::ops::Range;

use topolab_core::collective::{LINKS, Schedule, backward_gradients, launch_time, next_bucket};
use topolab_core::records::{StepRecord, VERSION};
use topolab_core::scenario::{AllReduce, Scenario, SwitchKind};
use topolab_core::units::{Bytes, Time};

use crate::engine::EventQueue;
use crate::maxmin::Use;
use crate::network::{Message, Network, Timer};
use crate::steady::{Period, Steady};
use crate::training::{
    NETWORK_PRIORITY, Outcome, ResourceOwner, Span, add_racks, compute_factor, layer_times, network_noise,
    nic_bytes_per_ns, resource_uses, sharing_network,
};
use crate::{SimError, SimOptions};

/// What a flow's message carries.
#[derive(Debug, Clone, Copy)]
enum Tag {
    /// A chunk from rank `from` over its link `slot`, arriving on the next rank's `in_slot`;
    /// the receiver decodes it for `decode` core-ns once it has arrived whole.
    Chunk { from: u32, slot: usize, in_slot: usize, decode: u64 },
    /// Rank `from` encoding that chunk (core-ns on its copy flow) before it goes onto the
    /// wire as `bytes`.
    Encode { from: u32, slot: usize, in_slot: usize, bytes: f64, decode: u64 },
    /// The receiver decoding that chunk: it is delivered when this ends.
    Decode { from: u32, slot: usize, in_slot: usize },
    /// Shared cores: core-nanoseconds of the rank's current compute item (a layer's forward
    /// or backward, or the update).
    Compute { rank: u32 },
}

#[derive(Debug, Clone, Copy)]
enum Ev {
    Net(Timer),
    /// A chunk from rank `from` has crossed the network (wire and latency): the receiver
    /// decodes it for `decode` core-ns, then it is delivered.
    Arrive {
        from: u32,
        slot: usize,
        in_slot: usize,
        decode: u64,
    },
    /// A message from rank `from` over its link `slot` reaches the rank at its other end, on
    /// that rank's link `in_slot`.
    Deliver {
        from: u32,
        slot: usize,
        in_slot: usize,
    },
    /// The coordinator's cycle: the next bucket is handed to the collective.
    Tick,
    /// The coordinator's order of the latest bucket has reached the ranks.
    Order,
    BackwardDone {
        rank: u32,
    },
    ApplyDone {
        rank: u32,
    },
    /// Lock-step ring: the rank has sent and received every round of its current bucket.
    RingDone {
        rank: u32,
    },
    StartStep {
        rank: u32,
    },
}

/// Most message streams a rank has in any schedule.
const STREAMS: usize = 4;

#[derive(Debug, Clone, Default)]
struct Rank {
    host: u32,
    /// Per link (to the next rank on the ring or host; to the next host): the connection
    /// and whether it crosses NICs (latency, overhead).
    links: [Option<(usize, bool)>; LINKS],
    /// Current step, and whether it has started (forward or later).
    step: u64,
    in_step: bool,
    step_start: Time,
    /// Forward time and the compute factor of the step.
    fwd: u64,
    factor: f64,
    compute_ns: u64,
    backward_done: bool,
    applying: bool,
    /// Per stream: the bucket it is sending and the messages of it sent so far.
    stream_bucket: [u64; STREAMS],
    sent: [u64; STREAMS],
    /// Per incoming link: messages received since the run began, and those of the buckets
    /// finished here; buckets finished here.
    received: [u64; LINKS],
    base: [u64; LINKS],
    completed: u64,
    /// Buckets this rank has begun sending.
    begun: u64,
    /// Lock-step ring: a bucket's rounds are timed at once (see [`Sim::ring_at_once`]).
    in_ring: bool,
    /// When the bucket being reduced started here (its first send).
    bucket_started: Time,
    finished: bool,
    /// Shared cores: the flow that carries the rank's compute, the compute item in progress
    /// (forward layers in order, then backward layers in reverse) and when it began, when
    /// forward ended, and when each gradient (in backward order) became ready this step.
    compute_flow: Option<usize>,
    /// The flow that does the rank's encoding and decoding, one message at a time (the
    /// process's task that runs the collective), when copies cost anything.
    copy_flow: Option<usize>,
    item: usize,
    item_start: Time,
    fwd_end: Time,
    ready: Vec<Time>,
}

struct Sim<'a> {
    s: &'a Scenario,
    /// The topology.
    t: AllReduce,
    opts: &'a SimOptions,
    q: EventQueue<Ev>,
    /// Messages carry their sender and link.
    net: Network<Tag>,
    sched: Schedule,
    gpus: u32,
    ranks: Vec<Rank>,
    /// Gradients in backward order (layer, bytes), and the backward time from its start until
    /// each is ready.
    grads: Vec<(usize, u64)>,
    ready_ns: Vec<u64>,
    fwd_total: u64,
    bwd_total: u64,
    apply_ns: u64,
    latency: Time,
    /// How long a control message (a rank's report, the coordinator's order) takes between
    /// hosts: a latency and a message's overhead (0 on one host).
    notice: Time,
    overhead_bytes: f64,
    /// User-space copies a message between hosts waits for, ns per payload byte: the
    /// sender's before it leaves, the receiver's once it has arrived whole.
    encode_ns: f64,
    decode_ns: f64,
    /// The coordinator: the step whose gradients it is bucketing and the next gradient; the
    /// buckets handed over so far (bytes) and, per step, the buckets up to its last; whether a
    /// bucket is being reduced (ranks done with it) or a tick is scheduled; when the next cycle
    /// may start; per step, when the slowest rank ended backward.
    c_step: u64,
    c_next: usize,
    buckets: Vec<u64>,
    /// Per bucket, when its order has reached the ranks (no rank sends of it before).
    ordered: Vec<Time>,
    step_buckets: Vec<Range<u64>>,
    in_flight: Option<u32>,
    tick_pending: bool,
    earliest: Time,
    slowest_backward: Vec<Time>,
    records: Vec<StepRecord>,
    gpu_busy_ns: u128,
    trace: Vec<Span>,
    resources: Vec<(ResourceOwner, bool, usize)>,
    done: usize,
    /// Per step: the NIC bytes each host sent and received (computed once per step).
    step_bytes: std::collections::BTreeMap<u64, Vec<(u64, u64)>>,
    /// Lock-step ring: its rounds timed at once, and the wire bytes they moved (on host 0's
    /// NIC, both ways, added to what the network carried).
    ring_at_once: Option<f64>,
    ring_bytes: f64,
    /// Per-layer forward and backward times (the op log's compute ops), and the op log.
    fwd_ns: Vec<u64>,
    bwd_ns: Vec<u64>,
    ops: Vec<crate::SimOp>,
    /// Deterministic runs: the watch for a period (see [`crate::steady`]), how many hosts'
    /// records of each step are in, and the period once found (the run stops there).
    steady: Option<Steady>,
    ended: Vec<u32>,
    period: Option<Period>,
}

/// Simulates an all-reduce scenario.
pub(crate) fn run(s: &Scenario, t: AllReduce, opts: &SimOptions) -> Result<Outcome, SimError> {
    Sim::new(s, t, opts).run()
}

impl<'a> Sim<'a> {
    fn new(s: &'a Scenario, t: AllReduce, opts: &'a SimOptions) -> Self {
        let spec = &s.spec;
        let net_spec = &spec.network;
        let nic = nic_bytes_per_ns(s);
        let hosts = t.workers;
        let gpus = spec.hardware.gpus_per_host;
        let sched = Schedule::of(t.algorithm, hosts, gpus);

        let mut net: Network<Tag> = sharing_network(s);
        let mut resources = Vec::new();
        let two_tier = net_spec.switch == SwitchKind::TwoTier;
        let rack_of = |h: u32| if two_tier { h / net_spec.hosts_per_rack } else { 0 };
        let (up, down) = add_racks(s, &mut net, hosts, &mut resources);
        // User-space copies: the sender encodes a message before it leaves and the receiver
        // decodes it and adds it into place once it has arrived whole, so those copies delay
        // the message without holding the wire (a ring's next round, which needs this one,
        // waits for all of them; a tree's next chunk goes on the wire meanwhile). The rest of
        // the copies (the kernel's, into and out of the socket) move with the bytes.
        let (encode_ns, decode_ns) = s.serial_copy_ns_per_byte();
        // Shared cores: one machine's cores, max-min shared by the ranks' compute and copies
        // (each on at most one core at a time) and, first, by the CPU that moving bytes costs
        // in the kernel (its packet work and its copies into and out of the socket), per wire
        // byte.
        let machine = s.shared_core_capacity().map(|cores| net.add_resource(cores));
        let cpu_per_byte = s.network_cpu_ns_per_byte() + (s.copy_ns_per_byte() - encode_ns - decode_ns).max(0.0);
        // A thread of a rank's process: one core of its own at most, and the machine's cores
        // when they are shared.
        let on_one_core = |net: &mut Network<Tag>| {
            let own = net.add_resource(1.0);
            let mut path = vec![Use { resource: own, weight: 1.0 }];
            path.extend(machine.map(|m| Use { resource: m, weight: 1.0 }));
            let f = net.add_flow(path);
            net.set_fair(f);
            f
        };
        // Identical hosts in identical places run in lock-step: every round takes each of
        // them the same time (equal chunks, a link of its own each way), so one host's ranks
        // stand for all (their records are copied to every host), exactly, as identical PS
        // workers form a class. Of a flat ring over multi-GPU hosts the host's G ranks are
        // simulated (only the last one's hop leaves the host), the last one sending to the
        // first, which stands for the next host's; of a hierarchical ring one rank stands for
        // its host's GPUs too (they are alike: the same hops, the same bus, the same NIC).
        let faults = &spec.faults;
        let hierarchical = matches!(sched, Schedule::Hierarchical { .. });
        // (A tree is not symmetric: its ranks hold different places in the trees.)
        let ring_of_single_gpus = matches!(sched, Schedule::Ring(_)) && gpus == 1;
        let flat_ring_of_hosts = matches!(sched, Schedule::Ring(_)) && gpus > 1;
        // Nothing drawn per step or per message, nothing shared with compute.
        let nothing_drawn = s.jitter() == 0.0
            && faults.tail.is_none()
            && faults.episodes.is_none()
            && faults.network_noise == 0.0
            && s.unfairness() == 0.0
            && s.fifo().0 == 0
            && machine.is_none();
        let lock_step = (matches!(sched, Schedule::Ring(_)) || hierarchical)
            && !two_tier
            && nothing_drawn
            && faults.stragglers.is_none()
            && !(s.ramp().0.0 > 0 && s.ramp().1 < 1.0)
            && !opts.no_classes;
        // Such a run settles into a period, after which its steps are extrapolated (see
        // [`crate::steady`]).
        let deterministic = nothing_drawn && !opts.op_log && !opts.every_step;
        let bus = s.host_bus.bandwidth.bytes_per_sec() / 1e9;
        let mut nics = Vec::new();
        for h in 0..if lock_step { 1 } else { hosts } {
            let e = net.add_resource(nic);
            let i = net.add_resource(nic);
            resources.push((ResourceOwner::Worker(h), true, e));
            resources.push((ResourceOwner::Worker(h), false, i));
            let b = (gpus > 1).then(|| {
                let b = net.add_resource(bus);
                resources.push((ResourceOwner::HostBus(h), true, b));
                b
            });
            nics.push((e, i, b));
        }
        let simulated = match (lock_step, flat_ring_of_hosts) {
            (true, true) => gpus,
            (true, false) => 1,
            (false, _) => sched.ranks(),
        };
        // In lock-step the one rank's links stand for those of its host's GPUs (the same hops
        // through the same bus and NICs): that many connections on each resource.
        let stands_for = if lock_step && !flat_ring_of_hosts { f64::from(gpus) } else { 1.0 };
        let mut ranks = Vec::new();
        for r in 0..simulated {
            let mut links = [None; LINKS];
            for (slot, link) in links.iter_mut().enumerate() {
                let Some(next) = sched.next(r, slot) else { continue };
                let (h, n) = (r / gpus, next / gpus);
                // Lock-step: host 0's ingress stands for the next host's.
                let over_nic = h != n;
                let n = if lock_step { h } else { n };
                let path = if over_nic {
                    let mut p = vec![Use { resource: nics[h as usize].0, weight: stands_for }];
                    if rack_of(h) != rack_of(n) {
                        p.push(Use { resource: up[rack_of(h) as usize], weight: stands_for });
                        p.push(Use { resource: down[rack_of(n) as usize], weight: stands_for });
                    }
                    p.push(Use { resource: nics[n as usize].1, weight: stands_for });
                    p
                } else {
                    vec![Use { resource: nics[h as usize].2.expect("a multi-GPU host has a bus"), weight: stands_for }]
                };
                let path_sender = path[0].resource;
                let cpu = machine.filter(|_| over_nic && cpu_per_byte > 0.0);
                let mut path = path;
                path.extend(cpu.map(|m| Use { resource: m, weight: cpu_per_byte }));
                let f = net.add_flow(path);
                // A host's connections share one luck: named by the NIC (or bus) they leave by.
                net.set_sender(f, path_sender);
                if cpu.is_some() {
                    net.set_priority(f, NETWORK_PRIORITY);
                }
                *link = Some((f, over_nic));
            }
            let compute_flow = machine.is_some().then(|| on_one_core(&mut net));
            let copy_flow = (encode_ns + decode_ns > 0.0).then(|| on_one_core(&mut net));
            ranks.push(Rank { host: r / gpus, links, factor: 1.0, compute_flow, copy_flow, ..Rank::default() });
        }

        let (fwd_ns, bwd_ns) = layer_times(s);
        let grads = backward_gradients(&s.model);
        let ready_ns = grads.iter().map(|&(l, _)| bwd_ns[l..].iter().sum::<u64>()).collect();
        // The optimizer update reads the variable, the gradient and the slots and writes the
        // variable and the slots, at the GPU's memory bandwidth (as a PS shard's apply does at
        // its host's).
        let slots = spec.optimizer.kind.slots();
        let mem = s.model.bytes().0 as f64 * (3 + 2 * slots) as f64;
        let apply_ns = (mem / (s.gpu.memory_bandwidth.bytes_per_sec() / 1e9)).ceil() as u64;
        Sim {
            s,
            t,
            opts,
            q: EventQueue::new(),
            net,
            sched,
            gpus,
            ranks,
            grads,
            ready_ns,
            fwd_total: fwd_ns.iter().sum(),
            bwd_total: bwd_ns.iter().sum(),
            fwd_ns,
            bwd_ns,
            ops: Vec::new(),
            apply_ns,
            latency: net_spec.latency,
            notice: if hosts > 1 { net_spec.latency + s.message_overhead() } else { Time::ZERO },
            overhead_bytes: s.message_overhead().0 as f64 * nic,
            encode_ns,
            decode_ns,
            c_step: 0,
            c_next: 0,
            buckets: Vec::new(),
            ordered: Vec::new(),
            step_buckets: Vec::new(),
            in_flight: None,
            tick_pending: false,
            earliest: Time::ZERO,
            slowest_backward: Vec::new(),
            records: Vec::new(),
            gpu_busy_ns: 0,
            trace: Vec::new(),
            resources,
            done: 0,
            step_bytes: Default::default(),
            // One flow alone on its own NIC pair, nothing else on the network: every round
            // moves its chunk at the NIC's rate, then waits a latency for the next one.
            ring_at_once: (lock_step && ring_of_single_gpus).then_some(nic),
            ring_bytes: 0.0,
            steady: deterministic.then(Steady::default),
            ended: Vec::new(),
            period: None,
        }
    }

    /// Messages `rank` has received over each link in bucket `gb` (one it has not finished).
    fn received_in(&self, rank: usize, gb: u64) -> [u64; LINKS] {
        let r = &self.ranks[rank];
        let mut got = [0; LINKS];
        for (s, g) in got.iter_mut().enumerate() {
            *g = r.received[s] - r.base[s];
        }
        for b in r.completed..gb {
            let before = self.sched.receives(rank as u32, self.buckets[b as usize]);
            for (g, x) in got.iter_mut().zip(before) {
                *g = g.saturating_sub(x);
            }
        }
        got
    }

    fn run(mut self) -> Result<Outcome, SimError> {
        for r in 0..self.ranks.len() as u32 {
            self.q.schedule(Time::ZERO, Ev::StartStep { rank: r });
        }
        let mut last = Time::ZERO;
        while let Some((now, ev)) = crate::next_event(&mut self.q, self.opts)? {
            match ev {
                Ev::Net(t) => {
                    let (msg, timers) = self.net.on_timer(now, t);
                    self.schedule(timers);
                    match msg.map(|(_, m)| m.tag) {
                        Some(Tag::Chunk { from, slot, in_slot, decode }) => {
                            let over_nic = self.ranks[from as usize].links[slot].is_some_and(|l| l.1);
                            if over_nic {
                                self.q.schedule(now + self.latency, Ev::Arrive { from, slot, in_slot, decode });
                            } else {
                                self.q.schedule(now, Ev::Deliver { from, slot, in_slot });
                            }
                        }
                        Some(Tag::Encode { from, slot, in_slot, bytes, decode }) => {
                            let (flow, _) = self.ranks[from as usize].links[slot].expect("a chunk leaves by its link");
                            let tag = Tag::Chunk { from, slot, in_slot, decode };
                            let timers = self.net.send(now, flow, Message { bytes, tag });
                            self.schedule(timers);
                        }
                        Some(Tag::Decode { from, slot, in_slot }) => self.deliver(from, slot, in_slot),
                        Some(Tag::Compute { rank }) if self.ranks[rank as usize].applying => self.end_step(rank),
                        Some(Tag::Compute { rank }) => self.compute_item_done(rank),
                        None => {}
                    }
                }
                Ev::Deliver { from, slot, in_slot } => self.deliver(from, slot, in_slot),
                Ev::Arrive { from, slot, in_slot, decode } => {
                    let to = self.receiver(from, slot);
                    match self.ranks[to as usize].copy_flow.filter(|_| decode > 0) {
                        Some(cf) => {
                            let tag = Tag::Decode { from, slot, in_slot };
                            let timers = self.net.send(now, cf, Message { bytes: decode as f64, tag });
                            self.schedule(timers);
                        }
                        None => self.deliver(from, slot, in_slot),
                    }
                }
                Ev::Tick => self.tick(),
                Ev::Order => {
                    for r in 0..self.ranks.len() as u32 {
                        self.progress(r);
                    }
                }
                Ev::BackwardDone { rank } => self.backward_done(rank),
                Ev::ApplyDone { rank } => self.end_step(rank),
                Ev::RingDone { rank } => {
                    let rounds = self.sched.stream_len(rank, 0, 0);
                    let r = &mut self.ranks[rank as usize];
                    (r.in_ring, r.sent[0]) = (false, rounds);
                    r.received[0] += rounds;
                    self.progress(rank);
                }
                Ev::StartStep { rank } => self.start_step(rank),
            }
            last = now;
            if self.done == self.ranks.len() || self.period.is_some() {
                break;
            }
        }
        if self.done < self.ranks.len() && self.period.is_none() {
            return Err(self.stuck(last));
        }
        let mut resources = self.resource_uses();
        let mut steps = self.records;
        let total = self.s.spec.training.steps;
        if let Some(p) = &self.period {
            // The remaining steps repeat the last one; so do the bytes each resource carries
            // and the GPUs' compute.
            steps.retain(|r| r.step <= p.step());
            steps.extend(p.records(total));
            for (i, r) in resources.iter_mut().enumerate() {
                r.bytes_per_host = p.counter(i, total);
            }
            // GPU-busy time: each host's compute of every step.
            self.gpu_busy_ns = steps.iter().map(|r| u128::from(r.compute_ns)).sum();
        }
        steps.sort_by_key(|r| (r.step, r.worker));
        let makespan = steps.iter().map(|r| Time(r.end_ns)).max().unwrap_or(Time::ZERO);
        Ok(Outcome {
            steps,
            makespan,
            events: self.q.popped(),
            resources,
            gpu_busy_ns: self.gpu_busy_ns,
            staleness: Default::default(),
            trace: self.trace,
            classes: self.ranks.len(),
            ops: self.ops,
            steady_from: self.period.as_ref().map(Period::step),
        })
    }

    /// The rank at the other end of `from`'s link `slot` (in lock-step, the simulated rank of
    /// the same place in its host stands for it: `from` itself, or of a flat ring over
    /// multi-GPU hosts the next GPU, the first one for the next host's).
    fn receiver(&self, from: u32, slot: usize) -> u32 {
        let to = self.sched.next(from, slot).expect("a message leaves by a link that exists");
        to % self.ranks.len() as u32
    }

    /// A message from `from` over its link `slot` is in the receiver's hands.
    fn deliver(&mut self, from: u32, slot: usize, in_slot: usize) {
        let to = self.receiver(from, slot);
        self.ranks[to as usize].received[in_slot] += 1;
        self.progress(to);
    }

    fn schedule(&mut self, timers: Vec<Timer>) {
        for t in timers {
            self.q.schedule(t.at, Ev::Net(t));
        }
    }

    /// Scaled by the rank's compute factor of the step.
    fn scaled(&self, rank: usize, ns: u64) -> u64 {
        (ns as f64 * self.ranks[rank].factor).round() as u64
    }

    fn start_step(&mut self, rank: u32) {
        let now = self.q.now();
        let i = rank as usize;
        let (host, step) = (self.ranks[i].host, self.ranks[i].step);
        let workers = self.t.workers;
        let slowdown = match self.s.spec.faults.stragglers.as_ref() {
            Some(st) if host >= workers - st.count.min(workers) => st.slowdown,
            _ => 1.0,
        };
        let jitter = self.s.jitter() > 0.0 || self.s.spec.faults.tail.is_some();
        self.ranks[i].factor = compute_factor(self.s, host, slowdown, jitter, step, now);
        let (fwd, bwd) = (self.scaled(i, self.fwd_total), self.scaled(i, self.bwd_total));
        let shared = self.ranks[i].compute_flow.is_some();
        if !shared {
            self.q.schedule(now + Time(fwd + bwd), Ev::BackwardDone { rank });
        }
        // GPU-busy time per host (its GPUs compute in parallel), as the PS simulation counts it.
        if rank.is_multiple_of(self.gpus) {
            let hosts = if self.lock_step() { u128::from(self.t.workers) } else { 1 };
            self.gpu_busy_ns += u128::from(fwd + bwd) * hosts;
        }
        let r = &mut self.ranks[i];
        (r.in_step, r.step_start, r.fwd, r.compute_ns) = (true, now, fwd, fwd + bwd);
        (r.backward_done, r.applying) = (false, false);
        if shared {
            // Layer by layer through the shared cores; gradients become ready as they go.
            (r.item, r.item_start, r.fwd_end) = (0, now, now);
            r.ready.clear();
            self.next_compute_item(rank);
            return;
        }
        r.fwd_end = now + Time(fwd);
        if self.opts.op_log {
            self.log_compute(rank, now);
        }
        self.plan_tick();
    }

    /// Shared cores: sends the rank's next compute item with work (each layer's forward in
    /// order, then each layer's backward in reverse), or ends backward after the last.
    fn next_compute_item(&mut self, rank: u32) {
        let now = self.q.now();
        let i = rank as usize;
        let layers = self.fwd_ns.len();
        loop {
            let k = self.ranks[i].item;
            if k == 2 * layers {
                self.ranks[i].compute_ns = now.0 - self.ranks[i].step_start.0;
                self.backward_done(rank);
                return;
            }
            let ns = if k < layers { self.fwd_ns[k] } else { self.bwd_ns[2 * layers - 1 - k] };
            let ns = self.scaled(i, ns);
            self.ranks[i].item_start = now;
            if ns > 0 {
                let flow = self.ranks[i].compute_flow.expect("shared cores give each rank a compute flow");
                let timers = self.net.send(now, flow, Message { bytes: ns as f64, tag: Tag::Compute { rank } });
                self.schedule(timers);
                return;
            }
            self.item_done(rank);
        }
    }

    fn compute_item_done(&mut self, rank: u32) {
        self.item_done(rank);
        self.next_compute_item(rank);
    }

    /// Shared cores: the rank's compute item ended now: its op, the end of forward, and the
    /// gradients of a backward layer (every layer from it up is done) when they overlap.
    fn item_done(&mut self, rank: u32) {
        let now = self.q.now();
        let i = rank as usize;
        let layers = self.fwd_ns.len();
        let (k, start, step) = (self.ranks[i].item, self.ranks[i].item_start, self.ranks[i].step);
        let (op, layer) = if k < layers { ("compute-forward", k) } else { ("compute-backward", 2 * layers - 1 - k) };
        if self.opts.op_log {
            for worker in self.workers_of(rank) {
                let index = layer as u64;
                let (start_ns, end_ns) = (start.0, now.0);
                self.ops.push(crate::SimOp { worker, step, op, index, bytes: 0, start_ns, end_ns });
            }
        }
        let r = &mut self.ranks[i];
        r.item += 1;
        if k + 1 == layers {
            r.fwd_end = now;
        }
        if k >= layers && self.s.spec.training.overlap {
            while r.ready.len() < self.grads.len() && self.grads[r.ready.len()].0 >= layer {
                r.ready.push(now);
            }
            self.plan_tick();
        }
    }

    /// Backward has ended on `rank`: its trace spans; the update once the gradients are summed.
    fn backward_done(&mut self, rank: u32) {
        let now = self.q.now();
        let i = rank as usize;
        let r = &mut self.ranks[i];
        r.backward_done = true;
        let (host, step, start, fwd_end) = (r.host, r.step, r.step_start, r.fwd_end);
        if r.compute_flow.is_some() {
            // Without overlap every gradient is ready when backward ends.
            r.ready.resize(self.grads.len(), now);
            self.plan_tick();
        }
        if self.opts.trace && step < u64::from(self.s.spec.training.trace_steps) && rank.is_multiple_of(self.gpus) {
            let pid = format!("worker{host}");
            self.trace.push(Span { pid: pid.clone(), tid: "gpu", name: "forward".into(), start, end: fwd_end });
            self.trace.push(Span { pid, tid: "gpu", name: "backward".into(), start: fwd_end, end: now });
        }
        self.progress(rank);
    }

    /// With `op_log`: every layer's forward then backward compute of `rank`'s step starting at
    /// `now`, one after another (scaled by the step's compute factor), for each worker the
    /// rank stands for.
    fn log_compute(&mut self, rank: u32, now: Time) {
        let i = rank as usize;
        let step = self.ranks[i].step;
        let layers = self.fwd_ns.len();
        let order = (0..layers).map(|l| ("compute-forward", l, self.fwd_ns[l]));
        let order = order.chain((0..layers).rev().map(|l| ("compute-backward", l, self.bwd_ns[l])));
        let mut at = now.0;
        let mut ops = Vec::new();
        for (op, l, ns) in order {
            let end = at + self.scaled(i, ns);
            ops.push((op, l as u64, at, end));
            at = end;
        }
        for worker in self.workers_of(rank) {
            self.ops.extend(ops.iter().map(|&(op, index, start_ns, end_ns)| crate::SimOp {
                worker,
                step,
                op,
                index,
                bytes: 0,
                start_ns,
                end_ns,
            }));
        }
    }

    /// The workers (hosts) `rank` stands for: every host in lock-step, else its own (its
    /// first GPU; none for the host's other GPUs).
    fn workers_of(&self, rank: u32) -> std::ops::Range<u32> {
        let host = self.ranks[rank as usize].host;
        match (self.lock_step(), rank.is_multiple_of(self.gpus)) {
            (true, true) => 0..self.t.workers,
            (false, true) => host..host + 1,
            (_, false) => 0..0,
        }
    }

    /// When gradient `g` of the coordinator's step is ready on `rank` (which is in that step);
    /// on shared cores, none until it is.
    fn ready_at(&self, rank: usize, g: usize) -> Option<Time> {
        let r = &self.ranks[rank];
        if r.compute_flow.is_some() {
            return r.ready.get(g).copied();
        }
        let after = if self.s.spec.training.overlap { self.ready_ns[g] } else { self.bwd_total };
        Some(r.step_start + Time(r.fwd + self.scaled(rank, after)))
    }

    /// Schedules the coordinator's next tick, once the bucket in flight is done everywhere and
    /// every rank is in the coordinator's step.
    fn plan_tick(&mut self) {
        let steps = self.s.spec.training.steps;
        if self.tick_pending || self.in_flight.is_some() || self.c_step >= steps || self.grads.is_empty() {
            return;
        }
        if !self.ranks.iter().all(|r| r.in_step && r.step == self.c_step) {
            return;
        }
        // The tick is due when the gradient is ready everywhere (the ranks report when it
        // became ready), and cannot come before the last report has arrived.
        let (mut ready, mut heard) = (Time::ZERO, Time::ZERO);
        for r in 0..self.ranks.len() {
            match self.ready_at(r, self.c_next) {
                Some(t) => (ready, heard) = (ready.max(t), heard.max(t + self.notice_of(r))),
                None => return,
            }
        }
        let at = launch_time(ready, self.earliest, self.t.fusion_cycle).max(heard);
        self.tick_pending = true;
        self.q.schedule(at, Ev::Tick);
    }

    /// Hands the next bucket to the collective: what is ready on every rank, up to the fusion
    /// threshold.
    fn tick(&mut self) {
        let now = self.q.now();
        self.tick_pending = false;
        let ranks = self.ranks.len();
        let ready = |g: usize| (0..ranks).all(|r| self.ready_at(r, g).is_some_and(|t| t + self.notice_of(r) <= now));
        let b = next_bucket(&self.grads, self.c_next, self.t.fusion_buffer, ready);
        debug_assert!(!b.is_empty(), "a tick is planned when a gradient is ready");
        let bytes: u64 = self.grads[b.clone()].iter().map(|g| g.1).sum();
        let gb = self.buckets.len() as u64;
        self.buckets.push(bytes);
        if self.c_next == 0 {
            self.step_buckets.push(gb..gb);
        }
        self.step_buckets[self.c_step as usize].end = gb + 1;
        self.c_next = b.end;
        if self.c_next == self.grads.len() {
            let slowest =
                (0..ranks).map(|r| self.ready_at(r, self.grads.len() - 1).unwrap_or(now)).max().unwrap_or(now);
            self.slowest_backward.push(slowest);
            self.c_step += 1;
            self.c_next = 0;
        }
        self.in_flight = Some(0);
        self.earliest = now + self.t.fusion_cycle;
        // The collective starts when the order has reached every rank: the coordinator's own
        // rank starts with the others (its first message is on its way a notice early in a
        // real run, but what it sends next needs theirs).
        self.ordered.push(now + self.notice);
        if self.notice == Time::ZERO {
            for r in 0..ranks as u32 {
                self.progress(r);
            }
        } else {
            self.q.schedule(now + self.notice, Ev::Order);
        }
    }

    /// How long `rank`'s reports take to reach the coordinator (rank 0): nothing on the
    /// coordinator's host, else [`Sim::notice`] (in lock-step the one rank stands for every
    /// host, and the tick waits for the last of them).
    fn notice_of(&self, rank: usize) -> Time {
        if self.ranks[rank].host == 0 && !self.lock_step() { Time::ZERO } else { self.notice }
    }

    /// Sends what the rank may send now, notes the buckets it has finished, and applies once
    /// the step's gradients are summed and backward is done.
    fn progress(&mut self, rank: u32) {
        self.finish_buckets(rank);
        let now = self.q.now();
        let i = rank as usize;
        for st in 0..self.sched.streams() {
            loop {
                let gb = self.ranks[i].stream_bucket[st];
                if gb >= self.buckets.len() as u64 {
                    break;
                }
                if now < self.ordered[gb as usize] {
                    // Its order has not reached the ranks yet (an Order event comes then).
                    break;
                }
                let bytes = self.buckets[gb as usize];
                let m = self.ranks[i].sent[st];
                if m == self.sched.stream_len(rank, st, bytes) {
                    let r = &mut self.ranks[i];
                    (r.stream_bucket[st], r.sent[st]) = (gb + 1, 0);
                    continue;
                }
                if let Some(nic) = self.ring_at_once {
                    // Lock-step ring: round k + 1 leaves when round k has arrived, a latency
                    // after it left the NIC; the connection is idle in between. So a bucket
                    // of R rounds takes R x (chunk time + latency), exactly as sent one by one.
                    if self.ranks[i].in_ring {
                        break;
                    }
                    let rounds = self.sched.stream_len(rank, 0, bytes);
                    let chunk = self.sched.message(rank, 0, 0, bytes).bytes;
                    let wire = chunk as f64 + self.overhead_bytes;
                    let copies = Time((chunk as f64 * (self.encode_ns + self.decode_ns)).round() as u64);
                    let round = Time((wire / nic).ceil() as u64) + self.latency + copies;
                    self.ring_bytes += wire * rounds as f64;
                    let r = &mut self.ranks[i];
                    (r.in_ring, r.begun, r.bucket_started) = (true, gb + 1, now);
                    self.q.schedule(now + Time(round.0 * rounds), Ev::RingDone { rank });
                    break;
                }
                let msg = self.sched.message(rank, st, m, bytes);
                let got = self.received_in(i, gb);
                if (0..LINKS).any(|s| got[s] < msg.needs[s]) {
                    break;
                }
                let r = &self.ranks[i];
                let (flow, over_nic) = r.links[msg.slot].expect("a message goes over a link of its rank");
                let (host, step) = (r.host, r.step);
                let r = &mut self.ranks[i];
                if gb >= r.begun {
                    (r.begun, r.bucket_started) = (gb + 1, now);
                }
                r.sent[st] += 1;
                let (from, slot, in_slot) = (rank, msg.slot, msg.in_slot);
                if !over_nic {
                    let tag = Tag::Chunk { from, slot, in_slot, decode: 0 };
                    let timers = self.net.send(now, flow, Message { bytes: msg.bytes as f64, tag });
                    self.schedule(timers);
                    continue;
                }
                let bytes = msg.bytes as f64 * network_noise(self.s, host, step) + self.overhead_bytes;
                let payload = msg.bytes as f64;
                let (encode, decode) =
                    ((payload * self.encode_ns).round() as u64, (payload * self.decode_ns).round() as u64);
                let timers = match self.ranks[i].copy_flow.filter(|_| encode > 0) {
                    Some(cf) => {
                        let tag = Tag::Encode { from, slot, in_slot, bytes, decode };
                        self.net.send(now, cf, Message { bytes: encode as f64, tag })
                    }
                    None => {
                        self.net.send(now, flow, Message { bytes, tag: Tag::Chunk { from, slot, in_slot, decode } })
                    }
                };
                self.schedule(timers);
            }
        }
        self.finish_buckets(rank);
        let r = &self.ranks[i];
        let summed = self.grads.is_empty()
            || self.step_buckets.get(r.step as usize).is_some_and(|b| self.c_step > r.step && r.completed >= b.end);
        if r.in_step && r.backward_done && !r.applying && summed {
            self.ranks[i].applying = true;
            match self.ranks[i].compute_flow {
                // The update is CPU work on shared cores too (its end ends the step).
                Some(flow) if self.apply_ns > 0 => {
                    let msg = Message { bytes: self.apply_ns as f64, tag: Tag::Compute { rank } };
                    let timers = self.net.send(now, flow, msg);
                    self.schedule(timers);
                }
                _ => self.q.schedule(now + Time(self.apply_ns), Ev::ApplyDone { rank }),
            }
        }
    }

    /// Notes the buckets `rank` has finished (every message of every stream sent, every one
    /// received), before it begins the next (so that each bucket's trace span ends first).
    fn finish_buckets(&mut self, rank: u32) {
        let i = rank as usize;
        while self.ranks[i].completed < self.buckets.len() as u64 {
            let gb = self.ranks[i].completed;
            let bytes = self.buckets[gb as usize];
            let r = &self.ranks[i];
            let sent = (0..self.sched.streams())
                .all(|st| r.stream_bucket[st] > gb || r.sent[st] == self.sched.stream_len(rank, st, bytes));
            let need = self.sched.receives(rank, bytes);
            if !sent || (0..LINKS).any(|s| r.received[s] - r.base[s] < need[s]) {
                break;
            }
            let r = &mut self.ranks[i];
            for (b, x) in r.base.iter_mut().zip(need) {
                *b += x;
            }
            r.completed += 1;
            self.bucket_done(rank, gb);
        }
    }

    /// Rank `rank` has finished global bucket `gb`: a trace span on its host's network lane
    /// (first GPU, traced steps); the coordinator's next cycle once every rank has.
    fn bucket_done(&mut self, rank: u32, gb: u64) {
        let now = self.q.now();
        let r = &self.ranks[rank as usize];
        if self.opts.op_log {
            let (step, start) = (r.step, r.bucket_started);
            let index = gb - self.step_buckets[step as usize].start;
            for worker in self.workers_of(rank) {
                self.ops.push(crate::SimOp {
                    worker,
                    step,
                    op: "all-reduce",
                    index,
                    bytes: self.buckets[gb as usize],
                    start_ns: start.0,
                    end_ns: now.0,
                });
            }
        }
        let r = &self.ranks[rank as usize];
        if self.opts.trace && rank.is_multiple_of(self.gpus) && r.step < u64::from(self.s.spec.training.trace_steps) {
            let first = self.step_buckets[r.step as usize].start;
            let span = Span {
                pid: format!("worker{}", r.host),
                tid: "nic-out",
                name: format!("all-reduce bucket {} ({})", gb - first, Bytes(self.buckets[gb as usize])),
                start: r.bucket_started,
                end: now,
            };
            self.trace.push(span);
        }
        let n = self.in_flight.as_mut().expect("a bucket is in flight while ranks finish it");
        *n += 1;
        if *n as usize == self.ranks.len() {
            self.in_flight = None;
            self.earliest = self.earliest.max(now);
            self.plan_tick();
        }
    }

    fn end_step(&mut self, rank: u32) {
        let now = self.q.now();
        let i = rank as usize;
        let r = &self.ranks[i];
        let (host, step, start, compute) = (r.host, r.step, r.step_start, r.compute_ns);
        if rank.is_multiple_of(self.gpus) {
            // Waiting for others: how much later than this rank the slowest ended backward.
            let own = start + Time(compute);
            let dur = now.0 - start.0;
            let wait = self
                .slowest_backward
                .get(step as usize)
                .map_or(0, |t| t.0.saturating_sub(own.0))
                .min(dur.saturating_sub(compute));
            let (sent, received) = self.host_bytes(step)[host as usize];
            let hosts = if self.lock_step() { 0..self.t.workers } else { host..host + 1 };
            for host in hosts {
                self.records.push(StepRecord {
                    run: "sim".into(),
                    worker: host,
                    step,
                    start_ns: start.0,
                    end_ns: now.0,
                    compute_ns: compute,
                    comm_ns: dur.saturating_sub(compute).saturating_sub(wait),
                    wait_ns: wait,
                    bytes_sent: sent,
                    bytes_received: received,
                    scenario_hash: self.s.hash.clone(),
                    seed: self.s.spec.seed,
                    version: VERSION.into(),
                });
            }
        }
        if rank.is_multiple_of(self.gpus) {
            self.watch_period(step);
        }
        let r = &mut self.ranks[i];
        r.step += 1;
        r.in_step = false;
        if r.step >= self.s.spec.training.steps {
            r.finished = true;
            self.done += 1;
        } else {
            self.q.schedule(now, Ev::StartStep { rank });
        }
    }

    /// A record of `step` is in: once all are, the steady-state watch sees the step end.
    fn watch_period(&mut self, step: u64) {
        if self.steady.is_none() {
            return;
        }
        let k = step as usize;
        if self.ended.len() <= k {
            self.ended.resize(k + 1, 0);
        }
        self.ended[k] += if self.lock_step() { self.t.workers } else { 1 };
        let (total, trace_steps) = (self.s.spec.training.steps, u64::from(self.s.spec.training.trace_steps));
        // The trace of the first steps is drawn whole before the rest is extrapolated.
        if self.ended[k] < self.t.workers || step + 1 >= total || (self.opts.trace && step + 1 < trace_steps) {
            return;
        }
        let first = self.records.partition_point(|r| r.step < step);
        let counters = self.resource_uses().iter().map(|r| r.bytes_per_host).collect();
        let steady = self.steady.as_mut().expect("checked above");
        self.period = steady.step_ended(step, &self.records[first..], counters);
    }

    /// The bytes and capacity of each network resource so far (with a lock-step ring's
    /// rounds timed at once, on host 0's NIC).
    fn resource_uses(&self) -> Vec<crate::training::ResourceUse> {
        let mut uses = resource_uses(&self.net, &self.resources);
        for r in uses.iter_mut().filter(|r| r.owner == ResourceOwner::Worker(0)) {
            r.bytes_per_host += self.ring_bytes;
        }
        uses
    }

    /// One rank stands for all (see [`Sim::new`]).
    fn lock_step(&self) -> bool {
        (self.ranks.len() as u32) < self.sched.ranks()
    }

    /// Payload bytes each host's NICs sent and received in `step` (its GPUs' messages to and
    /// from other hosts), computed on the step's first record.
    fn host_bytes(&mut self, step: u64) -> &[(u64, u64)] {
        if !self.step_bytes.contains_key(&step) {
            let hosts = self.t.workers as usize;
            // Rings and hierarchical rings are symmetric: every host sends and receives what
            // host 0's GPUs send; a tree is walked whole.
            let symmetric = !matches!(self.sched, Schedule::Tree { .. });
            let senders = if symmetric { self.gpus } else { self.sched.ranks() };
            let mut bytes_of = vec![(0u64, 0u64); hosts];
            let range = self.step_buckets.get(step as usize).cloned().unwrap_or_default();
            for gb in range {
                self.sched.nic_bytes(self.gpus, self.buckets[gb as usize], 0..senders, &mut bytes_of);
            }
            if symmetric {
                bytes_of = vec![(bytes_of[0].0, bytes_of[0].0); hosts];
            }
            self.step_bytes.insert(step, bytes_of);
        }
        &self.step_bytes[&step]
    }

    fn stuck(&self, at: Time) -> SimError {
        match self.ranks.iter().enumerate().find(|(_, r)| !r.finished) {
            Some((i, r)) => SimError::Stuck {
                at,
                worker: r.host,
                step: r.step,
                what: format!(
                    "rank {i} has sent {} and received {} message(s); {} bucket(s) handed over, {} finished here",
                    r.sent.iter().sum::<u64>(),
                    r.received.iter().sum::<u64>(),
                    self.buckets.len(),
                    r.completed
                ),
            },
            None => SimError::Stuck { at, worker: 0, step: 0, what: "no event left".into() },
        }
    }
}
