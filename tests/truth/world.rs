//! The truth test's world: the fake upstream, a private Redis or the embedded store, and thrifty
//! in front with three keys, the test's own price table and an admin token; started again on
//! the same store for the after-restart half.

use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use thrifty::config::{RawConfig, RawKey};

use super::prices;
use super::script::{Step, Who};
use crate::common::client::{Backend, Reply, start_redis};
use crate::common::fake_llm::FakeLlm;
use crate::common::redis::RedisServer;
use crate::common::thrifty::{Thrifty, config_for, semantic_config_for};

/// How long any single wait may take before it counts as a failure.
pub const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);
const ADMIN_TOKEN: &str = "truth-admin";

pub struct World {
    pub fake: FakeLlm,
    pub redis: Option<RedisServer>,
    pub semantic: bool,
    thrifty: Option<Thrifty>,
    url: String,
    raw: RawConfig,
    vars: Vec<(String, String)>,
    client: reqwest::Client,
}

impl World {
    pub async fn start(backend: Backend, semantic: bool) -> World {
        let fake = FakeLlm::start().await;
        let mut raw = if semantic {
            semantic_config_for(&fake)
        } else {
            config_for(&fake)
        };
        // A loaded test machine must not turn store calls into misses.
        raw.store.timeout = Duration::from_secs(2);
        raw.savings.pricing = Some(prices::write_file(&fake.scratch_dir("pricing")));
        raw.keys = Who::ALL
            .iter()
            .map(|who| RawKey {
                name: who.name().to_owned(),
                team: who.team().map(str::to_owned),
                sha256: hex::encode(Sha256::digest(who.token().as_bytes())),
                rate_limit: None,
            })
            .collect();
        let redis = match backend {
            Backend::Redis => Some(start_redis().await),
            Backend::Embedded => None,
        };
        let mut vars = vec![("THRIFTY_ADMIN_TOKEN".to_owned(), ADMIN_TOKEN.to_owned())];
        if let Some(redis) = &redis {
            vars.push(("THRIFTY_REDIS_URL".to_owned(), redis.url()));
        }
        let mut world = World {
            fake,
            redis,
            semantic,
            thrifty: None,
            url: String::new(),
            raw,
            vars,
            client: reqwest::Client::new(),
        };
        world.launch().await;
        world
    }

    /// Starts thrifty and waits until `/readyz` says its store answers.
    async fn launch(&mut self) {
        let vars: Vec<(&str, &str)> = self
            .vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let thrifty = Thrifty::start_with_env(self.raw.clone(), &vars).await;
        self.url = thrifty.url();
        self.thrifty = Some(thrifty);
        poll("thrifty is ready", || async {
            let probe = self.client.get(self.at("/readyz")).send().await.ok()?;
            let status: Value = probe.json().await.ok()?;
            (status["status"] == "ready").then_some(())
        })
        .await;
    }

    /// Shuts thrifty down gracefully and starts a new instance on the same store and config.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }

    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Sends a step as its key's holder and reads the whole answer.
    pub async fn send(&self, step: &Step) -> Reply {
        let mut request = self
            .client
            .post(self.at(step.endpoint.path()))
            .bearer_auth(step.who.token())
            .header("x-thrifty-tags", step.tag)
            .json(&step.body);
        for (name, value) in &step.headers {
            request = request.header(*name, *value);
        }
        let response = tokio::time::timeout(WAIT, request.send())
            .await
            .unwrap_or_else(|_| panic!("{}: no answer within {WAIT:?}", step.tag))
            .unwrap_or_else(|e| panic!("{}: {e}", step.tag));
        Reply::read(response, WAIT).await
    }

