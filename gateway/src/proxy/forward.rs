//! Balancer and proxy phases: the upstream request (URI, Host, X-Forwarded-*, consumer
//! headers, plugin hooks), target choice with retries and passive health, the upstream
//! response (latency headers, plugin hooks, body rewriting) and upgrades.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{BodyReport, PoolReturn, RespBody, UpBody};
use super::upstream::{PoolKey, UpTx};
use super::{Ctx, RESPONSE_BUFFER_LIMIT, active_plugins, finish_response_headers, hop};
use crate::balancer::{HashInputs, Outcome};
use crate::core::chain::{CONSUMER_HEADERS, is_consumer_header};
use crate::core::{RequestHeader, ResponseHeader};

const SERVER_TOKEN: &str = concat!("gateway/", env!("CARGO_PKG_VERSION"));

/// `Via` with this gateway added after what is already there (one comma-separated value).
fn joined_via(h: &http::HeaderMap, version: &str) -> HeaderValue {
    if !h.contains_key(http::header::VIA) {
        // The common case, without formatting.
        const VIA_2: HeaderValue =
            HeaderValue::from_static(concat!("2 gateway/", env!("CARGO_PKG_VERSION")));
        const VIA_10: HeaderValue =
            HeaderValue::from_static(concat!("1.0 gateway/", env!("CARGO_PKG_VERSION")));
        const VIA_11: HeaderValue =
            HeaderValue::from_static(concat!("1.1 gateway/", env!("CARGO_PKG_VERSION")));
        return match version {
            "2" => VIA_2,
            "1.0" => VIA_10,
            _ => VIA_11,
        };
    }
    let mine = format!("{version} {SERVER_TOKEN}");
    let prev: Vec<&str> = h
        .get_all(http::header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let text = if prev.is_empty() {
        mine
    } else {
        format!("{}, {mine}", prev.join(", "))
    };
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("1.1 gateway"))
}

/// The URI of an HTTP/2 upstream request: scheme and authority (the Host the request
/// would have carried) in front of the path.
fn h2_uri(uri: http::Uri, headers: &http::HeaderMap, tls: bool) -> Option<http::Uri> {
    let host = headers.get(http::header::HOST)?.to_str().ok()?;
    let mut parts = uri.into_parts();
    parts.scheme = Some(if tls {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    });
    parts.authority = Some(host.parse().ok()?);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    http::Uri::from_parts(parts).ok()
}

/// True when the request carries the cookie `name`.
fn has_cookie(req: &RequestHeader, name: &str) -> bool {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|c| c.split(';'))
        .any(|kv| kv.trim().split_once('=').is_some_and(|(k, _)| k == name))
}

