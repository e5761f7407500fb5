//! Bodies on the way through: the request body sent upstream (chunks already read by a
//! plugin, then the rest of the client's stream, counted and held to the body limit) and
//! the response body sent to the client (whole, or streamed from the upstream). When the
//! response body ends (or the client goes away) the request's log phase runs and the
//! upstream connection goes back to its pool.

use std::cell::Cell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::upstream::{Pool, PoolKey};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the request body stream reports back to the request path.
#[derive(Default)]
pub struct BodyReport {
    pub bytes: Cell<u64>,
    pub over_limit: Cell<bool>,
    pub client_error: Cell<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body over the limit")]
    OverLimit,
    #[error("client body: {0}")]
    Client(String),
}

/// The request body sent upstream.
pub struct UpBody {
    /// Send chunked even when the length is known (a body a plugin rewrote: Kong sends
    /// those chunked).
    unsized_: bool,
    chunks: VecDeque<Bytes>,
    rest: Option<Incoming>,
    limit: u64,
    report: Option<Rc<BodyReport>>,
}

impl UpBody {
    pub fn empty() -> UpBody {
        UpBody {
            unsized_: false,
            chunks: VecDeque::new(),
            rest: None,
            limit: u64::MAX,
            report: None,
        }
    }

    /// A whole body, sent chunked.
    pub fn rewritten(b: Bytes) -> UpBody {
        let mut u = UpBody::empty();
        u.unsized_ = true;
        if !b.is_empty() {
            u.chunks.push_back(b);
        }
        u
    }

    /// `read`: chunks already taken from the client; `rest`: the unread remainder.
    pub fn stream(
        read: Vec<Bytes>,
        rest: Option<Incoming>,
        already: u64,
        limit: u64,
        report: Rc<BodyReport>,
    ) -> UpBody {
        report.bytes.set(already);
        UpBody {
            unsized_: false,
            chunks: read.into(),
            rest,
            limit,
            report: Some(report),
        }
    }

    /// True when the body can be sent again (no client stream left to read).
    pub fn replayable(&self) -> bool {
        self.rest.is_none()
    }

    /// A copy for another attempt, when replayable.
    pub fn replay(&self) -> Option<UpBody> {
        self.replayable().then(|| UpBody {
            unsized_: self.unsized_,
            chunks: self.chunks.clone(),
            rest: None,
            limit: self.limit,
            report: None,
        })
    }
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Some(c) = this.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(c))));
        }
        let Some(rest) = this.rest.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(rest).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.rest = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(r) = &this.report {
                    r.client_error.set(true);
                }
                Poll::Ready(Some(Err(BodyError::Client(e.to_string()))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(d), Some(r)) = (frame.data_ref(), &this.report) {
                    let n = r.bytes.get() + d.len() as u64;
                    r.bytes.set(n);
                    if n > this.limit {
                        r.over_limit.set(true);
                        return Poll::Ready(Some(Err(BodyError::OverLimit)));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let queued: u64 = self.chunks.iter().map(|c| c.len() as u64).sum();
        match &self.rest {
            None if self.unsized_ => {
                let mut h = SizeHint::new();
                h.set_lower(queued);
                h
            }
            None => SizeHint::with_exact(queued),
            Some(r) => {
                let h = r.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(h.lower() + queued);
                if let Some(u) = h.upper() {
                    out.set_upper(u + queued);
                }
                out
            }
        }
    }
}

/// Runs when the response is done: the log phase of the request.
pub trait OnDone {
    fn done(self: Box<Self>, bytes_out: u64, completed: bool);
}

/// An upstream connection to hand back once its response body was read to the end.
pub struct PoolReturn {
    pub pool: Rc<Pool>,
    pub key: PoolKey,
    pub tx: super::upstream::UpTx,
}

enum Kind {
    Full(Option<Bytes>),
    /// A body a plugin rewrote: sent chunked, as Kong does.
    Rewritten(Option<Bytes>),
    Stream {
        prefix: VecDeque<Bytes>,
        inner: Incoming,
        back: Option<PoolReturn>,
    },
}

/// The response body sent to the client.
pub struct RespBody {
    kind: Kind,
    bytes: u64,
    done: Option<Box<dyn OnDone>>,
}

impl RespBody {
    pub fn full(b: Bytes) -> RespBody {
        RespBody {
            kind: Kind::Full(Some(b)),
            bytes: 0,
            done: None,
        }
    }

    pub fn rewritten(b: Bytes) -> RespBody {
        RespBody {
            kind: Kind::Rewritten(Some(b)),
            bytes: 0,
            done: None,
        }
    }

    pub fn empty() -> RespBody {
        RespBody::full(Bytes::new())
    }

    pub fn stream(prefix: Vec<Bytes>, inner: Incoming, back: Option<PoolReturn>) -> RespBody {
        RespBody {
            kind: Kind::Stream {
                prefix: prefix.into(),
                inner,
                back,
            },
            bytes: 0,
            done: None,
        }
    }

    pub fn on_done(mut self, d: Box<dyn OnDone>) -> RespBody {
        self.done = Some(d);
        self
    }

    fn finish(&mut self, completed: bool) {
        if let Some(d) = self.done.take() {
            d.done(self.bytes, completed);
        }
    }
}

impl Drop for RespBody {
    fn drop(&mut self) {
        // The client went away (or the response had no body to poll): log it anyway.
        let completed = match &mut self.kind {
            Kind::Full(b) | Kind::Rewritten(b) => b.as_ref().is_none_or(|b| b.is_empty()),
            Kind::Stream {
                prefix,
                inner,
                back,
            } => {
                // A bodiless response (HEAD, 304) was never polled: its connection is
                // still good.
                let ended = prefix.is_empty() && inner.is_end_stream();
                if ended && let Some(r) = back.take() {
                    r.pool.put(r.key, r.tx);
                }
                ended
            }
        };
        self.finish(completed);
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match &mut this.kind {
            Kind::Full(b) | Kind::Rewritten(b) => match b.take() {
                Some(b) if !b.is_empty() => Poll::Ready(Some(Ok(Frame::data(b)))),
                _ => Poll::Ready(None),
            },
            Kind::Stream {
                prefix,
                inner,
                back,
            } => {
                if let Some(c) = prefix.pop_front() {
                    Poll::Ready(Some(Ok(Frame::data(c))))
                } else {
                    match Pin::new(inner).poll_frame(cx) {
                        Poll::Ready(None) => {
                            if let Some(r) = back.take() {
                                r.pool.put(r.key, r.tx);
                            }
                            Poll::Ready(None)
                        }
                        Poll::Ready(Some(Err(e))) => {
                            Poll::Ready(Some(Err(Box::new(e) as BoxError)))
                        }
                        other => other.map(|o| o.map(|r| r.map_err(|e| Box::new(e) as BoxError))),
                    }
                }
            }
        };
        match &polled {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.bytes += d.len() as u64;
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) | Kind::Rewritten(b) => b.as_ref().is_none_or(|b| b.is_empty()),
            Kind::Stream { prefix, inner, .. } => prefix.is_empty() && inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Rewritten(b) => {
                let mut h = SizeHint::new();
                h.set_lower(b.as_ref().map_or(0, |b| b.len() as u64));
                h
            }
            Kind::Stream { prefix, inner, .. } => {
                let queued: u64 = prefix.iter().map(|c| c.len() as u64).sum();
                let h = inner.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(h.lower() + queued);
                if let Some(u) = h.upper() {
                    out.set_upper(u + queued);
                }
                out
            }
        }
    }
}
