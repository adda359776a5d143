//! Charts, each drawn twice from the same code: as SVG (for HTML and Markdown) and as PNG.
//!
//! Text is rendered with DejaVu Sans, bundled in the binary (crate `dejavu`), so charts render
//! the same on a machine without system fonts.

use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

/// A chart in both formats, with the data behind it.
#[derive(Debug, Clone)]
pub struct Chart {
    /// File stem, e.g. "scaling".
    pub name: String,
    /// Title.
    pub title: String,
    /// SVG text.
    pub svg: String,
    /// PNG bytes.
    pub png: Vec<u8>,
    /// CSV behind the chart.
    pub csv: String,
}

/// Size of every chart, pixels.
pub const SIZE: (u32, u32) = (900, 520);

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// The i-th series colour: the palette, then hues a golden angle apart (so that no two series
/// of a chart share a colour, however many there are).
fn color(i: usize) -> RGBColor {
    if i < COLORS.len() {
        return COLORS[i];
    }
    let h = ((i - COLORS.len()) as f64 * 0.618_034 + 0.05).fract() * 6.0;
    let (s, l) = (0.65, if i.is_multiple_of(2) { 0.42 } else { 0.55 });
    let c = (1.0 - (2.0 * l - 1.0_f64).abs()) * s;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = l - c / 2.0;
    let to = |v: f64| ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    RGBColor(to(r), to(g), to(b))
}

fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Without a registered font every text draw fails with the ab_glyph backend.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold());
    });
}

type DrawResult = Result<(), String>;

/// Draws a chart with `$draw` (generic over the backend) as SVG and as PNG.
macro_rules! render {
    ($name:expr, $title:expr, $csv:expr, $draw:ident, $c:expr) => {{
        register_fonts();
        let mut svg = String::new();
        $draw(SVGBackend::with_string(&mut svg, SIZE).into_drawing_area(), $c)?;
        let mut rgb = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
        $draw(BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area(), $c)?;
        encode($name, $title, $csv, svg, &rgb)
    }};
}

/// Wraps the drawn SVG and the RGB buffer (PNG-encoded) into a [`Chart`].
fn encode(name: &str, title: &str, csv: String, svg: String, rgb: &[u8]) -> Result<Chart, String> {
    let mut png = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png, SIZE.0, SIZE.1);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| e.to_string())?;
        w.write_image_data(rgb).map_err(|e| e.to_string())?;
    }
    Ok(Chart { name: name.into(), title: title.into(), svg, png, csv })
}

/// Range of `xs` padded by 5% (and never empty).
fn padded(lo: f64, hi: f64) -> std::ops::Range<f64> {
    let (lo, hi) =
        if (hi - lo).abs() < 1e-12 { (lo - 0.5 * lo.abs().max(1.0), hi + 0.5 * hi.abs().max(1.0)) } else { (lo, hi) };
    let pad = (hi - lo) * 0.05;
    (lo - pad)..(hi + pad)
}

/// Draws the series legend of `$chart` at `$pos`, the same way on every chart.
macro_rules! legend {
    ($chart:expr, $pos:ident) => {
        $chart
            .configure_series_labels()
            .position(SeriesLabelPosition::$pos)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?
    };
}

macro_rules! draw_fn {
    ($name:ident, |$root:ident, $data:ident : $ty:ty| $body:block) => {
        fn $name<DB: DrawingBackend>($root: DrawingArea<DB, Shift>, $data: $ty) -> DrawResult
        where
            DB::ErrorType: 'static,
        {
            (|| -> Result<(), Box<dyn std::error::Error>> { $body })().map_err(|e| e.to_string())
        }
    };
}

/// One line of points.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points (x, y).
    pub points: Vec<(f64, f64)>,
}

/// Lines with markers, for samples/s vs workers (one line per PS count).
pub struct LineChart {
    /// Title.
    pub title: String,
    /// X axis label with unit.
    pub x_label: String,
    /// Y axis label with unit.
    pub y_label: String,
    /// Series.
    pub series: Vec<Series>,
}

draw_fn!(draw_lines, |root, c: &LineChart| {
    root.fill(&WHITE)?;
    let xs = c.series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = c.series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let y1 = ys.fold(0.0f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(&c.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(padded(x0, x1), 0.0..(y1 * 1.1).max(1e-9))?;
    chart.configure_mesh().x_desc(&c.x_label).y_desc(&c.y_label).label_style(("sans-serif", 14)).draw()?;
    for (i, s) in c.series.iter().enumerate() {
        let col = color(i);
        chart
            .draw_series(LineSeries::new(s.points.clone(), col.stroke_width(2)))?
            .label(&s.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2)));
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 4, col.filled())))?;
    }
    legend!(chart, UpperLeft);
    root.present()?;
    Ok(())
});

