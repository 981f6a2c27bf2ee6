//! Every Prometheus metric of hookgate, registered once in one registry.
//!
//! Label values are bounded by construction: `route` is a configured route name (or `none`),
//! `outcome` is an [`Outcome`]. Handles are resolved per route at start, so recording a request
//! costs no label hashing on the hot path.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry,
};

/// How the gateway disposed of a request: the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Verified and handed to the upstream, which answered (any status).
    Forwarded,
    InvalidSignature,
    MissingSignature,
    BodyTooLarge,
    /// The body did not arrive within the route's `body_timeout`.
    BodyTimeout,
    /// The request was malformed or the client failed while sending it.
    BadRequest,
    NoRoute,
    MethodNotAllowed,
    /// The upstream could not be reached, or reset or broke the exchange.
    UpstreamError,
    UpstreamTimeout,
    /// A delivery ID already committed: answered 200 without forwarding.
    Duplicate,
    /// A delivery ID whose first delivery is still in flight: answered 409.
    InFlight,
    /// The route deduplicates and the request carried no delivery ID.
    MissingDeliveryId,
    /// The payload's timestamp is outside the route's replay window.
    StaleEvent,
    /// The sender's tier limit was exceeded.
    RateLimited,
    /// The per-client-IP limit on unverified requests was exceeded.
    IpLimited,
    /// The dedup or rate-limit state could not be reached (fail closed).
    StateUnavailable,
    /// An event the route's `events.allow` does not list: answered 200, not forwarded.
    Filtered,
    /// A payload that is not JSON or fails its event's schema: answered 422.
    InvalidPayload,
}

impl Outcome {
    pub const ALL: [Outcome; 19] = [
        Outcome::Forwarded,
        Outcome::InvalidSignature,
        Outcome::MissingSignature,
        Outcome::BodyTooLarge,
        Outcome::BodyTimeout,
        Outcome::BadRequest,
        Outcome::NoRoute,
        Outcome::MethodNotAllowed,
        Outcome::UpstreamError,
        Outcome::UpstreamTimeout,
        Outcome::Duplicate,
        Outcome::InFlight,
        Outcome::MissingDeliveryId,
        Outcome::StaleEvent,
        Outcome::RateLimited,
        Outcome::IpLimited,
        Outcome::StateUnavailable,
        Outcome::Filtered,
        Outcome::InvalidPayload,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::InvalidSignature => "invalid_signature",
            Outcome::MissingSignature => "missing_signature",
            Outcome::BodyTooLarge => "body_too_large",
            Outcome::BodyTimeout => "body_timeout",
            Outcome::BadRequest => "bad_request",
            Outcome::NoRoute => "no_route",
            Outcome::MethodNotAllowed => "method_not_allowed",
            Outcome::UpstreamError => "upstream_error",
            Outcome::UpstreamTimeout => "upstream_timeout",
            Outcome::Duplicate => "duplicate",
            Outcome::InFlight => "in_flight",
            Outcome::MissingDeliveryId => "missing_delivery_id",
            Outcome::StaleEvent => "stale_event",
            Outcome::RateLimited => "rate_limited",
            Outcome::IpLimited => "ip_limited",
            Outcome::StateUnavailable => "state_unavailable",
            Outcome::Filtered => "filtered",
            Outcome::InvalidPayload => "invalid_payload",
        }
    }

    /// Position in [`Outcome::ALL`] (declaration order).
    fn index(self) -> usize {
        self as usize
    }
}

/// The route label used for requests that matched no route.
pub const NO_ROUTE: &str = "none";

/// All metrics, and the registry `/metrics` serves.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    dedup_entries: IntGaugeVec,
    dedup_evictions: IntCounterVec,
    state_errors: IntCounterVec,
    state_duration: HistogramVec,
    state_batch_ops: HistogramVec,
    config_reloads: IntCounterVec,
    config_last_success: prometheus::Gauge,
}

/// The `result` label of `hookgate_config_reloads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// The new configuration is serving.
    Success,
    /// The new configuration was refused; the last good one keeps serving.
    Failure,
}

impl ReloadResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

