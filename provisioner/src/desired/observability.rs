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
}

/// Grafana dashboards, when Grafana is managed.
pub(super) fn push_dashboards(b: &Build<'_>, out: &mut Vec<Desired>) {
    let ctx = b.ctx;
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
}
