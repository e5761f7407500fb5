//! Kong's `hmac-auth` plugin: `Authorization: hmac username="..", algorithm="..",
//! headers="..", signature=".."` (or `Proxy-Authorization`), an HMAC over the listed
//! headers checked with the secret of the consumer's `hmacauth_credentials` entry.
//!
//! Kong 3.9's order of checks and answers (all 401 with `WWW-Authenticate: hmac` or
//! `hmac realm="<realm>"`): no header at all `Unauthorized`; no `X-Date`/`Date` within
//! `clock_skew` seconds `HMAC signature cannot be verified, a valid date or x-date header
//! is required for HMAC Authentication`; unparsable header, a header of
//! `enforce_headers` not signed, an algorithm not allowed or an unknown username `HMAC
//! signature cannot be verified`; a wrong signature or (`validate_request_body`) a
//! `Digest` that is not `SHA-256=<base64 of the body's SHA-256>` `HMAC signature does not
//! match`. Signatures are compared in constant time; secrets are never logged.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use http::header::{AUTHORIZATION, PROXY_AUTHORIZATION};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::auth::{self, set_consumer};
use super::{BuildContext, BuildError, Flow, Plugin, SpecError};
use crate::core::Session;
use crate::core::state::RequestState;

pub const ALGORITHMS: [&str; 4] = ["hmac-sha1", "hmac-sha256", "hmac-sha384", "hmac-sha512"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub hide_credentials: bool,
    #[serde(default = "default_clock_skew")]
    pub clock_skew: f64,
    pub anonymous: Option<String>,
    #[serde(default)]
    pub validate_request_body: bool,
    #[serde(default)]
    pub enforce_headers: Vec<String>,
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    pub realm: Option<String>,
}

fn default_clock_skew() -> f64 {
    300.0
}

fn default_algorithms() -> Vec<String> {
    ALGORITHMS.iter().map(|a| a.to_string()).collect()
}

impl Config {
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.clock_skew.is_nan() || self.clock_skew <= 0.0 {
            return Err(SpecError::at("clock_skew", "value must be greater than 0"));
        }
        for (i, a) in self.algorithms.iter().enumerate() {
            if !ALGORITHMS.contains(&a.as_str()) {
                return Err(SpecError::at(
                    format!("algorithms[{i}]"),
                    format!("expected one of: {}", ALGORITHMS.join(", ")),
                ));
            }
        }
        Ok(())
    }
}

// dup: the shape of every plugin file (its own Config, checks and hook types).
/// A `hmacauth_credentials` entry (Kong generates a secret nobody knows when it has none).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacDef {
    pub username: Option<String>,
    pub secret: Option<String>,
    pub id: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub created_at: Option<i64>,
}

pub fn check_credential(v: &serde_norway::Value) -> Result<HmacDef, SpecError> {
    let c: HmacDef = super::parse_config(v)?;
    if c.username.is_none() {
        return Err(SpecError::at("username", "required field missing"));
    }
    Ok(c)
}

struct Credential {
    consumer: usize,
    username: String,
    /// None: Kong's generated secret, which no client can know.
    secret: Option<Box<[u8]>>,
}

/// Every hmac-auth credential of a configuration, by username.
#[derive(Clone)]
struct CredentialTable(Arc<HashMap<Box<[u8]>, Credential>>);

impl CredentialTable {
    fn build(ctx: &BuildContext<'_>) -> Result<CredentialTable, BuildError> {
        let mut map = HashMap::with_capacity(ctx.decl.hmacauth_credentials.len());
        for c in &ctx.decl.hmacauth_credentials {
            let def = check_credential(&c.value).map_err(|source| BuildError::Credential {
                path: c.path.clone(),
                source,
            })?;
            let username = def.username.unwrap_or_default();
            map.insert(
                username.as_bytes().into(),
                Credential {
                    consumer: c.consumer,
                    username,
                    secret: def.secret.map(|s| s.into_bytes().into_boxed_slice()),
                },
            );
        }
        Ok(CredentialTable(Arc::new(map)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    fn from_name(name: &[u8]) -> Option<Algorithm> {
        Some(match name {
            b"hmac-sha1" => Algorithm::Sha1,
            b"hmac-sha256" => Algorithm::Sha256,
            b"hmac-sha384" => Algorithm::Sha384,
            b"hmac-sha512" => Algorithm::Sha512,
            _ => return None,
        })
    }

    fn mac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        fn run<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
            match <M as KeyInit>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            }
        }
        match self {
            Algorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, data),
            Algorithm::Sha256 => run::<Hmac<sha2::Sha256>>(key, data),
            Algorithm::Sha384 => run::<Hmac<sha2::Sha384>>(key, data),
            Algorithm::Sha512 => run::<Hmac<sha2::Sha512>>(key, data),
        }
    }
}

