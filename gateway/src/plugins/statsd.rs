//! Kong's `statsd` (3.9 OSS): per-request metrics with Kong's names
//! (`kong.service.<name>.request.count:1|c`, `...latency:<ms>|ms`, ...), Kong's default
//! metric list, tags in the four styles Kong knows, sent over UDP (one datagram per
//! metric, or packed up to `udp_packet_size`) or TCP (`use_tcp`, newline-separated) by a
//! background task through Kong's plugin queue: the request never waits on the network.
//!
//! `shdict_usage` is accepted and sends nothing (the gateway has no nginx shared dicts).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::log_queue::{Deliver, DeliveryError, LogQueue, QueueConfig, legacy_warnings};
use super::log_serializer::{self, DEFAULT_WORKSPACE_ID};
use super::{BuildContext, BuildError, Plugin, SpecError};
use crate::core::state::RequestState;

const METRIC_NAMES: &[&str] = &[
    "kong_latency",
    "latency",
    "request_count",
    "request_per_user",
    "request_size",
    "response_size",
    "status_count",
    "status_count_per_user",
    "unique_users",
    "upstream_latency",
    "status_count_per_workspace",
    "status_count_per_user_per_route",
    "shdict_usage",
];

const STAT_TYPES: &[&str] = &["counter", "gauge", "histogram", "meter", "set", "timer"];
const CONSUMER_IDENTIFIERS: &[&str] = &["consumer_id", "custom_id", "username"];
const SERVICE_IDENTIFIERS: &[&str] = &[
    "service_id",
    "service_name",
    "service_host",
    "service_name_or_host",
];
const WORKSPACE_IDENTIFIERS: &[&str] = &["workspace_id", "workspace_name"];
const TAG_STYLES: &[&str] = &["dogstatsd", "influxdb", "librato", "signalfx"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    pub name: String,
    pub stat_type: String,
    pub sample_rate: Option<f64>,
    pub consumer_identifier: Option<String>,
    pub service_identifier: Option<String>,
    pub workspace_identifier: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "d_host")]
    pub host: String,
    #[serde(default = "d_port")]
    pub port: u16,
    #[serde(default = "d_prefix")]
    pub prefix: String,
    #[serde(default = "default_metrics")]
    pub metrics: Vec<Metric>,
    #[serde(default)]
    pub allow_status_codes: Option<Vec<String>>,
    #[serde(default)]
    pub udp_packet_size: f64,
    #[serde(default)]
    pub use_tcp: bool,
    #[serde(default)]
    pub hostname_in_prefix: bool,
    #[serde(default = "d_consumer_id")]
    pub consumer_identifier_default: String,
    #[serde(default = "d_service_id")]
    pub service_identifier_default: String,
    #[serde(default = "d_workspace_id")]
    pub workspace_identifier_default: String,
    pub retry_count: Option<i64>,
    pub queue_size: Option<i64>,
    pub flush_timeout: Option<f64>,
    pub tag_style: Option<String>,
    #[serde(default)]
    pub queue: Option<QueueConfig>,
}

// dup: alike in shape only (other types and fields); kept apart on purpose.
fn d_host() -> String {
    "localhost".into()
}
fn d_port() -> u16 {
    8125
}
fn d_prefix() -> String {
    "kong".into()
}
fn d_consumer_id() -> String {
    "custom_id".into()
}
fn d_service_id() -> String {
    "service_name_or_host".into()
}
fn d_workspace_id() -> String {
    "workspace_id".into()
}

