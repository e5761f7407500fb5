//! The production data path: the metrics-agent scrapes the gateway and collects ECS (a fake
//! task metadata endpoint), PostgreSQL and Redis (real servers), and remote-writes to a
//! real Prometheus. Every panel of every dashboard must then return data, except the few
//! documented exemptions. This also pins the dashboards to the names the agent emits.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::live::*;
use crate::support::*;
use test_support::postgres::{Postgres, find_postgres_bin, start_postgres_with};
use test_support::redis::redis_server_with;

/// Panels that stay empty on this path, with the reason.
const AGENT_PATH_EXEMPT: &[(&str, &str, &str)] = &[
    (
        "database",
        "Last backup age",
        "rds_latest_backup_age_seconds comes from a scheduled job, not the agent",
    ),
    (
        "database",
        "Backup age",
        "rds_latest_backup_age_seconds comes from a scheduled job, not the agent",
    ),
    (
        "redis",
        "Gateway Redis errors / s by kind",
        "none while Redis is up; checked after it stops",
    ),
    (
        "redis",
        "Rate-limit decisions without Redis / s",
        "none while Redis is up; checked after it stops",
    ),
];

/// Panels that must have data once Redis is down (with rate limiting in Redis).
const REDIS_DOWN_PANELS: &[(&str, &str)] = &[
    ("redis", "Gateway Redis errors / s by kind"),
    ("redis", "Rate-limit decisions without Redis / s"),
    (
        "gateway-overview",
        "Rate-limit decisions / s by tier and outcome",
    ),
];

/// PostgreSQL with `pg_stat_statements` created (the collector reads it).
fn start_postgres(initdb: &Path) -> Postgres {
    let pg = start_postgres_with(initdb);
    let psql = initdb.with_file_name("psql");
    let t0 = Instant::now();
    loop {
        let out = Command::new(&psql)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .output()
            .expect("run psql");
        if out.status.success() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "CREATE EXTENSION pg_stat_statements failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    pg
}

/// A `redis-server` with a memory limit (the dashboards show it).
fn start_redis() -> (Proc, u16) {
    let port = free_port();
    let proc = redis_server_with(
        port,
        &["--maxmemory", "64mb", "--maxmemory-policy", "volatile-lru"],
    );
    (proc, port)
}

/// Sends inline Redis commands on one connection and reads until Redis closes it.
fn redis_batch(port: u16, commands: &[String]) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut text = commands.join("\r\n");
    text.push_str("\r\nQUIT\r\n");
    let _ = s.write_all(text.as_bytes());
    let _ = s.shutdown(Shutdown::Write);
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
}

/// A fake ECS task metadata endpoint v4 (`<base>/task`, `<base>/task/stats`) for one
/// Fargate task with the gateway and the metrics-agent. CPU and network counters grow
/// with time (about 0.17 vCPU of a 0.5 vCPU task).
fn fake_ecs_metadata() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake ECS endpoint");
    let port = listener.local_addr().expect("local addr").port();
    let t0 = Instant::now();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 2048];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let head = String::from_utf8_lossy(&buf).to_string();
            let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
            let secs = t0.elapsed().as_secs_f64() + 60.0;
            let body = if path.ends_with("/task/stats") {
                ecs_stats(secs)
            } else if path.ends_with("/task") {
                ecs_task()
            } else {
                serde_json::Value::Null
            };
            let (code, body) = if body.is_null() {
                ("404 Not Found", String::new())
            } else {
                ("200 OK", body.to_string())
            };
            let _ = conn.write_all(
                format!(
                    "HTTP/1.1 {code}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    port
}

fn ecs_task() -> serde_json::Value {
    let container = |id: &str, name: &str, cpu: u32, mem: u32| {
        json!({
            "DockerId": id, "Name": name, "DockerName": name, "Type": "NORMAL",
            "DesiredStatus": "RUNNING", "KnownStatus": "RUNNING",
            "Limits": {"CPU": cpu, "Memory": mem}, "RestartCount": 0,
            "Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": ["10.0.1.23"]}]
        })
    };
    json!({
        "Cluster": "arn:aws:ecs:eu-west-1:123456789012:cluster/edge-test",
        "TaskARN": "arn:aws:ecs:eu-west-1:123456789012:task/edge-test/5f2c0d9e8b7a4c3d9e8f7a6b5c4d3e2f",
        "Family": "edge-gateway", "Revision": "7",
        "DesiredStatus": "RUNNING", "KnownStatus": "RUNNING",
        "Limits": {"CPU": 0.5, "Memory": 1024},
        "AvailabilityZone": "eu-west-1a", "LaunchType": "FARGATE",
        "Containers": [
            container("5f2c0d9e-gateway", "gateway", 384, 768),
            container("5f2c0d9e-agent", "metrics-agent", 128, 256),
        ],
        "EphemeralStorageMetrics": {"Utilized": 120, "Reserved": 20496}
    })
}

