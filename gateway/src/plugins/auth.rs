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

/// Resolves an `anonymous` setting (consumer id, username or custom id).
pub fn find_consumer(decl: &crate::config::Declarative, key: &str) -> Option<usize> {
    decl.consumers.iter().position(|c| {
        c.id == key || c.username.as_deref() == Some(key) || c.custom_id.as_deref() == Some(key)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

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
