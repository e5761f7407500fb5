//! Tracing: W3C context into the upstream, spans exported by OTLP/HTTP to a receiver on
//! loopback, and a collector outage that costs only dropped (counted) spans.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An OTLP/HTTP receiver: decodes every ExportTraceServiceRequest it is sent.
async fn receiver() -> (u16, Arc<Mutex<Vec<Span>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let spans = Arc::new(Mutex::new(Vec::new()));
    let out = spans.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let out = out.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 65536];
                loop {
                    // Read one request: headers, then Content-Length bytes.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body: Vec<u8> = buf.drain(..head_end + len).skip(head_end).collect();
                    if let Ok(req) = ExportTraceServiceRequest::decode(body.as_slice())
                        && let Ok(mut o) = out.lock()
                    {
                        for rs in req.resource_spans {
                            for ss in rs.scope_spans {
                                for sp in ss.spans {
                                    o.push(Span {
                                        name: sp.name,
                                        trace_id: hex(&sp.trace_id),
                                        span_id: hex(&sp.span_id),
                                        parent: hex(&sp.parent_span_id),
                                    });
                                }
                            }
                        }
                    }
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n")
                        .await;
                }
            });
        }
    });
    (port, spans)
}

fn config(up: u16, otlp_port: u16) -> String {
    format!(
        "_format_version: \"3.0\"\nservices:\n- name: api\n  url: http://127.0.0.1:{up}\n  routes:\n  - name: api\n    paths: [/api]\nplugins:\n- name: correlation-id\n- name: opentelemetry\n  config:\n    traces_endpoint: http://127.0.0.1:{otlp_port}/v1/traces\n    sampling_rate: 1.0\n    http_response_header_for_traceid: x-trace-id\n    queue: {{max_coalescing_delay: 0.1, max_batch_size: 50}}\n    resource_attributes: {{service.name: edge-gateway}}\n"
    )
}

