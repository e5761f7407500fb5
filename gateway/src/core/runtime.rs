//! The compiled form of a configuration: router, balancers and plugin chains. A new one
//! is built on every reload and swapped in atomically; requests in flight keep the one
//! they started with.

use std::sync::Arc;
use std::time::SystemTime;

use super::plugin::{BuildCache, BuildContext, Chain, Plugin, PluginFactory};
use crate::balancer::{Balancer, TargetRegistry};
use crate::config::{Declarative, PluginScope};
use crate::router::Router;

pub struct ServiceRt {
    pub name: String,
    pub id: String,
    pub tls: bool,
    /// gRPC (`grpc`/`grpcs`): the upstream speaks HTTP/2 (prior knowledge in clear text,
    /// ALPN `h2` over TLS).
    pub h2: bool,
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
    /// Headers the gateway sets from identity (consumer headers, claim headers of every
    /// plugin instance): removed from every client request before any plugin reads it.
    pub identity_headers: Vec<http::HeaderName>,
    /// Per route, its chain when no instance depends on the consumer (the common case):
    /// shared by every request instead of chosen per request.
    pub route_static: Vec<Option<Chain>>,
    /// Global plugins, for requests no route matched.
    pub global_plugins: Vec<PluginSlot>,
    /// Export target health (a prometheus plugin asks for `upstream_health_metrics`).
    pub health_metrics: bool,
    /// Balancers in use (for readiness and health metrics).
    pub balancers: Vec<Arc<Balancer>>,
    pub loaded_at: SystemTime,
}

/// Why a configuration cannot be compiled (after it loaded).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Router(#[from] crate::router::RouterError),
    #[error("{path}: {source}")]
    Plugin {
        path: String,
        #[source]
        source: super::plugin::BuildError,
    },
}

impl Runtime {
    pub fn build(
        decl: Declarative,
        registry: &TargetRegistry,
        bg: Option<&tokio::runtime::Handle>,
        factory: &dyn PluginFactory,
    ) -> Result<Runtime, RuntimeError> {
        let router = Router::new_filtered(&decl.routes, |r| {
            r.service
                .is_none_or(|si| decl.services.get(si).is_none_or(|s| s.enabled))
        })?;
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
                tls: s.protocol == "https" || s.protocol == "grpcs",
                h2: s.protocol == "grpc" || s.protocol == "grpcs",
                host: s.host.clone(),
                path: s.path.clone(),
                retries: s.retries,
                connect_timeout: std::time::Duration::from_millis(s.connect_timeout_ms),
                read_timeout: std::time::Duration::from_millis(s.read_timeout_ms),
                write_timeout: std::time::Duration::from_millis(s.write_timeout_ms),
                host_header: {
                    // Kong's set_host_header: no port when it is the scheme's own.
                    let secure = s.protocol == "https" || s.protocol == "grpcs";
                    let default_port = (secure && s.port == 443) || (!secure && s.port == 80);
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
        let cache = BuildCache::default();
        for p in &decl.plugins {
            let ctx = BuildContext {
                decl: &decl,
                bg,
                cache: &cache,
                scope: &p.scope,
            };
            let inst = factory
                .build(p, &ctx)
                .map_err(|source| RuntimeError::Plugin {
                    path: p.path.clone(),
                    source,
                })?;
            built.push((p.name.clone(), p.scope.clone(), inst));
        }
        // Instances by what they are attached to, so each route looks only at its own
        // (a route-by-plugin product would make large files slow to load).
        let mut unattached = Vec::new();
        let mut by_route: rustc_hash::FxHashMap<usize, Vec<usize>> = Default::default();
        let mut by_service: rustc_hash::FxHashMap<usize, Vec<usize>> = Default::default();
        for (i, (_, scope, _)) in built.iter().enumerate() {
            match (scope.route, scope.service) {
                (Some(r), _) => by_route.entry(r).or_default().push(i),
                (None, Some(sv)) => by_service.entry(sv).or_default().push(i),
                (None, None) => unattached.push(i),
            }
        }
        let mut route_plugins = Vec::with_capacity(decl.routes.len());
        let mut route_static = Vec::with_capacity(decl.routes.len());
        for (ri, r) in decl.routes.iter().enumerate() {
            let mut mine: Vec<usize> = unattached.clone();
            if let Some(v) = by_route.get(&ri) {
                mine.extend(v);
            }
            if let Some(v) = r.service.and_then(|sv| by_service.get(&sv)) {
                mine.extend(v);
            }
            mine.sort_unstable();
            let mut slots: Vec<PluginSlot> = Vec::new();
            for i in mine {
                let (name, scope, inst) = &built[i];
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
            // No consumer-scoped instance: the chain is the same for every request.
            let consumer_free = slots.iter().all(|s| {
                s.instances
                    .iter()
                    .all(|(sc, _)| sc.consumer.is_none() && sc.consumer_group.is_none())
            });
            route_static.push(consumer_free.then(|| {
                slots
                    .iter()
                    .filter_map(|s| s.select(None, &[]).cloned())
                    .collect::<Chain>()
            }));
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
        let mut identity_headers: Vec<http::HeaderName> = super::chain::CONSUMER_HEADERS
            .iter()
            .map(|h| http::HeaderName::from_static(h))
            .collect();
        for (_, _, inst) in &built {
            for h in inst.identity_headers() {
                if !identity_headers.contains(&h) {
                    identity_headers.push(h);
                }
            }
        }
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
            identity_headers,
            route_static,
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
            // A disabled service's routes match nothing: its upstream is not in use.
            if let Some(si) = r.service.filter(|si| self.services[*si].enabled) {
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
