//! The chart kinds of `--plot` and `report --html`, drawn with plotters' SVG backend: each
//! function takes plain numbers and returns one standalone `<svg>` document. Which charts a
//! report gets, and from which figures, is [`super::charts`]'s job; this module knows nothing
//! of reports, so every chart is drawn the same way wherever its numbers come from.
//!
//! plotters is built without fonts (text is written as SVG `<text>`, the browser lays it out;
//! plotters only estimates its width), so the charts leave generous room for labels.

use plotters::coord::Shift;
use plotters::prelude::*;

/// Width of every chart, in SVG pixels (the page scales it down where narrower).
pub const WIDTH: u32 = 900;

/// A measured quantity: mean, standard deviation and range over its runs.
#[derive(Debug, Clone)]
pub struct Measure {
    pub label: String,
    pub mean: f64,
    pub stddev: f64,
    pub min: f64,
    pub max: f64,
}

/// A line of points; `faded` ones (warm-up runs) are drawn grey and thin.
#[derive(Debug, Clone)]
pub struct Line {
    pub label: String,
    /// Which series colour ([`color`]); lines of one backend share it.
    pub series: usize,
    pub faded: bool,
    /// (x, y, y's standard deviation: an error bar when above 0).
    pub points: Vec<(f64, f64, f64)>,
}

/// A chart over consecutive commits: one series' means, its noise band (mean ± stddev), and
/// the points where a change beyond the noise was judged.
#[derive(Debug, Clone)]
pub struct Trend {
    pub means: Vec<f64>,
    pub stddevs: Vec<f64>,
    /// Per point: `Some(true)` faster than the point before beyond the noise, `Some(false)`
    /// slower, `None` within it.
    pub marks: Vec<Option<bool>>,
}

/// The colour of series `i`: a fixed palette of well-separated hues.
pub fn color(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(23, 190, 207),
    ];
    PALETTE[i % PALETTE.len()]
}

/// Text for a chart: control characters (not allowed in XML, possible in a hostile record)
/// shown as U+FFFD, and at most 80 characters; plotters escapes the rest.
fn clean(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .take(80)
        .collect();
    if text.chars().count() > 80 {
        out.push('…');
    }
    out
}

type DrawResult<T> = Result<T, DrawingAreaErrorKind<std::io::Error>>;

/// Runs `draw` on a fresh white SVG of `height` and returns the document. Drawing into a
/// string cannot fail for I/O; a plotters error (a degenerate range) becomes a chart that
/// says so instead of a missing chart.
fn svg_of(
    height: u32,
    draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> DrawResult<()>,
) -> String {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        let drawn = root.fill(&WHITE).and_then(|()| draw(&root));
        if let Err(e) = drawn {
            let _ = root.fill(&WHITE);
            let _ = root.draw_text(
                &format!("chart not drawn: {e}"),
                &("sans-serif", 14).into_text_style(&root),
                (10, 20),
            );
        }
        let _ = root.present();
    }
    out
}

/// The top of an axis that shows `max` with some room above it.
fn headroom(max: f64) -> f64 {
    if max.is_finite() && max > 0.0 {
        max * 1.12
    } else {
        1.0
    }
}

