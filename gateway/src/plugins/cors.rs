//! Kong's `cors` plugin: preflights answered by the gateway (unless `preflight_continue`),
//! CORS headers on every response for allowed origins, `Vary: Origin`, and never
//! `Access-Control-Allow-Origin: *` together with credentials.

use crate::core::ResponseHeader;
use crate::core::Session;
use async_trait::async_trait;
use regex::Regex;
use serde::Deserialize;

use super::{BuildError, Flow, Plugin, SpecError};
use crate::core::respond::LocalResponse;
use crate::core::state::RequestState;

const DEFAULT_METHODS: &str = "GET,HEAD,PUT,PATCH,POST,DELETE,OPTIONS,TRACE,CONNECT";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub origins: Vec<String>,
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub exposed_headers: Vec<String>,
    pub methods: Option<Vec<String>>,
    pub max_age: Option<u64>,
    #[serde(default)]
    pub credentials: bool,
    #[serde(default)]
    pub private_network: bool,
    #[serde(default)]
    pub preflight_continue: bool,
    #[serde(default = "default_true")]
    pub allow_origin_absent: bool,
}

fn default_true() -> bool {
    true
}

fn is_plain(origin: &str) -> bool {
    !origin.is_empty()
        && origin
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:/-".contains(&b))
}

impl Config {
    /// What Kong loads but is risky: `*` with credentials (every site may make
    /// credentialed requests: the request's Origin is echoed, as Kong does), `*` among
    /// specific origins (the list means nothing then).
    pub fn warnings(&self) -> Vec<(String, String)> {
        let wildcard = self.origins.iter().any(|o| o == "*");
        let mut out = Vec::new();
        if wildcard && self.origins.len() > 1 {
            out.push((
                "origins".to_string(),
                "`*` allows every origin: the other entries have no effect".to_string(),
            ));
        }
        if self.credentials && (self.origins.is_empty() || wildcard) {
            out.push((
                "credentials".to_string(),
                "credentials with every origin allowed: any site can make credentialed requests (the request's Origin is echoed, as Kong does); list the allowed origins".to_string(),
            ));
        }
        out
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        for (i, o) in self.origins.iter().enumerate() {
            if o != "*" && !is_plain(o) {
                compile_origin(o).map_err(|e| {
                    SpecError::at(format!("origins[{i}]"), format!("invalid regex: {e}"))
                })?;
            }
        }
        if let Some(m) = &self.methods {
            for (i, x) in m.iter().enumerate() {
                if !DEFAULT_METHODS.split(',').any(|d| d == x) {
                    return Err(SpecError::at(
                        format!("methods[{i}]"),
                        format!("unknown method `{x}`"),
                    ));
                }
            }
        }
        for (field, list) in [
            ("headers", &self.headers),
            ("exposed_headers", &self.exposed_headers),
        ] {
            for (i, h) in list.iter().enumerate() {
                if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    return Err(SpecError::at(
                        format!("{field}[{i}]"),
                        "not a valid header name",
                    ));
                }
            }
        }
        if self.preflight_continue && self.private_network {
            return Err(SpecError::at(
                "private_network",
                "has no effect with preflight_continue (the upstream answers preflights)",
            ));
        }
        Ok(())
    }
}

fn compile_origin(o: &str) -> Result<Regex, regex::Error> {
    let o = o.strip_prefix('^').unwrap_or(o);
    let o = o.strip_suffix('$').unwrap_or(o);
    Regex::new(&format!("^(?:{o})$"))
}

enum OriginRule {
    /// `scheme://host[:port]` (or whatever was written), normalized.
    Exact {
        value: String,
    },
    Regex {
        re: Regex,
        with_scheme: bool,
    },
}

pub struct Cors {
    cfg: Config,
    allow_all: bool,
    /// A single plain origin is always sent as configured (Kong's shortcut).
    single: Option<String>,
    rules: Vec<OriginRule>,
    methods: String,
    allow_headers: Option<String>,
    expose: Option<String>,
}

