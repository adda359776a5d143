//! The parameter-server task: holds its shard's variable parts, aggregates gradients, applies
//! SGD, serves pulls, checkpoints, and exits when every worker is done.
//!
//! Sync and backup modes follow core's step rules ([`topolab_core::step`]): a part's gradients
//! of a step are summed **in worker order** once the first `workers - backup` have arrived
//! ([`Aggregation`]; later ones of that step are dropped), so a run is reproducible bit for
//! bit whatever the arrival order; when every part of the shard is applied the shard is ready
//! for the next step ([`ShardProgress`]) and answers the waiting requests with a Ready and its
//! values. Async and stale-synchronous modes apply each gradient on arrival and acknowledge it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use topolab_core::plan::Plan;
use topolab_core::scenario::{Mode, ParameterServers, Scenario};
use topolab_core::step::{Aggregation, Pushed, ShardProgress};

use crate::cluster::ClusterSpec;
use crate::proxy::Proxy;
use crate::wire::{self, BARRIER_ONLY, Kind, Token};
use crate::{NodeError, checkpoint};

/// A shard's state.
struct Shard {
    index: u32,
    /// Global part indices held here, in part order.
    parts: Vec<usize>,
    /// Values per local part.
    values: Vec<Vec<f32>>,
    lr: f32,
    workers: u32,
    inputs: u32,
    synchronous: bool,
    /// Sync: each local part's aggregation, and the gradients received per worker.
    aggregation: Vec<Aggregation>,
    pending: Vec<Vec<Option<Vec<f32>>>>,
    progress: ShardProgress,
    done: u32,
    checkpoint_every: u64,
    checkpoint_dir: std::path::PathBuf,
}

impl Shard {
    fn local(&self, part: usize) -> Option<usize> {
        self.parts.iter().position(|&p| p == part)
    }

    fn apply(&mut self, li: usize, grad: &[f32], scale: f32) {
        for (w, g) in self.values[li].iter_mut().zip(grad) {
            *w -= self.lr * scale * g;
        }
    }

    /// Concatenation of every part, for checkpoints and final parameters.
    fn flat(&self) -> Vec<f32> {
        self.values.iter().flatten().copied().collect()
    }
}

