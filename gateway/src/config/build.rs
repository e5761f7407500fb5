//! The pass that turns raw YAML items into checked, cross-referenced definitions.

use serde::de::DeserializeOwned;
use serde_norway::Value;

use super::model::*;
use super::*;
use yaml_locate::LazyIndex;

/// Joins a base path with a path reported by serde_path_to_error.
pub(super) fn join_path(base: &str, inner: &str) -> String {
    if inner.is_empty() || inner == "." {
        base.to_string()
    } else if base.is_empty() {
        inner.to_string()
    } else if inner.starts_with('[') {
        format!("{base}{inner}")
    } else {
        format!("{base}.{inner}")
    }
}

pub(super) struct Builder<'a> {
    /// Built on the first error: a file without errors never pays for it.
    pub(super) index: LazyIndex<'a>,
    pub(super) opts: &'a LoadOptions,
    pub(super) errors: Vec<ConfigError>,
    /// Kong loads these, but they are risky or likely mistakes.
    pub(super) warnings: Vec<ConfigError>,
    pub(super) out: Declarative,
    /// Plugin entries seen, with their scope, parsed at the end (when every entity is known).
    pub(super) pending_plugins: Vec<(String, Value, PluginScope, Option<Refs>)>,
    /// `_format_version` 1.1 or 2.1: route paths are migrated as Kong 3.x does.
    pub(super) legacy_format: bool,
    /// (group index, consumer key, group path) from `consumer_groups[].consumers`.
    pub(super) group_members: Vec<(usize, String, String)>,
    /// Lookups by name or id (first entity wins, as a scan in file order would), so large
    /// files load in linear time.
    pub(super) consumer_keys: std::collections::HashMap<String, usize>,
    pub(super) service_keys: std::collections::HashMap<String, usize>,
    pub(super) route_keys: std::collections::HashMap<String, usize>,
    pub(super) route_names: std::collections::HashSet<String>,
}

/// References a top-level plugin entry carries, resolved once every entity is known.
pub(super) struct Refs {
    pub(super) service: Option<String>,
    pub(super) route: Option<String>,
    pub(super) consumer: Option<String>,
    pub(super) consumer_group: Option<String>,
}

impl<'a> Builder<'a> {
    pub(super) fn new(index: LazyIndex<'a>, opts: &'a LoadOptions) -> Self {
        Builder {
            index,
            opts,
            errors: Vec::new(),
            warnings: Vec::new(),
            consumer_keys: Default::default(),
            service_keys: Default::default(),
            route_keys: Default::default(),
            route_names: Default::default(),
            out: Declarative::default(),
            pending_plugins: Vec::new(),
            group_members: Vec::new(),
            legacy_format: false,
        }
    }

