//! Verified serving: the probability that serving a semantic candidate is right,
//! learned online from outcomes verified on this deployment's own traffic.
//!
//! A candidate that passed the [`guard`](super::guard) has a similarity and lexical
//! [`Features`]; together they name a cell of the [`curve`]. Each time a candidate is
//! checked against a fresh upstream answer ([`answers_agree`]), the outcome is an
//! observation for that cell. A candidate is served only when the curve's lower bound
//! for its cell reaches `1 - max_error`; a fraction `explore` of those is still checked,
//! so the bound stays honest.
//!
//! - Observations live in the store, as capped logs per scope (tenant, namespace and
//!   model) and one global log, so every instance learns from all of them; each instance
//!   rereads them every [`REFRESH`]. Older observations weigh less ([`HALF_LIFE`]), and
//!   the cap drops the oldest, so the curve follows drift.
//! - A scope's own observations decide once a row of its curve holds [`SCOPED_ROW`] of
//!   them; until then the global curve does.
//! - Nothing measured, nothing served: an empty curve bounds every cell at 0. A record
//!   that does not parse, or a store that does not answer, bounds every cell of the
//!   scope at 0 too: failures cost hits, never correctness.
//!
//! It never decides by itself what to serve: the pipeline asks and acts.

mod agree;
pub mod curve;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::config::{SemanticConfig, SemanticMode};
use crate::store::Store;
use curve::{Curve, Region, SIMILARITY_EDGES, Tally};

pub use super::guard::Features;
pub use agree::{ANSWER_AGREEMENT, answers_agree};

/// Prefix of the observation logs in the store.
pub const CALIBRATION_PREFIX: &str = "thrifty:v1:calibration:";

/// How many observations a scope's log keeps; the oldest go first.
pub const LOG_CAP: usize = 4096;

/// How long until an observation weighs half as much.
pub const HALF_LIFE: Duration = Duration::from_secs(7 * 24 * 3600);

/// How often an instance rereads a scope's observations from the store.
pub const REFRESH: Duration = Duration::from_secs(2);

/// How far the clock may move before a curve is decayed again without a new observation.
const REDECAY: Duration = Duration::from_secs(60);

/// Observations a row of a scope's own curve needs before it replaces the global one.
pub const SCOPED_ROW: f64 = 200.0;

/// Scopes kept in memory; beyond it the least recently read is dropped (and reread).
const MAX_SCOPES: usize = 1024;

/// Version tag of a stored observation.
const RECORD_TAG: &[u8] = b"C1";

/// Who the observations are about: one tenant's namespace and model.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope {
    pub tenant: String,
    pub namespace: Option<String>,
    pub model: String,
}

impl Scope {
    fn key(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.tenant.as_str(),
            self.namespace.as_deref().unwrap_or(""),
            self.model.as_str(),
        ] {
            h.update(part.len().to_le_bytes());
            h.update(part.as_bytes());
        }
        let digest = h.finalize();
        format!("{CALIBRATION_PREFIX}scope:{}", hex::encode(&digest[..12]))
    }
}

fn global_key() -> String {
    format!("{CALIBRATION_PREFIX}global")
}

/// One verified outcome.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Unix milliseconds when it was observed.
    pub at_ms: u64,
    pub similarity: f32,
    pub features: Features,
    /// Whether the fresh answer agreed with the candidate's.
    pub agreed: bool,
}

impl Observation {
    fn seal(&self) -> Option<Bytes> {
        let json = serde_json::to_vec(self).ok()?;
        Some(Bytes::from([RECORD_TAG, json.as_slice()].concat()))
    }

    fn open(raw: &[u8]) -> Option<Observation> {
        let json = raw.strip_prefix(RECORD_TAG)?;
        let o: Observation = serde_json::from_slice(json).ok()?;
        let unit = |x: f32| (0.0..=1.0).contains(&x);
        (o.similarity.is_finite()
            && o.similarity <= 1.0 + 1e-4
            && unit(o.features.overlap)
            && unit(o.features.length_ratio))
        .then_some(o)
    }
}

/// What the calibration says about one candidate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Estimate {
    /// A conservative lower bound of the probability that serving the candidate's cell is
    /// right, from the cell's own outcomes (pooled with less similar bins of its row).
    pub lower: f64,
    /// The rate of agreement behind that bound.
    pub point: f64,
    /// The (decay-weighted) observations behind it.
    pub observations: f64,
    /// The served region, when the candidate's cell is part of it.
    pub region: Option<Region>,
}

