//! Kong's `opentelemetry` plugin: W3C trace context in and out, spans for the request's
//! phases (router, each plugin's access, upstream connect, upstream response), sampling,
//! and OTLP export over HTTP/protobuf or gRPC (Kong OSS has HTTP only). The trace id also
//! goes into the access log next to the request id.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::core::{RequestHeader, ResponseHeader};
use async_trait::async_trait;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use serde::Deserialize;

use super::{BuildContext, BuildError, Plugin, SpecError};
use crate::core::state::RequestState;
use crate::otel_export::{ExportConfig, Pipeline, Protocol};

// dup: alike in shape only (other types and fields); kept apart on purpose.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub traces_endpoint: Option<String>,
    /// Deprecated alias of `traces_endpoint`.
    pub endpoint: Option<String>,
    pub logs_endpoint: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub queue: Queue,
    pub batch_span_count: Option<usize>,
    pub batch_flush_delay: Option<f64>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: u64,
    #[serde(default = "default_send_timeout")]
    pub send_timeout: u64,
    #[serde(default = "default_send_timeout")]
    pub read_timeout: u64,
    pub http_response_header_for_traceid: Option<String>,
    pub header_type: Option<String>,
    /// Ratio of new traces sampled (0..1). Kong's default is the global 0.01.
    pub sampling_rate: Option<f64>,
    #[serde(default)]
    pub propagation: Propagation,
    /// Extension: `http/protobuf` (default, as Kong) or `grpc`.
    #[serde(default = "default_protocol")]
    pub protocol: String,
}

// dup: the shape of every plugin file (its own Config, checks and hook types).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    pub max_batch_size: Option<usize>,
    pub max_coalescing_delay: Option<f64>,
    pub max_entries: Option<usize>,
    pub max_bytes: Option<u64>,
    pub max_retry_time: Option<f64>,
    pub initial_retry_delay: Option<f64>,
    pub max_retry_delay: Option<f64>,
    pub concurrency_limit: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Propagation {
    #[serde(default)]
    pub extract: Vec<String>,
    #[serde(default)]
    pub inject: Vec<String>,
    #[serde(default)]
    pub clear: Vec<String>,
    pub default_format: Option<String>,
}

fn default_connect_timeout() -> u64 {
    1000
}
fn default_send_timeout() -> u64 {
    5000
}
fn default_protocol() -> String {
    "http/protobuf".into()
}

impl Config {
    pub fn validate(&self) -> Result<(), SpecError> {
        let Some(ep) = self.traces_endpoint.as_ref().or(self.endpoint.as_ref()) else {
            return Err(SpecError::at(
                "traces_endpoint",
                "required (logs_endpoint alone is not supported)",
            ));
        };
        let ok = ep.parse::<http::Uri>().ok().is_some_and(|u| {
            matches!(u.scheme_str(), Some("http") | Some("https")) && u.host().is_some()
        });
        if !ok {
            return Err(SpecError::at("traces_endpoint", "expected an http(s) URL"));
        }
        if self.logs_endpoint.is_some() {
            return Err(SpecError::at(
                "logs_endpoint",
                "log export is not supported; remove it (the access log is JSON on stdout)",
            ));
        }
        if let Some(r) = self.sampling_rate
            && !(0.0..=1.0).contains(&r)
        {
            return Err(SpecError::at("sampling_rate", "must be between 0 and 1"));
        }
        if self.protocol != "http/protobuf" && self.protocol != "grpc" {
            return Err(SpecError::at("protocol", "expected http/protobuf or grpc"));
        }
        for (list, formats) in [
            ("extract", &self.propagation.extract),
            ("inject", &self.propagation.inject),
        ] {
            for (i, f) in formats.iter().enumerate() {
                let ok = Format::parse(f).is_some() || (list == "inject" && f == "preserve");
                if !ok {
                    return Err(SpecError::at(
                        format!("propagation.{list}[{i}]"),
                        format!("format `{f}` is not supported ({SUPPORTED})"),
                    ));
                }
            }
        }
        if let Some(f) = &self.propagation.default_format
            && Format::parse(f).is_none()
        {
            return Err(SpecError::at(
                "propagation.default_format",
                format!("format `{f}` is not supported ({SUPPORTED})"),
            ));
        }
        for (i, c) in self.propagation.clear.iter().enumerate() {
            if http::HeaderName::from_bytes(c.as_bytes()).is_err() {
                return Err(SpecError::at(
                    format!("propagation.clear[{i}]"),
                    "not a valid header name",
                ));
            }
        }
        if let Some(h) = &self.header_type
            && h != "preserve"
            && h != "ignore"
            && Format::parse(h).is_none()
        {
            return Err(SpecError::at(
                "header_type",
                format!("`{h}` is not supported ({SUPPORTED}, ignore)"),
            ));
        }
        if let Some(h) = &self.http_response_header_for_traceid
            && http::HeaderName::from_bytes(h.as_bytes()).is_err()
        {
            return Err(SpecError::at(
                "http_response_header_for_traceid",
                "not a valid header name",
            ));
        }
        Ok(())
    }
}

