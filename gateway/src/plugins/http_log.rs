//! Kong's `http-log`: each request's record (Kong's basic log serializer) is queued
//! (`log_queue.rs`, Kong's plugin queue) and sent to `http_endpoint` by a background task:
//! one JSON object per request when `queue.max_batch_size` is 1, otherwise a JSON array
//! of up to `max_batch_size` records (an array even when only one was waiting), as Kong's
//! handler does. A status of 300 or more, or a transport error, is retried with backoff
//! until `queue.max_retry_time`. User info in the endpoint URL becomes a Basic
//! `Authorization` header; it never appears in logs or errors.
//!
//! As Kong: the endpoint's query string is not sent (Kong requests `scheme://host:port/path`),
//! and TLS certificates of an https endpoint are not verified (Kong's `ssl_verify = false`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use serde::Deserialize;

use super::log_queue::{Deliver, DeliveryError, LogQueue, QueueConfig, legacy_warnings};
use super::log_serializer::{self, Entities};
use super::{BuildContext, BuildError, Plugin, SpecError};
use crate::core::state::RequestState;

// dup: the shape of every plugin file (its own Config, checks and hook types).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub http_endpoint: String,
    #[serde(default = "d_method")]
    pub method: String,
    #[serde(default = "d_content_type")]
    pub content_type: String,
    /// Milliseconds.
    #[serde(default = "d_timeout")]
    pub timeout: f64,
    /// Milliseconds an idle connection to the log server is kept.
    #[serde(default = "d_keepalive")]
    pub keepalive: f64,
    /// Deprecated: no effect (Kong warns).
    pub retry_count: Option<i64>,
    /// Deprecated: `queue.max_batch_size` when not 1.
    pub queue_size: Option<i64>,
    /// Deprecated: `queue.max_coalescing_delay` when not 2.
    pub flush_timeout: Option<f64>,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub queue: Option<QueueConfig>,
    #[serde(default)]
    pub custom_fields_by_lua: Option<BTreeMap<String, String>>,
}

fn d_method() -> String {
    "POST".into()
}
fn d_content_type() -> String {
    "application/json".into()
}
fn d_timeout() -> f64 {
    10_000.0
}
fn d_keepalive() -> f64 {
    60_000.0
}

/// Kong's `header_name` check.
pub fn check_header_name(path: &str, name: &str) -> Result<(), SpecError> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(SpecError::at(
            path,
            format!("bad header name '{name}', allowed characters are A-Z, a-z, 0-9, '_', and '-'"),
        ));
    }
    Ok(())
}

impl Config {
    pub fn validate(&self) -> Result<(), SpecError> {
        let url = endpoint(&self.http_endpoint)?;
        if !["POST", "PUT", "PATCH"].contains(&self.method.as_str()) {
            return Err(SpecError::at("method", "expected one of: POST, PUT, PATCH"));
        }
        if !["application/json", "application/json; charset=utf-8"]
            .contains(&self.content_type.as_str())
        {
            return Err(SpecError::at(
                "content_type",
                "expected one of: application/json, application/json; charset=utf-8",
            ));
        }
        for (f, v) in [("timeout", self.timeout), ("keepalive", self.keepalive)] {
            if !v.is_finite() || v < 0.0 {
                return Err(SpecError::at(f, "expected a non-negative number"));
            }
        }
        if let Some(h) = &self.headers {
            for name in h.keys() {
                let path = format!("headers.{name}");
                check_header_name(&path, name)?;
                let lower = name.to_ascii_lowercase();
                let err = match lower.as_str() {
                    "host" => Some("cannot contain 'Host' header"),
                    "content-length" => Some("cannot contain 'Content-Length' header"),
                    "content-type" => Some("cannot contain 'Content-Type' header"),
                    _ => None,
                };
                if let Some(e) = err {
                    return Err(SpecError::at(path, e));
                }
                if lower == "authorization" && !url.username().is_empty() {
                    return Err(SpecError::at(
                        "",
                        "specifying both an 'Authorization' header and user info in 'http_endpoint' is not allowed",
                    ));
                }
            }
        }
        if let Some(q) = &self.queue {
            q.validate()?;
        }
        log_serializer::reject_lua(&self.custom_fields_by_lua)
    }

