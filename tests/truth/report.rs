//! Reads `GET /admin/savings` in JSON and CSV for several groupings and compares every figure
//! with the expected sums. Money is compared as exact integer pico-units parsed from the
//! report's decimals, never as floats.

use serde_json::{Value, json};

use super::expect::{self, Outcome, Record, Sums};
use super::verdict::Verdict;
use super::world::World;

/// The groupings compared: totals only, each dimension but the day, a pair, and all four.
pub const GROUPINGS: [&[&str]; 7] = [
    &[],
    &["outcome"],
    &["team"],
    &["model"],
    &["key"],
    &["team", "model"],
    &["model", "team", "key", "outcome"],
];

/// One grouping's report in both formats.
#[derive(Clone, Debug, PartialEq)]
pub struct Fetched {
    pub group_by: String,
    pub json: Value,
    pub csv: String,
}

pub async fn fetch(world: &World, span: (&str, &str)) -> Vec<Fetched> {
    let mut out = Vec::new();
    for dimensions in GROUPINGS {
        let group_by = dimensions.join(",");
        let json = world.report(span, &group_by, "json").await;
        let json: Value = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("group_by={group_by}: the JSON report parses: {e}"));
        let csv = world.report(span, &group_by, "csv").await;
        out.push(Fetched {
            group_by,
            json,
            csv,
        });
    }
    out
}

/// `"-1.000000000001"` → pico-units; `None` when it is not such a decimal.
pub fn pico(text: &str) -> Option<i128> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty()
        || fraction.len() > 12
        || !(whole.chars().chain(fraction.chars())).all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let value = whole.parse::<i128>().ok()? * 1_000_000_000_000
        + format!("{fraction:0<12}").parse::<i128>().ok()?;
    Some(if negative { -value } else { value })
}

/// `"12.34"` → 1234 hundredths.
fn hundredths(text: &str) -> Option<i128> {
    pico(text).map(|p| p / 10_000_000_000)
}

