//! `metrics-agent run`: wires config, WALs, senders, scrape loops, collectors and the HTTP
//! endpoints together, and shuts down cleanly on SIGTERM/SIGINT.

use crate::appender::{Appender, WriterSpec};
use crate::collectors::{
    Collector, ecs::EcsCollector, postgres::PostgresCollector, redis::RedisCollector,
};
use crate::config::{self, ConfigError};
use crate::discovery::Control;
use crate::duration::parse_duration;
use crate::labels::Labels;
use crate::remote_write::Sender;
use crate::scrape::{JobSettings, ScrapeLoop, ScrapeTarget, Source};
use crate::self_metrics::AgentMetrics;
use crate::sigv4::Signer;
use crate::wal::{Wal, WalError, WalOptions};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// prometheus.yml to load.
    #[arg(long)]
    pub config: PathBuf,
    /// Directory of the write-ahead log (one sub-directory per remote_write endpoint).
    #[arg(long, env = "METRICS_AGENT_WAL_DIR")]
    pub wal_dir: PathBuf,
    /// Address of the agent's own /metrics and /ready endpoints.
    #[arg(long, env = "METRICS_AGENT_LISTEN", default_value = "127.0.0.1:9464")]
    pub listen: String,
    /// Maximum WAL size per endpoint (bytes, or with KiB/MiB/GiB suffix). Oldest data is dropped beyond it.
    #[arg(long, env = "METRICS_AGENT_WAL_MAX_SIZE", default_value = "1GiB", value_parser = parse_size)]
    pub wal_max_size: u64,
    /// Maximum age of unsent samples (Prometheus duration). Older samples are dropped.
    #[arg(long, env = "METRICS_AGENT_WAL_MAX_AGE", default_value = "6h", value_parser = parse_dur)]
    pub wal_max_age: Duration,
    /// WAL segment file size.
    #[arg(long, env = "METRICS_AGENT_WAL_SEGMENT_SIZE", default_value = "16MiB", value_parser = parse_size)]
    pub wal_segment_size: u64,
    /// Group-commit window: appends within it share one WAL write and fsync (0s: every scrape
    /// is written on its own).
    #[arg(long, env = "METRICS_AGENT_WAL_COMMIT_WINDOW", default_value = "100ms", value_parser = parse_dur)]
    pub wal_commit_window: Duration,
    /// ECS Task Metadata Endpoint v4 base URI; enables the ECS collector.
    #[arg(long, env = "ECS_CONTAINER_METADATA_URI_V4")]
    pub ecs_metadata_uri: Option<String>,
    /// Disable the ECS collector even when ECS_CONTAINER_METADATA_URI_V4 is set.
    #[arg(long)]
    pub no_ecs: bool,
    /// PostgreSQL DSN to collect from (libpq key=value or postgres:// URL). Repeatable.
    #[arg(long = "postgres", env = "METRICS_AGENT_POSTGRES_DSN")]
    pub postgres: Vec<String>,
    /// Redis address to collect from (host:port, redis://[:password@]host:port, or
    /// rediss://... for TLS). Repeatable.
    #[arg(
        long = "redis",
        env = "METRICS_AGENT_REDIS_ADDR",
        value_delimiter = ','
    )]
    pub redis: Vec<String>,
    /// PEM file of the CA that signs the Redis servers' certificates (rediss://), instead of
    /// the system roots.
    #[arg(long, env = "METRICS_AGENT_REDIS_CA_FILE")]
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// Collection interval of the built-in collectors (default: global scrape_interval).
    #[arg(long, env = "METRICS_AGENT_COLLECTOR_INTERVAL", value_parser = parse_dur)]
    pub collector_interval: Option<Duration>,
    /// How long to keep sending on shutdown before leaving the rest in the WAL.
    #[arg(long, env = "METRICS_AGENT_FLUSH_TIMEOUT", default_value = "5s", value_parser = parse_dur)]
    pub flush_timeout: Duration,
    /// Replace `${NAME}` / `${NAME:-default}` anywhere in the config from the environment
    /// (unset without default is an error). Off: Prometheus' behaviour (only
    /// external_labels are expanded).
    #[command(flatten)]
    pub env: EnvArgs,
}