/// Horizontal bars of `measures` (one per row, its label on the left), each with an error bar
/// of ± one standard deviation and a thin whisker over its range (min to max).
pub fn bars(title: &str, unit: &str, measures: &[Measure]) -> String {
    let height = 90 + 28 * measures.len().max(1) as u32;
    svg_of(height, |root| {
        let top = measures
            .iter()
            .map(|m| m.max.max(m.mean + m.stddev))
            .fold(0.0, f64::max);
        let n = measures.len().max(1) as u32;
        let longest = measures
            .iter()
            .map(|m| m.label.chars().count())
            .max()
            .unwrap_or(4);
        let mut chart = ChartBuilder::on(root)
            .caption(clean(title), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size((longest as u32 * 8 + 16).clamp(60, 320))
            .build_cartesian_2d(0.0..headroom(top), (0..n - 1).into_segmented())?;
        // The first measure at the top: segment i holds measure n - 1 - i.
        let labels: Vec<String> = measures.iter().rev().map(|m| clean(&m.label)).collect();
        let at = |i: usize| n - 1 - i as u32;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(WHITE)
            .x_desc(unit)
            .y_labels(n as usize)
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .draw()?;
        chart.draw_series(measures.iter().enumerate().map(|(i, m)| {
            let i = at(i);
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (m.mean, SegmentValue::Exact(i + 1)),
                ],
                color(0).mix(0.35).filled(),
            );
            bar.set_margin(5, 5, 0, 0);
            bar
        }))?;
        chart.draw_series(measures.iter().enumerate().map(|(i, m)| {
            ErrorBar::new_horizontal(
                SegmentValue::CenterOf(at(i)),
                (m.mean - m.stddev).max(0.0),
                m.mean,
                m.mean + m.stddev,
                color(0).stroke_width(2),
                10,
            )
        }))?;
        chart.draw_series(measures.iter().enumerate().map(|(i, m)| {
            ErrorBar::new_horizontal(
                SegmentValue::CenterOf(at(i)),
                m.min,
                m.mean,
                m.max,
                BLACK.mix(0.5).stroke_width(1),
                4,
            )
        }))?;
        Ok(())
    })
}

