//! Kong's `prometheus` plugin: per-request series with Kong's names and labels, recorded
//! only as the plugin's flags ask (Kong exports none of them by default). Served on the
//! status listener's `/metrics`.

use async_trait::async_trait;
use serde::Deserialize;

use super::Plugin;
use crate::metrics::Metrics;
use crate::state::RequestState;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub per_consumer: bool,
    #[serde(default)]
    pub status_code_metrics: bool,
    #[serde(default)]
    pub latency_metrics: bool,
    #[serde(default)]
    pub bandwidth_metrics: bool,
    #[serde(default)]
    pub upstream_health_metrics: bool,
    #[serde(default)]
    pub ai_metrics: bool,
    #[serde(default)]
    pub wasm_metrics: bool,
}

pub struct Prometheus {
    cfg: Config,
}

impl Prometheus {
    pub fn new(cfg: Config) -> Prometheus {
        Prometheus { cfg }
    }
}

#[async_trait]
impl Plugin for Prometheus {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn priority(&self) -> i32 {
        13
    }

    fn log(&self, st: &RequestState, status: u16) {
        let rt = st.rt.as_ref();
        let route = rt
            .zip(st.route.as_ref())
            .map(|(rt, m)| rt.decl.routes[m.route].name.as_str())
            .unwrap_or("");
        let service = rt
            .zip(st.service)
            .map(|(rt, s)| rt.services[s].name.as_str())
            .unwrap_or("");
        let consumer = if self.cfg.per_consumer {
            rt.zip(st.consumer)
                .and_then(|(rt, c)| rt.decl.consumers[c].username.as_deref())
                .unwrap_or("")
        } else {
            ""
        };
        let m = Metrics::global();
        if self.cfg.status_code_metrics {
            m.status(
                service,
                route,
                status,
                consumer,
                st.local_response || st.target.is_none(),
            );
        }
        if self.cfg.latency_metrics {
            m.latency(service, route, st.elapsed_ms(), st.upstream_latency_ms);
        }
        if self.cfg.bandwidth_metrics {
            m.bandwidth(service, route, consumer, st.bytes_in, st.bytes_out);
        }
    }
}
