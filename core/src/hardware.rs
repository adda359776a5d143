//! The hardware catalogue: GPUs, NIC presets and host buses, each number with its source.
//!
//! Peak rates are the vendors' datasheet figures (dense, no structured sparsity). What a
//! training step actually reaches is `peak x efficiency`; each GPU carries a documented default
//! efficiency that a scenario may override, and calibration may replace.

use serde::Serialize;

use crate::units::{BitRate, Bytes, FlopRate};

/// One GPU model's datasheet figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gpu {
    /// Catalogue name, e.g. `"k40"`.
    pub name: String,
    /// Peak FP32 rate (base clock where the vendor distinguishes base and boost).
    pub fp32: FlopRate,
    /// Peak half-precision rate (FP16/BF16, tensor cores where present, dense); `None` if
    /// the part has no fast half-precision path.
    pub fp16: Option<FlopRate>,
    /// Peak TF32 tensor-core rate (FP32 storage, 10-bit mantissa products, dense); `None` before
    /// Ampere.
    pub tf32: Option<FlopRate>,
    /// Device memory bandwidth (stored as a bit rate; printed in bytes per second).
    pub memory_bandwidth: BitRate,
    /// Device memory capacity.
    pub memory: Bytes,
    /// Default fraction of the FP32 peak that a TensorFlow-style training step reaches.
    pub efficiency: f64,
    /// Default fraction of the half-precision peak that a mixed-precision training step
    /// reaches, where a published measurement gives one; `None`: no sourced figure, so
    /// `precision = "fp16"` needs `hardware.efficiency`.
    pub fp16_efficiency: Option<f64>,
    /// Where the mixed-precision efficiency comes from.
    pub fp16_efficiency_source: Option<String>,
    /// Where the figures come from.
    pub source: String,
}

fn gpu(
    name: &str,
    fp32_t: f64,
    fp16_t: Option<f64>,
    mem_bw_gbs: f64,
    mem_gib: u64,
    efficiency: f64,
    source: &str,
) -> Gpu {
    Gpu {
        name: name.to_string(),
        fp32: FlopRate(fp32_t * 1e12),
        fp16: fp16_t.map(|t| FlopRate(t * 1e12)),
        tf32: None,
        memory_bandwidth: BitRate::from_bytes_per_sec(mem_bw_gbs * 1e9),
        memory: Bytes(mem_gib * (1 << 30)),
        efficiency,
        fp16_efficiency: None,
        fp16_efficiency_source: None,
        source: source.to_string(),
    }
}

impl Gpu {
    fn with_tf32(mut self, tf32_t: f64, source: &str) -> Gpu {
        self.tf32 = Some(FlopRate(tf32_t * 1e12));
        self.source = format!("{}; {source}", self.source);
        self
    }

    fn with_fp16_efficiency(mut self, e: f64, source: &str) -> Gpu {
        self.fp16_efficiency = Some(e);
        self.fp16_efficiency_source = Some(source.into());
        self
    }
}

/// Work of one ResNet-50 v1.5 training image: 3 x the forward pass of 2 x 4.09 G MAC
/// (forward, backward of activations, backward of weights), in FLOP.
const RESNET50_TRAIN_FLOP: f64 = 3.0 * 2.0 * 4.09e9;

/// Mixed-precision training efficiency of the V100, applied to its 125 TFLOP/s tensor peak:
/// NVIDIA DeepLearningExamples, "ResNet50 v1.5 For PyTorch" README, training performance on
/// one V100 16GB of a DGX-1 (pytorch-21.03 NGC container): 1,200 img/s with mixed precision.
/// 1,200 x 24.5 GFLOP = 29.4 TFLOP/s = 23.5% of 125 TFLOP/s (FP32 0.40 applied to the tensor
/// peak would predict about 2,000 img/s, 1.7x the measurement).
pub const V100_FP16_EFFICIENCY: f64 = 1200.0 * RESNET50_TRAIN_FLOP / 125e12;

