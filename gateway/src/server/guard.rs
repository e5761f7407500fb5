//! The client connection's byte stream, watched on its way into the HTTP/1 parser.
//!
//! Two jobs the parser does not do the gateway's way:
//! - **Framing defence.** hyper accepts some heads that two parsers could read
//!   differently (Content-Length with Transfer-Encoding, repeated Content-Length, bare LF
//!   line ends, obsolete line folding, a `#fragment` in the target) and normalises them
//!   away before the gateway sees the request. This stream follows the HTTP/1 framing
//!   itself (heads, Content-Length bodies, chunked bodies) and records a verdict per
//!   request head; the proxy reads the verdict first and answers 400 with the connection
//!   closed, so such a request is never forwarded.
//! - **Deadlines.** A request head must arrive within the header deadline from its first
//!   byte (slowloris); a body must keep moving (client timeout between reads); an idle
//!   keep-alive connection closes after the keep-alive timeout; a stalled reader is cut
//!   off after the client timeout between writes. Expiry fails the read or write, which
//!   closes the connection.
//!
//! After an upgrade (101) the stream is a tunnel: no framing, no deadlines.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Deadlines for client connections.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// From the first byte of a request head to its end (and for a new connection's
    /// first byte).
    pub header: Duration,
    /// Between request body reads, and between response writes the client does not take.
    pub client: Duration,
    /// An idle keep-alive connection between requests.
    pub keepalive: Duration,
}

/// What the stream and the request handler share about one connection.
#[derive(Default)]
pub struct ConnShared {
    /// One entry per request head seen, in order: `Some(reason)` when its framing is bad.
    verdicts: Mutex<VecDeque<Option<&'static str>>>,
    /// Set once the connection was upgraded: bytes are passed through untouched.
    tunnel: AtomicBool,
    /// A body's framing failed after its head was handed over.
    body_error: AtomicBool,
    /// Requests served on this connection so far (nginx's `connection_requests`).
    pub requests: std::sync::atomic::AtomicU64,
}

impl ConnShared {
    /// The verdict on the next request head (`None`: nothing against it).
    pub fn next_verdict(&self) -> Option<&'static str> {
        self.verdicts
            .lock()
            .ok()
            .and_then(|mut q| q.pop_front())
            .flatten()
    }

    pub fn set_tunnel(&self) {
        self.tunnel.store(true, Ordering::Relaxed);
    }

    pub fn body_error(&self) -> bool {
        self.body_error.load(Ordering::Relaxed)
    }

    fn push(&self, v: Option<&'static str>) {
        if let Ok(mut q) = self.verdicts.lock() {
            q.push_back(v);
        }
    }

    /// Marks the last head seen as bad, if the handler has not taken it yet.
    fn spoil_last(&self, why: &'static str) -> bool {
        match self.verdicts.lock() {
            Ok(mut q) => match q.back_mut() {
                Some(v) => {
                    v.get_or_insert(why);
                    true
                }
                None => false,
            },
            Err(_) => false,
        }
    }
}

/// Where the framing tracker is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Reading a request head (or waiting for one).
    Head,
    /// A Content-Length body with this many bytes left.
    Body(u64),
    /// A chunked body: reading a chunk-size line.
    ChunkSize,
    /// Chunk data with this many bytes left, then CRLF.
    ChunkData(u64),
    /// The CRLF after chunk data (bytes of it left).
    ChunkEnd(u8),
    /// Trailer lines after the last chunk, until an empty line.
    Trailers,
    /// Not HTTP/1 framing any more (upgraded, or given up after a bad head).
    Off,
}

/// The framing of the head being read.
#[derive(Default)]
struct HeadScan {
    started: bool,
    lines: u32,
    bytes: usize,
    http10: bool,
    content_lengths: u32,
    content_length: u64,
    transfer_encodings: u32,
    hosts: u32,
    bad: Option<&'static str>,
}

struct Tracker {
    state: State,
    head: HeadScan,
    /// The line being read (head, chunk-size or trailer lines), up to a cap.
    line: Vec<u8>,
    requests: u64,
    /// When the current head's first byte arrived.
    head_started_at: Option<Instant>,
}

