//! Benches of topolab (one criterion file per subject in `benches/`), and the scenarios they
//! share. Run by hand: `cargo bench -p topolab-benches`.

use std::path::Path;

use topolab_core::scenario::Scenario;

/// Loads a scenario from the repository's `scenarios/` folder.
pub fn repo_scenario(rel: &str) -> Scenario {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("benches/ sits in the repository").join(rel);
    Scenario::load(&p).unwrap_or_else(|e| panic!("{e}"))
}

/// Inception-v3, batch 32, K40s over 10 Gbit/s, sync, with the given size and jitter.
pub fn inception(workers: u32, ps: u32, steps: u64, jitter: f64) -> Scenario {
    let text = format!(
        "batch = 32\n[model]\nname = \"inception-v3\"\n[optimizer]\nkind = \"rmsprop\"\n[hardware]\ngpu = \"k40\"\n\
         [network]\nnic = \"10 Gbit/s\"\n[topology]\nworkers = {workers}\nps = {ps}\n\
         [training]\nsteps = {steps}\ntrace_steps = 0\n[faults]\njitter = {jitter}\n"
    );
    Scenario::parse(&text, "<bench>", "bench", None).unwrap_or_else(|e| panic!("{e}"))
}
