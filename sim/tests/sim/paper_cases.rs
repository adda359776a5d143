//! Cases worked out on paper. Common setting unless a test says otherwise: a GPU of exactly
//! 1 TFLOP/s at efficiency 1, batch 1, NICs of 1 Gbit/s = 0.125 bytes/ns with goodput 1, no
//! latency, no per-message overhead, PS memory at 37.5 GB/s, plain SGD (an apply touches
//! 3 x the part's bytes), and 16-byte requests, Readys and fetches (core's step rules: a
//! worker asks each shard for the next step after its last push to it; the shard answers with
//! a Ready once it has applied the step; the worker, released by the last Ready, fetches every
//! shard's values).

use super::*;
use topolab_sim::SimOptions;

fn paper(topology: &str, csv: &str, extra: &str) -> Scenario {
    paper_steps(topology, csv, extra, 5)
}

fn paper_steps(topology: &str, csv: &str, extra: &str, steps: u64) -> Scenario {
    let text = format!(
        "batch = 1\n[model]\nlayers = \"model.csv\"\n\
         [hardware]\ngpu = \"paper-gpu\"\nefficiency = 1.0\nps_memory_bandwidth = \"37.5 GB/s\"\n\
         [hardware.gpu_spec]\nfp32 = \"1 TFLOP/s\"\nmemory = \"64 GiB\"\nsource = \"test\"\n\
         [network]\nnic = \"1 Gbit/s\"\nlatency = \"0 us\"\ngoodput = 1.0\nmessage_overhead = \"0 ns\"\n{extra}\n\
         [topology]\n{topology}\n[training]\nsteps = {steps}\n"
    );
    scenario(&text, Some(csv))
}

const HEADER: &str = "layer,kind,macs,forward_flops,activation_bytes,variable,shape,bytes\n";

/// One layer of 1e11 forward FLOP per sample with one 12.5 MB variable.
fn one_var() -> String {
    format!("{HEADER}l,dense,0,100000000000,4,l.w,3125000,12500000\n")
}

#[test]
fn one_worker_one_ps_one_variable() {
    // pull 12.5e6 B / 0.125 B/ns            = 1e8 ns
    // fetch 16 B / 0.125 B/ns               = 128 ns
    // forward 1e11 FLOP / 1e12 FLOP/s       = 1e8 ns
    // backward 2 x forward                  = 2e8 ns
    // push                                  = 1e8 ns
    // apply 3 x 12.5e6 B / 37.5 B/ns        = 1e6 ns (the request, 128 ns after the push,
    //                                         arrives while it runs)
    // Ready 16 B / 0.125 B/ns               = 128 ns (the release)
    // step                                  = 501_000_256 ns
    let r = run(&paper("workers = 1\nps = 1", &one_var(), ""));
    close(r.summary.step_time_s.p50, 0.501_000_256, 1e-8);
    close(r.summary.breakdown_s.compute, 0.3, 1e-8);
    // Waiting runs from the push's arrival to the release: 1e6 + 128 ns; the rest is
    // communication: the fetch, the pull and the push.
    close(r.summary.breakdown_s.exposed_comm, 0.200_000_128, 1e-8);
    close(r.summary.breakdown_s.wait, 0.001_000_128, 1e-6);
    // 1 sample per step.
    close(r.summary.throughput_samples_per_s, 1.0 / 0.501_000_256, 1e-8);
}

#[test]
fn incast_of_four_workers_on_one_ps_nic() {
    // 4 workers pull 12.5 MB each through one PS egress of 0.125 B/ns: each gets 1/4,
    // 4 x 12.5e6 / 0.125 = 4e8 ns; compute 3e8; the pushes share the PS ingress: 4e8;
    // one aggregated apply 1e6; 4 Readys share the PS egress: 4 x 16 / 0.125 = 512 ns, and
    // 4 fetches its ingress: 512 ns. step = 4e8 + 3e8 + 4e8 + 1e6 + 1024 = 1_101_001_024 ns.
    let s = paper("workers = 4\nps = 1", &one_var(), "");
    let r = run(&s);
    close(r.summary.step_time_s.p50, 1.101_001_024, 1e-8);
    assert_eq!(r.detail.worker_classes, 1);
    // Simulating each worker on its own gives exactly the same times (symmetry is exact).
    let each = simulate(&s, &SimOptions { no_classes: true, ..SimOptions::default() }).unwrap();
    assert_eq!(each.detail.worker_classes, 4);
    assert_eq!(each.steps, r.steps);
}

