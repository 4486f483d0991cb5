//! Proves the test doubles in `tests/common` speak the real wire formats, over real sockets.
//!
//! The proxy's integration tests trust these doubles; this file is what earns that trust.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::fake_llm::{self, FakeLlm};
use common::redis::RedisServer;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(5);

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post(url: String, body: &Value) -> Result<reqwest::Response> {
    Ok(client().post(url).json(body).send().await?)
}

fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Splits an SSE body into its `data:` payloads, checking the framing on the way.
fn sse_payloads(body: &str) -> Result<Vec<String>> {
    let Some(frames) = body.strip_suffix("\n\n") else {
        bail!("SSE body does not end with a blank line: {body:?}");
    };
    frames
        .split("\n\n")
        .map(|frame| {
            frame
                .strip_prefix("data: ")
                .map(str::to_owned)
                .with_context(|| format!("frame without `data: `: {frame:?}"))
        })
        .collect()
}

/// Parses the SSE payloads before `[DONE]`, failing when `[DONE]` is missing or not last.
fn sse_events(body: &str) -> Result<Vec<Value>> {
    let mut payloads = sse_payloads(body)?;
    if payloads.pop().as_deref() != Some("[DONE]") {
        bail!("SSE stream does not end with [DONE]: {body:?}");
    }
    payloads
        .iter()
        .map(|payload| serde_json::from_str(payload).context("SSE payload is not JSON"))
        .collect()
}

fn ndjson_lines(body: &str) -> Result<Vec<Value>> {
    let Some(lines) = body.strip_suffix('\n') else {
        bail!("NDJSON body does not end with a newline: {body:?}");
    };
    lines
        .split('\n')
        .map(|line| serde_json::from_str(line).context("NDJSON line is not JSON"))
        .collect()
}

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

fn weather_tools() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}
    }}])
}

#[tokio::test]
async fn openai_chat_answers_json_like_openai() -> Result<()> {
    let fake = FakeLlm::start().await;
    let request = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "hello there"}]}
    ]});
    let response = post(format!("{}/chat/completions", fake.openai_base()), &request).await?;
    assert_eq!(response.status(), 200);
    assert_eq!(content_type(&response), "application/json");
    let body: Value = response.json().await?;

    assert!(
        body["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-"))
    );
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].is_u64());
    assert_eq!(body["model"], "gpt-4o-mini");
    assert!(body["system_fingerprint"].is_string());
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(
        choice["message"],
        json!({"role": "assistant", "content": "Echo: hello there", "refusal": null})
    );
    assert_eq!(choice["logprobs"], Value::Null);
    assert_eq!(choice["finish_reason"], "stop");
    // Two messages of two words each, plus 3 per message.
    assert_eq!(body["usage"]["prompt_tokens"], 10);
    assert_eq!(body["usage"]["completion_tokens"], 3);
    assert_eq!(body["usage"]["total_tokens"], 13);

    assert_eq!(fake.calls(), 1);
    assert_eq!(fake.calls_to("/v1/chat/completions"), 1);
    let recorded = fake.last_request().context("no request recorded")?;
    assert_eq!(recorded.method, "POST");
    assert_eq!(recorded.json(), Some(request));
    Ok(())
}

#[tokio::test]
async fn openai_chat_streams_sse_with_usage_and_done() -> Result<()> {
    let fake = FakeLlm::start().await;
    let mut request = chat("gpt-4o-mini", "hello  there");
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let response = post(format!("{}/chat/completions", fake.openai_base()), &request).await?;
    assert_eq!(response.status(), 200);
    assert_eq!(content_type(&response), "text/event-stream; charset=utf-8");
    let events = sse_events(&response.text().await?)?;

    let first = &events[0];
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(first["choices"][0]["delta"]["content"], "");
    let text: String = events
        .iter()
        .filter_map(|event| event["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Echo: hello  there");
    assert!(
        events
            .iter()
            .any(|e| e["choices"][0]["delta"]["content"] == "  there")
    );

    let (usage_chunk, rest) = events.split_last().context("no events")?;
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 5);
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 3);
    let finish = rest.last().context("no finish chunk")?;
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    for event in rest {
        assert_eq!(event["usage"], Value::Null);
        assert!(
            event.get("usage").is_some(),
            "usage must be present as null"
        );
        assert_eq!(event["id"], first["id"]);
    }
    Ok(())
}

