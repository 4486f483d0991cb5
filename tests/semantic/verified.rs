//! Verified serving (`semantic.mode = "verified"`, the default): a candidate is served only when
//! the calibration's lower bound, learned from verified outcomes in the store, allows it. Until
//! then it is verified: the call goes upstream and the fresh answer is compared with the
//! candidate's. Observations in Redis are shared by every instance; a corrupt record serves
//! nothing.
//!
//! Outcomes are written here by a [`Calibration`] of the test's own on the same Redis, which is
//! what another instance sharing it does. How much they weigh as they age is measured on a
//! [`ManualClock`] both share.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use thrifty::config::{RawConfig, SemanticMode};
use thrifty::semantic::calibration::{CALIBRATION_PREFIX, Calibration, HALF_LIFE, Scope};
use thrifty::semantic::embedder::{Embedded, Embedder, similarity};
use thrifty::semantic::guard;
use thrifty::store::Store;
use thrifty::{Clock, ManualClock};

use crate::common::thrifty::model_dir;
use crate::{Backend, Dialect, NO_HEADERS, PARAPHRASE, QUESTION, WAIT, World, poll};

/// A world running verified serving (the default mode), on Redis.
async fn verified_world() -> World {
    verified_world_on(Clock::system()).await
}

/// [`verified_world`], thrifty reading the time from `clock`.
async fn verified_world_on(clock: Clock) -> World {
    World::start_on(Backend::Redis, clock, |raw| {
        raw.semantic.mode = SemanticMode::Verified;
        raw.semantic.explore = 0.0;
    })
    .await
}

/// Asks [`QUESTION`] (a miss) and waits until it is indexed: in verified mode a paraphrase
/// cannot tell, since nothing is served before it is measured.
async fn fill(w: &World, dialect: Dialect) {
    let miss = w
        .api
        .ask(dialect, &dialect.chat(QUESTION, false), &NO_HEADERS)
        .await;
    miss.assert_cache("miss", "the first question");
    poll(WAIT, "the first question is indexed", || async {
        let reply = w.api.admin_get("/admin/cache/stats").await;
        (reply.json()["semantic"]["indexed"].as_u64() == Some(1)).then_some(())
    })
    .await;
}

/// Another instance's calibration on the world's Redis, and the store it writes through.
struct Peer {
    calibration: Calibration,
    store: Arc<Store>,
}

/// A calibration of the test's own on the world's Redis, as another instance would hold. It
/// returns once its store answers: the connection is made in the background, and observations
/// written before it (or while the breaker it trips is open) would be lost.
async fn shared_calibration(w: &World) -> Peer {
    shared_calibration_on(w, Clock::system()).await
}

/// [`shared_calibration`], stamping its observations by `clock`.
async fn shared_calibration_on(w: &World, clock: Clock) -> Peer {
    let url = w
        .vars
        .iter()
        .find(|(k, _)| k == "THRIFTY_REDIS_URL")
        .map(|(_, v)| v.clone())
        .expect("a Redis world");
    let env = move |name: &str| (name == "THRIFTY_REDIS_URL").then(|| url.clone());
    let mut raw = RawConfig::default();
    raw.semantic.mode = SemanticMode::Verified;
    let config = raw.validate(&env).expect("a valid config");
    let store = thrifty::open_store(&config.store, &clock).expect("the store opens");
    poll(WAIT, "the peer's store answers", || {
        let store = store.clone();
        async move { store.ping().await.ok() }
    })
    .await;
    Peer {
        calibration: Calibration::new(&config.semantic, Some(store.clone()), 7, clock),
        store,
    }
}

/// The similarity and features thrifty sees for `asked` against the recorded `cached`.
async fn pair(asked: &str, cached: &str) -> (f32, guard::Features) {
    let embedder = Embedder::shared(&model_dir()).expect("the model loads");
    let vector = |e: Embedded| match e {
        Embedded::Vector(v) => v,
        other => panic!("not embedded: {other:?}"),
    };
    let a = vector(embedder.embed(asked, Duration::from_secs(60)).await);
    let b = vector(embedder.embed(cached, Duration::from_secs(60)).await);
    let features = guard::check(asked, cached).expect("the guard lets the pair through");
    (similarity(&a, &b), features)
}

