//! `replay --plot DIR`: reserved against live bytes over the trace, one panel per
//! configuration, as SVG and PNG.

use std::error::Error;
use std::path::{Path, PathBuf};

use hetmem::record::ReplayOutcome;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::bench::plot::{register_font, Drawn, FONT};

const LIVE: RGBColor = RGBColor(31, 119, 180);
const RESERVED: RGBColor = RGBColor(255, 127, 14);

/// Writes `replay.svg` and `replay.png` into `dir`; the files written.
pub fn write(
    results: &[ReplayOutcome],
    dir: &Path,
    title: &str,
) -> Result<Vec<PathBuf>, Box<dyn Error>> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    register_font()?;
    let size = (900, 80 + 260 * results.len().max(1) as u32);
    let svg = dir.join("replay.svg");
    let png = dir.join("replay.png");
    draw(
        &SVGBackend::new(&svg, size).into_drawing_area(),
        results,
        title,
    )?;
    draw(
        &BitMapBackend::new(&png, size).into_drawing_area(),
        results,
        title,
    )?;
    Ok(vec![svg, png])
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    results: &[ReplayOutcome],
    title: &str,
) -> Drawn
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let root = root.titled(title, (FONT, 16))?;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    for (outcome, area) in results
        .iter()
        .zip(root.split_evenly((results.len().max(1), 1)))
    {
        let last = outcome.curve.last().map_or(1, |p| p.event.max(1));
        let top = outcome
            .curve
            .iter()
            .map(|p| mib(p.reserved.max(p.live)))
            .fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(&area)
            .caption(
                format!(
                    "{}: peak reserved {:.2}× peak live",
                    outcome.config.name(),
                    outcome.reserved_ratio()
                ),
                (FONT, 14),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0..last, 0.0..top * 1.05)?;
        chart
            .configure_mesh()
            .x_desc("event")
            .y_desc("MiB")
            .label_style((FONT, 11))
            .draw()?;
        let series = [("reserved", RESERVED), ("live", LIVE)];
        for (name, color) in series {
            let points = outcome.curve.iter().map(|p| {
                let bytes = if name == "live" { p.live } else { p.reserved };
                (p.event, mib(bytes))
            });
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 12))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
    }
    root.present()?;
    Ok(())
}
