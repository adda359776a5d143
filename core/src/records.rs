//! Run records: one [`StepRecord`] per worker per step, and a [`RunSummary`] per run.
//!
//! Simulated and measured runs write the same columns, so reports and validation compare them
//! directly. Every record carries the scenario hash, the seed and the topolab version that
//! produced it; readers reject files whose columns differ from these.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

/// The version of topolab writing the records.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One worker's step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Run identifier (e.g. "sim" or "replay").
    pub run: String,
    /// Worker index.
    pub worker: u32,
    /// Step number, from 0.
    pub step: u64,
    /// Start of the step, ns since the run began.
    pub start_ns: u64,
    /// End of the step, ns since the run began.
    pub end_ns: u64,
    /// Time computing (forward and backward), ns.
    pub compute_ns: u64,
    /// Communication not hidden behind compute, ns.
    pub comm_ns: u64,
    /// Waiting for aggregation (barrier) or other workers, ns.
    pub wait_ns: u64,
    /// Bytes the worker sent.
    pub bytes_sent: u64,
    /// Bytes the worker received.
    pub bytes_received: u64,
    /// Hash of the scenario that produced it.
    pub scenario_hash: String,
    /// Seed of the run.
    pub seed: u64,
    /// topolab version.
    pub version: String,
}

impl StepRecord {
    /// Duration of the step, ns.
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
}

/// Column names of steps.csv, in order.
pub const STEP_COLUMNS: &[&str] = &[
    "run",
    "worker",
    "step",
    "start_ns",
    "end_ns",
    "compute_ns",
    "comm_ns",
    "wait_ns",
    "bytes_sent",
    "bytes_received",
    "scenario_hash",
    "seed",
    "version",
];

/// Why records could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// CSV problem (with its position).
    #[error("{origin}: {source}")]
    Csv {
        /// Which file or stream.
        origin: String,
        /// The cause.
        source: csv::Error,
    },
    /// The header is not the expected one.
    #[error("{origin}: columns are `{found}`, expected `{expected}`")]
    Columns {
        /// Which file or stream.
        origin: String,
        /// Columns found.
        found: String,
        /// Columns expected.
        expected: String,
    },
    /// JSON problem.
    #[error("{origin}: {source}")]
    Json {
        /// Which file or stream.
        origin: String,
        /// The cause.
        source: serde_json::Error,
    },
}

/// Writes step records as CSV with [`STEP_COLUMNS`].
pub fn write_steps_csv<W: Write>(records: &[StepRecord], out: W) -> Result<(), RecordError> {
    let origin = || "steps.csv".to_string();
    let mut w = csv::Writer::from_writer(out);
    if records.is_empty() {
        w.write_record(STEP_COLUMNS).map_err(|source| RecordError::Csv { origin: origin(), source })?;
    }
    for r in records {
        w.serialize(r).map_err(|source| RecordError::Csv { origin: origin(), source })?;
    }
    w.flush().map_err(|e| RecordError::Csv { origin: origin(), source: e.into() })?;
    Ok(())
}

/// Reads step records from CSV; `origin` names the source in errors.
pub fn read_steps_csv<R: Read>(input: R, origin: &str) -> Result<Vec<StepRecord>, RecordError> {
    let mut r = csv::Reader::from_reader(input);
    let headers = r.headers().map_err(|source| RecordError::Csv { origin: origin.into(), source })?;
    let found: Vec<&str> = headers.iter().collect();
    if found != STEP_COLUMNS {
        return Err(RecordError::Columns {
            origin: origin.into(),
            found: found.join(","),
            expected: STEP_COLUMNS.join(","),
        });
    }
    r.deserialize().map(|rec| rec.map_err(|source| RecordError::Csv { origin: origin.into(), source })).collect()
}

/// Step-time statistics, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct StepTime {
    /// Mean.
    pub mean: f64,
    /// 10th percentile (0 in summaries written before it was recorded).
    #[serde(default)]
    pub p10: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// Where a mean step goes, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Breakdown {
    /// Computing.
    pub compute: f64,
    /// Communication not overlapped with compute.
    pub exposed_comm: f64,
    /// Waiting for aggregation or other workers.
    pub wait: f64,
}

/// Busy fractions of the main resources over the run (0..1). A NIC figure is `None` (JSON
/// `null`, an empty CSV cell) where it was not measured: replays do not sample NIC counters.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Utilization {
    /// Mean GPU busy fraction.
    pub gpu: f64,
    /// Busiest parameter-server NIC, inbound.
    pub ps_nic_in_max: Option<f64>,
    /// Busiest parameter-server NIC, outbound.
    pub ps_nic_out_max: Option<f64>,
    /// Busiest worker NIC, inbound.
    pub worker_nic_in_max: Option<f64>,
    /// Busiest worker NIC, outbound.
    pub worker_nic_out_max: Option<f64>,
}

/// A busy fraction as a percentage, or "not measured".
pub fn percent_or_not_measured(x: Option<f64>) -> String {
    x.map_or_else(|| "not measured".to_string(), |v| format!("{:.0}%", v * 100.0))
}

