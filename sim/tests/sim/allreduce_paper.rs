//! All-reduce cases worked out on paper. Common setting unless a test says otherwise: a GPU of
//! exactly 1 TFLOP/s at efficiency 1 with 37.5 GB/s of memory, batch 1, NICs of 1 Gbit/s =
//! 0.125 bytes/ns with goodput 1, no per-message overhead, plain SGD (the update touches 3 x
//! the model's bytes: 12.5 MB -> 1e6 ns).
//!
//! Ring all-reduce of S bytes among N ranks over links of bandwidth B and latency L: 2(N-1)
//! rounds, each moving one chunk of S/N over every link at once, so 2(N-1)/N x S/B + 2(N-1) L.
//! Before it, the negotiation: the ranks' reports that the gradients are ready reach the
//! coordinator L later, and its order reaches the ranks L after that: 2 L per bucket (with no
//! per-message overhead).

use super::*;
use topolab_sim::{SimOptions, simulate};

/// `tail` goes after `[training]`'s `steps` (more training fields, then other sections).
fn ring_with(workers: u32, csv: &str, latency: &str, extra_topology: &str, extra: &str, tail: &str) -> Scenario {
    let text = format!(
        "batch = 1\n[model]\nlayers = \"model.csv\"\n\
         [hardware]\ngpu = \"paper-gpu\"\nefficiency = 1.0\n{extra}\n\
         [hardware.gpu_spec]\nfp32 = \"1 TFLOP/s\"\nmemory = \"64 GiB\"\nmemory_bandwidth = \"37.5 GB/s\"\nsource = \"test\"\n\
         [network]\nnic = \"1 Gbit/s\"\nlatency = \"{latency}\"\ngoodput = 1.0\nmessage_overhead = \"0 ns\"\n\
         [topology]\nkind = \"all-reduce\"\nworkers = {workers}\n{extra_topology}\n[training]\nsteps = 4\n{tail}\n"
    );
    scenario(&text, Some(csv))
}

fn ring(workers: u32, csv: &str, latency: &str, extra_topology: &str, extra: &str) -> Scenario {
    ring_with(workers, csv, latency, extra_topology, extra, "")
}

const HEADER: &str = "layer,kind,macs,forward_flops,activation_bytes,variable,shape,bytes\n";

/// One layer of 1e11 forward FLOP per sample with one 12.5 MB variable: forward 1e8 ns,
/// backward 2e8 ns.
fn one_var() -> String {
    format!("{HEADER}l,dense,0,100000000000,4,l.w,3125000,12500000\n")
}

/// Two such layers.
fn two_vars() -> String {
    format!("{HEADER}a,dense,0,100000000000,4,a.w,3125000,12500000\nb,dense,0,100000000000,4,b.w,3125000,12500000\n")
}

#[test]
fn ring_of_four_hosts_takes_two_n_minus_one_over_n_of_s_over_b_plus_latencies() {
    // compute 3e8; the reports reach the coordinator at 3e8 + 5e4 and the order the ranks at
    // 3e8 + 1e5 (no fusion cycle); ring: 2(4-1)/4 x 12.5e6 / 0.125 = 1.5e8, plus 6 x 50 us =
    // 3e5; update 1e6. step = 3e8 + 1e5 + 1.5e8 + 3e5 + 1e6 = 451_400_000 ns, every step.
    let r = run(&ring(4, &one_var(), "50 us", "fusion_cycle = \"0 ms\"", ""));
    close(r.summary.step_time_s.p10, 0.4514, 1e-9);
    close(r.summary.step_time_s.p99, 0.4514, 1e-9);
    close(r.summary.breakdown_s.compute, 0.3, 1e-9);
    close(r.summary.breakdown_s.exposed_comm, 0.1514, 1e-9);
    assert_eq!(r.summary.breakdown_s.wait, 0.0);
    assert_eq!(r.summary.ps, 0);
    // Each host sends and receives 2(N-1)/N x S.
    assert!(r.steps.iter().all(|s| s.bytes_sent == 18_750_000 && s.bytes_received == 18_750_000));
    // Every worker NIC is busy 1.5e8 of each 4.514e8 ns.
    close(r.summary.utilization.worker_nic_out_max.unwrap(), 1.5e8 / 4.514e8, 1e-6);
    assert_eq!(r.summary.utilization.ps_nic_in_max, None);
    assert!(r.summary.bottleneck.contains("ring"), "{}", r.summary.bottleneck);
}

