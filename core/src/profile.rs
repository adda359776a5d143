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

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

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
    /// Of `copy_ns_per_byte`, what the sender does before a message leaves (encoding the
    /// values), ns per payload byte. With `decode_ns_per_byte`, the part of the copies that
    /// cannot overlap the wire when the next message needs this one (a ring's rounds); the
    /// rest (the kernel's copies into and out of the socket) moves with the bytes. Absent: the
    /// whole of `copy_ns_per_byte` counts as serial, half before and half after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encode_ns_per_byte: Option<f64>,
    /// Of `copy_ns_per_byte`, what the receiver does once a message has arrived whole
    /// (decoding it and adding or copying it into place), ns per payload byte (see
    /// `encode_ns_per_byte`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_ns_per_byte: Option<f64>,
    /// What each core keeps of one core's GEMM rate while every core of the machine runs one
    /// (they share the memory bandwidth, the caches and the clock): a replay's processes
    /// compute on shared cores together, so the machine's cores give `cores` x this, while one
    /// process alone still gets a whole core. In (0, 1]; absent: 1 (the cores are independent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_efficiency: Option<f64>,
    /// Coefficient of variation of a step's compute, as measured runs showed it (the
    /// simulator's `faults.jitter` when the scenario sets none; 0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub compute_jitter: f64,
    /// Links measured: per rate, TCP's unequal sharing and the CPU cost of moving bytes. The
    /// simulator interpolates them at a scenario's NIC rate.
    #[serde(default)]
    pub links: Vec<LinkFit>,
    /// What `topolab calibrate --backend cuda` measured on a GPU: with it, the simulator times
    /// each layer's kernels and copies from these rates instead of one efficiency number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuFit>,
}

/// GEMM precision of a measured rate (the scenario's `hardware.precision` maps onto it:
/// fp32, tf32, and fp16 as BF16 products with FP32 accumulation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GemmPrecision {
    /// FP32 inputs and math.
    Fp32,
    /// FP32 inputs, TF32 tensor-core math.
    Tf32,
    /// BF16 inputs, FP32 accumulation and output.
    Bf16,
}

impl GemmPrecision {
    /// The GEMM precision a training precision runs its products at.
    pub fn of(p: crate::scenario::Precision) -> GemmPrecision {
        match p {
            crate::scenario::Precision::Fp32 => GemmPrecision::Fp32,
            crate::scenario::Precision::Tf32 => GemmPrecision::Tf32,
            crate::scenario::Precision::Fp16 => GemmPrecision::Bf16,
        }
    }

    /// Every precision, in the order calibration measures them.
    pub const ALL: [GemmPrecision; 3] = [GemmPrecision::Fp32, GemmPrecision::Tf32, GemmPrecision::Bf16];
}

/// One measured GEMM shape class: `C (m x n) = A (m x k) B (k x n)`, row-major as the proxy
/// stores its matrices.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GemmPoint {
    /// Precision.
    pub precision: GemmPrecision,
    /// Rows of A and C.
    pub m: u64,
    /// Inner dimension.
    pub k: u64,
    /// Columns of B and C.
    pub n: u64,
    /// Measured rate (2 m k n per GEMM, timed with CUDA events).
    pub rate: FlopRate,
}

/// One step of a proxy layer on a GPU, as the cuda backend runs it and the simulator times it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GpuOp {
    /// Host-to-device copy of this many bytes (one call).
    CopyIn(u64),
    /// Device-to-host copy into pinned memory (one call).
    CopyOut(u64),
    /// A GEMM `m x k` by `k x n` at the layer's precision.
    Gemm {
        /// Rows.
        m: u64,
        /// Inner dimension.
        k: u64,
        /// Columns.
        n: u64,
    },
    /// An FP32 GEMM (a rank-1 update: the bias columns).
    GemmFp32 {
        /// Rows.
        m: u64,
        /// Inner dimension.
        k: u64,
        /// Columns.
        n: u64,
    },
    /// A memory-bound kernel (cuBLAS level 1/2, a conversion) moving this many bytes.
    Elementwise(u64),
    /// The host waits for the stream (a result read back, the end of a layer).
    Sync,
}

