//! Kong's plugin queue (`kong.tools.queue` in Kong 3.9) for the logging plugins: entries
//! are queued in the log phase without waiting, and a background task hands them to the
//! plugin's sender in batches (`max_batch_size`, gathered for up to
//! `max_coalescing_delay`), retrying a failed batch with exponential backoff
//! (`initial_retry_delay` doubled up to `max_retry_delay`) until `max_retry_time` has
//! passed. A full queue (`max_entries`, `max_bytes`) drops its oldest entries, as Kong
//! does; every dropped or lost entry is counted.
//!
//! One queue per plugin instance (Kong shares one queue between instances with the same
//! parameters); a reload builds new instances, and the old queue is drained and its task
//! ends.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;

use super::SpecError;

/// Kong's `queue` record (`kong.tools.queue_schema`), with its defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    #[serde(default = "d_batch")]
    pub max_batch_size: i64,
    #[serde(default = "d_one")]
    pub max_coalescing_delay: f64,
    #[serde(default = "d_entries")]
    pub max_entries: i64,
    #[serde(default)]
    pub max_bytes: Option<i64>,
    #[serde(default = "d_sixty")]
    pub max_retry_time: f64,
    #[serde(default = "d_initial")]
    pub initial_retry_delay: f64,
    #[serde(default = "d_sixty")]
    pub max_retry_delay: f64,
    #[serde(default = "d_batch")]
    pub concurrency_limit: i64,
}

fn d_batch() -> i64 {
    1
}
fn d_one() -> f64 {
    1.0
}
fn d_entries() -> i64 {
    10_000
}
fn d_sixty() -> f64 {
    60.0
}
fn d_initial() -> f64 {
    0.01
}

impl Default for QueueConfig {
    fn default() -> QueueConfig {
        QueueConfig {
            max_batch_size: d_batch(),
            max_coalescing_delay: d_one(),
            max_entries: d_entries(),
            max_bytes: None,
            max_retry_time: d_sixty(),
            initial_retry_delay: d_initial(),
            max_retry_delay: d_sixty(),
            concurrency_limit: d_batch(),
        }
    }
}

fn between<T: PartialOrd + std::fmt::Display>(
    field: &str,
    v: T,
    lo: T,
    hi: T,
) -> Result<(), SpecError> {
    if v < lo || v > hi {
        return Err(SpecError::at(
            format!("queue.{field}"),
            format!("value should be between {lo} and {hi}"),
        ));
    }
    Ok(())
}

impl QueueConfig {
    /// Kong's schema checks.
    pub fn validate(&self) -> Result<(), SpecError> {
        between("max_batch_size", self.max_batch_size, 1, 1_000_000)?;
        between(
            "max_coalescing_delay",
            self.max_coalescing_delay,
            0.0,
            3600.0,
        )?;
        between("max_entries", self.max_entries, 1, 1_000_000)?;
        between("initial_retry_delay", self.initial_retry_delay, 0.001, 1e6)?;
        between("max_retry_delay", self.max_retry_delay, 0.001, 1e6)?;
        if self.concurrency_limit != 1 && self.concurrency_limit != -1 {
            return Err(SpecError::at(
                "queue.concurrency_limit",
                "expected one of: -1, 1",
            ));
        }
        if !self.max_retry_time.is_finite() {
            return Err(SpecError::at("queue.max_retry_time", "expected a number"));
        }
        Ok(())
    }

    /// Applies the deprecated top-level parameters as Kong's `get_plugin_params` does:
    /// `queue_size` (unless 1) is the batch size, `flush_timeout` (unless 2) the
    /// coalescing delay.
    pub fn with_legacy(mut self, queue_size: Option<i64>, flush_timeout: Option<f64>) -> Self {
        if let Some(n) = queue_size
            && n != 1
        {
            self.max_batch_size = n.max(1);
        }
        if let Some(t) = flush_timeout
            && t != 2.0
        {
            self.max_coalescing_delay = t.max(0.0);
        }
        self
    }
}

