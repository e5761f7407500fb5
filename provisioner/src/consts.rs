//! Names and numbers both sides agree on: the desired state (`desired/`)
//! and the AWS modules (`aws/`) import them from here, never from each
//! other.

/// The gateway's proxy listener in the task (target groups forward here).
pub const PROXY_PORT: i32 = 8000;
/// The gateway's status listener (health checks).
pub const STATUS_PORT: i32 = 8100;
/// The ALB's blue-green test listener (reachable from inside the VPC only).
pub const TEST_LISTENER_PORT: i32 = 8443;
pub const POSTGRES_PORT: i32 = 5432;
pub const REDIS_PORT: i32 = 6379;
pub const HEALTH_CHECK_PATH: &str = "/status/ready";
pub const SSL_POLICY: &str = "ELBSecurityPolicy-TLS13-1-2-2021-06";

/// ECR repositories of the suite (`<project>/<name>`, as the release
/// workflow pushes them).
pub const ECR_REPOSITORIES: [&str; 3] = ["gateway", "metrics-agent", "provisioner"];
/// The repositories the task definition pulls from (the task execution
/// role may read these and no other).
pub const TASK_IMAGES: [&str; 2] = ["gateway", "metrics-agent"];

/// Generated secrets: (logical name, name suffix under `<project>/<env>/`,
/// description).
pub const SECRETS: [(&str, &str, &str); 4] = [
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
    (
        "grafana-admin",
        "grafana-admin-password",
        "Password of the environment's Grafana `admin` user",
    ),
];

/// Secrets composed from a data store's endpoint and its password, for the
/// metrics-agent sidecar: (logical name, name suffix under `<project>/<env>/`).
pub const CONNECTION_SECRETS: [(&str, &str); 2] = [
    ("metrics-postgres", "metrics-agent-postgres-dsn"),
    ("metrics-redis", "metrics-agent-redis-addr"),
];

/// IAM roles, named `<prefix>-<role>`.
pub const IAM_ROLES: [&str; 4] = ["flow-logs", "task-execution", "task", "grafana-task"];

/// The environment's Grafana: the official image, pinned here (and only here).
pub const GRAFANA_IMAGE: &str = "grafana/grafana:11.6.0";
/// Grafana's HTTP port in its task.
pub const GRAFANA_PORT: i32 = 3000;
/// Where the ALB serves Grafana when it has no host of its own.
pub const GRAFANA_PATH: &str = "/grafana";
/// Priority of the HTTPS listener's Grafana rule (the default action is the gateway).
pub const GRAFANA_RULE_PRIORITY: i32 = 100;
/// The ECS service (and container) name.
pub const GRAFANA_SERVICE: &str = "grafana";
/// uid of the Amazon Managed Prometheus data source the provisioner creates.
pub const GRAFANA_DATASOURCE_UID: &str = "amp";

/// AWS managed rule groups (vendor `AWS`) of the WAF web ACL, in priority order.
pub const WAF_MANAGED_RULE_GROUPS: [&str; 1] = ["AWSManagedRulesCommonRuleSet"];
/// Name of the WAF web ACL's rate-based rule.
pub const WAF_RATE_RULE: &str = "rate-limit-per-ip";

/// The service principal of Amazon Managed Prometheus (its Alertmanager
/// publishes to the alarm topic).
pub const AMP_SERVICE_PRINCIPAL: &str = "aps.amazonaws.com";
