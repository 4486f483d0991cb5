//! What the semantic stage may spend on a request: nothing is embedded unless a hit is
//! possible, a long message is exact-cache only, a busy model never holds up a miss, and the
//! questions indexed after their answers go through a bounded queue that drops when full.
//!
//! The tests that hold the model busy give thrifty a model directory of their own (links to
//! the fetched files), so that holding it does not slow the other tests of this binary.

use std::sync::Arc;

use rstest::rstest;
use serde_json::Value;
use thrifty::semantic::embedder::{Embedder, MODEL_FILES};

use crate::common::thrifty::model_dir;
use crate::{Backend, Dialect, NO_HEADERS, QUESTION, WAIT, World, poll};

/// The semantic section of `/admin/cache/stats`.
async fn semantic_stats(w: &World) -> Value {
    let reply = w.api.admin_get("/admin/cache/stats").await;
    reply.assert_ok("cache stats");
    reply.json()["semantic"].clone()
}

fn count(stats: &Value, path: &[&str]) -> u64 {
    let value = path.iter().fold(stats, |v, k| &v[*k]);
    value
        .as_u64()
        .unwrap_or_else(|| panic!("no count at {path:?} in {stats}"))
}

/// A model directory of links to the fetched model, so its embedder is this test's own.
fn private_model_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("thrifty-model-")
        .tempdir()
        .expect("the model directory is created");
    for file in MODEL_FILES {
        std::os::unix::fs::symlink(model_dir().join(file), dir.path().join(file))
            .expect("the model file is linked");
    }
    dir
}

/// A world on the embedded store whose thrifty runs a model of its own; returns it with the
/// model, as thrifty shares it, and the model's directory, removed when the caller drops it.
async fn world_with_own_model(index_queue: usize) -> (World, Arc<Embedder>, tempfile::TempDir) {
    let dir = private_model_dir();
    let model = dir.path().to_path_buf();
    let w = World::start_with(Backend::Embedded, move |raw| {
        raw.semantic.model_dir = Some(model);
        raw.semantic.index_queue = index_queue;
        // The default bound: this model is the test's own, so nothing else keeps it busy.
        raw.semantic.max_wait = thrifty::config::RawSemantic::default().max_wait;
    })
    .await;
    let embedder = Embedder::shared(dir.path()).expect("the model thrifty loaded");
    (w, embedder, dir)
}

/// Waits until `n` questions are indexed and persisted and none waits; returns the stats.
/// (A vector is searchable a moment before it is persisted and counted.)
async fn settled(w: &World, n: u64) -> Value {
    poll(WAIT, &format!("{n} questions indexed"), || async {
        let stats = semantic_stats(w).await;
        (count(&stats, &["indexed"]) == n && count(&stats, &["index_queue"]) == 0).then_some(stats)
    })
    .await
}

