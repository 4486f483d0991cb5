//! Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
//! NUL-terminated JSON on file descriptors 3 and 4), so no WebSocket client is needed.
//!
//! Every request a page makes is observed through the DevTools `Network` domain, those that a
//! Content-Security-Policy blocks included. Chromium's own background traffic (component
//! updates, account checks) is sent to a [`Sink`] proxy that answers 502, so nothing the test
//! starts reaches the network; loopback addresses bypass the proxy, as Chromium always does.
//! The browser runs in a process group of its own and the whole group is killed on drop, so a
//! hung or panicking test leaves no browser behind.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long one DevTools answer or page load may take before the test fails.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The browser the tests drive: `THRIFTY_TEST_CHROMIUM`, else Debian's `/usr/bin/chromium`.
///
/// # Panics
///
/// When it is not installed: the test fails and says how to install it, it never skips.
pub fn chromium_path() -> PathBuf {
    let path = std::env::var_os("THRIFTY_TEST_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        path.is_file(),
        "no browser at {}: install Debian's chromium (`apt-get install chromium`) or run \
         ./scripts/test.sh, or point THRIFTY_TEST_CHROMIUM at a Chromium binary",
        path.display()
    );
    path
}

/// A proxy that forwards nothing: it notes each request line and answers 502.
pub struct Sink {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Sink {
    pub async fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let port = listener.local_addr().expect("sink addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    let mut line = String::new();
                    let read = stream.read_line(&mut line);
                    if tokio::time::timeout(Duration::from_secs(5), read)
                        .await
                        .is_ok()
                    {
                        log.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(line.trim_end().to_owned());
                    }
                    let _ = stream
                        .get_mut()
                        .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                });
            }
        });
        Sink { port, seen, task }
    }

    /// The request lines received so far, such as `CONNECT host:443 HTTP/1.1`.
    pub fn seen(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One running headless Chromium.
pub struct Browser {
    child: Child,
    pid: u32,
    to_browser: ChildStdin,
    from_browser: BufReader<ChildStdout>,
    next_id: u64,
    /// Every event received, in order.
    events: Vec<Value>,
    /// The profile and the log, removed after the browser is killed (`Drop` runs first).
    dir: TempDir,
    closed: bool,
}

/// A tab attached with its own DevTools session.
pub struct Page {
    session: String,
}

/// What loading a URL in a tab did.
#[derive(Debug)]
pub struct Load {
    /// Every URL the tab requested, redirects and blocked requests included.
    pub requests: Vec<String>,
    /// HTTP statuses of the redirects followed on the way.
    pub redirects: Vec<i64>,
    /// Status and MIME type of the document finally shown.
    pub document: Option<(i64, String)>,
}

impl Browser {
    /// Starts Chromium headless with an empty profile, all non-loopback traffic sent to `sink`.
    pub async fn launch(sink: &Sink) -> Browser {
        let chromium = chromium_path();
        let dir = tempfile::Builder::new()
            .prefix("thrifty-chromium-")
            .tempdir()
            .expect("a temporary directory for the browser");
        let log = std::fs::File::create(dir.path().join("chromium.log")).expect("browser log");
        let mut command = tokio::process::Command::new("/bin/sh");
        // The shell only moves the pipes to fds 3 and 4 and execs the browser (same process).
        command
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>&2"#)
            .arg(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-default-apps",
                "--disable-extensions",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-pipe",
            ])
            .arg(format!(
                "--user-data-dir={}",
                dir.path().join("profile").display()
            ))
            .arg(format!("--proxy-server=http://127.0.0.1:{}", sink.port))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium.display()));
        let pid = child.id().expect("browser pid");
        let to_browser = child.stdin.take().expect("devtools pipe in");
        let from_browser = BufReader::new(child.stdout.take().expect("devtools pipe out"));
        let mut browser = Browser {
            child,
            pid,
            to_browser,
            from_browser,
            next_id: 0,
            events: Vec::new(),
            dir,
            closed: false,
        };
        let version = browser.call(None, "Browser.getVersion", json!({})).await;
        assert!(
            version["product"].as_str().is_some(),
            "browser answered {version}"
        );
        browser
    }

    /// Opens a new tab with the network and page events on.
    pub async fn new_page(&mut self) -> Page {
        let target = self
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].as_str().expect("target id").to_owned();
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        let page = Page {
            session: attached["sessionId"]
                .as_str()
                .expect("session id")
                .to_owned(),
        };
        self.call(Some(&page), "Network.enable", json!({})).await;
        self.call(Some(&page), "Page.enable", json!({})).await;
        page
    }

    /// Navigates the tab and waits for its `load` event (images and styles done).
    pub async fn load(&mut self, page: &Page, url: &str) -> Load {
        let from = self.events.len();
        let navigated = self
            .call(Some(page), "Page.navigate", json!({"url": url}))
            .await;
        assert!(
            navigated.get("errorText").is_none(),
            "navigation failed: {navigated}"
        );
        let deadline = Instant::now() + STEP_TIMEOUT;
        while !self.events[from..]
            .iter()
            .any(|e| e["method"] == "Page.loadEventFired" && e["sessionId"] == *page.session)
        {
            self.receive(deadline).await;
        }
        let mut load = Load {
            requests: Vec::new(),
            redirects: Vec::new(),
            document: None,
        };
        for event in &self.events[from..] {
            if event["sessionId"] != *page.session {
                continue;
            }
            let params = &event["params"];
            match event["method"].as_str() {
                Some("Network.requestWillBeSent") => {
                    if let Some(status) = params["redirectResponse"]["status"].as_i64() {
                        load.redirects.push(status);
                    }
                    load.requests
                        .push(params["request"]["url"].as_str().unwrap_or("").to_owned());
                }
                Some("Network.responseReceived") if params["type"] == "Document" => {
                    load.document = Some((
                        params["response"]["status"].as_i64().unwrap_or(0),
                        params["response"]["mimeType"]
                            .as_str()
                            .unwrap_or("")
                            .to_owned(),
                    ));
                }
                _ => {}
            }
        }
        load
    }

    /// Evaluates a JavaScript expression in the tab and returns its value as JSON.
    pub async fn evaluate(&mut self, page: &Page, expression: &str) -> Value {
        let result = self
            .call(
                Some(page),
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "the expression threw: {result}"
        );
        result["result"]["value"].clone()
    }

    /// The cookies the browser holds for `url`.
    pub async fn cookies(&mut self, page: &Page, url: &str) -> Vec<Value> {
        let result = self
            .call(Some(page), "Network.getCookies", json!({"urls": [url]}))
            .await;
        result["cookies"].as_array().cloned().unwrap_or_default()
    }

    /// Asks the browser to quit and waits for it; the drop kills whatever is left.
    pub async fn close(mut self) {
        let _ = self.call(None, "Browser.close", json!({})).await;
        let exited = tokio::time::timeout(STEP_TIMEOUT, self.child.wait()).await;
        self.closed = matches!(exited, Ok(Ok(_)));
    }

    /// Sends one DevTools command and waits for its answer, keeping the events in between.
    async fn call(&mut self, page: Option<&Page>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(page) = page {
            message["sessionId"] = json!(page.session);
        }
        let mut bytes = message.to_string().into_bytes();
        bytes.push(0);
        self.to_browser
            .write_all(&bytes)
            .await
            .unwrap_or_else(|e| panic!("cannot send {method} to the browser: {e}"));
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let message = self.receive(deadline).await;
            if message["id"] == id {
                assert!(message.get("error").is_none(), "{method} failed: {message}");
                return message["result"].clone();
            }
        }
    }

    /// Reads one message; events are kept in `events`.
    async fn receive(&mut self, deadline: Instant) -> Value {
        let mut bytes = Vec::new();
        let read = self.from_browser.read_until(0, &mut bytes);
        let n = tokio::time::timeout_at(deadline, read)
            .await
            .unwrap_or_else(|_| panic!("the browser did not answer within {STEP_TIMEOUT:?}"))
            .expect("read from the browser");
        assert!(n > 0, "the browser closed its DevTools pipe");
        bytes.pop();
        let message: Value = serde_json::from_slice(&bytes).expect("DevTools sends JSON");
        if message.get("method").is_some() {
            self.events.push(message.clone());
        }
        message
    }

    /// The tail of the browser's own log, for failure messages.
    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(self.dir.path().join("chromium.log")) {
            let _ = std::io::Read::read_to_string(&mut file, &mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("chromium log (last lines):\n{}", self.log_tail());
        }
        if !self.closed {
            let _ = self.child.start_kill();
        }
        // The renderer and helper processes share the browser's process group.
        let _ = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("kill -KILL -{}", self.pid))
            .stderr(Stdio::null())
            .status();
    }
}