/// Mixed-precision training efficiency of the A100, applied to its 312 TFLOP/s BF16/FP16 dense
/// peak: the same README, one A100 80GB of a DGX A100: 2,470 img/s with mixed precision;
/// 2,470 x 24.5 GFLOP = 60.6 TFLOP/s = 19.4% of 312 TFLOP/s.
pub const A100_FP16_EFFICIENCY: f64 = 2470.0 * RESNET50_TRAIN_FLOP / 312e12;

const V100_FP16_SOURCE: &str = "mixed precision: NVIDIA DeepLearningExamples, ResNet50 v1.5 for PyTorch, 1,200 img/s on one V100 16GB (DGX-1, pytorch-21.03) = 29.4 TFLOP/s of 125";
const A100_FP16_SOURCE: &str = "mixed precision: NVIDIA DeepLearningExamples, ResNet50 v1.5 for PyTorch, 2,470 img/s on one A100 80GB (DGX A100, pytorch-21.03) = 60.6 TFLOP/s of 312";

const A100_TF32_SOURCE: &str =
    "TF32: A100 datasheet, 156 TFLOP/s TF32 tensor core dense (312 with structured sparsity)";
const HOPPER_TF32_SOURCE: &str = "TF32: datasheet 989 TFLOP/s TF32 tensor core with structured sparsity; the NVIDIA H100 Tensor Core GPU Architecture whitepaper gives 494.7 dense (SXM5), which the H200 shares (same GH100 die and clocks)";

/// FLOPs a GPU executes for one Inception-v3 training image in FP32: 3x the forward pass
/// (forward, backward of activations, backward of weights) of the zoo's model, its 3x3
/// stride-1 convolutions by Winograd ([`crate::models::WINOGRAD_3X3_REDUCTION`]): 25.10 GFLOP
/// (34.41 at the direct method's count).
pub const INCEPTION_V3_TRAIN_EXECUTED_FLOP: f64 = 25.0995e9;

/// Default efficiency of the K40, from the anchor in topolab's default scenario: TensorFlow of
/// 2016 trained Inception-v3 on one K40 at about 9.5 images/s at batch 32 (Google's
/// "Inception in TensorFlow" README, models/inception: "~9.5 examples/sec" on a single
/// Tesla K40). That is 9.5 x 25.10 GFLOP executed = 0.238 TFLOP/s = 5.6% of 4.29 TFLOP/s
/// (7.6% counted at the direct method's FLOPs); the default scenario's single K40 keeps its
/// 9.5 img/s either way.
pub const K40_EFFICIENCY: f64 = 9.5 * INCEPTION_V3_TRAIN_EXECUTED_FLOP / 4.29e12;

/// TensorFlow's published single-GPU training rates on a P100 (tensorflow.org performance
/// benchmarks, "Details for NVIDIA DGX-1 (NVIDIA Tesla P100)", May 2017, CUDA 8 / cuDNN 5.1,
/// tf_cnn_benchmarks, synthetic data, batch 64 per GPU), images/s.
pub const P100_PUBLISHED_IMG_S: [(&str, f64); 4] =
    [("inception-v3", 142.0), ("resnet-50", 219.0), ("resnet-152", 91.8), ("vgg-16", 154.0)];

/// Default efficiency of the P100 in FP32: the geometric mean of what
/// [`P100_PUBLISHED_IMG_S`] implies for each model, on the arithmetic executed (3x3 stride-1
/// convolutions by Winograd): Inception-v3 0.336, ResNet-50 0.369, ResNet-152 0.388, VGG-16
/// 0.347. Counted at the direct method's FLOPs the same rates would need 0.46 to 1.35 of peak
/// (VGG-16 above the peak), so one efficiency could not predict them.
pub const P100_EFFICIENCY: f64 = 0.36;

/// Default efficiency of later GPUs in FP32 training, on the arithmetic executed (3x3
/// convolutions by Winograd): about 40% of peak is what cuDNN-era convolutional training
/// reaches (MLPerf Training v0.5 submissions and NVIDIA's DeepLearningExamples ResNet-50 FP32
/// throughput on V100 imply 35-45% of FP32 peak; the P100's published rates give 0.34-0.39).
pub const MODERN_EFFICIENCY: f64 = 0.40;