/// The kernels and copies of one proxy layer (`m = batch x rows` rows, `W` of `k x n`, with or
/// without bias-like `extras`), forward then backward: the one list the cuda backend executes
/// in this order and the simulator times with a [`GpuFit`].
pub fn proxy_layer_ops(m: u64, k: u64, n: u64, extras: bool, bf16: bool) -> (Vec<GpuOp>, Vec<GpuOp>) {
    use GpuOp::*;
    let f = 4;
    let mut fwd = vec![CopyIn(k * n * f)];
    if bf16 {
        // W to BF16 (X was converted once, at start-up).
        fwd.push(Elementwise(k * n * (f + 2)));
    }
    if extras {
        // The bias of each column, folded on the host, then added as a rank-1 update.
        fwd.push(CopyIn(n * f));
        fwd.push(GemmFp32 { m, k: 1, n });
    }
    fwd.push(Gemm { m, k, n });
    fwd.push(Sync);
    // Backward: D = Y - T (axpy), loss = D.D (dot, read back), dY = 2 D / m (scal), then
    // dW = X^T dY and dX = dY W^T, and the column sums of dY for the extras (gemv).
    let mut bwd = vec![Elementwise(3 * m * n * f), Elementwise(2 * m * n * f), Sync, Elementwise(2 * m * n * f)];
    if bf16 {
        bwd.push(Elementwise(m * n * (f + 2)));
    }
    bwd.push(Gemm { m: k, k: m, n });
    bwd.push(Gemm { m, k: n, n: k });
    if extras {
        bwd.push(Elementwise(m * n * f));
        bwd.push(CopyOut(n * f));
    }
    bwd.push(CopyOut(k * n * f));
    bwd.push(Sync);
    (fwd, bwd)
}

/// What one GPU showed under `topolab calibrate --backend cuda`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuFit {
    /// The device's name, as the driver gives it.
    pub device: String,
    /// Compute capability, e.g. "9.0".
    pub compute_capability: String,
    /// GEMM rate per shape class and precision (a grid in m, k, n); a layer's GEMM takes the
    /// rate interpolated in log m, log k, log n at its precision.
    pub gemm: Vec<GemmPoint>,
    /// Host-to-device copy bandwidth (pageable host memory, 64 MiB).
    pub h2d: BitRate,
    /// Device-to-host copy bandwidth (pinned host memory, 64 MiB).
    pub d2h: BitRate,
    /// Fixed cost of one copy call (a 4-byte copy, each way's mean).
    pub copy_latency: Time,
    /// Cost of one kernel launch, back to back on a stream.
    pub launch: Time,
    /// Cost of the host waiting for an idle stream (launch, then synchronize).
    pub sync: Time,
    /// Device memory bandwidth a memory-bound cuBLAS kernel (axpy) reaches.
    pub elementwise: BitRate,
}

