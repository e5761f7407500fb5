//! Tier selection, identifiers and headers, on configurations loaded as the gateway
//! loads them.

use std::sync::Arc;

use super::window::{Usage, Window};
use super::*;
use crate::balancer::TargetRegistry;
use crate::config::{Declarative, load_str};
use crate::core::runtime::Runtime;
use crate::plugins::PluginSpec;

// dup: each test spells out its own setup and checks (reads alone when it fails).
const TIERS_BY_GROUP: &str = r#"
_format_version: "3.0"
services:
  - name: svc
    url: http://127.0.0.1:9
    routes:
      - name: r
        paths: ["/"]
consumer_groups:
  - name: free
    plugins:
      - name: rate-limiting
        config: {minute: 100, policy: local}
  - name: pro
    plugins:
      - name: rate-limiting
        config: {minute: 1000, policy: local}
  - name: enterprise
    plugins:
      - name: rate-limiting
        config: {minute: 5000, policy: local}
consumers:
  - username: alice
    groups: [{name: pro}]
  - username: bob
    groups: [{name: free}]
  - username: carol
plugins:
  - name: rate-limiting
    config: {minute: 10, policy: local}
"#;

fn load(text: &str) -> Declarative {
    match load_str(text, "test.yml", &crate::plugins::load_options(Vec::new())) {
        Ok(d) => d,
        Err(e) => panic!("config: {e}"),
    }
}

/// Builds the instance of `decl.plugins[i]` the way the runtime does.
fn instance(decl: &Declarative, i: usize) -> RateLimiting {
    let p = &decl.plugins[i];
    let Some(PluginSpec::RateLimiting(c)) = p.spec.downcast_ref::<PluginSpec>() else {
        panic!("not rate-limiting");
    };
    let cache = crate::core::plugin::BuildCache::default();
    let ctx = BuildContext {
        cache: &cache,
        decl,
        bg: None,
        scope: &p.scope,
    };
    match RateLimiting::new((**c).clone(), &ctx) {
        Ok(r) => r,
        Err(e) => panic!("build: {e}"),
    }
}

fn state(rt: Option<Arc<Runtime>>, consumer: Option<usize>) -> RequestState {
    RequestState {
        rt,
        consumer,
        client_addr: Some("10.1.2.3".into()),
        ..Default::default()
    }
}

#[test]
fn consumer_group_plugins_are_tiers() {
    let decl = load(TIERS_BY_GROUP);
    let rt = match Runtime::build(
        decl.clone(),
        &TargetRegistry::default(),
        None,
        &crate::plugins::REGISTRY,
    ) {
        Ok(rt) => Arc::new(rt),
        Err(e) => panic!("{e}"),
    };
    let slot = &rt.route_plugins[0][0];
    assert_eq!(slot.name, "rate-limiting");
    for (who, want_group, want_limit) in [
        ("alice", Some("pro"), 1000),
        ("bob", Some("free"), 100),
        ("carol", None, 10),
    ] {
        let ci = decl
            .consumers
            .iter()
            .position(|c| c.username.as_deref() == Some(who));
        let groups = ci
            .map(|c| decl.consumers[c].groups.clone())
            .unwrap_or_default();
        let chosen = slot.select(ci, &groups);
        let scope = slot
            .instances
            .iter()
            .find(|(_, p)| chosen.is_some_and(|c| Arc::ptr_eq(c, p)))
            .map(|(s, _)| s.clone());
        let group = scope
            .as_ref()
            .and_then(|s| s.consumer_group)
            .map(|g| decl.consumer_groups[g].name.as_str());
        assert_eq!(group, want_group, "{who}");
        // The chosen instance's plan: its limit, labelled with its group.
        let pi = decl
            .plugins
            .iter()
            .position(|p| Some(&p.scope) == scope.as_ref());
        let inst = instance(&decl, pi.unwrap_or(usize::MAX));
        let st = state(Some(rt.clone()), ci);
        let plan = inst.plan(&st, None, "/");
        assert_eq!(plan.tier, want_group.unwrap_or("default"));
        assert_eq!(plan.limits[0].limit, want_limit);
        // limit_by consumer: the consumer's id, or the client IP without one.
        let want_id = ci
            .map(|c| decl.consumers[c].id.clone())
            .unwrap_or_else(|| "10.1.2.3".into());
        assert_eq!(plan.identifier, want_id);
    }
}

// dup: each test spells out its own setup and checks (reads alone when it fails).
const TIERS_BY_CLAIM: &str = r#"
_format_version: "3.0"
services:
  - name: svc
    url: http://127.0.0.1:9
    routes:
      - name: r
        paths: ["/"]
consumer_groups:
  - name: enterprise
consumers:
  - username: big
    groups: [{name: enterprise}]
plugins:
  - name: rate-limiting
    config:
      limit_by: ip
      tier_claim: tier
      limit_key_claim: sub
      default_tier: free
      tiers:
        free: {minute: 100}
        pro: {minute: 1000}
        enterprise: {minute: 5000}
"#;

fn claims(v: serde_json::Value) -> Option<Arc<serde_json::Map<String, serde_json::Value>>> {
    match v {
        serde_json::Value::Object(m) => Some(Arc::new(m)),
        _ => None,
    }
}

