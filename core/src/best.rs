//! Choosing among the configurations of a sweep: the fastest to the target (or the highest
//! throughput without one), the cheapest, the Pareto front of time against cost, and one line
//! that describes a configuration. The CLI and the reports both use these, so they always
//! name the same configurations in the same words.

use crate::records::SweepRecord;

/// A duration for people: seconds below a minute, minutes below an hour, hours below two
/// days, days from there (one decimal).
pub fn human_duration(seconds: f64) -> String {
    if seconds >= 2.0 * 86400.0 {
        format!("{:.1} d", seconds / 86400.0)
    } else if seconds >= 3600.0 {
        format!("{:.1} h", seconds / 3600.0)
    } else if seconds >= 60.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{seconds:.1} s")
    }
}

/// The configuration that reaches the target soonest; without targets, the one with the
/// highest throughput.
pub fn fastest(rows: &[SweepRecord]) -> Option<usize> {
    let key = |r: &SweepRecord| r.target.as_ref().map_or(-r.summary.throughput_samples_per_s, |t| t.time_to_target_s);
    (0..rows.len()).min_by(|&a, &b| key(&rows[a]).total_cmp(&key(&rows[b])))
}

/// The configuration that reaches the target for the least money (rows with a target only).
pub fn cheapest(rows: &[SweepRecord]) -> Option<usize> {
    (0..rows.len())
        .filter(|&i| rows[i].target.is_some())
        .min_by(|&a, &b| cost(&rows[a]).total_cmp(&cost(&rows[b])).then(time(&rows[a]).total_cmp(&time(&rows[b]))))
}

fn time(r: &SweepRecord) -> f64 {
    r.target.as_ref().map_or(f64::INFINITY, |t| t.time_to_target_s)
}

fn cost(r: &SweepRecord) -> f64 {
    r.target.as_ref().map_or(f64::INFINITY, |t| t.cost)
}

/// Indices of the Pareto front of (time to target, cost), fastest first: no other
/// configuration is both faster and cheaper.
pub fn pareto(rows: &[SweepRecord]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].target.is_some()).collect();
    idx.sort_by(|&a, &b| time(&rows[a]).total_cmp(&time(&rows[b])).then(cost(&rows[a]).total_cmp(&cost(&rows[b]))));
    let mut front = Vec::new();
    let mut best_cost = f64::INFINITY;
    for i in idx {
        if cost(&rows[i]) < best_cost {
            best_cost = cost(&rows[i]);
            front.push(i);
        }
    }
    front
}

/// For each cluster a sweep ran both with parameter servers and with an all-reduce (same
/// workers, GPU, NIC and batch): which wins, by how much, and why, in one line each. Against
/// the all-reduce stands the best PS configuration of that cluster (soonest to the target, or
/// the highest throughput without one).
pub fn ps_vs_all_reduce(rows: &[SweepRecord]) -> Vec<String> {
    let key = |r: &SweepRecord| (r.workers, r.gpu.clone(), r.nic.clone(), r.batch);
    let score = |r: &SweepRecord| r.target.as_ref().map_or(-r.summary.throughput_samples_per_s, |t| t.time_to_target_s);
    let limit = |r: &SweepRecord| {
        let b = &r.summary.bottleneck;
        b.split(':').next().unwrap_or(b).to_string()
    };
    let mut out = Vec::new();
    for ar in rows.iter().filter(|r| r.all_reduce()) {
        let Some(ps) =
            rows.iter().filter(|r| !r.all_reduce() && key(r) == key(ar)).min_by(|a, b| score(a).total_cmp(&score(b)))
        else {
            continue;
        };
        let (a_step, p_step) = (ar.summary.step_time_s.mean, ps.summary.step_time_s.mean);
        let figures = |r: &SweepRecord| match &r.target {
            Some(t) => format!("{} and {:.0} {}", human_duration(t.time_to_target_s), t.cost, t.currency),
            None => format!("{:.1} samples/s", r.summary.throughput_samples_per_s),
        };
        // Within 1% on time (the precision of a steady-state estimate is +-0.5%) the cost
        // decides; without targets, throughput alone.
        let cost_of = |r: &SweepRecord| r.target.as_ref().map_or(0.0, |t| t.cost);
        let tie = ar.target.is_some() && (score(ar) / score(ps) - 1.0).abs() < 0.01;
        let ring_wins = if tie { cost_of(ar) <= cost_of(ps) } else { score(ar) <= score(ps) };
        let (w, l) = if ring_wins { (ar, ps) } else { (ps, ar) };
        let sooner = match (&w.target, &l.target) {
            (Some(a), Some(b)) => {
                let faster = (1.0 - a.time_to_target_s / b.time_to_target_s) * 100.0;
                let cheaper = (1.0 - a.cost / b.cost) * 100.0;
                let cost =
                    if cheaper >= 0.0 { format!("{cheaper:.0}% cheaper") } else { format!("{:.0}% dearer", -cheaper) };
                if tie { format!("as soon (within 1%) and {cost}") } else { format!("{faster:.1}% sooner and {cost}") }
            }
            _ => format!(
                "{:.1}% more samples/s",
                (w.summary.throughput_samples_per_s / l.summary.throughput_samples_per_s - 1.0) * 100.0
            ),
        };
        let why = if tie {
            format!(
                "the steps are about equal ({a_step:.3} s ring, {p_step:.3} s PS; {}), so the PS hosts' price decides",
                limit(ps)
            )
        } else if ring_wins {
            format!("the PS step is {p_step:.3} s against the ring's {a_step:.3} s ({})", limit(ps))
        } else {
            format!("the ring's step is {a_step:.3} s against the PS's {p_step:.3} s ({})", limit(ar))
        };
        out.push(format!(
            "{} workers x {}, {} NICs: {} wins, {sooner}: {} against {} with {} PS; {why}",
            ar.workers,
            ar.gpu,
            ar.nic,
            if ring_wins { ar.placement.clone() } else { "the parameter-server configuration".into() },
            figures(w),
            figures(l),
            ps.ps,
        ));
    }
    out
}

