//! Certificate, ECR repositories, load balancer, target groups, listeners,
//! the WAF web ACL.

use super::*;

/// A DNS name as Route 53 shows it: lower case, with the final dot.
fn dns_name(n: &str) -> String {
    let n = n.to_ascii_lowercase();
    if n.ends_with('.') { n } else { format!("{n}.") }
}

/// What clients reach, and the registry the images come from.
pub(super) fn push(b: &Build<'_>, out: &mut Vec<Desired>) {
    let cfg = b.cfg;
    let ids = b.ids;
    let p = &b.p;
    let vpc = b.vpc();
    let vpc_id = b.vpc_id();
    let (cert_arn, cert_deps) = match &cfg.dns.certificate_arn {
        Some(arn) => (arn.clone(), vec![]),
        None => {
            out.push(Desired::new(
                k(Kind::Certificate, "main"),
                &CertificateSpec {
                    domain: cfg.dns.domain.clone(),
                    validation: "DNS".into(),
                },
                vec![],
            ));
            (
                ids.get(Kind::Certificate, "main", "arn"),
                vec![k(Kind::Certificate, "main")],
            )
        }
    };
    if let Some(zone) = &cfg.dns.hosted_zone
        && cfg.dns.certificate_arn.is_none()
    {
        // `NAME CNAME VALUE`, as the certificate reports it.
        let rec = ids.get(Kind::Certificate, "main", "validation_record");
        let mut parts = rec.split_whitespace();
        let (name, value) = match (parts.next(), parts.next(), parts.next()) {
            (Some(n), Some(_), Some(v)) if rec != PENDING => (dns_name(n), dns_name(v)),
            _ => (PENDING.to_string(), PENDING.to_string()),
        };
        out.push(Desired::new(
            k(Kind::ValidationRecord, "main"),
            &RecordSpec {
                zone: zone.clone(),
                name,
                record_type: "CNAME".into(),
                value,
                alias_zone_id: None,
                ttl: Some(300),
            },
            vec![k(Kind::Certificate, "main")],
        ));
    }
    for repo in ECR_REPOSITORIES {
        out.push(Desired::new(
            k(Kind::EcrRepository, repo),
            &EcrRepositorySpec {
                name: format!("{}/{repo}", cfg.project),
                scan_on_push: true,
                tag_mutability: "IMMUTABLE".into(),
            },
            vec![],
        ));
    }
    let mut lb_deps = b.subnet_keys("public");
    lb_deps.push(k(Kind::SecurityGroup, "alb"));
    lb_deps.push(k(Kind::InternetGateway, "main"));
    out.push(Desired::new(
        k(Kind::LoadBalancer, "main"),
        &LoadBalancerSpec {
            name: format!("{p}-alb"),
            scheme: "internet-facing".into(),
            subnets: b.subnet_ids("public"),
            security_groups: vec![b.sg("alb")],
        },
        lb_deps,
    ));
    if let Some(zone) = &cfg.dns.hosted_zone {
        let alb_dns = ids.get(Kind::LoadBalancer, "main", "dns_name");
        // The API's name, and Grafana's own host when it has one in the zone.
        let mut names = vec![("alb", cfg.dns.domain.clone())];
        if let Some(h) = cfg
            .grafana_service
            .host
            .as_ref()
            .filter(|_| cfg.grafana_service.enabled)
            && dns_name(h).ends_with(&format!(".{}", dns_name(zone)))
        {
            names.push((GRAFANA_SERVICE, h.clone()));
        }
        for (key, name) in names {
            out.push(Desired::new(
                k(Kind::DnsRecord, key),
                &RecordSpec {
                    zone: zone.clone(),
                    name: dns_name(&name),
                    record_type: "A".into(),
                    value: if alb_dns == PENDING {
                        alb_dns.clone()
                    } else {
                        dns_name(&alb_dns)
                    },
                    alias_zone_id: Some(ids.get(Kind::LoadBalancer, "main", "zone_id")),
                    ttl: None,
                },
                vec![k(Kind::LoadBalancer, "main")],
            ));
        }
    }
    for color in ["blue", "green"] {
        out.push(Desired::new(
            k(Kind::TargetGroup, color),
            &TargetGroupSpec {
                name: format!("{p}-{color}"),
                port: PROXY_PORT,
                protocol: "HTTP".into(),
                vpc_id: vpc_id.clone(),
                target_type: "ip".into(),
                health_check_path: HEALTH_CHECK_PATH.into(),
                health_check_port: STATUS_PORT.to_string(),
                health_check_interval: 15,
                healthy_threshold: 2,
                unhealthy_threshold: 3,
                matcher: "200".into(),
            },
            vec![vpc.clone()],
        ));
    }
    if cfg.grafana_service.enabled {
        // With a sub path Grafana answers under it, health check included.
        let health = match &cfg.grafana_service.host {
            Some(_) => "/api/health".to_string(),
            None => format!("{GRAFANA_PATH}/api/health"),
        };
        out.push(Desired::new(
            k(Kind::TargetGroup, "grafana"),
            &TargetGroupSpec {
                name: format!("{p}-grafana"),
                port: GRAFANA_PORT,
                protocol: "HTTP".into(),
                vpc_id: vpc_id.clone(),
                target_type: "ip".into(),
                health_check_path: health,
                health_check_port: GRAFANA_PORT.to_string(),
                health_check_interval: 30,
                healthy_threshold: 2,
                unhealthy_threshold: 3,
                matcher: "200".into(),
            },
            vec![vpc.clone()],
        ));
    }
    let live = live_color(ids);
    let idle = other_color(live);
    let lb_arn = ids.get(Kind::LoadBalancer, "main", "arn");
    let lb_and_tgs = vec![
        k(Kind::LoadBalancer, "main"),
        k(Kind::TargetGroup, "blue"),
        k(Kind::TargetGroup, "green"),
    ];
    let mut https_deps = lb_and_tgs.clone();
    https_deps.extend(cert_deps);
    out.push(Desired::new(
        k(Kind::Listener, "https"),
        &ListenerSpec {
            load_balancer_arn: lb_arn.clone(),
            port: 443,
            protocol: "HTTPS".into(),
            certificate_arn: Some(cert_arn.clone()),
            ssl_policy: Some(SSL_POLICY.into()),
            action: ListenerAction::Forward {
                target_group_arn: b.tg_arn(live),
            },
        },
        https_deps.clone(),
    ));
    out.push(Desired::new(
        k(Kind::Listener, "http"),
        &ListenerSpec {
            load_balancer_arn: lb_arn.clone(),
            port: 80,
            protocol: "HTTP".into(),
            certificate_arn: None,
            ssl_policy: None,
            action: ListenerAction::RedirectHttps,
        },
        vec![k(Kind::LoadBalancer, "main")],
    ));
    out.push(Desired::new(
        k(Kind::Listener, "test"),
        &ListenerSpec {
            load_balancer_arn: lb_arn.clone(),
            port: TEST_LISTENER_PORT,
            protocol: "HTTPS".into(),
            certificate_arn: Some(cert_arn),
            ssl_policy: Some(SSL_POLICY.into()),
            action: ListenerAction::Forward {
                target_group_arn: b.tg_arn(idle),
            },
        },
        https_deps,
    ));
    out.push(Desired::new(
        k(Kind::WebAcl, "main"),
        &WebAclSpec {
            name: format!("{p}-waf"),
            scope: "REGIONAL".into(),
            managed_rule_groups: WAF_MANAGED_RULE_GROUPS.map(String::from).to_vec(),
            rate_limit: cfg.waf.rate_limit_per_5min,
            load_balancer_arn: lb_arn,
        },
        vec![k(Kind::LoadBalancer, "main")],
    ));
}