/// Warnings Kong logs for the deprecated queue parameters of a logging plugin.
pub fn legacy_warnings(
    plugin: &str,
    retry_count: Option<i64>,
    queue_size: Option<i64>,
    flush_timeout: Option<f64>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if retry_count.is_some() {
        out.push((
            "retry_count".to_string(),
            format!("{plugin}: config.retry_count no longer works, please use config.queue.max_retry_time instead"),
        ));
    }
    if queue_size.is_some() {
        out.push((
            "queue_size".to_string(),
            format!("{plugin}: config.queue_size is deprecated, please use config.queue.max_batch_size instead"),
        ));
    }
    if flush_timeout.is_some() {
        out.push((
            "flush_timeout".to_string(),
            format!("{plugin}: config.flush_timeout is deprecated, please use config.queue.max_coalescing_delay instead"),
        ));
    }
    out
}

/// Why a batch was not delivered: each sender's own error type (logged, then retried).
pub type DeliveryError = Box<dyn std::error::Error + Send + Sync>;

/// Sends one batch; an error is retried until `max_retry_time` has passed. Errors must
/// not carry secrets (they are logged).
#[async_trait]
pub trait Deliver<T: Send + Sync + 'static>: Send + Sync + 'static {
    async fn deliver(&self, batch: &[T]) -> Result<(), DeliveryError>;
}

struct State<T> {
    entries: VecDeque<(T, usize)>,
    bytes: usize,
}

struct Inner<T> {
    state: Mutex<State<T>>,
    notify: tokio::sync::Notify,
    closed: AtomicBool,
    dropped: AtomicU64,
    name: &'static str,
}

/// A plugin instance's queue. Dropping it lets the background task send what is queued
/// and end.
pub struct LogQueue<T: Send + Sync + 'static> {
    inner: Arc<Inner<T>>,
    cfg: QueueConfig,
    deliver: Arc<dyn Deliver<T>>,
    /// None in `gateway check`: nothing is queued.
    bg: Option<tokio::runtime::Handle>,
}

impl<T: Send + Sync + 'static> LogQueue<T> {
    pub fn new(
        name: &'static str,
        cfg: QueueConfig,
        deliver: Arc<dyn Deliver<T>>,
        bg: Option<&tokio::runtime::Handle>,
    ) -> LogQueue<T> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                entries: VecDeque::new(),
                bytes: 0,
            }),
            notify: tokio::sync::Notify::new(),
            closed: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            name,
        });
        if let Some(bg) = bg
            && cfg.concurrency_limit == 1
        {
            bg.spawn(run(inner.clone(), cfg.clone(), deliver.clone()));
        }
        LogQueue {
            inner,
            cfg,
            deliver,
            bg: bg.cloned(),
        }
    }

    /// Entries dropped (queue full, too large) or lost (retries exhausted) so far.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Queues an entry of `size` bytes (for `max_bytes`); never waits.
    pub fn push(&self, entry: T, size: usize) {
        let Some(bg) = &self.bg else { return };
        if self.cfg.concurrency_limit == -1 {
            let (inner, cfg, deliver) =
                (self.inner.clone(), self.cfg.clone(), self.deliver.clone());
            bg.spawn(async move { handle(&inner, &cfg, &*deliver, vec![entry]).await });
            return;
        }
        let max_entries = self.cfg.max_entries.max(1) as usize;
        let max_bytes = self.cfg.max_bytes.map(|b| b.max(0) as usize);
        let mut dropped = 0u64;
        {
            let Ok(mut s) = self.inner.state.lock() else {
                return;
            };
            if max_bytes.is_some_and(|m| size > m) {
                dropped += 1;
            } else {
                while s.entries.len() >= max_entries
                    || max_bytes.is_some_and(|m| s.bytes + size > m)
                {
                    let Some((_, n)) = s.entries.pop_front() else {
                        break;
                    };
                    s.bytes -= n;
                    dropped += 1;
                }
                s.bytes += size;
                s.entries.push_back((entry, size));
            }
        }
        if dropped > 0 {
            let before = self.inner.dropped.fetch_add(dropped, Ordering::Relaxed);
            // Warn on the first drops and then at powers of two: never a line per request.
            if (before + dropped).is_power_of_two() || before == 0 {
                tracing::warn!(
                    plugin = self.inner.name,
                    dropped = before + dropped,
                    "log queue full: dropping the oldest entries"
                );
            }
        }
        self.inner.notify.notify_one();
    }
}

impl<T: Send + Sync + 'static> Drop for LogQueue<T> {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.notify.notify_one();
    }
}

/// Kong's minimum coalescing wait: shorter delays send at once.
const COALESCE_MIN: Duration = Duration::from_millis(50);

