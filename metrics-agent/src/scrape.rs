//! Scrape loops: one task per target (HTTP target or built-in collector). Each scrape is parsed,
//! labeled, relabeled, checked for staleness and handed to the appender together with the
//! `up`/`scrape_*` series Prometheus adds.

use crate::appender::{Appender, Point, SeriesRef};
use crate::clock::now_ms;
use crate::collectors::Collector;
use crate::config::{Auth, Limits, ScrapeJob};
use crate::labels::{Labels, stale_nan};
use crate::parser::{self, Format};
use crate::relabel;
use crate::self_metrics::AgentMetrics;
use rustc_hash::FxHashMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The most a scrape body may take in memory (after gzip inflation) when the job sets no
/// `body_size_limit`: a gzip bomb or an endless body fails the scrape instead of exhausting
/// memory.
pub const DEFAULT_MAX_BODY: u64 = 128 << 20;

const ACCEPT: &str =
    "application/openmetrics-text;version=1.0.0;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// Settings shared by all targets of a job.
#[derive(Debug, Clone)]
pub struct JobSettings {
    pub name: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    /// Ask for gzip (`enable_compression`).
    pub enable_compression: bool,
    pub limits: Limits,
    pub metric_relabel: Vec<relabel::Rule>,
    pub auth: Option<Auth>,
    /// Set while the job has more targets than `target_limit`: every scrape then fails.
    pub over_target_limit: Arc<AtomicBool>,
    /// The body size cap (after inflation) used when `limits.body_size` is 0.
    pub max_body: u64,
}

impl JobSettings {
    /// The size a body may reach, compressed or inflated.
    fn body_cap(&self) -> u64 {
        if self.limits.body_size > 0 {
            self.limits.body_size
        } else {
            self.max_body
        }
    }

