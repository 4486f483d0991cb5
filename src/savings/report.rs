//! Reports: aggregate cells grouped by the asked dimensions, with totals, the models
//! that had no price and the price versions used, rendered as JSON, CSV or a table.
//! Money is summed as integer pico-units and printed as exact decimals.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use super::aggregate::{Cell, TokenSums, Totals};
use super::day::Day;
use super::money;
use super::names;
use super::pricing::{Price, Pricing};
use super::query::{Dimension, Format, ReportQuery};
use super::record::{AuditEntry, Outcome};

/// One group of the report: its dimension values (in `group_by` order) and sums.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// Empty for a key without a team.
    pub group: Vec<String>,
    pub totals: Totals,
}

/// A price version and how many requests it priced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionUse {
    pub model: String,
    pub upstream: Option<String>,
    pub effective: Day,
    pub requests: i128,
    /// The version's prices, when the current table still holds it.
    pub price: Option<Price>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub from: Day,
    pub to: Day,
    pub group_by: Vec<Dimension>,
    pub format: Format,
    pub currency: String,
    pub rows: Vec<Row>,
    pub total: Totals,
    /// Models without a price and how many requests used them.
    pub unpriced_models: Vec<(String, i128)>,
    pub price_versions: Vec<VersionUse>,
}

fn value_of(cell: &Cell, dimension: Dimension) -> String {
    match dimension {
        Dimension::Day => cell.day.to_string(),
        Dimension::Model => cell.model.clone(),
        Dimension::Team => cell.team.clone(),
        Dimension::Key => cell.key.clone(),
        Dimension::Outcome => cell.outcome.as_str().to_owned(),
        Dimension::Endpoint => cell.endpoint.clone(),
    }
}

impl Report {
    pub fn build(query: &ReportQuery, cells: &BTreeMap<Cell, Totals>, pricing: &Pricing) -> Report {
        let mut groups: BTreeMap<Vec<String>, Totals> = BTreeMap::new();
        let mut total = Totals::default();
        for (cell, totals) in cells {
            if cell.day < query.from || cell.day > query.to {
                continue;
            }
            let group = query.group_by.iter().map(|d| value_of(cell, *d)).collect();
            groups.entry(group).or_default().add(totals);
            total.add(totals);
        }
        let price_versions = total
            .versions
            .iter()
            .filter_map(|(label, requests)| {
                let (model, upstream, effective) = names::parse_version_label(label)?;
                Some(VersionUse {
                    price: pricing
                        .version(&model, upstream.as_deref(), effective)
                        .cloned(),
                    model,
                    upstream,
                    effective,
                    requests: *requests,
                })
            })
            .collect();
        Report {
            from: query.from,
            to: query.to,
            group_by: query.group_by.clone(),
            format: query.format,
            currency: pricing.currency().to_owned(),
            rows: groups
                .into_iter()
                .map(|(group, totals)| Row { group, totals })
                .collect(),
            unpriced_models: total.unpriced_models.clone().into_iter().collect(),
            price_versions,
            total,
        }
    }