pub use crate::core::trace::TraceCtx;

use super::trace_propagation::{self as propagation, Format, SUPPORTED};

/// Where the trace context goes upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inject {
    /// The format it came in, else the default format.
    Preserve,
    Format(Format),
}

/// The propagation settings: `propagation`, or the legacy `header_type` (Kong's default
/// `preserve`: every format read, the incoming one written back, w3c otherwise).
#[derive(Debug, Clone)]
struct Propagate {
    extract: Vec<Format>,
    inject: Vec<Inject>,
    default_format: Format,
    clear: Vec<http::HeaderName>,
}

impl Propagate {
    fn from_config(cfg: &Config) -> Propagate {
        let p = &cfg.propagation;
        let default_format = p
            .default_format
            .as_deref()
            .and_then(Format::parse)
            .unwrap_or(Format::W3c);
        let clear = p
            .clear
            .iter()
            .filter_map(|c| http::HeaderName::from_bytes(c.as_bytes()).ok())
            .collect();
        if !p.extract.is_empty() || !p.inject.is_empty() {
            return Propagate {
                extract: p
                    .extract
                    .iter()
                    .filter_map(|f| Format::parse(f))
                    .flat_map(|f| {
                        // Kong's `b3` extractor reads the single header too.
                        if f == Format::B3 {
                            vec![Format::B3, Format::B3Single]
                        } else {
                            vec![f]
                        }
                    })
                    .collect(),
                inject: p
                    .inject
                    .iter()
                    .filter_map(|f| match f.as_str() {
                        "preserve" => Some(Inject::Preserve),
                        other => Format::parse(other).map(Inject::Format),
                    })
                    .collect(),
                default_format,
                clear,
            };
        }
        match cfg.header_type.as_deref().unwrap_or("preserve") {
            "ignore" => Propagate {
                extract: Vec::new(),
                inject: vec![Inject::Format(default_format)],
                default_format,
                clear,
            },
            "preserve" => Propagate {
                extract: Format::ALL.to_vec(),
                inject: vec![Inject::Preserve],
                default_format,
                clear,
            },
            other => {
                let f = Format::parse(other).unwrap_or(Format::W3c);
                Propagate {
                    extract: Format::ALL.to_vec(),
                    inject: vec![Inject::Preserve, Inject::Format(f)],
                    default_format: f,
                    clear,
                }
            }
        }
    }

    /// True when only a W3C traceparent goes upstream for a context that came in as
    /// `came_in` (the common case, written without formatting).
    fn w3c_only(&self, came_in: Option<Format>) -> bool {
        self.inject.iter().all(|i| match i {
            Inject::Format(f) => *f == Format::W3c,
            Inject::Preserve => came_in.unwrap_or(self.default_format) == Format::W3c,
        })
    }
}

/// The format the request's trace context came in (for `preserve`).
#[derive(Debug, Clone, Copy)]
struct CameIn(Format);

thread_local! {
    /// Seeded from the OS once per thread.
    static ID_RNG: std::cell::RefCell<rand::rngs::SmallRng> =
        std::cell::RefCell::new(rand::SeedableRng::from_os_rng());
}

static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
static TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes the lowercase hex digits of `b` into `out` (twice its length).
fn hex_into_slice(b: &[u8], out: &mut [u8]) {
    for (x, o) in b.iter().zip(out.chunks_exact_mut(2)) {
        o[0] = HEX[usize::from(x >> 4)];
        o[1] = HEX[usize::from(x & 0xf)];
    }
}

pub struct OpenTelemetry {
    rate: f64,
    propagate: Propagate,
    pipeline: Option<Arc<Pipeline>>,
    response_header: Option<http::HeaderName>,
    scope: InstrumentationScope,
}

