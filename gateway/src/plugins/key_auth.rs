//! Kong's `key-auth` plugin: an API key from a header or the query string identifies the
//! consumer. Statuses, messages and `WWW-Authenticate` as Kong 3.9 sends them.

use std::collections::HashMap;
use std::sync::Arc;

use crate::core::Session;
use async_trait::async_trait;
use http::HeaderName;
use serde::Deserialize;

use super::auth::{self, set_consumer};
use super::{BuildContext, BuildError, Flow, Plugin, SpecError};
use crate::core::respond::LocalResponse;
use crate::core::state::RequestState;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_key_names")]
    pub key_names: Vec<String>,
    #[serde(default)]
    pub hide_credentials: bool,
    pub anonymous: Option<String>,
    #[serde(default = "default_true")]
    pub key_in_header: bool,
    #[serde(default = "default_true")]
    pub key_in_query: bool,
    #[serde(default)]
    pub key_in_body: bool,
    #[serde(default = "default_true")]
    pub run_on_preflight: bool,
    pub realm: Option<String>,
}

fn default_key_names() -> Vec<String> {
    vec!["apikey".into()]
}
fn default_true() -> bool {
    true
}

impl Config {
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.key_names.is_empty() {
            return Err(SpecError::at(
                "key_names",
                "at least one key name is required",
            ));
        }
        for (i, k) in self.key_names.iter().enumerate() {
            if HeaderName::from_bytes(k.as_bytes()).is_err() {
                return Err(SpecError::at(
                    format!("key_names[{i}]"),
                    "not a valid header name",
                ));
            }
        }
        Ok(())
    }
}

// dup: the shape of every plugin file (its own Config, checks and hook types).
/// A `keyauth_credentials` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyDef {
    pub key: Option<String>,
    pub id: Option<String>,
    pub ttl: Option<u64>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub created_at: Option<i64>,
}

/// Kong's `key` is `auto = true`: a credential without one gets a random key at load,
/// which no client knows (so it never authenticates; the loader warns). An empty key
/// is refused, as Kong's `len_min` refuses it.
pub fn check_key(v: &serde_norway::Value) -> Result<KeyDef, SpecError> {
    let k: KeyDef = super::parse_config(v)?;
    if k.key.as_deref() == Some("") {
        return Err(SpecError::at(
            "key",
            "length must be at least 1 (the API key clients send)",
        ));
    }
    Ok(k)
}

pub struct KeyAuth {
    cfg: Config,
    names: Vec<HeaderName>,
    keys: Arc<HashMap<String, (usize, String)>>,
    anonymous: auth::Anonymous,
    www_auth: String,
}

/// Every key-auth credential of a configuration: key -> (consumer, credential id).
#[derive(Clone)]
struct KeyTable(Arc<HashMap<String, (usize, String)>>);

