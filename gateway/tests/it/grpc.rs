//! gRPC services and routes: a real tonic server upstream and a real tonic client, the
//! gateway between them over HTTP/2 (prior knowledge in clear text).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::PathAndQuery;
use tonic::codegen::tokio_stream::{self, Stream};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

use crate::harness::*;

#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(uint32, tag = "2")]
    n: u32,
}

/// What the upstream saw of each request: its authority and headers.
type Seen = Arc<Mutex<Vec<(String, http::HeaderMap)>>>;

struct Say;

impl tonic::server::UnaryService<Msg> for Say {
    type Response = Msg;
    type Future =
        Pin<Box<dyn Future<Output = Result<tonic::Response<Msg>, Status>> + Send + 'static>>;

    fn call(&mut self, req: tonic::Request<Msg>) -> Self::Future {
        Box::pin(async move {
            let m = req.into_inner();
            if m.text == "missing" {
                return Err(Status::not_found("no such greeting"));
            }
            Ok(tonic::Response::new(Msg {
                text: format!("hello {}", m.text),
                n: m.n,
            }))
        })
    }
}

struct Count;

type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send + 'static>>;

impl tonic::server::ServerStreamingService<Msg> for Count {
    type Response = Msg;
    type ResponseStream = MsgStream;
    type Future =
        Pin<Box<dyn Future<Output = Result<tonic::Response<MsgStream>, Status>> + Send + 'static>>;

    fn call(&mut self, req: tonic::Request<Msg>) -> Self::Future {
        Box::pin(async move {
            let n = req.into_inner().n;
            let items: Vec<Result<Msg, Status>> = (1..=n)
                .map(|i| {
                    Ok(Msg {
                        text: format!("item {i}"),
                        n: i,
                    })
                })
                .collect();
            let s: MsgStream = Box::pin(tokio_stream::iter(items));
            Ok(tonic::Response::new(s))
        })
    }
}

/// The upstream gRPC service `test.Echo` (`Say`, unary; `Count`, server streaming).
#[derive(Clone)]
struct Echo {
    seen: Seen,
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for Echo {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let authority = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        self.seen
            .lock()
            .expect("seen")
            .push((authority, req.headers().clone()));
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Msg, Msg>::default());
            Ok(match req.uri().path() {
                "/test.Echo/Say" => grpc.unary(Say, req).await,
                "/test.Echo/Count" => grpc.server_streaming(Count, req).await,
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

/// Starts the upstream on a free port in this test's runtime.
async fn grpc_upstream() -> (u16, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let port = listener.local_addr().expect("addr").port();
    let seen: Seen = Arc::default();
    let svc = Echo { seen: seen.clone() };
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .serve_with_incoming(svc, incoming)
            .await;
    });
    (port, seen)
}

async fn client(port: u16) -> tonic::client::Grpc<tonic::transport::Channel> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("endpoint")
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect to the gateway");
    tonic::client::Grpc::new(ch)
}

/// Calls `path` with an empty message; the call must fail: its status.
async fn call_fails(
    c: &mut tonic::client::Grpc<tonic::transport::Channel>,
    path: &'static str,
    why: &str,
) -> Status {
    c.ready().await.expect("ready");
    c.unary(
        tonic::Request::new(Msg::default()),
        PathAndQuery::from_static(path),
        ProstCodec::<Msg, Msg>::default(),
    )
    .await
    .expect_err(why)
}

