//! The model zoo: models as layer lists, built from architecture definitions in code.
//!
//! Each built-in model is constructed layer by layer the way its reference implementation
//! builds it (output shapes follow from kernel, stride and padding), so parameter counts and
//! multiply-adds are *computed*, never typed in. Tests pin the totals to published figures.
//!
//! Conventions, per sample (one image or one sequence):
//! - `macs`: multiply-accumulates of the layer's GEMM-like work (convolutions, dense layers,
//!   attention products). This is what papers quote as "multiply-adds" or, loosely, "FLOPs".
//! - `forward_flops`: `2 x macs` plus the element-wise work of pooling and normalisation.
//! - Variables are the trainable tensors in creation order (what TensorFlow's
//!   `replica_device_setter` iterates over), stored as FP32 (4 bytes per element).
//!
//! A user model is a CSV layer table in the format that `topolab models NAME --layers --format
//! csv` prints (one row per variable; a layer without variables has one row with an empty
//! variable), so any built-in model can be exported, edited and read back.

use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::units::Bytes;

/// Bytes per parameter: variables and gradients travel as FP32.
pub const BYTES_PER_PARAM: u64 = 4;

/// One trainable tensor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Variable {
    /// Name as the reference implementation spells it.
    pub name: String,
    /// Shape, outermost first.
    pub shape: Vec<u64>,
    /// Size in bytes (elements x 4).
    pub bytes: Bytes,
}

impl Variable {
    fn new(name: String, shape: Vec<u64>) -> Self {
        let elems: u64 = shape.iter().product();
        Variable { name, shape, bytes: Bytes(elems * BYTES_PER_PARAM) }
    }
    /// Number of parameters.
    pub fn params(&self) -> u64 {
        self.bytes.0 / BYTES_PER_PARAM
    }
}

/// What a layer does (decides nothing in the simulator but helps reading tables and mapping
/// layers to proxy GEMMs in the runtime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerKind {
    /// A 2-D convolution (with its batch normalisation, if any).
    Conv,
    /// A fully connected layer.
    Dense,
    /// Max or average pooling.
    Pool,
    /// A token or position embedding lookup.
    Embedding,
    /// Multi-head self-attention (projections and the attention products).
    Attention,
    /// The feed-forward block of a transformer layer.
    FeedForward,
    /// Layer normalisation.
    Norm,
    /// Anything else (user models).
    Other,
}

impl LayerKind {
    /// The kebab-case name used in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            LayerKind::Conv => "conv",
            LayerKind::Dense => "dense",
            LayerKind::Pool => "pool",
            LayerKind::Embedding => "embedding",
            LayerKind::Attention => "attention",
            LayerKind::FeedForward => "feed-forward",
            LayerKind::Norm => "norm",
            LayerKind::Other => "other",
        }
    }
    fn parse(s: &str) -> Option<LayerKind> {
        Some(match s {
            "conv" => LayerKind::Conv,
            "dense" => LayerKind::Dense,
            "pool" => LayerKind::Pool,
            "embedding" => LayerKind::Embedding,
            "attention" => LayerKind::Attention,
            "feed-forward" => LayerKind::FeedForward,
            "norm" => LayerKind::Norm,
            "other" => LayerKind::Other,
            _ => return None,
        })
    }
}

impl fmt::Display for LayerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One layer of a model, per sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Layer {
    /// Layer name.
    pub name: String,
    /// Kind of layer.
    pub kind: LayerKind,
    /// Trainable variables, in creation order.
    pub variables: Vec<Variable>,
    /// Multiply-accumulates per sample.
    pub macs: u64,
    /// Forward FLOPs per sample.
    pub forward_flops: f64,
    /// Size of the layer's output activation per sample (FP32).
    pub activation_bytes: Bytes,
    /// A 3x3 convolution of stride 1: GPU libraries run its multiply-adds by Winograd's
    /// minimal filtering ([`WINOGRAD_3X3_REDUCTION`]). A layer table marks such layers in its
    /// optional `winograd` column; without it they are costed at their direct multiply-adds.
    pub winograd: bool,
}

/// How many times fewer multiplies a 3x3 stride-1 convolution does on a GPU than the direct
/// method: Winograd's minimal filtering F(4x4, 3x3) computes a 4x4 tile of outputs with
/// (4 + 3 - 1)^2 = 36 multiplies instead of 16 x 9 = 144 (Lavin and Gray, "Fast Algorithms for
/// Convolutional Neural Networks", CVPR 2016). NVIDIA's cuDNN runs 3x3 convolutions this way
/// from version 5 (2016: "Accelerate networks with 3x3 convolutions, such as VGG, GoogleNet,
/// and ResNets", cuDNN What's New), with 2x2 and 4x4 tiles in cuDNN 5.1 (Gray and Koster,
/// "Still not slowing down: benchmarking optimized Winograd implementations", 2016), forward
/// and for both gradients, on CUDA cores in FP32 (tensor cores run convolutions as implicit
/// GEMMs). The 4x4 tile's saving is the one TensorFlow's published P100 rates bear out: with it
/// one efficiency predicts Inception-v3, ResNet-50, ResNet-152 and VGG-16 within 8%
/// ([`crate::hardware::P100_EFFICIENCY`]); with the 2x2 tile's 2.25 the efficiencies they imply
/// spread from 0.37 to 0.61.
pub const WINOGRAD_3X3_REDUCTION: f64 = 144.0 / 36.0;

impl Layer {
    /// Forward FLOPs per sample as a GPU executes them: with `winograd` (FP32 on CUDA cores),
    /// the multiply-adds of a 3x3 stride-1 convolution are [`WINOGRAD_3X3_REDUCTION`] times fewer;
    /// the element-wise work stays. Backward is twice this, as for the direct method.
    pub fn executed_forward_flops(&self, winograd: bool) -> f64 {
        self.forward_flops - 2.0 * (self.macs as f64 - self.executed_macs(winograd))
    }

    /// Multiply-adds per sample as a GPU executes them: with `winograd`, a 3x3 stride-1
    /// convolution's are [`WINOGRAD_3X3_REDUCTION`] times fewer.
    pub fn executed_macs(&self, winograd: bool) -> f64 {
        if winograd && self.winograd { self.macs as f64 / WINOGRAD_3X3_REDUCTION } else { self.macs as f64 }
    }

