//! `docker_sd_configs`: containers of a Docker daemon (`/containers/json` with the
//! configured filters, and `/networks` for the network labels) every `refresh_interval`,
//! with Prometheus' `__meta_docker_*` labels: one target per network and TCP port of a
//! container (`<network IP>:<private port>`), or per network with `port` when it exposes
//! none (`host_networking_host` for host networking). Containers sharing another's network
//! (`container:<id>`) use that container's networks. The daemon is reached over its Unix
//! socket (`unix://`) or HTTP (`tcp://`, `http://`, `https://`, with the HTTP client
//! options). A failed refresh keeps the previous targets.

use crate::config::{DockerSd, TargetGroup};
use crate::discovery::{Update, host_port};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// One entry of `/containers/json` (the fields the discovery reads).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Container {
    pub id: String,
    pub names: Option<Vec<String>>,
    pub image: String,
    #[serde(rename = "ImageID")]
    pub image_id: String,
    pub ports: Option<Vec<Port>>,
    pub labels: Option<BTreeMap<String, String>>,
    pub host_config: HostConfig,
    pub network_settings: NetworkSettings,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Port {
    #[serde(rename = "IP")]
    pub ip: String,
    pub private_port: u16,
    pub public_port: u16,
    #[serde(rename = "Type")]
    pub kind: String,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct HostConfig {
    pub network_mode: String,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct NetworkSettings {
    pub networks: Option<BTreeMap<String, Option<Endpoint>>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Endpoint {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    #[serde(rename = "GlobalIPv6Address")]
    pub global_ipv6_address: String,
}

/// One entry of `/networks`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Network {
    pub id: String,
    pub name: String,
    pub scope: String,
    pub internal: bool,
    pub ingress: bool,
    pub labels: Option<BTreeMap<String, String>>,
}

/// `__meta_docker_network_*` labels by network ID.
pub fn network_labels(networks: &[Network]) -> HashMap<String, BTreeMap<String, String>> {
    networks
        .iter()
        .map(|n| {
            let mut l = BTreeMap::from([
                ("__meta_docker_network_id".to_string(), n.id.clone()),
                ("__meta_docker_network_name".to_string(), n.name.clone()),
                ("__meta_docker_network_scope".to_string(), n.scope.clone()),
                (
                    "__meta_docker_network_internal".to_string(),
                    n.internal.to_string(),
                ),
                (
                    "__meta_docker_network_ingress".to_string(),
                    n.ingress.to_string(),
                ),
            ]);
            for (k, v) in n.labels.iter().flatten() {
                l.insert(
                    format!(
                        "__meta_docker_network_label_{}",
                        crate::discovery::sanitize_label_name(k)
                    ),
                    v.clone(),
                );
            }
            (n.id.clone(), l)
        })
        .collect()
}

fn valid_ip(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

/// The targets of a container list, as Prometheus builds them.
pub fn targets(
    sd: &DockerSd,
    containers: &[Container],
    networks: &HashMap<String, BTreeMap<String, String>>,
) -> Vec<BTreeMap<String, String>> {
    let by_id: HashMap<&str, &Container> = containers.iter().map(|c| (c.id.as_str(), c)).collect();
    let mut out = Vec::new();
    for c in containers {
        let Some(name) = c.names.as_ref().and_then(|n| n.first()) else {
            continue;
        };
        let mut common = BTreeMap::from([
            ("__meta_docker_container_id".to_string(), c.id.clone()),
            ("__meta_docker_container_name".to_string(), name.clone()),
            (
                "__meta_docker_container_network_mode".to_string(),
                c.host_config.network_mode.clone(),
            ),
        ]);
        if !c.image.is_empty() {
            common.insert("__meta_docker_container_image".into(), c.image.clone());
        }
        if !c.image_id.is_empty() {
            common.insert(
                "__meta_docker_container_image_id".into(),
                c.image_id.clone(),
            );
        }
        for (k, v) in c.labels.iter().flatten() {
            common.insert(
                format!(
                    "__meta_docker_container_label_{}",
                    crate::discovery::sanitize_label_name(k)
                ),
                v.clone(),
            );
        }
        let mut nets: BTreeMap<String, Option<Endpoint>> =
            c.network_settings.networks.clone().unwrap_or_default();
        let mut mode = c.host_config.network_mode.clone();
        // `container:<id>`: the networks of the container whose stack it shares.
        while nets.is_empty() {
            let Some(other) = mode.strip_prefix("container:").and_then(|id| by_id.get(id)) else {
                break;
            };
            nets = other.network_settings.networks.clone().unwrap_or_default();
            mode = other.host_config.network_mode.clone();
        }
        if sd.match_first_network && nets.len() > 1 {
            // The alphabetically first network that has settings.
            if let Some((k, v)) = nets.iter().find(|(_, v)| v.is_some()) {
                nets = BTreeMap::from([(k.clone(), v.clone())]);
            }
        }
        for n in nets.values().flatten() {
            let ip = if valid_ip(&n.ip_address) {
                n.ip_address.clone()
            } else if valid_ip(&n.global_ipv6_address) {
                n.global_ipv6_address.clone()
            } else {
                String::new()
            };
            let base = |extra: BTreeMap<String, String>| {
                let mut l = extra;
                l.insert("__meta_docker_network_ip".into(), ip.clone());
                l.extend(common.iter().map(|(k, v)| (k.clone(), v.clone())));
                if let Some(nl) = networks.get(&n.network_id) {
                    l.extend(nl.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                l
            };
            let mut added = false;
            for p in c.ports.iter().flatten().filter(|p| p.kind == "tcp") {
                let mut extra = BTreeMap::from([(
                    "__meta_docker_port_private".to_string(),
                    p.private_port.to_string(),
                )]);
                if p.public_port > 0 {
                    extra.insert(
                        "__meta_docker_port_public".into(),
                        p.public_port.to_string(),
                    );
                    extra.insert(
                        "__meta_docker_port_public_ip".into(),
                        if valid_ip(&p.ip) {
                            p.ip.clone()
                        } else {
                            String::new()
                        },
                    );
                }
                let mut l = base(extra);
                l.insert("__address__".into(), host_port(&ip, p.private_port));
                out.push(l);
                added = true;
            }
            if !added {
                let mut l = base(BTreeMap::new());
                let addr = if c.host_config.network_mode != "host" {
                    host_port(&ip, sd.port)
                } else {
                    sd.host_networking_host.clone()
                };
                l.insert("__address__".into(), addr);
                out.push(l);
            }
        }
    }
    out
}

/// Why a refresh failed.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("{0}")]
    Hyper(#[from] hyper::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{path}: HTTP {status}: {body}")]
    Status {
        path: String,
        status: u16,
        body: String,
    },
    #[error("{path}: {source}")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Secret(#[from] crate::config::SecretError),
    #[error("{0}")]
    Other(String),
}

enum Transport {
    Unix(std::path::PathBuf),
    Http {
        base: String,
        client: reqwest::Client,
    },
}

impl Transport {
    fn new(sd: &DockerSd) -> Result<Transport, DockerError> {
        if let Some(path) = sd.host.strip_prefix("unix://") {
            return Ok(Transport::Unix(path.into()));
        }
        let base = match sd.host.strip_prefix("tcp://") {
            Some(rest) => format!("http://{rest}"),
            None => sd.host.clone(),
        };
        let builder = reqwest::Client::builder().timeout(sd.refresh_interval);
        let client = crate::http_client::build(&sd.http, builder)
            .map_err(|e| DockerError::Other(e.to_string()))?;
        Ok(Transport::Http {
            base: base.trim_end_matches('/').to_string(),
            client,
        })
    }

    /// GET `path_query`: status and body.
    async fn get(
        &self,
        sd: &DockerSd,
        path_query: &str,
    ) -> Result<(u16, bytes::Bytes), DockerError> {
        match self {
            Transport::Http { base, client } => {
                let mut req = client.get(format!("{base}{path_query}")).header(
                    "User-Agent",
                    concat!("metrics-agent/", env!("CARGO_PKG_VERSION")),
                );
                if let Some(a) = &sd.http.auth {
                    req = a.apply(req)?;
                }
                let resp = req.send().await?;
                let status = resp.status().as_u16();
                Ok((status, resp.bytes().await?))
            }
            Transport::Unix(path) => {
                use http_body_util::BodyExt;
                let stream = tokio::net::UnixStream::connect(path).await?;
                let (mut send, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await?;
                let conn = tokio::spawn(conn);
                let req = hyper::Request::get(path_query)
                    .header("Host", "docker")
                    .header(
                        "User-Agent",
                        concat!("metrics-agent/", env!("CARGO_PKG_VERSION")),
                    )
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .map_err(|e| DockerError::Other(e.to_string()))?;
                let resp = send.send_request(req).await?;
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await?.to_bytes();
                conn.abort();
                Ok((status, body))
            }
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        sd: &DockerSd,
        path_query: &str,
    ) -> Result<T, DockerError> {
        let (status, body) = self.get(sd, path_query).await?;
        let path = path_query.split('?').next().unwrap_or_default().to_string();
        if status != 200 {
            return Err(DockerError::Status {
                path,
                status,
                body: String::from_utf8_lossy(&body).chars().take(256).collect(),
            });
        }
        serde_json::from_slice(&body).map_err(|source| DockerError::Json { path, source })
    }
}

/// `/containers/json` with the filters in Docker's JSON encoding.
fn containers_path(sd: &DockerSd) -> String {
    if sd.filters.is_empty() {
        return "/containers/json".into();
    }
    let mut m: BTreeMap<&str, BTreeMap<&str, bool>> = BTreeMap::new();
    for (name, values) in &sd.filters {
        let e = m.entry(name.as_str()).or_default();
        for v in values {
            e.insert(v.as_str(), true);
        }
    }
    let json = serde_json::to_string(&m).unwrap_or_default();
    let encoded = crate::discovery::percent_encode(&json);
    format!("/containers/json?filters={encoded}")
}

async fn refresh(t: &Transport, sd: &DockerSd) -> Result<TargetGroup, DockerError> {
    let containers: Vec<Container> = t.get_json(sd, &containers_path(sd)).await?;
    let networks: Vec<Network> = t.get_json(sd, "/networks").await?;
    Ok(TargetGroup {
        source: "Docker".into(),
        targets: targets(sd, &containers, &network_labels(&networks)),
        labels: BTreeMap::new(),
    })
}

/// Refreshes one `docker_sd_configs` entry every `refresh_interval` until stopped.
pub async fn run(
    key: String,
    sd: DockerSd,
    tx: mpsc::Sender<Update>,
    mut stop: watch::Receiver<bool>,
) {
    let t = match Transport::new(&sd) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(discovery = %key, "docker_sd: {e}");
            return;
        }
    };
    let mut tick = tokio::time::interval(sd.refresh_interval.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let r = tokio::select! {
            r = tokio::time::timeout(sd.refresh_interval.max(Duration::from_secs(1)), refresh(&t, &sd)) => r,
            _ = stop.changed() => return,
        };
        match r {
            Ok(Ok(g)) => {
                if tx.send((key.clone(), vec![g])).await.is_err() {
                    return;
                }
            }
            Ok(Err(e)) => {
                tracing::error!(discovery = %key, "docker_sd: error while listing containers: {e}")
            }
            Err(_) => tracing::error!(discovery = %key, "docker_sd: listing containers timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd() -> DockerSd {
        crate::config::parse(
            std::path::Path::new("p.yml"),
            "scrape_configs:\n  - job_name: d\n    docker_sd_configs: [{host: 'unix:///var/run/docker.sock', filters: [{name: label, values: ['a=b']}]}]\n",
        )
        .expect("config")
        .jobs[0]
            .docker_sd[0]
            .clone()
    }

    #[test]
    fn filters_are_docker_json() {
        assert_eq!(
            containers_path(&sd()),
            "/containers/json?filters=%7B%22label%22%3A%7B%22a%3Db%22%3Atrue%7D%7D"
        );
    }

    #[test]
    fn labels_follow_prometheus() {
        // Shapes from Docker's API reference (ContainerSummary, Network).
        let containers: Vec<Container> = serde_json::from_str(r#"[
          {"Id": "8dfafdbc3a40", "Names": ["/boring_feynman"], "Image": "ubuntu:latest",
           "ImageID": "sha256:d74508fb6632", "Command": "echo 1", "Created": 1367854155,
           "State": "running", "Status": "Up 2 hours",
           "Ports": [{"PrivatePort": 2222, "PublicPort": 3333, "Type": "tcp", "IP": "0.0.0.0"},
                     {"PrivatePort": 53, "Type": "udp"}],
           "Labels": {"com.example.vendor": "Acme"},
           "HostConfig": {"NetworkMode": "default"},
           "NetworkSettings": {"Networks": {"bridge": {"NetworkID": "7ea29fc1412292a2d7bba362f9253545fecdfa8ce9a6e37dd10ba8bee7129812",
               "EndpointID": "2cdc4edb1ded", "Gateway": "172.17.0.1", "IPAddress": "172.17.0.2",
               "IPPrefixLen": 16, "IPv6Gateway": "", "GlobalIPv6Address": "", "MacAddress": "02:42:ac:11:00:02"}}}},
          {"Id": "sidecar1", "Names": ["/sidecar"], "Image": "envoy", "ImageID": "",
           "Ports": [], "Labels": {}, "HostConfig": {"NetworkMode": "container:8dfafdbc3a40"},
           "NetworkSettings": {"Networks": {}}},
          {"Id": "hostnet", "Names": ["/node-exporter"], "Image": "node-exporter", "Ports": [],
           "HostConfig": {"NetworkMode": "host"},
           "NetworkSettings": {"Networks": {"host": {"NetworkID": "hostid", "IPAddress": ""}}}},
          {"Id": "nonames", "Names": [], "HostConfig": {"NetworkMode": "default"}}
        ]"#).expect("json");
        let networks: Vec<Network> = serde_json::from_str(r#"[
          {"Name": "bridge", "Id": "7ea29fc1412292a2d7bba362f9253545fecdfa8ce9a6e37dd10ba8bee7129812",
           "Created": "2016-10-19T06:21:00.416543526Z", "Scope": "local", "Driver": "bridge",
           "EnableIPv6": false, "Internal": false, "Attachable": false, "Ingress": false,
           "Options": {}, "Labels": {"com.example.some-label": "some-value"}}
        ]"#).expect("json");
        let t = targets(&sd(), &containers, &network_labels(&networks));
        assert_eq!(t.len(), 3, "{t:?}");
        let got: Vec<(&str, &str)> = t[0].iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            [
                ("__address__", "172.17.0.2:2222"),
                ("__meta_docker_container_id", "8dfafdbc3a40"),
                ("__meta_docker_container_image", "ubuntu:latest"),
                ("__meta_docker_container_image_id", "sha256:d74508fb6632"),
                ("__meta_docker_container_label_com_example_vendor", "Acme"),
                ("__meta_docker_container_name", "/boring_feynman"),
                ("__meta_docker_container_network_mode", "default"),
                (
                    "__meta_docker_network_id",
                    "7ea29fc1412292a2d7bba362f9253545fecdfa8ce9a6e37dd10ba8bee7129812"
                ),
                ("__meta_docker_network_ingress", "false"),
                ("__meta_docker_network_internal", "false"),
                ("__meta_docker_network_ip", "172.17.0.2"),
                (
                    "__meta_docker_network_label_com_example_some_label",
                    "some-value"
                ),
                ("__meta_docker_network_name", "bridge"),
                ("__meta_docker_network_scope", "local"),
                ("__meta_docker_port_private", "2222"),
                ("__meta_docker_port_public", "3333"),
                ("__meta_docker_port_public_ip", "0.0.0.0"),
            ]
        );
        // The sidecar shares the first container's network: its IP with the default port.
        assert_eq!(t[1]["__address__"], "172.17.0.2:80");
        assert_eq!(
            t[1]["__meta_docker_container_network_mode"],
            "container:8dfafdbc3a40"
        );
        assert!(!t[1].contains_key("__meta_docker_container_image_id"));
        // Host networking: host_networking_host.
        assert_eq!(t[2]["__address__"], "localhost");
        assert_eq!(t[2]["__meta_docker_network_ip"], "");
    }
}
