//! CloudWatch metric alarms notifying the SNS topic.

use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Dimension, MetricAlarm, StateValue, Statistic, Tag,
};

use super::{Aws, registry::Ops};
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Key, Kind};
use crate::specs::AlarmSpec;

fn prefix(aws: &Aws) -> String {
    format!("{}-", aws.prefix)
}

pub async fn describe(aws: &Aws, names: Option<Vec<String>>) -> Result<Vec<MetricAlarm>> {
    let mut req = aws.cloudwatch.describe_alarms();
    req = match names {
        Some(n) => req.set_alarm_names(Some(n)),
        None => req.alarm_name_prefix(prefix(aws)),
    };
    let out = req
        .send()
        .await
        .map_err(|e| Error::aws("cloudwatch:DescribeAlarms", e))?;
    Ok(out.metric_alarms().to_vec())
}

/// Names of the given alarms that are in ALARM state.
pub async fn firing(aws: &Aws, names: &[String]) -> Result<Vec<String>> {
    Ok(describe(aws, Some(names.to_vec()))
        .await?
        .iter()
        .filter(|a| a.state_value() == Some(&StateValue::Alarm))
        .filter_map(|a| a.alarm_name().map(str::to_string))
        .collect())
}

pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    let p = prefix(aws);
    Ok(describe(aws, None)
        .await?
        .iter()
        .filter_map(|a| {
            let name = a.alarm_name()?;
            let logical = name.strip_prefix(&p)?;
            let spec = AlarmSpec {
                name: name.to_string(),
                namespace: a.namespace().unwrap_or_default().to_string(),
                metric: a.metric_name().unwrap_or_default().to_string(),
                dimensions: a
                    .dimensions()
                    .iter()
                    .filter_map(|d| Some((d.name()?.to_string(), d.value()?.to_string())))
                    .collect(),
                statistic: a
                    .statistic()
                    .map(|s| s.as_str().to_string())
                    .or_else(|| a.extended_statistic().map(str::to_string))
                    .unwrap_or_default(),
                period: a.period().unwrap_or(0),
                evaluation_periods: a.evaluation_periods().unwrap_or(0),
                threshold: a.threshold().unwrap_or(0.0),
                comparison: a
                    .comparison_operator()
                    .map(|c| c.as_str().to_string())
                    .unwrap_or_default(),
                treat_missing_data: a.treat_missing_data().unwrap_or_default().to_string(),
                actions: a.alarm_actions().to_vec(),
            };
            let state = a
                .state_value()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default();
            Some(
                Actual::new(Key::new(Kind::Alarm, logical), name, &spec)
                    .output("arn", a.alarm_arn().unwrap_or_default())
                    .state(state),
            )
        })
        .collect())
}

/// `p50`, `p99`, `p99.9`: a percentile, sent as `ExtendedStatistic`.
fn is_percentile(stat: &str) -> bool {
    stat.strip_prefix('p')
        .is_some_and(|n| !n.is_empty() && n.parse::<f64>().is_ok())
}

/// PutMetricAlarm is an upsert: create and update are the same call.
pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: AlarmSpec = d.spec()?;
    let dims: Vec<Dimension> = spec
        .dimensions
        .iter()
        .map(|(k, v)| Dimension::builder().name(k).value(v).build())
        .collect();
    let tags: Vec<Tag> = aws
        .tags(&d.key)
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
    let req = aws
        .cloudwatch
        .put_metric_alarm()
        .alarm_name(&spec.name)
        .namespace(&spec.namespace)
        .metric_name(&spec.metric)
        .set_dimensions(Some(dims));
    // Percentiles (`p99`) are extended statistics; the rest are standard.
    let req = if is_percentile(&spec.statistic) {
        req.extended_statistic(&spec.statistic)
    } else {
        req.statistic(Statistic::from(spec.statistic.as_str()))
    };
    req.period(spec.period)
        .evaluation_periods(spec.evaluation_periods)
        .threshold(spec.threshold)
        .comparison_operator(ComparisonOperator::from(spec.comparison.as_str()))
        .treat_missing_data(&spec.treat_missing_data)
        .set_alarm_actions(Some(spec.actions.clone()))
        .set_ok_actions(Some(spec.actions.clone()))
        .set_tags(Some(tags))
        .send()
        .await
        .map_err(|e| Error::aws("cloudwatch:PutMetricAlarm", e))?;
    Ok(Actual::new(d.key.clone(), &spec.name, &spec))
}

pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    aws.cloudwatch
        .delete_alarms()
        .alarm_names(&a.id)
        .send()
        .await
        .map_err(|e| Error::aws("cloudwatch:DeleteAlarms", e))?;
    Ok(())
}

/// `Alarm` in the registry (`aws/registry.rs`) (an update re-applies the whole spec).
pub const OPS: Ops = ops!(Alarm, observe, create, (recreate create), delete);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_extended_statistics() {
        assert!(is_percentile("p99"));
        assert!(is_percentile("p99.9"));
        assert!(!is_percentile("Average"));
        assert!(!is_percentile("p"));
        assert!(!is_percentile("pmax"));
    }
}
