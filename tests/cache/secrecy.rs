//! What the store may hold: never a client's API key, and with an encryption key, no answer
//! text in clear.

use rstest::rstest;
use serde_json::json;

use crate::{Api, Backend, Dialect, Harness, KINDS, NO_HEADERS, WAIT, contains, start_thrifty};

const TOKEN: &str = "sk-secret-XYZ";

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_api_key_bytes_reach_the_store(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let h = Harness::start(backend).await;
    let auth = format!("Bearer {TOKEN}");
    let headers = [
        ("authorization", auth.as_str()),
        ("x-thrifty-cache-namespace", "ns"),
        ("x-thrifty-cache-tags", "team:x"),
    ];
    let mut keys = Vec::new();
    for kind in KINDS {
        for stream in [false, true] {
            let body = dialect.request(kind, &format!("secret {stream}"), stream);
            keys.push(h.api.fill(dialect.path(kind), &body, &headers).await.key());
        }
    }
    h.api
        .post(
            dialect.embed_path(),
            &dialect.embed(&["a secret text"]),
            &headers,
        )
        .await
        .assert_cache("miss", &what);
    for key in &keys {
        let view = h.api.entry(key).await.expect("stored");
        assert!(!view.to_string().contains("secret-XYZ"), "{what}: {view}");
    }

    match backend {
        Backend::Redis => {
            let probe = h.probe().await;
            let all = probe.keys().await;
            assert_eq!(
                all.len(),
                keys.len() + 1,
                "{what}: answers and the embedding: {all:?}"
            );
            let mut plain_answers = 0;
            for key in &all {
                assert!(key.starts_with("thrifty:v1:"), "{what}: {key}");
                assert!(!key.contains("secret-XYZ"), "{what}: {key}");
                let ttl = probe.pttl(key).await;
                assert!(ttl > 0, "{what}: {key} has no TTL ({ttl})");
                let value = probe.get(key).await.expect("a value");
                assert!(
                    !contains(&value, b"secret-XYZ"),
                    "{what}: the value of {key}"
                );
                assert!(
                    !contains(&value, b"sk-secret"),
                    "{what}: the value of {key}"
                );
                plain_answers += usize::from(contains(&value, b"Echo:"));
            }
            assert_eq!(
                plain_answers,
                keys.len(),
                "{what}: the scan sees the answers"
            );
            // The ledger writes in the background: wait until it holds this test's calls.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            let mut ledger = probe.ledger_bytes().await;
            while ledger.is_empty() && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                ledger = probe.ledger_bytes().await;
            }
            assert!(!ledger.is_empty(), "{what}: the ledger recorded the calls");
            for secret in [&b"secret-XYZ"[..], b"sk-secret"] {
                assert!(!contains(&ledger, secret), "{what}: the savings ledger");
            }
        }
        Backend::Embedded => {
            let file = h.store_bytes();
            assert!(
                !contains(&file, b"secret-XYZ"),
                "{what}: the token is on disk"
            );
            assert!(
                contains(&file, b"thrifty:v1:answer:"),
                "{what}: keys on disk"
            );
            assert!(contains(&file, b"Echo:"), "{what}: answers on disk");
        }
    }
}

const KEY_ONE: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const KEY_TWO: &str = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const KEY_VAR: &str = "THRIFTY_TEST_KEY";
const SECRET: &str = "the launch code is pelican";

async fn encrypted(backend: Backend) -> Harness {
    Harness::setup(backend)
        .var(KEY_VAR, KEY_ONE)
        .config(|raw| raw.cache.encryption_key_env = Some(KEY_VAR.to_owned()))
        .start()
        .await
}

