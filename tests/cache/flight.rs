//! Single flight: identical concurrent misses send one request upstream and share its answer.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::join_all;
use rstest::rstest;
use serde_json::Value;

use crate::common::fake_llm::FakeLlm;
use crate::{Api, Backend, Dialect, Harness, Kind};

/// How many identical requests arrive together.
const CLIENTS: usize = 20;

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_concurrent_misses_go_upstream_once(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    for stream in [false, true] {
        let what = format!("{backend:?}/{dialect:?} stream={stream}");
        let h = Harness::setup(backend)
            .fake(FakeLlm::builder().latency(Duration::from_millis(300)))
            .start()
            .await;
        let path = dialect.chat_path();
        let text = "everyone asks this at once";
        let body = dialect.chat(text, stream);
        let replies = join_all((0..CLIENTS).map(|_| h.api.send(path, &body))).await;

        assert_eq!(
            h.fake.calls_to(path),
            1,
            "{what}: {CLIENTS} identical requests, one upstream call"
        );
        let mut outcomes: Vec<&str> = replies.iter().map(|r| r.cache()).collect();
        outcomes.sort_unstable();
        let mut expected = vec!["hit"; CLIENTS - 1];
        expected.push("miss");
        assert_eq!(outcomes, expected, "{what}: one leader, the rest follow it");
        for reply in &replies {
            reply.assert_ok(&what);
            assert_eq!(reply.is_stream(), stream, "{what}: {}", reply.describe());
            if stream {
                dialect.assert_stream_ends(reply, &what);
            }
            assert_eq!(
                dialect.text(Kind::Chat, reply),
                Dialect::echo(text),
                "{what}: everyone gets the answer"
            );
            assert_eq!(reply.key(), replies[0].key(), "{what}");
        }
    }
}

/// How many miss-then-repeat rounds the race below gets to show itself in.
const ROUNDS: usize = 40;

/// A request sent as soon as the previous identical answer has ended finds that answer, in the
/// store or still in flight; it never becomes a second upstream call, however the write of the
/// entry and the lookup interleave.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_right_after_a_miss_never_goes_upstream_again(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let h = Harness::start(backend).await;
    let path = dialect.chat_path();
    for round in 0..ROUNDS {
        let body = dialect.chat(&format!("round {round}"), false);
        h.api
            .send(path, &body)
            .await
            .assert_cache("miss", &format!("{what}: round {round}"));
        let again = h.api.send(path, &body).await;
        again.assert_ok(&what);
        assert_eq!(
            (again.cache(), h.fake.calls_to(path)),
            ("hit", round + 1),
            "{what}: round {round}: the repeat went upstream"
        );
    }
}