/// (`scheme://host[:port]` without default ports, host)
fn normalize(origin: &str) -> (String, String) {
    let (scheme, rest) = match origin.split_once("://") {
        Some((s, r)) => (Some(s.to_ascii_lowercase()), r),
        None => (None, origin),
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() => {
            (h.to_ascii_lowercase(), Some(p))
        }
        _ => (rest.to_ascii_lowercase(), None),
    };
    let port = match (scheme.as_deref(), port) {
        (Some("http"), Some("80")) | (Some("https"), Some("443")) => None,
        (_, p) => p,
    };
    let mut full = String::new();
    if let Some(s) = &scheme {
        full.push_str(s);
        full.push_str("://");
    }
    full.push_str(&host);
    if let Some(p) = port {
        full.push(':');
        full.push_str(p);
    }
    (full, host)
}

impl Cors {
    pub fn new(cfg: Config) -> Result<Cors, BuildError> {
        let allow_all = cfg.origins.is_empty() || (cfg.origins.len() == 1 && cfg.origins[0] == "*");
        let single = (cfg.origins.len() == 1 && cfg.origins[0] != "*" && is_plain(&cfg.origins[0]))
            .then(|| cfg.origins[0].clone());
        let mut rules = Vec::new();
        for o in &cfg.origins {
            if o == "*" {
                continue;
            }
            let with_scheme = o.contains(':');
            if is_plain(o) {
                let (full, _) = normalize(o);
                rules.push(OriginRule::Exact { value: full });
            } else {
                rules.push(OriginRule::Regex {
                    re: compile_origin(o).map_err(BuildError::other)?,
                    with_scheme,
                });
            }
        }
        Ok(Cors {
            methods: cfg
                .methods
                .as_ref()
                .map(|m| m.join(","))
                .unwrap_or_else(|| DEFAULT_METHODS.to_string()),
            allow_headers: (!cfg.headers.is_empty()).then(|| cfg.headers.join(",")),
            expose: (!cfg.exposed_headers.is_empty()).then(|| cfg.exposed_headers.join(",")),
            allow_all,
            single,
            rules,
            cfg,
        })
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        let (full, host) = normalize(origin);
        self.rules.iter().any(|r| match r {
            // Kong compares a plain entry with the whole normalised Origin (scheme, host,
            // port): an entry without a scheme matches no browser Origin.
            OriginRule::Exact { value } => value == &full,
            OriginRule::Regex { re, with_scheme } => {
                re.is_match(if *with_scheme { &full } else { &host })
            }
        })
    }

    /// The CORS headers for a request with this Origin (shared by preflight and responses).
    fn origin_headers(&self, origin: Option<&str>, out: &mut Vec<(&'static str, String)>) {
        if self.allow_all {
            match (self.cfg.credentials, origin) {
                // Credentials never go with `*`: reflect the origin instead.
                (true, Some(o)) => {
                    out.push(("access-control-allow-origin", o.to_string()));
                    out.push(("access-control-allow-credentials", "true".into()));
                    out.push(("vary", "Origin".into()));
                }
                (true, None) => {}
                (false, _) => out.push(("access-control-allow-origin", "*".into())),
            }
            return;
        }
        out.push(("vary", "Origin".into()));
        let allowed = if let Some(single) = &self.single {
            Some(single.clone())
        } else {
            // The Origin as Kong echoes it: normalised (default port dropped).
            origin
                .filter(|o| self.origin_allowed(o))
                .map(|o| normalize(o).0)
        };
        if let Some(a) = allowed {
            out.push(("access-control-allow-origin", a));
            if self.cfg.credentials {
                out.push(("access-control-allow-credentials", "true".into()));
            }
        }
    }
}

#[async_trait]
impl Plugin for Cors {
    // dup: the shape of every plugin file (its own Config, checks and hook types).
    fn name(&self) -> &'static str {
        "cors"
    }

    fn priority(&self) -> i32 {
        2000
    }