#[test]
fn more_ranks_cost_latency_not_bandwidth() {
    // N = 16: 2 x 15/16 x 1e8 = 1.875e8, plus 30 x 1 ms = 3e7, after 2 ms of negotiation:
    // step 3e8 + 2e6 + 2.175e8 + 1e6.
    let r = run(&ring(16, &one_var(), "1 ms", "fusion_cycle = \"0 ms\"", ""));
    close(r.summary.step_time_s.p50, 0.5205, 1e-9);
    // The latency-bound ring says so when no link is busy enough.
    let r = run(&ring(16, &format!("{HEADER}l,dense,0,100000000000,4,l.w,100,400\n"), "1 ms", "", ""));
    assert!(r.summary.bottleneck.starts_with("GPU compute") || r.summary.bottleneck.contains("latency"));
}

#[test]
fn buckets_overlap_backward() {
    // Fusion off (threshold 0), no cycle, no latency. Forward 2e8. Backward of b ends at 4e8:
    // its bucket is reduced during a's backward (1.5e8, done at 5.5e8); a's ends at 6e8, its
    // bucket takes 1.5e8: 7.5e8; update of 25 MB: 2e6. Step 752_000_000 ns.
    let t = "fusion_buffer = \"0 B\"\nfusion_cycle = \"0 ms\"";
    let r = run(&ring(4, &two_vars(), "0 us", t, ""));
    close(r.summary.step_time_s.p50, 0.752, 1e-9);
    // Without overlap both wait for the end of backward (6e8) and go one after the other:
    // 6e8 + 2 x 1.5e8 + 2e6.
    let s = ring_with(4, &two_vars(), "0 us", t, "", "overlap = false");
    close(run(&s).summary.step_time_s.p50, 0.902, 1e-9);
    // Fusion saves latency: without overlap and 1 ms of latency, two buckets pay 2 x 6
    // latencies and an order each (the reports once: both gradients were ready at 6e8):
    // 6e8 + 1e6 + 2 x (1e6 + 1.5e8 + 6e6) + 2e6; one fused bucket of 25 MB pays 6 and one
    // negotiation (6e8 + 2e6 + 3e8 + 6e6 + 2e6).
    let s = ring_with(4, &two_vars(), "1 ms", t, "", "overlap = false");
    close(run(&s).summary.step_time_s.p50, 0.917, 1e-9);
    let fused = "fusion_buffer = \"64 MiB\"\nfusion_cycle = \"0 ms\"";
    let s = ring_with(4, &two_vars(), "1 ms", fused, "", "overlap = false");
    close(run(&s).summary.step_time_s.p50, 0.910, 1e-9);
}

#[test]
fn buckets_wait_for_the_fusion_cycle() {
    // A 1 s cycle: the first tick after b's gradient (4e8) is at 1e9, when a's is ready too:
    // one bucket of 25 MB, 3e8, then the update: step 0 ends at 1.302e9. The next cycle starts
    // at 2e9 (a cycle after the first), after step 1's backward (1.302e9 + 6e8): step 1 ends
    // at 2.302e9, 1 s later, and so on.
    let r = run(&ring(4, &two_vars(), "0 us", "fusion_buffer = \"64 MiB\"\nfusion_cycle = \"1 s\"", ""));
    let w0: Vec<u64> = r.steps.iter().filter(|s| s.worker == 0).map(|s| s.end_ns - s.start_ns).collect();
    assert_eq!(w0, vec![1_302_000_000, 1_000_000_000, 1_000_000_000, 1_000_000_000]);
}

#[test]
fn gpus_of_a_host_are_neighbours_on_the_ring() {
    // 2 hosts x 2 GPUs = 4 ranks; the hops inside a host cross its bus (fast), the two
    // between hosts cross the NICs: the same 6 rounds of S/4 at the NIC rate as 4 hosts.
    let r = run(&ring(2, &one_var(), "0 us", "fusion_cycle = \"0 ms\"", "gpus_per_host = 2\nhost_bus = \"nvlink2\""));
    close(r.summary.step_time_s.p50, 0.451, 1e-9);
    assert!(r.steps.iter().all(|s| s.bytes_sent == 18_750_000), "{:?}", r.steps[0]);
}

