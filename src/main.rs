//! `topolab`: predict and replay distributed-training topologies.
//!
//! The binary wires the library crates together; each subcommand lives in `src/cmd/`.
//! Exit codes are decided here only: 0 success, 1 failure (or a regression found by `compare`),
//! 2 bad input (invalid scenario, unknown name, bad flag), 130 interrupted by Ctrl-C (143 by
//! SIGTERM, as a scheduler or `kill` stops a job); a replay
//! task (`topolab node`, started by `replay`) exits 3 when it fails.

mod cmd;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for bad input.
const EXIT_BAD_INPUT: u8 = 2;
/// The signal that interrupted a replay (0: none): the exit code is 128 + it, as shells
/// report a command stopped by a signal (130 after Ctrl-C, 143 after SIGTERM).
static INTERRUPTED_BY: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

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
  topolab schema > scenario.schema.json         # JSON Schema for editor completion
  topolab compare runs/main runs/pr --max-regression 5%   # exit 1 when the PR is slower

Exit status: 0 success; 1 failure, or a regression beyond the threshold (compare);
2 bad input (an invalid scenario, an unknown name, a bad flag); 130 interrupted (Ctrl-C),
143 stopped by SIGTERM (a replay or validation first stops its tasks and removes its network).
The replay's own tasks (`topolab node`) exit 3 when they fail."
)]
struct Cli {
    /// Without a command, `topolab` runs the main job: `topolab run` on the built-in default.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    Run(cmd::run::Args),
    Sweep(cmd::sweep::Args),
    Report(cmd::report::Args),
    Compare(cmd::compare::Args),
    Replay(cmd::replay::Args),
    Calibrate(cmd::validate::CalibrateArgs),
    Validate(cmd::validate::ValidateArgs),
    Fit(cmd::fit::Args),
    K8s(cmd::k8s::Args),
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

extern "C" fn on_signal(signal: libc::c_int) {
    INTERRUPTED_BY.store(signal, std::sync::atomic::Ordering::SeqCst);
    topolab_runtime::launcher::interrupt();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or_else(|| Command::Run(cmd::run::Args::default()));
    if matches!(command, Command::Replay(_) | Command::Validate(_)) {
        // Ctrl-C (or a SIGTERM, as `kill`, a CI timeout or a scheduler sends) stops the
        // replay's tasks and removes its namespaces before the exit (130, 143).
        // SAFETY: the handler only stores to atomics.
        unsafe {
            libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
            libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        }
    }
    if !matches!(command, Command::Replay(_) | Command::Node(_) | Command::Calibrate(_) | Command::Validate(_)) {
        // Commands that only print die quietly when their reader goes away (`topolab schema |
        // head -1`), as Unix tools do. Not those that run tasks: their sockets must see EPIPE as
        // an error, not a signal.
        // SAFETY: called before any thread starts; SIG_DFL is a valid disposition.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let result = match command {
        Command::Run(a) => cmd::run::run(a),
        Command::Sweep(a) => cmd::sweep::run(a),
        Command::Report(a) => cmd::report::run(a),
        Command::Compare(a) => cmd::compare::run(a),
        Command::Replay(a) => cmd::replay::run(a),
        Command::Calibrate(a) => cmd::validate::calibrate(a),
        Command::Validate(a) => cmd::validate::validate(a),
        Command::Fit(a) => cmd::fit::run(a),
        Command::K8s(a) => cmd::k8s::run(a),
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
            if matches!(
                e.downcast_ref::<topolab_runtime::launcher::ReplayError>(),
                Some(topolab_runtime::launcher::ReplayError::Interrupted)
            ) {
                eprintln!("error: {e:#}");
                let signal = INTERRUPTED_BY.load(std::sync::atomic::Ordering::SeqCst).clamp(1, 127);
                return ExitCode::from(128 + signal as u8);
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
