//! Charts as server-rendered SVG: lines for series over time, grouped bars for rankings.
//! No script, no library; every label is escaped.

use std::fmt::Write as _;

use super::{money, Chart, ChartKind};

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 84.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 56.0;
/// Colour-blind-safe (Okabe–Ito).
const COLOURS: [&str; 6] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00",
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// An axis label for `value` in the chart's unit: money in major units, shares from basis
/// points, durations from seconds.
fn tick(value: i64, unit: &str) -> String {
    let compact = |major: f64| {
        let magnitude = major.abs();
        if magnitude >= 1_000_000.0 {
            format!("{:.1}M", major / 1_000_000.0)
        } else if magnitude >= 10_000.0 {
            format!("{:.0}k", major / 1_000.0)
        } else if magnitude >= 1_000.0 {
            format!("{:.1}k", major / 1_000.0)
        } else {
            format!("{major:.0}")
        }
    };
    match unit {
        "%" => format!("{:.0} %", value as f64 / 100.0),
        "seconds" => {
            if value >= 3_600 {
                format!("{:.1}h", value as f64 / 3_600.0)
            } else if value >= 60 {
                format!("{:.0}m", value as f64 / 60.0)
            } else {
                format!("{value}s")
            }
        }
        "count" => compact(value as f64),
        "tenths of a month" => format!("{:.0} mo", value as f64 / 10.0),
        // Several currencies side by side: major units, each bar labelled with its own.
        several if several.contains('/') && several.split('/').all(|c| c.len() == 3) => {
            compact(value as f64 / 100.0)
        }
        currency if currency.len() == 3 => {
            let text = compact(value as f64 / 100.0);
            let symbol = money(0, &currency.to_ascii_lowercase());
            match symbol.chars().next() {
                Some(c) if !c.is_ascii_digit() => format!("{c}{text}"),
                _ => format!("{text} {currency}"),
            }
        }
        _ => compact(value as f64),
    }
}

/// A round step that splits `span` into about five.
fn step(span: i64) -> i64 {
    let raw = (span.max(1) as f64 / 5.0).max(1.0);
    let power = 10f64.powf(raw.log10().floor());
    let nice = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * power);
    nice.round().max(1.0) as i64
}