    /// The rendering the query asked for, with its content type.
    pub fn render(&self) -> (&'static str, String) {
        match self.format {
            Format::Json => ("application/json", self.to_json().to_string()),
            Format::Csv => ("text/csv; charset=utf-8", self.to_csv()),
            Format::Table => ("text/plain; charset=utf-8", self.to_table()),
        }
    }

    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let mut object = Map::new();
                for (dimension, value) in self.group_by.iter().zip(&row.group) {
                    let value = if value.is_empty() {
                        Value::Null
                    } else {
                        json!(value)
                    };
                    object.insert(dimension.as_str().to_owned(), value);
                }
                object.extend(figures(&row.totals));
                Value::Object(object)
            })
            .collect();
        let versions: Vec<Value> = self
            .price_versions
            .iter()
            .map(|v| {
                json!({
                    "model": v.model,
                    "upstream": v.upstream,
                    "effective": v.effective.to_string(),
                    "requests": int(v.requests),
                    "input": v.price.as_ref().map(|p| per_million(p.input)),
                    "cached_input": v.price.as_ref().map(|p| per_million(p.cached_input)),
                    "output": v.price.as_ref().map(|p| per_million(p.output)),
                    "source": v.price.as_ref().map(|p| p.source.clone()),
                })
            })
            .collect();
        json!({
            "from": self.from.to_string(),
            "to": self.to.to_string(),
            "group_by": self.group_by.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
            "currency": self.currency,
            "rows": rows,
            "total": Value::Object(figures(&self.total)),
            "unpriced_models": self.unpriced_models.iter().map(|(m, n)| json!({"model": m, "requests": int(*n)})).collect::<Vec<_>>(),
            "price_versions": versions,
            "notes": "money is exact, in currency units; costs cover priced requests only; net_saved = baseline - actual - overhead",
        })
    }

    pub fn to_csv(&self) -> String {
        let mut header: Vec<&str> = vec!["row"];
        header.extend(self.group_by.iter().map(|d| d.as_str()));
        header.extend(CSV_FIGURES);
        let mut out = header.join(",");
        out.push_str("\r\n");
        let mut line = |kind: &str, group: &[String], totals: &Totals| {
            let mut cells = vec![kind.to_owned()];
            cells.extend(group.iter().map(|v| csv_text(v)));
            cells.extend(csv_figures(totals, &self.currency));
            out.push_str(&cells.join(","));
            out.push_str("\r\n");
        };
        for row in &self.rows {
            line("group", &row.group, &row.totals);
        }
        line(
            "total",
            &vec![String::new(); self.group_by.len()],
            &self.total,
        );
        out
    }

    pub fn to_table(&self) -> String {
        let mut header: Vec<String> = self
            .group_by
            .iter()
            .map(|d| d.as_str().to_owned())
            .collect();
        let figures = [
            "requests",
            "hit rate",
            "tokens saved",
            "baseline",
            "actual",
            "overhead",
            "net saved",
            "saved %",
        ];
        header.extend(figures.iter().map(|f| (*f).to_owned()));
        let mut lines = vec![header];
        let line = |group: Vec<String>, t: &Totals| {
            let mut cells = group;
            cells.push(t.requests.to_string());
            cells.push(
                money::scaled_ratio(t.hits(), t.requests, 1_000)
                    .map_or("-".to_owned(), |r| format!("{}.{}%", r / 10, r % 10)),
            );
            cells.push(t.tokens_saved().to_string());
            for cost in [
                t.baseline_cost(),
                t.actual_cost(),
                t.overhead_cost(),
                t.net_saved(),
            ] {
                cells.push(cost.map_or("unpriced".to_owned(), money::decimal));
            }
            cells.push(savings_pct(t).unwrap_or_else(|| "-".to_owned()));
            cells
        };
        for row in &self.rows {
            let group = row
                .group
                .iter()
                .map(|v| {
                    if v.is_empty() {
                        "-".to_owned()
                    } else {
                        v.clone()
                    }
                })
                .collect();
            lines.push(line(group, &row.totals));
        }
        let mut total_label = vec![String::new(); self.group_by.len()];
        if let Some(first) = total_label.first_mut() {
            *first = "TOTAL".to_owned();
        }
        lines.push(line(total_label, &self.total));
        let columns = lines[0].len();
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                lines
                    .iter()
                    .map(|l| l[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let dims = self.group_by.len();
        let mut out = format!(
            "savings {} .. {} ({})\n\n",
            self.from, self.to, self.currency
        );
        for (i, cells) in lines.iter().enumerate() {
            if i == lines.len() - 1 || i == 1 {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                out.push_str(rule.join("  ").trim_end());
                out.push('\n');
            }
            let padded: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(c, text)| {
                    if c < dims {
                        format!("{text:<w$}", w = widths[c])
                    } else {
                        format!("{text:>w$}", w = widths[c])
                    }
                })
                .collect();
            out.push_str(padded.join("  ").trim_end());
            out.push('\n');
        }
        if !self.unpriced_models.is_empty() {
            out.push_str("\nunpriced models (tokens counted, no cost):\n");
            for (model, n) in &self.unpriced_models {
                let _ = writeln!(out, "  {model}: {n} requests");
            }
        }
        if !self.price_versions.is_empty() {
            out.push_str(
                "\nprice versions used (per million tokens: input / cached input / output):\n",
            );
            for v in &self.price_versions {
                let on = v
                    .upstream
                    .as_deref()
                    .map(|u| format!(" on {u}"))
                    .unwrap_or_default();
                let prices = v.price.as_ref().map_or_else(
                    || "no longer in the price table".to_owned(),
                    |p| {
                        format!(
                            "{} / {} / {} ({})",
                            per_million(p.input),
                            per_million(p.cached_input),
                            per_million(p.output),
                            p.source
                        )
                    },
                );
                let _ = writeln!(
                    out,
                    "  {}{on} from {}: {prices}; {} requests",
                    v.model, v.effective, v.requests
                );
            }
        }
        out
    }
}

