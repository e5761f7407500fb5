//! The desired state of an environment: env file + discovered context + ids
//! known so far -> every resource, with references resolved (or pending).
//! One file per area; [`build`] runs them all. A kind is built in exactly
//! one area, which keeps the builder's order inside each kind.

mod compute;
mod data;
mod edge;
mod grafana;
mod network;
mod observability;
mod security;

pub use compute::{AGENT_SECRETS, gateway_environment, gateway_secret_names};
pub use grafana::grafana_environment;
pub use observability::dashboard_desired;

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::config::EnvConfig;
use crate::consts::*;
use crate::model::{Desired, Ids, Key, Kind, PENDING};
use crate::specs::*;

/// Facts gathered before planning that the env file does not contain.
#[derive(Debug, Clone, Default)]
pub struct Ctx {
    pub region: String,
    /// The account the environment lives in (`aws:SourceAccount` of the
    /// role trust policies).
    pub account_id: String,
    /// Availability zone names, at least `az_count` of them.
    pub azs: Vec<String>,
    pub dashboards: Vec<DashboardFile>,
    pub rule_files: Vec<RuleFile>,
    /// HTTPS endpoint from the PagerDuty secret, when it exists.
    pub pagerduty_endpoint: Option<String>,
    /// Whether dashboards are managed (a Grafana URL is configured).
    pub grafana_enabled: bool,
    /// The environment's rendered and validated gateway configuration.
    pub gateway_config: Option<crate::gateway_config::Rendered>,
}

#[derive(Debug, Clone)]
pub struct DashboardFile {
    pub uid: String,
    pub title: String,
    /// The dashboard model as uploaded.
    pub json: String,
    pub hash: String,
}

#[derive(Debug, Clone)]
pub struct RuleFile {
    /// Namespace name (file stem).
    pub name: String,
    pub data: String,
    pub hash: String,
}

const TIERS: [&str; 3] = ["public", "private", "database"];

fn az_letter(i: usize) -> char {
    (b'a' + i as u8) as char
}

fn k(kind: Kind, name: &str) -> Key {
    Key::new(kind, name)
}

/// `base + suffix`, staying pending while `base` is.
fn join(base: &str, suffix: &str) -> String {
    if base == PENDING {
        PENDING.to_string()
    } else {
        format!("{base}{suffix}")
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn rule(port: i32, peer: String) -> SgRule {
    SgRule {
        protocol: "tcp".into(),
        from_port: port,
        to_port: port,
        peer,
    }
}

fn rules(mut v: Vec<SgRule>) -> Vec<SgRule> {
    v.sort();
    v.dedup();
    v
}

/// Names of the secrets the task definition and data stores use.
pub fn secret_name(cfg: &EnvConfig, which: &str) -> String {
    format!("{}/{}/{which}", cfg.project, cfg.name)
}

/// Which target group receives production traffic, as recorded on the
/// HTTPS listener (blue until a deploy flips it).
pub fn live_color(ids: &Ids) -> &'static str {
    let green = ids.get(Kind::TargetGroup, "green", "arn");
    let live = ids.get(Kind::Listener, "https", "target_group_arn");
    if green != PENDING && live == green {
        "green"
    } else {
        "blue"
    }
}

pub fn other_color(color: &str) -> &'static str {
    if color == "green" { "blue" } else { "green" }
}

/// What every area reads: the env file, the context, the ids known so far,
/// and the names and references several areas share.
pub(crate) struct Build<'a> {
    pub cfg: &'a EnvConfig,
    pub ctx: &'a Ctx,
    pub ids: &'a Ids,
    /// `<project>-<env>`, the prefix of every name.
    pub p: String,
    /// Availability zones in use.
    pub n: usize,
}

