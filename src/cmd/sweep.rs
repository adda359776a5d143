//! `topolab sweep`: every configuration of a scenario's sweep, in parallel, with the best
//! configurations and the Pareto front of time versus cost.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use topolab_core::best;
use topolab_core::records::SweepRecord;
use topolab_core::scenario::{Scenario, SweepPoint, TopologyKind};
pub use topolab_sim::sweep::{Row, record, records};

use super::BadInput;
use crate::output::{Format, Table, print_json};

/// Run every configuration of a scenario's [sweep] and compare them.
#[derive(clap::Args)]
#[command(after_help = "\
The [sweep] table lists axes (workers, ps, nic, batch, gpu, placement, mode) whose cartesian
product is run, and/or explicit `points = [{ workers = 8, ps = 2 }, ...]`.

Without --out the table is printed and nothing is written.

Examples:
  topolab sweep scenarios/examples/inception-v3-sweep.toml                # print the table only
  topolab sweep scenarios/examples/inception-v3-sweep.toml --out runs/sweep
  topolab sweep scenarios/examples/inception-v3-sweep.toml --out runs/sweep --jobs 2
  topolab sweep scenarios/examples/inception-v3-sweep.toml --out runs/sweep --format json")]
pub struct Args {
    /// Scenario file with a [sweep] table.
    scenario: PathBuf,
    /// Directory for sweep.csv (one row per configuration); without it nothing is written.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Configurations simulated at once (default: all cores).
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// Output format of the printed table.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    /// Also write a report (HTML, Markdown, charts) of the sweep into this directory; needs --out.
    #[arg(long, value_name = "DIR", requires = "out")]
    report: Option<PathBuf>,
}

/// The validated configurations of `base`'s sweep (just `base` without a sweep). All invalid
/// configurations are reported at once, as bad input.
pub fn configurations(base: &Scenario) -> anyhow::Result<Vec<(SweepPoint, Scenario)>> {
    base.configurations()
        .map_err(|ps| BadInput(ps.iter().map(|p| format!("error: {p}")).collect::<Vec<_>>().join("\n")).into())
}

/// Simulates every configuration on `jobs` threads (results in sweep order), with a progress
/// bar on stderr when it is a terminal.
pub fn run_all(configs: Vec<(SweepPoint, Scenario)>, jobs: Option<usize>) -> anyhow::Result<Vec<Row>> {
    let bar = indicatif::ProgressBar::new(configs.len() as u64);
    if configs.len() > 1 && std::io::stderr().is_terminal() {
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} configurations {msg}",
            )
            .expect("a valid template"),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let rows = topolab_sim::sweep::run_all(configs, jobs.unwrap_or(0), &|| bar.inc(1));
    bar.finish_and_clear();
    rows.map_err(|e| if e.is_bad_input() { BadInput(format!("error: {e}")).into() } else { anyhow::Error::new(e) })
}

/// The comparison table: one row per configuration.
pub fn table(rows: &[Row], human: bool) -> Table {
    let with_target = rows.iter().any(|r| r.target.is_some());
    let mut header = vec!["gpu", "workers", "ps", "mode", "placement", "nic", "samples_per_s", "step_s"];
    // The speedup is relative to the first row: say so unless that row is one GPU.
    let one_gpu =
        rows.first().is_some_and(|r| r.scenario.spec.topology.workers * r.scenario.spec.hardware.gpus_per_host == 1);
    if with_target {
        header.extend([
            "time_to_target",
            if one_gpu { "speedup_vs_1_gpu" } else { "speedup_vs_row_1" },
            "gpu_hours",
            "cost",
        ]);
    }
    header.push("bottleneck");
    let mut t = Table::new(header).right_align(&[1, 2, 6, 7, 8, 9, 10, 11]);
    let base_time = rows.first().and_then(|r| r.target.as_ref()).map(|t| t.time_to_target_s);
    for r in rows {
        let s = &r.scenario;
        let all_reduce = s.spec.topology.kind == TopologyKind::AllReduce;
        let mut row = vec![
            s.gpu.name.clone(),
            s.spec.topology.workers.to_string(),
            if all_reduce { "-".into() } else { s.spec.topology.ps.to_string() },
            s.spec.topology.mode.as_str().to_string(),
            if all_reduce {
                format!("{} all-reduce", s.spec.topology.algorithm.as_str())
            } else {
                s.spec.topology.placement.as_str().to_string()
            },
            s.nic.to_string(),
            format!("{:.1}", r.summary.throughput_samples_per_s),
            format!("{:.3}", r.summary.step_time_s.mean),
        ];
        if with_target {
            match &r.target {
                Some(tt) => {
                    row.push(if human {
                        best::human_duration(tt.time_to_target_s)
                    } else {
                        format!("{:.0}", tt.time_to_target_s)
                    });
                    row.push(base_time.map_or("-".into(), |b| format!("{:.1}x", b / tt.time_to_target_s)));
                    row.push(format!("{:.0}", tt.gpu_hours));
                    row.push(if human { format!("{:.0} {}", tt.cost, tt.currency) } else { format!("{:.2}", tt.cost) });
                }
                None => row.extend(["-".into(), "-".into(), "-".into(), "-".into()]),
            }
        }
        row.push(r.summary.bottleneck.clone());
        t.row(row);
    }
    t
}

