//! The desired state of an environment: env file + discovered context + ids
//! known so far -> every resource, with references resolved (or pending).

use std::collections::BTreeMap;

use serde_json::json;

use crate::config::EnvConfig;
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

pub const PROXY_PORT: i32 = 8000;
pub const STATUS_PORT: i32 = 8100;
pub const TEST_LISTENER_PORT: i32 = 8443;
pub const HEALTH_CHECK_PATH: &str = "/status/ready";
pub const SSL_POLICY: &str = "ELBSecurityPolicy-TLS13-1-2-2021-06";

const TIERS: [&str; 3] = ["public", "private", "database"];

/// ECR repositories the task definition pulls from.
const TASK_IMAGES: [&str; 2] = ["gateway", "metrics-agent"];

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

/// Every resource of the environment, in dependency order within each kind.
pub fn build(cfg: &EnvConfig, ctx: &Ctx, ids: &Ids) -> Vec<Desired> {
    let p = cfg.prefix();
    let n = cfg.network.az_count.min(ctx.azs.len());
    let mut out = Vec::new();
    let vpc = k(Kind::Vpc, "main");
    let vpc_id = ids.id(Kind::Vpc, "main");

    // --- network -----------------------------------------------------------
    out.push(Desired::new(
        vpc.clone(),
        &VpcSpec {
            cidr: cfg.network.cidr.clone(),
            dns_hostnames: true,
            dns_support: true,
        },
        vec![],
    ));
    out.push(Desired::new(
        k(Kind::InternetGateway, "main"),
        &InternetGatewaySpec {
            vpc_id: vpc_id.clone(),
        },
        vec![vpc.clone()],
    ));
    for (t, tier) in TIERS.iter().enumerate() {
        for i in 0..n {
            let name = format!("{tier}-{}", az_letter(i));
            let cidr = cfg
                .subnet_cidr((t * 4 + i) as u32)
                .unwrap_or_else(|_| PENDING.to_string());
            out.push(Desired::new(
                k(Kind::Subnet, &name),
                &SubnetSpec {
                    vpc_id: vpc_id.clone(),
                    cidr,
                    az: ctx.azs[i].clone(),
                    tier: tier.to_string(),
                    map_public_ip: *tier == "public",
                },
                vec![vpc.clone()],
            ));
        }
    }
    let subnet_ids = |tier: &str| -> Vec<String> {
        sorted(
            (0..n)
                .map(|i| ids.id(Kind::Subnet, &format!("{tier}-{}", az_letter(i))))
                .collect(),
        )
    };
    let subnet_keys = |tier: &str| -> Vec<Key> {
        (0..n)
            .map(|i| k(Kind::Subnet, &format!("{tier}-{}", az_letter(i))))
            .collect()
    };
    let nats = cfg.network.nat_gateways.min(n);
    for i in 0..nats {
        let l = az_letter(i).to_string();
        out.push(Desired::new(
            k(Kind::ElasticIp, &format!("nat-{l}")),
            &ElasticIpSpec {
                domain: "vpc".into(),
            },
            vec![],
        ));
        out.push(Desired::new(
            k(Kind::NatGateway, &l),
            &NatGatewaySpec {
                subnet_id: ids.id(Kind::Subnet, &format!("public-{l}")),
                allocation_id: ids.id(Kind::ElasticIp, &format!("nat-{l}")),
            },
            vec![
                k(Kind::Subnet, &format!("public-{l}")),
                k(Kind::ElasticIp, &format!("nat-{l}")),
                k(Kind::InternetGateway, "main"),
            ],
        ));
    }
    let mut public_deps = subnet_keys("public");
    public_deps.push(k(Kind::InternetGateway, "main"));
    out.push(Desired::new(
        k(Kind::RouteTable, "public"),
        &RouteTableSpec {
            vpc_id: vpc_id.clone(),
            subnets: subnet_ids("public"),
            default_route: Some(ids.id(Kind::InternetGateway, "main")),
        },
        public_deps,
    ));
    for i in 0..n {
        let l = az_letter(i).to_string();
        let nat = if nats == 1 {
            "a".to_string()
        } else {
            l.clone()
        };
        out.push(Desired::new(
            k(Kind::RouteTable, &format!("private-{l}")),
            &RouteTableSpec {
                vpc_id: vpc_id.clone(),
                subnets: vec![ids.id(Kind::Subnet, &format!("private-{l}"))],
                default_route: Some(ids.id(Kind::NatGateway, &nat)),
            },
            vec![
                k(Kind::Subnet, &format!("private-{l}")),
                k(Kind::NatGateway, &nat),
            ],
        ));
    }
    out.push(Desired::new(
        k(Kind::RouteTable, "database"),
        &RouteTableSpec {
            vpc_id: vpc_id.clone(),
            subnets: subnet_ids("database"),
            default_route: None,
        },
        subnet_keys("database"),
    ));

    // --- logs, roles, flow logs --------------------------------------------
    let flow_group = format!("/{}/{}/vpc-flow-logs", cfg.project, cfg.name);
    let app_group = format!("/ecs/{p}/gateway");
    out.push(Desired::new(
        k(Kind::LogGroup, "flow-logs"),
        &LogGroupSpec {
            name: flow_group.clone(),
            retention_days: cfg.network.flow_log_retention_days,
        },
        vec![],
    ));
    out.push(Desired::new(
        k(Kind::LogGroup, "gateway"),
        &LogGroupSpec {
            name: app_group.clone(),
            retention_days: cfg.service.log_retention_days,
        },
        vec![],
    ));
    let flow_group_arn = ids.get(Kind::LogGroup, "flow-logs", "arn");
    out.push(Desired::new(
        k(Kind::IamRole, "flow-logs"),
        &IamRoleSpec {
            name: format!("{p}-flow-logs"),
            trusted_service: "vpc-flow-logs.amazonaws.com".into(),
            source_account: ctx.account_id.clone(),
            policy: json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                    "Resource": [flow_group_arn.clone(), join(&flow_group_arn, ":*")],
                }]
            }),
        },
        vec![k(Kind::LogGroup, "flow-logs")],
    ));
    let secret_arn = |w: &str| ids.get(Kind::Secret, w, "arn");
    out.push(Desired::new(
        k(Kind::IamRole, "task-execution"),
        &IamRoleSpec {
            name: format!("{p}-task-execution"),
            trusted_service: "ecs-tasks.amazonaws.com".into(),
            source_account: ctx.account_id.clone(),
            policy: json!({
                "Version": "2012-10-17",
                "Statement": [
                    // GetAuthorizationToken has no resource-level
                    // permissions (AWS requires "*"); the pulls themselves
                    // are limited to the repositories the task runs.
                    {
                        "Effect": "Allow",
                        "Action": ["ecr:GetAuthorizationToken"],
                        "Resource": "*",
                    },
                    {
                        "Effect": "Allow",
                        "Action": ["ecr:BatchCheckLayerAvailability",
                                   "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"],
                        "Resource": TASK_IMAGES.iter()
                            .map(|r| ids.get(Kind::EcrRepository, r, "arn"))
                            .collect::<Vec<_>>(),
                    },
                    {
                        "Effect": "Allow",
                        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                        "Resource": join(&ids.get(Kind::LogGroup, "gateway", "arn"), ":*"),
                    },
                    {
                        "Effect": "Allow",
                        "Action": ["secretsmanager:GetSecretValue"],
                        "Resource": [secret_arn("jwt"), secret_arn("redis-token")],
                    }
                ]
            }),
        },
        [
            k(Kind::LogGroup, "gateway"),
            k(Kind::Secret, "jwt"),
            k(Kind::Secret, "redis-token"),
        ]
        .into_iter()
        .chain(TASK_IMAGES.iter().map(|r| k(Kind::EcrRepository, r)))
        .collect(),
    ));
    out.push(Desired::new(
        k(Kind::IamRole, "task"),
        &IamRoleSpec {
            name: format!("{p}-task"),
            trusted_service: "ecs-tasks.amazonaws.com".into(),
            source_account: ctx.account_id.clone(),
            policy: json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Action": ["aps:RemoteWrite"],
                    "Resource": ids.get(Kind::AmpWorkspace, "main", "arn"),
                }]
            }),
        },
        vec![k(Kind::AmpWorkspace, "main")],
    ));
    out.push(Desired::new(
        k(Kind::FlowLog, "vpc"),
        &FlowLogSpec {
            vpc_id: vpc_id.clone(),
            log_group: flow_group.clone(),
            role_arn: ids.get(Kind::IamRole, "flow-logs", "arn"),
            traffic_type: "ALL".into(),
        },
        vec![
            vpc.clone(),
            k(Kind::LogGroup, "flow-logs"),
            k(Kind::IamRole, "flow-logs"),
        ],
    ));

    // --- security groups ---------------------------------------------------
    let groups = [
        ("alb", "ALB: HTTPS/HTTP from the internet, to gateway tasks"),
        (
            "tasks",
            "Gateway tasks: from the ALB, to RDS, Redis and HTTPS",
        ),
        ("database", "RDS PostgreSQL: 5432 from gateway tasks only"),
        ("redis", "ElastiCache Redis: 6379 from gateway tasks only"),
    ];
    for (name, description) in groups {
        out.push(Desired::new(
            k(Kind::SecurityGroup, name),
            &SecurityGroupSpec {
                name: format!("{p}-{name}"),
                vpc_id: vpc_id.clone(),
                description: description.into(),
            },
            vec![vpc.clone()],
        ));
    }
    let sg = |name: &str| ids.id(Kind::SecurityGroup, name);
    let all_sg_keys: Vec<Key> = groups
        .iter()
        .map(|(g, _)| k(Kind::SecurityGroup, g))
        .collect();
    let anywhere = "0.0.0.0/0".to_string();
    let sg_rules: [(&str, Vec<SgRule>, Vec<SgRule>); 4] = [
        (
            "alb",
            vec![
                rule(443, anywhere.clone()),
                rule(80, anywhere.clone()),
                // The blue-green test listener is reachable from inside the VPC only.
                rule(TEST_LISTENER_PORT, cfg.network.cidr.clone()),
            ],
            vec![
                rule(PROXY_PORT, sg("tasks")),
                rule(STATUS_PORT, sg("tasks")),
            ],
        ),
        (
            "tasks",
            vec![rule(PROXY_PORT, sg("alb")), rule(STATUS_PORT, sg("alb"))],
            vec![
                rule(5432, sg("database")),
                rule(6379, sg("redis")),
                // ECR, Secrets Manager, CloudWatch Logs and AMP are HTTPS APIs.
                rule(443, anywhere.clone()),
            ],
        ),
        ("database", vec![rule(5432, sg("tasks"))], vec![]),
        ("redis", vec![rule(6379, sg("tasks"))], vec![]),
    ];
    for (name, ingress, egress) in sg_rules {
        out.push(Desired::new(
            k(Kind::SecurityGroupRules, name),
            &SecurityGroupRulesSpec {
                group_id: sg(name),
                ingress: rules(ingress),
                egress: rules(egress),
            },
            all_sg_keys.clone(),
        ));
    }

    // --- secrets -----------------------------------------------------------
    let secrets = [
        (
            "jwt",
            "jwt-secret",
            "HS256 secret the gateway verifies JWTs with",
        ),
        (
            "db-password",
            "db-password",
            "Master password of the PostgreSQL instance",
        ),
        (
            "redis-token",
            "redis-auth-token",
            "AUTH token of the Redis replication group",
        ),
    ];
    for (key, name, description) in secrets {
        out.push(Desired::new(
            k(Kind::Secret, key),
            &SecretSpec {
                name: secret_name(cfg, name),
                description: description.into(),
            },
            vec![],
        ));
    }

    // --- data stores -------------------------------------------------------
    out.push(Desired::new(
        k(Kind::DbSubnetGroup, "main"),
        &SubnetGroupSpec {
            name: format!("{p}-db"),
            description: format!("{p} database subnets"),
            subnets: subnet_ids("database"),
        },
        subnet_keys("database"),
    ));
    let db = &cfg.database;
    out.push(
        Desired::new(
            k(Kind::DbInstance, "main"),
            &DbInstanceSpec {
                identifier: format!("{p}-db"),
                engine: "postgres".into(),
                engine_version: db.engine_version.clone(),
                instance_class: db.instance_class.clone(),
                allocated_storage: db.allocated_storage_gb,
                multi_az: db.multi_az,
                storage_encrypted: true,
                backup_retention_days: db.backup_retention_days,
                deletion_protection: db.deletion_protection,
                publicly_accessible: false,
                subnet_group: format!("{p}-db"),
                security_groups: vec![sg("database")],
                master_username: "gateway".into(),
            },
            vec![
                k(Kind::DbSubnetGroup, "main"),
                k(Kind::SecurityGroup, "database"),
                k(Kind::Secret, "db-password"),
            ],
        )
        .input("password_secret", secret_arn("db-password")),
    );
    out.push(Desired::new(
        k(Kind::CacheSubnetGroup, "main"),
        &SubnetGroupSpec {
            name: format!("{p}-redis"),
            description: format!("{p} redis subnets"),
            subnets: subnet_ids("database"),
        },
        subnet_keys("database"),
    ));
    out.push(
        Desired::new(
            k(Kind::ReplicationGroup, "main"),
            &ReplicationGroupSpec {
                id: format!("{p}-redis"),
                node_type: cfg.redis.node_type.clone(),
                num_node_groups: cfg.redis.shards,
                replicas_per_node_group: cfg.redis.replicas_per_shard,
                cluster_mode: true,
                transit_encryption: true,
                at_rest_encryption: true,
                auth_token_enabled: true,
                multi_az: cfg.redis.replicas_per_shard > 0,
                automatic_failover: true,
            },
            vec![
                k(Kind::CacheSubnetGroup, "main"),
                k(Kind::SecurityGroup, "redis"),
                k(Kind::Secret, "redis-token"),
            ],
        )
        .input("auth_token_secret", secret_arn("redis-token"))
        .input("subnet_group", format!("{p}-redis"))
        .input("security_groups", sg("redis")),
    );

    // --- edge --------------------------------------------------------------
    let (cert_arn, cert_deps) = match &cfg.dns.certificate_arn {
        Some(arn) => (arn.clone(), vec![]),
        None => {
            out.push(Desired::new(
                k(Kind::Certificate, "main"),
                &CertificateSpec {
                    domain: cfg.dns.domain.clone(),
                    validation: "DNS".into(),
                },
                vec![],
            ));
            (
                ids.get(Kind::Certificate, "main", "arn"),
                vec![k(Kind::Certificate, "main")],
            )
        }
    };
    for repo in crate::aws::ecr::REPOSITORIES {
        out.push(Desired::new(
            k(Kind::EcrRepository, repo),
            &EcrRepositorySpec {
                name: format!("{}/{repo}", cfg.project),
                scan_on_push: true,
                tag_mutability: "IMMUTABLE".into(),
            },
            vec![],
        ));
    }
    let mut lb_deps = subnet_keys("public");
    lb_deps.push(k(Kind::SecurityGroup, "alb"));
    lb_deps.push(k(Kind::InternetGateway, "main"));
    out.push(Desired::new(
        k(Kind::LoadBalancer, "main"),
        &LoadBalancerSpec {
            name: format!("{p}-alb"),
            scheme: "internet-facing".into(),
            subnets: subnet_ids("public"),
            security_groups: vec![sg("alb")],
        },
        lb_deps,
    ));
    for color in ["blue", "green"] {
        out.push(Desired::new(
            k(Kind::TargetGroup, color),
            &TargetGroupSpec {
                name: format!("{p}-{color}"),
                port: PROXY_PORT,
                protocol: "HTTP".into(),
                vpc_id: vpc_id.clone(),
                target_type: "ip".into(),
                health_check_path: HEALTH_CHECK_PATH.into(),
                health_check_port: STATUS_PORT.to_string(),
                health_check_interval: 15,
                healthy_threshold: 2,
                unhealthy_threshold: 3,
                matcher: "200".into(),
            },
            vec![vpc.clone()],
        ));
    }
    let live = live_color(ids);
    let idle = other_color(live);
    let lb_arn = ids.get(Kind::LoadBalancer, "main", "arn");
    let tg_arn = |c: &str| ids.get(Kind::TargetGroup, c, "arn");
    let lb_and_tgs = vec![
        k(Kind::LoadBalancer, "main"),
        k(Kind::TargetGroup, "blue"),
        k(Kind::TargetGroup, "green"),
    ];
    let mut https_deps = lb_and_tgs.clone();
    https_deps.extend(cert_deps);
    out.push(Desired::new(
        k(Kind::Listener, "https"),
        &ListenerSpec {
            load_balancer_arn: lb_arn.clone(),
            port: 443,
            protocol: "HTTPS".into(),
            certificate_arn: Some(cert_arn.clone()),
            ssl_policy: Some(SSL_POLICY.into()),
            action: ListenerAction::Forward {
                target_group_arn: tg_arn(live),
            },
        },
        https_deps.clone(),
    ));
    out.push(Desired::new(
        k(Kind::Listener, "http"),
        &ListenerSpec {
            load_balancer_arn: lb_arn.clone(),
            port: 80,
            protocol: "HTTP".into(),
            certificate_arn: None,
            ssl_policy: None,
            action: ListenerAction::RedirectHttps,
        },
        vec![k(Kind::LoadBalancer, "main")],
    ));
    out.push(Desired::new(
        k(Kind::Listener, "test"),
        &ListenerSpec {
            load_balancer_arn: lb_arn.clone(),
            port: TEST_LISTENER_PORT,
            protocol: "HTTPS".into(),
            certificate_arn: Some(cert_arn),
            ssl_policy: Some(SSL_POLICY.into()),
            action: ListenerAction::Forward {
                target_group_arn: tg_arn(idle),
            },
        },
        https_deps,
    ));

    // --- observability -----------------------------------------------------
    // The PagerDuty URL is a secret: the spec (diffed, printed) holds its
    // redacted form, the provider gets the URL as an input.
    out.push(
        Desired::new(
            k(Kind::SnsTopic, "alarms"),
            &SnsTopicSpec {
                name: format!("{p}-alarms"),
                https_subscriptions: ctx
                    .pagerduty_endpoint
                    .iter()
                    .map(|e| redact_endpoint(e))
                    .collect(),
            },
            vec![],
        )
        .input(
            "https_subscriptions",
            ctx.pagerduty_endpoint.clone().unwrap_or_default(),
        ),
    );
    out.push(Desired::new(
        k(Kind::AmpWorkspace, "main"),
        &AmpWorkspaceSpec {
            alias: format!("{p}-metrics"),
        },
        vec![],
    ));
    let ws_id = ids.id(Kind::AmpWorkspace, "main");
    for rf in &ctx.rule_files {
        out.push(
            Desired::new(
                k(Kind::AmpRuleGroups, &rf.name),
                &AmpRuleGroupsSpec {
                    workspace_id: ws_id.clone(),
                    name: rf.name.clone(),
                    data_hash: rf.hash.clone(),
                },
                vec![k(Kind::AmpWorkspace, "main")],
            )
            .input("data", rf.data.clone()),
        );
    }

    // --- compute -----------------------------------------------------------
    let cluster = format!("{p}-cluster");
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
    let mut gateway_env = BTreeMap::new();
    gateway_env.insert(
        "GATEWAY_PROXY_LISTEN".to_string(),
        format!("0.0.0.0:{PROXY_PORT}"),
    );
    gateway_env.insert(
        "GATEWAY_STATUS_LISTEN".to_string(),
        format!("0.0.0.0:{STATUS_PORT}"),
    );
    gateway_env.insert(
        "GATEWAY_WORKERS".to_string(),
        cfg.service.gateway_workers.to_string(),
    );
    // The image's kong.yml reads the rate-limiting store from these
    // (`${{ env "REDIS_HOST" }}` ...): shared counters in ElastiCache, over TLS.
    gateway_env.insert("RATE_LIMIT_POLICY".to_string(), "redis".to_string());
    gateway_env.insert(
        "REDIS_HOST".to_string(),
        ids.get(Kind::ReplicationGroup, "main", "endpoint"),
    );
    gateway_env.insert("REDIS_PORT".to_string(), "6379".to_string());
    gateway_env.insert("REDIS_SSL".to_string(), "true".to_string());
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
    let mut gateway_secrets = BTreeMap::new();
    gateway_secrets.insert("JWT_SECRET".to_string(), secret_arn("jwt"));
    gateway_secrets.insert("REDIS_PASSWORD".to_string(), secret_arn("redis-token"));
    out.push(Desired::new(
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
        },
        vec![
            k(Kind::IamRole, "task-execution"),
            k(Kind::IamRole, "task"),
            k(Kind::LogGroup, "gateway"),
            k(Kind::Secret, "jwt"),
            k(Kind::Secret, "redis-token"),
            k(Kind::ReplicationGroup, "main"),
            k(Kind::AmpWorkspace, "main"),
        ],
    ));
    let mut svc_deps = subnet_keys("private");
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
            target_group_arn: tg_arn(live),
            desired_count: cfg.service.desired_count,
            launch_type: "FARGATE".into(),
            deployment_controller: "EXTERNAL".into(),
            subnets: subnet_ids("private"),
            security_groups: vec![sg("tasks")],
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

    // --- alarms ------------------------------------------------------------
    let topic = ids.get(Kind::SnsTopic, "alarms", "arn");
    let lb_dim = ids.get(Kind::LoadBalancer, "main", "arn_suffix");
    let a = &cfg.alarms;
    let alarms = [
        (
            "alb-5xx",
            "AWS/ApplicationELB",
            "HTTPCode_ELB_5XX_Count",
            vec![("LoadBalancer", lb_dim.clone())],
            "Sum",
            a.http_5xx_per_minute,
            "GreaterThanThreshold",
            k(Kind::LoadBalancer, "main"),
        ),
        (
            "target-5xx",
            "AWS/ApplicationELB",
            "HTTPCode_Target_5XX_Count",
            vec![("LoadBalancer", lb_dim)],
            "Sum",
            a.http_5xx_per_minute,
            "GreaterThanThreshold",
            k(Kind::LoadBalancer, "main"),
        ),
        (
            "service-cpu-high",
            "AWS/ECS",
            "CPUUtilization",
            vec![
                ("ClusterName", cluster.clone()),
                ("ServiceName", "gateway".to_string()),
            ],
            "Average",
            a.cpu_high_percent,
            "GreaterThanThreshold",
            k(Kind::EcsService, "gateway"),
        ),
        (
            "db-cpu-high",
            "AWS/RDS",
            "CPUUtilization",
            vec![("DBInstanceIdentifier", format!("{p}-db"))],
            "Average",
            a.cpu_high_percent,
            "GreaterThanThreshold",
            k(Kind::DbInstance, "main"),
        ),
    ];
    for (name, ns, metric, dims, stat, threshold, cmp, dep) in alarms {
        out.push(Desired::new(
            k(Kind::Alarm, name),
            &AlarmSpec {
                name: format!("{p}-{name}"),
                namespace: ns.into(),
                metric: metric.into(),
                dimensions: dims.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                statistic: stat.into(),
                period: 60,
                evaluation_periods: a.evaluation_periods,
                threshold,
                comparison: cmp.into(),
                treat_missing_data: "notBreaching".into(),
                actions: vec![topic.clone()],
            },
            vec![k(Kind::SnsTopic, "alarms"), dep],
        ));
    }

    // --- dashboards --------------------------------------------------------
    if ctx.grafana_enabled {
        for d in &ctx.dashboards {
            out.push(
                Desired::new(
                    k(Kind::GrafanaDashboard, &d.uid),
                    &GrafanaDashboardSpec {
                        uid: d.uid.clone(),
                        title: d.title.clone(),
                        content_hash: d.hash.clone(),
                    },
                    vec![],
                )
                .input("json", d.json.clone()),
            );
        }
    }
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
