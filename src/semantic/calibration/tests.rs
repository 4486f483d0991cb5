//! Verified serving over a real embedded store: cold start, learning, unlearning,
//! sharing between instances, scopes, corruption and exploration.

use std::time::Duration;

use super::*;
use crate::config::{RawConfig, RawSemantic};
use crate::store::EmbeddedStore;

fn config(explore: f64) -> SemanticConfig {
    let raw = RawConfig {
        semantic: RawSemantic {
            explore,
            ..RawSemantic::default()
        },
        ..RawConfig::default()
    };
    raw.validate(&|_| None)
        .expect("the default config is valid")
        .semantic
}

fn store() -> Arc<Store> {
    let store = EmbeddedStore::scratch("calibration", crate::clock::Clock::system());
    Store::embedded(store, Duration::from_secs(5))
}

fn scope(tenant: &str) -> Scope {
    Scope {
        tenant: tenant.to_owned(),
        namespace: None,
        model: "m".to_owned(),
    }
}

fn close_wording() -> Features {
    Features {
        overlap: 0.8,
        length_ratio: 0.9,
        one_sided: false,
        unmatched: [1, 0],
        shared: 4,
        in_order: 4,
    }
}

async fn teach(c: &Calibration, scope: &Scope, similarity: f32, agreed: usize, differed: usize) {
    for i in 0..agreed + differed {
        c.observe(scope, similarity, &close_wording(), i < agreed)
            .await;
    }
}

#[tokio::test]
async fn nothing_is_served_before_it_is_measured() {
    let c = Calibration::new(&config(0.0), Some(store()), 1, Clock::system());
    let e = c.estimate(&scope("a"), 0.999, &close_wording()).await;
    assert_eq!(e, Estimate::default());
    assert!(!c.allows(&e));
}

#[tokio::test]
async fn agreeing_outcomes_open_their_cell_and_the_cells_above() {
    let c = Calibration::new(&config(0.0), Some(store()), 1, Clock::system());
    let s = scope("a");
    teach(&c, &s, 0.93, 50, 0).await;
    let e = c.estimate(&s, 0.93, &close_wording()).await;
    assert!(
        !c.allows(&e),
        "50 agreeing outcomes are not yet enough: {e:?}"
    );
    teach(&c, &s, 0.93, 110, 0).await;
    let e = c.estimate(&s, 0.93, &close_wording()).await;
    assert!(c.allows(&e), "{e:?}");
    assert_eq!(e.observations.round(), 160.0);
    assert!(e.lower < e.point && e.point == 1.0);
    let higher = c.estimate(&s, 0.97, &close_wording()).await;
    assert!(
        c.allows(&higher),
        "a higher similarity is never bounded lower"
    );
    let lower = c.estimate(&s, 0.86, &close_wording()).await;
    assert!(!c.allows(&lower), "a lower similarity is not vouched for");
    let other_row = Features {
        overlap: 0.1,
        ..close_wording()
    };
    assert!(!c.allows(&c.estimate(&s, 0.93, &other_row).await));
}

#[tokio::test]
async fn differing_outcomes_close_the_cell_again() {
    let c = Calibration::new(&config(0.0), Some(store()), 1, Clock::system());
    let s = scope("a");
    teach(&c, &s, 0.93, 200, 0).await;
    assert!(c.allows(&c.estimate(&s, 0.93, &close_wording()).await));
    teach(&c, &s, 0.93, 0, 12).await;
    let e = c.estimate(&s, 0.93, &close_wording()).await;
    assert!(!c.allows(&e), "{e:?}");
    assert!(e.point < 0.95);
}

#[tokio::test]
async fn instances_sharing_a_store_share_what_they_learned() {
    let shared = store();
    let first = Calibration::new(&config(0.0), Some(shared.clone()), 1, Clock::system());
    let second = Calibration::new(&config(0.0), Some(shared), 2, Clock::system());
    teach(&first, &scope("a"), 0.95, 150, 0).await;
    let e = second.estimate(&scope("a"), 0.95, &close_wording()).await;
    assert!(second.allows(&e), "{e:?}");
    assert_eq!(e.observations.round(), 150.0);
}

