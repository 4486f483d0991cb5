//! Local text embeddings: all-MiniLM-L6-v2 through fastembed, with ONNX Runtime
//! loaded dynamically from the model directory.
//!
//! The model runs on dedicated OS threads (`semantic.workers` of them, each with its own copy,
//! since its `embed` takes `&mut self`), never on the async executor. Work comes in two
//! queues, which every worker takes from: lookups, which a request is waiting on, and
//! background work (indexing answered questions, evaluation).
//! Lookups always go first, and a lookup the model cannot start within its bound is
//! withdrawn, so a request never queues behind the model. Each run embeds one text (see
//! [`Shared::next`]), and recent vectors are kept in a bounded in-memory cache (moka).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use fastembed::{
    InitOptionsUserDefined, Pooling, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel,
};
use parking_lot::{Condvar, Mutex};
use tokenizers::Tokenizer;
use tokio::sync::oneshot;

/// The vector length of all-MiniLM-L6-v2.
pub const DIMENSIONS: usize = 384;

pub use crate::config::DEFAULT_THREADS;
use crate::config::default_workers;

/// The longest input the model reads, in word pieces; longer texts are truncated by it.
pub const MODEL_MAX_TOKENS: usize = 256;

/// Recent vectors kept in memory.
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

/// A job's life: queued, then either started by the model or withdrawn by its caller.
const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const WITHDRAWN: u8 = 2;

type Reply = oneshot::Sender<Option<Arc<Vec<f32>>>>;

/// One text to embed, and where its vector goes.
struct Job {
    text: String,
    state: Arc<AtomicU8>,
    reply: Reply,
}

/// Work for the model thread.
enum Work {
    Embed(Job),
    /// Keeps the model thread busy until the sender is dropped (see [`Embedder::hold`]).
    Hold {
        entered: oneshot::Sender<()>,
        release: std::sync::mpsc::Receiver<()>,
    },
}

#[derive(Default)]
struct Queues {
    lookups: VecDeque<Work>,
    background: VecDeque<Work>,
    closed: bool,
}

/// What the caller of a lookup gets.
#[derive(Clone, Debug)]
pub enum Embedded {
    Vector(Arc<Vec<f32>>),
    /// The model could not start on the text within the bound; nothing was embedded.
    Busy,
    /// The model failed.
    Failed,
}

/// How much the model has done since it was loaded.
#[derive(Default)]
pub struct Counters {
    /// Model runs; each embeds one text.
    pub runs: AtomicU64,
    /// Texts embedded.
    pub texts: AtomicU64,
    /// Time the model spent running, in microseconds.
    pub busy_micros: AtomicU64,
}

struct Shared {
    queues: Mutex<Queues>,
    ready: Condvar,
    counters: Counters,
}

pub struct Embedder {
    shared: Arc<Shared>,
    /// How many model threads take work from `shared`.
    workers: usize,
    /// Which model this is: the start of `model.onnx`'s SHA-256, in hex.
    model: String,
    /// The model's own tokenizer, without truncation, for counting a question's word pieces.
    tokenizer: Tokenizer,
    recent: moka::sync::Cache<String, Arc<Vec<f32>>>,
}

/// ONNX Runtime allows one environment per process; it is created once and kept.
static ORT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// Loaded embedders by model directory, thread count and workers, so several servers in one
/// process share one model.
type Loaded = Mutex<HashMap<(PathBuf, usize, usize), Arc<Embedder>>>;
static LOADED: OnceLock<Loaded> = OnceLock::new();

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

/// The model's identity: the first 8 bytes of its file's SHA-256, in hex. Vectors of two
/// models are not comparable, even when they have the same length.
fn model_id(onnx: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(onnx)[..8])
}

/// The model files in `dir`, read once for every worker's session, and the model's identity
/// ([`model_id`]).
fn read_model(dir: &Path) -> Result<(UserDefinedEmbeddingModel, String), String> {
    for file in MODEL_FILES {
        if !dir.join(file).is_file() {
            return Err(format!(
                "{} is missing: run scripts/fetch-model-assets.sh",
                dir.join(file).display()
            ));
        }
    }
    let read =
        |name: &str| std::fs::read(dir.join(name)).map_err(|e| format!("cannot read {name}: {e}"));
    let tokenizer = TokenizerFiles {
        tokenizer_file: read("tokenizer.json")?,
        config_file: read("config.json")?,
        special_tokens_map_file: read("special_tokens_map.json")?,
        tokenizer_config_file: read("tokenizer_config.json")?,
    };
    let onnx = read("model.onnx")?;
    let id = model_id(&onnx);
    let model = UserDefinedEmbeddingModel::new(onnx, tokenizer).with_pooling(Pooling::Mean);
    Ok((model, id))
}

