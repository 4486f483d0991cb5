//! A tenant's rate limit is one budget for all the instances on one Redis, and each
//! instance's own while Redis is down.

use std::time::Instant;

use reqwest::StatusCode;
use thrifty::auth::hash_key;
use thrifty::config::{RawKey, RawRateLimit};

use crate::common::client::{Reply, poll};
use crate::{Fleet, Topology, WAIT, chat_as, readiness};

/// Checks a 429 the way an SDK reads it: `retry-after`, the `x-ratelimit-*` headers and
/// OpenAI's error body.
fn assert_limited(reply: &Reply, limit: u32, what: &str) {
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{what}: {}",
        reply.describe()
    );
    let retry_after: u64 = reply
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{what}: retry-after is whole seconds: {}", reply.describe()));
    assert!(
        (1..=60).contains(&retry_after),
        "{what}: retry-after {retry_after}"
    );
    assert_eq!(
        reply.header("x-ratelimit-limit-requests"),
        Some(limit.to_string().as_str()),
        "{what}"
    );
    assert_eq!(
        reply.header("x-ratelimit-remaining-requests"),
        Some("0"),
        "{what}"
    );
    assert!(
        reply.header("x-ratelimit-reset-requests").is_some(),
        "{what}"
    );
    let body = reply.json();
    assert_eq!(
        body["error"]["code"], "rate_limit_exceeded",
        "{what}: {body}"
    );
    assert_eq!(body["error"]["type"], "requests", "{what}: {body}");
}

#[tokio::test]
async fn a_tenant_gets_its_limit_once_across_two_instances() {
    one_budget_across_instances(Topology::Single).await;
}

#[tokio::test]
async fn a_tenant_gets_its_limit_once_across_two_instances_on_a_cluster() {
    one_budget_across_instances(Topology::Cluster).await;
}

async fn one_budget_across_instances(topology: Topology) {
    let fleet = Fleet::start(topology, 2, |raw| {
        raw.rate_limit = Some(RawRateLimit {
            requests_per_minute: 60,
            burst: Some(60),
        });
    })
    .await;
    for api in &fleet.apis {
        assert_eq!(readiness(api).await["rate_limits"], "shared");
    }
    let started = Instant::now();
    let mut admitted = [0_u32; 2];
    let mut limited = [0_u32; 2];
    for n in 0..120 {
        let which = n % 2;
        let reply = chat_as(&fleet.apis[which], "tk-one-tenant", &format!("q{n}")).await;
        if reply.status == StatusCode::OK {
            admitted[which] += 1;
        } else {
            assert_limited(&reply, 60, &format!("request {n} on instance {which}"));
            limited[which] += 1;
        }
    }
    // The bucket refills one request a second while the test runs: that is the only slack.
    let refilled = u32::try_from(started.elapsed().as_secs()).unwrap_or(u32::MAX) + 1;
    let total: u32 = admitted.iter().sum();
    assert!(
        (60..=60 + refilled).contains(&total),
        "{total} of 120 admitted ({admitted:?} per instance) in {:?}: the burst is 60, plus {refilled} refilled",
        started.elapsed()
    );
    assert!(
        limited.iter().all(|n| *n > 0),
        "both instances refuse once the shared budget is spent: {limited:?}"
    );
    assert_eq!(
        fleet.fake.calls(),
        usize::try_from(total).unwrap_or(usize::MAX),
        "refused requests never reach the upstream"
    );
    // Another tenant has a budget of its own.
    let other = chat_as(&fleet.apis[1], "tk-another-tenant", "hello").await;
    other.assert_ok("another tenant");
}

#[tokio::test]
async fn with_redis_down_each_instance_applies_the_limit_itself() {
    let mut fleet = Fleet::start(Topology::Single, 2, |raw| {
        // One request a minute refills nothing during the test: the burst is all there is.
        raw.rate_limit = Some(RawRateLimit {
            requests_per_minute: 1,
            burst: Some(3),
        });
    })
    .await;
    let (a, b) = (&fleet.apis[0].clone(), &fleet.apis[1].clone());
    for n in 0..3 {
        chat_as(if n == 0 { a } else { b }, "tk-tenant", &format!("q{n}"))
            .await
            .assert_ok("within the shared burst");
    }
    assert_limited(
        &chat_as(a, "tk-tenant", "q3").await,
        1,
        "over the shared burst",
    );

    fleet.redis.server().stop();
    let down = readiness(a).await;
    assert_eq!(down["status"], "degraded", "{down}");
    assert_eq!(down["rate_limits"], "local (store unreachable)", "{down}");
    // Each instance now applies the limit on its own, with a bucket of its own: never
    // unlimited, never refusing everything.
    for api in [a, b] {
        for n in 0..3 {
            chat_as(api, "tk-tenant", &format!("down {n}"))
                .await
                .assert_ok(&format!("{} request {n} within the local burst", api.base));
        }
        assert_limited(
            &chat_as(api, "tk-tenant", "down over").await,
            1,
            "over the local burst",
        );
    }
    assert_eq!(
        readiness(b).await["rate_limits"],
        "local (store unreachable)"
    );

    // Back on a fresh, empty Redis the limits are shared again.
    fleet.redis.server().restart();
    poll(WAIT, "the store answers again", || async {
        (readiness(a).await["status"] == "ready").then_some(())
    })
    .await;
    chat_as(a, "tk-tenant", "back")
        .await
        .assert_ok("a fresh shared bucket");
    assert_eq!(readiness(a).await["rate_limits"], "shared");
}

#[tokio::test]
async fn a_keys_own_limit_is_shared_too() {
    let fleet = Fleet::start(Topology::Single, 2, |raw| {
        raw.rate_limit = Some(RawRateLimit {
            requests_per_minute: 1,
            burst: Some(1),
        });
        raw.keys = vec![RawKey {
            name: "batch-jobs".to_owned(),
            team: None,
            sha256: hash_key("tk-batch"),
            rate_limit: Some(RawRateLimit {
                requests_per_minute: 1,
                burst: Some(4),
            }),
        }];
    })
    .await;
    // One a minute refills nothing during the test: the key's burst of 4 is its budget.
    let mut admitted = 0;
    for n in 0..8 {
        let reply = chat_as(&fleet.apis[n % 2], "tk-batch", &format!("job {n}")).await;
        if reply.status == StatusCode::OK {
            admitted += 1;
        } else {
            assert_limited(&reply, 1, &format!("keyed request {n}"));
        }
    }
    assert_eq!(admitted, 4, "the key's burst, once across both instances");
    // Anyone else has the default limit, shared as well.
    chat_as(&fleet.apis[0], "tk-other", "first")
        .await
        .assert_ok("another tenant's first request");
    assert_limited(
        &chat_as(&fleet.apis[1], "tk-other", "second").await,
        1,
        "over the default",
    );
}
