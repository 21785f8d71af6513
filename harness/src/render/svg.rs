//! `--plot FILE.svg`: the results as a standalone SVG, written directly (no plotting library:
//! the two charts need only rectangles, lines and text, and this keeps the build free of font
//! and C dependencies).
//!
//! 1. Decode tok/s per backend, a bar per backend and prompt length, with error bars of one
//!    standard deviation over runs.
//! 2. When several prompt lengths ran (`--prompt-tokens 16,128,512`), the mean per-token decode
//!    latency against the context length, one line per backend.

use std::fmt::Write;

use super::columns::shown;
use crate::record::Report;

const WIDTH: f64 = 760.0;
const CHART_HEIGHT: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const COLOURS: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" axis maximum (1, 2 or 5 times a power of ten) at or above `v`, and its tick step.
fn nice_axis(v: f64) -> (f64, f64) {
    if v.is_nan() || v <= 0.0 || v.is_infinite() {
        return (1.0, 0.2);
    }
    let magnitude = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * magnitude {
            let max = m * magnitude;
            return (max, max / 5.0);
        }
    }
    (10.0 * magnitude, 2.0 * magnitude)
}

/// Distinct values in first-seen order.
fn distinct<T: PartialEq + Clone>(xs: impl Iterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for x in xs {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

fn y_axis(svg: &mut String, top: f64, height: f64, max: f64, step: f64, label: &str) {
    let mut v = 0.0;
    while v <= max + step * 1e-6 {
        let y = top + height - v / max * height;
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            if max >= 10.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            }
        );
        v += step;
    }
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle" font-size="12">{}</text>"#,
        top + height / 2.0,
        top + height / 2.0,
        escape(label)
    );
}

fn legend(svg: &mut String, top: f64, entries: &[String]) {
    for (i, name) in entries.iter().enumerate() {
        let y = top + 10.0 + i as f64 * 18.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="12">{}</text>"#,
            WIDTH - RIGHT + 16.0,
            y - 10.0,
            COLOURS[i % COLOURS.len()],
            WIDTH - RIGHT + 34.0,
            y,
            escape(name)
        );
    }
}

/// The model and each weight file's dtype and bytes per token: "synthetic-gpt2 (f32 494.6,
/// q8_0 131.7 MB/token)".
fn model_title(report: &Report) -> String {
    let files: Vec<String> = report
        .files()
        .iter()
        .map(|m| format!("{} {:.1}", m.dtype, m.weight_bytes_per_token as f64 / 1e6))
        .collect();
    format!("{} ({} MB/token)", report.model.name, files.join(", "))
}