/// `--expand-env`, shared by `run` and `check`.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct EnvArgs {
    /// Expand `${NAME}` and `${NAME:-default}` everywhere in the config (the ECS sidecar
    /// image sets METRICS_AGENT_EXPAND_ENV=true). Default: as Prometheus, only
    /// external_labels values are expanded.
    #[arg(
        long = "expand-env",
        env = "METRICS_AGENT_EXPAND_ENV",
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub expand_env: bool,
}

impl EnvArgs {
    pub fn mode(&self) -> config::EnvMode {
        if self.expand_env {
            config::EnvMode::ExpandAll
        } else {
            config::EnvMode::Prometheus
        }
    }
}

fn parse_dur(s: &str) -> Result<Duration, crate::duration::DurationError> {
    parse_duration(s)
}

/// A `--wal-*-size` value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("invalid size {0:?}")]
    Invalid(String),
    #[error("invalid size unit {0:?} (use KiB, MiB, GiB)")]
    Unit(String),
    #[error("size {0:?} is too large")]
    TooLarge(String),
}

/// Parses `1048576`, `512KiB`, `64MiB`, `1GiB` (also KB/MB/GB as powers of 1000).
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| SizeError::Invalid(s.to_string()))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        u => return Err(SizeError::Unit(u.to_string())),
    };
    n.checked_mul(mult)
        .ok_or_else(|| SizeError::TooLarge(s.to_string()))
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{file}: field `remote_write`: at least one endpoint is required")]
    NoRemoteWrite { file: PathBuf },
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("--{flag}: {message}")]
    Flag { flag: &'static str, message: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP client: {0}")]
    Client(String),
    #[error("{file}: {what}: {source}")]
    HttpClient {
        file: PathBuf,
        what: String,
        #[source]
        source: crate::http_client::ClientError,
    },
}

/// Why a reload was refused (the running configuration stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("field `remote_write`: changing remote_write needs a restart")]
    RemoteWrite,
    #[error("field `global.external_labels`: changing external_labels needs a restart")]
    ExternalLabels,
    #[error("scrape job {job:?}: {source}")]
    Client {
        job: String,
        #[source]
        source: crate::http_client::ClientError,
    },
}

fn collector_target(
    name: &str,
    instance: String,
    interval: Duration,
    timeout: Duration,
    c: Collector,
) -> ScrapeTarget {
    ScrapeTarget {
        job: Arc::new(JobSettings::collector(name, interval, timeout)),
        labels: Labels::from_pairs([("job", name.to_string()), ("instance", instance)]),
        source: Source::Collector(Box::new(c)),
    }
}

fn job_client(job: &config::ScrapeJob) -> Result<reqwest::Client, crate::http_client::ClientError> {
    crate::http_client::build(
        &job.http,
        reqwest::Client::builder().pool_max_idle_per_host(4),
    )
}

/// The running scrape jobs, by name.
#[derive(Default)]
struct JobSet {
    jobs: std::collections::HashMap<String, RunningJob>,
}

struct RunningJob {
    /// The job's settings as text: a reload restarts the job when they differ.
    fingerprint: String,
    control: watch::Sender<Control>,
    handle: tokio::task::JoinHandle<()>,
}

impl JobSet {
    fn len(&self) -> usize {
        self.jobs.len()
    }

    fn start(
        &mut self,
        job: &config::ScrapeJob,
        client: reqwest::Client,
        appender: &Appender,
        metrics: &AgentMetrics,
    ) {
        let (control, rx) = watch::channel(Control::Run);
        let manager = crate::discovery::JobManager {
            job: Arc::new(job.clone()),
            settings: Arc::new(JobSettings::from(job)),
            client,
            appender: appender.clone(),
            metrics: metrics.clone(),
        };
        let handle = tokio::spawn(manager.run(rx));
        self.jobs.insert(
            job.name.clone(),
            RunningJob {
                fingerprint: format!("{job:?}"),
                control,
                handle,
            },
        );
    }

