//! The Plan: what one training step does, as a DAG of ops, for the parameter-server topology.
//!
//! Both engines execute the same Plan: the simulator times its ops, the runtime performs them.
//! It is a compact **template**: one op list for a worker host (shared by all identical
//! workers) and one per shard, instantiated step by step; never materialised per worker and
//! step (1024 workers x 190 variables would be millions of ops per step).
//!
//! Inside a template, `deps` are indices of ops of the same template and the same step. Edges
//! between templates follow fixed rules, by mode:
//!
//! | edge | sync / backup | async | stale-synchronous |
//! |---|---|---|---|
//! | worker `Push(p)` -> shard | counts toward `Aggregate(p)` (the first `inputs` pushes of the step; later ones are dropped) | triggers its own `Apply(p)` | as async |
//! | shard `Apply(p)` -> worker | the shard's last `Apply` of the step makes it ready; its Ready answers the worker's request for the next step | - | - |
//! | worker `Barrier` (step k) -> worker | released by the Ready of every shard: `Pull`s of step k+1 (fetches) start after it | no barrier: step k+1 pulls at once | pulls wait while the worker is `staleness` steps ahead of the slowest |
//!
//! The synchronous rules (requests, Readys, the release, fetches) are written once as state
//! machines in [`crate::step`]; both engines drive them.
//!
//! Multi-GPU hosts run one replica per GPU: every `Compute` runs on each GPU in parallel. With
//! host-local aggregation (TensorFlow's `distributed_replicated`), a host pulls each variable
//! once and broadcasts it over the host bus, and sums its GPUs' gradients over the host bus
//! before one push; without it every GPU pulls and pushes on its own (`copies` = GPUs).

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::placement::Placement;
use crate::scenario::{Mode, PsHosts, Scenario, TopologyKind};
use crate::units::Bytes;

/// A physical host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Host {
    /// Worker host `i` (co-located shard `i` lives here too).
    Worker(u32),
    /// Dedicated parameter-server host `i`.
    Ps(u32),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Worker(i) => write!(f, "worker{i}"),
            Host::Ps(i) => write!(f, "ps{i}"),
        }
    }
}

/// Forward or backward pass of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Pass {
    /// Forward.
    Forward,
    /// Backward (gradients of activations and of weights: 2x the forward FLOPs).
    Backward,
}

/// One operation of a step template.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Op {
    /// Compute one layer on each GPU of the host for `batch` samples.
    Compute {
        /// Layer index.
        layer: usize,
        /// Pass.
        pass: Pass,
        /// FLOPs per GPU.
        flops: f64,
    },
    /// The part's shard sends the current variable part to this worker.
    Pull {
        /// Index into [`Placement::parts`].
        part: usize,
        /// Bytes per copy.
        bytes: Bytes,
        /// Copies sent (GPUs per host without local aggregation, else 1).
        copies: u32,
    },
    /// This worker sends the gradient of a part to its shard.
    Push {
        /// Index into [`Placement::parts`].
        part: usize,
        /// Bytes per copy.
        bytes: Bytes,
        /// Copies sent.
        copies: u32,
    },
    /// Sum the host's GPUs' gradients of a part over the host bus.
    LocalAggregate {
        /// Index into [`Placement::parts`].
        part: usize,
        /// Bytes of the part.
        bytes: Bytes,
        /// GPUs of the host.
        gpus: u32,
    },
    /// Copy a pulled part to every GPU of the host over the host bus.
    LocalBroadcast {
        /// Index into [`Placement::parts`].
        part: usize,
        /// Bytes of the part.
        bytes: Bytes,
        /// GPUs of the host.
        gpus: u32,
    },
    /// Shard: sum the first `inputs` gradients of a part that arrive in this step.
    Aggregate {
        /// Index into [`Placement::parts`].
        part: usize,
        /// Bytes of the part.
        bytes: Bytes,
        /// Gradients summed (workers, or workers - backup).
        inputs: u32,
    },
    /// Shard: apply a gradient to a part. In async mode, once per arriving push.
    Apply {
        /// Index into [`Placement::parts`].
        part: usize,
        /// Memory traffic of the update: variable, gradient and optimizer slots read, variable
        /// and slots written.
        memory_bytes: Bytes,
        /// True in async modes: applied once per push instead of once per step.
        per_push: bool,
    },
    /// Worker: the step ends when every shard has applied this step's updates (sync, backup).
    Barrier,
}