    pub(super) fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let line = self.index.get().line_of(&path);
        self.warnings.push(ConfigError {
            path,
            line,
            message: message.into(),
        });
    }

    pub(super) fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let line = self.index.get().line_of(&path);
        self.errors.push(ConfigError {
            path,
            line,
            message: message.into(),
        });
    }

    /// Removes Kong's annotation fields every entity accepts (`_comment`, a string;
    /// `_ignore`, an array of anything), reporting a wrong type.
    pub(super) fn strip_annotations(&mut self, v: &mut Value, path: &str) {
        let Value::Mapping(m) = v else {
            return;
        };
        if let Some(c) = m.remove("_comment")
            && !matches!(c, Value::String(_) | Value::Null)
        {
            self.err(join_path(path, "_comment"), "expected a string");
        }
        if let Some(i) = m.remove("_ignore")
            && !matches!(i, Value::Sequence(_) | Value::Null)
        {
            self.err(join_path(path, "_ignore"), "expected an array");
        }
    }

    /// Deserializes one entity, recording a located error on failure.
    pub(crate) fn de<T: DeserializeOwned>(&mut self, v: &Value, path: &str) -> Option<T> {
        let mut v = v.clone();
        self.strip_annotations(&mut v, path);
        match serde_path_to_error::deserialize::<_, T>(v) {
            Ok(t) => Some(t),
            Err(e) => {
                let mut full = join_path(path, &e.path().to_string());
                let msg = strip_location(&e.inner().to_string());
                if let Some(field) = msg
                    .strip_prefix("unknown field `")
                    .and_then(|s| s.split('`').next())
                    && !full.ends_with(field)
                {
                    full = join_path(&full, field);
                }
                self.err(full, msg);
                None
            }
        }
    }

    /// Credentials are checked once at load (key material parsed), with their paths.
    fn check_credentials(&mut self) {
        use super::CredentialKind as K;
        let mut errs = Vec::new();
        for (kind, list) in [
            (K::JwtSecret, &self.out.jwt_secrets),
            (K::KeyAuth, &self.out.keyauth_credentials),
            (K::BasicAuth, &self.out.basicauth_credentials),
            (K::HmacAuth, &self.out.hmacauth_credentials),
            (K::Acl, &self.out.acls),
        ] {
            for c in list {
                if let Err(super::SpecError::Invalid { path, message }) =
                    self.opts.catalog.0.check_credential(kind, &c.value)
                {
                    errs.push((join_path(&c.path, &path), message));
                }
            }
        }
        // Kong's unique fields: a username names one basic-auth (or hmac-auth) credential.
        for (what, list) in [
            ("basic-auth", &self.out.basicauth_credentials),
            ("hmac-auth", &self.out.hmacauth_credentials),
        ] {
            let mut seen = std::collections::HashMap::new();
            for c in list {
                if let Some(u) = c.value.get("username").and_then(|k| k.as_str())
                    && let Some(first) = seen.insert(u.to_string(), c.path.clone())
                {
                    errs.push((
                        format!("{}.username", c.path),
                        format!("duplicate {what} username `{u}` (also at {first})"),
                    ));
                }
            }
        }
        let mut seen = std::collections::HashMap::new();
        for c in &self.out.jwt_secrets {
            if let Some(k) = c.value.get("key").and_then(|k| k.as_str())
                && let Some(first) = seen.insert(k.to_string(), c.path.clone())
            {
                errs.push((
                    format!("{}.key", c.path),
                    format!("duplicate jwt key `{k}` (also at {first})"),
                ));
            }
        }
        for (p, m) in errs {
            self.err(p, m);
        }
        // Kong generates a random key-auth `key` / hmac-auth `secret` when the file has
        // none (`auto = true`): it loads, but no client can ever present it.
        let mut warns = Vec::new();
        for (list, field, what) in [
            (&self.out.keyauth_credentials, "key", "key-auth"),
            (&self.out.hmacauth_credentials, "secret", "hmac-auth"),
        ] {
            for c in list {
                if matches!(c.value.get(field), None | Some(Value::Null)) {
                    warns.push((
                        c.path.clone(),
                        format!("{what} credential without `{field}`: Kong generates a random {field} no client knows, so this credential never authenticates; set `{field}`"),
                    ));
                }
            }
        }
        for (p, m) in warns {
            self.warn(p, m);
        }
    }

    pub(super) fn build(&mut self, raw: RawDocument) {
        match raw.format_version.as_deref() {
            Some("3.0") => {}
            // Kong 3.x migrates these on load: route paths that are regexes get `~`.
            Some("2.1") | Some("1.1") => self.legacy_format = true,
            Some(other) => self.err(
                "_format_version",
                format!("unsupported format version \"{other}\"; expected \"3.0\""),
            ),
            None => self.err(
                "_format_version",
                "required field missing: expected \"3.0\"",
            ),
        }
        if raw.workspace.is_some() {
            self.err(
                "_workspace",
                "workspaces are not supported (a single workspace is served)",
            );
        }

        // Consumer groups first: consumers may list them.
        for (i, v) in raw.consumer_groups.iter().enumerate() {
            let path = format!("consumer_groups[{i}]");
            if let Some(g) = self.de::<ConsumerGroup>(v, &path) {
                let gi = self.out.consumer_groups.len();
                self.out.consumer_groups.push(ConsumerGroupDef {
                    name: g.name.clone(),
                    id: g.id.clone(),
                });
                for (j, p) in g.plugins.iter().enumerate() {
                    self.pending_plugins.push((
                        format!("{path}.plugins[{j}]"),
                        p.clone(),
                        PluginScope {
                            consumer_group: Some(gi),
                            ..Default::default()
                        },
                        None,
                    ));
                }
                for c in &g.consumers {
                    if let Some(k) = c.key() {
                        self.group_members.push((gi, k.to_string(), path.clone()));
                    }
                }
            }
        }

        for (i, v) in raw.consumers.iter().enumerate() {
            self.consumer(v, &format!("consumers[{i}]"));
        }
        self.resolve_group_members();

        for (i, v) in raw.upstreams.iter().enumerate() {
            let path = format!("upstreams[{i}]");
            if let Some(u) = self.de::<Upstream>(v, &path) {
                self.upstream(u, &path);
            }
        }
        for (i, v) in raw.targets.iter().enumerate() {
            let path = format!("targets[{i}]");
            if let Some(t) = self.de::<Target>(v, &path) {
                let up = t
                    .upstream
                    .as_ref()
                    .and_then(|r| r.key())
                    .map(str::to_string);
                match up.and_then(|k| self.find_upstream(&k)) {
                    Some(ui) => self.target(ui, t, &path),
                    None => self.err(
                        format!("{path}.upstream"),
                        "a top-level target needs an `upstream` that names a declared upstream",
                    ),
                }
            }
        }

        for (i, v) in raw.services.iter().enumerate() {
            self.service(v, &format!("services[{i}]"));
        }
        for (i, v) in raw.routes.iter().enumerate() {
            let path = format!("routes[{i}]");
            if let Some(r) = self.de::<Route>(v, &path) {
                let svc = match r.service.as_ref().and_then(|s| s.key()) {
                    Some(k) => match self.find_service(k) {
                        Some(si) => Some(si),
                        None => {
                            self.err(
                                format!("{path}.service"),
                                format!("route references unknown service `{k}`"),
                            );
                            continue;
                        }
                    },
                    None => None,
                };
                self.route(r, svc, &path);
            }
        }

        for (kind, list) in [
            ("jwt_secrets", &raw.jwt_secrets),
            ("keyauth_credentials", &raw.keyauth_credentials),
            ("basicauth_credentials", &raw.basicauth_credentials),
            ("hmacauth_credentials", &raw.hmacauth_credentials),
            ("acls", &raw.acls),
        ] {
            for (i, v) in list.iter().enumerate() {
                let path = format!("{kind}[{i}]");
                let consumer = v.get("consumer").and_then(|c| match c {
                    Value::String(s) => Some(s.clone()),
                    Value::Mapping(_) => c
                        .get("username")
                        .or_else(|| c.get("id"))
                        .and_then(|x| x.as_str())
                        .map(str::to_string),
                    _ => None,
                });
                match consumer.and_then(|k| self.find_consumer(&k)) {
                    Some(ci) => {
                        let mut value = v.clone();
                        if let Value::Mapping(m) = &mut value {
                            m.remove("consumer");
                        }
                        self.credential(kind, ci, value, path);
                    }
                    None => self.err(
                        format!("{path}.consumer"),
                        "a top-level credential needs a `consumer` that names a declared consumer",
                    ),
                }
            }
        }

        for (i, v) in raw.plugins.iter().enumerate() {
            let path = format!("plugins[{i}]");
            let refs = Refs {
                service: ref_key(v, "service"),
                route: ref_key(v, "route"),
                consumer: ref_key(v, "consumer"),
                consumer_group: ref_key(v, "consumer_group"),
            };
            self.pending_plugins
                .push((path, v.clone(), PluginScope::default(), Some(refs)));
        }
        for (i, v) in raw.certificates.iter().enumerate() {
            let path = format!("certificates[{i}]");
            if let Some(c) = self.de::<Certificate>(v, &path) {
                self.out.certificates.push(c);
                self.err(path, "`certificates` entities are not served; give the listener's certificate with --ssl-cert/--ssl-cert-key");
            }
        }
        for (section, list) in [
            ("ca_certificates", &raw.ca_certificates),
            ("snis", &raw.snis),
            ("vaults", &raw.vaults),
        ] {
            if !list.is_empty() {
                self.err(section, format!("`{section}` entities are not supported"));
            }
        }

        self.check_credentials();
        // Kong transforms credentials on load unless told they are stored values
        // (`_transform: false`, as `kong config db_export` writes).
        if raw.transform != Some(false) {
            let catalog = self.opts.catalog.0.clone();
            let out = &mut self.out;
            for (kind, list) in [
                (
                    super::CredentialKind::BasicAuth,
                    &mut out.basicauth_credentials,
                ),
                (
                    super::CredentialKind::HmacAuth,
                    &mut out.hmacauth_credentials,
                ),
                (super::CredentialKind::KeyAuth, &mut out.keyauth_credentials),
                (super::CredentialKind::JwtSecret, &mut out.jwt_secrets),
                (super::CredentialKind::Acl, &mut out.acls),
            ] {
                for c in list.iter_mut() {
                    if let Some(consumer) = out.consumers.get(c.consumer) {
                        catalog.transform_credential(kind, &consumer.id, &mut c.value);
                    }
                }
            }
        }
        let pending = std::mem::take(&mut self.pending_plugins);
        for (path, value, scope, refs) in pending {
            self.warn_missing_anonymous(&path, &value);
            self.plugin(&path, &value, scope, refs);
        }
        self.check_plugin_duplicates();
    }
}

impl Builder<'_> {
    /// An auth plugin's `anonymous` that names no consumer: Kong loads it and, when
    /// authentication fails, passes the request on without a consumer, which is almost
    /// always a typo that opens the route.
    fn warn_missing_anonymous(&mut self, path: &str, value: &Value) {
        let Some(a) = value
            .get("config")
            .and_then(|c| c.get("anonymous"))
            .and_then(|a| a.as_str())
            .filter(|a| !a.is_empty())
        else {
            return;
        };
        if self.out.consumer_by_key(a).is_none() {
            self.warn(
                format!("{path}.config.anonymous"),
                format!("no consumer `{a}`: as in Kong, a failed authentication is then passed on without a consumer (X-Anonymous-Consumer: true), so the route is open; name an existing consumer"),
            );
        }
    }
}

fn ref_key(v: &Value, field: &str) -> Option<String> {
    match v.get(field)? {
        Value::String(s) => Some(s.clone()),
        m @ Value::Mapping(_) => m
            .get("name")
            .or_else(|| m.get("username"))
            .or_else(|| m.get("id"))
            .and_then(|x| x.as_str())
            .map(str::to_string),
        _ => None,
    }
}