/// The summary of one run, simulated or measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Scenario name.
    pub scenario: String,
    /// Hash of the scenario.
    pub scenario_hash: String,
    /// Seed.
    pub seed: u64,
    /// topolab version.
    pub version: String,
    /// "sim" or "replay".
    pub source: String,
    /// Worker hosts.
    pub workers: u32,
    /// Parameter-server shards.
    pub ps: u32,
    /// Steps per worker.
    pub steps: u64,
    /// Step time statistics.
    pub step_time_s: StepTime,
    /// Samples per second over all replicas.
    pub throughput_samples_per_s: f64,
    /// Mean step breakdown.
    pub breakdown_s: Breakdown,
    /// Resource utilization.
    pub utilization: Utilization,
    /// The bottleneck, in words.
    pub bottleneck: String,
    /// Events processed (simulator) or messages exchanged (replay).
    pub events: u64,
    /// Wall-clock time of a measured run, seconds. Simulated runs leave it out so that their
    /// files are byte-identical from run to run (the simulator prints its own wall time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_s: Option<f64>,
    /// Time to the scenario's target accuracy and its cost, when the scenario has a target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetRecord>,
    /// How a measured run ran (launcher, congestion control, latency); absent for simulations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayInfo>,
}

/// How a replay ran: what a reader needs to judge a measured run against a prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayInfo {
    /// The launcher: "local" (loopback, unshaped) or "netns" (namespaces, tc-shaped links).
    pub launcher: String,
    /// The TCP congestion control the tasks' connections used, as measured.
    pub congestion_control: String,
    /// Why the congestion control is not the one the launcher asked for, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub congestion_warning: Option<String>,
    /// How one-way latency was emulated.
    pub latency_method: String,
    /// Measured latency percentiles: each step, each pull and each push (send to the last byte
    /// received), from an HDR histogram (3 significant digits).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latencies: Vec<Latency>,
    /// Time from starting the tasks to the first completed step, seconds.
    #[serde(default)]
    pub startup_s: f64,
    /// Kills the scenario asked for (`faults.kills`) and the restarts that followed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restarts: Vec<Restart>,
    /// Where the workers computed: the backend and, on a GPU, the device and who shared it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<ComputeInfo>,
    /// What ran the tasks: "topolab", or "tensorflow VERSION".
    #[serde(default = "topolab_engine")]
    pub engine: String,
}

fn topolab_engine() -> String {
    "topolab".into()
}

/// The compute device of a replay's workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComputeInfo {
    /// "cpu" or "cuda".
    pub backend: String,
    /// Device name (the driver's, for a GPU).
    pub device: String,
    /// CUDA ordinal.
    pub ordinal: u32,
    /// Compute capability ("" on the CPU).
    #[serde(default)]
    pub compute_capability: String,
    /// Worker processes that time-share the device (1: it had the device to itself).
    pub workers_per_device: u32,
    /// GEMM precision the workers ran at (fp32, tf32, bf16).
    pub precision: String,
}

/// One injected failure and the restart from the last complete checkpoint that followed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restart {
    /// The task killed, e.g. "worker 1".
    pub task: String,
    /// When, seconds after the tasks first started.
    pub at_s: f64,
    /// Steps the furthest worker had completed at the kill.
    pub steps_done: u64,
    /// The checkpoint the job restarted from (0: from the start).
    pub checkpoint_step: u64,
    /// Steps done again: `steps_done - checkpoint_step`.
    pub lost_steps: u64,
    /// From the kill to the restarted job's first completed step, seconds.
    pub restart_s: f64,
}

/// Percentiles of one kind of measured duration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// "step", "pull" or "push".
    pub what: String,
    /// How many were measured.
    pub count: u64,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile, milliseconds.
    pub p90_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// 99.9th percentile, milliseconds.
    pub p999_ms: f64,
    /// Longest, milliseconds.
    pub max_ms: f64,
}

/// Column names of summary.csv, in order (nested fields flattened with `.`).
pub const SUMMARY_COLUMNS: &[&str] = &[
    "scenario",
    "scenario_hash",
    "seed",
    "version",
    "source",
    "workers",
    "ps",
    "steps",
    "step_time_s.mean",
    "step_time_s.p10",
    "step_time_s.p50",
    "step_time_s.p90",
    "step_time_s.p99",
    "throughput_samples_per_s",
    "breakdown_s.compute",
    "breakdown_s.exposed_comm",
    "breakdown_s.wait",
    "utilization.gpu",
    "utilization.ps_nic_in_max",
    "utilization.ps_nic_out_max",
    "utilization.worker_nic_in_max",
    "utilization.worker_nic_out_max",
    "bottleneck",
    "events",
    "wall_s",
];

