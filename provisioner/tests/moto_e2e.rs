//! End-to-end tests: the real `provisioner` binary against moto's server
//! (started per test on a free loopback port), verified with the AWS SDK.

mod support;
#[path = "moto_e2e/verify.rs"]
mod verify;

use std::collections::BTreeMap;

use aws_sdk_ec2::types::Filter;
use serde_json::Value;
use support::*;
use verify::verify_staging;

/// Resources of staging with one dashboard and one rules file.
const STAGING_TOTAL: u64 = 81;
/// ECR repositories: shared by all environments, kept by `down`.
const SHARED: u64 = 3;
/// Resources ranked before `db-instance/main` (created before the injected failure).
const BEFORE_DB: u64 = 32;

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

fn topics_arn(t: &aws_sdk_sns::operation::list_topics::ListTopicsOutput) -> String {
    t.topics()[0].topic_arn().expect("topic arn").to_string()
}

fn env_filter(env: &str) -> Filter {
    Filter::builder().name("tag:env").values(env).build()
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
    assert_eq!(k["security-group"], 5);
    assert_eq!(k["grafana-service"], 1);
    assert_eq!(k["listener-rule"], 1);
    assert_eq!(k["listener"], 3);
    assert_eq!(k["alarm"], 15);
    assert_eq!(k["web-acl"], 1);
    assert_eq!(k["amp-alertmanager"], 1);
    assert_eq!(k["grafana-dashboard"], 1);

    let text = provisioner(
        &moto,
        &scratch,
        &["plan", "staging", "--detailed-exitcode"],
        &genv,
    );
    assert_eq!(text.code, 2, "changes pending => 2\n{}", text.stderr);

    // `up` without a terminal and without --yes shows the plan and refuses.
    let refused = provisioner(&moto, &scratch, &["up", "staging"], &genv);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("Plan for staging") && refused.stderr.contains("+   vpc/main"),
        "{}",
        refused.stderr
    );
    assert!(
        refused
            .stderr
            .contains("refusing to apply without confirmation")
            && refused.stderr.contains("--yes"),
        "{}",
        refused.stderr
    );
    let still = provisioner(
        &moto,
        &scratch,
        &["plan", "staging", "--output", "json"],
        &genv,
    )
    .ok()
    .json();
    assert_eq!(
        summary(&still),
        (STAGING_TOTAL, 0, 0, 0, 0),
        "nothing applied"
    );
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

