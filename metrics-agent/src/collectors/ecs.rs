//! ECS task metrics from the Task Metadata Endpoint v4 (`/task` and `/task/stats`).
//!
//! Metric names follow prometheus-community/ecs_exporter 0.4 (`ecs_*`) and cAdvisor
//! (`container_*`). Handles cgroup v1 and v2 stats, `null`/`{}` stats entries, the pause
//! container, and task-wide network counters on awsvpc/Fargate (emitted once, never summed).
//!
//! The structs below deliberately accept unknown fields: AWS adds fields without versioning.

use super::exposition::Exposition;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskMetadata {
    #[serde(default)]
    pub cluster: String,
    #[serde(default, rename = "TaskARN")]
    pub task_arn: String,
    #[serde(default)]
    pub family: String,
    #[serde(default)]
    pub revision: String,
    #[serde(default)]
    pub desired_status: String,
    #[serde(default)]
    pub known_status: String,
    #[serde(default)]
    pub availability_zone: String,
    #[serde(default)]
    pub launch_type: String,
    #[serde(default)]
    pub limits: Option<Limits>,
    #[serde(default)]
    pub containers: Vec<ContainerMetadata>,
    #[serde(default)]
    pub ephemeral_storage_metrics: Option<EphemeralStorage>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Limits {
    #[serde(default, rename = "CPU")]
    pub cpu: Option<f64>,
    #[serde(default)]
    pub memory: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EphemeralStorage {
    #[serde(default)]
    pub utilized: Option<f64>,
    #[serde(default)]
    pub reserved: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerMetadata {
    #[serde(default)]
    pub docker_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "Type")]
    pub kind: String,
    #[serde(default)]
    pub limits: Option<Limits>,
    #[serde(default)]
    pub restart_count: Option<f64>,
    #[serde(default)]
    pub networks: Vec<NetworkMetadata>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkMetadata {
    #[serde(default)]
    pub network_mode: String,
}

// dup: alike in shape only (other types and fields); kept apart on purpose.
#[derive(Debug, Default, Deserialize)]
pub struct Stats {
    #[serde(default)]
    pub read: Option<String>,
    #[serde(default)]
    pub preread: Option<String>,
    #[serde(default)]
    pub cpu_stats: Option<CpuStats>,
    #[serde(default)]
    pub precpu_stats: Option<CpuStats>,
    #[serde(default)]
    pub memory_stats: Option<MemoryStats>,
    #[serde(default)]
    pub blkio_stats: Option<BlkioStats>,
    #[serde(default)]
    pub networks: Option<BTreeMap<String, NetStats>>,
}

// dup: alike in shape only (other types and fields); kept apart on purpose.
#[derive(Debug, Default, Deserialize)]
pub struct CpuStats {
    #[serde(default)]
    pub cpu_usage: Option<CpuUsage>,
    #[serde(default)]
    pub throttling_data: Option<Throttling>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CpuUsage {
    #[serde(default)]
    pub total_usage: Option<f64>,
    #[serde(default)]
    pub usage_in_kernelmode: Option<f64>,
    #[serde(default)]
    pub usage_in_usermode: Option<f64>,
}

// dup: alike in shape only (other types and fields); kept apart on purpose.
#[derive(Debug, Default, Deserialize)]
pub struct Throttling {
    #[serde(default)]
    pub periods: Option<f64>,
    #[serde(default)]
    pub throttled_periods: Option<f64>,
    #[serde(default)]
    pub throttled_time: Option<f64>,
}

// dup: alike in shape only (other types and fields); kept apart on purpose.
#[derive(Debug, Default, Deserialize)]
pub struct MemoryStats {
    #[serde(default)]
    pub usage: Option<f64>,
    #[serde(default)]
    pub max_usage: Option<f64>,
    #[serde(default)]
    pub limit: Option<f64>,
    #[serde(default)]
    pub stats: Option<HashMap<String, f64>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct BlkioStats {
    #[serde(default)]
    pub io_service_bytes_recursive: Option<Vec<BlkioEntry>>,
    #[serde(default)]
    pub io_serviced_recursive: Option<Vec<BlkioEntry>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct BlkioEntry {
    #[serde(default)]
    pub op: String,
    #[serde(default)]
    pub value: f64,
}

#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
pub struct NetStats {
    #[serde(default)]
    pub rx_bytes: f64,
    #[serde(default)]
    pub rx_packets: f64,
    #[serde(default)]
    pub rx_errors: f64,
    #[serde(default)]
    pub rx_dropped: f64,
    #[serde(default)]
    pub tx_bytes: f64,
    #[serde(default)]
    pub tx_packets: f64,
    #[serde(default)]
    pub tx_errors: f64,
    #[serde(default)]
    pub tx_dropped: f64,
}

/// Docker reports "no limit" as a huge number (e.g. 9223372036854771712).
const UNLIMITED: f64 = 4.0e18;
const MIB: f64 = 1024.0 * 1024.0;

/// Previous CPU reading of a container, for utilisation between our own polls.
#[derive(Debug, Clone, Copy)]
struct CpuPoint {
    total_ns: f64,
    at_ns: f64,
}

/// Why the task metadata endpoint gave nothing usable.
#[derive(Debug, thiserror::Error)]
pub enum EcsError {
    #[error("GET {url}: {source}")]
    Fetch {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url}: HTTP {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("{what}: field `{path}`: {message}")]
    Decode {
        what: &'static str,
        path: String,
        message: String,
    },
    #[error("/task: no task id in TaskARN {0:?}")]
    NoTaskId(String),
}

pub struct EcsCollector {
    base: String,
    client: reqwest::Client,
    prev_cpu: HashMap<String, CpuPoint>,
}

impl EcsCollector {
    pub fn new(base: &str, client: reqwest::Client) -> Self {
        EcsCollector {
            base: base.trim_end_matches('/').to_string(),
            client,
            prev_cpu: HashMap::new(),
        }
    }

    async fn get(&self, path: &str) -> Result<String, EcsError> {
        let url = format!("{}{path}", self.base);
        let resp = match self.client.get(&url).send().await {
            Ok(r) => r,
            Err(source) => return Err(EcsError::Fetch { url, source }),
        };
        if !resp.status().is_success() {
            let status = resp.status();
            return Err(EcsError::Status { url, status });
        }
        resp.text()
            .await
            .map_err(|source| EcsError::Fetch { url, source })
    }

    /// The task's id (the last part of its ARN), for the `${ECS_TASK_ID}` config reference.
    pub async fn task_id(&self) -> Result<String, EcsError> {
        let task: TaskMetadata = decode("/task", &self.get("/task").await?)?;
        match task.task_arn.rsplit('/').next() {
            Some(id) if !id.is_empty() => Ok(id.to_string()),
            _ => Err(EcsError::NoTaskId(task.task_arn)),
        }
    }

    pub async fn collect(&mut self) -> Result<String, EcsError> {
        let task_json = self.get("/task").await?;
        let stats_json = self.get("/task/stats").await?;
        let task: TaskMetadata = decode("/task", &task_json)?;
        let stats: HashMap<String, Option<Stats>> = decode("/task/stats", &stats_json)?;
        Ok(render(&task, &stats, &mut self.prev_cpu))
    }
}

fn decode<T: serde::de::DeserializeOwned>(what: &'static str, body: &str) -> Result<T, EcsError> {
    let de = &mut serde_json::Deserializer::from_str(body);
    serde_path_to_error::deserialize(de).map_err(|e| EcsError::Decode {
        what,
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

fn short_cluster(c: &str) -> &str {
    c.rsplit('/').next().unwrap_or(c)
}

/// The exposition being rendered and the task's identifying labels, which every series gets.
struct Out<'a> {
    e: Exposition,
    ident: [(&'static str, &'a str); 5],
}

/// Label sets as owned pairs.
type LabelSet = Vec<(&'static str, String)>;

impl Out<'_> {
    /// The identifying labels plus `extra`.
    fn with(&self, extra: &[(&'static str, &str)]) -> LabelSet {
        self.ident
            .iter()
            .chain(extra.iter())
            .map(|(k, v)| (*k, v.to_string()))
            .collect()
    }

    fn put(&mut self, name: &str, labels: &[(&'static str, String)], v: f64) {
        let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.e.sample(name, &l, v);
    }
}

/// Renders the exposition for one poll. `prev_cpu` carries CPU readings between polls.
fn render(
    task: &TaskMetadata,
    stats: &HashMap<String, Option<Stats>>,
    prev_cpu: &mut HashMap<String, CpuPoint>,
) -> String {
    let mut out = Out {
        e: Exposition::new(),
        ident: [
            ("ecs_cluster", short_cluster(&task.cluster)),
            (
                "ecs_task_id",
                task.task_arn.rsplit('/').next().unwrap_or(""),
            ),
            ("ecs_task_family", task.family.as_str()),
            ("ecs_task_revision", task.revision.as_str()),
            ("availability_zone", task.availability_zone.as_str()),
        ],
    };
    let task_mem_limit = task.limits.as_ref().and_then(|l| l.memory).map(|m| m * MIB);
    render_task(&mut out, task, task_mem_limit);

    let shared_netns = shared_network_namespace(task);
    let mut task_net: BTreeMap<String, NetStats> = BTreeMap::new();
    let mut task_vcpus = 0.0;
    let mut seen_ids = Vec::new();
    for c in &task.containers {
        let Some(Some(st)) = stats.get(&c.docker_id) else {
            continue; // no stats yet (null or missing)
        };
        seen_ids.push(c.docker_id.clone());
        if st.read.is_none() && st.cpu_stats.is_none() && st.memory_stats.is_none() {
            continue; // `{}`
        }
        if let Some(nets) = &st.networks {
            add_networks(&mut task_net, nets, shared_netns);
        }
        if !c.kind.is_empty() && !c.kind.eq_ignore_ascii_case("NORMAL") {
            continue; // pause/CNI containers: network only
        }
        let name = c.name.trim_start_matches('/');
        let labels = ContainerLabels {
            ecs: out.with(&[("container_name", name)]),
            cadvisor: out.with(&[("name", name), ("container", name)]),
        };
        if let Some(r) = c.restart_count {
            out.put("ecs_container_restarts_total", &labels.ecs, r);
        }
        if let Some(cpu) = &st.cpu_stats {
            task_vcpus += render_cpu(&mut out, &labels, c, st, cpu, prev_cpu);
        }
        if let Some(m) = &st.memory_stats {
            render_memory(&mut out, &labels, c, m, task_mem_limit);
        }
        if let Some(b) = &st.blkio_stats {
            render_blkio(&mut out, &labels.cadvisor, b);
        }
    }
    prev_cpu.retain(|id, _| seen_ids.contains(id));
    let task_labels = out.with(&[]);
    out.put("ecs_task_cpu_utilized_vcpus", &task_labels, task_vcpus);
    render_networks(&mut out, &task_net);
    out.e.finish()
}

/// A container's label sets: ecs_exporter's (`container_name`) and cAdvisor's.
struct ContainerLabels {
    ecs: LabelSet,
    cadvisor: LabelSet,
}

/// Task-level series: metadata info, limits, ephemeral storage.
fn render_task(out: &mut Out<'_>, task: &TaskMetadata, task_mem_limit: Option<f64>) {
    let info = out.with(&[
        ("cluster", task.cluster.as_str()),
        ("task_arn", task.task_arn.as_str()),
        ("family", task.family.as_str()),
        ("revision", task.revision.as_str()),
        ("desired_status", task.desired_status.as_str()),
        ("known_status", task.known_status.as_str()),
        ("launch_type", task.launch_type.as_str()),
    ]);
    out.put("ecs_task_metadata_info", &info, 1.0);
    let l = out.with(&[]);
    if let Some(cpu) = task.limits.as_ref().and_then(|l| l.cpu) {
        out.put("ecs_task_cpu_limit_vcpus", &l, cpu);
    }
    if let Some(m) = task_mem_limit {
        out.put("ecs_task_memory_limit_bytes", &l, m);
    }
    if let Some(es) = &task.ephemeral_storage_metrics {
        if let Some(u) = es.utilized {
            out.put("ecs_task_ephemeral_storage_used_bytes", &l, u * MIB);
        }
        if let Some(r) = es.reserved {
            out.put("ecs_task_ephemeral_storage_allocated_bytes", &l, r * MIB);
        }
    }
}

/// True when the containers share the task's network namespace (awsvpc, which Fargate
/// always uses, and host mode): every container then reports the same counters.
fn shared_network_namespace(task: &TaskMetadata) -> bool {
    task.launch_type.eq_ignore_ascii_case("FARGATE")
        || task
            .containers
            .iter()
            .flat_map(|c| c.networks.iter())
            .any(|n| {
                n.network_mode.eq_ignore_ascii_case("awsvpc")
                    || n.network_mode.eq_ignore_ascii_case("host")
            })
}

/// Adds a container's interface counters to the task's: one copy in a shared namespace,
/// summed otherwise (bridge mode).
fn add_networks(
    task_net: &mut BTreeMap<String, NetStats>,
    nets: &BTreeMap<String, NetStats>,
    shared_netns: bool,
) {
    for (iface, n) in nets {
        if shared_netns {
            // Same counters in every container: keep one copy, never add them up.
            task_net.entry(iface.clone()).or_insert_with(|| n.clone());
        } else {
            let acc = task_net.entry(iface.clone()).or_default();
            acc.rx_bytes += n.rx_bytes;
            acc.rx_packets += n.rx_packets;
            acc.rx_errors += n.rx_errors;
            acc.rx_dropped += n.rx_dropped;
            acc.tx_bytes += n.tx_bytes;
            acc.tx_packets += n.tx_packets;
            acc.tx_errors += n.tx_errors;
            acc.tx_dropped += n.tx_dropped;
        }
    }
}

/// CPU series of a container; returns its utilisation in vCPUs (0 when not known yet).
fn render_cpu(
    out: &mut Out<'_>,
    labels: &ContainerLabels,
    c: &ContainerMetadata,
    st: &Stats,
    cpu: &CpuStats,
    prev_cpu: &mut HashMap<String, CpuPoint>,
) -> f64 {
    let (ecs_l, cad_l) = (&labels.ecs, &labels.cadvisor);
    let mut vcpus_used = 0.0;
    let usage = cpu.cpu_usage.as_ref();
    if let Some(total) = usage.and_then(|u| u.total_usage) {
        let secs = total / 1e9;
        out.put("ecs_container_cpu_usage_seconds_total", ecs_l, secs);
        out.put("container_cpu_usage_seconds_total", cad_l, secs);
        // Utilisation in vCPUs (ECS agent formula): CPU time delta / wall time delta,
        // between our own successive polls; `precpu_stats` only on the first poll.
        let now_ns = st.read.as_deref().and_then(crate::clock::parse_rfc3339_ns);
        let prev = prev_cpu.get(&c.docker_id).copied().or_else(|| {
            let pre = st.precpu_stats.as_ref()?;
            let pre_total = pre.cpu_usage.as_ref()?.total_usage?;
            let pre_at =
                crate::clock::parse_rfc3339_ns(st.preread.as_deref()?).filter(|t| *t > 0.0)?;
            Some(CpuPoint {
                total_ns: pre_total,
                at_ns: pre_at,
            })
        });
        if let Some(now_ns) = now_ns {
            if let Some(p) = prev
                && now_ns > p.at_ns
                && total >= p.total_ns
            {
                let vcpus = (total - p.total_ns) / (now_ns - p.at_ns);
                vcpus_used = vcpus;
                out.put("ecs_container_cpu_utilized_vcpus", ecs_l, vcpus);
            }
            prev_cpu.insert(
                c.docker_id.clone(),
                CpuPoint {
                    total_ns: total,
                    at_ns: now_ns,
                },
            );
        }
    }
    if let Some(u) = usage.and_then(|u| u.usage_in_usermode) {
        out.put("container_cpu_user_seconds_total", cad_l, u / 1e9);
    }
    if let Some(k) = usage.and_then(|u| u.usage_in_kernelmode) {
        out.put("container_cpu_system_seconds_total", cad_l, k / 1e9);
    }
    if let Some(t) = &cpu.throttling_data {
        if let Some(p) = t.periods {
            out.put("container_cpu_cfs_periods_total", cad_l, p);
        }
        if let Some(p) = t.throttled_periods {
            out.put("container_cpu_cfs_throttled_periods_total", cad_l, p);
        }
        if let Some(p) = t.throttled_time {
            out.put("container_cpu_cfs_throttled_seconds_total", cad_l, p / 1e9);
        }
    }
    vcpus_used
}

/// Memory series of a container (cgroup v1 or v2 field names).
fn render_memory(
    out: &mut Out<'_>,
    labels: &ContainerLabels,
    c: &ContainerMetadata,
    m: &MemoryStats,
    task_mem_limit: Option<f64>,
) {
    let (ecs_l, cad_l) = (&labels.ecs, &labels.cadvisor);
    let s = m.stats.clone().unwrap_or_default();
    let cgroup_v2 = s.contains_key("anon") || (!s.contains_key("cache") && s.contains_key("file"));
    if let Some(usage) = m.usage {
        out.put("ecs_container_memory_usage_bytes", ecs_l, usage);
        out.put("container_memory_usage_bytes", cad_l, usage);
        let inactive = if cgroup_v2 {
            s.get("inactive_file")
        } else {
            s.get("total_inactive_file")
                .or_else(|| s.get("inactive_file"))
        }
        .copied()
        .unwrap_or(0.0);
        let ws = (usage - inactive).max(0.0);
        out.put("ecs_container_memory_working_set_bytes", ecs_l, ws);
        out.put("container_memory_working_set_bytes", cad_l, ws);
    }
    let cache = if cgroup_v2 {
        s.get("file")
    } else {
        s.get("cache").or_else(|| s.get("total_cache"))
    };
    if let Some(c) = cache {
        out.put("ecs_container_memory_page_cache_size_bytes", ecs_l, *c);
        out.put("container_memory_cache", cad_l, *c);
    }
    let rss = if cgroup_v2 {
        s.get("anon")
    } else {
        s.get("rss").or_else(|| s.get("total_rss"))
    };
    if let Some(r) = rss {
        out.put("container_memory_rss", cad_l, *r);
    }
    if let Some(mx) = m.max_usage {
        out.put("ecs_container_memory_max_usage_bytes", ecs_l, mx);
        out.put("container_memory_max_usage_bytes", cad_l, mx);
    }
    let container_limit = c
        .limits
        .as_ref()
        .and_then(|l| l.memory)
        .filter(|m| *m > 0.0)
        .map(|m| m * MIB);
    let limit = m
        .limit
        .filter(|l| *l > 0.0 && *l < UNLIMITED)
        .or(container_limit)
        .or(task_mem_limit);
    if let Some(l) = limit {
        out.put("ecs_container_memory_limit_bytes", ecs_l, l);
        out.put("container_spec_memory_limit_bytes", cad_l, l);
    }
}

/// Block I/O series of a container (`op` matched case-insensitively: v2 writes lowercase).
fn render_blkio(out: &mut Out<'_>, cad_l: &[(&'static str, String)], b: &BlkioStats) {
    let sum = |entries: &Option<Vec<BlkioEntry>>, op: &str| -> Option<f64> {
        let v = entries.as_ref()?;
        Some(
            v.iter()
                .filter(|x| x.op.eq_ignore_ascii_case(op))
                .map(|x| x.value)
                .sum(),
        )
    };
    for (name, entries, op) in [
        (
            "container_fs_reads_bytes_total",
            &b.io_service_bytes_recursive,
            "read",
        ),
        (
            "container_fs_writes_bytes_total",
            &b.io_service_bytes_recursive,
            "write",
        ),
        ("container_fs_reads_total", &b.io_serviced_recursive, "read"),
        (
            "container_fs_writes_total",
            &b.io_serviced_recursive,
            "write",
        ),
    ] {
        if let Some(v) = sum(entries, op) {
            out.put(name, cad_l, v);
        }
    }
}

/// Task-level network series, one set per interface.
fn render_networks(out: &mut Out<'_>, task_net: &BTreeMap<String, NetStats>) {
    for (iface, n) in task_net {
        let l = out.with(&[("interface", iface.as_str())]);
        for (name, v) in [
            ("ecs_network_receive_bytes_total", n.rx_bytes),
            ("ecs_network_receive_packets_total", n.rx_packets),
            ("ecs_network_receive_errors_total", n.rx_errors),
            ("ecs_network_receive_packets_dropped_total", n.rx_dropped),
            ("ecs_network_transmit_bytes_total", n.tx_bytes),
            ("ecs_network_transmit_packets_total", n.tx_packets),
            ("ecs_network_transmit_errors_total", n.tx_errors),
            ("ecs_network_transmit_packets_dropped_total", n.tx_dropped),
        ] {
            out.put(name, &l, v);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::parser::{Format, parse, parse_series};

    pub const TASK_FARGATE: &str = include_str!("../../tests/fixtures/ecs/task_fargate.json");
    pub const STATS_FARGATE: &str =
        include_str!("../../tests/fixtures/ecs/task_stats_fargate_v1.json");
    pub const TASK_EC2: &str = include_str!("../../tests/fixtures/ecs/task_ec2_bridge.json");
    pub const STATS_EC2_V2: &str = include_str!("../../tests/fixtures/ecs/task_stats_ec2_v2.json");

    fn run(task: &str, stats: &str, prev: &mut HashMap<String, CpuPoint>) -> HashMap<String, f64> {
        let t: TaskMetadata = decode("/task", task).expect("task");
        let s: HashMap<String, Option<Stats>> = decode("/task/stats", stats).expect("stats");
        let text = render(&t, &s, prev);
        let mut out = HashMap::new();
        for smp in parse(&text, Format::Text).expect("parse") {
            let (name, labels) = parse_series(smp.series).expect("series");
            let keep: Vec<String> = labels
                .iter()
                .filter(|(k, _)| matches!(k.as_str(), "container_name" | "name" | "interface"))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            out.insert(format!("{name}{{{}}}", keep.join(",")), smp.value);
        }
        out
    }

    #[test]
    fn fargate_cgroup_v1_with_null_and_empty_entries() {
        let mut prev = HashMap::new();
        let m = run(TASK_FARGATE, STATS_FARGATE, &mut prev);
        assert_eq!(
            m["ecs_container_cpu_usage_seconds_total{container_name=app}"],
            2.445096927
        );
        assert_eq!(
            m["ecs_container_memory_usage_bytes{container_name=app}"],
            40611840.0
        );
        // v1 working set = usage - total_inactive_file
        assert_eq!(
            m["ecs_container_memory_working_set_bytes{container_name=app}"],
            40611840.0 - 946176.0
        );
        assert_eq!(
            m["ecs_container_memory_page_cache_size_bytes{container_name=app}"],
            11218944.0
        );
        // limit is "unlimited" in stats: falls back to the container limit (MiB)
        assert_eq!(
            m["ecs_container_memory_limit_bytes{container_name=app}"],
            256.0 * MIB
        );
        // awsvpc: both containers report eth1 = 12906990; emitted once, not summed.
        assert_eq!(
            m["ecs_network_receive_bytes_total{interface=eth1}"],
            12906990.0
        );
        // blkio ops in capitalised v1 form
        assert_eq!(m["container_fs_reads_bytes_total{name=app}"], 12288.0);
        assert_eq!(m["container_fs_writes_bytes_total{name=app}"], 172032.0);
        // sidecar stats are null, pending container stats are {}: no container series for them
        assert!(!m.keys().any(|k| k.contains("container_name=pending")));
        assert!(!m.keys().any(|k| k.contains("container_name=starting")));
        assert_eq!(m["ecs_task_cpu_limit_vcpus{}"], 0.25);
        assert_eq!(m["ecs_task_memory_limit_bytes{}"], 512.0 * MIB);
        assert_eq!(m["ecs_task_metadata_info{}"], 1.0);
        assert_eq!(m["ecs_task_ephemeral_storage_used_bytes{}"], 261.0 * MIB);
    }

    #[test]
    fn cpu_utilisation_uses_successive_polls() {
        let mut prev = HashMap::new();
        run(TASK_FARGATE, STATS_FARGATE, &mut prev);
        // Second poll 10 s later with 0.5 s more CPU -> 0.05 vCPU.
        let later = STATS_FARGATE
            .replace(
                "2025-04-28T03:30:22.254837493Z",
                "2025-04-28T03:30:32.254837493Z",
            )
            .replace("2445096927", "2945096927");
        let m = run(TASK_FARGATE, &later, &mut prev);
        let v = m["ecs_container_cpu_utilized_vcpus{container_name=app}"];
        assert!((v - 0.05).abs() < 1e-9, "{v}");
    }

    #[test]
    fn ec2_bridge_cgroup_v2_sums_per_container_networks() {
        let mut prev = HashMap::new();
        let m = run(TASK_EC2, STATS_EC2_V2, &mut prev);
        // v2: working set = usage - inactive_file; cache = file; rss = anon
        assert_eq!(
            m["ecs_container_memory_working_set_bytes{container_name=web}"],
            52428800.0 - 4194304.0
        );
        assert_eq!(m["container_memory_cache{name=web}"], 8388608.0);
        assert_eq!(m["container_memory_rss{name=web}"], 33554432.0);
        assert_eq!(
            m["ecs_container_memory_limit_bytes{container_name=web}"],
            536870912.0
        );
        // lowercase blkio ops (cgroup v2) are counted
        assert_eq!(
            m["container_fs_reads_bytes_total{name=web}"],
            4096.0 + 8192.0
        );
        // bridge mode: separate namespaces, task total is the sum
        assert_eq!(
            m["ecs_network_receive_bytes_total{interface=eth0}"],
            1000.0 + 2000.0
        );
        // the leading '/' of Docker names is removed; the pause container is not a container series
        assert!(m.contains_key("ecs_container_cpu_usage_seconds_total{container_name=worker}"));
        assert!(!m.keys().any(|k| k.contains("pause")));
        // no percpu_usage on v2 is fine
        assert_eq!(
            m["ecs_container_cpu_usage_seconds_total{container_name=web}"],
            120.5
        );
    }
}
