//! Integration tests: the real `gateway` binary against real upstream processes on
//! loopback ports.

mod harness;

mod admin;
mod auth;
mod balancing;
mod basic_auth;
mod bot_detection;
mod check;
mod corpus;
mod dataplane;
mod forwarded;
mod framing;
mod grpc;
mod hmac_auth;
mod ldap_auth;
mod lifecycle;
mod logging;
mod metrics;
mod otel;
mod proxy_cache;
mod rate_limiting;
mod response_ratelimiting;
mod routing;
mod security;
mod tls;
mod transform;