#[tokio::test]
async fn traces_propagate_and_export() {
    let up = free_port();
    let _u = upstream(up);
    let (otlp, spans) = receiver().await;
    let gw = gateway(&config(up, otlp));
    let c = client();
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = c
        .get(gw.url("/api/x"))
        .header(
            "traceparent",
            format!("00-{client_trace}-00f067aa0ba902b7-01"),
        )
        .header("tracestate", "vendor=1")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["x-trace-id"], client_trace);
    let v: serde_json::Value = r.json().await.expect("json");
    let tp = v["headers"]["traceparent"]
        .as_str()
        .expect("traceparent upstream")
        .to_string();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts[1], client_trace, "the client's trace continues");
    assert_ne!(
        parts[2], "00f067aa0ba902b7",
        "the upstream's parent is the gateway's span"
    );
    assert_eq!(parts[3], "01");
    assert_eq!(v["headers"]["tracestate"], "vendor=1");

    // No incoming context: a trace starts here.
    let r = c.get(gw.url("/api/y")).send().await.expect("send");
    let v: serde_json::Value = r.json().await.expect("json");
    assert!(
        v["headers"]["traceparent"]
            .as_str()
            .is_some_and(|t| t.starts_with("00-") && t.ends_with("-01"))
    );

    // A client's unsampled trace stays unsampled: passed on unchanged, never exported.
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let r = c
        .get(gw.url("/api/z"))
        .header("traceparent", format!("00-{unsampled}-b7ad6b7169203331-00"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.headers()["x-trace-id"], unsampled);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(
        v["headers"]["traceparent"],
        format!("00-{unsampled}-b7ad6b7169203331-00")
    );

    let got = eventually(Duration::from_secs(10), || {
        let spans = spans.clone();
        let t = client_trace.to_string();
        async move {
            spans
                .lock()
                .map(|s| s.iter().filter(|x| x.trace_id == t).count() >= 4)
                .unwrap_or(false)
        }
    })
    .await;
    assert!(
        got,
        "spans never reached the receiver: {:?}",
        spans.lock().map(|s| s.clone())
    );
    let all: Vec<Span> = spans
        .lock()
        .map(|s| {
            s.iter()
                .filter(|x| x.trace_id == client_trace)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let find = |n: &str| {
        all.iter()
            .find(|s| s.name == n)
            .cloned()
            .unwrap_or_else(|| panic!("no span {n}: {all:?}"))
    };
    assert!(
        spans
            .lock()
            .map(|s| s.iter().all(|x| x.trace_id != unsampled))
            .unwrap_or(false),
        "an unsampled trace was exported"
    );
    let root = find("kong");
    assert_eq!(root.parent, "00f067aa0ba902b7");
    for n in [
        "kong.router",
        "kong.balancer",
        "kong.access.plugin.correlation-id",
    ] {
        assert_eq!(find(n).parent, root.span_id, "{n}");
    }
    let upstream_span = find("kong.upstream");
    assert_eq!(upstream_span.parent, root.span_id);
    assert_eq!(
        upstream_span.span_id, parts[2],
        "the upstream's parent id is the exported upstream span"
    );
}

#[tokio::test]
async fn collector_down_costs_only_dropped_spans() {
    let up = free_port();
    let _u = upstream(up);
    let dead = free_port();
    let gw = gateway(&config(up, dead));
    let c = client();
    for _ in 0..20 {
        assert_eq!(
            c.get(gw.url("/api/x"))
                .send()
                .await
                .expect("send")
                .status()
                .as_u16(),
            200
        );
    }
    let ok = eventually(Duration::from_secs(10), || {
        let c = c.clone();
        let url = gw.status_url("/metrics");
        async move {
            let t = c
                .get(&url)
                .send()
                .await
                .ok()
                .map(|r| async { r.text().await.unwrap_or_default() });
            match t {
                Some(f) => f.await.lines().any(|l| {
                    l.starts_with("gateway_otel_spans_total{result=\"dropped\"}")
                        && l.rsplit(' ')
                            .next()
                            .and_then(|v| v.parse::<f64>().ok())
                            .unwrap_or(0.0)
                            >= 20.0
                }),
                None => false,
            }
        }
    })
    .await;
    assert!(ok, "dropped spans were not counted");
}

#[tokio::test]
async fn b3_jaeger_and_ot_contexts_are_extracted_and_injected_as_configured() {
    let up = free_port();
    let _u = upstream(up);
    let (otlp, _spans) = receiver().await;
    let cfg = format!(
        "_format_version: \"3.0\"
services:
- name: api
  url: http://127.0.0.1:{up}
  routes:
  - name: explicit
    paths: [/explicit]
    plugins:
    - name: opentelemetry
      config:
        traces_endpoint: http://127.0.0.1:{otlp}/v1/traces
        sampling_rate: 1.0
        propagation:
          extract: [b3, jaeger, w3c]
          inject: [b3-single]
          default_format: b3
          clear: [x-b3-sampled]
  - name: legacy
    paths: [/legacy]
    plugins:
    - name: opentelemetry
      config:
        traces_endpoint: http://127.0.0.1:{otlp}/v1/traces
        sampling_rate: 1.0
        header_type: preserve
"
    );
    let gw = gateway(&cfg);
    let c = client();
    let t = "4bf92f3577b34da6a3ce929d0e0e4736";
    let s = "00f067aa0ba902b7";
    let send = |path: &'static str, headers: Vec<(&'static str, String)>| {
        let c = c.clone();
        let url = gw.url(path);
        async move {
            let mut rb = c.get(url);
            for (k, v) in headers {
                rb = rb.header(k, v);
            }
            let r = rb.send().await.expect("send");
            assert_eq!(r.status().as_u16(), 200);
            let v: serde_json::Value = r.json().await.expect("json");
            v["headers"].clone()
        }
    };
    // Jaeger in, b3-single out (same trace, sampled as the sender said); the cleared
    // header is gone.
    let h = send(
        "/explicit/x",
        vec![
            ("uber-trace-id", format!("{t}:{s}:0:1")),
            ("x-b3-sampled", "1".into()),
        ],
    )
    .await;
    let b3 = h["b3"].as_str().unwrap_or_default().to_string();
    assert!(
        b3.starts_with(&format!("{t}-")) && b3.ends_with("-1"),
        "{h}"
    );
    assert!(h.get("x-b3-sampled").is_none(), "{h}");
    assert!(h.get("traceparent").is_none(), "{h}");
    // Nothing in: a new trace, in the configured format.
    let h = send("/explicit/x", vec![]).await;
    assert!(
        h["b3"].as_str().is_some_and(|v| v.len() == 32 + 1 + 16 + 2),
        "{h}"
    );
    // Legacy `header_type: preserve`: B3 in, B3 out with the same trace id.
    let h = send(
        "/legacy/x",
        vec![
            ("x-b3-traceid", t.into()),
            ("x-b3-spanid", s.into()),
            ("x-b3-sampled", "1".into()),
        ],
    )
    .await;
    assert_eq!(h["x-b3-traceid"], t, "{h}");
    assert_eq!(h["x-b3-sampled"], "1", "{h}");
    assert_ne!(
        h["x-b3-spanid"], s,
        "the upstream's parent is the gateway's span: {h}"
    );
    assert!(h.get("traceparent").is_none(), "{h}");
    // ... and W3C stays W3C.
    let h = send("/legacy/x", vec![("traceparent", format!("00-{t}-{s}-01"))]).await;
    assert!(
        h["traceparent"].as_str().is_some_and(|v| v.contains(t)),
        "{h}"
    );
}