impl RunSummary {
    /// A simulated run of `workers` workers whose every step takes `step_s`, at `throughput`
    /// samples/s: a fixture for the tests of the modules that compare and choose runs.
    #[cfg(test)]
    pub(crate) fn example(workers: u32, step_s: f64, throughput: f64) -> RunSummary {
        RunSummary {
            scenario: "s".into(),
            scenario_hash: "h".into(),
            seed: 1,
            version: VERSION.into(),
            source: "sim".into(),
            workers,
            ps: 1,
            steps: 10,
            step_time_s: StepTime { mean: step_s, p10: step_s, p50: step_s, p90: step_s, p99: step_s },
            throughput_samples_per_s: throughput,
            breakdown_s: Breakdown { compute: step_s / 2.0, exposed_comm: step_s / 2.0, wait: 0.0 },
            utilization: Utilization::default(),
            bottleneck: String::new(),
            events: 1,
            wall_s: None,
            target: None,
            replay: None,
        }
    }

    fn row(&self) -> Vec<String> {
        let f = |x: f64| format!("{x}");
        vec![
            self.scenario.clone(),
            self.scenario_hash.clone(),
            self.seed.to_string(),
            self.version.clone(),
            self.source.clone(),
            self.workers.to_string(),
            self.ps.to_string(),
            self.steps.to_string(),
            f(self.step_time_s.mean),
            f(self.step_time_s.p10),
            f(self.step_time_s.p50),
            f(self.step_time_s.p90),
            f(self.step_time_s.p99),
            f(self.throughput_samples_per_s),
            f(self.breakdown_s.compute),
            f(self.breakdown_s.exposed_comm),
            f(self.breakdown_s.wait),
            f(self.utilization.gpu),
            self.utilization.ps_nic_in_max.map(f).unwrap_or_default(),
            self.utilization.ps_nic_out_max.map(f).unwrap_or_default(),
            self.utilization.worker_nic_in_max.map(f).unwrap_or_default(),
            self.utilization.worker_nic_out_max.map(f).unwrap_or_default(),
            self.bottleneck.clone(),
            self.events.to_string(),
            self.wall_s.map(f).unwrap_or_default(),
        ]
    }
}

/// Writes summaries as CSV, one row each.
pub fn write_summaries_csv<W: Write>(summaries: &[RunSummary], out: W) -> Result<(), RecordError> {
    let err = |source: csv::Error| RecordError::Csv { origin: "summary.csv".into(), source };
    let mut w = csv::Writer::from_writer(out);
    w.write_record(SUMMARY_COLUMNS).map_err(err)?;
    for s in summaries {
        w.write_record(s.row()).map_err(err)?;
    }
    w.flush().map_err(|e| err(e.into()))?;
    Ok(())
}

/// Reads summaries from CSV.
pub fn read_summaries_csv<R: Read>(input: R, origin: &str) -> Result<Vec<RunSummary>, RecordError> {
    let err = |source: csv::Error| RecordError::Csv { origin: origin.into(), source };
    let mut r = csv::Reader::from_reader(input);
    let found: Vec<String> = r.headers().map_err(err)?.iter().map(String::from).collect();
    if found != SUMMARY_COLUMNS {
        return Err(RecordError::Columns {
            origin: origin.into(),
            found: found.join(","),
            expected: SUMMARY_COLUMNS.join(","),
        });
    }
    let mut out = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(err)?;
        let line = rec.position().map_or(0, |p| p.line());
        let bad = |col: &str| RecordError::Csv {
            origin: origin.into(),
            source: csv::Error::from(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("line {line}: column `{col}` is not a number"),
            )),
        };
        let get = |i: usize| rec.get(i).unwrap_or("");
        let num = |i: usize| get(i).parse::<f64>().map_err(|_| bad(SUMMARY_COLUMNS[i]));
        let int = |i: usize| get(i).parse::<u64>().map_err(|_| bad(SUMMARY_COLUMNS[i]));
        let opt = |i: usize| if get(i).is_empty() { Ok(None) } else { num(i).map(Some) };
        out.push(RunSummary {
            scenario: get(0).into(),
            scenario_hash: get(1).into(),
            seed: int(2)?,
            version: get(3).into(),
            source: get(4).into(),
            workers: int(5)? as u32,
            ps: int(6)? as u32,
            steps: int(7)?,
            step_time_s: StepTime { mean: num(8)?, p10: num(9)?, p50: num(10)?, p90: num(11)?, p99: num(12)? },
            throughput_samples_per_s: num(13)?,
            breakdown_s: Breakdown { compute: num(14)?, exposed_comm: num(15)?, wait: num(16)? },
            utilization: Utilization {
                gpu: num(17)?,
                ps_nic_in_max: opt(18)?,
                ps_nic_out_max: opt(19)?,
                worker_nic_in_max: opt(20)?,
                worker_nic_out_max: opt(21)?,
            },
            bottleneck: get(22).into(),
            events: int(23)?,
            wall_s: if get(24).is_empty() { None } else { Some(num(24)?) },
            target: None,
            replay: None,
        });
    }
    Ok(out)
}

/// Writes a summary as pretty JSON.
pub fn write_summary_json<W: Write>(s: &RunSummary, out: W) -> Result<(), RecordError> {
    serde_json::to_writer_pretty(out, s).map_err(|source| RecordError::Json { origin: "summary.json".into(), source })
}

/// Reads a summary from JSON.
pub fn read_summary_json<R: Read>(input: R, origin: &str) -> Result<RunSummary, RecordError> {
    serde_json::from_reader(input).map_err(|source| RecordError::Json { origin: origin.into(), source })
}

