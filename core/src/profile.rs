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
