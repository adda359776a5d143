//! Located errors in scenario files: `file:line:column`, the field path, the offending line
//! with a caret, and a hint.
//!
//! Spans come from two places: the TOML deserializer (syntax, types, units, unknown fields)
//! and a span index of the document ([`SpanIndex`]) that maps a field path such as
//! `topology.workers` to where it is written, for errors found after parsing.

use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One located problem in a scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// File the scenario came from (as given by the user).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// Dotted field path, e.g. `topology.workers` (empty for document-level problems).
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it, if we know.
    pub help: Option<String>,
    /// The offending source line, without its newline.
    pub source_line: String,
    /// Width of the caret underline in characters (at least 1).
    pub width: usize,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        let gutter = self.line.to_string().len();
        let pad = " ".repeat(gutter);
        writeln!(f, "{pad}--> {}:{}:{}", self.file, self.line, self.column)?;
        if !self.source_line.is_empty() {
            writeln!(f, "{pad} |")?;
            writeln!(f, "{} | {}", self.line, self.source_line)?;
            writeln!(f, "{pad} | {}{}", " ".repeat(self.column.saturating_sub(1)), "^".repeat(self.width.max(1)))?;
        }
        if !self.path.is_empty() {
            writeln!(f, "{pad} = field: {}", self.path)?;
        }
        if let Some(h) = &self.help {
            writeln!(f, "{pad} = help: {h}")?;
        }
        Ok(())
    }
}

/// Converts byte spans of one source text into line/column diagnostics.
pub struct SourceMap<'a> {
    file: &'a str,
    text: &'a str,
}

impl<'a> SourceMap<'a> {
    /// A source map over `text`, named `file` in messages.
    pub fn new(file: &'a str, text: &'a str) -> Self {
        SourceMap { file, text }
    }

    /// Builds a diagnostic at `span` (byte offsets; `None` = start of the file).
    pub fn diagnostic(
        &self,
        span: Option<Range<usize>>,
        path: &str,
        message: String,
        help: Option<String>,
    ) -> Diagnostic {
        let span = span.unwrap_or(0..0);
        let start = span.start.min(self.text.len());
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[start..].find('\n').map_or(self.text.len(), |i| start + i);
        let line = self.text[..start].matches('\n').count() + 1;
        let column = self.text[line_start..start].chars().count() + 1;
        let source_line = self.text[line_start..line_end].trim_end_matches('\r').to_string();
        let end = span.end.clamp(start, line_end);
        let width = self.text[start..end].chars().count().max(1);
        Diagnostic {
            file: self.file.to_string(),
            line,
            column,
            path: path.to_string(),
            message,
            help,
            source_line,
            width,
        }
    }
}

/// Where each field of a TOML document is written.
pub struct SpanIndex {
    /// (path, key span, value span) for every key in the document, in document order.
    entries: Vec<(String, Range<usize>, Range<usize>)>,
}

impl SpanIndex {
    /// Indexes `text`; a document that does not parse gives an empty index.
    pub fn new(text: &str) -> Self {
        let mut entries = Vec::new();
        if let Ok(doc) = DeTable::parse(text) {
            walk_table(doc.get_ref(), "", &mut entries);
        }
        SpanIndex { entries }
    }

    /// The span to point at for `path`: the value if the field is written, else the nearest
    /// written ancestor's key (e.g. the `[topology]` header for a defaulted `topology.ps`).
    pub fn span_of(&self, path: &str) -> Option<Range<usize>> {
        let mut p = path;
        let mut exact = true;
        loop {
            if let Some((_, key, value)) = self.entries.iter().find(|(q, _, _)| q == p) {
                return Some(if exact && value.end > value.start { value.clone() } else { key.clone() });
            }
            exact = false;
            p = p.rsplit_once(['.', '[']).map(|(head, _)| head)?;
        }
    }

    /// The path of the table whose value span is exactly `span` ("" for the document itself).
    pub fn table_with_span(&self, span: &Range<usize>) -> String {
        self.entries.iter().find(|(_, _, v)| v == span).map(|(p, _, _)| p.clone()).unwrap_or_default()
    }

    /// The deepest field path whose key or value contains byte `offset`.
    pub fn path_at(&self, offset: usize) -> Option<String> {
        self.entries
            .iter()
            .filter(|(_, k, v)| k.contains(&offset) || v.contains(&offset) || (k.start == offset && k.is_empty()))
            .max_by_key(|(p, _, _)| p.matches(['.', '[']).count())
            .map(|(p, _, _)| p.clone())
    }
}

fn walk_table(t: &DeTable<'_>, prefix: &str, out: &mut Vec<(String, Range<usize>, Range<usize>)>) {
    for (k, v) in t.iter() {
        let path = if prefix.is_empty() { k.get_ref().to_string() } else { format!("{prefix}.{}", k.get_ref()) };
        out.push((path.clone(), k.span(), v.span()));
        walk_value(v, &path, out);
    }
}

fn walk_value(v: &Spanned<DeValue<'_>>, path: &str, out: &mut Vec<(String, Range<usize>, Range<usize>)>) {
    match v.get_ref() {
        DeValue::Table(t) => walk_table(t, path, out),
        DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                let p = format!("{path}[{i}]");
                out.push((p.clone(), item.span(), item.span()));
                walk_value(item, &p, out);
            }
        }
        _ => {}
    }
}

/// Edit distance with adjacent transpositions (optimal string alignment): `btach` is one edit
/// from `batch`, as a typist would count it.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'c>(word: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let lw = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (edit_distance(&lw, &c.to_ascii_lowercase()), c))
        .filter(|&(d, c)| d <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_index_finds_fields_and_ancestors() {
        let text = "batch = 32\n[topology]\nworkers = 0\n";
        let idx = SpanIndex::new(text);
        let span = idx.span_of("topology.workers").unwrap();
        assert_eq!(&text[span], "0");
        let span = idx.span_of("topology.ps").unwrap();
        assert_eq!(&text[span], "topology");
        assert_eq!(idx.path_at(text.find('0').unwrap()).as_deref(), Some("topology.workers"));
    }

    #[test]
    fn diagnostics_render_location_and_caret() {
        let text = "batch = 32\n[topology]\nworkers = 0\n";
        let d = SourceMap::new("a.toml", text).diagnostic(Some(32..33), "topology.workers", "bad".into(), None);
        let s = d.to_string();
        assert!(s.contains("a.toml:3:11"), "{s}");
        assert!(s.contains("3 | workers = 0\n  |           ^"), "{s}");
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("wokers", ["ps", "workers", "mode"]), Some("workers"));
        assert_eq!(did_you_mean("zzz", ["ps", "workers"]), None);
        assert_eq!(did_you_mean("btach", ["name", "batch", "seed"]), Some("batch"));
        assert_eq!(edit_distance("snyc", "sync"), 1);
    }
}
