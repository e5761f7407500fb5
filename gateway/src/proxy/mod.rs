//! The request path on hyper, by phase (Kong's rewrite/access, balancer, header_filter,
//! body_filter, log):
//! - `access.rs`: request checks, routing, the plugins' access phase;
//! - `forward.rs`: the upstream request, target choice, retries, the response;
//! - `body.rs`: request and response bodies, and the log phase when the response ends;
//! - `upstream.rs`: per-worker upstream connection pools;
//! - `hop.rs`: hop-by-hop headers.

mod access;
pub mod body;
mod compress;
mod forward;
pub mod hop;
pub mod upstream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::{Request, Response};
use hyper::body::Incoming;

use crate::core::respond::LocalResponse;
use crate::core::state::RequestState;
use crate::core::{RequestHeader, ResponseHeader, Session};
use crate::gateway::Gateway;
use crate::plugins::Plugin;
use crate::server::guard::ConnShared;
use body::{OnDone, RespBody};

pub use crate::core::chain::CONSUMER_HEADERS;

/// Largest response body buffered for plugins that rewrite it; larger ones pass through.
pub const RESPONSE_BUFFER_LIMIT: usize = 16 * 1024 * 1024;

/// What one worker thread shares among its connections.
pub struct Worker {
    pub gw: Arc<Gateway>,
    pub pool: Rc<upstream::Pool>,
}

impl Worker {
    pub fn new(gw: Arc<Gateway>) -> Worker {
        Worker {
            gw,
            pool: Rc::new(upstream::Pool::default()),
        }
    }
}

/// The client connection a request came on.
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The local address the client connected to (nginx's `server_addr`).
    pub local_ip: std::sync::Arc<str>,
    /// This connection's serial number in the process (nginx's `connection`).
    pub serial: u64,
    /// The peer's address as text (canonical: IPv4-mapped shown as IPv4), once per
    /// connection.
    pub peer_ip: String,
    /// `peer_ip` as a header value (X-Real-IP, X-Forwarded-For), made once.
    pub peer_ip_value: http::HeaderValue,
    pub local_port: u16,
    /// `local_port` as a header value (X-Forwarded-Port), made once.
    pub local_port_value: http::HeaderValue,
    pub tls: bool,
    /// The TLS server name the client sent (lower-cased, trailing dot dropped).
    pub sni: Option<Arc<str>>,
    pub h2: bool,
    pub shared: Arc<ConnShared>,
}

/// One request on its way through the phases.
pub(crate) struct Ctx<'a> {
    pub w: &'a Worker,
    pub conn: &'a ConnInfo,
    /// Boxed: it moves into the log phase at the end without copying.
    pub st: Box<RequestState>,
    pub session: Session,
    pub client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// Close the client connection after this response.
    pub close: bool,
}

/// hyper's service: one request in, one response out. Never fails: every failure is a
/// response (Kong's error bodies).
pub async fn handle(
    w: Rc<Worker>,
    conn: Rc<ConnInfo>,
    mut req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let gw = &w.gw;
    gw.inflight.fetch_add(1, Ordering::Relaxed);
    gw.total_requests.fetch_add(1, Ordering::Relaxed);
    let mut st = Box::new(RequestState {
        start: Some(Instant::now()),
        start_wall_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0),
        tls: conn.tls,
        ..RequestState::default()
    });
    let peer = conn.peer.ip().to_canonical();
    let real = gw.limits.real_ip.resolve(peer, req.headers());
    st.client_addr = Some(if real == peer {
        conn.peer_ip.clone()
    } else {
        real.to_string()
    });
    st.peer_addr = Some(conn.peer_ip.clone());
    st.peer_trusted = gw.limits.real_ip.is_trusted(peer);
    st.local_port = conn.local_port;
    st.conn = crate::core::state::ConnFacts {
        local_ip: Some(conn.local_ip.clone()),
        serial: conn.serial,
        requests: conn
            .shared
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1,
    };
    let verdict = if conn.h2 {
        None
    } else {
        conn.shared.next_verdict()
    };
    st.grpc = req.version() == http::Version::HTTP_2
        && req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let client_upgrade = hop::wants_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let session = Session::new(
        RequestHeader::from_parts(parts),
        Some(body),
        gw.limits.max_body_bytes,
        Some(conn.peer),
    );
    let mut cx = Ctx {
        w: &w,
        conn: &conn,
        st,
        session,
        client_upgrade,
        close: false,
    };
    let resp = match verdict {
        Some(why) => {
            tracing::debug!(reason = why, "rejected ambiguous framing");
            cx.close = true;
            cx.st.rt = Some(gw.current.load_full());
            cx.st.request_id = new_request_id();
            let r = cx.error(400, "Bad request");
            cx.local(r)
        }
        None => cx.run().await,
    };
    Ok(resp)
}

