//! The all-reduce worker: no parameter servers; every worker holds the parameters, connects
//! to the ranks at the other end of its links in core's [`Schedule`] (the ring's next rank;
//! a tree's parents and children) and accepts those whose links end here, and sums the
//! gradients with them by that schedule (per message: the piece of the bucket, the link,
//! what it waits for, and whether the receiver adds it or keeps it), then applies the average
//! locally. What arrives is applied when a send reads its piece, by link, so that a parent
//! adds its children's pieces in the same order whichever came first.
//!
//! **Negotiation** (Horovod's coordinator): ranks must reduce the same buckets in the same
//! order, but their gradients become ready at different times. Rank 0 coordinates: every
//! rank reports each gradient as backward produces it (a `Report` frame: how many of the
//! step's gradients, in backward order, are ready); at a tick of the fusion cycle
//! ([`launch_time`]: the first tick after the next gradient is reported by every rank, and
//! not before the previous tick plus a cycle or the previous bucket's end) the coordinator
//! fuses what every rank has reported ([`next_bucket`], up to `topology.fusion_buffer`) and
//! orders it (a `Bucket` frame to every rank); then all reduce it on the ring. This is the
//! simulator's coordinator rule, with the reports' real latency. With `training.overlap =
//! false` a rank reports its gradients when backward ends.
//!
//! A bucket's buffer is padded to the schedule's size ([`Schedule::padded`], in values, so
//! that no piece splits a value); a ring moves one chunk per round, a tree pipelines pieces up
//! and down each of its two trees.
//!
//! Checkpoints: every rank holds the same parameters; rank 0 writes them (as shard 0 of the
//! step's checkpoint) and every rank reads them back on resume.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use topolab_core::collective::{LINKS, Schedule, backward_gradients, launch_time, next_bucket};
use topolab_core::records::{self, StepRecord};
use topolab_core::scenario::{AllReduce, Scenario};
use topolab_core::units::{Bytes, Time};

use crate::cluster::ClusterSpec;
use crate::compute;
use crate::proxy::Proxy;
use crate::wire::{self, Kind, Token, monotonic_ns};
use crate::worker::{Outputs, layer_views};
use crate::{NodeError, checkpoint};

/// A gradient for the ring thread: its step, its index in backward order, and its values
/// (per variable of the layer, as backward made them: the compute thread hands them over
/// without copying, and the ring thread copies them once, into the bucket's buffer).
struct Gradient {
    step: u64,
    index: usize,
    data: Vec<Vec<f32>>,
}

/// A bucket back from the ring: its place in the step, the gradients it holds, their sum
/// over every rank, and when its ring ran.
struct Reduced {
    bucket: u64,
    grads: Range<usize>,
    data: Vec<f32>,
    start: u64,
    end: u64,
    /// Payload bytes this rank sent and received for it (the schedule's messages: a tree's
    /// ranks move different amounts).
    moved: (u64, u64),
}

