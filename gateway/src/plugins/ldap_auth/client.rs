//! A minimal LDAPv3 client: a simple BindRequest (and the StartTLS extended operation)
//! encoded in BER by hand, over TCP, LDAPS or StartTLS. That is all ldap-auth needs, so
//! no LDAP library is pulled in.
//!
//! Connections are kept for the next bind (Kong's keepalive pool), per thread.
//!
//! Outcomes follow Kong's `ldap.lua` and `access.lua`: a bind the server refuses, a bad
//! response or a failed TLS handshake is a failed authentication (`Ok(false)`, cached
//! like a refusal); a connection that cannot be made or breaks, a timeout or a refused
//! StartTLS is an error (`Err`: Kong answers 500).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response accepted (a BindResponse is a few dozen bytes).
const MAX_MESSAGE: usize = 64 * 1024;
const START_TLS_OID: &[u8] = b"1.3.6.1.4.1.1466.20037";

const TAG_INTEGER: u8 = 0x02;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_ENUMERATED: u8 = 0x0a;
const TAG_SEQUENCE: u8 = 0x30;
/// [APPLICATION n], constructed.
const OP_BIND_REQUEST: u8 = 0x60;
const OP_BIND_RESPONSE: u8 = 0x61;
const OP_UNBIND_REQUEST: u8 = 0x42;
const OP_EXTENDED_REQUEST: u8 = 0x77;
const OP_EXTENDED_RESPONSE: u8 = 0x78;
/// [0], primitive: simple authentication, and the extended request's name.
const CONTEXT_0: u8 = 0x80;

#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    #[error("failed to connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("timed out talking to the LDAP server")]
    Timeout,
    #[error("LDAP connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("LDAP response too large ({0} bytes)")]
    TooLarge(usize),
    #[error("StartTLS failed: {0}")]
    StartTls(String),
}

/// Where and how to bind.
pub struct Server<'a> {
    pub host: &'a str,
    pub port: u16,
    pub ldaps: bool,
    pub start_tls: bool,
    /// TLS client configuration (certificate checks as `verify_ldap_host` says).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Limit on each step: connect, send, receive (Kong's `timeout`).
    pub timeout: Duration,
}

/// BER length octets.
fn put_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    put_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

fn integer(v: u32) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let mut skip = bytes.iter().take_while(|&&b| b == 0).count().min(3);
    // A leading 1 bit would make it negative: keep a zero octet before it.
    if skip > 0 && bytes[skip] & 0x80 != 0 {
        skip -= 1;
    }
    tlv(TAG_INTEGER, &bytes[skip..])
}

fn message(id: u32, op: Vec<u8>) -> Vec<u8> {
    let mut content = integer(id);
    content.extend_from_slice(&op);
    tlv(TAG_SEQUENCE, &content)
}

/// `BindRequest { version 3, name, simple password }` as LDAPMessage `id`.
pub fn bind_request(id: u32, dn: &[u8], password: &[u8]) -> Vec<u8> {
    let mut op = integer(3);
    op.extend_from_slice(&tlv(TAG_OCTET_STRING, dn));
    op.extend_from_slice(&tlv(CONTEXT_0, password));
    message(id, tlv(OP_BIND_REQUEST, &op))
}

fn start_tls_request(id: u32) -> Vec<u8> {
    message(id, tlv(OP_EXTENDED_REQUEST, &tlv(CONTEXT_0, START_TLS_OID)))
}

fn unbind_request(id: u32) -> Vec<u8> {
    message(id, vec![OP_UNBIND_REQUEST, 0])
}

/// One TLV at the start of `b`: (tag, content, rest).
fn read_tlv(b: &[u8]) -> Result<(u8, &[u8], &[u8]), &'static str> {
    let (&tag, b) = b.split_first().ok_or("truncated")?;
    let (&first, mut b) = b.split_first().ok_or("truncated")?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || b.len() < n {
            return Err("bad length");
        }
        let len = b[..n].iter().fold(0usize, |a, &x| (a << 8) | x as usize);
        b = &b[n..];
        len
    };
    if b.len() < len {
        return Err("truncated");
    }
    Ok((tag, &b[..len], &b[len..]))
}

fn unsigned(content: &[u8]) -> Result<u32, &'static str> {
    if content.is_empty() || content.len() > 4 || content[0] & 0x80 != 0 {
        return Err("bad integer");
    }
    Ok(content.iter().fold(0u32, |a, &x| (a << 8) | x as u32))
}