#[test]
fn round_robin_makes_one_shard_the_bottleneck_and_greedy_fixes_it() {
    // Variables a (10 MB), b (4 B), c (10 MB), d (4 B); no compute; 2 workers, 2 PS.
    // Round-robin: shard 0 holds a and c (20 MB). Its egress serves 2 workers x 20 MB at
    // 0.125 B/ns = 3.2e8 ns; pushes the same into its ingress: 3.2e8. Gradients go out in
    // reverse creation order (d, c, b, a), so c's apply (3 x 10 MB / 37.5 = 0.8e6 ns) runs
    // while a is still on the wire and only a's apply is exposed: 0.8e6. Shard 0's two 16-byte
    // Readys share its egress, the two fetches its ingress: 2 x 256 ns. Step = 640_800_512 ns.
    // Greedy: a on shard 0, c on shard 1: each worker receives 2 x 10 MB at 0.125 total,
    // 1.6e8; push 1.6e8; the applies run on both shards at once: 0.8e6. Step ~ 3.208e8.
    let csv = format!(
        "{HEADER}l,dense,0,0,4,l.a,2500000,10000000\nl,dense,0,0,4,l.b,1,4\nl,dense,0,0,4,l.c,2500000,10000000\nl,dense,0,0,4,l.d,1,4\n"
    );
    let rr = run(&paper("workers = 2\nps = 2\nplacement = \"round-robin\"", &csv, ""));
    let greedy = run(&paper("workers = 2\nps = 2\nplacement = \"greedy\"", &csv, ""));
    close(rr.summary.step_time_s.p50, 0.640_800_512, 1e-7);
    close(greedy.summary.step_time_s.p50, 0.3208, 1e-4);
    assert!(rr.summary.bottleneck.contains("PS shard 0"), "{}", rr.summary.bottleneck);
    assert!(
        rr.summary.bottleneck.contains("round-robin placement put 100% of the bytes on it"),
        "{}",
        rr.summary.bottleneck
    );
}

#[test]
fn full_duplex_directions_do_not_share_capacity() {
    // Co-located PS: shard 0 (X, 12.5 MB) on worker 0, shard 1 (Y, 12.5 MB) on worker 1.
    // Worker 0 pulls Y from worker 1 while worker 1 pulls X from worker 0: opposite
    // directions of the same link, each at the full 0.125 B/ns: 1e8 ns (2e8 if they shared).
    // Pushes likewise 1e8; applies 1e6 on both shards at once. Each worker's own shard
    // answers in memory; the other's Ready and the fetch from it cross the wire: 2 x 128 ns.
    // Step = 201_000_256 ns for both workers, the first step too.
    let csv = format!("{HEADER}l,dense,0,0,4,l.x,3125000,12500000\nl,dense,0,0,4,l.y,3125000,12500000\n");
    let r = run(&paper("workers = 2\nps = 2\nps_hosts = \"colocated\"", &csv, ""));
    for w in 0..2 {
        let steps: Vec<u64> = r.steps.iter().filter(|s| s.worker == w).map(|s| s.end_ns - s.start_ns).collect();
        assert_eq!(steps[0], 201_000_256, "worker {w}");
        assert_eq!(steps[1], 201_000_256, "worker {w}");
    }
}

