//! Route matching with the precedence of Kong's `traditional_compatible` router.
//!
//! Each (route, path) pair becomes one candidate with a priority computed as Kong's
//! router does: number of matched fields, plain-hosts-only, number of headers, regex
//! path, `regex_priority`, longest plain path. Candidates are checked in priority
//! order; ties keep declaration order.

pub use crate::net::path::{compile_path_regex, normalize_path};
use std::cmp::Reverse;

use regex::Regex;

use crate::config::RouteDef;

#[derive(Debug)]
enum PathMatcher {
    Any,
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug)]
struct Candidate {
    route: usize,
    path: PathMatcher,
    priority: (u8, bool, usize, bool, i64, usize),
    order: usize,
}

#[derive(Debug)]
enum HostMatcher {
    Exact(String),
    Suffix(String),
    Prefix(String),
}

#[derive(Debug)]
struct RouteMatchers {
    hosts: Vec<HostMatcher>,
    snis: Vec<HostMatcher>,
    methods: Vec<String>,
    headers: Vec<(String, Vec<String>)>,
    http: bool,
    https: bool,
}

/// The request attributes the router looks at.
pub struct RequestView<'a> {
    pub method: &'a str,
    /// Host header (or :authority) as sent, possibly with a port.
    pub host: &'a str,
    /// Normalized path, without query.
    pub path: &'a str,
    pub tls: bool,
    /// The TLS server name the client sent (lower-cased), if any.
    pub sni: Option<&'a str>,
    pub header: &'a (dyn Fn(&str) -> Vec<String> + Sync),
}

/// The outcome of routing one request.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteMatch {
    pub route: usize,
    /// The part of the path the route matched (prefix, or whole regex match).
    pub matched_path: String,
    /// Regex captures: numbered (`"1"`, `"2"`, ...) and named.
    pub captures: Vec<(String, String)>,
    /// Set when the route matched but not over this protocol (Kong's 426 path).
    pub protocol_mismatch: bool,
}

#[derive(Debug, Default)]
pub struct Router {
    candidates: Vec<Candidate>,
    matchers: Vec<RouteMatchers>,
    /// For large configurations: plain path prefixes by their exact text, so a request
    /// checks only the candidates whose prefix its path starts with.
    index: Option<PrefixIndex>,
}

/// Candidates with a plain path prefix, by prefix; the others in a list of their own.
/// Positions are indexes into the priority-sorted candidate list, so merging the two
/// keeps Kong's order.
#[derive(Debug, Default)]
struct PrefixIndex {
    /// The distinct prefix lengths, shortest first.
    lengths: Vec<usize>,
    by_prefix: rustc_hash::FxHashMap<Box<str>, Vec<u32>>,
    unindexed: Vec<u32>,
}

/// Below this many candidates a linear scan is cheaper than the index lookups.
const INDEX_FROM: usize = 64;

impl PrefixIndex {
    fn new(candidates: &[Candidate]) -> PrefixIndex {
        let mut ix = PrefixIndex::default();
        for (pos, c) in candidates.iter().enumerate() {
            match &c.path {
                PathMatcher::Prefix(p) => {
                    ix.by_prefix
                        .entry(p.as_str().into())
                        .or_default()
                        .push(pos as u32);
                    if !ix.lengths.contains(&p.len()) {
                        ix.lengths.push(p.len());
                    }
                }
                _ => ix.unindexed.push(pos as u32),
            }
        }
        ix.lengths.sort_unstable();
        ix
    }

    /// Positions of the candidates that may match `path`, in priority order.
    fn positions(&self, path: &str) -> Vec<u32> {
        let mut hits: Vec<u32> = Vec::new();
        for &l in &self.lengths {
            if l > path.len() {
                break;
            }
            if let Some(key) = path.get(..l)
                && let Some(v) = self.by_prefix.get(key)
            {
                hits.extend_from_slice(v);
            }
        }
        if self.unindexed.is_empty() {
            hits.sort_unstable();
            return hits;
        }
        hits.extend_from_slice(&self.unindexed);
        hits.sort_unstable();
        hits
    }
}