/// JSON rows (one object per configuration).
pub fn json_rows(rows: &[Row]) -> Vec<serde_json::Value> {
    rows.iter()
        .map(|r| {
            let s = &r.scenario;
            let mut v = serde_json::json!({
                "scenario": s.spec.name, "gpu": s.gpu.name, "workers": s.spec.topology.workers,
                "kind": s.spec.topology.kind.as_str(),
                "ps": if s.spec.topology.kind == TopologyKind::AllReduce { 0 } else { s.spec.topology.ps },
                "mode": s.spec.topology.mode.as_str(), "placement": s.spec.topology.placement.as_str(),
                "nic_bits_per_s": s.nic.0, "batch": s.spec.batch,
                "throughput_samples_per_s": r.summary.throughput_samples_per_s,
                "step_time_s": r.summary.step_time_s, "utilization": r.summary.utilization,
                "bottleneck": r.summary.bottleneck, "scenario_hash": s.hash,
                "sweep_point": r.point.values().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
            });
            if let Some(t) = &r.target {
                for (k, x) in [
                    ("time_to_target_s", t.time_to_target_s),
                    ("steps", t.steps),
                    ("epochs", t.epochs),
                    ("examples", t.examples),
                    ("gpu_hours", t.gpu_hours),
                    ("cost", t.cost),
                    ("global_batch", t.global_batch),
                ] {
                    v[k] = serde_json::json!(x);
                }
                v["currency"] = serde_json::json!(t.currency);
                v["simulated_steps"] = serde_json::json!(t.simulated_steps);
            }
            v
        })
        .collect()
}

/// Writes sweep.csv (atomically): every axis and the summary (and target) fields, one row per
/// point.
pub fn write_csv(rows: &[Row], path: &Path) -> anyhow::Result<()> {
    let records: Vec<SweepRecord> = rows.iter().map(record).collect();
    let mut buf = Vec::new();
    topolab_core::records::write_sweep_csv(&records, &mut buf)?;
    topolab_sim::write_atomic(path, &buf)?;
    Ok(())
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let base = super::load_scenario(Some(&a.scenario))?;
    if base.spec.sweep.points() == 0 {
        return Err(BadInput(format!(
            "error: {} has no [sweep] table; add axes such as `workers = [8, 16, 32]` under [sweep]",
            a.scenario.display()
        ))
        .into());
    }
    let configs = configurations(&base)?;
    let started = Instant::now();
    let n = configs.len();
    let rows = run_all(configs, a.jobs)?;
    let wall = started.elapsed().as_secs_f64();
    let csv_path = match &a.out {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
            let p = dir.join("sweep.csv");
            write_csv(&rows, &p)?;
            let scenarios: Vec<Scenario> = rows.iter().map(|r| r.scenario.clone()).collect();
            let simulated = rows.iter().filter_map(|r| r.target.as_ref().map(|t| t.simulated_steps)).max().unwrap_or(0);
            super::run::write_assumptions(dir, &scenarios, simulated)?;
            Some(p)
        }
        None => None,
    };
    match a.format {
        Format::Json => print_json(&serde_json::json!({
            "rows": json_rows(&rows), "best_by_time": best::fastest(&records(&rows)), "best_by_cost": best::cheapest(&records(&rows)),
            "pareto": best::pareto(&records(&rows)), "ps_vs_all_reduce": best::ps_vs_all_reduce(&records(&rows)),
            "sim_wall_s": wall, "csv": csv_path.as_ref().map(|p| p.display().to_string()),
        }))?,
        Format::Csv => table(&rows, false).write_csv(std::io::stdout().lock())?,
        Format::Table => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "Sweep of {} ({} configurations)\n", base.spec.name, n)?;
            table(&rows, true).write_text(&mut out)?;
            print_best(&mut out, &rows)?;
            match &csv_path {
                Some(p) => writeln!(
                    out,
                    "\nwrote {} ({} rows) in {:.2} s of simulation wall time",
                    p.display(),
                    rows.len(),
                    wall
                )?,
                None => writeln!(
                    out,
                    "\n{} rows in {:.2} s of simulation wall time (--out DIR writes sweep.csv)",
                    rows.len(),
                    wall
                )?,
            }
        }
    }
    if let (Some(dir), Some(out)) = (&a.report, &a.out) {
        super::report::make(std::slice::from_ref(out), dir)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the best configurations and the Pareto front (chosen and worded by
/// [`topolab_core::best`], as the reports do).
pub fn print_best(out: &mut impl Write, rows: &[Row]) -> std::io::Result<()> {
    let records: Vec<SweepRecord> = rows.iter().map(record).collect();
    let versus = best::ps_vs_all_reduce(&records);
    if !versus.is_empty() {
        writeln!(out, "\nParameter servers or all-reduce, cluster by cluster:")?;
        for line in versus {
            writeln!(out, "  {line}")?;
        }
    }
    if let Some(i) = best::fastest(&records) {
        let what = if records[i].target.is_some() { "time" } else { "throughput" };
        writeln!(out, "\nBest by {what}: {}", best::describe(&records[i]))?;
    }
    if let Some(i) = best::cheapest(&records) {
        writeln!(out, "Best by cost: {}", best::describe(&records[i]))?;
        writeln!(out, "Pareto front (time vs cost; nothing else is both faster and cheaper):")?;
        for i in best::pareto(&records) {
            writeln!(out, "  {}", best::describe(&records[i]))?;
        }
    }
    Ok(())
}
