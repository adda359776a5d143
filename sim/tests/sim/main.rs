//! Integration tests of topolab-sim: one binary, a module per behaviour.

mod allreduce_paper;
mod bad_input;
mod determinism;
mod fit_runs;
mod golden;
mod hub_network;
mod maxmin_property;
mod paper_cases;
mod published;
mod sanity;
mod simgrid_crosscheck;
mod simgrid_step;
mod steady_state;

use std::path::{Path, PathBuf};

use topolab_core::scenario::Scenario;
use topolab_sim::{SimOptions, SimRun, simulate};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Parses a scenario written inline; `csv` (if any) is written next to it as `model.csv`.
pub fn scenario(text: &str, csv: Option<&str>) -> Scenario {
    let tmp = tempfile::Builder::new().prefix("topolab-sim-test-").tempdir().unwrap();
    let dir = tmp.path();
    if let Some(csv) = csv {
        std::fs::write(dir.join("model.csv"), csv).unwrap();
    }
    Scenario::parse(text, "test.toml", "test", Some(dir)).unwrap_or_else(|e| panic!("{e}"))
}

/// A profile of `fitted` figures, measured on no machine in particular.
pub fn test_profile(fitted: topolab_core::profile::Fitted) -> topolab_core::profile::Profile {
    topolab_core::profile::Profile {
        machine: topolab_core::profile::Machine {
            cpu: "test".into(),
            cores: 1,
            memory: String::new(),
            date: String::new(),
            launcher: "local".into(),
            congestion_control: String::new(),
        },
        fitted,
        raw: Vec::new(),
    }
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
