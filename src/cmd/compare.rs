//! `topolab compare`: two runs, or two sweeps matched by configuration, metric by metric; exit 1
//! when a metric regresses beyond the threshold. For gating a pull request in CI.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use topolab_core::compare::{self, Labelled, Metric};
use topolab_core::records;

use super::BadInput;
use crate::output::{Format, Table, print_json};

/// Compare a new run (or sweep) with a baseline; exit 1 when a metric regresses.
#[derive(clap::Args)]
#[command(after_help = "\
BASELINE and NEW are run directories (summary.json, from `topolab run --out` or `topolab replay
--out`), sweep directories (sweep.csv, from `topolab sweep --out`), or those files themselves.
Two sweeps are matched configuration by configuration (every axis); configurations only one
side has are listed. Step times, time to target, cost and GPU-hours regress when they grow;
throughput regresses when it falls.

Metrics: step_p50, step_p90, step_p99, step_mean, throughput, time_to_target, cost, gpu_hours
(default: step_p50 and throughput, plus time_to_target and cost when both sides have a target).

Exit status: 0 when no metric regresses by more than --max-regression, 1 when one does,
2 on bad input (a missing file, an unknown metric, nothing in common).

Examples:
  topolab compare runs/main runs/pr                                 # step p50 and throughput, 5%
  topolab compare runs/main runs/pr --metric step_p90 --max-regression 2%
  topolab compare runs/sweep-main runs/sweep-pr --metric time_to_target --format json

Gating a pull request (CI):
  git worktree add ../main origin/main && (cd ../main && cargo run --release -- run S.toml --out ../base)
  cargo run --release -- run S.toml --out new
  cargo run --release -- compare ../base new --max-regression 5%  # fails the job on a regression")]
pub struct Args {
    /// The baseline: a run or sweep directory, summary.json or sweep.csv.
    #[arg(value_name = "BASELINE")]
    baseline: PathBuf,
    /// The new run: same kinds as BASELINE.
    #[arg(value_name = "NEW")]
    new: PathBuf,
    /// Metric to compare (repeat for several).
    #[arg(long = "metric", value_name = "METRIC")]
    metrics: Vec<String>,
    /// Largest tolerated regression, percent (`5%` or `5`).
    #[arg(long, value_name = "PCT", default_value = "5%")]
    max_regression: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// Reads one side: a single run (one unlabelled summary) or a sweep (one per configuration).
fn load(path: &Path) -> anyhow::Result<Vec<Labelled>> {
    let file = if path.is_dir() {
        ["summary.json", "sweep.csv"].iter().map(|f| path.join(f)).find(|p| p.is_file()).ok_or_else(|| {
            BadInput(format!(
                "error: {} has neither summary.json (a run) nor sweep.csv (a sweep); write one with `topolab run --out` or `topolab sweep --out`",
                path.display()
            ))
        })?
    } else {
        path.to_path_buf()
    };
    let origin = file.display().to_string();
    let f = std::fs::File::open(&file).map_err(|e| BadInput(format!("error: {origin}: {e}")))?;
    let bad = |e: records::RecordError| BadInput(format!("error: {e}"));
    if file.extension().is_some_and(|e| e == "csv") {
        let rows = records::read_sweep_csv(f, &origin).map_err(bad)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let mut summary = r.summary.clone();
                summary.target = r.target.clone();
                Labelled { configuration: compare::configuration(&r), summary }
            })
            .collect())
    } else {
        let summary = records::read_summary_json(f, &origin).map_err(bad)?;
        Ok(vec![Labelled { configuration: String::new(), summary }])
    }
}

fn parse_pct(s: &str) -> Result<f64, BadInput> {
    s.trim()
        .trim_end_matches('%')
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x >= 0.0)
        .ok_or_else(|| BadInput(format!("error: --max-regression: expected a percentage such as 5%, got `{s}`")))
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let threshold = parse_pct(&a.max_regression)?;
    let (base, new) = (load(&a.baseline)?, load(&a.new)?);
    if (base.len() == 1 && base[0].configuration.is_empty()) != (new.len() == 1 && new[0].configuration.is_empty()) {
        return Err(BadInput("error: compare a run with a run, or a sweep with a sweep".into()).into());
    }
    let metrics = if a.metrics.is_empty() {
        compare::default_metrics(&base, &new)
    } else {
        a.metrics
            .iter()
            .map(|m| {
                Metric::from_name(m).ok_or_else(|| {
                    let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
                    BadInput(format!("error: unknown metric `{m}`; metrics: {}", names.join(", ")))
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    let c = compare::compare(&base, &new, &metrics, threshold).map_err(|e| BadInput(format!("error: {e}")))?;
    match a.format {
        Format::Json => print_json(&serde_json::json!({
            "baseline": a.baseline.display().to_string(),
            "new": a.new.display().to_string(),
            "comparison": c,
        }))?,
        Format::Table | Format::Csv => {
            let mut t =
                Table::new(["configuration", "metric", "baseline", "new", "change", "verdict"]).right_align(&[2, 3, 4]);
            for r in &c.rows {
                let unit = r.metric.unit();
                let v = |x: f64| if unit.is_empty() { format!("{x:.6}") } else { format!("{x:.6} {unit}") };
                let verdict = if r.regressed {
                    format!("REGRESSION ({:.1}% worse)", r.regression_pct)
                } else if r.regression_pct < 0.0 {
                    "better".into()
                } else {
                    "ok".into()
                };
                let conf = if r.configuration.is_empty() { "-".into() } else { r.configuration.clone() };
                t.row([
                    conf,
                    r.metric.name().into(),
                    v(r.baseline),
                    v(r.new),
                    format!("{:+.2}%", r.change_pct),
                    verdict,
                ]);
            }
            if a.format == Format::Csv {
                t.write_csv(std::io::stdout().lock())?;
            } else {
                println!(
                    "Baseline {}  vs  new {}  (max regression {threshold}%)\n",
                    a.baseline.display(),
                    a.new.display()
                );
                t.write_text(std::io::stdout().lock())?;
                for x in &c.baseline_only {
                    println!("only in the baseline: {x}");
                }
                for x in &c.new_only {
                    println!("only in the new run: {x}");
                }
                for (conf, b, n) in &c.different_scenarios {
                    let at = if conf.is_empty() { String::new() } else { format!(" at {conf}") };
                    println!(
                        "note: the scenarios differ{at} (hash {b} vs {n}): this compares two scenarios, not two versions of one"
                    );
                }
                let worse = c.rows.iter().filter(|r| r.regressed).count();
                if c.regressed {
                    println!("\n{worse} of {} comparisons regressed by more than {threshold}%", c.rows.len());
                } else {
                    println!("\nno regression beyond {threshold}% ({} comparisons)", c.rows.len());
                }
            }
        }
    }
    Ok(if c.regressed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
