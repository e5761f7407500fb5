//! A real Prometheus scrapes a real gateway under traffic; every dashboard expression, every
//! template-variable query and every alert rule is then evaluated through the HTTP API.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// Gateway series that exist only with some plugins or events (authentication failures,
/// rate limiting, Redis calls and errors). A panel using one of them may be empty while the
/// gateway under test does not expose it.
const PENDING_METRICS: &[&str] = &[
    "gateway_auth_failures_total",
    "gateway_ratelimit_decisions_total",
    "gateway_redis_errors_total",
    "gateway_redis_latency_seconds",
    "gateway_redis_up",
];

/// Panels whose data needs a plugin in the test's traffic: (title, plugin).
const PLUGIN_PANELS: &[(&str, &str)] = &[
    ("401 / 403 responses / s by route", "key-auth"),
    ("Authenticated requests / s by consumer", "key-auth"),
    ("429 responses / s by route", "rate-limiting"),
];

/// echo-upstream and a gateway in front of it, with the tempdir their files live in.
pub struct Gateway {
    pub dir: tempfile::TempDir,
    _upstream: Proc,
    pub proc: Proc,
    pub proxy: u16,
    pub status: u16,
    pub dead: [u16; 2],
    pub plugins: BTreeSet<&'static str>,
}

impl Gateway {
    pub fn log(&self) -> std::path::PathBuf {
        self.dir.path().join("gateway.log")
    }
}

/// The test gateway's kong.yml. With `redis`, the rate-limited route keeps its counters in
/// that Redis (policy redis, fault tolerant); without, in the gateway (policy local).
fn gateway_config(up: u16, dead: [u16; 2], plugins: &BTreeSet<&str>, redis: Option<u16>) -> String {
    let hc = "  healthchecks:
    active:
      http_path: /health
      timeout: 1
      healthy: {interval: 1, successes: 1}
      unhealthy: {interval: 1, tcp_failures: 1, http_failures: 1, timeouts: 1}
";
    let mut services = format!(
        "services:
- name: echo
  url: http://echo-upstream
  retries: 1
  routes:
  - name: echo-route
    paths: [/echo]
    strip_path: true
- name: slow
  url: http://127.0.0.1:{up}
  routes:
  - name: slow-route
    paths: [/slow]
    strip_path: true
- name: broken
  url: http://dead-upstream
  connect_timeout: 500
  routes:
  - name: broken-route
    paths: [/broken]
"
    );
    let mut consumers = String::new();
    if plugins.contains("key-auth") {
        services.push_str(&format!(
            "- name: private
  url: http://127.0.0.1:{up}
  routes:
  - name: private-route
    paths: [/private]
    plugins:
    - name: key-auth
      config: {{key_names: [apikey]}}
"
        ));
        consumers = "consumers:
- username: alice
  keyauth_credentials:
  - key: alice-key
"
        .to_string();
    }
    if plugins.contains("rate-limiting") {
        let policy = match redis {
            Some(port) => format!(
                "{{minute: 3, policy: redis, fault_tolerant: true, redis: {{host: 127.0.0.1, port: {port}, timeout: 500}}}}"
            ),
            None => "{minute: 3, policy: local}".to_string(),
        };
        services.push_str(&format!(
            "- name: limited
  url: http://127.0.0.1:{up}
  routes:
  - name: limited-route
    paths: [/limited]
    plugins:
    - name: rate-limiting
      config: {policy}
"
        ));
    }
    // Like Kong, the gateway records per-request series only with the prometheus plugin.
    let global = if plugins.contains("prometheus") {
        "plugins:
- name: prometheus
  config:
    per_consumer: true
    status_code_metrics: true
    latency_metrics: true
    bandwidth_metrics: true
    upstream_health_metrics: true
"
    } else {
        ""
    };
    format!(
        "_format_version: \"3.0\"
upstreams:
- name: echo-upstream
{hc}  targets:
  - target: 127.0.0.1:{up}
  - target: 127.0.0.1:{d0}
- name: dead-upstream
{hc}  targets:
  - target: 127.0.0.1:{d1}
{services}{consumers}{global}",
        d0 = dead[0],
        d1 = dead[1],
    )
}

