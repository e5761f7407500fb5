//! Kong's `basic-auth` plugin: `Authorization: Basic base64(username:password)` (or
//! `Proxy-Authorization`) checked against consumers' `basicauth_credentials`.
//!
//! Passwords are kept only as Kong stores them: the hex SHA-1 of the password followed by
//! the consumer's id (Kong's `crypto.hash`), computed when the configuration is loaded
//! (Kong's on-load transformation; skipped under `_transform: false`, as `kong config
//! db_export` writes stored hashes), and compared in constant time. Statuses, bodies and `WWW-Authenticate` as Kong
//! 3.9 sends them: every failure is 401 `Unauthorized` with `Basic realm="<realm>"`.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use http::HeaderName;
use http::header::{AUTHORIZATION, PROXY_AUTHORIZATION};
use serde::Deserialize;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use super::auth::{self, set_consumer};
use super::{BuildContext, BuildError, Flow, Plugin, SpecError};
use crate::core::Session;
use crate::core::state::RequestState;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub anonymous: Option<String>,
    #[serde(default)]
    pub hide_credentials: bool,
    #[serde(default = "default_realm")]
    pub realm: String,
}

fn default_realm() -> String {
    "service".into()
}

// dup: the shape of every plugin file (its own Config, checks and hook types).
/// A `basicauth_credentials` entry (no `Debug`: it holds a password or its hash).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicDef {
    pub username: Option<String>,
    pub password: Option<String>,
    pub id: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub created_at: Option<i64>,
}

/// Checks one credential entity: Kong requires `username` and `password`.
pub fn check_credential(v: &serde_norway::Value) -> Result<BasicDef, SpecError> {
    let c: BasicDef = super::parse_config(v)?;
    if c.username.is_none() {
        return Err(SpecError::at("username", "required field missing"));
    }
    if c.password.is_none() {
        return Err(SpecError::at("password", "required field missing"));
    }
    Ok(c)
}

/// Kong's on-load transformation of a `basicauth_credentials` entry: the password is
/// replaced by its hash, so the loaded configuration never holds it.
pub fn hash_stored_password(consumer_id: &str, value: &mut serde_norway::Value) {
    if let Some(p) = value.get_mut("password")
        && let Some(plain) = p.as_str()
    {
        *p = serde_norway::Value::String(hash_password(consumer_id, plain.as_bytes()));
    }
}

