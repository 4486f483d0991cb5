//! `/dashboard`: one self-contained HTML page of the ledger, charts drawn here as inline
//! SVG. It loads nothing from anywhere (its CSP forbids it) and runs no script.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::aggregate::{Cell, Totals};
use super::day::Day;
use super::ledger::Ledger;
use super::money;
use super::pricing::PICO;
use super::query::{Dimension, ReportQuery};
use super::record::Outcome;
use super::report::Report;

const TEMPLATE: &str = include_str!("dashboard.html");

/// How many keys the top-savers table lists.
const TOP_SAVERS: usize = 10;

/// The whole page for the query's date range (its grouping and format are ignored).
pub async fn dashboard_html(ledger: &Ledger, query: &ReportQuery) -> String {
    let range = format!("{} to {} (UTC)", query.from, query.to);
    let content = match ledger.cells(query.from, query.to).await {
        Ok(cells) => content(ledger, query, &cells),
        Err(e) => format!(
            "<section class=\"wide\"><h2>Ledger unavailable</h2><p class=\"warn\">The store did not answer: {}</p></section>",
            esc(&e.to_string())
        ),
    };
    TEMPLATE
        .replace("{{range}}", &esc(&range))
        .replace("{{content}}", &content)
}

fn content(ledger: &Ledger, query: &ReportQuery, cells: &BTreeMap<Cell, Totals>) -> String {
    let by = |dimension: Option<Dimension>| {
        let q = ReportQuery {
            group_by: dimension.into_iter().collect(),
            ..query.clone()
        };
        Report::build(&q, cells, ledger.pricing())
    };
    let total = by(None);
    let currency = total.currency.clone();
    let days: BTreeMap<String, Totals> = by(Some(Dimension::Day))
        .rows
        .into_iter()
        .map(|r| (r.group.concat(), r.totals))
        .collect();
    let rows = |d: Dimension| -> Vec<(String, Totals)> {
        by(Some(d))
            .rows
            .into_iter()
            .map(|r| (r.group.concat(), r.totals))
            .collect()
    };
    let mut out = String::new();
    out.push_str(&cards(&total, &rows(Dimension::Outcome), &currency, ledger));
    out.push_str(&daily_chart(query.from, query.to, &days, &currency));
    out.push_str(&outcomes(&total.total));
    out.push_str(&breakdown(
        "By model",
        "model",
        rows(Dimension::Model),
        usize::MAX,
        &currency,
    ));
    out.push_str(&breakdown(
        "By endpoint",
        "endpoint",
        rows(Dimension::Endpoint),
        usize::MAX,
        &currency,
    ));
    out.push_str(&breakdown(
        "By team",
        "team",
        rows(Dimension::Team),
        usize::MAX,
        &currency,
    ));
    out.push_str(&breakdown(
        "Top savers",
        "key",
        rows(Dimension::Key),
        TOP_SAVERS,
        &currency,
    ));
    out.push_str(&notes(&total));
    out
}

