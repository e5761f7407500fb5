//! The staging verifier: every resource of `up staging` read back with SDK
//! describe calls and checked against the seeds' security settings.
//! The describe-then-assert blocks look alike (one per resource kind) but
//! each checks its own fields; they moved here unchanged from `moto_e2e.rs`.

use super::*;

fn sg_rules(perms: &[aws_sdk_ec2::types::IpPermission]) -> Vec<(i32, String)> {
    let mut v = Vec::new();
    for p in perms {
        let port = p.from_port().unwrap_or(-1);
        assert_eq!(p.from_port(), p.to_port(), "single-port rules only");
        for r in p.ip_ranges() {
            v.push((port, r.cidr_ip().unwrap_or_default().to_string()));
        }
        for g in p.user_id_group_pairs() {
            v.push((port, g.group_id().unwrap_or_default().to_string()));
        }
    }
    v.sort();
    v
}

// dup: each test spells out its own setup and checks (reads alone when it fails).
/// Every resource of `up staging`, with the security settings of the seeds.
pub(crate) async fn verify_staging(moto: &Moto) {
    let conf = sdk(moto).await;
    let ec2 = aws_sdk_ec2::Client::new(&conf);

    // Network.
    let vpcs = ec2
        .describe_vpcs()
        .filters(env_filter("staging"))
        .send()
        .await
        .expect("vpcs");
    assert_eq!(vpcs.vpcs().len(), 1, "exactly one VPC");
    let vpc = &vpcs.vpcs()[0];
    assert_eq!(vpc.cidr_block(), Some("10.20.0.0/16"));
    let vpc_id = vpc.vpc_id().expect("vpc id").to_string();
    let subnets = ec2
        .describe_subnets()
        .filters(env_filter("staging"))
        .send()
        .await
        .expect("subnets");
    assert_eq!(subnets.subnets().len(), 6);
    let tier = |s: &aws_sdk_ec2::types::Subnet| {
        s.tags()
            .iter()
            .find(|t| t.key() == Some("tier"))
            .and_then(|t| t.value())
            .unwrap_or_default()
            .to_string()
    };
    let mut azs: Vec<String> = subnets
        .subnets()
        .iter()
        .filter_map(|s| s.availability_zone().map(str::to_string))
        .collect();
    azs.sort();
    azs.dedup();
    assert_eq!(azs.len(), 2, "two AZs");
    for s in subnets.subnets() {
        assert_eq!(
            s.map_public_ip_on_launch(),
            Some(tier(s) == "public"),
            "{:?}",
            s.subnet_id()
        );
    }
    // Describe, then assert: alike per kind, each checks its own fields.
    let nats = ec2
        .describe_nat_gateways()
        .filter(env_filter("staging"))
        .send()
        .await
        .expect("nats");
    assert_eq!(nats.nat_gateways().len(), 1);
    let nat_id = nats.nat_gateways()[0]
        .nat_gateway_id()
        .expect("nat")
        .to_string();
    let igws = ec2
        .describe_internet_gateways()
        .filters(env_filter("staging"))
        .send()
        .await
        .expect("igws");
    assert_eq!(igws.internet_gateways().len(), 1);
    assert_eq!(
        igws.internet_gateways()[0].attachments()[0].vpc_id(),
        Some(vpc_id.as_str())
    );
    let igw_id = igws.internet_gateways()[0]
        .internet_gateway_id()
        .expect("igw")
        .to_string();
    let rts = ec2
        .describe_route_tables()
        .filters(env_filter("staging"))
        .send()
        .await
        .expect("rts");
    assert_eq!(rts.route_tables().len(), 4);
    for rt in rts.route_tables() {
        let name = rt
            .tags()
            .iter()
            .find(|t| t.key() == Some("provisioner:key"))
            .and_then(|t| t.value())
            .unwrap_or_default();
        let default = rt
            .routes()
            .iter()
            .find(|r| r.destination_cidr_block() == Some("0.0.0.0/0"));
        let target = default.and_then(|r| r.nat_gateway_id().or(r.gateway_id()));
        match name {
            "route-table/public" => assert_eq!(target, Some(igw_id.as_str())),
            "route-table/database" => {
                assert_eq!(target, None, "database tier has no internet route")
            }
            _ => assert_eq!(target, Some(nat_id.as_str()), "{name}"),
        }
        assert!(!rt.associations().is_empty(), "{name} has subnets");
    }
    let flows = ec2
        .describe_flow_logs()
        .filter(env_filter("staging"))
        .send()
        .await
        .expect("flow logs");
    assert_eq!(flows.flow_logs().len(), 1);
    assert_eq!(flows.flow_logs()[0].resource_id(), Some(vpc_id.as_str()));
    assert_eq!(
        flows.flow_logs()[0].traffic_type().map(|t| t.as_str()),
        Some("ALL")
    );

    // Security groups: least privilege.
    let sgs = ec2
        .describe_security_groups()
        .filters(env_filter("staging"))
        .send()
        .await
        .expect("sgs");
    let by_name: BTreeMap<String, &aws_sdk_ec2::types::SecurityGroup> = sgs
        .security_groups()
        .iter()
        .map(|g| {
            (
                g.group_name()
                    .unwrap_or_default()
                    .trim_start_matches("edge-suite-staging-")
                    .to_string(),
                g,
            )
        })
        .collect();
    assert_eq!(by_name.len(), 5);
    let id = |n: &str| by_name[n].group_id().expect("sg id").to_string();
    let any = "0.0.0.0/0".to_string();
    assert_eq!(
        sg_rules(by_name["alb"].ip_permissions()),
        vec![
            (80, any.clone()),
            (443, any.clone()),
            (8443, "10.20.0.0/16".to_string())
        ]
    );
    assert_eq!(
        sg_rules(by_name["alb"].ip_permissions_egress()),
        vec![
            (3000, id("grafana")),
            (8000, id("tasks")),
            (8100, id("tasks"))
        ]
    );
    assert_eq!(
        sg_rules(by_name["grafana"].ip_permissions()),
        vec![(3000, id("alb"))]
    );
    assert_eq!(
        sg_rules(by_name["grafana"].ip_permissions_egress()),
        vec![(443, any.clone())]
    );
    assert_eq!(
        sg_rules(by_name["tasks"].ip_permissions()),
        vec![(8000, id("alb")), (8100, id("alb"))]
    );
    assert_eq!(
        sg_rules(by_name["tasks"].ip_permissions_egress()),
        vec![
            (443, any.clone()),
            (5432, id("database")),
            (6379, id("redis")),
            // The env file's upstream, a Cloud Map name: its port, to the VPC.
            (9000, "10.20.0.0/16".to_string())
        ]
    );
    assert_eq!(
        sg_rules(by_name["database"].ip_permissions()),
        vec![(5432, id("tasks"))]
    );
    assert!(by_name["database"].ip_permissions_egress().is_empty());
    assert_eq!(
        sg_rules(by_name["redis"].ip_permissions()),
        vec![(6379, id("tasks"))]
    );
    assert!(by_name["redis"].ip_permissions_egress().is_empty());

    // Secrets.
    let sm = aws_sdk_secretsmanager::Client::new(&conf);
    let secrets = sm.list_secrets().send().await.expect("secrets");
    let mut names: Vec<&str> = secrets
        .secret_list()
        .iter()
        .filter_map(|s| s.name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "edge-suite/staging/db-password",
            "edge-suite/staging/grafana-admin-password",
            "edge-suite/staging/jwt-secret",
            "edge-suite/staging/metrics-agent-postgres-dsn",
            "edge-suite/staging/metrics-agent-redis-addr",
            "edge-suite/staging/redis-auth-token"
        ]
    );
    // The sidecar's connections: composed from the endpoints and the
    // generated passwords.
    let value = |id: &str| {
        let sm = sm.clone();
        let id = id.to_string();
        async move {
            sm.get_secret_value()
                .secret_id(id)
                .send()
                .await
                .expect("secret value")
                .secret_string()
                .unwrap_or_default()
                .to_string()
        }
    };
    let db_password = value("edge-suite/staging/db-password").await;
    let dsn = value("edge-suite/staging/metrics-agent-postgres-dsn").await;
    assert!(
        dsn.starts_with(&format!("postgres://gateway:{db_password}@"))
            && dsn.ends_with(":5432/postgres?sslmode=require"),
        "DSN shape (TLS: RDS enforces it)"
    );
    let token = value("edge-suite/staging/redis-auth-token").await;
    let addr = value("edge-suite/staging/metrics-agent-redis-addr").await;
    assert!(
        addr.starts_with(&format!("rediss://:{token}@")) && addr.ends_with(":6379"),
        "Redis address shape (TLS: in-transit encryption is on)"
    );

    // RDS: Multi-AZ, encrypted, 7-day backups, private, in the database SG.
    let rds = aws_sdk_rds::Client::new(&conf);
    let dbs = rds.describe_db_instances().send().await.expect("dbs");
    assert_eq!(dbs.db_instances().len(), 1);
    let db = &dbs.db_instances()[0];
    assert_eq!(db.engine(), Some("postgres"));
    assert_eq!(db.multi_az(), Some(true));
    assert_eq!(db.storage_encrypted(), Some(true));
    assert_eq!(db.backup_retention_period(), Some(7));
    assert_eq!(
        db.deletion_protection(),
        Some(false),
        "staging has no deletion protection"
    );
    assert_eq!(db.publicly_accessible(), Some(false));
    assert_eq!(
        db.vpc_security_groups()[0].vpc_security_group_id(),
        Some(id("database").as_str())
    );

    // ElastiCache: cluster mode, TLS, at rest, AUTH.
    let ec = aws_sdk_elasticache::Client::new(&conf);
    let rgs = ec.describe_replication_groups().send().await.expect("rgs");
    assert_eq!(rgs.replication_groups().len(), 1);
    let rg = &rgs.replication_groups()[0];
    assert_eq!(rg.cluster_enabled(), Some(true));
    assert_eq!(rg.transit_encryption_enabled(), Some(true));
    assert_eq!(rg.at_rest_encryption_enabled(), Some(true));
    assert_eq!(rg.auth_token_enabled(), Some(true));
    assert!(rg.configuration_endpoint().is_some());

    // ALB, listeners, target groups.
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&conf);
    let lbs = elb.describe_load_balancers().send().await.expect("lbs");
    assert_eq!(lbs.load_balancers().len(), 1);
    let lb = &lbs.load_balancers()[0];
    assert_eq!(lb.scheme().map(|s| s.as_str()), Some("internet-facing"));
    assert_eq!(lb.security_groups(), [id("alb")]);
    let tgs = elb.describe_target_groups().send().await.expect("tgs");
    assert_eq!(tgs.target_groups().len(), 3);
    let mut tg_by_color = BTreeMap::new();
    for t in tgs.target_groups() {
        if t.target_group_name() == Some("edge-suite-staging-grafana") {
            assert_eq!(t.health_check_path(), Some("/grafana/api/health"));
            assert_eq!(t.port(), Some(3000));
            continue;
        }
        assert_eq!(t.health_check_path(), Some("/status/ready"));
        assert_eq!(t.health_check_port(), Some("8100"));
        assert_eq!(t.port(), Some(8000));
        assert_eq!(t.target_type().map(|x| x.as_str()), Some("ip"));
        let color = t
            .target_group_name()
            .unwrap_or_default()
            .rsplit('-')
            .next()
            .unwrap_or_default()
            .to_string();
        tg_by_color.insert(color, t.target_group_arn().unwrap_or_default().to_string());
    }
    let listeners = elb
        .describe_listeners()
        .load_balancer_arn(lb.load_balancer_arn().unwrap_or_default())
        .send()
        .await
        .expect("listeners");
    let by_port: BTreeMap<i32, &aws_sdk_elasticloadbalancingv2::types::Listener> = listeners
        .listeners()
        .iter()
        .map(|l| (l.port().unwrap_or(0), l))
        .collect();
    assert_eq!(
        by_port.keys().copied().collect::<Vec<_>>(),
        vec![80, 443, 8443]
    );
    let https = by_port[&443];
    assert_eq!(https.protocol().map(|p| p.as_str()), Some("HTTPS"));
    assert!(
        https.certificates()[0]
            .certificate_arn()
            .is_some_and(|a| a.contains(":certificate/"))
    );
    assert_eq!(
        https.ssl_policy(),
        Some("ELBSecurityPolicy-TLS13-1-2-2021-06")
    );
    assert_eq!(
        https.default_actions()[0].target_group_arn(),
        Some(tg_by_color["blue"].as_str())
    );
    let redirect = by_port[&80].default_actions()[0]
        .redirect_config()
        .expect("redirect");
    assert_eq!(redirect.protocol(), Some("HTTPS"));
    assert_eq!(redirect.port(), Some("443"));
    assert_eq!(
        by_port[&8443].default_actions()[0].target_group_arn(),
        Some(tg_by_color["green"].as_str())
    );

    // ECS.
    let ecs = aws_sdk_ecs::Client::new(&conf);
    let clusters = ecs
        .describe_clusters()
        .clusters("edge-suite-staging-cluster")
        .include(aws_sdk_ecs::types::ClusterField::Settings)
        .send()
        .await
        .expect("clusters");
    let cluster = &clusters.clusters()[0];
    assert!(
        cluster
            .settings()
            .iter()
            .any(|s| s.value() == Some("enabled")),
        "container insights"
    );
    let svcs = ecs
        .describe_services()
        .cluster("edge-suite-staging-cluster")
        .services("gateway")
        .send()
        .await
        .expect("svc");
    let svc = &svcs.services()[0];
    assert_eq!(svc.desired_count(), 2);
    assert_eq!(
        svc.deployment_controller().map(|d| d.r#type().as_str()),
        Some("EXTERNAL")
    );
    let td = ecs
        .describe_task_definition()
        .task_definition(svc.task_definition().expect("service task definition"))
        .send()
        .await
        .expect("td")
        .task_definition
        .expect("td");
    assert_eq!(td.network_mode().map(|m| m.as_str()), Some("awsvpc"));
    assert_eq!(td.cpu(), Some("512"));
    let containers: BTreeMap<&str, &aws_sdk_ecs::types::ContainerDefinition> = td
        .container_definitions()
        .iter()
        .map(|c| (c.name().unwrap_or_default(), c))
        .collect();
    let gw = containers["gateway"];
    let ports: Vec<i32> = gw
        .port_mappings()
        .iter()
        .filter_map(|p| p.container_port())
        .collect();
    assert_eq!(ports, vec![8000, 8100]);
    let secret_names: Vec<&str> = gw.secrets().iter().map(|s| s.name()).collect();
    assert_eq!(secret_names.len(), 2);
    assert!(secret_names.contains(&"JWT_SECRET") && secret_names.contains(&"REDIS_PASSWORD"));
    assert!(
        gw.secrets()
            .iter()
            .all(|s| s.value_from().starts_with("arn:aws:secretsmanager:"))
    );
    let env: BTreeMap<&str, &str> = gw
        .environment()
        .iter()
        .filter_map(|kv| Some((kv.name()?, kv.value()?)))
        .collect();
    assert_eq!(env.get("GATEWAY_PROXY_LISTEN"), Some(&"0.0.0.0:8000"));
    assert_eq!(env.get("GATEWAY_STATUS_LISTEN"), Some(&"0.0.0.0:8100"));
    assert_eq!(env.get("REDIS_SSL"), Some(&"true"));
    // The client address from the ALB's X-Forwarded-For (ALB nodes are in the VPC).
    assert_eq!(env.get("GATEWAY_TRUSTED_IPS"), Some(&"10.20.0.0/16"));
    assert_eq!(env.get("GATEWAY_REAL_IP_HEADER"), Some(&"X-Forwarded-For"));
    assert_eq!(env.get("GATEWAY_REAL_IP_RECURSIVE"), Some(&"true"));
    // The declarative configuration: the repo's staging/kong.yml, rendered,
    // handed over whole; the gateway reads it because no --config is given.
    assert_eq!(gw.command(), ["run"]);
    let config = env
        .get("GATEWAY_CONFIG_STRING")
        .expect("GATEWAY_CONFIG_STRING in the task definition");
    assert!(config.contains("_format_version: \"3.0\""), "{config}");
    assert!(
        config.contains("target: auth.edge-suite-staging.local:9000"),
        "the env file's upstream is rendered"
    );
    assert!(
        config.contains(r#"origins: ["https://app.staging.edge-suite.example.com"]"#),
        "CORS for the frontend domain"
    );
    assert!(config.contains(r#"secret: ${{ env "JWT_SECRET" }}"#));
    assert!(
        !config.replace("${{", "").contains("{{"),
        "every provisioner reference rendered"
    );
    // It loads in the gateway's own loader with what the task provides: its
    // plain environment and the names of its secrets.
    let plain: BTreeMap<String, String> = env
        .iter()
        .filter(|(k, _)| **k != "GATEWAY_CONFIG_STRING")
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let secrets: std::collections::BTreeSet<String> =
        secret_names.iter().map(|s| s.to_string()).collect();
    let rendered =
        provisioner::gateway_config::Rendered::new("task definition", config.to_string());
    provisioner::gateway_config::validate(&rendered, &plain, &secrets)
        .expect("the registered configuration loads in the gateway");
    assert_eq!(
        env.get("REDIS_HOST").copied(),
        rg.configuration_endpoint().and_then(|e| e.address())
    );
    assert_eq!(gw.stop_timeout(), Some(30));
    assert!(gw.health_check().is_some());
    assert_eq!(
        gw.log_configuration()
            .and_then(|l| l.options())
            .and_then(|o| o.get("awslogs-group"))
            .map(String::as_str),
        Some("/ecs/edge-suite-staging/gateway")
    );
    let agent = containers["metrics-agent"];
    let agent_secrets: BTreeMap<&str, &str> = agent
        .secrets()
        .iter()
        .map(|s| (s.name(), s.value_from()))
        .collect();
    assert_eq!(
        agent_secrets.keys().copied().collect::<Vec<_>>(),
        ["METRICS_AGENT_POSTGRES_DSN", "METRICS_AGENT_REDIS_ADDR"]
    );
    assert!(
        agent_secrets["METRICS_AGENT_POSTGRES_DSN"]
            .contains(":secret:edge-suite/staging/metrics-agent-postgres-dsn")
            && agent_secrets["METRICS_AGENT_REDIS_ADDR"]
                .contains(":secret:edge-suite/staging/metrics-agent-redis-addr"),
        "{agent_secrets:?}"
    );
    assert!(
        agent.environment().iter().all(|kv| !kv
            .name()
            .unwrap_or_default()
            .starts_with("METRICS_AGENT_POSTGRES")),
        "the DSN is never plain environment"
    );
    let agent_env: BTreeMap<&str, &str> = agent
        .environment()
        .iter()
        .filter_map(|kv| Some((kv.name()?, kv.value()?)))
        .collect();
    assert_eq!(
        agent_env.get("METRICS_AGENT_LISTEN"),
        Some(&"127.0.0.1:9464")
    );
    assert!(
        agent_env
            .get("AMP_REMOTE_WRITE_URL")
            .is_some_and(|u| u.ends_with("api/v1/remote_write"))
    );
    let sets = ecs
        .describe_task_sets()
        .cluster("edge-suite-staging-cluster")
        .service("gateway")
        .send()
        .await
        .expect("sets");
    assert_eq!(sets.task_sets().len(), 1);
    let set = &sets.task_sets()[0];
    assert_eq!(set.status(), Some("PRIMARY"));
    assert_eq!(set.launch_type().map(|l| l.as_str()), Some("FARGATE"));
    let vpc_conf = set
        .network_configuration()
        .and_then(|n| n.awsvpc_configuration())
        .expect("awsvpc");
    assert_eq!(vpc_conf.security_groups(), [id("tasks")]);
    assert_eq!(
        vpc_conf.assign_public_ip().map(|a| a.as_str()),
        Some("DISABLED")
    );

    // Auto scaling 2..10 on CPU.
    let aas = aws_sdk_applicationautoscaling::Client::new(&conf);
    let targets = aas
        .describe_scalable_targets()
        .service_namespace(aws_sdk_applicationautoscaling::types::ServiceNamespace::Ecs)
        .send()
        .await
        .expect("targets");
    assert_eq!(targets.scalable_targets().len(), 1);
    assert_eq!(
        (
            targets.scalable_targets()[0].min_capacity(),
            targets.scalable_targets()[0].max_capacity()
        ),
        (2, 10)
    );

    // ECR.
    let ecr = aws_sdk_ecr::Client::new(&conf);
    let repos = ecr.describe_repositories().send().await.expect("repos");
    assert_eq!(repos.repositories().len(), 3);
    let mut repo_names: Vec<&str> = repos
        .repositories()
        .iter()
        .filter_map(|r| r.repository_name())
        .collect();
    repo_names.sort();
    assert_eq!(
        repo_names,
        vec![
            "edge-suite/gateway",
            "edge-suite/metrics-agent",
            "edge-suite/provisioner"
        ]
    );
    for r in repos.repositories() {
        assert!(
            r.image_scanning_configuration()
                .is_some_and(|c| c.scan_on_push())
        );
    }

    // Alarms notify the SNS topic; AMP workspace and rules; log groups; roles.
    let sns = aws_sdk_sns::Client::new(&conf);
    let topics = sns.list_topics().send().await.expect("topics");
    assert_eq!(topics.topics().len(), 1);
    let topic = topics.topics()[0].topic_arn().expect("topic").to_string();
    // Amazon Managed Prometheus's Alertmanager may publish (this account only).
    let attrs = sns
        .get_topic_attributes()
        .topic_arn(&topic)
        .send()
        .await
        .expect("topic attributes");
    let policy: Value = serde_json::from_str(
        attrs
            .attributes()
            .and_then(|a| a.get("Policy"))
            .expect("policy"),
    )
    .expect("policy json");
    let amp_statement = &policy["Statement"][1];
    assert_eq!(amp_statement["Principal"]["Service"], "aps.amazonaws.com");
    assert_eq!(
        amp_statement["Condition"]["StringEquals"]["aws:SourceAccount"],
        "123456789012"
    );
    let cw = aws_sdk_cloudwatch::Client::new(&conf);
    let alarms = cw
        .describe_alarms()
        .alarm_name_prefix("edge-suite-staging-")
        .send()
        .await
        .expect("alarms");
    // 7 for the ALB, service and database, and 2 per Redis node (2 shards x 2).
    assert_eq!(alarms.metric_alarms().len(), 15);
    let alarm = |n: &str| {
        alarms
            .metric_alarms()
            .iter()
            .find(|a| a.alarm_name() == Some(&format!("edge-suite-staging-{n}")))
            .unwrap_or_else(|| panic!("alarm {n}"))
    };
    let p99 = alarm("alb-latency-p99");
    assert_eq!(
        (p99.metric_name(), p99.extended_statistic(), p99.threshold()),
        (Some("TargetResponseTime"), Some("p99"), Some(1.0))
    );
    assert_eq!(
        alarm("service-memory-high").metric_name(),
        Some("MemoryUtilization")
    );
    let storage = alarm("db-free-storage-low");
    assert_eq!(
        (storage.metric_name(), storage.threshold()),
        (
            Some("FreeStorageSpace"),
            Some(5.0 * 1024.0 * 1024.0 * 1024.0)
        )
    );
    assert_eq!(
        storage.comparison_operator().map(|c| c.as_str()),
        Some("LessThanThreshold")
    );
    for node in ["0001-001", "0001-002", "0002-001", "0002-002"] {
        for (what, metric) in [
            ("cpu", "EngineCPUUtilization"),
            ("memory", "DatabaseMemoryUsagePercentage"),
        ] {
            let a = alarm(&format!("redis-{what}-high-{node}"));
            assert_eq!(a.metric_name(), Some(metric));
            assert_eq!(
                a.dimensions()[0].value(),
                Some(format!("edge-suite-staging-redis-{node}").as_str())
            );
        }
    }
    assert!(
        alarms
            .metric_alarms()
            .iter()
            .all(|a| a.alarm_actions() == [topic.clone()])
    );
    let amp = aws_sdk_amp::Client::new(&conf);
    let ws = amp.list_workspaces().send().await.expect("workspaces");
    assert_eq!(ws.workspaces().len(), 1);
    let ns = amp
        .list_rule_groups_namespaces()
        .workspace_id(ws.workspaces()[0].workspace_id())
        .send()
        .await
        .expect("namespaces");
    assert_eq!(
        ns.rule_groups_namespaces()
            .iter()
            .map(|n| n.name())
            .collect::<Vec<_>>(),
        vec!["gateway"]
    );
    let logs = aws_sdk_cloudwatchlogs::Client::new(&conf);
    let groups = logs.describe_log_groups().send().await.expect("log groups");
    assert_eq!(groups.log_groups().len(), 3);
    assert!(
        groups
            .log_groups()
            .iter()
            .all(|g| g.retention_in_days().is_some())
    );
    let iam = aws_sdk_iam::Client::new(&conf);
    let roles = iam.list_roles().send().await.expect("roles");
    assert_eq!(
        roles
            .roles()
            .iter()
            .filter(|r| r.role_name().starts_with("edge-suite-staging-"))
            .count(),
        4
    );
    // Trust only for this account; ECR pulls only from the task's repositories.
    let exec = "edge-suite-staging-task-execution";
    let role = iam.get_role().role_name(exec).send().await.expect("role");
    let trust = provisioner::aws::iam::decode_policy(
        role.role()
            .and_then(|r| r.assume_role_policy_document())
            .unwrap_or_default(),
    );
    assert_eq!(
        trust["Statement"][0]["Condition"]["StringEquals"]["aws:SourceAccount"],
        "123456789012"
    );
    let policy = iam
        .get_role_policy()
        .role_name(exec)
        .policy_name(format!("{exec}-policy"))
        .send()
        .await
        .expect("policy");
    let policy = provisioner::aws::iam::decode_policy(policy.policy_document());
    let on_any: Vec<&Value> = policy["Statement"]
        .as_array()
        .expect("statements")
        .iter()
        .filter(|st| st["Resource"] == "*")
        .map(|st| &st["Action"])
        .collect();
    assert_eq!(on_any, [&serde_json::json!(["ecr:GetAuthorizationToken"])]);

    verify_web_acl(&conf).await;
    verify_grafana(&conf).await;
}

/// Grafana: its task definition (official image, password as an ECS
/// secret), its service behind its own target group, the listener rule,
/// the generated secret and the task role's AMP query permissions.
async fn verify_grafana(conf: &aws_config::SdkConfig) {
    let ecs = aws_sdk_ecs::Client::new(conf);
    let svc = ecs
        .describe_services()
        .cluster("edge-suite-staging-cluster")
        .services("grafana")
        .send()
        .await
        .expect("grafana service");
    let svc = &svc.services()[0];
    assert_eq!(svc.status(), Some("ACTIVE"));
    assert_eq!(svc.desired_count(), 1);
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(conf);
    let tg = elb
        .describe_target_groups()
        .names("edge-suite-staging-grafana")
        .send()
        .await
        .expect("grafana tg");
    let tg_arn = tg.target_groups()[0].target_group_arn().expect("arn");
    assert_eq!(
        svc.load_balancers()[0].target_group_arn(),
        Some(tg_arn),
        "registered with its own target group"
    );
    assert_eq!(svc.load_balancers()[0].container_port(), Some(3000));
    let td = ecs
        .describe_task_definition()
        .task_definition(svc.task_definition().expect("td"))
        .send()
        .await
        .expect("grafana td");
    let td = td.task_definition().expect("td");
    assert_eq!(td.family(), Some("edge-suite-staging-grafana"));
    assert!(
        td.task_role_arn()
            .is_some_and(|r| r.ends_with("role/edge-suite-staging-grafana-task"))
    );
    let c = &td.container_definitions()[0];
    assert_eq!(c.image(), Some(provisioner::consts::GRAFANA_IMAGE));
    let env: BTreeMap<&str, &str> = c
        .environment()
        .iter()
        .filter_map(|kv| Some((kv.name()?, kv.value()?)))
        .collect();
    assert_eq!(
        env["GF_SERVER_ROOT_URL"],
        "https://api.staging.edge-suite.example.com/grafana/"
    );
    assert_eq!(env["GF_SERVER_SERVE_FROM_SUB_PATH"], "true");
    assert!(!env.contains_key("GF_SECURITY_ADMIN_PASSWORD"));
    let sm = aws_sdk_secretsmanager::Client::new(conf);
    let secret = sm
        .describe_secret()
        .secret_id("edge-suite/staging/grafana-admin-password")
        .send()
        .await
        .expect("grafana secret");
    assert_eq!(
        c.secrets()
            .iter()
            .map(|s| (s.name(), s.value_from()))
            .collect::<Vec<_>>(),
        [("GF_SECURITY_ADMIN_PASSWORD", secret.arn().expect("arn"))]
    );
    // The HTTPS listener sends /grafana to Grafana, the rest to the gateway.
    let rule = grafana_rule(conf).await;
    assert_eq!(rule.priority(), Some("100"));
    assert_eq!(rule.actions()[0].target_group_arn(), Some(tg_arn));
    let cond = &rule.conditions()[0];
    assert_eq!(cond.field(), Some("path-pattern"));
    assert_eq!(
        cond.path_pattern_config().map(|p| p.values()),
        Some(&["/grafana".to_string(), "/grafana/*".to_string()][..])
    );
    let iam = aws_sdk_iam::Client::new(conf);
    let role = "edge-suite-staging-grafana-task";
    let policy = iam
        .get_role_policy()
        .role_name(role)
        .policy_name(format!("{role}-policy"))
        .send()
        .await
        .expect("grafana task policy");
    let policy = provisioner::aws::iam::decode_policy(policy.policy_document());
    assert_eq!(
        policy["Statement"][0]["Action"],
        serde_json::json!([
            "aps:QueryMetrics",
            "aps:GetSeries",
            "aps:GetLabels",
            "aps:GetMetricMetadata"
        ])
    );
}

/// The WAF web ACL: managed common rules + a rate rule, on the ALB.
async fn verify_web_acl(conf: &aws_config::SdkConfig) {
    use aws_sdk_wafv2::types::Scope;
    let waf = aws_sdk_wafv2::Client::new(conf);
    let acls = waf
        .list_web_acls()
        .scope(Scope::Regional)
        .send()
        .await
        .expect("web acls");
    assert_eq!(acls.web_acls().len(), 1);
    let s = &acls.web_acls()[0];
    assert_eq!(s.name(), Some("edge-suite-staging-waf"));
    let acl = waf
        .get_web_acl()
        .name("edge-suite-staging-waf")
        .id(s.id().expect("id"))
        .scope(Scope::Regional)
        .send()
        .await
        .expect("web acl");
    let acl = acl.web_acl().expect("acl");
    assert!(acl.default_action().and_then(|a| a.allow()).is_some());
    let stmts: Vec<_> = acl.rules().iter().filter_map(|r| r.statement()).collect();
    assert_eq!(
        stmts[0]
            .managed_rule_group_statement()
            .map(|m| (m.vendor_name(), m.name())),
        Some(("AWS", "AWSManagedRulesCommonRuleSet"))
    );
    assert_eq!(
        stmts[1].rate_based_statement().map(|r| r.limit()),
        Some(2000)
    );
    let tags = waf
        .list_tags_for_resource()
        .resource_arn(acl.arn())
        .send()
        .await
        .expect("tags");
    assert!(
        tags.tag_info_for_resource()
            .map(|t| t.tag_list())
            .unwrap_or_default()
            .iter()
            .any(|t| t.key() == "env" && t.value() == "staging")
    );
    let lbs = aws_sdk_elasticloadbalancingv2::Client::new(conf)
        .describe_load_balancers()
        .names("edge-suite-staging-alb")
        .send()
        .await
        .expect("lb");
    let on_alb = waf
        .get_web_acl_for_resource()
        .resource_arn(lbs.load_balancers()[0].load_balancer_arn().expect("arn"))
        .send()
        .await
        .expect("web acl for the ALB");
    assert_eq!(on_alb.web_acl().map(|a| a.arn()), Some(acl.arn()));
}

/// The HTTPS listener's one non-default rule (Grafana's).
pub(crate) async fn grafana_rule(
    conf: &aws_config::SdkConfig,
) -> aws_sdk_elasticloadbalancingv2::types::Rule {
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(conf);
    let lb = elb
        .describe_load_balancers()
        .names("edge-suite-staging-alb")
        .send()
        .await
        .expect("lb");
    let listeners = elb
        .describe_listeners()
        .load_balancer_arn(lb.load_balancers()[0].load_balancer_arn().expect("arn"))
        .send()
        .await
        .expect("listeners");
    let https = listeners
        .listeners()
        .iter()
        .find(|l| l.port() == Some(443))
        .expect("https");
    let rules = elb
        .describe_rules()
        .listener_arn(https.listener_arn().expect("arn"))
        .send()
        .await
        .expect("rules");
    rules
        .rules()
        .iter()
        .find(|r| r.is_default() != Some(true))
        .expect("grafana rule")
        .clone()
}
