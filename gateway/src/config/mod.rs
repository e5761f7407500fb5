//! Loading Kong's declarative configuration: environment references, YAML/JSON parsing,
//! typed entities, cross-references and semantic checks. Every problem is reported with
//! the file, the line and the field path; loading never stops at the first one.

mod build;
mod catalog;
pub use catalog::{Catalog, CredentialKind, ParsedPlugin, PluginCatalog, SpecError, SpecWarning};
mod entities;
pub use entities::{split_host_port, stable_id};
mod env;
mod loose;
pub mod model;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::Path;

use serde_norway::Value;

use build::Builder;
use model::*;
use yaml_locate::LazyIndex;

/// One problem in a configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub path: String,
    pub line: Option<usize>,
    pub message: String,
}

/// Every problem found in one configuration source.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors {
    pub source_name: String,
    pub errors: Vec<ConfigError>,
    /// Warnings found on the way (shown with the errors; not counted as errors).
    pub warnings: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match e.line {
                Some(l) => write!(f, "{}:{}: ", self.source_name, l)?,
                None => write!(f, "{}: ", self.source_name)?,
            }
            if e.path.is_empty() {
                write!(f, "{}", e.message)?;
            } else {
                write!(f, "{}: {}", e.path, e.message)?;
            }
        }
        Ok(())
    }
}

/// Options that change what a load accepts.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Plugins the user asked to skip (`--ignore-plugin`): accepted and not run.
    pub ignore_plugins: Vec<String>,
    /// Parses plugin configurations and checks credentials (the plugin layer's).
    pub catalog: Catalog,
    /// Environment references are an error instead of being expanded (posted
    /// configurations).
    pub refuse_env: bool,
    /// Warnings are errors (`--strict`).
    pub strict: bool,
}

/// Where a plugin instance applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PluginScope {
    pub service: Option<usize>,
    pub route: Option<usize>,
    pub consumer: Option<usize>,
    pub consumer_group: Option<usize>,
}

#[derive(Clone)]
pub struct PluginDef {
    pub name: String,
    pub path: String,
    pub scope: PluginScope,
    /// The configuration as the plugin layer parsed it.
    pub spec: ParsedPlugin,
}

impl std::fmt::Debug for PluginDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginDef")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct ServiceDef {
    /// The service's name, or its id or position when the file gives no name.
    pub name: String,
    /// The file names the service (Kong's `name` is null otherwise).
    pub named: bool,
    pub id: Option<String>,
    pub protocol: String,
    pub host: String,
    pub port: u16,
    pub path: Option<String>,
    pub retries: u32,
    pub connect_timeout_ms: u64,
    pub read_timeout_ms: u64,
    pub write_timeout_ms: u64,
    pub enabled: bool,
}

#[derive(Debug, Clone)]
pub struct RouteDef {
    pub name: String,
    pub id: Option<String>,
    pub path: String,
    pub service: Option<usize>,
    pub paths: Vec<String>,
    pub hosts: Vec<String>,
    /// TLS server names (`*.x` / `x.*` wildcards), lower-cased, trailing dot dropped.
    pub snis: Vec<String>,
    pub methods: Vec<String>,
    pub headers: BTreeMap<String, Vec<String>>,
    pub protocols: Vec<String>,
    pub strip_path: bool,
    pub preserve_host: bool,
    pub regex_priority: i64,
    pub path_handling: String,
    pub https_redirect_status_code: u16,
}

#[derive(Debug, Clone)]
pub struct TargetDef {
    pub target: String,
    pub weight: u32,
}

#[derive(Debug, Clone)]
pub struct UpstreamDef {
    pub def: Upstream,
    pub targets: Vec<TargetDef>,
}

/// A credential as written under a consumer (or at top level with a `consumer` key).
#[derive(Debug, Clone)]
pub struct CredentialDef {
    pub consumer: usize,
    pub path: String,
    pub value: Value,
}

#[derive(Debug, Clone)]
pub struct ConsumerDef {
    pub id: String,
    pub username: Option<String>,
    pub custom_id: Option<String>,
    pub groups: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct ConsumerGroupDef {
    pub name: String,
    pub id: Option<String>,
}

// dup: typed structs of the original schema: alike in shape, each its own fields.
/// A loaded, cross-checked configuration.
#[derive(Debug, Clone, Default)]
pub struct Declarative {
    pub services: Vec<ServiceDef>,
    pub routes: Vec<RouteDef>,
    pub upstreams: Vec<UpstreamDef>,
    pub consumers: Vec<ConsumerDef>,
    pub consumer_groups: Vec<ConsumerGroupDef>,
    pub jwt_secrets: Vec<CredentialDef>,
    pub keyauth_credentials: Vec<CredentialDef>,
    pub basicauth_credentials: Vec<CredentialDef>,
    pub hmacauth_credentials: Vec<CredentialDef>,
    pub acls: Vec<CredentialDef>,
    pub plugins: Vec<PluginDef>,
    pub certificates: Vec<Certificate>,
    pub ignored_plugins: Vec<String>,
    /// Hex digest of the source text, reported as Kong's `configuration_hash`.
    pub hash: String,
    /// What Kong loads but is risky or likely a mistake, with file:line (errors with
    /// `--strict`).
    pub warnings: Vec<ConfigError>,
}

impl Declarative {
    /// The consumer a reference names, by id, username or custom id (how Kong resolves
    /// an auth plugin's `anonymous`).
    pub fn consumer_by_key(&self, key: &str) -> Option<usize> {
        self.consumers.iter().position(|c| {
            c.id == key || c.username.as_deref() == Some(key) || c.custom_id.as_deref() == Some(key)
        })
    }
}

/// Loads and checks a configuration file.
pub fn load_file(path: &Path, opts: &LoadOptions) -> Result<Declarative, ConfigErrors> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        source_name: name.clone(),
        warnings: Vec::new(),
        errors: vec![ConfigError {
            path: String::new(),
            line: None,
            message: format!("cannot read file: {e}"),
        }],
    })?;
    load_str(&text, &name, opts)
}