fn cards(
    report: &Report,
    by_outcome: &[(String, Totals)],
    currency: &str,
    ledger: &Ledger,
) -> String {
    let t = &report.total;
    let compressed = by_outcome
        .iter()
        .find(|(o, _)| o == Outcome::Compressed.as_str())
        .and_then(|(_, t)| t.compression_ratio());
    let net = t.net_saved();
    let tone = match net {
        Some(n) if n < 0 => "loss",
        Some(_) => "save",
        None => "",
    };
    let pct = t
        .baseline_cost()
        .zip(net)
        .and_then(|(b, n)| money::percent(n, b))
        .map_or_else(
            || "no priced baseline".to_owned(),
            |p| format!("{p}% of baseline"),
        );
    let mut cards = vec![
        card("Net saved", &show_money(net, currency), tone, &pct, net),
        card(
            "Baseline cost",
            &show_money(t.baseline_cost(), currency),
            "",
            "without thrifty",
            t.baseline_cost(),
        ),
        card(
            "Actual cost",
            &show_money(t.actual_cost(), currency),
            "",
            "billed by upstreams",
            t.actual_cost(),
        ),
        card(
            "Overhead",
            &show_money(t.overhead_cost(), currency),
            "",
            "summaries, paid embeddings",
            t.overhead_cost(),
        ),
        card(
            "Requests",
            &group_thousands(t.requests),
            "",
            &format!("{} with estimated usage", group_thousands(t.estimated)),
            None,
        ),
        card(
            "Cache hit rate",
            &percent(t.hit_rate()),
            "",
            &format!(
                "{} exact, {} semantic",
                t.outcome(Outcome::ExactHit),
                t.outcome(Outcome::SemanticHit)
            ),
            None,
        ),
        card(
            "Tokens saved",
            &group_thousands(t.tokens_saved()),
            "",
            &format!("of {} baseline", group_thousands(t.baseline.total())),
            None,
        ),
        card(
            "Compression",
            &compressed.map_or_else(|| "–".to_owned(), |r| format!("{:.0}%", r * 100.0)),
            "",
            "prompt kept, compressed requests",
            None,
        ),
    ];
    if ledger.dropped() > 0 || ledger.pending() > 0 {
        cards.push(card(
            "Ledger",
            &format!("{} pending", ledger.pending()),
            if ledger.dropped() > 0 { "loss" } else { "" },
            &format!("{} dropped since start", ledger.dropped()),
            None,
        ));
    }
    format!(
        "<section class=\"wide\"><h2>Totals</h2><div class=\"cards\">{}</div></section>\n",
        cards.concat()
    )
}

fn card(label: &str, value: &str, tone: &str, sub: &str, exact: Option<i128>) -> String {
    let title = exact
        .map(|p| format!(" title=\"{}\"", money::decimal(p)))
        .unwrap_or_default();
    format!(
        "<div class=\"card\"><div class=\"label\">{}</div><div class=\"value {tone}\"{title}>{}</div><div class=\"sub\">{}</div></div>",
        esc(label),
        esc(value),
        esc(sub)
    )
}

/// Net saved per day as bars above (saved) or below (lost) a zero line.
fn daily_chart(from: Day, to: Day, days: &BTreeMap<String, Totals>, currency: &str) -> String {
    let (width, height, left, bottom, top) = (900.0_f64, 240.0_f64, 78.0_f64, 24.0_f64, 10.0_f64);
    let mut values = Vec::new();
    let mut day = from;
    while day <= to {
        let key = day.to_string();
        let totals = days.get(&key);
        values.push((
            key,
            totals.and_then(Totals::net_saved).unwrap_or(0),
            totals.map_or(0, |t| t.requests),
        ));
        day = day.plus(1);
    }
    let max = values.iter().map(|v| v.1).max().unwrap_or(0).max(0);
    let min = values.iter().map(|v| v.1).min().unwrap_or(0).min(0);
    let span = ((max - min) as f64).max(1.0);
    let plot = height - bottom - top;
    let y = |v: i128| top + (max - v) as f64 / span * plot;
    let zero = y(0);
    let step = (width - left) / values.len().max(1) as f64;
    let mut svg = format!(
        "<svg viewBox=\"0 0 {width} {height}\" width=\"100%\" role=\"img\" aria-label=\"net saved per day\">"
    );
    let mut ticks = vec![max, 0];
    if min < 0 {
        ticks.push(min);
    }
    for tick in ticks {
        let ty = y(tick);
        let _ = write!(
            svg,
            "<line x1=\"{left}\" x2=\"{width}\" y1=\"{ty:.1}\" y2=\"{ty:.1}\" stroke=\"#e4e7ec\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left - 6.0,
            ty + 4.0,
            esc(&show_money(Some(tick), currency))
        );
    }
    for (i, (label, net, requests)) in values.iter().enumerate() {
        let x = left + i as f64 * step + step * 0.15;
        let (top_y, bar) = if *net >= 0 {
            (y(*net), zero - y(*net))
        } else {
            (zero, y(*net) - zero)
        };
        let color = if *net >= 0 { "#1a7f52" } else { "#c4320a" };
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{top_y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\" rx=\"1.5\"><title>{}: {} net saved, {requests} requests</title></rect>",
            (step * 0.7).max(0.5),
            bar.max(if *net == 0 { 0.0 } else { 0.5 }),
            esc(label),
            esc(&show_money(Some(*net), currency))
        );
    }
    let n = values.len();
    for i in [0, n / 2, n.saturating_sub(1)]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
    {
        if let Some((label, _, _)) = values.get(i) {
            let x = left + i as f64 * step + step / 2.0;
            let anchor = if i == 0 {
                "start"
            } else if i + 1 == n {
                "end"
            } else {
                "middle"
            };
            let _ = write!(
                svg,
                "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>",
                height - 6.0,
                esc(label)
            );
        }
    }
    svg.push_str("</svg>");
    format!("<section class=\"wide\"><h2>Net saved per day</h2>{svg}</section>\n")
}