    /// The layer's forward pass as one GEMM `(m x k) (k x n)` for `batch` samples, its first
    /// variable as the `k x n` matrix (a convolution's kernel `[.., c_out]` as its im2col GEMM:
    /// `k` the product of every dimension but the last, `n` the last) and `m` the rows its
    /// multiply-adds imply; `None` for a layer without variables.
    pub fn gemm_shape(&self, batch: u64) -> Option<(u64, u64, u64)> {
        let shape = &self.variables.first()?.shape;
        let (k, n) = match shape.as_slice() {
            [] => return None,
            [k] => (*k, 1),
            [rest @ .., n] => (rest.iter().product::<u64>(), *n),
        };
        let rows = self.macs.checked_div(k * n).unwrap_or(0);
        Some((batch * rows.max(1), k.max(1), n.max(1)))
    }
}

/// A model: an ordered list of layers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Model {
    /// Name, e.g. `"inception-v3"`.
    pub name: String,
    /// What one sample is, e.g. `"299x299x3 image"`.
    pub sample: String,
    /// Which variant is built and where its definition comes from.
    pub source: String,
    /// Layers in forward order.
    pub layers: Vec<Layer>,
}

impl Model {
    /// Trainable parameters.
    pub fn params(&self) -> u64 {
        self.variables().map(Variable::params).sum()
    }
    /// Multiply-accumulates per sample.
    pub fn macs(&self) -> u64 {
        self.layers.iter().map(|l| l.macs).sum()
    }
    /// Forward FLOPs per sample.
    pub fn forward_flops(&self) -> f64 {
        self.layers.iter().map(|l| l.forward_flops).sum()
    }
    /// Multiply-adds per sample as a GPU executes them ([`Layer::executed_macs`]).
    pub fn executed_macs(&self, winograd: bool) -> f64 {
        self.layers.iter().map(|l| l.executed_macs(winograd)).sum()
    }
    /// Forward FLOPs per sample as a GPU executes them ([`Layer::executed_forward_flops`]).
    pub fn executed_forward_flops(&self, winograd: bool) -> f64 {
        self.layers.iter().map(|l| l.executed_forward_flops(winograd)).sum()
    }
    /// Bytes of all variables.
    pub fn bytes(&self) -> Bytes {
        self.variables().map(|v| v.bytes).sum()
    }
    /// All variables in creation order.
    pub fn variables(&self) -> impl Iterator<Item = &Variable> {
        self.layers.iter().flat_map(|l| l.variables.iter())
    }
    /// Number of variables.
    pub fn variable_count(&self) -> usize {
        self.layers.iter().map(|l| l.variables.len()).sum()
    }
    /// Sum of per-sample output activations (a lower bound on activation memory for training).
    pub fn activation_bytes(&self) -> Bytes {
        self.layers.iter().map(|l| l.activation_bytes).sum()
    }
}

/// Why a model could not be found or read.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// No built-in model has this name.
    #[error("unknown model `{name}`; built-in models: {known}")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The built-in names, comma separated.
        known: String,
    },
    /// The layer-table file could not be read.
    #[error("cannot read layer table {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A row of the layer table is malformed.
    #[error("{path}:{line}: {message}")]
    Row {
        /// The file.
        path: String,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        message: String,
    },
}

/// Names of the built-in models.
pub const BUILTIN: &[&str] =
    &["inception-v3", "resnet-50", "resnet-101", "resnet-152", "vgg-16", "alexnet", "bert-base", "bert-large", "gpt-2"];

/// Builds a built-in model by name.
pub fn builtin(name: &str) -> Result<Model, ModelError> {
    match name.to_ascii_lowercase().as_str() {
        "inception-v3" | "inception_v3" | "inceptionv3" => Ok(inception_v3()),
        "resnet-50" | "resnet50" => Ok(resnet("resnet-50", [3, 4, 6, 3])),
        "resnet-101" | "resnet101" => Ok(resnet("resnet-101", [3, 4, 23, 3])),
        "resnet-152" | "resnet152" => Ok(resnet("resnet-152", [3, 8, 36, 3])),
        "vgg-16" | "vgg16" => Ok(vgg16()),
        "alexnet" => Ok(alexnet()),
        "bert-base" => Ok(bert("bert-base", 12, 768, 12, 3072)),
        "bert-large" => Ok(bert("bert-large", 24, 1024, 16, 4096)),
        "gpt-2" | "gpt2" | "gpt-2-xl" => Ok(gpt2_xl()),
        _ => Err(ModelError::Unknown { name: name.to_string(), known: BUILTIN.join(", ") }),
    }
}

// ---------------------------------------------------------------------------------------------
// Convolutional networks

/// Spatial padding of a convolution or pool.
#[derive(Clone, Copy)]
enum Pad {
    /// TensorFlow "SAME": output = ceil(in / stride).
    Same,
    /// TensorFlow "VALID": output = ceil((in - k + 1) / stride).
    Valid,
    /// PyTorch explicit padding p on each side: output = floor((in + 2p - k) / stride) + 1.
    Explicit(u64),
}

fn out_dim(input: u64, k: u64, stride: u64, pad: Pad) -> u64 {
    match pad {
        Pad::Same => input.div_ceil(stride),
        Pad::Valid => (input - k + 1).div_ceil(stride),
        Pad::Explicit(p) => (input + 2 * p - k) / stride + 1,
    }
}

/// Height, width, channels of an activation.
#[derive(Clone, Copy, Debug)]
struct Shape {
    h: u64,
    w: u64,
    c: u64,
}

impl Shape {
    fn elems(self) -> u64 {
        self.h * self.w * self.c
    }
    fn bytes(self) -> Bytes {
        Bytes(self.elems() * 4)
    }
}

/// Which batch-normalisation variables a convolution creates.
#[derive(Clone, Copy)]
enum Norm {
    /// No normalisation; the convolution has a bias.
    Bias,
    /// TF-slim batch norm with `scale=False`: only `beta` is trainable.
    Beta,
    /// PyTorch `BatchNorm2d`: `weight` (gamma) and `bias` (beta).
    GammaBeta,
}

