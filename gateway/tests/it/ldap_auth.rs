//! ldap-auth against a real OpenLDAP `slapd` started by the test (plain LDAP, LDAPS and
//! StartTLS on free loopback ports, a directory made with `slapadd`). Needs `slapd` and
//! `slapadd` (`.ci/deps/ldap.sh`).

use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::Value;

use crate::harness::*;

const BASE_DN: &str = "ou=people,dc=example,dc=com";

struct Slapd {
    proc: Option<Proc>,
    port: u16,
    tls_port: u16,
    _dir: tempfile::TempDir,
}

fn find(bin: &str) -> String {
    for dir in ["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"] {
        let p = format!("{dir}/{bin}");
        if std::path::Path::new(&p).exists() {
            return p;
        }
    }
    bin.to_string()
}

/// A slapd with `uid=einstein` (password `password`) and `uid=curie` (`radium`) under
/// `ou=people,dc=example,dc=com`, plain LDAP (StartTLS offered) and LDAPS.
fn slapd() -> Slapd {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display().to_string();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("cert");
    std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).expect("cert");
    std::fs::write(dir.path().join("key.pem"), cert.signing_key.serialize_pem()).expect("key");
    std::fs::create_dir(dir.path().join("data")).expect("data dir");
    let conf = format!(
        "include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {d}/slapd.pid
TLSCertificateFile {d}/cert.pem
TLSCertificateKeyFile {d}/key.pem
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
suffix \"dc=example,dc=com\"
rootdn \"cn=admin,dc=example,dc=com\"
rootpw admin-secret
directory {d}/data
"
    );
    std::fs::write(dir.path().join("slapd.conf"), conf).expect("slapd.conf");
    let ldif = "dn: dc=example,dc=com
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=people,dc=example,dc=com
objectClass: organizationalUnit
ou: people

dn: uid=einstein,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: einstein
cn: Albert Einstein
sn: Einstein
userPassword: password

dn: uid=curie,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: curie
cn: Marie Curie
sn: Curie
userPassword: radium
";
    std::fs::write(dir.path().join("users.ldif"), ldif).expect("ldif");
    let out = Command::new(find("slapadd"))
        .arg("-f")
        .arg(dir.path().join("slapd.conf"))
        .arg("-l")
        .arg(dir.path().join("users.ldif"))
        .output()
        .expect("slapadd (install with .ci/deps/ldap.sh)");
    assert!(
        out.status.success(),
        "slapadd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut s = Slapd {
        proc: None,
        port: free_port(),
        tls_port: free_port(),
        _dir: dir,
    };
    s.start();
    s
}

impl Slapd {
    /// Starts slapd (again) on the same ports and directory, logging connections
    /// (`-d stats`) to `slapd.log`.
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self._dir.path().join("slapd.log"))
            .expect("slapd.log");
        let child = Command::new(find("slapd"))
            .arg("-f")
            .arg(self._dir.path().join("slapd.conf"))
            .arg("-h")
            .arg(format!(
                "ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{}/",
                self.port, self.tls_port
            ))
            .args(["-d", "stats"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("slapd (install with .ci/deps/ldap.sh)");
        self.proc = Some(Proc::new(child));
        assert!(
            wait_port(self.port, Duration::from_secs(10))
                && wait_port(self.tls_port, Duration::from_secs(10)),
            "slapd did not start"
        );
    }

    /// Connections slapd accepted so far.
    fn accepted(&self) -> usize {
        std::fs::read_to_string(self._dir.path().join("slapd.log"))
            .unwrap_or_default()
            .matches(" ACCEPT from ")
            .count()
    }
}

