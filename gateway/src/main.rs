//! `gateway`: a Kong-compatible API gateway on hyper.
//!
//! `gateway run --config kong.yml` serves traffic; `gateway check --config kong.yml`
//! validates a file and prints every error with its file, line and field path.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use gateway::config::{self, LoadOptions};
use gateway::gateway::{Gateway, Limits};
use gateway::server::guard::Deadlines;
use gateway::server::{self, ListenSpec, ServerOptions};
use gateway::status::StatusApp;

/// mimalloc: the proxy path allocates per request (headers, buffers); glibc malloc showed
/// up as ~20% of a profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "gateway", version, about = "Kong-compatible API gateway")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve traffic with a declarative configuration.
    Run(Box<RunArgsCli>),
    /// Validate a declarative configuration and print every error.
    Check(CheckArgs),
}

#[derive(Args)]
struct CheckArgs {
    /// Kong declarative configuration file (YAML or JSON, `_format_version: "3.0"`).
    #[arg(long, short = 'c', env = "GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// The whole declarative configuration as a string, used when `--config` is absent
    /// (as Kong's `KONG_DECLARATIVE_CONFIG_STRING`; how the ECS task receives it).
    #[arg(long, env = "GATEWAY_CONFIG_STRING", hide_env_values = true)]
    config_string: Option<String>,
    /// Accept and skip a plugin this gateway does not implement (repeatable).
    #[arg(
        long = "ignore-plugin",
        env = "GATEWAY_IGNORE_PLUGINS",
        value_delimiter = ','
    )]
    ignore_plugin: Vec<String>,
    /// Warnings (what Kong loads but is risky or likely a mistake) are errors.
    #[arg(long, env = "GATEWAY_STRICT")]
    strict: bool,
}

