//! The client side of one request as the plugins see it: its head and its body. Body
//! chunks a plugin reads during the access phase are kept, so the upstream still gets
//! the whole body.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{Error, RequestHeader, Result};

pub struct Session {
    head: RequestHeader,
    body: Option<Incoming>,
    /// Chunks already read from `body` (replayed upstream before the rest).
    read: Vec<Bytes>,
    read_bytes: u64,
    body_done: bool,
    body_limit: u64,
    pub client_addr: Option<SocketAddr>,
}

impl Session {
    pub fn new(
        head: RequestHeader,
        body: Option<Incoming>,
        body_limit: u64,
        client_addr: Option<SocketAddr>,
    ) -> Session {
        Session {
            head,
            body,
            read: Vec::new(),
            read_bytes: 0,
            body_done: false,
            body_limit,
            client_addr,
        }
    }

    pub fn req_header(&self) -> &RequestHeader {
        &self.head
    }

    pub fn req_header_mut(&mut self) -> &mut RequestHeader {
        &mut self.head
    }

    /// The next chunk of the request body (`None` at its end). Chunks read here are also
    /// sent upstream. Over the gateway's body limit: `Error::BodyTooLarge`.
    pub async fn read_request_body(&mut self) -> Result<Option<Bytes>> {
        if self.body_done {
            return Ok(None);
        }
        let Some(body) = self.body.as_mut() else {
            self.body_done = true;
            return Ok(None);
        };
        loop {
            match body.frame().await {
                None => {
                    self.body_done = true;
                    return Ok(None);
                }
                Some(Err(e)) => return Err(Error::Body(e.to_string())),
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    self.read_bytes += data.len() as u64;
                    if self.read_bytes > self.body_limit {
                        return Err(Error::BodyTooLarge);
                    }
                    self.read.push(data.clone());
                    return Ok(Some(data));
                }
            }
        }
    }

    /// Kept for plugins written against the buffering API: chunks read in the access
    /// phase are always kept for the upstream.
    pub fn enable_retry_buffering(&mut self) {}

    /// Reads the rest of the body into one buffer (for plugins that rewrite it).
    pub async fn read_whole_body(&mut self) -> Result<bytes::BytesMut> {
        while self.read_request_body().await?.is_some() {}
        let mut all = bytes::BytesMut::with_capacity(self.read_bytes as usize);
        for c in self.read.drain(..) {
            all.extend_from_slice(&c);
        }
        Ok(all)
    }

    /// Replaces a body that was read to its end (a plugin removed something from it,
    /// e.g. key-auth's `hide_credentials` with `key_in_body`); Content-Length follows.
    pub fn replace_read_body(&mut self, body: Bytes) {
        if !self.body_done {
            return;
        }
        self.head.headers.remove(http::header::TRANSFER_ENCODING);
        self.head.headers.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(body.len()),
        );
        self.read_bytes = body.len() as u64;
        self.read = vec![body];
    }

    /// Bytes of the body read so far.
    pub fn body_bytes_read(&self) -> u64 {
        self.read_bytes
    }

    /// Hands the body over for the upstream: the chunks read so far, the unread rest
    /// (`None` when the body was read to its end) and the bytes counted so far.
    pub fn take_body(&mut self) -> (Vec<Bytes>, Option<Incoming>, u64) {
        use hyper::body::Body;
        // A body already read to its end (or empty, as for most GETs) is replayable.
        let rest = if self.body_done || self.body.as_ref().is_some_and(|b| b.is_end_stream()) {
            None
        } else {
            self.body.take()
        };
        (std::mem::take(&mut self.read), rest, self.read_bytes)
    }

    pub fn has_body(&self) -> bool {
        use hyper::body::Body;
        self.body.as_ref().is_some_and(|b| !b.is_end_stream())
    }
}