/// Runs one rank of a ring all-reduce job to the end of training.
pub fn run(spec: &ClusterSpec, s: &Scenario, t: AllReduce) -> Result<(), NodeError> {
    let proxy = Proxy::from_effective(s);
    let index = spec.task.index;
    let ranks = spec.worker.len() as u32;
    // Ranks are numbered by host, then GPU; a host's records and ops are its first GPU's (the
    // simulator's), under the host's number.
    let gpus = s.spec.hardware.gpus_per_host;
    let host = index / gpus;
    let token = Token::from_hex(&spec.job.token).ok_or_else(|| NodeError::Setup("bad token".into()))?;
    let r = &s.spec.runtime;
    let mut backend = compute::open(r.backend, &proxy, s.spec.seed, index, r.device, s.spec.hardware.precision)?;
    let timeout = Duration::from_secs(spec.job.timeout_s);
    let settings = crate::launcher::ReplaySettings::of(s);
    let start = spec.job.start_step;
    let total = s.spec.training.steps;

    // The parameters, the same on every rank: the seed's, or the checkpoint's.
    let mut vars = proxy.init(s.spec.seed);
    if start > 0 {
        checkpoint::read_into(&spec.job.checkpoint_dir, start, 0, &mut vars).map_err(NodeError::Setup)?;
    }
    let var_offset = proxy.var_offsets();
    let layers = proxy.layers.len();
    // The layers with gradients, in the order backward produces them.
    let grads = backward_gradients(&s.model);
    let grad_of_layer: Vec<Option<usize>> = (0..layers).map(|l| grads.iter().position(|&(gl, _)| gl == l)).collect();
    let overlap = s.spec.training.overlap;

    // The ring's connections, then its thread.
    let (to_ring, ring_in) = mpsc::unbounded_channel::<Vec<Gradient>>();
    let (ring_out, from_ring) = std::sync::mpsc::channel::<Result<Reduced, NodeError>>();
    let sched = Schedule::of(t.algorithm, ranks / gpus, gpus).in_values();
    let node = RingNode {
        sched,
        rank: index,
        gpus,
        latency: spec.job.latency_ns,
        link_latency: link_latencies(&sched, index, gpus, spec.job.latency_ns),
        cycle: t.fusion_cycle,
        threshold: t.fusion_buffer,
        grads: grads.clone(),
        steps: start..total,
        timeout,
    };
    let job = spec.clone();
    let ring_thread = std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ring_out.send(Err(NodeError::Io(e)));
                return;
            }
        };
        let run = rt.block_on(async {
            let links = connect_ring(&job, &token, timeout, node.sched).await?;
            node.run(links, ring_in, &ring_out).await
        });
        if let Err(e) = run {
            let _ = ring_out.send(Err(e));
        }
    });

    let mut out = Outputs::default();
    let mut step_start = monotonic_ns();
    for step in start..total {
        let mut compute_ns = 0u64;
        let mut loss = 0.0f32;
        let at = (host, step, spec.job.epoch_ns);
        for (l, &offset) in var_offset.iter().enumerate() {
            let views = layer_views(&vars, offset, proxy.layers[l].vars.len());
            compute_ns += out.forward(backend.as_mut(), l, &views, at)?;
        }
        // Backward; each gradient goes to the ring thread (which reports it) as it is made,
        // or all of them when backward ends.
        let mut held = Vec::new();
        for l in (0..layers).rev() {
            let (ns, layer_loss, g) = out.backward(backend.as_mut(), l, at)?;
            compute_ns += ns;
            loss += layer_loss;
            if let Some(gi) = grad_of_layer[l] {
                held.push(Gradient { step, index: gi, data: g });
                if overlap {
                    hand_over(&to_ring, &from_ring, &mut held)?;
                }
            }
        }
        hand_over(&to_ring, &from_ring, &mut held)?;
        // The sums, bucket by bucket as the coordinator formed them, then the average
        // applied locally.
        let scale = settings.learning_rate / ranks as f32;
        let mut summed = 0;
        let (mut sent, mut received) = (0u64, 0u64);
        while summed < grads.len() {
            let done = from_ring.recv().map_err(|_| NodeError::Protocol("the ring stopped".into()))??;
            if gpus == 1 {
                (sent, received) = (sent + done.moved.0, received + done.moved.1);
            } else {
                // The host's NIC: what its GPUs' messages carry to and from other hosts (by
                // the schedule they all follow; a GPU sees only its own).
                let mut per_host = vec![(0u64, 0u64); (ranks / gpus) as usize];
                sched.nic_bytes(gpus, done.data.len() as u64, 0..ranks, &mut per_host);
                (sent, received) = (sent + 4 * per_host[host as usize].0, received + 4 * per_host[host as usize].1);
            }
            let bytes = done.data.len() as u64 * 4;
            out.op(host, step, "all-reduce", done.bucket, bytes, done.start, done.end, spec.job.epoch_ns);
            let mut off = 0;
            for &(l, _) in &grads[done.grads.clone()] {
                for v in 0..proxy.layers[l].vars.len() {
                    let w = &mut vars[var_offset[l] + v];
                    let g = &done.data[off..off + w.len()];
                    for (x, d) in w.iter_mut().zip(g) {
                        *x -= scale * d;
                    }
                    off += w.len();
                }
            }
            summed = done.grads.end;
        }
        let end = monotonic_ns();
        let dur = end - step_start;
        out.steps.push(StepRecord {
            run: "replay".into(),
            worker: host,
            step,
            start_ns: step_start - spec.job.epoch_ns,
            end_ns: end - spec.job.epoch_ns,
            compute_ns,
            comm_ns: dur.saturating_sub(compute_ns),
            wait_ns: 0,
            bytes_sent: sent,
            bytes_received: received,
            scenario_hash: s.hash.clone(),
            seed: s.spec.seed,
            version: records::VERSION.into(),
        });
        out.losses.push((step, loss));
        let next = step + 1;
        if index == 0 && settings.checkpoint_every > 0 && next.is_multiple_of(settings.checkpoint_every) {
            let flat: Vec<f32> = vars.iter().flatten().copied().collect();
            checkpoint::write(&spec.job.checkpoint_dir, next, 0, &flat).map_err(NodeError::Io)?;
        }
        out.progress(spec, next)?;
        step_start = end;
    }
    drop(to_ring);
    if ring_thread.join().is_err() {
        return Err(NodeError::Protocol("the ring thread panicked".into()));
    }
    if index == 0 {
        let dir = spec.job.out.join("final");
        std::fs::create_dir_all(&dir).map_err(NodeError::Io)?;
        let flat: Vec<f32> = vars.iter().flatten().copied().collect();
        checkpoint::write_atomic(&dir.join("shard-0.bin"), &wire::f32_bytes(&flat)).map_err(NodeError::Io)?;
    }
    out.write(spec, index)
}