impl KeyAuth {
    pub fn new(cfg: Config, ctx: &BuildContext<'_>) -> Result<KeyAuth, BuildError> {
        let keys = ctx.cache.get_or_try_init(|| {
            let mut keys = HashMap::with_capacity(ctx.decl.keyauth_credentials.len());
            for c in &ctx.decl.keyauth_credentials {
                let k = check_key(&c.value).map_err(|source| BuildError::Credential {
                    path: c.path.clone(),
                    source,
                })?;
                // Kong's generated key: no request can present it.
                let Some(key) = k.key else {
                    continue;
                };
                let id =
                    k.id.unwrap_or_else(|| crate::config::stable_id("keyauth_credential", &key));
                keys.insert(key, (c.consumer, id));
            }
            Ok(KeyTable(Arc::new(keys)))
        })?;
        let anonymous = auth::anonymous(ctx.decl, cfg.anonymous.as_deref());
        Ok(KeyAuth {
            names: cfg
                .key_names
                .iter()
                .filter_map(|k| HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).ok())
                .collect(),
            // Kong 3.9: `Key`, with the realm only when one is configured.
            www_auth: match cfg.realm.as_deref() {
                Some(r) => format!("Key realm=\"{r}\""),
                None => "Key".to_string(),
            },
            keys: keys.0,
            anonymous,
            cfg,
        })
    }

    fn authenticate(
        &self,
        session: &Session,
        st: &mut RequestState,
        body: Option<&BodyArgs>,
    ) -> Result<(), (u16, &'static str, bool)> {
        let req = session.req_header();
        let query = if self.cfg.key_in_query {
            auth::query_params(req.uri.query())
        } else {
            Vec::new()
        };
        let mut found: Option<(String, usize)> = None;
        for (i, name) in self.cfg.key_names.iter().enumerate() {
            let mut values: Vec<String> = Vec::new();
            if self.cfg.key_in_header {
                values.extend(
                    req.headers
                        .get_all(&self.names[i])
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .map(str::to_string),
                );
            }
            if values.is_empty() {
                values.extend(
                    query
                        .iter()
                        .filter(|(k, _)| k == name)
                        .map(|(_, v)| v.clone()),
                );
            }
            if values.is_empty()
                && let Some(b) = body
            {
                values.extend(b.values(name));
            }
            match values.len() {
                0 => continue,
                1 => {
                    found = Some((values.remove(0), i));
                    break;
                }
                _ => return Err((401, "Duplicate API key found", false)),
            }
        }
        let Some((key, idx)) = found.filter(|(k, _)| !k.is_empty()) else {
            return Err((401, "No API key found in request", true));
        };
        if self.cfg.hide_credentials {
            st.strip_upstream.push(self.names[idx].clone());
            st.strip_query.push(self.cfg.key_names[idx].clone());
        }
        let Some((consumer, id)) = self.keys.get(&key) else {
            return Err((401, "Unauthorized", false));
        };
        set_consumer(st, Some(*consumer), Some(id.clone()));
        Ok(())
    }
}

/// A request body key-auth can read a key from (`key_in_body`): a form or a JSON object,
/// as Kong's `kong.request.get_body()` reads them.
enum BodyArgs {
    Form(Vec<(String, String)>),
    Json(serde_json::Map<String, serde_json::Value>),
}

impl BodyArgs {
    /// The string values of `name` (Kong: several values are a duplicate key).
    fn values(&self, name: &str) -> Vec<String> {
        match self {
            BodyArgs::Form(args) => args
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .collect(),
            BodyArgs::Json(m) => match m.get(name) {
                Some(serde_json::Value::String(s)) => vec![s.clone()],
                Some(serde_json::Value::Array(a)) if a.len() > 1 => {
                    a.iter().map(|v| v.to_string()).collect()
                }
                _ => Vec::new(),
            },
        }
    }

    /// The body without the key names (`hide_credentials`), when any was present.
    fn without(&self, names: &[String]) -> Option<bytes::Bytes> {
        match self {
            BodyArgs::Form(args) => {
                if !args.iter().any(|(k, _)| names.contains(k)) {
                    return None;
                }
                let kept: Vec<String> = args
                    .iter()
                    .filter(|(k, _)| !names.contains(k))
                    .map(|(k, v)| {
                        let enc = |s: &str| {
                            percent_encoding::utf8_percent_encode(s, FORM_ESCAPE).to_string()
                        };
                        format!("{}={}", enc(k), enc(v))
                    })
                    .collect();
                Some(kept.join("&").into())
            }
            BodyArgs::Json(m) => {
                if !names.iter().any(|n| m.contains_key(n)) {
                    return None;
                }
                let mut m = m.clone();
                for n in names {
                    m.remove(n);
                }
                serde_json::to_vec(&m).ok().map(Into::into)
            }
        }
    }
}

/// Characters escaped when a form body is written again.
const FORM_ESCAPE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Reads a form or JSON request body whole (the chunks still go upstream); None for
/// other types or no body.
async fn read_body_args(session: &mut Session) -> crate::core::Result<Option<BodyArgs>> {
    let ct = session
        .req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let form = ct == "application/x-www-form-urlencoded";
    let json = ct == "application/json" || ct.ends_with("+json");
    if !(form || json) || !session.has_body() {
        return Ok(None);
    }
    let mut raw = Vec::new();
    while let Some(chunk) = session.read_request_body().await? {
        raw.extend_from_slice(&chunk);
    }
    Ok(if form {
        Some(BodyArgs::Form(auth::query_params(Some(
            &String::from_utf8_lossy(&raw),
        ))))
    } else {
        match serde_json::from_slice::<serde_json::Value>(&raw) {
            Ok(serde_json::Value::Object(m)) => Some(BodyArgs::Json(m)),
            _ => None,
        }
    })
}

