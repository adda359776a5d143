//! Calibration: micro-benchmarks of this machine through the runtime's own code paths, fitted
//! into a [`Profile`] the simulator uses.
//!
//! Hold-out protocol: everything here is a single-process or single-link measurement (GEMMs,
//! one TCP stream and its CPU cost, two raw TCP streams into one shaped link, one apply loop,
//! process start-up). No multi-worker or multi-PS training run is used for fitting, so
//! validation on such runs is a prediction, not a fit.

use std::time::{Duration, Instant};

use ndarray::Array2;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use topolab_core::profile::{Fitted, LinkFit, Machine, Measurement, Profile, share_ratio};
use topolab_core::units::{BitRate, Bytes, FlopRate, Time};

use crate::launcher::LauncherKind;
use crate::netns::{self, VirtualCluster};
use crate::wire::{self, Kind};

fn gemm(m: usize, k: usize, n: usize) -> f64 {
    gemm_for(m, k, n, Duration::from_millis(150))
}

/// FLOP/s of an `m x k` by `k x n` f32 GEMM on this thread, repeated for `window`.
fn gemm_for(m: usize, k: usize, n: usize, window: Duration) -> f64 {
    let a = Array2::<f32>::from_elem((m, k), 0.5);
    let b = Array2::<f32>::from_elem((k, n), 0.25);
    let _ = a.dot(&b);
    let start = Instant::now();
    let mut reps = 0u64;
    while start.elapsed() < window {
        std::hint::black_box(a.dot(&b));
        reps += 1;
    }
    reps as f64 * 2.0 * (m * k * n) as f64 / start.elapsed().as_secs_f64()
}

/// Pairs of windows [`parallel_efficiency`] measures (one alone, then all threads at once).
const EFFICIENCY_PAIRS: usize = 7;

/// Each core's GEMM rate (m x k x n) while `threads` threads run one at once, as a fraction of
/// one thread's rate alone: what the cores keep of their rates when a replay's processes all
/// compute (shared memory bandwidth, caches, clock). Measured as [`EFFICIENCY_PAIRS`] pairs
/// of 60 ms windows, alone then together, back to back (see [`efficiency_of_pairs`]). Returns
/// it, and the lowest and highest ratio of a pair (how steady the machine was meanwhile).
fn parallel_efficiency(threads: usize, m: usize, k: usize, n: usize) -> (f64, f64, f64) {
    let window = Duration::from_millis(60);
    let pairs: Vec<(f64, f64)> = (0..EFFICIENCY_PAIRS)
        .map(|_| {
            let alone = gemm_for(m, k, n, window);
            let start = std::sync::Barrier::new(threads);
            let rates: Vec<f64> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            gemm_for(m, k, n, window)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().expect("a GEMM thread")).collect()
            });
            (alone, rates.iter().sum::<f64>() / rates.len() as f64)
        })
        .collect();
    efficiency_of_pairs(&pairs)
}

/// The efficiency of (alone, together) rate pairs: the median of their ratios, in
/// [0.05, 1], with the lowest and the highest ratio. A short slow spell of the machine (another tenant of the host, a clock change)
/// spoils the pair it falls in, not the result. On a 2-core cloud machine one 150 ms window
/// each way read 0.97 in one calibration and 0.74 in the next, an hour apart; of eight pairs
/// measured back to back there, one read 0.68 and the median 0.96. (A slow spell longer than
/// the measurement still shows: calibrate when the machine is as it will be for the runs.)
fn efficiency_of_pairs(pairs: &[(f64, f64)]) -> (f64, f64, f64) {
    let ratios: Vec<f64> = pairs.iter().map(|&(alone, together)| together / alone).collect();
    let (lo, hi) = ratios.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    (median(ratios.into_iter()).clamp(0.05, 1.0), lo, hi)
}

/// What [`calibrate`] records (in the profile's raw measurements) after the cores' lowest and
/// highest pair of [`parallel_efficiency`].
const LOWEST_PAIR: &str = "of one alone: lowest pair";
const HIGHEST_PAIR: &str = "of one alone: highest pair";

