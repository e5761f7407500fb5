//! Rewrite and access phases: request checks (limits), routing, the upstream path, then
//! the route's plugins in priority order. A `Some(response)` answers the request here.

use std::time::Instant;

use super::Ctx;
use crate::core::respond::LocalResponse;
use crate::core::{RequestHeader, Result};
use crate::plugins::Flow;
use crate::router::{RequestView, normalize_path, upstream_path};

fn header_str<K: http::header::AsHeaderName>(req: &RequestHeader, name: K) -> Option<&str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

impl Ctx<'_> {
    pub(super) async fn access_phase(&mut self) -> Result<Option<LocalResponse>> {
        let gw = &self.w.gw;
        let rt = gw.current.load_full();
        self.st.rt = Some(rt.clone());
        // Headers the gateway sets from identity are never taken from the client, on any
        // route, and no plugin sees the client's copies.
        {
            let h = &mut self.session.req_header_mut().headers;
            if h.keys().any(|k| rt.identity_headers.contains(k)) {
                for name in &rt.identity_headers {
                    h.remove(name);
                }
            }
        }
        let req = self.session.req_header();
        self.st.request_id = header_str(req, X_REQUEST_ID)
            .filter(|v| !v.is_empty() && v.len() <= 200 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_string)
            .unwrap_or_else(super::new_request_id);

        let limits = &gw.limits;
        let header_bytes: usize = req
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if req.headers.len() > limits.max_header_count || header_bytes > limits.max_header_bytes {
            self.close = true;
            return Ok(Some(self.error(431, "Request Header Fields Too Large")));
        }
        if let Some(cl) =
            header_str(req, http::header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok())
            && cl > limits.max_body_bytes
        {
            self.close = true;
            return Ok(Some(self.error(413, "Request Entity Too Large")));
        }
        self.st.body_limit = Some(limits.max_body_bytes);
        self.st.request_header_bytes = header_bytes as u64;

        // A `%` that starts no `%XX` escape: nginx (so Kong) answers 400 before routing.
        if crate::net::path::has_invalid_escape(req.uri.path()) {
            self.close = true;
            return Ok(Some(self.error(400, "Bad request")));
        }
        let path = normalize_path(req.uri.path());
        let host = header_str(req, http::header::HOST)
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
                tls: self.st.tls,
                sni: self.conn.sni.as_deref(),
                header: &lookup,
            };
            rt.router.route(&view)
        };
        let Some(m) = found else {
            return Ok(Some(self.error(404, "no Route matched with those values")));
        };
        self.st.routed_at = Some(Instant::now());
        let route = &rt.decl.routes[m.route];
        if m.protocol_mismatch {
            let code = route.https_redirect_status_code;
            let loc = format!(
                "https://{}{}",
                host.split(':').next().unwrap_or(""),
                req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
            );
            self.st.route = Some(m);
            let r = if code == 426 {
                self.error(426, "Please use HTTPS protocol")
                    .with_header("connection", "Upgrade")
                    .with_header("upgrade", "TLS/1.2, HTTP/1.1")
            } else {
                LocalResponse::error(code, "Moved", &self.st.request_id, None)
                    .with_header("location", loc)
            };
            return Ok(Some(r));
        }
        if let Some(r) = self.grpc_route_check(route, req) {
            self.st.route = Some(m);
            return Ok(Some(r));
        }
        self.st.request_origin = header_str(req, http::header::ORIGIN).map(str::to_string);
        let query = req.uri.query();
        let Some(si) = route.service else {
            self.st.route = Some(m);
            return Ok(Some(self.error(503, "no Service found with those values")));
        };
        let svc = &rt.services[si];
        // nginx's grpc_pass (Kong's gRPC proxy) sends the client's own URI: a gRPC
        // method's path is never stripped.
        let mut up = if svc.h2 {
            req.uri.path().to_string()
        } else {
            upstream_path(
                svc.path.as_deref(),
                route.strip_path,
                &m.matched_path,
                &path,
            )
        };
        if let Some(q) = query {
            up.push('?');
            up.push_str(q);
        }
        self.st.upstream_uri = Some(up);
        self.st.service = Some(si);
        let ri = m.route;
        self.st.route = Some(m);
        if !svc.enabled {
            return Ok(Some(self.error(503, "Service unavailable")));
        }
        if let Some(r) = self.run_access(ri).await? {
            return Ok(Some(r));
        }
        self.st.access_done = true;
        let plugins = super::active_plugins(&mut self.st);
        let req = self.session.req_header();
        self.st.request_buffering = plugins.iter().any(|p| p.buffers_request(req, &self.st));
        Ok(None)
    }

    /// Kong's checks on a gRPC route (`protocols: [grpc, grpcs]`): a gRPC request over
    /// HTTP/2, and over TLS when the route is grpcs-only.
    fn grpc_route_check(
        &self,
        route: &crate::config::RouteDef,
        req: &RequestHeader,
    ) -> Option<LocalResponse> {
        let grpc = route.protocols.iter().any(|p| p == "grpc");
        let grpcs = route.protocols.iter().any(|p| p == "grpcs");
        if !grpc && !grpcs {
            return None;
        }
        let ctype = header_str(req, http::header::CONTENT_TYPE).unwrap_or_default();
        if !ctype.starts_with("application/grpc") {
            return Some(self.error(415, "Non-gRPC request matched gRPC route"));
        }
        if req.version != http::Version::HTTP_2 {
            return Some(
                self.error(426, "Please use HTTP2 protocol")
                    .with_header("connection", "Upgrade")
                    .with_header("upgrade", "HTTP/2"),
            );
        }
        let secure = self.st.tls
            || (self.st.peer_trusted
                && header_str(req, "x-forwarded-proto")
                    .is_some_and(|p| p.eq_ignore_ascii_case("https")));
        if !grpc && !secure {
            return Some(LocalResponse {
                status: 200,
                headers: vec![
                    ("content-type".into(), "application/grpc".into()),
                    ("grpc-status".into(), "1".into()),
                    (
                        "grpc-message".into(),
                        "gRPC request matched gRPCs route".into(),
                    ),
                ],
                body: bytes::Bytes::new(),
                message: None,
            });
        }
        None
    }

    /// Runs the access phase of the route's plugins in priority order.
    async fn run_access(&mut self, ri: usize) -> Result<Option<LocalResponse>> {
        let Some(rt) = self.st.rt.clone() else {
            return Ok(None);
        };
        let st = &mut self.st;
        let session = &mut self.session;
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
            let groups: &[usize] = match st.consumer {
                Some(c) => &rt.decl.consumers[c].groups,
                None => &[],
            };
            let Some(p) = slot.select(st.consumer, groups) else {
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
