//! `ec2_sd_configs` end to end against moto's EC2 emulator on 127.0.0.1: instances started
//! with tags are discovered with their `__meta_ec2_*` labels, relabeled, scraped, and a
//! terminated instance's target disappears at the next refresh. A second job reaches EC2
//! through an assumed role (moto's STS).
//!
//! The instances' private addresses are not reachable, so relabeling keeps the discovered
//! address as a label and points `__address__` at a local target.

mod common;

use aws_sdk_ec2::types::{InstanceType, ResourceType, Tag, TagSpecification};
use common::moto::Moto;
use common::*;
use std::time::Duration;

const REGION: &str = "us-east-1";

async fn ec2(moto: &Moto) -> aws_sdk_ec2::Client {
    ec2_with(moto, None).await
}

/// A client for moto, trusting only `ca_pem` when given.
async fn ec2_with(moto: &Moto, ca_pem: Option<&[u8]>) -> aws_sdk_ec2::Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(pem) = ca_pem {
        loader = loader.http_client(metrics_agent::aws::https_client_with_ca(pem).expect("client"));
    }
    let conf = loader
        .region(aws_config::Region::new(REGION))
        .endpoint_url(&moto.url)
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    aws_sdk_ec2::Client::new(&conf)
}

/// Starts one instance with these tags; returns (instance id, private IP).
async fn run_instance(c: &aws_sdk_ec2::Client, tags: &[(&str, &str)]) -> (String, String) {
    let mut spec = TagSpecification::builder().resource_type(ResourceType::Instance);
    for (k, v) in tags {
        spec = spec.tags(Tag::builder().key(*k).value(*v).build());
    }
    let out = c
        .run_instances()
        .image_id("ami-03cf127a")
        .instance_type(InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .tag_specifications(spec.build())
        .send()
        .await
        .expect("run_instances");
    let i = &out.instances()[0];
    (
        i.instance_id().expect("id").to_string(),
        i.private_ip_address().expect("private ip").to_string(),
    )
}

fn up_series(prom: &Prometheus, selector: &str) -> Vec<serde_json::Value> {
    prom.query(&format!("up{{{selector}}}"))
}

#[test]
fn ec2_instances_are_discovered_relabeled_and_removed() {
    let dir = tempfile::tempdir().expect("tmp");
    let moto = Moto::start(dir.path());
    let prom = Prometheus::start(&dir.path().join("prom"));
    let target = Target::start(Flavor::TextGzip);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt.block_on(ec2(&moto));
    let (id1, ip1) = rt.block_on(run_instance(&client, &[("Name", "web-1"), ("env", "e2e")]));
    let (id2, ip2) = rt.block_on(run_instance(&client, &[("Name", "web-2"), ("env", "e2e")]));
    // Not matched by the filters: never discovered.
    let _ = rt.block_on(run_instance(&client, &[("Name", "db-1"), ("env", "other")]));
    let zones = rt
        .block_on(client.describe_availability_zones().send())
        .expect("zones");
    let az_ids: std::collections::HashMap<String, String> = zones
        .availability_zones()
        .iter()
        .filter_map(|z| Some((z.zone_name()?.to_string(), z.zone_id()?.to_string())))
        .collect();

    let relabel = format!(
        "    relabel_configs:
      - {{source_labels: [__meta_ec2_tag_Name], target_label: name}}
      - {{source_labels: [__address__], target_label: discovered}}
      - {{source_labels: [__meta_ec2_instance_id], target_label: instance_id}}
      - {{source_labels: [__meta_ec2_private_ip], target_label: private_ip}}
      - {{source_labels: [__meta_ec2_instance_state], target_label: state}}
      - {{source_labels: [__meta_ec2_instance_type], target_label: type}}
      - {{source_labels: [__meta_ec2_region], target_label: region}}
      - {{source_labels: [__meta_ec2_availability_zone], target_label: az}}
      - {{source_labels: [__meta_ec2_availability_zone_id], target_label: az_id}}
      - {{source_labels: [__meta_ec2_ami], target_label: ami}}
      - {{source_labels: [__meta_ec2_vpc_id], regex: 'vpc-.+', target_label: has_vpc, replacement: 'yes'}}
      - {{source_labels: [__meta_ec2_subnet_id], regex: ',subnet-[^,]+,', target_label: subnets_ok, replacement: 'yes'}}
      - {{source_labels: [__meta_ec2_owner_id], target_label: owner}}
      - {{target_label: __address__, replacement: '127.0.0.1:{}'}}
",
        target.port
    );
    let sd = |job: &str, extra: &str| {
        format!(
            "  - job_name: {job}
    ec2_sd_configs:
      - region: {REGION}
        endpoint: {}
        access_key: testing
        secret_key: testing
        refresh_interval: 1s
        port: 9100{extra}
        filters:
          - {{name: 'tag:env', values: [e2e]}}
          - {{name: instance-state-name, values: [pending, running]}}
{relabel}",
            moto.url
        )
    };
    let body = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n{}{}remote_write:\n  - url: {}\n    queue_config: {{max_shards: 1, min_backoff: 50ms, max_backoff: 500ms}}\n",
        sd("ec2", ""),
        sd(
            "ec2-role",
            "\n        role_arn: arn:aws:iam::123456789012:role/metrics-discovery\n        external_id: e2e"
        ),
        prom.write_url()
    );
    let cfg = dir.path().join("agent.yml");
    std::fs::write(&cfg, body).expect("write config");
    let none = dir.path().join("none");
    let none = none.to_str().expect("utf8");
    let agent = Agent::start(
        &cfg,
        &dir.path().join("wal"),
        &["--no-ecs"],
        &[
            ("RUST_LOG", "info"),
            // Nothing but moto: no instance metadata, no profile files, STS at moto.
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", none),
            ("AWS_SHARED_CREDENTIALS_FILE", none),
            ("AWS_ENDPOINT_URL_STS", &moto.url),
        ],
    );

    for job in ["ec2", "ec2-role"] {
        wait_until(
            &format!("{job}: both instances discovered"),
            Duration::from_secs(60),
            || {
                ["web-1", "web-2"]
                    .iter()
                    .all(|n| prom.scalar(&format!("up{{job=\"{job}\",name=\"{n}\"}}")) == Some(1.0))
            },
        );
    }
    let s = up_series(&prom, "job=\"ec2\",name=\"web-1\"");
    assert_eq!(s.len(), 1, "{s:?}");
    let m = &s[0]["metric"];
    let first_az = m["az"].as_str().expect("az").to_string();
    let want = [
        ("discovered", format!("{ip1}:9100")),
        ("instance_id", id1.clone()),
        ("private_ip", ip1.clone()),
        ("state", "running".into()),
        ("type", "t3.micro".into()),
        ("region", REGION.into()),
        ("az_id", az_ids.get(&first_az).cloned().unwrap_or_default()),
        ("ami", "ami-03cf127a".into()),
        ("has_vpc", "yes".into()),
        ("subnets_ok", "yes".into()),
        ("instance", format!("127.0.0.1:{}", target.port)),
    ];
    for (k, v) in &want {
        assert_eq!(m[*k].as_str(), Some(v.as_str()), "label {k} in {m}");
    }
    assert!(first_az.starts_with(REGION), "{m}");
    assert!(!m["az_id"].as_str().unwrap_or_default().is_empty(), "{m}");
    assert!(
        m["owner"].as_str().is_some_and(|o| o.len() == 12),
        "owner id in {m}"
    );
    assert!(up_series(&prom, "name=\"db-1\"").is_empty());

    // Terminating web-2 removes its target at the next refresh.
    rt.block_on(client.terminate_instances().instance_ids(&id2).send())
        .expect("terminate");
    wait_until("web-2's target gone", Duration::from_secs(60), || {
        up_series(&prom, "name=\"web-2\"").is_empty()
    });
    assert_eq!(
        prom.scalar("up{job=\"ec2\",name=\"web-1\"}"),
        Some(1.0),
        "web-1 stays"
    );
    let log = agent.log();
    assert!(log.contains("target removed"), "{log}");
    assert!(log.contains(&ip2) || log.contains("web-2"), "{log}");
    assert!(!log.contains("testing"), "a credential in the log: {log}");
}