#[test]
fn an_oversubscribed_uplink_slows_cross_rack_traffic() {
    // Racks of 2 hosts: workers 0-1 in rack 0, dedicated PS hosts in rack 1. One 12.5 MB
    // variable per shard. Uplinks carry 2 x 0.125 / oversubscription B/ns.
    // 4:1 -> 0.0625 B/ns shared by 4 connections (2 shards x 2 workers): 0.015625 each;
    //   pull 12.5e6 / 0.015625 = 8e8 ns, push 8e8, applies 1e6 in parallel, and 4 Readys
    //   (2 shards x 2 workers) down the uplink at 0.015625 each, 4 fetches up it: 2 x 1024 ns.
    //   Step = 1_601_002_048 ns.
    // 1:1 -> 0.25 B/ns: 0.0625 each, bound equally by the worker NIC (2 x 0.0625 = 0.125);
    //   pull 2e8, push 2e8, apply 1e6, Readys and fetches 2 x 16 / 0.0625 = 512 ns:
    //   401_000_512 ns.
    let csv = format!("{HEADER}l,dense,0,0,4,l.x,3125000,12500000\nl,dense,0,0,4,l.y,3125000,12500000\n");
    let net = |o: &str| format!("switch = \"two-tier\"\nhosts_per_rack = 2\noversubscription = {o}");
    let over = run(&paper("workers = 2\nps = 2", &csv, &net("4.0")));
    let flat = run(&paper("workers = 2\nps = 2", &csv, &net("1.0")));
    close(over.summary.step_time_s.p50, 1.601_002_048, 1e-8);
    close(flat.summary.step_time_s.p50, 0.401_000_512, 1e-8);
    // Both rack links are busy half the time (pulls down, pushes up): either is named.
    let b = &over.summary.bottleneck;
    assert!(b.starts_with("rack ") && b.contains("busy 50%") && b.contains("4:1 oversubscription"), "{b}");
}

#[test]
fn one_slow_worker_under_sync_async_and_backup() {
    // 4 workers, one 3x slower; compute 3e11 FLOP = 0.3 s (0.9 s for the slow one); one
    // 4-byte variable so the network is negligible (~100 ns).
    // sync: every step waits for the slow worker: p50 ~ 0.9 s.
    // backup (1 backup worker): the 3 fast workers' gradients suffice: p50 ~ 0.3 s.
    // async: nobody waits: 3 of 4 workers step in 0.3 s (p50), the slow one in 0.9 s (p99).
    let csv = format!("{HEADER}l,dense,0,100000000000,4,l.w,1,4\n");
    let slow = "[faults]\nstragglers = { count = 1, slowdown = 3.0 }";
    let sync = run(&paper("workers = 4\nps = 1\nmode = \"sync\"", &csv, slow));
    let backup = run(&paper("workers = 4\nps = 1\nmode = \"backup\"\nbackup_workers = 1", &csv, slow));
    let asynchronous = run(&paper("workers = 4\nps = 1\nmode = \"async\"", &csv, slow));
    close(sync.summary.step_time_s.p50, 0.9, 1e-5);
    close(backup.summary.step_time_s.p50, 0.3, 1e-5);
    close(asynchronous.summary.step_time_s.p50, 0.3, 1e-5);
    close(asynchronous.summary.step_time_s.p99, 0.9, 1e-5);
    // Sync fast workers wait 0.6 s of every 0.9 s step for the slow one.
    let fast = sync.steps.iter().find(|r| r.worker == 0).unwrap();
    close(fast.wait_ns as f64, 0.6e9, 1e-5);
    assert!(backup.summary.throughput_samples_per_s > 2.0 * sync.summary.throughput_samples_per_s);
    // Async: fast workers keep stepping while the slow one computes: 3 x (1 / 0.3) + 1 / 0.9 =
    // 11.1 worker-steps/s against 4 / 0.9 = 4.4 in sync (2.5x), and the run still does `steps`
    // updates per worker on average, the slow worker about a tenth of them (regression: every
    // worker used to run `steps` steps, so async with a straggler came out slower than sync).
    let by = |w: u32| asynchronous.steps.iter().filter(|r| r.worker == w).count();
    assert_eq!(asynchronous.steps.len() as u64, 4 * asynchronous.summary.steps);
    assert!(by(0) >= 2 * by(3), "fast {} slow {}", by(0), by(3));
    let ratio = asynchronous.summary.throughput_samples_per_s / sync.summary.throughput_samples_per_s;
    assert!(ratio > 2.0 && ratio < 2.6, "async / sync throughput {ratio}");
    assert!(sync.summary.bottleneck.contains("waiting for aggregation"), "{}", sync.summary.bottleneck);
}