#[tokio::test]
async fn openai_chat_stream_without_include_usage_has_no_usage_field() -> Result<()> {
    let fake = FakeLlm::start().await;
    let mut request = chat("gpt-4o-mini", "hi");
    request["stream"] = json!(true);
    let response = post(format!("{}/chat/completions", fake.openai_base()), &request).await?;
    let events = sse_events(&response.text().await?)?;
    assert!(events.iter().all(|event| event.get("usage").is_none()));
    let last = events.last().context("no events")?;
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    Ok(())
}

#[tokio::test]
async fn openai_chat_calls_tools_when_asked_about_weather() -> Result<()> {
    let fake = FakeLlm::start().await;
    let mut request = chat("gpt-4o-mini", "What is the weather in Paris?");
    request["tools"] = weather_tools();
    let url = format!("{}/chat/completions", fake.openai_base());

    let body: Value = post(url.clone(), &request).await?.json().await?;
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert!(
        call["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("call_"))
    );
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], r#"{"city":"Paris"}"#);

    request["stream"] = json!(true);
    let events = sse_events(&post(url, &request).await?.text().await?)?;
    let deltas: Vec<&Value> = events
        .iter()
        .filter_map(|event| event["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(deltas[0]["index"], 0);
    assert_eq!(deltas[0]["function"]["name"], "get_weather");
    assert!(deltas[0]["id"].is_string());
    let arguments: String = deltas
        .iter()
        .filter_map(|delta| delta["function"]["arguments"].as_str())
        .collect();
    assert_eq!(arguments, r#"{"city":"Paris"}"#);
    assert_eq!(
        deltas.len(),
        5,
        "name first, then arguments in four-character pieces"
    );
    let opening = &events[0]["choices"][0]["delta"];
    assert_eq!(opening["role"], "assistant");
    assert_eq!(
        opening["content"],
        Value::Null,
        "a tool call opens with null content, the call's head in the same delta"
    );
    assert_eq!(opening["tool_calls"][0]["function"]["name"], "get_weather");
    let last = events.last().context("no events")?;
    assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");
    Ok(())
}

#[tokio::test]
async fn openai_legacy_completions_answer_json_and_sse() -> Result<()> {
    let fake = FakeLlm::start().await;
    let url = format!("{}/completions", fake.openai_base());
    let request = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "say hi"});
    let body: Value = post(url.clone(), &request).await?.json().await?;
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], "Echo: say hi");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["choices"][0]["logprobs"], Value::Null);
    assert_eq!(body["usage"]["prompt_tokens"], 2);

    let streamed = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "say hi", "stream": true});
    let response = post(url, &streamed).await?;
    assert_eq!(content_type(&response), "text/event-stream; charset=utf-8");
    let events = sse_events(&response.text().await?)?;
    let text: String = events
        .iter()
        .filter_map(|event| event["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(text, "Echo: say hi");
    let last = events.last().context("no events")?;
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    Ok(())
}

#[tokio::test]
async fn openai_embeddings_are_deterministic_in_float_and_base64() -> Result<()> {
    let fake = FakeLlm::start().await;
    let url = format!("{}/embeddings", fake.openai_base());
    let request = json!({"model": "text-embedding-3-small", "input": ["the cat sat", "a dog"]});
    let body: Value = post(url.clone(), &request).await?.json().await?;
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "text-embedding-3-small");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 5, "total_tokens": 5})
    );
    assert_eq!(body["data"][1]["index"], 1);
    assert_eq!(body["data"][0]["object"], "embedding");
    let floats: Vec<f32> = body["data"][0]["embedding"]
        .as_array()
        .context("embedding is not an array")?
        .iter()
        .filter_map(|x| x.as_f64().map(|x| x as f32))
        .collect();
    assert_eq!(floats, fake_llm::embedding_for("the cat sat"));
    assert_eq!(floats.len(), fake_llm::EMBEDDING_DIMENSIONS);
    let norm: f32 = floats.iter().map(|x| x * x).sum();
    assert!((norm - 1.0).abs() < 1e-4);
    assert_eq!(
        fake_llm::embedding_for("The cat sat."),
        floats,
        "case and punctuation do not change the words"
    );

    let request = json!({"model": "m", "input": "the cat sat", "encoding_format": "base64"});
    let body: Value = post(url.clone(), &request).await?.json().await?;
    let encoded = body["data"][0]["embedding"]
        .as_str()
        .context("base64 embedding is not a string")?;
    assert_eq!(fake_llm::decode_base64_embedding(encoded), Some(floats));

    let request = json!({"model": "m", "input": [[1, 2, 3], [4, 5]], "dimensions": 4});
    let body: Value = post(url.clone(), &request).await?.json().await?;
    assert_eq!(
        body["data"][1]["embedding"].as_array().map(Vec::len),
        Some(4)
    );
    assert_eq!(body["usage"]["prompt_tokens"], 5);

    let request = json!({"model": "m", "input": [1, 2, 3]});
    let body: Value = post(url.clone(), &request).await?.json().await?;
    assert_eq!(body["data"].as_array().map(Vec::len), Some(1));

    let request = json!({"model": "m", "input": "x", "dimensions": 9});
    assert_eq!(post(url, &request).await?.status(), 400);
    Ok(())
}

