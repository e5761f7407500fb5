//! The AWS side: one small module per resource kind, each with
//! `observe` / `create` / `update` / `delete`, and [`AwsProvider`] dispatching
//! the engine's calls to them.

/// One registry entry ([`registry::Ops`]) from a module's functions:
/// `ops!(Kind, observe, create, UPDATE, delete)`, where UPDATE is a function
/// called with the actual and desired resource, `(changed f)` when it also
/// takes the changed fields, `(recreate f)` when an update re-applies the
/// whole spec through `f(aws, desired)`, or `none` (no in-place update).
macro_rules! ops {
    ($kind:ident, $observe:path, $create:path, $update:tt, $delete:path) => {
        $crate::aws::registry::Ops {
            kind: $crate::model::Kind::$kind,
            observe: |a| Box::pin($observe(a)),
            create: |a, d| Box::pin($create(a, d)),
            update: ops!(@update $update),
            delete: |a, x| Box::pin($delete(a, x)),
        }
    };
    (@update none) => {
        None
    };
    (@update (recreate $f:path)) => {
        Some(|a, _, d, _| Box::pin($f(a, d)))
    };
    (@update (changed $f:path)) => {
        Some(|a, x, d, changed| Box::pin($f(a, x, d, changed)))
    };
    (@update $f:path) => {
        Some(|a, x, d, _| Box::pin($f(a, x, d)))
    };
}

pub mod alarm;
pub mod amp;
pub mod amp_alertmanager;
pub mod autoscaling;
pub mod certificate;
pub mod connection_secret;
pub mod dns_record;
pub mod ec2util;
pub mod ecr;
pub mod ecs_cluster;
pub mod ecs_service;
pub mod eip;
pub mod elasticache;
pub mod flow_log;
pub mod grafana_service;
pub mod grafana_task_definition;
pub mod iam;
pub mod igw;
pub mod lb;
pub mod listener;
pub mod listener_rule;
pub mod log_group;
pub mod nat;
pub mod rds;
pub mod registry;
pub mod route53;
pub mod route_table;
pub mod secret;
pub mod security_group;
pub mod sg_rules;
pub mod sns;
pub mod subnet;
pub mod subnet_group;
pub mod target_group;
pub mod task_definition;
pub mod validation_record;
pub mod vpc;
pub mod web_acl;

use std::future::Future;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};

use crate::engine::Provider;
use crate::error::{Error, Result};
use crate::grafana::Grafana;
use crate::model::{Actual, Desired, Kind};

/// Tag keys every resource carries.
pub const TAG_PROJECT: &str = "project";
pub const TAG_ENV: &str = "env";
/// The logical `kind/name` key, so a resource is found again by its tags.
pub const TAG_KEY: &str = "provisioner:key";
pub const TAG_MANAGED_BY: &str = "managed-by";

/// Clients and identity of one environment.
pub struct Aws {
    pub ec2: aws_sdk_ec2::Client,
    pub ecs: aws_sdk_ecs::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub rds: aws_sdk_rds::Client,
    pub elasticache: aws_sdk_elasticache::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub ecr: aws_sdk_ecr::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub sns: aws_sdk_sns::Client,
    pub autoscaling: aws_sdk_applicationautoscaling::Client,
    pub amp: aws_sdk_amp::Client,
    pub iam: aws_sdk_iam::Client,
    pub acm: aws_sdk_acm::Client,
    pub wafv2: aws_sdk_wafv2::Client,
    pub route53: aws_sdk_route53::Client,
    pub region: String,
    /// The caller's account (STS), for `aws:SourceAccount` in trust policies.
    pub account_id: String,
    pub project: String,
    pub env: String,
    pub prefix: String,
    /// How long to wait for slow resources (NAT deletion, RDS, ...).
    pub wait_timeout: Duration,
    /// Talking to an emulator (`--endpoint-url`): known emulator gaps on
    /// teardown are reported as warnings instead of failing `down`.
    pub emulator: bool,
    /// The env file's Route 53 hosted zone (`dns.hosted_zone`), if any, and
    /// the environment's domain: where the record kinds live.
    pub hosted_zone: Option<String>,
    pub domain: String,
    /// The env file's `disposable`: `down` may lift RDS deletion protection
    /// and delete secrets without a recovery window. Off unless set.
    pub disposable: bool,
}

