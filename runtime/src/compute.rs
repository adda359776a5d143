//! The compute seam: a [`Backend`] runs the proxy model's layers (forward, backward, the SGD
//! apply) on some device; the proxy ([`crate::proxy`]) says what they are (shapes, data, the
//! fixed teacher, the loss). A worker drives a backend the same way whatever it is:
//!
//! 1. [`Backend::load`] a layer's variables once a pull has delivered them (the cuda backend
//!    copies them to the device);
//! 2. [`Backend::forward`] each layer in order;
//! 3. [`Backend::backward`] each layer in reverse order: the loss of the layer and its gradients
//!    in host memory, ready to push (the cuda backend reads them back through pinned buffers);
//! 4. without parameter servers, [`Backend::apply`] the last backward's gradients to the loaded
//!    variables and [`Backend::read`] them back (local training, checks).
//!
//! Contract: `backward(l, step)` follows `forward(l, step)` with the variables loaded in
//! between unchanged; each call returns when its work is done (the host can time it); errors
//! are [`ComputeError`]s, never panics.
//!
//! Backends: `cpu` ([`CpuBackend`], ndarray on one core) and `cuda` ([`crate::cuda`], cuBLAS
//! through cudarc, loaded at run time so that the same binary runs on machines without CUDA).

use topolab_core::scenario::{Backend as BackendKind, Precision};

use crate::proxy::{self, Cache, Data, Proxy};

/// Why a backend could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ComputeError {
    /// A CUDA library is missing from this machine.
    #[error("no {library} library on this machine ({searched}); the cuda backend needs the NVIDIA driver and CUDA 12 (cuBLAS{nvrtc})", nvrtc = if *library == "NVRTC" { ", NVRTC" } else { "" })]
    NoLibrary {
        /// Which library (driver, cuBLAS, NVRTC).
        library: &'static str,
        /// The names searched for.
        searched: String,
    },
    /// The driver sees no device with that ordinal.
    #[error("no CUDA device {requested}: the driver sees {count} device(s){hint}", hint = if *count == 0 { " (is a GPU attached and visible, e.g. CUDA_VISIBLE_DEVICES?)" } else { "" })]
    NoDevice {
        /// The ordinal asked for.
        requested: u32,
        /// Devices present.
        count: u32,
    },
    /// The device has too little free memory.
    #[error(
        "CUDA device {device} ({name}) has {free_mib} MiB free but the replay needs about {need_mib} MiB ({workers} worker(s) sharing it); lower runtime.scale"
    )]
    OutOfMemory {
        /// Ordinal.
        device: u32,
        /// Device name.
        name: String,
        /// Free memory, MiB.
        free_mib: u64,
        /// Memory needed, MiB.
        need_mib: u64,
        /// Workers that share the device.
        workers: u32,
    },
    /// The precision is not available on this device.
    #[error("{0}")]
    Unsupported(String),
    /// A call into the driver, cuBLAS or NVRTC failed.
    #[error("{what}: {detail}")]
    Device {
        /// What was being done.
        what: String,
        /// The library's error.
        detail: String,
    },
}

/// What a backend is running on (recorded in the run summary).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInfo {
    /// "cpu" or "cuda".
    pub backend: BackendKind,
    /// Device name (the CPU model, or the GPU's name as the driver gives it).
    pub name: String,
    /// CUDA ordinal (0 on the CPU).
    pub ordinal: u32,
    /// Device memory, bytes (0 when not applicable).
    pub memory: u64,
    /// Free device memory when probed, bytes.
    pub free: u64,
    /// Compute capability ("" on the CPU).
    pub compute_capability: String,
}

/// A compute backend for the proxy model. See the module documentation for the contract.
pub trait Backend {
    /// Sets layer `layer`'s variables (W first) to `params`.
    fn load(&mut self, layer: usize, params: &[&[f32]]) -> Result<(), ComputeError>;
    /// Forward pass of `layer` on `step`'s batch.
    fn forward(&mut self, layer: usize, step: u64) -> Result<(), ComputeError>;
    /// Backward pass of `layer`: its loss and its gradients per variable (host memory).
    fn backward(&mut self, layer: usize, step: u64) -> Result<(f32, Vec<Vec<f32>>), ComputeError>;
    /// SGD on the loaded variables of `layer`: `v -= lr x g` with the last backward's gradients.
    fn apply(&mut self, layer: usize, lr: f32) -> Result<(), ComputeError>;
    /// The loaded variables of `layer` (after any applies).
    fn read(&mut self, layer: usize) -> Result<Vec<Vec<f32>>, ComputeError>;
}

