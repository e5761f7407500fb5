//! Kong's basic log serializer (`kong.log.serialize()` in Kong 3.9): the JSON record the
//! logging plugins (file-log, http-log, statsd) write or send for each request, built in
//! the log phase from the request state.
//!
//! As in Kong, `Authorization` and `Proxy-Authorization` request headers are replaced by
//! `REDACTED`; every other header and query argument is logged as received. The route,
//! service and consumer are their configured entities (never credentials or plugin
//! configurations), turned into JSON once per configuration and shared by every log
//! plugin instance.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::BuildContext;
use crate::config::Declarative;
use crate::core::state::RequestState;

/// The configured route, service and consumer entities as Kong serializes them, built once
/// per configuration.
pub struct Entities {
    routes: Vec<Value>,
    services: Vec<Value>,
    consumers: Vec<Value>,
    workspace: String,
}

/// The id of Kong's `default` workspace as this gateway reports it (Kong generates one
/// per database; db-less, a fixed value keeps logs comparable across instances).
pub const DEFAULT_WORKSPACE_ID: &str = "00000000-0000-4000-8000-000000000000";

impl Entities {
    /// The entities of the configuration being built, shared by every log plugin.
    pub fn shared(ctx: &BuildContext<'_>) -> Result<Arc<Entities>, super::BuildError> {
        ctx.cache
            .get_or_try_init(|| Ok(Arc::new(Entities::new(ctx.decl))))
    }

    pub fn new(decl: &Declarative) -> Entities {
        let ws = DEFAULT_WORKSPACE_ID;
        let services = decl
            .services
            .iter()
            .map(|s| {
                json!({
                    "id": s.id,
                    "name": s.named.then_some(&s.name),
                    "protocol": s.protocol,
                    "host": s.host,
                    "port": s.port,
                    "path": s.path,
                    "retries": s.retries,
                    "connect_timeout": s.connect_timeout_ms,
                    "read_timeout": s.read_timeout_ms,
                    "write_timeout": s.write_timeout_ms,
                    "enabled": s.enabled,
                    "ws_id": ws,
                })
            })
            .collect();
        let routes = decl
            .routes
            .iter()
            .map(|r| {
                let service = r
                    .service
                    .and_then(|i| decl.services.get(i))
                    .map(|s| json!({ "id": s.id }));
                let mut v = json!({
                    "id": r.id,
                    "name": r.name,
                    "paths": r.paths,
                    "methods": r.methods,
                    "protocols": r.protocols,
                    "strip_path": r.strip_path,
                    "preserve_host": r.preserve_host,
                    "regex_priority": r.regex_priority,
                    "path_handling": r.path_handling,
                    "https_redirect_status_code": r.https_redirect_status_code,
                    "service": service,
                    "ws_id": ws,
                });
                if let Some(m) = v.as_object_mut() {
                    if !r.hosts.is_empty() {
                        m.insert("hosts".into(), json!(r.hosts));
                    }
                    if !r.headers.is_empty() {
                        m.insert("headers".into(), json!(r.headers));
                    }
                }
                v
            })
            .collect();
        let consumers = decl
            .consumers
            .iter()
            .map(|c| {
                json!({
                    "id": c.id,
                    "username": c.username,
                    "custom_id": c.custom_id,
                    "ws_id": ws,
                })
            })
            .collect();
        Entities {
            routes,
            services,
            consumers,
            workspace: ws.to_string(),
        }
    }
}

/// `custom_fields_by_lua` (Kong's Lua expressions added to the record): an error naming
/// the field when it has entries, since no Lua runs here.
pub fn reject_lua(v: &Option<BTreeMap<String, String>>) -> Result<(), super::SpecError> {
    match v {
        Some(m) if !m.is_empty() => Err(super::SpecError::at(
            "custom_fields_by_lua",
            "Lua code is not supported by this gateway (no Lua runs here); remove the field",
        )),
        _ => Ok(()),
    }
}

/// The request's route name, as the logs show it.
pub fn route_name(st: &RequestState) -> Option<&str> {
    let rt = st.rt.as_ref()?;
    Some(rt.decl.routes[st.route.as_ref()?.route].name.as_str())
}

