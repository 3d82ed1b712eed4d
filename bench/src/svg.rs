//! SVG plots of a report (plotters, SVG backend only): received frame rate against frame size
//! per topology, and the UDP ping-pong RTT percentiles per topology.

use std::path::Path;

use plotters::prelude::*;

use crate::report::{topology_order, Metric, Report, Rfc2544Row};

/// Colour per topology, stable across plots (a poll mode's variant in its own shade).
fn colour(topology: &str) -> RGBColor {
    match topology {
        "tapway" | "tapway-busy" => RGBColor(0x1f, 0x77, 0xb4),
        "tapway-adaptive" => RGBColor(0x17, 0xbe, 0xcf),
        "floor" | "floor-busy" => RGBColor(0x2c, 0xa0, 0x2c),
        "floor-adaptive" => RGBColor(0xbc, 0xbd, 0x22),
        "bridge" => RGBColor(0xd6, 0x27, 0x28),
        _ => RGBColor(0x7f, 0x7f, 0x7f),
    }
}

/// The topologies named in `names`, once each, in the report's column order.
fn topologies<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<&str> = Vec::new();
    for n in names {
        if !v.contains(&n) {
            v.push(n);
        }
    }
    v.sort_by_key(|t| topology_order(t));
    v
}

fn label(topology: &str) -> String {
    if topology == "veth" {
        "generator only (veth)".into()
    } else {
        topology.to_string()
    }
}

/// Writes the plots to `path`.
pub fn write(report: &Report, path: &Path) -> Result<(), String> {
    let panels = if report.rfc2544.is_empty() { 2 } else { 3 };
    let root = SVGBackend::new(path, (960, 450 * panels)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let areas = root.split_evenly((panels as usize, 1));
    // One scenario's figures: pod-pod's, else the first scenario that has any (pod-vip and
    // cross-node use the same metric names; mixing them would plot whichever came first).
    let scenario = report
        .scenarios
        .iter()
        .find(|s| s.name == "pod-pod" && !s.metrics.is_empty())
        .or_else(|| report.scenarios.iter().find(|s| !s.metrics.is_empty()));
    let metrics: Vec<&Metric> = scenario.map(|s| s.metrics.iter().collect()).unwrap_or_default();
    throughput(&areas[0], &metrics).map_err(|e| e.to_string())?;
    rtt(&areas[1], &metrics).map_err(|e| e.to_string())?;
    if let Some(a) = areas.get(2) {
        ndr(a, &report.rfc2544).map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;
type SizeChart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// A chart of Mframes/s (up to `ymax`) over frame-size categories (`sizes`, labelled `… B`).
fn size_chart<'a, 'b>(
    area: &'a Area<'b>,
    caption: &str,
    sizes: &[String],
    ymax: f64,
) -> Result<SizeChart<'a, 'b>, Box<dyn std::error::Error>> {
    let n = sizes.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0.0f64..ymax)?;
    chart
        .configure_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                sizes.get(i as usize).map_or(String::new(), |s| format!("{s} B"))
            } else {
                String::new()
            }
        })
        .x_desc("frame size")
        .y_desc("Mframes/s")
        .draw()?;
    Ok(chart)
}

fn throughput(area: &Area<'_>, metrics: &[&Metric]) -> DrawResult {
    let rx: Vec<&&Metric> = metrics.iter().filter(|m| m.metric == "rx_pps").collect();
    // Sizes in first-seen order (imix last if present), as x categories.
    let mut sizes: Vec<String> = Vec::new();
    for m in &rx {
        if let Some(v) = &m.variant {
            if !sizes.contains(v) {
                sizes.push(v.clone());
            }
        }
    }
    let ymax = rx.iter().map(|m| m.max).fold(0.0f64, f64::max).max(1.0) / 1e6 * 1.15;
    let mut chart =
        size_chart(area, "pod → pod frame rate, flat out (Mframes/s received; bars: min–max)", &sizes, ymax)?;
    for topo in topologies(rx.iter().map(|m| m.topology.as_str())) {
        let pts: Vec<(f64, &Metric)> = sizes
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                rx.iter()
                    .find(|m| m.topology == topo && m.variant.as_deref() == Some(s))
                    .map(|m| (i as f64, **m))
            })
            .collect();
        if pts.is_empty() {
            continue;
        }
        let c = colour(topo);
        chart
            .draw_series(LineSeries::new(pts.iter().map(|(x, m)| (*x, m.median / 1e6)), c.stroke_width(2)))?
            .label(label(topo))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(pts.iter().map(|(x, m)| Circle::new((*x, m.median / 1e6), 4, c.filled())))?;
        chart.draw_series(
            pts.iter().map(|(x, m)| {
                PathElement::new(vec![(*x, m.min / 1e6), (*x, m.max / 1e6)], c.stroke_width(1))
            }),
        )?;
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
    Ok(())
}