impl Aws {
    /// Standard credential/region chain; `endpoint_url` (or the SDK's own
    /// `AWS_ENDPOINT_URL`) points every client at an emulator.
    pub async fn connect(
        endpoint_url: Option<&str>,
        project: &str,
        env: &str,
        prefix: &str,
        wait_timeout: Duration,
    ) -> Result<Aws> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(url) = endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let conf = loader.load().await;
        let region = conf.region().map(Region::to_string).ok_or_else(|| {
            Error::invalid("no AWS region configured (set AWS_REGION or a profile region)")
        })?;
        let identity = aws_sdk_sts::Client::new(&conf)
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| Error::aws("sts:GetCallerIdentity", e))?;
        Ok(Aws {
            account_id: identity.account().unwrap_or_default().to_string(),
            ec2: aws_sdk_ec2::Client::new(&conf),
            ecs: aws_sdk_ecs::Client::new(&conf),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&conf),
            rds: aws_sdk_rds::Client::new(&conf),
            elasticache: aws_sdk_elasticache::Client::new(&conf),
            secrets: aws_sdk_secretsmanager::Client::new(&conf),
            ecr: aws_sdk_ecr::Client::new(&conf),
            cloudwatch: aws_sdk_cloudwatch::Client::new(&conf),
            logs: aws_sdk_cloudwatchlogs::Client::new(&conf),
            sns: aws_sdk_sns::Client::new(&conf),
            autoscaling: aws_sdk_applicationautoscaling::Client::new(&conf),
            amp: aws_sdk_amp::Client::new(&conf),
            iam: aws_sdk_iam::Client::new(&conf),
            acm: aws_sdk_acm::Client::new(&conf),
            wafv2: aws_sdk_wafv2::Client::new(&conf),
            route53: aws_sdk_route53::Client::new(&conf),
            region,
            project: project.to_string(),
            env: env.to_string(),
            prefix: prefix.to_string(),
            wait_timeout,
            emulator: endpoint_url.is_some(),
            hosted_zone: None,
            domain: String::new(),
            disposable: false,
        })
    }

    /// The common tags plus the logical key, as (key, value) pairs.
    pub fn tags(&self, key: &crate::model::Key) -> Vec<(String, String)> {
        vec![
            (TAG_PROJECT.to_string(), self.project.clone()),
            (TAG_ENV.to_string(), self.env.clone()),
            (TAG_KEY.to_string(), key.to_string()),
            (TAG_MANAGED_BY.to_string(), "provisioner".to_string()),
        ]
    }

    /// Whether a tag list (as pairs) marks a resource of this environment.
    pub fn owns<'a>(&self, tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> bool {
        let mut project = false;
        let mut env = false;
        for (k, v) in tags {
            project |= k == TAG_PROJECT && v == self.project;
            env |= k == TAG_ENV && v == self.env;
        }
        project && env
    }

    /// Availability zones of the region, sorted.
    pub async fn availability_zones(&self) -> Result<Vec<String>> {
        let out = self
            .ec2
            .describe_availability_zones()
            .send()
            .await
            .map_err(|e| Error::aws("ec2:DescribeAvailabilityZones", e))?;
        let mut azs: Vec<String> = out
            .availability_zones()
            .iter()
            .filter(|z| z.state().map(|s| s.as_str()) == Some("available"))
            .filter_map(|z| z.zone_name().map(str::to_string))
            .collect();
        azs.sort();
        Ok(azs)
    }
}

/// Finds the logical key in a tag list.
pub fn key_from_tags<'a>(
    tags: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<crate::model::Key> {
    tags.into_iter()
        .find(|(k, _)| *k == TAG_KEY)
        .and_then(|(_, v)| crate::model::Key::parse(v))
}

/// Polls `check` every few seconds until it returns `Some`, printing progress.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last_note: Option<Instant> = None;
    loop {
        if let Some(v) = check().await? {
            if last_note.is_some() {
                crate::progress::note(&format!(
                    "  {what}: done after {}s",
                    start.elapsed().as_secs()
                ));
            }
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            return Err(Error::Timeout {
                what: what.to_string(),
                secs: timeout.as_secs(),
            });
        }
        // A line when the wait starts, then one every 30 seconds.
        if last_note.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
            crate::progress::note(&format!(
                "  waiting for {what} ({}s elapsed)",
                start.elapsed().as_secs()
            ));
            last_note = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_secs(5).min(timeout)).await;
    }
}

