//! `topolab run`: simulate a scenario (default: the built-in half-year baseline).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use topolab_core::records::percent_or_not_measured as pct_of;
use topolab_core::scenario::Scenario;
use topolab_sim::target::TimeToTarget;
use topolab_sim::{SimOptions, SimRun};

use super::{BadInput, sweep};
use crate::output::{Format, print_json};

/// Simulate a scenario and print step time, throughput, utilization and the bottleneck.
#[derive(clap::Args, Default)]
#[command(after_help = "\
Examples:
  topolab run                                              # built-in default scenario
  topolab run scenarios/examples/inception-v3-64w-8ps.toml
  topolab run scenarios/bench/inception-v3-64w-8ps.toml --format json
  topolab run scenarios/examples/vgg-16-backup-partitioned.toml --out runs/vgg   # summary.json, steps.csv, trace.json
  topolab run runs/4w/effective.toml --profile profile.toml   # with a profile from topolab fit

The trace (trace.json) opens in https://ui.perfetto.dev or chrome://tracing.")]
pub struct Args {
    /// Scenario file (default: the built-in default scenario; see `topolab scenarios`).
    scenario: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    /// Write summary.json, steps.csv and trace.json into this directory.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Also write a report (HTML, Markdown, charts) into this directory; needs --out.
    #[arg(long, value_name = "DIR", requires = "out")]
    report: Option<PathBuf>,
    /// Steps to trace (overrides training.trace_steps).
    #[arg(long, value_name = "N")]
    trace_steps: Option<u32>,
    /// A profile (from `topolab fit` or `topolab calibrate`) in place of the scenario's
    /// hardware.profile; its measured compute rate replaces hardware.efficiency.
    #[arg(long, value_name = "P")]
    profile: Option<PathBuf>,
}

