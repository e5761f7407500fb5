//! `provisioner`: stands up the edge-suite AWS environment by direct service
//! API calls and a reconcile loop (desired state from `envs/<env>.toml`,
//! actual state found by tags and names, a dependency-ordered plan of
//! creates/updates/deletes). See `docs/provisioner.md`.

pub mod alertmanager;
pub mod aws;
pub mod cli;
pub mod config;
pub mod consts;
pub mod deploy;
pub mod desired;
pub mod engine;
pub mod error;
pub mod gateway_config;
pub mod grafana;
pub mod model;
pub mod plan;
pub mod progress;
pub mod render;
pub mod specs;
