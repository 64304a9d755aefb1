//! SVG plots of a run (`--plot DIR`): IOPS and MB/s over time, latency over
//! time (mean and p99 per second), the latency distribution (percentile on a
//! "nines" axis, as HDR histograms are usually drawn); and the scaling curve
//! of a sweep (IOPS and p99 against the swept parameter).
//!
//! Invariants: plots are drawn from a [`Report`] (or sweep points) only, so
//! they show exactly what the JSON holds; an empty series still gives a
//! valid (empty) chart rather than an error.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::report::Report;

/// A plot could not be written.
#[derive(Debug, thiserror::Error)]
#[error("plotting {path}: {message}")]
pub struct PlotError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

fn fail(path: &Path) -> impl Fn(String) -> PlotError + '_ {
    move |message| PlotError { path: path.to_path_buf(), message }
}

const SIZE: (u32, u32) = (960, 540);

/// One line of a chart.
struct Line<'a> {
    name: &'a str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// Draws `lines` on one chart with a linear x axis.
fn chart(path: &Path, title: &str, x_desc: &str, y_desc: &str, lines: &[Line<'_>]) -> Result<(), PlotError> {
    let err = fail(path);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let all = lines.iter().flat_map(|l| l.points.iter());
    let x_max = all.clone().map(|p| p.0).fold(1.0f64, f64::max);
    let x_min = all.clone().map(|p| p.0).fold(x_max, f64::min).min(0.0);
    let y_max = all.map(|p| p.1).fold(1.0f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(x_min..x_max, 0f64..y_max)
        .map_err(|e| err(e.to_string()))?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x_desc).y_desc(y_desc).y_label_formatter(&compact);
    mesh.draw().map_err(|e| err(e.to_string()))?;
    for line in lines {
        let color = line.color;
        chart
            .draw_series(LineSeries::new(line.points.iter().copied(), color.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label(line.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))
}

/// An axis label: `412k`, `1.2M`, `17.5`.
fn compact(v: &f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 || *v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn title(report: &Report, what: &str) -> String {
    let p = &report.params;
    let rw = serde_json::to_value(p.rw).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
    let label = report.label.as_deref().map(|l| format!("{l}: ")).unwrap_or_default();
    format!("{label}{what} — {rw} bs={} qd={} queues={}", p.bs, p.iodepth, p.queues)
}

/// Writes `iops.svg`, `latency.svg` and `latency_cdf.svg` into `dir`.
pub fn plot_run(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
    std::fs::create_dir_all(dir).map_err(|e| fail(dir)(e.to_string()))?;
    let t = |row: &crate::report::SeriesRow| row.t_s as f64 + 0.5;
    let iops = dir.join("iops.svg");
    chart(
        &iops,
        &title(report, "IOPS per second"),
        "time (s)",
        "IOPS",
        &[Line { name: "IOPS", color: BLUE, points: report.series.iter().map(|r| (t(r), r.iops as f64)).collect() }],
    )?;
    let bandwidth = dir.join("bandwidth.svg");
    chart(
        &bandwidth,
        &title(report, "bandwidth per second"),
        "time (s)",
        "MB/s",
        &[Line { name: "MB/s", color: RED, points: report.series.iter().map(|r| (t(r), r.mb_per_s)).collect() }],
    )?;
    let latency = dir.join("latency.svg");
    chart(
        &latency,
        &title(report, "latency per second"),
        "time (s)",
        "latency (µs)",
        &[
            Line { name: "mean", color: BLUE, points: report.series.iter().map(|r| (t(r), r.lat_mean_us)).collect() },
            Line { name: "p99", color: RED, points: report.series.iter().map(|r| (t(r), r.lat_p99_us)).collect() },
        ],
    )?;
    let cdf = dir.join("latency_cdf.svg");
    let points: Vec<(f64, f64)> = report
        .latency_cdf
        .iter()
        .filter(|p| p.percentile < 100.0)
        .map(|p| (-(1.0 - p.percentile / 100.0).log10(), p.lat_us.max(0.1)))
        .collect();
    cdf_chart(&cdf, &title(report, "latency distribution"), &points)?;
    Ok(vec![iops, bandwidth, latency, cdf])
}

/// The latency distribution: "nines" on x, log latency on y.
fn cdf_chart(path: &Path, title: &str, points: &[(f64, f64)]) -> Result<(), PlotError> {
    let err = fail(path);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let x_max = points.iter().map(|p| p.0).fold(1.0f64, f64::max);
    let y_min = points.iter().map(|p| p.1).fold(f64::MAX, f64::min).min(1.0);
    let y_max = points.iter().map(|p| p.1).fold(10.0f64, f64::max) * 1.5;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .margin_right(45)
        .build_cartesian_2d(0f64..x_max, (y_min..y_max).log_scale())
        .map_err(|e| err(e.to_string()))?;
    let nines_label = |x: &f64| {
        let p = 100.0 * (1.0 - 10f64.powf(-x));
        format!("{p:.*}%", (x.round() as usize).saturating_sub(2))
    };
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs, log)")
        .x_label_formatter(&nines_label)
        .x_labels(6)
        .y_label_formatter(&compact)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    chart.draw_series(LineSeries::new(points.iter().copied(), BLUE.stroke_width(2))).map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))
}

/// One point of a sweep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScalingPoint {
    /// The swept parameter's value.
    pub value: u64,
    /// IOPS at it.
    pub iops: f64,
    /// p99 latency at it, µs.
    pub p99_us: f64,
}

/// Writes `scaling.svg`: IOPS (top) and p99 latency (bottom) against the
/// swept parameter, on a log2 axis when the values grow geometrically.
pub fn plot_scaling(points: &[ScalingPoint], key: &str, label: Option<&str>, dir: &Path) -> Result<PathBuf, PlotError> {
    std::fs::create_dir_all(dir).map_err(|e| fail(dir)(e.to_string()))?;
    let path = dir.join("scaling.svg");
    let err = fail(&path);
    let log = points.len() > 2 && points.iter().all(|p| p.value > 0);
    let x = |v: u64| if log { (v as f64).log2() } else { v as f64 };
    let root = SVGBackend::new(&path, (SIZE.0, SIZE.1 * 3 / 2)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let (top, bottom) = root.split_vertically(SIZE.1 * 3 / 4);
    let x_min = points.iter().map(|p| x(p.value)).fold(f64::MAX, f64::min).min(x(1));
    let x_max = points.iter().map(|p| x(p.value)).fold(1.0, f64::max) * 1.05;
    let x_fmt = |v: &f64| if log { format!("{}", 2f64.powf(*v).round()) } else { format!("{v:.0}") };
    let prefix = label.map(|l| format!("{l}: ")).unwrap_or_default();
    for (area, name, y_desc, color, get) in [
        (&top, "IOPS", "IOPS", BLUE, (|p: &ScalingPoint| p.iops) as fn(&ScalingPoint) -> f64),
        (&bottom, "p99 latency", "p99 (µs)", RED, |p: &ScalingPoint| p.p99_us),
    ] {
        let y_max = points.iter().map(get).fold(1.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{prefix}{name} vs {key}"), ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(80)
            .build_cartesian_2d(x_min..x_max, 0f64..y_max)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc(key)
            .y_desc(y_desc)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&compact)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        let series: Vec<(f64, f64)> = points.iter().map(|p| (x(p.value), get(p))).collect();
        chart
            .draw_series(LineSeries::new(series.iter().copied(), color.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(series.iter().map(|&(a, b)| Circle::new((a, b), 4, color.filled())))
            .map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))?;
    drop(root);
    Ok(dir.join("scaling.svg"))
}