#[test]
fn every_worker_waits_for_the_slowest() {
    // One straggler at half speed: its backward ends at 6e8, the others' at 3e8; everyone's
    // step is 6e8 + 1.5e8 + 1e6, and the fast workers wait 3e8 of it.
    let faults = "[faults]\nstragglers = { count = 1, slowdown = 2.0 }";
    let s = ring_with(4, &one_var(), "0 us", "fusion_cycle = \"0 ms\"", "", faults);
    let r = run(&s);
    close(r.summary.step_time_s.p50, 0.751, 1e-9);
    let fast = r.steps.iter().find(|x| x.worker == 0).unwrap();
    assert_eq!(fast.wait_ns, 300_000_000);
    let slow = r.steps.iter().find(|x| x.worker == 3).unwrap();
    assert_eq!(slow.wait_ns, 0);
    assert!(r.summary.bottleneck.contains("slowest"), "{}", r.summary.bottleneck);
}

#[test]
fn identical_ranks_simulated_once_or_each_on_its_own_agree_exactly() {
    // Lock-step (one rank stands for all) against every rank simulated: the same records.
    for (csv, t) in [(one_var(), ""), (two_vars(), "fusion_buffer = \"0 B\"")] {
        let s = ring(8, &csv, "50 us", t, "");
        let once = run(&s);
        let each = simulate(&s, &SimOptions { no_classes: true, ..SimOptions::default() }).unwrap();
        assert_eq!(once.detail.worker_classes, 1);
        assert_eq!(each.detail.worker_classes, 8);
        assert_eq!(once.steps, each.steps);
        assert_eq!(once.summary.step_time_s, each.summary.step_time_s);
        assert_eq!(once.summary.utilization, each.summary.utilization);
    }
}

#[test]
fn hierarchical_moves_fewer_nic_bytes_than_a_flat_ring_over_multi_gpu_hosts() {
    // 2 hosts x 2 GPUs, a 150 GB/s bus (nvlink2), no latency, no cycle. Hierarchical:
    // reduce-scatter in the host, 1 round of 6.25 MB per GPU, both GPUs' hops sharing the bus:
    // 6.25e6 / 75 = 83_334 ns (rounded up); across hosts, the 2 GPUs' rings share each NIC,
    // 2 rounds of 3.125 MB at 0.0625 B/ns: 1e8; all-gather in the host: 83_334. Step: 3e8 +
    // 83_334 + 1e8 + 83_334 + 1e6 = 401_166_668 ns. A NIC carries 2 (N - 1)/N x S = 12.5 MB.
    let hw = "gpus_per_host = 2\nhost_bus = \"nvlink2\"";
    let t = "algorithm = \"hierarchical\"\nfusion_cycle = \"0 ms\"";
    let s = ring(2, &one_var(), "0 us", t, hw);
    let r = run(&s);
    close(r.summary.step_time_s.p50, 0.401_166_668, 1e-9);
    assert!(r.steps.iter().all(|x| x.bytes_sent == 12_500_000), "{:?}", r.steps[0]);
    // The flat ring over the same 4 GPUs: 6 rounds of 3.125 MB through the NICs (1.5e8), and
    // 2(4-1)/4 x S = 18.75 MB per NIC.
    let flat = run(&ring(2, &one_var(), "0 us", "fusion_cycle = \"0 ms\"", hw));
    assert!(flat.summary.step_time_s.p50 > r.summary.step_time_s.p50 + 0.049, "{}", flat.summary.step_time_s.p50);
    // One rank standing for all gives what every rank on its own gives.
    let each = simulate(&s, &SimOptions { no_classes: true, ..SimOptions::default() }).unwrap();
    assert_eq!(r.steps, each.steps);
    assert_eq!(each.detail.worker_classes, 4);
    assert_eq!(r.detail.worker_classes, 1);
}