/// Loads and checks a configuration given as text (YAML or JSON).
pub fn load_str(
    text: &str,
    source_name: &str,
    opts: &LoadOptions,
) -> Result<Declarative, ConfigErrors> {
    let fail = |errors: Vec<ConfigError>| ConfigErrors {
        source_name: source_name.to_string(),
        errors,
        warnings: Vec::new(),
    };
    if opts.refuse_env {
        let refs = env::reference_lines(text);
        if !refs.is_empty() {
            return Err(fail(
                refs.into_iter()
                    .map(|line| ConfigError {
                        path: String::new(),
                        line: Some(line),
                        message: "environment references are not expanded in a posted configuration (the gateway's environment holds its secrets); start with --allow-posted-env to allow them".into(),
                    })
                    .collect(),
            ));
        }
    }
    // Values that came from the environment never appear in an error message.
    let secrets = std::cell::RefCell::new(Vec::new());
    let text = env::substitute(text, |n| {
        let v = std::env::var(n).ok();
        if let Some(v) = &v {
            secrets.borrow_mut().push(v.clone());
        }
        v
    })
    .map_err(|errs| {
        fail(
            errs.into_iter()
                .map(|(line, message)| ConfigError {
                    path: String::new(),
                    line: Some(line),
                    message,
                })
                .collect(),
        )
    })?;
    // Kong's YAML parser keeps the last of repeated keys: so does this loader, with a
    // warning per repeated entry.
    let mut repeated_warnings = Vec::new();
    let first = serde_norway::from_str::<RawDocument>(&text);
    let first = match first {
        Err(e)
            if {
                let m = e.to_string();
                m.contains("duplicate entry") || m.contains("duplicate field")
            } =>
        {
            match loose::parse(&text).and_then(|l| {
                serde_norway::from_value::<RawDocument>(l.value).map(|d| (d, l.repeated))
            }) {
                Ok((doc, repeated)) => {
                    let mut keys = repeated;
                    keys.sort();
                    keys.dedup();
                    for k in keys {
                        for line in loose::repeated_lines(&text, &k) {
                            repeated_warnings.push(ConfigError {
                                path: k.clone(),
                                line: Some(line),
                                message: format!("`{k}` is given again here: as in Kong, the last value is used and the earlier one is ignored"),
                            });
                        }
                    }
                    Ok(doc)
                }
                Err(_) => Err(e),
            }
        }
        other => other,
    };
    let raw: RawDocument = match first {
        Ok(doc) => doc,
        Err(e) => {
            let line = e.location().map(|l| l.line());
            return Err(fail(vec![ConfigError {
                path: String::new(),
                line,
                message: strip_location(&e.to_string()),
            }]));
        }
    };
    let mut b = Builder::new(LazyIndex::new(&text), opts);
    b.warnings.extend(repeated_warnings);
    b.build(raw);
    if opts.strict {
        let warnings = std::mem::take(&mut b.warnings);
        b.errors.extend(warnings.into_iter().map(|mut w| {
            w.message = format!("{} (an error with --strict)", w.message);
            w
        }));
    }
    if b.errors.is_empty() {
        let mut decl = b.out;
        decl.hash = digest(&text);
        decl.warnings = std::mem::take(&mut b.warnings);
        Ok(decl)
    } else {
        let secrets = secrets.into_inner();
        let mut errors = b.errors;
        let mut warnings = b.warnings;
        for e in errors.iter_mut().chain(warnings.iter_mut()) {
            e.message = redact(&e.message, &secrets);
        }
        let mut out = fail(errors);
        out.warnings = warnings;
        Err(out)
    }
}

/// Replaces every environment value (of 3 characters or more) in `msg`.
fn redact(msg: &str, secrets: &[String]) -> String {
    let mut out = msg.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 3) {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "<redacted>");
        }
    }
    out
}

fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// The configuration's hash: MD5 of the text, as Kong's `configuration_hash` (a fixed
/// algorithm, so every instance of a fleet agrees whatever it was built with).
fn digest(text: &str) -> String {
    use md5::Digest;
    let sum = md5::Md5::digest(text.as_bytes());
    sum.iter().fold(String::with_capacity(32), |mut s, b| {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
        s
    })
}
