//! The client side of a scenario: one thrifty's HTTP API and the replies it gives, with the
//! admin calls and bounded waits the scenarios share.

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::{ADMIN_TOKEN, POLL, WAIT};

// ---------------------------------------------------------------------------------------------
// Replies.
// ---------------------------------------------------------------------------------------------

/// A whole response as the client saw it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let body = tokio::time::timeout(WAIT, response.bytes())
            .await
            .unwrap_or_else(|_| panic!("the body did not end within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("the body could not be read: {e}"));
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `x-thrifty-cache`, or "" when absent.
    pub fn cache(&self) -> &str {
        self.header("x-thrifty-cache").unwrap_or_default()
    }

    /// `x-thrifty-cache-key`, which must be 16 hex digits.
    pub fn key(&self) -> String {
        let key = self
            .header("x-thrifty-cache-key")
            .unwrap_or_else(|| panic!("no x-thrifty-cache-key: {}", self.describe()));
        assert!(
            key.len() == 16 && key.chars().all(|c| c.is_ascii_hexdigit()),
            "x-thrifty-cache-key is not 16 hex digits: {key}"
        );
        key.to_owned()
    }

    /// `x-thrifty-cache-age` in seconds.
    pub fn age(&self) -> u64 {
        self.header("x-thrifty-cache-age")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no numeric x-thrifty-cache-age: {}", self.describe()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.describe()))
    }

    pub fn is_stream(&self) -> bool {
        self.header("content-type")
            .is_some_and(|ct| ct.contains("event-stream") || ct.contains("ndjson"))
    }

    /// The chunks of a stream: every SSE `data:` event but `[DONE]`, or every NDJSON line.
    pub fn events(&self) -> Vec<Value> {
        let text = self.text();
        let sse = self
            .header("content-type")
            .is_some_and(|ct| ct.contains("event-stream"));
        let parse = |line: &str| -> Value {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("stream line is not JSON ({e}): {line:?} in {text}"))
        };
        if sse {
            text.split("\n\n")
                .filter(|event| !event.trim().is_empty())
                .map(|event| {
                    let data = event.strip_prefix("data: ").unwrap_or_else(|| {
                        panic!("SSE event is not one data line: {event:?} in {text}")
                    });
                    assert!(!data.contains('\n'), "one data line per event: {event:?}");
                    data
                })
                .filter(|data| *data != "[DONE]")
                .map(parse)
                .collect()
        } else {
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(parse)
                .collect()
        }
    }

    /// Status, cache header and the start of the body, for failure messages.
    pub fn describe(&self) -> String {
        let text = self.text();
        let cut: String = text.chars().take(600).collect();
        format!(
            "status {} cache {:?} body {cut}",
            self.status,
            self.header("x-thrifty-cache")
        )
    }

    pub fn assert_ok(&self, what: &str) {
        assert_eq!(self.status, StatusCode::OK, "{what}: {}", self.describe());
    }

    /// Checks status 200 and the `x-thrifty-cache` outcome.
    pub fn assert_cache(&self, outcome: &str, what: &str) {
        self.assert_ok(what);
        assert_eq!(
            self.cache(),
            outcome,
            "{what}: expected x-thrifty-cache {outcome}: {}",
            self.describe()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A client of one thrifty.
// ---------------------------------------------------------------------------------------------

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client builds")
}

/// A client of one running thrifty.
#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(base: String) -> Api {
        Api {
            client: client(),
            base,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Starts a POST of `body` and returns the response as soon as its head arrived.
    pub async fn open<K: AsRef<str>, V: AsRef<str>>(
        &self,
        path: &str,
        body: &Value,
        headers: &[(K, V)],
    ) -> reqwest::Response {
        let mut request = self.client.post(self.url(path)).json(body);
        for (name, value) in headers {
            request = request.header(name.as_ref(), value.as_ref());
        }
        tokio::time::timeout(WAIT, request.send())
            .await
            .unwrap_or_else(|_| panic!("POST {path} got no answer within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("POST {path} failed: {e}"))
    }

    pub async fn post<K: AsRef<str>, V: AsRef<str>>(
        &self,
        path: &str,
        body: &Value,
        headers: &[(K, V)],
    ) -> Reply {
        Reply::read(self.open(path, body, headers).await).await
    }

    /// A POST without extra headers.
    pub async fn send(&self, path: &str, body: &Value) -> Reply {
        self.post::<&str, &str>(path, body, &[]).await
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = tokio::time::timeout(WAIT, request.send())
            .await
            .unwrap_or_else(|_| panic!("{path} got no answer within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("{path} failed: {e}"));
        Reply::read(response).await
    }

    pub async fn admin_get(&self, path: &str) -> Reply {
        self.request(reqwest::Method::GET, path, Some(ADMIN_TOKEN), None)
            .await
    }

    pub async fn admin_post(&self, path: &str, body: &Value) -> Reply {
        self.request(reqwest::Method::POST, path, Some(ADMIN_TOKEN), Some(body))
            .await
    }

    pub async fn admin_delete(&self, path: &str) -> Reply {
        self.request(reqwest::Method::DELETE, path, Some(ADMIN_TOKEN), None)
            .await
    }

    /// `GET /admin/cache/stats`.
    pub async fn stats(&self) -> Value {
        let reply = self.admin_get("/admin/cache/stats").await;
        reply.assert_ok("admin stats");
        reply.json()
    }

    /// The stored answer whose key starts with `short`, through the admin API.
    pub async fn entry(&self, short: &str) -> Option<Value> {
        let reply = self
            .admin_get(&format!("/admin/cache/entries/{short}"))
            .await;
        match reply.status {
            StatusCode::OK => Some(reply.json()),
            StatusCode::NOT_FOUND => None,
            _ => panic!("admin entry {short}: {}", reply.describe()),
        }
    }

    /// Waits until the answer with key `short` is in the store; returns the admin view of it.
    ///
    /// An entry is written just after the response body ends, so tests that go on to count
    /// upstream calls wait for it here instead of racing it.
    pub async fn wait_stored(&self, short: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(entry) = self.entry(short).await {
                return entry;
            }
            assert!(
                Instant::now() < deadline,
                "entry {short} was not stored within {WAIT:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until no answer with key `short` is in the store.
    pub async fn wait_gone(&self, short: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while self.entry(short).await.is_some() {
            assert!(
                Instant::now() < deadline,
                "entry {short} was still stored after {within:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sends a miss and waits until its answer is stored; returns the miss.
    pub async fn fill<K: AsRef<str>, V: AsRef<str>>(
        &self,
        path: &str,
        body: &Value,
        headers: &[(K, V)],
    ) -> Reply {
        let miss = self.post(path, body, headers).await;
        miss.assert_cache("miss", &format!("filling {path}"));
        self.wait_stored(&miss.key()).await;
        miss
    }

    /// `GET /readyz`'s status field.
    pub async fn readiness(&self) -> String {
        let reply = self
            .request(reqwest::Method::GET, "/readyz", None, None)
            .await;
        reply.assert_ok("readyz");
        reply.json()["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}
