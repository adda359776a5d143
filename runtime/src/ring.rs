//! The all-reduce worker (ring): no parameter servers; every worker holds the parameters,
//! listens for its ring predecessor, connects to its successor, and sums the gradients with
//! them following core's ring schedule ([`Ring::send`]: who sends which chunk in which round,
//! and whether the receiver adds it or keeps it), then applies the average locally.
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
//! A bucket's buffer is padded to a multiple of the ranks and cut into equal chunks; in each
//! of `2 (ranks - 1)` rounds a rank writes one chunk to its successor while it reads one from
//! its predecessor.
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
use topolab_core::collective::{Ring, backward_gradients, launch_time, next_bucket};
use topolab_core::records::{self, StepRecord};
use topolab_core::scenario::Scenario;
use topolab_core::units::{Bytes, Time};

use crate::cluster::ClusterSpec;
use crate::compute;
use crate::proxy::Proxy;
use crate::wire::{self, Kind, Token, monotonic_ns};
use crate::worker::{Outputs, layer_views};
use crate::{NodeError, checkpoint};

/// A gradient for the ring thread: its step, its index in backward order, and its values
/// (the layer's variables, flattened).
struct Gradient {
    step: u64,
    index: usize,
    data: Vec<f32>,
}

/// A bucket back from the ring: its place in the step, the gradients it holds, their sum
/// over every rank, and when its ring ran.
struct Reduced {
    bucket: u64,
    grads: Range<usize>,
    data: Vec<f32>,
    start: u64,
    end: u64,
}

