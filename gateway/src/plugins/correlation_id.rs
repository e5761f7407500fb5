//! Kong's `correlation-id` plugin: a per-request id in a configurable header, kept when the
//! client sent one, passed upstream and optionally echoed to the client.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::core::{RequestHeader, ResponseHeader};
use serde::Deserialize;

use crate::core::Session;
use async_trait::async_trait;

use super::{Flow, Plugin};
use crate::core::state::RequestState;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_header")]
    pub header_name: String,
    #[serde(default = "default_generator")]
    pub generator: Generator,
    #[serde(default)]
    pub echo_downstream: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum Generator {
    #[serde(rename = "uuid")]
    Uuid,
    #[serde(rename = "uuid#counter")]
    UuidCounter,
    #[serde(rename = "tracker")]
    Tracker,
}

fn default_header() -> String {
    "Kong-Request-ID".into()
}
fn default_generator() -> Generator {
    Generator::UuidCounter
}

pub struct CorrelationId {
    cfg: Config,
    header: http::HeaderName,
    worker_uuid: String,
    counter: AtomicU64,
}

impl CorrelationId {
    pub fn new(cfg: Config) -> CorrelationId {
        let header = http::HeaderName::from_bytes(cfg.header_name.to_ascii_lowercase().as_bytes())
            .unwrap_or(http::HeaderName::from_static("kong-request-id"));
        CorrelationId {
            cfg,
            header,
            worker_uuid: uuid::Uuid::new_v4().to_string(),
            counter: AtomicU64::new(0),
        }
    }

    fn generate(&self, st: &RequestState) -> String {
        match self.cfg.generator {
            Generator::Uuid => uuid::Uuid::new_v4().to_string(),
            Generator::UuidCounter => {
                let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
                format!("{}#{n}", self.worker_uuid)
            }
            // Kong's format: server_addr-server_port-worker pid-connection serial-
            // requests on the connection-time with milliseconds.
            Generator::Tracker => format!(
                "{}-{}-{}-{}-{}-{:.3}",
                st.conn.local_ip.as_deref().unwrap_or("-"),
                st.local_port,
                std::process::id(),
                st.conn.serial,
                st.conn.requests,
                st.start_wall_ms as f64 / 1000.0
            ),
        }
    }
}

#[async_trait]
impl Plugin for CorrelationId {
    // dup: the shape of every plugin file (its own Config, checks and hook types).
    fn name(&self) -> &'static str {
        "correlation-id"
    }

    fn priority(&self) -> i32 {
        100_001
    }

    async fn access(
        &self,
        session: &mut Session,
        st: &mut RequestState,
    ) -> crate::core::Result<Flow> {
        let existing = session
            .req_header()
            .headers
            .get(&self.header)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        let id = existing.unwrap_or_else(|| self.generate(st));
        st.correlation_id = Some((self.header.clone(), id));
        Ok(Flow::Continue)
    }

    fn upstream_request(&self, req: &mut RequestHeader, st: &mut RequestState) {
        if let Some((h, id)) = &st.correlation_id {
            let _ = req.insert_header(h.clone(), id.as_str());
        }
    }

    fn response_header(&self, resp: &mut ResponseHeader, st: &mut RequestState) {
        if self.cfg.echo_downstream
            && let Some((_, id)) = &st.correlation_id
        {
            let _ = resp.insert_header(self.header.clone(), id.as_str());
        }
    }
}
