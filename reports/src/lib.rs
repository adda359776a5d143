//! topolab-reports: turns run directories into reports a person reads and a program parses.
//!
//! [`load`] reads a run directory (`summary.json`, `steps.csv`, `trace.json` of a run or a
//! replay, `sweep.csv` of a sweep, `validation.csv` of a validation) into an [`Input`];
//! [`render`] writes, for any list of inputs:
//!
//! - `report.md`: tables and links to the PNG charts;
//! - `report.html`: self-contained (inline CSS, charts as inline SVG, no external URL);
//! - `charts/NAME.svg` and `charts/NAME.png` (see [`charts`]);
//! - `data/NAME.csv`: the data behind every chart and table.
//!
//! Two runs side by side (`topolab report A B`) get a comparison table with relative
//! differences and a predicted (A) versus measured (B) scatter.
#![warn(missing_docs)]

pub mod charts;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use charts::{BreakdownChart, Chart, LineChart, ParetoChart, ScatterChart, Series, TimelineChart, quote};
use topolab_core::best;
use topolab_core::records::{self, RunSummary, StepRecord, SweepRecord};

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A run directory is not one.
    #[error("{dir}: not a run directory (expected summary.json, sweep.csv or validation.csv)")]
    NotARun {
        /// The directory.
        dir: String,
    },
    /// A file could not be read or parsed.
    #[error("{path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// An output could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A chart could not be drawn.
    #[error("chart {name}: {message}")]
    Chart {
        /// The chart.
        name: String,
        /// What went wrong.
        message: String,
    },
}

/// A busy span of the Chrome trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSpan {
    /// Host (process) name.
    pub host: String,
    /// Lane (thread) name.
    pub lane: String,
    /// What ran.
    pub name: String,
    /// Start, microseconds since the run began.
    pub start_us: f64,
    /// Duration, microseconds.
    pub dur_us: f64,
}

/// A single run.
#[derive(Debug, Clone)]
pub struct RunInput {
    /// Its directory.
    pub dir: PathBuf,
    /// The summary.
    pub summary: RunSummary,
    /// Step records (may be empty).
    pub steps: Vec<StepRecord>,
    /// Trace spans (may be empty).
    pub trace: Vec<TraceSpan>,
}

/// A sweep.
#[derive(Debug, Clone)]
pub struct SweepInput {
    /// Its directory.
    pub dir: PathBuf,
    /// One record per configuration.
    pub rows: Vec<SweepRecord>,
}

/// A validation: per configuration, predicted and measured figures (validation.csv).
#[derive(Debug, Clone)]
pub struct ValidationInput {
    /// Its directory.
    pub dir: PathBuf,
    /// One record per configuration.
    pub rows: Vec<records::ValidationRecord>,
}

/// What a run directory holds.
#[derive(Debug, Clone)]
pub enum Input {
    /// A run.
    Run(Box<RunInput>),
    /// A sweep.
    Sweep(SweepInput),
    /// A validation.
    Validation(ValidationInput),
}

impl Input {
    fn name(&self) -> String {
        match self {
            Input::Run(r) => r.summary.scenario.clone(),
            Input::Sweep(s) => {
                s.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "sweep".into())
            }
            Input::Validation(v) => {
                v.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "validation".into())
            }
        }
    }
}

fn read_err(path: &Path, message: impl ToString) -> ReportError {
    ReportError::Read { path: path.display().to_string(), message: message.to_string() }
}

/// The assumptions a run or sweep was predicted under (`assumptions.txt`, written next to its
/// records by `topolab run` and `topolab sweep`), as notes.
fn assumptions(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("assumptions.txt"))
        .map(|t| {
            let lines: Vec<String> = t.lines().filter(|l| !l.trim().is_empty()).map(|l| l.trim().to_string()).collect();
            if lines.is_empty() { lines } else { std::iter::once("Assumptions:".to_string()).chain(lines).collect() }
        })
        .unwrap_or_default()
}

