//! What shares an entry: fields that cannot change the answer do, fields that can do not, and
//! namespaces and tenants never do unless tenants are told to share.

use rstest::rstest;
use serde_json::{Value, json};

use crate::{Backend, Dialect, Harness, NO_HEADERS, bearer};

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_that_do_not_change_the_answer_share_an_entry(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let h = Harness::start(backend).await;
    let path = dialect.chat_path();
    let base = dialect.chat("same question", false);
    let miss = h.api.fill(path, &base, &NO_HEADERS).await;

    let mut variants: Vec<(&str, Value)> = Vec::new();
    let with = |field: &str, value: Value| {
        let mut body = base.clone();
        body[field] = value;
        body
    };
    variants.push(("stream", with("stream", json!(true))));
    match dialect {
        Dialect::OpenAi => {
            variants.push(("user", with("user", json!("user-42"))));
            variants.push(("metadata", with("metadata", json!({"trace": "t-1"}))));
            let mut usage = with("stream", json!(true));
            usage["stream_options"] = json!({"include_usage": true});
            variants.push(("stream_options", usage));
            let mut all = with("user", json!("user-7"));
            all["metadata"] = json!({"run": "2"});
            variants.push(("user and metadata", all));
        }
        Dialect::Ollama => {
            variants.push(("keep_alive", with("keep_alive", json!("10m"))));
            variants.push(("keep_alive 0", with("keep_alive", json!(0))));
        }
    }
    for (field, body) in &variants {
        let hit = h.api.send(path, body).await;
        hit.assert_cache("hit", &format!("{what}: {field}"));
        assert_eq!(hit.key(), miss.key(), "{what}: {field} shares the entry");
    }
    assert_eq!(
        h.fake.calls_to(path),
        1,
        "{what}: only the first call went upstream"
    );
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_that_change_the_answer_get_their_own_entry(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let h = Harness::start(backend).await;
    let path = dialect.chat_path();
    let base = dialect.chat("what do you say", false);
    let miss = h.api.fill(path, &base, &NO_HEADERS).await;

    let mut variants: Vec<(&str, Value)> = Vec::new();
    let mut temperature = base.clone();
    dialect.set_option(&mut temperature, "temperature", json!(0.7));
    variants.push(("temperature", temperature));
    let mut seed = base.clone();
    dialect.set_option(&mut seed, "seed", json!(7));
    variants.push(("seed", seed));
    variants.push(("tools", dialect.tool_chat("what do you say", false)));
    let mut message = base.clone();
    message["messages"][1]["content"] = json!("what do you say?");
    variants.push(("a message", message));
    let mut system = base.clone();
    system["messages"][0]["content"] = json!("Be verbose.");
    variants.push(("the system message", system));
    let mut longer = base.clone();
    longer["messages"]
        .as_array_mut()
        .expect("messages")
        .push(json!({"role": "user", "content": "and then?"}));
    variants.push(("one more message", longer));

    let mut keys = vec![miss.key()];
    for (i, (field, body)) in variants.iter().enumerate() {
        let reply = h.api.send(path, body).await;
        reply.assert_cache("miss", &format!("{what}: {field}"));
        assert!(
            !keys.contains(&reply.key()),
            "{what}: {field} must have its own key"
        );
        keys.push(reply.key());
        assert_eq!(
            h.fake.calls_to(path),
            i + 2,
            "{what}: {field} went upstream"
        );
        h.api.wait_stored(&reply.key()).await;
    }
    for (field, body) in &variants {
        h.api
            .send(path, body)
            .await
            .assert_cache("hit", &format!("{what}: {field} again"));
    }
    h.api
        .send(path, &base)
        .await
        .assert_cache("hit", &format!("{what}: the original"));
    assert_eq!(h.fake.calls_to(path), variants.len() + 1, "{what}");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_separate_entries(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let h = Harness::start(backend).await;
    let path = dialect.chat_path();
    let body = dialect.chat("namespaced", false);
    let namespaces = [Some("alpha"), Some("team/beta"), None];
    let headers = |ns: Option<&str>| -> Vec<(&str, String)> {
        ns.map(|ns| vec![("x-thrifty-cache-namespace", ns.to_owned())])
            .unwrap_or_default()
    };
    let mut keys = Vec::new();
    for ns in namespaces {
        let miss = h.api.post(path, &body, &headers(ns)).await;
        miss.assert_cache("miss", &format!("{what}: namespace {ns:?}"));
        assert!(
            !keys.contains(&miss.key()),
            "{what}: {ns:?} has its own key"
        );
        let stored = h.api.wait_stored(&miss.key()).await;
        assert_eq!(stored["entry"]["namespace"], json!(ns), "{what}");
        keys.push(miss.key());
    }
    for (ns, key) in namespaces.iter().zip(&keys) {
        let hit = h.api.post(path, &body, &headers(*ns)).await;
        hit.assert_cache("hit", &format!("{what}: namespace {ns:?} again"));
        assert_eq!(&hit.key(), key, "{what}");
    }
    assert_eq!(h.fake.calls_to(path), 3, "{what}");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_never_share_entries(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let h = Harness::start(backend).await;
    let (one, two) = ([bearer("sk-tenant-one")], [bearer("sk-tenant-two")]);
    let path = dialect.chat_path();
    let body = dialect.chat("private question", false);
    let first = h.api.fill(path, &body, &one).await;
    let second = h.api.post(path, &body, &two).await;
    second.assert_cache("miss", &format!("{what}: another tenant"));
    assert_ne!(first.key(), second.key(), "{what}");
    h.api.wait_stored(&second.key()).await;
    h.api
        .post(path, &body, &one)
        .await
        .assert_cache("hit", &what);
    h.api
        .post(path, &body, &two)
        .await
        .assert_cache("hit", &what);
    h.api
        .send(path, &body)
        .await
        .assert_cache("miss", &format!("{what}: no token is a tenant too"));
    assert_eq!(h.fake.calls_to(path), 3, "{what}");

    let embed = dialect.embed(&["private text"]);
    let epath = dialect.embed_path();
    h.api
        .post(epath, &embed, &one)
        .await
        .assert_cache("miss", &what);
    h.api
        .post(epath, &embed, &two)
        .await
        .assert_cache("miss", &format!("{what}: embeddings of another tenant"));
    h.api
        .post(epath, &embed, &one)
        .await
        .assert_cache("hit", &what);
    h.api
        .post(epath, &embed, &two)
        .await
        .assert_cache("hit", &what);
    assert_eq!(h.fake.calls_to(epath), 2, "{what}");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_share_entries_when_configured_to(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let h = Harness::setup(backend)
        .config(|raw| raw.cache.share_across_tenants = true)
        .start()
        .await;
    let (one, two) = ([bearer("sk-tenant-one")], [bearer("sk-tenant-two")]);
    let path = dialect.chat_path();
    let body = dialect.chat("shared question", false);
    let first = h.api.fill(path, &body, &one).await;
    let hit = h.api.post(path, &body, &two).await;
    hit.assert_cache("hit", &format!("{what}: another tenant shares"));
    assert_eq!(hit.key(), first.key());
    assert_eq!(h.fake.calls_to(path), 1, "{what}");

    let embed = dialect.embed(&["shared text"]);
    let epath = dialect.embed_path();
    h.api
        .post(epath, &embed, &one)
        .await
        .assert_cache("miss", &what);
    h.api
        .post(epath, &embed, &two)
        .await
        .assert_cache("hit", &format!("{what}: shared embeddings"));
    assert_eq!(h.fake.calls_to(epath), 1, "{what}");
}
