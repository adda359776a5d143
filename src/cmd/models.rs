//! `topolab models`: the model zoo.

use std::io::Write;
use std::process::ExitCode;

use topolab_core::models::{self, Model};

use super::BadInput;
use crate::output::{Format, Table, num, print_json};

/// List the model zoo, or one model's layer table.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  topolab models                                   # params, G MACs (and those a GPU executes in FP32,
                                                   # 3x3 convolutions by Winograd) and variables of every model
  topolab models --format csv
  topolab models inception-v3 --layers             # the layer table
  topolab models vgg-16 --layers --format csv > vgg16.csv   # editable; use as [model] layers = \"vgg16.csv\"")]
pub struct Args {
    /// A model to show (default: all).
    name: Option<String>,
    /// Print the model's layer table (one row per variable).
    #[arg(long, requires = "name")]
    layers: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

fn get(name: &str) -> anyhow::Result<Model> {
    models::builtin(name).map_err(|e| BadInput(e.to_string()).into())
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    if a.layers {
        let m = get(a.name.as_deref().expect("clap requires name with --layers"))?;
        layer_table(&m, a.format)?;
        return Ok(ExitCode::SUCCESS);
    }
    let list: Vec<Model> = match &a.name {
        Some(n) => vec![get(n)?],
        None => models::BUILTIN.iter().map(|n| get(n)).collect::<anyhow::Result<_>>()?,
    };
    if a.format == Format::Json {
        let rows: Vec<serde_json::Value> = list
            .iter()
            .map(|m| {
                serde_json::json!({
                    "name": m.name, "params": m.params(), "macs": m.macs(), "gmacs": m.macs() as f64 / 1e9,
                    "forward_flops": m.forward_flops(), "gpu_fp32_forward_flops": m.executed_forward_flops(true), "variables": m.variable_count(), "layers": m.layers.len(),
                    "bytes": m.bytes().0, "sample": m.sample, "source": m.source,
                })
            })
            .collect();
        print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new([
        "model",
        "params",
        "params_m",
        "gmacs",
        "gpu_fp32_gmacs",
        "variables",
        "layers",
        "sample",
        "source",
    ])
    .right_align(&[1, 2, 3, 4, 5, 6]);
    for m in &list {
        t.row([
            m.name.clone(),
            m.params().to_string(),
            num(m.params() as f64 / 1e6, 2),
            num(m.macs() as f64 / 1e9, 3),
            num(m.executed_macs(true) / 1e9, 3),
            m.variable_count().to_string(),
            m.layers.len().to_string(),
            m.sample.clone(),
            m.source.clone(),
        ]);
    }
    match a.format {
        Format::Csv => t.write_csv(std::io::stdout().lock())?,
        _ => t.write_text(std::io::stdout().lock())?,
    }
    Ok(ExitCode::SUCCESS)
}

fn layer_table(m: &Model, format: Format) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Csv => models::write_layer_table(m, &mut out)?,
        Format::Json => print_json(&m.layers)?,
        Format::Table => {
            writeln!(
                out,
                "{}: {} layers, {} variables, {:.2} M params, {:.3} G MACs per {}",
                m.name,
                m.layers.len(),
                m.variable_count(),
                m.params() as f64 / 1e6,
                m.macs() as f64 / 1e9,
                m.sample
            )?;
            let mut t = Table::new(["layer", "kind", "mmacs", "activation", "variable", "shape", "bytes"])
                .right_align(&[2, 3, 6]);
            for l in &m.layers {
                let head =
                    [l.name.clone(), l.kind.to_string(), num(l.macs as f64 / 1e6, 2), l.activation_bytes.to_string()];
                if l.variables.is_empty() {
                    t.row(head.iter().cloned().chain(["-".into(), "".into(), "".into()]));
                }
                for v in &l.variables {
                    let shape = v.shape.iter().map(u64::to_string).collect::<Vec<_>>().join("x");
                    t.row(head.iter().cloned().chain([v.name.clone(), shape, v.bytes.to_string()]));
                }
            }
            t.write_text(&mut out)?;
        }
    }
    Ok(())
}
