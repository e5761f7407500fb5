//! The core layer: what one request is while the gateway handles it, and the model every
//! plugin is written against. Request and response heads with the edits a gateway makes,
//! the client session plugins read from, the per-request state, the plugin trait and the
//! per-request chain, responses the gateway writes itself, and the compiled configuration
//! a request runs under. It names no concrete plugin and no socket.

pub mod case;
pub mod chain;
pub mod head;
pub mod plugin;
pub mod respond;
pub mod runtime;
pub mod session;
pub mod state;
pub mod trace;

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