#[test]
fn a_flat_ring_over_multi_gpu_hosts_simulates_one_hosts_gpus_exactly() {
    // One host's GPUs stand for every host (the last one's hop leaves the host, into the
    // first GPU of the next, which host 0's first GPU stands for): the same records as every
    // rank on its own, with latency, negotiation and several buckets.
    for (hosts, gpus, latency, t) in
        [(2, 2, "0 us", "fusion_cycle = \"0 ms\""), (4, 4, "1 ms", "fusion_buffer = \"0 B\""), (3, 2, "50 us", "")]
    {
        let hw = format!("gpus_per_host = {gpus}\nhost_bus = \"nvlink2\"");
        let s = ring(hosts, &two_vars(), latency, t, &hw);
        let once = run(&s);
        let each = simulate(&s, &SimOptions { no_classes: true, ..SimOptions::default() }).unwrap();
        assert_eq!(once.detail.worker_classes, gpus as usize, "{hosts} x {gpus}");
        assert_eq!(each.detail.worker_classes, (hosts * gpus) as usize);
        assert_eq!(once.steps, each.steps, "{hosts} x {gpus}");
        assert_eq!(once.summary.step_time_s, each.summary.step_time_s);
        assert_eq!(once.summary.utilization, each.summary.utilization);
    }
}

#[test]
fn hierarchical_pays_latency_per_host_not_per_gpu() {
    // 4 hosts x 4 GPUs with 1 ms of latency and a tiny bucket, so latency is all there is. The
    // flat ring's 30 rounds form a chain through 30 consecutive ranks, and every 4th hop
    // leaves a host: 8 latencies (8 ms). Hierarchical: 2 x (4 - 1) = 6 rounds across hosts,
    // 6 ms; the rounds inside the hosts cross the bus without latency. Both negotiate first
    // (a report and an order between hosts: 2 ms).
    let tiny = format!("{HEADER}l,dense,0,100000000000,4,l.w,100,400\n");
    let hw = "gpus_per_host = 4\nhost_bus = \"nvlink2\"";
    let flat = run(&ring(4, &tiny, "1 ms", "fusion_cycle = \"0 ms\"", hw));
    let hier = run(&ring(4, &tiny, "1 ms", "algorithm = \"hierarchical\"\nfusion_cycle = \"0 ms\"", hw));
    let (f, h) = (flat.summary.breakdown_s.exposed_comm, hier.summary.breakdown_s.exposed_comm);
    assert!((f - 0.010).abs() < 0.0001 && (h - 0.008).abs() < 0.0001, "flat {f} s, hierarchical {h} s");
}

#[test]
fn a_double_binary_tree_pays_latency_by_depth() {
    // 16 hosts, 1 ms of latency, a tiny bucket (one chunk per tree): up 4 levels of the heap
    // tree and down again, 8 latencies (8 ms), against the ring's 30 (30 ms), each after a
    // negotiation of 2 latencies.
    let tiny = format!("{HEADER}l,dense,0,100000000000,4,l.w,100,400\n");
    let t = |a: &str| format!("algorithm = \"{a}\"\nfusion_cycle = \"0 ms\"");
    let tree = run(&ring(16, &tiny, "1 ms", &t("tree"), ""));
    let flat = run(&ring(16, &tiny, "1 ms", &t("ring"), ""));
    // The last rank to hold the sum (ranks nearer the roots hold it sooner).
    let last = |r: &SimRun| r.steps.iter().map(|x| x.end_ns - x.start_ns - x.compute_ns).max().unwrap() as f64 / 1e9;
    let (tr, fl) = (last(&tree), last(&flat));
    assert!((tr - 0.010).abs() < 0.0001 && (fl - 0.032).abs() < 0.0001, "tree {tr} s, ring {fl} s");
}