fn ldap(user: &str, pass: &str) -> String {
    format!(
        "ldap {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

fn config(up: u16, s: &Slapd) -> String {
    let (p, tp) = (s.port, s.tls_port);
    let down = free_port();
    let common = format!("ldap_host: 127.0.0.1, base_dn: \"{BASE_DN}\", attribute: uid");
    format!(
        r#"_format_version: "3.0"
consumers:
- username: anon
services:
- name: api
  url: http://127.0.0.1:{up}
  routes:
  - name: plain
    paths: [/plain]
    plugins:
    - name: ldap-auth
      config: {{{common}, ldap_port: {p}}}
  - name: hidden
    paths: [/hidden]
    plugins:
    - name: ldap-auth
      config: {{{common}, ldap_port: {p}, hide_credentials: true, header_type: Basic, realm: test-ldap}}
  - name: maybe
    paths: [/maybe]
    plugins:
    - name: ldap-auth
      config: {{{common}, ldap_port: {p}, anonymous: anon}}
  - name: ldaps
    paths: [/ldaps]
    plugins:
    - name: ldap-auth
      config: {{{common}, ldap_port: {tp}, ldaps: true}}
  - name: starttls
    paths: [/starttls]
    plugins:
    - name: ldap-auth
      config: {{{common}, ldap_port: {p}, start_tls: true}}
  - name: verified
    paths: [/verified]
    plugins:
    - name: ldap-auth
      config: {{{common}, ldap_port: {tp}, ldaps: true, verify_ldap_host: true, cache_ttl: 61}}
  - name: down
    paths: [/down]
    plugins:
    - name: ldap-auth
      config: {{{common}, ldap_port: {down}, timeout: 2000}}
"#
    )
}

// dup: each test spells out its own setup and checks (reads alone when it fails).
async fn call(
    c: &reqwest::Client,
    gw: &Gw,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, Value) {
    let mut rb = c.get(gw.url(path));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.expect("send");
    let s = r.status().as_u16();
    let www = r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let t = r.text().await.unwrap_or_default();
    (s, www, serde_json::from_str(&t).unwrap_or(Value::String(t)))
}

#[tokio::test]
async fn ldap_auth_binds_against_slapd() {
    let mut dir = slapd();
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway(&config(up, &dir));
    let c = client();
    let good = ldap("einstein", "password");

    // Missing, unparsable, wrong: 401 Unauthorized with `LDAP`.
    let wrong = ldap("einstein", "wrong");
    let nobody = ldap("nobody", "password");
    let empty = ldap("einstein", "");
    for h in [
        None,
        Some("abcd"),
        Some("ldap "),
        Some(wrong.as_str()),
        Some(nobody.as_str()),
        Some(empty.as_str()),
    ] {
        let headers: Vec<(&str, &str)> = h.map(|v| ("authorization", v)).into_iter().collect();
        let (s, www, b) = call(&c, &gw, "/plain", &headers).await;
        assert_eq!(
            (s, www.as_str(), b["message"].as_str()),
            (401, "LDAP", Some("Unauthorized")),
            "{h:?}"
        );
    }

    // A good bind: the credential's username upstream, no consumer, header kept.
    let (s, _, b) = call(&c, &gw, "/plain", &[("authorization", &good)]).await;
    assert_eq!(s, 200, "{b}");
    let h = &b["headers"];
    assert_eq!(h["x-credential-identifier"], "einstein");
    assert!(h.get("x-consumer-id").is_none());
    assert!(h.get("x-anonymous-consumer").is_none());
    assert_eq!(h["authorization"], good.as_str());
    // The scheme in any case; Proxy-Authorization; a bad Proxy-Authorization falls back.
    let upper = ldap("curie", "radium").replacen("ldap", "LDAP", 1);
    let (s, _, b) = call(&c, &gw, "/plain", &[("proxy-authorization", &upper)]).await;
    assert_eq!(
        (s, &b["headers"]["x-credential-identifier"]),
        (200, &"curie".into())
    );
    let (s, _, _) = call(
        &c,
        &gw,
        "/plain",
        &[("proxy-authorization", &wrong), ("authorization", &good)],
    )
    .await;
    assert_eq!(s, 200);

    // Not base64 after the scheme: Kong fails with 500 there.
    let (s, www, b) = call(&c, &gw, "/plain", &[("authorization", "ldap !!!")]).await;
    assert_eq!((s, www.as_str()), (500, ""));
    assert_eq!(b["message"], "An unexpected error occurred");

    // header_type, realm, hide_credentials.
    let basic = good.replacen("ldap", "basic", 1);
    let (s, www, _) = call(&c, &gw, "/hidden", &[("authorization", &good)]).await;
    assert_eq!((s, www.as_str()), (401, "Basic realm=\"test-ldap\""));
    let (s, _, b) = call(&c, &gw, "/hidden", &[("authorization", &basic)]).await;
    assert_eq!(s, 200);
    assert!(b["headers"].get("authorization").is_none(), "{b}");

    // anonymous.
    let (s, _, b) = call(&c, &gw, "/maybe", &[("authorization", &wrong)]).await;
    assert_eq!(s, 200);
    assert_eq!(b["headers"]["x-consumer-username"], "anon");
    assert_eq!(b["headers"]["x-anonymous-consumer"], "true");

    // LDAPS and StartTLS (certificate not verified), then verified against the system's
    // roots, which do not hold the test's self-signed certificate: a failed handshake
    // is a failed authentication. (Kong's cache key is host, port, base_dn, attribute,
    // cache_ttl and the credentials, not the TLS settings: /verified has its own
    // cache_ttl so that /ldaps' success is not reused.)
    for path in ["/ldaps", "/starttls"] {
        let (s, _, b) = call(&c, &gw, path, &[("authorization", &good)]).await;
        assert_eq!(s, 200, "{path}: {b}");
        let (s, _, _) = call(&c, &gw, path, &[("authorization", &wrong)]).await;
        assert_eq!(s, 401, "{path}");
    }
    let (s, www, _) = call(&c, &gw, "/verified", &[("authorization", &good)]).await;
    assert_eq!((s, www.as_str()), (401, "LDAP"));

    // Nothing listening: 500.
    let (s, _, b) = call(&c, &gw, "/down", &[("authorization", &good)]).await;
    assert_eq!(
        (s, b["message"].as_str()),
        (500, Some("An unexpected error occurred"))
    );

    // Binds are cached (cache_ttl 60): with slapd gone the same credentials still pass,
    // new ones cannot be checked (500), a cached refusal is still a refusal.
    drop(dir.proc.take());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", dir.port)).is_err(),
        "slapd still up"
    );
    let (s, _, _) = call(&c, &gw, "/plain", &[("authorization", &good)]).await;
    assert_eq!(s, 200);
    let (s, _, _) = call(&c, &gw, "/plain", &[("authorization", &wrong)]).await;
    assert_eq!(s, 401);
    let (s, _, _) = call(
        &c,
        &gw,
        "/plain",
        &[("authorization", &ldap("einstein", "other"))],
    )
    .await;
    assert_eq!(s, 500);
}

#[test]
fn check_loads_ldap_auth_and_rejects_bad_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kong.yml");
    let run = |text: &str| {
        std::fs::write(&path, text).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .arg("check")
            .arg("--config")
            .arg(&path)
            .output()
            .expect("run check");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string()
                + &String::from_utf8_lossy(&out.stdout),
        )
    };
    let ok = r#"_format_version: "3.0"
