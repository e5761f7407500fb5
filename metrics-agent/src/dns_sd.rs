//! `dns_sd_configs`: SRV, A and AAAA lookups every `refresh_interval`, with Prometheus'
//! labels (`__meta_dns_name`, `__meta_dns_srv_record_target`, `__meta_dns_srv_record_port`).
//!
//! Name servers, search domains and `ndots` come from /etc/resolv.conf, as in Prometheus;
//! `METRICS_AGENT_DNS_SERVERS` (comma-separated `ip:port`) replaces the name servers.
//! Queries go over UDP with EDNS0 (4096-byte answers), and over TCP when truncated.

use crate::config::{DnsSd, DnsType, TargetGroup};
use crate::discovery::{Update, host_port};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    pub servers: Vec<SocketAddr>,
    pub search: Vec<String>,
    pub ndots: usize,
}

impl ResolvConf {
    pub fn parse(text: &str) -> ResolvConf {
        let mut c = ResolvConf {
            servers: Vec::new(),
            search: Vec::new(),
            ndots: 1,
        };
        for line in text.lines() {
            let mut w = line.split_whitespace();
            match w.next() {
                Some("nameserver") => {
                    if let Some(ip) = w.next().and_then(|s| s.parse::<IpAddr>().ok()) {
                        c.servers.push(SocketAddr::new(ip, 53));
                    }
                }
                Some("search") | Some("domain") => {
                    c.search = w.map(|s| s.trim_end_matches('.').to_string()).collect();
                }
                Some("options") => {
                    for o in w {
                        if let Some(n) = o.strip_prefix("ndots:").and_then(|n| n.parse().ok()) {
                            c.ndots = n;
                        }
                    }
                }
                _ => {}
            }
        }
        c
    }

    /// The system's configuration, with `METRICS_AGENT_DNS_SERVERS` applied.
    pub fn system() -> ResolvConf {
        let mut c =
            ResolvConf::parse(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
        if let Ok(s) = std::env::var("METRICS_AGENT_DNS_SERVERS") {
            c.servers = s
                .split(',')
                .filter_map(|a| a.trim().parse::<SocketAddr>().ok())
                .collect();
        }
        if c.servers.is_empty() {
            c.servers.push(SocketAddr::from(([127, 0, 0, 1], 53)));
        }
        c
    }

    /// The names to try for `name`, in order (Go's dns.ClientConfig.NameList).
    pub fn name_list(&self, name: &str) -> Vec<String> {
        if name.ends_with('.') {
            return vec![name.to_string()];
        }
        let fqdn = format!("{name}.");
        let searched = self.search.iter().map(|d| format!("{name}.{d}."));
        if name.matches('.').count() >= self.ndots {
            std::iter::once(fqdn).chain(searched).collect()
        } else {
            searched.chain(std::iter::once(fqdn)).collect()
        }
    }
}

/// One answer record the discovery uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Srv { port: u16, target: String },
}

fn qtype(kind: DnsType) -> u16 {
    match kind {
        DnsType::A => 1,
        DnsType::Aaaa => 28,
        DnsType::Srv => 33,
    }
}

/// A query for `name` (fully qualified, with the trailing dot) with an EDNS0 OPT record.
pub fn encode_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00]); // RD
    m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 1]); // 1 question, 1 additional
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        let b = label.as_bytes();
        m.push(b.len().min(63) as u8);
        m.extend_from_slice(&b[..b.len().min(63)]);
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&[0, 1]); // IN
    // OPT: root name, type 41, UDP size 4096, no flags, no data.
    m.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
    m
}

/// Why a DNS question got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A message that cannot be decoded (what is wrong with it).
    #[error("{0}")]
    Malformed(&'static str),
    #[error("{server}: {}timeout", if *.tcp { "TCP " } else { "" })]
    Timeout { server: SocketAddr, tcp: bool },
    #[error("{server}: {source}")]
    Server {
        server: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("could not resolve {name:?}: {}", .last.as_ref().map_or("no server answered".to_string(), |e| e.to_string()))]
    Resolve {
        name: String,
        last: Option<Box<DnsError>>,
    },
}

/// Reads a (possibly compressed) name at `pos`; returns it with a trailing dot and the
/// position after it.
fn read_name(msg: &[u8], mut pos: usize) -> Result<(String, usize), DnsError> {
    let bad = DnsError::Malformed;
    let mut name = String::new();
    let mut end = None;
    for _ in 0..128 {
        let len = *msg.get(pos).ok_or(bad("truncated name"))? as usize;
        if len & 0xC0 == 0xC0 {
            let lo = *msg.get(pos + 1).ok_or(bad("truncated pointer"))? as usize;
            end.get_or_insert(pos + 2);
            pos = ((len & 0x3F) << 8) | lo;
            continue;
        }
        if len == 0 {
            if name.is_empty() {
                name.push('.');
            }
            return Ok((name, end.unwrap_or(pos + 1)));
        }
        let label = msg
            .get(pos + 1..pos + 1 + len)
            .ok_or(bad("truncated label"))?;
        name.push_str(&String::from_utf8_lossy(label));
        name.push('.');
        pos += 1 + len;
    }
    Err(bad("name compression loop"))
}

