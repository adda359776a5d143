//! The whole synchronous parameter-server step against SimGrid's C++ engine: the replay in
//! sim/tests/simgrid/ps_step.cpp runs the workload `simgrid_workload` exports (the same
//! messages, compute and rules, every worker on its own, jittered) over SimGrid's plain
//! max-min network, and the mean step times must agree within 0.1% (issue 16; the speed
//! comparison on the same workload is `cargo run --release -p topolab-benches --bin
//! simgrid-compare`).
//!
//! Needs g++ and Debian's `libsimgrid-dev` (installed by .ci/run).

use std::process::Command;

use topolab_core::scenario::Scenario;
use topolab_sim::{SimOptions, simgrid_workload, simulate};

use super::root;

/// Inception-v3 (batch 32, K40s, 10 Gbit/s, sync) at the given size and compute jitter.
fn scenario(workers: u32, ps: u32, steps: u64, jitter: f64, extra: &str) -> Scenario {
    let text = format!(
        "batch = 32\n[model]\nname = \"inception-v3\"\n[optimizer]\nkind = \"rmsprop\"\n[hardware]\ngpu = \"k40\"\n\
         [network]\nnic = \"10 Gbit/s\"\n{extra}[topology]\nworkers = {workers}\nps = {ps}\n\
         [training]\nsteps = {steps}\ntrace_steps = 0\n[faults]\njitter = {jitter}\n"
    );
    Scenario::parse(&text, "<test>", "simgrid-step", None).unwrap_or_else(|e| panic!("{e}"))
}

/// Builds the replay into `dir`; fails with what to install when g++ or SimGrid is missing.
fn build(dir: &std::path::Path) -> std::path::PathBuf {
    let bin = dir.join("ps_step");
    let out = Command::new("g++")
        .args(["-O2", "-std=c++17"])
        .arg(root().join("sim/tests/simgrid/ps_step.cpp"))
        .arg("-o")
        .arg(&bin)
        .arg("-lsimgrid")
        .output()
        .unwrap_or_else(|e| panic!("this test needs g++ (apt-get install g++ libsimgrid-dev): {e}"));
    assert!(
        out.status.success(),
        "building the SimGrid replay failed; it needs Debian's libsimgrid-dev (.ci/run installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

fn simgrid_mean_step(bin: &std::path::Path, dir: &std::path::Path, s: &Scenario) -> f64 {
    let file = dir.join("workload.txt");
    std::fs::write(&file, simgrid_workload(s).unwrap_or_else(|e| panic!("{e}"))).unwrap();
    let out = Command::new(bin).arg(&file).output().unwrap();
    assert!(out.status.success(), "SimGrid replay failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let words: Vec<&str> = text.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "mean_step_s").unwrap_or_else(|| panic!("no mean step in {text}"));
    words[at + 1].parse().unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
#[ignore = "needs g++ and Debian's libsimgrid-dev (apt-get install g++ libsimgrid-dev): cargo test -- --ignored"]
fn jittered_step_agrees_with_simgrid_within_a_tenth_of_a_percent() {
    let dir = tempfile::tempdir().unwrap();
    let bin = build(dir.path());
    let opts = SimOptions { trace: false, ..SimOptions::default() };
    // Jittered workers (each on its own), with and without latency and message overhead;
    // non-overlapped pushes; a 1 Gbit/s network where the shards' NICs bind.
    let cases = [
        ("8 workers, 2 PS, jitter", scenario(8, 2, 5, 0.05, "")),
        ("16 workers, 4 PS, latency", scenario(16, 4, 3, 0.1, "latency = \"200 us\"\n")),
        ("6 workers, 3 PS, 1 Gbit/s", scenario(6, 3, 3, 0.05, "").with(|f| f.network.nic = "1 Gbit/s".into()).unwrap()),
        ("4 workers, 2 PS, no overlap", scenario(4, 2, 3, 0.05, "").with(|f| f.training.overlap = false).unwrap()),
    ];
    for (name, s) in cases {
        let ours = simulate(&s, &opts).unwrap_or_else(|e| panic!("{name}: {e}")).summary.step_time_s.mean;
        let theirs = simgrid_mean_step(&bin, dir.path(), &s);
        let diff = (ours - theirs).abs() / theirs;
        eprintln!("{name}: topolab {ours:.9} s, SimGrid {theirs:.9} s, differ by {:.2e}", diff);
        assert!(diff < 1e-3, "{name}: topolab {ours} s against SimGrid {theirs} s ({:.4}%)", diff * 100.0);
    }
}

#[test]
fn the_simgrid_replay_refuses_what_it_does_not_model() {
    let s = scenario(4, 2, 2, 0.0, "").with(|f| f.topology.mode = topolab_core::scenario::Mode::Async).unwrap();
    let e = simgrid_workload(&s).unwrap_err().to_string();
    assert!(e.contains("mode is not sync"), "{e}");
    let s = scenario(4, 2, 2, 0.0, "unfairness = 0.3\n");
    let e = simgrid_workload(&s).unwrap_err().to_string();
    assert!(e.contains("not fair max-min"), "{e}");
}