/// Runs the simulator on a loaded scenario; bad-input errors become [`BadInput`].
pub fn simulate(s: &topolab_core::scenario::Scenario) -> anyhow::Result<SimRun> {
    topolab_sim::simulate(s, &SimOptions::default()).map_err(|e| {
        if e.is_bad_input() { anyhow::Error::new(BadInput(format!("error: {e}"))) } else { anyhow::Error::new(e) }
    })
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let mut s = super::load_scenario(a.scenario.as_deref())?;
    if let Some(n) = a.trace_steps {
        // Through validation again, so that every output records the hash of what ran.
        s = s.with(|f| f.training.trace_steps = n).map_err(super::problems)?;
    }
    if let Some(p) = &a.profile {
        let p = std::fs::canonicalize(p).map_err(|e| BadInput(format!("error: --profile {}: {e}", p.display())))?;
        topolab_core::profile::Profile::load(&p).map_err(|e| BadInput(format!("error: --profile: {e}")))?;
        if s.spec.hardware.efficiency.is_some() {
            eprintln!("note: hardware.efficiency is replaced by the profile's measured compute rate");
        }
        s = s
            .with(|f| {
                f.hardware.profile = Some(p.clone());
                f.hardware.efficiency = None;
            })
            .map_err(super::problems)?;
    }
    if s.spec.sweep.points() > 0 {
        return run_table(&s, &a);
    }
    let (mut run, ttt) = if s.spec.training.target.is_some() {
        match topolab_sim::target::time_to_target(&s, &SimOptions::default()) {
            Ok((run, t)) => (run, Some(t)),
            Err(topolab_sim::target::TargetError::Sim(e)) if !e.is_bad_input() => return Err(e.into()),
            Err(e) => return Err(BadInput(format!("error: {}: {e}", s.spec.name)).into()),
        }
    } else {
        (simulate(&s)?, None)
    };
    run.summary.target = ttt.as_ref().map(TimeToTarget::record);
    if let Some(dir) = &a.out {
        topolab_sim::write_run_dir(&run, dir).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", dir.display()))?;
        write_assumptions(
            dir,
            std::slice::from_ref(&s),
            ttt.as_ref().map_or(s.spec.training.steps, |t| t.simulated_steps),
        )?;
        if let Some(f) = ttt.as_ref().and_then(|t| t.failures.as_ref()) {
            // Time lost against the checkpoint interval, for the report's chart.
            let mut csv = String::from("interval_s,lost_s,chosen\n");
            for (tau, lost) in f.curve() {
                csv.push_str(&format!("{tau},{lost},{}\n", (tau / f.interval_s - 1.0).abs() < 1e-9));
            }
            topolab_sim::write_atomic(&dir.join("failures.csv"), csv.as_bytes())?;
        }
    }
    match a.format {
        Format::Json => {
            let mut v = serde_json::to_value(&run.summary)?;
            v["sim_wall_s"] = serde_json::json!(run.sim_wall_s);
            v["detail"] = serde_json::to_value(&run.detail)?;
            if let Some(t) = &ttt {
                v["time_to_target"] = serde_json::to_value(t)?;
            }
            print_json(&v)?;
        }
        Format::Csv => {
            topolab_core::records::write_summaries_csv(std::slice::from_ref(&run.summary), std::io::stdout().lock())?;
        }
        Format::Table => {
            print_text(&s, &run)?;
            if let Some(t) = &ttt {
                print_target(&s, t)?;
            }
        }
    }
    if let Some(dir) = &a.out {
        eprintln!("wrote {}/summary.json, steps.csv, trace.json", dir.display());
    }
    if let (Some(report), Some(dir)) = (&a.report, &a.out) {
        super::report::make(std::slice::from_ref(dir), report)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn pct(x: f64, of: f64) -> String {
    if of > 0.0 { format!("{:.0}%", x / of * 100.0) } else { "-".into() }
}

fn print_text(s: &topolab_core::scenario::Scenario, run: &SimRun) -> anyhow::Result<()> {
    let sum = &run.summary;
    let t = &s.spec.topology;
    let mut out = std::io::stdout().lock();
    writeln!(out, "Scenario {} ({}), hash {}, seed {}", s.spec.name, s.origin, s.hash, s.spec.seed)?;
    if !s.spec.description.is_empty() {
        writeln!(out, "  {}", s.spec.description)?;
    }
    let all_reduce = t.kind == topolab_core::scenario::TopologyKind::AllReduce;
    let exchange = if all_reduce {
        format!(
            "{} all-reduce, no PS, fusion buckets up to {} every {}",
            t.algorithm.as_str(),
            t.fusion_buffer,
            t.fusion_cycle
        )
    } else {
        format!(
            "{} PS ({}), {}, {} placement",
            t.ps,
            if t.ps_hosts == topolab_core::scenario::PsHosts::Dedicated { "dedicated" } else { "co-located" },
            t.mode.as_str(),
            t.placement.as_str()
        )
    };
    writeln!(
        out,
        "  {} ({:.2} M params, {} variables), batch {} per GPU; {} worker{} x {} {}, {exchange}; {} NICs, {} latency",
        s.model.name,
        s.model.params() as f64 / 1e6,
        s.model.variable_count(),
        s.spec.batch,
        t.workers,
        if t.workers == 1 { "" } else { "s" },
        s.spec.hardware.gpus_per_host,
        s.gpu.name,
        s.nic,
        s.spec.network.latency
    )?;
    match &s.profile {
        Some(p) => writeln!(
            out,
            "  compute: {:.3} per GPU, from the profile: {} ({})",
            s.effective_rate(),
            p.machine.cpu,
            p.machine.date
        )?,
        None => writeln!(
            out,
            "  compute: {} {} peak x efficiency {:.3} = {:.3} per GPU ({}{}){}",
            s.gpu.name,
            s.peak(),
            s.efficiency,
            s.effective_rate(),
            s.gpu.source,
            match (&s.gpu.fp16_efficiency_source, s.spec.hardware.precision, s.spec.hardware.efficiency) {
                (Some(src), topolab_core::scenario::Precision::Fp16, None) => format!("; {src}"),
                _ => String::new(),
            },
            winograd_note(s)
        )?,
    }
    let st = &sum.step_time_s;
    writeln!(out)?;
    writeln!(
        out,
        "Step time     p10 {:.4} s   p50 {:.4} s   p90 {:.4} s   p99 {:.4} s   mean {:.4} s",
        st.p10, st.p50, st.p90, st.p99, st.mean
    )?;
    writeln!(out, "Throughput    {:.1} samples/s", sum.throughput_samples_per_s)?;
    let b = &sum.breakdown_s;
    writeln!(
        out,
        "Step breakdown  compute {:.4} s ({}) | exposed communication {:.4} s ({}) | waiting for {} {:.4} s ({})",
        b.compute,
        pct(b.compute, st.mean),
        b.exposed_comm,
        pct(b.exposed_comm, st.mean),
        if all_reduce { "the slowest worker" } else { "aggregation" },
        b.wait,
        pct(b.wait, st.mean)
    )?;
    let u = &sum.utilization;
    let ps_nics = match (u.ps_nic_in_max, u.ps_nic_out_max) {
        (None, None) => String::new(),
        (i, o) => format!(" | busiest PS NIC in {} out {}", pct_of(i), pct_of(o)),
    };
    writeln!(
        out,
        "Utilization   GPU {:.0}%{ps_nics} | busiest worker NIC in {} out {}",
        u.gpu * 100.0,
        pct_of(u.worker_nic_in_max),
        pct_of(u.worker_nic_out_max)
    )?;
    writeln!(out, "Bottleneck    {}", sum.bottleneck)?;
    if !run.detail.staleness.is_empty() {
        let total: u64 = run.detail.staleness.iter().map(|x| x.1).sum();
        let mean = run.detail.staleness.iter().map(|&(k, v)| k as f64 * v as f64).sum::<f64>() / total.max(1) as f64;
        let max = run.detail.staleness.last().map_or(0, |x| x.0);
        writeln!(out, "Staleness     mean {mean:.2} updates, max {max} (async applies: {total})")?;
    }
    writeln!(
        out,
        "\nSimulated {} steps x {} workers ({:.1} s of training) in {:.3} s wall: {} events, {}",
        sum.steps,
        t.workers,
        run.detail.makespan_s,
        run.sim_wall_s,
        sum.events,
        match (all_reduce, run.detail.worker_classes) {
            (true, 1) => "one rank standing for all (identical ranks run in lock-step)".to_string(),
            (true, n) => format!("{n} ranks simulated"),
            (false, 1) => "1 worker class".to_string(),
            (false, n) => format!("{n} worker classes"),
        }
    )?;
    if let Some(k) = run.detail.steady_from {
        writeln!(
            out,
            "Steps {}-{} extrapolated: the steps up to {k} had settled into a period (on every worker, \
             each step exactly as long as its step a period before, and as far apart), which the rest repeat",
            k + 1,
            sum.steps - 1,
        )?;
    }
    Ok(())
}

fn print_target(s: &Scenario, t: &TimeToTarget) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\nTime to {}: {:.1} days ({:.0} updates of {} examples, {:.1} epochs), {:.0} GPU-hours, {:.0} {}",
        t.target,
        t.time_to_target_s / 86400.0,
        t.steps,
        t.global_batch,
        t.epochs,
        t.gpu_hours,
        t.cost,
        t.currency
    )?;
    if let Some(f) = &t.failures {
        writeln!(
            out,
            "  failures: {:.1} expected (job MTBF {} = host MTBF / hosts); a checkpoint every {}{} takes {:.1} s, a restart {:.1} s: \
             {} lost, goodput {:.3} (Daly 2006, expected wall time)",
            f.expected_failures,
            topolab_core::best::human_duration(f.job_mtbf_s),
            topolab_core::best::human_duration(f.interval_s),
            if f.auto_interval { " (Daly's optimum)" } else { "" },
            f.checkpoint_s,
            f.restart_s,
            topolab_core::best::human_duration(f.overhead_s),
            f.goodput
        )?;
    }
    for line in assumptions(std::slice::from_ref(s), t.simulated_steps) {
        writeln!(out, "  {line}")?;
    }
    Ok(())
}

