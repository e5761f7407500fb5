//! metrics-agent: scrapes Prometheus targets and ECS/PostgreSQL/Redis stats and ships them by
//! Prometheus remote_write through a durable on-disk queue.
//!
//! The binary (`main.rs`) is the CLI over [`agent::run`] and [`config::load`]; the modules are
//! public so benchmarks and other crates can drive the pipeline pieces directly.

pub mod agent;
pub mod appender;
pub mod aws;
pub mod clock;
pub mod collectors;
pub mod config;
pub mod consul_sd;
pub mod discovery;
pub mod dns_sd;
pub mod docker_sd;
pub mod duration;
pub mod ec2_sd;
pub mod env_expand;
pub mod http_client;
pub mod labels;
pub mod locate;
pub mod merge;
pub mod parser;
pub mod prompb;
pub mod relabel;
pub mod remote_write;
pub mod scrape;
pub mod self_metrics;
pub mod server;
pub mod sigv4;
pub mod wal;
