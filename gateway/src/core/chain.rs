//! The plugin chain of one request: which plugin instances run (Kong's precedence for the
//! final consumer), chosen once after the access phase, and the response headers every
//! response gets.

use std::sync::Arc;

use super::plugin::Plugin;
use crate::core::ResponseHeader;
use crate::core::state::RequestState;

/// Headers an auth plugin sets upstream; any client-sent copy is removed first.
pub const CONSUMER_HEADERS: &[&str] = &[
    "x-consumer-id",
    "x-consumer-custom-id",
    "x-consumer-username",
    "x-credential-identifier",
    "x-anonymous-consumer",
    "x-consumer-groups",
    "x-authenticated-groups",
];

/// Whether a (lowercase) header name is one of [`CONSUMER_HEADERS`].
pub fn is_consumer_header(name: &str) -> bool {
    CONSUMER_HEADERS.contains(&name)
}

/// The plugins of the request's route, chosen for its final consumer. Once the access
/// phase is over the consumer cannot change, so the choice is made once and reused by
/// every later phase.
pub fn active_plugins(st: &mut RequestState) -> Arc<[Arc<dyn Plugin>]> {
    if let Some(c) = &st.plugin_cache {
        return c.clone();
    }
    if let (Some(rt), Some(m)) = (&st.rt, &st.route)
        && let Some(Some(list)) = rt.route_static.get(m.route)
    {
        return list.clone();
    }
    let list: Arc<[Arc<dyn Plugin>]> = select_plugins(st).into();
    if st.access_done {
        st.plugin_cache = Some(list.clone());
    }
    list
}

fn select_plugins(st: &RequestState) -> Vec<Arc<dyn Plugin>> {
    let Some(rt) = &st.rt else {
        return Vec::new();
    };
    let Some(m) = &st.route else {
        return rt
            .global_plugins
            .iter()
            .filter_map(|s| s.select(None, &[]).cloned())
            .collect();
    };
    let groups = st
        .consumer
        .map(|c| rt.decl.consumers[c].groups.clone())
        .unwrap_or_default();
    rt.route_plugins[m.route]
        .iter()
        .filter_map(|s| s.select(st.consumer, &groups).cloned())
        .collect()
}

const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
const X_KONG_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-kong-request-id");

/// Headers every response gets (request id, plugin headers, plugin header hooks).
pub fn finish_response_headers(h: &mut ResponseHeader, st: &mut RequestState) {
    if !st.request_id.is_empty() {
        let v = st.request_id_value();
        h.headers.insert(X_REQUEST_ID, v.clone());
        h.headers.insert(X_KONG_REQUEST_ID, v);
    }
    for (k, v) in std::mem::take(&mut st.response_headers) {
        let _ = h.append_header(k, v.as_str());
    }
    for p in active_plugins(st).iter() {
        p.response_header(h, st);
    }
}