impl Op {
    /// Short name of the op's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Compute { pass: Pass::Forward, .. } => "compute-forward",
            Op::Compute { pass: Pass::Backward, .. } => "compute-backward",
            Op::Pull { .. } => "pull",
            Op::Push { .. } => "push",
            Op::LocalAggregate { .. } => "local-aggregate",
            Op::LocalBroadcast { .. } => "local-broadcast",
            Op::Aggregate { .. } => "aggregate",
            Op::Apply { .. } => "apply",
            Op::Barrier => "barrier",
        }
    }
}

/// An op and the ops of the same template it waits for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanOp {
    /// The operation.
    pub op: Op,
    /// Indices of ops in the same template that must finish first.
    pub deps: Vec<usize>,
}

/// Why no plan can be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The scenario asks for something the Plan does not cover yet.
    #[error("{0}")]
    Unsupported(String),
}

/// The per-step plan of a parameter-server scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// Worker hosts.
    pub workers: u32,
    /// Parameter-server shards.
    pub ps: u32,
    /// GPUs (replicas) per worker host.
    pub gpus_per_host: u32,
    /// Synchronisation mode.
    pub mode: Mode,
    /// Where shards run.
    pub ps_hosts: PsHosts,
    /// Variable placement.
    pub placement: Placement,
    /// Template of one worker host's step.
    pub worker: Vec<PlanOp>,
    /// Template of each shard's step.
    pub shards: Vec<Vec<PlanOp>>,
}

/// Bytes a host sends and receives over its NIC in one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HostTraffic {
    /// The host.
    pub host: Host,
    /// Bytes out.
    pub egress: Bytes,
    /// Bytes in.
    pub ingress: Bytes,
}

/// Count and volume of one kind of op in one step, over all hosts.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct OpTotals {
    /// Ops of this kind per step.
    pub count: u64,
    /// FLOPs (compute) per step.
    pub flops: f64,
    /// Bytes moved or touched per step (network ops: bytes on the wire incl. copies; host-bus
    /// ops: bytes per GPU transfer x GPUs; apply: memory traffic).
    pub bytes: Bytes,
}

impl Plan {
    /// Builds the plan of `s`.
    pub fn new(s: &Scenario) -> Result<Plan, PlanError> {
        let t = &s.spec.topology;
        if t.kind == TopologyKind::AllReduce {
            return Err(PlanError::Unsupported(
                "an all-reduce has no parameter-server plan (no shards, no pulls or pushes): its exchange is core::collective's schedule"
                    .into(),
            ));
        }
        let placement = Placement::new(&s.model, t.ps, t.placement, t.partition_threshold);
        let gpus = s.spec.hardware.gpus_per_host;
        let local = gpus > 1 && s.spec.hardware.local_aggregation;
        let copies = if local { 1 } else { gpus };
        let batch = s.spec.batch as f64;
        let overlap = s.spec.training.overlap;
        let synchronous = matches!(t.mode, Mode::Sync | Mode::Backup);

        let mut w: Vec<PlanOp> = Vec::new();
        let push = |w: &mut Vec<PlanOp>, op: Op, deps: Vec<usize>| {
            w.push(PlanOp { op, deps });
            w.len() - 1
        };
        // Pulls (and broadcasts) at the start of the step; remember what each layer waits for.
        let layers = s.model.layers.len();
        let mut ready: Vec<Vec<usize>> = vec![Vec::new(); layers];
        for (i, p) in placement.parts.iter().enumerate() {
            let pull = push(&mut w, Op::Pull { part: i, bytes: p.bytes, copies }, vec![]);
            let last = if local {
                push(&mut w, Op::LocalBroadcast { part: i, bytes: p.bytes, gpus }, vec![pull])
            } else {
                pull
            };
            ready[p.layer].push(last);
        }
        // Forward, in layer order: each layer after the previous one and its variables.
        let mut prev: Option<usize> = None;
        for (li, l) in s.model.layers.iter().enumerate() {
            let mut deps = ready[li].clone();
            deps.extend(prev);
            prev = Some(push(
                &mut w,
                Op::Compute { layer: li, pass: Pass::Forward, flops: l.forward_flops * batch },
                deps,
            ));
        }
        // Backward, in reverse: each layer's gradients are pushed as soon as it is done
        // (or after the whole backward pass when overlap is off).
        let mut backward_of = vec![0usize; layers];
        for li in (0..layers).rev() {
            let l = &s.model.layers[li];
            let b = push(
                &mut w,
                Op::Compute { layer: li, pass: Pass::Backward, flops: 2.0 * l.forward_flops * batch },
                prev.into_iter().collect(),
            );
            backward_of[li] = b;
            prev = Some(b);
        }
        let backward_done = prev.expect("a model has at least one layer");
        let mut pushes = Vec::new();
        // Push order: reverse creation order, as backward produces them.
        for (i, p) in placement.parts.iter().enumerate().rev() {
            let after = if overlap { backward_of[p.layer] } else { backward_done };
            let src = if local {
                push(&mut w, Op::LocalAggregate { part: i, bytes: p.bytes, gpus }, vec![after])
            } else {
                after
            };
            pushes.push(push(&mut w, Op::Push { part: i, bytes: p.bytes, copies }, vec![src]));
        }
        if synchronous {
            let mut deps = pushes;
            deps.push(backward_done);
            push(&mut w, Op::Barrier, deps);
        }

        // Shards: aggregate then apply (sync, backup), or apply per push (async, SSP).
        let slots = s.spec.optimizer.kind.slots();
        let inputs = t.workers - if t.mode == Mode::Backup { t.backup_workers } else { 0 };
        let mut shards = vec![Vec::new(); t.ps as usize];
        for (i, p) in placement.parts.iter().enumerate() {
            let ops: &mut Vec<PlanOp> = &mut shards[p.shard as usize];
            // Read variable + gradient + slots, write variable + slots.
            let memory_bytes = Bytes(p.bytes.0 * (3 + 2 * slots));
            if synchronous {
                ops.push(PlanOp { op: Op::Aggregate { part: i, bytes: p.bytes, inputs }, deps: vec![] });
                let agg = ops.len() - 1;
                ops.push(PlanOp { op: Op::Apply { part: i, memory_bytes, per_push: false }, deps: vec![agg] });
            } else {
                ops.push(PlanOp { op: Op::Apply { part: i, memory_bytes, per_push: true }, deps: vec![] });
            }
        }
        Ok(Plan {
            workers: t.workers,
            ps: t.ps,
            gpus_per_host: gpus,
            mode: t.mode,
            ps_hosts: t.ps_hosts,
            placement,
            worker: w,
            shards,
        })
    }