    /// Settings of a built-in collector: no limits, no relabeling.
    pub fn collector(name: &str, interval: Duration, timeout: Duration) -> Self {
        JobSettings {
            name: name.to_string(),
            interval,
            timeout,
            honor_labels: false,
            honor_timestamps: true,
            enable_compression: true,
            limits: Limits::default(),
            metric_relabel: Vec::new(),
            auth: None,
            over_target_limit: Arc::new(AtomicBool::new(false)),
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

impl From<&ScrapeJob> for JobSettings {
    fn from(j: &ScrapeJob) -> Self {
        JobSettings {
            name: j.name.clone(),
            interval: j.interval,
            timeout: j.timeout,
            honor_labels: j.honor_labels,
            honor_timestamps: j.honor_timestamps,
            enable_compression: j.enable_compression,
            limits: j.limits,
            metric_relabel: j.metric_relabel.clone(),
            auth: j.http.auth.clone(),
            over_target_limit: Arc::new(AtomicBool::new(false)),
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("reading body: {0}")]
    Read(#[source] reqwest::Error),
    #[error("body size limit exceeded ({0} bytes)")]
    Limit(u64),
    #[error("gzip: {0}")]
    Gzip(#[source] Box<BodyError>),
}

/// Why a scrape failed (the text is logged and is the target's last error).
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("target_limit exceeded (job has more than {0} targets)")]
    TargetLimit(usize),
    #[error("GET {url}: {source}")]
    Credentials {
        url: String,
        #[source]
        source: crate::config::SecretError,
    },
    #[error("GET {url}: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url}: server returned HTTP status {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("GET {url}: {source}")]
    Body {
        url: String,
        #[source]
        source: BodyError,
    },
    #[error("collector timed out")]
    CollectorTimeout,
    #[error("{0}")]
    Collector(#[from] crate::collectors::ecs::EcsError),
    #[error("body is not UTF-8")]
    NotUtf8,
    #[error("{0}")]
    Parse(#[from] parser::ParseError),
    #[error("{0}")]
    Series(#[from] parser::SeriesError),
    #[error("label_limit exceeded (metric: {metric}, number of labels: {count}, limit: {limit})")]
    LabelLimit {
        metric: String,
        count: usize,
        limit: usize,
    },
    #[error(
        "label_name_length_limit exceeded (metric: {metric}, label name: {name}, length: {length}, limit: {limit})"
    )]
    LabelNameLength {
        metric: String,
        name: String,
        length: usize,
        limit: usize,
    },
    #[error(
        "label_value_length_limit exceeded (metric: {metric}, label name: {name}, value: {value:.50}, length: {length}, limit: {limit})"
    )]
    LabelValueLength {
        metric: String,
        name: String,
        value: String,
        length: usize,
        limit: usize,
    },
    #[error("sample_limit exceeded ({samples} samples, limit {limit})")]
    SampleLimit { samples: usize, limit: usize },
}

/// Reads at most `limit` bytes from `r`; more is an error.
fn read_limited(r: impl Read, limit: u64, out: &mut Vec<u8>) -> Result<(), BodyError> {
    r.take(limit + 1).read_to_end(out)?;
    if out.len() as u64 > limit {
        return Err(BodyError::Limit(limit));
    }
    Ok(())
}

/// Reads a response body of at most `limit` bytes, stopping as soon as it is over.
async fn read_body(resp: &mut reqwest::Response, limit: u64) -> Result<bytes::Bytes, BodyError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Read)? {
        buf.extend_from_slice(&chunk);
        if buf.len() as u64 > limit {
            return Err(BodyError::Limit(limit));
        }
    }
    Ok(buf.freeze())
}

/// Inflates a gzip body, failing once the output is over `limit` bytes.
fn gunzip(raw: &[u8], limit: u64) -> Result<bytes::Bytes, BodyError> {
    let mut out = Vec::with_capacity((raw.len() * 4).min(limit as usize));
    read_limited(flate2::read::GzDecoder::new(raw), limit, &mut out)
        .map_err(|e| BodyError::Gzip(Box::new(e)))?;
    Ok(bytes::Bytes::from(out))
}

/// Prometheus' label limits on one series after metric relabeling.
fn check_label_limits(l: &Labels, limits: &Limits) -> Result<(), ScrapeError> {
    let name = l.get("__name__").unwrap_or("");
    let short: String = name.chars().take(50).collect();
    if limits.label > 0 && l.len() > limits.label {
        return Err(ScrapeError::LabelLimit {
            metric: short,
            count: l.len(),
            limit: limits.label,
        });
    }
    for (n, v) in l.iter() {
        if limits.label_name_length > 0 && n.len() > limits.label_name_length {
            return Err(ScrapeError::LabelNameLength {
                metric: short,
                name: n.to_string(),
                length: n.len(),
                limit: limits.label_name_length,
            });
        }
        if limits.label_value_length > 0 && v.len() > limits.label_value_length {
            return Err(ScrapeError::LabelValueLength {
                metric: short,
                name: n.to_string(),
                value: v.to_string(),
                length: v.len(),
                limit: limits.label_value_length,
            });
        }
    }
    Ok(())
}

/// Where a target's exposition comes from.
pub enum Source {
    Http {
        url: String,
        client: reqwest::Client,
    },
    Collector(Box<Collector>),
}

pub struct ScrapeTarget {
    pub job: Arc<JobSettings>,
    pub labels: Labels,
    pub source: Source,
}

const SYNTHETIC: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

/// Per-target state kept between scrapes.
pub struct ScrapeLoop {
    target: ScrapeTarget,
    appender: Appender,
    metrics: AgentMetrics,
    /// Raw series text -> processed series (`None`: dropped by metric relabeling).
    cache: FxHashMap<String, CacheEntry>,
    generation: u64,
    /// Series of the previous successful scrape, for staleness markers.
    prev: FxHashMap<u64, Arc<SeriesRef>>,
    synthetic: Vec<Arc<SeriesRef>>,
    /// The last scrape's error, so a failure is logged when it starts or changes.
    last_error: Option<String>,
}

/// A cached series and the number of the scrape that last saw it.
struct CacheEntry {
    series: Option<Arc<SeriesRef>>,
    generation: u64,
}

/// Outcome of fetching a target.
struct Fetched {
    body: bytes::Bytes,
    format: Format,
}

/// Combines exposed labels with target labels the way Prometheus does: with `honor_labels`
/// the exposed value wins; otherwise the target value wins and the exposed one is kept as
/// `exported_<name>`.
pub fn merge_labels(target: &Labels, exposed: Vec<(String, String)>, honor_labels: bool) -> Labels {
    let mut l = Labels::new();
    if honor_labels {
        for (k, v) in target.iter() {
            l.set(k.to_string(), v.to_string());
        }
        for (k, v) in exposed {
            l.set(k, v);
        }
    } else {
        for (k, v) in exposed {
            l.set(k, v);
        }
        for (k, v) in target.iter() {
            if let Some(existing) = l.get(k).map(str::to_string) {
                let mut nk = format!("exported_{k}");
                while l.get(&nk).is_some() {
                    nk = format!("exported_{nk}");
                }
                l.set(nk, existing);
            }
            l.set(k.to_string(), v.to_string());
        }
    }
    l
}

impl ScrapeLoop {
    pub fn new(target: ScrapeTarget, appender: Appender, metrics: AgentMetrics) -> Self {
        let synthetic = SYNTHETIC
            .iter()
            .map(|n| {
                let mut l = target.labels.clone();
                l.set("__name__".into(), (*n).to_string());
                appender.series(&l)
            })
            .collect();
        ScrapeLoop {
            target,
            appender,
            metrics,
            cache: FxHashMap::default(),
            generation: 0,
            prev: FxHashMap::default(),
            synthetic,
            last_error: None,
        }
    }

