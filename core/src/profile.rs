//! Calibrated hardware profiles: what `topolab calibrate` measured on a machine, in a form a
//! scenario references with `hardware.profile = "profile.toml"`.
//!
//! A profile replaces catalogue figures with measured ones: the compute rate one process
//! reaches (FLOP/s), the goodput factor and per-message overhead of links, the memory
//! bandwidth a parameter server applies updates with, the number of cores the machine's
//! processes share, the user-space copy cost of a message, and per link rate: goodput, the CPU
//! cost of moving bytes, and how unequally TCP shares a link. It keeps the raw measurements and the machine's description beside the
//! fitted values.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::units::{BitRate, FlopRate, Time};

/// A calibrated profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The machine measured.
    pub machine: Machine,
    /// Values the simulator uses.
    pub fitted: Fitted,
    /// Every measurement, for the record.
    #[serde(default)]
    pub raw: Vec<Measurement>,
}

/// The machine a profile was measured on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Cores.
    pub cores: u32,
    /// Memory, as text.
    pub memory: String,
    /// When it was measured (UTC, RFC 3339).
    pub date: String,
    /// The launcher the link measurements used (local or netns).
    pub launcher: String,
    /// The TCP congestion control the link measurements ran under, as measured on a probe
    /// connection (empty in profiles written before it was recorded). A replay under another
    /// one shares links differently, so `topolab validate` refuses the pair.
    #[serde(default)]
    pub congestion_control: String,
}

/// Values fitted from the measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fitted {
    /// GEMM rate of one process on one core.
    pub compute_rate: FlopRate,
    /// Cores the processes of a replay share (the machine's).
    pub cores: u32,
    /// Fraction of a link's rate that TCP payload reaches.
    pub goodput: f64,
    /// Fixed cost per message.
    pub message_overhead: Time,
    /// Memory bandwidth of a parameter server's apply.
    pub ps_memory_bandwidth: BitRate,
    /// Time to start one task process.
    pub startup: Time,
    /// Element-wise work per activation value of a layer (forward + backward), ns: what a
    /// FLOP count of the GEMMs alone leaves out.
    #[serde(default)]
    pub elementwise_ns_per_value: f64,
    /// Fixed cost of one layer's forward + backward calls.
    #[serde(default)]
    pub layer_overhead: Time,
    /// User-space work per payload byte of one message through both ends (serialize, frame,
    /// receive into a fresh buffer, decode, copy into place), ns: CPU work on a shared machine's
    /// cores while earlier bytes are on the wire (on dedicated hosts, serial with the transfer).
    #[serde(default)]
    pub copy_ns_per_byte: f64,
    /// Links measured: per rate, TCP's unequal sharing and the CPU cost of moving bytes. The
    /// simulator interpolates them at a scenario's NIC rate.
    #[serde(default)]
    pub links: Vec<LinkFit>,
}

/// The share ratio `rho` (first flow's over second's while both were busy) that explains two
/// flows' finish times `a`, `b` (s after the first started; the second started `d` s late),
/// each of `size` bytes, on a link of `goodput` bytes/s: the first moves `goodput x d` alone,
/// then they share the link as `rho : 1` until one of them is done.
pub fn share_ratio(goodput: f64, size: f64, d: f64, a: f64, b: f64) -> f64 {
    let r = goodput;
    let head = (r * d).min(size);
    if a <= b {
        let left = size - head;
        let both = (a - d).max(1e-9);
        (left / (r * both - left).max(1e-9 * r)).max(1e-3)
    } else {
        let both = (b - d).max(1e-9);
        (r * both / size - 1.0).max(1e-3)
    }
}

/// Where the first of two bursts of `size` bytes (the second `d` s late) finished, at `a` s,
/// between fair sharing (0) and first come, first served (1), on a link of `goodput` bytes/s.
pub fn fifo_position(goodput: f64, size: f64, d: f64, a: f64) -> f64 {
    let fifo = size / goodput;
    let fair = d + 2.0 * (size - goodput * d).max(0.0) / goodput;
    if fair - fifo <= 0.0 {
        return 0.0;
    }
    (fair - a) / (fair - fifo)
}

/// What one shaped link of a given rate showed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkFit {
    /// Link rate measured.
    pub rate: BitRate,
    /// Fraction of the rate one TCP stream's payload reached.
    pub goodput: f64,
    /// CPU ns per payload byte, sender and receiver, kernel included (one stream, all cores'
    /// busy time).
    pub cpu_ns_per_byte: f64,
    /// Log-normal sigma of a connection's share, from two equal flows from two hosts.
    pub unfairness: f64,
    /// A new connection's window ramp-up, fitted to a second flow started late: it starts
    /// with `ramp_share` of a fair share and reaches it after `ramp` (0: no ramp).
    pub ramp: Time,
    /// Share a new connection starts with (1: no ramp).
    pub ramp_share: f64,
    /// First come, first served: two short bursts, the second a little late, showed the
    /// drop-tail queue serving the earlier one first; a connection `d` later than the oldest
    /// busy one gets `exp(-d / fifo)` of a share while it waits behind the queue (the
    /// scenario's `network.queue`; 0: fair sharing, no such ordering).
    #[serde(default, skip_serializing_if = "is_zero_time")]
    pub fifo: Time,
}

