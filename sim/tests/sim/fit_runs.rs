//! `topolab fit` on runs whose truth is known: runs simulated with a profile are fitted back
//! to it.

use topolab_core::profile::{Fitted, Profile};
use topolab_core::scenario::Scenario;
use topolab_core::units::{BitRate, FlopRate, Time};
use topolab_sim::measured;
use topolab_sim::{SimOptions, simulate, write_run_dir};

fn truth() -> Profile {
    super::test_profile(Fitted::with_rates(FlopRate(2e12), 0.8, Time(50_000), BitRate(100e9 * 8.0)))
}

/// A 1-worker, 1-PS run of `model` at `nic`, simulated with the true profile, as a run
/// directory (scenario.toml, steps.csv, summary.json).
fn run_dir(root: &std::path::Path, model: &str, nic: &str) -> std::path::PathBuf {
    let text = format!(
        "name = \"{model}-1w\"\nbatch = 32\n[model]\nname = \"{model}\"\n[network]\nnic = \"{nic}\"\n[topology]\nworkers = 1\nps = 1\n[training]\nsteps = 20\ntrace_steps = 0\n"
    );
    let dir = root.join(model);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("scenario.toml"), &text).unwrap();
    let mut s = Scenario::load(&dir.join("scenario.toml")).unwrap();
    s.profile = Some(truth());
    let run = simulate(&s, &SimOptions { trace: false, ..SimOptions::default() }).unwrap();
    write_run_dir(&run, &dir).unwrap();
    dir
}

#[test]
fn runs_simulated_with_a_profile_are_fitted_back_to_it() {
    let tmp = tempfile::Builder::new().prefix("topolab-fit-").tempdir().unwrap();
    // Three models and two NIC rates: messages per byte differ, so the per-message cost is
    // told apart from goodput.
    let dirs = [
        run_dir(tmp.path(), "alexnet", "1 Gbit/s"),
        run_dir(tmp.path(), "resnet-50", "1 Gbit/s"),
        run_dir(tmp.path(), "vgg-16", "10 Gbit/s"),
    ];
    let runs: Vec<measured::Run> = dirs.iter().map(|d| measured::load(d).unwrap()).collect();
    let report = measured::fit(&runs, "2026-12-02T00:00:00Z").unwrap();
    let f = &report.profile.fitted;
    let t = truth().fitted;
    assert!(
        (f.compute_rate.0 / t.compute_rate.0 - 1.0).abs() < 0.01,
        "compute rate {} vs {}",
        f.compute_rate,
        t.compute_rate
    );
    assert!((f.goodput / t.goodput - 1.0).abs() < 0.02, "goodput {} vs {}", f.goodput, t.goodput);
    let o = f.message_overhead.0 as f64 / t.message_overhead.0 as f64;
    assert!((o - 1.0).abs() < 0.25, "message overhead {} vs {}", f.message_overhead, t.message_overhead);
    for r in &report.residuals {
        assert!(r.error().abs() < 0.01, "{}: {:+.2}%", r.run, r.error() * 100.0);
    }
    // One worker each: how streams share a link is refused, with the reason.
    assert!(report.refused.iter().any(|r| r.name.starts_with("links") && r.why.contains("one worker")));
}

#[test]
fn one_model_cannot_tell_per_message_from_per_byte_costs() {
    let tmp = tempfile::Builder::new().prefix("topolab-fit-").tempdir().unwrap();
    let runs = vec![measured::load(&run_dir(tmp.path(), "alexnet", "1 Gbit/s")).unwrap()];
    let report = measured::fit(&runs, "2026-12-02T00:00:00Z").unwrap();
    assert!(report.params.iter().any(|p| p.name == "goodput"));
    assert!(report.refused.iter().any(|r| r.name == "message_overhead" && r.why.contains("messages per byte")));
}