/// Waits until `body`'s exact answer is stored.
async fn wait_stored(w: &World, reply: &crate::Reply) {
    let key = reply.key_header();
    poll(WAIT, &format!("entry {key} is stored"), || {
        let key = &key;
        async move { w.api.stored(key).await.then_some(()) }
    })
    .await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_message_is_never_embedded_and_is_still_exact_cached(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{dialect:?}");
    let w = World::start(Backend::Embedded).await;
    // A question in the same conversation is indexed, so a hit would be possible.
    w.api
        .fill(dialect, &dialect.chat(QUESTION, false), &NO_HEADERS)
        .await;
    let before = settled(&w, 1).await;
    let pasted = format!(
        "Please review this log and tell me what went wrong. {}",
        "The worker restarted after the health check failed on port 8080. ".repeat(40)
    );
    let body = dialect.chat(&pasted, false);
    let miss = w.api.ask(dialect, &body, &NO_HEADERS).await;
    miss.assert_cache("miss", &what);
    wait_stored(&w, &miss).await;
    let after = semantic_stats(&w).await;
    assert_eq!(
        count(&after, &["lookups"]),
        count(&before, &["lookups"]),
        "{what}: a long message is not looked up: {after}"
    );
    assert_eq!(
        count(&after, &["skipped", "long"]),
        count(&before, &["skipped", "long"]) + 1,
        "{what}: a long message is counted as skipped: {after}"
    );
    assert_eq!(
        count(&after, &["index_queue"]) + count(&after, &["indexed"]),
        count(&before, &["indexed"]),
        "{what}: a long message is not queued for indexing: {after}"
    );
    let calls = w.fake.calls_to(dialect.chat_path());
    let hit = w.api.ask(dialect, &body, &NO_HEADERS).await;
    hit.assert_cache("hit", &format!("{what}: the same long message again"));
    assert_eq!(
        w.fake.calls_to(dialect.chat_path()),
        calls,
        "{what}: no upstream call"
    );
    assert_eq!(
        count(&semantic_stats(&w).await, &["lookups"]),
        count(&before, &["lookups"]),
        "{what}: an exact hit embeds nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_in_an_empty_partition_is_forwarded_without_embedding() {
    let (w, embedder, _model) = world_with_own_model(64).await;
    let dialect = Dialect::OpenAi;
    let runs = embedder.model_runs();
    let miss = w
        .api
        .ask(dialect, &dialect.chat(QUESTION, false), &NO_HEADERS)
        .await;
    miss.assert_cache("miss", "first question");
    let stats = semantic_stats(&w).await;
    assert_eq!(
        count(&stats, &["lookups"]),
        0,
        "nothing to look up: {stats}"
    );
    assert_eq!(count(&stats, &["skipped", "empty_partition"]), 1, "{stats}");
    // The question is embedded afterwards, in the background, once: that is the only run.
    poll(WAIT, "the question is indexed", || async {
        (count(&semantic_stats(&w).await, &["indexed"]) == 1).then_some(())
    })
    .await;
    assert_eq!(
        embedder.model_runs(),
        runs + 1,
        "one background run indexed it"
    );
    w.paraphrase_hits(dialect, "a paraphrase after the question was indexed")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_model_never_holds_up_a_miss_and_its_answer_is_still_stored() {
    let (w, embedder, _model) = world_with_own_model(64).await;
    let dialect = Dialect::OpenAi;
    w.api
        .fill(dialect, &dialect.chat(QUESTION, false), &NO_HEADERS)
        .await;
    let busy_before = count(&settled(&w, 1).await, &["skipped", "busy"]);
    let held = embedder.hold().await;
    // A paraphrase could hit, but the model cannot start on it: with the model held for as
    // long as the test lasts, an answer at all proves the lookup did not wait for it.
    let body = dialect.chat("What is the way to reset my password?", false);
    let calls = w.fake.calls_to(dialect.chat_path());
    let miss = w.api.ask(dialect, &body, &NO_HEADERS).await;
    miss.assert_cache("miss", "a question while the model is busy");
    assert_eq!(
        w.fake.calls_to(dialect.chat_path()),
        calls + 1,
        "the miss reached the upstream"
    );
    let stats = semantic_stats(&w).await;
    assert_eq!(
        count(&stats, &["skipped", "busy"]),
        busy_before + 1,
        "counted as skipped because busy: {stats}"
    );
    wait_stored(&w, &miss).await;
    let hit = w.api.ask(dialect, &body, &NO_HEADERS).await;
    hit.assert_cache("hit", "the same question, still with the model busy");
    assert_eq!(
        count(&semantic_stats(&w).await, &["indexed"]),
        1,
        "nothing is indexed while the model is held"
    );
    drop(held);
    // Once the model is free, the question answered meanwhile is indexed after all.
    settled(&w, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_index_queue_drops_questions_instead_of_growing() {
    const QUEUE: usize = 2;
    const SENT: u64 = 8;
    let (w, embedder, _model) = world_with_own_model(QUEUE).await;
    let dialect = Dialect::Ollama;
    let held = embedder.hold().await;
    for i in 0..SENT {
        // Each question in a conversation of its own: no lookups, only questions to index.
        let system = format!("You are assistant number {i}.");
        let body = dialect.conversation(
            &[crate::Turn::System(&system), crate::Turn::User(QUESTION)],
            false,
        );
        let miss = w.api.ask(dialect, &body, &NO_HEADERS).await;
        miss.assert_cache("miss", &format!("question {i}"));
        wait_stored(&w, &miss).await;
    }
    let stats = semantic_stats(&w).await;
    assert!(
        count(&stats, &["index_queue"]) <= QUEUE as u64,
        "the queue never holds more than its bound: {stats}"
    );
    // At most one batch taken by the indexer (no more than the queue held) and a full queue.
    let dropped = count(&stats, &["index_dropped"]);
    assert!(
        dropped >= SENT - 2 * QUEUE as u64,
        "questions beyond the bound are dropped: {stats}"
    );
    drop(held);
    poll(WAIT, "every question kept is indexed", || async {
        let stats = semantic_stats(&w).await;
        (count(&stats, &["indexed"]) + count(&stats, &["index_dropped"]) == SENT).then_some(())
    })
    .await;
}