/// Reads a run directory.
pub fn load(dir: &Path) -> Result<Input, ReportError> {
    let validation = dir.join("validation.csv");
    if validation.exists() {
        let f = std::fs::File::open(&validation).map_err(|e| read_err(&validation, e))?;
        let rows =
            records::read_validation_csv(f, &validation.display().to_string()).map_err(|e| read_err(&validation, e))?;
        return Ok(Input::Validation(ValidationInput { dir: dir.to_path_buf(), rows }));
    }
    let sweep = dir.join("sweep.csv");
    if sweep.exists() {
        let f = std::fs::File::open(&sweep).map_err(|e| read_err(&sweep, e))?;
        let rows = records::read_sweep_csv(f, &sweep.display().to_string()).map_err(|e| read_err(&sweep, e))?;
        return Ok(Input::Sweep(SweepInput { dir: dir.to_path_buf(), rows }));
    }
    let summary_path = dir.join("summary.json");
    if !summary_path.exists() {
        return Err(ReportError::NotARun { dir: dir.display().to_string() });
    }
    let f = std::fs::File::open(&summary_path).map_err(|e| read_err(&summary_path, e))?;
    let summary =
        records::read_summary_json(f, &summary_path.display().to_string()).map_err(|e| read_err(&summary_path, e))?;
    let steps_path = dir.join("steps.csv");
    let steps = if steps_path.exists() {
        let f = std::fs::File::open(&steps_path).map_err(|e| read_err(&steps_path, e))?;
        records::read_steps_csv(f, &steps_path.display().to_string()).map_err(|e| read_err(&steps_path, e))?
    } else {
        Vec::new()
    };
    let trace_path = dir.join("trace.json");
    let trace = if trace_path.exists() { read_trace(&trace_path)? } else { Vec::new() };
    Ok(Input::Run(Box::new(RunInput { dir: dir.to_path_buf(), summary, steps, trace })))
}

/// Reads the complete ("X") events of a Chrome trace with their process and thread names.
pub fn read_trace(path: &Path) -> Result<Vec<TraceSpan>, ReportError> {
    let text = std::fs::read(path).map_err(|e| read_err(path, e))?;
    let v: serde_json::Value = serde_json::from_slice(&text).map_err(|e| read_err(path, e))?;
    let events = v["traceEvents"].as_array().ok_or_else(|| read_err(path, "no traceEvents array"))?;
    let mut procs = BTreeMap::new();
    let mut threads = BTreeMap::new();
    for e in events.iter().filter(|e| e["ph"] == "M") {
        let name = e["args"]["name"].as_str().unwrap_or("").to_string();
        match e["name"].as_str() {
            Some("process_name") => {
                procs.insert(e["pid"].as_u64().unwrap_or(0), name);
            }
            Some("thread_name") => {
                threads.insert((e["pid"].as_u64().unwrap_or(0), e["tid"].as_u64().unwrap_or(0)), name);
            }
            _ => {}
        }
    }
    Ok(events
        .iter()
        .filter(|e| e["ph"] == "X")
        .map(|e| {
            let pid = e["pid"].as_u64().unwrap_or(0);
            let tid = e["tid"].as_u64().unwrap_or(0);
            TraceSpan {
                host: procs.get(&pid).cloned().unwrap_or_else(|| format!("pid{pid}")),
                lane: threads.get(&(pid, tid)).cloned().unwrap_or_else(|| e["cat"].as_str().unwrap_or("").to_string()),
                name: e["name"].as_str().unwrap_or("").to_string(),
                start_us: e["ts"].as_f64().unwrap_or(0.0),
                dur_us: e["dur"].as_f64().unwrap_or(0.0),
            }
        })
        .collect())
}

/// A table for both Markdown and HTML, also written as CSV.
#[derive(Debug, Clone)]
struct Table {
    name: String,
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn csv(&self) -> String {
        let mut s = self.header.iter().map(|h| quote(h)).collect::<Vec<_>>().join(",");
        s.push('\n');
        for r in &self.rows {
            s.push_str(&r.iter().map(|c| quote(c)).collect::<Vec<_>>().join(","));
            s.push('\n');
        }
        s
    }
}

/// One section of the report: a heading, notes, tables and charts.
#[derive(Debug, Clone, Default)]
struct Section {
    heading: String,
    notes: Vec<String>,
    tables: Vec<Table>,
    charts: Vec<Chart>,
}

fn slug(s: &str) -> String {
    let mut out: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    out.trim_matches('-').chars().take(60).collect()
}

fn chart_err(name: &str) -> impl Fn(String) -> ReportError + '_ {
    move |message| ReportError::Chart { name: name.to_string(), message }
}

