//! A JSON object's top-level keys as a transform target (request-transformer's
//! `transform_json_body`, response-transformer's `transform_json_body`).

use serde_json::{Map, Value};

use super::Target;

/// Kong's truthiness of a JSON value (`nil` and `false` are false; `null` is true).
fn truthy(v: Option<&Value>) -> bool {
    !matches!(v, None | Some(Value::Bool(false)))
}

/// Kong's `append_value`: a string becomes a list, a list grows, anything else is replaced
/// by a one-element list.
fn append_value(cur: Option<Value>, v: Value) -> Value {
    match cur {
        Some(Value::String(s)) => Value::Array(vec![Value::String(s), v]),
        Some(Value::Array(mut a)) => {
            a.push(v);
            Value::Array(a)
        }
        _ => Value::Array(vec![v]),
    }
}

/// The object being edited. Values are the request's rendered strings or the response's
/// typed values (`json_types`).
pub struct JsonTarget {
    pub obj: Map<String, Value>,
    /// Whether renaming a missing key removes the new one: request-transformer's `rename`
    /// sets `new = old` even when `old` is nil; response-transformer renames only a
    /// present key.
    pub rename_clears_missing: bool,
}

impl<V: Clone + Into<Value>> Target<V> for JsonTarget {
    fn remove(&mut self, name: &str) -> bool {
        self.obj.remove(name);
        true
    }

    fn rename(&mut self, old: &str, new: &str) -> bool {
        match self.obj.remove(old) {
            Some(v) => {
                self.obj.insert(new.to_string(), v);
            }
            None if self.rename_clears_missing => {
                self.obj.remove(new);
            }
            None => {}
        }
        true
    }

    fn replace(&mut self, name: &str, value: &V) -> bool {
        if !truthy(self.obj.get(name)) {
            return false;
        }
        self.obj.insert(name.to_string(), value.clone().into());
        true
    }

    fn add(&mut self, name: &str, value: &V) -> bool {
        if truthy(self.obj.get(name)) {
            return false;
        }
        self.obj.insert(name.to_string(), value.clone().into());
        true
    }

    fn append(&mut self, name: &str, value: &V) -> bool {
        let cur = self.obj.remove(name);
        self.obj
            .insert(name.to_string(), append_value(cur, value.clone().into()));
        true
    }
}
