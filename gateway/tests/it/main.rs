//! Integration tests: the real `gateway` binary against real upstream processes on
//! loopback ports.

mod harness;

mod admin;
mod auth;
mod balancing;
mod basic_auth;
mod check;
mod dataplane;
mod forwarded;
mod framing;
mod hmac_auth;
mod ldap_auth;
mod lifecycle;
mod metrics;
mod otel;
mod rate_limiting;
mod routing;
mod security;
mod tls;
mod transform;
