//! The smallest Pingora reverse proxy: round-robin over fixed targets, no plugins, no
//! routing, no logging. It exists only for `gateway/bench/compare.sh`, to split the cost
//! of the Pingora framework from the gateway's own per-request work.
//!
//!   bare_pingora LISTEN TARGET [TARGET...]
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Bare {
    targets: Vec<String>,
    next: AtomicUsize,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.targets.len();
        Ok(Box::new(HttpPeer::new(
            self.targets[i].as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: bare_pingora LISTEN TARGET [TARGET...]");
        std::process::exit(2);
    }
    let conf = ServerConf {
        threads: 1,
        upstream_keepalive_pool_size: 1024,
        work_stealing: std::env::var("BARE_WORK_STEALING").map_or(true, |v| v != "0"),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = http_proxy_service(
        &server.configuration,
        Bare {
            targets: args[1..].to_vec(),
            next: AtomicUsize::new(0),
        },
    );
    svc.add_tcp(&args[0]);
    server.add_service(svc);
    server.run_forever();
}
