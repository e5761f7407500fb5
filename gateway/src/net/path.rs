//! Request paths as Kong sees them: normalisation before matching, and Kong's route
//! path regexes compiled anchored at the start.

use std::borrow::Cow;

use regex::Regex;

/// Compiles a `~` path regex the way Kong anchors it (at the start only).
pub fn compile_path_regex(re: &str) -> Result<Regex, regex::Error> {
    let re = re.strip_prefix('^').unwrap_or(re);
    Regex::new(&format!("^(?:{re})"))
}

/// True when a `%` in `raw` is not followed by two hex digits (nginx refuses such a
/// request line with 400, so Kong never routes it).
pub fn has_invalid_escape(raw: &str) -> bool {
    let b = raw.as_bytes();
    let mut i = 0;
    while let Some(p) = b[i..].iter().position(|&c| c == b'%') {
        let at = i + p;
        match (b.get(at + 1), b.get(at + 2)) {
            (Some(x), Some(y)) if x.is_ascii_hexdigit() && y.is_ascii_hexdigit() => i = at + 3,
            _ => return true,
        }
    }
    false
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

// dup: alike in shape only (other types and fields); kept apart on purpose.
fn normalize_path_owned(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let hex = |i: usize| {
        bytes
            .get(i)
            .and_then(|b| (*b as char).to_digit(16))
            .map(|d| d as u8)
    };
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let (Some(h), Some(l)) = (hex(i + 1), hex(i + 2)) {
                let v = h << 4 | l;
                if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                    decoded.push(v as char);
                } else {
                    decoded.push('%');
                    decoded.push_str(&raw[i + 1..i + 3].to_ascii_uppercase());
                }
                i += 3;
            } else {
                // A `%` that starts no escape is escaped itself, so normalising again
                // cannot read it with what follows (`/%%34%31` is `/%2541`, not `/%41`
                // now and `/A` the next time).
                decoded.push_str("%25");
                i += 1;
            }
            continue;
        }
        // Anything else as it is (`i` is always at a character boundary: it only moves
        // over ASCII escapes or whole characters).
        let ch = raw[i..].chars().next().unwrap_or('\u{fffd}');
        decoded.push(ch);
        i += ch.len_utf8();
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

    /// Found by the `normalize_path` fuzz target: a `%` before a multi-byte character
    /// panicked (a slice inside the character), which a request path or a
    /// request-transformer `replace.uri` value could reach.
    #[test]
    fn percent_before_multibyte_characters() {
        assert_eq!(normalize_path("/a/%2\u{fb}b"), "/a/%252\u{fb}b");
        assert_eq!(normalize_path("/%\u{e9}"), "/%25\u{e9}");
        assert_eq!(normalize_path("/x%a\u{e9}/"), "/x%25a\u{e9}/");
        // Other characters are kept as they are (they were read byte by byte as Latin-1).
        assert_eq!(normalize_path("/caf\u{e9}/./x"), "/caf\u{e9}/x");
        assert_eq!(normalize_path("/%E2%82%AC/"), "/%E2%82%AC/");
    }

    /// Found by the fuzz target's invariants: the result has no dot segments and
    /// normalising it again changes nothing, also with `%` that starts no escape and
    /// escapes whose digits are not hexadecimal (`%+4`).
    #[test]
    fn normalising_twice_changes_nothing() {
        for (raw, want) in [
            ("/%%34%31", "/%2541"),
            ("/a%zz/%", "/a%25zz/%25"),
            ("/%+41", "/%25+41"),
            ("/%2e%2E/a/%2e/", "/a/"),
            ("/a%2Fb/..%2F", "/a%2Fb/..%2F"),
        ] {
            let once = normalize_path(raw);
            assert_eq!(once, want, "{raw}");
            assert_eq!(normalize_path(&once), once, "{raw}");
        }
    }
}

/// Kong's reserved URI characters: kept percent-encoded (upper-cased) when decoding, as
/// are bytes over 0x7F (one byte of a UTF-8 sequence is no character of its own).
fn is_reserved(b: u8) -> bool {
    b"!*'();:@&=+$,/?%#[]".contains(&b)
}

