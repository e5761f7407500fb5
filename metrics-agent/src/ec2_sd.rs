//! `ec2_sd_configs`: EC2 instances from DescribeInstances every `refresh_interval`, with
//! Prometheus' `__meta_ec2_*` labels; the target is `<private_ip>:<port>` (the default IPv6
//! address when the instance has no private IPv4 address). A refresh that fails keeps the
//! previous targets, as Prometheus does.

use crate::config::{Ec2Sd, TargetGroup};
use crate::discovery::{Update, host_port, sanitize_label_name};
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{Filter, Instance};
use std::collections::{BTreeMap, HashMap};
use tokio::sync::{mpsc, watch};

const SEP: &str = ",";

fn joined(items: &[String]) -> String {
    format!("{SEP}{}{SEP}", items.join(SEP))
}

/// The instance's default IPv6 address, its primary IPv6 addresses by device index (empty
/// strings where an interface has none) and all its IPv6 addresses (VPC instances only).
fn ipv6_addresses(inst: &Instance) -> (Option<String>, Option<Vec<String>>, Option<Vec<String>>) {
    let mut primary: Option<Vec<String>> = None;
    let mut all: Option<Vec<String>> = None;
    if inst.vpc_id().is_some() {
        for eni in inst.network_interfaces() {
            if eni.subnet_id().is_none() {
                continue;
            }
            for a in eni.ipv6_addresses() {
                let Some(addr) = a.ipv6_address() else {
                    continue;
                };
                all.get_or_insert_with(Vec::new).push(addr.to_string());
                if a.is_primary_ipv6() == Some(true) {
                    let idx = eni
                        .attachment()
                        .and_then(|at| at.device_index())
                        .unwrap_or(0)
                        .max(0) as usize;
                    let p = primary.get_or_insert_with(Vec::new);
                    if p.len() <= idx {
                        p.resize(idx + 1, String::new());
                    }
                    p[idx] = addr.to_string();
                }
            }
        }
    }
    let default = primary
        .iter()
        .flatten()
        .chain(all.iter().flatten())
        .find(|a| !a.is_empty())
        .cloned();
    (default, primary, all)
}

/// The labels of one instance, or None when it has no address to scrape.
pub fn instance_labels(
    inst: &Instance,
    owner_id: Option<&str>,
    region: &str,
    port: u16,
    az_ids: &HashMap<String, String>,
) -> Option<BTreeMap<String, String>> {
    let (default_v6, primary_v6, all_v6) = ipv6_addresses(inst);
    let address = match (inst.private_ip_address(), &default_v6) {
        (Some(ip), _) => host_port(ip, port),
        (None, Some(v6)) => host_port(v6, port),
        (None, None) => return None,
    };
    let mut l = BTreeMap::new();
    let mut set = |k: &str, v: &str| {
        l.insert(format!("__meta_ec2_{k}"), v.to_string());
    };
    set("instance_id", inst.instance_id().unwrap_or_default());
    set("region", region);
    if let Some(o) = owner_id {
        set("owner_id", o);
    }
    if let Some(v6) = &default_v6 {
        set("default_ipv6_address", v6);
    }
    if let Some(ip) = inst.private_ip_address() {
        set("private_ip", ip);
    }
    if let Some(d) = inst.private_dns_name() {
        set("private_dns_name", d);
    }
    if let Some(p) = inst
        .platform()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
    {
        set("platform", p);
    }
    if let Some(ip) = inst.public_ip_address() {
        set("public_ip", ip);
        set(
            "public_dns_name",
            inst.public_dns_name().unwrap_or_default(),
        );
    }
    if let Some(p) = &primary_v6 {
        set("primary_ipv6_addresses", &joined(p));
    }
    if let Some(a) = &all_v6 {
        set("ipv6_addresses", &joined(a));
    }
    set("ami", inst.image_id().unwrap_or_default());
    let az = inst
        .placement()
        .and_then(|p| p.availability_zone())
        .unwrap_or_default();
    set("availability_zone", az);
    set(
        "availability_zone_id",
        az_ids.get(az).map(String::as_str).unwrap_or_default(),
    );
    set(
        "instance_state",
        inst.state()
            .and_then(|s| s.name())
            .map(|n| n.as_str())
            .unwrap_or_default(),
    );
    set(
        "instance_type",
        inst.instance_type().map(|t| t.as_str()).unwrap_or_default(),
    );
    if let Some(lc) = inst
        .instance_lifecycle()
        .map(|x| x.as_str())
        .filter(|x| !x.is_empty())
    {
        set("instance_lifecycle", lc);
    }
    if let Some(a) = inst
        .architecture()
        .map(|x| x.as_str())
        .filter(|x| !x.is_empty())
    {
        set("architecture", a);
    }
    if let Some(vpc) = inst.vpc_id() {
        set("vpc_id", vpc);
        set("primary_subnet_id", inst.subnet_id().unwrap_or_default());
        let mut subnets: Vec<String> = Vec::new();
        for s in inst
            .network_interfaces()
            .iter()
            .filter_map(|e| e.subnet_id())
        {
            if !subnets.iter().any(|x| x == s) {
                subnets.push(s.to_string());
            }
        }
        set("subnet_id", &joined(&subnets));
    }
    for t in inst.tags() {
        if let (Some(k), Some(v)) = (t.key(), t.value()) {
            l.insert(
                format!("__meta_ec2_tag_{}", sanitize_label_name(k)),
                v.to_string(),
            );
        }
    }
    l.insert("__address__".into(), address);
    Some(l)
}

