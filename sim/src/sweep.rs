//! Running every configuration of a sweep: in parallel (rayon), results in sweep order, each
//! with its time to target when the scenario has one. The CLI draws the progress and the
//! tables; the records ([`record`]) are what sweep.csv, the reports and `compare` read.

use rayon::prelude::*;
use topolab_core::records::{RunSummary, SweepRecord};
use topolab_core::scenario::{PsHosts, Scenario, SweepPoint, Topology};

use crate::target::{self, TargetError, TimeToTarget};
use crate::{SimError, SimOptions};

/// One configuration and what it gave.
#[derive(Debug, Clone)]
pub struct Row {
    /// The axis values of this point.
    pub point: SweepPoint,
    /// The configuration.
    pub scenario: Scenario,
    /// The simulated summary.
    pub summary: RunSummary,
    /// Time to the target, if the scenario has one.
    pub target: Option<TimeToTarget>,
}

/// Why a sweep stopped.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// A configuration could not be simulated.
    #[error("{scenario}: {source}")]
    Sim {
        /// The configuration's name.
        scenario: String,
        /// What went wrong.
        source: SimError,
    },
    /// A configuration's time to target could not be predicted.
    #[error("{scenario}: {source}")]
    Target {
        /// The configuration's name.
        scenario: String,
        /// What went wrong.
        source: TargetError,
    },
    /// The thread pool could not be built.
    #[error("cannot start {jobs} threads: {message}")]
    Pool {
        /// Threads asked for.
        jobs: usize,
        /// Why not.
        message: String,
    },
}

impl SweepError {
    /// True for errors caused by the scenario (exit code 2).
    pub fn is_bad_input(&self) -> bool {
        match self {
            SweepError::Sim { source, .. } => source.is_bad_input(),
            SweepError::Target { source: TargetError::Sim(e), .. } => e.is_bad_input(),
            SweepError::Target { .. } => true,
            SweepError::Pool { .. } => false,
        }
    }
}

/// Simulates every configuration on `jobs` threads (0: one per core), in sweep order;
/// `done` is called after each configuration (from the worker threads).
pub fn run_all(
    configs: Vec<(SweepPoint, Scenario)>,
    jobs: usize,
    done: &(dyn Fn() + Sync),
) -> Result<Vec<Row>, SweepError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .build()
        .map_err(|e| SweepError::Pool { jobs, message: e.to_string() })?;
    let opts = SimOptions { trace: false, ..SimOptions::default() };
    let results: Vec<Result<Row, SweepError>> = pool.install(|| {
        configs
            .into_par_iter()
            .map(|(point, s)| {
                let r = run_one(&s, &opts).map(|(summary, target)| Row { point, scenario: s, summary, target });
                done();
                r
            })
            .collect()
    });
    results.into_iter().collect()
}

/// Simulates one configuration: its time to target when it has one, else its steps.
pub fn run_one(s: &Scenario, opts: &SimOptions) -> Result<(RunSummary, Option<TimeToTarget>), SweepError> {
    if s.spec.training.target.is_some() {
        let (run, t) = target::time_to_target(s, opts)
            .map_err(|source| SweepError::Target { scenario: s.spec.name.clone(), source })?;
        Ok((run.summary, Some(t)))
    } else {
        let run =
            crate::simulate(s, opts).map_err(|source| SweepError::Sim { scenario: s.spec.name.clone(), source })?;
        Ok((run.summary, None))
    }
}

/// The sweep.csv record of a row.
pub fn record(r: &Row) -> SweepRecord {
    let s = &r.scenario;
    let t = s.topology();
    let (placement, ps_hosts) = match t {
        Topology::AllReduce(a) => (format!("{} all-reduce", a.algorithm.as_str()), "none"),
        Topology::ParameterServer(p) => {
            (p.placement.as_str().into(), if p.ps_hosts == PsHosts::Dedicated { "dedicated" } else { "colocated" })
        }
    };
    SweepRecord {
        workers: t.workers(),
        ps: t.ps(),
        nic: s.spec.network.nic.clone(),
        batch: s.spec.batch,
        gpu: s.gpu.name.clone(),
        placement,
        mode: t.mode().as_str().into(),
        ps_hosts: ps_hosts.into(),
        summary: r.summary.clone(),
        target: r.target.as_ref().map(TimeToTarget::record),
    }
}

/// The sweep.csv records of the rows.
pub fn records(rows: &[Row]) -> Vec<SweepRecord> {
    rows.iter().map(record).collect()
}
