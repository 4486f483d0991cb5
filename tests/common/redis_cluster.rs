//! A private Redis Cluster for integration tests: three masters, no replicas, each a
//! [`RedisServer`] started with `--cluster-enabled yes` on a free port, joined with
//! `redis-cli --cluster create`. Dropping it kills the nodes.
//!
//! Like the single server it never skips: a missing `redis-cli` fails loudly.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use super::redis::{RedisServer, command};

/// How many masters the cluster has.
const MASTERS: usize = 3;

/// How long the joined cluster gets to report `cluster_state:ok` on every node.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The pause between two probes of the cluster's state.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A running three-master cluster owned by one test.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three nodes, joins them into one cluster and waits until every node reports
    /// all slots served.
    ///
    /// # Panics
    ///
    /// When a node or `redis-cli` does not start, or the cluster does not come up in time.
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..MASTERS)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ])
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-cli ({e}); the cluster tests need Debian's `redis-tools` \
                     package (`apt-get install redis-tools`)"
                )
            });
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok();
        cluster
    }

    /// Polls `CLUSTER INFO` on every node until each says the cluster is whole.
    fn wait_ok(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let whole = self.nodes.iter().all(|node| {
                command(node.port(), "CLUSTER INFO").is_some_and(|info| {
                    info.contains("cluster_state:ok")
                        && info.contains("cluster_slots_ok:16384")
                        && info.contains(&format!("cluster_known_nodes:{MASTERS}"))
                })
            });
            if whole {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the redis cluster did not report cluster_state:ok within {READY_TIMEOUT:?}"
            );
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// The URL thrifty is given: any node's, the cluster client learns the others.
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// The URL of every node, to read what each holds.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}
