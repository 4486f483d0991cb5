//! A scenario's world: the fake upstream, a Redis or the embedded store, and thrifty in front,
//! started together; and the Redis reads that show what the cache stored.

use std::time::Duration;

use thrifty::config::RawConfig;
use thrifty::{Clock, ManualClock};

use crate::common::client::start_thrifty_with_clock;
use crate::common::fake_llm::{FakeLlm, FakeLlmBuilder};
use crate::common::redis::RedisServer;
use crate::common::thrifty::{Thrifty, config_for};
use crate::{ADMIN_TOKEN, ANSWER_PREFIX, Api, Backend, Probe, WAIT, start_redis};

// ---------------------------------------------------------------------------------------------
// A fake upstream, a store and a thrifty, started together.
// ---------------------------------------------------------------------------------------------

type Tweak = Box<dyn FnOnce(&mut RawConfig)>;

/// How to start a [`Harness`].
pub struct Setup {
    backend: Backend,
    fake: FakeLlmBuilder,
    admin: bool,
    vars: Vec<(String, String)>,
    tweaks: Vec<Tweak>,
    clock: Clock,
}

impl Setup {
    /// Starts thrifty on `clock`'s time, which the test moves instead of waiting.
    pub fn clock(mut self, clock: &ManualClock) -> Self {
        self.clock = clock.clock();
        self
    }

    /// Builds the fake from `builder` (for latency or chunk delays).
    pub fn fake(mut self, builder: FakeLlmBuilder) -> Self {
        self.fake = builder;
        self
    }

    /// Leaves `THRIFTY_ADMIN_TOKEN` unset.
    pub fn no_admin(mut self) -> Self {
        self.admin = false;
        self
    }

    /// Adds a variable to the environment the config is validated against.
    pub fn var(mut self, name: &str, value: &str) -> Self {
        self.vars.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Changes the config before thrifty starts.
    pub fn config(mut self, tweak: impl FnOnce(&mut RawConfig) + 'static) -> Self {
        self.tweaks.push(Box::new(tweak));
        self
    }

    pub async fn start(self) -> Harness {
        let fake = self.fake.start().await;
        let mut raw = config_for(&fake);
        // A loaded test machine must not turn store calls into misses.
        raw.store.timeout = Duration::from_secs(2);
        for tweak in self.tweaks {
            tweak(&mut raw);
        }
        let redis = match self.backend {
            Backend::Redis => Some(start_redis().await),
            Backend::Embedded => None,
        };
        let mut vars = self.vars;
        if let Some(redis) = &redis {
            vars.push(("THRIFTY_REDIS_URL".to_owned(), redis.url()));
        }
        if self.admin {
            vars.push(("THRIFTY_ADMIN_TOKEN".to_owned(), ADMIN_TOKEN.to_owned()));
        }
        let thrifty = start_thrifty_with_clock(raw.clone(), &vars, self.clock.clone(), WAIT).await;
        Harness {
            backend: self.backend,
            clock: self.clock,
            api: Api::new(thrifty.url(), WAIT),
            fake,
            redis,
            thrifty: Some(thrifty),
            raw,
            vars,
        }
    }
}

/// One scenario's world: the fake upstream, the store and thrifty in front of them.
pub struct Harness {
    pub backend: Backend,
    pub fake: FakeLlm,
    pub redis: Option<RedisServer>,
    thrifty: Option<Thrifty>,
    pub api: Api,
    /// The config thrifty was started with, for starting it again.
    pub raw: RawConfig,
    /// The environment thrifty was started with (Redis URL and admin token included).
    pub vars: Vec<(String, String)>,
    /// The clock thrifty reads, kept for starting it again.
    clock: Clock,
}

impl Harness {
    pub fn setup(backend: Backend) -> Setup {
        Setup {
            backend,
            fake: FakeLlm::builder(),
            admin: true,
            vars: Vec::new(),
            tweaks: Vec::new(),
            clock: Clock::system(),
        }
    }

    pub async fn start(backend: Backend) -> Harness {
        Harness::setup(backend).start().await
    }

    /// A connection to this harness's Redis.
    pub async fn probe(&self) -> Probe {
        let redis = self
            .redis
            .as_ref()
            .expect("this scenario needs the Redis backend");
        Probe::connect(&redis.url(), WAIT).await
    }