#[test]
fn workers_sharing_two_cores_compute_at_half_speed() {
    // 4 workers, each 0.3 s of compute per step on a core of its own, share 2 cores: each
    // gets half a core, so a step's compute takes 0.6 s (network negligible: 4-byte variable).
    let csv = format!("{HEADER}l,dense,0,100000000000,4,l.w,1,4\n");
    let alone = run(&paper("workers = 4\nps = 1", &csv, ""));
    close(alone.summary.step_time_s.p50, 0.3, 1e-5);
    let text = "batch = 1\n[model]\nlayers = \"model.csv\"\n\
         [hardware]\ngpu = \"paper-gpu\"\nefficiency = 1.0\nshared_cores = 2\n\
         [hardware.gpu_spec]\nfp32 = \"1 TFLOP/s\"\nmemory = \"64 GiB\"\nsource = \"test\"\n\
         [network]\nnic = \"1 Gbit/s\"\nlatency = \"0 us\"\ngoodput = 1.0\nmessage_overhead = \"0 ns\"\n\
         [topology]\nworkers = 4\nps = 1\n[training]\nsteps = 5\n";
    let shared = run(&scenario(text, Some(&csv)));
    close(shared.summary.step_time_s.p50, 0.6, 1e-5);
}

#[test]
fn moving_bytes_on_one_shared_core_halves_a_link_that_needs_two() {
    // One worker and one PS share 1 core. A 125 MB variable at 1 Gbit/s (goodput 1) moves in
    // 1 s per direction. At 16 CPU ns per byte the link would need 125e6 x 16 ns = 2 s of the
    // one core per second: bytes move at 1 / 16 B/ns = 62.5 MB/s instead, so each direction
    // takes 2 s and the step 2 s longer (compute, 4-byte activations, is ~0).
    let csv = format!("{HEADER}l,dense,0,1000,4,l.w,31250000,125000000\n");
    let step = |cpu: &str| {
        let text = format!(
            "batch = 1\n[model]\nlayers = \"model.csv\"\n\
             [hardware]\ngpu = \"paper-gpu\"\nefficiency = 1.0\nshared_cores = 1\n\
             [hardware.gpu_spec]\nfp32 = \"1 TFLOP/s\"\nmemory = \"64 GiB\"\nsource = \"test\"\n\
             [network]\nnic = \"1 Gbit/s\"\nlatency = \"0 us\"\ngoodput = 1.0\nmessage_overhead = \"0 ns\"\n{cpu}\n\
             [topology]\nworkers = 1\nps = 1\n[training]\nsteps = 3\n"
        );
        run(&scenario(&text, Some(&csv))).summary.step_time_s.p50
    };
    let free = step("");
    let costly = step("cpu_ns_per_byte = 16.0");
    close(costly - free, 2.0, 1e-3);
}

/// Compute time of every step of one worker with `faults` (one 4-byte variable: the network
/// is negligible), over `steps` steps.
fn compute_times(faults: &str, steps: u64) -> Vec<f64> {
    let csv = format!("{HEADER}l,dense,0,100000000000,4,l.w,1,4\n");
    let s = paper_steps("workers = 1\nps = 1", &csv, &format!("[faults]\n{faults}"), steps);
    let mut v: Vec<f64> = run(&s).steps.iter().map(|r| r.compute_ns as f64 / 1e9).collect();
    v.sort_by(f64::total_cmp);
    v
}

#[test]
fn noise_models_keep_the_mean_and_differ_in_the_tail() {
    // Compute is 0.3 s a step (3 x 1e11 FLOP at 1 TFLOP/s). With a coefficient of variation of
    // 0.3 both noises keep the mean at 0.3 s; the log-normal is skewed: its p99 / p50 is
    // exp(2.33 s) / 1 with s^2 = ln(1.09): 1.99, against (1 + 2.33 x 0.3) / 1 = 1.70 for the
    // normal.
    let n = 4000;
    let q = |v: &[f64], p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let g = compute_times("jitter = 0.3", n);
    let l = compute_times("jitter = 0.3\nnoise = \"lognormal\"", n);
    assert!((mean(&g) / 0.3 - 1.0).abs() < 0.03 && (mean(&l) / 0.3 - 1.0).abs() < 0.03, "{} {}", mean(&g), mean(&l));
    let (rg, rl) = (q(&g, 0.99) / q(&g, 0.5), q(&l, 0.99) / q(&l, 0.5));
    eprintln!("p99/p50 normal {rg:.3}, log-normal {rl:.3}, means {:.4} {:.4}", mean(&g), mean(&l));
    assert!((rg - 1.70).abs() < 0.1 && (rl - 1.99).abs() < 0.15, "p99/p50 normal {rg:.2}, log-normal {rl:.2}");
    // Heavy-tailed: 2% of steps 10x slower (nothing else slows a step by more than 3x here).
    let h = compute_times("jitter = 0.05\nnoise = \"heavy-tailed\"\ntail = { probability = 0.02, slowdown = 10.0 }", n);
    let slow = h.iter().filter(|&&t| t > 0.9).count() as f64 / n as f64;
    assert!((slow - 0.02).abs() < 0.008, "slow share {slow}");
}