/// Price in pico per token, shown per million tokens.
fn per_million(pico_per_token: u64) -> String {
    money::decimal(i128::from(pico_per_token) * 1_000_000)
}

fn int(n: i128) -> i64 {
    i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX })
}

fn rate(value: Option<f64>) -> Value {
    value.map_or(Value::Null, |v| json!((v * 10_000.0).round() / 10_000.0))
}

/// Hits per request in ten-thousandths, rounded exactly, so the JSON number and the CSV text
/// show the same rate (a float formatted with `{:.4}` rounds ties to even: 1/32 → 0.0312).
fn hit_rate(t: &Totals) -> Option<i128> {
    money::scaled_ratio(t.hits(), t.requests, 10_000)
}

fn hit_rate_text(t: &Totals) -> Option<String> {
    hit_rate(t).map(|n| format!("{}.{:04}", n / 10_000, n % 10_000))
}

fn savings_pct(t: &Totals) -> Option<String> {
    money::percent(t.net_saved()?, t.baseline_cost()?)
}

fn tokens(sums: &TokenSums) -> Value {
    json!({
        "prompt": int(sums.prompt),
        "cached_prompt": int(sums.cached_prompt),
        "completion": int(sums.completion),
        "total": int(sums.total()),
    })
}

fn figures(t: &Totals) -> Map<String, Value> {
    let cost = |pico: Option<i128>| pico.map_or(Value::Null, |p| json!(money::decimal(p)));
    let object = json!({
        "requests": int(t.requests),
        "hits": {
            "exact": int(t.outcome(Outcome::ExactHit)),
            "semantic": int(t.outcome(Outcome::SemanticHit)),
            "total": int(t.hits()),
        },
        "outcomes": Outcome::ALL.iter().map(|o| (o.as_str().to_owned(), json!(int(t.outcome(*o))))).collect::<Map<_, _>>(),
        "hit_rate": hit_rate(t).map_or(Value::Null, |n| json!(n as f64 / 10_000.0)),
        "tokens": {
            "baseline": tokens(&t.baseline),
            "actual": tokens(&t.actual),
            "overhead": tokens(&t.overhead),
            "saved": int(t.tokens_saved()),
        },
        "cost": {
            "baseline": cost(t.baseline_cost()),
            "actual": cost(t.actual_cost()),
            "overhead": cost(t.overhead_cost()),
            "net_saved": cost(t.net_saved()),
            "savings_pct": savings_pct(t),
        },
        "priced_requests": int(t.priced),
        "unpriced_requests": int(t.unpriced),
        "estimated_requests": int(t.estimated),
        "partial_requests": int(t.partial),
        "embed_calls": int(t.embed_calls),
        "avg_latency_ms": rate(t.avg_latency_ms()),
        "avg_upstream_ms": rate(t.avg_upstream_ms()),
    });
    match object {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

const CSV_FIGURES: [&str; 22] = [
    "requests",
    "exact_hits",
    "semantic_hits",
    "hit_rate",
    "compressed",
    "misses",
    "bypassed",
    "errors",
    "tokens_baseline",
    "tokens_actual",
    "tokens_saved",
    "tokens_overhead",
    "cost_baseline",
    "cost_actual",
    "cost_overhead",
    "net_saved",
    "savings_pct",
    "currency",
    "priced_requests",
    "unpriced_requests",
    "estimated_requests",
    "embed_calls",
];

fn csv_figures(t: &Totals, currency: &str) -> Vec<String> {
    let cost = |pico: Option<i128>| pico.map(money::decimal).unwrap_or_default();
    vec![
        t.requests.to_string(),
        t.outcome(Outcome::ExactHit).to_string(),
        t.outcome(Outcome::SemanticHit).to_string(),
        hit_rate_text(t).unwrap_or_default(),
        t.outcome(Outcome::Compressed).to_string(),
        t.outcome(Outcome::Miss).to_string(),
        t.outcome(Outcome::Bypass).to_string(),
        t.outcome(Outcome::Error).to_string(),
        t.baseline.total().to_string(),
        t.actual.total().to_string(),
        t.tokens_saved().to_string(),
        t.overhead.total().to_string(),
        cost(t.baseline_cost()),
        cost(t.actual_cost()),
        cost(t.overhead_cost()),
        cost(t.net_saved()),
        savings_pct(t).unwrap_or_default(),
        currency.to_owned(),
        t.priced.to_string(),
        t.unpriced.to_string(),
        t.estimated.to_string(),
        t.embed_calls.to_string(),
    ]
}

/// A text cell: quoted when needed, and defused when a spreadsheet would run it as a formula.
fn csv_text(text: &str) -> String {
    let defused = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if defused.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", defused.replace('"', "\"\""))
    } else {
        defused
    }
}

/// The audit log's raw records as CSV, one line per request.
pub fn audit_csv(entries: &[AuditEntry]) -> String {
    let mut out = String::from(
        "at_ms,day,tenant,key_name,team,tags,dialect,endpoint,model,upstream,outcome,status,latency_ms,upstream_ms,\
         baseline_prompt,baseline_cached_prompt,baseline_completion,actual_prompt,actual_cached_prompt,actual_completion,\
         overhead_prompt,overhead_cached_prompt,overhead_completion,overhead_model,embed_calls,estimated,\
         currency,cost_baseline,cost_actual,cost_overhead,net_saved,prices,unpriced\r\n",
    );
    for e in entries {
        let r = &e.record;
        let c = e.cost.as_ref();
        let cells = [
            r.at_ms.to_string(),
            r.day().to_string(),
            csv_text(&r.tenant),
            csv_text(r.key_name.as_deref().unwrap_or("")),
            csv_text(r.team.as_deref().unwrap_or("")),
            csv_text(&r.tags.join(";")),
            csv_text(&r.dialect),
            csv_text(&r.endpoint),
            csv_text(&r.model),
            csv_text(&r.upstream),
            r.outcome.as_str().to_owned(),
            r.status.to_string(),
            r.latency_ms.to_string(),
            r.upstream_ms.map(|m| m.to_string()).unwrap_or_default(),
            r.baseline.prompt.to_string(),
            r.baseline.cached_prompt.to_string(),
            r.baseline.completion.to_string(),
            r.actual.prompt.to_string(),
            r.actual.cached_prompt.to_string(),
            r.actual.completion.to_string(),
            r.overhead.prompt.to_string(),
            r.overhead.cached_prompt.to_string(),
            r.overhead.completion.to_string(),
            csv_text(r.overhead_model.as_deref().unwrap_or("")),
            r.embed_calls.to_string(),
            r.estimated.to_string(),
            c.map(|c| c.currency.clone()).unwrap_or_default(),
            c.map(|c| c.baseline.clone()).unwrap_or_default(),
            c.map(|c| c.actual.clone()).unwrap_or_default(),
            c.map(|c| c.overhead.clone()).unwrap_or_default(),
            c.map(|c| c.net_saved.clone()).unwrap_or_default(),
            csv_text(&e.prices.join(";")),
            csv_text(&e.unpriced.join(";")),
        ];
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}
