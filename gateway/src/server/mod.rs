//! The proxy's listeners and connections: one current-thread runtime per worker thread,
//! each with its own `SO_REUSEPORT` socket on every proxy address (the kernel spreads
//! connections; no locks or task hand-offs between threads), HTTP/1.1 by hyper (and
//! HTTP/2 with prior knowledge in clear text, for gRPC), TLS by rustls with HTTP/2
//! negotiated by ALPN, connection caps and graceful shutdown.
//!
//! Why this shape: on one core, the per-request cost of a work-stealing runtime's
//! cross-thread wake-ups and of a shared, locked upstream pool showed in every profile;
//! per-thread runtimes keep a request, its client connection and its upstream connection
//! on one thread (see docs/BENCHMARKS.md, "runtime shape").

pub mod guard;

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

use crate::gateway::Gateway;
use crate::proxy::{self, ConnInfo, Worker};
use guard::{ConnShared, Deadlines, GuardedIo};

/// One proxy listener address.
#[derive(Debug, Clone)]
pub struct ListenSpec {
    pub addr: SocketAddr,
    pub tls: bool,
}

#[derive(Clone)]
pub struct ServerOptions {
    pub listeners: Vec<ListenSpec>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub workers: usize,
    pub deadlines: Deadlines,
    /// Concurrent client connections per worker; more wait in the accept queue.
    pub max_connections: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start worker thread: {0}")]
    Thread(std::io::Error),
    #[error("listener {0} is TLS but no certificate is configured")]
    NoCertificate(SocketAddr),
}

/// A listening socket that shares its port with the other workers' (`SO_REUSEPORT`).
fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// Binds every listener once per worker and starts the workers. Returns once all are
/// listening; they run until the process exits. `shutdown` flipping to true stops
/// accepting and closes connections as their requests finish.
pub fn start(
    gw: Arc<Gateway>,
    opts: ServerOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let mut per_worker: Vec<Vec<(std::net::TcpListener, bool)>> = Vec::new();
    for _ in 0..opts.workers {
        let mut ls = Vec::new();
        for l in &opts.listeners {
            if l.tls && opts.tls.is_none() {
                return Err(ServerError::NoCertificate(l.addr));
            }
            let sock = reuseport_listener(l.addr).map_err(|source| ServerError::Listen {
                addr: l.addr,
                source,
            })?;
            ls.push((sock, l.tls));
        }
        per_worker.push(ls);
    }
    for (i, listeners) in per_worker.into_iter().enumerate() {
        let gw = gw.clone();
        let opts = opts.clone();
        let shutdown = shutdown.clone();
        std::thread::Builder::new()
            .name(format!("gateway-worker-{i}"))
            .spawn(move || worker_main(gw, opts, listeners, shutdown))
            .map_err(ServerError::Thread)?;
    }
    Ok(())
}

fn worker_main(
    gw: Arc<Gateway>,
    opts: ServerOptions,
    listeners: Vec<(std::net::TcpListener, bool)>,
    shutdown: watch::Receiver<bool>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start worker runtime");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        crate::core::case::init().await;
        let worker = Rc::new(Worker::new(gw));
        let slots = Rc::new(Slots {
            active: Cell::new(0),
            max: opts.max_connections.max(1),
            freed: Notify::new(),
        });
        for (l, tls) in listeners {
            let listener = match TcpListener::from_std(l) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "cannot register listener");
                    continue;
                }
            };
            tokio::task::spawn_local(accept_loop(
                worker.clone(),
                listener,
                tls,
                opts.clone(),
                slots.clone(),
                shutdown.clone(),
            ));
        }
        std::future::pending::<()>().await;
    });
}

/// Connection slots of one worker.
struct Slots {
    active: Cell<usize>,
    max: usize,
    freed: Notify,
}

struct SlotGuard(Rc<Slots>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get().saturating_sub(1));
        self.0.freed.notify_one();
    }
}