#[test]
fn slow_node_episodes_slow_their_share_of_the_steps() {
    // Episodes of 3 s every 9 s on average slow a quarter of the time (3 / (9 + 3)) by 2x; a
    // step that starts inside one computes 0.6 s instead of 0.3 s. Slowed steps last longer,
    // so they are a little less than a quarter of the steps: time share 0.25 = 0.6 k /
    // (0.6 k + 0.3 (1 - k)) gives k = 1/7 of the steps, about 0.14 (episodes that begin during
    // a step add a little).
    let v = compute_times("episodes = { every = \"9 s\", duration = \"3 s\", slowdown = 2.0 }", 6000);
    let slow = v.iter().filter(|&&t| t > 0.45).count() as f64 / v.len() as f64;
    eprintln!("episodes: slow share {slow:.3}");
    assert!((0.11..0.19).contains(&slow), "share of slow steps {slow}");
    // Deterministic in the seed.
    assert_eq!(v, compute_times("episodes = { every = \"9 s\", duration = \"3 s\", slowdown = 2.0 }", 6000));
}

/// A profile of a paper GPU: one GEMM class of 10 TFLOP/s, copies in at 10 GB/s and out at
/// 20 GB/s (5 us per call), launches of 3 us, waits of 10 us, memory-bound kernels at 1 TB/s.
const GPU_PROFILE: &str = r#"
raw = []
[machine]
cpu = "paper"
cores = 2
memory = "24 GiB"
date = "2026-12-01T00:00:00Z"
launcher = "local"
[fitted]
compute_rate = "1 GFLOP/s"
cores = 2
goodput = 1.0
message_overhead = "0 ns"
ps_memory_bandwidth = "37.5 GB/s"
startup = "0 ns"
[fitted.gpu]
device = "paper GPU"
compute_capability = "9.0"
h2d = "10 GB/s"
d2h = "20 GB/s"
copy_latency = "5 us"
launch = "3 us"
sync = "10 us"
elementwise = "1 TB/s"
gemm = [{ precision = "fp32", m = 1000, k = 100, n = 50, rate = "10 TFLOP/s" }]
"#;

