//! VPC, internet gateway, subnets, NAT gateways and route tables.

use super::*;

/// Everything the VPC is made of.
pub(super) fn push(b: &Build<'_>, out: &mut Vec<Desired>) {
    let cfg = b.cfg;
    let ctx = b.ctx;
    let ids = b.ids;
    let n = b.n;
    let vpc = b.vpc();
    let vpc_id = b.vpc_id();
    out.push(Desired::new(
        vpc.clone(),
        &VpcSpec {
            cidr: cfg.network.cidr.clone(),
            dns_hostnames: true,
            dns_support: true,
        },
        vec![],
    ));
    out.push(Desired::new(
        k(Kind::InternetGateway, "main"),
        &InternetGatewaySpec {
            vpc_id: vpc_id.clone(),
        },
        vec![vpc.clone()],
    ));
    for (t, tier) in TIERS.iter().enumerate() {
        for i in 0..n {
            let name = format!("{tier}-{}", az_letter(i));
            let cidr = cfg
                .subnet_cidr((t * 4 + i) as u32)
                .unwrap_or_else(|_| PENDING.to_string());
            out.push(Desired::new(
                k(Kind::Subnet, &name),
                &SubnetSpec {
                    vpc_id: vpc_id.clone(),
                    cidr,
                    az: ctx.azs[i].clone(),
                    tier: tier.to_string(),
                    map_public_ip: *tier == "public",
                },
                vec![vpc.clone()],
            ));
        }
    }
    let nats = cfg.network.nat_gateways.min(n);
    for i in 0..nats {
        let l = az_letter(i).to_string();
        out.push(Desired::new(
            k(Kind::ElasticIp, &format!("nat-{l}")),
            &ElasticIpSpec {
                domain: "vpc".into(),
            },
            vec![],
        ));
        out.push(Desired::new(
            k(Kind::NatGateway, &l),
            &NatGatewaySpec {
                subnet_id: ids.id(Kind::Subnet, &format!("public-{l}")),
                allocation_id: ids.id(Kind::ElasticIp, &format!("nat-{l}")),
            },
            vec![
                k(Kind::Subnet, &format!("public-{l}")),
                k(Kind::ElasticIp, &format!("nat-{l}")),
                k(Kind::InternetGateway, "main"),
            ],
        ));
    }
    let mut public_deps = b.subnet_keys("public");
    public_deps.push(k(Kind::InternetGateway, "main"));
    out.push(Desired::new(
        k(Kind::RouteTable, "public"),
        &RouteTableSpec {
            vpc_id: vpc_id.clone(),
            subnets: b.subnet_ids("public"),
            default_route: Some(ids.id(Kind::InternetGateway, "main")),
        },
        public_deps,
    ));
    for i in 0..n {
        let l = az_letter(i).to_string();
        let nat = if nats == 1 {
            "a".to_string()
        } else {
            l.clone()
        };
        out.push(Desired::new(
            k(Kind::RouteTable, &format!("private-{l}")),
            &RouteTableSpec {
                vpc_id: vpc_id.clone(),
                subnets: vec![ids.id(Kind::Subnet, &format!("private-{l}"))],
                default_route: Some(ids.id(Kind::NatGateway, &nat)),
            },
            vec![
                k(Kind::Subnet, &format!("private-{l}")),
                k(Kind::NatGateway, &nat),
            ],
        ));
    }
    out.push(Desired::new(
        k(Kind::RouteTable, "database"),
        &RouteTableSpec {
            vpc_id: vpc_id.clone(),
            subnets: b.subnet_ids("database"),
            default_route: None,
        },
        b.subnet_keys("database"),
    ));
}
