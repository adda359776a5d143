//! Fitting a profile to measured runs (`topolab fit`): the user's own runs, or topolab's
//! replays, as run directories.
//!
//! A run directory holds the scenario that describes the run (`scenario.toml`, or a replay's
//! `effective.toml`) and `steps.csv`, one row per worker and step with at least `worker`,
//! `step` and either `step_time_s` or `start_ns,end_ns`; a `compute_ns` (or `compute_s`)
//! column gives each step's compute. Other columns are ignored.
//!
//! What is fitted, and from what:
//! - compute: each run's median compute per step is linear in the profile's terms, `3 F b /
//!   rate + L per_call + A b per_value` (F forward FLOPs, b batch, L layers with variables, A
//!   their activation values, as the simulator charges them); least squares over the runs,
//!   each run weighted equally (relative residuals). The rate alone from one run; the per-call
//!   and per-value costs only when the runs' mixes of FLOPs, calls and values differ enough to
//!   tell the terms apart, and never negative;
//! - the network: goodput (and the per-message cost when the runs' messages per byte differ)
//!   by simulating each run with the candidate profile and matching its median step time
//!   (golden-section search, each run weighted equally);
//! - refused, with the reason: what step times of these runs cannot show (how TCP streams
//!   share a link needs several connections on one; the CPU cost per byte and the PS's memory
//!   bandwidth hide inside the same communication time as goodput).
//!
//! The residual per run (predicted vs measured median step time) says how well it fits.

use std::path::{Path, PathBuf};

use topolab_core::plan::{Op, Plan};
use topolab_core::profile::{Fitted, Machine, Measurement, Profile};
use topolab_core::scenario::Scenario;
use topolab_core::units::{FlopRate, Time};

use crate::{SimOptions, simulate};

/// A measured run, read from its directory.
#[derive(Debug, Clone)]
pub struct Run {
    /// Its directory.
    pub dir: PathBuf,
    /// The scenario it ran.
    pub scenario: Scenario,
    /// Step times, s (every worker's steps).
    pub steps: Vec<f64>,
    /// Compute per step, s, where steps.csv has it.
    pub compute: Option<Vec<f64>>,
    /// Median forward + backward time per layer (index in the scenario's model), s, where an
    /// ops.csv has `compute-forward` and `compute-backward` rows, or a Chrome trace
    /// (`trace.json`) has ops named after the model's layers.
    pub layers: Option<Vec<Option<f64>>>,
    /// The file the per-layer times came from.
    pub layers_from: Option<&'static str>,
    /// How it ran, from a replay's summary.json: launcher and congestion control.
    pub replay: Option<(String, String)>,
    /// The machine's cores a replay's tasks shared (its effective scenario's).
    pub cores: Option<u32>,
}

impl Run {
    /// The directory's name, for tables.
    pub fn name(&self) -> String {
        self.dir.display().to_string()
    }

    /// Median step time, s.
    pub fn p50(&self) -> f64 {
        median(&self.steps)
    }
}

/// Why a run or a fit failed: the file and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    /// A file of a run directory is missing or wrong.
    #[error("{path}: {why}")]
    Input {
        /// The file (or directory).
        path: String,
        /// What is missing or wrong.
        why: String,
    },
    /// The runs do not determine a parameter the profile needs.
    #[error("cannot fit {parameter}: {why}")]
    Unfit {
        /// The parameter.
        parameter: &'static str,
        /// Why.
        why: String,
    },
}

fn input(path: &Path, why: impl Into<String>) -> FitError {
    FitError::Input { path: path.display().to_string(), why: why.into() }
}