/// An LDAPResult inside a response: (protocol op tag, resultCode).
pub fn parse_result(msg: &[u8]) -> Result<(u8, u32), &'static str> {
    let (tag, body, _) = read_tlv(msg)?;
    if tag != TAG_SEQUENCE {
        return Err("not an LDAPMessage");
    }
    let (tag, id, rest) = read_tlv(body)?;
    if tag != TAG_INTEGER {
        return Err("message id should be an integer value");
    }
    unsigned(id)?;
    let (op, result, _) = read_tlv(rest)?;
    let (tag, code, rest) = read_tlv(result)?;
    if tag != TAG_ENUMERATED {
        return Err("result code should be an enumerated value");
    }
    let code = unsigned(code)?;
    let (tag, _, rest) = read_tlv(rest)?;
    if tag != TAG_OCTET_STRING {
        return Err("matched dn should be an octet string");
    }
    let (tag, _, _) = read_tlv(rest)?;
    if tag != TAG_OCTET_STRING {
        return Err("diagnostic message should be an octet string");
    }
    Ok((op, code))
}

async fn step<T>(
    timeout: Duration,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, LdapError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(LdapError::Timeout),
    }
}

/// Sends one request and reads one whole response message.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    req: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, LdapError> {
    step(timeout, s.write_all(req)).await?;
    step(timeout, s.flush()).await?;
    let mut head = [0u8; 2];
    step(timeout, s.read_exact(&mut head)).await?;
    let mut msg = head.to_vec();
    let len = if head[1] < 0x80 {
        head[1] as usize
    } else {
        let n = (head[1] & 0x7f) as usize;
        if n == 0 || n > 4 {
            return Err(LdapError::TooLarge(usize::MAX));
        }
        let mut l = vec![0u8; n];
        step(timeout, s.read_exact(&mut l)).await?;
        msg.extend_from_slice(&l);
        l.iter().fold(0usize, |a, &x| (a << 8) | x as usize)
    };
    if len > MAX_MESSAGE {
        return Err(LdapError::TooLarge(len));
    }
    let start = msg.len();
    msg.resize(start + len, 0);
    step(timeout, s.read_exact(&mut msg[start..])).await?;
    Ok(msg)
}

/// A connection to the directory, plain or TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Idle connections of this thread. Each proxy worker runs its own runtime on its own
/// thread, and a socket belongs to the runtime that opened it, so the pool is per thread
/// (Kong's pools are per nginx worker too).
struct Idle {
    key: PoolKey,
    conn: Conn,
    since: std::time::Instant,
    /// The next LDAP message id on this connection.
    next_id: u32,
}

/// Connections are shared only between identical server settings.
#[derive(Clone, PartialEq, Eq)]
struct PoolKey {
    host: String,
    port: u16,
    ldaps: bool,
    start_tls: bool,
    tls: usize,
}

/// Idle connections kept per thread, over every server.
const POOL_MAX: usize = 32;

thread_local! {
    static POOL: std::cell::RefCell<Vec<Idle>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn pool_take(key: &PoolKey, keepalive: Option<Duration>) -> Option<(Conn, u32)> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        p.retain(|i| keepalive.is_none_or(|k| i.key != *key || i.since.elapsed() < k));
        let at = p.iter().rposition(|i| i.key == *key)?;
        let i = p.remove(at);
        Some((i.conn, i.next_id))
    })
}

fn pool_put(key: PoolKey, conn: Conn, next_id: u32) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() >= POOL_MAX {
            p.remove(0);
        }
        p.push(Idle {
            key,
            conn,
            since: std::time::Instant::now(),
            next_id,
        });
    });
}

/// Binds as `dn` with `password`: `Ok(true)` when the server accepts. An idle connection
/// to the same server is reused when there is one (`keepalive`: how long one may stay
/// idle; None: for ever); a reused connection that turns out closed is replaced by a new
/// one.
pub async fn bind(
    server: &Server<'_>,
    dn: &[u8],
    password: &[u8],
    keepalive: Option<Duration>,
) -> Result<bool, LdapError> {
    let key = PoolKey {
        host: server.host.to_ascii_lowercase(),
        port: server.port,
        ldaps: server.ldaps,
        start_tls: server.start_tls,
        tls: server.tls.as_ref().map_or(0, |t| Arc::as_ptr(t) as usize),
    };
    if let Some((mut conn, id)) = pool_take(&key, keepalive)
        && let Ok(result) = bind_on(&mut conn, id, dn, password, server.timeout).await
    {
        return Ok(finish(key, conn, id, result, server.timeout).await);
    }
    let Some(mut conn) = connect(server).await? else {
        return Ok(false);
    };
    let id = if server.start_tls { 2 } else { 1 };
    let result = bind_on(&mut conn, id, dn, password, server.timeout).await?;
    Ok(finish(key, conn, id, result, server.timeout).await)
}

/// Keeps the connection for the next bind when the exchange went as the protocol says,
/// else closes it. Returns whether the bind was accepted.
async fn finish(
    key: PoolKey,
    mut conn: Conn,
    id: u32,
    result: BindResult,
    timeout: Duration,
) -> bool {
    match result {
        BindResult::Accepted | BindResult::Refused => {
            pool_put(key, conn, id.wrapping_add(1).max(1));
        }
        BindResult::Invalid => {
            let _ = tokio::time::timeout(timeout, conn.write_all(&unbind_request(id + 1))).await;
            let _ = tokio::time::timeout(timeout, conn.shutdown()).await;
        }
    }
    matches!(result, BindResult::Accepted)
}

