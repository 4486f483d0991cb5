//! What thrifty costs: the same requests sent straight to the fake upstream ("direct") and
//! through thrifty ("thrifty"), over real loopback HTTP/1.1 with a keep-alive client.
//!
//! Run it with `cargo bench --bench proxy`; names after `--` run only the scenarios whose name
//! contains one of them (`cargo bench --bench proxy -- stream`).
//!
//! Tunable by environment variables:
//!
//! | variable                      | default | meaning                                         |
//! |-------------------------------|---------|-------------------------------------------------|
//! | `THRIFTY_BENCH_REQUESTS`      | 2000    | sequential requests per target at c=1           |
//! | `THRIFTY_BENCH_STREAMS`       | 1000    | streamed requests per target (first chunk, c=1) |
//! | `THRIFTY_BENCH_CONCURRENCY`   | 32      | client tasks in the concurrent scenario         |
//! | `THRIFTY_BENCH_SECS`          | 3       | seconds per target at c=N; the cap at c=1       |
//! | `THRIFTY_BENCH_ROUNDS`        | 3       | direct/thrifty alternations the budget is cut in|
//! | `THRIFTY_BENCH_WARMUP`        | 0.1     | warm-up per target, as a share of the budget    |
//! | `THRIFTY_BENCH_PROXY_WORKERS` | 1       | thrifty's tokio workers (1 = current_thread)    |
//! | `THRIFTY_BENCH_UPSTREAM_MS`   | 0       | how long the fake upstream takes to answer      |
//!
//! Threads. The fake upstream, thrifty and the load generator each run on their own tokio
//! runtime in their own OS thread (`bench-fake`, `bench-thrifty`, `bench-client`), all
//! `current_thread` unless `THRIFTY_BENCH_PROXY_WORKERS` asks for more. On a 2-core machine this
//! is the fairest split: the direct path is two busy threads on two cores, the proxied path
//! adds exactly one (thrifty's), no runtime steals another's work, and the per-thread CPU time
//! read from `/proc` shows what each party spent per request. Because the three threads share
//! two cores, the c=N throughput ratio is in the end a CPU-cost ratio, about
//! (client + fake) / (client + fake + thrifty) in CPU per request, and thrifty, which speaks
//! HTTP on both sides, costs about as much per request as the fake upstream does.
//!
//! thrifty's CPU is its runtime's thread plus every thread it starts (`thrifty-*`), the
//! embedding model's `thrifty-embed` included; the table shows that thread's share apart.
//!
//! thrifty logs as `thrifty serve` does: the same subscriber at the default filter (`info`, or
//! `RUST_LOG`) and format, with a line per request, written by its `thrifty-log` thread to
//! `thrifty.log` in a scratch directory instead of stderr (`THRIFTY_LOG_FORMAT=json` picks the
//! JSON lines).
//!
//! Each scenario warms its targets up, then measures direct and each thrifty in turn for
//! `THRIFTY_BENCH_ROUNDS` rounds (rotating which goes first) and pools the samples, so that
//! noise from other work on the machine hits every target alike.
//!
//! Adding a scenario (cache hits, say): write an `async fn(&Bench) -> Result<Comparison>` that
//! calls [`Bench::compare`] with a measuring closure built from [`sequential`] or
//! [`concurrent`], and list it in [`SCENARIOS`]. A scenario that needs another thrifty
//! configuration can start one with [`start_thrifty`], or compare several with
//! [`Bench::compare_all`].
//!
//! Default scenarios (`default …`) run thrifty as a user runs it: [`default_config_for`], that
//! is exact and semantic cache, compression and savings ledger at their defaults, the embedded
//! store in a scratch directory (or, in `default redis …`, a private `redis-server`), the model
//! from `THRIFTY_EMBED_DIR`. The requests carry a system prompt and a user message with a
//! request number in it, so that every one is a question nobody asked before and a real miss
//! (`x-thrifty-cache: miss`, checked). `default miss c=1` and `c=N` send a ~1,000-character
//! message (longer than `semantic.max_question_tokens`) to direct, to the default thrifty and
//! to the same build with `semantic.enabled = false` (`sem-off`), all in the same run.
//! `default short miss c=1` sends short questions to a thrifty whose partition already holds a
//! few indexed ones, so each is embedded and looked up and its near neighbours are turned down
//! by the guard. `default stream first chunk c=1` streams the long-message miss. Each prints
//! what the semantic stage did (`/admin/cache/stats`) under the table.
//!
//! Cache scenarios. `hit redis …` and `hit embedded …` run thrifty in the default configuration (a private
//! `redis-server`, or the embedded store), warm one entry and then measure exact hits against
//! the same requests sent straight to the fake (misses by construction); every hit must say
//! `x-thrifty-cache: hit` and none may reach the fake. `default semantic hit c=1` runs the
//! default configuration with `semantic.mode = "static"` (verified mode serves no candidate
//! before it has measured outcomes, so it would time misses), caches one question, waits until it is indexed and sends distinct
//! paraphrases of it, embedding included, one at a time and then the rest from eight clients
//! at once (`default semantic hit c=8`, half the paraphrases at most going one at a time); it reports the model
//! thread's CPU per embedding, and also times the model alone on the same texts and the same
//! calls sent straight to the fake. `index lookup` times `semantic::index::Index::search` alone
//! (a sketch scan at 2k, 10k and 100k entries, HNSW at 10k and 100k) with the load time and
//! recall@1 against exact search, then single inserts into the 100k graph.

#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

#[path = "../tests/common/dialect.rs"]
#[allow(dead_code, reason = "the fake upstream uses only part of the dialects")]
mod dialect;

#[path = "../tests/common/fake_llm.rs"]
#[allow(
    dead_code,
    reason = "the benchmark uses only part of the fake upstream"
)]
mod fake_llm;

#[path = "../tests/common/redis.rs"]
#[allow(dead_code, reason = "the benchmark only starts and stops the server")]
mod redis_server;

#[path = "common/requests.rs"]
#[allow(dead_code, reason = "the instructions driver numbers its own requests")]
mod requests;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::{Bytes, BytesMut};
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use thrifty::config::{RawConfig, RawDialect, RawUpstream};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use fake_llm::FakeLlm;
use requests::{CHAT, LONG_MESSAGE};

const CLIENT_THREAD: &str = "bench-client";
const FAKE_THREAD: &str = "bench-fake";
const THRIFTY_THREAD: &str = "bench-thrifty";
/// The thread thrifty runs the embedding model on (ONNX Runtime runs each inference on it,
/// with one intra-op thread).
const MODEL_THREAD: &str = "thrifty-embed";
/// The prefix of every other thread thrifty starts (the index's builders).
const THRIFTY_THREADS: &str = "thrifty-";

/// Linux's `USER_HZ`: the unit of the CPU times in `/proc/*/stat` (100 on every mainstream
/// architecture).
const CLOCK_TICKS_PER_SEC: u64 = 100;

/// The same request, streamed.
const CHAT_STREAM: &str = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"system","content":"You are a terse assistant."},{"role":"user","content":"Summarise the benefits of connection pooling for an HTTP reverse proxy in one sentence, please."}],"temperature":0.2,"max_tokens":64}"#;

type BenchClient = Client<HttpConnector, Full<Bytes>>;
type ScenarioFuture<'a> = Pin<Box<dyn Future<Output = Result<Outcome>> + 'a>>;

/// What a scenario reports: a direct/thrifty comparison, or latencies of one target alone.
enum Outcome {
    Compared(Comparison),
    Measured(Vec<Measured>),
}

/// Latencies measured on their own (no direct counterpart), with a free-form note.
struct Measured {
    name: String,
    run: Run,
    note: String,
    /// CPU the model's thread spent per embedding, where the scenario measured it.
    model_cpu_ms: Option<f64>,
}

/// A named scenario; its name is what the command-line filter matches.
struct Scenario {
    name: &'static str,
    run: for<'a> fn(&'a Bench) -> ScenarioFuture<'a>,
}

const CHAT_C1: &str = "chat c=1";
const CHAT_CN: &str = "chat c=N";
const STREAM_C1: &str = "stream first chunk c=1";

const HIT_REDIS_C1: &str = "hit redis c=1";
const HIT_REDIS_CN: &str = "hit redis c=N";
const HIT_EMBEDDED_C1: &str = "hit embedded c=1";
const HIT_EMBEDDED_CN: &str = "hit embedded c=N";
const DEFAULT_MISS_C1: &str = "default miss c=1";
const DEFAULT_MISS_CN: &str = "default miss c=N";
const DEFAULT_SHORT_C1: &str = "default short miss c=1";
const DEFAULT_STREAM_C1: &str = "default stream first chunk c=1";
const DEFAULT_REDIS_MISS_C1: &str = "default redis miss c=1";
const DEFAULT_REDIS_MISS_CN: &str = "default redis miss c=N";
const DEFAULT_REDIS_SHORT_C1: &str = "default redis short miss c=1";