fn summary_table(name: &str, s: &RunSummary) -> Table {
    let rows = vec![
        ("scenario", s.scenario.clone()),
        ("source", s.source.clone()),
        ("workers / PS", format!("{} / {}", s.workers, s.ps)),
        ("steps", s.steps.to_string()),
        (
            "step time p10 / p50 / p90 / p99 (s)",
            format!(
                "{:.4} / {:.4} / {:.4} / {:.4}",
                s.step_time_s.p10, s.step_time_s.p50, s.step_time_s.p90, s.step_time_s.p99
            ),
        ),
        ("throughput (samples/s)", format!("{:.1}", s.throughput_samples_per_s)),
        (
            "compute / exposed comm / wait (s)",
            format!("{:.4} / {:.4} / {:.4}", s.breakdown_s.compute, s.breakdown_s.exposed_comm, s.breakdown_s.wait),
        ),
        ("GPU busy", format!("{:.0}%", s.utilization.gpu * 100.0)),
        (
            "busiest PS NIC in / out",
            format!(
                "{} / {}",
                records::percent_or_not_measured(s.utilization.ps_nic_in_max),
                records::percent_or_not_measured(s.utilization.ps_nic_out_max)
            ),
        ),
        ("bottleneck", s.bottleneck.clone()),
        ("scenario hash / seed / version", format!("{} / {} / {}", s.scenario_hash, s.seed, s.version)),
    ];
    let mut rows = rows;
    if let Some(t) = &s.target {
        rows.push(("time to target", best::human_duration(t.time_to_target_s)));
        rows.push(("cost / GPU-hours", format!("{:.0} {} / {:.0}", t.cost, t.currency, t.gpu_hours)));
    }
    if let Some(r) = &s.replay {
        rows.push(("launcher / TCP congestion control", format!("{} / {}", r.launcher, r.congestion_control)));
        for l in &r.latencies {
            let what = match l.what.as_str() {
                "step" => "step latency p50 / p99 (ms)",
                "pull" => "pull latency p50 / p99 (ms)",
                _ => "push latency p50 / p99 (ms)",
            };
            rows.push((what, format!("{:.3} / {:.3}", l.p50_ms, l.p99_ms)));
        }
    }
    Table {
        name: format!("{name}-summary"),
        title: "Run summary".into(),
        header: vec!["metric".into(), "value".into()],
        rows: rows.into_iter().map(|(k, v)| vec![k.to_string(), v]).collect(),
    }
}

fn run_section(r: &RunInput) -> Result<Section, ReportError> {
    let name = slug(&r.summary.scenario);
    let mut sec = Section { heading: format!("Run: {}", r.summary.scenario), ..Section::default() };
    sec.notes.push(format!("From {}.", r.dir.display()));
    sec.notes.extend(assumptions(&r.dir));
    sec.tables.push(summary_table(&name, &r.summary));
    let b = &r.summary.breakdown_s;
    let n = format!("{name}-breakdown");
    sec.charts.push(
        charts::breakdown(
            &n,
            &BreakdownChart {
                title: "Step-time breakdown (mean step)".into(),
                bars: vec![(r.summary.scenario.clone(), b.compute, b.exposed_comm, b.wait)],
            },
        )
        .map_err(chart_err(&n))?,
    );
    if let Some(t) = timeline(&r.trace, &r.steps) {
        let n = format!("{name}-timeline");
        sec.charts.push(charts::timeline(&n, &t).map_err(chart_err(&n))?);
    }
    if let Some(c) = step_distribution(&r.steps) {
        let n = format!("{name}-step-times");
        sec.charts.push(charts::lines(&n, &c).map_err(chart_err(&n))?);
    }
    if let Some(c) = failure_curve(&r.dir)? {
        let n = format!("{name}-failures");
        sec.charts.push(charts::lines(&n, &c).map_err(chart_err(&n))?);
    }
    Ok(sec)
}

