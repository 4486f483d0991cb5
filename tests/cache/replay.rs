//! Miss then hit, and a hit served in the mode the client asked for, whichever mode filled it.

use rstest::rstest;
use serde_json::{Value, json};

use crate::{
    Backend, Dialect, Harness, Kind, NO_HEADERS, Reply, TOOL_ARGUMENTS, await_recorded_usage,
    contains,
};

/// Header that makes a request skip the cache, for a live reference answer.
const OFF: [(&str, &str); 1] = [("x-thrifty-cache", "off")];

fn label(backend: Backend, dialect: Dialect, kind: Kind, what: &str) -> String {
    format!("{backend:?}/{dialect:?}/{kind:?}: {what}")
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_answer_is_replayed_from_the_cache(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
    #[values(Kind::Chat, Kind::Completion)] kind: Kind,
) {
    let what = label(backend, dialect, kind, "json miss then hit");
    let h = Harness::start(backend).await;
    let path = dialect.path(kind);
    let body = dialect.request(kind, "hello cache", false);

    let miss = h.api.send(path, &body).await;
    miss.assert_cache("miss", &what);
    let key = miss.key();
    assert_eq!(dialect.text(kind, &miss), Dialect::echo("hello cache"));
    let stored = h.api.wait_stored(&key).await;
    assert_eq!(
        stored["entry"]["answer"]["mode"], "json",
        "{what}: {stored}"
    );
    assert!(
        stored["key"]
            .as_str()
            .is_some_and(|k| k.starts_with(&format!("thrifty:v1:answer:{key}"))),
        "{what}: {stored}"
    );

    let hit = h.api.send(path, &body).await;
    hit.assert_cache("hit", &what);
    assert_eq!(hit.key(), key, "{what}: the hit names the same entry");
    assert!(hit.age() <= 2, "{what}: a fresh entry is not old");
    assert!(!hit.is_stream(), "{what}: a JSON client gets JSON");
    assert_eq!(
        dialect.stable(&hit.json()),
        dialect.stable(&miss.json()),
        "{what}: the replay is the recorded answer"
    );
    dialect.assert_fresh(&hit.json(), &miss.json(), &what);
    assert_eq!(
        h.fake.calls_to(path),
        1,
        "{what}: a hit never goes upstream"
    );

    if backend == Backend::Redis {
        let probe = h.probe().await;
        let redis_key = probe.answer_key(&key).await;
        let ttl = probe.pttl(&redis_key).await;
        assert!(
            ttl > 0 && ttl <= 3_600_000,
            "{what}: the default TTL is an hour, PTTL is {ttl}"
        );
        let value = probe.get(&redis_key).await.expect("the entry is in Redis");
        assert!(value.starts_with(b"TJ1"), "{what}: a plain entry");
        assert!(contains(&value, b"Echo: hello cache"), "{what}");
    }
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_replayed_chunk_for_chunk(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
    #[values(Kind::Chat, Kind::Completion)] kind: Kind,
) {
    let what = label(backend, dialect, kind, "stream miss then hit");
    let h = Harness::start(backend).await;
    let path = dialect.path(kind);
    let body = dialect.request(kind, "stream me word by word", true);

    let miss = h.api.send(path, &body).await;
    miss.assert_cache("miss", &what);
    dialect.assert_stream_ends(&miss, &what);
    let recorded = miss.events();
    assert!(recorded.len() > 3, "{what}: the fake streams word by word");
    let stored = h.api.wait_stored(&miss.key()).await;
    assert_eq!(stored["entry"]["answer"]["mode"], "stream", "{what}");
    let chunks = stored["entry"]["answer"]["body"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // OpenAI streams are recorded with the usage chunk thrifty asked the upstream
    // for; this client did not ask for it, so it never saw that chunk.
    let usage_chunk = usize::from(dialect == Dialect::OpenAi);
    assert_eq!(
        chunks.len(),
        recorded.len() + usage_chunk,
        "{what}: one recorded chunk per upstream event"
    );
    if dialect == Dialect::OpenAi {
        assert!(
            chunks.last().is_some_and(|c| c["usage"].is_object()),
            "{what}: the recording keeps the upstream's usage: {chunks:?}"
        );
    }

    let hit = h.api.send(path, &body).await;
    hit.assert_cache("hit", &what);
    assert_eq!(hit.key(), miss.key());
    dialect.assert_stream_ends(&hit, &what);
    let replayed = hit.events();
    assert_eq!(
        replayed.len(),
        recorded.len(),
        "{what}: one event per recorded chunk:\n{}\nvs\n{}",
        hit.text(),
        miss.text()
    );
    for (i, (new, old)) in replayed.iter().zip(&recorded).enumerate() {
        assert_eq!(
            dialect.stable(new),
            dialect.stable(old),
            "{what}: chunk {i} differs"
        );
        dialect.assert_fresh(new, old, &what);
    }
    for field in dialect.volatile() {
        let values: Vec<&Value> = replayed.iter().map(|e| &e[*field]).collect();
        assert!(
            values.windows(2).all(|w| w[0] == w[1]),
            "{what}: every chunk of one replay has the same {field}: {values:?}"
        );
    }
    assert_eq!(
        dialect.text(kind, &hit),
        Dialect::echo("stream me word by word")
    );
    assert_eq!(
        h.fake.calls_to(path),
        1,
        "{what}: a hit never goes upstream"
    );
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_entry_is_served_to_a_streaming_client(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
    #[values(Kind::Chat, Kind::Completion)] kind: Kind,
) {
    let what = label(backend, dialect, kind, "json entry, stream client");
    let h = Harness::start(backend).await;
    let path = dialect.path(kind);
    let text = "fill as json, read as a stream";
    let json_miss = h
        .api
        .fill(path, &dialect.request(kind, text, false), &NO_HEADERS)
        .await;

    let streamed = dialect.request(kind, text, true);
    let hit = h.api.send(path, &streamed).await;
    hit.assert_cache("hit", &what);
    dialect.assert_stream_ends(&hit, &what);
    assert_eq!(dialect.text(kind, &hit), Dialect::echo(text), "{what}");
    for event in hit.events() {
        dialect.assert_fresh(&event, &json_miss.json(), &what);
    }
    assert_eq!(
        h.fake.calls_to(path),
        1,
        "{what}: a hit never goes upstream"
    );

    // What a live stream of the same call ends with, the replay ends with too.
    let live = h.api.post(path, &streamed, &OFF).await;
    live.assert_cache("off", &what);
    for name in ["content-type", "cache-control"] {
        assert_eq!(
            hit.header(name),
            live.header(name),
            "{what}: the replay's {name} is the live stream's"
        );
    }
    let (live_events, replayed) = (live.events(), hit.events());
    let last = |events: &[Value]| dialect.stable(events.last().expect("a chunk"));
    match dialect {
        Dialect::OpenAi => {
            let finish = |events: &[Value]| {
                events
                    .iter()
                    .find_map(|e| e["choices"][0]["finish_reason"].as_str().map(str::to_owned))
            };
            assert_eq!(finish(&replayed), finish(&live_events), "{what}");
            assert!(
                replayed.iter().all(|e| e.get("usage").is_none()),
                "{what}: no usage unless asked: {}",
                hit.text()
            );
            if kind == Kind::Chat {
                assert_eq!(
                    replayed[0]["choices"][0]["delta"]["role"], "assistant",
                    "{what}: the first delta names the role"
                );
            }
        }
        Dialect::Ollama => {
            assert_eq!(
                last(&replayed),
                last(&live_events),
                "{what}: the final chunk carries the same counts"
            );
        }
    }
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_entry_is_served_to_a_json_client(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
    #[values(Kind::Chat, Kind::Completion)] kind: Kind,
) {
    let what = label(backend, dialect, kind, "stream entry, json client");
    let h = Harness::start(backend).await;
    let path = dialect.path(kind);
    let text = "fill as a stream, read as json";
    let mut streamed = dialect.request(kind, text, true);
    if dialect == Dialect::OpenAi {
        // With the usage chunk the stream holds everything a JSON answer has.
        streamed = dialect.with_usage(streamed);
    }
    h.api.fill(path, &streamed, &NO_HEADERS).await;

    let plain = dialect.request(kind, text, false);
    let hit = h.api.send(path, &plain).await;
    hit.assert_cache("hit", &what);
    assert!(!hit.is_stream(), "{what}: a JSON client gets JSON");
    assert_eq!(
        h.fake.calls_to(path),
        1,
        "{what}: a hit never goes upstream"
    );

    let live = h.api.post(path, &plain, &OFF).await;
    live.assert_cache("off", &what);
    assert_eq!(
        dialect.stable(&hit.json()),
        dialect.stable(&live.json()),
        "{what}: the assembled answer is what the upstream answers in JSON"
    );
}

/// A JSON client must get `usage`, as the upstream always sends it; a stream recorded without
/// `stream_options.include_usage` has none to give.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_client_never_gets_an_answer_without_usage(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Kind::Chat, Kind::Completion)] kind: Kind,
) {
    let dialect = Dialect::OpenAi;
    let what = label(backend, dialect, kind, "stream without usage, json client");
    let h = Harness::start(backend).await;
    let path = dialect.path(kind);
    let text = "a stream without usage";
    h.api
        .fill(path, &dialect.request(kind, text, true), &NO_HEADERS)
        .await;

    let plain = dialect.request(kind, text, false);
    let reply = h.api.send(path, &plain).await;
    reply.assert_ok(&what);
    let live = h.api.post(path, &plain, &OFF).await;
    assert!(
        reply.json()["usage"].is_object(),
        "{what}: x-thrifty-cache {} served a JSON answer without usage: {}",
        reply.cache(),
        reply.text()
    );
    assert_eq!(reply.json()["usage"], live.json()["usage"], "{what}");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usage_chunk_is_replayed_only_to_clients_that_ask(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Kind::Chat, Kind::Completion)] kind: Kind,
) {
    let dialect = Dialect::OpenAi;
    let what = label(backend, dialect, kind, "usage chunk");
    let h = Harness::start(backend).await;
    let path = dialect.path(kind);
    let text = "count my tokens";
    let with_usage = dialect.with_usage(dialect.request(kind, text, true));
    let miss = h.api.fill(path, &with_usage, &NO_HEADERS).await;
    let recorded = miss.events();
    let usage_chunk = recorded.last().expect("chunks").clone();
    assert!(
        usage_chunk["choices"].as_array().is_some_and(Vec::is_empty)
            && usage_chunk["usage"].is_object(),
        "{what}: the fake ends with the usage chunk: {}",
        miss.text()
    );

    let without = h.api.send(path, &dialect.request(kind, text, true)).await;
    without.assert_cache("hit", &what);
    dialect.assert_stream_ends(&without, &what);
    let events = without.events();
    assert_eq!(
        events.len(),
        recorded.len() - 1,
        "{what}: {}",
        without.text()
    );
    assert!(
        events.iter().all(|e| e.get("usage").is_none()),
        "{what}: a client that did not ask sees no usage: {}",
        without.text()
    );

    let with = h.api.send(path, &with_usage).await;
    with.assert_cache("hit", &what);
    let events = with.events();
    assert_eq!(events.len(), recorded.len(), "{what}");
    assert_eq!(
        dialect.stable(events.last().expect("chunks")),
        dialect.stable(&usage_chunk),
        "{what}: the usage chunk comes last, as recorded"
    );
    assert_eq!(h.fake.calls_to(path), 1, "{what}: hits never go upstream");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_recorded_for_a_client_without_usage_answers_one_asking_for_it(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Kind::Chat, Kind::Completion)] kind: Kind,
) {
    let dialect = Dialect::OpenAi;
    let what = label(
        backend,
        dialect,
        kind,
        "recorded with the usage thrifty asked for",
    );
    let h = Harness::start(backend).await;
    let path = dialect.path(kind);
    let text = "recorded for a client without usage";
    h.api
        .fill(path, &dialect.request(kind, text, true), &NO_HEADERS)
        .await;
    let with_usage = dialect.with_usage(dialect.request(kind, text, true));
    let reply = h.api.send(path, &with_usage).await;
    reply.assert_cache("hit", &what);
    let usage = reply.events().last().map(|e| e["usage"].clone());
    assert!(
        usage
            .as_ref()
            .is_some_and(|u| u["prompt_tokens"].as_u64() > Some(0)),
        "{what}: the replay ends with the recorded usage: {}",
        reply.text()
    );
    assert_eq!(
        h.fake.calls_to(path),
        1,
        "{what}: a hit never goes upstream"
    );
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_without_usage_does_not_answer_a_client_asking_for_it(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Kind::Chat, Kind::Completion)] kind: Kind,
) {
    let dialect = Dialect::OpenAi;
    let what = label(backend, dialect, kind, "entry without usage");
    // With `savings.stream_usage` off, thrifty records streams as the client asked.
    let h = Harness::setup(backend)
        .config(|raw| raw.savings.stream_usage = false)
        .start()
        .await;
    let path = dialect.path(kind);
    let text = "recorded without usage";
    h.api
        .fill(path, &dialect.request(kind, text, true), &NO_HEADERS)
        .await;

    let with_usage = dialect.with_usage(dialect.request(kind, text, true));
    let reply = h.api.send(path, &with_usage).await;
    reply.assert_cache("miss", &what);
    assert!(
        reply.ends_with_usage(),
        "{what}: the live answer has its usage chunk: {}",
        reply.text()
    );
    assert_eq!(h.fake.calls_to(path), 2, "{what}");
    // The recording with usage replaces the entry.
    await_recorded_usage(&h.api, &reply.key(), &what).await;
    // The fresh recording has usage, so it answers the next such client.
    let again = h.api.send(path, &with_usage).await;
    again.assert_cache("hit", &what);
    assert!(again.ends_with_usage());
    assert_eq!(h.fake.calls_to(path), 2, "{what}");

    // A JSON entry always has usage, so it serves a streaming client asking for it.
    let json_text = "recorded as json";
    let json_miss = h
        .api
        .fill(path, &dialect.request(kind, json_text, false), &NO_HEADERS)
        .await;
    let streamed = dialect.with_usage(dialect.request(kind, json_text, true));
    let hit = h.api.send(path, &streamed).await;
    hit.assert_cache("hit", &what);
    dialect.assert_stream_ends(&hit, &what);
    let events = hit.events();
    let last = events.last().expect("chunks");
    assert!(
        last["choices"].as_array().is_some_and(Vec::is_empty),
        "{what}"
    );
    assert_eq!(last["usage"], json_miss.json()["usage"], "{what}");
    assert_eq!(h.fake.calls_to(path), 3, "{what}");
}

/// The tool calls of an answer: OpenAI's `(name, arguments)` joined from deltas or read from a
/// message, Ollama's from `message.tool_calls`.
fn tool_calls(dialect: Dialect, reply: &Reply) -> Vec<(String, String)> {
    let mut calls: Vec<(String, String)> = Vec::new();
    let mut add = |call: &Value, index: usize| {
        while calls.len() <= index {
            calls.push((String::new(), String::new()));
        }
        let function = &call["function"];
        calls[index]
            .0
            .push_str(function["name"].as_str().unwrap_or_default());
        match &function["arguments"] {
            Value::String(s) => calls[index].1.push_str(s),
            Value::Null => {}
            other => calls[index].1.push_str(&other.to_string()),
        }
    };
    let values = if reply.is_stream() {
        reply.events()
    } else {
        vec![reply.json()]
    };
    for value in &values {
        let list = match dialect {
            Dialect::OpenAi if reply.is_stream() => &value["choices"][0]["delta"]["tool_calls"],
            Dialect::OpenAi => &value["choices"][0]["message"]["tool_calls"],
            Dialect::Ollama => &value["message"]["tool_calls"],
        };
        for (i, call) in list.as_array().into_iter().flatten().enumerate() {
            let index = call["index"].as_u64().map_or(i, |n| n as usize);
            add(call, index);
        }
    }
    calls
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_are_replayed_with_their_deltas(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = label(backend, dialect, Kind::Chat, "tool calls");
    let h = Harness::start(backend).await;
    let path = dialect.chat_path();
    let expected_arguments: Value = serde_json::from_str(TOOL_ARGUMENTS).expect("json");
    let assert_weather = |reply: &Reply, what: &str| {
        let calls = tool_calls(dialect, reply);
        assert_eq!(calls.len(), 1, "{what}: one tool call: {}", reply.text());
        assert_eq!(calls[0].0, "get_weather", "{what}");
        let arguments: Value = serde_json::from_str(&calls[0].1)
            .unwrap_or_else(|e| panic!("{what}: arguments {:?}: {e}", calls[0].1));
        assert_eq!(arguments, expected_arguments, "{what}");
    };

    // Stream in, stream out: every delta comes back. The stream asks for usage, so
    // its entry can also answer JSON clients, whose answers always carry usage.
    let mut streamed = dialect.tool_chat("What is the weather in Paris?", true);
    if dialect == Dialect::OpenAi {
        streamed["stream_options"] = json!({"include_usage": true});
    }
    let miss = h.api.fill(path, &streamed, &NO_HEADERS).await;
    assert_weather(&miss, &what);
    let hit = h.api.send(path, &streamed).await;
    hit.assert_cache("hit", &what);
    dialect.assert_stream_ends(&hit, &what);
    assert_weather(&hit, &what);
    let (recorded, replayed) = (miss.events(), hit.events());
    assert_eq!(replayed.len(), recorded.len(), "{what}: {}", hit.text());
    for (new, old) in replayed.iter().zip(&recorded) {
        assert_eq!(dialect.stable(new), dialect.stable(old), "{what}");
    }

    // The same stream entry for a JSON client.
    let plain = dialect.tool_chat("What is the weather in Paris?", false);
    let hit = h.api.send(path, &plain).await;
    hit.assert_cache("hit", &what);
    assert_weather(&hit, &format!("{what} (assembled)"));
    if dialect == Dialect::OpenAi {
        assert_eq!(hit.json()["choices"][0]["finish_reason"], "tool_calls");
    }

    // A JSON entry for a streaming client.
    let plain = dialect.tool_chat("And the weather in Rome?", false);
    let json_miss = h.api.fill(path, &plain, &NO_HEADERS).await;
    let streamed = dialect.tool_chat("And the weather in Rome?", true);
    let hit = h.api.send(path, &streamed).await;
    hit.assert_cache("hit", &what);
    dialect.assert_stream_ends(&hit, &what);
    assert_weather(&hit, &format!("{what} (split)"));
    if dialect == Dialect::OpenAi {
        let id = &json_miss.json()["choices"][0]["message"]["tool_calls"][0]["id"];
        let ids: Vec<Value> = hit
            .events()
            .iter()
            .flat_map(|e| e["choices"][0]["delta"]["tool_calls"].as_array().cloned())
            .flatten()
            .map(|c| c["id"].clone())
            .collect();
        assert!(
            ids.contains(id),
            "{what}: the call keeps its id {id}: {ids:?}"
        );
        let finish: Vec<Value> = hit
            .events()
            .iter()
            .map(|e| e["choices"][0]["finish_reason"].clone())
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finish, [json!("tool_calls")], "{what}");
    }
    assert_eq!(h.fake.calls_to(path), 2, "{what}: two fills, no other call");
}
