//! The gateway task definition: the gateway plus the metrics-agent sidecar,
//! secrets from Secrets Manager, awslogs, health checks, stop timeout.
//! Every change registers a new revision.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_ecs::types::{
    Compatibility, ContainerDefinition, HealthCheck, KeyValuePair, LogConfiguration, LogDriver,
    NetworkMode, PortMapping, RuntimePlatform, Secret, TaskDefinition, TaskDefinitionField,
    TransportProtocol,
};

use super::ecs_cluster::ecs_tags;
use super::{Aws, registry::Ops};
use crate::consts::{PROXY_PORT, STATUS_PORT};
use crate::error::{Error, Result};
use crate::model::{Actual, Desired, Key, Kind};
use crate::specs::{TaskDefinitionSpec, fnv1a};

pub const GATEWAY: &str = "gateway";
pub const AGENT: &str = "metrics-agent";
/// CPU units and MiB reserved for the metrics-agent sidecar.
pub const AGENT_CPU: i32 = 128;
pub const AGENT_MEMORY: i32 = 256;

pub fn family(aws: &Aws) -> String {
    format!("{}-gateway", aws.prefix)
}

pub(super) fn env_map(c: &ContainerDefinition) -> BTreeMap<String, String> {
    c.environment()
        .iter()
        .filter_map(|kv| Some((kv.name()?.to_string(), kv.value()?.to_string())))
        .collect()
}

pub(super) fn secret_map(c: &ContainerDefinition) -> BTreeMap<String, String> {
    c.secrets()
        .iter()
        .map(|s| (s.name().to_string(), s.value_from().to_string()))
        .collect()
}

pub(super) fn secrets(map: &BTreeMap<String, String>) -> Result<Vec<Secret>> {
    map.iter()
        .map(|(name, arn)| Secret::builder().name(name).value_from(arn).build())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::invalid(e.to_string()))
}

/// The gateway's environment variable holding the whole declarative
/// configuration (the gateway reads it when `--config` is absent).
pub const CONFIG_ENV: &str = "GATEWAY_CONFIG_STRING";

/// The declarative configuration a registered revision hands the gateway.
pub fn config_of(td: &TaskDefinition) -> Option<String> {
    td.container_definitions()
        .iter()
        .find(|c| c.name() == Some(GATEWAY))
        .and_then(|c| {
            c.environment()
                .iter()
                .find(|kv| kv.name() == Some(CONFIG_ENV))
                .and_then(|kv| kv.value())
                .map(str::to_string)
        })
}

/// Reads a registered revision back into the spec shape (the configuration
/// as its fingerprint, see [`config_of`] for the text).
pub fn spec_of(td: &TaskDefinition) -> TaskDefinitionSpec {
    let containers = td.container_definitions();
    let find = |n: &str| containers.iter().find(|c| c.name() == Some(n));
    let gw = find(GATEWAY);
    let agent = find(AGENT);
    TaskDefinitionSpec {
        family: td.family().unwrap_or_default().to_string(),
        cpu: td.cpu().unwrap_or_default().to_string(),
        memory: td.memory().unwrap_or_default().to_string(),
        execution_role_arn: td.execution_role_arn().unwrap_or_default().to_string(),
        task_role_arn: td.task_role_arn().unwrap_or_default().to_string(),
        gateway_image: gw.and_then(|c| c.image()).unwrap_or_default().to_string(),
        metrics_agent_image: agent
            .and_then(|c| c.image())
            .unwrap_or_default()
            .to_string(),
        log_group: gw
            .and_then(|c| c.log_configuration())
            .and_then(|l| l.options())
            .and_then(|o| o.get("awslogs-group"))
            .cloned()
            .unwrap_or_default(),
        stop_timeout: gw.and_then(|c| c.stop_timeout()).unwrap_or(0),
        gateway_environment: gw
            .map(env_map)
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| k != CONFIG_ENV)
            .collect(),
        agent_environment: agent.map(env_map).unwrap_or_default(),
        gateway_secrets: gw.map(secret_map).unwrap_or_default(),
        agent_secrets: agent.map(secret_map).unwrap_or_default(),
        gateway_config_hash: config_of(td)
            .map(|t| fnv1a(t.as_bytes()))
            .unwrap_or_default(),
    }
}

