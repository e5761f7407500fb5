//! Kong's `proxy-cache` with its `memory` strategy (the only one Kong OSS ships).
//!
//! Access phase: a request whose method is cacheable (and, with `cache_control`, without
//! `no-store`/`no-cache`) gets Kong's cache key (SHA-256 hex of `prefix|method|uri|
//! params|headers`, see [`cache_key`]); a fresh entry is served with `Flow::Respond`
//! (`X-Cache-Status: Hit`, `Age`, `X-Cache-Key`), anything else goes upstream marked
//! `Miss` (or `Refresh` for a stale entry). Response phase: a response whose status,
//! Content-Type and (with `cache_control`) Cache-Control allow it has its headers
//! captured in `response_header` and its body in `response_body`, then stored; otherwise
//! it is marked `Bypass`.
//!
//! Entries live in a process-wide store per `memory.dictionary_name` (kept across
//! reloads as Kong's shared dict is), an LRU bounded by entry count and bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use super::lru::Lru;
use super::transform::{ArgValue, decode_args};
use super::{BuildContext, BuildError, Flow, Plugin, SpecError};
use crate::core::respond::{LocalResponse, SERVER_TOKEN};
use crate::core::state::RequestState;
use crate::core::{RequestHeader, ResponseHeader, Session};

// === config ===

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum CacheMethod {
    HEAD,
    GET,
    POST,
    PATCH,
    PUT,
}

impl CacheMethod {
    fn as_str(self) -> &'static str {
        match self {
            CacheMethod::HEAD => "HEAD",
            CacheMethod::GET => "GET",
            CacheMethod::POST => "POST",
            CacheMethod::PATCH => "PATCH",
            CacheMethod::PUT => "PUT",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    #[serde(default = "default_dictionary")]
    pub dictionary_name: String,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            dictionary_name: default_dictionary(),
        }
    }
}

fn default_dictionary() -> String {
    "kong_db_cache".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseHeadersConfig {
    #[serde(default = "yes")]
    pub age: bool,
    #[serde(rename = "X-Cache-Status", default = "yes")]
    pub x_cache_status: bool,
    #[serde(rename = "X-Cache-Key", default = "yes")]
    pub x_cache_key: bool,
}

impl Default for ResponseHeadersConfig {
    fn default() -> Self {
        ResponseHeadersConfig {
            age: true,
            x_cache_status: true,
            x_cache_key: true,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_codes")]
    pub response_code: Vec<i64>,
    #[serde(default = "default_methods")]
    pub request_method: Vec<CacheMethod>,
    #[serde(default = "default_types")]
    pub content_type: Vec<String>,
    #[serde(default = "default_ttl")]
    pub cache_ttl: i64,
    pub strategy: String,
    #[serde(default)]
    pub cache_control: bool,
    #[serde(default)]
    pub ignore_uri_case: bool,
    #[serde(default)]
    pub storage_ttl: Option<i64>,
    #[serde(default)]
    pub memory: MemoryConfig,
    #[serde(default)]
    pub vary_query_params: Option<Vec<String>>,
    #[serde(default)]
    pub vary_headers: Option<Vec<String>>,
    #[serde(default)]
    pub response_headers: ResponseHeadersConfig,
}

fn default_codes() -> Vec<i64> {
    vec![200, 301, 404]
}

fn default_methods() -> Vec<CacheMethod> {
    vec![CacheMethod::GET, CacheMethod::HEAD]
}

fn default_types() -> Vec<String> {
    vec!["text/plain".into(), "application/json".into()]
}

fn default_ttl() -> i64 {
    300
}

impl Config {
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.response_code.is_empty() {
            return Err(SpecError::at("response_code", "length must be at least 1"));
        }
        for (i, c) in self.response_code.iter().enumerate() {
            if !(100..=900).contains(c) {
                return Err(SpecError::at(
                    format!("response_code[{i}]"),
                    "value should be between 100 and 900",
                ));
            }
        }
        if self.cache_ttl <= 0 {
            return Err(SpecError::at("cache_ttl", "value must be greater than 0"));
        }
        if self.strategy != "memory" {
            return Err(SpecError::at(
                "strategy",
                "expected one of: memory (Kong OSS ships only the memory strategy)",
            ));
        }
        if self.memory.dictionary_name.is_empty() {
            return Err(SpecError::at(
                "memory.dictionary_name",
                "length must be at least 1",
            ));
        }
        for (i, t) in self.content_type.iter().enumerate() {
            if t.is_empty() {
                return Err(SpecError::at(
                    format!("content_type[{i}]"),
                    "length must be at least 1",
                ));
            }
        }
        Ok(())
    }
}

// === Kong's helpers: directives, media types, the cache key ===

/// A `Cache-Control` directive's value as Kong's `parse_directive_header` keeps it: a
/// number when it reads as one, else the text, or `true` without `=`.
#[derive(Debug, Clone, PartialEq)]
pub enum Directive {
    Flag,
    Number(f64),
    Text(String),
}

/// Kong's `parse_directive_header`: comma-separated directives (several header lines are
/// joined with ", "), the name lowercased (everything before `=`, leading spaces
/// skipped).
pub fn parse_directives<'a>(
    values: impl Iterator<Item = &'a HeaderValue>,
) -> HashMap<String, Directive> {
    let mut out = HashMap::new();
    for v in values {
        let text = String::from_utf8_lossy(v.as_bytes());
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let part = part.trim_start_matches([' ', '\t', '\r', '\n', '\x0b', '\x0c']);
            if part.is_empty() || part.starts_with('=') {
                continue;
            }
            let (name, value) = match part.split_once('=') {
                Some((n, v)) if !v.is_empty() => (n, Some(v)),
                Some((n, _)) => (n, None),
                None => (part, None),
            };
            let d = match value {
                None => Directive::Flag,
                Some(v) => match lua_number(v) {
                    Some(n) => Directive::Number(n),
                    None => Directive::Text(v.to_string()),
                },
            };
            out.insert(name.to_ascii_lowercase(), d);
        }
    }
    out
}

