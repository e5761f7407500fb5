//! Kong's `ldap-auth` plugin: `Authorization: ldap base64(username:password)` (or
//! `Proxy-Authorization`; the scheme is `header_type`) checked by binding to an LDAP
//! server as `<attribute>=<username>,<base_dn>` with the password. A bind's outcome,
//! success or refusal, is remembered for `cache_ttl` seconds under a SHA-256 of the
//! server, the DN parts and the credentials (never the password itself).
//!
//! Kong 3.9's answers: 401 `Unauthorized` with `WWW-Authenticate: LDAP` (`header_type`,
//! upper-cased when it is `ldap`; `realm="<realm>"` when set) for a missing, unparsable
//! or refused credential; 500 when the server cannot be reached, a StartTLS is refused,
//! or the credential is not base64 (Kong fails there too). On success the upstream gets
//! `X-Credential-Identifier: <username>` and no consumer (Kong's `set_consumer(nil, ..)`).

mod client;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::header::{AUTHORIZATION, PROXY_AUTHORIZATION};
use serde::Deserialize;
use sha2::Digest;

use super::auth::{self, set_consumer};
use super::{BuildContext, BuildError, Flow, Plugin, SpecError};
use crate::core::Session;
use crate::core::respond::LocalResponse;
use crate::core::state::RequestState;

pub use client::LdapError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub ldap_host: String,
    #[serde(default = "default_port")]
    pub ldap_port: u16,
    #[serde(default)]
    pub ldaps: bool,
    #[serde(default)]
    pub start_tls: bool,
    #[serde(default)]
    pub verify_ldap_host: bool,
    pub base_dn: String,
    pub attribute: String,
    #[serde(default = "default_cache_ttl")]
    pub cache_ttl: f64,
    #[serde(default)]
    pub hide_credentials: bool,
    #[serde(default = "default_timeout")]
    pub timeout: f64,
    #[serde(default = "default_keepalive")]
    pub keepalive: f64,
    pub anonymous: Option<String>,
    #[serde(default = "default_header_type")]
    pub header_type: String,
    pub realm: Option<String>,
}

fn default_port() -> u16 {
    389
}
fn default_cache_ttl() -> f64 {
    60.0
}
fn default_timeout() -> f64 {
    10_000.0
}
fn default_keepalive() -> f64 {
    60_000.0
}
fn default_header_type() -> String {
    "ldap".into()
}

impl Config {
    pub fn validate(&self) -> Result<(), SpecError> {
        let h = &self.ldap_host;
        let host_ok = !h.is_empty()
            && (h.parse::<std::net::IpAddr>().is_ok()
                || h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'));
        if !host_ok {
            return Err(SpecError::at("ldap_host", format!("invalid value: {h}")));
        }
        if self.ldaps && self.start_tls {
            return Err(SpecError::at(
                "start_tls",
                "'ldaps' and 'start_tls' cannot be enabled simultaneously",
            ));
        }
        Ok(())
    }
}

/// A bind's outcome: accepted or not, and until when (None: for ever).
type Outcome = (bool, Option<Instant>);

/// Bind outcomes of one configuration, by cache key. Bounded.
#[derive(Clone, Default)]
struct BindCache(Arc<Mutex<HashMap<[u8; 32], Outcome>>>);

/// Username and password as a header gives them.
type Credentials = (Vec<u8>, Vec<u8>);

const CACHE_MAX: usize = 10_000;

impl BindCache {
    fn get(&self, key: &[u8; 32]) -> Option<bool> {
        let mut m = self.0.lock().ok()?;
        match m.get(key) {
            Some((ok, until)) if until.is_none_or(|t| t > Instant::now()) => Some(*ok),
            Some(_) => {
                m.remove(key);
                None
            }
            None => None,
        }
    }

