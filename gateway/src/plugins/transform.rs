//! Shared pieces of the transformer plugins: `name:value` entries, Kong's template subset
//! (`$(headers.x)`, `$(query_params.x)`, `$(uri_captures.x)`), and query/form argument
//! tables with Kong's decode/encode rules.

use std::collections::BTreeMap;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// Splits a config entry the way Kong does (`^([^:]+):*(.-)$`): the name runs to the first
/// colon, every colon right after it is skipped, the rest is the value.
pub fn split_entry(entry: &str) -> (&str, &str) {
    match entry.split_once(':') {
        Some((name, rest)) => (name, rest.trim_start_matches(':')),
        None => (entry, ""),
    }
}

/// Checks a `name:value` entry; returns (name, value).
pub fn check_pair(entry: &str) -> Result<(&str, &str), String> {
    let (name, value) = split_entry(entry);
    if name.is_empty() {
        return Err(format!("`{entry}`: the name is empty"));
    }
    if value.is_empty() {
        return Err(format!("key '{name}' has no value"));
    }
    Ok((name, value))
}

pub fn check_header_name(name: &str) -> Result<(), String> {
    http::HeaderName::from_bytes(name.as_bytes())
        .map(|_| ())
        .map_err(|_| format!("'{name}' is not a valid header"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Headers,
    Query,
    Captures,
}

#[derive(Debug, Clone)]
struct Expr {
    source: Source,
    key: String,
    default: Option<String>,
}

#[derive(Debug, Clone)]
enum Part {
    Lit(String),
    Expr(Expr),
    /// A Lua expression the gateway cannot evaluate. Kong loads it and its evaluation may
    /// fail at request time (answered 500); here rendering it always fails.
    Fail(String),
}

/// A value with `$(...)` placeholders, parsed once at load.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
}

/// What templates can read: the request as the client sent it (and the route's captures).
pub struct Env<'a> {
    pub headers: &'a http::HeaderMap,
    pub query: &'a Args,
    pub captures: &'a [(String, String)],
    /// Set when a template could not be rendered (Kong answers such a request 500).
    pub failed: std::cell::Cell<bool>,
}

const SUPPORTED: &str = "supported expressions: headers.NAME, headers[\"NAME\"], query_params.NAME, query_params[\"NAME\"], uri_captures.NAME, uri_captures[N], each optionally followed by `or \"default\"`";

fn parse_quoted(s: &str) -> Option<(String, &str)> {
    let q = s.chars().next()?;
    if q != '"' && q != '\'' {
        return None;
    }
    let rest = &s[1..];
    let end = rest.find(q)?;
    Some((rest[..end].to_string(), &rest[end + 1..]))
}

