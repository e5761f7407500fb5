//! A counting remote-write receiver for `metrics-agent/bench/bench.py`.
//!
//! A Prometheus receiver on the same two cores cannot store a million samples a second,
//! so at that load it measures itself, not the agent it receives from. This sink does the
//! least a receiver must: read the body, snappy-decompress it, walk the protobuf and count
//! samples, without allocating per series. It answers 204 like Prometheus does.
//!
//! Counted: samples of the metric named by `--metric` (default `bench_metric`), grouped by
//! the value of the `agent` label and by the second of their timestamp, so that the bench
//! can ask how many samples of one agent with timestamps inside a window arrived.
//!
//! ```text
//! cargo build --release -p metrics-agent --example rw_sink
//! rw_sink --listen 127.0.0.1:9099 [--metric bench_metric]
//! GET /count?agent=NAME&from=UNIX_S&to=UNIX_S  -> {"samples": N, "all": M}
//! POST /api/v1/write                           -> 204
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Samples per (agent label value, timestamp second), and all samples of any metric.
#[derive(Default)]
struct Counts {
    by_agent: HashMap<Vec<u8>, HashMap<i64, u64>>,
    all: u64,
}

/// Reads a protobuf varint at `*pos`; `None` on a truncated or over-long one.
fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// One field: (field number, wire type, payload of a length-delimited field).
fn field<'a>(buf: &'a [u8], pos: &mut usize) -> Option<(u64, u8, &'a [u8])> {
    let key = varint(buf, pos)?;
    let (num, wire) = (key >> 3, (key & 7) as u8);
    let start = *pos;
    match wire {
        0 => {
            varint(buf, pos)?;
        }
        1 => *pos += 8,
        2 => {
            let len = usize::try_from(varint(buf, pos)?).ok()?;
            let s = *pos;
            *pos = s.checked_add(len)?;
            return buf.get(s..*pos).map(|p| (num, wire, p));
        }
        5 => *pos += 4,
        _ => return None,
    }
    buf.get(start..*pos).map(|p| (num, wire, p))
}

/// (name, value) of a `Label` message.
fn label(msg: &[u8]) -> Option<(&[u8], &[u8])> {
    let (mut pos, mut name, mut value) = (0, &[][..], &[][..]);
    while pos < msg.len() {
        match field(msg, &mut pos)? {
            (1, 2, p) => name = p,
            (2, 2, p) => value = p,
            _ => {}
        }
    }
    Some((name, value))
}

/// Timestamp (ms) of a `Sample` message.
fn sample_ts(msg: &[u8]) -> Option<i64> {
    let (mut pos, mut ts) = (0, 0i64);
    while pos < msg.len() {
        if let (2, 0, v) = field(msg, &mut pos)? {
            ts = varint(v, &mut 0)? as i64;
        }
    }
    Some(ts)
}

