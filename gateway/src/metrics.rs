//! Prometheus series with Kong's prometheus-plugin names and labels, plus the gateway's
//! own. Label sets are bounded by the configuration (route and service names).

use std::sync::{OnceLock, RwLock};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    requests: IntCounterVec,
    request_latency: HistogramVec,
    upstream_latency: HistogramVec,
    kong_latency: HistogramVec,
    bandwidth: IntCounterVec,
    pub target_health: IntGaugeVec,
    pub connections: IntGaugeVec,
    pub nginx_requests: IntGaugeVec,
    reloads: IntCounterVec,
    auth_failures: IntCounterVec,
    otel_spans: IntCounterVec,
    pub info: IntGaugeVec,
    /// Kong's `kong_datastore_reachable`: always 1 in DB-less mode (the declarative
    /// configuration is the datastore), as Kong reports it.
    datastore: IntGaugeVec,
    dns_failures: IntCounterVec,
}

static GLOBAL: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();

const KONG_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 200.0, 500.0, 750.0, 1000.0,
    3000.0, 6000.0,
];
const UPSTREAM_BUCKETS: &[f64] = &[
    25.0, 50.0, 80.0, 100.0, 250.0, 400.0, 700.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0, 60000.0,
];

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    let _ = r.register(Box::new(c.clone()));
    c
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    let _ = r.register(Box::new(h.clone()));
    h
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    let _ = r.register(Box::new(g.clone()));
    g
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        Metrics {
            requests: counter(
                &r,
                "kong_http_requests_total",
                "HTTP status codes per consumer/service/route in Kong",
                &[
                    "service",
                    "route",
                    "code",
                    "source",
                    "workspace",
                    "consumer",
                ],
            ),
            request_latency: histogram(
                &r,
                "kong_request_latency_ms",
                "Total latency incurred during requests for each service/route in Kong",
                &["service", "route", "workspace"],
                UPSTREAM_BUCKETS,
            ),
            upstream_latency: histogram(
                &r,
                "kong_upstream_latency_ms",
                "Latency added by upstream response for each service/route in Kong",
                &["service", "route", "workspace"],
                UPSTREAM_BUCKETS,
            ),
            kong_latency: histogram(
                &r,
                "kong_kong_latency_ms",
                "Latency added by Kong and enabled plugins for each service/route in Kong",
                &["service", "route", "workspace"],
                KONG_BUCKETS,
            ),
            bandwidth: counter(
                &r,
                "kong_bandwidth_bytes",
                "Total bandwidth (ingress/egress) throughput in bytes",
                &["service", "route", "direction", "workspace", "consumer"],
            ),
            target_health: gauge(
                &r,
                "kong_upstream_target_health",
                "Health status of targets of upstream. States = healthchecks_off|healthy|unhealthy|dns_error, value is 1 when state is populated.",
                &["upstream", "target", "address", "state", "subsystem"],
            ),
            connections: gauge(
                &r,
                "kong_nginx_connections_total",
                "Number of connections by subsystem",
                &["node_id", "subsystem", "state"],
            ),
            nginx_requests: gauge(
                &r,
                "kong_nginx_requests_total",
                "Number of requests total",
                &["node_id", "subsystem"],
            ),
            reloads: counter(
                &r,
                "gateway_config_reloads_total",
                "Configuration reloads by result",
                &["result"],
            ),
            auth_failures: counter(
                &r,
                "gateway_auth_failures_total",
                "Requests refused by an authentication or authorization plugin, by reason",
                &["route", "plugin", "reason"],
            ),
            otel_spans: counter(
                &r,
                "gateway_otel_spans_total",
                "Spans handed to the OTLP exporter, by result (exported or dropped)",
                &["result"],
            ),
            info: gauge(
                &r,
                "kong_node_info",
                "Kong Node metadata information",
                &["node_id", "version"],
            ),
            datastore: gauge(
                &r,
                "kong_datastore_reachable",
                "Datastore reachable from Kong, 0 is unreachable",
                &[],
            ),
            dns_failures: counter(
                &r,
                "gateway_dns_resolution_failures_total",
                "Background resolutions of upstream names that failed, by target",
                &["target"],
            ),
            registry: r,
        }
        .with_rate_limiting()
        .with_zeroed_counters()
    }

    /// One failed background resolution of an upstream name.
    pub fn dns_failure(&self, target: &str) {
        self.dns_failures.with_label_values(&[target]).inc();
    }

    /// Counters whose absence would hide the first increment from `increase()`/`rate()`.
    fn with_zeroed_counters(self) -> Metrics {
        for r in ["success", "failure"] {
            self.reloads.with_label_values(&[r]);
        }
        for r in ["exported", "dropped"] {
            self.otel_spans.with_label_values(&[r]);
        }
        self.datastore.with_label_values(&[] as &[&str]).set(1);
        self
    }

    /// Adds the rate-limiting series (process-wide, see [`rate_limiting`]) to this registry.
    fn with_rate_limiting(self) -> Metrics {
        let rl = rate_limiting();
        let _ = self.registry.register(Box::new(rl.decisions.clone()));
        let _ = self.registry.register(Box::new(rl.redis_errors.clone()));
        let _ = self.registry.register(Box::new(rl.redis_latency.clone()));
        let _ = self.registry.register(Box::new(rl.redis_up.clone()));
        self
    }

    /// The per-request series of one (service, route, consumer), resolved once so that
    /// recording a request is a handful of atomic adds. Only the series whose flag is on
    /// are created (Kong exports none of them by default).
    pub fn route_series(
        &'static self,
        service: &str,
        route: &str,
        consumer: &str,
        latency: bool,
        bandwidth: bool,
    ) -> RouteSeries {
        let labels = [service, route, "default"];
        RouteSeries {
            metrics: self,
            service: service.to_string(),
            route: route.to_string(),
            consumer: consumer.to_string(),
            latency: latency.then(|| {
                [
                    self.request_latency.with_label_values(&labels),
                    self.upstream_latency.with_label_values(&labels),
                    self.kong_latency.with_label_values(&labels),
                ]
            }),
            bandwidth: bandwidth.then(|| {
                [
                    self.bandwidth
                        .with_label_values(&[service, route, "ingress", "default", consumer]),
                    self.bandwidth
                        .with_label_values(&[service, route, "egress", "default", consumer]),
                ]
            }),
            codes: RwLock::new(SmallKeyMap::default()),
        }
    }

    /// The process-wide metrics (one registry, served on the status listener).
    pub fn global() -> &'static Metrics {
        GLOBAL.get_or_init(Metrics::new)
    }

    pub fn auth_failure(&self, route: &str, plugin: &str, reason: &str) {
        self.auth_failures
            .with_label_values(&[route, plugin, reason])
            .inc();
    }

    pub fn otel_dropped(&self, n: u64) {
        self.otel_spans.with_label_values(&["dropped"]).inc_by(n);
    }

    pub fn otel_exported(&self, n: u64) {
        self.otel_spans.with_label_values(&["exported"]).inc_by(n);
    }

    pub fn reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// The per-request metric caches are keyed by small integers from the configuration