/// Renders the report's charts as an SVG document.
pub fn svg(report: &Report) -> String {
    let backends = distinct(report.results.iter().map(|r| shown(r).to_string()));
    let lengths = distinct(report.results.iter().map(|r| r.prompt_tokens));
    let with_latency = lengths.len() > 1;
    let height = if with_latency {
        2.0 * (CHART_HEIGHT + TOP + BOTTOM)
    } else {
        CHART_HEIGHT + TOP + BOTTOM
    };
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        svg,
        r##"<rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="22" font-size="15" font-weight="bold">Decode tok/s, {}, {} run(s) per bar, mean ± stddev</text><text x="{LEFT}" y="38" font-size="11" fill="#555">{} | {} | commit {}</text>"##,
        escape(&model_title(report)),
        report.runs,
        escape(&report.machine.cpu),
        report.machine.build_profile,
        escape(&report.machine.git_commit)
    );

    // Chart 1: grouped bars, one group per prompt length, one bar per backend.
    let plot_w = WIDTH - LEFT - RIGHT;
    let max_rate = report
        .results
        .iter()
        .filter_map(|r| r.decode_tok_per_s.map(|s| s.mean + s.stddev))
        .fold(0.0, f64::max);
    let (y_max, step) = nice_axis(max_rate);
    y_axis(&mut svg, TOP, CHART_HEIGHT, y_max, step, "decode tok/s");
    let group_w = plot_w / lengths.len() as f64;
    let bar_w = (group_w * 0.8 / backends.len() as f64).min(60.0);
    for (g, &len) in lengths.iter().enumerate() {
        let group_x = LEFT + g as f64 * group_w + (group_w - bar_w * backends.len() as f64) / 2.0;
        for (b, name) in backends.iter().enumerate() {
            let Some(r) = report
                .results
                .iter()
                .find(|r| shown(r) == name && r.prompt_tokens == len)
            else {
                continue;
            };
            let Some(s) = r.decode_tok_per_s else {
                continue;
            };
            let scale = |v: f64| TOP + CHART_HEIGHT - (v / y_max).min(1.0) * CHART_HEIGHT;
            let x = group_x + b as f64 * bar_w;
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {:.2} ± {:.2} tok/s</title></rect>"#,
                scale(s.mean),
                bar_w - 2.0,
                TOP + CHART_HEIGHT - scale(s.mean),
                COLOURS[b % COLOURS.len()],
                escape(name),
                s.mean,
                s.stddev
            );
            let cx = x + (bar_w - 2.0) / 2.0;
            let (lo, hi) = (
                scale((s.mean - s.stddev).max(0.0)),
                scale(s.mean + s.stddev),
            );
            let _ = writeln!(
                svg,
                r#"<path d="M{cx:.1} {lo:.1} V{hi:.1} M{:.1} {lo:.1} H{:.1} M{:.1} {hi:.1} H{:.1}" stroke="black" fill="none"/><text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-size="10">{:.1}</text>"#,
                cx - 4.0,
                cx + 4.0,
                cx - 4.0,
                cx + 4.0,
                hi - 4.0,
                s.mean
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12">{len}-token prompt</text>"#,
            LEFT + (g as f64 + 0.5) * group_w,
            TOP + CHART_HEIGHT + 20.0
        );
    }
    legend(&mut svg, TOP, &backends);

    // Chart 2: mean per-token decode latency against context length.
    if with_latency {
        let top = TOP + CHART_HEIGHT + BOTTOM + TOP;
        let points: Vec<(usize, String, f64)> = report
            .results
            .iter()
            .filter_map(|r| {
                let l = r.decode_latency?;
                // Decode steps ran at contexts prompt+1 .. prompt+new-1; plot at their middle.
                let context = r.prompt_tokens + r.new_tokens / 2;
                Some((context, shown(r).to_string(), l.mean_ms))
            })
            .collect();
        let max_ms = points.iter().map(|p| p.2).fold(0.0, f64::max);
        let (ms_max, ms_step) = nice_axis(max_ms);
        let max_context = points.iter().map(|p| p.0).max().unwrap_or(1).max(1) as f64;
        let (ctx_max, ctx_step) = nice_axis(max_context);
        let _ = writeln!(
            svg,
            r#"<text x="{LEFT}" y="{:.1}" font-size="15" font-weight="bold">Decode latency per token against context length</text>"#,
            top - 16.0
        );
        y_axis(
            &mut svg,
            top,
            CHART_HEIGHT,
            ms_max,
            ms_step,
            "ms per token (mean)",
        );
        let x_of = |c: f64| LEFT + c / ctx_max * plot_w;
        let y_of = |ms: f64| top + CHART_HEIGHT - ms / ms_max * CHART_HEIGHT;
        let mut c = 0.0;
        while c <= ctx_max + ctx_step * 1e-6 {
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">{c:.0}</text>"#,
                x_of(c),
                top + CHART_HEIGHT + 16.0
            );
            c += ctx_step;
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12">context length (tokens)</text>"#,
            LEFT + plot_w / 2.0,
            top + CHART_HEIGHT + 36.0
        );
        for (b, name) in backends.iter().enumerate() {
            let mut line: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| &p.1 == name)
                .map(|p| (x_of(p.0 as f64), y_of(p.2)))
                .collect();
            line.sort_by(|a, b| a.0.total_cmp(&b.0));
            let colour = COLOURS[b % COLOURS.len()];
            let path: Vec<String> = line.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                path.join(" ")
            );
            for (x, y) in line {
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{colour}"/>"#
                );
            }
        }
        legend(&mut svg, top, &backends);
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_axes() {
        assert_eq!(nice_axis(58.9), (100.0, 20.0));
        assert_eq!(nice_axis(3.2), (5.0, 1.0));
        assert_eq!(nice_axis(200.0), (200.0, 40.0));
        assert_eq!(nice_axis(0.0), (1.0, 0.2));
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
