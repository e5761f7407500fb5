//! Upstream connections: HTTP/1.1 over TCP (or TLS), one keep-alive pool per worker
//! thread (no locks, no hand-off to another task per request), checked for readiness
//! and age at checkout; HTTP/2 for gRPC services (one multiplexed connection per
//! upstream address and worker, prior knowledge in clear text, ALPN `h2` over TLS).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::http2;
use hyper_util::rt::TokioIo;
use rustc_hash::FxHashMap;

use super::body::UpBody;

/// Idle upstream connections older than this are not reused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per upstream address and worker.
pub const MAX_IDLE_PER_KEY: usize = 1024;

/// Where a pooled connection goes: address, and the TLS server name when encrypted.
#[derive(Clone, Hash, PartialEq, Eq, Debug)]
pub struct PoolKey {
    pub addr: SocketAddr,
    pub tls_name: Option<Arc<str>>,
    /// HTTP/2 (gRPC services).
    pub h2: bool,
}

/// A connection that can take one request: HTTP/1.1 (one exchange at a time, back to
/// the pool when its response ends) or a handle on a shared HTTP/2 connection.
pub enum UpTx {
    H1(SendRequest<UpBody>),
    H2(http2::SendRequest<UpBody>),
}

impl UpTx {
    pub async fn send(
        &mut self,
        req: http::Request<UpBody>,
    ) -> hyper::Result<http::Response<Incoming>> {
        match self {
            UpTx::H1(tx) => tx.send_request(req).await,
            UpTx::H2(tx) => tx.send_request(req).await,
        }
    }

    pub fn is_h2(&self) -> bool {
        matches!(self, UpTx::H2(_))
    }
}

struct Idle {
    tx: SendRequest<UpBody>,
    since: Instant,
}

/// hyper's executor for HTTP/2 connection tasks on this worker's thread.
#[derive(Clone, Copy)]
struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: std::future::Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out")]
    Timeout,
    #[error("connect failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP handshake: {0}")]
    Handshake(#[from] hyper::Error),
}

#[derive(Default)]
pub struct Pool {
    idle: RefCell<FxHashMap<PoolKey, Vec<Idle>>>,
    /// One HTTP/2 connection per key, shared by every request to it.
    shared: RefCell<FxHashMap<PoolKey, http2::SendRequest<UpBody>>>,
    tls: RefCell<Option<tokio_rustls::TlsConnector>>,
    tls_h2: RefCell<Option<tokio_rustls::TlsConnector>>,
}

impl Pool {
    /// A connection to `key` that can take a request now.
    pub fn checkout(&self, key: &PoolKey) -> Option<UpTx> {
        if key.h2 {
            let mut shared = self.shared.borrow_mut();
            let tx = shared.get(key)?;
            if tx.is_closed() {
                shared.remove(key);
                return None;
            }
            return Some(UpTx::H2(tx.clone()));
        }
        self.checkout_h1(key).map(UpTx::H1)
    }

    fn checkout_h1(&self, key: &PoolKey) -> Option<SendRequest<UpBody>> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(key)?;
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut not_yet = Vec::new();
        let mut found = None;
        while let Some(mut c) = list.pop() {
            if c.since.elapsed() > IDLE_TIMEOUT {
                continue;
            }
            match c.tx.poll_ready(&mut cx) {
                std::task::Poll::Ready(Ok(())) => {
                    found = Some(c.tx);
                    break;
                }
                std::task::Poll::Ready(Err(_)) => continue,
                // Still finishing its last response: keep it for the next request.
                std::task::Poll::Pending => not_yet.push(c),
            }
        }
        list.extend(not_yet);
        found
    }

    /// Returns a connection whose response was read to its end (an HTTP/2 handle stays
    /// shared: nothing to return).
    pub fn put(&self, key: PoolKey, tx: UpTx) {
        let UpTx::H1(tx) = tx else {
            return;
        };
        if tx.is_closed() {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(key).or_default();
        if list.len() < MAX_IDLE_PER_KEY {
            list.push(Idle {
                tx,
                since: Instant::now(),
            });
        }
    }

    /// Opens a new connection (TCP, TLS when the key names a server) and starts its
    /// HTTP/1.1 or HTTP/2 driver on this thread. An HTTP/2 connection is kept for the
    /// next requests to the same key.
    pub async fn connect(&self, key: &PoolKey, timeout: Duration) -> Result<UpTx, ConnectError> {
        let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(key.addr))
            .await
            .map_err(|_| ConnectError::Timeout)??;
        let _ = tcp.set_nodelay(true);
        let tx = match &key.tls_name {
            None => handshake(tcp, key.h2).await?,
            Some(name) => {
                let connector = self.tls_connector(key.h2);
                let server = rustls::pki_types::ServerName::try_from(name.to_string())
                    .map_err(|e| ConnectError::Tls(e.to_string()))?;
                let tls = tokio::time::timeout(timeout, connector.connect(server, tcp))
                    .await
                    .map_err(|_| ConnectError::Timeout)?
                    .map_err(|e| ConnectError::Tls(e.to_string()))?;
                if key.h2 && tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err(ConnectError::Tls(
                        "the upstream did not agree to HTTP/2 (ALPN h2)".into(),
                    ));
                }
                handshake(tls, key.h2).await?
            }
        };
        if let UpTx::H2(h) = &tx {
            self.shared.borrow_mut().insert(key.clone(), h.clone());
        }
        Ok(tx)
    }

    fn tls_connector(&self, h2: bool) -> tokio_rustls::TlsConnector {
        let slot = if h2 { &self.tls_h2 } else { &self.tls };
        if let Some(c) = slot.borrow().as_ref() {
            return c.clone();
        }
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            let _ = roots.add(cert);
        }
        let mut cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        if h2 {
            cfg.alpn_protocols = vec![b"h2".to_vec()];
        }
        let c = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        *slot.borrow_mut() = Some(c.clone());
        c
    }
}

async fn handshake<T>(io: T, h2: bool) -> Result<UpTx, ConnectError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if h2 {
        let (tx, conn) = http2::Builder::new(LocalExec)
            .timer(hyper_util::rt::TokioTimer::new())
            .handshake::<_, UpBody>(TokioIo::new(io))
            .await?;
        tokio::task::spawn_local(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
            }
        });
        return Ok(UpTx::H2(tx));
    }
    let (tx, conn) = http1::Builder::new()
        .handshake::<_, UpBody>(TokioIo::new(io))
        .await?;
    tokio::task::spawn_local(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(UpTx::H1(tx))
}
