//! `gateway`: a Kong-compatible API gateway on Pingora.
//!
//! `gateway run --config kong.yml` serves traffic; `gateway check --config kong.yml`
//! validates a file and prints every error with its file, line and field path.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use clap::{Args, Parser, Subcommand};
use pingora::apps::http_app::HttpServer;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::listening::Service;

use gateway::config::{self, LoadOptions};
use gateway::gateway::{Gateway, Limits};
use gateway::proxy::Proxy;
use gateway::status::StatusApp;

/// mimalloc: the proxy path allocates per request (headers, buffers); glibc malloc showed
/// up as ~20% of a profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "Kong-compatible API gateway on Pingora"
)]
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
    config: PathBuf,
    /// Accept and skip a plugin this gateway does not implement (repeatable).
    #[arg(
        long = "ignore-plugin",
        env = "GATEWAY_IGNORE_PLUGINS",
        value_delimiter = ','
    )]
    ignore_plugin: Vec<String>,
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
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,pingora=warn"));
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .init();
}

fn load_options(a: &CheckArgs) -> LoadOptions {
    LoadOptions {
        ignore_plugins: a
            .ignore_plugin
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect(),
    }
}

fn check(a: &CheckArgs) -> ExitCode {
    let loaded = config::load_file(&a.config, &load_options(a)).and_then(|d| {
        // Build it as `run` would (plugins, keys), without starting anything.
        let registry = gateway::balancer::TargetRegistry::default();
        match gateway::runtime::Runtime::build(d, &registry, None) {
            Ok(rt) => Ok(rt.decl),
            Err(m) => Err(config::ConfigErrors {
                source_name: a.config.display().to_string(),
                errors: vec![config::ConfigError {
                    path: String::new(),
                    line: None,
                    message: m,
                }],
            }),
        }
    });
    match loaded {
        Ok(d) => {
            println!(
                "{}: ok ({} services, {} routes, {} upstreams, {} consumers, {} plugins)",
                a.config.display(),
                d.services.len(),
                d.routes.len(),
                d.upstreams.len(),
                d.consumers.len(),
                d.plugins.len()
            );
            for p in &d.ignored_plugins {
                println!("note: plugin `{p}` is ignored (--ignore-plugin)");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            eprintln!("{} error(s)", e.errors.len());
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM: mark draining (readiness fails), stop accepting, exit once in-flight
/// requests finish or the drain timeout passes. SIGINT: exit now.
struct DrainWatch {
    gw: Arc<Gateway>,
    timeout: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for DrainWatch {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => return ShutdownSignal::FastShutdown,
        }
        self.gw.draining.store(true, Ordering::Relaxed);
        tracing::info!(
            timeout_s = self.timeout.as_secs(),
            "SIGTERM: draining in-flight requests"
        );
        let gw = self.gw.clone();
        let timeout = self.timeout;
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            // Let the listeners close first, then wait for the in-flight count to reach zero.
            std::thread::sleep(Duration::from_millis(100));
            while start.elapsed() < timeout {
                if gw.inflight.load(Ordering::Relaxed) == 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let left = gw.inflight.load(Ordering::Relaxed);
            tracing::info!(
                in_flight = left,
                elapsed_ms = start.elapsed().as_millis() as u64,
                "drain finished, exiting"
            );
            std::thread::sleep(Duration::from_millis(50));
            std::process::exit(0);
        });
        ShutdownSignal::GracefulTerminate
    }
}

fn run(a: RunArgsCli) -> ExitCode {
    init_logging();
    let opts = load_options(&a.check);
    let decl = match config::load_file(&a.check.config, &opts) {
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
    };
    let gw = match Gateway::new(
        decl,
        opts,
        Some(a.check.config.clone()),
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
    let conf = ServerConf {
        threads: workers,
        grace_period_seconds: Some(a.drain_timeout + 1),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: 1024,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Proxy {
            gw: gw.clone(),
            tls: false,
        },
        "proxy",
    );
    for l in a
        .proxy_listen
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        if let Some(addr) = l.strip_suffix(" ssl") {
            let (Some(c), Some(k)) = (&a.ssl_cert, &a.ssl_cert_key) else {
                eprintln!("listener `{l}` needs --ssl-cert and --ssl-cert-key");
                return ExitCode::FAILURE;
            };
            if let Err(code) = add_tls(&mut proxy, addr.trim(), c, k) {
                return code;
            }
        } else {
            proxy.add_tcp(l);
        }
    }
    if let (Some(c), Some(k)) = (&a.ssl_cert, &a.ssl_cert_key)
        && !a.proxy_listen.contains(" ssl")
        && let Err(code) = add_tls(&mut proxy, &a.proxy_ssl_listen, c, k)
    {
        return code;
    }
    server.add_service(proxy);

    let mut status = Service::new(
        "status".to_string(),
        HttpServer::new_app(StatusApp {
            gw: gw.clone(),
            allow_remote_config: a.allow_remote_config,
            max_config_bytes: 16 * 1024 * 1024,
        }),
    );
    status.threads = Some(1);
    status.add_tcp(&a.status_listen);
    server.add_service(status);

    tracing::info!(
        proxy = %a.proxy_listen,
        status = %a.status_listen,
        workers,
        hash = %gw.current.load().decl.hash,
        "gateway started"
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(DrainWatch {
            gw,
            timeout: Duration::from_secs(a.drain_timeout),
        }),
    });
    ExitCode::SUCCESS
}

fn add_tls<A: pingora::apps::ServerApp + Send + Sync + 'static>(
    svc: &mut Service<A>,
    addr: &str,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<(), ExitCode> {
    let (Some(c), Some(k)) = (cert.to_str(), key.to_str()) else {
        eprintln!("certificate paths must be UTF-8");
        return Err(ExitCode::FAILURE);
    };
    match TlsSettings::intermediate(c, k) {
        Ok(mut tls) => {
            tls.enable_h2();
            svc.add_tls_with_settings(addr, None, tls);
            Ok(())
        }
        Err(e) => {
            eprintln!("cannot load TLS certificate {c} / key {k}: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}
