//! ElastiCache Redis: the cache subnet group and the replication group
//! (cluster mode, TLS in transit, encryption at rest, AUTH token).

use aws_sdk_elasticache::types::{
    AutomaticFailoverStatus, ClusterMode, MultiAzStatus, ReplicationGroup, Tag,
};

use super::{Aws, registry::Ops, secret, subnet_group, wait_for};
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Key, Kind};
use crate::specs::{ReplicationGroupSpec, SubnetGroupSpec};

fn tags(aws: &Aws, key: &Key) -> Vec<Tag> {
    subnet_group::tags(aws, key, |k, v| Tag::builder().key(k).value(v).build())
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
fn group_name(aws: &Aws) -> String {
    format!("{}-redis", aws.prefix)
}

// The subnet-group calls below have the shape of those in `rds.rs`: the
// same API in two SDKs whose types differ. What is shared (the spec read
// back, the tags) lives in `subnet_group.rs`.
// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn observe_subnet_groups(aws: &Aws) -> Result<Vec<Actual>> {
    let items = aws
        .elasticache
        .describe_cache_subnet_groups()
        .into_paginator()
        .items()
        .send()
        .collect::<std::result::Result<Vec<_>, _>>()
        .await
        .map_err(|e| Error::aws("elasticache:DescribeCacheSubnetGroups", e))?;
    let name = group_name(aws);
    Ok(items
        .iter()
        .filter(|g| g.cache_subnet_group_name() == Some(name.as_str()))
        .map(|g| {
            subnet_group::actual(
                Kind::CacheSubnetGroup,
                &name,
                g.cache_subnet_group_description(),
                g.subnets().iter().map(|s| s.subnet_identifier()),
            )
        })
        .collect())
}

pub async fn create_subnet_group(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: SubnetGroupSpec = d.spec()?;
    aws.elasticache
        .create_cache_subnet_group()
        .cache_subnet_group_name(&spec.name)
        .cache_subnet_group_description(&spec.description)
        .set_subnet_ids(Some(spec.subnets.clone()))
        .set_tags(Some(tags(aws, &d.key)))
        .send()
        .await
        .map_err(|e| Error::aws("elasticache:CreateCacheSubnetGroup", e))?;
    Ok(Actual::new(d.key.clone(), &spec.name, &spec))
}

/// Against an emulator, a group `down` could not delete (moto serves neither
/// DeleteCacheSubnetGroup nor ModifyCacheSubnetGroup) is adopted as found,
/// with a warning: `up` after `down` goes on (moto does not check subnets).
pub async fn update_subnet_group(aws: &Aws, a: &Actual, d: &Desired) -> Result<Actual> {
    let spec: SubnetGroupSpec = d.spec()?;
    let res = aws
        .elasticache
        .modify_cache_subnet_group()
        .cache_subnet_group_name(&spec.name)
        .cache_subnet_group_description(&spec.description)
        .set_subnet_ids(Some(spec.subnets.clone()))
        .send()
        .await;
    match res {
        Ok(_) => Ok(Actual::new(d.key.clone(), a.id.clone(), &spec)),
        Err(e) if aws.emulator => {
            crate::progress::note(&format!(
                "  warning: the emulator cannot modify cache subnet group {} ({}); adopted as found",
                a.id,
                Error::aws("elasticache:ModifyCacheSubnetGroup", e)
            ));
            Ok(Actual::new(d.key.clone(), a.id.clone(), &spec))
        }
        Err(e) => Err(Error::aws("elasticache:ModifyCacheSubnetGroup", e)),
    }
}

/// moto does not implement DeleteCacheSubnetGroup; against an emulator the
/// failure is reported and the group left behind (documented gap).
pub async fn delete_subnet_group(aws: &Aws, a: &Actual) -> Result<()> {
    match aws
        .elasticache
        .delete_cache_subnet_group()
        .cache_subnet_group_name(&a.id)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if aws.emulator && e.raw_response().map(|r| r.status().as_u16()) == Some(500) => {
            crate::progress::note(&format!(
                "  warning: the emulator cannot delete cache subnet group {} (left behind)",
                a.id
            ));
            Ok(())
        }
        Err(e) => Err(Error::aws("elasticache:DeleteCacheSubnetGroup", e)),
    }
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
async fn describe(aws: &Aws) -> Result<Option<ReplicationGroup>> {
    let id = group_name(aws);
    let items = aws
        .elasticache
        .describe_replication_groups()
        .into_paginator()
        .items()
        .send()
        .collect::<std::result::Result<Vec<_>, _>>()
        .await
        .map_err(|e| Error::aws("elasticache:DescribeReplicationGroups", e))?;
    Ok(items
        .iter()
        .find(|g| g.replication_group_id() == Some(id.as_str()))
        .cloned())
}

fn actual_of(g: &ReplicationGroup) -> Actual {
    let groups = g.node_groups().len().max(1) as i32;
    let members = g.member_clusters().len() as i32;
    let spec = ReplicationGroupSpec {
        id: g.replication_group_id().unwrap_or_default().to_string(),
        node_type: g.cache_node_type().unwrap_or_default().to_string(),
        num_node_groups: g.node_groups().len() as i32,
        replicas_per_node_group: (members / groups - 1).max(0),
        cluster_mode: g.cluster_enabled().unwrap_or(false),
        transit_encryption: g.transit_encryption_enabled().unwrap_or(false),
        at_rest_encryption: g.at_rest_encryption_enabled().unwrap_or(false),
        auth_token_enabled: g.auth_token_enabled().unwrap_or(false),
        multi_az: g.multi_az() == Some(&MultiAzStatus::Enabled),
        automatic_failover: g.automatic_failover() == Some(&AutomaticFailoverStatus::Enabled),
    };
    let endpoint = g
        .configuration_endpoint()
        .and_then(|e| e.address())
        .unwrap_or_default();
    Actual::new(
        Key::new(Kind::ReplicationGroup, "main"),
        g.replication_group_id().unwrap_or_default(),
        &spec,
    )
    .output("arn", g.arn().unwrap_or_default())
    .output("endpoint", endpoint)
    .state(g.status().unwrap_or_default())
}

