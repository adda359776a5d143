//! Time to accuracy: steady-state fast-forward and the convergence model.
//!
//! A run to a target accuracy is millions of steps; its steps are alike once the pipeline has
//! filled. So we simulate a prefix, stop once the mean step time is known to +-0.5% at 95%
//! confidence (normal approximation over the per-step intervals after the first step), and
//! extrapolate the rest. The output says how many steps were simulated.

use serde::Serialize;
use topolab_core::convergence::{self, ConvergenceError};
use topolab_core::scenario::{CheckpointInterval, Mode, Scenario, Topology};

use crate::{SimError, SimOptions, SimRun, failures, simulate};

/// Relative half-width of the 95% confidence interval we stop at.
pub const PRECISION: f64 = 0.005;

/// Steps simulated first; doubled until the mean is precise enough.
const FIRST_STEPS: u64 = 20;

/// Most steps a fast-forward simulates.
const MAX_STEPS: u64 = 2560;

/// The prediction of a run to a target accuracy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimeToTarget {
    /// Metric and value, e.g. "top1 >= 0.78".
    pub target: String,
    /// Global batch per update (examples whose gradients one update aggregates).
    pub global_batch: f64,
    /// Examples needed.
    pub examples: f64,
    /// Epochs needed.
    pub epochs: f64,
    /// Updates (global steps) needed.
    pub steps: f64,
    /// Mean time of a global step, seconds (sync, backup) or mean worker step (async).
    pub step_time_s: f64,
    /// Examples processed per second that count toward convergence.
    pub useful_samples_per_s: f64,
    /// Predicted wall time to the target, seconds.
    pub time_to_target_s: f64,
    /// GPU-hours.
    pub gpu_hours: f64,
    /// Cost of GPUs and PS hosts.
    pub cost: f64,
    /// Currency of the cost.
    pub currency: String,
    /// Steps simulated before extrapolating.
    pub simulated_steps: u64,
    /// Relative half-width of the 95% confidence interval of the step time.
    pub step_time_ci: f64,
    /// Async: mean staleness in updates (0 otherwise).
    pub mean_staleness: f64,
    /// Failures, checkpoints and restarts, when the scenario has `faults.mtbf`.
    pub failures: Option<FailureCost>,
}

/// What failures add to the time to the target (see [`crate::failures`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureCost {
    /// Training time without failures, seconds.
    pub useful_s: f64,
    /// Mean time between failures of the whole job (host MTBF / hosts), seconds.
    pub job_mtbf_s: f64,
    /// Time to write one checkpoint (parameters and optimizer slots through the shared
    /// checkpoint bandwidth), seconds.
    pub checkpoint_s: f64,
    /// Time a restart takes, the read-back included, seconds.
    pub restart_s: f64,
    /// Work between checkpoints, seconds (Daly's optimum with "auto").
    pub interval_s: f64,
    /// Whether the interval is Daly's optimum.
    pub auto_interval: bool,
    /// Expected failures over the run.
    pub expected_failures: f64,
    /// Expected wall time lost to failures, checkpoints and restarts, seconds.
    pub overhead_s: f64,
    /// Useful time over wall time.
    pub goodput: f64,
}

impl TimeToTarget {
    /// The figures that run records keep (summary.json, sweep.csv).
    pub fn record(&self) -> topolab_core::records::TargetRecord {
        topolab_core::records::TargetRecord {
            time_to_target_s: self.time_to_target_s,
            steps_to_target: self.steps,
            epochs: self.epochs,
            gpu_hours: self.gpu_hours,
            cost: self.cost,
            currency: self.currency.clone(),
            simulated_steps: self.simulated_steps,
            failure_overhead_s: self.failures.as_ref().map_or(0.0, |f| f.overhead_s),
            goodput: self.failures.as_ref().map_or(1.0, |f| f.goodput),
        }
    }
}

