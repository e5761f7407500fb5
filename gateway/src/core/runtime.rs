//! The compiled form of a configuration: router, balancers and plugin chains. A new one
//! is built on every reload and swapped in atomically; requests in flight keep the one
//! they started with.

use std::sync::Arc;
use std::time::SystemTime;

use super::plugin::{BuildContext, Plugin, PluginFactory};
use crate::balancer::{Balancer, TargetRegistry};
use crate::config::{Declarative, PluginScope};
use crate::router::Router;

pub struct ServiceRt {
    pub name: String,
    pub id: String,
    pub tls: bool,
    /// SNI and default Host for the upstream.
    pub host: String,
    pub path: Option<String>,
    pub retries: u32,
    pub connect_timeout: std::time::Duration,
    pub read_timeout: std::time::Duration,
    pub write_timeout: std::time::Duration,
    pub balancer: Arc<Balancer>,
    pub enabled: bool,
    /// The Host header sent upstream (unless a route preserves the client's), computed
    /// once: the upstream's `host_header`, or host with the port when not the default.
    pub host_header: Option<http::HeaderValue>,
}

/// All instances of one plugin that can apply to a route, with their scopes.
pub struct PluginSlot {
    pub name: String,
    pub priority: i32,
    pub instances: Vec<(PluginScope, Arc<dyn Plugin>)>,
}

impl PluginSlot {
    /// Picks the instance for this request with Kong's precedence (most specific wins).
    pub fn select(&self, consumer: Option<usize>, groups: &[usize]) -> Option<&Arc<dyn Plugin>> {
        self.instances
            .iter()
            .filter(|(s, _)| {
                s.consumer.is_none_or(|c| Some(c) == consumer)
                    && s.consumer_group.is_none_or(|g| groups.contains(&g))
            })
            .min_by_key(|(s, _)| rank(s))
            .map(|(_, p)| p)
    }
}

fn rank(s: &PluginScope) -> u8 {
    let (c, g, r, sv) = (
        s.consumer.is_some(),
        s.consumer_group.is_some(),
        s.route.is_some(),
        s.service.is_some(),
    );
    match (c, g, r, sv) {
        (true, _, true, true) => 1,
        (false, true, true, true) => 2,
        (true, _, true, false) => 3,
        (true, _, false, true) => 4,
        (false, true, true, false) => 5,
        (false, true, false, true) => 6,
        (false, false, true, true) => 7,
        (true, _, false, false) => 8,
        (false, true, false, false) => 9,
        (false, false, true, false) => 10,
        (false, false, false, true) => 11,
        _ => 12,
    }
}

pub struct Runtime {
    pub decl: Declarative,
    pub router: Router,
    pub services: Vec<ServiceRt>,
    /// Plugin slots per route, sorted by priority (highest first).
    pub route_plugins: Vec<Vec<PluginSlot>>,
    /// Global plugins, for requests no route matched.
    pub global_plugins: Vec<PluginSlot>,
    /// Export target health (a prometheus plugin asks for `upstream_health_metrics`).
    pub health_metrics: bool,
    /// Balancers in use (for readiness and health metrics).
    pub balancers: Vec<Arc<Balancer>>,
    pub loaded_at: SystemTime,
}