/// The distribution of step times (a CDF): all workers, and the slowest and fastest worker by
/// median when they differ by more than 10%, so that stragglers show.
fn step_distribution(steps: &[StepRecord]) -> Option<LineChart> {
    if steps.len() < 2 {
        return None;
    }
    let cdf = |mut v: Vec<f64>| -> Vec<(f64, f64)> {
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        v.iter().enumerate().map(|(i, &x)| (x, (i + 1) as f64 / n)).collect()
    };
    let dur = |r: &StepRecord| (r.end_ns.saturating_sub(r.start_ns)) as f64 / 1e9;
    let mut series = vec![Series { label: "all workers".into(), points: cdf(steps.iter().map(dur).collect()) }];
    let mut by: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
    for r in steps {
        by.entry(r.worker).or_default().push(dur(r));
    }
    let median = |v: &Vec<f64>| {
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let slowest = by.iter().max_by(|a, b| median(a.1).total_cmp(&median(b.1)));
    let fastest = by.iter().min_by(|a, b| median(a.1).total_cmp(&median(b.1)));
    if let (Some((ws, vs)), Some((wf, vf))) = (slowest, fastest)
        && median(vs) > 1.1 * median(vf)
    {
        series.push(Series { label: format!("slowest: worker {ws}"), points: cdf(vs.clone()) });
        series.push(Series { label: format!("fastest: worker {wf}"), points: cdf(vf.clone()) });
    }
    Some(LineChart {
        title: "Step-time distribution (fraction of steps at most x)".into(),
        x_label: "step time (s)".into(),
        y_label: "fraction of steps".into(),
        series,
    })
}

/// Time lost to failures, checkpoints and restarts against the checkpoint interval, from the
/// failures.csv that `topolab run --out` writes for a scenario with `faults.mtbf`.
fn failure_curve(dir: &Path) -> Result<Option<LineChart>, ReportError> {
    let path = dir.join("failures.csv");
    if !path.exists() {
        return Ok(None);
    }
    let mut r = csv::Reader::from_path(&path).map_err(|e| read_err(&path, e))?;
    let (mut curve, mut chosen) = (Vec::new(), Vec::new());
    for rec in r.records() {
        let rec = rec.map_err(|e| read_err(&path, e))?;
        let num =
            |i: usize| rec.get(i).and_then(|x| x.parse::<f64>().ok()).ok_or_else(|| read_err(&path, "not a number"));
        let p = (num(0)? / 60.0, num(1)? / 3600.0);
        curve.push(p);
        if rec.get(2) == Some("true") {
            chosen.push(p);
        }
    }
    let mut series = vec![Series { label: "expected time lost (Daly 2006)".into(), points: curve }];
    if !chosen.is_empty() {
        series.push(Series { label: "the scenario's interval".into(), points: chosen });
    }
    Ok(Some(LineChart {
        title: "Failures: time lost against the checkpoint interval".into(),
        x_label: "checkpoint interval (min)".into(),
        y_label: "time lost to failures, checkpoints and restarts (h)".into(),
        series,
    }))
}

/// The timeline of the first step in the trace: one row per host lane.
fn timeline(trace: &[TraceSpan], steps: &[StepRecord]) -> Option<TimelineChart> {
    if trace.is_empty() {
        return None;
    }
    let start = steps.iter().filter(|s| s.step == 0).map(|s| s.start_ns).min().unwrap_or(0) as f64 / 1e3;
    let end = steps
        .iter()
        .filter(|s| s.step == 0)
        .map(|s| s.end_ns)
        .max()
        .map_or_else(|| trace.iter().map(|t| t.start_us + t.dur_us).fold(0.0, f64::max), |e| e as f64 / 1e3);
    let mut rows: Vec<String> = Vec::new();
    let mut kinds: Vec<String> = Vec::new();
    let mut spans = Vec::new();
    let mut sorted: Vec<&TraceSpan> =
        trace.iter().filter(|t| t.start_us < end && t.start_us + t.dur_us > start).collect();
    sorted.sort_by(|a, b| {
        (!a.host.starts_with("worker"), a.host.len(), &a.host, &a.lane).cmp(&(
            !b.host.starts_with("worker"),
            b.host.len(),
            &b.host,
            &b.lane,
        ))
    });
    for t in sorted {
        let row = format!("{} {}", t.host, t.lane);
        let ri = rows.iter().position(|r| *r == row).unwrap_or_else(|| {
            rows.push(row);
            rows.len() - 1
        });
        let ki = kinds.iter().position(|k| *k == t.lane).unwrap_or_else(|| {
            kinds.push(t.lane.clone());
            kinds.len() - 1
        });
        spans.push((ri, (t.start_us - start) / 1e3, (t.start_us + t.dur_us - start).min(end - start) / 1e3, ki));
    }
    Some(TimelineChart { title: "Timeline of the first step".into(), rows, spans, kinds })
}

fn sweep_section(s: &SweepInput, name: &str) -> Result<Section, ReportError> {
    let slug = slug(name);
    let mut sec = Section { heading: format!("Sweep: {name}"), ..Section::default() };
    sec.notes.push(format!("{} configurations, from {}.", s.rows.len(), s.dir.display()));
    sec.notes.extend(assumptions(&s.dir));
    let with_target = s.rows.iter().any(|r| r.target.is_some());
    let mut header: Vec<String> =
        ["gpu", "workers", "ps", "mode", "placement", "nic", "samples/s", "step p50 (s)"].map(String::from).to_vec();
    // The speedup is relative to the first row: say so unless that row is one GPU.
    let base_time = s.rows.first().and_then(|r| r.target.as_ref()).map(|t| t.time_to_target_s);
    let one_gpu = s.rows.first().is_some_and(|r| r.workers == 1);
    if with_target {
        header.extend(
            ["time to target", if one_gpu { "speedup vs 1 GPU" } else { "speedup vs row 1" }, "GPU-hours", "cost"]
                .map(String::from),
        );
    }
    header.push("bottleneck".into());
    let rows: Vec<Vec<String>> = s
        .rows
        .iter()
        .map(|r| {
            let mut v = vec![
                r.gpu.clone(),
                r.workers.to_string(),
                r.ps.to_string(),
                r.mode.clone(),
                r.placement.clone(),
                r.nic.clone(),
                format!("{:.1}", r.summary.throughput_samples_per_s),
                format!("{:.4}", r.summary.step_time_s.p50),
            ];
            if with_target {
                match &r.target {
                    Some(t) => v.extend([
                        best::human_duration(t.time_to_target_s),
                        base_time.map_or("-".into(), |b| format!("{:.1}x", b / t.time_to_target_s)),
                        format!("{:.0}", t.gpu_hours),
                        format!("{:.0} {}", t.cost, t.currency),
                    ]),
                    None => v.extend(["-".into(), "-".into(), "-".into(), "-".into()]),
                }
            }
            v.push(r.summary.bottleneck.clone());
            v
        })
        .collect();
    // Best configurations first.
    let by_time = best::fastest(&s.rows);
    let mut best_rows = Vec::new();
    if let Some(i) = by_time {
        best_rows.push(vec![
            if with_target { "fastest to target" } else { "highest throughput" }.to_string(),
            best::describe(&s.rows[i]),
        ]);
    }
    if let Some(i) = best::cheapest(&s.rows) {
        best_rows.push(vec!["cheapest".into(), best::describe(&s.rows[i])]);
    }
    sec.tables.push(Table {
        name: format!("{slug}-best"),
        title: "Best configurations".into(),
        header: vec!["by".into(), "configuration".into()],
        rows: best_rows,
    });
    sec.tables.push(Table { name: format!("{slug}-configurations"), title: "All configurations".into(), header, rows });

    // Scaling: samples/s against the first numeric axis the sweep varies (workers, PS or
    // batch), one line per value of the other varying axes. A sweep that varies none of them
    // gets no line chart (a single x would draw a vertical column); the breakdown shows it.
    type Axis = (&'static str, fn(&SweepRecord) -> String);
    let axes: [Axis; 7] = [
        ("workers", |r| r.workers.to_string()),
        ("PS", |r| r.ps.to_string()),
        ("batch", |r| r.batch.to_string()),
        ("NIC", |r| r.nic.clone()),
        ("GPU", |r| r.gpu.clone()),
        ("mode", |r| r.mode.clone()),
        ("placement", |r| r.placement.clone()),
    ];
    let varies = |f: fn(&SweepRecord) -> String| s.rows.iter().any(|o| f(o) != f(&s.rows[0]));
    if let Some(x) = (0..3).find(|&i| varies(axes[i].1)) {
        let mut lines: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for r in &s.rows {
            let label: Vec<String> = axes
                .iter()
                .enumerate()
                .filter(|&(i, a)| i != x && varies(a.1))
                .map(|(_, (name, f))| format!("{} {name}", f(r)))
                .collect();
            let label = if label.is_empty() { "all".to_string() } else { label.join(", ") };
            let xv: f64 = (axes[x].1)(r).parse().unwrap_or(0.0);
            lines.entry(label).or_default().push((xv, r.summary.throughput_samples_per_s));
        }
        let mut series: Vec<Series> = lines
            .into_iter()
            .map(|(label, mut points)| {
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                Series { label, points }
            })
            .collect();
        series.sort_by_key(|s| s.label.split(' ').next().and_then(|n| n.parse::<u32>().ok()).unwrap_or(0));
        let n = format!("{slug}-scaling");
        sec.charts.push(
            charts::lines(
                &n,
                &LineChart {
                    title: format!("Throughput vs {}", axes[x].0),
                    x_label: axes[x].0.to_lowercase(),
                    y_label: "throughput (samples/s)".into(),
                    series,
                },
            )
            .map_err(chart_err(&n))?,
        );
    } else {
        sec.notes.push("No scaling chart: the sweep varies neither workers, PS nor batch.".into());
    }
    let n = format!("{slug}-breakdown");
    sec.charts.push(
        charts::breakdown(
            &n,
            &BreakdownChart {
                title: "Step-time breakdown per configuration".into(),
                bars: s
                    .rows
                    .iter()
                    .map(|r| {
                        let b = &r.summary.breakdown_s;
                        (format!("{}w/{}ps", r.workers, r.ps), b.compute, b.exposed_comm, b.wait)
                    })
                    .collect(),
            },
        )
        .map_err(chart_err(&n))?,
    );
    if with_target {
        let pts: Vec<(String, f64, f64)> = s
            .rows
            .iter()
            .filter_map(|r| r.target.as_ref().map(|t| (best::describe(r), t.time_to_target_s / 3600.0, t.cost)))
            .collect();
        // Indices among the rows with a target, which is what `pts` holds.
        let with: Vec<usize> = (0..s.rows.len()).filter(|&i| s.rows[i].target.is_some()).collect();
        let front: Vec<usize> =
            best::pareto(&s.rows).into_iter().filter_map(|i| with.iter().position(|&w| w == i)).collect();
        let currency = s.rows.iter().find_map(|r| r.target.as_ref().map(|t| t.currency.clone())).unwrap_or_default();
        let n = format!("{slug}-pareto");
        sec.charts.push(
            charts::pareto(&n, &ParetoChart { title: "Time to target vs cost".into(), currency, points: pts, front })
                .map_err(chart_err(&n))?,
        );
    }
    Ok(sec)
}

fn validation_section(v: &ValidationInput, name: &str) -> Result<Section, ReportError> {
    let slug = slug(name);
    let (median, max) = records::validation_errors(&v.rows);
    let mut sec = Section { heading: format!("Validation: {name}"), ..Section::default() };
    sec.notes.push(format!(
        "p50 step time, predicted by the simulator vs measured by real replays: median absolute error {median:.1}%, max {max:.1}% over {} configurations (from {}).",
        v.rows.len(),
        v.dir.display()
    ));
    let f = |x: f64, d: usize| format!("{x:.d$}");
    sec.tables.push(Table {
        name: format!("{slug}-errors"),
        title: "Error per configuration".into(),
        header: [
            "configuration",
            "predicted p50 (s)",
            "measured p50 (s)",
            "p50 error (%)",
            "predicted samples/s",
            "measured samples/s",
            "throughput error (%)",
            "largest phase gap",
        ]
        .map(String::from)
        .to_vec(),
        rows: v
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.configuration.clone(),
                    f(r.pred_p50_s, 4),
                    f(r.meas_p50_s, 4),
                    f(r.ape_p50_pct, 1),
                    f(r.pred_samples_per_s, 1),
                    f(r.meas_samples_per_s, 1),
                    f(r.ape_throughput_pct, 1),
                    r.largest_phase_gap.clone(),
                ]
            })
            .collect(),
    });
    let n = format!("{slug}-predicted-vs-measured");
    sec.charts.push(
        charts::scatter(
            &n,
            &ScatterChart {
                title: "p50 step time: predicted vs measured".into(),
                x_label: "predicted p50 step time (s)".into(),
                y_label: "measured p50 step time (s)".into(),
                points: v.rows.iter().map(|r| (r.configuration.clone(), r.pred_p50_s, r.meas_p50_s)).collect(),
            },
        )
        .map_err(chart_err(&n))?,
    );
    Ok(sec)
}

