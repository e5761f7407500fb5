//! Kong's `jwt` plugin, on jsonwebtoken, with Kong 3.9's statuses, bodies and
//! `WWW-Authenticate` values; plus JWKS, issuer/audience checks, clock-skew leeway and
//! claims forwarded as upstream headers.
//!
//! The algorithm always comes from the credential (or the JWKS key), never from the
//! token: a token whose `alg` differs is rejected, so `none` and HS-signed-with-a-public-key
//! tokens cannot pass.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::core::Session;
use async_trait::async_trait;
use base64::Engine;
use http::HeaderName;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::{Map, Value as Json};

use super::auth::{self, set_consumer};
use super::jwks::Jwks;
use super::{BuildContext, BuildError, Flow, Plugin, SpecError};
use crate::core::respond::LocalResponse;
use crate::core::state::RequestState;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_uri_params")]
    pub uri_param_names: Vec<String>,
    #[serde(default)]
    pub cookie_names: Vec<String>,
    #[serde(default = "default_header_names")]
    pub header_names: Vec<String>,
    #[serde(default = "default_key_claim")]
    pub key_claim_name: String,
    #[serde(default)]
    pub secret_is_base64: bool,
    #[serde(default)]
    pub claims_to_verify: Vec<String>,
    pub anonymous: Option<String>,
    #[serde(default = "default_true")]
    pub run_on_preflight: bool,
    #[serde(default)]
    pub maximum_expiration: u64,
    pub realm: Option<String>,
    /// Extension: a JWKS endpoint whose keys (selected by `kid`) verify tokens.
    pub jwks_uri: Option<String>,
    /// Extension: seconds between scheduled JWKS refreshes.
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_interval: u64,
    /// Extension: least seconds between refreshes triggered by unknown `kid`s.
    #[serde(default = "default_jwks_min_refresh")]
    pub jwks_min_refresh_interval: u64,
    /// Extension: accepted `iss` values (empty: not checked).
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Extension: accepted `aud` values (empty: not checked).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Extension: clock-skew allowance in seconds for `exp` and `nbf`.
    #[serde(default)]
    pub leeway: u64,
    /// Extension: claims sent upstream as headers, e.g. `{sub: X-User-ID, tier: X-User-Tier}`.
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
}

fn default_uri_params() -> Vec<String> {
    vec!["jwt".into()]
}
fn default_header_names() -> Vec<String> {
    vec!["authorization".into()]
}
fn default_key_claim() -> String {
    "iss".into()
}
fn default_true() -> bool {
    true
}
fn default_jwks_refresh() -> u64 {
    300
}
fn default_jwks_min_refresh() -> u64 {
    10
}

impl Config {
    pub fn validate(&self) -> Result<(), SpecError> {
        for (i, c) in self.claims_to_verify.iter().enumerate() {
            if c != "exp" && c != "nbf" {
                return Err(SpecError::at(
                    format!("claims_to_verify[{i}]"),
                    "expected one of: exp, nbf",
                ));
            }
        }
        if self.maximum_expiration > 31_536_000 {
            return Err(SpecError::at(
                "maximum_expiration",
                "value should be between 0 and 31536000",
            ));
        }
        if self.maximum_expiration > 0 && !self.claims_to_verify.iter().any(|c| c == "exp") {
            return Err(SpecError::at(
                "claims_to_verify",
                "expected to contain: exp (maximum_expiration is set)",
            ));
        }
        for (i, h) in self.header_names.iter().enumerate() {
            if HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(SpecError::at(
                    format!("header_names[{i}]"),
                    "not a valid header name",
                ));
            }
        }
        for (claim, h) in &self.claims_to_headers {
            if HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(SpecError::at(
                    format!("claims_to_headers.{claim}"),
                    "not a valid header name",
                ));
            }
        }
        if let Some(u) = &self.jwks_uri {
            let ok = u.parse::<http::Uri>().ok().is_some_and(|uri| {
                matches!(uri.scheme_str(), Some("http") | Some("https")) && uri.host().is_some()
            });
            if !ok {
                return Err(SpecError::at("jwks_uri", "expected an http(s) URL"));
            }
            // Keys fetched in clear text could be replaced by anyone on the path: https
            // only, except on loopback (tests, a local sidecar).
            let loopback_http = u.parse::<http::Uri>().ok().is_some_and(|uri| {
                uri.scheme_str() == Some("http")
                    && uri.host().is_some_and(|h| {
                        let h = h.trim_start_matches('[').trim_end_matches(']');
                        h == "localhost"
                            || h.parse::<std::net::IpAddr>()
                                .is_ok_and(|ip| ip.is_loopback())
                    })
            });
            if !u.starts_with("https://") && !loopback_http {
                return Err(SpecError::at(
                    "jwks_uri",
                    "must use https (plain http is accepted only for loopback addresses)",
                ));
            }
            if self.jwks_refresh_interval == 0 {
                return Err(SpecError::at(
                    "jwks_refresh_interval",
                    "must be at least 1 second",
                ));
            }
        }
        Ok(())
    }
}