impl Runtime {
    pub fn build(
        decl: Declarative,
        registry: &TargetRegistry,
        bg: Option<&tokio::runtime::Handle>,
        factory: &dyn PluginFactory,
    ) -> Result<Runtime, String> {
        let router = Router::new(&decl.routes)?;
        let mut balancers: Vec<Arc<Balancer>> = decl
            .upstreams
            .iter()
            .map(|u| Arc::new(Balancer::from_upstream(u, registry)))
            .collect();
        let mut services = Vec::new();
        for s in &decl.services {
            let balancer = match balancers.iter().find(|b| b.name == s.host) {
                Some(b) => b.clone(),
                None => {
                    let b = Arc::new(Balancer::direct(&s.host, s.port, registry));
                    balancers.push(b.clone());
                    b
                }
            };
            services.push(ServiceRt {
                name: s.name.clone(),
                id: s
                    .id
                    .clone()
                    .unwrap_or_else(|| crate::config::stable_id("service", &s.name)),
                tls: s.protocol == "https",
                host: s.host.clone(),
                path: s.path.clone(),
                retries: s.retries,
                connect_timeout: std::time::Duration::from_millis(s.connect_timeout_ms),
                read_timeout: std::time::Duration::from_millis(s.read_timeout_ms),
                write_timeout: std::time::Duration::from_millis(s.write_timeout_ms),
                host_header: {
                    let default_port = (s.protocol == "https" && s.port == 443)
                        || (s.protocol != "https" && s.port == 80);
                    let text = balancer.host_header.clone().unwrap_or_else(|| {
                        if default_port {
                            s.host.clone()
                        } else {
                            format!("{}:{}", s.host, s.port)
                        }
                    });
                    http::HeaderValue::from_str(&text).ok()
                },
                balancer,
                enabled: s.enabled,
            });
        }
        // Build each plugin instance once; routes share the Arc.
        let mut built: Vec<(String, PluginScope, Arc<dyn Plugin>)> = Vec::new();
        for p in &decl.plugins {
            let ctx = BuildContext {
                decl: &decl,
                bg,
                scope: &p.scope,
            };
            let inst = factory
                .build(p, &ctx)
                .map_err(|e| format!("{}: {e}", p.path))?;
            built.push((p.name.clone(), p.scope.clone(), inst));
        }
        let mut route_plugins = Vec::new();
        for (ri, r) in decl.routes.iter().enumerate() {
            let mut slots: Vec<PluginSlot> = Vec::new();
            for (name, scope, inst) in &built {
                let route_ok = scope.route.is_none_or(|x| x == ri);
                let service_ok = scope.service.is_none_or(|x| Some(x) == r.service);
                if !(route_ok && service_ok) {
                    continue;
                }
                match slots.iter_mut().find(|s| &s.name == name) {
                    Some(slot) => slot.instances.push((scope.clone(), inst.clone())),
                    None => slots.push(PluginSlot {
                        name: name.clone(),
                        priority: inst.priority(),
                        instances: vec![(scope.clone(), inst.clone())],
                    }),
                }
            }
            slots.sort_by_key(|s| std::cmp::Reverse(s.priority));
            route_plugins.push(slots);
        }
        let mut global_plugins: Vec<PluginSlot> = Vec::new();
        for (name, scope, inst) in &built {
            if *scope == PluginScope::default() {
                global_plugins.push(PluginSlot {
                    name: name.clone(),
                    priority: inst.priority(),
                    instances: vec![(scope.clone(), inst.clone())],
                });
            }
        }
        global_plugins.sort_by_key(|s| std::cmp::Reverse(s.priority));
        let health_metrics = factory.health_metrics(&decl);
        let keep: Vec<(String, String)> = decl
            .upstreams
            .iter()
            .flat_map(|u| {
                u.targets
                    .iter()
                    .map(move |t| (u.def.name.clone(), t.target.clone()))
            })
            .chain(
                services
                    .iter()
                    .filter(|s| s.balancer.targets.len() == 1 && s.balancer.name.contains(':'))
                    .map(|s| (String::new(), s.balancer.name.clone())),
            )
            .collect();
        registry.retain(&keep);
        Ok(Runtime {
            decl,
            router,
            services,
            route_plugins,
            global_plugins,
            health_metrics,
            balancers,
            loaded_at: SystemTime::now(),
        })
    }

    /// Balancers that some route can reach (readiness looks only at these).
    pub fn balancers_in_use(&self) -> Vec<&Arc<Balancer>> {
        let mut out: Vec<&Arc<Balancer>> = Vec::new();
        for r in &self.decl.routes {
            if let Some(si) = r.service {
                let b = &self.services[si].balancer;
                if !out.iter().any(|x| Arc::ptr_eq(x, b)) {
                    out.push(b);
                }
            }
        }
        out
    }

    /// Marks the balancers as replaced so their active probes stop.
    pub fn retire(&self) {
        for b in &self.balancers {
            b.retired.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}