/// The value at quantile `q` (0..=1) of `sorted` by nearest rank; 0 for an empty slice.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Step-time statistics of a set of step records.
pub fn step_time_stats(records: &[StepRecord]) -> StepTime {
    let mut d: Vec<u64> = records.iter().map(StepRecord::duration_ns).collect();
    d.sort_unstable();
    if d.is_empty() {
        return StepTime::default();
    }
    let s = |ns: u64| ns as f64 / 1e9;
    StepTime {
        mean: d.iter().map(|&x| x as f64).sum::<f64>() / d.len() as f64 / 1e9,
        p10: s(percentile(&d, 0.10)),
        p50: s(percentile(&d, 0.50)),
        p90: s(percentile(&d, 0.90)),
        p99: s(percentile(&d, 0.99)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(worker: u32, step: u64, start: u64, end: u64) -> StepRecord {
        StepRecord {
            run: "sim".into(),
            worker,
            step,
            start_ns: start,
            end_ns: end,
            compute_ns: 10,
            comm_ns: 5,
            wait_ns: 1,
            bytes_sent: 100,
            bytes_received: 200,
            scenario_hash: "abc".into(),
            seed: 7,
            version: VERSION.into(),
        }
    }

    #[test]
    fn steps_round_trip_through_csv_with_the_documented_columns() {
        let rs = vec![rec(0, 0, 0, 100), rec(1, 0, 0, 120)];
        let mut buf = Vec::new();
        write_steps_csv(&rs, &mut buf).unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert_eq!(text.lines().next().unwrap(), STEP_COLUMNS.join(","));
        assert_eq!(read_steps_csv(buf.as_slice(), "m").unwrap(), rs);
        let e = read_steps_csv("a,b\n1,2\n".as_bytes(), "x.csv").unwrap_err().to_string();
        assert!(e.contains("expected `run,worker"), "{e}");
    }

    #[test]
    fn summaries_round_trip_through_csv_and_json() {
        let s = RunSummary {
            scenario: "s, with comma".into(),
            scenario_hash: "h".into(),
            seed: 1,
            version: VERSION.into(),
            source: "sim".into(),
            workers: 2,
            ps: 1,
            steps: 10,
            step_time_s: StepTime { mean: 0.5, p10: 0.35, p50: 0.4, p90: 0.6, p99: 0.7 },
            throughput_samples_per_s: 128.0,
            breakdown_s: Breakdown { compute: 0.3, exposed_comm: 0.1, wait: 0.1 },
            utilization: Utilization {
                gpu: 0.6,
                ps_nic_in_max: Some(0.9),
                ps_nic_out_max: Some(0.8),
                worker_nic_in_max: Some(0.2),
                worker_nic_out_max: None,
            },
            bottleneck: "PS shard 0 egress".into(),
            events: 1234,
            wall_s: Some(0.01),
            target: None,
            replay: None,
        };
        let mut buf = Vec::new();
        write_summaries_csv(std::slice::from_ref(&s), &mut buf).unwrap();
        assert_eq!(read_summaries_csv(buf.as_slice(), "m").unwrap(), vec![s.clone()]);
        let mut buf = Vec::new();
        write_summary_json(&s, &mut buf).unwrap();
        assert_eq!(read_summary_json(buf.as_slice(), "m").unwrap(), s);
        let sim = RunSummary { wall_s: None, ..s };
        let mut buf = Vec::new();
        write_summaries_csv(std::slice::from_ref(&sim), &mut buf).unwrap();
        assert_eq!(read_summaries_csv(buf.as_slice(), "m").unwrap(), vec![sim]);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        // 1..=100: p50 = 50, p90 = 90, p99 = 99.
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!((percentile(&v, 0.5), percentile(&v, 0.9), percentile(&v, 0.99)), (50, 90, 99));
        let st = step_time_stats(&[rec(0, 0, 0, 1_000_000_000), rec(0, 1, 0, 3_000_000_000)]);
        assert_eq!((st.mean, st.p50, st.p99), (2.0, 1.0, 3.0));
    }
}

/// One configuration of a sweep: its axis values, its summary and, with a target, its time to
/// accuracy. The rows of `sweep.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepRecord {
    /// Worker hosts.
    pub workers: u32,
    /// Parameter-server shards.
    pub ps: u32,
    /// NIC as written (preset or rate).
    pub nic: String,
    /// Per-replica batch.
    pub batch: u64,
    /// GPU name.
    pub gpu: String,
    /// Placement; for an all-reduce, its algorithm ("ring all-reduce").
    pub placement: String,
    /// Mode.
    pub mode: String,
    /// "dedicated" or "colocated"; "none" for an all-reduce (and `ps` is 0).
    pub ps_hosts: String,
    /// The simulated summary (its `workers` and `ps` equal the fields above).
    pub summary: RunSummary,
    /// Time to the target, if the scenario has one.
    pub target: Option<TargetRecord>,
}

impl SweepRecord {
    /// An all-reduce configuration (no parameter servers).
    pub fn all_reduce(&self) -> bool {
        self.ps_hosts == "none"
    }
}

/// Time-to-accuracy figures of one configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetRecord {
    /// Seconds to the target.
    pub time_to_target_s: f64,
    /// Updates to the target.
    pub steps_to_target: f64,
    /// Epochs to the target.
    pub epochs: f64,
    /// GPU-hours.
    pub gpu_hours: f64,
    /// Cost.
    pub cost: f64,
    /// Currency of the cost.
    pub currency: String,
    /// Steps simulated before extrapolating.
    pub simulated_steps: u64,
    /// Expected time lost to failures, checkpoints and restarts, seconds (included in
    /// `time_to_target_s`; 0 without `faults.mtbf`).
    #[serde(default)]
    pub failure_overhead_s: f64,
    /// Useful time over wall time (1 without failures).
    #[serde(default = "one")]
    pub goodput: f64,
}