// dup: each test spells out its own setup and checks (reads alone when it fails).
#[test]
fn up_is_complete_idempotent_follows_changes_deploys_and_downs() {
    let scratch = Scratch::new("lifecycle");
    let moto = Moto::start(&scratch.dir);
    let grafana = FakeGrafana::start();
    let genv_owned = grafana.env();
    let genv: Vec<(&str, &str)> = genv_owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = |args: &[&str]| provisioner(&moto, &scratch, args, &genv);

    // up creates everything, with the settings of the seeds.
    let up = run(&["up", "staging", "--yes", "--output", "json"]).ok();
    // The AMP Alertmanager definition routes to the SNS topic. moto gained
    // the API in 5.2.6; without it (older moto) `up` says so in one line and
    // goes on.
    let notes: Vec<&str> = up
        .stderr
        .lines()
        .filter(|l| l.contains("does not serve aps:CreateAlertManagerDefinition"))
        .collect();
    rt().block_on(async {
        let conf = sdk(&moto).await;
        let amp = aws_sdk_amp::Client::new(&conf);
        let ws = amp.list_workspaces().send().await.expect("workspaces");
        let def = amp
            .describe_alert_manager_definition()
            .workspace_id(ws.workspaces()[0].workspace_id())
            .send()
            .await;
        match def {
            Ok(d) => {
                assert!(notes.is_empty(), "{}", up.stderr);
                let data = d.alert_manager_definition().expect("definition").data();
                let text = String::from_utf8_lossy(data.as_ref()).to_string();
                let topic = aws_sdk_sns::Client::new(&conf)
                    .list_topics()
                    .send()
                    .await
                    .expect("topics");
                let arn = topics_arn(&topic);
                assert_eq!(
                    text,
                    provisioner::alertmanager::definition(&arn, REGION),
                    "the rendered definition, for this topic"
                );
            }
            Err(_) => {
                assert_eq!(notes.len(), 1, "{}", up.stderr);
                assert!(
                    notes[0].starts_with("note: amp-alertmanager/main:"),
                    "{}",
                    notes[0]
                );
            }
        }
    });
    let up = up.json();
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
    let again = run(&["up", "staging", "--yes", "--output", "json"])
        .ok()
        .json();
    assert_eq!(summary(&again), (0, 0, 0, 0, STAGING_TOTAL));
    // Nothing to change: nothing to confirm, so no --yes is needed.
    run(&["up", "staging"]).ok();
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
        "rate_limit_per_5min = 2000",
        "rate_limit_per_5min = 3000",
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
        ("log-group/grafana", "update"),
        ("db-instance/main", "update"),
        ("ecs-service/gateway", "update"),
        ("alarm/alb-5xx", "update"),
        ("alarm/target-5xx", "update"),
        ("web-acl/main", "update"),
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
    assert_eq!(changed_fields(&plan, "web-acl/main"), vec!["rate_limit"]);
    assert_eq!(
        changed_fields(&plan, "log-group/gateway"),
        vec!["retention_days"]
    );
    let applied = run(&["up", "staging", "--yes", "--output", "json"])
        .ok()
        .json();
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
        // The rate rule changed in place (UpdateWebACL with its lock token).
        let waf = aws_sdk_wafv2::Client::new(&conf);
        let s = waf
            .list_web_acls()
            .scope(aws_sdk_wafv2::types::Scope::Regional)
            .send()
            .await
            .expect("acls");
        let acl = waf
            .get_web_acl()
            .name("edge-suite-staging-waf")
            .id(s.web_acls()[0].id().expect("id"))
            .scope(aws_sdk_wafv2::types::Scope::Regional)
            .send()
            .await
            .expect("acl");
        let limits: Vec<i64> = acl
            .web_acl()
            .expect("acl")
            .rules()
            .iter()
            .filter_map(|r| r.statement()?.rate_based_statement().map(|r| r.limit()))
            .collect();
        assert_eq!(limits, [3000]);
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

    // A broken kong.yml fails plan, naming the file and the line.
    let kong = scratch.dir.join("envs/staging/kong.yml");
    let kong_text = std::fs::read_to_string(&kong).expect("kong.yml");
    let line = kong_text
        .lines()
        .position(|l| l.contains("minute: 300"))
        .expect("login limit")
        + 1;
    std::fs::write(&kong, kong_text.replacen("minute: 300", "minute: lots", 1)).expect("write");
    let broken = run(&["plan", "staging"]);
    assert_eq!(broken.code, 1, "{}", broken.stderr);
    assert!(
        broken
            .stderr
            .contains(&format!("envs/staging/kong.yml:{line}:")),
        "{}",
        broken.stderr
    );
    // A configuration change is deploy's (like an image): plan notes it,
    // deploy rolls it out blue-green in a new revision.
    std::fs::write(&kong, kong_text.replacen("minute: 300", "minute: 200", 1)).expect("write");
    let noted = run(&["plan", "staging", "--detailed-exitcode"]);
    assert_eq!(noted.code, 0, "{}", noted.stderr);
    assert!(
        noted.stderr.contains("differs from the deployed one"),
        "{}",
        noted.stderr
    );
    let dep = run(&[
        "deploy",
        "staging",
        "--health-source",
        "task-set",
        "--output",
        "json",
    ])
    .ok()
    .json();
    assert_eq!(dep["result"], "deployed");
    assert_eq!(dep["image"], "registry/gateway:v4", "the image stays");
    rt().block_on(async {
        let conf = sdk(&moto).await;
        let ecs = aws_sdk_ecs::Client::new(&conf);
        let td = ecs
            .describe_task_definition()
            .task_definition(dep["task_definition"].as_str().expect("td arn"))
            .send()
            .await
            .expect("td");
        let gw = &td.task_definition().expect("td").container_definitions()[0];
        let config = gw
            .environment()
            .iter()
            .find(|kv| kv.name() == Some("GATEWAY_CONFIG_STRING"))
            .and_then(|kv| kv.value())
            .expect("config");
        assert!(config.contains("minute: 200"), "the new configuration");
    });
    let quiet = run(&["plan", "staging", "--detailed-exitcode"]);
    assert_eq!(quiet.code, 0);
    assert!(!quiet.stderr.contains("differs from the deployed one"));

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
    // Not in the tagging API: WAF web ACLs, by their own list call.
    let acls = aws_sdk_wafv2::Client::new(&conf)
        .list_web_acls()
        .scope(aws_sdk_wafv2::types::Scope::Regional)
        .send()
        .await
        .expect("web acls");
    assert!(acls.web_acls().is_empty(), "web ACL left after down");
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
        &["up", "staging", "--yes"],
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

    let resumed = provisioner(
        &moto,
        &scratch,
        &["up", "staging", "--yes", "--output", "json"],
        &[],
    )
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
    let refused = provisioner(&moto, &scratch, &["up", "staging", "--yes"], &[]);
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
            4 + 2 + 1,
            "ours (4 generated, the sidecar's 2) plus the PagerDuty one"
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
        &["up", "production", "--yes", "--output", "json"],
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
    provisioner(&moto, &scratch, &["up", "production", "--yes"], &[]).ok();
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
        for name in [
            "jwt-secret",
            "db-password",
            "redis-auth-token",
            "metrics-agent-postgres-dsn",
            "metrics-agent-redis-addr",
        ] {
            let s = sm
                .describe_secret()
                .secret_id(format!("edge-suite/production/{name}"))
                .send()
                .await
                .expect("secret still restorable");
            assert!(s.deleted_date().is_some(), "{name} scheduled for deletion");
        }
    });

    // The next `up` brings them back instead of failing on the taken names
    // (stopped right after the secrets: the rest is covered above).
    let again = provisioner(
        &moto,
        &scratch,
        &["up", "production", "--yes"],
        &[("PROVISIONER_FAIL_BEFORE", "db-subnet-group/main")],
    );
    assert!(
        again
            .stderr
            .contains("injected failure before db-subnet-group/main"),
        "{}",
        again.stderr
    );
    assert!(
        again.stderr.contains("restoring secret"),
        "{}",
        again.stderr
    );
    rt().block_on(async {
        let sm = aws_sdk_secretsmanager::Client::new(&sdk(&moto).await);
        for name in ["jwt-secret", "db-password", "redis-auth-token"] {
            let s = sm
                .describe_secret()
                .secret_id(format!("edge-suite/production/{name}"))
                .send()
                .await
                .expect("secret");
            assert!(s.deleted_date().is_none(), "{name} restored");
        }
    });
}

