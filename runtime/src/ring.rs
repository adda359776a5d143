//! The all-reduce worker (ring): no parameter servers; every worker holds the parameters,
//! listens for its ring predecessor, connects to its successor, and sums the gradients with
//! them following core's ring schedule ([`Ring::send`]: who sends which chunk in which round,
//! and whether the receiver adds it or keeps it), then applies the average locally.
//!
//! Overlap: gradients leave in fusion buckets ([`fusion_buckets`] of the layers in backward
//! order, up to `topology.fusion_buffer`), one at a time on a thread of its own while backward
//! goes on, each at the fusion cycle's tick by the simulator's coordinator rule
//! ([`launch_time`]: the first tick after its gradients are ready, and not before the previous
//! bucket's tick plus a cycle or its end). With `training.overlap = false` every bucket waits
//! for the end of backward. Every rank forms the same buckets from the scenario, so no
//! negotiation is needed (the simulator, with overlap, fuses what is ready at each tick, which
//! moves the same bytes in more, smaller buckets; without overlap both form these).
//! A bucket's buffer is padded to a multiple of the ranks and cut into equal chunks; in each
//! of `2 (ranks - 1)` rounds a rank writes one chunk to its successor while it reads one from
//! its predecessor.
//!
//! Checkpoints: every rank holds the same parameters; rank 0 writes them (as shard 0 of the
//! step's checkpoint) and every rank reads them back on resume.

use std::sync::mpsc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use topolab_core::collective::{Ring, backward_gradients, fusion_buckets, launch_time};
use topolab_core::records::{self, StepRecord};
use topolab_core::scenario::Scenario;
use topolab_core::units::Time;

use crate::cluster::ClusterSpec;
use crate::compute;
use crate::proxy::Proxy;
use crate::wire::{self, Kind, Token, monotonic_ns};
use crate::worker::{Outputs, layer_views};
use crate::{NodeError, checkpoint};

/// A bucket for the ring thread: its index, when its gradients were all ready here
/// (monotonic ns), and the gradients of its layers, flattened.
struct Bucket {
    index: usize,
    ready_ns: u64,
    data: Vec<f32>,
}

/// A bucket back from the ring: the sum over every rank, and when its ring ran.
struct Reduced {
    index: usize,
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
    // Buckets of layers in backward order, as every rank forms them.
    let grads = backward_gradients(&s.model);
    let buckets: Vec<Vec<usize>> = fusion_buckets(&grads, s.spec.topology.fusion_buffer)
        .into_iter()
        .map(|range| grads[range].iter().map(|&(l, _)| l).collect())
        .collect();
    let cycle = s.spec.topology.fusion_cycle;
    let overlap = s.spec.training.overlap;

