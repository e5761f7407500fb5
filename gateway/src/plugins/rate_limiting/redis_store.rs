//! The `redis` policy's store: one atomic server-side step per decision.
//!
//! A Lua script reads every configured window's counter, and only when all have room
//! increments them all (setting each key's TTL to the end of its period). It returns
//! the counts so the headers are exact. All keys of one decision share a hash tag, so
//! the script touches a single slot and runs unchanged on one node or a Redis Cluster.
//!
//! Connections are made on a small dedicated runtime (Pingora runs several; a
//! multiplexed connection's driver must outlive any one request) and used from any.
//! After a failure the store is marked down and requests skip Redis at once (the
//! caller falls back or fails) except for a few probes per second, paced by governor,
//! which detect recovery; warnings are paced the same way.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo,
    RedisError, TlsMode,
};

use super::config::RedisTarget;
use super::window::{Decision, Limit, Usage};
use crate::metrics;

/// KEYS: one counter per window. ARGV: limit and TTL (seconds) per window, in order.
/// Returns {admitted (1|0), count_1, ..., count_n}: counts after the increment when
/// admitted, before it (unchanged) when not.
const SCRIPT: &str = r#"
local n = #KEYS
local counts = {}
local admitted = 1
for i = 1, n do
  local c = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  counts[i] = c
  if c + 1 > tonumber(ARGV[2 * i - 1]) then admitted = 0 end
end
if admitted == 1 then
  for i = 1, n do
    local c = redis.call('INCR', KEYS[i])
    counts[i] = c
    if c == 1 then redis.call('EXPIRE', KEYS[i], ARGV[2 * i]) end
  end
end
table.insert(counts, 1, admitted)
return counts
"#;

/// KEYS: counters. Returns their values (0 when absent).
const COUNTS_SCRIPT: &str = r#"
local out = {}
for i = 1, #KEYS do
  out[i] = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
end
return out
"#;

/// KEYS: counters. ARGV: the amount, then one TTL (seconds) per key, set when the key
/// is new. Returns the new values.
const ADD_SCRIPT: &str = r#"
local n = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local c = redis.call('INCRBY', KEYS[i], n)
  if c == n then redis.call('EXPIRE', KEYS[i], ARGV[i + 1]) end
  out[i] = c
end
return out
"#;

/// Probes allowed through while Redis is marked down.
const PROBES_PER_SEC: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis marked down; waiting for a probe to succeed")]
    Down,
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect to redis: {0}")]
    Connect(RedisError),
    #[error("redis command failed: {0}")]
    Command(RedisError),
    #[error("unexpected reply from the rate-limiting script: {0}")]
    Reply(String),
    /// Shared: the runtime is built once and its failure kept.
    #[error("redis runtime unavailable: {0}")]
    Runtime(#[source] Arc<std::io::Error>),
    /// The connecting task on the Redis runtime failed.
    #[error("redis runtime unavailable: {0}")]
    Task(#[source] tokio::task::JoinError),
}

impl StoreError {
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Down => "down",
            StoreError::Timeout(_) => "timeout",
            StoreError::Connect(_) => "connect",
            StoreError::Command(_) => "command",
            StoreError::Reply(_) => "reply",
            StoreError::Runtime(_) | StoreError::Task(_) => "runtime",
        }
    }
}

#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn query(&self, cmd: &Cmd) -> Result<Vec<i64>, RedisError> {
        match self {
            Conn::Single(c) => cmd.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
    }
}

pub struct RedisStore {
    target: RedisTarget,
    timeout: Duration,
    sha: String,
    counts_sha: String,
    add_sha: String,
    conn: ArcSwapOption<Conn>,
    connecting: tokio::sync::Mutex<()>,
    up: AtomicBool,
    probes: DefaultDirectRateLimiter,
    warnings: DefaultDirectRateLimiter,
}

fn per_sec(n: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

/// The runtime that owns Redis connections.
fn io_runtime() -> Result<&'static tokio::runtime::Runtime, StoreError> {
    static IO: OnceLock<Result<tokio::runtime::Runtime, Arc<std::io::Error>>> = OnceLock::new();
    IO.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("redis-io")
            .enable_all()
            .build()
            .map_err(Arc::new)
    })
    .as_ref()
    .map_err(|e| StoreError::Runtime(e.clone()))
}

impl RedisStore {
    /// The store for a target, shared by every plugin instance (and kept across reloads).
    pub fn shared(target: &RedisTarget) -> Arc<RedisStore> {
        static STORES: OnceLock<Mutex<HashMap<RedisTarget, Arc<RedisStore>>>> = OnceLock::new();
        let mut map = STORES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.entry(target.clone())
            .or_insert_with(|| Arc::new(RedisStore::new(target.clone())))
            .clone()
    }

