//! ECS cluster, task definition, service and its auto scaling.

use super::*;

/// The gateway container's secrets: env var -> logical secret (`consts::SECRETS`).
const GATEWAY_SECRETS: [(&str, &str); 2] =
    [("JWT_SECRET", "jwt"), ("REDIS_PASSWORD", "redis-token")];

/// The metrics-agent container's secrets: env var -> connection secret
/// (`consts::CONNECTION_SECRETS`).
pub const AGENT_SECRETS: [(&str, &str); 2] = [
    ("METRICS_AGENT_POSTGRES_DSN", "metrics-postgres"),
    ("METRICS_AGENT_REDIS_ADDR", "metrics-redis"),
];

/// Names of the gateway container's secrets (what `${{ env "NAME" }}` may
/// reference besides the plain environment).
pub fn gateway_secret_names() -> std::collections::BTreeSet<String> {
    GATEWAY_SECRETS.iter().map(|(n, _)| n.to_string()).collect()
}

/// The gateway container's plain environment (the declarative
/// configuration itself travels separately, see `gateway_config`).
pub fn gateway_environment(cfg: &EnvConfig, ids: &Ids) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert(
        "GATEWAY_PROXY_LISTEN".to_string(),
        format!("0.0.0.0:{PROXY_PORT}"),
    );
    env.insert(
        "GATEWAY_STATUS_LISTEN".to_string(),
        format!("0.0.0.0:{STATUS_PORT}"),
    );
    env.insert(
        "GATEWAY_WORKERS".to_string(),
        cfg.service.gateway_workers.to_string(),
    );
    // The client address behind the ALB: ALB nodes live in the VPC, and
    // append the address they saw to X-Forwarded-For; walking it from the
    // right past trusted (VPC) addresses finds the client, so per-IP limits
    // and ip-restriction see clients, not ALB nodes.
    env.insert("GATEWAY_TRUSTED_IPS".to_string(), cfg.network.cidr.clone());
    env.insert(
        "GATEWAY_REAL_IP_HEADER".to_string(),
        "X-Forwarded-For".to_string(),
    );
    env.insert("GATEWAY_REAL_IP_RECURSIVE".to_string(), "true".to_string());
    // The rate-limiting store of kong.yml (`${{ env "REDIS_HOST" }}` ...):
    // shared counters in ElastiCache, over TLS.
    env.insert(
        "REDIS_HOST".to_string(),
        ids.get(Kind::ReplicationGroup, "main", "endpoint"),
    );
    env.insert("REDIS_PORT".to_string(), REDIS_PORT.to_string());
    env.insert("REDIS_SSL".to_string(), "true".to_string());
    env
}

