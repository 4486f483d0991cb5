//! Which answers a shared Redis holds, known in each instance's memory: a new question's
//! lookup reads nothing from Redis, while an answer stored before the instance started, or
//! through another instance, or while its subscription was down, is still a hit.

use std::time::Duration;

use serde_json::Value;

use crate::common::client::start_thrifty;
use crate::common::redis::Monitor;
use crate::{ANSWER_PREFIX, Api, Backend, Dialect, Harness, NO_HEADERS, WAIT, poll};

/// The instance's `known_answers` stats once a walk of the answer keys has ended after
/// `walks` earlier ones.
async fn known_after(api: &Api, walks: u64) -> Value {
    poll(WAIT, "the answers Redis holds are known", || async {
        let known = api.stats().await["known_answers"].clone();
        (known["ready"] == true && known["walks"].as_u64().is_some_and(|n| n > walks))
            .then_some(known)
    })
    .await
}

/// `b` answers `body` from the cache, and the upstream still has only the `calls` the first
/// instance made.
async fn hit_without_upstream(h: &Harness, b: &Api, path: &str, body: &Value, calls: usize) {
    let what = body.to_string();
    b.send(path, body).await.assert_cache("hit", &what);
    assert_eq!(h.fake.calls_to(path), calls, "no upstream call for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_question_reads_nothing_from_redis() {
    let h = Harness::start(Backend::Redis).await;
    known_after(&h.api, 0).await;
    let monitor = Monitor::start(h.redis.as_ref().expect("Redis").port());
    for dialect in [Dialect::OpenAi, Dialect::Ollama] {
        for n in 0..10 {
            let body = dialect.chat(&format!("a question never asked before, {n}"), false);
            let reply = h.api.send(dialect.chat_path(), &body).await;
            reply.assert_cache("miss", &format!("{dialect:?} {n}"));
        }
    }
    assert_eq!(h.fake.calls(), 20, "every miss went upstream");
    let on_answers = |command: &str| {
        let on = format!("\"{command}\" \"{ANSWER_PREFIX}");
        let commands = monitor.commands();
        commands.iter().filter(|line| line.contains(&on)).count()
    };
    poll(WAIT, "every answer is stored", || async {
        (on_answers("SET") == 20).then_some(())
    })
    .await;
    assert_eq!(
        on_answers("GET"),
        0,
        "no lookup read Redis: {:#?}",
        monitor.commands()
    );
    let known = h.api.stats().await["known_answers"].clone();
    assert_eq!(
        known["answers"], 20,
        "the answers written are known: {known}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_stored_before_an_instance_started_or_through_another_are_hits_on_it() {
    let h = Harness::start(Backend::Redis).await;
    let dialect = Dialect::OpenAi;
    let path = dialect.chat_path();
    let earlier = dialect.chat("stored before the second instance started", false);
    h.api.fill(path, &earlier, &NO_HEADERS).await;

    let other = start_thrifty(h.raw.clone(), &h.vars, WAIT).await;
    let b = Api::new(other.url(), WAIT);
    let known = known_after(&b, 0).await;
    assert_eq!(
        known["answers"], 1,
        "its walk found the stored answer: {known}"
    );
    b.send(path, &earlier)
        .await
        .assert_cache("hit", "stored before");

    // Another instance's write is announced; the second hears of it.
    let later = dialect.chat("stored through the first instance", false);
    h.api.fill(path, &later, &NO_HEADERS).await;
    poll(
        Duration::from_secs(5),
        "the announcement is heard",
        || async {
            let known = b.stats().await["known_answers"].clone();
            (known["answers"] == 2).then_some(())
        },
    )
    .await;
    hit_without_upstream(&h, &b, path, &later, 2).await;
    drop(other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_stored_while_the_subscription_was_down_is_a_hit_once_it_is_back() {
    let h = Harness::start(Backend::Redis).await;
    let other = start_thrifty(h.raw.clone(), &h.vars, WAIT).await;
    let b = Api::new(other.url(), WAIT);
    known_after(&h.api, 0).await;
    let walks = known_after(&b, 0).await["walks"].as_u64().expect("a count");

    // Both instances' subscriptions go; the write's announcement reaches nobody.
    let probe = h.probe().await;
    let killed: i64 = probe
        .query(redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub"))
        .await;
    assert!(killed >= 2, "both instances were subscribed: {killed}");
    let dialect = Dialect::Ollama;
    let path = dialect.chat_path();
    let unheard = dialect.chat("stored while nobody listened", false);
    h.api.fill(path, &unheard, &NO_HEADERS).await;

    known_after(&b, walks).await;
    hit_without_upstream(&h, &b, path, &unheard, 1).await;
    drop(other);
}

/// A subscriber that falls behind by more than the backlog hears its subscription lost (what
/// it missed must be made up for), then subscribed again; its backlog never grows beyond that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_behind_hears_its_subscription_lost() {
    use thrifty::store::{Heard, RedisStore};
    let redis = crate::start_redis().await;
    let store = RedisStore::connect(&redis.url(), false, Duration::from_secs(2)).expect("a store");
    let mut heard = store.subscribe("thrifty:v1:test:events");
    assert_eq!(heard.recv().await, Some(Heard::Subscribed));
    let probe = crate::Probe::connect(&redis.url(), WAIT).await;
    const SENT: usize = 5_000;
    for n in 0..SENT {
        let _: i64 = probe
            .query(redis::cmd("PUBLISH").arg("thrifty:v1:test:events").arg(n))
            .await;
    }
    let mut messages = 0;
    loop {
        match tokio::time::timeout(WAIT, heard.recv())
            .await
            .expect("heard in time")
        {
            Some(Heard::Message(_)) => messages += 1,
            Some(Heard::Lost) => break,
            other => panic!("{other:?} after {messages} messages"),
        }
    }
    assert!(
        (1..SENT).contains(&messages),
        "the backlog was bounded: {messages} of {SENT} delivered before the loss"
    );
    assert_eq!(
        tokio::time::timeout(WAIT, heard.recv())
            .await
            .expect("in time"),
        Some(Heard::Subscribed),
        "subscribed again"
    );
}
