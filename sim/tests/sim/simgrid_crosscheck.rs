//! Cross-check of the flow-level network against SimGrid (an independent simulator) with its
//! plain max-min model: completion times must agree within 1%.
//!
//! Needs Debian's `python3-simgrid` (installed by .ci/run). Without it the test says it is
//! skipped, except in CI (`CI` set), where a missing SimGrid is a failure.

use std::io::Write;
use std::process::{Command, Stdio};

use topolab_core::units::Time;
use topolab_sim::engine::EventQueue;
use topolab_sim::maxmin::Use;
use topolab_sim::network::{Message, Network, Timer};

use super::root;
use topolab_core::collective::{LINKS, Schedule};
use topolab_core::scenario::AllReduceAlgorithm;

const RING: AllReduceAlgorithm = AllReduceAlgorithm::Ring;
const HIER: AllReduceAlgorithm = AllReduceAlgorithm::Hierarchical;
const TREE: AllReduceAlgorithm = AllReduceAlgorithm::Tree;

/// A transfer pattern: capacities (bytes/s) and flows (resources, bytes, start in s).
struct Pattern {
    name: &'static str,
    capacity: Vec<f64>,
    flows: Vec<(Vec<usize>, f64, f64)>,
}

/// Completion times (s) of every flow in topolab's network.
fn topolab_times(p: &Pattern) -> Vec<f64> {
    let mut net: Network<usize> = Network::new();
    for c in &p.capacity {
        net.add_resource(c / 1e9);
    }
    let ids: Vec<usize> = p
        .flows
        .iter()
        .map(|(path, _, _)| net.add_flow(path.iter().map(|&r| Use { resource: r, weight: 1.0 }).collect()))
        .collect();
    #[derive(Clone, Copy)]
    enum Ev {
        Start(usize),
        Done(Timer),
    }
    let mut q = EventQueue::new();
    for (i, (_, _, start)) in p.flows.iter().enumerate() {
        q.schedule(Time::from_secs_f64(*start), Ev::Start(i));
    }
    let mut done = vec![0.0; p.flows.len()];
    while let Some((now, ev)) = q.pop() {
        let timers = match ev {
            Ev::Start(i) => net.send(now, ids[i], Message { bytes: p.flows[i].1, tag: i }),
            Ev::Done(t) => match net.complete(now, t.flow, t.version) {
                topolab_sim::network::Completion::Done(msg, timers) => {
                    done[msg.tag] = now.secs_f64();
                    timers
                }
                topolab_sim::network::Completion::Later(timers) => timers,
                topolab_sim::network::Completion::Stale => continue,
            },
        };
        for t in timers {
            q.schedule(t.at, Ev::Done(t));
        }
    }
    done
}

fn simgrid_times(p: &Pattern) -> Vec<f64> {
    let spec = serde_json::json!({
        "resources": p.capacity,
        "flows": p.flows.iter().map(|(path, bytes, start)| serde_json::json!({"path": path, "bytes": bytes, "start": start})).collect::<Vec<_>>(),
    });
    serde_json::from_value(simgrid("crosscheck.py", &spec, p.name)).unwrap()
}