fn actual_of(td: &TaskDefinition) -> Actual {
    let spec = spec_of(td);
    let arn = td.task_definition_arn().unwrap_or_default();
    let a = Actual::new(Key::new(Kind::TaskDefinition, "gateway"), arn, &spec)
        .output("arn", arn)
        .output("revision", td.revision().to_string())
        .output("gateway_image", spec.gateway_image.clone())
        .output("metrics_agent_image", spec.metrics_agent_image.clone())
        .output("gateway_config_hash", spec.gateway_config_hash.clone());
    let a = match config_of(td) {
        Some(text) => a.output("gateway_config", text),
        None => a,
    };
    a.state(
        td.status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
    )
}

pub async fn describe(aws: &Aws, arn: &str) -> Result<TaskDefinition> {
    let out = aws
        .ecs
        .describe_task_definition()
        .task_definition(arn)
        .include(TaskDefinitionField::Tags)
        .send()
        .await
        .map_err(|e| Error::aws("ecs:DescribeTaskDefinition", e))?;
    out.task_definition
        .ok_or_else(|| Error::invalid(format!("task definition {arn} not found")))
}

/// ARNs of the ACTIVE revisions of the family, newest first.
pub async fn revisions(aws: &Aws) -> Result<Vec<String>> {
    family_revisions(aws, &family(aws)).await
}

/// ARNs of the ACTIVE revisions of `family`, newest first.
pub async fn family_revisions(aws: &Aws, family: &str) -> Result<Vec<String>> {
    let out = aws
        .ecs
        .list_task_definitions()
        .family_prefix(family)
        .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
        .send()
        .await
        .map_err(|e| Error::aws("ecs:ListTaskDefinitions", e))?;
    let fam = format!(":task-definition/{family}:");
    let mut arns: Vec<(i64, String)> = out
        .task_definition_arns()
        .iter()
        .filter(|a| a.contains(&fam))
        .filter_map(|a| Some((a.rsplit(':').next()?.parse().ok()?, a.clone())))
        .collect();
    arns.sort_by_key(|a| std::cmp::Reverse(a.0));
    Ok(arns.into_iter().map(|(_, a)| a).collect())
}

/// The newest ACTIVE revision is what the environment "has".
pub async fn observe(aws: &Aws) -> Result<Vec<Actual>> {
    let Some(latest) = revisions(aws).await?.into_iter().next() else {
        return Ok(Vec::new());
    };
    Ok(vec![actual_of(&describe(aws, &latest).await?)])
}

pub(super) fn kv(env: &BTreeMap<String, String>) -> Vec<KeyValuePair> {
    env.iter()
        .map(|(k, v)| KeyValuePair::builder().name(k).value(v).build())
        .collect()
}

pub(super) fn logs(log_group: &str, region: &str, stream_prefix: &str) -> Result<LogConfiguration> {
    let mut options = HashMap::new();
    options.insert("awslogs-group".to_string(), log_group.to_string());
    options.insert("awslogs-region".to_string(), region.to_string());
    options.insert(
        "awslogs-stream-prefix".to_string(),
        stream_prefix.to_string(),
    );
    LogConfiguration::builder()
        .log_driver(LogDriver::Awslogs)
        .set_options(Some(options))
        .build()
        .map_err(|e| Error::invalid(e.to_string()))
}

pub(super) fn port(p: i32) -> PortMapping {
    PortMapping::builder()
        .container_port(p)
        .protocol(TransportProtocol::Tcp)
        .build()
}

