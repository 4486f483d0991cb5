//! What one instance caches, exact or semantic, the others serve.

use crate::common::client::poll;
use crate::common::thrifty::semantic_config_for;
use serde_json::{Value, json};

use crate::{Fleet, Topology, WAIT, chat, wait_stored};

#[tokio::test]
async fn an_answer_cached_through_one_instance_is_a_hit_on_the_other() {
    exact_hit_across_instances(Topology::Single).await;
}

#[tokio::test]
async fn an_answer_cached_through_one_instance_is_a_hit_on_the_other_on_a_cluster() {
    exact_hit_across_instances(Topology::Cluster).await;
}

async fn exact_hit_across_instances(topology: Topology) {
    let fleet = Fleet::start(topology, 2, |_| {}).await;
    let (a, b) = (&fleet.apis[0], &fleet.apis[1]);
    let miss = a
        .send("/v1/chat/completions", &chat("shared question"))
        .await;
    miss.assert_cache("miss", "through A");
    wait_stored(a, &miss.key()).await;
    let hit = b
        .send("/v1/chat/completions", &chat("shared question"))
        .await;
    hit.assert_cache("hit", "through B");
    assert_eq!(hit.json()["choices"], miss.json()["choices"], "A's answer");
    assert_eq!(fleet.fake.calls(), 1, "B never asked the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_answered_through_one_instance_is_a_semantic_hit_on_the_other() {
    semantic_hit_across_instances(Topology::Single).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_answered_through_one_instance_is_a_semantic_hit_on_the_other_on_a_cluster() {
    semantic_hit_across_instances(Topology::Cluster).await;
}

async fn semantic_hit_across_instances(topology: Topology) {
    let fleet = Fleet::start_from(topology, 2, semantic_config_for, |_| {}).await;
    let (a, b) = (&fleet.apis[0], &fleet.apis[1]);
    let miss = a
        .send("/v1/chat/completions", &chat("How do I reset my password?"))
        .await;
    miss.assert_cache("miss", "through A");
    let hit = paraphrase_hit(b, WAIT).await;
    assert_eq!(
        hit.json()["choices"][0]["message"]["content"],
        miss.json()["choices"][0]["message"]["content"],
        "A's answer"
    );

    // Both instances report the semantic stage's decisions of both, in the admin view and in
    // `/metrics`' shared families.
    let semantic = poll(
        WAIT,
        "both instances report the same semantic totals",
        || async {
            let (one, two) = (
                a.admin_get("/admin/cache/stats").await.json(),
                b.admin_get("/admin/cache/stats").await.json(),
            );
            let decisions = |stats: &Value| {
                json!({
                    "semantic_hits": stats["semantic_hits"],
                    "lookups": stats["semantic"]["lookups"],
                    "skipped": stats["semantic"]["skipped"],
                    "indexed": stats["semantic"]["indexed"],
                })
            };
            let (one, two) = (decisions(&one), decisions(&two));
            (one == two && one["semantic_hits"] == 1 && one["indexed"] == 1).then_some(one)
        },
    )
    .await;
    let lookups = semantic["lookups"].as_u64().expect("lookups");
    assert!(lookups >= 1, "B's paraphrases were looked up: {semantic}");
    for api in [a, b] {
        let metrics = api.admin_get("/metrics").await.text();
        for line in [
            format!("thrifty_cluster_semantic_lookups_total {lookups}"),
            "thrifty_cluster_semantic_indexed_total 1".to_owned(),
        ] {
            assert!(
                metrics.lines().any(|l| l == line),
                "{}: no {line} in\n{metrics}",
                api.base
            );
        }
    }
}

/// A question remembered while the other instance's subscription was down reaches its index
/// once the subscription is back, long before the periodic reconcile (every 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_remembered_while_the_other_could_not_hear_is_a_semantic_hit_once_it_can() {
    let fleet = Fleet::start_from(Topology::Single, 2, semantic_config_for, |_| {}).await;
    let (a, b) = (&fleet.apis[0], &fleet.apis[1]);
    let crate::SharedRedis::Single(server) = &fleet.redis else {
        unreachable!("one server")
    };
    // Every subscription is in place once some are killed: each instance holds two (answers
    // and the semantic index).
    poll(WAIT, "both instances are subscribed", || async {
        let list = crate::common::redis::command(server.port(), "CLIENT LIST TYPE pubsub")
            .unwrap_or_default();
        (list.lines().filter(|l| l.contains("sub=1")).count() >= 4).then_some(())
    })
    .await;
    crate::common::redis::command(server.port(), "CLIENT KILL TYPE pubsub")
        .expect("CLIENT KILL answers");
    let miss = a
        .send("/v1/chat/completions", &chat("How do I reset my password?"))
        .await;
    miss.assert_cache("miss", "through A");
    paraphrase_hit(b, std::time::Duration::from_secs(15)).await;
}

/// Asks B a paraphrase of A's question until it is a semantic hit, within `within`. The
/// probes are read-only: a miss through B records nothing, so the paraphrase stays a question
/// only A's entry can answer.
async fn paraphrase_hit(b: &crate::Api, within: std::time::Duration) -> crate::Reply {
    let read_only = [("cache-control", "no-store")];
    poll(within, "B learns A's question", || async {
        let reply = b
            .post(
                "/v1/chat/completions",
                &chat("How can I reset my password?"),
                &read_only,
            )
            .await;
        reply.assert_ok("a paraphrase through B");
        (reply.cache() == "semantic-hit").then_some(reply)
    })
    .await
}
