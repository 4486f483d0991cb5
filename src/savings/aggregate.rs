//! The aggregate the ledger keeps: one counter key per UTC day, one field per
//! model × team × key × outcome × endpoint × measure, incremented atomically. This file owns
//! the key and field names and the sums read back; it does no I/O.
//!
//! A field is `model|team|key|outcome|endpoint|measure`. Fields written before the endpoint
//! was recorded (`model|team|key|outcome|measure`) read back with an empty endpoint: an
//! endpoint is a plain lowercase name, while a measure is either such a name ending the field
//! or a `v:`/`u:` label, so the two shapes never read alike.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::day::Day;
use super::names::{escape, escape_into, unescape};
use super::pricing::Quote;
use super::record::{Outcome, UsageRecord};

/// Every ledger key shares one hash tag, so a batch is one slot on a Redis cluster.
pub const PREFIX: &str = "thrifty:v1:{savings}:";

/// The capped log of raw records.
pub fn log_key() -> String {
    format!("{PREFIX}log")
}

pub fn day_key(day: Day) -> String {
    format!("{PREFIX}day:{day}")
}

/// Where a writer notes the last batch it applied.
pub fn marker_key(writer: &str) -> String {
    format!("{PREFIX}applied:{writer}")
}

/// One aggregate cell: what a field's parts before the measure name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cell {
    pub day: Day,
    pub model: String,
    /// Empty when the key has no team.
    pub team: String,
    pub key: String,
    pub outcome: Outcome,
    /// The API called (`chat`, `responses`, ...); empty for fields written before it was kept.
    pub endpoint: String,
}

impl Cell {
    pub fn of(record: &UsageRecord) -> Cell {
        Cell {
            day: record.day(),
            model: record.model.clone(),
            team: record.team.clone().unwrap_or_default(),
            key: record.key().to_owned(),
            outcome: record.outcome,
            endpoint: record.endpoint.clone(),
        }
    }

    /// `model|team|key|outcome|endpoint|`: what every field of the cell starts with, its
    /// measure appended.
    pub fn field_prefix(&self) -> String {
        let mut prefix = String::with_capacity(
            self.model.len() + self.team.len() + self.key.len() + self.endpoint.len() + 24,
        );
        for part in [
            self.model.as_str(),
            self.team.as_str(),
            self.key.as_str(),
            self.outcome.as_str(),
            self.endpoint.as_str(),
        ] {
            escape_into(&mut prefix, part);
            prefix.push('|');
        }
        prefix
    }
}

/// Splits what follows a field's outcome into its endpoint and its measure.
fn endpoint_and_measure(rest: &str) -> (&str, &str) {
    match rest.split_once('|') {
        Some((endpoint, measure))
            if endpoint
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_') =>
        {
            (endpoint, measure)
        }
        _ => ("", rest),
    }
}

/// Token sums of one side of the bill.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenSums {
    pub prompt: i128,
    pub cached_prompt: i128,
    pub completion: i128,
}

impl TokenSums {
    pub fn total(&self) -> i128 {
        self.prompt + self.completion
    }

    fn add(&mut self, other: &TokenSums) {
        self.prompt += other.prompt;
        self.cached_prompt += other.cached_prompt;
        self.completion += other.completion;
    }
}

/// Sums over one or more cells. Costs are pico-units over priced requests only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: i128,
    /// Requests per outcome, indexed like [`Outcome::ALL`].
    pub outcomes: [i128; 6],
    pub priced: i128,
    pub unpriced: i128,
    pub estimated: i128,
    /// Requests whose answer broke off, counted with the tokens seen.
    pub partial: i128,
    pub embed_calls: i128,
    pub baseline: TokenSums,
    pub actual: TokenSums,
    pub overhead: TokenSums,
    pub cost_baseline: i128,
    pub cost_actual: i128,
    pub cost_overhead: i128,
    pub latency_us: i128,
    pub upstream_us: i128,
    pub upstream_n: i128,
    /// Price version label (see [`super::names::version_label`]) → requests priced with it.
    pub versions: BTreeMap<String, i128>,
    /// Model without a price → requests that used it.
    pub unpriced_models: BTreeMap<String, i128>,
}

