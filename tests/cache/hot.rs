//! The hot layer: decoded answers in each instance's memory, kept coherent through Redis. Two
//! instances share one Redis; what one deletes, the other stops serving at once.

use std::time::Duration;

use rstest::rstest;

use crate::common::client::start_thrifty;
use crate::common::thrifty::Thrifty;
use crate::{Api, Backend, Dialect, Harness, NO_HEADERS, WAIT, poll};

/// Two instances sharing one Redis: the harness's, and another with its client.
async fn two_instances() -> (Harness, Thrifty, Api) {
    let h = Harness::start(Backend::Redis).await;
    let other = start_thrifty(h.raw.clone(), &h.vars, WAIT).await;
    let b = Api::new(other.url(), WAIT);
    (h, other, b)
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_stops_serving_what_one_deleted(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{dialect:?}");
    let (h, other, b) = two_instances().await;
    let path = dialect.chat_path();
    let body = dialect.chat("both instances know this one", false);

    let miss = h.api.fill(path, &body, &NO_HEADERS).await;
    // The second instance reads it from Redis once, then holds a copy of its own.
    b.send(path, &body).await.assert_cache("hit", &what);
    b.send(path, &body).await.assert_cache("hit", &what);
    let calls = h.fake.calls_to(path);

    // The first instance deletes the entry: the second's copy goes too.
    let reply = h
        .api
        .admin_delete(&format!("/admin/cache/entries/{}", miss.key()))
        .await;
    reply.assert_ok(&what);
    poll(
        Duration::from_secs(5),
        &format!("{what}: the other instance drops its copy"),
        || async {
            let reply = b
                .send(path, &dialect.chat("an unrelated question", false))
                .await;
            reply.assert_ok(&what);
            let again = b.send(path, &body).await;
            (again.cache() == "miss").then_some(())
        },
    )
    .await;
    assert!(h.fake.calls_to(path) > calls, "{what}: it asked upstream");

    drop(other);
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_serves_what_one_rewrote(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{dialect:?}");
    let (h, other, b) = two_instances().await;
    let path = dialect.chat_path();
    let body = dialect.chat("rewritten while another instance holds it", false);

    h.api.fill(path, &body, &NO_HEADERS).await;
    // The second instance reads it from Redis once, then holds a copy of its own.
    b.send(path, &body).await.assert_cache("hit", &what);
    b.send(path, &body).await.assert_cache("hit", &what);
    // Old enough that its age tells the copy from a newer entry (ages are whole seconds).
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let held = b.send(path, &body).await;
    held.assert_cache("hit", &what);
    assert_ne!(held.header("x-thrifty-cache-age"), Some("0"), "{what}");

    // The first instance writes the answer anew: the second's copy goes with it.
    let refreshed = h
        .api
        .post(path, &body, &[("cache-control", "no-cache")])
        .await;
    refreshed.assert_ok(&what);
    poll(
        Duration::from_secs(5),
        &format!("{what}: the other instance serves the new entry"),
        || async {
            let hit = b.send(path, &body).await;
            hit.assert_cache("hit", &what);
            (hit.header("x-thrifty-cache-age") == Some("0")).then_some(())
        },
    )
    .await;

    drop(other);
}