#[derive(Args)]
struct RunArgsCli {
    #[command(flatten)]
    check: CheckArgs,
    /// Proxy listeners, comma-separated (`addr` or `addr ssl`).
    #[arg(long, env = "GATEWAY_PROXY_LISTEN", default_value = "0.0.0.0:8000")]
    proxy_listen: String,
    /// TLS proxy listener, used when a certificate and key are configured.
    #[arg(long, env = "GATEWAY_PROXY_SSL_LISTEN", default_value = "0.0.0.0:8443")]
    proxy_ssl_listen: String,
    /// Status listener (`/status`, `/status/ready`, `/health`, `/metrics`, `POST /config`).
    #[arg(long, env = "GATEWAY_STATUS_LISTEN", default_value = "127.0.0.1:8100")]
    status_listen: String,
    /// PEM certificate chain for the TLS listener.
    #[arg(long, env = "GATEWAY_SSL_CERT", requires = "ssl_cert_key")]
    ssl_cert: Option<PathBuf>,
    /// PEM private key for the TLS listener.
    #[arg(long, env = "GATEWAY_SSL_CERT_KEY", requires = "ssl_cert")]
    ssl_cert_key: Option<PathBuf>,
    /// Worker threads for the proxy (default: one per core).
    #[arg(long, env = "GATEWAY_WORKERS")]
    workers: Option<usize>,
    /// Seconds to drain in-flight requests after SIGTERM before exiting.
    #[arg(long, env = "GATEWAY_DRAIN_TIMEOUT", default_value_t = 30)]
    drain_timeout: u64,
    /// Access log: `stdout`, `off`, or a file path.
    #[arg(long, env = "GATEWAY_ACCESS_LOG", default_value = "stdout")]
    access_log: String,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "GATEWAY_MAX_BODY_SIZE", default_value_t = 8 * 1024 * 1024)]
    max_body_size: u64,
    /// Largest accepted request header block, in bytes.
    #[arg(long, env = "GATEWAY_MAX_HEADER_SIZE", default_value_t = 32 * 1024)]
    max_header_size: usize,
    /// Most request headers accepted.
    #[arg(long, env = "GATEWAY_MAX_HEADERS", default_value_t = 100)]
    max_headers: usize,
    /// Seconds a client may take to send its body or read the response between reads/writes.
    #[arg(long, env = "GATEWAY_CLIENT_TIMEOUT", default_value_t = 60)]
    client_timeout: u64,
    /// Addresses (IPs or CIDRs, comma-separated) whose real-ip header is believed
    /// (Kong's `trusted_ips`).
    #[arg(long, env = "GATEWAY_TRUSTED_IPS", value_delimiter = ',')]
    trusted_ips: Vec<String>,
    /// Header carrying the client address from a trusted peer (Kong's `real_ip_header`).
    #[arg(long, env = "GATEWAY_REAL_IP_HEADER", default_value = "X-Real-IP")]
    real_ip_header: String,
    /// Walk the real-ip header from the right past trusted addresses (`real_ip_recursive`).
    #[arg(long, env = "GATEWAY_REAL_IP_RECURSIVE")]
    real_ip_recursive: bool,
    /// Accept `POST /config` from non-loopback addresses.
    #[arg(long, env = "GATEWAY_ALLOW_REMOTE_CONFIG")]
    allow_remote_config: bool,
    /// Token `POST /config` must carry (`Authorization: Bearer`); required whenever the
    /// status listener is reachable beyond loopback.
    #[arg(long, env = "GATEWAY_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Expand `${{ env "NAME" }}` in posted configurations (off: they are an error).
    #[arg(long, env = "GATEWAY_ALLOW_POSTED_ENV")]
    allow_posted_env: bool,
    /// Seconds a client has to send a whole request head, from its first byte.
    #[arg(long, env = "GATEWAY_HEADER_TIMEOUT", default_value_t = 10)]
    header_timeout: u64,
    /// Seconds an idle keep-alive client connection stays open (above the ALB's 60 s
    /// idle timeout, so the ALB closes first).
    #[arg(long, env = "GATEWAY_KEEPALIVE_TIMEOUT", default_value_t = 75)]
    keepalive_timeout: u64,
    /// Seconds between background resolutions of upstream names (targets and service
    /// hosts given as DNS names; every address is used). The system resolver gives no
    /// TTL, so this is the longest an address change goes unnoticed.
    #[arg(long, env = "GATEWAY_DNS_REFRESH", default_value_t = 5)]
    dns_refresh: u64,
    /// Concurrent client connections per worker; more wait in the listen queue.
    #[arg(long, env = "GATEWAY_MAX_CONNECTIONS", default_value_t = 16384)]
    max_connections: usize,
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Check(a) => check(&a),
        Cmd::Run(a) => run(*a),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GATEWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .init();
}

fn load_options(a: &CheckArgs) -> LoadOptions {
    let mut o = gateway::plugins::load_options(
        a.ignore_plugin
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect(),
    );
    o.strict = a.strict;
    o
}

/// The warnings of a loaded configuration, one per line, with file:line.
fn warning_lines(source: &str, decl: &config::Declarative) -> Vec<String> {
    decl.warnings
        .iter()
        .map(|w| {
            let at = match w.line {
                Some(l) => format!("{source}:{l}"),
                None => source.to_string(),
            };
            format!("warning: {at}: {}: {}", w.path, w.message)
        })
        .collect()
}

/// Where the configuration comes from: the file, or `GATEWAY_CONFIG_STRING`.
fn source_name(a: &CheckArgs) -> String {
    match &a.config {
        Some(p) => p.display().to_string(),
        None => "GATEWAY_CONFIG_STRING".into(),
    }
}

fn load(a: &CheckArgs, opts: &LoadOptions) -> Result<config::Declarative, config::ConfigErrors> {
    match (&a.config, &a.config_string) {
        (Some(p), _) => config::load_file(p, opts),
        (None, Some(text)) => config::load_str(text, "GATEWAY_CONFIG_STRING", opts),
        (None, None) => Err(config::ConfigErrors {
            source_name: "gateway".into(),
            warnings: Vec::new(),
            errors: vec![config::ConfigError {
                path: String::new(),
                line: None,
                message:
                    "no configuration: give --config FILE (GATEWAY_CONFIG) or GATEWAY_CONFIG_STRING"
                        .into(),
            }],
        }),
    }
}

