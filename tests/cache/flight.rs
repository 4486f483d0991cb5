//! Single flight: identical concurrent misses send one request upstream and share its answer.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::join_all;
use rstest::rstest;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::common::fake_llm::FakeLlm;
use crate::{Api, Backend, Dialect, Harness, Kind, WAIT, await_recorded_usage};

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

/// A streamed call asking for usage that waited on an identical call in flight recording no
/// usage cannot take that answer: it goes upstream itself, as the next flight, and its answer
/// (with usage) is recorded, so the next such call is a hit.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_leaders_answer_cannot_serve_records_its_own(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
) {
    let what = format!("{backend:?}");
    let dialect = Dialect::OpenAi;
    // With `savings.stream_usage` off, thrifty records a stream as its client asked for it.
    let h = Harness::setup(backend)
        .fake(FakeLlm::builder().latency(Duration::from_millis(300)))
        .config(|raw| raw.savings.stream_usage = false)
        .start()
        .await;
    let path = dialect.chat_path();
    let text = "the leader records no usage";
    let plain = dialect.request(Kind::Chat, text, true);
    let with_usage = dialect.with_usage(plain.clone());
    let leader = h.api.send(path, &plain);
    let waiter = async {
        // Arrives while the leader waits for the upstream.
        tokio::time::sleep(Duration::from_millis(100)).await;
        h.api.send(path, &with_usage).await
    };
    let (leader, waiter) = tokio::join!(leader, waiter);
    leader.assert_cache("miss", &what);
    waiter.assert_cache("miss", &what);
    assert!(
        waiter.ends_with_usage(),
        "{what}: the waiter got its usage: {}",
        waiter.text()
    );
    assert_eq!(h.fake.calls_to(path), 2, "{what}");
    // The waiter's answer is recorded.
    await_recorded_usage(&h.api, &waiter.key(), &what).await;
    let again = h.api.send(path, &with_usage).await;
    again.assert_cache("hit", &what);
    assert_eq!(h.fake.calls_to(path), 2, "{what}");
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
    streamed_pieces(dialect, body).concat()
}

/// The chat text of each chunk of a streamed body that carries some, in order.
fn streamed_pieces(dialect: Dialect, body: &str) -> Vec<String> {
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
        .filter(|text| !text.is_empty())
        .collect()
}

