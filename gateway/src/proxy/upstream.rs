//! Upstream connections: HTTP/1.1 over TCP (or TLS), one keep-alive pool per worker
//! thread (no locks, no hand-off to another task per request), checked for readiness
//! and age at checkout.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::client::conn::http1::{self, SendRequest};
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
}

struct Idle {
    tx: SendRequest<UpBody>,
    since: Instant,
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
    tls: RefCell<Option<tokio_rustls::TlsConnector>>,
}

impl Pool {
    /// An idle connection to `key` that can take a request now.
    pub fn checkout(&self, key: &PoolKey) -> Option<SendRequest<UpBody>> {
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

    /// Returns a connection whose response was read to its end.
    pub fn put(&self, key: PoolKey, tx: SendRequest<UpBody>) {
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
    /// HTTP/1.1 driver on this thread.
    pub async fn connect(
        &self,
        key: &PoolKey,
        timeout: Duration,
    ) -> Result<SendRequest<UpBody>, ConnectError> {
        let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(key.addr))
            .await
            .map_err(|_| ConnectError::Timeout)??;
        let _ = tcp.set_nodelay(true);
        match &key.tls_name {
            None => handshake(tcp).await,
            Some(name) => {
                let connector = self.tls_connector();
                let server = rustls::pki_types::ServerName::try_from(name.to_string())
                    .map_err(|e| ConnectError::Tls(e.to_string()))?;
                let tls = tokio::time::timeout(timeout, connector.connect(server, tcp))
                    .await
                    .map_err(|_| ConnectError::Timeout)?
                    .map_err(|e| ConnectError::Tls(e.to_string()))?;
                handshake(tls).await
            }
        }
    }

    fn tls_connector(&self) -> tokio_rustls::TlsConnector {
        if let Some(c) = self.tls.borrow().as_ref() {
            return c.clone();
        }
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            let _ = roots.add(cert);
        }
        let cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let c = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        *self.tls.borrow_mut() = Some(c.clone());
        c
    }
}

async fn handshake<T>(io: T) -> Result<SendRequest<UpBody>, ConnectError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, conn) = http1::Builder::new()
        .handshake::<_, UpBody>(TokioIo::new(io))
        .await?;
    tokio::task::spawn_local(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(tx)
}
