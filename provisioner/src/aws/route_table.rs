//! Route tables: subnet associations and the 0.0.0.0/0 route.

use aws_sdk_ec2::types::{ResourceType, RouteTable};

use super::ec2util::{env_filters, key_of, tag_spec};
use super::{Aws, registry::Ops};
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Kind};
use crate::specs::RouteTableSpec;

const DEFAULT: &str = "0.0.0.0/0";

fn spec_of(rt: &RouteTable) -> RouteTableSpec {
    let mut subnets: Vec<String> = rt
        .associations()
        .iter()
        .filter(|a| !a.main().unwrap_or(false))
        .filter_map(|a| a.subnet_id().map(str::to_string))
        .collect();
    subnets.sort();
    let default_route = rt
        .routes()
        .iter()
        .find(|r| r.destination_cidr_block() == Some(DEFAULT))
        .and_then(|r| r.nat_gateway_id().or(r.gateway_id()))
        .map(str::to_string);
    RouteTableSpec {
        vpc_id: rt.vpc_id().unwrap_or_default().to_string(),
        subnets,
        default_route,
    }
}

async fn describe(aws: &Aws, id: Option<&str>) -> Result<Vec<RouteTable>> {
    let mut req = aws.ec2.describe_route_tables();
    req = match id {
        Some(id) => req.route_table_ids(id),
        None => req.set_filters(Some(env_filters(aws))),
    };
    let out = req
        .send()
        .await
        .map_err(|e| Error::aws("ec2:DescribeRouteTables", e))?;
    Ok(out.route_tables().to_vec())
}

pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    let mut res = Vec::new();
    for rt in describe(aws, None).await? {
        let (Some(key), Some(id)) = (key_of(rt.tags()), rt.route_table_id()) else {
            continue;
        };
        if key.kind == Kind::RouteTable {
            res.push(Actual::new(key, id, &spec_of(&rt)));
        }
    }
    Ok(res)
}

async fn set_default_route(
    aws: &Aws,
    id: &str,
    current: Option<&str>,
    target: Option<&str>,
) -> Result<()> {
    if current == target {
        return Ok(());
    }
    if current.is_some() {
        aws.ec2
            .delete_route()
            .route_table_id(id)
            .destination_cidr_block(DEFAULT)
            .send()
            .await
            .map_err(|e| Error::aws("ec2:DeleteRoute", e))?;
    }
    if let Some(t) = target {
        let mut req = aws
            .ec2
            .create_route()
            .route_table_id(id)
            .destination_cidr_block(DEFAULT);
        req = if t.starts_with("nat-") {
            req.nat_gateway_id(t)
        } else {
            req.gateway_id(t)
        };
        req.send()
            .await
            .map_err(|e| Error::aws("ec2:CreateRoute", e))?;
    }
    Ok(())
}

/// Brings associations and the default route of table `id` to `spec`.
async fn sync(aws: &Aws, id: &str, spec: &RouteTableSpec) -> Result<()> {
    let rt = describe(aws, Some(id))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Error::invalid(format!("route table {id} vanished")))?;
    for a in rt.associations() {
        let Some(subnet) = a.subnet_id() else {
            continue;
        };
        if !spec.subnets.iter().any(|s| s == subnet)
            && let Some(assoc) = a.route_table_association_id()
        {
            aws.ec2
                .disassociate_route_table()
                .association_id(assoc)
                .send()
                .await
                .map_err(|e| Error::aws("ec2:DisassociateRouteTable", e))?;
        }
    }
    let current = spec_of(&rt);
    for s in &spec.subnets {
        if !current.subnets.contains(s) {
            aws.ec2
                .associate_route_table()
                .route_table_id(id)
                .subnet_id(s)
                .send()
                .await
                .map_err(|e| Error::aws("ec2:AssociateRouteTable", e))?;
        }
    }
    set_default_route(
        aws,
        id,
        current.default_route.as_deref(),
        spec.default_route.as_deref(),
    )
    .await
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: RouteTableSpec = d.spec()?;
    let name = format!("{}-{}", aws.prefix, d.key.name);
    let out = aws
        .ec2
        .create_route_table()
        .vpc_id(&spec.vpc_id)
        .tag_specifications(tag_spec(
            aws,
            &d.key,
            ResourceType::RouteTable,
            &[("Name", &name)],
        ))
        .send()
        .await
        .map_err(|e| Error::aws("ec2:CreateRouteTable", e))?;
    let id = out
        .route_table()
        .and_then(|r| r.route_table_id())
        .ok_or_else(|| Error::invalid("CreateRouteTable returned no id"))?
        .to_string();
    sync(aws, &id, &spec).await?;
    Ok(Actual::new(d.key.clone(), id, &spec))
}

pub async fn update(aws: &Aws, a: &Actual, d: &Desired) -> Result<Actual> {
    let spec: RouteTableSpec = d.spec()?;
    sync(aws, &a.id, &spec).await?;
    Ok(Actual::new(d.key.clone(), a.id.clone(), &spec))
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    let empty = RouteTableSpec {
        vpc_id: String::new(),
        subnets: vec![],
        default_route: None,
    };
    sync(aws, &a.id, &empty).await?;
    aws.ec2
        .delete_route_table()
        .route_table_id(&a.id)
        .send()
        .await
        .map_err(|e| Error::aws("ec2:DeleteRouteTable", e))?;
    Ok(())
}

/// `RouteTable` in the registry (`aws/registry.rs`).
pub const OPS: Ops = ops!(RouteTable, observe, create, update, delete);

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::types::{Route, RouteTableAssociation};

    #[test]
    fn spec_reads_associations_and_the_default_route() {
        let rt = RouteTable::builder()
            .vpc_id("vpc-1")
            .associations(RouteTableAssociation::builder().main(true).build())
            .associations(
                RouteTableAssociation::builder()
                    .subnet_id("subnet-b")
                    .build(),
            )
            .associations(
                RouteTableAssociation::builder()
                    .subnet_id("subnet-a")
                    .build(),
            )
            .routes(
                Route::builder()
                    .destination_cidr_block("10.0.0.0/16")
                    .gateway_id("local")
                    .build(),
            )
            .routes(
                Route::builder()
                    .destination_cidr_block(DEFAULT)
                    .nat_gateway_id("nat-1")
                    .build(),
            )
            .build();
        assert_eq!(
            spec_of(&rt),
            RouteTableSpec {
                vpc_id: "vpc-1".into(),
                subnets: vec!["subnet-a".into(), "subnet-b".into()],
                default_route: Some("nat-1".into()),
            }
        );
        let isolated = RouteTable::builder().vpc_id("vpc-1").build();
        assert_eq!(spec_of(&isolated).default_route, None);
    }
}
