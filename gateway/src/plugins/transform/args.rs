//! Query-string and urlencoded-form arguments with Kong's decode/encode rules, and the
//! transform target both are edited through.

use std::collections::BTreeMap;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use super::Target;

/// One argument of a query string or urlencoded form, as Kong's decoder returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgValue {
    /// A bare `key` (no `=`).
    Flag,
    One(String),
    Many(Vec<String>),
}

/// Query or form arguments; encoded with keys sorted (Kong's `encode_args`).
pub type Args = BTreeMap<String, ArgValue>;

fn decode_component(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_decode_str(&plus).decode_utf8_lossy().into_owned()
}

pub fn decode_args(s: &str) -> Args {
    let mut out = Args::new();
    for part in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = match part.split_once('=') {
            Some((k, v)) => (decode_component(k), Some(decode_component(v))),
            None => (decode_component(part), None),
        };
        if k.is_empty() {
            continue;
        }
        let new = match v {
            Some(v) => v,
            None => {
                out.entry(k).or_insert(ArgValue::Flag);
                continue;
            }
        };
        match out.get_mut(&k) {
            None => {
                out.insert(k, ArgValue::One(new));
            }
            Some(cur) => append_arg(cur, new),
        }
    }
    out
}

/// Kong's `append_value`: a string becomes a list, a list grows, anything else is replaced.
pub fn append_arg(cur: &mut ArgValue, value: String) {
    *cur = match std::mem::replace(cur, ArgValue::Flag) {
        ArgValue::One(s) => ArgValue::Many(vec![s, value]),
        ArgValue::Many(mut v) => {
            v.push(value);
            ArgValue::Many(v)
        }
        ArgValue::Flag => ArgValue::Many(vec![value]),
    };
}

/// Characters escaped in encoded arguments: everything but ALPHA / DIGIT / `-._~`.
const ARG_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub fn encode_args(args: &Args) -> String {
    let mut out: Vec<String> = Vec::new();
    for (k, v) in args {
        let ek = utf8_percent_encode(k, ARG_ESCAPE).to_string();
        match v {
            ArgValue::Flag => out.push(ek),
            ArgValue::One(s) => out.push(format!("{ek}={}", utf8_percent_encode(s, ARG_ESCAPE))),
            ArgValue::Many(vs) => {
                for s in vs {
                    out.push(format!("{ek}={}", utf8_percent_encode(s, ARG_ESCAPE)));
                }
            }
        }
    }
    out.join("&")
}

/// Query or form arguments as a transform target (Kong's request-transformer
/// `transform_querystrings` and `transform_url_encoded_body`).
pub struct ArgsTarget<'a>(pub &'a mut Args);

impl Target<String> for ArgsTarget<'_> {
    fn remove(&mut self, name: &str) -> bool {
        self.0.remove(name);
        true
    }

    fn rename(&mut self, old: &str, new: &str) -> bool {
        match self.0.remove(old) {
            Some(v) => {
                self.0.insert(new.to_string(), v);
            }
            None => {
                self.0.remove(new);
            }
        }
        true
    }

    fn replace(&mut self, name: &str, value: &String) -> bool {
        match self.0.get_mut(name) {
            Some(cur) => {
                *cur = ArgValue::One(value.clone());
                true
            }
            None => false,
        }
    }

    fn add(&mut self, name: &str, value: &String) -> bool {
        if self.0.contains_key(name) {
            return false;
        }
        self.0
            .insert(name.to_string(), ArgValue::One(value.clone()));
        true
    }

    fn append(&mut self, name: &str, value: &String) -> bool {
        match self.0.get_mut(name) {
            Some(cur) => append_arg(cur, value.clone()),
            None => {
                self.0
                    .insert(name.to_string(), ArgValue::Many(vec![value.clone()]));
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_roundtrip_sorted() {
        let a = decode_args("b=2&a=x+y&a=%2F&c");
        assert_eq!(encode_args(&a), "a=x%20y&a=%2F&b=2&c");
    }
}
