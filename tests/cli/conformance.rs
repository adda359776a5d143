//! Sim and real share one Plan and one set of step rules (core's `plan` and `step`): the same
//! ops and bytes per worker and step, in the same order, each after what it depends on; only
//! times differ. One test body, two arms: the simulator's op log and the runtime's ops.csv,
//! both checked against the Plan's ops, its dependencies and the global barrier.

use std::collections::BTreeMap;

use topolab_core::plan::{Op, Pass, Plan};
use topolab_core::scenario::Scenario;

use super::*;

/// (worker, step) -> sorted (op, index, bytes).
type Ops = BTreeMap<(u32, u64), Vec<(String, u64, u64)>>;

/// One op as an engine recorded it, with its times (ns).
#[derive(Debug, Clone)]
struct Timed {
    worker: u32,
    step: u64,
    op: String,
    index: u64,
    bytes: u64,
    start: u64,
    end: u64,
}

fn untimed(ops: &[Timed]) -> Ops {
    let mut m = Ops::new();
    for o in ops {
        m.entry((o.worker, o.step)).or_default().push((o.op.clone(), o.index, o.bytes));
    }
    m.values_mut().for_each(|v| v.sort());
    m
}

/// The name an engine logs a Plan op under, and its index; None for ops no worker logs.
fn logged(op: &Op) -> Option<(&'static str, u64)> {
    match *op {
        Op::Pull { part, .. } => Some(("pull", part as u64)),
        Op::Push { part, .. } => Some(("push", part as u64)),
        Op::Compute { layer, pass: Pass::Forward, .. } => Some(("compute-forward", layer as u64)),
        Op::Compute { layer, pass: Pass::Backward, .. } => Some(("compute-backward", layer as u64)),
        _ => None,
    }
}

/// Checks order and dependencies of `ops` (one engine's log) against the Plan and core's step
/// rules; returns what is wrong.
fn order_and_dependencies(plan: &Plan, steps: u64, ops: &[Timed]) -> Vec<String> {
    let mut wrong = Vec::new();
    let find = |w: u32, k: u64, name: &str, index: u64| {
        ops.iter().find(|o| o.worker == w && o.step == k && o.op == name && o.index == index)
    };
    for w in 0..plan.workers {
        for k in 0..steps {
            // Every Plan dependency: an op starts after each op it depends on has ended.
            for po in &plan.worker {
                let Some((name, index)) = logged(&po.op) else { continue };
                let me = find(w, k, name, index).expect("the op sets are compared first");
                for &d in &po.deps {
                    if let Some((dn, di)) = logged(&plan.worker[d].op) {
                        let dep = find(w, k, dn, di).expect("the op sets are compared first");
                        if me.start < dep.end {
                            wrong.push(format!(
                                "worker {w} step {k}: {name} {index} starts at {} before {dn} {di} ends at {}",
                                me.start, dep.end
                            ));
                        }
                    }
                }
            }
            // Order: compute in the Plan's order; per shard, pushes in the Plan's push order
            // and pulls in part order (one connection each, first in, first out).
            let mine = |name: &str| {
                let mut v: Vec<&Timed> =
                    ops.iter().filter(|o| o.worker == w && o.step == k && o.op.starts_with(name)).collect();
                v.sort_by_key(|o| (o.start, o.end));
                v
            };
            let compute: Vec<(String, u64)> = mine("compute").iter().map(|o| (o.op.clone(), o.index)).collect();
            let planned: Vec<(String, u64)> = plan
                .worker
                .iter()
                .filter_map(|po| logged(&po.op).filter(|(n, _)| n.starts_with("compute")))
                .map(|(n, i)| (n.to_string(), i))
                .collect();
            if compute != planned {
                wrong.push(format!("worker {w} step {k}: compute order {compute:?}, the Plan's {planned:?}"));
            }
            for shard in 0..plan.ps {
                let on = |o: &&Timed| plan.placement.parts[o.index as usize].shard == shard;
                let pushes: Vec<u64> = mine("push").into_iter().filter(on).map(|o| o.index).collect();
                let planned: Vec<u64> = plan
                    .worker
                    .iter()
                    .filter_map(|po| match po.op {
                        Op::Push { part, .. } if plan.placement.parts[part].shard == shard => Some(part as u64),
                        _ => None,
                    })
                    .collect();
                if pushes != planned {
                    wrong.push(format!("worker {w} step {k} shard {shard}: pushes {pushes:?}, the Plan's {planned:?}"));
                }
                let mut pulls: Vec<&Timed> = mine("pull").into_iter().filter(on).collect();
                pulls.sort_by_key(|o| (o.end, o.index));
                let pulls: Vec<u64> = pulls.iter().map(|o| o.index).collect();
                let mut sorted = pulls.clone();
                sorted.sort();
                if pulls != sorted {
                    wrong.push(format!(
                        "worker {w} step {k} shard {shard}: pulls arrive as {pulls:?}, not in part order"
                    ));
                }
            }
        }
    }
    // The global barrier: no worker fetches step k + 1 before every worker's pushes of step k
    // have ended (every shard must have applied step k).
    for k in 1..steps {
        let last_push = ops.iter().filter(|o| o.step == k - 1 && o.op == "push").map(|o| o.end).max().unwrap_or(0);
        for o in ops.iter().filter(|o| o.step == k && o.op == "pull") {
            if o.start < last_push {
                wrong.push(format!(
                    "worker {} pulls part {} of step {k} at {}, before the last push of step {} ends at {last_push}",
                    o.worker,
                    o.index,
                    o.start,
                    k - 1
                ));
            }
        }
    }
    wrong
}

