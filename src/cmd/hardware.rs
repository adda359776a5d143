//! `topolab hardware`: the hardware catalogue with sources.

use std::process::ExitCode;

use topolab_core::hardware;
use topolab_core::units::ByteRate;

use crate::output::{Format, Table, print_json};

/// List the built-in GPUs, NIC presets and host buses, with the source of every figure.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  topolab hardware
  topolab hardware --format json")]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    if a.format == Format::Json {
        print_json(&serde_json::json!({
            "gpus": hardware::gpus(), "nics": hardware::nic_presets(), "host_buses": hardware::host_buses(),
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut g = Table::new([
        "gpu",
        "fp32",
        "fp16",
        "memory_bandwidth",
        "memory",
        "efficiency_fp32",
        "efficiency_fp16",
        "source",
    ]);
    for x in hardware::gpus() {
        g.row([
            x.name.clone(),
            x.fp32.to_string(),
            x.fp16.map_or("-".into(), |r| r.to_string()),
            ByteRate(x.memory_bandwidth).to_string(),
            x.memory.to_string(),
            format!("{:.4}", x.efficiency),
            x.fp16_efficiency.map_or("-".into(), |e| format!("{e:.3}")),
            x.source.clone(),
        ]);
    }
    let mut n = Table::new(["nic", "rate", "source"]);
    for x in hardware::nic_presets() {
        n.row([x.name.to_string(), x.rate.to_string(), x.source.to_string()]);
    }
    let mut b = Table::new(["host_bus", "bandwidth", "source"]);
    for x in hardware::host_buses() {
        b.row([x.name.to_string(), ByteRate(x.bandwidth).to_string(), x.source.to_string()]);
    }
    let mut out = std::io::stdout().lock();
    for (i, t) in [g, n, b].iter().enumerate() {
        if i > 0 {
            use std::io::Write;
            writeln!(out)?;
        }
        match a.format {
            Format::Csv => t.write_csv(&mut out)?,
            _ => t.write_text(&mut out)?,
        }
    }
    Ok(ExitCode::SUCCESS)
}
