//! Strategy 2: summaries created, reused and extended through the store, and the
//! extractive fallback when the summarizer fails or hangs.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::compress::{Summarizer, SummaryFuture, SummaryUse, check_invariants};
use crate::config::{RawCompression, validate_compression};
use crate::store::{EmbeddedStore, Store};

/// A summarizer that numbers its summaries and remembers what it was asked.
#[derive(Default)]
struct Scribe {
    prompts: Mutex<Vec<String>>,
    fail: bool,
    hang: bool,
}

impl Summarizer for Scribe {
    fn summarize<'a>(&'a self, prompt: &'a [Message], _max_tokens: u64) -> SummaryFuture<'a> {
        let mut prompts = self.prompts.lock().expect("lock");
        prompts.push(prompt[1].flat_text());
        let n = prompts.len();
        let (fail, hang) = (self.fail, self.hang);
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            if fail {
                return Err("upstream said no".to_owned());
            }
            Ok((format!("- summary number {n}"), 100u64))
        }) as Pin<Box<dyn Future<Output = _> + Send>>
    }
}

#[test]
fn the_compressor_can_be_shared_and_its_futures_sent() {
    fn shared<T: Send + Sync>(_: &T) {}
    fn sendable<T: Send>(_: T) {}
    let compressor = Compressor::offline(config(2_000, 4));
    shared(&compressor);
    let scribe = Scribe::default();
    let mut request = chat(2);
    sendable(compressor.compress(&mut request, None, Force::Auto, Some(&scribe)));
}

fn store(name: &str) -> (Arc<Store>, PathBuf) {
    let dir = std::env::temp_dir().join(format!("thrifty-compress-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::embedded(
        EmbeddedStore::open(&dir, 1 << 20, crate::clock::Clock::system()).expect("opens"),
        Duration::from_secs(2),
    );
    (store, dir)
}

fn summarize_config() -> CompressionConfig {
    let mut raw = RawCompression {
        max_context_tokens: 3_000,
        preserve_recent_messages: 4,
        strategy: "summarize".to_owned(),
        summarizer_model: Some("llama3.2:3b".to_owned()),
        block_size: 4,
        ..RawCompression::default()
    };
    raw.summarizer_timeout = Duration::from_millis(200);
    validate_compression(raw).expect("valid")
}

#[tokio::test]
async fn summaries_are_created_reused_then_extended() {
    let (store, dir) = store("chain");
    let compressor = Compressor::new(summarize_config(), store, crate::clock::Clock::system());
    let scribe = Scribe::default();
    let mut outcomes = Vec::new();
    let mut prefixes = Vec::new();
    for turns in 20..32 {
        let original = chat(turns);
        let mut compressed = original.clone();
        let outcome = compressor
            .compress(&mut compressed, None, Force::Auto, Some(&scribe))
            .await
            .expect("compressed");
        check_invariants(&original, &compressed, 4, true).expect("valid");
        assert_eq!(outcome.strategy, "summarize");
        prefixes.push(condensed_text(&compressed).expect("condensed"));
        outcomes.push(outcome);
    }
    let uses: Vec<SummaryUse> = outcomes.iter().map(|o| o.summary).collect();
    assert_eq!(uses[0], SummaryUse::Created, "{uses:?}");
    assert!(uses.contains(&SummaryUse::Reused), "{uses:?}");
    assert!(uses.contains(&SummaryUse::Extended), "{uses:?}");
    assert!(!uses[1..].contains(&SummaryUse::Created), "{uses:?}");
    let calls = scribe.prompts.lock().expect("lock").len();
    assert_eq!(
        calls,
        uses.iter().filter(|u| **u != SummaryUse::Reused).count()
    );
    // An extension sends the summary so far and only the newly aged-out messages.
    let prompts = scribe.prompts.lock().expect("lock").clone();
    let extension = &prompts[1];
    assert!(extension.contains("- summary number 1"), "{extension}");
    assert!(!extension.contains("Turn 0:"), "{extension}");
    assert!(prefixes[0].contains("- summary number 1"));
    for (pair, uses) in prefixes.windows(2).zip(uses[1..].iter()) {
        if *uses == SummaryUse::Reused {
            assert_eq!(pair[0], pair[1]);
        }
    }
    let stats = compressor.stats();
    assert_eq!(stats["summaries"]["created"], 1);
    assert!(
        stats["summaries"]["summarizer_tokens"]
            .as_u64()
            .unwrap_or(0)
            >= 200
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_failing_or_hanging_summarizer_falls_back_to_extractive() {
    let (store, dir) = store("fallback");
    let compressor = Compressor::new(summarize_config(), store, crate::clock::Clock::system());
    for scribe in [
        Scribe {
            fail: true,
            ..Scribe::default()
        },
        Scribe {
            hang: true,
            ..Scribe::default()
        },
    ] {
        let original = chat(24);
        let mut compressed = original.clone();
        let outcome = compressor
            .compress(&mut compressed, None, Force::Auto, Some(&scribe))
            .await
            .expect("compressed");
        assert_eq!(outcome.summary, SummaryUse::Failed);
        assert_eq!(outcome.strategy, "extractive");
        assert!(outcome.budget_met);
        check_invariants(&original, &compressed, 4, true).expect("valid");
        assert!(
            condensed_text(&compressed)
                .expect("condensed")
                .contains("Key points")
        );
    }
    assert_eq!(compressor.stats()["summaries"]["failed"], 2);
    // Without a summarizer at hand, the extractive strategy is used quietly.
    let mut compressed = chat(24);
    let outcome = compressor
        .compress(&mut compressed, None, Force::Auto, None)
        .await
        .expect("compressed");
    assert_eq!(outcome.summary, SummaryUse::None);
    let _ = std::fs::remove_dir_all(dir);
}
