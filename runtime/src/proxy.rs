//! The proxy model: the scenario's layers as real GEMMs, scaled down to fit one machine.
//!
//! Each layer with variables becomes a dense layer `Y = X W (+ extras)` whose weight `W` is the
//! layer's first (largest) variable reshaped to `k x n`, and whose other variables (biases,
//! batch-norm betas) are added to the output columns. A convolution maps onto its im2col GEMM
//! the same way (M = rows, K, N), so a layer keeps its parameter count and its FLOPs: `rows`
//! per sample is chosen so that `2 x rows x k x n` matches the layer's forward FLOPs.
//!
//! Training signal: every layer regresses, on synthetic inputs, onto a fixed random teacher
//! `T = X W*` (mean squared error). The loss is the sum over layers; it really falls under SGD.
//! Layers are independent, which keeps the gradient of each exact and local while preserving
//! what matters for the system: the order of compute, which variables each layer's backward
//! produces, their sizes and the FLOPs.
//!
//! The proxy as built is written back as a layer table ([`Proxy::model`]), so the simulator
//! can be run on exactly what was replayed.

use ndarray::{Array2, ArrayView2, Axis};
use topolab_core::models::{Layer, LayerKind, Model, Variable};
use topolab_core::scenario::Scenario;
use topolab_core::units::Bytes;

/// SplitMix64 (deterministic, keyed).
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A stream of standard normal deviates.
struct Normal(u64);