/// The built-in GPUs.
pub fn gpus() -> Vec<Gpu> {
    vec![
        gpu(
            "k40",
            4.29,
            None,
            288.0,
            12,
            K40_EFFICIENCY,
            "NVIDIA Tesla K40 GPU Accelerator board specification (BD-06902-001): 4.29 TFLOP/s FP32 at base clock, 288 GB/s, 12 GB",
        ),
        gpu(
            "k80",
            2.8,
            None,
            240.0,
            12,
            K40_EFFICIENCY,
            "NVIDIA Tesla K80 datasheet: 5.6 TFLOP/s FP32 base and 480 GB/s per board of two GK210 chips; one chip = 2.8 TFLOP/s, 240 GB/s, 12 GB",
        ),
        gpu(
            "p100",
            10.6,
            Some(21.2),
            732.0,
            16,
            P100_EFFICIENCY,
            "NVIDIA Tesla P100 datasheet (SXM2/NVLink): 10.6 TFLOP/s FP32, 21.2 TFLOP/s FP16, 732 GB/s, 16 GB; efficiency 0.36 from TensorFlow's published single-P100 training rates (tensorflow.org benchmarks, DGX-1, May 2017)",
        ),
        gpu(
            "v100",
            15.7,
            Some(125.0),
            900.0,
            16,
            MODERN_EFFICIENCY,
            "NVIDIA Tesla V100 datasheet (SXM2): 15.7 TFLOP/s FP32, 125 TFLOP/s tensor, 900 GB/s, 16 GB",
        )
        .with_fp16_efficiency(V100_FP16_EFFICIENCY, V100_FP16_SOURCE),
        gpu(
            "a100-40gb",
            19.5,
            Some(312.0),
            1555.0,
            40,
            MODERN_EFFICIENCY,
            "NVIDIA A100 Tensor Core GPU datasheet (SXM4 40GB): 19.5 TFLOP/s FP32, 312 TFLOP/s BF16 dense, 1555 GB/s",
        )
        .with_tf32(156.0, A100_TF32_SOURCE)
        .with_fp16_efficiency(A100_FP16_EFFICIENCY, A100_FP16_SOURCE),
        gpu(
            "a100-80gb",
            19.5,
            Some(312.0),
            2039.0,
            80,
            MODERN_EFFICIENCY,
            "NVIDIA A100 Tensor Core GPU datasheet (SXM4 80GB): 19.5 TFLOP/s FP32, 312 TFLOP/s BF16 dense, 2039 GB/s",
        )
        .with_tf32(156.0, A100_TF32_SOURCE)
        .with_fp16_efficiency(A100_FP16_EFFICIENCY, A100_FP16_SOURCE),
        gpu(
            "h100",
            66.9,
            Some(989.0),
            3350.0,
            80,
            MODERN_EFFICIENCY,
            "NVIDIA H100 Tensor Core GPU datasheet (SXM5): 67 TFLOP/s FP32 (66.9 in the architecture whitepaper), 989 TFLOP/s BF16 dense, 3.35 TB/s, 80 GB",
        )
        .with_tf32(494.7, HOPPER_TF32_SOURCE),
        gpu(
            "h200",
            66.9,
            Some(989.0),
            4800.0,
            141,
            MODERN_EFFICIENCY,
            "NVIDIA H200 Tensor Core GPU datasheet (SXM): 67 TFLOP/s FP32, 989 TFLOP/s BF16 dense, 4.8 TB/s, 141 GB",
        )
        .with_tf32(494.7, HOPPER_TF32_SOURCE),
    ]
}

/// The catalogue GPU a CUDA driver's device name stands for (e.g. "NVIDIA H200" is the h200,
/// "NVIDIA A100-SXM4-80GB" the a100-80gb), if any.
pub fn gpu_for_device(device: &str) -> Option<Gpu> {
    let d = device.to_ascii_lowercase();
    let name = if d.contains("a100") {
        if d.contains("80gb") { "a100-80gb" } else { "a100-40gb" }
    } else {
        ["h200", "h100", "v100", "p100", "k80", "k40"].into_iter().find(|n| d.contains(n))?
    };
    gpu_by_name(name)
}

