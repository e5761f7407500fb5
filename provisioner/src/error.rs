//! Errors of the provider layer (AWS calls, Grafana, files).

use std::fmt::Debug;

use aws_sdk_sts::error::ProvideErrorMetadata;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An AWS API call failed. `message` includes the service's error code.
    #[error("{op}: {message}")]
    Aws { op: &'static str, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("timed out after {secs}s waiting for {what}")]
    Timeout { what: String, secs: u64 },
    #[error("resource spec does not match its kind: {0}")]
    Spec(#[from] serde_json::Error),
    #[error("Grafana API: {0}")]
    Grafana(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an SDK error with the operation name as `Code: message` (the
    /// SDK's Display only says "service error"); transport errors keep
    /// their source chain.
    pub fn aws<E>(op: &'static str, err: E) -> Error
    where
        E: std::error::Error + ProvideErrorMetadata + Debug + 'static,
    {
        let message = match (err.code(), err.message()) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.to_string(),
            _ => {
                let mut message = err.to_string();
                let mut source: Option<&(dyn std::error::Error + 'static)> = err.source();
                while let Some(s) = source {
                    let text = s.to_string();
                    if !message.contains(&text) {
                        message.push_str(": ");
                        message.push_str(&text);
                    }
                    source = s.source();
                }
                message
            }
        };
        Error::Aws { op, message }
    }

    pub fn invalid(msg: impl Into<String>) -> Error {
        Error::Invalid(msg.into())
    }
}

/// `Result` of the provider layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;
