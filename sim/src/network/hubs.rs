//! The hub fast path: connections that meet at a few busy *hubs* (the parameter servers'
//! NICs) timed by one virtual clock per hub instead of a max-min re-solve per change, with
//! exactly the max-min rates.
//!
//! Each connection through a hub crosses exactly two resources: the hub and a *leaf* (a
//! worker's NIC) that only such connections use. Under max-min fairness every busy hub
//! connection gets the hub's *level* (bytes per ns per unit of share), unless its leaf binds
//! it lower. So:
//!
//! - A connection whose leaf does not bind is on its hub's **clock**: the clock advances by
//!   the hub's level per ns, and a message of `B` bytes that starts when it reads `V` ends
//!   when it reads `V + B / share`. A hub keeps the end marks of its connections in a heap
//!   and one timer for the least: a connection that turns busy or idle, or a level that
//!   changes, costs a heap operation and no re-timing of the others. With jittered workers,
//!   where every connection is its own flow, this replaces re-solves that grew with the
//!   square of the workers.
//! - The leaves that bind (*bound* leaves, usually a few at a time: a worker pushing to
//!   shards that are otherwise idle) have their connections timed one by one. Their rates and
//!   the levels of the hubs they cross come from a max-min solve of a small problem: those
//!   hubs, each with the connections on its clock as one flow of their summed weight, and the
//!   bound leaves with their own connections. Every other hub's level is its capacity over
//!   its busy weight.
//!
//! Why it is exact: after every change the network checks that each leaf not marked bound
//! carries at most its capacity at the hubs' levels (a bound in O(hubs) first; then the
//! leaves the change can overload, each a sum over its own few connections); a leaf that
//! would carry more is marked bound and the small problem solved again, and a bound leaf
//! left with slack is unmarked. Then every connection has a saturated bottleneck on which it
//! gets the most: its hub (on a clock, or bound and hub-limited) or its bound leaf, which is
//! the max-min allocation (unique). Completion times differ from the full solver's only by
//! the rounding of a different sum, which a property test checks.

use topolab_core::units::Time;

use super::{Message, Network, Timer, ceil_ns, maxmin};
use crate::maxmin::Use;

/// A flow's place in the hub structure.
#[derive(Debug, Clone, Copy)]
pub(super) struct HubUse {
    /// Index of its hub in [`Hubs::hubs`].
    pub(super) hub: usize,
    /// Its leaf resource.
    pub(super) leaf: usize,
    /// Connections on the hub (the path's weight there).
    on_hub: f64,
    /// Connections on the leaf.
    on_leaf: f64,
}

/// One hub.
#[derive(Debug, Clone)]
struct Hub {
    resource: usize,
    capacity: f64,
    /// Connections on the clock: their number and summed weight (connections x share).
    on_clock: u32,
    weight: f64,
    /// Bytes per ns per unit of share of the connections on the clock.
    level: f64,
    /// Virtual clock (bytes per unit of share) at `at`.
    clock: f64,
    at: Time,
    /// End marks of the clock's connections, least first (positions in [`Hubs::end_at`]).
    ends: Keyed,
    /// Version of the hub's timer (a newer timer makes older ones stale), and when the
    /// current one fires.
    version: u64,
    timer_at: Option<Time>,
    /// Busy connections of bound leaves through this hub.
    bound: Vec<usize>,
    /// The connections on the clock (flow `f` at `flows[f].member`).
    members: Vec<usize>,
}

impl Hub {
    fn advance(&mut self, now: Time) {
        if self.on_clock > 0 {
            self.clock += self.level * (now.0 - self.at.0) as f64;
        }
        self.at = now;
    }
}

