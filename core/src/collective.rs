//! All-reduce: the rules of a collective step, defined once for every engine.
//!
//! An all-reduce step has no parameter server: every worker holds the whole model, computes
//! its gradients, and the workers sum them among themselves; each then applies the sum to its
//! own copy. Two rules make the step:
//!
//! 1. **Fusion buckets** ([`next_bucket`]): gradients become ready layer by layer as
//!    backward runs from the last layer to the first. A background cycle (Horovod's
//!    `HOROVOD_CYCLE_TIME`) collects the ready gradients into a fusion buffer of at most
//!    `HOROVOD_FUSION_THRESHOLD` bytes and all-reduces it as one collective, so communication
//!    overlaps the rest of backward. A gradient is ready when every rank has produced it (the
//!    coordinator's negotiation); one bucket runs at a time, in order, on every worker; the
//!    loop's next cycle starts a cycle after the previous one, or when its collective ends.
//! 2. **The collective's schedule** ([`Ring`]): who sends which chunk to whom in which round,
//!    and what each send waits for.
//!
//! The simulator times these rules, the runtime's ring performs them (rank 0 negotiating
//! the buckets over the network); a test walks them for every rank.

use std::ops::Range;

use serde::Serialize;

use crate::models::Model;
use crate::plan::{Host, HostTraffic, OpTotals};
use crate::scenario::Scenario;
use crate::units::{Bytes, Time};

/// Each layer with variables and its gradient bytes (FP32), in the order backward produces
/// them: the last layer first.
pub fn backward_gradients(model: &Model) -> Vec<(usize, u64)> {
    model
        .layers
        .iter()
        .enumerate()
        .rev()
        .map(|(l, layer)| (l, layer.variables.iter().map(|v| v.bytes.0).sum::<u64>()))
        .filter(|&(_, b)| b > 0)
        .collect()
}

/// The next fusion bucket (Horovod's tensor fusion): at a cycle tick, the gradients that are
/// ready on every rank, taken in backward order from `from` (an index into
/// [`backward_gradients`]) while they fit in `threshold` bytes together; a gradient larger
/// than the threshold goes alone. Empty when the gradient at `from` is not ready yet.
pub fn next_bucket(
    grads: &[(usize, u64)],
    from: usize,
    threshold: Bytes,
    ready: impl Fn(usize) -> bool,
) -> Range<usize> {
    let mut end = from;
    let mut bytes = 0u64;
    while end < grads.len() && ready(end) && (end == from || bytes + grads[end].1 <= threshold.0) {
        bytes += grads[end].1;
        end += 1;
    }
    from..end
}

/// The buckets when every gradient is ready at once (training without overlap, or a cycle
/// longer than backward): consecutive runs of [`backward_gradients`] of at most `threshold`
/// bytes each.
pub fn fusion_buckets(grads: &[(usize, u64)], threshold: Bytes) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut from = 0;
    while from < grads.len() {
        let b = next_bucket(grads, from, threshold, |_| true);
        from = b.end;
        out.push(b);
    }
    out
}

/// The tick of the fusion cycle at which a bucket whose gradients are all ready at `ready` is
/// handed to the collective, when the background loop may start its next cycle at `earliest`
/// (the previous cycle's start plus the cycle time, or the end of the previous collective if
/// later): `earliest` itself if the gradients are ready by then, else the first tick after
/// they are (`cycle` 0: at once).
pub fn launch_time(ready: Time, earliest: Time, cycle: Time) -> Time {
    if ready <= earliest || cycle.0 == 0 {
        return ready.max(earliest);
    }
    Time(earliest.0 + (ready.0 - earliest.0).div_ceil(cycle.0) * cycle.0)
}

/// Ring all-reduce among `ranks` ranks (reduce-scatter, then all-gather), as NCCL and Horovod
/// run it: the buffer is cut into `ranks` chunks; in each of `2 (ranks - 1)` rounds every rank
/// sends one chunk to the next rank on the ring and receives one from the previous. In the
/// first `ranks - 1` rounds the receiver adds the chunk to its own (reduce-scatter: after them
/// rank `i` holds the full sum of chunk `i + 1`); in the rest it keeps it (all-gather).
///
/// Dependencies: a rank sends round `k > 0` once it has received round `k - 1` (the chunk it
/// sends is the one it just received, reduced); round 0 once its bucket is ready. A rank is
/// done with the bucket when it has received the last round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ring {
    /// Ranks on the ring.
    pub ranks: u32,
}

