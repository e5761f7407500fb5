//! `docker_sd_configs` end to end against a Docker Engine API fixture: `/containers/json`
//! (with the `label` filter as the daemon applies it) and `/networks`, answering with the
//! shapes of Docker's API reference, served on a Unix socket (as `/var/run/docker.sock`)
//! and on 127.0.0.1 over TCP. Containers are discovered with their `__meta_docker_*`
//! labels; a removed container's target disappears at the next refresh.

mod common;

use common::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type State = Arc<Mutex<(Vec<Value>, Vec<String>)>>;

/// `key` or `key=value` label filters, as the daemon matches them.
fn label_matches(c: &Value, filter: &str) -> bool {
    let labels = &c["Labels"];
    match filter.split_once('=') {
        Some((k, v)) => labels[k].as_str() == Some(v),
        None => labels.get(filter).is_some(),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = s
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

fn handle(target: &str, state: &State) -> (&'static str, String) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut st = state.lock().expect("lock");
    st.1.push(target.to_string());
    match path {
        "/containers/json" => {
            let mut labels: Vec<String> = Vec::new();
            for kv in query.split('&').filter(|x| !x.is_empty()) {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                if k != "filters" {
                    continue;
                }
                let f: Value = serde_json::from_str(&percent_decode(v)).unwrap_or_default();
                for (name, vals) in f.as_object().into_iter().flatten() {
                    if name != "label" {
                        return ("400 Bad Request", json!({"message": format!("invalid filter '{name}'")}).to_string());
                    }
                    labels.extend(vals.as_object().into_iter().flatten().map(|(k, _)| k.clone()));
                }
            }
            let list: Vec<&Value> = st
                .0
                .iter()
                .filter(|c| labels.iter().all(|l| label_matches(c, l)))
                .collect();
            ("200 OK", json!(list).to_string())
        }
        "/networks" => (
            "200 OK",
            json!([{"Name": "bridge", "Id": "net-bridge-0123", "Created": "2016-10-19T06:21:00.416543526Z",
                    "Scope": "local", "Driver": "bridge", "EnableIPv6": false, "Internal": false,
                    "Attachable": false, "Ingress": false, "IPAM": {"Driver": "default", "Config": [{"Subnet": "172.17.0.0/16"}]},
                    "Options": {"com.docker.network.bridge.default_bridge": "true"},
                    "Labels": {"com.example.net-tier": "backend"}}])
            .to_string(),
        ),
        _ => ("404 Not Found", json!({"message": "page not found"}).to_string()),
    }
}

fn serve<S: std::io::Read + Write>(s: S, state: &State) {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).map(|n| n == 0).unwrap_or(true) || h == "\r\n" {
            break;
        }
    }
    let (status, body) = handle(&target, state);
    let mut s = r.into_inner();
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nApi-Version: 1.45\r\nContent-Type: application/json\r\nServer: Docker/26.1.5 (linux)\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

struct Daemon {
    state: State,
    tcp_port: u16,
    socket: std::path::PathBuf,
    stop: Arc<AtomicBool>,
}

impl Daemon {
    fn start(dir: &std::path::Path) -> Daemon {
        let state: State = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let socket = dir.join("docker.sock");
        let ul = std::os::unix::net::UnixListener::bind(&socket).expect("bind socket");
        ul.set_nonblocking(true).expect("nonblocking");
        let tl = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let tcp_port = tl.local_addr().expect("addr").port();
        tl.set_nonblocking(true).expect("nonblocking");
        let (st, stp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stp.load(Ordering::Relaxed) {
                let mut idle = true;
                if let Ok((s, _)) = ul.accept() {
                    let _ = s.set_nonblocking(false);
                    serve(s, &st);
                    idle = false;
                }
                if let Ok((s, _)) = tl.accept() {
                    let _ = s.set_nonblocking(false);
                    serve(s, &st);
                    idle = false;
                }
                if idle {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        Daemon {
            state,
            tcp_port,
            socket,
            stop,
        }
    }

    fn set(&self, containers: Vec<Value>) {
        self.state.lock().expect("lock").0 = containers;
    }

    fn requests(&self) -> Vec<String> {
        self.state.lock().expect("lock").1.clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A ContainerSummary as the Docker API reference shows it, on the bridge network.
fn container(id: &str, name: &str, ports: Value, labels: Value) -> Value {
    json!({
        "Id": id, "Names": [format!("/{name}")], "Image": format!("example/{name}:1.0"),
        "ImageID": format!("sha256:{id}{id}"), "Command": "/bin/app", "Created": 1_733_000_000,
        "Ports": ports, "Labels": labels, "State": "running", "Status": "Up 5 minutes",
        "HostConfig": {"NetworkMode": "bridge"},
        "NetworkSettings": {"Networks": {"bridge": {
            "IPAMConfig": null, "Links": null, "Aliases": null, "NetworkID": "net-bridge-0123",
            "EndpointID": format!("ep-{id}"), "Gateway": "127.0.0.254", "IPAddress": "127.0.0.1",
            "IPPrefixLen": 8, "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
            "MacAddress": "02:42:ac:11:00:02"}}},
        "Mounts": []
    })
}

#[test]
fn docker_containers_are_discovered_with_their_labels_and_removed() {
    let dir = tempfile::tempdir().expect("tmp");
    let prom = Prometheus::start(&dir.path().join("prom"));
    let (a, b) = (
        Target::start(Flavor::TextGzip),
        Target::start(Flavor::TextGzip),
    );
    let daemon = Daemon::start(dir.path());
    let app = container(
        "aaa111",
        "app",
        json!([{"PrivatePort": a.port, "PublicPort": 18080, "Type": "tcp", "IP": "0.0.0.0"},
               {"PrivatePort": 5353, "Type": "udp"}]),
        json!({"prometheus.scrape": "true", "com.example.team": "alpha"}),
    );
    let worker = container(
        "bbb222",
        "worker",
        json!([]),
        json!({"prometheus.scrape": "true"}),
    );
    let other = container(
        "ccc333",
        "db",
        json!([]),
        json!({"prometheus.scrape": "false"}),
    );
    daemon.set(vec![app.clone(), worker.clone(), other]);
    let relabel = "    relabel_configs:
      - {source_labels: [__meta_docker_container_name], regex: '/(.*)', target_label: container}
      - {source_labels: [__meta_docker_container_id], target_label: container_id}
      - {source_labels: [__meta_docker_container_image], target_label: image}
      - {source_labels: [__meta_docker_container_label_com_example_team], target_label: team}
      - {source_labels: [__meta_docker_network_name], target_label: network}
      - {source_labels: [__meta_docker_network_label_com_example_net_tier], target_label: tier}
      - {source_labels: [__meta_docker_network_ip], target_label: ip}
      - {source_labels: [__meta_docker_port_private], target_label: private_port}
      - {source_labels: [__meta_docker_port_public], target_label: public_port}
";
    let text = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:
  - job_name: docker
    docker_sd_configs:
      - host: unix://{}
        port: {}
        refresh_interval: 1s
        filters: [{{name: label, values: ['prometheus.scrape=true']}}]
{relabel}  - job_name: docker-tcp
    docker_sd_configs:
      - {{host: 'tcp://127.0.0.1:{}', port: {}, refresh_interval: 1s, filters: [{{name: label, values: ['prometheus.scrape=true']}}]}}
{relabel}remote_write:\n  - url: {}\n    queue_config: {{max_shards: 1, min_backoff: 50ms, max_backoff: 500ms}}\n",
        daemon.socket.display(),
        b.port,
        daemon.tcp_port,
        b.port,
        prom.write_url()
    );
    let cfg = dir.path().join("agent.yml");
    std::fs::write(&cfg, text).expect("write config");
    let agent = Agent::start(
        &cfg,
        &dir.path().join("wal"),
        &["--no-ecs"],
        &[("RUST_LOG", "info")],
    );
    let up = |sel: &str| prom.query(&format!("up{{{sel}}}"));
    for job in ["docker", "docker-tcp"] {
        wait_until(
            &format!("{job}: both containers"),
            Duration::from_secs(30),
            || {
                up(&format!("job=\"{job}\",container=\"app\"")).len() == 1
                    && up(&format!("job=\"{job}\",container=\"worker\"")).len() == 1
            },
        );
    }
    let m = &up("job=\"docker\",container=\"app\"")[0]["metric"];
    for (k, v) in [
        ("instance", format!("127.0.0.1:{}", a.port)),
        ("container_id", "aaa111".into()),
        ("image", "example/app:1.0".into()),
        ("team", "alpha".into()),
        ("network", "bridge".into()),
        ("tier", "backend".into()),
        ("ip", "127.0.0.1".into()),
        ("private_port", a.port.to_string()),
        ("public_port", "18080".into()),
    ] {
        assert_eq!(m[k].as_str(), Some(v.as_str()), "label {k} in {m}");
    }
    assert_eq!(
        prom.scalar("up{job=\"docker\",container=\"app\"}"),
        Some(1.0)
    );
    // No TCP port: the configured port.
    let w = &up("job=\"docker\",container=\"worker\"")[0]["metric"];
    assert_eq!(
        w["instance"].as_str(),
        Some(format!("127.0.0.1:{}", b.port).as_str())
    );
    assert!(w.get("private_port").is_none(), "{w}");
    assert!(up("container=\"db\"").is_empty());

    // The app container goes away: its target disappears at the next refresh.
    daemon.set(vec![worker]);
    wait_until("app gone", Duration::from_secs(30), || {
        up("container=\"app\"").is_empty()
    });
    assert_eq!(up("job=\"docker\",container=\"worker\"").len(), 1);
    let reqs = daemon.requests();
    assert!(
        reqs.iter()
            .any(|r| r.starts_with("/containers/json?filters="))
            && reqs.iter().any(|r| r == "/networks"),
        "{reqs:?}"
    );
    assert!(agent.log().contains("target removed"), "{}", agent.log());
}
