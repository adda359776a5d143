//! Scenarios the simulator refuses, with a reason.

use super::*;

#[test]
fn a_model_too_big_for_the_gpu_is_refused_with_the_numbers() {
    let s = scenario("batch = 8\n[model]\nname = \"gpt-2\"\n[hardware]\ngpu = \"k40\"\n", None);
    let e = simulate(&s, &SimOptions::default()).unwrap_err();
    assert!(e.is_bad_input());
    let msg = e.to_string();
    assert!(msg.contains("gpt-2 at batch 8 needs") && msg.contains("the k40 has 12 GiB"), "{msg}");
}

#[test]
fn all_reduce_is_refused_until_it_is_planned() {
    let s = scenario("batch = 8\n[model]\nname = \"alexnet\"\n[topology]\nkind = \"all-reduce\"\n", None);
    let e = simulate(&s, &SimOptions::default()).unwrap_err();
    assert!(e.is_bad_input() && e.to_string().contains("all-reduce"), "{e}");
}

#[test]
fn a_run_over_its_event_budget_stops_with_an_error() {
    let s = scenario("batch = 8\n[model]\nname = \"alexnet\"\n[training]\nsteps = 50\n", None);
    let e = simulate(&s, &SimOptions { max_events: 100, ..SimOptions::default() }).unwrap_err();
    assert!(e.to_string().contains("exceeded 100 events"), "{e}");
}