impl Totals {
    pub fn add(&mut self, other: &Totals) {
        self.requests += other.requests;
        for (mine, theirs) in self.outcomes.iter_mut().zip(other.outcomes) {
            *mine += theirs;
        }
        self.priced += other.priced;
        self.unpriced += other.unpriced;
        self.estimated += other.estimated;
        self.partial += other.partial;
        self.embed_calls += other.embed_calls;
        self.baseline.add(&other.baseline);
        self.actual.add(&other.actual);
        self.overhead.add(&other.overhead);
        self.cost_baseline += other.cost_baseline;
        self.cost_actual += other.cost_actual;
        self.cost_overhead += other.cost_overhead;
        self.latency_us += other.latency_us;
        self.upstream_us += other.upstream_us;
        self.upstream_n += other.upstream_n;
        for (label, n) in &other.versions {
            *self.versions.entry(label.clone()).or_default() += n;
        }
        for (model, n) in &other.unpriced_models {
            *self.unpriced_models.entry(model.clone()).or_default() += n;
        }
    }

    pub fn outcome(&self, outcome: Outcome) -> i128 {
        Outcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .map_or(0, |i| self.outcomes[i])
    }

    pub fn hits(&self) -> i128 {
        self.outcome(Outcome::ExactHit) + self.outcome(Outcome::SemanticHit)
    }

    /// Cache hits per request.
    pub fn hit_rate(&self) -> Option<f64> {
        ratio(self.hits(), self.requests)
    }

    pub fn tokens_saved(&self) -> i128 {
        self.baseline.total() - self.actual.total()
    }

    /// Costs exist when at least one request was priced, or when nothing went unpriced.
    pub fn has_costs(&self) -> bool {
        self.priced > 0 || self.unpriced == 0
    }

    fn cost(&self, pico: i128) -> Option<i128> {
        self.has_costs().then_some(pico)
    }

    pub fn baseline_cost(&self) -> Option<i128> {
        self.cost(self.cost_baseline)
    }

    pub fn actual_cost(&self) -> Option<i128> {
        self.cost(self.cost_actual)
    }

    pub fn overhead_cost(&self) -> Option<i128> {
        self.cost(self.cost_overhead)
    }

    /// Baseline − actual − overhead.
    pub fn net_saved(&self) -> Option<i128> {
        self.cost(self.cost_baseline - self.cost_actual - self.cost_overhead)
    }

    /// Prompt tokens sent per prompt token received, where thrifty compressed.
    pub fn compression_ratio(&self) -> Option<f64> {
        ratio(self.actual.prompt, self.baseline.prompt)
    }

    pub fn avg_latency_ms(&self) -> Option<f64> {
        ratio(self.latency_us, self.requests).map(|us| us / 1000.0)
    }

    pub fn avg_upstream_ms(&self) -> Option<f64> {
        ratio(self.upstream_us, self.upstream_n).map(|us| us / 1000.0)
    }
}

fn ratio(part: i128, whole: i128) -> Option<f64> {
    (whole != 0).then(|| part as f64 / whole as f64)
}

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn cost(pico: u128) -> i64 {
    // A single request above 9.2 million currency units does not exist; saturate rather than wrap.
    i64::try_from(pico).unwrap_or(i64::MAX)
}

fn micros(ms: f64) -> i64 {
    if ms.is_finite() && ms > 0.0 {
        (ms * 1000.0).round() as i64
    } else {
        0
    }
}

/// The measures one record adds to its cell ([`Cell::of`]), zeros left out: a field is the
/// cell's [`Cell::field_prefix`] and the measure.
pub fn measures(record: &UsageRecord, quote: &Quote) -> Vec<(Cow<'static, str>, i64)> {
    let mut out: Vec<(Cow<'static, str>, i64)> = Vec::with_capacity(24);
    let mut add = |measure: Cow<'static, str>, value: i64| {
        if value != 0 {
            out.push((measure, value));
        }
    };
    add("requests".into(), 1);
    add("estimated".into(), i64::from(record.estimated));
    add("partial".into(), i64::from(record.partial));
    add("embed_calls".into(), int(record.embed_calls));
    for ([prompt, cached, completion], tokens) in [
        (["b_prompt", "b_cached", "b_completion"], &record.baseline),
        (["a_prompt", "a_cached", "a_completion"], &record.actual),
        (["o_prompt", "o_cached", "o_completion"], &record.overhead),
    ] {
        add(prompt.into(), int(tokens.prompt));
        add(cached.into(), int(tokens.cached_prompt));
        add(completion.into(), int(tokens.completion));
    }
    add("latency_us".into(), micros(record.latency_ms));
    if let Some(ms) = record.upstream_ms {
        add("upstream_us".into(), micros(ms));
        add("upstream_n".into(), 1);
    }
    match &quote.costs {
        Some(costs) => {
            add("priced".into(), 1);
            add("c_baseline".into(), cost(costs.baseline));
            add("c_actual".into(), cost(costs.actual));
            add("c_overhead".into(), cost(costs.overhead));
        }
        None => add("unpriced".into(), 1),
    }
    for price in &quote.versions {
        add(format!("v:{}", price.label).into(), 1);
    }
    for model in &quote.unpriced {
        add(format!("u:{}", escape(model)).into(), 1);
    }
    out
}