/// Hands the gradients held so far to the ring thread, at once (reported together: without
/// overlap every run cuts the same buckets).
fn hand_over(
    to_ring: &mpsc::UnboundedSender<Vec<Gradient>>,
    from_ring: &std::sync::mpsc::Receiver<Result<Reduced, NodeError>>,
    held: &mut Vec<Gradient>,
) -> Result<(), NodeError> {
    if !held.is_empty() && to_ring.send(std::mem::take(held)).is_err() {
        return Err(ring_stopped(from_ring));
    }
    Ok(())
}

/// Why the ring thread stopped: the error it sent back, if it did.
fn ring_stopped(from_ring: &std::sync::mpsc::Receiver<Result<Reduced, NodeError>>) -> NodeError {
    loop {
        match from_ring.recv_timeout(Duration::from_secs(1)) {
            Ok(Err(e)) => return e,
            Ok(Ok(_)) => continue,
            Err(_) => return NodeError::Protocol("the ring stopped".into()),
        }
    }
}

/// A rank's connections: to the next rank, from the previous, and the control channel (rank
/// 0: from every other rank, by rank; the others: to rank 0).
struct Links {
    /// Per outgoing link slot of the schedule: the connection to the rank at its other end.
    out: Vec<Option<OwnedWriteHalf>>,
    /// Connections from the ranks whose links end here, with the link each arrives on.
    inc: Vec<(usize, OwnedReadHalf)>,
    control: Vec<(u32, TcpStream)>,
}

/// A collective's connections while it reduces buckets.
type Wires = (Vec<Option<OwnedWriteHalf>>, Vec<(usize, Option<OwnedReadHalf>)>);

/// What the ring thread needs to know.
struct RingNode {
    sched: Schedule,
    rank: u32,
    /// GPUs per host: ranks `h x gpus ..` share host `h`, whose bus (loopback) has no
    /// network latency.
    gpus: u32,
    latency: u64,
    /// The network latency of the messages arriving on each link (none from this host).
    link_latency: [u64; LINKS],
    cycle: Time,
    threshold: Bytes,
    grads: Vec<(usize, u64)>,
    steps: Range<u64>,
    timeout: Duration,
}

/// The gradients this rank has made in the step being reduced (in backward order).
#[derive(Default)]
struct Store {
    step: u64,
    grads: Vec<Vec<Vec<f32>>>,
}

/// A rank's report as the coordinator received it: rank, step, gradients ready, when.
type Report = (u32, u64, usize, u64);