/// One session of the model, its inferences on `threads` threads, with ONNX Runtime from `dir`.
fn session(
    dir: &Path,
    model: UserDefinedEmbeddingModel,
    threads: usize,
) -> Result<TextEmbedding, String> {
    let env = environment(&dir.join("libonnxruntime.so"))?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(threads.max(1)));
    let options = InitOptionsUserDefined::new()
        .with_environment(env)
        .with_intra_threads(threads)
        .with_session_config("session.intra_op.allow_spinning", "0")
        .with_max_length(MODEL_MAX_TOKENS);
    TextEmbedding::try_new_from_user_defined(model, options)
        .map_err(|e| format!("cannot load the embedding model: {e}"))
}

impl Shared {
    fn push(&self, work: Work, lookup: bool) -> bool {
        let mut queues = self.queues.lock();
        if queues.closed {
            return false;
        }
        if lookup {
            queues.lookups.push_back(work);
        } else {
            queues.background.push_back(work);
        }
        drop(queues);
        self.ready.notify_one();
        true
    }

    /// The next work, one text at a time: lookups first, then background texts. Jobs their
    /// callers withdrew are dropped here; the one returned is marked started. `None` once
    /// closed.
    ///
    /// One text per run, never a batch: the model quantizes each run's activations with one
    /// scale for the whole run, so a text batched with others would get a vector that depends
    /// on its batch-mates (cosine 0.995 to its own in a measurement), where alone it always
    /// gets the same one. Batching saved no CPU per text either (`eval-semantic --cost`:
    /// padding to the longest text eats what it saves), and a lookup arriving meanwhile waits
    /// for at most one question's run.
    fn next(&self) -> Option<Work> {
        let mut queues = self.queues.lock();
        loop {
            if queues.closed {
                return None;
            }
            let queue = if queues.lookups.is_empty() {
                &mut queues.background
            } else {
                &mut queues.lookups
            };
            while let Some(work) = queue.pop_front() {
                let Work::Embed(job) = work else {
                    return Some(work);
                };
                let started = job
                    .state
                    .compare_exchange(QUEUED, STARTED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                if started {
                    return Some(Work::Embed(job));
                }
            }
            if queues.lookups.is_empty() && queues.background.is_empty() {
                self.ready.wait(&mut queues);
            }
        }
    }

    fn run(&self, model: &mut TextEmbedding) {
        while let Some(work) = self.next() {
            let job = match work {
                Work::Embed(job) => job,
                Work::Hold { entered, release } => {
                    let _ = entered.send(());
                    let _ = release.recv();
                    continue;
                }
            };
            let started = Instant::now();
            let vector = model
                .embed([job.text.as_str()], Some(1))
                .ok()
                .and_then(|mut v| v.pop())
                .map(Arc::new);
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            let counters = &self.counters;
            counters.runs.fetch_add(1, Ordering::Relaxed);
            counters.texts.fetch_add(1, Ordering::Relaxed);
            counters.busy_micros.fetch_add(micros, Ordering::Relaxed);
            let _ = job.reply.send(vector);
        }
    }
}

/// While it lives, the model threads run nothing else (see [`Embedder::hold`]).
pub struct Hold {
    _release: Vec<std::sync::mpsc::Sender<()>>,
}

impl Embedder {
    /// The embedder for a model directory with the default thread count and workers, loading
    /// it on first use.
    pub fn shared(dir: &Path) -> Result<Arc<Embedder>, String> {
        Embedder::shared_with(dir, DEFAULT_THREADS, default_workers())
    }

    /// The embedder for a model directory whose inferences use `threads` threads, on
    /// `workers` model threads.
    pub fn shared_with(
        dir: &Path,
        threads: usize,
        workers: usize,
    ) -> Result<Arc<Embedder>, String> {
        let loaded = LOADED.get_or_init(|| Mutex::new(HashMap::new()));
        let key = (dir.to_owned(), threads, workers);
        if let Some(e) = loaded.lock().get(&key) {
            return Ok(e.clone());
        }
        let embedder = Arc::new(Embedder::load(dir, threads, workers)?);
        loaded.lock().insert(key, embedder.clone());
        Ok(embedder)
    }