/// Lua's `tonumber` for the forms Cache-Control values take (surrounding spaces allowed).
fn lua_number(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return i64::from_str_radix(h, 16).ok().map(|n| n as f64);
    }
    let n: f64 = t.parse().ok()?;
    n.is_finite().then_some(n)
}

fn number(cc: &HashMap<String, Directive>, name: &str) -> Option<f64> {
    match cc.get(name) {
        Some(Directive::Number(n)) => Some(*n),
        _ => None,
    }
}

fn has(cc: &HashMap<String, Directive>, name: &str) -> bool {
    cc.contains_key(name)
}

/// Kong's `calculate_resource_ttl`: `s-maxage`, else `max-age`, else `Expires` minus now;
/// never below 0.
fn resource_ttl(cc: &HashMap<String, Directive>, headers: &HeaderMap, now: u64) -> f64 {
    let max_age = number(cc, "s-maxage")
        .or_else(|| number(cc, "max-age"))
        .or_else(|| {
            let exp = headers.get_all(http::header::EXPIRES).iter().next_back()?;
            let t = httpdate::parse_http_date(exp.to_str().ok()?).ok()?;
            let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
            Some(secs as f64 - now as f64)
        });
    max_age.map_or(0.0, |m| m.max(0.0))
}

/// A media type as Kong's `parse_mime_type` reads it: lowercase type and subtype, the
/// parameters (names lowercased); `None` when the text is not a media type.
#[derive(Debug, PartialEq)]
pub struct MediaType {
    main: String,
    sub: String,
    params: HashMap<String, String>,
}

fn is_token(b: u8) -> bool {
    b > 31 && b < 127 && !b"()<>@,;:\\\"/[]?={} \t".contains(&b)
}

