//! Who may use thrifty: client keys in front of upstreams with their own key, the client's
//! own key passed through otherwise, and per-tenant rate limits.

use reqwest::StatusCode;
use rstest::rstest;
use thrifty::auth::hash_key;
use thrifty::config::{RawConfig, RawKey, RawRateLimit};

use crate::common::fake_llm::FakeLlm;
use crate::common::thrifty::{Thrifty, config_for};
use crate::{Dialect, Reply, WAIT, assert_status, client, header, post_with, unique};

const UPSTREAM_KEY_ENV: &str = "THRIFTY_TEST_UPSTREAM_KEY";
const UPSTREAM_KEY: &str = "sk-upstream-0123456789";
const CLIENT_KEY: &str = "tk-app-a-secret";

/// Both upstreams hold their own key; clients must present `CLIENT_KEY`.
fn keyed_config(fake: &FakeLlm) -> RawConfig {
    let mut raw = config_for(fake);
    for upstream in &mut raw.upstreams {
        upstream.api_key_env = Some(UPSTREAM_KEY_ENV.to_owned());
    }
    raw.keys = vec![RawKey {
        name: "app-a".to_owned(),
        team: Some("team-a".to_owned()),
        sha256: hash_key(CLIENT_KEY),
        rate_limit: None,
    }];
    raw
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn upstream_keys_require_client_keys(dialect: Dialect) {
    let fake = FakeLlm::start().await;
    let thrifty =
        Thrifty::start_with_env(keyed_config(&fake), &[(UPSTREAM_KEY_ENV, UPSTREAM_KEY)]).await;
    let url = format!("{}{}", thrifty.url(), dialect.chat_path());
    let request = dialect.chat("gpt-4o-mini", "hi");

    let unknown = post_with(
        url.clone(),
        &request,
        &[("authorization", &bearer("sk-stolen-or-mistyped"))],
    )
    .await;
    assert_status(&unknown, StatusCode::UNAUTHORIZED, "unknown key");
    let message = dialect.assert_error(&unknown.json(), Some("invalid_api_key"));
    assert!(
        !message.contains("sk-stolen"),
        "the error does not repeat the key"
    );
    if dialect == Dialect::OpenAi {
        assert_eq!(unknown.json()["error"]["type"], "authentication_error");
    }

    let missing = post_with(url.clone(), &request, &[]).await;
    assert_status(&missing, StatusCode::UNAUTHORIZED, "missing key");
    dialect.assert_error(&missing.json(), Some("invalid_api_key"));

    // Passthrough paths are guarded the same way.
    let listing = client()
        .get(format!("{}{}", thrifty.url(), dialect.models_path()))
        .send()
        .await
        .expect("request is sent");
    let listing = Reply::read(listing, WAIT).await;
    assert_status(
        &listing,
        StatusCode::UNAUTHORIZED,
        "passthrough without key",
    );
    dialect.assert_error(&listing.json(), Some("invalid_api_key"));
    assert_eq!(
        fake.calls(),
        0,
        "{dialect:?}: refused requests never reach the upstream"
    );

    let known = post_with(url, &request, &[("authorization", &bearer(CLIENT_KEY))]).await;
    assert_status(&known, StatusCode::OK, "known key");
    let recorded = fake.last_request().expect("the upstream was called");
    let sent: Vec<_> = recorded.headers.get_all("authorization").iter().collect();
    assert_eq!(
        sent,
        [bearer(UPSTREAM_KEY).as_str()],
        "{dialect:?}: the upstream gets its own key instead of the client's"
    );

    let listing = client()
        .get(format!("{}{}", thrifty.url(), dialect.models_path()))
        .bearer_auth(CLIENT_KEY)
        .send()
        .await
        .expect("request is sent");
    assert_eq!(listing.status(), StatusCode::OK);
    let recorded = fake.last_request().expect("the upstream was called");
    assert_eq!(
        header(&recorded.headers, "authorization"),
        bearer(UPSTREAM_KEY)
    );
    assert_eq!(fake.calls(), 2);
}

#[rstest]
#[tokio::test]
async fn upstream_keys_require_a_client_key_in_both_dialects(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    upstream_keys_require_client_keys(dialect).await;
}

#[rstest]
#[tokio::test]
async fn without_an_upstream_key_the_clients_authorization_passes_through(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let fake = FakeLlm::start().await;
    let thrifty = Thrifty::start(config_for(&fake)).await;
    let answer = post_with(
        format!("{}{}", thrifty.url(), dialect.chat_path()),
        &dialect.chat("gpt-4o-mini", &unique("hi")),
        &[("authorization", "Bearer sk-client-own-key")],
    )
    .await;
    assert_status(&answer, StatusCode::OK, "client key");
    let recorded = fake.last_request().expect("the upstream was called");
    assert_eq!(
        header(&recorded.headers, "authorization"),
        "Bearer sk-client-own-key",
        "{dialect:?}"
    );
}

/// Sends the dialect's chat request as `token` (or anonymously) and returns the answer.
async fn chat_as(thrifty: &Thrifty, dialect: Dialect, token: Option<&str>) -> Reply {
    let auth = token.map(bearer);
    let headers: Vec<(&str, &str)> = auth
        .iter()
        .map(|value| ("authorization", value.as_str()))
        .collect();
    post_with(
        format!("{}{}", thrifty.url(), dialect.chat_path()),
        &dialect.chat("gpt-4o-mini", &unique("hi")),
        &headers,
    )
    .await
}

/// Checks a 429 the way an OpenAI SDK reads it: status, headers and body.
fn assert_rate_limited(dialect: Dialect, answer: &Reply, limit: u32) {
    assert_status(answer, StatusCode::TOO_MANY_REQUESTS, "over the limit");
    let retry_after: u64 = header(&answer.headers, "retry-after")
        .parse()
        .expect("retry-after is whole seconds");
    assert!(
        (1..=60).contains(&retry_after),
        "retry-after {retry_after}s for one request a minute or more"
    );
    assert_eq!(
        header(&answer.headers, "x-ratelimit-limit-requests"),
        limit.to_string()
    );
    assert_eq!(
        header(&answer.headers, "x-ratelimit-remaining-requests"),
        "0"
    );
    let reset = header(&answer.headers, "x-ratelimit-reset-requests");
    assert!(
        reset.ends_with('s') && reset.starts_with(|c: char| c.is_ascii_digit()),
        "x-ratelimit-reset-requests looks like OpenAI's: {reset:?}"
    );
    dialect.assert_error(&answer.json(), Some("rate_limit_exceeded"));
    if dialect == Dialect::OpenAi {
        assert_eq!(answer.json()["error"]["type"], "requests");
    }
}

async fn tenants_are_limited_separately(dialect: Dialect) {
    let fake = FakeLlm::start().await;
    let mut raw = config_for(&fake);
    // One request a minute refills nothing during the test: the burst is all a tenant gets.
    raw.rate_limit = Some(RawRateLimit {
        requests_per_minute: 1,
        burst: Some(2),
    });
    let thrifty = Thrifty::start(raw).await;

    for token in [Some("tk-tenant-a"), Some("tk-tenant-b"), None] {
        for n in 1..=2 {
            let answer = chat_as(&thrifty, dialect, token).await;
            assert_status(&answer, StatusCode::OK, &format!("{token:?} request {n}"));
        }
        let limited = chat_as(&thrifty, dialect, token).await;
        assert_rate_limited(dialect, &limited, 1);
    }
    assert_eq!(
        fake.calls(),
        6,
        "{dialect:?}: limited requests never reach the upstream"
    );
}

#[rstest]
#[tokio::test]
async fn tenants_are_rate_limited_separately_in_both_dialects(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    tenants_are_limited_separately(dialect).await;
}

async fn key_limits_override_the_default(dialect: Dialect) {
    let fake = FakeLlm::start().await;
    let mut raw = config_for(&fake);
    raw.rate_limit = Some(RawRateLimit {
        requests_per_minute: 1,
        burst: Some(1),
    });
    raw.keys = vec![RawKey {
        name: "batch-jobs".to_owned(),
        team: None,
        sha256: hash_key("tk-batch"),
        rate_limit: Some(RawRateLimit {
            requests_per_minute: 2,
            burst: Some(4),
        }),
    }];
    let thrifty = Thrifty::start(raw).await;

    for n in 1..=4 {
        let answer = chat_as(&thrifty, dialect, Some("tk-batch")).await;
        assert_status(&answer, StatusCode::OK, &format!("keyed request {n}"));
    }
    assert_rate_limited(
        dialect,
        &chat_as(&thrifty, dialect, Some("tk-batch")).await,
        2,
    );

    let other = chat_as(&thrifty, dialect, Some("tk-someone-else")).await;
    assert_status(&other, StatusCode::OK, "first request of another tenant");
    assert_rate_limited(
        dialect,
        &chat_as(&thrifty, dialect, Some("tk-someone-else")).await,
        1,
    );
}

#[rstest]
#[tokio::test]
async fn a_keys_own_rate_limit_overrides_the_default_in_both_dialects(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    key_limits_override_the_default(dialect).await;
}