fn one() -> f64 {
    1.0
}

const SWEEP_AXES: &[&str] = &["workers", "ps", "nic", "batch", "gpu", "placement", "mode", "ps_hosts"];
const SWEEP_TARGET: &[&str] = &[
    "time_to_target_s",
    "steps_to_target",
    "epochs",
    "gpu_hours",
    "cost",
    "currency",
    "simulated_steps",
    "failure_overhead_s",
    "goodput",
];

/// Column names of sweep.csv: the axes, the summary columns (less workers and ps), the target.
pub fn sweep_columns() -> Vec<&'static str> {
    let mut c: Vec<&str> = SWEEP_AXES.to_vec();
    c.extend(SUMMARY_COLUMNS.iter().copied().filter(|c| !["workers", "ps"].contains(c)));
    c.extend(SWEEP_TARGET);
    c
}

/// Writes sweep.csv.
pub fn write_sweep_csv<W: Write>(rows: &[SweepRecord], out: W) -> Result<(), RecordError> {
    let err = |source: csv::Error| RecordError::Csv { origin: "sweep.csv".into(), source };
    let mut w = csv::Writer::from_writer(out);
    w.write_record(sweep_columns()).map_err(err)?;
    for r in rows {
        let mut row = vec![
            r.workers.to_string(),
            r.ps.to_string(),
            r.nic.clone(),
            r.batch.to_string(),
            r.gpu.clone(),
            r.placement.clone(),
            r.mode.clone(),
            r.ps_hosts.clone(),
        ];
        let summary = r.summary.row();
        for (i, c) in SUMMARY_COLUMNS.iter().enumerate() {
            if !["workers", "ps"].contains(c) {
                row.push(summary[i].clone());
            }
        }
        match &r.target {
            Some(t) => row.extend([
                format!("{}", t.time_to_target_s),
                format!("{}", t.steps_to_target),
                format!("{}", t.epochs),
                format!("{}", t.gpu_hours),
                format!("{}", t.cost),
                t.currency.clone(),
                t.simulated_steps.to_string(),
                format!("{}", t.failure_overhead_s),
                format!("{}", t.goodput),
            ]),
            None => row.extend(std::iter::repeat_n(String::new(), SWEEP_TARGET.len())),
        }
        w.write_record(&row).map_err(err)?;
    }
    w.flush().map_err(|e| err(e.into()))?;
    Ok(())
}

