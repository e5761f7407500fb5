//! Blue-green deploys without CodeDeploy: a new task definition revision in a
//! new task set on the idle target group (reachable through the test
//! listener), a health gate, then the production listener moves. Any failed
//! gate rolls back.

use std::future::Future;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::aws::{Aws, alarm, ecs_cluster, ecs_service, listener, target_group, task_definition};
use crate::error::{Error, Result};
use crate::specs::EcsServiceSpec;

/// Verdict of one health probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Pending(String),
    Unhealthy(String),
}

/// Where "is the new version healthy" comes from. Injectable so tests (and
/// emulators without running tasks) can choose.
pub trait HealthSource {
    fn check(&self, aws: &Aws, target: &Target) -> impl Future<Output = Result<Health>>;
}

/// What is being checked.
pub struct Target {
    pub cluster: String,
    pub task_set: String,
    pub target_group_arn: String,
    pub guard_alarms: Vec<String>,
}

/// The ALB's view: every registered target of the new target group healthy
/// (at least one), plus the 5xx alarms not firing.
pub struct AlbTargetHealth;

/// The ECS view: the new task set reached STEADY_STATE, plus the 5xx alarms
/// not firing. Used against emulators that run no tasks.
pub struct TaskSetStability;

async fn alarms_ok(aws: &Aws, t: &Target) -> Result<Option<Health>> {
    let firing = alarm::firing(aws, &t.guard_alarms).await?;
    Ok((!firing.is_empty())
        .then(|| Health::Unhealthy(format!("alarm in ALARM state: {}", firing.join(", ")))))
}

impl HealthSource for AlbTargetHealth {
    async fn check(&self, aws: &Aws, t: &Target) -> Result<Health> {
        if let Some(h) = alarms_ok(aws, t).await? {
            return Ok(h);
        }
        let out = aws
            .elb
            .describe_target_health()
            .target_group_arn(&t.target_group_arn)
            .send()
            .await
            .map_err(|e| Error::aws("elbv2:DescribeTargetHealth", e))?;
        let states: Vec<String> = out
            .target_health_descriptions()
            .iter()
            .map(|d| {
                d.target_health()
                    .and_then(|h| h.state())
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default()
            })
            .collect();
        Ok(judge_targets(&states))
    }
}

/// Pure decision on target states (unit-tested).
pub fn judge_targets(states: &[String]) -> Health {
    if states.is_empty() {
        return Health::Pending("no targets registered yet".into());
    }
    if let Some(bad) = states.iter().find(|s| s.as_str() == "unhealthy") {
        return Health::Unhealthy(format!("target {bad}"));
    }
    if states.iter().all(|s| s == "healthy") {
        Health::Healthy
    } else {
        Health::Pending(format!("targets: {}", states.join(", ")))
    }
}

impl HealthSource for TaskSetStability {
    async fn check(&self, aws: &Aws, t: &Target) -> Result<Health> {
        if let Some(h) = alarms_ok(aws, t).await? {
            return Ok(h);
        }
        let sets = ecs_service::task_sets(aws, &t.cluster).await?;
        let Some(ts) = sets
            .iter()
            .find(|s| s.task_set_arn() == Some(t.task_set.as_str()))
        else {
            return Ok(Health::Unhealthy("task set disappeared".into()));
        };
        Ok(match ts.stability_status() {
            Some(aws_sdk_ecs::types::StabilityStatus::SteadyState) => Health::Healthy,
            other => Health::Pending(format!("task set {other:?}")),
        })
    }
}

#[derive(Debug, Serialize)]
pub struct DeployReport {
    pub result: &'static str,
    pub image: String,
    /// Fingerprint of the declarative configuration the new revision runs.
    pub gateway_config_hash: String,
    pub task_definition: String,
    pub previous_task_definition: String,
    pub live_target_group: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub seconds: u64,
}

fn or_none(hash: &str) -> &str {
    if hash.is_empty() {
        "(the image's)"
    } else {
        hash
    }
}