    async fn access(
        &self,
        session: &mut Session,
        st: &mut RequestState,
    ) -> crate::core::Result<Flow> {
        let req = session.req_header();
        let origin = req
            .headers
            .get("origin")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty());
        let acrm = req.headers.contains_key("access-control-request-method");
        if req.method != http::Method::OPTIONS || origin.is_none() || !acrm {
            return Ok(Flow::Continue);
        }
        if self.cfg.preflight_continue {
            st.cors_skip = true;
            return Ok(Flow::Continue);
        }
        st.cors_skip = true;
        let mut h = Vec::new();
        self.origin_headers(origin, &mut h);
        let mut resp = LocalResponse {
            status: 200,
            headers: Vec::new(),
            body: bytes::Bytes::new(),
            message: None,
        };
        for (k, v) in h {
            resp = resp.with_header(k, v);
        }
        let allow_headers = self.allow_headers.clone().or_else(|| {
            req.headers
                .get("access-control-request-headers")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        });
        if let Some(ah) = allow_headers {
            resp = resp.with_header("access-control-allow-headers", ah);
        }
        resp = resp.with_header("access-control-allow-methods", self.methods.clone());
        if let Some(m) = self.cfg.max_age {
            resp = resp.with_header("access-control-max-age", m.to_string());
        }
        if self.cfg.private_network
            && req
                .headers
                .get("access-control-request-private-network")
                .and_then(|v| v.to_str().ok())
                == Some("true")
        {
            resp = resp.with_header("access-control-allow-private-network", "true");
        }
        Ok(Flow::Respond(resp))
    }

    fn response_header(&self, resp: &mut ResponseHeader, st: &mut RequestState) {
        if st.cors_skip {
            return;
        }
        let origin = st.request_origin.clone();
        let mut h = Vec::new();
        self.origin_headers(origin.as_deref(), &mut h);
        // Kong: an origin that is not allowed gets no Access-Control-Allow-Origin, not even
        // the upstream's own.
        if !h
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("access-control-allow-origin"))
        {
            resp.headers
                .remove(http::header::ACCESS_CONTROL_ALLOW_ORIGIN);
        }
        for (k, v) in h {
            if k == "vary" {
                let _ = resp.append_header(k, v);
            } else {
                let _ = resp.insert_header(k, v);
            }
        }
        if let Some(e) = &self.expose {
            let _ = resp.insert_header("access-control-expose-headers", e.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(yaml: &str) -> Cors {
        let v: serde_norway::Value = serde_norway::from_str(yaml).expect("yaml");
        let c: Config = super::super::parse_config(&v).expect("config");
        c.validate().expect("valid");
        Cors::new(c).expect("build")
    }

    #[test]
    fn origin_matching() {
        let c = cors(
            "origins: [\"https://app.example.com\", \"(.*)\\\\.example\\\\.org\", \"http://localhost:3000\"]",
        );
        assert!(c.origin_allowed("https://app.example.com"));
        assert!(c.origin_allowed("https://app.example.com:443"));
        assert!(!c.origin_allowed("http://app.example.com"));
        assert!(c.origin_allowed("https://x.example.org"));
        assert!(!c.origin_allowed("https://x.example.org.evil.com"));
        assert!(c.origin_allowed("http://localhost:3000"));
        assert!(!c.origin_allowed("http://localhost:3001"));
    }

    #[test]
    fn contradictions_warned_invalid_regexes_rejected() {
        // Kong loads these (and echoes the Origin with credentials): warnings, not errors.
        for risky in ["origins: [\"*\", \"https://a.com\"]", "credentials: true"] {
            let v: serde_norway::Value = serde_norway::from_str(risky).expect("yaml");
            let c: Config = super::super::parse_config(&v).expect("config");
            assert!(c.validate().is_ok(), "{risky}");
            assert!(!c.warnings().is_empty(), "{risky}");
        }
        let v: serde_norway::Value = serde_norway::from_str("origins: [\"~(\"]").expect("yaml");
        let c: Config = super::super::parse_config(&v).expect("config");
        assert!(c.validate().is_err());
    }

    #[test]
    fn plain_origins_compare_like_kong() {
        let cors = |origins: &str| {
            let v: serde_norway::Value =
                serde_norway::from_str(&format!("origins: {origins}")).expect("yaml");
            let c: Config = super::super::parse_config(&v).expect("config");
            Cors::new(c).expect("cors")
        };
        let grant = |c: &Cors, origin: &str| {
            let mut out = Vec::new();
            c.origin_headers(Some(origin), &mut out);
            out.into_iter()
                .find(|(k, _)| *k == "access-control-allow-origin")
                .map(|(_, v)| v)
        };
        let c = cors("[https://app.example.com, https://admin.example.com]");
        // The default port is the same origin, echoed normalised.
        assert_eq!(
            grant(&c, "https://app.example.com:443").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(grant(&c, "http://app.example.com"), None);
        // An entry without a scheme matches no browser Origin (Kong compares it whole).
        let c = cors("[app.example.com, other.example.com]");
        assert_eq!(grant(&c, "https://app.example.com"), None);
    }
}