/// Weighted tallies per cell, from observations, decayed to `now_ms`.
pub fn tallies(
    log: &VecDeque<Observation>,
    now_ms: u64,
    half_life: Duration,
) -> Vec<[Tally; SIMILARITY_EDGES.len()]> {
    let mut rows = vec![[Tally::default(); SIMILARITY_EDGES.len()]; curve::ROWS];
    let half_life_ms = half_life.as_millis().max(1) as f64;
    for o in log {
        let Some((row, bin)) = curve::cell(o.similarity, &o.features) else {
            continue;
        };
        let age = now_ms.saturating_sub(o.at_ms) as f64;
        let weight = 0.5f64.powf(age / half_life_ms);
        let tally = &mut rows[row][bin];
        if o.agreed {
            tally.agreed += weight;
        } else {
            tally.differed += weight;
        }
    }
    rows
}

/// One scope's observations as this instance last read them.
struct Log {
    observations: VecDeque<Observation>,
    curve: Curve,
    /// Whether `curve` is behind `observations`.
    dirty: bool,
    /// The time (Unix milliseconds) `curve`'s weights are decayed to.
    decayed_to_ms: u64,
    /// When the store was last read; `None` before the first read.
    read_at: Option<Instant>,
    /// Whether a read is under way, so concurrent callers do not repeat it.
    reading: bool,
    /// The store failed or held a record that does not parse: bound everything at 0.
    broken: bool,
    used: Instant,
}

impl Log {
    fn new() -> Log {
        Log {
            observations: VecDeque::new(),
            curve: Curve::empty(),
            dirty: false,
            decayed_to_ms: 0,
            read_at: None,
            reading: false,
            broken: false,
            used: Instant::now(),
        }
    }

    fn push(&mut self, o: Observation) {
        self.observations.push_back(o);
        while self.observations.len() > LOG_CAP {
            self.observations.pop_front();
        }
        self.dirty = true;
    }

    /// The curve as of `now_ms`, recomputed when observations came or went since the last, or
    /// when the clock has moved on by [`REDECAY`].
    fn curve(&mut self, now_ms: u64, max_error: f64) -> &Curve {
        let stale = now_ms.abs_diff(self.decayed_to_ms) >= REDECAY.as_millis() as u64;
        if self.dirty || stale {
            self.curve = Curve::new(tallies(&self.observations, now_ms, HALF_LIFE), max_error);
            self.decayed_to_ms = now_ms;
            self.dirty = false;
        }
        &self.curve
    }
}

pub struct Calibration {
    store: Option<Arc<Store>>,
    mode: SemanticMode,
    max_error: f64,
    explore: f64,
    logs: Mutex<HashMap<String, Arc<Mutex<Log>>>>,
    /// Draws for exploration: a counter through a mixing function, seeded.
    draws: AtomicU64,
    seed: u64,
    /// What observations are stamped with and decay by.
    clock: Clock,
}