/// A route the router cannot compile: its regex path.
#[derive(Debug, thiserror::Error)]
#[error("route {route}: {source}")]
pub struct RouterError {
    pub route: String,
    #[source]
    pub source: regex::Error,
}

impl Router {
    pub fn new(routes: &[RouteDef]) -> Result<Router, RouterError> {
        Router::new_filtered(routes, |_| true)
    }

    /// A router over the routes `keep` accepts (Kong drops the routes of a disabled
    /// service: they match nothing, so another route may take the request).
    pub fn new_filtered(
        routes: &[RouteDef],
        keep: impl Fn(&RouteDef) -> bool,
    ) -> Result<Router, RouterError> {
        let mut candidates = Vec::new();
        let mut matchers = Vec::new();
        for (ri, r) in routes.iter().enumerate() {
            let kept = keep(r);
            let wild = |h: &String| {
                if let Some(s) = h.strip_prefix('*') {
                    HostMatcher::Suffix(s.to_string())
                } else if let Some(p) = h.strip_suffix('*') {
                    HostMatcher::Prefix(p.to_string())
                } else {
                    HostMatcher::Exact(h.clone())
                }
            };
            let hosts: Vec<HostMatcher> = r.hosts.iter().map(wild).collect();
            let snis: Vec<HostMatcher> = r.snis.iter().map(wild).collect();
            let plain_hosts_only = !r.hosts.is_empty() && r.hosts.iter().all(|h| !h.contains('*'));
            let weight = [
                !r.methods.is_empty(),
                !r.hosts.is_empty(),
                !r.snis.is_empty(),
                !r.headers.is_empty(),
                !r.paths.is_empty(),
            ]
            .iter()
            .filter(|b| **b)
            .count() as u8;
            matchers.push(RouteMatchers {
                hosts,
                snis,
                methods: r.methods.clone(),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.iter().map(|x| x.to_ascii_lowercase()).collect(),
                        )
                    })
                    .collect(),
                http: r.protocols.iter().any(|p| p == "http"),
                https: r.protocols.iter().any(|p| p == "https"),
            });
            let base = |regex: bool, plen: usize, path: PathMatcher| Candidate {
                route: ri,
                path,
                priority: (
                    weight,
                    plain_hosts_only,
                    r.headers.len(),
                    regex,
                    if regex { r.regex_priority } else { 0 },
                    plen,
                ),
                order: 0,
            };
            if !kept {
                continue;
            }
            if r.paths.is_empty() {
                candidates.push(base(false, 0, PathMatcher::Any));
            }
            for p in &r.paths {
                if let Some(re) = p.strip_prefix('~') {
                    let re = compile_path_regex(re).map_err(|source| RouterError {
                        route: r.name.clone(),
                        source,
                    })?;
                    candidates.push(base(true, 0, PathMatcher::Regex(re)));
                } else {
                    candidates.push(base(false, p.len(), PathMatcher::Prefix(p.clone())));
                }
            }
        }
        for (i, c) in candidates.iter_mut().enumerate() {
            c.order = i;
        }
        candidates.sort_by_key(|c| (Reverse(c.priority), c.order));
        let index = (candidates.len() >= INDEX_FROM).then(|| PrefixIndex::new(&candidates));
        Ok(Router {
            candidates,
            matchers,
            index,
        })
    }

    /// Finds the route for a request, or None (Kong's 404).
    pub fn route(&self, req: &RequestView<'_>) -> Option<RouteMatch> {
        let host = strip_port(req.host).to_ascii_lowercase();
        let mut mismatch: Option<RouteMatch> = None;
        let mut consider = |c: &Candidate| -> Option<RouteMatch> {
            let found = self.try_candidate(c, req, &host)?;
            if !found.protocol_mismatch {
                return Some(found);
            }
            if mismatch.is_none() {
                mismatch = Some(found);
            }
            None
        };
        match &self.index {
            Some(ix) => {
                for pos in ix.positions(req.path) {
                    if let Some(c) = self.candidates.get(pos as usize)
                        && let Some(found) = consider(c)
                    {
                        return Some(found);
                    }
                }
            }
            None => {
                for c in &self.candidates {
                    if let Some(found) = consider(c) {
                        return Some(found);
                    }
                }
            }
        }
        mismatch
    }

    /// The match of one candidate (protocol mismatches included, flagged), or None.
    fn try_candidate(
        &self,
        c: &Candidate,
        req: &RequestView<'_>,
        host: &str,
    ) -> Option<RouteMatch> {
        let m = &self.matchers[c.route];
        if !m.methods.is_empty() && !m.methods.iter().any(|x| x == req.method) {
            return None;
        }
        if !m.hosts.is_empty() && !m.hosts.iter().any(|h| host_matches(h, host, req.host)) {
            return None;
        }
        // Kong: `snis` constrain https requests only (a plain http request ignores them).
        if req.tls
            && !m.snis.is_empty()
            && !req
                .sni
                .is_some_and(|sni| m.snis.iter().any(|h| host_matches(h, sni, sni)))
        {
            return None;
        }
        if !m.headers.iter().all(|(name, values)| {
            (req.header)(name).iter().any(|v| {
                values
                    .iter()
                    .any(|want| want.eq_ignore_ascii_case(v.trim()))
            })
        }) {
            return None;
        }
        let (matched_path, captures) = match &c.path {
            PathMatcher::Any => (String::new(), Vec::new()),
            PathMatcher::Prefix(p) => {
                if !req.path.starts_with(p.as_str()) {
                    return None;
                }
                (p.clone(), Vec::new())
            }
            PathMatcher::Regex(re) => {
                let caps = re.captures(req.path)?;
                let whole = caps
                    .get(0)
                    .map(|m| m.as_str().to_string())
                    .unwrap_or_default();
                let mut out = Vec::new();
                for (i, name) in re.capture_names().enumerate().skip(1) {
                    if let Some(v) = caps.get(i) {
                        out.push((i.to_string(), v.as_str().to_string()));
                        if let Some(n) = name {
                            out.push((n.to_string(), v.as_str().to_string()));
                        }
                    }
                }
                (whole, out)
            }
        };
        // Kong matches on every protocol and answers 426 (or redirects) only when an
        // https-only route is reached in clear text; gRPC routes are checked later.
        let proto_ok = req.tls || !m.https || m.http;
        Some(RouteMatch {
            route: c.route,
            matched_path,
            captures,
            protocol_mismatch: !proto_ok,
        })
    }
}

