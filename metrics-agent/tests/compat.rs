//! End-to-end tests of the Prometheus-compatibility features: file and DNS service
//! discovery (targets appear and disappear), scrape limits (`up` 0 and the reason in the
//! log) and TLS scrapes against a server with a test CA. Everything runs on 127.0.0.1.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn write_config(dir: &Path, remote: &str, body: &str) -> std::path::PathBuf {
    let text = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\nrule_files: []\n{body}\
remote_write:\n  - url: {remote}\n    name: prom\n    queue_config: {{max_shards: 1, min_backoff: 50ms, max_backoff: 500ms}}\n"
    );
    let file = dir.join("agent.yml");
    std::fs::write(&file, text).expect("write config");
    file
}

fn up(prom: &Prometheus, selector: &str) -> Option<f64> {
    prom.scalar(&format!("up{{{selector}}}"))
}

#[test]
fn file_sd_targets_appear_and_disappear() {
    let dir = tempfile::tempdir().expect("tmp");
    let prom = Prometheus::start(&dir.path().join("prom"));
    let a = Target::start(Flavor::TextGzip);
    let b = Target::start(Flavor::TextGzip);
    let sd = dir.path().join("sd");
    std::fs::create_dir_all(&sd).expect("mkdir");
    std::fs::write(
        sd.join("a.yml"),
        format!(
            "- targets: ['127.0.0.1:{}']\n  labels: {{team: alpha}}\n",
            a.port
        ),
    )
    .expect("write");
    let cfg = write_config(
        dir.path(),
        &prom.write_url(),
        "scrape_configs:\n  - job_name: fsd\n    file_sd_configs:\n      - files: ['sd/*.yml', 'sd/*.json']\n        refresh_interval: 1m\n    relabel_configs:\n      - {source_labels: [__meta_filepath], regex: '.*/(.*)', target_label: sd_file}\n",
    );
    let agent = Agent::start(
        &cfg,
        &dir.path().join("wal"),
        &["--no-ecs"],
        &[("RUST_LOG", "info")],
    );
    let ia = format!("instance=\"127.0.0.1:{}\"", a.port);
    let ib = format!("instance=\"127.0.0.1:{}\"", b.port);
    wait_until("target a discovered", Duration::from_secs(30), || {
        up(
            &prom,
            &format!("job=\"fsd\",{ia},team=\"alpha\",sd_file=\"a.yml\""),
        ) == Some(1.0)
    });
    // A JSON file adds b (picked up by the file watch, long before refresh_interval).
    std::fs::write(
        sd.join("b.json"),
        format!(
            r#"[{{"targets": ["127.0.0.1:{}"], "labels": {{"team": "beta"}}}}]"#,
            b.port
        ),
    )
    .expect("write");
    wait_until("target b discovered", Duration::from_secs(30), || {
        up(
            &prom,
            &format!("job=\"fsd\",{ib},team=\"beta\",sd_file=\"b.json\""),
        ) == Some(1.0)
    });
    // Removing a's file removes a: its series get stale markers and vanish from queries.
    std::fs::remove_file(sd.join("a.yml")).expect("rm");
    wait_until("target a gone", Duration::from_secs(30), || {
        up(&prom, &format!("job=\"fsd\",{ia}")).is_none()
            && prom
                .scalar(&format!("synthetic_requests_total{{{ia}}}"))
                .is_none()
    });
    assert_eq!(up(&prom, &format!("job=\"fsd\",{ib}")), Some(1.0));
    let log = agent.log();
    assert!(log.contains("target removed"), "{log}");
    assert!(
        log.contains("field `rule_files`: server-only section ignored"),
        "{log}"
    );
}

/// DNS answers: (name in lowercase with the trailing dot, record type, rdata).
type Records = Arc<Mutex<Vec<(String, u16, Vec<u8>)>>>;

/// A DNS server on 127.0.0.1 answering SRV and A questions from a table that the test
/// changes; other names get NXDOMAIN.
struct DnsServer {
    port: u16,
    /// name (lowercase, trailing dot) -> (qtype, rdata) answers
    records: Records,
    stop: Arc<AtomicBool>,
}

fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for l in name.trim_end_matches('.').split('.') {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
    out
}

impl DnsServer {
    fn start() -> DnsServer {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = sock.local_addr().expect("addr").port();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let records: Records = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, st) = (records.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let q = &buf[..n];
                // question name
                let mut pos = 12;
                let mut name = String::new();
                while pos < n && q[pos] != 0 {
                    let l = q[pos] as usize;
                    name.push_str(
                        &String::from_utf8_lossy(&q[pos + 1..pos + 1 + l]).to_lowercase(),
                    );
                    name.push('.');
                    pos += 1 + l;
                }
                let qtype = u16::from_be_bytes([q[pos + 1], q[pos + 2]]);
                let qend = pos + 5;
                let answers: Vec<(u16, Vec<u8>)> = r
                    .lock()
                    .map(|recs| {
                        recs.iter()
                            .filter(|(nm, t, _)| *nm == name && *t == qtype)
                            .map(|(_, t, d)| (*t, d.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                let known = r
                    .lock()
                    .map(|recs| recs.iter().any(|(nm, _, _)| *nm == name))
                    .unwrap_or(false);
                let mut out = q[..2].to_vec();
                out.extend_from_slice(&[0x81, if known { 0x80 } else { 0x83 }]);
                out.extend_from_slice(&[0, 1]);
                out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
                out.extend_from_slice(&[0, 0, 0, 0]);
                out.extend_from_slice(&q[12..qend]);
                for (t, d) in answers {
                    out.extend_from_slice(&[0xC0, 12]);
                    out.extend_from_slice(&t.to_be_bytes());
                    out.extend_from_slice(&[0, 1, 0, 0, 0, 5]);
                    out.extend_from_slice(&(d.len() as u16).to_be_bytes());
                    out.extend_from_slice(&d);
                }
                let _ = sock.send_to(&out, peer);
            }
        });
        DnsServer {
            port,
            records,
            stop,
        }
    }

    fn set(&self, recs: Vec<(String, u16, Vec<u8>)>) {
        if let Ok(mut r) = self.records.lock() {
            *r = recs;
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn srv(port: u16, target: &str) -> Vec<u8> {
    let mut d = vec![0, 10, 0, 5];
    d.extend_from_slice(&port.to_be_bytes());
    d.extend_from_slice(&encode_name(target));
    d
}

#[test]
fn dns_sd_srv_and_a_targets_appear_and_disappear() {
    let dir = tempfile::tempdir().expect("tmp");
    let prom = Prometheus::start(&dir.path().join("prom"));
    let a = Target::start(Flavor::TextGzip);
    let b = Target::start(Flavor::TextGzip);
    let dns = DnsServer::start();
    let srv_name = "_metrics._tcp.agent.test.";
    dns.set(vec![
        (srv_name.into(), 33, srv(a.port, "localhost.")),
        ("hosts.agent.test.".into(), 1, vec![127, 0, 0, 1]),
    ]);
    let cfg = write_config(
        dir.path(),
        &prom.write_url(),
        &format!(
            "scrape_configs:\n  - job_name: srv\n    dns_sd_configs:\n      - names: ['_metrics._tcp.agent.test']\n        refresh_interval: 1s\n    relabel_configs:\n      - {{source_labels: [__meta_dns_name], target_label: dns_name}}\n      - {{source_labels: [__meta_dns_srv_record_target], target_label: srv_target}}\n      - {{source_labels: [__meta_dns_srv_record_port], target_label: srv_port}}\n  - job_name: a-records\n    dns_sd_configs:\n      - {{names: ['hosts.agent.test'], type: A, port: {}, refresh_interval: 1s}}\n",
            b.port
        ),
    );
    let dns_server = format!("127.0.0.1:{}", dns.port);
    let agent = Agent::start(
        &cfg,
        &dir.path().join("wal"),
        &["--no-ecs"],
        &[
            ("METRICS_AGENT_DNS_SERVERS", &dns_server),
            ("RUST_LOG", "info"),
        ],
    );
    let srv_sel = format!(
        "job=\"srv\",instance=\"localhost:{}\",dns_name=\"_metrics._tcp.agent.test\",srv_target=\"localhost.\",srv_port=\"{}\"",
        a.port, a.port
    );
    wait_until("SRV target discovered", Duration::from_secs(30), || {
        up(&prom, &srv_sel) == Some(1.0)
    });
    let a_sel = format!("job=\"a-records\",instance=\"127.0.0.1:{}\"", b.port);
    wait_until("A target discovered", Duration::from_secs(30), || {
        up(&prom, &a_sel) == Some(1.0)
    });
    // The SRV record now points at b's port: a's target goes away, a new one appears.
    dns.set(vec![(srv_name.into(), 33, srv(b.port, "localhost."))]);
    let moved = format!("job=\"srv\",instance=\"localhost:{}\"", b.port);
    wait_until("SRV target moved", Duration::from_secs(30), || {
        up(&prom, &moved) == Some(1.0)
            && up(
                &prom,
                &format!("job=\"srv\",instance=\"localhost:{}\"", a.port),
            )
            .is_none()
    });
    // hosts.agent.test is gone (NXDOMAIN): an empty answer, the A target disappears.
    wait_until("A target gone", Duration::from_secs(30), || {
        up(&prom, &a_sel).is_none()
    });
    assert!(agent.log().contains("target added"), "{}", agent.log());
}

#[test]
fn limits_fail_the_scrape_and_log_the_reason() {
    let dir = tempfile::tempdir().expect("tmp");
    let prom = Prometheus::start(&dir.path().join("prom"));
    let bulk = Target::start(Flavor::Bulk(50));
    let small = Target::start(Flavor::TextGzip);
    let t = format!("'127.0.0.1:{}'", bulk.port);
    let s = format!("'127.0.0.1:{}'", small.port);
    let cfg = write_config(
        dir.path(),
        &prom.write_url(),
        &format!(
            "scrape_configs:\n\
  - {{job_name: samples, sample_limit: 20, static_configs: [{{targets: [{t}]}}]}}\n\
  - {{job_name: label-value, label_value_length_limit: 32, static_configs: [{{targets: [{t}]}}]}}\n\
  - {{job_name: label-name, label_name_length_limit: 4, static_configs: [{{targets: [{t}]}}]}}\n\
  - {{job_name: labels, label_limit: 3, static_configs: [{{targets: [{t}]}}]}}\n\
  - {{job_name: body, body_size_limit: 1KB, enable_compression: false, static_configs: [{{targets: [{t}]}}]}}\n\
  - {{job_name: targets, target_limit: 1, static_configs: [{{targets: [{t}, {s}]}}]}}\n\
  - {{job_name: within, sample_limit: 1000, label_limit: 10, body_size_limit: 1MB, target_limit: 2, static_configs: [{{targets: [{t}]}}]}}\n"
        ),
    );
    let agent = Agent::start(&cfg, &dir.path().join("wal"), &["--no-ecs"], &[]);
    wait_until(
        "report series of every job",
        Duration::from_secs(30),
        || {
            [
                "samples",
                "label-value",
                "label-name",
                "labels",
                "body",
                "within",
            ]
            .iter()
            .all(|j| up(&prom, &format!("job=\"{j}\"")).is_some())
                && prom.query("up{job=\"targets\"}").len() == 2
        },
    );
    for job in ["samples", "label-value", "label-name", "labels", "body"] {
        assert_eq!(up(&prom, &format!("job=\"{job}\"")), Some(0.0), "{job}");
        assert!(
            prom.scalar(&format!("synthetic_bulk{{job=\"{job}\",idx=\"1\"}}"))
                .is_none(),
            "{job}: samples of a failed scrape were stored"
        );
    }
    for r in prom.query("up{job=\"targets\"}") {
        assert_eq!(r["value"][1].as_str(), Some("0"), "{r}");
    }
    assert_eq!(up(&prom, "job=\"within\""), Some(1.0));
    assert!(
        prom.scalar("synthetic_bulk{job=\"within\",idx=\"1\"}")
            .is_some()
    );
    let log = agent.log();
    for reason in [
        "sample_limit exceeded",
        "label_value_length_limit exceeded",
        "label_name_length_limit exceeded",
        "label_limit exceeded",
        "body size limit exceeded",
        "target_limit exceeded",
    ] {
        assert!(log.contains(reason), "{reason} not logged:\n{log}");
    }
}

/// A test CA, a server certificate for `metrics.test` (no IP address) and a client
/// certificate, as PEM files in `dir`.
fn test_pki(dir: &Path) -> (rcgen::Certificate, rcgen::KeyPair, rcgen::Certificate) {
    let ca = test_support::tls::TestCa::new();
    let server = ca.sign(&["metrics.test"]);
    let client = ca.sign(&["agent.test"]);
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    std::fs::write(dir.join("client.pem"), client.cert_pem()).expect("write");
    std::fs::write(dir.join("client.key"), client.key_pem()).expect("write");
    (server.cert, server.key, ca.cert)
}

/// An HTTPS target that requires a client certificate signed by the test CA.
fn tls_target(
    server_cert: rcgen::Certificate,
    server_key: rcgen::KeyPair,
    ca: &rcgen::Certificate,
) -> u16 {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).expect("root");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("client verifier");
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![server_cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
            )
            .expect("server config"),
    );
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, s);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = "tls_probe_value 42\n";
                let _ = write!(
                    tls,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    port
}

#[test]
fn tls_scrapes_with_a_test_ca_and_client_certificates() {
    let dir = tempfile::tempdir().expect("tmp");
    let prom = Prometheus::start(&dir.path().join("prom"));
    let (server_cert, server_key, ca) = test_pki(dir.path());
    let port = tls_target(server_cert, server_key, &ca);
    let target = format!("static_configs: [{{targets: ['127.0.0.1:{port}']}}]");
    let cfg = write_config(
        dir.path(),
        &prom.write_url(),
        &[
            ("verified", "ca_file: ca.pem, cert_file: client.pem, key_file: client.key, server_name: metrics.test"),
            ("insecure", "insecure_skip_verify: true, cert_file: client.pem, key_file: client.key, min_version: TLS12"),
            ("no-client-cert", "ca_file: ca.pem, server_name: metrics.test"),
            ("wrong-name", "ca_file: ca.pem, cert_file: client.pem, key_file: client.key"),
            ("system-roots", "cert_file: client.pem, key_file: client.key, server_name: metrics.test"),
        ]
        .iter()
        .fold("scrape_configs:\n".to_string(), |acc, (job, tls)| {
            format!("{acc}  - job_name: {job}\n    scheme: https\n    {target}\n    tls_config: {{{tls}}}\n")
        }),
    );
    let agent = Agent::start(&cfg, &dir.path().join("wal"), &["--no-ecs"], &[]);
    let jobs = [
        "verified",
        "insecure",
        "no-client-cert",
        "wrong-name",
        "system-roots",
    ];
    wait_until("every TLS job reported", Duration::from_secs(30), || {
        jobs.iter()
            .all(|j| up(&prom, &format!("job=\"{j}\"")).is_some())
    });
    let got: Vec<(&str, Option<f64>)> = jobs
        .iter()
        .map(|j| (*j, up(&prom, &format!("job=\"{j}\""))))
        .collect();
    assert_eq!(
        got,
        [
            ("verified", Some(1.0)),
            ("insecure", Some(1.0)),
            ("no-client-cert", Some(0.0)),
            ("wrong-name", Some(0.0)),
            ("system-roots", Some(0.0)),
        ],
        "{}",
        agent.log()
    );
    assert_eq!(prom.scalar("tls_probe_value{job=\"verified\"}"), Some(42.0));
}

#[test]
fn reload_by_sighup_and_http_keeps_unchanged_jobs_without_a_gap() {
    let dir = tempfile::tempdir().expect("tmp");
    let prom = Prometheus::start(&dir.path().join("prom"));
    let a = Target::start(Flavor::TextGzip);
    let b = Target::start(Flavor::TextGzip);
    let job = |name: &str, port: u16| {
        format!("  - job_name: {name}\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n")
    };
    let v1 = format!(
        "scrape_configs:\n{}{}",
        job("keep", a.port),
        job("old", b.port)
    );
    let cfg = write_config(dir.path(), &prom.write_url(), &v1);
    let agent = Agent::start(
        &cfg,
        &dir.path().join("wal"),
        &["--no-ecs"],
        &[("RUST_LOG", "info")],
    );
    let start_ms = now_ms();
    wait_until("both jobs scraped", Duration::from_secs(30), || {
        up(&prom, "job=\"keep\"") == Some(1.0) && up(&prom, "job=\"old\"") == Some(1.0)
    });
    // SIGHUP: `old` goes (stale markers), `new` comes, `keep` runs on.
    let v2 = format!(
        "scrape_configs:\n{}{}",
        job("keep", a.port),
        job("new", b.port)
    );
    write_config(dir.path(), &prom.write_url(), &v2);
    agent.hangup();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !(up(&prom, "job=\"new\"") == Some(1.0) && up(&prom, "job=\"old\"").is_none()) {
        assert!(
            std::time::Instant::now() < deadline,
            "not reloaded by SIGHUP: new {:?} old {:?}\n{}",
            up(&prom, "job=\"new\""),
            up(&prom, "job=\"old\""),
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // POST /-/reload with a broken file: 500 naming the field; the running config stays.
    std::fs::write(
        &cfg,
        format!(
            "scrape_configs:\n{}    scrape_intervall: 5s\n",
            job("keep", a.port)
        ),
    )
    .expect("write");
    let (status, body) = agent.reload();
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("scrape_intervall"), "{body}");
    // A remote_write change needs a restart: refused, the running config stays.
    let v3 = v2.replace("job_name: new", "job_name: newer");
    write_config(dir.path(), &prom.write_url(), &v3);
    let text = std::fs::read_to_string(&cfg).expect("read");
    std::fs::write(&cfg, text.replace("name: prom", "name: other")).expect("write");
    let (status, body) = agent.reload();
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("needs a restart"), "{body}");
    // A good file over HTTP.
    write_config(dir.path(), &prom.write_url(), &v3);
    let (status, body) = agent.reload();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("1 jobs added"), "{body}");
    wait_until("reloaded over HTTP", Duration::from_secs(30), || {
        up(&prom, "job=\"newer\"") == Some(1.0) && up(&prom, "job=\"new\"").is_none()
    });
    let reloaded_ms = now_ms();
    wait_until(
        "keep scraped after the reloads",
        Duration::from_secs(20),
        || {
            let all = prom.raw_samples("up{job=\"keep\"}", "5m");
            // A second after the reloads, and enough samples to see a gap (a loaded
            // machine may have finished the reloads within three scrape intervals).
            all.last().is_some_and(|(t, _)| *t > reloaded_ms + 1000)
                && all.iter().filter(|(t, _)| *t >= start_ms).count() >= 4
        },
    );
    // `keep` was never interrupted: one sample per second all along.
    let samples: Vec<(i64, f64)> = prom
        .raw_samples("up{job=\"keep\"}", "5m")
        .into_iter()
        .filter(|(t, _)| *t >= start_ms)
        .collect();
    assert!(samples.len() >= 4, "{samples:?}");
    let gap = max_gap(&samples);
    assert!(gap <= 2000, "gap of {gap} ms in up{{job=\"keep\"}}");
    assert!(samples.iter().all(|(_, v)| *v == 1.0), "{samples:?}");
    let log = agent.log();
    assert!(log.contains("configuration reloaded"), "{log}");
    assert!(log.contains("reload failed"), "{log}");
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