impl RingNode {
    /// Reports and stores this rank's gradients as they come, takes the coordinator's
    /// buckets (or, on rank 0, forms them), reduces each on the ring and sends it back, until
    /// every step is reduced.
    async fn run(
        self,
        links: Links,
        mut local: mpsc::UnboundedReceiver<Vec<Gradient>>,
        done: &std::sync::mpsc::Sender<Result<Reduced, NodeError>>,
    ) -> Result<(), NodeError> {
        let mut ring: Wires = (links.out, links.inc.into_iter().map(|(link, r)| (link, Some(r))).collect());
        let store = Arc::new(Mutex::new(Store { step: self.steps.start, grads: Vec::new() }));
        let (report_tx, mut reports) = mpsc::unbounded_channel::<Result<Report, NodeError>>();
        let mut orders_rx = None;
        let mut to_members = Vec::new();
        let mut to_coordinator = None;
        for (r, stream) in links.control {
            let (read, write) = stream.into_split();
            if self.rank == 0 {
                tokio::spawn(read_reports(read, r, self.latency_from(r), report_tx.clone()));
                to_members.push(write);
            } else {
                let (order_tx, order_rx) = mpsc::unbounded_channel();
                tokio::spawn(read_orders(read, self.latency_from(0), order_tx));
                orders_rx = Some(order_rx);
                to_coordinator = Some(write);
            }
        }
        // The reporter: stores each gradient and says so to the coordinator (rank 0: to its
        // own loop).
        let reporter = {
            let store = store.clone();
            let own = (self.rank == 0).then(|| report_tx.clone());
            tokio::spawn(async move {
                let mut to = to_coordinator;
                while let Some(batch) = local.recv().await {
                    let (step, count) = {
                        let mut st = store.lock().expect("the store's lock is not poisoned");
                        for g in batch {
                            if g.step != st.step || g.index != st.grads.len() {
                                return Err(NodeError::Protocol(format!(
                                    "gradient {} of step {} out of order (expected {} of step {})",
                                    g.index,
                                    g.step,
                                    st.grads.len(),
                                    st.step
                                )));
                            }
                            st.grads.push(g.data);
                        }
                        (st.step, st.grads.len())
                    };
                    match (&own, &mut to) {
                        (Some(own), _) => {
                            let _ = own.send(Ok((0, step, count, monotonic_ns())));
                        }
                        (None, Some(w)) => {
                            wire::write_frame(w, Kind::Report, count as u32, step, &[]).await?;
                            w.flush().await.map_err(NodeError::Io)?;
                        }
                        (None, None) => unreachable!("a rank other than 0 has a control link to the coordinator"),
                    }
                }
                Ok::<_, NodeError>(())
            })
        };
        drop(report_tx);
        let work = async {
            if self.rank == 0 {
                self.coordinate(&mut ring, &store, &mut reports, &mut to_members, done).await
            } else {
                let orders = orders_rx.as_mut().expect("a rank other than 0 reads the coordinator's orders");
                self.follow(&mut ring, &store, orders, done).await
            }
        };
        tokio::pin!(work);
        let mut reporter = reporter;
        tokio::select! {
            r = &mut work => r,
            // The reporter ends when the worker stops sending (it has finished, or failed and
            // says so itself), or with the error that stops it.
            j = &mut reporter => match j {
                Ok(Ok(())) => work.await,
                Ok(Err(e)) => Err(e),
                Err(_) => Err(NodeError::Protocol("the ring's reporter panicked".into())),
            },
        }
    }

    /// Rank 0: forms every bucket by the coordinator rule, orders it, and reduces it.
    async fn coordinate(
        &self,
        ring: &mut Wires,
        store: &Mutex<Store>,
        reports: &mut mpsc::UnboundedReceiver<Result<Report, NodeError>>,
        members: &mut [OwnedWriteHalf],
        done: &std::sync::mpsc::Sender<Result<Reduced, NodeError>>,
    ) -> Result<(), NodeError> {
        let n = self.sched.ranks() as usize;
        // Per rank, when each of the current step's gradients was first reported.
        let mut reported: Vec<Vec<u64>> = vec![Vec::new(); n];
        let (mut step, mut next, mut bucket) = (self.steps.start, 0usize, 0u64);
        // The coordinator's clock: the first tick is at the job's start, as the simulator's at 0.
        let mut earliest = Time(monotonic_ns());
        while step < self.steps.end {
            // Every report already here counts at this tick.
            while let Ok(r) = reports.try_recv() {
                note(r, step, &mut reported)?;
            }
            let tick = reported
                .iter()
                .map(|r| r.get(next).copied())
                .try_fold(0u64, |m, t| t.map(|t| m.max(t)))
                .map(|ready| launch_time(Time(ready), earliest, self.cycle));
            let report = match tick {
                Some(at) => {
                    let now = monotonic_ns();
                    if at.0 <= now {
                        None
                    } else {
                        tokio::select! {
                            r = reports.recv() => Some(r),
                            // To the microsecond: tokio's own timer would tick up to 1 ms late.
                            () = wire::sleep_until_monotonic(at.0) => None,
                        }
                    }
                }
                None => Some(reports.recv().await),
            };
            if let Some(r) = report {
                let r =
                    r.ok_or_else(|| NodeError::Protocol("the ranks' reports stopped before the last step".into()))?;
                note(r, step, &mut reported)?;
                continue;
            }
            // The tick: what every rank has, fused.
            let tick_at = Time(monotonic_ns());
            let b = next_bucket(&self.grads, next, self.threshold, |g| reported.iter().all(|r| r.len() > g));
            let end = b.end as u32;
            for m in members.iter_mut() {
                wire::write_frame(m, Kind::Bucket, b.start as u32, step, &end.to_le_bytes()).await?;
                m.flush().await.map_err(NodeError::Io)?;
            }
            let finished = self.reduce(ring, store, step, bucket, b.clone(), done).await?;
            earliest = Time((tick_at + self.cycle).0.max(finished));
            (next, bucket) = (b.end, bucket + 1);
            if next == self.grads.len() {
                (step, next, bucket) = (step + 1, 0, 0);
                reported.iter_mut().for_each(Vec::clear);
            }
        }
        Ok(())
    }

