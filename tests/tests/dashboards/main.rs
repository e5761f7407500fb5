//! Dashboards, alert rules and Alertmanager configuration (`dashboards/`): static checks,
//! promtool/amtool, and a live Prometheus scraping a gateway under traffic.
//!
//! Needs `prometheus`, `promtool` and `amtool` (`bash .ci/deps/dashboards.sh`) and the
//! gateway binaries (`cargo build -p gateway --bins`, or `cargo test --workspace`).

mod live;
mod structure;
mod support;
mod tools;
