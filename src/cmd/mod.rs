//! Subcommands, and what they share: loading scenarios and reporting bad input.

pub mod check;
pub mod compare;
pub mod fit;
pub mod hardware;
pub mod k8s;
pub mod models;
pub mod placement;
pub mod plan;
pub mod replay;
pub mod report;
pub mod run;
pub mod scenarios;
pub mod schema;
pub mod sweep;
pub mod validate;

use std::fmt;
use std::path::Path;

use topolab_core::scenario::{Scenario, ScenarioError};

/// Bad input from the user: printed as is, exit code 2.
#[derive(Debug)]
pub struct BadInput(pub String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// Problems of a scenario changed after loading (a command-line override), as [`BadInput`].
pub fn problems(ps: Vec<topolab_core::scenario::Problem>) -> anyhow::Error {
    BadInput(ps.iter().map(|p| format!("error: {p}")).collect::<Vec<_>>().join("\n")).into()
}

/// The built-in scenarios: (name, description, TOML text).
pub const BUILTIN_SCENARIOS: &[(&str, &str, &str)] = &[(
    "default",
    "Inception-v3 to 78% top-1 on K40s (the half-year baseline)",
    include_str!("../../scenarios/default.toml"),
)];

/// Loads a scenario file, or the built-in default when `path` is `None`. An invalid scenario
/// or a missing file is [`BadInput`].
pub fn load_scenario(path: Option<&Path>) -> anyhow::Result<Scenario> {
    let result = match path {
        Some(p) => Scenario::load(p),
        None => {
            let (name, _, text) = BUILTIN_SCENARIOS[0];
            Scenario::parse(text, &format!("<built-in {name}>"), name, None)
        }
    };
    result.map_err(|e| match e {
        ScenarioError::Invalid(_) | ScenarioError::Io { .. } => anyhow::Error::new(BadInput(e.to_string())),
    })
}