/// The configuration baked into the gateway image (used by revisions without
/// `GATEWAY_CONFIG_STRING`).
pub const IMAGE_CONFIG: &str = "/etc/gateway/kong.yml";

/// The images are distroless (no shell, no curl); they ship a small probe
/// binary, `/usr/local/bin/healthcheck URL`.
pub const PROBE: &str = "/usr/local/bin/healthcheck";

fn health(url: &str) -> Result<HealthCheck> {
    HealthCheck::builder()
        .command("CMD")
        .command(PROBE)
        .command(url)
        .interval(15)
        .timeout(5)
        .retries(3)
        .start_period(20)
        .build()
        .map_err(|e| Error::invalid(e.to_string()))
}

/// The container definitions for a spec and the gateway's declarative
/// configuration (public for unit tests and deploy). Without a
/// configuration the gateway runs the image's `/etc/gateway/kong.yml`.
pub fn containers(
    spec: &TaskDefinitionSpec,
    config: Option<&str>,
    region: &str,
) -> Result<Vec<ContainerDefinition>> {
    // The sidecar gets a fixed slice; the gateway the rest of the task.
    let cpu: i32 = spec
        .cpu
        .parse()
        .map_err(|_| Error::invalid("task cpu must be a number"))?;
    let memory: i32 = spec
        .memory
        .parse()
        .map_err(|_| Error::invalid("task memory must be a number"))?;
    let (agent_cpu, agent_mem) = (AGENT_CPU, AGENT_MEMORY);
    if cpu <= agent_cpu || memory <= agent_mem {
        return Err(Error::invalid(format!(
            "task needs more than {agent_cpu} CPU units and {agent_mem} MiB (the metrics-agent share)"
        )));
    }
    let mut gateway_env = spec.gateway_environment.clone();
    let command: Vec<String> = match config {
        Some(text) => {
            if fnv1a(text.as_bytes()) != spec.gateway_config_hash {
                return Err(Error::invalid(
                    "the gateway configuration does not match its fingerprint in the spec",
                ));
            }
            gateway_env.insert(CONFIG_ENV.to_string(), text.to_string());
            vec!["run".into()]
        }
        None => vec!["run".into(), "--config".into(), IMAGE_CONFIG.into()],
    };
    let gateway = ContainerDefinition::builder()
        .name(GATEWAY)
        .image(&spec.gateway_image)
        .essential(true)
        .cpu(cpu - agent_cpu)
        .memory(memory - agent_mem)
        .entry_point("/usr/local/bin/gateway")
        .set_command(Some(command))
        .port_mappings(port(PROXY_PORT))
        .port_mappings(port(STATUS_PORT))
        .set_environment(Some(kv(&gateway_env)))
        .set_secrets(Some(secrets(&spec.gateway_secrets)?))
        .log_configuration(logs(&spec.log_group, region, GATEWAY)?)
        .health_check(health(&format!("http://127.0.0.1:{STATUS_PORT}/health"))?)
        .stop_timeout(spec.stop_timeout)
        .readonly_root_filesystem(true)
        .build();
    let agent = ContainerDefinition::builder()
        .name(AGENT)
        .image(&spec.metrics_agent_image)
        // A failing sidecar must not take the gateway down with it.
        .essential(false)
        .cpu(agent_cpu)
        .memory(agent_mem)
        .entry_point("/usr/local/bin/metrics-agent")
        .command("run")
        .command("--config")
        .command("/etc/metrics-agent/ecs.yml")
        .command("--wal-dir")
        .command("/var/lib/metrics-agent")
        .set_environment(Some(kv(&spec.agent_environment)))
        .set_secrets(Some(secrets(&spec.agent_secrets)?))
        .log_configuration(logs(&spec.log_group, region, AGENT)?)
        .health_check(health("http://127.0.0.1:9464/ready")?)
        .stop_timeout(spec.stop_timeout)
        .build();
    Ok(vec![gateway, agent])
}