/// A group in `deleting` is on its way out (moto keeps it there forever).
pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    Ok(describe(aws)
        .await?
        .filter(|g| g.status() != Some("deleting"))
        .map(|g| vec![actual_of(&g)])
        .unwrap_or_default())
}

async fn wait_available(aws: &Aws) -> Result<Actual> {
    wait_for(
        "the Redis replication group to become available",
        aws.wait_timeout,
        || async {
            Ok(describe(aws)
                .await?
                .filter(|g| g.status() == Some("available"))
                .map(|g| actual_of(&g)))
        },
    )
    .await
}

pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: ReplicationGroupSpec = d.spec()?;
    let token_secret = d
        .inputs
        .get("auth_token_secret")
        .ok_or_else(|| Error::invalid("replication-group needs the auth token secret"))?;
    let subnet_group = d
        .inputs
        .get("subnet_group")
        .ok_or_else(|| Error::invalid("replication-group needs its subnet group"))?;
    let security_groups: Vec<String> = d
        .inputs
        .get("security_groups")
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let token = secret::value(aws, token_secret).await?;
    // A group of the same id still `deleting` (an earlier `down`): AWS frees
    // the id once it is gone, so wait for that; moto keeps it `deleting`
    // forever, so against an emulator it is adopted as found.
    if let Some(g) = describe(aws).await?
        && g.status() == Some("deleting")
    {
        if aws.emulator {
            crate::progress::note(&format!(
                "  warning: the emulator keeps replication group {} in `deleting` after down; adopted as found",
                spec.id
            ));
            return Ok(actual_of(&g));
        }
        crate::progress::note(&format!(
            "  replication group {} is still being deleted (an earlier down); waiting for it to go",
            spec.id
        ));
        wait_for(
            "the previous Redis replication group to be deleted",
            aws.wait_timeout,
            || async { Ok(describe(aws).await?.is_none().then_some(())) },
        )
        .await?;
    }
    aws.elasticache
        .create_replication_group()
        .replication_group_id(&spec.id)
        .replication_group_description(format!("{} Redis (cluster mode)", aws.prefix))
        .engine("redis")
        .cache_node_type(&spec.node_type)
        .num_node_groups(spec.num_node_groups)
        .replicas_per_node_group(spec.replicas_per_node_group)
        .cluster_mode(if spec.cluster_mode {
            ClusterMode::Enabled
        } else {
            ClusterMode::Disabled
        })
        .automatic_failover_enabled(spec.automatic_failover)
        .multi_az_enabled(spec.multi_az)
        .transit_encryption_enabled(spec.transit_encryption)
        .at_rest_encryption_enabled(spec.at_rest_encryption)
        .auth_token(token)
        .cache_subnet_group_name(subnet_group)
        .set_security_group_ids(Some(security_groups))
        .snapshot_retention_limit(7)
        .set_tags(Some(tags(aws, &d.key)))
        .send()
        .await
        .map_err(|e| Error::aws("elasticache:CreateReplicationGroup", e))?;
    wait_available(aws).await
}

pub async fn update(aws: &Aws, a: &Actual, d: &Desired, changed: &[String]) -> Result<Actual> {
    let spec: ReplicationGroupSpec = d.spec()?;
    let supported = [
        "node_type",
        "multi_az",
        "automatic_failover",
        "auth_token_enabled",
    ];
    if let Some(f) = changed.iter().find(|f| !supported.contains(&f.as_str())) {
        return Err(Error::invalid(format!(
            "changing {f} of the Redis replication group is not supported in place (resharding is a manual operation)"
        )));
    }
    aws.elasticache
        .modify_replication_group()
        .replication_group_id(&a.id)
        .apply_immediately(true)
        .cache_node_type(&spec.node_type)
        .multi_az_enabled(spec.multi_az)
        .automatic_failover_enabled(spec.automatic_failover)
        .send()
        .await
        .map_err(|e| Error::aws("elasticache:ModifyReplicationGroup", e))?;
    wait_available(aws).await
}

/// Starts the deletion and waits for it, except against an emulator, where
/// moto leaves the group in `deleting` forever.
pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    aws.elasticache
        .delete_replication_group()
        .replication_group_id(&a.id)
        .send()
        .await
        .map_err(|e| Error::aws("elasticache:DeleteReplicationGroup", e))?;
    if aws.emulator {
        return Ok(());
    }
    wait_for(
        "the Redis replication group to be deleted",
        aws.wait_timeout,
        || async { Ok(describe(aws).await?.is_none().then_some(())) },
    )
    .await
}

/// `CacheSubnetGroup` in the registry (`aws/registry.rs`).
pub const SUBNET_GROUP_OPS: Ops = ops!(
    CacheSubnetGroup,
    observe_subnet_groups,
    create_subnet_group,
    update_subnet_group,
    delete_subnet_group
);

/// `ReplicationGroup` in the registry (`aws/registry.rs`).
pub const OPS: Ops = ops!(ReplicationGroup, observe, create, (changed update), delete);