/// One send of a collective round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Send {
    /// Round.
    pub round: u32,
    /// Sending rank.
    pub from: u32,
    /// Receiving rank.
    pub to: u32,
    /// Chunk index.
    pub chunk: u32,
    /// Payload bytes.
    pub bytes: u64,
    /// The receiver adds the chunk to its own (reduce-scatter) rather than keeping it.
    pub reduce: bool,
}

impl Ring {
    /// Rounds of one all-reduce: `2 (ranks - 1)` (none for a single rank).
    pub fn rounds(&self) -> u32 {
        2 * self.ranks.saturating_sub(1)
    }

    /// The next rank on the ring.
    pub fn next(&self, rank: u32) -> u32 {
        (rank + 1) % self.ranks
    }

    /// Bytes of each chunk of a `total`-byte buffer: the buffer padded to a multiple of the
    /// ranks and split evenly, so that every rank moves the same bytes in every round (at most
    /// `ranks - 1` bytes of padding).
    pub fn chunk_bytes(&self, total: u64) -> u64 {
        total.div_ceil(u64::from(self.ranks))
    }

    /// What `rank` sends in `round`.
    pub fn send(&self, rank: u32, round: u32, total: u64) -> Send {
        let n = self.ranks;
        let chunk = (rank + n - round % n) % n;
        Send { round, from: rank, to: self.next(rank), chunk, bytes: self.chunk_bytes(total), reduce: round + 1 < n }
    }
}

/// One all-reduce step in totals, for `topolab plan`: ops per kind over every rank, and the
/// bytes each host's NIC moves. The buckets are those of a step whose gradients are all ready
/// at once ([`fusion_buckets`]); with overlap the simulator forms smaller ones as backward
/// produces gradients, which moves the same bytes in more rounds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepTotals {
    /// Ranks on the ring (workers x GPUs per host).
    pub ranks: u32,
    /// Fusion buckets of a step when every gradient is ready at once.
    pub buckets: usize,
    /// Ops per kind over every rank: compute-forward, compute-backward, reduce-scatter,
    /// all-gather, apply.
    pub ops: Vec<(&'static str, OpTotals)>,
    /// Per host: bytes out and in over its NIC.
    pub hosts: Vec<HostTraffic>,
}

/// The totals of one all-reduce step of `s`.
pub fn step_totals(s: &Scenario) -> StepTotals {
    let spec = &s.spec;
    let (hosts, gpus) = (spec.topology.workers, spec.hardware.gpus_per_host);
    let sched = Schedule::of(spec.topology.algorithm, hosts, gpus);
    let grads = backward_gradients(&s.model);
    let buckets = fusion_buckets(&grads, spec.topology.fusion_buffer);
    let ranks = u64::from(sched.ranks());
    let layers = s.model.layers.len() as u64;
    let fwd = s.model.forward_flops() * spec.batch as f64 * ranks as f64;
    let (mut reduce, mut copy) = (OpTotals::default(), OpTotals::default());
    let mut host_traffic: Vec<HostTraffic> =
        (0..hosts).map(|h| HostTraffic { host: Host::Worker(h), egress: Bytes(0), ingress: Bytes(0) }).collect();
    for b in &buckets {
        let bytes: u64 = grads[b.clone()].iter().map(|g| g.1).sum();
        for rank in 0..sched.ranks() {
            for st in 0..sched.streams() {
                for m in 0..sched.stream_len(rank, st, bytes) {
                    let msg = sched.message(rank, st, m, bytes);
                    let t = if msg.reduce { &mut reduce } else { &mut copy };
                    t.count += 1;
                    t.bytes.0 += msg.bytes;
                    let (h, n) = (rank / gpus, msg.to / gpus);
                    if h != n {
                        host_traffic[h as usize].egress.0 += msg.bytes;
                        host_traffic[n as usize].ingress.0 += msg.bytes;
                    }
                }
            }
        }
    }
    let slots = spec.optimizer.kind.slots();
    let apply = OpTotals { count: ranks, flops: 0.0, bytes: Bytes(s.model.bytes().0 * (3 + 2 * slots) * ranks) };
    let (reduce_name, copy_name) = match sched {
        Schedule::Tree { .. } => ("reduce", "broadcast"),
        _ => ("reduce-scatter", "all-gather"),
    };
    StepTotals {
        ranks: sched.ranks(),
        buckets: buckets.len(),
        ops: vec![
            ("compute-forward", OpTotals { count: layers * ranks, flops: fwd, bytes: Bytes(0) }),
            ("compute-backward", OpTotals { count: layers * ranks, flops: 2.0 * fwd, bytes: Bytes(0) }),
            (reduce_name, reduce),
            (copy_name, copy),
            ("apply", apply),
        ],
        hosts: host_traffic,
    }
}