/// A new connection (TCP, then StartTLS and TLS as configured). `Ok(None)`: the TLS
/// handshake failed, which Kong counts as a failed authentication.
async fn connect(server: &Server<'_>) -> Result<Option<Conn>, LdapError> {
    let tcp = step(
        server.timeout,
        TcpStream::connect((server.host, server.port)),
    )
    .await
    .map_err(|e| match e {
        LdapError::Io(io) => LdapError::Connect(format!("{}:{}", server.host, server.port), io),
        other => other,
    })?;
    let _ = tcp.set_nodelay(true);
    let mut conn = Conn::Plain(tcp);
    if server.start_tls {
        let resp = exchange(&mut conn, &start_tls_request(1), server.timeout).await?;
        match parse_result(&resp) {
            Ok((OP_EXTENDED_RESPONSE, 0)) => {}
            Ok((op, code)) => {
                return Err(LdapError::StartTls(format!(
                    "op {op:#x}, result code {code}"
                )));
            }
            Err(e) => return Err(LdapError::StartTls(e.into())),
        }
    }
    let tls = match (&server.tls, server.ldaps || server.start_tls) {
        (Some(tls), true) => tls,
        _ => return Ok(Some(conn)),
    };
    let tcp = match conn {
        Conn::Plain(tcp) => tcp,
        tls_already => return Ok(Some(tls_already)),
    };
    let Ok(name) = rustls::pki_types::ServerName::try_from(server.host.to_string()) else {
        return Ok(None);
    };
    let connector = tokio_rustls::TlsConnector::from(tls.clone());
    match tokio::time::timeout(server.timeout, connector.connect(name, tcp)).await {
        Ok(Ok(s)) => Ok(Some(Conn::Tls(Box::new(s)))),
        Ok(Err(e)) => {
            tracing::warn!(host = server.host, port = server.port, error = %e, "ldap-auth: TLS handshake failed");
            Ok(None)
        }
        Err(_) => Err(LdapError::Timeout),
    }
}

/// How the server answered a bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BindResult {
    Accepted,
    /// A BindResponse with another result code (invalid credentials, ...).
    Refused,
    /// Not a BindResponse, or not valid BER: the connection is not reused.
    Invalid,
}

async fn bind_on<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    id: u32,
    dn: &[u8],
    password: &[u8],
    timeout: Duration,
) -> Result<BindResult, LdapError> {
    let resp = exchange(s, &bind_request(id, dn, password), timeout).await?;
    Ok(match parse_result(&resp) {
        Ok((OP_BIND_RESPONSE, 0)) => BindResult::Accepted,
        Ok((OP_BIND_RESPONSE, code)) => {
            tracing::debug!(code, "ldap-auth: bind refused");
            BindResult::Refused
        }
        Ok((op, _)) => {
            tracing::warn!(op, "ldap-auth: unexpected response to a bind");
            BindResult::Invalid
        }
        Err(e) => {
            tracing::warn!(error = e, "ldap-auth: invalid LDAP message encoding");
            BindResult::Invalid
        }
    })
}

/// TLS client settings (`verify_ldap_host`): see [`crate::net::tls::client_config`].
pub fn tls_config(verify: bool) -> Arc<rustls::ClientConfig> {
    crate::net::tls::client_config(verify)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_bind_request() {
        let m = bind_request(1, b"cn=a,dc=x", b"pw");
        assert_eq!(
            m,
            [
                &[
                    0x30, 0x17, 0x02, 0x01, 0x01, 0x60, 0x12, 0x02, 0x01, 0x03, 0x04, 0x09
                ][..],
                b"cn=a,dc=x",
                &[0x80, 0x02],
                b"pw"
            ]
            .concat()
        );
        // Long form lengths.
        let long = vec![b'x'; 300];
        let m = bind_request(200, b"cn=a", &long);
        assert_eq!(&m[..4], &[0x30, 0x82, 0x01, 0x41]);
        assert_eq!(&m[4..8], &[0x02, 0x02, 0x00, 0xc8]);
    }

    #[test]
    fn parses_results() {
        // BindResponse success, id 1.
        let ok = [
            0x30, 0x0c, 0x02, 0x01, 0x01, 0x61, 0x07, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00,
        ];
        assert_eq!(parse_result(&ok), Ok((OP_BIND_RESPONSE, 0)));
        // invalidCredentials (49) with a diagnostic message.
        let bad = [
            0x30, 0x0f, 0x02, 0x01, 0x02, 0x61, 0x0a, 0x0a, 0x01, 0x31, 0x04, 0x00, 0x04, 0x03,
            b'b', b'a', b'd',
        ];
        assert_eq!(parse_result(&bad), Ok((OP_BIND_RESPONSE, 49)));
        assert!(parse_result(&ok[..8]).is_err());
        assert!(parse_result(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(parse_result(&[]).is_err());
    }
}
