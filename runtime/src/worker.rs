//! The worker task: pulls variables, computes the proxy model layer by layer, pushes each
//! layer's gradients as soon as its backward pass ends, and records what it did.
//!
//! I/O runs on a small tokio runtime (a reader and a writer task per shard connection) while
//! the compute loop runs on the task's main thread, so pushes leave while the next layer's
//! backward pass computes, as in the Plan.
//!
//! Sync and backup modes follow core's step rules ([`topolab_core::step`]): right after its
//! last push of a step to a shard the worker requests the next step from that shard; it is
//! released into the next step when every shard has answered with its Ready ([`Release`]),
//! and only then fetches the next step's values.
//!
//! Step boundaries, as the simulator draws them: step k starts when the worker is released
//! into it (for the first step, when it asks) and ends when it is released into step k+1
//! (sync, backup) or when its own gradients are applied (async). Waiting is the time between
//! the worker's own part being done (every push written; in async, acknowledged) and the end
//! of the step.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use topolab_core::plan::Plan;
use topolab_core::records::{self, StepRecord};
use topolab_core::scenario::{Mode, ParameterServers, Scenario};
use topolab_core::step::Release;

use crate::cluster::ClusterSpec;
use crate::compute;
use crate::proxy::Proxy;
use crate::wire::{self, BARRIER_ONLY, Frame, Kind, Token, monotonic_ns};
use crate::{NodeError, OpRecord, ps};

enum Out {
    Frame { kind: Kind, var: u32, step: u64, payload: Vec<u8> },
}

struct Sent {
    kind: Kind,
    var: u32,
    step: u64,
    bytes: u64,
    start: u64,
    end: u64,
}

