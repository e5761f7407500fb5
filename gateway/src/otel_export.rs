//! The span export pipeline: finished spans go into a bounded queue (never blocking a
//! request; a full queue drops and counts), and a background task sends them in batches
//! by OTLP (HTTP/protobuf or gRPC). A collector that is down costs dropped spans, counted
//! in `gateway_otel_spans_dropped_total`, and nothing else.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    HttpProtobuf,
    Grpc,
}

#[derive(Debug, Clone)]
pub struct ExportConfig {
    pub endpoint: String,
    pub protocol: Protocol,
    pub headers: HashMap<String, String>,
    pub resource: Vec<(String, String)>,
    pub timeout: Duration,
    pub max_batch: usize,
    pub max_delay: Duration,
    pub max_queue: usize,
}

pub struct Pipeline {
    tx: mpsc::Sender<SpanData>,
}

impl Pipeline {
    /// Starts the exporter task on `rt`.
    pub fn start(cfg: ExportConfig, rt: &tokio::runtime::Handle) -> Pipeline {
        let (tx, rx) = mpsc::channel(cfg.max_queue.max(1));
        rt.spawn(run(cfg, rx));
        Pipeline { tx }
    }

    /// Queues spans; never waits. Spans that do not fit are dropped and counted.
    pub fn send(&self, spans: Vec<SpanData>) {
        let m = crate::metrics::Metrics::global();
        for s in spans {
            if self.tx.try_send(s).is_err() {
                m.otel_dropped(1);
            }
        }
    }
}

fn build_exporter(
    cfg: &ExportConfig,
) -> Result<opentelemetry_otlp::SpanExporter, opentelemetry_otlp::ExporterBuildError> {
    let mut exporter = match cfg.protocol {
        Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(cfg.endpoint.clone())
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_timeout(cfg.timeout)
            .with_headers(cfg.headers.clone())
            .build(),
        Protocol::Grpc => {
            let mut headers = http::HeaderMap::new();
            for (k, v) in &cfg.headers {
                if let (Ok(k), Ok(v)) = (
                    http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()),
                    http::HeaderValue::from_str(v),
                ) {
                    headers.insert(k, v);
                }
            }
            let md = opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers);
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(cfg.endpoint.clone())
                .with_timeout(cfg.timeout)
                .with_metadata(md)
                .build()
        }
    }?;
    let mut attrs = vec![
        KeyValue::new("service.name", "gateway"),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    ];
    for (k, v) in &cfg.resource {
        attrs.retain(|a| a.key.as_str() != k);
        attrs.push(KeyValue::new(k.clone(), v.clone()));
    }
    exporter.set_resource(&Resource::builder_empty().with_attributes(attrs).build());
    Ok(exporter)
}

async fn run(cfg: ExportConfig, mut rx: mpsc::Receiver<SpanData>) {
    let m = crate::metrics::Metrics::global();
    let exporter = match build_exporter(&cfg) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(endpoint = %cfg.endpoint, error = %e, "cannot build the OTLP exporter; spans are dropped");
            while rx.recv().await.is_some() {
                m.otel_dropped(1);
            }
            return;
        }
    };
    let mut batch = Vec::with_capacity(cfg.max_batch);
    let mut last_error_log: Option<std::time::Instant> = None;
    loop {
        let Some(first) = rx.recv().await else { return };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + cfg.max_delay;
        while batch.len() < cfg.max_batch {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => batch.push(s),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        match exporter.export(std::mem::take(&mut batch)).await {
            Ok(()) => m.otel_exported(n),
            Err(e) => {
                m.otel_dropped(n);
                if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                    tracing::warn!(endpoint = %cfg.endpoint, error = %e, dropped = n, "OTLP export failed");
                    last_error_log = Some(std::time::Instant::now());
                }
            }
        }
    }
}
