//! The ledger: takes usage records off the request path and writes them, priced, to
//! the store's aggregate and audit log, exactly once, surviving store outages.
//!
//! ```text
//!  record() ──try_send──► queue ──► writer: price ─► buffer ─► batch ─► Store::apply_once
//!                                          ▲                    │ error: keep the batch,
//!                                          └─── keep draining ◄─┘ back off, retry it
//! ```
//!
//! A batch keeps its sequence number across retries and the store skips a sequence it
//! has applied, so a write that timed out after landing is not counted twice. After a quiet
//! spell the writer gathers records for up to [`LINGER`] (less when a batch fills or a flush
//! waits) before it writes, so a busy instance makes one store write per batch.
//!
//! Ledger keys never expire, so the store must keep them: on Redis, persist with the
//! append-only file (`appendonly yes`, `appendfsync everysec` loses at most a second on a
//! crash, `always` nothing) and never evict them (`maxmemory-policy volatile-lru` or
//! `volatile-ttl` evicts only the caches' expiring keys; `allkeys-*` would evict the ledger).

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, watch};

use super::aggregate::{self, Cell, Totals};
use super::bounds::Bounds;
use super::day::Day;
use super::expected::{Expected, Promise};
use super::metrics::Metrics;
use super::money;
use super::pricing::{Pricing, Quote};
use super::query::ReportQuery;
use super::record::{AuditCost, AuditEntry, UsageRecord};
use super::report::Report;
use crate::store::counters::CounterBatch;
use crate::store::{Store, StoreError};

/// First and longest wait between attempts to write to a failing store.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// How long a report waits for records still being written before it reads.
const REPORT_FLUSH: Duration = Duration::from_secs(2);

/// How long the writer gathers records after the first of a quiet spell before it writes a
/// batch (unless the batch fills or a flush asks sooner): under load, one store write per
/// batch instead of one per few requests.
const LINGER: Duration = Duration::from_millis(50);

/// About the size of one encoded audit entry, reserved up front.
const AUDIT_ENTRY_BYTES: usize = 512;

/// Sizes of the ledger's queue, buffer, batches and audit log.
#[derive(Clone, Copy, Debug)]
pub struct LedgerOptions {
    /// Records between `record()` and the writer; beyond it records are dropped (counted).
    pub queue: usize,
    /// Records the writer holds while the store is failing; beyond it they are dropped (counted).
    pub buffer: usize,
    /// Records written per store call.
    pub batch: usize,
    /// Raw records the audit log keeps.
    pub log_cap: usize,
    /// Model names a day's aggregate counts by name; later ones count as `other`.
    pub models_per_day: usize,
    /// Tenants without a configured key a day's aggregate counts by name; later ones count
    /// as `other`.
    pub tenants_per_day: usize,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions {
            queue: 8_192,
            buffer: 200_000,
            batch: 256,
            log_cap: 100_000,
            models_per_day: 200,
            tenants_per_day: 1_000,
        }
    }
}

/// The savings ledger. Create it inside a Tokio runtime: it spawns its writer.
pub struct Ledger {
    store: Arc<Store>,
    pricing: Arc<Pricing>,
    sender: mpsc::Sender<UsageRecord>,
    accepted: AtomicU64,
    settled: watch::Receiver<u64>,
    /// Tells the writer a flush is waiting.
    hurry: Arc<Notify>,
    metrics: Arc<Metrics>,
    writer: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Records promised and not yet handed over, which a flush waits for.
    expected: Arc<Expected>,
}

impl Ledger {
    pub fn new(store: Arc<Store>, pricing: Pricing) -> Arc<Ledger> {
        Ledger::with_options(store, pricing, LedgerOptions::default())
    }

    pub fn with_options(
        store: Arc<Store>,
        pricing: Pricing,
        options: LedgerOptions,
    ) -> Arc<Ledger> {
        let pricing = Arc::new(pricing);
        let metrics = Arc::new(Metrics::new(store.clone(), pricing.currency()));
        let (sender, receiver) = mpsc::channel(options.queue.max(1));
        let (settle, settled) = watch::channel(0);
        let hurry = Arc::new(Notify::new());
        let writer = Writer {
            hurry: hurry.clone(),
            store: store.clone(),
            pricing: pricing.clone(),
            metrics: metrics.clone(),
            receiver,
            open: true,
            buffer: VecDeque::new(),
            batch: None,
            marker: aggregate::marker_key(&uuid::Uuid::new_v4().simple().to_string()),
            seq: 0,
            options,
            settle,
            failing: false,
            bounds: Bounds::new(options.models_per_day, options.tenants_per_day),
        };
        let writer = tokio::spawn(writer.run());
        Arc::new(Ledger {
            store,
            pricing,
            sender,
            accepted: AtomicU64::new(0),
            settled,
            hurry,
            metrics,
            writer: parking_lot::Mutex::new(Some(writer)),
            expected: Arc::default(),
        })
    }

