//! Redis collector (`INFO ALL` through the `redis` crate, plain or TLS) with
//! redis_exporter-compatible names.

use super::exposition::Exposition;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Simple INFO fields: (INFO key, metric name).
const FIELDS: [(&str, &str); 22] = [
    ("uptime_in_seconds", "redis_uptime_in_seconds"),
    ("connected_clients", "redis_connected_clients"),
    ("blocked_clients", "redis_blocked_clients"),
    ("used_memory", "redis_memory_used_bytes"),
    ("used_memory_rss", "redis_memory_used_rss_bytes"),
    ("used_memory_peak", "redis_memory_used_peak_bytes"),
    ("maxmemory", "redis_memory_max_bytes"),
    ("total_system_memory", "redis_total_system_memory_bytes"),
    ("mem_fragmentation_ratio", "redis_mem_fragmentation_ratio"),
    ("total_commands_processed", "redis_commands_processed_total"),
    (
        "total_connections_received",
        "redis_connections_received_total",
    ),
    ("rejected_connections", "redis_rejected_connections_total"),
    ("keyspace_hits", "redis_keyspace_hits_total"),
    ("keyspace_misses", "redis_keyspace_misses_total"),
    ("expired_keys", "redis_expired_keys_total"),
    ("evicted_keys", "redis_evicted_keys_total"),
    ("total_net_input_bytes", "redis_net_input_bytes_total"),
    ("total_net_output_bytes", "redis_net_output_bytes_total"),
    (
        "instantaneous_ops_per_sec",
        "redis_instantaneous_ops_per_sec",
    ),
    ("connected_slaves", "redis_connected_slaves"),
    (
        "master_last_io_seconds_ago",
        "redis_master_last_io_seconds_ago",
    ),
    ("master_repl_offset", "redis_master_repl_offset"),
];

/// Why a Redis address was refused or `INFO` failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("invalid Redis address {0:?}")]
    Address(String),
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
}

/// How long a connection (TCP, TLS and the client's hello) and a reply may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct RedisCollector {
    /// `host:port`, the `instance` label.
    addr: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    client: redis::Client,
    /// Kept between scrapes; dropped after an error and made again.
    conn: Option<redis::aio::MultiplexedConnection>,
}

/// Percent-encodes everything but RFC 3986's unreserved characters (a password may hold
/// `#`, `?`, `%`...; the redis crate decodes it again).
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl RedisCollector {
    /// Accepts `host:port`, `redis://[[user]:password@]host[:port]` or the same with
    /// `rediss://` (TLS, the server's certificate checked against the system roots, as
    /// ElastiCache's in-transit encryption needs). The password is taken as written (not
    /// percent-decoded).
    pub fn new(spec: &str) -> Result<Self, RedisError> {
        Self::with_ca(spec, None)
    }

    /// As `new`; with `ca` (PEM), a `rediss://` server's certificate is checked against
    /// that CA instead of the system roots.
    pub fn with_ca(spec: &str, ca: Option<Vec<u8>>) -> Result<Self, RedisError> {
        let (tls, rest) = match spec.split_once("://") {
            Some(("redis", r)) => (false, r),
            Some(("rediss", r)) => (true, r),
            Some(_) => return Err(RedisError::Address(spec.to_string())),
            None => (false, spec),
        };
        let (cred, hostpath) = match rest.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, rest),
        };
        let hostport = hostpath.split('/').next().unwrap_or(hostpath);
        if hostport.is_empty() {
            return Err(RedisError::Address(spec.to_string()));
        }
        let addr = if hostport.contains(':') {
            hostport.to_string()
        } else {
            format!("{hostport}:6379")
        };
        let (username, password) = match cred {
            None => (None, None),
            Some(c) => match c.split_once(':') {
                Some((u, p)) => ((!u.is_empty()).then(|| u.to_string()), Some(p.to_string())),
                None => (None, Some(c.to_string())),
            },
        };
        let auth = match (&username, &password) {
            (u, Some(p)) => format!("{}:{}@", pct(u.as_deref().unwrap_or("")), pct(p)),
            (Some(u), None) => format!("{}@", pct(u)),
            (None, None) => String::new(),
        };
        let scheme = if tls { "rediss" } else { "redis" };
        let url = format!("{scheme}://{auth}{addr}");
        let client = match ca {
            Some(root_cert) if tls => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            ),
            _ => redis::Client::open(url),
        }
        // The error would quote the URL, password included: name the address only.
        .map_err(|_| RedisError::Address(addr.clone()))?;
        Ok(RedisCollector {
            addr,
            client,
            conn: None,
            connect_timeout: CONNECT_TIMEOUT,
            response_timeout: RESPONSE_TIMEOUT,
        })
    }

    pub fn instance(&self) -> String {
        self.addr.clone()
    }

    pub async fn collect(&mut self) -> String {
        let started = Instant::now();
        let mut e = Exposition::new();
        match self.fetch_info().await {
            Ok(info) => {
                e.sample("redis_up", &[], 1.0);
                render_info(&info, &mut e);
            }
            Err(err) => {
                tracing::debug!("redis collector {}: {err}", self.addr);
                self.conn = None;
                e.sample("redis_up", &[], 0.0);
            }
        }
        e.sample(
            "redis_exporter_last_scrape_duration_seconds",
            &[],
            started.elapsed().as_secs_f64(),
        );
        e.finish()
    }

    async fn fetch_info(&mut self) -> Result<String, RedisError> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                let cfg = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(Some(self.response_timeout));
                let c = self
                    .client
                    .get_multiplexed_async_connection_with_config(&cfg)
                    .await?;
                self.conn.insert(c)
            }
        };
        Ok(redis::cmd("INFO").arg("ALL").query_async(conn).await?)
    }
}