    /// `GET /admin/savings` for the given span, grouping and format.
    pub async fn report(&self, span: (&str, &str), group_by: &str, format: &str) -> String {
        let path = format!(
            "/admin/savings?from={}&to={}&group_by={group_by}&format={format}",
            span.0, span.1
        );
        let response = self
            .client
            .get(self.at(&path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(response.status(), 200, "{path}");
        response
            .text()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Waits until the answer with the short key `short` is in the exact cache.
    pub async fn wait_stored(&self, short: &str) {
        let path = format!("/admin/cache/entries/{short}");
        poll(&format!("entry {short} is stored"), || async {
            let response = self
                .client
                .get(self.at(&path))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .ok()?;
            (response.status() == 200).then_some(())
        })
        .await;
    }

    /// Waits until the question of the answer `short` is in the semantic index: its record is
    /// written to Redis just after it is indexed.
    pub async fn wait_indexed(&self, short: &str) {
        let mut redis = self.redis_connection().await;
        let pattern = format!("thrifty:v1:semantic:*:{short}*");
        let deadline = Instant::now() + WAIT;
        loop {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(pattern.as_str())
                .query_async(&mut redis)
                .await
                .expect("redis answers KEYS");
            if !keys.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "answer {short} is not indexed within {WAIT:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the ledger holds `n` records: its aggregates count them all and, on Redis,
    /// its audit log lists them all. Records are written when an answer's body ends, which may
    /// be just after the client has read it.
    pub async fn wait_recorded(&self, span: (&str, &str), n: usize) {
        poll(&format!("the ledger counts {n} requests"), || async {
            let report: Value =
                serde_json::from_str(&self.report(span, "day", "json").await).ok()?;
            (report["total"]["requests"] == n).then_some(())
        })
        .await;
        if self.redis.is_some() {
            poll(&format!("the audit log lists {n} records"), || async {
                (self.audit_log().await?.len() >= n).then_some(())
            })
            .await;
        }
    }

    /// Stops thrifty (the embedded store admits one process at a time).
    pub async fn stop(&mut self) {
        if let Some(thrifty) = self.thrifty.take() {
            assert!(
                thrifty.shutdown(WAIT).await,
                "thrifty did not shut down within {WAIT:?}"
            );
        }
    }

    /// `thrifty report` run as a command on this world's store and prices.
    pub async fn cli_report(&self, span: (&str, &str), group_by: &str, format: &str) -> String {
        let dir = self.fake.scratch_dir("cli");
        let config = dir.join("thrifty.toml");
        let toml = format!(
            "[store]\ndata_dir = {:?}\n\n[savings]\npricing = {:?}\n",
            self.raw.store.data_dir,
            self.raw
                .savings
                .pricing
                .as_ref()
                .expect("the test's prices"),
        );
        std::fs::write(&config, toml).expect("the report's config is written");
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_thrifty"));
        command
            .env_clear()
            .env("THRIFTY_CONFIG", &config)
            .args(["report", "--from", span.0, "--to", span.1])
            .arg(format!("--group-by={group_by}"))
            .arg(format!("--format={format}"));
        if let Some(redis) = &self.redis {
            command.env("THRIFTY_REDIS_URL", redis.url());
        }
        let output = tokio::time::timeout(WAIT, command.output())
            .await
            .expect("thrifty report finishes in time")
            .expect("thrifty report runs");
        assert!(
            output.status.success(),
            "thrifty report --group-by={group_by} --format={format}: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("the report is UTF-8")
    }

    /// The raw records of the ledger's audit log, when the store is Redis.
    pub async fn audit_log(&self) -> Option<Vec<Value>> {
        self.redis.as_ref()?;
        let mut redis = self.redis_connection().await;
        let raw: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(thrifty::savings::aggregate::log_key())
            .arg(0)
            .arg(-1)
            .query_async(&mut redis)
            .await
            .expect("the audit log reads");
        Some(
            raw.iter()
                .map(|r| serde_json::from_slice(r).expect("an audit entry is JSON"))
                .collect(),
        )
    }

    async fn redis_connection(&self) -> redis::aio::MultiplexedConnection {
        let url = self
            .redis
            .as_ref()
            .expect("this needs the Redis backend")
            .url();
        redis::Client::open(url)
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connects")
    }
}

/// Polls `probe` until it returns `Some`, at most [`WAIT`].
async fn poll<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<()>>,
{
    let deadline = Instant::now() + WAIT;
    while probe().await.is_none() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// The report span: yesterday to tomorrow (UTC), so a run across midnight still sees everything.
pub fn span() -> (String, String) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let today = i64::try_from(secs / 86_400).expect("a day number");
    (civil(today - 1), civil(today + 1))
}

/// Days since 1970-01-01 → `YYYY-MM-DD` (Howard Hinnant's civil_from_days).
fn civil(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
