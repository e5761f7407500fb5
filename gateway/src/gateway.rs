//! The process-wide state: the current configuration (swapped atomically on reload),
//! target health that survives reloads, limits, counters and the background runtime.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::balancer::{TargetRegistry, active};
use crate::config::{self, ConfigErrors, Declarative, LoadOptions};
use crate::core::runtime::{Runtime, RuntimeError};
use crate::metrics::Metrics;

/// Defensive limits applied to every request.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_header_count: usize,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub client_body_timeout: Duration,
    pub client_send_timeout: Duration,
    /// How the client address is determined (Kong's trusted_ips / real_ip_header).
    pub real_ip: crate::realip::RealIp,
    /// How often upstream names are resolved again (`--dns-refresh`).
    pub dns_refresh: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_count: 100,
            max_header_bytes: 32 * 1024,
            max_body_bytes: 8 * 1024 * 1024,
            client_body_timeout: Duration::from_secs(60),
            client_send_timeout: Duration::from_secs(60),
            real_ip: crate::realip::RealIp::default(),
            dns_refresh: Duration::from_secs(5),
        }
    }
}

pub struct Gateway {
    pub current: ArcSwap<Runtime>,
    pub registry: TargetRegistry,
    pub load_options: LoadOptions,
    pub config_path: Option<PathBuf>,
    pub limits: Limits,
    pub metrics: &'static Metrics,
    pub bg: tokio::runtime::Handle,
    pub inflight: AtomicUsize,
    pub total_requests: AtomicU64,
    pub draining: AtomicBool,
    pub access_log: crate::access_log::Sink,
}

/// Why the gateway is not ready (`/status/ready` answers 503 with this).
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("draining")]
    Draining,
    #[error("upstream `{0}` has no healthy target")]
    NoHealthyTarget(String),
}

impl Gateway {
    pub fn new(
        decl: Declarative,
        load_options: LoadOptions,
        config_path: Option<PathBuf>,
        limits: Limits,
        bg: tokio::runtime::Handle,
        access_log: crate::access_log::Sink,
    ) -> Result<Arc<Gateway>, RuntimeError> {
        let registry = TargetRegistry::default();
        let rt = Runtime::build(decl, &registry, Some(&bg), &crate::plugins::REGISTRY)?;
        let gw = Arc::new(Gateway {
            current: ArcSwap::from_pointee(rt),
            registry,
            load_options,
            config_path,
            limits,
            metrics: Metrics::global(),
            bg,
            inflight: AtomicUsize::new(0),
            total_requests: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            access_log,
        });
        gw.start_probes();
        gw.bg.spawn(crate::balancer::dns::run(
            gw.registry.clone(),
            gw.limits.dns_refresh,
        ));
        Ok(gw)
    }

    fn start_probes(&self) {
        for b in &self.current.load().balancers {
            self.bg.spawn(active::run(b.clone()));
        }
    }

    /// Swaps in a new configuration; requests in flight finish on the old one.
    pub fn apply(&self, decl: Declarative) -> Result<String, RuntimeError> {
        let hash = decl.hash.clone();
        let rt = Runtime::build(
            decl,
            &self.registry,
            Some(&self.bg),
            &crate::plugins::REGISTRY,
        )?;
        let old = self.current.swap(Arc::new(rt));
        old.retire();
        self.start_probes();
        self.registry.refresh_now();
        Ok(hash)
    }

    /// Re-reads the configuration file (SIGHUP). On error the old configuration stays.
    pub fn reload_file(&self) -> Result<String, ConfigErrors> {
        let Some(path) = &self.config_path else {
            return Err(ConfigErrors {
                source_name: "reload".into(),
                warnings: Vec::new(),
                errors: vec![config::ConfigError {
                    path: String::new(),
                    line: None,
                    message: "no configuration file to reload".into(),
                }],
            });
        };
        let result = config::load_file(path, &self.load_options).and_then(|d| {
            self.apply(d).map_err(|e| ConfigErrors {
                source_name: path.display().to_string(),
                warnings: Vec::new(),
                errors: vec![config::ConfigError {
                    path: String::new(),
                    line: None,
                    message: e.to_string(),
                }],
            })
        });
        self.metrics.reload(result.is_ok());
        result
    }

    /// Loads a posted configuration (`POST /config`).
    /// Replaces the configuration with a posted one. Environment references in it are an
    /// error unless `expand_env` (a posted file must not read the gateway's secrets back).
    pub fn reload_text(&self, text: &str, expand_env: bool) -> Result<String, ConfigErrors> {
        let mut opts = self.load_options.clone();
        opts.refuse_env = !expand_env;
        let result = config::load_str(text, "POST /config", &opts).and_then(|d| {
            self.apply(d).map_err(|e| ConfigErrors {
                source_name: "POST /config".into(),
                warnings: Vec::new(),
                errors: vec![config::ConfigError {
                    path: String::new(),
                    line: None,
                    message: e.to_string(),
                }],
            })
        });
        self.metrics.reload(result.is_ok());
        result
    }

    /// Ready: configuration loaded, not draining, and every upstream in use has a healthy target.
    pub fn ready(&self) -> Result<(), NotReady> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(NotReady::Draining);
        }
        let rt = self.current.load();
        for b in rt.balancers_in_use() {
            if !b.has_healthy_target() {
                return Err(NotReady::NoHealthyTarget(b.name.clone()));
            }
        }
        Ok(())
    }
}
