//! The cuda backend: the proxy model's layers as cuBLAS calls through cudarc, which loads the
//! driver, cuBLAS and NVRTC at run time (so the same binary builds and runs on machines
//! without CUDA; [`libraries`] checks for them first, since cudarc panics when one is absent).
//!
//! A layer runs exactly the kernels and copies of [`topolab_core::profile::proxy_layer_ops`],
//! in that order, which is also what the simulator times with a calibrated [`GpuFit`]:
//! - load: W to the device (and to BF16 with a small NVRTC kernel at precision fp16); the
//!   extras folded into one bias per output column on the host, then copied;
//! - forward: `Y = 1 bias^T` (a rank-1 FP32 GEMM) then `Y += X W` (GemmEx at the precision:
//!   FP32, TF32 tensor cores, or BF16 products with FP32 accumulation);
//! - backward: `D = Y - T` (axpy), the loss `D.D / m` (dot, read back), `dY = 2 D / m` (scal),
//!   `dW = X^T dY` and `dX = dY W^T` (GemmEx), the column sums of `dY` (gemv) for the extras,
//!   and the gradients read back through pinned host buffers.
//!
//! cuBLAS is column-major: a row-major `r x c` matrix is the column-major `c x r` one, so
//! `Y = X W` is computed as `Y^T = W^T X^T` with the buffers as they are.
//!
//! Several worker processes may open the same device: each has its own context, and the
//! driver time-slices them (the summary says so, and the effective scenario shares the GPU).

use std::ffi::c_void;
use std::sync::Arc;
use std::time::Instant;

use cudarc::cublas::sys as blas;
use cudarc::cublas::{CudaBlas, result as blas_result};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig, PinnedHostSlice,
    PushKernelArg,
};
use topolab_core::profile::{GemmPoint, GemmPrecision, GpuFit};
use topolab_core::scenario::{Backend as BackendKind, Precision};
use topolab_core::units::{BitRate, FlopRate, Time};

use crate::compute::{Backend, ComputeError, DeviceInfo};
use crate::proxy::{self, Data, Proxy};

fn dev<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> ComputeError {
    move |e| ComputeError::Device { what: what.into(), detail: e.to_string() }
}

/// Checks that the libraries the backend loads are on this machine: the driver and cuBLAS,
/// and NVRTC when `nvrtc` (BF16 conversion kernels).
pub fn libraries(nvrtc: bool) -> Result<(), ComputeError> {
    // SAFETY: each only tries to open the shared library by its usual names.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(ComputeError::NoLibrary { library: "NVIDIA driver", searched: "libcuda.so, libcuda.so.1".into() });
    }
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err(ComputeError::NoLibrary { library: "cuBLAS", searched: "libcublas.so, libcublas.so.12".into() });
    }
    if nvrtc && !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(ComputeError::NoLibrary { library: "NVRTC", searched: "libnvrtc.so, libnvrtc.so.12".into() });
    }
    Ok(())
}

/// Opens device `device`: its context, after checking the libraries and the ordinal.
fn context(device: u32, nvrtc: bool) -> Result<Arc<CudaContext>, ComputeError> {
    libraries(nvrtc)?;
    let count = match CudaContext::device_count() {
        Ok(n) => n.max(0) as u32,
        Err(e) if format!("{e:?}").contains("NO_DEVICE") => 0,
        Err(e) => return Err(dev("initialising the CUDA driver")(e)),
    };
    if device >= count {
        return Err(ComputeError::NoDevice { requested: device, count });
    }
    CudaContext::new(device as usize).map_err(dev("creating a CUDA context"))
}

/// What device `device` is, with its free memory now.
pub fn probe(device: u32) -> Result<DeviceInfo, ComputeError> {
    let ctx = context(device, false)?;
    info(&ctx, device)
}

fn info(ctx: &Arc<CudaContext>, device: u32) -> Result<DeviceInfo, ComputeError> {
    let (free, total) = ctx.mem_get_info().map_err(dev("reading device memory"))?;
    let (major, minor) = ctx.compute_capability().map_err(dev("reading the compute capability"))?;
    Ok(DeviceInfo {
        backend: BackendKind::Cuda,
        name: ctx.name().map_err(dev("reading the device name"))?,
        ordinal: device,
        memory: total as u64,
        free: free as u64,
        compute_capability: format!("{major}.{minor}"),
    })
}

/// Refuses a precision the device cannot run: TF32 and BF16 tensor cores need compute
/// capability 8.0 (Ampere) or later.
fn check_precision(info: &DeviceInfo, p: GemmPrecision) -> Result<(), ComputeError> {
    let major: u32 = info.compute_capability.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
    if p != GemmPrecision::Fp32 && major < 8 {
        return Err(ComputeError::Unsupported(format!(
            "the {} (compute capability {}) has no {} tensor cores (8.0, Ampere, and later); use precision = \"fp32\"",
            info.name,
            info.compute_capability,
            if p == GemmPrecision::Tf32 { "TF32" } else { "BF16" }
        )));
    }
    Ok(())
}

