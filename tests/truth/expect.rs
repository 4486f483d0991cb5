//! The figures a report must show, summed from the expected record of every request the script
//! sent. Nothing here reads thrifty's output: the records come from what was sent and what the
//! fake billed, the prices from the test's own table.

use std::collections::BTreeMap;

use super::billing::Tokens;
use super::prices::{self, Price};

/// What thrifty did with a request, spelled as the report spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Miss,
    ExactHit,
    SemanticHit,
    Compressed,
    Bypass,
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Miss,
        Outcome::ExactHit,
        Outcome::SemanticHit,
        Outcome::Compressed,
        Outcome::Bypass,
        Outcome::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Miss => "miss",
            Outcome::ExactHit => "exact_hit",
            Outcome::SemanticHit => "semantic_hit",
            Outcome::Compressed => "compressed",
            Outcome::Bypass => "bypass",
            Outcome::Error => "error",
        }
    }

    /// The column of the CSV report that counts this outcome.
    pub fn csv_column(self) -> &'static str {
        match self {
            Outcome::Miss => "misses",
            Outcome::ExactHit => "exact_hits",
            Outcome::SemanticHit => "semantic_hits",
            Outcome::Compressed => "compressed",
            Outcome::Bypass => "bypassed",
            Outcome::Error => "errors",
        }
    }
}

/// One request as the ledger must record it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The step's `x-thrifty-tags` value, to find its raw record in the audit log.
    pub tag: String,
    pub key: &'static str,
    pub team: Option<&'static str>,
    pub model: String,
    pub outcome: Outcome,
    /// The prompt as the client sent it and the completion of the answer it got.
    pub baseline: Tokens,
    /// What the fake billed.
    pub actual: Tokens,
    pub estimated: bool,
    pub embed_calls: u64,
    /// The upstream refused the call with a 4xx: the aggregate counts it under `other`, never
    /// under the model it asked for (the audit log keeps that name).
    pub refused: bool,
}

impl Record {
    pub fn price(&self) -> Option<Price> {
        prices::in_force(&self.model)
    }

    /// The record's value of a report dimension; a key without a team has the empty team.
    pub fn value(&self, dimension: &str) -> String {
        match dimension {
            "model" if self.refused => "other".to_owned(),
            "model" => self.model.clone(),
            "team" => self.team.unwrap_or_default().to_owned(),
            "key" => self.key.to_owned(),
            "outcome" => self.outcome.as_str().to_owned(),
            other => panic!("the truth test does not group by {other}"),
        }
    }
}

/// The sums of one report row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sums {
    pub requests: i64,
    pub outcomes: BTreeMap<Outcome, i64>,
    pub baseline: Tokens,
    pub actual: Tokens,
    /// Pico-units, over priced requests only.
    pub cost_baseline: i128,
    pub cost_actual: i128,
    pub priced: i64,
    pub unpriced: i64,
    pub estimated: i64,
    pub embed_calls: i64,
}

impl Sums {
    fn add(&mut self, r: &Record) {
        self.requests += 1;
        *self.outcomes.entry(r.outcome).or_default() += 1;
        self.baseline.prompt += r.baseline.prompt;
        self.baseline.completion += r.baseline.completion;
        self.actual.prompt += r.actual.prompt;
        self.actual.completion += r.actual.completion;
        match r.price() {
            Some(price) => {
                self.priced += 1;
                self.cost_baseline += price.cost(r.baseline);
                self.cost_actual += price.cost(r.actual);
            }
            None => self.unpriced += 1,
        }
        self.estimated += i64::from(r.estimated);
        self.embed_calls += i64::try_from(r.embed_calls).unwrap_or(i64::MAX);
    }

    pub fn outcome(&self, outcome: Outcome) -> i64 {
        self.outcomes.get(&outcome).copied().unwrap_or(0)
    }

    pub fn hits(&self) -> i64 {
        self.outcome(Outcome::ExactHit) + self.outcome(Outcome::SemanticHit)
    }

    pub fn hit_rate(&self) -> f64 {
        self.hits() as f64 / self.requests as f64
    }

    pub fn tokens_saved(&self) -> i64 {
        self.baseline.total() as i64 - self.actual.total() as i64
    }

    /// Baseline, actual, overhead and net saved in pico-units; `None` (never zero) when every
    /// request of the row used a model without a price.
    pub fn costs(&self) -> Option<[i128; 4]> {
        // Local embeddings cost nothing and there is no summarizer: overhead is zero.
        let overhead = 0;
        (self.priced > 0).then(|| {
            [
                self.cost_baseline,
                self.cost_actual,
                overhead,
                self.cost_baseline - self.cost_actual - overhead,
            ]
        })
    }

    /// Net saved per baseline cost, in hundredths of a percent, rounded half away from zero.
    pub fn savings_hundredths(&self) -> Option<i128> {
        let [baseline, _, _, net] = self.costs()?;
        if baseline == 0 {
            return None;
        }
        let scaled = net * 10_000;
        let (q, r) = (scaled / baseline, scaled % baseline);
        let away = 2 * r.abs() >= baseline.abs();
        Some(if !away {
            q
        } else if (scaled < 0) != (baseline < 0) {
            q - 1
        } else {
            q + 1
        })
    }
}

/// The rows of a report grouped by `dimensions`, keyed by their values in that order.
pub fn group(records: &[Record], dimensions: &[&str]) -> BTreeMap<Vec<String>, Sums> {
    let mut rows: BTreeMap<Vec<String>, Sums> = BTreeMap::new();
    for r in records {
        let key = dimensions.iter().map(|d| r.value(d)).collect();
        rows.entry(key).or_default().add(r);
    }
    rows
}

pub fn total(records: &[Record]) -> Sums {
    let mut sums = Sums::default();
    for r in records {
        sums.add(r);
    }
    sums
}

/// Each price version used and how many requests it priced.
pub fn versions(records: &[Record]) -> BTreeMap<(String, Option<String>, String), (Price, i64)> {
    let mut out: BTreeMap<_, (Price, i64)> = BTreeMap::new();
    for r in records {
        if let Some(p) = r.price() {
            let key = (
                p.model.to_owned(),
                p.upstream.map(str::to_owned),
                p.effective.to_owned(),
            );
            out.entry(key).or_insert((p, 0)).1 += 1;
        }
    }
    out
}

/// Models without a price, as the aggregate names them, and how many requests used them.
pub fn unpriced(records: &[Record]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for r in records.iter().filter(|r| r.price().is_none()) {
        *out.entry(r.value("model")).or_default() += 1;
    }
    out
}