    fn put(&self, key: [u8; 32], ok: bool, ttl: f64) {
        // mlcache: a ttl of 0 never expires; a negative one is not cached.
        let until = match ttl {
            0.0 => None,
            t if t > 0.0 => Some(Instant::now() + Duration::from_secs_f64(t.min(1e9))),
            _ => return,
        };
        let Ok(mut m) = self.0.lock() else { return };
        if m.len() >= CACHE_MAX {
            let now = Instant::now();
            m.retain(|_, (_, u)| u.is_none_or(|t| t > now));
            if m.len() >= CACHE_MAX {
                m.clear();
            }
        }
        m.insert(key, (ok, until));
    }
}

/// TLS settings shared by the instances of a configuration: (verifying, not verifying).
#[derive(Clone)]
struct TlsConfigs(Arc<rustls::ClientConfig>, Arc<rustls::ClientConfig>);

/// Why authentication failed without an error.
type Failure = &'static str;

pub struct LdapAuth {
    cfg: Config,
    anonymous: auth::Anonymous,
    www_auth: String,
    scheme: Option<regex::bytes::Regex>,
    cache: BindCache,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// Kong's `^(.*?):(.+)$` on the decoded credentials (PCRE: `$` also before a final
/// newline, `.` not a newline).
fn split_credentials(decoded: &[u8]) -> Option<Credentials> {
    static RE: std::sync::LazyLock<Option<regex::bytes::Regex>> =
        std::sync::LazyLock::new(|| regex::bytes::Regex::new(r"(?-u)\A(.*?):(.+)\z").ok());
    let s = decoded.strip_suffix(b"\n").unwrap_or(decoded);
    let m = RE.as_ref()?.captures(s)?;
    Some((m.get(1)?.as_bytes().to_vec(), m.get(2)?.as_bytes().to_vec()))
}

impl LdapAuth {
    pub fn new(cfg: Config, ctx: &BuildContext<'_>) -> Result<LdapAuth, BuildError> {
        if ctx.scope.consumer.is_some() {
            return Err(BuildError::Scope(
                "ldap-auth cannot be configured on a consumer",
            ));
        }
        let anonymous = auth::anonymous(ctx.decl, cfg.anonymous.as_deref());
        // Kong upper-cases the default scheme only (backwards compatibility).
        let scheme = if cfg.header_type == "ldap" {
            "LDAP".to_string()
        } else {
            cfg.header_type.clone()
        };
        let www_auth = match &cfg.realm {
            Some(r) => format!("{scheme} realm=\"{r}\""),
            None => scheme,
        };
        let pattern = format!(
            r"(?-u)\A\s*{}\s+",
            regex::escape(&cfg.header_type.to_ascii_lowercase())
        );
        let tls = if cfg.ldaps || cfg.start_tls {
            let both = ctx.cache.get_or_try_init(|| {
                Ok(TlsConfigs(
                    client::tls_config(true),
                    client::tls_config(false),
                ))
            })?;
            Some(if cfg.verify_ldap_host { both.0 } else { both.1 })
        } else {
            None
        };
        Ok(LdapAuth {
            anonymous,
            www_auth,
            scheme: regex::bytes::Regex::new(&pattern).ok(),
            cache: ctx.cache.get_or_try_init(|| Ok(BindCache::default()))?,
            tls,
            cfg,
        })
    }

    /// Kong's `retrieve_credentials`: `<header_type> <base64(username:password)>`, the
    /// scheme in any case. `Err` when the credential is not base64 (Kong fails there).
    fn retrieve(&self, value: &[u8]) -> Result<Option<Credentials>, LdapError> {
        let lower = value.to_ascii_lowercase();
        let Some(m) = self.scheme.as_ref().and_then(|re| re.find(&lower)) else {
            return Ok(None);
        };
        let Some(decoded) = auth::ngx_decode_base64(&value[m.end()..]) else {
            return Err(LdapError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "credentials are not base64",
            )));
        };
        Ok(split_credentials(&decoded))
    }

    fn cache_key(&self, username: &[u8], password: &[u8]) -> [u8; 32] {
        let mut h = sha2::Sha256::new();
        h.update(self.cfg.ldap_host.to_ascii_lowercase().as_bytes());
        h.update(format!(":{}:", self.cfg.ldap_port).as_bytes());
        h.update(self.cfg.base_dn.as_bytes());
        h.update(b":");
        h.update(self.cfg.attribute.as_bytes());
        h.update(format!(":{}:", self.cfg.cache_ttl).as_bytes());
        h.update(username);
        h.update(b":");
        h.update(password);
        h.finalize().into()
    }

