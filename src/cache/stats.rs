//! Cache counters for `/admin/cache/stats`, in total and per tenant, namespace and model.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde_json::{Value, json};

use super::Outcome;

/// How many distinct (tenant, namespace, model) rows are kept before new ones fold into "other".
const MAX_ROWS: usize = 10_000;

#[derive(Default, Clone, Copy)]
struct Counts {
    hits: u64,
    semantic_hits: u64,
    misses: u64,
    bypasses: u64,
    off: u64,
}

impl Counts {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Hit => self.hits += 1,
            Outcome::SemanticHit => self.semantic_hits += 1,
            Outcome::Miss => self.misses += 1,
            Outcome::Bypass => self.bypasses += 1,
            Outcome::Off => self.off += 1,
        }
    }

    /// The counts in [`OUTCOMES`] order.
    fn values(&self) -> [u64; 5] {
        [
            self.hits,
            self.semantic_hits,
            self.misses,
            self.bypasses,
            self.off,
        ]
    }

    /// Adds `n` to the count named `outcome` (one of [`OUTCOMES`]).
    fn add_n(&mut self, outcome: &str, n: u64) {
        let slot = match outcome {
            "hits" => &mut self.hits,
            "semantic_hits" => &mut self.semantic_hits,
            "misses" => &mut self.misses,
            "bypasses" => &mut self.bypasses,
            "off" => &mut self.off,
            _ => return,
        };
        *slot += n;
    }

    fn json(&self) -> Value {
        let served = self.hits + self.semantic_hits;
        let looked_up = served + self.misses;
        json!({
            "hits": self.hits,
            "semantic_hits": self.semantic_hits,
            "misses": self.misses,
            "bypasses": self.bypasses,
            "off": self.off,
            "hit_rate": if looked_up == 0 { 0.0 } else { served as f64 / looked_up as f64 },
        })
    }
}

#[derive(Default)]
pub struct Stats {
    rows: Mutex<HashMap<(String, String, String), Counts>>,
    stored: AtomicU64,
    unreadable: AtomicU64,
}

impl Stats {
    pub fn record(&self, tenant: &str, namespace: Option<&str>, model: &str, outcome: Outcome) {
        let mut rows = self.rows.lock();
        let mut key = (
            tenant.to_owned(),
            namespace.unwrap_or("").to_owned(),
            model.to_owned(),
        );
        if rows.len() >= MAX_ROWS && !rows.contains_key(&key) {
            key = ("other".to_owned(), String::new(), "other".to_owned());
        }
        rows.entry(key).or_default().add(outcome);
    }

    pub fn stored(&self) {
        self.stored.fetch_add(1, Ordering::Relaxed);
    }

    pub fn unreadable(&self) {
        self.unreadable.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters as named integers, the shape [`crate::store::totals`] publishes: one
    /// field per row and outcome (a JSON array of tenant, namespace, model and outcome),
    /// and `stored` and `unreadable_entries`.
    pub fn counters(&self) -> HashMap<String, i64> {
        let rows = self.rows.lock();
        let mut out = HashMap::with_capacity(rows.len() * OUTCOMES.len() + 2);
        for ((tenant, namespace, model), c) in rows.iter() {
            for (outcome, n) in OUTCOMES.iter().zip(c.values()) {
                if n > 0 {
                    let field = json!([tenant, namespace, model, outcome]).to_string();
                    out.insert(field, signed(n));
                }
            }
        }
        out.insert(
            "stored".to_owned(),
            signed(self.stored.load(Ordering::Relaxed)),
        );
        out.insert(
            "unreadable_entries".to_owned(),
            signed(self.unreadable.load(Ordering::Relaxed)),
        );
        out
    }
}

/// The names of [`Counts`]' fields, in [`Counts::values`] order.
const OUTCOMES: [&str; 5] = ["hits", "semantic_hits", "misses", "bypasses", "off"];

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Totals and breakdowns as JSON, from counters shaped like [`Stats::counters`]; fields of
/// another shape are ignored.
pub fn render(counters: &HashMap<String, i64>) -> Value {
    let mut total = Counts::default();
    let mut by: [HashMap<String, Counts>; 3] = Default::default();
    for (field, n) in counters {
        let Ok((tenant, namespace, model, outcome)) =
            serde_json::from_str::<(String, String, String, String)>(field)
        else {
            continue;
        };
        let n = u64::try_from(*n).unwrap_or(0);
        for (map, name) in by.iter_mut().zip([tenant, namespace, model]) {
            map.entry(name).or_default().add_n(&outcome, n);
        }
        total.add_n(&outcome, n);
    }
    let render = |map: &HashMap<String, Counts>| -> Value {
        let mut keys: Vec<&String> = map.keys().collect();
        keys.sort();
        Value::Object(
            keys.into_iter()
                .map(|k| (k.clone(), map[k].json()))
                .collect(),
        )
    };
    let get = |name: &str| counters.get(name).copied().unwrap_or(0).max(0);
    let mut out = total.json();
    out["stored"] = json!(get("stored"));
    out["unreadable_entries"] = json!(get("unreadable_entries"));
    out["by_tenant"] = render(&by[0]);
    out["by_namespace"] = render(&by[1]);
    out["by_model"] = render(&by[2]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_like_the_rows_they_come_from() {
        let stats = Stats::default();
        let odd = "team \"a\",\u{1f}é";
        stats.record(odd, Some("ns"), "gpt-4o", Outcome::Hit);
        stats.record(odd, Some("ns"), "gpt-4o", Outcome::Miss);
        stats.record("b", None, "gpt-4o", Outcome::SemanticHit);
        stats.record("b", None, "llama3", Outcome::Off);
        stats.stored();
        let counters = stats.counters();
        assert_eq!(counters["stored"], 1);
        let out = render(&counters);
        assert_eq!(out["hits"], 1);
        assert_eq!(out["semantic_hits"], 1);
        assert_eq!(out["misses"], 1);
        assert_eq!(out["off"], 1);
        assert_eq!(out["hit_rate"], 2.0 / 3.0);
        assert_eq!(out["by_tenant"][odd]["misses"], 1);
        assert_eq!(out["by_namespace"][""]["semantic_hits"], 1);
        assert_eq!(out["by_model"]["gpt-4o"]["hits"], 1);
        assert_eq!(out["by_model"]["llama3"]["off"], 1);
        let mut doubled = counters.clone();
        for value in doubled.values_mut() {
            *value *= 2;
        }
        doubled.insert("unrelated".to_owned(), 7);
        assert_eq!(
            render(&doubled)["by_tenant"]["b"]["off"],
            2,
            "totals add up"
        );
    }
}
