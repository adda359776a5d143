//! The flow-level network: connections carrying queued messages, rates by max-min fair sharing.
//!
//! A **flow** is a connection (or a group of identical connections, see [`crate::maxmin`]),
//! not a message: messages queue inside their connection, as gRPC streams share one TCP
//! connection, and the connection stays active while it has a message. Rates change only when
//! a connection turns active or idle; then only the connected component of flows that share a
//! resource with it is re-solved, and only flows whose rate changed get a new completion time
//! (their old pending completion is made stale by a version bump: lazy cancellation).
//!
//! Real TCP is not exactly fair, and the simulator can say so (all off by default): a
//! connection draws a log-normal *luck* for each busy period ([`Network::set_unfairness`]; the
//! connections one host sends share one luck, [`Network::set_sender`], since a host's kernel
//! shares its own link fairly and the unequal shares arise between hosts at a queue), a
//! new connection ramps up from a fraction of its share ([`Network::set_ramp`]), and a flow can
//! have a fixed *priority* ([`Network::set_priority`]: the kernel's packet work before user
//! compute on shared cores), and bursts can be served first come, first served, as a drop-tail
//! queue does ([`Network::set_fifo`]). Rates are then max-min fair in units of share (weighted
//! max-min); CPU flows marked [`Network::set_fair`] get neither luck nor ramp. Symmetric workers under
//! exact max-min stay in lock-step forever; luck lets them drift apart as real ones do.
//!
//! Connections that meet at a few busy hubs (the parameter servers' NICs) can be timed by
//! one virtual clock per hub instead, with the same max-min rates ([`Network::use_hubs`], in
//! `network/hubs.rs`): with every worker simulated on its own, the re-solves above grow with the
//! square of the workers, a hub's clock with the log of its connections.
//!
//! The network does not own the clock: it returns [`Timer`]s that the caller schedules as
//! events, and the caller hands them back with [`Network::complete`] (or, for a ramp step,
//! [`Network::reshare`]).

use std::collections::VecDeque;

use topolab_core::units::Time;

use crate::maxmin::{self, Scratch, Use};

mod hubs;

/// A timer the caller must schedule and hand back at `at`: flow `flow`'s head message finishes
/// then unless the flow's version has moved on ([`Network::complete`]), or, with `reshare`, a
/// ramping connection's share grows ([`Network::reshare`]; `version` is then its busy period).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    /// Flow index.
    pub flow: usize,
    /// Version of the flow's rate when the timer was set (its busy period, for a reshare).
    pub version: u64,
    /// When.
    pub at: Time,
    /// A ramp step rather than a completion.
    pub reshare: bool,
    /// A hub's timer ([`Network::use_hubs`]): `flow` is then the hub's index.
    pub hub: bool,
}

/// Least share a late connection keeps under first-come-first-served queueing (so that its
/// rate stays a positive float).
const FIFO_FLOOR: f64 = 1e-6;

/// Steps in which a new connection's share ramps up (one re-solve each).
const RAMP_STEPS: u64 = 4;

/// A message in a connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Message<T> {
    /// Bytes on the wire, per connection of the flow.
    pub bytes: f64,
    /// The caller's tag, returned on completion.
    pub tag: T,
}

#[derive(Debug, Clone)]
struct Flow<T> {
    path: Vec<Use>,
    queue: VecDeque<Message<T>>,
    /// Bytes per ns per connection.
    rate: f64,
    /// Bytes of the head message left at `since`.
    remaining: f64,
    since: Time,
    /// When the head message started moving.
    head_started: Time,
    version: u64,
    /// When the head message finishes at the current rate (valid while the rate is > 0).
    deadline: Time,
    /// A completion timer of the current version is pending, at `timer_at` (at or before
    /// `deadline`: a flow that slows down keeps its earlier timer, which re-arms when it fires).
    pending: bool,
    timer_at: Time,
    /// Share of a fair rate this connection gets in its current busy period (1 = fair).
    share: f64,
    /// `path` with every weight times `share`: what the solver sees.
    scaled: Vec<Use>,
    /// Busy periods so far (keys the share's deviate).
    activations: u64,
    /// Start of the current busy period.
    active_since: Time,
    /// The random part of `share`.
    luck: f64,
    /// The fixed part of `share` (priority).
    base: f64,
    /// Always exactly its share: a CPU, not a TCP connection (no luck, no ramp).
    fair: bool,
    /// The sender it shares its luck with ([`Network::set_sender`]).
    sender: Option<usize>,
    /// Its hub and leaf when it is a hub connection ([`Network::use_hubs`]).
    hub: Option<hubs::HubUse>,
    /// While its hub times it: the hub's clock reading at which its head message ends.
    mark: f64,
    /// Timed by its hub's clock (else, busy, by its own rate: its leaf binds).
    on_clock: bool,
    /// Its place in its hub's list of connections on the clock.
    member: usize,
}

/// Connections leaving one host: they draw one luck per busy period of the host.
#[derive(Debug, Clone, Copy, Default)]
struct Sender {
    /// Its connections that are busy now.
    busy: usize,
    /// Busy periods so far (keys the luck).
    activations: u64,
    /// The luck of the current busy period.
    luck: f64,
}