    /// Records a finished request. Never blocks: a full queue drops the record and counts it.
    pub fn record(&self, record: UsageRecord) {
        self.metrics.record(&record);
        match self.sender.try_send(record) {
            Ok(()) => {
                self.accepted.fetch_add(1, Ordering::SeqCst);
            }
            Err(error) => {
                let dropped = self.metrics.dropped(1);
                // Logged at 1, 2, 4, 8, ... drops: loud at first, never a flood.
                if dropped.is_power_of_two() {
                    let why = match error {
                        mpsc::error::TrySendError::Full(_) => "savings ledger queue full",
                        mpsc::error::TrySendError::Closed(_) => "savings ledger already stopped",
                    };
                    tracing::warn!(dropped, "{why}: usage record dropped");
                }
            }
        }
    }

    /// Promises a record that is being made: until the promise is dropped, a flush waits
    /// for it.
    pub fn promise(&self) -> Promise {
        self.expected.promise()
    }

    /// Waits until every record promised so far has been handed over (recorded, or given up).
    pub async fn arrived(&self) {
        self.expected.arrived().await;
    }

    /// Waits until every record promised or accepted so far is written (or dropped for a
    /// full buffer). While the store is down this waits for it; bound it with a timeout where
    /// that matters.
    pub async fn flush(&self) {
        self.arrived().await;
        let target = self.accepted.load(Ordering::SeqCst);
        let mut settled = self.settled.clone();
        self.hurry.notify_one();
        // An error means the writer is gone, and with it anything left to wait for.
        let _ = settled.wait_for(|n| *n >= target).await;
    }

    /// Writes everything recorded so far, then stops the writer so the store is released
    /// (an embedded store can then be opened again). Bounded by `grace`.
    pub async fn shutdown(&self, grace: std::time::Duration) -> bool {
        let flushed = tokio::time::timeout(grace, self.flush()).await.is_ok();
        let writer = self.writer.lock().take();
        if let Some(writer) = writer {
            writer.abort();
            let _ = writer.await;
        }
        flushed
    }

    /// The report for a query, read from the store after a short flush.
    pub async fn report(&self, query: &ReportQuery) -> Result<Report, StoreError> {
        let cells = self.cells(query.from, query.to).await?;
        Ok(Report::build(query, &cells, &self.pricing))
    }

    /// The aggregate cells of the days `from..=to`, after a short flush.
    pub async fn cells(&self, from: Day, to: Day) -> Result<BTreeMap<Cell, Totals>, StoreError> {
        let _ = tokio::time::timeout(REPORT_FLUSH, self.flush()).await;
        let mut cells = BTreeMap::new();
        let mut day = from;
        while day <= to {
            let fields = self.store.counters(&aggregate::day_key(day)).await?;
            cells.extend(aggregate::read_day(day, fields));
            day = day.plus(1);
        }
        Ok(cells)
    }

    /// The newest `n` raw records of the audit log, oldest first.
    pub async fn recent(&self, n: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let _ = tokio::time::timeout(REPORT_FLUSH, self.flush()).await;
        let raw = self.store.recent(&aggregate::log_key(), n).await?;
        Ok(raw
            .iter()
            .filter_map(|r| serde_json::from_slice(r).ok())
            .collect())
    }

    pub fn pricing(&self) -> &Pricing {
        &self.pricing
    }