#[test]
fn a_double_binary_tree_moves_about_the_ring_s_bytes() {
    // 2 ranks, 12.5 MB, no latency: each half (6.25 MB, 12 chunks of 520_834 B) goes up one
    // tree and down the other way, so each NIC carries 12.5 MB each way, as the ring does
    // (2 (2-1)/2 x S): 1e8 ns when up and down overlap, plus at most the first chunk's wait
    // (520_834 / 0.125 ns at most twice, sharing the link).
    let t = "algorithm = \"tree\"\nfusion_cycle = \"0 ms\"";
    let r = run(&ring(2, &one_var(), "0 us", t, ""));
    let comm = r.summary.breakdown_s.exposed_comm - 0.001;
    assert!((0.1..=0.1 + 2.0 * 520_834.0 / 0.125e9 + 1e-6).contains(&comm), "{comm}");
    assert!(
        r.steps.iter().all(|x| x.bytes_sent == 12 * 520_834 * 2 && x.bytes_received == x.bytes_sent),
        "{:?}",
        r.steps[0]
    );
    // 8 ranks: each tree carries its half over its 7 edges both ways, 2 x 7 x S / 2 per tree,
    // as much in all as the ring's 8 x 2 (8-1)/8 x S (within the chunks' padding), though not
    // spread evenly: ranks inside a tree send to two children.
    let tree8 = run(&ring(8, &one_var(), "0 us", t, ""));
    let ring8 = run(&ring(8, &one_var(), "0 us", "fusion_cycle = \"0 ms\"", ""));
    let total = |r: &SimRun| r.steps.iter().filter(|x| x.step == 0).map(|x| x.bytes_sent).sum::<u64>() as f64;
    let (a, b) = (total(&tree8), total(&ring8));
    assert!((a / b - 1.0).abs() < 1e-4, "tree {a} B, ring {b} B");
}

#[test]
fn ranks_sharing_two_cores_compute_and_update_at_half_speed() {
    // 4 ranks share 2 cores: each gets half a core, so forward (1e8) and backward (2e8) take
    // 6e8, and the update (1e6) 2e6; the ring's bytes cost no CPU here: 1.5e8 as on its own.
    // Step: 6e8 + 1.5e8 + 2e6 = 752_000_000 ns.
    let t = "fusion_cycle = \"0 ms\"";
    let r = run(&ring(4, &one_var(), "0 us", t, "shared_cores = 2"));
    close(r.summary.step_time_s.p50, 0.752, 1e-9);
    close(r.summary.breakdown_s.compute, 0.6, 1e-9);
    assert!(r.summary.bottleneck.to_lowercase().contains("compute"), "{}", r.summary.bottleneck);
    // With a core each, sharing changes nothing: 3e8 + 1.5e8 + 1e6, the ring on its own.
    let own = run(&ring(4, &one_var(), "0 us", t, ""));
    let four = run(&ring(4, &one_var(), "0 us", t, "shared_cores = 4"));
    close(own.summary.step_time_s.p50, 0.451, 1e-9);
    let times = |r: &SimRun| r.steps.iter().map(|x| (x.worker, x.start_ns, x.end_ns, x.compute_ns)).collect::<Vec<_>>();
    assert_eq!(times(&own), times(&four));
}

#[test]
fn cores_that_keep_half_their_rate_when_all_compute_halve_shared_compute_again() {
    // A profile with the paper GPU's rate whose 2 cores keep half their rate each when both
    // compute (parallel_efficiency 0.5): the machine gives one core's work in all. 4 ranks:
    // forward and backward 4 x 3e8 = 1.2e9, the update 4 x 1e6; the ring as on its own, 1.5e8.
    // Step: 1.2e9 + 1.5e8 + 4e6 = 1_354_000_000 ns.
    let with_efficiency = |mut s: Scenario, e: Option<f64>| {
        let mut fitted = topolab_core::profile::Fitted::with_rates(
            topolab_core::units::FlopRate(1e12),
            1.0,
            topolab_core::units::Time::ZERO,
            topolab_core::units::BitRate::from_bytes_per_sec(37.5e9),
        );
        fitted.parallel_efficiency = e;
        s.profile = Some(test_profile(fitted));
        run(&s)
    };
    let t = "fusion_cycle = \"0 ms\"";
    let half = with_efficiency(ring(4, &one_var(), "0 us", t, "shared_cores = 2"), Some(0.5));
    close(half.summary.step_time_s.p50, 1.354, 1e-9);
    // Without the field, the cores are independent: the 752_000_000 ns of half a core each.
    let whole = with_efficiency(ring(4, &one_var(), "0 us", t, "shared_cores = 2"), None);
    close(whole.summary.step_time_s.p50, 0.752, 1e-9);
    // 2 ranks on 4 such cores: the machine gives 2 cores' work, so each rank still has a core
    // of its own, as without the field (3e8 + 5e7 + 1e6 = 401_000_000 ns).
    let two = with_efficiency(ring(2, &one_var(), "0 us", t, "shared_cores = 4"), Some(0.5));
    close(two.summary.step_time_s.p50, 0.401, 1e-9);
}