impl OpenTelemetry {
    pub fn new(cfg: Config, ctx: &BuildContext<'_>) -> Result<OpenTelemetry, BuildError> {
        let endpoint = cfg
            .traces_endpoint
            .clone()
            .or(cfg.endpoint.clone())
            .unwrap_or_default();
        let pipeline = ctx.bg.map(|rt| {
            Arc::new(Pipeline::start(
                ExportConfig {
                    endpoint,
                    protocol: if cfg.protocol == "grpc" {
                        Protocol::Grpc
                    } else {
                        Protocol::HttpProtobuf
                    },
                    headers: cfg
                        .headers
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    resource: cfg
                        .resource_attributes
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_str()
                                    .map(str::to_string)
                                    .unwrap_or_else(|| v.to_string()),
                            )
                        })
                        .collect(),
                    timeout: Duration::from_millis(cfg.send_timeout.max(cfg.connect_timeout)),
                    max_batch: cfg
                        .queue
                        .max_batch_size
                        .or(cfg.batch_span_count)
                        .unwrap_or(200)
                        .max(1),
                    max_delay: Duration::from_secs_f64(
                        cfg.queue
                            .max_coalescing_delay
                            .or(cfg.batch_flush_delay)
                            .unwrap_or(1.0)
                            .clamp(0.001, 60.0),
                    ),
                    max_queue: cfg.queue.max_entries.unwrap_or(10_000),
                },
                rt,
            ))
        });
        Ok(OpenTelemetry {
            rate: cfg.sampling_rate.unwrap_or(0.01),
            propagate: Propagate::from_config(&cfg),
            response_header: cfg
                .http_response_header_for_traceid
                .as_deref()
                .and_then(|h| http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).ok()),
            scope: InstrumentationScope::builder("gateway")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            pipeline,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn span(
        &self,
        t: &TraceCtx,
        id: [u8; 8],
        parent: Option<[u8; 8]>,
        remote: bool,
        kind: SpanKind,
        name: Cow<'static, str>,
        start: SystemTime,
        end: SystemTime,
        attributes: Vec<KeyValue>,
        status: Status,
    ) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(t.trace_id),
                SpanId::from_bytes(id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: parent.map(SpanId::from_bytes).unwrap_or(SpanId::INVALID),
            parent_span_is_remote: remote,
            span_kind: kind,
            name,
            start_time: start,
            end_time: end.max(start),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        }
    }
}

