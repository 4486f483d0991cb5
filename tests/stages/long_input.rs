//! A very long input costs bounded work: a 30 MB message is counted from a sample, not token
//! by token, so thrifty spends a small part of the CPU the upstream takes to read and echo it.
//!
//! The test compares CPU time, which a busy machine disturbs far less than wall time: the
//! process holds the client, the fake and thrifty, so a call straight to the fake measures
//! what every proxy pays, and a call through thrifty adds thrifty's own work.

use std::time::Duration;

use serde_json::json;

use super::common::fake_llm::FakeLlm;
use super::common::thrifty::{Thrifty, config_for};

/// Text of `bytes` bytes in words that rarely repeat, so no count is remembered from before.
fn prose(bytes: usize) -> String {
    let mut text = String::with_capacity(bytes + 16);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    while text.len() < bytes {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        let word = format!("w{:x} ", state >> 40);
        text.push_str(&word);
        if state % 17 == 0 {
            text.push_str("and so, ");
        }
    }
    text
}

/// CPU time this process has used, from `/proc/self/stat` (user plus system, in ticks).
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<u64> = rest
        .split(' ')
        .skip(11)
        .take(2)
        .map(|f| f.parse().expect("a tick count"))
        .collect();
    // Linux reports in USER_HZ, 100 per second on every architecture it runs on.
    Duration::from_millis((fields[0] + fields[1]) * 10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thirty_megabyte_message_is_answered_without_counting_every_token() {
    let fake = FakeLlm::start().await;
    let thrifty = Thrifty::start(config_for(&fake)).await;
    let text = prose(30 * 1024 * 1024);
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": text}],
    });
    // The same call straight to the fake: the time any proxy needs to pass 30 MB each way.
    let direct_started = cpu();
    let direct = reqwest::Client::new()
        .post(format!("{}/chat/completions", fake.openai_base()))
        .json(&body)
        .send()
        .await
        .expect("sent");
    let _: serde_json::Value = direct.json().await.expect("a JSON answer");
    let upstream = cpu() - direct_started;
    let started = cpu();
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", thrifty.url()))
        .header("x-thrifty-cache", "off")
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.expect("a JSON answer");
    let elapsed = cpu() - started;
    assert_eq!(fake.calls(), 2, "the direct call and the proxied one");
    assert!(answer["choices"][0]["message"]["content"].is_string());
    // Counting every token of the message cost thrifty about 60% of the upstream's work
    // (2.7 s of 4.6 s in a debug build); a sample of it costs about 15%.
    let own = elapsed.saturating_sub(upstream);
    assert!(
        own < upstream / 3,
        "a 30 MB message cost thrifty {own:?} of CPU, the upstream and client {upstream:?}"
    );
}
