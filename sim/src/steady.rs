//! Steady state: a deterministic run whose steps have begun to repeat is not simulated to the
//! end. The steps repeat with a period of `p` steps (1 up to [`MAX_PERIOD`]: a two-tier
//! network can make hosts take turns) once, for [`REPEATS`] periods in a row, every worker's
//! step started exactly as long after its step `p` before as every other worker's did (the
//! period's length, to the nanosecond), lasted exactly as long as that step, moved the same
//! bytes, and the run's counters (bytes per resource) grew by the same amounts over each
//! period. Every later step is then its step one period before, shifted by the period: the
//! simulator's state at the end of a step is its state a period earlier moved on by the
//! period, and a deterministic engine does the same from the same state. The remaining
//! steps' records and counters are written from the period.
//!
//! Only runs without anything drawn per step or per message (jitter, noise, episodes, unfair
//! sharing, queue order) qualify; the caller decides. The extrapolation is checked against
//! simulating every step (`SimOptions::every_step`) by the all-reduce tests, which require the
//! records to be identical.

use std::collections::VecDeque;

use topolab_core::records::StepRecord;

/// Consecutive repeats of one period a run shows before its remaining steps are extrapolated.
pub(crate) const REPEATS: usize = 3;

/// The longest period, in steps, looked for.
pub(crate) const MAX_PERIOD: usize = 8;

/// One step's end: its records (by worker) and the run's counters when its last record came.
#[derive(Debug, Clone)]
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

/// A period found: its length in steps and in ns, and the ends of its last `steps + 1` steps
/// (the last simulated one last).
#[derive(Debug)]
pub(crate) struct Period {
    steps: usize,
    ns: u64,
    last: Vec<Snapshot>,
}

impl Steady {
    /// Every record of `step` is in (`records`, any order); `counters` are the run's cumulative
    /// counters now. Returns the shortest period the last steps repeat [`REPEATS`] times.
    pub(crate) fn step_ended(&mut self, step: u64, records: &[StepRecord], counters: Vec<f64>) -> Option<Period> {
        let mut records = records.to_vec();
        records.sort_by_key(|r| r.worker);
        if self.last.back().is_some_and(|s| s.step + 1 != step) {
            self.last.clear();
        }
        self.last.push_back(Snapshot { step, records, counters });
        if self.last.len() > (REPEATS + 1) * MAX_PERIOD {
            self.last.pop_front();
        }
        for p in 1..=MAX_PERIOD {
            let need = (REPEATS + 1) * p;
            if self.last.len() < need {
                break;
            }
            let w: Vec<&Snapshot> = self.last.iter().skip(self.last.len() - need).collect();
            let ns = w[p].records.first()?.start_ns.checked_sub(w[0].records.first()?.start_ns)?;
            let growth: Vec<f64> = w[p].counters.iter().zip(&w[0].counters).map(|(y, x)| y - x).collect();
            let repeats = (p..need).all(|j| {
                shifted(&w[j - p].records, &w[j].records, ns)
                    && w[j].counters.iter().zip(&w[j - p].counters).zip(&growth).all(|((y, x), g)| close(y - x, *g))
            });
            if repeats && ns > 0 {
                let last = w[need - p - 1..].iter().map(|s| (*s).clone()).collect();
                return Some(Period { steps: p, ns, last });
            }
        }
        None
    }
}

impl Period {
    /// The last simulated step.
    pub(crate) fn step(&self) -> u64 {
        self.last[self.steps].step
    }

    /// The records of steps after the last simulated one, up to `steps`: each is its step a
    /// whole number of periods before, among the last simulated ones, shifted by as many.
    pub(crate) fn records(&self, steps: u64) -> impl Iterator<Item = StepRecord> + '_ {
        let (k, p) = (self.step(), self.steps as u64);
        (k + 1..steps).flat_map(move |j| {
            let m = (j - k).div_ceil(p);
            let base = &self.last[(j - m * p + p - k) as usize];
            base.records.iter().map(move |r| StepRecord {
                step: j,
                start_ns: r.start_ns + m * self.ns,
                end_ns: r.end_ns + m * self.ns,
                ..r.clone()
            })
        })
    }

    /// Counter `i` at the end of a run of `steps` steps.
    pub(crate) fn counter(&self, i: usize, steps: u64) -> f64 {
        let p = self.steps;
        let left = steps.saturating_sub(self.step() + 1) as usize;
        let (periods, rest) = (left / p, left % p);
        let c = |s: usize| self.last[s].counters[i];
        c(p) + periods as f64 * (c(p) - c(0)) + (c(rest) - c(0))
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
        assert_eq!((p.step(), p.steps, p.ns), (4, 1, 100));
        let more: Vec<_> = p.records(7).collect();
        assert_eq!(more.len(), 4);
        assert_eq!((more[0].worker, more[0].step, more[0].start_ns, more[0].end_ns), (0, 5, 490, 600));
        assert_eq!((more[3].worker, more[3].step, more[3].start_ns, more[3].end_ns), (1, 6, 593, 700));
        assert_eq!(p.counter(0, 7), 61.0);
    }

    #[test]
    fn a_period_of_several_steps_is_found_and_extended_in_turn() {
        // Steps last 90, 110, 100 ns in turn (a period of 3 steps, 300 ns); a counter grows
        // by 1, 2, 3 in turn.
        let mut s = Steady::default();
        let (mut start, mut c, mut found) = (0u64, 0.0, None);
        for k in 0..12u64 {
            let len = [90, 110, 100][k as usize % 3];
            c += [1.0, 2.0, 3.0][k as usize % 3];
            found = s.step_ended(k, &[rec(0, k, start, start + len)], vec![c]);
            if k < 11 {
                assert!(found.is_none(), "step {k}: three whole periods not seen yet");
            }
            start += len;
        }
        // Steps 0-11 make four periods: found at step 11, c = 24.
        let p = found.expect("a period of 3 steps");
        assert_eq!((p.step(), p.steps, p.ns), (11, 3, 300));
        let more: Vec<_> = p.records(16).collect();
        let lens: Vec<u64> = more.iter().map(|r| r.end_ns - r.start_ns).collect();
        assert_eq!(lens, [90, 110, 100, 90]);
        assert_eq!((more[0].step, more[0].start_ns), (12, 1200));
        assert_eq!((more[3].step, more[3].start_ns), (15, 1500));
        // Steps 12-15 add 1 + 2 + 3 + 1.
        assert_eq!(p.counter(0, 16), 31.0);
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