const SEMANTIC_HIT: &str = "default semantic hit c=1";
const SEMANTIC_HIT_CN: &str = "default semantic hit c=8";
/// Clients sending distinct paraphrases at once in the semantic scenario's concurrent phase.
const SEMANTIC_TASKS: usize = 8;
const SEMANTIC_EMBED: &str = "semantic embedding alone";
const SEMANTIC_DIRECT: &str = "semantic direct c=1";
const INDEX_LOOKUP: &str = "index lookup";
const INDEX_INSERT: &str = "index insert";

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: CHAT_C1,
        run: |bench| Box::pin(async { chat_sequential(bench).await.map(Outcome::Compared) }),
    },
    Scenario {
        name: CHAT_CN,
        run: |bench| Box::pin(async { chat_concurrent(bench).await.map(Outcome::Compared) }),
    },
    Scenario {
        name: STREAM_C1,
        run: |bench| Box::pin(async { stream_first_chunk(bench).await.map(Outcome::Compared) }),
    },
    Scenario {
        name: HIT_REDIS_C1,
        run: |bench| {
            Box::pin(async {
                exact_hits(bench, HIT_REDIS_C1, Store::Redis, Load::Sequential)
                    .await
                    .map(Outcome::Compared)
            })
        },
    },
    Scenario {
        name: HIT_REDIS_CN,
        run: |bench| {
            Box::pin(async {
                exact_hits(bench, HIT_REDIS_CN, Store::Redis, Load::Concurrent)
                    .await
                    .map(Outcome::Compared)
            })
        },
    },
    Scenario {
        name: HIT_EMBEDDED_C1,
        run: |bench| {
            Box::pin(async {
                exact_hits(bench, HIT_EMBEDDED_C1, Store::Embedded, Load::Sequential)
                    .await
                    .map(Outcome::Compared)
            })
        },
    },
    Scenario {
        name: HIT_EMBEDDED_CN,
        run: |bench| {
            Box::pin(async {
                exact_hits(bench, HIT_EMBEDDED_CN, Store::Embedded, Load::Concurrent)
                    .await
                    .map(Outcome::Compared)
            })
        },
    },
    Scenario {
        name: DEFAULT_MISS_C1,
        run: |bench| {
            Box::pin(async {
                default_misses(bench, DEFAULT_MISS_C1, Store::Embedded, Load::Sequential)
                    .await
                    .map(Outcome::Compared)
            })
        },
    },
    Scenario {
        name: DEFAULT_MISS_CN,
        run: |bench| {
            Box::pin(async {
                default_misses(bench, DEFAULT_MISS_CN, Store::Embedded, Load::Concurrent)
                    .await
                    .map(Outcome::Compared)
            })
        },
    },
    Scenario {
        name: DEFAULT_SHORT_C1,
        run: |bench| {
            Box::pin(async {
                default_short_misses(bench, DEFAULT_SHORT_C1, Store::Embedded)
                    .await
                    .map(Outcome::Compared)
            })
        },
    },
    Scenario {
        name: DEFAULT_STREAM_C1,
        run: |bench| {
            Box::pin(async {
                default_stream_first_chunk(bench)
                    .await
                    .map(Outcome::Compared)
            })
        },
    },
    Scenario {
        name: DEFAULT_REDIS_MISS_C1,
        run: |bench| {
            Box::pin(async {
                default_misses(bench, DEFAULT_REDIS_MISS_C1, Store::Redis, Load::Sequential)
                    .await
                    .map(Outcome::Compared)
            })
        },
    },
    Scenario {
        name: DEFAULT_REDIS_MISS_CN,
        run: |bench| {
            Box::pin(async {
                default_misses(bench, DEFAULT_REDIS_MISS_CN, Store::Redis, Load::Concurrent)
                    .await
                    .map(Outcome::Compared)
            })
        },
    },
    Scenario {
        name: DEFAULT_REDIS_SHORT_C1,
        run: |bench| {
            Box::pin(async {
                default_short_misses(bench, DEFAULT_REDIS_SHORT_C1, Store::Redis)
                    .await
                    .map(Outcome::Compared)
            })
        },
    },
    Scenario {
        name: SEMANTIC_HIT,
        run: |bench| Box::pin(semantic_hits(bench)),
    },
    Scenario {
        name: INDEX_LOOKUP,
        run: |_| Box::pin(async { index_lookups().map(Outcome::Measured) }),
    },
];

// ---------------------------------------------------------------------------------------------
// Scenarios.
// ---------------------------------------------------------------------------------------------

/// Non-streaming OpenAI chat, one request at a time: latency per request.
async fn chat_sequential(bench: &Bench) -> Result<Comparison> {
    let call = Call::openai_chat(CHAT);
    let (requests, cap) = (bench.settings.requests, bench.settings.cap());
    bench
        .compare(CHAT_C1, async |target: &Target, share: f64| {
            let n = scaled(requests, share);
            sequential(
                bench,
                target,
                &call,
                Probe::WholeBody,
                n,
                cap.mul_f64(share),
            )
            .await
        })
        .await
}

/// Non-streaming OpenAI chat from many tasks at once: throughput.
async fn chat_concurrent(bench: &Bench) -> Result<Comparison> {
    let call = Call::openai_chat(CHAT);
    let tasks = bench.settings.concurrency;
    let secs = bench.settings.secs;
    bench
        .compare(CHAT_CN, async |target: &Target, share: f64| {
            let duration = Duration::from_secs_f64(secs * share);
            concurrent(bench, target, &call, Probe::WholeBody, tasks, duration).await
        })
        .await
}

/// Streaming OpenAI chat, one request at a time: time to the first SSE event.
async fn stream_first_chunk(bench: &Bench) -> Result<Comparison> {
    let call = Call::openai_chat(CHAT_STREAM);
    let (requests, cap) = (bench.settings.streams, bench.settings.cap());
    bench
        .compare(STREAM_C1, async |target: &Target, share: f64| {
            let n = scaled(requests, share);
            sequential(
                bench,
                target,
                &call,
                Probe::FirstEvent,
                n,
                cap.mul_f64(share),
            )
            .await
        })
        .await
}

/// Where the cache of a hit scenario lives.
#[derive(Clone, Copy, Debug)]
enum Store {
    /// A private `redis-server`, named to thrifty by `THRIFTY_REDIS_URL`.
    Redis,
    /// The embedded store in a scratch directory.
    Embedded,
}

/// How a scenario loads its target.
#[derive(Clone, Copy, Debug)]
enum Load {
    /// One request at a time, `THRIFTY_BENCH_REQUESTS` of them: latency.
    Sequential,
    /// `THRIFTY_BENCH_CONCURRENCY` tasks for `THRIFTY_BENCH_SECS`: throughput.
    Concurrent,
}

/// Exact cache hits through a thrifty with the cache on, next to the same request sent straight
/// to the fake (a miss by construction).
async fn exact_hits(
    bench: &Bench,
    scenario: &'static str,
    store: Store,
    load: Load,
) -> Result<Comparison> {
    // The default configuration, as for the misses.
    let thrifty = DefaultThrifty::start(bench, store, Variant::Default)?;
    let cached = thrifty.target.clone();
    let miss = Call::openai_chat(CHAT);
    warm_entry(bench, &cached, &miss, "hit")
        .await
        .with_context(|| format!("{scenario}: warming the cache"))?;
    let hit = miss.clone().expecting("hit");

    let result = bench
        .compare_with(
            scenario,
            &cached,
            true,
            async |target: &Target, share: f64| {
                let call = if target.name == bench.direct.name {
                    &miss
                } else {
                    &hit
                };
                loaded(bench, target, call, load, share).await
            },
        )
        .await;
    drop(thrifty);
    result
}

/// `share` of the budget of `load` spent sending `call` to `target`, whole bodies timed.
async fn loaded(
    bench: &Bench,
    target: &Target,
    call: &Call,
    load: Load,
    share: f64,
) -> Result<Run> {
    let settings = &bench.settings;
    match load {
        Load::Sequential => {
            let n = scaled(settings.requests, share);
            let cap = settings.cap().mul_f64(share);
            sequential(bench, target, call, Probe::WholeBody, n, cap).await
        }
        Load::Concurrent => {
            let duration = Duration::from_secs_f64(settings.secs * share);
            let tasks = settings.concurrency;
            concurrent(bench, target, call, Probe::WholeBody, tasks, duration).await
        }
    }
}

/// Sends `call` once (a miss that fills the cache), then until its answer says
/// `x-thrifty-cache: outcome` (the store write may land after the answer).
async fn warm_entry(bench: &Bench, target: &Target, call: &Call, outcome: &str) -> Result<()> {
    let uri = call.uri(target)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, seen) = exchange(&bench.client, &uri, call, Probe::WholeBody).await?;
        if seen.as_deref() == Some(outcome) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "no {outcome:?} after 10 s (last x-thrifty-cache: {seen:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A chat with [`requests::SUPPORT_PROMPT`] whose user message is `before`, a request number, `after`;
/// `options` go before the messages.
fn support_call(options: &str, before: &str, after: &str) -> Call {
    let (head, tail) = requests::support_parts(options, before, after);
    Call::openai_chat_numbered(head, tail)
}

/// A distinct ~1,000-character message every request.
fn long_question_call() -> Call {
    support_call("", "Ticket ", &format!(". {LONG_MESSAGE}"))
}