#[test]
fn moving_ring_bytes_on_one_shared_core_slows_the_ring() {
    // 2 ranks on 1 core. Compute: 2 x 3e8 of core time, 6e8; update 2 x 1e6, 2e6. The ring of
    // 2 sends one 6.25 MB chunk each way per round, 2 rounds. Free CPU: 6.25e6 / 0.125 = 5e7
    // a round, 1e8 in all. At 16 CPU ns per byte both chunks together would need 2 x 16 x
    // 0.125 = 4 cores: they move at 1 / 32 B/ns, 2e8 a round, 4e8 in all: 3e8 more per step.
    let t = "fusion_cycle = \"0 ms\"";
    let free = run(&ring(2, &one_var(), "0 us", t, "shared_cores = 1")).summary.step_time_s.p50;
    close(free, 0.702, 1e-9);
    let text = |cpu: &str| {
        format!(
            "batch = 1\n[model]\nlayers = \"model.csv\"\n\
             [hardware]\ngpu = \"paper-gpu\"\nefficiency = 1.0\nshared_cores = 1\n\
             [hardware.gpu_spec]\nfp32 = \"1 TFLOP/s\"\nmemory = \"64 GiB\"\nmemory_bandwidth = \"37.5 GB/s\"\nsource = \"test\"\n\
             [network]\nnic = \"1 Gbit/s\"\nlatency = \"0 us\"\ngoodput = 1.0\nmessage_overhead = \"0 ns\"\n{cpu}\n\
             [topology]\nkind = \"all-reduce\"\nworkers = 2\nfusion_cycle = \"0 ms\"\n[training]\nsteps = 4\n"
        )
    };
    let costly = run(&scenario(&text("cpu_ns_per_byte = 16.0"), Some(&one_var()))).summary.step_time_s.p50;
    close(costly, 1.002, 1e-9);
    close(run(&scenario(&text(""), Some(&one_var()))).summary.step_time_s.p50, free, 1e-12);
}

#[test]
fn a_ring_waits_for_each_round_s_copies_and_a_tree_pipelines_them() {
    // A profile with the paper GPU's rate and user-space copies of 0.4 ns per payload byte, of
    // which the sender's encoding is 0.1 and the receiver's decoding 0.2 (the kernel's 0.1
    // moves with the bytes: no shared cores, so it costs nothing here).
    let with_copies = |mut s: Scenario| {
        let mut fitted = topolab_core::profile::Fitted::with_rates(
            topolab_core::units::FlopRate(1e12),
            1.0,
            topolab_core::units::Time::ZERO,
            topolab_core::units::BitRate::from_bytes_per_sec(37.5e9),
        );
        (fitted.copy_ns_per_byte, fitted.encode_ns_per_byte, fitted.decode_ns_per_byte) = (0.4, Some(0.1), Some(0.2));
        s.profile = Some(test_profile(fitted));
        run(&s)
    };
    // Ring of 2, 2 rounds of 6.25 MB: each is encoded (6.25e5 ns), sent (5e7) and decoded
    // (1.25e6) before the next leaves: 2 x 5.1875e7. Step 3e8 + 1.0375e8 + 1e6.
    let t = "fusion_cycle = \"0 ms\"";
    let ring2 = with_copies(ring(2, &one_var(), "0 us", t, ""));
    close(ring2.summary.step_time_s.p50, 0.404_75, 1e-9);
    close(run(&ring(2, &one_var(), "0 us", t, "")).summary.step_time_s.p50, 0.401, 1e-9);
    // The tree's 12 chunks per half follow each other on the wire while earlier ones are
    // decoded and later ones encoded: its copies add about one chunk's encode and decode at
    // each end (2 x 156_250 ns), not the ring's 3.75e6.
    let tree = |s| with_copies(s).summary.breakdown_s.exposed_comm;
    let t = "algorithm = \"tree\"\nfusion_cycle = \"0 ms\"";
    let (copies, none) = (tree(ring(2, &one_var(), "0 us", t, "")), run(&ring(2, &one_var(), "0 us", t, "")));
    let extra = copies - none.summary.breakdown_s.exposed_comm;
    assert!(extra > 0.0 && extra <= 2.0 * 156_250e-9 + 1e-9, "the tree's copies cost {extra} s");
}
