//! `topolab plan`: the per-step plan of ops and the bytes each host moves.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use topolab_core::collective::step_totals;
use topolab_core::plan::OpTotals;
use topolab_core::plan::{Host, HostTraffic, Plan};
use topolab_core::scenario::{Scenario, TopologyKind};
use topolab_core::units::Flops;

use super::BadInput;
use crate::output::{Format, Table, print_json};

/// Show the per-step plan: ops by kind, and bytes per host and direction.
#[derive(clap::Args)]
#[command(after_help = "\
Identical hosts are grouped (e.g. `worker0..63`).

Examples:
  topolab plan scenarios/examples/inception-v3-64w-8ps.toml
  topolab plan scenarios/examples/inception-v3-64w-8ps.toml --format json")]
pub struct Args {
    /// Scenario file (default: the built-in default scenario).
    scenario: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub fn build(s: &Scenario) -> anyhow::Result<Plan> {
    Plan::new(s).map_err(|e| BadInput(format!("error: {}: {e}", s.origin)).into())
}

/// Consecutive hosts of one kind with equal traffic, as (label, traffic of each).
pub fn grouped(traffic: &[HostTraffic]) -> Vec<(String, usize, HostTraffic)> {
    let mut out: Vec<(String, usize, HostTraffic)> = Vec::new();
    let mut i = 0;
    while i < traffic.len() {
        let t = traffic[i];
        let same_kind =
            |a: Host, b: Host| matches!((a, b), (Host::Worker(_), Host::Worker(_)) | (Host::Ps(_), Host::Ps(_)));
        let mut j = i + 1;
        while j < traffic.len()
            && same_kind(traffic[j].host, t.host)
            && traffic[j].egress == t.egress
            && traffic[j].ingress == t.ingress
        {
            j += 1;
        }
        let label = if j - i == 1 {
            t.host.to_string()
        } else {
            let last = traffic[j - 1].host.to_string();
            let digits: String = last.chars().skip_while(|c| !c.is_ascii_digit()).collect();
            format!("{}..{digits}", t.host)
        };
        out.push((label, j - i, t));
        i = j;
    }
    out
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let s = super::load_scenario(a.scenario.as_deref())?;
    if s.spec.topology.kind == TopologyKind::AllReduce {
        return all_reduce(&s, a.format);
    }
    let plan = build(&s)?;
    let totals = plan.op_totals();
    let traffic = plan.host_traffic();
    if a.format == Format::Json {
        let (ops, hosts) = json_tables(&totals, &traffic);
        print_json(&serde_json::json!({
            "scenario": s.spec.name, "scenario_hash": s.hash, "seed": s.spec.seed,
            "workers": plan.workers, "ps": plan.ps, "gpus_per_host": plan.gpus_per_host, "mode": plan.mode.as_str(),
            "worker_template_ops": plan.worker.len(),
            "shard_template_ops": plan.shards.iter().map(Vec::len).collect::<Vec<_>>(),
            "ops_per_step": ops, "hosts": hosts,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let human = a.format == Format::Table;
    let (ops, hosts) = tables(&totals, &traffic, human);
    let mut out = std::io::stdout().lock();
    if human {
        writeln!(
            out,
            "Plan of {} (hash {}): {} workers x {} GPU, {} PS shards ({}), {} mode, {} placement",
            s.spec.name,
            s.hash,
            plan.workers,
            plan.gpus_per_host,
            plan.ps,
            if plan.ps_hosts == topolab_core::scenario::PsHosts::Dedicated { "dedicated" } else { "co-located" },
            plan.mode.as_str(),
            plan.placement.kind.as_str()
        )?;
        writeln!(
            out,
            "Templates: {} ops per worker host, {} ops over {} shards\n",
            plan.worker.len(),
            plan.shards.iter().map(Vec::len).sum::<usize>(),
            plan.ps
        )?;
    }
    write_tables(&mut out, human, "hosts", &ops, &hosts, &s)
}

/// Writes the ops and hosts tables, for people or as CSV.
fn write_tables<W: Write>(
    mut out: W,
    human: bool,
    over: &str,
    ops: &Table,
    hosts: &Table,
    s: &Scenario,
) -> anyhow::Result<ExitCode> {
    if human {
        writeln!(out, "Ops per step (all {over}):")?;
        ops.write_text(&mut out)?;
        // The FLOPs above are the model's; say what the GPU executes of them, when less.
        if let Some((executed, nominal)) = s.winograd_flops() {
            writeln!(
                out,
                "(compute FLOPs as the model counts them; in FP32 the {} runs 3x3 stride-1 convolutions by \
                 Winograd's algorithm and executes {:.1}% of them)",
                s.gpu.name,
                100.0 * executed / nominal
            )?;
        }
        writeln!(out, "\nNIC bytes per host per step:")?;
        hosts.write_text(&mut out)?;
    } else {
        ops.write_csv(&mut out)?;
        writeln!(out)?;
        hosts.write_csv(&mut out)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The ops and hosts of a plan as JSON arrays.
fn json_tables(
    totals: &[(&'static str, OpTotals)],
    traffic: &[HostTraffic],
) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let ops = totals
        .iter()
        .map(|(k, t)| serde_json::json!({"kind": k, "count": t.count, "flops": t.flops, "bytes": t.bytes.0}))
        .collect();
    let hosts = traffic
        .iter()
        .map(|h| serde_json::json!({"host": h.host.to_string(), "egress_bytes": h.egress.0, "ingress_bytes": h.ingress.0}))
        .collect();
    (ops, hosts)
}

/// The ops and hosts tables of a plan.
fn tables(totals: &[(&'static str, OpTotals)], traffic: &[HostTraffic], human: bool) -> (Table, Table) {
    let mut ops = Table::new(["op", "count_per_step", "flops_per_step", "bytes_per_step"]).right_align(&[1, 2, 3]);
    for (k, t) in totals {
        if human {
            ops.row([
                k.to_string(),
                t.count.to_string(),
                if t.flops > 0.0 { format!("{:.4}", Flops(t.flops)) } else { "-".into() },
                if t.bytes.0 > 0 { format!("{:.4}", t.bytes) } else { "-".into() },
            ]);
        } else {
            ops.row([k.to_string(), t.count.to_string(), format!("{}", t.flops), t.bytes.0.to_string()]);
        }
    }
    let mut hosts = Table::new(["hosts", "count", "egress_per_step", "ingress_per_step"]).right_align(&[1, 2, 3]);
    for (label, n, t) in grouped(traffic) {
        if human {
            hosts.row([label, n.to_string(), format!("{:.4}", t.egress), format!("{:.4}", t.ingress)]);
        } else {
            hosts.row([label, n.to_string(), t.egress.0.to_string(), t.ingress.0.to_string()]);
        }
    }
    (ops, hosts)
}

/// `topolab plan` of an all-reduce scenario: the ring's rounds and bytes.
fn all_reduce(s: &Scenario, format: Format) -> anyhow::Result<ExitCode> {
    let t = step_totals(s);
    let spec = &s.spec;
    if format == Format::Json {
        let (ops, hosts) = json_tables(&t.ops, &t.hosts);
        print_json(&serde_json::json!({
            "scenario": spec.name, "scenario_hash": s.hash, "seed": spec.seed, "kind": "all-reduce",
            "algorithm": spec.topology.algorithm.as_str(), "workers": spec.topology.workers,
            "gpus_per_host": spec.hardware.gpus_per_host, "ranks": t.ranks, "buckets": t.buckets,
            "fusion_buffer_bytes": spec.topology.fusion_buffer.0, "fusion_cycle_ns": spec.topology.fusion_cycle.0,
            "ops_per_step": ops, "hosts": hosts,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let human = format == Format::Table;
    let (ops, hosts) = tables(&t.ops, &t.hosts, human);
    let mut out = std::io::stdout().lock();
    if human {
        writeln!(
            out,
            "Plan of {} (hash {}): {} workers x {} GPU, {} all-reduce over {} ranks, no parameter servers",
            spec.name,
            s.hash,
            spec.topology.workers,
            spec.hardware.gpus_per_host,
            spec.topology.algorithm.as_str(),
            t.ranks
        )?;
        writeln!(
            out,
            "Fusion: buckets of up to {} every {}; {} bucket(s) when every gradient is ready at once \
             (with overlap, more and smaller as backward produces them)\n",
            spec.topology.fusion_buffer, spec.topology.fusion_cycle, t.buckets
        )?;
    }
    write_tables(&mut out, human, "ranks", &ops, &hosts, s)
}