/// Reads sweep.csv.
pub fn read_sweep_csv<R: Read>(input: R, origin: &str) -> Result<Vec<SweepRecord>, RecordError> {
    let err = |source: csv::Error| RecordError::Csv { origin: origin.into(), source };
    let mut r = csv::Reader::from_reader(input);
    let found: Vec<String> = r.headers().map_err(err)?.iter().map(String::from).collect();
    let expected = sweep_columns();
    if found != expected {
        return Err(RecordError::Columns {
            origin: origin.into(),
            found: found.join(","),
            expected: expected.join(","),
        });
    }
    let n_axes = SWEEP_AXES.len();
    let n_sum = SUMMARY_COLUMNS.len() - 2;
    let mut out = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(err)?;
        let line = rec.position().map_or(0, |p| p.line());
        let get = |i: usize| rec.get(i).unwrap_or("").to_string();
        let bad = |col: &str| RecordError::Csv {
            origin: origin.into(),
            source: csv::Error::from(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("line {line}: column `{col}` is malformed"),
            )),
        };
        let workers: u32 = get(0).parse().map_err(|_| bad("workers"))?;
        let ps: u32 = get(1).parse().map_err(|_| bad("ps"))?;
        // Rebuild a summary row (with workers and ps back in place) and parse it.
        let mut summary_row: Vec<String> = Vec::with_capacity(SUMMARY_COLUMNS.len());
        let mut k = n_axes;
        for c in SUMMARY_COLUMNS {
            match *c {
                "workers" => summary_row.push(workers.to_string()),
                "ps" => summary_row.push(ps.to_string()),
                _ => {
                    summary_row.push(get(k));
                    k += 1;
                }
            }
        }
        let mut buf = Vec::new();
        {
            let mut w = csv::Writer::from_writer(&mut buf);
            w.write_record(SUMMARY_COLUMNS).map_err(err)?;
            w.write_record(&summary_row).map_err(err)?;
            w.flush().map_err(|e| err(e.into()))?;
        }
        let summary = read_summaries_csv(buf.as_slice(), origin)?.pop().ok_or_else(|| bad("summary"))?;
        let t0 = n_axes + n_sum;
        let target = if get(t0).is_empty() {
            None
        } else {
            let num = |i: usize| get(i).parse::<f64>().map_err(|_| bad(SWEEP_TARGET[i - t0]));
            Some(TargetRecord {
                time_to_target_s: num(t0)?,
                steps_to_target: num(t0 + 1)?,
                epochs: num(t0 + 2)?,
                gpu_hours: num(t0 + 3)?,
                cost: num(t0 + 4)?,
                currency: get(t0 + 5),
                simulated_steps: get(t0 + 6).parse().map_err(|_| bad("simulated_steps"))?,
                failure_overhead_s: num(t0 + 7)?,
                goodput: num(t0 + 8)?,
            })
        };
        out.push(SweepRecord {
            workers,
            ps,
            nic: get(2),
            batch: get(3).parse().map_err(|_| bad("batch"))?,
            gpu: get(4),
            placement: get(5),
            mode: get(6),
            ps_hosts: get(7),
            summary,
            target,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod sweep_tests {
    use super::*;

    #[test]
    fn sweep_records_round_trip() {
        let summary = RunSummary {
            scenario: "s[workers=2]".into(),
            scenario_hash: "h".into(),
            seed: 1,
            version: VERSION.into(),
            source: "sim".into(),
            workers: 2,
            ps: 1,
            steps: 20,
            step_time_s: StepTime { mean: 1.5, p10: 1.5, p50: 1.5, p90: 1.5, p99: 1.5 },
            throughput_samples_per_s: 42.0,
            breakdown_s: Breakdown { compute: 1.0, exposed_comm: 0.4, wait: 0.1 },
            utilization: Utilization::default(),
            bottleneck: "GPU compute, mostly".into(),
            events: 99,
            wall_s: None,
            target: None,
            replay: None,
        };
        let rows = vec![
            SweepRecord {
                workers: 2,
                ps: 1,
                nic: "10GbE".into(),
                batch: 32,
                gpu: "k40".into(),
                placement: "greedy".into(),
                mode: "sync".into(),
                ps_hosts: "dedicated".into(),
                summary: summary.clone(),
                target: Some(TargetRecord {
                    time_to_target_s: 1e6,
                    steps_to_target: 5e4,
                    epochs: 90.5,
                    gpu_hours: 555.5,
                    cost: 500.25,
                    currency: "USD".into(),
                    simulated_steps: 20,
                    failure_overhead_s: 0.0,
                    goodput: 1.0,
                }),
            },
            SweepRecord {
                workers: 2,
                ps: 1,
                nic: "10 Gbit/s".into(),
                batch: 32,
                gpu: "k40".into(),
                placement: "greedy".into(),
                mode: "sync".into(),
                ps_hosts: "dedicated".into(),
                summary,
                target: None,
            },
        ];
        let mut buf = Vec::new();
        write_sweep_csv(&rows, &mut buf).unwrap();
        assert_eq!(read_sweep_csv(buf.as_slice(), "m").unwrap(), rows);
    }
}

/// One configuration of a validation: the simulator's prediction next to a real replay's
/// measurement (a row of validation.csv, which `topolab validate` writes and reports read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationRecord {
    /// The configuration (its sweep axes).
    pub configuration: String,
    /// Predicted p50 step time, s.
    pub pred_p50_s: f64,
    /// Measured p50 step time, s.
    pub meas_p50_s: f64,
    /// Absolute percentage error of the p50 step time.
    pub ape_p50_pct: f64,
    /// Predicted samples per second.
    pub pred_samples_per_s: f64,
    /// Measured samples per second.
    pub meas_samples_per_s: f64,
    /// Absolute percentage error of the throughput.
    pub ape_throughput_pct: f64,
    /// Predicted mean compute per step, s.
    pub pred_compute_s: f64,
    /// Measured mean compute per step, s.
    pub meas_compute_s: f64,
    /// Predicted mean exposed communication per step, s.
    pub pred_comm_s: f64,
    /// Measured mean exposed communication per step, s.
    pub meas_comm_s: f64,
    /// Predicted mean wait for aggregation per step, s.
    pub pred_wait_s: f64,
    /// Measured mean wait for aggregation per step, s.
    pub meas_wait_s: f64,
    /// The phase whose prediction is furthest off, with predicted minus measured.
    pub largest_phase_gap: String,
    /// Predicted p10 step time, s: the low end of the band the measured p50 should fall in.
    #[serde(default)]
    pub pred_p10_s: f64,
    /// Predicted p90 step time, s: the band's high end.
    #[serde(default)]
    pub pred_p90_s: f64,
    /// The exchange: "sync", "async", "backup" (parameter servers) or "all-reduce".
    #[serde(default)]
    pub mode: String,
    /// False for a configuration the profile was fitted on (its error is a residual, not a
    /// prediction): the errors of a validation are those of the held-out configurations.
    #[serde(default = "held_out_by_default")]
    pub held_out: bool,
    /// With another engine measuring (TensorFlow): topolab's own runtime's p50 step time on
    /// the same configuration, s (empty when it was not run).
    #[serde(default)]
    pub runtime_p50_s: Option<f64>,
}

fn held_out_by_default() -> bool {
    true
}

/// Absolute percentage error of `pred` against `meas` (0 when nothing was measured).
pub fn ape(pred: f64, meas: f64) -> f64 {
    if meas.abs() > 0.0 { (pred - meas).abs() / meas.abs() * 100.0 } else { 0.0 }
}

impl ValidationRecord {
    /// The record of one configuration.
    pub fn new(configuration: &str, pred: &RunSummary, meas: &RunSummary) -> ValidationRecord {
        let (p, m) = (&pred.breakdown_s, &meas.breakdown_s);
        let phases = [
            ("compute", p.compute, m.compute),
            ("exposed communication", p.exposed_comm, m.exposed_comm),
            ("wait", p.wait, m.wait),
        ];
        let worst = phases.iter().max_by(|a, b| (a.1 - a.2).abs().total_cmp(&(b.1 - b.2).abs())).expect("three phases");
        ValidationRecord {
            configuration: configuration.into(),
            pred_p50_s: pred.step_time_s.p50,
            meas_p50_s: meas.step_time_s.p50,
            ape_p50_pct: ape(pred.step_time_s.p50, meas.step_time_s.p50),
            pred_samples_per_s: pred.throughput_samples_per_s,
            meas_samples_per_s: meas.throughput_samples_per_s,
            ape_throughput_pct: ape(pred.throughput_samples_per_s, meas.throughput_samples_per_s),
            pred_compute_s: p.compute,
            meas_compute_s: m.compute,
            pred_comm_s: p.exposed_comm,
            meas_comm_s: m.exposed_comm,
            pred_wait_s: p.wait,
            meas_wait_s: m.wait,
            largest_phase_gap: format!("{} ({:+.4} s)", worst.0, worst.1 - worst.2),
            pred_p10_s: pred.step_time_s.p10,
            pred_p90_s: pred.step_time_s.p90,
            mode: String::new(),
            held_out: true,
            runtime_p50_s: None,
        }
    }

    /// topolab's runtime's p50 over the measuring engine's (TensorFlow's), when both ran.
    pub fn runtime_ratio(&self) -> Option<f64> {
        self.runtime_p50_s.filter(|_| self.meas_p50_s > 0.0).map(|r| r / self.meas_p50_s)
    }

    /// Whether the measured p50 lies inside the predicted p10-p90 band.
    pub fn in_band(&self) -> bool {
        self.meas_p50_s >= self.pred_p10_s && self.meas_p50_s <= self.pred_p90_s
    }
}

/// Median and maximum p50 error of a validation's held-out configurations (NaN for none).
pub fn validation_errors(rows: &[ValidationRecord]) -> (f64, f64) {
    let mut e: Vec<f64> = rows.iter().filter(|r| r.held_out).map(|r| r.ape_p50_pct).filter(|x| x.is_finite()).collect();
    e.sort_by(f64::total_cmp);
    let median = match e.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => e[n / 2],
        n => (e[n / 2 - 1] + e[n / 2]) / 2.0,
    };
    (median, e.last().copied().unwrap_or(f64::NAN))
}