/// The schedule of one bucket's all-reduce for every rank. A rank sends its messages in
/// [`Schedule::streams`] independent streams (each in order), each message over one of its
/// outgoing links (up to [`LINKS`] slots; a message arrives on the receiver's link of the
/// matching kind, `in_slot`), once it has received enough over each incoming link (`needs`).
/// Ranks are numbered by host, then GPU.
///
/// - [`Schedule::Ring`]: one ring over every rank (NCCL's flat ring): 2 (R - 1) messages of
///   1/R of the bucket, each after the previous one's receipt. Link 0: the next rank.
/// - [`Schedule::Hierarchical`]: Horovod's hierarchical all-reduce: the GPUs of a host
///   reduce-scatter the bucket over its bus (G - 1 rounds of 1/G), then the G GPUs of the
///   same index all-reduce their 1/G across the hosts in G parallel rings (2 (N - 1) rounds of
///   1/(G N)), then the host's GPUs all-gather over the bus (G - 1 rounds of 1/G): a host's
///   NIC carries 2 (N - 1)/N of the bucket each way instead of the flat ring's
///   2 (N G - 1)/(N G), in 2 (N - 1) rounds of latency instead of 2 (N G - 1). Link 0: the
///   next GPU of the host; link 1: the same GPU of the next host.
/// - [`Schedule::Tree`]: NCCL's double binary tree: each half of the bucket is reduced up one
///   of two binary trees and broadcast back down it, in pipelined chunks of [`TREE_CHUNK`].
///   Tree 0 is the heap order of the ranks (parent of position p: (p - 1) / 2), tree 1 the
///   same over the ranks in reverse, so a rank inside one tree is a leaf (or the root) of the
///   other. Per tree t, links 3t (parent), 3t + 1 and 3t + 2 (children); stream 2t sends chunk
///   c up once both children's chunk c has arrived, stream 2t + 1 sends chunk c down to each
///   child once it has it (the root: once it has reduced it). Latency grows with the trees'
///   depth, 2 log2(R) hops, instead of the ring's 2 (R - 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// A flat ring.
    Ring(Ring),
    /// Reduce-scatter in the host, rings across hosts, all-gather in the host.
    Hierarchical {
        /// Hosts.
        hosts: u32,
        /// GPUs per host.
        gpus: u32,
    },
    /// Two binary trees, half of the bucket each.
    Tree {
        /// Ranks.
        ranks: u32,
        /// A pipelined chunk, in the unit of the buckets' sizes ([`TREE_CHUNK`] bytes; see
        /// [`Schedule::in_values`]).
        chunk: u64,
    },
}

/// Bytes of one pipelined chunk of a tree all-reduce: NCCL's default buffer of 4 MiB per
/// connection (NCCL_BUFFSIZE) moves in 8 steps (NCCL_STEPS), 512 KiB at a time (NCCL
/// environment-variable documentation; src/include/device.h).
pub const TREE_CHUNK: u64 = 512 << 10;

/// Most links a rank has in any schedule.
pub const LINKS: usize = 6;

/// One message of a [`Schedule`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Receiving rank.
    pub to: u32,
    /// The sender's link it leaves by.
    pub slot: usize,
    /// The receiver's link it arrives on.
    pub in_slot: usize,
    /// Payload bytes.
    pub bytes: u64,
    /// Where the payload sits in the bucket's buffer, padded to [`Schedule::padded`] (bytes
    /// from its start): the sender sends that piece of its buffer, the receiver adds it to or
    /// puts it in the same piece of its own.
    pub offset: u64,
    /// Messages the sender must have received first in this bucket, per incoming link.
    pub needs: [u64; LINKS],
    /// The receiver adds it to its own (reduce) rather than keeping it (gather, broadcast).
    pub reduce: bool,
}