pub fn parse_media_type(s: &str) -> Option<MediaType> {
    let b = s.as_bytes();
    let token = |i: usize| -> usize {
        let mut j = i;
        while j < b.len() && is_token(b[j]) {
            j += 1;
        }
        j
    };
    let (main, sub, mut i);
    let e = token(0);
    if e > 0 && b.get(e) == Some(&b'/') {
        let e2 = token(e + 1);
        if e2 == e + 1 {
            return None;
        }
        main = s[..e].to_ascii_lowercase();
        sub = s[e + 1..e2].to_ascii_lowercase();
        i = e2;
    } else if b.first() == Some(&b'*') {
        main = "*".into();
        sub = "*".into();
        i = 1;
    } else {
        return None;
    }
    let mut params = HashMap::new();
    loop {
        let mut j = i;
        while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
            j += 1;
        }
        if j >= b.len() || b[j] != b';' {
            break;
        }
        j += 1;
        while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
            j += 1;
        }
        let ke = token(j);
        if ke == j || b.get(ke) != Some(&b'=') {
            break;
        }
        let key = s[j..ke].to_ascii_lowercase();
        let vs = ke + 1;
        let (value, end) = if b.get(vs) == Some(&b'"') {
            let mut k = vs + 1;
            loop {
                match b.get(k) {
                    None => return None,
                    Some(b'"') => break,
                    Some(b'\\') if k + 1 < b.len() && b[k + 1] < 128 => k += 2,
                    Some(c) if *c < 32 || *c == 127 => return None,
                    Some(_) => k += 1,
                }
            }
            (s[vs + 1..k].to_string(), k + 1)
        } else {
            let ve = token(vs);
            if ve == vs {
                break;
            }
            (s[vs..ve].to_string(), ve)
        };
        params.insert(key, value);
        i = end;
    }
    // The whole text must be consumed.
    (i == b.len()).then_some(MediaType { main, sub, params })
}

/// Kong's content-type test: type and subtype equal (or `*` in the configured one), the
/// configured parameters all present with the same values, and no others.
fn content_type_matches(actual: &MediaType, expected: &[MediaType]) -> bool {
    expected.iter().any(|e| {
        (e.main == "*" || e.main == actual.main)
            && (e.sub == "*" || e.sub == actual.sub)
            && e.params.len() == actual.params.len()
            && e.params
                .iter()
                .all(|(k, v)| actual.params.get(k) == Some(v))
    })
}

/// Kong's `generate_key_from`: `field=value` (repeated values sorted and joined with
/// `,`, a bare flag as `field`) for each field present, joined with `:`.
fn key_from(fields: &[String], get: impl Fn(&str) -> Option<ArgValue>) -> String {
    let mut parts = Vec::new();
    for f in fields {
        match get(f) {
            None => {}
            Some(ArgValue::Flag) => parts.push(f.clone()),
            Some(ArgValue::One(v)) => parts.push(format!("{f}={v}")),
            Some(ArgValue::Many(mut v)) => {
                v.sort();
                parts.push(format!("{f}={}", v.join(",")));
            }
        }
    }
    parts.join(":")
}

