//! Prometheus metrics for `/metrics`: counters and histograms updated in memory as
//! requests finish, rendered in the OpenMetrics text format. They restart at zero with
//! the process and their money is approximate (floats); the ledger's reports are the
//! exact record.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets, linear_buckets};
use prometheus_client::registry::Registry;

use super::pricing::{Costs, PICO};
use super::record::{Outcome, UsageRecord};
use crate::store::Store;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    dialect: String,
    outcome: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    upstream: String,
    kind: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 5 ms to about 11 minutes: LLM calls are slow.
    Histogram::new(exponential_buckets(0.005, 2.0, 18))
}

/// Values owned elsewhere, read at scrape time.
struct Live {
    store: Arc<Store>,
    currency: String,
    /// Pico-unit sums: baseline, actual, overhead.
    costs: Mutex<[i128; 3]>,
    dropped: AtomicU64,
    pending: AtomicU64,
}

impl fmt::Debug for Live {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

fn units(pico: i128) -> f64 {
    pico as f64 / PICO as f64
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let counter = |encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64| {
            let metric = ConstCounter::new(value);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
        };
        counter(
            &mut encoder,
            "thrifty_store_errors",
            "Store calls that failed or timed out.",
            self.store.errors(),
        )?;
        counter(
            &mut encoder,
            "thrifty_ledger_dropped_records",
            "Usage records lost because the ledger's buffer was full.",
            self.dropped.load(Ordering::Relaxed),
        )?;
        let pending = ConstGauge::new(
            i64::try_from(self.pending.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
        );
        pending.encode(encoder.encode_descriptor(
            "thrifty_ledger_pending_records",
            "Usage records waiting to be written to the store.",
            None,
            pending.metric_type(),
        )?)?;
        let [baseline, actual, overhead] = *self.costs.lock();
        let currency = [("currency".to_owned(), self.currency.clone())];
        let mut family = encoder.encode_descriptor(
            "thrifty_cost",
            "Cost of priced requests since start, by measure (baseline: without thrifty).",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (measure, pico) in [
            ("baseline", baseline),
            ("actual", actual),
            ("overhead", overhead),
        ] {
            let labels = [
                currency[0].clone(),
                ("measure".to_owned(), measure.to_owned()),
            ];
            ConstCounter::new(units(pico).max(0.0)).encode(family.encode_family(&labels)?)?;
        }
        let net = ConstGauge::new(units(baseline - actual - overhead));
        net.encode(
            encoder
                .encode_descriptor(
                    "thrifty_net_saved",
                    "Baseline minus actual minus overhead cost of priced requests since start.",
                    None,
                    net.metric_type(),
                )?
                .encode_family(&currency)?,
        )
    }
}

/// The registry and the handles that update it.
pub struct Metrics {
    registry: Registry,
    live: Arc<Live>,
    requests: Family<RequestLabels, Counter>,
    hits: Family<KindLabels, Counter>,
    tokens: Family<KindLabels, Counter>,
    tokens_saved: Counter,
    compression: Histogram,
    latency: Histograms<RouteLabels>,
    upstream_latency: Histograms<UpstreamLabels>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    rate_limited: Counter,
    estimated: Counter,
    unpriced: Counter,
}

impl Metrics {
    pub fn new(store: Arc<Store>, currency: &str) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "thrifty_requests",
            "Requests by route, dialect, outcome and status",
            requests.clone(),
        );
        let hits = Family::<KindLabels, Counter>::default();
        registry.register(
            "thrifty_cache_hits",
            "Requests answered from a cache, by kind (exact, semantic)",
            hits.clone(),
        );
        let tokens = Family::<KindLabels, Counter>::default();
        registry.register(
            "thrifty_tokens",
            "Tokens by kind: baseline (without thrifty), actual (billed), overhead",
            tokens.clone(),
        );
        let tokens_saved = Counter::default();
        registry.register(
            "thrifty_tokens_saved",
            "Baseline minus actual tokens, per request where positive",
            tokens_saved.clone(),
        );
        let compression = Histogram::new(linear_buckets(0.1, 0.1, 10));
        registry.register(
            "thrifty_compression_ratio",
            "Prompt tokens sent over prompt tokens received, per compressed request",
            compression.clone(),
        );
        let latency: Histograms<RouteLabels> = Family::new_with_constructor(latency_histogram);
        registry.register(
            "thrifty_request_duration_seconds",
            "Time from request to the end of the response, by route",
            latency.clone(),
        );
        let upstream_latency: Histograms<UpstreamLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "thrifty_upstream_duration_seconds",
            "Time spent waiting on the upstream, by upstream",
            upstream_latency.clone(),
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        registry.register(
            "thrifty_upstream_errors",
            "Upstream failures by upstream and kind",
            upstream_errors.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "thrifty_rate_limited",
            "Requests refused by the rate limiter",
            rate_limited.clone(),
        );
        let estimated = Counter::default();
        registry.register(
            "thrifty_estimated_usage",
            "Requests whose tokens were counted by thrifty, not reported by the upstream",
            estimated.clone(),
        );
        let unpriced = Counter::default();
        registry.register(
            "thrifty_unpriced_requests",
            "Requests using a model with no price",
            unpriced.clone(),
        );
        let live = Arc::new(Live {
            store,
            currency: currency.to_owned(),
            costs: Mutex::new([0; 3]),
            dropped: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        });
        registry.register_collector(Box::new(live.clone()));
        Metrics {
            registry,
            live,
            requests,
            hits,
            tokens,
            tokens_saved,
            compression,
            latency,
            upstream_latency,
            upstream_errors,
            rate_limited,
            estimated,
            unpriced,
        }
    }