/// The lowest and highest pair of the cores' efficiency that `p` was calibrated from (none
/// for one core, or a profile from elsewhere).
pub fn efficiency_spread(p: &Profile) -> Option<(f64, f64)> {
    let find = |suffix: &str| p.raw.iter().find(|m| m.what.ends_with(suffix)).map(|m| m.value);
    Some((find(LOWEST_PAIR)?, find(HIGHEST_PAIR)?))
}

/// The median of measurements (the mean of the middle two of an even count).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Streams `count` frames of `size` bytes to a listener bound at `addr` (port 0: any) and
/// returns the seconds the receiver took from the first frame to the last. With a cluster,
/// the receiver runs in host 1 and the sender in host 0.
/// Goodput of one TCP stream over loopback through the runtime's framing, bit/s: the "NIC" of
/// tasks that the local launcher runs (16 frames of 4 MiB, about 60 ms).
pub fn loopback_rate() -> Result<f64, String> {
    let frames = 16;
    let secs = stream("127.0.0.1:0".parse().expect("an address"), frames, 4 << 20, None)?;
    Ok((frames - 1) as f64 * (4 << 20) as f64 * 8.0 / secs.max(1e-9))
}

fn stream(
    addr: std::net::SocketAddr,
    count: usize,
    size: usize,
    cluster: Option<&VirtualCluster>,
) -> Result<f64, String> {
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        let server = s.spawn(move || -> Result<f64, String> {
            if let Some(c) = cluster {
                c.enter(1)?;
            }
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            rt.block_on(async {
                let l = TcpListener::bind(addr).await.map_err(|e| e.to_string())?;
                tx.send(l.local_addr().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
                let (mut conn, _) = l.accept().await.map_err(|e| e.to_string())?;
                let first = wire::read_frame(&mut conn, size as u32, Duration::from_secs(60))
                    .await
                    .map_err(|e| e.to_string())?;
                let start = Instant::now();
                drop(first);
                for _ in 1..count {
                    wire::read_frame(&mut conn, size as u32, Duration::from_secs(60))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(start.elapsed().as_secs_f64())
            })
        });
        let addr = rx.recv().map_err(|e| e.to_string())?;
        let client = s.spawn(move || -> Result<(), String> {
            if let Some(c) = cluster {
                c.enter(0)?;
            }
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut conn = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
                conn.set_nodelay(true).map_err(|e| e.to_string())?;
                let data = vec![1u8; size];
                for i in 0..count {
                    wire::write_frame(&mut conn, Kind::Push, i as u32, 0, &data).await.map_err(|e| e.to_string())?;
                }
                Ok(())
            })
        });
        client.join().map_err(|_| "client thread panicked".to_string())??;
        server.join().map_err(|_| "server thread panicked".to_string())?
    })
}

