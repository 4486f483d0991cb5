//! Every API path thrifty does not intercept is forwarded untouched: bodies byte for byte
//! (streamed both ways), query strings kept, thrifty's own and hop-by-hop headers dropped.

use std::time::Duration;

use reqwest::StatusCode;
use rstest::rstest;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::fake_llm::FakeLlm;
use crate::common::thrifty::{Thrifty, config_for};
use crate::{
    Dialect, Reply, WAIT, assert_status, client, content_type, get, header, read_stream,
    upstream_of,
};

#[rstest]
#[tokio::test]
async fn model_lists_pass_through_byte_for_byte_in_both_dialects(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let fake = FakeLlm::start().await;
    let thrifty = Thrifty::start(config_for(&fake)).await;
    let path = dialect.models_path();
    let proxied = get(format!("{}{path}", thrifty.url())).await;
    let direct = get(format!("{}{path}", fake.url())).await;
    assert_status(&proxied, StatusCode::OK, path);
    assert_eq!(proxied.body, direct.body, "{path}: the upstream's bytes");
    assert_eq!(content_type(&proxied), content_type(&direct), "{path}");
    assert_eq!(upstream_of(&proxied), dialect.default_upstream());
    let recorded = fake.last_request().expect("the upstream was called");
    assert_eq!(recorded.method, "GET");
    assert_eq!(recorded.path, path);
}

#[tokio::test]
async fn query_strings_are_kept() {
    let fake = FakeLlm::start().await;
    let thrifty = Thrifty::start(config_for(&fake)).await;
    let path = "/v1/models?limit=2&order=desc&after=gpt%204";
    let answer = get(format!("{}{path}", thrifty.url())).await;
    assert_status(&answer, StatusCode::OK, path);
    assert_eq!(fake.last_request().expect("called").path, path);

    let path = "/api/tags?verbose=true";
    let answer = get(format!("{}{path}", thrifty.url())).await;
    assert_status(&answer, StatusCode::OK, path);
    assert_eq!(fake.last_request().expect("called").path, path);

    // Intercepted calls keep theirs as well.
    let path = "/v1/chat/completions?api-version=2024-10-21";
    let answer = crate::post(
        format!("{}{path}", thrifty.url()),
        &Dialect::OpenAi.chat("gpt-4o-mini", "hi"),
    )
    .await;
    assert_status(&answer, StatusCode::OK, path);
    assert_eq!(fake.last_request().expect("called").path, path);
}