#[test]
fn base64_round_trips() {
    for input in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar"] {
        let encoded = fake_llm::base64_encode(input);
        assert_eq!(fake_llm::base64_decode(&encoded).as_deref(), Some(input));
    }
    assert_eq!(fake_llm::base64_encode(b"foobar"), "Zm9vYmFy");
    assert_eq!(fake_llm::base64_encode(b"fo"), "Zm8=");
}

#[tokio::test]
async fn openai_models_and_passthrough_echo() -> Result<()> {
    let fake = FakeLlm::start().await;
    let models: Value = client()
        .get(format!("{}/models", fake.openai_base()))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["object"], "model");

    let body: Vec<u8> = (0..=255).cycle().take(10_000).collect();
    let echo: Value = client()
        .post(format!("{}/files?purpose=batch", fake.openai_base()))
        .header("content-type", "multipart/form-data; boundary=xyz")
        .body(body.clone())
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(echo["path"], "/v1/files?purpose=batch");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["content_type"], "multipart/form-data; boundary=xyz");
    assert_eq!(echo["bytes"], 10_000);
    assert_eq!(echo["sha256"], hex::encode(Sha256::digest(&body)));
    assert_eq!(fake.calls_to("/v1/files"), 1);
    assert_eq!(fake.calls_to("/v1/files?purpose=batch"), 1);
    assert_eq!(fake.last_request().map(|r| r.body.to_vec()), Some(body));
    Ok(())
}

