//! Shutdown with streams still running when `shutdown_grace` ends: the connections are cut,
//! and every cut stream is in the ledger as a partial `error` with the tokens it carried. A
//! call still waiting for its answer's head is recorded too, with its prompt.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;

use crate::common::client::{Probe, start_redis, start_thrifty};
use crate::common::dialect::DIALECTS;
use crate::common::fake_llm::FakeLlm;
use crate::common::redis::RedisServer;
use crate::common::thrifty::Thrifty;
use crate::common::thrifty::config_for;
use crate::{WAIT, audit_log, client, read_stream, redis_env};

/// Streams per dialect left running at shutdown.
const STREAMS: usize = 3;

/// Words each client reads before shutdown begins.
const WORDS_BEFORE: usize = 3;

fn words(bytes: &[u8]) -> usize {
    String::from_utf8_lossy(bytes).matches("word").count()
}

/// Redis, a fake upstream sending a word every 100 ms, and thrifty on both with a 300 ms
/// shutdown grace: every stream outlives the grace period by far.
async fn slow_streams() -> (RedisServer, FakeLlm, Thrifty) {
    let redis = start_redis().await;
    let fake = FakeLlm::builder()
        .chunk_delay(Duration::from_millis(100))
        .start()
        .await;
    let mut raw = config_for(&fake);
    raw.server.shutdown_grace = Duration::from_millis(300);
    let thrifty = start_thrifty(raw, &redis_env(&redis), WAIT).await;
    (redis, fake, thrifty)
}

/// Reads `body` into `seen` until it holds at least `count` words.
async fn read_words<S, E>(body: &mut S, seen: &mut Vec<u8>, count: usize, what: &str)
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    while words(seen) < count {
        let chunk = tokio::time::timeout(WAIT, body.next())
            .await
            .expect("a chunk arrives in time")
            .expect("the stream goes on")
            .unwrap_or_else(|e| panic!("{what}: the stream broke: {e}"));
        seen.extend_from_slice(&chunk);
    }
}

/// Shuts thrifty down and waits for its server to end.
async fn shut_down(thrifty: Thrifty) {
    let server = thrifty.begin_shutdown();
    let ended = tokio::time::timeout(WAIT, server).await;
    assert!(
        matches!(ended, Ok(Ok(()))),
        "the server ends soon after the grace period"
    );
}

#[tokio::test]
async fn streams_cut_at_shutdown_are_recorded_with_the_tokens_they_carried() {
    let (redis, fake, thrifty) = slow_streams().await;
    let client = client();

    let mut streams = Vec::new();
    for dialect in DIALECTS {
        for i in 0..STREAMS {
            let response = client
                .post(format!("{}{}", thrifty.url(), dialect.chat_path()))
                .json(&dialect.chat("slow-stream", &format!("stream number {i}"), true))
                .send()
                .await
                .expect("request is sent");
            assert_eq!(response.status(), StatusCode::OK, "{dialect:?}");
            let mut body = response.bytes_stream();
            let mut seen = Vec::new();
            read_words(&mut body, &mut seen, WORDS_BEFORE, &format!("{dialect:?}")).await;
            streams.push((dialect, body, seen));
        }
    }

    // A call the upstream never answers: it went upstream, so its prompt may be billed.
    let waiting = client
        .post(format!("{}/v1/chat/completions", thrifty.url()))
        .json(&crate::Dialect::OpenAi.chat("hang", "are you there", false))
        .send();
    let waiting = tokio::spawn(waiting);
    assert!(fake.wait_for_calls(2 * STREAMS + 1, WAIT).await);

    shut_down(thrifty).await;

    let probe = Probe::connect(&redis.url(), WAIT).await;
    let records: Vec<_> = audit_log(&probe)
        .await
        .into_iter()
        .filter(|r| r["model"] == "slow-stream")
        .collect();
    assert_eq!(
        records.len(),
        2 * STREAMS,
        "one record per cut stream: {records:#?}"
    );
    let mut completion = 0;
    for record in &records {
        assert_eq!(record["outcome"], "error", "{record:#}");
        assert_eq!(record["partial"], true, "{record:#}");
        assert_eq!(record["status"], 200, "{record:#}");
        assert!(record["actual"]["prompt"].as_u64() > Some(0), "{record:#}");
        let tokens = record["actual"]["completion"].as_u64().unwrap_or(0);
        assert!(tokens >= WORDS_BEFORE as u64, "{record:#}");
        completion += tokens;
    }
    let hung: Vec<_> = audit_log(&probe)
        .await
        .into_iter()
        .filter(|r| r["model"] == "hang")
        .collect();
    assert_eq!(hung.len(), 1, "the call waiting for its answer: {hung:#?}");
    assert_eq!(hung[0]["outcome"], "error", "{:#}", hung[0]);
    assert_eq!(hung[0]["partial"], true, "{:#}", hung[0]);
    assert!(
        hung[0]["actual"]["prompt"].as_u64() > Some(0),
        "{:#}",
        hung[0]
    );
    assert!(
        waiting.await.expect("waiting task").is_err(),
        "the waiting client's connection was cut"
    );

    // The clients' streams were cut too, and every word they got was counted.
    let mut received = 0;
    for (dialect, body, seen) in streams {
        let streamed = read_stream(body, seen, WAIT).await;
        assert!(
            !dialect.has_terminal_event(&streamed.bytes),
            "{dialect:?}: the stream was cut, not finished"
        );
        received += words(&streamed.bytes);
    }
    // Every word a client got was relayed, so counted: at least one token each.
    assert!(
        completion >= received as u64,
        "{completion} completion tokens recorded for {received} words received"
    );
}

