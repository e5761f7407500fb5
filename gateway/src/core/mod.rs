//! The core layer: what one request is while the gateway handles it. Request and response
//! heads with the edits a gateway makes, the client-side session plugins read from, and
//! the error type of the request path. It knows nothing of plugins, routing or sockets.

pub mod case;
pub mod head;
pub mod session;

pub use head::{RequestHeader, ResponseHeader};
pub use session::Session;

/// Errors on the request path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid header name")]
    HeaderName,
    #[error("invalid header value")]
    HeaderValue,
    #[error("invalid status code {0}")]
    Status(u16),
    #[error("invalid request target")]
    Uri,
    #[error("reading the request body: {0}")]
    Body(String),
    #[error("request body over the limit")]
    BodyTooLarge,
}

pub type Result<T> = std::result::Result<T, Error>;
