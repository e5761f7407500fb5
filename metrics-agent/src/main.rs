//! metrics-agent: scrapes Prometheus targets and ECS/PostgreSQL/Redis stats and ships them by
//! Prometheus remote_write through a durable on-disk queue.

use metrics_agent::{agent, config, discovery};

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "metrics-agent",
    version,
    about = "Prometheus-compatible scrape + remote_write sidecar with a durable WAL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent.
    Run(Box<agent::RunArgs>),
    /// Validate a prometheus.yml and exit.
    Check {
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        env: agent::EnvArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One TLS provider for every client that takes the process default (the Redis
    // collector's rediss://), whatever other crates of the workspace link in.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Check { config, env } => match config::load(&config, env.mode()) {
            Ok(c) => {
                for w in &c.warnings {
                    eprintln!("warning: {w}");
                }
                for j in &c.jobs {
                    if let Err(e) = discovery::check_file_sd(j) {
                        eprintln!("{}: job {:?}: {e}", config.display(), j.name);
                        return ExitCode::FAILURE;
                    }
                }
                let targets: usize = c.jobs.iter().map(|j| j.targets.len()).sum();
                let discovery: usize = c
                    .jobs
                    .iter()
                    .map(|j| {
                        j.file_sd.len()
                            + j.dns_sd.len()
                            + j.ec2_sd.len()
                            + j.consul_sd.len()
                            + j.docker_sd.len()
                    })
                    .sum();
                let discovery = if discovery > 0 {
                    format!(", {discovery} service discovery configs")
                } else {
                    String::new()
                };
                println!(
                    "{}: OK ({} scrape jobs, {} targets{discovery}, {} remote_write endpoints)",
                    config.display(),
                    c.jobs.len(),
                    targets,
                    c.remote_writes.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(agent::run(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("metrics-agent: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