#[tokio::test]
async fn ollama_chat_streams_ndjson_by_default() -> Result<()> {
    let fake = FakeLlm::start().await;
    let url = format!("{}/api/chat", fake.url());
    let response = post(url.clone(), &chat("llama3.2", "hello there")).await?;
    assert_eq!(response.status(), 200);
    assert_eq!(content_type(&response), "application/x-ndjson");
    let lines = ndjson_lines(&response.text().await?)?;
    let (last, words) = lines.split_last().context("no lines")?;
    for line in words {
        assert_eq!(line["model"], "llama3.2");
        assert!(
            line["created_at"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
        assert_eq!(line["message"]["role"], "assistant");
        assert_eq!(line["done"], false);
    }
    let text: String = words
        .iter()
        .filter_map(|line| line["message"]["content"].as_str())
        .collect();
    assert_eq!(text, "Echo: hello there");
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(last["message"]["content"], "");
    assert_eq!(last["prompt_eval_count"], 5);
    assert_eq!(last["eval_count"], 3);
    assert!(last["total_duration"].is_u64());

    let mut request = chat("llama3.2", "hello there");
    request["stream"] = json!(false);
    let response = post(url.clone(), &request).await?;
    assert_eq!(content_type(&response), "application/json; charset=utf-8");
    let body: Value = response.json().await?;
    assert_eq!(body["message"]["content"], "Echo: hello there");
    assert_eq!(body["done"], true);
    for key in [
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ] {
        assert!(body[key].is_u64(), "{key} missing");
    }

    request["tools"] = weather_tools();
    request["messages"][0]["content"] = json!("weather in Paris?");
    let body: Value = post(url, &request).await?.json().await?;
    assert_eq!(
        body["message"]["tool_calls"],
        json!([{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}])
    );
    Ok(())
}

#[tokio::test]
async fn ollama_generate_embed_and_model_endpoints() -> Result<()> {
    let fake = FakeLlm::start().await;
    let base = fake.url();

    let response = post(
        format!("{base}/api/generate"),
        &json!({"model": "m", "prompt": "why"}),
    )
    .await?;
    assert_eq!(content_type(&response), "application/x-ndjson");
    let lines = ndjson_lines(&response.text().await?)?;
    let text: String = lines
        .iter()
        .filter_map(|l| l["response"].as_str())
        .collect();
    assert_eq!(text, "Echo: why");
    let last = lines.last().context("no lines")?;
    assert_eq!(last["context"], json!([1, 2, 3]));
    assert_eq!(last["done"], true);

    let request = json!({"model": "m", "prompt": "why", "stream": false});
    let body: Value = post(format!("{base}/api/generate"), &request)
        .await?
        .json()
        .await?;
    assert_eq!(body["response"], "Echo: why");

    let request = json!({"model": "nomic-embed-text", "input": ["a b", "c"]});
    let body: Value = post(format!("{base}/api/embed"), &request)
        .await?
        .json()
        .await?;
    assert_eq!(body["embeddings"].as_array().map(Vec::len), Some(2));
    assert_eq!(body["prompt_eval_count"], 3);
    let request = json!({"model": "nomic-embed-text", "prompt": "a b"});
    let legacy: Value = post(format!("{base}/api/embeddings"), &request)
        .await?
        .json()
        .await?;
    assert_eq!(legacy["embedding"], body["embeddings"][0]);

    let tags: Value = client()
        .get(format!("{base}/api/tags"))
        .send()
        .await?
        .json()
        .await?;
    assert!(tags["models"][0]["name"].is_string());
    let show: Value = post(format!("{base}/api/show"), &json!({"model": "llama3.2"}))
        .await?
        .json()
        .await?;
    assert_eq!(show["details"]["format"], "gguf");
    Ok(())
}

#[tokio::test]
async fn ollama_pull_streams_progress() -> Result<()> {
    let fake = FakeLlm::builder()
        .chunk_delay(Duration::from_millis(5))
        .start()
        .await;
    let response = post(
        format!("{}/api/pull", fake.url()),
        &json!({"model": "llama3.2"}),
    )
    .await?;
    let lines = ndjson_lines(&response.text().await?)?;
    assert_eq!(lines[0], json!({"status": "pulling manifest"}));
    assert!(
        lines
            .iter()
            .any(|l| l["completed"].is_u64() && l["total"].is_u64())
    );
    assert_eq!(lines.last(), Some(&json!({"status": "success"})));
    Ok(())
}

#[tokio::test]
async fn magic_models_fail_in_each_dialect() -> Result<()> {
    let fake = FakeLlm::start().await;
    let openai = format!("{}/chat/completions", fake.openai_base());
    let ollama = format!("{}/api/chat", fake.url());

    for (model, status) in [("fail-400", 400), ("fail-429", 429), ("fail-500", 500)] {
        let response = post(openai.clone(), &chat(model, "hi")).await?;
        assert_eq!(response.status(), status, "{model}");
        if status == 429 {
            assert_eq!(response.headers()["retry-after"], "1");
        }
        let body: Value = response.json().await?;
        let error = body["error"]
            .as_object()
            .context("openai error is not an object")?;
        for key in ["message", "type", "param", "code"] {
            assert!(error.contains_key(key), "{model}: {key} missing");
        }

        let response = post(ollama.clone(), &chat(model, "hi")).await?;
        assert_eq!(response.status(), status, "{model}");
        let body: Value = response.json().await?;
        assert!(body["error"].is_string(), "{model}: {body}");
    }

    let body: Value = post(openai.clone(), &chat("context-overflow", "hi"))
        .await?
        .json()
        .await?;
    assert_eq!(body["error"]["code"], "context_length_exceeded");
    assert_eq!(body["error"]["param"], "messages");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let response = post(ollama.clone(), &chat("context-overflow", "hi")).await?;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await?;
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("context length"))
    );

    let embeddings = json!({"model": "fail-500", "input": "x"});
    let response = post(format!("{}/embeddings", fake.openai_base()), &embeddings).await?;
    assert_eq!(response.status(), 500);

    for url in [openai, ollama] {
        let response = client().post(url).body("{not json").send().await?;
        assert_eq!(response.status(), 400);
    }
    Ok(())
}