/// Renders a line chart.
pub fn lines(name: &str, c: &LineChart) -> Result<Chart, String> {
    let mut csv = format!("series,{},{}\n", quote(&c.x_label), quote(&c.y_label));
    for s in &c.series {
        for (x, y) in &s.points {
            csv.push_str(&format!("{},{x},{y}\n", quote(&s.label)));
        }
    }
    render!(name, &c.title, csv, draw_lines, c)
}

/// Stacked bars of step-time parts.
pub struct BreakdownChart {
    /// Title.
    pub title: String,
    /// One bar per label: (label, compute s, exposed communication s, wait s).
    pub bars: Vec<(String, f64, f64, f64)>,
}

const PARTS: [&str; 3] = ["compute", "exposed communication", "wait for aggregation"];

draw_fn!(draw_breakdown, |root, c: &BreakdownChart| {
    root.fill(&WHITE)?;
    let n = c.bars.len().max(1);
    let top = c.bars.iter().map(|b| b.1 + b.2 + b.3).fold(0.0f64, f64::max).max(1e-9) * 1.15;
    // Past 16 bars the names would overlap: number them (the CSV beside the chart, and the
    // configurations table, carry the names) and label every k-th.
    let every = n.div_ceil(16);
    let labels: Vec<String> = c
        .bars
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if every == 1 {
                b.0.clone()
            } else if i.is_multiple_of(every) {
                format!("#{}", i + 1)
            } else {
                String::new()
            }
        })
        .collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(&c.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(60)
        .y_label_area_size(80)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n + 1)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_desc(if every == 1 { "configuration" } else { "configuration (# = row of the configurations table)" })
        .y_desc("step time (s)")
        .label_style(("sans-serif", 13))
        .draw()?;
    for (k, part) in PARTS.iter().enumerate() {
        let col = color(k);
        chart
            .draw_series(c.bars.iter().enumerate().map(move |(i, b)| {
                let vals = [b.1, b.2, b.3];
                let y0: f64 = vals[..k].iter().sum();
                let y1 = y0 + vals[k];
                Rectangle::new([(i as f64 - 0.35, y0), (i as f64 + 0.35, y1)], col.filled())
            }))?
            .label(*part)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], col.filled()));
    }
    legend!(chart, UpperRight);
    root.present()?;
    Ok(())
});

/// Renders a step-time breakdown.
pub fn breakdown(name: &str, c: &BreakdownChart) -> Result<Chart, String> {
    let mut csv = String::from("configuration,compute_s,exposed_comm_s,wait_s\n");
    for b in &c.bars {
        csv.push_str(&format!("{},{},{},{}\n", quote(&b.0), b.1, b.2, b.3));
    }
    render!(name, &c.title, csv, draw_breakdown, c)
}

/// Predicted against measured, with y = x and a +-10% band.
pub struct ScatterChart {
    /// Title.
    pub title: String,
    /// X axis label (predicted, with unit).
    pub x_label: String,
    /// Y axis label (measured, with unit).
    pub y_label: String,
    /// Points: (label, x, y).
    pub points: Vec<(String, f64, f64)>,
}

draw_fn!(draw_scatter, |root, c: &ScatterChart| {
    root.fill(&WHITE)?;
    let hi = c.points.iter().map(|p| p.1.max(p.2)).fold(0.0f64, f64::max).max(1e-9) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(&c.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..hi, 0.0..hi)?;
    chart.configure_mesh().x_desc(&c.x_label).y_desc(&c.y_label).label_style(("sans-serif", 14)).draw()?;
    let band = RGBColor(160, 200, 255);
    chart
        .draw_series(std::iter::once(Polygon::new(
            // Between y = 1.1 x and y = 0.9 x, clipped to the square plot.
            vec![(0.0, 0.0), (hi / 1.1, hi), (hi, hi), (hi, hi * 0.9)],
            band.mix(0.5).filled(),
        )))?
        .label("+-10%")
        .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], band.mix(0.5).filled()));
    chart
        .draw_series(LineSeries::new(vec![(0.0, 0.0), (hi, hi)], BLACK.stroke_width(1)))?
        .label("y = x")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    chart
        .draw_series(c.points.iter().map(|p| Circle::new((p.1, p.2), 5, color(3).filled())))?
        .label("configurations")
        .legend(|(x, y)| Circle::new((x + 7, y), 5, color(3).filled()));
    legend!(chart, UpperLeft);
    root.present()?;
    Ok(())
});

/// Renders a predicted-vs-measured scatter.
pub fn scatter(name: &str, c: &ScatterChart) -> Result<Chart, String> {
    let mut csv = format!("label,{},{}\n", quote(&c.x_label), quote(&c.y_label));
    for p in &c.points {
        csv.push_str(&format!("{},{},{}\n", quote(&p.0), p.1, p.2));
    }
    render!(name, &c.title, csv, draw_scatter, c)
}