/// Connections over capacitated resources.
#[derive(Debug, Clone)]
pub struct Network<T> {
    capacity: Vec<f64>,
    /// Active flows crossing each resource, in activation order.
    users: Vec<Vec<usize>>,
    flows: Vec<Flow<T>>,
    scratch: Scratch,
    /// Bytes carried by each resource so far (weighted by connections).
    carried: Vec<f64>,
    resolves: u64,
    /// TCP unfairness: (sigma, seed) of the log-normal share each connection draws when it
    /// turns active; `None` is exact max-min fairness.
    unfairness: Option<(f64, u64)>,
    /// Hosts whose connections share one luck ([`Network::set_sender`]).
    senders: Vec<Sender>,
    /// Window ramp-up: (deficit, ramp ns). A connection that has been busy for `a` ns gets
    /// `exp(-deficit x (1 - a / ramp))` of its share until `a = ramp`, in [`RAMP_STEPS`] steps;
    /// `None`: every connection has its full share at once.
    ramp: Option<(f64, f64)>,
    /// Drop-tail queueing, (tau ns, window ns): a connection that turned busy `d` ns after the
    /// oldest busy one in its component gets `exp(-d / tau)` of its share (at least
    /// [`FIFO_FLOOR`]) while it has been busy for less than the window; `None`: off.
    fifo: Option<(f64, f64)>,
    /// Bytes per ns each resource carries at the current rates (sum of rate x weight over its
    /// active flows), kept as rates change; exact 0 whenever a resource has no active flow.
    load: Vec<f64>,
    /// Working arrays of the local re-solve, one entry per resource or flow, reused.
    local: LocalScratch,
    /// The hub fast path ([`Network::use_hubs`]), when in use.
    hubs: Option<hubs::Hubs>,
}

/// Working arrays of [`Network::resolve_local`].
#[derive(Debug, Clone, Default)]
struct LocalScratch {
    /// Resource is in the closure (every flow on it is re-solved).
    in_r: Vec<bool>,
    /// Flow is re-solved.
    in_f: Vec<bool>,
    /// Capacities the solver sees: a resource's own, or what the flows outside leave of it.
    cap: Vec<f64>,
    /// Per resource outside the closure: load of the re-solved flows on it, then of the others.
    acc: Vec<f64>,
    /// Resource is outside the closure and crossed by a re-solved flow.
    in_cut: Vec<bool>,
    /// Buffers of one re-solve, kept for the next: re-solved flows, closure, cut, frontier.
    inside: Vec<usize>,
    closure: Vec<usize>,
    cut: Vec<usize>,
    frontier: Vec<usize>,
}

/// What a completion timer meant ([`Network::complete`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Completion<T> {
    /// Made stale by a later timer of the flow: nothing to do.
    Stale,
    /// The flow slowed down after the timer was set: schedule these instead (its new
    /// completion), nothing finished.
    Later(Vec<Timer>),
    /// The head message finished: it, and the timers to schedule.
    Done(Message<T>, Vec<Timer>),
}

/// What changed before a re-solve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// This flow turned active.
    Joined(usize),
    /// A flow turned idle.
    Leaving,
    /// A share changed (ramp or queue order).
    Reshared,
}
use Change::{Joined, Leaving, Reshared};

/// A resource carrying at least `1 - TIGHT` of its capacity is saturated: it may bind the
/// flows on it, so a local re-solve takes all of them in.
const TIGHT: f64 = 1e-9;

impl<T: Copy> Default for Network<T> {
    fn default() -> Self {
        Network {
            capacity: Vec::new(),
            users: Vec::new(),
            flows: Vec::new(),
            scratch: Scratch::default(),
            carried: Vec::new(),
            resolves: 0,
            unfairness: None,
            senders: Vec::new(),
            ramp: None,
            fifo: None,
            load: Vec::new(),
            local: LocalScratch::default(),
            hubs: None,
        }
    }
}

impl<T: Copy> Network<T> {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// Unfair sharing, as TCP connections that share a bottleneck really get: each connection
    /// draws a share `exp(sigma * z)` (z standard normal, keyed by seed, flow and busy period)
    /// when it turns active and keeps it until it turns idle; rates are max-min fair in units
    /// of share. `sigma = 0` is exact max-min fairness.
    pub fn set_unfairness(&mut self, sigma: f64, seed: u64) {
        self.unfairness = (sigma > 0.0).then_some((sigma, seed));
    }

    /// Window ramp-up of new connections: they start with `exp(-deficit)` of their share and
    /// reach it all after `ramp_ns` (see the field). A zero deficit or ramp turns it off.
    pub fn set_ramp(&mut self, deficit: f64, ramp_ns: f64) {
        self.ramp = (deficit > 0.0 && ramp_ns >= 1.0).then_some((deficit, ramp_ns));
    }

    /// First come, first served, as a drop-tail queue serves what reached it first: a connection
    /// that turned busy `d` ns after the oldest busy connection it shares resources with gets
    /// `exp(-d / tau_ns)` of its share for its first `window_ns` (the time the queue ahead of
    /// it takes to drain), so the earlier burst goes (almost) first; then they share as usual.
    /// `tau_ns = 0` turns it off.
    pub fn set_fifo(&mut self, tau_ns: f64, window_ns: f64) {
        self.fifo = (tau_ns >= 1.0 && window_ns >= 1.0).then_some((tau_ns, window_ns));
    }

    /// Handles a reshare timer of flow `f` for busy period `busy`: re-solves its component if
    /// the flow is still in that busy period; returns the timers to schedule.
    pub fn reshare(&mut self, now: Time, f: usize, busy: u64) -> Vec<Timer> {
        let flow = &self.flows[f];
        if flow.queue.is_empty() || flow.activations != busy {
            return Vec::new();
        }
        let seeds: Vec<usize> = flow.path.iter().map(|u| u.resource).collect();
        self.resolve(now, &seeds, Reshared)
    }

    /// Adds a resource of `capacity` bytes per ns; returns its index.
    pub fn add_resource(&mut self, capacity: f64) -> usize {
        assert!(capacity > 0.0, "a resource needs a positive capacity (validated in Scenario)");
        self.capacity.push(capacity);
        self.users.push(Vec::new());
        self.carried.push(0.0);
        self.load.push(0.0);
        self.local.in_r.push(false);
        self.local.in_cut.push(false);
        self.local.cap.push(capacity);
        self.local.acc.push(0.0);
        self.scratch.resize(self.capacity.len());
        self.capacity.len() - 1
    }

