//! Which Responses calls the semantic cache may answer: only a call whose last input item is
//! a user's text and which continues no upstream state (`previous_response_id`,
//! `conversation`), within partitions of its own (never a chat's).

use serde_json::{Value, json};

use crate::common::client::poll;
use crate::common::thrifty::model_dir;
use crate::world::{PATH, WAIT, World, completed, events, output_text};

const QUESTION: &str = "How do I reset my password?";
const PARAPHRASE: &str = "how can I reset my password";

fn ask(input: Value, stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "instructions": "Be brief.", "input": input, "stream": stream})
}

async fn semantic_world() -> World {
    World::with(|raw| {
        raw.semantic.enabled = true;
        raw.semantic.model_dir = Some(model_dir());
        // Served whenever the guard passes: verified mode serves nothing before it has
        // observations, which this scenario does not make.
        raw.semantic.mode = thrifty::config::SemanticMode::Static;
    })
    .await
}

/// Waits until the answer to `QUESTION` is stored and the question indexed: a read-only probe
/// (`cache-control: no-store`) with a space after the question embeds alike but has an exact
/// key of its own.
async fn wait_indexed(world: &World) {
    let probe = ask(json!(format!("{QUESTION} ")), false);
    poll(WAIT, "the question is indexed", || {
        let probe = &probe;
        async move {
            let reply = world
                .api
                .post(PATH, probe, &[("cache-control", "no-store")])
                .await;
            reply.assert_ok("a read-only probe");
            (reply.cache() == "semantic-hit").then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paraphrase_is_answered_only_without_upstream_state_and_after_user_text() {
    let world = semantic_world().await;
    let first = world.create(&ask(json!(QUESTION), false)).await;
    first.assert_cache("miss", "filling");
    let id = first.json()["id"].clone();
    wait_indexed(&world).await;
    let calls = world.fake.calls_to(PATH);

    let hit = world.create(&ask(json!(PARAPHRASE), false)).await;
    hit.assert_cache("semantic-hit", "a paraphrase");
    assert_eq!(output_text(&hit.json()), format!("Echo: {QUESTION}"));
    let streamed = world.create(&ask(json!(PARAPHRASE), true)).await;
    streamed.assert_cache("semantic-hit", "a streamed paraphrase");
    assert_eq!(
        output_text(&completed(&events(&streamed))),
        format!("Echo: {QUESTION}")
    );
    assert_eq!(
        world.fake.calls_to(PATH),
        calls,
        "hits never reach the upstream"
    );

    let mut continued = ask(json!(PARAPHRASE), false);
    continued["previous_response_id"] = id;
    let mut in_conversation = ask(json!(PARAPHRASE), false);
    in_conversation["conversation"] = json!("conv_1");
    let not_user_text = ask(
        json!([{"role": "user", "content": PARAPHRASE}, {"type": "item_reference", "id": "rs_1"}]),
        false,
    );
    let chat = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": PARAPHRASE}]});
    for (what, path, body) in [
        ("previous_response_id", PATH, &continued),
        ("conversation", PATH, &in_conversation),
        ("a last item that is not user text", PATH, &not_user_text),
        ("a chat call", "/v1/chat/completions", &chat),
    ] {
        let reply = world.api.send(path, body).await;
        assert_eq!(reply.cache(), "miss", "{what}: {}", reply.describe());
    }
    assert_eq!(world.fake.calls(), calls + 4);
}
