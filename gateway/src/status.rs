//! The status listener: `/status`, `/status/ready`, `/health`, `/metrics`, and
//! `POST /config` (Kong DB-less compatible reload).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::gateway::Gateway;

pub struct StatusApp {
    pub gw: Arc<Gateway>,
    /// Accept `POST /config` from non-loopback peers.
    pub allow_remote_config: bool,
    /// Largest accepted `POST /config` body.
    pub max_config_bytes: usize,
    /// `GATEWAY_ADMIN_TOKEN`: when set, `POST /config` needs `Authorization: Bearer <it>`.
    pub admin_token: Option<String>,
    /// The status listener is bound to loopback only (no token needed then).
    pub loopback_only: bool,
    /// Posted configurations may expand `${{ env "NAME" }}` (off by default).
    pub allow_posted_env: bool,
}

/// Compares two secrets in time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Media types a configuration may be posted as (plus none at all). Anything else, in
/// particular the types a browser may send cross-site without a preflight
/// (`text/plain`, forms), is refused.
fn config_media_type(ct: &str) -> bool {
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        media.as_str(),
        "application/json"
            | "application/yaml"
            | "application/x-yaml"
            | "text/yaml"
            | "text/x-yaml"
    )
}

type Reply = Response<Full<Bytes>>;