    /// Stops a job: `Retire` gives its series stale markers, `Stop` does not.
    async fn stop(&mut self, name: &str, how: Control) {
        if let Some(j) = self.jobs.remove(name) {
            let _ = j.control.send(how);
            let mut h = j.handle;
            if tokio::time::timeout(Duration::from_secs(20), &mut h)
                .await
                .is_err()
            {
                h.abort();
                let _ = h.await;
            }
        }
    }

    async fn stop_all(&mut self) {
        let names: Vec<String> = self.jobs.keys().cloned().collect();
        for j in self.jobs.values() {
            let _ = j.control.send(Control::Stop);
        }
        for n in names {
            self.stop(&n, Control::Stop).await;
        }
    }
}

/// Applies a newly loaded configuration: jobs that are new start, removed jobs stop (their
/// series get stale markers), changed jobs restart, unchanged jobs keep running. The WAL,
/// its send positions and the remote_write senders are untouched; a change of
/// `remote_write` or `external_labels` is refused (it needs a restart).
fn reload(
    cur: &mut config::Config,
    new: Result<config::Config, ConfigError>,
    jobs: &mut JobSet,
    appender: &Appender,
    metrics: &AgentMetrics,
) -> Result<String, ReloadError> {
    let new = new?;
    if format!("{:?}", new.remote_writes) != format!("{:?}", cur.remote_writes) {
        return Err(ReloadError::RemoteWrite);
    }
    if new.external_labels != cur.external_labels {
        return Err(ReloadError::ExternalLabels);
    }
    for w in &new.warnings {
        tracing::warn!("{w}");
    }
    // Build every new client first, so a bad tls_config leaves everything as it was.
    let mut clients = std::collections::HashMap::new();
    for job in &new.jobs {
        let unchanged = jobs
            .jobs
            .get(&job.name)
            .is_some_and(|r| r.fingerprint == format!("{job:?}"));
        if !unchanged {
            let c = job_client(job).map_err(|source| ReloadError::Client {
                job: job.name.clone(),
                source,
            })?;
            clients.insert(job.name.clone(), c);
        }
    }
    let wanted: std::collections::HashSet<&str> =
        new.jobs.iter().map(|j| j.name.as_str()).collect();
    let (mut added, mut changed, mut removed) = (0, 0, 0);
    let gone: Vec<String> = jobs
        .jobs
        .keys()
        .filter(|n| !wanted.contains(n.as_str()))
        .cloned()
        .collect();
    for name in gone {
        if let Some(j) = jobs.jobs.remove(&name) {
            let _ = j.control.send(Control::Retire);
            removed += 1;
        }
    }
    for job in &new.jobs {
        let Some(client) = clients.remove(&job.name) else {
            continue;
        };
        if let Some(old) = jobs.jobs.remove(&job.name) {
            let _ = old.control.send(Control::Stop);
            changed += 1;
        } else {
            added += 1;
        }
        jobs.start(job, client, appender, metrics);
    }
    *cur = new;
    Ok(format!(
        "{added} jobs added, {changed} changed, {removed} removed, {} running",
        jobs.len()
    ))
}

/// SIGHUP as a stream (never fires where signals are unavailable).
struct Hangups {
    #[cfg(unix)]
    inner: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.inner {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await
    }
}