/// The CPU backend: ndarray GEMMs on the calling thread.
pub struct CpuBackend {
    proxy: Proxy,
    data: Data,
    params: Vec<Vec<Vec<f32>>>,
    caches: Vec<Option<Cache>>,
    grads: Vec<Vec<Vec<f32>>>,
}

impl CpuBackend {
    /// The backend of worker `worker` (its data deterministic in `seed` and `worker`).
    pub fn new(proxy: &Proxy, seed: u64, worker: u32) -> CpuBackend {
        let layers = proxy.layers.len();
        CpuBackend {
            data: Data::new(proxy, seed, worker),
            proxy: proxy.clone(),
            params: vec![Vec::new(); layers],
            caches: (0..layers).map(|_| None).collect(),
            grads: vec![Vec::new(); layers],
        }
    }
}

fn views(v: &[Vec<f32>]) -> Vec<&[f32]> {
    v.iter().map(Vec::as_slice).collect()
}

impl Backend for CpuBackend {
    fn load(&mut self, layer: usize, params: &[&[f32]]) -> Result<(), ComputeError> {
        let slot = &mut self.params[layer];
        if slot.len() == params.len() && slot.iter().zip(params).all(|(a, b)| a.len() == b.len()) {
            for (a, b) in slot.iter_mut().zip(params) {
                a.copy_from_slice(b);
            }
        } else {
            *slot = params.iter().map(|p| p.to_vec()).collect();
        }
        Ok(())
    }

    fn forward(&mut self, layer: usize, step: u64) -> Result<(), ComputeError> {
        let l = &self.proxy.layers[layer];
        self.caches[layer] = Some(proxy::forward(l, &self.data, layer, step, &views(&self.params[layer])));
        Ok(())
    }

    fn backward(&mut self, layer: usize, step: u64) -> Result<(f32, Vec<Vec<f32>>), ComputeError> {
        let l = &self.proxy.layers[layer];
        let cache = self.caches[layer].take().expect("backward follows forward (the Backend contract)");
        let (loss, grads) = proxy::backward(l, &self.data, layer, step, &views(&self.params[layer]), cache);
        self.grads[layer] = grads.clone();
        Ok((loss, grads))
    }

    fn apply(&mut self, layer: usize, lr: f32) -> Result<(), ComputeError> {
        for (v, g) in self.params[layer].iter_mut().zip(&self.grads[layer]) {
            for (w, d) in v.iter_mut().zip(g) {
                *w -= lr * d;
            }
        }
        Ok(())
    }

    fn read(&mut self, layer: usize) -> Result<Vec<Vec<f32>>, ComputeError> {
        Ok(self.params[layer].clone())
    }
}

/// Opens the backend `kind` for `worker` on CUDA device `device` at `precision`.
pub fn open(
    kind: BackendKind,
    proxy: &Proxy,
    seed: u64,
    worker: u32,
    device: u32,
    precision: Precision,
) -> Result<Box<dyn Backend>, ComputeError> {
    Ok(match kind {
        BackendKind::Cpu => Box::new(CpuBackend::new(proxy, seed, worker)),
        BackendKind::Cuda => Box::new(crate::cuda::CudaBackend::new(proxy, seed, worker, device, precision)?),
    })
}

/// Trains the proxy without parameter servers for `steps` steps on `backend` (SGD at `lr`):
/// the mean loss per step. Same seed, same curve on every backend, within rounding.
pub fn train_local(
    backend: &mut dyn Backend,
    proxy: &Proxy,
    seed: u64,
    steps: u64,
    lr: f32,
) -> Result<Vec<f32>, ComputeError> {
    let init = proxy.init(seed);
    let mut vi = 0;
    for (li, l) in proxy.layers.iter().enumerate() {
        let nv = l.vars.len();
        backend.load(li, &views(&init[vi..vi + nv]))?;
        vi += nv;
    }
    let mut losses = Vec::new();
    for step in 0..steps {
        for li in 0..proxy.layers.len() {
            backend.forward(li, step)?;
        }
        let mut total = 0.0;
        for li in (0..proxy.layers.len()).rev() {
            let (loss, _) = backend.backward(li, step)?;
            total += loss;
            backend.apply(li, lr)?;
        }
        losses.push(total);
    }
    Ok(losses)
}

