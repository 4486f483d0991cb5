//! Single flight: identical concurrent misses send one request upstream and share its answer.

use std::time::Duration;

use futures_util::future::join_all;

use crate::common::fake_llm::FakeLlm;
use crate::{BACKENDS, DIALECTS, Dialect, Harness, Kind};

/// How many identical requests arrive together.
const CLIENTS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_concurrent_misses_go_upstream_once() {
    for backend in BACKENDS {
        for dialect in DIALECTS {
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
    }
}

/// How many miss-then-repeat rounds the race below gets to show itself in.
const ROUNDS: usize = 40;

/// A request sent as soon as the previous identical answer has ended finds that answer, in the
/// store or still in flight; it never becomes a second upstream call, however the write of the
/// entry and the lookup interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_right_after_a_miss_never_goes_upstream_again() {
    for backend in BACKENDS {
        for dialect in DIALECTS {
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
    }
}