/// Shares of each outcome as one stacked bar, with counts.
fn outcomes(t: &Totals) -> String {
    let colors = [
        "#b9c0cc", "#1a7f52", "#4fb286", "#3e63dd", "#d0d5dd", "#c4320a",
    ];
    let total = t.requests.max(1) as f64;
    let mut svg = String::from(
        "<svg viewBox=\"0 0 400 22\" width=\"100%\" role=\"img\" aria-label=\"requests by outcome\">",
    );
    let mut x = 0.0;
    let mut legend = String::new();
    let mut rows = String::new();
    for (outcome, color) in Outcome::ALL.iter().zip(colors) {
        let n = t.outcome(*outcome);
        let share = n as f64 / total;
        let w = share * 400.0;
        if n > 0 {
            let _ = write!(
                svg,
                "<rect x=\"{x:.2}\" y=\"0\" width=\"{w:.2}\" height=\"22\" fill=\"{color}\"><title>{}: {n}</title></rect>",
                outcome.as_str()
            );
        }
        x += w;
        let _ = write!(
            legend,
            "<span><i style=\"background:{color}\"></i>{}</span>",
            outcome.as_str().replace('_', " ")
        );
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{n}</td><td>{:.1}%</td></tr>",
            outcome.as_str().replace('_', " "),
            share * 100.0
        );
    }
    if t.requests == 0 {
        svg.push_str("<rect x=\"0\" y=\"0\" width=\"400\" height=\"22\" fill=\"#e4e7ec\"/>");
    }
    svg.push_str("</svg>");
    format!(
        "<section><h2>Hit rates by kind</h2>{svg}<div class=\"legend\">{legend}</div><table><tr><th>outcome</th><th>requests</th><th>share</th></tr>{rows}</table></section>\n"
    )
}

/// A table of groups sorted by net saved, with a bar each.
fn breakdown(
    title: &str,
    name: &str,
    mut rows: Vec<(String, Totals)>,
    limit: usize,
    currency: &str,
) -> String {
    rows.sort_by(|a, b| {
        b.1.net_saved()
            .cmp(&a.1.net_saved())
            .then(b.1.tokens_saved().cmp(&a.1.tokens_saved()))
            .then(a.0.cmp(&b.0))
    });
    rows.truncate(limit);
    let widest = rows
        .iter()
        .filter_map(|r| r.1.net_saved())
        .map(i128::abs)
        .max()
        .unwrap_or(0)
        .max(1);
    let mut body = String::new();
    for (label, t) in &rows {
        let net = t.net_saved();
        let bar = net.map_or(String::new(), |n| {
            let pct = (n.abs() as f64 / widest as f64 * 100.0).max(if n == 0 { 0.0 } else { 1.0 });
            let class = if n < 0 { " class=\"loss\"" } else { "" };
            format!("<span{class} style=\"width:{pct:.1}%\"></span>")
        });
        let label = if label.is_empty() {
            "<span class=\"none\">none</span>".to_owned()
        } else {
            esc(label)
        };
        let net_text = net.map_or_else(
            || "<span class=\"none\">unpriced</span>".to_owned(),
            |n| esc(&show_money(Some(n), currency)),
        );
        let _ = write!(
            body,
            "<tr><td>{label}</td><td>{}</td><td>{}</td><td>{}</td><td title=\"{}\">{net_text}</td><td class=\"bar\">{bar}</td></tr>",
            group_thousands(t.requests),
            percent(t.hit_rate()),
            group_thousands(t.tokens_saved()),
            net.map(money::decimal).unwrap_or_default(),
        );
    }
    if rows.is_empty() {
        body.push_str("<tr><td colspan=\"6\" class=\"none\">no requests in this range</td></tr>");
    }
    format!(
        "<section><h2>{}</h2><table><tr><th>{}</th><th>requests</th><th>hit rate</th><th>tokens saved</th><th>net saved</th><th></th></tr>{body}</table></section>\n",
        esc(title),
        esc(name)
    )
}

