//! Unit tests of single flight over a real embedded store: what a call joining a leader's
//! flight gets, depending on how far the leader's answer has come.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::json;

use super::*;
use crate::chat::Endpoint;
use crate::config::RawConfig;
use crate::store::{EmbeddedStore, Store};

/// A cache over a fresh embedded store, with the default config.
fn cache() -> Arc<Cache> {
    let config = RawConfig::default()
        .validate(&|_| None)
        .expect("the default config is valid");
    let store = EmbeddedStore::scratch("flight", Clock::system());
    Cache::new(
        &config.cache,
        Store::embedded(store, Duration::from_secs(5)),
        Clock::system(),
    )
}

fn streamed_chat() -> (Arc<Call>, Arc<Plan>, Arc<Cache>) {
    let body = json!({"model": "m", "stream": true,
        "messages": [{"role": "user", "content": "Why is the sky blue?"}]});
    let call = dialect::decode(Dialect::Ollama, Endpoint::Chat, body.to_string().as_bytes())
        .expect("a valid chat");
    let cache = cache();
    // What a request without cache headers gets.
    let controls = Controls::from_headers(&http::HeaderMap::new()).expect("no headers is valid");
    let plan = cache.plan(Dialect::Ollama, "http://upstream", "t", &call, controls);
    (Arc::new(call), Arc::new(plan), cache)
}

/// The first call's lookup: it leads, and its streamed answer (with usage) has begun.
async fn lead(cache: &Arc<Cache>, plan: &Plan, call: &Call) -> Flight {
    let Lookup::Miss {
        flight: Some(flight),
        ..
    } = cache.lookup(plan, call).await
    else {
        panic!("the first call leads");
    };
    flight.feed().start(feed::Start {
        streamed: true,
        has_usage: true,
    });
    flight
}

/// The leader's streamed answer, as the upstream sent it.
fn chunks() -> Vec<serde_json::Value> {
    let at = "2026-01-01T00:00:00Z";
    vec![
        json!({"model": "m", "created_at": at, "message": {"role": "assistant", "content": "Light"}, "done": false}),
        json!({"model": "m", "created_at": at, "message": {"role": "assistant", "content": ""},
            "done": true, "done_reason": "stop", "prompt_eval_count": 9, "eval_count": 1}),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_joining_after_the_leaders_answer_ended_gets_the_replay_not_the_feed() {
    let (call, plan, cache) = streamed_chat();
    let flight = lead(&cache, &plan, &call).await;
    let feed = flight.feed().clone();
    let lines: String = chunks().iter().map(|c| format!("{c}\n")).collect();
    let answer = feed::Fanout::new(
        Full::new(Bytes::from(lines))
            .map_err(|never| match never {})
            .boxed_unsync(),
        feed.clone(),
    );
    // The answer's one frame says the body has ended: the feed ends with it, as hyper polls
    // no further.
    let mut answer = std::pin::pin!(answer);
    let frame = answer.frame().await.expect("a frame").expect("no error");
    assert!(frame.data_ref().is_some());
    assert!(
        feed.ended_whole(),
        "the feed ends with the answer's last frame"
    );

    // The answer is whole but not yet recorded: a call now waits for the record.
    let joiner = {
        let (cache, plan, call) = (cache.clone(), plan.clone(), call.clone());
        tokio::spawn(async move { cache.lookup(&plan, &call).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !joiner.is_finished(),
        "it neither follows the feed nor goes upstream"
    );

    let entry = Arc::new(cache.entry_for(&plan, &call, entry::Answer::Stream(chunks())));
    flight.finish(Some(entry.clone()));
    match joiner.await.expect("the lookup ends") {
        Lookup::Hit { entry: got, .. } => assert!(Arc::ptr_eq(&got, &entry)),
        Lookup::Follow { .. } => panic!("it followed an answer that had ended"),
        Lookup::Miss { .. } => panic!("it went upstream"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_joining_while_the_leaders_answer_comes_follows_it() {
    let (call, plan, cache) = streamed_chat();
    let flight = lead(&cache, &plan, &call).await;
    let joined = tokio::time::timeout(Duration::from_secs(5), cache.lookup(&plan, &call))
        .await
        .expect("a live answer is followed at once");
    assert!(
        matches!(joined, Lookup::Follow { .. }),
        "it follows the feed"
    );
    drop(flight);
}