/// The task-level settings of a Fargate task definition.
pub struct FargateTask<'a> {
    pub family: &'a str,
    pub cpu: &'a str,
    pub memory: &'a str,
    pub execution_role_arn: &'a str,
    pub task_role_arn: &'a str,
}

/// Registers a revision of an awsvpc, Fargate, ARM64 task definition with
/// `containers`, tagged as `key` (the gateway's and Grafana's).
pub async fn register_fargate(
    aws: &Aws,
    key: &Key,
    task: &FargateTask<'_>,
    containers: Vec<ContainerDefinition>,
) -> Result<TaskDefinition> {
    let out = aws
        .ecs
        .register_task_definition()
        .family(task.family)
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .cpu(task.cpu)
        .memory(task.memory)
        .execution_role_arn(task.execution_role_arn)
        .task_role_arn(task.task_role_arn)
        .runtime_platform(
            RuntimePlatform::builder()
                .operating_system_family(aws_sdk_ecs::types::OsFamily::Linux)
                .cpu_architecture(aws_sdk_ecs::types::CpuArchitecture::Arm64)
                .build(),
        )
        .set_container_definitions(Some(containers))
        .set_tags(Some(ecs_tags(aws, key)))
        .send()
        .await
        .map_err(|e| Error::aws("ecs:RegisterTaskDefinition", e))?;
    out.task_definition
        .ok_or_else(|| Error::invalid("RegisterTaskDefinition returned nothing"))
}

/// Registers a new revision (create and update are the same thing).
pub async fn register(
    aws: &Aws,
    key: &Key,
    spec: &TaskDefinitionSpec,
    config: Option<&str>,
) -> Result<Actual> {
    let task = FargateTask {
        family: &spec.family,
        cpu: &spec.cpu,
        memory: &spec.memory,
        execution_role_arn: &spec.execution_role_arn,
        task_role_arn: &spec.task_role_arn,
    };
    let td = register_fargate(aws, key, &task, containers(spec, config, &aws.region)?).await?;
    Ok(actual_of(&td))
}

pub async fn create(aws: &Aws, d: &Desired) -> Result<Actual> {
    let spec: TaskDefinitionSpec = d.spec()?;
    let config = d.inputs.get("gateway_config").map(String::as_str);
    register(aws, &d.key, &spec, config).await
}

pub async fn deregister(aws: &Aws, arn: &str) -> Result<()> {
    aws.ecs
        .deregister_task_definition()
        .task_definition(arn)
        .send()
        .await
        .map_err(|e| Error::aws("ecs:DeregisterTaskDefinition", e))?;
    Ok(())
}

/// Deregisters every ACTIVE revision of the family, then deletes all
/// revisions (ECS keeps INACTIVE ones otherwise).
pub async fn delete(aws: &Aws, _a: &Actual) -> Result<()> {
    delete_family(aws, &family(aws)).await
}

/// Deregisters every revision of `family`, then deletes them.
pub async fn delete_family(aws: &Aws, family: &str) -> Result<()> {
    for arn in family_revisions(aws, family).await? {
        deregister(aws, &arn).await?;
    }
    let out = aws
        .ecs
        .list_task_definitions()
        .family_prefix(family)
        .status(aws_sdk_ecs::types::TaskDefinitionStatus::Inactive)
        .send()
        .await
        .map_err(|e| Error::aws("ecs:ListTaskDefinitions", e))?;
    let fam = format!(":task-definition/{family}:");
    let inactive: Vec<String> = out
        .task_definition_arns()
        .iter()
        .filter(|a| a.contains(&fam))
        .cloned()
        .collect();
    // DeleteTaskDefinitions takes at most 10 ARNs per call.
    for chunk in inactive.chunks(10) {
        aws.ecs
            .delete_task_definitions()
            .set_task_definitions(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| Error::aws("ecs:DeleteTaskDefinitions", e))?;
    }
    Ok(())
}