    /// A rank other than 0: reduces the buckets the coordinator orders, until the last step's
    /// last.
    async fn follow(
        &self,
        ring: &mut Wires,
        store: &Mutex<Store>,
        orders: &mut mpsc::UnboundedReceiver<Result<(u64, Range<usize>), NodeError>>,
        done: &std::sync::mpsc::Sender<Result<Reduced, NodeError>>,
    ) -> Result<(), NodeError> {
        let (mut step, mut next, mut bucket) = (self.steps.start, 0usize, 0u64);
        while step < self.steps.end {
            let (at_step, b) = match orders.recv().await {
                Some(o) => o?,
                None => return Err(NodeError::Protocol("the coordinator hung up before the last step".into())),
            };
            if at_step != step || b.start != next || b.end > self.grads.len() || b.is_empty() {
                return Err(NodeError::Protocol(format!(
                    "rank {}: ordered gradients {b:?} of step {at_step}, expected from {next} of step {step}",
                    self.rank
                )));
            }
            self.reduce(ring, store, step, bucket, b.clone(), done).await?;
            (next, bucket) = (b.end, bucket + 1);
            if next == self.grads.len() {
                (step, next, bucket) = (step + 1, 0, 0);
            }
        }
        Ok(())
    }

    /// Reduces the gradients `grads` of `step` (bucket `bucket`) on the ring and sends the sum
    /// back; after the step's last bucket the store moves on to the next step. Returns when
    /// the ring ended here.
    async fn reduce(
        &self,
        wires: &mut Wires,
        store: &Mutex<Store>,
        step: u64,
        bucket: u64,
        grads: Range<usize>,
        done: &std::sync::mpsc::Sender<Result<Reduced, NodeError>>,
    ) -> Result<u64, NodeError> {
        let mut data: Vec<f32> = {
            let st = store.lock().expect("the store's lock is not poisoned");
            if st.step != step || st.grads.len() < grads.end {
                return Err(NodeError::Protocol(format!(
                    "rank {}: ordered gradients {grads:?} of step {step}, has {} of step {}",
                    self.rank,
                    st.grads.len(),
                    st.step
                )));
            }
            let parts = || st.grads[grads.clone()].iter().flatten();
            let mut data = Vec::with_capacity(parts().map(Vec::len).sum());
            parts().for_each(|v| data.extend_from_slice(v));
            data
        };
        let start = monotonic_ns();
        let len = data.len();
        let moved = self.exchange(wires, bucket as u32, &mut data).await?;
        data.truncate(len);
        let end = monotonic_ns();
        if grads.end == self.grads.len() {
            let mut st = store.lock().expect("the store's lock is not poisoned");
            st.step += 1;
            st.grads.clear();
        }
        done.send(Ok(Reduced { bucket, grads, data, start, end, moved }))
            .map_err(|_| NodeError::Protocol("the worker stopped".into()))?;
        Ok(end)
    }
}

impl RingNode {
    /// The network latency of a message from rank `peer`: none from a GPU of this host.
    fn latency_from(&self, peer: u32) -> u64 {
        if peer / self.gpus == self.rank / self.gpus { 0 } else { self.latency }
    }