impl Fitted {
    /// `f` of the link fits at `rate`: linear in log(rate) between the measured rates, the
    /// nearest one outside them; `None` with none.
    fn link_at(&self, rate: BitRate, f: impl Fn(&LinkFit) -> f64) -> Option<f64> {
        let mut pts: Vec<(f64, f64)> =
            self.links.iter().filter(|l| l.rate.0 > 0.0).map(|l| (l.rate.0.ln(), f(l))).collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let x = rate.0.max(1.0).ln();
        Some(match pts.as_slice() {
            [] => return None,
            [(_, y)] => *y,
            _ => {
                let i = pts.iter().position(|p| p.0 >= x).unwrap_or(pts.len() - 1).max(1);
                let ((x0, y0), (x1, y1)) = (pts[i - 1], pts[i]);
                y0 + (y1 - y0) * ((x - x0) / (x1 - x0)).clamp(0.0, 1.0)
            }
        })
    }

    /// Goodput factor at link rate `rate`.
    pub fn goodput_at(&self, rate: BitRate) -> Option<f64> {
        self.link_at(rate, |l| l.goodput)
    }

    /// CPU ns per byte at link rate `rate`.
    pub fn cpu_ns_per_byte_at(&self, rate: BitRate) -> Option<f64> {
        self.link_at(rate, |l| l.cpu_ns_per_byte)
    }

    /// Unfairness sigma at link rate `rate`.
    pub fn unfairness_at(&self, rate: BitRate) -> Option<f64> {
        self.link_at(rate, |l| l.unfairness)
    }

    /// First-come-first-served time constant at link rate `rate` (its inverse interpolated,
    /// so that an unordered link, 0, weakens the ordering smoothly).
    pub fn fifo_at(&self, rate: BitRate) -> Option<Time> {
        let strength = self.link_at(rate, |l| if l.fifo.0 == 0 { 0.0 } else { 1.0 / l.fifo.0 as f64 })?;
        Some(if strength > 0.0 { Time((1.0 / strength).round() as u64) } else { Time::ZERO })
    }

    /// Ramp-up at link rate `rate`: (time, starting share), the time and the log of the share
    /// interpolated.
    pub fn ramp_at(&self, rate: BitRate) -> Option<(Time, f64)> {
        let t = self.link_at(rate, |l| l.ramp.0 as f64)?;
        let deficit = self.link_at(rate, |l| -l.ramp_share.clamp(1e-6, 1.0).ln())?;
        Some((Time(t.round() as u64), (-deficit).exp()))
    }
}

fn is_zero_time(t: &Time) -> bool {
    t.0 == 0
}

/// One raw measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measurement {
    /// What was measured.
    pub what: String,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
}

impl Profile {
    /// Reads a profile.
    pub fn load(path: &Path) -> Result<Profile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read profile {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))
    }

    /// The profile as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a profile serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fitted(links: Vec<LinkFit>) -> Fitted {
        Fitted {
            compute_rate: FlopRate(1e9),
            cores: 2,
            goodput: 0.94,
            message_overhead: Time::ZERO,
            ps_memory_bandwidth: BitRate(1e11),
            startup: Time::ZERO,
            elementwise_ns_per_value: 0.0,
            layer_overhead: Time::ZERO,
            copy_ns_per_byte: 0.0,
            links,
        }
    }

    #[test]
    fn link_fits_interpolate_in_log_rate_and_clamp_outside() {
        let l = |rate: f64, cpu: f64, sigma: f64, tau_ms: u64| LinkFit {
            rate: BitRate(rate),
            goodput: 0.9,
            cpu_ns_per_byte: cpu,
            unfairness: sigma,
            ramp: Time(tau_ms * 1_000_000),
            ramp_share: if tau_ms > 0 { (-2.0f64).exp() } else { 1.0 },
            fifo: Time(tau_ms * 10_000),
        };
        let f = fitted(vec![l(1e9, 10.0, 0.2, 0), l(1e8, 2.0, 0.6, 200)]);
        // sqrt(1e8 x 1e9) is halfway in log rate.
        let mid = BitRate((1e8f64 * 1e9).sqrt());
        assert!((f.cpu_ns_per_byte_at(mid).unwrap() - 6.0).abs() < 1e-9);
        assert!((f.unfairness_at(mid).unwrap() - 0.4).abs() < 1e-9);
        // Ramp time and log share halfway: 100 ms, exp(-1).
        let (t, share) = f.ramp_at(mid).unwrap();
        assert_eq!(t, Time(100_000_000));
        assert!((share - (-1.0f64).exp()).abs() < 1e-12);
        assert_eq!(f.ramp_at(BitRate(1e9)).unwrap(), (Time::ZERO, 1.0));
        // FIFO: 2 ms at 100 Mbit/s, off at 1 Gbit/s; halfway, half the strength: 4 ms.
        assert_eq!(f.fifo_at(mid), Some(Time(4_000_000)));
        assert_eq!(f.fifo_at(BitRate(1e8)), Some(Time(2_000_000)));
        assert_eq!(f.fifo_at(BitRate(1e9)), Some(Time::ZERO));
        assert_eq!(f.cpu_ns_per_byte_at(BitRate(1e7)), Some(2.0));
        assert_eq!(f.cpu_ns_per_byte_at(BitRate(1e11)), Some(10.0));
        assert_eq!(fitted(vec![]).unfairness_at(mid), None);
    }
}
