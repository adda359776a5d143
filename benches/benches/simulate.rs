//! Whole simulations, and how their cost grows with workers, PS and steps.
//! Targets: scenarios/bench/inception-v3-64w-8ps.toml (1000 steps) <= 2 s on one core;
//! 1024 workers x 32 PS x 100 steps <= 20 s (and <= 2 GiB peak memory, measured on the CLI);
//! the time to 78% top-1 at 100 jittered workers (every worker simulated on its own) < 10 s;
//! Inception-v3 on 64 workers with a ring all-reduce, 1000 steps, < 1 s (and with a double
//! binary tree, and a hierarchical ring over 16 hosts x 4 GPUs);
//! 64 jittered workers x 8 PS x 20 steps, every worker on its own, at least 250x faster than
//! SimGrid's C++ engine on the same workload (`--bin simgrid-compare` times both).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use topolab_benches::{inception, repo_scenario};
use topolab_core::scenario::{AllReduceAlgorithm, Target};
use topolab_sim::target::time_to_target;
use topolab_sim::{SimOptions, simulate};

fn opts() -> SimOptions {
    SimOptions { trace: false, ..SimOptions::default() }
}

fn targets(c: &mut Criterion) {
    let mut g = c.benchmark_group("targets");
    g.sample_size(10);
    let s = repo_scenario("scenarios/bench/inception-v3-64w-8ps.toml");
    g.bench_function("inception-v3 64w 8ps 1000 steps", |b| b.iter(|| simulate(&s, &opts()).unwrap().summary.events));
    let s = inception(1024, 32, 100, 0.0);
    g.bench_function("inception-v3 1024w 32ps 100 steps", |b| b.iter(|| simulate(&s, &opts()).unwrap().summary.events));
    // Time to accuracy: simulated until the mean step is known to +-0.5%, then extrapolated.
    let s = inception(100, 8, 20, 0.05)
        .with(|f| f.training.target = Some(Target { metric: "top1".into(), value: 0.78 }))
        .unwrap_or_else(|e| panic!("{e:?}"));
    g.bench_function("inception-v3 time to 78% at 100 jittered workers", |b| {
        b.iter(|| time_to_target(&s, &opts()).unwrap().1.time_to_target_s)
    });
    // Every worker on its own (jitter): the workload SimGrid replays in `simgrid-compare`.
    let s = inception(64, 8, 20, 0.05);
    g.bench_function("inception-v3 64w 8ps 20 jittered steps", |b| {
        b.iter(|| simulate(&s, &opts()).unwrap().summary.events)
    });
    // The same 64 workers with a ring all-reduce instead of parameter servers.
    let s = inception(64, 8, 1000, 0.0)
        .with(|f| {
            f.topology.kind = topolab_core::scenario::TopologyKind::AllReduce;
            f.topology.ps = 1;
        })
        .unwrap_or_else(|e| panic!("{e:?}"));
    g.bench_function("inception-v3 64w ring all-reduce 1000 steps", |b| {
        b.iter(|| simulate(&s, &opts()).unwrap().summary.events)
    });
    // A double binary tree is not symmetric (every rank is simulated), but its steps settle
    // into a period within a few steps, after which they are extrapolated; the hierarchical
    // ring over 16 hosts x 4 GPUs likewise.
    for (algorithm, hosts, gpus) in [(AllReduceAlgorithm::Tree, 64, 1), (AllReduceAlgorithm::Hierarchical, 16, 4)] {
        let s = inception(hosts, 8, 1000, 0.0)
            .with(|f| {
                f.topology.kind = topolab_core::scenario::TopologyKind::AllReduce;
                f.topology.ps = 1;
                f.topology.algorithm = algorithm;
                f.hardware.gpus_per_host = gpus;
            })
            .unwrap_or_else(|e| panic!("{e:?}"));
        let name = format!("inception-v3 {hosts}x{gpus} {} all-reduce 1000 steps", algorithm.as_str());
        g.bench_function(name, |b| b.iter(|| simulate(&s, &opts()).unwrap().summary.events));
    }
    g.finish();
}

fn growth(c: &mut Criterion) {
    let mut g = c.benchmark_group("growth");
    g.sample_size(10);
    // Interchangeable workers are one class: cost should not grow with their number.
    for w in [16u32, 64, 256, 1024] {
        let s = inception(w, 8, 100, 0.0);
        g.bench_with_input(BenchmarkId::new("workers (identical)", w), &s, |b, s| {
            b.iter(|| simulate(s, &opts()).unwrap().summary.events)
        });
    }
    // With jitter every worker is a class of its own: cost grows with workers (more flows,
    // and every connection that turns active or idle re-solves the shared component).
    for w in [8u32, 16, 32, 64] {
        let s = inception(w, 8, 10, 0.05);
        g.bench_with_input(BenchmarkId::new("workers (jitter, 10 steps)", w), &s, |b, s| {
            b.iter(|| simulate(s, &opts()).unwrap().summary.events)
        });
    }
    for ps in [1u32, 8, 32] {
        let s = inception(64, ps, 100, 0.0);
        g.bench_with_input(BenchmarkId::new("ps", ps), &s, |b, s| {
            b.iter(|| simulate(s, &opts()).unwrap().summary.events)
        });
    }
    for steps in [100u64, 1000] {
        let s = inception(64, 8, steps, 0.0);
        g.bench_with_input(BenchmarkId::new("steps", steps), &s, |b, s| {
            b.iter(|| simulate(s, &opts()).unwrap().summary.events)
        });
    }
    g.finish();
}

criterion_group!(benches, targets, growth);
criterion_main!(benches);