    fn load(dir: &Path, threads: usize, workers: usize) -> Result<Embedder, String> {
        let (files, id) = read_model(dir)?;
        let workers = workers.max(1);
        let models = (0..workers)
            .map(|_| session(dir, files.clone(), threads))
            .collect::<Result<Vec<_>, _>>()?;
        let mut tokenizer = models[0].tokenizer.clone();
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| format!("cannot set up the tokenizer: {e}"))?;
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues::default()),
            ready: Condvar::new(),
            counters: Counters::default(),
        });
        for mut model in models {
            let worker = shared.clone();
            let started = std::thread::Builder::new()
                .name("thrifty-embed".to_owned())
                .spawn(move || worker.run(&mut model));
            if let Err(e) = started {
                // The workers already started stop once the queues close.
                shared.queues.lock().closed = true;
                shared.ready.notify_all();
                return Err(format!("cannot start an embedding thread: {e}"));
            }
        }
        Ok(Embedder {
            shared,
            workers,
            model: id,
            tokenizer,
            recent: moka::sync::Cache::new(QUERY_CACHE),
        })
    }

    /// Which model embeds: vectors another model made are not comparable with its own.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// What the model has done since it was loaded.
    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// How many times the model has run since it was loaded (once per text).
    pub fn model_runs(&self) -> u64 {
        self.shared.counters.runs.load(Ordering::Relaxed)
    }

    /// Whether `text` is surely more than `limit` word pieces long, judged without the
    /// tokenizer: every word between ASCII spaces is at least one word piece, and no word piece
    /// is longer than 32 bytes. One pass over the bytes, about a microsecond for a long
    /// message. Other Unicode spaces do not split words here, which can only count fewer.
    pub fn surely_longer(text: &str, limit: usize) -> bool {
        text.len() > limit.saturating_mul(32)
            || ascii_words(text.as_bytes(), limit.saturating_add(1)) > limit
    }

    /// Whether `text` is at most `limit` word pieces long for the model. The tokenizer runs only
    /// when neither bound decides: a text of at most `limit` characters fits (every word piece
    /// covers at least one), and [`Embedder::surely_longer`] texts do not.
    pub fn fits(&self, text: &str, limit: usize) -> bool {
        if Embedder::surely_longer(text, limit) {
            return false;
        }
        if text.chars().nth(limit).is_none() {
            return true;
        }
        self.tokenizer
            .encode(text, false)
            .is_ok_and(|e| e.len() <= limit)
    }

    /// The L2-normalised embedding of a question a request is waiting on. The model must start
    /// on it within `max_wait`, or the lookup is withdrawn and [`Embedded::Busy`] returned.
    pub async fn embed(&self, text: &str, max_wait: Duration) -> Embedded {
        if let Some(v) = self.recent.get(text) {
            return Embedded::Vector(v);
        }
        let state = Arc::new(AtomicU8::new(QUEUED));
        let (reply, mut answer) = oneshot::channel();
        let job = Job {
            text: text.to_owned(),
            state: state.clone(),
            reply,
        };
        if !self.shared.push(Work::Embed(job), true) {
            return Embedded::Failed;
        }
        let vector = match tokio::time::timeout(max_wait, &mut answer).await {
            Ok(vector) => vector,
            Err(_) => {
                let withdrawn = state
                    .compare_exchange(QUEUED, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                if withdrawn {
                    return Embedded::Busy;
                }
                // The model started on it just now: the vector is a run away.
                answer.await
            }
        };
        match vector.ok().flatten() {
            Some(vector) => {
                self.recent.insert(text.to_owned(), vector.clone());
                Embedded::Vector(vector)
            }
            None => Embedded::Failed,
        }
    }

    /// Embeds texts as background work, after every waiting lookup; repeats come from memory.
    pub async fn embed_background(&self, texts: &[String]) -> Vec<Option<Arc<Vec<f32>>>> {
        let mut out = vec![None; texts.len()];
        let mut pending = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            if let Some(v) = self.recent.get(text) {
                out[i] = Some(v);
                continue;
            }
            let (reply, answer) = oneshot::channel();
            let job = Job {
                text: text.clone(),
                state: Arc::new(AtomicU8::new(QUEUED)),
                reply,
            };
            if self.shared.push(Work::Embed(job), false) {
                pending.push((i, answer));
            }
        }
        for (i, answer) in pending {
            if let Some(vector) = answer.await.ok().flatten() {
                self.recent.insert(texts[i].clone(), vector.clone());
                out[i] = Some(vector);
            }
        }
        out
    }

    /// Embeds many texts at once (evaluation, warm-up) as background work, bypassing the
    /// memory of recent vectors.
    pub async fn embed_many(&self, texts: &[String]) -> Vec<Option<Arc<Vec<f32>>>> {
        let receivers: Vec<_> = texts
            .iter()
            .map(|t| {
                let (reply, answer) = oneshot::channel();
                let job = Job {
                    text: t.clone(),
                    state: Arc::new(AtomicU8::new(QUEUED)),
                    reply,
                };
                self.shared.push(Work::Embed(job), false);
                answer
            })
            .collect();
        let mut out = Vec::with_capacity(receivers.len());
        for r in receivers {
            out.push(r.await.ok().flatten());
        }
        out
    }

    /// Occupies every model thread until the returned guard is dropped, as long texts would;
    /// returns once they are held. For tests and measurements of a busy model.
    pub async fn hold(&self) -> Hold {
        self.hold_workers(self.workers).await
    }

    /// Occupies `n` of the model threads (at most all of them) until the guard is dropped.
    pub async fn hold_workers(&self, n: usize) -> Hold {
        let mut releases = Vec::new();
        let mut entered_all = Vec::new();
        for _ in 0..n.min(self.workers) {
            let (entered, held) = oneshot::channel();
            let (release, wait) = std::sync::mpsc::channel();
            let work = Work::Hold {
                entered,
                release: wait,
            };
            if self.shared.push(work, true) {
                entered_all.push(held);
            }
            releases.push(release);
        }
        for held in entered_all {
            let _ = held.await;
        }
        Hold { _release: releases }
    }

    /// How many model threads embed.
    pub fn workers(&self) -> usize {
        self.workers
    }
}