/// Runs a worker to the end of training.
pub fn run(spec: &ClusterSpec, s: &Scenario, t: ParameterServers) -> Result<(), NodeError> {
    let plan = Plan::new(s).map_err(|e| NodeError::Setup(e.to_string()))?;
    let proxy = Proxy::from_effective(s);
    let index = spec.task.index;
    let token = Token::from_hex(&spec.job.token).ok_or_else(|| NodeError::Setup("bad token".into()))?;
    let r = &s.spec.runtime;
    let mut backend = compute::open(r.backend, &proxy, s.spec.seed, index, r.device, s.spec.hardware.precision)?;
    let timeout = Duration::from_secs(spec.job.timeout_s);
    let latency = spec.job.latency_ns;
    let epoch = spec.job.epoch_ns;
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().map_err(NodeError::Io)?;
    let (inbox_tx, mut inbox) = mpsc::unbounded_channel::<(Frame, u64)>();
    let (sent_tx, mut sent) = mpsc::unbounded_channel::<Sent>();
    let cap = proxy.var_sizes().into_iter().max().unwrap_or(1) as u32 * 4;
    let mut outs: Vec<mpsc::UnboundedSender<Out>> = Vec::new();
    let mut writers = Vec::new();
    for addr in &spec.ps {
        let stream = rt.block_on(connect(addr, &token, index, timeout))?;
        let (mut rd, mut wr) = stream.into_split();
        let inbox_tx = inbox_tx.clone();
        rt.spawn(async move {
            while let Ok(f) = wire::read_frame(&mut rd, cap.max(64), Duration::from_secs(3600)).await {
                f.release(latency).await;
                if inbox_tx.send((f, monotonic_ns())).is_err() {
                    break;
                }
            }
        });
        let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
        let sent_tx = sent_tx.clone();
        writers.push(rt.spawn(async move {
            while let Some(Out::Frame { kind, var, step, payload }) = rx.recv().await {
                let start = monotonic_ns();
                if wire::write_frame(&mut wr, kind, var, step, &payload).await.is_err() {
                    break;
                }
                let _ = sent_tx.send(Sent { kind, var, step, bytes: payload.len() as u64, start, end: monotonic_ns() });
            }
            let _ = wr.shutdown().await;
        }));
        outs.push(tx);
    }
    drop(sent_tx);

    let synchronous = matches!(t.mode, Mode::Sync | Mode::Backup);
    let overlap = s.spec.training.overlap;
    let layers = proxy.layers.len();
    let mut parts_of_layer: Vec<Vec<usize>> = vec![Vec::new(); layers];
    for (i, p) in plan.placement.parts.iter().enumerate() {
        parts_of_layer[p.layer].push(i);
    }
    let mut vars: Vec<Vec<f32>> = proxy.var_sizes().into_iter().map(|n| vec![0.0; n]).collect();
    let var_offset = proxy.var_offsets();
    let mut values: HashMap<(u64, usize), (Vec<f32>, u64, u64)> = HashMap::new();
    let shards = spec.ps.len();
    // Released into a step when every shard's Ready of it is here; when that was.
    let mut release = Release::new(shards as u32, spec.job.start_step + 1);
    let mut released_at: HashMap<u64, u64> = HashMap::new();
    let mut acks: HashMap<u64, usize> = HashMap::new();
    let mut out = Outputs::default();
    let send =
        |outs: &Vec<mpsc::UnboundedSender<Out>>, shard: usize, kind: Kind, var: u32, step: u64, payload: Vec<u8>| {
            outs[shard]
                .send(Out::Frame { kind, var, step, payload })
                .map_err(|_| NodeError::Protocol(format!("connection to shard {shard} closed")))
        };
    let handle = |f: Frame,
                  at: u64,
                  values: &mut HashMap<(u64, usize), (Vec<f32>, u64, u64)>,
                  release: &mut Release,
                  released_at: &mut HashMap<u64, u64>,
                  acks: &mut HashMap<u64, usize>|
     -> Result<(), NodeError> {
        match f.kind {
            // Async workers need no release: their Readys only answer their pulls.
            Kind::Ready if synchronous => {
                if release.ready(f.step) {
                    released_at.insert(f.step, at);
                }
            }
            Kind::Ready => {}
            Kind::Value => {
                let v = wire::bytes_f32(&f.payload)
                    .ok_or_else(|| NodeError::Protocol("value payload is not f32".into()))?;
                values.insert((f.step, f.var as usize), (v, f.payload.len() as u64, at));
            }
            Kind::Applied => *acks.entry(f.step).or_default() += 1,
            other => return Err(NodeError::Protocol(format!("unexpected {other:?} from a shard"))),
        }
        Ok(())
    };
    let recv = |inbox: &mut mpsc::UnboundedReceiver<(Frame, u64)>| -> Result<(Frame, u64), NodeError> {
        inbox.blocking_recv().ok_or_else(|| NodeError::Protocol("a shard closed the connection".into()))
    };

    let start = spec.job.start_step;
    let total = s.spec.training.steps;
    // When each shard was asked for the current step's values.
    let mut requested = vec![monotonic_ns(); shards];
    let mut step_start = requested[0];
    // The last part (in push order) of each shard: the request for the next step follows it.
    let mut last_push: Vec<Option<usize>> = vec![None; shards];
    for &p in parts_of_layer.iter().flatten() {
        last_push[plan.placement.parts[p].shard as usize].get_or_insert(p);
    }

    let wall = Instant::now();
    for step in start..total {
        let mut compute_ns = 0u64;
        let mut received = 0u64;
        let mut sent_bytes = 0u64;
        let mut loss = 0.0f32;
        if synchronous || step == start {
            // Released into this step (or the first): fetch every shard's values. Async
            // workers asked when their last step ended.
            let kind = if synchronous { Kind::Fetch } else { Kind::Pull };
            for (sh, at) in requested.iter_mut().enumerate() {
                *at = monotonic_ns();
                send(&outs, sh, kind, 0, step, Vec::new())?;
            }
        }
        // Forward, each layer as soon as its variables are here.
        for l in 0..layers {
            while !parts_of_layer[l].iter().all(|&p| values.contains_key(&(step, p))) {
                let (f, at) = recv(&mut inbox)?;
                handle(f, at, &mut values, &mut release, &mut released_at, &mut acks)?;
            }
            for &p in &parts_of_layer[l] {
                let (v, bytes, at) = values.remove(&(step, p)).expect("checked above");
                let (off, len) = ps::part_range(&plan, p);
                vars[plan.placement.parts[p].var][off..off + len].copy_from_slice(&v[..len]);
                received += bytes;
                out.op(
                    index,
                    step,
                    "pull",
                    p as u64,
                    bytes,
                    requested[plan.placement.parts[p].shard as usize],
                    at,
                    epoch,
                );
            }
            let views = layer_views(&vars, var_offset[l], proxy.layers[l].vars.len());
            compute_ns += out.forward(backend.as_mut(), l, &views, (index, step, epoch))?;
        }
        // Backward in reverse; each layer's gradients leave at once (with overlap; else when
        // backward ends, in the same order).
        let mut pushes = 0usize;
        let mut held: Vec<(usize, Kind, u32, u64, Vec<u8>)> = Vec::new();
        for l in (0..layers).rev() {
            let (ns, layer_loss, grads) = out.backward(backend.as_mut(), l, (index, step, epoch))?;
            compute_ns += ns;
            loss += layer_loss;
            for &p in parts_of_layer[l].iter().rev() {
                let part = plan.placement.parts[p];
                let (off, len) = ps::part_range(&plan, p);
                let g = &grads[part.var - var_offset[l]][off..off + len];
                let payload = wire::f32_bytes(g);
                sent_bytes += payload.len() as u64;
                held.push((part.shard as usize, Kind::Push, p as u32, step, payload));
                pushes += 1;
                if synchronous && last_push[part.shard as usize] == Some(p) {
                    // The request for the next step follows the shard's last push.
                    held.push((part.shard as usize, Kind::Pull, BARRIER_ONLY, step + 1, Vec::new()));
                }
            }
            if overlap || l == 0 {
                for (sh, kind, var, at, payload) in held.drain(..) {
                    send(&outs, sh, kind, var, at, payload)?;
                }
            }
        }
        if synchronous {
            // Shards that hold none of the parts: asked when backward ends.
            for sh in (0..shards).filter(|&sh| last_push[sh].is_none()) {
                send(&outs, sh, Kind::Pull, BARRIER_ONLY, step + 1, Vec::new())?;
            }
        }
        out.losses.push((step, loss));
        // Own part done: every push written (sync), or applied (async).
        let mut written = 0;
        while written < pushes {
            let r =
                sent.blocking_recv().ok_or_else(|| NodeError::Protocol("a connection closed while pushing".into()))?;
            if r.kind == Kind::Push {
                out.op(index, r.step, "push", u64::from(r.var), r.bytes, r.start, r.end, epoch);
                written += 1;
            }
        }
        if !synchronous {
            while acks.get(&step).copied().unwrap_or(0) < pushes {
                let (f, at) = recv(&mut inbox)?;
                handle(f, at, &mut values, &mut release, &mut released_at, &mut acks)?;
            }
        }
        let own_done = monotonic_ns();
        let next = step + 1;
        if !synchronous && next < total {
            for (sh, at) in requested.iter_mut().enumerate() {
                *at = monotonic_ns();
                send(&outs, sh, Kind::Pull, 0, next, Vec::new())?;
            }
        }
        let end = if synchronous {
            while release.step() <= next {
                let (f, at) = recv(&mut inbox)?;
                handle(f, at, &mut values, &mut release, &mut released_at, &mut acks)?;
            }
            released_at[&next]
        } else {
            own_done
        };
        let wait = end.saturating_sub(own_done);
        let dur = end.saturating_sub(step_start);
        out.steps.push(StepRecord {
            run: "replay".into(),
            worker: index,
            step,
            start_ns: step_start - epoch,
            end_ns: end - epoch,
            compute_ns,
            comm_ns: dur.saturating_sub(compute_ns).saturating_sub(wait),
            wait_ns: wait,
            bytes_sent: sent_bytes,
            bytes_received: received,
            scenario_hash: s.hash.clone(),
            seed: s.spec.seed,
            version: records::VERSION.into(),
        });
        step_start = end;
        out.progress(spec, step + 1)?;
    }
    for sh in 0..shards {
        send(&outs, sh, Kind::Done, 0, total, Vec::new())?;
    }
    drop(outs);
    rt.block_on(async {
        for w in writers {
            let _ = w.await;
        }
    });
    out.write(spec, index)?;
    eprintln!("worker{index}: {} steps in {:.2} s", total - start, wall.elapsed().as_secs_f64());
    Ok(())
}