impl GpuFit {
    /// GEMM rate at `precision` for an `m x k` by `k x n` product: log-linear in each dimension
    /// between the measured classes, clamped at the grid's edges; `None` without measurements
    /// at that precision.
    pub fn gemm_rate(&self, precision: GemmPrecision, m: u64, k: u64, n: u64) -> Option<FlopRate> {
        let pts: Vec<&GemmPoint> = self.gemm.iter().filter(|p| p.precision == precision && p.rate.0 > 0.0).collect();
        if pts.is_empty() {
            return None;
        }
        let axis = |get: fn(&GemmPoint) -> u64| {
            let mut v: Vec<u64> = pts.iter().map(|p| get(p)).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let (ms, ks, ns) = (axis(|p| p.m), axis(|p| p.k), axis(|p| p.n));
        // Two neighbours and the weight of the upper one, in log space.
        let bracket = |grid: &[u64], x: u64| -> [(u64, f64); 2] {
            let x = (x.max(1) as f64).ln();
            let lg: Vec<f64> = grid.iter().map(|&g| (g as f64).ln()).collect();
            let i = lg.iter().position(|&g| g >= x).unwrap_or(lg.len() - 1).max(1).min(lg.len().saturating_sub(1));
            if grid.len() == 1 {
                return [(grid[0], 1.0), (grid[0], 0.0)];
            }
            let w = ((x - lg[i - 1]) / (lg[i] - lg[i - 1])).clamp(0.0, 1.0);
            [(grid[i - 1], 1.0 - w), (grid[i], w)]
        };
        let (bm, bk, bn) = (bracket(&ms, m), bracket(&ks, k), bracket(&ns, n));
        // Interpolate the log of the rate over the corners that were measured.
        let (mut sum, mut weight) = (0.0, 0.0);
        for &(gm, wm) in &bm {
            for &(gk, wk) in &bk {
                for &(gn, wn) in &bn {
                    let w = wm * wk * wn;
                    if w <= 0.0 {
                        continue;
                    }
                    if let Some(p) = pts.iter().find(|p| p.m == gm && p.k == gk && p.n == gn) {
                        sum += w * p.rate.0.ln();
                        weight += w;
                    }
                }
            }
        }
        (weight > 0.0).then(|| FlopRate((sum / weight).exp()))
    }

    /// Time of `ops` at `precision`, ns.
    pub fn time_ns(&self, precision: GemmPrecision, ops: &[GpuOp]) -> f64 {
        let bps = |r: BitRate| r.bytes_per_sec().max(1.0) / 1e9;
        let gemm = |p: GemmPrecision, m: u64, k: u64, n: u64| {
            let rate = self
                .gemm_rate(p, m, k, n)
                .or_else(|| self.gemm_rate(GemmPrecision::Fp32, m, k, n))
                .map_or(f64::INFINITY, |r| r.0 / 1e9);
            self.launch.0 as f64 + 2.0 * (m * k * n) as f64 / rate
        };
        ops.iter()
            .map(|op| match *op {
                GpuOp::CopyIn(b) => self.copy_latency.0 as f64 + b as f64 / bps(self.h2d),
                GpuOp::CopyOut(b) => self.copy_latency.0 as f64 + b as f64 / bps(self.d2h),
                GpuOp::Gemm { m, k, n } => gemm(precision, m, k, n),
                GpuOp::GemmFp32 { m, k, n } => gemm(GemmPrecision::Fp32, m, k, n),
                GpuOp::Elementwise(b) => self.launch.0 as f64 + b as f64 / bps(self.elementwise),
                GpuOp::Sync => self.sync.0 as f64,
            })
            .sum()
    }
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
    /// A profile's values with these rates and every other cost 0 (no links, no GPU fit).
    pub fn with_rates(
        compute_rate: FlopRate,
        goodput: f64,
        message_overhead: Time,
        ps_memory_bandwidth: BitRate,
    ) -> Fitted {
        Fitted {
            compute_rate,
            cores: 1,
            goodput,
            message_overhead,
            ps_memory_bandwidth,
            startup: Time::ZERO,
            elementwise_ns_per_value: 0.0,
            layer_overhead: Time::ZERO,
            copy_ns_per_byte: 0.0,
            encode_ns_per_byte: None,
            decode_ns_per_byte: None,
            parallel_efficiency: None,
            compute_jitter: 0.0,
            links: Vec::new(),
            gpu: None,
        }
    }

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
        let p: Profile = toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
        if let Some(x) = p.fitted.parallel_efficiency.filter(|x| !(*x > 0.0 && *x <= 1.0)) {
            return Err(format!(
                "{}: fitted.parallel_efficiency = {x}: must be in (0, 1] (each core's share of one core's rate when all compute)",
                path.display()
            ));
        }
        Ok(p)
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
        let mut f = Fitted::with_rates(FlopRate(1e9), 0.94, Time::ZERO, BitRate(1e11));
        f.cores = 2;
        f.links = links;
        f
    }

    fn gpu_fit(points: Vec<GemmPoint>) -> GpuFit {
        GpuFit {
            device: "test GPU".into(),
            compute_capability: "9.0".into(),
            gemm: points,
            h2d: BitRate::from_bytes_per_sec(10e9),
            d2h: BitRate::from_bytes_per_sec(20e9),
            copy_latency: Time(5_000),
            launch: Time(3_000),
            sync: Time(10_000),
            elementwise: BitRate::from_bytes_per_sec(1e12),
        }
    }

    fn point(precision: GemmPrecision, m: u64, k: u64, n: u64, tflops: f64) -> GemmPoint {
        GemmPoint { precision, m, k, n, rate: FlopRate(tflops * 1e12) }
    }