impl Drop for Embedder {
    fn drop(&mut self) {
        self.shared.queues.lock().closed = true;
        self.shared.ready.notify_all();
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

/// The words between ASCII whitespace in `bytes`, counted up to `most`.
fn ascii_words(bytes: &[u8], most: usize) -> usize {
    let mut words = 0;
    let mut in_word = false;
    for &b in bytes {
        let space = b.is_ascii_whitespace();
        if !space && !in_word {
            words += 1;
            if words >= most {
                return words;
            }
        }
        in_word = !space;
    }
    words
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::{Embedded, Embedder, ascii_words, similarity};

    /// Long enough that a lookup in these tests is never withdrawn.
    const PATIENT: Duration = Duration::from_secs(60);

    fn vector(embedded: Embedded) -> Arc<Vec<f32>> {
        match embedded {
            Embedded::Vector(v) => v,
            other => panic!("not embedded: {other:?}"),
        }
    }

    /// A model of its own (not the process's shared one), so its run count is this test's.
    fn private_embedder() -> Arc<Embedder> {
        let dir = std::env::var("THRIFTY_EMBED_DIR").expect(
            "THRIFTY_EMBED_DIR is not set: run ./scripts/test.sh, which fetches the embedding model",
        );
        Arc::new(
            Embedder::load(std::path::Path::new(&dir), super::DEFAULT_THREADS, 1)
                .expect("the model loads"),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_queries_get_the_vectors_they_get_alone_and_repeats_come_from_memory() {
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
                tokio::spawn(async move { vector(embedder.embed(&text, PATIENT).await) })
            })
            .collect();
        let mut together = Vec::new();
        for task in tasks {
            together.push(task.await.expect("task"));
        }
        assert_eq!(embedder.model_runs(), 48, "one run per text");
        for ((a, b), text) in alone.iter().zip(&together).zip(&texts) {
            assert_eq!(
                a,
                b,
                "{text:?}: its vector depends on what ran beside it (cosine {})",
                similarity(a, b)
            );
        }

        let before = embedder.model_runs();
        let again = vector(embedder.embed(&texts[0], PATIENT).await);
        assert_eq!(
            embedder.model_runs(),
            before,
            "a repeated query is not re-embedded"
        );
        assert_eq!(again, together[0]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lookup_the_model_cannot_start_in_time_is_withdrawn_and_never_run() {
        let embedder = private_embedder();
        let held = embedder.hold().await;
        let runs = embedder.model_runs();
        let started = std::time::Instant::now();
        let busy = embedder
            .embed("how do I reset my password", Duration::from_millis(20))
            .await;
        assert!(matches!(busy, Embedded::Busy), "{busy:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the lookup gave up after its bound, not after the model: {:?}",
            started.elapsed()
        );
        drop(held);
        // The withdrawn lookup is skipped by the model: the next one is the only run.
        vector(embedder.embed("how do I change my email", PATIENT).await);
        assert_eq!(embedder.model_runs(), runs + 1, "only the later lookup ran");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_worker_takes_lookups_while_one_is_busy_and_gives_the_same_vectors() {
        let dir = std::env::var("THRIFTY_EMBED_DIR").expect("THRIFTY_EMBED_DIR is set");
        let one = private_embedder();
        let two = Arc::new(
            Embedder::load(std::path::Path::new(&dir), super::DEFAULT_THREADS, 2)
                .expect("the model loads twice"),
        );
        assert_eq!(two.workers(), 2);
        // One worker held, as by a long text: the other starts on a lookup at once.
        let held = two.hold_workers(1).await;
        let text = "how do I reset my password";
        let served = two.embed(text, Duration::from_millis(500)).await;
        let alone = vector(one.embed(text, PATIENT).await);
        assert_eq!(
            vector(served),
            alone,
            "every worker's copy gives the same vector"
        );
        drop(held);
        // Both held: a lookup finds no worker free and is withdrawn.
        let held = two.hold().await;
        let busy = two
            .embed("how do I change my email", Duration::from_millis(20))
            .await;
        assert!(matches!(busy, Embedded::Busy), "{busy:?}");
        drop(held);
        // Many at once, spread over both workers: each gets the vector it gets alone.
        let texts: Vec<String> = (0..16)
            .map(|i| format!("where is my order number {i}"))
            .collect();
        let spread =
            futures_util::future::join_all(texts.iter().map(|t| two.embed(t, PATIENT))).await;
        for (text, got) in texts.iter().zip(spread) {
            assert_eq!(
                vector(got),
                vector(one.embed(text, PATIENT).await),
                "{text}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lookups_go_before_background_work() {
        let embedder = private_embedder();
        let held = embedder.hold().await;
        let background: Vec<String> = (0..6)
            .map(|i| format!("a question to index later, number {i}"))
            .collect();
        let indexing = {
            let (embedder, texts) = (embedder.clone(), background.clone());
            tokio::spawn(async move { embedder.embed_background(&texts).await })
        };
        // Let the background texts reach the queue before the lookup does.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let lookup = {
            let embedder = embedder.clone();
            tokio::spawn(async move { embedder.embed("what is a lookup", PATIENT).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A second hold queued behind the lookup (holds go with lookups): once it is entered,
        // the model has run exactly what went before it, whatever the scheduler's timing.
        let second = {
            let embedder = embedder.clone();
            tokio::spawn(async move { embedder.hold().await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let runs = embedder.model_runs();
        drop(held);
        vector(lookup.await.expect("lookup task"));
        let second = second.await.expect("hold task");
        assert_eq!(
            embedder.model_runs(),
            runs + 1,
            "the lookup was the model's first run after the hold, ahead of the background texts"
        );
        drop(second);
        let indexed = indexing.await.expect("indexing task");
        assert!(
            indexed.iter().all(Option::is_some),
            "background texts embedded too"
        );
    }

    #[test]
    fn fits_counts_word_pieces_and_refuses_huge_texts_without_tokenizing_them() {
        let embedder = private_embedder();
        assert!(embedder.fits("How do I reset my password?", 16));
        assert!(!embedder.fits("How do I reset my password?", 4));
        let huge = "word ".repeat(1_000_000);
        let started = std::time::Instant::now();
        assert!(!embedder.fits(&huge, 128));
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "no tokenizing"
        );
    }

    #[test]
    fn surely_longer_never_says_so_of_a_text_that_fits() {
        let embedder = private_embedder();
        let texts = [
            "How do I reset my password?",
            "  spaced\tout\n\nwords  ",
            "naïve café crème brûlée déjà vu",
            "日本語の質問です\u{3000}これは長い",
            "a\u{a0}b\u{2003}c d e f g h",
            "tokenization's pre-trained state-of-the-art word-pieces!!!",
            "x",
            "",
        ];
        for text in texts {
            let pieces = embedder
                .tokenizer
                .encode(text, false)
                .expect("encodes")
                .len();
            for limit in 0..pieces + 3 {
                if Embedder::surely_longer(text, limit) {
                    assert!(pieces > limit, "{text:?}: {pieces} pieces, limit {limit}");
                }
            }
        }
        assert!(Embedder::surely_longer(&"word ".repeat(200), 128));
        assert!(!Embedder::surely_longer(&"word ".repeat(128), 128));
        assert_eq!(ascii_words(b" a  b\tc\n", 10), 3);
        assert_eq!(ascii_words(b"a b c d", 2), 2);
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