/// Accumulates layers while tracking shapes.
#[derive(Default)]
struct Net {
    layers: Vec<Layer>,
}

impl Net {
    #[allow(clippy::too_many_arguments)]
    fn conv(&mut self, name: &str, x: Shape, cout: u64, kh: u64, kw: u64, stride: u64, pad: Pad, norm: Norm) -> Shape {
        let out = Shape { h: out_dim(x.h, kh, stride, pad), w: out_dim(x.w, kw, stride, pad), c: cout };
        let macs = out.h * out.w * cout * kh * kw * x.c;
        let mut variables = Vec::new();
        let (weight, bias_name, norm_names): (&str, &str, &[&str]) = match norm {
            Norm::Bias => ("weight", "bias", &[]),
            Norm::Beta => ("weights", "", &["BatchNorm/beta"]),
            Norm::GammaBeta => ("weight", "", &["bn.weight", "bn.bias"]),
        };
        let sep = if matches!(norm, Norm::Beta) { "/" } else { "." };
        variables.push(Variable::new(format!("{name}{sep}{weight}"), vec![kh, kw, x.c, cout]));
        if !bias_name.is_empty() {
            variables.push(Variable::new(format!("{name}{sep}{bias_name}"), vec![cout]));
        }
        for n in norm_names {
            variables.push(Variable::new(format!("{name}{sep}{n}"), vec![cout]));
        }
        // Element-wise work: bias or normalisation plus the activation function, ~2 FLOP per output.
        let elementwise = 2 * out.elems();
        self.layers.push(Layer {
            name: name.to_string(),
            kind: LayerKind::Conv,
            variables,
            macs,
            forward_flops: (2 * macs + elementwise) as f64,
            activation_bytes: out.bytes(),
            winograd: kh == 3 && kw == 3 && stride == 1,
        });
        out
    }

    fn pool(&mut self, name: &str, x: Shape, k: u64, stride: u64, pad: Pad) -> Shape {
        let out = Shape { h: out_dim(x.h, k, stride, pad), w: out_dim(x.w, k, stride, pad), c: x.c };
        self.layers.push(Layer {
            name: name.to_string(),
            kind: LayerKind::Pool,
            variables: vec![],
            macs: 0,
            forward_flops: (out.elems() * k * k) as f64,
            activation_bytes: out.bytes(),
            winograd: false,
        });
        out
    }

    /// Global average pooling to 1x1.
    fn global_pool(&mut self, name: &str, x: Shape) -> Shape {
        let out = Shape { h: 1, w: 1, c: x.c };
        self.layers.push(Layer {
            name: name.to_string(),
            kind: LayerKind::Pool,
            variables: vec![],
            macs: 0,
            forward_flops: x.elems() as f64,
            activation_bytes: out.bytes(),
            winograd: false,
        });
        out
    }

    /// A dense layer over `tokens` positions (1 for image classifiers).
    fn dense(&mut self, name: &str, sep: &str, nin: u64, nout: u64, tokens: u64, kind: LayerKind) {
        let w = if sep == "/" { "weights" } else { "weight" };
        let b = if sep == "/" { "biases" } else { "bias" };
        let macs = nin * nout * tokens;
        self.layers.push(Layer {
            name: name.to_string(),
            kind,
            variables: vec![
                Variable::new(format!("{name}{sep}{w}"), vec![nin, nout]),
                Variable::new(format!("{name}{sep}{b}"), vec![nout]),
            ],
            macs,
            forward_flops: (2 * macs + nout * tokens) as f64,
            activation_bytes: Bytes(nout * tokens * 4),
            winograd: false,
        });
    }
}