    pub fn new(target: RedisTarget) -> RedisStore {
        metrics::rate_limiting().redis_up.set(1);
        RedisStore {
            timeout: Duration::from_millis(target.timeout_ms),
            sha: redis::Script::new(SCRIPT).get_hash().to_string(),
            counts_sha: redis::Script::new(COUNTS_SCRIPT).get_hash().to_string(),
            add_sha: redis::Script::new(ADD_SCRIPT).get_hash().to_string(),
            target,
            conn: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            up: AtomicBool::new(true),
            probes: RateLimiter::direct(per_sec(PROBES_PER_SEC)),
            warnings: RateLimiter::direct(per_sec(1)),
        }
    }

    /// One atomic decision over `limits` for the counter `base` (which carries the hash tag).
    pub async fn decide(
        &self,
        base: &str,
        limits: &[Limit],
        now_ms: u64,
    ) -> Result<Decision, StoreError> {
        self.guarded(self.run(base, limits, now_ms)).await
    }

    /// The current values of `keys` (0 when absent), nothing counted. The keys must
    /// share a hash tag (one slot on a Redis Cluster).
    pub async fn counts(&self, keys: &[String]) -> Result<Vec<u64>, StoreError> {
        self.guarded(async {
            let conn = self.connection().await?;
            let reply = self
                .eval(&conn, COUNTS_SCRIPT, &self.counts_sha, keys, &[])
                .await?;
            if reply.len() != keys.len() {
                return Err(StoreError::Reply(format!("{reply:?}")));
            }
            Ok(reply.into_iter().map(|c| c.max(0) as u64).collect())
        })
        .await
    }

    /// Adds `n` to each key, giving a new key its TTL (seconds): `(key, ttl)` pairs
    /// sharing a hash tag.
    pub async fn add(&self, keys: &[(String, u64)], n: u64) -> Result<(), StoreError> {
        self.guarded(async {
            let conn = self.connection().await?;
            let names: Vec<String> = keys.iter().map(|(k, _)| k.clone()).collect();
            let mut args = vec![n];
            args.extend(keys.iter().map(|(_, ttl)| *ttl));
            self.eval(&conn, ADD_SCRIPT, &self.add_sha, &names, &args)
                .await
                .map(|_| ())
        })
        .await
    }

    /// EVALSHA, or EVAL when the server does not know the script yet.
    async fn eval(
        &self,
        conn: &Conn,
        script: &str,
        sha: &str,
        keys: &[String],
        args: &[u64],
    ) -> Result<Vec<i64>, StoreError> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(sha).arg(keys.len()).arg(keys).arg(args);
        match conn.query(&cmd).await {
            Err(e) if e.code() == Some("NOSCRIPT") => {
                let mut eval = redis::cmd("EVAL");
                eval.arg(script).arg(keys.len()).arg(keys).arg(args);
                conn.query(&eval).await
            }
            r => r,
        }
        .map_err(StoreError::Command)
    }

    /// Runs one store operation with the timeout, metrics and down/probe bookkeeping.
    async fn guarded<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if !self.up.load(Ordering::Relaxed) && self.probes.check().is_err() {
            return Err(StoreError::Down);
        }
        let m = metrics::rate_limiting();
        let t0 = Instant::now();
        let res = match tokio::time::timeout(self.timeout, op).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        };
        m.redis_latency.observe(t0.elapsed().as_secs_f64());
        match &res {
            Ok(_) => {
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::warn!(target = ?self.target.nodes, "rate-limiting redis is back");
                }
                m.redis_up.set(1);
            }
            Err(e) => {
                m.redis_errors.with_label_values(&[e.kind()]).inc();
                m.redis_up.set(0);
                self.up.store(false, Ordering::Relaxed);
                if matches!(
                    e,
                    StoreError::Timeout(_) | StoreError::Connect(_) | StoreError::Command(_)
                ) {
                    // A fresh connection next time (the old one may be dead or wedged).
                    self.conn.store(None);
                }
                if self.warnings.check().is_ok() {
                    tracing::warn!(error = %e, target = ?self.target.nodes, "rate-limiting redis call failed");
                }
            }
        }
        res
    }

    async fn run(&self, base: &str, limits: &[Limit], now_ms: u64) -> Result<Decision, StoreError> {
        let conn = self.connection().await?;
        let keys: Vec<String> = limits
            .iter()
            .map(|l| format!("{base}:{}:{}", l.window.start_ms(now_ms), l.window.name()))
            .collect();
        let mut args: Vec<u64> = Vec::with_capacity(limits.len() * 2);
        for l in limits {
            let ttl = l
                .window
                .end_ms(now_ms)
                .saturating_sub(now_ms)
                .div_ceil(1000)
                + 1;
            args.push(l.limit);
            args.push(ttl);
        }
        let reply = self.eval(&conn, SCRIPT, &self.sha, &keys, &args).await?;
        if reply.len() != limits.len() + 1 {
            return Err(StoreError::Reply(format!("{reply:?}")));
        }
        Ok(Decision {
            admitted: reply[0] == 1,
            usage: limits
                .iter()
                .zip(&reply[1..])
                .map(|(l, c)| Usage {
                    window: l.window,
                    limit: l.limit,
                    used: (*c).max(0) as u64,
                })
                .collect(),
        })
    }

    async fn connection(&self) -> Result<Conn, StoreError> {
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        let _one = self.connecting.lock().await;
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        let target = self.target.clone();
        let c = io_runtime()?
            .spawn(async move { connect(&target).await })
            .await
            .map_err(StoreError::Task)?
            .map_err(StoreError::Connect)?;
        self.conn.store(Some(Arc::new(c.clone())));
        Ok(c)
    }
}

