//! RDS PostgreSQL: the DB subnet group and the instance (Multi-AZ, encrypted,
//! backups, deletion protection).

use aws_sdk_rds::types::Tag;

use super::{Aws, registry::Ops, secret, subnet_group, wait_for};
use crate::consts::POSTGRES_PORT;
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Key, Kind};
use crate::specs::{DbInstanceSpec, SubnetGroupSpec};

fn tags(aws: &Aws, key: &Key) -> Vec<Tag> {
    subnet_group::tags(aws, key, |k, v| Tag::builder().key(k).value(v).build())
}

fn subnet_group_name(aws: &Aws) -> String {
    format!("{}-db", aws.prefix)
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
fn instance_id(aws: &Aws) -> String {
    format!("{}-db", aws.prefix)
}

// The subnet-group calls below have the shape of those in `elasticache.rs`: the
// same API in two SDKs whose types differ. What is shared (the spec read
// back, the tags) lives in `subnet_group.rs`.
// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn observe_subnet_groups(aws: &Aws) -> Result<Vec<Actual>> {
    let items = aws
        .rds
        .describe_db_subnet_groups()
        .into_paginator()
        .items()
        .send()
        .collect::<std::result::Result<Vec<_>, _>>()
        .await
        .map_err(|e| Error::aws("rds:DescribeDBSubnetGroups", e))?;
    let name = subnet_group_name(aws);
    Ok(items
        .iter()
        .filter(|g| g.db_subnet_group_name() == Some(name.as_str()))
        .map(|g| {
            subnet_group::actual(
                Kind::DbSubnetGroup,
                &name,
                g.db_subnet_group_description(),
                g.subnets().iter().map(|s| s.subnet_identifier()),
            )
        })
        .collect())
}

pub async fn create_subnet_group(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: SubnetGroupSpec = d.spec()?;
    aws.rds
        .create_db_subnet_group()
        .db_subnet_group_name(&spec.name)
        .db_subnet_group_description(&spec.description)
        .set_subnet_ids(Some(spec.subnets.clone()))
        .set_tags(Some(tags(aws, &d.key)))
        .send()
        .await
        .map_err(|e| Error::aws("rds:CreateDBSubnetGroup", e))?;
    Ok(Actual::new(d.key.clone(), &spec.name, &spec))
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn update_subnet_group(aws: &Aws, a: &Actual, d: &Desired) -> Result<Actual> {
    let spec: SubnetGroupSpec = d.spec()?;
    aws.rds
        .modify_db_subnet_group()
        .db_subnet_group_name(&spec.name)
        .db_subnet_group_description(&spec.description)
        .set_subnet_ids(Some(spec.subnets.clone()))
        .send()
        .await
        .map_err(|e| Error::aws("rds:ModifyDBSubnetGroup", e))?;
    Ok(Actual::new(d.key.clone(), a.id.clone(), &spec))
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn delete_subnet_group(aws: &Aws, a: &Actual) -> Result<()> {
    super::retry_transient("delete DB subnet group", aws.wait_timeout, || async {
        aws.rds
            .delete_db_subnet_group()
            .db_subnet_group_name(&a.id)
            .send()
            .await
            .map_err(|e| Error::aws("rds:DeleteDBSubnetGroup", e))
    })
    .await?;
    Ok(())
}

async fn describe(aws: &Aws) -> Result<Option<aws_sdk_rds::types::DbInstance>> {
    let id = instance_id(aws);
    let items = aws
        .rds
        .describe_db_instances()
        .into_paginator()
        .items()
        .send()
        .collect::<std::result::Result<Vec<_>, _>>()
        .await
        .map_err(|e| Error::aws("rds:DescribeDBInstances", e))?;
    Ok(items
        .iter()
        .find(|i| i.db_instance_identifier() == Some(id.as_str()))
        .cloned())
}

fn actual_of(i: &aws_sdk_rds::types::DbInstance) -> Actual {
    let mut sgs: Vec<String> = i
        .vpc_security_groups()
        .iter()
        .filter_map(|g| g.vpc_security_group_id().map(str::to_string))
        .collect();
    sgs.sort();
    let spec = DbInstanceSpec {
        identifier: i.db_instance_identifier().unwrap_or_default().to_string(),
        engine: i.engine().unwrap_or_default().to_string(),
        engine_version: i.engine_version().unwrap_or_default().to_string(),
        instance_class: i.db_instance_class().unwrap_or_default().to_string(),
        allocated_storage: i.allocated_storage().unwrap_or(0),
        multi_az: i.multi_az().unwrap_or(false),
        storage_encrypted: i.storage_encrypted().unwrap_or(false),
        backup_retention_days: i.backup_retention_period().unwrap_or(0),
        deletion_protection: i.deletion_protection().unwrap_or(false),
        publicly_accessible: i.publicly_accessible().unwrap_or(false),
        subnet_group: i
            .db_subnet_group()
            .and_then(|g| g.db_subnet_group_name())
            .unwrap_or_default()
            .to_string(),
        security_groups: sgs,
        master_username: i.master_username().unwrap_or_default().to_string(),
    };
    let endpoint = i.endpoint();
    Actual::new(
        Key::new(Kind::DbInstance, "main"),
        i.db_instance_identifier().unwrap_or_default(),
        &spec,
    )
    .output("arn", i.db_instance_arn().unwrap_or_default())
    .output(
        "endpoint",
        endpoint.and_then(|e| e.address()).unwrap_or_default(),
    )
    .output(
        "port",
        endpoint
            .and_then(|e| e.port())
            .unwrap_or(POSTGRES_PORT)
            .to_string(),
    )
    .state(i.db_instance_status().unwrap_or_default())
}

pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    Ok(describe(aws)
        .await?
        .filter(|i| i.db_instance_status() != Some("deleting"))
        .map(|i| vec![actual_of(&i)])
        .unwrap_or_default())
}

async fn wait_available(aws: &Aws) -> Result<Actual> {
    wait_for(
        "the RDS instance to become available",
        aws.wait_timeout,
        || async {
            Ok(describe(aws)
                .await?
                .filter(|i| i.db_instance_status() == Some("available"))
                .map(|i| actual_of(&i)))
        },
    )
    .await
}

pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: DbInstanceSpec = d.spec()?;
    let secret_id = d
        .inputs
        .get("password_secret")
        .ok_or_else(|| Error::invalid("db-instance needs the password secret"))?;
    let password = secret::value(aws, secret_id).await?;
    aws.rds
        .create_db_instance()
        .db_instance_identifier(&spec.identifier)
        .engine(&spec.engine)
        .engine_version(&spec.engine_version)
        .db_instance_class(&spec.instance_class)
        .allocated_storage(spec.allocated_storage)
        .storage_type("gp3")
        .multi_az(spec.multi_az)
        .storage_encrypted(spec.storage_encrypted)
        .backup_retention_period(spec.backup_retention_days)
        .deletion_protection(spec.deletion_protection)
        .publicly_accessible(spec.publicly_accessible)
        .db_subnet_group_name(&spec.subnet_group)
        .set_vpc_security_group_ids(Some(spec.security_groups.clone()))
        .master_username(&spec.master_username)
        .master_user_password(password)
        .port(POSTGRES_PORT)
        .db_name("gateway")
        .copy_tags_to_snapshot(true)
        .set_tags(Some(tags(aws, &d.key)))
        .send()
        .await
        .map_err(|e| Error::aws("rds:CreateDBInstance", e))?;
    wait_available(aws).await
}

