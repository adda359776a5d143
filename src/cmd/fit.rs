//! `topolab fit`: a profile from measured runs.

use std::path::PathBuf;
use std::process::ExitCode;

use topolab_sim::measured::{self, FitError};

use super::BadInput;
use crate::output::{Format, print_json};

/// Fit a profile to measured runs: compute, goodput and per-message cost from step times.
#[derive(clap::Args)]
#[command(after_help = "\
Each RUN_DIR holds the run's scenario (scenario.toml, or a replay's effective.toml) and
steps.csv: one row per worker and step with worker, step and step_time_s, or start_ns and
end_ns (other columns are ignored); a compute_ns or compute_s column gives each step's compute.
Per-layer compute comes from an ops.csv (topolab's: compute-forward and compute-backward rows
with the layer's index), or else from a Chrome trace, trace.json, as TensorFlow's timeline and
the PyTorch profiler export it: each complete event whose name (or args.name, TensorFlow's node
name) contains a layer's name as whole parts (InceptionV3/Conv2d_1a_3x3 in
InceptionV3/InceptionV3/Conv2d_1a_3x3/Conv2D) is that layer's op, backward when named like
gradients/..., ..._grad, ...Backward... or ...Backprop...; a layer's time is the sum of its
ops' median durations (each op runs once a step). Without a compute column, the trace's
layers are the step's compute. topolab's own run directories (topolab replay --out DIR) work
as they are; the trace.json of a simulated run (topolab run --out DIR) is the simulator's own
drawing and is not read.

Every value the runs identify is fitted and printed with the runs it came from; what they
cannot identify is refused with the reason and keeps its default. The residual per run is the
fitted profile's prediction against the measured median step time. Use the profile with
`topolab run S --profile P` or `hardware.profile = \"P\"` in a scenario.

Examples:
  topolab replay S1.toml --out runs/1 && topolab replay S2.toml --out runs/2 && topolab replay S3.toml --out runs/3
  topolab fit runs/1 runs/2 runs/3 --out profile.toml
  topolab run runs/4w/effective.toml --profile profile.toml     # predict a 4-worker run")]
pub struct Args {
    /// Run directories.
    #[arg(required = true, value_name = "RUN_DIR")]
    runs: Vec<PathBuf>,
    /// Where to write the profile (TOML).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Output format of the printed report.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let bad = |e: FitError| anyhow::Error::new(BadInput(format!("error: {e}")));
    let runs = a.runs.iter().map(|d| measured::load(d)).collect::<Result<Vec<_>, _>>().map_err(bad)?;
    let report = measured::fit(&runs, &topolab_runtime::calibrate::now_utc()).map_err(bad)?;
    topolab_sim::write_atomic(&a.out, report.profile.to_toml().as_bytes())?;
    match a.format {
        Format::Json => {
            let v = serde_json::json!({
                "profile": a.out.display().to_string(),
                "fitted": report.params.iter().map(|p| serde_json::json!({"name": p.name, "value": p.value, "runs": p.runs, "how": p.how})).collect::<Vec<_>>(),
                "refused": report.refused.iter().map(|r| serde_json::json!({"name": r.name, "why": r.why})).collect::<Vec<_>>(),
                "residuals": report.residuals.iter().map(|r| serde_json::json!({"run": r.run, "measured_p50_s": r.measured_p50_s, "predicted_p50_s": r.predicted_p50_s, "measured_p10_p90_s": [r.measured_p10_p90_s.0, r.measured_p10_p90_s.1], "predicted_p10_p90_s": [r.predicted_p10_p90_s.0, r.predicted_p10_p90_s.1], "error": r.error()})).collect::<Vec<_>>(),
            });
            print_json(&v)?;
        }
        Format::Csv => {
            println!("run,measured_p50_s,predicted_p50_s,error");
            for r in &report.residuals {
                println!("{},{},{},{}", r.run, r.measured_p50_s, r.predicted_p50_s, r.error());
            }
        }
        Format::Table => {
            println!("Fitted ({} run(s))", runs.len());
            for p in &report.params {
                println!("  {:<26} {:<22} {} (from {})", p.name, p.value, p.how, p.runs.join(", "));
            }
            println!("Not fitted");
            for r in &report.refused {
                println!("  {:<26} {}", r.name, r.why);
            }
            println!("Residuals (median step time; p10-p90)");
            for r in &report.residuals {
                println!(
                    "  {:<40} measured {:>9.4} s ({:.4}-{:.4})  predicted {:>9.4} s ({:.4}-{:.4})  {:+.1}%",
                    r.run,
                    r.measured_p50_s,
                    r.measured_p10_p90_s.0,
                    r.measured_p10_p90_s.1,
                    r.predicted_p50_s,
                    r.predicted_p10_p90_s.0,
                    r.predicted_p10_p90_s.1,
                    r.error() * 100.0
                );
            }
            println!("wrote {}", a.out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
