//! The request path: Pingora's `ProxyHttp` phases mapped onto Kong's (rewrite/access,
//! balancer, header_filter, body_filter, log).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::ErrorType;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};

use crate::balancer::{HashInputs, Outcome};
use crate::gateway::Gateway;
use crate::plugins::{Flow, Plugin};
use crate::respond::{self, LocalResponse};
use crate::router::{RequestView, normalize_path, upstream_path};
use crate::state::RequestState;

/// Headers an auth plugin sets upstream; any client-sent copy is removed first.
pub const CONSUMER_HEADERS: &[&str] = &[
    "x-consumer-id",
    "x-consumer-custom-id",
    "x-consumer-username",
    "x-credential-identifier",
    "x-anonymous-consumer",
    "x-consumer-groups",
    "x-authenticated-groups",
];

/// Whether a (lowercase) header name is one of [`CONSUMER_HEADERS`].
fn is_consumer_header(name: &str) -> bool {
    CONSUMER_HEADERS.contains(&name)
}

/// Largest response body buffered for plugins that rewrite it; larger ones pass through.
pub const RESPONSE_BUFFER_LIMIT: usize = 16 * 1024 * 1024;

pub struct Proxy {
    pub gw: Arc<Gateway>,
    pub tls: bool,
}

fn header_str<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Rejects requests whose framing two parsers could read differently (smuggling).
fn framing_error(req: &RequestHeader) -> Option<&'static str> {
    if req.version == http::Version::HTTP_2 {
        return None;
    }
    let cls: Vec<_> = req
        .headers
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .collect();
    let tes: Vec<_> = req
        .headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .collect();
    if !tes.is_empty() && !cls.is_empty() {
        return Some("both Content-Length and Transfer-Encoding");
    }
    if cls.len() > 1 {
        return Some("more than one Content-Length");
    }
    if let Some(cl) = cls.first() {
        let b = cl.as_bytes();
        if b.is_empty() || b.len() > 19 || !b.iter().all(u8::is_ascii_digit) {
            return Some("invalid Content-Length");
        }
    }
    if tes.len() > 1 {
        return Some("more than one Transfer-Encoding");
    }
    if let Some(te) = tes.first() {
        if te.as_bytes() != b"chunked" && !te.as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Some("unsupported Transfer-Encoding");
        }
        if req.version == http::Version::HTTP_10 {
            return Some("Transfer-Encoding in HTTP/1.0");
        }
    }
    None
}

impl Proxy {
    async fn answer(
        &self,
        session: &mut Session,
        st: &mut RequestState,
        resp: LocalResponse,
    ) -> Result<bool> {
        respond::write(session, st, resp).await?;
        Ok(true)
    }

    fn error(&self, session: &Session, st: &RequestState, status: u16, msg: &str) -> LocalResponse {
        LocalResponse::error(
            status,
            msg,
            &st.request_id,
            header_str(session.req_header(), "accept"),
        )
    }