/// Which optional plugins this gateway build implements (`gateway check` accepts them).
fn supported_plugins(gateway: &Path, dir: &Path) -> BTreeSet<&'static str> {
    let mut out = BTreeSet::new();
    for plugin in ["prometheus", "key-auth", "rate-limiting"] {
        let one: BTreeSet<&str> = [plugin].into_iter().collect();
        let path = dir.join(format!("probe-{plugin}.yml"));
        std::fs::write(&path, gateway_config(1, [2, 3], &one, None)).expect("write probe config");
        let ok = Command::new(gateway)
            .arg("check")
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            out.insert(plugin);
        } else {
            eprintln!(
                "note: this gateway build does not accept plugin `{plugin}`; its panels may be empty"
            );
        }
    }
    out
}

/// Starts echo-upstream and the gateway (rate limiting in `redis` when given), makes one
/// accepted and one rejected reload, and sends one request of each kind so that every
/// series exists before the first scrape.
pub fn start_gateway(redis: Option<u16>) -> Gateway {
    let gateway_bin = workspace_bin("gateway", "gateway");
    let echo_bin = workspace_bin("echo-upstream", "gateway");
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = supported_plugins(&gateway_bin, dir.path());

    let up = free_port();
    let upstream = Proc::spawn(
        "echo-upstream",
        Command::new(&echo_bin)
            .args(["--listen", &format!("127.0.0.1:{up}"), "--name", "echo"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(
        wait_port(up, Duration::from_secs(10)),
        "echo-upstream did not start"
    );

    // Two ports nobody listens on: targets that fail their health checks.
    let dead = [free_port(), free_port()];
    let config = dir.path().join("kong.yml");
    std::fs::write(&config, gateway_config(up, dead, &plugins, redis)).expect("write kong.yml");
    let (proxy, status) = (free_port(), free_port());
    let gw_log = dir.path().join("gateway.log");
    let mut gateway = Proc::spawn(
        "gateway",
        Command::new(&gateway_bin)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .args(["--proxy-listen", &format!("127.0.0.1:{proxy}")])
            .args(["--status-listen", &format!("127.0.0.1:{status}")])
            .args(["--workers", "1", "--access-log", "off"])
            .env("GATEWAY_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&gw_log).expect("gateway log")),
    );
    if !wait_port(status, Duration::from_secs(20)) || !wait_port(proxy, Duration::from_secs(5)) {
        gateway.assert_running(&gw_log);
        panic!("gateway did not open its ports");
    }

    // Reloads through POST /config: one accepted, one rejected (gateway_config_reloads_total).
    let text = std::fs::read(&config).expect("read kong.yml");
    let r = http("POST", status, "/config", Some(("application/yaml", &text)));
    assert_eq!(r.status, 201, "POST /config (valid): {}", r.body);
    let bad =
        b"_format_version: \"3.0\"\nservices:\n- name: bad\n  url: not-a-url\n  no_such_field: 1\n";
    let r = http("POST", status, "/config", Some(("application/yaml", bad)));
    assert_eq!(r.status, 400, "POST /config (invalid): {}", r.body);

    // One request of each kind before the first scrape, so that every series exists when
    // Prometheus first sees it and rate() counts all of the traffic below.
    for path in [
        "/echo/warm",
        "/echo/status/500",
        "/no-such-route",
        "/slow/delay/1",
        "/broken",
        "/private/warm",
        "/limited/warm",
    ] {
        let _ = try_http("GET", proxy, path, &[], None);
    }

    Gateway {
        dir,
        _upstream: upstream,
        proc: gateway,
        proxy,
        status,
        dead,
        plugins,
    }
}

/// A Prometheus on a free port with the alert rules loaded, 1 s scrape and evaluation
/// intervals, scraping `scrape` (the gateway's status port) and/or accepting remote write.
pub fn start_prometheus(
    dir: &Path,
    prometheus_bin: &Path,
    scrape: Option<u16>,
    remote_write_receiver: bool,
) -> (Proc, u16) {
    let prom = free_port();
    let prom_config = dir.join("prometheus.yml");
    let rules = dashboards_dir().join("prometheus").join("alerts.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
rule_files:
- {rules}
{scrape}",
            rules = rules.display(),
            scrape = scrape
                .map(|p| format!(
                    "scrape_configs:\n- job_name: gateway\n  static_configs:\n  - targets: ['127.0.0.1:{p}']\n"
                ))
                .unwrap_or_default(),
        ),
    )
    .expect("write prometheus.yml");
    let prom_log = dir.join("prometheus.log");
    let mut cmd = Command::new(prometheus_bin);
    if remote_write_receiver {
        cmd.arg("--web.enable-remote-write-receiver");
    }
    let mut prometheus = Proc::spawn(
        "prometheus",
        cmd.arg(format!("--config.file={}", prom_config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom}"))
            .arg("--web.enable-lifecycle")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&prom_log).expect("prometheus log")),
    );
    let t0 = Instant::now();
    loop {
        prometheus.assert_running(&prom_log);
        if try_http("GET", prom, "/-/ready", &[], None).is_ok_and(|r| r.status == 200) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "Prometheus not ready after 30 s:\n{}",
            std::fs::read_to_string(&prom_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (prometheus, prom)
}

fn query(prom: u16, expr: &str) -> Value {
    let r = http(
        "GET",
        prom,
        &format!("/api/v1/query?query={}", urlencode(expr)),
        None,
    );
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("query `{expr}`: {e}: {}", r.body))
}

/// The query's samples when it succeeded, or the error.
pub fn samples(prom: u16, expr: &str) -> Result<Vec<Value>, String> {
    let v = query(prom, expr);
    if v["status"] != "success" {
        return Err(format!(
            "{}: {}",
            v["errorType"].as_str().unwrap_or("?"),
            v["error"].as_str().unwrap_or("?")
        ));
    }
    match v["data"]["resultType"].as_str() {
        Some("vector") | Some("matrix") => {
            Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
        }
        Some("scalar") => Ok(vec![v["data"]["result"].clone()]),
        other => Err(format!("unexpected result type {other:?}")),
    }
}

/// At least one sample with a number (NaN is "no data" in a panel).
fn has_number(samples: &[Value]) -> bool {
    samples.iter().any(|s| {
        let v = if s.is_array() { s } else { &s["value"] };
        v[1].as_str().is_some_and(|x| x != "NaN")
    })
}

fn label_values(samples: &[Value], label: &str) -> BTreeSet<String> {
    samples
        .iter()
        .filter_map(|s| s["metric"][label].as_str().map(str::to_string))
        .collect()
}

fn check(problems: &mut Vec<String>, cond: bool, what: String) {
    if !cond {
        problems.push(what);
    }
}

fn wait_for(prom: u16, expr: &str, what: &str, timeout: Duration) {
    wait_for_data(prom, expr, what, timeout, &String::new);
}

/// Polls `expr` until it returns a number; on timeout panics with `diagnostics()`.
pub fn wait_for_data(
    prom: u16,
    expr: &str,
    what: &str,
    timeout: Duration,
    diagnostics: &dyn Fn() -> String,
) {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if samples(prom, expr).is_ok_and(|s| has_number(&s)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!(
        "timed out after {timeout:?} waiting for {what} (`{expr}`)\n{}",
        diagnostics()
    );
}

/// Bounded traffic: 2xx, 4xx (404 unmatched, upstream 404), 5xx (upstream 500, 503 with no
/// healthy target), slow requests (p99 above 500 ms on one service), and with the plugins
/// the build has: 401 without a key, 200 with one, 429 over the limit.
pub fn drive_traffic(gw: &Gateway) {
    let proxy = gw.proxy;
    let get = move |path: &str, headers: &[(&str, &str)]| {
        let _ = try_http("GET", proxy, path, headers, None);
    };
    std::thread::scope(|scope| {
        // 100 slow requests, 10 at a time: > 0.1 req/s over the alert's 5m window.
        for _ in 0..10 {
            scope.spawn(move || {
                for _ in 0..10 {
                    get("/slow/delay/450", &[]);
                }
            });
        }
        for round in 0..4 {
            for i in 0..20 {
                get(&format!("/echo/ok/{round}/{i}"), &[]);
            }
            for _ in 0..5 {
                get("/echo/status/500", &[]);
            }
            for _ in 0..2 {
                get("/echo/status/404", &[]);
                get("/no-such-route", &[]);
                get("/broken", &[]);
            }
            if gw.plugins.contains("key-auth") {
                for _ in 0..3 {
                    get("/private/x", &[]);
                    get("/private/x", &[("apikey", "wrong-key")]);
                    get("/private/x", &[("apikey", "alice-key")]);
                }
            }
            if gw.plugins.contains("rate-limiting") {
                for _ in 0..5 {
                    get("/limited/x", &[]);
                }
            }
            std::thread::sleep(Duration::from_millis(900));
        }
    });
}

/// What evaluating the dashboards and rules found.
pub struct Evaluation {
    pub problems: Vec<String>,
    pub skipped: Vec<String>,
    pub evaluated: usize,
    /// Each alert rule's result (the alerts it would raise now, before `for`).
    pub rules: BTreeMap<String, Vec<Value>>,
}

impl Evaluation {
    pub fn check(&mut self, cond: bool, what: String) {
        check(&mut self.problems, cond, what);
    }

    pub fn labels_of(&self, alert: &str, label: &str) -> BTreeSet<String> {
        self.rules
            .get(alert)
            .map(|r| label_values(r, label))
            .unwrap_or_default()
    }

    pub fn fires(&self, alert: &str) -> bool {
        self.rules.get(alert).is_some_and(|r| !r.is_empty())
    }

    pub fn finish(self, what: &str, started: Instant, plugins: &BTreeSet<&str>) {
        eprintln!(
            "{what}: evaluated {} expressions in {:?}; plugins in traffic: {plugins:?}; panels allowed empty: {}",
            self.evaluated,
            started.elapsed(),
            if self.skipped.is_empty() {
                "none".to_string()
            } else {
                self.skipped.join(", ")
            }
        );
        assert!(
            self.problems.is_empty(),
            "{what}: {} problem(s):\n{}",
            self.problems.len(),
            self.problems.join("\n")
        );
    }
}

/// Evaluates every template-variable query and panel target of the dashboards, and every
/// alert rule. All must be valid. The panels of the dashboards in `with_data` must return
/// data, except those that use a gateway series the gateway does not expose, those
/// that need a plugin the build lacks, and `exempt` ((dashboard, panel title, reason)).
pub fn evaluate(
    prom: u16,
    gw: &Gateway,
    with_data: &[&str],
    exempt: &[(&str, &str, &str)],
) -> Evaluation {
    let exposition = http("GET", gw.status, "/metrics", None).body;
    let exposed = |name: &str| {
        exposition
            .lines()
            .any(|l| !l.starts_with('#') && l.starts_with(name))
    };
    let mut ev = Evaluation {
        problems: Vec::new(),
        skipped: Vec::new(),
        evaluated: 0,
        rules: BTreeMap::new(),
    };

    for name in DASHBOARDS {
        let d = load_dashboard(name);
        let needs_data = with_data.contains(name);
        let var_names: Vec<String> = variables(&d)
            .iter()
            .filter_map(|v| v["name"].as_str().map(str::to_string))
            .collect();
        for v in variables(&d) {
            if v["type"] != "query" {
                continue;
            }
            let Some(q) = variable_query(v) else { continue };
            // label_values(<selector>, <label>) -> count by (<label>) (<selector>)
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .unwrap_or_else(|| panic!("{name}: variable query `{q}`"));
            let (sel, label) = inner
                .rsplit_once(',')
                .unwrap_or_else(|| panic!("{name}: variable query `{q}` has no label"));
            let expr = substitute(
                &format!("count by ({}) ({})", label.trim(), sel.trim()),
                &var_names,
            );
            ev.evaluated += 1;
            match samples(prom, &expr) {
                Err(e) => ev
                    .problems
                    .push(format!("{name}: variable {}: `{expr}`: {e}", v["name"])),
                Ok(r) if needs_data && r.is_empty() => ev.problems.push(format!(
                    "{name}: variable {} has no values: `{expr}`",
                    v["name"]
                )),
                Ok(_) => {}
            }
        }
        let exprs = panel_exprs(name, &d);
        let mut titles: Vec<&str> = exprs.iter().map(|e| e.panel.as_str()).collect();
        titles.dedup();
        for title in titles {
            let mut panel_has_data = false;
            let mut pending: Vec<&str> = Vec::new();
            for e in exprs.iter().filter(|e| e.panel == title) {
                let expr = substitute(&e.expr, &var_names);
                ev.evaluated += 1;
                match samples(prom, &expr) {
                    Err(err) => ev.problems.push(format!(
                        "{}: panel `{}` {}: `{expr}`: {err}",
                        e.dashboard, e.panel, e.ref_id
                    )),
                    Ok(r) => panel_has_data |= has_number(&r),
                }
                pending.extend(
                    PENDING_METRICS
                        .iter()
                        .filter(|m| e.expr.contains(*m) && !exposed(m)),
                );
            }
            if !needs_data || panel_has_data {
                continue;
            }
            let needs_plugin = PLUGIN_PANELS
                .iter()
                .find(|(t, p)| *t == title && !gw.plugins.contains(p));
            let exempted = exempt.iter().find(|(d, t, _)| d == name && *t == title);
            if !pending.is_empty() {
                ev.skipped.push(format!(
                    "{name}: `{title}` (this gateway exposes no {pending:?} series in this run)"
                ));
            } else if let Some((_, p)) = needs_plugin {
                ev.skipped.push(format!(
                    "{name}: `{title}` (gateway build lacks plugin {p})"
                ));
            } else if let Some((_, _, why)) = exempted {
                ev.skipped.push(format!("{name}: `{title}` ({why})"));
            } else {
                ev.problems
                    .push(format!("{name}: panel `{title}` returned no data"));
            }
        }
    }

    let rules = load_rules();
    for r in &rules {
        ev.evaluated += 1;
        match samples(prom, &r.expr) {
            Err(e) => ev
                .problems
                .push(format!("rule {}/{}: {e}", r.group, r.name)),
            Ok(res) => {
                ev.rules.insert(r.name.clone(), res);
            }
        }
    }

    // Prometheus itself loaded and evaluated every rule without error.
    let v: Value =
        serde_json::from_str(&http("GET", prom, "/api/v1/rules", None).body).expect("rules JSON");
    let mut loaded = 0;
    for g in v["data"]["groups"].as_array().into_iter().flatten() {
        for r in g["rules"].as_array().into_iter().flatten() {
            loaded += 1;
            if r["health"] != "ok" {
                ev.problems.push(format!(
                    "Prometheus rule {}: health {} {}",
                    r["name"], r["health"], r["lastError"]
                ));
            }
        }
    }
    ev.check(
        loaded == rules.len(),
        format!(
            "Prometheus loaded {loaded} rules, alerts.yml has {}",
            rules.len()
        ),
    );
    ev
}

/// The alerts Prometheus has pending or firing.
pub fn active_alerts(prom: u16) -> BTreeSet<String> {
    let v: Value =
        serde_json::from_str(&http("GET", prom, "/api/v1/alerts", None).body).expect("alerts JSON");
    v["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_string))
        .collect()
}

/// The rules evaluated on the test traffic select what they should.
pub fn check_gateway_alerts(ev: &mut Evaluation, gw: &Gateway) {
    let no_healthy = ev.labels_of("GatewayNoHealthyTargets", "upstream");
    ev.check(
        no_healthy.contains("dead-upstream") && !no_healthy.contains("echo-upstream"),
        format!("GatewayNoHealthyTargets should select dead-upstream only: {no_healthy:?}"),
    );
    let unhealthy = ev.labels_of("GatewayTargetUnhealthy", "target");
    let dead: Vec<String> = gw.dead.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    ev.check(
        dead.iter().all(|d| unhealthy.contains(d)) && unhealthy.len() == 2,
        format!(
            "GatewayTargetUnhealthy should select the two dead targets {dead:?}: {unhealthy:?}"
        ),
    );
    let high5xx = ev.labels_of("GatewayHigh5xxRate", "service");
    ev.check(
        high5xx.contains("echo") && !high5xx.contains("slow"),
        format!("GatewayHigh5xxRate should select service echo (18% 5xx), not slow: {high5xx:?}"),
    );
    let slow = ev.labels_of("GatewayHighP99Latency", "service");
    ev.check(
        slow.contains("slow") && !slow.contains("echo"),
        format!("GatewayHighP99Latency should select service slow only: {slow:?}"),
    );
    let fires = ev.fires("GatewayConfigReloadFailed");
    ev.check(
        fires,
        "GatewayConfigReloadFailed should fire after the rejected POST /config".into(),
    );
    let fires = ev.fires("ScrapeTargetDown");
    ev.check(
        !fires,
        "ScrapeTargetDown should not fire: every target is up".into(),
    );
    let fires = ev.fires("GatewayRedisUnreachable");
    ev.check(
        !fires,
        "GatewayRedisUnreachable should not fire: Redis is up or not used".into(),
    );
}

#[test]
fn live_prometheus_evaluates_every_panel_and_rule() {
    let Some(prometheus_bin) = tool("prometheus", "PROMETHEUS") else {
        return;
    };
    let started = Instant::now();
    let mut gw = start_gateway(None);
    let (mut prometheus, prom) =
        start_prometheus(gw.dir.path(), &prometheus_bin, Some(gw.status), false);

    // The dead targets must be unhealthy before the traffic (the 503s need it).
    wait_for(
        prom,
        &format!(
            "kong_upstream_target_health{{target=\"127.0.0.1:{}\", state=\"unhealthy\"}} == 1",
            gw.dead[1]
        ),
        "the dead target to be scraped as unhealthy",
        Duration::from_secs(20),
    );
    drive_traffic(&gw);
    // Three more scrapes after the last request, and the rules evaluated on them.
    let settle = Instant::now();
    wait_for(
        prom,
        "sum(rate(kong_http_requests_total{code=\"500\"}[1m])) > 0",
        "the 500s to be scraped",
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_secs(3).saturating_sub(settle.elapsed()));
    gw.proc.assert_running(&gw.log());
    prometheus.assert_running(&gw.dir.path().join("prometheus.log"));

    let mut ev = evaluate(
        prom,
        &gw,
        &["gateway-overview"],
        &[(
            "gateway-overview",
            "Redis reachable from gateway",
            "rate limiting is local here: no Redis calls",
        )],
    );
    check_gateway_alerts(&mut ev, &gw);
    let active = active_alerts(prom);
    ev.check(
        active.contains("GatewayNoHealthyTargets"),
        format!("GatewayNoHealthyTargets not pending in Prometheus: active {active:?}"),
    );
    ev.finish("gateway scraped by Prometheus", started, &gw.plugins);
}
