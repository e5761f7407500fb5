//! End-to-end tests: the real `provisioner` binary against moto's server
//! (started per test on a free loopback port), verified with the AWS SDK.

mod support;

use std::collections::BTreeMap;

use aws_sdk_ec2::types::Filter;
use serde_json::Value;
use support::*;

/// Resources of staging with one dashboard and one rules file.
const STAGING_TOTAL: u64 = 57;
/// ECR repositories: shared by all environments, kept by `down`.
const SHARED: u64 = 3;
/// Resources ranked before `db-instance/main` (created before the injected failure).
const BEFORE_DB: u64 = 28;

fn kinds(v: &Value) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for c in v["changes"].as_array().into_iter().flatten() {
        let key = c["key"].as_str().unwrap_or_default();
        let kind = key.split('/').next().unwrap_or_default().to_string();
        *m.entry(kind).or_default() += 1;
    }
    m
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn env_filter(env: &str) -> Filter {
    Filter::builder().name("tag:env").values(env).build()
}

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

/// Every resource of `up staging`, with the security settings of the seeds.
async fn verify_staging(moto: &Moto) {
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
    assert_eq!(by_name.len(), 4);
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
        vec![(8000, id("tasks")), (8100, id("tasks"))]
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
            (6379, id("redis"))
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
            "edge-suite/staging/jwt-secret",
            "edge-suite/staging/redis-auth-token"
        ]
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
    assert_eq!(tgs.target_groups().len(), 2);
    let mut tg_by_color = BTreeMap::new();
    for t in tgs.target_groups() {
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
    assert_eq!(env.get("RATE_LIMIT_POLICY"), Some(&"redis"));
    assert_eq!(env.get("REDIS_SSL"), Some(&"true"));
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
    let cw = aws_sdk_cloudwatch::Client::new(&conf);
    let alarms = cw
        .describe_alarms()
        .alarm_name_prefix("edge-suite-staging-")
        .send()
        .await
        .expect("alarms");
    assert_eq!(alarms.metric_alarms().len(), 4);
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
    assert_eq!(groups.log_groups().len(), 2);
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
        3
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
}

#[test]
fn plan_on_an_empty_account_lists_everything() {
    let scratch = Scratch::new("plan");
    let moto = Moto::start(&scratch.dir);
    let grafana = FakeGrafana::start();
    let genv_owned = grafana.env();
    let genv: Vec<(&str, &str)> = genv_owned.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let run = provisioner(
        &moto,
        &scratch,
        &["plan", "staging", "--output", "json"],
        &genv,
    )
    .ok();
    let v = run.json();
    assert_eq!(summary(&v), (STAGING_TOTAL, 0, 0, 0, 0));
    assert!(changes(&v).values().all(|a| a == "create"));
    let k = kinds(&v);
    assert_eq!(k["subnet"], 6);
    assert_eq!(k["nat-gateway"], 1);
    assert_eq!(k["security-group"], 4);
    assert_eq!(k["listener"], 3);
    assert_eq!(k["alarm"], 4);
    assert_eq!(k["grafana-dashboard"], 1);

    let text = provisioner(
        &moto,
        &scratch,
        &["plan", "staging", "--detailed-exitcode"],
        &genv,
    );
    assert_eq!(text.code, 2, "changes pending => 2\n{}", text.stderr);
    assert!(text.stdout.contains("  +   vpc/main"), "{}", text.stdout);
    assert!(
        text.stdout
            .contains(&format!("{STAGING_TOTAL} to create, 0 to update")),
        "{}",
        text.stdout
    );

    // Production: three AZs, a NAT per AZ, deletion protection.
    let prod = provisioner(
        &moto,
        &scratch,
        &["plan", "production", "--output", "json"],
        &genv,
    )
    .ok()
    .json();
    let k = kinds(&prod);
    assert_eq!((k["subnet"], k["nat-gateway"], k["route-table"]), (9, 3, 5));
    let db = prod["changes"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["key"] == "db-instance/main"))
        .expect("db change");
    let field = |n: &str| {
        db["fields"]
            .as_array()
            .and_then(|f| f.iter().find(|x| x["field"] == n))
            .map(|x| x["to"].clone())
    };
    assert_eq!(field("multi_az"), Some(Value::Bool(true)));
    assert_eq!(field("deletion_protection"), Some(Value::Bool(true)));

    // Nothing was created, and Grafana was only read.
    let conf = rt().block_on(sdk(&moto));
    let vpcs = rt().block_on(
        aws_sdk_ec2::Client::new(&conf)
            .describe_vpcs()
            .filters(env_filter("staging"))
            .send(),
    );
    assert!(vpcs.expect("vpcs").vpcs().is_empty());
    let st = grafana.state.lock().expect("state");
    assert!(st.requests.iter().all(|r| r.method == "GET"));
    assert!(st.dashboards.is_empty());

    // A broken env file is an error (exit 1), even with --detailed-exitcode.
    scratch.edit_env("staging", "[network]", "[network]\nbogus = 1");
    let bad = provisioner(
        &moto,
        &scratch,
        &["plan", "staging", "--detailed-exitcode"],
        &genv,
    );
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("bogus"), "{}", bad.stderr);
}