fn host_matches(m: &HostMatcher, host: &str, raw: &str) -> bool {
    match m {
        HostMatcher::Exact(h) => {
            if h.contains(':') {
                h.eq_ignore_ascii_case(raw)
            } else {
                h == host
            }
        }
        HostMatcher::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        HostMatcher::Prefix(p) => host.len() > p.len() && host.starts_with(p.as_str()),
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

/// What follows the matched prefix, without a leading dot segment (Kong's
/// `sanitize_uri_postfix`): `/api../x` on a `/api` route must not send `/../x` upstream.
fn sanitize_postfix(postfix: &str) -> &str {
    match postfix {
        "." | ".." => "",
        _ => postfix
            .strip_prefix("./")
            .or_else(|| postfix.strip_prefix("../"))
            .unwrap_or(postfix),
    }
}

/// The path sent upstream, following Kong's `path_handling: v0` rules.
pub fn upstream_path(
    service_path: Option<&str>,
    strip_path: bool,
    matched: &str,
    req_path: &str,
) -> String {
    let base = service_path.unwrap_or("/");
    let base_trimmed = base.strip_suffix('/').unwrap_or(base);
    let postfix = if strip_path && !matched.is_empty() {
        sanitize_postfix(req_path.get(matched.len()..).unwrap_or(""))
    } else {
        ""
    };
    let strip = strip_path && !matched.is_empty();
    if base.ends_with('/') {
        if strip {
            if postfix.is_empty() {
                if base == "/" {
                    "/".to_string()
                } else if req_path.ends_with('/') {
                    base.to_string()
                } else {
                    base_trimmed.to_string()
                }
            } else if postfix.starts_with('/') {
                format!("{base_trimmed}{postfix}")
            } else {
                format!("{base}{postfix}")
            }
        } else {
            format!("{base}{}", req_path.get(1..).unwrap_or(""))
        }
    } else if strip {
        if postfix.is_empty() {
            if req_path.len() > 1 && req_path.ends_with('/') {
                format!("{base}/")
            } else {
                base.to_string()
            }
        } else if postfix.starts_with('/') {
            format!("{base}{postfix}")
        } else {
            format!("{base}/{postfix}")
        }
    } else if req_path == "/" {
        base.to_string()
    } else {
        format!("{base}{req_path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_after_the_prefix_never_reach_the_upstream() {
        assert_eq!(upstream_path(None, true, "/api", "/api../x"), "/x");
        assert_eq!(
            upstream_path(Some("/v1"), true, "/api", "/api../x"),
            "/v1/x"
        );
        assert_eq!(
            upstream_path(Some("/v1/"), true, "/api", "/api./x"),
            "/v1/x"
        );
        assert_eq!(upstream_path(None, true, "/api", "/api.."), "/");
        assert_eq!(upstream_path(Some("/v1"), true, "/api", "/api."), "/v1");
        // Not a dot segment: kept.
        assert_eq!(upstream_path(None, true, "/api", "/api.json"), "/.json");
    }

    #[test]
    fn v0_paths() {
        assert_eq!(upstream_path(None, true, "/api", "/api/users"), "/users");
        assert_eq!(upstream_path(None, true, "/api", "/api"), "/");
        assert_eq!(
            upstream_path(Some("/v1"), true, "/api", "/api/users"),
            "/v1/users"
        );
        assert_eq!(upstream_path(Some("/v1"), true, "/api", "/api"), "/v1");
        assert_eq!(upstream_path(Some("/v1/"), true, "/api", "/api/x"), "/v1/x");
        assert_eq!(upstream_path(Some("/s"), false, "/r", "/re"), "/s/re");
        assert_eq!(
            upstream_path(None, false, "/api", "/api/users"),
            "/api/users"
        );
        assert_eq!(upstream_path(Some("/s"), true, "/r", "/re"), "/s/e");
    }

    fn route_def(
        i: usize,
        paths: Vec<String>,
        hosts: Vec<String>,
        methods: Vec<String>,
    ) -> RouteDef {
        RouteDef {
            name: format!("r{i}"),
            id: None,
            path: format!("routes[{i}]"),
            service: None,
            paths,
            hosts,
            snis: Vec::new(),
            methods,
            headers: Default::default(),
            protocols: vec!["http".into(), "https".into()],
            strip_path: true,
            preserve_host: false,
            regex_priority: (i % 3) as i64,
            path_handling: "v0".into(),
            https_redirect_status_code: 426,
        }
    }

    #[test]
    fn the_prefix_index_picks_what_a_linear_scan_picks() {
        let mut routes = Vec::new();
        for i in 0..300 {
            let paths = match i % 6 {
                0 => vec![format!("/svc{}", i / 6)],
                1 => vec![format!("/svc{}/v{}", i / 6, i % 4), "/shared".into()],
                2 => vec![format!("~/svc{}/[0-9]+$", i / 6)],
                3 => vec![],
                4 => vec!["/".into()],
                _ => vec![format!("/svc{}/x", i / 12)],
            };
            let hosts = if i % 5 == 0 {
                vec![format!("h{}.example.com", i % 7)]
            } else {
                vec![]
            };
            let methods = if i % 4 == 0 {
                vec!["POST".into()]
            } else {
                vec![]
            };
            routes.push(route_def(i, paths, hosts, methods));
        }
        let indexed = Router::new(&routes).expect("router");
        assert!(indexed.index.is_some());
        let mut linear = Router::new(&routes).expect("router");
        linear.index = None;
        let no_headers = |_: &str| Vec::new();
        for path in [
            "/",
            "/svc1",
            "/svc1/v1",
            "/svc10/123",
            "/svc3/x/y",
            "/shared/a",
            "/none",
            "/svc",
            "/svc49/v2",
        ] {
            for host in ["h0.example.com", "h3.example.com", "other"] {
                for method in ["GET", "POST"] {
                    let view = RequestView {
                        method,
                        host,
                        path,
                        tls: false,
                        sni: None,
                        header: &no_headers,
                    };
                    assert_eq!(
                        indexed.route(&view),
                        linear.route(&view),
                        "{method} {host}{path}"
                    );
                }
            }
        }
    }
}