#[test]
fn up_after_down_adopts_or_removes_the_leftovers() {
    let scratch = Scratch::new("again");
    let moto = Moto::start(&scratch.dir);
    let run = |args: &[&str]| provisioner(&moto, &scratch, args, &[]);
    let first = run(&["up", "staging", "--yes", "--output", "json"])
        .ok()
        .json();
    let total = summary(&first).0;
    run(&["down", "staging", "--yes"]).ok();
    // moto keeps some of what `down` deleted (see docs/provisioner.md); the
    // next `up` must not trip over it.
    let again = run(&["up", "staging", "--yes", "--output", "json"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again.stderr.contains("adopted as found"),
        "the leftovers are adopted: {}",
        again.stderr
    );
    let again = again.json();
    let (create, update, ..) = summary(&again);
    assert!(create + update >= total - SHARED, "{again}");
    // The service runs the new task definition, which reaches the adopted
    // Redis group.
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
        let td = ecs
            .describe_task_definition()
            .task_definition(svc.services()[0].task_definition().expect("td"))
            .send()
            .await
            .expect("td");
        let env: BTreeMap<&str, &str> = td.task_definition().expect("td").container_definitions()
            [0]
        .environment()
        .iter()
        .filter_map(|kv| Some((kv.name()?, kv.value()?)))
        .collect();
        assert!(env.contains_key("GATEWAY_CONFIG_STRING"));
        let rg = aws_sdk_elasticache::Client::new(&conf)
            .describe_replication_groups()
            .send()
            .await
            .expect("rgs");
        assert_eq!(
            env.get("REDIS_HOST").copied(),
            rg.replication_groups()[0]
                .configuration_endpoint()
                .and_then(|e| e.address())
        );
    });
    // Never fatal: up again, and down again, still work; `down` does not
    // need a loadable kong.yml.
    run(&["up", "staging", "--yes"]).ok();
    std::fs::write(
        scratch.dir.join("envs/staging/kong.yml"),
        "services: [oops\n",
    )
    .expect("write");
    assert_eq!(
        run(&["plan", "staging"]).code,
        1,
        "a broken kong.yml fails plan"
    );
    run(&["down", "staging", "--yes"]).ok();
    rt().block_on(assert_nothing_tagged_left(&moto));
}

