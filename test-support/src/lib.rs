//! Test helpers shared by every crate of the workspace (a dev-dependency only, never
//! published): free loopback ports, child processes killed on drop, and the real servers
//! the tests run against, each started on a free `127.0.0.1` port:
//!
//! - [`ports`]: [`free_port`], [`free_cluster_port`], [`wait_port`], [`wait_until`]
//! - [`process`]: [`Proc`] (killed on drop), [`find_on_path`]
//! - [`http`]: a minimal blocking HTTP/1.1 GET and query encoding
//! - [`redis`]: `redis-server` (single, with extra arguments, or a cluster), `redis-cli`
//! - [`postgres`]: a scratch PostgreSQL cluster (`initdb` + `postgres`)
//! - [`prometheus`]: Prometheus as a remote-write receiver, with queries
//! - [`moto`]: a moto server (AWS APIs)
//! - [`tls`]: a test CA and certificates it signs
//!
//! A missing binary panics with the script that installs it (`.ci/deps/*.sh`).

pub mod http;
pub mod moto;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod prometheus;
pub mod redis;
pub mod tls;

pub use ports::{free_cluster_port, free_port, wait_port, wait_until};
pub use process::{Proc, find_on_path};