/// Kong's `DEFAULT_METRICS`.
pub fn default_metrics() -> Vec<Metric> {
    [
        ("request_count", "counter", Some(1.0)),
        ("latency", "timer", None),
        ("request_size", "counter", Some(1.0)),
        ("status_count", "counter", Some(1.0)),
        ("response_size", "counter", Some(1.0)),
        ("unique_users", "set", None),
        ("request_per_user", "counter", Some(1.0)),
        ("upstream_latency", "timer", None),
        ("kong_latency", "timer", None),
        ("status_count_per_user", "counter", Some(1.0)),
        ("status_count_per_workspace", "counter", Some(1.0)),
        ("status_count_per_user_per_route", "counter", Some(1.0)),
        ("shdict_usage", "gauge", Some(1.0)),
    ]
    .into_iter()
    .map(|(name, stat_type, sample_rate)| Metric {
        name: name.into(),
        stat_type: stat_type.into(),
        sample_rate,
        consumer_identifier: None,
        service_identifier: None,
        workspace_identifier: None,
    })
    .collect()
}

fn one_of(path: &str, v: &str, allowed: &[&str]) -> Result<(), SpecError> {
    if allowed.contains(&v) {
        return Ok(());
    }
    Err(SpecError::at(
        path,
        format!("expected one of: {}", allowed.join(", ")),
    ))
}

/// A status code range `NNN-NNN` (Kong's `^[0-9]+-[0-9]+$`, read as two three-digit codes).
fn parse_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-')?;
    if a.is_empty() || b.is_empty() || !(a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())) {
        return None;
    }
    // Kong matches `(\d\d\d)-(\d\d\d)` inside the entry: the first three digits of each side.
    let lo = a.get(..3)?.parse().ok()?;
    let hi = b.get(..3)?.parse().ok()?;
    Some((lo, hi))
}

impl Config {
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.host.is_empty() || self.host.contains(['/', ' ', '?', '#', '@']) {
            return Err(SpecError::at("host", "invalid value"));
        }
        for (i, m) in self.metrics.iter().enumerate() {
            let p = |f: &str| format!("metrics[{i}].{f}");
            one_of(&p("name"), &m.name, METRIC_NAMES)?;
            one_of(&p("stat_type"), &m.stat_type, STAT_TYPES)?;
            if let Some(r) = m.sample_rate
                && r <= 0.0
            {
                return Err(SpecError::at(
                    p("sample_rate"),
                    "value must be greater than 0",
                ));
            }
            if matches!(m.stat_type.as_str(), "counter" | "gauge") && m.sample_rate.is_none() {
                return Err(SpecError::at(p("sample_rate"), "required field missing"));
            }
            if let Some(v) = &m.consumer_identifier {
                one_of(&p("consumer_identifier"), v, CONSUMER_IDENTIFIERS)?;
            }
            if let Some(v) = &m.service_identifier {
                one_of(&p("service_identifier"), v, SERVICE_IDENTIFIERS)?;
            }
            if let Some(v) = &m.workspace_identifier {
                one_of(&p("workspace_identifier"), v, WORKSPACE_IDENTIFIERS)?;
            }
        }
        for (i, r) in self.allow_status_codes.iter().flatten().enumerate() {
            let ok = r.split_once('-').is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
            });
            if !ok {
                return Err(SpecError::at(
                    format!("allow_status_codes[{i}]"),
                    "invalid value: ".to_string() + r,
                ));
            }
        }
        if !(0.0..=65507.0).contains(&self.udp_packet_size) {
            return Err(SpecError::at(
                "udp_packet_size",
                "value should be between 0 and 65507",
            ));
        }
        one_of(
            "consumer_identifier_default",
            &self.consumer_identifier_default,
            CONSUMER_IDENTIFIERS,
        )?;
        one_of(
            "service_identifier_default",
            &self.service_identifier_default,
            SERVICE_IDENTIFIERS,
        )?;
        one_of(
            "workspace_identifier_default",
            &self.workspace_identifier_default,
            WORKSPACE_IDENTIFIERS,
        )?;
        if let Some(t) = &self.tag_style {
            one_of("tag_style", t, TAG_STYLES)?;
        }
        if let Some(q) = &self.queue {
            q.validate()?;
        }
        Ok(())
    }

    pub fn warnings(&self) -> Vec<(String, String)> {
        legacy_warnings(
            "statsd",
            self.retry_count,
            self.queue_size,
            self.flush_timeout,
        )
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
        .replace('.', "_")
}

