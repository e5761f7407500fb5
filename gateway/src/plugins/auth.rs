//! What the authentication plugins share: setting the consumer (Kong's consumer headers
//! upstream), the anonymous fallback, and reading tokens from the query and cookies.

use http::HeaderName;

use crate::core::state::RequestState;

pub const CONSUMER_ID: HeaderName = HeaderName::from_static("x-consumer-id");
pub const CONSUMER_CUSTOM_ID: HeaderName = HeaderName::from_static("x-consumer-custom-id");
pub const CONSUMER_USERNAME: HeaderName = HeaderName::from_static("x-consumer-username");
pub const CREDENTIAL_IDENTIFIER: HeaderName = HeaderName::from_static("x-credential-identifier");
pub const ANONYMOUS: HeaderName = HeaderName::from_static("x-anonymous-consumer");

/// Marks the request authenticated (Kong's `set_consumer`): consumer headers replace any
/// set by an earlier auth plugin.
pub fn set_consumer(st: &mut RequestState, consumer: Option<usize>, credential: Option<String>) {
    st.upstream_headers.retain(|(k, _)| {
        ![
            &CONSUMER_ID,
            &CONSUMER_CUSTOM_ID,
            &CONSUMER_USERNAME,
            &CREDENTIAL_IDENTIFIER,
            &ANONYMOUS,
        ]
        .contains(&k)
    });
    if let (Some(rt), Some(ci)) = (st.rt.clone(), consumer) {
        let c = &rt.decl.consumers[ci];
        st.upstream_headers.push((CONSUMER_ID, c.id.clone()));
        if let Some(v) = &c.custom_id {
            st.upstream_headers.push((CONSUMER_CUSTOM_ID, v.clone()));
        }
        if let Some(v) = &c.username {
            st.upstream_headers.push((CONSUMER_USERNAME, v.clone()));
        }
    }
    match &credential {
        Some(id) => st
            .upstream_headers
            .push((CREDENTIAL_IDENTIFIER, id.clone())),
        None => st.upstream_headers.push((ANONYMOUS, "true".into())),
    }
    st.anonymous = credential.is_none();
    st.consumer = consumer;
    st.credential = credential;
}

/// A failed authentication, as Kong's auth plugins end it: counted by reason, then the
/// anonymous consumer when one is configured (Kong's logical OR), else Kong's error
/// template with `WWW-Authenticate`.
pub fn fail(
    session: &crate::core::Session,
    st: &mut RequestState,
    plugin: &'static str,
    reason: &'static str,
    anonymous: Anonymous,
    (status, message, www_authenticate): (u16, &str, &str),
) -> crate::core::plugin::Flow {
    use crate::core::plugin::Flow;
    let route = st
        .rt
        .as_ref()
        .zip(st.route.as_ref())
        .map(|(rt, m)| rt.decl.routes[m.route].name.clone())
        .unwrap_or_default();
    crate::metrics::Metrics::global().auth_failure(&route, plugin, reason);
    if let Some(a) = anonymous {
        // `a` is None when `anonymous` names no consumer: Kong passes the request on
        // without a consumer (X-Anonymous-Consumer: true).
        set_consumer(st, a, None);
        return Flow::Continue;
    }
    let accept = session
        .req_header()
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    Flow::Respond(
        crate::core::respond::LocalResponse::error(status, message, &st.request_id, accept)
            .with_header("www-authenticate", www_authenticate),
    )
}

/// Kong's `kong.request.get_header(name)`: case-insensitive, `_` read as `-`, the first
/// value when the header is repeated.
pub fn kong_header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a [u8]> {
    let name = name.to_ascii_lowercase().replace('_', "-");
    let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
    headers.get(name).map(|v| v.as_bytes())
}

/// A configured `anonymous`: Some(the consumer), or Some(None) when it names no consumer
/// (Kong then lets a failed authentication through without one; `gateway check` warns).
/// None when `anonymous` is not set.
pub type Anonymous = Option<Option<usize>>;

/// Resolves an auth plugin's `anonymous` setting once, when the plugin is built.
pub fn anonymous(decl: &crate::config::Declarative, setting: Option<&str>) -> Anonymous {
    setting.map(|a| decl.consumer_by_key(a))
}

/// Query parameters, percent-decoded (`+` as space), in order.
pub fn query_params(query: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = query else { return Vec::new() };
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let s = s.replace('+', " ");
    percent_encoding::percent_decode_str(&s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The value of cookie `name`, from every Cookie header.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// nginx's base64 decoding (`ngx.decode_base64`): the standard alphabet, padding optional
/// (decoding stops at the first `=`), any other character refused, a length of 4n+1
/// refused.
pub fn ngx_decode_base64(src: &[u8]) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u8> {
        match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let len = src.iter().position(|&c| c == b'=').unwrap_or(src.len());
    let vals: Vec<u8> = src[..len].iter().map(|&c| val(c)).collect::<Option<_>>()?;
    if vals.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(vals.len() / 4 * 3 + 2);
    for q in vals.chunks(4) {
        if q.len() > 1 {
            out.push((q[0] << 2) | (q[1] >> 4));
        }
        if q.len() > 2 {
            out.push((q[1] << 4) | (q[2] >> 2));
        }
        if q.len() > 3 {
            out.push((q[2] << 6) | q[3]);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_base64() {
        assert_eq!(ngx_decode_base64(b"YWI="), Some(b"ab".to_vec()));
        assert_eq!(ngx_decode_base64(b"YWI"), Some(b"ab".to_vec()));
        assert_eq!(ngx_decode_base64(b"YWI=garbage!"), Some(b"ab".to_vec()));
        assert_eq!(ngx_decode_base64(b"Y"), None);
        assert_eq!(ngx_decode_base64(b"YW I"), None);
        assert_eq!(ngx_decode_base64(b""), Some(vec![]));
    }

    #[test]
    fn parses_query_and_cookies() {
        assert_eq!(
            query_params(Some("jwt=a%2Eb&x=1+2&flag")),
            vec![
                ("jwt".into(), "a.b".into()),
                ("x".into(), "1 2".into()),
                ("flag".into(), "".into())
            ]
        );
        let mut h = http::HeaderMap::new();
        h.append(
            http::header::COOKIE,
            "a=1; token=abc".parse().expect("value"),
        );
        assert_eq!(cookie(&h, "token"), Some("abc"));
        assert_eq!(cookie(&h, "nope"), None);
    }
}