/// A `jwt_secrets` credential as written under a consumer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretDef {
    pub key: Option<String>,
    pub secret: Option<String>,
    pub rsa_public_key: Option<String>,
    #[serde(default = "default_alg")]
    pub algorithm: String,
    pub id: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub created_at: Option<i64>,
}

fn default_alg() -> String {
    "HS256".into()
}

/// A token's or credential's algorithm: jsonwebtoken's, or ES512 (ECDSA P-521 with
/// SHA-512), which Kong accepts and jsonwebtoken does not implement; verified with
/// aws-lc-rs directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    Jwt(Algorithm),
    Es512,
}

pub fn parse_alg(s: &str) -> Option<Alg> {
    if s == "ES512" {
        return Some(Alg::Es512);
    }
    parse_jwt_alg(s).map(Alg::Jwt)
}

fn parse_jwt_alg(s: &str) -> Option<Algorithm> {
    Some(match s {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

fn is_hmac(a: Alg) -> bool {
    matches!(
        a,
        Alg::Jwt(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
    )
}

/// A credential's verification key.
enum Key {
    Jwt(DecodingKey),
    /// The uncompressed P-521 point (`04 || X || Y`, 133 bytes).
    P521(Vec<u8>),
}

/// The P-521 public point of a PEM `PUBLIC KEY` (SubjectPublicKeyInfo): the curve's OID
/// must be there and the key's BIT STRING, which ends the structure, holds the point.
/// Why a credential's public key cannot be used.
#[derive(Debug, thiserror::Error)]
enum KeyError {
    #[error("not a PEM PUBLIC KEY")]
    NotPem,
    #[error("not a P-521 (secp521r1) key")]
    NotP521,
    #[error("no uncompressed P-521 point")]
    NoPoint,
    #[error(transparent)]
    Jwt(#[from] jsonwebtoken::errors::Error),
}

fn p521_point(pem: &str) -> Result<Vec<u8>, KeyError> {
    use base64::Engine;
    const OID_P521: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];
    const POINT: usize = 133;
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "-----BEGIN PUBLIC KEY-----")
        .skip(1)
        .take_while(|l| *l != "-----END PUBLIC KEY-----")
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .map_err(|_| KeyError::NotPem)?;
    if !der.windows(OID_P521.len()).any(|w| w == OID_P521) {
        return Err(KeyError::NotP521);
    }
    // ... 03 <len> 00 04 X Y
    let n = der.len();
    if n < POINT + 2 || der[n - POINT - 1] != 0 || der[n - POINT] != 4 {
        return Err(KeyError::NoPoint);
    }
    Ok(der[n - POINT..].to_vec())
}

/// Verifies a token's signature (base64url, as in the token) over `message`.
fn verify_sig(sig: &str, message: &[u8], key: &Key, alg: Alg) -> bool {
    match (key, alg) {
        (Key::Jwt(k), Alg::Jwt(a)) => {
            jsonwebtoken::crypto::verify(sig, message, k, a).unwrap_or(false)
        }
        (Key::P521(point), Alg::Es512) => {
            use aws_lc_rs::signature::{ECDSA_P521_SHA512_FIXED, UnparsedPublicKey};
            let Some(raw) = b64_any(sig) else {
                return false;
            };
            UnparsedPublicKey::new(&ECDSA_P521_SHA512_FIXED, point)
                .verify(message, &raw)
                .is_ok()
        }
        _ => false,
    }
}

/// Checks a credential at configuration load: algorithm known, key material present and
/// parseable (a bad PEM fails `gateway check` with the field's path).
pub fn check_secret(v: &serde_norway::Value) -> Result<SecretDef, SpecError> {
    let s: SecretDef = super::parse_config(v)?;
    if s.key.as_deref().is_none_or(str::is_empty) {
        return Err(SpecError::at(
            "key",
            "required: the value clients put in the key claim (`iss` by default)",
        ));
    }
    let Some(alg) = parse_alg(&s.algorithm) else {
        return Err(SpecError::at(
            "algorithm",
            format!(
                "unsupported algorithm `{}`: expected HS256/384/512, RS256/384/512, PS256/384/512, ES256/384/512 or EdDSA",
                s.algorithm
            ),
        ));
    };
    if is_hmac(alg) {
        if s.secret.as_deref().is_none_or(str::is_empty) {
            return Err(SpecError::at(
                "secret",
                format!("required for {}", s.algorithm),
            ));
        }
    } else {
        let Some(pem) = &s.rsa_public_key else {
            return Err(SpecError::at(
                "rsa_public_key",
                format!("required for {}", s.algorithm),
            ));
        };
        public_key(alg, pem).map_err(|e| {
            SpecError::at(
                "rsa_public_key",
                format!("invalid public key for {}: {e}", s.algorithm),
            )
        })?;
    }
    Ok(s)
}

fn public_key(alg: Alg, pem: &str) -> Result<Key, KeyError> {
    let a = match alg {
        Alg::Es512 => return p521_point(pem).map(Key::P521),
        Alg::Jwt(a) => a,
    };
    match a {
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem.as_bytes()),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem.as_bytes()),
        _ => DecodingKey::from_rsa_pem(pem.as_bytes()),
    }
    .map(Key::Jwt)
    .map_err(KeyError::from)
}

struct Cred {
    consumer: usize,
    alg: Alg,
    key: Option<Key>,
}

pub struct Jwt {
    cfg: Config,
    creds: Arc<HashMap<String, Cred>>,
    anonymous: auth::Anonymous,
    jwks: Option<Arc<Jwks>>,
    header_names: Vec<HeaderName>,
    claim_headers: Vec<(String, HeaderName)>,
    www_auth: String,
    www_auth_invalid: String,
}

/// Why authentication failed; `reason` labels the failure metric.
/// A token `verify_offline` rejects: the JSON body Kong would answer with.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub Json);

struct Failure {
    reason: &'static str,
    body: Json,
    invalid_token: bool,
}

fn fail(reason: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        reason,
        body: serde_json::json!({ "message": message.into() }),
        invalid_token: true,
    }
}

