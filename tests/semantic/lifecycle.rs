//! The semantic index over time and across processes: instances sharing a Redis learn each
//! other's entries, a restarted instance rebuilds its index from the store (so its store must be
//! closed when it stops), an expired answer and admin invalidation take semantic hits and
//! records away, and a Redis outage degrades to the upstream and recovers.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use rstest::rstest;
use serde_json::json;
use thrifty::ManualClock;
use thrifty::semantic::SEMANTIC_PREFIX;

use crate::common::client::Probe;
use crate::world::{ANSWER_PREFIX, EVENTS};
use crate::{Backend, Dialect, NO_HEADERS, PARAPHRASE, QUESTION, WAIT, World, echo, poll};

/// How soon an entry written by one instance must be a semantic hit on another.
const CONVERGENCE: Duration = Duration::from_secs(1);

/// How many times the shutdown race is run per dialect.
const ROUNDS: usize = 3;

/// How many questions are answered just before a shutdown.
const ANSWERED: usize = 10;

/// Waits until Redis holds at least one semantic record; returns when it first saw one.
async fn wait_for_records(probe: &Probe, what: &str) -> Instant {
    poll(
        WAIT,
        &format!("{what}: a semantic record in Redis"),
        || async { (!probe.keys(SEMANTIC_PREFIX).await.is_empty()).then(Instant::now) },
    )
    .await
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_a_redis_converge(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{dialect:?}");
    let w = World::start(Backend::Redis).await;
    let (second, b) = w.another_instance().await;
    let probe = w.probe().await;
    // An instance that is not yet subscribed would only learn of the entry when it next
    // reconciles with the store.
    poll(WAIT, &format!("{what}: both instances listen"), || async {
        (probe.subscribers(EVENTS).await >= 2).then_some(())
    })
    .await;

    let miss = w
        .api
        .ask(dialect, &dialect.chat(QUESTION, false), &NO_HEADERS)
        .await;
    miss.assert_cache("miss", &format!("{what}: instance A"));
    let stored = wait_for_records(&probe, &what).await;
    // Read-only probes: a miss records nothing, so the paraphrase stays a semantic question.
    let read_only = [("cache-control", "no-store")];
    poll(
        CONVERGENCE,
        &format!("{what}: instance B learns A's entry"),
        || async {
            let reply = b
                .ask(dialect, &dialect.chat(PARAPHRASE, false), &read_only)
                .await;
            reply.assert_ok(&what);
            (reply.cache() == "semantic-hit").then_some(())
        },
    )
    .await;
    let converged = stored.elapsed();
    eprintln!("{what}: instance B converged {converged:?} after the record was stored");

    let calls = w.fake.calls_to(dialect.chat_path());
    for stream in [false, true] {
        let hit = b
            .ask(dialect, &dialect.chat(PARAPHRASE, stream), &NO_HEADERS)
            .await;
        hit.assert_cache("semantic-hit", &format!("{what}: instance B"));
        assert!(hit.similarity() >= w.threshold(), "{what}");
        assert_eq!(dialect.text(&hit), echo(QUESTION), "{what}: A's answer");
    }
    assert_eq!(
        w.fake.calls_to(dialect.chat_path()),
        calls,
        "{what}: B never called the upstream for A's question (converged in {converged:?})"
    );

    // Invalidated through A, the entry is no hit on B either.
    assert!(w.api.invalidate(&json!({"all": true})).await >= 1, "{what}");
    let reply = b
        .ask(
            dialect,
            &dialect.chat("How could I reset my password?", false),
            &NO_HEADERS,
        )
        .await;
    reply.assert_cache("miss", &format!("{what}: instance B after invalidation"));
    assert_eq!(
        w.fake.calls_to(dialect.chat_path()),
        calls + 1,
        "{what}: B asked the upstream"
    );
    assert!(second.shutdown(WAIT).await, "{what}: B shuts down");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_thrifty_rebuilds_its_index_from_the_embedded_store(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    restart_rebuilds_the_index(Backend::Embedded, dialect).await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_thrifty_rebuilds_its_index_from_redis(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    restart_rebuilds_the_index(Backend::Redis, dialect).await;
}

/// Fills, restarts thrifty on the same store, and expects the paraphrase to be a semantic hit.
async fn restart_rebuilds_the_index(backend: Backend, dialect: Dialect) {
    let what = format!("{backend:?}/{dialect:?}");
    let mut w = World::start(backend).await;
    let question = dialect.chat(QUESTION, false);
    w.api.fill(dialect, &question, &NO_HEADERS).await;
    if backend == Backend::Redis {
        // A hit proves the question is indexed; its record is written just after.
        wait_for_records(&w.probe().await, &what).await;
    }

    w.restart().await;
    // The index is rebuilt in the background once the server is up.
    w.api
        .wait_indexed(
            dialect,
            &question,
            &NO_HEADERS,
            &format!("{what}: restarted"),
        )
        .await;
    let hit = w
        .paraphrase_hits(dialect, &format!("{what}: after a restart"))
        .await;
    assert_eq!(dialect.text(&hit), echo(QUESTION), "{what}");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thrifty_started_before_redis_rebuilds_its_index_once_redis_is_up(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{dialect:?}");
    let mut w = World::start(Backend::Redis).await;
    let question = dialect.chat(QUESTION, false);
    w.api.fill(dialect, &question, &NO_HEADERS).await;
    let backup = {
        let probe = w.probe().await;
        wait_for_records(&probe, &what).await;
        let mut backup = probe.dump(ANSWER_PREFIX).await;
        backup.extend(probe.dump(SEMANTIC_PREFIX).await);
        backup
    };
    w.stop().await;

    // Thrifty starts while Redis is down, then Redis comes back with its data (from its own
    // persistence in real life, from the test's backup here): nobody announces those
    // entries, so only reading the store can bring them into the index.
    w.change_redis(|redis| redis.stop()).await;
    w.start_again_degraded().await;
    w.change_redis(|redis| redis.restart()).await;
    w.probe().await.restore(&backup).await;
    poll(WAIT, &format!("{what}: thrifty reaches Redis"), || async {
        (w.api.readiness().await == "ready").then_some(())
    })
    .await;
    // The store is whole again: the question itself is an exact hit.
    w.api
        .ask(dialect, &question, &NO_HEADERS)
        .await
        .assert_cache("hit", &format!("{what}: the restored answer"));
    w.api
        .wait_indexed(
            dialect,
            &question,
            &NO_HEADERS,
            &format!("{what}: rebuilt once Redis is up"),
        )
        .await;
    w.paraphrase_hits(dialect, &what).await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_thrifty_has_closed_its_embedded_store(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    for round in 0..ROUNDS {
        let what = format!("{dialect:?} round {round}");
        let mut w = World::start(Backend::Embedded).await;
        // Answered misses just before the shutdown: each is recorded, and its question's
        // vector persisted, by store writes that run after the client has the whole answer.
        let bodies: Vec<_> = (0..ANSWERED)
            .map(|i| dialect.chat(&format!("question number {i}"), false))
            .collect();
        let asked = bodies
            .iter()
            .map(|body| w.api.ask(dialect, body, &NO_HEADERS));
        for reply in join_all(asked).await {
            reply.assert_cache("miss", &what);
        }

        w.shutdown().await;
        let file = w.redb_file();
        let opened = tokio::task::spawn_blocking(move || redb::Database::open(file).map(drop))
            .await
            .expect("open task");
        assert!(
            opened.is_ok(),
            "{what}: `run` returned but the store is still open, so thrifty cannot start \
             again on the same data_dir right away: {opened:?}"
        );
    }
}

/// A world whose answers a test lets expire: with the embedded store, on `clock`; with Redis,
/// which expires keys by its own clock (and thrifty's in-process copies must follow it), on
/// the system's.
async fn expiring_world(backend: Backend, clock: &ManualClock) -> World {
    match backend {
        Backend::Redis => World::start(backend).await,
        Backend::Embedded => World::start_on(backend, clock.clock(), |_| {}).await,
    }
}

/// Waits until the answer `short`, stored with a one-second TTL, has expired. Redis expires it
/// by its own clock, so that takes real time; in the embedded store expiry is thrifty's own
/// decision, so its clock is moved a second on instead.
async fn let_expire(w: &World, clock: &ManualClock, short: &str, what: &str) {
    match w.backend {
        Backend::Redis => {
            poll(WAIT, &format!("{what}: the answer expires"), || async {
                (!w.api.stored(short).await).then_some(())
            })
            .await;
        }
        Backend::Embedded => {
            clock.advance(Duration::from_secs(1));
            assert!(
                !w.api.stored(short).await,
                "{what}: the answer is gone once its TTL has passed"
            );
        }
    }
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_answer_leaves_the_semantic_index(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let clock = ManualClock::now();
    let w = expiring_world(backend, &clock).await;
    let path = dialect.chat_path();
    // A hit renews the answer by its own TTL, so once the fill's probes stop hitting
    // it, it is gone within a second.
    let short_lived = [("x-thrifty-cache-ttl", "1")];
    let miss = w
        .api
        .fill(dialect, &dialect.chat(QUESTION, false), &short_lived)
        .await;
    let answer = miss.key_header();
    let record = match backend {
        Backend::Redis => {
            let probe = w.probe().await;
            wait_for_records(&probe, &what).await;
            let records = probe.keys(SEMANTIC_PREFIX).await;
            assert!(
                records.len() == 1 && records[0].contains(&answer),
                "{what}: one semantic record, for the answer {answer}: {records:?}"
            );
            records.into_iter().next()
        }
        Backend::Embedded => None,
    };

    let_expire(&w, &clock, &answer, &what).await;
    let calls = w.fake.calls_to(path);
    let reply = w
        .api
        .ask(dialect, &dialect.chat(PARAPHRASE, false), &NO_HEADERS)
        .await;
    reply.assert_cache("miss", &format!("{what}: a paraphrase after expiry"));
    assert_eq!(
        dialect.text(&reply),
        echo(PARAPHRASE),
        "{what}: a fresh answer"
    );
    assert_eq!(w.fake.calls_to(path), calls + 1, "{what}: it went upstream");

    if let Some(record) = record {
        // The paraphrase's own answer and record may follow; the expired one's is gone.
        let records = w.probe().await.keys(SEMANTIC_PREFIX).await;
        assert!(
            !records.contains(&record),
            "{what}: the expired answer's semantic record {record} is still in Redis"
        );
    }
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_candidate_serves_when_the_best_has_expired(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let clock = ManualClock::now();
    let w = expiring_world(backend, &clock).await;
    let path = dialect.chat_path();
    // A lasting answer to the paraphrase, then a short-lived one to the question itself
    // (its strict threshold keeps it from being a hit of the first).
    w.api
        .fill(dialect, &dialect.chat(PARAPHRASE, false), &NO_HEADERS)
        .await;
    let short_lived = [
        ("x-thrifty-cache-ttl", "1"),
        ("x-thrifty-semantic-threshold", "0.9999"),
    ];
    let best = w
        .api
        .fill(dialect, &dialect.chat(QUESTION, false), &short_lived)
        .await
        .key_header();
    let_expire(&w, &clock, &best, &what).await;

    let calls = w.fake.calls_to(path);
    let reply = w
        .api
        .ask(dialect, &dialect.chat(QUESTION, false), &NO_HEADERS)
        .await;
    reply.assert_cache("semantic-hit", &format!("{what}: the next candidate"));
    assert_eq!(
        dialect.text(&reply),
        echo(PARAPHRASE),
        "{what}: the paraphrase's answer"
    );
    assert_eq!(
        w.fake.calls_to(path),
        calls,
        "{what}: nothing went upstream"
    );
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidating_everything_ends_semantic_hits(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let w = World::start(backend).await;
    w.api
        .fill(dialect, &dialect.chat(QUESTION, false), &NO_HEADERS)
        .await;
    assert!(
        w.api.invalidate(&json!({"all": true})).await >= 1,
        "{what}: the answer was deleted"
    );
    let calls = w.fake.calls_to(dialect.chat_path());
    let reply = w
        .api
        .ask(dialect, &dialect.chat(PARAPHRASE, false), &NO_HEADERS)
        .await;
    reply.assert_cache("miss", &format!("{what}: after invalidation"));
    assert_eq!(
        dialect.text(&reply),
        echo(PARAPHRASE),
        "{what}: a fresh answer"
    );
    assert_eq!(w.fake.calls_to(dialect.chat_path()), calls + 1, "{what}");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidating_everything_deletes_the_semantic_records(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{dialect:?}");
    let w = World::start(Backend::Redis).await;
    let probe = w.probe().await;
    w.api
        .fill(dialect, &dialect.chat(QUESTION, false), &NO_HEADERS)
        .await;
    wait_for_records(&probe, &what).await;

    w.api.invalidate(&json!({"all": true})).await;
    assert_eq!(
        probe.keys(ANSWER_PREFIX).await,
        Vec::<String>::new(),
        "{what}: no answers are left"
    );
    // The issue asks that "admin invalidation covers semantic entries": the vectors that
    // point at the deleted answers go too, rather than waiting for their TTL.
    assert_eq!(
        probe.keys(SEMANTIC_PREFIX).await,
        Vec::<String>::new(),
        "{what}: no semantic records are left after invalidating everything"
    );
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_serves_from_the_upstream_and_recovers(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{dialect:?}");
    let path = dialect.chat_path();
    let mut w = World::start(Backend::Redis).await;
    w.api
        .fill(dialect, &dialect.chat(QUESTION, false), &NO_HEADERS)
        .await;

    w.change_redis(|redis| redis.stop()).await;
    poll(
        WAIT,
        &format!("{what}: /readyz reports the outage"),
        || async { (w.api.readiness().await == "degraded").then_some(()) },
    )
    .await;
    let calls = w.fake.calls_to(path);
    // The paraphrase's question is still indexed, and the answer it points to was just
    // written, so the hot layer holds it: still a hit.
    let reply = w
        .api
        .ask(dialect, &dialect.chat(PARAPHRASE, false), &NO_HEADERS)
        .await;
    reply.assert_cache(
        "semantic-hit",
        &format!("{what}: a hot answer during the outage"),
    );
    let asked = [("What is the boiling point of water at sea level?", true)];
    for (text, stream) in asked {
        let reply = w
            .api
            .ask(dialect, &dialect.chat(text, stream), &NO_HEADERS)
            .await;
        reply.assert_cache("miss", &format!("{what}: {text:?} during the outage"));
        assert_eq!(
            dialect.text(&reply),
            echo(text),
            "{what}: the upstream's answer"
        );
        if stream {
            dialect.assert_stream_ends(&reply, &what);
        }
    }
    assert_eq!(
        w.fake.calls_to(path),
        calls + asked.len(),
        "{what}: every request went upstream"
    );

    w.change_redis(|redis| redis.restart()).await;
    let question = "What is the capital of France?";
    poll(
        Duration::from_secs(30),
        &format!("{what}: exact caching resumes"),
        || async {
            let reply = w
                .api
                .ask(dialect, &dialect.chat(question, false), &NO_HEADERS)
                .await;
            reply.assert_ok(&what);
            (reply.cache() == "hit").then_some(())
        },
    )
    .await;
    let probe = w.probe().await;
    wait_for_records(&probe, &format!("{what}: after the outage")).await;
    let calls = w.fake.calls_to(path);
    let hit = w
        .api
        .ask(
            dialect,
            &dialect.chat("What's the capital of France?", false),
            &NO_HEADERS,
        )
        .await;
    hit.assert_cache("semantic-hit", &format!("{what}: semantic caching resumes"));
    assert_eq!(dialect.text(&hit), echo(question), "{what}");
    assert_eq!(w.fake.calls_to(path), calls, "{what}");
    assert_eq!(w.api.readiness().await, "ready", "{what}");
}
