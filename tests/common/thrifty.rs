//! Starts thrifty's real server (`thrifty::run`) on 127.0.0.1:0 for a test.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use thrifty::Clock;
use thrifty::config::{RawConfig, RawDialect, RawUpstream};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::fake_llm::FakeLlm;

/// A running thrifty; dropping it stops the server.
pub struct Thrifty {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// A config whose OpenAI and Ollama upstreams are both the fake, with the
/// embedded store in a fresh directory of its own, removed with the fake.
pub fn config_for(fake: &FakeLlm) -> RawConfig {
    let mut raw = RawConfig {
        upstreams: vec![
            RawUpstream::new("openai", &fake.openai_base(), RawDialect::Openai),
            RawUpstream::new("ollama", &fake.url(), RawDialect::Ollama),
        ],
        ..RawConfig::default()
    };
    raw.store.data_dir = fake.scratch_dir("store");
    // Semantic caching is switched on by the tests that are about it.
    raw.semantic.enabled = false;
    raw
}

/// The model directory the test command fetched (`THRIFTY_EMBED_DIR`); a missing
/// model fails the test, it never skips it.
pub fn model_dir() -> std::path::PathBuf {
    let dir = std::env::var("THRIFTY_EMBED_DIR").map(std::path::PathBuf::from).expect(
        "THRIFTY_EMBED_DIR is not set: run ./scripts/test.sh, which fetches the embedding model",
    );
    assert!(
        dir.join("model.onnx").is_file() && dir.join("libonnxruntime.so").is_file(),
        "no embedding model in {}: run scripts/fetch-model-assets.sh",
        dir.display()
    );
    dir
}

/// `config_for` with the semantic cache on, using the fetched model.
pub fn semantic_config_for(fake: &FakeLlm) -> RawConfig {
    let mut raw = config_for(fake);
    raw.semantic.enabled = true;
    raw.semantic.model_dir = Some(model_dir());
    // A paraphrase is served after the guard at the threshold, as most suites expect; verified
    // serving, which serves nothing it has not measured, has a suite of its own.
    raw.semantic.mode = thrifty::config::SemanticMode::Static;
    // The model is shared by every test of a binary: a loaded machine must not turn lookups
    // into skips (the budget suite holds a model of its own to test those).
    raw.semantic.max_wait = std::time::Duration::from_secs(5);
    raw
}

/// The environment a test config validates against: nothing but what the test names.
pub fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

impl Thrifty {
    /// Starts thrifty with the config validated against an empty environment.
    pub async fn start(raw: RawConfig) -> Thrifty {
        Thrifty::start_with_env(raw, &[]).await
    }

    pub async fn start_with_env(raw: RawConfig, vars: &[(&str, &str)]) -> Thrifty {
        Thrifty::start_with_clock(raw, vars, Clock::system()).await
    }

    /// Starts thrifty reading the date and every age from `clock` (a `ManualClock`'s, which
    /// the test moves instead of waiting).
    pub async fn start_with_clock(raw: RawConfig, vars: &[(&str, &str)], clock: Clock) -> Thrifty {
        let config = raw.validate(&env_of(vars)).expect("test config is valid");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            thrifty::run_with_clock(listener, config, clock, async {
                let _ = rx.await;
            })
            .await
            .expect("thrifty runs");
        });
        Thrifty {
            addr,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An admin call (`path` with its query) with bearer `token`, answered in JSON.
    pub async fn admin(&self, method: reqwest::Method, path: &str, token: &str) -> Value {
        let text = self.admin_text(method, path, token).await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"))
    }

    /// An admin call with bearer `token`, answered in any text (`/metrics`, CSV).
    pub async fn admin_text(&self, method: reqwest::Method, path: &str, token: &str) -> String {
        reqwest::Client::new()
            .request(method, format!("{}{path}", self.url()))
            .bearer_auth(token)
            .send()
            .await
            .expect("admin call sent")
            .text()
            .await
            .expect("admin answer is text")
    }

    /// `GET /admin/savings` with `query`, once it counts `requests` requests in all (or
    /// after 5 s): records are written when an answer's body ends, which may be just
    /// after the client has read it.
    pub async fn savings(&self, query: &str, token: &str, requests: u64) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let path = format!("/admin/savings?{query}");
            let report = self.admin(reqwest::Method::GET, &path, token).await;
            if report["total"]["requests"] == requests || std::time::Instant::now() > deadline {
                return report;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asks the server to shut down and waits up to `timeout` for it to finish.
    pub async fn shutdown(mut self, timeout: Duration) -> bool {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => tokio::time::timeout(timeout, task).await.is_ok(),
            None => true,
        }
    }

    /// Starts the shutdown without waiting; returns the server task.
    pub fn begin_shutdown(mut self) -> JoinHandle<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("server task present")
    }
}

impl Drop for Thrifty {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