impl Ctx<'_> {
    async fn run(&mut self) -> Response<RespBody> {
        match self.access_phase().await {
            Ok(None) => {}
            Ok(Some(local)) => return self.local(local),
            Err(e) => {
                let r = self.core_error(&e);
                return self.local(r);
            }
        }
        self.forward().await
    }

    pub(crate) fn accept_header(&self) -> Option<&str> {
        self.session
            .req_header()
            .headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
    }

    pub(crate) fn error(&self, status: u16, msg: &str) -> LocalResponse {
        LocalResponse::error(status, msg, &self.st.request_id, self.accept_header())
    }

    /// The answer for a failure while reading the request.
    pub(crate) fn core_error(&mut self, e: &crate::core::Error) -> LocalResponse {
        self.close = true;
        match e {
            crate::core::Error::BodyTooLarge => match self.st.body_limit_response.take() {
                Some(r) => r,
                None => self.error(413, "Request Entity Too Large"),
            },
            _ => self.error(400, "Bad request"),
        }
    }

    /// Writes a response the gateway produced itself.
    pub(crate) fn local(&mut self, resp: LocalResponse) -> Response<RespBody> {
        let (mut head, body) = crate::core::respond::render(&mut self.st, resp);
        if self.close {
            head.headers.insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        let status = head.status.as_u16();
        self.respond(head, RespBody::full(body), status, None)
    }

    /// The response to the client, with the log phase attached to the end of its body.
    pub(crate) fn respond(
        &mut self,
        head: ResponseHeader,
        body: RespBody,
        status: u16,
        error: Option<&'static str>,
    ) -> Response<RespBody> {
        let req = self.session.req_header();
        if active_plugins(&mut self.st).iter().any(|p| p.logs_heads()) {
            self.st.log_heads = Some(Box::new(crate::core::state::LogHeads {
                request: req.clone(),
                response: head.headers.clone(),
            }));
        }
        let done = Finish {
            gw: self.w.gw.clone(),
            st: std::mem::take(&mut self.st),
            method: req.method.clone(),
            uri: req.uri.clone(),
            version: req.version,
            status,
            error,
        };
        let mut resp = Response::new(body.on_done(Box::new(done)));
        *resp.status_mut() = head.status;
        crate::core::case::apply(&head.headers, resp.extensions_mut());
        *resp.headers_mut() = head.headers;
        resp
    }
}

/// The log phase: metrics, plugin log hooks and the access log line, once the response
/// body is done.
struct Finish {
    gw: Arc<Gateway>,
    st: Box<RequestState>,
    method: http::Method,
    /// The client's URI (a reference-counted copy, not a new string).
    uri: http::Uri,
    version: http::Version,
    status: u16,
    error: Option<&'static str>,
}

impl OnDone for Finish {
    fn done(self: Box<Self>, bytes_out: u64, _completed: bool) {
        let mut f = *self;
        let st = &mut *f.st;
        st.bytes_out += bytes_out;
        f.gw.inflight.fetch_sub(1, Ordering::Relaxed);
        if let (Some(rt), Some(si), Some(ti)) = (&st.rt, st.service, st.target) {
            rt.services[si].balancer.targets[ti]
                .active
                .fetch_sub(1, Ordering::Relaxed);
        }
        for p in active_plugins(st).iter() {
            p.log(st, f.status);
        }
        let line = crate::access_log::RequestLine {
            method: f.method.as_str(),
            path: f.uri.path(),
            version: f.version,
        };
        crate::access_log::record(&f.gw, &line, st, f.status, f.error);
    }
}

pub use crate::core::chain::{active_plugins, finish_response_headers};

/// A fresh request id: 32 lowercase hex digits of a random (v4) UUID, drawn from a
/// thread-local generator (no system call per request).
pub(crate) fn new_request_id() -> String {
    let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
    uuid::Uuid::new_v4()
        .simple()
        .encode_lower(&mut buf)
        .to_string()
}

/// The plugins of the request (re-exported for the plugin modules' tests).
pub type PluginList = Arc<[Arc<dyn Plugin>]>;
