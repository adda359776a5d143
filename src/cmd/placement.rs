//! `topolab placement`: how variables land on parameter-server shards.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use topolab_core::placement::Placement;
use topolab_core::scenario::{PlacementKind, Scenario};
use topolab_core::units::Bytes;

use crate::output::{Format, Table, num, print_json};

/// Show bytes per PS shard and the max/mean imbalance of every placement strategy, side by side.
#[derive(clap::Args)]
#[command(after_help = "\
Round-robin is what TensorFlow's replica_device_setter does: variable i on shard i mod ps, in
creation order, whatever its size; that is why some parameter servers run hot.

Examples:
  topolab placement scenarios/examples/inception-v3-64w-8ps.toml
  topolab placement scenarios/examples/inception-v3-64w-8ps.toml --format json")]
pub struct Args {
    /// Scenario file (default: the built-in default scenario).
    scenario: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

const KINDS: [PlacementKind; 3] = [PlacementKind::RoundRobin, PlacementKind::Greedy, PlacementKind::Partitioned];

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let s = super::load_scenario(a.scenario.as_deref())?;
    let ps = s.spec.topology.ps;
    let all: Vec<Placement> = KINDS.iter().map(|&k| placement(&s, k)).collect();
    match a.format {
        Format::Json => {
            let strategies: Vec<serde_json::Value> = all
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "kind": p.kind.as_str(),
                        "shard_bytes": p.shard_bytes().iter().map(|b| b.0).collect::<Vec<_>>(),
                        "shard_parts": p.shard_parts(),
                        "imbalance": p.imbalance(),
                        "heaviest_shard": p.heaviest_shard(),
                    })
                })
                .collect();
            print_json(&serde_json::json!({
                "scenario": s.spec.name, "scenario_hash": s.hash, "model": s.model.name, "shards": ps,
                "variables": s.model.variable_count(), "bytes": s.model.bytes().0,
                "partition_threshold": s.spec.topology.partition_threshold.0,
                "chosen": s.spec.topology.placement.as_str(), "strategies": strategies,
            }))?;
        }
        Format::Csv | Format::Table => {
            let mut header = vec!["shard".to_string()];
            for p in &all {
                let mark = if p.kind == s.spec.topology.placement { "*" } else { "" };
                header.push(format!("{}{mark}_bytes", p.kind.as_str()));
                header.push(format!("{}{mark}_vars", p.kind.as_str()));
            }
            let mut t = Table::new(header).right_align(&[1, 2, 3, 4, 5, 6]);
            let bytes: Vec<Vec<Bytes>> = all.iter().map(Placement::shard_bytes).collect();
            let parts: Vec<Vec<usize>> = all.iter().map(Placement::shard_parts).collect();
            let human = a.format == Format::Table;
            for shard in 0..ps as usize {
                let mut row = vec![shard.to_string()];
                for k in 0..all.len() {
                    row.push(if human { format!("{:.2}", bytes[k][shard]) } else { bytes[k][shard].0.to_string() });
                    row.push(parts[k][shard].to_string());
                }
                t.row(row);
            }
            let mut row = vec!["max/mean".to_string()];
            for p in &all {
                row.push(num(p.imbalance(), 3));
                row.push(String::new());
            }
            t.row(row);
            let mut out = std::io::stdout().lock();
            if human {
                writeln!(
                    out,
                    "{}: {} variables, {:.2} on {} PS shards (partition threshold {}); * = the scenario's placement",
                    s.model.name,
                    s.model.variable_count(),
                    s.model.bytes(),
                    ps,
                    s.spec.topology.partition_threshold
                )?;
                t.write_text(&mut out)?;
                let rr = &all[0];
                let hot = rr.heaviest_shard();
                let share = rr.shard_bytes()[hot as usize].0 as f64 / s.model.bytes().0.max(1) as f64;
                writeln!(
                    out,
                    "round-robin puts {:.0}% of the bytes on shard {hot} ({:.2}x the mean); greedy {:.2}x; partitioned {:.2}x",
                    share * 100.0,
                    rr.imbalance(),
                    all[1].imbalance(),
                    all[2].imbalance()
                )?;
            } else {
                t.write_csv(&mut out)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn placement(s: &Scenario, kind: PlacementKind) -> Placement {
    Placement::new(&s.model, s.spec.topology.ps, kind, s.spec.topology.partition_threshold)
}