async fn say(
    c: &mut tonic::client::Grpc<tonic::transport::Channel>,
    text: &str,
    key: Option<&str>,
) -> Result<Msg, Status> {
    c.ready()
        .await
        .map_err(|e| Status::unknown(e.to_string()))?;
    let mut req = tonic::Request::new(Msg {
        text: text.into(),
        n: 7,
    });
    if let Some(k) = key {
        req.metadata_mut()
            .insert("apikey", k.parse().expect("metadata"));
    }
    c.unary(
        req,
        PathAndQuery::from_static("/test.Echo/Say"),
        ProstCodec::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

fn config(up: u16, extra_routes: &str) -> String {
    format!(
        "_format_version: \"3.0\"
services:
- name: echo
  protocol: grpc
  host: 127.0.0.1
  port: {up}
  routes:
  - name: echo
    protocols: [grpc]
    paths: [/test.Echo/]
{extra_routes}"
    )
}

#[tokio::test]
async fn unary_and_streaming_calls_are_proxied_over_http2() {
    let (up, seen) = grpc_upstream().await;
    let gw = gateway(&config(up, ""));
    let mut c = client(gw.port).await;

    let r = say(&mut c, "world", None).await.expect("unary call");
    assert_eq!(r.text, "hello world");
    assert_eq!(r.n, 7);
    {
        let seen = seen.lock().expect("seen");
        let (authority, h) = seen.last().expect("a request upstream");
        // Kong's :authority: the service host with its port (not the scheme's default).
        assert_eq!(authority, &format!("127.0.0.1:{up}"));
        assert_eq!(h.get("te").map(|v| v.as_bytes()), Some(&b"trailers"[..]));
        assert_eq!(
            h.get("content-type").map(|v| v.as_bytes()),
            Some(&b"application/grpc"[..])
        );
        let via = h.get("via").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(via.starts_with("2 gateway/"), "via: {via}");
        assert_eq!(
            h.get("x-forwarded-for").map(|v| v.as_bytes()),
            Some(&b"127.0.0.1"[..])
        );
    }

    // The upstream's own status travels in its trailers, untouched.
    let e = say(&mut c, "missing", None).await.expect_err("not found");
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), "no such greeting");

    // Server streaming: every message, then the trailers.
    c.ready().await.expect("ready");
    let mut stream = c
        .server_streaming(
            tonic::Request::new(Msg {
                text: String::new(),
                n: 5,
            }),
            PathAndQuery::from_static("/test.Echo/Count"),
            ProstCodec::<Msg, Msg>::default(),
        )
        .await
        .expect("streaming call")
        .into_inner();
    let mut got = Vec::new();
    while let Some(m) = stream.message().await.expect("stream message") {
        got.push(m.n);
    }
    assert_eq!(got, vec![1, 2, 3, 4, 5]);

    // Many calls share one upstream HTTP/2 connection per worker and stay correct.
    let mut calls = Vec::new();
    for i in 0..50 {
        let mut c = c.clone();
        calls.push(tokio::spawn(async move {
            say(&mut c, &format!("n{i}"), None).await
        }));
    }
    for (i, call) in calls.into_iter().enumerate() {
        let r = call.await.expect("join").expect("concurrent call");
        assert_eq!(r.text, format!("hello n{i}"));
    }
}

#[tokio::test]
async fn gateway_answers_carry_grpc_status() {
    let (up, _seen) = grpc_upstream().await;
    let dead = free_port();
    let extra = format!(
        "    plugins:
    - name: key-auth
    - name: rate-limiting
      config:
        minute: 2
        policy: local
- name: down
  protocol: grpc
  host: 127.0.0.1
  port: {dead}
  routes:
  - name: down
    protocols: [grpc]
    paths: [/test.Down/]
consumers:
- username: alice
  keyauth_credentials:
  - key: alice-key
"
    );
    let gw = gateway(&config(up, &extra));
    let mut c = client(gw.port).await;

    // key-auth's 401: Unauthenticated with Kong's message.
    let e = say(&mut c, "x", None).await.expect_err("no key");
    assert_eq!(e.code(), Code::Unauthenticated);
    assert_eq!(e.message(), "No API key found in request");
    let e = say(&mut c, "x", Some("wrong")).await.expect_err("bad key");
    assert_eq!(e.code(), Code::Unauthenticated);
    assert_eq!(e.message(), "Unauthorized");

    // Within the limit, then rate-limiting's 429: ResourceExhausted.
    say(&mut c, "a", Some("alice-key")).await.expect("first");
    say(&mut c, "b", Some("alice-key")).await.expect("second");
    let e = say(&mut c, "c", Some("alice-key"))
        .await
        .expect_err("over the limit");
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(e.message(), "API rate limit exceeded");

    // No route: 404, NotFound.
    let e = call_fails(&mut c, "/other.Service/Call", "no route").await;
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), "no Route matched with those values");

    // The upstream refuses the connection: Kong's 502, which gRPC calls Internal.
    let e = call_fails(&mut c, "/test.Down/Call", "upstream down").await;
    assert_eq!(e.code(), Code::Internal);
    assert_eq!(
        e.message(),
        "An invalid response was received from the upstream server"
    );
}

#[tokio::test]
async fn grpc_routes_refuse_other_requests_as_kong_does() {
    let (up, _seen) = grpc_upstream().await;
    let extra = "- name: secure
  protocol: grpc
  host: 127.0.0.1
  port: 9
  routes:
  - name: secure
    protocols: [grpcs]
    paths: [/test.Secure/]
";
    let gw = gateway(&config(up, extra));

    // Not gRPC: 415.
    let r = reqwest::Client::new()
        .post(gw.url("/test.Echo/Say"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 415);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["message"], "Non-gRPC request matched gRPC route");

    // gRPC over HTTP/1.1: 426, asking for HTTP/2.
    let r = reqwest::Client::new()
        .post(gw.url("/test.Echo/Say"))
        .header("content-type", "application/grpc")
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 426);
    assert_eq!(
        r.headers().get("upgrade").map(|v| v.as_bytes()),
        Some(&b"HTTP/2"[..])
    );
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["message"], "Please use HTTP2 protocol");

    // A grpcs-only route reached in clear text: 200 with grpc-status 1.
    let mut c = client(gw.port).await;
    let e = call_fails(&mut c, "/test.Secure/Call", "grpcs only").await;
    assert_eq!(e.code(), Code::Cancelled);
    assert_eq!(e.message(), "gRPC request matched gRPCs route");

    // Plain HTTP/1.1 still works on the same listener (the preface tells them apart).
    let r = reqwest::Client::new()
        .get(gw.url("/nothing-here"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 404);
}

