//! `topolab scenarios`: the built-in scenarios.

use std::process::ExitCode;

use super::{BUILTIN_SCENARIOS, BadInput};

/// List the built-in scenarios, or print one to start your own from.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  topolab scenarios
  topolab scenarios default > my-cluster.toml   # then edit and `topolab check my-cluster.toml`")]
pub struct Args {
    /// A built-in scenario to print as TOML.
    name: Option<String>,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    match a.name {
        None => {
            for (name, desc, _) in BUILTIN_SCENARIOS {
                println!("{name:<10} {desc}");
            }
        }
        Some(n) => match BUILTIN_SCENARIOS.iter().find(|(name, _, _)| *name == n) {
            Some((_, _, text)) => print!("{text}"),
            None => {
                let names: Vec<&str> = BUILTIN_SCENARIOS.iter().map(|s| s.0).collect();
                return Err(
                    BadInput(format!("error: no built-in scenario `{n}`; built-in: {}", names.join(", "))).into()
                );
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}
