//! Clients that invent model names or rotate bearer tokens cannot grow the ledger without
//! bound: past the day's caps, names and tenants are counted under `other`, calls the upstream
//! refuses never count under their model, and the report still counts every token.

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::client::{ADMIN_TOKEN, Probe, start_redis, start_thrifty};
use crate::common::dialect::Dialect;
use crate::common::fake_llm::FakeLlm;
use crate::common::thrifty::config_for;
use crate::{WAIT, client, redis_env};

const MODELS_PER_DAY: usize = 5;
const TENANTS_PER_DAY: usize = 3;
const INVENTED: usize = 30;
const REFUSED: usize = 10;
const QUESTION: &str = "count these words please";

/// The fake's counts for [`QUESTION`]: its words plus 3, and the words of "Echo: " + it.
const PROMPT_TOKENS: i64 = 4 + 3;
const COMPLETION_TOKENS: i64 = 5;

fn rows(report: &Value) -> Vec<Value> {
    report["rows"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn invented_models_and_rotated_tokens_keep_the_aggregate_bounded() {
    let redis = start_redis().await;
    let fake = FakeLlm::start().await;
    let mut raw = config_for(&fake);
    raw.savings.max_models_per_day = Some(MODELS_PER_DAY);
    raw.savings.max_tenants_per_day = Some(TENANTS_PER_DAY);
    let thrifty = start_thrifty(raw, &redis_env(&redis), WAIT).await;
    let client = client();
    let dialect = Dialect::OpenAi;

    for i in 0..INVENTED {
        let model = format!("{i:03}-{}", "m".repeat(2000));
        let status = client
            .post(format!("{}{}", thrifty.url(), dialect.chat_path()))
            .bearer_auth(format!("sk-rotating-{i}"))
            .header("x-thrifty-cache", "off")
            .json(&dialect.chat(&model, QUESTION, false))
            .send()
            .await
            .expect("sent")
            .status();
        assert_eq!(status, StatusCode::OK);
    }
    for i in 0..REFUSED {
        let status = client
            .post(format!("{}{}", thrifty.url(), dialect.chat_path()))
            .bearer_auth("sk-refused")
            .header("x-thrifty-cache", "off")
            .json(&dialect.chat(&format!("fail-400-{i}"), QUESTION, false))
            .send()
            .await
            .expect("sent")
            .status();
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    let calls = (INVENTED + REFUSED) as u64;
    let report = thrifty
        .savings("format=json&group_by=model", ADMIN_TOKEN, calls)
        .await;
    let total = &report["total"];
    assert_eq!(total["requests"], calls, "{report:#}");
    assert_eq!(
        total["tokens"]["actual"]["prompt"],
        PROMPT_TOKENS * INVENTED as i64,
        "every token is still counted: {total:#}"
    );
    assert_eq!(
        total["tokens"]["actual"]["completion"],
        COMPLETION_TOKENS * INVENTED as i64,
        "{total:#}"
    );
    let models: Vec<String> = rows(&report)
        .iter()
        .map(|r| r["model"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        models.len() <= MODELS_PER_DAY + 1 && models.iter().any(|m| m == "other"),
        "{models:?}"
    );
    assert!(models.iter().all(|m| m.len() <= 128), "{models:?}");
    assert!(
        !models.iter().any(|m| m.starts_with("fail-400")),
        "refused calls never count under their model: {models:?}"
    );

    let keys = thrifty
        .savings("format=json&group_by=key", ADMIN_TOKEN, calls)
        .await;
    let keys: Vec<Value> = rows(&keys).iter().map(|r| r["key"].clone()).collect();
    assert!(
        keys.len() <= TENANTS_PER_DAY + 1 && keys.iter().any(|k| k == "other"),
        "{keys:?}"
    );

    // What Redis holds: one day's hash with a bounded number of fields (30 distinct names
    // and tenants would make over 300).
    let probe = Probe::connect(&redis.url(), WAIT).await;
    let days = probe.scan("thrifty:v1:{savings}:day:*").await;
    assert_eq!(days.len(), 1, "{days:?}");
    let fields: usize = probe.query(redis::cmd("HLEN").arg(&days[0])).await;
    assert!(fields <= 100, "{fields} fields in the day's aggregate");
}
