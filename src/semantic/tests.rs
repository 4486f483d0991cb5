//! Unit tests of the semantic cache over the real model (from `THRIFTY_EMBED_DIR`; a missing
//! model fails, it never skips) and an embedded store: which candidates a lookup offers, and in
//! what order.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::RawConfig;
use crate::store::{EmbeddedStore, Store};

/// The partition every question here is asked in.
const PARTITION: &str = "p";

/// A semantic cache over a fresh embedded store, with the default config and the fetched model.
fn semantic_cache() -> Arc<SemanticCache> {
    let model_dir = std::env::var("THRIFTY_EMBED_DIR").expect(
        "THRIFTY_EMBED_DIR is not set: run ./scripts/test.sh, which fetches the embedding model",
    );
    let env = |name: &str| (name == "THRIFTY_EMBED_DIR").then(|| model_dir.clone());
    let config = RawConfig::default()
        .validate(&env)
        .expect("the default config is valid");
    let store = EmbeddedStore::scratch("semantic", crate::clock::Clock::system());
    let cache = Cache::new(
        &config.cache,
        Store::embedded(store, Duration::from_secs(5)),
        crate::clock::Clock::system(),
    );
    SemanticCache::load(&config.semantic, cache).unwrap_or_else(|| {
        panic!("no embedding model in {model_dir}: run scripts/fetch-model-assets.sh")
    })
}

/// `text` embedded by the real model, as a question in [`PARTITION`].
async fn query(semantic: &SemanticCache, text: &str) -> Query {
    Query {
        partition: PARTITION.to_owned(),
        text: text.to_owned(),
        vector: match semantic.embedder.embed(text, Duration::from_secs(60)).await {
            embedder::Embedded::Vector(v) => v,
            other => panic!("the model did not embed {text:?}: {other:?}"),
        },
    }
}

/// Records `text` as the question whose answer is the entry `answer`.
async fn remember(semantic: &SemanticCache, text: &str, answer: &str) {
    let question = query(semantic, text).await;
    semantic
        .remember(
            question,
            CacheKey(answer.to_owned()),
            Duration::from_secs(60),
        )
        .await;
}

/// The answers of `hits`, in order.
fn answers(hits: &[Hit]) -> Vec<&str> {
    hits.iter().map(|h| h.answer.0.as_str()).collect()
}

#[tokio::test]
async fn candidates_are_guarded_hits_best_first_and_the_next_serves_when_the_best_is_gone() {
    let semantic = semantic_cache();
    remember(&semantic, "How do I reset my password?", "best").await;
    remember(&semantic, "how can I reset my password", "next").await;
    remember(&semantic, "turn dark mode on", "unrelated").await;
    let asked = query(&semantic, "How do I reset my password").await;

    let hits = semantic.candidates(&asked, None, 4);
    assert_eq!(
        answers(&hits),
        ["best", "next"],
        "both paraphrases, best first"
    );
    assert!(
        hits[0].similarity > hits[1].similarity && hits[1].similarity >= semantic.config.threshold,
        "similarities {} then {}, threshold {}",
        hits[0].similarity,
        hits[1].similarity,
        semantic.config.threshold
    );
    assert_eq!(hits[0].question, "How do I reset my password?");
    assert_eq!(answers(&semantic.candidates(&asked, None, 1)), ["best"]);
    assert!(semantic.candidates(&asked, None, 0).is_empty(), "limit 0");

    semantic.forget(PARTITION, "best").await;
    assert_eq!(
        answers(&semantic.candidates(&asked, None, 4)),
        ["next"],
        "the best answer is gone, the next one serves"
    );
    assert_eq!(
        semantic
            .cache
            .store()
            .keys(SEMANTIC_PREFIX)
            .await
            .ok()
            .map(|k| k.len()),
        Some(2),
        "the forgotten question's record left the store"
    );
}

#[tokio::test]
async fn candidates_skip_near_misses_without_spending_the_limit() {
    let semantic = semantic_cache();
    // Both above the threshold (cosine 0.945 and 0.932); the closer one differs in its number,
    // which the guard rejects.
    remember(&semantic, "give me 3 ideas for dinner", "three").await;
    remember(&semantic, "what are 5 ideas for dinner", "five").await;
    let asked = query(&semantic, "give me 5 ideas for dinner").await;
    let raw = semantic
        .index
        .search(PARTITION, &asked.vector, semantic.config.threshold, 4);
    let ranked: Vec<(&str, f32)> = raw
        .iter()
        .map(|c| (c.item.answer.as_str(), c.similarity))
        .collect();
    assert_eq!(
        ranked.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
        ["three", "five"],
        "the near-miss ranks first on similarity alone: {ranked:?}"
    );

    for limit in [1, 4] {
        let hits = semantic.candidates(&asked, None, limit);
        assert_eq!(
            answers(&hits),
            ["five"],
            "limit {limit}: the guard passed over {ranked:?}"
        );
    }
}

