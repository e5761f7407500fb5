//! Active health checks: a background task per upstream probes each target on the
//! interval for its current state (`healthy.interval` / `unhealthy.interval`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Balancer, Outcome, TargetState};
use crate::config::model::ActiveHealthcheck;

/// Probes the balancer's targets until the balancer is retired by a reload.
pub async fn run(b: Arc<Balancer>) {
    let a = b.healthchecks.active.clone();
    let hi = a.healthy.interval;
    let ui = a.unhealthy.interval;
    if hi <= 0.0 && ui <= 0.0 {
        return;
    }
    let tick = [hi, ui]
        .into_iter()
        .filter(|v| *v > 0.0)
        .fold(f64::MAX, f64::min)
        .clamp(0.05, 3600.0);
    let mut last: Vec<Option<Instant>> = vec![None; b.targets.len()];
    loop {
        if b.retired.load(Ordering::Relaxed) {
            return;
        }
        let mut probes = Vec::new();
        for (i, t) in b.targets.iter().enumerate() {
            let interval = if t.is_healthy() { hi } else { ui };
            if interval <= 0.0 {
                continue;
            }
            let due = last[i].is_none_or(|at| at.elapsed().as_secs_f64() >= interval);
            if due {
                last[i] = Some(Instant::now());
                let t = t.clone();
                let a = a.clone();
                let host = b.host_header.clone();
                probes.push(tokio::spawn(async move {
                    let outcome = probe(&t, &a, host.as_deref()).await;
                    (t, outcome)
                }));
            }
        }
        for p in probes {
            if let Ok((t, Some(outcome))) = p.await
                && let Some(state) = t.record(outcome, &a.healthy, &a.unhealthy)
            {
                tracing::warn!(upstream = %b.name, target = %t.name, healthy = state, "target health changed (active)");
            }
        }
        tokio::time::sleep(Duration::from_secs_f64(tick)).await;
    }
}

/// One probe. None when the answer counts neither way (a status in neither list).
pub async fn probe(t: &TargetState, a: &ActiveHealthcheck, host: Option<&str>) -> Option<Outcome> {
    let Some(addr) = t.addr() else {
        return Some(Outcome::TcpFailure);
    };
    let timeout = Duration::from_secs_f64(a.timeout.max(0.001));
    let fut = async {
        let s = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(_) => return Some(Outcome::TcpFailure),
        };
        if a.kind == "tcp" {
            return Some(Outcome::Success);
        }
        let host = host.unwrap_or(&*t.name);
        if a.kind == "https" {
            // SNI: `https_sni`, else the probe's host without its port (an address gets
            // none, as Kong sends none for an IP).
            let sni = a
                .https_sni
                .clone()
                .unwrap_or_else(|| match host.rsplit_once(':') {
                    Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h.to_string(),
                    _ => host.to_string(),
                });
            let sni = sni
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let Ok(name) = rustls::pki_types::ServerName::try_from(sni) else {
                return Some(Outcome::TcpFailure);
            };
            let connector = tokio_rustls::TlsConnector::from(crate::net::tls::client_config(
                a.https_verify_certificate,
            ));
            return match connector.connect(name, s).await {
                Ok(tls) => exchange(tls, a, host).await,
                Err(_) => Some(Outcome::TcpFailure),
            };
        }
        exchange(s, a, host).await
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(o) => o,
        Err(_) => Some(Outcome::Timeout),
    }
}

/// The HTTP part of a probe: `GET http_path`, the status classified.
async fn exchange<S>(mut s: S, a: &ActiveHealthcheck, host: &str) -> Option<Outcome>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: gateway-healthcheck\r\nConnection: close\r\n",
        a.http_path
    );
    for (k, v) in &a.headers {
        for v in v.values() {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    req.push_str("\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return Some(Outcome::TcpFailure);
    }
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        match s.read(&mut buf[got..]).await {
            Ok(0) | Err(_) => return Some(Outcome::TcpFailure),
            Ok(n) => got += n,
        }
    }
    let status = std::str::from_utf8(&buf[9..12]).ok()?.parse::<u16>().ok()?;
    if a.healthy.statuses().contains(&status) {
        Some(Outcome::Success)
    } else if a.unhealthy.statuses().contains(&status) {
        Some(Outcome::HttpFailure)
    } else {
        None
    }
}
