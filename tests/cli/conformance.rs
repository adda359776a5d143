//! Sim and real share one Plan: the same ops and bytes per worker and step; only times differ.
//! One test body, two arms: the simulator's op log and the runtime's ops.csv, both checked
//! against the ops the Plan prescribes.

use std::collections::BTreeMap;

use topolab_core::plan::{Op, Pass, Plan};
use topolab_core::scenario::Scenario;

use super::*;

/// (worker, step) -> sorted (op, index, bytes).
type Ops = BTreeMap<(u32, u64), Vec<(String, u64, u64)>>;

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

fn from_sim(s: &Scenario) -> Ops {
    let run = topolab_sim::simulate(s, &topolab_sim::SimOptions { op_log: true, ..Default::default() }).unwrap();
    let mut ops = Ops::new();
    for o in run.ops {
        ops.entry((o.worker, o.step)).or_default().push((o.op.to_string(), o.index, o.bytes));
    }
    ops.values_mut().for_each(|v| v.sort());
    ops
}

fn from_replay(dir: &std::path::Path) -> Ops {
    let mut ops = Ops::new();
    let mut r = csv::Reader::from_path(dir.join("ops.csv")).unwrap();
    for rec in r.records() {
        let rec = rec.unwrap();
        let (w, step): (u32, u64) = (rec[0].parse().unwrap(), rec[1].parse().unwrap());
        ops.entry((w, step)).or_default().push((rec[2].to_string(), rec[3].parse().unwrap(), rec[4].parse().unwrap()));
    }
    ops.values_mut().for_each(|v| v.sort());
    ops
}

#[test]
fn replay_and_simulator_perform_the_plans_ops_and_bytes() {
    let d = super::TempDir::new("conformance");
    std::fs::copy(root().join("scenarios/examples/tiny-mlp.csv"), d.join("tiny-mlp.csv")).unwrap();
    let f = d.join("conf.toml");
    // Two workers, two shards, a variable split across shards: every kind of part.
    std::fs::write(
        &f,
        "name = \"conformance\"\nbatch = 8\n[model]\nlayers = \"tiny-mlp.csv\"\n[topology]\nworkers = 2\nps = 2\n\
         placement = \"partitioned\"\npartition_threshold = \"1 MiB\"\n[training]\nsteps = 3\n",
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
    assert_eq!(sim, plan, "simulator ops differ from the Plan");
    assert_eq!(real, plan, "runtime ops differ from the Plan");
}
