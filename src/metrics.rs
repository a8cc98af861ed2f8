//! Prometheus metrics, served as text on the admin port's `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReviewLabels {
    operation: &'static str,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViolationLabels {
    rule: &'static str,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: &'static str,
}

struct Inner {
    registry: Registry,
    reviews: Family<ReviewLabels, Counter>,
    violations: Family<ViolationLabels, Counter>,
    duration: Histogram,
    lookup_errors: Family<ResourceLabels, Counter>,
    watch_errors: Family<ResourceLabels, Counter>,
    cached_objects: Family<ResourceLabels, Gauge>,
    cache_synced: Family<ResourceLabels, Gauge>,
    undecodable: Family<ResourceLabels, Counter>,
    confirmations: Family<OutcomeLabels, Counter>,
    malformed: Counter,
    certificate_expiry: Gauge,
    listener: crate::listener::ListenerMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The name and help of each metric, as `/metrics` shows them: one line each.
#[rustfmt::skip]
mod described {
    pub const REVIEWS: (&str, &str) = ("reviews", "Admission reviews answered, by operation and verdict (allowed, warned, denied, skipped, failed-open, failed-closed)");
    pub const VIOLATIONS: (&str, &str) = ("violations", "Rule violations found, by rule and action (deny or warn)");
    pub const DURATION: (&str, &str) = ("review_duration_seconds", "Time to answer a parsed review");
    pub const LOOKUP_ERRORS: (&str, &str) = ("api_lookup_errors", "Reviews whose facts could not be read from the API server, by resource (or timeout)");
    pub const WATCH_ERRORS: (&str, &str) = ("watch_errors", "Errors of the cache watches, by resource");
    pub const CACHED_OBJECTS: (&str, &str) = ("cached_objects", "Objects held in the caches, by resource");
    pub const CACHE_SYNCED: (&str, &str) = ("cache_synced", "1 while a cache is served from its watch, 0 while lookups of that resource go to the API server (never listed yet, or its watch failed and has not delivered an event since)");
    pub const UNDECODABLE: (&str, &str) = ("watch_undecodable_objects", "Objects a watch delivered that could not be read (skipped, the watch goes on), by resource");
    pub const CONFIRMATIONS: (&str, &str) = ("denial_confirmations", "Denials based on cached facts, re-checked against the API server: confirmed, or overturned (the cache lagged)");
    pub const MALFORMED: (&str, &str) = ("malformed_reviews", "Bodies refused with 400 because they are not a valid AdmissionReview");
    pub const CERTIFICATE_EXPIRY: (&str, &str) = ("certificate_expiry_timestamp_seconds", "When the serving certificate being served expires (its notAfter), in seconds since the epoch; updated when it is reloaded");
}
use described::*;

// From 50µs (a review answered from memory) to 5s (past any sane lookup timeout).
const DURATION_BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

/// `metric`, registered in `registry` as `name` with `help`.
fn registered<M: Metric + Clone>(
    registry: &mut Registry,
    (name, help): (&str, &str),
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// The series of `resource` in `family`, created (at 0) if it is new.
fn of_resource<M: Clone>(family: &Family<ResourceLabels, M>, resource: &'static str) -> M {
    family.get_or_create(&ResourceLabels { resource }).clone()
}

/// Cheap to clone: every clone records into the same registry.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pvc_clone_guard");
        let reviews = registered(&mut registry, REVIEWS, Family::default());
        let violations = registered(&mut registry, VIOLATIONS, Family::default());
        let duration = registered(&mut registry, DURATION, Histogram::new(DURATION_BUCKETS));
        let lookup_errors = registered(&mut registry, LOOKUP_ERRORS, Family::default());
        let watch_errors = registered(&mut registry, WATCH_ERRORS, Family::default());
        let cached_objects = registered(&mut registry, CACHED_OBJECTS, Family::default());
        let cache_synced = registered(&mut registry, CACHE_SYNCED, Family::default());
        let undecodable = registered(&mut registry, UNDECODABLE, Family::default());
        let confirmations = registered(&mut registry, CONFIRMATIONS, Family::default());
        let malformed = registered(&mut registry, MALFORMED, Counter::default());
        let certificate_expiry = registered(&mut registry, CERTIFICATE_EXPIRY, Gauge::default());
        // Series that alerts take `increase()` of exist from the start, at 0, so that their
        // first increment is counted (a series born at 1 shows no increase).
        for verdict in [
            "allowed",
            "warned",
            "denied",
            "skipped",
            "failed-open",
            "failed-closed",
        ] {
            drop(reviews.get_or_create(&ReviewLabels {
                operation: "CREATE",
                verdict,
            }));
        }
        let listener = crate::listener::ListenerMetrics::register(&mut registry);
        Metrics(Arc::new(Inner {
            registry,
            reviews,
            violations,
            duration,
            lookup_errors,
            watch_errors,
            cached_objects,
            cache_synced,
            undecodable,
            confirmations,
            malformed,
            certificate_expiry,
            listener,
        }))
    }

    pub fn record_review(&self, operation: &'static str, verdict: &'static str, elapsed: Duration) {
        self.0
            .reviews
            .get_or_create(&ReviewLabels { operation, verdict })
            .inc();
        self.0.duration.observe(elapsed.as_secs_f64());
    }

    pub fn record_violation(&self, rule: &'static str, action: &'static str) {
        self.0
            .violations
            .get_or_create(&ViolationLabels { rule, action })
            .inc();
    }

    pub fn record_lookup_error(&self, resource: &'static str) {
        of_resource(&self.0.lookup_errors, resource).inc();
    }

    pub fn record_watch_error(&self, resource: &'static str) {
        of_resource(&self.0.watch_errors, resource).inc();
    }

    pub fn set_cached_objects(&self, resource: &'static str, count: usize) {
        of_resource(&self.0.cached_objects, resource).set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Creates the watch error series of `resource` at 0 (see [`Metrics::new`]).
    pub fn watch_started(&self, resource: &'static str) {
        drop(of_resource(&self.0.watch_errors, resource));
    }

    pub fn set_cache_synced(&self, resource: &'static str, synced: bool) {
        of_resource(&self.0.cache_synced, resource).set(i64::from(synced));
    }

    pub fn record_undecodable(&self, resource: &'static str) {
        of_resource(&self.0.undecodable, resource).inc();
    }

    /// `confirmed` or `overturned`.
    pub fn record_confirmation(&self, outcome: &'static str) {
        self.0
            .confirmations
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// The serving certificate's notAfter, in seconds since the epoch.
    pub fn set_certificate_expiry(&self, unix_seconds: i64) {
        self.0.certificate_expiry.set(unix_seconds);
    }

    pub fn record_malformed(&self) {
        self.0.malformed.inc();
    }

    /// The review port's connection metrics.
    pub fn listener(&self) -> &crate::listener::ListenerMetrics {
        &self.0.listener
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.0.registry);
        text
    }
}
