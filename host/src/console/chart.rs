//! Small line charts drawn on the server as inline SVG (no script, no
//! library, nothing fetched): the performance page's latency over time and
//! the costs page's spend per day. Each chart is drawn from the same rows
//! its table shows, names itself for assistive technology (`<title>` and
//! `<desc>`, with the table below holding the numbers) and carries each
//! point's value in `data-` attributes, so a test can read it back.

use std::fmt::Write as _;

use super::html::esc;

/// Series colours, in order (the palette of the stylesheet).
const PALETTE: &[&str] = &["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c"];

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 40.0;

/// One line of a chart.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    /// Its name in the legend (`mock p95`).
    pub(crate) name: String,
    /// Index into the palette (series of one provider share a colour).
    pub(crate) colour: usize,
    /// Drawn dashed (a second figure of the same subject).
    pub(crate) dashed: bool,
    /// (x label, value), in x order; an x missing here is a gap.
    pub(crate) points: Vec<(String, f64)>,
}

/// A chart `id` of `series` over the x labels they use (sorted), values
/// from 0 up; `title` and `desc` are what a screen reader announces,
/// `unit` labels the y axis. Empty when there is nothing to draw.
pub(crate) fn line_chart(
    id: &str,
    title: &str,
    desc: &str,
    unit: &str,
    series: &[Series],
) -> String {
    let mut xs: Vec<&str> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|(x, _)| x.as_str()))
        .collect();
    xs.sort_unstable();
    xs.dedup();
    if xs.is_empty() {
        return String::new();
    }
    let top = series
        .iter()
        .flat_map(|s| s.points.iter().map(|(_, v)| *v))
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let top = nice(top);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x_of = |x: &str| {
        let i = xs.binary_search(&x).unwrap_or(0) as f64;
        if xs.len() == 1 {
            LEFT + plot_w / 2.0
        } else {
            LEFT + plot_w * i / (xs.len() - 1) as f64
        }
    };
    let y_of = |v: f64| TOP + plot_h * (1.0 - v.clamp(0.0, top) / top);
    let mut out = format!(
        r#"<figure class="chart"><svg id="{id}" role="img" aria-labelledby="{id}-title {id}-desc" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" preserveAspectRatio="xMidYMid meet" font-size="11" font-family="sans-serif"><title id="{id}-title">{title}</title><desc id="{id}-desc">{desc}</desc>"#,
        id = esc(id),
        title = esc(title),
        desc = esc(desc),
    );
    // Axes, the top value and zero, the first and last x.
    let bottom = TOP + plot_h;
    let _ = write!(
        out,
        r##"<g stroke="#9ca3af" fill="none"><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}"/><line x1="{LEFT}" y1="{bottom}" x2="{r}" y2="{bottom}"/></g><g fill="#374151"><text x="{lx}" y="{ty}" text-anchor="end">{top}</text><text x="{lx}" y="{bottom}" text-anchor="end">0</text><text x="4" y="{my}">{unit}</text><text x="{LEFT}" y="{xy}">{first}</text><text x="{r}" y="{xy}" text-anchor="end">{last}</text></g>"##,
        r = WIDTH - RIGHT,
        lx = LEFT - 4.0,
        ty = TOP + 4.0,
        top = esc(&trim(top)),
        my = TOP + plot_h / 2.0,
        unit = esc(unit),
        xy = HEIGHT - BOTTOM + 14.0,
        first = esc(xs[0]),
        last = if xs.len() > 1 {
            esc(xs[xs.len() - 1])
        } else {
            String::new()
        },
    );
    for (n, s) in series.iter().enumerate() {
        let colour = PALETTE[s.colour % PALETTE.len()];
        let dash = if s.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let line: Vec<String> = s
            .points
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(x, v)| format!("{:.1},{:.1}", x_of(x), y_of(*v)))
            .collect();
        let _ = write!(
            out,
            r#"<g class="series" data-series="{name}"><polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{points}"/>"#,
            name = esc(&s.name),
            points = line.join(" "),
        );
        for (x, v) in s.points.iter().filter(|(_, v)| v.is_finite()) {
            let _ = write!(
                out,
                r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="3" fill="{colour}" data-x="{xa}" data-value="{va}"><title>{name} at {xa}: {va}</title></circle>"#,
                cx = x_of(x),
                cy = y_of(*v),
                xa = esc(x),
                va = esc(&trim(*v)),
                name = esc(&s.name),
            );
        }
        // The legend: one entry per series, along the bottom.
        let lx = LEFT + (n as f64) * 120.0;
        let ly = HEIGHT - 8.0;
        let _ = write!(
            out,
            r#"<line x1="{lx}" y1="{y}" x2="{x2}" y2="{y}" stroke="{colour}" stroke-width="2"{dash}/><text x="{tx}" y="{ly}" fill="currentColor">{name}</text></g>"#,
            y = ly - 4.0,
            x2 = lx + 18.0,
            tx = lx + 22.0,
            name = esc(&s.name),
        );
    }
    out.push_str("</svg></figure>");
    out
}

/// The axis' top: the least of 1, 2 or 5 times a power of ten at or above
/// `max` (1 when there is nothing above zero).
fn nice(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let power = 10_f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|top| *top >= max)
        .unwrap_or(10.0 * power)
}

/// A number as short as it reads exactly (`12`, `0.5`, `0.000123`).
pub(crate) fn trim(v: f64) -> String {
    let s = format!("{v:.9}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_carry_their_values_and_the_chart_names_itself() {
        let svg = line_chart(
            "c",
            "Latency",
            "p50 per provider",
            "ms",
            &[Series {
                name: "mock p50".into(),
                colour: 0,
                dashed: false,
                points: vec![("a".into(), 10.0), ("b".into(), 20.5)],
            }],
        );
        assert!(svg.contains(r#"role="img""#));
        assert!(svg.contains(r#"<title id="c-title">Latency</title>"#));
        assert!(svg.contains(r#"data-x="a" data-value="10""#));
        assert!(svg.contains(r#"data-x="b" data-value="20.5""#));
        // The axis tops at 50 (20.5 rounded up), the first point at a fifth.
        let y = TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - 10.0 / 50.0);
        assert!(svg.contains(&format!(r#"cx="{LEFT:.1}" cy="{y:.1}""#)));
        assert_eq!(nice(4.38), 5.0);
        assert_eq!(nice(150.0), 200.0);
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(line_chart("c", "t", "d", "ms", &[]), "");
        assert_eq!(trim(0.000123), "0.000123");
        assert_eq!(trim(3.0), "3");
    }
}