/// Why a refresh failed (the message names no credential).
#[derive(Debug, thiserror::Error)]
pub enum Ec2SdError {
    #[error(transparent)]
    Config(#[from] crate::aws::AwsError),
    #[error("could not describe instances: {code}: {message}")]
    Api {
        code: String,
        message: String,
        /// The client is rebuilt (credentials reloaded) on the next refresh.
        auth: bool,
    },
}

/// The EC2 client of one `ec2_sd_configs` entry and what it learned once.
struct Discoverer {
    sd: Ec2Sd,
    client: Option<(aws_sdk_ec2::Client, String)>,
    /// Availability zone name -> zone ID; None until DescribeAvailabilityZones succeeded.
    az_ids: Option<HashMap<String, String>>,
}

impl Discoverer {
    async fn client(&mut self) -> Result<(aws_sdk_ec2::Client, String), Ec2SdError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let conf = crate::aws::sdk_config(&self.sd.auth, self.sd.ca_pem.as_deref()).await?;
        let region = conf.region().map(|r| r.to_string()).unwrap_or_default();
        let mut b = aws_sdk_ec2::config::Builder::from(&conf);
        if let Some(e) = &self.sd.endpoint {
            b = b.endpoint_url(e.clone());
        }
        let c = (aws_sdk_ec2::Client::from_conf(b.build()), region);
        self.client = Some(c.clone());
        Ok(c)
    }

    async fn refresh(&mut self) -> Result<TargetGroup, Ec2SdError> {
        let (client, region) = self.client().await?;
        if self.az_ids.is_none() {
            match client.describe_availability_zones().send().await {
                Ok(out) => {
                    self.az_ids = Some(
                        out.availability_zones()
                            .iter()
                            .filter_map(|z| {
                                Some((z.zone_name()?.to_string(), z.zone_id()?.to_string()))
                            })
                            .collect(),
                    )
                }
                Err(e) => tracing::debug!("ec2_sd: unable to describe availability zones: {e}"),
            }
        }
        let filters: Vec<Filter> = self
            .sd
            .filters
            .iter()
            .map(|(name, values)| {
                Filter::builder()
                    .name(name.clone())
                    .set_values(Some(values.clone()))
                    .build()
            })
            .collect();
        let empty = HashMap::new();
        let az_ids = self.az_ids.as_ref().unwrap_or(&empty);
        let mut pages = client
            .describe_instances()
            .set_filters((!filters.is_empty()).then_some(filters))
            .into_paginator()
            .send();
        let mut targets = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                let code = e.code().unwrap_or("error").to_string();
                let auth = code == "AuthFailure" || code == "UnauthorizedOperation";
                Ec2SdError::Api {
                    message: e
                        .message()
                        .map(str::to_string)
                        .unwrap_or_else(|| aws_sdk_ec2::error::DisplayErrorContext(&e).to_string()),
                    code,
                    auth,
                }
            });
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    if matches!(e, Ec2SdError::Api { auth: true, .. }) {
                        self.client = None;
                    }
                    return Err(e);
                }
            };
            for r in page.reservations() {
                for inst in r.instances() {
                    if let Some(l) =
                        instance_labels(inst, r.owner_id(), &region, self.sd.port, az_ids)
                    {
                        targets.push(l);
                    }
                }
            }
        }
        Ok(TargetGroup {
            source: region,
            targets,
            labels: BTreeMap::new(),
        })
    }
}