/// Records 300 outcomes at `similarity` and 0.01 either side: the test's embedding of a pair
/// and thrifty's (batched with other tests' lookups) may differ in the last digits, and a
/// similarity near a bin's edge would then land in the next bin. Every one must reach the store.
async fn observe_around(
    peer: &Peer,
    dialect: Dialect,
    similarity: f32,
    features: &guard::Features,
    agreed: bool,
) {
    let (errors, skipped) = (peer.store.errors(), peer.store.skipped());
    for at in [
        similarity - 0.01,
        similarity,
        (similarity + 0.01).min(0.999),
    ] {
        for _ in 0..300 {
            peer.calibration
                .observe(&scope(dialect), at, features, agreed)
                .await;
        }
    }
    assert_eq!(
        (peer.store.errors(), peer.store.skipped()),
        (errors, skipped),
        "every observation reached the store"
    );
}

/// Polls ask with this: `no-store` reads both caches but stores nothing, so a poll that went
/// upstream neither turns the next one into an exact hit nor adds an outcome of its own.
const LOOK_ONLY: [(&str, &str); 1] = [("cache-control", "no-store")];

fn scope(dialect: Dialect) -> Scope {
    Scope {
        tenant: "anonymous".to_owned(),
        namespace: None,
        model: dialect.model().to_owned(),
    }
}

/// The global observation counts `/admin/semantic/calibration` reports.
async fn observed(w: &World) -> Value {
    let reply = w.api.admin_get("/admin/semantic/calibration").await;
    reply.assert_ok("calibration report");
    reply.json()
}