fn gpu_scenario(workers: u32, extra_hardware: &str) -> Scenario {
    let tmp = tempfile::Builder::new().prefix("topolab-sim-test-").tempdir().unwrap();
    let dir = tmp.path();
    // One layer: W of 100 x 50 (20 kB), 1000 GEMM rows per sample: 5e6 MAC.
    std::fs::write(dir.join("model.csv"), format!("{HEADER}l,dense,5000000,10000000,200000,l.w,100x50,20000\n"))
        .unwrap();
    std::fs::write(dir.join("profile.toml"), GPU_PROFILE).unwrap();
    let text = format!(
        "batch = 1\n[model]\nlayers = \"model.csv\"\n\
         [hardware]\ngpu = \"paper-gpu\"\nprofile = \"profile.toml\"\n{extra_hardware}\n\
         [hardware.gpu_spec]\nfp32 = \"1 TFLOP/s\"\nmemory = \"64 GiB\"\nsource = \"test\"\n\
         [network]\nnic = \"1 Gbit/s\"\nlatency = \"0 us\"\n\
         [topology]\nworkers = {workers}\nps = 1\n[training]\nsteps = 5\n"
    );
    Scenario::parse(&text, "test.toml", "test", Some(dir)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_gpu_profile_times_each_layer_by_its_kernels_and_copies() {
    // m = 1000, k = 100, n = 50 at 10 TFLOP/s (core's profile tests work the parts out):
    // forward: W in (5 + 2 us), GEMM (3 + 1 us), wait (10 us)                          = 21 us
    // backward: axpy, dot, scal (9 us launches + 1.4 us of bytes at 1 TB/s), two waits
    // (20 us), dW and dX GEMMs (2 x 4 us), dW out (5 + 1 us)                          = 44.4 us
    let r = run(&gpu_scenario(1, ""));
    close(r.summary.breakdown_s.compute, 65.4e-6, 1e-6);
    // Two workers time-sharing one GPU: both compute at once, each at half the device.
    let shared = run(&gpu_scenario(2, "shared_gpus = 1"));
    close(shared.summary.breakdown_s.compute, 2.0 * 65.4e-6, 1e-3);
    // Each on its own GPU: as fast as one.
    let own = run(&gpu_scenario(2, ""));
    close(own.summary.breakdown_s.compute, 65.4e-6, 1e-6);
}

#[test]
fn network_noise_stretches_each_host_s_transfers_by_a_mean_one_factor_per_step() {
    // One worker, one PS (the first case): compute 0.3 s, pull and push 0.1 s each. With
    // network noise of CV 0.3 the pull and push of a step share one log-normal factor f of
    // mean 1: step = 0.3 + 0.2 f + 0.001. Over 400 steps the mean of f is 1 within
    // 3 x 0.3 / sqrt(400) = 4.5%, so the mean step within 0.2 x 4.5% / 0.5 = 1.8%.
    let noisy = |seed: u64| {
        let extra = "[faults]\nnetwork_noise = 0.3\n[training]\nsteps = 400\n[topology]\nworkers = 1\nps = 1\n";
        scenario(
            &format!(
                "seed = {seed}\nbatch = 1\n[model]\nlayers = \"model.csv\"\n\
                 [hardware]\ngpu = \"paper-gpu\"\nefficiency = 1.0\nps_memory_bandwidth = \"37.5 GB/s\"\n\
                 [hardware.gpu_spec]\nfp32 = \"1 TFLOP/s\"\nmemory = \"64 GiB\"\nsource = \"test\"\n\
                 [network]\nnic = \"1 Gbit/s\"\nlatency = \"0 us\"\ngoodput = 1.0\nmessage_overhead = \"0 ns\"\n{extra}"
            ),
            Some(&one_var()),
        )
    };
    let r = run(&noisy(1));
    close(r.summary.step_time_s.mean, 0.501, 0.018);
    close(r.summary.breakdown_s.compute, 0.3, 1e-6);
    // The spread is the network's: p90 - p10 of 0.2 f, f log-normal with CV 0.3, is about
    // 0.2 x (1.43 - 0.67) = 0.15 s (sigma^2 = ln 1.09: quantiles exp(-sigma^2/2 +- 1.2816 sigma)).
    assert!(r.summary.step_time_s.p90 - r.summary.step_time_s.p50 > 0.04, "{:?}", r.summary.step_time_s);
    // Deterministic for a seed, different for another.
    assert_eq!(run(&noisy(1)).summary.step_time_s, r.summary.step_time_s);
    assert_ne!(run(&noisy(2)).summary.step_time_s.p90, r.summary.step_time_s.p90);
    // Four synchronous workers on one PS NIC: without noise their pulls, computes and pushes
    // run in lock-step (4e8 + 3e8 + 4e8 ns). Noise desynchronizes them: a worker whose pull was
    // short computes and pushes (PS ingress) while the others still pull (PS egress), so the
    // full-duplex link is better used and the mean step is shorter, not longer.
    let quiet = run(&paper_steps("workers = 4\nps = 1", &one_var(), "", 100)).summary.step_time_s.mean;
    let loud = run(&paper_steps("workers = 4\nps = 1", &one_var(), "[faults]\nnetwork_noise = 0.3", 100))
        .summary
        .step_time_s
        .mean;
    assert!(loud < quiet * 0.97, "noise {loud} vs none {quiet}");
}