/// Kong's cache key: `sha256_hex("<prefix>|<method>|<uri>|<params>|<headers>")` where the
/// prefix is `<consumer_id>:<route_id>`, `<route_id>` or `default`, and `uri` is the
/// request line with everything from the first `?` removed (so `GET /p HTTP/1.1` without
/// a query string, `GET /p` with one), lowercased with `ignore_uri_case`.
pub fn cache_key(
    cfg: &Config,
    consumer_id: Option<&str>,
    route_id: Option<&str>,
    req: &RequestHeader,
) -> String {
    let prefix = match (consumer_id, route_id) {
        (Some(c), Some(r)) => format!("{c}:{r}"),
        (_, Some(r)) => r.to_string(),
        _ => "default".to_string(),
    };
    let method = req.method.as_str();
    let target = if req.uri.scheme().is_some() {
        req.uri.to_string()
    } else {
        req.uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| req.uri.path().to_string())
    };
    let line = format!("{method} {target} {:?}", req.version);
    let mut uri = match line.find('?') {
        Some(i) => line[..i].to_string(),
        None => line,
    };
    if cfg.ignore_uri_case {
        uri = uri.to_lowercase();
    }
    let args = decode_args(req.uri.query().unwrap_or(""));
    let params = match cfg.vary_query_params.as_deref() {
        Some(v) if !v.is_empty() => key_from(v, |f| args.get(f).cloned()),
        _ => {
            let keys: Vec<String> = args.keys().cloned().collect();
            key_from(&keys, |f| args.get(f).cloned())
        }
    };
    let headers = match cfg.vary_headers.as_deref() {
        Some(v) if !v.is_empty() => key_from(v, |f| {
            let name = f.to_ascii_lowercase().replace('_', "-");
            let vals: Vec<String> = req
                .headers
                .get_all(name.as_str())
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            match vals.len() {
                0 => None,
                1 => vals.into_iter().next().map(ArgValue::One),
                _ => Some(ArgValue::Many(vals)),
            }
        }),
        _ => String::new(),
    };
    let text = format!("{prefix}|{method}|{uri}|{params}|{headers}");
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut hex = String::with_capacity(64);
    for b in digest.as_ref() {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

// === the memory store ===

/// One cached response.
pub struct Entry {
    status: u16,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    /// When it was stored (seconds since the epoch, as Kong's `ngx.time()`).
    timestamp: u64,
    /// The resource's TTL (`cache_ttl`, or from Cache-Control with `cache_control`).
    ttl: f64,
    /// When the store drops it (`storage_ttl`, else the TTL); `None`: never.
    expires: Option<Instant>,
}

/// Kong's `kong_db_cache` dictionary is `mem_cache_size` (128m) by default.
const STORE_BYTES: usize = 128 << 20;
const STORE_ENTRIES: usize = 100_000;
/// Bookkeeping per entry counted against the byte budget.
const ENTRY_OVERHEAD: usize = 256;

pub struct MemoryStore {
    lru: Mutex<Lru<String, Arc<Entry>>>,
}

impl MemoryStore {
    pub fn new(max_bytes: usize) -> MemoryStore {
        MemoryStore {
            lru: Mutex::new(Lru::new(STORE_ENTRIES, max_bytes)),
        }
    }

    /// The process-wide store of a dictionary name, shared by every instance naming it
    /// and kept across reloads.
    pub fn shared(name: &str) -> Arc<MemoryStore> {
        static STORES: OnceLock<Mutex<HashMap<String, Arc<MemoryStore>>>> = OnceLock::new();
        let mut map = STORES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.entry(name.to_string())
            .or_insert_with(|| Arc::new(MemoryStore::new(STORE_BYTES)))
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru<String, Arc<Entry>>> {
        self.lru.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn fetch(&self, key: &str) -> Option<Arc<Entry>> {
        let mut lru = self.lock();
        let e = lru.get(key)?.clone();
        if e.expires.is_some_and(|t| t <= Instant::now()) {
            lru.remove(key);
            return None;
        }
        Some(e)
    }

    pub fn store(&self, key: String, entry: Entry) {
        let weight = ENTRY_OVERHEAD
            + key.len()
            + entry.body.len()
            + entry
                .headers
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len() + 32)
                .sum::<usize>();
        self.lock().insert(key, Arc::new(entry), weight);
    }
}

// === the plugin ===

/// What the access phase decided for this request.
#[derive(Clone)]
enum CacheCtx {
    /// Went upstream; store the response if it is cacheable.
    Store {
        key: Arc<str>,
        /// Set by `response_header` when the response is cacheable.
        captured: Option<Arc<Captured>>,
    },
    /// Served from the cache.
    Hit(Arc<Entry>),
}

struct Captured {
    status: u16,
    headers: Vec<(HeaderName, HeaderValue)>,
    ttl: f64,
}

#[derive(Clone)]
struct RouteIds(Arc<Vec<String>>);

pub struct ProxyCache {
    cfg: Config,
    methods: Vec<&'static str>,
    codes: Vec<u16>,
    types: Vec<MediaType>,
    store: Arc<MemoryStore>,
    route_ids: RouteIds,
}

const X_CACHE_STATUS: HeaderName = HeaderName::from_static("x-cache-status");
const X_CACHE_KEY: HeaderName = HeaderName::from_static("x-cache-key");
const AGE: HeaderName = http::header::AGE;

/// Headers never stored or served from the cache: hop-by-hop ones and Content-Length
/// (Kong's list), the cache's own, and the ones the gateway sets on every response.
fn stored_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    !matches!(
        n,
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailers"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "age"
            | "x-cache-status"
            | "x-cache-key"
            | "via"
            | "x-kong-upstream-latency"
            | "x-kong-proxy-latency"
            | "x-kong-response-latency"
            | "x-request-id"
            | "x-kong-request-id"
    ) && !n.contains("ratelimit-remaining")
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ProxyCache {
    pub fn new(cfg: Config, ctx: &BuildContext<'_>) -> Result<ProxyCache, BuildError> {
        cfg.validate()?;
        let mut types = Vec::new();
        for t in &cfg.content_type {
            // Kong skips configured types it cannot parse.
            if let Some(m) = parse_media_type(t) {
                types.push(m);
            }
        }
        let decl = ctx.decl;
        let route_ids = ctx.cache.get_or_try_init(|| {
            Ok(RouteIds(Arc::new(
                decl.routes
                    .iter()
                    .map(|r| {
                        r.id.clone()
                            .unwrap_or_else(|| crate::config::stable_id("route", &r.name))
                    })
                    .collect(),
            )))
        })?;
        Ok(ProxyCache {
            methods: cfg.request_method.iter().map(|m| m.as_str()).collect(),
            codes: cfg.response_code.iter().map(|c| *c as u16).collect(),
            types,
            store: MemoryStore::shared(&cfg.memory.dictionary_name),
            route_ids,
            cfg,
        })
    }

    /// Whether a diagnostic header goes out: configured on, or the client sent
    /// `Kong-Debug`.
    fn shows(&self, st: &RequestState, which: &HeaderName) -> bool {
        if st.ext.get::<KongDebug>().is_some() {
            return true;
        }
        let r = &self.cfg.response_headers;
        match which.as_str() {
            "age" => r.age,
            "x-cache-status" => r.x_cache_status,
            _ => r.x_cache_key,
        }
    }

    fn set_header(&self, st: &mut RequestState, name: HeaderName, value: &str) {
        if self.shows(st, &name) {
            st.response_headers.retain(|(k, _)| *k != name);
            st.response_headers.push((name, value.to_string()));
        }
    }

    /// Kong's `cacheable_response`, from the response head alone.
    fn cacheable_response(&self, resp: &ResponseHeader) -> Option<f64> {
        if !self.codes.contains(&resp.status.as_u16()) {
            return None;
        }
        let mut cts = resp.headers.get_all(http::header::CONTENT_TYPE).iter();
        let ct = cts.next()?.to_str().ok()?;
        if ct.is_empty() || cts.next().is_some() {
            return None;
        }
        let actual = parse_media_type(ct)?;
        if !content_type_matches(&actual, &self.types) {
            return None;
        }
        if !self.cfg.cache_control {
            return Some(self.cfg.cache_ttl as f64);
        }
        let cc = parse_directives(resp.headers.get_all(http::header::CACHE_CONTROL).iter());
        if has(&cc, "private") || has(&cc, "no-store") || has(&cc, "no-cache") {
            return None;
        }
        let ttl = resource_ttl(&cc, &resp.headers, now_secs());
        (ttl > 0.0).then_some(ttl)
    }

    /// The body is stored as the upstream sent it; a compressed body reaches the body
    /// hook decoded, so it is not stored (the response still goes out).
    fn storable_encoding(resp: &ResponseHeader) -> bool {
        resp.headers
            .get_all(http::header::CONTENT_ENCODING)
            .iter()
            .all(|v| v.as_bytes().eq_ignore_ascii_case(b"identity"))
    }

    fn hit(&self, st: &mut RequestState, key: &str, e: Arc<Entry>) -> LocalResponse {
        // The Miss-path headers set before the lookup are not for this answer.
        st.response_headers
            .retain(|(k, _)| *k != X_CACHE_KEY && *k != X_CACHE_STATUS);
        let mut headers: Vec<(String, String)> = Vec::with_capacity(e.headers.len() + 3);
        for (k, v) in &e.headers {
            if let Ok(v) = v.to_str() {
                headers.push((k.as_str().to_string(), v.to_string()));
            }
        }
        let age = now_secs().saturating_sub(e.timestamp);
        if self.shows(st, &AGE) {
            headers.push(("age".into(), age.to_string()));
        }
        if self.shows(st, &X_CACHE_STATUS) {
            headers.push(("x-cache-status".into(), "Hit".into()));
        }
        if self.shows(st, &X_CACHE_KEY) {
            headers.push(("x-cache-key".into(), key.to_string()));
        }
        let resp = LocalResponse {
            status: e.status,
            headers,
            body: e.body.clone(),
            message: None,
        };
        st.ext.insert(CacheCtx::Hit(e));
        resp
    }
}

/// Marks a request that carried `Kong-Debug`.
#[derive(Clone, Copy)]
struct KongDebug;

#[async_trait]
impl Plugin for ProxyCache {
    // dup: the shape of every plugin file (its own Config, checks and hook types).
    fn name(&self) -> &'static str {
        "proxy-cache"
    }

    fn priority(&self) -> i32 {
        100
    }

    async fn access(
        &self,
        session: &mut Session,
        st: &mut RequestState,
    ) -> crate::core::Result<Flow> {
        let req = session.req_header();
        if req.headers.contains_key("kong-debug") {
            st.ext.insert(KongDebug);
        }
        let cc = parse_directives(req.headers.get_all(http::header::CACHE_CONTROL).iter());
        let method_ok = self.methods.contains(&req.method.as_str());
        if !method_ok || (self.cfg.cache_control && (has(&cc, "no-store") || has(&cc, "no-cache")))
        {
            self.set_header(st, X_CACHE_STATUS, "Bypass");
            return Ok(Flow::Continue);
        }
        let (consumer_id, route_id) = {
            let rt = st.rt.as_ref();
            let consumer = st
                .consumer
                .and_then(|c| rt?.decl.consumers.get(c))
                .map(|c| c.id.clone());
            let route = st
                .route
                .as_ref()
                .and_then(|m| self.route_ids.0.get(m.route))
                .cloned();
            (consumer, route)
        };
        let key = cache_key(&self.cfg, consumer_id.as_deref(), route_id.as_deref(), req);
        self.set_header(st, X_CACHE_KEY, &key);
        let key: Arc<str> = Arc::from(key.as_str());
        let miss = |st: &mut RequestState, status: &str| {
            self.set_header(st, X_CACHE_STATUS, status);
            st.ext.insert(CacheCtx::Store {
                key: key.clone(),
                captured: None,
            });
        };
        let Some(e) = self.store.fetch(&key) else {
            if self.cfg.cache_control && has(&cc, "only-if-cached") {
                return Ok(Flow::Respond(LocalResponse {
                    status: 504,
                    headers: Vec::new(),
                    body: Bytes::new(),
                    message: None,
                }));
            }
            miss(st, "Miss");
            return Ok(Flow::Continue);
        };
        let age = now_secs().saturating_sub(e.timestamp) as f64;
        let stale = if self.cfg.cache_control {
            number(&cc, "max-age").is_some_and(|m| age > m)
                || number(&cc, "max-stale").is_some_and(|m| age - e.ttl > m)
                || number(&cc, "min-fresh").is_some_and(|m| e.ttl - age < m)
        } else {
            age > self.cfg.cache_ttl as f64
        };
        if stale {
            miss(st, "Refresh");
            return Ok(Flow::Continue);
        }
        Ok(Flow::Respond(self.hit(st, &key, e)))
    }

    fn response_header(&self, resp: &mut ResponseHeader, st: &mut RequestState) {
        match st.ext.get::<CacheCtx>().cloned() {
            None => {}
            Some(CacheCtx::Hit(e)) => {
                // A hit looks proxied, as in Kong (which marks it so): the upstream's
                // Server if it sent one, Via and the latency headers rather than
                // X-Kong-Response-Latency.
                resp.headers.remove("x-kong-response-latency");
                if let Some(s) = e.headers.iter().find(|(k, _)| k == http::header::SERVER) {
                    resp.headers.insert(http::header::SERVER, s.1.clone());
                }
                let via = format!("1.1 {SERVER_TOKEN}");
                if let Ok(v) = HeaderValue::from_str(&via) {
                    resp.headers.insert(http::header::VIA, v);
                }
                resp.headers
                    .insert("x-kong-upstream-latency", HeaderValue::from(0u64));
                resp.headers
                    .insert("x-kong-proxy-latency", HeaderValue::from(st.elapsed_ms()));
            }
            Some(CacheCtx::Store { key, .. }) => match self.cacheable_response(resp) {
                Some(ttl) => {
                    if !Self::storable_encoding(resp) {
                        st.ext.remove::<CacheCtx>();
                        return;
                    }
                    let headers = resp
                        .headers
                        .iter()
                        .filter(|(k, _)| stored_header(k))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    st.ext.insert(CacheCtx::Store {
                        key,
                        captured: Some(Arc::new(Captured {
                            status: resp.status.as_u16(),
                            headers,
                            ttl,
                        })),
                    });
                }
                None => {
                    st.ext.remove::<CacheCtx>();
                    if self.shows(st, &X_CACHE_STATUS) {
                        resp.headers
                            .insert(X_CACHE_STATUS, HeaderValue::from_static("Bypass"));
                    }
                }
            },
        }
    }

    fn buffers_response(&self, resp: &ResponseHeader) -> bool {
        self.cacheable_response(resp).is_some() && Self::storable_encoding(resp)
    }

    fn response_body(&self, body: &mut bytes::BytesMut, st: &mut RequestState) {
        let Some(CacheCtx::Store {
            key,
            captured: Some(c),
        }) = st.ext.remove::<CacheCtx>()
        else {
            return;
        };
        let storage = match self.cfg.storage_ttl {
            Some(s) => s as f64,
            None => c.ttl,
        };
        if storage < 0.0 {
            return;
        }
        let expires = (storage > 0.0).then(|| Instant::now() + Duration::from_secs_f64(storage));
        let entry = Entry {
            status: c.status,
            headers: c.headers.clone(),
            body: Bytes::copy_from_slice(body),
            timestamp: now_secs(),
            ttl: c.ttl,
            expires,
        };
        self.store.store(key.to_string(), entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> Config {
        let v: serde_norway::Value = serde_norway::from_str(yaml).unwrap_or_default();
        match super::super::parse_config::<Config>(&v) {
            Ok(c) => c,
            Err(e) => panic!("{e:?}"),
        }
    }

    fn req(line: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut parts = line.split(' ');
        let method = parts.next().unwrap_or("GET");
        let target = parts.next().unwrap_or("/");
        let mut b = http::Request::builder().method(method).uri(target);
        if parts.next() == Some("HTTP/1.0") {
            b = b.version(http::Version::HTTP_10);
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let (p, _) = b.body(()).unwrap_or_default().into_parts();
        RequestHeader::from_parts(p)
    }

    fn sha(s: &str) -> String {
        let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
        d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn kong_defaults_and_validation() {
        let c = cfg("strategy: memory");
        assert_eq!(c.response_code, vec![200, 301, 404]);
        assert_eq!(c.request_method, vec![CacheMethod::GET, CacheMethod::HEAD]);
        assert_eq!(c.content_type, vec!["text/plain", "application/json"]);
        assert_eq!(c.cache_ttl, 300);
        assert!(!c.cache_control);
        assert_eq!(c.memory.dictionary_name, "kong_db_cache");
        assert!(c.response_headers.age && c.response_headers.x_cache_key);
        assert!(c.validate().is_ok());
        let bad = |y: &str| -> String {
            let v: serde_norway::Value = serde_norway::from_str(y).unwrap_or_default();
            match super::super::parse_config::<Config>(&v).and_then(|c| c.validate().map(|_| c)) {
                Ok(_) => String::new(),
                Err(SpecError::Invalid { path, message }) => format!("{path}: {message}"),
                Err(e) => e.to_string(),
            }
        };
        assert!(bad("strategy: redis").starts_with("strategy: expected one of: memory"));
        assert!(bad("{}").contains("strategy"), "{}", bad("{}"));
        assert!(bad("{strategy: memory, cache_ttl: 0}").starts_with("cache_ttl:"));
        assert!(bad("{strategy: memory, response_code: [99]}").starts_with("response_code[0]:"));
        assert!(bad("{strategy: memory, response_code: []}").starts_with("response_code:"));
        assert!(
            bad("{strategy: memory, request_method: [DELETE]}").starts_with("request_method[0]")
        );
        assert!(bad("{strategy: memory, memory: {size: 1}}").starts_with("memory.size"));
        assert!(
            bad("{strategy: memory, response_headers: {X-Cache-Key: false, age: false}}")
                .is_empty()
        );
    }

    #[test]
    fn cache_key_is_kongs() {
        let c = cfg("strategy: memory");
        // No query string: the uri part is the whole request line.
        let k = cache_key(&c, None, Some("r1"), &req("GET /a/B HTTP/1.1", &[]));
        assert_eq!(k, sha("r1|GET|GET /a/B HTTP/1.1||"));
        // With one: cut at `?`; every argument, sorted; repeated values sorted.
        let k = cache_key(
            &c,
            Some("c1"),
            Some("r1"),
            &req("GET /a?z=1&b=2&b=1&f&e= HTTP/1.1", &[]),
        );
        assert_eq!(k, sha("c1:r1|GET|GET /a|b=1,2:e=:f:z=1|"));
        let k = cache_key(&c, None, None, &req("HEAD /a HTTP/1.0", &[]));
        assert_eq!(k, sha("default|HEAD|HEAD /a HTTP/1.0||"));
        let c = cfg(
            "{strategy: memory, ignore_uri_case: true, vary_query_params: [b, q], vary_headers: [X-Foo, x_bar]}",
        );
        let k = cache_key(
            &c,
            None,
            Some("r"),
            &req(
                "GET /A?b=2&a=1 HTTP/1.1",
                &[("x-foo", "2"), ("x-foo", "1"), ("x-bar", "y")],
            ),
        );
        assert_eq!(k, sha("r|GET|get /a|b=2|X-Foo=1,2:x_bar=y"));
        assert_eq!(k.len(), 64);
    }

    #[test]
    fn directives_and_ttl() {
        let v = [
            HeaderValue::from_static("public, Max-Age=10, no-cache"),
            HeaderValue::from_static("x=\"q\""),
        ];
        let cc = parse_directives(v.iter());
        assert_eq!(cc.get("max-age"), Some(&Directive::Number(10.0)));
        assert_eq!(cc.get("no-cache"), Some(&Directive::Flag));
        assert_eq!(cc.get("x"), Some(&Directive::Text("\"q\"".into())));
        let cc = parse_directives([HeaderValue::from_static("s-maxage=5, max-age=10")].iter());
        assert_eq!(resource_ttl(&cc, &HeaderMap::new(), 0), 5.0);
        let mut h = HeaderMap::new();
        h.insert(
            http::header::EXPIRES,
            HeaderValue::from_static("Thu, 01 Jan 1970 00:01:40 GMT"),
        );
        assert_eq!(resource_ttl(&HashMap::new(), &h, 40), 60.0);
        assert_eq!(resource_ttl(&HashMap::new(), &h, 400), 0.0);
    }

    #[test]
    fn media_types_match_exactly() {
        let t = |s: &str| parse_media_type(s);
        let json = t("application/json").unwrap_or_else(|| panic!("parse"));
        assert!(content_type_matches(
            &json,
            &[t("application/json").unwrap_or_else(|| panic!())]
        ));
        let with = t("Application/JSON; charset=utf-8").unwrap_or_else(|| panic!("parse"));
        assert_eq!(with.main, "application");
        assert!(!content_type_matches(&with, &[json]));
        assert!(content_type_matches(
            &with,
            &[t("application/json; Charset=utf-8").unwrap_or_else(|| panic!())]
        ));
        assert!(content_type_matches(
            &with,
            &[t("*/*; charset=utf-8").unwrap_or_else(|| panic!())]
        ));
        assert!(t("application/json ").is_none());
        assert!(t("text").is_none());
        assert_eq!(
            t("text/html; q=\"a b\"").map(|m| m.params.get("q").cloned()),
            Some(Some("a b".into()))
        );
    }
}