/// Two connections into host 1 of `c`, from hosts 0 and 2 (as two workers push into one PS),
/// each carrying `size` bytes in 64 KiB frames; the second starts `delay` after the first.
/// Returns when each finished at the receiver, seconds after the first started.
fn two_flows(
    c: &VirtualCluster,
    port: u16,
    size: usize,
    delay: Duration,
    warm: Option<(usize, Duration)>,
) -> Result<(f64, f64), String> {
    const FRAME: usize = 64 << 10;
    let frames = size.div_ceil(FRAME);
    let (warm_frames, pause) = warm.map_or((0, Duration::ZERO), |(bytes, pause)| (bytes.div_ceil(FRAME), pause));
    let addr: std::net::SocketAddr = format!("{}:{port}", c.addrs[1]).parse().map_err(|e| format!("{e}"))?;
    let t0 = std::sync::OnceLock::<Instant>::new();
    let barrier = &std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        let t0 = &t0;
        let server = s.spawn(move || -> Result<(f64, f64), String> {
            c.enter(1)?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            rt.block_on(async {
                let l = TcpListener::bind(addr).await.map_err(|e| e.to_string())?;
                tx.send(()).map_err(|e| e.to_string())?;
                let mut tasks = Vec::new();
                for _ in 0..2 {
                    let (mut conn, _) = l.accept().await.map_err(|e| e.to_string())?;
                    tasks.push(tokio::spawn(async move {
                        let mut id = 0;
                        for _ in 0..warm_frames + frames {
                            let f = wire::read_frame(&mut conn, FRAME as u32, Duration::from_secs(60))
                                .await
                                .map_err(|e| e.to_string())?;
                            id = f.var;
                        }
                        Ok::<(u32, Instant), String>((id, Instant::now()))
                    }));
                }
                let mut done = [0.0f64; 2];
                for t in tasks {
                    let (id, at) = t.await.map_err(|e| e.to_string())??;
                    let start = *t0.get().ok_or("the sender never started")?;
                    done[id as usize & 1] = at.duration_since(start).as_secs_f64();
                }
                Ok((done[0], done[1]))
            })
        });
        rx.recv().map_err(|e| e.to_string())?;
        // One sender per host (hosts 0 and 2), as two workers push into one PS.
        let clients: Vec<_> = (0..2u32)
            .map(|id| {
                s.spawn(move || -> Result<(), String> {
                    c.enter(if id == 0 { 0 } else { 2 })?;
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())?;
                    rt.block_on(async {
                        let mut conn = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
                        conn.set_nodelay(true).map_err(|e| e.to_string())?;
                        let data = vec![1u8; FRAME];
                        if warm_frames > 0 {
                            // Warm the connection up (its window grows), let the queue drain,
                            // and go on before an idle connection would restart slowly.
                            for _ in 0..warm_frames {
                                wire::write_frame(&mut conn, Kind::Push, id, 0, &data)
                                    .await
                                    .map_err(|e| e.to_string())?;
                            }
                            barrier.wait();
                            tokio::time::sleep(pause).await;
                        }
                        barrier.wait();
                        let _ = t0.set(Instant::now());
                        if id == 1 {
                            tokio::time::sleep(delay).await;
                        }
                        for _ in 0..frames {
                            wire::write_frame(&mut conn, Kind::Push, id, 0, &data).await.map_err(|e| e.to_string())?;
                        }
                        conn.shutdown().await.map_err(|e| e.to_string())
                    })
                })
            })
            .collect();
        for cl in clients {
            cl.join().map_err(|_| "client thread panicked".to_string())??;
        }
        server.join().map_err(|_| "server thread panicked".to_string())?
    })
}

/// What two flows into one shaped link showed (see [`probe_link`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LinkProbe {
    /// Line rate, bit/s.
    pub rate: f64,
    /// One stream's payload rate, bytes per second.
    pub goodput: f64,
    /// Bytes each flow carried.
    pub size: f64,
    /// `|ln rho|` of each trial with equal starts.
    pub equal: Vec<f64>,
    /// Per lateness of the second flow (s): `ln rho` of each trial.
    pub late: Vec<(f64, Vec<f64>)>,
    /// Bytes of each burst on warm connections.
    pub burst: f64,
    /// Lateness of the second burst (s).
    pub burst_late: f64,
    /// Where the first burst finished in each trial, between fair sharing (0) and first come,
    /// first served (1) ([`topolab_core::profile::fifo_position`]).
    pub bursts: Vec<f64>,
}

impl LinkProbe {
    /// Per lateness (s): the mean `ln rho` and its squared standard error.
    pub fn late_means(&self) -> Vec<(f64, f64, f64)> {
        self.late
            .iter()
            .map(|(d, v)| {
                let (mean, se2) = mean_and_se2(v);
                (*d, mean, se2)
            })
            .collect()
    }

    /// Mean position of the first burst and its squared standard error.
    pub fn burst_mean(&self) -> (f64, f64) {
        mean_and_se2(&self.bursts)
    }

    /// Log-normal sigma of shares: `E|ln rho| = 2 sigma / sqrt(pi)` for two equal starts.
    pub fn unfairness(&self) -> f64 {
        if self.equal.is_empty() {
            return 0.0;
        }
        self.equal.iter().sum::<f64>() / self.equal.len() as f64 * std::f64::consts::PI.sqrt() / 2.0
    }
}

/// Mean of `v` and the square of its standard error.
fn mean_and_se2(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var / n)
}