/// Kong's `crypto.hash`: hex SHA-1 of the password followed by the consumer id.
pub fn hash_password(consumer_id: &str, password: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(password);
    h.update(consumer_id.as_bytes());
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// One credential: its consumer and the stored password hash (never the password).
struct Credential {
    consumer: usize,
    /// The consumer's id: the salt of the hash.
    consumer_id: Box<str>,
    username: String,
    hash: Box<str>,
}

/// Every basic-auth credential of a configuration, by username (shared by every instance).
#[derive(Clone)]
struct CredentialTable(Arc<HashMap<Box<[u8]>, Credential>>);

impl CredentialTable {
    fn build(ctx: &BuildContext<'_>) -> Result<CredentialTable, BuildError> {
        let decl = ctx.decl;
        let mut map = HashMap::with_capacity(decl.basicauth_credentials.len());
        for c in &decl.basicauth_credentials {
            let def = check_credential(&c.value).map_err(|source| BuildError::Credential {
                path: c.path.clone(),
                source,
            })?;
            let username = def.username.unwrap_or_default();
            // Hashed when the configuration was loaded (`hash_stored_password`), or a
            // stored hash already (`_transform: false`).
            let hash = def.password.unwrap_or_default();
            map.insert(
                username.as_bytes().into(),
                Credential {
                    consumer: c.consumer,
                    consumer_id: decl
                        .consumers
                        .get(c.consumer)
                        .map(|k| k.id.as_str())
                        .unwrap_or_default()
                        .into(),
                    username,
                    hash: hash.into(),
                },
            );
        }
        Ok(CredentialTable(Arc::new(map)))
    }
}

/// Kong's `\s*[Bb]asic\s*(.+)`, searched anywhere in the header (PCRE semantics: `.` stops
/// at a newline, `\s` is ASCII).
static BASIC: LazyLock<Option<regex::bytes::Regex>> =
    LazyLock::new(|| regex::bytes::Regex::new(r"(?-u)\s*[Bb]asic\s*(.+)").ok());
/// Kong's `([^:]+):(.*)` on the decoded value.
static USER_PASS: LazyLock<Option<regex::bytes::Regex>> =
    LazyLock::new(|| regex::bytes::Regex::new(r"(?-u)([^:]+):(.*)").ok());

/// Username and password from one header value, as Kong's `retrieve_credentials` reads
/// them (None when the header has no usable Basic credentials).
pub fn parse_basic(value: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let b64 = BASIC.as_ref()?.captures(value)?.get(1)?.as_bytes();
    let decoded = auth::ngx_decode_base64(b64)?;
    let m = USER_PASS.as_ref()?.captures(&decoded)?;
    Some((m.get(1)?.as_bytes().to_vec(), m.get(2)?.as_bytes().to_vec()))
}

// dup: the shape of every plugin file (its own Config, checks and hook types).
pub struct BasicAuth {
    cfg: Config,
    table: CredentialTable,
    anonymous: auth::Anonymous,
    www_auth: String,
}

impl BasicAuth {
    pub fn new(cfg: Config, ctx: &BuildContext<'_>) -> Result<BasicAuth, BuildError> {
        if ctx.scope.consumer.is_some() {
            return Err(BuildError::Scope(
                "basic-auth cannot be configured on a consumer",
            ));
        }
        let table = ctx.cache.get_or_try_init(|| CredentialTable::build(ctx))?;
        let anonymous = auth::anonymous(ctx.decl, cfg.anonymous.as_deref());
        Ok(BasicAuth {
            www_auth: format!("Basic realm=\"{}\"", cfg.realm),
            table,
            anonymous,
            cfg,
        })
    }

    /// Kong's `retrieve_credentials`: parses one header and, with `hide_credentials`,
    /// removes it upstream whatever it held.
    fn retrieve(
        &self,
        session: &Session,
        st: &mut RequestState,
        name: HeaderName,
    ) -> Option<(Vec<u8>, Vec<u8>)> {
        let found = session
            .req_header()
            .headers
            .get(&name)
            .and_then(|v| parse_basic(v.as_bytes()));
        if self.cfg.hide_credentials {
            st.strip_upstream.push(name);
        }
        found
    }

    /// The authenticated credential, or why not (`no_credentials`, `invalid_credentials`).
    fn authenticate(
        &self,
        session: &Session,
        st: &mut RequestState,
    ) -> Result<&Credential, &'static str> {
        let headers = &session.req_header().headers;
        if !headers.contains_key(AUTHORIZATION) && !headers.contains_key(PROXY_AUTHORIZATION) {
            return Err("no_credentials");
        }
        let mut given = self.retrieve(session, st, PROXY_AUTHORIZATION);
        let mut cred = given
            .as_ref()
            .and_then(|(u, _)| self.table.0.get(u.as_slice()));
        if cred.is_none() {
            given = self.retrieve(session, st, AUTHORIZATION);
            let Some((u, _)) = &given else {
                return Err("no_credentials");
            };
            cred = self.table.0.get(u.as_slice());
        }
        let (Some(cred), Some((_, password))) = (cred, given) else {
            return Err("invalid_credentials");
        };
        let digest = hash_password(&cred.consumer_id, &password);
        if bool::from(digest.as_bytes().ct_eq(cred.hash.as_bytes())) {
            Ok(cred)
        } else {
            Err("invalid_credentials")
        }
    }
}