/// Device memory one worker's backend allocates, bytes.
pub fn worker_memory(p: &Proxy, precision: Precision) -> u64 {
    let half = GemmPrecision::of(precision) == GemmPrecision::Bf16;
    let mut max_m = 0u64;
    let mut total = 0u64;
    for l in p.layers.iter().filter(|l| l.k > 0) {
        let (m, k, n) = ((p.batch * l.rows) as u64, l.k as u64, l.n as u64);
        max_m = max_m.max(m);
        // x[2], t[2], y, dx, w, dw, bias, colsum (f32); BF16 copies of x[2], w, dY.
        let mut f = 2 * m * k + 2 * m * n + m * n + m * k + 2 * k * n + 2 * n;
        if half {
            f += (2 * m * k + k * n + m * n) / 2;
        }
        total += 4 * f;
    }
    // cuBLAS workspace and the context itself: a conservative allowance.
    const CONTEXT_BYTES: u64 = 512 << 20;
    total + 4 * max_m + CONTEXT_BYTES
}

/// Checks before any task starts that device `device` exists and holds `workers` backends.
pub fn preflight(device: u32, precision: Precision, p: &Proxy, workers: u32) -> Result<DeviceInfo, ComputeError> {
    let gp = GemmPrecision::of(precision);
    let ctx = context(device, gp == GemmPrecision::Bf16)?;
    let i = info(&ctx, device)?;
    check_precision(&i, gp)?;
    let need = worker_memory(p, precision) * u64::from(workers);
    if need > i.free {
        return Err(ComputeError::OutOfMemory {
            device,
            name: i.name.clone(),
            free_mib: i.free >> 20,
            need_mib: need.div_ceil(1 << 20),
            workers,
        });
    }
    Ok(i)
}

/// Round to nearest even from FP32 to BF16 (the upper 16 bits), no headers needed.
const CONVERT_SRC: &str = r#"
extern "C" __global__ void f32_to_bf16(const float* src, unsigned short* dst, unsigned int n) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        unsigned int u = __float_as_uint(src[i]);
        u += 0x7FFFu + ((u >> 16) & 1u);
        dst[i] = (unsigned short)(u >> 16);
    }
}
"#;

/// cuBLAS, a stream, and the conversion kernel: what every user of the device needs.
struct Device {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    convert: Option<CudaFunction>,
}

impl Device {
    fn open(device: u32, precision: GemmPrecision) -> Result<Device, ComputeError> {
        let ctx = context(device, precision == GemmPrecision::Bf16)?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(dev("creating a cuBLAS handle"))?;
        let convert = if precision == GemmPrecision::Bf16 {
            let ptx = cudarc::nvrtc::compile_ptx(CONVERT_SRC).map_err(dev("compiling the BF16 kernel with NVRTC"))?;
            let module = ctx.load_module(ptx).map_err(dev("loading the BF16 kernel"))?;
            Some(module.load_function("f32_to_bf16").map_err(dev("loading the BF16 kernel"))?)
        } else {
            None
        };
        Ok(Device { ctx, stream, blas, convert })
    }

    fn to_bf16(&self, src: &CudaSlice<f32>, dst: &mut CudaSlice<u16>) -> Result<(), ComputeError> {
        let f = self.convert.as_ref().expect("the BF16 kernel is loaded at precision fp16");
        let n = src.len() as u32;
        let mut b = self.stream.launch_builder(f);
        b.arg(src);
        b.arg(dst);
        b.arg(&n);
        // SAFETY: the kernel reads n f32 and writes n u16, the lengths of both buffers.
        unsafe { b.launch(LaunchConfig::for_num_elems(n)) }.map(|_| ()).map_err(dev("converting to BF16"))
    }