#[async_trait]
impl Plugin for OpenTelemetry {
    fn name(&self) -> &'static str {
        "opentelemetry"
    }

    fn priority(&self) -> i32 {
        14
    }

    fn start_trace(&self, req: &RequestHeader, st: &mut RequestState) {
        if st.trace.is_some() {
            return;
        }
        // One draw from a fast thread-local generator (ids need to be unique and
        // unguessable enough for tracing, not cryptographic): trace id, two span ids, the
        // dice.
        let [a, b, c, d, e]: [u64; 5] = ID_RNG.with(|r| rand::Rng::random(&mut *r.borrow_mut()));
        let incoming = propagation::extract(&req.headers, &self.propagate.extract);
        if let Some(i) = &incoming {
            st.ext.insert(CameIn(i.format));
        }
        let (trace_id, remote_parent, sampled) = match incoming {
            Some(i) => (
                i.trace_id,
                Some(i.parent),
                // No decision from the sender: ours.
                i.sampled
                    .unwrap_or(((d >> 11) as f64 / (1u64 << 53) as f64) < self.rate),
            ),
            None => (
                ((u128::from(a) << 64) | u128::from(b)).max(1).to_be_bytes(),
                None,
                // 53 random bits as a uniform value in [0, 1)
                ((d >> 11) as f64 / (1u64 << 53) as f64) < self.rate,
            ),
        };
        let tracestate = req
            .headers
            .get(&TRACESTATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        st.trace = Some(TraceCtx {
            trace_id,
            root_span: c.max(1).to_be_bytes(),
            remote_parent,
            upstream_span: e.max(1).to_be_bytes(),
            sampled,
            tracestate,
        });
    }

    fn has_access(&self) -> bool {
        // The trace starts in start_trace, before the access phases.
        false
    }

    fn upstream_request(&self, req: &mut RequestHeader, st: &mut RequestState) {
        let Some(t) = &st.trace else { return };
        let parent = if t.sampled {
            t.upstream_span
        } else {
            t.remote_parent.unwrap_or(t.upstream_span)
        };
        for c in &self.propagate.clear {
            req.headers.remove(c);
        }
        let came_in = st.ext.get::<CameIn>().map(|c| c.0);
        if self.propagate.w3c_only(came_in) {
            // 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>, built in place
            let mut tp = *b"00-00000000000000000000000000000000-0000000000000000-00";
            hex_into_slice(&t.trace_id, &mut tp[3..35]);
            hex_into_slice(&parent, &mut tp[36..52]);
            if t.sampled {
                tp[54] = b'1';
            }
            if let Ok(v) = http::HeaderValue::from_bytes(&tp) {
                req.headers.insert(TRACEPARENT.clone(), v);
            }
        } else {
            let mut done: Vec<Format> = Vec::new();
            for i in &self.propagate.inject {
                let f = match i {
                    Inject::Preserve => came_in.unwrap_or(self.propagate.default_format),
                    Inject::Format(f) => *f,
                };
                if !done.contains(&f) {
                    propagation::inject(&mut req.headers, f, &t.trace_id, &parent, t.sampled);
                    done.push(f);
                }
            }
        }
        if let Some(ts) = &t.tracestate
            && let Ok(v) = http::HeaderValue::from_str(ts)
        {
            req.headers.insert(TRACESTATE.clone(), v);
        }
    }

    fn response_header(&self, resp: &mut ResponseHeader, st: &mut RequestState) {
        if let (Some(h), Some(t)) = (&self.response_header, &st.trace) {
            let _ = resp.insert_header(h.clone(), t.trace_id_hex());
        }
    }

    // dup: the shape of every plugin file (its own Config, checks and hook types).
    fn log(&self, st: &RequestState, status: u16) {
        let (Some(t), Some(pipeline), Some(start)) = (&st.trace, &self.pipeline, st.start) else {
            return;
        };
        if !t.sampled {
            return;
        }
        let now_i = Instant::now();
        let base = SystemTime::now() - now_i.duration_since(start);
        let at = |i: Instant| base + i.saturating_duration_since(start);
        let rt = st.rt.as_ref();
        let route = rt
            .zip(st.route.as_ref())
            .map(|(rt, m)| rt.decl.routes[m.route].name.clone());
        let service = rt
            .zip(st.service)
            .map(|(rt, s)| rt.services[s].name.clone());
        let mut attrs = vec![
            KeyValue::new("http.response.status_code", i64::from(status)),
            KeyValue::new("kong.request.id", st.request_id.clone()),
        ];
        if let Some(r) = &route {
            attrs.push(KeyValue::new("http.route", r.clone()));
            attrs.push(KeyValue::new("kong.route.name", r.clone()));
        }
        if let Some(s) = &service {
            attrs.push(KeyValue::new("kong.service.name", s.clone()));
        }
        if let Some(ip) = &st.client_addr {
            attrs.push(KeyValue::new("client.address", ip.clone()));
        }
        if let Some(target) = &st.target_name {
            attrs.push(KeyValue::new("server.address", target.to_string()));
        }
        let err = if status >= 500 {
            Status::error(format!("HTTP {status}"))
        } else {
            Status::Unset
        };
        let mut spans = Vec::with_capacity(4 + st.plugin_spans.len());
        spans.push(self.span(
            t,
            t.root_span,
            t.remote_parent,
            t.remote_parent.is_some(),
            SpanKind::Server,
            Cow::Borrowed("kong"),
            at(start),
            at(now_i),
            attrs,
            err.clone(),
        ));
        if let Some(r) = st.routed_at {
            spans.push(self.span(
                t,
                rand::random::<u64>().max(1).to_be_bytes(),
                Some(t.root_span),
                false,
                SpanKind::Internal,
                Cow::Borrowed("kong.router"),
                at(start),
                at(r),
                Vec::new(),
                Status::Unset,
            ));
        }
        for (name, s, e) in &st.plugin_spans {
            spans.push(self.span(
                t,
                rand::random::<u64>().max(1).to_be_bytes(),
                Some(t.root_span),
                false,
                SpanKind::Internal,
                Cow::Owned(format!("kong.access.plugin.{name}")),
                at(*s),
                at(*e),
                Vec::new(),
                Status::Unset,
            ));
        }
        if let Some(us) = st.upstream_start {
            let connected = st.connected_at.unwrap_or(us);
            spans.push(self.span(
                t,
                rand::random::<u64>().max(1).to_be_bytes(),
                Some(t.root_span),
                false,
                SpanKind::Internal,
                Cow::Borrowed("kong.balancer"),
                at(us),
                at(connected),
                Vec::new(),
                Status::Unset,
            ));
            let upstream_attrs = vec![KeyValue::new(
                "http.response.status_code",
                i64::from(st.upstream_status.unwrap_or(0)),
            )];
            spans.push(self.span(
                t,
                t.upstream_span,
                Some(t.root_span),
                false,
                SpanKind::Client,
                Cow::Borrowed("kong.upstream"),
                at(connected),
                at(st.upstream_headers_at.unwrap_or(now_i)),
                upstream_attrs,
                err,
            ));
        }
        pipeline.send(spans);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_propagation_format_names_its_list_and_index() {
        let cfg: Config = serde_json::from_value(serde_json::json!({
            "traces_endpoint": "http://collector:4318/v1/traces",
            "propagation": {"extract": ["w3c"], "inject": ["preserve", "aws"]}
        }))
        .expect("parses");
        match cfg.validate() {
            Err(SpecError::Invalid { path, message }) => {
                assert_eq!(path, "propagation.inject[1]");
                assert!(message.contains("`aws` is not supported"), "{message}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }
}