/// What a worker records and writes for the launcher: its steps, its timed ops and its
/// losses (files in the run's trace directory, and on stdout where the launcher reads the
/// task's log instead: pods), and its progress after every step.
#[derive(Default)]
pub(crate) struct Outputs {
    pub(crate) steps: Vec<StepRecord>,
    pub(crate) ops: Vec<OpRecord>,
    pub(crate) losses: Vec<(u64, f32)>,
}

impl Outputs {
    /// Records an op from `start` to `end` (monotonic ns), relative to the job's `epoch`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn op(
        &mut self,
        worker: u32,
        step: u64,
        op: &'static str,
        index: u64,
        bytes: u64,
        start: u64,
        end: u64,
        epoch: u64,
    ) {
        self.ops.push(OpRecord { worker, step, op, index, bytes, start_ns: start - epoch, end_ns: end - epoch });
    }

    /// Loads layer `l`'s variables (`views`) into `backend` and runs its forward pass of
    /// `step`, recorded as `worker`'s compute-forward op; returns how long it took (ns).
    pub(crate) fn forward(
        &mut self,
        backend: &mut dyn compute::Backend,
        l: usize,
        views: &[&[f32]],
        (worker, step, epoch): (u32, u64, u64),
    ) -> Result<u64, NodeError> {
        let t0 = monotonic_ns();
        backend.load(l, views)?;
        backend.forward(l, step)?;
        let t1 = monotonic_ns();
        self.op(worker, step, "compute-forward", l as u64, 0, t0, t1, epoch);
        Ok(t1 - t0)
    }

    /// Layer `l`'s backward pass of `step`, recorded as `worker`'s compute-backward op:
    /// how long it took (ns), its loss and its gradients per variable.
    pub(crate) fn backward(
        &mut self,
        backend: &mut dyn compute::Backend,
        l: usize,
        (worker, step, epoch): (u32, u64, u64),
    ) -> Result<(u64, f32, Vec<Vec<f32>>), NodeError> {
        let t0 = monotonic_ns();
        let (loss, grads) = backend.backward(l, step)?;
        let t1 = monotonic_ns();
        self.op(worker, step, "compute-backward", l as u64, 0, t0, t1, epoch);
        Ok((t1 - t0, loss, grads))
    }

    /// Steps done so far, for the launcher's progress bar (a few bytes rewritten per step).
    pub(crate) fn progress(&self, spec: &ClusterSpec, done: u64) -> Result<(), NodeError> {
        let dir = spec.job.out.join("trace");
        std::fs::create_dir_all(&dir).map_err(NodeError::Io)?;
        let _ = std::fs::write(dir.join(format!("worker-{}.progress", spec.task.index)), done.to_string());
        if std::env::var_os(crate::tracelog::ENV).is_some() {
            crate::tracelog::progress(&mut std::io::stdout().lock(), done).map_err(NodeError::Io)?;
        }
        Ok(())
    }

    /// Writes the worker's steps, ops and losses; the launcher merges them.
    pub(crate) fn write(&self, spec: &ClusterSpec, index: u32) -> Result<(), NodeError> {
        let dir = spec.job.out.join("trace");
        std::fs::create_dir_all(&dir).map_err(NodeError::Io)?;
        let to_stdout = std::env::var_os(crate::tracelog::ENV).is_some();
        let mut buf = Vec::new();
        records::write_steps_csv(&self.steps, &mut buf).map_err(|e| NodeError::Setup(e.to_string()))?;
        let steps_csv = String::from_utf8(buf).expect("CSV is UTF-8");
        let mut ops_csv = String::from("worker,step,op,index,bytes,start_ns,end_ns\n");
        for o in &self.ops {
            ops_csv.push_str(&format!(
                "{},{},{},{},{},{},{}\n",
                o.worker, o.step, o.op, o.index, o.bytes, o.start_ns, o.end_ns
            ));
        }
        let mut loss_csv = String::from("worker,step,loss\n");
        for (st, l) in &self.losses {
            loss_csv.push_str(&format!("{index},{st},{l}\n"));
        }
        for (kind, text) in [("steps", &steps_csv), ("ops", &ops_csv), ("loss", &loss_csv)] {
            let name = format!("worker-{index}.{kind}.csv");
            std::fs::write(dir.join(&name), text).map_err(NodeError::Io)?;
            if to_stdout {
                crate::tracelog::file(&mut std::io::BufWriter::new(std::io::stdout().lock()), &name, text)
                    .map_err(NodeError::Io)?;
            }
        }
        Ok(())
    }
}

/// The `count` variables of a layer starting at `offset`, W first.
pub(crate) fn layer_views(vars: &[Vec<f32>], offset: usize, count: usize) -> Vec<&[f32]> {
    vars[offset..offset + count].iter().map(Vec::as_slice).collect()
}

pub(crate) async fn connect(addr: &str, token: &Token, index: u32, timeout: Duration) -> Result<TcpStream, NodeError> {
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(20);
    loop {
        match TcpStream::connect(addr).await {
            Ok(mut s) => {
                s.set_nodelay(true).map_err(NodeError::Io)?;
                wire::connect(&mut s, token, index, timeout).await?;
                return Ok(s);
            }
            // Refused, or the shard's name does not resolve yet (a Kubernetes Service appears
            // a moment after its pod): retry with back-off until the deadline.
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(NodeError::Setup(format!("cannot reach shard at {addr}: {e}"))),
        }
    }
}
