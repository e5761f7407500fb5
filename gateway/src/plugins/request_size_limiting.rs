//! Kong's `request-size-limiting`: 413 (417 with `Expect: 100-continue`) "Request size
//! limit exceeded" when the declared Content-Length is over the limit, 411 when
//! `require_content_length` is set and none was sent. A body without Content-Length
//! (chunked) is counted as it streams and cut at the limit with the same answer.

use crate::core::Session;
use async_trait::async_trait;
use serde::Deserialize;

use super::{Flow, Plugin, SpecError};
use crate::core::respond::LocalResponse;
use crate::core::state::RequestState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SizeUnit {
    Bytes,
    Kilobytes,
    Megabytes,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_size")]
    pub allowed_payload_size: u64,
    #[serde(default = "default_unit")]
    pub size_unit: SizeUnit,
    #[serde(default)]
    pub require_content_length: bool,
}

fn default_size() -> u64 {
    128
}

fn default_unit() -> SizeUnit {
    SizeUnit::Megabytes
}

impl Config {
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.limit_bytes().is_none() {
            return Err(SpecError::at("allowed_payload_size", "too large"));
        }
        Ok(())
    }

    fn limit_bytes(&self) -> Option<u64> {
        let unit: u64 = match self.size_unit {
            SizeUnit::Bytes => 1,
            SizeUnit::Kilobytes => 1 << 10,
            SizeUnit::Megabytes => 1 << 20,
        };
        self.allowed_payload_size.checked_mul(unit)
    }
}

pub const MESSAGE: &str = "Request size limit exceeded";

pub struct RequestSizeLimiting {
    limit: u64,
    require_cl: bool,
}

impl RequestSizeLimiting {
    pub fn new(cfg: Config) -> RequestSizeLimiting {
        RequestSizeLimiting {
            limit: cfg.limit_bytes().unwrap_or(u64::MAX),
            require_cl: cfg.require_content_length,
        }
    }
}

#[async_trait]
impl Plugin for RequestSizeLimiting {
    // dup: the shape of every plugin file (its own Config, checks and hook types).
    fn name(&self) -> &'static str {
        "request-size-limiting"
    }

    fn priority(&self) -> i32 {
        951
    }

    async fn access(
        &self,
        session: &mut Session,
        st: &mut RequestState,
    ) -> crate::core::Result<Flow> {
        let req = session.req_header();
        let header = |n: http::HeaderName| req.headers.get(n).and_then(|v| v.to_str().ok());
        let accept = header(http::header::ACCEPT);
        let expect_continue = header(http::header::EXPECT)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
        let status = if expect_continue { 417 } else { 413 };
        let over = LocalResponse::error(status, MESSAGE, &st.request_id, accept);
        let cl = header(http::header::CONTENT_LENGTH);
        if self.require_cl && cl.is_none() {
            return Ok(Flow::Respond(LocalResponse::error(
                411,
                "A valid Content-Length header is required",
                &st.request_id,
                accept,
            )));
        }
        if let Some(n) = cl.and_then(|v| v.trim().parse::<u64>().ok()) {
            if n > self.limit {
                return Ok(Flow::Respond(over));
            }
            return Ok(Flow::Continue);
        }
        // No usable Content-Length: count the body as it arrives.
        if st.body_limit.is_none_or(|l| self.limit < l) {
            st.body_limit = Some(self.limit);
            st.body_limit_response = Some(over);
        }
        Ok(Flow::Continue)
    }
}
