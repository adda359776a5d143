//! The instruction-count regression guard: compares the Callgrind instruction counts of
//! `benches/benches/instructions.rs` (gungraun's JSON lines) with the committed baselines.
//!
//! ```text
//! perf-guard check  RUN.jsonl [--baseline FILE] [--tolerance 2%]   # exit 1 on a regression
//! perf-guard update RUN.jsonl [--baseline FILE]                    # write the baselines
//! ```
//!
//! `benches/perf-guard check|update` runs the benches and then this program.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::{Deserialize, Serialize};

/// The committed baselines: instruction counts per benchmark, and what produced them.
#[derive(Debug, Serialize, Deserialize)]
struct Baselines {
    /// How to refresh this file.
    refresh: String,
    /// `rustc --version` and `valgrind --version` of the run that wrote it: counts move with
    /// either, so a mismatch is reported next to any difference.
    toolchain: Toolchain,
    /// Instructions executed (Callgrind's Ir) per benchmark, `function/id`.
    instructions: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Toolchain {
    rustc: String,
    valgrind: String,
}

fn version(cmd: &str) -> String {
    std::process::Command::new(cmd)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Instruction counts of one gungraun run (one JSON object per benchmark and line).
fn read_run(path: &Path) -> Result<BTreeMap<String, u64>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| l.trim_start().starts_with('{')) {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{}:{}: not gungraun JSON: {e}", path.display(), i + 1))?;
        let name = match (v["function_name"].as_str(), v["id"].as_str()) {
            (Some(f), Some(id)) => format!("{f}/{id}"),
            (Some(f), None) => f.to_string(),
            _ => return Err(format!("{}:{}: no function_name", path.display(), i + 1)),
        };
        let ir = v["profiles"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["tool"] == "Callgrind")
            .and_then(|p| p["data"]["total"]["metrics"]["Ir"]["values"]["new"].as_u64())
            .ok_or_else(|| format!("{}:{}: {name} has no Callgrind Ir count", path.display(), i + 1))?;
        out.insert(name, ir);
    }
    if out.is_empty() {
        return Err(format!("{}: no benchmark results (did the benches run?)", path.display()));
    }
    Ok(out)
}

