//! Hop-by-hop headers (RFC 9110 7.6.1): meaningful for one connection only, so removed
//! in both directions, with every name the `Connection` header lists. `Upgrade` (and
//! `Connection: upgrade`) pass only on a request that upgrades.

use http::{HeaderMap, HeaderName, Request, header};

const HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Headers that are hop-by-hop but have no constant in `http`.
const HOP_NAMES: &[&str] = &["keep-alive", "proxy-connection", "proxy"];

fn is_hop(name: &HeaderName) -> bool {
    HOP.contains(name) || HOP_NAMES.contains(&name.as_str())
}

/// Whether the request asks to switch protocols (WebSocket and the like): HTTP/1.1 with
/// `Upgrade` and `Connection: upgrade`.
pub fn wants_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == http::Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && connection_has(req.headers(), "upgrade")
}

fn connection_has(h: &HeaderMap, token: &str) -> bool {
    h.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Removes hop-by-hop headers; with `upgrade`, keeps `Upgrade` and sends
/// `Connection: upgrade`.
pub fn strip(h: &mut HeaderMap, upgrade: bool) {
    // Most messages carry none: one pass over the names instead of a lookup per name.
    if !upgrade && !h.keys().any(is_hop) {
        return;
    }
    let listed = h.contains_key(header::CONNECTION);
    if listed {
        let names: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("upgrade"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for n in names {
            h.remove(n);
        }
    }
    for n in HOP {
        if upgrade && *n == header::UPGRADE {
            continue;
        }
        h.remove(n);
    }
    for n in HOP_NAMES {
        h.remove(*n);
    }
    if upgrade {
        h.insert(
            header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_listed_and_fixed_names() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-secret".parse().expect("value"));
        h.insert("x-secret", "1".parse().expect("value"));
        h.insert("keep-alive", "timeout=5".parse().expect("value"));
        h.insert("te", "trailers".parse().expect("value"));
        h.insert("upgrade", "websocket".parse().expect("value"));
        h.insert("x-kept", "1".parse().expect("value"));
        strip(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-kept"]);
    }
}