/// The chart as a standalone `<svg>` element, described by `title` for screen readers.
pub fn svg(chart: &Chart, title: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         role=\"img\" aria-label=\"{t}\" class=\"chart\"><title>{t}</title>",
        t = escape(title)
    );
    let values: Vec<i64> = chart
        .series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .collect();
    if chart.x.is_empty() || values.is_empty() {
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" class=\"empty\">No data for this period</text></svg>",
            WIDTH / 2.0,
            HEIGHT / 2.0
        );
        return out;
    }
    let low = values.iter().copied().min().unwrap_or(0).min(0);
    let high = values.iter().copied().max().unwrap_or(0).max(0);
    let step = step(high - low);
    let low = low.div_euclid(step) * step;
    let high = if high % step == 0 && high != 0 {
        high
    } else {
        (high.div_euclid(step) + 1) * step
    };
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let y = |v: i64| TOP + plot_h * (1.0 - (v - low) as f64 / (high - low).max(1) as f64);
    let slots = chart.x.len() as f64;
    let slot = plot_w / slots;

    // Grid and y-axis labels.
    let mut v = low;
    while v <= high {
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"grid{}\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" class=\"tick\">{}</text>",
            WIDTH - RIGHT,
            if v == 0 { " zero" } else { "" },
            LEFT - 6.0,
            y(v) + 4.0,
            escape(&tick(v, &chart.unit)),
            y = y(v)
        );
        v += step;
    }
    // X labels, thinned to about twelve.
    let every = (chart.x.len() / 12).max(1);
    for (i, label) in chart.x.iter().enumerate() {
        if i % every != 0 {
            continue;
        }
        let short: String = label.chars().take(20).collect();
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" class=\"tick\">{}</text>",
            LEFT + slot * (i as f64 + 0.5),
            HEIGHT - BOTTOM + 16.0,
            escape(&short)
        );
    }
    match chart.kind {
        ChartKind::Line => {
            for (n, series) in chart.series.iter().enumerate() {
                let colour = COLOURS[n % COLOURS.len()];
                let points: Vec<String> = series
                    .values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| format!("{:.1},{:.1}", LEFT + slot * (i as f64 + 0.5), y(*v)))
                    .collect();
                let _ = write!(
                    out,
                    "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"><title>{}</title></polyline>",
                    points.join(" "),
                    escape(&series.label)
                );
                for (i, value) in series.values.iter().enumerate() {
                    let _ = write!(
                        out,
                        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"><title>{}: {}</title></circle>",
                        LEFT + slot * (i as f64 + 0.5),
                        y(*value),
                        escape(chart.x.get(i).map(String::as_str).unwrap_or_default()),
                        escape(&tick(*value, &chart.unit))
                    );
                }
            }
        }
        ChartKind::Bar => {
            let groups = chart.series.len().max(1) as f64;
            let bar = (slot * 0.8 / groups).max(1.0);
            for (n, series) in chart.series.iter().enumerate() {
                let colour = COLOURS[n % COLOURS.len()];
                for (i, value) in series.values.iter().enumerate() {
                    let x = LEFT + slot * i as f64 + slot * 0.1 + bar * n as f64;
                    let (top, bottom) = (y((*value).max(0)), y((*value).min(0)));
                    let _ = write!(
                        out,
                        "<rect x=\"{x:.1}\" y=\"{top:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"{colour}\"><title>{} {}: {}</title></rect>",
                        (bottom - top).max(0.5),
                        escape(&series.label),
                        escape(chart.x.get(i).map(String::as_str).unwrap_or_default()),
                        escape(&tick(*value, &chart.unit))
                    );
                }
            }
        }
    }
    // Legend.
    for (n, series) in chart.series.iter().enumerate() {
        let x = LEFT + 150.0 * n as f64;
        let _ = write!(
            out,
            "<rect x=\"{x}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"{}\" class=\"legend\">{}</text>",
            HEIGHT - 18.0,
            COLOURS[n % COLOURS.len()],
            x + 14.0,
            HEIGHT - 9.0,
            escape(&series.label.chars().take(22).collect::<String>())
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canvas::Series;

    fn chart(kind: ChartKind, unit: &str, x: &[&str], series: &[(&str, &[i64])]) -> Chart {
        Chart {
            kind,
            unit: unit.into(),
            x: x.iter().map(|s| s.to_string()).collect(),
            series: series
                .iter()
                .map(|(label, values)| Series {
                    label: label.to_string(),
                    values: values.to_vec(),
                })
                .collect(),
        }
    }

    #[test]
    fn bars_are_one_rect_per_value_and_grow_with_it() {
        let svg = svg(
            &chart(
                ChartKind::Bar,
                "USD",
                &["AWS", "Figma", "Slack"],
                &[("usd", &[482_000, 120_000, 0])],
            ),
            "Spend by vendor",
        );
        let bars: Vec<f64> = svg
            .split("<rect x=")
            .skip(1)
            .filter(|r| r.contains("<title>"))
            .filter_map(|r| r.split("height=\"").nth(1)?.split('"').next()?.parse().ok())
            .collect();
        assert_eq!(bars.len(), 3, "{svg}");
        assert!(bars[0] > bars[1] && bars[1] > bars[2], "{bars:?}");
        assert!(svg.contains("$4.8k") || svg.contains("$5.0k"), "{svg}");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }

    #[test]
    fn a_line_has_a_point_per_value_and_negative_values_go_below_zero() {
        let svg = svg(
            &chart(
                ChartKind::Line,
                "EUR",
                &["2026-09", "2026-10", "2026-11"],
                &[("net burn", &[-50_000, 0, 150_000])],
            ),
            "Burn",
        );
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.contains("class=\"grid zero\""), "a zero line: {svg}");
        assert!(svg.contains("€-500") || svg.contains("€-1.0k"), "{svg}");
    }

    #[test]
    fn labels_are_escaped_and_an_empty_chart_says_so() {
        let svg = svg(
            &chart(
                ChartKind::Bar,
                "count",
                &["<script>alert(1)</script>"],
                &[("\"><img src=x onerror=alert(1)>", &[3])],
            ),
            "<b>",
        );
        assert!(!svg.contains("<script>") && !svg.contains("<img") && !svg.contains("<b>"));
        assert!(svg.contains("&lt;script&gt;"));
        let empty = super::svg(&chart(ChartKind::Line, "count", &[], &[]), "Nothing");
        assert!(empty.contains("No data for this period"));
    }

    #[test]
    fn ticks_read_in_the_units_people_use() {
        assert_eq!(tick(482_000, "USD"), "$4.8k");
        assert_eq!(tick(90_000, "EUR/USD"), "900");
        assert_eq!(tick(595, "tenths of a month"), "60 mo");
        assert_eq!(tick(2_500, "%"), "25 %");
        assert_eq!(tick(7_200, "seconds"), "2.0h");
    }

    #[test]
    fn steps_are_round() {
        for (span, expected) in [(10, 2), (100, 20), (1_234, 250), (482_000, 100_000), (0, 1)] {
            assert_eq!(step(span), expected, "{span}");
        }
    }
}
