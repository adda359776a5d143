//! `topolab check`: validate scenario files.

use std::path::PathBuf;
use std::process::ExitCode;

use topolab_core::scenario::{Scenario, ScenarioError};

use super::BadInput;
use crate::output::{Format, Table, print_json};

/// Validate scenario files; report every problem with file:line:column.
#[derive(clap::Args)]
#[command(after_help = "\
Every check that `run`, `sweep` and `replay` make is made here: the fields (a field that would
change nothing is refused with the reason), the GPU memory a replica needs at its batch, the
convergence profile a target needs, and every configuration of a [sweep].

Exit status: 0 when every scenario is valid, 2 when any is not.

Examples:
  topolab check scenarios/examples/*.toml
  topolab check --print my-cluster.toml     # also print the normalized scenario (defaults filled in)
  topolab check my-cluster.toml --format json   # problems as data: file, line, column, field, message")]
pub struct Args {
    /// Scenario files (TOML).
    #[arg(required = true, value_name = "SCENARIO")]
    scenarios: Vec<PathBuf>,
    /// Print each valid scenario normalized (every default written out).
    #[arg(long, conflicts_with = "format")]
    print: bool,
    /// Output format (problems go to stderr in table format, to stdout with csv or json).
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// One problem, as data.
#[derive(serde::Serialize)]
struct Problem {
    file: String,
    line: Option<usize>,
    column: Option<usize>,
    field: String,
    message: String,
    help: Option<String>,
}

/// What `check` found in one file.
#[derive(serde::Serialize)]
struct Verdict {
    file: String,
    valid: bool,
    hash: Option<String>,
    configuration: Option<String>,
    problems: Vec<Problem>,
}

fn verdict(path: &std::path::Path) -> (Verdict, Option<Scenario>, String) {
    let file = path.display().to_string();
    let invalid = |problems: Vec<Problem>| Verdict {
        file: file.clone(),
        valid: false,
        hash: None,
        configuration: None,
        problems,
    };
    match Scenario::load(path) {
        Ok(s) => match s.configurations() {
            Ok(_) => (
                Verdict {
                    file: file.clone(),
                    valid: true,
                    hash: Some(s.hash.clone()),
                    configuration: Some(s.label()),
                    problems: vec![],
                },
                Some(s),
                String::new(),
            ),
            // Sweep points are validated from their expanded files: no line to point at.
            Err(ps) => {
                let text = ps.iter().map(|p| format!("{file}: error: {p}")).collect::<Vec<_>>().join("\n");
                let problems = ps
                    .into_iter()
                    .map(|p| Problem {
                        file: file.clone(),
                        line: None,
                        column: None,
                        field: "sweep".into(),
                        message: p,
                        help: None,
                    })
                    .collect();
                (invalid(problems), None, text)
            }
        },
        Err(e) => {
            let problems = match &e {
                ScenarioError::Invalid(ds) => ds
                    .iter()
                    .map(|d| Problem {
                        file: d.file.clone(),
                        line: Some(d.line),
                        column: Some(d.column),
                        field: d.path.clone(),
                        message: d.message.clone(),
                        help: d.help.clone(),
                    })
                    .collect(),
                ScenarioError::Io { .. } => {
                    vec![Problem {
                        file: file.clone(),
                        line: None,
                        column: None,
                        field: String::new(),
                        message: e.to_string(),
                        help: None,
                    }]
                }
            };
            (invalid(problems), None, e.to_string())
        }
    }
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let mut failed = Vec::new();
    let mut verdicts = Vec::new();
    for path in &a.scenarios {
        let (v, s, text) = verdict(path);
        if !v.valid {
            failed.push(v.file.clone());
        }
        if a.format == Format::Table {
            match s {
                Some(s) if a.print => {
                    if a.scenarios.len() > 1 {
                        println!("# {}", path.display());
                    }
                    print!("{}", s.normalized());
                }
                Some(s) => println!("ok: {} ({}, hash {})", path.display(), s.label(), s.hash),
                None => eprintln!("{text}"),
            }
        }
        verdicts.push(v);
    }
    match a.format {
        Format::Json => print_json(&verdicts)?,
        Format::Csv => {
            let mut t = Table::new(["file", "valid", "line", "column", "field", "message", "help"]);
            for v in &verdicts {
                if v.problems.is_empty() {
                    t.row([
                        v.file.clone(),
                        "true".into(),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                    ]);
                }
                for p in &v.problems {
                    let n = |x: Option<usize>| x.map(|x| x.to_string()).unwrap_or_default();
                    t.row([
                        p.file.clone(),
                        "false".into(),
                        n(p.line),
                        n(p.column),
                        p.field.clone(),
                        p.message.clone(),
                        p.help.clone().unwrap_or_default(),
                    ]);
                }
            }
            t.write_csv(std::io::stdout().lock())?;
        }
        Format::Table => {}
    }
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(BadInput(format!("{} of {} scenarios invalid: {}", failed.len(), a.scenarios.len(), failed.join(", ")))
            .into())
    }
}