/// (indexes, status codes): Fx hashing, one multiply per word instead of SipHash.
pub type SmallKeyMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// Pre-resolved series of one (service, route, consumer); see [`Metrics::route_series`].
pub struct RouteSeries {
    metrics: &'static Metrics,
    service: String,
    route: String,
    consumer: String,
    /// request, upstream and gateway latency histograms
    latency: Option<[Histogram; 3]>,
    /// ingress and egress byte counters
    bandwidth: Option<[IntCounter; 2]>,
    /// `kong_http_requests_total` by (status, answered by the gateway itself)
    codes: RwLock<SmallKeyMap<(u16, bool), IntCounter>>,
}

impl RouteSeries {
    pub fn status(&self, status: u16, local: bool) {
        let key = (status, local);
        if let Ok(codes) = self.codes.read()
            && let Some(c) = codes.get(&key)
        {
            c.inc();
            return;
        }
        let code = status.to_string();
        let source = if local { "kong" } else { "service" };
        let c = self.metrics.requests.with_label_values(&[
            &self.service,
            &self.route,
            &code,
            source,
            "default",
            &self.consumer,
        ]);
        c.inc();
        if let Ok(mut codes) = self.codes.write() {
            codes.insert(key, c);
        }
    }

    pub fn latency(&self, total_ms: u64, upstream_ms: Option<u64>) {
        if let Some([request, upstream, gateway]) = &self.latency {
            request.observe(total_ms as f64);
            if let Some(u) = upstream_ms {
                upstream.observe(u as f64);
            }
            gateway.observe(total_ms.saturating_sub(upstream_ms.unwrap_or(0)) as f64);
        }
    }

    pub fn bandwidth(&self, bytes_in: u64, bytes_out: u64) {
        if let Some([ingress, egress]) = &self.bandwidth {
            ingress.inc_by(bytes_in);
            egress.inc_by(bytes_out);
        }
    }
}

/// Series of the rate-limiting plugin. Plugins are built without a handle to the
/// gateway's [`Metrics`], so these live process-wide and every registry exposes them.
pub struct RateLimitMetrics {
    /// Decisions by route, tier and outcome
    /// (allowed|rejected|fallback_allowed|fallback_rejected|error).
    pub decisions: IntCounterVec,
    /// Redis failures by kind (connect|timeout|command|reply|circuit_open).
    pub redis_errors: IntCounterVec,
    /// Time of one rate-limit round trip to Redis.
    pub redis_latency: Histogram,
    /// 1 while the last Redis call succeeded, 0 after a failure.
    pub redis_up: IntGauge,
}

const REDIS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The process-wide rate-limiting series.
pub fn rate_limiting() -> &'static RateLimitMetrics {
    static RL: OnceLock<RateLimitMetrics> = OnceLock::new();
    RL.get_or_init(|| {
        let decisions = IntCounterVec::new(
            Opts::new(
                "gateway_ratelimit_decisions_total",
                "Rate-limiting decisions by route, tier and outcome",
            ),
            &["route", "tier", "outcome"],
        );
        let redis_errors = IntCounterVec::new(
            Opts::new(
                "gateway_redis_errors_total",
                "Rate-limiting Redis failures by kind",
            ),
            &["kind"],
        );
        let redis_latency = Histogram::with_opts(
            HistogramOpts::new(
                "gateway_redis_latency_seconds",
                "Latency of rate-limiting Redis calls",
            )
            .buckets(REDIS_BUCKETS.to_vec()),
        );
        let redis_up = IntGauge::new(
            "gateway_redis_up",
            "1 while the rate-limiting Redis answers, 0 after a failure",
        );
        match (decisions, redis_errors, redis_latency, redis_up) {
            (Ok(decisions), Ok(redis_errors), Ok(redis_latency), Ok(redis_up)) => {
                RateLimitMetrics {
                    decisions,
                    redis_errors,
                    redis_latency,
                    redis_up,
                }
            }
            _ => panic!("rate-limiting metric definitions are invalid"),
        }
    })
}
