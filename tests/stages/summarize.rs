//! The summarize strategy: the summarizer model is reached through thrifty's own routing,
//! its summary is reused on the next turn, its tokens are the ledger's overhead, and a
//! failing summarizer never fails the request.

use serde_json::{Value, json};

use super::common::fake_llm::FakeLlm;
use super::common::thrifty::{Thrifty, config_for};
use super::{long_conversation, report, words};

const SUMMARIZER: &str = "summarizer-small";

fn summarizing(fake: &FakeLlm, model: &str) -> thrifty::config::RawConfig {
    let mut raw = config_for(fake);
    raw.compression.max_context_tokens = 2_000;
    raw.compression.preserve_recent_messages = 4;
    raw.compression.strategy = "summarize".to_owned();
    raw.compression.summarizer_model = Some(model.to_owned());
    raw
}

async fn post(thrifty: &Thrifty, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", thrifty.url()))
        .header("x-thrifty-cache", "off")
        .json(body)
        .send()
        .await
        .expect("sent")
}

/// Thrifty summarizing with [`SUMMARIZER`] in front of `fake`, admin token `adm`.
async fn start(fake: &FakeLlm) -> Thrifty {
    Thrifty::start_with_env(
        summarizing(fake, SUMMARIZER),
        &[("THRIFTY_ADMIN_TOKEN", "adm")],
    )
    .await
}

fn content(message: &Value) -> String {
    message["content"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn the_summary_is_written_by_the_routed_model_reused_and_billed_as_overhead() {
    let fake = FakeLlm::start().await;
    let thrifty = start(&fake).await;
    let body = long_conversation(30);
    let response = post(&thrifty, &body).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-thrifty-compression").is_some());

    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "the summarizer, then the request itself");
    assert_eq!(requests[0].path_only(), "/v1/chat/completions");
    let asked = requests[0].json().expect("json");
    assert_eq!(asked["model"], SUMMARIZER);
    assert!(asked["stream"] != json!(true));
    let system = content(&asked["messages"][0]);
    let transcript = content(&asked["messages"][1]);
    assert!(system.starts_with("You compress conversations"), "{system}");
    assert!(transcript.contains("Question 0: please explain the file src/module_0.rs"));
    let summary = format!("Echo: {transcript}");

    let forwarded = requests[1].json().expect("json");
    assert_eq!(forwarded["model"], "gpt-4o-mini");
    let condensed = forwarded["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(content)
        .find(|c| c.contains("Echo: Conversation:"))
        .expect("the summarizer's words reach the upstream");
    assert!(condensed.len() < summary.len() + 2_000);

    // The fake bills words plus 3 per message, and the echo's words.
    let overhead_prompt = words(&system) + 3 + words(&transcript) + 3;
    let overhead_completion = words(&summary);
    let total = report(&thrifty, 1).await;
    assert_eq!(
        total["tokens"]["overhead"]["prompt"], overhead_prompt,
        "{total:#}"
    );
    assert_eq!(
        total["tokens"]["overhead"]["completion"], overhead_completion,
        "{total:#}"
    );
    assert_eq!(total["outcomes"]["compressed"], 1, "{total:#}");

    // The next turn of the same conversation folds nothing new: the summary is reused.
    let mut next = body.clone();
    let messages = next["messages"].as_array_mut().expect("messages");
    messages.push(json!({"role": "assistant", "content": "Fix the import first."}));
    messages.push(json!({"role": "user", "content": "And then?"}));
    fake.reset();
    let response = post(&thrifty, &next).await;
    assert_eq!(response.status(), 200);
    let requests = fake.requests();
    assert_eq!(requests.len(), 1, "no second summarizer call");
    let forwarded = requests[0].json().expect("json");
    assert!(
        forwarded["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .any(|m| content(m).contains("Echo: Conversation:")),
        "the stored summary is reused"
    );
}

#[tokio::test]
async fn a_failing_summarizer_falls_back_to_key_points() {
    let fake = FakeLlm::start().await;
    let thrifty = Thrifty::start(summarizing(&fake, "fail-500")).await;
    let response = post(&thrifty, &long_conversation(30)).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-thrifty-compression").is_some());
    let requests = fake.requests();
    assert_eq!(
        requests.len(),
        2,
        "the failed summarizer call, then the request"
    );
    let forwarded = requests[1].json().expect("json");
    assert_eq!(forwarded["model"], "gpt-4o-mini");
    let answer: Value = response.json().await.expect("json");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Echo: So what should I fix first?"
    );
}

async fn post_as(thrifty: &Thrifty, body: &Value, key: &str, chat: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", thrifty.url()))
        .header("x-thrifty-cache", "off")
        .header("x-thrifty-chat-id", chat)
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("sent")
}

async fn admin(thrifty: &Thrifty, method: reqwest::Method, path: &str) -> Value {
    thrifty.admin(method, path, "adm").await
}

fn summarizer_calls(fake: &FakeLlm) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.json().is_some_and(|j| j["model"] == SUMMARIZER))
        .count()
}