/// [`long_question_call`], streamed.
fn long_question_stream() -> Call {
    support_call(r#""stream":true,"#, "Ticket ", &format!(". {LONG_MESSAGE}"))
}

/// A distinct short question every request, each close to the others but for its number
/// (so that the guard, not the threshold, turns a candidate down).
fn short_question_call() -> Call {
    support_call("", "How do I track order ", "?")
}

/// The bearer token of the admin API of the default-configuration thrifties.
const ADMIN_TOKEN: &str = "bench-admin-token";

/// How a default-configuration thrifty differs from the defaults.
#[derive(Clone, Copy, Debug)]
enum Variant {
    /// Not at all.
    Default,
    /// `semantic.enabled = false`.
    SemanticOff,
    /// `semantic.mode = "static"`: candidates the guard passes are served without the
    /// measured outcomes the default verified mode waits for, so the hit path can be timed.
    SemanticStatic,
}

/// A thrifty as a user runs it, with a store of its own; dropping it stops the server, then
/// its Redis, then removes its directory.
struct DefaultThrifty {
    target: Target,
    _server: ServerThread,
    _redis: Option<redis_server::RedisServer>,
    _scratch: ScratchDir,
}

impl DefaultThrifty {
    /// Starts one on `store` (a private `redis-server` for [`Store::Redis`]), with the model
    /// named by `THRIFTY_EMBED_DIR` and the admin API on.
    fn start(bench: &Bench, store: Store, variant: Variant) -> Result<Self> {
        let model_dir = std::env::var("THRIFTY_EMBED_DIR")
            .context("THRIFTY_EMBED_DIR is not set: it must name the all-MiniLM-L6-v2 directory")?;
        let scratch = ScratchDir::new("default")?;
        let redis = match store {
            Store::Redis => Some(redis_server::RedisServer::start()),
            Store::Embedded => None,
        };
        let mut vars = vec![
            ("THRIFTY_EMBED_DIR", model_dir),
            ("THRIFTY_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ];
        vars.extend(redis.iter().map(|r| ("THRIFTY_REDIS_URL", r.url())));
        let mut raw = default_config_for(&bench.fake, scratch.path());
        let name = match variant {
            Variant::Default => "thrifty",
            Variant::SemanticOff => {
                raw.semantic.enabled = false;
                "sem-off"
            }
            Variant::SemanticStatic => {
                raw.semantic.mode = thrifty::config::SemanticMode::Static;
                "thrifty"
            }
        };
        let (addr, server) = start_thrifty_with_env(raw, bench.settings.proxy_workers, &vars)?;
        Ok(DefaultThrifty {
            target: Target {
                name,
                base: format!("http://{addr}"),
            },
            _server: server,
            _redis: redis,
            _scratch: scratch,
        })
    }

    /// The `semantic` section of `/admin/cache/stats`.
    async fn semantic_stats(&self, client: &BenchClient) -> Result<serde_json::Value> {
        let mut stats = self.stats(client).await?;
        let semantic = stats["semantic"].take();
        ensure!(
            semantic.is_object(),
            "/admin/cache/stats has no semantic section"
        );
        Ok(semantic)
    }

    /// `/admin/cache/stats`.
    async fn stats(&self, client: &BenchClient) -> Result<serde_json::Value> {
        let uri: Uri = format!("{}/admin/cache/stats", self.target.base).parse()?;
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = uri;
        request.headers_mut().insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {ADMIN_TOKEN}"))?,
        );
        let response = client.request(request).await.context("asking for stats")?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        ensure!(
            status == StatusCode::OK,
            "/admin/cache/stats answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(serde_json::from_slice(&body)?)
    }

    /// Polls the stats until at least `n` questions have been indexed.
    async fn wait_indexed(&self, client: &BenchClient, n: u64) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stats = self.semantic_stats(client).await?;
            if stats["indexed"].as_u64().unwrap_or(0) >= n {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "fewer than {n} questions indexed after 30 s: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What the semantic stage did between two snapshots of its stats.
fn semantic_note(before: &serde_json::Value, after: &serde_json::Value) -> String {
    let delta = |v: &serde_json::Value, w: &serde_json::Value| {
        w.as_f64().unwrap_or(0.0) - v.as_f64().unwrap_or(0.0)
    };
    let field = |name: &str| delta(&before[name], &after[name]);
    let skipped: Vec<String> = after["skipped"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(reason, n)| (reason, delta(&before["skipped"][reason], n)))
        .filter(|(_, n)| *n > 0.0)
        .map(|(reason, n)| format!("{reason} {n:.0}"))
        .collect();
    let embeddings = field("embeddings");
    let per_text = if embeddings > 0.0 {
        format!(" ({:.2} ms each)", field("embedding_ms") / embeddings)
    } else {
        String::new()
    };
    format!(
        "semantic stage on thrifty: lookups {:.0}, skipped [{}], indexed {:.0}, index drops \
         {:.0}, embeddings {embeddings:.0}{per_text}",
        field("lookups"),
        skipped.join(", "),
        field("indexed"),
        field("index_dropped"),
    )
}

/// Distinct long-message misses through a default thrifty and the same build with the
/// semantic cache off, next to the same requests sent straight to the fake.
async fn default_misses(
    bench: &Bench,
    scenario: &'static str,
    store: Store,
    load: Load,
) -> Result<Comparison> {
    let thrifty = DefaultThrifty::start(bench, store, Variant::Default)?;
    let semantic_off = DefaultThrifty::start(bench, store, Variant::SemanticOff)?;
    let direct = long_question_call();
    let miss = direct.clone().expecting("miss");
    let before = thrifty.stats(&bench.client).await?;
    let mut result = bench
        .compare_all(
            scenario,
            &[(&thrifty.target, false), (&semantic_off.target, false)],
            async |target: &Target, share: f64| {
                let call = if target.name == bench.direct.name {
                    &direct
                } else {
                    &miss
                };
                loaded(bench, target, call, load, share).await
            },
        )
        .await?;
    let after = thrifty.stats(&bench.client).await?;
    result
        .notes
        .push(semantic_note(&before["semantic"], &after["semantic"]));
    let grew =
        |field: &str| after[field].as_u64().unwrap_or(0) - before[field].as_u64().unwrap_or(0);
    result.notes.push(format!(
        "answers stored on thrifty: {}, store errors {}",
        grew("stored"),
        grew("store_errors")
    ));
    Ok(result)
}

/// Distinct short questions, one at a time, through a default thrifty whose partition already
/// holds a few of them (so each is embedded and looked up, and the guard turns its candidates
/// down), next to the same build with the semantic cache off and to direct calls.
async fn default_short_misses(
    bench: &Bench,
    scenario: &'static str,
    store: Store,
) -> Result<Comparison> {
    const PREFILL: u64 = 8;
    let thrifty = DefaultThrifty::start(bench, store, Variant::Default)?;
    let semantic_off = DefaultThrifty::start(bench, store, Variant::SemanticOff)?;
    let direct = short_question_call();
    let miss = direct.clone().expecting("miss");
    let uri = miss.uri(&thrifty.target)?;
    for _ in 0..PREFILL {
        send(&bench.client, &uri, &miss, Probe::WholeBody)
            .await
            .with_context(|| format!("{scenario}: filling the partition"))?;
    }
    thrifty
        .wait_indexed(&bench.client, PREFILL)
        .await
        .with_context(|| format!("{scenario}: filling the partition"))?;
    let before = thrifty.semantic_stats(&bench.client).await?;
    let mut result = bench
        .compare_all(
            scenario,
            &[(&thrifty.target, false), (&semantic_off.target, false)],
            async |target: &Target, share: f64| {
                let call = if target.name == bench.direct.name {
                    &direct
                } else {
                    &miss
                };
                loaded(bench, target, call, Load::Sequential, share).await
            },
        )
        .await?;
    let after = thrifty.semantic_stats(&bench.client).await?;
    result.notes.push(semantic_note(&before, &after));
    Ok(result)
}

/// Distinct long-message misses, streamed, through a default thrifty: time to the first
/// SSE event.
async fn default_stream_first_chunk(bench: &Bench) -> Result<Comparison> {
    let thrifty = DefaultThrifty::start(bench, Store::Embedded, Variant::Default)?;
    let direct = long_question_stream();
    let miss = direct.clone().expecting("miss");
    let (requests, cap) = (bench.settings.streams, bench.settings.cap());
    bench
        .compare_with(
            DEFAULT_STREAM_C1,
            &thrifty.target,
            false,
            async |target: &Target, share: f64| {
                let call = if target.name == bench.direct.name {
                    &direct
                } else {
                    &miss
                };
                let n = scaled(requests, share);
                sequential(
                    bench,
                    target,
                    call,
                    Probe::FirstEvent,
                    n,
                    cap.mul_f64(share),
                )
                .await
            },
        )
        .await
}

/// The question the semantic scenario caches.
const SEMANTIC_QUESTION: &str = "How do I reset my password?";

/// A chat with the semantic scenario's system prompt and `question` as the user's message.
fn semantic_call(question: &str) -> Call {
    Call::openai_chat_owned(format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"system","content":"Be brief."}},{{"role":"user","content":"{question}"}}]}}"#
    ))
}

/// Distinct paraphrases of [`SEMANTIC_QUESTION`] that differ from it only in stop words, casing
/// and punctuation (so the guard has nothing to reject), in an order that varies every part.
fn paraphrases() -> Vec<String> {
    const LEADS: [&str; 7] = [
        "",
        "so ",
        "and ",
        "please ",
        "tell me ",
        "so tell me ",
        "just tell me ",
    ];
    const OPENERS: [&str; 8] = [
        "how can I",
        "how do i",
        "how should I",
        "how would I",
        "how could I",
        "how can i",
        "how will I",
        "how do I",
    ];
    const TAILS: [&str; 3] = [
        "reset my password",
        "reset the password",
        "reset my password please",
    ];
    const ENDS: [&str; 6] = ["", "?", " ?", "??", ".", "!"];
    let mut seen = std::collections::HashSet::new();
    let mut texts = Vec::new();
    for capital in [false, true] {
        for end in ENDS {
            for tail in TAILS {
                for lead in LEADS {
                    for opener in OPENERS {
                        let mut text = format!("{lead}{opener} {tail}{end}");
                        if capital {
                            text = text[..1].to_uppercase() + &text[1..];
                        }
                        if text != SEMANTIC_QUESTION && seen.insert(text.clone()) {
                            texts.push(text);
                        }
                    }
                }
            }
        }
    }
    texts
}

