//! Scenarios the simulator refuses, with a reason.

use super::*;

/// Validation refuses, with the numbers and at the field, what the simulator cannot run: `check`
/// and `run` give the same answer before anything is simulated.
fn refusal(text: &str) -> topolab_core::diagnostic::Diagnostic {
    match topolab_core::scenario::Scenario::parse(text, "test.toml", "test", None) {
        Err(topolab_core::scenario::ScenarioError::Invalid(ds)) => ds[0].clone(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_model_too_big_for_the_gpu_is_refused_with_the_numbers() {
    let d = refusal("batch = 8\n[model]\nname = \"gpt-2\"\n[hardware]\ngpu = \"k40\"\n");
    assert_eq!(d.path, "batch");
    assert!(d.message.contains("gpt-2 at batch 8 needs") && d.message.contains("the k40 has 12 GiB"), "{d}");
}

#[test]
fn all_reduce_refuses_what_does_not_fit_it() {
    let ar = "batch = 8\n[model]\nname = \"alexnet\"\n[topology]\nkind = \"all-reduce\"\nworkers = 4\n";
    // Hierarchical needs GPUs to reduce inside a host.
    let d = refusal(&format!("{ar}algorithm = \"hierarchical\"\n"));
    assert_eq!(d.path, "topology.algorithm");
    assert!(d.message.contains("gpus_per_host = 1"), "{d}");
    let d = refusal(&format!("{ar}staleness = 2\nmode = \"stale-synchronous\"\n"));
    assert_eq!(d.path, "topology.mode");
    assert!(d.message.contains("an all-reduce is synchronous"), "{d}");
    let d = refusal(&format!("{ar}placement = \"greedy\"\n"));
    assert_eq!(d.path, "topology.placement");
    // A custom GPU must say how fast its memory applies the update.
    let d = refusal(&format!(
        "{ar}[hardware]\ngpu = \"lab\"\ngpu_spec = {{ fp32 = \"1 TFLOP/s\", memory = \"8 GiB\", source = \"test\" }}\n"
    ));
    assert_eq!(d.path, "hardware.gpu_spec");
    assert!(d.message.contains("memory bandwidth"), "{d}");
}

#[test]
fn a_run_over_its_event_budget_stops_with_an_error() {
    let s = scenario("batch = 8\n[model]\nname = \"alexnet\"\n[training]\nsteps = 50\n", None);
    let e = simulate(&s, &SimOptions { max_events: 100, ..SimOptions::default() }).unwrap_err();
    assert!(e.to_string().contains("exceeded 100 events"), "{e}");
}