/// Looks a GPU up by catalogue name (case-insensitive).
pub fn gpu_by_name(name: &str) -> Option<Gpu> {
    gpus().into_iter().find(|g| g.name.eq_ignore_ascii_case(name))
}

/// A NIC preset: a line rate with its standard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NicPreset {
    /// Preset name, e.g. `"10GbE"`.
    pub name: &'static str,
    /// Line rate.
    pub rate: BitRate,
    /// Where the rate comes from.
    pub source: &'static str,
}

/// The built-in NIC presets.
pub fn nic_presets() -> Vec<NicPreset> {
    [
        ("1GbE", 1e9, "IEEE 802.3ab (1000BASE-T): 1 Gbit/s"),
        ("10GbE", 10e9, "IEEE 802.3ae: 10 Gbit/s"),
        ("25GbE", 25e9, "IEEE 802.3by: 25 Gbit/s"),
        ("40GbE", 40e9, "IEEE 802.3ba: 40 Gbit/s"),
        ("100GbE", 100e9, "IEEE 802.3ba/802.3bm: 100 Gbit/s"),
        ("200GbE", 200e9, "IEEE 802.3bs: 200 Gbit/s"),
        ("400GbE", 400e9, "IEEE 802.3bs: 400 Gbit/s"),
    ]
    .into_iter()
    .map(|(name, r, source)| NicPreset { name, rate: BitRate(r), source })
    .collect()
}

/// Looks a NIC preset up by name (case-insensitive).
pub fn nic_by_name(name: &str) -> Option<NicPreset> {
    nic_presets().into_iter().find(|n| n.name.eq_ignore_ascii_case(name))
}

/// A host bus between GPUs of one host (used for host-local aggregation and broadcast).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostBus {
    /// Name, e.g. `"pcie3-x16"`.
    pub name: &'static str,
    /// Usable bandwidth per direction.
    pub bandwidth: BitRate,
    /// Where the figure comes from.
    pub source: &'static str,
}

/// The built-in host buses.
pub fn host_buses() -> Vec<HostBus> {
    [
        ("pcie3-x16", 15.75e9, "PCI-SIG PCIe 3.0: 8 GT/s x 16 lanes x 128b/130b = 15.75 GB/s per direction"),
        ("pcie4-x16", 31.5e9, "PCI-SIG PCIe 4.0: 16 GT/s x 16 lanes x 128b/130b = 31.5 GB/s per direction"),
        ("pcie5-x16", 63.0e9, "PCI-SIG PCIe 5.0: 32 GT/s x 16 lanes x 128b/130b = 63 GB/s per direction"),
        ("nvlink2", 150.0e9, "NVIDIA V100 datasheet: NVLink 2.0, 300 GB/s total = 150 GB/s per direction"),
        ("nvlink3", 300.0e9, "NVIDIA A100 datasheet: NVLink 3.0, 600 GB/s total = 300 GB/s per direction"),
        ("nvlink4", 450.0e9, "NVIDIA H100 datasheet: NVLink 4.0, 900 GB/s total = 450 GB/s per direction"),
    ]
    .into_iter()
    .map(|(name, gbs, source)| HostBus { name, bandwidth: BitRate::from_bytes_per_sec(gbs), source })
    .collect()
}

/// Looks a host bus up by name (case-insensitive).
pub fn host_bus_by_name(name: &str) -> Option<HostBus> {
    host_buses().into_iter().find(|b| b.name.eq_ignore_ascii_case(name))
}

/// Default memory bandwidth of a parameter-server host (CPU DRAM), which bounds how fast a
/// shard applies updates: a dual-socket Xeon E5-2600 v3 host with 4 channels of DDR4-2133 per
/// socket reaches 2 x 68 GB/s peak (Intel ARK, E5-2680 v3 "Max Memory Bandwidth 68 GB/s"); we
/// take one socket's 68 GB/s since a PS process is rarely NUMA-spread.
pub const DEFAULT_PS_MEMORY_BANDWIDTH_GBS: f64 = 68.0;

