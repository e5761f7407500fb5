//! The agent's own HTTP endpoints: `/metrics`, `/ready`, `/-/healthy`, and `POST /-/reload`
//! (from loopback peers only).

use crate::self_metrics::AgentMetrics;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

/// A reload asked for over HTTP; the answer is a summary or the error.
pub type ReloadRequest = oneshot::Sender<Result<String, crate::agent::ReloadError>>;

fn respond(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert("content-type", v);
    }
    r
}

async fn handle(
    req: Request<Incoming>,
    metrics: AgentMetrics,
    ready: Arc<AtomicBool>,
    reload: mpsc::Sender<ReloadRequest>,
    peer: std::net::SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match req.uri().path() {
        "/-/reload"
            if req.method() == hyper::Method::POST || req.method() == hyper::Method::PUT =>
        {
            if !peer.ip().is_loopback() {
                return Ok(respond(
                    StatusCode::FORBIDDEN,
                    "text/plain",
                    "reload is only accepted from loopback\n",
                ));
            }
            let (tx, rx) = oneshot::channel();
            if reload.send(tx).await.is_err() {
                return Ok(respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "shutting down\n",
                ));
            }
            match rx.await {
                Ok(Ok(summary)) => respond(StatusCode::OK, "text/plain", format!("{summary}\n")),
                Ok(Err(e)) => respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("failed to reload config: {e}\n"),
                ),
                Err(_) => respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "shutting down\n",
                ),
            }
        }
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        "/ready" | "/-/ready" => {
            if ready.load(Ordering::Acquire) {
                respond(StatusCode::OK, "text/plain", "ready\n")
            } else {
                respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "starting\n")
            }
        }
        "/-/healthy" | "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n"),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    })
}

/// Serves until `shutdown` flips to true.
pub async fn serve(
    listener: TcpListener,
    metrics: AgentMetrics,
    ready: Arc<AtomicBool>,
    reload: mpsc::Sender<ReloadRequest>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let m = metrics.clone();
        let rd = ready.clone();
        let rl = reload.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, m.clone(), rd.clone(), rl.clone(), peer));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!("http connection: {e}");
            }
        });
    }
}