/// A multipart upload of `file` as the OpenAI files API takes it.
fn multipart(boundary: &str, file: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{boundary}\r\n\
         Content-Disposition: form-data; name=\"purpose\"\r\n\r\n\
         batch\r\n\
         --{boundary}\r\n\
         Content-Disposition: form-data; name=\"file\"; filename=\"batch.jsonl\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

#[tokio::test]
async fn file_uploads_pass_through_byte_for_byte_with_and_without_a_length() {
    let fake = FakeLlm::start().await;
    let thrifty = Thrifty::start(config_for(&fake)).await;
    let boundary = "thrifty-test-7MA4YWxkTrZu0gW";
    // Three MiB of every byte value, including ones that are not valid UTF-8.
    let file: Vec<u8> = (0..3 * 1024 * 1024_u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let body = multipart(boundary, &file);
    let sha256 = hex::encode(Sha256::digest(&body));
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let url = format!("{}/v1/files?purpose=batch", thrifty.url());

    let sized = reqwest::Body::from(body.clone());
    let chunked = reqwest::Body::wrap_stream(futures_util::stream::iter(
        body.chunks(64 * 1024)
            .map(|chunk| Ok::<_, std::io::Error>(chunk.to_vec()))
            .collect::<Vec<_>>(),
    ));
    for (how, upload) in [("content-length", sized), ("chunked", chunked)] {
        let response = client()
            .post(&url)
            .header("content-type", &content_type)
            .body(upload)
            .send()
            .await
            .expect("request is sent");
        let answer = Reply::read(response, WAIT).await;
        assert_status(&answer, StatusCode::OK, how);
        let echo = answer.json();
        assert_eq!(
            echo,
            json!({
                "path": "/v1/files?purpose=batch",
                "method": "POST",
                "content_type": content_type,
                "bytes": body.len(),
                "sha256": sha256,
            }),
            "{how}: the upstream got the upload byte for byte"
        );
    }
    assert_eq!(fake.calls(), 2);
}

#[tokio::test]
async fn ollama_pull_progress_streams_through() {
    let delay = Duration::from_millis(50);
    let fake = FakeLlm::builder().chunk_delay(delay).start().await;
    let thrifty = Thrifty::start(config_for(&fake)).await;
    let request = json!({"model": "llama3.2"});
    let response = client()
        .post(format!("{}/api/pull", thrifty.url()))
        .json(&request)
        .send()
        .await
        .expect("request is sent");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(response.headers(), "content-type"),
        "application/x-ndjson"
    );
    let streamed = read_stream(response).await;
    assert!(streamed.error.is_none(), "{:?}", streamed.error);
    let lines: Vec<Value> = streamed
        .text()
        .lines()
        .map(|line| serde_json::from_str(line).expect("NDJSON line"))
        .collect();
    assert_eq!(lines.first(), Some(&json!({"status": "pulling manifest"})));
    assert_eq!(lines.last(), Some(&json!({"status": "success"})));
    assert!(
        lines.iter().any(|line| line["completed"].is_u64()),
        "progress lines arrive"
    );
    assert!(
        streamed.spread() >= delay * 5,
        "progress arrives as it happens, not at the end (first-to-last {:?})",
        streamed.spread()
    );
    let recorded = fake.last_request().expect("called");
    assert_eq!(recorded.path, "/api/pull");
    assert_eq!(recorded.json(), Some(request));
}

/// The headers every request in the hygiene test carries, and what the upstream should see.
const SENT: &[(&str, &str)] = &[
    ("connection", "keep-alive, x-custom-hop"),
    ("x-custom-hop", "1"),
    ("keep-alive", "timeout=5"),
    ("proxy-authorization", "Basic dXNlcjpwYXNz"),
    ("te", "trailers"),
    ("x-thrifty-cache", "off"),
    ("X-Thrifty-Tenant", "mallory"),
    ("openai-organization", "org-1234"),
    ("x-custom-end-to-end", "kept"),
];

async fn headers_are_cleaned(dialect: Dialect) {
    let fake = FakeLlm::start().await;
    let thrifty = Thrifty::start(config_for(&fake)).await;

    // The control: sent straight to the fake, every header arrives, so their absence behind
    // thrifty is thrifty's doing and not the client library's.
    let mut direct = client().get(format!("{}{}", fake.url(), dialect.models_path()));
    for (name, value) in SENT {
        direct = direct.header(*name, *value);
    }
    direct.send().await.expect("request is sent");
    let recorded = fake.last_request().expect("the fake was called");
    for (name, _) in SENT {
        assert!(
            recorded.headers.contains_key(*name),
            "the client sends {name}"
        );
    }
    fake.reset();

    let passthrough = client().get(format!("{}{}", thrifty.url(), dialect.models_path()));
    let intercepted = client()
        .post(format!("{}{}", thrifty.url(), dialect.chat_path()))
        .json(&dialect.chat("gpt-4o-mini", "hi"));
    for (what, mut request) in [("passthrough", passthrough), ("intercepted", intercepted)] {
        for (name, value) in SENT {
            request = request.header(*name, *value);
        }
        let answer = Reply::read(request.send().await.expect("request is sent"), WAIT).await;
        assert_status(&answer, StatusCode::OK, what);
        let recorded = fake.last_request().expect("the upstream was called");
        let seen = &recorded.headers;
        for name in ["x-custom-hop", "keep-alive", "proxy-authorization", "te"] {
            assert!(
                seen.get(name).is_none(),
                "{dialect:?} {what}: hop-by-hop header {name} reached the upstream"
            );
        }
        assert!(
            !header(seen, "connection").contains("x-custom-hop"),
            "{dialect:?} {what}: the client's Connection header reached the upstream"
        );
        let own: Vec<&str> = seen
            .keys()
            .map(|name| name.as_str())
            .filter(|name| name.starts_with("x-thrifty-"))
            .collect();
        assert!(
            own.is_empty(),
            "{dialect:?} {what}: {own:?} reached the upstream"
        );
        assert_eq!(header(seen, "openai-organization"), "org-1234", "{what}");
        assert_eq!(header(seen, "x-custom-end-to-end"), "kept", "{what}");
        assert_eq!(
            header(seen, "host"),
            fake.addr().to_string(),
            "{dialect:?} {what}: the upstream is addressed by its own host"
        );
    }
}

#[rstest]
#[tokio::test]
async fn thrifty_and_hop_by_hop_headers_stay_behind_in_both_dialects(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    headers_are_cleaned(dialect).await;
}

/// Ollama clients probe the server root before anything else.
#[tokio::test]
async fn the_ollama_root_probe_reaches_the_upstream_root() {
    let fake = FakeLlm::start().await;
    let thrifty = Thrifty::start(config_for(&fake)).await;
    let direct = get(format!("{}/", fake.url())).await;
    assert_eq!(direct.text(), "Ollama is running");
    let proxied = get(format!("{}/", thrifty.url())).await;
    assert_eq!(
        fake.last_request().expect("the upstream was called").path,
        "/",
        "GET / goes to the upstream's /"
    );
    assert_status(&proxied, StatusCode::OK, "GET /");
    assert_eq!(proxied.text(), "Ollama is running");
}

/// An upstream that answers every request with the same raw HTTP/1.1 bytes.
async fn raw_upstream(response: &'static [u8]) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut chunk = [0_u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = stream.write_all(response).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

#[rstest]
#[tokio::test]
async fn hop_by_hop_response_headers_stay_behind_in_both_dialects(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let upstream = raw_upstream(
        b"HTTP/1.1 200 OK\r\n\
          Content-Type: application/json\r\n\
          Content-Length: 11\r\n\
          Connection: close, x-hop-by-name\r\n\
          X-Hop-By-Name: 1\r\n\
          Keep-Alive: timeout=5\r\n\
          Proxy-Authenticate: Basic realm=\"upstream\"\r\n\
          X-End-To-End: kept\r\n\
          \r\n\
          {\"data\":[]}",
    )
    .await;
    let direct = get(format!("http://{upstream}/v1/models")).await;
    assert_eq!(
        header(&direct.headers, "x-hop-by-name"),
        "1",
        "the control: the client library keeps what it is sent"
    );
    let fake = FakeLlm::start().await;
    let mut raw = config_for(&fake);
    raw.upstreams[0].base_url = format!("http://{upstream}/v1");
    raw.upstreams[1].base_url = format!("http://{upstream}");
    let thrifty = Thrifty::start(raw).await;
    let answer = get(format!("{}{}", thrifty.url(), dialect.models_path())).await;
    assert_status(&answer, StatusCode::OK, dialect.models_path());
    assert_eq!(answer.text(), "{\"data\":[]}");
    for name in ["x-hop-by-name", "keep-alive", "proxy-authenticate"] {
        assert!(
            answer.headers.get(name).is_none(),
            "{dialect:?}: hop-by-hop header {name} reached the client"
        );
    }
    assert!(
        !header(&answer.headers, "connection").contains("x-hop-by-name"),
        "{dialect:?}: the upstream's Connection header reached the client"
    );
    assert_eq!(
        header(&answer.headers, "x-end-to-end"),
        "kept",
        "{dialect:?}"
    );
}
