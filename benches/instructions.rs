//! Instructions per request, counted by callgrind: the bench's exact hit and long-message miss
//! sent one at a time through a thrifty in the default configuration, with thrifty alone under
//! `valgrind --tool=callgrind`, so that the counts are thrifty's and do not move with the load
//! on the machine the way times do.
//!
//! ```sh
//! cargo bench --bench instructions -- embedded 200
//! cargo bench --bench instructions -- redis 200
//! ```
//!
//! This process (the driver) runs the fake upstream and the client, and starts itself again as
//! `serve` under callgrind: thrifty on a `current_thread` runtime, as in `benches/proxy.rs`,
//! with the fake as its upstreams, the model of `THRIFTY_EMBED_DIR` and, for `redis`, a private
//! `redis-server`. It warms thrifty up (the hit's entry, a few of each request), zeroes the
//! counters (`callgrind_control -z`), sends N hits, dumps (`callgrind_control -d hits`), sends N
//! misses, dumps again (`misses`), and prints each phase's instructions per request. The dumps
//! stay in the output directory (`THRIFTY_CALLGRIND_DIR`, else a fresh one under the temp dir)
//! for `callgrind_annotate`. thrifty logs as `thrifty serve` does (a line per request, by its
//! `thrifty-log` thread), to a file in its data directory. Each phase's count includes thrifty's background work over the
//! phase (the ledger's batch writes, the once-a-second timers), which runs slower under
//! valgrind, so a small part of it is per second rather than per request.

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
mod requests;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use thrifty::config::{RawConfig, RawDialect, RawUpstream};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use fake_llm::FakeLlm;

type BenchClient = Client<HttpConnector, Full<Bytes>>;

/// Requests of each kind sent before the counters are zeroed.
const WARM_UP: u64 = 20;

/// How long each phase waits after its last answer, so that the ledger's batch (gathered for
/// up to 50 ms) and the store's group commit land inside it.
const SETTLE: Duration = Duration::from_millis(1500);

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        _ => drive(&args),
    }
}

// ---------------------------------------------------------------------------------------------
// `serve`: thrifty alone, under callgrind.
// ---------------------------------------------------------------------------------------------

/// `serve FAKE_URL DATA_DIR`: prints `listening ADDR`, serves until stdin closes.
fn serve(args: &[String]) -> Result<()> {
    let [fake_url, data_dir] = args else {
        bail!("usage: instructions serve FAKE_URL DATA_DIR");
    };
    let mut raw = RawConfig {
        upstreams: vec![
            RawUpstream::new("openai", &format!("{fake_url}/v1"), RawDialect::Openai),
            RawUpstream::new("ollama", fake_url, RawDialect::Ollama),
        ],
        ..RawConfig::default()
    };
    raw.store.data_dir = PathBuf::from(data_dir);
    raw.server.shutdown_grace = Duration::from_secs(1);
    // Only the variables the driver sets, not the rest of the environment.
    let env = |name: &str| match name {
        "THRIFTY_REDIS_URL" | "THRIFTY_EMBED_DIR" => std::env::var(name).ok(),
        _ => None,
    };
    let config = raw
        .validate(&env)
        .context("the thrifty config is invalid")?;
    // Logged as `thrifty serve` logs, a line per request, to a file in the scratch data
    // directory instead of stderr.
    let log = std::fs::File::create(PathBuf::from(data_dir).join("thrifty.log"))
        .context("creating thrifty's log")?;
    let _log = thrifty::telemetry::init_with(config.log_format, Box::new(log), false);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("listening {}", listener.local_addr()?);
        let shutdown = async {
            let mut sink = Vec::new();
            let _ = tokio::io::stdin().read_to_end(&mut sink).await;
        };
        thrifty::run(listener, config, shutdown)
            .await
            .context("thrifty stopped")
    })
}

// ---------------------------------------------------------------------------------------------
// The driver: the fake, the client, callgrind.
// ---------------------------------------------------------------------------------------------