/// Runs a shard until every worker is done.
pub fn run(spec: &ClusterSpec, s: &Scenario, t: ParameterServers) -> Result<(), NodeError> {
    let plan = Plan::new(s).map_err(|e| NodeError::Setup(e.to_string()))?;
    let proxy = Proxy::from_effective(s);
    let index = spec.task.index;
    let init = proxy.init(s.spec.seed);
    let parts: Vec<usize> =
        (0..plan.placement.parts.len()).filter(|&i| plan.placement.parts[i].shard == index).collect();
    let mut values: Vec<Vec<f32>> = parts.iter().map(|&p| part_slice(&plan, &init, p)).collect();
    if spec.job.start_step > 0 {
        checkpoint::read_into(&spec.job.checkpoint_dir, spec.job.start_step, index, &mut values)
            .map_err(NodeError::Setup)?;
    }
    let settings = crate::launcher::ReplaySettings::of(s);
    let synchronous = matches!(t.mode, Mode::Sync | Mode::Backup);
    let inputs = t.workers - if t.mode == Mode::Backup { t.backup_workers } else { 0 };
    let shard = Shard {
        index,
        aggregation: vec![Aggregation::new(inputs, spec.job.start_step); parts.len()],
        progress: ShardProgress::new(parts.len(), spec.job.start_step),
        pending: parts.iter().map(|_| vec![None; t.workers as usize]).collect(),
        parts,
        values,
        lr: settings.learning_rate,
        workers: t.workers,
        inputs,
        synchronous,
        done: 0,
        checkpoint_every: settings.checkpoint_every,
        checkpoint_dir: spec.job.checkpoint_dir.clone(),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(NodeError::Io)?;
    rt.block_on(serve(spec.clone(), shard))
}

/// The slice of variable data of `part` (rows of its variable).
pub fn part_slice(plan: &Plan, flat_vars: &[Vec<f32>], part: usize) -> Vec<f32> {
    let (start, len) = part_range(plan, part);
    flat_vars[plan.placement.parts[part].var][start..start + len].to_vec()
}

/// (first element, element count) of `part` within its variable.
pub fn part_range(plan: &Plan, part: usize) -> (usize, usize) {
    let p = plan.placement.parts[part];
    let len = (p.bytes.0 / 4) as usize;
    let before: usize = plan
        .placement
        .parts
        .iter()
        .filter(|q| q.var == p.var && q.part < p.part)
        .map(|q| (q.bytes.0 / 4) as usize)
        .sum();
    (before, len)
}

async fn serve(spec: ClusterSpec, shard: Shard) -> Result<(), NodeError> {
    let token = Token::from_hex(&spec.job.token).ok_or_else(|| NodeError::Setup("bad token".into()))?;
    let listener = TcpListener::bind(&spec.job.bind).await.map_err(NodeError::Io)?;
    let addr: SocketAddr = listener.local_addr().map_err(NodeError::Io)?;
    // The launcher reads this line to learn the port.
    println!("LISTENING {addr}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let start = spec.job.start_step;
    let (ready_tx, ready_rx) = watch::channel(start);
    let all_done = Arc::new(Notify::new());
    let shard = Arc::new(Mutex::new(shard));
    let ready_tx = Arc::new(ready_tx);
    let timeout = Duration::from_secs(spec.job.timeout_s);
    let latency = spec.job.latency_ns;
    loop {
        tokio::select! {
            _ = all_done.notified() => break,
            acc = listener.accept() => {
                let (stream, peer) = acc.map_err(NodeError::Io)?;
                let (shard, ready_tx, ready_rx, all_done, token) =
                    (shard.clone(), ready_tx.clone(), ready_rx.clone(), all_done.clone(), token.clone());
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, shard, ready_tx, ready_rx, all_done, token, timeout, latency).await {
                        eprintln!("ps: connection from {peer}: {e}");
                    }
                });
            }
        }
    }
    let sh = shard.lock().expect("no task panics while holding the shard");
    let final_dir = spec.job.out.join("final");
    std::fs::create_dir_all(&final_dir).map_err(NodeError::Io)?;
    checkpoint::write_atomic(&final_dir.join(format!("shard-{}.bin", sh.index)), &wire::f32_bytes(&sh.flat()))
        .map_err(NodeError::Io)?;
    eprintln!("ps{}: every worker is done; final parameters written", sh.index);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    mut stream: TcpStream,
    shard: Arc<Mutex<Shard>>,
    ready_tx: Arc<watch::Sender<u64>>,
    mut ready_rx: watch::Receiver<u64>,
    all_done: Arc<Notify>,
    token: Token,
    timeout: Duration,
    latency: u64,
) -> Result<(), NodeError> {
    stream.set_nodelay(true).map_err(NodeError::Io)?;
    let worker = match wire::accept(&mut stream, &token, timeout).await {
        Ok(w) => w,
        Err(e) => {
            // Refused and logged; the peer's connection is closed.
            eprintln!("ps: refused a peer: {e}");
            return Ok(());
        }
    };
    let cap = {
        let sh = shard.lock().expect("shard lock");
        sh.values.iter().map(Vec::len).max().unwrap_or(0) as u32 * 4
    };
    // Workers may pause for long compute between frames: a generous idle timeout.
    let idle = timeout * 10;
    loop {
        let f = wire::read_frame(&mut stream, cap.max(64), idle).await?;
        f.release(latency).await;
        match f.kind {
            Kind::Pull | Kind::Fetch => {
                // A request (Pull) is answered with a Ready once the shard has applied the
                // step before, then the values unless it asks for the barrier alone; a
                // fetch (sync modes, core's rule 1) with the values only: the worker was
                // released, so the shard is ready and the wait is a guard, not a barrier.
                let step = f.step;
                let wait = {
                    let sh = shard.lock().expect("shard lock");
                    // A shard without parts has nothing to aggregate: always ready.
                    sh.synchronous && !sh.parts.is_empty()
                };
                if wait {
                    ready_rx.wait_for(|&r| r >= step).await.map_err(|_| NodeError::Setup("shard stopped".into()))?;
                }
                if f.kind == Kind::Pull {
                    wire::write_frame(&mut stream, Kind::Ready, 0, step, &[]).await?;
                }
                if f.var != BARRIER_ONLY {
                    let frames: Vec<(u32, Vec<u8>)> = {
                        let sh = shard.lock().expect("shard lock");
                        sh.parts.iter().zip(&sh.values).map(|(&p, v)| (p as u32, wire::f32_bytes(v))).collect()
                    };
                    for (p, bytes) in frames {
                        wire::write_frame(&mut stream, Kind::Value, p, step, &bytes).await?;
                    }
                }
                stream.flush().await.map_err(NodeError::Io)?;
            }
            Kind::Push => {
                let grad =
                    wire::bytes_f32(&f.payload).ok_or_else(|| NodeError::Protocol("push payload is not f32".into()))?;
                let ack = push(&shard, &ready_tx, worker, f.var as usize, f.step, grad)?;
                if ack {
                    wire::write_frame(&mut stream, Kind::Applied, f.var, f.step, &[]).await?;
                }
            }
            Kind::Done => {
                let mut sh = shard.lock().expect("shard lock");
                sh.done += 1;
                if sh.done == sh.workers {
                    all_done.notify_one();
                }
                return Ok(());
            }
            other => return Err(NodeError::Protocol(format!("unexpected {other:?} from worker {worker}"))),
        }
    }
}