/// One line: the configuration, then its time to target and cost (or its throughput).
pub fn describe(r: &SweepRecord) -> String {
    let workers = format!("{} worker{} x {}", r.workers, if r.workers == 1 { "" } else { "s" }, r.gpu);
    let mut d = if r.all_reduce() {
        format!("{workers}, {}, no PS, {} NICs", r.placement, r.nic)
    } else {
        format!("{workers}, {} PS ({}), {} {}, {} NICs", r.ps, r.ps_hosts, r.mode, r.placement, r.nic)
    };
    match &r.target {
        Some(t) => {
            d.push_str(&format!(": {} to the target, {:.0} {}", human_duration(t.time_to_target_s), t.cost, t.currency))
        }
        None => d.push_str(&format!(": {:.1} samples/s", r.summary.throughput_samples_per_s)),
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{RunSummary, TargetRecord};

    fn row(workers: u32, time_h: f64, cost: f64) -> SweepRecord {
        SweepRecord {
            workers,
            ps: 1,
            nic: "10GbE".into(),
            batch: 32,
            gpu: "k40".into(),
            placement: "greedy".into(),
            mode: "sync".into(),
            ps_hosts: "dedicated".into(),
            summary: RunSummary::example(workers, 1.0, f64::from(workers)),
            target: Some(TargetRecord {
                time_to_target_s: time_h * 3600.0,
                steps_to_target: 1.0,
                epochs: 1.0,
                gpu_hours: 1.0,
                cost,
                currency: "USD".into(),
                simulated_steps: 20,
                failure_overhead_s: 0.0,
                goodput: 1.0,
            }),
        }
    }

    #[test]
    fn fastest_cheapest_and_the_front_between_them() {
        // (time h, cost): a (10, 100), b (5, 150), c (20, 90), d (6, 200): d is slower and
        // dearer than b, so the front is b, a, c.
        let rows = vec![row(1, 10.0, 100.0), row(2, 5.0, 150.0), row(3, 20.0, 90.0), row(4, 6.0, 200.0)];
        assert_eq!(fastest(&rows), Some(1));
        assert_eq!(cheapest(&rows), Some(2));
        assert_eq!(pareto(&rows), vec![1, 0, 2]);
        assert!(
            describe(&rows[1]).contains("2 workers x k40, 1 PS (dedicated), sync greedy, 10GbE NICs: 5.0 h"),
            "{}",
            describe(&rows[1])
        );
    }

    #[test]
    fn durations_read_in_hours_then_days() {
        assert_eq!(human_duration(5.0 * 3600.0), "5.0 h");
        assert_eq!(human_duration(47.0 * 3600.0), "47.0 h");
        assert_eq!(human_duration(154.1 * 86400.0), "154.1 d");
        assert_eq!((human_duration(90.0), human_duration(2.5)), ("1.5 min".to_string(), "2.5 s".to_string()));
    }
}