/// The hub structure of a network and its state.
#[derive(Debug, Clone)]
pub(super) struct Hubs {
    hubs: Vec<Hub>,
    /// Hub connections per leaf resource (all of them, busy or not).
    leaf_flows: Vec<Vec<usize>>,
    /// Busy hub connections per leaf resource.
    leaf_busy: Vec<u32>,
    /// Leaves with `k` busy connections, per `k`; and the largest `k` with any.
    with_busy: Vec<u32>,
    most_busy: u32,
    /// Least leaf capacity.
    least_leaf: f64,
    /// Largest share x leaf connections any hub connection has had.
    most_on_leaf: f64,
    /// Leaves marked bound (per resource), and the list of them.
    is_bound: Vec<bool>,
    bound: Vec<usize>,
    /// Per flow: its index in its hub's `ends`, or `usize::MAX`.
    end_at: Vec<usize>,
    /// While held ([`Network::hold`]): the hubs that connections joined, the leaves of those
    /// that went on clocks, and whether one joined as bound (the small problem changed).
    held: bool,
    held_hubs: Vec<usize>,
    held_leaves: Vec<usize>,
    held_bound: bool,
    /// Working arrays of [`Network::settle`], reused.
    work: Work,
    /// Deadlines of the busy bound connections, and their one timer's version and time.
    due: Due,
    due_version: u64,
    due_timer: Option<Time>,
}

/// Working arrays of one settling: the hubs touched and in the problem, the bound busy
/// connections, the problem's paths (flat, with each flow's span), bound leaves with slack.
#[derive(Debug, Clone, Default)]
struct Work {
    touched: Vec<usize>,
    hubs_in: Vec<usize>,
    clocks: Vec<usize>,
    flows: Vec<usize>,
    paths: Vec<Use>,
    spans: Vec<(usize, usize)>,
    ids: Vec<usize>,
    slack: Vec<usize>,
}

/// A binary min-heap of (key, flow) that knows where each flow sits (`at[flow]`, kept by
/// the caller so that several heaps over disjoint flows can share one array), so that a
/// re-keyed flow moves instead of leaving a stale entry behind.
#[derive(Debug, Clone, Default)]
struct Keyed {
    heap: Vec<(u64, usize)>,
}

impl Keyed {
    fn first(&self) -> Option<(u64, usize)> {
        self.heap.first().copied()
    }

    /// Sets flow `f`'s key.
    fn set(&mut self, at: &mut Vec<usize>, f: usize, key: u64) {
        if at.len() <= f {
            at.resize(f + 1, usize::MAX);
        }
        let i = at[f];
        if i == usize::MAX {
            self.heap.push((key, f));
            at[f] = self.heap.len() - 1;
            self.up(at, self.heap.len() - 1);
        } else {
            let old = self.heap[i].0;
            self.heap[i].0 = key;
            if key < old { self.up(at, i) } else { self.down(at, i) }
        }
    }

    /// Takes flow `f` out (no-op when absent).
    fn remove(&mut self, at: &mut [usize], f: usize) {
        let Some(&i) = at.get(f).filter(|&&i| i != usize::MAX) else { return };
        at[f] = usize::MAX;
        let last = self.heap.pop().expect("an entry is listed");
        if i < self.heap.len() {
            self.heap[i] = last;
            at[last.1] = i;
            self.up(at, i);
            self.down(at, at[last.1]);
        }
    }

    fn up(&mut self, at: &mut [usize], mut i: usize) {
        while i > 0 {
            let p = (i - 1) / 2;
            if self.heap[p] <= self.heap[i] {
                break;
            }
            self.swap(at, i, p);
            i = p;
        }
    }

    fn down(&mut self, at: &mut [usize], mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut m = i;
            if l < self.heap.len() && self.heap[l] < self.heap[m] {
                m = l;
            }
            if r < self.heap.len() && self.heap[r] < self.heap[m] {
                m = r;
            }
            if m == i {
                break;
            }
            self.swap(at, i, m);
            i = m;
        }
    }

    fn swap(&mut self, at: &mut [usize], i: usize, j: usize) {
        self.heap.swap(i, j);
        at[self.heap[i].1] = i;
        at[self.heap[j].1] = j;
    }
}

/// Deadlines (ns) of the bound connections; one timer serves them all.
#[derive(Debug, Clone, Default)]
struct Due {
    keys: Keyed,
    /// Per flow: its index in `keys`, or `usize::MAX`.
    at: Vec<usize>,
}

impl Due {
    fn first(&self) -> Option<(u64, usize)> {
        self.keys.first()
    }

    fn set(&mut self, f: usize, deadline: u64) {
        self.keys.set(&mut self.at, f, deadline);
    }

    fn remove(&mut self, f: usize) {
        self.keys.remove(&mut self.at, f);
    }
}