/// `[embedded|redis] [N]`.
fn drive(args: &[String]) -> Result<()> {
    let redis = match args.first().map(String::as_str) {
        None | Some("embedded") => false,
        Some("redis") => true,
        Some(other) => bail!("unknown store {other:?}: embedded or redis"),
    };
    let n: u64 = args.get(1).map_or(Ok(200), |a| a.parse())?;
    let model_dir = std::env::var("THRIFTY_EMBED_DIR")
        .context("THRIFTY_EMBED_DIR is not set: it must name the all-MiniLM-L6-v2 directory")?;
    let out_dir = match std::env::var_os("THRIFTY_CALLGRIND_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => tempfile::Builder::new()
            .prefix("thrifty-callgrind-")
            .tempdir()?
            .keep(),
    };
    std::fs::create_dir_all(&out_dir)?;
    let data_dir = tempfile::Builder::new()
        .prefix("thrifty-instructions-")
        .tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let fake = FakeLlm::start().await;
        let redis = redis.then(redis_server::RedisServer::start);
        let mut server = Server::start(
            &fake.url(),
            data_dir.path(),
            &out_dir,
            &model_dir,
            redis.as_ref().map(redis_server::RedisServer::url),
        )?;
        let client = Client::builder(TokioExecutor::new()).build_http();
        let base = format!("http://{}", server.addr);
        let hit = Bytes::from_static(requests::CHAT.as_bytes());
        let mut numbers = 0u64;
        let mut miss = || {
            numbers += 1;
            Bytes::from(requests::long_question(numbers))
        };

        warm_entry(&client, &base, &hit).await?;
        for _ in 0..WARM_UP {
            send(&client, &base, hit.clone(), "hit").await?;
            send(&client, &base, miss(), "miss").await?;
        }
        tokio::time::sleep(SETTLE).await;
        server.callgrind(&["-z"])?;
        for _ in 0..n {
            send(&client, &base, hit.clone(), "hit").await?;
        }
        tokio::time::sleep(SETTLE).await;
        server.callgrind(&["-d", "hits"])?;
        for _ in 0..n {
            send(&client, &base, miss(), "miss").await?;
        }
        tokio::time::sleep(SETTLE).await;
        server.callgrind(&["-d", "misses"])?;
        server.stop()?;
        drop(redis);
        report(&out_dir, server.pid, n)
    })
}

/// thrifty under callgrind, in a child process.
struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
    addr: String,
}

impl Server {
    fn start(
        fake_url: &str,
        data_dir: &Path,
        out_dir: &Path,
        model_dir: &str,
        redis_url: Option<String>,
    ) -> Result<Self> {
        let exe = std::env::current_exe()?;
        let mut command = Command::new("valgrind");
        command
            .arg("--tool=callgrind")
            .arg(format!(
                "--callgrind-out-file={}/callgrind.out.%p",
                out_dir.display()
            ))
            .arg(exe)
            .arg("serve")
            .arg(fake_url)
            .arg(data_dir)
            .env("THRIFTY_EMBED_DIR", model_dir)
            .env_remove("THRIFTY_REDIS_URL")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(url) = redis_url {
            command.env("THRIFTY_REDIS_URL", url);
        }
        let mut child = command
            .spawn()
            .context("starting valgrind (install the valgrind package)")?;
        let pid = child.id();
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(addr) = line.trim().strip_prefix("listening ") else {
            bail!("thrifty did not start: {line:?}");
        };
        Ok(Server {
            addr: addr.to_owned(),
            stdin: child.stdin.take(),
            child,
            pid,
        })
    }

    /// Runs `callgrind_control ARGS PID`.
    fn callgrind(&self, args: &[&str]) -> Result<()> {
        let status = Command::new("callgrind_control")
            .args(args)
            .arg(self.pid.to_string())
            .stdout(Stdio::null())
            .status()?;
        ensure!(status.success(), "callgrind_control {args:?} failed");
        Ok(())
    }

    /// Closes thrifty's stdin (its shutdown signal) and waits for it.
    fn stop(&mut self) -> Result<()> {
        drop(self.stdin.take());
        let status = self.child.wait()?;
        ensure!(status.success(), "thrifty exited with {status}");
        Ok(())
    }
}

/// Sends the hit's request until it is answered from the cache.
async fn warm_entry(client: &BenchClient, base: &str, body: &Bytes) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if exchange(client, base, body.clone()).await?.as_deref() == Some("hit") {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "no hit after 120 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `body`, failing unless the answer says `x-thrifty-cache: outcome`.
async fn send(client: &BenchClient, base: &str, body: Bytes, outcome: &str) -> Result<()> {
    let seen = exchange(client, base, body).await?;
    ensure!(
        seen.as_deref() == Some(outcome),
        "expected x-thrifty-cache {outcome:?}, got {seen:?}"
    );
    Ok(())
}

/// One chat call; its `x-thrifty-cache` label.
async fn exchange(client: &BenchClient, base: &str, body: Bytes) -> Result<Option<String>> {
    let uri: Uri = format!("{base}/v1/chat/completions").parse()?;
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_static("Bearer sk-bench-0123456789abcdef"),
    );
    let response = client.request(request).await.context("request failed")?;
    let status = response.status();
    let outcome = response
        .headers()
        .get("x-thrifty-cache")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.into_body().collect().await?.to_bytes();
    ensure!(
        status == StatusCode::OK,
        "thrifty answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(outcome)
}

/// Prints each phase's instructions per request from its dump.
fn report(out_dir: &Path, pid: u32, n: u64) -> Result<()> {
    println!("callgrind dumps in {}", out_dir.display());
    for (part, phase) in [(1, "hits"), (2, "misses")] {
        let path = out_dir.join(format!("callgrind.out.{pid}.{part}"));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let total: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("summary: "))
            .or_else(|| text.lines().find_map(|l| l.strip_prefix("totals: ")))
            .context("no summary in the dump")?
            .trim()
            .parse()?;
        println!(
            "{phase}: {total} instructions over {n} requests, {} per request ({})",
            total / n,
            path.display()
        );
    }
    Ok(())
}