/// Inception-v3 as built by TF-slim `nets/inception_v3.py` (the model of Szegedy et al. 2016,
/// "Rethinking the Inception Architecture"), for 299x299x3 input, **without the auxiliary
/// head**: 94 convolutions each with a batch norm of `scale=False` (trainable `beta` only) and
/// the 2048->1000 logits layer = 190 variables.
/// Published: 23.8 M parameters, 5.7 G multiply-adds (Keras applications table; the paper's
/// "5 billion multiply-adds" refers to the 299x299 network before the final tweaks).
pub fn inception_v3() -> Model {
    let mut n = Net::default();
    let p = "InceptionV3";
    let bn = Norm::Beta;
    let mut x = Shape { h: 299, w: 299, c: 3 };
    x = n.conv(&format!("{p}/Conv2d_1a_3x3"), x, 32, 3, 3, 2, Pad::Valid, bn);
    x = n.conv(&format!("{p}/Conv2d_2a_3x3"), x, 32, 3, 3, 1, Pad::Valid, bn);
    x = n.conv(&format!("{p}/Conv2d_2b_3x3"), x, 64, 3, 3, 1, Pad::Same, bn);
    x = n.pool(&format!("{p}/MaxPool_3a_3x3"), x, 3, 2, Pad::Valid);
    x = n.conv(&format!("{p}/Conv2d_3b_1x1"), x, 80, 1, 1, 1, Pad::Valid, bn);
    x = n.conv(&format!("{p}/Conv2d_4a_3x3"), x, 192, 3, 3, 1, Pad::Valid, bn);
    x = n.pool(&format!("{p}/MaxPool_5a_3x3"), x, 3, 2, Pad::Valid);

    // Mixed_5b, 5c, 5d: 35x35.
    for (block, pool_ch) in [("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)] {
        let m = format!("{p}/{block}");
        let b0 = n.conv(&format!("{m}/Branch_0/Conv2d_0a_1x1"), x, 64, 1, 1, 1, Pad::Same, bn);
        let b1 = n.conv(&format!("{m}/Branch_1/Conv2d_0a_1x1"), x, 48, 1, 1, 1, Pad::Same, bn);
        let b1 = n.conv(&format!("{m}/Branch_1/Conv2d_0b_5x5"), b1, 64, 5, 5, 1, Pad::Same, bn);
        let b2 = n.conv(&format!("{m}/Branch_2/Conv2d_0a_1x1"), x, 64, 1, 1, 1, Pad::Same, bn);
        let b2 = n.conv(&format!("{m}/Branch_2/Conv2d_0b_3x3"), b2, 96, 3, 3, 1, Pad::Same, bn);
        let b2 = n.conv(&format!("{m}/Branch_2/Conv2d_0c_3x3"), b2, 96, 3, 3, 1, Pad::Same, bn);
        let b3 = n.pool(&format!("{m}/Branch_3/AvgPool_0a_3x3"), x, 3, 1, Pad::Same);
        let b3 = n.conv(&format!("{m}/Branch_3/Conv2d_0b_1x1"), b3, pool_ch, 1, 1, 1, Pad::Same, bn);
        x = Shape { c: b0.c + b1.c + b2.c + b3.c, ..b0 };
    }

    // Mixed_6a: reduction to 17x17.
    {
        let m = format!("{p}/Mixed_6a");
        let b0 = n.conv(&format!("{m}/Branch_0/Conv2d_1a_1x1"), x, 384, 3, 3, 2, Pad::Valid, bn);
        let b1 = n.conv(&format!("{m}/Branch_1/Conv2d_0a_1x1"), x, 64, 1, 1, 1, Pad::Same, bn);
        let b1 = n.conv(&format!("{m}/Branch_1/Conv2d_0b_3x3"), b1, 96, 3, 3, 1, Pad::Same, bn);
        let b1 = n.conv(&format!("{m}/Branch_1/Conv2d_1a_1x1"), b1, 96, 3, 3, 2, Pad::Valid, bn);
        let b2 = n.pool(&format!("{m}/Branch_2/MaxPool_1a_3x3"), x, 3, 2, Pad::Valid);
        x = Shape { c: b0.c + b1.c + b2.c, ..b0 };
    }

    // Mixed_6b..6e: 17x17 with factorised 7x7 convolutions.
    for (block, c7) in [("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)] {
        let m = format!("{p}/{block}");
        let b0 = n.conv(&format!("{m}/Branch_0/Conv2d_0a_1x1"), x, 192, 1, 1, 1, Pad::Same, bn);
        let b1 = n.conv(&format!("{m}/Branch_1/Conv2d_0a_1x1"), x, c7, 1, 1, 1, Pad::Same, bn);
        let b1 = n.conv(&format!("{m}/Branch_1/Conv2d_0b_1x7"), b1, c7, 1, 7, 1, Pad::Same, bn);
        let b1 = n.conv(&format!("{m}/Branch_1/Conv2d_0c_7x1"), b1, 192, 7, 1, 1, Pad::Same, bn);
        let b2 = n.conv(&format!("{m}/Branch_2/Conv2d_0a_1x1"), x, c7, 1, 1, 1, Pad::Same, bn);
        let b2 = n.conv(&format!("{m}/Branch_2/Conv2d_0b_7x1"), b2, c7, 7, 1, 1, Pad::Same, bn);
        let b2 = n.conv(&format!("{m}/Branch_2/Conv2d_0c_1x7"), b2, c7, 1, 7, 1, Pad::Same, bn);
        let b2 = n.conv(&format!("{m}/Branch_2/Conv2d_0d_7x1"), b2, c7, 7, 1, 1, Pad::Same, bn);
        let b2 = n.conv(&format!("{m}/Branch_2/Conv2d_0e_1x7"), b2, 192, 1, 7, 1, Pad::Same, bn);
        let b3 = n.pool(&format!("{m}/Branch_3/AvgPool_0a_3x3"), x, 3, 1, Pad::Same);
        let b3 = n.conv(&format!("{m}/Branch_3/Conv2d_0b_1x1"), b3, 192, 1, 1, 1, Pad::Same, bn);
        x = Shape { c: b0.c + b1.c + b2.c + b3.c, ..b0 };
    }

    // Mixed_7a: reduction to 8x8.
    {
        let m = format!("{p}/Mixed_7a");
        let b0 = n.conv(&format!("{m}/Branch_0/Conv2d_0a_1x1"), x, 192, 1, 1, 1, Pad::Same, bn);
        let b0 = n.conv(&format!("{m}/Branch_0/Conv2d_1a_3x3"), b0, 320, 3, 3, 2, Pad::Valid, bn);
        let b1 = n.conv(&format!("{m}/Branch_1/Conv2d_0a_1x1"), x, 192, 1, 1, 1, Pad::Same, bn);
        let b1 = n.conv(&format!("{m}/Branch_1/Conv2d_0b_1x7"), b1, 192, 1, 7, 1, Pad::Same, bn);
        let b1 = n.conv(&format!("{m}/Branch_1/Conv2d_0c_7x1"), b1, 192, 7, 1, 1, Pad::Same, bn);
        let b1 = n.conv(&format!("{m}/Branch_1/Conv2d_1a_3x3"), b1, 192, 3, 3, 2, Pad::Valid, bn);
        let b2 = n.pool(&format!("{m}/Branch_2/MaxPool_1a_3x3"), x, 3, 2, Pad::Valid);
        x = Shape { c: b0.c + b1.c + b2.c, ..b0 };
    }

    // Mixed_7b, 7c: 8x8 with expanded filter banks.
    for block in ["Mixed_7b", "Mixed_7c"] {
        let m = format!("{p}/{block}");
        let b0 = n.conv(&format!("{m}/Branch_0/Conv2d_0a_1x1"), x, 320, 1, 1, 1, Pad::Same, bn);
        let b1 = n.conv(&format!("{m}/Branch_1/Conv2d_0a_1x1"), x, 384, 1, 1, 1, Pad::Same, bn);
        let b1a = n.conv(&format!("{m}/Branch_1/Conv2d_0b_1x3"), b1, 384, 1, 3, 1, Pad::Same, bn);
        let b1b = n.conv(&format!("{m}/Branch_1/Conv2d_0c_3x1"), b1, 384, 3, 1, 1, Pad::Same, bn);
        let b2 = n.conv(&format!("{m}/Branch_2/Conv2d_0a_1x1"), x, 448, 1, 1, 1, Pad::Same, bn);
        let b2 = n.conv(&format!("{m}/Branch_2/Conv2d_0b_3x3"), b2, 384, 3, 3, 1, Pad::Same, bn);
        let b2a = n.conv(&format!("{m}/Branch_2/Conv2d_0c_1x3"), b2, 384, 1, 3, 1, Pad::Same, bn);
        let b2b = n.conv(&format!("{m}/Branch_2/Conv2d_0d_3x1"), b2, 384, 3, 1, 1, Pad::Same, bn);
        let b3 = n.pool(&format!("{m}/Branch_3/AvgPool_0a_3x3"), x, 3, 1, Pad::Same);
        let b3 = n.conv(&format!("{m}/Branch_3/Conv2d_0b_1x1"), b3, 192, 1, 1, 1, Pad::Same, bn);
        x = Shape { c: b0.c + b1a.c + b1b.c + b2a.c + b2b.c + b3.c, ..b0 };
    }

    let x = n.global_pool(&format!("{p}/Logits/AvgPool_1a_8x8"), x);
    n.dense(&format!("{p}/Logits/Conv2d_1c_1x1"), "/", x.c, 1000, 1, LayerKind::Dense);
    Model {
        name: "inception-v3".into(),
        sample: "299x299x3 image".into(),
        source: "TF-slim nets/inception_v3.py without the auxiliary head (Szegedy et al. 2016); \
                 published 23.8 M params, 5.7 G MACs"
            .into(),
        layers: n.layers,
    }
}

/// ResNet v1.5 as built by torchvision `models/resnet.py` (He et al. 2016, stride on the 3x3
/// convolution of each bottleneck), 224x224x3 input, BatchNorm with trainable weight and bias.
/// Published (torchvision model table): ResNet-50 25.56 M params, 4.09 G MACs; ResNet-101
/// 44.5 M (44.7 M in Keras, which adds conv biases); ResNet-152 60.2 M (60.4 M in Keras).
pub fn resnet(name: &str, blocks: [usize; 4]) -> Model {
    let mut n = Net::default();
    let bn = Norm::GammaBeta;
    let mut x = Shape { h: 224, w: 224, c: 3 };
    x = n.conv("conv1", x, 64, 7, 7, 2, Pad::Explicit(3), bn);
    x = n.pool("maxpool", x, 3, 2, Pad::Explicit(1));
    for (stage, (&count, planes)) in blocks.iter().zip([64u64, 128, 256, 512]).enumerate() {
        for b in 0..count {
            let stride = if b == 0 && stage > 0 { 2 } else { 1 };
            let m = format!("layer{}.{b}", stage + 1);
            let y = n.conv(&format!("{m}.conv1"), x, planes, 1, 1, 1, Pad::Explicit(0), bn);
            let y = n.conv(&format!("{m}.conv2"), y, planes, 3, 3, stride, Pad::Explicit(1), bn);
            let y = n.conv(&format!("{m}.conv3"), y, planes * 4, 1, 1, 1, Pad::Explicit(0), bn);
            if b == 0 {
                n.conv(&format!("{m}.downsample"), x, planes * 4, 1, 1, stride, Pad::Explicit(0), bn);
            }
            x = y;
        }
    }
    let x = n.global_pool("avgpool", x);
    n.dense("fc", ".", x.c, 1000, 1, LayerKind::Dense);
    Model {
        name: name.into(),
        sample: "224x224x3 image".into(),
        source: format!("torchvision models/resnet.py {name} (ResNet v1.5, He et al. 2016)"),
        layers: n.layers,
    }
}

/// VGG-16 (configuration D of Simonyan & Zisserman 2015) as in torchvision, 224x224x3 input,
/// convolutions and dense layers with biases. Published: 138.36 M params, 15.47 G MACs.
pub fn vgg16() -> Model {
    let mut n = Net::default();
    let mut x = Shape { h: 224, w: 224, c: 3 };
    let cfg: &[u64] = &[64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0];
    for (i, &c) in cfg.iter().enumerate() {
        x = if c == 0 {
            n.pool(&format!("features.{i}"), x, 2, 2, Pad::Explicit(0))
        } else {
            n.conv(&format!("features.{i}"), x, c, 3, 3, 1, Pad::Explicit(1), Norm::Bias)
        };
    }
    n.dense("classifier.0", ".", x.elems(), 4096, 1, LayerKind::Dense);
    n.dense("classifier.3", ".", 4096, 4096, 1, LayerKind::Dense);
    n.dense("classifier.6", ".", 4096, 1000, 1, LayerKind::Dense);
    Model {
        name: "vgg-16".into(),
        sample: "224x224x3 image".into(),
        source: "torchvision models/vgg.py vgg16 (Simonyan & Zisserman 2015, config D); published 138.36 M params, 15.47 G MACs".into(),
        layers: n.layers,
    }
}

/// AlexNet, the torchvision variant (one-tower "One weird trick" layout, Krizhevsky 2014),
/// 224x224x3 input. Published (torchvision model table): 61.1 M params, 0.714 G MACs.
pub fn alexnet() -> Model {
    let mut n = Net::default();
    let b = Norm::Bias;
    let mut x = Shape { h: 224, w: 224, c: 3 };
    x = n.conv("features.0", x, 64, 11, 11, 4, Pad::Explicit(2), b);
    x = n.pool("features.2", x, 3, 2, Pad::Explicit(0));
    x = n.conv("features.3", x, 192, 5, 5, 1, Pad::Explicit(2), b);
    x = n.pool("features.5", x, 3, 2, Pad::Explicit(0));
    x = n.conv("features.6", x, 384, 3, 3, 1, Pad::Explicit(1), b);
    x = n.conv("features.8", x, 256, 3, 3, 1, Pad::Explicit(1), b);
    x = n.conv("features.10", x, 256, 3, 3, 1, Pad::Explicit(1), b);
    x = n.pool("features.12", x, 3, 2, Pad::Explicit(0));
    n.dense("classifier.1", ".", x.elems(), 4096, 1, LayerKind::Dense);
    n.dense("classifier.4", ".", 4096, 4096, 1, LayerKind::Dense);
    n.dense("classifier.6", ".", 4096, 1000, 1, LayerKind::Dense);
    Model {
        name: "alexnet".into(),
        sample: "224x224x3 image".into(),
        source: "torchvision models/alexnet.py; published 61.1 M params, 0.714 G MACs".into(),
        layers: n.layers,
    }
}

// ---------------------------------------------------------------------------------------------
// Transformers

/// Sequence length of one BERT sample (the pre-training phase-1 length of Devlin et al. 2019).
pub const BERT_SEQ_LEN: u64 = 128;
/// Sequence length of one GPT-2 sample (the model's full context, Radford et al. 2019).
pub const GPT2_SEQ_LEN: u64 = 1024;

fn norm_layer(n: &mut Net, name: &str, d: u64, tokens: u64) {
    n.layers.push(Layer {
        name: name.to_string(),
        kind: LayerKind::Norm,
        variables: vec![
            Variable::new(format!("{name}.weight"), vec![d]),
            Variable::new(format!("{name}.bias"), vec![d]),
        ],
        macs: 0,
        forward_flops: (5 * d * tokens) as f64,
        activation_bytes: Bytes(d * tokens * 4),
        winograd: false,
    });
}

fn embedding_layer(n: &mut Net, name: &str, tables: &[(&str, u64)], d: u64, tokens: u64) {
    n.layers.push(Layer {
        name: name.to_string(),
        kind: LayerKind::Embedding,
        variables: tables.iter().map(|(t, rows)| Variable::new(format!("{name}.{t}"), vec![*rows, d])).collect(),
        macs: 0,
        forward_flops: (tables.len() as u64 * d * tokens) as f64,
        activation_bytes: Bytes(d * tokens * 4),
        winograd: false,
    });
}

/// A transformer attention block: Q, K, V and output projections plus the two attention
/// products (scores = Q K^T and context = softmax(scores) V, each `s x s x d` MACs).
fn attention_layer(n: &mut Net, name: &str, vars: Vec<Variable>, d: u64, s: u64) {
    let macs = 4 * s * d * d + 2 * s * s * d;
    n.layers.push(Layer {
        name: name.to_string(),
        kind: LayerKind::Attention,
        variables: vars,
        macs,
        forward_flops: (2 * macs + 5 * s * s) as f64,
        activation_bytes: Bytes(s * d * 4),
        winograd: false,
    });
}

fn feed_forward_layer(n: &mut Net, name: &str, vars: Vec<Variable>, d: u64, f: u64, s: u64) {
    let macs = 2 * s * d * f;
    n.layers.push(Layer {
        name: name.to_string(),
        kind: LayerKind::FeedForward,
        variables: vars,
        macs,
        forward_flops: (2 * macs + 8 * s * f) as f64,
        activation_bytes: Bytes(s * d * 4),
        winograd: false,
    });
}

/// BERT (Devlin et al. 2019) as built by Hugging Face `BertModel` (with the pooler, without
/// pre-training heads), vocabulary 30522, 512 positions, 2 token types; a sample is one
/// sequence of [`BERT_SEQ_LEN`] tokens. Published: BERT-base 110 M, BERT-large 340 M params.
pub fn bert(name: &str, layers: u64, d: u64, _heads: u64, ffn: u64) -> Model {
    let s = BERT_SEQ_LEN;
    let mut n = Net::default();
    embedding_layer(
        &mut n,
        "embeddings",
        &[("word_embeddings.weight", 30522), ("position_embeddings.weight", 512), ("token_type_embeddings.weight", 2)],
        d,
        s,
    );
    norm_layer(&mut n, "embeddings.LayerNorm", d, s);
    let lin = |name: String, i: u64, o: u64| {
        vec![Variable::new(format!("{name}.weight"), vec![o, i]), Variable::new(format!("{name}.bias"), vec![o])]
    };
    for l in 0..layers {
        let m = format!("encoder.layer.{l}");
        let mut vars = Vec::new();
        for proj in ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"] {
            vars.extend(lin(format!("{m}.{proj}"), d, d));
        }
        attention_layer(&mut n, &format!("{m}.attention"), vars, d, s);
        norm_layer(&mut n, &format!("{m}.attention.output.LayerNorm"), d, s);
        let mut vars = lin(format!("{m}.intermediate.dense"), d, ffn);
        vars.extend(lin(format!("{m}.output.dense"), ffn, d));
        feed_forward_layer(&mut n, &format!("{m}.ffn"), vars, d, ffn, s);
        norm_layer(&mut n, &format!("{m}.output.LayerNorm"), d, s);
    }
    // The pooler transforms only the [CLS] token.
    n.dense("pooler.dense", ".", d, d, 1, LayerKind::Dense);
    Model {
        name: name.into(),
        sample: format!("sequence of {s} tokens"),
        source: format!(
            "Hugging Face transformers BertModel ({name}: {layers} layers, hidden {d}, FFN {ffn}), with pooler; \
             Devlin et al. 2019"
        ),
        layers: n.layers,
    }
}

/// GPT-2 1.5B ("XL": 48 layers, d = 1600, FFN 6400, vocabulary 50257, 1024 positions) as built
/// by Hugging Face `GPT2Model`; the LM head is tied to the token embedding (no extra variable)
/// but its `s x d x vocab` MACs are counted. Published: 1,542 M params (Radford et al. 2019,
/// Table 2; the checkpoint has 1,558 M with position embeddings counted).
pub fn gpt2_xl() -> Model {
    let (layers, d, ffn, vocab, s) = (48u64, 1600u64, 6400u64, 50257u64, GPT2_SEQ_LEN);
    let mut n = Net::default();
    embedding_layer(&mut n, "wte_wpe", &[("wte.weight", vocab), ("wpe.weight", 1024)], d, s);
    let conv1d = |name: String, i: u64, o: u64| {
        vec![Variable::new(format!("{name}.weight"), vec![i, o]), Variable::new(format!("{name}.bias"), vec![o])]
    };
    for l in 0..layers {
        let m = format!("h.{l}");
        norm_layer(&mut n, &format!("{m}.ln_1"), d, s);
        let mut vars = conv1d(format!("{m}.attn.c_attn"), d, 3 * d);
        vars.extend(conv1d(format!("{m}.attn.c_proj"), d, d));
        attention_layer(&mut n, &format!("{m}.attn"), vars, d, s);
        norm_layer(&mut n, &format!("{m}.ln_2"), d, s);
        let mut vars = conv1d(format!("{m}.mlp.c_fc"), d, ffn);
        vars.extend(conv1d(format!("{m}.mlp.c_proj"), ffn, d));
        feed_forward_layer(&mut n, &format!("{m}.mlp"), vars, d, ffn, s);
    }
    norm_layer(&mut n, "ln_f", d, s);
    let head_macs = s * d * vocab;
    n.layers.push(Layer {
        name: "lm_head".into(),
        kind: LayerKind::Dense,
        variables: vec![],
        macs: head_macs,
        forward_flops: (2 * head_macs) as f64,
        activation_bytes: Bytes(s * vocab * 4),
        winograd: false,
    });
    Model {
        name: "gpt-2".into(),
        sample: format!("sequence of {s} tokens"),
        source:
            "Hugging Face transformers GPT2Model gpt2-xl (Radford et al. 2019), LM head tied; published 1,542 M params"
                .into(),
        layers: n.layers,
    }
}

// ---------------------------------------------------------------------------------------------
// Layer tables (CSV)

/// Columns of a layer table.
pub const LAYER_TABLE_COLUMNS: &[&str] =
    &["layer", "kind", "macs", "forward_flops", "activation_bytes", "variable", "shape", "bytes"];

/// An optional last column of a layer table: `true` for a 3x3 stride-1 convolution
/// ([`Layer::winograd`]); empty or `false` otherwise.
pub const LAYER_TABLE_WINOGRAD: &str = "winograd";

/// Writes `model` as a layer table (one row per variable; layers without variables get one row
/// with empty variable fields).
pub fn write_layer_table<W: std::io::Write>(model: &Model, out: W) -> Result<(), csv::Error> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(LAYER_TABLE_COLUMNS.iter().chain([&LAYER_TABLE_WINOGRAD]))?;
    for l in &model.layers {
        let winograd = if l.winograd { "true" } else { "" };
        let head = [
            l.name.clone(),
            l.kind.to_string(),
            l.macs.to_string(),
            format!("{}", l.forward_flops),
            l.activation_bytes.0.to_string(),
        ];
        if l.variables.is_empty() {
            w.write_record(head.iter().map(String::as_str).chain(["", "", "", winograd]))?;
        }
        for v in &l.variables {
            let shape = v.shape.iter().map(u64::to_string).collect::<Vec<_>>().join("x");
            w.write_record(head.iter().cloned().chain([
                v.name.clone(),
                shape,
                v.bytes.0.to_string(),
                winograd.to_string(),
            ]))?;
        }
    }
    w.flush()?;
    Ok(())
}