fn ecs_stats(secs: f64) -> serde_json::Value {
    const MIB: f64 = 1024.0 * 1024.0;
    let net = json!({"eth1": {
        "rx_bytes": (secs * 50_000.0).round(), "rx_packets": (secs * 40.0).round(),
        "rx_errors": 0, "rx_dropped": 0,
        "tx_bytes": (secs * 80_000.0).round(), "tx_packets": (secs * 45.0).round(),
        "tx_errors": 0, "tx_dropped": 0
    }});
    let stats = |vcpu: f64, usage_mib: f64, limit_mib: f64| {
        let ns = (secs * vcpu * 1e9).round();
        json!({
            "cpu_stats": {"cpu_usage": {"total_usage": ns, "usage_in_kernelmode": (ns * 0.2).round(), "usage_in_usermode": (ns * 0.8).round()}},
            "memory_stats": {
                "usage": usage_mib * MIB, "limit": limit_mib * MIB,
                "stats": {"anon": usage_mib * 0.8 * MIB, "file": usage_mib * 0.2 * MIB, "inactive_file": usage_mib * 0.1 * MIB}
            },
            "networks": net.clone()
        })
    };
    json!({
        "5f2c0d9e-gateway": stats(0.15, 300.0, 768.0),
        "5f2c0d9e-agent": stats(0.02, 40.0, 256.0),
    })
}