/// End mark as a heap key: non-negative floats order as their bits.
fn key(mark: f64) -> u64 {
    mark.max(0.0).to_bits()
}

/// A completion this close to the clock (relative) has arrived: the timer was rounded up to
/// whole ns, and the clock's sum keeps about 15 digits.
const ARRIVED: f64 = 1e-12;

/// A leaf carrying at least `1 - SLACK` of its capacity binds.
const SLACK: f64 = 1e-9;

impl<T: Copy> Network<T> {
    /// Times the connections through `hubs` by their hubs' clocks (see the module). Returns
    /// whether the structure allows it: without ramp-up or queue order, every flow that
    /// crosses a hub crosses exactly one hub and one leaf, and a leaf carries only such
    /// flows. Call after adding every flow, before sending.
    pub fn use_hubs(&mut self, hubs: &[usize]) -> bool {
        if self.ramp.is_some() || self.fifo.is_some() || hubs.is_empty() {
            return false;
        }
        let mut hub_of = vec![None; self.capacity.len()];
        for (i, &r) in hubs.iter().enumerate() {
            hub_of[r] = Some(i);
        }
        let mut leaf_flows = vec![Vec::new(); self.capacity.len()];
        let mut uses: Vec<Option<HubUse>> = vec![None; self.flows.len()];
        // Resources crossed by a flow that is not a hub connection.
        let mut other = vec![false; self.capacity.len()];
        for (f, flow) in self.flows.iter().enumerate() {
            let on_hub: Vec<&Use> = flow.path.iter().filter(|u| hub_of[u.resource].is_some()).collect();
            if on_hub.is_empty() {
                flow.path.iter().for_each(|u| other[u.resource] = true);
                continue;
            }
            if flow.path.len() != 2 || on_hub.len() != 1 || flow.fair || !flow.queue.is_empty() {
                return false;
            }
            let h = on_hub[0];
            let l = flow.path.iter().find(|u| hub_of[u.resource].is_none()).expect("two uses, one on a hub");
            leaf_flows[l.resource].push(f);
            uses[f] = Some(HubUse {
                hub: hub_of[h.resource].expect("a hub"),
                leaf: l.resource,
                on_hub: h.weight,
                on_leaf: l.weight,
            });
        }
        if (0..self.capacity.len()).any(|r| other[r] && (hub_of[r].is_some() || !leaf_flows[r].is_empty())) {
            return false;
        }
        let least_leaf = (0..self.capacity.len())
            .filter(|&r| !leaf_flows[r].is_empty())
            .map(|r| self.capacity[r])
            .fold(f64::INFINITY, f64::min);
        for (flow, u) in self.flows.iter_mut().zip(uses) {
            flow.hub = u;
        }
        let most = leaf_flows.iter().map(Vec::len).max().unwrap_or(0);
        self.hubs = Some(Hubs {
            hubs: hubs
                .iter()
                .map(|&r| Hub {
                    resource: r,
                    capacity: self.capacity[r],
                    on_clock: 0,
                    weight: 0.0,
                    level: 0.0,
                    clock: 0.0,
                    at: Time::ZERO,
                    ends: Keyed::default(),
                    version: 0,
                    timer_at: None,
                    bound: Vec::new(),
                    members: Vec::new(),
                })
                .collect(),
            leaf_busy: vec![0; self.capacity.len()],
            is_bound: vec![false; self.capacity.len()],
            leaf_flows,
            with_busy: vec![0; most + 1],
            most_busy: 0,
            least_leaf,
            most_on_leaf: 0.0,
            bound: Vec::new(),
            end_at: vec![usize::MAX; self.flows.len()],
            held: false,
            held_hubs: Vec::new(),
            held_leaves: Vec::new(),
            held_bound: false,
            work: Work::default(),
            due: Due::default(),
            due_version: 0,
            due_timer: None,
        });
        true
    }

    fn hs(&self) -> &Hubs {
        self.hubs.as_ref().expect("hubs in use")
    }

    fn hs_mut(&mut self) -> &mut Hubs {
        self.hubs.as_mut().expect("hubs in use")
    }