async fn accept_loop(
    worker: Rc<Worker>,
    listener: TcpListener,
    tls: bool,
    opts: ServerOptions,
    slots: Rc<Slots>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = if tls {
        opts.tls.clone().map(tokio_rustls::TlsAcceptor::from)
    } else {
        None
    };
    let local_port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    loop {
        while slots.active.get() >= slots.max {
            tokio::select! {
                _ = slots.freed.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return, // drops the listener: new connections are refused
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if *shutdown.borrow() {
            return;
        }
        slots.active.set(slots.active.get() + 1);
        let guard = SlotGuard(slots.clone());
        let _ = stream.set_nodelay(true);
        let local_ip: Arc<str> = stream
            .local_addr()
            .map(|a| a.ip().to_canonical().to_string())
            .unwrap_or_default()
            .into();
        let peer_ip = peer.ip().to_canonical().to_string();
        let info = ConnInfo {
            peer,
            local_ip,
            serial: SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
            // An IP address's text is always a valid header value.
            peer_ip_value: http::HeaderValue::from_str(&peer_ip)
                .unwrap_or_else(|_| http::HeaderValue::from_static("")),
            peer_ip,
            local_port,
            local_port_value: http::HeaderValue::from(local_port),
            tls,
            sni: None,
            h2: false,
            shared: Arc::new(ConnShared::default()),
        };
        tokio::task::spawn_local(serve_connection(
            worker.clone(),
            stream,
            info,
            acceptor.clone(),
            opts.deadlines,
            shutdown.clone(),
            guard,
        ));
    }
}

/// hyper's executor for HTTP/2 streams on this worker's thread.
#[derive(Clone, Copy)]
struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

async fn serve_connection(
    worker: Rc<Worker>,
    stream: TcpStream,
    mut info: ConnInfo,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    deadlines: Deadlines,
    shutdown: watch::Receiver<bool>,
    _slot: SlotGuard,
) {
    match acceptor {
        None => {
            // HTTP/2 with prior knowledge (gRPC clients in clear text) or HTTP/1.1,
            // told apart by the connection preface.
            match h2_preface(&stream, deadlines.header).await {
                Some(true) => {
                    info.h2 = true;
                    serve_h2(worker, stream, info, deadlines, shutdown).await;
                }
                Some(false) => serve_h1(worker, stream, info, deadlines, shutdown).await,
                // Nothing (or no whole line) before the header deadline: closed, as the
                // HTTP/1 deadline would have.
                None => {}
            }
        }
        Some(acc) => {
            let tls = match tokio::time::timeout(deadlines.header, acc.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            info.sni = tls.get_ref().1.server_name().map(|n| {
                let n = n.to_ascii_lowercase();
                n.strip_suffix('.').unwrap_or(&n).into()
            });
            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                info.h2 = true;
                serve_h2(worker, tls, info, deadlines, shutdown).await;
            } else {
                serve_h1(worker, tls, info, deadlines, shutdown).await;
            }
        }
    }
}

/// Whether the client opens with HTTP/2's connection preface (RFC 9113 3.4), looked at
/// without consuming it: `Some(true)`; other bytes or a close: `Some(false)` (HTTP/1.1,
/// whose own handling follows); nothing by the header deadline: `None`.
async fn h2_preface(stream: &TcpStream, wait: Duration) -> Option<bool> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; 24];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) => return Some(false),
            Err(_) => return None,
        };
        if n == 0 || buf[..n] != PREFACE[..n] {
            return Some(false);
        }
        if n == PREFACE.len() {
            return Some(true);
        }
        // A preface split across packets: look again shortly (peek does not wait for
        // more bytes than are there).
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn serve_h1<T>(
    worker: Rc<Worker>,
    io: T,
    info: ConnInfo,
    deadlines: Deadlines,
    mut shutdown: watch::Receiver<bool>,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(GuardedIo::new(io, info.shared.clone(), deadlines, true));
    let info = Rc::new(info);
    let svc = {
        let worker = worker.clone();
        service_fn(move |req| proxy::handle(worker.clone(), info.clone(), req))
    };
    let limits = &worker.gw.limits;
    let mut b = http1::Builder::new();
    b.keep_alive(true)
        .timer(TokioTimer::new())
        // The guarded stream enforces the header, body and idle deadlines.
        .header_read_timeout(None)
        .max_buf_size((limits.max_header_bytes + 16 * 1024).max(16 * 1024));
    if limits.max_header_count != 100 {
        b.max_headers(limits.max_header_count + 1);
    }
    let conn = b.serve_connection(io, svc).with_upgrades();
    tokio::pin!(conn);
    if *shutdown.borrow() {
        conn.as_mut().graceful_shutdown();
    }
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
            return;
        }
        _ = shutdown.changed() => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}

async fn serve_h2<T>(
    worker: Rc<Worker>,
    io: T,
    info: ConnInfo,
    deadlines: Deadlines,
    mut shutdown: watch::Receiver<bool>,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let io = TokioIo::new(GuardedIo::new(io, info.shared.clone(), deadlines, false));
    let info = Rc::new(info);
    let svc = {
        let worker = worker.clone();
        service_fn(move |req| proxy::handle(worker.clone(), info.clone(), req))
    };
    let mut b = http2::Builder::new(LocalExec);
    b.timer(TokioTimer::new())
        .max_header_list_size((worker.gw.limits.max_header_bytes + 16 * 1024) as u32);
    let conn = b.serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "HTTP/2 connection ended with an error");
            }
            return;
        }
        _ = shutdown.changed() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// Why the listener's certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("cannot read certificate {}: {source}", path.display())]
    Certificate {
        path: std::path::PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("no certificate in {}", .0.display())]
    NoCertificate(std::path::PathBuf),
    #[error("cannot read private key {}: {source}", path.display())]
    Key {
        path: std::path::PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("certificate and key do not match: {0}")]
    Mismatch(#[source] rustls::Error),
}

/// Loads a PEM certificate chain and private key into a rustls server configuration
/// that offers HTTP/2 and HTTP/1.1 by ALPN.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsConfigError::Certificate {
            path: cert.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate(cert.to_path_buf()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsConfigError::Key {
        path: key.to_path_buf(),
        source,
    })?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsConfigError::Mismatch)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
