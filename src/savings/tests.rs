//! Ledger tests against real stores: the embedded one in a temporary directory and a
//! `redis-server` spawned on a free port, killed and restarted mid-test.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;
use crate::store::{EmbeddedStore, RedisStore, Store};

const PRICES: &str = r#"
[[price]]
model = "gpt-4o-mini"
input = 0.15
cached_input = 0.075
output = 0.60
currency = "USD"
effective = "2024-07-18"
source = "test"

[[price]]
model = "gpt-4.1"
input = 3
output = 9
currency = "USD"
effective = "2025-01-01"
source = "test, old"

[[price]]
model = "gpt-4.1"
input = 2
cached_input = 0.5
output = 8
currency = "USD"
effective = "2025-06-02"
source = "test, new"

[[price]]
model = "llama*"
upstream = "ollama"
input = 0
output = 0
currency = "USD"
effective = "2000-01-01"
source = "local"
"#;

/// Pico per token (input, cached input, output) as the test computes them by hand.
fn price_by_hand(model: &str, day: &str) -> Option<(u128, u128, u128)> {
    match model {
        "gpt-4o-mini" => Some((150_000, 75_000, 600_000)),
        "gpt-4.1" if day >= "2025-06-02" => Some((2_000_000, 500_000, 8_000_000)),
        "gpt-4.1" => Some((3_000_000, 3_000_000, 9_000_000)),
        "llama3.1:8b" => Some((0, 0, 0)),
        _ => None,
    }
}

fn cost_by_hand(t: &Tokens, (input, cached, output): (u128, u128, u128)) -> i128 {
    let c = u128::from(t.cached_prompt);
    ((u128::from(t.prompt) - c) * input + c * cached + u128::from(t.completion) * output) as i128
}

fn pricing() -> Pricing {
    Pricing::from_toml_str(PRICES).unwrap()
}

const DAY0_MS: u64 = 1_748_736_000_000; // 2025-06-01T00:00:00Z

/// A varied, deterministic record: four models (one unpriced), six outcomes, three teams.
fn sample(i: u64) -> UsageRecord {
    let models = ["gpt-4o-mini", "gpt-4.1", "llama3.1:8b", "mystery-model"];
    let model = models[(i % 4) as usize];
    let outcome = Outcome::ALL[(i % 6) as usize];
    let prompt = 100 + i * 7;
    let completion = 20 + i % 13;
    // Where thrifty changed nothing, baseline equals actual; an error billed nothing.
    let baseline = if outcome == Outcome::Error {
        Tokens::default()
    } else {
        Tokens {
            prompt,
            cached_prompt: 0,
            completion,
        }
    };
    let (actual, overhead) = match outcome {
        Outcome::ExactHit | Outcome::SemanticHit => (Tokens::default(), Tokens::default()),
        Outcome::Compressed => (
            Tokens {
                prompt: prompt / 3,
                cached_prompt: 0,
                completion,
            },
            Tokens {
                prompt: prompt / 2,
                cached_prompt: 0,
                completion: 11,
            },
        ),
        Outcome::Error => (Tokens::default(), Tokens::default()),
        _ => (
            Tokens {
                prompt,
                cached_prompt: i % 50,
                completion,
            },
            Tokens::default(),
        ),
    };
    let baseline = if matches!(outcome, Outcome::Miss | Outcome::Bypass) {
        actual
    } else {
        baseline
    };
    UsageRecord {
        at_ms: DAY0_MS + (i % 3) * 86_400_000 + i * 1000,
        tenant: format!("k{}", i % 5),
        key_name: Some(format!("k{}", i % 5)),
        team: [Some("alpha"), Some("beta|gamma"), None][(i % 3) as usize].map(str::to_owned),
        tags: vec!["app:test".to_owned()],
        dialect: if model.starts_with("llama") {
            "ollama"
        } else {
            "openai"
        }
        .to_owned(),
        endpoint: "chat".to_owned(),
        model: model.to_owned(),
        upstream: if model.starts_with("llama") {
            "ollama"
        } else {
            "openai"
        }
        .to_owned(),
        outcome,
        status: if outcome == Outcome::Error { 502 } else { 200 },
        latency_ms: 10.0 + i as f64,
        upstream_ms: (!outcome.is_hit()).then_some(5.5),
        baseline,
        actual,
        overhead,
        overhead_model: (outcome == Outcome::Compressed).then(|| "gpt-4o-mini".to_owned()),
        embed_calls: u64::from(outcome == Outcome::SemanticHit),
        estimated: i % 10 == 0,
        partial: false,
    }
}