/// Polls the health source until healthy, unhealthy or timed out.
async fn gate<H: HealthSource>(aws: &Aws, h: &H, t: &Target, timeout: Duration) -> Result<Health> {
    let start = Instant::now();
    loop {
        match h.check(aws, t).await? {
            Health::Pending(why) => {
                if start.elapsed() >= timeout {
                    return Ok(Health::Unhealthy(format!(
                        "not healthy after {}s ({why})",
                        timeout.as_secs()
                    )));
                }
                crate::progress::note(&format!(
                    "  waiting for the new task set: {why} ({}s)",
                    start.elapsed().as_secs()
                ));
                tokio::time::sleep(Duration::from_secs(5).min(timeout)).await;
            }
            verdict => return Ok(verdict),
        }
    }
}

pub struct DeployOptions {
    /// The gateway image to roll out; `None` keeps the current one.
    pub image: Option<String>,
    /// The declarative configuration to roll out (the repo's, rendered);
    /// `None` keeps the current one.
    pub gateway_config: Option<crate::gateway_config::Rendered>,
    pub health_timeout: Duration,
    pub guard_alarms: Vec<String>,
}

/// Runs a blue-green deploy. Returns `Ok` with `result = "rolled-back"` when
/// a gate failed and the previous version was restored.
pub async fn deploy<H: HealthSource>(
    aws: &Aws,
    health: &H,
    opts: &DeployOptions,
) -> Result<DeployReport> {
    let start = Instant::now();
    let cluster = ecs_cluster::name(aws);
    let svc = ecs_service::observe(aws)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Error::invalid("the ECS service does not exist; run `up` first"))?;
    let svc_spec: EcsServiceSpec =
        serde_json::from_value(serde_json::Value::Object(svc.props.clone()))?;
    let listeners = listener::find(aws).await?;
    let arn_of = |n: &str| {
        listeners
            .iter()
            .find(|(name, _)| name == n)
            .and_then(|(_, l)| l.listener_arn().map(str::to_string))
            .ok_or_else(|| {
                Error::invalid(format!("the {n} listener does not exist; run `up` first"))
            })
    };
    let https = arn_of("https")?;
    let test = arn_of("test")?;
    let tgs = target_group::find(aws).await?;
    let tg = |c: &str| {
        tgs.iter()
            .find(|(color, _)| color == c)
            .and_then(|(_, t)| t.target_group_arn().map(str::to_string))
            .ok_or_else(|| Error::invalid(format!("target group {c} missing; run `up` first")))
    };
    let (blue, green) = (tg("blue")?, tg("green")?);
    // Production traffic is what the HTTPS listener forwards to.
    let live = listeners
        .iter()
        .find(|(name, _)| name == "https")
        .and_then(|(_, l)| l.default_actions().first())
        .and_then(|a| a.target_group_arn())
        .map(str::to_string)
        .unwrap_or_else(|| svc_spec.target_group_arn.clone());
    let idle = if live == green {
        blue.clone()
    } else {
        green.clone()
    };

    // The task set serving `live` is the current version. After an
    // interrupted deploy it may not be primary yet (finish that switch), and
    // other task sets are leftovers (remove them).
    let sets = ecs_service::task_sets(aws, &cluster).await?;
    let serving = |t: &&aws_sdk_ecs::types::TaskSet| {
        t.load_balancers()
            .first()
            .and_then(|l| l.target_group_arn())
            == Some(live.as_str())
    };
    let current = sets
        .iter()
        .filter(serving)
        .find(|t| t.status() == Some("PRIMARY"))
        .or_else(|| sets.iter().find(serving));
    let old_task_set = current
        .and_then(|t| t.task_set_arn())
        .unwrap_or_default()
        .to_string();
    if let Some(t) = current
        && t.status() != Some("PRIMARY")
    {
        crate::progress::note(
            "completing an interrupted switch: the serving task set becomes primary",
        );
        ecs_service::make_primary(aws, &cluster, &old_task_set).await?;
    }
    for t in &sets {
        if let Some(arn) = t.task_set_arn()
            && arn != old_task_set
        {
            crate::progress::note(&format!("removing leftover task set {arn}"));
            ecs_service::delete_task_set(aws, &cluster, arn).await?;
        }
    }

    // 1. New revision: the current one with the new gateway image and the
    //    repo's declarative configuration.
    let old_td_arn = current
        .and_then(|t| t.task_definition())
        .map(str::to_string)
        .unwrap_or_else(|| svc_spec.task_definition.clone());
    let old_td = task_definition::describe(aws, &old_td_arn).await?;
    let mut td_spec = task_definition::spec_of(&old_td);
    if let Some(image) = &opts.image {
        td_spec.gateway_image = image.clone();
    }
    let config = match &opts.gateway_config {
        Some(r) => {
            if r.hash != td_spec.gateway_config_hash {
                crate::progress::note(&format!(
                    "gateway configuration {} -> {} ({})",
                    or_none(&td_spec.gateway_config_hash),
                    r.hash,
                    r.source
                ));
            }
            td_spec.gateway_config_hash = r.hash.clone();
            Some(r.text.clone())
        }
        None => task_definition::config_of(&old_td),
    };
    let key = crate::model::Key::new(crate::model::Kind::TaskDefinition, "gateway");
    let new_td = task_definition::register(aws, &key, &td_spec, config.as_deref()).await?;
    crate::progress::note(&format!("registered {}", new_td.id));

    // 2. Green task set behind the idle target group / test listener.
    listener::forward_to(aws, &test, &idle).await?;
    let new_set = ecs_service::create_task_set(aws, &svc_spec, &new_td.id, &idle).await?;
    crate::progress::note(&format!("started task set {new_set} on the test listener"));
    let target = Target {
        cluster: cluster.clone(),
        task_set: new_set.clone(),
        target_group_arn: idle.clone(),
        guard_alarms: opts.guard_alarms.clone(),
    };
    let mut moved = false;
    let verdict = match gate(aws, health, &target, opts.health_timeout).await? {
        Health::Healthy => {
            // 3. Move production traffic, then check the alarms once more.
            listener::forward_to(aws, &https, &idle).await?;
            listener::forward_to(aws, &test, &live).await?;
            ecs_service::make_primary(aws, &cluster, &new_set).await?;
            moved = true;
            crate::progress::note("production listener moved to the new task set");
            match alarms_ok(aws, &target).await? {
                Some(h) => h,
                None => Health::Healthy,
            }
        }
        other => other,
    };

    let report = |result, reason: Option<String>, td: &str, live_tg: &str| DeployReport {
        result,
        image: td_spec.gateway_image.clone(),
        gateway_config_hash: td_spec.gateway_config_hash.clone(),
        task_definition: td.to_string(),
        previous_task_definition: old_td_arn.clone(),
        live_target_group: live_tg.to_string(),
        reason,
        seconds: start.elapsed().as_secs(),
    };
    match verdict {
        Health::Healthy => {
            if !old_task_set.is_empty() {
                ecs_service::delete_task_set(aws, &cluster, &old_task_set).await?;
            }
            Ok(report("deployed", None, &new_td.id, &idle))
        }
        Health::Unhealthy(reason) | Health::Pending(reason) => {
            crate::progress::note(&format!("health gate failed: {reason}; rolling back"));
            if moved {
                listener::forward_to(aws, &https, &live).await?;
                if !old_task_set.is_empty() {
                    ecs_service::make_primary(aws, &cluster, &old_task_set).await?;
                }
            }
            listener::forward_to(aws, &test, &idle).await?;
            ecs_service::delete_task_set(aws, &cluster, &new_set).await?;
            task_definition::deregister(aws, &new_td.id).await?;
            Ok(report("rolled-back", Some(reason), &old_td_arn, &live))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn target_states_decide_the_gate() {
        assert!(matches!(judge_targets(&[]), Health::Pending(_)));
        assert_eq!(judge_targets(&s(&["healthy", "healthy"])), Health::Healthy);
        assert!(matches!(
            judge_targets(&s(&["healthy", "initial"])),
            Health::Pending(_)
        ));
        assert!(matches!(
            judge_targets(&s(&["healthy", "unhealthy"])),
            Health::Unhealthy(_)
        ));
    }
}