/// Pre-resolved handles for one route label.
pub struct RouteMetrics {
    outcomes: Vec<IntCounter>,
    request_duration: Histogram,
    upstream_duration: Histogram,
    /// `hookgate_dedup_entries{route}`: records held by the route's dedup store.
    pub dedup_entries: IntGauge,
    /// `hookgate_dedup_evictions_total{route}`: records evicted because the store was full.
    pub dedup_evictions: IntCounter,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("hookgate_requests_total", "Requests by route and outcome"),
            &["route", "outcome"],
        )
        .expect("valid metric");
        // 100 µs .. ~52 s: covers gateway-only answers and slow upstreams.
        let buckets = exponential_buckets(0.0001, 2.0, 20).expect("valid buckets");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "hookgate_request_duration_seconds",
                "Time from request header to the end of the answer, by route",
            )
            .buckets(buckets.clone()),
            &["route"],
        )
        .expect("valid metric");
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "hookgate_upstream_duration_seconds",
                "Time from sending to the upstream until its response header, by route",
            )
            .buckets(buckets),
            &["route"],
        )
        .expect("valid metric");
        let build_info = IntGaugeVec::new(
            Opts::new("hookgate_build_info", "Build information; always 1"),
            &["version"],
        )
        .expect("valid metric");
        let dedup_entries = IntGaugeVec::new(
            Opts::new(
                "hookgate_dedup_entries",
                "Delivery records held by the route's dedup store (in flight and delivered)",
            ),
            &["route"],
        )
        .expect("valid metric");
        let dedup_evictions = IntCounterVec::new(
            Opts::new(
                "hookgate_dedup_evictions_total",
                "Delivery records evicted before their TTL because the route's store was full",
            ),
            &["route"],
        )
        .expect("valid metric");
        let state_errors = IntCounterVec::new(
            Opts::new(
                "hookgate_state_errors_total",
                "Calls to the shared state backend that failed or timed out, by backend and operation",
            ),
            &["backend", "op"],
        )
        .expect("valid metric");
        // 50 µs .. ~1.6 s: a local Redis answers in well under a millisecond.
        let state_duration = HistogramVec::new(
            HistogramOpts::new(
                "hookgate_state_duration_seconds",
                "Time of one call to the shared state backend (one round trip), by backend and operation",
            )
            .buckets(exponential_buckets(0.00005, 2.0, 16).expect("valid buckets")),
            &["backend", "op"],
        )
        .expect("valid metric");
        // 1 .. 128: the Redis backend's batches hold at most 128 operations.
        let state_batch_ops = HistogramVec::new(
            HistogramOpts::new(
                "hookgate_state_batch_ops",
                "Operations (admissions, commits, releases) sent together in one call to the shared state backend, by backend",
            )
            .buckets(exponential_buckets(1.0, 2.0, 8).expect("valid buckets")),
            &["backend"],
        )
        .expect("valid metric");
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "hookgate_config_reloads_total",
                "Configuration reloads (SIGHUP or a changed file), by result",
            ),
            &["result"],
        )
        .expect("valid metric");
        for result in [ReloadResult::Success, ReloadResult::Failure] {
            config_reloads.with_label_values(&[result.as_str()]);
        }
        let config_last_success = prometheus::Gauge::new(
            "hookgate_config_last_reload_success_timestamp_seconds",
            "Unix time at which the serving configuration was loaded (at start or by a reload)",
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(build_info),
            Box::new(dedup_entries.clone()),
            Box::new(dedup_evictions.clone()),
            Box::new(state_errors.clone()),
            Box::new(state_duration.clone()),
            Box::new(state_batch_ops.clone()),
            Box::new(config_reloads.clone()),
            Box::new(config_last_success.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Self {
            registry,
            requests,
            request_duration,
            upstream_duration,
            dedup_entries,
            dedup_evictions,
            state_errors,
            state_duration,
            state_batch_ops,
            config_reloads,
            config_last_success,
        }
    }

    /// Counts a reload attempt; a success also sets the last-success timestamp to now.
    pub fn record_reload(&self, result: ReloadResult) {
        self.config_reloads
            .with_label_values(&[result.as_str()])
            .inc();
        if result == ReloadResult::Success {
            self.record_config_loaded();
        }
    }

    /// Sets `hookgate_config_last_reload_success_timestamp_seconds` to now (the config in use
    /// was just loaded).
    pub fn record_config_loaded(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.config_last_success.set(now.as_secs_f64());
    }

    /// Handles for the calls to the shared state backend `backend` (`redis`), one per
    /// [`StateOp`], created at zero.
    pub fn state(&self, backend: &str) -> StateMetrics {
        StateMetrics {
            errors: StateOp::ALL
                .iter()
                .map(|op| self.state_errors.with_label_values(&[backend, op.as_str()]))
                .collect(),
            duration: StateOp::ALL
                .iter()
                .map(|op| {
                    self.state_duration
                        .with_label_values(&[backend, op.as_str()])
                })
                .collect(),
            batch_ops: self.state_batch_ops.with_label_values(&[backend]),
        }
    }

    /// Handles for `route` (a configured route name or [`NO_ROUTE`]). Every outcome counter
    /// is created at zero, so dashboards see the series before the first event.
    pub fn route(&self, route: &str) -> RouteMetrics {
        RouteMetrics {
            outcomes: Outcome::ALL
                .iter()
                .map(|o| self.requests.with_label_values(&[route, o.as_str()]))
                .collect(),
            request_duration: self.request_duration.with_label_values(&[route]),
            upstream_duration: self.upstream_duration.with_label_values(&[route]),
            dedup_entries: self.dedup_entries.with_label_values(&[route]),
            dedup_evictions: self.dedup_evictions.with_label_values(&[route]),
        }
    }

    /// The registry, for the admin endpoint and for metrics other modules add.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut out)
            .expect("text encoding of gathered metrics");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// One kind of call to the shared state backend: the `op` label of the state metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateOp {
    /// The tier limit and dedup claim of a verified request, together (one round trip).
    Admit,
    /// A rate-limit check alone (the `unverified_per_ip` limit).
    Check,
    /// A dedup claim alone.
    Claim,
    /// A claim committed after a 2xx.
    Commit,
    /// A claim released after a failed delivery.
    Release,
    /// The readiness probe (and loading the scripts at start).
    Ping,
}