    /// One header's credentials: the username when the directory accepts them.
    async fn check(&self, value: &[u8]) -> Result<Option<Vec<u8>>, LdapError> {
        let Some((username, password)) = self.retrieve(value)? else {
            return Ok(None);
        };
        let key = self.cache_key(&username, &password);
        let ok = match self.cache.get(&key) {
            Some(ok) => ok,
            None => {
                let mut dn = Vec::with_capacity(
                    self.cfg.attribute.len() + username.len() + self.cfg.base_dn.len() + 2,
                );
                dn.extend_from_slice(self.cfg.attribute.as_bytes());
                dn.push(b'=');
                dn.extend_from_slice(&username);
                dn.push(b',');
                dn.extend_from_slice(self.cfg.base_dn.as_bytes());
                let server = client::Server {
                    host: &self.cfg.ldap_host,
                    port: self.cfg.ldap_port,
                    ldaps: self.cfg.ldaps,
                    start_tls: self.cfg.start_tls,
                    tls: self.tls.clone(),
                    timeout: Duration::from_millis(self.cfg.timeout.clamp(1.0, 1e9) as u64),
                };
                // OpenResty's setkeepalive: 0 keeps an idle connection for ever.
                let keepalive = match self.cfg.keepalive {
                    0.0 => None,
                    k => Some(Duration::from_millis(k.clamp(0.0, 1e12) as u64)),
                };
                let ok = client::bind(&server, &dn, &password, keepalive).await?;
                self.cache.put(key, ok, self.cfg.cache_ttl);
                ok
            }
        };
        Ok(ok.then_some(username))
    }

    async fn authenticate(
        &self,
        authorization: Option<Vec<u8>>,
        proxy: Option<Vec<u8>>,
    ) -> Result<Result<String, Failure>, LdapError> {
        if authorization.is_none() && proxy.is_none() {
            return Ok(Err("no_credentials"));
        }
        let mut user = None;
        if let Some(p) = &proxy {
            user = self.check(p).await?;
        }
        if user.is_none()
            && let Some(a) = &authorization
        {
            user = self.check(a).await?;
        }
        match user {
            Some(u) => Ok(Ok(String::from_utf8_lossy(&u).into_owned())),
            None => Ok(Err("invalid_credentials")),
        }
    }
}

#[async_trait]
impl Plugin for LdapAuth {
    // dup: the shape of every plugin file (its own Config, checks and hook types).
    fn name(&self) -> &'static str {
        "ldap-auth"
    }

    fn priority(&self) -> i32 {
        1200
    }

    async fn access(
        &self,
        session: &mut Session,
        st: &mut RequestState,
    ) -> crate::core::Result<Flow> {
        if self.anonymous.is_some() && st.credential.is_some() {
            return Ok(Flow::Continue);
        }
        let headers = &session.req_header().headers;
        let authorization = headers.get(AUTHORIZATION).map(|v| v.as_bytes().to_vec());
        let proxy = headers
            .get(PROXY_AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        match self.authenticate(authorization, proxy).await {
            Ok(Ok(username)) => {
                if self.cfg.hide_credentials {
                    st.strip_upstream.push(AUTHORIZATION);
                    st.strip_upstream.push(PROXY_AUTHORIZATION);
                }
                set_consumer(st, None, Some(username));
                Ok(Flow::Continue)
            }
            Ok(Err(reason)) => Ok(auth::fail(
                session,
                st,
                "ldap-auth",
                reason,
                self.anonymous,
                (401, "Unauthorized", &self.www_auth),
            )),
            Err(e) => {
                tracing::error!(host = %self.cfg.ldap_host, port = self.cfg.ldap_port, error = %e, "ldap-auth: cannot authenticate");
                let accept = session
                    .req_header()
                    .headers
                    .get(http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok());
                Ok(Flow::Respond(LocalResponse::error(
                    500,
                    "An unexpected error occurred",
                    &st.request_id,
                    accept,
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_kong() {
        assert_eq!(
            split_credentials(b"einstein:pass:word"),
            Some((b"einstein".to_vec(), b"pass:word".to_vec()))
        );
        assert_eq!(split_credentials(b":pw\n"), Some((vec![], b"pw".to_vec())));
        // An empty password would be an anonymous bind: never accepted.
        assert_eq!(split_credentials(b"einstein:"), None);
        assert_eq!(split_credentials(b"einstein"), None);
        assert_eq!(split_credentials(b"a:b\nc"), None);
    }

    #[test]
    fn config_rules() {
        let v: serde_norway::Value = serde_norway::from_str(
            "{ldap_host: ldap.example.com, base_dn: 'dc=x', attribute: uid, ldaps: true, start_tls: true}",
        )
        .expect("yaml");
        let c: Config = super::super::parse_config(&v).expect("config");
        assert_eq!(
            (c.ldap_port, c.cache_ttl, c.header_type.as_str()),
            (389, 60.0, "ldap")
        );
        assert!(
            matches!(c.validate(), Err(SpecError::Invalid { path, .. }) if path == "start_tls")
        );
        let v: serde_norway::Value =
            serde_norway::from_str("{base_dn: 'dc=x', attribute: uid}").expect("yaml");
        assert!(super::super::parse_config::<Config>(&v).is_err());
    }
}