fn stat_code(stat_type: &str) -> &'static str {
    match stat_type {
        "gauge" => "g",
        "counter" => "c",
        "timer" => "ms",
        "histogram" => "h",
        "meter" => "m",
        _ => "s",
    }
}

/// One consumer's identity fields, service's, route's, as the metric names use them.
struct Who<'a> {
    /// (name, id, host); the name is None when the file gives none.
    service: Option<(Option<&'a str>, Option<&'a str>, &'a str)>,
    consumer: Option<(&'a str, Option<&'a str>, Option<&'a str>)>,
    route: Option<(&'a str, Option<&'a str>)>,
}

impl Who<'_> {
    fn service_id(&self, ident: &str) -> Option<String> {
        let (name, id, host) = self.service?;
        let v = match ident {
            "service_id" => id?,
            "service_host" => host,
            "service_name" => name?,
            _ => name.unwrap_or(host),
        };
        Some(v.to_string())
    }

    fn consumer_id(&self, ident: &str) -> Option<&str> {
        let (id, custom, username) = self.consumer?;
        match ident {
            "consumer_id" => Some(id),
            "username" => username,
            _ => custom,
        }
    }
}

pub struct Statsd {
    cfg: Config,
    prefix: String,
    hostname: String,
    ranges: Option<Vec<(u16, u16)>>,
    queue: LogQueue<Vec<String>>,
}

impl Statsd {
    pub fn new(cfg: Config, ctx: &BuildContext<'_>) -> Result<Statsd, BuildError> {
        let hostname = hostname();
        let mut prefix = cfg.prefix.clone();
        if cfg.hostname_in_prefix && cfg.tag_style.is_none() {
            prefix = format!("{prefix}.node.{hostname}");
        }
        let ranges = cfg
            .allow_status_codes
            .as_ref()
            .map(|v| v.iter().filter_map(|r| parse_range(r)).collect());
        let q = cfg
            .queue
            .clone()
            .unwrap_or_default()
            .with_legacy(cfg.queue_size, cfg.flush_timeout);
        let sender = Sender {
            host: cfg.host.clone(),
            port: cfg.port,
            use_tcp: cfg.use_tcp,
            packet: cfg.udp_packet_size as usize,
        };
        Ok(Statsd {
            queue: LogQueue::new("statsd", q, Arc::new(sender), ctx.bg),
            cfg,
            prefix,
            hostname,
            ranges,
        })
    }

    fn allowed(&self, status: u16) -> bool {
        match &self.ranges {
            None => true,
            Some(r) => r.iter().any(|&(lo, hi)| status >= lo && status <= hi),
        }
    }

    fn line(&self, stat: &str, value: &str, kind: &str, rate: Option<f64>) -> String {
        let rate = match rate {
            Some(r) if r != 1.0 => format!("|@{r}"),
            _ => String::new(),
        };
        format!("{}.{stat}:{value}|{kind}{rate}", self.prefix)
    }