    pub fn warnings(&self) -> Vec<(String, String)> {
        legacy_warnings(
            "http-log",
            self.retry_count,
            self.queue_size,
            self.flush_timeout,
        )
    }

    /// The queue parameters in effect (the deprecated ones applied as Kong does).
    pub fn queue(&self) -> QueueConfig {
        self.queue
            .clone()
            .unwrap_or_default()
            .with_legacy(self.queue_size, self.flush_timeout)
    }
}

fn endpoint(s: &str) -> Result<reqwest::Url, SpecError> {
    let url = reqwest::Url::parse(s)
        .map_err(|e| SpecError::at("http_endpoint", format!("invalid url: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(SpecError::at(
            "http_endpoint",
            "unsupported scheme (http or https)",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(SpecError::at("http_endpoint", "missing host in url"));
    }
    Ok(url)
}

/// Sends batches to the log server.
struct Sender {
    client: reqwest::Client,
    method: reqwest::Method,
    /// `scheme://host:port/path`, without user info or query (as Kong).
    url: reqwest::Url,
    /// `host:port`, for errors.
    target: String,
    headers: reqwest::header::HeaderMap,
    one_per_request: bool,
}

/// Why http-log could not deliver a batch (the endpoint's URL, which may hold user info,
/// is never part of it).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("failed request to {target}: {source}")]
    Request {
        target: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("request to {target} returned status code {status}")]
    Status { target: String, status: u16 },
}

#[async_trait]
impl Deliver<String> for Sender {
    async fn deliver(&self, batch: &[String]) -> Result<(), DeliveryError> {
        let body = match batch {
            [one] if self.one_per_request => one.clone(),
            _ => {
                let mut s =
                    String::with_capacity(batch.iter().map(|e| e.len() + 1).sum::<usize>() + 2);
                s.push('[');
                for (i, e) in batch.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    s.push_str(e);
                }
                s.push(']');
                s
            }
        };
        let resp = self
            .client
            .request(self.method.clone(), self.url.clone())
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| SendError::Request {
                target: self.target.clone(),
                source: e.without_url(),
            })?;
        let status = resp.status().as_u16();
        // Read the body to its end (the connection can then be reused).
        let _ = resp.bytes().await;
        if status < 300 {
            Ok(())
        } else {
            Err(SendError::Status {
                target: self.target.clone(),
                status,
            }
            .into())
        }
    }
}

pub struct HttpLog {
    queue: LogQueue<String>,
    entities: Arc<Entities>,
}

impl HttpLog {
    // dup: the shape of every plugin file (its own Config, checks and hook types).
    pub fn new(cfg: Config, ctx: &BuildContext<'_>) -> Result<HttpLog, BuildError> {
        let mut url = endpoint(&cfg.http_endpoint)?;
        let port = url.port_or_known_default().unwrap_or(80);
        let host = url.host_str().unwrap_or_default().to_string();
        let mut headers = reqwest::header::HeaderMap::new();
        let ct = reqwest::header::HeaderValue::from_str(&cfg.content_type)
            .map_err(|_| BuildError::Invalid("http-log: content_type".into()))?;
        headers.insert(reqwest::header::CONTENT_TYPE, ct);
        if !url.username().is_empty() || url.password().is_some() {
            // Kong encodes the user info as written in the URL.
            let userinfo = match url.password() {
                Some(p) => format!("{}:{p}", url.username()),
                None => url.username().to_string(),
            };
            let v = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(userinfo)
            );
            let mut v = reqwest::header::HeaderValue::from_str(&v)
                .map_err(|_| BuildError::Invalid("http-log: http_endpoint user info".into()))?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        for (k, v) in cfg.headers.iter().flatten() {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                BuildError::Invalid(format!("http-log: headers.{k}: bad header name"))
            })?;
            let value = reqwest::header::HeaderValue::from_str(v).map_err(|_| {
                BuildError::Invalid(format!("http-log: headers.{k}: bad header value"))
            })?;
            if !headers.contains_key(&name) {
                headers.insert(name, value);
            }
        }
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.set_query(None);
        url.set_fragment(None);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout.max(1.0) as u64))
            .pool_idle_timeout(Duration::from_millis(cfg.keepalive as u64))
            .tls_danger_accept_invalid_certs(true)
            .build()
            .map_err(|e| BuildError::Client {
                what: "http-log client",
                source: Box::new(e),
            })?;
        let q = cfg.queue();
        let sender = Sender {
            client,
            method: reqwest::Method::from_bytes(cfg.method.as_bytes())
                .map_err(|_| BuildError::Invalid("http-log: method".into()))?,
            url,
            target: format!("{host}:{port}"),
            headers,
            one_per_request: q.max_batch_size == 1,
        };
        Ok(HttpLog {
            queue: LogQueue::new("http-log", q, Arc::new(sender), ctx.bg),
            entities: Entities::shared(ctx)?,
        })
    }
}