/// Decodes `%XX` triplets the way Kong's migration does: `decoded(byte)` gives the
/// replacement, or None to keep the triplet (upper-cased).
fn decode_triplets(path: &str, decoded: impl Fn(u8) -> Option<String>) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = path.get(i + 1..i + 3)
            && let Ok(v) = u8::from_str_radix(hex, 16)
            && hex.bytes().all(|c| c.is_ascii_hexdigit())
        {
            match decoded(v) {
                Some(s) => out.push_str(&s),
                None => {
                    out.push('%');
                    out.push_str(&hex.to_ascii_uppercase());
                }
            }
            i += 3;
            continue;
        }
        let ch = path[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Kong's URI normalisation with merged slashes (kong/tools/uri.lua `normalize`): other
/// than reserved characters decoded, dot segments removed, `//` merged.
fn kong_normalize(path: &str) -> String {
    if path.is_empty() || path == "/" {
        return path.to_string();
    }
    let mut uri = if path.contains('%') {
        decode_triplets(path, |v| {
            (v.is_ascii() && !is_reserved(v)).then(|| (v as char).to_string())
        })
    } else {
        path.to_string()
    };
    if !uri.contains('.') && !uri.contains("//") {
        return uri;
    }
    let mut out: Vec<String> = Vec::new();
    while !uri.is_empty() {
        let b = uri.as_bytes();
        let at = |i: usize| b.get(i).copied();
        if uri == "/." {
            uri = "/".into();
        } else if uri == "/.." {
            uri = "/".into();
            out.pop();
        } else if uri == "." || uri == ".." {
            uri.clear();
        } else if at(0) == Some(b'.') && at(1) == Some(b'.') && at(2) == Some(b'/') {
            uri.drain(..3);
        } else if (at(0) == Some(b'.') && at(1) == Some(b'/'))
            || (at(0) == Some(b'/') && at(1) == Some(b'.') && at(2) == Some(b'/'))
        {
            // `./` dropped; `/./` becomes `/`.
            uri.drain(..2);
        } else if at(0) == Some(b'/')
            && at(1) == Some(b'.')
            && at(2) == Some(b'.')
            && at(3) == Some(b'/')
        {
            uri.drain(..3);
            out.pop();
        } else if at(0) == Some(b'/') && at(1) == Some(b'/') {
            uri.drain(..1);
        } else {
            // The next `/` after the first character (a byte search: `uri` may start with
            // a multi-byte character).
            match uri.bytes().skip(1).position(|b| b == b'/') {
                Some(i) => {
                    let rest = uri.split_off(i + 1);
                    out.push(std::mem::replace(&mut uri, rest));
                }
                None => out.push(std::mem::take(&mut uri)),
            }
        }
    }
    out.concat()
}

/// A route path of a `_format_version` 1.1/2.1 file as Kong 3.x migrates it on load: a
/// path of only `[a-zA-Z0-9.-_~/%]` stays a prefix (normalised); anything else was a
/// regex and gets the `~` that 3.0 requires, with percent-triplets decoded (regex
/// metacharacters escaped, reserved characters kept encoded).
pub fn migrate_legacy_path(path: &str) -> String {
    let plain = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".-_~/%".contains(&b));
    if plain {
        return kong_normalize(path);
    }
    let body = if path.contains('%') {
        decode_triplets(path, |v| {
            if is_reserved(v) || !v.is_ascii() {
                None
            } else if b".^-{}\\|".contains(&v) {
                Some(format!("\\{}", v as char))
            } else {
                Some((v as char).to_string())
            }
        })
    } else {
        path.to_string()
    };
    format!("~{body}")
}

#[cfg(test)]
mod escape_tests {
    // dup: alike in shape only (other types and fields); kept apart on purpose.
    #[test]
    fn invalid_escapes_are_found() {
        use super::has_invalid_escape as bad;
        assert!(!bad("/a/%41/%2f"));
        assert!(bad("/a/%"));
        assert!(bad("/a/%4"));
        assert!(bad("/a/%zz"));
        assert!(bad("/a/%2\u{fb}"));
        assert!(!bad("/plain"));
    }
}

#[cfg(test)]
mod legacy_tests {
    use super::migrate_legacy_path as m;

    // dup: alike in shape only (other types and fields); kept apart on purpose.
    #[test]
    fn legacy_paths_migrate_as_kong_does() {
        // Prefixes stay prefixes (normalised).
        assert_eq!(m("/api"), "/api");
        assert_eq!(m("/api/v1.0/"), "/api/v1.0/");
        assert_eq!(m("/a/./b/../c"), "/a/c");
        assert_eq!(m("/a//b"), "/a/b");
        assert_eq!(m("/%7Euser"), "/~user");
        assert_eq!(m("/a%2fb"), "/a%2Fb");
        // Regexes get their `~`.
        assert_eq!(m("/users/\\d+"), "~/users/\\d+");
        assert_eq!(m("/v[0-9]/items$"), "~/v[0-9]/items$");
        assert_eq!(m("/status/(?<code>\\d+)"), "~/status/(?<code>\\d+)");
        // Triplets in a regex: metacharacters escaped, reserved kept encoded.
        assert_eq!(m("/a%2Eb(x)"), "~/a\\.b(x)");
        assert_eq!(m("/a%3ab(x)"), "~/a%3Ab(x)");
        assert_eq!(m("/a%41(x)"), "~/aA(x)");
    }

    /// Found by the `normalize_path` fuzz target: `%FA` was decoded to the character
    /// U+00FA (two bytes) and slicing after a first byte panicked, so a 1.1/2.1 file with
    /// such a route path stopped the gateway at load. Bytes over 0x7F stay encoded, as
    /// `normalize_path` keeps them in request paths.
    #[test]
    fn non_ascii_escapes_stay_encoded() {
        assert_eq!(m("%FA%2F.ba%2ou././"), "%FA%2F.ba%2ou./");
        assert_eq!(m("/caf%C3%A9/./x"), "/caf%C3%A9/x");
        assert_eq!(m("/caf%c3%a9(x)"), "~/caf%C3%A9(x)");
    }
}
