//! The gateway's declarative configuration of an environment:
//! `provisioner/envs/<env>/kong.yml` (Kong 3.x format) rendered with the env
//! file's values, then loaded by the gateway's own loader, so a mistake fails
//! `plan` with the template's file and line.
//!
//! Two kinds of references, both on one line (so the rendered file keeps the
//! template's line numbers):
//! * `{{ NAME }}`: rendered here, at plan time, from the env file
//!   ([`vars`]). Comment lines are left alone.
//! * `${{ env "NAME" }}` (deck's syntax): left for the gateway, which resolves
//!   it at start from the task's environment. Every name must be in the task's
//!   plain environment or its secrets ([`validate`] checks it); secret values
//!   are never known here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::config::{EnvConfig, Invalid};
use crate::model::PENDING;
use crate::specs::fnv1a;

#[derive(Debug, thiserror::Error)]
pub enum GatewayConfigError {
    #[error("cannot read the gateway configuration {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Template {
        path: String,
        line: usize,
        message: String,
    },
    #[error("gateway configuration: {0}")]
    Values(#[from] Invalid),
    /// The gateway's loader refused the rendered file (its message names
    /// the file, the line and the field).
    #[error("the gateway refuses the rendered configuration:\n{0}")]
    Load(String),
}

/// A rendered configuration: the text handed to the task as
/// `GATEWAY_CONFIG_STRING`, and its fingerprint (what `plan` compares).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Where the template came from (errors and notes name it).
    pub source: String,
    pub text: String,
    pub hash: String,
}

impl Rendered {
    pub fn new(source: &str, text: String) -> Rendered {
        Rendered {
            source: source.to_string(),
            hash: fnv1a(text.as_bytes()),
            text,
        }
    }
}

/// The values `{{ NAME }}` renders, from the env file.
pub fn vars(cfg: &EnvConfig) -> Result<BTreeMap<String, String>, Invalid> {
    let mut v = BTreeMap::new();
    v.insert("env".to_string(), cfg.name.clone());
    v.insert("domain".to_string(), cfg.dns.domain.clone());
    // A YAML flow sequence of JSON strings, on one line.
    v.insert(
        "frontend_origins".to_string(),
        serde_json::to_string(&cfg.gateway.frontend_origins)
            .map_err(|e| Invalid::Value(e.to_string()))?,
    );
    for u in cfg.upstreams()? {
        let n = &u.name;
        v.insert(format!("upstream.{n}.host"), u.host.clone());
        v.insert(format!("upstream.{n}.port"), u.port.to_string());
        v.insert(format!("upstream.{n}.target"), u.target());
        v.insert(format!("upstream.{n}.url"), u.url.clone());
    }
    Ok(v)
}

