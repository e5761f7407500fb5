//! Kong's `response-transformer`: response headers (remove, rename, replace, add, append)
//! on every response, and top-level keys of JSON bodies (same order) when the response's
//! Content-Type is `application/json`. A body that does not parse as a JSON object is
//! passed through unchanged. The operations and their order are the shared table in
//! `transform.rs`; this file holds the config, typed JSON values and the header target.

use crate::core::ResponseHeader;
use async_trait::async_trait;
use bytes::BytesMut;
use serde::Deserialize;
use serde_json::Value;

use super::transform::json::JsonTarget;
use super::transform::{
    EntryError, KONG_ORDER, Ops, Target, check_header_name, check_pair, is_media, names, pairs,
    split_entry,
};
use super::{BuildError, Plugin, SpecError};
use crate::core::state::RequestState;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameLists {
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub json: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JsonType {
    Boolean,
    Number,
    String,
}

// dup: the shape of every plugin file (its own Config, checks and hook types).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueLists {
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub json: Vec<String>,
    #[serde(default)]
    pub json_types: Vec<JsonType>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub remove: NameLists,
    #[serde(default)]
    pub rename: NameLists,
    #[serde(default)]
    pub replace: ValueLists,
    #[serde(default)]
    pub add: ValueLists,
    #[serde(default)]
    pub append: ValueLists,
}

impl Config {
    pub fn validate(&self) -> Result<(), SpecError> {
        for (i, h) in self.remove.headers.iter().enumerate() {
            check_header_name(split_entry(h).0)
                .map_err(|m| SpecError::at(format!("remove.headers[{i}]"), m.to_string()))?;
        }
        for (i, k) in self.remove.json.iter().enumerate() {
            if split_entry(k).0.is_empty() {
                return Err(SpecError::at(format!("remove.json[{i}]"), "empty key"));
            }
        }
        for (field, list, headers) in [
            ("rename.headers", &self.rename.headers, true),
            ("rename.json", &self.rename.json, false),
            ("replace.headers", &self.replace.headers, true),
            ("replace.json", &self.replace.json, false),
            ("add.headers", &self.add.headers, true),
            ("add.json", &self.add.json, false),
            ("append.headers", &self.append.headers, true),
            ("append.json", &self.append.json, false),
        ] {
            for (i, e) in list.iter().enumerate() {
                let at = |m: EntryError| SpecError::at(format!("{field}[{i}]"), m.to_string());
                let (name, value) = check_pair(e).map_err(at)?;
                if headers {
                    check_header_name(name).map_err(at)?;
                    if field == "rename.headers" {
                        check_header_name(value).map_err(at)?;
                    } else if http::HeaderValue::from_str(value).is_err() {
                        return Err(at(EntryError::HeaderValue(value.to_string())));
                    }
                }
            }
        }
        for (field, l) in [
            ("replace", &self.replace),
            ("add", &self.add),
            ("append", &self.append),
        ] {
            for (i, (e, t)) in l.json.iter().zip(&l.json_types).enumerate() {
                if *t == JsonType::Number && split_entry(e).1.trim().parse::<f64>().is_err() {
                    return Err(SpecError::at(
                        format!("{field}.json[{i}]"),
                        "json_types says number but the value is not a number",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Kong's `cast_value`: number (dropped when it does not parse), boolean (`"true"` or
/// false), string.
fn json_value(v: &str, t: Option<JsonType>) -> Option<Value> {
    match t {
        Some(JsonType::Number) => {
            let s = v.trim();
            if let Ok(i) = s.parse::<i64>() {
                Some(Value::from(i))
            } else {
                s.parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
            }
        }
        Some(JsonType::Boolean) => Some(Value::Bool(v == "true")),
        Some(JsonType::String) | None => Some(Value::String(v.to_string())),
    }
}

fn typed(l: &ValueLists) -> Vec<(String, Value)> {
    l.json
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let (n, v) = split_entry(e);
            json_value(v, l.json_types.get(i).copied()).map(|v| (n.to_string(), v))
        })
        .collect()
}

pub struct ResponseTransformer {
    headers: Ops<String>,
    json: Ops<Value>,
    /// Whether any JSON operation is configured (also one whose typed value is dropped).
    has_json: bool,
}

impl ResponseTransformer {
    pub fn new(c: Config) -> Result<ResponseTransformer, BuildError> {
        let has_json = !(c.remove.json.is_empty()
            && c.rename.json.is_empty()
            && c.replace.json.is_empty()
            && c.add.json.is_empty()
            && c.append.json.is_empty());
        Ok(ResponseTransformer {
            headers: Ops::from_entries(
                &c.remove.headers,
                &c.rename.headers,
                &c.replace.headers,
                &c.add.headers,
                &c.append.headers,
            ),
            json: Ops {
                remove: names(&c.remove.json),
                rename: pairs(&c.rename.json),
                replace: typed(&c.replace),
                add: typed(&c.add),
                append: typed(&c.append),
            },
            has_json,
        })
    }

    /// The JSON transform; `None` when the body is not a JSON object (left as is).
    pub fn transform_json(&self, body: &[u8]) -> Option<Vec<u8>> {
        let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
            return None;
        };
        let mut t = JsonTarget {
            obj,
            rename_clears_missing: false,
        };
        self.json.apply(KONG_ORDER, &mut t);
        serde_json::to_vec(&Value::Object(t.obj)).ok()
    }
}

fn header_name(n: &str) -> Option<http::HeaderName> {
    http::HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes()).ok()
}

/// The response's headers as a transform target. Kong checks presence against the headers
/// as they were before the transform (`kong.response.get_headers()` is a copy), not as
/// each step leaves them.
struct HeaderTarget<'a> {
    resp: &'a mut ResponseHeader,
    before: http::HeaderMap,
}

impl Target<String> for HeaderTarget<'_> {
    fn remove(&mut self, name: &str) -> bool {
        if let Some(h) = header_name(name) {
            self.resp.remove_header(&h);
        }
        true
    }

    fn rename(&mut self, old: &str, new: &str) -> bool {
        let (Some(o), Some(n)) = (header_name(old), header_name(new)) else {
            return false;
        };
        let values: Vec<http::HeaderValue> = self.before.get_all(&o).iter().cloned().collect();
        if values.is_empty() {
            return false;
        }
        self.resp.remove_header(&o);
        self.resp.remove_header(&n);
        for v in values {
            let _ = self.resp.append_header(n.clone(), v);
        }
        true
    }

    fn replace(&mut self, name: &str, value: &String) -> bool {
        if let Some(h) = header_name(name)
            && self.before.contains_key(&h)
        {
            let _ = self.resp.insert_header(h, value.as_str());
            return true;
        }
        false
    }

    fn add(&mut self, name: &str, value: &String) -> bool {
        if let Some(h) = header_name(name)
            && !self.before.contains_key(&h)
        {
            let _ = self.resp.insert_header(h, value.as_str());
            return true;
        }
        false
    }

    fn append(&mut self, name: &str, value: &String) -> bool {
        if let Some(h) = header_name(name) {
            let _ = self.resp.append_header(h, value.as_str());
        }
        true
    }
}

#[async_trait]
impl Plugin for ResponseTransformer {
    fn name(&self) -> &'static str {
        "response-transformer"
    }