/// What the report must say, computed from the records without the ledger's code.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    requests: i128,
    exact: i128,
    semantic: i128,
    unpriced: i128,
    tokens_baseline: i128,
    tokens_actual: i128,
    baseline: i128,
    actual: i128,
    overhead: i128,
}

fn expect(records: &[UsageRecord]) -> Expected {
    let mut e = Expected::default();
    for r in records {
        e.requests += 1;
        e.exact += i128::from(r.outcome == Outcome::ExactHit);
        e.semantic += i128::from(r.outcome == Outcome::SemanticHit);
        e.tokens_baseline += i128::from(r.baseline.prompt + r.baseline.completion);
        e.tokens_actual += i128::from(r.actual.prompt + r.actual.completion);
        let day = r.day().to_string();
        let overhead_model = r.overhead_model.as_deref().unwrap_or(&r.model);
        let overhead_price = if r.overhead.is_zero() {
            Some((0, 0, 0))
        } else {
            price_by_hand(overhead_model, &day)
        };
        match (price_by_hand(&r.model, &day), overhead_price) {
            (Some(p), Some(o)) => {
                e.baseline += cost_by_hand(&r.baseline, p);
                e.actual += cost_by_hand(&r.actual, p);
                e.overhead += cost_by_hand(&r.overhead, o);
            }
            _ => e.unpriced += 1,
        }
    }
    e
}

fn assert_matches(total: &aggregate::Totals, e: &Expected) {
    assert_eq!(total.requests, e.requests);
    assert_eq!(total.outcome(Outcome::ExactHit), e.exact);
    assert_eq!(total.outcome(Outcome::SemanticHit), e.semantic);
    assert_eq!(total.unpriced, e.unpriced);
    assert_eq!(total.baseline.total(), e.tokens_baseline);
    assert_eq!(total.actual.total(), e.tokens_actual);
    assert_eq!(total.cost_baseline, e.baseline);
    assert_eq!(total.cost_actual, e.actual);
    assert_eq!(total.cost_overhead, e.overhead);
}

/// A unique directory under the system's temporary one, removed when dropped. An open
/// store keeps working after its directory entry is gone, so a temporary may be dropped
/// as soon as the store is open.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(name: &str) -> Scratch {
    Scratch(std::env::temp_dir().join(format!(
        "thrifty-savings-{name}-{}",
        uuid::Uuid::new_v4().simple()
    )))
}

fn embedded(dir: &Path) -> Arc<Store> {
    Store::embedded(
        EmbeddedStore::open(dir, 1 << 20, crate::clock::Clock::system()).unwrap(),
        Duration::from_secs(2),
    )
}