/// Two runs side by side: A (e.g. predicted) and B (e.g. measured).
fn comparison(a: &RunInput, b: &RunInput) -> Result<Section, ReportError> {
    let (sa, sb) = (&a.summary, &b.summary);
    let metrics: Vec<(&str, f64, f64)> = vec![
        ("step time mean (s)", sa.step_time_s.mean, sb.step_time_s.mean),
        ("step time p50 (s)", sa.step_time_s.p50, sb.step_time_s.p50),
        ("step time p90 (s)", sa.step_time_s.p90, sb.step_time_s.p90),
        ("step time p99 (s)", sa.step_time_s.p99, sb.step_time_s.p99),
        ("throughput (samples/s)", sa.throughput_samples_per_s, sb.throughput_samples_per_s),
        ("compute (s)", sa.breakdown_s.compute, sb.breakdown_s.compute),
        ("exposed communication (s)", sa.breakdown_s.exposed_comm, sb.breakdown_s.exposed_comm),
        ("wait (s)", sa.breakdown_s.wait, sb.breakdown_s.wait),
        ("GPU busy", sa.utilization.gpu, sb.utilization.gpu),
    ];
    let rel = |x: f64, y: f64| if x.abs() > 0.0 { format!("{:+.1}%", (y - x) / x * 100.0) } else { "-".into() };
    let mut sec =
        Section { heading: format!("Comparison: {} (A) vs {} (B)", sa.scenario, sb.scenario), ..Section::default() };
    // A replay says what ran it (topolab's runtime or TensorFlow) and where.
    let origin = |s: &RunSummary| match &s.replay {
        Some(r) => format!("{} by {}, {} launcher", s.source, r.engine, r.launcher),
        None => s.source.clone(),
    };
    sec.notes.push(format!(
        "A = {} ({}), B = {} ({}); difference = (B - A) / A.",
        a.dir.display(),
        origin(sa),
        b.dir.display(),
        origin(sb)
    ));
    sec.tables.push(Table {
        name: "comparison".into(),
        title: "Side by side".into(),
        header: vec!["metric".into(), "A".into(), "B".into(), "B vs A".into()],
        rows: metrics
            .iter()
            .map(|(m, x, y)| vec![m.to_string(), format!("{x:.4}"), format!("{y:.4}"), rel(*x, *y)])
            .collect(),
    });
    let n = "comparison-scatter";
    sec.charts.push(
        charts::scatter(
            n,
            &ScatterChart {
                title: "Step time: A (predicted) vs B (measured)".into(),
                x_label: "A: predicted (s)".into(),
                y_label: "B: measured (s)".into(),
                points: metrics.iter().take(4).map(|(m, x, y)| (m.to_string(), *x, *y)).collect(),
            },
        )
        .map_err(chart_err(n))?,
    );
    Ok(sec)
}