#[cfg(test)]
mod tests {
    use super::*;
    use topolab_core::scenario::Scenario;

    fn proxy() -> Proxy {
        let s = Scenario::parse("batch = 8\n[model]\nname = \"alexnet\"\n", "t.toml", "t", None).unwrap();
        Proxy::new(&s, 0.001, 0.0001)
    }

    #[test]
    fn the_cpu_backend_computes_what_the_proxy_functions_do() {
        let p = proxy();
        let data = Data::new(&p, 3, 1);
        let params = p.init(3);
        let mut b = CpuBackend::new(&p, 3, 1);
        let mut vi = 0;
        for (li, l) in p.layers.iter().enumerate() {
            let nv = l.vars.len();
            let v = views(&params[vi..vi + nv]);
            b.load(li, &v).unwrap();
            b.forward(li, 5).unwrap();
            let got = b.backward(li, 5).unwrap();
            let want = proxy::layer_step(l, &data, li, 5, &v);
            assert_eq!(got, want, "layer {li}");
            vi += nv;
        }
    }

    #[test]
    fn local_training_lowers_the_loss_and_apply_moves_the_variables() {
        let p = proxy();
        let mut b = CpuBackend::new(&p, 1, 0);
        let losses = train_local(&mut b, &p, 1, 30, 0.2).unwrap();
        assert!(losses[29] < 0.5 * losses[0], "loss {} -> {}", losses[0], losses[29]);
        let li = p.layers.iter().position(|l| l.k > 0).unwrap();
        let vi: usize = p.layers[..li].iter().map(|l| l.vars.len()).sum();
        assert_ne!(b.read(li).unwrap()[0], p.init(1)[vi], "30 applies changed W");
    }

    #[test]
    fn the_agreement_check_s_proxy_learns_on_the_cpu() {
        // What the GPU test below expects of the cuda backend's curve.
        let p = crate::cuda::agreement_proxy();
        let mut b = CpuBackend::new(&p, crate::cuda::AGREEMENT_SEED, 0);
        let c = train_local(&mut b, &p, crate::cuda::AGREEMENT_SEED, 20, crate::cuda::AGREEMENT_LR).unwrap();
        assert!(c[19] < 0.7 * c[0], "{c:?}");
    }

    #[test]
    fn on_a_gpu_the_cuda_backend_trains_the_cpu_backend_s_loss_curve() {
        let Ok(info) = crate::cuda::probe(0) else {
            eprintln!("skipped: no CUDA device on this machine");
            return;
        };
        let tensor = info.compute_capability.split('.').next().and_then(|m| m.parse::<u32>().ok()).unwrap_or(0) >= 8;
        let precisions: &[Precision] =
            if tensor { &[Precision::Fp32, Precision::Tf32, Precision::Fp16] } else { &[Precision::Fp32] };
        for &p in precisions {
            let a = crate::cuda::agreement(0, p, 20).unwrap();
            let tol = crate::cuda::tolerance(a.precision);
            assert!(a.max_relative_difference <= tol, "{p:?} on {}: {a:?}", info.name);
            assert!(a.cuda[19] < 0.7 * a.cuda[0], "{p:?}: the loss falls on the GPU: {:?}", a.cuda);
        }
    }

    #[test]
    fn opening_the_cuda_backend_without_cuda_is_an_error_not_a_panic() {
        // CI has no NVIDIA driver: one clear error. (With a GPU, a backend.)
        let p = proxy();
        match open(BackendKind::Cuda, &p, 1, 0, 0, Precision::Fp32) {
            Ok(_) => eprintln!("a CUDA device is present: the no-driver path was not exercised here"),
            Err(e) => {
                let text = e.to_string();
                assert!(matches!(e, ComputeError::NoLibrary { .. } | ComputeError::NoDevice { .. }), "{text}");
                assert!(text.contains("CUDA") || text.contains("driver"), "{text}");
            }
        }
    }
}
