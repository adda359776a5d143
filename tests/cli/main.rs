//! End-to-end tests of the `topolab` CLI: one binary, a module per area.

mod check_scenarios;
mod conformance;
mod inspect_commands;
mod replay;
mod reports;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the topolab binary from the repository root.
pub fn topolab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_topolab"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("the topolab binary runs")
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Files in `dir` (relative to the root) with extension `ext`, sorted, as root-relative paths.
pub fn files(dir: &str, ext: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .map(|p| format!("{dir}/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    v.sort();
    v
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn exists(p: &str) -> bool {
    Path::new(&root().join(p)).exists()
}
