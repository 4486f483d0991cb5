//! Failures in the ledger and in `/metrics`: a call whose upstream cannot be reached is a
//! recorded error; the metrics count it by the upstream's error kind, and count the upstream's
//! own error answers, the rate-limited refusals and the requests no record describes.

use reqwest::Method;
use serde_json::{Value, json};
use thrifty::config::{RawDialect, RawRateLimit, RawRoute, RawUpstream};

use crate::common::fake_llm::FakeLlm;
use crate::common::thrifty::{Thrifty, config_for};

/// The value of the sample of `name` whose labels include every pair of `labels`.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (set, value) = match rest.strip_prefix('{') {
            Some(labelled) => labelled.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        let pairs: Vec<&str> = set.split(',').collect();
        labels
            .iter()
            .all(|(k, v)| pairs.contains(&format!("{k}=\"{v}\"").as_str()))
            .then(|| value.trim().parse().ok())?
    })
}

async fn chat(client: &reqwest::Client, thrifty: &Thrifty, model: &str) -> u16 {
    let body =
        json!({"model": model, "messages": [{"role": "user", "content": "is anyone there?"}]});
    client
        .post(format!("{}/v1/chat/completions", thrifty.url()))
        .header("x-thrifty-cache", "off")
        .json(&body)
        .send()
        .await
        .expect("sent")
        .status()
        .as_u16()
}

#[tokio::test]
async fn failures_are_recorded_and_counted() {
    let fake = FakeLlm::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut raw = config_for(&fake);
    let offline = format!("http://127.0.0.1:{closed}/v1");
    raw.upstreams
        .push(RawUpstream::new("offline", &offline, RawDialect::Openai));
    raw.routing.routes.push(RawRoute {
        model: "offline-*".to_owned(),
        upstream: "offline".to_owned(),
    });
    // One a minute refills nothing during the test: four calls pass, the fifth is refused.
    raw.rate_limit = Some(RawRateLimit {
        requests_per_minute: 1,
        burst: Some(4),
    });
    let thrifty = Thrifty::start_with_env(raw, &[("THRIFTY_ADMIN_TOKEN", "adm")]).await;
    let client = reqwest::Client::new();

    assert_eq!(chat(&client, &thrifty, "offline-model").await, 502);
    assert_eq!(chat(&client, &thrifty, "fail-500").await, 500);
    assert_eq!(chat(&client, &thrifty, "fail-429").await, 429);
    assert_eq!(chat(&client, &thrifty, "gpt-4o-mini").await, 200);
    assert_eq!(
        chat(&client, &thrifty, "gpt-4o-mini").await,
        429,
        "over the burst"
    );
    let health = client
        .get(format!("{}/healthz", thrifty.url()))
        .send()
        .await
        .expect("sent");
    assert_eq!(health.status(), 200);

    // The ledger: four calls reached the pipeline; three failed, one upstream was never reached.
    let report = thrifty.savings("format=json", "adm", 4).await;
    let total = &report["total"];
    assert_eq!(total["requests"], 4, "{report}");
    assert_eq!(total["outcomes"]["error"], 3, "{report}");
    assert_eq!(total["outcomes"]["miss"], 0, "{report}");
    assert_eq!(total["outcomes"]["bypass"], 1, "{report}");
    let offline_rows = thrifty
        .savings("format=json&group_by=model", "adm", 4)
        .await;
    let row = offline_rows["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["model"] == "offline-model"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(row["outcomes"]["error"], 1, "{offline_rows}");
    assert_eq!(row["tokens"]["actual"]["total"], 0, "{offline_rows}");

    let metrics = thrifty.admin_text(Method::GET, "/metrics", "adm").await;
    let count = |name: &str, labels: &[(&str, &str)]| sample(&metrics, name, labels);
    let errors = "thrifty_upstream_errors_total";
    assert_eq!(
        count(errors, &[("upstream", "offline"), ("kind", "unreachable")]),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        count(errors, &[("upstream", "openai"), ("kind", "server_error")]),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        count(errors, &[("upstream", "openai"), ("kind", "rate_limited")]),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        count("thrifty_rate_limited_total", &[]),
        Some(1.0),
        "{metrics}"
    );
    let requests = "thrifty_requests_total";
    for (outcome, status, n) in [("error", "502", 1.0), ("error", "429", 2.0)] {
        assert_eq!(
            count(
                requests,
                &[("route", "chat"), ("outcome", outcome), ("status", status)]
            ),
            Some(n),
            "{outcome} {status}: {metrics}"
        );
    }
    assert_eq!(
        count(requests, &[("route", "healthz"), ("status", "200")]),
        Some(1.0),
        "{metrics}"
    );
}