#[tokio::test]
async fn summaries_stay_within_their_tenant_and_a_named_conversation_can_be_dropped() {
    let fake = FakeLlm::start().await;
    let thrifty = start(&fake).await;
    let body = long_conversation(30);
    let chat = "ticket 42/β";
    let path = "/admin/conversations/ticket%2042%2F%CE%B2";

    assert_eq!(post_as(&thrifty, &body, "sk-one", chat).await.status(), 200);
    assert_eq!(summarizer_calls(&fake), 1);
    assert_eq!(post_as(&thrifty, &body, "sk-one", chat).await.status(), 200);
    assert_eq!(
        summarizer_calls(&fake),
        1,
        "the same tenant reuses its summary"
    );
    assert_eq!(post_as(&thrifty, &body, "sk-two", chat).await.status(), 200);
    assert_eq!(
        summarizer_calls(&fake),
        2,
        "another tenant never gets the first tenant's summary"
    );

    let listed = admin(&thrifty, reqwest::Method::GET, path).await;
    assert_eq!(listed["conversation"], chat);
    assert_eq!(listed["summaries"], 2, "{listed}");
    assert_eq!(listed["tenants"], 2, "{listed}");
    let other = admin(&thrifty, reqwest::Method::GET, "/admin/conversations/other").await;
    assert_eq!(other["summaries"], 0, "{other}");

    let dropped = admin(&thrifty, reqwest::Method::DELETE, path).await;
    assert_eq!(dropped["deleted_summaries"], 2, "{dropped}");
    let listed = admin(&thrifty, reqwest::Method::GET, path).await;
    assert_eq!(listed["summaries"], 0, "{listed}");
    assert_eq!(post_as(&thrifty, &body, "sk-one", chat).await.status(), 200);
    assert_eq!(
        summarizer_calls(&fake),
        3,
        "a dropped conversation is summarized afresh"
    );
}

/// The summarizer's transcript line for one client message (`summarize::prompt`'s format).
fn transcript_line(message: &Value) -> String {
    format!(
        "[{}] {}\n\n",
        message["role"].as_str().unwrap_or_default(),
        content(message)
    )
}

/// How many earlier messages the forwarded summary says it covers; it is a message of its
/// own or a section after the system prompt's text, wherever roles stay alternating.
fn covered(forwarded: &Value) -> usize {
    forwarded["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .find_map(|m| {
            let text = content(m);
            let at = text.find("[thrifty: summary of the ")?;
            let rest = text[at..].strip_prefix("[thrifty: summary of the ")?;
            rest.split(' ').next()?.parse().ok()
        })
        .expect("the forwarded request carries the summary")
}

#[tokio::test]
async fn a_grown_conversation_only_extends_the_earlier_summary() {
    let fake = FakeLlm::start().await;
    let thrifty = start(&fake).await;
    let body = long_conversation(30);
    assert_eq!(post(&thrifty, &body).await.status(), 200);
    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "the summarizer, then the request itself");
    let first = requests[0].json().expect("json");
    // The fake echoes the prompt; thrifty keeps the answer trimmed.
    let summary = format!("Echo: {}", content(&first["messages"][1]))
        .trim()
        .to_owned();
    let old = covered(&requests[1].json().expect("json"));

    // Eight more full turns: the boundary moves at least one block further. The first 30
    // turns of `long_conversation(38)` are the same messages as `long_conversation(30)`'s.
    let later = long_conversation(38);
    let later = later["messages"].as_array().expect("messages");
    let mut grown = body.clone();
    let messages = grown["messages"].as_array_mut().expect("messages");
    messages.push(json!({"role": "assistant", "content": "Fix the import first."}));
    messages.extend_from_slice(&later[61..]);
    let grown_messages = grown["messages"].as_array().expect("messages").clone();
    fake.reset();
    let response = post(&thrifty, &grown).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-thrifty-compression").is_some());

    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "one summarizer call, then the request");
    let asked = requests[0].json().expect("json");
    assert_eq!(asked["model"], SUMMARIZER);
    let forwarded = requests[1].json().expect("json");
    let new = covered(&forwarded);
    assert!(new > old, "the boundary moved: {old} -> {new}");

    // What reached the summarizer: the earlier summary, then only the newly aged-out messages.
    let prompt = content(&asked["messages"][1]);
    let (previous, fold) = prompt
        .split_once(
            "\n\nFold these later messages into it and return the whole updated summary:\n\n",
        )
        .unwrap_or_else(|| panic!("an extension prompt: {prompt}"));
    assert!(
        previous == format!("Summary of the conversation so far:\n{summary}"),
        "the earlier summary, verbatim ({} bytes sent, {} stored)",
        previous.len(),
        summary.len()
    );
    // Message 0 is the system prompt; the summaries cover the messages after it.
    let aged: String = grown_messages[1 + old..1 + new]
        .iter()
        .map(transcript_line)
        .collect();
    assert!(
        fold == aged,
        "exactly the messages {old}..{new} after the system prompt, got: {}",
        &fold[..fold.len().min(400)]
    );
    assert!(
        !fold.contains("Question 0:"),
        "no message the summary already covers"
    );
    assert!(
        fold.contains("[user] So what should I fix first?") && fold.contains("Question 30:"),
        "the previous question and the first new turns are folded in"
    );
    assert!(
        !fold.contains("Question 37:"),
        "the recent turns stay verbatim"
    );
    assert!(
        forwarded["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .any(|m| content(m).contains("Echo: Summary of the conversation so far:")),
        "the extended summary reaches the upstream"
    );

    let stats = admin(&thrifty, reqwest::Method::GET, "/admin/compression/stats").await;
    assert_eq!(stats["summaries"]["created"], 1, "{stats:#}");
    assert_eq!(stats["summaries"]["extended"], 1, "{stats:#}");
    assert_eq!(stats["summaries"]["reused"], 0, "{stats:#}");
    assert_eq!(stats["requests_compressed"], 2, "{stats:#}");
}
