//! The savings ledger: what every request cost, what it would have cost without
//! thrifty, and what thrifty spent to save it, kept exactly enough for finance.
//!
//! - [`record`]: the [`UsageRecord`] the pipeline hands over, tokens three ways.
//! - [`pricing`]: dated price versions per model glob; the exact integer cost of a record.
//! - [`ledger`]: the [`Ledger`], a writer task that prices records and stores them once,
//!   buffering through store outages. [`aggregate`]: the key and field layout it writes;
//!   [`bounds`]: the caps on the names it aggregates by; [`expected`]: records promised
//!   while they are made after their answers, which a flush waits for.
//! - [`query`], [`report`]: what a report covers and its JSON, CSV and table renderings.
//! - [`dashboard`]: one self-contained HTML page. [`metrics`]: the Prometheus exposition.
//! - [`day`], [`money`]: UTC days and exact decimals of integer pico-unit sums; [`names`]:
//!   names escaped into counter fields and price labels.
//!
//! **Invariants:** money is integer pico-units (10⁻¹² of the currency) from pricing to
//! report; it becomes text only when rendered, and floats appear only in `/metrics`. A
//! model without a price is reported as unpriced, never as free. Recording never waits
//! for the store and never fails a request.

pub mod aggregate;
pub mod bounds;
pub mod dashboard;
pub mod day;
pub mod expected;
pub mod ledger;
pub mod metrics;
pub mod money;
pub mod names;
pub mod pricing;
pub mod query;
pub mod record;
pub mod report;

use std::sync::Arc;
use std::time::Duration;

pub use dashboard::dashboard_html;
pub use day::Day;
pub use ledger::{Ledger, LedgerOptions};
pub use metrics::{CONTENT_TYPE as METRICS_CONTENT_TYPE, Metrics};
pub use pricing::{Price, Pricing};
pub use query::{
    AuditQuery, Dimension, Format, ReportArgs, ReportQuery, parse_audit_query, parse_query,
};
pub use record::{AuditEntry, Outcome, Tokens, UsageRecord};
pub use report::Report;

use crate::store::Store;

/// How long `thrifty report` waits for the store to answer.
const CLI_CONNECT: Duration = Duration::from_secs(10);

/// `thrifty report`: reads the ledger from the store and renders it (a table by default).
pub async fn cli_report(
    store: Arc<Store>,
    pricing: Pricing,
    args: &ReportArgs,
) -> Result<String, String> {
    let query = args.query(Day::today(), Format::Table)?;
    // Redis connects in the background; wait for it rather than report an empty ledger.
    let deadline = tokio::time::Instant::now() + CLI_CONNECT;
    while let Err(e) = store.ping().await {
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("the store ({}) does not answer: {e}", store.kind()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ledger = Ledger::new(store, pricing);
    let report = ledger
        .report(&query)
        .await
        .map_err(|e| format!("cannot read the savings ledger: {e}"))?;
    Ok(report.render().1)
}

#[cfg(test)]
mod tests;
