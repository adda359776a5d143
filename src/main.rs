//! `topolab`: predict and replay distributed-training topologies.
//!
//! The binary wires the library crates together; each subcommand lives in `src/cmd/`.
//! Exit codes: 0 success, 2 bad input (invalid scenario, unknown name, bad flag), 1 anything else.

mod cmd;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for bad input.
const EXIT_BAD_INPUT: u8 = 2;

#[derive(Parser)]
#[command(
    name = "topolab",
    version,
    about = "How many parameter servers and workers, on what network and GPUs, and how long until the model is trained?",
    long_about = None,
    after_help = "\
Examples:
  topolab run                                   # simulate the built-in default: Inception-v3 on one K40
  topolab sweep scenarios/examples/inception-v3-sweep.toml --out runs/sweep --report reports/sweep
  topolab replay scenarios/examples/tiny-mlp-custom-gpu.toml --launcher local --out runs/tiny
  topolab check scenarios/examples/*.toml       # validate scenarios (exit 2 on errors)
  topolab models                                # the model zoo: params, G MACs, variables
  topolab models inception-v3 --layers --format csv
  topolab placement scenarios/examples/inception-v3-64w-8ps.toml
  topolab plan scenarios/examples/inception-v3-64w-8ps.toml
  topolab schema > scenario.schema.json         # JSON Schema for editor completion"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Run(cmd::run::Args),
    Sweep(cmd::sweep::Args),
    Report(cmd::report::Args),
    Replay(cmd::replay::Args),
    Calibrate(cmd::validate::CalibrateArgs),
    Validate(cmd::validate::ValidateArgs),
    #[command(hide = true)]
    Node(cmd::replay::NodeArgs),
    Check(cmd::check::Args),
    Schema(cmd::schema::Args),
    Models(cmd::models::Args),
    Hardware(cmd::hardware::Args),
    Placement(cmd::placement::Args),
    Plan(cmd::plan::Args),
    Scenarios(cmd::scenarios::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => cmd::run::run(a),
        Command::Sweep(a) => cmd::sweep::run(a),
        Command::Report(a) => cmd::report::run(a),
        Command::Replay(a) => cmd::replay::run(a),
        Command::Calibrate(a) => cmd::validate::calibrate(a),
        Command::Validate(a) => cmd::validate::validate(a),
        Command::Node(a) => cmd::replay::node(a),
        Command::Check(a) => cmd::check::run(a),
        Command::Schema(a) => cmd::schema::run(a),
        Command::Models(a) => cmd::models::run(a),
        Command::Hardware(a) => cmd::hardware::run(a),
        Command::Placement(a) => cmd::placement::run(a),
        Command::Plan(a) => cmd::plan::run(a),
        Command::Scenarios(a) => cmd::scenarios::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if let Some(bad) = e.downcast_ref::<cmd::BadInput>() {
                eprint!("{bad}");
                if !bad.0.ends_with('\n') {
                    eprintln!();
                }
                return ExitCode::from(EXIT_BAD_INPUT);
            }
            // A closed stdout (e.g. `| head`) is not an error worth a message.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
