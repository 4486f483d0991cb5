//! What walks or batches many keys, on a three-master Redis Cluster, where keys live on
//! different nodes: the admin API's counts, entries and invalidation, and the savings ledger.

use serde_json::json;

use crate::common::client::{ADMIN_TOKEN, poll};
use crate::{Fleet, Topology, WAIT, chat_as, wait_stored};

/// Enough answers that every master holds some.
const ANSWERS: usize = 12;

#[tokio::test]
async fn the_admin_api_and_the_ledger_see_every_node() {
    let fleet = Fleet::start(Topology::Cluster, 2, |_| {}).await;
    // A call made before the cluster connection is up counts as an error; none may follow.
    let mut errors_at_start = Vec::new();
    for api in &fleet.apis {
        errors_at_start
            .push(api.admin_get("/admin/cache/stats").await.json()["store_errors"].clone());
    }
    let mut keys = Vec::new();
    for n in 0..ANSWERS {
        let api = &fleet.apis[n % 2];
        let miss = chat_as(api, "tk-cluster", &format!("cluster question {n}")).await;
        miss.assert_cache("miss", &format!("question {n}"));
        wait_stored(api, &miss.key()).await;
        keys.push(miss.key());
    }
    for api in &fleet.apis {
        let stats = api.admin_get("/admin/cache/stats").await.json();
        assert_eq!(stats["entries"]["answers"], ANSWERS, "{stats}");
        for key in &keys {
            assert!(
                api.stored(key).await,
                "entry {key} found through {}",
                api.base
            );
        }
    }

    // The ledger's records of both instances add up in one report.
    let report = fleet.instances[1]
        .savings("", ADMIN_TOKEN, ANSWERS as u64)
        .await;
    assert_eq!(report["total"]["requests"], ANSWERS, "{report}");

    // Invalidation through one instance removes the entries on every node.
    let reply = fleet.apis[0]
        .admin_post("/admin/cache/invalidate", &json!({"all": true}))
        .await;
    reply.assert_ok("invalidate");
    assert_eq!(reply.json()["deleted"], ANSWERS, "{}", reply.text());
    poll(WAIT, "no entry left", || async {
        let stats = fleet.apis[1].admin_get("/admin/cache/stats").await.json();
        (stats["entries"]["answers"] == 0).then_some(())
    })
    .await;
    chat_as(&fleet.apis[1], "tk-cluster", "cluster question 0")
        .await
        .assert_cache("miss", "an invalidated question");
    for (api, before) in fleet.apis.iter().zip(errors_at_start) {
        let stats = api.admin_get("/admin/cache/stats").await.json();
        assert_eq!(
            stats["store_errors"], before,
            "no command failed on the cluster: {stats}"
        );
    }
}