/// Reads run directory `dir`.
pub fn load(dir: &Path) -> Result<Run, FitError> {
    if !dir.is_dir() {
        return Err(input(dir, "not a directory (a run directory: scenario.toml and steps.csv)"));
    }
    let scenario_path = ["scenario.toml", "effective.toml"].iter().map(|f| dir.join(f)).find(|p| p.exists());
    let Some(scenario_path) = scenario_path else {
        return Err(input(
            &dir.join("scenario.toml"),
            "missing: the scenario that describes the run (model, batch, hardware, network, workers, PS, mode)",
        ));
    };
    let scenario = Scenario::load(&scenario_path).map_err(|e| input(&scenario_path, e.to_string()))?;
    let steps_path = dir.join("steps.csv");
    let text = std::fs::read_to_string(&steps_path).map_err(|e| {
        input(&steps_path, format!("{e} (one row per worker and step: worker,step and step_time_s or start_ns,end_ns)"))
    })?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let header: Vec<&str> = match lines.next() {
        Some((_, h)) => h.split(',').map(str::trim).collect(),
        None => return Err(input(&steps_path, "empty: a header and one row per worker and step")),
    };
    let col = |name: &str| header.iter().position(|c| *c == name);
    for need in ["worker", "step"] {
        if col(need).is_none() {
            return Err(input(&steps_path, format!("no `{need}` column (columns: {})", header.join(","))));
        }
    }
    let duration = match (col("step_time_s"), col("start_ns"), col("end_ns")) {
        (Some(c), _, _) => Duration::Seconds(c),
        (None, Some(a), Some(b)) => Duration::Span(a, b),
        _ => {
            return Err(input(
                &steps_path,
                format!(
                    "no step time: needs a `step_time_s` column or `start_ns` and `end_ns` (columns: {})",
                    header.join(",")
                ),
            ));
        }
    };
    let compute_col = col("compute_ns").map(|c| (c, 1e-9)).or_else(|| col("compute_s").map(|c| (c, 1.0)));
    let mut steps = Vec::new();
    let mut compute = Vec::new();
    for (i, line) in lines {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let num = |c: usize, what: &str| -> Result<f64, FitError> {
            let v = f.get(c).ok_or_else(|| input(&steps_path, format!("line {}: no `{what}` value", i + 1)))?;
            match v.parse::<f64>() {
                Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
                _ => Err(input(&steps_path, format!("line {}: {what} = `{v}` is not a number >= 0", i + 1))),
            }
        };
        let d = match duration {
            Duration::Seconds(c) => num(c, "step_time_s")?,
            Duration::Span(a, b) => {
                let (s, e) = (num(a, "start_ns")?, num(b, "end_ns")?);
                if e < s {
                    return Err(input(&steps_path, format!("line {}: end_ns is before start_ns", i + 1)));
                }
                (e - s) / 1e9
            }
        };
        if d <= 0.0 {
            return Err(input(&steps_path, format!("line {}: a step of zero time", i + 1)));
        }
        steps.push(d);
        if let Some((c, scale)) = compute_col {
            compute.push(num(c, header[c])? * scale);
        }
    }
    if steps.is_empty() {
        return Err(input(&steps_path, "no steps: a header and one row per worker and step"));
    }
    let summary = std::fs::read_to_string(dir.join("summary.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    // `topolab run --out` writes the simulator's own drawing as trace.json: not a measurement.
    let simulated = summary.as_ref().is_some_and(|v| v["source"] == "sim");
    let replay = summary.and_then(|v| {
        let r = &v["replay"];
        Some((r["launcher"].as_str()?.to_string(), r["congestion_control"].as_str().unwrap_or("").to_string()))
    });
    let cores = scenario.spec.hardware.shared_cores;
    let mut compute = compute_col.map(|_| compute);
    let (layers, layers_from) = match layer_times(&dir.join("ops.csv"), scenario.model.layers.len())? {
        Some(l) => (Some(l), Some("ops.csv")),
        None if simulated => (None, None),
        None => match trace_layer_times(&dir.join("trace.json"), &scenario.model)? {
            Some(l) => {
                // Without a compute column, the trace's layers are the step's compute.
                if compute.is_none() {
                    compute = Some(vec![l.iter().flatten().sum()]);
                }
                (Some(l), Some("trace.json"))
            }
            None => (None, None),
        },
    };
    Ok(Run { dir: dir.into(), scenario, steps, compute, replay, cores, layers, layers_from })
}

/// Per layer, the median over (worker, step) of forward + backward from `path` (topolab's
/// ops.csv: worker,step,op,index,bytes,start_ns,end_ns; `index` is the layer of a compute op);
/// `None` without the file or compute rows.
fn layer_times(path: &Path, layers: usize) -> Result<Option<Vec<Option<f64>>>, FitError> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(None) };
    let mut lines = text.lines().enumerate();
    let header: Vec<&str> = lines.next().map(|(_, h)| h.split(',').map(str::trim).collect()).unwrap_or_default();
    let col = |name: &str| header.iter().position(|c| *c == name);
    let (Some(w), Some(st), Some(op), Some(ix), Some(a), Some(b)) =
        (col("worker"), col("step"), col("op"), col("index"), col("start_ns"), col("end_ns"))
    else {
        return Err(input(
            path,
            format!("needs columns worker,step,op,index,start_ns,end_ns (columns: {})", header.join(",")),
        ));
    };
    let mut sums: std::collections::BTreeMap<(usize, &str, &str), f64> = Default::default();
    for (i, line) in lines {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let kind = f.get(op).copied().unwrap_or("");
        if kind != "compute-forward" && kind != "compute-backward" {
            continue;
        }
        let num = |c: usize| f.get(c).and_then(|v| v.parse::<f64>().ok());
        let (Some(l), Some(s0), Some(e0)) = (num(ix), num(a), num(b)) else {
            return Err(input(path, format!("line {}: index, start_ns and end_ns must be numbers", i + 1)));
        };
        let l = l as usize;
        if l >= layers {
            return Err(input(
                path,
                format!(
                    "line {}: layer index {l}, but the run's model has {layers} layers: the names match no layer",
                    i + 1
                ),
            ));
        }
        *sums.entry((l, f[w], f[st])).or_default() += (e0 - s0).max(0.0) / 1e9;
    }
    if sums.is_empty() {
        return Ok(None);
    }
    let mut per_layer: Vec<Vec<f64>> = vec![Vec::new(); layers];
    for ((l, _, _), t) in sums {
        per_layer[l].push(t);
    }
    Ok(Some(per_layer.iter().map(|v| (!v.is_empty()).then(|| median(v))).collect()))
}