fn node_addr(t: &RedisTarget, host: &str, port: u16) -> ConnectionAddr {
    if t.ssl {
        ConnectionAddr::TcpTls {
            host: host.to_string(),
            port,
            insecure: !t.ssl_verify,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host.to_string(), port)
    }
}

/// True when the single endpoint is a Redis Cluster node (an ElastiCache configuration
/// endpoint in cluster mode): `INFO cluster` says `cluster_enabled:1`. Asked on a
/// connection to database 0, since a cluster refuses SELECT of any other.
async fn is_cluster_node(
    t: &RedisTarget,
    host: &str,
    port: u16,
    cfg: &AsyncConnectionConfig,
) -> Result<bool, RedisError> {
    let mut settings = RedisConnectionInfo::default();
    if let Some(u) = &t.username {
        settings = settings.set_username(u);
    }
    if let Some(p) = &t.password {
        settings = settings.set_password(p);
    }
    let info = node_addr(t, host, port)
        .into_connection_info()?
        .set_redis_settings(settings);
    let mut c = redis::Client::open(info)?
        .get_multiplexed_async_connection_with_config(cfg)
        .await?;
    let text: String = tokio::time::timeout(
        Duration::from_millis(t.timeout_ms.max(100)),
        redis::cmd("INFO").arg("cluster").query_async(&mut c),
    )
    .await
    .map_err(|_| RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))??;
    Ok(text.lines().any(|l| l.trim() == "cluster_enabled:1"))
}

async fn connect(t: &RedisTarget) -> Result<Conn, RedisError> {
    let connect_timeout = Duration::from_millis(t.connect_timeout_ms);
    let single_cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(None);
    // A single `host` that turns out to be a cluster node is used as the cluster's seed:
    // keys on other shards would otherwise answer MOVED, the store would be marked down
    // and every gateway would fall back to its own local counters.
    let discovered = !t.cluster
        && match t.nodes.first() {
            Some((h, p)) => is_cluster_node(t, h, *p, &single_cfg).await?,
            None => false,
        };
    if discovered {
        if t.database != 0 {
            tracing::warn!(
                database = t.database,
                "rate-limiting: redis.host is a Redis Cluster node; a cluster has only database 0, redis.database is ignored"
            );
        }
        tracing::info!("rate-limiting: redis.host is a Redis Cluster node; using cluster mode");
    }
    if t.cluster || discovered {
        let nodes = t
            .nodes
            .iter()
            .map(|(h, p)| node_addr(t, h, *p).into_connection_info())
            .collect::<Result<Vec<_>, _>>()?;
        let mut b = redis::cluster::ClusterClient::builder(nodes)
            .connection_timeout(connect_timeout)
            .response_timeout(Duration::from_millis(t.timeout_ms))
            .retries(2);
        if t.ssl {
            b = b.tls(if t.ssl_verify {
                TlsMode::Secure
            } else {
                TlsMode::Insecure
            });
        }
        if let Some(u) = &t.username {
            b = b.username(u);
        }
        if let Some(p) = &t.password {
            b = b.password(p);
        }
        let client = b.build()?;
        Ok(Conn::Cluster(client.get_async_connection().await?))
    } else {
        let (h, p) = t
            .nodes
            .first()
            .cloned()
            .unwrap_or_else(|| ("127.0.0.1".into(), 6379));
        let mut settings = RedisConnectionInfo::default().set_db(t.database);
        if let Some(u) = &t.username {
            settings = settings.set_username(u);
        }
        if let Some(p) = &t.password {
            settings = settings.set_password(p);
        }
        let info = node_addr(t, &h, p)
            .into_connection_info()?
            .set_redis_settings(settings);
        let client = redis::Client::open(info)?;
        Ok(Conn::Single(
            client
                .get_multiplexed_async_connection_with_config(&single_cfg)
                .await?,
        ))
    }
}