/// Two flows into one shaped link of `c`, repeatedly: with equal starts (how unequally TCP
/// shares), and with the second flow 0.2 and 0.5 of a lone transfer late (how much a head
/// start is worth while the newcomer ramps up its window).
fn probe_link(c: &VirtualCluster, rate: f64, goodput_bps: f64) -> Result<LinkProbe, String> {
    const TRIALS: usize = 24;
    let r = goodput_bps / 8.0;
    // About 150 ms of transfer per connection alone.
    let size = ((r * 0.15) as usize).max(256 << 10);
    let alone = size as f64 / r;
    let mut probe = LinkProbe {
        rate,
        goodput: r,
        size: size as f64,
        equal: Vec::new(),
        late: Vec::new(),
        burst: 0.0,
        burst_late: 0.0,
        bursts: Vec::new(),
    };
    let mut port = 5410;
    for _ in 0..TRIALS {
        let (a, b) = two_flows(c, port, size, Duration::ZERO, None)?;
        port += 1;
        probe.equal.push(share_ratio(r, size as f64, 0.0, a, b).ln().abs());
    }
    for late in [0.2, 0.5] {
        let d = late * alone;
        let mut logs = Vec::new();
        for _ in 0..TRIALS {
            let (a, b) = two_flows(c, port, size, Duration::from_secs_f64(d), None)?;
            port += 1;
            logs.push(share_ratio(r, size as f64, d, a, b).ln());
        }
        probe.late.push((d, logs));
    }
    // Bursts on warm connections, as training sends them: 20 ms of the link each (well inside
    // the 50 ms queue), the second a quarter of that late.
    let burst = ((r * 0.02) as usize).max(64 << 10);
    probe.burst = burst as f64;
    probe.burst_late = 0.25 * burst as f64 / r;
    let warm = (burst, Duration::from_secs_f64(2.0 * burst as f64 / r + 0.06));
    for _ in 0..TRIALS {
        let (a, _) = two_flows(c, port, burst, Duration::from_secs_f64(probe.burst_late), Some(warm))?;
        port += 1;
        probe.bursts.push(topolab_core::profile::fifo_position(r, burst as f64, probe.burst_late, a));
    }
    Ok(probe)
}

/// User-space work per payload byte of one 4 MiB message, ns, as the runtime does it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CopyCost {
    /// The whole path: the sender's `f32_bytes` and framing, the receiver's read into a
    /// fresh buffer, `bytes_f32`, and the copy into the variable.
    total: f64,
    /// The sender's encoding (`f32_bytes`): done before the message leaves.
    encode: f64,
    /// The receiver's decoding (`bytes_f32`) and copy into place: done once it has arrived.
    decode: f64,
}