/// `gateway check` on `text`: whether it passed, and what it printed.
fn check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("kong.yml");
    std::fs::write(&f, text).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["check", "--config"])
        .arg(&f)
        .output()
        .expect("run check");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), all)
}

#[test]
fn grpc_config_rules_match_kong() {
    // A gRPC service has no path; http and grpc protocols do not mix on a route.
    let (ok, err) = check(
        "_format_version: \"3.0\"
services:
- name: s
  url: grpc://127.0.0.1:50051/v1
  routes:
  - name: r
    protocols: [http, grpc]
    paths: [/x]
",
    );
    assert!(!ok);
    assert!(
        err.contains("services[0].path") && err.contains("value must be null"),
        "{err}"
    );

    let (ok, err) = check(
        "_format_version: \"3.0\"
services:
- name: s
  url: grpc://127.0.0.1:50051
  routes:
  - name: r
    protocols: [http, grpc]
    paths: [/x]
",
    );
    assert!(!ok);
    assert!(
        err.contains("routes[0].protocols") && err.contains("mutually exclusive"),
        "{err}"
    );

    // grpcs without a port: Kong's port 80, with a warning.
    let (ok, all) = check(
        "_format_version: \"3.0\"
services:
- name: s
  protocol: grpcs
  host: greeter.internal
  routes:
  - name: r
    protocols: [grpcs]
    paths: [/x]
",
    );
    assert!(ok, "{all}");
    assert!(all.contains("uses port 80"), "{all}");
}

#[tokio::test]
async fn grpcs_upstream_and_grpc_over_tls() {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
    // Both rustls providers are linked into the test binary: pick one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    // The upstream: the same service, over TLS with ALPN h2.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let up = listener.local_addr().expect("addr").port();
    let seen: Seen = Arc::default();
    let svc = Echo { seen: seen.clone() };
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(&cert_pem, &key_pem));
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .tls_config(tls)
            .expect("server tls")
            .serve_with_incoming(svc, incoming)
            .await;
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &cert_pem).expect("ca");
    let gw = gateway_with_env(
        &format!(
            "_format_version: \"3.0\"
services:
- name: secure
  protocol: grpcs
  host: 127.0.0.1
  port: {up}
  routes:
  - name: secure
    protocols: [grpcs]
    paths: [/test.Echo/]
"
        ),
        GwOpts {
            extra: vec![],
            tls: Some((cert_pem.clone(), key_pem.clone())),
        },
        // The upstream's certificate is trusted through the system roots' file.
        &[("SSL_CERT_FILE", ca.to_str().expect("path"))],
    );
    let tls_port = gw.tls_port.expect("tls port");
    let ch = tonic::transport::Endpoint::from_shared(format!("https://localhost:{tls_port}"))
        .expect("endpoint")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&cert_pem))
                .domain_name("localhost"),
        )
        .expect("client tls")
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect over TLS");
    let mut c = tonic::client::Grpc::new(ch);
    let r = say(&mut c, "over tls", None).await;
    // The service host is an address the certificate does not name: the upstream's
    // certificate is refused (502, Internal), never trusted blindly.
    let e = r.expect_err("certificate for localhost, service host 127.0.0.1");
    assert_eq!(e.code(), Code::Internal, "{e:?}");
    assert!(seen.lock().expect("seen").is_empty());

    // Named as the certificate names it: proxied over TLS both ways.
    gw.write_config(&format!(
        "_format_version: \"3.0\"
services:
- name: secure
  protocol: grpcs
  host: localhost
  port: {up}
  routes:
  - name: secure
    protocols: [grpcs]
    paths: [/test.Echo/]
"
    ));
    let reload = reqwest::Client::new()
        .post(gw.status_url("/config"))
        .body(std::fs::read_to_string(&gw.config).expect("config"))
        .send()
        .await
        .expect("reload");
    assert!(reload.status().is_success(), "{}", reload.status());
    let r = say(&mut c, "over tls", None).await.expect("grpcs call");
    assert_eq!(r.text, "hello over tls");
    let seen = seen.lock().expect("seen");
    let (authority, h) = seen.last().expect("upstream saw the call");
    assert_eq!(authority, &format!("localhost:{up}"));
    let via = h.get("via").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(via.starts_with("2 gateway/"), "via: {via}");
}