impl Schedule {
    /// The schedule of `algorithm` on `hosts` x `gpus` ranks.
    pub fn of(algorithm: crate::scenario::AllReduceAlgorithm, hosts: u32, gpus: u32) -> Schedule {
        match algorithm {
            crate::scenario::AllReduceAlgorithm::Ring => Schedule::Ring(Ring { ranks: hosts * gpus }),
            crate::scenario::AllReduceAlgorithm::Hierarchical => Schedule::Hierarchical { hosts, gpus },
            crate::scenario::AllReduceAlgorithm::Tree => Schedule::Tree { ranks: hosts * gpus, chunk: TREE_CHUNK },
        }
    }

    /// The same schedule over buckets sized in 4-byte values rather than bytes (as a runtime
    /// that reduces f32 gradients cuts them: no piece splits a value).
    pub fn in_values(self) -> Schedule {
        match self {
            Schedule::Tree { ranks, chunk } => Schedule::Tree { ranks, chunk: (chunk / 4).max(1) },
            s => s,
        }
    }

    /// Size of the buffer a bucket of `total` is padded to, so that its pieces split it
    /// evenly (at most a few units per rank).
    pub fn padded(&self, total: u64) -> u64 {
        match *self {
            Schedule::Ring(r) => r.chunk_bytes(total) * u64::from(r.ranks),
            Schedule::Hierarchical { hosts, gpus } => Self::local(hosts, gpus, total) * u64::from(gpus),
            Schedule::Tree { .. } => 2 * self.chunks(total) * self.tree_piece(total),
        }
    }

    /// Hierarchical: the piece of the bucket each GPU of a host reduces (padded so that it
    /// splits evenly across the hosts).
    fn local(hosts: u32, gpus: u32, total: u64) -> u64 {
        total.div_ceil(u64::from(gpus)).div_ceil(u64::from(hosts)) * u64::from(hosts)
    }

    /// Tree: one pipelined piece of a half.
    fn tree_piece(&self, total: u64) -> u64 {
        total.div_ceil(2).div_ceil(self.chunks(total))
    }

    /// Ranks.
    pub fn ranks(&self) -> u32 {
        match *self {
            Schedule::Ring(r) => r.ranks,
            Schedule::Hierarchical { hosts, gpus } => hosts * gpus,
            Schedule::Tree { ranks, .. } => ranks,
        }
    }

    /// Independent message streams per rank.
    pub fn streams(&self) -> usize {
        match self {
            Schedule::Tree { .. } => 4,
            _ => 1,
        }
    }

    /// Chunks per tree of a `total`-byte bucket (1 for the rings).
    pub fn chunks(&self, total: u64) -> u64 {
        match self {
            Schedule::Tree { chunk, .. } => total.div_ceil(2).div_ceil(*chunk).max(1),
            _ => 1,
        }
    }

    /// Position of `rank` in tree `t` (and, applied again, the rank at a position).
    fn pos(n: u32, t: usize, rank: u32) -> u32 {
        if t == 0 { rank } else { n - 1 - rank }
    }

    /// The rank at the other end of `rank`'s link `slot`, if it has that link.
    pub fn next(&self, rank: u32, slot: usize) -> Option<u32> {
        match *self {
            Schedule::Ring(r) => (slot == 0).then(|| r.next(rank)),
            Schedule::Hierarchical { hosts, gpus } => {
                let (h, g) = (rank / gpus, rank % gpus);
                match slot {
                    0 if gpus > 1 => Some(h * gpus + (g + 1) % gpus),
                    1 if hosts > 1 => Some(((h + 1) % hosts) * gpus + g),
                    _ => None,
                }
            }
            Schedule::Tree { ranks: n, .. } => {
                let (t, k) = (slot / 3, slot % 3);
                let p = Self::pos(n, t, rank);
                let other = match k {
                    0 => (p > 0).then(|| (p - 1) / 2),
                    _ => Some(2 * p + k as u32).filter(|&c| c < n),
                }?;
                Some(Self::pos(n, t, other))
            }
        }
    }

    /// Messages `rank` sends per bucket of `total` bytes in `stream`.
    pub fn stream_len(&self, rank: u32, stream: usize, total: u64) -> u64 {
        match *self {
            Schedule::Ring(r) => u64::from(r.rounds()),
            Schedule::Hierarchical { hosts, gpus } => 2 * u64::from(gpus - 1) + 2 * u64::from(hosts - 1),
            Schedule::Tree { .. } => {
                let (t, down) = (stream / 2, stream % 2 == 1);
                let k = self.chunks(total);
                if down {
                    k * (1..3).filter(|&c| self.next(rank, 3 * t + c).is_some()).count() as u64
                } else {
                    k * u64::from(self.next(rank, 3 * t).is_some())
                }
            }
        }
    }