    /// Column-major `C (m x n) = alpha op(A) op(B) + beta C` on raw device pointers, inputs of
    /// `p`'s type, FP32 output.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        &self,
        p: GemmPrecision,
        (ta, tb): (bool, bool),
        (m, n, k): (usize, usize, usize),
        a: u64,
        lda: usize,
        b: u64,
        ldb: usize,
        beta: f32,
        c: u64,
        ldc: usize,
    ) -> Result<(), ComputeError> {
        use blas::cublasComputeType_t as ct;
        use blas::cublasOperation_t as op;
        use blas::cudaDataType_t as dt;
        let (ty, compute) = match p {
            GemmPrecision::Fp32 => (dt::CUDA_R_32F, ct::CUBLAS_COMPUTE_32F),
            GemmPrecision::Tf32 => (dt::CUDA_R_32F, ct::CUBLAS_COMPUTE_32F_FAST_TF32),
            GemmPrecision::Bf16 => (dt::CUDA_R_16BF, ct::CUBLAS_COMPUTE_32F),
        };
        let o = |t: bool| if t { op::CUBLAS_OP_T } else { op::CUBLAS_OP_N };
        let alpha = 1.0f32;
        // SAFETY: the caller passes device pointers of buffers of the sizes the dimensions imply.
        unsafe {
            blas_result::gemm_ex(
                *self.blas.handle(),
                o(ta),
                o(tb),
                m as i32,
                n as i32,
                k as i32,
                (&alpha as *const f32).cast::<c_void>(),
                a as *const c_void,
                ty,
                lda as i32,
                b as *const c_void,
                ty,
                ldb as i32,
                (&beta as *const f32).cast::<c_void>(),
                c as *mut c_void,
                dt::CUDA_R_32F,
                ldc as i32,
                compute,
                blas::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(dev("cublasGemmEx"))
    }

    fn axpy(&self, n: usize, alpha: f32, x: &CudaSlice<f32>, y: &mut CudaSlice<f32>) -> Result<(), ComputeError> {
        let (xp, _gx) = x.device_ptr(&self.stream);
        let (yp, _gy) = y.device_ptr_mut(&self.stream);
        // SAFETY: both buffers hold at least n floats.
        unsafe { blas::cublasSaxpy_v2(*self.blas.handle(), n as i32, &alpha, xp as *const f32, 1, yp as *mut f32, 1) }
            .result()
            .map_err(dev("cublasSaxpy"))
    }

    fn dot(&self, n: usize, x: &CudaSlice<f32>) -> Result<f32, ComputeError> {
        let (xp, _gx) = x.device_ptr(&self.stream);
        let mut out = 0.0f32;
        // SAFETY: x holds n floats; the result goes to host memory (the default pointer mode),
        // so the call returns once it is computed.
        unsafe {
            blas::cublasSdot_v2(*self.blas.handle(), n as i32, xp as *const f32, 1, xp as *const f32, 1, &mut out)
        }
        .result()
        .map_err(dev("cublasSdot"))?;
        Ok(out)
    }

    fn scal(&self, n: usize, alpha: f32, x: &mut CudaSlice<f32>) -> Result<(), ComputeError> {
        let (xp, _gx) = x.device_ptr_mut(&self.stream);
        // SAFETY: x holds n floats.
        unsafe { blas::cublasSscal_v2(*self.blas.handle(), n as i32, &alpha, xp as *mut f32, 1) }
            .result()
            .map_err(dev("cublasSscal"))
    }

    fn sync(&self) -> Result<(), ComputeError> {
        self.stream.synchronize().map_err(dev("waiting for the stream"))
    }
}

/// One layer's device buffers.
struct LayerBuffers {
    m: usize,
    k: usize,
    n: usize,
    x: [CudaSlice<f32>; 2],
    t: [CudaSlice<f32>; 2],
    x16: Option<[CudaSlice<u16>; 2]>,
    w: CudaSlice<f32>,
    w16: Option<CudaSlice<u16>>,
    y: CudaSlice<f32>,
    dy16: Option<CudaSlice<u16>>,
    dx: CudaSlice<f32>,
    dw: CudaSlice<f32>,
    bias: CudaSlice<f32>,
    colsum: CudaSlice<f32>,
    pinned_dw: PinnedHostSlice<f32>,
    pinned_colsum: PinnedHostSlice<f32>,
    /// The extra variables (host: a few hundred floats each) and their last gradients.
    extras: Vec<Vec<f32>>,
    extra_grads: Vec<Vec<f32>>,
}

/// A GEMM operand in the precision's input type: its BF16 copy where there is one (fields, not
/// the whole layer, so that the output buffers can be borrowed mutably beside it).
fn operand<'a>(
    full: &'a CudaSlice<f32>,
    half: Option<&'a CudaSlice<u16>>,
    s: &'a CudaStream,
) -> (u64, cudarc::driver::SyncOnDrop<'a>) {
    match half {
        Some(h) => h.device_ptr(s),
        None => full.device_ptr(s),
    }
}

/// The cuda backend of one worker.
pub struct CudaBackend {
    device: Device,
    precision: GemmPrecision,
    ones: CudaSlice<f32>,
    layers: Vec<Option<LayerBuffers>>,
    info: DeviceInfo,
}

