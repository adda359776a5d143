//! The hub fast path inside whole simulations: the parameter-server simulator with the
//! shards' NICs as hubs gives the same step records as with every connection re-solved by the
//! max-min solver (`SimOptions::exact_network`), to the ns up to rounding.

use topolab_core::scenario::Scenario;
use topolab_sim::{SimOptions, simulate};

fn scenario(workers: u32, ps: u32, steps: u64, extra_network: &str, extra: &str) -> Scenario {
    let text = format!(
        "batch = 32\n[model]\nname = \"inception-v3\"\n[optimizer]\nkind = \"rmsprop\"\n[hardware]\ngpu = \"k40\"\n\
         [network]\nnic = \"10 Gbit/s\"\n{extra_network}[topology]\nworkers = {workers}\nps = {ps}\n\
         [training]\nsteps = {steps}\ntrace_steps = 0\n{extra}"
    );
    Scenario::parse(&text, "<test>", "hubs", None).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn hubs_and_the_full_solver_give_the_same_steps() {
    let cases = [
        ("jittered", scenario(12, 3, 4, "", "[faults]\njitter = 0.1\n")),
        ("identical workers in one class", scenario(16, 4, 3, "", "")),
        ("few workers, many shards (worker NICs bind)", scenario(2, 6, 3, "", "[faults]\njitter = 0.05\n")),
        ("unequal TCP shares", scenario(8, 2, 3, "unfairness = 0.4\n", "")),
        ("latency", scenario(6, 2, 3, "latency = \"100 us\"\n", "[faults]\njitter = 0.05\n")),
        ("async", scenario(6, 2, 4, "", "").with(|f| f.topology.mode = topolab_core::scenario::Mode::Async).unwrap()),
    ];
    for (name, s) in cases {
        let sync = s.spec.topology.mode == topolab_core::scenario::Mode::Sync;
        let fast = simulate(&s, &SimOptions { trace: false, ..SimOptions::default() }).unwrap();
        let exact = simulate(&s, &SimOptions { trace: false, exact_network: true, ..SimOptions::default() }).unwrap();
        assert_eq!(fast.steps.len(), exact.steps.len(), "{name}");
        let mut worst = 0u64;
        for (a, b) in fast.steps.iter().zip(&exact.steps) {
            assert_eq!((a.worker, a.step), (b.worker, b.step), "{name}");
            worst = worst.max(a.end_ns.abs_diff(b.end_ns)).max(a.start_ns.abs_diff(b.start_ns));
        }
        let (fm, em) = (fast.summary.step_time_s.mean, exact.summary.step_time_s.mean);
        eprintln!("{name}: records up to {worst} ns apart, mean step {fm} s against {em} s");
        if sync {
            // A ns of rounding per message at most, over the few thousand messages of a run.
            assert!(worst <= 10_000, "{name}: steps end up to {worst} ns apart");
        } else {
            // Asynchronous workers apply on arrival: two arrivals at the same ns may be taken
            // in the other order (a hub's timer against another event), which swaps which
            // worker gets which step, not how long steps take.
            let durations = |run: &topolab_sim::SimRun| {
                let mut d: Vec<u64> = run.steps.iter().map(|r| r.end_ns - r.start_ns).collect();
                d.sort_unstable();
                d
            };
            for (a, b) in durations(&fast).iter().zip(&durations(&exact)) {
                assert!(a.abs_diff(*b) <= 10_000, "{name}: step durations {a} and {b} ns");
            }
        }
        assert!((fm - em).abs() <= 1e-6 * em, "{name}: mean step {fm} s against {em} s");
    }
}