/// Runs `script` (in sim/tests/simgrid) on `spec`; its JSON answer.
fn simgrid(script: &str, spec: &serde_json::Value, name: &str) -> serde_json::Value {
    let mut child = Command::new(python())
        .arg(root().join("sim/tests/simgrid").join(script))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().unwrap().write_all(spec.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "SimGrid failed on {name}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{name}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Debian's python3-simgrid is built for the system interpreter.
fn python() -> &'static str {
    if std::path::Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" }
}

/// Fails (these tests are run on purpose, with --ignored) when SimGrid is missing.
fn require_simgrid() {
    assert!(
        simgrid_available(),
        "this test needs Debian's python3-simgrid (apt-get install python3-simgrid; .ci/run installs it)"
    );
}

fn simgrid_available() -> bool {
    Command::new(python())
        .args(["-c", "import simgrid"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

const NIC: f64 = 1.25e9; // 10 Gbit/s in bytes/s

fn patterns() -> Vec<Pattern> {
    let mut v = Vec::new();
    // Incast: 8 senders (egress 0..8) into one receiver's ingress (8); unequal sizes so the
    // share is recomputed as each one finishes.
    let w = 8;
    v.push(Pattern {
        name: "incast",
        capacity: vec![NIC; w + 1],
        flows: (0..w).map(|i| (vec![i, w], 1e8 * (1.0 + i as f64 / 4.0), 0.0)).collect(),
    });
    // W-to-P all-to-all: 4 workers (egress 0..4, ingress 4..8) and 3 PS (egress 8..11,
    // ingress 11..14); every worker pushes to every PS and every PS sends to every worker,
    // with staggered starts and sizes.
    let (wn, pn) = (4usize, 3usize);
    let mut flows = Vec::new();
    for wi in 0..wn {
        for pi in 0..pn {
            let bytes = 5e7 * (1 + (wi * pn + pi) % 5) as f64;
            flows.push((vec![wi, 11 + pi], bytes, 0.01 * wi as f64));
            flows.push((vec![8 + pi, 4 + wi], bytes * 0.7, 0.005 * pi as f64));
        }
    }
    v.push(Pattern { name: "all-to-all", capacity: vec![NIC; 14], flows });
    // Mixed flows over a shared uplink: rack A hosts 0-3, rack B hosts 4-7 (egress i,
    // ingress 8 + i), uplink A->B (16) at 2 x NIC, i.e. 2:1 oversubscribed; some flows stay
    // inside rack A, others cross.
    let mut cap = vec![NIC; 16];
    cap.push(2.0 * NIC);
    let mut flows = Vec::new();
    for src in 0..4 {
        flows.push((vec![src, 16, 8 + 4 + src], 2e8 + 3e7 * src as f64, 0.0));
        flows.push((vec![src, 8 + (src + 1) % 4], 1e8, 0.02 * src as f64));
    }
    flows.push((vec![4, 8], 1.5e8, 0.05));
    v.push(Pattern { name: "shared-uplink", capacity: cap, flows });
    v
}

#[test]
#[ignore = "needs Debian's python3-simgrid (apt-get install python3-simgrid): cargo test -- --ignored"]
fn completion_times_agree_with_simgrid_within_one_percent() {
    require_simgrid();
    for p in patterns() {
        let ours = topolab_times(&p);
        let theirs = simgrid_times(&p);
        assert_eq!(ours.len(), theirs.len());
        let mut worst = 0.0f64;
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            let err = (a - b).abs() / b;
            worst = worst.max(err);
            assert!(err <= 0.01, "{} flow {i}: topolab {a} s, SimGrid {b} s ({:.3}% apart)", p.name, err * 100.0);
        }
        eprintln!("{}: {} flows, largest difference from SimGrid {:.2e} (relative)", p.name, ours.len(), worst);
    }
}

/// An all-reduce in topolab's simulator (one 12.5 MB bucket handed over at the end of
/// backward, as the paper cases set it up) against the same schedule in SimGrid: the time from the
/// hand-over until the last rank holds the sum.
struct RingCase {
    name: &'static str,
    hosts: u32,
    gpus: u32,
    /// (hosts per rack, oversubscription) of a two-tier network.
    racks: Option<(u32, f64)>,
    algorithm: AllReduceAlgorithm,
    /// Network latency, seconds. A connection in topolab starts its next message while the
    /// last one's latency runs (a TCP stream); the SimGrid harness sends the next once the last
    /// has arrived. Where a rank's sends can follow each other that closely (a GPU's neighbour
    /// on its own host feeds it faster than its NIC drains), the two differ by design, so such
    /// rings (GPUs sharing a host, a slow rack uplink) are compared without latency.
    latency: f64,
}

const RING_BYTES: f64 = 12.5e6;
const BUS: f64 = 15.75e9; // pcie3-x16

fn ring_topolab(c: &RingCase) -> f64 {
    let csv = "layer,kind,macs,forward_flops,activation_bytes,variable,shape,bytes\nl,dense,0,100000000000,4,l.w,3125000,12500000\n";
    let network = match c.racks {
        Some((per, over)) => format!("switch = \"two-tier\"\nhosts_per_rack = {per}\noversubscription = {over}\n"),
        None => String::new(),
    };
    let text = format!(
        "batch = 1\n[model]\nlayers = \"model.csv\"\n[hardware]\ngpu = \"paper-gpu\"\nefficiency = 1.0\n\
         gpus_per_host = {}\nhost_bus = \"pcie3-x16\"\n\
         [hardware.gpu_spec]\nfp32 = \"1 TFLOP/s\"\nmemory = \"64 GiB\"\nmemory_bandwidth = \"37.5 GB/s\"\nsource = \"test\"\n\
         [network]\nnic = \"10 Gbit/s\"\nlatency = \"{} us\"\ngoodput = 1.0\nmessage_overhead = \"0 ns\"\n{network}\
         [topology]\nkind = \"all-reduce\"\nworkers = {}\nalgorithm = \"{}\"\nfusion_cycle = \"0 ms\"\n[training]\nsteps = 2\n",
        c.gpus,
        c.latency * 1e6,
        c.hosts,
        c.algorithm.as_str()
    );
    let s = super::scenario(&text, Some(csv));
    let r = super::run(&s);
    // Step = compute (3e8 ns) + collective + update (3 x 12.5 MB at 37.5 GB/s = 1e6 ns).
    // The last host to hold the sum (in a tree, hosts nearer the roots hold it sooner).
    let last = r.steps.iter().filter(|x| x.step == 0).map(|x| x.end_ns - x.start_ns).max().unwrap();
    (last - 300_000_000 - 1_000_000) as f64 / 1e9
}

fn ring_simgrid(c: &RingCase) -> f64 {
    // Resources: host h's egress 2h, ingress 2h + 1; then buses; then rack up/down links.
    let ranks = c.hosts * c.gpus;
    let mut resources = vec![NIC; 2 * c.hosts as usize];
    let bus0 = resources.len();
    resources.extend(std::iter::repeat_n(BUS, c.hosts as usize));
    let rack0 = resources.len();
    let rack = |h: u32| c.racks.map_or(0, |(per, _)| h / per);
    if let Some((per, over)) = c.racks {
        for _ in 0..c.hosts.div_ceil(per) {
            resources.push(f64::from(per) * NIC / over);
            resources.push(f64::from(per) * NIC / over);
        }
    }
    let sched = Schedule::of(c.algorithm, c.hosts, c.gpus);
    let path = |r: u32, slot: usize| {
        let (h, n) = (r / c.gpus, sched.next(r, slot).expect("a link that exists") / c.gpus);
        if h == n {
            return serde_json::json!({"path": [bus0 + h as usize], "latency": false});
        }
        let mut path = vec![2 * h as usize];
        if rack(h) != rack(n) {
            path.push(rack0 + 2 * rack(h) as usize);
            path.push(rack0 + 2 * rack(n) as usize + 1);
        }
        path.push(2 * n as usize + 1);
        serde_json::json!({"path": path, "latency": true})
    };
    let links: Vec<Vec<serde_json::Value>> = (0..ranks)
        .map(|r| {
            (0..LINKS)
                .map(|slot| if sched.next(r, slot).is_some() { path(r, slot) } else { serde_json::Value::Null })
                .collect()
        })
        .collect();
    let bytes = RING_BYTES as u64;
    let streams: Vec<Vec<Vec<serde_json::Value>>> = (0..ranks)
        .map(|r| {
            (0..sched.streams())
                .map(|st| {
                    (0..sched.stream_len(r, st, bytes))
                        .map(|m| {
                            let x = sched.message(r, st, m, bytes);
                            serde_json::json!({"to": x.to, "slot": x.slot, "in_slot": x.in_slot, "bytes": x.bytes, "needs": x.needs})
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    let receives: Vec<[u64; LINKS]> = (0..ranks).map(|r| sched.receives(r, bytes)).collect();
    let spec = serde_json::json!({
        "resources": resources, "latency": c.latency, "links": links, "streams": streams, "receives": receives,
    });
    simgrid("collective.py", &spec, c.name).as_f64().unwrap()
}

#[test]
#[ignore = "needs Debian's python3-simgrid (apt-get install python3-simgrid): cargo test -- --ignored"]
fn all_reduce_agrees_with_simgrid_within_one_percent() {
    require_simgrid();
    let case = |name, hosts, gpus, racks, algorithm, latency| RingCase { name, hosts, gpus, racks, algorithm, latency };
    let cases = [
        case("ring, 4 hosts", 4, 1, None, RING, 50e-6),
        case("ring, 2 hosts x 2 GPUs", 2, 2, None, RING, 0.0),
        case("ring, 3 hosts x 4 GPUs", 3, 4, None, RING, 0.0),
        case("ring, 8 hosts, 2 racks at 8:1", 8, 1, Some((4, 8.0)), RING, 0.0),
        case("hierarchical, 3 hosts x 4 GPUs", 3, 4, None, HIER, 0.0),
        case("tree, 7 hosts", 7, 1, None, TREE, 0.0),
        case("tree, 4 hosts x 2 GPUs", 4, 2, None, TREE, 0.0),
        case("hierarchical, 4 hosts x 2 GPUs, 2 racks at 4:1", 4, 2, Some((2, 4.0)), HIER, 0.0),
    ];
    for c in &cases {
        let (ours, theirs) = (ring_topolab(c), ring_simgrid(c));
        let err = (ours - theirs).abs() / theirs;
        assert!(err <= 0.01, "{}: topolab {ours} s, SimGrid {theirs} s ({:.3}% apart)", c.name, err * 100.0);
        eprintln!("{}: topolab {ours:.6} s, SimGrid {theirs:.6} s, {:.2e} apart (relative)", c.name, err);
    }
}