/// Characters that separate the parts of an op's name (scopes, module paths, kinds).
const NAME_DELIMITERS: &[char] = &['/', '.', ':', '|', ' ', '(', ')', '[', ']', ','];

/// The model's layer whose name occurs in `op` as whole parts (bounded by the start, the end
/// or a delimiter: `InceptionV3/Conv2d_1a_3x3` in `gradients/InceptionV3/InceptionV3/
/// Conv2d_1a_3x3/Conv2D_grad/Conv2DBackpropFilter`, `layer1.0.conv1` in
/// `nn.Module: layer1.0.conv1`); the longest such name when several do.
fn layer_of(op: &str, names: &[&str]) -> Option<usize> {
    let bounded = |name: &str| {
        op.match_indices(name).any(|(i, _)| {
            let before = op[..i].chars().next_back().is_none_or(|c| NAME_DELIMITERS.contains(&c));
            let after = op[i + name.len()..].chars().next().is_none_or(|c| NAME_DELIMITERS.contains(&c));
            before && after
        })
    };
    (0..names.len()).filter(|&l| !names[l].is_empty() && bounded(names[l])).max_by_key(|&l| names[l].len())
}

/// Whether an op of a trace is a backward op: TensorFlow's `gradients/` scope and `_grad`
/// ops, PyTorch's `...Backward` functions, cuDNN's `BackpropFilter`/`BackpropInput`.
fn is_backward(op: &str) -> bool {
    op.split(NAME_DELIMITERS).any(|part| {
        let p = part.to_ascii_lowercase();
        p == "gradients" || p.ends_with("_grad") || p.contains("backward") || p.contains("backprop")
    })
}

/// An op of a trace named after a layer: its thread (pid, tid), start and duration (us), the
/// layer, whether it is a backward op, and its name.
type TraceOp = ((String, String), f64, f64, usize, bool, String);