/// Whether a streamed body ends the way the dialect ends a stream.
fn ends(dialect: Dialect, body: &str) -> bool {
    match dialect {
        Dialect::OpenAi => body.trim_end().ends_with("data: [DONE]"),
        Dialect::Ollama => body
            .lines()
            .rfind(|line| !line.trim().is_empty())
            .and_then(|line| serde_json::from_str::<Value>(line).ok())
            .is_some_and(|last| last["done"] == true),
    }
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

/// When a streaming client hangs up.
enum Leave {
    /// It reads to the end.
    Never,
    /// Once it has its first piece.
    AfterFirst,
    /// Once it is told to (or its teller is gone).
    When(oneshot::Receiver<()>),
}

/// Streams `body` from `path`, timing the first piece, and hangs up as `leave` says.
async fn watch_stream(api: &Api, path: &str, body: &Value, leave: Leave) -> Watched {
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
    let (leave_after_first, told) = match leave {
        Leave::Never => (false, None),
        Leave::AfterFirst => (true, None),
        Leave::When(told) => (false, Some(told)),
    };
    let told = async {
        match told {
            Some(told) => {
                let _ = told.await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(told);
    let mut pieces = response.bytes_stream();
    let (mut first, mut text, mut failed) = (None, Vec::new(), false);
    loop {
        let piece = tokio::select! {
            biased;
            () = &mut told => break,
            piece = pieces.next() => piece,
        };
        let Some(piece) = piece else {
            break;
        };
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

/// A thrifty on the embedded store whose upstream takes 300 ms to answer and `per_piece`
/// for each piece of a stream.
async fn slow_stream(per_piece: Duration) -> Harness {
    Harness::setup(Backend::Embedded)
        .fake(
            FakeLlm::builder()
                .latency(Duration::from_millis(300))
                .chunk_delay(per_piece),
        )
        .start()
        .await
}

/// A call identical to a stream that has already gone past `cache.max_entry_bytes` (so nothing
/// will be recorded) goes upstream itself and gets a whole answer, instead of following a
/// shared stream that can only break off.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_after_the_leaders_stream_outgrew_the_cache_goes_upstream_itself(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{dialect:?}");
    let h = Harness::setup(Backend::Embedded)
        .fake(FakeLlm::builder().chunk_delay(Duration::from_millis(60)))
        .config(|raw| raw.cache.max_entry_bytes = 300)
        .start()
        .await;
    let path = dialect.chat_path();
    let text = "a stream long enough to outgrow a small cache entry limit before it ends";
    let body = dialect.chat(text, true);
    let leader = watch_stream(&h.api, path, &body, Leave::Never);
    let late = async {
        // Past the limit by now, with most of the leader's stream still to come.
        tokio::time::sleep(Duration::from_millis(400)).await;
        watch_stream(&h.api, path, &body, Leave::Never).await
    };
    let (leader, late) = tokio::join!(leader, late);
    assert!(
        late.first.expect("a first piece") < leader.ended,
        "{what}: it came while the leader streamed"
    );
    for (who, w) in [("leader", &leader), ("late call", &late)] {
        assert!(!w.failed, "{what}: the {who}'s stream failed");
        assert_eq!(w.cache, "miss", "{what}: the {who}");
        assert_eq!(
            streamed_text(dialect, &w.body),
            Dialect::echo(text),
            "{what}: the {who} got the whole answer"
        );
    }
    assert_eq!(
        h.fake.calls_to(path),
        2,
        "{what}: the late call went upstream itself"
    );
}

/// Streams that join an identical one in flight get its pieces as they come, not all at once
/// when it ends: the upstream takes 300 ms to answer and 100 ms per piece.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staggered_identical_streams_each_get_pieces_before_the_leader_ends(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{dialect:?}");
    let h = slow_stream(Duration::from_millis(100)).await;
    let path = dialect.chat_path();
    let text = "four clients stream this one after another";
    let body = dialect.chat(text, true);
    let clients = (0..4u64).map(|i| {
        let (api, body) = (&h.api, &body);
        async move {
            tokio::time::sleep(Duration::from_millis(150 * i)).await;
            watch_stream(api, path, body, Leave::Never).await
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

/// How many calls follow a leader whose client leaves.
const FOLLOWERS: usize = 2;

/// A leader whose client leaves midway keeps its upstream call going for the calls following
/// it: each gets the whole answer as a direct stream has it, from the one upstream call, which
/// is neither cancelled nor lost: it is stored, and the leader's savings record bills it whole.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_of_a_leader_whose_client_leaves_get_the_whole_answer(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{dialect:?}");
    // The followers join while the leader waits for the upstream's head.
    let h = slow_stream(Duration::from_millis(200)).await;
    let path = dialect.chat_path();
    let text = "the leader of this one leaves early";
    let body = dialect.chat(text, true);
    let leader = watch_stream(&h.api, path, &body, Leave::AfterFirst);
    let followers = (0..FOLLOWERS).map(|_| {
        let (api, body) = (&h.api, &body);
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            watch_stream(api, path, body, Leave::Never).await
        }
    });
    let (left, followed) = tokio::join!(leader, join_all(followers));
    assert_eq!(left.cache, "miss", "{what}: the leader");
    assert!(
        !ends(dialect, &left.body),
        "{what}: the leader's client left before the end: {}",
        left.body
    );
    assert_eq!(h.fake.calls_to(path), 1, "{what}: one upstream call");

    // What a client talking to the upstream itself gets.
    let direct = h
        .api
        .client
        .post(format!("{}{path}", h.fake.url()))
        .json(&body)
        .send()
        .await
        .expect("the direct request is sent")
        .text()
        .await
        .expect("the direct stream is read");
    let direct_pieces = streamed_pieces(dialect, &direct);
    assert_eq!(
        direct_pieces.concat(),
        Dialect::echo(text),
        "{what}: {direct}"
    );
    for (i, w) in followed.iter().enumerate() {
        assert!(!w.failed, "{what}: follower {i} broke off: {}", w.body);
        assert_eq!(w.cache, "hit", "{what}: follower {i}");
        assert_eq!(
            streamed_pieces(dialect, &w.body),
            direct_pieces,
            "{what}: follower {i} got the pieces a direct stream has"
        );
        assert!(ends(dialect, &w.body), "{what}: follower {i}: {}", w.body);
    }
    assert_eq!(
        h.fake.cancelled_streams(),
        0,
        "{what}: the upstream call went on to its end"
    );

    // The answer was stored: the next identical call is a hit that stays here.
    let calls = h.fake.calls_to(path);
    let again = watch_stream(&h.api, path, &body, Leave::Never).await;
    assert!(!again.failed, "{what}");
    assert_eq!(again.cache, "hit", "{what}: the answer was stored");
    assert_eq!(streamed_text(dialect, &again.body), Dialect::echo(text));
    assert_eq!(h.fake.calls_to(path), calls, "{what}: a hit stays here");

    // The leader's record bills all the upstream answered, as a direct answer reports it.
    let usage = h
        .api
        .client
        .post(format!("{}{path}", h.fake.url()))
        .json(&dialect.chat(text, false))
        .send()
        .await
        .expect("the direct request is sent")
        .json::<Value>()
        .await
        .expect("the direct answer is JSON");
    let (prompt, completion) = match dialect {
        Dialect::OpenAi => (
            &usage["usage"]["prompt_tokens"],
            &usage["usage"]["completion_tokens"],
        ),
        Dialect::Ollama => (&usage["prompt_eval_count"], &usage["eval_count"]),
    };
    let led = leader_record(&h.api).await;
    assert_eq!(led["status"], 200, "{what}: {led:#}");
    assert_eq!(led["partial"], false, "{what}: {led:#}");
    assert_eq!(led["actual"]["prompt"], *prompt, "{what}: {led:#}");
    assert_eq!(led["actual"]["completion"], *completion, "{what}: {led:#}");
}

/// The savings record of the one call that went upstream, once it is written.
async fn leader_record(api: &Api) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let audit = api.admin_get("/admin/savings/audit?limit=100").await.json();
        let missed: Vec<&Value> = audit["records"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["outcome"] == "miss")
            .collect();
        if let [record] = missed[..] {
            return record.clone();
        }
        assert!(
            missed.is_empty() && Instant::now() < deadline,
            "one record of the leader: {audit:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A leader whose client left goes on only while someone follows it: once its last follower
/// leaves too, the upstream call is cancelled, and nothing is stored.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_and_followers_who_all_leave_cancel_the_upstream_call(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{dialect:?}");
    let h = slow_stream(Duration::from_millis(200)).await;
    let path = dialect.chat_path();
    let text = "everyone who asked this one leaves early";
    let body = dialect.chat(text, true);
    let (gone, told) = oneshot::channel();
    let leader = async {
        let w = watch_stream(&h.api, path, &body, Leave::AfterFirst).await;
        let _ = gone.send(());
        w
    };
    // The follower joins while the leader waits for the upstream's head, and leaves once
    // the leader's client has.
    let follower = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        watch_stream(&h.api, path, &body, Leave::When(told)).await
    };
    let (left, followed) = tokio::join!(leader, follower);
    assert_eq!(
        (left.cache.as_str(), followed.cache.as_str()),
        ("miss", "hit"),
        "{what}"
    );
    assert!(
        h.fake.wait_for_cancelled(1, WAIT).await,
        "{what}: the upstream call was cancelled"
    );
    assert_eq!(h.fake.calls_to(path), 1, "{what}");
    let again = watch_stream(&h.api, path, &body, Leave::Never).await;
    assert!(!again.failed, "{what}");
    assert_eq!(again.cache, "miss", "{what}: nothing broken was stored");
    assert_eq!(h.fake.calls_to(path), 2, "{what}");
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
                watch_stream(api, path, body, Leave::Never).await
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
