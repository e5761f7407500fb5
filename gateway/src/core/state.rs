//! Per-request state (Pingora's CTX): everything the phases share about one request.

use std::sync::Arc;
use std::time::Instant;

use crate::core::runtime::Runtime;
use crate::router::RouteMatch;

#[derive(Debug, Default, Clone)]
pub struct ConnFacts {
    /// The local address the client connected to.
    pub local_ip: Option<Arc<str>>,
    pub serial: u64,
    pub requests: u64,
}

#[derive(Default)]
pub struct RequestState {
    /// The configuration this request runs under, taken once at its start.
    pub rt: Option<Arc<Runtime>>,
    pub start: Option<Instant>,
    pub start_wall_ms: u128,
    /// The request id (`X-Request-ID`): the client's when it sent one.
    pub request_id: String,
    /// `request_id` as a header value, once computed.
    pub request_id_header: Option<http::HeaderValue>,
    /// The client address (the peer, or from a trusted peer's real-ip header).
    pub client_addr: Option<String>,
    /// The connection's peer address.
    pub peer_addr: Option<String>,
    /// The peer is a trusted proxy (`--trusted-ips`): its X-Forwarded-* are believed.
    pub peer_trusted: bool,
    /// The local port the client connected to.
    pub local_port: u16,
    /// The connection's serial number and how many requests it carried (this one
    /// included), for correlation-id's `tracker`.
    pub conn: ConnFacts,
    pub tls: bool,
    /// A gRPC request (HTTP/2, `Content-Type: application/grpc...`): the gateway's own
    /// answers carry `grpc-status`/`grpc-message`, as Kong's do.
    pub grpc: bool,
    pub route: Option<RouteMatch>,
    pub service: Option<usize>,
    /// Path (and query) sent upstream.
    pub upstream_uri: Option<String>,
    /// Authenticated consumer (index into the runtime's consumers).
    pub consumer: Option<usize>,
    pub credential: Option<String>,
    pub anonymous: bool,
    /// Upstream headers set by auth plugins (consumer headers, forwarded claims).
    pub upstream_headers: Vec<(http::HeaderName, String)>,
    /// Headers removed from the upstream request (client copies of headers the gateway owns).
    pub strip_upstream: Vec<http::HeaderName>,
    /// Query parameters removed from the upstream request (`hide_credentials`).
    pub strip_query: Vec<String>,
    /// The request's Origin header, for CORS.
    pub request_origin: Option<String>,
    /// Set by the cors plugin when no CORS response headers apply (preflight paths).
    pub cors_skip: bool,
    /// Response headers set by plugins during access (rate-limit headers, ...).
    pub response_headers: Vec<(http::HeaderName, String)>,
    /// Claims of a verified JWT, for plugins after auth (tier, limit key).
    pub jwt_claims: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
    pub correlation_id: Option<(http::HeaderName, String)>,
    /// Targets already tried (indexes into the service's balancer).
    pub tried: Vec<usize>,
    pub target: Option<usize>,
    pub target_name: Option<std::sync::Arc<str>>,
    /// `hash_on: cookie` and the request had none: the value issued (Set-Cookie).
    pub hash_cookie: Option<String>,
    pub attempts: u32,
    pub upstream_start: Option<Instant>,
    pub upstream_latency_ms: Option<u64>,
    pub upstream_status: Option<u16>,
    /// Set when the gateway answered itself (no upstream).
    pub local_response: bool,
    pub local_status: Option<u16>,
    /// Request body bytes read so far.
    pub bytes_in: u64,
    /// Size of the request's header block (approximate: names, values, separators).
    pub request_header_bytes: u64,
    pub bytes_out: u64,
    /// Limit on the request body, checked as it streams.
    pub body_limit: Option<u64>,
    pub rate_limit_tier: Option<String>,
    /// Trace context of this request when the opentelemetry plugin runs.
    pub trace: Option<super::trace::TraceCtx>,
    /// Phase timestamps for spans: routing done, each plugin's access (name, start, end),
    /// connected to the upstream, upstream response headers received.
    pub routed_at: Option<Instant>,
    pub plugin_spans: Vec<(&'static str, Instant, Instant)>,
    pub connected_at: Option<Instant>,
    pub upstream_headers_at: Option<Instant>,
    /// Plugin-private per-request values, by type (each plugin defines its own type).
    pub ext: http::Extensions,
    /// Set after access when a plugin rewrites the whole request body.
    pub request_buffering: bool,
    /// Request body being collected for `Plugin::request_body` (per upstream attempt).
    pub request_buffer: Option<bytes::BytesMut>,
    /// The answer when the body goes over `body_limit` (request-size-limiting's), instead
    /// of the gateway's own 413.
    pub body_limit_response: Option<crate::core::respond::LocalResponse>,
    /// Set once a response body went over the buffering limit: passed through as is.
    pub response_passthrough: bool,
    /// Set when the access phase finished (the consumer is final).
    pub access_done: bool,
    /// The request's plugins, chosen once after the access phase.
    pub plugin_cache: Option<Arc<[Arc<dyn super::plugin::Plugin>]>>,
    /// Buffer for plugins that rewrite the whole response body.
    pub response_buffer: Option<bytes::BytesMut>,
    /// The request head and the response headers as sent, kept only when a plugin of
    /// the request serializes them in its log phase (`Plugin::logs_heads`).
    pub log_heads: Option<Box<LogHeads>>,
}

/// What a log serializer needs after the response (Kong's `kong.log.serialize`) that the
/// rest of the state does not keep: the client's request head (with any plugin edits)
/// and the response headers sent to the client.
pub struct LogHeads {
    pub request: super::RequestHeader,
    pub response: http::HeaderMap,
}

impl RequestState {
    /// The trace id (32 hex digits) when the opentelemetry plugin runs on this request.
    pub fn trace_id_hex(&self) -> Option<String> {
        self.trace.as_ref().map(|t| t.trace_id_hex())
    }

    /// The request id as a header value (parsed once per request).
    pub fn request_id_value(&mut self) -> http::HeaderValue {
        if let Some(v) = &self.request_id_header {
            return v.clone();
        }
        let v = http::HeaderValue::from_str(&self.request_id)
            .unwrap_or_else(|_| http::HeaderValue::from_static("invalid"));
        self.request_id_header = Some(v.clone());
        v
    }

    pub fn elapsed_ms(&self) -> u64 {
        self.start
            .map(|s| s.elapsed().as_millis() as u64)
            .unwrap_or(0)
    }
}