/// Times the user-space path of a 4 MiB message, whole and in its parts (see [`CopyCost`]).
fn copy_cost() -> Result<CopyCost, String> {
    let values = vec![0.5f32; 1 << 20];
    let mut place = vec![0f32; values.len()];
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let bytes = (4 << 20) as f64;
    // ns per byte of `once`: the median of five 60 ms windows, after one warm-up.
    let per_byte = |once: &mut dyn FnMut() -> Result<(), String>| -> Result<f64, String> {
        once()?;
        let mut windows = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            let mut reps = 0u32;
            while start.elapsed() < Duration::from_millis(60) {
                once()?;
                reps += 1;
            }
            windows.push(start.elapsed().as_secs_f64() * 1e9 / (f64::from(reps) * bytes));
        }
        Ok(median(windows.into_iter()))
    };
    let total = per_byte(&mut || {
        let payload = wire::f32_bytes(&values);
        let mut buf: Vec<u8> = Vec::new();
        rt.block_on(wire::write_frame(&mut buf, Kind::Value, 0, 0, &payload)).map_err(|e| e.to_string())?;
        let f = rt
            .block_on(wire::read_frame(&mut buf.as_slice(), u32::MAX, Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let v = wire::bytes_f32(&f.payload).ok_or("odd payload")?;
        place.copy_from_slice(&v);
        std::hint::black_box(&mut place);
        Ok(())
    })?;
    let encode = per_byte(&mut || {
        std::hint::black_box(wire::f32_bytes(std::hint::black_box(&values)));
        Ok(())
    })?;
    let payload = wire::f32_bytes(&values);
    let decode = per_byte(&mut || {
        let v = wire::bytes_f32(std::hint::black_box(&payload)).ok_or("odd payload")?;
        place.copy_from_slice(&v);
        std::hint::black_box(&mut place);
        Ok(())
    })?;
    Ok(CopyCost { total, encode: encode.min(total), decode: decode.min(total - encode.min(total)) })
}

/// Times forward + backward of proxy layers and fits `extra = a x values + b` (ns) to the time
/// beyond `3 x 2 x rows x k x n / rate`; returns (a, b), both >= 0.
fn fit_layer_costs(rate: f64) -> (f64, f64) {
    use crate::proxy::{self, Data, Proxy, ProxyLayer};
    use topolab_core::models::LayerKind;
    // (rows, k, n): values = rows x n vary widely at similar or small FLOPs.
    let shapes = [(8, 8, 8), (64, 16, 16), (512, 16, 16), (4096, 8, 8), (256, 128, 128), (1024, 32, 64)];
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    // Each probe cycles through 32 layers of its shape with their own data, as a worker cycles
    // through a model's layers: caches are as cold as in a real step.
    const COPIES: usize = 32;
    for &(rows, k, n) in &shapes {
        let layer = ProxyLayer {
            name: "probe".into(),
            kind: LayerKind::Dense,
            k,
            n,
            rows,
            vars: vec![
                ("w".into(), vec![k as u64, n as u64]),
                ("b".into(), vec![n as u64]),
                ("c".into(), vec![n as u64]),
            ],
        };
        let p = Proxy { layers: vec![layer; COPIES], batch: 1, model_name: "probe".into() };
        let data = Data::new(&p, 1, 0);
        let params = p.init(1);
        let run = |step: u64| {
            for (li, l) in p.layers.iter().enumerate() {
                let views: Vec<&[f32]> = params[3 * li..3 * li + 3].iter().map(Vec::as_slice).collect();
                std::hint::black_box(proxy::layer_step(l, &data, li, step, &views));
            }
        };
        run(0);
        let start = Instant::now();
        let mut reps = 0u32;
        while start.elapsed() < Duration::from_millis(80) {
            run(u64::from(reps));
            reps += 1;
        }
        let per = start.elapsed().as_secs_f64() * 1e9 / f64::from(reps) / COPIES as f64;
        let gemm = 3.0 * 2.0 * (rows * k * n) as f64 / rate * 1e9;
        xs.push((rows * n) as f64);
        ys.push((per - gemm).max(0.0));
    }
    // Least squares for y = a x + b.
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let a = if sxx > 0.0 { (sxy / sxx).max(0.0) } else { 0.0 };
    let b = (my - a * mx).max(0.0);
    (a, b)
}

/// CPU seconds all cores have spent busy since boot (user, system, interrupts; /proc/stat).
fn cpu_busy_s() -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|t| {
            let l = t.lines().next()?.to_string();
            let v: Vec<f64> = l.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
            // user nice system idle iowait irq softirq steal ...
            Some(v.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, x)| x).sum::<f64>() / ticks)
        })
        .unwrap_or(0.0)
}

/// The CPU model, as /proc/cpuinfo names it.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn mem_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or_else(|| "unknown".into(), |kb| Bytes(kb * 1024).to_string())
}