/// Counts the samples of one decompressed `WriteRequest` into `counts`.
fn count(req: &[u8], metric: &[u8], counts: &mut Counts) -> Option<()> {
    let mut pos = 0;
    // Batches carry few distinct (agent, second) pairs: add locally, merge once.
    let mut local: Vec<(&[u8], i64, u64)> = Vec::new();
    while pos < req.len() {
        let (num, wire, ts_msg) = field(req, &mut pos)?;
        if num != 1 || wire != 2 {
            continue;
        }
        let (mut p, mut is_metric, mut agent) = (0, false, None);
        let mut stamps: Vec<i64> = Vec::new();
        while p < ts_msg.len() {
            match field(ts_msg, &mut p)? {
                (1, 2, l) => {
                    let (n, v) = label(l)?;
                    if n == b"__name__" {
                        is_metric = v == metric;
                    } else if n == b"agent" {
                        agent = Some(v);
                    }
                }
                (2, 2, s) => stamps.push(sample_ts(s)?),
                _ => {}
            }
        }
        counts.all += stamps.len() as u64;
        if let (true, Some(agent)) = (is_metric, agent) {
            for ms in stamps {
                let sec = ms.div_euclid(1000);
                match local.iter_mut().find(|(a, s, _)| *a == agent && *s == sec) {
                    Some(e) => e.2 += 1,
                    None => local.push((agent, sec, 1)),
                }
            }
        }
    }
    for (agent, sec, n) in local {
        *counts
            .by_agent
            .entry(agent.to_vec())
            .or_default()
            .entry(sec)
            .or_default() += n;
    }
    Some(())
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

async fn handle(
    req: Request<Incoming>,
    metric: Arc<Vec<u8>>,
    counts: Arc<Mutex<Counts>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/api/v1/write") => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return Ok(reply(StatusCode::BAD_REQUEST, format!("{e}\n"))),
            };
            let raw = match snap::raw::Decoder::new().decompress_vec(&body) {
                Ok(r) => r,
                Err(e) => return Ok(reply(StatusCode::BAD_REQUEST, format!("snappy: {e}\n"))),
            };
            let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
            match count(&raw, &metric, &mut c) {
                Some(()) => Ok(reply(StatusCode::NO_CONTENT, String::new())),
                None => Ok(reply(
                    StatusCode::BAD_REQUEST,
                    "malformed WriteRequest\n".into(),
                )),
            }
        }
        (&Method::GET, "/count") => {
            let q = req.uri().query().unwrap_or("");
            let agent = query_param(q, "agent").unwrap_or("").as_bytes();
            let from = query_param(q, "from")
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(i64::MIN);
            let to = query_param(q, "to")
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(i64::MAX);
            let c = counts.lock().unwrap_or_else(|p| p.into_inner());
            let n: u64 = c.by_agent.get(agent).map_or(0, |m| {
                m.iter()
                    .filter(|(s, _)| (from..=to).contains(*s))
                    .map(|(_, n)| n)
                    .sum()
            });
            Ok(reply(
                StatusCode::OK,
                format!("{{\"samples\": {n}, \"all\": {}}}\n", c.all),
            ))
        }
        (&Method::GET, "/-/ready") => Ok(reply(StatusCode::OK, "ready\n".into())),
        _ => Ok(reply(StatusCode::NOT_FOUND, String::new())),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen: SocketAddr = "127.0.0.1:9099".parse()?;
    let mut metric = b"bench_metric".to_vec();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?.parse()?,
            "--metric" => metric = args.next().ok_or("--metric needs a name")?.into_bytes(),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let listener = TcpListener::bind(listen).await?;
    let metric = Arc::new(metric);
    let counts = Arc::new(Mutex::new(Counts::default()));
    loop {
        let (stream, _) = listener.accept().await?;
        let (metric, counts) = (metric.clone(), counts.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, metric.clone(), counts.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    // The remote-write 1.0 messages, described for prost to encode the test's requests.
    #[derive(Clone, PartialEq, prost::Message)]
    struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        timeseries: Vec<TimeSeries>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        samples: Vec<Sample>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Label {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(string, tag = "2")]
        value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Sample {
        #[prost(double, tag = "1")]
        value: f64,
        #[prost(int64, tag = "2")]
        timestamp: i64,
    }

    fn series(name: &str, agent: &str, stamps: &[i64]) -> TimeSeries {
        TimeSeries {
            labels: vec![
                Label {
                    name: "__name__".into(),
                    value: name.into(),
                },
                Label {
                    name: "agent".into(),
                    value: agent.into(),
                },
            ],
            samples: stamps
                .iter()
                .map(|&t| Sample {
                    value: 1.5,
                    timestamp: t,
                })
                .collect(),
        }
    }

    #[test]
    fn counts_samples_by_agent_and_second() {
        let req = WriteRequest {
            timeseries: vec![
                series("bench_metric", "a", &[1_000, 1_999, 2_000]),
                series("bench_metric", "b", &[1_000]),
                series("up", "a", &[1_000]),
            ],
        };
        let mut c = Counts::default();
        count(&req.encode_to_vec(), b"bench_metric", &mut c).expect("well-formed");
        assert_eq!(c.all, 5);
        assert_eq!(c.by_agent[&b"a".to_vec()][&1], 2);
        assert_eq!(c.by_agent[&b"a".to_vec()][&2], 1);
        assert_eq!(c.by_agent[&b"b".to_vec()][&1], 1);
        assert!(
            count(&[0x0a, 0x05, 0x01], b"bench_metric", &mut c).is_none(),
            "truncated body"
        );
    }
}