    /// Runs the access phase of the route's plugins in priority order.
    async fn run_access(
        &self,
        session: &mut Session,
        st: &mut RequestState,
        ri: usize,
    ) -> Result<Option<LocalResponse>> {
        let Some(rt) = st.rt.clone() else {
            return Ok(None);
        };
        for slot in &rt.route_plugins[ri] {
            if let Some(p) = slot.select(None, &[]) {
                p.start_trace(session.req_header(), st);
            }
        }
        // Phase timings feed spans: only worth taking when the trace is sampled.
        let traced = st.trace.as_ref().is_some_and(|t| t.sampled);
        if traced {
            st.plugin_spans.reserve(rt.route_plugins[ri].len());
        }
        for slot in &rt.route_plugins[ri] {
            let groups = st
                .consumer
                .map(|c| rt.decl.consumers[c].groups.clone())
                .unwrap_or_default();
            let Some(p) = slot.select(st.consumer, &groups) else {
                continue;
            };
            if !p.has_access() {
                // A consumer-scoped opentelemetry instance starts its trace here.
                p.start_trace(session.req_header(), st);
                continue;
            }
            let t0 = Instant::now();
            let flow = p.access(session, st).await?;
            if traced {
                st.plugin_spans.push((p.name(), t0, Instant::now()));
            }
            if let Flow::Respond(r) = flow {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }
}

/// The plugins of the request's route, chosen for its final consumer. Once the access
/// phase is over the consumer cannot change, so the choice is made once and reused by
/// every later phase.
pub fn active_plugins(st: &mut RequestState) -> Arc<[Arc<dyn Plugin>]> {
    if let Some(c) = &st.plugin_cache {
        return c.clone();
    }
    let list: Arc<[Arc<dyn Plugin>]> = select_plugins(st).into();
    if st.access_done {
        st.plugin_cache = Some(list.clone());
    }
    list
}

fn select_plugins(st: &RequestState) -> Vec<Arc<dyn Plugin>> {
    let Some(rt) = &st.rt else {
        return Vec::new();
    };
    let Some(m) = &st.route else {
        return rt
            .global_plugins
            .iter()
            .filter_map(|s| s.select(None, &[]).cloned())
            .collect();
    };
    let groups = st
        .consumer
        .map(|c| rt.decl.consumers[c].groups.clone())
        .unwrap_or_default();
    rt.route_plugins[m.route]
        .iter()
        .filter_map(|s| s.select(st.consumer, &groups).cloned())
        .collect()
}

/// Headers every response gets (request id, plugin headers, plugin header hooks).
pub fn finish_response_headers(h: &mut ResponseHeader, st: &mut RequestState) {
    if !st.request_id.is_empty() {
        let _ = h.insert_header("x-request-id", st.request_id.as_str());
        let _ = h.insert_header("x-kong-request-id", st.request_id.as_str());
    }
    for (k, v) in std::mem::take(&mut st.response_headers) {
        let _ = h.append_header(k, v.as_str());
    }
    for p in active_plugins(st).iter() {
        p.response_header(h, st);
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestState;

    fn new_ctx(&self) -> RequestState {
        RequestState::default()
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        st: &mut RequestState,
    ) -> Result<()> {
        self.gw.inflight.fetch_add(1, Ordering::Relaxed);
        self.gw.total_requests.fetch_add(1, Ordering::Relaxed);
        st.start = Some(Instant::now());
        st.start_wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        st.tls = self.tls || session.digest().is_some_and(|d| d.ssl_digest.is_some());
        if let Some(peer) = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
        {
            let real = self
                .gw
                .limits
                .real_ip
                .resolve(peer, &session.req_header().headers);
            let peer_s = peer.to_string();
            st.client_addr = Some(if real == peer {
                peer_s.clone()
            } else {
                real.to_string()
            });
            st.peer_addr = Some(peer_s);
        }
        let limits = &self.gw.limits;
        session.set_read_timeout(Some(limits.client_body_timeout));
        session.set_write_timeout(Some(limits.client_send_timeout));
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, st: &mut RequestState) -> Result<bool> {
        let rt = self.gw.current.load_full();
        st.rt = Some(rt.clone());
        let req = session.req_header();
        st.request_id = header_str(req, "x-request-id")
            .filter(|v| !v.is_empty() && v.len() <= 200 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_string)
            .unwrap_or_else(new_request_id);

        // Defensive checks before anything reads the body.
        let smuggled_cl = req.headers.contains_key(http::header::TRANSFER_ENCODING)
            && raw_has_content_length(session);
        let req = session.req_header();
        if let Some(why) = framing_error(req)
            .or(smuggled_cl.then_some("both Content-Length and Transfer-Encoding"))
        {
            tracing::debug!(reason = why, "rejected ambiguous framing");
            session.set_keepalive(None);
            let r = self.error(session, st, 400, "Bad request");
            return self.answer(session, st, r).await;
        }
        let header_bytes: usize = req
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if req.headers.len() > self.gw.limits.max_header_count
            || header_bytes > self.gw.limits.max_header_bytes
        {
            session.set_keepalive(None);
            let r = self.error(session, st, 431, "Request Header Fields Too Large");
            return self.answer(session, st, r).await;
        }
        if let Some(cl) = header_str(req, "content-length").and_then(|v| v.parse::<u64>().ok())
            && cl > self.gw.limits.max_body_bytes
        {
            session.set_keepalive(None);
            let r = self.error(session, st, 413, "Request Entity Too Large");
            return self.answer(session, st, r).await;
        }
        st.body_limit = Some(self.gw.limits.max_body_bytes);
        st.request_header_bytes = header_bytes as u64;

        let path = normalize_path(req.uri.path());
        let host = header_str(req, "host")
            .or_else(|| req.uri.authority().map(|a| a.as_str()))
            .unwrap_or_default();
        let found = {
            let headers = &req.headers;
            let lookup = |name: &str| -> Vec<String> {
                headers
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(',').map(|s| s.trim().to_string()))
                    .collect()
            };
            let view = RequestView {
                method: req.method.as_str(),
                host,
                path: &path,
                tls: st.tls,
                header: &lookup,
            };
            rt.router.route(&view)
        };
        let Some(m) = found else {
            let r = self.error(session, st, 404, "no Route matched with those values");
            return self.answer(session, st, r).await;
        };
        st.routed_at = Some(Instant::now());
        let route = &rt.decl.routes[m.route];
        if m.protocol_mismatch {
            let code = route.https_redirect_status_code;
            st.route = Some(m);
            let r = if code == 426 {
                self.error(session, st, 426, "Please use HTTPS protocol")
                    .with_header("connection", "Upgrade")
                    .with_header("upgrade", "TLS/1.2, HTTP/1.1")
            } else {
                let loc = format!(
                    "https://{}{}",
                    host.split(':').next().unwrap_or(""),
                    req_uri_string(session.req_header())
                );
                LocalResponse::error(code, "Moved", &st.request_id, None)
                    .with_header("location", loc)
            };
            return self.answer(session, st, r).await;
        }
        st.request_origin = header_str(session.req_header(), "origin").map(str::to_string);
        let query = req.uri.query();
        let Some(si) = route.service else {
            st.route = Some(m);
            let r = self.error(session, st, 503, "no Service found with those values");
            return self.answer(session, st, r).await;
        };
        let svc = &rt.services[si];
        let mut up = upstream_path(
            svc.path.as_deref(),
            route.strip_path,
            &m.matched_path,
            &path,
        );
        if let Some(q) = query {
            up.push('?');
            up.push_str(q);
        }
        st.upstream_uri = Some(up);
        st.service = Some(si);
        let ri = m.route;
        st.route = Some(m);
        if !svc.enabled {
            let r = self.error(session, st, 503, "Service unavailable");
            return self.answer(session, st, r).await;
        }
        if let Some(r) = self.run_access(session, st, ri).await? {
            return self.answer(session, st, r).await;
        }
        st.access_done = true;
        let plugins = active_plugins(st);
        let req = session.req_header();
        st.request_buffering = plugins.iter().any(|p| p.buffers_request(req, st));
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        st: &mut RequestState,
    ) -> Result<()> {
        if let Some(b) = body {
            st.bytes_in += b.len() as u64;
            if let Some(limit) = st.body_limit
                && st.bytes_in > limit
            {
                return Error::e_explain(ErrorType::HTTPStatus(413), "request body over the limit");
            }
        }
        // A plugin rewrites the whole body: collect it, hand it over at the end. The body
        // limit above bounds the buffer.
        if let Some(buf) = st.request_buffer.as_mut() {
            if let Some(b) = body.as_mut() {
                buf.extend_from_slice(b);
            }
            // Nothing goes upstream until the end. An empty chunk, not `None`: Pingora
            // reads `None` as the end of the body.
            *body = Some(Bytes::new());
            if end_of_stream {
                let mut whole = st.request_buffer.take().unwrap_or_default();
                for p in active_plugins(st).iter() {
                    p.request_body(&mut whole, st);
                }
                *body = Some(whole.freeze());
            }
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        st: &mut RequestState,
    ) -> Result<Box<HttpPeer>> {
        let rt = st
            .rt
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no runtime"))?;
        let si = st
            .service
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no service"))?;
        let svc = &rt.services[si];
        let b = &svc.balancer;
        // A retry releases the previous target.
        if let Some(prev) = st.target.take() {
            b.targets[prev].active.fetch_sub(1, Ordering::Relaxed);
        }
        let req = session.req_header();
        let consumer_id = st.consumer.map(|c| rt.decl.consumers[c].id.as_str());
        let header_lookup = |name: &str| header_str(req, name).map(str::to_string);
        let inputs = HashInputs {
            header: &header_lookup,
            ip: st.client_addr.as_deref(),
            consumer: consumer_id,
            path: req.uri.path(),
        };
        let Some(i) = b.select(&inputs, &st.tried) else {
            return Error::e_explain(
                ErrorType::HTTPStatus(503),
                "failure to get a peer from the ring-balancer",
            );
        };
        let t = &b.targets[i];
        let Some(addr) = t.addr() else {
            return Error::e_explain(ErrorType::HTTPStatus(503), "name resolution failed");
        };
        t.active.fetch_add(1, Ordering::Relaxed);
        st.target = Some(i);
        st.tried.push(i);
        st.attempts += 1;
        st.target_name = Some(t.name.clone());
        let mut peer = HttpPeer::new(addr, svc.tls, svc.host.clone());
        peer.options.connection_timeout = Some(svc.connect_timeout);
        peer.options.total_connection_timeout = Some(svc.connect_timeout);
        peer.options.read_timeout = Some(svc.read_timeout);
        peer.options.write_timeout = Some(svc.write_timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        st.upstream_start = Some(Instant::now());
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        st: &mut RequestState,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(rt), Some(si), Some(ti)) = (&st.rt, st.service, st.target) {
            let svc = &rt.services[si];
            let outcome = if matches!(e.etype(), ErrorType::ConnectTimedout) {
                Outcome::Timeout
            } else {
                Outcome::TcpFailure
            };
            svc.balancer.passive(ti, outcome);
            // Connect failures never reached the upstream: always safe to try another target.
            if st.attempts <= svc.retries {
                e.set_retry(true);
            } else {
                e.set_retry(false);
            }
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        st: &mut RequestState,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let idempotent = session.req_header().method.is_idempotent();
        let within = st
            .rt
            .as_ref()
            .zip(st.service)
            .is_some_and(|(rt, si)| st.attempts <= rt.services[si].retries);
        if let (Some(rt), Some(si), Some(ti)) = (&st.rt, st.service, st.target) {
            let outcome = if matches!(
                e.etype(),
                ErrorType::ReadTimedout | ErrorType::WriteTimedout
            ) {
                Outcome::Timeout
            } else {
                Outcome::TcpFailure
            };
            rt.services[si].balancer.passive(ti, outcome);
        }
        if !idempotent || session.as_ref().retry_buffer_truncated() || !within {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        st: &mut RequestState,
    ) -> Result<()> {
        let rt = st
            .rt
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no runtime"))?;
        let (Some(m), Some(si)) = (&st.route, st.service) else {
            return Ok(());
        };
        let route = &rt.decl.routes[m.route];
        let svc = &rt.services[si];
        if !st.strip_query.is_empty()
            && let Some(uri) = st.upstream_uri.as_mut()
            && let Some((path, q)) = uri.split_once('?')
        {
            let kept: Vec<&str> = q
                .split('&')
                .filter(|kv| {
                    let k = kv.split('=').next().unwrap_or("");
                    let k = percent_encoding::percent_decode_str(k).decode_utf8_lossy();
                    !st.strip_query.iter().any(|s| s == k.as_ref())
                })
                .collect();
            *uri = if kept.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            };
        }
        if let Some(uri) = &st.upstream_uri {
            req.set_uri(
                uri.parse::<http::Uri>()
                    .map_err(|_| Error::explain(ErrorType::HTTPStatus(400), "bad upstream uri"))?,
            );
        }
        let client_host = header_str(session.req_header(), "host").map(str::to_string);
        if !route.preserve_host {
            let host = svc.balancer.host_header.clone().unwrap_or_else(|| {
                let port = rt.decl.services[si].port;
                if (svc.tls && port == 443) || (!svc.tls && port == 80) {
                    svc.host.clone()
                } else {
                    format!("{}:{port}", svc.host)
                }
            });
            req.insert_header("host", host)?;
        }
        if req.headers.keys().any(|k| is_consumer_header(k.as_str())) {
            for h in CONSUMER_HEADERS {
                req.remove_header(*h);
            }
        }
        for h in &st.strip_upstream {
            req.remove_header(h);
        }
        for (k, v) in &st.upstream_headers {
            req.insert_header(k.clone(), v.as_str())?;
        }
        let ip = st.client_addr.clone().unwrap_or_default();
        // Kong appends the connection's peer (realip_remote_addr) to a client-sent
        // X-Forwarded-For, and sends the resolved client address otherwise.
        let xff = match header_str(req, "x-forwarded-for") {
            Some(prev) if !prev.is_empty() => {
                format!("{prev}, {}", st.peer_addr.as_deref().unwrap_or(&ip))
            }
            _ => ip.clone(),
        };
        req.insert_header("x-forwarded-for", xff)?;
        req.insert_header("x-real-ip", ip)?;
        req.insert_header("x-forwarded-proto", if st.tls { "https" } else { "http" })?;
        if let Some(h) = client_host {
            let (hn, port) = match h.rsplit_once(':') {
                Some((a, p)) if p.chars().all(|c| c.is_ascii_digit()) => {
                    (a.to_string(), p.to_string())
                }
                _ => (h.clone(), if st.tls { "443".into() } else { "80".into() }),
            };
            req.insert_header("x-forwarded-host", hn)?;
            req.insert_header("x-forwarded-port", port)?;
        }
        req.insert_header(
            "x-forwarded-path",
            session.req_header().uri.path().to_string(),
        )?;
        req.insert_header("x-request-id", st.request_id.as_str())?;
        for p in active_plugins(st).iter() {
            p.upstream_request(req, st);
        }
        if st.request_buffering {
            // The body's length is known only once a plugin rewrote it: send it chunked.
            // Reset per attempt (a retry replays the body from the start).
            req.remove_header("content-length");
            req.insert_header("transfer-encoding", "chunked")?;
            st.request_buffer = Some(bytes::BytesMut::new());
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        st: &mut RequestState,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        st.upstream_status = Some(status);
        st.upstream_headers_at = Some(Instant::now());
        if let Some(t0) = st.upstream_start {
            st.upstream_latency_ms = Some(t0.elapsed().as_millis() as u64);
        }
        if let (Some(rt), Some(si), Some(ti)) = (&st.rt, st.service, st.target) {
            let b = &rt.services[si].balancer;
            b.passive_status(ti, status);
            if let Some(t0) = st.upstream_start {
                b.targets[ti].observe_latency(t0.elapsed().as_micros() as u64);
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        st: &mut RequestState,
    ) -> Result<()> {
        let up = st.upstream_latency_ms.unwrap_or(0);
        let total = st.elapsed_ms();
        resp.insert_header("x-kong-upstream-latency", http::HeaderValue::from(up))?;
        resp.insert_header(
            "x-kong-proxy-latency",
            http::HeaderValue::from(total.saturating_sub(up)),
        )?;
        resp.append_header("via", concat!("1.1 gateway/", env!("CARGO_PKG_VERSION")))?;
        finish_response_headers(resp, st);
        let plugins = active_plugins(st);
        if plugins.iter().any(|p| p.buffers_response(resp)) {
            resp.remove_header("content-length");
            st.response_buffer = Some(bytes::BytesMut::new());
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        st: &mut RequestState,
    ) -> Result<Option<Duration>> {
        if let Some(buf) = st.response_buffer.as_mut() {
            if let Some(b) = body.take() {
                if buf.len() + b.len() > RESPONSE_BUFFER_LIMIT {
                    // Too large to rewrite: pass it through untouched, never half-rewritten.
                    let mut all = st.response_buffer.take().unwrap_or_default();
                    all.extend_from_slice(&b);
                    *body = Some(all.freeze());
                    st.response_passthrough = true;
                    tracing::debug!("response body over the buffering limit, passed through");
                } else {
                    buf.extend_from_slice(&b);
                }
            }
            if end_of_stream && st.response_buffer.is_some() {
                let mut whole = st.response_buffer.take().unwrap_or_default();
                for p in active_plugins(st).iter() {
                    p.response_body(&mut whole, st);
                }
                *body = Some(whole.freeze());
            }
        }
        if let Some(b) = body {
            st.bytes_out += b.len() as u64;
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        st: &mut RequestState,
    ) -> FailToProxy {
        if matches!(e.etype(), ErrorType::HTTPStatus(413))
            && session.response_written().is_none()
            && let Some(r) = st.body_limit_response.take()
        {
            let code = r.status;
            if let Err(err) = respond::write(session, st, r).await {
                tracing::debug!(error = %err, "could not write error response");
            }
            return FailToProxy {
                error_code: code,
                can_reuse_downstream: false,
            };
        }
        let (code, msg) = match e.etype() {
            ErrorType::HTTPStatus(503) => (
                503,
                e.context
                    .as_ref()
                    .map(|c| c.as_str().to_string())
                    .unwrap_or_else(|| "failure to get a peer from the ring-balancer".into()),
            ),
            ErrorType::HTTPStatus(413) => (413, "Request Entity Too Large".into()),
            ErrorType::HTTPStatus(c) => (*c, "An unexpected error occurred".into()),
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if e.esource() == &pingora::ErrorSource::Upstream =>
            {
                (504, "The upstream server is timing out".into())
            }
            _ => match e.esource() {
                pingora::ErrorSource::Upstream => (
                    502,
                    "An invalid response was received from the upstream server".into(),
                ),
                pingora::ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                        (0, String::new())
                    }
                    ErrorType::ReadTimedout => (408, "Request Timeout".into()),
                    _ => (400, "Bad request".into()),
                },
                _ => (500, "An unexpected error occurred".into()),
            },
        };
        if code > 0 && session.response_written().is_none() {
            let msg = msg.split(" context: ").next().unwrap_or(&msg).to_string();
            let r = LocalResponse::error(
                code,
                &msg,
                &st.request_id,
                header_str(session.req_header(), "accept"),
            );
            if let Err(err) = respond::write(session, st, r).await {
                tracing::debug!(error = %err, "could not write error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, st: &mut RequestState) {
        self.gw.inflight.fetch_sub(1, Ordering::Relaxed);
        if let (Some(rt), Some(si), Some(ti)) = (&st.rt, st.service, st.target) {
            rt.services[si].balancer.targets[ti]
                .active
                .fetch_sub(1, Ordering::Relaxed);
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(st.local_status)
            .unwrap_or(0);
        for p in active_plugins(st).iter() {
            p.log(st, status);
        }
        crate::access_log::record(&self.gw, session, st, status, e);
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        _fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        st: &mut RequestState,
    ) -> Result<()> {
        st.connected_at = Some(Instant::now());
        Ok(())
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestState, _error: &Error) -> bool {
        true
    }
}

/// Pingora drops Content-Length when Transfer-Encoding is present (RFC 9112 allows
/// that); the gateway rejects such requests instead, so it looks at the raw header block.
fn raw_has_content_length(session: &Session) -> bool {
    let pingora::protocols::http::ServerSession::H1(h1) = session.as_downstream() else {
        return false;
    };
    let raw = h1.get_headers_raw_bytes();
    raw.split(|b| *b == b'\n')
        .any(|line| line.len() >= 15 && line[..15].eq_ignore_ascii_case(b"content-length:"))
}

fn req_uri_string(req: &RequestHeader) -> String {
    req.uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into())
}

/// A fresh request id: 32 lowercase hex digits of a random (v4) UUID, drawn from a
/// thread-local generator (no system call per request).
fn new_request_id() -> String {
    let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
    uuid::Uuid::new_v4()
        .simple()
        .encode_lower(&mut buf)
        .to_string()
}