    fn tagged(
        &self,
        stat: &str,
        value: &str,
        kind: &str,
        rate: Option<f64>,
        tags: &[(&str, String)],
    ) -> String {
        let rate = match rate {
            Some(r) if r != 1.0 => format!("|@{r}"),
            _ => String::new(),
        };
        let p = &self.prefix;
        let join = |sep: &str| {
            tags.iter()
                .map(|(k, v)| format!("{k}{sep}{v}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        match self.cfg.tag_style.as_deref() {
            Some("dogstatsd") => format!("{p}.{stat}:{value}|{kind}{rate}|#{}", join(":")),
            Some("influxdb") => format!("{p}.{stat},{}:{value}|{kind}{rate}", join("=")),
            Some("librato") => format!("{p}.{stat}#{}:{value}|{kind}{rate}", join("=")),
            Some("signalfx") => format!("{p}.{stat}[{}]:{value}|{kind}{rate}", join("=")),
            _ => format!("{p}.{stat}:{value}|{kind}{rate}"),
        }
    }

    /// The metric lines of one request, in the configured order.
    pub fn lines(&self, st: &RequestState, status: u16) -> Vec<String> {
        let rt = st.rt.as_ref();
        let service = rt.zip(st.service).map(|(rt, s)| {
            let d = &rt.decl.services[s];
            (
                d.named.then_some(d.name.as_str()),
                d.id.as_deref(),
                d.host.as_str(),
            )
        });
        let consumer = rt.zip(st.consumer).map(|(rt, c)| {
            let d = &rt.decl.consumers[c];
            (d.id.as_str(), d.custom_id.as_deref(), d.username.as_deref())
        });
        let route = rt.zip(st.route.as_ref()).map(|(rt, m)| {
            let d = &rt.decl.routes[m.route];
            (d.name.as_str(), d.id.as_deref())
        });
        let who = Who {
            service,
            consumer,
            route,
        };
        let lat = log_serializer::latencies(st);
        let req_size = log_serializer::request_size(st);
        // Kong's response.size counts the head too; the head's size is estimated from the
        // headers sent when the serializer kept them.
        let resp_size = st.bytes_out
            + st.log_heads
                .as_ref()
                .map(|h| {
                    h.response
                        .iter()
                        .map(|(k, v)| k.as_str().len() + v.len() + 4)
                        .sum::<usize>() as u64
                        + 19
                })
                .unwrap_or(0);
        let tagged = self.cfg.tag_style.is_some();
        let mut out = Vec::with_capacity(self.cfg.metrics.len());
        for m in &self.cfg.metrics {
            let sid = m
                .service_identifier
                .as_deref()
                .unwrap_or(&self.cfg.service_identifier_default);
            let cid_kind = m
                .consumer_identifier
                .as_deref()
                .unwrap_or(&self.cfg.consumer_identifier_default);
            let wid_kind = m
                .workspace_identifier
                .as_deref()
                .unwrap_or(&self.cfg.workspace_identifier_default);
            let workspace = if wid_kind == "workspace_name" {
                "default"
            } else {
                DEFAULT_WORKSPACE_ID
            };
            let cid = who.consumer_id(cid_kind);
            let scope = match who.service_id(sid) {
                Some(s) => format!("service.{}", s.replace('.', "_")),
                None if who.service.is_some() => "service.unnamed".to_string(),
                None => "global.unmatched".to_string(),
            };
            let rate = m.sample_rate;
            let generic = match m.name.as_str() {
                "request_count" => Some(("request.count", "1".to_string())),
                "latency" => Some(("latency", lat.request.to_string())),
                "request_size" => Some(("request.size", req_size.to_string())),
                "response_size" => Some(("response.size", resp_size.to_string())),
                "upstream_latency" => {
                    (lat.proxy != -1).then(|| ("upstream_latency", lat.proxy.to_string()))
                }
                "kong_latency" => Some(("kong_latency", lat.kong.to_string())),
                _ => None,
            };
            if let Some((stat, value)) = generic {
                let kind = stat_code(&m.stat_type);
                if tagged {
                    match who.service_id(sid) {
                        Some(svc) => {
                            let mut tags = vec![("service", svc)];
                            if let Some((name, id)) = who.route {
                                tags.push((
                                    "route",
                                    id.filter(|_| name.is_empty()).unwrap_or(name).to_string(),
                                ));
                            }
                            tags.push(("workspace", workspace.to_string()));
                            if let Some(c) = cid {
                                tags.push(("consumer", c.to_string()));
                            }
                            tags.push(("node", self.hostname.clone()));
                            tags.push(("status", status.to_string()));
                            out.push(self.tagged(stat, &value, kind, rate, &tags));
                        }
                        None => out.push(self.line(stat, &value, kind, rate)),
                    }
                } else {
                    out.push(self.line(&format!("{scope}.{stat}"), &value, kind, rate));
                }
                continue;
            }
            if tagged {
                // Kong skips the per-user, per-status and set metrics in tag mode.
                continue;
            }
            match m.name.as_str() {
                "status_count" => {
                    out.push(self.line(&format!("{scope}.status.{status}"), "1", "c", rate))
                }
                "unique_users" => {
                    if let Some(c) = cid {
                        out.push(self.line(&format!("{scope}.user.uniques"), c, "s", None));
                    }
                }
                "request_per_user" => {
                    if let Some(c) = cid {
                        out.push(self.line(
                            &format!("{scope}.user.{c}.request.count"),
                            "1",
                            "c",
                            rate,
                        ));
                    }
                }
                "status_count_per_user" => {
                    if let Some(c) = cid {
                        out.push(self.line(
                            &format!("{scope}.user.{c}.status.{status}"),
                            "1",
                            "c",
                            rate,
                        ));
                    }
                }
                "status_count_per_workspace" => out.push(self.line(
                    &format!("{scope}.workspace.{workspace}.status.{status}"),
                    "1",
                    "c",
                    rate,
                )),
                "status_count_per_user_per_route" => {
                    if let (Some(c), Some((_, Some(rid)))) = (cid, who.route) {
                        out.push(self.line(
                            &format!("route.{rid}.user.{c}.status.{status}"),
                            "1",
                            "c",
                            rate,
                        ));
                    }
                }
                _ => {}
            }
        }
        out
    }
}

#[async_trait]
impl Plugin for Statsd {
    fn name(&self) -> &'static str {
        "statsd"
    }

    fn priority(&self) -> i32 {
        11
    }

    fn has_access(&self) -> bool {
        false
    }

    fn logs_heads(&self) -> bool {
        self.cfg.metrics.iter().any(|m| m.name == "response_size")
    }

    fn log(&self, st: &RequestState, status: u16) {
        if !self.allowed(status) {
            return;
        }
        let lines = self.lines(st, status);
        if lines.is_empty() {
            return;
        }
        // Kong's queue holds statsd entries as tables: `max_bytes` does not apply to them.
        self.queue.push(lines, 0);
    }
}

/// Sends a batch's lines to the StatsD server, as Kong's `statsd_logger`.
struct Sender {
    host: String,
    port: u16,
    use_tcp: bool,
    packet: usize,
}

/// Why statsd could not reach its server.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("failed to connect to {host}:{port}: cannot resolve")]
    Resolve { host: String, port: u16 },
    #[error("failed to connect to {host}:{port}: timeout")]
    Timeout { host: String, port: u16 },
    #[error("failed to connect to {host}:{port}: {source}")]
    Connect {
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
}

impl Sender {
    fn connect_error(&self, source: std::io::Error) -> SendError {
        SendError::Connect {
            host: self.host.clone(),
            port: self.port,
            source,
        }
    }

