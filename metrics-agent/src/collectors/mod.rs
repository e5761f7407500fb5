//! Built-in collectors. Each renders Prometheus text exposition, which then goes through the
//! same parse/label/staleness path as a scraped target.

pub mod ecs;
pub mod exposition;
pub mod postgres;
pub mod redis;

/// A built-in collector run as a scrape target.
pub enum Collector {
    Ecs(ecs::EcsCollector),
    Postgres(Box<postgres::PostgresCollector>),
    Redis(Box<redis::RedisCollector>),
}

impl Collector {
    /// Collects once. An `Err` marks the target down (`up` 0); database collectors report
    /// an unreachable server as `pg_up`/`redis_up` 0 instead, like the exporters.
    pub async fn collect(&mut self) -> Result<String, ecs::EcsError> {
        match self {
            Collector::Ecs(c) => c.collect().await,
            Collector::Postgres(c) => Ok(c.collect().await),
            Collector::Redis(c) => Ok(c.collect().await),
        }
    }
}