    /// Runs the schedule on one bucket: every message of this rank's streams, each once it
    /// has received what the message needs, its piece of `data` (padded to the schedule's
    /// size) out over its link; every message that comes in added to or put into its piece.
    /// Frames carry the bucket's tag and the receiving link in `var` (tag x 8 + link), the
    /// piece's offset in values in `step`, and add (`Push`) or put (`Value`) as their kind.
    /// Returns the payload bytes sent and received.
    async fn exchange(&self, (out, inc): &mut Wires, tag: u32, data: &mut Vec<f32>) -> Result<(u64, u64), NodeError> {
        use futures::stream::{FuturesUnordered, StreamExt};
        enum Done {
            Sent(usize, usize, OwnedWriteHalf),
            Got(usize, OwnedReadHalf, wire::Frame),
        }
        let total = data.len() as u64;
        data.resize(self.sched.padded(total) as usize, 0.0);
        let rank = self.rank;
        let streams = self.sched.streams();
        let len: Vec<u64> = (0..streams).map(|st| self.sched.stream_len(rank, st, total)).collect();
        let expect = self.sched.receives(rank, total);
        let mut sent = vec![0u64; streams];
        let mut busy = vec![false; streams];
        let mut received = [0u64; LINKS];
        let mut moved = (0u64, 0u64);
        // What came in and is not in `data` yet: (link, add or put, offset, values), applied
        // when a send reads its piece (or at the end), by link, so that the sums are added in
        // the same order whichever child's piece came first.
        let mut arrived: Vec<(usize, bool, usize, Vec<f32>)> = Vec::new();
        let mut pending = FuturesUnordered::new();
        // A read on each incoming connection while its link has frames due (in order).
        for (i, (link, r)) in inc.iter_mut().enumerate() {
            if expect[*link] > 0 {
                let mut rx = r.take().expect("an incoming connection is idle between buckets");
                let (cap, timeout, latency) = (u32::MAX, self.timeout, self.link_latency[*link]);
                pending.push(Box::pin(async move {
                    let f = wire::read_frame(&mut rx, cap, timeout).await?;
                    f.release(latency).await;
                    Ok::<_, NodeError>(Done::Got(i, rx, f))
                })
                    as std::pin::Pin<Box<dyn std::future::Future<Output = Result<Done, NodeError>>>>);
            }
        }
        loop {
            for st in 0..streams {
                if busy[st] || sent[st] == len[st] {
                    continue;
                }
                let msg = self.sched.message(rank, st, sent[st], total);
                if (0..LINKS).any(|x| received[x] < msg.needs[x]) {
                    continue;
                }
                let piece = msg.offset as usize..(msg.offset + msg.bytes) as usize;
                apply_arrived(data, &mut arrived, Some(piece.clone()));
                let payload = wire::f32_bytes(&data[piece]);
                moved.0 += payload.len() as u64;
                let kind = if msg.reduce { Kind::Push } else { Kind::Value };
                let var = tag * 8 + msg.in_slot as u32;
                let slot = msg.slot;
                let mut tx = out[slot].take().expect("a stream's link is idle when it sends");
                busy[st] = true;
                pending.push(Box::pin(async move {
                    wire::write_frame(&mut tx, kind, var, msg.offset, &payload).await?;
                    tx.flush().await.map_err(NodeError::Io)?;
                    Ok(Done::Sent(st, slot, tx))
                }));
            }
            if received == expect && sent == len && !busy.contains(&true) {
                apply_arrived(data, &mut arrived, None);
                break;
            }
            let Some(next) = pending.next().await else {
                return Err(NodeError::Protocol(format!("rank {rank}: the collective stalled (bucket {tag})")));
            };
            match next? {
                Done::Sent(st, slot, tx) => {
                    out[slot] = Some(tx);
                    busy[st] = false;
                    sent[st] += 1;
                }
                Done::Got(i, mut rx, f) => {
                    let (link, offset) = ((f.var % 8) as usize, f.step as usize);
                    let values = wire::bytes_f32(&f.payload)
                        .ok_or_else(|| NodeError::Protocol("a collective payload is not f32".into()))?;
                    if f.var / 8 != tag || link != inc[i].0 || offset + values.len() > data.len() {
                        return Err(NodeError::Protocol(format!(
                            "rank {rank}: a frame for bucket {} link {link} at {offset}+{} (expected bucket {tag}, {} values)",
                            f.var / 8,
                            values.len(),
                            data.len()
                        )));
                    }
                    let add = match f.kind {
                        Kind::Push => true,
                        Kind::Value => false,
                        k => return Err(NodeError::Protocol(format!("rank {rank}: a {k:?} frame in a collective"))),
                    };
                    moved.1 += f.payload.len() as u64;
                    arrived.push((link, add, offset, values));
                    received[link] += 1;
                    if received[link] < expect[link] {
                        let (timeout, latency) = (self.timeout, self.link_latency[link]);
                        pending.push(Box::pin(async move {
                            let f = wire::read_frame(&mut rx, u32::MAX, timeout).await?;
                            f.release(latency).await;
                            Ok(Done::Got(i, rx, f))
                        }));
                    } else {
                        inc[i].1 = Some(rx);
                    }
                }
            }
        }
        Ok(moved)
    }
}