plugins:
- name: ldap-auth
  config: {ldap_host: ldap.example.com, base_dn: "dc=example,dc=com", attribute: uid, start_tls: true, verify_ldap_host: true, cache_ttl: 30, keepalive: 1000}
"#;
    let (good, out) = run(ok);
    assert!(good, "{out}");
    let (good, out) = run(r#"_format_version: "3.0"
plugins:
- name: ldap-auth
  config: {ldap_host: "bad host", base_dn: x, attribute: uid}
- name: ldap-auth
  config: {ldap_host: h, base_dn: x, attribute: uid, ldaps: true, start_tls: true}
- name: ldap-auth
  config: {ldap_host: h, attribute: uid}
"#);
    assert!(!good);
    assert!(
        out.contains("plugins[0].config.ldap_host: invalid value"),
        "{out}"
    );
    assert!(
        out.contains("'ldaps' and 'start_tls' cannot be enabled simultaneously"),
        "{out}"
    );
    assert!(out.contains("missing field `base_dn`"), "{out}");
}

/// Binds that miss the cache reuse a kept connection (Kong's keepalive pool); one that
/// the server closed meanwhile is replaced without failing the request.
#[tokio::test]
async fn ldap_auth_keeps_connections_alive() {
    let mut dir = slapd();
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway(&config(up, &dir));
    // One client connection: every request goes to the same gateway worker.
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .expect("client");
    let before = dir.accepted();
    for i in 0..6 {
        let (s, _, _) = call(
            &c,
            &gw,
            "/plain",
            &[("authorization", &ldap("einstein", &format!("wrong-{i}")))],
        )
        .await;
        assert_eq!(s, 401);
    }
    let (s, _, _) = call(
        &c,
        &gw,
        "/plain",
        &[("authorization", &ldap("curie", "radium"))],
    )
    .await;
    assert_eq!(s, 200);
    let used = dir.accepted() - before;
    assert!(
        (1..=2).contains(&used),
        "7 binds over {used} LDAP connections"
    );

    // slapd restarts: the kept connection is dead, a new one is made.
    drop(dir.proc.take());
    dir.start();
    let (s, _, b) = call(
        &c,
        &gw,
        "/plain",
        &[("authorization", &ldap("einstein", "password"))],
    )
    .await;
    assert_eq!(s, 200, "{b}");
}

