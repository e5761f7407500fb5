//! The agent's own metrics, served on `/metrics`.

use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

/// All self-metrics. Cheap to clone (the vectors are reference counted).
#[derive(Clone)]
pub struct AgentMetrics {
    pub registry: Registry,
    pub samples_appended: IntCounterVec,
    pub wal_bytes: IntGaugeVec,
    pub wal_segments: IntGaugeVec,
    pub wal_dropped: IntCounterVec,
    pub wal_corruptions: IntCounterVec,
    pub wal_repaired_bytes: IntCounterVec,
    pub wal_replayed_samples: IntCounterVec,
    pub rw_sent: IntCounterVec,
    pub rw_rejected: IntCounterVec,
    pub rw_requests: IntCounterVec,
    pub rw_retries: IntCounterVec,
    pub rw_highest_sent_ts: GaugeVec,
    pub wal_highest_appended_ts: GaugeVec,
    pub scrapes: IntCounterVec,
    pub scrape_failures: IntCounterVec,
    pub build_info: IntGaugeVec,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    r.register(Box::new(c.clone()))
        .unwrap_or_else(|e| panic!("register {name}: {e}"));
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    r.register(Box::new(g.clone()))
        .unwrap_or_else(|e| panic!("register {name}: {e}"));
    g
}

fn fgauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    r.register(Box::new(g.clone()))
        .unwrap_or_else(|e| panic!("register {name}: {e}"));
    g
}

impl AgentMetrics {
    /// Creates and registers every self-metric. Names are static, so registration cannot fail
    /// at runtime except through a programming error (duplicate name), which panics at start-up.
    pub fn new() -> Self {
        let r = Registry::new();
        let m = AgentMetrics {
            samples_appended: counter(
                &r,
                "metrics_agent_wal_samples_appended_total",
                "Samples made durable in the write-ahead log (accepted).",
                &["remote"],
            ),
            wal_bytes: gauge(
                &r,
                "metrics_agent_wal_bytes",
                "Bytes on disk in WAL segments.",
                &["remote"],
            ),
            wal_segments: gauge(
                &r,
                "metrics_agent_wal_segments",
                "WAL segment files on disk.",
                &["remote"],
            ),
            wal_dropped: counter(
                &r,
                "metrics_agent_wal_dropped_samples_total",
                "Samples dropped from the WAL before being sent (reason: wal_full, too_old, corrupt).",
                &["remote", "reason"],
            ),
            wal_corruptions: counter(
                &r,
                "metrics_agent_wal_corruptions_total",
                "Corrupt WAL records or segments found (checksum or framing errors).",
                &["remote"],
            ),
            wal_repaired_bytes: counter(
                &r,
                "metrics_agent_wal_repaired_bytes_total",
                "Bytes of torn writes truncated from the WAL tail at start-up.",
                &["remote"],
            ),
            wal_replayed_samples: counter(
                &r,
                "metrics_agent_wal_replayed_samples_total",
                "Unsent samples found in the WAL at start-up and queued for sending.",
                &["remote"],
            ),
            rw_sent: counter(
                &r,
                "metrics_agent_remote_write_samples_sent_total",
                "Samples acknowledged by the remote-write receiver (2xx).",
                &["remote"],
            ),
            rw_rejected: counter(
                &r,
                "metrics_agent_remote_write_samples_rejected_total",
                "Samples in requests rejected with a non-retryable 4xx.",
                &["remote"],
            ),
            rw_requests: counter(
                &r,
                "metrics_agent_remote_write_requests_total",
                "Remote-write HTTP requests by status code (or 'error' for network errors).",
                &["remote", "code"],
            ),
            rw_retries: counter(
                &r,
                "metrics_agent_remote_write_retries_total",
                "Remote-write requests retried after 5xx, 429 or a network error.",
                &["remote"],
            ),
            rw_highest_sent_ts: fgauge(
                &r,
                "metrics_agent_remote_write_highest_sent_timestamp_seconds",
                "Newest sample timestamp acknowledged by the receiver.",
                &["remote"],
            ),
            wal_highest_appended_ts: fgauge(
                &r,
                "metrics_agent_wal_highest_appended_timestamp_seconds",
                "Newest sample timestamp written to the WAL.",
                &["remote"],
            ),
            scrapes: counter(
                &r,
                "metrics_agent_scrapes_total",
                "Scrapes and collections run.",
                &["job"],
            ),
            scrape_failures: counter(
                &r,
                "metrics_agent_scrape_failures_total",
                "Scrapes and collections that failed (up=0).",
                &["job"],
            ),
            build_info: gauge(
                &r,
                "metrics_agent_build_info",
                "Build information.",
                &["version"],
            ),
            registry: r,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        m
    }

    /// Renders the registry in the Prometheus text format.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!("encoding self-metrics: {e}");
        }
        buf
    }
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}
