//! How long entries live: `x-thrifty-cache-ttl`, `cache-control: max-age`, and the sliding TTL
//! that a hit renews, never past `cache.max_ttl` from the entry's creation.
//!
//! Expiry is observed in the store (the admin API, or Redis's PTTL), not by asking again:
//! every hit would renew the entry it is waiting to see expire.
//!
//! Redis expires its keys by its own clock, so its cases wait in real time. With the embedded
//! store every expiry is thrifty's own decision, so those cases run thrifty on a
//! [`ManualClock`] and move it instead of waiting.

use std::time::{Duration, Instant};

use rstest::rstest;
use serde_json::json;
use thrifty::ManualClock;

use crate::{ANSWER_PREFIX, Backend, Dialect, Harness, NO_HEADERS, WAIT, poll};

/// Waits until the answer `short` has `ms` left to live: a hit renews its entry in the
/// background, and a test moving the clock must not move it before the renewal landed.
async fn wait_expires_in(h: &Harness, short: &str, ms: u64, what: &str) {
    poll(WAIT, &format!("{what}: {ms} ms left"), || async {
        (h.api.expires_in(short).await == Some(ms)).then_some(())
    })
    .await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_expires_after_its_ttl(
    #[values(Backend::Redis)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let h = Harness::start(backend).await;
    let path = dialect.chat_path();
    let body = dialect.chat("short lived", false);
    let miss = h
        .api
        .fill(path, &body, &[("x-thrifty-cache-ttl", "1")])
        .await;
    let key = miss.key();
    let stored = h.api.entry(&key).await.expect("stored");
    assert_eq!(stored["entry"]["ttl_ms"], 1000, "{what}");
    if backend == Backend::Redis {
        let probe = h.probe().await;
        let ttl = probe.pttl(&probe.answer_key(&key).await).await;
        assert!(ttl > 0 && ttl <= 1000, "{what}: PTTL {ttl}");
    }
    h.api.wait_gone(&key, Duration::from_secs(5)).await;
    h.api
        .send(path, &body)
        .await
        .assert_cache("miss", &format!("{what}: after expiry"));
    assert_eq!(h.fake.calls_to(path), 2, "{what}");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_entry_expires_the_moment_its_ttl_has_passed(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{dialect:?}");
    let clock = ManualClock::now();
    let h = Harness::setup(Backend::Embedded)
        .clock(&clock)
        .start()
        .await;
    let path = dialect.chat_path();
    let body = dialect.chat("short lived", false);
    let miss = h
        .api
        .fill(path, &body, &[("x-thrifty-cache-ttl", "1")])
        .await;
    let key = miss.key();
    let stored = h.api.entry(&key).await.expect("stored");
    assert_eq!(stored["entry"]["ttl_ms"], 1000, "{what}");
    assert_eq!(stored["expires_in_ms"], 1000, "{what}: {stored}");

    clock.advance(Duration::from_millis(999));
    assert_eq!(
        h.api.expires_in(&key).await,
        Some(1),
        "{what}: a millisecond before its TTL the entry is still stored"
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        h.api.entry(&key).await,
        None,
        "{what}: gone once its TTL has passed"
    );
    h.api
        .send(path, &body)
        .await
        .assert_cache("miss", &format!("{what}: after expiry"));
    assert_eq!(h.fake.calls_to(path), 2, "{what}");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ttl_header_is_capped_by_max_ttl(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
) {
    let h = Harness::setup(backend)
        .config(|raw| {
            raw.cache.ttl = Duration::from_secs(60);
            raw.cache.max_ttl = Duration::from_secs(120);
        })
        .start()
        .await;
    let dialect = Dialect::OpenAi;
    let path = dialect.chat_path();
    let miss = h
        .api
        .fill(
            path,
            &dialect.chat("forever", false),
            &[("x-thrifty-cache-ttl", "86400")],
        )
        .await;
    let stored = h.api.entry(&miss.key()).await.expect("stored");
    assert_eq!(stored["entry"]["ttl_ms"], 120_000, "{backend:?}: {stored}");
    if backend == Backend::Redis {
        let probe = h.probe().await;
        let ttl = probe.pttl(&probe.answer_key(&miss.key()).await).await;
        assert!(ttl > 0 && ttl <= 120_000, "{backend:?}: PTTL {ttl}");
    }
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_rejects_an_older_entry(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let h = Harness::start(backend).await;
    let path = dialect.chat_path();
    let body = dialect.chat("how fresh is this", false);
    let miss = h.api.fill(path, &body, &NO_HEADERS).await;
    let key = miss.key();
    let first = h.api.entry(&key).await.expect("stored")["entry"]["created_ms"]
        .as_u64()
        .expect("created_ms");
    h.api
        .post(path, &body, &[("cache-control", "max-age=3600")])
        .await
        .assert_cache("hit", &format!("{what}: young enough"));

    // Any entry is older than zero seconds once a millisecond has passed.
    let fresh = poll(WAIT, &what, || async {
        let reply = h
            .api
            .post(path, &body, &[("cache-control", "max-age=0")])
            .await;
        reply.assert_ok(&what);
        (reply.cache() == "miss").then_some(reply)
    })
    .await;
    assert_eq!(fresh.key(), key, "{what}");
    assert_eq!(
        h.fake.calls_to(path),
        2,
        "{what}: the older entry was rejected"
    );
    poll(WAIT, &format!("{what}: the entry is renewed"), || async {
        let entry = h.api.entry(&key).await?;
        (entry["entry"]["created_ms"].as_u64()? > first).then_some(())
    })
    .await;
    h.api.send(path, &body).await.assert_cache("hit", &what);
    assert_eq!(h.fake.calls_to(path), 2, "{what}");
}

/// With a one-second TTL, hits every quarter second keep the entry for well over a second.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_keep_a_short_lived_entry_alive(#[values(Backend::Redis)] backend: Backend) {
    let dialect = Dialect::Ollama;
    let what = format!("{backend:?}");
    let h = Harness::start(backend).await;
    let path = dialect.chat_path();
    let body = dialect.chat("keep me alive", false);
    let ttl = [("x-thrifty-cache-ttl", "1")];
    let miss = h.api.fill(path, &body, &ttl).await;
    let started = Instant::now();
    let mut pace = tokio::time::interval(Duration::from_millis(250));
    while started.elapsed() < Duration::from_millis(2500) {
        pace.tick().await;
        h.api
            .send(path, &body)
            .await
            .assert_cache("hit", &format!("{what}: at {:?}", started.elapsed()));
    }
    assert_eq!(h.fake.calls_to(path), 1, "{what}");
    h.api.wait_gone(&miss.key(), Duration::from_secs(5)).await;
    h.api.send(path, &body).await.assert_cache("miss", &what);
}

/// The same with the embedded store, on thrifty's clock: ten hits a quarter second apart keep
/// a one-second entry for two and a half seconds, each renewing it to a full second, and it
/// expires a second after the last.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_keep_a_short_lived_embedded_entry_alive(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{dialect:?}");
    let clock = ManualClock::now();
    let h = Harness::setup(Backend::Embedded)
        .clock(&clock)
        .start()
        .await;
    let path = dialect.chat_path();
    let body = dialect.chat("keep me alive", false);
    let miss = h
        .api
        .fill(path, &body, &[("x-thrifty-cache-ttl", "1")])
        .await;
    let key = miss.key();
    for step in 1..=10 {
        clock.advance(Duration::from_millis(250));
        let at = format!("{what}: at {} ms", step * 250);
        h.api.send(path, &body).await.assert_cache("hit", &at);
        wait_expires_in(&h, &key, 1000, &format!("{at}: the hit renews the entry")).await;
    }
    assert_eq!(h.fake.calls_to(path), 1, "{what}");
    clock.advance(Duration::from_millis(999));
    assert_eq!(h.api.expires_in(&key).await, Some(1), "{what}");
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        h.api.entry(&key).await,
        None,
        "{what}: a second after the last hit"
    );
    h.api.send(path, &body).await.assert_cache("miss", &what);
    assert_eq!(h.fake.calls_to(path), 2, "{what}");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_extends_the_redis_ttl(#[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect) {
    let what = format!("{dialect:?}");
    let h = Harness::start(Backend::Redis).await;
    let probe = h.probe().await;
    let path = dialect.chat_path();
    let body = dialect.chat("slide me", false);
    let miss = h
        .api
        .fill(path, &body, &[("x-thrifty-cache-ttl", "10")])
        .await;
    let redis_key = probe.answer_key(&miss.key()).await;
    let start = probe.pttl(&redis_key).await;
    assert!(start > 0 && start <= 10_000, "{what}: PTTL {start}");
    // A hit extends the TTL at most once per tenth of it (here 1 s).
    let before = poll(WAIT, &format!("{what}: PTTL drops"), || async {
        let ttl = probe.pttl(&redis_key).await;
        (ttl <= start - 1_300).then_some(ttl)
    })
    .await;

    h.api.send(path, &body).await.assert_cache("hit", &what);
    let after = poll(
        WAIT,
        &format!("{what}: the hit renews the PTTL"),
        || async {
            let ttl = probe.pttl(&redis_key).await;
            (ttl > before + 200).then_some(ttl)
        },
    )
    .await;
    assert!(
        after <= 10_000,
        "{what}: never more than the entry's TTL: {after}"
    );
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sliding_never_passes_max_ttl(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{dialect:?}");
    let max_ttl_ms: i64 = 3000;
    let h = Harness::setup(Backend::Redis)
        .config(move |raw| {
            raw.cache.ttl = Duration::from_millis(max_ttl_ms as u64);
            raw.cache.max_ttl = Duration::from_millis(max_ttl_ms as u64);
        })
        .start()
        .await;
    let probe = h.probe().await;
    let path = dialect.chat_path();
    let body = dialect.chat("do not outlive max_ttl", false);
    let miss = h
        .api
        .post(path, &body, &[("x-thrifty-cache-ttl", "2")])
        .await;
    miss.assert_cache("miss", &what);
    let prefix = format!("{}{}", ANSWER_PREFIX, miss.key());
    // The entry was created no later than the moment its key is seen in Redis.
    let redis_key = poll(WAIT, &format!("{what}: stored"), || async {
        probe
            .keys()
            .await
            .into_iter()
            .find(|k| k.starts_with(&prefix))
    })
    .await;
    let seen = Instant::now();
    assert_eq!(
        h.api.entry(&miss.key()).await.expect("stored")["entry"]["ttl_ms"],
        json!(2000)
    );

    // Past max_ttl - ttl, a full renewal would outlive max_ttl.
    let before = poll(WAIT, &format!("{what}: the entry ages"), || async {
        let ttl = probe.pttl(&redis_key).await;
        assert!(ttl > 0, "{what}: the entry expired while waiting: {ttl}");
        (ttl < 700).then_some(ttl)
    })
    .await;
    let hit = h.api.send(path, &body).await;
    hit.assert_cache("hit", &what);
    assert!(hit.age() >= 1, "{what}: the entry is over a second old");
    let after = poll(
        WAIT,
        &format!("{what}: the hit renews the PTTL"),
        || async {
            let ttl = probe.pttl(&redis_key).await;
            (ttl > before + 200).then_some(ttl)
        },
    )
    .await;
    let limit = max_ttl_ms - seen.elapsed().as_millis() as i64 + 20;
    assert!(
        after <= limit,
        "{what}: renewed to {after} ms, past max_ttl from creation (at most {limit} ms)"
    );
    assert!(
        after < 1950,
        "{what}: the renewal was capped below the 2 s TTL: {after}"
    );
}

/// The same cap with the embedded store, on thrifty's clock: a hit renews the entry only up to
/// `max_ttl` from its creation, and it expires exactly then.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sliding_never_passes_max_ttl_in_the_embedded_store(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{dialect:?}");
    let clock = ManualClock::now();
    let h = Harness::setup(Backend::Embedded)
        .clock(&clock)
        .config(|raw| {
            raw.cache.ttl = Duration::from_secs(3);
            raw.cache.max_ttl = Duration::from_secs(3);
        })
        .start()
        .await;
    let path = dialect.chat_path();
    let body = dialect.chat("do not outlive max_ttl", false);
    let miss = h
        .api
        .fill(path, &body, &[("x-thrifty-cache-ttl", "2")])
        .await;
    let key = miss.key();
    assert_eq!(h.api.expires_in(&key).await, Some(2000), "{what}");

    // 1.5 s later a full renewal would reach 3.5 s from creation, past max_ttl.
    clock.advance(Duration::from_millis(1500));
    let hit = h.api.send(path, &body).await;
    hit.assert_cache("hit", &what);
    assert_eq!(hit.age(), 1, "{what}: the entry is a second and a half old");
    let renewed = poll(
        WAIT,
        &format!("{what}: the hit renews the entry"),
        || async { h.api.expires_in(&key).await.filter(|left| *left != 500) },
    )
    .await;
    assert_eq!(
        renewed, 1500,
        "{what}: renewed to max_ttl from creation, not to the 2 s TTL"
    );
    clock.advance(Duration::from_millis(1499));
    assert_eq!(h.api.expires_in(&key).await, Some(1), "{what}");
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        h.api.entry(&key).await,
        None,
        "{what}: gone max_ttl after its creation"
    );
    h.api.send(path, &body).await.assert_cache("miss", &what);
    assert_eq!(h.fake.calls_to(path), 2, "{what}");
}
