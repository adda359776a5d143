//! `topolab check`: validate scenario files.

use std::path::PathBuf;
use std::process::ExitCode;

use topolab_core::scenario::Scenario;

use super::BadInput;

/// Validate scenario files; report every problem with file:line:column.
#[derive(clap::Args)]
#[command(after_help = "\
Exit status: 0 when every scenario is valid, 2 when any is not.

Examples:
  topolab check scenarios/examples/*.toml
  topolab check --print my-cluster.toml     # also print the normalized scenario (defaults filled in)")]
pub struct Args {
    /// Scenario files (TOML).
    #[arg(required = true, value_name = "SCENARIO")]
    scenarios: Vec<PathBuf>,
    /// Print each valid scenario normalized (every default written out).
    #[arg(long)]
    print: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let mut failed = Vec::new();
    for path in &a.scenarios {
        // Every check that `run` and `sweep` make: the scenario, then each sweep point.
        match Scenario::load(path).map_err(|e| e.to_string()).and_then(|s| match s.configurations() {
            Ok(_) => Ok(s),
            Err(ps) => Err(ps.iter().map(|p| format!("{}: error: {p}", path.display())).collect::<Vec<_>>().join("\n")),
        }) {
            Ok(s) => {
                if a.print {
                    if a.scenarios.len() > 1 {
                        println!("# {}", path.display());
                    }
                    print!("{}", s.normalized());
                } else {
                    println!("ok: {} ({}, hash {})", path.display(), s.label(), s.hash);
                }
            }
            Err(e) => {
                eprintln!("{e}");
                failed.push(path.display().to_string());
            }
        }
    }
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(BadInput(format!("{} of {} scenarios invalid: {}", failed.len(), a.scenarios.len(), failed.join(", ")))
            .into())
    }
}