/// The files a report consists of.
#[derive(Debug, Clone)]
pub struct ReportFiles {
    /// report.md
    pub markdown: PathBuf,
    /// report.html
    pub html: PathBuf,
    /// Every chart's SVG and PNG.
    pub charts: Vec<PathBuf>,
    /// Every data CSV.
    pub data: Vec<PathBuf>,
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    topolab_core::atomic::write_atomic(path, bytes)
        .map_err(|source| ReportError::Write { path: path.display().to_string(), source })
}

/// Renders a report of `inputs` into `out`.
pub fn render(inputs: &[Input], out: &Path) -> Result<ReportFiles, ReportError> {
    let mut sections = Vec::new();
    let runs: Vec<&RunInput> =
        inputs.iter().filter_map(|i| if let Input::Run(r) = i { Some(r.as_ref()) } else { None }).collect();
    if runs.len() == 2 && inputs.len() == 2 {
        sections.push(comparison(runs[0], runs[1])?);
    }
    for (i, input) in inputs.iter().enumerate() {
        let mut sec = match input {
            Input::Run(r) => run_section(r)?,
            Input::Sweep(s) => sweep_section(s, &input.name())?,
            Input::Validation(v) => validation_section(v, &input.name())?,
        };
        if inputs.len() > 1 {
            // Keep file names unique when two inputs share a name.
            for c in &mut sec.charts {
                c.name = format!("{}-{}", i + 1, c.name);
            }
            for t in &mut sec.tables {
                t.name = format!("{}-{}", i + 1, t.name);
            }
        }
        sections.push(sec);
    }
    let mkdir = |p: &Path| {
        std::fs::create_dir_all(p).map_err(|source| ReportError::Write { path: p.display().to_string(), source })
    };
    mkdir(&out.join("charts"))?;
    mkdir(&out.join("data"))?;
    let mut files =
        ReportFiles { markdown: out.join("report.md"), html: out.join("report.html"), charts: vec![], data: vec![] };
    for sec in &sections {
        for c in &sec.charts {
            for (ext, bytes) in [("svg", c.svg.as_bytes()), ("png", c.png.as_slice())] {
                let p = out.join("charts").join(format!("{}.{ext}", c.name));
                write(&p, bytes)?;
                files.charts.push(p);
            }
            let p = out.join("data").join(format!("{}.csv", c.name));
            write(&p, c.csv.as_bytes())?;
            files.data.push(p);
        }
        for t in &sec.tables {
            let p = out.join("data").join(format!("{}.csv", t.name));
            write(&p, t.csv().as_bytes())?;
            files.data.push(p);
        }
    }
    write(&files.markdown, markdown(&sections).as_bytes())?;
    write(&files.html, html(&sections).as_bytes())?;
    Ok(files)
}

