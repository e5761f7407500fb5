//! Kong's `request-termination`: answers every request (or only those carrying the
//! `trigger` header or query parameter) with a fixed status and message or body, or, with
//! `echo`, with a JSON description of the request.

use crate::core::Session;
use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::transform::{ArgValue, decode_args};
use super::{Flow, Plugin, SpecError};
use crate::core::respond::LocalResponse;
use crate::core::state::RequestState;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_status")]
    pub status_code: u16,
    pub message: Option<String>,
    pub body: Option<String>,
    pub content_type: Option<String>,
    #[serde(default)]
    pub echo: bool,
    pub trigger: Option<String>,
}

fn default_status() -> u16 {
    503
}

fn present(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|s| !s.is_empty())
}

impl Config {
    pub fn validate(&self) -> Result<(), SpecError> {
        if !(100..=599).contains(&self.status_code) {
            return Err(SpecError::at(
                "status_code",
                "value should be between 100 and 599",
            ));
        }
        if present(&self.message) && (present(&self.content_type) || present(&self.body)) {
            return Err(SpecError::at(
                "message",
                "message cannot be used with content_type or body",
            ));
        }
        if present(&self.content_type) && !present(&self.body) {
            return Err(SpecError::at(
                "content_type",
                "content_type requires a body",
            ));
        }
        if self.echo && (present(&self.content_type) || present(&self.body)) {
            return Err(SpecError::at(
                "echo",
                "echo cannot be used with content_type and body",
            ));
        }
        if let Some(ct) = &self.content_type
            && http::HeaderValue::from_str(ct).is_err()
        {
            return Err(SpecError::at("content_type", "not a valid header value"));
        }
        if let Some(t) = &self.trigger
            && http::HeaderName::from_bytes(t.as_bytes()).is_err()
        {
            return Err(SpecError::at("trigger", "not a valid header name"));
        }
        Ok(())
    }
}

/// Kong's default messages by status.
fn default_message(status: u16) -> Option<&'static str> {
    Some(match status {
        401 => "Unauthorized",
        404 => "Not found",
        405 => "Method not allowed",
        500 => "An unexpected error occurred",
        502 => "Bad Gateway",
        503 => "Service unavailable",
        _ => return None,
    })
}

pub struct RequestTermination {
    cfg: Config,
}

impl RequestTermination {
    pub fn new(cfg: Config) -> RequestTermination {
        RequestTermination { cfg }
    }

    fn message(&self) -> Option<String> {
        self.cfg
            .message
            .clone()
            .or_else(|| default_message(self.cfg.status_code).map(str::to_string))
    }

    async fn echo(&self, session: &mut Session, st: &RequestState) -> crate::core::Result<Value> {
        let limit = st.body_limit.unwrap_or(u64::MAX);
        let mut raw = Vec::new();
        while let Some(chunk) = session.read_request_body().await? {
            raw.extend_from_slice(&chunk);
            if raw.len() as u64 > limit {
                raw.truncate(limit as usize);
                break;
            }
        }
        let req = session.req_header();
        let mut headers = Map::new();
        for name in req.headers.keys() {
            let vals: Vec<Value> = req
                .headers
                .get_all(name)
                .iter()
                .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            let v = if vals.len() == 1 {
                vals.into_iter().next().unwrap_or(Value::Null)
            } else {
                Value::Array(vals)
            };
            headers.insert(name.as_str().to_string(), v);
        }
        let query: Map<String, Value> = decode_args(req.uri.query().unwrap_or(""))
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    ArgValue::Flag => Value::Bool(true),
                    ArgValue::One(s) => Value::String(s),
                    ArgValue::Many(l) => Value::Array(l.into_iter().map(Value::String).collect()),
                };
                (k, v)
            })
            .collect();
        let host_header = req
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let (host, port) = match host_header.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() => {
                (h.to_string(), p.parse::<u16>().ok())
            }
            _ => (host_header.to_string(), None),
        };
        let port = port.unwrap_or(if st.tls { 443 } else { 80 });
        let ctype = req
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let body = if ctype.contains("application/json") {
            serde_json::from_slice::<Value>(&raw).unwrap_or(Value::Null)
        } else if ctype.contains("application/x-www-form-urlencoded") {
            let m: Map<String, Value> = decode_args(&String::from_utf8_lossy(&raw))
                .into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        ArgValue::Flag => Value::Bool(true),
                        ArgValue::One(s) => Value::String(s),
                        ArgValue::Many(l) => {
                            Value::Array(l.into_iter().map(Value::String).collect())
                        }
                    };
                    (k, v)
                })
                .collect();
            Value::Object(m)
        } else {
            Value::Null
        };
        let (route, service) = match (&st.rt, &st.route) {
            (Some(rt), Some(m)) => {
                let r = &rt.decl.routes[m.route];
                let route = json!({
                    "id": r.id, "name": r.name, "paths": r.paths, "hosts": r.hosts,
                    "methods": r.methods, "protocols": r.protocols,
                    "strip_path": r.strip_path, "preserve_host": r.preserve_host,
                });
                let service = r.service.map(|si| {
                    let s = &rt.decl.services[si];
                    json!({
                        "id": s.id, "name": s.name, "protocol": s.protocol, "host": s.host,
                        "port": s.port, "path": s.path,
                    })
                });
                (route, service.unwrap_or(Value::Null))
            }
            _ => (Value::Null, Value::Null),
        };
        let mut request = json!({
            "scheme": if st.tls { "https" } else { "http" },
            "host": host,
            "port": port,
            "headers": headers,
            "query": query,
            "raw_body": String::from_utf8_lossy(&raw),
            "method": req.method.as_str(),
            "path": req.uri.path(),
        });
        if !body.is_null()
            && let Some(o) = request.as_object_mut()
        {
            o.insert("body".into(), body);
        }
        let mut out = json!({
            "request": request,
            "matched_route": route,
            "matched_service": service,
        });
        if let (Some(m), Some(o)) = (self.message(), out.as_object_mut()) {
            o.insert("message".into(), Value::String(m));
        }
        Ok(out)
    }
}

#[async_trait]
impl Plugin for RequestTermination {
    fn name(&self) -> &'static str {
        "request-termination"
    }

    fn priority(&self) -> i32 {
        2
    }

    async fn access(
        &self,
        session: &mut Session,
        st: &mut RequestState,
    ) -> crate::core::Result<Flow> {
        let status = self.cfg.status_code;
        if let Some(t) = &self.cfg.trigger {
            let req = session.req_header();
            let in_headers = req.headers.contains_key(t.to_ascii_lowercase().as_str());
            let in_query = decode_args(req.uri.query().unwrap_or("")).contains_key(t);
            if !in_headers && !in_query {
                return Ok(Flow::Continue);
            }
        }
        if self.cfg.echo {
            let v = self.echo(session, st).await?;
            return Ok(Flow::Respond(LocalResponse::json(status, v.to_string())));
        }
        if let Some(body) = &self.cfg.body {
            let mut r = LocalResponse {
                status,
                headers: Vec::new(),
                body: Bytes::from(body.clone()),
                message: None,
            };
            if let Some(ct) = &self.cfg.content_type {
                r.headers.push(("content-type".into(), ct.clone()));
            }
            return Ok(Flow::Respond(r));
        }
        Ok(Flow::Respond(match self.message() {
            Some(m) => LocalResponse::message(status, &m),
            None => LocalResponse {
                status,
                headers: Vec::new(),
                body: Bytes::new(),
                message: None,
            },
        }))
    }
}