#[tokio::test]
async fn hang_holds_the_request_until_the_client_leaves() -> Result<()> {
    let fake = FakeLlm::start().await;
    let result = client()
        .post(format!("{}/chat/completions", fake.openai_base()))
        .json(&chat("hang", "hi"))
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(result.is_err_and(|e| e.is_timeout()));
    assert_eq!(fake.calls(), 1);
    assert!(fake.wait_for_cancelled_hangs(1, WAIT).await);
    Ok(())
}

#[tokio::test]
async fn slow_stream_notices_a_client_that_disconnects() -> Result<()> {
    let fake = FakeLlm::builder()
        .chunk_delay(Duration::from_millis(10))
        .start()
        .await;
    let mut request = chat("slow-stream", "hi");
    request["stream"] = json!(true);
    let mut response = post(format!("{}/chat/completions", fake.openai_base()), &request).await?;
    let mut received = Vec::new();
    while received.len() < 3 {
        received.push(response.chunk().await?.context("stream ended early")?);
    }
    assert!(received[0].starts_with(b"data: "));
    assert_eq!(fake.cancelled_streams(), 0);
    drop(response);
    assert!(fake.wait_for_cancelled(1, WAIT).await);

    fake.reset();
    assert_eq!(fake.calls(), 0);
    assert_eq!(fake.cancelled_streams(), 0);
    Ok(())
}

#[tokio::test]
async fn slow_stream_streams_two_hundred_words_when_read_to_the_end() -> Result<()> {
    let fake = FakeLlm::builder()
        .chunk_delay(Duration::from_millis(1))
        .start()
        .await;
    let response = post(
        format!("{}/api/generate", fake.url()),
        &json!({"model": "slow-stream", "prompt": "x"}),
    )
    .await?;
    let lines = ndjson_lines(&response.text().await?)?;
    assert_eq!(lines.len(), fake_llm::SLOW_STREAM_WORDS + 1);
    assert_eq!(fake.cancelled_streams(), 0);
    Ok(())
}

#[tokio::test]
async fn latency_delays_the_response_headers() -> Result<()> {
    let fake = FakeLlm::builder()
        .latency(Duration::from_millis(300))
        .start()
        .await;
    let started = Instant::now();
    let response = post(
        format!("{}/chat/completions", fake.openai_base()),
        &chat("m", "hi"),
    )
    .await?;
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    Ok(())
}

#[tokio::test]
async fn dropping_the_fake_stops_the_server() -> Result<()> {
    let fake = FakeLlm::start().await;
    let url = format!("{}/api/tags", fake.url());
    assert_eq!(client().get(&url).send().await?.status(), 200);
    drop(fake);
    // Aborting the server task takes effect when the runtime next polls it, so poll until the
    // port refuses connections (a fresh client each time, so that no pooled connection is reused).
    let refused = tokio::time::timeout(WAIT, async {
        while reqwest::Client::new().get(&url).send().await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "the server still answers after drop");
    Ok(())
}

/// Sends `PING` the raw way and returns the first reply line.
fn raw_ping(port: u16) -> Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(WAIT))?;
    stream.write_all(b"*1\r\n$4\r\nPING\r\n")?;
    let mut reply = [0_u8; 64];
    let read = stream.read(&mut reply)?;
    Ok(String::from_utf8_lossy(&reply[..read]).into_owned())
}

#[test]
fn redis_server_starts_answers_ping_and_restarts_on_the_same_port() -> Result<()> {
    let mut redis = RedisServer::start();
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    assert_eq!(raw_ping(port)?, "+PONG\r\n");

    redis.stop();
    assert!(
        raw_ping(port).is_err(),
        "a stopped server must refuse connections"
    );

    redis.restart();
    assert_eq!(redis.port(), port);
    assert_eq!(raw_ping(port)?, "+PONG\r\n");

    let other = RedisServer::start();
    assert_ne!(other.port(), port);
    drop(redis);
    assert!(raw_ping(port).is_err(), "drop must kill the server");
    assert_eq!(raw_ping(other.port())?, "+PONG\r\n");
    Ok(())
}
