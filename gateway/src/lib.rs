//! Kong-compatible API gateway on hyper: configuration, routing, load balancing,
//! plugins and the status listener. The `gateway` binary wires these together.

pub mod access_log;
pub mod balancer;
pub mod config;
pub mod core;
pub mod gateway;
pub mod metrics;
pub mod net;
pub mod otel_export;
pub mod plugins;
pub mod proxy;
pub mod realip;
pub mod router;
pub mod server;
pub mod status;
