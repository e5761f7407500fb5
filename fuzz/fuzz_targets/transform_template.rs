//! request-transformer templates (`gateway::plugins::transform::Template::parse` and
//! render) on arbitrary text, rendered against a request taken from the same input.
//!
//! Input, line by line: the template; the query string; then `name: value` header lines
//! and `@name=value` URI captures. Rendering runs plain (headers, querystring, body) and
//! percent-escaped then normalised as `replace.uri` does. Invariants: parsing never
//! panics; a template without `$(` renders to itself; a value substituted with escaping
//! never adds a `/` (so it cannot add path segments).
#![no_main]

use gateway::plugins::transform::{self, Env, Template};
use libfuzzer_sys::fuzz_target;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// What `replace.uri` escapes in substituted values (request_transformer.rs).
const VALUE_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'~');

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let template = lines.next().unwrap_or_default();
    let query = lines.next().unwrap_or_default();
    let mut headers = http::HeaderMap::new();
    let mut captures = Vec::new();
    for line in lines {
        if let Some(c) = line.strip_prefix('@') {
            let (k, v) = c.split_once('=').unwrap_or((c, ""));
            captures.push((k.to_string(), v.to_string()));
        } else if let Some((n, v)) = line.split_once(':')
            && let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(n.trim().as_bytes()),
                http::HeaderValue::from_str(v.trim()),
            )
        {
            headers.append(n, v);
        }
    }
    // Config-time helpers that read the same kind of text.
    let _ = transform::split_entry(template);
    let _ = transform::check_pair(template);
    let _ = transform::check_header_name(template);

    let args = transform::decode_args(query);
    let _ = transform::decode_args(&transform::encode_args(&args));

    let Ok(t) = Template::parse(template) else {
        return;
    };
    let _ = t.unsupported();
    let _ = t.literal_prefix();
    let env = Env {
        headers: &headers,
        query: &args,
        captures: &captures,
        failed: Default::default(),
    };
    let plain = t.render(&env);
    if !template.contains("$(") {
        assert_eq!(
            plain, template,
            "a template without expressions renders as written"
        );
    }
    // With every substituted value escaped, the only `/` are the template's own.
    // (`/` replaced by `_`: removing it could join `$/(` into a new `$(`.)
    if let Ok(no_slash) = Template::parse(&template.replace('/', "_")) {
        let escaped =
            no_slash.render_escaped(&env, &|v| utf8_percent_encode(v, VALUE_ESCAPE).to_string());
        assert!(
            !escaped.contains('/'),
            "an escaped value added a path segment: {escaped:?}"
        );
    }
    // `replace.uri`: the rendered path is normalised, also as an upstream that decodes
    // `%2F` would read it.
    let rendered = t.render_escaped(&env, &|v| utf8_percent_encode(v, VALUE_ESCAPE).to_string());
    let normalized = gateway::net::path::normalize_path(&rendered).into_owned();
    let decoded = percent_encoding::percent_decode_str(&normalized).decode_utf8_lossy();
    let _ = gateway::net::path::normalize_path(&decoded);
});