    /// The host a shard runs on.
    pub fn shard_host(&self, shard: u32) -> Host {
        match self.ps_hosts {
            PsHosts::Dedicated => Host::Ps(shard),
            PsHosts::Colocated => Host::Worker(shard),
        }
    }

    /// All physical hosts: workers, then dedicated PS hosts.
    pub fn hosts(&self) -> Vec<Host> {
        let mut h: Vec<Host> = (0..self.workers).map(Host::Worker).collect();
        if self.ps_hosts == PsHosts::Dedicated {
            h.extend((0..self.ps).map(Host::Ps));
        }
        h
    }

    /// NIC bytes per host per step. Transfers between a worker and a shard on the same host
    /// stay off the NIC.
    pub fn host_traffic(&self) -> Vec<HostTraffic> {
        let hosts = self.hosts();
        let mut traffic: BTreeMap<Host, (u64, u64)> = hosts.iter().map(|&h| (h, (0, 0))).collect();
        // Per-worker pull and push bytes to each shard (identical for all workers).
        let mut to_shard = vec![(0u64, 0u64); self.ps as usize];
        for po in &self.worker {
            match po.op {
                Op::Pull { part, bytes, copies } => {
                    to_shard[self.placement.parts[part].shard as usize].0 += bytes.0 * u64::from(copies)
                }
                Op::Push { part, bytes, copies } => {
                    to_shard[self.placement.parts[part].shard as usize].1 += bytes.0 * u64::from(copies)
                }
                _ => {}
            }
        }
        for wi in 0..self.workers {
            for (s, &(pull, push)) in to_shard.iter().enumerate() {
                let sh = self.shard_host(s as u32);
                if sh == Host::Worker(wi) {
                    continue;
                }
                let e = traffic.get_mut(&Host::Worker(wi)).expect("every worker is a host");
                e.0 += push;
                e.1 += pull;
                let e = traffic.get_mut(&sh).expect("every shard host is a host");
                e.0 += pull;
                e.1 += push;
            }
        }
        hosts
            .into_iter()
            .map(|h| HostTraffic { host: h, egress: Bytes(traffic[&h].0), ingress: Bytes(traffic[&h].1) })
            .collect()
    }