    fn priority(&self) -> i32 {
        800
    }

    fn has_access(&self) -> bool {
        false
    }

    fn response_header(&self, resp: &mut ResponseHeader, _st: &mut RequestState) {
        let before = resp.headers.clone();
        self.headers
            .apply(KONG_ORDER, &mut HeaderTarget { resp, before });
    }

    fn must_transform(&self) -> bool {
        !self.json.remove.is_empty()
    }

    fn buffers_response(&self, resp: &ResponseHeader) -> bool {
        self.has_json
            && is_media(
                resp.headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok()),
                "application/json",
            )
    }

    fn response_body(&self, body: &mut BytesMut, _st: &mut RequestState) {
        if !self.has_json || body.is_empty() {
            return;
        }
        match self.transform_json(body) {
            Some(new) => {
                body.clear();
                body.extend_from_slice(&new);
            }
            None => tracing::debug!("response-transformer: body is not a JSON object, left as is"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> Config {
        let v: serde_norway::Value = serde_norway::from_str(yaml).expect("yaml");
        let c: Config = crate::plugins::parse_config(&v).expect("config");
        c.validate().expect("valid");
        c
    }

    #[test]
    fn json_order_and_types() {
        let c = cfg(r#"
remove: {json: [secret]}
rename: {json: ["old:new"]}
replace: {json: ["n:5", "f:x"], json_types: [number, string]}
add: {json: ["f:added", "ok:true", "n:9"], json_types: [string, boolean, number]}
append: {json: ["list:3", "s:b"], json_types: [number]}
"#);
        let t = ResponseTransformer::new(c).expect("build");
        let out = t
            .transform_json(br#"{"secret":1,"old":"o","n":1,"f":false,"list":[1],"s":"a"}"#)
            .expect("json");
        let v: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"new":"o","n":5,"f":"added","ok":true,"list":[1,3],"s":["a","b"]})
        );
        assert!(t.transform_json(b"{oops").is_none());
    }

    #[test]
    fn validation_paths() {
        let v: serde_norway::Value =
            serde_norway::from_str("add: {headers: ['x-a']}").expect("yaml");
        let c: Config = crate::plugins::parse_config(&v).expect("config");
        match c.validate() {
            Err(SpecError::Invalid { path, .. }) => assert_eq!(path, "add.headers[0]"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
