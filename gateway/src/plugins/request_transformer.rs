//! Kong's `request-transformer`: rewrites the request before it goes upstream, in Kong's
//! order: URI (`replace.uri`, with templates such as `$(uri_captures.id)`), method, headers
//! (remove, rename, replace, add, append), body (same order; JSON and urlencoded forms,
//! top-level keys), query string (same order).
//!
//! Headers are edited on the request itself in the access phase (later plugins see them, as
//! in Kong). The body is rewritten as a whole once it has been read: the proxy buffers it
//! (see `Plugin::buffers_request`); a body that is not valid JSON is passed through as is.
//!
//! The operations and their order are the shared table in `transform.rs` (multipart bodies
//! in `transform/multipart.rs`, templates in `transform/template.rs`); this file holds the
//! config, the request's header target and the phases.

use std::sync::Arc;

use crate::core::RequestHeader;
use crate::core::Session;
use async_trait::async_trait;
use bytes::BytesMut;
use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::Value;

use super::transform::multipart::{PartsTarget, boundary, parse_multipart, serialize_multipart};
use super::transform::{
    ArgValue, Args, ArgsTarget, EntryError, Env, KONG_ORDER, MULTIPART_ORDER, Ops, Target,
    Template, TemplateError, append_arg, check_header_name, check_pair, decode_args, encode_args,
    json::JsonTarget, names, split_entry,
};
use super::{BuildError, Flow, Plugin, SpecError};
use crate::core::respond::LocalResponse;
use crate::core::state::RequestState;

// dup: alike in shape only (other types and fields); kept apart on purpose.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lists {
    #[serde(default)]
    pub body: Vec<String>,
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub querystring: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaceLists {
    #[serde(default)]
    pub body: Vec<String>,
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub querystring: Vec<String>,
    pub uri: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub http_method: Option<String>,
    #[serde(default)]
    pub remove: Lists,
    #[serde(default)]
    pub rename: Lists,
    #[serde(default)]
    pub replace: ReplaceLists,
    #[serde(default)]
    pub add: Lists,
    #[serde(default)]
    pub append: Lists,
}

/// Headers whose values frame the body: the gateway owns them.
const FRAMING: &[&str] = &["content-length", "transfer-encoding"];

