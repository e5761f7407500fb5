//! Structured access logs: one JSON line per request, written off the request path by a
//! dedicated thread. Credentials (Authorization, cookies, tokens in the query) are never
//! logged: the line carries the path without its query string.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use crate::core::state::RequestState;
use crate::gateway::Gateway;

pub struct Sink {
    tx: Option<SyncSender<String>>,
    pub dropped: AtomicU64,
}

impl Sink {
    /// `off`, `stdout`, or a file path (appended).
    pub fn open(target: &str) -> std::io::Result<Sink> {
        if target == "off" {
            return Ok(Sink {
                tx: None,
                dropped: AtomicU64::new(0),
            });
        }
        let mut out: Box<dyn Write + Send> = if target == "stdout" || target == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(target)?,
            )
        };
        let (tx, rx) = sync_channel::<String>(65_536);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut buf = std::io::BufWriter::with_capacity(64 * 1024, &mut out);
                while let Ok(line) = rx.recv() {
                    let _ = buf.write_all(line.as_bytes());
                    while let Ok(more) = rx.try_recv() {
                        let _ = buf.write_all(more.as_bytes());
                    }
                    let _ = buf.flush();
                }
            })?;
        Ok(Sink {
            tx: Some(tx),
            dropped: AtomicU64::new(0),
        })
    }

    fn send(&self, line: String) {
        if let Some(tx) = &self.tx
            && let Err(TrySendError::Full(_)) = tx.try_send(line)
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }
}

/// The client's request line, as the access log shows it.
pub struct RequestLine<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub version: http::Version,
}

/// Records the access log line for a finished request.
pub fn record(
    gw: &Gateway,
    req: &RequestLine<'_>,
    st: &RequestState,
    status: u16,
    err: Option<&str>,
) {
    let rt = st.rt.as_ref();
    let route = rt
        .zip(st.route.as_ref())
        .map(|(rt, m)| rt.decl.routes[m.route].name.as_str());
    let service = rt
        .zip(st.service)
        .map(|(rt, s)| rt.services[s].name.as_str());
    let consumer = rt
        .zip(st.consumer)
        .and_then(|(rt, c)| rt.decl.consumers[c].username.as_deref());
    let total_ms = st.elapsed_ms();
    let upstream_ms = st.upstream_latency_ms;
    let bytes_in = st.bytes_in + st.request_header_bytes;
    if !gw.access_log.enabled() {
        return;
    }
    let now = httpdate::fmt_http_date(std::time::SystemTime::now());
    let line = serde_json::json!({
        "time": now,
        "time_ms": st.start_wall_ms as u64,
        "request_id": st.request_id,
        "correlation_id": st.correlation_id.as_ref().map(|(_, v)| v.as_str()),
        "trace_id": st.trace_id_hex(),
        "client_ip": st.client_addr,
        "method": req.method,
        "path": req.path,
        "protocol": format!("{:?}", req.version),
        "route": route,
        "service": service,
        "consumer": consumer,
        "upstream_target": st.target_name,
        "attempts": st.attempts,
        "status": status,
        "upstream_status": st.upstream_status,
        "latencies": {
            "request_ms": total_ms,
            "upstream_ms": upstream_ms,
            "gateway_ms": total_ms.saturating_sub(upstream_ms.unwrap_or(0)),
        },
        "bytes_in": bytes_in,
        "bytes_out": st.bytes_out,
        "error": err,
    });
    let mut s = line.to_string();
    s.push('\n');
    gw.access_log.send(s);
}