impl CudaBackend {
    /// The backend of `worker` on device `device` (its data as the cpu backend's, copied once).
    pub fn new(
        p: &Proxy,
        seed: u64,
        worker: u32,
        device: u32,
        precision: Precision,
    ) -> Result<CudaBackend, ComputeError> {
        let gp = GemmPrecision::of(precision);
        let d = Device::open(device, gp)?;
        let info = info(&d.ctx, device)?;
        check_precision(&info, gp)?;
        let data = Data::new(p, seed, worker);
        let s = &d.stream;
        let max_m = p.layers.iter().map(|l| p.batch * l.rows).max().unwrap_or(1).max(1);
        let ones = s.clone_htod(&vec![1.0f32; max_m]).map_err(dev("copying to the device"))?;
        let mut layers = Vec::new();
        for (li, l) in p.layers.iter().enumerate() {
            if l.k == 0 {
                layers.push(None);
                continue;
            }
            let (m, k, n) = (p.batch * l.rows, l.k, l.n);
            let up = |a: &ndarray::Array2<f32>| {
                let v = a.as_standard_layout();
                s.clone_htod(v.as_slice().expect("standard layout")).map_err(dev("copying the data to the device"))
            };
            let (x0, t0) = data.batch(li, 0);
            let (x1, t1) = data.batch(li, 1);
            let x = [up(x0)?, up(x1)?];
            let t = [up(t0)?, up(t1)?];
            let zeros = |len: usize| s.alloc_zeros::<f32>(len).map_err(dev("allocating device memory"));
            let zeros16 = |len: usize| s.alloc_zeros::<u16>(len).map_err(dev("allocating device memory"));
            let x16 = match gp {
                GemmPrecision::Bf16 => {
                    let mut a = zeros16(m * k)?;
                    let mut b = zeros16(m * k)?;
                    d.to_bf16(&x[0], &mut a)?;
                    d.to_bf16(&x[1], &mut b)?;
                    Some([a, b])
                }
                _ => None,
            };
            let half = gp == GemmPrecision::Bf16;
            // Page-locked, cached (not write-combined: the host reads these).
            // SAFETY: pinned buffers are written by a device-to-host copy before they are read.
            let pinned = |len: usize| {
                unsafe { d.ctx.alloc_pinned_with_flags::<f32>(len, 0) }.map_err(dev("allocating pinned memory"))
            };
            layers.push(Some(LayerBuffers {
                m,
                k,
                n,
                x,
                t,
                x16,
                w: zeros(k * n)?,
                w16: if half { Some(zeros16(k * n)?) } else { None },
                y: zeros(m * n)?,
                dy16: if half { Some(zeros16(m * n)?) } else { None },
                dx: zeros(m * k)?,
                dw: zeros(k * n)?,
                bias: zeros(n)?,
                colsum: zeros(n)?,
                pinned_dw: pinned(k * n)?,
                pinned_colsum: pinned(n)?,
                extras: l.vars[1..].iter().map(|(_, sh)| vec![0.0; sh.iter().product::<u64>() as usize]).collect(),
                extra_grads: Vec::new(),
            }));
        }
        d.sync()?;
        Ok(CudaBackend { device: d, precision: gp, ones, layers, info })
    }

    /// The device this backend runs on.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// After W or the extras changed: W's BF16 copy and the bias columns.
    fn refresh(&mut self, layer: usize) -> Result<(), ComputeError> {
        let d = &self.device;
        let Some(l) = self.layers[layer].as_mut() else { return Ok(()) };
        if let Some(w16) = l.w16.as_mut() {
            d.to_bf16(&l.w, w16)?;
        }
        if !l.extras.is_empty() {
            let views: Vec<&[f32]> = l.extras.iter().map(Vec::as_slice).collect();
            let b = proxy::bias_columns(l.n, &views);
            d.stream.memcpy_htod(&b, &mut l.bias).map_err(dev("copying the bias to the device"))?;
        }
        Ok(())
    }
}

impl Backend for CudaBackend {
    fn load(&mut self, layer: usize, params: &[&[f32]]) -> Result<(), ComputeError> {
        let Some(l) = self.layers[layer].as_mut() else { return Ok(()) };
        self.device.stream.memcpy_htod(params[0], &mut l.w).map_err(dev("copying W to the device"))?;
        for (e, p) in l.extras.iter_mut().zip(&params[1..]) {
            e.copy_from_slice(p);
        }
        self.refresh(layer)
    }

