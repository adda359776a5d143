//! `topolab run`: the main job on a scenario (default: the built-in half-year baseline).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use topolab_core::placement::Placement;
use topolab_core::scenario::PlacementKind;

use crate::output::Format;

/// Run a scenario (default: the built-in Inception-v3 on one K40).
#[derive(clap::Args)]
#[command(after_help = "\
Until the simulator lands, `run` shows what the simulator will execute: the scenario, its plan
(ops and bytes per host per step) and its parameter placement.

Examples:
  topolab run                                              # built-in default scenario
  topolab run scenarios/examples/inception-v3-64w-8ps.toml
  topolab run scenarios/examples/inception-v3-64w-8ps.toml --format json")]
pub struct Args {
    /// Scenario file (default: the built-in default scenario; see `topolab scenarios`).
    scenario: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let s = super::load_scenario(a.scenario.as_deref())?;
    let plan = super::plan::build(&s)?;
    if a.format != Format::Table {
        return super::plan::run(super::plan::Args::from_parts(a.scenario, a.format));
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "Scenario {} ({}), hash {}", s.spec.name, s.origin, s.hash)?;
    if !s.spec.description.is_empty() {
        writeln!(out, "  {}", s.spec.description)?;
    }
    writeln!(
        out,
        "  model {}: {:.2} M params in {} variables, {:.3} G MACs per {}",
        s.model.name,
        s.model.params() as f64 / 1e6,
        s.model.variable_count(),
        s.model.macs() as f64 / 1e9,
        s.model.sample
    )?;
    writeln!(
        out,
        "  {} x {} GPU per host ({} peak, efficiency {} -> {:.3} effective), batch {} per GPU",
        s.spec.topology.workers,
        s.gpu.name,
        s.peak(),
        s.efficiency,
        s.effective_rate(),
        s.spec.batch
    )?;
    writeln!(out, "  network {} per host, {} one-way latency", s.nic, s.spec.network.latency)?;
    let rr = Placement::new(&s.model, plan.ps, PlacementKind::RoundRobin, s.spec.topology.partition_threshold);
    writeln!(
        out,
        "  placement {} on {} shards: max/mean {:.3} (round-robin would give {:.3})\n",
        plan.placement.kind.as_str(),
        plan.ps,
        plan.placement.imbalance(),
        rr.imbalance()
    )?;
    drop(out);
    super::plan::run(super::plan::Args::from_parts(a.scenario, Format::Table))
}