/// Handles a pushed gradient; returns whether to acknowledge it (async modes).
fn push(
    shard: &Mutex<Shard>,
    ready_tx: &watch::Sender<u64>,
    worker: u32,
    part: usize,
    step: u64,
    grad: Vec<f32>,
) -> Result<bool, NodeError> {
    let mut sh = shard.lock().expect("shard lock");
    let li = sh.local(part).ok_or_else(|| NodeError::Protocol(format!("part {part} is not on shard {}", sh.index)))?;
    if grad.len() != sh.values[li].len() {
        return Err(NodeError::Protocol(format!(
            "gradient of part {part} has {} values, expected {}",
            grad.len(),
            sh.values[li].len()
        )));
    }
    if !sh.synchronous {
        sh.apply(li, &grad, 1.0);
        return Ok(true);
    }
    match sh.aggregation[li].push(step, 1) {
        // A late gradient of an aggregated step (backup workers).
        Pushed::Dropped => return Ok(false),
        Pushed::Waiting => {
            sh.pending[li][worker as usize] = Some(grad);
            return Ok(false);
        }
        Pushed::Complete => sh.pending[li][worker as usize] = Some(grad),
    }
    // Sum in worker order: the same bits whatever the arrival order.
    let mut sum = vec![0f32; sh.values[li].len()];
    for g in sh.pending[li].iter_mut().filter_map(Option::take) {
        for (a, b) in sum.iter_mut().zip(g) {
            *a += b;
        }
    }
    let scale = 1.0 / sh.inputs as f32;
    sh.apply(li, &sum, scale);
    if let Some(next) = sh.progress.applied() {
        if sh.checkpoint_every > 0 && next.is_multiple_of(sh.checkpoint_every) {
            checkpoint::write(&sh.checkpoint_dir, next, sh.index, &sh.flat()).map_err(NodeError::Io)?;
        }
        ready_tx.send_replace(next);
    }
    Ok(false)
}