/// Lines over a numeric x (steps, threads, context length), with a legend; points with a
/// standard deviation get an error bar.
pub fn lines(title: &str, x_desc: &str, y_desc: &str, lines: &[Line], integer_x: bool) -> String {
    svg_of(420, |root| {
        let points = || lines.iter().flat_map(|l| l.points.iter());
        let x_max = points().map(|p| p.0).fold(0.0, f64::max).max(1.0);
        let x_min = points()
            .map(|p| p.0)
            .fold(f64::INFINITY, f64::min)
            .min(x_max - 1.0);
        let y_max = points().map(|p| p.1 + p.2).fold(0.0, f64::max);
        let mut chart = ChartBuilder::on(root)
            .caption(clean(title), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x_min..x_max, 0.0..headroom(y_max))?;
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(x_desc).y_desc(y_desc).light_line_style(WHITE);
        let integer_labels = |x: &f64| {
            if (x - x.round()).abs() < 1e-9 {
                format!("{x:.0}")
            } else {
                String::new()
            }
        };
        if integer_x {
            mesh.x_label_formatter(&integer_labels);
        }
        mesh.draw()?;
        // Faded lines first, so that the measured ones are drawn over them.
        let mut ordered: Vec<&Line> = lines.iter().filter(|l| l.faded).collect();
        ordered.extend(lines.iter().filter(|l| !l.faded));
        let mut labelled = std::collections::HashSet::new();
        for line in ordered {
            let style = if line.faded {
                RGBColor(150, 150, 150).stroke_width(1)
            } else {
                color(line.series).stroke_width(2)
            };
            let series = chart.draw_series(LineSeries::new(
                line.points.iter().map(|p| (p.0, p.1)),
                style,
            ))?;
            if labelled.insert((line.label.clone(), line.faded)) {
                series
                    .label(clean(&line.label))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
            }
            chart.draw_series(
                line.points
                    .iter()
                    .filter(|p| p.2 > 0.0)
                    .map(|p| ErrorBar::new_vertical(p.0, p.1 - p.2, p.1, p.1 + p.2, style, 8)),
            )?;
            if !line.faded && line.points.len() <= 64 {
                chart.draw_series(
                    line.points
                        .iter()
                        .map(|p| Circle::new((p.0, p.1), 3, color(line.series).filled())),
                )?;
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
        Ok(())
    })
}

/// Points of (x on a log scale, y), one series per line, each point labelled: speed against
/// agreement. `x` values at or below 0 are drawn at the left edge (the reference itself).
pub fn scatter_log_x(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    lines: &[Line],
    point_labels: &[Vec<String>],
) -> String {
    svg_of(420, |root| {
        let xs = || lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
        let smallest = xs().filter(|&x| x > 0.0).fold(f64::INFINITY, f64::min);
        let largest = xs().fold(0.0, f64::max);
        let floor = if smallest.is_finite() {
            smallest / 10.0
        } else {
            1e-9
        };
        let top = if largest > floor {
            largest * 10.0
        } else {
            floor * 100.0
        };
        let y_max = lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1 + p.2))
            .fold(0.0, f64::max);
        let mut chart = ChartBuilder::on(root)
            .caption(clean(title), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((floor..top).log_scale(), 0.0..headroom(y_max))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .light_line_style(WHITE)
            .x_label_formatter(&|x| format!("{x:.0e}"))
            .draw()?;
        for (i, line) in lines.iter().enumerate() {
            let style = color(line.series).filled();
            let at = |p: &(f64, f64, f64)| (p.0.max(floor), p.1);
            chart
                .draw_series(line.points.iter().map(|p| Circle::new(at(p), 5, style)))?
                .label(clean(&line.label))
                .legend(move |(x, y)| Circle::new((x + 9, y), 5, style));
            chart.draw_series(line.points.iter().filter(|p| p.2 > 0.0).map(|p| {
                ErrorBar::new_vertical(p.0.max(floor), p.1 - p.2, p.1, p.1 + p.2, style, 8)
            }))?;
            let names = point_labels.get(i).cloned().unwrap_or_default();
            chart.draw_series(line.points.iter().zip(names).map(|(p, name)| {
                Text::new(clean(&name), at(p), ("sans-serif", 12).into_font()).into_dyn()
            }))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()?;
        Ok(())
    })
}

/// One series over commits: the means joined, the noise band (mean ± stddev) shaded, a triangle
/// where the change from the commit before is beyond the noise (up and green: faster; down and
/// red: slower).
pub fn trend(title: &str, y_desc: &str, commits: &[String], trend: &Trend) -> String {
    svg_of(360, |root| {
        let n = commits.len().max(1) as i32;
        let y_max = trend
            .means
            .iter()
            .zip(&trend.stddevs)
            .map(|(m, s)| m + s)
            .fold(0.0, f64::max);
        let mut chart = ChartBuilder::on(root)
            .caption(clean(title), ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(-1..n, 0.0..headroom(y_max))?;
        chart
            .configure_mesh()
            .x_desc("commit, in the order of its first run")
            .y_desc(y_desc)
            // One label per commit (plotters thins them when they would overlap).
            .x_labels(commits.len() + 2)
            .light_line_style(WHITE)
            .x_label_formatter(&|i| {
                usize::try_from(*i)
                    .ok()
                    .and_then(|i| commits.get(i))
                    .map(|c| c.chars().take(9).collect())
                    .unwrap_or_default()
            })
            .draw()?;
        let upper = trend.means.iter().zip(&trend.stddevs).map(|(m, s)| m + s);
        let lower = trend
            .means
            .iter()
            .zip(&trend.stddevs)
            .map(|(m, s)| (m - s).max(0.0));
        let mut band: Vec<(i32, f64)> = upper.enumerate().map(|(i, y)| (i as i32, y)).collect();
        band.extend(lower.enumerate().map(|(i, y)| (i as i32, y)).rev());
        chart
            .draw_series(std::iter::once(Polygon::new(
                band,
                color(0).mix(0.2).filled(),
            )))?
            .label("mean ± stddev over the commit's runs")
            .legend(|(x, y)| {
                Rectangle::new([(x, y - 5), (x + 18, y + 5)], color(0).mix(0.2).filled())
            });
        chart
            .draw_series(LineSeries::new(
                trend.means.iter().enumerate().map(|(i, &m)| (i as i32, m)),
                color(0).stroke_width(2),
            ))?
            .label("mean")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color(0).stroke_width(2)));
        chart.draw_series(
            trend
                .means
                .iter()
                .enumerate()
                .map(|(i, &m)| Circle::new((i as i32, m), 3, color(0).filled())),
        )?;
        let marked = |faster: bool| {
            trend
                .marks
                .iter()
                .zip(&trend.means)
                .enumerate()
                .filter(move |(_, (mark, _))| **mark == Some(faster))
                .map(|(i, (_, &m))| (i as i32, m))
                .collect::<Vec<_>>()
        };
        let green = RGBColor(30, 150, 30);
        chart
            .draw_series(
                marked(true)
                    .into_iter()
                    .map(|p| TriangleMarker::new(p, 9, green.filled())),
            )?
            .label("faster than the commit before, beyond the noise")
            .legend(move |(x, y)| TriangleMarker::new((x + 9, y), 6, green.filled()));
        chart
            .draw_series(marked(false).into_iter().map(|(x, y)| {
                EmptyElement::at((x, y))
                    + Polygon::new(vec![(-8, -6), (8, -6), (0, 8)], RED.filled())
            }))?
            .label("slower than the commit before, beyond the noise")
            .legend(|(x, y)| {
                Polygon::new(
                    vec![(x + 1, y - 5), (x + 17, y - 5), (x + 9, y + 6)],
                    RED.filled(),
                )
            });
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
        Ok(())
    })
}

/// Several charts stacked into one SVG document (`--plot` writes one file): each is nested as
/// an `<svg>` element at its height.
pub fn stack(charts: &[String]) -> String {
    let height_of = |svg: &str| -> u32 {
        svg.split("height=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .and_then(|h| h.parse().ok())
            .unwrap_or(0)
    };
    let total: u32 = charts.iter().map(|c| height_of(c)).sum();
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{total}\" viewBox=\"0 0 {WIDTH} {total}\">\n"
    );
    let mut y = 0;
    for chart in charts {
        // A nested <svg> takes x and y; the XML declaration plotters may write is dropped.
        let body = chart.trim_start_matches(|c| c != '<');
        let body = body.strip_prefix("<?xml").map_or(body, |rest| {
            rest.split_once("?>").map_or(rest, |r| r.1).trim_start()
        });
        out.push_str(&body.replacen("<svg ", &format!("<svg y=\"{y}\" "), 1));
        out.push('\n');
        y += height_of(chart);
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measure(label: &str, mean: f64) -> Measure {
        Measure {
            label: label.into(),
            mean,
            stddev: mean / 10.0,
            min: mean * 0.8,
            max: mean * 1.1,
        }
    }

    #[test]
    fn bars_are_drawn_with_their_labels_and_escaped() {
        let svg = bars(
            "Decode <tok/s>",
            "tok/s",
            &[measure("naive", 2.0), measure("simd-kv & co", 90.0)],
        );
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert!(svg.contains("Decode &lt;tok/s&gt;"));
        assert!(svg.contains("simd-kv &amp; co"));
        assert!(
            svg.matches("<rect").count() >= 3,
            "a background and two bars"
        );
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn degenerate_inputs_still_give_a_document() {
        for svg in [
            bars("t", "u", &[]),
            lines("t", "x", "y", &[], true),
            scatter_log_x("t", "x", "y", &[], &[]),
            trend(
                "t",
                "y",
                &[],
                &Trend {
                    means: vec![],
                    stddevs: vec![],
                    marks: vec![],
                },
            ),
        ] {
            assert!(
                svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
                "{svg}"
            );
        }
    }

    #[test]
    fn stacked_charts_are_one_document_of_their_heights() {
        let a = bars("a", "u", &[measure("x", 1.0)]);
        let b = bars("b", "u", &[measure("x", 1.0), measure("y", 2.0)]);
        let both = stack(&[a, b]);
        assert!(both.starts_with("<svg") && both.trim_end().ends_with("</svg>"));
        assert!(both.contains(&format!("height=\"{}\"", 90 + 28 + 90 + 56)));
        assert!(both.contains("<svg y=\"118\""));
    }
}