fn query(group_by: &[Dimension]) -> ReportQuery {
    ReportQuery {
        from: Day::parse("2025-06-01").unwrap(),
        to: Day::parse("2025-06-03").unwrap(),
        group_by: group_by.to_vec(),
        format: Format::Json,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_are_exact_under_200_concurrent_records() {
    let ledger = Ledger::new(embedded(&temp_dir("concurrent")), pricing());
    let records: Vec<UsageRecord> = (0..200).map(sample).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for r in records.clone() {
        let ledger = ledger.clone();
        tasks.spawn(async move { ledger.record(r) });
    }
    while tasks.join_next().await.is_some() {}
    ledger.flush().await;
    let expected = expect(&records);
    let report = ledger.report(&query(&[])).await.unwrap();
    assert_matches(&report.total, &expected);
    assert_eq!(
        report.unpriced_models,
        vec![("mystery-model".to_owned(), 50)]
    );
    // Both versions of gpt-4.1 were used, each on its own days.
    let versions: Vec<(String, String)> = report
        .price_versions
        .iter()
        .map(|v| (v.model.clone(), v.effective.to_string()))
        .collect();
    assert!(
        versions.contains(&("gpt-4.1".into(), "2025-01-01".into())),
        "{versions:?}"
    );
    assert!(
        versions.contains(&("gpt-4.1".into(), "2025-06-02".into())),
        "{versions:?}"
    );

    // Every grouping adds up to the same total.
    for group_by in [
        vec![Dimension::Day],
        vec![Dimension::Model, Dimension::Team],
        vec![Dimension::Key, Dimension::Outcome],
        Dimension::ALL.to_vec(),
    ] {
        let report = ledger.report(&query(&group_by)).await.unwrap();
        let mut sum = aggregate::Totals::default();
        for row in &report.rows {
            sum.add(&row.totals);
        }
        assert_matches(&sum, &expected);
    }
    let json = ledger.report(&query(&[])).await.unwrap().to_json();
    let net = expected.baseline - expected.actual - expected.overhead;
    assert_eq!(
        json["total"]["cost"]["net_saved"],
        Value::from(money::decimal(net))
    );
    assert_eq!(ledger.recent(1000).await.unwrap().len(), 200);
    assert_eq!(ledger.dropped(), 0);
}

#[tokio::test]
async fn csv_and_json_totals_agree() {
    let ledger = Ledger::new(embedded(&temp_dir("csv")), pricing());
    for i in 0..60 {
        ledger.record(sample(i));
    }
    ledger.flush().await;
    let report = ledger
        .report(&query(&[Dimension::Team, Dimension::Model]))
        .await
        .unwrap();
    let json = report.to_json();
    let csv = report.to_csv();
    let lines: Vec<&str> = csv.trim_end().split("\r\n").collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(&header[..3], ["row", "team", "model"]);
    // The team "beta|gamma" has no comma, so a plain split reads every line.
    let total: BTreeMap<&str, &str> = header
        .iter()
        .copied()
        .zip(lines.last().unwrap().split(','))
        .collect();
    assert_eq!(total["row"], "total");
    let t = &json["total"];
    assert_eq!(total["requests"], t["requests"].to_string());
    assert_eq!(total["exact_hits"], t["hits"]["exact"].to_string());
    assert_eq!(total["tokens_saved"], t["tokens"]["saved"].to_string());
    for (column, field) in [
        ("cost_baseline", "baseline"),
        ("cost_actual", "actual"),
        ("cost_overhead", "overhead"),
        ("net_saved", "net_saved"),
        ("savings_pct", "savings_pct"),
    ] {
        assert_eq!(Some(total[column]), t["cost"][field].as_str(), "{column}");
    }
    assert_eq!(lines.len(), report.rows.len() + 2);
    let rows_json = json["rows"].as_array().unwrap();
    let csv_requests: i64 = lines[1..lines.len() - 1]
        .iter()
        .map(|l| l.split(',').nth(3).unwrap().parse::<i64>().unwrap())
        .sum();
    let json_requests: i64 = rows_json
        .iter()
        .map(|r| r["requests"].as_i64().unwrap())
        .sum();
    assert_eq!(csv_requests, json_requests);
    assert!(report.to_table().contains("TOTAL"));
}

#[test]
fn json_csv_and_table_round_a_tied_hit_rate_alike() {
    // One exact hit in 32 requests: 0.03125, a tie that `{:.4}` rounds to even (0.0312).
    let cell = aggregate::Cell {
        day: Day::parse("2025-06-02").unwrap(),
        model: "gpt-4o-mini".to_owned(),
        team: String::new(),
        key: "k".to_owned(),
        outcome: Outcome::Miss,
        endpoint: "chat".to_owned(),
    };
    let hit = aggregate::Cell {
        outcome: Outcome::ExactHit,
        ..cell.clone()
    };
    let totals = |outcome: Outcome, n: i128| {
        let mut t = aggregate::Totals {
            requests: n,
            ..Default::default()
        };
        t.outcomes[Outcome::ALL.iter().position(|o| *o == outcome).unwrap()] = n;
        t
    };
    let cells = BTreeMap::from([
        (cell, totals(Outcome::Miss, 31)),
        (hit, totals(Outcome::ExactHit, 1)),
    ]);
    let report = Report::build(&query(&[]), &cells, &pricing());
    assert_eq!(report.to_json()["total"]["hit_rate"], 0.0313);
    let csv = report.to_csv();
    let total = csv.trim_end().rsplit("\r\n").next().unwrap();
    assert_eq!(total.split(',').nth(4), Some("0.0313"), "{csv}");
    assert!(report.to_table().contains("3.1%"), "{}", report.to_table());
}

/// A record being made after its answer went out (see `Account::settle_behind`) is promised
/// first: a report asked for meanwhile waits for it instead of leaving it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_waits_for_a_record_promised_before_it_was_asked_for() {
    let ledger = Ledger::new(embedded(&temp_dir("promised")), pricing());
    let promise = ledger.promise();
    let report = tokio::spawn({
        let ledger = ledger.clone();
        async move { ledger.report(&query(&[])).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !report.is_finished(),
        "the report waits for the promised record"
    );
    ledger.record(sample(0));
    drop(promise);
    let report = tokio::time::timeout(Duration::from_secs(10), report)
        .await
        .expect("the report ends once the record is handed over")
        .expect("the report task")
        .expect("the report");
    assert_eq!(
        report.to_json()["total"]["requests"],
        1,
        "{}",
        report.to_json()
    );
}

#[tokio::test]
async fn an_unpriced_model_has_a_null_cost_and_is_listed() {
    let ledger = Ledger::new(embedded(&temp_dir("unpriced")), pricing());
    for i in (3..40).step_by(4) {
        ledger.record(sample(i)); // mystery-model only
    }
    ledger.record(sample(0)); // one priced gpt-4o-mini record
    ledger.flush().await;
    let report = ledger.report(&query(&[Dimension::Model])).await.unwrap();
    let json = report.to_json();
    let rows = json["rows"].as_array().unwrap();
    let mystery = rows.iter().find(|r| r["model"] == "mystery-model").unwrap();
    assert_eq!(mystery["cost"]["baseline"], Value::Null);
    assert_eq!(mystery["cost"]["net_saved"], Value::Null);
    assert_eq!(mystery["unpriced_requests"], 10);
    assert!(
        mystery["tokens"]["baseline"]["total"].as_i64().unwrap() > 0,
        "tokens are still counted"
    );
    let mini = rows.iter().find(|r| r["model"] == "gpt-4o-mini").unwrap();
    assert!(mini["cost"]["baseline"].is_string());
    assert_eq!(
        json["unpriced_models"],
        serde_json::json!([{"model": "mystery-model", "requests": 10}])
    );
    let csv = report.to_csv();
    let line = csv.lines().find(|l| l.contains("mystery-model")).unwrap();
    assert!(line.contains(",,,,,USD,"), "empty cost cells: {line}");
    assert!(report.to_table().contains("unpriced"));
}

#[tokio::test]
async fn records_survive_a_restart_of_the_embedded_store() {
    let dir = temp_dir("restart");
    let records: Vec<UsageRecord> = (0..30).map(sample).collect();
    {
        let ledger = Ledger::new(embedded(&dir), pricing());
        for r in &records {
            ledger.record(r.clone());
        }
        ledger.flush().await;
    }
    // The writer lets go of the database once its queue closes; reopen when it has.
    let deadline = Instant::now() + Duration::from_secs(10);
    let store = loop {
        match EmbeddedStore::open(&dir, 1 << 20, crate::clock::Clock::system()) {
            Ok(store) => break Store::embedded(store, Duration::from_secs(2)),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot reopen the store: {e}"),
        }
    };
    let ledger = Ledger::new(store, pricing());
    let report = ledger.report(&query(&[])).await.unwrap();
    assert_matches(&report.total, &expect(&records));
}

#[tokio::test]
async fn metrics_expose_requests_hits_tokens_costs_and_store_health() {
    let ledger = Ledger::new(embedded(&temp_dir("metrics")), pricing());
    for i in 0..12 {
        ledger.record(sample(i));
    }
    ledger.metrics_hooks().rate_limited();
    ledger.metrics_hooks().upstream_error("openai", "timeout");
    ledger
        .metrics_hooks()
        .request("health", "", "none", 200, 0.3);
    ledger.flush().await;
    let text = ledger.metrics(&[]);
    for needle in [
        "thrifty_requests_total{route=\"chat\",dialect=\"openai\",outcome=\"exact_hit\",status=\"200\"}",
        "thrifty_cache_hits_total{kind=\"exact\"} 2",
        "thrifty_cache_hits_total{kind=\"semantic\"} 2",
        "thrifty_tokens_total{kind=\"baseline\"}",
        "thrifty_tokens_saved_total",
        "thrifty_compression_ratio_bucket",
        "thrifty_request_duration_seconds_bucket{le=\"0.005\",route=\"health\"} 1",
        "thrifty_upstream_duration_seconds_count{upstream=\"openai\"}",
        "thrifty_upstream_errors_total{upstream=\"openai\",kind=\"timeout\"} 1",
        "thrifty_rate_limited_total 1",
        "thrifty_store_errors_total 0",
        "thrifty_ledger_dropped_records_total 0",
        "thrifty_ledger_pending_records 0",
        "thrifty_cost_total{currency=\"USD\",measure=\"baseline\"}",
        "thrifty_net_saved{currency=\"USD\"}",
        "thrifty_unpriced_requests_total 3",
        "# EOF",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

#[tokio::test]
async fn the_dashboard_shows_the_seeded_figures_and_loads_nothing() {
    let ledger = Ledger::new(embedded(&temp_dir("dashboard")), pricing());
    let mut records: Vec<UsageRecord> = (0..40).map(sample).collect();
    records[0].model = "<script>alert(1)</script>".to_owned();
    for r in &records {
        ledger.record(r.clone());
    }
    ledger.flush().await;
    let html = dashboard_html(&ledger, &query(&[])).await;
    let report = ledger.report(&query(&[])).await.unwrap();
    assert!(html.starts_with("<!doctype html>"));
    for needle in [
        "Net saved",
        "By model",
        "By team",
        "Top savers",
        "Hit rates by kind",
        "Compression",
        "<svg",
        "gpt-4o-mini",
        "beta|gamma",
        "2025-06-02",
    ] {
        assert!(html.contains(needle), "missing {needle}");
    }
    assert!(
        html.contains(&money::decimal(report.total.net_saved().unwrap())),
        "exact net saved on hover"
    );
    assert!(html.contains(&report.total.requests.to_string()));
    // The compression card: the compressed requests' forwarded prompt over their baseline.
    let (kept, of): (u64, u64) = records
        .iter()
        .filter(|r| r.outcome == Outcome::Compressed)
        .fold((0, 0), |(k, o), r| {
            (k + r.actual.prompt, o + r.baseline.prompt)
        });
    let card = format!(
        "<div class=\"label\">Compression</div><div class=\"value \">{:.0}%</div>",
        kept as f64 * 100.0 / of as f64
    );
    assert!(of > 0 && html.contains(&card), "missing {card}");
    assert!(
        !html.contains("<script>"),
        "client-supplied names are escaped"
    );
    assert!(html.contains("&lt;script&gt;"));
    for external in ["http://", "https://", "src=", "<link", "url("] {
        assert!(
            !html.contains(external),
            "the page must load nothing: found {external}"
        );
    }
}

// ---- Redis: a real server, killed and restarted while records keep coming. ----

/// A private `redis-server` with an fsync-always append-only file, so a restart keeps
/// every acknowledged write (the setting finance deployments need).
struct Redis {
    port: u16,
    dir: Scratch,
    child: Option<Child>,
}

impl Redis {
    fn new() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = temp_dir("redis");
        std::fs::create_dir_all(&*dir).unwrap();
        Redis {
            port,
            dir,
            child: None,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join("redis.log")).unwrap();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&*self.dir)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): install Debian's redis-server package")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.pong() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pong(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// SIGKILL: no shutdown save, only what the append-only file already holds survives.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_record_is_lost_when_redis_is_down_killed_and_restarted() {
    let mut redis = Redis::new();
    // Redis is not there yet: thrifty starts and records anyway.
    let store = Store::redis(
        RedisStore::connect(&redis.url(), false, Duration::from_millis(500)).unwrap(),
        Duration::from_millis(500),
    );
    let ledger = Ledger::new(store.clone(), pricing());
    let records: Vec<UsageRecord> = (0..90).map(sample).collect();
    for r in &records[..30] {
        ledger.record(r.clone());
    }
    wait_until("the first records are buffered", || ledger.pending() == 30).await;
    redis.start();
    tokio::time::timeout(Duration::from_secs(20), ledger.flush())
        .await
        .expect("written once redis is up");
    assert_eq!(ledger.pending(), 0);

    for r in &records[30..60] {
        ledger.record(r.clone());
    }
    ledger.flush().await;
    let errors_before = store.errors();
    redis.kill();
    for r in &records[60..] {
        ledger.record(r.clone());
    }
    wait_until("the writer finds redis gone", || {
        store.errors() > errors_before && ledger.pending() > 0
    })
    .await;
    redis.start();
    tokio::time::timeout(Duration::from_secs(30), ledger.flush())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "records still pending after redis came back:\n{}",
                redis.log()
            )
        });

    let report = ledger.report(&query(&[Dimension::Day])).await.unwrap();
    assert_matches(&report.total, &expect(&records));
    assert_eq!(ledger.dropped(), 0);
    assert_eq!(
        ledger.recent(1000).await.unwrap().len(),
        90,
        "the audit log holds every record"
    );
    // A second ledger (a restarted thrifty) reads the same figures.
    let again = Ledger::new(store, pricing())
        .report(&query(&[]))
        .await
        .unwrap();
    assert_eq!(again.total, report.total);
}

