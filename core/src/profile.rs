//! Calibrated hardware profiles: what `topolab calibrate` measured on a machine, in a form a
//! scenario references with `hardware.profile = "profile.toml"`.
//!
//! A profile replaces catalogue figures with measured ones: the compute rate one process
//! reaches (FLOP/s), the goodput factor and per-message overhead of links, the memory
//! bandwidth a parameter server applies updates with, and the number of cores the machine's
//! processes share. It keeps the raw measurements and the machine's description beside the
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
    /// receive into a fresh buffer, decode, copy into place), ns: serial with the transfer.
    #[serde(default)]
    pub copy_ns_per_byte: f64,
    /// Links measured: per rate, TCP's unequal sharing and the CPU cost of moving bytes. The
    /// simulator interpolates them at a scenario's NIC rate.
    #[serde(default)]
    pub links: Vec<LinkFit>,
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
    /// Window ramp-up time constant, from a second flow started late (0: the late flow kept
    /// up, no seniority).
    pub seniority: Time,
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

    /// Seniority at link rate `rate` (interpolated as a rate, 1 / tau, so that "none" is 0).
    pub fn seniority_at(&self, rate: BitRate) -> Option<Time> {
        self.link_at(rate, |l| if l.seniority.0 > 0 { 1.0 / l.seniority.0 as f64 } else { 0.0 })
            .map(|inv| if inv > 0.0 { Time((1.0 / inv).round() as u64) } else { Time::ZERO })
    }
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
            seniority: Time(tau_ms * 1_000_000),
        };
        let f = fitted(vec![l(1e9, 10.0, 0.2, 0), l(1e8, 2.0, 0.6, 200)]);
        // sqrt(1e8 x 1e9) is halfway in log rate.
        let mid = BitRate((1e8f64 * 1e9).sqrt());
        assert!((f.cpu_ns_per_byte_at(mid).unwrap() - 6.0).abs() < 1e-9);
        assert!((f.unfairness_at(mid).unwrap() - 0.4).abs() < 1e-9);
        // 1 / tau halfway between 1 / 200 ms and 0: 400 ms.
        assert_eq!(f.seniority_at(mid).unwrap(), Time(400_000_000));
        assert_eq!(f.seniority_at(BitRate(1e9)).unwrap(), Time::ZERO);
        assert_eq!(f.cpu_ns_per_byte_at(BitRate(1e7)), Some(2.0));
        assert_eq!(f.cpu_ns_per_byte_at(BitRate(1e11)), Some(10.0));
        assert_eq!(fitted(vec![]).unfairness_at(mid), None);
    }
}