/// A timeline: one row per host lane, bars for busy spans.
pub struct TimelineChart {
    /// Title.
    pub title: String,
    /// Row labels, top to bottom.
    pub rows: Vec<String>,
    /// Spans: (row, start ms, end ms, lane kind for the color).
    pub spans: Vec<(usize, f64, f64, usize)>,
    /// Legend of lane kinds.
    pub kinds: Vec<String>,
}

draw_fn!(draw_timeline, |root, c: &TimelineChart| {
    root.fill(&WHITE)?;
    let n = c.rows.len().max(1);
    let t1 = c.spans.iter().map(|s| s.2).fold(0.0f64, f64::max).max(1e-6);
    let rows = c.rows.clone();
    let mut chart = ChartBuilder::on(&root)
        .caption(&c.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(140)
        .build_cartesian_2d(0.0..t1 * 1.02, -0.5..n as f64 - 0.5)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n + 1)
        .y_label_formatter(&|y| {
            let i = y.round();
            if (y - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
                rows.get(n - 1 - i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_desc("time since step start (ms)")
        .y_desc("host lane")
        .label_style(("sans-serif", 12))
        .draw()?;
    for (k, kind) in c.kinds.iter().enumerate() {
        let col = color(k);
        chart
            .draw_series(c.spans.iter().filter(|s| s.3 == k).map(move |s| {
                let y = (n - 1 - s.0) as f64;
                Rectangle::new([(s.1, y - 0.3), (s.2.max(s.1 + t1 * 1e-4), y + 0.3)], col.filled())
            }))?
            .label(kind.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], col.filled()));
    }
    legend!(chart, LowerRight);
    root.present()?;
    Ok(())
});

/// Renders a timeline.
pub fn timeline(name: &str, c: &TimelineChart) -> Result<Chart, String> {
    let mut csv = String::from("row,kind,start_ms,end_ms\n");
    for s in &c.spans {
        csv.push_str(&format!("{},{},{},{}\n", quote(&c.rows[s.0]), quote(&c.kinds[s.3]), s.1, s.2));
    }
    render!(name, &c.title, csv, draw_timeline, c)
}

/// Time to target against cost, with the Pareto front.
pub struct ParetoChart {
    /// Title.
    pub title: String,
    /// Currency of the cost axis.
    pub currency: String,
    /// Points: (label, time h, cost).
    pub points: Vec<(String, f64, f64)>,
    /// Indices of the front, sorted by time.
    pub front: Vec<usize>,
}

draw_fn!(draw_pareto, |root, c: &ParetoChart| {
    root.fill(&WHITE)?;
    let (x0, x1) = c.points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (y0, y1) = c.points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.2), b.max(p.2)));
    let mut chart = ChartBuilder::on(&root)
        .caption(&c.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(90)
        .build_cartesian_2d(padded(x0, x1), padded(y0, y1))?;
    let cost_label = format!("cost ({})", c.currency);
    chart.configure_mesh().x_desc("time to target (h)").y_desc(&cost_label).label_style(("sans-serif", 14)).draw()?;
    chart
        .draw_series(c.points.iter().map(|p| Circle::new((p.1, p.2), 4, color(7).filled())))?
        .label("configurations")
        .legend(|(x, y)| Circle::new((x + 7, y), 4, color(7).filled()));
    let front: Vec<(f64, f64)> = c.front.iter().map(|&i| (c.points[i].1, c.points[i].2)).collect();
    chart
        .draw_series(LineSeries::new(front.clone(), color(3).stroke_width(2)))?
        .label("Pareto front")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color(3).stroke_width(2)));
    chart.draw_series(front.iter().map(|&p| Circle::new(p, 5, color(3).filled())))?;
    legend!(chart, UpperRight);
    root.present()?;
    Ok(())
});

/// Renders a time-vs-cost chart.
pub fn pareto(name: &str, c: &ParetoChart) -> Result<Chart, String> {
    let mut csv = format!("configuration,time_to_target_h,cost_{},on_front\n", c.currency);
    for (i, p) in c.points.iter().enumerate() {
        csv.push_str(&format!("{},{},{},{}\n", quote(&p.0), p.1, p.2, c.front.contains(&i)));
    }
    render!(name, &c.title, csv, draw_pareto, c)
}

/// Quotes a CSV field when it needs it.
pub fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

#[cfg(test)]
mod color_tests {
    use super::*;

    #[test]
    fn forty_series_get_forty_colours() {
        let mut seen: Vec<(u8, u8, u8)> = (0..40)
            .map(|i| {
                let c = color(i);
                (c.0, c.1, c.2)
            })
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 40);
    }
}