    /// Adds an idle flow over `path`; returns its index.
    pub fn add_flow(&mut self, path: Vec<Use>) -> usize {
        for u in &path {
            assert!(u.resource < self.capacity.len(), "flow path names resource {} that does not exist", u.resource);
        }
        self.flows.push(Flow {
            scaled: path.clone(),
            path,
            queue: VecDeque::new(),
            rate: 0.0,
            remaining: 0.0,
            since: Time::ZERO,
            head_started: Time::ZERO,
            version: 0,
            deadline: Time::ZERO,
            pending: false,
            timer_at: Time::ZERO,
            share: 1.0,
            activations: 0,
            active_since: Time::ZERO,
            luck: 1.0,
            base: 1.0,
            fair: false,
            sender: None,
            hub: None,
            mark: 0.0,
            on_clock: false,
            member: 0,
        });
        self.local.in_f.push(false);
        self.flows.len() - 1
    }

    /// Gives flow `f` `priority` times the share of a plain flow where they compete (the
    /// kernel's network work before user processes' compute on shared cores: a large priority).
    pub fn set_priority(&mut self, f: usize, priority: f64) {
        assert!(priority > 0.0 && priority.is_finite(), "a priority is positive");
        let flow = &mut self.flows[f];
        flow.base = priority;
        flow.share = priority * flow.luck;
        flow.scaled = flow.path.iter().map(|u| Use { resource: u.resource, weight: u.weight * flow.share }).collect();
    }

    /// Says that flow `f` leaves host `sender`: the connections a host sends share one luck,
    /// drawn when the first of them turns busy and kept while any is ([`Network::set_unfairness`]).
    /// One host's kernel shares its own link fairly among its own connections (TCP small
    /// queues keep each to a few packets in the qdisc, so none is starved by another's
    /// window); the unequal shares a drop-tail queue hands out are between hosts.
    pub fn set_sender(&mut self, f: usize, sender: usize) {
        if self.senders.len() <= sender {
            self.senders.resize(sender + 1, Sender::default());
        }
        self.flows[f].sender = Some(sender);
    }

    /// Marks flow `f` as always getting exactly its share: a process on a CPU, not a TCP
    /// connection (neither unfairness nor ramp-up applies).
    pub fn set_fair(&mut self, f: usize) {
        self.flows[f].fair = true;
    }

    /// Capacity of resource `r`, bytes per ns.
    pub fn capacity(&self, r: usize) -> f64 {
        self.capacity[r]
    }

    /// Bytes carried by resource `r` so far.
    pub fn carried(&self, r: usize) -> f64 {
        self.carried[r]
    }

    /// Current rate of flow `f` (bytes per ns per connection; 0 when idle).
    pub fn rate(&self, f: usize) -> f64 {
        self.hub_rate(f).unwrap_or(self.flows[f].rate)
    }

    /// Number of component re-solves so far.
    pub fn resolves(&self) -> u64 {
        self.resolves
    }

    /// When flow `f`'s head message started moving.
    pub fn head_started(&self, f: usize) -> Time {
        self.flows[f].head_started
    }

    /// Queues `msg` on flow `f` at `now`; returns the timers to schedule.
    pub fn send(&mut self, now: Time, f: usize, msg: Message<T>) -> Vec<Timer> {
        let flow = &mut self.flows[f];
        flow.queue.push_back(msg);
        if flow.queue.len() > 1 {
            return Vec::new();
        }
        flow.remaining = msg.bytes;
        flow.since = now;
        flow.head_started = now;
        flow.rate = 0.0;
        flow.activations += 1;
        flow.active_since = now;
        if let Some((sigma, seed)) = self.unfairness.filter(|_| !flow.fair) {
            let draw = |id: u64, busy: u64| {
                let key = seed ^ (id << 40) ^ busy.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                (sigma * crate::rng::normal(crate::rng::splitmix64(key))).exp()
            };
            flow.luck = match flow.sender {
                Some(h) => {
                    let host = &mut self.senders[h];
                    if host.busy == 0 {
                        host.activations += 1;
                        // Keyed apart from the flows' own draws.
                        host.luck = draw(h as u64 | 1 << 23, host.activations);
                    }
                    host.luck
                }
                None => draw(f as u64, flow.activations),
            };
        }
        if let Some(h) = flow.sender {
            self.senders[h].busy += 1;
        }
        if self.flows[f].hub.is_some() {
            let flow = &mut self.flows[f];
            flow.share = flow.base * flow.luck;
            return self.hub_join(now, f, msg.bytes);
        }
        for u in &self.flows[f].path {
            self.users[u.resource].push(f);
        }
        if self.flows[f].path.is_empty() {
            // No resource: completes at once.
            let flow = &mut self.flows[f];
            flow.rate = f64::INFINITY;
            flow.version += 1;
            (flow.deadline, flow.timer_at, flow.pending) = (now, now, true);
            return vec![Timer { flow: f, version: flow.version, at: now, reshare: false, hub: false }];
        }
        let seeds: Vec<usize> = self.flows[f].path.iter().map(|u| u.resource).collect();
        let mut timers = self.resolve(now, &seeds, Joined(f));
        if let Some((_, window)) = self.fifo.filter(|&(_, w)| !self.flows[f].fair && w.is_finite()) {
            // Out of the queue's shadow: share as usual from then on.
            timers.push(Timer {
                flow: f,
                version: self.flows[f].activations,
                at: now + Time(window.round() as u64),
                reshare: true,
                hub: false,
            });
        }
        if let Some((_, ramp)) = self.ramp.filter(|_| !self.flows[f].fair) {
            let busy = self.flows[f].activations;
            timers.extend((1..=RAMP_STEPS).map(|i| Timer {
                flow: f,
                version: busy,
                at: now + Time((ramp * i as f64 / RAMP_STEPS as f64).round() as u64),
                reshare: true,
                hub: false,
            }));
        }
        timers
    }