/// The gateway service.
pub(super) fn push(b: &Build<'_>, out: &mut Vec<Desired>) {
    let cfg = b.cfg;
    let ctx = b.ctx;
    let ids = b.ids;
    let p = &b.p;
    let app_group = b.app_group();
    let live = live_color(ids);
    let cluster = b.cluster();
    out.push(Desired::new(
        k(Kind::EcsCluster, "main"),
        &EcsClusterSpec {
            name: cluster.clone(),
            container_insights: true,
        },
        vec![],
    ));
    let td = k(Kind::TaskDefinition, "gateway");
    // After the first deploy the images belong to `deploy`, not to `up`.
    let image = |out: &str, default: &str| {
        let v = ids.get(Kind::TaskDefinition, "gateway", out);
        if v == PENDING { default.to_string() } else { v }
    };
    let gateway_env = gateway_environment(cfg, ids);
    let mut agent_env = BTreeMap::new();
    agent_env.insert(
        "METRICS_AGENT_LISTEN".to_string(),
        "127.0.0.1:9464".to_string(),
    );
    agent_env.insert(
        "AMP_REMOTE_WRITE_URL".to_string(),
        join(
            &ids.get(Kind::AmpWorkspace, "main", "endpoint"),
            "api/v1/remote_write",
        ),
    );
    agent_env.insert("AWS_REGION".to_string(), ctx.region.clone());
    // docker/metrics-agent/ecs.yml: the `env` external label of every series.
    agent_env.insert("DEPLOY_ENV".to_string(), cfg.name.clone());
    // The sidecar's PostgreSQL and Redis collectors (metrics-agent's flags
    // `--postgres` / `--redis` read these).
    let agent_secrets: BTreeMap<String, String> = AGENT_SECRETS
        .iter()
        .map(|(name, secret)| {
            (
                name.to_string(),
                ids.get(Kind::ConnectionSecret, secret, "arn"),
            )
        })
        .collect();
    let gateway_secrets: BTreeMap<String, String> = GATEWAY_SECRETS
        .iter()
        .map(|(name, secret)| (name.to_string(), b.secret_arn(secret)))
        .collect();
    // The declarative configuration: after the first `up` it belongs to
    // `deploy` (like the images), so a kong.yml change rolls out blue-green
    // with the health gate. A revision without one adopts the repo's.
    let deployed = ids.get(Kind::TaskDefinition, "gateway", "gateway_config");
    let (config_text, config_hash) = match (&ctx.gateway_config, deployed == PENDING) {
        (_, false) => (
            Some(deployed.clone()),
            ids.get(Kind::TaskDefinition, "gateway", "gateway_config_hash"),
        ),
        (Some(r), true) => (Some(r.text.clone()), r.hash.clone()),
        (None, true) => (None, String::new()),
    };
    let mut td_desired = Desired::new(
        td.clone(),
        &TaskDefinitionSpec {
            family: format!("{p}-gateway"),
            cpu: cfg.service.cpu.to_string(),
            memory: cfg.service.memory.to_string(),
            execution_role_arn: ids.get(Kind::IamRole, "task-execution", "arn"),
            task_role_arn: ids.get(Kind::IamRole, "task", "arn"),
            gateway_image: image("gateway_image", &cfg.service.gateway_image),
            metrics_agent_image: image("metrics_agent_image", &cfg.service.metrics_agent_image),
            log_group: app_group,
            stop_timeout: cfg.service.stop_timeout_seconds,
            gateway_environment: gateway_env,
            agent_environment: agent_env,
            gateway_secrets,
            agent_secrets,
            gateway_config_hash: config_hash,
        },
        vec![
            k(Kind::IamRole, "task-execution"),
            k(Kind::IamRole, "task"),
            k(Kind::LogGroup, "gateway"),
            k(Kind::Secret, "jwt"),
            k(Kind::Secret, "redis-token"),
            k(Kind::ReplicationGroup, "main"),
            k(Kind::ConnectionSecret, "metrics-postgres"),
            k(Kind::ConnectionSecret, "metrics-redis"),
            k(Kind::AmpWorkspace, "main"),
        ],
    );
    if let Some(text) = config_text {
        td_desired = td_desired.input("gateway_config", text);
    }
    out.push(td_desired);
    let mut svc_deps = b.subnet_keys("private");
    svc_deps.extend([
        k(Kind::EcsCluster, "main"),
        td.clone(),
        k(Kind::SecurityGroup, "tasks"),
        k(Kind::Listener, "https"),
        k(Kind::TargetGroup, live),
    ]);
    out.push(Desired::new(
        k(Kind::EcsService, "gateway"),
        &EcsServiceSpec {
            name: "gateway".into(),
            cluster: cluster.clone(),
            task_definition: ids.get(Kind::TaskDefinition, "gateway", "arn"),
            target_group_arn: b.tg_arn(live),
            desired_count: cfg.service.desired_count,
            launch_type: "FARGATE".into(),
            deployment_controller: "EXTERNAL".into(),
            subnets: b.subnet_ids("private"),
            security_groups: vec![b.sg("tasks")],
        },
        svc_deps,
    ));
    out.push(Desired::new(
        k(Kind::ScalingPolicy, "gateway-cpu"),
        &ScalingPolicySpec {
            resource_id: format!("service/{cluster}/gateway"),
            min_capacity: cfg.service.min_count,
            max_capacity: cfg.service.max_count,
            target_cpu_percent: cfg.service.cpu_target_percent,
        },
        vec![k(Kind::EcsService, "gateway")],
    ));
}