/// A parsed response: id, rcode, truncated, answers.
#[derive(Debug)]
pub struct Response {
    pub id: u16,
    pub rcode: u8,
    pub truncated: bool,
    pub answers: Vec<Record>,
}

pub fn decode_response(msg: &[u8]) -> Result<Response, DnsError> {
    let bad = DnsError::Malformed;
    if msg.len() < 12 {
        return Err(bad("short DNS message"));
    }
    let u16_at = |p: usize| -> Result<u16, DnsError> {
        msg.get(p..p + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or(bad("truncated DNS message"))
    };
    let id = u16_at(0)?;
    let flags = u16_at(2)?;
    let qd = u16_at(4)?;
    let an = u16_at(6)?;
    let mut pos = 12;
    for _ in 0..qd {
        pos = read_name(msg, pos)?.1 + 4;
    }
    let mut answers = Vec::new();
    for _ in 0..an {
        let (_, p) = read_name(msg, pos)?;
        let rtype = u16_at(p)?;
        let rdlen = u16_at(p + 8)? as usize;
        let rdata = p + 10;
        let data = msg
            .get(rdata..rdata + rdlen)
            .ok_or(bad("truncated record"))?;
        match rtype {
            1 if rdlen == 4 => {
                answers.push(Record::A(Ipv4Addr::new(data[0], data[1], data[2], data[3])))
            }
            28 if rdlen == 16 => {
                let mut b = [0u8; 16];
                b.copy_from_slice(data);
                answers.push(Record::Aaaa(Ipv6Addr::from(b)));
            }
            33 if rdlen >= 7 => {
                let port = u16_at(rdata + 4)?;
                let (target, _) = read_name(msg, rdata + 6)?;
                answers.push(Record::Srv { port, target });
            }
            _ => {} // CNAME and others: skipped, as Prometheus does
        }
        pos = rdata + rdlen;
    }
    Ok(Response {
        id,
        rcode: (flags & 0x0F) as u8,
        truncated: flags & 0x0200 != 0,
        answers,
    })
}

fn query_id() -> u16 {
    let n = crate::clock::since_epoch().subsec_nanos();
    (n ^ (n >> 16)) as u16
}

async fn exchange(server: SocketAddr, name: &str, qtype: u16) -> Result<Response, DnsError> {
    let id = query_id();
    let q = encode_query(id, name, qtype);
    let bind = if server.is_ipv6() {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    sock.connect(server).await?;
    sock.send(&q).await?;
    let mut buf = vec![0u8; 65535];
    let r = loop {
        let n = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf))
            .await
            .map_err(|_| DnsError::Timeout { server, tcp: false })?
            .map_err(|source| DnsError::Server { server, source })?;
        let r = decode_response(&buf[..n])?;
        if r.id == id {
            break r;
        }
    };
    if !r.truncated {
        return Ok(r);
    }
    // Truncated: the same question over TCP (2-byte length prefix).
    let mut tcp = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(server),
    )
    .await
    .map_err(|_| DnsError::Timeout { server, tcp: true })?
    .map_err(|source| DnsError::Server { server, source })?;
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    tcp.write_all(&framed).await?;
    let len = tcp.read_u16().await? as usize;
    let mut msg = vec![0u8; len];
    tcp.read_exact(&mut msg).await?;
    decode_response(&msg)
}