    /// The one entry point for a fired timer, completion or reshare: the message it finished
    /// (if any) and the timers to schedule.
    pub fn on_timer(&mut self, now: Time, t: Timer) -> (Option<(usize, Message<T>)>, Vec<Timer>) {
        if t.hub {
            return self.hub_timer_fired(now, t);
        }
        if t.reshare {
            return (None, self.reshare(now, t.flow, t.version));
        }
        match self.complete(now, t.flow, t.version) {
            Completion::Done(msg, timers) => (Some((t.flow, msg)), timers),
            Completion::Later(timers) => (None, timers),
            Completion::Stale => (None, Vec::new()),
        }
    }

    /// Ends flow `f`'s head message at `now`: takes it off the queue and counts its bytes on
    /// the flow's resources; the next message, if any, starts now. Returns the message and the
    /// next one's bytes.
    fn end_head(&mut self, now: Time, f: usize) -> (Message<T>, Option<f64>) {
        let flow = &mut self.flows[f];
        let msg = flow.queue.pop_front().expect("a finished timer belongs to a flow with a head message");
        for u in &flow.path {
            self.carried[u.resource] += msg.bytes * u.weight;
        }
        let next = flow.queue.front().map(|m| m.bytes);
        if next.is_some() {
            flow.head_started = now;
        }
        (msg, next)
    }

    /// Handles a timer of flow `f`: stale, early (the flow slowed down since it was set: the
    /// timer of its new completion), or the finished message and the timers to schedule.
    pub fn complete(&mut self, now: Time, f: usize, version: u64) -> Completion<T> {
        let flow = &mut self.flows[f];
        if flow.version != version || !flow.pending {
            return Completion::Stale;
        }
        if now < flow.deadline || flow.rate <= 0.0 {
            // Slowed down (or stopped) since: one timer again, at the new completion.
            if flow.rate <= 0.0 {
                flow.pending = false;
                return Completion::Later(Vec::new());
            }
            flow.version += 1;
            flow.timer_at = flow.deadline;
            return Completion::Later(vec![Timer {
                flow: f,
                version: flow.version,
                at: flow.deadline,
                reshare: false,
                hub: false,
            }]);
        }
        flow.pending = false;
        let (msg, next) = self.end_head(now, f);
        let flow = &mut self.flows[f];
        if let Some(bytes) = next {
            // Same connection, same rate: the next message starts at once.
            flow.remaining = bytes;
            flow.since = now;
            flow.version += 1;
            let at = now + Time(ceil_ns(flow.remaining, flow.rate));
            (flow.deadline, flow.timer_at, flow.pending) = (at, at, true);
            return Completion::Done(
                msg,
                vec![Timer { flow: f, version: flow.version, at, reshare: false, hub: false }],
            );
        }
        // Idle: leave the resources and re-share among the rest.
        if let Some(h) = flow.sender {
            self.senders[h].busy -= 1;
        }
        let old = flow.rate;
        flow.rate = 0.0;
        flow.version += 1;
        let seeds: Vec<usize> = flow.path.iter().map(|u| u.resource).collect();
        // The flows on a resource the leaving one saturated may speed up; on one with slack
        // they were bound elsewhere.
        let was_tight: Vec<usize> = if self.ramp.is_none() && self.fifo.is_none() {
            seeds.iter().copied().filter(|&r| self.tight(r)).collect()
        } else {
            seeds.clone()
        };
        for (k, &r) in seeds.iter().enumerate() {
            let users = &mut self.users[r];
            let i = users.iter().position(|&x| x == f).expect("an active flow is listed on its resources");
            users.remove(i);
            self.load[r] = if users.is_empty() { 0.0 } else { self.load[r] - old * self.flows[f].path[k].weight };
        }
        let timers = self.resolve(now, &was_tight, Leaving);
        Completion::Done(msg, timers)
    }

    /// Re-solves after `change` at the resources `seeds` and re-times the flows whose rate
    /// changed.
    fn resolve(&mut self, now: Time, seeds: &[usize], change: Change) -> Vec<Timer> {
        self.resolves += 1;
        if self.ramp.is_none() && self.fifo.is_none() {
            // Shares change only when a connection turns active: a local re-solve is exact.
            let (flows, rates) = self.resolve_local(seeds, change);
            let timers = self.retime(now, &flows, &rates);
            self.local.inside = flows;
            return timers;
        }
        let comp = self.component(seeds);
        if comp.is_empty() {
            return Vec::new();
        }
        // First come, first served: shares fall off with lateness behind the oldest busy
        // connection (a CPU flow is no connection and has none).
        let oldest = self
            .fifo
            .and_then(|_| comp.iter().filter(|&&f| !self.flows[f].fair).map(|&f| self.flows[f].active_since.0).min());
        if self.unfairness.is_some() || self.ramp.is_some() || self.fifo.is_some() {
            for &f in &comp {
                let flow = &mut self.flows[f];
                let ramped = self.ramp.filter(|_| !flow.fair).map_or(1.0, |(deficit, ramp)| {
                    let age = (now.0 - flow.active_since.0) as f64;
                    (-deficit * (1.0 - age / ramp).max(0.0)).exp()
                });
                let fifo = match (self.fifo, oldest) {
                    (Some((tau, window)), Some(oldest))
                        if !flow.fair && ((now.0 - flow.active_since.0) as f64) < window =>
                    {
                        (-((flow.active_since.0 - oldest) as f64) / tau).exp().max(FIFO_FLOOR)
                    }
                    _ => 1.0,
                };
                flow.share = flow.base * flow.luck * ramped * fifo;
                for (sc, u) in flow.scaled.iter_mut().zip(&flow.path) {
                    sc.weight = u.weight * flow.share;
                }
            }
        }
        let flows = &self.flows;
        let rates = maxmin::solve(&comp, |f| flows[f].scaled.as_slice(), &self.capacity, &mut self.scratch);
        self.retime(now, &comp, &rates)
    }