const LINE_CAP: usize = 64 * 1024;

impl Tracker {
    fn new() -> Tracker {
        Tracker {
            state: State::Head,
            head: HeadScan::default(),
            line: Vec::new(),
            requests: 0,
            head_started_at: None,
        }
    }

    /// Follows `data` through the framing; pushes a verdict at the end of each head.
    fn feed(&mut self, mut data: &[u8], shared: &ConnShared, now: Instant) {
        while !data.is_empty() {
            match self.state {
                State::Off => return,
                State::Body(left) => {
                    let n = (left as usize).min(data.len());
                    data = &data[n..];
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Body(left)
                    };
                }
                State::ChunkData(left) => {
                    let n = (left as usize).min(data.len());
                    data = &data[n..];
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::ChunkEnd(2)
                    } else {
                        State::ChunkData(left)
                    };
                }
                State::ChunkEnd(left) => {
                    let want: &[u8] = if left == 2 { b"\r\n" } else { b"\n" };
                    if data[0] != want[0] {
                        self.fail_body(shared, "chunk data not followed by CRLF");
                        return;
                    }
                    data = &data[1..];
                    self.state = if left == 2 {
                        State::ChunkEnd(1)
                    } else {
                        State::ChunkSize
                    };
                }
                State::Head | State::ChunkSize | State::Trailers => {
                    if self.state == State::Head && !self.head.started {
                        self.head.started = true;
                        self.head_started_at = Some(now);
                    }
                    let (chunk, rest, complete) = match memchr::memchr(b'\n', data) {
                        Some(i) => (&data[..=i], &data[i + 1..], true),
                        None => (data, &data[data.len()..], false),
                    };
                    data = rest;
                    if self.line.len() + chunk.len() > LINE_CAP {
                        // The parser answers 431 for an oversized head; stop following.
                        self.state = State::Off;
                        return;
                    }
                    if self.state == State::Head {
                        self.head.bytes += chunk.len();
                    }
                    if complete && self.line.is_empty() {
                        // The whole line is in this read: no copy.
                        self.line_done(chunk, shared);
                    } else {
                        self.line.extend_from_slice(chunk);
                        if complete {
                            let line = std::mem::take(&mut self.line);
                            self.line_done(&line, shared);
                            self.line = line;
                            self.line.clear();
                        }
                    }
                }
            }
        }
    }

    fn fail_body(&mut self, shared: &ConnShared, why: &'static str) {
        if !shared.spoil_last(why) {
            shared.body_error.store(true, Ordering::Relaxed);
        }
        self.state = State::Off;
    }

    fn line_done(&mut self, raw: &[u8], shared: &ConnShared) {
        let bare_lf = raw.len() < 2 || raw[raw.len() - 2] != b'\r';
        let line = if bare_lf {
            &raw[..raw.len() - 1]
        } else {
            &raw[..raw.len() - 2]
        };
        match self.state {
            State::Head => self.head_line(line, bare_lf, shared),
            State::ChunkSize => {
                if bare_lf {
                    return self.fail_body(shared, "bare LF in chunked body");
                }
                let (size, ext) = match memchr::memchr(b';', line) {
                    Some(i) => (&line[..i], &line[i..]),
                    None => (line, &line[line.len()..]),
                };
                let size = trim_ows(size);
                if ext.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                    return self.fail_body(shared, "control character in a chunk extension");
                }
                if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
                    return self.fail_body(shared, "invalid chunk size");
                }
                let n = size.iter().fold(0u64, |acc, &b| {
                    acc * 16 + (b as char).to_digit(16).unwrap_or(0) as u64
                });
                self.state = if n == 0 {
                    State::Trailers
                } else {
                    State::ChunkData(n)
                };
            }
            State::Trailers => {
                if bare_lf {
                    return self.fail_body(shared, "bare LF in trailers");
                }
                if line.is_empty() {
                    self.state = State::Head;
                }
            }
            _ => {}
        }
    }

    fn head_line(&mut self, line: &[u8], bare_lf: bool, shared: &ConnShared) {
        let h = &mut self.head;
        if h.lines == 0 && line.is_empty() {
            // An empty line before the request line: ignored, as RFC 9112 allows.
            if bare_lf {
                h.bad.get_or_insert("bare LF line end");
            }
            return;
        }
        if bare_lf {
            h.bad.get_or_insert("bare LF line end");
        }
        h.lines += 1;
        if h.lines == 1 {
            // Request line: method SP target SP version.
            let mut parts = line.split(|&b| b == b' ');
            let _method = parts.next();
            let target = parts.next().unwrap_or_default();
            let version = parts.next().unwrap_or_default();
            if parts.next().is_some() {
                h.bad.get_or_insert("whitespace in the request target");
            }
            if target.contains(&b'#') {
                h.bad.get_or_insert("fragment in the request target");
            }
            if line.iter().any(|&b| b < 0x20 || b == 0x7f) {
                h.bad.get_or_insert("control character in the request line");
            }
            h.http10 = version == b"HTTP/1.0";
            return;
        }
        if line.is_empty() {
            return self.head_done(shared);
        }
        if line[0] == b' ' || line[0] == b'\t' {
            h.bad.get_or_insert("obsolete line folding");
            return;
        }
        if memchr::memchr2(b'\r', 0, line).is_some() {
            h.bad.get_or_insert("control character in a header");
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            h.bad.get_or_insert("header line without a colon");
            return;
        };
        let name = &line[..colon];
        let value = trim_ows(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            h.content_lengths += 1;
            if h.content_lengths > 1 {
                h.bad.get_or_insert("more than one Content-Length");
            }
            if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
                h.bad.get_or_insert("invalid Content-Length");
            } else {
                h.content_length = value
                    .iter()
                    .fold(0u64, |acc, &b| acc * 10 + u64::from(b - b'0'));
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            h.transfer_encodings += 1;
            if h.transfer_encodings > 1 {
                h.bad.get_or_insert("more than one Transfer-Encoding");
            }
            if !value.eq_ignore_ascii_case(b"chunked") {
                h.bad.get_or_insert("Transfer-Encoding other than chunked");
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            h.hosts += 1;
            if h.hosts > 1 {
                h.bad.get_or_insert("more than one Host");
            }
        }
    }

    fn head_done(&mut self, shared: &ConnShared) {
        let mut h = std::mem::take(&mut self.head);
        self.head_started_at = None;
        self.requests += 1;
        if h.content_lengths > 0 && h.transfer_encodings > 0 {
            h.bad
                .get_or_insert("both Content-Length and Transfer-Encoding");
        }
        if h.transfer_encodings > 0 && h.http10 {
            h.bad.get_or_insert("Transfer-Encoding in HTTP/1.0");
        }
        if !h.http10 && h.hosts == 0 {
            h.bad.get_or_insert("HTTP/1.1 request without Host");
        }
        shared.push(h.bad);
        self.state = if h.bad.is_some() {
            // The request is refused and the connection closed: nothing after it counts.
            State::Off
        } else if h.transfer_encodings > 0 {
            State::ChunkSize
        } else if h.content_length > 0 {
            State::Body(h.content_length)
        } else {
            State::Head
        };
    }
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A client connection's stream with framing checks and deadlines.
pub struct GuardedIo<T> {
    inner: T,
    shared: std::sync::Arc<ConnShared>,
    tracker: Option<Box<Tracker>>,
    deadlines: Deadlines,
    /// Last time bytes moved in either direction.
    last_read: Instant,
    last_write: Instant,
    read_timer: Pin<Box<Sleep>>,
    read_armed: Option<Instant>,
    write_timer: Pin<Box<Sleep>>,
    write_armed: Option<Instant>,
}

impl<T> GuardedIo<T> {
    /// `http1`: follow HTTP/1 framing (off for HTTP/2 connections).
    pub fn new(
        inner: T,
        shared: std::sync::Arc<ConnShared>,
        deadlines: Deadlines,
        http1: bool,
    ) -> Self {
        let now = Instant::now();
        GuardedIo {
            inner,
            shared,
            tracker: http1.then(|| Box::new(Tracker::new())),
            deadlines,
            last_read: now,
            last_write: now,
            read_timer: Box::pin(tokio::time::sleep_until(now + deadlines.header)),
            read_armed: None,
            write_timer: Box::pin(tokio::time::sleep_until(now + deadlines.client)),
            write_armed: None,
        }
    }

    /// When a read that is waiting must give up.
    fn read_deadline(&self) -> Option<Instant> {
        if self.shared.tunnel.load(Ordering::Relaxed) {
            return None;
        }
        let Some(t) = &self.tracker else {
            // HTTP/2: its own pings and GOAWAY; only the idle bound applies.
            return Some(self.last_read.max(self.last_write) + self.deadlines.keepalive);
        };
        Some(match t.state {
            State::Off => return None,
            State::Head => match t.head_started_at {
                Some(at) => at + self.deadlines.header,
                None if t.requests == 0 => self.last_read + self.deadlines.header,
                None => self.last_read.max(self.last_write) + self.deadlines.keepalive,
            },
            _ => self.last_read + self.deadlines.client,
        })
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_string())
}

/// Polls `timer` for `deadline`, re-arming it only when the deadline moved earlier (a
/// timer firing early is re-checked, so later deadlines need no re-arm).
fn poll_deadline(
    timer: &mut Pin<Box<Sleep>>,
    armed: &mut Option<Instant>,
    deadline: Instant,
    cx: &mut Context<'_>,
) -> bool {
    let now = Instant::now();
    if now >= deadline {
        return true;
    }
    match *armed {
        Some(a) if a <= deadline && a > now => {}
        _ => {
            timer.as_mut().reset(deadline);
            *armed = Some(deadline);
        }
    }
    if timer.as_mut().poll(cx).is_ready() {
        *armed = None;
        if Instant::now() >= deadline {
            return true;
        }
        timer.as_mut().reset(deadline);
        *armed = Some(deadline);
        let _ = timer.as_mut().poll(cx);
    }
    false
}

use std::future::Future;

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let now = Instant::now();
                this.last_read = now;
                let fresh = &buf.filled()[before..];
                if let Some(t) = this.tracker.as_mut()
                    && !this.shared.tunnel.load(Ordering::Relaxed)
                {
                    t.feed(fresh, &this.shared, now);
                    if this.shared.body_error() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "bad request body framing",
                        )));
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if let Some(d) = this.read_deadline()
                    && poll_deadline(&mut this.read_timer, &mut this.read_armed, d, cx)
                {
                    return Poll::Ready(Err(timed_out("client read deadline passed")));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Ready(r) => {
                this.last_write = Instant::now();
                Poll::Ready(r)
            }
            Poll::Pending => this.write_pending(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                this.last_write = Instant::now();
                Poll::Ready(r)
            }
            Poll::Pending => this.write_pending(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T> GuardedIo<T> {
    fn write_pending<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        if !self.shared.tunnel.load(Ordering::Relaxed) {
            let d = self.last_write + self.deadlines.client;
            if poll_deadline(&mut self.write_timer, &mut self.write_armed, d, cx) {
                return Poll::Ready(Err(timed_out("client write deadline passed")));
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(input: &[u8]) -> Vec<Option<&'static str>> {
        let shared = ConnShared::default();
        let mut t = Tracker::new();
        t.feed(input, &shared, Instant::now());
        shared
            .verdicts
            .lock()
            .map(|q| q.iter().copied().collect())
            .unwrap_or_default()
    }

    #[test]
    fn follows_bodies_between_pipelined_heads() {
        let v = verdicts(
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab\ncdGET /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\na\nb\r\n0\r\nT: 1\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        assert_eq!(v, vec![None, None, None]);
    }

    #[test]
    fn ambiguous_heads_get_a_reason() {
        let cases: &[&[u8]] = &[
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            b"GET / HTTP/1.1\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
            b"GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;a\x01b\r\nx\r\n0\r\n\r\n",
        ];
        for (i, c) in cases.iter().enumerate() {
            let v = verdicts(c);
            assert!(
                v.first().copied().flatten().is_some(),
                "case {i} passed: {v:?}"
            );
        }
    }
}
