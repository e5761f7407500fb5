//! Per-entity checks of the build pass: services, routes, upstreams, targets, consumers,
//! credentials and plugin instances.

use serde_norway::Value;

use super::build::{Builder, Refs, join_path};
use super::model::*;
use super::*;

const ROUTE_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

impl Builder<'_> {
    pub(super) fn consumer(&mut self, v: &Value, path: &str) {
        let Some(c) = self.de::<Consumer>(v, path) else {
            return;
        };
        if c.username.is_none() && c.custom_id.is_none() {
            self.err(path, "a consumer needs a `username` or a `custom_id`");
            return;
        }
        let key = c
            .username
            .clone()
            .or(c.custom_id.clone())
            .unwrap_or_default();
        if self.find_consumer(&key).is_some() {
            self.err(
                format!("{path}.username"),
                format!("duplicate consumer `{key}`"),
            );
            return;
        }
        let ci = self.out.consumers.len();
        let mut groups = Vec::new();
        for (j, g) in c.groups.iter().enumerate() {
            match g.key().and_then(|k| self.find_group(k)) {
                Some(gi) => groups.push(gi),
                None => self.err(
                    format!("{path}.groups[{j}]"),
                    format!("unknown consumer group `{}`", g.key().unwrap_or("")),
                ),
            }
        }
        let cdef = ConsumerDef {
            id: c.id.clone().unwrap_or_else(|| stable_id("consumer", &key)),
            username: c.username.clone(),
            custom_id: c.custom_id.clone(),
            groups,
        };
        for k in [
            cdef.username.as_ref(),
            cdef.custom_id.as_ref(),
            Some(&cdef.id),
        ]
        .into_iter()
        .flatten()
        {
            self.consumer_keys.entry(k.clone()).or_insert(ci);
        }
        self.out.consumers.push(cdef);
        for (kind, list) in [
            ("jwt_secrets", &c.jwt_secrets),
            ("keyauth_credentials", &c.keyauth_credentials),
            ("basicauth_credentials", &c.basicauth_credentials),
            ("hmacauth_credentials", &c.hmacauth_credentials),
            ("acls", &c.acls),
        ] {
            for (j, cred) in list.iter().enumerate() {
                self.credential(kind, ci, cred.clone(), format!("{path}.{kind}[{j}]"));
            }
        }
        for (j, p) in c.plugins.iter().enumerate() {
            self.pending_plugins.push((
                format!("{path}.plugins[{j}]"),
                p.clone(),
                PluginScope {
                    consumer: Some(ci),
                    ..Default::default()
                },
                None,
            ));
        }
    }

    pub(super) fn resolve_group_members(&mut self) {
        for (gi, key, path) in std::mem::take(&mut self.group_members) {
            match self.find_consumer(&key) {
                Some(ci) => {
                    if !self.out.consumers[ci].groups.contains(&gi) {
                        self.out.consumers[ci].groups.push(gi);
                    }
                }
                None => self.err(
                    format!("{path}.consumers"),
                    format!("unknown consumer `{key}` in consumer group"),
                ),
            }
        }
    }

    pub(super) fn credential(
        &mut self,
        kind: &str,
        consumer: usize,
        mut value: Value,
        path: String,
    ) {
        self.strip_annotations(&mut value, &path);
        let list = match kind {
            "jwt_secrets" => &mut self.out.jwt_secrets,
            "keyauth_credentials" => &mut self.out.keyauth_credentials,
            "basicauth_credentials" => &mut self.out.basicauth_credentials,
            "hmacauth_credentials" => &mut self.out.hmacauth_credentials,
            _ => &mut self.out.acls,
        };
        list.push(CredentialDef {
            consumer,
            path,
            value,
        });
    }

    pub(super) fn find_consumer(&self, key: &str) -> Option<usize> {
        self.consumer_keys.get(key).copied()
    }

    fn find_group(&self, key: &str) -> Option<usize> {
        self.out
            .consumer_groups
            .iter()
            .position(|g| g.name == key || g.id.as_deref() == Some(key))
    }

    pub(super) fn upstream(&mut self, mut u: Upstream, path: &str) {
        u.healthchecks.fill_defaults();
        if self.find_upstream(&u.name).is_some() {
            self.err(
                format!("{path}.name"),
                format!("duplicate upstream `{}`", u.name),
            );
            return;
        }
        match u.algorithm.as_str() {
            "round-robin" | "least-connections" | "consistent-hashing" | "latency" => {}
            other => self.err(
                format!("{path}.algorithm"),
                format!("unknown algorithm `{other}`: expected round-robin, least-connections, consistent-hashing or latency"),
            ),
        }
        for (field, value, header, query_arg, capture) in [
            (
                "hash_on",
                &u.hash_on,
                &u.hash_on_header,
                &u.hash_on_query_arg,
                &u.hash_on_uri_capture,
            ),
            (
                "hash_fallback",
                &u.hash_fallback,
                &u.hash_fallback_header,
                &u.hash_fallback_query_arg,
                &u.hash_fallback_uri_capture,
            ),
        ] {
            // Kong's upstream schema: each input names its field, which is then required.
            let needs = |f: &str, present: bool| (!present).then(|| format!("{field}_{f}"));
            let missing = match value.as_str() {
                "none" | "consumer" | "ip" | "path" => None,
                "header" => needs("header", header.is_some()),
                "cookie" => (u.hash_on_cookie.is_none()).then(|| "hash_on_cookie".to_string()),
                "query_arg" => needs("query_arg", query_arg.is_some()),
                "uri_capture" => needs("uri_capture", capture.is_some()),
                other => {
                    self.err(
                        format!("{path}.{field}"),
                        format!("unknown hash input `{other}`; expected one of none, consumer, ip, header, cookie, path, query_arg, uri_capture"),
                    );
                    None
                }
            };
            if let Some(f) = missing {
                self.err(
                    format!("{path}.{f}"),
                    format!("`{field}: {value}` needs `{f}`: required field missing"),
                );
            }
        }
        if u.hash_fallback != "none" && (u.hash_on == "none" || u.hash_on == "cookie") {
            self.err(
                format!("{path}.hash_fallback"),
                format!(
                    "must be `none` when `hash_on` is `{}` (as Kong's schema requires)",
                    u.hash_on
                ),
            );
        } else if u.hash_fallback != "none"
            && u.hash_fallback == u.hash_on
            && !matches!(u.hash_on.as_str(), "header" | "query_arg" | "uri_capture")
        {
            self.err(
                format!("{path}.hash_fallback"),
                format!("must differ from `hash_on` (`{}`)", u.hash_on),
            );
        }
        let hc = &u.healthchecks;
        if !matches!(hc.active.kind.as_str(), "http" | "https" | "tcp") {
            self.err(
                format!("{path}.healthchecks.active.type"),
                format!(
                    "active health check type `{}` is not supported (http, https, tcp)",
                    hc.active.kind
                ),
            );
        }
        if !hc.active.http_path.starts_with('/') {
            self.err(
                format!("{path}.healthchecks.active.http_path"),
                "must start with `/`",
            );
        }
        let ui = self.out.upstreams.len();
        let targets = u.targets.clone();
        self.out.upstreams.push(UpstreamDef {
            def: u,
            targets: Vec::new(),
        });
        for (j, t) in targets.iter().enumerate() {
            let tpath = format!("{path}.targets[{j}]");
            if let Some(t) = self.de::<Target>(t, &tpath) {
                self.target(ui, t, &tpath);
            }
        }
    }

    pub(super) fn target(&mut self, ui: usize, t: Target, path: &str) {
        if t.weight > 65535 {
            self.err(
                format!("{path}.weight"),
                "weight must be between 0 and 65535",
            );
            return;
        }
        let addr = if t.target.contains(':') && !t.target.ends_with(']') {
            t.target.clone()
        } else {
            format!("{}:8000", t.target)
        };
        if split_host_port(&addr).is_none() {
            self.err(
                format!("{path}.target"),
                format!("invalid target `{}`: expected host:port", t.target),
            );
            return;
        }
        let up = &mut self.out.upstreams[ui];
        if up.targets.iter().any(|x| x.target == addr) {
            self.err(
                format!("{path}.target"),
                format!("duplicate target `{addr}`"),
            );
            return;
        }
        up.targets.push(TargetDef {
            target: addr,
            weight: t.weight,
        });
    }

    pub(super) fn find_upstream(&self, name: &str) -> Option<usize> {
        self.out
            .upstreams
            .iter()
            .position(|u| u.def.name == name || u.def.id.as_deref() == Some(name))
    }

    pub(super) fn find_service(&self, key: &str) -> Option<usize> {
        self.service_keys.get(key).copied()
    }

    pub(super) fn service(&mut self, v: &Value, path: &str) {
        let Some(s) = self.de::<Service>(v, path) else {
            return;
        };
        let name = s
            .name
            .clone()
            .or(s.id.clone())
            .unwrap_or_else(|| path.to_string());
        if self.find_service(&name).is_some() {
            self.err(
                format!("{path}.name"),
                format!("duplicate service `{name}`"),
            );
            return;
        }
        let (protocol, host, port, spath) = if let Some(url) = &s.url {
            // Kong loads both: `url` is a shorthand whose parts replace the fields given
            // next to it (even a path the url lacks). Likely a mistake: a warning.
            let overridden: Vec<&str> = [
                ("protocol", s.protocol.is_some()),
                ("host", s.host.is_some()),
                ("port", s.port.is_some()),
                ("path", s.path.is_some()),
            ]
            .iter()
            .filter(|(_, set)| *set)
            .map(|(f, _)| *f)
            .collect();
            if !overridden.is_empty() {
                self.warn(
                    format!("{path}.url"),
                    format!(
                        "`url` replaces {} given next to it (as Kong does); set one or the other",
                        overridden.join(", ")
                    ),
                );
            }
            match parse_service_url(url) {
                Ok(parts) => parts,
                Err(e) => {
                    self.err(format!("{path}.url"), e.to_string());
                    return;
                }
            }
        } else {
            let Some(host) = s.host.clone() else {
                self.err(path, "a service needs `url` or `host`");
                return;
            };
            let protocol = s.protocol.clone().unwrap_or_else(|| "http".into());
            let port = s.port.unwrap_or(if protocol == "https" { 443 } else { 80 });
            (protocol, host, port, s.path.clone())
        };
        if !matches!(protocol.as_str(), "http" | "https" | "grpc" | "grpcs") {
            self.err(
                format!("{path}.protocol"),
                format!("protocol `{protocol}` is not supported (http, https, grpc, grpcs)"),
            );
            return;
        }
        let port_given = match &s.url {
            Some(u) => u
                .parse::<http::Uri>()
                .ok()
                .and_then(|u| u.port_u16())
                .is_some(),
            None => s.port.is_some(),
        };
        if protocol == "grpcs" && !port_given {
            self.warn(
                format!("{path}.port"),
                "a grpcs service without a port uses port 80, as Kong does; name the port (usually 443)",
            );
        }
        if matches!(protocol.as_str(), "grpc" | "grpcs") && spath.is_some() {
            // Kong's services schema: a gRPC service has no path.
            self.err(format!("{path}.path"), "value must be null");
            return;
        }
        if let Some(p) = &spath
            && !p.starts_with('/')
        {
            self.err(format!("{path}.path"), "must start with `/`");
        }
        for (field, v) in [
            ("connect_timeout", s.connect_timeout),
            ("read_timeout", s.read_timeout),
            ("write_timeout", s.write_timeout),
        ] {
            if v == 0 || v > 2_147_483_646 {
                self.err(
                    format!("{path}.{field}"),
                    "must be between 1 and 2147483646 ms",
                );
            }
        }
        if s.retries > 32767 {
            self.err(format!("{path}.retries"), "must be between 0 and 32767");
        }
        let si = self.out.services.len();
        self.service_keys.entry(name.clone()).or_insert(si);
        if let Some(id) = &s.id {
            self.service_keys.entry(id.clone()).or_insert(si);
        }
        self.out.services.push(ServiceDef {
            name,
            named: s.name.is_some(),
            id: s.id.clone(),
            protocol,
            host,
            port,
            path: spath,
            retries: s.retries,
            connect_timeout_ms: s.connect_timeout,
            read_timeout_ms: s.read_timeout,
            write_timeout_ms: s.write_timeout,
            enabled: s.enabled,
        });
        for (j, r) in s.routes.iter().enumerate() {
            let rpath = format!("{path}.routes[{j}]");
            if let Some(r) = self.de::<Route>(r, &rpath) {
                if r.service.is_some() {
                    self.err(
                        format!("{rpath}.service"),
                        "a nested route takes its service from its parent",
                    );
                    continue;
                }
                self.route(r, Some(si), &rpath);
            }
        }
        for (j, p) in s.plugins.iter().enumerate() {
            self.pending_plugins.push((
                format!("{path}.plugins[{j}]"),
                p.clone(),
                PluginScope {
                    service: Some(si),
                    ..Default::default()
                },
                None,
            ));
        }
    }

    pub(super) fn route(&mut self, mut r: Route, service: Option<usize>, path: &str) {
        if self.legacy_format {
            for (j, p) in r.paths.iter_mut().enumerate() {
                let migrated = crate::net::path::migrate_legacy_path(p);
                if migrated != *p {
                    if migrated.starts_with('~') {
                        self.warn(
                            format!("{path}.paths[{j}]"),
                            format!(
                                "`{p}` is a regex in a `_format_version` 2.x file: loaded as `{migrated}`, as Kong 3.x migrates it; write it with `~` and `_format_version: \"3.0\"`"
                            ),
                        );
                    }
                    *p = migrated;
                }
            }
        }
        let name = r
            .name
            .clone()
            .or(r.id.clone())
            .unwrap_or_else(|| path.to_string());
        if self.route_names.contains(&name) {
            self.err(format!("{path}.name"), format!("duplicate route `{name}`"));
            return;
        }
        let before = self.errors.len();
        if r.paths.is_empty() && r.hosts.is_empty() && r.methods.is_empty() && r.headers.is_empty()
        {
            self.err(
                path,
                "a route needs at least one of paths, hosts, methods or headers",
            );
        }
        for (j, p) in r.paths.iter().enumerate() {
            if let Some(re) = p.strip_prefix('~') {
                if let Err(e) = crate::net::path::compile_path_regex(re) {
                    self.err(format!("{path}.paths[{j}]"), format!("invalid regex: {e}"));
                }
            } else if !p.starts_with('/') {
                self.err(
                    format!("{path}.paths[{j}]"),
                    "must start with `/` or `~` (regex)",
                );
            }
        }
        for (j, h) in r.hosts.iter().enumerate() {
            let stars = h.matches('*').count();
            let ok = stars == 0 || (stars == 1 && (h.starts_with("*.") || h.ends_with(".*")));
            if !ok || h.is_empty() {
                self.err(
                    format!("{path}.hosts[{j}]"),
                    "invalid host: a wildcard must be the whole leftmost or rightmost label",
                );
            }
        }
        let mut methods = Vec::new();
        for (j, m) in r.methods.iter().enumerate() {
            let up = m.to_ascii_uppercase();
            if !ROUTE_METHODS.contains(&up.as_str()) && !up.chars().all(|c| c.is_ascii_uppercase())
            {
                self.err(
                    format!("{path}.methods[{j}]"),
                    format!("invalid method `{m}`"),
                );
            }
            methods.push(up);
        }
        let mut headers = BTreeMap::new();
        for (k, v) in &r.headers {
            if k.eq_ignore_ascii_case("host") {
                self.err(
                    format!("{path}.headers.{k}"),
                    "use `hosts` to match the Host header",
                );
            }
            headers.insert(k.to_ascii_lowercase(), v.values());
        }
        for (j, p) in r.protocols.iter().enumerate() {
            if !matches!(p.as_str(), "http" | "https" | "grpc" | "grpcs") {
                self.err(
                    format!("{path}.protocols[{j}]"),
                    format!("protocol `{p}` is not supported by HTTP routes"),
                );
            }
        }
        {
            // Kong: `protocols` takes one of its mutually exclusive subsets.
            let web = r.protocols.iter().any(|p| p == "http" || p == "https");
            let grpc = r.protocols.iter().any(|p| p == "grpc" || p == "grpcs");
            if web && grpc {
                self.err(
                    format!("{path}.protocols"),
                    "these sets are mutually exclusive: ('http', 'https'), ('grpc', 'grpcs')",
                );
            }
        }
        if r.path_handling != "v0" && r.path_handling != "v1" {
            self.err(format!("{path}.path_handling"), "expected v0 or v1");
        } else if r.path_handling == "v1" {
            self.warn(
                format!("{path}.path_handling"),
                "`v1` is ignored by Kong 3.9's default router (traditional_compatible): the upstream path is joined by the v0 rules, as Kong does",
            );
        }
        if r.sources.is_some() || r.destinations.is_some() {
            self.err(
                path,
                "sources and destinations are stream routing fields and are not supported",
            );
        }
        if !r.snis.is_empty()
            && !r
                .protocols
                .iter()
                .any(|p| matches!(p.as_str(), "https" | "grpcs" | "tls" | "tls_passthrough"))
        {
            self.err(
                format!("{path}.snis"),
                "'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls' or 'tls_passthrough'",
            );
        }
        if self.errors.len() > before {
            return;
        }
        let ri = self.out.routes.len();
        self.route_names.insert(name.clone());
        self.route_keys.entry(name.clone()).or_insert(ri);
        if let Some(id) = &r.id {
            self.route_keys.entry(id.clone()).or_insert(ri);
        }
        self.out.routes.push(RouteDef {
            name,
            id: r.id.clone(),
            path: path.to_string(),
            service,
            paths: r.paths.clone(),
            hosts: r.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            snis: r
                .snis
                .iter()
                .map(|s| {
                    let s = s.to_ascii_lowercase();
                    match s.strip_suffix('.') {
                        Some(t) if !t.is_empty() && !s.ends_with("*.") => t.to_string(),
                        _ => s,
                    }
                })
                .collect(),
            methods,
            headers,
            protocols: r.protocols.clone(),
            strip_path: r.strip_path,
            preserve_host: r.preserve_host,
            regex_priority: r.regex_priority,
            path_handling: r.path_handling.clone(),
            https_redirect_status_code: r.https_redirect_status_code,
        });
        for (j, p) in r.plugins.iter().enumerate() {
            self.pending_plugins.push((
                format!("{path}.plugins[{j}]"),
                p.clone(),
                PluginScope {
                    route: Some(ri),
                    service,
                    ..Default::default()
                },
                None,
            ));
        }
    }

    pub(super) fn plugin(
        &mut self,
        path: &str,
        v: &Value,
        mut scope: PluginScope,
        refs: Option<Refs>,
    ) {
        let Some(entry) = self.de::<PluginEntry>(v, path) else {
            return;
        };
        if !entry.enabled {
            return;
        }
        if self.opts.ignore_plugins.iter().any(|p| p == &entry.name) {
            if !self.out.ignored_plugins.contains(&entry.name) {
                self.out.ignored_plugins.push(entry.name.clone());
            }
            return;
        }
        // Nested plugins may still name a further scope (a route plugin with a consumer).
        let refs = refs.unwrap_or(Refs {
            service: entry
                .service
                .as_ref()
                .and_then(|r| r.key())
                .map(str::to_string),
            route: entry
                .route
                .as_ref()
                .and_then(|r| r.key())
                .map(str::to_string),
            consumer: entry
                .consumer
                .as_ref()
                .and_then(|r| r.key())
                .map(str::to_string),
            consumer_group: entry
                .consumer_group
                .as_ref()
                .and_then(|r| r.key())
                .map(str::to_string),
        });
        if let Some(k) = &refs.service {
            match self.find_service(k) {
                Some(si) => scope.service = Some(si),
                None => {
                    return self.err(format!("{path}.service"), format!("unknown service `{k}`"));
                }
            }
        }
        if let Some(k) = &refs.route {
            match self.route_keys.get(k.as_str()).copied() {
                Some(ri) => {
                    scope.route = Some(ri);
                    if scope.service.is_none() {
                        scope.service = self.out.routes[ri].service;
                    }
                }
                None => return self.err(format!("{path}.route"), format!("unknown route `{k}`")),
            }
        }
        if let Some(k) = &refs.consumer {
            match self.find_consumer(k) {
                Some(ci) => scope.consumer = Some(ci),
                None => {
                    return self.err(
                        format!("{path}.consumer"),
                        format!("unknown consumer `{k}`"),
                    );
                }
            }
        }
        if let Some(k) = &refs.consumer_group {
            match self.find_group(k) {
                Some(gi) => scope.consumer_group = Some(gi),
                None => {
                    return self.err(
                        format!("{path}.consumer_group"),
                        format!("unknown consumer group `{k}`"),
                    );
                }
            }
        }
        let mut warnings = Vec::new();
        let parsed = self
            .opts
            .catalog
            .0
            .parse(&entry.name, &entry.config, &mut warnings);
        for (inner, message) in warnings {
            self.warn(join_path(&format!("{path}.config"), &inner), message);
        }
        match parsed {
            Ok(spec) => self.out.plugins.push(PluginDef {
                name: entry.name.clone(),
                path: path.to_string(),
                scope,
                spec,
            }),
            Err(super::SpecError::Unknown) => self.err(
                format!("{path}.name"),
                format!(
                    "plugin `{}` is not implemented by this gateway; remove it or start with `--ignore-plugin {}` to skip it",
                    entry.name, entry.name
                ),
            ),
            Err(super::SpecError::Invalid { path: inner, message }) => {
                self.err(join_path(&format!("{path}.config"), &inner), message)
            }
        }
    }

    pub(super) fn check_plugin_duplicates(&mut self) {
        let mut seen: HashMap<(String, PluginScope), String> = HashMap::new();
        let mut dups = Vec::new();
        for p in &self.out.plugins {
            let key = (p.name.clone(), p.scope.clone());
            if let Some(first) = seen.get(&key) {
                dups.push((
                    p.path.clone(),
                    format!(
                        "plugin `{}` is already configured for the same scope at {first}",
                        p.name
                    ),
                ));
            } else {
                seen.insert(key, p.path.clone());
            }
        }
        for (path, msg) in dups {
            self.err(path, msg);
        }
        let _ = HashSet::<()>::new();
    }
}

