//! Compressed bodies that a plugin rewrites: gzip and deflate decoded within a limit (a
//! compression bomb stops at the limit), encoded again the same way after the rewrite;
//! and the process-wide budget for buffered response bodies.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;

/// All response bodies buffered at once, across every worker, stay under this.
pub const GLOBAL_BUFFER_BUDGET: usize = 256 * 1024 * 1024;

static BUFFERED: AtomicUsize = AtomicUsize::new(0);

/// A request's share of the global budget, given back when dropped.
#[derive(Default)]
pub struct Budget {
    held: usize,
}

impl Budget {
    /// Takes `n` more bytes; false when this body would pass `limit` or the process-wide
    /// budget (then nothing is taken).
    pub fn take(&mut self, n: usize, limit: usize) -> bool {
        if self.held + n > limit {
            return false;
        }
        let before = BUFFERED.fetch_add(n, Ordering::Relaxed);
        if before + n > GLOBAL_BUFFER_BUDGET {
            BUFFERED.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        self.held += n;
        true
    }

    pub fn held(&self) -> usize {
        self.held
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        BUFFERED.fetch_sub(self.held, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Deflate,
    /// br, zstd, several codings...: not decoded here.
    Other,
}

impl Encoding {
    pub fn of(headers: &http::HeaderMap) -> Encoding {
        let mut values = headers.get_all(http::header::CONTENT_ENCODING).iter();
        let Some(v) = values.next() else {
            return Encoding::Identity;
        };
        if values.next().is_some() {
            return Encoding::Other;
        }
        match v.to_str().map(|s| s.trim().to_ascii_lowercase()) {
            Ok(s) if s.is_empty() || s == "identity" => Encoding::Identity,
            Ok(s) if s == "gzip" || s == "x-gzip" => Encoding::Gzip,
            Ok(s) if s == "deflate" => Encoding::Deflate,
            _ => Encoding::Other,
        }
    }
}

/// Decodes at most `limit` bytes of output; None when the body is invalid or larger.
pub fn decode(enc: Encoding, body: &[u8], limit: usize) -> Option<BytesMut> {
    let mut out = Vec::new();
    let read = match enc {
        Encoding::Gzip => flate2::read::MultiGzDecoder::new(body)
            .take(limit as u64 + 1)
            .read_to_end(&mut out),
        // HTTP's "deflate" is zlib-wrapped; some servers send raw deflate.
        Encoding::Deflate => match flate2::read::ZlibDecoder::new(body)
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
        {
            Ok(n) => Ok(n),
            Err(_) => {
                out.clear();
                flate2::read::DeflateDecoder::new(body)
                    .take(limit as u64 + 1)
                    .read_to_end(&mut out)
            }
        },
        Encoding::Identity => return Some(BytesMut::from(body)),
        Encoding::Other => return None,
    };
    match read {
        Ok(n) if n <= limit => Some(BytesMut::from(&out[..])),
        _ => None,
    }
}

pub fn encode(enc: Encoding, body: &[u8]) -> BytesMut {
    let level = flate2::Compression::fast();
    let out = match enc {
        Encoding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
            e.write_all(body).and_then(|_| e.finish())
        }
        Encoding::Deflate => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
            e.write_all(body).and_then(|_| e.finish())
        }
        _ => Ok(body.to_vec()),
    };
    BytesMut::from(&out.unwrap_or_else(|_| body.to_vec())[..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compression_bomb_stops_at_the_limit() {
        let bomb = encode(Encoding::Gzip, &vec![b'0'; 8 * 1024 * 1024]);
        assert!(bomb.len() < 64 * 1024);
        assert!(decode(Encoding::Gzip, &bomb, 1024 * 1024).is_none());
        let ok = decode(Encoding::Gzip, &bomb, 8 * 1024 * 1024).expect("within the limit");
        assert_eq!(ok.len(), 8 * 1024 * 1024);
    }

    #[test]
    fn the_budget_is_given_back() {
        let mut a = Budget::default();
        assert!(a.take(10, 100));
        assert!(!a.take(100, 100));
        assert_eq!(a.held(), 10);
        drop(a);
        let mut b = Budget::default();
        assert!(b.take(100, 100));
    }
}