impl Config {
    /// The lists of `name:value` entries (every operation but remove), by field path.
    fn value_lists(&self) -> [(&'static str, &Vec<String>); 12] {
        [
            ("rename.body", &self.rename.body),
            ("rename.headers", &self.rename.headers),
            ("rename.querystring", &self.rename.querystring),
            ("replace.body", &self.replace.body),
            ("replace.headers", &self.replace.headers),
            ("replace.querystring", &self.replace.querystring),
            ("add.body", &self.add.body),
            ("add.headers", &self.add.headers),
            ("add.querystring", &self.add.querystring),
            ("append.body", &self.append.body),
            ("append.headers", &self.append.headers),
            ("append.querystring", &self.append.querystring),
        ]
    }

    /// Template expressions Kong evaluates as Lua that the gateway cannot: the file loads
    /// (as in Kong) and a request that renders one is answered 500, as Kong answers an
    /// expression that fails.
    pub fn warnings(&self) -> Vec<(String, String)> {
        let pairs = self.value_lists();
        let mut out = Vec::new();
        let mut note = |field: String, value: &str| {
            if let Ok(t) = Template::parse(value)
                && let Some(expr) = t.unsupported()
            {
                out.push((
                    field,
                    format!("template expression `$({expr})` is Lua the gateway cannot evaluate: requests that render it are answered 500 (as Kong answers a failing expression); supported: headers, query_params, uri_captures, `or \"default\"`, quoted literals"),
                ));
            }
        };
        for (field, list) in pairs {
            for (i, e) in list.iter().enumerate() {
                note(format!("{field}[{i}]"), split_entry(e).1);
            }
        }
        if let Some(u) = &self.replace.uri {
            note("replace.uri".to_string(), u);
        }
        out
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        if let Some(m) = &self.http_method
            && (m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(SpecError::at(
                "http_method",
                format!("`{m}` is not an HTTP method (upper-case letters only)"),
            ));
        }
        for (field, list) in [
            ("remove.body", &self.remove.body),
            ("remove.headers", &self.remove.headers),
            ("remove.querystring", &self.remove.querystring),
        ] {
            for (i, e) in list.iter().enumerate() {
                let (name, _) = split_entry(e);
                if name.is_empty() {
                    return Err(SpecError::at(format!("{field}[{i}]"), "empty name"));
                }
                if field == "remove.headers" {
                    check_header_name(name)
                        .map_err(|m| SpecError::at(format!("{field}[{i}]"), m.to_string()))?;
                }
            }
        }
        let pairs = self.value_lists();
        for (field, list) in pairs {
            for (i, e) in list.iter().enumerate() {
                let at = |m: EntryError| SpecError::at(format!("{field}[{i}]"), m.to_string());
                let (name, value) = check_pair(e).map_err(at)?;
                if field.ends_with(".headers") {
                    check_header_name(name).map_err(at)?;
                    if field == "rename.headers" {
                        check_header_name(value).map_err(at)?;
                    }
                }
                Template::parse(value).map_err(|e| at(e.into()))?;
            }
        }
        if let Some(u) = &self.replace.uri {
            Template::parse(u).map_err(|m| SpecError::at("replace.uri", m.to_string()))?;
        }
        Ok(())
    }
}

/// A compiled `name:value` entry.
struct Entry {
    name: String,
    value: Template,
}

fn compile(list: &[String]) -> Result<Vec<Entry>, TemplateError> {
    list.iter()
        .map(|e| {
            let (name, value) = split_entry(e);
            Ok(Entry {
                name: name.to_string(),
                value: Template::parse(value)?,
            })
        })
        .collect()
}

/// One target's operations as configured, values (and new names) still templates.
struct TemplateOps {
    remove: Vec<String>,
    rename: Vec<Entry>,
    replace: Vec<Entry>,
    add: Vec<Entry>,
    append: Vec<Entry>,
}

impl TemplateOps {
    fn new(
        remove: &[String],
        rename: &[String],
        replace: &[String],
        add: &[String],
        append: &[String],
    ) -> Result<TemplateOps, TemplateError> {
        Ok(TemplateOps {
            remove: names(remove),
            rename: compile(rename)?,
            replace: compile(replace)?,
            add: compile(add)?,
            append: compile(append)?,
        })
    }

    fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.is_empty()
            && self.replace.is_empty()
            && self.add.is_empty()
            && self.append.is_empty()
    }

    fn render(&self, env: &Env<'_>) -> RenderedOps {
        let r = |l: &[Entry]| -> Vec<(String, String)> {
            l.iter()
                .map(|e| (e.name.clone(), e.value.render(env)))
                .collect()
        };
        Ops {
            remove: self.remove.clone(),
            rename: r(&self.rename),
            replace: r(&self.replace),
            add: r(&self.add),
            append: r(&self.append),
        }
    }
}

/// Operations with their templates rendered against the request.
pub type RenderedOps = Ops<String>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
    /// `multipart/form-data` with its boundary.
    Multipart(String),
}

/// What is left to do once the access phase ran: upstream-only edits and the body.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    pub method: Option<http::Method>,
    pub host: Option<String>,
    pub body: Option<(BodyKind, RenderedOps)>,
}

pub struct RequestTransformer {
    method: Option<http::Method>,
    uri: Option<Template>,
    headers: TemplateOps,
    query: TemplateOps,
    body: TemplateOps,
}