fn hangups() -> Hangups {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        Hangups {
            inner: signal(SignalKind::hangup()).ok(),
        }
    }
    #[cfg(not(unix))]
    Hangups {}
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The ECS task id for `${ECS_TASK_ID}` in the config: the environment's when set,
/// else read from the task metadata endpoint (three tries; the endpoint is up when the
/// container starts).
async fn ecs_task_id(args: &RunArgs) -> Option<String> {
    if !args.env.expand_env {
        return None; // only the whole-file expansion reads ${ECS_TASK_ID}
    }
    if let Ok(id) = std::env::var("ECS_TASK_ID") {
        return Some(id);
    }
    let uri = args.ecs_metadata_uri.as_deref().filter(|_| !args.no_ecs)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    let ecs = EcsCollector::new(uri, client);
    for attempt in 1..=3 {
        match ecs.task_id().await {
            Ok(id) => return Some(id),
            Err(e) => {
                tracing::warn!(error = %e, attempt, "cannot read the ECS task id");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    None
}

/// Runs the agent until SIGTERM/SIGINT: load and check, open the WALs, start the senders,
/// the scrape jobs and collectors and the HTTP endpoints, serve reloads, then shut down.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    let task_id = ecs_task_id(&args).await;
    let load = || {
        config::load_with(&args.config, args.env.mode(), |name| match name {
            "ECS_TASK_ID" => task_id.clone(),
            _ => std::env::var(name).ok(),
        })
    };
    let cfg = load()?;
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    check_run_flags(&args, &cfg)?;
    let metrics = AgentMetrics::new();
    let clients = Clients::build(&args, &cfg)?;
    let (wals, writers) = open_wals(&args, &cfg, &metrics)?;
    let (appender, writer_thread) = Appender::start(
        &cfg.external_labels,
        &cfg.remote_writes,
        writers,
        args.wal_commit_window,
    );

    let (scrape_stop_tx, scrape_stop) = watch::channel(false);
    let (send_stop_tx, send_stop) = watch::channel(false);
    let sender_tasks = start_senders(&cfg, &wals, &clients, &metrics, &send_stop);
    let maintenance = spawn_maintenance(wals.clone(), send_stop.clone());

    // Targets: scrape_configs (each job's manager follows its discovery), then built-in
    // collectors.
    let mut jobs = JobSet::default();
    for (job, client) in cfg.jobs.iter().zip(clients.jobs) {
        jobs.start(job, client, &appender, &metrics);
    }
    let targets = collector_targets(&args, &cfg, &clients.scrape)?;

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: args.listen.clone(),
            source,
        })?;
    let ready = Arc::new(AtomicBool::new(false));
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel::<crate::server::ReloadRequest>(4);
    let server = tokio::spawn(crate::server::serve(
        listener,
        metrics.clone(),
        ready.clone(),
        reload_tx,
        scrape_stop.clone(),
    ));

    tracing::info!(
        jobs = jobs.len(),
        collectors = targets.len(),
        listen = %args.listen,
        "metrics-agent started"
    );
    let mut loops = Vec::new();
    for t in targets {
        let l = ScrapeLoop::new(t, appender.clone(), metrics.clone());
        loops.push(tokio::spawn(l.run(scrape_stop.clone())));
    }
    ready.store(true, Ordering::Release);

    // Run until SIGTERM/SIGINT; SIGHUP and POST /-/reload re-read the file.
    let mut cfg = cfg;
    let mut hup = hangups();
    let term = wait_for_signal();
    tokio::pin!(term);
    loop {
        let reply = tokio::select! {
            _ = &mut term => break,
            _ = hup.recv() => None,
            r = reload_rx.recv() => match r {
                Some(reply) => Some(reply),
                None => continue,
            },
        };
        let result = reload(&mut cfg, load(), &mut jobs, &appender, &metrics);
        match &result {
            Ok(summary) => tracing::info!("configuration reloaded: {summary}"),
            Err(e) => tracing::error!("reload failed, the running configuration stays: {e}"),
        }
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }

    tracing::info!("shutting down: stopping scrapes");
    ready.store(false, Ordering::Release);
    let _ = scrape_stop_tx.send(true);
    jobs.stop_all().await;
    drop(appender);
    for mut l in loops {
        if tokio::time::timeout(Duration::from_secs(15), &mut l)
            .await
            .is_err()
        {
            l.abort();
            let _ = l.await;
        }
    }
    let _ = server.await;
    flush(&wals, args.flush_timeout).await;
    let _ = send_stop_tx.send(true);
    for t in sender_tasks {
        let _ = t.await;
    }
    let _ = maintenance.await;
    for w in &wals {
        w.maintain()?;
    }
    if writer_thread.join().is_err() {
        tracing::error!("the WAL writer thread panicked");
    }
    tracing::info!("stopped; unsent samples stay in the WAL for the next start");
    Ok(())
}