#[test]
fn metrics_agent_path_fills_every_dashboard() {
    let Some(prometheus_bin) = tool("prometheus", "PROMETHEUS") else {
        return;
    };
    // Started by test-support's helper, which honours $REDIS_SERVER as `tool` does.
    if tool("redis-server", "REDIS_SERVER").is_none() {
        return;
    }
    let Some(initdb) = find_postgres_bin("initdb") else {
        assert!(
            !in_ci(),
            "initdb not found (PATH, /usr/lib/postgresql/*/bin); CI must install postgresql: bash .ci/deps/dashboards.sh"
        );
        eprintln!(
            "SKIPPED: initdb not found; install postgresql with `bash .ci/deps/dashboards.sh`"
        );
        return;
    };
    let agent_bin = workspace_bin("metrics-agent", "metrics-agent");
    let started = Instant::now();

    let (mut redis, redis_port) = start_redis();
    let mut gw = start_gateway(Some(redis_port));
    let dir = gw.dir.path().to_path_buf();
    let mut pg = start_postgres(&initdb);
    let ecs = fake_ecs_metadata();
    let (mut prometheus, prom) = start_prometheus(&dir, &prometheus_bin, None, true);

    // The agent as in the gateway task: scrape the gateway, collect ECS, PostgreSQL and
    // Redis, remote-write everything.
    let agent_config = dir.join("agent.yml");
    std::fs::write(
        &agent_config,
        format!(
            "global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  external_labels: {{env: suite-test}}
scrape_configs:
- job_name: gateway
  static_configs:
  - targets: ['127.0.0.1:{status}']
remote_write:
- name: prometheus
  url: http://127.0.0.1:{prom}/api/v1/write
",
            status = gw.status
        ),
    )
    .expect("write agent config");
    let agent_log = dir.join("metrics-agent.log");
    let mut agent = Proc::spawn(
        "metrics-agent",
        Command::new(&agent_bin)
            .arg("run")
            .arg("--config")
            .arg(&agent_config)
            .arg("--wal-dir")
            .arg(dir.join("wal"))
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args([
                "--ecs-metadata-uri",
                &format!("http://127.0.0.1:{ecs}/v4/5f2c0d9e"),
            ])
            .args([
                "--postgres",
                &format!(
                    "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
                    pg.port
                ),
            ])
            .args(["--redis", &format!("127.0.0.1:{redis_port}")])
            .args(["--collector-interval", "1s"])
            .env_remove("ECS_CONTAINER_METADATA_URI_V4")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&agent_log).expect("agent log")),
    );

    let wait = |expr: &str, what: &str| {
        wait_for_data(prom, expr, what, Duration::from_secs(30), &|| {
            format!(
                "up: {:?}\nseries of job gateway: {:?}\nagent log:\n{}\nprometheus log:\n{}",
                samples(prom, "up"),
                samples(prom, "count by (__name__) ({job=\"gateway\"})"),
                std::fs::read_to_string(&agent_log).unwrap_or_default(),
                std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
            )
        })
    };
    wait("redis_up == 1", "redis_up from the agent");
    wait("pg_up == 1", "pg_up from the agent");
    wait("ecs_task_metadata_info", "ECS series from the agent");
    wait(
        &format!(
            "kong_upstream_target_health{{target=\"127.0.0.1:{}\", state=\"unhealthy\"}} == 1",
            gw.dead[1]
        ),
        "the dead target to arrive as unhealthy",
    );

    // Gateway traffic, and Redis hits and misses alongside it.
    let done = std::sync::atomic::AtomicBool::new(false);
    let done = &done;
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut i = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let cmds: Vec<String> = (i..i + 20)
                    .flat_map(|k| {
                        [
                            format!("SET rl:{k} 1 EX 60"),
                            format!("GET rl:{k}"),
                            format!("GET missing:{k}"),
                        ]
                    })
                    .collect();
                redis_batch(redis_port, &cmds);
                i += 20;
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        drive_traffic(&gw);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let settle = Instant::now();
    wait(
        "sum(rate(kong_http_requests_total{code=\"500\"}[1m])) > 0",
        "the 500s to arrive",
    );
    std::thread::sleep(Duration::from_secs(3).saturating_sub(settle.elapsed()));
    gw.proc.assert_running(&gw.log());
    agent.assert_running(&agent_log);
    prometheus.assert_running(&dir.join("prometheus.log"));
    redis.assert_running(&agent_log);
    pg.proc.assert_running(&agent_log);

    let mut ev = evaluate(prom, &gw, DASHBOARDS, AGENT_PATH_EXEMPT);
    check_gateway_alerts(&mut ev, &gw);
    for quiet in [
        "RedisDown",
        "PostgresDown",
        "EcsTaskHighCpu",
        "EcsTaskHighMemory",
        "PostgresConnectionsHigh",
        "RedisMemoryHigh",
        "GatewayRedisUnreachable",
    ] {
        let fires = ev.fires(quiet);
        ev.check(!fires, format!("{quiet} fires on a healthy stack"));
    }

    // The ECS percentages match what the fake task reports: 0.17 of 0.5 vCPU, and a
    // working set of 0.9 x (300 + 40) MiB of 1024 MiB.
    for (title, want, tolerance) in [
        ("Highest task CPU", 34.0, 8.0),
        ("Highest task memory", 0.9 * 340.0 / 1024.0 * 100.0, 0.5),
    ] {
        let got = panel_value(prom, "ecs-tasks", title);
        ev.check(
            (got - want).abs() <= tolerance,
            format!("ecs-tasks `{title}` = {got}, expected {want} ± {tolerance}"),
        );
    }

    // Redis goes away: redis_up turns 0 and RedisDown's expression selects it; the
    // gateway (when it rate-limits in Redis) notices on its next decision.
    drop(redis);
    let gateway_uses_redis = http("GET", gw.status, "/metrics", None)
        .body
        .contains("gateway_redis_up");
    if gateway_uses_redis {
        for _ in 0..3 {
            let _ = try_http("GET", gw.proxy, "/limited/after-redis", &[], None);
        }
    }
    wait("redis_up == 0", "redis_up 0 after redis-server stopped");
    let down = samples(prom, &rule_expr("RedisDown")).unwrap_or_default();
    ev.check(
        down.len() == 1 && down[0]["metric"]["instance"] == format!("127.0.0.1:{redis_port}"),
        format!("RedisDown should select the stopped Redis: {down:?}"),
    );
    if gateway_uses_redis {
        wait(
            "gateway_redis_up == 0",
            "gateway_redis_up 0 after redis-server stopped",
        );
        // More decisions without Redis, and two more scrapes: rate() needs two samples.
        for _ in 0..3 {
            let _ = try_http("GET", gw.proxy, "/limited/after-redis", &[], None);
        }
        std::thread::sleep(Duration::from_millis(2500));
        for (dashboard, title) in REDIS_DOWN_PANELS {
            let got = panel_value(prom, dashboard, title);
            ev.check(
                !got.is_nan(),
                format!("{dashboard}: `{title}` has no data after Redis stopped"),
            );
        }
        let unreachable = samples(prom, &rule_expr("GatewayRedisUnreachable")).unwrap_or_default();
        ev.check(
            unreachable.len() == 1,
            format!("GatewayRedisUnreachable should select the gateway: {unreachable:?}"),
        );
    } else {
        eprintln!(
            "note: the gateway does not rate-limit in Redis yet: GatewayRedisUnreachable not exercised"
        );
    }
    ev.finish(
        "gateway, ECS, PostgreSQL and Redis through the metrics-agent",
        started,
        &gw.plugins,
    );
}

fn rule_expr(name: &str) -> String {
    load_rules()
        .into_iter()
        .find(|r| r.name == name)
        .map(|r| r.expr)
        .unwrap_or_else(|| panic!("no rule {name}"))
}

/// The first number a panel's targets return now (rates over the last 5 s), or NaN.
fn panel_value(prom: u16, dashboard: &str, title: &str) -> f64 {
    let d = load_dashboard(dashboard);
    let names: Vec<String> = variables(&d)
        .iter()
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect();
    let exprs: Vec<PanelExpr> = panel_exprs(dashboard, &d)
        .into_iter()
        .filter(|e| e.panel == title)
        .collect();
    assert!(!exprs.is_empty(), "{dashboard}: no panel `{title}`");
    exprs
        .iter()
        .flat_map(|e| {
            // A short window: the series are only seconds old, and rate() over a longer
            // window than the data divides by the whole window.
            let expr = substitute(&e.expr, &names).replace("[1m]", "[5s]");
            samples(prom, &expr).unwrap_or_default()
        })
        .filter_map(|s| s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()))
        .find(|v| !v.is_nan())
        .unwrap_or(f64::NAN)
}