    /// Runs until `shutdown` flips to true. Scrapes are spread over the interval by a
    /// per-target offset, like Prometheus does.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let (_keep, removed) = watch::channel(false);
        self.run_until(shutdown, removed).await
    }

    /// [`ScrapeLoop::run`] that also ends when `removed` flips to true (the target went away):
    /// then every series of the target, the report series included, gets a stale marker.
    pub async fn run_until(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        mut removed: watch::Receiver<bool>,
    ) {
        let interval = self.target.job.interval;
        let offset_ms = self.target.labels.hash64() % (interval.as_millis().max(1) as u64);
        let start = tokio::time::Instant::now() + Duration::from_millis(offset_ms);
        let mut ticker = tokio::time::interval_at(start, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        return;
                    }
                    continue;
                }
                r = removed.changed() => {
                    if r.is_ok() && *removed.borrow() {
                        self.end_of_run().await;
                    }
                    return;
                }
            }
            if *shutdown.borrow() {
                return;
            }
            let points = self.scrape_once().await;
            if let Err(e) = self.appender.append(points).await {
                tracing::error!(job = %self.target.job.name, "appending scrape: {e}");
            }
        }
    }

    /// Stale markers for every series of a target that is no longer scraped.
    async fn end_of_run(&mut self) {
        if self.generation == 0 {
            return; // never scraped: nothing to mark
        }
        let ts = now_ms();
        let points: Vec<Point> = self
            .prev
            .values()
            .chain(self.synthetic.iter())
            .map(|s| Point {
                series: s.clone(),
                value: stale_nan(),
                ts,
            })
            .collect();
        self.prev.clear();
        if let Err(e) = self.appender.append(points).await {
            tracing::error!(job = %self.target.job.name, "appending stale markers: {e}");
        }
    }

    async fn fetch(&mut self) -> Result<Fetched, ScrapeError> {
        let job = &self.target.job;
        let timeout = job.timeout;
        if job.over_target_limit.load(Ordering::Relaxed) {
            return Err(ScrapeError::TargetLimit(job.limits.target));
        }
        match &mut self.target.source {
            Source::Http { url, client } => {
                let mut req = client
                    .get(url.as_str())
                    .timeout(timeout)
                    .header("Accept", ACCEPT)
                    .header(
                        "Accept-Encoding",
                        if job.enable_compression {
                            "gzip"
                        } else {
                            "identity"
                        },
                    )
                    .header(
                        "User-Agent",
                        concat!("metrics-agent/", env!("CARGO_PKG_VERSION")),
                    )
                    .header(
                        "X-Prometheus-Scrape-Timeout-Seconds",
                        format!("{}", timeout.as_secs_f64()),
                    );
                if let Some(auth) = &job.auth {
                    req = auth.apply(req).map_err(|source| ScrapeError::Credentials {
                        url: url.clone(),
                        source,
                    })?;
                }
                let limit = job.body_cap();
                let mut resp = req.send().await.map_err(|source| ScrapeError::Request {
                    url: url.clone(),
                    source,
                })?;
                let status = resp.status();
                if !status.is_success() {
                    return Err(ScrapeError::Status {
                        url: url.clone(),
                        status,
                    });
                }
                let headers = resp.headers().clone();
                let gz = headers
                    .get("content-encoding")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
                // Compressed, a body can be slightly larger than inflated (stored blocks):
                // the limit is checked exactly on the inflated bytes.
                let raw_limit = if gz {
                    limit.saturating_add(limit / 256 + (64 << 10))
                } else {
                    limit
                };
                let body_err = |source| ScrapeError::Body {
                    url: url.clone(),
                    source,
                };
                let raw = read_body(&mut resp, raw_limit).await.map_err(body_err)?;
                let body = if gz {
                    gunzip(&raw, limit).map_err(body_err)?
                } else {
                    raw
                };
                let format = Format::from_content_type(
                    headers.get("content-type").and_then(|v| v.to_str().ok()),
                );
                Ok(Fetched { body, format })
            }
            Source::Collector(c) => {
                let body = tokio::time::timeout(timeout, c.collect())
                    .await
                    .map_err(|_| ScrapeError::CollectorTimeout)??;
                Ok(Fetched {
                    body: bytes::Bytes::from(body),
                    format: Format::Text,
                })
            }
        }
    }

    /// Processes a scraped series on a cache miss.
    fn build_series(&self, raw: &str) -> Result<Option<Arc<SeriesRef>>, ScrapeError> {
        let (name, pairs) = parser::parse_series(raw)?;
        let job = &self.target.job;
        let mut l = merge_labels(&self.target.labels, pairs, job.honor_labels);
        l.set("__name__".into(), name);
        match relabel::apply(&job.metric_relabel, l) {
            None => Ok(None),
            Some(l) => {
                check_label_limits(&l, &job.limits)?;
                Ok(Some(self.appender.series(&l)))
            }
        }
    }

    /// One scrape: returns the points to append (samples, stale markers, report series).
    pub async fn scrape_once(&mut self) -> Vec<Point> {
        let ts = now_ms();
        let started = Instant::now();
        let job = self.target.job.name.clone();
        self.metrics.scrapes.with_label_values(&[&job]).inc();
        let fetched = self.fetch().await;
        let mut points = Vec::new();
        let mut cur: FxHashMap<u64, Arc<SeriesRef>> = FxHashMap::default();
        cur.reserve(self.prev.len());
        let mut scraped = 0usize;
        let mut added = 0usize;
        self.generation += 1;
        let generation = self.generation;
        let result = fetched.and_then(|f| {
            let body = std::str::from_utf8(&f.body).map_err(|_| ScrapeError::NotUtf8)?;
            let samples = parser::parse(body, f.format)?;
            scraped = samples.len();
            let honor_ts = self.target.job.honor_timestamps;
            let mut seen = 0usize;
            for s in &samples {
                let series = match self.cache.get_mut(s.series) {
                    // The same line twice in one exposition: keep the first, like Prometheus.
                    Some(e) if e.generation == generation => continue,
                    Some(e) => {
                        e.generation = generation;
                        e.series.clone()
                    }
                    None => {
                        let series = self.build_series(s.series)?;
                        self.cache.insert(
                            s.series.to_string(),
                            CacheEntry {
                                series: series.clone(),
                                generation,
                            },
                        );
                        series
                    }
                };
                seen += 1;
                let Some(series) = series else { continue };
                if cur.contains_key(&series.hash) {
                    continue; // two raw lines that relabel to the same series
                }
                if !self.prev.contains_key(&series.hash) {
                    added += 1;
                }
                let t = match (honor_ts, s.timestamp_ms) {
                    (true, Some(t)) => t,
                    _ => ts,
                };
                cur.insert(series.hash, series.clone());
                points.push(Point {
                    series,
                    value: s.value,
                    ts: t,
                });
            }
            if self.cache.len() > seen {
                self.cache.retain(|_, e| e.generation == generation);
            }
            let limit = self.target.job.limits.sample;
            if limit > 0 && points.len() > limit {
                return Err(ScrapeError::SampleLimit {
                    samples: points.len(),
                    limit,
                });
            }
            Ok(())
        });
        let duration = started.elapsed().as_secs_f64();
        let up = match &result {
            Ok(()) => {
                if self.last_error.take().is_some() {
                    tracing::info!(job = %job, target = %self.target.labels, "scrape succeeded again");
                }
                1.0
            }
            Err(e) => {
                let e = e.to_string();
                if self.last_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(job = %job, target = %self.target.labels, "scrape failed: {e}");
                    self.last_error = Some(e);
                }
                self.metrics
                    .scrape_failures
                    .with_label_values(&[&job])
                    .inc();
                points.clear();
                cur.clear();
                0.0
            }
        };
        let post_relabel = points.len();
        // Every current series is either new (`added`) or was in `prev`; when nothing was added
        // and the counts match, no previous series is missing and the scan can be skipped.
        let unchanged = result.is_ok() && added == 0 && cur.len() == self.prev.len();
        if !unchanged {
            for (h, s) in &self.prev {
                if !cur.contains_key(h) {
                    points.push(Point {
                        series: s.clone(),
                        value: stale_nan(),
                        ts,
                    });
                }
            }
        }
        self.prev = cur;
        let report = [
            up,
            duration,
            scraped as f64,
            post_relabel as f64,
            added as f64,
        ];
        for (s, v) in self.synthetic.iter().zip(report) {
            points.push(Point {
                series: s.clone(),
                value: v,
                ts,
            });
        }
        points
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_conflicts_follow_honor_labels() {
        let target = Labels::from_pairs([("job", "gw"), ("instance", "a:1")]);
        let exposed = vec![
            ("job".to_string(), "inner".to_string()),
            ("code".to_string(), "200".to_string()),
        ];
        let l = merge_labels(&target, exposed.clone(), false);
        assert_eq!(l.get("job"), Some("gw"));
        assert_eq!(l.get("exported_job"), Some("inner"));
        assert_eq!(l.get("code"), Some("200"));
        let l = merge_labels(&target, exposed, true);
        assert_eq!(l.get("job"), Some("inner"));
        assert_eq!(l.get("exported_job"), None);
        assert_eq!(l.get("instance"), Some("a:1"));
    }

    /// The series caches' hasher (moved with the hand-written one it replaced).
    #[test]
    fn distinguishes_similar_keys() {
        use std::hash::BuildHasher;
        let b = rustc_hash::FxBuildHasher;
        let h = |s: &str| b.hash_one(s);
        assert_ne!(h("a"), h("b"));
        assert_ne!(h("metric{a=\"1\"}"), h("metric{a=\"2\"}"));
        assert_ne!(h("abcdefgh"), h("abcdefgh\0"));
        let mut m: FxHashMap<String, u32> = FxHashMap::default();
        m.insert("x".into(), 1);
        assert_eq!(m.get("x"), Some(&1));
    }

    /// Serves `body` (gzip-encoded when `gzip`) to every request; returns the URL.
    fn serve(body: Vec<u8>, gzip: bool) -> String {
        use std::io::Write;
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/metrics", l.local_addr().expect("addr"));
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let enc = if gzip {
                    "content-encoding: gzip\r\n"
                } else {
                    ""
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n{enc}content-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&body);
            }
        });
        url
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    }

    /// Scrapes `url` once with a 1 MiB cap and no `body_size_limit`; returns `up` and the
    /// logged reason.
    async fn scrape_capped(url: String) -> (f64, Option<String>) {
        let mut job =
            JobSettings::collector("bomb", Duration::from_secs(1), Duration::from_secs(5));
        job.max_body = 1 << 20;
        let (appender, _writer) = Appender::start(&Labels::new(), &[], Vec::new(), Duration::ZERO);
        let target = ScrapeTarget {
            job: Arc::new(job),
            labels: Labels::from_pairs([("job", "bomb"), ("instance", "x")]),
            source: Source::Http {
                url,
                client: reqwest::Client::new(),
            },
        };
        let mut lp = ScrapeLoop::new(target, appender, AgentMetrics::new());
        let points = lp.scrape_once().await;
        // The report series come last, `up` first among them.
        let up = points[points.len() - SYNTHETIC.len()].value;
        (up, lp.last_error.clone())
    }

    #[tokio::test]
    async fn gzip_bomb_fails_the_scrape_within_the_cap() {
        // 64 MiB of zeros compress to ~64 KiB: inflated without a cap it would all be held.
        let bomb = gzip(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 1 << 20);
        let (up, err) = scrape_capped(serve(bomb, true)).await;
        assert_eq!(up, 0.0);
        let err = err.expect("reason logged");
        assert!(
            err.contains("gzip: body size limit exceeded (1048576 bytes)"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn uncompressed_bodies_are_capped_too() {
        let (up, err) = scrape_capped(serve(vec![b'#'; 2 << 20], false)).await;
        assert_eq!(up, 0.0);
        assert!(err.expect("reason").contains("body size limit exceeded"));
    }

    #[tokio::test]
    async fn bodies_within_the_cap_scrape_normally() {
        let text = b"m_total 1\nn 2\n".repeat(1000);
        let (up, err) = scrape_capped(serve(gzip(&text), true)).await;
        assert_eq!((up, err), (1.0, None));
    }
}