#[tokio::test]
async fn a_requested_threshold_only_narrows_the_candidates() {
    let semantic = semantic_cache();
    remember(&semantic, "How do I reset my password?", "question").await;
    // Cosine 0.980 with the recorded question.
    let asked = query(&semantic, "how can I reset my password").await;
    assert_eq!(
        answers(&semantic.candidates(&asked, Some(0.5), 4)),
        ["question"]
    );
    assert!(semantic.candidates(&asked, Some(0.999), 4).is_empty());
}

#[tokio::test]
async fn records_of_another_model_are_left_out_of_the_index() {
    let semantic = semantic_cache();
    let text = "How do I reset my password?";
    let asked = query(&semantic, text).await;
    // The same vector three times: as this model's, as another model's, and as a record
    // written before records named their model.
    let ours = semantic.embedder.model().to_owned();
    assert_eq!(
        ours.len(),
        16,
        "the model is named by its file's digest: {ours:?}"
    );
    for (answer, model) in [
        ("ours", Some(ours.as_str())),
        ("theirs", THEIRS),
        ("unnamed", None),
    ] {
        store_record(&semantic, answer, text, &asked.vector, 1, model).await;
    }
    assert!(semantic.reconcile().await, "the store answered");
    assert_eq!(
        semantic.index.entries(),
        [(PARTITION.to_owned(), "ours".to_owned())],
        "only this model's vector is compared"
    );
    assert_eq!(answers(&semantic.candidates(&asked, None, 4)), ["ours"]);
}

/// Stores a semantic record as `model` wrote it (`None`: written before records named their
/// model): `vector` for `text`, made at `created_ms`.
async fn store_record(
    semantic: &SemanticCache,
    answer: &str,
    text: &str,
    vector: &[f32],
    created_ms: u64,
    model: Option<&str>,
) {
    let mut record = serde_json::json!({
        "partition": PARTITION,
        "answer": answer,
        "text": text,
        "vector": vector,
        "created_ms": created_ms,
    });
    if let Some(model) = model {
        record["model"] = model.into();
    }
    let raw = semantic.cache.sealer().seal(&record).expect("sealed");
    semantic
        .cache
        .store()
        .put(
            &record_key(PARTITION, answer),
            raw,
            Duration::from_secs(600),
        )
        .await
        .expect("stored");
}

/// Another model's name, as a record it wrote carries it.
const THEIRS: Option<&str> = Some("0123456789abcdef");

#[tokio::test]
async fn records_of_another_model_are_embedded_again_and_rejoin_the_index() {
    let semantic = semantic_cache();
    let text = "How do I reset my password?";
    let asked = query(&semantic, text).await;
    // The other model's vector is this model's vector of a different text: kept as it was,
    // the question would not be found.
    let elsewhere = query(&semantic, "What is the tallest mountain in Africa?").await;
    let now = semantic.cache.clock().now_ms();
    store_record(&semantic, "renewed", text, &elsewhere.vector, now, THEIRS).await;
    store_record(&semantic, "deleted", text, &elsewhere.vector, now, THEIRS).await;
    let max_ttl = semantic.cache.config().max_ttl.as_millis() as u64;
    let aged = now - max_ttl - 1;
    store_record(&semantic, "aged", text, &elsewhere.vector, aged, THEIRS).await;
    assert!(semantic.reconcile().await, "the store answered");
    assert!(
        semantic.index.entries().is_empty(),
        "no foreign vector is indexed"
    );
    // Deleted after the reconcile found it: the renewal must not bring it back.
    let deleted = record_key(PARTITION, "deleted");
    semantic
        .cache
        .store()
        .delete(std::slice::from_ref(&deleted))
        .await
        .expect("deleted");
    assert_eq!(
        semantic.renew().await,
        1,
        "only the live record with time left"
    );

    assert_eq!(
        semantic.index.entries(),
        [(PARTITION.to_owned(), "renewed".to_owned())]
    );
    let hits = semantic.candidates(&asked, None, 4);
    assert_eq!(answers(&hits), ["renewed"]);
    assert!(
        hits[0].similarity > 0.999,
        "this model's vector of its text"
    );
    let raw = semantic
        .cache
        .store()
        .get(&record_key(PARTITION, "renewed"))
        .await
        .expect("read")
        .expect("still stored");
    let stored: Record = semantic.cache.sealer().open(&raw).expect("opens");
    assert_eq!(stored.model, semantic.embedder.model());
    assert_eq!(
        stored.vector,
        asked.vector.as_slice(),
        "the stored vector is renewed too"
    );
    assert_eq!(stored.created_ms, now, "it keeps its age");
    assert!(
        semantic
            .cache
            .store()
            .get(&deleted)
            .await
            .expect("read")
            .is_none(),
        "a record deleted meanwhile stays deleted"
    );
    assert_eq!(semantic.stats.counters()["renewed"], 1);
    // A later reconcile finds nothing left to renew.
    assert!(semantic.reconcile().await);
    assert_eq!(semantic.renew().await, 0);
}