/// `TaskDefinition` in the registry (`aws/registry.rs`) (an update re-applies the whole spec).
pub const OPS: Ops = ops!(TaskDefinition, observe, create, (recreate create), delete);

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cpu: &str, memory: &str) -> TaskDefinitionSpec {
        TaskDefinitionSpec {
            family: "p-gateway".into(),
            cpu: cpu.into(),
            memory: memory.into(),
            execution_role_arn: "arn:exec".into(),
            task_role_arn: "arn:task".into(),
            gateway_image: "r/gateway:1".into(),
            metrics_agent_image: "r/metrics-agent:1".into(),
            log_group: "/ecs/p/gateway".into(),
            stop_timeout: 30,
            gateway_environment: [("GATEWAY_WORKERS".to_string(), "2".to_string())].into(),
            agent_environment: BTreeMap::new(),
            gateway_secrets: [("JWT_SECRET".to_string(), "arn:secret".to_string())].into(),
            agent_secrets: [(
                "METRICS_AGENT_POSTGRES_DSN".to_string(),
                "arn:dsn".to_string(),
            )]
            .into(),
            gateway_config_hash: String::new(),
        }
    }

    #[test]
    fn containers_split_resources_and_use_the_image_probe() {
        let c = containers(&spec("512", "1024"), None, "us-east-1").expect("containers");
        let (gw, agent) = (&c[0], &c[1]);
        assert_eq!(
            (gw.cpu(), gw.memory()),
            (512 - AGENT_CPU, Some(1024 - AGENT_MEMORY))
        );
        assert_eq!(
            (agent.cpu(), agent.memory()),
            (AGENT_CPU, Some(AGENT_MEMORY))
        );
        assert_eq!(gw.essential(), Some(true));
        assert_eq!(agent.essential(), Some(false));
        assert_eq!(gw.entry_point(), ["/usr/local/bin/gateway"]);
        assert_eq!(gw.command(), ["run", "--config", "/etc/gateway/kong.yml"]);
        let hc = gw.health_check().expect("health check");
        assert_eq!(hc.command(), ["CMD", PROBE, "http://127.0.0.1:8100/health"]);
        assert_eq!(gw.secrets()[0].name(), "JWT_SECRET");
        assert_eq!(agent.secrets()[0].name(), "METRICS_AGENT_POSTGRES_DSN");
        assert_eq!(agent.secrets()[0].value_from(), "arn:dsn");
        assert_eq!(gw.stop_timeout(), Some(30));
        let logs = gw
            .log_configuration()
            .and_then(|l| l.options())
            .expect("awslogs");
        assert_eq!(
            logs.get("awslogs-group").map(String::as_str),
            Some("/ecs/p/gateway")
        );
        assert!(
            containers(&spec("128", "1024"), None, "us-east-1").is_err(),
            "no room for the gateway"
        );
        assert!(containers(&spec("x", "1024"), None, "us-east-1").is_err());
    }

    #[test]
    fn the_configuration_goes_in_the_environment_and_reads_back_as_a_hash() {
        let text = "_format_version: \"3.0\"\n";
        let mut s = spec("512", "1024");
        assert!(
            containers(&s, Some(text), "us-east-1").is_err(),
            "a text that is not the spec's is refused"
        );
        s.gateway_config_hash = fnv1a(text.as_bytes());
        let c = containers(&s, Some(text), "us-east-1").expect("containers");
        assert_eq!(c[0].command(), ["run"], "no --config: the string is used");
        let td = TaskDefinition::builder()
            .family("p-gateway")
            .set_container_definitions(Some(c))
            .build();
        assert_eq!(config_of(&td).as_deref(), Some(text));
        let back = spec_of(&td);
        assert_eq!(back.gateway_config_hash, s.gateway_config_hash);
        assert!(!back.gateway_environment.contains_key(CONFIG_ENV));
        assert_eq!(back.gateway_environment, s.gateway_environment);
    }
}