/// Writes `assumptions.txt` next to a run's records, for the report.
pub fn write_assumptions(dir: &std::path::Path, scenarios: &[Scenario], simulated_steps: u64) -> anyhow::Result<()> {
    let text: String = assumptions(scenarios, simulated_steps).into_iter().map(|l| format!("{l}\n")).collect();
    topolab_sim::write_atomic(&dir.join("assumptions.txt"), text.as_bytes())?;
    Ok(())
}

/// The assumptions behind time-to-accuracy predictions, in words.
pub fn assumptions(scenarios: &[Scenario], simulated_steps: u64) -> Vec<String> {
    let mut v = Vec::new();
    let Some(s) = scenarios.first() else { return v };
    if let Some(target) = &s.spec.training.target
        && let Some(p) = topolab_core::convergence::profile(&s.model.name, &target.metric)
    {
        v.push(format!(
            "convergence: examples E(B) = E_min (1 + B / B_noise), B_noise = {} (McCandlish et al. 2018); anchored on {:.0} epochs at global batch {} to {} {} ({})",
            p.b_noise,
            p.anchor_examples / p.epoch_examples,
            p.anchor_batch,
            p.anchor_accuracy,
            p.metric,
            p.source
        ));
    }
    let mut gpus: Vec<&Scenario> = scenarios.iter().collect();
    gpus.dedup_by(|a, b| a.gpu.name == b.gpu.name && a.efficiency == b.efficiency);
    for g in gpus {
        v.push(format!(
            "{}: {} peak x efficiency {:.4} = {:.3} per GPU ({})",
            g.gpu.name,
            g.peak(),
            g.efficiency,
            g.effective_rate(),
            g.gpu.source
        ));
    }
    v.push(format!(
        "prices: {} {} per GPU-hour, {} {} per dedicated PS host-hour",
        s.spec.cost.gpu_hour, s.spec.cost.currency, s.spec.cost.ps_hour, s.spec.cost.currency
    ));
    v.push(format!(
        "steady state: each configuration was simulated until its mean step time was known to +-{}% at 95% confidence ({} steps here), then extrapolated",
        topolab_sim::target::PRECISION * 100.0,
        simulated_steps
    ));
    v.push(if s.spec.faults.gpu_mtbf.is_some() {
        format!(
            "failures: exponential per GPU every {} GPU-hours (faults.gpu_mtbf{}), checkpoints and restarts through faults.checkpoint_bandwidth (Daly 2006); not modelled: input pipelines, learning-rate warm-up",
            (s.spec.faults.gpu_mtbf.map_or(0.0, |g| g.time().secs_f64()) / 3600.0).round(),
            if s.spec.faults.gpu_mtbf == Some(topolab_core::scenario::GpuMtbf::Llama3) {
                ": Llama 3 pre-training, 419 interruptions in 54 days on 16,384 GPUs"
            } else {
                ""
            }
        )
    } else if s.spec.faults.mtbf.is_some() {
        "failures: exponential per host at faults.mtbf, checkpoints and restarts through faults.checkpoint_bandwidth (Daly 2006); not modelled: input pipelines, learning-rate warm-up".into()
    } else {
        "not modelled: failures and restarts (set faults.mtbf), input pipelines, learning-rate warm-up".into()
    });
    v
}

