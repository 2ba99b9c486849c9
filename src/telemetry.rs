//! Logs and metrics. Logs are JSON lines on standard error (standard output is for command
//! output such as `events tail`); metrics are kept in a Prometheus registry that `/metrics`
//! renders.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use tracing_subscriber::EnvFilter;

pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AggregateLabels {
    pub aggregate_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubscriptionLabels {
    pub subscription: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventTypeLabels {
    pub aggregate_type: String,
    pub event_type: String,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// The process's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub http_duration: Family<HttpLabels, Histogram, fn() -> Histogram>,
    pub events_appended: Family<AggregateLabels, Counter>,
    pub subscription_lag_events: Family<SubscriptionLabels, Gauge>,
    pub subscription_lag_seconds: Family<SubscriptionLabels, Gauge<f64, AtomicU64>>,
    pub subscription_active: Family<SubscriptionLabels, Gauge>,
    pub subscription_failures: Family<SubscriptionLabels, Gauge>,
    pub log_events: Family<EventTypeLabels, Gauge>,
    pub executions: Family<ExecutionLabels, Counter>,
    /// From the approval to the recorded success.
    pub execution_latency: Histogram,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExecutionLabels {
    pub adapter: String,
    /// `succeeded`, `failed`, `retrying`, `uncertain` or `deferred`.
    pub result: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("execops");
        let http_duration =
            Family::<HttpLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route and status",
            http_duration.clone(),
        );
        let events_appended = Family::<AggregateLabels, Counter>::default();
        registry.register(
            "events_appended",
            "Events appended by this process",
            events_appended.clone(),
        );
        let subscription_lag_events = Family::<SubscriptionLabels, Gauge>::default();
        registry.register(
            "subscription_lag_events",
            "Committed events a subscription has not applied yet (capped)",
            subscription_lag_events.clone(),
        );
        let subscription_lag_seconds =
            Family::<SubscriptionLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "subscription_lag_seconds",
            "Age of the oldest event a subscription has not applied yet",
            subscription_lag_seconds.clone(),
        );
        let subscription_active = Family::<SubscriptionLabels, Gauge>::default();
        registry.register(
            "subscription_active",
            "1 when this process runs the subscription, 0 when it stands by",
            subscription_active.clone(),
        );
        let subscription_failures = Family::<SubscriptionLabels, Gauge>::default();
        registry.register(
            "subscription_failures",
            "Times the subscription stopped on an error in this process",
            subscription_failures.clone(),
        );
        let log_events = Family::<EventTypeLabels, Gauge>::default();
        registry.register(
            "log_events",
            "Events in the log by type, as projected by the event_counts subscription",
            log_events.clone(),
        );
        let executions = Family::<ExecutionLabels, Counter>::default();
        registry.register(
            "executions",
            "Execution attempts by adapter and result",
            executions.clone(),
        );
        // 10 ms to about 80 min: approvals may wait on guardrails.
        let execution_latency = Histogram::new(exponential_buckets(0.01, 2.0, 20));
        registry.register(
            "execution_latency_seconds",
            "Time from a proposal's approval to its recorded successful execution",
            execution_latency.clone(),
        );
        Self {
            executions,
            execution_latency,
            registry: Arc::new(registry),
            http_duration,
            events_appended,
            subscription_lag_events,
            subscription_lag_seconds,
            subscription_active,
            subscription_failures,
            log_events,
        }
    }

    pub fn event_appended(&self, aggregate_type: &str) {
        self.events_appended_by(aggregate_type, 1);
    }

    pub fn events_appended_by(&self, aggregate_type: &str, count: u64) {
        if count == 0 {
            return;
        }
        self.events_appended
            .get_or_create(&AggregateLabels {
                aggregate_type: aggregate_type.to_string(),
            })
            .inc_by(count);
    }

    pub fn execution(&self, adapter: &str, result: &str) {
        self.executions
            .get_or_create(&ExecutionLabels {
                adapter: adapter.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// The Prometheus text exposition of everything registered.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