#[tokio::test]
async fn a_full_buffer_drops_and_counts_the_excess() {
    let mut redis = Redis::new();
    let store = Store::redis(
        RedisStore::connect(&redis.url(), false, Duration::from_millis(500)).unwrap(),
        Duration::from_millis(500),
    );
    let options = LedgerOptions {
        buffer: 10,
        ..LedgerOptions::default()
    };
    let ledger = Ledger::with_options(store, pricing(), options);
    for i in 0..25 {
        ledger.record(sample(i));
    }
    wait_until("the excess is dropped", || {
        ledger.dropped() == 15 && ledger.pending() == 10
    })
    .await;
    redis.start();
    tokio::time::timeout(Duration::from_secs(20), ledger.flush())
        .await
        .expect("flushed");
    let report = ledger.report(&query(&[])).await.unwrap();
    assert_eq!(report.total.requests, 10);
    assert_matches(
        &report.total,
        &expect(&(0..10).map(sample).collect::<Vec<_>>()),
    );
    assert!(
        ledger
            .metrics(&[])
            .contains("thrifty_ledger_dropped_records_total 15")
    );
}

#[tokio::test]
async fn a_retried_batch_is_not_counted_twice_on_redis() {
    let mut redis = Redis::new();
    redis.start();
    let store = Store::redis(
        RedisStore::connect(&redis.url(), false, Duration::from_millis(500)).unwrap(),
        Duration::from_millis(500),
    );
    wait_until_async(&store).await;
    let batch = crate::store::counters::CounterBatch {
        marker: aggregate::marker_key("w"),
        seq: 7,
        counters: vec![(
            aggregate::day_key(Day::parse("2025-06-01").unwrap()),
            vec![("f".into(), 5)],
        )],
        log: aggregate::log_key(),
        entries: vec![bytes::Bytes::from_static(b"{}")],
        cap: 100,
    };
    assert!(store.apply_once(&batch).await.unwrap());
    assert!(!store.apply_once(&batch).await.unwrap());
    let fields = store.counters(&batch.counters[0].0).await.unwrap();
    assert_eq!(fields["f"], 5);
    store
        .add_counters(&batch.counters[0].0, &[("f".into(), 2), ("g".into(), -1)])
        .await
        .unwrap();
    let fields = store.counters(&batch.counters[0].0).await.unwrap();
    assert_eq!((fields["f"], fields["g"]), (7, -1));
    for i in 0..5 {
        store
            .append_capped(
                "thrifty:v1:{savings}:t",
                bytes::Bytes::from(format!("{i}")),
                3,
            )
            .await
            .unwrap();
    }
    let recent = store.recent("thrifty:v1:{savings}:t", 10).await.unwrap();
    assert_eq!(
        recent,
        vec![
            bytes::Bytes::from("2"),
            bytes::Bytes::from("3"),
            bytes::Bytes::from("4")
        ]
    );
    let keys = store.counter_keys(aggregate::PREFIX).await.unwrap();
    assert!(keys.contains(&batch.counters[0].0), "{keys:?}");
}

async fn wait_until_async(store: &Store) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "redis did not answer");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