/// A deterministic id for entities the file gives no id (Kong generates UUIDs; a stable
/// value keeps the `X-Consumer-ID` header the same across reloads).
pub fn stable_id(kind: &str, key: &str) -> String {
    // UUID v5 (SHA-1, RFC 9562) in a namespace of the gateway's own: the same id for the
    // same entity on every instance and every build (consumer ids and Redis keys must
    // agree across a mixed fleet).
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6b1f_2c34_9a0e_4d7c_8b55_2f0e_63a1_d9c4);
    let mut name = String::with_capacity(kind.len() + key.len() + 1);
    name.push_str(kind);
    name.push(':');
    name.push_str(key);
    uuid::Uuid::new_v5(&NAMESPACE, name.as_bytes()).to_string()
}

pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        (rest[..end].to_string(), rest[end + 1..].strip_prefix(':')?)
    } else {
        let (h, p) = s.rsplit_once(':')?;
        (h.to_string(), p)
    };
    if host.is_empty() {
        return None;
    }
    Some((host, port.parse().ok()?))
}

/// Why a service `url` cannot be taken apart.
#[derive(Debug, thiserror::Error)]
enum UrlError {
    #[error("invalid url `{url}`: {source}")]
    Invalid {
        url: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("url `{0}` has no scheme")]
    NoScheme(String),
    #[error("url `{0}` has no host")]
    NoHost(String),
}