/// Per layer, forward + backward from a Chrome trace (`trace.json`: `{"traceEvents": [...]}`
/// or a bare array, as TensorFlow's timeline and the PyTorch profiler export them): each
/// complete event (`"ph": "X"`, `ts` and `dur` in microseconds) whose name, or `args.name`
/// (TensorFlow's node name), names a layer of `model` ([`layer_of`]) is that layer's forward
/// or backward op ([`is_backward`]). An op runs once per step, so a layer's time is the sum
/// over its ops of each op's median duration; an event inside another of the same layer on
/// the same thread (a module's range around its kernels) is not counted twice. A layer counts
/// when both its forward and its backward ops are there. `None` without the file.
fn trace_layer_times(path: &Path, model: &topolab_core::models::Model) -> Result<Option<Vec<Option<f64>>>, FitError> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(None) };
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| input(path, format!("not JSON (a Chrome trace): {e}")))?;
    let events = match &v {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Object(o) => o.get("traceEvents").and_then(|e| e.as_array()).ok_or_else(|| {
            input(path, "no `traceEvents` array (the Chrome trace event format: {\"traceEvents\": [...]})")
        })?,
        _ => return Err(input(path, "neither an array of events nor an object with `traceEvents`")),
    };
    let names: Vec<&str> = model.layers.iter().map(|l| l.name.as_str()).collect();
    let mut matched: Vec<TraceOp> = Vec::new();
    let mut complete = 0usize;
    let mut examples: Vec<String> = Vec::new();
    for e in events {
        if e.get("ph").and_then(|p| p.as_str()) != Some("X") {
            continue;
        }
        let (Some(ts), Some(dur)) = (e.get("ts").and_then(|t| t.as_f64()), e.get("dur").and_then(|d| d.as_f64()))
        else {
            continue;
        };
        if !(ts.is_finite() && dur.is_finite() && dur >= 0.0) {
            continue;
        }
        complete += 1;
        let name = e.get("name").and_then(|n| n.as_str()).unwrap_or("");
        let node = e.get("args").and_then(|a| a.get("name")).and_then(|n| n.as_str()).unwrap_or("");
        let found = layer_of(node, &names).map(|l| (node, l)).or_else(|| layer_of(name, &names).map(|l| (name, l)));
        let Some((op, layer)) = found else {
            if examples.len() < 3 && !name.is_empty() && !examples.iter().any(|x| x == name) {
                examples.push(name.to_string());
            }
            continue;
        };
        let lane = (
            e.get("pid").map(ToString::to_string).unwrap_or_default(),
            e.get("tid").map(ToString::to_string).unwrap_or_default(),
        );
        matched.push((lane, ts, dur, layer, is_backward(op), op.to_string()));
    }
    if matched.is_empty() {
        let layers: Vec<&str> = names.iter().take(3).copied().collect();
        return Err(input(
            path,
            format!(
                "no op of its {complete} complete events is named after a layer of the run's model (ops such as {}; layers such as {}): the names match no layer",
                if examples.is_empty() {
                    "none".to_string()
                } else {
                    examples.iter().map(|x| format!("`{x}`")).collect::<Vec<_>>().join(", ")
                },
                layers.iter().map(|x| format!("`{x}`")).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    // Outermost events only, per thread and layer; then each op's durations.
    matched.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(b.2.total_cmp(&a.2)));
    let mut covered: std::collections::BTreeMap<(&(String, String), usize), f64> = Default::default();
    let mut per_op: std::collections::BTreeMap<(usize, bool, &str), Vec<f64>> = Default::default();
    for (lane, ts, dur, layer, backward, op) in &matched {
        let end = covered.entry((lane, *layer)).or_insert(f64::NEG_INFINITY);
        if ts + dur <= *end {
            continue;
        }
        *end = end.max(ts + dur);
        per_op.entry((*layer, *backward, op.as_str())).or_default().push(dur / 1e6);
    }
    let mut fwd = vec![None::<f64>; names.len()];
    let mut bwd = vec![None::<f64>; names.len()];
    for ((layer, backward, _), d) in &per_op {
        let slot = if *backward { &mut bwd[*layer] } else { &mut fwd[*layer] };
        *slot = Some(slot.unwrap_or(0.0) + median(d));
    }
    let times: Vec<Option<f64>> = fwd.iter().zip(&bwd).map(|(f, b)| Some((*f)? + (*b)?)).collect();
    if times.iter().all(Option::is_none) {
        return Err(input(
            path,
            "ops are named after the model's layers, but no layer has both forward and backward ops (backward ops are named like `gradients/...`, `..._grad`, `...Backward...` or `...Backprop...`)",
        ));
    }
    Ok(Some(times))
}

#[derive(Clone, Copy)]
enum Duration {
    Seconds(usize),
    Span(usize, usize),
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// A fitted parameter: its value in words, the runs it came from, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamFit {
    /// Field of the profile's `[fitted]`.
    pub name: &'static str,
    /// Value with its unit.
    pub value: String,
    /// Runs it was fitted from.
    pub runs: Vec<String>,
    /// How.
    pub how: String,
}

/// A parameter the runs cannot identify: its name and why (the profile keeps the default
/// written next to it).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// Field.
    pub name: &'static str,
    /// Why not, and what would identify it.
    pub why: String,
}

/// Predicted vs measured median step time of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Residual {
    /// The run.
    pub run: String,
    /// Measured median step, s.
    pub measured_p50_s: f64,
    /// Predicted median step with the fitted profile, s.
    pub predicted_p50_s: f64,
    /// Measured 10th and 90th percentiles, s.
    pub measured_p10_p90_s: (f64, f64),
    /// Predicted 10th and 90th percentiles, s.
    pub predicted_p10_p90_s: (f64, f64),
}

impl Residual {
    /// (predicted - measured) / measured.
    pub fn error(&self) -> f64 {
        (self.predicted_p50_s - self.measured_p50_s) / self.measured_p50_s
    }
}

/// What [`fit`] found.
#[derive(Debug, Clone)]
pub struct FitReport {
    /// The profile.
    pub profile: Profile,
    /// What was fitted.
    pub params: Vec<ParamFit>,
    /// What was not, and why.
    pub refused: Vec<Refusal>,
    /// Per run, with the profile.
    pub residuals: Vec<Residual>,
}

/// Step count a fit simulates per run and candidate (enough for a median).
const FIT_STEPS: u64 = 40;

/// The compute terms of layer `l` of `s`, as the simulator charges them per worker and step:
/// (FLOPs of forward and backward, 1 for a layer with variables, its activation values).
fn layer_terms(s: &Scenario, l: &topolab_core::models::Layer) -> [f64; 3] {
    let b = s.spec.batch as f64;
    if l.variables.is_empty() {
        return [3.0 * l.forward_flops * b, 0.0, 0.0];
    }
    [3.0 * l.forward_flops * b, 1.0, (l.activation_bytes.0 / 4) as f64 * b]
}

/// The terms of a whole step of `s`.
fn compute_terms(s: &Scenario) -> [f64; 3] {
    s.model.layers.iter().map(|l| layer_terms(s, l)).fold([0.0; 3], |a, x| [a[0] + x[0], a[1] + x[1], a[2] + x[2]])
}

