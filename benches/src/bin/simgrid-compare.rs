//! Issue 16's speed comparison, both engines in one run: the jittered Inception-v3
//! parameter-server workload (every worker simulated on its own) simulated by topolab and
//! replayed by SimGrid's C++ engine (sim/tests/simgrid/ps_step.cpp, built here with g++
//! against libsimgrid-dev), with the mean step time of each and the speed ratio.
//!
//! Usage: `cargo run --release -p topolab-benches --bin simgrid-compare -- [WORKERS PS STEPS JITTER]`
//! (default 64 8 20 0.05). Prints one line per engine and a summary, also as JSON on the last
//! line. CPU times are the process's user + system time.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use topolab_benches::{inception, repo_path};
use topolab_sim::{SimOptions, simgrid_workload, simulate};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    let parse = |i: usize, default: &str| -> f64 {
        arg(i, default).parse().unwrap_or_else(|_| {
            eprintln!("usage: simgrid-compare [WORKERS PS STEPS JITTER] (numbers), got {:?}", args);
            std::process::exit(2)
        })
    };
    let (workers, ps, steps, jitter) =
        (parse(0, "64") as u32, parse(1, "8") as u32, parse(2, "20") as u64, parse(3, "0.05"));
    let s = inception(workers, ps, steps, jitter);
    let dir = repo_path("target/simgrid-compare");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let workload = dir.join(format!("ps-{workers}w-{ps}ps-{steps}s.txt"));
    std::fs::write(&workload, simgrid_workload(&s).unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or_else(|e| panic!("{}: {e}", workload.display()));
    let binary = build(&dir);

    // topolab: the best of three (the run is deterministic; the best is the least disturbed).
    let opts = SimOptions { trace: false, ..SimOptions::default() };
    let mut best = f64::INFINITY;
    let mut mean_topolab = 0.0;
    for _ in 0..3 {
        let t = Instant::now();
        let run = simulate(&s, &opts).unwrap_or_else(|e| panic!("{e}"));
        best = best.min(t.elapsed().as_secs_f64());
        mean_topolab = run.summary.step_time_s.mean;
    }
    println!("topolab  mean step {mean_topolab:.9} s   {best:.3} s (best of 3)");

    let before = children_cpu_s();
    let t = Instant::now();
    let out = Command::new(&binary).arg(&workload).output().unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
    let wall = t.elapsed().as_secs_f64();
    let cpu = children_cpu_s() - before;
    assert!(out.status.success(), "SimGrid replay failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let mean_simgrid: f64 = text
        .split_whitespace()
        .skip_while(|w| *w != "mean_step_s")
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("SimGrid replay printed no mean step: {text}"));
    println!("simgrid  mean step {mean_simgrid:.9} s   {wall:.3} s wall, {cpu:.3} s CPU");
    let diff = (mean_topolab - mean_simgrid) / mean_simgrid;
    let ratio = cpu / best;
    println!(
        "{workers} workers x {ps} PS x {steps} steps, jitter {jitter}: mean steps differ by {:.4}%; topolab is {ratio:.1}x faster (SimGrid CPU / topolab)",
        diff * 100.0
    );
    println!(
        "{}",
        serde_json::json!({
            "workers": workers, "ps": ps, "steps": steps, "jitter": jitter,
            "topolab_mean_step_s": mean_topolab, "simgrid_mean_step_s": mean_simgrid,
            "relative_difference": diff, "topolab_s": best, "simgrid_wall_s": wall, "simgrid_cpu_s": cpu,
            "speedup": ratio,
        })
    );
}

/// Builds the SimGrid replay (once per source change) and returns its path.
fn build(dir: &std::path::Path) -> PathBuf {
    let src = repo_path("sim/tests/simgrid/ps_step.cpp");
    let bin = dir.join("ps_step");
    let stale = match (std::fs::metadata(&src), std::fs::metadata(&bin)) {
        (Ok(s), Ok(b)) => s.modified().ok() > b.modified().ok(),
        _ => true,
    };
    if stale {
        let status = Command::new("g++")
            .args(["-O2", "-std=c++17"])
            .arg(&src)
            .arg("-o")
            .arg(&bin)
            .arg("-lsimgrid")
            .status()
            .unwrap_or_else(|e| panic!("g++ (needs g++ and libsimgrid-dev): {e}"));
        assert!(status.success(), "building {} failed (needs libsimgrid-dev)", src.display());
    }
    bin
}

/// CPU seconds (user + system) used by this process's finished children.
fn children_cpu_s() -> f64 {
    // /proc/self/stat fields 16 and 17: cutime and cstime, in clock ticks.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = [13, 14].iter().filter_map(|&i| fields.get(i)?.parse::<f64>().ok()).sum();
    ticks / 100.0
}