#[test]
fn tiers_from_jwt_claims_with_default() {
    let decl = load(TIERS_BY_CLAIM);
    let rt = Runtime::build(
        decl.clone(),
        &TargetRegistry::default(),
        None,
        &crate::plugins::REGISTRY,
    )
    .ok()
    .map(Arc::new);
    let p = instance(&decl, 0);
    let mut st = state(rt, None);
    let cases = [
        (
            serde_json::json!({"sub": "user-1", "tier": "pro"}),
            "pro",
            1000,
            "user-1",
        ),
        (
            serde_json::json!({"sub": "user-2", "tier": "enterprise"}),
            "enterprise",
            5000,
            "user-2",
        ),
        (
            serde_json::json!({"sub": "user-3", "tier": "gold"}),
            "free",
            100,
            "user-3",
        ),
        (serde_json::json!({"sub": 42}), "free", 100, "42"),
        (serde_json::json!({"tier": "pro"}), "pro", 1000, "10.1.2.3"),
    ];
    for (c, tier, limit, id) in cases {
        st.jwt_claims = claims(c.clone());
        let plan = p.plan(&st, None, "/");
        assert_eq!(
            (plan.tier, plan.limits[0].limit, plan.identifier.as_str()),
            (tier, limit, id),
            "{c}"
        );
    }
    // No token at all: the default tier, keyed by limit_by (ip).
    st.jwt_claims = None;
    let plan = p.plan(&st, None, "/");
    assert_eq!((plan.tier, plan.identifier.as_str()), ("free", "10.1.2.3"));
    // A consumer in a group named like a tier gets that tier when no claim names one.
    st.consumer = Some(0);
    assert_eq!(p.plan(&st, None, "/").tier, "enterprise");
    st.jwt_claims = claims(serde_json::json!({"tier": "pro"}));
    assert_eq!(p.plan(&st, None, "/").tier, "pro");
}

fn single(config: &str) -> (Declarative, RateLimiting) {
    let text = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: svc\n    url: http://127.0.0.1:9\n    routes:\n      - name: r\n        paths: [\"/\"]\n        plugins:\n          - name: rate-limiting\n            config: {config}\n"
    );
    let decl = load(&text);
    let p = instance(&decl, 0);
    (decl, p)
}

#[test]
fn identifiers_fall_back_to_the_ip() {
    let (_, p) = single("{minute: 5, limit_by: header, header_name: x-api-user}");
    let st = state(None, None);
    assert_eq!(p.plan(&st, Some("u1"), "/").identifier, "u1");
    assert_eq!(p.plan(&st, None, "/").identifier, "10.1.2.3");
    let (_, p) = single("{minute: 5, limit_by: path, path: /a}");
    assert_eq!(p.plan(&st, None, "/a").identifier, "/a");
    assert_eq!(p.plan(&st, None, "/a/b").identifier, "10.1.2.3");
    let (_, p) = single("{minute: 5, limit_by: credential}");
    let mut st2 = state(None, None);
    st2.credential = Some("cred-1".into());
    assert_eq!(p.plan(&st2, None, "/").identifier, "cred-1");
    assert_eq!(p.plan(&st, None, "/").identifier, "10.1.2.3");
    let long = "x".repeat(5000);
    let (_, p) = single("{minute: 5, limit_by: header, header_name: x-api-user}");
    assert!(p.plan(&st, Some(&long), "/").identifier.len() < 100);
}

#[test]
fn key_carries_the_plugin_scope_and_a_cluster_hash_tag() {
    let (decl, p) = single("{minute: 5, limit_by: ip}");
    let route_id = crate::config::stable_id("route", "r");
    let service_id = crate::config::stable_id("service", "svc");
    assert_eq!(decl.routes[0].name, "r");
    assert_eq!(
        p.key_base("1.2.3.4"),
        format!("ratelimit:{route_id}:{service_id}:1.2.3.4")
    );
    let (_, p) = single("{minute: 5, limit_by: ip, policy: redis, redis: {host: 127.0.0.1}}");
    assert_eq!(
        p.key_base("1.2.3.4"),
        format!("ratelimit:{{{route_id}:{service_id}:1.2.3.4}}")
    );
}

#[test]
fn kong_headers() {
    let (_, p) = single("{second: 5, minute: 10}");
    // 2026-11-22T01:23:45.678Z
    let now = 1_795_310_625_678;
    let d = Decision {
        admitted: true,
        usage: vec![
            Usage {
                window: Window::Second,
                limit: 5,
                used: 1,
            },
            Usage {
                window: Window::Minute,
                limit: 10,
                used: 6,
            },
        ],
    };
    let h = p.headers(&d, now);
    let get = |k: &str| h.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("X-RateLimit-Limit-Second"), Some("5"));
    assert_eq!(get("X-RateLimit-Remaining-Second"), Some("4"));
    assert_eq!(get("X-RateLimit-Limit-Minute"), Some("10"));
    assert_eq!(get("X-RateLimit-Remaining-Minute"), Some("4"));
    // Tie at 4 remaining: the longer window wins.
    assert_eq!(get("RateLimit-Limit"), Some("10"));
    assert_eq!(get("RateLimit-Remaining"), Some("4"));
    assert_eq!(get("RateLimit-Reset"), Some("15"));
    let (_, p) = single("{second: 5, hide_client_headers: true}");
    assert!(p.headers(&d, now).is_empty());
}