/// Error codes that mean "not yet" rather than "no": dependencies still
/// draining (ENIs of deleted load balancers and tasks), IAM propagation,
/// resources still in use while a parent finishes deleting.
const TRANSIENT: [&str; 10] = [
    "DependencyViolation",
    "ClusterContainsServicesException",
    "ClusterContainsTasksException",
    "Unable to assume",
    "InvalidIPAddress.InUse",
    "InvalidDBSubnetGroupStateFault",
    "CacheSubnetGroupInUse",
    "ResourceInUse",
    "InvalidParameter: Unable to validate",
    "role cannot be assumed",
];

pub fn is_transient(err: &Error) -> bool {
    match err {
        Error::Aws { message, .. } => TRANSIENT.iter().any(|t| message.contains(t)),
        _ => false,
    }
}

/// Runs `op` again while it fails with a transient error, up to `timeout`.
pub async fn retry_transient<T, F, Fut>(what: &str, timeout: Duration, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let start = Instant::now();
    loop {
        match op().await {
            Err(e) if is_transient(&e) && start.elapsed() < timeout => {
                crate::progress::note(&format!(
                    "  {what}: {e}; retrying ({}s elapsed)",
                    start.elapsed().as_secs()
                ));
                tokio::time::sleep(Duration::from_secs(5).min(timeout)).await;
            }
            other => return other,
        }
    }
}

/// Dispatches the engine's calls to the per-kind modules.
pub struct AwsProvider<'a> {
    pub aws: &'a Aws,
    pub grafana: Option<&'a Grafana>,
}

impl AwsProvider<'_> {
    fn ops(kind: Kind) -> Result<&'static registry::Ops> {
        registry::ops(kind).ok_or_else(|| Error::invalid(format!("no AWS module serves {kind}")))
    }

    async fn upload_dashboard(&self, d: &Desired) -> Result<Actual> {
        match self.grafana {
            Some(g) => g.upload(d).await,
            None => Err(Error::invalid("Grafana is not configured")),
        }
    }
}

impl Provider for AwsProvider<'_> {
    async fn observe(&self) -> Result<Vec<Actual>> {
        // Independent lookups, run concurrently (about 40 API calls).
        let found = futures_util::future::try_join_all(
            registry::REGISTRY.iter().map(|o| (o.observe)(self.aws)),
        )
        .await?;
        let mut all = found.concat();
        if let Some(g) = self.grafana {
            all.extend(g.observe().await?);
        }
        Ok(all)
    }

    async fn create(&self, d: &Desired) -> Result<Actual> {
        if d.key.kind == Kind::GrafanaDashboard {
            return self.upload_dashboard(d).await;
        }
        (Self::ops(d.key.kind)?.create)(self.aws, d).await
    }

    async fn update(&self, actual: &Actual, d: &Desired, changed: &[String]) -> Result<Actual> {
        if d.key.kind == Kind::GrafanaDashboard {
            return self.upload_dashboard(d).await;
        }
        match Self::ops(d.key.kind)?.update {
            Some(update) => update(self.aws, actual, d, changed).await,
            None => Err(Error::invalid(format!(
                "{} cannot be updated in place (changed: {})",
                d.key,
                changed.join(", ")
            ))),
        }
    }

    async fn delete(&self, actual: &Actual) -> Result<()> {
        if actual.key.kind == Kind::GrafanaDashboard {
            return match self.grafana {
                Some(g) => g.delete(actual).await,
                None => Ok(()),
            };
        }
        (Self::ops(actual.key.kind)?.delete)(self.aws, actual).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_are_recognised() {
        let e = |m: &str| Error::Aws {
            op: "x",
            message: m.to_string(),
        };
        assert!(is_transient(&e(
            "DependencyViolation: resource sg-1 has a dependent object"
        )));
        assert!(is_transient(&e(
            "InvalidParameter: Unable to assume role arn:aws:iam::1:role/x"
        )));
        assert!(!is_transient(&e("InvalidParameterValue: bad cidr")));
        assert!(!is_transient(&Error::invalid("DependencyViolation")));
    }

    #[tokio::test]
    async fn wait_for_returns_the_value_or_times_out() {
        let v = wait_for("ready", Duration::from_secs(1), || async { Ok(Some(7)) }).await;
        assert_eq!(v.ok(), Some(7));
        let t = wait_for("never", Duration::ZERO, || async { Ok(None::<()>) }).await;
        assert!(matches!(t, Err(Error::Timeout { .. })), "{t:?}");
    }

    #[tokio::test]
    async fn retry_gives_up_on_permanent_errors_at_once() {
        let mut calls = 0;
        let r: Result<()> = retry_transient("x", Duration::from_secs(60), || {
            calls += 1;
            async { Err(Error::invalid("nope")) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }
}