/// Asks for `SECRET` as JSON and (in other words) as a stream, and embeds it, expecting
/// `outcome` each time.
async fn ask(api: &Api, dialect: Dialect, outcome: &str, what: &str) {
    for stream in [false, true] {
        let text = if stream {
            format!("{SECRET}, streamed")
        } else {
            SECRET.to_owned()
        };
        let reply = api
            .send(dialect.chat_path(), &dialect.chat(&text, stream))
            .await;
        reply.assert_cache(outcome, &format!("{what}: stream={stream}"));
        assert_eq!(
            dialect.text(crate::Kind::Chat, &reply),
            Dialect::echo(&text),
            "{what}: served normally"
        );
        if outcome == "miss" {
            api.wait_stored(&reply.key()).await;
        }
    }
    let reply = api
        .send(dialect.embed_path(), &dialect.embed(&[SECRET]))
        .await;
    reply.assert_cache(outcome, &format!("{what}: embedding"));
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_entries_hide_the_answer_and_need_the_key(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let mut h = encrypted(backend).await;
    ask(&h.api, dialect, "miss", &what).await;
    ask(&h.api, dialect, "hit", &format!("{what}: same key")).await;
    let path = dialect.chat_path();
    assert_eq!(
        h.fake.calls_to(path),
        2,
        "{what}: JSON and stream filled once each"
    );

    match backend {
        Backend::Redis => {
            let probe = h.probe().await;
            let keys = probe.keys().await;
            assert_eq!(keys.len(), 3, "{what}: {keys:?}");
            for key in &keys {
                let value = probe.get(key).await.expect("a value");
                assert!(value.starts_with(b"TE1"), "{what}: {key} is sealed");
                for clear in [&b"pelican"[..], b"Echo", b"TJ1", b"model", b"tenant"] {
                    assert!(
                        !contains(&value, clear),
                        "{what}: {key} shows {:?}",
                        String::from_utf8_lossy(clear)
                    );
                }
            }

            // A replica with the same key reads the entries.
            let same = start_thrifty(h.raw.clone(), &h.vars, WAIT).await;
            let same_api = Api::new(same.url(), WAIT);
            ask(
                &same_api,
                dialect,
                "hit",
                &format!("{what}: replica, same key"),
            )
            .await;

            // One with another key sees misses, not errors, and serves normally.
            let mut vars = h.vars.clone();
            vars.retain(|(k, _)| k != KEY_VAR);
            vars.push((KEY_VAR.to_owned(), KEY_TWO.to_owned()));
            let other = start_thrifty(h.raw.clone(), &vars, WAIT).await;
            let other_api = Api::new(other.url(), WAIT);
            ask(&other_api, dialect, "miss", &format!("{what}: other key")).await;
            ask(
                &other_api,
                dialect,
                "hit",
                &format!("{what}: other key, refilled"),
            )
            .await;
            let stats = other_api.stats().await;
            assert!(
                stats["unreadable_entries"].as_u64() >= Some(2),
                "{what}: entries sealed with another key are counted: {stats}"
            );
            assert_eq!(h.fake.calls_to(path), 4, "{what}");
        }
        Backend::Embedded => {
            let file = h.store_bytes();
            assert!(
                contains(&file, b"thrifty:v1:answer:"),
                "{what}: keys on disk"
            );
            for clear in [&b"pelican"[..], b"Echo: ", b"TJ1"] {
                assert!(
                    !contains(&file, clear),
                    "{what}: the file shows {:?}",
                    String::from_utf8_lossy(clear)
                );
            }

            h.restart_with(&[(KEY_VAR, KEY_TWO)]).await;
            ask(&h.api, dialect, "miss", &format!("{what}: other key")).await;
            ask(
                &h.api,
                dialect,
                "hit",
                &format!("{what}: other key, refilled"),
            )
            .await;
            let stats = h.api.stats().await;
            assert!(
                stats["unreadable_entries"].as_u64() >= Some(2),
                "{what}: entries sealed with another key are counted: {stats}"
            );
            assert_eq!(h.fake.calls_to(path), 4, "{what}");
        }
    }
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_thrifty_does_not_serve_sealed_entries(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
) {
    let dialect = Dialect::OpenAi;
    let what = format!("{backend:?}");
    let mut h = encrypted(backend).await;
    h.api
        .fill(
            dialect.chat_path(),
            &dialect.chat(SECRET, false),
            &NO_HEADERS,
        )
        .await;
    h.raw.cache.encryption_key_env = None;
    h.restart_with(&[]).await;
    let reply = h
        .api
        .send(dialect.chat_path(), &dialect.chat(SECRET, false))
        .await;
    reply.assert_cache("miss", &format!("{what}: sealed entry, no key"));
    assert_eq!(
        reply.json()["choices"][0]["message"]["content"],
        json!(Dialect::echo(SECRET))
    );
}