/// The held-out errors of one mode of a validation ([`validation_by_mode`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ModeErrors {
    /// "sync", "async", ... (empty when the records do not say).
    pub mode: String,
    /// Held-out configurations of the mode.
    pub count: usize,
    /// Median and maximum p50 error, %.
    pub median: f64,
    /// See `median`.
    pub max: f64,
    /// Configurations whose measured p50 is inside the predicted p10-p90 band.
    pub in_band: usize,
}

/// The held-out errors per mode, in the order the modes first appear.
pub fn validation_by_mode(rows: &[ValidationRecord]) -> Vec<ModeErrors> {
    let mut modes: Vec<&str> = Vec::new();
    for r in rows.iter().filter(|r| r.held_out) {
        if !modes.contains(&r.mode.as_str()) {
            modes.push(&r.mode);
        }
    }
    modes
        .into_iter()
        .map(|m| {
            let of: Vec<ValidationRecord> = rows.iter().filter(|r| r.held_out && r.mode == m).cloned().collect();
            let (median, max) = validation_errors(&of);
            ModeErrors {
                mode: m.into(),
                count: of.len(),
                median,
                max,
                in_band: of.iter().filter(|r| r.in_band()).count(),
            }
        })
        .collect()
}

/// topolab's own runtime against the engine that measured a validation (TensorFlow), over the
/// configurations where both ran ([`ValidationRecord::runtime_p50_s`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeComparison {
    /// Configurations both ran.
    pub count: usize,
    /// Configurations where topolab's p50 step time is at most the engine's.
    pub not_slower: usize,
    /// Median and largest ratio of topolab's p50 to the engine's.
    pub median_ratio: f64,
    /// See `median_ratio`.
    pub max_ratio: f64,
}