fn markdown(sections: &[Section]) -> String {
    let mut s = String::from("# topolab report\n");
    for sec in sections {
        let _ = write!(s, "\n## {}\n\n", sec.heading);
        for n in &sec.notes {
            let _ = writeln!(s, "{n}\n");
        }
        for t in &sec.tables {
            let _ = write!(
                s,
                "### {}\n\n| {} |\n|{}|\n",
                t.title,
                t.header.join(" | "),
                vec!["---"; t.header.len()].join("|")
            );
            for r in &t.rows {
                let cells: Vec<String> = r.iter().map(|c| c.replace('|', "\\|")).collect();
                let _ = writeln!(s, "| {} |", cells.join(" | "));
            }
            let _ = writeln!(s, "\nData: [data/{0}.csv](data/{0}.csv)\n", t.name);
        }
        for c in &sec.charts {
            let _ = writeln!(
                s,
                "### {}\n\n![{}](charts/{}.png)\n\nData: [data/{2}.csv](data/{2}.csv)\n",
                c.title, c.title, c.name
            );
        }
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// SVG for inlining in HTML5: the XML prolog and namespace declarations go (inline SVG needs
/// neither, and the report must hold no URL).
fn inline_svg(svg: &str) -> String {
    let start = svg.find("<svg").unwrap_or(0);
    svg[start..]
        .replace(" xmlns=\"http://www.w3.org/2000/svg\"", "")
        .replace(" xmlns:xlink=\"http://www.w3.org/1999/xlink\"", "")
}

const CSS: &str = "body{font-family:'DejaVu Sans',Arial,sans-serif;margin:2em auto;max-width:1000px;color:#222;padding:0 1em}\
h1{border-bottom:2px solid #1f77b4}h2{margin-top:2em;color:#1f4e79}table{border-collapse:collapse;margin:1em 0;font-size:0.9em}\
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#eef3f8}tr:nth-child(even) td{background:#fafafa}\
figure.chart{margin:1.5em 0}figure.chart svg{max-width:100%;height:auto;border:1px solid #ddd}figcaption{font-size:0.9em;color:#555}\
p.note{color:#555}";

fn html(sections: &[Section]) -> String {
    let mut s = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>topolab report</title>\n<style>{CSS}</style>\n</head>\n<body>\n<h1>topolab report</h1>\n"
    );
    for sec in sections {
        let _ = writeln!(s, "<section>\n<h2>{}</h2>", esc(&sec.heading));
        for n in &sec.notes {
            let _ = writeln!(s, "<p class=\"note\">{}</p>", esc(n));
        }
        for t in &sec.tables {
            let _ = writeln!(s, "<h3>{}</h3>\n<table id=\"table-{}\">\n<thead><tr>", esc(&t.title), esc(&t.name));
            for h in &t.header {
                let _ = write!(s, "<th>{}</th>", esc(h));
            }
            s.push_str("</tr></thead>\n<tbody>\n");
            for r in &t.rows {
                s.push_str("<tr>");
                for c in r {
                    let _ = write!(s, "<td>{}</td>", esc(c));
                }
                s.push_str("</tr>\n");
            }
            s.push_str("</tbody>\n</table>\n");
        }
        for c in &sec.charts {
            let _ = writeln!(
                s,
                "<figure class=\"chart\" id=\"chart-{}\">\n{}\n<figcaption>{}</figcaption>\n</figure>",
                esc(&c.name),
                inline_svg(&c.svg),
                esc(&c.title)
            );
        }
        s.push_str("</section>\n");
    }
    s.push_str("</body>\n</html>\n");
    s
}
