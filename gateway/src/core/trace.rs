//! The request's trace context (W3C trace ids), set by the opentelemetry plugin and read
//! by the proxy (phase timing only when sampled) and the access log (trace id).

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The trace context of one request.
#[derive(Debug, Clone)]
pub struct TraceCtx {
    pub trace_id: [u8; 16],
    pub root_span: [u8; 8],
    pub remote_parent: Option<[u8; 8]>,
    /// The span the upstream sees as its parent.
    pub upstream_span: [u8; 8],
    pub sampled: bool,
    pub tracestate: Option<String>,
}

impl TraceCtx {
    pub fn trace_id_hex(&self) -> String {
        self.trace_id
            .iter()
            .fold(String::with_capacity(32), |mut s, b| {
                s.push(char::from(HEX[usize::from(b >> 4)]));
                s.push(char::from(HEX[usize::from(b & 0xf)]));
                s
            })
    }
}
