//! `topolab report`: turn run directories into a report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::BadInput;

/// Make a report (Markdown, self-contained HTML, SVG and PNG charts, CSV data) of run directories.
#[derive(clap::Args)]
#[command(after_help = "\
A run directory is what `topolab run --out DIR` (summary.json, steps.csv, trace.json) or
`topolab sweep --out DIR` (sweep.csv) writes. Two runs are also compared side by side.

Examples:
  topolab run scenarios/examples/inception-v3-64w-8ps.toml --out runs/a
  topolab report runs/a --out reports/a
  topolab report runs/predicted runs/measured --out reports/compare    # side by side
  topolab sweep scenarios/examples/inception-v3-sweep.toml --out runs/sweep --report reports/sweep")]
pub struct Args {
    /// Run directories.
    #[arg(required = true, value_name = "RUN_DIR")]
    runs: Vec<PathBuf>,
    /// Directory for report.md, report.html, charts/ and data/.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// Renders a report of `runs` into `out` and says where it is.
pub fn make(runs: &[PathBuf], out: &Path) -> anyhow::Result<()> {
    let mut inputs = Vec::new();
    for r in runs {
        inputs.push(topolab_reports::load(r).map_err(|e| match e {
            topolab_reports::ReportError::NotARun { .. } | topolab_reports::ReportError::Read { .. } => {
                anyhow::Error::new(BadInput(format!("error: {e}")))
            }
            other => anyhow::Error::new(other),
        })?);
    }
    let files = topolab_reports::render(&inputs, out)?;
    eprintln!(
        "wrote {} and {} ({} chart files, {} data files)",
        files.html.display(),
        files.markdown.display(),
        files.charts.len(),
        files.data.len()
    );
    Ok(())
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    make(&a.runs, &a.out)?;
    Ok(ExitCode::SUCCESS)
}