/// Checks what `run` needs beyond a valid file: a remote_write, and coherent WAL sizes.
fn check_run_flags(args: &RunArgs, cfg: &config::Config) -> Result<(), RunError> {
    if cfg.remote_writes.is_empty() {
        return Err(RunError::NoRemoteWrite {
            file: args.config.clone(),
        });
    }
    if args.wal_segment_size < 4096 {
        return Err(RunError::Flag {
            flag: "wal-segment-size",
            message: "must be at least 4KiB".into(),
        });
    }
    if args.wal_max_size < args.wal_segment_size * 2 {
        return Err(RunError::Flag {
            flag: "wal-max-size",
            message: "must be at least twice --wal-segment-size".into(),
        });
    }
    Ok(())
}

/// The HTTP clients: one per scrape job and per endpoint (each has its own TLS, proxy and
/// redirect settings) and one for the built-in collectors.
struct Clients {
    scrape: reqwest::Client,
    jobs: Vec<reqwest::Client>,
    remote_writes: Vec<reqwest::Client>,
}

impl Clients {
    fn build(args: &RunArgs, cfg: &config::Config) -> Result<Clients, RunError> {
        let scrape = reqwest::Client::builder()
            .pool_max_idle_per_host(4)
            .build()
            .map_err(|e| RunError::Client(e.to_string()))?;
        let http_error = |what: String| {
            move |source| RunError::HttpClient {
                file: args.config.clone(),
                what,
                source,
            }
        };
        let mut jobs = Vec::new();
        for job in &cfg.jobs {
            jobs.push(job_client(job).map_err(http_error(format!("scrape job {:?}", job.name)))?);
        }
        let mut remote_writes = Vec::new();
        for rw in &cfg.remote_writes {
            remote_writes.push(
                crate::http_client::build(&rw.http, reqwest::Client::builder())
                    .map_err(http_error(format!("remote_write {:?}", rw.name)))?,
            );
        }
        Ok(Clients {
            scrape,
            jobs,
            remote_writes,
        })
    }
}

/// Opens one WAL per endpoint (replay starts from each shard's saved cursor) and takes
/// their writers.
fn open_wals(
    args: &RunArgs,
    cfg: &config::Config,
    metrics: &AgentMetrics,
) -> Result<(Vec<Arc<Wal>>, Vec<WriterSpec>), RunError> {
    let mut wals = Vec::new();
    let mut writers = Vec::new();
    for rw in &cfg.remote_writes {
        let opts = WalOptions {
            segment_bytes: args.wal_segment_size,
            max_bytes: args.wal_max_size,
            max_age: args.wal_max_age,
            shards: rw.shards,
        };
        let (wal, rec) = Wal::open(
            &args.wal_dir.join(&rw.name),
            opts,
            &rw.name,
            metrics.clone(),
        )?;
        tracing::info!(
            remote = %rw.name,
            segments = rec.segments,
            unsent_samples = rec.unsent_samples,
            truncated_bytes = rec.truncated_bytes,
            "WAL opened"
        );
        let writer = wal
            .writer()
            .ok_or_else(|| RunError::Client("WAL writer taken twice".into()))?;
        writers.push(WriterSpec {
            writer,
            shards: rw.shards,
            max_samples_per_send: rw.max_samples_per_send,
        });
        wals.push(Arc::new(wal));
    }
    Ok((wals, writers))
}

