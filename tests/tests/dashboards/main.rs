//! Dashboards, alert rules and Alertmanager configuration (`dashboards/`): static checks,
//! promtool/amtool, and a live Prometheus scraping a gateway under traffic.
//!
//! Needs `prometheus`, `promtool` and `amtool` (`bash .ci/deps/dashboards.sh`) and the
//! gateway and metrics-agent binaries (`cargo build -p gateway -p metrics-agent --bins`,
//! or `cargo test --workspace`). The metrics-agent path also needs redis-server and
//! PostgreSQL (initdb, postgres, psql; setpriv when running as root).

mod agent;
mod live;
mod structure;
mod support;
mod tools;