/// Kong's `hash_on: cookie` answer: `<name>=<value>; Path=<path>; Same-Site=Lax;
/// HttpOnly`, replacing an upstream Set-Cookie of the same name, else added.
fn set_hash_cookie(h: &mut http::HeaderMap, st: &crate::core::state::RequestState, value: &str) {
    let (Some(rt), Some(si)) = (&st.rt, st.service) else {
        return;
    };
    let b = &rt.services[si].balancer;
    let crate::balancer::HashOn::Cookie(name) = &b.hash_on else {
        return;
    };
    let prefix = format!("{name}=");
    let cookie = format!(
        "{prefix}{value}; Path={}; Same-Site=Lax; HttpOnly",
        b.hash_cookie_path
    );
    let Ok(cookie) = HeaderValue::from_str(&cookie) else {
        return;
    };
    let mut values: Vec<HeaderValue> = h
        .get_all(http::header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    match values
        .iter()
        .position(|v| v.as_bytes().starts_with(prefix.as_bytes()))
    {
        Some(i) => values[i] = cookie,
        None => values.push(cookie),
    }
    h.remove(http::header::SET_COOKIE);
    for v in values {
        h.append(http::header::SET_COOKIE, v);
    }
}

/// Header names the proxy sets on every request or response, parsed once.
mod names {
    use http::HeaderName;
    pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
    pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    pub const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
    pub const X_FORWARDED_PATH: HeaderName = HeaderName::from_static("x-forwarded-path");
    pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    pub const X_KONG_UPSTREAM_LATENCY: HeaderName =
        HeaderName::from_static("x-kong-upstream-latency");
    pub const X_KONG_PROXY_LATENCY: HeaderName = HeaderName::from_static("x-kong-proxy-latency");
}

/// Why an attempt failed.
enum Failure {
    /// No target to send to (503).
    NoPeer(&'static str),
    Connect {
        timeout: bool,
    },
    /// The upstream did not answer in time.
    Timeout,
    /// The exchange broke; `unsent`: the request never left.
    Broken {
        unsent: bool,
    },
    /// The client's body went over the limit or broke.
    BodyLimit,
    ClientBody,
}

impl Ctx<'_> {
    pub(super) async fn forward(&mut self) -> Response<RespBody> {
        let Some(rt) = self.st.rt.clone() else {
            let r = self.error(500, "An unexpected error occurred");
            return self.local(r);
        };
        let Some(si) = self.st.service else {
            let r = self.error(500, "An unexpected error occurred");
            return self.local(r);
        };
        let svc = &rt.services[si];
        let mut head = match self.prepared_head() {
            Ok(h) => Some(h),
            Err(_) => {
                let r = self.error(400, "Bad request");
                return self.local(r);
            }
        };

        // The body: rewritten whole by a plugin, or streamed.
        let report = Rc::new(BodyReport::default());
        let mut body = if self.st.request_buffering {
            let mut whole = match self.session.read_whole_body().await {
                Ok(b) => b,
                Err(e) => {
                    let r = self.core_error(&e);
                    return self.local(r);
                }
            };
            for p in active_plugins(&mut self.st).iter() {
                p.request_body(&mut whole, &mut self.st);
            }
            self.st.bytes_in = self.session.body_bytes_read();
            Some(UpBody::rewritten(whole.freeze()))
        } else {
            let (read, rest, already) = self.session.take_body();
            let limit = self.st.body_limit.unwrap_or(u64::MAX);
            Some(UpBody::stream(read, rest, already, limit, report.clone()))
        };
        let idempotent = self.session.req_header().method.is_idempotent();

        // The failure of the previous attempt: what the client gets when no target is
        // left to retry on (Kong's 502/504; 503 only when there was never a peer).
        let mut last: Option<Failure> = None;
        loop {
            let (key, tx) = match self.connect_target(&rt, si).await {
                Ok(x) => x,
                Err(f) => {
                    if let (Failure::NoPeer(_), Some(prev)) = (&f, last.take()) {
                        return self.fail(prev);
                    }
                    // Nothing was sent: another target may be tried.
                    if matches!(f, Failure::Connect { .. }) && self.st.attempts <= svc.retries {
                        last = Some(f);
                        continue;
                    }
                    return self.fail(f);
                }
            };
            let this_body = match body.as_ref().and_then(UpBody::replay) {
                Some(copy) => copy,
                None => match body.take() {
                    Some(b) => b,
                    None => return self.fail(Failure::Broken { unsent: false }),
                },
            };
            // A streamed body goes with this attempt; only a whole one can be sent again.
            let replayable = body.is_some();
            // The first attempt takes the head; a retry builds it again.
            let this_head = match head.take() {
                Some(h) => h,
                None => match self.prepared_head() {
                    Ok(h) => h,
                    Err(_) => return self.fail(Failure::Broken { unsent: false }),
                },
            };
            match self
                .send(&rt, si, key, tx, this_head, this_body, &report)
                .await
            {
                Ok((resp, key, tx)) => return self.respond_upstream(resp, key, tx).await,
                Err(f) => {
                    self.st.bytes_in = report.bytes.get().max(self.st.bytes_in);
                    let within = self.st.attempts <= svc.retries;
                    let retry = within
                        && replayable
                        && match f {
                            Failure::Broken { unsent: true } => true,
                            Failure::Timeout | Failure::Broken { .. } => idempotent,
                            _ => false,
                        };
                    if !retry {
                        return self.fail(f);
                    }
                    last = Some(f);
                }
            }
        }
    }

    /// Picks a target (skipping ones this request tried) and connects to it, or reuses a
    /// pooled connection.
    async fn connect_target(
        &mut self,
        rt: &crate::core::runtime::Runtime,
        si: usize,
    ) -> Result<(PoolKey, UpTx), Failure> {
        let svc = &rt.services[si];
        let b = &svc.balancer;
        if let Some(prev) = self.st.target.take() {
            b.targets[prev].active.fetch_sub(1, Ordering::Relaxed);
        }
        let i = {
            let req = self.session.req_header();
            let consumer_id = self.st.consumer.map(|c| rt.decl.consumers[c].id.as_str());
            let header_lookup = |name: &str| {
                req.headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            if let crate::balancer::HashOn::Cookie(name) = &b.hash_on
                && self.st.hash_cookie.is_none()
                && !has_cookie(req, name)
            {
                // Kong issues a fresh id as the cookie and hashes on it.
                self.st.hash_cookie = Some(uuid::Uuid::new_v4().to_string());
            }
            let inputs = HashInputs {
                header: &header_lookup,
                ip: self.st.client_addr.as_deref(),
                consumer: consumer_id,
                path: req.uri.path(),
                query: req.uri.query(),
                captures: self
                    .st
                    .route
                    .as_ref()
                    .map(|m| m.captures.as_slice())
                    .unwrap_or_default(),
                new_cookie: self.st.hash_cookie.as_deref(),
            };
            // A retry prefers a target not tried yet, and goes back to a tried one when
            // none is left (Kong retries a single host on itself).
            b.select(&inputs, &self.st.tried).or_else(|| {
                (!self.st.tried.is_empty())
                    .then(|| b.select(&inputs, &[]))
                    .flatten()
            })
        };
        let Some(i) = i else {
            return Err(Failure::NoPeer(
                "failure to get a peer from the ring-balancer",
            ));
        };
        let t = &b.targets[i];
        let Some(addr) = t.addr() else {
            return Err(Failure::NoPeer("name resolution failed"));
        };
        t.active.fetch_add(1, Ordering::Relaxed);
        self.st.target = Some(i);
        self.st.tried.push(i);
        self.st.attempts += 1;
        self.st.target_name = Some(t.name.clone());
        self.st.upstream_start = Some(Instant::now());
        let key = PoolKey {
            addr,
            tls_name: svc.tls.then(|| svc.host.as_str().into()),
            h2: svc.h2,
        };
        let pool = self.w.pool.clone();
        let tx = match pool.checkout(&key) {
            Some(tx) => tx,
            None => match pool.connect(&key, svc.connect_timeout).await {
                Ok(tx) => tx,
                Err(e) => {
                    let timeout = matches!(e, super::upstream::ConnectError::Timeout);
                    tracing::debug!(target_addr = %addr, error = %e, "upstream connect failed");
                    b.passive(
                        i,
                        if timeout {
                            Outcome::Timeout
                        } else {
                            Outcome::TcpFailure
                        },
                    );
                    return Err(Failure::Connect { timeout });
                }
            },
        };
        self.st.connected_at = Some(Instant::now());
        Ok((key, tx))
    }

    /// Sends the request on `tx` and waits for the response head.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &mut self,
        rt: &crate::core::runtime::Runtime,
        si: usize,
        key: PoolKey,
        mut tx: UpTx,
        head: RequestHeader,
        body: UpBody,
        report: &BodyReport,
    ) -> Result<(Response<Incoming>, PoolKey, UpTx), Failure> {
        let svc = &rt.services[si];
        let b = &svc.balancer;
        let (Some(i), addr) = (self.st.target, key.addr) else {
            return Err(Failure::NoPeer(
                "failure to get a peer from the ring-balancer",
            ));
        };
        let mut req = Request::new(body);
        *req.method_mut() = head.method;
        if tx.is_h2() {
            // HTTP/2 names scheme and authority in pseudo-headers: the absolute URI.
            *req.uri_mut() =
                h2_uri(head.uri, &head.headers, svc.tls).ok_or(Failure::Broken { unsent: true })?;
            *req.version_mut() = http::Version::HTTP_2;
            *req.headers_mut() = head.headers;
            req.headers_mut().remove(http::header::HOST);
        } else {
            *req.uri_mut() = head.uri;
            *req.version_mut() = http::Version::HTTP_11;
            *req.headers_mut() = head.headers;
        }
        let wait = svc.read_timeout.max(svc.write_timeout);
        let sent = tokio::time::timeout(wait, tx.send(req)).await;
        match sent {
            Ok(Ok(resp)) => Ok((resp, key, tx)),
            Ok(Err(e)) => {
                if report.over_limit.get() {
                    return Err(Failure::BodyLimit);
                }
                if report.client_error.get() {
                    return Err(Failure::ClientBody);
                }
                tracing::debug!(target_addr = %addr, error = %e, "upstream exchange failed");
                let unsent = e.is_canceled();
                if !unsent {
                    b.passive(i, Outcome::TcpFailure);
                }
                Err(Failure::Broken { unsent })
            }
            Err(_) => {
                b.passive(i, Outcome::Timeout);
                Err(Failure::Timeout)
            }
        }
    }

    /// The answer when no attempt succeeded.
    fn fail(&mut self, f: Failure) -> Response<RespBody> {
        let (code, msg, err): (u16, &str, &'static str) = match f {
            Failure::NoPeer(m) => (503, m, "no_peer"),
            Failure::Connect { timeout: true } | Failure::Timeout => {
                (504, "The upstream server is timing out", "upstream_timeout")
            }
            Failure::Connect { timeout: false } | Failure::Broken { .. } => (
                502,
                "An invalid response was received from the upstream server",
                "upstream_error",
            ),
            Failure::BodyLimit => {
                self.close = true;
                let r = match self.st.body_limit_response.take() {
                    Some(r) => r,
                    None => self.error(413, "Request Entity Too Large"),
                };
                let (mut head, body) = crate::core::respond::render(&mut self.st, r);
                head.headers
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                let status = head.status.as_u16();
                return self.respond(head, RespBody::full(body), status, Some("body_too_large"));
            }
            Failure::ClientBody => {
                self.close = true;
                (400, "Bad request", "client_body")
            }
        };
        let r = self.error(code, msg);
        let (mut head, body) = crate::core::respond::render(&mut self.st, r);
        if self.close {
            head.headers
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        self.respond(head, RespBody::full(body), code, Some(err))
    }

    /// The upstream head without hop-by-hop headers (and without Content-Length when a
    /// plugin rewrites the body).
    fn prepared_head(&mut self) -> crate::core::Result<RequestHeader> {
        let mut head = self.upstream_head()?;
        // `TE: trailers` is the one TE HTTP/2 allows, and gRPC servers require it.
        let trailers = self.st.grpc
            && head
                .headers
                .get(http::header::TE)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
        hop::strip(&mut head.headers, self.client_upgrade.is_some());
        if trailers {
            head.headers
                .insert(http::header::TE, HeaderValue::from_static("trailers"));
        }
        if self.st.request_buffering {
            head.headers.remove(http::header::CONTENT_LENGTH);
        }
        Ok(head)
    }

    /// The request head sent upstream.
    fn upstream_head(&mut self) -> crate::core::Result<RequestHeader> {
        let Some(rt) = self.st.rt.clone() else {
            return Err(crate::core::Error::Uri);
        };
        let (Some(m), Some(si)) = (&self.st.route, self.st.service) else {
            return Err(crate::core::Error::Uri);
        };
        let route = &rt.decl.routes[m.route];
        let svc = &rt.services[si];
        let st = &mut self.st;
        let client = self.session.req_header();
        let mut req = client.clone();
        // Room for the headers added below, in one allocation instead of several.
        req.headers.reserve(10);
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
            let same = client.uri.scheme().is_none()
                && client.uri.path_and_query().map(|p| p.as_str()) == Some(uri.as_str());
            if !same {
                req.set_uri(
                    uri.parse::<http::Uri>()
                        .map_err(|_| crate::core::Error::Uri)?,
                );
            }
        }
        // The client's host as a header value: its Host header (shared, not copied), or
        // an HTTP/2 client's :authority.
        let client_host: Option<HeaderValue> = match client.headers.get(http::header::HOST) {
            Some(v) if v.to_str().is_ok() => Some(v.clone()),
            _ => client
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
        };
        if !route.preserve_host {
            let Some(host) = svc.host_header.clone() else {
                return Err(crate::core::Error::HeaderValue);
            };
            req.headers.insert(http::header::HOST, host);
        } else if let Some(h) = &client_host
            && !req.headers.contains_key(http::header::HOST)
        {
            // An HTTP/2 client names the host in :authority only.
            req.headers.insert(http::header::HOST, h.clone());
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
            req.insert_header(k, v.as_str())?;
        }
        let bad = |_| crate::core::Error::HeaderValue;
        let ip = st.client_addr.as_deref().unwrap_or_default();
        // The connection's peer as a header value is made once per connection.
        let ip_value = if ip == self.conn.peer_ip {
            self.conn.peer_ip_value.clone()
        } else {
            HeaderValue::from_str(ip).map_err(bad)?
        };
        // Kong appends the connection's peer (realip_remote_addr) to a client-sent
        // X-Forwarded-For, and sends the resolved client address otherwise.
        let xff = match req
            .headers
            .get(&names::X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) if !prev.is_empty() => HeaderValue::from_str(&format!(
                "{prev}, {}",
                st.peer_addr.as_deref().unwrap_or(ip)
            ))
            .map_err(bad)?,
            _ => ip_value.clone(),
        };
        let h = &mut req.headers;
        h.insert(names::X_FORWARDED_FOR, xff);
        h.insert(names::X_REAL_IP, ip_value);
        // From a trusted proxy (the ALB) its X-Forwarded-Proto/-Host/-Port describe the
        // client's request and are passed on, as Kong does; otherwise the gateway's own.
        let trusted = st.peer_trusted;
        if !trusted {
            h.remove(&names::X_FORWARDED_HOST);
        }
        if !(trusted && h.contains_key(&names::X_FORWARDED_PROTO)) {
            h.insert(
                names::X_FORWARDED_PROTO,
                HeaderValue::from_static(if st.tls { "https" } else { "http" }),
            );
        }
        if let Some(value) = client_host
            && !(trusted && h.contains_key(&names::X_FORWARDED_HOST))
        {
            // The host without its port; the client's value itself when it has none.
            let host = value.to_str().unwrap_or_default();
            let value = match host.rsplit_once(':') {
                Some((a, p)) if !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()) => {
                    HeaderValue::from_str(a).map_err(bad)?
                }
                _ => value,
            };
            h.insert(names::X_FORWARDED_HOST, value);
        }
        if !(trusted && h.contains_key(&names::X_FORWARDED_PORT)) {
            // The port the client connected to (Kong's server_port).
            h.insert(names::X_FORWARDED_PORT, self.conn.local_port_value.clone());
        }
        h.insert(
            names::X_FORWARDED_PATH,
            HeaderValue::from_str(client.uri.path()).map_err(bad)?,
        );
        h.insert(names::X_REQUEST_ID, st.request_id_value());
        // Kong's inbound Via: the client's, then "<client HTTP version> gateway/x".
        let ver = match client.version {
            http::Version::HTTP_2 => "2",
            http::Version::HTTP_10 => "1.0",
            _ => "1.1",
        };
        let via = joined_via(h, ver);
        h.insert(http::header::VIA, via);
        for p in active_plugins(st).iter() {
            p.upstream_request(&mut req, st);
        }
        if st.request_buffering {
            req.remove_header(http::header::CONTENT_LENGTH);
        }
        req.version = http::Version::HTTP_11;
        Ok(req)
    }

    /// The upstream answered: passive health, response headers, the body.
    async fn respond_upstream(
        &mut self,
        mut resp: Response<Incoming>,
        key: PoolKey,
        tx: UpTx,
    ) -> Response<RespBody> {
        let status = resp.status().as_u16();
        let st = &mut self.st;
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
        let upgraded = status == 101 && self.client_upgrade.is_some();
        if upgraded {
            self.start_tunnel(&mut resp);
        }
        let (parts, incoming) = resp.into_parts();
        let mut head = ResponseHeader::from_parts(parts);
        hop::strip(&mut head.headers, upgraded);
        let up = self.st.upstream_latency_ms.unwrap_or(0);
        let total = self.st.elapsed_ms();
        head.headers.insert(
            names::X_KONG_UPSTREAM_LATENCY,
            crate::core::head::number_value(up),
        );
        head.headers.insert(
            names::X_KONG_PROXY_LATENCY,
            crate::core::head::number_value(total.saturating_sub(up)),
        );
        // Kong: the upstream's Via, then ours, in one comma-separated value.
        let via = joined_via(&head.headers, "1.1");
        head.headers.insert(http::header::VIA, via);
        if let Some(value) = &self.st.hash_cookie {
            set_hash_cookie(&mut head.headers, &self.st, value);
        }
        finish_response_headers(&mut head, &mut self.st);
        let plugins = active_plugins(&mut self.st);
        let back = PoolReturn {
            pool: self.w.pool.clone(),
            key,
            tx,
        };
        if upgraded {
            return self.respond(head, RespBody::empty(), status, None);
        }
        if !plugins.iter().any(|p| p.buffers_response(&head)) {
            let body = RespBody::stream(Vec::new(), incoming, Some(back));
            return self.respond(head, body, status, None);
        }
        // A plugin rewrites the whole body: collect it, up to the buffering limit and
        // within the process-wide budget for buffered bodies.
        let must = plugins.iter().any(|p| p.must_transform());
        let encoding = super::compress::Encoding::of(&head.headers);
        if encoding == super::compress::Encoding::Other {
            if must {
                return self.refuse_untransformed(back, "an encoding the gateway cannot decode");
            }
            let body = RespBody::stream(Vec::new(), incoming, Some(back));
            return self.respond(head, body, status, None);
        }
        head.headers.remove(http::header::CONTENT_LENGTH);
        let mut incoming = incoming;
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut budget = super::compress::Budget::default();
        let wait = self
            .st
            .rt
            .as_ref()
            .zip(self.st.service)
            .map(|(rt, si)| rt.services[si].read_timeout)
            .unwrap_or(Duration::from_secs(60));
        loop {
            let frame = match tokio::time::timeout(wait, incoming.frame()).await {
                Ok(Some(Ok(f))) => f,
                Ok(None) => break,
                Ok(Some(Err(_))) | Err(_) => {
                    return self.fail(Failure::Broken { unsent: false });
                }
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let fits = budget.take(data.len(), RESPONSE_BUFFER_LIMIT);
            chunks.push(data);
            if !fits {
                if must {
                    return self.refuse_untransformed(back, "a body over the buffering limit");
                }
                // Too large to rewrite: pass it through untouched, never half-rewritten.
                self.st.response_passthrough = true;
                tracing::debug!("response body over the buffering limit, passed through");
                let body = RespBody::stream(chunks, incoming, Some(back));
                return self.respond(head, body, status, None);
            }
        }
        self.w.pool.put(back.key, back.tx);
        let mut whole = BytesMut::with_capacity(budget.held());
        for c in chunks {
            whole.extend_from_slice(&c);
        }
        // A compressed body is rewritten decoded, then encoded again the same way.
        if encoding != super::compress::Encoding::Identity {
            match super::compress::decode(encoding, &whole, RESPONSE_BUFFER_LIMIT) {
                Some(plain) => whole = plain,
                None if must => {
                    tracing::warn!(
                        "response-transformer: compressed body could not be decoded within the limit; refused (502) rather than sent unredacted"
                    );
                    let r = self.error(
                        502,
                        "An invalid response was received from the upstream server",
                    );
                    let (h, b) = crate::core::respond::render(&mut self.st, r);
                    return self.respond(h, RespBody::full(b), 502, Some("untransformable_body"));
                }
                None => {
                    return self.respond(head, RespBody::full(whole.freeze()), status, None);
                }
            }
        }
        for p in plugins.iter() {
            p.response_body(&mut whole, &mut self.st);
        }
        if encoding != super::compress::Encoding::Identity {
            whole = super::compress::encode(encoding, &whole);
        }
        self.respond(head, RespBody::rewritten(whole.freeze()), status, None)
    }

    /// A body a plugin must rewrite (a redaction) that cannot be rewritten is not sent as
    /// it is: 502, with the reason logged.
    fn refuse_untransformed(&mut self, back: PoolReturn, why: &str) -> Response<RespBody> {
        drop(back);
        tracing::warn!(
            reason = why,
            "response body must be rewritten but cannot be; refused (502) rather than sent unredacted"
        );
        let r = self.error(
            502,
            "An invalid response was received from the upstream server",
        );
        let (h, b) = crate::core::respond::render(&mut self.st, r);
        self.respond(h, RespBody::full(b), 502, Some("untransformable_body"))
    }

    /// 101 from the upstream: once both sides have switched, bytes flow both ways.
    fn start_tunnel(&mut self, resp: &mut Response<Incoming>) {
        let Some(client) = self.client_upgrade.take() else {
            return;
        };
        let upstream = hyper::upgrade::on(resp);
        self.conn.shared.set_tunnel();
        tokio::task::spawn_local(async move {
            let (Ok(c), Ok(u)) = (client.await, upstream.await) else {
                tracing::debug!("upgrade did not complete");
                return;
            };
            let mut c = hyper_util::rt::TokioIo::new(c);
            let mut u = hyper_util::rt::TokioIo::new(u);
            if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                tracing::debug!(error = %e, "tunnel closed");
            }
        });
    }
}
