//! Request paths as Kong sees them: normalisation before matching, and Kong's route
//! path regexes compiled anchored at the start.

use std::borrow::Cow;

use regex::Regex;

/// Compiles a `~` path regex the way Kong anchors it (at the start only).
pub fn compile_path_regex(re: &str) -> Result<Regex, regex::Error> {
    let re = re.strip_prefix('^').unwrap_or(re);
    Regex::new(&format!("^(?:{re})"))
}

/// Normalizes a request path as Kong does before matching: percent-encodings upper-cased,
/// unreserved characters decoded, dot segments removed and repeated slashes merged.
pub fn normalize_path(raw: &str) -> Cow<'_, str> {
    if is_normal_path(raw) {
        Cow::Borrowed(raw)
    } else {
        Cow::Owned(normalize_path_owned(raw))
    }
}

/// True when normalizing would not change the path: it starts with `/`, has no percent
/// escapes, no empty, `.` or `..` segments (a trailing `/` is kept as is).
fn is_normal_path(raw: &str) -> bool {
    let Some(rest) = raw.strip_prefix('/') else {
        return false;
    };
    if raw.contains('%') {
        return false;
    }
    let mut segs = rest.split('/').peekable();
    while let Some(seg) = segs.next() {
        let last = segs.peek().is_none();
        match seg {
            "." | ".." => return false,
            "" if !last => return false,
            _ => {}
        }
    }
    true
}

fn normalize_path_owned(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' && i + 2 < bytes.len() {
            let hex = &raw[i + 1..i + 3];
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                    decoded.push(v as char);
                } else {
                    decoded.push('%');
                    decoded.push_str(&hex.to_ascii_uppercase());
                }
                i += 3;
                continue;
            }
        }
        decoded.push(b as char);
        i += 1;
    }
    let mut out: Vec<&str> = Vec::new();
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut path = String::with_capacity(decoded.len() + 1);
    for s in &out {
        path.push('/');
        path.push_str(s);
    }
    if path.is_empty() || (trailing && !out.is_empty()) {
        path.push('/');
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        assert_eq!(normalize_path("/a//b/./c/../d"), "/a/b/d");
        assert_eq!(normalize_path("/%7euser/%2f"), "/~user/%2F");
        assert_eq!(normalize_path("/"), "/");
        assert_eq!(normalize_path(""), "/");
        assert_eq!(normalize_path("/a/"), "/a/");
        assert_eq!(normalize_path("/../.."), "/");
        for p in ["/a/b", "/a/b/", "/", "/api/echo", "/a.b/c..d/.e"] {
            assert!(matches!(normalize_path(p), Cow::Borrowed(_)), "{p}");
            assert_eq!(normalize_path(p), normalize_path_owned(p), "{p}");
        }
        for p in [
            "//", "/a//b", "/a/.", "/a/..", "/./a", "a", "/%41", "/a/../",
        ] {
            assert!(matches!(normalize_path(p), Cow::Owned(_)), "{p}");
        }
    }
}