/// The comparison of topolab's runtime with the measuring engine; `None` when it did not run.
pub fn runtime_comparison(rows: &[ValidationRecord]) -> Option<RuntimeComparison> {
    let mut r: Vec<f64> = rows.iter().filter_map(ValidationRecord::runtime_ratio).filter(|x| x.is_finite()).collect();
    if r.is_empty() {
        return None;
    }
    r.sort_by(f64::total_cmp);
    let n = r.len();
    let median = if n % 2 == 1 { r[n / 2] } else { (r[n / 2 - 1] + r[n / 2]) / 2.0 };
    Some(RuntimeComparison {
        count: n,
        not_slower: r.iter().filter(|&&x| x <= 1.0).count(),
        median_ratio: median,
        max_ratio: r[n - 1],
    })
}

/// Writes validation.csv.
pub fn write_validation_csv<W: Write>(rows: &[ValidationRecord], out: W) -> Result<(), RecordError> {
    let err = |source: csv::Error| RecordError::Csv { origin: "validation.csv".into(), source };
    let mut w = csv::Writer::from_writer(out);
    for r in rows {
        w.serialize(r).map_err(err)?;
    }
    w.flush().map_err(|e| err(e.into()))?;
    Ok(())
}

/// Reads validation.csv.
pub fn read_validation_csv<R: Read>(input: R, origin: &str) -> Result<Vec<ValidationRecord>, RecordError> {
    csv::Reader::from_reader(input)
        .deserialize()
        .collect::<Result<Vec<ValidationRecord>, _>>()
        .map_err(|source| RecordError::Csv { origin: origin.into(), source })
}

#[cfg(test)]
mod validation_tests {
    use super::*;

    #[test]
    fn validation_records_round_trip_and_give_median_and_max() {
        let s = |p50: f64| RunSummary::example(1, p50, 1.0 / p50);
        // Errors 10%, 20% and 5%: median 10, max 20.
        let rows = vec![
            ValidationRecord::new("a, b", &s(1.1), &s(1.0)),
            ValidationRecord::new("c", &s(1.2), &s(1.0)),
            ValidationRecord::new("d", &s(0.95), &s(1.0)),
        ];
        let (median, max) = validation_errors(&rows);
        assert!((median - 10.0).abs() < 1e-9 && (max - 20.0).abs() < 1e-9, "{median} {max}");
        // A configuration the profile was fitted on is not a prediction.
        let mut fitted = rows.clone();
        fitted[1].held_out = false;
        let (median, max) = validation_errors(&fitted);
        assert!((median - 7.5).abs() < 1e-9 && (max - 10.0).abs() < 1e-9, "{median} {max}");
        // Per mode, with the band: p10 = p50 = p90 in these summaries (1.1 against a
        // measured 1.0: outside); the sync row's band is widened to 0.9-1.05 (inside).
        fitted[0].mode = "async".into();
        fitted[2].mode = "sync".into();
        (fitted[2].pred_p10_s, fitted[2].pred_p90_s) = (0.9, 1.05);
        let by = validation_by_mode(&fitted);
        assert_eq!(
            by.iter().map(|m| (m.mode.as_str(), m.count, m.in_band)).collect::<Vec<_>>(),
            [("async", 1, 0), ("sync", 1, 1)]
        );
        assert!((by[0].median - 10.0).abs() < 1e-9 && (by[1].max - 5.0).abs() < 1e-9);
        let mut buf = Vec::new();
        write_validation_csv(&rows, &mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf).starts_with("configuration,pred_p50_s,meas_p50_s,ape_p50_pct,"));
        assert_eq!(read_validation_csv(buf.as_slice(), "v").unwrap(), rows);
    }

    #[test]
    fn topolab_runtime_is_compared_with_the_engine_that_measured() {
        let s = |p50: f64| RunSummary::example(1, p50, 1.0 / p50);
        let mut rows = vec![
            ValidationRecord::new("a", &s(1.1), &s(1.0)),
            ValidationRecord::new("b", &s(1.1), &s(2.0)),
            ValidationRecord::new("c", &s(1.1), &s(4.0)),
        ];
        assert_eq!(runtime_comparison(&rows), None, "topolab's runtime did not run");
        // topolab at 0.5x, 1.25x and 0.75x of the engine's p50.
        for (r, t) in rows.iter_mut().zip([0.5, 2.5, 3.0]) {
            r.runtime_p50_s = Some(t);
        }
        let c = runtime_comparison(&rows).unwrap();
        assert_eq!((c.count, c.not_slower), (3, 2));
        assert!((c.median_ratio - 0.75).abs() < 1e-12 && (c.max_ratio - 1.25).abs() < 1e-12, "{c:?}");
        // The column round-trips, empty where it did not run.
        rows[0].runtime_p50_s = None;
        let mut buf = Vec::new();
        write_validation_csv(&rows, &mut buf).unwrap();
        assert_eq!(read_validation_csv(buf.as_slice(), "v").unwrap(), rows);
        assert_eq!(runtime_comparison(&rows).unwrap().count, 2);
    }
}
