//! Failures and checkpoints over a whole training run: what they add to the time to a target.
//!
//! A job of `hosts` hosts, each failing at random (exponentially, mean time between failures
//! `mtbf` per host), fails as a whole every `M = mtbf / hosts` on average. It writes a
//! checkpoint of `C` seconds after every `tau` seconds of work; a failure loses the work since
//! the last complete checkpoint and costs a restart of `R` seconds (rescheduling, starting the
//! processes, reading the checkpoint back). Failures may strike during work, checkpoints and
//! restarts alike.
//!
//! [`expected_wall_time`] is Daly's closed form of the expected wall time for this model
//! (J. T. Daly, "A higher order estimate of the optimum checkpoint interval for restart dumps",
//! Future Generation Computer Systems 22, 2006, eq. 20); [`daly_interval`] his higher-order
//! optimum interval and [`young_interval`] Young's first-order one (J. W. Young, "A first order
//! approximation to the optimum checkpoint interval", CACM 17(9), 1974). [`simulate`] plays the
//! same model out event by event with seeded failures, so that the formulas are checked against
//! a simulation and an interval can be chosen by sweeping it.

use crate::rng;

/// Young's optimum interval between checkpoints: `sqrt(2 C M)`.
pub fn young_interval(checkpoint_s: f64, mtbf_s: f64) -> f64 {
    (2.0 * checkpoint_s * mtbf_s).sqrt()
}

/// Daly's higher-order optimum interval: `sqrt(2CM) (1 + sqrt(C/2M)/3 + (C/2M)/9) - C` for
/// `C < 2M`, else `M`.
pub fn daly_interval(checkpoint_s: f64, mtbf_s: f64) -> f64 {
    let (c, m) = (checkpoint_s, mtbf_s);
    if c >= 2.0 * m {
        return m;
    }
    let x = c / (2.0 * m);
    (2.0 * c * m).sqrt() * (1.0 + x.sqrt() / 3.0 + x / 9.0) - c
}

/// Expected wall time to do `work_s` of work with a checkpoint of `checkpoint_s` after every
/// `interval_s` of work, restarts of `restart_s`, and a job MTBF of `mtbf_s` (Daly's eq. 20):
/// `M e^(R/M) (e^((tau + C)/M) - 1) W / tau`.
pub fn expected_wall_time(work_s: f64, interval_s: f64, checkpoint_s: f64, restart_s: f64, mtbf_s: f64) -> f64 {
    let m = mtbf_s;
    m * (restart_s / m).exp() * ((interval_s + checkpoint_s) / m).exp_m1() * work_s / interval_s
}

/// Plays the model out `replicas` times with failures drawn from `seed`; returns the mean wall
/// time. Replica `i` uses the same failure times whatever the interval (common random numbers),
/// so that a sweep over intervals compares like with like.
pub fn simulate(
    work_s: f64,
    interval_s: f64,
    checkpoint_s: f64,
    restart_s: f64,
    mtbf_s: f64,
    replicas: u32,
    seed: u64,
) -> f64 {
    let mut total = 0.0;
    for r in 0..replicas {
        let mut key = rng::splitmix64(seed ^ u64::from(r).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // Time to the next failure, drawn fresh after each one (memoryless).
        let next = |key: &mut u64| {
            *key = rng::splitmix64(*key);
            let u = ((*key >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            -mtbf_s * u.ln()
        };
        let (mut wall, mut done) = (0.0, 0.0);
        let mut to_failure = next(&mut key);
        while done < work_s {
            // One segment: up to `interval_s` of work, then a checkpoint (none after the last).
            let seg = (work_s - done).min(interval_s);
            let need = seg + if done + seg < work_s { checkpoint_s } else { 0.0 };
            if to_failure >= need {
                wall += need;
                to_failure -= need;
                done += seg;
                continue;
            }
            // Failure in this segment: its work is lost; restart (which may fail too).
            wall += to_failure;
            to_failure = next(&mut key);
            while to_failure < restart_s {
                wall += to_failure;
                to_failure = next(&mut key);
            }
            wall += restart_s;
            to_failure -= restart_s;
        }
        total += wall;
    }
    total / f64::from(replicas)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Daly's published optima (his Table 1 region, quoted in topolab's notes): a 5-minute
    /// checkpoint gives 117, 57 and 9.1 minutes for an MTBF of 24 h, 6 h and 15 min.
    #[test]
    fn daly_optima_match_the_published_figures() {
        for (mtbf_min, want) in [(1440.0, 117.0), (360.0, 57.0), (15.0, 9.1)] {
            let got = daly_interval(5.0 * 60.0, mtbf_min * 60.0) / 60.0;
            assert!((got - want).abs() / want < 0.01, "MTBF {mtbf_min} min: {got:.2} min, published {want}");
        }
        // Young's first-order interval is sqrt(2 C M): 120 min at 24 h.
        assert!((young_interval(300.0, 86_400.0) / 60.0 - 120.0).abs() < 1e-9);
        // A checkpoint longer than twice the MTBF: checkpoint every MTBF.
        assert_eq!(daly_interval(1000.0, 100.0), 100.0);
    }

    /// Without failures (a huge MTBF) the wall time is the work plus its checkpoints.
    #[test]
    fn without_failures_the_wall_time_is_work_and_checkpoints() {
        // 10 h of work, a 1-minute checkpoint every hour: ~10 h 10 min.
        let t = expected_wall_time(36_000.0, 3600.0, 60.0, 0.0, 1e15);
        assert!((t - 36_600.0).abs() < 1.0, "{t}");
    }

    /// The event-by-event simulation agrees with Daly's closed form, and sweeping the interval
    /// finds his optimum within 10%.
    #[test]
    fn simulated_optimum_is_within_ten_percent_of_daly() {
        // 100 h of work, 5-minute checkpoints, 10-minute restarts, job MTBF 6 h.
        let (w, c, r, m) = (360_000.0, 300.0, 600.0, 21_600.0);
        let daly = daly_interval(c, m);
        let sim = simulate(w, daly, c, r, m, 400, 7);
        let formula = expected_wall_time(w, daly, c, r, m);
        assert!((sim / formula - 1.0).abs() < 0.02, "simulated {sim:.0} s vs Daly {formula:.0} s");
        // Sweep intervals from 10 to 240 minutes in 2-minute steps, the same failures each time.
        let (best, _) = (5..=120)
            .map(|k| f64::from(k) * 120.0)
            .map(|tau| (tau, simulate(w, tau, c, r, m, 400, 7)))
            .fold((0.0, f64::INFINITY), |acc, (tau, t)| if t < acc.1 { (tau, t) } else { acc });
        eprintln!(
            "simulated optimum {:.1} min, Daly {:.1} min; at Daly's: simulated {sim:.0} s, formula {formula:.0} s",
            best / 60.0,
            daly / 60.0
        );
        assert!(
            (best / daly - 1.0).abs() < 0.10,
            "simulated optimum {:.1} min, Daly {:.1} min",
            best / 60.0,
            daly / 60.0
        );
    }
}