fn total_observations(report: &Value) -> f64 {
    report["scopes"]
        .as_array()
        .and_then(|scopes| scopes.first())
        .and_then(|global| global["observations"].as_f64())
        .unwrap_or_else(|| panic!("no global observation count in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmeasured_candidate_is_verified_not_served_and_its_outcome_is_observed() {
    let w = verified_world().await;
    let dialect = Dialect::OpenAi;
    fill(&w, dialect).await;
    let before = total_observations(&observed(&w).await);
    let calls = w.fake.calls_to(dialect.chat_path());
    let reply = w
        .api
        .ask(dialect, &dialect.chat(PARAPHRASE, false), &NO_HEADERS)
        .await;
    reply.assert_cache("miss", "a paraphrase nothing has measured yet");
    assert_eq!(
        w.fake.calls_to(dialect.chat_path()),
        calls + 1,
        "it went upstream"
    );
    poll(WAIT, "the verified outcome is observed", || async {
        (total_observations(&observed(&w).await) > before).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agreeing_outcomes_make_a_paraphrase_a_hit_and_a_corrupt_record_ends_hits() {
    let w = verified_world().await;
    let dialect = Dialect::OpenAi;
    fill(&w, dialect).await;
    // Another instance has verified many such pairs, and they agreed.
    let calibration = shared_calibration(&w).await;
    let (similarity, features) = pair("What is the way to reset my password?", QUESTION).await;
    observe_around(&calibration, dialect, similarity, &features, true).await;
    let body = dialect.chat("What is the way to reset my password?", false);
    let calls = w.fake.calls_to(dialect.chat_path());
    let hit = poll(WAIT, "the calibrated paraphrase is served", || {
        let (body, w) = (&body, &w);
        async move {
            let reply = w.api.ask(dialect, body, &LOOK_ONLY).await;
            (reply.cache() == "semantic-hit").then_some(reply)
        }
    })
    .await;
    let confidence = hit
        .header("x-thrifty-confidence")
        .expect("a verified hit says how sure it is")
        .to_owned();
    let lower: f64 = confidence
        .split(';')
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("x-thrifty-confidence: {confidence}"));
    assert!(lower >= 0.95, "served at a bound of {lower}");
    assert!(hit.header("x-thrifty-similarity").is_some());
    // Polling may have gone upstream before the calibration was read; the hit did not.
    let upstream = w.fake.calls_to(dialect.chat_path());
    let again = w.api.ask(dialect, &body, &NO_HEADERS).await;
    again.assert_cache("semantic-hit", "served again");
    assert_eq!(
        w.fake.calls_to(dialect.chat_path()),
        upstream,
        "a hit never goes upstream"
    );
    assert!(upstream >= calls);

    // Near-misses stay misses however well the paraphrases did.
    for near in [
        "How do I reset my password without email?",
        "How do I reset my PIN?",
    ] {
        let reply = w
            .api
            .ask(dialect, &dialect.chat(near, false), &NO_HEADERS)
            .await;
        reply.assert_cache("miss", near);
    }

    // A corrupt record in the shared logs (the tenant's and the global one): no semantic hits
    // at all, never wrong ones.
    let probe = w.probe().await;
    let logs = probe.scan(&format!("{CALIBRATION_PREFIX}*")).await;
    assert!(logs.len() >= 2, "a scope log and the global one: {logs:?}");
    for log in logs {
        let mut push = redis::cmd("RPUSH");
        push.arg(log).arg(b"not an observation".as_slice());
        let _: i64 = probe.query(&push).await;
    }
    poll(WAIT, "a corrupt calibration ends semantic hits", || {
        let (body, w) = (&body, &w);
        async move {
            let reply = w.api.ask(dialect, body, &LOOK_ONLY).await;
            (reply.cache() == "miss").then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differing_outcomes_stop_hits_at_that_level() {
    let w = verified_world().await;
    let dialect = Dialect::Ollama;
    fill(&w, dialect).await;
    let calibration = shared_calibration(&w).await;
    let asked = "What is the way to reset my password?";
    let (similarity, features) = pair(asked, QUESTION).await;
    observe_around(&calibration, dialect, similarity, &features, true).await;
    let body = dialect.chat(asked, false);
    poll(WAIT, "the calibrated paraphrase is served", || {
        let (body, w) = (&body, &w);
        async move {
            let reply = w.api.ask(dialect, body, &LOOK_ONLY).await;
            (reply.cache() == "semantic-hit").then_some(())
        }
    })
    .await;
    // Then answers at that level start to differ.
    observe_around(&calibration, dialect, similarity, &features, false).await;
    poll(WAIT, "differing outcomes stop the hits", || {
        let (body, w) = (&body, &w);
        async move {
            let reply = w.api.ask(dialect, body, &LOOK_ONLY).await;
            (reply.cache() == "miss").then_some(())
        }
    })
    .await;
}

/// The decay-weighted count of agreeing outcomes in the global curve of the report.
fn agreed_weight(report: &Value) -> f64 {
    let global = &report["scopes"][0];
    assert_eq!(global["scope"], "global", "{report}");
    global["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row["bins"].as_array().into_iter().flatten())
        .map(|bin| bin["agreed"].as_f64().unwrap_or_default())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_weigh_half_after_a_half_life_and_old_ones_serve_nothing() {
    let clock = ManualClock::now();
    let w = verified_world_on(clock.clock()).await;
    let dialect = Dialect::OpenAi;
    fill(&w, dialect).await;
    let calibration = shared_calibration_on(&w, clock.clock()).await;
    let asked = "What is the way to reset my password?";
    let (similarity, features) = pair(asked, QUESTION).await;
    observe_around(&calibration, dialect, similarity, &features, true).await;
    let body = dialect.chat(asked, false);
    poll(WAIT, "the calibrated paraphrase is served", || {
        let (body, w) = (&body, &w);
        async move {
            let reply = w.api.ask(dialect, body, &LOOK_ONLY).await;
            (reply.cache() == "semantic-hit").then_some(())
        }
    })
    .await;
    let fresh = observed(&w).await;
    let (weight, count) = (agreed_weight(&fresh), total_observations(&fresh));
    assert!(
        weight >= 900.0,
        "every agreeing outcome weighs 1 when new: {fresh}"
    );

    // A half-life later the same outcomes weigh half as much (once the log is reread).
    clock.advance(HALF_LIFE);
    let aged = poll(WAIT, "the outcomes weigh half", || async {
        let report = observed(&w).await;
        ((agreed_weight(&report) - weight / 2.0).abs() < 1e-6).then_some(report)
    })
    .await;
    assert_eq!(
        total_observations(&aged),
        count,
        "aged outcomes still count, they only weigh less"
    );

    // Ten half-lives on, a thousandth of the evidence is left: nothing is served on it.
    clock.advance(HALF_LIFE * 9);
    poll(WAIT, "outcomes ten half-lives old serve nothing", || {
        let (body, w) = (&body, &w);
        async move {
            let reply = w.api.ask(dialect, body, &LOOK_ONLY).await;
            (reply.cache() == "miss").then_some(())
        }
    })
    .await;
    let old = observed(&w).await;
    assert!(
        (agreed_weight(&old) - weight / 1024.0).abs() < 1e-6,
        "{} agreeing outcomes weigh {weight}/1024: {old}",
        agreed_weight(&old)
    );
}