/// A test CA and a certificate for 127.0.0.1 it signed: (CA PEM, cert file, key file).
fn test_ca(dir: &std::path::Path) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let ca = test_support::tls::TestCa::new();
    let leaf = ca.sign(&["127.0.0.1"]);
    let (c, k) = (dir.join("moto.pem"), dir.join("moto.key"));
    std::fs::write(&c, leaf.cert_pem()).expect("write");
    std::fs::write(&k, leaf.key_pem()).expect("write");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    (ca.pem(), c, k)
}

#[test]
fn ec2_api_over_tls_with_the_configured_ca() {
    let dir = tempfile::tempdir().expect("tmp");
    let (ca_pem, cert, key) = test_ca(dir.path());
    let moto = Moto::start_tls(dir.path(), &cert, &key);
    let prom = Prometheus::start(&dir.path().join("prom"));
    let target = Target::start(Flavor::TextGzip);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt.block_on(ec2_with(&moto, Some(ca_pem.as_bytes())));
    let (id, _) = rt.block_on(run_instance(&client, &[("Name", "tls-1")]));
    let job = |name: &str, tls: &str| {
        format!(
            "  - job_name: {name}
    ec2_sd_configs:
      - {{region: {REGION}, endpoint: '{}', access_key: testing, secret_key: testing, refresh_interval: 1s{tls}}}
    relabel_configs:
      - {{source_labels: [__meta_ec2_instance_id], target_label: instance_id}}
      - {{target_label: __address__, replacement: '127.0.0.1:{}'}}
",
            moto.url, target.port
        )
    };
    let body = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n{}{}remote_write:\n  - url: {}\n    queue_config: {{max_shards: 1, min_backoff: 50ms, max_backoff: 500ms}}\n",
        job("with-ca", ", tls_config: {ca_file: ca.pem}"),
        job("system-roots", ""),
        prom.write_url()
    );
    let cfg = dir.path().join("agent.yml");
    std::fs::write(&cfg, body).expect("write config");
    let none = dir.path().join("none");
    let none = none.to_str().expect("utf8");
    let agent = Agent::start(
        &cfg,
        &dir.path().join("wal"),
        &["--no-ecs"],
        &[
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", none),
            ("AWS_SHARED_CREDENTIALS_FILE", none),
        ],
    );
    wait_until("discovered over TLS", Duration::from_secs(60), || {
        prom.scalar(&format!("up{{job=\"with-ca\",instance_id=\"{id}\"}}")) == Some(1.0)
    });
    // The same endpoint with the system roots is refused: nothing discovered, the error logged.
    wait_until(
        "the untrusted endpoint's error",
        Duration::from_secs(30),
        || agent.log().contains("ec2_sd"),
    );
    assert!(up_series(&prom, "job=\"system-roots\"").is_empty());
}
