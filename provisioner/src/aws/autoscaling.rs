//! Application Auto Scaling of the ECS service on CPU (target tracking).

use aws_sdk_applicationautoscaling::types::{
    MetricType, PolicyType, PredefinedMetricSpecification, ScalableDimension, ServiceNamespace,
    TargetTrackingScalingPolicyConfiguration,
};

use super::{Aws, registry::Ops};
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Key, Kind};
use crate::specs::ScalingPolicySpec;

fn resource_id(aws: &Aws) -> String {
    format!("service/{}/gateway", super::ecs_cluster::name(aws))
}

fn policy_name(aws: &Aws) -> String {
    format!("{}-gateway-cpu", aws.prefix)
}

pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    let rid = resource_id(aws);
    let targets = aws
        .autoscaling
        .describe_scalable_targets()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_ids(&rid)
        .send()
        .await
        .map_err(|e| Error::aws("application-autoscaling:DescribeScalableTargets", e))?;
    let Some(t) = targets.scalable_targets().first() else {
        return Ok(Vec::new());
    };
    let policies = aws
        .autoscaling
        .describe_scaling_policies()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(&rid)
        .policy_names(policy_name(aws))
        .send()
        .await
        .map_err(|e| Error::aws("application-autoscaling:DescribeScalingPolicies", e))?;
    let target = policies
        .scaling_policies()
        .first()
        .and_then(|p| p.target_tracking_scaling_policy_configuration())
        .map(|c| c.target_value())
        .unwrap_or(0.0);
    let spec = ScalingPolicySpec {
        resource_id: rid.clone(),
        min_capacity: t.min_capacity(),
        max_capacity: t.max_capacity(),
        target_cpu_percent: target,
    };
    let arn = policies
        .scaling_policies()
        .first()
        .map(|p| p.policy_arn().to_string())
        .unwrap_or_default();
    Ok(vec![
        Actual::new(Key::new(Kind::ScalingPolicy, "gateway-cpu"), rid, &spec)
            .output("policy_arn", arn),
    ])
}

/// Register and put are both upserts, so create and update are the same.
pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: ScalingPolicySpec = d.spec()?;
    aws.autoscaling
        .register_scalable_target()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(&spec.resource_id)
        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
        .min_capacity(spec.min_capacity)
        .max_capacity(spec.max_capacity)
        .set_tags(Some(aws.tags(&d.key).into_iter().collect()))
        .send()
        .await
        .map_err(|e| Error::aws("application-autoscaling:RegisterScalableTarget", e))?;
    let cfg = TargetTrackingScalingPolicyConfiguration::builder()
        .target_value(spec.target_cpu_percent)
        .predefined_metric_specification(
            PredefinedMetricSpecification::builder()
                .predefined_metric_type(MetricType::EcsServiceAverageCpuUtilization)
                .build()
                .map_err(|e| Error::invalid(e.to_string()))?,
        )
        .scale_in_cooldown(300)
        .scale_out_cooldown(60)
        .build()
        .map_err(|e| Error::invalid(e.to_string()))?;
    let out = aws
        .autoscaling
        .put_scaling_policy()
        .policy_name(policy_name(aws))
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(&spec.resource_id)
        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
        .policy_type(PolicyType::TargetTrackingScaling)
        .target_tracking_scaling_policy_configuration(cfg)
        .send()
        .await
        .map_err(|e| Error::aws("application-autoscaling:PutScalingPolicy", e))?;
    Ok(Actual::new(d.key.clone(), &spec.resource_id, &spec).output("policy_arn", out.policy_arn()))
}

pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    aws.autoscaling
        .delete_scaling_policy()
        .policy_name(policy_name(aws))
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(&a.id)
        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
        .send()
        .await
        .map_err(|e| Error::aws("application-autoscaling:DeleteScalingPolicy", e))?;
    aws.autoscaling
        .deregister_scalable_target()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(&a.id)
        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
        .send()
        .await
        .map_err(|e| Error::aws("application-autoscaling:DeregisterScalableTarget", e))?;
    Ok(())
}

/// `ScalingPolicy` in the registry (`aws/registry.rs`) (an update re-applies the whole spec).
pub const OPS: Ops = ops!(ScalingPolicy, observe, create, (recreate create), delete);
