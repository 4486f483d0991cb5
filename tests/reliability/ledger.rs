//! Clients that invent model names or rotate bearer tokens cannot grow the ledger without
//! bound: past the day's caps, names and tenants are counted under `other`, calls the upstream
//! refuses never count under their model, and the report still counts every token. And a
//! record counts on the UTC day thrifty's clock showed when the request came, either side of
//! midnight.

use std::time::Duration;

use reqwest::StatusCode;
use rstest::rstest;
use serde_json::Value;
use thrifty::ManualClock;

use crate::common::client::{
    ADMIN_TOKEN, Backend, Probe, start_redis, start_thrifty, start_thrifty_with_clock,
};
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

/// 2025-03-01T00:00:00Z in Unix milliseconds.
const MIDNIGHT_MS: u64 = 1_740_787_200_000;

#[rstest]
#[tokio::test]
async fn requests_either_side_of_midnight_count_on_their_own_days(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
) {
    let what = format!("{backend:?}");
    let redis = match backend {
        Backend::Redis => Some(start_redis().await),
        Backend::Embedded => None,
    };
    let fake = FakeLlm::start().await;
    let vars = match &redis {
        Some(redis) => redis_env(redis),
        None => vec![("THRIFTY_ADMIN_TOKEN".to_owned(), ADMIN_TOKEN.to_owned())],
    };
    let clock = ManualClock::at_ms(MIDNIGHT_MS - 1);
    let thrifty = start_thrifty_with_clock(config_for(&fake), &vars, clock.clock(), WAIT).await;
    let client = client();
    let dialect = Dialect::OpenAi;
    let ask = |question: &'static str| {
        client
            .post(format!("{}{}", thrifty.url(), dialect.chat_path()))
            .json(&dialect.chat("gpt-4o-mini", question, false))
            .send()
    };

    let status = ask("one millisecond before midnight")
        .await
        .expect("sent")
        .status();
    assert_eq!(status, StatusCode::OK, "{what}");
    // Recorded before the clock moves: a record's day is the one its request came on.
    thrifty.savings("", ADMIN_TOKEN, 1).await;
    clock.advance(Duration::from_millis(1));
    for question in ["at midnight", "just after midnight"] {
        let status = ask(question).await.expect("sent").status();
        assert_eq!(status, StatusCode::OK, "{what}");
    }

    let explicit = "from=2025-02-27&to=2025-03-02&group_by=day&format=json";
    // With no range, the report ends on the clock's today, so it covers both days too.
    for query in [explicit, "group_by=day"] {
        let report = thrifty.savings(query, ADMIN_TOKEN, 3).await;
        assert_eq!(report["total"]["requests"], 3, "{what} {query}: {report:#}");
        let days: Vec<(String, u64)> = rows(&report)
            .iter()
            .map(|r| {
                (
                    r["day"].as_str().unwrap_or_default().to_owned(),
                    r["requests"].as_u64().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            days,
            [("2025-02-28".to_owned(), 1), ("2025-03-01".to_owned(), 2)],
            "{what} {query}: {report:#}"
        );
    }
    let default = thrifty.savings("", ADMIN_TOKEN, 3).await;
    assert_eq!(default["to"], "2025-03-01", "{what}: {default:#}");
}
