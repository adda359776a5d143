//! Comparing two sets of run records metric by metric: a run with a run, or a sweep with a
//! sweep matched configuration by configuration. What `topolab compare` prints and what a
//! user's CI gates a pull request on.

use serde::Serialize;

use crate::records::{RunSummary, SweepRecord};

/// A metric of a run and which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Median step time, seconds.
    StepP50,
    /// 90th-percentile step time, seconds.
    StepP90,
    /// 99th-percentile step time, seconds.
    StepP99,
    /// Mean step time, seconds.
    StepMean,
    /// Samples per second over all replicas.
    Throughput,
    /// Time to the target accuracy, seconds (runs with a target).
    TimeToTarget,
    /// Cost to the target (runs with a target).
    Cost,
    /// GPU-hours to the target (runs with a target).
    GpuHours,
}

impl Metric {
    /// Every metric, in the order they are printed.
    pub const ALL: [Metric; 8] = [
        Metric::StepP50,
        Metric::StepP90,
        Metric::StepP99,
        Metric::StepMean,
        Metric::Throughput,
        Metric::TimeToTarget,
        Metric::Cost,
        Metric::GpuHours,
    ];

    /// The name on the command line and in output.
    pub fn name(self) -> &'static str {
        match self {
            Metric::StepP50 => "step_p50",
            Metric::StepP90 => "step_p90",
            Metric::StepP99 => "step_p99",
            Metric::StepMean => "step_mean",
            Metric::Throughput => "throughput",
            Metric::TimeToTarget => "time_to_target",
            Metric::Cost => "cost",
            Metric::GpuHours => "gpu_hours",
        }
    }

    /// The metric of this name.
    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Unit of the metric's values.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::Throughput => "samples/s",
            Metric::Cost => "",
            Metric::GpuHours => "h",
            _ => "s",
        }
    }

    /// True when a larger value is better (throughput); else smaller is better.
    pub fn higher_is_better(self) -> bool {
        self == Metric::Throughput
    }

    /// True for the metrics that only runs with a target have.
    pub fn needs_target(self) -> bool {
        matches!(self, Metric::TimeToTarget | Metric::Cost | Metric::GpuHours)
    }

    /// The value in `s`, if it has one.
    pub fn value(self, s: &RunSummary) -> Option<f64> {
        let t = s.target.as_ref();
        match self {
            Metric::StepP50 => Some(s.step_time_s.p50),
            Metric::StepP90 => Some(s.step_time_s.p90),
            Metric::StepP99 => Some(s.step_time_s.p99),
            Metric::StepMean => Some(s.step_time_s.mean),
            Metric::Throughput => Some(s.throughput_samples_per_s),
            Metric::TimeToTarget => t.map(|t| t.time_to_target_s),
            Metric::Cost => t.map(|t| t.cost),
            Metric::GpuHours => t.map(|t| t.gpu_hours),
        }
    }
}

/// One configuration's run: a label (empty for a single run) and its summary.
#[derive(Debug, Clone)]
pub struct Labelled {
    /// The configuration (a sweep point's axes), or "" for a single run.
    pub configuration: String,
    /// Its summary.
    pub summary: RunSummary,
}

/// A sweep row's configuration as a label: every axis, so that rows match exactly.
pub fn configuration(r: &SweepRecord) -> String {
    format!(
        "workers={} ps={} nic={} batch={} gpu={} placement={} mode={} ps_hosts={}",
        r.workers, r.ps, r.nic, r.batch, r.gpu, r.placement, r.mode, r.ps_hosts
    )
}

/// One metric of one configuration, compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The configuration ("" for a single run).
    pub configuration: String,
    /// The metric.
    pub metric: Metric,
    /// Its value in the baseline.
    pub baseline: f64,
    /// Its value in the new run.
    pub new: f64,
    /// (new - baseline) / baseline, percent.
    pub change_pct: f64,
    /// How much worse the new run is, percent (negative: better).
    pub regression_pct: f64,
    /// True when the regression exceeds the threshold.
    pub regressed: bool,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The threshold, percent.
    pub max_regression_pct: f64,
    /// Every metric of every matched configuration.
    pub rows: Vec<Row>,
    /// Configurations only the baseline has.
    pub baseline_only: Vec<String>,
    /// Configurations only the new run has.
    pub new_only: Vec<String>,
    /// Scenario hashes that differ between matched configurations (a comparison of different
    /// scenarios, not of two versions of one): (configuration, baseline hash, new hash).
    pub different_scenarios: Vec<(String, String, String)>,
    /// True when any row regressed.
    pub regressed: bool,
}

/// Why two sets of runs cannot be compared.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompareError {
    /// A metric was asked for that a side does not have.
    #[error("metric `{metric}` needs a run with a training target; {side} has none (add [training.target])")]
    MissingMetric {
        /// The metric.
        metric: &'static str,
        /// "the baseline" or "the new run".
        side: &'static str,
    },
    /// Nothing in common.
    #[error("no configuration of the baseline is in the new run (baseline: {baseline}; new: {new})")]
    NothingMatched {
        /// The baseline's first configuration.
        baseline: String,
        /// The new run's first configuration.
        new: String,
    },
}