#[async_trait]
impl Plugin for HttpLog {
    fn name(&self) -> &'static str {
        "http-log"
    }

    fn priority(&self) -> i32 {
        12
    }

    fn has_access(&self) -> bool {
        false
    }

    fn logs_heads(&self) -> bool {
        true
    }

    // dup: the shape of every plugin file (its own Config, checks and hook types).
    fn log(&self, st: &RequestState, status: u16) {
        let record = log_serializer::serialize(st, status, &self.entities);
        if let Ok(s) = serde_json::to_string(&record) {
            let n = s.len();
            self.queue.push(s, n);
        }
    }
}

// dup: the same config-test wrappers as statsd's tests (each names its own Config).
#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &str) -> Result<Config, SpecError> {
        crate::plugins::test_config::parse(v, Config::validate)
    }

    fn err_path(v: &str) -> String {
        crate::plugins::test_config::err_path(parse(v))
    }

    // dup: the shape of every plugin file (its own Config, checks and hook types).
    #[test]
    fn schema_like_kong() {
        let c = parse("http_endpoint: http://127.0.0.1:9/x").expect("test value");
        assert_eq!(c.method, "POST");
        assert_eq!(c.content_type, "application/json");
        assert_eq!(c.timeout, 10000.0);
        assert_eq!(c.keepalive, 60000.0);
        assert_eq!(c.queue().max_batch_size, 1);
        assert_eq!(err_path("method: POST"), "http_endpoint");
        assert_eq!(err_path("http_endpoint: http://h/\nmethod: GET"), "method");
        assert_eq!(
            err_path("http_endpoint: http://h/\ncontent_type: text/plain"),
            "content_type"
        );
        assert_eq!(
            err_path("http_endpoint: http://h/\nheaders: {Host: x}"),
            "headers.Host"
        );
        assert_eq!(
            err_path("http_endpoint: http://h/\nheaders: {content-length: '1'}"),
            "headers.content-length"
        );
        assert!(parse("http_endpoint: http://u:p@h/\nheaders: {Authorization: x}").is_err());
        assert_eq!(
            err_path("http_endpoint: http://h/\nqueue: {concurrency_limit: 3}"),
            "queue.concurrency_limit"
        );
        assert_eq!(
            err_path("http_endpoint: http://h/\ncustom_fields_by_lua: {x: return 1}"),
            "custom_fields_by_lua"
        );
        let c = parse("http_endpoint: http://h/\nqueue_size: 7\nflush_timeout: 2\nretry_count: 3")
            .expect("test value");
        assert_eq!(c.queue().max_batch_size, 7);
        assert_eq!(c.queue().max_coalescing_delay, 1.0);
        assert_eq!(c.warnings().len(), 3);
    }

    #[test]
    fn a_deck_dump_with_nulls_loads() {
        let c = parse(
            "http_endpoint: http://127.0.0.1:9/x
method: POST
content_type: application/json
timeout: 5000
keepalive: 60000
retry_count: null
queue_size: null
flush_timeout: null
headers: null
custom_fields_by_lua: null
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
        assert_eq!(c.timeout, 5000.0);
        assert!(c.warnings().is_empty());
    }
}
