//! Steady state: a deterministic all-reduce run stops simulating once its steps repeat and
//! extrapolates the rest from the period. Property: for random clusters, algorithms, models,
//! buckets, stragglers and two-tier networks, the extrapolated run gives the same step records
//! (to the nanosecond and the byte) and the same summary as simulating every step.

use proptest::prelude::*;
use serde_json::Value;

use super::*;

/// Every number within a relative 1e-9 (counters extrapolated in floating point), everything
/// else equal; `events` and the wall time differ by design.
fn same(a: &Value, b: &Value, path: &str) -> Result<(), String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                if k == "events" || k == "sim_wall_s" {
                    continue;
                }
                same(v, y.get(k).ok_or(format!("{path}.{k} missing"))?, &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().try_for_each(|(i, (v, w))| same(v, w, &format!("{path}[{i}]")))
        }
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            if (x - y).abs() <= 1e-9 * x.abs().max(y.abs()) { Ok(()) } else { Err(format!("{path}: {x} vs {y}")) }
        }
        _ if a == b => Ok(()),
        _ => Err(format!("{path}: {a} vs {b}")),
    }
}

/// `network`: the lines of `[network]`.
fn case(algorithm: &str, hosts: u32, gpus: u32, model: &str, network: &str, steps: u64) -> Scenario {
    let text = format!(
        "batch = 8\n[model]\nname = \"{model}\"\n[hardware]\ngpu = \"v100\"\ngpus_per_host = {gpus}\n\
         [network]\n{network}\n\
         [topology]\nkind = \"all-reduce\"\nworkers = {hosts}\nalgorithm = \"{algorithm}\"\n\
         [training]\nsteps = {steps}\ntrace_steps = 2\n"
    );
    scenario(&text, None)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn extrapolated_steps_equal_simulated_ones(
        algorithm in prop::sample::select(vec!["ring", "tree", "hierarchical"]),
        hosts in 2u32..9,
        gpus in 1u32..4,
        model in prop::sample::select(vec!["alexnet", "resnet-50", "vgg-16"]),
        nic in prop::sample::select(vec!["1 Gbit/s", "10 Gbit/s", "100 Gbit/s"]),
        latency in prop::sample::select(vec!["0 us", "50 us"]),
        extra in prop::sample::select(vec![
            "",
            "switch = \"two-tier\"\nhosts_per_rack = 2\noversubscription = 4.0",
        ]),
        straggler in any::<bool>(),
        steps in 8u64..30,
    ) {
        let gpus = if algorithm == "hierarchical" { gpus.max(2) } else { gpus };
        let network = format!("nic = \"{nic}\"\nlatency = \"{latency}\"\n{extra}");
        let mut s = case(algorithm, hosts, gpus, model, &network, steps);
        if straggler {
            s.spec.faults.stragglers =
                Some(topolab_core::scenario::Straggler { count: 1, slowdown: 1.5 });
        }
        let name = format!("{algorithm} {hosts}x{gpus} {model} {nic} {latency} [{extra}] straggler {straggler}");
        let fast = simulate(&s, &SimOptions::default()).unwrap();
        let every = simulate(&s, &SimOptions { every_step: true, ..SimOptions::default() }).unwrap();
        prop_assert_eq!(every.detail.steady_from, None);
        // (A run that has not settled within its steps was simulated whole: the same trivially.
        // `these_runs_settle_and_extrapolate_exactly` below requires cases that do.)
        prop_assert_eq!(&fast.steps, &every.steps, "records of {}", name);
        let (a, b) = (serde_json::to_value(&fast.summary).unwrap(), serde_json::to_value(&every.summary).unwrap());
        if let Err(e) = same(&a, &b, "summary") {
            prop_assert!(false, "{} (steady from {:?}): {}", name, fast.detail.steady_from, e);
        }
        prop_assert_eq!(&fast.trace, &every.trace);
        prop_assert_eq!(fast.detail.busiest.len(), every.detail.busiest.len());
        for (x, y) in fast.detail.busiest.iter().zip(&every.detail.busiest) {
            prop_assert_eq!(&x.0, &y.0);
            prop_assert!((x.1 - y.1).abs() <= 1e-9, "{}: {} vs {}", x.0, x.1, y.1);
        }
    }
}

/// Cases that settle, one per algorithm and a two-tier ring whose hosts take turns (a period
/// of three steps): extrapolated, they give the records of simulating every step.
#[test]
fn these_runs_settle_and_extrapolate_exactly() {
    let two_tier =
        "nic = \"100 Gbit/s\"\nlatency = \"0 us\"\nswitch = \"two-tier\"\nhosts_per_rack = 2\noversubscription = 4.0";
    let flat = "nic = \"10 Gbit/s\"\nlatency = \"50 us\"";
    for (algorithm, hosts, gpus, network, period) in
        [("ring", 4, 1, flat, 1), ("tree", 5, 1, flat, 1), ("hierarchical", 3, 2, flat, 1), ("ring", 3, 2, two_tier, 3)]
    {
        let s = case(algorithm, hosts, gpus, "resnet-50", network, 40);
        let fast = simulate(&s, &SimOptions::default()).unwrap();
        let every = simulate(&s, &SimOptions { every_step: true, ..SimOptions::default() }).unwrap();
        let k = fast.detail.steady_from.unwrap_or_else(|| panic!("{algorithm} {hosts}x{gpus} did not settle"));
        assert!(k < 40 - 1 - 2 * period, "{algorithm} {hosts}x{gpus}: settled only after step {k}");
        assert_eq!(fast.steps, every.steps, "{algorithm} {hosts}x{gpus}");
        assert!(fast.summary.events < every.summary.events);
        // The period: each step is as long as its step `period` before, not the one before.
        let len = |r: &topolab_core::records::StepRecord| r.end_ns - r.start_ns;
        let last: Vec<_> = fast.steps.iter().filter(|r| r.step == 39).map(len).collect();
        let before: Vec<_> = fast.steps.iter().filter(|r| r.step == 39 - period).map(len).collect();
        assert_eq!(last, before, "{algorithm} {hosts}x{gpus}");
    }
}

/// The speed case, in the debug profile too: a tree of 64 ranks over 1000 steps of
/// Inception-v3 settles into its period within a few steps, so almost all of it is
/// extrapolated (the release-profile figure is in the criterion bench).
#[test]
fn a_tree_of_64_ranks_settles_within_a_few_steps() {
    let s = scenario(
        "batch = 32\n[model]\nname = \"inception-v3\"\n[hardware]\ngpu = \"k40\"\n[network]\nnic = \"10 Gbit/s\"\n\
         [topology]\nkind = \"all-reduce\"\nworkers = 64\nalgorithm = \"tree\"\n[training]\nsteps = 1000\ntrace_steps = 0\n",
        None,
    );
    let r = simulate(&s, &SimOptions::default()).unwrap();
    let k = r.detail.steady_from.expect("a deterministic tree settles");
    assert!(k < 10, "settled only after step {k}");
    assert_eq!(r.steps.len(), 64 * 1000);
    // The last step is the period's: as long as step k on every worker.
    let last: Vec<_> = r.steps.iter().filter(|x| x.step == 999).map(|x| x.end_ns - x.start_ns).collect();
    let kth: Vec<_> = r.steps.iter().filter(|x| x.step == k).map(|x| x.end_ns - x.start_ns).collect();
    assert_eq!(last, kth);
}
