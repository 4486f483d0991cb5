//! The truth test of the savings ledger: a scripted mix of requests goes through thrifty to a
//! fake upstream whose billing is known, and every total of `GET /admin/savings`, in JSON and in
//! CSV, must equal the figures the test computes on its own, before and after a restart.
//!
//! - `script`: the mix (misses, exact and semantic hits, a compressed conversation and its hit,
//!   streams with and without usage, a stream whose upstream reports no usage at all (thrifty
//!   counts it), a bypass, errors, Ollama, Responses API calls (a miss and its hit, a stream
//!   replayed as JSON), two teams and a key without one, a model without a price).
//! - `billing`: what the fake bills, from its documented rule; `prices`: the test's price table.
//! - `drive`: sends the mix and derives each request's expected record from what was sent and
//!   what reached the fake. `expect`: sums those records the way a report groups them.
//! - `report`: compares every figure of every grouping; `verdict` lists every difference.
//!
//! Last, `thrifty report` runs as a command on the same store and must print the same reports.
//!
//! What "the truth" is, per request: the baseline is the prompt as the client sent it and the
//! completion of the answer it got, as the fake would bill them; the actual cost is what the
//! fake billed (nothing for a hit); the overhead is zero (local embeddings, no summarizer). The
//! figures no upstream reports, the prompt tokens compression removed and a stream whose upstream
//! sent no usage, are counted with OpenAI's tokenizer (cl100k_base for a model no table knows).
//! Records are estimated exactly when part of their baseline was never counted by an upstream:
//! semantic hits, compressed requests and hits of their answers, and that stream.

mod common;

#[path = "truth/billing.rs"]
mod billing;
#[path = "truth/drive.rs"]
mod drive;
#[path = "truth/expect.rs"]
mod expect;
#[path = "truth/prices.rs"]
mod prices;
#[path = "truth/report.rs"]
mod report;
#[path = "truth/script.rs"]
mod script;
#[path = "truth/verdict.rs"]
mod verdict;
#[path = "truth/world.rs"]
mod world;

use common::client::Backend;
use verdict::Verdict;
use world::World;

/// Runs the mix, then checks the reports, restarts thrifty on the same store and checks again.
async fn the_report_tells_the_truth(backend: Backend, semantic: bool) {
    let mut world = World::start(backend, semantic).await;
    let mut v = Verdict::default();
    let records = drive::run(&world, &script::mix(semantic), &mut v).await;
    let (from, to) = world::span();
    let span = (from.as_str(), to.as_str());
    world.wait_recorded(span, records.len()).await;

    // The raw records first: they name the request a wrong total comes from.
    if let Some(log) = world.audit_log().await {
        report::check_audit(&mut v, &log, &records);
    }
    let before = report::fetch(&world, span).await;
    for fetched in &before {
        report::check(&mut v, span, fetched, &records);
    }

    // The same reports from a new instance on the same store (equal to the checked ones, so
    // equal to the truth).
    world.restart().await;
    let after = report::fetch(&world, span).await;
    for (b, a) in before.iter().zip(&after) {
        let label = format!("group_by={} after the restart", b.group_by);
        v.eq(format!("{label}: the JSON report"), &b.json, &a.json);
        v.eq(format!("{label}: the CSV report"), &b.csv, &a.csv);
    }

    // `thrifty report` reads the same store on its own and prints the same figures.
    world.stop().await;
    for fetched in &before {
        let group_by = fetched.group_by.as_str();
        let label = format!("thrifty report --group-by={group_by}");
        let csv = world.cli_report(span, group_by, "csv").await;
        v.eq(format!("{label} --format=csv"), &fetched.csv, &csv);
        let json = world.cli_report(span, group_by, "json").await;
        let json: serde_json::Value = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("{label} --format=json parses: {e}"));
        v.eq(format!("{label} --format=json"), &fetched.json, &json);
    }
    v.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_total_is_the_truth_on_redis_across_a_restart() {
    the_report_tells_the_truth(Backend::Redis, true).await;
}

/// The embedded store, reopened from its data directory. Without Redis the test cannot see when
/// a question is indexed, so the semantic cache is off and its steps are left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_total_is_the_truth_in_the_embedded_store_across_a_restart() {
    the_report_tells_the_truth(Backend::Embedded, false).await;
}