    // The ring's connections, then its thread.
    let (to_ring, ring_in) = mpsc::channel::<Bucket>();
    let (ring_out, from_ring) = mpsc::channel::<Result<Reduced, NodeError>>();
    let ring = Ring { ranks };
    let (job, latency) = (spec.clone(), spec.job.latency_ns);
    let ring_thread = std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ring_out.send(Err(NodeError::Io(e)));
                return;
            }
        };
        let run = rt.block_on(async {
            let (next, prev) = connect_ring(&job, &token, timeout).await?;
            all_reduce_buckets(ring, index, (next, prev), latency, cycle, ring_in, &ring_out).await
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
        for (l, &offset) in var_offset.iter().enumerate() {
            let t0 = monotonic_ns();
            backend.load(l, &layer_views(&vars, offset, proxy.layers[l].vars.len()))?;
            backend.forward(l, step)?;
            let t1 = monotonic_ns();
            compute_ns += t1 - t0;
            out.op(index, step, "compute-forward", l as u64, 0, t0, t1, spec.job.epoch_ns);
        }
        // Backward; a bucket leaves once its last layer's gradients are here.
        let mut layer_grads: Vec<Option<Vec<Vec<f32>>>> = vec![None; layers];
        let mut next_bucket = 0;
        let mut sent_bytes = 0u64;
        let mut held = Vec::new();
        for l in (0..layers).rev() {
            let t0 = monotonic_ns();
            let (layer_loss, g) = backend.backward(l, step)?;
            loss += layer_loss;
            let t1 = monotonic_ns();
            compute_ns += t1 - t0;
            out.op(index, step, "compute-backward", l as u64, 0, t0, t1, spec.job.epoch_ns);
            layer_grads[l] = Some(g);
            while next_bucket < buckets.len() && buckets[next_bucket].iter().all(|&b| layer_grads[b].is_some()) {
                let data: Vec<f32> = buckets[next_bucket]
                    .iter()
                    .flat_map(|&b| layer_grads[b].as_ref().expect("checked").iter().flatten().copied())
                    .collect();
                sent_bytes += data.len() as u64 * 4;
                held.push(Bucket { index: next_bucket, ready_ns: monotonic_ns(), data });
                if overlap {
                    hand_over(&to_ring, &mut held)?;
                }
                next_bucket += 1;
            }
        }
        let backward_end = monotonic_ns();
        held.iter_mut().for_each(|b| b.ready_ns = backward_end);
        hand_over(&to_ring, &mut held)?;
        // The sums, then the average applied locally.
        let scale = settings.learning_rate / ranks as f32;
        for _ in 0..buckets.len() {
            let done = from_ring.recv().map_err(|_| NodeError::Protocol("the ring stopped".into()))??;
            out.op(
                index,
                step,
                "all-reduce",
                done.index as u64,
                done.data.len() as u64 * 4,
                done.start,
                done.end,
                spec.job.epoch_ns,
            );
            let mut off = 0;
            for &l in &buckets[done.index] {
                for v in 0..proxy.layers[l].vars.len() {
                    let w = &mut vars[var_offset[l] + v];
                    let g = &done.data[off..off + w.len()];
                    for (x, d) in w.iter_mut().zip(g) {
                        *x -= scale * d;
                    }
                    off += w.len();
                }
            }
        }
        let end = monotonic_ns();
        let dur = end - step_start;
        out.steps.push(StepRecord {
            run: "replay".into(),
            worker: index,
            step,
            start_ns: step_start - spec.job.epoch_ns,
            end_ns: end - spec.job.epoch_ns,
            compute_ns,
            comm_ns: dur.saturating_sub(compute_ns),
            wait_ns: 0,
            bytes_sent: sent_bytes * 2 * u64::from(ranks - 1) / u64::from(ranks),
            bytes_received: sent_bytes * 2 * u64::from(ranks - 1) / u64::from(ranks),
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

/// Listens on this rank's address, connects to the next rank and accepts the previous one
/// (both through the job's handshake); returns (to next, from previous).
async fn connect_ring(
    spec: &ClusterSpec,
    token: &Token,
    timeout: Duration,
) -> Result<(TcpStream, TcpStream), NodeError> {
    let ranks = spec.worker.len() as u32;
    let index = spec.task.index;
    let listener = TcpListener::bind(&spec.worker[index as usize]).await.map_err(NodeError::Io)?;
    let next_addr = spec.worker[((index + 1) % ranks) as usize].clone();
    let prev = (index + ranks - 1) % ranks;
    let accept = async {
        loop {
            let (mut stream, peer) = listener.accept().await.map_err(NodeError::Io)?;
            stream.set_nodelay(true).map_err(NodeError::Io)?;
            match wire::accept(&mut stream, token, timeout).await {
                Ok(r) if r == prev => return Ok::<_, NodeError>(stream),
                Ok(r) => eprintln!("rank {index}: refused rank {r} from {peer}: not the previous rank {prev}"),
                Err(e) => eprintln!("rank {index}: refused a peer from {peer}: {e}"),
            }
        }
    };
    let connect = crate::worker::connect(&next_addr, token, index, timeout);
    let (prev_stream, next_stream) = tokio::try_join!(accept, connect)?;
    Ok((next_stream, prev_stream))
}

/// Hands the buckets held so far to the ring thread.
fn hand_over(to_ring: &mpsc::Sender<Bucket>, held: &mut Vec<Bucket>) -> Result<(), NodeError> {
    for b in held.drain(..) {
        to_ring.send(b).map_err(|_| NodeError::Protocol("the ring stopped".into()))?;
    }
    Ok(())
}

/// Runs the ring on every bucket that comes in, in order, until the sender hangs up; each at
/// its fusion-cycle tick.
async fn all_reduce_buckets(
    ring: Ring,
    rank: u32,
    (next, prev): (TcpStream, TcpStream),
    latency: u64,
    cycle: Time,
    buckets: mpsc::Receiver<Bucket>,
    done: &mpsc::Sender<Result<Reduced, NodeError>>,
) -> Result<(), NodeError> {
    let (_, mut tx) = next.into_split();
    let (mut rx, _) = prev.into_split();
    let n = ring.ranks;
    let from = (rank + n - 1) % n;
    // Blocking receive on the ring's own thread: nothing else runs on this runtime meanwhile.
    // The coordinator's clock: the first tick is at the job's start, as the simulator's at 0.
    let mut earliest = Time(monotonic_ns());
    while let Ok(Bucket { index, ready_ns, mut data }) = buckets.recv() {
        let launch = launch_time(Time(ready_ns), earliest, cycle);
        let now = monotonic_ns();
        if launch.0 > now {
            tokio::time::sleep(Duration::from_nanos(launch.0 - now)).await;
        }
        let start = monotonic_ns();
        let len = data.len();
        let chunk = len.div_ceil(n as usize);
        data.resize(chunk * n as usize, 0.0);
        let cap = (chunk * 4).max(64) as u32;
        for round in 0..ring.rounds() {
            let send = ring.send(rank, round, data.len() as u64);
            let recv = ring.send(from, round, data.len() as u64);
            let out = wire::f32_bytes(&data[send.chunk as usize * chunk..(send.chunk as usize + 1) * chunk]);
            let write = async {
                wire::write_frame(&mut tx, Kind::Push, index as u32, u64::from(round), &out).await?;
                tx.flush().await.map_err(NodeError::Io)
            };
            let read = async {
                let f = wire::read_frame(&mut rx, cap, Duration::from_secs(3600)).await?;
                f.release(latency).await;
                Ok::<_, NodeError>(f)
            };
            let ((), f) = tokio::try_join!(write, read)?;
            if f.var as usize != index || f.step != u64::from(round) {
                return Err(NodeError::Protocol(format!(
                    "rank {rank}: expected bucket {index} round {round}, got bucket {} round {}",
                    f.var, f.step
                )));
            }
            let values =
                wire::bytes_f32(&f.payload).ok_or_else(|| NodeError::Protocol("chunk payload is not f32".into()))?;
            let mine = &mut data[recv.chunk as usize * chunk..(recv.chunk as usize + 1) * chunk];
            if values.len() != mine.len() {
                return Err(NodeError::Protocol(format!(
                    "rank {rank}: a chunk of {} values, expected {}",
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
        earliest = Time((launch + cycle).0.max(end));
        if done.send(Ok(Reduced { index, data, start, end })).is_err() {
            break;
        }
    }
    Ok(())
}