/// The ALB's alias record and the certificate's validation record in the
/// env file's hosted zone; both gone after `down`.
#[test]
fn route53_records_for_the_alb_and_the_certificate() {
    let scratch = Scratch::new("dns");
    let moto = Moto::start(&scratch.dir);
    let zone = "staging.edge-suite.example.com";
    let zone_id = rt().block_on(async {
        let conf = sdk(&moto).await;
        let out = aws_sdk_route53::Client::new(&conf)
            .create_hosted_zone()
            .name(zone)
            .caller_reference("e2e")
            .send()
            .await
            .expect("zone");
        out.hosted_zone()
            .expect("zone")
            .id()
            .trim_start_matches("/hostedzone/")
            .to_string()
    });
    scratch.edit_env(
        "staging",
        r#"domain = "api.staging.edge-suite.example.com""#,
        &format!("domain = \"api.staging.edge-suite.example.com\"\nhosted_zone = \"{zone}\""),
    );
    // Grafana on a host of its own in the zone.
    scratch.edit_env(
        "staging",
        "[waf]",
        "[grafana_service]\nhost = \"grafana.staging.edge-suite.example.com\"\n\n[waf]",
    );
    let run = |args: &[&str]| provisioner(&moto, &scratch, args, &[]);
    let up = run(&["up", "staging", "--yes", "--output", "json"])
        .ok()
        .json();
    let k = kinds(&up);
    assert_eq!((k["dns-record"], k["validation-record"]), (2, 1));
    let records = || {
        rt().block_on(async {
            let conf = sdk(&moto).await;
            let out = aws_sdk_route53::Client::new(&conf)
                .list_resource_record_sets()
                .hosted_zone_id(&zone_id)
                .send()
                .await
                .expect("records");
            out.resource_record_sets()
                .iter()
                .filter(|r| !matches!(r.r#type().as_str(), "SOA" | "NS"))
                .cloned()
                .collect::<Vec<_>>()
        })
    };
    let (lb_dns, lb_zone, validation) = rt().block_on(async {
        let conf = sdk(&moto).await;
        let lbs = aws_sdk_elasticloadbalancingv2::Client::new(&conf)
            .describe_load_balancers()
            .names("edge-suite-staging-alb")
            .send()
            .await
            .expect("lb");
        let lb = &lbs.load_balancers()[0];
        let acm = aws_sdk_acm::Client::new(&conf);
        let certs = acm.list_certificates().send().await.expect("certs");
        let cert = acm
            .describe_certificate()
            .certificate_arn(
                certs.certificate_summary_list()[0]
                    .certificate_arn()
                    .expect("arn"),
            )
            .send()
            .await
            .expect("cert");
        let rr = cert
            .certificate()
            .expect("cert")
            .domain_validation_options()[0]
            .resource_record()
            .expect("validation record")
            .clone();
        (
            lb.dns_name().expect("dns").to_ascii_lowercase(),
            lb.canonical_hosted_zone_id().expect("zone").to_string(),
            (rr.name().to_string(), rr.value().to_string()),
        )
    });
    let found = records();
    assert_eq!(found.len(), 3, "{found:?}");
    for name in [
        "api.staging.edge-suite.example.com.",
        "grafana.staging.edge-suite.example.com.",
    ] {
        let a = found
            .iter()
            .find(|r| r.r#type().as_str() == "A" && r.name() == name)
            .unwrap_or_else(|| panic!("alias record {name}"));
        let alias = a.alias_target().expect("an alias");
        assert_eq!(alias.dns_name().trim_end_matches('.'), lb_dns);
        assert_eq!(alias.hosted_zone_id(), lb_zone);
    }
    // Grafana's listener rule matches its host.
    rt().block_on(async {
        let rule = verify::grafana_rule(&sdk(&moto).await).await;
        assert_eq!(rule.conditions()[0].field(), Some("host-header"));
        assert_eq!(
            rule.conditions()[0].values(),
            ["grafana.staging.edge-suite.example.com"]
        );
    });
    let c = found
        .iter()
        .find(|r| r.r#type().as_str() == "CNAME")
        .expect("validation record");
    assert_eq!(c.name(), validation.0);
    assert_eq!(c.resource_records()[0].value(), validation.1);
    // Observed back as they were written: nothing to change.
    assert_eq!(run(&["plan", "staging", "--detailed-exitcode"]).code, 0);
    run(&["down", "staging", "--yes"]).ok();
    assert!(records().is_empty(), "records left after down");
    rt().block_on(assert_nothing_tagged_left(&moto));
}

/// Without an external Grafana, `up` gives the environment's own Grafana
/// (here the recording server, through `PROVISIONER_GRAFANA_URL`) the AMP
/// data source and every dashboard, as `admin` with the generated password.
#[test]
fn up_provisions_its_own_grafana_through_the_api() {
    let scratch = Scratch::new("own-grafana");
    let moto = Moto::start(&scratch.dir);
    let grafana = FakeGrafana::start();
    let genv = [("PROVISIONER_GRAFANA_URL", grafana.url.as_str())];
    let run = |args: &[&str]| provisioner(&moto, &scratch, args, &genv);
    let up = run(&["up", "staging", "--yes"]).ok();
    assert!(
        up.stderr
            .contains("AMP data source created; 1 dashboard(s) uploaded"),
        "{}",
        up.stderr
    );
    let (password, endpoint) = rt().block_on(async {
        let conf = sdk(&moto).await;
        let pw = aws_sdk_secretsmanager::Client::new(&conf)
            .get_secret_value()
            .secret_id("edge-suite/staging/grafana-admin-password")
            .send()
            .await
            .expect("password");
        let amp = aws_sdk_amp::Client::new(&conf);
        let ws = amp.list_workspaces().send().await.expect("workspaces");
        let d = amp
            .describe_workspace()
            .workspace_id(ws.workspaces()[0].workspace_id())
            .send()
            .await
            .expect("workspace");
        (
            pw.secret_string().expect("value").to_string(),
            d.workspace()
                .and_then(|w| w.prometheus_endpoint())
                .expect("endpoint")
                .to_string(),
        )
    });
    assert!(!up.stderr.contains(&password) && !up.stdout.contains(&password));
    {
        let st = grafana.state.lock().expect("state");
        let ds = &st.datasources["amp"];
        assert_eq!(ds["type"], "prometheus");
        assert_eq!(ds["url"], endpoint.trim_end_matches('/'));
        assert_eq!(ds["jsonData"]["sigV4Auth"], true);
        assert_eq!(ds["jsonData"]["sigV4Region"], REGION);
        assert!(st.dashboards.contains_key("gw-overview"));
        // Every call as admin with the generated password (base64 of
        // `admin:<password>`, checked by decoding).
        for r in st.requests.iter().filter(|r| r.path != "/api/health") {
            let b64 = r.authorization.strip_prefix("Basic ").expect("basic auth");
            assert_eq!(
                decode_base64(b64),
                format!("admin:{password}"),
                "{}",
                r.path
            );
        }
    }
    // Again: the data source is updated in place, nothing re-uploaded.
    let again = run(&["up", "staging", "--yes"]).ok();
    assert!(
        again
            .stderr
            .contains("AMP data source updated; 0 dashboard(s) uploaded, 0 removed"),
        "{}",
        again.stderr
    );
    // A topic from before AMP could publish (no service in its policy) is
    // brought up to date in place.
    rt().block_on(async {
        let conf = sdk(&moto).await;
        let sns = aws_sdk_sns::Client::new(&conf);
        let arn = topics_arn(&sns.list_topics().send().await.expect("topics"));
        let owner_only = serde_json::json!({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
            "Action": "SNS:Publish", "Resource": arn}]});
        sns.set_topic_attributes()
            .topic_arn(&arn)
            .attribute_name("Policy")
            .attribute_value(owner_only.to_string())
            .send()
            .await
            .expect("reset policy");
    });
    let plan = run(&["plan", "staging", "--output", "json"]).ok().json();
    assert_eq!(
        changes(&plan),
        BTreeMap::from([("sns-topic/alarms".to_string(), "update".to_string())])
    );
    assert_eq!(
        changed_fields(&plan, "sns-topic/alarms"),
        vec!["service_publishers"]
    );
    run(&["up", "staging", "--yes"]).ok();
    assert_eq!(run(&["plan", "staging", "--detailed-exitcode"]).code, 0);
}

fn decode_base64(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = A.iter().position(|a| *a == c).expect("base64") as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8(out).expect("utf-8")
}
