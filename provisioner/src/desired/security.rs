//! Security groups and their rules, IAM roles, the generated secrets.

use super::*;

/// Security groups and their least-privilege rules.
pub(super) fn push_groups(b: &Build<'_>, out: &mut Vec<Desired>) {
    let cfg = b.cfg;
    let p = &b.p;
    let vpc = b.vpc();
    let vpc_id = b.vpc_id();
    let grafana = cfg.grafana_service.enabled;
    let mut groups = vec![
        ("alb", "ALB: HTTPS/HTTP from the internet, to gateway tasks"),
        (
            "tasks",
            "Gateway tasks: from the ALB, to RDS, Redis and HTTPS",
        ),
        ("database", "RDS PostgreSQL: 5432 from gateway tasks only"),
        ("redis", "ElastiCache Redis: 6379 from gateway tasks only"),
    ];
    if grafana {
        groups.push((
            "grafana",
            "Grafana: 3000 from the ALB, to HTTPS (AMP, image pulls)",
        ));
    }
    for &(name, description) in &groups {
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
    let all_sg_keys: Vec<Key> = groups
        .iter()
        .map(|(g, _)| k(Kind::SecurityGroup, g))
        .collect();
    let anywhere = "0.0.0.0/0".to_string();
    // The services the gateway fronts: exactly their ports, to where they
    // live (the VPC for a Cloud Map name). The env file was validated on
    // load, so this cannot fail here.
    let upstream_egress: Vec<SgRule> = cfg
        .upstreams()
        .unwrap_or_default()
        .into_iter()
        .map(|u| rule(i32::from(u.port), u.cidr))
        .collect();
    let mut alb_egress = vec![
        rule(PROXY_PORT, b.sg("tasks")),
        rule(STATUS_PORT, b.sg("tasks")),
    ];
    if grafana {
        alb_egress.push(rule(GRAFANA_PORT, b.sg("grafana")));
    }
    let mut sg_rules: Vec<(&str, Vec<SgRule>, Vec<SgRule>)> = vec![
        (
            "alb",
            vec![
                rule(443, anywhere.clone()),
                rule(80, anywhere.clone()),
                // The blue-green test listener is reachable from inside the VPC only.
                rule(TEST_LISTENER_PORT, cfg.network.cidr.clone()),
            ],
            alb_egress,
        ),
        (
            "tasks",
            vec![
                rule(PROXY_PORT, b.sg("alb")),
                rule(STATUS_PORT, b.sg("alb")),
            ],
            [
                rule(POSTGRES_PORT, b.sg("database")),
                rule(REDIS_PORT, b.sg("redis")),
                // ECR, Secrets Manager, CloudWatch Logs and AMP are HTTPS APIs.
                rule(443, anywhere.clone()),
            ]
            .into_iter()
            .chain(upstream_egress)
            .collect(),
        ),
        ("database", vec![rule(POSTGRES_PORT, b.sg("tasks"))], vec![]),
        ("redis", vec![rule(REDIS_PORT, b.sg("tasks"))], vec![]),
    ];
    if grafana {
        // Grafana queries AMP and pulls its image over HTTPS, nothing else.
        sg_rules.push((
            "grafana",
            vec![rule(GRAFANA_PORT, b.sg("alb"))],
            vec![rule(443, anywhere.clone())],
        ));
    }
    for (name, ingress, egress) in sg_rules {
        out.push(Desired::new(
            k(Kind::SecurityGroupRules, name),
            &SecurityGroupRulesSpec {
                group_id: b.sg(name),
                ingress: rules(ingress),
                egress: rules(egress),
            },
            all_sg_keys.clone(),
        ));
    }
}

/// An IAM role `<prefix>-<name>` that `service` may assume on behalf of
/// this account only, with one inline policy of `statements`.
fn role(b: &Build<'_>, name: &str, service: &str, statements: Value, deps: Vec<Key>) -> Desired {
    Desired::new(
        k(Kind::IamRole, name),
        &IamRoleSpec {
            name: format!("{}-{name}", b.p),
            trusted_service: service.into(),
            source_account: b.ctx.account_id.clone(),
            policy: json!({"Version": "2012-10-17", "Statement": statements}),
        },
        deps,
    )
}

/// IAM roles: flow-log delivery, task execution, task.
pub(super) fn push_roles(b: &Build<'_>, out: &mut Vec<Desired>) {
    let ids = b.ids;
    let flow_group_arn = ids.get(Kind::LogGroup, "flow-logs", "arn");
    out.push(role(
        b,
        "flow-logs",
        "vpc-flow-logs.amazonaws.com",
        json!([{
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            "Resource": [flow_group_arn.clone(), join(&flow_group_arn, ":*")],
        }]),
        vec![k(Kind::LogGroup, "flow-logs")],
    ));
    let grafana = b.cfg.grafana_service.enabled;
    let mut log_groups = vec!["gateway"];
    let mut read_secrets = vec![
        b.secret_arn("jwt"),
        b.secret_arn("redis-token"),
        ids.get(Kind::ConnectionSecret, "metrics-postgres", "arn"),
        ids.get(Kind::ConnectionSecret, "metrics-redis", "arn"),
    ];
    let mut exec_deps: Vec<Key> = [
        k(Kind::LogGroup, "gateway"),
        k(Kind::Secret, "jwt"),
        k(Kind::Secret, "redis-token"),
        k(Kind::ConnectionSecret, "metrics-postgres"),
        k(Kind::ConnectionSecret, "metrics-redis"),
    ]
    .into_iter()
    .chain(TASK_IMAGES.iter().map(|r| k(Kind::EcrRepository, r)))
    .collect();
    if grafana {
        // Grafana's logs and its admin password.
        log_groups.push("grafana");
        read_secrets.push(b.secret_arn("grafana-admin"));
        exec_deps.push(k(Kind::LogGroup, "grafana"));
        exec_deps.push(k(Kind::Secret, "grafana-admin"));
    }
    out.push(role(
        b,
        "task-execution",
        "ecs-tasks.amazonaws.com",
        json!([
            // GetAuthorizationToken has no resource-level permissions (AWS
            // requires "*"); the pulls themselves are limited to the
            // repositories the task runs.
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
                "Resource": log_groups.iter()
                    .map(|g| join(&ids.get(Kind::LogGroup, g, "arn"), ":*"))
                    .collect::<Vec<_>>(),
            },
            {
                "Effect": "Allow",
                "Action": ["secretsmanager:GetSecretValue"],
                "Resource": read_secrets,
            }
        ]),
        exec_deps,
    ));
    out.push(role(
        b,
        "task",
        "ecs-tasks.amazonaws.com",
        json!([{
            "Effect": "Allow",
            "Action": ["aps:RemoteWrite"],
            "Resource": ids.get(Kind::AmpWorkspace, "main", "arn"),
        }]),
        vec![k(Kind::AmpWorkspace, "main")],
    ));
    if grafana {
        // Grafana's AMP data source signs its queries with this role (SigV4).
        out.push(role(
            b,
            "grafana-task",
            "ecs-tasks.amazonaws.com",
            json!([{
                "Effect": "Allow",
                "Action": ["aps:QueryMetrics", "aps:GetSeries", "aps:GetLabels",
                           "aps:GetMetricMetadata"],
                "Resource": ids.get(Kind::AmpWorkspace, "main", "arn"),
            }]),
            vec![k(Kind::AmpWorkspace, "main")],
        ));
    }
}

/// Secrets Manager secrets with generated values.
pub(super) fn push_secrets(b: &Build<'_>, out: &mut Vec<Desired>) {
    let cfg = b.cfg;
    for (key, name, description) in SECRETS {
        if key == "grafana-admin" && !cfg.grafana_service.enabled {
            continue;
        }
        out.push(Desired::new(
            k(Kind::Secret, key),
            &SecretSpec {
                name: secret_name(cfg, name),
                description: description.into(),
            },
            vec![],
        ));
    }
}