/// The jwt credentials of a configuration, by `key`, for `secret_is_base64: false`.
#[derive(Clone)]
struct CredsPlain(Arc<HashMap<String, Cred>>);
/// The same for `secret_is_base64: true`.
#[derive(Clone)]
struct CredsB64(Arc<HashMap<String, Cred>>);

impl Jwt {
    pub fn new(cfg: Config, ctx: &BuildContext<'_>) -> Result<Jwt, BuildError> {
        let build = || -> Result<Arc<HashMap<String, Cred>>, BuildError> {
            let mut creds = HashMap::with_capacity(ctx.decl.jwt_secrets.len());
            for c in &ctx.decl.jwt_secrets {
                let s = check_secret(&c.value).map_err(|source| BuildError::Credential {
                    path: c.path.clone(),
                    source,
                })?;
                let alg = parse_alg(&s.algorithm).ok_or_else(|| BuildError::Credential {
                    path: c.path.clone(),
                    source: SpecError::at("algorithm", "bad algorithm"),
                })?;
                let key = if is_hmac(alg) {
                    let raw = s.secret.clone().unwrap_or_default();
                    if cfg.secret_is_base64 {
                        b64_any(&raw).map(|b| Key::Jwt(DecodingKey::from_secret(&b)))
                    } else {
                        Some(Key::Jwt(DecodingKey::from_secret(raw.as_bytes())))
                    }
                } else {
                    s.rsa_public_key
                        .as_deref()
                        .and_then(|p| public_key(alg, p).ok())
                };
                creds.insert(
                    s.key.clone().unwrap_or_default(),
                    Cred {
                        consumer: c.consumer,
                        alg,
                        key,
                    },
                );
            }
            Ok(Arc::new(creds))
        };
        // The table depends on `secret_is_base64`: one shared table per setting.
        let creds = if cfg.secret_is_base64 {
            ctx.cache.get_or_try_init(|| build().map(CredsB64))?.0
        } else {
            ctx.cache.get_or_try_init(|| build().map(CredsPlain))?.0
        };
        let anonymous = auth::anonymous(ctx.decl, cfg.anonymous.as_deref());
        let jwks = match &cfg.jwks_uri {
            Some(u) => {
                let j = Jwks::new(
                    u.clone(),
                    Duration::from_secs(cfg.jwks_refresh_interval),
                    Duration::from_secs(cfg.jwks_min_refresh_interval),
                )
                .map_err(BuildError::other)?;
                if let Some(rt) = ctx.bg {
                    j.spawn_refresher(rt);
                }
                Some(j)
            }
            None => None,
        };
        let base = match &cfg.realm {
            Some(r) => format!("Bearer realm=\"{r}\""),
            None => "Bearer".to_string(),
        };
        Ok(Jwt {
            header_names: cfg
                .header_names
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).ok())
                .collect(),
            claim_headers: cfg
                .claims_to_headers
                .iter()
                .filter_map(|(c, h)| {
                    Some((
                        c.clone(),
                        HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).ok()?,
                    ))
                })
                .collect(),
            www_auth_invalid: format!("{base} error=\"invalid_token\""),
            www_auth: base,
            creds,
            anonymous,
            jwks,
            cfg,
        })
    }

    /// Kong's token search: query parameters, then cookies, then `Bearer` headers.
    fn tokens(&self, session: &Session) -> Vec<String> {
        let req = session.req_header();
        let mut out: Vec<String> = Vec::new();
        let mut add = |t: &str| {
            if !t.is_empty() && !out.iter().any(|x| x == t) {
                out.push(t.to_string());
            }
        };
        if !self.cfg.uri_param_names.is_empty() && req.uri.query().is_some() {
            for (k, v) in auth::query_params(req.uri.query()) {
                if self.cfg.uri_param_names.contains(&k) {
                    add(&v);
                }
            }
        }
        for name in &self.cfg.cookie_names {
            if let Some(v) = auth::cookie(&req.headers, name) {
                add(v);
            }
        }
        for h in &self.header_names {
            if let Some(v) = req.headers.get(h).and_then(|v| v.to_str().ok())
                && let Some(t) = bearer(v)
            {
                add(t);
            }
        }
        out
    }

    async fn authenticate(&self, session: &Session, st: &mut RequestState) -> Result<(), Failure> {
        let tokens = self.tokens(session);
        let token = match tokens.len() {
            0 => {
                return Err(Failure {
                    reason: "no_token",
                    body: serde_json::json!({"message": "Unauthorized"}),
                    invalid_token: false,
                });
            }
            1 => &tokens[0],
            _ => return Err(fail("multiple_tokens", "Multiple tokens provided")),
        };
        let p = parse_token(token)?;
        let (header, claims, token_alg, s64) = (&p.header, &p.claims, p.alg, p.sig);
        let message = p.message;
        let kc = &self.cfg.key_claim_name;
        let key_value = claims.get(kc).or_else(|| header.get(kc)).map(|v| match v {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        });

        // JWKS first when the token names a key id.
        let mut verified: Option<(Option<usize>, String)> = None;
        if let (Some(jwks), Some(kid)) = (&self.jwks, header.get("kid").and_then(Json::as_str))
            && let Some(k) = jwks.key(kid).await
        {
            let Alg::Jwt(token_alg) = token_alg else {
                return Err(fail("invalid_algorithm", "Invalid algorithm"));
            };
            if k.alg != token_alg {
                return Err(fail("invalid_algorithm", "Invalid algorithm"));
            }
            if !jsonwebtoken::crypto::verify(s64, message.as_bytes(), &k.key, k.alg)
                .unwrap_or(false)
            {
                return Err(fail("bad_signature", "Invalid signature"));
            }
            let consumer = key_value
                .as_ref()
                .and_then(|kv| self.creds.get(kv))
                .map(|c| c.consumer);
            // Without a consumer, the credential names the subject (not only the key), so
            // limits by credential are per user, not one bucket per signing key.
            let credential = match (consumer, claims.get("sub").and_then(Json::as_str)) {
                (None, Some(sub)) => format!("{kid}:{sub}"),
                _ => kid.to_string(),
            };
            verified = Some((consumer, credential));
            // A key-set token must carry a valid `exp` unless `claims_to_verify` was set
            // explicitly (an identity provider's token never lives forever).
            if self.cfg.claims_to_verify.is_empty() {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0)
                    .floor();
                let msg = match claims.get("exp").and_then(Json::as_f64) {
                    None => Some(("bad_claim", "must be a number")),
                    Some(exp) if exp + self.cfg.leeway as f64 <= now => {
                        Some(("expired", "token expired"))
                    }
                    Some(_) => None,
                };
                if let Some((reason, m)) = msg {
                    return Err(Failure {
                        reason,
                        body: serde_json::json!({ "exp": m }),
                        invalid_token: true,
                    });
                }
            }
        }
        if verified.is_none() {
            verified = Some(self.verify_with_credential(&p, key_value)?);
        }
        self.check_claims(claims)?;
        let (consumer, credential) = verified.unwrap_or((None, String::new()));
        set_consumer(st, consumer, Some(credential));
        for (claim, h) in &self.claim_headers {
            if let Some(v) = claims.get(claim) {
                let s = match v {
                    Json::String(s) => s.clone(),
                    other => other.to_string(),
                };
                // A value that cannot be a header (CR, LF, NUL...) is a bad token, not a
                // gateway error.
                if http::HeaderValue::from_str(&s).is_err() {
                    return Err(fail("bad_claim", "Invalid claim"));
                }
                st.upstream_headers.push((h.clone(), s));
            }
        }
        st.jwt_claims = Some(Arc::new(p.claims));
        Ok(())
    }

    /// Verifies a token against the static credentials (`jwt_secrets`).
    fn verify_with_credential(
        &self,
        p: &Parsed<'_>,
        key_value: Option<String>,
    ) -> Result<(Option<usize>, String), Failure> {
        let kc = &self.cfg.key_claim_name;
        let Some(kv) = key_value else {
            return Err(fail(
                "no_key_claim",
                format!("No mandatory '{kc}' in claims"),
            ));
        };
        if kv.is_empty() {
            return Err(fail("no_key_claim", format!("Invalid '{kc}' in claims")));
        }
        let Some(cred) = self.creds.get(&kv) else {
            return Err(fail(
                "unknown_key",
                format!("No credentials found for given '{kc}'"),
            ));
        };
        if cred.alg != p.alg {
            return Err(fail("invalid_algorithm", "Invalid algorithm"));
        }
        let Some(key) = &cred.key else {
            return Err(fail("invalid_key", "Invalid key/secret"));
        };
        if !verify_sig(p.sig, p.message.as_bytes(), key, cred.alg) {
            return Err(fail("bad_signature", "Invalid signature"));
        }
        Ok((Some(cred.consumer), kv))
    }

    /// The whole offline check of one token (parse, credential, signature, claims), as a
    /// request runs it; used by the micro-benchmark.
    pub fn verify_offline(&self, token: &str) -> Result<(), Rejected> {
        let p = parse_token(token).map_err(|f| Rejected(f.body))?;
        let kc = &self.cfg.key_claim_name;
        let kv = p
            .claims
            .get(kc)
            .or_else(|| p.header.get(kc))
            .and_then(Json::as_str)
            .map(str::to_string);
        self.verify_with_credential(&p, kv)
            .map_err(|f| Rejected(f.body))?;
        self.check_claims(&p.claims).map_err(|f| Rejected(f.body))
    }

    fn check_claims(&self, claims: &Map<String, Json>) -> Result<(), Failure> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
            .floor();
        let leeway = self.cfg.leeway as f64;
        let mut errors = Map::new();
        let mut reason = "";
        for c in &self.cfg.claims_to_verify {
            match claims.get(c).and_then(Json::as_f64) {
                None => {
                    errors.insert(c.clone(), Json::String("must be a number".into()));
                    reason = "bad_claim";
                }
                Some(v) if c == "exp" && v + leeway <= now => {
                    errors.insert(c.clone(), Json::String("token expired".into()));
                    reason = "expired";
                }
                Some(v) if c == "nbf" && v - leeway > now => {
                    errors.insert(c.clone(), Json::String("token not valid yet".into()));
                    reason = "not_yet_valid";
                }
                _ => {}
            }
        }
        if !errors.is_empty() {
            return Err(Failure {
                reason,
                body: Json::Object(errors),
                invalid_token: true,
            });
        }
        if self.cfg.maximum_expiration > 0 {
            let too_long = claims
                .get("exp")
                .and_then(Json::as_f64)
                .is_none_or(|exp| exp - now > self.cfg.maximum_expiration as f64);
            if too_long {
                return Err(Failure {
                    reason: "exp_too_long",
                    body: serde_json::json!({"exp": "exceeds maximum allowed expiration"}),
                    invalid_token: true,
                });
            }
        }
        if !self.cfg.issuers.is_empty() {
            let ok = claims
                .get("iss")
                .and_then(Json::as_str)
                .is_some_and(|i| self.cfg.issuers.iter().any(|x| x == i));
            if !ok {
                return Err(fail("issuer", "Invalid issuer"));
            }
        }
        if !self.cfg.audiences.is_empty() {
            let ok = match claims.get("aud") {
                Some(Json::String(a)) => self.cfg.audiences.contains(a),
                Some(Json::Array(list)) => list
                    .iter()
                    .filter_map(Json::as_str)
                    .any(|a| self.cfg.audiences.iter().any(|x| x == a)),
                _ => false,
            };
            if !ok {
                return Err(fail("audience", "Invalid audience"));
            }
        }
        Ok(())
    }
}

