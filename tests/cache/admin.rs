//! The admin API under `/admin/cache`: access, statistics, invalidation, entries and warm-up.

use reqwest::{Method, StatusCode};
use rstest::rstest;
use serde_json::{Value, json};

use crate::client::{settled_value_reads, value_reads};
use crate::{ANSWER_PREFIX, Backend, Dialect, Harness, NO_HEADERS, WAIT, bearer, poll, tenant_id};

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_does_not_exist_without_a_token(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
) {
    let h = Harness::setup(backend).no_admin().start().await;
    for (method, path) in [
        (Method::GET, "/admin/cache/stats"),
        (Method::POST, "/admin/cache/invalidate"),
        (Method::GET, "/admin/cache/entries/0123456789abcdef"),
    ] {
        for token in [None, Some("adm"), Some("anything")] {
            let body = (method == Method::POST).then(|| json!({"all": true}));
            let reply = h
                .api
                .request(method.clone(), path, token, body.as_ref())
                .await;
            assert_eq!(
                reply.status,
                StatusCode::NOT_FOUND,
                "{backend:?}: {method} {path} with {token:?}: {}",
                reply.describe()
            );
        }
    }
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_answers_only_to_its_token(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
) {
    let h = Harness::start(backend).await;
    h.api
        .fill(
            Dialect::OpenAi.chat_path(),
            &Dialect::OpenAi.chat("kept", false),
            &NO_HEADERS,
        )
        .await;
    for (method, path) in [
        (Method::GET, "/admin/cache/stats"),
        (Method::POST, "/admin/cache/invalidate"),
        (Method::POST, "/admin/cache/warm"),
    ] {
        for token in [None, Some("wrong"), Some("adm2"), Some("")] {
            let body = (method == Method::POST).then(|| json!({"all": true}));
            let reply = h
                .api
                .request(method.clone(), path, token, body.as_ref())
                .await;
            Dialect::OpenAi.assert_error(
                &reply,
                StatusCode::UNAUTHORIZED,
                &format!("{backend:?}: {method} {path} with {token:?}"),
            );
        }
    }
    assert_eq!(
        h.answer_count().await,
        1,
        "{backend:?}: nothing was invalidated"
    );
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_lookups_per_tenant_and_model(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
) {
    let what = format!("{backend:?}");
    let h = Harness::setup(backend)
        .config(|raw| raw.cache.max_temperature = Some(1.0))
        .start()
        .await;
    let dialect = Dialect::OpenAi;
    let path = dialect.chat_path();
    let (a, b) = ([bearer("sk-stats-a")], [bearer("sk-stats-b")]);
    let question = dialect.chat("count me", false);

    h.api.fill(path, &question, &a).await;
    h.api
        .post(path, &question, &a)
        .await
        .assert_cache("hit", &what);
    h.api
        .post(path, &question, &a)
        .await
        .assert_cache("hit", &what);
    let off = [
        ("authorization", "Bearer sk-stats-a"),
        ("x-thrifty-cache", "off"),
    ];
    h.api
        .post(path, &question, &off)
        .await
        .assert_cache("off", &what);
    let mut hot = question.clone();
    hot["temperature"] = json!(1.5);
    h.api
        .post(path, &hot, &a)
        .await
        .assert_cache("bypass", &what);

    h.api.fill(path, &question, &b).await;
    let mut other_model = question.clone();
    other_model["model"] = json!("gpt-4o");
    h.api.fill(path, &other_model, &b).await;

    let stats = h.api.stats().await;
    let counts = |row: &Value| {
        (
            row["hits"].as_u64().unwrap_or(0),
            row["misses"].as_u64().unwrap_or(0),
            row["bypasses"].as_u64().unwrap_or(0),
            row["off"].as_u64().unwrap_or(0),
        )
    };
    assert_eq!(counts(&stats), (2, 3, 1, 1), "{what}: totals: {stats}");
    let by_tenant = &stats["by_tenant"];
    assert_eq!(
        counts(&by_tenant[tenant_id("sk-stats-a")]),
        (2, 1, 1, 1),
        "{what}: {stats}"
    );
    assert_eq!(
        counts(&by_tenant[tenant_id("sk-stats-b")]),
        (0, 2, 0, 0),
        "{what}: {stats}"
    );
    assert_eq!(
        counts(&stats["by_model"]["gpt-4o-mini"]),
        (2, 2, 1, 1),
        "{what}: {stats}"
    );
    assert_eq!(
        counts(&stats["by_model"]["gpt-4o"]),
        (0, 1, 0, 0),
        "{what}: {stats}"
    );
    assert!(
        (stats["hit_rate"].as_f64().unwrap_or(0.0) - 0.4).abs() < 1e-9,
        "{what}: two hits in five lookups: {stats}"
    );
    assert_eq!(stats["entries"]["answers"], 3, "{what}: {stats}");
    assert_eq!(stats["stored"], 3, "{what}: {stats}");
    assert_eq!(
        stats["store"],
        json!(match backend {
            Backend::Redis => "redis",
            Backend::Embedded => "embedded",
        })
    );
    let bytes = stats["bytes"].as_u64().expect("bytes");
    assert!(bytes > 0, "{what}: {stats}");
    if backend == Backend::Embedded {
        // The answers' bytes lie in the value log, as its files on disk say.
        let log = &stats["value_log"];
        let on_disk: Vec<u64> = std::fs::read_dir(h.raw.store.data_dir.join("values"))
            .expect("the value log's directory")
            .map(|item| item.expect("a segment").metadata().expect("its size").len())
            .collect();
        assert_eq!(log["segments"], on_disk.len(), "{what}: {stats}");
        assert_eq!(log["bytes"], on_disk.iter().sum::<u64>(), "{what}: {stats}");
        assert!(log["bytes"].as_u64() >= Some(bytes), "{what}: {stats}");
    }
    if backend == Backend::Redis {
        let probe = h.probe().await;
        let mut held = 0;
        for key in probe.keys().await {
            held += probe.get(&key).await.map_or(0, |v| v.len() as u64);
        }
        assert_eq!(bytes, held, "{what}: the bytes Redis holds");
    }
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_embedding_lookups_too(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let h = Harness::start(backend).await;
    let path = dialect.embed_path();
    let body = dialect.embed(&["count this embedding"]);
    h.api.send(path, &body).await.assert_cache("miss", &what);
    h.api.send(path, &body).await.assert_cache("hit", &what);
    let stats = h.api.stats().await;
    assert_eq!(stats["entries"]["embeddings"], 1, "{what}: {stats}");
    let row = &stats["by_model"][dialect.embed_model()];
    assert_eq!(
        (row["hits"].as_u64(), row["misses"].as_u64()),
        (Some(1), Some(1)),
        "{what}: an embedding hit and miss are counted like any other: {stats}"
    );
}

/// One entry of the invalidation scenario.
struct Fixture {
    name: &'static str,
    token: &'static str,
    model: &'static str,
    text: &'static str,
    headers: &'static [(&'static str, &'static str)],
}

const FIXTURES: [Fixture; 7] = [
    Fixture {
        name: "a",
        token: "sk-inv-a",
        model: "gpt-4o-mini",
        text: "one",
        headers: &[],
    },
    Fixture {
        name: "a other model",
        token: "sk-inv-a",
        model: "gpt-4o",
        text: "two",
        headers: &[],
    },
    Fixture {
        name: "b",
        token: "sk-inv-b",
        model: "gpt-4o-mini",
        text: "one",
        headers: &[],
    },
    Fixture {
        name: "a in ns1",
        token: "sk-inv-a",
        model: "gpt-4o-mini",
        text: "three",
        headers: &[("x-thrifty-cache-namespace", "ns1")],
    },
    Fixture {
        name: "a tagged team:x",
        token: "sk-inv-a",
        model: "gpt-4o-mini",
        text: "four",
        headers: &[("x-thrifty-cache-tags", "project, team:x")],
    },
    Fixture {
        name: "b tagged team",
        token: "sk-inv-b",
        model: "gpt-4o-mini",
        text: "five",
        headers: &[("x-thrifty-cache-tags", "team")],
    },
    Fixture {
        name: "a tagged teams",
        token: "sk-inv-a",
        model: "gpt-4o-mini",
        text: "six",
        headers: &[("x-thrifty-cache-tags", "teams")],
    },
];

impl Fixture {
    fn headers(&self) -> Vec<(String, String)> {
        let mut headers = vec![("authorization".to_owned(), format!("Bearer {}", self.token))];
        headers.extend(
            self.headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        headers
    }

    fn body(&self) -> Value {
        let mut body = Dialect::OpenAi.chat(self.text, false);
        body["model"] = json!(self.model);
        body
    }
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_removes_exactly_what_it_selects(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
) {
    let h = Harness::start(backend).await;
    let path = Dialect::OpenAi.chat_path();
    let embed_path = Dialect::OpenAi.embed_path();
    let embed = Dialect::OpenAi.embed(&["an embedded text"]);
    let (a, b) = ([bearer("sk-inv-a")], [bearer("sk-inv-b")]);

    // Fills every fixture that is missing and returns their short keys.
    let fill = || async {
        let mut keys = Vec::new();
        for fixture in &FIXTURES {
            let reply = h.api.post(path, &fixture.body(), &fixture.headers()).await;
            reply.assert_ok(fixture.name);
            h.api.wait_stored(&reply.key()).await;
            keys.push(reply.key());
        }
        for token in [&a, &b] {
            h.api
                .post(embed_path, &embed, token)
                .await
                .assert_ok("embedding");
        }
        assert_eq!(h.api.stats().await["entries"]["embeddings"], 2);
        keys
    };
    let keys = fill().await;

    let selectors: Vec<(Value, Vec<&str>, u64)> = vec![
        (
            json!({"tenant": tenant_id("sk-inv-a")}),
            vec![
                "a",
                "a other model",
                "a in ns1",
                "a tagged team:x",
                "a tagged teams",
            ],
            1,
        ),
        (json!({"namespace": "ns1"}), vec!["a in ns1"], 0),
        (json!({"model": "gpt-4o"}), vec!["a other model"], 0),
        (
            json!({"tag": "team"}),
            vec!["a tagged team:x", "b tagged team"],
            0,
        ),
        (json!({"tag": "team:x"}), vec!["a tagged team:x"], 0),
        (json!({"key_prefix": keys[2]}), vec!["b"], 0),
        (
            json!({"tenant": tenant_id("sk-inv-b"), "model": "gpt-4o-mini"}),
            vec!["b", "b tagged team"],
            0,
        ),
        (
            json!({"all": true}),
            FIXTURES.iter().map(|f| f.name).collect(),
            2,
        ),
    ];
    for (selector, doomed, embeddings_doomed) in selectors {
        let what = format!("{backend:?}: invalidate {selector}");
        assert_eq!(fill().await, keys, "{what}: the same entries every time");
        let reply = h.api.admin_post("/admin/cache/invalidate", &selector).await;
        reply.assert_ok(&what);
        assert_eq!(
            reply.json()["deleted"].as_u64(),
            Some(doomed.len() as u64 + embeddings_doomed),
            "{what}: {}",
            reply.text()
        );
        for (fixture, key) in FIXTURES.iter().zip(&keys) {
            let present = h.api.entry(key).await.is_some();
            assert_eq!(
                present,
                !doomed.contains(&fixture.name),
                "{what}: {} present={present}",
                fixture.name
            );
        }
        assert_eq!(
            h.api.stats().await["entries"]["embeddings"].as_u64(),
            Some(2 - embeddings_doomed),
            "{what}: embeddings"
        );
    }

    for bad in [
        json!({}),
        json!({"all": false}),
        json!({"tenant": 3}),
        json!({"nope": 1}),
    ] {
        let reply = h.api.admin_post("/admin/cache/invalidate", &bad).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            reply.describe()
        );
    }
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_can_be_read_and_deleted_by_its_key(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let h = Harness::start(backend).await;
    let path = dialect.chat_path();
    let body = dialect.chat("inspect me", false);
    let token = [bearer("sk-inspect")];
    let miss = h.api.fill(path, &body, &token).await;
    let key = miss.key();

    for id in [&key[..8], &key[..12], key.as_str()] {
        let reply = h.api.admin_get(&format!("/admin/cache/entries/{id}")).await;
        reply.assert_ok(&what);
        let view = reply.json();
        let full = view["key"].as_str().expect("key");
        assert!(
            full.starts_with(&format!("{ANSWER_PREFIX}{key}")),
            "{what}: {full}"
        );
        assert_eq!(
            full.len(),
            ANSWER_PREFIX.len() + 64,
            "{what}: a SHA-256 key"
        );
        let entry = &view["entry"];
        assert_eq!(entry["model"], dialect.model(crate::Kind::Chat), "{what}");
        assert_eq!(entry["tenant"], tenant_id("sk-inspect"), "{what}");
        assert_eq!(entry["dialect"], dialect.name());
        assert_eq!(entry["answer"]["mode"], "json", "{what}");
        assert_eq!(
            dialect.stable(&entry["answer"]["body"]),
            dialect.stable(&miss.json()),
            "{what}: the entry is the recorded answer"
        );
    }
    for bad in ["0123456", "zzzzzzzz", "0123abc!"] {
        let reply = h
            .api
            .admin_get(&format!("/admin/cache/entries/{bad}"))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{what}: {bad}");
    }
    let unknown = h
        .api
        .admin_get("/admin/cache/entries/0000000000000000")
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{what}");

    let deleted = h
        .api
        .admin_delete(&format!("/admin/cache/entries/{key}"))
        .await;
    deleted.assert_ok(&what);
    assert_eq!(deleted.json()["deleted"], 1, "{what}");
    assert!(h.api.entry(&key).await.is_none(), "{what}: gone");
    if backend == Backend::Redis {
        let keys = h.probe().await.keys().await;
        assert!(
            !keys.iter().any(|k| k.contains(&key)),
            "{what}: gone from Redis: {keys:?}"
        );
    }
    let again = h.api.post(path, &body, &token).await;
    again.assert_cache("miss", &format!("{what}: after delete"));
    assert_eq!(h.fake.calls_to(path), 2, "{what}");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warming_fills_the_cache_for_later_clients(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let h = Harness::start(backend).await;
    let path = dialect.chat_path();
    let body = dialect.chat("warm me up", false);
    let request = json!({"requests": [
        {"path": path, "body": body, "headers": {"authorization": "Bearer t"}},
        {"path": "/v1/models", "body": {}},
    ]});
    let reply = h.api.admin_post("/admin/cache/warm", &request).await;
    reply.assert_ok(&what);
    let results = reply.json()["results"].clone();
    assert_eq!(results[0]["status"], 200, "{what}: {results}");
    assert_eq!(results[0]["cache"], "miss", "{what}: {results}");
    assert!(
        results[1]["error"].is_string(),
        "{what}: not cacheable: {results}"
    );
    assert_eq!(
        h.fake.calls_to(path),
        1,
        "{what}: warming went upstream once"
    );
    poll(
        WAIT,
        &format!("{what}: the warmed entry is stored"),
        || async { (h.answer_count().await == 1).then_some(()) },
    )
    .await;

    let token = [bearer("t")];
    let hit = h.api.post(path, &body, &token).await;
    hit.assert_cache("hit", &format!("{what}: the warmed entry answers"));
    assert_eq!(
        dialect.text(crate::Kind::Chat, &hit),
        Dialect::echo("warm me up")
    );
    let streamed = h
        .api
        .post(path, &dialect.chat("warm me up", true), &token)
        .await;
    streamed.assert_cache("hit", &format!("{what}: for a streaming client too"));
    assert_eq!(h.fake.calls_to(path), 1, "{what}");
    h.api
        .send(path, &body)
        .await
        .assert_cache("miss", &format!("{what}: another tenant"));
}

/// Invalidating a tenant with tens of thousands of answers runs as a job: asked not to wait,
/// the admin API answers 202 with the job's status path, the job removes the tenant's answers
/// in bounded batches under the bulk budget (not the 100 ms request timeout), then the semantic
/// records that point to them, and leaves the other tenant alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidating_a_large_tenant_is_a_job_that_takes_its_semantic_records_too() {
    const COPIES: usize = 20_000;
    const OTHERS: usize = 1_000;
    const SEMANTIC_PREFIX: &str = "thrifty:v1:semantic:";
    let h = Harness::setup(Backend::Redis)
        .config(|raw| raw.store.timeout = std::time::Duration::from_millis(100))
        .start()
        .await;
    let dialect = Dialect::OpenAi;
    let path = dialect.chat_path();
    let probe = h.probe().await;
    // One real answer per tenant, copied under many keys straight into Redis, each with a
    // semantic record pointing to it.
    for (token, copies, label) in [("sk-big-a", COPIES, "a"), ("sk-big-b", OTHERS, "b")] {
        let reply = h
            .api
            .post(
                path,
                &dialect.chat(&format!("tenant {label} asks"), false),
                &[bearer(token)],
            )
            .await;
        reply.assert_ok(label);
        h.api.wait_stored(&reply.key()).await;
        let original = probe.answer_key(&reply.key()).await;
        let raw = probe.get(&original).await.expect("the answer is stored");
        for chunk in (0..copies).collect::<Vec<_>>().chunks(1_000) {
            let mut answers = redis::cmd("MSET");
            let mut records = redis::cmd("MSET");
            for i in chunk {
                let hash = format!("{label}{i:031x}");
                answers.arg(format!("{ANSWER_PREFIX}{hash}")).arg(&raw);
                records
                    .arg(format!("{SEMANTIC_PREFIX}{label}partition:{hash}"))
                    .arg(format!("the question text of {label} {i}"));
            }
            let () = probe.query(&answers).await;
            let () = probe.query(&records).await;
        }
    }
    let count = |prefix: String| {
        let probe = &probe;
        async move { probe.scan(&format!("{prefix}*")).await.len() }
    };
    assert_eq!(count(ANSWER_PREFIX.to_owned()).await, COPIES + OTHERS + 2);

    let selector = json!({"tenant": tenant_id("sk-big-a")});
    let reply = h
        .api
        .admin_post("/admin/cache/invalidate?wait=0", &selector)
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    let status = reply.json()["status"]
        .as_str()
        .expect("a 202 names the job's status path")
        .to_owned();
    assert_eq!(reply.json()["state"], "running");
    let done = poll(
        std::time::Duration::from_secs(60),
        "the invalidation job ends",
        || async {
            let progress = h.api.admin_get(&status).await;
            progress.assert_ok("job status");
            let progress = progress.json();
            (progress["state"] != "running").then_some(progress)
        },
    )
    .await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["deleted"], COPIES + 1, "{done}");
    assert_eq!(done["semantic_deleted"], COPIES, "{done}");
    assert_eq!(
        count(format!("{ANSWER_PREFIX}a")).await,
        0,
        "no copy of tenant a's answer is left"
    );
    assert_eq!(
        count(format!("{SEMANTIC_PREFIX}apartition:")).await,
        0,
        "no semantic record of tenant a is left"
    );
    assert_eq!(
        count(ANSWER_PREFIX.to_owned()).await,
        OTHERS + 1,
        "tenant b keeps its answers"
    );
    assert_eq!(
        count(format!("{SEMANTIC_PREFIX}bpartition:")).await,
        OTHERS,
        "tenant b keeps its semantic records"
    );
    let unknown = h.api.admin_get("/admin/cache/jobs/nope").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

/// `/admin/cache/stats` counts entries and bytes from the keys and their stored lengths: Redis
/// runs no command that returns a value while it answers, and the figures follow what is
/// stored and deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_entries_and_bytes_without_reading_values() {
    let h = Harness::start(Backend::Redis).await;
    let dialect = Dialect::OpenAi;
    let path = dialect.chat_path();
    let probe = h.probe().await;
    let mut keys = Vec::new();
    for text in ["first", "second", "third"] {
        let reply = h.api.send(path, &dialect.chat(text, false)).await;
        reply.assert_ok(text);
        h.api.wait_stored(&reply.key()).await;
        keys.push(reply.key());
    }
    h.api
        .send(dialect.embed_path(), &dialect.embed(&["one", "two"]))
        .await
        .assert_ok("embeddings");
    let held = |key: String| {
        let probe = &probe;
        async move { probe.get(&key).await.map_or(0, |v| v.len() as u64) }
    };
    let mut bytes = 0;
    for key in probe.keys().await {
        bytes += held(key).await;
    }

    let before = settled_value_reads(&probe).await;
    let stats = h.api.stats().await;
    assert_eq!(
        value_reads(&probe).await,
        before,
        "stats read no value: {stats}"
    );
    assert_eq!(stats["entries"], json!({"answers": 3, "embeddings": 2}));
    assert_eq!(stats["bytes"], bytes, "{stats}");

    let gone = probe.answer_key(&keys[0]).await;
    let gone_bytes = held(gone.clone()).await;
    let deleted = h
        .api
        .request(
            Method::DELETE,
            &format!("/admin/cache/entries/{}", keys[0]),
            Some(crate::ADMIN_TOKEN),
            None,
        )
        .await;
    deleted.assert_ok("delete one entry");
    let before = settled_value_reads(&probe).await;
    let stats = h.api.stats().await;
    assert_eq!(value_reads(&probe).await, before, "{stats}");
    assert_eq!(stats["entries"], json!({"answers": 2, "embeddings": 2}));
    assert_eq!(stats["bytes"], bytes - gone_bytes, "{stats}");
}