    fn forward(&mut self, layer: usize, step: u64) -> Result<(), ComputeError> {
        let d = &self.device;
        let s = &d.stream;
        let Some(l) = self.layers[layer].as_mut() else { return Ok(()) };
        let which = (step % 2) as usize;
        let extras = !l.extras.is_empty();
        let (m, k, n) = (l.m, l.k, l.n);
        let (yp, _gy) = l.y.device_ptr_mut(s);
        if extras {
            // Y^T (n x m) = bias (n x 1) ones (1 x m).
            let (bp, _gb) = l.bias.device_ptr(s);
            let (op, _go) = self.ones.device_ptr(s);
            // SAFETY: bias holds n floats, ones at least m, Y m x n.
            unsafe { d.gemm(GemmPrecision::Fp32, (false, false), (n, m, 1), bp, n, op, 1, 0.0, yp, n)? };
        }
        let beta = if extras { 1.0 } else { 0.0 };
        let (wp, _gw) = operand(&l.w, l.w16.as_ref(), s);
        let (xp, _gx) = operand(&l.x[which], l.x16.as_ref().map(|x| &x[which]), s);
        // Y^T (n x m) += W^T (n x k) X^T (k x m).
        // SAFETY: W is k x n, X m x k, Y m x n (row-major), in the GEMM's input type.
        unsafe { d.gemm(self.precision, (false, false), (n, m, k), wp, n, xp, k, beta, yp, n)? };
        drop((_gw, _gx, _gy));
        d.sync()
    }

    fn backward(&mut self, layer: usize, step: u64) -> Result<(f32, Vec<Vec<f32>>), ComputeError> {
        let d = &self.device;
        let s = &d.stream;
        let Some(l) = self.layers[layer].as_mut() else { return Ok((0.0, Vec::new())) };
        let which = (step % 2) as usize;
        let (m, k, n) = (l.m, l.k, l.n);
        let mn = m * n;
        d.axpy(mn, -1.0, &l.t[which], &mut l.y)?;
        let loss = d.dot(mn, &l.y)? / m as f32;
        d.scal(mn, 2.0 / m as f32, &mut l.y)?;
        if let Some(dy16) = l.dy16.as_mut() {
            d.to_bf16(&l.y, dy16)?;
        }
        {
            let (dyp, _g1) = operand(&l.y, l.dy16.as_ref(), s);
            let (xp, _g2) = operand(&l.x[which], l.x16.as_ref().map(|x| &x[which]), s);
            let (wp, _g3) = operand(&l.w, l.w16.as_ref(), s);
            let (dwp, _g4) = l.dw.device_ptr_mut(s);
            let (dxp, _g5) = l.dx.device_ptr_mut(s);
            // dW^T (n x k) = dY^T (n x m) X (m x k).
            // SAFETY: dY is m x n, X m x k, dW k x n, W k x n, dX m x k (row-major).
            unsafe { d.gemm(self.precision, (false, true), (n, k, m), dyp, n, xp, k, 0.0, dwp, n)? };
            // dX^T (k x m) = W (k x n) dY^T (n x m).
            unsafe { d.gemm(self.precision, (true, false), (k, m, n), wp, n, dyp, n, 0.0, dxp, k)? };
        }
        let mut grads = Vec::with_capacity(1 + l.extras.len());
        if !l.extras.is_empty() {
            {
                let (dyp, _g1) = l.y.device_ptr(s);
                let (op, _g2) = self.ones.device_ptr(s);
                let (cp, _g3) = l.colsum.device_ptr_mut(s);
                let (one, zero) = (1.0f32, 0.0f32);
                // colsum (n) = dY^T (n x m) ones (m).
                // SAFETY: dY is m x n, ones at least m, colsum n floats.
                unsafe {
                    blas::cublasSgemv_v2(
                        *d.blas.handle(),
                        blas::cublasOperation_t::CUBLAS_OP_N,
                        n as i32,
                        m as i32,
                        &one,
                        dyp as *const f32,
                        n as i32,
                        op as *const f32,
                        1,
                        &zero,
                        cp as *mut f32,
                        1,
                    )
                }
                .result()
                .map_err(dev("cublasSgemv"))?;
            }
            s.memcpy_dtoh(&l.colsum, &mut l.pinned_colsum).map_err(dev("copying gradients to the host"))?;
        }
        s.memcpy_dtoh(&l.dw, &mut l.pinned_dw).map_err(dev("copying gradients to the host"))?;
        d.sync()?;
        grads.push(l.pinned_dw.as_slice().map_err(dev("reading pinned memory"))?.to_vec());
        if !l.extras.is_empty() {
            let colsum = l.pinned_colsum.as_slice().map_err(dev("reading pinned memory"))?.to_vec();
            l.extra_grads = l.extras.iter().map(|e| proxy::fold_columns(&colsum, e.len())).collect();
            grads.extend(l.extra_grads.iter().cloned());
        }
        Ok((loss, grads))
    }

    fn apply(&mut self, layer: usize, lr: f32) -> Result<(), ComputeError> {
        let d = &self.device;
        let Some(l) = self.layers[layer].as_mut() else { return Ok(()) };
        d.axpy(l.k * l.n, -lr, &l.dw, &mut l.w)?;
        for (e, g) in l.extras.iter_mut().zip(&l.extra_grads) {
            for (w, dv) in e.iter_mut().zip(g) {
                *w -= lr * dv;
            }
        }
        self.refresh(layer)?;
        self.device.sync()
    }

