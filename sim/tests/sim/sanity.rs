//! Sanity properties of predictions: what must hold whatever the numbers.

use proptest::prelude::*;
use topolab_sim::target::time_to_target;

use super::*;

fn inception(workers: u32, ps: u32, nic_gbit: f64, extra: &str) -> Scenario {
    scenario(
        &format!(
            "batch = 32\n[model]\nname = \"inception-v3\"\n[hardware]\ngpu = \"k40\"\n\
             [network]\nnic = \"{nic_gbit} Gbit/s\"\n[topology]\nworkers = {workers}\nps = {ps}\n\
             [training]\nsteps = 5\ntrace_steps = 0\n{extra}"
        ),
        None,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, rng_seed: proptest::test_runner::RngSeed::Fixed(0x7090_1ab5), ..ProptestConfig::default() })]

    /// More bandwidth is never slower.
    #[test]
    fn more_bandwidth_is_never_slower(workers in 1u32..24, ps in 1u32..6, slow in 0.5f64..20.0, factor in 1.0f64..8.0) {
        let a = run(&inception(workers, ps, slow, ""));
        let b = run(&inception(workers, ps, slow * factor, ""));
        prop_assert!(
            b.summary.step_time_s.mean <= a.summary.step_time_s.mean * (1.0 + 1e-9),
            "{workers}w {ps}ps: {slow} Gbit/s -> {} s, {} Gbit/s -> {} s",
            a.summary.step_time_s.mean, slow * factor, b.summary.step_time_s.mean
        );
    }

    /// In a compute-bound configuration (fast NICs, a shard per 4 workers), adding a worker
    /// never lowers samples/s.
    #[test]
    fn adding_a_worker_never_lowers_throughput_when_compute_bound(workers in 1u32..40) {
        let ps = |w: u32| w.div_ceil(4);
        let a = run(&inception(workers, ps(workers), 100.0, ""));
        let b = run(&inception(workers + 1, ps(workers + 1), 100.0, ""));
        prop_assert!(a.summary.utilization.gpu > 0.9, "compute-bound: GPU {}", a.summary.utilization.gpu);
        prop_assert!(b.summary.throughput_samples_per_s >= a.summary.throughput_samples_per_s);
    }

    /// Time to accuracy grows with the target.
    #[test]
    fn time_to_accuracy_grows_with_the_target(lo in 0.5f64..0.79, gap in 0.001f64..0.2) {
        let hi = (lo + gap).min(0.7999);
        prop_assume!(hi > lo);
        let t = |v: f64| {
            let s = inception(8, 2, 10.0, &format!("target = {{ metric = \"top1\", value = {v} }}\n"));
            time_to_target(&s, &SimOptions::default()).unwrap().1.time_to_target_s
        };
        prop_assert!(t(hi) > t(lo));
    }
}

#[test]
fn one_k40_to_78_percent_takes_about_half_a_year() {
    // The anchor: 150-185 days on one K40 at ~9.5 images/s.
    let s = inception(1, 1, 10.0, "target = { metric = \"top1\", value = 0.78 }\n");
    let (_, t) = time_to_target(&s, &SimOptions::default()).unwrap();
    let days = t.time_to_target_s / 86400.0;
    assert!((150.0..=185.0).contains(&days), "{days} days");
    close(t.useful_samples_per_s, 9.5, 0.01);
    assert!(t.step_time_ci <= topolab_sim::target::PRECISION);
}

#[test]
fn async_pays_a_staleness_penalty_and_backup_shrinks_the_batch() {
    let target = "target = { metric = \"top1\", value = 0.78 }\n";
    let sync = time_to_target(&inception(8, 2, 10.0, target), &SimOptions::default()).unwrap().1;
    let asy = time_to_target(
        &scenario(
            &format!(
                "batch = 32\n[model]\nname = \"inception-v3\"\n[topology]\nworkers = 8\nps = 2\nmode = \"async\"\n[training]\nsteps = 5\n{target}"
            ),
            None,
        ),
        &SimOptions::default(),
    )
    .unwrap()
    .1;
    // Async updates carry one worker's batch and stale gradients: more examples needed.
    assert_eq!(asy.global_batch, 32.0);
    assert!(asy.mean_staleness > 0.0 && asy.examples > sync.examples / (1.0 + 256.0 / 1e5) * (1.0 + 32.0 / 1e5));
    let backup = time_to_target(
        &scenario(
            &format!(
                "batch = 32\n[model]\nname = \"inception-v3\"\n[topology]\nworkers = 8\nps = 2\nmode = \"backup\"\nbackup_workers = 2\n[training]\nsteps = 5\n{target}"
            ),
            None,
        ),
        &SimOptions::default(),
    )
    .unwrap()
    .1;
    assert_eq!(backup.global_batch, 6.0 * 32.0);
}

#[test]
fn failures_per_gpu_are_the_per_host_rate_divided_among_a_host_s_gpus() {
    // 100 workers of 8 GPUs each, shards co-located: at the Llama 3 rate of one interruption
    // per 16,384 x 54 x 24 / 419 = 50,677 GPU-hours, the job fails every 50,677 / 800 h =
    // 63.3 h, as with a per-host MTBF of 50,677 / 8 h on its 100 hosts.
    assert!((topolab_core::scenario::LLAMA3_GPU_MTBF_H - 50_677.0).abs() < 1.0);
    let base = Scenario::load(&root().join("scenarios/examples/inception-v3-100w-failures.toml")).unwrap();
    let per_gpu = base
        .with(|f| {
            f.hardware.gpus_per_host = 8;
            f.topology.ps_hosts = topolab_core::scenario::PsHosts::Colocated;
            f.faults.mtbf = None;
            f.faults.gpu_mtbf = Some(topolab_core::scenario::GpuMtbf::Llama3);
        })
        .unwrap();
    let per_host = per_gpu
        .with(|f| {
            f.faults.gpu_mtbf = None;
            f.faults.mtbf = Some(topolab_core::units::Time::from_secs_f64(
                topolab_core::scenario::LLAMA3_GPU_MTBF_H * 3600.0 / 8.0,
            ));
        })
        .unwrap();
    let a = time_to_target(&per_gpu, &SimOptions::default()).unwrap().1.failures.unwrap();
    let b = time_to_target(&per_host, &SimOptions::default()).unwrap().1.failures.unwrap();
    close(a.job_mtbf_s / 3600.0, 50_677.0 / 800.0, 1e-3);
    close(a.job_mtbf_s, b.job_mtbf_s, 1e-9);
    close(a.overhead_s, b.overhead_s, 1e-9);
}