/// Applies what arrived (into `piece` only, or everything), by link and in arrival order
/// within a link: added (a reduction) or put (a gather or broadcast).
fn apply_arrived(data: &mut [f32], arrived: &mut Vec<(usize, bool, usize, Vec<f32>)>, piece: Option<Range<usize>>) {
    let overlaps =
        |a: &(usize, bool, usize, Vec<f32>)| piece.as_ref().is_none_or(|p| a.2 < p.end && p.start < a.2 + a.3.len());
    let (mut now, later): (Vec<_>, Vec<_>) = std::mem::take(arrived).into_iter().partition(|a| overlaps(a));
    *arrived = later;
    now.sort_by_key(|a| a.0);
    for (_, add, offset, values) in now {
        let mine = &mut data[offset..offset + values.len()];
        if add {
            mine.iter_mut().zip(&values).for_each(|(a, b)| *a += b);
        } else {
            mine.copy_from_slice(&values);
        }
    }
}

/// Notes a report of the step `step` that the coordinator forms: when each newly reported
/// gradient of the rank was first known to be ready.
fn note(r: Result<Report, NodeError>, step: u64, reported: &mut [Vec<u64>]) -> Result<(), NodeError> {
    let (rank, at_step, count, at) = r?;
    if at_step != step {
        return Err(NodeError::Protocol(format!(
            "rank {rank} reported step {at_step} while the coordinator forms step {step}"
        )));
    }
    let r = &mut reported[rank as usize];
    while r.len() < count {
        r.push(at);
    }
    Ok(())
}

/// Rank 0: reads rank `rank`'s reports (after the link's latency) into the coordinator's
/// queue, then the hang-up as an error (which the coordinator reads only if it still needs
/// the rank: its last order goes out after every report it needs).
async fn read_reports(
    mut read: OwnedReadHalf,
    rank: u32,
    latency: u64,
    to: mpsc::UnboundedSender<Result<Report, NodeError>>,
) {
    loop {
        let f = match wire::read_frame(&mut read, 64, Duration::from_secs(24 * 3600)).await {
            Ok(f) => f,
            Err(wire::WireError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                let _ = to.send(Err(NodeError::Protocol(format!("rank {rank} hung up before the last step"))));
                return;
            }
            Err(e) => {
                let _ = to.send(Err(e.into()));
                return;
            }
        };
        f.release(latency).await;
        let report = if f.kind == Kind::Report {
            Ok((rank, f.step, f.var as usize, monotonic_ns()))
        } else {
            Err(NodeError::Protocol(format!("rank {rank} sent a {:?} frame on the control link", f.kind)))
        };
        if to.send(report).is_err() {
            return;
        }
    }
}

/// A rank other than 0: reads the coordinator's orders (after the link's latency), then the
/// hang-up as an error (read only if an order is still due).
async fn read_orders(
    mut read: OwnedReadHalf,
    latency: u64,
    to: mpsc::UnboundedSender<Result<(u64, Range<usize>), NodeError>>,
) {
    loop {
        let f = match wire::read_frame(&mut read, 64, Duration::from_secs(24 * 3600)).await {
            Ok(f) => f,
            Err(wire::WireError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                let _ = to.send(Err(NodeError::Protocol("the coordinator hung up before the last step".into())));
                return;
            }
            Err(e) => {
                let _ = to.send(Err(e.into()));
                return;
            }
        };
        f.release(latency).await;
        let order = match (f.kind, <[u8; 4]>::try_from(f.payload.as_slice())) {
            (Kind::Bucket, Ok(end)) => Ok((f.step, f.var as usize..u32::from_le_bytes(end) as usize)),
            _ => Err(NodeError::Protocol(format!("the coordinator sent a {:?} frame on the control link", f.kind))),
        };
        if to.send(order).is_err() {
            return;
        }
    }
}