/// Looks `name` up through the search list, as Prometheus does: the first successful
/// answer wins; all names not existing is an empty answer; any error otherwise.
pub async fn lookup(conf: &ResolvConf, name: &str, kind: DnsType) -> Result<Vec<Record>, DnsError> {
    let mut last_err = None;
    let mut all_valid = true;
    for candidate in conf.name_list(name) {
        let mut answered = false;
        for server in &conf.servers {
            match exchange(*server, &candidate, qtype(kind)).await {
                Ok(r) if r.rcode == 0 => return Ok(r.answers),
                Ok(_) => {
                    answered = true;
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        all_valid &= answered;
    }
    if all_valid {
        Ok(Vec::new())
    } else {
        Err(DnsError::Resolve {
            name: name.to_string(),
            last: last_err.map(Box::new),
        })
    }
}

/// The target group of one name's records.
pub fn group(name: &str, kind: DnsType, port: u16, records: &[Record]) -> TargetGroup {
    let mut targets = Vec::new();
    for r in records {
        let (addr, srv_target, srv_port) = match (r, kind) {
            (Record::Srv { port, target }, DnsType::Srv) => (
                host_port(target.trim_end_matches('.'), *port),
                target.clone(),
                port.to_string(),
            ),
            (Record::A(ip), DnsType::A) => (
                host_port(&ip.to_string(), port),
                String::new(),
                String::new(),
            ),
            (Record::Aaaa(ip), DnsType::Aaaa) => (
                host_port(&ip.to_string(), port),
                String::new(),
                String::new(),
            ),
            _ => continue,
        };
        let mut t = BTreeMap::new();
        t.insert("__address__".to_string(), addr);
        t.insert("__meta_dns_name".to_string(), name.to_string());
        t.insert("__meta_dns_srv_record_target".to_string(), srv_target);
        t.insert("__meta_dns_srv_record_port".to_string(), srv_port);
        t.insert("__meta_dns_mx_record_target".to_string(), String::new());
        t.insert("__meta_dns_ns_record_target".to_string(), String::new());
        targets.push(t);
    }
    TargetGroup {
        source: name.to_string(),
        targets,
        labels: BTreeMap::new(),
    }
}

/// Refreshes the names of one `dns_sd_configs` entry every `refresh_interval`. A name whose
/// lookup fails keeps its previous targets.
pub async fn run(
    key: String,
    sd: DnsSd,
    tx: mpsc::Sender<Update>,
    mut stop: watch::Receiver<bool>,
) {
    let conf = ResolvConf::system();
    let mut groups: BTreeMap<String, TargetGroup> = BTreeMap::new();
    let mut tick = tokio::time::interval(sd.refresh_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        for name in &sd.names {
            let result = tokio::select! {
                r = lookup(&conf, name, sd.kind) => r,
                _ = stop.changed() => return,
            };
            match result {
                Ok(records) => {
                    groups.insert(name.clone(), group(name, sd.kind, sd.port, &records));
                }
                Err(e) => tracing::error!(name = %name, "dns_sd: {e}"),
            }
        }
        if tx
            .send((key.clone(), groups.values().cloned().collect()))
            .await
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_list_follows_ndots() {
        let c = ResolvConf::parse(
            "nameserver 10.0.0.2\nsearch svc.local corp\noptions ndots:2 edns0\n",
        );
        assert_eq!(c.servers, [SocketAddr::from(([10, 0, 0, 2], 53))]);
        assert_eq!(c.ndots, 2);
        assert_eq!(c.name_list("api"), ["api.svc.local.", "api.corp.", "api."]);
        assert_eq!(
            c.name_list("a.b.c"),
            ["a.b.c.", "a.b.c.svc.local.", "a.b.c.corp."]
        );
        assert_eq!(c.name_list("x.example."), ["x.example."]);
    }

    #[test]
    fn decodes_a_compressed_srv_answer() {
        let mut m = encode_query(7, "_m._tcp.svc.", 33);
        m.truncate(m.len() - 11); // drop the OPT record
        m[2] = 0x81;
        m[3] = 0x80;
        m[7] = 1; // 1 answer
        m[11] = 0; // 0 additional
        // answer: pointer to the question name, SRV, IN, TTL, rdata
        m.extend_from_slice(&[0xC0, 12, 0, 33, 0, 1, 0, 0, 0, 30]);
        let target = [3u8, b'a', b'p', b'p', 0xC0, 12 + 8];
        m.extend_from_slice(&((6 + target.len()) as u16).to_be_bytes());
        m.extend_from_slice(&[0, 1, 0, 5, 0x23, 0x82]); // priority, weight, port 9090
        m.extend_from_slice(&target);
        let r = decode_response(&m).expect("decode");
        assert_eq!(r.id, 7);
        assert_eq!(
            r.answers,
            [Record::Srv {
                port: 9090,
                target: "app.svc.".into()
            }]
        );
        let g = group("_m._tcp.svc", DnsType::Srv, 0, &r.answers);
        let t = &g.targets[0];
        assert_eq!(t["__address__"], "app.svc:9090");
        assert_eq!(t["__meta_dns_srv_record_target"], "app.svc.");
        assert_eq!(t["__meta_dns_srv_record_port"], "9090");
        assert_eq!(t["__meta_dns_name"], "_m._tcp.svc");
        let g = group("h", DnsType::Aaaa, 80, &[Record::Aaaa(Ipv6Addr::LOCALHOST)]);
        assert_eq!(g.targets[0]["__address__"], "[::1]:80");
    }
}