/// The fields of Kong's header regex (`\s*[Hh]mac\s*username="(.+)",\s*algorithm="(.+)",
/// \s*headers="(.+)",\s*signature="(.+)"`, searched anywhere, PCRE semantics).
#[derive(Debug, PartialEq)]
pub struct Params {
    pub username: Vec<u8>,
    pub algorithm: Vec<u8>,
    pub headers: Vec<Vec<u8>>,
    pub signature: Vec<u8>,
}

static HMAC_RE: LazyLock<Option<regex::bytes::Regex>> = LazyLock::new(|| {
    regex::bytes::Regex::new(
        r#"(?-u)\s*[Hh]mac\s*username="(.+)",\s*algorithm="(.+)",\s*headers="(.+)",\s*signature="(.+)""#,
    )
    .ok()
});

pub fn parse_params(value: &[u8]) -> Option<Params> {
    let m = HMAC_RE.as_ref()?.captures(value)?;
    Some(Params {
        username: m.get(1)?.as_bytes().to_vec(),
        algorithm: m.get(2)?.as_bytes().to_vec(),
        headers: split_spaces(m.get(3)?.as_bytes()),
        signature: m.get(4)?.as_bytes().to_vec(),
    })
}

/// Penlight's `stringx.split(s, " ")`: empty fields kept, except that a lone " " gives
/// one empty field.
fn split_spaces(s: &[u8]) -> Vec<Vec<u8>> {
    if s == b" " {
        return vec![Vec::new()];
    }
    s.split(|&b| b == b' ').map(<[u8]>::to_vec).collect()
}