/// Runs one rank of a ring all-reduce job to the end of training.
pub fn run(spec: &ClusterSpec, s: &Scenario) -> Result<(), NodeError> {
    let proxy = Proxy::from_effective(s);
    let index = spec.task.index;
    let ranks = spec.worker.len() as u32;
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
    let (to_ring, ring_in) = mpsc::unbounded_channel::<Gradient>();
    let (ring_out, from_ring) = std::sync::mpsc::channel::<Result<Reduced, NodeError>>();
    let node = RingNode {
        ring: Ring { ranks },
        rank: index,
        latency: spec.job.latency_ns,
        cycle: s.spec.topology.fusion_cycle,
        threshold: s.spec.topology.fusion_buffer,
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
            let links = connect_ring(&job, &token, timeout).await?;
            node.run(links, ring_in, &ring_out).await
        });
        if let Err(e) = run {
            let _ = ring_out.send(Err(e));
        }
    });

    let mut out = Outputs::default();
    let mut step_start = monotonic_ns();
    let grad_bytes: u64 = grads.iter().map(|g| g.1).sum();
    for step in start..total {
        let mut compute_ns = 0u64;
        let mut loss = 0.0f32;
        for (l, &offset) in var_offset.iter().enumerate() {
            let t0 = monotonic_ns();
            backend.load(l, &layer_views(&vars, offset, proxy.layers[l].vars.len()))?;
            backend.forward(l, step)?;
            let t1 = monotonic_ns();
            compute_ns += t1 - t0;
            out.op(index, step, "compute-forward", l as u64, 0, t0, t1, spec.job.epoch_ns);
        }
        // Backward; each gradient goes to the ring thread (which reports it) as it is made,
        // or all of them when backward ends.
        let mut held = Vec::new();
        for l in (0..layers).rev() {
            let t0 = monotonic_ns();
            let (layer_loss, g) = backend.backward(l, step)?;
            loss += layer_loss;
            let t1 = monotonic_ns();
            compute_ns += t1 - t0;
            out.op(index, step, "compute-backward", l as u64, 0, t0, t1, spec.job.epoch_ns);
            if let Some(gi) = grad_of_layer[l] {
                held.push(Gradient { step, index: gi, data: g.into_iter().flatten().collect() });
                if overlap {
                    hand_over(&to_ring, &mut held)?;
                }
            }
        }
        hand_over(&to_ring, &mut held)?;
        // The sums, bucket by bucket as the coordinator formed them, then the average
        // applied locally.
        let scale = settings.learning_rate / ranks as f32;
        let mut summed = 0;
        while summed < grads.len() {
            let done = from_ring.recv().map_err(|_| NodeError::Protocol("the ring stopped".into()))??;
            let bytes = done.data.len() as u64 * 4;
            out.op(index, step, "all-reduce", done.bucket, bytes, done.start, done.end, spec.job.epoch_ns);
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
        let moved = grad_bytes * 2 * u64::from(ranks - 1) / u64::from(ranks);
        out.steps.push(StepRecord {
            run: "replay".into(),
            worker: index,
            step,
            start_ns: step_start - spec.job.epoch_ns,
            end_ns: end - spec.job.epoch_ns,
            compute_ns,
            comm_ns: dur.saturating_sub(compute_ns),
            wait_ns: 0,
            bytes_sent: moved,
            bytes_received: moved,
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

/// Hands the gradients held so far to the ring thread.
fn hand_over(to_ring: &mpsc::UnboundedSender<Gradient>, held: &mut Vec<Gradient>) -> Result<(), NodeError> {
    for g in held.drain(..) {
        to_ring.send(g).map_err(|_| NodeError::Protocol("the ring stopped".into()))?;
    }
    Ok(())
}

/// A rank's connections: to the next rank, from the previous, and the control channel (rank
/// 0: from every other rank, by rank; the others: to rank 0).
struct Links {
    next: TcpStream,
    prev: TcpStream,
    control: Vec<(u32, TcpStream)>,
}

/// What the ring thread needs to know.
struct RingNode {
    ring: Ring,
    rank: u32,
    latency: u64,
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
    grads: Vec<Vec<f32>>,
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
        mut local: mpsc::UnboundedReceiver<Gradient>,
        done: &std::sync::mpsc::Sender<Result<Reduced, NodeError>>,
    ) -> Result<(), NodeError> {
        let (_, tx) = links.next.into_split();
        let (rx, _) = links.prev.into_split();
        let mut ring = (tx, rx);
        let store = Arc::new(Mutex::new(Store { step: self.steps.start, grads: Vec::new() }));
        let (report_tx, mut reports) = mpsc::unbounded_channel::<Result<Report, NodeError>>();
        let mut orders_rx = None;
        let mut to_members = Vec::new();
        let mut to_coordinator = None;
        for (r, stream) in links.control {
            let (read, write) = stream.into_split();
            if self.rank == 0 {
                tokio::spawn(read_reports(read, r, self.latency, report_tx.clone()));
                to_members.push(write);
            } else {
                let (order_tx, order_rx) = mpsc::unbounded_channel();
                tokio::spawn(read_orders(read, self.latency, order_tx));
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
                while let Some(g) = local.recv().await {
                    let count = {
                        let mut st = store.lock().expect("the store's lock is not poisoned");
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
                        st.grads.len()
                    };
                    match (&own, &mut to) {
                        (Some(own), _) => {
                            let _ = own.send(Ok((0, g.step, count, monotonic_ns())));
                        }
                        (None, Some(w)) => {
                            wire::write_frame(w, Kind::Report, count as u32, g.step, &[]).await?;
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
        ring: &mut (OwnedWriteHalf, OwnedReadHalf),
        store: &Mutex<Store>,
        reports: &mut mpsc::UnboundedReceiver<Result<Report, NodeError>>,
        members: &mut [OwnedWriteHalf],
        done: &std::sync::mpsc::Sender<Result<Reduced, NodeError>>,
    ) -> Result<(), NodeError> {
        let n = self.ring.ranks as usize;
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
                            () = tokio::time::sleep(Duration::from_nanos(at.0 - now)) => None,
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
        ring: &mut (OwnedWriteHalf, OwnedReadHalf),
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
        (tx, rx): &mut (OwnedWriteHalf, OwnedReadHalf),
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
            st.grads[grads.clone()].iter().flatten().copied().collect()
        };
        let start = monotonic_ns();
        let n = self.ring.ranks;
        let from = (self.rank + n - 1) % n;
        let len = data.len();
        let chunk = len.div_ceil(n as usize);
        data.resize(chunk * n as usize, 0.0);
        let cap = (chunk * 4).max(64) as u32;
        let tag = bucket as u32;
        for round in 0..self.ring.rounds() {
            let send = self.ring.send(self.rank, round, data.len() as u64);
            let recv = self.ring.send(from, round, data.len() as u64);
            let out = wire::f32_bytes(&data[send.chunk as usize * chunk..(send.chunk as usize + 1) * chunk]);
            let write = async {
                wire::write_frame(tx, Kind::Push, tag, u64::from(round), &out).await?;
                tx.flush().await.map_err(NodeError::Io)
            };
            let read = async {
                let f = wire::read_frame(rx, cap, self.timeout).await?;
                f.release(self.latency).await;
                Ok::<_, NodeError>(f)
            };
            let ((), f) = tokio::try_join!(write, read)?;
            if f.var != tag || f.step != u64::from(round) {
                return Err(NodeError::Protocol(format!(
                    "rank {}: expected bucket {tag} round {round}, got bucket {} round {}",
                    self.rank, f.var, f.step
                )));
            }
            let values =
                wire::bytes_f32(&f.payload).ok_or_else(|| NodeError::Protocol("chunk payload is not f32".into()))?;
            let mine = &mut data[recv.chunk as usize * chunk..(recv.chunk as usize + 1) * chunk];
            if values.len() != mine.len() {
                return Err(NodeError::Protocol(format!(
                    "rank {}: a chunk of {} values, expected {}",
                    self.rank,
                    values.len(),
                    mine.len()
                )));
            }
            if recv.reduce {
                mine.iter_mut().zip(&values).for_each(|(a, b)| *a += b);
            } else {
                mine.copy_from_slice(&values);
            }
        }
        data.truncate(len);
        let end = monotonic_ns();
        if grads.end == self.grads.len() {
            let mut st = store.lock().expect("the store's lock is not poisoned");
            st.step += 1;
            st.grads.clear();
        }
        done.send(Ok(Reduced { bucket, grads, data, start, end }))
            .map_err(|_| NodeError::Protocol("the worker stopped".into()))?;
        Ok(end)
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

/// Listens on this rank's address, connects to the next rank and accepts the previous one
/// (both through the job's handshake), and opens the control links: every rank but 0
/// connects to rank 0 announcing `ranks + rank` (rank `ranks - 1` connects to rank 0 twice, as
/// its ring successor and as a member).
async fn connect_ring(spec: &ClusterSpec, token: &Token, timeout: Duration) -> Result<Links, NodeError> {
    let ranks = spec.worker.len() as u32;
    let index = spec.task.index;
    let listener = TcpListener::bind(&spec.worker[index as usize]).await.map_err(NodeError::Io)?;
    let next_addr = spec.worker[((index + 1) % ranks) as usize].clone();
    let prev = (index + ranks - 1) % ranks;
    let members = if index == 0 { ranks - 1 } else { 0 };
    let accept = async {
        let mut prev_stream = None;
        let mut control = Vec::new();
        while prev_stream.is_none() || control.len() < members as usize {
            let (mut stream, peer) = listener.accept().await.map_err(NodeError::Io)?;
            stream.set_nodelay(true).map_err(NodeError::Io)?;
            match wire::accept(&mut stream, token, timeout).await {
                Ok(r) if r == prev && prev_stream.is_none() => prev_stream = Some(stream),
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
        Ok::<_, NodeError>((prev_stream.expect("the loop ends with the previous rank"), control))
    };
    let connect = async {
        let next = crate::worker::connect(&next_addr, token, index, timeout).await?;
        let coordinator = match index {
            0 => None,
            _ => Some(crate::worker::connect(&spec.worker[0], token, ranks + index, timeout).await?),
        };
        Ok::<_, NodeError>((next, coordinator))
    };
    let ((prev, mut control), (next, coordinator)) = tokio::try_join!(accept, connect)?;
    control.extend(coordinator.map(|c| (0, c)));
    Ok(Links { next, prev, control })
}
