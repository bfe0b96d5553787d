//! `--plot DIR`: bandwidth against size for each direction, and the allocation latency
//! distributions, each beside its same-run baseline, as SVG and PNG.

use std::error::Error;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::harness::{median, per_second};
use super::report::{Measurement, Report};
use super::transfer::{SIZES, WAYS};

const HETMEM: RGBColor = RGBColor(31, 119, 180);
const BASELINE: RGBColor = RGBColor(255, 127, 14);
pub(crate) const FONT: &str = "sans-serif";

pub(crate) type Drawn = Result<(), Box<dyn Error>>;

/// Writes every plot the results allow into `dir` and returns the files written.
pub fn write(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, Box<dyn Error>> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    register_font()?;
    let mut written = Vec::new();
    let bandwidth: Vec<Direction> = WAYS
        .iter()
        .filter_map(|way| Direction::from(report, way))
        .collect();
    if !bandwidth.is_empty() {
        let size = (520 * bandwidth.len() as u32, 440);
        let picture = Picture::Bandwidth(&bandwidth);
        written.extend(picture.save(dir, "bandwidth", size, &report.title())?);
    }
    let latencies = Latency::all(report);
    if !latencies.is_empty() {
        let size = (1000, 140 + 70 * latencies.len() as u32);
        let picture = Picture::Latency(&latencies);
        written.extend(picture.save(dir, "alloc-latency", size, &report.title())?);
    }
    Ok(written)
}

/// Text in the PNGs needs font data of its own (the SVGs name the family only); an embedded
/// font keeps plots working on machines without any fonts installed.
pub(crate) fn register_font() -> Drawn {
    plotters::style::register_font(FONT, FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT)
        .map_err(|_| "the embedded plot font does not parse")?;
    Ok(())
}

/// What one file pair shows; drawn once per backend (SVG, PNG).
enum Picture<'a> {
    Bandwidth(&'a [Direction]),
    Latency(&'a [Latency]),
}

impl Picture<'_> {
    /// Draws the picture as `NAME.svg` and `NAME.png`.
    fn save(
        &self,
        dir: &Path,
        name: &str,
        size: (u32, u32),
        title: &str,
    ) -> Result<[PathBuf; 2], Box<dyn Error>> {
        let svg = dir.join(format!("{name}.svg"));
        let png = dir.join(format!("{name}.png"));
        self.draw(&SVGBackend::new(&svg, size).into_drawing_area(), title)?;
        self.draw(&BitMapBackend::new(&png, size).into_drawing_area(), title)?;
        Ok([svg, png])
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, title: &str) -> Drawn
    where
        DB::ErrorType: 'static,
    {
        match self {
            Picture::Bandwidth(directions) => draw_bandwidth(root, title, directions)?,
            Picture::Latency(rows) => draw_latencies(root, title, rows)?,
        }
        // Written out here, so that an I/O failure is an error rather than lost in a drop.
        root.present()?;
        Ok(())
    }
}

/// One direction's bandwidth figures as (log2 of the size, GB/s): hetmem's and the baseline's.
struct Direction {
    way: &'static str,
    baseline: String,
    ours: Vec<(f64, f64)>,
    theirs: Vec<(f64, f64)>,
}

impl Direction {
    fn from(report: &Report, way: &'static str) -> Option<Self> {
        let found: Vec<(f64, &Measurement)> = SIZES
            .iter()
            .filter_map(|(len, label)| {
                let id = format!("transfer.{way}.{label}");
                let m = report.results.iter().find(|m| m.id == id)?;
                Some(((*len as f64).log2(), m))
            })
            .collect();
        let baseline = found.first()?.1.baseline.name.clone();
        Some(Direction {
            way,
            baseline,
            ours: found.iter().map(|(x, m)| (*x, m.value)).collect(),
            theirs: found.iter().map(|(x, m)| (*x, m.baseline.value)).collect(),
        })
    }
}