fn notes(report: &Report) -> String {
    let mut out = String::from("<section class=\"wide notes\"><h2>About these figures</h2>");
    let _ = write!(
        out,
        "<p>Net saved = baseline − actual − overhead, in {}; exact figures show on hover. Costs cover priced requests only.</p>",
        esc(&report.currency)
    );
    if !report.unpriced_models.is_empty() {
        let list: Vec<String> = report
            .unpriced_models
            .iter()
            .map(|(m, n)| format!("<code>{}</code> ({n})", esc(m)))
            .collect();
        let _ = write!(
            out,
            "<p class=\"warn\">Unpriced models (tokens counted, no cost): {}</p>",
            list.join(", ")
        );
    }
    if !report.price_versions.is_empty() {
        let list: Vec<String> = report
            .price_versions
            .iter()
            .map(|v| {
                format!(
                    "<code>{}</code> from {} ({})",
                    esc(&v.model),
                    v.effective,
                    v.requests
                )
            })
            .collect();
        let _ = write!(out, "<p>Price versions used: {}</p>", list.join(", "));
    }
    out.push_str("</section>\n");
    out
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "–".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

/// Money for people: cents from one unit up, four decimals below, exact when that shows 0.
fn show_money(pico: Option<i128>, currency: &str) -> String {
    let Some(pico) = pico else {
        return "unpriced".to_owned();
    };
    let decimals: u32 = if pico.abs() >= PICO { 2 } else { 4 };
    let step = PICO / 10_i128.pow(decimals);
    let rounded = (pico.abs() + step / 2) / step;
    let text = if rounded == 0 && pico != 0 {
        money::decimal(pico)
    } else {
        let sign = if pico < 0 { "-" } else { "" };
        let scale = 10_i128.pow(decimals);
        let fraction = rounded % scale;
        format!(
            "{sign}{}.{fraction:0w$}",
            group_thousands(rounded / scale),
            w = decimals as usize
        )
    };
    if currency == "USD" {
        match text.strip_prefix('-') {
            Some(rest) => format!("-${rest}"),
            None => format!("${text}"),
        }
    } else {
        format!("{text} {currency}")
    }
}

fn group_thousands(n: i128) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::from(if n < 0 { "-" } else { "" });
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Escapes text for HTML content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_for_people_is_rounded_and_tiny_amounts_stay_exact() {
        assert_eq!(
            show_money(Some(1_234_567 * PICO + PICO / 200), "USD"),
            "$1,234,567.01"
        );
        assert_eq!(show_money(Some(-PICO / 2), "USD"), "-$0.5000");
        assert_eq!(show_money(Some(8_713_700_000), "USD"), "$0.0087");
        assert_eq!(show_money(Some(150_000), "USD"), "$0.00000015");
        assert_eq!(show_money(Some(0), "EUR"), "0.0000 EUR");
        assert_eq!(show_money(None, "USD"), "unpriced");
        assert_eq!(
            esc("<script>\"x\"&'"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;"
        );
    }
}