fn parse_service_url(url: &str) -> Result<(String, String, u16, Option<String>), UrlError> {
    let uri: http::Uri = url.parse().map_err(|source| UrlError::Invalid {
        url: url.to_string(),
        source,
    })?;
    let scheme = uri
        .scheme_str()
        .ok_or_else(|| UrlError::NoScheme(url.to_string()))?;
    let host = uri
        .host()
        .ok_or_else(|| UrlError::NoHost(url.to_string()))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    let path = match uri.path() {
        "" | "/"
            if !url.trim_end_matches('/').ends_with(&format!("{host}/")) && !url.ends_with('/') =>
        {
            None
        }
        p => Some(p.to_string()),
    };
    Ok((scheme.to_string(), host, port, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_url_parts() {
        assert_eq!(
            parse_service_url("http://a.b:8080/v1").ok(),
            Some(("http".into(), "a.b".into(), 8080, Some("/v1".into())))
        );
        assert_eq!(
            parse_service_url("https://a.b").ok(),
            Some(("https".into(), "a.b".into(), 443, None))
        );
        assert_eq!(
            parse_service_url("http://a.b/").ok(),
            Some(("http".into(), "a.b".into(), 80, Some("/".into())))
        );
    }

    #[test]
    fn kong_comment_and_ignore_annotations_load_on_every_entity() {
        let text = "_format_version: \"3.0\"
_comment: top
_ignore:
- {anything: [1, 2]}
services:
- name: s
  _comment: the backend
  _ignore: [x]
  url: http://127.0.0.1:1
  routes:
  - name: r
    _comment: public
    paths: [/]
upstreams:
- name: u
  _comment: pool
  targets:
  - target: 127.0.0.1:2
    _comment: first
consumers:
- username: c
  _ignore: []
  acls:
  - group: g
    _comment: from LDAP
";
        let d = load_str(text, "kong.yml", &LoadOptions::default()).expect("Kong loads it");
        assert_eq!(d.routes.len(), 1);
        assert_eq!(d.upstreams[0].targets.len(), 1);
        assert!(d.acls[0].value.get("_comment").is_none());
        let bad = text.replace("_comment: the backend", "_comment: [not, a, string]");
        let e = load_str(&bad, "kong.yml", &LoadOptions::default()).expect_err("wrong type");
        assert_eq!(e.errors[0].path, "services[0]._comment");
        assert_eq!(e.errors[0].line, Some(7));
    }
}