    fn read(&mut self, layer: usize) -> Result<Vec<Vec<f32>>, ComputeError> {
        let Some(l) = self.layers[layer].as_ref() else { return Ok(Vec::new()) };
        let mut out = vec![self.device.stream.clone_dtoh(&l.w).map_err(dev("copying W to the host"))?];
        out.extend(l.extras.iter().cloned());
        Ok(out)
    }
}

/// What calibration measured besides the fit: large square GEMMs per precision.
#[derive(Debug, Clone, PartialEq)]
pub struct SquareGemm {
    /// Precision.
    pub precision: GemmPrecision,
    /// Side of the square.
    pub size: u64,
    /// Rate reached.
    pub rate: FlopRate,
}

/// The shape classes calibration measures: m (rows: batch x positions), k, n.
pub const GRID_M: [u64; 3] = [256, 4096, 65536];
/// Inner dimensions measured.
pub const GRID_K: [u64; 4] = [16, 128, 1024, 8192];
/// Output columns measured (the proxy keeps n <= 256; 1024 brackets full-size layers).
pub const GRID_N: [u64; 4] = [16, 64, 256, 1024];
/// Side of the square GEMMs quoted against the catalogue peak.
pub const SQUARE: u64 = 8192;

/// Times `f` with CUDA events: warm up once, then enough repetitions for about 20 ms.
fn time_gemm(d: &Device, mut f: impl FnMut() -> Result<(), ComputeError>) -> Result<f64, ComputeError> {
    let ev = |s: &Arc<CudaStream>| {
        s.record_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT)).map_err(dev("recording an event"))
    };
    f()?;
    d.sync()?;
    let a = ev(&d.stream)?;
    f()?;
    let b = ev(&d.stream)?;
    let once = f64::from(a.elapsed_ms(&b).map_err(dev("timing"))?).max(1e-3) / 1e3;
    let reps = ((0.02 / once).ceil() as usize).clamp(3, 200);
    let a = ev(&d.stream)?;
    for _ in 0..reps {
        f()?;
    }
    let b = ev(&d.stream)?;
    Ok(f64::from(a.elapsed_ms(&b).map_err(dev("timing"))?) / 1e3 / reps as f64)
}

/// Fills device memory with a fixed non-trivial pattern (GEMMs on zeros run unrealistically
/// cool on some parts).
fn fill<T: cudarc::driver::DeviceRepr + Copy>(
    d: &Device,
    buf: &mut cudarc::driver::CudaViewMut<'_, T>,
    value: T,
) -> Result<(), ComputeError> {
    const CHUNK: usize = 1 << 22;
    let host = vec![value; CHUNK.min(buf.len())];
    let mut at = 0;
    while at < buf.len() {
        let len = CHUNK.min(buf.len() - at);
        let mut view = buf.slice_mut(at..at + len);
        d.stream.memcpy_htod(&host[..len], &mut view).map_err(dev("filling device memory"))?;
        at += len;
    }
    Ok(())
}

/// BF16 of 0.5 (and FP32 0.5): keeps products finite at any k.
const BF16_HALF: u16 = 0x3F00;