impl RequestTransformer {
    pub fn new(c: Config) -> Result<RequestTransformer, BuildError> {
        let method = match &c.http_method {
            Some(m) => Some(
                http::Method::from_bytes(m.as_bytes())
                    .map_err(|_| BuildError::Invalid(format!("bad method {m}")))?,
            ),
            None => None,
        };
        Ok(RequestTransformer {
            method,
            uri: c
                .replace
                .uri
                .as_deref()
                .map(Template::parse)
                .transpose()
                .map_err(BuildError::other)?,
            headers: TemplateOps::new(
                &c.remove.headers,
                &c.rename.headers,
                &c.replace.headers,
                &c.add.headers,
                &c.append.headers,
            )
            .map_err(BuildError::other)?,
            query: TemplateOps::new(
                &c.remove.querystring,
                &c.rename.querystring,
                &c.replace.querystring,
                &c.add.querystring,
                &c.append.querystring,
            )
            .map_err(BuildError::other)?,
            body: TemplateOps::new(
                &c.remove.body,
                &c.rename.body,
                &c.replace.body,
                &c.add.body,
                &c.append.body,
            )
            .map_err(BuildError::other)?,
        })
    }
}

/// Largest urlencoded body copied into the query string for `http_method` GET/HEAD/TRACE:
/// the body is read in the access phase and replayed upstream from Pingora's retry buffer,
/// which holds 64 KiB.
const METHOD_BODY_LIMIT: u64 = 64 * 1024;

impl RequestTransformer {
    /// The query arguments with the urlencoded body's arguments added (Kong's
    /// `transform_method`), or `None` when there is no such body to read.
    async fn body_into_query(
        &self,
        session: &mut Session,
        query: &Args,
    ) -> crate::core::Result<Option<Args>> {
        let req = session.req_header();
        let header = |n: http::HeaderName| req.headers.get(n).and_then(|v| v.to_str().ok());
        if body_kind(header(http::header::CONTENT_TYPE)) != Some(BodyKind::Form) {
            return Ok(None);
        }
        let Some(len) = header(http::header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok())
        else {
            return Ok(None);
        };
        if len == 0 || len > METHOD_BODY_LIMIT {
            if len > 0 {
                tracing::debug!(
                    len,
                    "request-transformer: body too large to copy into the query"
                );
            }
            return Ok(None);
        }
        session.enable_retry_buffering();
        let mut raw = Vec::new();
        while let Some(chunk) = session.read_request_body().await? {
            raw.extend_from_slice(&chunk);
        }
        let body = decode_args(&String::from_utf8_lossy(&raw));
        if body.is_empty() {
            return Ok(None);
        }
        let mut merged = query.clone();
        for (name, value) in body {
            match (merged.get_mut(&name), value) {
                (None, v) => {
                    merged.insert(name, v);
                }
                (Some(cur), ArgValue::One(v)) => append_arg(cur, v),
                (Some(cur), ArgValue::Many(vs)) => {
                    for v in vs {
                        append_arg(cur, v);
                    }
                }
                (Some(_), ArgValue::Flag) => {}
            }
        }
        Ok(Some(merged))
    }
}

/// Characters escaped in a value substituted into `replace.uri`: everything but RFC
/// 3986's unreserved characters other than `.` (so `/`, `.`, `%`, `?`, `#` cannot change
/// the path's structure).
const VALUE_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'~');

/// Characters escaped in a rewritten path (it must stay one valid URI path).
const PATH_ESCAPE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|');

/// The header table Kong's transform works on: lower-case names, values in order.
type HeaderTable = Vec<(String, Vec<String>)>;

fn find(t: &HeaderTable, name: &str) -> Option<usize> {
    t.iter().position(|(k, _)| k == name)
}

fn set(t: &mut HeaderTable, name: &str, values: Vec<String>) {
    match find(t, name) {
        Some(i) => t[i].1 = values,
        None => t.push((name.to_string(), values)),
    }
}

/// The request's headers as a transform target: the table, the names cleared and the
/// names (re)written; `Host` goes upstream only (replace), never added or appended.
struct HeaderTarget<'a> {
    table: HeaderTable,
    cleared: Vec<String>,
    touched: Vec<String>,
    host: &'a mut Option<String>,
}

fn mark(v: &mut Vec<String>, n: &str) {
    if !v.iter().any(|x| x == n) {
        v.push(n.to_string());
    }
}

