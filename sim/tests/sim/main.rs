//! Integration tests of topolab-sim: one binary, a module per behaviour.

mod bad_input;
mod determinism;
mod golden;
mod maxmin_property;
mod paper_cases;
mod sanity;
mod simgrid_crosscheck;

use std::path::{Path, PathBuf};

use topolab_core::scenario::Scenario;
use topolab_sim::{SimOptions, SimRun, simulate};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Parses a scenario written inline; `csv` (if any) is written next to it as `model.csv`.
pub fn scenario(text: &str, csv: Option<&str>) -> Scenario {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("topolab-sim-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    if let Some(csv) = csv {
        std::fs::write(dir.join("model.csv"), csv).unwrap();
    }
    let s = Scenario::parse(text, "test.toml", "test", Some(&dir)).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_dir_all(&dir).ok();
    s
}

pub fn run(s: &Scenario) -> SimRun {
    simulate(s, &SimOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// Asserts `actual` is within `rel` of `expected`.
#[track_caller]
pub fn close(actual: f64, expected: f64, rel: f64) {
    let err = (actual - expected).abs() / expected.abs().max(1e-300);
    assert!(err <= rel, "got {actual}, expected {expected} (relative error {err:.2e} > {rel:.0e})");
}