    /// Sets the solver's `rates` (per unit of share) of `flows`, keeping the loads, and
    /// re-times the flows whose rate changed.
    fn retime(&mut self, now: Time, flows: &[usize], rates: &[f64]) -> Vec<Timer> {
        let mut timers = Vec::new();
        for (&f, &r) in flows.iter().zip(rates) {
            let flow = &mut self.flows[f];
            let r = r * flow.share;
            if flow.rate == r {
                continue;
            }
            for u in &flow.path {
                self.load[u.resource] += (r - flow.rate) * u.weight;
            }
            // Progress at the old rate up to now, then continue at the new one.
            flow.remaining = (flow.remaining - flow.rate * (now.0 - flow.since.0) as f64).max(0.0);
            flow.since = now;
            flow.rate = r;
            if r > 0.0 {
                let at = now + Time(ceil_ns(flow.remaining, r));
                flow.deadline = at;
                // An earlier timer stays: it re-arms when it fires (no stale entry per change).
                if !(flow.pending && flow.timer_at <= at) {
                    flow.version += 1;
                    (flow.timer_at, flow.pending) = (at, true);
                    timers.push(Timer { flow: f, version: flow.version, at, reshare: false, hub: false });
                }
            }
        }
        timers
    }

    /// Whether resource `r` is saturated at the current rates.
    fn tight(&self, r: usize) -> bool {
        self.load[r] >= self.capacity[r] * (1.0 - TIGHT)
    }

    /// The local re-solve: the flows whose rates can change, sorted, and their max-min rates
    /// (per unit of share). Exact, without solving the whole connected component.
    ///
    /// Why it is exact: under max-min fairness every flow has a bottleneck, a saturated
    /// resource on which no flow gets more. A flow's rate can change only through a
    /// saturated resource it shares with a flow whose rate changed; a resource with slack
    /// binds nobody. So the re-solved set is the closure of the change over saturated
    /// resources: the flow that turned active, every flow on a saturated resource of the
    /// change's path, and, transitively, every flow on a saturated resource of a flow already
    /// in. The other flows keep their rates; on the resources with slack that re-solved flows
    /// share with them, the solver sees what they leave. If the new rates saturate one of
    /// those, it joins the closure and the set is solved again. Each flow outside keeps its
    /// bottleneck (no flow whose rate changed crosses it) and each flow inside gets one
    /// inside, so the result is the unique max-min allocation (checked against the reference
    /// solver after every change by a property test).
    fn resolve_local(&mut self, seeds: &[usize], change: Change) -> (Vec<usize>, Vec<f64>) {
        let mut ls = std::mem::take(&mut self.local);
        let mut inside = std::mem::take(&mut ls.inside);
        let mut closure = std::mem::take(&mut ls.closure);
        let mut cut = std::mem::take(&mut ls.cut);
        let mut frontier = std::mem::take(&mut ls.frontier);
        inside.clear();
        closure.clear();
        cut.clear();
        frontier.clear();
        // A leaving flow's caller passes the resources it saturated.
        frontier.extend(seeds.iter().copied().filter(|&r| change == Leaving || self.tight(r)));
        if let Joined(f) = change {
            // Its luck for this busy period (without ramp and queue order, the whole share).
            let flow = &mut self.flows[f];
            if flow.share != flow.base * flow.luck {
                flow.share = flow.base * flow.luck;
                for (sc, u) in flow.scaled.iter_mut().zip(&flow.path) {
                    sc.weight = u.weight * flow.share;
                }
            }
            ls.in_f[f] = true;
            inside.push(f);
            frontier.extend(self.flows[f].path.iter().map(|u| u.resource).filter(|&r| self.tight(r)));
        }
        let rates = loop {
            while let Some(r) = frontier.pop() {
                if std::mem::replace(&mut ls.in_r[r], true) {
                    continue;
                }
                closure.push(r);
                for &f in &self.users[r] {
                    if !std::mem::replace(&mut ls.in_f[f], true) {
                        inside.push(f);
                        frontier.extend(
                            self.flows[f].path.iter().map(|u| u.resource).filter(|&x| !ls.in_r[x] && self.tight(x)),
                        );
                    }
                }
            }
            if inside.is_empty() {
                break Vec::new();
            }
            inside.sort_unstable();
            // What the flows outside leave of the resources with slack that re-solved flows
            // cross: the capacity less the others' load (their load less the re-solved flows').
            for &r in &cut {
                (ls.in_cut[r], ls.acc[r], ls.cap[r]) = (false, 0.0, self.capacity[r]);
            }
            cut.clear();
            for &f in &inside {
                for u in &self.flows[f].path {
                    let r = u.resource;
                    if !ls.in_r[r] {
                        if !std::mem::replace(&mut ls.in_cut[r], true) {
                            cut.push(r);
                        }
                        ls.acc[r] += self.flows[f].rate * u.weight;
                    }
                }
            }
            for &r in &cut {
                // Free of others exactly when every flow on it is re-solved.
                let others =
                    if self.users[r].iter().all(|&f| ls.in_f[f]) { 0.0 } else { (self.load[r] - ls.acc[r]).max(0.0) };
                ls.cap[r] = (self.capacity[r] - others).max(0.0);
                ls.acc[r] = others;
            }
            let flows = &self.flows;
            let rates = maxmin::solve(&inside, |f| flows[f].scaled.as_slice(), &ls.cap, &mut self.scratch);
            // Did the new rates saturate a resource with slack? Then it joins the closure.
            for (&f, &x) in inside.iter().zip(&rates) {
                let flow = &self.flows[f];
                for u in &flow.path {
                    if !ls.in_r[u.resource] {
                        ls.acc[u.resource] += x * flow.share * u.weight;
                    }
                }
            }
            frontier.extend(cut.iter().copied().filter(|&r| ls.acc[r] >= self.capacity[r] * (1.0 - TIGHT)));
            if frontier.is_empty() {
                break rates;
            }
            // Back to the others' load only, for the next round.
            for &r in &cut {
                (ls.in_cut[r], ls.acc[r], ls.cap[r]) = (false, 0.0, self.capacity[r]);
            }
            cut.clear();
        };
        for &r in &cut {
            (ls.in_cut[r], ls.acc[r], ls.cap[r]) = (false, 0.0, self.capacity[r]);
        }
        for &r in &closure {
            ls.in_r[r] = false;
        }
        for &f in &inside {
            ls.in_f[f] = false;
        }
        (ls.closure, ls.cut, ls.frontier) = (closure, cut, frontier);
        self.local = ls;
        (inside, rates)
    }