#[tokio::test]
async fn a_scope_with_enough_outcomes_of_its_own_overrides_the_global_curve() {
    let c = Calibration::new(&config(0.0), Some(store()), 1, Clock::system());
    teach(&c, &scope("good"), 0.95, 300, 0).await;
    let newcomer = c.estimate(&scope("new"), 0.95, &close_wording()).await;
    assert!(c.allows(&newcomer), "a new scope borrows the global curve");
    teach(&c, &scope("bad"), 0.95, 150, 60).await;
    let bad = c.estimate(&scope("bad"), 0.95, &close_wording()).await;
    assert!(!c.allows(&bad), "{bad:?}");
    assert_eq!(bad.observations.round(), 210.0);
}

#[tokio::test]
async fn a_corrupt_record_means_no_hits_in_its_scope() {
    let shared = store();
    let writer = Calibration::new(&config(0.0), Some(shared.clone()), 1, Clock::system());
    teach(&writer, &scope("a"), 0.95, 300, 0).await;
    shared
        .append_capped(&global_key(), Bytes::from_static(b"C1{not json"), LOG_CAP)
        .await
        .expect("the store takes the record");
    let reader = Calibration::new(&config(0.0), Some(shared), 2, Clock::system());
    let e = reader
        .estimate(&scope("other"), 0.95, &close_wording())
        .await;
    assert_eq!(e, Estimate::default());
    let report = reader.report(None).await;
    assert_eq!(report["scopes"][0]["broken"], true);
}

#[tokio::test]
async fn old_outcomes_weigh_less() {
    let now = 10 * HALF_LIFE.as_millis() as u64;
    let o = |at_ms| Observation {
        at_ms,
        similarity: 0.95,
        features: close_wording(),
        agreed: true,
    };
    let log: VecDeque<Observation> = [o(now), o(now - HALF_LIFE.as_millis() as u64)].into();
    let rows = tallies(&log, now, HALF_LIFE);
    let (row, bin) = curve::cell(0.95, &close_wording()).expect("in range");
    assert!((rows[row][bin].agreed - 1.5).abs() < 1e-9);
}

#[test]
fn exploration_verifies_about_its_fraction() {
    let c = Calibration::new(&config(0.05), None, 7, Clock::system());
    let verified = (0..20_000).filter(|_| c.should_verify()).count();
    assert!((800..1200).contains(&verified), "{verified}");
    let never = Calibration::new(&config(0.0), None, 7, Clock::system());
    assert!(!(0..1000).any(|_| never.should_verify()));
}

#[tokio::test]
async fn the_report_shows_the_curve_and_its_counts() {
    let c = Calibration::new(&config(0.0), None, 1, Clock::system());
    teach(&c, &scope("a"), 0.95, 150, 1).await;
    let report = c.report(Some(&scope("a"))).await;
    assert_eq!(report["max_error"], 0.05);
    let global = &report["scopes"][0];
    assert_eq!(global["observations"], 151);
    let (row, bin) = curve::cell(0.95, &close_wording()).expect("in range");
    let cell = &global["rows"][row]["bins"][bin];
    assert_eq!(cell["agreed"].as_f64().map(f64::round), Some(150.0));
    assert_eq!(cell["differed"].as_f64().map(f64::round), Some(1.0));
    assert_eq!(cell["serves"], true);
    assert_eq!(report["scopes"][1]["observations"], 151);
}

#[tokio::test]
async fn outcomes_decay_as_the_clock_moves_without_new_ones() {
    let clock = crate::clock::ManualClock::at_ms(HALF_LIFE.as_millis() as u64);
    let c = Calibration::new(&config(0.0), None, 1, clock.clock());
    teach(&c, &scope("a"), 0.95, 150, 0).await;
    let (row, bin) = curve::cell(0.95, &close_wording()).expect("in range");
    let agreed = |report: &serde_json::Value| {
        report["scopes"][0]["rows"][row]["bins"][bin]["agreed"].as_f64()
    };
    let fresh = c.report(None).await;
    assert_eq!(agreed(&fresh), Some(150.0));
    assert_eq!(fresh["scopes"][0]["rows"][row]["bins"][bin]["serves"], true);
    clock.advance(HALF_LIFE);
    assert_eq!(agreed(&c.report(None).await), Some(75.0));
    clock.advance(HALF_LIFE * 9);
    let old = c.report(None).await;
    assert_eq!(agreed(&old), Some(150.0 / 1024.0));
    assert_eq!(old["scopes"][0]["rows"][row]["bins"][bin]["serves"], false);
}