/// A decoded (not yet verified) token.
struct Parsed<'a> {
    header: Map<String, Json>,
    claims: Map<String, Json>,
    alg: Alg,
    sig: &'a str,
    /// `header.claims`, the signed part.
    message: &'a str,
}

/// Kong's decode step: three dot-separated parts, JSON header and claims, a supported alg.
fn parse_token(token: &str) -> Result<Parsed<'_>, Failure> {
    let mut parts = token.splitn(3, '.');
    let (h64, c64, s64) = (parts.next().unwrap_or(""), parts.next(), parts.next());
    let (Some(c64), Some(s64)) = (c64, s64) else {
        return Err(fail("bad_token", "Bad token; invalid JSON"));
    };
    let header = decode_json(h64).ok_or_else(|| fail("bad_token", "Bad token; invalid JSON"))?;
    let claims = decode_json(c64).ok_or_else(|| fail("bad_token", "Bad token; invalid JSON"))?;
    let alg = header
        .get("alg")
        .and_then(Json::as_str)
        .and_then(parse_alg)
        .ok_or_else(|| fail("bad_token", "Bad token; invalid alg"))?;
    if b64_any(s64).is_none() {
        return Err(fail("bad_token", "Bad token; invalid signature"));
    }
    Ok(Parsed {
        header,
        claims,
        alg,
        sig: s64,
        message: &token[..h64.len() + 1 + c64.len()],
    })
}