/// One benchmark's line: (name, baseline, new, change in %, verdict).
type Row = (String, Option<u64>, Option<u64>, Option<f64>, &'static str);

/// Outcome of comparing one run with the baselines.
#[derive(Debug, PartialEq)]
struct Comparison {
    rows: Vec<Row>,
    failed: bool,
}

fn compare(base: &BTreeMap<String, u64>, run: &BTreeMap<String, u64>, tolerance_pct: f64) -> Comparison {
    let mut rows = Vec::new();
    let mut failed = false;
    let names: std::collections::BTreeSet<&String> = base.keys().chain(run.keys()).collect();
    for name in names {
        let (b, n) = (base.get(name).copied(), run.get(name).copied());
        let (change, verdict) = match (b, n) {
            (Some(b), Some(n)) => {
                let pct = (n as f64 - b as f64) / (b.max(1) as f64) * 100.0;
                let verdict = if pct > tolerance_pct {
                    failed = true;
                    "REGRESSION"
                } else if pct < -tolerance_pct {
                    "faster (refresh the baselines)"
                } else {
                    "ok"
                };
                (Some(pct), verdict)
            }
            (None, Some(_)) => {
                failed = true;
                (None, "NEW: no baseline (refresh the baselines)")
            }
            (Some(_), None) => {
                failed = true;
                (None, "MISSING: the benchmark did not run")
            }
            (None, None) => unreachable!("a name comes from one of the two maps"),
        };
        rows.push((name.clone(), b, n, change, verdict));
    }
    Comparison { rows, failed }
}

fn print_table(c: &Comparison, tolerance_pct: f64) {
    let cell = |x: Option<u64>| x.map_or_else(|| "-".to_string(), |v| v.to_string());
    let w = c.rows.iter().map(|r| r.0.len()).max().unwrap_or(9).max(9);
    println!(
        "{:<w$}  {:>14}  {:>14}  {:>8}  verdict (tolerance {tolerance_pct}%)",
        "benchmark", "baseline Ir", "new Ir", "change"
    );
    for (name, b, n, pct, verdict) in &c.rows {
        let pct = pct.map_or_else(|| "-".to_string(), |p| format!("{p:+.2}%"));
        println!("{name:<w$}  {:>14}  {:>14}  {pct:>8}  {verdict}", cell(*b), cell(*n));
    }
}

fn parse_pct(s: &str) -> Result<f64, String> {
    let t = s.trim().trim_end_matches('%');
    t.parse::<f64>().ok().filter(|x| *x >= 0.0).ok_or_else(|| format!("--tolerance: expected e.g. 2%, got `{s}`"))
}

const REFRESH: &str = "benches/perf-guard update";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("perf-guard: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: perf-guard check|update RUN.jsonl [--baseline FILE] [--tolerance PCT]";
    let (cmd, file) = match (args.first(), args.get(1)) {
        (Some(c), Some(f)) => (c.as_str(), PathBuf::from(f)),
        _ => return Err(usage.into()),
    };
    let mut baseline = Path::new(env!("CARGO_MANIFEST_DIR")).join("baselines/instructions.json");
    let mut tolerance = 2.0;
    let mut rest = args[2..].iter();
    while let Some(a) = rest.next() {
        match a.as_str() {
            "--baseline" => baseline = rest.next().ok_or(usage)?.into(),
            "--tolerance" => tolerance = parse_pct(rest.next().ok_or(usage)?)?,
            other => return Err(format!("unknown argument `{other}`; {usage}")),
        }
    }
    let run = read_run(&file)?;
    let toolchain = Toolchain { rustc: version("rustc"), valgrind: version("valgrind") };
    match cmd {
        "update" => {
            let b = Baselines { refresh: REFRESH.into(), toolchain, instructions: run };
            let mut text = serde_json::to_string_pretty(&b).expect("baselines are JSON");
            text.push('\n');
            topolab_core::atomic::write_atomic(&baseline, text.as_bytes())
                .map_err(|e| format!("{}: {e}", baseline.display()))?;
            println!("wrote {} ({} benchmarks)", baseline.display(), b.instructions.len());
            Ok(ExitCode::SUCCESS)
        }
        "check" => {
            let text = std::fs::read_to_string(&baseline).map_err(|e| format!("{}: {e}", baseline.display()))?;
            let b: Baselines = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", baseline.display()))?;
            let c = compare(&b.instructions, &run, tolerance);
            print_table(&c, tolerance);
            if b.toolchain != toolchain {
                println!(
                    "note: the baselines were written with {} / {}, this run used {} / {}; counts move with the toolchain",
                    b.toolchain.rustc, b.toolchain.valgrind, toolchain.rustc, toolchain.valgrind
                );
            }
            if c.failed {
                println!(
                    "instruction-count guard FAILED: a change beyond {tolerance}% (or a benchmark added or gone)."
                );
                println!("If the change is intended, refresh the baselines with `{REFRESH}` and commit them.");
                Ok(ExitCode::FAILURE)
            } else {
                println!("instruction-count guard passed: every benchmark within {tolerance}% of its baseline.");
                Ok(ExitCode::SUCCESS)
            }
        }
        other => Err(format!("unknown command `{other}`; {usage}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: &[(&str, u64)]) -> BTreeMap<String, u64> {
        v.iter().map(|(k, x)| (k.to_string(), *x)).collect()
    }

    #[test]
    fn a_count_over_the_tolerance_fails_and_one_within_passes() {
        let base = map(&[("a", 1000), ("b", 1000)]);
        // a: +1.5% (within 2%), b: +3% (over).
        let c = compare(&base, &map(&[("a", 1015), ("b", 1030)]), 2.0);
        assert!(c.failed);
        assert_eq!(c.rows[0].4, "ok");
        assert_eq!(c.rows[1].4, "REGRESSION");
        assert!((c.rows[1].3.unwrap() - 3.0).abs() < 1e-9);
        assert!(!compare(&base, &map(&[("a", 1000), ("b", 900)]), 2.0).failed);
    }

    #[test]
    fn a_benchmark_without_baseline_or_without_result_fails() {
        let base = map(&[("a", 1000)]);
        assert!(compare(&base, &map(&[("a", 1000), ("new", 5)]), 2.0).failed);
        assert!(compare(&base, &map(&[]), 2.0).failed);
    }

    #[test]
    fn tolerance_takes_a_percentage() {
        assert_eq!(parse_pct("2%"), Ok(2.0));
        assert_eq!(parse_pct("0.5"), Ok(0.5));
        assert!(parse_pct("-1%").is_err() && parse_pct("x").is_err());
    }
}