impl Build<'_> {
    fn vpc(&self) -> Key {
        k(Kind::Vpc, "main")
    }

    fn vpc_id(&self) -> String {
        self.ids.id(Kind::Vpc, "main")
    }

    /// Subnet ids of a tier, sorted.
    fn subnet_ids(&self, tier: &str) -> Vec<String> {
        sorted(
            (0..self.n)
                .map(|i| {
                    self.ids
                        .id(Kind::Subnet, &format!("{tier}-{}", az_letter(i)))
                })
                .collect(),
        )
    }

    fn subnet_keys(&self, tier: &str) -> Vec<Key> {
        (0..self.n)
            .map(|i| k(Kind::Subnet, &format!("{tier}-{}", az_letter(i))))
            .collect()
    }

    fn sg(&self, name: &str) -> String {
        self.ids.id(Kind::SecurityGroup, name)
    }

    fn secret_arn(&self, which: &str) -> String {
        self.ids.get(Kind::Secret, which, "arn")
    }

    fn tg_arn(&self, color: &str) -> String {
        self.ids.get(Kind::TargetGroup, color, "arn")
    }

    fn cluster(&self) -> String {
        format!("{}-cluster", self.p)
    }

    fn flow_group(&self) -> String {
        format!("/{}/{}/vpc-flow-logs", self.cfg.project, self.cfg.name)
    }

    fn app_group(&self) -> String {
        format!("/ecs/{}/gateway", self.p)
    }
}

/// Every resource of the environment, in dependency order within each kind.
pub fn build(cfg: &EnvConfig, ctx: &Ctx, ids: &Ids) -> Vec<Desired> {
    let b = Build {
        cfg,
        ctx,
        ids,
        p: cfg.prefix(),
        n: cfg.network.az_count.min(ctx.azs.len()),
    };
    let mut out = Vec::new();
    network::push(&b, &mut out);
    observability::push_logs(&b, &mut out);
    security::push_roles(&b, &mut out);
    security::push_groups(&b, &mut out);
    security::push_secrets(&b, &mut out);
    data::push(&b, &mut out);
    edge::push(&b, &mut out);
    observability::push_metrics(&b, &mut out);
    compute::push(&b, &mut out);
    grafana::push(&b, &mut out);
    observability::push_alarms(&b, &mut out);
    observability::push_dashboards(&b, &mut out);
    out
}