/// Semantic hits end to end (embedding included): one question cached, then distinct
/// paraphrases of it, one at a time, so that the query-vector LRU never answers.
async fn semantic_hits(bench: &Bench) -> Result<Outcome> {
    const WARMUP: usize = 10;
    let model_dir = std::env::var_os("THRIFTY_EMBED_DIR")
        .map(PathBuf::from)
        .context("THRIFTY_EMBED_DIR is not set: it must name the all-MiniLM-L6-v2 directory")?;
    let thrifty = DefaultThrifty::start(bench, Store::Embedded, Variant::SemanticStatic)?;
    let target = thrifty.target.clone();
    // The exact hit shows the answer is stored; the index entry follows in the background.
    warm_entry(bench, &target, &semantic_call(SEMANTIC_QUESTION), "hit")
        .await
        .context("semantic: caching the question")?;
    thrifty
        .wait_indexed(&bench.client, 1)
        .await
        .context("semantic: indexing the question")?;

    let texts = paraphrases();
    // At most half go one at a time, so the eight clients below have as many to send.
    let one_at_a_time = texts.len() / 2;
    let cap = bench.settings.cap().mul_f64(2.0);
    let mut latencies = Vec::new();
    let mut others: std::collections::BTreeMap<String, usize> = Default::default();
    let mut sent = 0;
    let mut started = Instant::now();
    let mut cpu_before = CpuTimes::now();
    let mut stats_before = thrifty.semantic_stats(&bench.client).await?;
    bench.fake.reset();
    for (i, text) in texts.iter().enumerate() {
        if i == WARMUP {
            cpu_before = CpuTimes::now();
            stats_before = thrifty.semantic_stats(&bench.client).await?;
            started = Instant::now();
            bench.fake.reset();
            others.clear();
        }
        if started.elapsed() >= cap
            || latencies.len() >= bench.settings.requests
            || i >= one_at_a_time
        {
            break;
        }
        let call = semantic_call(text);
        let (latency, outcome) =
            exchange(&bench.client, &call.uri(&target)?, &call, Probe::WholeBody).await?;
        let outcome = outcome.unwrap_or_else(|| "(none)".to_owned());
        if i >= WARMUP {
            sent += 1;
            if outcome == "semantic-hit" {
                latencies.push(latency);
            } else {
                *others.entry(outcome).or_default() += 1;
            }
        }
    }
    let elapsed = started.elapsed();
    let upstream = bench.fake.calls();
    let model_cpu = CpuTimes::now()
        .zip(cpu_before)
        .map(|(after, before)| after.minus(&before).model);
    let stats = thrifty.semantic_stats(&bench.client).await?;
    let embedded = stats["embeddings"].as_f64().unwrap_or(0.0)
        - stats_before["embeddings"].as_f64().unwrap_or(0.0);
    let model_cpu_ms = model_cpu
        .filter(|_| embedded > 0.0)
        .map(|cpu| cpu.as_secs_f64() * 1000.0 / embedded);

    // The texts not sent yet, from several clients at once: the model embeds one text per run,
    // and a lookup it cannot start on within `semantic.max_wait` goes upstream.
    let rest: Vec<String> = texts.iter().skip(sent + WARMUP).cloned().collect();
    let (loaded, loaded_others) = semantic_load(bench, &target, rest, cap).await?;
    let loaded_upstream = bench.fake.calls() - upstream;
    let loaded_stats = thrifty.semantic_stats(&bench.client).await?;
    drop(thrifty);
    let loaded_non_hits: usize = loaded_others.values().sum();
    ensure!(
        loaded_upstream == loaded_non_hits,
        "semantic c={SEMANTIC_TASKS}: {} hits and {loaded_non_hits} other answers but \
         {loaded_upstream} upstream calls",
        loaded.latencies.len()
    );
    let mut loaded_note = format!(
        "{} hits from {SEMANTIC_TASKS} clients sending distinct paraphrases, {:.0} hits/s",
        loaded.latencies.len(),
        loaded.latencies.len() as f64 / loaded.elapsed.as_secs_f64()
    );
    if !loaded_others.is_empty() {
        loaded_note.push_str(&format!("; not hits: {loaded_others:?}"));
    }
    loaded_note.push_str(&format!("; {}", semantic_note(&stats, &loaded_stats)));

    let hits = latencies.len();
    let non_hits: usize = others.values().sum();
    ensure!(
        upstream == non_hits,
        "semantic: {hits} hits and {non_hits} other answers but {upstream} upstream calls"
    );
    let mut note = format!(
        "{hits} hits of {sent} distinct paraphrases ({} generated, {WARMUP} warm-up), upstream \
         {upstream}, {:.0} hits/s; {embedded:.0} embeddings, model {} ms each by the stats",
        texts.len(),
        hits as f64 / elapsed.as_secs_f64(),
        stats["embedding_ms_per_text"]
            .as_f64()
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.2}")),
    );
    if let Some(ms) = model_cpu_ms {
        note.push_str(&format!(", {ms:.2} ms of the model thread's CPU each"));
    }
    if !others.is_empty() {
        note.push_str(&format!("; not hits: {others:?}"));
    }
    let mut run = Run::new(latencies, elapsed).finish();
    run.upstream_calls = upstream;

    // The same texts through the model alone (the proxy's own embedder, past its LRU), to show
    // how much of a hit is the embedding.
    let embedder = thrifty::semantic::embedder::Embedder::shared(&model_dir)
        .map_err(|e| anyhow!("semantic: {e}"))?;
    let mut embeddings = Vec::new();
    let mut alone_cpu_before = None;
    for (i, text) in texts.iter().cycle().take(sent + WARMUP).enumerate() {
        if i == WARMUP {
            alone_cpu_before = CpuTimes::now();
        }
        let started = Instant::now();
        let vectors = embedder.embed_many(std::slice::from_ref(text)).await;
        let latency = started.elapsed();
        ensure!(
            vectors.iter().all(Option::is_some),
            "semantic: the model failed"
        );
        embeddings.push(latency);
    }
    let embeddings = embeddings.split_off(WARMUP);
    let elapsed = embeddings.iter().sum();
    let alone_cpu_ms = CpuTimes::now()
        .zip(alone_cpu_before)
        .filter(|_| !embeddings.is_empty())
        .map(|(after, before)| {
            after.minus(&before).model.as_secs_f64() * 1000.0 / embeddings.len() as f64
        });

    // The same calls straight to the fake upstream, for scale.
    let mut direct = Vec::new();
    let started = Instant::now();
    for text in texts.iter().cycle().take(sent) {
        let call = semantic_call(text);
        let (latency, _) = exchange(
            &bench.client,
            &call.uri(&bench.direct)?,
            &call,
            Probe::WholeBody,
        )
        .await?;
        direct.push(latency);
    }
    let direct = Run::new(direct, started.elapsed()).finish();
    let mut alone_note = "the model alone on the same texts, one at a time".to_owned();
    if let Some(ms) = alone_cpu_ms {
        alone_note.push_str(&format!(", {ms:.2} ms of the model thread's CPU each"));
    }
    Ok(Outcome::Measured(vec![
        Measured {
            name: SEMANTIC_HIT.to_owned(),
            run,
            note,
            model_cpu_ms,
        },
        Measured {
            name: SEMANTIC_HIT_CN.to_owned(),
            run: loaded.finish(),
            note: loaded_note,
            model_cpu_ms: None,
        },
        Measured {
            name: SEMANTIC_DIRECT.to_owned(),
            run: direct,
            note: "the same calls straight to the fake upstream".to_owned(),
            model_cpu_ms: None,
        },
        Measured {
            name: SEMANTIC_EMBED.to_owned(),
            run: Run::new(embeddings, elapsed).finish(),
            note: alone_note,
            model_cpu_ms: alone_cpu_ms,
        },
    ]))
}

/// Sends `texts` as semantic calls from [`SEMANTIC_TASKS`] clients at once, each text once,
/// until they run out or `cap` passes: the hits' latencies, and how many answers were not hits.
async fn semantic_load(
    bench: &Bench,
    target: &Target,
    texts: Vec<String>,
    cap: Duration,
) -> Result<(Run, std::collections::BTreeMap<String, usize>)> {
    let queue = Arc::new(parking_lot::Mutex::new(texts));
    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..SEMANTIC_TASKS {
        let (client, queue, base) = (bench.client.clone(), queue.clone(), target.base.clone());
        set.spawn(async move {
            let target = Target {
                name: "thrifty",
                base,
            };
            let mut latencies = Vec::new();
            let mut others: Vec<String> = Vec::new();
            while started.elapsed() < cap {
                let Some(text) = queue.lock().pop() else {
                    break;
                };
                let call = semantic_call(&text);
                let (latency, outcome) =
                    exchange(&client, &call.uri(&target)?, &call, Probe::WholeBody).await?;
                match outcome.as_deref() {
                    Some("semantic-hit") => latencies.push(latency),
                    other => others.push(other.unwrap_or("(none)").to_owned()),
                }
            }
            Ok::<_, anyhow::Error>((latencies, others))
        });
    }
    let mut latencies = Vec::new();
    let mut others: std::collections::BTreeMap<String, usize> = Default::default();
    while let Some(joined) = set.join_next().await {
        let (mut hits, missed) = joined.context("a semantic client panicked")??;
        latencies.append(&mut hits);
        for outcome in missed {
            *others.entry(outcome).or_default() += 1;
        }
    }
    Ok((Run::new(latencies, started.elapsed()), others))
}

/// A small xorshift generator, so the index scenario needs no extra crate and is reproducible.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in (0, 1].
    fn unit_interval(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// A standard normal sample (Box-Muller).
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.unit_interval(), self.unit_interval());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }

    /// A uniformly random unit vector.
    fn unit_vector(&mut self, dims: usize) -> Vec<f32> {
        normalised((0..dims).map(|_| self.normal()).collect())
    }

    /// `n` unit vectors in topics of about 30, each at cosine about 0.64 from its topic's centre
    /// (0.41 from its topic's other vectors, 0 from the rest).
    fn topic_vectors(&mut self, n: usize, dims: usize) -> Vec<Vec<f32>> {
        let centres: Vec<Vec<f32>> = (0..(n / 30).max(1))
            .map(|_| self.unit_vector(dims))
            .collect();
        let spread = 1.2 / (dims as f32).sqrt();
        (0..n)
            .map(|_| {
                let centre = &centres[(self.next_u64() % centres.len() as u64) as usize];
                normalised(centre.iter().map(|x| x + spread * self.normal()).collect())
            })
            .collect()
    }
}

fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// `Index::search` alone, in one partition of 384-dim vectors: exhaustively over sketches at
/// 2k, 10k and 100k entries, through HNSW at 10k and 100k. Each index is loaded the way a
/// restart loads it (`Index::insert_many`, graph built with parallel inserts), and the load is
/// timed. Each query is a stored vector with noise added (cosine about 0.95), so there is a true
/// answer above the threshold; recall is the share of queries whose best candidate is the exact
/// nearest neighbour. Then single inserts into the 100k graph are timed, as `remember` makes
/// them.
///
/// The vectors come in topics of about 30 ([`Rng::topic_vectors`]): uniformly random vectors
/// are the worst case for a graph (nothing to follow) and cost HNSW twice what 3,000 real
/// all-MiniLM-L6-v2 embeddings of the evaluation sentences do, while these cost the same.
fn index_lookups() -> Result<Vec<Measured>> {
    use thrifty::semantic::index::{Entry, Index};
    const DIMS: usize = 384;
    const QUERIES: usize = 1000;
    const INSERTS: usize = 1000;
    const THRESHOLD: f32 = 0.88;
    const K: usize = 4;
    const PARTITION: &str = "bench";

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut measured = Vec::new();
    for size in [2_000, 10_000, 100_000] {
        let vectors = rng.topic_vectors(size, DIMS);
        let queries: Vec<(Vec<f32>, usize)> = (0..QUERIES)
            .map(|_| {
                let target = (rng.next_u64() % size as u64) as usize;
                let query = normalised(
                    vectors[target]
                        .iter()
                        .map(|x| x + 0.33 / (DIMS as f32).sqrt() * rng.normal())
                        .collect(),
                );
                let best = nearest(&vectors, &query);
                (query, best)
            })
            .collect();
        let modes: &[bool] = if size < 10_000 {
            &[false]
        } else {
            &[false, true]
        };
        for &graph in modes {
            let ann_above = if graph { 2_048 } else { usize::MAX };
            let index = Index::new(200_000, 200_000, ann_above);
            let started = Instant::now();
            index.insert_many(vectors.iter().enumerate().map(|(n, v)| Entry {
                partition: PARTITION.to_owned(),
                answer: format!("a{n}"),
                text: format!("q{n}"),
                vector: v.clone(),
            }));
            let build = started.elapsed();
            ensure!(
                index.len() == size && index.searches_graph(PARTITION) == graph,
                "the index holds {} of {size}, graph {}",
                index.len(),
                index.searches_graph(PARTITION)
            );
            let mut latencies = Vec::with_capacity(QUERIES);
            let mut found = 0;
            for (query, best) in &queries {
                let started = Instant::now();
                let candidates = index.search(PARTITION, query, THRESHOLD, K);
                latencies.push(started.elapsed());
                if candidates
                    .first()
                    .is_some_and(|c| c.item.answer == format!("a{best}"))
                {
                    found += 1;
                }
            }
            let label = if graph { "hnsw" } else { "scan" };
            let elapsed = latencies.iter().sum();
            measured.push(Measured {
                name: format!("{INDEX_LOOKUP} {}k {label}", size / 1000),
                run: Run::new(latencies, elapsed).finish(),
                note: format!(
                    "recall@1 {:.1}%, loaded in {:.2} s",
                    found as f64 * 100.0 / QUERIES as f64,
                    build.as_secs_f64()
                ),
                model_cpu_ms: None,
            });
            if graph && size == 100_000 {
                let mut latencies = Vec::with_capacity(INSERTS);
                for n in 0..INSERTS {
                    let v = rng.unit_vector(DIMS);
                    let started = Instant::now();
                    index.insert(PARTITION, &format!("b{n}"), &format!("r{n}"), v);
                    latencies.push(started.elapsed());
                }
                let elapsed = latencies.iter().sum();
                measured.push(Measured {
                    name: format!("{INDEX_INSERT} 100k {label}"),
                    run: Run::new(latencies, elapsed).finish(),
                    note: "one at a time, as a new answer is remembered".to_owned(),
                    model_cpu_ms: None,
                });
            }
        }
    }
    Ok(measured)
}

/// The position of the stored vector most similar to `query`, by exhaustive search.
fn nearest(vectors: &[Vec<f32>], query: &[f32]) -> usize {
    use thrifty::semantic::embedder::similarity;
    vectors
        .iter()
        .enumerate()
        .map(|(n, v)| (similarity(v, query), n))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map_or(0, |(_, n)| n)
}

fn scaled(total: usize, share: f64) -> usize {
    ((total as f64 * share).round() as usize).max(1)
}

// ---------------------------------------------------------------------------------------------
// Settings.
// ---------------------------------------------------------------------------------------------

struct Settings {
    requests: usize,
    streams: usize,
    concurrency: usize,
    secs: f64,
    rounds: usize,
    warmup: f64,
    proxy_workers: usize,
    /// Scenario names (substrings) from the command line; empty runs them all.
    filters: Vec<String>,
}

impl Settings {
    fn from_env() -> Result<Self> {
        let settings = Settings {
            requests: env_or("THRIFTY_BENCH_REQUESTS", 2000)?,
            streams: env_or("THRIFTY_BENCH_STREAMS", 1000)?,
            concurrency: env_or("THRIFTY_BENCH_CONCURRENCY", 32)?,
            secs: env_or("THRIFTY_BENCH_SECS", 3.0)?,
            rounds: env_or("THRIFTY_BENCH_ROUNDS", 3)?,
            warmup: env_or("THRIFTY_BENCH_WARMUP", 0.1)?,
            proxy_workers: env_or("THRIFTY_BENCH_PROXY_WORKERS", 1)?,
            // Cargo passes `--bench`; everything that is not a flag is a filter.
            filters: std::env::args()
                .skip(1)
                .filter(|a| !a.starts_with('-'))
                .collect(),
        };
        ensure!(
            settings.requests > 0 && settings.streams > 0 && settings.concurrency > 0,
            "request counts and concurrency must be above zero"
        );
        ensure!(
            settings.rounds > 0,
            "THRIFTY_BENCH_ROUNDS must be above zero"
        );
        ensure!(
            settings.secs > 0.0 && settings.warmup >= 0.0,
            "THRIFTY_BENCH_SECS must be above zero and THRIFTY_BENCH_WARMUP not negative"
        );
        Ok(settings)
    }

    /// The most a count-bound scenario may spend per target, so that a slow target cannot
    /// stretch the run: `THRIFTY_BENCH_SECS`.
    fn cap(&self) -> Duration {
        Duration::from_secs_f64(self.secs)
    }

    fn wants(&self, scenario: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| scenario.contains(f.as_str()))
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .map_err(|_| anyhow!("{name}={value:?} is not a valid value")),
        Err(_) => Ok(default),
    }
}

// ---------------------------------------------------------------------------------------------
// The servers, each on its own runtime and OS thread.
// ---------------------------------------------------------------------------------------------