    /// Active flows connected to `seeds` through shared resources, sorted by index.
    fn component(&self, seeds: &[usize]) -> Vec<usize> {
        let mut seen_r = vec![false; self.capacity.len()];
        let mut seen_f = vec![false; self.flows.len()];
        let mut stack: Vec<usize> = seeds.to_vec();
        let mut comp = Vec::new();
        while let Some(r) = stack.pop() {
            if std::mem::replace(&mut seen_r[r], true) {
                continue;
            }
            for &f in &self.users[r] {
                if !std::mem::replace(&mut seen_f[f], true) {
                    comp.push(f);
                    stack.extend(self.flows[f].path.iter().map(|u| u.resource).filter(|&x| !seen_r[x]));
                }
            }
        }
        comp.sort_unstable();
        comp
    }

    /// Rates of all active flows from scratch with the reference solver (tests).
    pub fn reference_rates(&self) -> Vec<(usize, f64)> {
        let active: Vec<usize> = (0..self.flows.len()).filter(|&f| !self.flows[f].queue.is_empty()).collect();
        let paths: Vec<Vec<Use>> = active.iter().map(|&f| self.flows[f].scaled.clone()).collect();
        let rates = maxmin::reference(&paths, &self.capacity);
        active.iter().zip(rates).map(|(&f, r)| (f, r * self.flows[f].share)).collect()
    }
}

