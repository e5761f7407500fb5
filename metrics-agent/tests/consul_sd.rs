//! `consul_sd_configs` end to end against a Consul HTTP API fixture on 127.0.0.1 (Debian
//! ships no Consul): `/v1/agent/self`, `/v1/catalog/services` and `/v1/health/service/<name>`
//! answer with the payload shapes of Consul's API documentation and implement blocking
//! queries (`index` + `wait`, `X-Consul-Index`) and the `tag` filter as Consul does. A
//! service's instances are discovered with their `__meta_consul_*` labels, a deregistered
//! instance disappears, and a service registered later appears through the catalog watch.

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One registered service instance: (service name, tags, health entry as Consul returns it).
type Instance = (String, Vec<String>, Value);

#[derive(Default)]
struct Catalog {
    index: u64,
    instances: Vec<Instance>,
    /// Every request: path with query, and its X-Consul-Token.
    requests: Vec<(String, String)>,
}

struct Consul {
    port: u16,
    state: Arc<(Mutex<Catalog>, Condvar)>,
    stop: Arc<AtomicBool>,
}

fn query(path: &str) -> (String, Vec<(String, String)>) {
    let (p, q) = path.split_once('?').unwrap_or((path, ""));
    let pairs = q
        .split('&')
        .filter(|x| !x.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.replace("%3A", ":").replace("%2C", ","))
        })
        .collect();
    (p.to_string(), pairs)
}

fn serve(mut s: TcpStream, state: &(Mutex<Catalog>, Condvar)) {
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let token = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-consul-token")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let (path, q) = query(&target);
    let param = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let (lock, cv) = state;
    let mut cat = lock.lock().expect("lock");
    cat.requests.push((target.clone(), token));
    // A blocking query: wait until the index passes the one given, or `wait` runs out.
    if let Some(index) = param("index").and_then(|i| i.parse::<u64>().ok()) {
        let wait = param("wait")
            .and_then(|w| w.trim_end_matches("ms").parse::<u64>().ok())
            .map(Duration::from_millis)
            .unwrap_or(Duration::from_secs(300));
        let deadline = Instant::now() + wait;
        while cat.index <= index {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            cat = cv.wait_timeout(cat, left).expect("wait").0;
        }
    }
    let body = if path == "/v1/agent/self" {
        Some(
            json!({"Config": {"Datacenter": "dc1", "NodeName": "consul-1", "Server": true},
                    "Member": {"Name": "consul-1", "Addr": "127.0.0.1", "Port": 8301}}),
        )
    } else if path == "/v1/catalog/services" {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, tags, _) in &cat.instances {
            let e = m.entry(name.clone()).or_default();
            for t in tags {
                if !e.contains(t) {
                    e.push(t.clone());
                }
            }
        }
        Some(json!(m))
    } else if let Some(name) = path.strip_prefix("/v1/health/service/") {
        let want: Vec<&String> = q
            .iter()
            .filter(|(k, _)| k == "tag")
            .map(|(_, v)| v)
            .collect();
        let list: Vec<&Value> = cat
            .instances
            .iter()
            .filter(|(n, tags, _)| n == name && want.iter().all(|w| tags.contains(w)))
            .map(|(_, _, e)| e)
            .collect();
        Some(json!(list))
    } else {
        None
    };
    let index = cat.index;
    drop(cat);
    let (status, body) = match body {
        Some(b) => ("200 OK", b.to_string()),
        None => ("404 Not Found", "Not Found".to_string()),
    };
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-Consul-Index: {index}\r\nX-Consul-Knownleader: true\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