/// A server's OS thread; dropping it asks the server to stop and waits for the thread.
struct ServerThread {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The subscriber `thrifty serve` installs, writing to `dir/thrifty.log` instead of stderr.
fn log_like_serve(dir: &Path) -> Result<Option<thrifty::telemetry::Flusher>> {
    // The format as the config reads it, from `THRIFTY_LOG_FORMAT` alone.
    let env = |name: &str| match name {
        "THRIFTY_LOG_FORMAT" => std::env::var(name).ok(),
        _ => None,
    };
    let mut raw = RawConfig::default();
    raw.apply_env(&env).context("THRIFTY_LOG_FORMAT")?;
    let format = raw.log.format;
    let file = std::fs::File::create(dir.join("thrifty.log")).context("creating thrifty.log")?;
    Ok(thrifty::telemetry::init_with(format, Box::new(file), false))
}

/// A `current_thread` runtime for one worker, else a multi-thread one; its threads carry
/// `name` so that their CPU time can be told apart.
fn runtime(name: &str, workers: usize) -> std::io::Result<Runtime> {
    let mut builder = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    builder.enable_all().thread_name(name).build()
}

/// Starts the fake upstream on its own thread and hands back its handle (usable from any
/// thread: the server task lives on the fake's runtime).
fn start_fake() -> Result<(FakeLlm, ServerThread)> {
    let (ready_tx, ready_rx) = std_mpsc::channel::<std::io::Result<FakeLlm>>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = thread::Builder::new()
        .name(FAKE_THREAD.to_owned())
        .spawn(move || {
            let runtime = match runtime(FAKE_THREAD, 1) {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            // An LLM takes time to answer; THRIFTY_BENCH_UPSTREAM_MS models that (0: none).
            let upstream_ms = std::env::var("THRIFTY_BENCH_UPSTREAM_MS")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            runtime.block_on(async move {
                let fake = FakeLlm::builder()
                    .latency(Duration::from_millis(upstream_ms))
                    .start()
                    .await;
                if ready_tx.send(Ok(fake)).is_ok() {
                    let _ = stop_rx.await;
                }
            });
        })
        .context("spawning the fake upstream's thread")?;
    let fake = ready_rx
        .recv()
        .context("the fake upstream did not start")?
        .context("building the fake upstream's runtime")?;
    Ok((
        fake,
        ServerThread {
            stop: Some(stop_tx),
            thread: Some(thread),
        },
    ))
}

/// The config a user runs (exact and semantic cache, compression and savings ledger at their
/// defaults; the embedded store unless `THRIFTY_REDIS_URL` is set) with the fake as the OpenAI
/// and Ollama upstreams and the store's directory at `data_dir`.
fn default_config_for(fake: &FakeLlm, data_dir: &Path) -> RawConfig {
    let mut raw = RawConfig {
        upstreams: vec![
            RawUpstream::new("openai", &fake.openai_base(), RawDialect::Openai),
            RawUpstream::new("ollama", &fake.url(), RawDialect::Ollama),
        ],
        ..RawConfig::default()
    };
    raw.store.data_dir = data_dir.to_owned();
    // Keep-alive connections are idle at the end; do not wait long for them.
    raw.server.shutdown_grace = Duration::from_secs(1);
    raw
}

/// [`default_config_for`] with the cache off: the proxy path alone, every request reaching
/// the upstream.
fn config_for(fake: &FakeLlm, data_dir: &Path) -> RawConfig {
    let mut raw = default_config_for(fake, data_dir);
    raw.cache.enabled = false;
    raw
}

/// A fresh directory under the system temp dir, removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(label: &str) -> Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "thrifty-bench-{label}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(ScratchDir(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts thrifty (`thrifty::run`, as `tests/common/thrifty.rs` does) on 127.0.0.1:0 in its
/// own thread with `workers` tokio workers.
fn start_thrifty(raw: RawConfig, workers: usize) -> Result<(SocketAddr, ServerThread)> {
    start_thrifty_with_env(raw, workers, &[])
}

/// [`start_thrifty`] with the config validated against an environment holding only `vars`
/// (as `tests/common/thrifty.rs` does), e.g. `THRIFTY_REDIS_URL`.
fn start_thrifty_with_env(
    raw: RawConfig,
    workers: usize,
    vars: &[(&str, String)],
) -> Result<(SocketAddr, ServerThread)> {
    let env = |name: &str| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    };
    let config = raw
        .validate(&env)
        .context("the benchmark's thrifty config is invalid")?;
    let (ready_tx, ready_rx) = std_mpsc::channel::<std::io::Result<SocketAddr>>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = thread::Builder::new()
        .name(THRIFTY_THREAD.to_owned())
        .spawn(move || {
            let runtime = match runtime(THRIFTY_THREAD, workers) {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                let bound = TcpListener::bind("127.0.0.1:0")
                    .await
                    .and_then(|listener| Ok((listener.local_addr()?, listener)));
                let listener = match bound {
                    Ok((addr, listener)) => {
                        if ready_tx.send(Ok(addr)).is_err() {
                            return;
                        }
                        listener
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let shutdown = async {
                    let _ = stop_rx.await;
                };
                if let Err(e) = thrifty::run(listener, config, shutdown).await {
                    eprintln!("thrifty stopped: {e}");
                }
            });
        })
        .context("spawning thrifty's thread")?;
    let addr = ready_rx
        .recv()
        .context("thrifty did not start")?
        .context("starting thrifty")?;
    Ok((
        addr,
        ServerThread {
            stop: Some(stop_tx),
            thread: Some(thread),
        },
    ))
}

// ---------------------------------------------------------------------------------------------
// The load generator.
// ---------------------------------------------------------------------------------------------

/// Where requests go: the fake itself or thrifty in front of it.
#[derive(Clone, Debug)]
struct Target {
    name: &'static str,
    /// `http://127.0.0.1:PORT`
    base: String,
}

/// One kind of request.
#[derive(Clone, Debug)]
struct Call {
    /// The path on thrifty and on the fake alike (thrifty maps `/v1` onto the fake's `/v1`).
    path: &'static str,
    body: CallBody,
    /// The `x-thrifty-cache` value every answer must carry, if any.
    expect_cache: Option<&'static str>,
}

/// What a call sends.
#[derive(Clone, Debug)]
enum CallBody {
    /// The same bytes every time.
    Fixed(Bytes),
    /// `head`, a number, `tail`: every request takes the next of [`NUMBERS`], so that each is
    /// a question nobody has asked before.
    Numbered { head: String, tail: String },
}

/// The numbers of every numbered request the process sends, whichever call and scenario it
/// belongs to: the thrifties of one process share one model and its memory of recent vectors,
/// so a scenario that started its own count again would ask questions an earlier one had
/// already had embedded.
static NUMBERS: AtomicU64 = AtomicU64::new(1);

impl Call {
    fn openai_chat(body: &'static str) -> Self {
        Call {
            path: "/v1/chat/completions",
            body: CallBody::Fixed(Bytes::from_static(body.as_bytes())),
            expect_cache: None,
        }
    }

    fn openai_chat_owned(body: String) -> Self {
        Call {
            path: "/v1/chat/completions",
            body: CallBody::Fixed(Bytes::from(body)),
            expect_cache: None,
        }
    }

    /// A chat whose body is `head`, a request number, `tail`; clones share the numbering.
    fn openai_chat_numbered(head: String, tail: String) -> Self {
        Call {
            path: "/v1/chat/completions",
            body: CallBody::Numbered { head, tail },
            expect_cache: None,
        }
    }

    /// The bytes of the next request.
    fn body(&self) -> Bytes {
        match &self.body {
            CallBody::Fixed(bytes) => bytes.clone(),
            CallBody::Numbered { head, tail } => {
                let n = NUMBERS.fetch_add(1, Ordering::Relaxed);
                Bytes::from(format!("{head}{n}{tail}"))
            }
        }
    }

    /// The same call, failing unless every answer carries `x-thrifty-cache: outcome`.
    fn expecting(mut self, outcome: &'static str) -> Self {
        self.expect_cache = Some(outcome);
        self
    }

    fn uri(&self, target: &Target) -> Result<Uri> {
        format!("{}{}", target.base, self.path)
            .parse()
            .context("bad request URI")
    }
}

/// What one request's latency is measured to.
#[derive(Clone, Copy, Debug)]
enum Probe {
    /// The whole response body has arrived.
    WholeBody,
    /// The first complete SSE event (`data: ...\n\n`) has arrived; the rest is drained untimed.
    FirstEvent,
}

/// What the bench shares with every scenario.
struct Bench {
    settings: Settings,
    client: BenchClient,
    fake: FakeLlm,
    direct: Target,
    thrifty: Target,
}

impl Bench {
    /// Warms both targets up, then alternates them for the configured rounds and pools the
    /// samples. `measure(target, share)` spends `share` of the scenario's budget on `target`.
    async fn compare(
        &self,
        scenario: &'static str,
        measure: impl AsyncFn(&Target, f64) -> Result<Run>,
    ) -> Result<Comparison> {
        self.compare_with(scenario, &self.thrifty, false, measure)
            .await
    }

    /// [`Bench::compare`] against another thrifty; `cached` says its answers come from the
    /// cache, so that none of its requests may reach the upstream.
    async fn compare_with(
        &self,
        scenario: &'static str,
        proxy: &Target,
        cached: bool,
        measure: impl AsyncFn(&Target, f64) -> Result<Run>,
    ) -> Result<Comparison> {
        self.compare_all(scenario, &[(proxy, cached)], measure)
            .await
    }

    /// [`Bench::compare`] for direct and any number of thrifties (each with whether its
    /// answers come from the cache). Every round rotates the order, so that each target goes
    /// first once in as many rounds as there are targets.
    async fn compare_all(
        &self,
        scenario: &'static str,
        proxies: &[(&Target, bool)],
        measure: impl AsyncFn(&Target, f64) -> Result<Run>,
    ) -> Result<Comparison> {
        let rounds = self.settings.rounds;
        let targets: Vec<(&Target, bool)> = std::iter::once((&self.direct, false))
            .chain(proxies.iter().copied())
            .collect();
        if self.settings.warmup > 0.0 {
            for (target, _) in &targets {
                measure(target, self.settings.warmup)
                    .await
                    .with_context(|| format!("{scenario}: warming up {}", target.name))?;
            }
        }
        let mut pooled: Vec<Run> = targets.iter().map(|_| Run::default()).collect();
        for round in 0..rounds {
            for i in 0..targets.len() {
                let at = (i + round) % targets.len();
                let target = targets[at].0;
                self.fake.reset();
                let cpu_before = CpuTimes::now();
                let mut run = measure(target, 1.0 / rounds as f64)
                    .await
                    .with_context(|| format!("{scenario}: measuring {}", target.name))?;
                // The work a phase leaves behind (a store's write-behind commits, the ledger's
                // last batch) is done before the next phase starts, and counted in this one's
                // CPU, not in whatever runs next.
                tokio::time::sleep(SETTLE).await;
                run.cpu = CpuTimes::now()
                    .zip(cpu_before)
                    .map(|(after, before)| after.minus(&before));
                run.upstream_calls = self.fake.calls();
                pooled[at].absorb(run);
            }
        }
        let sides = targets
            .iter()
            .zip(pooled)
            .map(|(&(target, cached), run)| Side {
                label: target.name,
                cached,
                run: run.finish(),
            })
            .collect();
        Ok(Comparison {
            scenario,
            sides,
            notes: Vec::new(),
        })
    }
}

/// How long each measured phase is given to finish its background work: longer than the
/// embedded store's write-behind linger and the ledger's, with their commits.
const SETTLE: Duration = Duration::from_millis(400);

/// Sends `n` requests one after the other, stopping early once `cap` has passed.
async fn sequential(
    bench: &Bench,
    target: &Target,
    call: &Call,
    probe: Probe,
    n: usize,
    cap: Duration,
) -> Result<Run> {
    let uri = call.uri(target)?;
    let mut latencies = Vec::with_capacity(n);
    let started = Instant::now();
    while latencies.len() < n && started.elapsed() < cap {
        latencies.push(send(&bench.client, &uri, call, probe).await?);
    }
    Ok(Run::new(latencies, started.elapsed()))
}

/// Keeps `tasks` requests in flight for `duration`.
async fn concurrent(
    bench: &Bench,
    target: &Target,
    call: &Call,
    probe: Probe,
    tasks: usize,
    duration: Duration,
) -> Result<Run> {
    let uri = call.uri(target)?;
    let started = Instant::now();
    let deadline = started + duration;
    let mut set = JoinSet::new();
    for _ in 0..tasks {
        let (client, uri, call) = (bench.client.clone(), uri.clone(), call.clone());
        set.spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                latencies.push(send(&client, &uri, &call, probe).await?);
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(joined) = set.join_next().await {
        latencies.extend(joined.context("a load task panicked")??);
    }
    Ok(Run::new(latencies, started.elapsed()))
}

/// Sends one request and returns its latency as `probe` defines it; fails unless the answer
/// is a 200 with the fake's echo.
async fn send(client: &BenchClient, uri: &Uri, call: &Call, probe: Probe) -> Result<Duration> {
    let (latency, outcome) = exchange(client, uri, call, probe).await?;
    if let Some(expected) = call.expect_cache {
        ensure!(
            outcome.as_deref() == Some(expected),
            "{uri} answered x-thrifty-cache {outcome:?}, expected {expected:?}"
        );
    }
    Ok(latency)
}

/// [`send`] without the cache check: the latency and the `x-thrifty-cache` header, if any.
async fn exchange(
    client: &BenchClient,
    uri: &Uri,
    call: &Call,
    probe: Probe,
) -> Result<(Duration, Option<String>)> {
    let mut request = Request::new(Full::new(call.body()));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri.clone();
    let headers = request.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_static("Bearer sk-bench-0123456789abcdef"),
    );

    let started = Instant::now();
    let response = client.request(request).await.context("request failed")?;
    let status = response.status();
    let outcome = response
        .headers()
        .get("x-thrifty-cache")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = response.into_body();
    let mut received = BytesMut::new();
    let mut latency = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.context("reading the response body")?.into_data() else {
            continue;
        };
        received.extend_from_slice(&data);
        if latency.is_none() && matches!(probe, Probe::FirstEvent) && contains(&received, b"\n\n") {
            latency = Some(started.elapsed());
        }
    }
    let latency = match probe {
        Probe::WholeBody => started.elapsed(),
        Probe::FirstEvent => latency.ok_or_else(|| anyhow!("the stream had no SSE event"))?,
    };

    if status != StatusCode::OK {
        bail!(
            "{uri} answered {status}: {}",
            String::from_utf8_lossy(&received)
        );
    }
    let well_formed = contains(&received, b"Echo:")
        && match probe {
            Probe::WholeBody => true,
            Probe::FirstEvent => {
                received.starts_with(b"data: {") && received.ends_with(b"data: [DONE]\n\n")
            }
        };
    ensure!(
        well_formed,
        "{uri} answered an unexpected body: {}",
        String::from_utf8_lossy(&received)
    );
    Ok((latency, outcome))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// Measurements.
// ---------------------------------------------------------------------------------------------

/// The samples of one target in one scenario (possibly pooled over rounds).
#[derive(Default)]
struct Run {
    latencies: Vec<Duration>,
    elapsed: Duration,
    /// CPU time each party spent during the run, when `/proc` could tell.
    cpu: Option<CpuTimes>,
    /// Requests that reached the fake upstream during the run.
    upstream_calls: usize,
}

impl Run {
    fn new(latencies: Vec<Duration>, elapsed: Duration) -> Self {
        Run {
            latencies,
            elapsed,
            ..Run::default()
        }
    }

    fn absorb(&mut self, mut other: Run) {
        self.cpu = match (self.cpu.take(), other.cpu) {
            (Some(a), Some(b)) => Some(a.plus(&b)),
            // A fresh run takes the other's figures; otherwise a gap spoils the sum.
            (None, cpu) if self.latencies.is_empty() => cpu,
            _ => None,
        };
        self.latencies.append(&mut other.latencies);
        self.elapsed += other.elapsed;
        self.upstream_calls += other.upstream_calls;
    }

    /// Sorts the samples for [`Run::percentile_ms`].
    fn finish(mut self) -> Self {
        self.latencies.sort_unstable();
        self
    }

    fn requests(&self) -> usize {
        self.latencies.len()
    }

    fn per_second(&self) -> f64 {
        self.requests() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// Nearest-rank percentile in milliseconds; [`Run::finish`] must have sorted the samples.
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.latencies.len()) - 1;
        self.latencies[index].as_secs_f64() * 1000.0
    }

    /// Microseconds of CPU one party spent per request.
    fn cpu_per_request(&self, pick: impl Fn(&CpuTimes) -> Duration) -> Option<f64> {
        let cpu = self.cpu.as_ref()?;
        (self.requests() > 0).then(|| pick(cpu).as_secs_f64() * 1e6 / self.requests() as f64)
    }
}

/// The runs of one scenario: direct first, then each thrifty in the order measured.
struct Comparison {
    scenario: &'static str,
    sides: Vec<Side>,
    /// What thrifty said about the scenario (its semantic stage's counters, say).
    notes: Vec<String>,
}

/// One target's pooled run in a comparison.
struct Side {
    label: &'static str,
    /// Its answers came from the cache, so none of its requests may reach the upstream.
    cached: bool,
    run: Run,
}

impl Comparison {
    fn direct(&self) -> &Run {
        &self.sides[0].run
    }

