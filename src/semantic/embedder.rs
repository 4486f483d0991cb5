//! Local text embeddings: all-MiniLM-L6-v2 through fastembed, with ONNX Runtime
//! loaded dynamically from the model directory.
//!
//! The model runs on one dedicated OS thread (its `embed` takes `&mut self`),
//! with one helper for its matrix products, never on the async executor.
//! Queries that arrive while it is busy are embedded together in one batch, and
//! recent query vectors are kept in a bounded in-memory cache (moka).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use fastembed::{
    InitOptionsUserDefined, Pooling, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel,
};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

/// The vector length of all-MiniLM-L6-v2.
pub const DIMENSIONS: usize = 384;

/// The most queries embedded in one batch.
const MAX_BATCH: usize = 32;

/// Threads one inference may use. On two cores, two threads took a semantic hit from 6.0 to
/// 4.2 ms (p50) for a fifth more CPU per query; more buy little for a dozen tokens. Idle helper
/// threads sleep rather than spin: spinning doubled the CPU and, on a busy machine, the latency.
const INTRA_THREADS: usize = 2;

/// Recent query vectors kept in memory.
const QUERY_CACHE: u64 = 10_000;

/// The files a model directory must hold.
pub const MODEL_FILES: [&str; 6] = [
    "model.onnx",
    "tokenizer.json",
    "config.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
    "libonnxruntime.so",
];

type Job = (String, oneshot::Sender<Option<Arc<Vec<f32>>>>);

pub struct Embedder {
    jobs: mpsc::UnboundedSender<Job>,
    recent: moka::sync::Cache<String, Arc<Vec<f32>>>,
    /// How many times the model has run (each run embeds one batch).
    runs: Arc<AtomicU64>,
}

/// ONNX Runtime allows one environment per process; it is created once and kept.
static ORT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// Loaded embedders by model directory, so several servers in one process share one model.
static LOADED: OnceLock<Mutex<HashMap<PathBuf, Arc<Embedder>>>> = OnceLock::new();

fn environment(library: &Path) -> Result<ort::environment::Environment, String> {
    ORT.get_or_init(|| {
        ort::init_from(library)
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", library.display()))?
            .with_name("thrifty")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime: {e}"))
    })
    .clone()
}

fn load_model(dir: &Path) -> Result<TextEmbedding, String> {
    for file in MODEL_FILES {
        if !dir.join(file).is_file() {
            return Err(format!(
                "{} is missing: run scripts/fetch-model-assets.sh",
                dir.join(file).display()
            ));
        }
    }
    let env = environment(&dir.join("libonnxruntime.so"))?;
    let read =
        |name: &str| std::fs::read(dir.join(name)).map_err(|e| format!("cannot read {name}: {e}"));
    let tokenizer = TokenizerFiles {
        tokenizer_file: read("tokenizer.json")?,
        config_file: read("config.json")?,
        special_tokens_map_file: read("special_tokens_map.json")?,
        tokenizer_config_file: read("tokenizer_config.json")?,
    };
    let model =
        UserDefinedEmbeddingModel::new(read("model.onnx")?, tokenizer).with_pooling(Pooling::Mean);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(INTRA_THREADS));
    let options = InitOptionsUserDefined::new()
        .with_environment(env)
        .with_intra_threads(threads)
        .with_session_config("session.intra_op.allow_spinning", "0")
        .with_max_length(256);
    TextEmbedding::try_new_from_user_defined(model, options)
        .map_err(|e| format!("cannot load the embedding model: {e}"))
}

impl Embedder {
    /// The embedder for a model directory, loading it on first use.
    pub fn shared(dir: &Path) -> Result<Arc<Embedder>, String> {
        let loaded = LOADED.get_or_init(|| Mutex::new(HashMap::new()));
        if let Some(e) = loaded.lock().get(dir) {
            return Ok(e.clone());
        }
        let embedder = Arc::new(Embedder::load(dir)?);
        loaded.lock().insert(dir.to_owned(), embedder.clone());
        Ok(embedder)
    }