impl Normal {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(1);
        let u1 = ((splitmix(self.0) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let u2 = ((splitmix(self.0 ^ 0xD1B5_4A32_D192_ED03) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
}

/// One proxy layer.
#[derive(Debug, Clone)]
pub struct ProxyLayer {
    /// Name (the scenario layer's).
    pub name: String,
    /// Kind (the scenario layer's).
    pub kind: LayerKind,
    /// GEMM inner dimension (rows of W); 0 for a layer without variables.
    pub k: usize,
    /// GEMM output dimension (columns of W).
    pub n: usize,
    /// GEMM rows per sample.
    pub rows: usize,
    /// Variables: names and element counts; the first is W (k x n).
    pub vars: Vec<(String, Vec<u64>)>,
}

impl ProxyLayer {
    /// Multiply-adds per sample.
    pub fn macs(&self) -> u64 {
        (self.rows * self.k * self.n) as u64
    }
}

/// The proxy model of a scenario.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// Layers in forward order.
    pub layers: Vec<ProxyLayer>,
    /// Samples per step.
    pub batch: usize,
    /// Name of the model it stands for.
    pub model_name: String,
}

impl Proxy {
    /// Builds the proxy of `s` with parameters scaled by `params` and FLOPs by `flops`.
    pub fn new(s: &Scenario, params: f64, flops: f64) -> Proxy {
        let mut layers = Vec::new();
        for l in &s.model.layers {
            if l.variables.is_empty() {
                layers.push(ProxyLayer { name: l.name.clone(), kind: l.kind, k: 0, n: 0, rows: 0, vars: vec![] });
                continue;
            }
            let scaled = |v: &Variable| ((v.params() as f64 * params).round() as u64).max(1);
            let first = scaled(&l.variables[0]);
            let n = ((first as f64).sqrt().round() as u64).clamp(1, 256);
            let k = first.div_ceil(n);
            let target = l.forward_flops * flops;
            let rows = ((target / (2.0 * (k * n) as f64)).round() as usize).max(1);
            let mut vars = vec![(l.variables[0].name.clone(), vec![k, n])];
            for v in &l.variables[1..] {
                vars.push((v.name.clone(), vec![scaled(v)]));
            }
            layers.push(ProxyLayer { name: l.name.clone(), kind: l.kind, k: k as usize, n: n as usize, rows, vars });
        }
        Proxy { layers, batch: s.spec.batch as usize, model_name: s.model.name.clone() }
    }

    /// The proxy described by an effective model (a layer table this module wrote): shapes
    /// and rows are taken as they are.
    pub fn from_effective(s: &Scenario) -> Proxy {
        let layers = s
            .model
            .layers
            .iter()
            .map(|l| {
                let (k, n) = match l.variables.first().map(|v| v.shape.as_slice()) {
                    Some([k, n]) => (*k as usize, *n as usize),
                    Some([k]) => (*k as usize, 1),
                    _ => (0, 0),
                };
                let rows = (l.macs as usize).checked_div(k * n).unwrap_or(0);
                let vars = l.variables.iter().map(|v| (v.name.clone(), v.shape.clone())).collect();
                ProxyLayer { name: l.name.clone(), kind: l.kind, k, n, rows, vars }
            })
            .collect();
        Proxy { layers, batch: s.spec.batch as usize, model_name: s.model.name.clone() }
    }

    /// The proxy as a model (layer table): what the replay really computes and moves.
    pub fn model(&self) -> Model {
        Model {
            name: format!("{}-proxy", self.model_name),
            sample: "proxy sample".into(),
            source: format!("topolab replay proxy of {}", self.model_name),
            layers: self
                .layers
                .iter()
                .map(|l| Layer {
                    name: l.name.clone(),
                    kind: l.kind,
                    variables: l
                        .vars
                        .iter()
                        .map(|(name, shape)| Variable {
                            name: name.clone(),
                            shape: shape.clone(),
                            bytes: Bytes(shape.iter().product::<u64>() * 4),
                        })
                        .collect(),
                    macs: l.macs(),
                    forward_flops: (2 * l.macs()) as f64,
                    activation_bytes: Bytes((l.rows * l.n * 4) as u64),
                    winograd: false,
                })
                .collect(),
        }
    }

    /// Element counts of every variable in creation order.
    pub fn var_sizes(&self) -> Vec<usize> {
        self.layers.iter().flat_map(|l| l.vars.iter().map(|(_, s)| s.iter().product::<u64>() as usize)).collect()
    }

    /// Index of each layer's first variable in creation order.
    pub fn var_offsets(&self) -> Vec<usize> {
        self.layers
            .iter()
            .scan(0usize, |acc, l| {
                let o = *acc;
                *acc += l.vars.len();
                Some(o)
            })
            .collect()
    }

    /// Initial parameters (deterministic in `seed`), per variable in creation order.
    pub fn init(&self, seed: u64) -> Vec<Vec<f32>> {
        let mut out = Vec::new();
        for (li, l) in self.layers.iter().enumerate() {
            for (vi, (_, shape)) in l.vars.iter().enumerate() {
                let len: u64 = shape.iter().product();
                let mut g = Normal(splitmix(seed ^ ((li as u64) << 20) ^ vi as u64));
                let std = if vi == 0 { 1.0 / (l.k as f32).sqrt() } else { 0.0 };
                out.push((0..len).map(|_| g.next() * std).collect());
            }
        }
        out
    }

    /// Bytes of working memory one worker needs (inputs, teacher outputs, activations).
    pub fn worker_memory(&self) -> u64 {
        let m = self.batch as u64;
        self.layers
            .iter()
            .map(|l| (l.rows as u64) * m * (2 * l.k as u64 + 3 * l.n as u64) * 4 + (l.k * l.n * 8) as u64)
            .sum()
    }
}

/// Synthetic data of one worker: per layer, two alternating input batches and their teacher
/// outputs.
pub struct Data {
    inputs: Vec<[Array2<f32>; 2]>,
    targets: Vec<[Array2<f32>; 2]>,
}

impl Data {
    /// Layer `layer`'s input batch and teacher outputs for `step` (row-major, `batch x rows`
    /// rows); empty for a layer without variables.
    pub fn batch(&self, layer: usize, step: u64) -> (&Array2<f32>, &Array2<f32>) {
        let which = (step % 2) as usize;
        (&self.inputs[layer][which], &self.targets[layer][which])
    }

    /// Data of `worker` (deterministic in `seed` and `worker`; the teacher depends on `seed` only).
    pub fn new(p: &Proxy, seed: u64, worker: u32) -> Data {
        let mut inputs = Vec::new();
        let mut targets = Vec::new();
        for (li, l) in p.layers.iter().enumerate() {
            if l.k == 0 {
                inputs.push([Array2::zeros((0, 0)), Array2::zeros((0, 0))]);
                targets.push([Array2::zeros((0, 0)), Array2::zeros((0, 0))]);
                continue;
            }
            let mut t = Normal(splitmix(seed ^ 0x7EAC ^ ((li as u64) << 24)));
            let std = 1.0 / (l.k as f32).sqrt();
            let teacher = Array2::from_shape_fn((l.k, l.n), |_| t.next());
            let m = p.batch * l.rows;
            // Inputs of unit row norm: keeps SGD stable whatever k and m are.
            let mk = |b: u64| {
                let mut g = Normal(splitmix(seed ^ (u64::from(worker) << 40) ^ ((li as u64) << 8) ^ b));
                Array2::from_shape_fn((m, l.k), |_| g.next() * std)
            };
            let x = [mk(0), mk(1)];
            let y = [x[0].dot(&teacher), x[1].dot(&teacher)];
            inputs.push(x);
            targets.push(y);
        }
        Data { inputs, targets }
    }
}

/// FLOP/s of a mid-sized f32 GEMM (256 x 256 x 256) on one core of this machine, measured for
/// about 50 ms.
pub fn gemm_rate() -> f64 {
    let a = Array2::<f32>::from_elem((256, 256), 0.5);
    let b = Array2::<f32>::from_elem((256, 256), 0.25);
    let _ = a.dot(&b);
    let start = std::time::Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < 0.05 {
        std::hint::black_box(a.dot(&b));
        n += 1;
    }
    n as f64 * 2.0 * 256f64.powi(3) / start.elapsed().as_secs_f64()
}

/// Memory traffic of an SGD update `w -= lr * g` over `values` floats on one core, B/s
/// (reads w and g, writes w: 12 bytes a value), measured for `time`.
pub fn apply_rate(values: usize, time: std::time::Duration) -> f64 {
    let mut w = vec![1.0f32; values];
    let g = vec![0.5f32; values];
    let start = std::time::Instant::now();
    let mut reps = 0u64;
    while start.elapsed() < time {
        for (a, b) in w.iter_mut().zip(&g) {
            *a -= 0.01 * b;
        }
        std::hint::black_box(&w);
        reps += 1;
    }
    reps as f64 * 12.0 * values as f64 / start.elapsed().as_secs_f64()
}

/// What the forward pass of a layer keeps for its backward pass.
pub struct Cache {
    y: Array2<f32>,
}

/// Number of columns of output that share extra-variable element `j mod s`.
pub fn share(n: usize, s: usize, j: usize) -> f32 {
    (n / s + usize::from(j % s < n % s)).max(1) as f32
}

/// What the extra variables add to each of `n` output columns: column `j` gets
/// `e[j mod s] / (columns sharing it)` of each extra `e` (as [`forward`] adds them).
pub fn bias_columns(n: usize, extras: &[&[f32]]) -> Vec<f32> {
    let mut b = vec![0.0f32; n];
    for extra in extras {
        let s = extra.len();
        for (j, v) in b.iter_mut().enumerate() {
            *v += extra[j % s] / share(n, s, j);
        }
    }
    b
}

/// The gradient of an extra variable of `s` elements from the column sums of `dY` (as
/// [`backward`] folds them).
pub fn fold_columns(colsum: &[f32], s: usize) -> Vec<f32> {
    let n = colsum.len();
    let mut g = vec![0.0f32; s];
    for (j, v) in colsum.iter().enumerate() {
        g[j % s] += v / share(n, s, j);
    }
    g
}

/// Forward pass of layer `li` for `step`; `params` are its variables (W first).
pub fn forward(l: &ProxyLayer, data: &Data, li: usize, step: u64, params: &[&[f32]]) -> Cache {
    if l.k == 0 {
        return Cache { y: Array2::zeros((0, 0)) };
    }
    let x = &data.inputs[li][(step % 2) as usize];
    let w = ArrayView2::from_shape((l.k, l.n), params[0]).expect("W has k x n elements");
    let mut y = x.dot(&w);
    // Extra variable e (length s) shifts column j by e[j mod s] / (columns sharing it), so
    // its gradient stays of the order of W's and one learning rate suits both.
    for extra in &params[1..] {
        let s = extra.len();
        for (j, mut col) in y.axis_iter_mut(Axis(1)).enumerate() {
            col += extra[j % s] / share(l.n, s, j);
        }
    }
    Cache { y }
}

/// Backward pass: returns (loss, gradients per variable). Also computes the gradient with
/// respect to the inputs, as a real backward pass does (2 x the forward FLOPs in all).
pub fn backward(
    l: &ProxyLayer,
    data: &Data,
    li: usize,
    step: u64,
    params: &[&[f32]],
    cache: Cache,
) -> (f32, Vec<Vec<f32>>) {
    if l.k == 0 {
        return (0.0, Vec::new());
    }
    let which = (step % 2) as usize;
    let x = &data.inputs[li][which];
    let t = &data.targets[li][which];
    let w = ArrayView2::from_shape((l.k, l.n), params[0]).expect("W has k x n elements");
    let m = x.nrows() as f32;
    let diff = cache.y - t;
    let loss = diff.iter().map(|d| d * d).sum::<f32>() / m;
    let dy = diff * (2.0 / m);
    let dw = x.t().dot(&dy);
    let dx = dy.dot(&w.t());
    std::hint::black_box(&dx);
    let mut grads = vec![dw.into_raw_vec_and_offset().0];
    let colsum = dy.sum_axis(Axis(0));
    for extra in &params[1..] {
        let s = extra.len();
        let mut g = vec![0.0f32; s];
        for (j, v) in colsum.iter().enumerate() {
            g[j % s] += v / share(l.n, s, j);
        }
        grads.push(g);
    }
    (loss, grads)
}

/// Forward then backward of one layer for `step`: (loss, gradients per variable).
pub fn layer_step(l: &ProxyLayer, data: &Data, li: usize, step: u64, params: &[&[f32]]) -> (f32, Vec<Vec<f32>>) {
    let cache = forward(l, data, li, step, params);
    backward(l, data, li, step, params, cache)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario() -> Scenario {
        Scenario::parse("batch = 8\n[model]\nname = \"alexnet\"\n", "t.toml", "t", None).unwrap()
    }

    #[test]
    fn proxy_keeps_scaled_params_and_flops_per_layer() {
        let s = scenario();
        let p = Proxy::new(&s, 0.01, 0.01);
        let m = p.model();
        // Parameters: each variable scaled by 0.01, W rounded up to k x n (< 1 row extra).
        let want = s.model.params() as f64 * 0.01;
        assert!((m.params() as f64 - want).abs() / want < 0.02, "{} vs {want}", m.params());
        // FLOPs: rows rounded to whole numbers, within 10% of the scaled total.
        let want =
            s.model.layers.iter().filter(|l| !l.variables.is_empty()).map(|l| l.forward_flops).sum::<f64>() * 0.01;
        assert!((m.forward_flops() - want).abs() / want < 0.1, "{} vs {want}", m.forward_flops());
        assert_eq!(m.variable_count(), s.model.variable_count());
    }

    #[test]
    fn sgd_on_the_proxy_lowers_the_loss() {
        let s = scenario();
        let p = Proxy::new(&s, 0.001, 0.0001);
        let data = Data::new(&p, 1, 0);
        let mut params = p.init(1);
        let mut losses = Vec::new();
        for step in 0..30 {
            let mut vi = 0;
            let mut total = 0.0;
            for (li, l) in p.layers.iter().enumerate() {
                let nv = l.vars.len();
                let views: Vec<&[f32]> = params[vi..vi + nv].iter().map(Vec::as_slice).collect();
                let (loss, grads) = layer_step(l, &data, li, step, &views);
                total += loss;
                for (j, g) in grads.into_iter().enumerate() {
                    for (w, d) in params[vi + j].iter_mut().zip(g) {
                        *w -= 0.2 * d;
                    }
                }
                vi += nv;
            }
            losses.push(total);
        }
        assert!(losses[29] < 0.5 * losses[0], "loss {} -> {}", losses[0], losses[29]);
    }
}