/// Renders `{{ NAME }}` references; an unknown name or an unterminated
/// reference is an error at its line. `${{ ... }}` is copied as is.
pub fn render(
    template: &str,
    source: &str,
    vars: &BTreeMap<String, String>,
) -> Result<String, GatewayConfigError> {
    let mut out = String::with_capacity(template.len());
    for (i, line) in template.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let err = |message: String| GatewayConfigError::Template {
            path: source.to_string(),
            line: i + 1,
            message,
        };
        let mut rest = line;
        while let Some(start) = rest.find("{{") {
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| err("unterminated `{{` reference".to_string()))?;
            if rest[..start].ends_with('$') {
                // The gateway's own `${{ env "NAME" }}`.
                out.push_str(&rest[..start + 2 + end + 2]);
            } else {
                out.push_str(&rest[..start]);
                let name = after[..end].trim();
                let value = vars.get(name).ok_or_else(|| {
                    err(format!(
                        "unknown reference `{{{{ {name} }}}}`; the env file gives: {}",
                        vars.keys().cloned().collect::<Vec<_>>().join(", ")
                    ))
                })?;
                out.push_str(value);
            }
            rest = &after[end + 2..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

/// Reads the template at `path` and renders it for `cfg`.
pub fn load(path: &Path, cfg: &EnvConfig) -> Result<Rendered, GatewayConfigError> {
    let source = path.display().to_string();
    let template = std::fs::read_to_string(path).map_err(|e| GatewayConfigError::Read {
        path: source.clone(),
        source: e,
    })?;
    let text = render(&template, &source, &vars(cfg)?)?;
    Ok(Rendered::new(&source, text))
}

/// Stand-in for a value only known once a resource exists (a hostname).
const PENDING_STANDIN: &str = "known-after-apply.invalid";
/// Stand-in for a secret at plan time (long enough for an HS256 key).
const SECRET_STANDIN: &str = "provisioner-plan-placeholder-secret-0123456789abcdef";

/// Replaces the gateway's `${{ env "NAME" }}` references as the task would:
/// plain values from `env`, a stand-in for `secrets`. A name the task does
/// not set is an error at its line.
fn substitute_env(
    r: &Rendered,
    env: &BTreeMap<String, String>,
    secrets: &BTreeSet<String>,
) -> Result<String, GatewayConfigError> {
    let mut out = String::with_capacity(r.text.len());
    let mut errors = Vec::new();
    for (i, line) in r.text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("${{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 3..];
            let Some(end) = after.find("}}") else {
                errors.push(format!("{}:{}: unterminated `${{{{`", r.source, i + 1));
                rest = "";
                break;
            };
            let expr = after[..end].trim();
            let name = expr
                .strip_prefix("env")
                .map(str::trim_start)
                .and_then(|n| n.strip_prefix('"')?.strip_suffix('"'));
            match name {
                Some(n) if env.contains_key(n) => {
                    let v = &env[n];
                    out.push_str(if v == PENDING { PENDING_STANDIN } else { v });
                }
                Some(n) if secrets.contains(n) => out.push_str(SECRET_STANDIN),
                Some(n) => errors.push(format!(
                    "{}:{}: `{n}` is not set in the gateway task (environment: {}; secrets: {})",
                    r.source,
                    i + 1,
                    env.keys().cloned().collect::<Vec<_>>().join(", "),
                    secrets.iter().cloned().collect::<Vec<_>>().join(", "),
                )),
                None => errors.push(format!(
                    "{}:{}: unsupported reference `${{{{ {expr} }}}}`: expected `${{{{ env \"NAME\" }}}}`",
                    r.source,
                    i + 1
                )),
            }
            rest = &after[end + 2..];
        }
        out.push_str(rest);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(GatewayConfigError::Load(errors.join("\n")))
    }
}

/// Loads the rendered configuration with the gateway's loader, with the
/// task's environment (`env`, plain values) and secret names. Returns the
/// loader's warnings (`file:line: field: message`).
pub fn validate(
    r: &Rendered,
    env: &BTreeMap<String, String>,
    secrets: &BTreeSet<String>,
) -> Result<Vec<String>, GatewayConfigError> {
    let text = substitute_env(r, env, secrets)?;
    let opts = gateway::plugins::load_options(Vec::new());
    match gateway::config::load_str(&text, &r.source, &opts) {
        Ok(decl) => Ok(decl
            .warnings
            .iter()
            .map(|w| match w.line {
                Some(l) => format!("{}:{l}: {}: {}", r.source, w.path, w.message),
                None => format!("{}: {}: {}", r.source, w.path, w.message),
            })
            .collect()),
        Err(e) => Err(GatewayConfigError::Load(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;
    use std::path::PathBuf;

    fn envs() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("envs")
    }

    fn task_env(cfg: &EnvConfig) -> (BTreeMap<String, String>, BTreeSet<String>) {
        let ids = crate::model::Ids::default();
        (
            crate::desired::gateway_environment(cfg, &ids),
            crate::desired::gateway_secret_names(),
        )
    }

    #[test]
    fn shipped_configs_render_and_load_in_the_gateway() {
        for name in ["staging", "production"] {
            let env = Env::load(&envs().join(format!("{name}.toml"))).expect("env");
            let path = env.gateway_config_path();
            assert!(path.ends_with(format!("{name}/kong.yml")), "{path:?}");
            let r = load(&path, &env.cfg).expect("renders");
            assert!(
                !r.text.replace("${{", "").contains("{{"),
                "every placeholder rendered"
            );
            let origins = serde_json::to_string(&env.cfg.gateway.frontend_origins).expect("json");
            assert!(r.text.contains(&format!("origins: {origins}")), "{name}");
            assert!(r.text.contains("policy: redis"));
            assert!(r.text.contains(r#"host: ${{ env "REDIS_HOST" }}"#));
            let target = env.cfg.upstreams().expect("upstreams")[0].target();
            assert!(r.text.contains(&format!("target: {target}")), "{name}");
            let (plain, secrets) = task_env(&env.cfg);
            let warnings = validate(&r, &plain, &secrets).expect("the gateway loads it");
            assert!(warnings.is_empty(), "{warnings:?}");
        }
    }

    #[test]
    fn rendering_keeps_lines_and_names_unknown_references() {
        let vars: BTreeMap<String, String> = [("env".to_string(), "staging".to_string())].into();
        let t = "# {{ not rendered }}\na: {{ env }}\nb: ${{ env \"X\" }}\n";
        assert_eq!(
            render(t, "k.yml", &vars).expect("render"),
            "# {{ not rendered }}\na: staging\nb: ${{ env \"X\" }}\n"
        );
        let err = render("a: 1\nb: {{ nope }}\n", "k.yml", &vars)
            .expect_err("unknown")
            .to_string();
        assert!(
            err.starts_with("k.yml:2: unknown reference `{{ nope }}`"),
            "{err}"
        );
        let err = render("a: {{ env\n", "k.yml", &vars)
            .expect_err("unterminated")
            .to_string();
        assert!(err.starts_with("k.yml:1: unterminated"), "{err}");
    }

    #[test]
    fn a_broken_config_fails_with_file_and_line() {
        let env = Env::load(&envs().join("staging.toml")).expect("env");
        let (plain, secrets) = task_env(&env.cfg);
        let path = env.gateway_config_path();
        let text = std::fs::read_to_string(&path).expect("read");
        // A misspelt field of a plugin: the gateway rejects unknown fields.
        let line = text
            .lines()
            .position(|l| l.contains("max_age: 3600"))
            .expect("cors max_age")
            + 1;
        let bad = text.replacen("max_age: 3600", "max_agee: 3600", 1);
        let r = Rendered::new(
            "provisioner/envs/staging/kong.yml",
            render(&bad, "x", &vars(&env.cfg).expect("vars")).expect("render"),
        );
        let err = validate(&r, &plain, &secrets)
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains(&format!("provisioner/envs/staging/kong.yml:{line}:")),
            "{err}"
        );
        assert!(err.contains("max_agee"), "{err}");
        // A reference the task does not set.
        let r = Rendered::new(
            "k.yml",
            "_format_version: \"3.0\"\nx: ${{ env \"NOPE\" }}\n".into(),
        );
        let err = validate(&r, &plain, &secrets)
            .expect_err("unset")
            .to_string();
        assert!(
            err.contains("k.yml:2: `NOPE` is not set in the gateway task"),
            "{err}"
        );
    }

    #[test]
    fn secrets_never_reach_the_rendered_text_or_errors() {
        let env = Env::load(&envs().join("staging.toml")).expect("env");
        let r = load(&env.gateway_config_path(), &env.cfg).expect("render");
        assert!(r.text.contains(r#"secret: ${{ env "JWT_SECRET" }}"#));
        assert!(r.text.contains(r#"password: ${{ env "REDIS_PASSWORD" }}"#));
        let (plain, secrets) = task_env(&env.cfg);
        let bad = Rendered::new(
            "k.yml",
            r.text.replacen("algorithm: HS256", "algorithm: HS999", 1),
        );
        let err = validate(&bad, &plain, &secrets)
            .expect_err("bad")
            .to_string();
        assert!(!err.contains(SECRET_STANDIN), "{err}");
    }

    #[test]
    fn a_changed_config_changes_the_hash() {
        let a = Rendered::new("k", "a: 1\n".into());
        let b = Rendered::new("k", "a: 2\n".into());
        assert_ne!(a.hash, b.hash);
    }
}
