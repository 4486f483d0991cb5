//! `thrifty::semantic::eval` on a small labelled pair file, with the real model: the guard only
//! ever takes false hits away.

use std::io::Write;

use thrifty::semantic::embedder::Embedder;
use thrifty::semantic::eval;

use crate::common::thrifty::model_dir;

/// (a, b, same meaning): paraphrases, near-misses the raw threshold lets through, and an
/// unrelated pair.
const PAIRS: [(&str, &str, bool); 7] = [
    (
        "how can I reset my password",
        "How do I reset my password?",
        true,
    ),
    ("Explain what a hash map is", "What is a hash map?", true),
    (
        "What's the capital of France?",
        "What is the capital of France?",
        true,
    ),
    ("turn dark mode off", "turn dark mode on", false),
    (
        "give me 5 ideas for dinner",
        "give me 3 ideas for dinner",
        false,
    ),
    (
        "say good morning in French",
        "say good morning in Spanish",
        false,
    ),
    (
        "What is the boiling point of water at sea level?",
        "How do I reset my password?",
        false,
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_never_lowers_precision() {
    let dir = tempfile::tempdir().expect("a temporary directory for the pair file");
    let path = dir.path().join("pairs.jsonl");
    let mut file = std::fs::File::create(&path).expect("create the pair file");
    for (a, b, same) in PAIRS {
        let line = serde_json::json!({"a": a, "b": b, "label": u8::from(same)});
        writeln!(file, "{line}").expect("write a pair");
    }
    drop(file);

    let embedder = Embedder::shared(&model_dir()).expect("the model loads");
    let scores = eval::score(&embedder, &path)
        .await
        .expect("the pairs score");
    assert_eq!(scores.len(), PAIRS.len(), "one score per pair");
    for (scored, (a, b, label)) in scores.iter().zip(PAIRS) {
        assert_eq!(scored.same, label, "{a:?} / {b:?}: the label is read back");
        assert_eq!((scored.a.as_str(), scored.b.as_str()), (a, b), "the texts");
        let similarity = scored.similarity;
        assert!(
            (-1.0001..=1.0001).contains(&similarity),
            "{a:?} / {b:?}: cosine {similarity}"
        );
    }

    let rows = eval::sweep(&scores, &eval::thresholds());
    assert!(!rows.is_empty(), "the sweep has rows");
    for row in &rows {
        let t = row.threshold;
        assert!(
            row.guarded.precision() >= row.raw.precision(),
            "at {t}: guarded precision {} below raw {}",
            row.guarded.precision(),
            row.raw.precision()
        );
        assert!(
            row.guarded.recall() <= row.raw.recall(),
            "at {t}: the guard only takes hits away"
        );
        assert_eq!(row.raw.same, 3, "at {t}: three pairs mean the same");
    }
    let at = |t: f32| {
        rows.iter()
            .find(|r| (r.threshold - t).abs() < 1e-6)
            .unwrap_or_else(|| panic!("the sweep has a row at {t}"))
    };
    let row = at(0.90);
    assert!(
        row.raw.served_different >= 2,
        "at 0.90 the raw cosine serves the on/off and 3/5 near-misses: {row:?}"
    );
    assert_eq!(
        row.guarded.served_different, 0,
        "the guard stops them: {row:?}"
    );
    assert!(
        row.guarded.precision() > row.raw.precision(),
        "the guard raises precision at 0.90: {row:?}"
    );
    assert!(
        row.guarded.served_same >= 1,
        "the guard keeps paraphrases at 0.90: {row:?}"
    );
}