    /// Ops per kind in one step over all hosts, in a stable order.
    pub fn op_totals(&self) -> Vec<(&'static str, OpTotals)> {
        let mut m: BTreeMap<&'static str, OpTotals> = BTreeMap::new();
        let w = u64::from(self.workers);
        let g = u64::from(self.gpus_per_host);
        for po in &self.worker {
            let e = m.entry(po.op.kind()).or_default();
            match po.op {
                Op::Compute { flops, .. } => {
                    e.count += w * g;
                    e.flops += flops * (w * g) as f64;
                }
                Op::Pull { bytes, copies, .. } | Op::Push { bytes, copies, .. } => {
                    e.count += w * u64::from(copies);
                    e.bytes += bytes * (w * u64::from(copies));
                }
                Op::LocalAggregate { bytes, gpus, .. } | Op::LocalBroadcast { bytes, gpus, .. } => {
                    e.count += w;
                    e.bytes += bytes * (w * u64::from(gpus));
                }
                _ => e.count += w,
            }
        }
        let replicas_per_push =
            w * if self.worker.iter().any(|p| matches!(p.op, Op::LocalAggregate { .. })) { 1 } else { g };
        for shard in &self.shards {
            for po in shard {
                let e = m.entry(po.op.kind()).or_default();
                match po.op {
                    Op::Aggregate { bytes, inputs, .. } => {
                        e.count += 1;
                        e.bytes += bytes * u64::from(inputs);
                    }
                    Op::Apply { memory_bytes, per_push, .. } => {
                        let n = if per_push { replicas_per_push } else { 1 };
                        e.count += n;
                        e.bytes += memory_bytes * n;
                    }
                    _ => e.count += 1,
                }
            }
        }
        let order = [
            "pull",
            "local-broadcast",
            "compute-forward",
            "compute-backward",
            "local-aggregate",
            "push",
            "aggregate",
            "apply",
            "barrier",
        ];
        order.iter().filter_map(|k| m.get(k).map(|t| (*k, *t))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scenario on a two-layer model read from a layer table: layer `a` holds variables of
    /// 4000 B and 40 B, layer `b` one of 400 B (total 4440 B).
    fn scenario(extra: &str) -> Scenario {
        let tmp = tempfile::Builder::new().prefix("topolab-plan-test-").tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(
            dir.join("toy.csv"),
            "layer,kind,macs,forward_flops,activation_bytes,variable,shape,bytes\n\
             a,dense,50,100,40,a.w,10x100,4000\n\
             a,dense,50,100,40,a.b,10,40\n\
             b,dense,5,10,4,b.w,100,400\n",
        )
        .unwrap();
        let text = format!("batch = 2\n[model]\nlayers = \"toy.csv\"\n{extra}");
        Scenario::parse(&text, "t.toml", "t", Some(dir)).unwrap()
    }

    #[test]
    fn two_workers_two_dedicated_ps_round_robin() {
        let s = scenario("[topology]\nworkers = 2\nps = 2\n");
        let plan = Plan::new(&s).unwrap();
        // Round-robin: a.w (4000) and b.w (400) on shard 0, a.b (40) on shard 1.
        // Each worker pulls and pushes 4440 B per step: egress 4440, ingress 4440.
        // Shard 0 serves 2 workers x 4400 = 8800 each way; shard 1 2 x 40 = 80.
        let t = plan.host_traffic();
        let by = |h: Host| t.iter().find(|x| x.host == h).copied().unwrap();
        assert_eq!((by(Host::Worker(0)).egress, by(Host::Worker(0)).ingress), (Bytes(4440), Bytes(4440)));
        assert_eq!((by(Host::Ps(0)).egress, by(Host::Ps(0)).ingress), (Bytes(8800), Bytes(8800)));
        assert_eq!((by(Host::Ps(1)).egress, by(Host::Ps(1)).ingress), (Bytes(80), Bytes(80)));
        // Ops per step: 3 pulls x 2 workers = 6, 3 pushes x 2 = 6, 2 layers x 2 passes x 2
        // workers = 8 computes, 3 aggregates + 3 applies, 2 barriers.
        let totals: BTreeMap<_, _> = plan.op_totals().into_iter().collect();
        assert_eq!(totals["pull"].count, 6);
        assert_eq!(totals["push"].bytes, Bytes(2 * 4440));
        assert_eq!(totals["compute-forward"].count + totals["compute-backward"].count, 8);
        // Forward FLOPs: (100 + 10) per sample x batch 2 x 2 workers = 440.
        assert_eq!(totals["compute-forward"].flops, 440.0);
        assert_eq!(totals["aggregate"].count, 3);
        // Aggregate sums 2 inputs of every part: 2 x 4440 = 8880 B.
        assert_eq!(totals["aggregate"].bytes, Bytes(8880));
        // SGD apply: (3 + 0 slots) x 4440 = 13320 B of memory traffic.
        assert_eq!(totals["apply"].bytes, Bytes(13320));
        assert_eq!(totals["barrier"].count, 2);
    }

    #[test]
    fn colocated_shard_traffic_stays_on_its_host() {
        let s = scenario("[topology]\nworkers = 2\nps = 2\nps_hosts = \"colocated\"\n");
        let plan = Plan::new(&s).unwrap();
        // Shard 0 (4400 B) lives on worker 0, shard 1 (40 B) on worker 1.
        // Worker 0: pushes to shard 1 only (40 B); serves worker 1's pull of shard 0 (4400 B).
        // Egress = 40 + 4400 = 4440; ingress = 40 (pull from shard 1) + 4400 (push from w1).
        // Worker 1: egress = 4400 (push to shard 0) + 40 (serve w0's pull of shard 1) = 4440.
        let t = plan.host_traffic();
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].egress, t[0].ingress), (Bytes(4440), Bytes(4440)));
        assert_eq!((t[1].egress, t[1].ingress), (Bytes(4440), Bytes(4440)));
    }

    #[test]
    fn multi_gpu_hosts_aggregate_locally_unless_told_not_to() {
        let s = scenario("[hardware]\ngpus_per_host = 4\n[topology]\nworkers = 1\nps = 1\n");
        let plan = Plan::new(&s).unwrap();
        // Local aggregation: one pull and one push of 4440 B per host; 3 local aggregates
        // and 3 broadcasts, each moving the part to/from 4 GPUs: 4 x 4440 = 17760 B.
        let t = plan.host_traffic();
        assert_eq!(t[0].egress, Bytes(4440));
        let totals: BTreeMap<_, _> = plan.op_totals().into_iter().collect();
        assert_eq!(totals["local-aggregate"].bytes, Bytes(17760));
        // 4 GPUs x 2 layers x 2 passes = 16 computes.
        assert_eq!(totals["compute-forward"].count + totals["compute-backward"].count, 16);

        let s = scenario("[hardware]\ngpus_per_host = 4\nlocal_aggregation = false\n[topology]\nworkers = 1\nps = 1\n");
        let plan = Plan::new(&s).unwrap();
        // Every GPU pushes its own copy: 4 x 4440 = 17760 B out of the host.
        assert_eq!(plan.host_traffic()[0].egress, Bytes(17760));
        assert!(!plan.worker.iter().any(|p| matches!(p.op, Op::LocalAggregate { .. })));
    }

    #[test]
    fn async_applies_per_push_and_has_no_barrier() {
        let s = scenario("[optimizer]\nkind = \"rmsprop\"\n[topology]\nworkers = 3\nmode = \"async\"\n");
        let plan = Plan::new(&s).unwrap();
        let totals: BTreeMap<_, _> = plan.op_totals().into_iter().collect();
        assert!(!totals.contains_key("barrier") && !totals.contains_key("aggregate"));
        // 3 parts x 3 workers = 9 applies; RMSProp: (3 + 2 x 2 slots) x 4440 x 3 = 93240 B.
        assert_eq!(totals["apply"].count, 9);
        assert_eq!(totals["apply"].bytes, Bytes(93240));
    }

    #[test]
    fn backup_workers_reduce_the_aggregated_inputs() {
        let s = scenario("[topology]\nworkers = 4\nmode = \"backup\"\nbackup_workers = 1\n");
        let plan = Plan::new(&s).unwrap();
        assert!(plan.shards[0].iter().all(|p| !matches!(p.op, Op::Aggregate { inputs, .. } if inputs != 3)));
    }

    #[test]
    fn pushes_wait_for_their_own_layer_only_when_overlapping() {
        let s = scenario("");
        let plan = Plan::new(&s).unwrap();
        // b.w (layer 1) is pushed right after layer 1's backward, before layer 0's backward.
        let push_b = plan.worker.iter().position(|p| matches!(p.op, Op::Push { part: 2, .. })).unwrap();
        let dep = plan.worker[push_b].deps[0];
        assert!(matches!(plan.worker[dep].op, Op::Compute { layer: 1, pass: Pass::Backward, .. }));
        let s = scenario("[training]\noverlap = false\n");
        let plan = Plan::new(&s).unwrap();
        let push_b = plan.worker.iter().position(|p| matches!(p.op, Op::Push { part: 2, .. })).unwrap();
        let dep = plan.worker[push_b].deps[0];
        assert!(matches!(plan.worker[dep].op, Op::Compute { layer: 0, pass: Pass::Backward, .. }));
    }
}