fn len<T>(inner: &Inner<T>) -> usize {
    inner.state.lock().map(|s| s.entries.len()).unwrap_or(0)
}

async fn run<T: Send + Sync + 'static>(
    inner: Arc<Inner<T>>,
    cfg: QueueConfig,
    deliver: Arc<dyn Deliver<T>>,
) {
    let batch_max = cfg.max_batch_size.max(1) as usize;
    let delay = Duration::from_secs_f64(cfg.max_coalescing_delay.max(0.0));
    loop {
        if len(&inner) == 0 {
            if inner.closed.load(Ordering::Acquire) {
                return;
            }
            inner.notify.notified().await;
            continue;
        }
        if batch_max > 1 && delay >= COALESCE_MIN {
            let deadline = Instant::now() + delay;
            while len(&inner) < batch_max && !inner.closed.load(Ordering::Acquire) {
                let now = Instant::now();
                if now + COALESCE_MIN > deadline {
                    break;
                }
                let wait = (deadline - now).min(Duration::from_secs(1));
                let _ = tokio::time::timeout(wait, inner.notify.notified()).await;
            }
        }
        let batch: Vec<T> = {
            let Ok(mut s) = inner.state.lock() else {
                return;
            };
            let n = s.entries.len().min(batch_max);
            let taken: Vec<(T, usize)> = s.entries.drain(..n).collect();
            s.bytes -= taken.iter().map(|(_, n)| n).sum::<usize>();
            taken.into_iter().map(|(e, _)| e).collect()
        };
        handle(&inner, &cfg, &*deliver, batch).await;
    }
}

/// Sends one batch, retrying as Kong's queue does.
async fn handle<T: Send + Sync + 'static>(
    inner: &Inner<T>,
    cfg: &QueueConfig,
    deliver: &dyn Deliver<T>,
    batch: Vec<T>,
) {
    let start = Instant::now();
    let mut retry = 0i32;
    loop {
        let err = match deliver.deliver(&batch).await {
            Ok(()) => return,
            Err(e) => e,
        };
        tracing::warn!(plugin = inner.name, error = %err, "log handler could not process entries");
        if start.elapsed().as_secs_f64() > cfg.max_retry_time {
            inner
                .dropped
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            tracing::error!(
                plugin = inner.name,
                lost = batch.len(),
                "could not send entries due to max_retry_time exceeded"
            );
            return;
        }
        let wait = (2f64.powi(retry) * cfg.initial_retry_delay).min(cfg.max_retry_delay);
        tokio::time::sleep(Duration::from_secs_f64(wait.max(0.0))).await;
        retry = retry.saturating_add(1).min(60);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Collect(Mutex<Vec<Vec<u32>>>);

    #[async_trait]
    impl Deliver<u32> for Collect {
        async fn deliver(&self, batch: &[u32]) -> Result<(), DeliveryError> {
            if let Ok(mut v) = self.0.lock() {
                v.push(batch.to_vec());
            }
            Ok(())
        }
    }

    #[test]
    fn queue_schema_defaults_and_bounds() {
        let c = QueueConfig::default();
        assert!(c.validate().is_ok());
        let bad = QueueConfig {
            concurrency_limit: 2,
            ..QueueConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = QueueConfig {
            max_batch_size: 0,
            ..QueueConfig::default()
        };
        assert!(bad.validate().is_err());
        let c = QueueConfig::default().with_legacy(Some(5), Some(2.0));
        assert_eq!(c.max_batch_size, 5);
        assert_eq!(c.max_coalescing_delay, 1.0);
    }

    #[test]
    fn full_queue_drops_oldest_and_counts() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("test value");
        let sink = Arc::new(Collect(Mutex::new(Vec::new())));
        let cfg = QueueConfig {
            max_entries: 2,
            max_batch_size: 10,
            max_coalescing_delay: 0.0,
            ..QueueConfig::default()
        };
        // The task is spawned but not run until the runtime is driven: the pushes below
        // all land in the queue first.
        let q = LogQueue::new("test", cfg, sink.clone(), Some(rt.handle()));
        for i in 0..5 {
            q.push(i, 1);
        }
        assert_eq!(q.dropped(), 3);
        rt.block_on(async {
            for _ in 0..100 {
                if !sink.0.lock().expect("test value").is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        assert_eq!(*sink.0.lock().expect("test value"), vec![vec![3, 4]]);
    }
}
