//! Nothing silently ignored: every field of the scenario schema either changes what is simulated
//! or replayed, or is refused by validation with the reason. The test walks the JSON Schema, so a
//! new field fails it until it has a probe below; each probe sets the field (in a context where
//! it matters) and compares what the simulator and the runtime would do with and without it.

use std::collections::BTreeSet;

use topolab_core::scenario::{Scenario, ScenarioError};
use topolab_runtime::launcher::ReplaySettings;
use topolab_runtime::proxy::Proxy;
use topolab_sim::SimOptions;

/// Small and fast to simulate; every probe starts from it.
const BASE: &str = r#"
batch = 16
[model]
name = "resnet-50"
[hardware]
gpu = "v100"
[network]
nic = "10GbE"
[topology]
workers = 4
ps = 2
[training]
steps = 6
trace_steps = 2
[runtime]
scale = { params = 0.001 }
"#;

/// What a probe expects of its mutation.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// What the simulator or the runtime does differs from the context without the mutation.
    Effect,
    /// Validation refuses the scenario, naming this field (or the one given).
    Refused(Option<&'static str>),
    /// Text for people: `topolab run` prints it.
    Printed,
}
use Expect::*;

/// (field, context, mutation, expectation). Context and mutation are `path = value` lines
/// (value `!` removes the field) applied to [`BASE`].
type Probe = (&'static str, &'static [(&'static str, &'static str)], &'static [(&'static str, &'static str)], Expect);

const TARGET: (&str, &str) = ("training.target", "{ metric = \"top1\", value = 0.5 }");
const HEAVY: (&str, &str) = ("faults.noise", "\"heavy-tailed\"");
const TAIL: (&str, &str) = ("faults.tail", "{ probability = 0.1, slowdown = 5.0 }");
const EPISODES: (&str, &str) = ("faults.episodes", "{ every = \"1 s\", duration = \"500 ms\", slowdown = 2.0 }");
const MTBF: (&str, &str) = ("faults.mtbf", "\"500 h\"");
const LLAMA3: (&str, &str) = ("faults.gpu_mtbf", "\"llama3\"");
const BANDWIDTH: (&str, &str) = ("faults.checkpoint_bandwidth", "\"1 GB/s\"");
const PROFILE: (&str, &str) = ("hardware.profile", "\"@PROFILE@\"");
const CUDA: (&str, &str) = ("runtime.backend", "\"cuda\"");
const A100: (&str, &str) = ("hardware.gpu", "\"a100-40gb\"");
const EFFICIENCY: (&str, &str) = ("hardware.efficiency", "0.3");
/// The base as a ring all-reduce (no parameter servers).
const AR: &[(&str, &str)] = &[("topology.kind", "\"all-reduce\""), ("topology.ps", "!")];

const PROBES: &[Probe] = &[
    ("batch", &[], &[("batch", "32")], Effect),
    ("cost.currency", &[TARGET], &[("cost.currency", "\"EUR\"")], Effect),
    ("cost.currency", &[], &[("cost.currency", "\"EUR\"")], Refused(None)),
    ("cost.gpu_hour", &[TARGET], &[("cost.gpu_hour", "3.0")], Effect),
    ("cost.gpu_hour", &[], &[("cost.gpu_hour", "3.0")], Refused(None)),
    ("cost.ps_hour", &[TARGET], &[("cost.ps_hour", "0.5")], Effect),
    ("cost.ps_hour", &[TARGET, ("topology.ps_hosts", "\"colocated\"")], &[("cost.ps_hour", "0.5")], Refused(None)),
    ("description", &[], &[("description", "\"a probe of the description\"")], Printed),
    ("faults.jitter", &[], &[("faults.jitter", "0.2")], Effect),
    ("faults.noise", &[("faults.jitter", "0.2")], &[("faults.noise", "\"lognormal\"")], Effect),
    ("faults.noise", &[], &[("faults.noise", "\"lognormal\"")], Refused(None)),
    ("faults.tail.probability", &[HEAVY, TAIL], &[("faults.tail", "{ probability = 0.3, slowdown = 5.0 }")], Effect),
    ("faults.tail.slowdown", &[HEAVY, TAIL], &[("faults.tail", "{ probability = 0.1, slowdown = 9.0 }")], Effect),
    ("faults.tail.probability", &[], &[TAIL], Refused(Some("faults.tail"))),
    (
        "faults.tail.slowdown",
        &[HEAVY, TAIL],
        &[("faults.tail", "{ probability = 0.1, slowdown = 1.0 }")],
        Refused(None),
    ),
    (
        "faults.episodes.every",
        &[EPISODES],
        &[("faults.episodes", "{ every = \"2 s\", duration = \"500 ms\", slowdown = 2.0 }")],
        Effect,
    ),
    (
        "faults.episodes.duration",
        &[EPISODES],
        &[("faults.episodes", "{ every = \"1 s\", duration = \"1 s\", slowdown = 2.0 }")],
        Effect,
    ),
    (
        "faults.episodes.slowdown",
        &[EPISODES],
        &[("faults.episodes", "{ every = \"1 s\", duration = \"500 ms\", slowdown = 3.0 }")],
        Effect,
    ),
    (
        "faults.episodes.slowdown",
        &[],
        &[("faults.episodes", "{ every = \"1 s\", duration = \"500 ms\", slowdown = 1.0 }")],
        Refused(None),
    ),
    ("faults.gpu_mtbf", &[TARGET], &[("faults.gpu_mtbf", "\"llama3\""), BANDWIDTH], Effect),
    ("faults.gpu_mtbf", &[TARGET, LLAMA3, BANDWIDTH], &[("faults.gpu_mtbf", "\"100 h\"")], Effect),
    ("faults.gpu_mtbf", &[], &[("faults.gpu_mtbf", "\"llama3\""), BANDWIDTH], Refused(None)),
    ("faults.gpu_mtbf", &[TARGET, MTBF, BANDWIDTH], &[("faults.gpu_mtbf", "\"llama3\"")], Refused(None)),
    ("faults.network_noise", &[], &[("faults.network_noise", "0.3")], Effect),
    ("faults.network_noise", &[], &[("faults.network_noise", "-0.3")], Refused(None)),
    ("faults.mtbf", &[TARGET], &[("faults.mtbf", "\"100 h\""), BANDWIDTH], Effect),
    ("faults.mtbf", &[], &[("faults.mtbf", "\"100 h\""), BANDWIDTH], Refused(None)),
    ("faults.mtbf", &[TARGET], &[("faults.mtbf", "\"100 h\"")], Refused(None)),
    (
        "faults.checkpoint_bandwidth",
        &[TARGET, MTBF, BANDWIDTH],
        &[("faults.checkpoint_bandwidth", "\"100 MB/s\"")],
        Effect,
    ),
    ("faults.checkpoint_bandwidth", &[TARGET], &[BANDWIDTH], Refused(None)),
    ("faults.checkpoint_interval", &[TARGET, MTBF, BANDWIDTH], &[("faults.checkpoint_interval", "\"5 min\"")], Effect),
    (
        "faults.checkpoint_interval",
        &[TARGET, MTBF, BANDWIDTH],
        &[("faults.checkpoint_interval", "\"1 ms\"")],
        Refused(None),
    ),
    ("faults.checkpoint_interval", &[TARGET], &[("faults.checkpoint_interval", "\"auto\"")], Refused(None)),
    ("faults.restart", &[TARGET, MTBF, BANDWIDTH], &[("faults.restart", "\"10 min\"")], Effect),
    (
        "faults.kills[].task",
        &[("faults.kills", "[{ task = \"worker 0\", at = \"2 s\" }]")],
        &[("faults.kills", "[{ task = \"ps 1\", at = \"2 s\" }]")],
        Effect,
    ),
    (
        "faults.kills[].task",
        &[],
        &[("faults.kills", "[{ task = \"worker 9\", at = \"2 s\" }]")],
        Refused(Some("faults.kills[0].task")),
    ),
    (
        "faults.kills[].at",
        &[("faults.kills", "[{ task = \"worker 0\", at = \"2 s\" }]")],
        &[("faults.kills", "[{ task = \"worker 0\", at = \"3 s\" }]")],
        Effect,
    ),
    ("faults.restart", &[TARGET], &[("faults.restart", "\"10 min\"")], Refused(None)),
    (
        "faults.stragglers.count",
        &[("faults.stragglers", "{ count = 1, slowdown = 2.0 }")],
        &[("faults.stragglers", "{ count = 2, slowdown = 2.0 }")],
        Effect,
    ),
    (
        "faults.stragglers.slowdown",
        &[("faults.stragglers", "{ count = 1, slowdown = 2.0 }")],
        &[("faults.stragglers", "{ count = 1, slowdown = 3.0 }")],
        Effect,
    ),
    ("hardware.efficiency", &[], &[("hardware.efficiency", "0.3")], Effect),
    ("hardware.efficiency", &[PROFILE], &[("hardware.efficiency", "0.3")], Refused(None)),
    ("hardware.gpu", &[], &[("hardware.gpu", "\"p100\"")], Effect),
    (
        "hardware.gpu_spec.fp16",
        &[("hardware.precision", "\"fp16\"")],
        &[("hardware.gpu_spec", "{ fp16 = \"50 TFLOP/s\" }")],
        Effect,
    ),
    ("hardware.gpu_spec.fp32", &[], &[("hardware.gpu_spec", "{ fp32 = \"10 TFLOP/s\" }")], Effect),
    ("hardware.gpu_spec.memory", &[], &[("hardware.gpu_spec", "{ memory = \"100 MiB\" }")], Refused(Some("batch"))),
    (
        "hardware.gpu_spec.memory_bandwidth",
        &[],
        &[("hardware.gpu_spec", "{ memory_bandwidth = \"1 TB/s\" }")],
        Refused(None),
    ),
    // With all-reduce the workers apply the update on their GPUs, at its memory bandwidth.
    ("hardware.gpu_spec.memory_bandwidth", AR, &[("hardware.gpu_spec", "{ memory_bandwidth = \"10 GB/s\" }")], Effect),
    (
        "hardware.gpu_spec.source",
        &[],
        &[("hardware.gpu_spec", "{ fp32 = \"10 TFLOP/s\", source = \"a probe of the source\" }")],
        Printed,
    ),
    ("hardware.gpus_per_host", &[], &[("hardware.gpus_per_host", "2")], Effect),
    ("hardware.host_bus", &[("hardware.gpus_per_host", "4")], &[("hardware.host_bus", "\"nvlink2\"")], Effect),
    ("hardware.host_bus", &[], &[("hardware.host_bus", "\"nvlink2\"")], Refused(None)),
    (
        "hardware.local_aggregation",
        &[("hardware.gpus_per_host", "4")],
        &[("hardware.local_aggregation", "false")],
        Effect,
    ),
    ("hardware.local_aggregation", &[], &[("hardware.local_aggregation", "false")], Refused(None)),
    ("hardware.precision", &[], &[("hardware.precision", "\"fp16\"")], Effect),
    ("hardware.precision", &[("hardware.gpu", "\"k40\"")], &[("hardware.precision", "\"fp16\"")], Refused(None)),
    ("hardware.precision", &[PROFILE], &[("hardware.precision", "\"fp16\"")], Refused(None)),
    ("hardware.precision", &[("hardware.gpu", "\"h100\"")], &[("hardware.precision", "\"fp16\"")], Refused(None)),
    ("hardware.profile", &[], &[PROFILE], Effect),
    ("hardware.ps_memory_bandwidth", &[], &[("hardware.ps_memory_bandwidth", "\"1 GB/s\"")], Effect),
    ("hardware.ps_memory_bandwidth", &[PROFILE], &[("hardware.ps_memory_bandwidth", "\"1 GB/s\"")], Refused(None)),
    ("hardware.shared_cores", &[], &[("hardware.shared_cores", "2")], Effect),
    ("hardware.shared_gpus", &[], &[("hardware.shared_gpus", "1")], Effect),
    ("hardware.shared_gpus", &[], &[("hardware.shared_gpus", "0")], Refused(None)),
    ("hardware.precision", &[A100, EFFICIENCY], &[("hardware.precision", "\"tf32\"")], Effect),
    ("hardware.precision", &[A100], &[("hardware.precision", "\"tf32\"")], Refused(None)),
    ("hardware.precision", &[EFFICIENCY], &[("hardware.precision", "\"tf32\"")], Refused(None)),
    (
        "hardware.gpu_spec.tf32",
        &[A100, EFFICIENCY, ("hardware.precision", "\"tf32\"")],
        &[("hardware.gpu_spec", "{ tf32 = \"100 TFLOP/s\" }")],
        Effect,
    ),
    ("model.layers", &[], &[("model.name", "!"), ("model.layers", "\"@LAYERS@\"")], Effect),
    ("model.name", &[], &[("model.name", "\"alexnet\"")], Effect),
    ("name", &[], &[("name", "\"renamed\"")], Effect),
    ("network.cpu_ns_per_byte", &[("hardware.shared_cores", "2")], &[("network.cpu_ns_per_byte", "5.0")], Effect),
    ("network.cpu_ns_per_byte", &[], &[("network.cpu_ns_per_byte", "5.0")], Refused(None)),
    ("network.fifo", &[("faults.jitter", "0.3")], &[("network.fifo", "\"5 ms\"")], Effect),
    ("network.fifo", &[PROFILE], &[("network.fifo", "\"5 ms\"")], Refused(None)),
    ("network.goodput", &[], &[("network.goodput", "0.5")], Effect),
    ("network.goodput", &[PROFILE], &[("network.goodput", "0.5")], Refused(None)),
    (
        "network.hosts_per_rack",
        &[("network.switch", "\"two-tier\""), ("network.oversubscription", "4.0")],
        &[("network.hosts_per_rack", "2")],
        Effect,
    ),
    ("network.hosts_per_rack", &[], &[("network.hosts_per_rack", "2")], Refused(None)),
    ("network.latency", &[], &[("network.latency", "\"1 ms\"")], Effect),
    ("network.message_overhead", &[], &[("network.message_overhead", "\"1 ms\"")], Effect),
    ("network.message_overhead", &[PROFILE], &[("network.message_overhead", "\"1 ms\"")], Refused(None)),
    ("network.nic", &[], &[("network.nic", "\"1GbE\"")], Effect),
    (
        "network.oversubscription",
        &[("network.switch", "\"two-tier\""), ("network.hosts_per_rack", "2")],
        &[("network.oversubscription", "4.0")],
        Effect,
    ),
    ("network.oversubscription", &[], &[("network.oversubscription", "4.0")], Refused(None)),
    (
        "network.queue",
        &[("faults.jitter", "0.3"), ("network.fifo", "\"20 ms\"")],
        &[("network.queue", "\"200 us\"")],
        Effect,
    ),
    ("network.queue", &[], &[("network.queue", "\"50 ms\"")], Refused(None)),
    (
        "network.ramp",
        &[("network.ramp", "\"20 ms\""), ("network.ramp_share", "0.2")],
        &[("network.ramp", "\"200 ms\"")],
        Effect,
    ),
    ("network.ramp", &[], &[("network.ramp", "\"200 ms\"")], Refused(None)),
    ("network.ramp", &[PROFILE], &[("network.ramp", "\"200 ms\""), ("network.ramp_share", "0.2")], Refused(None)),
    (
        "network.ramp_share",
        &[("network.ramp", "\"200 ms\""), ("network.ramp_share", "0.2")],
        &[("network.ramp_share", "0.6")],
        Effect,
    ),
    ("network.ramp_share", &[], &[("network.ramp_share", "0.5")], Refused(None)),
    (
        "network.switch",
        &[],
        &[("network.switch", "\"two-tier\""), ("network.hosts_per_rack", "2"), ("network.oversubscription", "4.0")],
        Effect,
    ),
    ("network.unfairness", &[], &[("network.unfairness", "0.5")], Effect),
    ("network.unfairness", &[PROFILE], &[("network.unfairness", "0.5")], Refused(None)),
    ("optimizer.kind", &[], &[("optimizer.kind", "\"adam\"")], Effect),
    ("optimizer.learning_rate", &[], &[("optimizer.learning_rate", "0.05")], Effect),
    ("runtime.backend", &[], &[("runtime.backend", "\"cuda\"")], Effect),
    ("runtime.device", &[CUDA], &[("runtime.device", "1")], Effect),
    ("runtime.device", &[], &[("runtime.device", "1")], Refused(None)),
    ("runtime.target_step_time", &[CUDA], &[("runtime.target_step_time", "\"1 ms\"")], Refused(None)),
    ("runtime.checkpoint_every", &[], &[("runtime.checkpoint_every", "5")], Effect),
    ("runtime.scale.flops", &[], &[("runtime.scale", "{ params = 0.001, flops = 0.5 }")], Effect),
    (
        "runtime.scale.flops",
        &[("runtime.target_step_time", "\"1 ms\"")],
        &[("runtime.scale", "{ params = 0.001, flops = 0.5 }")],
        Refused(None),
    ),
    ("runtime.scale.params", &[], &[("runtime.scale", "{ params = 0.002 }")], Effect),
    ("runtime.target_step_time", &[], &[("runtime.target_step_time", "\"1 us\"")], Effect),
    ("seed", &[("faults.jitter", "0.2")], &[("seed", "7")], Effect),
    ("sweep.batch", &[], &[("sweep.batch", "[8, 16]")], Effect),
    ("sweep.gpu", &[], &[("sweep.gpu", "[\"v100\", \"p100\"]")], Effect),
    ("sweep.mode", &[], &[("sweep.mode", "[\"sync\", \"async\"]")], Effect),
    // A point of kind all-reduce drops the base's PS fields (BASE has ps = 2).
    ("sweep.kind", &[], &[("sweep.kind", "[\"parameter-server\", \"all-reduce\"]")], Effect),
    ("sweep.fusion_buffer", AR, &[("sweep.fusion_buffer", "[\"1 MiB\", \"64 MiB\"]")], Effect),
    ("sweep.fusion_buffer", &[], &[("sweep.fusion_buffer", "[\"1 MiB\"]")], Refused(None)),
    ("sweep.algorithm", AR, &[("sweep.algorithm", "[\"ring\", \"tree\"]")], Effect),
    ("sweep.algorithm", &[], &[("sweep.algorithm", "[\"tree\"]")], Refused(None)),
    (
        "sweep.points[].algorithm",
        &[AR[0], AR[1], ("sweep.points", "[{ workers = 2 }]")],
        &[("sweep.points", "[{ workers = 2, algorithm = \"tree\" }]")],
        Effect,
    ),
    (
        "sweep.points[].kind",
        &[("sweep.points", "[{ workers = 2 }]")],
        &[("sweep.points", "[{ workers = 2, kind = \"all-reduce\" }]")],
        Effect,
    ),
    (
        "sweep.points[].fusion_buffer",
        &[AR[0], AR[1], ("sweep.points", "[{ workers = 2 }]")],
        &[("sweep.points", "[{ workers = 2, fusion_buffer = \"1 MiB\" }]")],
        Effect,
    ),
    ("sweep.model", &[], &[("sweep.model", "[\"resnet-50\", \"alexnet\"]")], Effect),
    ("sweep.nic", &[], &[("sweep.nic", "[\"1GbE\", \"10GbE\"]")], Effect),
    ("sweep.placement", &[], &[("sweep.placement", "[\"greedy\", \"round-robin\"]")], Effect),
    ("sweep.points[].batch", &[("sweep.points", "[{ batch = 8 }]")], &[("sweep.points", "[{ batch = 32 }]")], Effect),
    (
        "sweep.points[].gpu",
        &[("sweep.points", "[{ gpu = \"v100\" }]")],
        &[("sweep.points", "[{ gpu = \"p100\" }]")],
        Effect,
    ),
    (
        "sweep.points[].mode",
        &[("sweep.points", "[{ mode = \"sync\" }]")],
        &[("sweep.points", "[{ mode = \"async\" }]")],
        Effect,
    ),
    (
        "sweep.points[].model",
        &[("sweep.points", "[{ model = \"resnet-50\" }]")],
        &[("sweep.points", "[{ model = \"alexnet\" }]")],
        Effect,
    ),
    (
        "sweep.points[].nic",
        &[("sweep.points", "[{ nic = \"10GbE\" }]")],
        &[("sweep.points", "[{ nic = \"1GbE\" }]")],
        Effect,
    ),
    (
        "sweep.points[].placement",
        &[("sweep.points", "[{ placement = \"round-robin\" }]")],
        &[("sweep.points", "[{ placement = \"greedy\" }]")],
        Effect,
    ),
    ("sweep.points[].ps", &[("sweep.points", "[{ ps = 1 }]")], &[("sweep.points", "[{ ps = 2 }]")], Effect),
    (
        "sweep.points[].workers",
        &[("sweep.points", "[{ workers = 1 }]")],
        &[("sweep.points", "[{ workers = 2 }]")],
        Effect,
    ),
    ("sweep.ps", &[], &[("sweep.ps", "[1, 2]")], Effect),
    ("sweep.workers", &[], &[("sweep.workers", "[1, 2]")], Effect),
    ("topology.algorithm", &[], &[("topology.algorithm", "\"tree\"")], Refused(None)),
    (
        "topology.backup_workers",
        &[("topology.mode", "\"backup\""), ("topology.backup_workers", "1"), ("faults.jitter", "0.2")],
        &[("topology.backup_workers", "2")],
        Effect,
    ),
    ("topology.backup_workers", &[], &[("topology.backup_workers", "1")], Refused(None)),
    ("topology.algorithm", AR, &[("topology.algorithm", "\"tree\"")], Effect),
    ("topology.algorithm", AR, &[("topology.algorithm", "\"hierarchical\"")], Refused(None)),
    ("topology.fusion_buffer", &[], &[("topology.fusion_buffer", "\"1 MiB\"")], Refused(None)),
    ("topology.fusion_buffer", AR, &[("topology.fusion_buffer", "\"1 MiB\"")], Effect),
    ("topology.fusion_cycle", &[], &[("topology.fusion_cycle", "\"50 ms\"")], Refused(None)),
    ("topology.fusion_cycle", AR, &[("topology.fusion_cycle", "\"50 ms\"")], Effect),
    ("topology.kind", &[("topology.ps", "!")], &[("topology.kind", "\"all-reduce\"")], Effect),
    ("topology.kind", &[], &[("topology.kind", "\"all-reduce\"")], Refused(Some("topology.ps"))),
    ("topology.mode", &[], &[("topology.mode", "\"async\"")], Effect),
    (
        "topology.partition_threshold",
        &[("topology.placement", "\"partitioned\"")],
        &[("topology.partition_threshold", "\"1 MiB\"")],
        Effect,
    ),
    ("topology.partition_threshold", &[], &[("topology.partition_threshold", "\"1 MiB\"")], Refused(None)),
    ("topology.placement", &[], &[("topology.placement", "\"greedy\"")], Effect),
    ("topology.ps", &[], &[("topology.ps", "1")], Effect),
    ("topology.ps_hosts", &[], &[("topology.ps_hosts", "\"colocated\"")], Effect),
    (
        "topology.staleness",
        &[
            ("topology.mode", "\"stale-synchronous\""),
            ("topology.staleness", "1"),
            ("faults.stragglers", "{ count = 1, slowdown = 3.0 }"),
        ],
        &[("topology.staleness", "4")],
        Effect,
    ),
    ("topology.staleness", &[("topology.mode", "\"async\"")], &[("topology.staleness", "2")], Refused(None)),
    ("topology.workers", &[], &[("topology.workers", "2")], Effect),
    ("training.overlap", &[], &[("training.overlap", "false")], Effect),
    (
        "training.staleness_penalty",
        &[TARGET, ("topology.mode", "\"async\"")],
        &[("training.staleness_penalty", "0.2")],
        Effect,
    ),
    ("training.staleness_penalty", &[TARGET], &[("training.staleness_penalty", "0.2")], Refused(None)),
    ("training.steps", &[], &[("training.steps", "8")], Effect),
    ("training.target.metric", &[TARGET], &[("training.target", "{ metric = \"top5\", value = 0.5 }")], Refused(None)),
    ("training.target.value", &[TARGET], &[("training.target", "{ metric = \"top1\", value = 0.6 }")], Effect),
    ("training.trace_steps", &[], &[("training.trace_steps", "1")], Effect),
];

/// Every leaf field of the schema, as a dotted path (`[]` for the items of an array of tables).
fn schema_fields() -> BTreeSet<String> {
    fn resolve<'a>(defs: &'a serde_json::Value, s: &'a serde_json::Value) -> &'a serde_json::Value {
        if let Some(r) = s["$ref"].as_str() {
            return resolve(defs, &defs[r.rsplit('/').next().unwrap()]);
        }
        if let Some(any) = s["anyOf"].as_array() {
            return resolve(defs, any.iter().find(|a| a["type"] != "null").unwrap());
        }
        s
    }
    fn walk(defs: &serde_json::Value, s: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
        let s = resolve(defs, s);
        let join = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
        if let Some(props) = s["properties"].as_object() {
            for (k, v) in props {
                walk(defs, v, &join(k), out);
            }
        } else if s["type"] == "array" && resolve(defs, &s["items"])["properties"].is_object() {
            walk(defs, &s["items"], &format!("{prefix}[]"), out);
        } else {
            out.insert(prefix.to_string());
        }
    }
    let schema = topolab_core::scenario::json_schema();
    let mut out = BTreeSet::new();
    walk(&schema["$defs"], &schema, "", &mut out);
    out
}

/// [`BASE`] with `sets` applied, as TOML text.
fn scenario_text(sets: &[(&str, &str)], subst: &[(&str, String)]) -> String {
    let mut doc: toml::Table = toml::from_str(BASE).unwrap();
    for (path, value) in sets {
        let keys: Vec<&str> = path.split('.').collect();
        let mut t = &mut doc;
        for k in &keys[..keys.len() - 1] {
            t = t
                .entry(k.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .unwrap();
        }
        let last = keys[keys.len() - 1];
        if *value == "!" {
            t.remove(last);
        } else {
            let mut v = value.to_string();
            for (from, to) in subst {
                v = v.replace(from, to);
            }
            let parsed: toml::Table = toml::from_str(&format!("x = {v}")).unwrap();
            t.insert(last.to_string(), parsed["x"].clone());
        }
    }
    toml::to_string(&doc).unwrap()
}

/// What the simulator and the runtime would do with `s`, minus the records of the scenario
/// itself (its hash and seed), which change with any field.
fn behaviour(s: &Scenario) -> String {
    let opts = SimOptions::default();
    let configs = s.configurations().unwrap();
    let mut out = String::new();
    for (point, c) in &configs {
        out.push_str(&format!("config {:?} {}\n", point.values(), c.spec.name));
        let (run, ttt) = if c.spec.training.target.is_some() {
            let (run, t) = topolab_sim::target::time_to_target(c, &opts).unwrap();
            (run, Some(serde_json::to_string(&t).unwrap()))
        } else {
            (topolab_sim::simulate(c, &opts).unwrap(), None)
        };
        let mut summary = serde_json::to_value(&run.summary).unwrap();
        summary["scenario_hash"] = serde_json::Value::Null;
        summary["seed"] = serde_json::Value::Null;
        let mut steps = Vec::new();
        topolab_core::records::write_steps_csv(&run.steps, &mut steps).unwrap();
        out.push_str(&format!("{summary}\n{}\n", String::from_utf8(steps).unwrap()));
        out.push_str(&String::from_utf8(topolab_sim::chrome_trace(&run.trace)).unwrap());
        out.push_str(&format!("{ttt:?}\n"));
    }
    // The runtime: the proxy model and the tasks' settings.
    let r = ReplaySettings::of(s);
    let proxy = Proxy::new(s, r.params_scale, r.flops_scale);
    let init: f64 = proxy.init(r.seed).iter().flatten().map(|&x| f64::from(x)).sum();
    out.push_str(&format!(
        "replay params {:?} macs {} lr {} checkpoint_every {} init {init} kills {:?}\n",
        proxy.var_sizes(),
        proxy.layers.iter().map(|l| l.macs()).sum::<u64>(),
        r.learning_rate,
        r.checkpoint_every,
        r.kills
    ));
    out
}

#[test]
fn every_scenario_field_takes_effect_or_is_refused() {
    let fields = schema_fields();
    let probed: BTreeSet<String> = PROBES.iter().map(|p| p.0.to_string()).collect();
    let unprobed: Vec<&String> = fields.difference(&probed).collect();
    assert!(unprobed.is_empty(), "schema fields without a probe (add one to PROBES): {unprobed:?}");
    let stale: Vec<&String> = probed.difference(&fields).collect();
    assert!(stale.is_empty(), "probes of fields the schema no longer has: {stale:?}");

    let d = super::TempDir::new("schema-walk");
    let profile = d.join("profile.toml");
    std::fs::write(&profile, PROFILE_TOML).unwrap();
    let layers = super::root().join("scenarios/examples/tiny-mlp.csv");
    let subst = [("@PROFILE@", profile.display().to_string()), ("@LAYERS@", layers.display().to_string())];
    let parse = |text: &str| Scenario::parse(text, "probe.toml", "probe", None);
    let mut failures = Vec::new();
    for (field, context, mutation, expect) in PROBES {
        let before = scenario_text(context, &subst);
        let mut all: Vec<(&str, &str)> = context.to_vec();
        all.extend_from_slice(mutation);
        let after = scenario_text(&all, &subst);
        let base = match parse(&before) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{field}: the context itself is invalid: {e}\n{before}"));
                continue;
            }
        };
        match (expect, parse(&after)) {
            (Refused(path), Err(ScenarioError::Invalid(ds))) => {
                let want = path.unwrap_or(field);
                if !ds.iter().any(|d| d.path == want) {
                    failures.push(format!("{field}: refused, but not at `{want}`: {ds:?}"));
                }
            }
            (Refused(_), Ok(_)) => failures.push(format!("{field}: accepted where it has no effect\n{after}")),
            (Effect | Printed, Err(e)) => {
                failures.push(format!("{field}: refused where it should take effect: {e}\n{after}"))
            }
            (Effect, Ok(s)) => {
                if behaviour(&s) == behaviour(&base) {
                    failures.push(format!("{field}: accepted but changes nothing\n{after}"));
                }
            }
            (Printed, Ok(_)) => {
                let f = d.join("printed.toml");
                std::fs::write(&f, &after).unwrap();
                let out = super::topolab(&["run", f.to_str().unwrap()]);
                let text = super::stdout(&out);
                if !text.contains("a probe of the") {
                    failures.push(format!("{field}: not printed by `topolab run`:\n{text}{}", super::stderr(&out)));
                }
            }
            (_, Err(e)) => failures.push(format!("{field}: cannot be read: {e}")),
        }
    }
    assert!(failures.is_empty(), "{} of {} probes failed:\n{}", failures.len(), PROBES.len(), failures.join("\n\n"));
}

/// A calibrated profile, as `topolab calibrate` writes one (figures of a small machine).
const PROFILE_TOML: &str = r#"
raw = []
[machine]
cpu = "probe"
cores = 2
memory = "24 GiB"
date = "2026-12-01T00:00:00Z"
launcher = "netns"
congestion_control = "cubic"
[fitted]
compute_rate = "40 GFLOP/s"
cores = 2
goodput = 0.95
message_overhead = "40 us"
ps_memory_bandwidth = "4 GB/s"
startup = "5 ms"
elementwise_ns_per_value = 0.5
layer_overhead = "3 us"
copy_ns_per_byte = 1.4
"#;