/// Compares one grouping's JSON and CSV reports with the expected records.
pub fn check(v: &mut Verdict, span: (&str, &str), fetched: &Fetched, records: &[Record]) {
    let dimensions: Vec<&str> = fetched
        .group_by
        .split(',')
        .filter(|d| !d.is_empty())
        .collect();
    let rows = expect::group(records, &dimensions);
    let total = expect::total(records);
    let label = format!("group_by={}", fetched.group_by);

    let json = &fetched.json;
    v.eq(
        format!("{label} json: currency"),
        &json!("USD"),
        &json["currency"],
    );
    v.eq(format!("{label} json: from"), &json!(span.0), &json["from"]);
    v.eq(format!("{label} json: to"), &json!(span.1), &json["to"]);
    v.eq(
        format!("{label} json: group_by"),
        &json!(dimensions),
        &json["group_by"],
    );
    let empty = Vec::new();
    let json_rows = json["rows"].as_array().unwrap_or(&empty);
    let got: Vec<Vec<String>> = json_rows
        .iter()
        .map(|row| {
            dimensions
                .iter()
                .map(|d| row[*d].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .collect();
    v.eq(
        format!("{label} json: rows"),
        rows.keys().cloned().collect::<Vec<_>>(),
        got.clone(),
    );
    for (key, row) in got.iter().zip(json_rows) {
        if let Some(sums) = rows.get(key) {
            json_figures(v, &format!("{label} json row {key:?}"), row, sums);
        }
    }
    json_figures(v, &format!("{label} json total"), &json["total"], &total);
    unpriced_and_versions(v, &label, json, records);
    csv(v, &label, &dimensions, &fetched.csv, &rows, &total);
}

fn json_figures(v: &mut Verdict, at: &str, got: &Value, sums: &Sums) {
    let mut eq = |field: &str, expected: Value, actual: &Value| {
        v.eq(format!("{at}: {field}"), &expected, actual);
    };
    eq("requests", json!(sums.requests), &got["requests"]);
    eq(
        "hits.exact",
        json!(sums.outcome(Outcome::ExactHit)),
        &got["hits"]["exact"],
    );
    eq(
        "hits.semantic",
        json!(sums.outcome(Outcome::SemanticHit)),
        &got["hits"]["semantic"],
    );
    eq("hits.total", json!(sums.hits()), &got["hits"]["total"]);
    for outcome in Outcome::ALL {
        let name = outcome.as_str();
        eq(
            &format!("outcomes.{name}"),
            json!(sums.outcome(outcome)),
            &got["outcomes"][name],
        );
    }
    let rate = (sums.hit_rate() * 10_000.0).round() / 10_000.0;
    eq("hit_rate", json!(rate), &got["hit_rate"]);
    let tokens = |t: super::billing::Tokens| json!({"prompt": t.prompt, "cached_prompt": 0, "completion": t.completion, "total": t.total()});
    eq(
        "tokens.baseline",
        tokens(sums.baseline),
        &got["tokens"]["baseline"],
    );
    eq(
        "tokens.actual",
        tokens(sums.actual),
        &got["tokens"]["actual"],
    );
    eq(
        "tokens.overhead",
        tokens(Default::default()),
        &got["tokens"]["overhead"],
    );
    eq(
        "tokens.saved",
        json!(sums.tokens_saved()),
        &got["tokens"]["saved"],
    );
    eq(
        "priced_requests",
        json!(sums.priced),
        &got["priced_requests"],
    );
    eq(
        "unpriced_requests",
        json!(sums.unpriced),
        &got["unpriced_requests"],
    );
    eq(
        "estimated_requests",
        json!(sums.estimated),
        &got["estimated_requests"],
    );
    eq("embed_calls", json!(sums.embed_calls), &got["embed_calls"]);
    let costs = sums.costs();
    for (i, field) in ["baseline", "actual", "overhead", "net_saved"]
        .iter()
        .enumerate()
    {
        let value = &got["cost"][*field];
        // Null, never zero, when nothing in the row has a price.
        let parsed = match value {
            Value::Null => None,
            Value::String(s) => Some(pico(s).unwrap_or(i128::MIN)),
            _ => Some(i128::MIN),
        };
        v.eq(
            format!("{at}: cost.{field} (pico-units)"),
            costs.map(|c| c[i]),
            parsed,
        );
    }
    v.eq(
        format!("{at}: cost.savings_pct (hundredths)"),
        sums.savings_hundredths(),
        got["cost"]["savings_pct"]
            .as_str()
            .map(|s| hundredths(s).unwrap_or(i128::MIN)),
    );
}

fn unpriced_and_versions(v: &mut Verdict, label: &str, json: &Value, records: &[Record]) {
    let unpriced: Vec<Value> = expect::unpriced(records)
        .into_iter()
        .map(|(model, n)| json!({"model": model, "requests": n}))
        .collect();
    v.eq(
        format!("{label} json: unpriced_models"),
        &json!(unpriced),
        &json["unpriced_models"],
    );
    let per_million = |micro: u64| json!(i128::from(micro) * 1_000_000);
    let expected: Vec<Value> = expect::versions(records)
        .into_values()
        .map(|(p, n)| {
            json!({"model": p.model, "upstream": p.upstream, "effective": p.effective, "requests": n,
                   "input": per_million(p.input), "cached_input": per_million(p.cached_input),
                   "output": per_million(p.output), "source": p.source})
        })
        .collect();
    let mut got: Vec<Value> = json["price_versions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut version| {
            for field in ["input", "cached_input", "output"] {
                let text = version[field].as_str().unwrap_or_default().to_owned();
                version[field] = json!(pico(&text));
            }
            version
        })
        .collect();
    got.sort_by_key(|v| {
        (
            v["model"].to_string(),
            v["upstream"].to_string(),
            v["effective"].to_string(),
        )
    });
    v.eq(
        format!("{label} json: price_versions (prices in pico-units per million)"),
        expected,
        got,
    );
}

/// The CSV report: the same rows and figures, money as exact decimals, no cost for unpriced rows.
fn csv(
    v: &mut Verdict,
    label: &str,
    dimensions: &[&str],
    text: &str,
    rows: &std::collections::BTreeMap<Vec<String>, Sums>,
    total: &Sums,
) {
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name);
    v.eq(
        format!("{label} csv: first columns"),
        {
            let mut first = vec!["row"];
            first.extend(dimensions);
            first
        },
        header
            .iter()
            .take(dimensions.len() + 1)
            .copied()
            .collect::<Vec<_>>(),
    );
    let mut got_rows = Vec::new();
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        let cell = |name: &str| column(name).and_then(|i| cells.get(i)).copied();
        let key: Vec<String> = dimensions
            .iter()
            .map(|d| cell(d).unwrap_or_default().to_owned())
            .collect();
        let (at, sums) = match cells.first().copied() {
            Some("total") => (format!("{label} csv total"), Some(total)),
            _ => {
                got_rows.push(key.clone());
                (format!("{label} csv row {key:?}"), rows.get(&key))
            }
        };
        let Some(sums) = sums else { continue };
        let mut eq = |name: &str, expected: String| {
            v.eq(format!("{at}: {name}"), Some(expected.as_str()), cell(name));
        };
        eq("requests", sums.requests.to_string());
        for outcome in Outcome::ALL {
            eq(outcome.csv_column(), sums.outcome(outcome).to_string());
        }
        eq("hit_rate", format!("{:.4}", sums.hit_rate()));
        eq("tokens_baseline", sums.baseline.total().to_string());
        eq("tokens_actual", sums.actual.total().to_string());
        eq("tokens_saved", sums.tokens_saved().to_string());
        eq("tokens_overhead", "0".to_owned());
        eq("currency", "USD".to_owned());
        eq("priced_requests", sums.priced.to_string());
        eq("unpriced_requests", sums.unpriced.to_string());
        eq("estimated_requests", sums.estimated.to_string());
        eq("embed_calls", sums.embed_calls.to_string());
        let costs = sums.costs();
        for (i, name) in ["cost_baseline", "cost_actual", "cost_overhead", "net_saved"]
            .iter()
            .enumerate()
        {
            let parsed = cell(name)
                .filter(|c| !c.is_empty())
                .map(|c| pico(c).unwrap_or(i128::MIN));
            v.eq(
                format!("{at}: {name} (pico-units)"),
                costs.map(|c| c[i]),
                parsed,
            );
        }
        v.eq(
            format!("{at}: savings_pct (hundredths)"),
            sums.savings_hundredths(),
            cell("savings_pct")
                .filter(|c| !c.is_empty())
                .map(|c| hundredths(c).unwrap_or(i128::MIN)),
        );
    }
    v.eq(
        format!("{label} csv: rows"),
        rows.keys().cloned().collect::<Vec<_>>(),
        got_rows,
    );
}