/// Measures device `device`: GEMM rates per shape class and precision (those the device has),
/// copy bandwidths both ways, copy, launch and synchronisation costs, and a memory-bound
/// kernel's bandwidth; also large square GEMMs per precision.
pub fn calibrate(device: u32) -> Result<(GpuFit, Vec<SquareGemm>), ComputeError> {
    let d = Device::open(device, GemmPrecision::Fp32)?;
    let i = info(&d.ctx, device)?;
    let precisions: Vec<GemmPrecision> =
        GemmPrecision::ALL.into_iter().filter(|&p| check_precision(&i, p).is_ok()).collect();
    let s = d.stream.clone();
    let alloc = |len: usize| s.alloc_zeros::<f32>(len).map_err(dev("allocating device memory"));
    // The largest operands of the grid and of the square GEMMs, allocated once (f32; BF16
    // operands reuse the same memory as u16).
    let max_a = (GRID_M[GRID_M.len() - 1] * GRID_K[GRID_K.len() - 1]).max(SQUARE * SQUARE) as usize;
    let max_b = (GRID_K[GRID_K.len() - 1] * GRID_N[GRID_N.len() - 1]).max(SQUARE * SQUARE) as usize;
    let max_c = (GRID_M[GRID_M.len() - 1] * GRID_N[GRID_N.len() - 1]).max(SQUARE * SQUARE) as usize;
    let need = 4 * (max_a + max_b + max_c) as u64 + (256 << 20);
    if need > i.free {
        return Err(ComputeError::OutOfMemory {
            device,
            name: i.name.clone(),
            free_mib: i.free >> 20,
            need_mib: need >> 20,
            workers: 1,
        });
    }
    let mut a = alloc(max_a)?;
    let mut b = alloc(max_b)?;
    let mut c = alloc(max_c)?;
    fill(&d, &mut a.as_view_mut(), 0.5f32)?;
    fill(&d, &mut b.as_view_mut(), 0.5f32)?;
    // The same bytes as BF16 (two values per f32 slot): half the buffers.
    // SAFETY: u16 has no invalid bit patterns; the views cover the first halves' bytes.
    fill(&d, &mut unsafe { a.transmute_mut::<u16>(max_a) }.expect("half of the f32 buffer's bytes"), BF16_HALF)?;
    fill(&d, &mut unsafe { b.transmute_mut::<u16>(max_b) }.expect("half of the f32 buffer's bytes"), BF16_HALF)?;
    let (ap, _ga) = a.device_ptr(&s);
    let (bp, _gb) = b.device_ptr(&s);
    let (cp, _gc) = c.device_ptr_mut(&s);
    let mut gemm = Vec::new();
    let rate = |p: GemmPrecision, m: u64, k: u64, n: u64| -> Result<FlopRate, ComputeError> {
        // Row-major C (m x n) = A (m x k) B (k x n), as the proxy's forward GEMM.
        let secs = time_gemm(&d, || unsafe {
            // SAFETY: the buffers hold the largest operands of every shape measured.
            d.gemm(
                p,
                (false, false),
                (n as usize, m as usize, k as usize),
                bp,
                n as usize,
                ap,
                k as usize,
                0.0,
                cp,
                n as usize,
            )
        })?;
        Ok(FlopRate(2.0 * (m * k * n) as f64 / secs))
    };
    for &p in &precisions {
        for &m in &GRID_M {
            for &k in &GRID_K {
                for &n in &GRID_N {
                    gemm.push(GemmPoint { precision: p, m, k, n, rate: rate(p, m, k, n)? });
                }
            }
        }
    }
    let mut squares = Vec::new();
    for &p in &precisions {
        squares.push(SquareGemm { precision: p, size: SQUARE, rate: rate(p, SQUARE, SQUARE, SQUARE)? });
    }
    drop((_ga, _gb, _gc));
    drop((a, b, c));
    // Copies: 64 MiB each way (pageable to the device, pinned back), and a 4-byte round trip.
    const BIG: usize = 16 << 20;
    let host = vec![0.25f32; BIG];
    let mut big = alloc(BIG)?;
    // SAFETY: written by the device-to-host copies before it is read.
    let mut pinned =
        unsafe { d.ctx.alloc_pinned_with_flags::<f32>(BIG, 0) }.map_err(dev("allocating pinned memory"))?;
    let timed = |f: &mut dyn FnMut() -> Result<(), ComputeError>, reps: usize| -> Result<f64, ComputeError> {
        f()?;
        d.sync()?;
        let t = Instant::now();
        for _ in 0..reps {
            f()?;
        }
        d.sync()?;
        Ok(t.elapsed().as_secs_f64() / reps as f64)
    };
    let h2d = timed(&mut || s.memcpy_htod(&host, &mut big).map_err(dev("copying to the device")), 5)?;
    let d2h = timed(&mut || s.memcpy_dtoh(&big, &mut pinned).map_err(dev("copying to the host")), 5)?;
    let mut tiny = alloc(1)?;
    let mut one = [0.0f32];
    let copy_in = timed(&mut || s.memcpy_htod(&one[..], &mut tiny).map_err(dev("copying to the device")), 200)?;
    let copy_out = timed(
        &mut || {
            s.memcpy_dtoh(&tiny, &mut one[..]).map_err(dev("copying to the host"))?;
            d.sync()
        },
        200,
    )?;
    // Launches back to back (one axpy of one element each), then each followed by a wait.
    let x1 = alloc(1)?;
    let launch = timed(&mut || d.axpy(1, 1.0, &x1, &mut tiny), 1000)?;
    let launch_sync = timed(
        &mut || {
            d.axpy(1, 1.0, &x1, &mut tiny)?;
            d.sync()
        },
        500,
    )?;
    // A memory-bound kernel: axpy over 64 MiB reads 2 and writes 1 float per element.
    let big2 = alloc(BIG)?;
    let axpy = timed(&mut || d.axpy(BIG, 1.0, &big2, &mut big), 20)?;
    let bytes = (BIG * 4) as f64;
    let fit = GpuFit {
        device: i.name.clone(),
        compute_capability: i.compute_capability.clone(),
        gemm,
        h2d: BitRate::from_bytes_per_sec(bytes / h2d),
        d2h: BitRate::from_bytes_per_sec(bytes / d2h),
        copy_latency: Time::from_secs_f64((copy_in + copy_out) / 2.0),
        launch: Time::from_secs_f64(launch),
        sync: Time::from_secs_f64((launch_sync - launch).max(0.0)),
        elementwise: BitRate::from_bytes_per_sec(3.0 * bytes / axpy),
    };
    Ok((fit, squares))
}