/// nginx's `ngx_parse_http_time` (RFC 1123, RFC 850 and asctime dates; the weekday and
/// the zone are not checked): seconds since the epoch.
pub fn parse_http_time(v: &[u8]) -> Option<i64> {
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    let digit = |i: usize| at(i).is_ascii_digit().then(|| (at(i) - b'0') as i64);
    let two = |i: usize| Some(digit(i)? * 10 + digit(i + 1)?);
    #[derive(PartialEq)]
    enum Fmt {
        Rfc822,
        Rfc850,
        Isoc,
    }
    let end = v.len();
    let mut fmt = None;
    let mut p = 0;
    while p < end {
        if v[p] == b',' {
            break;
        }
        if v[p] == b' ' {
            fmt = Some(Fmt::Isoc);
            break;
        }
        p += 1;
    }
    p += 1;
    while p < end && v[p] == b' ' {
        p += 1;
    }
    if p > end || end - p < 18 {
        return None;
    }
    let mut day = 32;
    if fmt.is_none() {
        day = two(p)?;
        p += 2;
        match at(p) {
            b' ' => {
                if end - p < 18 {
                    return None;
                }
                fmt = Some(Fmt::Rfc822);
            }
            b'-' => fmt = Some(Fmt::Rfc850),
            _ => return None,
        }
        p += 1;
    }
    let fmt = fmt?;
    let mut month: i64 = match at(p) {
        b'J' => {
            if at(p + 1) == b'a' {
                0
            } else if at(p + 2) == b'n' {
                5
            } else {
                6
            }
        }
        b'F' => 1,
        b'M' => {
            if at(p + 2) == b'r' {
                2
            } else {
                4
            }
        }
        b'A' => {
            if at(p + 1) == b'p' {
                3
            } else {
                7
            }
        }
        b'S' => 8,
        b'O' => 9,
        b'N' => 10,
        b'D' => 11,
        _ => return None,
    };
    p += 3;
    if (fmt == Fmt::Rfc822 && at(p) != b' ') || (fmt == Fmt::Rfc850 && at(p) != b'-') {
        return None;
    }
    p += 1;
    let mut year = 2038;
    match fmt {
        Fmt::Rfc822 => {
            year = two(p)? * 100 + two(p + 2)?;
            p += 4;
        }
        Fmt::Rfc850 => {
            year = two(p)?;
            year += if year < 70 { 2000 } else { 1900 };
            p += 2;
        }
        Fmt::Isoc => {
            if at(p) == b' ' {
                p += 1;
            }
            day = digit(p)?;
            p += 1;
            if at(p) != b' ' {
                day = day * 10 + digit(p)?;
                p += 1;
            }
            if end.saturating_sub(p) < 14 {
                return None;
            }
        }
    }
    if at(p) != b' ' {
        return None;
    }
    p += 1;
    let hour = two(p)?;
    p += 2;
    if at(p) != b':' {
        return None;
    }
    let min = two(p + 1)?;
    p += 3;
    if at(p) != b':' {
        return None;
    }
    let sec = two(p + 1)?;
    p += 3;
    if fmt == Fmt::Isoc {
        if at(p) != b' ' {
            return None;
        }
        year = two(p + 1)? * 100 + two(p + 3)?;
    }
    if hour > 23 || min > 59 || sec > 59 {
        return None;
    }
    const MDAY: [i64; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if day == 29 && month == 1 {
        if (year & 3) != 0 || (year % 100 == 0 && year % 400 != 0) {
            return None;
        }
    } else if day > MDAY[month as usize] {
        return None;
    }
    // Gauss' formula, the year starting on March 1st.
    month -= 1;
    if month <= 0 {
        month += 12;
        year -= 1;
    }
    let days =
        365 * year + year / 4 - year / 100 + year / 400 + 367 * month / 12 - 30 + day - 1 - 719_527
            + 31
            + 28;
    Some(days * 86_400 + hour * 3600 + min * 60 + sec)
}

const NOT_VALID: &str = "HMAC signature cannot be verified";
const NOT_SAME: &str = "HMAC signature does not match";
const NO_DATE: &str = "HMAC signature cannot be verified, a valid date or x-date header is required for HMAC Authentication";

/// Why authentication failed: (metric reason, Kong's message).
type Failure = (&'static str, &'static str);

// dup: the shape of every plugin file (its own Config, checks and hook types).
pub struct HmacAuth {
    cfg: Config,
    table: CredentialTable,
    anonymous: auth::Anonymous,
    www_auth: String,
}

impl HmacAuth {
    pub fn new(cfg: Config, ctx: &BuildContext<'_>) -> Result<HmacAuth, BuildError> {
        if ctx.scope.consumer.is_some() {
            return Err(BuildError::Scope(
                "hmac-auth cannot be configured on a consumer",
            ));
        }
        let table = ctx.cache.get_or_try_init(|| CredentialTable::build(ctx))?;
        let anonymous = auth::anonymous(ctx.decl, cfg.anonymous.as_deref());
        Ok(HmacAuth {
            www_auth: match &cfg.realm {
                Some(r) => format!("hmac realm=\"{r}\""),
                None => "hmac".into(),
            },
            table,
            anonymous,
            cfg,
        })
    }

    fn clock_ok(&self, headers: &http::HeaderMap, name: &str) -> bool {
        let Some(t) = auth::kong_header(headers, name).and_then(parse_http_time) else {
            return false;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        (now - t).unsigned_abs() as f64 <= self.cfg.clock_skew
    }

    fn params_ok(&self, p: &Params) -> Result<Algorithm, Failure> {
        for h in &self.cfg.enforce_headers {
            if !p.headers.iter().any(|x| x == h.as_bytes()) {
                return Err(("enforced_header", NOT_VALID));
            }
        }
        if !self
            .cfg
            .algorithms
            .iter()
            .any(|a| a.as_bytes() == p.algorithm)
        {
            return Err(("algorithm", NOT_VALID));
        }
        Algorithm::from_name(&p.algorithm).ok_or(("algorithm", NOT_VALID))
    }

    /// Kong's signing string: each listed header as `name: value` (the name as the client
    /// wrote it), `@request-target` and `request-line` from the request, `name:` for a
    /// header the request lacks; joined by newlines.
    fn signing_string(session: &Session, names: &[Vec<u8>]) -> Vec<u8> {
        let req = session.req_header();
        let target = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut s = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let value = std::str::from_utf8(name)
                .ok()
                .and_then(|n| auth::kong_header(&req.headers, n));
            match value {
                Some(v) => {
                    s.extend_from_slice(name);
                    s.extend_from_slice(b": ");
                    s.extend_from_slice(v);
                }
                None if name == b"@request-target" => {
                    s.extend_from_slice(b"@request-target: ");
                    s.extend_from_slice(req.method.as_str().to_ascii_lowercase().as_bytes());
                    s.push(b' ');
                    s.extend_from_slice(target.as_bytes());
                }
                None if name == b"request-line" => {
                    let version = match req.version {
                        http::Version::HTTP_09 => "0.9",
                        http::Version::HTTP_10 => "1.0",
                        http::Version::HTTP_2 => "2.0",
                        http::Version::HTTP_3 => "3.0",
                        _ => "1.1",
                    };
                    s.extend_from_slice(
                        format!("{} {target} HTTP/{version}", req.method).as_bytes(),
                    );
                }
                None => {
                    s.extend_from_slice(name);
                    s.push(b':');
                }
            }
            if i + 1 < names.len() {
                s.push(b'\n');
            }
        }
        s
    }

    /// Kong's `validate_body`: without `Digest` the body must be empty; with it, it must
    /// be exactly `SHA-256=<base64 of the body's SHA-256>`. The body read here still goes
    /// upstream.
    async fn body_ok(session: &mut Session) -> crate::core::Result<bool> {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        let mut len = 0usize;
        while let Some(chunk) = session.read_request_body().await? {
            len += chunk.len();
            h.update(&chunk);
        }
        let Some(digest) = session.req_header().headers.get("digest") else {
            return Ok(len == 0);
        };
        let expected = format!(
            "SHA-256={}",
            base64::engine::general_purpose::STANDARD.encode(h.finalize())
        );
        Ok(digest.as_bytes() == expected.as_bytes())
    }

    async fn authenticate(
        &self,
        session: &mut Session,
        st: &mut RequestState,
    ) -> crate::core::Result<Result<&Credential, Failure>> {
        let headers = &session.req_header().headers;
        let authorization = headers.get(AUTHORIZATION);
        let proxy_authorization = headers.get(PROXY_AUTHORIZATION);
        if authorization.is_none() && proxy_authorization.is_none() {
            return Ok(Err(("no_credentials", "Unauthorized")));
        }
        if !(self.clock_ok(headers, "x-date") || self.clock_ok(headers, "date")) {
            return Ok(Err(("clock_skew", NO_DATE)));
        }
        let params = match proxy_authorization.and_then(|v| parse_params(v.as_bytes())) {
            Some(p) => {
                if self.cfg.hide_credentials {
                    st.strip_upstream.push(PROXY_AUTHORIZATION);
                }
                Some(p)
            }
            None => {
                if self.cfg.hide_credentials {
                    st.strip_upstream.push(AUTHORIZATION);
                }
                authorization.and_then(|v| parse_params(v.as_bytes()))
            }
        };
        let Some(params) = params else {
            return Ok(Err(("invalid_header", NOT_VALID)));
        };
        let algorithm = match self.params_ok(&params) {
            Ok(a) => a,
            Err(f) => return Ok(Err(f)),
        };
        let Some(cred) = self.table.0.get(params.username.as_slice()) else {
            return Ok(Err(("unknown_username", NOT_VALID)));
        };
        let given = auth::ngx_decode_base64(&params.signature);
        let matches = match (&cred.secret, given) {
            (Some(secret), Some(given)) => {
                let computed =
                    algorithm.mac(secret, &Self::signing_string(session, &params.headers));
                bool::from(computed.ct_eq(&given))
            }
            _ => false,
        };
        if !matches {
            return Ok(Err(("bad_signature", NOT_SAME)));
        }
        if self.cfg.validate_request_body && !Self::body_ok(session).await? {
            return Ok(Err(("bad_digest", NOT_SAME)));
        }
        Ok(Ok(cred))
    }
}

#[async_trait]
impl Plugin for HmacAuth {
    // dup: the shape of every plugin file (its own Config, checks and hook types).
    fn name(&self) -> &'static str {
        "hmac-auth"
    }

    fn priority(&self) -> i32 {
        1030
    }

    async fn access(
        &self,
        session: &mut Session,
        st: &mut RequestState,
    ) -> crate::core::Result<Flow> {
        if self.anonymous.is_some() && st.credential.is_some() {
            return Ok(Flow::Continue);
        }
        match self.authenticate(session, st).await? {
            Ok(cred) => {
                let (consumer, username) = (cred.consumer, cred.username.clone());
                set_consumer(st, Some(consumer), Some(username));
                Ok(Flow::Continue)
            }
            Err((reason, message)) => Ok(auth::fail(
                session,
                st,
                "hmac-auth",
                reason,
                self.anonymous,
                (401, message, &self.www_auth),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_header_like_kong() {
        let p = parse_params(
            br#"hmac username="alice", algorithm="hmac-sha256", headers="date request-line", signature="c2ln""#,
        )
        .expect("params");
        assert_eq!(p.username, b"alice");
        assert_eq!(p.algorithm, b"hmac-sha256");
        assert_eq!(p.headers, vec![b"date".to_vec(), b"request-line".to_vec()]);
        assert_eq!(p.signature, b"c2ln");
        // Any case of the scheme's first letter, no space after commas, found anywhere.
        assert!(
            parse_params(br#"xx Hmac username="a",algorithm="b",headers="c",signature="d""#)
                .is_some()
        );
        // Missing a field, or empty values (`.+`).
        assert!(parse_params(br#"hmac username="a", algorithm="b", signature="d""#).is_none());
        assert!(
            parse_params(br#"hmac username="", algorithm="b", headers="c", signature="d""#)
                .is_none()
        );
        assert_eq!(split_spaces(b" "), vec![Vec::<u8>::new()]);
        assert_eq!(
            split_spaces(b"a  b"),
            vec![b"a".to_vec(), vec![], b"b".to_vec()]
        );
    }

    #[test]
    fn http_dates_as_nginx_reads_them() {
        let t = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_http_time(b"Sun, 06 Nov 1994 08:49:37 GMT"), Some(t));
        assert_eq!(parse_http_time(b"Sunday, 06-Nov-94 08:49:37 GMT"), Some(t));
        assert_eq!(parse_http_time(b"Sun Nov  6 08:49:37 1994"), Some(t));
        // nginx checks neither the weekday nor the zone.
        assert_eq!(parse_http_time(b"Xyz, 06 Nov 1994 08:49:37 PST"), Some(t));
        assert_eq!(
            parse_http_time(b"Thu, 29 Feb 2024 00:00:00 GMT"),
            Some(1_709_164_800)
        );
        assert_eq!(parse_http_time(b"Thu, 29 Feb 2023 00:00:00 GMT"), None);
        assert_eq!(parse_http_time(b"Sun, 06 Nov 1994 24:49:37 GMT"), None);
        assert_eq!(parse_http_time(b"yesterday"), None);
        assert_eq!(parse_http_time(b""), None);
        let now = std::time::SystemTime::now();
        let secs = now
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        assert_eq!(
            parse_http_time(httpdate::fmt_http_date(now).as_bytes()),
            Some(secs)
        );
    }

    #[test]
    fn macs_and_config() {
        // RFC 4231 test case 2.
        let m = Algorithm::Sha256.mac(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            m.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(Algorithm::Sha1.mac(b"k", b"d").len(), 20);
        assert_eq!(Algorithm::Sha384.mac(b"k", b"d").len(), 48);
        assert_eq!(Algorithm::Sha512.mac(b"k", b"d").len(), 64);
        let v: serde_norway::Value =
            serde_norway::from_str("algorithms: [hmac-sha256, hmac-md5]").expect("yaml");
        let c: Config = super::super::parse_config(&v).expect("config");
        assert!(
            matches!(c.validate(), Err(SpecError::Invalid { path, .. }) if path == "algorithms[1]")
        );
        let v: serde_norway::Value = serde_norway::from_str("clock_skew: 0").expect("yaml");
        let c: Config = super::super::parse_config(&v).expect("config");
        assert!(c.validate().is_err());
    }
}