/// Reads a user model from a layer-table CSV file. Rows of one layer must be consecutive; the
/// model is named after the file stem.
pub fn read_layer_table(path: &Path) -> Result<Model, ModelError> {
    let p = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| ModelError::Io { path: p.clone(), source })?;
    let mut model = read_layer_table_from(file, &p)?;
    model.name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(model)
}

/// Reads a layer table from any reader; `origin` names it in errors.
pub fn read_layer_table_from<R: std::io::Read>(input: R, origin: &str) -> Result<Model, ModelError> {
    let mut r = csv::ReaderBuilder::new().has_headers(true).from_reader(input);
    let row_err = |line: u64, message: String| ModelError::Row { path: origin.to_string(), line, message };
    let headers = r.headers().map_err(|e| row_err(1, e.to_string()))?.clone();
    let cols: Vec<&str> = headers.iter().collect();
    let with_winograd = cols.len() == LAYER_TABLE_COLUMNS.len() + 1 && cols.last() == Some(&LAYER_TABLE_WINOGRAD);
    if cols[..cols.len() - usize::from(with_winograd)] != *LAYER_TABLE_COLUMNS {
        return Err(row_err(
            1,
            format!(
                "header must be `{}` (optionally followed by `,{LAYER_TABLE_WINOGRAD}`), found `{}`",
                LAYER_TABLE_COLUMNS.join(","),
                cols.join(",")
            ),
        ));
    }
    let mut layers: Vec<Layer> = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| row_err(e.position().map_or(0, |p| p.line()), e.to_string()))?;
        let line = rec.position().map_or(0, |p| p.line());
        let field = |i: usize| rec.get(i).unwrap_or("").trim();
        let num = |i: usize| -> Result<u64, ModelError> {
            field(i).parse::<u64>().map_err(|_| {
                row_err(line, format!("column `{}`: `{}` is not a whole number", LAYER_TABLE_COLUMNS[i], field(i)))
            })
        };
        let name = field(0).to_string();
        if name.is_empty() {
            return Err(row_err(line, "column `layer` is empty".into()));
        }
        let kind = LayerKind::parse(field(1)).ok_or_else(|| {
            row_err(
                line,
                format!(
                    "column `kind`: `{}` is not a layer kind (conv, dense, pool, embedding, attention, feed-forward, norm, other)",
                    field(1)
                ),
            )
        })?;
        let macs = num(2)?;
        let forward_flops: f64 = field(3)
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| row_err(line, format!("column `forward_flops`: `{}` is not a number >= 0", field(3))))?;
        let activation_bytes = Bytes(num(4)?);
        let winograd = match (with_winograd, field(8)) {
            (false, _) | (true, "" | "false") => false,
            (true, "true") => true,
            (true, other) => {
                return Err(row_err(
                    line,
                    format!("column `{LAYER_TABLE_WINOGRAD}`: `{other}` is not true, false or empty"),
                ));
            }
        };
        let same_layer = layers.last().is_some_and(|l| l.name == name);
        if !same_layer {
            if layers.iter().any(|l| l.name == name) {
                return Err(row_err(line, format!("rows of layer `{name}` are not consecutive")));
            }
            layers.push(Layer { name, kind, variables: vec![], macs, forward_flops, activation_bytes, winograd });
        }
        let var = field(5);
        if !var.is_empty() {
            let shape: Vec<u64> = field(6)
                .split('x')
                .map(|d| d.trim().parse::<u64>())
                .collect::<Result<_, _>>()
                .map_err(|_| row_err(line, format!("column `shape`: `{}` is not like `3x3x64x128`", field(6))))?;
            let v = Variable::new(var.to_string(), shape);
            if !field(7).is_empty() && num(7)? != v.bytes.0 {
                return Err(row_err(
                    line,
                    format!("column `bytes`: {} does not match shape {} x 4 bytes = {}", field(7), field(6), v.bytes.0),
                ));
            }
            layers.last_mut().expect("a layer was pushed above").variables.push(v);
        }
    }
    if layers.is_empty() {
        return Err(row_err(1, "the layer table has no rows".into()));
    }
    Ok(Model {
        name: String::new(),
        sample: "user-defined sample".into(),
        source: format!("layer table {origin}"),
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts `actual` is within 2% of `published`.
    fn within_2pct(what: &str, actual: f64, published: f64) {
        let rel = (actual - published).abs() / published;
        assert!(rel <= 0.02, "{what}: computed {actual}, published {published} ({:.2}% off)", rel * 100.0);
    }

    #[test]
    fn totals_match_published_figures() {
        let cases: &[(&str, f64, Option<f64>)] = &[
            ("inception-v3", 23.8e6, Some(5.7e9)),
            ("resnet-50", 25.56e6, Some(4.09e9)),
            ("resnet-101", 44.7e6, None),
            ("resnet-152", 60.4e6, None),
            ("vgg-16", 138.36e6, Some(15.47e9)),
            ("alexnet", 61.1e6, Some(0.714e9)),
            ("bert-base", 110e6, None),
            ("bert-large", 340e6, None),
            ("gpt-2", 1542e6, None),
        ];
        for &(name, params, macs) in cases {
            let m = builtin(name).unwrap();
            within_2pct(&format!("{name} params"), m.params() as f64, params);
            if let Some(macs) = macs {
                within_2pct(&format!("{name} MACs"), m.macs() as f64, macs);
            }
        }
    }

    #[test]
    fn exact_counts_of_reference_implementations() {
        // torchvision's documented exact parameter counts.
        assert_eq!(builtin("resnet-50").unwrap().params(), 25_557_032);
        assert_eq!(builtin("vgg-16").unwrap().params(), 138_357_544);
        assert_eq!(builtin("alexnet").unwrap().params(), 61_100_840);
        // Hugging Face bert-base-uncased: 109,482,240 parameters.
        assert_eq!(builtin("bert-base").unwrap().params(), 109_482_240);
        // TF-slim Inception-v3 without aux head: 94 convs x (weights, beta) + logits (weights, biases).
        assert_eq!(inception_v3().variable_count(), 190);
    }

    #[test]
    fn winograd_runs_only_3x3_stride_1_convolutions_4x_cheaper() {
        let vgg = vgg16();
        let conv = |name: &str| vgg.layers.iter().find(|l| l.name == name).unwrap();
        let c = conv("features.3");
        assert!(c.winograd && c.kind == LayerKind::Conv, "{c:?}");
        let elementwise = c.forward_flops - 2.0 * c.macs as f64;
        assert_eq!(c.executed_forward_flops(true), 2.0 * c.macs as f64 / 4.0 + elementwise);
        assert_eq!(c.executed_forward_flops(false), c.forward_flops);
        // Dense layers, pools and strided or larger kernels keep their count.
        for l in vgg.layers.iter().filter(|l| l.kind != LayerKind::Conv) {
            assert!(!l.winograd && l.executed_forward_flops(true) == l.forward_flops, "{}", l.name);
        }
        let alexnet = alexnet();
        assert!(!alexnet.layers[0].winograd, "11x11 stride 4");
        let resnet = builtin("resnet-50").unwrap();
        assert!(!resnet.layers.iter().any(|l| l.winograd && l.variables[0].shape[..2] != [3, 3]));
        // VGG-16 is nearly all 3x3 convolutions: a quarter of its FLOPs and a bit more.
        let ratio = vgg.executed_forward_flops(true) / vgg.forward_flops();
        assert!((0.25..0.27).contains(&ratio), "{ratio}");
    }

    #[test]
    fn a_layer_table_may_mark_winograd_layers_and_refuses_other_values() {
        let head = "layer,kind,macs,forward_flops,activation_bytes,variable,shape,bytes,winograd\n";
        let m = read_layer_table_from(
            format!("{head}c,conv,10,20,4,c.w,3x3x1x1,36,true\nd,dense,1,2,4,,,,\n").as_bytes(),
            "t.csv",
        )
        .unwrap();
        assert!(m.layers[0].winograd && !m.layers[1].winograd);
        assert_eq!(m.layers[0].executed_forward_flops(true), 5.0);
        let err = read_layer_table_from(format!("{head}c,conv,10,20,4,c.w,3x3x1x1,36,yes\n").as_bytes(), "t.csv")
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.csv") && err.contains("t.csv:2") && err.contains("`winograd`: `yes`"), "{err}");
        // The eight columns alone still read, without Winograd.
        let plain =
            "layer,kind,macs,forward_flops,activation_bytes,variable,shape,bytes\nc,conv,10,20,4,c.w,3x3x1x1,36\n";
        assert!(!read_layer_table_from(plain.as_bytes(), "t.csv").unwrap().layers[0].winograd);
    }

    #[test]
    fn layer_table_round_trips() {
        for name in BUILTIN {
            let m = builtin(name).unwrap();
            let mut buf = Vec::new();
            write_layer_table(&m, &mut buf).unwrap();
            let back = read_layer_table_from(buf.as_slice(), "mem").unwrap();
            assert_eq!(back.layers, m.layers, "{name}");
        }
    }

    #[test]
    fn layer_table_errors_name_the_line_and_column() {
        let csv = "layer,kind,macs,forward_flops,activation_bytes,variable,shape,bytes\n\
                   a,conv,10,20,4,a.w,3x3,36\n\
                   b,warp,10,20,4,,,\n";
        let e = read_layer_table_from(csv.as_bytes(), "m.csv").unwrap_err().to_string();
        assert!(e.starts_with("m.csv:3:") && e.contains("`warp`"), "{e}");
        let csv = "layer,kind,macs,forward_flops,activation_bytes,variable,shape,bytes\na,conv,10,20,4,a.w,3x3,35\n";
        let e = read_layer_table_from(csv.as_bytes(), "m.csv").unwrap_err().to_string();
        assert!(e.contains("does not match"), "{e}");
    }
}
