//! `topolab schema`: the JSON Schema of the scenario format.

use std::process::ExitCode;

/// Print the JSON Schema of the scenario format (for editor completion).
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  topolab schema > scenario.schema.json
  # Taplo / Even Better TOML: add `#:schema ./scenario.schema.json` as the first line of a scenario")]
pub struct Args {}

pub fn run(_: Args) -> anyhow::Result<ExitCode> {
    crate::output::print_json(&topolab_core::scenario::json_schema())?;
    Ok(ExitCode::SUCCESS)
}
