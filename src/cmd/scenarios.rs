//! `topolab scenarios`: the built-in scenarios.

use std::process::ExitCode;

use super::{BUILTIN_SCENARIOS, BadInput};
use crate::output::{Format, Table, print_json};

/// List the built-in scenarios, or print one to start your own from.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  topolab scenarios
  topolab scenarios --format json
  topolab scenarios default > my-cluster.toml   # then edit and `topolab check my-cluster.toml`")]
pub struct Args {
    /// A built-in scenario to print as TOML.
    name: Option<String>,
    /// Output format of the list.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    match a.name {
        None => {
            let mut t = Table::new(["name", "description"]);
            for (name, desc, _) in BUILTIN_SCENARIOS {
                t.row([name.to_string(), desc.to_string()]);
            }
            match a.format {
                Format::Json => print_json(
                    &BUILTIN_SCENARIOS
                        .iter()
                        .map(|(name, desc, _)| serde_json::json!({"name": name, "description": desc}))
                        .collect::<Vec<_>>(),
                )?,
                Format::Csv => t.write_csv(std::io::stdout().lock())?,
                Format::Table => t.write_text(std::io::stdout().lock())?,
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
