//! Keeps the ledger's aggregate bounded whatever clients send. Model names and tenants
//! come from requests, and each new one adds a row of fields to the day's aggregate, so:
//!
//! - a model name is cut to [`MODEL_NAME_MAX`] bytes (in the audit log too);
//! - a day aggregates at most `models_per_day` model names and `tenants_per_day` tenants
//!   without a configured key (pass-through callers, one per bearer token); later ones
//!   are counted under [`OTHER`], tokens and costs included;
//! - a call the upstream refused with a 4xx is counted under [`OTHER`], never under the
//!   model it asked for, since any name can be refused (a partial record's 499, a call
//!   dropped while waiting for its answer, is not a refusal).
//!
//! Costs are worked out before folding, from the real name. The caps are per process:
//! each instance (and each restart) admits its own.

use std::collections::{BTreeMap, HashSet};

use super::day::Day;
use super::pricing::Quote;
use super::record::UsageRecord;

/// The name rows beyond a cap are counted under.
pub const OTHER: &str = "other";

/// The longest model name kept, in bytes.
pub const MODEL_NAME_MAX: usize = 128;

/// Days remembered. A record's day is when its request arrived, which no client chooses, so
/// only records buffered through a long store outage can come back to a forgotten day.
const DAYS_KEPT: usize = 8;

/// What one day has admitted so far.
#[derive(Default)]
struct Admitted {
    models: HashSet<String>,
    tenants: HashSet<String>,
}

/// The names each day has admitted.
pub struct Bounds {
    models_per_day: usize,
    tenants_per_day: usize,
    days: BTreeMap<Day, Admitted>,
}

impl Bounds {
    pub fn new(models_per_day: usize, tenants_per_day: usize) -> Bounds {
        Bounds {
            models_per_day,
            tenants_per_day,
            days: BTreeMap::new(),
        }
    }

    /// Cuts an overlong model name to [`MODEL_NAME_MAX`] bytes, on a character boundary.
    pub fn trim(record: &mut UsageRecord) {
        if record.model.len() > MODEL_NAME_MAX {
            let mut end = MODEL_NAME_MAX;
            while !record.model.is_char_boundary(end) {
                end -= 1;
            }
            record.model.truncate(end);
        }
    }

    /// The record and quote as the aggregate counts them, when they differ from what was
    /// recorded: the model or the tenant replaced by [`OTHER`].
    pub fn fold(&mut self, record: &UsageRecord, quote: &Quote) -> Option<(UsageRecord, Quote)> {
        let rejected = (400..500).contains(&record.status) && !record.partial;
        let day = record.day();
        if !self.days.contains_key(&day) && self.days.len() >= DAYS_KEPT {
            self.days.pop_first();
        }
        let admitted = self.days.entry(day).or_default();
        let model_over =
            rejected || !admit(&mut admitted.models, &record.model, self.models_per_day);
        let tenant_over = record.key_name.is_none()
            && !admit(&mut admitted.tenants, &record.tenant, self.tenants_per_day);
        (model_over || tenant_over).then(|| fold_all(record, quote, model_over, tenant_over))
    }
}

/// Whether `name` is admitted: already known, or room is left for it.
fn admit(known: &mut HashSet<String>, name: &str, cap: usize) -> bool {
    if known.contains(name) {
        return true;
    }
    if known.len() >= cap {
        return false;
    }
    known.insert(name.to_owned());
    true
}

fn fold_all(
    record: &UsageRecord,
    quote: &Quote,
    model: bool,
    tenant: bool,
) -> (UsageRecord, Quote) {
    let mut record = record.clone();
    let mut quote = quote.clone();
    if model {
        for name in &mut quote.unpriced {
            if *name == record.model {
                OTHER.clone_into(name);
            }
        }
        OTHER.clone_into(&mut record.model);
    }
    if tenant {
        OTHER.clone_into(&mut record.tenant);
    }
    (record, quote)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::savings::{Outcome, Tokens};

    fn record(model: &str, tenant: &str, status: u16) -> UsageRecord {
        UsageRecord {
            at_ms: 1_750_000_000_000,
            tenant: tenant.to_owned(),
            key_name: None,
            team: None,
            tags: vec![],
            dialect: "openai".into(),
            endpoint: "chat".into(),
            model: model.to_owned(),
            upstream: "openai".into(),
            outcome: if status >= 400 {
                Outcome::Error
            } else {
                Outcome::Miss
            },
            status,
            latency_ms: 1.0,
            upstream_ms: None,
            baseline: Tokens::default(),
            actual: Tokens::default(),
            overhead: Tokens::default(),
            overhead_model: None,
            embed_calls: 0,
            estimated: false,
            partial: false,
        }
    }

    #[test]
    fn names_beyond_the_caps_fold_into_other() {
        let mut bounds = Bounds::new(2, 1);
        let quote = |model: &str| Quote {
            unpriced: vec![model.to_owned()],
            ..Quote::default()
        };
        let mut models = Vec::new();
        for (model, tenant) in [
            ("a", "t1"),
            ("b", "t1"),
            ("a", "t1"),
            ("c", "t1"),
            ("a", "t2"),
        ] {
            let r = record(model, tenant, 200);
            let (model, tenant, unpriced) = match bounds.fold(&r, &quote(model)) {
                Some((r, q)) => (r.model, r.tenant, q.unpriced),
                None => (r.model, r.tenant, vec![model.to_owned()]),
            };
            assert_eq!(unpriced, vec![model.clone()]);
            models.push((model, tenant));
        }
        let expected = [
            ("a", "t1"),
            ("b", "t1"),
            ("a", "t1"),
            ("other", "t1"),
            ("a", "other"),
        ];
        let got: Vec<(&str, &str)> = models
            .iter()
            .map(|(m, t)| (m.as_str(), t.as_str()))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn refused_calls_never_count_under_their_model_and_names_are_cut() {
        let mut bounds = Bounds::new(10, 10);
        let folded = bounds.fold(&record("made-up", "t", 404), &Quote::default());
        assert_eq!(folded.map(|(r, _)| r.model).as_deref(), Some(OTHER));
        let mut long = record(&"é".repeat(200), "t", 200);
        Bounds::trim(&mut long);
        assert!(long.model.len() <= MODEL_NAME_MAX && long.model.len() >= MODEL_NAME_MAX - 1);
    }
}
