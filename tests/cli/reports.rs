//! Reports: files, charts, self-containment, and a real browser rendering the HTML.

use std::path::Path;
use std::process::Command;

use super::*;

fn tmp(name: &str) -> super::TempDir {
    super::TempDir::new(&format!("report-{name}"))
}

/// Runs a sweep and a run with reports; returns (the scratch directory that holds them, sweep
/// report dir, comparison report dir).
fn make_reports(tag: &str) -> (super::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let base = tmp(tag);
    let (sweep, sweep_report) = (base.join("sweep"), base.join("sweep-report"));
    let out = topolab(&[
        "sweep",
        "scenarios/examples/inception-v3-sweep.toml",
        "--out",
        sweep.to_str().unwrap(),
        "--report",
        sweep_report.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (a, b) = (base.join("a"), base.join("b"));
    for (dir, f) in [
        (&a, "scenarios/examples/inception-v3-64w-8ps.toml"),
        (&b, "scenarios/examples/vgg-16-backup-partitioned.toml"),
    ] {
        let out = topolab(&["run", f, "--out", dir.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let cmp = base.join("compare");
    let out = topolab(&["report", a.to_str().unwrap(), b.to_str().unwrap(), "--out", cmp.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    (base, sweep_report, cmp)
}

fn files_in(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

#[test]
fn a_sweep_report_has_every_file_with_the_scaling_chart() {
    let (_scratch, rep, cmp) = make_reports("files");
    for dir in [&rep, &cmp] {
        for f in ["report.md", "report.html"] {
            assert!(std::fs::metadata(dir.join(f)).unwrap().len() > 0, "{f} in {}", dir.display());
        }
        let charts = files_in(&dir.join("charts"));
        let data = files_in(&dir.join("data"));
        assert!(!charts.is_empty() && !data.is_empty());
        for f in charts.iter().chain(&data) {
            assert!(std::fs::metadata(f).unwrap().len() > 0, "{} is empty", f.display());
        }
        // Every SVG has a PNG twin and data behind it.
        for svg in charts.iter().filter(|p| p.extension().unwrap() == "svg") {
            let stem = svg.file_stem().unwrap().to_string_lossy().to_string();
            assert!(dir.join("charts").join(format!("{stem}.png")).exists());
            assert!(dir.join("data").join(format!("{stem}.csv")).exists());
        }
        for png_path in charts.iter().filter(|p| p.extension().unwrap() == "png") {
            let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png_path).unwrap()));
            let reader = decoder.read_info().unwrap();
            let info = reader.info();
            assert_eq!((info.width, info.height), (900, 520), "{}", png_path.display());
        }
        let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
        for needle in ["http://", "https://", "src=", "url(", "<link", "<script"] {
            assert!(!html.contains(needle), "report.html must be self-contained, found `{needle}`");
        }
    }
    let scaling = std::fs::read_to_string(rep.join("charts/sweep-scaling.svg")).unwrap();
    for label in ["workers", "throughput (samples/s)", "1 PS", "8 PS"] {
        assert!(scaling.contains(label), "scaling chart lacks `{label}`");
    }
    let breakdown = std::fs::read_to_string(rep.join("charts/sweep-breakdown.svg")).unwrap();
    assert!(breakdown.contains("step time (s)") && breakdown.contains("exposed communication"));
    let pareto = std::fs::read_to_string(rep.join("charts/sweep-pareto.svg")).unwrap();
    assert!(pareto.contains("time to target (h)") && pareto.contains("Pareto front"));
    let md = std::fs::read_to_string(cmp.join("report.md")).unwrap();
    assert!(md.contains("B vs A") && md.contains("step time p50 (s)"), "comparison table in report.md");
    let scatter = std::fs::read_to_string(cmp.join("charts/comparison-scatter.svg")).unwrap();
    assert!(scatter.contains("A: predicted (s)") && scatter.contains("+-10%") && scatter.contains("y = x"));
    let timeline = std::fs::read_to_string(cmp.join("charts/1-inception-v3-64w-8ps-timeline.svg")).unwrap();
    assert!(timeline.contains("time since step start (ms)") && timeline.contains("worker0 gpu"));
}

#[test]
fn report_of_a_directory_that_is_no_run_is_bad_input() {
    let out = topolab(&["report", "scenarios", "--out", tmp("bad").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not a run directory"));
}

fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| Path::new(p).exists())
}

#[test]
#[ignore = "needs Debian's chromium (apt-get install chromium): cargo test -- --ignored"]
fn a_headless_browser_renders_the_html_with_every_chart() {
    let browser =
        chromium().expect("this test needs Debian's chromium (apt-get install chromium; .ci/run installs it)");
    let _guard = super::replay::machine_lock();
    let (_scratch, rep, _) = make_reports("browser");
    let html = rep.join("report.html");
    let profile = rep.join("chromium-profile");
    let shot = rep.join("screenshot.png");
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ];
    let url = format!("file://{}", html.display());
    let dom = Command::new(browser)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", &url])
        .output()
        .unwrap();
    assert!(dom.status.success(), "chromium failed: {}", String::from_utf8_lossy(&dom.stderr));
    let dom = String::from_utf8_lossy(&dom.stdout);
    let source = std::fs::read_to_string(&html).unwrap();
    let figures = source.matches("<figure class=\"chart\"").count();
    assert!(figures >= 3);
    // Every chart figure survived parsing, each with its SVG.
    assert_eq!(dom.matches("<figure class=\"chart\"").count(), figures);
    assert_eq!(dom.matches("<svg").count(), figures);
    for id in ["chart-sweep-scaling", "chart-sweep-breakdown", "chart-sweep-pareto"] {
        assert!(dom.contains(&format!("id=\"{id}\"")), "{id} in the rendered DOM");
    }
    let out = Command::new(browser)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .args(["--window-size=1000,2400", &url])
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium screenshot failed: {}", String::from_utf8_lossy(&out.stderr));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buf).unwrap();
    let px = &buf[..frame.buffer_size()];
    let channels = frame.color_type.samples();
    let non_white = px.chunks(channels).filter(|p| p.iter().take(3).any(|&c| c < 200)).count();
    let total = px.len() / channels;
    // Charts, text and tables: far from a blank page.
    assert!(non_white * 100 > total * 3, "screenshot is nearly blank: {non_white} of {total} pixels drawn");
}

/// A run with failures gets the time-lost-against-interval chart, with its minimum at the
/// scenario's (Daly-optimal) interval, and every run the step-time distribution.
#[test]
fn a_run_with_failures_charts_time_lost_against_the_interval() {
    let d = tmp("failures");
    let (run, rep) = (d.join("run"), d.join("report"));
    let out = topolab(&[
        "run",
        "scenarios/examples/inception-v3-100w-failures.toml",
        "--out",
        run.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("(Daly's optimum)") && stdout(&out).contains("goodput"), "{}", stdout(&out));
    let csv = std::fs::read_to_string(run.join("failures.csv")).unwrap();
    let rows: Vec<(f64, bool)> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[1].parse().unwrap(), f[2] == "true")
        })
        .collect();
    let least = rows.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
    let chosen = rows.iter().find(|r| r.1).unwrap().0;
    // Daly's interval is the optimum of his own expected wall time (up to his approximation).
    assert!(chosen <= least * 1.001, "chosen {chosen} vs least {least}");
    for chart in ["failures", "step-times"] {
        let svg = std::fs::read_to_string(rep.join(format!("charts/inception-v3-100w-failures-{chart}.svg"))).unwrap();
        assert!(svg.contains("<svg"), "{chart}");
    }
}