    /// Hub connection `f` (its share drawn) turned busy with `bytes` at its head.
    pub(super) fn hub_join(&mut self, now: Time, f: usize, bytes: f64) -> Vec<Timer> {
        let u = self.flows[f].hub.expect("a hub connection");
        {
            let flow = &mut self.flows[f];
            for (sc, p) in flow.scaled.iter_mut().zip(&flow.path) {
                sc.weight = p.weight * flow.share;
            }
            flow.remaining = bytes;
            flow.since = now;
            flow.rate = 0.0;
        }
        let share = self.flows[f].share;
        let hs = self.hs_mut();
        hs.count_busy(u.leaf, true);
        hs.most_on_leaf = hs.most_on_leaf.max(share * u.on_leaf);
        if hs.held {
            // Levels and bindings wait for [`Network::release`], at the same instant.
            hs.held_hubs.push(u.hub);
            if hs.is_bound[u.leaf] {
                hs.held_bound = true;
                hs.hubs[u.hub].bound.push(f);
                self.flows[f].on_clock = false;
            } else {
                hs.held_leaves.push(u.leaf);
                self.onto_clock(now, f, bytes);
            }
            return Vec::new();
        }
        if hs.is_bound[u.leaf] {
            hs.hubs[u.hub].bound.push(f);
            self.flows[f].on_clock = false;
            return self.settle(now, &[u.hub]);
        }
        self.onto_clock(now, f, bytes);
        if !self.hs().hubs[u.hub].bound.is_empty() {
            // The hub is in the small problem: its clock's weight changed.
            return self.settle(now, &[u.hub]);
        }
        self.free_level(now, u.hub);
        // The hub's level fell: only this connection's own leaf can now carry too much.
        if !self.bound_holds() && !self.leaf_fits(u.leaf) {
            self.bind(now, u.leaf);
            return self.settle(now, &[u.hub]);
        }
        self.hub_timer(now, u.hub).into_iter().collect()
    }

    /// Holds back the re-levelling that connections joining hubs cause until
    /// [`Network::release`] at the same instant: an event that starts many transfers at once
    /// (a worker pushing to every shard) settles the hubs once instead of once per transfer.
    /// No-op without hubs.
    pub fn hold(&mut self) {
        if let Some(hs) = self.hubs.as_mut() {
            hs.held = true;
        }
    }

    /// Ends a [`Network::hold`] at `now` (the instant of the sends it held): re-levels the hubs
    /// that connections joined, binds the leaves that now carry too much, and returns the
    /// timers to schedule. The result is what sending one by one gives.
    pub fn release(&mut self, now: Time) -> Vec<Timer> {
        let Some(hs) = self.hubs.as_mut() else { return Vec::new() };
        hs.held = false;
        if hs.held_hubs.is_empty() {
            return Vec::new();
        }
        let mut hubs = std::mem::take(&mut hs.held_hubs);
        let mut leaves = std::mem::take(&mut hs.held_leaves);
        let bound = std::mem::replace(&mut hs.held_bound, false);
        hubs.sort_unstable();
        hubs.dedup();
        let timers = if bound || hubs.iter().any(|&h| !self.hs().hubs[h].bound.is_empty()) {
            self.settle(now, &hubs)
        } else {
            for &h in &hubs {
                self.free_level(now, h);
            }
            // The joined hubs' levels fell: only the joining connections' leaves can now
            // carry too much.
            leaves.sort_unstable();
            leaves.dedup();
            if !self.bound_holds() {
                leaves.retain(|&l| !self.hs().is_bound[l] && !self.leaf_fits(l));
            } else {
                leaves.clear();
            }
            if leaves.is_empty() {
                hubs.iter().filter_map(|&h| self.hub_timer(now, h)).collect()
            } else {
                for &l in &leaves {
                    self.bind(now, l);
                }
                self.settle(now, &hubs)
            }
        };
        // Keep the buffers.
        let hs = self.hs_mut();
        hubs.clear();
        leaves.clear();
        hs.held_hubs = hubs;
        hs.held_leaves = leaves;
        timers
    }

