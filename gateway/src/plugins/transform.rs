//! Kong's transform operations, one table for both transformer plugins.
//!
//! request-transformer and response-transformer edit headers, query strings, JSON bodies,
//! urlencoded and multipart forms with the same five operations in the same order:
//! remove, rename, replace, add, append (`KONG_ORDER`; multipart bodies run
//! `MULTIPART_ORDER`). [`Ops`] holds one target's configured operations and runs them in
//! order; each target kind says what one operation does to it through [`Target`]:
//! query/form arguments (`args.rs`), JSON objects (`json.rs`), multipart parts
//! (`multipart.rs`), request headers (`request_transformer.rs`), response headers
//! (`response_transformer.rs`). Also here: `name:value` config entries, Kong's template
//! subset (`template.rs`) and media types.

pub mod args;
pub mod json;
pub mod multipart;
pub mod template;

pub use args::{ArgValue, Args, ArgsTarget, append_arg, decode_args, encode_args};
pub use template::{Env, Template, TemplateError};

/// One of Kong's transform operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Remove,
    Rename,
    Replace,
    Add,
    Append,
}

/// The order Kong runs the operations in on headers, query strings, JSON and urlencoded
/// bodies (request-transformer's `access.lua`, response-transformer's
/// `header_transformer.lua` and `body_transformer.lua`).
pub const KONG_ORDER: &[Op] = &[Op::Remove, Op::Rename, Op::Replace, Op::Add, Op::Append];

/// The order on multipart bodies: rename before remove, and no append
/// (request-transformer's `transform_multipart_body`).
pub const MULTIPART_ORDER: &[Op] = &[Op::Rename, Op::Remove, Op::Replace, Op::Add];

/// What one operation does to one kind of target, for one entry. Each returns whether the
/// target counts as changed (a body is re-encoded only then, as in Kong).
pub trait Target<V> {
    fn remove(&mut self, name: &str) -> bool;
    fn rename(&mut self, old: &str, new: &str) -> bool;
    fn replace(&mut self, name: &str, value: &V) -> bool;
    fn add(&mut self, name: &str, value: &V) -> bool;
    fn append(&mut self, name: &str, value: &V) -> bool;
}

/// One target's operations: names to remove, `old:new` renames, and `name:value` entries
/// (rendered strings, or typed JSON values for response bodies).
#[derive(Debug, Clone)]
pub struct Ops<V> {
    pub remove: Vec<String>,
    pub rename: Vec<(String, String)>,
    pub replace: Vec<(String, V)>,
    pub add: Vec<(String, V)>,
    pub append: Vec<(String, V)>,
}

impl<V> Default for Ops<V> {
    fn default() -> Self {
        Ops {
            remove: Vec::new(),
            rename: Vec::new(),
            replace: Vec::new(),
            add: Vec::new(),
            append: Vec::new(),
        }
    }
}

impl Ops<String> {
    /// The operations from config lists of `name` and `name:value` entries, as written.
    pub fn from_entries(
        remove: &[String],
        rename: &[String],
        replace: &[String],
        add: &[String],
        append: &[String],
    ) -> Ops<String> {
        Ops {
            remove: names(remove),
            rename: pairs(rename),
            replace: pairs(replace),
            add: pairs(add),
            append: pairs(append),
        }
    }
}

impl<V> Ops<V> {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.is_empty()
            && self.replace.is_empty()
            && self.add.is_empty()
            && self.append.is_empty()
    }

    /// Runs the operations in `order` on `target`; returns whether it changed.
    pub fn apply(&self, order: &[Op], target: &mut impl Target<V>) -> bool {
        let mut changed = false;
        for op in order {
            match op {
                Op::Remove => {
                    for n in &self.remove {
                        changed |= target.remove(n);
                    }
                }
                Op::Rename => {
                    for (old, new) in &self.rename {
                        changed |= target.rename(old, new);
                    }
                }
                Op::Replace => {
                    for (n, v) in &self.replace {
                        changed |= target.replace(n, v);
                    }
                }
                Op::Add => {
                    for (n, v) in &self.add {
                        changed |= target.add(n, v);
                    }
                }
                Op::Append => {
                    for (n, v) in &self.append {
                        changed |= target.append(n, v);
                    }
                }
            }
        }
        changed
    }

    /// A request body's transform: on an empty body only add and append run (Kong's
    /// `content_length > 0` guard on remove, rename and replace).
    pub fn apply_to_body(&self, order: &[Op], has_body: bool, target: &mut impl Target<V>) -> bool {
        if has_body {
            return self.apply(order, target);
        }
        let creating: Vec<Op> = order
            .iter()
            .copied()
            .filter(|op| matches!(op, Op::Add | Op::Append))
            .collect();
        self.apply(&creating, target)
    }
}

/// The names of `name` (or `name:ignored`) entries.
pub fn names(list: &[String]) -> Vec<String> {
    list.iter().map(|e| split_entry(e).0.to_string()).collect()
}

/// `name:value` entries split as Kong splits them.
pub fn pairs(list: &[String]) -> Vec<(String, String)> {
    list.iter()
        .map(|e| {
            let (n, v) = split_entry(e);
            (n.to_string(), v.to_string())
        })
        .collect()
}

/// Splits a config entry the way Kong does (`^([^:]+):*(.-)$`): the name runs to the first
/// colon, every colon right after it is skipped, the rest is the value.
pub fn split_entry(entry: &str) -> (&str, &str) {
    match entry.split_once(':') {
        Some((name, rest)) => (name, rest.trim_start_matches(':')),
        None => (entry, ""),
    }
}

/// A transformer config entry that is rejected (Kong's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("`{0}`: the name is empty")]
    EmptyName(String),
    #[error("key '{0}' has no value")]
    NoValue(String),
    #[error("'{0}' is not a valid header")]
    HeaderName(String),
    #[error("'{0}' is not a valid header value")]
    HeaderValue(String),
    #[error(transparent)]
    Template(#[from] TemplateError),
}

/// Checks a `name:value` entry; returns (name, value).
pub fn check_pair(entry: &str) -> Result<(&str, &str), EntryError> {
    let (name, value) = split_entry(entry);
    if name.is_empty() {
        return Err(EntryError::EmptyName(entry.to_string()));
    }
    if value.is_empty() {
        return Err(EntryError::NoValue(name.to_string()));
    }
    Ok((name, value))
}

pub fn check_header_name(name: &str) -> Result<(), EntryError> {
    http::HeaderName::from_bytes(name.as_bytes())
        .map(|_| ())
        .map_err(|_| EntryError::HeaderName(name.to_string()))
}

/// Whether a Content-Type names `media` (`type/subtype`, parameters ignored), as Kong's
/// mime-type matching does.
pub fn is_media(content_type: Option<&str>, media: &str) -> bool {
    content_type.is_some_and(|ct| {
        ct.split(',').any(|one| {
            one.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case(media))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_split_like_kong() {
        assert_eq!(split_entry("x-a:b:c"), ("x-a", "b:c"));
        assert_eq!(split_entry("x::y"), ("x", "y"));
        assert_eq!(split_entry("x"), ("x", ""));
        assert!(check_pair("x:").is_err());
    }
}
