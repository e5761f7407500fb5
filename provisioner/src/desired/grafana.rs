//! The environment's own Grafana: its listener rule, task definition and
//! ECS service (its security group, role, secret, log group and target group
//! are built with their kinds' areas).

use super::*;

/// Grafana's plain environment: served at `url` (a sub path unless it has a
/// host of its own), SigV4 for the AMP data source, no sign-up, no
/// anonymous access. The admin password is an ECS secret, never here.
pub fn grafana_environment(cfg: &EnvConfig, region: &str) -> BTreeMap<String, String> {
    let g = &cfg.grafana_service;
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: &str| {
        env.insert(k.to_string(), v.to_string());
    };
    set(
        "GF_SERVER_ROOT_URL",
        &format!("{}/", g.url(&cfg.dns.domain)),
    );
    if g.host.is_none() {
        set("GF_SERVER_SERVE_FROM_SUB_PATH", "true");
    }
    set("GF_SECURITY_ADMIN_USER", "admin");
    set("GF_AUTH_SIGV4_AUTH_ENABLED", "true");
    set("GF_AUTH_ANONYMOUS_ENABLED", "false");
    set("GF_USERS_ALLOW_SIGN_UP", "false");
    set("GF_ANALYTICS_REPORTING_ENABLED", "false");
    set("GF_ANALYTICS_CHECK_FOR_UPDATES", "false");
    set("AWS_REGION", region);
    env
}

pub(super) fn push(b: &Build<'_>, out: &mut Vec<Desired>) {
    let cfg = b.cfg;
    let ids = b.ids;
    let p = &b.p;
    let g = &cfg.grafana_service;
    if !g.enabled {
        return;
    }
    let (host, paths) = match &g.host {
        Some(h) => (Some(h.clone()), vec![]),
        None => (
            None,
            vec![GRAFANA_PATH.to_string(), format!("{GRAFANA_PATH}/*")],
        ),
    };
    out.push(Desired::new(
        k(Kind::ListenerRule, GRAFANA_SERVICE),
        &ListenerRuleSpec {
            listener_arn: ids.get(Kind::Listener, "https", "arn"),
            priority: GRAFANA_RULE_PRIORITY,
            host,
            paths,
            target_group_arn: b.tg_arn(GRAFANA_SERVICE),
        },
        vec![
            k(Kind::Listener, "https"),
            k(Kind::TargetGroup, GRAFANA_SERVICE),
        ],
    ));
    out.push(Desired::new(
        k(Kind::GrafanaTaskDefinition, GRAFANA_SERVICE),
        &GrafanaTaskDefinitionSpec {
            family: format!("{p}-{GRAFANA_SERVICE}"),
            cpu: g.cpu.to_string(),
            memory: g.memory.to_string(),
            execution_role_arn: ids.get(Kind::IamRole, "task-execution", "arn"),
            task_role_arn: ids.get(Kind::IamRole, "grafana-task", "arn"),
            image: GRAFANA_IMAGE.into(),
            log_group: format!("/ecs/{p}/grafana"),
            environment: grafana_environment(cfg, &b.ctx.region),
            secrets: BTreeMap::from([(
                "GF_SECURITY_ADMIN_PASSWORD".to_string(),
                b.secret_arn("grafana-admin"),
            )]),
        },
        vec![
            k(Kind::IamRole, "task-execution"),
            k(Kind::IamRole, "grafana-task"),
            k(Kind::LogGroup, "grafana"),
            k(Kind::Secret, "grafana-admin"),
        ],
    ));
    let mut deps = b.subnet_keys("private");
    deps.extend([
        k(Kind::EcsCluster, "main"),
        k(Kind::GrafanaTaskDefinition, GRAFANA_SERVICE),
        k(Kind::SecurityGroup, GRAFANA_SERVICE),
        k(Kind::TargetGroup, GRAFANA_SERVICE),
        // A target group takes traffic (and an ECS service) only once a
        // listener rule ties it to the load balancer.
        k(Kind::ListenerRule, GRAFANA_SERVICE),
    ]);
    out.push(Desired::new(
        k(Kind::GrafanaService, GRAFANA_SERVICE),
        &GrafanaServiceSpec {
            name: GRAFANA_SERVICE.into(),
            cluster: b.cluster(),
            task_definition: ids.get(Kind::GrafanaTaskDefinition, GRAFANA_SERVICE, "arn"),
            target_group_arn: b.tg_arn(GRAFANA_SERVICE),
            desired_count: 1,
            subnets: b.subnet_ids("private"),
            security_groups: vec![b.sg(GRAFANA_SERVICE)],
        },
        deps,
    ));
}