/// The metrics compared when none is asked for: step p50 and throughput, and time to target
/// and cost when both sides have a target.
pub fn default_metrics(baseline: &[Labelled], new: &[Labelled]) -> Vec<Metric> {
    let mut m = vec![Metric::StepP50, Metric::Throughput];
    let targets = |v: &[Labelled]| !v.is_empty() && v.iter().all(|l| l.summary.target.is_some());
    if targets(baseline) && targets(new) {
        m.extend([Metric::TimeToTarget, Metric::Cost]);
    }
    m
}

/// Compares `new` with `baseline`, matching configurations by label, for `metrics`; a metric
/// regresses when it is worse by more than `max_regression_pct` percent.
pub fn compare(
    baseline: &[Labelled],
    new: &[Labelled],
    metrics: &[Metric],
    max_regression_pct: f64,
) -> Result<Comparison, CompareError> {
    let mut rows = Vec::new();
    let mut different_scenarios = Vec::new();
    let mut matched = 0;
    for b in baseline {
        let Some(n) = new.iter().find(|n| n.configuration == b.configuration) else { continue };
        matched += 1;
        if b.summary.scenario_hash != n.summary.scenario_hash {
            different_scenarios.push((
                b.configuration.clone(),
                b.summary.scenario_hash.clone(),
                n.summary.scenario_hash.clone(),
            ));
        }
        for &metric in metrics {
            let bv = metric
                .value(&b.summary)
                .ok_or(CompareError::MissingMetric { metric: metric.name(), side: "the baseline" })?;
            let nv = metric
                .value(&n.summary)
                .ok_or(CompareError::MissingMetric { metric: metric.name(), side: "the new run" })?;
            let change_pct = if bv != 0.0 {
                (nv - bv) / bv.abs() * 100.0
            } else if nv == 0.0 {
                0.0
            } else {
                f64::INFINITY
            };
            let regression_pct = if metric.higher_is_better() { -change_pct } else { change_pct };
            let regressed = regression_pct > max_regression_pct;
            rows.push(Row {
                configuration: b.configuration.clone(),
                metric,
                baseline: bv,
                new: nv,
                change_pct,
                regression_pct,
                regressed,
            });
        }
    }
    if matched == 0 {
        let first = |v: &[Labelled]| v.first().map_or_else(|| "nothing".to_string(), |l| l.configuration.clone());
        return Err(CompareError::NothingMatched { baseline: first(baseline), new: first(new) });
    }
    let only = |a: &[Labelled], b: &[Labelled]| -> Vec<String> {
        a.iter()
            .filter(|x| !b.iter().any(|y| y.configuration == x.configuration))
            .map(|x| x.configuration.clone())
            .collect()
    };
    let regressed = rows.iter().any(|r| r.regressed);
    Ok(Comparison {
        max_regression_pct,
        rows,
        baseline_only: only(baseline, new),
        new_only: only(new, baseline),
        different_scenarios,
        regressed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(step: f64, throughput: f64) -> Labelled {
        Labelled { configuration: String::new(), summary: RunSummary::example(1, step, throughput) }
    }

    #[test]
    fn ten_percent_slower_regresses_at_five_and_not_at_fifteen() {
        // Step 1.0 s -> 1.1 s: +10% step time; throughput 100 -> 90.9: 9.1% worse.
        let (b, n) = (vec![run(1.0, 100.0)], vec![run(1.1, 100.0 / 1.1)]);
        let m = [Metric::StepP50, Metric::Throughput];
        let c = compare(&b, &n, &m, 5.0).unwrap();
        assert!(c.regressed);
        assert!((c.rows[0].change_pct - 10.0).abs() < 1e-9);
        assert!((c.rows[1].regression_pct - 100.0 / 11.0).abs() < 1e-9);
        assert!(!compare(&b, &n, &m, 15.0).unwrap().regressed);
        // Faster is never a regression.
        assert!(!compare(&n, &b, &m, 0.0).unwrap().regressed);
    }

    #[test]
    fn sweeps_match_by_configuration_and_report_the_rest() {
        let at = |c: &str, step: f64| Labelled { configuration: c.into(), ..run(step, 1.0 / step) };
        let b = vec![at("a", 1.0), at("b", 1.0), at("gone", 1.0)];
        let n = vec![at("b", 1.0), at("a", 1.3), at("added", 1.0)];
        let c = compare(&b, &n, &[Metric::StepP50], 5.0).unwrap();
        assert_eq!(c.rows.len(), 2);
        assert!(c.rows[0].regressed && !c.rows[1].regressed);
        assert_eq!(
            (c.baseline_only.as_slice(), c.new_only.as_slice()),
            (&["gone".to_string()][..], &["added".to_string()][..])
        );
        let none = compare(&b, &[at("x", 1.0)], &[Metric::StepP50], 5.0).unwrap_err();
        assert!(matches!(none, CompareError::NothingMatched { .. }));
    }

    #[test]
    fn a_target_metric_needs_a_target() {
        let e = compare(&[run(1.0, 1.0)], &[run(1.0, 1.0)], &[Metric::TimeToTarget], 5.0).unwrap_err();
        assert!(e.to_string().contains("training target"), "{e}");
        assert_eq!(default_metrics(&[run(1.0, 1.0)], &[run(1.0, 1.0)]), vec![Metric::StepP50, Metric::Throughput]);
    }
}