/// Each step's raw record in the ledger's audit log, when the store lets the test read it: the
/// quickest way to see which request a wrong total comes from.
pub fn check_audit(v: &mut Verdict, log: &[Value], records: &[Record]) {
    v.eq("audit log: records", records.len(), log.len());
    for r in records {
        let at = format!("audit record {}", r.tag);
        let found: Vec<&Value> = log.iter().filter(|e| e["tags"] == json!([r.tag])).collect();
        let [entry] = found.as_slice() else {
            v.eq(format!("{at}: records with this tag"), 1, found.len());
            continue;
        };
        let tokens = |side: &str| {
            (
                entry[side]["prompt"].as_u64(),
                entry[side]["completion"].as_u64(),
            )
        };
        v.eq(
            format!("{at}: outcome"),
            Some(r.outcome.as_str()),
            entry["outcome"].as_str(),
        );
        v.eq(
            format!("{at}: key"),
            Some(r.key),
            entry["key_name"].as_str(),
        );
        v.eq(format!("{at}: team"), r.team, entry["team"].as_str());
        v.eq(
            format!("{at}: model"),
            Some(r.model.as_str()),
            entry["model"].as_str(),
        );
        v.eq(
            format!("{at}: baseline (prompt, completion)"),
            (Some(r.baseline.prompt), Some(r.baseline.completion)),
            tokens("baseline"),
        );
        v.eq(
            format!("{at}: actual (prompt, completion)"),
            (Some(r.actual.prompt), Some(r.actual.completion)),
            tokens("actual"),
        );
        v.eq(
            format!("{at}: estimated"),
            Some(r.estimated),
            entry["estimated"].as_bool(),
        );
        v.eq(
            format!("{at}: embed_calls"),
            Some(r.embed_calls),
            entry["embed_calls"].as_u64(),
        );
    }
}
