//! Log groups, flow logs, the alarm topic, AMP, alarms, dashboards.

use super::*;

/// Log groups and the VPC flow log.
pub(super) fn push_logs(b: &Build<'_>, out: &mut Vec<Desired>) {
    let cfg = b.cfg;
    let ids = b.ids;
    let vpc = b.vpc();
    let vpc_id = b.vpc_id();
    let flow_group = b.flow_group();
    let app_group = b.app_group();
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
    if cfg.grafana_service.enabled {
        out.push(Desired::new(
            k(Kind::LogGroup, "grafana"),
            &LogGroupSpec {
                name: format!("/ecs/{}/grafana", b.p),
                retention_days: cfg.service.log_retention_days,
            },
            vec![],
        ));
    }
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
}

/// The alarm topic, the AMP workspace and its rule groups.
pub(super) fn push_metrics(b: &Build<'_>, out: &mut Vec<Desired>) {
    let ctx = b.ctx;
    let ids = b.ids;
    let p = &b.p;
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
                service_publishers: vec![AMP_SERVICE_PRINCIPAL.to_string()],
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
    // Critical alerts of the rules above -> the SNS topic (-> PagerDuty).
    let topic = ids.get(Kind::SnsTopic, "alarms", "arn");
    let (data, data_hash) = if topic == PENDING {
        (String::new(), PENDING.to_string())
    } else {
        let d = crate::alertmanager::definition(&topic, &ctx.region);
        let h = fnv1a(d.as_bytes());
        (d, h)
    };
    out.push(
        Desired::new(
            k(Kind::AmpAlertManager, "main"),
            &AmpAlertManagerSpec {
                workspace_id: ws_id.clone(),
                data_hash,
            },
            vec![k(Kind::AmpWorkspace, "main"), k(Kind::SnsTopic, "alarms")],
        )
        .input("data", data),
    );
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
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Member cluster ids of a cluster-mode replication group:
/// `<group>-<shard:04>-<node:03>`, shards and nodes counted from 1.
pub(crate) fn redis_nodes(group: &str, shards: i32, replicas: i32) -> Vec<String> {
    (1..=shards)
        .flat_map(|s| (1..=replicas + 1).map(move |n| format!("{group}-{s:04}-{n:03}")))
        .collect()
}

/// CloudWatch alarms to the topic.
pub(super) fn push_alarms(b: &Build<'_>, out: &mut Vec<Desired>) {
    let cfg = b.cfg;
    let ids = b.ids;
    let p = &b.p;
    let cluster = b.cluster();
    let topic = ids.get(Kind::SnsTopic, "alarms", "arn");
    let lb_dim = ids.get(Kind::LoadBalancer, "main", "arn_suffix");
    let a = &cfg.alarms;
    let db = vec![("DBInstanceIdentifier", format!("{p}-db"))];
    let service = vec![
        ("ClusterName", cluster.clone()),
        ("ServiceName", "gateway".to_string()),
    ];
    let lb = k(Kind::LoadBalancer, "main");
    let mut alarms = vec![
        (
            "alb-5xx".to_string(),
            "AWS/ApplicationELB",
            "HTTPCode_ELB_5XX_Count",
            vec![("LoadBalancer", lb_dim.clone())],
            "Sum",
            a.http_5xx_per_minute,
            "GreaterThanThreshold",
            lb.clone(),
        ),
        (
            "target-5xx".to_string(),
            "AWS/ApplicationELB",
            "HTTPCode_Target_5XX_Count",
            vec![("LoadBalancer", lb_dim.clone())],
            "Sum",
            a.http_5xx_per_minute,
            "GreaterThanThreshold",
            lb.clone(),
        ),
        (
            // An extended statistic: the alarm module sends it as such.
            "alb-latency-p99".to_string(),
            "AWS/ApplicationELB",
            "TargetResponseTime",
            vec![("LoadBalancer", lb_dim)],
            "p99",
            a.latency_p99_seconds,
            "GreaterThanThreshold",
            lb,
        ),
        (
            "service-cpu-high".to_string(),
            "AWS/ECS",
            "CPUUtilization",
            service.clone(),
            "Average",
            a.cpu_high_percent,
            "GreaterThanThreshold",
            k(Kind::EcsService, "gateway"),
        ),
        (
            "service-memory-high".to_string(),
            "AWS/ECS",
            "MemoryUtilization",
            service,
            "Average",
            a.memory_high_percent,
            "GreaterThanThreshold",
            k(Kind::EcsService, "gateway"),
        ),
        (
            "db-cpu-high".to_string(),
            "AWS/RDS",
            "CPUUtilization",
            db.clone(),
            "Average",
            a.cpu_high_percent,
            "GreaterThanThreshold",
            k(Kind::DbInstance, "main"),
        ),
        (
            "db-free-storage-low".to_string(),
            "AWS/RDS",
            "FreeStorageSpace",
            db,
            "Minimum",
            a.db_free_storage_gb * GIB,
            "LessThanThreshold",
            k(Kind::DbInstance, "main"),
        ),
    ];
    // ElastiCache publishes engine CPU and memory per node: one alarm per
    // member cluster (`<group>-<shard:04>-<node:03>`, cluster mode's names).
    for node in redis_nodes(
        &format!("{p}-redis"),
        cfg.redis.shards,
        cfg.redis.replicas_per_shard,
    ) {
        let short = node.trim_start_matches(&format!("{p}-redis-")).to_string();
        for (what, metric, threshold) in [
            ("cpu", "EngineCPUUtilization", a.redis_cpu_high_percent),
            (
                "memory",
                "DatabaseMemoryUsagePercentage",
                a.redis_memory_high_percent,
            ),
        ] {
            alarms.push((
                format!("redis-{what}-high-{short}"),
                "AWS/ElastiCache",
                metric,
                vec![("CacheClusterId", node.clone())],
                "Average",
                threshold,
                "GreaterThanThreshold",
                k(Kind::ReplicationGroup, "main"),
            ));
        }
    }
    for (name, ns, metric, dims, stat, threshold, cmp, dep) in alarms {
        out.push(Desired::new(
            k(Kind::Alarm, &name),
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
}

/// A dashboard file as a resource (the model travels in `inputs.json`).
pub fn dashboard_desired(d: &DashboardFile) -> Desired {
    Desired::new(
        k(Kind::GrafanaDashboard, &d.uid),
        &GrafanaDashboardSpec {
            uid: d.uid.clone(),
            title: d.title.clone(),
            content_hash: d.hash.clone(),
        },
        vec![],
    )
    .input("json", d.json.clone())
}

/// Grafana dashboards, when Grafana is managed.
pub(super) fn push_dashboards(b: &Build<'_>, out: &mut Vec<Desired>) {
    if b.ctx.grafana_enabled {
        out.extend(b.ctx.dashboards.iter().map(dashboard_desired));
    }
}