/// Weighted least squares of `rows` (features, target, weight); `None` when the features
/// cannot be told apart (a near-singular normal matrix).
fn least_squares(rows: &[(Vec<f64>, f64, f64)]) -> Option<Vec<f64>> {
    let k = rows.first()?.0.len();
    if rows.len() < k {
        return None;
    }
    // Columns scaled to unit norm, so the conditioning test does not depend on units.
    let norms: Vec<f64> = (0..k).map(|j| rows.iter().map(|(x, _, w)| (x[j] * w).powi(2)).sum::<f64>().sqrt()).collect();
    if norms.iter().any(|&n| n == 0.0 || !n.is_finite()) {
        return None;
    }
    let mut a = vec![vec![0.0; k + 1]; k];
    for (x, y, w) in rows {
        let z: Vec<f64> = (0..k).map(|j| x[j] * w / norms[j]).collect();
        for i in 0..k {
            for j in 0..k {
                a[i][j] += z[i] * z[j];
            }
            a[i][k] += z[i] * y * w;
        }
    }
    // Gaussian elimination with partial pivoting; a tiny pivot means collinear terms.
    for c in 0..k {
        let p = (c..k).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        a.swap(c, p);
        if a[c][c].abs() < 1e-6 {
            return None;
        }
        let pivot = a[c].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != c {
                let f = row[c] / pivot[c];
                for (x, p) in row.iter_mut().zip(&pivot).skip(c) {
                    *x -= f * p;
                }
            }
        }
    }
    Some((0..k).map(|j| a[j][k] / a[j][j] / norms[j]).collect())
}

/// Minimizes `f` on [lo, hi] (golden-section search; `f` unimodal there).
fn golden(lo: f64, hi: f64, f: &mut dyn FnMut(f64) -> f64) -> f64 {
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut a, mut b) = (lo, hi);
    let (mut c, mut d) = (b - g * (b - a), a + g * (b - a));
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..30 {
        if fc < fd {
            (b, d, fd) = (d, c, fc);
            c = b - g * (b - a);
            fc = f(c);
        } else {
            (a, c, fc) = (c, d, fd);
            d = a + g * (b - a);
            fd = f(d);
        }
    }
    (a + b) / 2.0
}

/// Predicted median step time of `s` with profile `p`.
fn predict(s: &Scenario, p: &Profile) -> Result<f64, FitError> {
    Ok(predict_steps(s, p)?.p50)
}

/// Predicted step times of `s` with profile `p`.
fn predict_steps(s: &Scenario, p: &Profile) -> Result<topolab_core::records::StepTime, FitError> {
    let mut s = s.clone();
    s.spec.training.steps = s.spec.training.steps.clamp(1, FIT_STEPS);
    s.spec.training.target = None;
    s.profile = Some(p.clone());
    let run = simulate(&s, &SimOptions { trace: false, ..SimOptions::default() })
        .map_err(|e| FitError::Unfit { parameter: "goodput", why: format!("simulating {}: {e}", s.spec.name) })?;
    Ok(run.summary.step_time_s)
}

/// Messages and bytes of one worker's step in `s`: (messages, bytes / NIC rate in s).
fn traffic(s: &Scenario) -> (f64, f64) {
    let Ok(plan) = Plan::new(s) else { return (0.0, 0.0) };
    let (mut n, mut bytes) = (0.0, 0.0);
    for op in &plan.worker {
        if let Op::Pull { bytes: b, copies, .. } | Op::Push { bytes: b, copies, .. } = &op.op {
            n += f64::from(*copies);
            bytes += b.0 as f64 * f64::from(*copies);
        }
    }
    (n, bytes / s.nic.bytes_per_sec())
}

