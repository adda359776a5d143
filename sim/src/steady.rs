//! Steady state: a deterministic run whose steps have begun to repeat is not simulated to the
//! end. Once the last [`REPEATS`] steps of every worker each took exactly as long as the step
//! before, started exactly one period after it, moved the same bytes, and the run's counters
//! (bytes per resource, GPU time) grew by the same amounts, every later step is the last one
//! shifted by whole periods: the simulator's state at the end of a step is then its state one
//! step earlier moved one period on, and a deterministic engine does the same from the same
//! state. The remaining steps' records and counters are written from the period.
//!
//! Only runs without anything drawn per step or per message (jitter, noise, episodes, unfair
//! sharing, queue order) qualify; the caller decides. The extrapolation is checked against
//! simulating every step (`SimOptions::every_step`) by the all-reduce tests, which require the
//! records to be identical.

use std::collections::VecDeque;

use topolab_core::records::StepRecord;

/// Consecutive repeats of one period a run shows before its remaining steps are extrapolated.
pub(crate) const REPEATS: usize = 3;

/// One step's end: its records (by worker) and the run's counters when its last record came.
struct Snapshot {
    step: u64,
    records: Vec<StepRecord>,
    counters: Vec<f64>,
}

/// Watches the steps end, one by one, for a period.
#[derive(Default)]
pub(crate) struct Steady {
    last: VecDeque<Snapshot>,
}

/// A period found: the last simulated step, its records, how far apart steps start, and how
/// much each counter grows per step.
#[derive(Debug)]
pub(crate) struct Period {
    pub(crate) step: u64,
    ns: u64,
    records: Vec<StepRecord>,
    growth: Vec<f64>,
}

impl Steady {
    /// Every record of `step` is in (`records`, any order); `counters` are the run's cumulative
    /// counters now. Returns the period once the last [`REPEATS`] steps repeat it.
    pub(crate) fn step_ended(&mut self, step: u64, records: &[StepRecord], counters: Vec<f64>) -> Option<Period> {
        let mut records = records.to_vec();
        records.sort_by_key(|r| r.worker);
        if self.last.back().is_some_and(|s| s.step + 1 != step) {
            self.last.clear();
        }
        self.last.push_back(Snapshot { step, records, counters });
        if self.last.len() > REPEATS + 1 {
            self.last.pop_front();
        }
        if self.last.len() <= REPEATS {
            return None;
        }
        let (a, b) = (&self.last[0], &self.last[1]);
        let ns = b.records.first()?.start_ns.checked_sub(a.records.first()?.start_ns)?;
        let growth: Vec<f64> = b.counters.iter().zip(&a.counters).map(|(y, x)| y - x).collect();
        let repeats = self.last.iter().zip(self.last.iter().skip(1)).all(|(a, b)| {
            shifted(&a.records, &b.records, ns)
                && b.counters.iter().zip(&a.counters).zip(&growth).all(|((y, x), g)| close(y - x, *g))
        });
        let last = self.last.back()?;
        (repeats && ns > 0).then(|| Period { step: last.step, ns, records: last.records.clone(), growth })
    }
}

impl Period {
    /// The records of steps after the last simulated one, up to `steps`.
    pub(crate) fn records(&self, steps: u64) -> impl Iterator<Item = StepRecord> + '_ {
        (self.step + 1..steps).flat_map(move |k| {
            let shift = (k - self.step) * self.ns;
            self.records.iter().map(move |r| StepRecord {
                step: k,
                start_ns: r.start_ns + shift,
                end_ns: r.end_ns + shift,
                ..r.clone()
            })
        })
    }

    /// Counter `i` at the end of the run of `steps` steps, from its value at the last
    /// simulated step's end.
    pub(crate) fn counter(&self, i: usize, now: f64, steps: u64) -> f64 {
        now + self.growth[i] * steps.saturating_sub(self.step + 1) as f64
    }
}

/// `b` is `a` one period of `ns` later: the same workers, steps as long, started `ns` after,
/// with the same compute, communication, waiting and bytes.
fn shifted(a: &[StepRecord], b: &[StepRecord], ns: u64) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            a.worker == b.worker
                && b.start_ns.checked_sub(a.start_ns) == Some(ns)
                && b.end_ns.checked_sub(a.end_ns) == Some(ns)
                && (a.compute_ns, a.comm_ns, a.wait_ns) == (b.compute_ns, b.comm_ns, b.wait_ns)
                && (a.bytes_sent, a.bytes_received) == (b.bytes_sent, b.bytes_received)
        })
}

/// Two growths of a sum of floating-point amounts are the same (up to the sum's rounding).
fn close(x: f64, y: f64) -> bool {
    (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
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
            compute_ns: 5,
            comm_ns: end - start - 5,
            wait_ns: 0,
            bytes_sent: 7,
            bytes_received: 7,
            scenario_hash: String::new(),
            seed: 1,
            version: String::new(),
        }
    }

    #[test]
    fn a_period_is_found_after_its_repeats_and_extends_the_records() {
        let mut s = Steady::default();
        // Step 0 differs (a warm-up); steps 1..=4 repeat every 100 ns.
        let steps = [(0u64, 0u64, 90u64), (1, 90, 200), (2, 190, 300), (3, 290, 400), (4, 390, 500)];
        let mut found = None;
        for (k, start, end) in steps {
            let recs = [rec(1, k, start + 3, end), rec(0, k, start, end)];
            found = s.step_ended(k, &recs, vec![10.0 * k as f64 + 1.0]);
            if k < 4 {
                assert!(found.is_none(), "step {k}: no period yet");
            }
        }
        let p = found.expect("steps 1-4 repeat");
        assert_eq!((p.step, p.ns), (4, 100));
        let more: Vec<_> = p.records(7).collect();
        assert_eq!(more.len(), 4);
        assert_eq!((more[0].worker, more[0].step, more[0].start_ns, more[0].end_ns), (0, 5, 490, 600));
        assert_eq!((more[3].worker, more[3].step, more[3].start_ns, more[3].end_ns), (1, 6, 593, 700));
        assert_eq!(p.counter(0, 41.0, 7), 61.0);
    }

    #[test]
    fn no_period_when_a_worker_or_a_counter_differs() {
        let mut s = Steady::default();
        for k in 0..6u64 {
            // Worker 1's step is 1 ns longer every other step.
            let recs = [rec(0, k, 100 * k, 100 * k + 90), rec(1, k, 100 * k, 100 * k + 90 + k % 2)];
            assert!(s.step_ended(k, &recs, vec![k as f64]).is_none());
        }
        let mut s = Steady::default();
        for k in 0..6u64 {
            let recs = [rec(0, k, 100 * k, 100 * k + 90)];
            assert!(s.step_ended(k, &recs, vec![(k * k) as f64]).is_none(), "the counter grows unevenly");
        }
    }
}