    fn load(dir: &Path) -> Result<Embedder, String> {
        let mut model = load_model(dir)?;
        let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
        let runs = Arc::new(AtomicU64::new(0));
        let counted = runs.clone();
        std::thread::Builder::new()
            .name("thrifty-embed".to_owned())
            .spawn(move || {
                while let Some(first) = queue.blocking_recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match queue.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    let texts: Vec<&str> = batch.iter().map(|(t, _)| t.as_str()).collect();
                    let vectors = model.embed(&texts, Some(MAX_BATCH)).ok();
                    counted.fetch_add(1, Ordering::Relaxed);
                    for (i, (_, reply)) in batch.into_iter().enumerate() {
                        let vector = vectors
                            .as_ref()
                            .and_then(|v| v.get(i))
                            .map(|v| Arc::new(v.clone()));
                        let _ = reply.send(vector);
                    }
                }
            })
            .map_err(|e| format!("cannot start the embedding thread: {e}"))?;
        Ok(Embedder {
            jobs,
            recent: moka::sync::Cache::new(QUERY_CACHE),
            runs,
        })
    }

    /// How many batches the model has embedded since it was loaded.
    pub fn model_runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// The L2-normalised embedding of a text; `None` if the model failed.
    pub async fn embed(&self, text: &str) -> Option<Arc<Vec<f32>>> {
        if let Some(v) = self.recent.get(text) {
            return Some(v);
        }
        let (reply, answer) = oneshot::channel();
        self.jobs.send((text.to_owned(), reply)).ok()?;
        let vector = answer.await.ok()??;
        self.recent.insert(text.to_owned(), vector.clone());
        Some(vector)
    }

    /// Embeds many texts at once (for evaluation and warm-up), bypassing the LRU.
    pub async fn embed_many(&self, texts: &[String]) -> Vec<Option<Arc<Vec<f32>>>> {
        let receivers: Vec<_> = texts
            .iter()
            .map(|t| {
                let (reply, answer) = oneshot::channel();
                let _ = self.jobs.send((t.clone(), reply));
                answer
            })
            .collect();
        let mut out = Vec::with_capacity(receivers.len());
        for r in receivers {
            out.push(r.await.ok().flatten());
        }
        out
    }
}

/// Cosine similarity of two L2-normalised vectors.
///
/// Sixteen running sums instead of one let the compiler keep them in vector registers: a plain
/// `zip().sum()` must add in order, one float at a time, which is several times slower. The
/// index scores every shortlisted vector with it.
pub fn similarity(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let (a, b) = (&a[..a.len().min(b.len())], &b[..a.len().min(b.len())]);
    let mut sums = [0.0_f32; LANES];
    let (chunks_a, chunks_b) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in chunks_a.zip(chunks_b) {
        for ((sum, x), y) in sums.iter_mut().zip(x).zip(y) {
            *sum += x * y;
        }
    }
    sums.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Embedder, similarity};

    /// A model of its own (not the process's shared one), so its run count is this test's.
    fn private_embedder() -> Arc<Embedder> {
        let dir = std::env::var("THRIFTY_EMBED_DIR").expect(
            "THRIFTY_EMBED_DIR is not set: run ./scripts/test.sh, which fetches the embedding model",
        );
        Arc::new(Embedder::load(std::path::Path::new(&dir)).expect("the model loads"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_queries_share_model_runs_and_repeats_come_from_memory() {
        let embedder = private_embedder();
        let texts: Vec<String> = (0..24)
            .map(|i| format!("how do I reset the password of account number {i}"))
            .collect();
        // Each text alone, one run each, for reference (`embed_many` skips the query cache).
        let mut alone = Vec::new();
        for text in &texts {
            let vectors = embedder.embed_many(std::slice::from_ref(text)).await;
            alone.push(vectors[0].clone().expect("embedded alone"));
        }
        assert_eq!(embedder.model_runs(), 24);

        let tasks: Vec<_> = texts
            .iter()
            .map(|text| {
                let (embedder, text) = (embedder.clone(), text.clone());
                tokio::spawn(async move { embedder.embed(&text).await })
            })
            .collect();
        let mut together = Vec::new();
        for task in tasks {
            together.push(task.await.expect("task").expect("embedded together"));
        }
        let runs = embedder.model_runs() - 24;
        assert!(
            runs < 24,
            "24 concurrent queries took {runs} model runs: they were not batched"
        );
        for ((a, b), text) in alone.iter().zip(&together).zip(&texts) {
            let cosine = similarity(a, b);
            assert!(
                cosine > 0.9999,
                "{text:?}: batched vector differs ({cosine})"
            );
        }

        let before = embedder.model_runs();
        let again = embedder.embed(&texts[0]).await.expect("embedded again");
        assert_eq!(
            embedder.model_runs(),
            before,
            "a repeated query is not re-embedded"
        );
        assert_eq!(again, together[0]);
    }

    #[test]
    fn similarity_is_the_dot_product_at_any_length() {
        for len in [0, 1, 15, 16, 17, 384, 385] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(x * y)).sum();
            let fast = f64::from(similarity(&a, &b));
            assert!(
                (plain - fast).abs() < 1e-4,
                "length {len}: {plain} vs {fast}"
            );
        }
    }
}