/// UTC now as RFC 3339.
pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Runs the micro-benchmarks; `exe` is the topolab binary (for the start-up cost). Returns the
/// profile and the raw two-flow probes of each shaped link (empty for loopback), from which the
/// caller fits each link's ramp-up with the simulator's network.
pub fn calibrate(kind: LauncherKind, exe: &std::path::Path) -> Result<(Profile, Vec<LinkProbe>), String> {
    let mut raw = Vec::new();
    let mut m =
        |what: &str, value: f64, unit: &str| raw.push(Measurement { what: what.into(), value, unit: unit.into() });
    // Compute: GEMMs of three shape classes, one core.
    let shapes = [(64, 64, 64), (256, 256, 256), (1024, 256, 128)];
    let mut rates: Vec<f64> = shapes.iter().map(|&(a, b, c)| gemm(a, b, c)).collect();
    for (s, r) in shapes.iter().zip(&rates) {
        m(&format!("gemm {}x{}x{}", s.0, s.1, s.2), *r, "FLOP/s");
    }
    rates.sort_by(f64::total_cmp);
    let compute_rate = rates[1];
    // The same GEMMs on every core at once.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let efficiency = if cores > 1 {
        let (e, lo, hi) = parallel_efficiency(cores, 256, 256, 256);
        m(&format!("gemm 256x256x256 on each of {cores} cores at once, {LOWEST_PAIR}"), lo, "");
        m(&format!("gemm 256x256x256 on each of {cores} cores at once, {HIGHEST_PAIR}"), hi, "");
        e
    } else {
        1.0
    };
    m(
        &format!(
            "gemm 256x256x256 on each of {cores} cores at once, of one alone (median of {EFFICIENCY_PAIRS} pairs)"
        ),
        efficiency,
        "",
    );
    // Proxy layers of three shapes, forward + backward as a worker runs them: fit the
    // time not explained by the GEMM FLOPs as (per activation value) x values + (per call).
    let (per_value, per_call) = fit_layer_costs(compute_rate);
    m("layer element-wise cost", per_value, "ns/value");
    m("layer call overhead", per_call, "ns");
    // PS apply: w -= lr * g over 16 M floats touches 3 x 64 MB.
    let apply = crate::proxy::apply_rate(16 << 20, Duration::from_millis(300));
    m("ps apply memory traffic", apply, "B/s");
    // User-space work per byte of a message through both ends, as the runtime does it.
    let copy = copy_cost()?;
    m("user-space copies per payload byte (serialize, frame, receive, decode, place)", copy.total, "ns/B");
    m("of which before a message leaves (encode)", copy.encode, "ns/B");
    m("of which after it has arrived (decode, place)", copy.decode, "ns/B");
    // Per-message overhead: 5000 frames of 256 B streamed over loopback.
    let count = 5000;
    let secs = stream("127.0.0.1:0".parse().expect("an address"), count, 256, None)?;
    let per_message = secs / count as f64;
    m("loopback 256 B frame", per_message * 1e9, "ns");
    // Links: loopback, or shaped virtual links.
    let mut links: Vec<LinkFit> = Vec::new();
    let mut probes = Vec::new();
    let mut congestion_control = crate::launcher::host_congestion_control();
    if kind == LauncherKind::Netns {
        if !netns::is_root() {
            return Err("calibrating the netns launcher needs root".into());
        }
        for rate in [100e6, 1e9] {
            let c = VirtualCluster::create(
                &format!("{}-cal{}", std::process::id(), rate as u64 / 1_000_000),
                3,
                BitRate(rate),
                Time::ZERO,
            )?;
            if let Some(w) = &c.congestion_warning {
                eprintln!("warning: {w}; the profile records the one in force");
            }
            congestion_control = c.congestion_control.clone();
            let bytes = (rate / 8.0 * 1.5) as usize;
            let frames = bytes / (1 << 20);
            let addr = format!("{}:5401", c.addrs[1]).parse().map_err(|e| format!("{e}"))?;
            let before = cpu_busy_s();
            let secs = stream(addr, frames, 1 << 20, Some(&c))?;
            let busy = cpu_busy_s() - before;
            // Less what the machine does anyway over as long (at 100 Mbit/s the stream's own
            // CPU time is small next to it).
            let before = cpu_busy_s();
            std::thread::sleep(Duration::from_secs_f64(secs));
            let others = cpu_busy_s() - before;
            let busy = (busy - others).max(0.0);
            // Other processes' load enters the goodput and the CPU per byte: say so.
            let load = others / secs.max(1e-9);
            m(&format!("other processes' load after the {} Mbit/s stream", rate / 1e6), load, "cores");
            if load > 0.25 {
                eprintln!(
                    "warning: other processes kept {load:.1} of {cores} cores busy around the {} Mbit/s link's measurement; \
                     its goodput and CPU per byte are those of a loaded machine (calibrate on an idle one)",
                    rate / 1e6
                );
            }
            let g = (frames - 1) as f64 * (1 << 20) as f64 * 8.0 / secs;
            let per_byte = busy * 1e9 / (frames as f64 * (1 << 20) as f64);
            m(
                &format!("CPU per byte moved over a {} Mbit/s link (both ends, kernel included)", rate / 1e6),
                per_byte,
                "ns/B",
            );
            m(&format!("goodput of a {} Mbit/s link", rate / 1e6), g, "bit/s");
            let probe = probe_link(&c, rate, g)?;
            m(
                &format!("two equal flows from two hosts, mean |ln share ratio| ({} Mbit/s)", rate / 1e6),
                probe.equal.iter().sum::<f64>() / probe.equal.len().max(1) as f64,
                "",
            );
            for (d, mean, _) in probe.late_means() {
                m(
                    &format!("second flow {:.0} ms late, mean ln share ratio ({} Mbit/s)", d * 1e3, rate / 1e6),
                    mean,
                    "",
                );
            }
            m(
                &format!(
                    "first of two {:.0} kB bursts on warm connections (second {:.1} ms late): 0 fair, 1 first come first served ({} Mbit/s)",
                    probe.burst / 1e3,
                    probe.burst_late * 1e3,
                    rate / 1e6
                ),
                probe.burst_mean().0,
                "",
            );
            // The ramp-up and the queue's ordering are fitted by the caller, which simulates
            // these probes.
            links.push(LinkFit {
                rate: BitRate(rate),
                goodput: (g / rate).min(1.0),
                cpu_ns_per_byte: per_byte,
                unfairness: probe.unfairness(),
                ramp: Time::ZERO,
                ramp_share: 1.0,
                fifo: Time::ZERO,
            });
            probes.push(probe);
        }
    } else {
        let frames = 64;
        let secs = stream("127.0.0.1:0".parse().expect("an address"), frames, 4 << 20, None)?;
        m("loopback goodput", (frames - 1) as f64 * (4 << 20) as f64 * 8.0 / secs, "bit/s");
    }
    let goodput =
        if links.is_empty() { 1.0 } else { links.iter().map(|l| l.goodput).sum::<f64>() / links.len() as f64 };
    // Start-up: spawning the binary.
    let start = Instant::now();
    for _ in 0..5 {
        let _ = std::process::Command::new(exe).arg("--version").output();
    }
    let startup = start.elapsed().as_secs_f64() / 5.0;
    m("process start-up", startup * 1e9, "ns");
    let cores = cores as u32;
    let profile = Profile {
        machine: Machine {
            cpu: cpu_model(),
            cores,
            memory: mem_total(),
            date: now_utc(),
            launcher: kind.name().into(),
            congestion_control,
        },
        fitted: Fitted {
            compute_rate: FlopRate(compute_rate),
            cores,
            goodput: goodput.min(1.0),
            message_overhead: Time::from_secs_f64(per_message),
            ps_memory_bandwidth: BitRate::from_bytes_per_sec(apply),
            startup: Time::from_secs_f64(startup),
            elementwise_ns_per_value: per_value,
            layer_overhead: Time::from_secs_f64(per_call / 1e9),
            copy_ns_per_byte: copy.total,
            encode_ns_per_byte: Some(copy.encode),
            decode_ns_per_byte: Some(copy.decode),
            parallel_efficiency: (cores > 1).then_some(efficiency),
            compute_jitter: 0.0,
            gpu: None,
            links,
        },
        raw,
    };
    Ok((profile, probes))
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn parallel_efficiency_is_the_median_pair_so_one_slow_spell_does_not_set_it() {
        // Seven pairs (alone, together) in GFLOP/s: one pair hit by a slow spell (60 of 90
        // together). Ratios sorted: 0.667, 0.956, 0.967, 0.9778 (88/90), 0.9780, 0.9783, 1.011:
        // the median is 88/90, where the mean of the windows' rates would read 0.93.
        let pairs = [(90.0, 88.0), (90.0, 87.0), (90.0, 60.0), (92.0, 90.0), (91.0, 89.0), (90.0, 91.0), (90.0, 86.0)];
        let (e, lo, hi) = super::efficiency_of_pairs(&pairs);
        assert!((e - 88.0 / 90.0).abs() < 1e-12, "{e}");
        assert!((lo - 60.0 / 90.0).abs() < 1e-12 && (hi - 91.0 / 90.0).abs() < 1e-12, "{lo} {hi}");
        // A machine whose cores do not slow each other at all reads 1 (not more), and one
        // whose together rate collapses reads no less than 0.05.
        assert_eq!(super::efficiency_of_pairs(&[(90.0, 95.0); 3]).0, 1.0);
        assert_eq!(super::efficiency_of_pairs(&[(90.0, 1.0); 3]).0, 0.05);
    }

    #[test]
    fn the_median_ignores_one_disturbed_window() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), 2.5);
        // One window slowed fivefold by other work leaves the figure where it was.
        assert_eq!(median([10.0, 10.5, 2.0, 9.5, 10.2].into_iter()), 10.0);
        assert!(median(std::iter::empty()).is_nan());
    }
}
