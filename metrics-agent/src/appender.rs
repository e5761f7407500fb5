//! Turns scraped points into durable WAL records: per remote_write endpoint it applies external
//! labels and `write_relabel_configs` (once per series, cached), shards by series hash, encodes
//! `WriteRequest`s, snappy-compresses them and appends them with one fsync per group commit.

use crate::config::RemoteWrite;
use crate::labels::Labels;
use crate::prompb;
use crate::relabel;
use crate::wal::{RecordIn, WalError, WalWriter};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// A series as the pipeline knows it: its shard hash and, per remote endpoint, its encoded
/// labels (`None` when that endpoint's write relabeling drops it).
#[derive(Debug)]
pub struct SeriesRef {
    pub hash: u64,
    pub encoded: Vec<Option<Vec<u8>>>,
}

/// One sample of a series.
#[derive(Debug, Clone)]
pub struct Point {
    pub series: Arc<SeriesRef>,
    pub value: f64,
    pub ts: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("the WAL writer has stopped")]
    Closed,
    /// Shared by every request of the failed batch.
    #[error("WAL append failed: {0}")]
    Wal(#[source] Arc<WalError>),
}

struct Request {
    points: Vec<Point>,
    ack: oneshot::Sender<Result<(), Arc<WalError>>>,
}

struct RemoteSpec {
    external: Labels,
    write_relabel: Vec<relabel::Rule>,
}

/// Cloneable handle used by scrape loops.
#[derive(Clone)]
pub struct Appender {
    remotes: Arc<Vec<RemoteSpec>>,
    tx: mpsc::Sender<Request>,
}

/// Per-endpoint writer settings.
pub struct WriterSpec {
    pub writer: WalWriter,
    pub shards: usize,
    pub max_samples_per_send: usize,
}

impl Appender {
    /// Starts the writer thread. `writers[i]` belongs to `remotes[i]`. Appends arriving within
    /// `commit_window` of each other share one write and one fsync (group commit), which also
    /// makes records large enough to be sent without re-batching.
    pub fn start(
        external: &Labels,
        remotes: &[RemoteWrite],
        writers: Vec<WriterSpec>,
        commit_window: Duration,
    ) -> (Appender, std::thread::JoinHandle<()>) {
        let specs = remotes
            .iter()
            .map(|r| RemoteSpec {
                external: external.clone(),
                write_relabel: r.write_relabel.clone(),
            })
            .collect();
        let (tx, rx) = mpsc::channel(1024);
        let handle = std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || writer_loop(rx, writers, commit_window))
            .unwrap_or_else(|e| panic!("spawning the WAL writer thread: {e}"));
        (
            Appender {
                remotes: Arc::new(specs),
                tx,
            },
            handle,
        )
    }

    /// Prepares a series: labels must be final (sorted, with `__name__`).
    pub fn series(&self, labels: &Labels) -> Arc<SeriesRef> {
        let encoded = self
            .remotes
            .iter()
            .map(|r| {
                let mut l = labels.clone();
                for (k, v) in r.external.iter() {
                    if l.get(k).is_none() {
                        l.set(k.to_string(), v.to_string());
                    }
                }
                relabel::apply(&r.write_relabel, l).map(|l| prompb::encode_labels(&l))
            })
            .collect();
        Arc::new(SeriesRef {
            hash: labels.hash64(),
            encoded,
        })
    }

    /// Appends points and returns once they are durable on disk.
    pub async fn append(&self, points: Vec<Point>) -> Result<(), AppendError> {
        if points.is_empty() {
            return Ok(());
        }
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Request { points, ack })
            .await
            .map_err(|_| AppendError::Closed)?;
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AppendError::Wal(e)),
            Err(_) => Err(AppendError::Closed),
        }
    }
}

/// Waits up to `window` after the first request for more, stopping early once a full
/// request's worth of samples per shard (`full`) is pending.
fn gather(
    rt: &tokio::runtime::Runtime,
    rx: &mut mpsc::Receiver<Request>,
    first: Request,
    window: Duration,
    full: usize,
) -> Vec<Request> {
    let mut n = first.points.len();
    let mut reqs = vec![first];
    let deadline = Instant::now() + window;
    loop {
        while let Ok(r) = rx.try_recv() {
            n += r.points.len();
            reqs.push(r);
        }
        let now = Instant::now();
        if n >= full || now >= deadline {
            return reqs;
        }
        match rt.block_on(async { tokio::time::timeout(deadline - now, rx.recv()).await }) {
            Ok(Some(r)) => {
                n += r.points.len();
                reqs.push(r);
            }
            Ok(None) | Err(_) => return reqs,
        }
    }
}

fn writer_loop(mut rx: mpsc::Receiver<Request>, mut writers: Vec<WriterSpec>, window: Duration) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("WAL writer cannot start its timer runtime: {e}");
            return;
        }
    };
    let full = writers
        .iter()
        .map(|w| w.shards.max(1) * w.max_samples_per_send.max(1))
        .min()
        .unwrap_or(2000);
    let mut encoder = snap::raw::Encoder::new();
    while let Some(first) = rx.blocking_recv() {
        let reqs = gather(&rt, &mut rx, first, window, full);
        let mut result = Ok(());
        for (ri, w) in writers.iter_mut().enumerate() {
            let records = build_records(ri, w, &reqs, &mut encoder);
            if let Err(e) = w.writer.append(&records) {
                tracing::error!("{e}");
                result = Err(Arc::new(e));
            }
        }
        for r in reqs {
            let _ = r.ack.send(result.clone());
        }
    }
}

fn build_records(
    ri: usize,
    w: &WriterSpec,
    reqs: &[Request],
    encoder: &mut snap::raw::Encoder,
) -> Vec<RecordIn> {
    let nshards = w.shards.max(1);
    let mut per_shard: Vec<Vec<&Point>> = vec![Vec::new(); nshards];
    for r in reqs {
        for p in &r.points {
            if p.series.encoded.get(ri).is_some_and(|e| e.is_some()) {
                per_shard[(p.series.hash % nshards as u64) as usize].push(p);
            }
        }
    }
    let mut records = Vec::new();
    let mut body = Vec::new();
    for (shard, points) in per_shard.iter().enumerate() {
        for chunk in points.chunks(w.max_samples_per_send.max(1)) {
            body.clear();
            let mut min_ts = i64::MAX;
            let mut max_ts = i64::MIN;
            for p in chunk {
                if let Some(Some(enc)) = p.series.encoded.get(ri) {
                    prompb::append_series(enc, p.value, p.ts, &mut body);
                }
                min_ts = min_ts.min(p.ts);
                max_ts = max_ts.max(p.ts);
            }
            let payload = match encoder.compress_vec(&body) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!("snappy compression failed: {e}");
                    continue;
                }
            };
            records.push(RecordIn {
                shard: shard as u16,
                samples: chunk.len() as u32,
                min_ts,
                max_ts,
                payload,
            });
        }
    }
    records
}