/// The request's service name.
pub fn service_name(st: &RequestState) -> Option<&str> {
    Some(st.rt.as_ref()?.services[st.service?].name.as_str())
}

/// The authenticated consumer's username.
pub fn consumer_username(st: &RequestState) -> Option<&str> {
    st.rt.as_ref()?.decl.consumers[st.consumer?]
        .username
        .as_deref()
}

/// The whole request's size (Kong's `request_length`: header block and body).
pub fn request_size(st: &RequestState) -> u64 {
    st.bytes_in + st.request_header_bytes
}

/// Kong's latencies in milliseconds: the whole request, the gateway's share before the
/// upstream was called (or until its own answer), the upstream's time to the response
/// head (-1 without one) and the time spent receiving the upstream body.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Latencies {
    pub request: u64,
    pub kong: u64,
    pub proxy: i64,
    pub receive: u64,
}

pub fn latencies(st: &RequestState) -> Latencies {
    let request = st.elapsed_ms();
    match (st.upstream_latency_ms, st.start, st.upstream_start) {
        (Some(up), Some(t0), Some(u0)) => {
            let kong = u0.saturating_duration_since(t0).as_millis() as u64;
            Latencies {
                request,
                kong,
                proxy: up as i64,
                receive: request.saturating_sub(kong + up),
            }
        }
        (Some(up), _, _) => Latencies {
            request,
            kong: request.saturating_sub(up),
            proxy: up as i64,
            receive: 0,
        },
        _ => Latencies {
            request,
            kong: request,
            proxy: -1,
            receive: 0,
        },
    }
}

/// Kong's `kong.response.get_source()`: `service` for a proxied response, `exit` for an
/// answer of the gateway or a plugin, `error` when the upstream could not be reached.
pub fn source(st: &RequestState) -> &'static str {
    if st.local_response {
        "exit"
    } else if st.upstream_status.is_some() {
        "service"
    } else if st.route.is_none() || st.service.is_none() {
        "exit"
    } else {
        "error"
    }
}

/// A header map as Kong's `get_headers()`: lowercase names, a string per name, or an
/// array when the header came several times.
fn headers_json(h: &http::HeaderMap, redact: bool) -> Value {
    let mut m = Map::new();
    for name in h.keys() {
        let key = name.as_str();
        if redact && (key == "authorization" || key == "proxy-authorization") {
            m.insert(key.to_string(), Value::String("REDACTED".into()));
            continue;
        }
        let mut vals: Vec<Value> = h
            .get_all(name)
            .iter()
            .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let v = if vals.len() == 1 {
            vals.pop().unwrap_or(Value::Null)
        } else {
            Value::Array(vals)
        };
        m.insert(key.to_string(), v);
    }
    Value::Object(m)
}

fn decode(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

/// The query string as Kong's `get_query()`: decoded arguments, `true` for an argument
/// without `=`, an array for a repeated one.
pub fn query_json(query: Option<&str>) -> Value {
    let mut m = Map::new();
    for part in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = match part.split_once('=') {
            Some((k, v)) => (decode(k), Value::String(decode(v))),
            None => (decode(part), Value::Bool(true)),
        };
        if k.is_empty() {
            continue;
        }
        match m.get_mut(&k) {
            Some(Value::Array(a)) => a.push(v),
            Some(prev) => {
                let first = std::mem::take(prev);
                *prev = Value::Array(vec![first, v]);
            }
            None => {
                m.insert(k, v);
            }
        }
    }
    Value::Object(m)
}

/// Size of a response head on the wire (status line, fields, blank line).
fn response_head_size(h: &http::HeaderMap) -> u64 {
    let fields: usize = h.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    (17 + fields + 2) as u64
}