    /// The Prometheus hooks for what usage records do not cover: other routes, refusals
    /// by the rate limiter, upstream errors.
    pub fn metrics_hooks(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Prometheus text exposition (see [`super::METRICS_CONTENT_TYPE`]), followed by the
    /// metrics of other rooms (`more`).
    pub fn metrics(&self, more: &[prometheus_client::registry::Registry]) -> String {
        self.metrics.render(more)
    }

    /// Records lost to a full queue or buffer since start.
    pub fn dropped(&self) -> u64 {
        self.metrics.dropped_total()
    }

    /// Records accepted but not yet written.
    pub fn pending(&self) -> u64 {
        self.metrics.pending()
    }
}

struct Pending {
    record: UsageRecord,
    quote: Quote,
    /// The record and quote as the aggregate counts them, when bounds folded a name.
    folded: Option<(UsageRecord, Quote)>,
}

/// The one task that writes to the store.
struct Writer {
    store: Arc<Store>,
    pricing: Arc<Pricing>,
    metrics: Arc<Metrics>,
    receiver: mpsc::Receiver<UsageRecord>,
    /// A flush waits: write what is gathered now.
    hurry: Arc<Notify>,
    open: bool,
    buffer: VecDeque<Pending>,
    /// The batch being written and how many records it holds; kept until it lands.
    batch: Option<(CounterBatch, u64)>,
    marker: String,
    seq: u64,
    options: LedgerOptions,
    settle: watch::Sender<u64>,
    failing: bool,
    bounds: Bounds,
}

impl Writer {
    async fn run(mut self) {
        let mut wait = RETRY_MIN;
        loop {
            if self.batch.is_none() && self.buffer.is_empty() {
                if !self.open {
                    return;
                }
                match self.receiver.recv().await {
                    Some(record) => self.accept(record),
                    None => return,
                }
                self.gather().await;
            }
            while let Ok(record) = self.receiver.try_recv() {
                self.accept(record);
            }
            if self.batch.is_none() {
                self.batch = Some(self.next_batch());
            }
            let Some((batch, count)) = &self.batch else {
                continue;
            };
            match self.store.apply_once(batch).await {
                Ok(_) => {
                    let count = *count;
                    self.batch = None;
                    self.settled(count);
                    wait = RETRY_MIN;
                    if self.failing {
                        self.failing = false;
                        tracing::info!(pending = self.pending(), "savings ledger writing again");
                    }
                }
                Err(error) => {
                    if !self.failing {
                        self.failing = true;
                        tracing::warn!(%error, pending = self.pending(), "savings ledger cannot write: buffering records until the store is back");
                    }
                    self.pause(wait).await;
                    wait = (wait * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// Takes in records for up to [`LINGER`], until a batch is full, the queue closes or a
    /// flush asks for the write.
    async fn gather(&mut self) {
        let deadline = tokio::time::Instant::now() + LINGER;
        while self.open && self.buffer.len() < self.options.batch.max(1) {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return,
                () = self.hurry.notified() => return,
                received = self.receiver.recv() => match received {
                    Some(record) => self.accept(record),
                    None => self.open = false,
                },
            }
        }
    }

    /// Sleeps, taking in new records meanwhile so `record()` never finds the queue full.
    async fn pause(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return,
                received = self.receiver.recv(), if self.open => match received {
                    Some(record) => self.accept(record),
                    None => self.open = false,
                },
            }
        }
    }

    fn pending(&self) -> usize {
        self.buffer.len()
            + self
                .batch
                .as_ref()
                .map_or(0, |(_, n)| usize::try_from(*n).unwrap_or(usize::MAX))
    }

    fn accept(&mut self, mut record: UsageRecord) {
        if self.pending() >= self.options.buffer.max(1) {
            let dropped = self.metrics.dropped(1);
            self.settled(1);
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "savings ledger buffer full: usage record dropped");
            }
            return;
        }
        Bounds::trim(&mut record);
        let quote = self.pricing.quote(&record);
        self.metrics.cost(quote.costs.as_ref());
        let folded = self.bounds.fold(&record, &quote);
        self.buffer.push_back(Pending {
            record,
            quote,
            folded,
        });
        self.metrics.set_pending(self.pending());
    }

    fn settled(&mut self, n: u64) {
        // The gauge first: a flush woken by the count may read it at once.
        self.metrics.set_pending(self.pending());
        self.settle.send_modify(|settled| *settled += n);
    }

    /// Sums the next records into one batch per day and encodes their audit entries. Records
    /// are summed per aggregate cell first, so a cell's field names are written once a batch.
    fn next_batch(&mut self) -> (CounterBatch, u64) {
        let take = self.buffer.len().min(self.options.batch.max(1));
        let mut cells: BTreeMap<Cell, BTreeMap<Cow<'static, str>, i64>> = BTreeMap::new();
        let mut entries = Vec::with_capacity(take);
        for pending in self.buffer.drain(..take) {
            let (counted, quote) = match &pending.folded {
                Some((record, quote)) => (record, quote),
                None => (&pending.record, &pending.quote),
            };
            let sums = cells.entry(Cell::of(counted)).or_default();
            for (measure, delta) in aggregate::measures(counted, quote) {
                let sum = sums.entry(measure).or_default();
                *sum = sum.saturating_add(delta);
            }
            let mut json = Vec::with_capacity(AUDIT_ENTRY_BYTES);
            match serde_json::to_writer(&mut json, &audit_entry(pending, self.pricing.currency())) {
                Ok(()) => entries.push(Bytes::from(json)),
                Err(error) => tracing::warn!(%error, "cannot encode an audit entry"),
            }
        }
        let mut days: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        for (cell, sums) in cells {
            let fields = days.entry(aggregate::day_key(cell.day)).or_default();
            let prefix = cell.field_prefix();
            for (measure, delta) in sums {
                let sum = fields.entry(format!("{prefix}{measure}")).or_default();
                *sum = sum.saturating_add(delta);
            }
        }
        self.seq += 1;
        let batch = CounterBatch {
            marker: self.marker.clone(),
            seq: self.seq,
            counters: days
                .into_iter()
                .map(|(key, fields)| (key, fields.into_iter().collect()))
                .collect(),
            log: aggregate::log_key(),
            entries,
            cap: self.options.log_cap,
        };
        (batch, u64::try_from(take).unwrap_or(u64::MAX))
    }
}

fn audit_entry(pending: Pending, currency: &str) -> AuditEntry {
    let Pending { record, quote, .. } = pending;
    let cost = quote.costs.map(|c| AuditCost {
        currency: currency.to_owned(),
        baseline: money::decimal(wide(c.baseline)),
        actual: money::decimal(wide(c.actual)),
        overhead: money::decimal(wide(c.overhead)),
        net_saved: money::decimal(c.net_saved()),
    });
    AuditEntry {
        prices: quote.versions.iter().map(|p| p.label.clone()).collect(),
        unpriced: quote.unpriced,
        cost,
        record,
    }
}

fn wide(pico: u128) -> i128 {
    i128::try_from(pico).unwrap_or(i128::MAX / 4)
}