    /// Puts busy connection `f` with `bytes` left on its hub's clock.
    fn onto_clock(&mut self, now: Time, f: usize, bytes: f64) {
        let u = self.flows[f].hub.expect("a hub connection");
        let hs = self.hubs.as_mut().expect("hubs in use");
        let hub = &mut hs.hubs[u.hub];
        hub.advance(now);
        let flow = &mut self.flows[f];
        hub.on_clock += 1;
        hub.weight += u.on_hub * flow.share;
        flow.on_clock = true;
        flow.mark = hub.clock + bytes / flow.share;
        hub.ends.set(&mut hs.end_at, f, key(flow.mark));
        flow.member = hub.members.len();
        hub.members.push(f);
        // Any per-flow timer it had is stale.
        flow.version += 1;
        flow.pending = false;
    }

    /// Takes busy connection `f` off its hub's clock; returns the bytes it has left.
    fn off_clock(&mut self, now: Time, f: usize) -> f64 {
        let u = self.flows[f].hub.expect("a hub connection");
        let hs = self.hubs.as_mut().expect("hubs in use");
        let hub = &mut hs.hubs[u.hub];
        hub.advance(now);
        hub.ends.remove(&mut hs.end_at, f);
        let at = self.flows[f].member;
        hub.members.swap_remove(at);
        if let Some(&moved) = hub.members.get(at) {
            self.flows[moved].member = at;
        }
        let flow = &mut self.flows[f];
        let left = ((flow.mark - hub.clock) * flow.share).max(0.0);
        hub.on_clock -= 1;
        hub.weight = if hub.on_clock == 0 { 0.0 } else { hub.weight - u.on_hub * flow.share };
        if hub.on_clock == 0 {
            // A fresh clock keeps the sums small.
            (hub.clock, hub.level) = (0.0, 0.0);
        }
        flow.on_clock = false;
        left
    }

    /// The level of hub `h` outside the small problem: its capacity over its clock's weight.
    fn free_level(&mut self, now: Time, h: usize) {
        let hub = &mut self.hs_mut().hubs[h];
        hub.advance(now);
        hub.level = if hub.on_clock == 0 { 0.0 } else { hub.capacity / hub.weight };
    }

    /// Handles a hub's timer: the head message that ended (if one did) and the timers.
    pub(super) fn hub_timer_fired(&mut self, now: Time, t: Timer) -> (Option<(usize, Message<T>)>, Vec<Timer>) {
        let h = t.flow;
        if h == self.hs().hubs.len() {
            return self.due_fired(now, t);
        }
        let hs = self.hubs.as_mut().expect("hubs in use");
        let hub = &mut hs.hubs[h];
        if hub.version != t.version {
            return (None, Vec::new());
        }
        hub.timer_at = None;
        hub.advance(now);
        let Some((mark, f)) = hub.ends.first() else { return (None, Vec::new()) };
        let mark = f64::from_bits(mark);
        if mark > hub.clock + ARRIVED * hub.clock.max(1.0) {
            // Rounding left it a hair short: again, at least a ns later.
            let mut t = self.hub_timer(now, h);
            if let Some(t) = t.as_mut().filter(|t| t.at <= now) {
                t.at = now + Time(1);
                self.hs_mut().hubs[h].timer_at = Some(t.at);
            }
            return (None, t.into_iter().collect());
        }
        let clock = hub.clock;
        let (msg, next) = self.end_head(now, f);
        let flow = &mut self.flows[f];
        if let Some(bytes) = next {
            // Same connection, same share: the next message starts at once.
            flow.mark = clock + bytes / flow.share;
            let hs = self.hubs.as_mut().expect("hubs in use");
            hs.hubs[h].ends.set(&mut hs.end_at, f, key(flow.mark));
            return (Some((f, msg)), self.hub_timer(now, h).into_iter().collect());
        }
        // Idle: it leaves the clock, and the hub's level rises for the rest.
        if let Some(s) = flow.sender {
            self.senders[s].busy -= 1;
        }
        flow.version += 1;
        flow.rate = 0.0;
        let u = flow.hub.expect("a hub connection");
        self.off_clock(now, f);
        self.hs_mut().count_busy(u.leaf, false);
        if !self.hs().hubs[h].bound.is_empty() {
            return (Some((f, msg)), self.settle(now, &[h]));
        }
        self.free_level(now, h);
        if !self.bound_holds() {
            let over = self.overloaded();
            if !over.is_empty() {
                for l in over {
                    self.bind(now, l);
                }
                return (Some((f, msg)), self.settle(now, &[h]));
            }
        }
        (Some((f, msg)), self.hub_timer(now, h).into_iter().collect())
    }

