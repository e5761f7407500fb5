//! Kong's `prometheus` plugin: per-request series with Kong's names and labels, recorded
//! only as the plugin's flags ask (Kong exports none of them by default). Served on the
//! status listener's `/metrics`.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde::Deserialize;

use super::Plugin;
use crate::core::state::RequestState;
use crate::metrics::{Metrics, RouteSeries, SmallKeyMap};

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

/// (route, service, consumer) indexes in the runtime this plugin instance was built for.
type SeriesKey = (Option<usize>, Option<usize>, Option<usize>);

pub struct Prometheus {
    cfg: Config,
    /// Series resolved per (route, service, consumer): label hashing and registry lookups
    /// happen once per combination, not per request. Bounded by the configuration (routes,
    /// services, consumers); a reload builds a new plugin instance and a new cache.
    series: RwLock<SmallKeyMap<SeriesKey, Arc<RouteSeries>>>,
}

impl Prometheus {
    pub fn new(cfg: Config) -> Prometheus {
        Prometheus {
            cfg,
            series: RwLock::new(SmallKeyMap::default()),
        }
    }

    fn key(&self, st: &RequestState) -> SeriesKey {
        let consumer = if self.cfg.per_consumer {
            st.consumer
        } else {
            None
        };
        (st.route.as_ref().map(|m| m.route), st.service, consumer)
    }

    /// Resolves and caches the series of a (route, service, consumer) seen the first time.
    fn resolve(&self, key: SeriesKey, st: &RequestState) -> Arc<RouteSeries> {
        let rt = st.rt.as_ref();
        let route = rt
            .zip(key.0)
            .map(|(rt, r)| rt.decl.routes[r].name.as_str())
            .unwrap_or("");
        let service = rt
            .zip(key.1)
            .map(|(rt, s)| rt.services[s].name.as_str())
            .unwrap_or("");
        let consumer = rt
            .zip(key.2)
            .and_then(|(rt, c)| rt.decl.consumers[c].username.as_deref())
            .unwrap_or("");
        let s = Arc::new(Metrics::global().route_series(
            service,
            route,
            consumer,
            self.cfg.latency_metrics,
            self.cfg.bandwidth_metrics,
        ));
        if let Ok(mut map) = self.series.write() {
            map.insert(key, s.clone());
        }
        s
    }

    fn record(&self, series: &RouteSeries, st: &RequestState, status: u16) {
        if self.cfg.status_code_metrics {
            series.status(status, st.local_response || st.target.is_none());
        }
        if self.cfg.latency_metrics {
            series.latency(st.elapsed_ms(), st.upstream_latency_ms);
        }
        if self.cfg.bandwidth_metrics {
            // Kong counts the whole request (its request_length): headers and body.
            series.bandwidth(st.bytes_in + st.request_header_bytes, st.bytes_out);
        }
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

    fn has_access(&self) -> bool {
        false
    }

    fn log(&self, st: &RequestState, status: u16) {
        // As Kong's exporter: a request that matched no route records no series (it is
        // still counted in kong_nginx_requests_total).
        if st.route.is_none() {
            return;
        }
        let key = self.key(st);
        if let Ok(map) = self.series.read()
            && let Some(series) = map.get(&key)
        {
            self.record(series, st, status);
            return;
        }
        let series = self.resolve(key, st);
        self.record(&series, st, status);
    }
}
