//! Line and scatter charts rendered with plotters into an RGB buffer and saved as PNG.
//!
//! The font (DejaVu Sans) is embedded, so charts look the same on every machine and need no
//! system fonts.

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;
use selfsup_core::{Error, Result};
use std::path::Path;
use std::sync::Once;

/// One named line or point set.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// `(x, y)` points.
    pub points: Vec<(f64, f64)>,
}

/// Ten distinguishable colours (matplotlib's "tab10" values).
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

const FONT: &str = "sans-serif";
static FONT_ONCE: Once = Once::new();

fn register_font() {
    FONT_ONCE.call_once(|| {
        // The embedded font is valid; a failure would only leave text out.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

fn draw_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("drawing {}: {e}", path.display()))
}

fn save_png(path: &Path, buf: Vec<u8>, w: u32, h: u32) -> Result<()> {
    let img = image::RgbImage::from_raw(w, h, buf)
        .ok_or_else(|| draw_err(path, "buffer of the wrong size"))?;
    img.save(path)
        .map_err(|e| Error::Invalid(format!("writing {}: {e}", path.display())))
}

/// Axis tick text: whole numbers without decimals, others with up to 4 significant digits.
fn tick(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else if v.abs() < 1e-3 {
        format!("{v:.1e}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').to_string()
    }
}

/// `[lo, hi]` padded by 5 %, never empty; a constant `v` gets `[v/2, 3v/2]` (a constant
/// learning rate of 2e-4 would vanish in a `[-0.5, 0.5]` axis), zero `[-1, 1]`.
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo {
        0.05 * (hi - lo)
    } else if lo != 0.0 {
        0.5 * lo.abs()
    } else {
        1.0
    };
    (lo - pad, hi + pad)
}

/// Panels stacked vertically, each a line chart of its series; written to `path` as PNG.
/// `panels` holds `(title, y label, series)`; all panels share `x_label`.
pub fn line_chart(
    path: &Path,
    x_label: &str,
    panels: &[(&str, &str, Vec<Series>)],
    width: u32,
    panel_height: u32,
) -> Result<()> {
    register_font();
    let h = panel_height * panels.len().max(1) as u32;
    let mut buf = vec![0u8; (width * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
        let areas = root.split_evenly((panels.len().max(1), 1));
        for (area, (title, y_label, series)) in areas.iter().zip(panels) {
            let all = || series.iter().flat_map(|s| s.points.iter());
            let (x0, x1) = range(all().map(|p| p.0));
            let (y0, y1) = range(all().map(|p| p.1));
            let mut chart = ChartBuilder::on(area)
                .caption(*title, (FONT, 20))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(64)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(|e| draw_err(path, e))?;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(*y_label)
                .x_label_formatter(&tick)
                .y_label_formatter(&tick)
                .label_style((FONT, 13))
                .draw()
                .map_err(|e| draw_err(path, e))?;
            for (i, s) in series.iter().enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                let pts: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .copied()
                    .filter(|p| p.0.is_finite() && p.1.is_finite())
                    .collect();
                let marks = pts.len() <= 60;
                chart
                    .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                    .map_err(|e| draw_err(path, e))?
                    .label(s.name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                if marks {
                    chart
                        .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                        .map_err(|e| draw_err(path, e))?;
                }
            }
            if series.len() > 1 {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .label_font((FONT, 13))
                    .draw()
                    .map_err(|e| draw_err(path, e))?;
            }
        }
        root.present().map_err(|e| draw_err(path, e))?;
    }
    save_png(path, buf, width, h)
}

/// The chart area a scatter plot draws its points into.
type Plane<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A framed scatter plot over `x` and `y` (title, axes, grid): `draw` adds the labelled
/// series, then the legend goes at `legend`, and the picture is written to `path` as PNG.
fn scatter_png(
    path: &Path,
    title: &str,
    axes: (&str, &str),
    (x, y): ((f64, f64), (f64, f64)),
    size: (u32, u32),
    legend: SeriesLabelPosition,
    draw: impl FnOnce(&mut Plane<'_, '_>) -> Result<()>,
) -> Result<()> {
    register_font();
    let (w, h) = size;
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(x.0..x.1, y.0..y.1)
            .map_err(|e| draw_err(path, e))?;
        chart
            .configure_mesh()
            .x_desc(axes.0)
            .y_desc(axes.1)
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .label_style((FONT, 13))
            .draw()
            .map_err(|e| draw_err(path, e))?;
        draw(&mut chart)?;
        chart
            .configure_series_labels()
            .position(legend)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font((FONT, 13))
            .draw()
            .map_err(|e| draw_err(path, e))?;
        root.present().map_err(|e| draw_err(path, e))?;
    }
    save_png(path, buf, w, h)
}

/// A scatter plot of point sets (one colour each, with a legend), written to `path` as PNG.
pub fn scatter_chart(
    path: &Path,
    title: &str,
    axes: (&str, &str),
    sets: &[Series],
    size: (u32, u32),
) -> Result<()> {
    let all = || sets.iter().flat_map(|s| s.points.iter());
    let ranges = (range(all().map(|p| p.0)), range(all().map(|p| p.1)));
    scatter_png(
        path,
        title,
        axes,
        ranges,
        size,
        SeriesLabelPosition::UpperRight,
        |chart| {
            for (i, s) in sets.iter().enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                chart
                    .draw_series(
                        s.points
                            .iter()
                            .filter(|p| p.0.is_finite() && p.1.is_finite())
                            .map(|&p| Circle::new(p, 2, color.mix(0.7).filled())),
                    )
                    .map_err(|e| draw_err(path, e))?
                    .label(s.name.clone())
                    .legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
            }
            Ok(())
        },
    )
}

