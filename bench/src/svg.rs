//! SVG plots of a report (plotters, SVG backend only): received frame rate against frame size
//! per topology, and the UDP ping-pong RTT percentiles per topology.

use std::path::Path;

use plotters::prelude::*;

use crate::report::{Metric, Report};

/// Colour per topology, stable across plots.
fn colour(topology: &str) -> RGBColor {
    match topology {
        "tapway" => RGBColor(0x1f, 0x77, 0xb4),
        "bridge" => RGBColor(0xd6, 0x27, 0x28),
        _ => RGBColor(0x7f, 0x7f, 0x7f),
    }
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
    let root = SVGBackend::new(path, (960, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(450);
    let metrics: Vec<&Metric> = report.scenarios.iter().flat_map(|s| s.metrics.iter()).collect();
    throughput(&top, &metrics).map_err(|e| e.to_string())?;
    rtt(&bottom, &metrics).map_err(|e| e.to_string())?;
    root.present().map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;

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
    let n = sizes.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .caption("pod → pod frame rate, flat out (Mframes/s received; bars: min–max)", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0.0f64..ymax)?;
    let sz = sizes.clone();
    chart
        .configure_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                sz.get(i as usize).map_or(String::new(), |s| format!("{s} B"))
            } else {
                String::new()
            }
        })
        .x_desc("frame size")
        .y_desc("Mframes/s")
        .draw()?;
    for topo in ["veth", "tapway", "bridge"] {
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
    let topos: Vec<&str> = ["tapway", "bridge"]
        .into_iter()
        .filter(|t| metrics.iter().any(|m| m.topology == *t && m.metric.starts_with("rtt_")))
        .collect();
    let ymax = metrics
        .iter()
        .filter(|m| m.metric.starts_with("rtt_"))
        .map(|m| m.median)
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "UDP ping-pong round trip, 64 B, one request outstanding (µs, median over runs)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..(pcts.len() as f64 - 0.5), 0.0f64..ymax)?;
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
                metrics.iter().find(|x| x.metric == *m && x.topology == *topo).map(|x| (i as f64, x.median))
            })
            .collect();
        chart
            .draw_series(bars.iter().map(|(x, v)| {
                let x0 = x - 0.4 + w * ti as f64;
                Rectangle::new([(x0, 0.0), (x0 + w * 0.9, *v)], c.filled())
            }))?
            .label(label(topo))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], c.filled()));
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
    }
}