/// Words a follower reads, after the leader's client left, before shutdown begins.
const WORDS_FOLLOWED: usize = 10;

/// A leader whose client left goes on for the call following it, and is cut at shutdown like
/// a connection: its record bills every word the upstream sent, those after its client left
/// included, as a partial `error`.
#[tokio::test]
async fn a_leader_going_on_for_its_follower_is_cut_at_shutdown_and_recorded() {
    let (redis, fake, thrifty) = slow_streams().await;
    let client = client();

    let mut followers = Vec::new();
    for dialect in DIALECTS {
        let url = format!("{}{}", thrifty.url(), dialect.chat_path());
        let body = dialect.chat("slow-stream", "who reads this to the end", true);
        let leader = client
            .post(&url)
            .json(&body)
            .send()
            .await
            .expect("request is sent");
        let mut leader = leader.bytes_stream();
        let mut seen = Vec::new();
        read_words(
            &mut leader,
            &mut seen,
            WORDS_BEFORE,
            &format!("{dialect:?} leader"),
        )
        .await;
        let follower = client
            .post(&url)
            .json(&body)
            .send()
            .await
            .expect("request is sent");
        assert_eq!(
            follower.headers()["x-thrifty-cache"],
            "hit",
            "{dialect:?}: it follows the leader"
        );
        // The leader's client leaves; its follower reads on.
        drop(leader);
        let mut follower = follower.bytes_stream();
        let mut followed = Vec::new();
        let what = format!("{dialect:?} follower");
        read_words(&mut follower, &mut followed, WORDS_FOLLOWED, &what).await;
        followers.push((dialect, follower, followed));
    }
    assert_eq!(
        fake.calls(),
        DIALECTS.len(),
        "one upstream call per dialect"
    );

    shut_down(thrifty).await;

    let probe = Probe::connect(&redis.url(), WAIT).await;
    let log = audit_log(&probe).await;
    for (dialect, follower, followed) in followers {
        let streamed = read_stream(follower, followed, WAIT).await;
        assert!(
            !dialect.has_terminal_event(&streamed.bytes),
            "{dialect:?}: the follower's stream was cut, not finished"
        );
        let received = words(&streamed.bytes) as u64;
        let name = dialect.name();
        let leaders: Vec<_> = log
            .iter()
            .filter(|r| r["model"] == "slow-stream" && r["outcome"] == "error")
            .filter(|r| r["dialect"] == name && r["status"] == 200)
            .collect();
        assert_eq!(
            leaders.len(),
            1,
            "{dialect:?}: the leader's record: {log:#?}"
        );
        let leader = leaders[0];
        assert_eq!(leader["partial"], true, "{leader:#}");
        assert!(
            leader["actual"]["completion"].as_u64() >= Some(received),
            "{dialect:?}: the leader's record bills the {received} words its follower got: {leader:#}"
        );
    }
}