/// Rates of 4096^3 GEMMs at the precisions device `device` runs: what an effective scenario
/// states as the replay GPU's figures (fp32, tf32, fp16 as BF16).
pub fn quick_rates(device: u32) -> Result<Vec<(GemmPrecision, FlopRate)>, ComputeError> {
    const SIDE: usize = 4096;
    let d = Device::open(device, GemmPrecision::Fp32)?;
    let i = info(&d.ctx, device)?;
    let s = d.stream.clone();
    let mut a = s.alloc_zeros::<f32>(SIDE * SIDE).map_err(dev("allocating device memory"))?;
    let mut b = s.alloc_zeros::<f32>(SIDE * SIDE).map_err(dev("allocating device memory"))?;
    let mut c = s.alloc_zeros::<f32>(SIDE * SIDE).map_err(dev("allocating device memory"))?;
    fill(&d, &mut a.as_view_mut(), 0.5f32)?;
    fill(&d, &mut b.as_view_mut(), 0.5f32)?;
    let (ap, _ga) = a.device_ptr(&s);
    let (bp, _gb) = b.device_ptr(&s);
    let (cp, _gc) = c.device_ptr_mut(&s);
    let mut out = Vec::new();
    for p in GemmPrecision::ALL.into_iter().filter(|&p| check_precision(&i, p).is_ok()) {
        // BF16 operands: the f32 buffers' bytes read as u16 (0.5 in FP32 is two BF16 values
        // 0 and 0.5: finite, and the rate does not depend on them).
        let secs = time_gemm(&d, || unsafe {
            // SAFETY: each buffer holds SIDE^2 elements of either type.
            d.gemm(p, (false, false), (SIDE, SIDE, SIDE), bp, SIDE, ap, SIDE, 0.0, cp, SIDE)
        })?;
        out.push((p, FlopRate(2.0 * (SIDE as f64).powi(3) / secs)));
    }
    Ok(out)
}

/// The cuda and cpu backends trained side by side on the same proxy and seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Agreement {
    /// Precision the cuda backend ran at.
    pub precision: GemmPrecision,
    /// Loss per step, cpu backend.
    pub cpu: Vec<f32>,
    /// Loss per step, cuda backend.
    pub cuda: Vec<f32>,
    /// Largest relative difference of the two curves.
    pub max_relative_difference: f64,
}

/// Relative tolerance of the loss curves at `p`: FP32 differs only in summation order; TF32
/// keeps 10 mantissa bits and BF16 7 in the products.
pub fn tolerance(p: GemmPrecision) -> f64 {
    match p {
        GemmPrecision::Fp32 => 1e-3,
        GemmPrecision::Tf32 => 2e-2,
        GemmPrecision::Bf16 => 5e-2,
    }
}

/// Seed and SGD step of the agreement check.
pub const AGREEMENT_SEED: u64 = 7;
/// SGD step of the agreement check.
pub const AGREEMENT_LR: f32 = 0.2;
const SEED: u64 = AGREEMENT_SEED;
const LR: f32 = AGREEMENT_LR;

/// The proxy the agreement check trains: AlexNet at batch 8, parameters x 0.01, FLOPs x 0.001.
pub fn agreement_proxy() -> Proxy {
    let s = topolab_core::scenario::Scenario::parse(
        "batch = 8\n[model]\nname = \"alexnet\"\n",
        "<agreement check>",
        "agreement",
        None,
    )
    .expect("the built-in check scenario is valid");
    Proxy::new(&s, 0.01, 0.001)
}

/// Trains a small AlexNet proxy (batch 8) for `steps` steps of local SGD on both backends and
/// compares the loss curves.
pub fn agreement(device: u32, precision: Precision, steps: u64) -> Result<Agreement, ComputeError> {
    let p = agreement_proxy();
    let mut cpu = crate::compute::CpuBackend::new(&p, SEED, 0);
    let cpu_curve = crate::compute::train_local(&mut cpu, &p, SEED, steps, LR)?;
    let mut gpu = CudaBackend::new(&p, SEED, 0, device, precision)?;
    let gpu_curve = crate::compute::train_local(&mut gpu, &p, SEED, steps, LR)?;
    let max = cpu_curve
        .iter()
        .zip(&gpu_curve)
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs() / f64::from(a.abs()).max(1e-12))
        .fold(0.0, f64::max);
    Ok(Agreement {
        precision: GemmPrecision::of(precision),
        cpu: cpu_curve,
        cuda: gpu_curve,
        max_relative_difference: max,
    })
}