    /// A connection of a bound leaf went idle (its last message ended).
    fn hub_bound_idle(&mut self, now: Time, f: usize) -> Vec<Timer> {
        let u = self.flows[f].hub.expect("a hub connection");
        let flow = &mut self.flows[f];
        flow.version += 1;
        flow.rate = 0.0;
        flow.pending = false;
        let hs = self.hs_mut();
        hs.count_busy(u.leaf, false);
        let list = &mut hs.hubs[u.hub].bound;
        let i = list.iter().position(|&g| g == f).expect("a bound connection is listed on its hub");
        list.swap_remove(i);
        self.settle(now, &[u.hub])
    }

    /// Marks leaf `l` bound: its connections on clocks come off them, to be timed one by one.
    fn bind(&mut self, now: Time, l: usize) {
        let hs = self.hs_mut();
        if std::mem::replace(&mut hs.is_bound[l], true) {
            return;
        }
        hs.bound.push(l);
        for i in 0..hs.leaf_flows[l].len() {
            let f = self.hs().leaf_flows[l][i];
            if self.flows[f].on_clock {
                let left = self.off_clock(now, f);
                let flow = &mut self.flows[f];
                (flow.remaining, flow.since, flow.rate, flow.pending) = (left, now, 0.0, false);
                let h = flow.hub.expect("a hub connection").hub;
                self.hs_mut().hubs[h].bound.push(f);
            }
        }
    }

    /// Re-solves the small problem (hubs crossed by bound leaves' connections, plus the hubs
    /// `changed`), re-levels the hubs, re-times the bound connections, unmarks bound leaves
    /// left with slack and marks leaves that now carry too much, until no leaf does; returns
    /// the timers to schedule.
    fn settle(&mut self, now: Time, changed: &[usize]) -> Vec<Timer> {
        let mut timers = Vec::new();
        let mut w = std::mem::take(&mut self.hs_mut().work);
        w.touched.clear();
        w.touched.extend_from_slice(changed);
        for round in 0.. {
            assert!(round < 10_000, "the hubs' levels settle (bound leaves only grow between unmarkings)");
            // The problem: every bound connection, and one flow per hub it crosses for the
            // hub's clock.
            w.hubs_in.clear();
            w.flows.clear();
            w.paths.clear();
            w.spans.clear();
            for &l in &self.hs().bound {
                for &f in &self.hs().leaf_flows[l] {
                    let flow = &self.flows[f];
                    if !flow.queue.is_empty() {
                        w.flows.push(f);
                        w.hubs_in.push(flow.hub.expect("a hub connection").hub);
                        w.spans.push((w.paths.len(), w.paths.len() + flow.scaled.len()));
                        w.paths.extend_from_slice(&flow.scaled);
                    }
                }
            }
            w.hubs_in.sort_unstable();
            w.hubs_in.dedup();
            w.clocks.clear();
            w.clocks.extend(w.hubs_in.iter().copied().filter(|&h| self.hs().hubs[h].on_clock > 0));
            w.touched.extend_from_slice(&w.hubs_in);
            w.touched.sort_unstable();
            w.touched.dedup();
            for &h in &w.clocks {
                let hub = &self.hs().hubs[h];
                w.spans.push((w.paths.len(), w.paths.len() + 1));
                w.paths.push(Use { resource: hub.resource, weight: hub.weight });
            }
            w.ids.clear();
            w.ids.extend(0..w.spans.len());
            let (paths, spans) = (&w.paths, &w.spans);
            let rates = maxmin::solve(&w.ids, |i| &paths[spans[i].0..spans[i].1], &self.capacity, &mut self.scratch);
            // Levels: from the solve for the hubs in it, capacity over weight for the others.
            let n = w.flows.len();
            for (k, &h) in w.clocks.iter().enumerate() {
                let hub = &mut self.hs_mut().hubs[h];
                hub.advance(now);
                hub.level = rates[n + k];
            }
            for &h in &w.touched {
                if w.hubs_in.binary_search(&h).is_err() {
                    self.free_level(now, h);
                }
            }
            self.retime_bound(now, &w.flows, &rates[..n]);
            // Bound leaves left with slack: their connections are hub-limited, back on clocks
            // (then solved again without them).
            w.slack.clear();
            for &l in &self.hs().bound {
                let load: f64 = self.hs().leaf_flows[l]
                    .iter()
                    .map(|&f| self.flows[f].rate * self.flows[f].hub.expect("a hub connection").on_leaf)
                    .sum();
                if load < self.capacity[l] * (1.0 - SLACK) {
                    w.slack.push(l);
                }
            }
            if !w.slack.is_empty() {
                for &l in &w.slack {
                    self.unbind(now, l);
                }
                continue;
            }
            // Leaves that now carry too much.
            if self.bound_holds() {
                break;
            }
            let over = self.overloaded();
            if over.is_empty() {
                break;
            }
            for l in over {
                self.bind(now, l);
            }
        }
        for &h in &w.touched {
            timers.extend(self.hub_timer(now, h));
        }
        timers.extend(self.due_timer(now));
        self.hs_mut().work = w;
        timers
    }

