//! The exact rule set of a security group: missing rules are authorized,
//! any other rule (including AWS's default allow-all egress) is revoked.

use aws_sdk_ec2::types::{IpPermission, IpRange, UserIdGroupPair};

use super::security_group::describe;
use super::{Aws, registry::Ops};
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Key, Kind};
use crate::specs::{SecurityGroupRulesSpec, SgRule};

/// Flattens AWS permissions to one rule per peer, sorted.
pub fn normalise(perms: &[IpPermission]) -> Vec<SgRule> {
    let mut out = Vec::new();
    for p in perms {
        let protocol = p.ip_protocol().unwrap_or("-1").to_string();
        let from_port = p.from_port().unwrap_or(-1);
        let to_port = p.to_port().unwrap_or(-1);
        let mk = |peer: &str| SgRule {
            protocol: protocol.clone(),
            from_port,
            to_port,
            peer: peer.to_string(),
        };
        out.extend(p.ip_ranges().iter().filter_map(|r| r.cidr_ip()).map(mk));
        out.extend(
            p.user_id_group_pairs()
                .iter()
                .filter_map(|g| g.group_id())
                .map(mk),
        );
    }
    out.sort();
    out.dedup();
    out
}

fn permission(r: &SgRule) -> IpPermission {
    let b = IpPermission::builder()
        .ip_protocol(&r.protocol)
        .from_port(r.from_port)
        .to_port(r.to_port);
    if r.peer.starts_with("sg-") {
        b.user_id_group_pairs(UserIdGroupPair::builder().group_id(&r.peer).build())
            .build()
    } else {
        b.ip_ranges(IpRange::builder().cidr_ip(&r.peer).build())
            .build()
    }
}

pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    Ok(describe(aws)
        .await?
        .into_iter()
        .filter_map(|(name, g)| {
            let id = g.group_id()?.to_string();
            let spec = SecurityGroupRulesSpec {
                group_id: id.clone(),
                ingress: normalise(g.ip_permissions()),
                egress: normalise(g.ip_permissions_egress()),
            };
            Some(Actual::new(
                Key::new(Kind::SecurityGroupRules, name),
                id,
                &spec,
            ))
        })
        .collect())
}

/// Rules to add and to remove to get from `have` to `want`.
pub fn delta(have: &[SgRule], want: &[SgRule]) -> (Vec<SgRule>, Vec<SgRule>) {
    let add = want.iter().filter(|r| !have.contains(r)).cloned().collect();
    let remove = have.iter().filter(|r| !want.contains(r)).cloned().collect();
    (add, remove)
}

// dup: the shape of every aws/<kind>.rs (one module per kind, on its own SDK types).
async fn sync(aws: &Aws, spec: &SecurityGroupRulesSpec) -> Result<()> {
    let groups = describe(aws).await?;
    let g = groups
        .iter()
        .map(|(_, g)| g)
        .find(|g| g.group_id() == Some(spec.group_id.as_str()))
        .ok_or_else(|| Error::invalid(format!("security group {} not found", spec.group_id)))?;
    let (add_in, rm_in) = delta(&normalise(g.ip_permissions()), &spec.ingress);
    let (add_out, rm_out) = delta(&normalise(g.ip_permissions_egress()), &spec.egress);
    let id = &spec.group_id;
    if !rm_in.is_empty() {
        aws.ec2
            .revoke_security_group_ingress()
            .group_id(id)
            .set_ip_permissions(Some(rm_in.iter().map(permission).collect()))
            .send()
            .await
            .map_err(|e| Error::aws("ec2:RevokeSecurityGroupIngress", e))?;
    }
    if !rm_out.is_empty() {
        aws.ec2
            .revoke_security_group_egress()
            .group_id(id)
            .set_ip_permissions(Some(rm_out.iter().map(permission).collect()))
            .send()
            .await
            .map_err(|e| Error::aws("ec2:RevokeSecurityGroupEgress", e))?;
    }
    if !add_in.is_empty() {
        aws.ec2
            .authorize_security_group_ingress()
            .group_id(id)
            .set_ip_permissions(Some(add_in.iter().map(permission).collect()))
            .send()
            .await
            .map_err(|e| Error::aws("ec2:AuthorizeSecurityGroupIngress", e))?;
    }
    if !add_out.is_empty() {
        aws.ec2
            .authorize_security_group_egress()
            .group_id(id)
            .set_ip_permissions(Some(add_out.iter().map(permission).collect()))
            .send()
            .await
            .map_err(|e| Error::aws("ec2:AuthorizeSecurityGroupEgress", e))?;
    }
    Ok(())
}

/// Create and update are the same: make the rule set exact.
pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: SecurityGroupRulesSpec = d.spec()?;
    sync(aws, &spec).await?;
    Ok(Actual::new(d.key.clone(), spec.group_id.clone(), &spec))
}

/// Revokes every rule so the groups can be deleted in any order.
pub async fn delete(aws: &Aws, a: &Actual) -> Result<()> {
    let spec = SecurityGroupRulesSpec {
        group_id: a.id.clone(),
        ingress: vec![],
        egress: vec![],
    };
    sync(aws, &spec).await
}

/// `SecurityGroupRules` in the registry (`aws/registry.rs`) (an update re-applies the whole spec).
pub const OPS: Ops = ops!(SecurityGroupRules, observe, create, (recreate create), delete);

#[cfg(test)]
mod tests {
    use super::*;

    fn r(port: i32, peer: &str) -> SgRule {
        SgRule {
            protocol: "tcp".into(),
            from_port: port,
            to_port: port,
            peer: peer.into(),
        }
    }

    #[test]
    fn normalise_flattens_peers_and_default_egress() {
        let perms = vec![
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(443)
                .to_port(443)
                .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
                .user_id_group_pairs(UserIdGroupPair::builder().group_id("sg-1").build())
                .build(),
            IpPermission::builder()
                .ip_protocol("-1")
                .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
                .build(),
        ];
        let n = normalise(&perms);
        assert_eq!(n.len(), 3);
        assert!(n.contains(&r(443, "sg-1")));
        assert!(n.contains(&SgRule {
            protocol: "-1".into(),
            from_port: -1,
            to_port: -1,
            peer: "0.0.0.0/0".into()
        }));
    }

    #[test]
    fn delta_adds_missing_and_revokes_the_rest() {
        let have = vec![r(80, "0.0.0.0/0"), r(22, "0.0.0.0/0")];
        let want = vec![r(80, "0.0.0.0/0"), r(443, "0.0.0.0/0")];
        let (add, rm) = delta(&have, &want);
        assert_eq!(add, vec![r(443, "0.0.0.0/0")]);
        assert_eq!(rm, vec![r(22, "0.0.0.0/0")]);
        let p = permission(&r(5432, "sg-9"));
        assert_eq!(p.user_id_group_pairs()[0].group_id(), Some("sg-9"));
        assert!(p.ip_ranges().is_empty());
    }
}
