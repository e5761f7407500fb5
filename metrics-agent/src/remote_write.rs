//! Remote-write 1.0 sender: one task per shard reads its records from the WAL in order, sends
//! them (snappy + protobuf, reserved headers, optional SigV4), retries 5xx/429/network errors
//! with exponential backoff, drops other 4xx, and only then advances the shard's cursor.
//! 401 and 403 are retried too: refused credentials are an operator's problem to fix, not a
//! property of the data, so the data stays in the WAL until they are fixed (or it ages out).

use crate::clock::now_ms;
use crate::config::RemoteWrite;
use crate::self_metrics::AgentMetrics;
use crate::sigv4::Signer;
use crate::wal::{Batch, WalReader};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub struct Sender {
    pub rw: Arc<RemoteWrite>,
    pub client: reqwest::Client,
    pub metrics: AgentMetrics,
    pub signer: Option<Arc<Signer>>,
}

/// What to do with a response.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Sent,
    Retry(Option<Duration>),
    /// 401/403: the credentials were refused. Retried with backoff, never dropped.
    Unauthorized,
    Reject,
}

/// Classifies an HTTP status per the remote-write 1.0 spec.
pub fn classify(status: u16, retry_on_429: bool, retry_after: Option<Duration>) -> Verdict {
    match status {
        200..=299 => Verdict::Sent,
        429 if retry_on_429 => Verdict::Retry(retry_after),
        401 | 403 => Verdict::Unauthorized,
        500..=599 => Verdict::Retry(None),
        _ => Verdict::Reject,
    }
}

/// Merges several records into one request body without recompressing them (see
/// [`crate::merge`]).
fn body_of(batch: &mut Batch) -> Result<bytes::Bytes, crate::merge::MergeError> {
    if batch.records.len() == 1 {
        return Ok(bytes::Bytes::from(std::mem::take(
            &mut batch.records[0].payload,
        )));
    }
    crate::merge::concat(batch.records.iter().map(|r| r.payload.as_slice())).map(bytes::Bytes::from)
}