fn from_plan(s: &Scenario) -> Ops {
    let plan = Plan::new(s).unwrap();
    let mut ops = Ops::new();
    for w in 0..plan.workers {
        for step in 0..s.spec.training.steps {
            let mut v: Vec<(String, u64, u64)> = plan
                .worker
                .iter()
                .filter_map(|po| match po.op {
                    Op::Pull { part, bytes, copies } => Some(("pull".into(), part as u64, bytes.0 * u64::from(copies))),
                    Op::Push { part, bytes, copies } => Some(("push".into(), part as u64, bytes.0 * u64::from(copies))),
                    Op::Compute { layer, pass: Pass::Forward, .. } => Some(("compute-forward".into(), layer as u64, 0)),
                    Op::Compute { layer, pass: Pass::Backward, .. } => {
                        Some(("compute-backward".into(), layer as u64, 0))
                    }
                    _ => None,
                })
                .collect();
            v.sort();
            ops.insert((w, step), v);
        }
    }
    ops
}

fn from_sim(s: &Scenario) -> Vec<Timed> {
    let run = topolab_sim::simulate(s, &topolab_sim::SimOptions { op_log: true, ..Default::default() }).unwrap();
    run.ops
        .into_iter()
        .map(|o| Timed {
            worker: o.worker,
            step: o.step,
            op: o.op.to_string(),
            index: o.index,
            bytes: o.bytes,
            start: o.start_ns,
            end: o.end_ns,
        })
        .collect()
}

fn from_replay(dir: &std::path::Path) -> Vec<Timed> {
    let mut r = csv::Reader::from_path(dir.join("ops.csv")).unwrap();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            let n = |i: usize| rec[i].parse::<u64>().unwrap();
            Timed {
                worker: n(0) as u32,
                step: n(1),
                op: rec[2].to_string(),
                index: n(3),
                bytes: n(4),
                start: n(5),
                end: n(6),
            }
        })
        .collect()
}