fn check(a: &CheckArgs) -> ExitCode {
    let loaded = load(a, &load_options(a)).and_then(|d| {
        // Build it as `run` would (plugins, keys), without starting anything.
        let registry = gateway::balancer::TargetRegistry::default();
        match gateway::core::runtime::Runtime::build(
            d,
            &registry,
            None,
            &gateway::plugins::REGISTRY,
        ) {
            Ok(rt) => Ok(rt.decl),
            Err(e) => Err(config::ConfigErrors {
                source_name: source_name(a),
                warnings: Vec::new(),
                errors: vec![config::ConfigError {
                    path: String::new(),
                    line: None,
                    message: e.to_string(),
                }],
            }),
        }
    });
    match loaded {
        Ok(d) => {
            println!(
                "{}: ok ({} services, {} routes, {} upstreams, {} consumers, {} plugins)",
                source_name(a),
                d.services.len(),
                d.routes.len(),
                d.upstreams.len(),
                d.consumers.len(),
                d.plugins.len()
            );
            for p in &d.ignored_plugins {
                println!("note: plugin `{p}` is ignored (--ignore-plugin)");
            }
            for w in warning_lines(&source_name(a), &d) {
                eprintln!("{w}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            for w in &e.warnings {
                let at = match w.line {
                    Some(l) => format!("{}:{l}", e.source_name),
                    None => e.source_name.clone(),
                };
                eprintln!("warning: {at}: {}: {}", w.path, w.message);
            }
            eprintln!("{} error(s)", e.errors.len());
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM: mark draining (readiness fails), stop accepting, exit once in-flight
/// requests finish or the drain timeout passes. SIGINT: exit now.
async fn wait_for_signals(
    gw: Arc<Gateway>,
    stop: tokio::sync::watch::Sender<bool>,
    timeout: Duration,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => std::process::exit(0),
    }
    gw.draining.store(true, Ordering::Relaxed);
    tracing::info!(
        timeout_s = timeout.as_secs(),
        "SIGTERM: draining in-flight requests"
    );
    let _ = stop.send(true);
    let start = std::time::Instant::now();
    // Let the listeners close first, then wait for the in-flight count to reach zero.
    tokio::time::sleep(Duration::from_millis(100)).await;
    while start.elapsed() < timeout {
        if gw.inflight.load(Ordering::Relaxed) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = gw.inflight.load(Ordering::Relaxed);
    tracing::info!(
        in_flight = left,
        elapsed_ms = start.elapsed().as_millis() as u64,
        "drain finished, exiting"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    std::process::exit(0);
}

/// Socket addresses of a listener given as `host:port`.
fn resolve_listen(spec: &str) -> Result<Vec<std::net::SocketAddr>, String> {
    use std::net::ToSocketAddrs;
    spec.to_socket_addrs()
        .map(|it| it.collect::<Vec<_>>())
        .map_err(|e| format!("listener `{spec}`: {e}"))
        .and_then(|v| {
            if v.is_empty() {
                Err(format!("listener `{spec}`: no address"))
            } else {
                Ok(v)
            }
        })
}

fn run(a: RunArgsCli) -> ExitCode {
    init_logging();
    let opts = load_options(&a.check);
    let decl = match load(&a.check, &opts) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("{} error(s); not starting", e.errors.len());
            return ExitCode::FAILURE;
        }
    };
    for p in &decl.ignored_plugins {
        tracing::warn!(plugin = %p, "plugin ignored by --ignore-plugin");
    }
    for w in warning_lines(&source_name(&a.check), &decl) {
        tracing::warn!("{w}");
    }
    let bg = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("gateway-bg")
        .enable_all()
        .build()
    {
        Ok(rt) => Box::leak(Box::new(rt)),
        Err(e) => {
            eprintln!("cannot start background runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let access_log = match gateway::access_log::Sink::open(&a.access_log) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot open access log {}: {e}", a.access_log);
            return ExitCode::FAILURE;
        }
    };
    let real_ip = match gateway::realip::RealIp::new(
        &a.trusted_ips,
        &a.real_ip_header,
        a.real_ip_recursive,
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("--trusted-ips: {e}");
            return ExitCode::FAILURE;
        }
    };
    let limits = Limits {
        max_header_count: a.max_headers,
        max_header_bytes: a.max_header_size,
        max_body_bytes: a.max_body_size,
        client_body_timeout: Duration::from_secs(a.client_timeout),
        client_send_timeout: Duration::from_secs(a.client_timeout),
        real_ip,
        dns_refresh: Duration::from_secs(a.dns_refresh.max(1)),
    };
    let gw = match Gateway::new(
        decl,
        opts,
        a.check.config.clone(),
        limits,
        bg.handle().clone(),
        access_log,
    ) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };

    // SIGHUP re-reads the file; a bad file leaves the running configuration in place.
    {
        let gw = gw.clone();
        bg.spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                tracing::error!("cannot install SIGHUP handler");
                return;
            };
            while hup.recv().await.is_some() {
                match gw.reload_file() {
                    Ok(hash) => tracing::info!(hash = %hash, "configuration reloaded (SIGHUP)"),
                    Err(e) => tracing::error!(errors = %e, "reload rejected; previous configuration keeps serving"),
                }
            }
        });
    }

    let workers = a
        .workers
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1);
    let tls = match (&a.ssl_cert, &a.ssl_cert_key) {
        (Some(c), Some(k)) => match server::tls_config(c, k) {
            Ok(cfg) => Some(cfg),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let mut listeners = Vec::new();
    for l in a
        .proxy_listen
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let (spec, is_tls) = match l.strip_suffix(" ssl") {
            Some(addr) => (addr.trim(), true),
            None => (l, false),
        };
        if is_tls && tls.is_none() {
            eprintln!("listener `{l}` needs --ssl-cert and --ssl-cert-key");
            return ExitCode::FAILURE;
        }
        match resolve_listen(spec) {
            Ok(addrs) => listeners.extend(
                addrs
                    .into_iter()
                    .map(|addr| ListenSpec { addr, tls: is_tls }),
            ),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if tls.is_some() && !a.proxy_listen.contains(" ssl") {
        match resolve_listen(&a.proxy_ssl_listen) {
            Ok(addrs) => {
                listeners.extend(addrs.into_iter().map(|addr| ListenSpec { addr, tls: true }))
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let status_listener = match resolve_listen(&a.status_listen)
        .and_then(|addrs| std::net::TcpListener::bind(&addrs[..]).map_err(|e| e.to_string()))
        .and_then(|l| {
            l.set_nonblocking(true)
                .map(|_| l)
                .map_err(|e| e.to_string())
        }) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("status listener {}: {e}", a.status_listen);
            return ExitCode::FAILURE;
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let opts = ServerOptions {
        listeners,
        tls,
        workers,
        deadlines: Deadlines {
            header: Duration::from_secs(a.header_timeout.max(1)),
            client: Duration::from_secs(a.client_timeout.max(1)),
            keepalive: Duration::from_secs(a.keepalive_timeout.max(1)),
        },
        max_connections: a.max_connections,
    };
    if let Err(e) = server::start(gw.clone(), opts, stop_rx) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    let app = Arc::new(StatusApp {
        gw: gw.clone(),
        allow_remote_config: a.allow_remote_config,
        max_config_bytes: 16 * 1024 * 1024,
        admin_token: a.admin_token.clone().filter(|t| !t.is_empty()),
        loopback_only: resolve_listen(&a.status_listen)
            .map(|v| v.iter().all(|s| s.ip().is_loopback()))
            .unwrap_or(false),
        allow_posted_env: a.allow_posted_env,
    });
    bg.spawn(async move {
        match tokio::net::TcpListener::from_std(status_listener) {
            Ok(l) => gateway::status::serve(app, l).await,
            Err(e) => tracing::error!(error = %e, "cannot register the status listener"),
        }
    });

    tracing::info!(
        proxy = %a.proxy_listen,
        status = %a.status_listen,
        workers,
        hash = %gw.current.load().decl.hash,
        "gateway started"
    );
    bg.block_on(wait_for_signals(
        gw,
        stop_tx,
        Duration::from_secs(a.drain_timeout),
    ));
    ExitCode::SUCCESS
}