/// `\s*[Bb]earer\s+(.+)`, searched anywhere in the value as Kong's regex does.
#[doc(hidden)] // public for the fuzz targets (fuzz/)
pub fn bearer(v: &str) -> Option<&str> {
    let bytes = v.as_bytes();
    let mut i = 0;
    while i + 6 <= bytes.len() {
        if (bytes[i] == b'B' || bytes[i] == b'b') && &bytes[i + 1..i + 6] == b"earer" {
            let rest = &v[i + 6..];
            let trimmed = rest.trim_start_matches([' ', '\t']);
            if trimmed.len() < rest.len() && !trimmed.is_empty() {
                return Some(trimmed);
            }
        }
        i += 1;
    }
    None
}

/// Base64 as Kong decodes JWT segments: URL-safe or standard alphabet, padding optional.
fn b64_any(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let t = s.trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(t)
        .or_else(|_| STANDARD_NO_PAD.decode(t))
        .ok()
}

fn decode_json(seg: &str) -> Option<Map<String, Json>> {
    match serde_json::from_slice::<Json>(&b64_any(seg)?).ok()? {
        Json::Object(m) => Some(m),
        _ => None,
    }
}

#[async_trait]
impl Plugin for Jwt {
    fn identity_headers(&self) -> Vec<HeaderName> {
        self.claim_headers.iter().map(|(_, h)| h.clone()).collect()
    }