/// verify_ldap_host with the server's certificate trusted (the system roots read from
/// `SSL_CERT_FILE`, as Kong reads `lua_ssl_trusted_certificate`): the bind goes through
/// for the certificate's names.
#[tokio::test]
async fn ldap_auth_verifies_the_server_certificate() {
    let dir = slapd();
    let up = free_port();
    let _u = upstream(up);
    let (port, status) = (free_port(), free_port());
    let cfg_dir = tempfile::tempdir().expect("tempdir");
    let cfg = cfg_dir.path().join("kong.yml");
    let route = |name: &str, host: &str, tls: &str| {
        format!(
            "  - name: {name}\n    paths: [/{name}]\n    plugins:\n    - name: ldap-auth\n      config: {{ldap_host: {host}, base_dn: \"{BASE_DN}\", attribute: uid, verify_ldap_host: true, {tls}}}\n"
        )
    };
    let text = format!(
        "_format_version: \"3.0\"\nservices:\n- name: api\n  url: http://127.0.0.1:{up}\n  routes:\n{}{}",
        route(
            "ldaps",
            "localhost",
            &format!("ldaps: true, ldap_port: {}", dir.tls_port)
        ),
        route(
            "starttls",
            "127.0.0.1",
            &format!("start_tls: true, ldap_port: {}", dir.port)
        ),
    );
    std::fs::write(&cfg, text).expect("config");
    let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .args(["--proxy-listen", &format!("127.0.0.1:{port}")])
        .args(["--status-listen", &format!("127.0.0.1:{status}")])
        .args(["--workers", "1", "--access-log", "off"])
        .env("SSL_CERT_FILE", dir._dir.path().join("cert.pem"))
        .env("GATEWAY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gateway");
    let _gw = Proc::new(child);
    assert!(
        wait_port(port, Duration::from_secs(20)),
        "gateway did not start"
    );
    let c = client();
    for path in ["ldaps", "starttls"] {
        let r = c
            .get(format!("http://127.0.0.1:{port}/{path}"))
            .header("authorization", ldap("einstein", "password"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
}