/// Refreshes one `ec2_sd_configs` entry every `refresh_interval` until stopped.
pub async fn run(
    key: String,
    sd: Ec2Sd,
    tx: mpsc::Sender<Update>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(sd.refresh_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut d = Discoverer {
        sd,
        client: None,
        az_ids: None,
    };
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let result = tokio::select! {
            r = d.refresh() => r,
            _ = stop.changed() => return,
        };
        match result {
            Ok(g) => {
                if tx.send((key.clone(), vec![g])).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::error!(discovery = %key, "ec2_sd: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::types::{
        ArchitectureValues, InstanceIpv6Address, InstanceLifecycleType, InstanceNetworkInterface,
        InstanceNetworkInterfaceAttachment, InstanceState, InstanceStateName, InstanceType,
        Placement, PlatformValues, Tag,
    };

    fn eni(subnet: &str, idx: i32, v6: &[(&str, bool)]) -> InstanceNetworkInterface {
        let mut b = InstanceNetworkInterface::builder()
            .subnet_id(subnet)
            .attachment(
                InstanceNetworkInterfaceAttachment::builder()
                    .device_index(idx)
                    .build(),
            );
        for (a, primary) in v6 {
            b = b.ipv6_addresses(
                InstanceIpv6Address::builder()
                    .ipv6_address(*a)
                    .is_primary_ipv6(*primary)
                    .build(),
            );
        }
        b.build()
    }

    #[test]
    fn labels_follow_prometheus() {
        let inst = Instance::builder()
            .instance_id("i-1")
            .image_id("ami-1")
            .private_ip_address("10.0.0.5")
            .private_dns_name("ip-10-0-0-5.ec2.internal")
            .public_ip_address("54.0.0.1")
            .public_dns_name("ec2-54-0-0-1.compute.amazonaws.com")
            .placement(Placement::builder().availability_zone("us-east-1a").build())
            .state(
                InstanceState::builder()
                    .name(InstanceStateName::Running)
                    .build(),
            )
            .instance_type(InstanceType::T3Micro)
            .instance_lifecycle(InstanceLifecycleType::Spot)
            .architecture(ArchitectureValues::Arm64)
            .platform(PlatformValues::from("windows")) // as the API answers it
            .vpc_id("vpc-1")
            .subnet_id("subnet-a")
            .network_interfaces(eni("subnet-a", 0, &[("2001:db8::1", false)]))
            .network_interfaces(eni("subnet-b", 2, &[("2001:db8::2", true)]))
            .network_interfaces(eni("subnet-a", 1, &[]))
            .tags(Tag::builder().key("Name").value("web-1").build())
            .tags(Tag::builder().key("aws:team-name").value("x").build())
            .build();
        let az = HashMap::from([("us-east-1a".to_string(), "use1-az6".to_string())]);
        let l =
            instance_labels(&inst, Some("123456789012"), "us-east-1", 9100, &az).expect("labels");
        let want = [
            ("__address__", "10.0.0.5:9100"),
            ("__meta_ec2_ami", "ami-1"),
            ("__meta_ec2_architecture", "arm64"),
            ("__meta_ec2_availability_zone", "us-east-1a"),
            ("__meta_ec2_availability_zone_id", "use1-az6"),
            ("__meta_ec2_default_ipv6_address", "2001:db8::2"),
            ("__meta_ec2_instance_id", "i-1"),
            ("__meta_ec2_instance_lifecycle", "spot"),
            ("__meta_ec2_instance_state", "running"),
            ("__meta_ec2_instance_type", "t3.micro"),
            ("__meta_ec2_ipv6_addresses", ",2001:db8::1,2001:db8::2,"),
            ("__meta_ec2_owner_id", "123456789012"),
            ("__meta_ec2_platform", "windows"),
            ("__meta_ec2_primary_ipv6_addresses", ",,,2001:db8::2,"),
            ("__meta_ec2_primary_subnet_id", "subnet-a"),
            ("__meta_ec2_private_dns_name", "ip-10-0-0-5.ec2.internal"),
            ("__meta_ec2_private_ip", "10.0.0.5"),
            (
                "__meta_ec2_public_dns_name",
                "ec2-54-0-0-1.compute.amazonaws.com",
            ),
            ("__meta_ec2_public_ip", "54.0.0.1"),
            ("__meta_ec2_region", "us-east-1"),
            ("__meta_ec2_subnet_id", ",subnet-a,subnet-b,"),
            ("__meta_ec2_tag_Name", "web-1"),
            ("__meta_ec2_tag_aws_team_name", "x"),
            ("__meta_ec2_vpc_id", "vpc-1"),
        ];
        let got: Vec<(&str, &str)> = l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, want);

        // IPv6-only: the default IPv6 address is the target; no VPC, no address: skipped.
        let v6 = Instance::builder()
            .instance_id("i-2")
            .vpc_id("vpc-1")
            .subnet_id("subnet-a")
            .network_interfaces(eni("subnet-a", 0, &[("2001:db8::9", false)]))
            .build();
        let l = instance_labels(&v6, None, "r", 80, &HashMap::new()).expect("v6 target");
        assert_eq!(l["__address__"], "[2001:db8::9]:80");
        assert_eq!(l["__meta_ec2_availability_zone_id"], "");
        assert!(!l.contains_key("__meta_ec2_primary_ipv6_addresses"));
        assert!(!l.contains_key("__meta_ec2_owner_id"));
        let none = Instance::builder().instance_id("i-3").build();
        assert!(instance_labels(&none, None, "r", 80, &HashMap::new()).is_none());
    }
}