/// "4 KiB" for 2^12.
fn size_label(log2: f64) -> String {
    if log2.fract() != 0.0 || log2 < 0.0 {
        return String::new();
    }
    let bytes = 1u64 << log2 as u32;
    match bytes {
        b if b >= 1 << 30 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

fn draw_bandwidth<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    directions: &[Direction],
) -> Drawn
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let root = root.titled(title, (FONT, 15))?;
    let panels = root.split_evenly((1, directions.len()));
    let (first, last) = SIZES
        .iter()
        .map(|(len, _)| (*len as f64).log2())
        .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    for (panel, direction) in panels.iter().zip(directions) {
        let top = direction
            .ours
            .iter()
            .chain(&direction.theirs)
            .map(|&(_, gbs)| gbs)
            .fold(0.0, f64::max);
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{} bandwidth", direction.way.to_uppercase()),
                (FONT, 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(first - 0.5..last + 0.5, 0.0..top * 1.15)?;
        chart
            .configure_mesh()
            .x_labels(((last - first) / 2.0) as usize + 1)
            .x_label_formatter(&|v| size_label(*v))
            .x_desc("transfer size")
            .y_desc("GB/s (median)")
            .label_style((FONT, 12))
            .draw()?;
        for (name, color, points) in [
            ("hetmem", HETMEM, &direction.ours),
            (direction.baseline.as_str(), BASELINE, &direction.theirs),
        ] {
            let series = points.iter().copied();
            chart
                .draw_series(LineSeries::new(series.clone(), color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart.draw_series(series.map(|p| Circle::new(p, 4, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 12))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
    }
    Ok(())
}

/// "100 ns", "10 µs", "1 ms" for a time axis in nanoseconds.
fn duration_label(ns: f64) -> String {
    let (value, unit) = match ns {
        v if v >= 1e9 => (v / 1e9, "s"),
        v if v >= 1e6 => (v / 1e6, "ms"),
        v if v >= 1e3 => (v / 1e3, "µs"),
        v => (v, "ns"),
    };
    format!("{} {unit}", (value * 100.0).round() / 100.0)
}

/// One allocation figure's samples, in nanoseconds.
struct Latency {
    id: String,
    baseline: String,
    /// hetmem's samples, then the baseline's.
    samples: [Vec<f64>; 2],
}

impl Latency {
    /// Every `alloc.*` result that kept its samples.
    fn all(report: &Report) -> Vec<Self> {
        report
            .results
            .iter()
            .filter(|m| m.category == "alloc")
            .filter_map(|m| {
                let samples = m.samples.as_ref()?;
                let to_ns = 1e9 / per_second(m.unit)?;
                let ns = |v: &[f64]| v.iter().map(|t| t * to_ns).collect();
                Some(Latency {
                    id: m.id.clone(),
                    baseline: m.baseline.name.clone(),
                    samples: [ns(&samples.hetmem), ns(&samples.baseline)],
                })
            })
            .collect()
    }
}

/// A horizontal strip per figure: every sample as a dot, the median as a bar, hetmem above
/// its baseline, on a logarithmic time axis (the figures span five decades).
fn draw_latencies<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    rows: &[Latency],
) -> Drawn
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let all = rows
        .iter()
        .flat_map(|r| r.samples.iter().flatten())
        .copied()
        .filter(|v| *v > 0.0);
    let (low, high) = all.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!("Allocation latency per operation — {title}"),
            (FONT, 15),
        )
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(170)
        .build_cartesian_2d(
            (low / 2.0..high * 2.0).log_scale(),
            // A discrete range includes its end: n rows are 0..n-1.
            (0..rows.len() as i32 - 1).into_segmented(),
        )?;
    // Row i is drawn at position n-1-i, so the figures read top-down in the table's order.
    let at = |i: usize| SegmentValue::CenterOf((rows.len() - 1 - i) as i32);
    let name = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(p) | SegmentValue::Exact(p) => usize::try_from(*p)
            .ok()
            .and_then(|p| rows.len().checked_sub(p + 1))
            .map_or_else(String::new, |i| rows[i].id.clone()),
        SegmentValue::Last => String::new(),
    };
    chart
        .configure_mesh()
        .y_labels(rows.len())
        .y_label_formatter(&name)
        .x_label_formatter(&|ns| duration_label(*ns))
        .x_desc("time per operation (log scale); dots: samples, bars: medians")
        .label_style((FONT, 12))
        .disable_y_mesh()
        .draw()?;
    let sides = [("hetmem", HETMEM, -9), ("same-run baseline", BASELINE, 9)];
    for (k, (side, color, offset)) in sides.into_iter().enumerate() {
        let dots = rows.iter().enumerate().flat_map(|(i, row)| {
            row.samples[k].iter().map(move |&v| {
                EmptyElement::at((v, at(i))) + Circle::new((0, offset), 3, color.mix(0.6).filled())
            })
        });
        chart
            .draw_series(dots)?
            .label(side)
            .legend(move |(x, y)| Circle::new((x + 6, y), 4, color.filled()));
        let medians = rows.iter().enumerate().map(|(i, row)| {
            let median = median(&mut row.samples[k].clone());
            EmptyElement::at((median, at(i)))
                + PathElement::new(
                    vec![(0, offset - 7), (0, offset + 7)],
                    color.stroke_width(3),
                )
        });
        chart.draw_series(medians)?;
    }
    let baselines = rows.iter().enumerate().map(|(i, row)| {
        EmptyElement::at((low / 1.9, at(i)))
            + Text::new(
                format!("baseline: {}", row.baseline),
                (0, 20),
                (FONT, 11).into_font().color(&BLACK.mix(0.6)),
            )
    });
    chart.draw_series(baselines)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 12))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_labels_name_binary_sizes_and_durations() {
        assert_eq!(size_label(12.0), "4 KiB");
        assert_eq!(size_label(28.0), "256 MiB");
        assert_eq!(size_label(30.0), "1 GiB");
        assert_eq!(size_label(3.0), "8 B");
        assert_eq!(size_label(12.5), "");
        assert_eq!(duration_label(100.0), "100 ns");
        assert_eq!(duration_label(1500.0), "1.5 µs");
        assert_eq!(duration_label(2e6), "2 ms");
        assert_eq!(duration_label(3e9), "3 s");
    }
}