fn json(status: u16, body: serde_json::Value) -> Reply {
    let body = body.to_string().into_bytes();
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .header("content-length", body.len())
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

impl StatusApp {
    fn status(&self) -> Reply {
        let rt = self.gw.current.load();
        let inflight = self.gw.inflight.load(Ordering::Relaxed);
        json(
            200,
            serde_json::json!({
                "server": {
                    "total_requests": self.gw.total_requests.load(Ordering::Relaxed),
                    "connections_active": inflight,
                    "connections_writing": inflight,
                },
                "configuration_hash": rt.decl.hash,
                "database": {"reachable": true},
                "draining": self.gw.draining.load(Ordering::Relaxed),
                "version": env!("CARGO_PKG_VERSION"),
            }),
        )
    }

    fn metrics(&self) -> Reply {
        let m = &self.gw.metrics;
        let rt = self.gw.current.load();
        m.target_health.reset();
        for b in rt.balancers.iter().filter(|_| rt.health_metrics) {
            let checks_on = b.healthchecks.active.healthy.interval > 0.0
                || b.healthchecks.active.unhealthy.interval > 0.0
                || b.healthchecks.passive.unhealthy.tcp_failures > 0
                || b.healthchecks.passive.unhealthy.http_failures > 0
                || b.healthchecks.passive.unhealthy.timeouts > 0;
            for t in &b.targets {
                let addr = t.addr().map(|a| a.to_string()).unwrap_or_default();
                let state = if t.addr().is_none() {
                    "dns_error"
                } else if !checks_on {
                    "healthchecks_off"
                } else if t.is_healthy() {
                    "healthy"
                } else {
                    "unhealthy"
                };
                for s in ["healthchecks_off", "healthy", "unhealthy", "dns_error"] {
                    m.target_health
                        .with_label_values(&[b.name.as_str(), &t.name, addr.as_str(), s, "http"])
                        .set(i64::from(s == state));
                }
            }
        }
        let inflight = self.gw.inflight.load(Ordering::Relaxed) as i64;
        m.connections
            .with_label_values(&["", "http", "active"])
            .set(inflight);
        m.nginx_requests
            .with_label_values(&["", "http"])
            .set(self.gw.total_requests.load(Ordering::Relaxed) as i64);
        let body = m.render();
        Response::builder()
            .status(200)
            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
            .header("content-length", body.len())
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    }

    /// Who may replace the configuration: never a cross-site request (an `Origin`
    /// header, or a content type a browser form could send); from loopback peers unless
    /// `--allow-remote-config`; with the admin token whenever one is set, and always when
    /// the listener is reachable beyond loopback.
    fn authorize_config(&self, peer: SocketAddr, headers: &http::HeaderMap) -> Option<Reply> {
        if headers.contains_key(http::header::ORIGIN) {
            return Some(json(
                403,
                serde_json::json!({"message": "cross-site requests to POST /config are refused"}),
            ));
        }
        if let Some(ct) = headers.get(http::header::CONTENT_TYPE)
            && !ct.to_str().is_ok_and(config_media_type)
        {
            return Some(json(
                415,
                serde_json::json!({"message": "POST /config takes application/json or application/yaml"}),
            ));
        }
        let loopback = peer.ip().to_canonical().is_loopback();
        if !loopback && !self.allow_remote_config {
            return Some(json(
                403,
                serde_json::json!({"message": "POST /config is only accepted from loopback"}),
            ));
        }
        match &self.admin_token {
            Some(token) => {
                let given = headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or("");
                if !same_secret(given.trim().as_bytes(), token.as_bytes()) {
                    return Some(json(
                        401,
                        serde_json::json!({"message": "POST /config needs the admin token (Authorization: Bearer)"}),
                    ));
                }
            }
            None if !self.loopback_only => {
                return Some(json(
                    403,
                    serde_json::json!({"message": "the status listener is reachable beyond loopback: set GATEWAY_ADMIN_TOKEN to accept POST /config"}),
                ));
            }
            None => {}
        }
        None
    }

    async fn post_config(&self, peer: SocketAddr, req: Request<Incoming>) -> Reply {
        if let Some(refused) = self.authorize_config(peer, req.headers()) {
            return refused;
        }
        let body = req.into_body();
        let body = match Limited::new(body, self.max_config_bytes).collect().await {
            Ok(b) => b.to_bytes().to_vec(),
            Err(e) => {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    return json(
                        413,
                        serde_json::json!({"message": "configuration too large"}),
                    );
                }
                return json(
                    400,
                    serde_json::json!({"message": format!("cannot read body: {e}")}),
                );
            }
        };
        let Ok(text) = String::from_utf8(body) else {
            return json(
                400,
                serde_json::json!({"message": "configuration is not UTF-8"}),
            );
        };
        // Kong also accepts `{"config": "<yaml or json text>"}`.
        let text = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Object(o)) if o.get("config").is_some_and(|c| c.is_string()) => o
                .get("config")
                .and_then(|c| c.as_str())
                .unwrap_or_default()
                .to_string(),
            _ => text,
        };
        match self.gw.reload_text(&text, self.allow_posted_env) {
            Ok(hash) => {
                tracing::info!(hash = %hash, "configuration replaced by POST /config");
                json(201, serde_json::json!({"configuration_hash": hash}))
            }
            Err(errs) => {
                tracing::warn!(errors = %errs, "POST /config rejected; previous configuration keeps serving");
                let list: Vec<_> = errs
                    .errors
                    .iter()
                    .map(|e| serde_json::json!({"path": e.path, "line": e.line, "message": e.message}))
                    .collect();
                json(
                    400,
                    serde_json::json!({
                        "code": 14,
                        "name": "invalid declarative configuration",
                        "message": format!("declarative config is invalid: {errs}"),
                        "errors": list,
                    }),
                )
            }
        }
    }
}

impl StatusApp {
    /// Answers one request on the status listener.
    pub async fn handle(&self, peer: SocketAddr, req: Request<Incoming>) -> Reply {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        match (method.as_str(), path.as_str()) {
            ("GET", "/health") => json(200, serde_json::json!({"status": "ok"})),
            ("GET", "/status") => self.status(),
            ("GET", "/status/ready") => match self.gw.ready() {
                Ok(()) => json(200, serde_json::json!({"message": "ready"})),
                Err(why) => json(503, serde_json::json!({"message": why.to_string()})),
            },
            ("GET", "/metrics") => self.metrics(),
            ("POST", "/config") => self.post_config(peer, req).await,
            (_, "/health" | "/status" | "/status/ready" | "/metrics" | "/config") => {
                json(405, serde_json::json!({"message": "Method not allowed"}))
            }
            _ => json(404, serde_json::json!({"message": "Not found"})),
        }
    }
}

/// Serves the status listener until the process exits (on the background runtime).
pub async fn serve(app: Arc<StatusApp>, listener: tokio::net::TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "status listener: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let app = app.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.handle(peer, req).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(io, svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "status connection ended with an error");
            }
        });
    }
}