    async fn udp(&self, batch: &[Vec<String>]) -> Result<(), SendError> {
        let addr = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| SendError::Resolve {
                host: self.host.clone(),
                port: self.port,
            })?;
        let bind = if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let sock = tokio::net::UdpSocket::bind(bind)
            .await
            .map_err(|e| self.connect_error(e))?;
        sock.connect(addr)
            .await
            .map_err(|e| self.connect_error(e))?;
        let send = |msg: String| {
            let sock = &sock;
            async move {
                if let Err(e) = sock.send(msg.as_bytes()).await {
                    tracing::error!(error = %e, "statsd: failed to send data");
                }
            }
        };
        let mut buf: Vec<&str> = Vec::new();
        let mut buf_size = 0usize;
        for line in batch.iter().flatten() {
            if self.packet == 0 {
                send(line.clone()).await;
                continue;
            }
            let new_size = buf_size + line.len();
            if new_size > self.packet {
                let truncated = buf_size == 0;
                let msg = buf.join("\n");
                buf.clear();
                buf.push(line);
                buf_size = line.len();
                if truncated {
                    tracing::warn!(
                        len = line.len(),
                        "statsd: udp_packet_size is smaller than one message"
                    );
                    continue;
                }
                send(msg).await;
            } else {
                buf.push(line);
                buf_size = new_size + 1;
            }
        }
        if self.packet > 0 && buf_size > 0 {
            send(buf.join("\n")).await;
        }
        Ok(())
    }