/// `bytes / rate` rounded up to whole ns (0 for nothing left).
fn ceil_ns(bytes: f64, rate: f64) -> u64 {
    if bytes <= 0.0 {
        return 0;
    }
    // A starved flow (rate ~0) finishes "never": far beyond any run, without overflowing.
    let t = (bytes / rate).ceil();
    if t.is_finite() { (t as u64).min(u64::MAX / 4) } else { u64::MAX / 4 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(r: usize) -> Vec<Use> {
        vec![Use { resource: r, weight: 1.0 }]
    }

    type Queue = crate::engine::EventQueue<Timer>;

    /// Schedules `timers` and plays events up to `until`, reshares included; appends
    /// (tag, completion time) to `done` in completion order.
    fn play(q: &mut Queue, net: &mut Network<u32>, timers: Vec<Timer>, until: Time, done: &mut Vec<(u32, Time)>) {
        for t in timers {
            q.schedule(t.at, t);
        }
        while q.peek_time().is_some_and(|t| t <= until) {
            let (now, t) = q.pop().unwrap();
            let more = if t.reshare {
                net.reshare(now, t.flow, t.version)
            } else {
                match net.complete(now, t.flow, t.version) {
                    Completion::Done(msg, more) => {
                        done.push((msg.tag, now));
                        more
                    }
                    Completion::Later(more) => more,
                    Completion::Stale => continue,
                }
            };
            for t in more {
                q.schedule(t.at, t);
            }
        }
    }

    /// Runs the network to quiescence; returns (tag, completion time) in completion order.
    fn drain(net: &mut Network<u32>, timers: Vec<Timer>) -> Vec<(u32, Time)> {
        let mut done = Vec::new();
        play(&mut Queue::new(), net, timers, Time(u64::MAX), &mut done);
        done
    }

    #[test]
    fn two_connections_share_then_one_speeds_up() {
        // NIC of 1 byte/ns. Flow a sends 100 B, flow b 300 B, both at t = 0.
        // Each gets 0.5 B/ns: a finishes at 200 ns, having let b send 100 B;
        // b then has 200 B left at 1 B/ns: finishes at 400 ns.
        let mut net = Network::new();
        let nic = net.add_resource(1.0);
        let a = net.add_flow(one(nic));
        let b = net.add_flow(one(nic));
        let mut timers = net.send(Time(0), a, Message { bytes: 100.0, tag: 1 });
        timers.extend(net.send(Time(0), b, Message { bytes: 300.0, tag: 2 }));
        assert_eq!(drain(&mut net, timers), vec![(1, Time(200)), (2, Time(400))]);
        assert_eq!(net.carried(nic), 400.0);
    }

    #[test]
    fn messages_queue_inside_their_connection() {
        // Three 100 B messages on one connection at 1 B/ns finish at 100, 200, 300 ns; the
        // rate is solved once, when the connection turns active, and once when it goes idle.
        let mut net = Network::new();
        let nic = net.add_resource(1.0);
        let a = net.add_flow(one(nic));
        let mut timers = Vec::new();
        for tag in 0..3 {
            timers.extend(net.send(Time(0), a, Message { bytes: 100.0, tag }));
        }
        assert_eq!(drain(&mut net, timers), vec![(0, Time(100)), (1, Time(200)), (2, Time(300))]);
        assert_eq!(net.resolves(), 2);
    }

    fn one_link(net: &mut Network<u32>, flows: usize) -> Vec<usize> {
        let r = net.add_resource(1.0);
        one_link_from(net, r, flows)
    }

    #[test]
    fn unfair_shares_split_a_link_unequally_and_use_all_of_it() {
        let mut net = Network::new();
        net.set_unfairness(0.5, 11);
        let f = one_link(&mut net, 2);
        net.send(Time::ZERO, f[0], Message { bytes: 1e6, tag: 0 });
        net.send(Time::ZERO, f[1], Message { bytes: 1e6, tag: 1 });
        let (a, b) = (net.rate(f[0]), net.rate(f[1]));
        assert!((a + b - 1.0).abs() < 1e-12, "the link stays full: {a} + {b}");
        assert!((a - b).abs() > 1e-3, "shares differ: {a} vs {b}");
        // Same seed, same shares.
        let mut again = Network::new();
        again.set_unfairness(0.5, 11);
        let g = one_link(&mut again, 2);
        again.send(Time::ZERO, g[0], Message { bytes: 1e6, tag: 0 });
        again.send(Time::ZERO, g[1], Message { bytes: 1e6, tag: 1 });
        assert_eq!((again.rate(g[0]), again.rate(g[1])), (a, b));
    }

    #[test]
    fn one_hosts_connections_share_its_link_equally_and_draw_one_luck_per_busy_period() {
        // Two hosts' connections into one link: their lucks differ.
        let mut net = Network::new();
        net.set_unfairness(0.8, 5);
        let (out0, out3, into1) = (net.add_resource(1.0), net.add_resource(1.0), net.add_resource(1.0));
        let a = net.add_flow(vec![Use { resource: out0, weight: 1.0 }, Use { resource: into1, weight: 1.0 }]);
        let c = net.add_flow(vec![Use { resource: out3, weight: 1.0 }, Use { resource: into1, weight: 1.0 }]);
        net.set_sender(a, out0);
        net.set_sender(c, out3);
        let mut timers = net.send(Time::ZERO, a, Message { bytes: 1e3, tag: 0 });
        timers.extend(net.send(Time::ZERO, c, Message { bytes: 1e3, tag: 2 }));
        let (ra, rc) = (net.rate(a), net.rate(c));
        assert!((ra + rc - 1.0).abs() < 1e-12, "host 1's link stays full: {ra} + {rc}");
        assert!((ra - rc).abs() > 1e-3, "hosts 0 and 3 draw different lucks: {ra} vs {rc}");
        // A new busy period of each host draws a new luck: the split changes.
        drain(&mut net, timers);
        net.send(Time(10_000), a, Message { bytes: 1e3, tag: 3 });
        net.send(Time(10_000), c, Message { bytes: 1e3, tag: 4 });
        assert!((net.rate(a) - ra).abs() > 1e-6, "the second busy period has its own luck: {ra}");
        assert!((net.rate(a) + net.rate(c) - 1.0).abs() < 1e-12);
        // One host's connections out of its own link, however unlucky: an exact split, the
        // second joining while the first is busy.
        let mut solo = Network::new();
        solo.set_unfairness(0.8, 5);
        let out = solo.add_resource(1.0);
        let f = one_link_from(&mut solo, out, 2);
        for &g in &f {
            solo.set_sender(g, out);
        }
        solo.send(Time::ZERO, f[0], Message { bytes: 1e3, tag: 0 });
        solo.send(Time(100), f[1], Message { bytes: 1e3, tag: 1 });
        assert_eq!((solo.rate(f[0]), solo.rate(f[1])), (0.5, 0.5));
        // Without senders the same two connections draw their own lucks.
        let mut apart = Network::new();
        apart.set_unfairness(0.8, 5);
        let out = apart.add_resource(1.0);
        let f = one_link_from(&mut apart, out, 2);
        apart.send(Time::ZERO, f[0], Message { bytes: 1e3, tag: 0 });
        apart.send(Time(100), f[1], Message { bytes: 1e3, tag: 1 });
        assert!((apart.rate(f[0]) - 0.5).abs() > 1e-3, "{}", apart.rate(f[0]));
    }

    fn one_link_from(net: &mut Network<u32>, r: usize, flows: usize) -> Vec<usize> {
        (0..flows).map(|_| net.add_flow(vec![Use { resource: r, weight: 1.0 }])).collect()
    }

    #[test]
    fn a_late_burst_waits_for_the_queue_ahead_of_it_then_shares() {
        // Link of 1 B/ns, time constant 10 ns, window 500 ns. Two 200 B bursts, the second
        // 100 ns late: it gets exp(-10) of a share, so the first finishes almost as if alone and
        // the second takes the link after it.
        let mut net = Network::new();
        net.set_fifo(10.0, 500.0);
        let f = one_link(&mut net, 2);
        let mut timers = net.send(Time::ZERO, f[0], Message { bytes: 200.0, tag: 0 });
        timers.extend(net.send(Time(100), f[1], Message { bytes: 200.0, tag: 1 }));
        let e10 = (-10.0f64).exp();
        assert!((net.rate(f[1]) - e10 / (1.0 + e10)).abs() < 1e-12, "{}", net.rate(f[1]));
        let done = drain(&mut net, timers);
        assert!(done[0].0 == 0 && (200..=201).contains(&done[0].1.0), "{done:?}");
        assert!(done[1].0 == 1 && (400..=401).contains(&done[1].1.0), "{done:?}");
        // Long transfers: the late one waits out the window (500 ns), then they share equally.
        let mut net = Network::new();
        net.set_fifo(10.0, 500.0);
        let f = one_link(&mut net, 2);
        let mut timers = net.send(Time::ZERO, f[0], Message { bytes: 1e4, tag: 0 });
        timers.extend(net.send(Time(100), f[1], Message { bytes: 1e4, tag: 1 }));
        let (mut q, mut done) = (Queue::new(), Vec::new());
        play(&mut q, &mut net, timers, Time(599), &mut done);
        assert!(net.rate(f[1]) < 1e-4, "{}", net.rate(f[1]));
        play(&mut q, &mut net, Vec::new(), Time(600), &mut done);
        assert_eq!((net.rate(f[0]), net.rate(f[1])), (0.5, 0.5));
        // Off: fair from the start.
        let mut net = Network::new();
        net.set_fifo(0.0, 500.0);
        let f = one_link(&mut net, 2);
        net.send(Time::ZERO, f[0], Message { bytes: 200.0, tag: 0 });
        net.send(Time(100), f[1], Message { bytes: 200.0, tag: 1 });
        assert_eq!(net.rate(f[1]), 0.5);
    }

    #[test]
    fn a_new_connection_ramps_up_to_its_share() {
        // Deficit 1, ramp 4000 ns in 4 steps. Flow 0 starts at 0 and has ramped by 4000 ns when
        // flow 1 starts: flow 1 has exp(-1) of a share, so flow 0 gets e / (1 + e) of the link;
        // at the step at 6000 ns flow 1 has exp(-0.5); from 8000 ns they share equally.
        let mut net = Network::new();
        net.set_ramp(1.0, 4000.0);
        let f = one_link(&mut net, 2);
        let mut q = crate::engine::EventQueue::new();
        for t in net.send(Time::ZERO, f[0], Message { bytes: 1e9, tag: 0 }) {
            q.schedule(t.at, t);
        }
        // Play flow 0's reshare timers (they change nothing: it is alone).
        while q.peek_time().is_some_and(|t| t <= Time(4000)) {
            let (now, t) = q.pop().unwrap();
            assert!(t.reshare);
            for t in net.reshare(now, t.flow, t.version) {
                q.schedule(t.at, t);
            }
        }
        assert_eq!(net.rate(f[0]), 1.0);
        for t in net.send(Time(4000), f[1], Message { bytes: 1e9, tag: 1 }) {
            q.schedule(t.at, t);
        }
        let e = std::f64::consts::E;
        assert!((net.rate(f[0]) - e / (1.0 + e)).abs() < 1e-12, "{}", net.rate(f[0]));
        let mut at = |until: u64, q: &mut crate::engine::EventQueue<Timer>| {
            while q.peek_time().is_some_and(|t| t <= Time(until)) {
                let (now, t) = q.pop().unwrap();
                if t.reshare {
                    for t in net.reshare(now, t.flow, t.version) {
                        q.schedule(t.at, t);
                    }
                }
            }
            (net.rate(f[0]), net.rate(f[1]))
        };
        let (a, _) = at(6000, &mut q);
        assert!((a - e.sqrt() / (1.0 + e.sqrt())).abs() < 1e-12, "{a}");
        let (a, b) = at(8000, &mut q);
        assert!((a - 0.5).abs() < 1e-12 && (b - 0.5).abs() < 1e-12, "{a} {b}");
    }

    #[test]
    fn a_starved_flow_is_timed_far_ahead_without_overflow() {
        // Next to a flow of priority 1e300, a plain flow gets ~1e-300 of the link: its
        // completion lies beyond any run but is a valid time, after now.
        let mut net: Network<u32> = Network::new();
        let f = one_link(&mut net, 2);
        net.set_priority(f[0], 1e300);
        net.send(Time(5), f[0], Message { bytes: 1e9, tag: 0 });
        let timers = net.send(Time(5), f[1], Message { bytes: 1e9, tag: 1 });
        let starved = timers.iter().find(|t| t.flow == f[1]).expect("a timer for the starved flow");
        assert!(starved.at > Time(5) && starved.at.0 >= u64::MAX / 4, "{starved:?}");
    }

    #[test]
    fn a_priority_flow_takes_a_shared_resource_first() {
        // A CPU of capacity 1: a network flow needing 0.5 CPU per byte/ns at up to 1 byte/ns
        // (its NIC) has priority; a compute flow (own core, capacity 1) gets what is left.
        let mut net: Network<u32> = Network::new();
        let cpu = net.add_resource(1.0);
        let nic = net.add_resource(1.0);
        let core = net.add_resource(1.0);
        let netf = net.add_flow(vec![Use { resource: nic, weight: 1.0 }, Use { resource: cpu, weight: 0.5 }]);
        let comp = net.add_flow(vec![Use { resource: core, weight: 1.0 }, Use { resource: cpu, weight: 1.0 }]);
        net.set_priority(netf, 1e4);
        net.send(Time::ZERO, comp, Message { bytes: 1e9, tag: 0 });
        assert_eq!(net.rate(comp), 1.0, "alone, compute has its core");
        net.send(Time::ZERO, netf, Message { bytes: 1e9, tag: 1 });
        assert!((net.rate(netf) - 1.0).abs() < 1e-12, "the network flow runs at its NIC's rate: {}", net.rate(netf));
        assert!((net.rate(comp) - 0.5).abs() < 1e-9, "compute gets the CPU left: {}", net.rate(comp));
    }
}
