//! End-to-end tests of the `topolab` CLI: one binary, a module per area.

mod check_scenarios;
mod compare;
mod conformance;
mod fit;
mod inspect_commands;
mod k8s;
mod replay;
mod reports;
mod schema_walk;

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

/// Runs the topolab binary from the repository root with environment changes `env`
/// (a value of `None` removes the variable).
pub fn topolab_env(args: &[&str], env: &[(&str, Option<&std::ffi::OsStr>)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_topolab"));
    c.args(args).current_dir(root());
    for (k, v) in env {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.output().expect("the topolab binary runs")
}

/// The one line a refusal prints, asserting exit status 2 (bad input).
pub fn bad_input_line(o: &Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
    e
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

/// A scratch directory under the system's temporary folder that is removed when dropped, also
/// when the test fails (the panic unwinds through it).
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh, empty `topolab-NAME-PID` directory.
    pub fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("topolab-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("the temporary folder is writable");
        TempDir(d)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
