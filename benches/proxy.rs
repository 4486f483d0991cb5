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
//! Each scenario warms both targets up, then alternates direct and thrifty for
//! `THRIFTY_BENCH_ROUNDS` rounds (swapping which goes first) and pools the samples, so that
//! noise from other work on the machine hits both targets alike.
//!
//! Adding a scenario (cache hits, say): write an `async fn(&Bench) -> Result<Comparison>` that
//! calls [`Bench::compare`] with a measuring closure built from [`sequential`] or
//! [`concurrent`], and list it in [`SCENARIOS`]. A scenario that needs another thrifty
//! configuration can start one with [`start_thrifty`].

#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

#[path = "../tests/common/fake_llm.rs"]
#[allow(
    dead_code,
    reason = "the benchmark uses only part of the fake upstream"
)]
mod fake_llm;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
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

const CLIENT_THREAD: &str = "bench-client";
const FAKE_THREAD: &str = "bench-fake";
const THRIFTY_THREAD: &str = "bench-thrifty";

/// Linux's `USER_HZ`: the unit of the CPU times in `/proc/*/stat` (100 on every mainstream
/// architecture).
const CLOCK_TICKS_PER_SEC: u64 = 100;

/// A typical small chat request.
const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a terse assistant."},{"role":"user","content":"Summarise the benefits of connection pooling for an HTTP reverse proxy in one sentence, please."}],"temperature":0.2,"max_tokens":64}"#;

/// The same request, streamed.
const CHAT_STREAM: &str = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"system","content":"You are a terse assistant."},{"role":"user","content":"Summarise the benefits of connection pooling for an HTTP reverse proxy in one sentence, please."}],"temperature":0.2,"max_tokens":64}"#;

type BenchClient = Client<HttpConnector, Full<Bytes>>;
type ScenarioFuture<'a> = Pin<Box<dyn Future<Output = Result<Comparison>> + 'a>>;

/// A named scenario; its name is what the command-line filter matches.
struct Scenario {
    name: &'static str,
    run: for<'a> fn(&'a Bench) -> ScenarioFuture<'a>,
}

