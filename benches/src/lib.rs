//! Benches of topolab (one criterion file per subject in `benches/`), and the scenarios they
//! share. Run by hand: `cargo bench -p topolab-benches`.

use std::path::Path;

use topolab_core::scenario::Scenario;
use topolab_core::units::Time;
use topolab_sim::engine::EventQueue;
use topolab_sim::maxmin::Use;

/// A path inside the repository.
pub fn repo_path(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("benches/ sits in the repository").join(rel)
}

/// Loads a scenario from the repository's `scenarios/` folder.
pub fn repo_scenario(rel: &str) -> Scenario {
    Scenario::load(&repo_path(rel)).unwrap_or_else(|e| panic!("{e}"))
}

/// The text of a file in the repository.
pub fn repo_scenario_text(rel: &str) -> String {
    std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
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

/// Flow paths and capacities of the 64-worker, 8-shard incast: every worker pulls from and
/// pushes to every shard (1,024 flows). Resources: 2 per worker NIC (egress, ingress), then 2
/// per shard, at 10 Gbit/s in bytes per ns; shard 4's at half rate so that fair levels differ.
pub fn incast_paths() -> (Vec<Vec<Use>>, Vec<f64>) {
    let (workers, ps) = (64usize, 8usize);
    let nic = |host: usize, ingress: bool| 2 * host + usize::from(ingress);
    let mut paths = Vec::new();
    for w in 0..workers {
        for p in 0..ps {
            let shard = workers + p;
            paths.push(vec![
                Use { resource: nic(shard, false), weight: 1.0 },
                Use { resource: nic(w, true), weight: 1.0 },
            ]);
            paths.push(vec![
                Use { resource: nic(w, false), weight: 1.0 },
                Use { resource: nic(shard, true), weight: 1.0 },
            ]);
        }
    }
    let mut caps = vec![1.25; 2 * (workers + ps)];
    caps[nic(workers + 4, false)] = 0.625;
    caps[nic(workers + 4, true)] = 0.625;
    (paths, caps)
}

/// The event engine's workload: `pending` events scheduled, then pop-and-reschedule with
/// pseudo-random delays of 0..4095 ns (xorshift) until `events` have been popped. Returns the
/// count popped.
pub fn event_queue_workload(events: u64, pending: u64) -> u64 {
    let mut q: EventQueue<u64> = EventQueue::new();
    let mut x: u64 = 0x9E37_79B9;
    for i in 0..pending {
        q.schedule(Time(i), i);
    }
    let mut n = 0;
    while let Some((t, e)) = q.pop() {
        n += 1;
        if n + pending <= events {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            q.schedule(t + Time(x & 4095), e);
        }
    }
    n
}
