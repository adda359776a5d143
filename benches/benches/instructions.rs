//! Instruction counts of the hot paths, measured by Callgrind through gungraun: deterministic
//! (the same binary and input give the same count on any quiet or busy machine), so CI can fail
//! on a regression that a timing would drown in noise. `benches/perf-guard check` runs them and
//! compares with `benches/baselines/instructions.json`; `benches/perf-guard update` refreshes it.
//!
//! Each case does a fixed amount of work with its input built in a setup function, which
//! Callgrind does not count. Nothing measured iterates a std `HashMap` (its random seed would
//! change the count from run to run).

use std::hint::black_box;

use gungraun::prelude::*;
use topolab_benches::{incast_paths, inception, repo_scenario_text};
use topolab_core::scenario::Scenario;
use topolab_core::units::Time;
use topolab_runtime::wire::{self, Kind};
use topolab_sim::engine::EventQueue;
use topolab_sim::maxmin::{self, Scratch, Use};
use topolab_sim::network::{Message, Network};
use topolab_sim::{SimOptions, simulate};

// Schedule and pop 100,000 events with 1,024 pending (about what a 64-worker run keeps in
// flight), pseudo-random delays of 0..4095 ns.
#[library_benchmark]
fn event_queue() -> u64 {
    black_box(topolab_benches::event_queue_workload(100_000, 1024))
}

// One max-min solve of the 1,024 flows of a 64-worker, 8-shard step.
#[library_benchmark]
#[bench::incast_64x8(setup = incast_paths)]
fn maxmin_solve(input: (Vec<Vec<Use>>, Vec<f64>)) -> f64 {
    let (paths, caps) = input;
    let all: Vec<usize> = (0..paths.len()).collect();
    let rates = maxmin::solve(&all, |f| &paths[f], &caps, &mut Scratch::new(caps.len()));
    black_box(rates.iter().sum())
}

// The incremental network: 1,024 flows of the 64 x 8 incast each send one 1 MB message;
// completions are taken in time order, each one re-solving its component.
#[library_benchmark]
#[bench::incast_64x8(setup = incast_paths)]
fn network_resolve(input: (Vec<Vec<Use>>, Vec<f64>)) -> u64 {
    let (paths, caps) = input;
    let mut net: Network<u32> = Network::new();
    for c in caps {
        net.add_resource(c);
    }
    let flows: Vec<usize> = paths.into_iter().map(|p| net.add_flow(p)).collect();
    let mut q: EventQueue<(usize, u64)> = EventQueue::new();
    for (i, &f) in flows.iter().enumerate() {
        for t in net.send(Time::ZERO, f, Message { bytes: 1e6, tag: i as u32 }) {
            q.schedule(t.at, (t.flow, t.version));
        }
    }
    let mut done = 0;
    while let Some((now, (f, version))) = q.pop() {
        let timers = match net.complete(now, f, version) {
            topolab_sim::network::Completion::Done(_, timers) => {
                done += 1;
                timers
            }
            topolab_sim::network::Completion::Later(timers) => timers,
            topolab_sim::network::Completion::Stale => continue,
        };
        for t in timers {
            q.schedule(t.at, (t.flow, t.version));
        }
    }
    black_box(done + net.resolves())
}

fn inception_64x8_one_step() -> Scenario {
    inception(64, 8, 1, 0.0)
}

fn inception_64x8_two_jittered_steps() -> Scenario {
    inception(64, 8, 2, 0.05)
}

// One synchronous PS step of Inception-v3 at 64 workers x 8 PS (plan built, step simulated,
// summary made; no trace); and two steps with 5% compute jitter, every worker simulated on its
// own (the shards' NICs as hubs, worker NICs that bind solved apart: `network/hubs.rs`).
#[library_benchmark]
#[bench::inception_v3_64x8(setup = inception_64x8_one_step)]
#[bench::inception_v3_64x8_jittered(setup = inception_64x8_two_jittered_steps)]
fn ps_step(s: Scenario) -> u64 {
    let run = simulate(&s, &SimOptions { trace: false, ..SimOptions::default() }).expect("the bench scenario runs");
    black_box(run.summary.events)
}

fn tensor() -> Vec<f32> {
    (0..262_144).map(|i| i as f32 * 0.5).collect()
}

// The wire codec: 1,000 headers written and parsed, and a 1 MiB tensor encoded and decoded.
#[library_benchmark]
#[bench::one_mib(setup = tensor)]
fn wire_codec(t: Vec<f32>) -> usize {
    let mut ok = 0;
    for i in 0..1000u32 {
        let h = wire::header(Kind::Push, i, u64::from(i), 4096);
        if wire::parse_header(black_box(&h), 1 << 30).is_ok() {
            ok += 1;
        }
    }
    let bytes = wire::f32_bytes(&t);
    let back = wire::bytes_f32(black_box(&bytes)).expect("a whole number of f32");
    black_box(ok + back.len())
}

fn example_text() -> String {
    repo_scenario_text("scenarios/examples/inception-v3-64w-8ps.toml")
}

// Parsing and validating a scenario (TOML, units, the model zoo's Inception-v3, placement
// checks): what `topolab check` does per file.
#[library_benchmark]
#[bench::inception_v3_64w_8ps(setup = example_text)]
fn scenario_parse(text: String) -> String {
    let s = Scenario::parse(&text, "<bench>", "bench", None).expect("the example scenario is valid");
    black_box(s.hash)
}

library_benchmark_group!(
    name = hot_paths,
    benchmarks = [event_queue, maxmin_solve, network_resolve, ps_step, wire_codec, scenario_parse]
);

main!(library_benchmark_groups = hot_paths);
