//! Fits the network model's TCP parameters to calibration probes by simulating the probes.
//!
//! `topolab calibrate` starts two flows into one shaped link, the second `d` late, and records
//! the share ratio `rho` that explains their finish times. A new connection that ramps up its
//! window from `share` of a fair share over `ramp` makes `ln rho > 0`; [`ramp`] finds the
//! `(ramp, share)` whose simulated probes give the measured mean `ln rho` at each lateness,
//! on a grid, preferring no ramp when it explains the probes as well.

use topolab_core::profile::{fifo_position, share_ratio};
use topolab_core::units::Time;

use crate::maxmin::Use;
use crate::network::{Message, Network};

/// Finish times (s) of two flows of `size` bytes on a link of `goodput` bytes/s, the second
/// `d` s late, when new connections ramp up from `share` over `ramp_s` and, with `fifo_s > 0`,
/// the queue serves them first come, first served with that time constant.
pub fn two_flows(goodput: f64, size: f64, d: f64, ramp_s: f64, share: f64, fifo_s: f64) -> (f64, f64) {
    let mut net: Network<usize> = Network::new();
    if share < 1.0 && ramp_s > 0.0 {
        net.set_ramp(-share.ln(), ramp_s * 1e9);
    }
    net.set_fifo(fifo_s * 1e9, f64::INFINITY);
    let link = net.add_resource(goodput / 1e9);
    let a = net.add_flow(vec![Use { resource: link, weight: 1.0 }]);
    let b = net.add_flow(vec![Use { resource: link, weight: 1.0 }]);
    let mut q = crate::engine::EventQueue::new();
    for t in net.send(Time::ZERO, a, Message { bytes: size, tag: 0 }) {
        q.schedule(t.at, t);
    }
    let start_b = Time::from_secs_f64(d);
    let mut b_sent = false;
    let mut done = [0.0f64; 2];
    loop {
        let next = q.peek_time();
        if !b_sent && next.is_none_or(|t| t >= start_b) {
            b_sent = true;
            for t in net.send(start_b, b, Message { bytes: size, tag: 1 }) {
                q.schedule(t.at, t);
            }
            continue;
        }
        let Some((now, t)) = q.pop() else { break };
        let timers = if t.reshare {
            net.reshare(now, t.flow, t.version)
        } else {
            match net.complete(now, t.flow, t.version) {
                crate::network::Completion::Done(msg, timers) => {
                    done[msg.tag] = now.0 as f64 / 1e9;
                    timers
                }
                crate::network::Completion::Later(timers) => timers,
                crate::network::Completion::Stale => continue,
            }
        };
        for t in timers {
            q.schedule(t.at, t);
        }
    }
    (done[0], done[1])
}

/// Best `(ramp s, starting share)` for measured `(lateness s, mean ln rho)` pairs on a link of
/// `goodput` bytes/s with flows of `size` bytes; `(0, 1)` (no ramp) unless a ramp explains
/// the measurements better by more than `tolerance` in summed squared `ln rho`.
pub fn ramp(goodput: f64, size: f64, measured: &[(f64, f64)], tolerance: f64) -> (f64, f64) {
    let err = |ramp_s: f64, share: f64| -> f64 {
        measured
            .iter()
            .map(|&(d, lag)| {
                let (a, b) = two_flows(goodput, size, d, ramp_s, share, 0.0);
                (share_ratio(goodput, size, d, a, b).ln() - lag).powi(2)
            })
            .sum()
    };
    let none = err(0.0, 1.0);
    let mut best = (0.0, 1.0, none);
    for &ramp_ms in &[10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1000.0] {
        for &share in &[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05] {
            let e = err(ramp_ms / 1e3, share);
            if e < best.2 {
                best = (ramp_ms / 1e3, share, e);
            }
        }
    }
    if none - best.2 <= tolerance { (0.0, 1.0) } else { (best.0, best.1) }
}

/// The first-come-first-served time constant (s; 0: none) whose simulated burst probe puts the
/// first burst where the measurements did (`measured`: mean [`fifo_position`]); none unless it
/// explains them better than fair sharing by more than `tolerance` in squared position.
pub fn fifo(goodput: f64, size: f64, d: f64, measured: f64, tolerance: f64) -> f64 {
    let err = |tau_s: f64| {
        let (a, _) = two_flows(goodput, size, d, 0.0, 1.0, tau_s);
        (fifo_position(goodput, size, d, a) - measured).powi(2)
    };
    let none = err(0.0);
    let mut best = (0.0, none);
    for &tau_ms in &[0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0] {
        let e = err(tau_ms / 1e3);
        if e < best.1 {
            best = (tau_ms / 1e3, e);
        }
    }
    if none - best.1 <= tolerance { 0.0 } else { best.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fair_flows_give_a_ratio_of_one_and_no_ramp() {
        // 1 MB each at 10 MB/s, the second 20 ms late: fair sharing, rho = 1.
        let (a, b) = two_flows(1e7, 1e6, 0.02, 0.0, 1.0, 0.0);
        assert!((share_ratio(1e7, 1e6, 0.02, a, b) - 1.0).abs() < 1e-6, "{a} {b}");
        assert_eq!(ramp(1e7, 1e6, &[(0.02, 0.0), (0.05, 0.0)], 1e-3), (0.0, 1.0));
    }

    #[test]
    fn a_simulated_ramp_is_recovered() {
        // Probes simulated with a 100 ms ramp from 0.3 of a share are fitted back.
        let truth = |d: f64| {
            let (a, b) = two_flows(1e7, 1.5e6, d, 0.1, 0.3, 0.0);
            (d, share_ratio(1e7, 1.5e6, d, a, b).ln())
        };
        let measured = [truth(0.03), truth(0.075)];
        assert!(measured[0].1 > 0.1, "a head start is worth something: {measured:?}");
        assert_eq!(ramp(1e7, 1.5e6, &measured, 1e-6), (0.1, 0.3));
    }

    #[test]
    fn first_come_first_served_is_told_from_fair_sharing_and_fitted_back() {
        // 200 kB bursts at 10 MB/s (20 ms alone), the second 5 ms late.
        let (g, size, d) = (1e7, 2e5, 0.005);
        let (a, b) = two_flows(g, size, d, 0.0, 1.0, 0.0);
        assert!(fifo_position(g, size, d, a).abs() < 1e-6, "fair: {a} {b}");
        let (a, b) = two_flows(g, size, d, 0.0, 1.0, 0.0005);
        assert!(fifo_position(g, size, d, a) > 0.99, "FIFO: the first goes alone: {a} {b}");
        assert!((b - 0.04).abs() < 1e-4, "and the second takes the rest: {b}");
        // A simulated 2 ms constant is recovered; fair probes fit none.
        let (a, _) = two_flows(g, size, d, 0.0, 1.0, 0.002);
        let x = fifo_position(g, size, d, a);
        assert!(x > 0.3 && x < 0.99, "partial ordering: {x}");
        assert_eq!(fifo(g, size, d, x, 1e-6), 0.002);
        assert_eq!(fifo(g, size, d, 0.01, 1e-3), 0.0);
    }
}