/// Reads one day's fields back into cells; unknown measures are ignored.
pub fn read_day(
    day: Day,
    fields: impl IntoIterator<Item = (String, i64)>,
) -> BTreeMap<Cell, Totals> {
    let mut cells: BTreeMap<Cell, Totals> = BTreeMap::new();
    for (field, value) in fields {
        let mut parts = field.splitn(5, '|');
        let (Some(model), Some(team), Some(key), Some(outcome), Some(rest)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            continue;
        };
        let Some(outcome) = Outcome::parse(outcome) else {
            continue;
        };
        let (endpoint, measure) = endpoint_and_measure(rest);
        let cell = Cell {
            day,
            model: unescape(model),
            team: unescape(team),
            key: unescape(key),
            outcome,
            endpoint: endpoint.to_owned(),
        };
        let t = cells.entry(cell).or_default();
        let v = i128::from(value);
        match measure {
            "requests" => {
                t.requests += v;
                if let Some(i) = Outcome::ALL.iter().position(|o| *o == outcome) {
                    t.outcomes[i] += v;
                }
            }
            "priced" => t.priced += v,
            "unpriced" => t.unpriced += v,
            "estimated" => t.estimated += v,
            "partial" => t.partial += v,
            "embed_calls" => t.embed_calls += v,
            "b_prompt" => t.baseline.prompt += v,
            "b_cached" => t.baseline.cached_prompt += v,
            "b_completion" => t.baseline.completion += v,
            "a_prompt" => t.actual.prompt += v,
            "a_cached" => t.actual.cached_prompt += v,
            "a_completion" => t.actual.completion += v,
            "o_prompt" => t.overhead.prompt += v,
            "o_cached" => t.overhead.cached_prompt += v,
            "o_completion" => t.overhead.completion += v,
            "c_baseline" => t.cost_baseline += v,
            "c_actual" => t.cost_actual += v,
            "c_overhead" => t.cost_overhead += v,
            "latency_us" => t.latency_us += v,
            "upstream_us" => t.upstream_us += v,
            "upstream_n" => t.upstream_n += v,
            other => {
                if let Some(label) = other.strip_prefix("v:") {
                    *t.versions.entry(label.to_owned()).or_default() += v;
                } else if let Some(model) = other.strip_prefix("u:") {
                    *t.unpriced_models.entry(unescape(model)).or_default() += v;
                }
            }
        }
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_back_with_their_endpoint_and_older_fields_without() {
        let day = Day::parse("2025-06-02").unwrap();
        let fields = [
            ("m|t|k|miss|responses|requests", 2),
            ("m|t|k|miss|responses|v:m||2025-01-01", 2),
            ("m|t|k|miss|requests", 1),
            ("m|t|k|miss|v:m|up|2025-01-01", 1),
            ("m|t|k|miss|u:m", 1),
            ("m|t|k|miss||requests", 1),
        ];
        let cells = read_day(day, fields.map(|(f, v)| (f.to_owned(), v)));
        let endpoints: Vec<(&str, i128, usize, i128)> = cells
            .iter()
            .map(|(c, t)| {
                (
                    c.endpoint.as_str(),
                    t.requests,
                    t.versions.len(),
                    t.unpriced_models.values().sum(),
                )
            })
            .collect();
        assert_eq!(endpoints, [("", 2, 1, 1), ("responses", 2, 1, 0)]);
    }
}