impl Target<String> for HeaderTarget<'_> {
    fn remove(&mut self, name: &str) -> bool {
        let n = name.to_ascii_lowercase();
        let Some(i) = find(&self.table, &n) else {
            return false;
        };
        self.table.remove(i);
        mark(&mut self.cleared, &n);
        true
    }

    fn rename(&mut self, old: &str, new: &str) -> bool {
        let o = old.to_ascii_lowercase();
        let n = new.to_ascii_lowercase();
        let Some(i) = find(&self.table, &o) else {
            return false;
        };
        let (_, v) = self.table.remove(i);
        set(&mut self.table, &n, v);
        mark(&mut self.cleared, &o);
        mark(&mut self.touched, &n);
        true
    }

    fn replace(&mut self, name: &str, value: &String) -> bool {
        let n = name.to_ascii_lowercase();
        if n == "host" {
            *self.host = Some(value.clone());
        } else if find(&self.table, &n).is_some() {
            set(&mut self.table, &n, vec![value.clone()]);
            mark(&mut self.touched, &n);
        } else {
            return false;
        }
        true
    }

    fn add(&mut self, name: &str, value: &String) -> bool {
        let n = name.to_ascii_lowercase();
        if n == "host" || find(&self.table, &n).is_some() {
            return false;
        }
        set(&mut self.table, &n, vec![value.clone()]);
        mark(&mut self.touched, &n);
        true
    }

    fn append(&mut self, name: &str, value: &String) -> bool {
        let n = name.to_ascii_lowercase();
        if n == "host" {
            return false;
        }
        match find(&self.table, &n) {
            Some(i) => self.table[i].1.push(value.clone()),
            None => self.table.push((n.clone(), vec![value.clone()])),
        }
        mark(&mut self.touched, &n);
        true
    }
}

/// Runs the header operations; returns the names to clear and the names to (re)write.
fn transform_headers(
    ops: &RenderedOps,
    table: HeaderTable,
    host: &mut Option<String>,
) -> (Vec<String>, HeaderTable) {
    let mut t = HeaderTarget {
        table,
        cleared: Vec::new(),
        touched: Vec::new(),
        host,
    };
    ops.apply(KONG_ORDER, &mut t);
    let touched = t.touched;
    let written: HeaderTable = t
        .table
        .into_iter()
        .filter(|(k, _)| touched.contains(k))
        .collect();
    (t.cleared, written)
}

/// The JSON body transform; `None` leaves the body untouched (invalid JSON, not an object,
/// or nothing changed).
pub fn transform_json(ops: &RenderedOps, body: &[u8]) -> Option<Vec<u8>> {
    let has_body = !body.is_empty();
    let obj = if has_body {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => m,
            _ => return None,
        }
    } else {
        serde_json::Map::new()
    };
    let mut t = JsonTarget {
        obj,
        rename_clears_missing: true,
    };
    if !ops.apply_to_body(KONG_ORDER, has_body, &mut t) {
        return None;
    }
    serde_json::to_vec(&Value::Object(t.obj)).ok()
}

/// The urlencoded form transform; `None` leaves the body untouched.
pub fn transform_form(ops: &RenderedOps, body: &[u8]) -> Option<Vec<u8>> {
    let mut args: Args = decode_args(&String::from_utf8_lossy(body));
    let changed = ops.apply_to_body(KONG_ORDER, !body.is_empty(), &mut ArgsTarget(&mut args));
    changed.then(|| encode_args(&args).into_bytes())
}

/// The query-string transform (Kong runs it whenever a query operation is configured).
fn transform_query(ops: &RenderedOps, mut args: Args) -> Args {
    ops.apply(KONG_ORDER, &mut ArgsTarget(&mut args));
    args
}

fn body_kind(content_type: Option<&str>) -> Option<BodyKind> {
    let raw = content_type?;
    let ct = raw.to_ascii_lowercase();
    if ct.contains("application/json") {
        Some(BodyKind::Json)
    } else if ct.contains("multipart/form-data") {
        boundary(raw).map(BodyKind::Multipart)
    } else if ct.contains("application/x-www-form-urlencoded") {
        Some(BodyKind::Form)
    } else {
        None
    }
}

