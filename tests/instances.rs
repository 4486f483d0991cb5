//! Several thrifty instances behind one load balancer, sharing one Redis (or one three-master
//! Redis Cluster, see [`Topology`]), driven over real sockets: what one instance does, the
//! others see. The scenarios live in `tests/instances/`, most of them run on both topologies:
//!
//! - `limits`: a tenant's rate limit (the default or its key's own) is one budget across the
//!   instances, and falls back to each instance's own limit while Redis is down.
//! - `stats`: every instance's `/admin/*/stats` report the traffic of all.
//! - `cluster`: the admin API's key walks and the savings ledger on a Redis Cluster.
//! - `sharing`: an answer cached through one instance, exact or semantic, is a hit on another.

mod common;

#[path = "instances/cluster.rs"]
mod cluster;
#[path = "instances/limits.rs"]
mod limits;
#[path = "instances/sharing.rs"]
mod sharing;
#[path = "instances/stats.rs"]
mod stats;

use std::time::Duration;

use serde_json::{Value, json};
use thrifty::config::RawConfig;

use common::client::{ADMIN_TOKEN, Api, Reply, bearer, poll, start_redis, start_thrifty};
use common::fake_llm::FakeLlm;
use common::redis::RedisServer;
use common::redis_cluster::RedisCluster;
use common::thrifty::{Thrifty, config_for};

/// How long any single wait in these tests may take before it counts as a failure.
pub const WAIT: Duration = Duration::from_secs(20);

/// What the instances share: one Redis server, or a three-master Redis Cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    Single,
    Cluster,
}

/// The running Redis of a [`Topology`].
pub enum SharedRedis {
    Single(RedisServer),
    Cluster(RedisCluster),
}

impl SharedRedis {
    pub async fn start(topology: Topology) -> SharedRedis {
        match topology {
            Topology::Single => SharedRedis::Single(start_redis().await),
            Topology::Cluster => SharedRedis::Cluster(
                tokio::task::spawn_blocking(RedisCluster::start)
                    .await
                    .expect("redis cluster start task"),
            ),
        }
    }

    pub fn url(&self) -> String {
        match self {
            SharedRedis::Single(server) => server.url(),
            SharedRedis::Cluster(cluster) => cluster.url(),
        }
    }

    /// The single server, for the scenarios that stop and restart it.
    pub fn server(&mut self) -> &mut RedisServer {
        match self {
            SharedRedis::Single(server) => server,
            SharedRedis::Cluster(_) => panic!("the scenario needs a single redis server"),
        }
    }
}

/// The fake upstream, one Redis and several thrifty instances on it.
pub struct Fleet {
    pub fake: FakeLlm,
    pub redis: SharedRedis,
    pub instances: Vec<Thrifty>,
    pub apis: Vec<Api>,
}

impl Fleet {
    /// Starts `n` instances on one new Redis of `topology`, each with its config changed by
    /// `tweak`.
    pub async fn start(topology: Topology, n: usize, tweak: impl Fn(&mut RawConfig)) -> Fleet {
        Fleet::start_from(topology, n, config_for, tweak).await
    }

    /// Like [`Fleet::start`] from the config `base` makes for the fake.
    pub async fn start_from(
        topology: Topology,
        n: usize,
        base: impl Fn(&FakeLlm) -> RawConfig,
        tweak: impl Fn(&mut RawConfig),
    ) -> Fleet {
        let fake = FakeLlm::start().await;
        let redis = SharedRedis::start(topology).await;
        let vars = vec![
            ("THRIFTY_REDIS_URL".to_owned(), redis.url()),
            ("THRIFTY_ADMIN_TOKEN".to_owned(), ADMIN_TOKEN.to_owned()),
        ];
        let mut instances = Vec::new();
        let mut apis = Vec::new();
        for _ in 0..n {
            let mut raw = base(&fake);
            // A loaded test machine must not turn store calls into misses or local limits.
            raw.store.timeout = Duration::from_secs(2);
            raw.store.redis_cluster = topology == Topology::Cluster;
            tweak(&mut raw);
            let thrifty = start_thrifty(raw, &vars, WAIT).await;
            apis.push(Api::new(thrifty.url(), WAIT));
            instances.push(thrifty);
        }
        Fleet {
            fake,
            redis,
            instances,
            apis,
        }
    }
}

/// An OpenAI chat request asking `question`.
pub fn chat(question: &str) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": question}],
    })
}

/// A chat request sent to `api` with bearer `token`.
pub async fn chat_as(api: &Api, token: &str, question: &str) -> Reply {
    api.post("/v1/chat/completions", &chat(question), &[bearer(token)])
        .await
}

/// Waits until the answer with short key `short` is in the store.
pub async fn wait_stored(api: &Api, short: &str) {
    poll(WAIT, &format!("answer {short} stored"), || async {
        api.stored(short).await.then_some(())
    })
    .await;
}

/// `/readyz` as JSON.
pub async fn readiness(api: &Api) -> Value {
    let reply = api
        .request(reqwest::Method::GET, "/readyz", None, None)
        .await;
    reply.assert_ok("readyz");
    reply.json()
}