    /// Sets the bound connections' rates (per unit of share) and deadlines.
    fn retime_bound(&mut self, now: Time, flows: &[usize], rates: &[f64]) {
        let mut due = std::mem::take(&mut self.hs_mut().due);
        for (&f, &r) in flows.iter().zip(rates) {
            let flow = &mut self.flows[f];
            let r = r * flow.share;
            if flow.rate == r {
                continue;
            }
            // Progress at the old rate up to now, then continue at the new one.
            flow.remaining = (flow.remaining - flow.rate * (now.0 - flow.since.0) as f64).max(0.0);
            flow.since = now;
            flow.rate = r;
            if r > 0.0 {
                due.set(f, now.0 + ceil_ns(flow.remaining, r));
            } else {
                due.remove(f);
            }
        }
        self.hs_mut().due = due;
    }

    /// The bound connections' timer, if it needs a new one (see [`Network::hub_timer`]).
    fn due_timer(&mut self, now: Time) -> Option<Timer> {
        let hubs = self.hs().hubs.len();
        let hs = self.hs_mut();
        let (at, _) = hs.due.first()?;
        let at = Time(at.max(now.0));
        if hs.due_timer.is_some_and(|t| t <= at) {
            return None;
        }
        hs.due_version += 1;
        hs.due_timer = Some(at);
        Some(Timer { flow: hubs, version: hs.due_version, at, reshare: false, hub: true })
    }

    /// Handles the bound connections' timer: the head message that ended (if one did).
    fn due_fired(&mut self, now: Time, t: Timer) -> (Option<(usize, Message<T>)>, Vec<Timer>) {
        let hs = self.hs_mut();
        if hs.due_version != t.version {
            return (None, Vec::new());
        }
        hs.due_timer = None;
        let Some((at, f)) = hs.due.first() else { return (None, Vec::new()) };
        if at > now.0 {
            return (None, self.due_timer(now).into_iter().collect());
        }
        hs.due.remove(f);
        let (msg, next) = self.end_head(now, f);
        let flow = &mut self.flows[f];
        if let Some(bytes) = next {
            // Same connection, same rate: the next message starts at once.
            (flow.remaining, flow.since) = (bytes, now);
            let deadline = now.0 + ceil_ns(flow.remaining, flow.rate);
            self.hs_mut().due.set(f, deadline);
            return (Some((f, msg)), self.due_timer(now).into_iter().collect());
        }
        if let Some(s) = flow.sender {
            self.senders[s].busy -= 1;
        }
        let mut timers = self.hub_bound_idle(now, f);
        timers.extend(self.due_timer(now));
        (Some((f, msg)), timers)
    }