#[cfg(test)]
mod tests {
    #[test]
    fn mixed_precision_efficiencies_give_back_the_measured_resnet50_throughput() {
        // The zoo's ResNet-50 (torchvision v1.5 layers): a training image is 3x its forward FLOPs.
        let flop = 3.0 * crate::models::builtin("resnet-50").unwrap().forward_flops();
        for (name, measured) in [("v100", 1200.0), ("a100-80gb", 2470.0)] {
            let g = gpu_by_name(name).unwrap();
            let predicted = g.fp16.unwrap().0 * g.fp16_efficiency.unwrap() / flop;
            assert!((predicted / measured - 1.0).abs() < 0.02, "{name}: {predicted:.0} img/s vs {measured}");
            assert!(g.fp16_efficiency_source.as_ref().unwrap().contains("img/s"));
        }
        // Without a published figure there is no default: the scenario must give one.
        assert!(gpu_by_name("h100").unwrap().fp16_efficiency.is_none());
    }

    use super::*;

    #[test]
    fn one_p100_efficiency_predicts_its_published_rates_once_convolutions_run_by_winograd() {
        let p100 = gpu_by_name("p100").unwrap();
        let rate = |m: &str, winograd: bool| {
            let flop = 3.0 * crate::models::builtin(m).unwrap().executed_forward_flops(winograd);
            p100.fp32.0 * p100.efficiency / flop
        };
        let mut log_sum = 0.0;
        for (m, published) in P100_PUBLISHED_IMG_S {
            let predicted = rate(m, true);
            assert!((predicted / published - 1.0).abs() < 0.08, "{m}: {predicted:.1} img/s vs {published}");
            // The efficiency this published rate implies.
            log_sum += (p100.efficiency * published / predicted).ln();
        }
        let geometric_mean = (log_sum / P100_PUBLISHED_IMG_S.len() as f64).exp();
        assert!((P100_EFFICIENCY / geometric_mean - 1.0).abs() < 0.01, "{geometric_mean}");
        // At the direct method's count VGG-16 would be predicted 3.8x too slow.
        let direct = rate("vgg-16", false);
        assert!(direct < 154.0 / 3.5, "{direct}");
    }

    #[test]
    fn the_k40_anchor_is_the_zoo_inception_v3_executed_flops() {
        let m = crate::models::builtin("inception-v3").unwrap();
        let flop = 3.0 * m.executed_forward_flops(true);
        assert!((flop / INCEPTION_V3_TRAIN_EXECUTED_FLOP - 1.0).abs() < 1e-4, "{flop}");
        let k40 = gpu_by_name("k40").unwrap();
        let img_s = k40.fp32.0 * k40.efficiency / flop;
        assert!((img_s - 9.5).abs() < 0.01, "{img_s}");
    }

    #[test]
    fn catalogue_has_the_issue_figures() {
        let k40 = gpu_by_name("K40").unwrap();
        assert_eq!(k40.fp32.0, 4.29e12);
        assert_eq!(k40.memory_bandwidth.bytes_per_sec(), 288e9);
        // K80: the board's 5.6 TFLOP/s and 480 GB/s are two chips.
        let k80 = gpu_by_name("k80").unwrap();
        assert_eq!(k80.fp32.0 * 2.0, 5.6e12);
        assert_eq!(k80.memory_bandwidth.bytes_per_sec() * 2.0, 480e9);
        assert_eq!(gpu_by_name("h200").unwrap().memory, Bytes(141 << 30));
        assert_eq!(nic_by_name("100gbe").unwrap().rate.0, 100e9);
        assert_eq!(nic_presets().len(), 7);
        assert!(host_bus_by_name("pcie4-x16").is_some());
        for g in gpus() {
            assert!(!g.source.is_empty() && g.efficiency > 0.0 && g.efficiency <= 1.0);
        }
    }
}