pub async fn update(aws: &Aws, a: &Actual, d: &Desired) -> Result<Actual> {
    let spec: DbInstanceSpec = d.spec()?;
    aws.rds
        .modify_db_instance()
        .db_instance_identifier(&a.id)
        .apply_immediately(true)
        .engine_version(&spec.engine_version)
        .db_instance_class(&spec.instance_class)
        .allocated_storage(spec.allocated_storage)
        .multi_az(spec.multi_az)
        .backup_retention_period(spec.backup_retention_days)
        .deletion_protection(spec.deletion_protection)
        .publicly_accessible(spec.publicly_accessible)
        .set_vpc_security_group_ids(Some(spec.security_groups.clone()))
        .send()
        .await
        .map_err(|e| Error::aws("rds:ModifyDBInstance", e))?;
    wait_available(aws).await
}

/// Why `down` may not delete this instance: deletion protection is on and
/// the environment is not disposable. Lifting it is the operator's decision
/// (`deletion_protection = false` in the env file, then `up`), never a side
/// effect of `down`.
pub fn teardown_blocker(a: &Actual, disposable: bool) -> Option<String> {
    let protected = a.props.get("deletion_protection").and_then(|v| v.as_bool()) == Some(true);
    (protected && !disposable).then(|| {
        format!(
            "{} ({}) has deletion protection: set [database] deletion_protection = false and run `up` first (only env files marked `disposable = true` have it lifted by `down`)",
            a.key, a.id
        )
    })
}

/// Deletes the instance. A disposable environment lifts deletion protection
/// first (`down` was confirmed); any other refuses a protected instance.
/// A final snapshot is kept unless the environment is disposable and the
/// instance was unprotected.
pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    if let Some(why) = teardown_blocker(a, aws.disposable) {
        return Err(Error::invalid(why));
    }
    let protected = a.props.get("deletion_protection").and_then(|v| v.as_bool()) == Some(true);
    if protected {
        aws.rds
            .modify_db_instance()
            .db_instance_identifier(&a.id)
            .deletion_protection(false)
            .apply_immediately(true)
            .send()
            .await
            .map_err(|e| Error::aws("rds:ModifyDBInstance", e))?;
    }
    let mut req = aws.rds.delete_db_instance().db_instance_identifier(&a.id);
    req = if protected || !aws.disposable {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        req.skip_final_snapshot(false)
            .final_db_snapshot_identifier(format!("{}-final-{stamp}", a.id))
    } else {
        req.skip_final_snapshot(true)
    };
    req.send()
        .await
        .map_err(|e| Error::aws("rds:DeleteDBInstance", e))?;
    wait_for(
        "the RDS instance to be deleted",
        aws.wait_timeout,
        || async { Ok(describe(aws).await?.is_none().then_some(())) },
    )
    .await
}

/// `DbSubnetGroup` in the registry (`aws/registry.rs`).
pub const SUBNET_GROUP_OPS: Ops = ops!(
    DbSubnetGroup,
    observe_subnet_groups,
    create_subnet_group,
    update_subnet_group,
    delete_subnet_group
);

/// `DbInstance` in the registry (`aws/registry.rs`).
pub const OPS: Ops = ops!(DbInstance, observe, create, update, delete);

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(protected: bool) -> Actual {
        Actual::new(
            Key::new(Kind::DbInstance, "main"),
            "p-db",
            &serde_json::json!({"deletion_protection": protected}),
        )
    }

    #[test]
    fn protected_instances_block_down_unless_disposable() {
        let why = teardown_blocker(&instance(true), false).expect("blocked");
        assert!(why.contains("deletion_protection = false"), "{why}");
        assert_eq!(teardown_blocker(&instance(true), true), None);
        assert_eq!(teardown_blocker(&instance(false), false), None);
    }
}