#[test]
fn up_is_complete_idempotent_follows_changes_deploys_and_downs() {
    let scratch = Scratch::new("lifecycle");
    let moto = Moto::start(&scratch.dir);
    let grafana = FakeGrafana::start();
    let genv_owned = grafana.env();
    let genv: Vec<(&str, &str)> = genv_owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = |args: &[&str]| provisioner(&moto, &scratch, args, &genv);

    // up creates everything, with the settings of the seeds.
    let up = run(&["up", "staging", "--output", "json"]).ok().json();
    assert_eq!(summary(&up), (STAGING_TOTAL, 0, 0, 0, 0));
    rt().block_on(verify_staging(&moto));
    {
        let st = grafana.state.lock().expect("state");
        let d = st
            .dashboards
            .get("gw-overview")
            .expect("dashboard uploaded");
        assert!(
            d["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|x| x == "provisioner:edge-suite-staging"))
        );
        assert!(
            st.requests
                .iter()
                .all(|r| r.authorization == format!("Bearer {GRAFANA_KEY}"))
        );
    }

    // A second up changes nothing; plan agrees (exit 0 with --detailed-exitcode).
    let again = run(&["up", "staging", "--output", "json"]).ok().json();
    assert_eq!(summary(&again), (0, 0, 0, 0, STAGING_TOTAL));
    assert_eq!(run(&["plan", "staging", "--detailed-exitcode"]).code, 0);

    // A changed env file produces exactly the expected changes.
    scratch.edit_env("staging", "desired_count = 2", "desired_count = 3");
    scratch.edit_env(
        "staging",
        "http_5xx_per_minute = 25.0",
        "http_5xx_per_minute = 40.0",
    );
    scratch.edit_env(
        "staging",
        "log_retention_days = 30",
        "log_retention_days = 60",
    );
    scratch.edit_env(
        "staging",
        r#"instance_class = "db.t4g.medium""#,
        r#"instance_class = "db.t4g.large""#,
    );
    std::fs::write(
        scratch.dir.join("dash/grafana/redis.json"),
        r#"{"uid": "redis", "title": "Redis", "panels": []}"#,
    )
    .expect("second dashboard");
    let plan = run(&["plan", "staging", "--output", "json"]).ok().json();
    let expected: BTreeMap<String, String> = [
        ("log-group/gateway", "update"),
        ("db-instance/main", "update"),
        ("ecs-service/gateway", "update"),
        ("alarm/alb-5xx", "update"),
        ("alarm/target-5xx", "update"),
        ("grafana-dashboard/redis", "create"),
    ]
    .into_iter()
    .map(|(k, a)| (k.to_string(), a.to_string()))
    .collect();
    assert_eq!(changes(&plan), expected);
    assert_eq!(
        changed_fields(&plan, "ecs-service/gateway"),
        vec!["desired_count"]
    );
    assert_eq!(
        changed_fields(&plan, "db-instance/main"),
        vec!["instance_class"]
    );
    assert_eq!(changed_fields(&plan, "alarm/alb-5xx"), vec!["threshold"]);
    assert_eq!(
        changed_fields(&plan, "log-group/gateway"),
        vec!["retention_days"]
    );
    let applied = run(&["up", "staging", "--output", "json"]).ok().json();
    assert_eq!(changes(&applied), expected);
    assert_eq!(run(&["plan", "staging", "--detailed-exitcode"]).code, 0);
    rt().block_on(async {
        let conf = sdk(&moto).await;
        let svc = aws_sdk_ecs::Client::new(&conf)
            .describe_services()
            .cluster("edge-suite-staging-cluster")
            .services("gateway")
            .send()
            .await
            .expect("svc");
        assert_eq!(svc.services()[0].desired_count(), 3);
        let dbs = aws_sdk_rds::Client::new(&conf)
            .describe_db_instances()
            .send()
            .await
            .expect("dbs");
        assert_eq!(
            dbs.db_instances()[0].db_instance_class(),
            Some("db.t4g.large")
        );
    });

    // deploy rolls a new image blue-green: production listener moves to green.
    let dep = run(&[
        "deploy",
        "staging",
        "--image",
        "registry/gateway:v2",
        "--health-source",
        "task-set",
        "--output",
        "json",
    ])
    .ok()
    .json();
    assert_eq!(dep["result"], "deployed");
    let (live_after_deploy, td_after_deploy) = rt().block_on(async {
        let conf = sdk(&moto).await;
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(&conf);
        let lb = elb.describe_load_balancers().send().await.expect("lbs");
        let ls = elb
            .describe_listeners()
            .load_balancer_arn(
                lb.load_balancers()[0]
                    .load_balancer_arn()
                    .unwrap_or_default(),
            )
            .send()
            .await
            .expect("listeners");
        let https = ls
            .listeners()
            .iter()
            .find(|l| l.port() == Some(443))
            .expect("https");
        let live = https.default_actions()[0]
            .target_group_arn()
            .unwrap_or_default()
            .to_string();
        assert!(live.contains("edge-suite-staging-green"), "{live}");
        let ecs = aws_sdk_ecs::Client::new(&conf);
        let svc = ecs
            .describe_services()
            .cluster("edge-suite-staging-cluster")
            .services("gateway")
            .send()
            .await
            .expect("svc");
        let td_arn = svc.services()[0]
            .task_definition()
            .unwrap_or_default()
            .to_string();
        let td = ecs
            .describe_task_definition()
            .task_definition(&td_arn)
            .send()
            .await
            .expect("td");
        let image = td
            .task_definition()
            .and_then(|t| t.container_definitions()[0].image())
            .unwrap_or_default();
        assert_eq!(image, "registry/gateway:v2");
        let sets = ecs
            .describe_task_sets()
            .cluster("edge-suite-staging-cluster")
            .service("gateway")
            .send()
            .await
            .expect("sets");
        assert_eq!(sets.task_sets().len(), 1, "old task set removed");
        (live, td_arn)
    });
    // up respects what deploy did.
    assert_eq!(run(&["plan", "staging", "--detailed-exitcode"]).code, 0);

    // A task set left over by an interrupted deploy is cleaned up by the next one.
    rt().block_on(async {
        let conf = sdk(&moto).await;
        let ecs = aws_sdk_ecs::Client::new(&conf);
        let sets = ecs
            .describe_task_sets()
            .cluster("edge-suite-staging-cluster")
            .service("gateway")
            .send()
            .await
            .expect("sets");
        let primary = &sets.task_sets()[0];
        ecs.create_task_set()
            .cluster("edge-suite-staging-cluster")
            .service("gateway")
            .task_definition(primary.task_definition().unwrap_or_default())
            .launch_type(aws_sdk_ecs::types::LaunchType::Fargate)
            .send()
            .await
            .expect("stray task set");
    });

    // The 5xx alarm fails the gate: automatic rollback, nothing moves.
    rt().block_on(async {
        let conf = sdk(&moto).await;
        aws_sdk_cloudwatch::Client::new(&conf)
            .set_alarm_state()
            .alarm_name("edge-suite-staging-target-5xx")
            .state_value(aws_sdk_cloudwatch::types::StateValue::Alarm)
            .state_reason("test: 5xx spike")
            .send()
            .await
            .expect("set alarm state");
    });
    let bad = run(&[
        "deploy",
        "staging",
        "--image",
        "registry/gateway:v3",
        "--health-source",
        "task-set",
        "--output",
        "json",
    ]);
    assert_eq!(bad.code, 3, "rolled back => exit 3\n{}", bad.stderr);
    let report = bad.json();
    assert_eq!(report["result"], "rolled-back");
    assert!(
        report["reason"]
            .as_str()
            .is_some_and(|r| r.contains("target-5xx"))
    );
    rt().block_on(async {
        let conf = sdk(&moto).await;
        let ecs = aws_sdk_ecs::Client::new(&conf);
        let svc = ecs
            .describe_services()
            .cluster("edge-suite-staging-cluster")
            .services("gateway")
            .send()
            .await
            .expect("svc");
        assert_eq!(
            svc.services()[0].task_definition(),
            Some(td_after_deploy.as_str())
        );
        let active = ecs
            .list_task_definitions()
            .family_prefix("edge-suite-staging-gateway")
            .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
            .send()
            .await
            .expect("tds");
        assert!(
            active
                .task_definition_arns()
                .iter()
                .all(|a| !a.ends_with(":3")),
            "failed revision deregistered"
        );
        let sets = ecs
            .describe_task_sets()
            .cluster("edge-suite-staging-cluster")
            .service("gateway")
            .send()
            .await
            .expect("sets");
        assert_eq!(
            sets.task_sets().len(),
            1,
            "only the primary task set is left"
        );
        assert_eq!(sets.task_sets()[0].status(), Some("PRIMARY"));
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(&conf);
        let lb = elb.describe_load_balancers().send().await.expect("lbs");
        let ls = elb
            .describe_listeners()
            .load_balancer_arn(
                lb.load_balancers()[0]
                    .load_balancer_arn()
                    .unwrap_or_default(),
            )
            .send()
            .await
            .expect("listeners");
        let https = ls
            .listeners()
            .iter()
            .find(|l| l.port() == Some(443))
            .expect("https");
        assert_eq!(
            https.default_actions()[0].target_group_arn(),
            Some(live_after_deploy.as_str())
        );
    });

    // status shows every resource and the URLs.
    let status = run(&["status", "staging", "--output", "json"]).ok().json();
    assert_eq!(
        status["resources"].as_array().map(Vec::len),
        Some(STAGING_TOTAL as usize + 1)
    );
    assert!(
        status["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|r| r["sync"] == "in-sync")
    );
    assert!(
        status["urls"]["alb"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://edge-suite-staging-alb"))
    );
    assert_eq!(
        status["urls"]["grafana"].as_str(),
        Some(grafana.url.as_str())
    );

    // A deploy interrupted after moving the HTTPS listener but before switching
    // the primary task set: the next deploy finishes the switch first.
    let blue_tg = rt().block_on(async {
        let conf = sdk(&moto).await;
        aws_sdk_cloudwatch::Client::new(&conf)
            .set_alarm_state()
            .alarm_name("edge-suite-staging-target-5xx")
            .state_value(aws_sdk_cloudwatch::types::StateValue::Ok)
            .state_reason("test: recovered")
            .send()
            .await
            .expect("reset alarm");
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(&conf);
        let tgs = elb.describe_target_groups().send().await.expect("tgs");
        let blue = tgs
            .target_groups()
            .iter()
            .find(|t| t.target_group_name() == Some("edge-suite-staging-blue"))
            .and_then(|t| t.target_group_arn())
            .expect("blue")
            .to_string();
        let ecs = aws_sdk_ecs::Client::new(&conf);
        ecs.create_task_set()
            .cluster("edge-suite-staging-cluster")
            .service("gateway")
            .task_definition(&td_after_deploy)
            .launch_type(aws_sdk_ecs::types::LaunchType::Fargate)
            .load_balancers(
                aws_sdk_ecs::types::LoadBalancer::builder()
                    .target_group_arn(&blue)
                    .container_name("gateway")
                    .container_port(8000)
                    .build(),
            )
            .send()
            .await
            .expect("half-deployed task set");
        let lb = elb.describe_load_balancers().send().await.expect("lbs");
        let ls = elb
            .describe_listeners()
            .load_balancer_arn(
                lb.load_balancers()[0]
                    .load_balancer_arn()
                    .unwrap_or_default(),
            )
            .send()
            .await
            .expect("listeners");
        let https = ls
            .listeners()
            .iter()
            .find(|l| l.port() == Some(443))
            .expect("https");
        elb.modify_listener()
            .listener_arn(https.listener_arn().unwrap_or_default())
            .default_actions(
                aws_sdk_elasticloadbalancingv2::types::Action::builder()
                    .r#type(aws_sdk_elasticloadbalancingv2::types::ActionTypeEnum::Forward)
                    .target_group_arn(&blue)
                    .build(),
            )
            .send()
            .await
            .expect("move https");
        blue
    });
    let resumed = run(&[
        "deploy",
        "staging",
        "--image",
        "registry/gateway:v4",
        "--health-source",
        "task-set",
        "--output",
        "json",
    ])
    .ok()
    .json();
    assert_eq!(resumed["result"], "deployed");
    assert_eq!(
        resumed["previous_task_definition"].as_str(),
        Some(td_after_deploy.as_str())
    );
    assert_ne!(
        resumed["live_target_group"].as_str(),
        Some(blue_tg.as_str())
    );
    rt().block_on(async {
        let conf = sdk(&moto).await;
        let sets = aws_sdk_ecs::Client::new(&conf)
            .describe_task_sets()
            .cluster("edge-suite-staging-cluster")
            .service("gateway")
            .send()
            .await
            .expect("sets");
        assert_eq!(sets.task_sets().len(), 1);
        assert_eq!(sets.task_sets()[0].status(), Some("PRIMARY"));
    });
    assert_eq!(run(&["plan", "staging", "--detailed-exitcode"]).code, 0);

    // down needs confirmation, then removes everything it made.
    let refused = run(&["down", "staging"]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    assert_eq!(
        run(&["plan", "staging", "--detailed-exitcode"]).code,
        0,
        "nothing deleted"
    );
    let down = run(&["down", "staging", "--yes", "--output", "json"])
        .ok()
        .json();
    assert_eq!(summary(&down), (0, 0, 0, STAGING_TOTAL + 1 - SHARED, 0));
    assert!(grafana.state.lock().expect("state").dashboards.is_empty());
    rt().block_on(assert_nothing_tagged_left(&moto));
    // The image repositories are the project's, not the environment's.
    rt().block_on(async {
        let conf = sdk(&moto).await;
        let repos = aws_sdk_ecr::Client::new(&conf)
            .describe_repositories()
            .send()
            .await
            .expect("repos");
        assert_eq!(repos.repositories().len() as u64, SHARED);
    });
}

/// The tagging API must return nothing of staging except what moto keeps in
/// a terminal state (documented emulator gaps).
async fn assert_nothing_tagged_left(moto: &Moto) {
    let conf = sdk(moto).await;
    let tagging = aws_sdk_resourcegroupstagging::Client::new(&conf);
    let out = tagging
        .get_resources()
        .tag_filters(
            aws_sdk_resourcegroupstagging::types::TagFilter::builder()
                .key("env")
                .values("staging")
                .build(),
        )
        .send()
        .await
        .expect("get_resources");
    let ecs = aws_sdk_ecs::Client::new(&conf);
    let ec2 = aws_sdk_ec2::Client::new(&conf);
    let ec = aws_sdk_elasticache::Client::new(&conf);
    for m in out.resource_tag_mapping_list() {
        let arn = m.resource_arn().unwrap_or_default();
        let terminal = if arn.contains(":natgateway/") {
            let id = arn.rsplit('/').next().unwrap_or_default();
            let n = ec2
                .describe_nat_gateways()
                .nat_gateway_ids(id)
                .send()
                .await
                .expect("nat");
            n.nat_gateways()
                .iter()
                .all(|g| g.state().map(|s| s.as_str()) == Some("deleted"))
        } else if arn.contains(":cluster/") {
            let c = ecs
                .describe_clusters()
                .clusters(arn)
                .send()
                .await
                .expect("cluster");
            c.clusters().iter().all(|c| c.status() == Some("INACTIVE"))
        } else if arn.contains(":service/") {
            let c = ecs
                .describe_services()
                .cluster("edge-suite-staging-cluster")
                .services(arn)
                .send()
                .await
                .expect("svc");
            c.services().iter().all(|s| s.status() == Some("INACTIVE"))
        } else if arn.contains(":task/") {
            let t = ecs
                .describe_tasks()
                .cluster("edge-suite-staging-cluster")
                .tasks(arn)
                .send()
                .await
                .expect("task");
            t.tasks().iter().all(|t| t.last_status() == Some("STOPPED"))
        } else if arn.contains(":replicationgroup:") {
            // moto gap: DeleteReplicationGroup leaves the group in `deleting`.
            let g = ec.describe_replication_groups().send().await.expect("rgs");
            g.replication_groups()
                .iter()
                .all(|g| g.status() == Some("deleting"))
        } else {
            // moto gap: DeleteCacheSubnetGroup is not implemented.
            arn.contains(":subnetgroup:")
        };
        assert!(terminal, "left behind after down: {arn}");
    }
}

#[test]
fn an_interrupted_up_is_resumed_by_the_next_up() {
    let scratch = Scratch::new("resume");
    let moto = Moto::start(&scratch.dir);
    // No Grafana key: dashboards are not managed, one resource fewer.
    let total = STAGING_TOTAL - 1;

    // The PagerDuty integration URL lives in a secret made outside the tool.
    let pagerduty = "https://events.pagerduty.com/integration/0123456789abcdef/enqueue";
    rt().block_on(async {
        let conf = sdk(&moto).await;
        aws_sdk_secretsmanager::Client::new(&conf)
            .create_secret()
            .name("edge-suite/staging/pagerduty-integration-url")
            .secret_string(pagerduty)
            .send()
            .await
            .expect("pagerduty secret");
    });

    let failed = provisioner(
        &moto,
        &scratch,
        &["up", "staging"],
        &[("PROVISIONER_FAIL_BEFORE", "db-instance/main")],
    );
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    assert!(
        failed
            .stderr
            .contains("injected failure before db-instance/main"),
        "{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("run `provisioner up staging` again"),
        "{}",
        failed.stderr
    );

    let plan = provisioner(
        &moto,
        &scratch,
        &["plan", "staging", "--output", "json"],
        &[],
    )
    .ok()
    .json();
    assert_eq!(summary(&plan), (total - BEFORE_DB, 0, 0, 0, BEFORE_DB));
    assert!(!changes(&plan).contains_key("grafana-dashboard/gw-overview"));

    let resumed = provisioner(&moto, &scratch, &["up", "staging", "--output", "json"], &[])
        .ok()
        .json();
    assert_eq!(summary(&resumed), (total - BEFORE_DB, 0, 0, 0, BEFORE_DB));
    assert_eq!(
        provisioner(
            &moto,
            &scratch,
            &["plan", "staging", "--detailed-exitcode"],
            &[]
        )
        .code,
        0
    );

    // An immutable change is planned as a replacement and refused by up.
    scratch.edit_env(
        "staging",
        r#"cidr = "10.20.0.0/16""#,
        r#"cidr = "10.21.0.0/16""#,
    );
    let plan = provisioner(
        &moto,
        &scratch,
        &["plan", "staging", "--output", "json"],
        &[],
    )
    .ok()
    .json();
    assert_eq!(
        changes(&plan).get("vpc/main").map(String::as_str),
        Some("replace")
    );
    let text = provisioner(&moto, &scratch, &["plan", "staging"], &[]).ok();
    assert!(text.stdout.contains("-/+ vpc/main"), "{}", text.stdout);
    let refused = provisioner(&moto, &scratch, &["up", "staging"], &[]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("needs replacement"),
        "{}",
        refused.stderr
    );
    scratch.edit_env(
        "staging",
        r#"cidr = "10.21.0.0/16""#,
        r#"cidr = "10.20.0.0/16""#,
    );

    // Found again by tags: nothing duplicated.
    rt().block_on(async {
        let conf = sdk(&moto).await;
        let ec2 = aws_sdk_ec2::Client::new(&conf);
        let vpcs = ec2
            .describe_vpcs()
            .filters(env_filter("staging"))
            .send()
            .await
            .expect("vpcs");
        assert_eq!(vpcs.vpcs().len(), 1);
        let subnets = ec2
            .describe_subnets()
            .filters(env_filter("staging"))
            .send()
            .await
            .expect("subnets");
        assert_eq!(subnets.subnets().len(), 6);
        let secrets = aws_sdk_secretsmanager::Client::new(&conf)
            .list_secrets()
            .send()
            .await
            .expect("secrets");
        assert_eq!(
            secrets.secret_list().len(),
            3 + 1,
            "ours plus the PagerDuty one"
        );
        let sns = aws_sdk_sns::Client::new(&conf);
        let topics = sns.list_topics().send().await.expect("topics");
        let subs = sns
            .list_subscriptions_by_topic()
            .topic_arn(topics.topics()[0].topic_arn().unwrap_or_default())
            .send()
            .await
            .expect("subscriptions");
        assert_eq!(subs.subscriptions().len(), 1);
        assert_eq!(subs.subscriptions()[0].protocol(), Some("https"));
        assert_eq!(subs.subscriptions()[0].endpoint(), Some(pagerduty));
    });
}

#[test]
fn production_is_three_az_multi_az_and_down_keeps_a_final_snapshot() {
    let scratch = Scratch::new("production");
    let moto = Moto::start(&scratch.dir);
    let up = provisioner(
        &moto,
        &scratch,
        &["up", "production", "--output", "json"],
        &[],
    )
    .ok()
    .json();
    let k = kinds(&up);
    assert_eq!((k["subnet"], k["nat-gateway"], k["route-table"]), (9, 3, 5));

    rt().block_on(async {
        let conf = sdk(&moto).await;
        let ec2 = aws_sdk_ec2::Client::new(&conf);
        let nats = ec2
            .describe_nat_gateways()
            .filter(env_filter("production"))
            .send()
            .await
            .expect("nats");
        let mut nat_subnets: Vec<&str> = nats
            .nat_gateways()
            .iter()
            .filter_map(|n| n.subnet_id())
            .collect();
        nat_subnets.sort();
        nat_subnets.dedup();
        assert_eq!(nat_subnets.len(), 3, "one NAT per AZ");
        // Each private route table uses its own NAT gateway.
        let rts = ec2
            .describe_route_tables()
            .filters(env_filter("production"))
            .send()
            .await
            .expect("route tables");
        let mut private_nats: Vec<String> = rts
            .route_tables()
            .iter()
            .flat_map(|rt| rt.routes())
            .filter_map(|r| r.nat_gateway_id().map(str::to_string))
            .collect();
        private_nats.sort();
        private_nats.dedup();
        assert_eq!(private_nats.len(), 3);

        let rds = aws_sdk_rds::Client::new(&conf);
        let db = rds.describe_db_instances().send().await.expect("dbs");
        let db = &db.db_instances()[0];
        assert_eq!(db.multi_az(), Some(true));
        assert_eq!(db.storage_encrypted(), Some(true));
        assert_eq!(db.deletion_protection(), Some(true));
        let ec = aws_sdk_elasticache::Client::new(&conf);
        let rg = ec.describe_replication_groups().send().await.expect("rgs");
        assert_eq!(
            rg.replication_groups()[0].multi_az(),
            Some(&aws_sdk_elasticache::types::MultiAzStatus::Enabled)
        );
        let svc = aws_sdk_ecs::Client::new(&conf)
            .describe_services()
            .cluster("edge-suite-production-cluster")
            .services("gateway")
            .send()
            .await
            .expect("svc");
        assert_eq!(svc.services()[0].desired_count(), 3);
    });

    // Production is not disposable: down refuses to lift the deletion
    // protection itself, before deleting anything.
    let refused = provisioner(
        &moto,
        &scratch,
        &["down", "production", "--yes", "--output", "json"],
        &[],
    );
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("has deletion protection"),
        "{}",
        refused.stderr
    );
    let unchanged = provisioner(
        &moto,
        &scratch,
        &["plan", "production", "--output", "json"],
        &[],
    )
    .ok()
    .json();
    assert_eq!(summary(&unchanged).0, 0, "nothing was deleted");

    // The operator lifts it in the env file; down then keeps a final
    // snapshot of the production database.
    scratch.edit_env(
        "production",
        "deletion_protection = true",
        "deletion_protection = false",
    );
    provisioner(&moto, &scratch, &["up", "production"], &[]).ok();
    let down = provisioner(
        &moto,
        &scratch,
        &["down", "production", "--yes", "--output", "json"],
        &[],
    )
    .ok()
    .json();
    assert_eq!(summary(&down).3, summary(&up).0 - SHARED);
    rt().block_on(async {
        let conf = sdk(&moto).await;
        let rds = aws_sdk_rds::Client::new(&conf);
        assert!(
            rds.describe_db_instances()
                .send()
                .await
                .expect("dbs")
                .db_instances()
                .is_empty()
        );
        let snaps = rds.describe_db_snapshots().send().await.expect("snapshots");
        assert!(
            snaps.db_snapshots().iter().any(|s| s
                .db_snapshot_identifier()
                .is_some_and(|i| i.starts_with("edge-suite-production-db-final-"))),
            "final snapshot kept"
        );
        // Secrets keep their recovery window (a disposable env deletes at once).
        let sm = aws_sdk_secretsmanager::Client::new(&conf);
        for name in ["jwt-secret", "db-password", "redis-auth-token"] {
            let s = sm
                .describe_secret()
                .secret_id(format!("edge-suite/production/{name}"))
                .send()
                .await
                .expect("secret still restorable");
            assert!(s.deleted_date().is_some(), "{name} scheduled for deletion");
        }
    });
}
