//! Same scenario and seed: byte-identical output files.

use super::*;

#[test]
fn two_runs_write_byte_identical_files() {
    // Jitter and a straggler exercise the random numbers; backup mode the drop logic.
    let s = Scenario::load(&root().join("scenarios/examples/vgg-16-backup-partitioned.toml")).unwrap();
    let tmp = tempfile::Builder::new().prefix("topolab-determinism-").tempdir().unwrap();
    let base = tmp.path();
    for i in 0..2 {
        topolab_sim::write_run_dir(&run(&s), &base.join(i.to_string())).unwrap();
    }
    for f in ["summary.json", "steps.csv", "trace.json"] {
        let a = std::fs::read(base.join("0").join(f)).unwrap();
        let b = std::fs::read(base.join("1").join(f)).unwrap();
        assert!(!a.is_empty(), "{f} is empty");
        assert!(a == b, "{f} differs between two runs of seed {}", s.spec.seed);
    }
}

#[test]
fn another_seed_changes_a_jittered_run() {
    let text = std::fs::read_to_string(root().join("scenarios/examples/vgg-16-backup-partitioned.toml")).unwrap();
    let a = run(&scenario(&text, None));
    let b = run(&scenario(&format!("seed = 99\n{text}"), None));
    assert_ne!(a.summary.step_time_s.p99, b.summary.step_time_s.p99);
}

#[test]
fn output_files_are_well_formed() {
    let s = Scenario::load(&root().join("scenarios/examples/inception-v3-64w-8ps.toml")).unwrap();
    let r = run(&s);
    let tmp = tempfile::Builder::new().prefix("topolab-files-").tempdir().unwrap();
    let dir = tmp.path();
    topolab_sim::write_run_dir(&r, dir).unwrap();
    let steps = topolab_core::records::read_steps_csv(std::fs::File::open(dir.join("steps.csv")).unwrap(), "steps.csv")
        .unwrap();
    // One record per worker per step.
    assert_eq!(steps.len(), 64 * 200);
    assert!(steps.iter().all(|r| r.scenario_hash == s.hash && r.seed == 7));
    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("trace.json")).unwrap()).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    assert!(events.iter().any(|e| e["ph"] == "X" && e["cat"] == "gpu"));
    assert!(events.iter().any(|e| e["ph"] == "X" && e["cat"] == "nic-in"));
    assert!(events.iter().any(|e| e["ph"] == "X" && e["cat"] == "apply"));
    let summary =
        topolab_core::records::read_summary_json(std::fs::File::open(dir.join("summary.json")).unwrap(), "s").unwrap();
    assert_eq!(summary, r.summary);
}

#[test]
fn unfair_sharing_is_deterministic_and_changes_the_run() {
    // Four async workers and one PS on 100 Mbit/s, with and without unfair shares and a
    // ramp-up: the shares change every step's timing, the same way in two runs.
    let text = |net: &str| {
        format!(
            "batch = 8\nseed = 5\n[model]\nname = \"alexnet\"\n[network]\nnic = \"100 Mbit/s\"\n{net}\n\
             [topology]\nworkers = 4\nps = 1\nmode = \"async\"\n[training]\nsteps = 6\n"
        )
    };
    let fair = run(&scenario(&text(""), None));
    let unfair_text = text("unfairness = 0.4\nramp = \"50 ms\"\nramp_share = 0.3");
    let a = run(&scenario(&unfair_text, None));
    let b = run(&scenario(&unfair_text, None));
    assert_eq!(a.steps, b.steps, "same seed, same run");
    assert_ne!(a.steps, fair.steps, "unfair shares change the run");
    let changed = a.steps.iter().zip(&fair.steps).filter(|(x, y)| x.end_ns != y.end_ns).count();
    assert!(changed > a.steps.len() / 2, "most steps end elsewhere: {changed} of {}", a.steps.len());
    // First come, first served for messages that fit a 50 ms queue: deterministic too, and
    // another run again.
    let fifo_text = text("unfairness = 0.4\nfifo = \"10 ms\"\nqueue = \"50 ms\"");
    let c = run(&scenario(&fifo_text, None));
    assert_eq!(c.steps, run(&scenario(&fifo_text, None)).steps, "same seed, same run");
    let lucky = run(&scenario(&text("unfairness = 0.4"), None));
    assert_ne!(c.steps, lucky.steps, "queue order changes the run");
}

#[test]
fn a_jittered_unfair_ring_is_deterministic_and_seeded() {
    let text = std::fs::read_to_string(root().join("scenarios/examples/ring-allreduce.toml")).unwrap();
    let text = format!("{text}\n[faults]\njitter = 0.1\n");
    let text = text.replace("latency = \"50 us\"", "latency = \"50 us\"\nunfairness = 0.3");
    let (a, b) = (run(&scenario(&text, None)), run(&scenario(&text, None)));
    let csv = |r: &SimRun| {
        let mut v = Vec::new();
        topolab_core::records::write_steps_csv(&r.steps, &mut v).unwrap();
        v
    };
    assert!(csv(&a) == csv(&b));
    assert_eq!(topolab_sim::chrome_trace(&a.trace), topolab_sim::chrome_trace(&b.trace));
    let c = run(&scenario(&text.replace("seed = 1", "seed = 99"), None));
    assert_ne!(a.summary.step_time_s.p99, c.summary.step_time_s.p99);
    // Jitter makes workers wait for the slowest.
    assert!(a.summary.breakdown_s.wait > 0.0, "{:?}", a.summary.breakdown_s);
}