impl Sender {
    /// Runs one shard until shutdown.
    pub async fn run_shard(
        self: Arc<Self>,
        mut reader: WalReader,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let name = self.rw.name.clone();
        let max = self.rw.max_samples_per_send as u64;
        loop {
            let mut batch = tokio::select! {
                b = reader.next_batch(max) => b,
                _ = shutdown.changed() => return,
            };
            let body = match body_of(&mut batch) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(remote = %name, "undecodable WAL batch dropped: {e}");
                    reader.count_dropped("corrupt", batch.samples);
                    reader.commit(batch.end);
                    continue;
                }
            };
            let max_ts = batch
                .records
                .iter()
                .map(|r| r.max_ts)
                .max()
                .unwrap_or(i64::MIN);
            let mut backoff = self.rw.min_backoff;
            loop {
                if max_ts < now_ms() - reader.max_age().as_millis() as i64 {
                    reader.count_dropped("too_old", batch.samples);
                    break;
                }
                let verdict = self.send_once(&body).await;
                match verdict {
                    Verdict::Sent => {
                        self.metrics
                            .rw_sent
                            .with_label_values(&[&name])
                            .inc_by(batch.samples);
                        self.metrics
                            .rw_highest_sent_ts
                            .with_label_values(&[&name])
                            .set(max_ts as f64 / 1000.0);
                        break;
                    }
                    Verdict::Reject => {
                        self.metrics
                            .rw_rejected
                            .with_label_values(&[&name])
                            .inc_by(batch.samples);
                        break;
                    }
                    Verdict::Retry(_) | Verdict::Unauthorized => {
                        let after = match verdict {
                            Verdict::Retry(after) => after,
                            _ => {
                                tracing::error!(remote = %name, "remote write refused the credentials: {} samples stay in the WAL and are retried (backoff {backoff:?}); fix the credentials or the permissions", batch.samples);
                                if let Some(c) = &self.signer {
                                    c.invalidate().await;
                                }
                                None
                            }
                        };
                        self.metrics.rw_retries.with_label_values(&[&name]).inc();
                        let wait = after
                            .unwrap_or(backoff)
                            .min(self.rw.max_backoff.max(Duration::from_millis(1)) * 4);
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = shutdown.changed() => return,
                        }
                        backoff = (backoff * 2).min(self.rw.max_backoff);
                    }
                }
            }
            reader.commit(batch.end);
        }
    }

    async fn send_once(&self, body: &bytes::Bytes) -> Verdict {
        let name = &self.rw.name;
        let mut req = self
            .client
            .post(&self.rw.url)
            .timeout(self.rw.timeout)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header(
                "User-Agent",
                concat!("metrics-agent/", env!("CARGO_PKG_VERSION")),
            )
            .header("X-Prometheus-Remote-Write-Version", "0.1.0");
        for (k, v) in &self.rw.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(auth) = &self.rw.http.auth {
            req = match auth.apply(req) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(remote = %name, "credentials: {e}");
                    self.metrics
                        .rw_requests
                        .with_label_values(&[name, "error"])
                        .inc();
                    return Verdict::Retry(None);
                }
            };
        }
        if let Some(signer) = &self.signer {
            match signer.sign_post(&self.rw.url, body).await {
                Ok(headers) => {
                    for (k, v) in headers {
                        req = req.header(k, v);
                    }
                }
                Err(e) => {
                    tracing::warn!(remote = %name, "{e}");
                    self.metrics
                        .rw_requests
                        .with_label_values(&[name, "error"])
                        .inc();
                    return Verdict::Retry(None);
                }
            }
        }
        match req.body(body.clone()).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                self.metrics
                    .rw_requests
                    .with_label_values(&[name, &status.to_string()])
                    .inc();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let verdict = classify(status, self.rw.retry_on_429, retry_after);
                if verdict != Verdict::Sent {
                    let text = resp.text().await.unwrap_or_default();
                    let text: String = text.chars().take(512).collect();
                    tracing::warn!(remote = %name, status, "remote write failed: {}", text.trim());
                }
                verdict
            }
            Err(e) => {
                self.metrics
                    .rw_requests
                    .with_label_values(&[name, "error"])
                    .inc();
                tracing::debug!(remote = %name, "remote write error: {e}");
                Verdict::Retry(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classification_follows_the_spec() {
        assert_eq!(classify(200, true, None), Verdict::Sent);
        assert_eq!(classify(204, true, None), Verdict::Sent);
        assert_eq!(classify(500, true, None), Verdict::Retry(None));
        assert_eq!(classify(503, false, None), Verdict::Retry(None));
        assert_eq!(
            classify(429, true, Some(Duration::from_secs(2))),
            Verdict::Retry(Some(Duration::from_secs(2)))
        );
        assert_eq!(classify(429, false, None), Verdict::Reject);
        assert_eq!(classify(400, true, None), Verdict::Reject);
        assert_eq!(classify(404, true, None), Verdict::Reject);
    }

    /// A receiver that answers the first `refusals` requests with `status` and then 204;
    /// returns the port and the number of requests seen.
    async fn receiver(status: u16, refusals: u64) -> (u16, Arc<std::sync::atomic::AtomicU64>) {
        use std::sync::atomic::{AtomicU64, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        let hits = Arc::new(AtomicU64::new(0));
        let h = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                // Read the head and the body (content-length) of one request.
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    req.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&req).to_ascii_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if req.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let n = h.fetch_add(1, Ordering::SeqCst) + 1;
                let code = if n <= refusals { status } else { 204 };
                let resp =
                    format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        (port, hits)
    }

    #[tokio::test]
    async fn refused_credentials_keep_the_data_and_retry() {
        use crate::self_metrics::AgentMetrics;
        use crate::wal::{RecordIn, Wal, WalOptions};
        use std::sync::atomic::Ordering;
        for status in [401u16, 403] {
            let dir = tempfile::tempdir().expect("tmp");
            let (port, hits) = receiver(status, 3).await;
            let cfg = crate::config::parse(
                &dir.path().join("p.yml"),
                &format!(
                    "remote_write:\n  - url: http://127.0.0.1:{port}/api/v1/write\n    \
                     queue_config: {{min_backoff: 10ms, max_backoff: 20ms, max_shards: 1}}\n"
                ),
            )
            .expect("config");
            let rw = cfg.remote_writes[0].clone();
            let metrics = AgentMetrics::new();
            let opts = WalOptions {
                segment_bytes: 1 << 20,
                max_bytes: 1 << 30,
                max_age: Duration::from_secs(3600),
                shards: 1,
            };
            let (wal, _) = Wal::open(dir.path(), opts, &rw.name, metrics.clone()).expect("wal");
            let mut body = Vec::new();
            let labels = crate::prompb::encode_labels(&crate::labels::Labels::from_pairs([(
                "__name__", "m",
            )]));
            crate::prompb::append_series(&labels, 1.0, now_ms(), &mut body);
            let payload = snap::raw::Encoder::new()
                .compress_vec(&body)
                .expect("snappy");
            let mut w = wal.writer().expect("writer");
            w.append(&[RecordIn {
                shard: 0,
                samples: 1,
                min_ts: now_ms(),
                max_ts: now_ms(),
                payload,
            }])
            .expect("append");
            let sender = Arc::new(Sender {
                client: reqwest::Client::new(),
                metrics: metrics.clone(),
                signer: None,
                rw: Arc::new(rw.clone()),
            });
            let (stop_tx, stop_rx) = watch::channel(false);
            let task = tokio::spawn(sender.run_shard(wal.reader(0), stop_rx));
            let sent = || metrics.rw_sent.with_label_values(&[&rw.name]).get();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while sent() == 0 && std::time::Instant::now() < deadline {
                // Until the store accepts, the sample is still unsent in the WAL.
                assert!(!wal.fully_sent() || sent() > 0);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(sent(), 1, "HTTP {status}: the sample was not delivered");
            assert_eq!(hits.load(Ordering::SeqCst), 4, "HTTP {status}");
            assert_eq!(metrics.rw_rejected.with_label_values(&[&rw.name]).get(), 0);
            assert_eq!(metrics.rw_retries.with_label_values(&[&rw.name]).get(), 3);
            let _ = stop_tx.send(true);
            let _ = task.await;
        }
    }
}