#[async_trait]
impl Plugin for KeyAuth {
    fn name(&self) -> &'static str {
        "key-auth"
    }

    fn priority(&self) -> i32 {
        1250
    }

    async fn access(
        &self,
        session: &mut Session,
        st: &mut RequestState,
    ) -> crate::core::Result<Flow> {
        if !self.cfg.run_on_preflight && session.req_header().method == http::Method::OPTIONS {
            return Ok(Flow::Continue);
        }
        if self.anonymous.is_some() && st.credential.is_some() {
            return Ok(Flow::Continue);
        }
        let mut result = self.authenticate(session, st, None);
        // `key_in_body`: the body is read only when no header or query key was found.
        if matches!(result, Err((_, _, true)))
            && self.cfg.key_in_body
            && let Some(body) = read_body_args(session).await?
        {
            result = self.authenticate(session, st, Some(&body));
            if result.is_ok()
                && self.cfg.hide_credentials
                && let Some(rewritten) = body.without(&self.cfg.key_names)
            {
                session.replace_read_body(rewritten);
            }
        }
        match result {
            Ok(()) => Ok(Flow::Continue),
            Err((status, msg, no_key)) => {
                let route = st
                    .rt
                    .as_ref()
                    .zip(st.route.as_ref())
                    .map(|(rt, m)| rt.decl.routes[m.route].name.clone())
                    .unwrap_or_default();
                let reason = if no_key { "no_key" } else { "invalid_key" };
                crate::metrics::Metrics::global().auth_failure(&route, "key-auth", reason);
                if let Some(a) = self.anonymous {
                    set_consumer(st, a, None);
                    return Ok(Flow::Continue);
                }
                let accept = session
                    .req_header()
                    .headers
                    .get("accept")
                    .and_then(|v| v.to_str().ok());
                // Every 401 of Kong 3.9's key-auth carries the challenge.
                let r = LocalResponse::error(status, msg, &st.request_id, accept)
                    .with_header("www-authenticate", self.www_auth.as_str());
                Ok(Flow::Respond(r))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(yaml: &str) -> serde_norway::Value {
        serde_norway::from_str(yaml).expect("yaml")
    }

    #[test]
    fn a_credential_without_a_key_loads_as_kong_generates_one() {
        let k = check_key(&value("tags: [generated]")).expect("Kong loads it");
        assert!(k.key.is_none());
        assert_eq!(
            check_key(&value("key: abc")).expect("ok").key.as_deref(),
            Some("abc")
        );
    }

    #[test]
    fn a_missing_key_or_hmac_secret_is_a_warning_and_an_error_with_strict() {
        let text = "_format_version: \"3.0\"\nconsumers:\n- username: a\n  keyauth_credentials:\n  - tags: [x]\n  - key: k1\n  hmacauth_credentials:\n  - username: h\n";
        let opts = super::super::load_options(vec![]);
        let d = crate::config::load_str(text, "kong.yml", &opts).expect("Kong loads it");
        let w: Vec<_> = d
            .warnings
            .iter()
            .map(|w| (w.line, w.path.as_str()))
            .collect();
        assert_eq!(
            w,
            vec![
                (Some(5), "consumers[0].keyauth_credentials[0]"),
                (Some(8), "consumers[0].hmacauth_credentials[0]"),
            ]
        );
        assert!(d.warnings[0].message.contains("never authenticates"));
        let mut strict = opts;
        strict.strict = true;
        assert!(crate::config::load_str(text, "kong.yml", &strict).is_err());
    }

    #[test]
    fn an_empty_key_is_refused_as_kong_does() {
        match check_key(&value("key: \"\"")) {
            Err(SpecError::Invalid { path, message }) => {
                assert_eq!(path, "key");
                assert!(
                    message.starts_with("length must be at least 1"),
                    "{message}"
                );
            }
            _ => panic!("an empty key must be refused"),
        }
    }
}
