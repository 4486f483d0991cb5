//! The cache across failures and restarts: a Redis outage degrades to uncached serving, and a
//! restarted thrifty finds what it cached before.

use std::time::Duration;

use rstest::rstest;

use crate::{ANSWER_PREFIX, Backend, Dialect, Harness, Kind, NO_HEADERS, Probe, WAIT, poll};

/// Stops or restarts the harness's Redis off the async runtime (both poll with blocking sleeps).
async fn with_redis(h: &mut Harness, change: fn(&mut crate::common::redis::RedisServer)) {
    let mut redis = h.redis.take().expect("a Redis harness");
    let redis = tokio::task::spawn_blocking(move || {
        change(&mut redis);
        redis
    })
    .await
    .expect("redis task");
    h.redis = Some(redis);
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_serves_uncached_and_recovers(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{dialect:?}");
    let mut h = Harness::start(Backend::Redis).await;
    let path = dialect.chat_path();
    let body = dialect.chat("survive the outage", false);
    h.api.fill(path, &body, &NO_HEADERS).await;
    h.api.send(path, &body).await.assert_cache("hit", &what);
    assert_eq!(h.api.readiness().await, "ready", "{what}");

    with_redis(&mut h, |redis| redis.stop()).await;
    poll(
        WAIT,
        &format!("{what}: /readyz reports the outage"),
        || async { (h.api.readiness().await == "degraded").then_some(()) },
    )
    .await;
    // The answer read before the outage is still served from the hot layer.
    h.api
        .send(path, &body)
        .await
        .assert_cache("hit", &format!("{what}: a hot answer during the outage"));
    // Each request asks something new: an identical request could follow the previous one's
    // answer while that answer's write to the missing Redis is still timing out.
    let mut asked = Vec::new();
    for i in 0..2 {
        for stream in [false, true] {
            asked.push((format!("outage question {i} {stream}"), stream));
        }
    }
    for (text, stream) in &asked {
        let reply = h.api.send(path, &dialect.chat(text, *stream)).await;
        reply.assert_cache("miss", &format!("{what}: {text:?} during the outage"));
        assert_eq!(
            dialect.text(Kind::Chat, &reply),
            Dialect::echo(text),
            "{what}"
        );
        if *stream {
            dialect.assert_stream_ends(&reply, &what);
        }
    }
    assert_eq!(
        h.fake.calls_to(path),
        1 + asked.len(),
        "{what}: every request went upstream"
    );

    with_redis(&mut h, |redis| redis.restart()).await;
    let url = h.redis.as_ref().expect("redis").url();
    // A new question asked twice: the second is a hit stored in the new Redis (the one
    // asked before the outage may still be answered from the hot layer, which does not
    // write it back).
    let round = std::sync::atomic::AtomicUsize::new(0);
    poll(
        Duration::from_secs(30),
        &format!("{what}: caching resumes"),
        || async {
            let n = round.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let body = dialect.chat(&format!("asked after the outage {n}"), false);
            h.api.send(path, &body).await.assert_ok(&what);
            let reply = h.api.send(path, &body).await;
            reply.assert_ok(&what);
            let prefix = format!("{ANSWER_PREFIX}{}", reply.key());
            let in_redis = Probe::connect(&url, WAIT)
                .await
                .keys()
                .await
                .iter()
                .any(|k| k.starts_with(&prefix));
            (reply.cache() == "hit" && in_redis).then_some(())
        },
    )
    .await;
    assert_eq!(h.api.readiness().await, "ready", "{what}");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_thrifty_keeps_its_cache(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let mut h = Harness::start(backend).await;
    let requests = [
        (dialect.chat_path(), dialect.chat("remember me", false)),
        (
            dialect.chat_path(),
            dialect.chat("remember my stream", true),
        ),
        (
            dialect.path(Kind::Completion),
            dialect.request(Kind::Completion, "and me", false),
        ),
    ];
    for (path, body) in &requests {
        h.api.fill(path, body, &NO_HEADERS).await;
    }
    let embed = dialect.embed(&["remember this vector"]);
    h.api
        .send(dialect.embed_path(), &embed)
        .await
        .assert_cache("miss", &what);
    let calls = h.fake.calls();

    h.restart_with(&[]).await;
    for (path, body) in &requests {
        h.api
            .send(path, body)
            .await
            .assert_cache("hit", &format!("{what}: {path} after a restart"));
    }
    h.api
        .send(dialect.embed_path(), &embed)
        .await
        .assert_cache("hit", &format!("{what}: embedding after a restart"));
    assert_eq!(h.fake.calls(), calls, "{what}: nothing went upstream again");
}

/// A frozen Redis (every command hangs) costs the first few requests one store timeout each;
/// then the store is skipped, so requests go at the upstream's pace, `/readyz` says `degraded`
/// at once, and caching resumes by itself once Redis answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_is_skipped_until_it_answers_again() {
    const TIMEOUT: Duration = Duration::from_millis(100);
    const REQUESTS: u32 = 40;
    let dialect = Dialect::OpenAi;
    let what = "frozen redis";
    let h = Harness::setup(Backend::Redis)
        .config(|raw| {
            raw.store.timeout = TIMEOUT;
            raw.store.breaker_backoff = Duration::from_millis(200);
        })
        .start()
        .await;
    let path = dialect.chat_path();
    let body = dialect.chat("ask me while redis sleeps", false);
    h.api.fill(path, &body, &NO_HEADERS).await;
    h.api.send(path, &body).await.assert_cache("hit", what);

    h.redis.as_ref().expect("redis").freeze();
    let started = std::time::Instant::now();
    for i in 0..REQUESTS {
        let text = format!("frozen question {i}");
        let reply = h.api.send(path, &dialect.chat(&text, false)).await;
        reply.assert_cache("miss", &format!("{what}: {text}"));
        assert_eq!(dialect.text(Kind::Chat, &reply), Dialect::echo(&text));
    }
    let elapsed = started.elapsed();
    // Waiting out the timeout on every request would take REQUESTS × TIMEOUT (4 s).
    assert!(
        elapsed < TIMEOUT * REQUESTS / 4,
        "{what}: {REQUESTS} requests took {elapsed:?}: they waited for the frozen store"
    );
    let mut fastest = Duration::MAX;
    for _ in 0..3 {
        let asked = std::time::Instant::now();
        assert_eq!(h.api.readiness().await, "degraded", "{what}");
        fastest = fastest.min(asked.elapsed());
    }
    assert!(
        fastest < TIMEOUT,
        "{what}: /readyz took {fastest:?}: it waited for the frozen store"
    );

    h.redis.as_ref().expect("redis").thaw();
    // A new question asked twice: the second is a hit once the first could be stored (the
    // question asked before the freeze may still be answered from the hot layer).
    let round = std::sync::atomic::AtomicUsize::new(0);
    poll(WAIT, &format!("{what}: caching resumes"), || async {
        let n = round.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body = dialect.chat(&format!("asked while thawing {n}"), false);
        h.api.send(path, &body).await.assert_ok(what);
        let again = h.api.send(path, &body).await;
        again.assert_ok(what);
        (again.cache() == "hit").then_some(())
    })
    .await;
    // The breaker's probe, on its own back-off, says so too.
    poll(WAIT, &format!("{what}: /readyz is ready again"), || async {
        (h.api.readiness().await == "ready").then_some(())
    })
    .await;
    let text = "asked after the thaw";
    h.api
        .fill(path, &dialect.chat(text, false), &NO_HEADERS)
        .await;
    h.api
        .send(path, &dialect.chat(text, false))
        .await
        .assert_cache("hit", &format!("{what}: new answers are stored again"));
}