    fn name(&self) -> &'static str {
        "jwt"
    }

    fn priority(&self) -> i32 {
        1450
    }

    async fn access(
        &self,
        session: &mut Session,
        st: &mut RequestState,
    ) -> crate::core::Result<Flow> {
        // Claim headers are ours alone: a client copy never reaches the upstream.
        for (_, h) in &self.claim_headers {
            st.strip_upstream.push(h.clone());
        }
        if !self.cfg.run_on_preflight && session.req_header().method == http::Method::OPTIONS {
            return Ok(Flow::Continue);
        }
        if self.anonymous.is_some() && st.credential.is_some() {
            return Ok(Flow::Continue);
        }
        match self.authenticate(session, st).await {
            Ok(()) => Ok(Flow::Continue),
            Err(f) => {
                let route = st
                    .rt
                    .as_ref()
                    .zip(st.route.as_ref())
                    .map(|(rt, m)| rt.decl.routes[m.route].name.clone())
                    .unwrap_or_default();
                crate::metrics::Metrics::global().auth_failure(&route, "jwt", f.reason);
                if let Some(a) = self.anonymous {
                    set_consumer(st, a, None);
                    return Ok(Flow::Continue);
                }
                let www = if f.invalid_token {
                    &self.www_auth_invalid
                } else {
                    &self.www_auth
                };
                Ok(Flow::Respond(
                    LocalResponse::json(401, f.body.to_string())
                        .with_header("www-authenticate", www.as_str()),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_extraction() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("  bearer   x.y.z"), Some("x.y.z"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearerabc"), None);
    }

    #[test]
    fn config_rules() {
        let v: serde_norway::Value =
            serde_norway::from_str("maximum_expiration: 60").expect("yaml");
        let c: Config = super::super::parse_config(&v).expect("config");
        assert!(c.validate().is_err());
        let v: serde_norway::Value =
            serde_norway::from_str("claims_to_verify: [iat]").expect("yaml");
        let c: Config = super::super::parse_config(&v).expect("config");
        assert!(
            matches!(c.validate(), Err(SpecError::Invalid { path, .. }) if path == "claims_to_verify[0]")
        );
    }
}
