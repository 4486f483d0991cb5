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

    /// Totals and breakdowns as JSON.
    pub fn json(&self) -> Value {
        let rows = self.rows.lock();
        let mut total = Counts::default();
        let mut by: [HashMap<String, Counts>; 3] = Default::default();
        for ((tenant, namespace, model), c) in rows.iter() {
            for (map, name) in by.iter_mut().zip([tenant, namespace, model]) {
                let slot = map.entry(name.clone()).or_default();
                slot.hits += c.hits;
                slot.semantic_hits += c.semantic_hits;
                slot.misses += c.misses;
                slot.bypasses += c.bypasses;
                slot.off += c.off;
            }
            total.hits += c.hits;
            total.semantic_hits += c.semantic_hits;
            total.misses += c.misses;
            total.bypasses += c.bypasses;
            total.off += c.off;
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
        let mut out = total.json();
        out["stored"] = json!(self.stored.load(Ordering::Relaxed));
        out["unreadable_entries"] = json!(self.unreadable.load(Ordering::Relaxed));
        out["by_tenant"] = render(&by[0]);
        out["by_namespace"] = render(&by[1]);
        out["by_model"] = render(&by[2]);
        out
    }
}