const CHAT_C1: &str = "chat c=1";
const CHAT_CN: &str = "chat c=N";
const STREAM_C1: &str = "stream first chunk c=1";

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: CHAT_C1,
        run: |bench| Box::pin(chat_sequential(bench)),
    },
    Scenario {
        name: CHAT_CN,
        run: |bench| Box::pin(chat_concurrent(bench)),
    },
    Scenario {
        name: STREAM_C1,
        run: |bench| Box::pin(stream_first_chunk(bench)),
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
            runtime.block_on(async move {
                if ready_tx.send(Ok(FakeLlm::start().await)).is_ok() {
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

/// A config whose OpenAI and Ollama upstreams are both the fake, as the tests build it, with
/// the cache off (these scenarios measure the proxy path: every request reaches the upstream)
/// and the embedded store in `data_dir`.
fn config_for(fake: &FakeLlm, data_dir: &Path) -> RawConfig {
    let mut raw = RawConfig {
        upstreams: vec![
            RawUpstream::new("openai", &fake.openai_base(), RawDialect::Openai),
            RawUpstream::new("ollama", &fake.url(), RawDialect::Ollama),
        ],
        ..RawConfig::default()
    };
    raw.cache.enabled = false;
    raw.store.data_dir = data_dir.to_owned();
    // Keep-alive connections are idle at the end; do not wait long for them.
    raw.server.shutdown_grace = Duration::from_secs(1);
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
    let config = raw
        .validate(&|_: &str| None)
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
    body: Bytes,
}

impl Call {
    fn openai_chat(body: &'static str) -> Self {
        Call {
            path: "/v1/chat/completions",
            body: Bytes::from_static(body.as_bytes()),
        }
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
        let rounds = self.settings.rounds;
        if self.settings.warmup > 0.0 {
            for target in [&self.direct, &self.thrifty] {
                measure(target, self.settings.warmup)
                    .await
                    .with_context(|| format!("{scenario}: warming up {}", target.name))?;
            }
        }
        let mut direct = Run::default();
        let mut thrifty = Run::default();
        for round in 0..rounds {
            let order = if round % 2 == 0 {
                [(&self.direct, &mut direct), (&self.thrifty, &mut thrifty)]
            } else {
                [(&self.thrifty, &mut thrifty), (&self.direct, &mut direct)]
            };
            for (target, pooled) in order {
                self.fake.reset();
                let cpu_before = CpuTimes::now();
                let mut run = measure(target, 1.0 / rounds as f64)
                    .await
                    .with_context(|| format!("{scenario}: measuring {}", target.name))?;
                run.cpu = CpuTimes::now()
                    .zip(cpu_before)
                    .map(|(after, before)| after.minus(&before));
                run.upstream_calls = self.fake.calls();
                pooled.absorb(run);
            }
        }
        Ok(Comparison {
            scenario,
            direct: direct.finish(),
            thrifty: thrifty.finish(),
        })
    }
}

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
    let mut request = Request::new(Full::new(call.body.clone()));
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
    Ok(latency)
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

/// Both targets' runs of one scenario.
struct Comparison {
    scenario: &'static str,
    direct: Run,
    thrifty: Run,
}

/// User + system CPU time of the benchmark's threads, by party.
#[derive(Clone, Copy, Debug, Default)]
struct CpuTimes {
    client: Duration,
    fake: Duration,
    thrifty: Duration,
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
        }
    }

    fn plus(&self, other: &CpuTimes) -> CpuTimes {
        CpuTimes {
            client: self.client + other.client,
            fake: self.fake + other.fake,
            thrifty: self.thrifty + other.thrifty,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Report.
// ---------------------------------------------------------------------------------------------

fn print_table(results: &[Comparison]) {
    println!();
    println!(
        "{:<24} {:<8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>9} | {:>20}",
        "scenario",
        "target",
        "requests",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "upstream",
        "CPU µs/req cl/fk/th",
    );
    println!("{}", "-".repeat(114));
    for result in results {
        let scenario = result.scenario;
        for (name, run) in [("direct", &result.direct), ("thrifty", &result.thrifty)] {
            let cpu = |pick: fn(&CpuTimes) -> Duration| {
                run.cpu_per_request(pick)
                    .map_or_else(|| "-".to_owned(), |us| format!("{us:.0}"))
            };
            let cpu = format!(
                "{}/{}/{}",
                cpu(|c| c.client),
                cpu(|c| c.fake),
                cpu(|c| c.thrifty)
            );
            println!(
                "{:<24} {:<8} {:>8} {:>9.0} {:>8.3} {:>8.3} {:>8.3} {:>9} | {:>20}",
                scenario,
                name,
                run.requests(),
                run.per_second(),
                run.percentile_ms(50.0),
                run.percentile_ms(90.0),
                run.percentile_ms(99.0),
                run.upstream_calls,
                cpu,
            );
        }
    }
    println!("(CPU per request from /proc at 10 ms resolution: client / fake upstream / thrifty)");
}

fn print_summary(results: &[Comparison], concurrency: usize) {
    let find = |name: &str| results.iter().find(|r| r.scenario == name);
    println!();
    if let Some(c) = find(CHAT_CN) {
        let ratio = c.thrifty.per_second() / c.direct.per_second();
        println!(
            "throughput thrifty/direct at c={concurrency}:  {ratio:>7.3}     (target >= 0.85)  {}",
            verdict(ratio >= 0.85)
        );
    }
    if let Some(c) = find(CHAT_C1) {
        let p50 = c.thrifty.percentile_ms(50.0) - c.direct.percentile_ms(50.0);
        let p99 = c.thrifty.percentile_ms(99.0) - c.direct.percentile_ms(99.0);
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
        let p50 = c.thrifty.percentile_ms(50.0) - c.direct.percentile_ms(50.0);
        let p99 = c.thrifty.percentile_ms(99.0) - c.direct.percentile_ms(99.0);
        println!("added first-chunk p50 at c=1:    {p50:>7.3} ms");
        println!("added first-chunk p99 at c=1:    {p99:>7.3} ms");
        if c.direct.percentile_ms(50.0) > 20.0 {
            println!(
                "  note: the fake upstream itself takes ~40 ms to its first SSE event, the mark of \
                 Nagle's algorithm meeting delayed ACKs (its accepted sockets lack TCP_NODELAY); \
                 the first-chunk figures measure that, not thrifty"
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
                for scenario in SCENARIOS {
                    if bench.settings.wants(scenario.name) {
                        results.push((scenario.run)(&bench).await?);
                    }
                }
                for result in &results {
                    // Nothing is cached yet: every request must have reached the upstream.
                    for run in [&result.direct, &result.thrifty] {
                        ensure!(
                            run.upstream_calls == run.requests(),
                            "{}: {} requests but {} upstream calls",
                            result.scenario,
                            run.requests(),
                            run.upstream_calls
                        );
                    }
                }
                print_table(&results);
                print_summary(&results, bench.settings.concurrency);
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