/// Starts one sender task per endpoint and shard.
fn start_senders(
    cfg: &config::Config,
    wals: &[Arc<Wal>],
    clients: &Clients,
    metrics: &AgentMetrics,
    stop: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for ((rw, wal), client) in cfg
        .remote_writes
        .iter()
        .zip(wals)
        .zip(&clients.remote_writes)
    {
        let signer = rw
            .sigv4
            .as_ref()
            .map(|s| Arc::new(Signer::new(s.auth.clone())));
        let sender = Arc::new(Sender {
            rw: Arc::new(rw.clone()),
            client: client.clone(),
            metrics: metrics.clone(),
            signer,
        });
        for shard in 0..rw.shards {
            tasks.push(tokio::spawn(
                sender.clone().run_shard(wal.reader(shard), stop.clone()),
            ));
        }
    }
    tasks
}

/// WAL maintenance every 500 ms until `stop`: persist cursors, delete sent segments,
/// apply the age bound.
fn spawn_maintenance(
    wals: Vec<Arc<Wal>>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            // fsync and unlink can block: keep them off the async worker threads.
            let wals = wals.clone();
            let done = tokio::task::spawn_blocking(move || {
                for w in &wals {
                    if let Err(e) = w.maintain() {
                        tracing::error!("WAL maintenance: {e}");
                    }
                }
            })
            .await;
            if let Err(e) = done {
                tracing::error!("WAL maintenance task: {e}");
            }
        }
    })
}

/// The built-in collectors the flags enable (ECS, PostgreSQL, Redis) as scrape targets.
fn collector_targets(
    args: &RunArgs,
    cfg: &config::Config,
    client: &reqwest::Client,
) -> Result<Vec<ScrapeTarget>, RunError> {
    let mut targets = Vec::new();
    let interval = args.collector_interval.unwrap_or(cfg.scrape_interval);
    let timeout = cfg.scrape_timeout.min(interval);
    let target = |name, instance, c| collector_target(name, instance, interval, timeout, c);
    if let (Some(uri), false) = (&args.ecs_metadata_uri, args.no_ecs) {
        let instance = reqwest::Url::parse(uri)
            .ok()
            .and_then(|u| {
                u.host_str().map(|h| match u.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_string(),
                })
            })
            .ok_or_else(|| RunError::Flag {
                flag: "ecs-metadata-uri",
                message: format!("{uri:?} is not a URL"),
            })?;
        let c = Collector::Ecs(EcsCollector::new(uri, client.clone()));
        targets.push(target("ecs", instance, c));
    }
    for dsn in &args.postgres {
        let c = PostgresCollector::new(dsn).map_err(|e| RunError::Flag {
            flag: "postgres",
            message: e.to_string(),
        })?;
        let instance = c.instance();
        targets.push(target(
            "postgres",
            instance,
            Collector::Postgres(Box::new(c)),
        ));
    }
    let redis_ca = match &args.redis_ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| RunError::Flag {
            flag: "redis-ca-file",
            message: format!("{}: {e}", path.display()),
        })?),
        None => None,
    };
    for addr in &args.redis {
        let c = RedisCollector::with_ca(addr, redis_ca.clone()).map_err(|e| RunError::Flag {
            flag: "redis",
            message: e.to_string(),
        })?;
        let instance = c.instance();
        targets.push(target("redis", instance, Collector::Redis(Box::new(c))));
    }
    Ok(targets)
}

/// After the scrapes stopped (every appended sample is durable): lets the senders work for
/// up to `timeout`, stopping early when the receiver makes no progress (it is down: the WAL
/// keeps the rest).
async fn flush(wals: &[Arc<Wal>], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut last = wals.iter().map(|w| w.progress()).collect::<Vec<_>>();
    let mut last_change = Instant::now();
    while Instant::now() < deadline && !wals.iter().all(|w| w.fully_sent()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = wals.iter().map(|w| w.progress()).collect::<Vec<_>>();
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() > Duration::from_secs(1) {
            tracing::warn!("receiver not accepting data; leaving the rest in the WAL");
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("MiB").is_err());
    }
}