/// Two workers, two shards, a variable split across shards (every kind of part), with the
/// training settings `training` (TOML lines of [training]).
fn ps_conformance(training: &str) {
    let d = super::TempDir::new("conformance");
    std::fs::copy(root().join("scenarios/examples/tiny-mlp.csv"), d.join("tiny-mlp.csv")).unwrap();
    let f = d.join("conf.toml");
    std::fs::write(
        &f,
        format!(
            "name = \"conformance\"\nbatch = 8\n[model]\nlayers = \"tiny-mlp.csv\"\n[topology]\nworkers = 2\nps = 2\n\
             placement = \"partitioned\"\npartition_threshold = \"1 MiB\"\n[training]\nsteps = 3\n{training}\n"
        ),
    )
    .unwrap();
    let out = d.join("run");
    let o = topolab(&["replay", f.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Both arms run the effective scenario: what was replayed.
    let eff = Scenario::load(&out.join("effective.toml")).unwrap();
    let plan = from_plan(&eff);
    assert_eq!(plan.len(), 2 * 3);
    assert!(plan.values().next().unwrap().iter().any(|(op, _, _)| op == "push"));
    let parts = Plan::new(&eff).unwrap().placement.parts.len();
    assert!(parts > eff.model.variable_count(), "a variable is partitioned across shards");
    let sim = from_sim(&eff);
    let real = from_replay(&out);
    assert_eq!(untimed(&sim), plan, "simulator ops differ from the Plan");
    assert_eq!(untimed(&real), plan, "runtime ops differ from the Plan");
    let p = Plan::new(&eff).unwrap();
    let steps = eff.spec.training.steps;
    let wrong = order_and_dependencies(&p, steps, &sim);
    assert!(wrong.is_empty(), "simulator:\n{}", wrong.join("\n"));
    let wrong = order_and_dependencies(&p, steps, &real);
    assert!(wrong.is_empty(), "runtime:\n{}", wrong.join("\n"));
}

#[test]
fn replay_and_simulator_perform_the_plans_ops_and_bytes() {
    ps_conformance("");
}

#[test]
fn without_overlap_both_engines_push_after_backward_as_the_plan_says() {
    // The Plan makes every push wait for the whole backward pass; the order check holds both
    // engines to it (the runtime once pushed each layer at once regardless).
    ps_conformance("overlap = false");
}

/// The ring's rules, checked on every worker and step: compute in the plan's layer order;
/// buckets that cover the gradients in backward order, each a run of whole gradients within
/// the fusion threshold (one larger gradient alone), the same on every worker; without
/// overlap exactly core's buckets; each bucket starting after its last gradient is ready on
/// every worker (the coordinator fuses only what every rank has reported), after the bucket
/// before it, and ending nowhere before every worker began it; the next step after the last.
/// Returns what is wrong.
fn ring_order(s: &Scenario, ops: &[Timed]) -> Vec<String> {
    use topolab_core::collective::{backward_gradients, fusion_buckets};
    let mut wrong = Vec::new();
    let grads = backward_gradients(&s.model);
    let threshold = s.spec.topology.fusion_buffer.0;
    let layers = s.model.layers.len() as u64;
    let planned: Vec<(String, u64)> = (0..layers)
        .map(|l| ("compute-forward".to_string(), l))
        .chain((0..layers).rev().map(|l| ("compute-backward".to_string(), l)))
        .collect();
    let overlap = s.spec.training.overlap;
    let steps = s.spec.training.steps;
    let workers = s.spec.topology.workers;
    let mine = |w: u32, k: u64, name: &str| {
        let mut v: Vec<&Timed> =
            ops.iter().filter(|o| o.worker == w && o.step == k && o.op.starts_with(name)).collect();
        v.sort_by_key(|o| (o.start, o.end));
        v
    };
    let static_buckets: Vec<std::ops::Range<usize>> = fusion_buckets(&grads, s.spec.topology.fusion_buffer);
    for k in 0..steps {
        // When each gradient was ready on the last worker to make it.
        let ready_everywhere = |g: usize| {
            (0..workers)
                .map(|w| {
                    let compute = mine(w, k, "compute");
                    let backward_end = compute.iter().map(|o| o.end).max().unwrap_or(0);
                    if overlap {
                        compute
                            .iter()
                            .find(|o| o.op == "compute-backward" && o.index == grads[g].0 as u64)
                            .map_or(backward_end, |o| o.end)
                    } else {
                        backward_end
                    }
                })
                .max()
                .unwrap_or(0)
        };
        let mut first: Option<Vec<std::ops::Range<usize>>> = None;
        for w in 0..workers {
            let compute = mine(w, k, "compute");
            let order: Vec<(String, u64)> = compute.iter().map(|o| (o.op.clone(), o.index)).collect();
            if order != planned {
                wrong.push(format!("worker {w} step {k}: compute order {order:?}"));
            }
            let reduces = mine(w, k, "all-reduce");
            // Each bucket's gradients, from the bytes in order.
            let mut ranges = Vec::new();
            let mut next = 0;
            for r in &reduces {
                let mut end = next;
                let mut bytes = 0;
                while end < grads.len() && bytes < r.bytes {
                    bytes += grads[end].1;
                    end += 1;
                }
                if bytes != r.bytes || end == next {
                    wrong.push(format!(
                        "worker {w} step {k}: a bucket of {} B is not a run of whole gradients",
                        r.bytes
                    ));
                    break;
                }
                if end - next > 1 && bytes > threshold {
                    wrong.push(format!(
                        "worker {w} step {k}: a bucket of {bytes} B fuses past the {threshold} B threshold"
                    ));
                }
                ranges.push(next..end);
                next = end;
            }
            let indices: Vec<u64> = reduces.iter().map(|o| o.index).collect();
            if next != grads.len() || indices != (0..reduces.len() as u64).collect::<Vec<_>>() {
                wrong.push(format!(
                    "worker {w} step {k}: buckets {ranges:?} (indices {indices:?}) do not cover the gradients in order"
                ));
                continue;
            }
            if !overlap && ranges != static_buckets {
                wrong.push(format!("worker {w} step {k}: buckets {ranges:?}, core forms {static_buckets:?}"));
            }
            match &first {
                Some(f) if *f != ranges => {
                    wrong.push(format!("worker {w} step {k}: buckets {ranges:?}, worker 0 reduced {f:?}"))
                }
                Some(_) => {}
                None => first = Some(ranges.clone()),
            }
            for (b, r) in reduces.iter().enumerate() {
                let ready = ready_everywhere(ranges[b].end - 1);
                if r.start < ready {
                    wrong.push(format!(
                        "worker {w} step {k}: bucket {b} starts at {} before its gradients are ready at {ready}",
                        r.start
                    ));
                }
                if b > 0 && r.start < reduces[b - 1].end {
                    wrong.push(format!("worker {w} step {k}: bucket {b} starts before bucket {} ends", b - 1));
                }
                let begun = ops
                    .iter()
                    .filter(|o| o.step == k && o.op == "all-reduce" && o.index == b as u64)
                    .map(|o| o.start)
                    .max()
                    .unwrap_or(0);
                if r.end < begun {
                    wrong.push(format!(
                        "worker {w} step {k}: bucket {b} ends at {} before every worker began it",
                        r.end
                    ));
                }
            }
            let last = reduces.last().map_or(0, |o| o.end);
            if let Some(next) = mine(w, k + 1, "compute").first()
                && next.start < last
            {
                wrong.push(format!(
                    "worker {w}: step {} computes at {} before step {k}'s last bucket ends",
                    k + 1,
                    next.start
                ));
            }
        }
    }
    wrong
}

/// A ring of three workers on the tiny MLP (three fusion buckets of it), replayed; the
/// effective scenario and the replay's ops.
fn ring_run(d: &super::TempDir, training: &str) -> (Scenario, Vec<Timed>) {
    collective_run(d, "ring", training)
}

/// `ring_run` with another algorithm.
fn collective_run(d: &super::TempDir, algorithm: &str, training: &str) -> (Scenario, Vec<Timed>) {
    std::fs::copy(root().join("scenarios/examples/tiny-mlp.csv"), d.join("tiny-mlp.csv")).unwrap();
    let f = d.join("ring.toml");
    std::fs::write(
        &f,
        format!(
            "name = \"ring-conformance\"\nbatch = 8\n[model]\nlayers = \"tiny-mlp.csv\"\n[topology]\nkind = \"all-reduce\"\n\
             workers = 3\nalgorithm = \"{algorithm}\"\nfusion_buffer = \"600 KiB\"\n[training]\nsteps = 3\n{training}\n"
        ),
    )
    .unwrap();
    let out = d.join("run");
    let o = topolab(&["replay", f.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    (Scenario::load(&out.join("effective.toml")).unwrap(), from_replay(&out))
}

#[test]
fn a_ring_step_follows_cores_buckets_in_both_engines() {
    // Without overlap both engines form core's buckets from the whole backward pass: the same
    // ops (compute per layer, all-reduce per bucket with its bytes) and the same rules.
    let d = super::TempDir::new("conformance-ring");
    let (eff, real) = ring_run(&d, "overlap = false");
    let sim = from_sim(&eff);
    assert_eq!(untimed(&sim), untimed(&real), "the engines' ops differ");
    assert_eq!(untimed(&real).len(), 3 * 3);
    assert!(real.iter().filter(|o| o.op == "all-reduce").count() >= 2 * 9, "several buckets a step");
    let wrong = ring_order(&eff, &sim);
    assert!(wrong.is_empty(), "simulator:\n{}", wrong.join("\n"));
    let wrong = ring_order(&eff, &real);
    assert!(wrong.is_empty(), "runtime:\n{}", wrong.join("\n"));
    // The check can fail: a bucket that starts before backward ends (a ns before its own
    // worker's backward ends, whatever gap the replay's timing left after it).
    let mut bad = sim.clone();
    let b = bad.iter().position(|o| o.op == "all-reduce" && o.step == 1 && o.index == 0).unwrap();
    let backward_end = bad
        .iter()
        .filter(|o| o.worker == bad[b].worker && o.step == 1 && o.op.starts_with("compute"))
        .map(|o| o.end)
        .max()
        .unwrap();
    bad[b].start = backward_end - 1;
    let wrong = ring_order(&eff, &bad);
    assert!(wrong.iter().any(|w| w.contains("before its gradients are ready")), "{wrong:?}");
}

#[test]
fn a_tree_step_follows_the_same_rules_in_both_engines() {
    // The double binary tree replays core's tree schedule: the same ops and the same rules
    // as the ring, without overlap (core's buckets) and with it (negotiated buckets).
    for (name, training) in [("conformance-tree", "overlap = false"), ("conformance-tree-overlap", "")] {
        let d = super::TempDir::new(name);
        let (eff, real) = collective_run(&d, "tree", training);
        let sim = from_sim(&eff);
        if !training.is_empty() {
            assert_eq!(untimed(&sim), untimed(&real), "the engines' ops differ");
        }
        let wrong = ring_order(&eff, &sim);
        assert!(wrong.is_empty(), "simulator:\n{}", wrong.join("\n"));
        let wrong = ring_order(&eff, &real);
        assert!(wrong.is_empty(), "runtime:\n{}", wrong.join("\n"));
    }
}

#[test]
fn a_hierarchical_step_on_multi_gpu_hosts_follows_the_same_rules_in_both_engines() {
    // Three hosts of two GPUs, a process per GPU: each host's record is its first GPU's, in
    // both engines; the same ops and the same rules as the ring's.
    let d = super::TempDir::new("conformance-hierarchical");
    let (eff, real) = collective_run(&d, "hierarchical", "overlap = false\n[hardware]\ngpus_per_host = 2");
    assert_eq!(eff.spec.hardware.gpus_per_host, 2);
    let sim = from_sim(&eff);
    assert_eq!(untimed(&sim), untimed(&real), "the engines' ops differ");
    assert_eq!(untimed(&real).len(), 3 * 3, "a host's ops once per step");
    let wrong = ring_order(&eff, &sim);
    assert!(wrong.is_empty(), "simulator:\n{}", wrong.join("\n"));
    let wrong = ring_order(&eff, &real);
    assert!(wrong.is_empty(), "runtime:\n{}", wrong.join("\n"));
}

#[test]
fn with_overlap_both_engines_fuse_what_every_rank_has_ready() {
    // With overlap the buckets are negotiated (the simulator's coordinator, the runtime's rank
    // 0 over the control links), so they may differ between the engines and between steps;
    // both follow the same rules.
    let d = super::TempDir::new("conformance-ring-overlap");
    let (eff, real) = ring_run(&d, "");
    let sim = from_sim(&eff);
    let compute = |ops: &[Timed]| ops.iter().filter(|o| o.op.starts_with("compute")).count();
    assert_eq!(compute(&sim), compute(&real));
    let wrong = ring_order(&eff, &sim);
    assert!(wrong.is_empty(), "simulator:\n{}", wrong.join("\n"));
    let wrong = ring_order(&eff, &real);
    assert!(wrong.is_empty(), "runtime:\n{}", wrong.join("\n"));
    // And overlap is real: some bucket starts before backward ends.
    let early = real.iter().filter(|o| o.op == "all-reduce" && o.index == 0).any(|r| {
        let end = real
            .iter()
            .filter(|o| o.worker == r.worker && o.step == r.step && o.op == "compute-backward")
            .map(|o| o.end)
            .max()
            .unwrap();
        r.start < end
    });
    assert!(early, "no bucket overlapped backward");
    // The check can fail: worker 1 makes the first bucket's last gradient after worker 0
    // began reducing it (a bucket formed from one rank's readiness alone).
    use topolab_core::collective::backward_gradients;
    let mut bad = real.clone();
    let b0 = bad.iter().find(|o| o.worker == 0 && o.step == 1 && o.op == "all-reduce" && o.index == 0).unwrap().clone();
    let grads = backward_gradients(&eff.model);
    let (mut bytes, mut last) = (0, 0);
    while bytes < b0.bytes {
        bytes += grads[last].1;
        last += 1;
    }
    let layer = grads[last - 1].0 as u64;
    let op = bad
        .iter_mut()
        .find(|o| o.worker == 1 && o.step == 1 && o.op == "compute-backward" && o.index == layer)
        .unwrap();
    op.end = op.end.max(b0.start + 1);
    let wrong = ring_order(&eff, &bad);
    assert!(wrong.iter().any(|w| w.contains("before its gradients are ready")), "{wrong:?}");
}

#[test]
fn the_order_check_catches_a_step_that_starts_before_the_barrier() {
    // The check itself can fail: shift one pull of step 1 to before the last push of step 0
    // (a worker released by the first shard's Ready, as the runtime once was), and swap two
    // forward layers.
    let d = super::TempDir::new("conformance-neg");
    std::fs::copy(root().join("scenarios/examples/tiny-mlp.csv"), d.join("tiny-mlp.csv")).unwrap();
    let f = d.join("conf.toml");
    std::fs::write(
        &f,
        "name = \"conformance\"\nbatch = 8\n[model]\nlayers = \"tiny-mlp.csv\"\n[topology]\nworkers = 2\nps = 2\n[training]\nsteps = 2\n",
    )
    .unwrap();
    let s = Scenario::load(&f).unwrap();
    let plan = Plan::new(&s).unwrap();
    let mut ops = from_sim(&s);
    assert!(order_and_dependencies(&plan, 2, &ops).is_empty());
    let last_push = ops.iter().filter(|o| o.step == 0 && o.op == "push").map(|o| o.end).max().unwrap();
    let pull = ops.iter_mut().find(|o| o.step == 1 && o.op == "pull").unwrap();
    pull.start = last_push - 1;
    let wrong = order_and_dependencies(&plan, 2, &ops);
    assert!(wrong.iter().any(|w| w.contains("before the last push of step 0")), "{wrong:?}");
    let mut ops = from_sim(&s);
    let (a, b) = {
        let fwd =
            |l: u64| ops.iter().position(|o| o.worker == 0 && o.step == 0 && o.op == "compute-forward" && o.index == l);
        (fwd(0).unwrap(), fwd(1).unwrap())
    };
    let (sa, sb) = (ops[a].start, ops[b].start);
    (ops[a].start, ops[b].start) = (sb, sa);
    let wrong = order_and_dependencies(&plan, 2, &ops);
    assert!(wrong.iter().any(|w| w.contains("compute order")), "{wrong:?}");
}