#[async_trait]
impl Plugin for BasicAuth {
    // dup: the shape of every plugin file (its own Config, checks and hook types).
    fn name(&self) -> &'static str {
        "basic-auth"
    }

    fn priority(&self) -> i32 {
        1100
    }

    async fn access(
        &self,
        session: &mut Session,
        st: &mut RequestState,
    ) -> crate::core::Result<Flow> {
        if self.anonymous.is_some() && st.credential.is_some() {
            return Ok(Flow::Continue);
        }
        match self.authenticate(session, st) {
            Ok(cred) => {
                let (consumer, username) = (cred.consumer, cred.username.clone());
                set_consumer(st, Some(consumer), Some(username));
                Ok(Flow::Continue)
            }
            Err(reason) => Ok(auth::fail(
                session,
                st,
                "basic-auth",
                reason,
                self.anonymous,
                (401, "Unauthorized", &self.www_auth),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn b64(s: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn kong_hash() {
        // sha1("secret" .. "c0ffee") as Kong's crypto.hash computes it.
        assert_eq!(
            hash_password("c0ffee", b"secret"),
            hex(&Sha1::digest(b"secretc0ffee"))
        );
        assert_eq!(hash_password("", b"").len(), 40);
    }

    #[test]
    fn parses_like_kong() {
        let v = format!("Basic {}", b64(b"alice:pa:ss"));
        assert_eq!(
            parse_basic(v.as_bytes()),
            Some((b"alice".to_vec(), b"pa:ss".to_vec()))
        );
        // Lower-case scheme, no padding, empty password.
        let v = format!("basic {}", b64(b"bob:").trim_end_matches('='));
        assert_eq!(parse_basic(v.as_bytes()), Some((b"bob".to_vec(), vec![])));
        // Leading colons are skipped by the unanchored match.
        let v = format!("Basic {}", b64(b"::u:p"));
        assert_eq!(
            parse_basic(v.as_bytes()),
            Some((b"u".to_vec(), b"p".to_vec()))
        );
        // No colon, bad base64, another scheme.
        assert_eq!(
            parse_basic(format!("Basic {}", b64(b"nocolon")).as_bytes()),
            None
        );
        assert_eq!(parse_basic(b"Basic !!!"), None);
        assert_eq!(parse_basic(b"Bearer abc"), None);
        // The password stops at a newline (`.` in PCRE).
        let v = format!("Basic {}", b64(b"u:p1\np2"));
        assert_eq!(
            parse_basic(v.as_bytes()),
            Some((b"u".to_vec(), b"p1".to_vec()))
        );
    }

    #[test]
    fn loaded_configuration_holds_only_hashes() {
        let text = "_format_version: \"3.0\"\nconsumers:\n- username: a\n  id: c0ffee\n  basicauth_credentials:\n  - {username: a, password: secret}\n";
        let d = crate::config::load_str(text, "kong.yml", &super::super::load_options(vec![]))
            .expect("load");
        let stored = d.basicauth_credentials[0].value["password"].as_str();
        assert_eq!(stored, Some(hash_password("c0ffee", b"secret").as_str()));
        assert!(!format!("{:?}", d.basicauth_credentials).contains("secret"));
        // `_transform: false`: the value is a stored hash already.
        let d = crate::config::load_str(
            &text.replace("\"3.0\"\n", "\"3.0\"\n_transform: false\n"),
            "kong.yml",
            &super::super::load_options(vec![]),
        )
        .expect("load");
        assert_eq!(
            d.basicauth_credentials[0].value["password"].as_str(),
            Some("secret")
        );
    }

    #[test]
    fn config_defaults_and_credentials() {
        let c: Config = super::super::parse_config(&serde_norway::Value::Null).expect("config");
        assert_eq!(c.realm, "service");
        assert!(!c.hide_credentials);
        let v: serde_norway::Value = serde_norway::from_str("username: a").expect("yaml");
        assert!(
            matches!(check_credential(&v), Err(SpecError::Invalid { path, .. }) if path == "password")
        );
    }
}
