//! YAML with repeated mapping keys, read as Kong reads it: its parser (lyaml) keeps the
//! last value of a repeated key. serde_norway refuses such a document, so it is read a
//! second time through this tolerant visitor; the loader then warns with the lines.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_norway::{Mapping, Value};

/// A YAML value whose mappings keep the last of repeated keys.
pub(super) struct Loose {
    pub value: Value,
    /// Keys that were repeated somewhere in the document (as text).
    pub repeated: Vec<String>,
}

struct LooseValue(Value, Vec<String>);

impl<'de> Deserialize<'de> for LooseValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LooseVisitor)
    }
}

struct LooseVisitor;

impl<'de> Visitor<'de> for LooseVisitor {
    type Value = LooseValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<LooseValue, E> {
        Ok(LooseValue(Value::Bool(v), Vec::new()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<LooseValue, E> {
        Ok(LooseValue(Value::Number(v.into()), Vec::new()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<LooseValue, E> {
        Ok(LooseValue(Value::Number(v.into()), Vec::new()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<LooseValue, E> {
        Ok(LooseValue(Value::Number(v.into()), Vec::new()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<LooseValue, E> {
        Ok(LooseValue(Value::String(v.to_string()), Vec::new()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<LooseValue, E> {
        Ok(LooseValue(Value::String(v), Vec::new()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<LooseValue, E> {
        Ok(LooseValue(Value::Null, Vec::new()))
    }
    fn visit_none<E: de::Error>(self) -> Result<LooseValue, E> {
        Ok(LooseValue(Value::Null, Vec::new()))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<LooseValue, D::Error> {
        LooseValue::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LooseValue, A::Error> {
        let mut out = Vec::new();
        let mut repeated = Vec::new();
        while let Some(LooseValue(v, r)) = seq.next_element::<LooseValue>()? {
            out.push(v);
            repeated.extend(r);
        }
        Ok(LooseValue(Value::Sequence(out), repeated))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LooseValue, A::Error> {
        let mut out = Mapping::new();
        let mut repeated = Vec::new();
        while let Some((LooseValue(k, rk), LooseValue(v, rv))) =
            map.next_entry::<LooseValue, LooseValue>()?
        {
            repeated.extend(rk);
            repeated.extend(rv);
            if out.contains_key(&k) {
                repeated.push(match &k {
                    Value::String(s) => s.clone(),
                    other => serde_norway::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                });
            }
            // The last value wins (lyaml's `map[key] = value`).
            out.insert(k, v);
        }
        Ok(LooseValue(Value::Mapping(out), repeated))
    }
}

/// Reads `text` keeping the last value of repeated keys.
pub(super) fn parse(text: &str) -> Result<Loose, serde_norway::Error> {
    let LooseValue(value, repeated) = serde_norway::from_str(text)?;
    Ok(Loose { value, repeated })
}

/// The lines (1-based) where `key` is written again at the same indentation as an
/// earlier occurrence: the repeated entries a warning points at.
pub(super) fn repeated_lines(text: &str, key: &str) -> Vec<usize> {
    let mut seen: Vec<usize> = Vec::new();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let body = line.trim_start();
        let indent = line.len() - body.len();
        let (indent, body) = match body.strip_prefix("- ") {
            Some(rest) => (indent + 2, rest.trim_start()),
            None => (indent, body),
        };
        let k = body
            .strip_prefix(key)
            .is_some_and(|r| r.starts_with(':') || r.starts_with("\":") || r.starts_with("':"));
        let quoted = [format!("\"{key}\":"), format!("'{key}':")]
            .iter()
            .any(|q| body.starts_with(q.as_str()));
        if k || quoted {
            if seen.contains(&indent) {
                out.push(i + 1);
            } else {
                seen.push(indent);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_keep_the_last_value_and_are_reported() {
        let text = "a: 1\nb:\n  c: [x]\n  c: [y]\na: 2\n";
        let l = parse(text).expect("parses");
        assert_eq!(l.value["a"], Value::Number(2.into()));
        assert_eq!(l.value["b"]["c"][0], Value::String("y".into()));
        assert_eq!(l.repeated, vec!["c".to_string(), "a".to_string()]);
        assert_eq!(repeated_lines(text, "c"), vec![4]);
        assert_eq!(repeated_lines(text, "a"), vec![5]);
    }
}
