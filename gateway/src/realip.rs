//! The client address as Kong determines it (nginx's real-ip module driven by Kong's
//! `trusted_ips`, `real_ip_header`, `real_ip_recursive`): when the connection comes from a
//! trusted address, the address in the real-ip header replaces it.

use std::net::IpAddr;

use crate::net::cidr::{Cidr, canonical};

#[derive(Debug, Clone)]
pub struct RealIp {
    /// Peers whose real-ip header is believed. Empty: the header is never used.
    pub trusted: Vec<Cidr>,
    /// Lower-case header name (Kong's default is `X-Real-IP`).
    pub header: String,
    /// Skip trusted addresses from the right of the list instead of taking the last one.
    pub recursive: bool,
}

impl Default for RealIp {
    fn default() -> Self {
        RealIp {
            trusted: Vec::new(),
            header: "x-real-ip".into(),
            recursive: false,
        }
    }
}

impl RealIp {
    pub fn new(
        trusted: &[String],
        header: &str,
        recursive: bool,
    ) -> Result<RealIp, crate::net::cidr::CidrError> {
        let trusted = trusted
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| Cidr::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RealIp {
            trusted,
            header: header.trim().to_ascii_lowercase(),
            recursive,
        })
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// The client address for a connection from `peer` with these request headers.
    pub fn resolve(&self, peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if self.trusted.is_empty() || !self.is_trusted(peer) {
            return peer;
        }
        let list: Vec<&str> = headers
            .get_all(self.header.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if list.is_empty() {
            return peer;
        }
        let mut chosen = None;
        for item in list.iter().rev() {
            let Ok(ip) = item.parse::<IpAddr>() else {
                // An unparsable entry stops the walk; the address stays as it was.
                break;
            };
            let ip = canonical(ip);
            chosen = Some(ip);
            if !self.recursive || !self.is_trusted(ip) {
                break;
            }
        }
        chosen.unwrap_or(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &'static str, v: &str) -> http::HeaderMap {
        let mut m = http::HeaderMap::new();
        m.insert(name, v.parse().expect("value"));
        m
    }

    #[test]
    fn untrusted_peer_keeps_address() {
        let r = RealIp::new(&["10.0.0.0/8".into()], "X-Real-IP", false).expect("cfg");
        let peer: IpAddr = "192.168.1.1".parse().expect("ip");
        assert_eq!(r.resolve(peer, &h("x-real-ip", "1.2.3.4")), peer);
    }

    #[test]
    fn trusted_peer_uses_header() {
        let r = RealIp::new(&["127.0.0.1".into()], "X-Forwarded-For", false).expect("cfg");
        let peer: IpAddr = "127.0.0.1".parse().expect("ip");
        let got = r.resolve(peer, &h("x-forwarded-for", "1.1.1.1, 127.0.0.1"));
        assert_eq!(got, "127.0.0.1".parse::<IpAddr>().expect("ip"));
        let r = RealIp::new(&["127.0.0.1".into()], "X-Forwarded-For", true).expect("cfg");
        let got = r.resolve(peer, &h("x-forwarded-for", "1.1.1.1, 127.0.0.1"));
        assert_eq!(got, "1.1.1.1".parse::<IpAddr>().expect("ip"));
        let got = r.resolve(peer, &h("x-forwarded-for", "garbage"));
        assert_eq!(got, peer);
    }
}