/// A point set whose points carry text labels (a method's name beside its point).
#[derive(Clone, Debug)]
pub struct Labelled {
    /// Legend text.
    pub name: String,
    /// `(label, x, y)` points.
    pub points: Vec<(String, f64, f64)>,
}

/// A scatter plot of labelled point sets (one colour each, large markers, each point's label
/// beside it), written to `path` as PNG.
pub fn labelled_scatter(
    path: &Path,
    title: &str,
    axes: (&str, &str),
    sets: &[Labelled],
    size: (u32, u32),
) -> Result<()> {
    let all = || sets.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = range(all().map(|p| p.1));
    // Room on the right for the last point's label and the legend.
    let x = (x0, x1 + 0.2 * (x1 - x0));
    let ranges = (x, range(all().map(|p| p.2)));
    scatter_png(
        path,
        title,
        axes,
        ranges,
        size,
        SeriesLabelPosition::LowerRight,
        |chart| {
            for (i, s) in sets.iter().enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                let finite = || {
                    s.points
                        .iter()
                        .filter(|p| p.1.is_finite() && p.2.is_finite())
                };
                // A marker and, a few pixels to its right, its label.
                chart
                    .draw_series(finite().map(|p| {
                        EmptyElement::at((p.1, p.2))
                            + Circle::new((0, 0), 5, color.filled())
                            + Text::new(p.0.clone(), (8, -7), (FONT, 13).into_font().color(&color))
                    }))
                    .map_err(|e| draw_err(path, e))?
                    .label(s.name.clone())
                    .legend(move |(x, y)| Circle::new((x + 8, y), 5, color.filled()));
            }
            Ok(())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nonwhite(path: &Path) -> usize {
        let img = image::open(path).unwrap().to_rgb8();
        img.pixels().filter(|p| p.0 != [255, 255, 255]).count()
    }

    #[test]
    fn constant_series_keep_their_scale() {
        let (lo, hi) = range([2e-4, 2e-4].into_iter());
        assert!(
            (lo - 1e-4).abs() < 1e-12 && (hi - 3e-4).abs() < 1e-12,
            "{lo} {hi}"
        );
        assert_eq!(range([0.0].into_iter()), (-1.0, 1.0));
        assert_eq!(range([0.0, 10.0].into_iter()), (-0.5, 10.5));
    }

    #[test]
    fn tick_text() {
        assert_eq!(tick(&500.0), "500");
        assert_eq!(tick(&0.25), "0.25");
        assert_eq!(tick(&0.00002), "2.0e-5");
        assert_eq!(tick(&-3.0), "-3");
    }

    #[test]
    fn draws_lines_and_points_into_pngs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lines.png");
        let loss = Series {
            name: "loss".into(),
            points: (0..100)
                .map(|i| (i as f64, 5.0 / (1.0 + i as f64)))
                .collect(),
        };
        line_chart(
            &p,
            "step",
            &[
                ("loss", "loss", vec![loss.clone()]),
                ("lr", "lr", vec![loss]),
            ],
            640,
            240,
        )
        .unwrap();
        let img = image::open(&p).unwrap();
        assert_eq!((img.width(), img.height()), (640, 480));
        assert!(nonwhite(&p) > 2000);

        let q = dir.path().join("scatter.png");
        let sets: Vec<Series> = (0..3)
            .map(|c| Series {
                name: format!("class {c}"),
                points: (0..20)
                    .map(|i| (c as f64 + 0.01 * i as f64, i as f64))
                    .collect(),
            })
            .collect();
        scatter_chart(&q, "embedding", ("PC 1", "PC 2"), &sets, (400, 300)).unwrap();
        assert!(nonwhite(&q) > 500);
        // A single point or an empty set still draws (degenerate ranges are padded).
        let one = [Series {
            name: "x".into(),
            points: vec![(1.0, 1.0)],
        }];
        scatter_chart(&q, "one", ("a", "b"), &one, (200, 200)).unwrap();
        line_chart(&p, "step", &[("empty", "y", vec![])], 200, 150).unwrap();
    }

    #[test]
    fn labelled_points_draw_their_labels() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("labelled.png");
        let set = |labels: bool| Labelled {
            name: "kNN".into(),
            points: vec![
                (if labels { "simclr" } else { "" }.into(), 5.0, 80.0),
                (if labels { "raw pixels" } else { "" }.into(), 0.0, 78.0),
            ],
        };
        labelled_scatter(&p, "t", ("min", "%"), &[set(false)], (400, 300)).unwrap();
        let bare = nonwhite(&p);
        labelled_scatter(&p, "t", ("min", "%"), &[set(true)], (400, 300)).unwrap();
        assert!(nonwhite(&p) > bare + 50, "labels add ink");
        labelled_scatter(&p, "t", ("a", "b"), &[], (200, 200)).unwrap();
    }
}
