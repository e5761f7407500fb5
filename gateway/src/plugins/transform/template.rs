//! Kong's request-transformer template subset: `$(headers.x)`, `$(query_params.x)`,
//! `$(uri_captures.x)`, each optionally with `or "default"`, and quoted literals.

use super::args::{ArgValue, Args};

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

/// A template that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unsupported template expression `{0}`; {SUPPORTED}")]
    Unsupported(String),
    #[error("unterminated `$(` in `{0}`")]
    Unterminated(String),
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

fn parse_expr(src: &str) -> Result<Expr, TemplateError> {
    let s = src.trim();
    let (source, rest) = if let Some(r) = s.strip_prefix("headers") {
        (Source::Headers, r)
    } else if let Some(r) = s.strip_prefix("query_params") {
        (Source::Query, r)
    } else if let Some(r) = s.strip_prefix("uri_captures") {
        (Source::Captures, r)
    } else {
        return Err(TemplateError::Unsupported(src.to_string()));
    };
    let (key, rest) = if let Some(r) = rest.strip_prefix('.') {
        let end = r
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(r.len());
        if end == 0 {
            return Err(TemplateError::Unsupported(src.to_string()));
        }
        (r[..end].to_string(), &r[end..])
    } else if let Some(r) = rest.strip_prefix('[') {
        let r = r.trim_start();
        let (key, r) = if let Some((k, r)) = parse_quoted(r) {
            (k, r)
        } else {
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            if end == 0 {
                return Err(TemplateError::Unsupported(src.to_string()));
            }
            (r[..end].to_string(), &r[end..])
        };
        let Some(r) = r.trim_start().strip_prefix(']') else {
            return Err(TemplateError::Unsupported(src.to_string()));
        };
        (key, r)
    } else {
        return Err(TemplateError::Unsupported(src.to_string()));
    };
    let rest = rest.trim();
    let default = if rest.is_empty() {
        None
    } else if let Some(r) = rest.strip_prefix("or") {
        match parse_quoted(r.trim_start()) {
            Some((d, tail)) if tail.trim().is_empty() => Some(d),
            _ => {
                return Err(TemplateError::Unsupported(src.to_string()));
            }
        }
    } else {
        return Err(TemplateError::Unsupported(src.to_string()));
    };
    Ok(Expr {
        source,
        key,
        default,
    })
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, TemplateError> {
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
                return Err(TemplateError::Unterminated(s.to_string()));
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

#[cfg(test)]
mod tests {
    use super::super::args::decode_args;
    use super::*;

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
}