    /// Messages `rank` receives per bucket of `total` bytes, per incoming link.
    pub fn receives(&self, rank: u32, total: u64) -> [u64; LINKS] {
        let mut out = [0; LINKS];
        match *self {
            Schedule::Ring(r) => out[0] = u64::from(r.rounds()),
            Schedule::Hierarchical { hosts, gpus } => {
                (out[0], out[1]) = (2 * u64::from(gpus - 1), 2 * u64::from(hosts - 1));
            }
            Schedule::Tree { .. } => {
                let k = self.chunks(total);
                for (slot, x) in out.iter_mut().enumerate() {
                    if self.next(rank, slot).is_some() {
                        *x = k;
                    }
                }
            }
        }
        out
    }

    /// What the NICs carry for one bucket of `total`: adds to `per_host[h]` the payload that
    /// the messages of the ranks `senders` send out of host `h` and into it (ranks numbered by
    /// host, `gpus` per host; a message between two GPUs of one host crosses its bus only).
    pub fn nic_bytes(&self, gpus: u32, total: u64, senders: std::ops::Range<u32>, per_host: &mut [(u64, u64)]) {
        for rank in senders {
            for st in 0..self.streams() {
                for m in 0..self.stream_len(rank, st, total) {
                    let msg = self.message(rank, st, m, total);
                    let (from, to) = ((rank / gpus) as usize, (msg.to / gpus) as usize);
                    if from != to {
                        per_host[from].0 += msg.bytes;
                        per_host[to].1 += msg.bytes;
                    }
                }
            }
        }
    }