fn kv_list(s: &str) -> BTreeMap<&str, &str> {
    s.split(',').filter_map(|p| p.split_once('=')).collect()
}

/// Renders INFO text as metrics.
pub fn render_info(info: &str, e: &mut Exposition) {
    let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
    for line in info.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            fields.insert(k, v);
        }
    }
    for (key, metric) in FIELDS {
        if let Some(v) = fields.get(key).and_then(|v| v.parse::<f64>().ok()) {
            e.sample(metric, &[], v);
            if key == "mem_fragmentation_ratio" {
                e.sample("redis_memory_fragmentation_ratio", &[], v);
            }
        }
    }
    let get = |k: &str| fields.get(k).copied().unwrap_or("");
    e.sample(
        "redis_instance_info",
        &[
            ("role", get("role")),
            ("redis_version", get("redis_version")),
            ("redis_mode", get("redis_mode")),
            ("os", get("os")),
            ("run_id", get("run_id")),
            ("tcp_port", get("tcp_port")),
        ],
        1.0,
    );
    if let Some(status) = fields.get("master_link_status") {
        e.sample(
            "redis_master_link_up",
            &[],
            if *status == "up" { 1.0 } else { 0.0 },
        );
    }
    if let Some(v) = fields
        .get("cluster_enabled")
        .and_then(|v| v.parse::<f64>().ok())
    {
        e.sample("redis_cluster_enabled", &[], v);
    }
    for (k, v) in &fields {
        if let Some(db) = k.strip_prefix("db")
            && db.chars().all(|c| c.is_ascii_digit())
        {
            let kv = kv_list(v);
            let l = [("db", *k)];
            if let Some(n) = kv.get("keys").and_then(|s| s.parse::<f64>().ok()) {
                e.sample("redis_db_keys", &l, n);
            }
            if let Some(n) = kv.get("expires").and_then(|s| s.parse::<f64>().ok()) {
                e.sample("redis_db_keys_expiring", &l, n);
            }
            if let Some(n) = kv.get("avg_ttl").and_then(|s| s.parse::<f64>().ok()) {
                e.sample("redis_db_avg_ttl_seconds", &l, n / 1000.0);
            }
        } else if let Some(cmd) = k.strip_prefix("cmdstat_") {
            let kv = kv_list(v);
            let l = [("cmd", cmd)];
            if let Some(n) = kv.get("calls").and_then(|s| s.parse::<f64>().ok()) {
                e.sample("redis_commands_total", &l, n);
            }
            if let Some(n) = kv.get("usec").and_then(|s| s.parse::<f64>().ok()) {
                e.sample("redis_commands_duration_seconds_total", &l, n / 1e6);
            }
            if let Some(n) = kv.get("rejected_calls").and_then(|s| s.parse::<f64>().ok()) {
                e.sample("redis_commands_rejected_calls_total", &l, n);
            }
            if let Some(n) = kv.get("failed_calls").and_then(|s| s.parse::<f64>().ok()) {
                e.sample("redis_commands_failed_calls_total", &l, n);
            }
        } else if k.starts_with("slave")
            && k[5..].chars().all(|c| c.is_ascii_digit())
            && k.len() > 5
        {
            let kv = kv_list(v);
            let l = [
                ("slave_ip", kv.get("ip").copied().unwrap_or("")),
                ("slave_port", kv.get("port").copied().unwrap_or("")),
                ("slave_state", kv.get("state").copied().unwrap_or("")),
            ];
            if let Some(n) = kv.get("offset").and_then(|s| s.parse::<f64>().ok()) {
                e.sample("redis_connected_slave_offset_bytes", &l, n);
            }
            if let Some(n) = kv.get("lag").and_then(|s| s.parse::<f64>().ok()) {
                e.sample("redis_connected_slave_lag_seconds", &l, n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_support::redis::start_redis;

    async fn raw(port: u16, args: &[&str]) -> redis::Value {
        let c = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("client");
        let mut conn = c.get_multiplexed_async_connection().await.expect("connect");
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut conn).await.expect("command")
    }

    #[tokio::test]
    async fn collects_from_a_real_server() {
        let server = start_redis();
        raw(server.port, &["SET", "k1", "v"]).await;
        raw(server.port, &["SET", "k2", "v"]).await;
        let mut c = RedisCollector::new(&format!("127.0.0.1:{}", server.port)).expect("addr");
        // one hit, one miss
        raw(server.port, &["GET", "k1"]).await;
        raw(server.port, &["GET", "missing"]).await;
        let text = c.collect().await;
        for want in [
            "redis_up 1",
            "redis_keyspace_hits_total 1",
            "redis_keyspace_misses_total 1",
            "redis_db_keys{db=\"db0\"} 2",
            "redis_commands_total{cmd=\"set\"} 2",
            "redis_evicted_keys_total 0",
            "redis_connected_slaves 0",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(text.contains("redis_memory_used_bytes "));
        assert!(text.contains("redis_instance_info{role=\"master\""));
        drop(server);
        let text = c.collect().await;
        assert!(text.contains("redis_up 0"), "{text}");
    }

    /// A fake server that answers every request with `reply`, then keeps the connection
    /// open (`hold`) or closes it.
    async fn fake_server(reply: Vec<u8>, hold: bool) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let reply = reply.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 256];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(&reply).await;
                    if hold {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn broken_servers_read_as_down_without_exhausting_memory() {
        // Huge announced lengths: nothing is reserved for them (the process would abort).
        for len in ["18446744073709551615", "99999999999", "1073741824"] {
            for hold in [false, true] {
                let port = fake_server(format!("${len}\r\nabc").into_bytes(), hold).await;
                let mut c = RedisCollector::new(&format!("127.0.0.1:{port}")).expect("addr");
                c.connect_timeout = Duration::from_millis(300);
                c.response_timeout = Duration::from_millis(300);
                let t0 = Instant::now();
                assert!(c.collect().await.contains("redis_up 0"), "{len}");
                assert!(
                    t0.elapsed() < Duration::from_secs(3),
                    "{len}: {:?}",
                    t0.elapsed()
                );
            }
        }
        // A reply line that never ends: cut off by the response timeout.
        let port = fake_server(vec![b'+'; 200 << 10], true).await;
        let mut c = RedisCollector::new(&format!("127.0.0.1:{port}")).expect("addr");
        c.connect_timeout = Duration::from_millis(300);
        c.response_timeout = Duration::from_millis(300);
        assert!(c.collect().await.contains("redis_up 0"));
    }

    /// A real redis-server with TLS only (`--port 0 --tls-port`), its certificate from a
    /// test CA: collected over `rediss://` with that CA; refused against the system roots.
    #[tokio::test]
    async fn collects_over_tls_and_checks_the_certificate() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let ca = test_support::tls::TestCa::new();
        let leaf = ca.sign(&["localhost"]);
        let dir = tempfile::tempdir().expect("tempdir");
        let w = |n: &str, t: String| {
            let p = dir.path().join(n);
            std::fs::write(&p, t).expect("write");
            p
        };
        let (cp, kp, cap) = (
            w("cert.pem", leaf.cert_pem()),
            w("key.pem", leaf.key_pem()),
            w("ca.pem", ca.pem()),
        );
        let port = test_support::free_port();
        let (cp, kp, cap) = (
            cp.display().to_string(),
            kp.display().to_string(),
            cap.display().to_string(),
        );
        let port_s = port.to_string();
        // TLS only: the plain port closed (`--port 0` after the helper's own).
        let _server = test_support::redis::redis_server_with(
            test_support::free_port(),
            &[
                "--port",
                "0",
                "--tls-port",
                &port_s,
                "--tls-auth-clients",
                "no",
                "--tls-cert-file",
                &cp,
                "--tls-key-file",
                &kp,
                "--tls-ca-cert-file",
                &cap,
                "--requirepass",
                "p#ss%w?rd",
            ],
        );
        let spec = format!("rediss://:p#ss%w?rd@localhost:{port}");
        let mut c = RedisCollector::with_ca(&spec, Some(ca.pem().into_bytes())).expect("addr");
        let text = c.collect().await;
        assert!(text.contains("redis_up 1"), "{text}");
        assert!(
            text.contains("redis_instance_info{role=\"master\""),
            "{text}"
        );
        // The same server against the system roots: its certificate is not trusted.
        let mut c = RedisCollector::new(&spec).expect("addr");
        assert!(c.collect().await.contains("redis_up 0"));
        // Plain RESP to a TLS port: down, not hung.
        let mut c = RedisCollector::new(&format!("redis://:x@localhost:{port}")).expect("addr");
        c.connect_timeout = Duration::from_millis(500);
        c.response_timeout = Duration::from_millis(500);
        assert!(c.collect().await.contains("redis_up 0"));
    }

    #[test]
    fn parses_addresses() {
        let info = |c: &RedisCollector| {
            let i = c.client.get_connection_info();
            let r = i.redis_settings();
            (
                matches!(i.addr(), redis::ConnectionAddr::TcpTls { .. }),
                r.username().map(str::to_string),
                r.password().map(str::to_string),
            )
        };
        let c = RedisCollector::new("redis://:secret@cache:6380/0").expect("addr");
        assert_eq!(c.addr, "cache:6380");
        assert_eq!(info(&c), (false, None, Some("secret".into())));
        let c = RedisCollector::new("cache").expect("addr");
        assert_eq!(c.addr, "cache:6379");
        let c = RedisCollector::new("redis://u:p@h:1").expect("addr");
        assert_eq!(info(&c), (false, Some("u".into()), Some("p".into())));
        // A password with URL delimiters is taken as written.
        let c =
            RedisCollector::new("rediss://:a/b#c?d%e@h.cache.amazonaws.com:6379").expect("addr");
        assert_eq!(info(&c), (true, None, Some("a/b#c?d%e".into())));
        assert_eq!(c.addr, "h.cache.amazonaws.com:6379");
        assert!(RedisCollector::new("http://h:1").is_err());
        // An address the redis crate cannot use: the error names the address, never the
        // password.
        let e = RedisCollector::new("redis://:hunter2@bad host:1")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn renders_info_sections() {
        let info = "# Server\r\nredis_version:7.0.15\r\nuptime_in_seconds:42\r\nrole:master\r\n\
# Stats\r\nkeyspace_hits:5\r\nkeyspace_misses:2\r\nevicted_keys:1\r\nmem_fragmentation_ratio:1.5\r\n\
# Replication\r\nconnected_slaves:1\r\nslave0:ip=10.0.0.2,port=6379,state=online,offset=100,lag=0\r\n\
# Commandstats\r\ncmdstat_get:calls=7,usec=70,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n\
# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=5000\r\n";
        let mut e = Exposition::new();
        render_info(info, &mut e);
        let s = e.finish();
        for want in [
            "redis_uptime_in_seconds 42",
            "redis_keyspace_hits_total 5",
            "redis_keyspace_misses_total 2",
            "redis_evicted_keys_total 1",
            "redis_mem_fragmentation_ratio 1.5",
            "redis_memory_fragmentation_ratio 1.5",
            "redis_commands_total{cmd=\"get\"} 7",
            "redis_commands_duration_seconds_total{cmd=\"get\"} 0.00007",
            "redis_db_keys{db=\"db0\"} 3",
            "redis_db_keys_expiring{db=\"db0\"} 1",
            "redis_connected_slaves 1",
            "redis_connected_slave_offset_bytes{slave_ip=\"10.0.0.2\",slave_port=\"6379\",slave_state=\"online\"} 100",
        ] {
            assert!(s.contains(want), "missing {want:?} in\n{s}");
        }
    }
}