/// The record for a finished request: Kong's `kong.log.serialize()`.
pub fn serialize(st: &RequestState, status: u16, ent: &Entities) -> Value {
    let heads = st.log_heads.as_deref();
    let (method, uri, req_headers, query) = match heads {
        Some(h) => (
            h.request.method.as_str().to_string(),
            h.request
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| h.request.uri.path().to_string()),
            headers_json(&h.request.headers, true),
            query_json(h.request.uri.query()),
        ),
        None => (String::new(), String::new(), json!({}), json!({})),
    };
    let host = heads
        .and_then(|h| {
            h.request
                .headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .or_else(|| h.request.uri.host())
        })
        .map(|h| match h.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => h,
        })
        .unwrap_or("")
        .to_ascii_lowercase();
    let scheme = if st.tls { "https" } else { "http" };
    let url = format!("{scheme}://{host}:{}{uri}", st.local_port);
    let (resp_headers, head_size) = match heads {
        Some(h) => (
            headers_json(&h.response, false),
            response_head_size(&h.response),
        ),
        None => (json!({}), 0),
    };
    let rt = st.rt.as_ref();
    let route = st
        .route
        .as_ref()
        .and_then(|m| ent.routes.get(m.route).cloned());
    let service = st.service.and_then(|s| ent.services.get(s).cloned());
    let consumer = st.consumer.and_then(|c| ent.consumers.get(c).cloned());
    let tries: Option<Vec<Value>> = match (rt, st.service) {
        (Some(rt), Some(si)) if !st.tried.is_empty() => Some(
            st.tried
                .iter()
                .filter_map(|&ti| rt.services[si].balancer.targets.get(ti))
                .map(|t| match t.addr() {
                    Some(a) => json!({ "ip": a.ip().to_canonical().to_string(), "port": a.port() }),
                    None => json!({ "ip": &*t.name }),
                })
                .collect(),
        ),
        _ => None,
    };
    let authenticated_entity = st.credential.as_ref().map(|id| {
        json!({
            "id": id,
            "consumer_id": st.consumer.and_then(|c| ent.consumers.get(c)).and_then(|c| c.get("id")),
        })
    });
    // Kong adds `request.tls` (version, cipher, client verification) on TLS connections;
    // the connection's TLS parameters are not kept per request here, so it is left out.
    let request = json!({
        "id": st.request_id,
        "uri": uri,
        "url": url,
        "querystring": query,
        "method": method,
        "headers": req_headers,
        "size": request_size(st),
    });
    let mut root = json!({
        "request": request,
        "upstream_uri": st.upstream_uri.as_deref().unwrap_or(""),
        "upstream_status": st.upstream_status.map(|s| s.to_string()).unwrap_or_default(),
        "response": {
            "status": status,
            "headers": resp_headers,
            "size": st.bytes_out + head_size,
        },
        "latencies": latencies(st),
        "client_ip": st.client_addr.as_deref().unwrap_or(""),
        "started_at": st.start_wall_ms as u64,
        "source": source(st),
        "workspace": ent.workspace,
        "workspace_name": "default",
    });
    if let Some(m) = root.as_object_mut() {
        let opt = [
            ("tries", tries.map(Value::Array)),
            ("authenticated_entity", authenticated_entity),
            ("route", route),
            ("service", service),
            ("consumer", consumer),
            ("trace_id", st.trace_id_hex().map(Value::String)),
            (
                "correlation_id",
                st.correlation_id
                    .as_ref()
                    .map(|(_, v)| Value::String(v.clone())),
            ),
        ];
        for (k, v) in opt {
            if let Some(v) = v {
                m.insert(k.into(), v);
            }
        }
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_like_kong() {
        let q = query_json(Some("a=1&b&a=2&c=&d=x+y%21&&=z"));
        assert_eq!(q, json!({"a": ["1", "2"], "b": true, "c": "", "d": "x y!"}));
    }

    #[test]
    fn authorization_redacted_and_repeats_listed() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "authorization",
            "Basic c2VjcmV0".parse().expect("test value"),
        );
        h.insert(
            "proxy-authorization",
            "Bearer t".parse().expect("test value"),
        );
        h.append("x-a", "1".parse().expect("test value"));
        h.append("x-a", "2".parse().expect("test value"));
        let v = headers_json(&h, true);
        assert_eq!(
            v,
            json!({"authorization": "REDACTED", "proxy-authorization": "REDACTED", "x-a": ["1", "2"]})
        );
        assert!(!v.to_string().contains("c2VjcmV0"));
    }

    #[test]
    fn latencies_without_upstream() {
        let st = RequestState::default();
        let l = latencies(&st);
        assert_eq!(l.proxy, -1);
        assert_eq!(source(&st), "exit");
    }
}