/// The chat text a streamed body carries, as far as it goes.
fn streamed_text(dialect: Dialect, body: &str) -> String {
    let lines = body.lines().filter_map(|line| match dialect {
        Dialect::OpenAi => line.strip_prefix("data: ").filter(|d| *d != "[DONE]"),
        Dialect::Ollama => Some(line).filter(|l| !l.trim().is_empty()),
    });
    lines
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .map(|chunk| {
            let text = match dialect {
                Dialect::OpenAi => &chunk["choices"][0]["delta"]["content"],
                Dialect::Ollama => &chunk["message"]["content"],
            };
            text.as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

/// What one streaming client saw: when its first piece and its end came, what it read, and
/// whether its body failed.
struct Watched {
    first: Option<Instant>,
    ended: Instant,
    body: String,
    cache: String,
    failed: bool,
}

/// Streams `body` from `path`, timing the first piece; with `leave_after_first`, hangs up
/// once it has one.
async fn watch_stream(api: &Api, path: &str, body: &Value, leave_after_first: bool) -> Watched {
    let response = api
        .client
        .post(api.url(path))
        .json(body)
        .send()
        .await
        .expect("the request is sent");
    let cache = response
        .headers()
        .get("x-thrifty-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut pieces = response.bytes_stream();
    let (mut first, mut text, mut failed) = (None, Vec::new(), false);
    while let Some(piece) = pieces.next().await {
        match piece {
            Ok(piece) => {
                first.get_or_insert_with(Instant::now);
                text.extend_from_slice(&piece);
                if leave_after_first {
                    break;
                }
            }
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    Watched {
        first,
        ended: Instant::now(),
        body: String::from_utf8_lossy(&text).into_owned(),
        cache,
        failed,
    }
}

/// Streams that join an identical one in flight get its pieces as they come, not all at once
/// when it ends: the upstream takes 300 ms to answer and 100 ms per piece.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staggered_identical_streams_each_get_pieces_before_the_leader_ends(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{dialect:?}");
    let h = Harness::setup(Backend::Embedded)
        .fake(
            FakeLlm::builder()
                .latency(Duration::from_millis(300))
                .chunk_delay(Duration::from_millis(100)),
        )
        .start()
        .await;
    let path = dialect.chat_path();
    let text = "four clients stream this one after another";
    let body = dialect.chat(text, true);
    let clients = (0..4u64).map(|i| {
        let (api, body) = (&h.api, &body);
        async move {
            tokio::time::sleep(Duration::from_millis(150 * i)).await;
            watch_stream(api, path, body, false).await
        }
    });
    let watched = join_all(clients).await;
    assert_eq!(h.fake.calls_to(path), 1, "{what}: one upstream call");
    let leader_end = watched[0].ended;
    assert_eq!(watched[0].cache, "miss", "{what}");
    for (i, w) in watched.iter().enumerate() {
        assert!(!w.failed, "{what}: client {i} failed");
        let first = w.first.expect("a first piece");
        assert!(
            first + Duration::from_millis(50) < leader_end,
            "{what}: client {i} had its first piece {:?} before the leader's end",
            leader_end.saturating_duration_since(first)
        );
        assert_eq!(
            streamed_text(dialect, &w.body),
            Dialect::echo(text),
            "{what}: client {i} got the whole answer"
        );
    }
    for w in &watched[1..] {
        assert_eq!(w.cache, "hit", "{what}: followers are hits");
    }
    // Each OpenAI client's stream has one id of its own, as live answers have.
    if dialect == Dialect::OpenAi {
        let ids: Vec<HashSet<String>> = watched.iter().map(|w| stream_ids(&w.body)).collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(
                id.len(),
                1,
                "{what}: client {i}'s chunks share one id: {id:?}"
            );
        }
        let distinct: HashSet<&String> = ids.iter().flatten().collect();
        assert_eq!(
            distinct.len(),
            4,
            "{what}: every client has its own id: {ids:?}"
        );
    }
    // Each Ollama client's chunks carry the times they reached it, not the leader's.
    if dialect == Dialect::Ollama {
        let leader = stream_times(&watched[0].body);
        for (i, w) in watched.iter().enumerate().skip(1) {
            let times = stream_times(&w.body);
            assert!(
                !times.is_empty() && times.is_disjoint(&leader),
                "{what}: client {i}'s created_at are its own: {times:?} / {leader:?}"
            );
        }
    }
}

/// The `created_at` times of an NDJSON stream's chunks.
fn stream_times(body: &str) -> HashSet<String> {
    body.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|chunk| chunk["created_at"].as_str().map(str::to_owned))
        .collect()
}

/// The ids of an SSE stream's chunks.
fn stream_ids(body: &str) -> HashSet<String> {
    body.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|chunk| chunk["id"].as_str().map(str::to_owned))
        .collect()
}

/// A leader whose client leaves midway does not hang the calls following it: they end at
/// once (with the break the leader's answer had), and the next identical call goes upstream.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_of_a_leader_whose_client_leaves_do_not_hang(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{dialect:?}");
    // The follower joins while the leader waits for the upstream's head.
    let h = Harness::setup(Backend::Embedded)
        .fake(
            FakeLlm::builder()
                .latency(Duration::from_millis(300))
                .chunk_delay(Duration::from_millis(200)),
        )
        .start()
        .await;
    let path = dialect.chat_path();
    let text = "the leader of this one leaves early";
    let body = dialect.chat(text, true);
    let leader = watch_stream(&h.api, path, &body, true);
    let follower = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let w = watch_stream(&h.api, path, &body, false).await;
        (w, started.elapsed())
    };
    let (_, (followed, took)) = tokio::join!(leader, follower);
    assert!(
        took < Duration::from_secs(5),
        "{what}: the follower ended in {took:?}"
    );
    assert!(
        followed.failed || streamed_text(dialect, &followed.body).starts_with("Echo"),
        "{what}: the follower ended with a break or the answer: {}",
        followed.body
    );
    let calls = h.fake.calls_to(path);
    let again = watch_stream(&h.api, path, &body, false).await;
    assert!(!again.failed, "{what}");
    assert_eq!(
        h.fake.calls_to(path),
        calls + 1,
        "{what}: nothing broken was cached"
    );
}

/// A leader whose client leaves before the upstream answered takes nobody down with it: one
/// of its followers takes the upstream call over and the others follow that one.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_takes_over_when_the_leader_leaves_before_the_answer(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{dialect:?}");
    let h = Harness::setup(Backend::Embedded)
        .fake(FakeLlm::builder().latency(Duration::from_millis(600)))
        .start()
        .await;
    let path = dialect.chat_path();
    let text = "whoever asked first gave up";
    for stream in [false, true] {
        let body = dialect.chat(&format!("{text} (stream={stream})"), stream);
        let calls = h.fake.calls_to(path);
        let impatient = h
            .api
            .client
            .post(h.api.url(path))
            .json(&body)
            .timeout(Duration::from_millis(200))
            .send();
        let followers = (0..3).map(|_| {
            let (api, body) = (&h.api, &body);
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                watch_stream(api, path, body, false).await
            }
        });
        let (gave_up, followed) = tokio::join!(impatient, join_all(followers));
        assert!(gave_up.is_err(), "{what}: the first client gave up");
        let mut outcomes: Vec<&str> = followed.iter().map(|w| w.cache.as_str()).collect();
        outcomes.sort_unstable();
        assert_eq!(
            outcomes,
            ["hit", "hit", "miss"],
            "{what} stream={stream}: one took over, the others followed it"
        );
        assert!(followed.iter().all(|w| !w.failed), "{what}");
        // The abandoned call may have been cut before the fake counted it.
        assert!(
            h.fake.calls_to(path) <= calls + 2,
            "{what} stream={stream}: the abandoned call and the one that took over, no more"
        );
    }
}