/// A well-mixed 64-bit value from a counter (splitmix64).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Calibration {
    /// A calibration sharing its observations through `store`, or kept in memory only
    /// without one. `seed` makes exploration reproducible; `clock` stamps observations and
    /// ages them.
    pub fn new(
        config: &SemanticConfig,
        store: Option<Arc<Store>>,
        seed: u64,
        clock: Clock,
    ) -> Calibration {
        Calibration {
            store,
            mode: config.mode,
            max_error: config.max_error,
            explore: config.explore,
            logs: Mutex::new(HashMap::new()),
            draws: AtomicU64::new(0),
            seed,
            clock,
        }
    }

    pub fn mode(&self) -> SemanticMode {
        self.mode
    }

    /// Whether an estimate is good enough to serve: its cell is in the served region, whose
    /// outcomes bound the error rate of what is served by `max_error`.
    pub fn allows(&self, estimate: &Estimate) -> bool {
        estimate.region.is_some()
    }

    /// Whether to verify a serve the estimate allowed: true for a fraction `explore`.
    pub fn should_verify(&self) -> bool {
        let draw = mix(self.seed ^ self.draws.fetch_add(1, Ordering::Relaxed));
        let unit = (draw >> 11) as f64 / (1u64 << 53) as f64;
        unit < self.explore
    }

    fn log(&self, key: &str) -> Arc<Mutex<Log>> {
        let mut logs = self.logs.lock();
        if !logs.contains_key(key) && logs.len() >= MAX_SCOPES {
            let stalest = logs
                .iter()
                .min_by_key(|(_, log)| log.lock().used)
                .map(|(k, _)| k.clone());
            if let Some(k) = stalest {
                logs.remove(&k);
            }
        }
        let log = logs
            .entry(key.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(Log::new())))
            .clone();
        log.lock().used = Instant::now();
        log
    }

    /// Rereads a log from the store when it is due; without a store, memory is the log.
    async fn refresh(&self, key: &str, log: &Arc<Mutex<Log>>) {
        let Some(store) = &self.store else { return };
        {
            let mut l = log.lock();
            let due = l.read_at.is_none_or(|at| at.elapsed() >= REFRESH);
            if !due || l.reading {
                return;
            }
            l.reading = true;
        }
        let read = store.recent(key, LOG_CAP).await;
        let mut l = log.lock();
        l.reading = false;
        l.read_at = Some(Instant::now());
        match read {
            Ok(raws) => {
                let parsed: Option<VecDeque<Observation>> =
                    raws.iter().map(|raw| Observation::open(raw)).collect();
                match parsed {
                    Some(observations) => {
                        l.observations = observations;
                        l.broken = false;
                    }
                    None => {
                        tracing::warn!(
                            key,
                            "calibration record does not parse: no semantic hits in its scope"
                        );
                        l.observations.clear();
                        l.broken = true;
                    }
                }
            }
            Err(_) => l.broken = true,
        }
        l.dirty = true;
    }

    /// The estimate for one cell of one log, if the log holds enough of that row.
    async fn read(&self, key: &str, cell: (usize, usize), need: f64) -> Option<Estimate> {
        let log = self.log(key);
        self.refresh(key, &log).await;
        let mut l = log.lock();
        if l.broken {
            return Some(Estimate::default());
        }
        let curve = l.curve(self.clock.now_ms(), self.max_error);
        if curve.row_total(cell.0) < need {
            return None;
        }
        let p = curve.point(cell.0, cell.1);
        Some(Estimate {
            lower: p.lower,
            point: p.point,
            observations: p.observations,
            region: p.serves.then_some(curve.region),
        })
    }

    /// How likely serving a candidate with this similarity and these features is right.
    pub async fn estimate(&self, scope: &Scope, similarity: f32, features: &Features) -> Estimate {
        let Some(cell) = curve::cell(similarity, features) else {
            return Estimate::default();
        };
        if let Some(scoped) = self.read(&scope.key(), cell, SCOPED_ROW).await {
            return scoped;
        }
        self.read(&global_key(), cell, 0.0)
            .await
            .unwrap_or_default()
    }

    /// Records a verified outcome in the scope's log and the global one.
    pub async fn observe(&self, scope: &Scope, similarity: f32, features: &Features, agreed: bool) {
        let o = Observation {
            at_ms: self.clock.now_ms(),
            similarity,
            features: *features,
            agreed,
        };
        for key in [scope.key(), global_key()] {
            self.log(&key).lock().push(o);
            if let (Some(store), Some(raw)) = (&self.store, o.seal()) {
                // A lost observation costs nothing but evidence.
                let _ = store.append_capped(&key, raw, LOG_CAP).await;
            }
        }
    }

    /// The learned curve and its counts, for `/admin/semantic/calibration`.
    pub async fn report(&self, scope: Option<&Scope>) -> Value {
        let mut keys = vec![("global".to_owned(), global_key())];
        if let Some(s) = scope {
            keys.push((
                format!(
                    "tenant {} namespace {} model {}",
                    s.tenant,
                    s.namespace.as_deref().unwrap_or("-"),
                    s.model
                ),
                s.key(),
            ));
        }
        let mut scopes = Vec::new();
        for (name, key) in keys {
            let log = self.log(&key);
            self.refresh(&key, &log).await;
            let mut l = log.lock();
            let (broken, count) = (l.broken, l.observations.len());
            let curve = l.curve(self.clock.now_ms(), self.max_error);
            let region = curve.region;
            let rows: Vec<Value> = (0..curve::ROWS)
                .map(|row| {
                    let bins: Vec<Value> = SIMILARITY_EDGES
                        .iter()
                        .enumerate()
                        .map(|(bin, edge)| {
                            let t = curve.tallies[row][bin];
                            let p = curve.point(row, bin);
                            json!({
                                "similarity_from": edge,
                                "agreed": t.agreed,
                                "differed": t.differed,
                                "point": p.point,
                                "lower": p.lower,
                                "upper": p.upper,
                                "pooled_observations": p.observations,
                                "serves": !broken && p.serves,
                            })
                        })
                        .collect();
                    json!({"row": curve::row_name(row), "bins": bins})
                })
                .collect();
            scopes.push(json!({
                "scope": name,
                "observations": count,
                "broken": broken,
                "served_region": {
                    "cells": if broken { 0 } else { region.cells },
                    "lower": region.lower,
                    "observations": region.observations,
                },
                "rows": rows,
            }));
        }
        json!({
            "mode": match self.mode { SemanticMode::Verified => "verified", SemanticMode::Static => "static" },
            "max_error": self.max_error,
            "explore": self.explore,
            "half_life_secs": HALF_LIFE.as_secs(),
            "log_cap": LOG_CAP,
            "scoped_row": SCOPED_ROW,
            "cell_floor": curve::CELL_FLOOR,
            "scopes": scopes,
        })
    }
}

#[cfg(test)]
mod tests;