    /// Shuts thrifty down gracefully and starts it again with `vars` replacing its environment
    /// variables of the same names.
    pub async fn restart_with(&mut self, vars: &[(&str, &str)]) {
        if let Some(thrifty) = self.thrifty.take() {
            assert!(
                thrifty.shutdown(WAIT).await,
                "thrifty did not shut down within {WAIT:?}"
            );
        }
        for (name, value) in vars {
            self.vars.retain(|(k, _)| k != name);
            self.vars.push(((*name).to_owned(), (*value).to_owned()));
        }
        let thrifty =
            start_thrifty_with_clock(self.raw.clone(), &self.vars, self.clock.clone(), WAIT).await;
        self.api = Api::new(thrifty.url(), WAIT);
        self.thrifty = Some(thrifty);
    }

    /// The path of the embedded store's database file.
    /// Every byte the embedded store keeps on disk: its database file and its value log's
    /// segments, one after the other.
    pub fn store_bytes(&self) -> Vec<u8> {
        fn read_into(dir: &std::path::Path, out: &mut Vec<u8>) {
            for item in std::fs::read_dir(dir).expect("the embedded store's directory") {
                let path = item.expect("a directory entry").path();
                if path.is_dir() {
                    read_into(&path, out);
                } else {
                    out.extend(std::fs::read(&path).expect("a store file"));
                }
            }
        }
        let mut out = Vec::new();
        read_into(&self.raw.store.data_dir, &mut out);
        out
    }

    /// How many answer entries the store holds, through the admin API.
    pub async fn answer_count(&self) -> u64 {
        self.api.stats().await["entries"]["answers"]
            .as_u64()
            .expect("stats count answer entries")
    }
}

/// Where the savings ledger keeps its records in the shared store.
const LEDGER_PREFIX: &str = "thrifty:v1:{savings}:";

/// Where the counters every instance reports alike are kept in the shared store.
const TOTALS_PREFIX: &str = "thrifty:v1:{totals}:";

/// Whether `key` is bookkeeping (the ledger, the shared totals) rather than cache.
fn is_bookkeeping(key: &str) -> bool {
    key.starts_with(LEDGER_PREFIX) || key.starts_with(TOTALS_PREFIX)
}

/// The cache suite's Redis reads.
impl Probe {
    /// The cache's keys. The savings ledger and the shared statistics share the store but
    /// are not cache: their keys (`thrifty:v1:{savings}:*`, `thrifty:v1:{totals}:*`) are
    /// read with [`Probe::ledger_bytes`].
    pub async fn keys(&self) -> Vec<String> {
        let mut keys = self.all_keys().await;
        keys.retain(|k| !is_bookkeeping(k));
        keys
    }

    /// Everything the savings ledger and the shared statistics hold, as raw bytes, to check
    /// what they contain.
    pub async fn ledger_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for key in self.all_keys().await {
            if !is_bookkeeping(&key) {
                continue;
            }
            out.extend_from_slice(key.as_bytes());
            let kind: String = self.query(redis::cmd("TYPE").arg(&key)).await;
            let parts: Vec<Vec<u8>> = match kind.as_str() {
                "hash" => self.query(redis::cmd("HGETALL").arg(&key)).await,
                "list" => {
                    self.query(redis::cmd("LRANGE").arg(&key).arg(0).arg(-1))
                        .await
                }
                "set" => self.query(redis::cmd("SMEMBERS").arg(&key)).await,
                _ => self.get(&key).await.into_iter().collect(),
            };
            for part in parts {
                out.extend_from_slice(&part);
            }
        }
        out
    }

    /// Every key, walked with SCAN.
    async fn all_keys(&self) -> Vec<String> {
        self.scan("*").await
    }

    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    /// Milliseconds to live: -2 when the key is gone, -1 when it never expires.
    pub async fn pttl(&self, key: &str) -> i64 {
        self.query(redis::cmd("PTTL").arg(key)).await
    }

    /// The full Redis key of the answer whose short key is `short`.
    pub async fn answer_key(&self, short: &str) -> String {
        let prefix = format!("{ANSWER_PREFIX}{short}");
        let found: Vec<String> = self
            .keys()
            .await
            .into_iter()
            .filter(|k| k.starts_with(&prefix))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one Redis key starts with {prefix}: {found:?}"
        );
        found[0].clone()
    }
}