fn rtt(area: &Area<'_>, metrics: &[&Metric]) -> DrawResult {
    let pcts = [("rtt_p50_us", "p50"), ("rtt_p99_us", "p99"), ("rtt_p999_us", "p99.9")];
    let topos =
        topologies(metrics.iter().filter(|m| m.metric.starts_with("rtt_p")).map(|m| m.topology.as_str()));
    let ymax =
        metrics.iter().filter(|m| m.metric.starts_with("rtt_p")).map(|m| m.median).fold(1.0f64, f64::max)
            * 2.0;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "UDP ping-pong round trip, 64 B, one request outstanding (µs, log scale, median over runs)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..(pcts.len() as f64 - 0.5), (1.0f64..ymax).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(pcts.len())
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                pcts.get(i as usize).map_or(String::new(), |p| p.1.to_string())
            } else {
                String::new()
            }
        })
        .x_desc("percentile")
        .y_desc("µs")
        .draw()?;
    let w = 0.8 / topos.len().max(1) as f64;
    for (ti, topo) in topos.iter().enumerate() {
        let c = colour(topo);
        let bars: Vec<(f64, f64)> = pcts
            .iter()
            .enumerate()
            .filter_map(|(i, (m, _))| {
                // The first request rate (the lowest by default) when there are several.
                metrics.iter().find(|x| x.metric == *m && x.topology == *topo).map(|x| (i as f64, x.median))
            })
            .collect();
        chart
            .draw_series(bars.iter().map(|(x, v)| {
                let x0 = x - 0.4 + w * ti as f64;
                Rectangle::new([(x0, 1.0), (x0 + w * 0.9, v.max(1.0))], c.filled())
            }))?
            .label(label(topo))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], c.filled()));
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
    Ok(())
}

fn ndr(area: &Area<'_>, rows: &[Rfc2544Row]) -> DrawResult {
    let mut sizes: Vec<usize> = rows.iter().map(|r| r.size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let ymax = rows.iter().map(|r| r.pdr_pps.max(r.ndr_pps)).fold(0.0f64, f64::max).max(1.0) / 1e6 * 1.15;
    let labels: Vec<String> = sizes.iter().map(|s| s.to_string()).collect();
    let mut chart =
        size_chart(area, "RFC 2544: NDR (solid) and PDR (dashed), Mframes/s per frame size", &labels, ymax)?;
    for topo in topologies(rows.iter().map(|r| r.topology.as_str())) {
        let pts: Vec<(f64, &Rfc2544Row)> = sizes
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                rows.iter().find(|r| r.topology == topo && r.size == *s).map(|r| (i as f64, r))
            })
            .collect();
        if pts.is_empty() {
            continue;
        }
        let c = colour(topo);
        chart
            .draw_series(LineSeries::new(pts.iter().map(|(x, r)| (*x, r.ndr_pps / 1e6)), c.stroke_width(2)))?
            .label(format!("{} NDR", label(topo)))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(pts.iter().map(|(x, r)| Circle::new((*x, r.ndr_pps / 1e6), 4, c.filled())))?;
        // Dashed PDR: short segments between the points.
        for w in pts.windows(2) {
            let (x0, y0, x1, y1) = (w[0].0, w[0].1.pdr_pps / 1e6, w[1].0, w[1].1.pdr_pps / 1e6);
            let segs = 12;
            chart.draw_series((0..segs).step_by(2).map(|k| {
                let t0 = k as f64 / segs as f64;
                let t1 = (k + 1) as f64 / segs as f64;
                PathElement::new(
                    vec![
                        (x0 + (x1 - x0) * t0, y0 + (y1 - y0) * t0),
                        (x0 + (x1 - x0) * t1, y0 + (y1 - y0) * t1),
                    ],
                    c.stroke_width(1),
                )
            }))?;
        }
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn writes_an_svg_with_both_plots() {
        let mut r = crate::report::tests::sample();
        let mut c = crate::report::Collector::default();
        for t in ["tapway", "bridge"] {
            c.add("rtt_p50_us", None, t, "µs", 20.0);
            c.add("rtt_p99_us", None, t, "µs", 50.0);
            c.add("rtt_p999_us", None, t, "µs", 90.0);
        }
        r.scenarios[0].metrics.extend(c.finish());
        let dir = std::env::temp_dir().join(format!("tapway-bench-svg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("r.svg");
        write(&r, &p).unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(s.starts_with("<svg"), "{}", &s[..100.min(s.len())]);
        assert!(s.contains("frame rate") && s.contains("ping-pong"), "both captions");
        assert!(
            s.contains("generator only (veth)") && s.contains("tapway") && s.contains("bridge"),
            "legend"
        );
        assert!(s.contains("<polyline"), "throughput lines");
        assert!(s.contains("RFC 2544"), "the NDR/PDR panel, since the sample has an RFC 2544 row");
    }
}
