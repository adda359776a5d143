//! Output helpers: aligned text tables, CSV and JSON on stdout.

use std::io::Write;

use clap::ValueEnum;

/// How a command prints its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// Comma-separated values with a header row.
    Csv,
    /// JSON for programs.
    Json,
}

/// A table of strings with a header row; renders aligned or as CSV.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    /// Columns right-aligned (numbers).
    right: Vec<bool>,
}

impl Table {
    /// A table with these column names; columns whose name starts with a digit-like metric are
    /// aligned by [`Table::right_align`].
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        let header: Vec<String> = header.into_iter().map(Into::into).collect();
        let right = vec![false; header.len()];
        Table { header, rows: Vec::new(), right }
    }

    /// Right-aligns the given columns.
    pub fn right_align(mut self, cols: &[usize]) -> Self {
        for &c in cols {
            if c < self.right.len() {
                self.right[c] = true;
            }
        }
        self
    }

    /// Adds a row.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// Writes aligned text.
    pub fn write_text<W: Write>(&self, mut out: W) -> std::io::Result<()> {
        let n = self.header.len();
        let mut width = vec![0; n];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(n) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate().take(n) {
                let pad = width[i] - c.chars().count();
                if i > 0 {
                    line.push_str("  ");
                }
                if self.right[i] {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(c);
                } else {
                    line.push_str(c);
                    if i + 1 < n {
                        line.push_str(&" ".repeat(pad));
                    }
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }

    /// Writes CSV.
    pub fn write_csv<W: Write>(&self, out: W) -> anyhow::Result<()> {
        let mut w = csv::Writer::from_writer(out);
        w.write_record(&self.header)?;
        for r in &self.rows {
            w.write_record(r)?;
        }
        w.flush()?;
        Ok(())
    }
}

/// Prints JSON, pretty, with a trailing newline.
pub fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// `x` with `digits` significant decimals, for tables.
pub fn num(x: f64, decimals: usize) -> String {
    format!("{x:.decimals$}")
}
