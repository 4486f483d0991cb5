//! `/admin/cache/stats` and `/admin/compression/stats` report the same totals on every
//! instance, whichever instance served the traffic.

use serde_json::{Value, json};

use crate::common::client::{Api, poll};
use crate::{Fleet, Topology, WAIT, chat_as, wait_stored};

/// The figures of `/admin/cache/stats` every instance must agree on.
const CACHE_TOTALS: [&str; 8] = [
    "hits",
    "misses",
    "bypasses",
    "off",
    "stored",
    "by_tenant",
    "by_model",
    "entries",
];

/// The figures of `/admin/compression/stats` every instance must agree on.
const COMPRESSION_TOTALS: [&str; 4] = [
    "requests_checked",
    "requests_compressed",
    "tokens_before",
    "tokens_after",
];

/// The fields `names` of `stats`.
fn pick(stats: &Value, names: &[&str]) -> Value {
    let mut out = json!({});
    for name in names {
        out[*name] = stats[*name].clone();
    }
    out
}

/// A conversation long enough to be compressed under a 2,000-token budget.
fn long_conversation(label: &str) -> Value {
    let mut messages = vec![json!({"role": "system", "content": "You are a terse assistant."})];
    for i in 0..30 {
        messages.push(json!({"role": "user", "content": format!("{label} question {i}: why did build step {i} fail with error E{i:04}? {}", "More context here. ".repeat(40))}));
        messages.push(json!({"role": "assistant", "content": format!("Answer {i}: a missing import. {}", "Details follow. ".repeat(40))}));
    }
    messages.push(json!({"role": "user", "content": "So what should I fix first?"}));
    json!({"model": "gpt-4o-mini", "messages": messages})
}

/// `before->after` from `x-thrifty-compression`.
fn compressed(api_reply: &crate::common::client::Reply) -> (u64, u64) {
    let header = api_reply
        .header("x-thrifty-compression")
        .unwrap_or_else(|| panic!("no x-thrifty-compression: {}", api_reply.describe()));
    let (before, rest) = header.split_once("->").expect("before->after");
    let after = rest.split(';').next().unwrap_or_default().trim();
    (
        before.parse().expect("tokens before"),
        after.parse().expect("tokens after"),
    )
}

async fn stats(api: &Api, path: &str) -> Value {
    let reply = api.admin_get(path).await;
    reply.assert_ok(path);
    reply.json()
}

#[tokio::test]
async fn every_instance_reports_the_traffic_of_all() {
    the_same_totals_everywhere(Topology::Single).await;
}

#[tokio::test]
async fn every_instance_reports_the_traffic_of_all_on_a_cluster() {
    the_same_totals_everywhere(Topology::Cluster).await;
}

async fn the_same_totals_everywhere(topology: Topology) {
    let fleet = Fleet::start(topology, 2, |raw| {
        raw.compression.max_context_tokens = 2_000;
        raw.compression.preserve_recent_messages = 4;
    })
    .await;
    let (a, b) = (&fleet.apis[0], &fleet.apis[1]);
    for api in [a, b] {
        let idle = stats(api, "/admin/cache/stats").await;
        assert_eq!(idle["scope"], "cluster", "{idle}");
        assert_eq!(idle["misses"], 0, "{idle}");
    }

    // Three misses through A, then the same questions through B: hits recorded by A.
    for n in 0..3 {
        let miss = chat_as(a, "tk-team-a", &format!("question {n}")).await;
        miss.assert_cache("miss", "through A");
        wait_stored(a, &miss.key()).await;
    }
    for n in 0..3 {
        chat_as(b, "tk-team-a", &format!("question {n}"))
            .await
            .assert_cache("hit", "through B, answered by A");
    }
    chat_as(b, "tk-team-b", "another")
        .await
        .assert_cache("miss", "another tenant through B");
    let off = [("x-thrifty-cache", "off")];
    let mut tokens = (0, 0);
    for (api, label) in [(a, "a"), (b, "b")] {
        let reply = api
            .post("/v1/chat/completions", &long_conversation(label), &off)
            .await;
        reply.assert_cache("off", "a long conversation");
        let (before, after) = compressed(&reply);
        tokens = (tokens.0 + before, tokens.1 + after);
    }
    assert_eq!(fleet.fake.calls(), 6, "3 + 1 misses and 2 uncached calls");

    // Each instance publishes what it counted within a second; both then report all of it.
    let expected = poll(
        WAIT,
        "both instances report the same cache totals",
        || async {
            let (one, two) = (
                pick(&stats(a, "/admin/cache/stats").await, &CACHE_TOTALS),
                pick(&stats(b, "/admin/cache/stats").await, &CACHE_TOTALS),
            );
            (one == two && one["hits"] == 3 && one["misses"] == 4).then_some(one)
        },
    )
    .await;
    assert_eq!(expected["off"], 2, "{expected}");
    assert_eq!(
        expected["by_tenant"].as_object().map(|t| t.len()),
        Some(3),
        "{expected}"
    );
    let compression = poll(
        WAIT,
        "both instances report the same compression",
        || async {
            let (one, two) = (
                pick(
                    &stats(a, "/admin/compression/stats").await,
                    &COMPRESSION_TOTALS,
                ),
                pick(
                    &stats(b, "/admin/compression/stats").await,
                    &COMPRESSION_TOTALS,
                ),
            );
            (one == two && one["requests_compressed"] == 2).then_some(one)
        },
    )
    .await;
    assert_eq!(compression["tokens_before"], tokens.0, "{compression}");
    assert_eq!(compression["tokens_after"], tokens.1, "{compression}");
    let report = stats(b, "/admin/compression/stats").await;
    assert_eq!(report["scope"], "cluster", "{report}");

    // `/metrics` tells the shared totals (`thrifty_cluster_*`) from the instance's own.
    for api in [a, b] {
        let metrics = api.admin_get("/metrics").await.text();
        for line in [
            "thrifty_cluster_cache_lookups_total{outcome=\"hits\"} 3".to_owned(),
            "thrifty_cluster_cache_lookups_total{outcome=\"misses\"} 4".to_owned(),
            "thrifty_cluster_compressed_requests_total 2".to_owned(),
            format!(
                "thrifty_cluster_compression_tokens_total{{measure=\"before\"}} {}",
                tokens.0
            ),
        ] {
            assert!(
                metrics.lines().any(|l| l == line),
                "{}: no {line} in\n{metrics}",
                api.base
            );
        }
    }
}
