//! A task's progress and traces through its standard output, for launchers that cannot read
//! the task's files: a pod's files live and die with the pod, but its log is what the
//! Kubernetes API serves (`GET .../pods/NAME/log?follow=true`) while it runs and after it
//! ended, until it is deleted.
//!
//! With [`ENV`] set, a worker prints after each step `@topolab progress STEP` and, once
//! done, each trace file line by line, `@topolab line FILE TEXT`, closed by
//! `@topolab end FILE LINES BYTES`. Everything is line-framed because the container runtime
//! interleaves a container's stdout and stderr line by line in its log; the counts at the end
//! tell a complete file from one the kubelet's log rotation (`containerLogMaxSize`, 10 MiB by
//! default) cut. [`Reader`] turns such a log back into the task's own lines, progress and
//! files.

use std::collections::BTreeMap;
use std::io::Write;

/// Set (to anything) in a task's environment: print progress and traces on stdout too.
pub const ENV: &str = "TOPOLAB_TRACE_STDOUT";

const PREFIX: &str = "@topolab ";

/// The progress line after `step` steps were completed (from the start of training).
pub fn progress(out: &mut impl Write, step: u64) -> std::io::Result<()> {
    writeln!(out, "{PREFIX}progress {step}")?;
    out.flush()
}

/// Writes file `name` (a plain file name: no '/', no leading '.') with its content `text`.
pub fn file(out: &mut impl Write, name: &str, text: &str) -> std::io::Result<()> {
    debug_assert!(file_name_ok(name), "trace file name {name}");
    let mut lines = 0u64;
    for line in text.lines() {
        writeln!(out, "{PREFIX}line {name} {line}")?;
        lines += 1;
    }
    writeln!(out, "{PREFIX}end {name} {lines} {}", text.len())?;
    out.flush()
}

fn file_name_ok(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// One line of a task's log, read back.
#[derive(Debug, Clone, PartialEq)]
pub enum Line<'a> {
    /// A line the task wrote for people (its log).
    Log(&'a str),
    /// The task completed this many steps.
    Progress(u64),
    /// A line of a trace file (kept by the reader until the file ends).
    Part,
    /// A trace file is complete: its name and content.
    File(String, String),
}

/// Why a log could not be read back.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadError {
    /// A framing line that does not parse.
    #[error("malformed trace line `{0}`")]
    Malformed(String),
    /// A file ended with other counts than its lines: part of it is missing.
    #[error(
        "trace file {name} is incomplete ({got} of {lines} lines, {got_bytes} of {bytes} bytes): the log was cut, as the kubelet's log rotation (containerLogMaxSize) does above 10 MiB by default"
    )]
    Incomplete {
        /// File.
        name: String,
        /// Lines announced.
        lines: u64,
        /// Lines received.
        got: u64,
        /// Bytes announced.
        bytes: u64,
        /// Bytes received.
        got_bytes: u64,
    },
}

/// Reads a task's log back, one line at a time.
#[derive(Debug, Default)]
pub struct Reader {
    open: BTreeMap<String, (String, u64)>,
}

impl Reader {
    /// A reader with no file open.
    pub fn new() -> Reader {
        Reader::default()
    }

    /// The meaning of `line` (without its newline).
    pub fn line<'a>(&mut self, line: &'a str) -> Result<Line<'a>, ReadError> {
        let Some(rest) = line.strip_prefix(PREFIX) else { return Ok(Line::Log(line)) };
        let bad = || ReadError::Malformed(line.chars().take(120).collect());
        let (word, rest) = rest.split_once(' ').ok_or_else(bad)?;
        match word {
            "progress" => rest.trim().parse().map(Line::Progress).map_err(|_| bad()),
            "line" => {
                let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
                if !file_name_ok(name) {
                    return Err(bad());
                }
                let f = self.open.entry(name.to_string()).or_default();
                f.0.push_str(text);
                f.0.push('\n');
                f.1 += 1;
                Ok(Line::Part)
            }
            "end" => {
                let f: Vec<&str> = rest.split(' ').collect();
                let [name, lines, bytes] = f[..] else { return Err(bad()) };
                let (lines, bytes): (u64, u64) = (lines.parse().map_err(|_| bad())?, bytes.parse().map_err(|_| bad())?);
                if !file_name_ok(name) {
                    return Err(bad());
                }
                let (text, got) = self.open.remove(name).unwrap_or_default();
                if got != lines || text.len() as u64 != bytes {
                    return Err(ReadError::Incomplete {
                        name: name.into(),
                        lines,
                        got,
                        bytes,
                        got_bytes: text.len() as u64,
                    });
                }
                Ok(Line::File(name.into(), text))
            }
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_progress_come_back_as_they_were_written_between_other_lines() {
        let mut out = Vec::new();
        progress(&mut out, 3).unwrap();
        file(&mut out, "worker-0.steps.csv", "worker,step\n0,1\n0,2\n").unwrap();
        let text = String::from_utf8(out).unwrap();
        // The runtime's stderr lines land between them, line by line.
        let mut lines: Vec<&str> = text.lines().collect();
        lines.insert(2, "worker0: 2 steps in 0.01 s");
        let mut r = Reader::new();
        let read: Vec<Line> = lines.iter().map(|l| r.line(l).unwrap()).collect();
        assert_eq!(read[0], Line::Progress(3));
        assert_eq!(read[2], Line::Log("worker0: 2 steps in 0.01 s"));
        assert_eq!(read.last().unwrap(), &Line::File("worker-0.steps.csv".into(), "worker,step\n0,1\n0,2\n".into()));
    }

    #[test]
    fn a_cut_file_or_a_path_is_refused() {
        let mut out = Vec::new();
        file(&mut out, "worker-0.ops.csv", "a\nb\nc\n").unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut r = Reader::new();
        // Rotation drops the middle line.
        for (k, l) in text.lines().enumerate() {
            if k == 1 {
                continue;
            }
            let got = r.line(l);
            if l.contains(" end ") {
                assert!(matches!(got, Err(ReadError::Incomplete { lines: 3, got: 2, .. })), "{got:?}");
            }
        }
        let mut r = Reader::new();
        assert!(r.line("@topolab line ../etc/passwd root").is_err());
        assert!(r.line("@topolab progress many").is_err());
    }
}