    /// Unmarks bound leaf `l`: its busy connections go back on their hubs' clocks.
    fn unbind(&mut self, now: Time, l: usize) {
        let hs = self.hs_mut();
        hs.is_bound[l] = false;
        hs.bound.retain(|&x| x != l);
        for i in 0..hs.leaf_flows[l].len() {
            let f = self.hs().leaf_flows[l][i];
            if self.flows[f].queue.is_empty() {
                continue;
            }
            let flow = &self.flows[f];
            let left = (flow.remaining - flow.rate * (now.0 - flow.since.0) as f64).max(0.0);
            let h = flow.hub.expect("a hub connection").hub;
            let hs = self.hs_mut();
            hs.hubs[h].bound.retain(|&g| g != f);
            hs.due.remove(f);
            self.onto_clock(now, f, left);
            self.flows[f].rate = 0.0;
        }
    }

    /// Whether the cheap bound says no leaf can bind: the busiest leaf's connections, each at
    /// the highest hub level and the largest share, fit the smallest leaf.
    fn bound_holds(&self) -> bool {
        let hs = self.hs();
        let top = hs.hubs.iter().filter(|h| h.on_clock > 0).map(|h| h.level).fold(0.0, f64::max);
        f64::from(hs.most_busy) * hs.most_on_leaf * top <= hs.least_leaf * (1.0 - SLACK)
    }

    /// Whether leaf `l` (not bound) carries at most its capacity at the hubs' levels.
    fn leaf_fits(&self, l: usize) -> bool {
        let hs = self.hs();
        let load: f64 = hs.leaf_flows[l]
            .iter()
            .filter(|&&g| self.flows[g].on_clock)
            .map(|&g| {
                let flow = &self.flows[g];
                let u = flow.hub.expect("a hub connection");
                hs.hubs[u.hub].level * flow.share * u.on_leaf
            })
            .sum();
        load <= self.capacity[l] * (1.0 + ARRIVED)
    }

    /// The leaves not bound that carry too much at the hubs' levels. Only a leaf with a
    /// connection on a *hot* hub's clock can: one whose level exceeds the smallest leaf over
    /// the busiest leaf's connections at the largest share (every other leaf fits by that
    /// bound), and hot hubs have few connections.
    fn overloaded(&self) -> Vec<usize> {
        let hs = self.hs();
        let hot = hs.least_leaf * (1.0 - SLACK) / (f64::from(hs.most_busy) * hs.most_on_leaf);
        let mut over: Vec<usize> = hs
            .hubs
            .iter()
            .filter(|h| h.on_clock > 0 && h.level > hot)
            .flat_map(|h| h.members.iter().map(|&f| self.flows[f].hub.expect("a hub connection").leaf))
            .filter(|&l| !self.leaf_fits(l))
            .collect();
        over.sort_unstable();
        over.dedup();
        over
    }

    /// The timer of hub `h`'s next end, if it needs a new one: none when its clock has no
    /// connection or its pending timer is not later (a timer that fires early re-arms, so a
    /// level that falls leaves no stale event behind).
    fn hub_timer(&mut self, now: Time, h: usize) -> Option<Timer> {
        let hub = &mut self.hubs.as_mut().expect("hubs in use").hubs[h];
        hub.advance(now);
        let mark = f64::from_bits(hub.ends.first()?.0);
        let at = now + Time(ceil_ns(mark - hub.clock, hub.level));
        if hub.timer_at.is_some_and(|t| t <= at) {
            return None;
        }
        hub.version += 1;
        hub.timer_at = Some(at);
        Some(Timer { flow: h, version: hub.version, at, reshare: false, hub: true })
    }

    /// Rate of a hub connection on its hub's clock.
    pub(super) fn hub_rate(&self, f: usize) -> Option<f64> {
        let flow = &self.flows[f];
        let u = flow.hub?;
        flow.on_clock.then(|| self.hs().hubs[u.hub].level * flow.share)
    }
}

impl Hubs {
    /// One more (or one fewer) busy connection on `leaf`.
    fn count_busy(&mut self, leaf: usize, more: bool) {
        let before = self.leaf_busy[leaf];
        let k = if more { before + 1 } else { before - 1 };
        self.leaf_busy[leaf] = k;
        if before > 0 {
            self.with_busy[before as usize] -= 1;
        }
        if k > 0 {
            self.with_busy[k as usize] += 1;
        }
        if k > self.most_busy {
            self.most_busy = k;
        }
        while self.most_busy > 0 && self.with_busy[self.most_busy as usize] == 0 {
            self.most_busy -= 1;
        }
    }
}