/// Names of the alarms whose ALARM state aborts a deploy.
pub fn deploy_guard_alarms(cfg: &EnvConfig) -> Vec<String> {
    let p = cfg.prefix();
    vec![format!("{p}-alb-5xx"), format!("{p}-target-5xx")]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;
    use crate::engine::order;
    use crate::model::Actual;
    use std::path::Path;

    fn env(name: &str) -> EnvConfig {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("envs/{name}.toml"));
        Env::load(&p).expect("env").cfg
    }

    fn ctx() -> Ctx {
        Ctx {
            region: "us-east-1".into(),
            azs: vec![
                "us-east-1a".into(),
                "us-east-1b".into(),
                "us-east-1c".into(),
            ],
            rule_files: vec![RuleFile {
                name: "gateway".into(),
                data: "groups: []".into(),
                hash: "h".into(),
            }],
            dashboards: vec![DashboardFile {
                uid: "gw".into(),
                title: "Gateway".into(),
                json: "{}".into(),
                hash: "h".into(),
            }],
            pagerduty_endpoint: None,
            grafana_enabled: true,
            account_id: "123456789012".into(),
            gateway_config: None,
        }
    }

    fn count(v: &[Desired], kind: Kind) -> usize {
        v.iter().filter(|d| d.key.kind == kind).count()
    }

    #[test]
    fn staging_and_production_sets_are_ordered_and_sized() {
        for (name, azs, nats) in [("staging", 2, 1), ("production", 3, 3)] {
            let cfg = env(name);
            let set = build(&cfg, &ctx(), &Ids::default());
            order(&set).expect("dependencies come first");
            assert_eq!(count(&set, Kind::Subnet), 3 * azs);
            assert_eq!(count(&set, Kind::NatGateway), nats);
            assert_eq!(count(&set, Kind::RouteTable), azs + 2);
            assert_eq!(count(&set, Kind::Listener), 3);
            assert_eq!(count(&set, Kind::GrafanaDashboard), 1);
            assert_eq!(count(&set, Kind::AmpRuleGroups), 1);
        }
    }

    #[test]
    fn security_groups_are_least_privilege() {
        let cfg = env("staging");
        let set = build(&cfg, &ctx(), &Ids::default());
        let rules = |n: &str| -> SecurityGroupRulesSpec {
            set.iter()
                .find(|d| d.key == Key::new(Kind::SecurityGroupRules, n))
                .expect("rules")
                .spec()
                .expect("spec")
        };
        let ports = |r: &[SgRule]| r.iter().map(|r| r.from_port).collect::<Vec<_>>();
        assert_eq!(
            ports(&rules("alb").ingress),
            vec![80, 443, TEST_LISTENER_PORT]
        );
        assert_eq!(
            ports(&rules("tasks").ingress),
            vec![PROXY_PORT, STATUS_PORT]
        );
        assert_eq!(
            rules("tasks").egress,
            vec![
                rule(443, "0.0.0.0/0".into()),
                rule(POSTGRES_PORT, PENDING.into()),
                rule(REDIS_PORT, PENDING.into()),
                // auth.edge-suite-staging.local:9000, a Cloud Map name: the VPC.
                rule(9000, cfg.network.cidr.clone()),
            ]
        );
        assert_eq!(ports(&rules("database").ingress), vec![5432]);
        assert!(rules("database").egress.is_empty());
        assert_eq!(ports(&rules("redis").ingress), vec![6379]);
        assert!(rules("redis").egress.is_empty());
        let test_rule = rules("alb")
            .ingress
            .into_iter()
            .find(|r| r.from_port == TEST_LISTENER_PORT)
            .expect("test listener rule");
        assert_eq!(test_rule.peer, cfg.network.cidr);
    }

    #[test]
    fn the_gateway_believes_the_alb_for_the_client_address() {
        let cfg = env("production");
        let (spec, _) = td(&build(&cfg, &ctx(), &Ids::default()));
        let e = &spec.gateway_environment;
        assert_eq!(e["GATEWAY_TRUSTED_IPS"], "10.30.0.0/16");
        assert_eq!(e["GATEWAY_REAL_IP_HEADER"], "X-Forwarded-For");
        assert_eq!(e["GATEWAY_REAL_IP_RECURSIVE"], "true");
    }

    #[test]
    fn the_sidecar_reads_postgres_and_redis_from_secrets_manager() {
        let mut ids = Ids::default();
        for (name, out) in [
            ("metrics-postgres", "arn:pg"),
            ("metrics-redis", "arn:redis"),
        ] {
            ids.record(
                &Actual::new(Key::new(Kind::ConnectionSecret, name), out, &json!({}))
                    .output("arn", out),
            );
        }
        for (kind, name, key, value) in [
            (Kind::DbInstance, "main", "endpoint", "db.example"),
            (
                Kind::ReplicationGroup,
                "main",
                "endpoint",
                "cfg.redis.example",
            ),
            (Kind::Secret, "db-password", "arn", "arn:dbpw"),
            (Kind::Secret, "redis-token", "arn", "arn:token"),
        ] {
            ids.record(&Actual::new(Key::new(kind, name), value, &json!({})).output(key, value));
        }
        let set = build(&env("staging"), &ctx(), &ids);
        order(&set).expect("connection secrets come after the data stores");
        let (spec, _) = td(&set);
        assert_eq!(
            spec.agent_secrets,
            BTreeMap::from([
                (
                    "METRICS_AGENT_POSTGRES_DSN".to_string(),
                    "arn:pg".to_string()
                ),
                (
                    "METRICS_AGENT_REDIS_ADDR".to_string(),
                    "arn:redis".to_string()
                ),
            ])
        );
        assert!(
            !spec
                .agent_environment
                .keys()
                .any(|k| k.starts_with("METRICS_AGENT_POSTGRES")
                    || k.starts_with("METRICS_AGENT_REDIS")),
            "never in the plain environment"
        );
        let pg = set
            .iter()
            .find(|d| d.key == Key::new(Kind::ConnectionSecret, "metrics-postgres"))
            .expect("pg secret");
        assert_eq!(
            pg.inputs["template"],
            "postgres://gateway:{password}@db.example:5432/postgres?sslmode=require"
        );
        assert_eq!(pg.inputs["password_secret"], "arn:dbpw");
        let shown = serde_json::to_string(&pg.props).expect("json");
        assert!(
            shown.contains("db.example") && !shown.contains("password}"),
            "{shown}"
        );
        let redis = set
            .iter()
            .find(|d| d.key == Key::new(Kind::ConnectionSecret, "metrics-redis"))
            .expect("redis secret");
        assert_eq!(
            redis.inputs["template"],
            "rediss://:{password}@cfg.redis.example:6379"
        );
        let role: IamRoleSpec = find(&set, Kind::IamRole, "task-execution");
        let reads = role.policy["Statement"]
            .as_array()
            .expect("statements")
            .iter()
            .find(|s| s["Action"] == json!(["secretsmanager:GetSecretValue"]))
            .expect("secret reads")["Resource"]
            .clone();
        assert!(
            reads
                .as_array()
                .is_some_and(|r| r.contains(&json!("arn:pg")) && r.contains(&json!("arn:redis"))),
            "{reads}"
        );
    }

    #[test]
    fn egress_opens_exactly_the_upstream_ports() {
        let mut cfg = env("staging");
        cfg.gateway.upstreams = vec![
            crate::config::UpstreamEnv {
                name: "orders".into(),
                url: Some("https://orders.example.com".into()),
                service: None,
                cidr: None,
            },
            crate::config::UpstreamEnv {
                name: "billing".into(),
                url: Some("http://billing.internal:8080/v1".into()),
                service: None,
                cidr: Some("10.99.0.0/16".into()),
            },
            crate::config::UpstreamEnv {
                name: "users".into(),
                url: None,
                service: Some("users.edge.local:7000".into()),
                cidr: None,
            },
        ];
        cfg.validate().expect("valid");
        let set = build(&cfg, &ctx(), &Ids::default());
        let r: SecurityGroupRulesSpec = find(&set, Kind::SecurityGroupRules, "tasks");
        let mut got: Vec<(i32, String)> = r
            .egress
            .iter()
            .map(|r| (r.from_port, r.peer.clone()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                (443, "0.0.0.0/0".to_string()),
                (5432, PENDING.to_string()),
                (6379, PENDING.to_string()),
                (7000, cfg.network.cidr.clone()),
                (8080, "10.99.0.0/16".to_string()),
            ],
            "https://orders is 443 to anywhere, already open"
        );
        for bad in [
            (Some("ftp://x.example.com"), None),
            (None, Some("users.edge.local")),
            (Some("http://x.example.com"), Some("x.local:1")),
            (None, Some("bad_host!:80")),
        ] {
            let mut c = env("staging");
            c.gateway.upstreams = vec![crate::config::UpstreamEnv {
                name: "x".into(),
                url: bad.0.map(str::to_string),
                service: bad.1.map(str::to_string),
                cidr: None,
            }];
            assert!(c.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn live_color_follows_the_https_listener() {
        let mut ids = Ids::default();
        assert_eq!(live_color(&ids), "blue");
        let tg = |c: &str| {
            Actual::new(
                Key::new(Kind::TargetGroup, c),
                format!("arn:{c}"),
                &json!({}),
            )
            .output("arn", format!("arn:{c}"))
        };
        ids.record(&tg("blue"));
        ids.record(&tg("green"));
        ids.record(
            &Actual::new(Key::new(Kind::Listener, "https"), "l", &json!({}))
                .output("target_group_arn", "arn:green"),
        );
        assert_eq!(live_color(&ids), "green");
        let cfg = env("staging");
        let set = build(&cfg, &ctx(), &ids);
        let test: ListenerSpec = set
            .iter()
            .find(|d| d.key == Key::new(Kind::Listener, "test"))
            .expect("test listener")
            .spec()
            .expect("spec");
        assert_eq!(
            test.action,
            ListenerAction::Forward {
                target_group_arn: "arn:blue".into()
            }
        );
    }

    #[test]
    fn deployed_image_wins_over_the_env_default() {
        let cfg = env("staging");
        let mut ids = Ids::default();
        let set = build(&cfg, &ctx(), &ids);
        let td = |set: &[Desired]| -> TaskDefinitionSpec {
            set.iter()
                .find(|d| d.key.kind == Kind::TaskDefinition)
                .expect("td")
                .spec()
                .expect("spec")
        };
        assert_eq!(td(&set).gateway_image, cfg.service.gateway_image);
        ids.record(
            &Actual::new(
                Key::new(Kind::TaskDefinition, "gateway"),
                "arn:td:2",
                &json!({}),
            )
            .output("gateway_image", "repo/gateway:v2"),
        );
        assert_eq!(
            td(&build(&cfg, &ctx(), &ids)).gateway_image,
            "repo/gateway:v2"
        );
    }

    fn find<T: serde::de::DeserializeOwned>(set: &[Desired], kind: Kind, name: &str) -> T {
        set.iter()
            .find(|d| d.key == Key::new(kind, name))
            .expect("resource")
            .spec()
            .expect("spec")
    }

    #[test]
    fn the_pagerduty_url_is_never_in_the_spec() {
        let url = "https://events.pagerduty.com/integration/0123456789abcdef/enqueue";
        let mut c = ctx();
        c.pagerduty_endpoint = Some(url.into());
        let set = build(&env("staging"), &c, &Ids::default());
        let topic = set
            .iter()
            .find(|d| d.key.kind == Kind::SnsTopic)
            .expect("topic");
        let shown = serde_json::to_string(&topic.props).expect("json");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert_eq!(topic.inputs["https_subscriptions"], url);
        let spec: SnsTopicSpec = topic.spec().expect("spec");
        assert_eq!(spec.https_subscriptions, vec![redact_endpoint(url)]);
    }

    #[test]
    fn ecr_pulls_are_scoped_to_the_task_repositories() {
        let mut ids = Ids::default();
        for r in ["gateway", "metrics-agent", "provisioner"] {
            ids.record(
                &Actual::new(Key::new(Kind::EcrRepository, r), r, &json!({}))
                    .output("arn", format!("arn:ecr:{r}")),
            );
        }
        let set = build(&env("production"), &ctx(), &ids);
        let role: IamRoleSpec = find(&set, Kind::IamRole, "task-execution");
        for st in role.policy["Statement"].as_array().expect("statements") {
            let actions = st["Action"].to_string();
            if actions.contains("ecr:") && !actions.contains("GetAuthorizationToken") {
                assert_eq!(
                    st["Resource"],
                    json!(["arn:ecr:gateway", "arn:ecr:metrics-agent"])
                );
            } else if st["Resource"] == "*" {
                // Only the token call, which has no resource-level permissions.
                assert_eq!(st["Action"], json!(["ecr:GetAuthorizationToken"]));
            }
        }
        order(&set).expect("the role depends on the repositories it names");
    }

    #[test]
    fn every_role_trusts_its_service_for_this_account_only() {
        let set = build(&env("staging"), &ctx(), &Ids::default());
        for name in ["flow-logs", "task-execution", "task"] {
            let role: IamRoleSpec = find(&set, Kind::IamRole, name);
            assert_eq!(role.source_account, "123456789012", "{name}");
        }
    }

    fn td(set: &[Desired]) -> (TaskDefinitionSpec, Option<String>) {
        let d = set
            .iter()
            .find(|d| d.key.kind == Kind::TaskDefinition)
            .expect("td");
        (
            d.spec().expect("spec"),
            d.inputs.get("gateway_config").cloned(),
        )
    }

    #[test]
    fn the_repo_configuration_until_deploy_owns_it() {
        let cfg = env("staging");
        let mut c = ctx();
        let repo =
            crate::gateway_config::Rendered::new("k.yml", "_format_version: \"3.0\"\n".into());
        c.gateway_config = Some(repo.clone());
        let mut ids = Ids::default();
        let (spec, text) = td(&build(&cfg, &c, &ids));
        assert_eq!(spec.gateway_config_hash, repo.hash);
        assert_eq!(text.as_deref(), Some(repo.text.as_str()));
        assert!(
            !spec
                .gateway_environment
                .contains_key("GATEWAY_CONFIG_STRING"),
            "the text is an input, never a diffed field"
        );
        // A revision with a configuration keeps it: `deploy` rolls changes out.
        ids.record(
            &Actual::new(
                Key::new(Kind::TaskDefinition, "gateway"),
                "arn:td:2",
                &json!({}),
            )
            .output("gateway_config", "deployed: 1\n")
            .output("gateway_config_hash", "h-deployed"),
        );
        let (spec, text) = td(&build(&cfg, &c, &ids));
        assert_eq!(spec.gateway_config_hash, "h-deployed");
        assert_eq!(text.as_deref(), Some("deployed: 1\n"));
        // A revision from before (no configuration in it) adopts the repo's.
        let mut ids = Ids::default();
        ids.record(
            &Actual::new(
                Key::new(Kind::TaskDefinition, "gateway"),
                "arn:td:1",
                &json!({}),
            )
            .output("gateway_config_hash", ""),
        );
        assert_eq!(td(&build(&cfg, &c, &ids)).0.gateway_config_hash, repo.hash);
    }

    #[test]
    fn the_web_acl_guards_the_alb_with_the_env_files_rate_limit() {
        let mut cfg = env("staging");
        cfg.waf.rate_limit_per_5min = 500;
        let mut ids = Ids::default();
        ids.record(
            &Actual::new(Key::new(Kind::LoadBalancer, "main"), "arn:lb", &json!({}))
                .output("arn", "arn:lb"),
        );
        let set = build(&cfg, &ctx(), &ids);
        order(&set).expect("the ACL comes after the ALB");
        let acl: WebAclSpec = find(&set, Kind::WebAcl, "main");
        assert_eq!(acl.load_balancer_arn, "arn:lb");
        assert_eq!(acl.rate_limit, 500);
        assert_eq!(acl.managed_rule_groups, ["AWSManagedRulesCommonRuleSet"]);
        assert_eq!(acl.scope, "REGIONAL");
        cfg.waf.rate_limit_per_5min = 5;
        assert!(cfg.validate().is_err(), "below WAF's minimum");
    }

    #[test]
    fn alarms_cover_latency_memory_storage_and_every_redis_node() {
        let cfg = env("production");
        let set = build(&cfg, &ctx(), &Ids::default());
        let nodes = (cfg.redis.shards * (cfg.redis.replicas_per_shard + 1)) as usize;
        assert_eq!(count(&set, Kind::Alarm), 7 + 2 * nodes);
        let p99: AlarmSpec = find(&set, Kind::Alarm, "alb-latency-p99");
        assert_eq!((p99.statistic.as_str(), p99.threshold), ("p99", 1.0));
        let disk: AlarmSpec = find(&set, Kind::Alarm, "db-free-storage-low");
        assert_eq!(disk.comparison, "LessThanThreshold");
        assert_eq!(disk.threshold, 5.0 * 1024.0 * 1024.0 * 1024.0);
        let last = format!(
            "{:04}-{:03}",
            cfg.redis.shards,
            cfg.redis.replicas_per_shard + 1
        );
        let mem: AlarmSpec = find(&set, Kind::Alarm, &format!("redis-memory-high-{last}"));
        assert_eq!(
            mem.dimensions["CacheClusterId"],
            format!("{}-redis-{last}", cfg.prefix())
        );
        assert_eq!(mem.metric, "DatabaseMemoryUsagePercentage");
        assert!(
            set.iter()
                .filter(|d| d.key.kind == Kind::Alarm)
                .all(|d| d.deps.contains(&Key::new(Kind::SnsTopic, "alarms")))
        );
    }

    #[test]
    fn grafana_runs_behind_the_alb_with_its_password_from_secrets_manager() {
        let mut cfg = env("staging");
        let mut ids = Ids::default();
        for (kind, name, arn) in [
            (Kind::Secret, "grafana-admin", "arn:grafana-pw"),
            (Kind::AmpWorkspace, "main", "arn:ws"),
            (Kind::Listener, "https", "arn:https"),
            (Kind::TargetGroup, "grafana", "arn:tg-grafana"),
        ] {
            ids.record(&Actual::new(Key::new(kind, name), arn, &json!({})).output("arn", arn));
        }
        let set = build(&cfg, &ctx(), &ids);
        order(&set).expect("grafana's dependencies come first");
        let td: GrafanaTaskDefinitionSpec = find(&set, Kind::GrafanaTaskDefinition, "grafana");
        assert_eq!(td.image, GRAFANA_IMAGE);
        assert_eq!(td.secrets["GF_SECURITY_ADMIN_PASSWORD"], "arn:grafana-pw");
        assert!(!td.environment.keys().any(|k| k.contains("PASSWORD")));
        assert_eq!(
            td.environment["GF_SERVER_ROOT_URL"],
            "https://api.staging.edge-suite.example.com/grafana/"
        );
        assert_eq!(td.environment["GF_SERVER_SERVE_FROM_SUB_PATH"], "true");
        assert_eq!(td.environment["GF_AUTH_SIGV4_AUTH_ENABLED"], "true");
        let rule: ListenerRuleSpec = find(&set, Kind::ListenerRule, "grafana");
        assert_eq!(
            (
                rule.listener_arn.as_str(),
                rule.host.as_ref(),
                rule.paths.clone()
            ),
            (
                "arn:https",
                None,
                vec!["/grafana".to_string(), "/grafana/*".to_string()]
            )
        );
        assert_eq!(rule.target_group_arn, "arn:tg-grafana");
        let svc: GrafanaServiceSpec = find(&set, Kind::GrafanaService, "grafana");
        assert_eq!((svc.name.as_str(), svc.desired_count), ("grafana", 1));
        let tg: TargetGroupSpec = find(&set, Kind::TargetGroup, "grafana");
        assert_eq!(
            (tg.port, tg.health_check_path.as_str()),
            (GRAFANA_PORT, "/grafana/api/health")
        );
        let role: IamRoleSpec = find(&set, Kind::IamRole, "grafana-task");
        assert_eq!(
            role.policy["Statement"][0]["Action"],
            json!([
                "aps:QueryMetrics",
                "aps:GetSeries",
                "aps:GetLabels",
                "aps:GetMetricMetadata"
            ])
        );
        assert_eq!(role.policy["Statement"][0]["Resource"], "arn:ws");
        let exec: IamRoleSpec = find(&set, Kind::IamRole, "task-execution");
        assert!(exec.policy.to_string().contains("arn:grafana-pw"));
        let sg = |n: &str| -> SecurityGroupRulesSpec { find(&set, Kind::SecurityGroupRules, n) };
        assert_eq!(sg("grafana").ingress, vec![rule_of(GRAFANA_PORT, PENDING)]);
        assert!(sg("alb").egress.contains(&rule_of(GRAFANA_PORT, PENDING)));
        // Its own host: a host-header rule and no sub path.
        cfg.grafana_service.host = Some("grafana.example.com".into());
        let set = build(&cfg, &ctx(), &ids);
        let rule: ListenerRuleSpec = find(&set, Kind::ListenerRule, "grafana");
        assert_eq!(rule.host.as_deref(), Some("grafana.example.com"));
        let td: GrafanaTaskDefinitionSpec = find(&set, Kind::GrafanaTaskDefinition, "grafana");
        assert_eq!(
            td.environment["GF_SERVER_ROOT_URL"],
            "https://grafana.example.com/"
        );
        assert!(!td.environment.contains_key("GF_SERVER_SERVE_FROM_SUB_PATH"));
        // Switched off: none of it.
        cfg.grafana_service.enabled = false;
        let set = build(&cfg, &ctx(), &ids);
        order(&set).expect("ordered");
        assert!(set.iter().all(|d| !d.key.name.contains("grafana")));
    }

    fn rule_of(port: i32, peer: &str) -> SgRule {
        rule(port, peer.to_string())
    }

    #[test]
    fn a_hosted_zone_brings_the_alias_and_validation_records() {
        let mut cfg = env("staging");
        assert!(
            build(&cfg, &ctx(), &Ids::default())
                .iter()
                .all(|d| !matches!(d.key.kind, Kind::DnsRecord | Kind::ValidationRecord)),
            "no zone, no records"
        );
        cfg.dns.hosted_zone = Some("staging.edge-suite.example.com".into());
        cfg.validate().expect("the zone holds the domain");
        let mut ids = Ids::default();
        ids.record(
            &Actual::new(Key::new(Kind::LoadBalancer, "main"), "arn:lb", &json!({}))
                .output(
                    "dns_name",
                    "Edge-Suite-Staging-ALB-1.us-east-1.elb.amazonaws.com",
                )
                .output("zone_id", "Z35SXDOTRQ7X7K"),
        );
        ids.record(
            &Actual::new(Key::new(Kind::Certificate, "main"), "arn:cert", &json!({})).output(
                "validation_record",
                "_abc.api.staging.edge-suite.example.com. CNAME _def.acm-validations.aws.",
            ),
        );
        let set = build(&cfg, &ctx(), &ids);
        order(&set).expect("records after what they point at");
        let alias: RecordSpec = find(&set, Kind::DnsRecord, "alb");
        assert_eq!(alias.name, "api.staging.edge-suite.example.com.");
        assert_eq!(alias.record_type, "A");
        assert_eq!(
            alias.value,
            "edge-suite-staging-alb-1.us-east-1.elb.amazonaws.com."
        );
        assert_eq!(alias.alias_zone_id.as_deref(), Some("Z35SXDOTRQ7X7K"));
        let v: RecordSpec = find(&set, Kind::ValidationRecord, "main");
        assert_eq!(
            (v.name.as_str(), v.record_type.as_str(), v.value.as_str()),
            (
                "_abc.api.staging.edge-suite.example.com.",
                "CNAME",
                "_def.acm-validations.aws."
            )
        );
        // Grafana on its own host in the zone: its alias too.
        cfg.grafana_service.host = Some("grafana.staging.edge-suite.example.com".into());
        let g: RecordSpec = find(&build(&cfg, &ctx(), &ids), Kind::DnsRecord, "grafana");
        assert_eq!(g.name, "grafana.staging.edge-suite.example.com.");
        assert_eq!(g.value, alias.value);
        // An existing certificate validates elsewhere: no validation record.
        cfg.dns.certificate_arn = Some("arn:aws:acm:us-east-1:1:certificate/x".into());
        assert_eq!(count(&build(&cfg, &ctx(), &ids), Kind::ValidationRecord), 0);
        cfg.dns.hosted_zone = Some("other.example.com".into());
        assert!(cfg.validate().is_err(), "the zone must hold the domain");
    }

    #[test]
    fn no_grafana_means_no_dashboards() {
        let cfg = env("staging");
        let mut c = ctx();
        c.grafana_enabled = false;
        assert_eq!(
            count(&build(&cfg, &c, &Ids::default()), Kind::GrafanaDashboard),
            0
        );
    }
}