    #[test]
    fn a_parallel_efficiency_outside_0_to_1_is_refused_naming_the_file_and_field() {
        let tmp = tempfile::Builder::new().prefix("topolab-profile-test-").tempdir().unwrap();
        let path = tmp.path().join("p.toml");
        let machine = Machine {
            cpu: "test".into(),
            cores: 2,
            memory: String::new(),
            date: String::new(),
            launcher: "netns".into(),
            congestion_control: String::new(),
        };
        let mut p = Profile { machine, fitted: fitted(Vec::new()), raw: Vec::new() };
        for (e, ok) in [(Some(0.7), true), (None, true), (Some(1.5), false), (Some(0.0), false)] {
            p.fitted.parallel_efficiency = e;
            std::fs::write(&path, p.to_toml()).unwrap();
            match Profile::load(&path) {
                Ok(q) => assert!(ok && q.fitted.parallel_efficiency == e, "{e:?}"),
                Err(m) => assert!(!ok && m.contains("p.toml") && m.contains("fitted.parallel_efficiency"), "{m}"),
            }
        }
    }

    #[test]
    fn gemm_rates_interpolate_in_log_shape_and_clamp_at_the_grid() {
        use GemmPrecision::*;
        // Two classes along m only: 1 TFLOP/s at m = 100, 100 TFLOP/s at m = 10,000.
        let f = gpu_fit(vec![point(Fp32, 100, 64, 64, 1.0), point(Fp32, 10_000, 64, 64, 100.0)]);
        // m = 1,000 is halfway in log m: the log-rate halfway, 10 TFLOP/s.
        let mid = f.gemm_rate(Fp32, 1_000, 64, 64).unwrap().0;
        assert!((mid - 10e12).abs() / 10e12 < 1e-9, "{mid}");
        // Outside the grid: the edge classes.
        assert!((f.gemm_rate(Fp32, 10, 64, 64).unwrap().0 - 1e12).abs() < 1.0);
        assert!((f.gemm_rate(Fp32, 1 << 30, 1, 1).unwrap().0 - 100e12).abs() < 1.0);
        // No measurement at a precision: none (the device has no such tensor cores).
        assert_eq!(f.gemm_rate(Bf16, 1_000, 64, 64), None);
    }

    #[test]
    fn a_proxy_layer_costs_its_kernels_and_copies() {
        // One class: 10 TFLOP/s. A layer of m = 1000, k = 100, n = 50, no extras, FP32.
        let f = gpu_fit(vec![point(GemmPrecision::Fp32, 1000, 100, 50, 10.0)]);
        let (fwd, bwd) = proxy_layer_ops(1000, 100, 50, false, false);
        // Forward: copy W in (5 us + 20,000 B / 10 GB/s = 2 us), the GEMM (3 us launch +
        // 2 x 5e6 FLOP / 10 TFLOP/s = 1 us), the wait (10 us): 21 us.
        assert!((f.time_ns(GemmPrecision::Fp32, &fwd) - 21_000.0).abs() < 1e-6);
        // Backward: axpy 600 kB, dot 400 kB, scal 400 kB at 1 TB/s (0.6 + 0.4 + 0.4 us) plus three
        // launches (9 us); a wait (10 us); two GEMMs (2 x 4 us); W's gradient out (5 us + 20 kB
        // / 20 GB/s = 1 us); the final wait (10 us): 44.4 us.
        assert!(
            (f.time_ns(GemmPrecision::Fp32, &bwd) - 44_400.0).abs() < 1e-6,
            "{}",
            f.time_ns(GemmPrecision::Fp32, &bwd)
        );
        // Extras add a bias copy and a rank-1 GEMM forward, a gemv and a copy back.
        let (fwd_b, bwd_b) = proxy_layer_ops(1000, 100, 50, true, false);
        assert_eq!(fwd_b.len(), fwd.len() + 2);
        assert_eq!(bwd_b.len(), bwd.len() + 2);
        // BF16 converts W forward and dY backward.
        let (fwd_h, bwd_h) = proxy_layer_ops(1000, 100, 50, false, true);
        assert_eq!((fwd_h.len(), bwd_h.len()), (fwd.len() + 1, bwd.len() + 1));
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