/// Listens on this rank's address, opens a connection over each of its links in the
/// schedule (to the rank at the other end, announcing `2 ranks + rank x LINKS + slot`) and
/// accepts those of the ranks whose links end here, all through the job's handshake; and opens
/// the control links: every rank but 0 connects to rank 0 announcing `ranks + rank`.
async fn connect_ring(
    spec: &ClusterSpec,
    token: &Token,
    timeout: Duration,
    sched: Schedule,
) -> Result<Links, NodeError> {
    let ranks = spec.worker.len() as u32;
    let index = spec.task.index;
    let listener = TcpListener::bind(&spec.worker[index as usize]).await.map_err(NodeError::Io)?;
    let link_id = |rank: u32, slot: usize| 2 * ranks + rank * LINKS as u32 + slot as u32;
    // The links that end here: announced id -> the link their messages arrive on.
    let mut incoming = std::collections::BTreeMap::new();
    for peer in 0..ranks {
        for slot in 0..LINKS {
            if sched.next(peer, slot) == Some(index) {
                incoming.insert(link_id(peer, slot), arrival_link(&sched, peer, slot));
            }
        }
    }
    let members = if index == 0 { ranks - 1 } else { 0 };
    let accept = async {
        let mut inc = Vec::new();
        let mut control = Vec::new();
        while inc.len() < incoming.len() || control.len() < members as usize {
            let (mut stream, peer) = listener.accept().await.map_err(NodeError::Io)?;
            stream.set_nodelay(true).map_err(NodeError::Io)?;
            match wire::accept(&mut stream, token, timeout).await {
                Ok(r) if incoming.contains_key(&r) && !inc.iter().any(|c: &(u32, usize, TcpStream)| c.0 == r) => {
                    inc.push((r, incoming[&r], stream))
                }
                Ok(r)
                    if members > 0
                        && r > ranks
                        && r < 2 * ranks
                        && !control.iter().any(|c: &(u32, _)| c.0 == r - ranks) =>
                {
                    control.push((r - ranks, stream))
                }
                Ok(r) => eprintln!("rank {index}: refused task {r} from {peer}: not expected here"),
                Err(e) => eprintln!("rank {index}: refused a peer from {peer}: {e}"),
            }
        }
        Ok::<_, NodeError>((inc, control))
    };
    let connect = async {
        let mut out: Vec<Option<OwnedWriteHalf>> = (0..LINKS).map(|_| None).collect();
        for (slot, o) in out.iter_mut().enumerate() {
            if let Some(peer) = sched.next(index, slot) {
                let s =
                    crate::worker::connect(&spec.worker[peer as usize], token, link_id(index, slot), timeout).await?;
                *o = Some(s.into_split().1);
            }
        }
        let coordinator = match index {
            0 => None,
            _ => Some(crate::worker::connect(&spec.worker[0], token, ranks + index, timeout).await?),
        };
        Ok::<_, NodeError>((out, coordinator))
    };
    let ((inc, mut control), (out, coordinator)) = tokio::try_join!(accept, connect)?;
    control.extend(coordinator.map(|c| (0, c)));
    let inc = inc.into_iter().map(|(_, link, s)| (link, s.into_split().0)).collect();
    Ok(Links { out, inc, control })
}

/// The network latency of the messages arriving on each of `rank`'s links: none when the
/// sending rank is on the same host (`gpus` ranks a host), else `latency`.
fn link_latencies(sched: &Schedule, rank: u32, gpus: u32, latency: u64) -> [u64; LINKS] {
    let mut l = [latency; LINKS];
    for peer in 0..sched.ranks() {
        for slot in 0..LINKS {
            if sched.next(peer, slot) == Some(rank) {
                l[arrival_link(sched, peer, slot)] = if peer / gpus == rank / gpus { 0 } else { latency };
            }
        }
    }
    l
}

/// The link on which messages that `rank` sends over its link `slot` arrive.
fn arrival_link(sched: &Schedule, rank: u32, slot: usize) -> usize {
    (0..sched.streams())
        .flat_map(|st| (0..sched.stream_len(rank, st, 1)).map(move |m| (st, m)))
        .map(|(st, m)| sched.message(rank, st, m, 1))
        .find(|msg| msg.slot == slot)
        .map_or(slot, |msg| msg.in_slot)
}