/// Fits a profile to `runs`; `date` stamps it (RFC 3339).
pub fn fit(runs: &[Run], date: &str) -> Result<FitReport, FitError> {
    let Some(first) = runs.first() else {
        return Err(FitError::Unfit { parameter: "anything", why: "no runs".into() });
    };
    let names: Vec<String> = runs.iter().map(Run::name).collect();
    let mut params = Vec::new();
    let mut refused = Vec::new();
    let mut fitted = Fitted::with_rates(
        first.scenario.effective_rate(),
        topolab_core::scenario::NetworkSpec::default().goodput,
        Time::ZERO,
        first.scenario.ps_memory_bandwidth(),
    );
    fitted.cores = first.cores.unwrap_or(1);

    // Compute: the largest model the runs identify, with no negative term.
    let timed: Vec<&Run> = runs.iter().filter(|r| r.compute.as_ref().is_some_and(|c| !c.is_empty())).collect();
    if timed.is_empty() {
        refused.push(Refusal {
            name: "compute_rate",
            why: format!(
                "no steps.csv has a compute_ns or compute_s column; kept the first run's rate, {}",
                fitted.compute_rate
            ),
        });
    } else {
        // Per layer where ops.csv times layers, else per step; each run weighs the same.
        let mut rows: Vec<([f64; 3], f64, f64)> = Vec::new();
        for r in &timed {
            let total = median(r.compute.as_ref().expect("timed"));
            match &r.layers {
                Some(times) => {
                    for (l, t) in r.scenario.model.layers.iter().zip(times) {
                        if let Some(t) = t {
                            rows.push((layer_terms(&r.scenario, l), *t, 1.0 / total));
                        }
                    }
                }
                None => rows.push((compute_terms(&r.scenario), total, 1.0 / total)),
            }
        }
        let mut solution = None;
        for k in (1..=3).rev() {
            let sub: Vec<(Vec<f64>, f64, f64)> = rows.iter().map(|(x, y, w)| (x[..k].to_vec(), *y, *w)).collect();
            if let Some(c) = least_squares(&sub)
                && c[0] > 0.0
                && c.iter().all(|&v| v >= 0.0)
            {
                solution = Some(c);
                break;
            }
        }
        let Some(c) = solution else {
            return Err(FitError::Unfit {
                parameter: "compute_rate",
                why: "the runs' compute times do not give a positive rate".into(),
            });
        };
        let from: Vec<String> = timed.iter().map(|r| r.name()).collect();
        fitted.compute_rate = FlopRate(1.0 / c[0]);
        params.push(ParamFit {
            name: "compute_rate",
            value: fitted.compute_rate.to_string(),
            runs: from.clone(),
            how: if let Some(from) = timed.iter().find_map(|r| r.layers_from) {
                format!(
                    "each layer's median forward + backward ({from}) = 3 x FLOPs x batch / rate (+ the terms below)"
                )
            } else {
                "median compute per step = 3 x forward FLOPs x batch / rate (+ the terms below)".into()
            },
        });
        let why_not = "the runs' compute times do not separate it from the FLOP rate (too few runs or layers with other mixes of FLOPs, calls and activation values, or the fit gave a negative cost); kept 0";
        match c.get(1) {
            Some(&per_call) => {
                fitted.layer_overhead = Time((per_call * 1e9).round() as u64);
                params.push(ParamFit {
                    name: "layer_overhead",
                    value: fitted.layer_overhead.to_string(),
                    runs: from.clone(),
                    how: "per layer with variables, forward + backward".into(),
                });
            }
            None => refused.push(Refusal { name: "layer_overhead", why: why_not.into() }),
        }
        match c.get(2) {
            Some(&per_value) => {
                fitted.elementwise_ns_per_value = per_value * 1e9;
                params.push(ParamFit {
                    name: "elementwise_ns_per_value",
                    value: format!("{:.4} ns", fitted.elementwise_ns_per_value),
                    runs: from,
                    how: "per activation value of a layer with variables".into(),
                });
            }
            None => refused.push(Refusal { name: "elementwise_ns_per_value", why: why_not.into() }),
        }
    }

    // The network, by simulating the runs.
    let objective = |p: &Profile| -> Result<f64, FitError> {
        let mut sum = 0.0;
        for r in runs {
            let e = predict(&r.scenario, p)? / r.p50() - 1.0;
            sum += e * e;
        }
        Ok(sum)
    };
    let profile_with = |f: &Fitted| Profile {
        machine: Machine {
            cpu: format!("fitted by topolab fit from {} measured run(s)", runs.len()),
            cores: f.cores,
            memory: String::new(),
            date: date.into(),
            launcher: first.replay.as_ref().map_or_else(|| "measured".into(), |r| r.0.clone()),
            congestion_control: first.replay.as_ref().map_or_else(String::new, |r| r.1.clone()),
        },
        fitted: f.clone(),
        raw: Vec::new(),
    };
    // Does the network show in these step times at all?
    let at = |g: f64, o: Time| {
        let mut f = fitted.clone();
        (f.goodput, f.message_overhead) = (g, o);
        profile_with(&f)
    };
    let mut slow = 0.0;
    for r in runs {
        let (a, b) = (predict(&r.scenario, &at(0.25, Time::ZERO))?, predict(&r.scenario, &at(1.0, Time::ZERO))?);
        slow = f64::max(slow, a / b - 1.0);
    }
    if slow < 0.01 {
        refused.push(Refusal {
            name: "goodput",
            why: format!(
                "communication barely shows in these runs' step times (a quarter of the goodput would slow them by {:.2}%); kept {}",
                slow * 100.0,
                fitted.goodput
            ),
        });
        refused.push(Refusal { name: "message_overhead", why: "likewise".into() });
    } else {
        // Per-message and per-byte costs apart only when the runs' messages per byte differ.
        let t: Vec<(f64, f64)> = runs.iter().map(|r| traffic(&r.scenario)).collect();
        let dot =
            |a: &dyn Fn(&(f64, f64)) -> f64, b: &dyn Fn(&(f64, f64)) -> f64| t.iter().map(|x| a(x) * b(x)).sum::<f64>();
        let (m, w) = (|x: &(f64, f64)| x.0, |x: &(f64, f64)| x.1);
        let cos = dot(&m, &w) / (dot(&m, &m).sqrt() * dot(&w, &w).sqrt()).max(1e-300);
        let separable = runs.len() >= 2 && cos < 0.995;
        let mut err: Option<FitError> = None;
        let mut eval = |g: f64, o: f64| match objective(&at(g, Time((o * 1e9).round() as u64))) {
            Ok(v) => v,
            Err(e) => {
                err.get_or_insert(e);
                f64::INFINITY
            }
        };
        let (mut g, mut o) = (golden(0.02, 1.0, &mut |g| eval(g, 0.0)), 0.0);
        if separable {
            // Coordinate descent: the per-message cost (0 to 5 ms), then goodput again.
            for _ in 0..3 {
                o = golden(0.0, 5e-3, &mut |o| eval(g, o));
                g = golden(0.02, 1.0, &mut |g| eval(g, o));
            }
        }
        if let Some(e) = err {
            return Err(e);
        }
        if g >= 0.999 || g <= 0.021 {
            return Err(FitError::Unfit {
                parameter: "goodput",
                why: format!(
                    "the best fit is at the edge of (0.02, 1] ({g:.3}): the runs' step times are not explained by the network model; check the scenarios' NIC rates"
                ),
            });
        }
        fitted.goodput = g;
        fitted.message_overhead = Time((o * 1e9).round() as u64);
        params.push(ParamFit {
            name: "goodput",
            value: format!("{g:.4} of the NIC rate"),
            runs: names.clone(),
            how: "simulated median step time matched to each run's".into(),
        });
        if separable {
            params.push(ParamFit {
                name: "message_overhead",
                value: fitted.message_overhead.to_string(),
                runs: names.clone(),
                how: "with goodput, the runs differing in messages per byte".into(),
            });
        } else {
            refused.push(Refusal {
                name: "message_overhead",
                why: "every run has the same messages per byte, so a per-message cost and a per-byte cost explain them equally (runs of other model sizes or NIC rates would separate them); kept 0".into(),
            });
        }
    }
    let several = runs.iter().any(|r| r.scenario.spec.topology.workers > 1);
    refused.push(Refusal {
        name: "links (unfairness, ramp, fifo)",
        why: if several {
            "how TCP streams share a link is not fitted from step times; `topolab calibrate` measures it with probes"
                .into()
        } else {
            "how TCP streams share a link needs several connections on one; every run has one worker".into()
        },
    });
    refused.push(Refusal {
        name: "copy_ns_per_byte, ps_memory_bandwidth",
        why:
            "they hide inside the same communication time as goodput in step times; kept 0 and the scenario's bandwidth"
                .into(),
    });
    // Compute noise: the jitter whose simulated p10-p90 spread of step times matches the
    // runs' (after the network fit, which it would blur).
    let spread = |v: &[f64]| {
        let mut m = v.to_vec();
        m.sort_by(f64::total_cmp);
        let q = |x: f64| m[((m.len() - 1) as f64 * x).round() as usize];
        (q(0.9) - q(0.1)) / median(v)
    };
    let long: Vec<&Run> = runs.iter().filter(|r| r.steps.len() >= 10).collect();
    if long.is_empty() {
        refused.push(Refusal {
            name: "compute_jitter",
            why: "needs runs of at least 10 steps to show their spread; kept 0 (no compute noise)".into(),
        });
    } else {
        let mut err: Option<FitError> = None;
        let mut off = |j: f64| {
            let mut f = fitted.clone();
            f.compute_jitter = j;
            let p = profile_with(&f);
            let mut sum = 0.0;
            for r in &long {
                match predict_steps(&r.scenario, &p) {
                    Ok(st) => sum += ((st.p90 - st.p10) / st.p50 - spread(&r.steps)).powi(2),
                    Err(e) => {
                        err.get_or_insert(e);
                    }
                }
            }
            sum
        };
        let j = golden(0.0, 0.5, &mut off);
        if let Some(e) = err {
            return Err(e);
        }
        fitted.compute_jitter = if j < 1e-3 { 0.0 } else { (j * 1e4).round() / 1e4 };
        params.push(ParamFit {
            name: "compute_jitter",
            value: format!("{:.4}", fitted.compute_jitter),
            runs: long.iter().map(|r| r.name()).collect(),
            how: "simulated p10-p90 spread of step times matched to the runs'".into(),
        });
    }
    let profile = profile_with(&fitted);
    let mut residuals = Vec::new();
    let mut raw = Vec::new();
    for r in runs {
        let p = predict_steps(&r.scenario, &profile)?;
        let mut m = r.steps.clone();
        m.sort_by(f64::total_cmp);
        let q = |x: f64| m[((m.len() - 1) as f64 * x).round() as usize];
        residuals.push(Residual {
            run: r.name(),
            measured_p50_s: r.p50(),
            predicted_p50_s: p.p50,
            measured_p10_p90_s: (q(0.1), q(0.9)),
            predicted_p10_p90_s: (p.p10, p.p90),
        });
        raw.push(Measurement { what: format!("{}: median step", r.name()), value: r.p50(), unit: "s".into() });
        if let Some(c) = &r.compute {
            raw.push(Measurement { what: format!("{}: median compute", r.name()), value: median(c), unit: "s".into() });
        }
    }
    let mut profile = profile;
    profile.raw = raw;
    Ok(FitReport { profile, params, refused, residuals })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_map_onto_layers_by_whole_name_parts() {
        let names = ["InceptionV3/Conv2d_1a_3x3", "conv1", "layer1.0.conv1", "features.0", "classifier.1"];
        let tf = "gradients/InceptionV3/InceptionV3/Conv2d_1a_3x3/Conv2D_grad/Conv2DBackpropFilter";
        assert_eq!(layer_of(tf, &names), Some(0));
        assert!(is_backward(tf));
        assert!(!is_backward("InceptionV3/InceptionV3/Conv2d_1a_3x3/Conv2D"));
        // The longest name wins; parts are whole: conv1 is not inside conv10 or layer1.0.conv10.
        assert_eq!(layer_of("nn.Module: layer1.0.conv1", &names), Some(2));
        assert_eq!(layer_of("conv1/Relu", &names), Some(1));
        assert_eq!(layer_of("layer1.0.conv10", &names), None);
        assert_eq!(layer_of("classifier.10", &names), None);
        assert!(is_backward("autograd::engine::evaluate_function: features.0 ConvolutionBackward0"));
        assert_eq!(layer_of("autograd::engine::evaluate_function: features.0 ConvolutionBackward0", &names), Some(3));
    }

    #[test]
    fn a_chrome_trace_gives_each_layer_its_ops_median_and_counts_nested_events_once() {
        let dir = std::env::temp_dir().join(format!("topolab-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let model = topolab_core::models::builtin("alexnet").unwrap();
        let ev = |name: &str, ts: f64, dur: f64, tid: u32| serde_json::json!({"ph": "X", "name": name, "ts": ts, "dur": dur, "pid": 1, "tid": tid});
        let mut events = Vec::new();
        // Three steps; features.0: a module range (100 us) around its kernel (90 us, not
        // counted again), backward 150, 250 and 200 us (median 200); classifier.1 through
        // TensorFlow-style node names in args.name; an op of no layer; a counter event.
        for (k, bwd) in [150.0, 250.0, 200.0].into_iter().enumerate() {
            let t = k as f64 * 10_000.0;
            events.push(ev("nn.Module: features.0", t, 100.0, 1));
            events.push(ev("features.0/aten::conv2d", t + 5.0, 90.0, 1));
            events.push(ev("autograd::engine::evaluate_function: features.0 ConvolutionBackward0", t + 500.0, bwd, 2));
            let mut fc = ev("MatMul", t + 200.0, 40.0, 1);
            fc["args"] = serde_json::json!({"name": "classifier.1/MatMul"});
            events.push(fc);
            let mut g = ev("MatMul", t + 300.0, 80.0, 1);
            g["args"] = serde_json::json!({"name": "gradients/classifier.1/MatMul_grad/MatMul_1"});
            events.push(g);
            events.push(ev("aten::relu", t + 120.0, 7.0, 1));
            events.push(serde_json::json!({"ph": "C", "name": "memory", "ts": t, "args": {"bytes": 1}}));
        }
        let path = dir.join("trace.json");
        std::fs::write(&path, serde_json::json!({ "traceEvents": events }).to_string()).unwrap();
        let times = trace_layer_times(&path, &model).unwrap().unwrap();
        let at = |name: &str| times[model.layers.iter().position(|l| l.name == name).unwrap()];
        assert!((at("features.0").unwrap() - 300e-6).abs() < 1e-12, "{:?}", at("features.0"));
        assert!((at("classifier.1").unwrap() - 120e-6).abs() < 1e-12, "{:?}", at("classifier.1"));
        assert_eq!(at("features.3"), None);
        // A bare array works too; names of no layer are refused with examples.
        std::fs::write(
            &path,
            serde_json::json!([ev("aten::relu", 0.0, 1.0, 1), ev("Conv2D", 2.0, 1.0, 1)]).to_string(),
        )
        .unwrap();
        let e = trace_layer_times(&path, &model).unwrap_err().to_string();
        assert!(e.contains("trace.json") && e.contains("match no layer") && e.contains("`aten::relu`"), "{e}");
        std::fs::write(&path, "{\"events\": []}").unwrap();
        assert!(trace_layer_times(&path, &model).unwrap_err().to_string().contains("no `traceEvents`"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
