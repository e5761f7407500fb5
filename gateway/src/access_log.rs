//! Structured access logs: one JSON line per request, written off the request path by a
//! dedicated thread. Credentials (Authorization, cookies, tokens in the query) are never
//! logged: the line carries the path without its query string.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use crate::core::state::RequestState;
use crate::gateway::Gateway;
use crate::plugins::log_serializer;

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
    // Nothing to do with the log off: return before looking anything up.
    if !gw.access_log.enabled() {
        return;
    }
    let route = log_serializer::route_name(st);
    let service = log_serializer::service_name(st);
    let consumer = log_serializer::consumer_username(st);
    let total_ms = st.elapsed_ms();
    let upstream_ms = st.upstream_latency_ms;
    let bytes_in = log_serializer::request_size(st);
    let trace_id = st.trace_id_hex();
    let protocol = match req.version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    };
    // Fields in alphabetical order (the order of the earlier JSON-object lines), written
    // straight into the line's buffer: no JSON tree per request.
    let line = Line {
        attempts: st.attempts,
        bytes_in,
        bytes_out: st.bytes_out,
        client_ip: st.client_addr.as_deref(),
        consumer,
        correlation_id: st.correlation_id.as_ref().map(|(_, v)| v.as_str()),
        error: err,
        latencies: Latencies {
            gateway_ms: total_ms.saturating_sub(upstream_ms.unwrap_or(0)),
            request_ms: total_ms,
            upstream_ms,
        },
        method: req.method,
        path: req.path,
        protocol,
        request_id: &st.request_id,
        route,
        service,
        status,
        time: httpdate::HttpDate::from(std::time::SystemTime::now()),
        time_ms: st.start_wall_ms as u64,
        trace_id: trace_id.as_deref(),
        upstream_status: st.upstream_status,
        upstream_target: st.target_name.as_deref(),
    };
    let mut buf = Vec::with_capacity(512);
    if serde_json::to_writer(&mut buf, &line).is_err() {
        return;
    }
    buf.push(b'\n');
    let Ok(s) = String::from_utf8(buf) else {
        return;
    };
    gw.access_log.send(s);
}

#[derive(serde::Serialize)]
struct Latencies {
    gateway_ms: u64,
    request_ms: u64,
    upstream_ms: Option<u64>,
}

#[derive(serde::Serialize)]
struct Line<'a> {
    attempts: u32,
    bytes_in: u64,
    bytes_out: u64,
    client_ip: Option<&'a str>,
    consumer: Option<&'a str>,
    correlation_id: Option<&'a str>,
    error: Option<&'a str>,
    latencies: Latencies,
    method: &'a str,
    path: &'a str,
    protocol: &'a str,
    request_id: &'a str,
    route: Option<&'a str>,
    service: Option<&'a str>,
    status: u16,
    #[serde(serialize_with = "http_date")]
    time: httpdate::HttpDate,
    time_ms: u64,
    trace_id: Option<&'a str>,
    upstream_status: Option<u16>,
    upstream_target: Option<&'a str>,
}

fn http_date<S: serde::Serializer>(d: &httpdate::HttpDate, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(d)
}