/// A scenario with a sweep: one row per configuration.
fn run_table(s: &Scenario, a: &Args) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let configs = sweep::configurations(s)?;
    let rows = sweep::run_all(configs, None)?;
    let wall = started.elapsed().as_secs_f64();
    let scenarios: Vec<Scenario> = rows.iter().map(|r| r.scenario.clone()).collect();
    let simulated = rows.iter().filter_map(|r| r.target.as_ref()).map(|t| t.simulated_steps).max().unwrap_or(0);
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir)?;
        sweep::write_csv(&rows, &dir.join("sweep.csv"))?;
        write_assumptions(dir, &scenarios, simulated)?;
        // And each configuration as a run directory of its own (summary.json, with its time
        // to target), for `topolab compare` and `topolab report`.
        for (i, r) in rows.iter().enumerate() {
            let mut summary = r.summary.clone();
            summary.target = r.target.as_ref().map(TimeToTarget::record);
            let mut buf = Vec::new();
            topolab_core::records::write_summary_json(&summary, &mut buf)?;
            buf.push(b'\n');
            let d = dir.join("configs").join(format!("{i:02}"));
            std::fs::create_dir_all(&d)?;
            topolab_sim::write_atomic(&d.join("summary.json"), &buf)?;
        }
        eprintln!(
            "wrote {} and {} configurations under {}",
            dir.join("sweep.csv").display(),
            rows.len(),
            dir.join("configs").display()
        );
        if let Some(report) = &a.report {
            super::report::make(std::slice::from_ref(dir), report)?;
        }
    }
    match a.format {
        Format::Json => print_json(&serde_json::json!({
            "scenario": s.spec.name, "scenario_hash": s.hash, "rows": sweep::json_rows(&rows),
            "ps_vs_all_reduce": topolab_core::best::ps_vs_all_reduce(&sweep::records(&rows)),
            "assumptions": assumptions(&scenarios, simulated), "sim_wall_s": wall,
        }))?,
        Format::Csv => sweep::table(&rows, false).write_csv(std::io::stdout().lock())?,
        Format::Table => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{} ({}), hash {}", s.spec.name, s.origin, s.hash)?;
            if !s.spec.description.is_empty() {
                writeln!(out, "{}", s.spec.description)?;
            }
            writeln!(out)?;
            sweep::table(&rows, true).write_text(&mut out)?;
            sweep::print_best(&mut out, &rows)?;
            writeln!(out, "\nAssumptions:")?;
            for line in assumptions(&scenarios, simulated) {
                writeln!(out, "  - {line}")?;
            }
            writeln!(out, "\nSimulated {} configurations in {:.3} s of wall time.", rows.len(), wall)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What Winograd's convolutions leave of the model's FLOPs, when the scenario runs them
/// ([`Scenario::winograd`]); empty otherwise.
fn winograd_note(s: &Scenario) -> String {
    s.winograd_flops().map_or(String::new(), |(executed, nominal)| {
        format!(
            "; its 3x3 stride-1 convolutions run by Winograd's algorithm, so a sample executes {:.2} of {:.2} GFLOP forward",
            executed / 1e9,
            nominal / 1e9
        )
    })
}
