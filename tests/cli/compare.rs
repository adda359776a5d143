//! `topolab compare`: the exit status a user's CI gates on.

use super::{TempDir, stderr, stdout, topolab};

/// Simulates a small scenario into `dir` and returns its summary.json as JSON.
fn simulated(dir: &std::path::Path) -> serde_json::Value {
    let out = topolab(&["run", "scenarios/examples/inception-v3-64w-8ps.toml", "--out", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn an_identical_run_passes_and_a_ten_percent_slower_one_fails() {
    let d = TempDir::new("compare-runs");
    let (base, slow) = (d.join("base"), d.join("slow"));
    let mut v = simulated(&base);
    // The same run, 10% slower: every step time x1.1, throughput / 1.1.
    for q in ["mean", "p50", "p90", "p99"] {
        v["step_time_s"][q] = serde_json::json!(v["step_time_s"][q].as_f64().unwrap() * 1.1);
    }
    v["throughput_samples_per_s"] = serde_json::json!(v["throughput_samples_per_s"].as_f64().unwrap() / 1.1);
    std::fs::create_dir_all(&slow).unwrap();
    std::fs::write(slow.join("summary.json"), serde_json::to_string_pretty(&v).unwrap()).unwrap();
    let (b, s) = (base.to_str().unwrap(), slow.to_str().unwrap());

    let same = topolab(&["compare", b, b]);
    assert_eq!(same.status.code(), Some(0), "{}{}", stdout(&same), stderr(&same));
    assert!(stdout(&same).contains("no regression beyond 5%"), "{}", stdout(&same));

    let worse = topolab(&["compare", b, s, "--max-regression", "5%"]);
    assert_eq!(worse.status.code(), Some(1), "{}{}", stdout(&worse), stderr(&worse));
    assert!(stdout(&worse).contains("REGRESSION (10.0% worse)"), "{}", stdout(&worse));
    // Within a looser threshold, and the other way round (faster), it passes.
    assert_eq!(topolab(&["compare", b, s, "--max-regression", "15%"]).status.code(), Some(0));
    assert_eq!(topolab(&["compare", s, b]).status.code(), Some(0));

    let json = topolab(&["compare", b, s, "--metric", "step_p90", "--format", "json"]);
    assert_eq!(json.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let rows = j["comparison"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["metric"], "step_p90");
    assert!((rows[0]["change_pct"].as_f64().unwrap() - 10.0).abs() < 1e-6, "{j}");
    assert_eq!(j["comparison"]["regressed"], true);
}

#[test]
fn bad_input_exits_2_with_the_reason() {
    let d = TempDir::new("compare-bad");
    let base = d.join("base");
    simulated(&base);
    let b = base.to_str().unwrap();
    let unknown = topolab(&["compare", b, b, "--metric", "latency"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("unknown metric `latency`"), "{}", stderr(&unknown));
    let no_target = topolab(&["compare", b, b, "--metric", "time_to_target"]);
    assert_eq!(no_target.status.code(), Some(2));
    assert!(stderr(&no_target).contains("training target"), "{}", stderr(&no_target));
    let missing = topolab(&["compare", b, d.join("nothing").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
}

#[test]
fn sweeps_are_matched_by_configuration() {
    let d = TempDir::new("compare-sweeps");
    let dir = d.join("sweep");
    let out = topolab(&["sweep", "scenarios/examples/inception-v3-sweep.toml", "--out", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let csv = dir.join("sweep.csv");
    let same = topolab(&["compare", csv.to_str().unwrap(), dir.to_str().unwrap(), "--metric", "time_to_target"]);
    assert_eq!(same.status.code(), Some(0), "{}{}", stdout(&same), stderr(&same));
    let rows = std::fs::read_to_string(&csv).unwrap().lines().count() - 1;
    // One comparison per configuration, each with its axes.
    assert_eq!(stdout(&same).matches("workers=").count(), rows, "{}", stdout(&same));
}