    async fn tcp(&self, batch: &[Vec<String>]) -> Result<(), SendError> {
        let connect = tokio::net::TcpStream::connect((self.host.as_str(), self.port));
        let mut s = tokio::time::timeout(Duration::from_secs(1), connect)
            .await
            .map_err(|_| SendError::Timeout {
                host: self.host.clone(),
                port: self.port,
            })?
            .map_err(|e| self.connect_error(e))?;
        let mut out = Vec::new();
        for line in batch.iter().flatten() {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        if let Err(e) = s.write_all(&out).await {
            tracing::error!(error = %e, "statsd: failed to send data");
        }
        Ok(())
    }
}

#[async_trait]
impl Deliver<Vec<String>> for Sender {
    // dup: the shape of every plugin file (its own Config, checks and hook types).
    async fn deliver(&self, batch: &[Vec<String>]) -> Result<(), DeliveryError> {
        Ok(if self.use_tcp {
            self.tcp(batch).await
        } else {
            self.udp(batch).await
        }?)
    }
}

// dup: the same config-test wrappers as http-log's tests (each names its own Config).
#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &str) -> Result<Config, SpecError> {
        crate::plugins::test_config::parse(v, Config::validate)
    }

    fn err_path(v: &str) -> String {
        crate::plugins::test_config::err_path(parse(v))
    }

    #[test]
    fn schema_like_kong() {
        let c = parse("{}").expect("test value");
        assert_eq!(c.host, "localhost");
        assert_eq!(c.port, 8125);
        assert_eq!(c.prefix, "kong");
        assert_eq!(c.metrics.len(), 13);
        assert_eq!(c.service_identifier_default, "service_name_or_host");
        assert_eq!(c.consumer_identifier_default, "custom_id");
        assert_eq!(
            err_path("metrics: [{name: nope, stat_type: counter, sample_rate: 1}]"),
            "metrics[0].name"
        );
        assert_eq!(
            err_path("metrics: [{name: request_count, stat_type: counter}]"),
            "metrics[0].sample_rate"
        );
        assert!(parse("metrics: [{name: latency, stat_type: timer}]").is_ok());
        assert_eq!(
            err_path("allow_status_codes: ['200']"),
            "allow_status_codes[0]"
        );
        assert_eq!(err_path("udp_packet_size: 70000"), "udp_packet_size");
        assert_eq!(err_path("tag_style: statsd"), "tag_style");
        assert_eq!(err_path("bogus: 1"), "bogus");
    }

    #[test]
    fn a_deck_dump_with_nulls_loads() {
        let c = parse(
            "host: statsd.local
port: 8125
prefix: kong
allow_status_codes: null
tag_style: null
retry_count: null
queue_size: null
flush_timeout: null
udp_packet_size: 0
use_tcp: false
hostname_in_prefix: false
consumer_identifier_default: custom_id
service_identifier_default: service_name_or_host
workspace_identifier_default: workspace_id
metrics:
- name: latency
  stat_type: timer
  sample_rate: null
  consumer_identifier: null
  service_identifier: null
  workspace_identifier: null
queue:
  max_batch_size: 1
  max_coalescing_delay: 1
  max_entries: 10000
  max_bytes: null
  max_retry_time: 60
  initial_retry_delay: 0.01
  max_retry_delay: 60
  concurrency_limit: 1
",
        )
        .expect("loads");
        assert_eq!(c.metrics.len(), 1);
    }

    #[test]
    fn status_ranges() {
        assert_eq!(parse_range("200-299"), Some((200, 299)));
        assert_eq!(parse_range("2000-2999"), Some((200, 299)));
        assert_eq!(parse_range("20-29"), None);
    }
}