    /// The first thrifty measured.
    fn thrifty(&self) -> &Run {
        &self.sides[1].run
    }

    fn side(&self, label: &str) -> Option<&Run> {
        self.sides.iter().find(|s| s.label == label).map(|s| &s.run)
    }
}

/// User + system CPU time of the benchmark's threads, by party.
#[derive(Clone, Copy, Debug, Default)]
struct CpuTimes {
    client: Duration,
    fake: Duration,
    /// thrifty's runtime and the threads it starts (`thrifty-*`), the model's included.
    thrifty: Duration,
    /// The part of `thrifty` spent on the embedding model's thread.
    model: Duration,
}

impl CpuTimes {
    /// Reads `/proc/self/task/*/stat`; `None` where there is no `/proc`.
    fn now() -> Option<CpuTimes> {
        let mut times = CpuTimes::default();
        for task in std::fs::read_dir("/proc/self/task").ok()? {
            let Ok(stat) = std::fs::read_to_string(task.ok()?.path().join("stat")) else {
                continue; // The thread ended.
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let name = &stat[open + 1..close];
            // After the name: state (field 3) ... utime (14) and stime (15).
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            let ticks = |i: usize| {
                fields
                    .get(i)
                    .and_then(|f| f.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let cpu = Duration::from_secs_f64(
                (ticks(11) + ticks(12)) as f64 / CLOCK_TICKS_PER_SEC as f64,
            );
            match name {
                CLIENT_THREAD => times.client += cpu,
                FAKE_THREAD => times.fake += cpu,
                THRIFTY_THREAD => times.thrifty += cpu,
                MODEL_THREAD => {
                    times.thrifty += cpu;
                    times.model += cpu;
                }
                other if other.starts_with(THRIFTY_THREADS) => times.thrifty += cpu,
                _ => {}
            }
        }
        Some(times)
    }

    fn minus(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            client: self.client.saturating_sub(earlier.client),
            fake: self.fake.saturating_sub(earlier.fake),
            thrifty: self.thrifty.saturating_sub(earlier.thrifty),
            model: self.model.saturating_sub(earlier.model),
        }
    }

    fn plus(&self, other: &CpuTimes) -> CpuTimes {
        CpuTimes {
            client: self.client + other.client,
            fake: self.fake + other.fake,
            thrifty: self.thrifty + other.thrifty,
            model: self.model + other.model,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Report.
// ---------------------------------------------------------------------------------------------

fn print_table(results: &[Comparison]) {
    println!();
    println!(
        "{:<30} {:<8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>9} | {:>23}",
        "scenario",
        "target",
        "requests",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "upstream",
        "CPU µs/req cl/fk/th(md)",
    );
    println!("{}", "-".repeat(123));
    for result in results {
        for side in &result.sides {
            let run = &side.run;
            let cpu = |pick: fn(&CpuTimes) -> Duration| {
                run.cpu_per_request(pick)
                    .map_or_else(|| "-".to_owned(), |us| format!("{us:.0}"))
            };
            let cpu = format!(
                "{}/{}/{}({})",
                cpu(|c| c.client),
                cpu(|c| c.fake),
                cpu(|c| c.thrifty),
                cpu(|c| c.model)
            );
            println!(
                "{:<30} {:<8} {:>8} {:>9.0} {:>8.3} {:>8.3} {:>8.3} {:>9} | {:>23}",
                result.scenario,
                side.label,
                run.requests(),
                run.per_second(),
                run.percentile_ms(50.0),
                run.percentile_ms(90.0),
                run.percentile_ms(99.0),
                run.upstream_calls,
                cpu,
            );
        }
        for note in &result.notes {
            println!("  {}: {note}", result.scenario);
        }
    }
    println!(
        "(CPU per request from /proc at 10 ms resolution: client / fake upstream / thrifty, its \
         model thread included (that thread alone), and the background work a phase leaves \
         behind, done in a pause after it; sem-off is the same build with \
         semantic.enabled = false)"
    );
}

fn print_measured(measured: &[Measured]) {
    println!();
    println!(
        "{:<28} {:>8} {:>8} {:>8} {:>8} {:>8}  note",
        "measured alone", "samples", "p50 ms", "p90 ms", "p99 ms", "max ms",
    );
    println!("{}", "-".repeat(114));
    for m in measured {
        println!(
            "{:<28} {:>8} {:>8.3} {:>8.3} {:>8.3} {:>8.3}  {}",
            m.name,
            m.run.requests(),
            m.run.percentile_ms(50.0),
            m.run.percentile_ms(90.0),
            m.run.percentile_ms(99.0),
            m.run.percentile_ms(100.0),
            m.note,
        );
    }
}

fn print_summary(results: &[Comparison], measured: &[Measured], concurrency: usize) {
    let find = |name: &str| results.iter().find(|r| r.scenario == name);
    println!();
    if let Some(c) = find(CHAT_CN) {
        let ratio = c.thrifty().per_second() / c.direct().per_second();
        println!(
            "throughput thrifty/direct at c={concurrency}:  {ratio:>7.3}     (target >= 0.85)  {}",
            verdict(ratio >= 0.85)
        );
    }
    if let Some(c) = find(CHAT_C1) {
        let p50 = c.thrifty().percentile_ms(50.0) - c.direct().percentile_ms(50.0);
        let p99 = c.thrifty().percentile_ms(99.0) - c.direct().percentile_ms(99.0);
        println!(
            "added p50 at c=1:                {p50:>7.3} ms  (target <= 0.15)  {}",
            verdict(p50 <= 0.15)
        );
        println!(
            "added p99 at c=1:                {p99:>7.3} ms  (target <= 1)     {}",
            verdict(p99 <= 1.0)
        );
    }
    if let Some(c) = find(STREAM_C1) {
        let p50 = c.thrifty().percentile_ms(50.0) - c.direct().percentile_ms(50.0);
        let p99 = c.thrifty().percentile_ms(99.0) - c.direct().percentile_ms(99.0);
        println!("added first-chunk p50 at c=1:    {p50:>7.3} ms");
        println!("added first-chunk p99 at c=1:    {p99:>7.3} ms");
        if c.direct().percentile_ms(50.0) > 20.0 {
            println!(
                "  note: the fake upstream itself takes ~40 ms to its first SSE event, the mark of \
                 Nagle's algorithm meeting delayed ACKs (its accepted sockets lack TCP_NODELAY); \
                 the first-chunk figures measure that, not thrifty"
            );
        }
    }
    print_cache_summary(results, measured, concurrency);
    print_default_summary(results, measured, concurrency);
}

/// The default configuration's figures against their targets.
fn print_default_summary(results: &[Comparison], measured: &[Measured], concurrency: usize) {
    let find = |name: &str| results.iter().find(|r| r.scenario == name);
    let added_p50 =
        |c: &Comparison| c.thrifty().percentile_ms(50.0) - c.direct().percentile_ms(50.0);
    for (store, c1, cn, short) in [
        (
            "embedded",
            DEFAULT_MISS_C1,
            DEFAULT_MISS_CN,
            DEFAULT_SHORT_C1,
        ),
        (
            "redis",
            DEFAULT_REDIS_MISS_C1,
            DEFAULT_REDIS_MISS_CN,
            DEFAULT_REDIS_SHORT_C1,
        ),
    ] {
        if let Some(c) = find(cn) {
            let req_s = c.thrifty().per_second();
            let direct = req_s / c.direct().per_second();
            println!(
                "default {store:<8} miss req/s c={concurrency} / direct:        {direct:>7.3}     \
                 (target >= 0.4)   {}",
                verdict(direct >= 0.4)
            );
            if let Some(off) = c.side("sem-off") {
                let ratio = req_s / off.per_second();
                println!(
                    "default {store:<8} miss req/s c={concurrency} / semantic off:  {ratio:>7.3}     \
                     (target >= 0.9)   {}",
                    verdict(ratio >= 0.9)
                );
            }
        }
        if let Some(c) = find(c1) {
            let p50 = added_p50(c);
            println!(
                "default {store:<8} long miss added p50 c=1:       {p50:>7.3} ms  \
                 (target <= 0.2)   {}",
                verdict(p50 <= 0.2)
            );
        }
        if let Some(c) = find(short) {
            let p50 = added_p50(c);
            println!(
                "default {store:<8} short miss added p50 c=1:      {p50:>7.3} ms  \
                 (target <= 5)     {}",
                verdict(p50 <= 5.0)
            );
        }
    }
    if let Some(c) = find(DEFAULT_STREAM_C1) {
        let p50 = added_p50(c);
        println!("default embedded stream first chunk added p50:  {p50:>7.3} ms");
    }
    for c in results.iter().filter(|c| c.scenario.starts_with("default")) {
        if let Some(us) = c.thrifty().cpu_per_request(|t| t.thrifty) {
            println!("{:<30} thrifty CPU per request: {us:>8.0} µs", c.scenario);
        }
    }
    let alone = |name: &str| measured.iter().find(|m| m.name == name);
    if let Some(m) = alone(SEMANTIC_HIT) {
        let p50 = m.run.percentile_ms(50.0);
        println!(
            "semantic hit p50 at c=1:         {p50:>7.3} ms  (target <= 5)     {}",
            verdict(p50 <= 5.0)
        );
        if let Some(ms) = m.model_cpu_ms {
            println!("CPU per embedding of a short question: {ms:>7.3} ms (model thread, hits)");
        }
    }
    if let Some(ms) = alone(SEMANTIC_EMBED).and_then(|m| m.model_cpu_ms) {
        println!("CPU per embedding, model alone:        {ms:>7.3} ms");
    }
}

/// The cache's figures against their targets.
fn print_cache_summary(results: &[Comparison], measured: &[Measured], concurrency: usize) {
    let find = |name: &str| results.iter().find(|r| r.scenario == name);
    for (store, name) in [("redis", HIT_REDIS_CN), ("embedded", HIT_EMBEDDED_CN)] {
        if let Some(c) = find(name) {
            let ratio = c.thrifty().per_second() / c.direct().per_second();
            println!(
                "hit/direct-miss req/s c={concurrency} {store:<8} {ratio:>7.3}     (target >= 2)     {}",
                verdict(ratio >= 2.0)
            );
        }
    }
    if let Some(c) = find(HIT_REDIS_C1) {
        let p50 = c.thrifty().percentile_ms(50.0);
        println!(
            "hit p50 at c=1 via redis:        {p50:>7.3} ms  (target <= 0.3)   {}",
            verdict(p50 <= 0.3)
        );
    }
    if let Some(c) = find(HIT_EMBEDDED_C1) {
        let p50 = c.thrifty().percentile_ms(50.0);
        println!("hit p50 at c=1 embedded:         {p50:>7.3} ms");
    }
    let alone = |name: &str| measured.iter().find(|m| m.name == name);
    for label in ["scan", "hnsw"] {
        if let Some(m) = alone(&format!("{INDEX_LOOKUP} 100k {label}")) {
            let p99 = m.run.percentile_ms(99.0);
            println!(
                "index lookup p99 at 100k {label}:   {p99:>7.3} ms  (target <= 1)     {}",
                verdict(p99 <= 1.0)
            );
        }
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "ok" } else { "MISSED" }
}

// ---------------------------------------------------------------------------------------------
// Main.
// ---------------------------------------------------------------------------------------------

fn main() -> Result<()> {
    let settings = Settings::from_env()?;
    let log_dir = ScratchDir::new("log")?;
    let _log = log_like_serve(log_dir.path())?;
    let store_dir = ScratchDir::new("store")?;
    let (fake, fake_thread) = start_fake()?;
    let (thrifty_addr, thrifty_thread) =
        start_thrifty(config_for(&fake, store_dir.path()), settings.proxy_workers)?;
    println!(
        "thrifty proxy benchmark: fake upstream at {}, thrifty at {thrifty_addr} ({} worker{}), \
         {} rounds, c=1 x{} requests, c={} x{}s, {} streams",
        fake.addr(),
        settings.proxy_workers,
        if settings.proxy_workers == 1 { "" } else { "s" },
        settings.rounds,
        settings.requests,
        settings.concurrency,
        settings.secs,
        settings.streams,
    );

    let direct = Target {
        name: "direct",
        base: fake.url(),
    };
    let thrifty = Target {
        name: "thrifty",
        base: format!("http://{thrifty_addr}"),
    };
    let client = thread::Builder::new()
        .name(CLIENT_THREAD.to_owned())
        .spawn(move || -> Result<()> {
            let runtime = runtime(CLIENT_THREAD, 1).context("building the client's runtime")?;
            runtime.block_on(async move {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                let bench = Bench {
                    client: Client::builder(TokioExecutor::new()).build(connector),
                    settings,
                    fake,
                    direct,
                    thrifty,
                };
                let started = Instant::now();
                let mut results = Vec::new();
                let mut measured = Vec::new();
                for scenario in SCENARIOS {
                    if bench.settings.wants(scenario.name) {
                        match (scenario.run)(&bench).await? {
                            Outcome::Compared(comparison) => results.push(comparison),
                            Outcome::Measured(runs) => measured.extend(runs),
                        }
                    }
                }
                for result in &results {
                    // Direct requests always reach the upstream; through thrifty they do unless
                    // the scenario answers from the cache, when none may.
                    for side in &result.sides {
                        let run = &side.run;
                        let expected = if side.cached { 0 } else { run.requests() };
                        ensure!(
                            run.upstream_calls == expected,
                            "{} {}: {} requests but {} upstream calls (expected {expected})",
                            result.scenario,
                            side.label,
                            run.requests(),
                            run.upstream_calls
                        );
                    }
                }
                if !results.is_empty() {
                    print_table(&results);
                }
                if !measured.is_empty() {
                    print_measured(&measured);
                }
                print_summary(&results, &measured, bench.settings.concurrency);
                println!("\nmeasured in {:.1} s", started.elapsed().as_secs_f64());
                Ok(())
            })
        })
        .context("spawning the client's thread")?;
    let outcome = client
        .join()
        .map_err(|_| anyhow!("the load generator panicked"))?;
    drop(thrifty_thread);
    drop(fake_thread);
    drop(store_dir);
    outcome
}