impl Consul {
    fn start() -> Consul {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        l.set_nonblocking(true).expect("nonblocking");
        let state = Arc::new((
            Mutex::new(Catalog {
                index: 1,
                ..Catalog::default()
            }),
            Condvar::new(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, stp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stp.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let st = st.clone();
                        std::thread::spawn(move || serve(s, &st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Consul { port, state, stop }
    }

    /// Changes the catalog and wakes the blocking queries (a new index).
    fn update(&self, f: impl FnOnce(&mut Vec<Instance>)) {
        let (lock, cv) = &*self.state;
        let mut c = lock.lock().expect("lock");
        f(&mut c.instances);
        c.index += 1;
        cv.notify_all();
    }

    fn requests(&self) -> Vec<(String, String)> {
        self.state.0.lock().expect("lock").requests.clone()
    }
}

impl Drop for Consul {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.update(|_| {}); // wakes blocked handlers
    }
}

/// A /v1/health/service entry in the shape Consul's documentation shows.
fn entry(
    node: &str,
    id: &str,
    service: &str,
    svc_addr: &str,
    port: u16,
    tags: &[&str],
    status: &str,
) -> Instance {
    (
        service.to_string(),
        tags.iter().map(|t| t.to_string()).collect(),
        json!({
            "Node": {"ID": format!("{node}-id"), "Node": node, "Address": "127.0.0.1", "Datacenter": "dc1",
                     "TaggedAddresses": {"lan": "127.0.0.1", "wan": "198.51.100.7"},
                     "Meta": {"rack": "r1", "consul-network-segment": ""}},
            "Service": {"ID": id, "Service": service, "Tags": tags, "Address": svc_addr,
                        "Meta": {"version": "1.2"}, "Port": port,
                        "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": false},
            "Checks": [
                {"Node": node, "CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing",
                 "ServiceID": "", "ServiceName": ""},
                {"Node": node, "CheckID": format!("service:{id}"), "Name": "HTTP check", "Status": status,
                 "ServiceID": id, "ServiceName": service}
            ]
        }),
    )
}

#[test]
fn consul_services_are_discovered_with_their_labels_and_removed() {
    let dir = tempfile::tempdir().expect("tmp");
    let prom = Prometheus::start(&dir.path().join("prom"));
    let (a, b, c) = (
        Target::start(Flavor::TextGzip),
        Target::start(Flavor::TextGzip),
        Target::start(Flavor::TextGzip),
    );
    let consul = Consul::start();
    consul.update(|i| {
        i.push(entry(
            "node-1",
            "web-1",
            "web",
            "127.0.0.1",
            a.port,
            &["prod", "http"],
            "passing",
        ));
        // No service address: the node's address is used.
        i.push(entry(
            "node-2",
            "web-2",
            "web",
            "",
            b.port,
            &["http"],
            "critical",
        ));
        // Without the `http` tag: not watched.
        i.push(entry(
            "node-1",
            "db-1",
            "db",
            "127.0.0.1",
            c.port,
            &["prod"],
            "passing",
        ));
    });
    let relabel: String = [
        ("service", "service"),
        ("node", "node"),
        ("tags", "tags"),
        ("health", "health"),
        ("dc", "dc"),
        ("service_id", "service_id"),
        ("service_port", "sport"),
        ("service_address", "saddr"),
        ("address", "node_addr"),
        ("service_metadata_version", "version"),
        ("metadata_rack", "rack"),
        ("tagged_address_wan", "wan"),
    ]
    .iter()
    .map(|(m, l)| format!("      - {{source_labels: [__meta_consul_{m}], target_label: {l}}}\n"))
    .collect();
    let text = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n  - job_name: consul\n    consul_sd_configs:\n      - server: 127.0.0.1:{}\n        token: e2e-token\n        tags: [http]\n        refresh_interval: 1s\n    relabel_configs:\n{relabel}remote_write:\n  - url: {}\n    queue_config: {{max_shards: 1, min_backoff: 50ms, max_backoff: 500ms}}\n",
        consul.port,
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

    let up = |sel: &str| prom.query(&format!("up{{job=\"consul\",{sel}}}"));
    wait_until("both web instances", Duration::from_secs(30), || {
        up("service_id=\"web-1\"").len() == 1 && up("service_id=\"web-2\"").len() == 1
    });
    let m = &up("service_id=\"web-1\"")[0]["metric"];
    for (k, v) in [
        ("instance", format!("127.0.0.1:{}", a.port)),
        ("service", "web".into()),
        ("node", "node-1".into()),
        ("tags", ",prod,http,".into()),
        ("health", "passing".into()),
        ("dc", "dc1".into()),
        ("sport", a.port.to_string()),
        ("saddr", "127.0.0.1".into()),
        ("node_addr", "127.0.0.1".into()),
        ("version", "1.2".into()),
        ("rack", "r1".into()),
        ("wan", "198.51.100.7".into()),
    ] {
        assert_eq!(m[k].as_str(), Some(v.as_str()), "label {k} in {m}");
    }
    let m2 = &up("service_id=\"web-2\"")[0]["metric"];
    assert_eq!(
        m2["instance"].as_str(),
        Some(format!("127.0.0.1:{}", b.port).as_str())
    );
    assert_eq!(m2["health"].as_str(), Some("critical"));
    assert!(m2.get("saddr").is_none(), "empty service address: {m2}");
    assert_eq!(prom.scalar("up{service_id=\"web-2\"}"), Some(1.0));

    // Deregistering web-2 wakes the blocking query: its target goes.
    let t0 = Instant::now();
    consul.update(|i| i.retain(|(_, _, e)| e["Service"]["ID"] != "web-2"));
    wait_until("web-2 gone", Duration::from_secs(30), || {
        up("service_id=\"web-2\"").is_empty()
    });
    let removal = t0.elapsed();
    // A service registered later appears through the catalog watch.
    consul.update(|i| {
        i.push(entry(
            "node-3",
            "api-1",
            "api",
            "127.0.0.1",
            c.port,
            &["http"],
            "warning",
        ))
    });
    wait_until("api appears", Duration::from_secs(30), || {
        up("service=\"api\",health=\"warning\"").len() == 1
    });
    assert!(up("service=\"db\"").is_empty());
    assert_eq!(up("service_id=\"web-1\"").len(), 1);

    let reqs = consul.requests();
    assert!(
        reqs.iter().all(|(_, t)| t == "e2e-token"),
        "token on every request: {reqs:?}"
    );
    let health: Vec<&String> = reqs
        .iter()
        .map(|(p, _)| p)
        .filter(|p| p.starts_with("/v1/health/service/web?"))
        .collect();
    assert!(
        // No `dc`: as Prometheus, the datacenter learnt from /v1/agent/self only labels.
        health
            .iter()
            .all(|p| p.contains("tag=http") && p.contains("stale") && !p.contains("dc=")),
        "{health:?}"
    );
    assert!(
        health.iter().any(|p| p.contains("index=")),
        "blocking queries: {health:?}"
    );
    assert!(reqs.iter().any(|(p, _)| p == "/v1/agent/self"), "{reqs:?}");
    let log = agent.log();
    assert!(!log.contains("e2e-token"), "the token in the log: {log}");
    eprintln!("web-2 removed from the receiver {removal:?} after deregistration");
}
