//! Redis collector (`INFO ALL` over a minimal RESP client) with redis_exporter-compatible names.

use super::exposition::Exposition;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

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

/// Why a Redis address was refused or a command failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("invalid Redis address {0:?}")]
    Address(String),
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("write: {0}")]
    Write(#[source] std::io::Error),
    #[error("read: {0}")]
    Read(#[source] std::io::Error),
    #[error("reply line longer than {MAX_LINE} bytes or cut short")]
    LineTooLong,
    #[error("server error: {0}")]
    Server(String),
    #[error("bad bulk length {0:?}")]
    BulkLength(String),
    #[error("bulk length {0} exceeds the {MAX_BULK}-byte limit")]
    BulkTooLarge(u64),
    #[error("reply is not UTF-8")]
    NotUtf8,
    #[error("unexpected reply {0:?}")]
    Unexpected(String),
}

pub struct RedisCollector {
    addr: String,
    username: Option<String>,
    password: Option<String>,
}

impl RedisCollector {
    /// Accepts `host:port` or `redis://[[user]:password@]host[:port]`.
    pub fn new(spec: &str) -> Result<Self, RedisError> {
        let rest = spec.strip_prefix("redis://").unwrap_or(spec);
        let rest = rest.split('/').next().unwrap_or(rest);
        let (cred, hostport) = match rest.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, rest),
        };
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
        Ok(RedisCollector {
            addr,
            username,
            password,
        })
    }

    pub fn instance(&self) -> String {
        self.addr.clone()
    }

    pub async fn collect(&mut self) -> String {
        let started = Instant::now();
        let mut e = Exposition::new();
        match tokio::time::timeout(Duration::from_secs(10), self.fetch_info()).await {
            Ok(Ok(info)) => {
                e.sample("redis_up", &[], 1.0);
                render_info(&info, &mut e);
            }
            Ok(Err(err)) => {
                tracing::debug!("redis collector {}: {err}", self.addr);
                e.sample("redis_up", &[], 0.0);
            }
            Err(_) => {
                tracing::debug!("redis collector {}: timeout", self.addr);
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

    async fn fetch_info(&self) -> Result<String, RedisError> {
        let stream = TcpStream::connect(&self.addr)
            .await
            .map_err(RedisError::Connect)?;
        let mut conn = BufReader::new(stream);
        if let Some(p) = &self.password {
            let mut args = vec!["AUTH"];
            if let Some(u) = &self.username {
                args.push(u);
            }
            args.push(p);
            command(&mut conn, &args).await?;
        }
        command(&mut conn, &["INFO", "ALL"]).await
    }
}

/// Largest bulk reply accepted (`INFO ALL` is tens of KiB). A larger `$n` is refused before
/// anything is allocated, so a hostile or broken server cannot make the agent reserve memory.
const MAX_BULK: usize = 16 << 20;
/// Longest status/error/length line accepted.
const MAX_LINE: u64 = 64 << 10;

async fn command<S>(conn: &mut BufReader<S>, args: &[&str]) -> Result<String, RedisError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    conn.get_mut()
        .write_all(req.as_bytes())
        .await
        .map_err(RedisError::Write)?;
    let mut line = String::new();
    (&mut *conn)
        .take(MAX_LINE)
        .read_line(&mut line)
        .await
        .map_err(RedisError::Read)?;
    if !line.ends_with('\n') {
        return Err(RedisError::LineTooLong);
    }
    let line = line.trim_end();
    match line.as_bytes().first() {
        Some(b'+') => Ok(line[1..].to_string()),
        Some(b'-') => Err(RedisError::Server(line[1..].to_string())),
        Some(b'$') => {
            let n = bulk_len(&line[1..])?;
            let mut buf = vec![0u8; n + 2];
            conn.read_exact(&mut buf).await.map_err(RedisError::Read)?;
            buf.truncate(n);
            String::from_utf8(buf).map_err(|_| RedisError::NotUtf8)
        }
        _ => Err(RedisError::Unexpected(line.to_string())),
    }
}

/// The length of a bulk reply, bounded by [`MAX_BULK`].
fn bulk_len(s: &str) -> Result<usize, RedisError> {
    let n: u64 = s
        .parse()
        .map_err(|_| RedisError::BulkLength(s.to_string()))?;
    if n > MAX_BULK as u64 {
        return Err(RedisError::BulkTooLarge(n));
    }
    Ok(n as usize)
}

/// Parses `k=v,k=v` lists (keyspace, commandstats, slave lines).
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

    async fn raw(port: u16, args: &[&str]) -> String {
        let s = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let mut conn = BufReader::new(s);
        command(&mut conn, args).await.expect("command")
    }

    #[tokio::test]
    async fn collects_from_a_real_server() {
        let server = start_redis();
        raw(server.port, &["SET", "k1", "v"]).await;
        raw(server.port, &["SET", "k2", "v"]).await;
        let mut c = RedisCollector::new(&format!("127.0.0.1:{}", server.port)).expect("addr");
        // one hit, one miss
        let _ = raw(server.port, &["GET", "k1"]).await;
        let s = TcpStream::connect(("127.0.0.1", server.port))
            .await
            .expect("connect");
        let mut conn = BufReader::new(s);
        let _ = command(&mut conn, &["GET", "missing"]).await;
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

    /// A fake server that answers every request with `reply`.
    async fn fake_server(reply: Vec<u8>) -> u16 {
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
                    // Keep the connection open: the client must not wait for more.
                    tokio::time::sleep(Duration::from_secs(5)).await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn huge_bulk_lengths_are_refused_without_allocating() {
        for len in ["18446744073709551615", "99999999999", "1073741824"] {
            let port = fake_server(format!("${len}\r\nabc").into_bytes()).await;
            let s = TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            let err = command(&mut BufReader::new(s), &["INFO", "ALL"])
                .await
                .expect_err("must refuse");
            assert!(matches!(err, RedisError::BulkTooLarge(_)), "{len}: {err}");
            // The collector reports the server down instead of exhausting memory.
            let mut c = RedisCollector::new(&format!("127.0.0.1:{port}")).expect("addr");
            assert!(c.collect().await.contains("redis_up 0"));
        }
        assert_eq!(bulk_len("5").ok(), Some(5));
        assert!(bulk_len("-1").is_err());
    }

    #[tokio::test]
    async fn endless_reply_line_is_refused() {
        let port = fake_server(vec![b'+'; 200 << 10]).await;
        let s = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let err = command(&mut BufReader::new(s), &["PING"])
            .await
            .expect_err("must refuse");
        assert!(matches!(err, RedisError::LineTooLong), "{err}");
    }

    #[test]
    fn parses_addresses() {
        let c = RedisCollector::new("redis://:secret@cache:6380/0").expect("addr");
        assert_eq!(c.addr, "cache:6380");
        assert_eq!(c.password.as_deref(), Some("secret"));
        assert_eq!(c.username, None);
        let c = RedisCollector::new("cache").expect("addr");
        assert_eq!(c.addr, "cache:6379");
        let c = RedisCollector::new("redis://u:p@h:1").expect("addr");
        assert_eq!(c.username.as_deref(), Some("u"));
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
