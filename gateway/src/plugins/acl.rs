//! Kong's `acl` plugin: allow or deny by the authenticated consumer's ACL groups.

use std::collections::HashMap;
use std::sync::Arc;

use crate::core::Session;
use async_trait::async_trait;
use serde::Deserialize;

use super::{BuildContext, BuildError, Flow, Plugin, SpecError};
use crate::core::respond::LocalResponse;
use crate::core::state::RequestState;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
    #[serde(default)]
    pub hide_groups_header: bool,
    #[serde(default)]
    pub always_use_authenticated_groups: bool,
    #[serde(default)]
    pub include_consumer_groups: bool,
}

impl Config {
    pub fn validate(&self) -> Result<(), SpecError> {
        match (&self.allow, &self.deny) {
            (Some(_), Some(_)) => Err(SpecError::at("allow", "set either allow or deny, not both")),
            (None, None) => Err(SpecError::at("allow", "one of allow or deny is required")),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclDef {
    pub group: String,
    pub id: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub created_at: Option<i64>,
}

pub fn check_acl(v: &serde_norway::Value) -> Result<AclDef, SpecError> {
    let a: AclDef = super::parse_config(v)?;
    if a.group.is_empty() {
        return Err(SpecError::at("group", "must not be empty"));
    }
    Ok(a)
}

pub struct Acl {
    cfg: Config,
    groups: Arc<HashMap<usize, Vec<String>>>,
}

/// Groups per consumer from acl credentials (shared by every acl instance).
#[derive(Clone)]
struct AclsOnly(Arc<HashMap<usize, Vec<String>>>);
/// The same plus consumer-group names (`include_consumer_groups`).
#[derive(Clone)]
struct WithGroups(Arc<HashMap<usize, Vec<String>>>);

impl Acl {
    pub fn new(cfg: Config, ctx: &BuildContext<'_>) -> Result<Acl, BuildError> {
        let include = cfg.include_consumer_groups;
        let build = || -> Result<Arc<HashMap<usize, Vec<String>>>, BuildError> {
            let mut groups: HashMap<usize, Vec<String>> = HashMap::new();
            for c in &ctx.decl.acls {
                let a = check_acl(&c.value).map_err(|source| BuildError::Credential {
                    path: c.path.clone(),
                    source,
                })?;
                groups.entry(c.consumer).or_default().push(a.group);
            }
            if include {
                for (ci, c) in ctx.decl.consumers.iter().enumerate() {
                    for g in &c.groups {
                        groups
                            .entry(ci)
                            .or_default()
                            .push(ctx.decl.consumer_groups[*g].name.clone());
                    }
                }
            }
            Ok(Arc::new(groups))
        };
        let groups = if include {
            ctx.cache.get_or_try_init(|| build().map(WithGroups))?.0
        } else {
            ctx.cache.get_or_try_init(|| build().map(AclsOnly))?.0
        };
        Ok(Acl { cfg, groups })
    }
}

#[async_trait]
impl Plugin for Acl {
    // dup: the shape of every plugin file (its own Config, checks and hook types).
    fn name(&self) -> &'static str {
        "acl"
    }

    fn priority(&self) -> i32 {
        950
    }

    async fn access(
        &self,
        session: &mut Session,
        st: &mut RequestState,
    ) -> crate::core::Result<Flow> {
        let accept = session
            .req_header()
            .headers
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let Some(consumer) = st.consumer else {
            return Ok(Flow::Respond(LocalResponse::error(
                401,
                "Unauthorized",
                &st.request_id,
                accept.as_deref(),
            )));
        };
        let empty = Vec::new();
        let mine = self.groups.get(&consumer).unwrap_or(&empty);
        let blocked = match (&self.cfg.allow, &self.cfg.deny) {
            (Some(allow), _) => !mine.iter().any(|g| allow.contains(g)),
            (_, Some(deny)) => mine.iter().any(|g| deny.contains(g)),
            _ => false,
        };
        if blocked {
            let route = st
                .rt
                .as_ref()
                .zip(st.route.as_ref())
                .map(|(rt, m)| rt.decl.routes[m.route].name.clone())
                .unwrap_or_default();
            crate::metrics::Metrics::global().auth_failure(&route, "acl", "forbidden");
            return Ok(Flow::Respond(LocalResponse::error(
                403,
                "You cannot consume this service",
                &st.request_id,
                accept.as_deref(),
            )));
        }
        if !self.cfg.hide_groups_header && !mine.is_empty() {
            st.upstream_headers.push((
                http::HeaderName::from_static("x-consumer-groups"),
                mine.join(", "),
            ));
        }
        Ok(Flow::Continue)
    }
}