    /// Counts a finished request the ledger records.
    pub fn record(&self, r: &UsageRecord) {
        self.request(
            &r.endpoint,
            &r.dialect,
            r.outcome.as_str(),
            r.status,
            r.latency_ms,
        );
        match r.outcome {
            Outcome::ExactHit => self.hit("exact"),
            Outcome::SemanticHit => self.hit("semantic"),
            Outcome::Compressed if r.baseline.prompt > 0 => {
                self.compression
                    .observe(r.actual.prompt as f64 / r.baseline.prompt as f64);
            }
            _ => {}
        }
        for (kind, tokens) in [
            ("baseline", &r.baseline),
            ("actual", &r.actual),
            ("overhead", &r.overhead),
        ] {
            self.tokens
                .get_or_create(&label(kind))
                .inc_by(tokens.total());
        }
        self.tokens_saved
            .inc_by(r.baseline.total().saturating_sub(r.actual.total()));
        if let Some(ms) = r.upstream_ms {
            let upstream = UpstreamLabels {
                upstream: r.upstream.clone(),
            };
            self.upstream_latency
                .get_or_create(&upstream)
                .observe(seconds(ms));
        }
        if r.estimated {
            self.estimated.inc();
        }
    }

    /// Counts a request no usage record describes (health, admin, passthrough, refused).
    pub fn request(&self, route: &str, dialect: &str, outcome: &str, status: u16, latency_ms: f64) {
        let labels = RequestLabels {
            route: route.to_owned(),
            dialect: dialect.to_owned(),
            outcome: outcome.to_owned(),
            status: status.to_string(),
        };
        self.requests.get_or_create(&labels).inc();
        let route = RouteLabels {
            route: route.to_owned(),
        };
        self.latency
            .get_or_create(&route)
            .observe(seconds(latency_ms));
    }

    fn hit(&self, kind: &str) {
        self.hits.get_or_create(&label(kind)).inc();
    }

    /// Adds a priced record's costs, or counts it unpriced.
    pub fn cost(&self, costs: Option<&Costs>) {
        match costs {
            Some(c) => {
                let mut sums = self.live.costs.lock();
                for (sum, pico) in sums.iter_mut().zip([c.baseline, c.actual, c.overhead]) {
                    *sum += i128::try_from(pico).unwrap_or(i128::MAX / 4);
                }
            }
            None => {
                self.unpriced.inc();
            }
        }
    }

    pub fn rate_limited(&self) {
        self.rate_limited.inc();
    }

    pub fn upstream_error(&self, upstream: &str, kind: &str) {
        let labels = UpstreamErrorLabels {
            upstream: upstream.to_owned(),
            kind: kind.to_owned(),
        };
        self.upstream_errors.get_or_create(&labels).inc();
    }

    /// Counts dropped records; returns the new total.
    pub fn dropped(&self, n: u64) -> u64 {
        self.live.dropped.fetch_add(n, Ordering::Relaxed) + n
    }

    pub fn dropped_total(&self) -> u64 {
        self.live.dropped.load(Ordering::Relaxed)
    }

    pub fn set_pending(&self, n: usize) {
        self.live
            .pending
            .store(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn pending(&self) -> u64 {
        self.live.pending.load(Ordering::Relaxed)
    }

    /// The OpenMetrics text exposition of these metrics and then `more`, `# EOF` included.
    pub fn render(&self, more: &[Registry]) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        let encoded = std::iter::once(&self.registry)
            .chain(more)
            .try_for_each(|registry| encode_registry(&mut out, registry))
            .and_then(|()| encode_eof(&mut out));
        if let Err(e) = encoded {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

fn label(kind: &str) -> KindLabels {
    KindLabels {
        kind: kind.to_owned(),
    }
}

fn seconds(ms: f64) -> f64 {
    if ms.is_finite() {
        ms.max(0.0) / 1000.0
    } else {
        0.0
    }
}