    /// Message `m` (from 0) of `rank`'s `stream` in a bucket of `total` bytes.
    pub fn message(&self, rank: u32, stream: usize, m: u64, total: u64) -> Message {
        let mut needs = [0u64; LINKS];
        match *self {
            Schedule::Ring(r) => {
                let send = r.send(rank, m as u32, total);
                needs[0] = m;
                let offset = u64::from(send.chunk) * send.bytes;
                Message { to: send.to, slot: 0, in_slot: 0, bytes: send.bytes, offset, needs, reduce: send.reduce }
            }
            Schedule::Hierarchical { hosts, gpus } => {
                let (g1, n1) = (u64::from(gpus - 1), u64::from(hosts - 1));
                let local = Self::local(hosts, gpus, total);
                let cross = local / u64::from(hosts);
                // The host's GPUs run a ring over its pieces (reduce-scatter: rounds 0..G-1,
                // all-gather: rounds G-1..2G-2 of a ring of G); between the phases the GPUs of
                // index g ring across the hosts over the piece g holds summed, (g + 1) mod G.
                let host_ring = Ring { ranks: gpus };
                let (h, g) = (rank / gpus, rank % gpus);
                let (slot, bytes, offset, reduce) = if m < g1 {
                    needs[0] = m;
                    (0, local, u64::from(host_ring.send(g, m as u32, 0).chunk) * local, true)
                } else if m < g1 + 2 * n1 {
                    (needs[0], needs[1]) = (g1, m - g1);
                    let sub = Ring { ranks: hosts }.send(h, (m - g1) as u32, 0).chunk;
                    let own = u64::from((g + 1) % gpus);
                    (1, cross, own * local + u64::from(sub) * cross, m - g1 < n1)
                } else {
                    (needs[0], needs[1]) = (m - 2 * n1, 2 * n1);
                    let round = (g1 + m - g1 - 2 * n1) as u32;
                    (0, local, u64::from(host_ring.send(g, round, 0).chunk) * local, false)
                };
                let to = self.next(rank, slot).expect("the schedule uses only links that exist");
                Message { to, slot, in_slot: slot, bytes, offset, needs, reduce }
            }
            Schedule::Tree { ranks: n, .. } => {
                let (t, down) = (stream / 2, stream % 2 == 1);
                let bytes = self.tree_piece(total);
                let children: Vec<usize> =
                    (1..3).map(|c| 3 * t + c).filter(|&sl| self.next(rank, sl).is_some()).collect();
                let root = self.next(rank, 3 * t).is_none();
                let (c, slot) = if down {
                    let per = children.len() as u64;
                    (m / per, children[(m % per) as usize])
                } else {
                    (m, 3 * t)
                };
                if down && !root {
                    needs[3 * t] = c + 1;
                } else {
                    for &ch in &children {
                        needs[ch] = c + 1;
                    }
                }
                let to = self.next(rank, slot).expect("the schedule uses only links that exist");
                // Up, the parent hears it on its link to this child; down, the child on its
                // link to its parent.
                let in_slot = if down { 3 * t } else { 3 * t + if Self::pos(n, t, rank) % 2 == 1 { 1 } else { 2 } };
                // Tree t reduces half t, its chunk c at piece t k + c.
                let offset = (t as u64 * self.chunks(total) + c) * bytes;
                Message { to, slot, in_slot, bytes, offset, needs, reduce: !down }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::builtin;

    #[test]
    fn a_ring_of_four_sums_every_chunk_and_gathers_it_everywhere() {
        // Simulate the data: rank r starts with value 1 << r in every chunk. After the
        // schedule every rank holds 0b1111 in every chunk, which needs every send to carry
        // the chunk its sender has reduced so far (the dependency rule).
        let ring = Ring { ranks: 4 };
        let mut held: Vec<Vec<u32>> = (0..4).map(|r| vec![1u32 << r; 4]).collect();
        for k in 0..ring.rounds() {
            let sends: Vec<Send> = (0..4).map(|r| ring.send(r, k, 400)).collect();
            let values: Vec<u32> = sends.iter().map(|s| held[s.from as usize][s.chunk as usize]).collect();
            for (s, v) in sends.iter().zip(values) {
                let mine = &mut held[s.to as usize][s.chunk as usize];
                *mine = if s.reduce { *mine | v } else { v };
                assert_eq!(s.bytes, 100);
            }
        }
        assert_eq!(ring.rounds(), 6);
        assert!(held.iter().all(|h| h.iter().all(|&v| v == 0b1111)), "{held:?}");
        // A rank sends in round k the chunk it received in round k - 1.
        for k in 1..ring.rounds() {
            for r in 0..4 {
                let prev = ring.send((r + 3) % 4, k - 1, 400);
                assert_eq!(ring.send(r, k, 400).chunk, prev.chunk);
            }
        }
    }

    #[test]
    fn a_hierarchical_all_reduce_sums_everything_everywhere() {
        // 3 hosts x 4 GPUs, each rank holding 1 << rank in each of its 12 finest pieces (a
        // bucket of 12 x 12 bytes: 1/G = 36, 1/(G N) = 12). Walk the messages in dependency
        // order; every piece ends as the sum of all ranks everywhere.
        let (hosts, gpus) = (3u32, 4u32);
        let sch = Schedule::Hierarchical { hosts, gpus };
        let n = sch.ranks() as usize;
        let full = (1u32 << n) - 1;
        // held[rank][piece] (12 pieces: piece = chunk of the host ring (4) x chunk of the
        // cross ring (3)); reduce-scatter step k: rank g sends local chunk (g - k) mod G.
        let mut held: Vec<Vec<u32>> = (0..n).map(|r| vec![1u32 << r; 12]).collect();
        let (mut sent, mut recv) = (vec![0u64; n], vec![[0u64; 2]; n]);
        let total = 144;
        let messages = sch.stream_len(0, 0, 144);
        assert_eq!(messages, 2 * 3 + 2 * 2);
        let mut progress = true;
        while progress {
            progress = false;
            for r in 0..n {
                let m = sent[r];
                if m >= messages {
                    continue;
                }
                let msg = sch.message(r as u32, 0, m, total);
                if recv[r][0] < msg.needs[0] || recv[r][1] < msg.needs[1] {
                    continue;
                }
                let (h, g) = (r / 4, r % 4);
                let pieces: Vec<usize> = if msg.slot == 0 {
                    // Local ring: chunk c of 4 = pieces 3c..3c+3.
                    let k = if m < 3 { m as usize } else { (m - 7) as usize };
                    let c = if m < 3 { (g + 4 - k) % 4 } else { (g + 1 + 4 - k) % 4 };
                    (3 * c..3 * c + 3).collect()
                } else {
                    // Cross ring over the local chunk this GPU owns, (g + 1) mod 4, pieces of 3.
                    let j = (m - 3) as usize;
                    let own = (g + 1) % 4;
                    let c = (h + 3 - j % 3) % 3;
                    vec![3 * own + c]
                };
                assert_eq!(msg.bytes, if msg.slot == 0 { 36 } else { 12 });
                let reduce = m < 3 || (msg.slot == 1 && m - 3 < 2);
                for p in pieces {
                    let v = held[r][p];
                    let dst = &mut held[msg.to as usize][p];
                    *dst = if reduce { *dst | v } else { v };
                }
                sent[r] += 1;
                recv[msg.to as usize][msg.in_slot] += 1;
                progress = true;
            }
        }
        assert!(sent.iter().all(|&x| x == messages), "{sent:?}");
        assert!(recv.iter().all(|x| x[..] == sch.receives(0, total)[..2]));
        assert!(held.iter().all(|h| h.iter().all(|&v| v == full)), "{held:?}");
    }

    #[test]
    fn a_double_binary_tree_sums_everything_everywhere() {
        for n in [2u32, 5, 7, 8] {
            let sch = Schedule::Tree { ranks: n, chunk: TREE_CHUNK };
            let total = 3 * 2 * TREE_CHUNK; // 3 chunks per tree
            let k = sch.chunks(total);
            assert_eq!(k, 3);
            let full = (1u32 << n) - 1;
            // held[rank][tree][chunk]: what the rank has summed so far.
            let mut held: Vec<Vec<Vec<u32>>> = (0..n).map(|r| vec![vec![1u32 << r; 3]; 2]).collect();
            let mut sent = vec![vec![0u64; 4]; n as usize];
            let mut recv = vec![vec![0u64; 6]; n as usize];
            let mut progress = true;
            while progress {
                progress = false;
                for r in 0..n {
                    #[allow(clippy::needless_range_loop)] // `st` is a stream, not only an index
                    for st in 0..4 {
                        let m = sent[r as usize][st];
                        if m >= sch.stream_len(r, st, total) {
                            continue;
                        }
                        let msg = sch.message(r, st, m, total);
                        if (0..6).any(|x| recv[r as usize][x] < msg.needs[x]) {
                            continue;
                        }
                        let (t, down) = (st / 2, st % 2 == 1);
                        let per =
                            if down { (1..3).filter(|&c| sch.next(r, 3 * t + c).is_some()).count() as u64 } else { 1 };
                        let c = (m / per) as usize;
                        let v = held[r as usize][t][c];
                        let dst = &mut held[msg.to as usize][t][c];
                        *dst = if down { v } else { *dst | v };
                        assert_eq!(msg.bytes, TREE_CHUNK);
                        sent[r as usize][st] += 1;
                        recv[msg.to as usize][msg.in_slot] += 1;
                        progress = true;
                    }
                }
            }
            for r in 0..n {
                assert_eq!(recv[r as usize], sch.receives(r, total), "n {n} rank {r}");
                assert!(
                    held[r as usize].iter().flatten().all(|&v| v == full),
                    "n {n} rank {r}: {:?}",
                    held[r as usize]
                );
            }
            // Each rank is inside at most one tree (a leaf, or the root, of the other).
            for r in 0..n {
                let inside =
                    (0..2).filter(|&t| sch.next(r, 3 * t).is_some() && sch.next(r, 3 * t + 1).is_some()).count();
                assert!(inside <= 1, "n {n} rank {r}");
            }
        }
    }

    #[test]
    fn every_schedule_sums_every_value_everywhere_by_its_messages_offsets() {
        // Each rank starts with 1 << rank in every unit of a bucket of `total` units (0 in the
        // padding); sending each message's piece [offset, offset + bytes) of the sender's
        // buffer, added or put into the receiver's, in dependency order, leaves the full sum in
        // every unit everywhere: the offsets are what a runtime needs to move real values.
        let schedules = [
            Schedule::Ring(Ring { ranks: 3 }),
            Schedule::Ring(Ring { ranks: 5 }),
            Schedule::Hierarchical { hosts: 3, gpus: 4 },
            Schedule::Hierarchical { hosts: 2, gpus: 3 },
            Schedule::Hierarchical { hosts: 4, gpus: 1 },
            Schedule::Tree { ranks: 5, chunk: 7 },
            Schedule::Tree { ranks: 2, chunk: 4 },
            Schedule::Tree { ranks: 8, chunk: 1000 },
        ];
        for sch in schedules {
            for total in [1u64, 37, 100, 121] {
                let n = sch.ranks() as usize;
                let full = (1u64 << n) - 1;
                let padded = sch.padded(total);
                assert!(padded >= total && padded < total + 2 * n as u64 * 8, "{sch:?} {total}: padded {padded}");
                let mut held: Vec<Vec<u64>> =
                    (0..n).map(|r| (0..padded).map(|i| if i < total { 1 << r } else { 0 }).collect()).collect();
                let streams = sch.streams();
                let mut sent = vec![vec![0u64; streams]; n];
                let mut recv = vec![[0u64; LINKS]; n];
                let mut progress = true;
                while progress {
                    progress = false;
                    for r in 0..n {
                        #[allow(clippy::needless_range_loop)] // `st` is a stream, not only an index
                        for st in 0..streams {
                            let m = sent[r][st];
                            if m >= sch.stream_len(r as u32, st, total) {
                                continue;
                            }
                            let msg = sch.message(r as u32, st, m, total);
                            if (0..LINKS).any(|x| recv[r][x] < msg.needs[x]) {
                                continue;
                            }
                            let piece = msg.offset as usize..(msg.offset + msg.bytes) as usize;
                            assert!(piece.end as u64 <= padded, "{sch:?} {total}: {msg:?} past {padded}");
                            let values = held[r][piece.clone()].to_vec();
                            for (dst, v) in held[msg.to as usize][piece].iter_mut().zip(values) {
                                *dst = if msg.reduce { *dst | v } else { v };
                            }
                            sent[r][st] += 1;
                            recv[msg.to as usize][msg.in_slot] += 1;
                            progress = true;
                        }
                    }
                }
                for r in 0..n {
                    assert_eq!(recv[r], sch.receives(r as u32, total), "{sch:?} {total} rank {r}");
                    assert!(held[r][..total as usize].iter().all(|&v| v == full), "{sch:?} {total} rank {r}");
                }
            }
        }
    }

    #[test]
    fn chunks_split_the_padded_buffer_evenly() {
        let ring = Ring { ranks: 3 };
        assert_eq!(ring.chunk_bytes(10), 4);
        assert_eq!(ring.chunk_bytes(9), 3);
        assert_eq!(Ring { ranks: 1 }.rounds(), 0);
    }

    #[test]
    fn buckets_cover_every_gradient_once_and_respect_the_threshold() {
        let m = builtin("inception-v3").unwrap();
        let grads = backward_gradients(&m);
        assert_eq!(grads.iter().map(|g| g.1).sum::<u64>(), m.bytes().0);
        assert!(grads.windows(2).all(|w| w[0].0 > w[1].0), "last layer first");
        for threshold in [Bytes(0), Bytes(1 << 20), Bytes(25 << 20), Bytes(128 << 20)] {
            let b = fusion_buckets(&grads, threshold);
            assert_eq!(b[0].start, 0);
            assert_eq!(b.last().unwrap().end, grads.len());
            assert!(b.windows(2).all(|w| w[0].end == w[1].start));
            for r in &b {
                let bytes: u64 = grads[r.clone()].iter().map(|g| g.1).sum();
                assert!(bytes <= threshold.0 || r.len() == 1, "{threshold}: {r:?} {bytes}");
            }
        }
        // 128 MiB holds Inception-v3's ~91 MiB of gradients in one bucket; 0 turns fusion off.
        assert_eq!(fusion_buckets(&grads, Bytes(128 << 20)).len(), 1);
        assert_eq!(fusion_buckets(&grads, Bytes(0)).len(), grads.len());
    }

    #[test]
    fn a_bucket_takes_only_what_is_ready() {
        let grads = [(3, 10), (2, 10), (1, 10), (0, 10)];
        assert_eq!(next_bucket(&grads, 0, Bytes(100), |i| i < 2), 0..2);
        assert_eq!(next_bucket(&grads, 2, Bytes(100), |i| i < 2), 2..2);
        assert_eq!(next_bucket(&grads, 1, Bytes(25), |_| true), 1..3);
    }

    #[test]
    fn buckets_launch_on_the_cycle() {
        let ms = |x: u64| Time(x * 1_000_000);
        // Ready before the loop may run: at once; after: on the loop's next tick.
        assert_eq!(launch_time(ms(2), ms(3), ms(1)), ms(3));
        assert_eq!(launch_time(Time(3_500_000), ms(3), ms(1)), ms(4));
        assert_eq!(launch_time(ms(5), ms(3), ms(1)), ms(5));
        assert_eq!(launch_time(Time(7), Time::ZERO, Time::ZERO), Time(7));
    }
}