/// Why no time to target could be predicted.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Simulation failed.
    #[error(transparent)]
    Sim(#[from] SimError),
    /// No convergence model applies.
    #[error(transparent)]
    Convergence(#[from] ConvergenceError),
    /// The scenario has no target.
    #[error("scenario {0} has no [training] target")]
    NoTarget(String),
}

/// Mean step time (s) and the relative 95% half-width of its estimate, after the first step.
/// Sync and backup: intervals between the ends of consecutive global steps (the first worker
/// to finish a step marks it; a straggler's late steps in backup mode do not count). Async:
/// the durations of every worker's steps.
fn step_statistics(run: &SimRun, mode: Mode) -> (f64, f64) {
    let d: Vec<f64> = match mode {
        Mode::Sync | Mode::Backup => {
            let steps = run.summary.steps as usize;
            let mut ends = vec![u64::MAX; steps];
            for r in &run.steps {
                let e = &mut ends[r.step as usize];
                *e = (*e).min(r.end_ns);
            }
            ends.retain(|&e| e != u64::MAX);
            ends.windows(2).map(|w| w[1].saturating_sub(w[0]) as f64).collect()
        }
        Mode::Async | Mode::StaleSynchronous => {
            run.steps.iter().filter(|r| r.step > 0).map(|r| r.duration_ns() as f64).collect()
        }
    };
    if d.len() < 2 {
        let only = d.first().copied().unwrap_or(0.0);
        return (only / 1e9, f64::INFINITY);
    }
    let n = d.len() as f64;
    let mean = d.iter().sum::<f64>() / n;
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let half = 1.96 * (var / n).sqrt();
    (mean / 1e9, if mean > 0.0 { half / mean } else { 0.0 })
}

/// Simulates `s` until the step time is steady (or `training.steps`, if larger, is done) and
/// predicts the time to its target.
pub fn time_to_target(s: &Scenario, opts: &SimOptions) -> Result<(SimRun, TimeToTarget), TargetError> {
    let target = s.spec.training.target.clone().ok_or_else(|| TargetError::NoTarget(s.spec.name.clone()))?;
    let profile = convergence::profile_for(&s.model.name, &target.metric)?;
    // Fail early on an unreachable target, before simulating.
    profile.e_min(target.value)?;
    let mut steps = FIRST_STEPS.max(2);
    let (run, mean, ci) = loop {
        let mut probe = s.clone();
        probe.spec.training.steps = steps;
        let run = simulate(&probe, opts)?;
        let (mean, ci) = step_statistics(&run, s.topology().mode());
        if ci <= PRECISION || steps >= MAX_STEPS {
            break (run, mean, ci);
        }
        steps *= 2;
    };
    let t = s.topology();
    let g = f64::from(s.spec.hardware.gpus_per_host);
    let b = s.spec.batch as f64;
    let backup = match t {
        Topology::ParameterServer(p) => p.backup_workers,
        Topology::AllReduce(_) => 0,
    };
    let (global_batch, staleness) = match t.mode() {
        Mode::Sync => (f64::from(t.workers()) * g * b, 0.0),
        Mode::Backup => (f64::from(t.workers() - backup) * g * b, 0.0),
        Mode::Async | Mode::StaleSynchronous => {
            let hist = &run.detail.staleness;
            let n: u64 = hist.iter().map(|x| x.1).sum();
            let mean_st = hist.iter().map(|&(k, v)| k as f64 * v as f64).sum::<f64>() / n.max(1) as f64;
            (g * b, mean_st)
        }
    };
    let penalty = 1.0 + s.spec.training.staleness_penalty * staleness;
    let examples = profile.examples(target.value, global_batch)? * penalty;
    // Sync and backup: one update of `global_batch` useful examples per global step. Async:
    // every worker's step is an update; all processed samples count.
    let useful = match t.mode() {
        Mode::Sync | Mode::Backup => global_batch / mean,
        Mode::Async | Mode::StaleSynchronous => run.summary.throughput_samples_per_s,
    };
    let useful_time = examples / useful;
    let gpus = f64::from(t.workers()) * g;
    let ps_hosts = f64::from(s.ps_hosts());
    let failures = failure_cost(s, useful_time, f64::from(t.workers()) + ps_hosts, gpus);
    let time = failures.as_ref().map_or(useful_time, |f| f.useful_s + f.overhead_s);
    let hours = time / 3600.0;
    let cost = hours * (gpus * s.spec.cost.gpu_hour + ps_hosts * s.spec.cost.ps_hour);
    let ttt = TimeToTarget {
        target: format!("{} >= {}", target.metric, target.value),
        global_batch,
        examples,
        epochs: examples / profile.epoch_examples,
        steps: examples / global_batch,
        step_time_s: mean,
        useful_samples_per_s: useful,
        time_to_target_s: time,
        gpu_hours: hours * gpus,
        cost,
        currency: s.spec.cost.currency.clone(),
        simulated_steps: run.summary.steps,
        step_time_ci: ci,
        mean_staleness: staleness,
        failures,
    };
    Ok((run, ttt))
}

impl FailureCost {
    /// Expected time lost (failures, checkpoints, restarts) at intervals from a quarter to four
    /// times this one: (interval s, lost s), for the report's chart.
    pub fn curve(&self) -> Vec<(f64, f64)> {
        (0..=16)
            .map(|i| self.interval_s * 2f64.powf(f64::from(i) / 4.0 - 2.0))
            .map(|tau| {
                let wall = failures::expected_wall_time(
                    self.useful_s,
                    tau,
                    self.checkpoint_s,
                    self.restart_s,
                    self.job_mtbf_s,
                );
                (tau, wall - self.useful_s)
            })
            .collect()
    }
}

/// The expected cost of failures for `useful_s` of training on `hosts` hosts with `gpus`
/// GPUs, when the scenario has `faults.mtbf` (per host) or `faults.gpu_mtbf` (per GPU;
/// validation makes sure the checkpoint bandwidth is there).
fn failure_cost(s: &Scenario, useful_s: f64, hosts: f64, gpus: f64) -> Option<FailureCost> {
    let f = &s.spec.faults;
    let bw = f.checkpoint_bandwidth?;
    let job_mtbf_s = match (f.mtbf, f.gpu_mtbf) {
        (Some(m), _) => m.secs_f64() / hosts.max(1.0),
        (None, Some(g)) => g.time().secs_f64() / gpus.max(1.0),
        (None, None) => return None,
    };
    let checkpoint_s =
        topolab_core::scenario::checkpoint_bytes(&s.model, s.spec.optimizer.kind).0 as f64 / bw.bytes_per_sec();
    let restart_s = f.restart.map_or(0.0, |r| r.secs_f64()) + checkpoint_s;
    let (interval_s, auto_interval) = match f.checkpoint_interval {
        Some(CheckpointInterval::Every(t)) => (t.secs_f64(), false),
        None | Some(CheckpointInterval::Auto) => (failures::daly_interval(checkpoint_s, job_mtbf_s), true),
    };
    let wall = failures::expected_wall_time(useful_s, interval_s, checkpoint_s, restart_s, job_mtbf_s);
    Some(FailureCost {
        useful_s,
        job_mtbf_s,
        checkpoint_s,
        restart_s,
        interval_s,
        auto_interval,
        expected_failures: wall / job_mtbf_s,
        overhead_s: wall - useful_s,
        goodput: useful_s / wall,
    })
}
