//! Model-name globs choose the upstream; an OpenAI client may use an Ollama server's `/v1`,
//! an Ollama client may not use an OpenAI server.

use reqwest::StatusCode;
use rstest::rstest;
use thrifty::config::{RawConfig, RawDialect, RawRoute, RawUpstream};

use crate::common::fake_llm::FakeLlm;
use crate::common::thrifty::{Thrifty, config_for};
use crate::{Dialect, assert_status, post, upstream_of};

/// The fakes behind `config_for(default)`, plus `local` (an Ollama server) for `llama*`.
fn routed_config(default: &FakeLlm, local: &FakeLlm) -> RawConfig {
    let mut raw = config_for(default);
    raw.upstreams
        .push(RawUpstream::new("local", &local.url(), RawDialect::Ollama));
    raw.routing.routes.push(RawRoute {
        model: "llama*".to_owned(),
        upstream: "local".to_owned(),
    });
    raw
}

async fn models_choose_the_upstream(dialect: Dialect) {
    let default = FakeLlm::start().await;
    let local = FakeLlm::start().await;
    let thrifty = Thrifty::start(routed_config(&default, &local)).await;
    let url = format!("{}{}", thrifty.url(), dialect.chat_path());

    let request = dialect.chat("llama3.2:3b", "hi");
    let routed = post(url.clone(), &request).await;
    assert_status(&routed, StatusCode::OK, "llama3.2:3b");
    assert_eq!(upstream_of(&routed), "local");
    assert_eq!(default.calls(), 0, "{dialect:?}: llama* skips the default");
    assert_eq!(local.calls(), 1);
    let recorded = local.last_request().expect("local was called");
    // An Ollama server serves OpenAI clients under /v1 and Ollama clients under /api.
    assert_eq!(recorded.path, dialect.chat_path(), "{dialect:?}");
    assert_eq!(recorded.json(), Some(request));
    assert_eq!(routed.json()["model"], "llama3.2:3b");

    let unrouted = post(url, &dialect.chat("qwen2.5", "hi")).await;
    assert_status(&unrouted, StatusCode::OK, "qwen2.5");
    assert_eq!(upstream_of(&unrouted), dialect.default_upstream());
    assert_eq!(
        default.calls(),
        1,
        "{dialect:?}: other models use the default"
    );
    assert_eq!(local.calls(), 1);
}

#[rstest]
#[tokio::test]
async fn model_globs_choose_the_upstream_in_both_dialects(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    models_choose_the_upstream(dialect).await;
}

#[tokio::test]
async fn an_ollama_client_routed_to_an_openai_upstream_gets_an_ollama_400() {
    let fake = FakeLlm::start().await;
    let mut raw = config_for(&fake);
    raw.routing.routes.push(RawRoute {
        model: "gpt-*".to_owned(),
        upstream: "openai".to_owned(),
    });
    let thrifty = Thrifty::start(raw).await;

    let answer = post(
        format!("{}/api/chat", thrifty.url()),
        &Dialect::Ollama.chat("gpt-4o", "hi"),
    )
    .await;
    assert_status(
        &answer,
        StatusCode::BAD_REQUEST,
        "ollama client, openai upstream",
    );
    let message = Dialect::Ollama.error_message(&answer.json());
    assert!(message.contains("openai"), "names the upstream: {message}");
    assert_eq!(fake.calls(), 0, "nothing was sent upstream");

    // The same model from an OpenAI client is fine.
    let answer = post(
        format!("{}/v1/chat/completions", thrifty.url()),
        &Dialect::OpenAi.chat("gpt-4o", "hi"),
    )
    .await;
    assert_status(&answer, StatusCode::OK, "openai client, openai upstream");
    assert_eq!(fake.calls_to("/v1/chat/completions"), 1);
}