/// Kong's multipart transform: rename, remove, replace, add (no append); `None` leaves
/// the body untouched.
pub fn transform_multipart(ops: &RenderedOps, body: &[u8], boundary: &str) -> Option<Vec<u8>> {
    let has_body = !body.is_empty();
    let parts = if has_body {
        parse_multipart(body, boundary)?
    } else {
        Vec::new()
    };
    let mut t = PartsTarget(parts);
    let changed = ops.apply_to_body(MULTIPART_ORDER, has_body, &mut t);
    changed.then(|| serialize_multipart(&t.0, boundary))
}

#[async_trait]
impl Plugin for RequestTransformer {
    // dup: the shape of every plugin file (its own Config, checks and hook types).
    fn name(&self) -> &'static str {
        "request-transformer"
    }

    fn priority(&self) -> i32 {
        801
    }

    async fn access(
        &self,
        session: &mut Session,
        st: &mut RequestState,
    ) -> crate::core::Result<Flow> {
        let req = session.req_header();
        // Templates and renames see the authenticated identity (consumer and claim
        // headers set by auth plugins), never a client's copy (removed before access).
        let mut orig_headers = req.headers.clone();
        for (k, v) in &st.upstream_headers {
            if let Ok(v) = http::HeaderValue::from_str(v) {
                orig_headers.insert(k.clone(), v);
            }
        }
        let query = decode_args(req.uri.query().unwrap_or(""));
        let captures = st
            .route
            .as_ref()
            .map(|m| m.captures.clone())
            .unwrap_or_default();
        let env = Env {
            headers: &orig_headers,
            query: &query,
            captures: &captures,
            failed: Default::default(),
        };
        // A template the gateway cannot evaluate: Kong answers a failing one 500.
        let failed = |st: &RequestState| {
            tracing::warn!(
                "request-transformer: a template expression could not be evaluated; answered 500"
            );
            Ok(Flow::Respond(LocalResponse::error(
                500,
                "An unexpected error occurred",
                &st.request_id,
                None,
            )))
        };
        let mut pending = Pending {
            method: self.method.clone(),
            ..Default::default()
        };

        // 1. URI: the path sent upstream; the query string stays.
        let current = st.upstream_uri.clone().unwrap_or_else(|| "/".into());
        let (mut path, mut qs) = match current.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (current.clone(), None),
        };
        if let Some(t) = &self.uri {
            // Values from the request are percent-encoded (`/`, `.` and `%` included), so
            // a value cannot add path segments; the result is normalised and must stay
            // below the template's literal directory (`/users/` of `/users/$(...)`).
            let rendered =
                t.render_escaped(&env, &|v| utf8_percent_encode(v, VALUE_ESCAPE).to_string());
            if env.failed.get() {
                return failed(st);
            }
            let prefix = t.literal_prefix();
            let base = &prefix[..prefix.rfind('/').map(|i| i + 1).unwrap_or(0)];
            let normalized = crate::net::path::normalize_path(&rendered).into_owned();
            // Also as an upstream that decodes `%2F` would read it.
            let decoded = percent_encoding::percent_decode_str(&normalized).decode_utf8_lossy();
            let base = crate::net::path::normalize_path(base);
            let inside = |p: &str| crate::net::path::normalize_path(p).starts_with(base.as_ref());
            if rendered.starts_with('/') && !(inside(&normalized) && inside(&decoded)) {
                tracing::debug!("request-transformer: replace.uri left its directory; refused");
                return Ok(Flow::Respond(LocalResponse::error(
                    400,
                    "Bad request",
                    &st.request_id,
                    None,
                )));
            }
            let rendered = if rendered.starts_with('/') {
                normalized
            } else {
                rendered
            };
            if !rendered.starts_with('/') {
                tracing::warn!(path = %rendered, "request-transformer: replace.uri must render to a path starting with /");
                return Ok(Flow::Respond(LocalResponse::error(
                    500,
                    "An unexpected error occurred",
                    &st.request_id,
                    None,
                )));
            }
            path = utf8_percent_encode(&rendered, PATH_ESCAPE).to_string();
        }

        // 2. Method (applied upstream). Kong copies an urlencoded body into the query
        // string when the method becomes GET, HEAD or TRACE; the body still goes upstream.
        if let Some(m) = &self.method
            && matches!(m.as_str(), "GET" | "HEAD" | "TRACE")
            && let Some(merged) = self.body_into_query(session, &query).await?
        {
            qs = Some(encode_args(&merged));
        }

        // 3. Headers.
        if !self.headers.is_empty() {
            let ops = self.headers.render(&env);
            if env.failed.get() {
                return failed(st);
            }
            let mut table: HeaderTable = Vec::new();
            for (k, v) in orig_headers.iter() {
                let name = k.as_str();
                if name == "host" || FRAMING.contains(&name) {
                    continue;
                }
                let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                match find(&table, name) {
                    Some(i) => table[i].1.push(v),
                    None => table.push((name.to_string(), vec![v])),
                }
            }
            let (cleared, written) = transform_headers(&ops, table, &mut pending.host);
            let req = session.req_header_mut();
            for n in &cleared {
                if !FRAMING.contains(&n.as_str()) {
                    req.remove_header(n.as_str());
                }
            }
            for (n, values) in written {
                if FRAMING.contains(&n.as_str()) {
                    continue;
                }
                let Ok(name) = http::HeaderName::from_bytes(n.as_bytes()) else {
                    continue;
                };
                req.remove_header(&name);
                for v in values {
                    if let Err(e) = req.append_header(name.clone(), v.as_str()) {
                        tracing::debug!(header = %name, error = %e, "request-transformer: invalid header value skipped");
                    }
                }
            }
        }

        // 4. Body (rewritten once it has been read). Without a body only add and append
        // can change anything; then the request keeps its framing.
        let h = &session.req_header().headers;
        let has_body = h.contains_key(http::header::TRANSFER_ENCODING)
            || h.get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 0);
        let creates = !self.body.add.is_empty() || !self.body.append.is_empty();
        if !self.body.is_empty()
            && (has_body || creates)
            && let Some(kind) = body_kind(
                h.get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok()),
            )
        {
            pending.body = Some((kind, self.body.render(&env)));
            if env.failed.get() {
                return failed(st);
            }
        }

        // 5. Query string.
        if !self.query.is_empty() {
            let ops = self.query.render(&env);
            if env.failed.get() {
                return failed(st);
            }
            let args = transform_query(&ops, query.clone());
            let enc = encode_args(&args);
            qs = (!enc.is_empty()).then_some(enc);
        }
        st.upstream_uri = Some(match qs {
            Some(q) => format!("{path}?{q}"),
            None => path,
        });
        if pending.method.is_some() || pending.host.is_some() || pending.body.is_some() {
            st.ext.insert(Arc::new(pending));
        }
        Ok(Flow::Continue)
    }

    fn upstream_request(&self, req: &mut RequestHeader, st: &mut RequestState) {
        let Some(p) = st.ext.get::<Arc<Pending>>().cloned() else {
            return;
        };
        if let Some(m) = &p.method {
            req.set_method(m.clone());
        }
        if let Some(h) = &p.host
            && let Err(e) = req.insert_header("host", h.as_str())
        {
            tracing::debug!(error = %e, "request-transformer: invalid host skipped");
        }
    }

    fn buffers_request(&self, _req: &RequestHeader, st: &RequestState) -> bool {
        st.ext
            .get::<Arc<Pending>>()
            .is_some_and(|p| p.body.is_some())
    }

    fn request_body(&self, body: &mut BytesMut, st: &mut RequestState) {
        let Some(p) = st.ext.get::<Arc<Pending>>().cloned() else {
            return;
        };
        let Some((kind, ops)) = &p.body else {
            return;
        };
        let out = match kind {
            BodyKind::Json => transform_json(ops, body),
            BodyKind::Form => transform_form(ops, body),
            BodyKind::Multipart(b) => transform_multipart(ops, body, b),
        };
        match out {
            Some(new) => {
                body.clear();
                body.extend_from_slice(&new);
            }
            None if *kind != BodyKind::Form && !body.is_empty() => {
                tracing::debug!(
                    "request-transformer: body left as is (not a JSON object, or malformed multipart)"
                );
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(
        remove: &[&str],
        rename: &[(&str, &str)],
        replace: &[(&str, &str)],
        add: &[(&str, &str)],
        append: &[(&str, &str)],
    ) -> RenderedOps {
        let p = |l: &[(&str, &str)]| -> Vec<(String, String)> {
            l.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        RenderedOps {
            remove: remove.iter().map(|s| s.to_string()).collect(),
            rename: p(rename),
            replace: p(replace),
            add: p(add),
            append: p(append),
        }
    }

    #[test]
    fn json_order_and_truthiness() {
        let o = ops(
            &["gone"],
            &[("old", "new"), ("missing", "kept")],
            &[("r", "R"), ("f", "F")],
            &[("f", "added"), ("r", "no")],
            &[("r", "A")],
        );
        let body = br#"{"gone":1,"old":"o","kept":2,"r":"x","f":false}"#;
        let out = transform_json(&o, body).expect("changed");
        let v: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v, serde_json::json!({"new":"o","r":["R","A"],"f":"added"}));
    }

    #[test]
    fn json_invalid_or_not_object_passes() {
        let o = ops(&[], &[], &[], &[("a", "1")], &[]);
        assert!(transform_json(&o, b"{not json").is_none());
        assert!(transform_json(&o, b"[1,2]").is_none());
        // An empty body gets the added keys (Kong's behaviour).
        assert_eq!(
            transform_json(&o, b"").expect("changed"),
            br#"{"a":"1"}"#.to_vec()
        );
    }

    #[test]
    fn form_body() {
        let o = ops(
            &["x"],
            &[("a", "b")],
            &[("c", "C")],
            &[("d", "D")],
            &[("c", "2")],
        );
        let out = transform_form(&o, b"x=1&a=2&c=3").expect("changed");
        assert_eq!(String::from_utf8_lossy(&out), "b=2&c=C&c=2&d=D");
    }

    #[test]
    fn multipart_body() {
        let b = "XyZ";
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"old\"\r\n\r\no\r\n--XyZ\r\nContent-Disposition: form-data; name=\"gone\"\r\n\r\ng\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nline1\r\nline2\r\n--XyZ\r\nContent-Disposition: form-data; name=\"r\"\r\n\r\nx\r\n--XyZ--\r\n";
        let o = ops(
            &["gone"],
            &[("old", "new")],
            &[("r", "R")],
            &[("a", "1"), ("r", "no")],
            &[],
        );
        let out = transform_multipart(&o, body.as_bytes(), b).expect("changed");
        let parts = parse_multipart(&out, b).expect("parses");
        let got: Vec<(Option<String>, String)> = parts
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    String::from_utf8_lossy(&p.value).into_owned(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (Some("file".into()), "line1\r\nline2".into()),
                (Some("new".into()), "o".into()),
                (Some("r".into()), "R".into()),
                (Some("a".into()), "1".into()),
            ]
        );
        assert!(
            String::from_utf8_lossy(&out)
                .contains("filename=\"a.txt\"\r\nContent-Type: text/plain")
        );
        // Malformed: left alone.
        assert!(transform_multipart(&o, b"--XyZ\r\nbroken", b).is_none());
        assert_eq!(
            boundary("multipart/form-data; boundary=\"XyZ\""),
            Some("XyZ".into())
        );
    }

    #[test]
    fn headers_order() {
        let o = ops(
            &["x-remove"],
            &[("x-old", "x-new")],
            &[("x-new", "replaced"), ("x-absent", "no")],
            &[("x-new", "not-added"), ("x-added", "yes")],
            &[("x-new", "appended")],
        );
        let table = vec![
            ("x-remove".to_string(), vec!["1".to_string()]),
            ("x-old".to_string(), vec!["o".to_string()]),
        ];
        let mut host = None;
        let (cleared, written) = transform_headers(&o, table, &mut host);
        assert_eq!(cleared, vec!["x-remove".to_string(), "x-old".to_string()]);
        assert_eq!(
            written,
            vec![
                (
                    "x-new".to_string(),
                    vec!["replaced".to_string(), "appended".to_string()]
                ),
                ("x-added".to_string(), vec!["yes".to_string()]),
            ]
        );
        assert!(host.is_none());
    }
}
