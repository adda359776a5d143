//! `topolab calibrate` and `topolab validate`: the simulator checks itself against real replays.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use topolab_core::records::{self, RunSummary, ValidationRecord};
use topolab_core::scenario::Scenario;
use topolab_core::units::Time;
use topolab_runtime::launcher::{self, LauncherKind, ReplayError, ReplayOptions};
use topolab_sim::SimOptions;

use super::BadInput;
use super::replay::Launcher;
use crate::output::{Format, Table, num, print_json};

/// Measure this machine (GEMMs, links, PS apply, process start-up) into a hardware profile.
#[derive(clap::Args)]
#[command(after_help = "\
Only single-process and single-link micro-benchmarks are used (the hold-out protocol of
`topolab validate`): no multi-worker or multi-PS run is fitted.

What it measures: GEMM rate of three shapes on one core; the element-wise cost of proxy
layers; PS apply bandwidth; the user-space copies of a message; per-message overhead; process
start-up. With --launcher netns, per shaped link (100 Mbit/s, 1 Gbit/s): one stream's goodput
and its CPU cost (all cores' busy time per byte), and two streams from two hosts into one,
started together (spread of TCP's shares) and one late (window ramp-up), and two short
bursts on warm connections, one a little late (whether the link's drop-tail queue serves them
first come, first served); ramp-up and queue order are fitted by simulating the probes with the
simulator's network. Takes about a minute.

With --backend cuda it also measures CUDA device --device (default 0): GEMM rates on a grid of
shape classes (m x k x n) at every precision the device has (fp32, tf32, bf16), host-to-device
and device-to-host copy bandwidth, the cost of a copy call, a kernel launch and a wait, and a
memory-bound kernel's bandwidth; it checks first that the cuda and cpu backends train a proxy
to the same loss curve, and quotes large square GEMMs against the catalogue peak. With such a
profile the simulator times each layer's kernels and copies at the measured rates.

Examples:
  topolab calibrate --launcher netns --out profile.toml     # as root: shaped 100 Mbit/s and 1 Gbit/s links
  topolab calibrate --launcher local --out profile.toml
  topolab calibrate --backend cuda --launcher local --out gpu-profile.toml   # on a machine with a GPU")]
pub struct CalibrateArgs {
    /// Links to measure: loopback (local) or shaped virtual links (netns, root).
    #[arg(long, value_enum, default_value = "local")]
    launcher: Launcher,
    /// Also measure a CUDA device (cuda).
    #[arg(long, value_enum, default_value = "cpu")]
    backend: super::replay::BackendArg,
    /// CUDA device to measure.
    #[arg(long, default_value_t = 0, value_name = "N")]
    device: u32,
    /// Profile file to write (TOML).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Output format of what is printed (the profile file is TOML either way).
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

fn kind(l: Launcher) -> LauncherKind {
    match l {
        Launcher::Local => LauncherKind::Local,
        Launcher::Netns => LauncherKind::Netns,
        Launcher::K8s => LauncherKind::K8s,
    }
}

/// Pairs of the cores' efficiency further apart than this (a fifth of a core's rate, more
/// than a steady machine's pairs differ: 0.12 on an idle 2-core cloud machine) say the
/// machine's load changed during calibration.
const UNSTEADY_SPREAD: f64 = 0.2;

pub fn calibrate(a: CalibrateArgs) -> anyhow::Result<ExitCode> {
    if a.launcher == Launcher::K8s {
        return Err(BadInput("error: calibrate measures this machine: --launcher local or netns".into()).into());
    }
    let cuda = a.backend == super::replay::BackendArg::Cuda;
    // The device first: without one, say so before a minute of CPU measurements.
    let device = if cuda {
        Some(topolab_runtime::cuda::probe(a.device).map_err(|e| BadInput(format!("error: --backend cuda: {e}")))?)
    } else {
        None
    };
    let exe = std::env::current_exe()?;
    let (mut p, probes) =
        topolab_runtime::calibrate::calibrate(kind(a.launcher), &exe).map_err(|e| BadInput(format!("error: {e}")))?;
    // Each link's ramp-up: the (ramp, share) whose simulated probes match the measured mean
    // ln rho at each lateness. A ramp must beat none by more than the probes' noise: the
    // squared standard error of each mean, summed.
    for (link, probe) in p.fitted.links.iter_mut().zip(&probes) {
        let means = probe.late_means();
        let measured: Vec<(f64, f64)> = means.iter().map(|&(d, mean, _)| (d, mean)).collect();
        let noise: f64 = means.iter().map(|m| m.2).sum();
        let (ramp, share) = topolab_sim::fit::ramp(probe.goodput, probe.size, &measured, noise);
        link.ramp = Time::from_secs_f64(ramp);
        link.ramp_share = share;
        // The queue's ordering: the time constant whose simulated bursts finish where the
        // measured first burst did, if it beats fair sharing by more than the noise.
        let (mean, se2) = probe.burst_mean();
        if !probe.bursts.is_empty() {
            link.fifo =
                Time::from_secs_f64(topolab_sim::fit::fifo(probe.goodput, probe.burst, probe.burst_late, mean, se2));
        }
    }
    let gpu = match &device {
        Some(d) => Some(calibrate_gpu(&mut p, d)?),
        None => None,
    };
    let text = format!(
        "# topolab hardware profile: measured by `topolab calibrate`; reference it from a scenario\n# with hardware.profile = \"{}\"\n{}",
        a.out.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        p.to_toml()
    );
    topolab_sim::write_atomic(&a.out, text.as_bytes())?;
    let f = &p.fitted;
    if a.format != Format::Table {
        // The profile itself, as data (CSV has no shape for it: JSON either way).
        print_json(&p)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("Wrote {} ({} cores, {})", a.out.display(), p.machine.cores, p.machine.cpu);
    println!("  compute          {:.3} per process (one core)", f.compute_rate);
    if let Some(e) = f.parallel_efficiency {
        match topolab_runtime::calibrate::efficiency_spread(&p) {
            Some((lo, hi)) => {
                println!("  all cores at once {e:.2} of that rate each (median of pairs from {lo:.2} to {hi:.2})");
                if hi - lo > UNSTEADY_SPREAD {
                    println!(
                        "  warning: the machine was not steady while the cores were measured (pairs from {lo:.2} to {hi:.2}):                          another load came or went; predictions of replays on shared cores lean on this figure, so                          calibrate again when the machine is as it will be for the runs"
                    );
                }
            }
            None => println!("  all cores at once {e:.2} of that rate each"),
        }
    }
    println!("  link goodput     {:.3} of the line rate", f.goodput);
    println!("  message overhead {}", f.message_overhead);
    println!("  PS apply         {:.3}", topolab_core::units::ByteRate(f.ps_memory_bandwidth));
    println!("  start-up         {:.3}", f.startup);
    if let Some(lines) = gpu {
        for l in lines {
            println!("  {l}");
        }
    }
    for l in &f.links {
        println!(
            "  link {:<11} CPU {:.2} ns/B, unfairness {:.2}, ramp-up {}, bursts {}",
            l.rate.to_string(),
            l.cpu_ns_per_byte,
            l.unfairness,
            if l.ramp.0 > 0 && l.ramp_share < 1.0 {
                format!("from {:.2} of a share over {:.0}", l.ramp_share, l.ramp)
            } else {
                "none".into()
            },
            if l.fifo.0 > 0 {
                format!("first come, first served (time constant {})", l.fifo)
            } else {
                "shared fairly".into()
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Measures the GPU into `p` (its fit and raw figures) after checking that the cuda backend
/// computes what the cpu backend does; returns the lines to print.
fn calibrate_gpu(
    p: &mut topolab_core::profile::Profile,
    d: &topolab_runtime::compute::DeviceInfo,
) -> anyhow::Result<Vec<String>> {
    use topolab_core::profile::{GemmPrecision, Measurement};
    use topolab_core::scenario::Precision;
    use topolab_runtime::cuda;
    let mut lines = vec![format!(
        "GPU              {} (device {}, compute capability {}, {:.1} GiB)",
        d.name,
        d.ordinal,
        d.compute_capability,
        d.memory as f64 / f64::from(1u32 << 30)
    )];
    let tensor = d.compute_capability.split('.').next().and_then(|m| m.parse::<u32>().ok()).unwrap_or(0) >= 8;
    let precisions: &[Precision] =
        if tensor { &[Precision::Fp32, Precision::Tf32, Precision::Fp16] } else { &[Precision::Fp32] };
    const STEPS: u64 = 20;
    for &prec in precisions {
        let ag =
            cuda::agreement(d.ordinal, prec, STEPS).map_err(|e| BadInput(format!("error: --backend cuda: {e}")))?;
        let tol = cuda::tolerance(ag.precision);
        let name = format!("{:?}", ag.precision).to_lowercase();
        p.raw.push(Measurement {
            what: format!("cuda vs cpu loss curve, {name}, {STEPS} steps: largest relative difference"),
            value: ag.max_relative_difference,
            unit: "fraction".into(),
        });
        lines.push(format!(
            "agreement {name:<6} cuda and cpu loss curves within {:.2e} over {STEPS} steps (tolerance {tol:.0e}); loss {:.4} -> {:.4}",
            ag.max_relative_difference,
            ag.cuda.first().copied().unwrap_or(0.0),
            ag.cuda.last().copied().unwrap_or(0.0)
        ));
        if ag.max_relative_difference > tol {
            anyhow::bail!(
                "the cuda backend ({name}) disagrees with the cpu backend: loss curves differ by {:.3e} (tolerance {tol:.0e}); cpu {:?}, cuda {:?}; no profile written",
                ag.max_relative_difference,
                ag.cpu,
                ag.cuda
            );
        }
    }
    let (fit, squares) = cuda::calibrate(d.ordinal).map_err(|e| anyhow::anyhow!("--backend cuda: {e}"))?;
    let catalogue = topolab_core::hardware::gpu_for_device(&d.name);
    for sq in &squares {
        let peak = catalogue.as_ref().and_then(|g| match sq.precision {
            GemmPrecision::Fp32 => Some(g.fp32),
            GemmPrecision::Tf32 => g.tf32,
            GemmPrecision::Bf16 => g.fp16,
        });
        let name = format!("{:?}", sq.precision).to_lowercase();
        p.raw.push(Measurement {
            what: format!("cuda GEMM {0}x{0}x{0} {name}", sq.size),
            value: sq.rate.0,
            unit: "FLOP/s".into(),
        });
        lines.push(format!(
            "GEMM {0}^3 {name:<5} {1:.1} TFLOP/s{2}",
            sq.size,
            sq.rate.0 / 1e12,
            match (peak, &catalogue) {
                (Some(pk), Some(g)) =>
                    format!(" = {:.1}% of the {}'s {:.1} TFLOP/s peak", 100.0 * sq.rate.0 / pk.0, g.name, pk.0 / 1e12),
                _ => " (no catalogue peak for this device)".into(),
            }
        ));
    }
    lines.push(format!(
        "copies           to the device {:.2}, back (pinned) {:.2}, {} per call",
        topolab_core::units::ByteRate(fit.h2d),
        topolab_core::units::ByteRate(fit.d2h),
        fit.copy_latency
    ));
    lines.push(format!(
        "kernels          launch {}, wait {}, memory-bound {:.0}; {} GEMM shape classes",
        fit.launch,
        fit.sync,
        topolab_core::units::ByteRate(fit.elementwise),
        fit.gemm.len()
    ));
    p.fitted.gpu = Some(fit);
    Ok(lines)
}

/// Replay every configuration of a scenario's sweep and compare it with the simulator's prediction.
#[derive(clap::Args)]
#[command(after_help = "\
Hold-out protocol: with --profile, the profile comes from single-worker, single-PS
micro-benchmarks (`topolab calibrate`), and no configuration validated here was used for
fitting. Without it, the profile is fitted (as `topolab fit` does) on the grid's own
1-worker, 1-PS configurations (1-worker ones for an all-reduce), written to OUT/profile.toml,
and every other configuration is predicted with it: the errors are those of the held-out
configurations; the fitted ones are listed with their residuals. Errors are given per mode
(sync, async, ...), and for the asynchronous modes how many measured medians fall inside the
predicted p10-p90 band. With --engine tensorflow, topolab's own runtime also replays every
configuration (OUT/runs/NN/topolab) and its p50 step time is reported next to TensorFlow's.

Examples:
  topolab calibrate --launcher netns --out profile.toml
  topolab validate scenarios/validation/grid.toml --profile profile.toml --launcher netns --out runs/validation
  topolab validate scenarios/validation/grid.toml --engine tensorflow --launcher netns --out runs/tf   # fitted on its 1-worker runs")]
pub struct ValidateArgs {
    /// Scenario with a [sweep] of configurations.
    scenario: PathBuf,
    /// Hardware profile from `topolab calibrate`; without it, one is fitted on the grid's
    /// 1-worker, 1-PS configurations.
    #[arg(long, value_name = "FILE")]
    profile: Option<PathBuf>,
    /// Where the replays run.
    #[arg(long, value_enum, default_value = "netns")]
    launcher: Launcher,
    /// What runs the replays: topolab's runtime, or real TensorFlow.
    #[arg(long, value_enum, default_value_t)]
    engine: super::replay::EngineArg,
    /// Directory for the comparison (validation.csv) and every run.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Also write a report (error table, predicted vs measured chart) into this directory.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Output format of the comparison table (validation.csv is written either way).
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// Predicts a replayed configuration: the simulator on its effective scenario, with the profile.
fn predict(effective: &Path, profile: &Path, launcher: LauncherKind) -> anyhow::Result<RunSummary> {
    let s = Scenario::load(effective).map_err(|e| BadInput(e.to_string()))?;
    let profile = std::fs::canonicalize(profile)?;
    // The profile's measured compute rate replaces the effective scenario's efficiency, and its
    // queue-order fit takes effect with the shaped links' queue.
    let s = s
        .with(|f| {
            f.hardware.profile = Some(profile);
            f.hardware.efficiency = None;
            if launcher == LauncherKind::Netns {
                f.network.queue = topolab_runtime::netns::QUEUE;
            }
        })
        .map_err(super::problems)?;
    Ok(topolab_sim::simulate(&s, &SimOptions { trace: false, ..SimOptions::default() })?.summary)
}

/// A replayed configuration: label, scenario, run directory, measured summary.
type Measured = (String, Scenario, PathBuf, RunSummary);

/// Fits a profile (as `topolab fit`) on the 1-worker configurations among `runs`, writes it to
/// `out`/profile.toml and returns its path; a fit that fails is bad input naming the runs.
fn fit_on_singles<'a>(out: &Path, runs: impl Iterator<Item = &'a Measured>) -> anyhow::Result<PathBuf> {
    let dirs: Vec<&PathBuf> = runs.filter(|(_, s, _, _)| single(s)).map(|(_, _, dir, _)| dir).collect();
    let singles: Vec<_> = dirs
        .iter()
        .map(|dir| topolab_sim::measured::load(dir))
        .collect::<Result<_, _>>()
        .map_err(|e| BadInput(format!("error: {e}")))?;
    let report = topolab_sim::measured::fit(&singles, &topolab_runtime::calibrate::now_utc()).map_err(|e| {
        let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        BadInput(format!(
            "error: fitting on the grid's 1-worker configurations ({}): {e}; the other configurations were not run (give a --profile, or look at these runs with topolab fit)",
            names.join(", ")
        ))
    })?;
    let path = out.join("profile.toml");
    topolab_sim::write_atomic(&path, report.profile.to_toml().as_bytes())?;
    eprintln!("fitted {} on {} 1-worker configuration(s):", path.display(), singles.len());
    for p in &report.params {
        eprintln!("  {:<26} {}", p.name, p.value);
    }
    Ok(path)
}

/// Whether a configuration is one a profile is fitted on when validate fits its own: one
/// worker, and at most one parameter server.
fn single(s: &Scenario) -> bool {
    s.topology().workers() == 1 && s.topology().ps() <= 1
}

pub fn validate(a: ValidateArgs) -> anyhow::Result<ExitCode> {
    let base = super::load_scenario(Some(&a.scenario))?;
    let given = match &a.profile {
        Some(p) => Some(topolab_core::profile::Profile::load(p).map_err(BadInput)?),
        None => None,
    };
    let configs = super::sweep::configurations(&base)?;
    if given.is_none() && !configs.iter().any(|(_, s)| single(s)) {
        return Err(BadInput(format!(
            "error: {}: without --profile the profile is fitted on the grid's 1-worker, 1-PS configurations, and it has none; add one to [sweep] or give --profile",
            a.scenario.display()
        ))
        .into());
    }
    std::fs::create_dir_all(&a.out)?;
    let exe = std::env::current_exe()?;
    let engine = a.engine.engine()?;
    // Without a profile the 1-worker configurations run first and the profile is fitted on
    // them before the others run: a fit that fails stops the validation early.
    let mut order: Vec<usize> = (0..configs.len()).collect();
    if given.is_none() {
        order.sort_by_key(|&i| !single(&configs[i].1));
    }
    let singles = configs.iter().filter(|(_, s)| single(s)).count();
    let mut measured_runs: Vec<Option<Measured>> = vec![None; configs.len()];
    // With TensorFlow measuring, topolab's own runtime replays every configuration too.
    let mut runtime_p50: Vec<Option<f64>> = vec![None; configs.len()];
    let tensorflow = matches!(engine, launcher::Engine::Tensorflow(_));
    let mut profile_path = a.profile.clone();
    for (k, &i) in order.iter().enumerate() {
        let (point, s) = &configs[i];
        let label: Vec<String> = point.values().iter().map(|(k, v)| format!("{k}={v}")).collect();
        let label = if label.is_empty() { s.spec.name.clone() } else { label.join(" ") };
        eprintln!("[{}/{}] {label}", k + 1, configs.len());
        let dir = a.out.join("runs").join(format!("{i:02}"));
        // One replay of the configuration by `engine` into `out`, with a progress bar.
        let replay = |engine: launcher::Engine, out: PathBuf, what: &str| {
            let (progress, bar) = super::replay::progress_bar(what);
            let opts = ReplayOptions {
                launcher: kind(a.launcher),
                engine,
                exe: exe.clone(),
                out,
                resume: false,
                timeout_s: 60,
                progress: Some(progress),
            };
            let result = launcher::replay(s, &opts);
            drop(opts);
            let _ = bar.join();
            result
        };
        let measured = replay(engine.clone(), dir.join("replay"), &label);
        let measured = match measured {
            Ok(o) => o.summary,
            Err(e @ ReplayError::Refused { .. }) => return Err(BadInput(format!("error: {e}")).into()),
            Err(e) => return Err(e.into()),
        };
        if let (Some(profile), Some(path)) = (&given, &a.profile) {
            let cc = measured.replay.as_ref().map_or("", |r| r.congestion_control.as_str());
            let calibrated = profile.machine.congestion_control.as_str();
            if !calibrated.is_empty() && cc != calibrated {
                return Err(BadInput(format!(
                    "error: {} was calibrated under {calibrated} congestion control but this replay ran under {cc}: \
                     the link fits (unfairness, queue order) do not carry over; calibrate again with the same launcher",
                    path.display()
                ))
                .into());
            }
        }
        if tensorflow {
            let ours = replay(launcher::Engine::Topolab, dir.join("topolab"), &format!("{label} (topolab runtime)"))?;
            runtime_p50[i] = Some(ours.summary.step_time_s.p50);
        }
        measured_runs[i] = Some((label, s.clone(), dir.join("replay"), measured));
        if profile_path.is_none() && k + 1 == singles {
            profile_path = Some(fit_on_singles(&a.out, measured_runs.iter().flatten())?);
        }
    }
    let profile_path = profile_path.expect("given, or fitted once the 1-worker configurations ran");
    let measured_runs = measured_runs.into_iter().map(|r| r.expect("every configuration ran"));
    let mut rows = Vec::new();
    for (label, s, dir, measured) in measured_runs {
        let predicted = predict(&dir.join("effective.toml"), &profile_path, kind(a.launcher))?;
        rows.push((label, s, predicted, measured));
    }
    // Comparison table.
    let mut t = Table::new([
        "configuration",
        "pred_p50_s",
        "meas_p50_s",
        "ape_p50_pct",
        "pred_samples_per_s",
        "meas_samples_per_s",
        "ape_throughput_pct",
        "pred_compute_s",
        "meas_compute_s",
        "pred_comm_s",
        "meas_comm_s",
        "pred_wait_s",
        "meas_wait_s",
        "largest_phase_gap",
    ])
    .right_align(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    let fitted_here = a.profile.is_none();
    let records: Vec<ValidationRecord> = rows
        .iter()
        .zip(&runtime_p50)
        .map(|((label, s, p, m), ours)| {
            let mut r = ValidationRecord::new(label, p, m);
            r.runtime_p50_s = *ours;
            r.mode = match s.topology() {
                topolab_core::scenario::Topology::AllReduce(_) => "all-reduce".into(),
                t => t.mode().as_str().into(),
            };
            r.held_out = !(fitted_here && single(s));
            r
        })
        .collect();
    for r in &records {
        t.row([
            if r.held_out { r.configuration.clone() } else { format!("{} (fitted on)", r.configuration) },
            num(r.pred_p50_s, 4),
            num(r.meas_p50_s, 4),
            num(r.ape_p50_pct, 1),
            num(r.pred_samples_per_s, 1),
            num(r.meas_samples_per_s, 1),
            num(r.ape_throughput_pct, 1),
            num(r.pred_compute_s, 4),
            num(r.meas_compute_s, 4),
            num(r.pred_comm_s, 4),
            num(r.meas_comm_s, 4),
            num(r.pred_wait_s, 4),
            num(r.meas_wait_s, 4),
            r.largest_phase_gap.clone(),
        ]);
    }
    let (median, max) = records::validation_errors(&records);
    let csv_path = a.out.join("validation.csv");
    let mut buf = Vec::new();
    records::write_validation_csv(&records, &mut buf)?;
    topolab_sim::write_atomic(&csv_path, &buf)?;
    match a.format {
        Format::Json => print_json(&serde_json::json!({
            "scenario": base.spec.name,
            "launcher": a.launcher.name(),
            "profile": profile_path.display().to_string(),
            "profile_fitted_on_the_grid": fitted_here,
            "median_ape_p50_pct": median,
            "max_ape_p50_pct": max,
            "by_mode": records::validation_by_mode(&records).iter().map(|m| serde_json::json!({
                "mode": m.mode, "configurations": m.count, "median_ape_p50_pct": m.median,
                "max_ape_p50_pct": m.max, "measured_p50_in_predicted_p10_p90": m.in_band,
            })).collect::<Vec<_>>(),
            "topolab_runtime": records::runtime_comparison(&records).map(|c| serde_json::json!({
                "configurations": c.count, "p50_at_most_the_engines": c.not_slower,
                "median_ratio": c.median_ratio, "max_ratio": c.max_ratio,
            })),
            "csv": csv_path.display().to_string(),
            "configurations": rows.iter().zip(&records).map(|((label, _, p, m), r)| serde_json::json!({
                "configuration": label, "ape_p50_pct": r.ape_p50_pct, "held_out": r.held_out, "predicted": p, "measured": m,
                "topolab_runtime_p50_s": r.runtime_p50_s,
            })).collect::<Vec<_>>(),
        }))?,
        Format::Csv => t.write_csv(std::io::stdout().lock())?,
        Format::Table => print_validation(&a, &base, &rows, &records, &profile_path, &t, (median, max), &csv_path)?,
    }
    if let Some(dir) = &a.report {
        super::report::make(std::slice::from_ref(&a.out), dir)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One validated configuration: label, scenario, predicted and measured summaries.
type Validated = (String, Scenario, RunSummary, RunSummary);

#[allow(clippy::too_many_arguments)]
fn print_validation(
    a: &ValidateArgs,
    base: &Scenario,
    rows: &[Validated],
    records: &[ValidationRecord],
    profile: &Path,
    t: &Table,
    (median, max): (f64, f64),
    csv_path: &Path,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Validation of {} on {} configurations ({} launcher)",
        base.spec.name,
        rows.len(),
        a.launcher.name()
    )?;
    let fitted: Vec<&str> = records.iter().filter(|r| !r.held_out).map(|r| r.configuration.as_str()).collect();
    if fitted.is_empty() {
        writeln!(
            out,
            "Hold-out protocol: the profile ({}) comes from single-worker, single-PS micro-benchmarks; these multi-worker, multi-PS configurations were never used for fitting.\n",
            profile.display()
        )?;
    } else {
        writeln!(
            out,
            "Hold-out protocol: the profile ({}) was fitted on this grid's {} 1-worker configuration(s) ({}); the errors are those of the other {}, predicted with it.\n",
            profile.display(),
            fitted.len(),
            fitted.join("; "),
            records.len() - fitted.len()
        )?;
    }
    writeln!(out, "p50 step time error: median {median:.1}%, max {max:.1}% (absolute percentage error)")?;
    let by = records::validation_by_mode(records);
    if by.len() > 1 || by.iter().any(|m| m.mode != "sync" && m.mode != "all-reduce") {
        for m in &by {
            writeln!(
                out,
                "  {:<10} {:>2} configurations: median {:.1}%, max {:.1}%; measured p50 inside the predicted p10-p90 band in {} of {}",
                m.mode, m.count, m.median, m.max, m.in_band, m.count
            )?;
        }
    }
    if let Some(c) = records::runtime_comparison(records) {
        writeln!(
            out,
            "topolab's own runtime on the same configurations: p50 step time at most TensorFlow's on {} of {} \
             (topolab / TensorFlow: median {:.2}x, max {:.2}x; column runtime_p50_s of validation.csv)",
            c.not_slower, c.count, c.median_ratio, c.max_ratio
        )?;
    }
    writeln!(out)?;
    t.write_text(&mut out)?;
    for ((label, _, p, m), r) in rows.iter().zip(records) {
        let e = r.ape_p50_pct;
        if e > 25.0 {
            let phases = [
                ("compute", p.breakdown_s.compute - m.breakdown_s.compute),
                ("exposed communication", p.breakdown_s.exposed_comm - m.breakdown_s.exposed_comm),
                ("waiting for aggregation", p.breakdown_s.wait - m.breakdown_s.wait),
            ];
            let w = phases.iter().max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())).expect("three phases");
            writeln!(out, "  {label}: {e:.0}% off; {} differs most ({:+.4} s predicted minus measured)", w.0, w.1)?;
        }
        if let Some(x) = r.runtime_ratio().filter(|&x| x > 1.0) {
            writeln!(out, "  {label}: topolab's runtime is slower than TensorFlow here ({x:.2}x its p50 step time)")?;
        }
    }
    writeln!(out, "\nwrote {}", csv_path.display())?;
    Ok(())
}