impl StateOp {
    pub const ALL: [StateOp; 6] = [
        StateOp::Admit,
        StateOp::Check,
        StateOp::Claim,
        StateOp::Commit,
        StateOp::Release,
        StateOp::Ping,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            StateOp::Admit => "admit",
            StateOp::Check => "check",
            StateOp::Claim => "claim",
            StateOp::Commit => "commit",
            StateOp::Release => "release",
            StateOp::Ping => "ping",
        }
    }
}

/// Pre-resolved handles for one state backend label.
#[derive(Clone)]
pub struct StateMetrics {
    errors: Vec<IntCounter>,
    duration: Vec<Histogram>,
    batch_ops: Histogram,
}

impl StateMetrics {
    /// Records one call: its duration, and an error if it failed or timed out.
    pub fn record(&self, op: StateOp, seconds: f64, ok: bool) {
        self.duration[op as usize].observe(seconds);
        if !ok {
            self.errors[op as usize].inc();
        }
    }

    /// Records one batch sent to the backend: how many operations it carried.
    pub fn record_batch(&self, ops: usize) {
        self.batch_ops.observe(ops as f64);
    }
}

impl RouteMetrics {
    /// Counts one finished request and its total duration.
    pub fn record(&self, outcome: Outcome, seconds: f64) {
        self.outcomes[outcome.index()].inc();
        self.request_duration.observe(seconds);
    }

    /// Observes the upstream's time to respond.
    pub fn record_upstream(&self, seconds: f64) {
        self.upstream_duration.observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_outcomes_in_declaration_order() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), i);
        }
    }

    #[test]
    fn counts_appear_with_bounded_labels() {
        let m = Metrics::new();
        let r = m.route("dossiers");
        r.record(Outcome::Forwarded, 0.01);
        r.record(Outcome::Forwarded, 0.01);
        m.route(NO_ROUTE).record(Outcome::NoRoute, 0.0);
        let text = m.render();
        assert!(text.contains(r#"hookgate_requests_total{outcome="forwarded",route="dossiers"} 2"#));
        assert!(text.contains(r#"hookgate_requests_total{outcome="no_route",route="none"} 1"#));
        assert!(text.contains(
            r#"hookgate_requests_total{outcome="invalid_signature",route="dossiers"} 0"#
        ));
        assert!(text.contains("hookgate_build_info{version="));
    }

    #[test]
    fn state_calls_are_counted_per_backend_and_op() {
        let m = Metrics::new();
        let s = m.state("redis");
        s.record(StateOp::Admit, 0.0002, true);
        s.record(StateOp::Admit, 0.05, false);
        s.record_batch(1);
        s.record_batch(3);
        let text = m.render();
        assert!(text.contains(r#"hookgate_state_errors_total{backend="redis",op="admit"} 1"#));
        assert!(text.contains(r#"hookgate_state_errors_total{backend="redis",op="commit"} 0"#));
        assert!(
            text.contains(r#"hookgate_state_duration_seconds_count{backend="redis",op="admit"} 2"#)
        );
        assert!(text.contains(r#"hookgate_state_batch_ops_bucket{backend="redis",le="2"} 1"#));
        assert!(text.contains(r#"hookgate_state_batch_ops_sum{backend="redis"} 4"#));
        for (i, op) in StateOp::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i);
        }
    }
}