fn parse_expr(src: &str) -> Result<Expr, String> {
    let s = src.trim();
    let (source, rest) = if let Some(r) = s.strip_prefix("headers") {
        (Source::Headers, r)
    } else if let Some(r) = s.strip_prefix("query_params") {
        (Source::Query, r)
    } else if let Some(r) = s.strip_prefix("uri_captures") {
        (Source::Captures, r)
    } else {
        return Err(format!(
            "unsupported template expression `{src}`; {SUPPORTED}"
        ));
    };
    let (key, rest) = if let Some(r) = rest.strip_prefix('.') {
        let end = r
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(r.len());
        if end == 0 {
            return Err(format!(
                "unsupported template expression `{src}`; {SUPPORTED}"
            ));
        }
        (r[..end].to_string(), &r[end..])
    } else if let Some(r) = rest.strip_prefix('[') {
        let r = r.trim_start();
        let (key, r) = if let Some((k, r)) = parse_quoted(r) {
            (k, r)
        } else {
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            if end == 0 {
                return Err(format!(
                    "unsupported template expression `{src}`; {SUPPORTED}"
                ));
            }
            (r[..end].to_string(), &r[end..])
        };
        let Some(r) = r.trim_start().strip_prefix(']') else {
            return Err(format!(
                "unsupported template expression `{src}`; {SUPPORTED}"
            ));
        };
        (key, r)
    } else {
        return Err(format!(
            "unsupported template expression `{src}`; {SUPPORTED}"
        ));
    };
    let rest = rest.trim();
    let default = if rest.is_empty() {
        None
    } else if let Some(r) = rest.strip_prefix("or") {
        match parse_quoted(r.trim_start()) {
            Some((d, tail)) if tail.trim().is_empty() => Some(d),
            _ => {
                return Err(format!(
                    "unsupported template expression `{src}`; {SUPPORTED}"
                ));
            }
        }
    } else {
        return Err(format!(
            "unsupported template expression `{src}`; {SUPPORTED}"
        ));
    };
    Ok(Expr {
        source,
        key,
        default,
    })
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = s;
        while let Some(i) = rest.find("$(") {
            lit.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            // Find the closing parenthesis outside quotes.
            let mut depth = 0usize;
            let mut quote: Option<char> = None;
            let mut end = None;
            for (j, c) in after.char_indices() {
                match (quote, c) {
                    (Some(q), c) if c == q => quote = None,
                    (Some(_), _) => {}
                    (None, '"' | '\'') => quote = Some(c),
                    (None, '(') => depth += 1,
                    (None, ')') if depth == 0 => {
                        end = Some(j);
                        break;
                    }
                    (None, ')') => depth -= 1,
                    _ => {}
                }
            }
            let Some(end) = end else {
                return Err(format!("unterminated `$(` in `{s}`"));
            };
            let src = &after[..end];
            match parse_quoted(src.trim()) {
                // `$('$(uri_captures.x)')`: a Lua string literal, rendered as written (how
                // Kong's templates escape a `$(`).
                Some((text, tail)) if tail.trim().is_empty() => lit.push_str(&text),
                _ => {
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(match parse_expr(src) {
                        Ok(e) => Part::Expr(e),
                        Err(_) => Part::Fail(src.to_string()),
                    });
                }
            }
            rest = &after[end + 1..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template { parts })
    }

    pub fn render(&self, env: &Env<'_>) -> String {
        self.render_escaped(env, &|v| v.to_string())
    }

    /// Renders with every value taken from the request passed through `escape` (literal
    /// text and configured defaults are kept as written).
    pub fn render_escaped(&self, env: &Env<'_>, escape: &dyn Fn(&str) -> String) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Fail(_) => env.failed.set(true),
                Part::Expr(e) => {
                    let v = lookup(e, env);
                    match (v, &e.default) {
                        (Some(v), _) => out.push_str(&escape(&v)),
                        (None, Some(d)) => out.push_str(d),
                        (None, None) => {}
                    }
                }
            }
        }
        out
    }

    /// The first expression the gateway cannot evaluate, if any.
    pub fn unsupported(&self) -> Option<&str> {
        self.parts.iter().find_map(|p| match p {
            Part::Fail(src) => Some(src.as_str()),
            _ => None,
        })
    }

    /// The literal text before the first expression.
    pub fn literal_prefix(&self) -> &str {
        match self.parts.first() {
            Some(Part::Lit(s)) => s,
            _ => "",
        }
    }
}

fn lookup(e: &Expr, env: &Env<'_>) -> Option<String> {
    match e.source {
        Source::Headers => {
            let get = |name: &str| -> Option<String> {
                let vals: Vec<&str> = env
                    .headers
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                (!vals.is_empty()).then(|| vals.join(", "))
            };
            let lower = e.key.to_ascii_lowercase();
            get(&lower).or_else(|| get(&lower.replace('_', "-")))
        }
        Source::Query => match env.query.get(&e.key)? {
            ArgValue::Flag => Some(String::new()),
            ArgValue::One(v) => Some(v.clone()),
            ArgValue::Many(v) => Some(v.join(",")),
        },
        Source::Captures => env
            .captures
            .iter()
            .find(|(k, _)| *k == e.key)
            .map(|(_, v)| v.clone()),
    }
}

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

    #[test]
    fn templates_render() {
        let mut h = http::HeaderMap::new();
        h.insert("x-user", "bob".parse().expect("value"));
        let q = decode_args("a=1&b=2&b=3&flag");
        let caps = vec![("id".to_string(), "42".to_string())];
        let env = Env {
            headers: &h,
            query: &q,
            captures: &caps,
            failed: Default::default(),
        };
        let t = Template::parse("/u/$(uri_captures.id)/$(headers.x_user)?$(query_params[\"a\"])")
            .expect("template");
        assert_eq!(t.render(&env), "/u/42/bob?1");
        let t =
            Template::parse("$(headers.missing or 'none')-$(query_params.b)").expect("template");
        assert_eq!(t.render(&env), "none-2,3");
        // Lua the gateway cannot evaluate loads, and fails when rendered (Kong: 500).
        let t = Template::parse("$(os.getenv('HOME'))").expect("loads");
        assert_eq!(t.unsupported(), Some("os.getenv('HOME')"));
        // A quoted literal is how Kong escapes a template.
        assert!(!env.failed.get());
        let _ = t.render(&env);
        assert!(env.failed.get());
        // A quoted literal is how Kong escapes a template.
        let t = Template::parse("$('$(uri_captures.user1)')").expect("literal");
        assert!(t.unsupported().is_none());
        assert_eq!(t.render(&env), "$(uri_captures.user1)");
        assert!(Template::parse("$(headers.x").is_err());
    }

    #[test]
    fn args_roundtrip_sorted() {
        let a = decode_args("b=2&a=x+y&a=%2F&c");
        assert_eq!(encode_args(&a), "a=x%20y&a=%2F&b=2&c");
    }
}
