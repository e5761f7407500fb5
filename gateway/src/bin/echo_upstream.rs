//! `echo-upstream`: a small HTTP/1.1 upstream for the example stack, tests and benchmarks.
//!
//! Every request is answered with a JSON echo of what arrived (method, path, query,
//! headers, body) and an `X-Upstream: <name>` header. Special paths:
//! `/health` (200), `/status/<code>` (that status), `/delay/<ms>` (answers after a pause),
//! `/raw` (the request body back with the request's Content-Type),
//! `/.well-known/jwks.json` (the file given with `--jwks`, if any).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

struct Opts {
    listen: Vec<String>,
    name: Option<String>,
    jwks: Option<String>,
    delay_ms: u64,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        listen: Vec::new(),
        name: None,
        jwks: None,
        delay_ms: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--listen" => o.listen.push(it.next().ok_or("--listen needs ADDR")?),
            "--name" => o.name = Some(it.next().ok_or("--name needs a value")?),
            "--jwks" => o.jwks = Some(it.next().ok_or("--jwks needs a file")?),
            "--delay-ms" => {
                o.delay_ms = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--delay-ms needs a number")?
            }
            "-h" | "--help" => {
                println!(
                    "echo-upstream --listen ADDR [--listen ADDR ...] [--name NAME] [--jwks FILE] [--delay-ms MS]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if o.listen.is_empty() {
        o.listen.push("127.0.0.1:9000".into());
    }
    Ok(o)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("echo-upstream: {e}");
            std::process::exit(2);
        }
    };
    let jwks = opts
        .jwks
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok());
    let jwks = Arc::new(jwks);
    let mut tasks = Vec::new();
    for l in &opts.listen {
        let listener = match TcpListener::bind(l).await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("echo-upstream: cannot listen on {l}: {e}");
                std::process::exit(1);
            }
        };
        let local = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let name: Arc<str> = Arc::from(opts.name.clone().unwrap_or_else(|| local.clone()).as_str());
        println!("echo-upstream listening on {local}");
        let jwks = jwks.clone();
        let delay = opts.delay_ms;
        tasks.push(tokio::spawn(async move {
            loop {
                if let Ok((s, peer)) = listener.accept().await {
                    let name = name.clone();
                    let jwks = jwks.clone();
                    tokio::spawn(async move {
                        let _ = serve(s, peer, name, jwks, delay).await;
                    });
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn serve(
    s: TcpStream,
    peer: SocketAddr,
    name: Arc<str>,
    jwks: Arc<Option<String>>,
    delay_ms: u64,
) -> std::io::Result<()> {
    let _ = s.set_nodelay(true);
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("/").to_string();
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut content_length = 0usize;
        let mut chunked = false;
        let mut close = false;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).await? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_string(), v.trim().to_string());
                let lk = k.to_ascii_lowercase();
                if lk == "content-length" {
                    content_length = v.parse().unwrap_or(0);
                } else if lk == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                } else if lk == "connection" && v.eq_ignore_ascii_case("close") {
                    close = true;
                }
                headers.push((k, v));
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                r.read_line(&mut size).await?;
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                    .unwrap_or(0);
                let mut chunk = vec![0u8; n + 2];
                r.read_exact(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else if content_length > 0 {
            body = vec![0u8; content_length];
            r.read_exact(&mut body).await?;
        }
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (target.clone(), String::new()),
        };
        if delay_ms > 0 && path != "/health" {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        let mut status = 200u16;
        let mut ctype = "application/json".to_string();
        let payload = if path == "/health" {
            "{\"status\":\"ok\"}".to_string()
        } else if path == "/raw" {
            // The request body back, with the request's Content-Type.
            ctype = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| "application/octet-stream".into());
            String::from_utf8_lossy(&body).into_owned()
        } else if path == "/.well-known/jwks.json" && jwks.is_some() {
            jwks.as_ref().clone().unwrap_or_default()
        } else {
            if let Some(code) = path
                .strip_prefix("/status/")
                .and_then(|c| c.parse::<u16>().ok())
            {
                status = code;
            }
            if let Some(ms) = path
                .strip_prefix("/delay/")
                .and_then(|c| c.parse::<u64>().ok())
            {
                tokio::time::sleep(Duration::from_millis(ms.min(120_000))).await;
            }
            if path.starts_with("/text") {
                ctype = "text/plain".into();
            }
            // Repeated headers are joined with ", " (one entry per name).
            let mut hdrs = serde_json::Map::new();
            for (k, v) in &headers {
                let k = k.to_ascii_lowercase();
                let joined = match hdrs.get(&k).and_then(|p| p.as_str()) {
                    Some(prev) => format!("{prev}, {v}"),
                    None => v.clone(),
                };
                hdrs.insert(k, serde_json::Value::String(joined));
            }
            serde_json::json!({
                "upstream": &*name,
                "method": method,
                "path": path,
                "query": query,
                "headers": hdrs,
                "body": String::from_utf8_lossy(&body),
                "client": peer.to_string(),
            })
            .to_string()
        };
        // `X-Echo-Response-Header: Name: value` (repeatable): added to the response, for
        // tests of what the gateway does with an upstream's own headers.
        let extra: String = headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("x-echo-response-header"))
            .filter(|(_, v)| !v.contains('\r') && !v.contains('\n'))
            .map(|(_, v)| format!("{v}\r\n"))
            .collect();
        let head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nX-Upstream: {name}\r\n{extra}{}\r\n",
            reason(status),
            payload.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        w.write_all(head.as_bytes()).await?;
        if method != "HEAD" {
            w.write_all(payload.as_bytes()).await?;
        }
        if close {
            return Ok(());
        }
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
