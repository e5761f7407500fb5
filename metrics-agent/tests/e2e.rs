//! End-to-end tests with real parts: a real Prometheus (remote-write receiver with an
//! out-of-order window), synthetic targets, Prometheus' own /metrics as a real exporter, the
//! ECS v4 fixture server and a real Redis. The agent runs as its own process.
//!
//! To add the gateway as a target later, append another `static_configs` entry in `config()`.

mod common;

use common::*;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn config(
    path: &Path,
    remote: &str,
    targets: &[(&str, u16)],
    extra_jobs: &str,
) -> std::path::PathBuf {
    let mut jobs = String::new();
    for (job, port) in targets {
        jobs.push_str(&format!(
            "  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n        labels: {{tier: test}}\n"
        ));
    }
    let text = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  external_labels: {{cluster: e2e}}\n\
scrape_configs:\n{jobs}{extra_jobs}\
remote_write:\n  - url: {remote}\n    name: prom\n    queue_config: {{max_shards: 2, max_samples_per_send: 500, min_backoff: 50ms, max_backoff: 500ms}}\n"
    );
    let file = path.join("agent.yml");
    std::fs::write(&file, text).expect("write config");
    file
}

/// The samples of `selector` between `from_ms` and `to_ms` have no hole longer than `max_ms`.
fn assert_no_gap(
    prom: &Prometheus,
    selector: &str,
    from_ms: i64,
    to_ms: i64,
    max_ms: i64,
) -> usize {
    let all = prom.raw_samples(selector, "10m");
    let window: Vec<(i64, f64)> = all
        .iter()
        .copied()
        .filter(|(t, _)| *t >= from_ms && *t <= to_ms)
        .collect();
    assert!(!window.is_empty(), "no samples of {selector} in the window");
    assert!(
        window[0].0 - from_ms <= max_ms,
        "{selector}: first sample {} ms after window start",
        window[0].0 - from_ms
    );
    assert!(
        to_ms - window[window.len() - 1].0 <= max_ms,
        "{selector}: last sample too early"
    );
    let gap = max_gap(&window);
    assert!(
        gap <= max_ms,
        "{selector}: gap of {gap} ms in {:?}",
        window.iter().map(|s| s.0).collect::<Vec<_>>()
    );
    window.len()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[test]
fn ships_scraped_collected_and_synthetic_series_with_labels() {
    let dir = tempfile::tempdir().expect("tmp");
    let prom = Prometheus::start(&dir.path().join("prom"));
    let text = Target::start(Flavor::TextGzip);
    let om = Target::start(Flavor::OpenMetrics);
    let ecs = EcsFixture::start();
    let redis = test_support::redis::start_redis();
    let redis_port = redis.port;
    // Prometheus' own /metrics is a real exporter; relabel and metric_relabel act on it.
    let prom_job = format!(
        "  - job_name: prometheus\n    static_configs: [{{targets: ['127.0.0.1:{}']}}]\n    relabel_configs:\n      - {{source_labels: [__address__], regex: '(.*):.*', target_label: host}}\n    metric_relabel_configs:\n      - {{source_labels: [__name__], regex: 'prometheus_build_info|prometheus_ready', action: keep}}\n",
        prom.port
    );
    let cfg = config(
        dir.path(),
        &prom.write_url(),
        &[("synthetic", text.port), ("openmetrics", om.port)],
        &prom_job,
    );
    // Environment references: the task id comes from the ECS metadata endpoint, a variable
    // that is not set falls back to its default.
    let text_cfg = std::fs::read_to_string(&cfg).expect("read config").replace(
        "external_labels: {cluster: e2e}",
        "external_labels: {cluster: e2e, ecs_task_id: '${ECS_TASK_ID}', zone: '${E2E_ZONE_UNSET:-local}'}",
    );
    std::fs::write(&cfg, text_cfg).expect("write config");
    let agent = Agent::start(
        &cfg,
        &dir.path().join("wal"),
        &[
            "--redis",
            &format!("127.0.0.1:{redis_port}"),
            "--collector-interval",
            "1s",
        ],
        &[
            ("ECS_CONTAINER_METADATA_URI_V4", &ecs.uri()),
            // The ECS image's whole-file ${NAME} expansion (off by default, as in Prometheus).
            ("METRICS_AGENT_EXPAND_ENV", "true"),
        ],
    );

    wait_until("samples in prometheus", Duration::from_secs(30), || {
        prom.scalar("synthetic_requests_total{job=\"synthetic\"}")
            .is_some()
            && prom
                .scalar("synthetic_requests_total{job=\"openmetrics\"}")
                .is_some()
            && prom.scalar("ecs_container_memory_usage_bytes").is_some()
            && prom.scalar("redis_up").is_some()
            && prom.scalar("prometheus_build_info").is_some()
    });

    // Labels: target labels, instance, job, external labels; escaped label values survive.
    let r = prom.query("synthetic_requests_total{job=\"synthetic\"}");
    let m = &r[0]["metric"];
    assert_eq!(m["instance"], format!("127.0.0.1:{}", text.port));
    assert_eq!(m["tier"], "test");
    assert_eq!(m["cluster"], "e2e");
    assert_eq!(m["ecs_task_id"], "04d558ed038d41bb9de115aab248e4f9");
    assert_eq!(m["zone"], "local");
    assert_eq!(m["path"], "/a");
    let temp = prom.query("synthetic_temperature_celsius{job=\"synthetic\"}");
    assert_eq!(temp[0]["metric"]["room"], "lab \"1\"");
    assert_eq!(temp[0]["value"][1], "21.5");

    // Counter values are exactly what the target served: each scrape increments by one.
    wait_until("three scrapes shipped", Duration::from_secs(15), || {
        prom.raw_samples("synthetic_requests_total{job=\"synthetic\"}", "1m")
            .len()
            >= 3
    });
    let samples = prom.raw_samples("synthetic_requests_total{job=\"synthetic\"}", "1m");
    for w in samples.windows(2) {
        assert_eq!(
            w[1].1 - w[0].1,
            1.0,
            "counter must advance by one per scrape: {samples:?}"
        );
    }
    assert!(samples.last().expect("some").1 <= text.scrapes.load(Ordering::SeqCst) as f64);

    // OpenMetrics target (exemplar stripped) also ships.
    assert!(
        prom.scalar("synthetic_requests_total{job=\"openmetrics\"}")
            .expect("om")
            >= 1.0
    );

    // Report series like Prometheus.
    assert_eq!(prom.scalar("up{job=\"synthetic\"}"), Some(1.0));
    assert!(
        prom.scalar("scrape_duration_seconds{job=\"synthetic\"}")
            .is_some()
    );
    assert_eq!(
        prom.scalar("scrape_samples_scraped{job=\"synthetic\"}"),
        Some(3.0)
    );

    // Relabeling on a real exporter: only the kept metrics, with the derived label.
    assert_eq!(
        prom.query("{job=\"prometheus\",__name__=~\"prometheus_tsdb.*\"}")
            .len(),
        0
    );
    let b = prom.query("prometheus_build_info{job=\"prometheus\"}");
    assert_eq!(b[0]["metric"]["host"], "127.0.0.1");

    // ECS: fixture values, identity labels, awsvpc network counted once.
    let mem = prom.query("ecs_container_memory_usage_bytes{container_name=\"app\"}");
    assert_eq!(mem[0]["value"][1], "40611840");
    assert_eq!(mem[0]["metric"]["ecs_cluster"], "edge-prod");
    assert_eq!(mem[0]["metric"]["ecs_task_family"], "gateway");
    assert_eq!(mem[0]["metric"]["availability_zone"], "us-east-1a");
    assert_eq!(mem[0]["metric"]["job"], "ecs");
    let net = prom.query("ecs_network_receive_bytes_total");
    assert_eq!(net.len(), 1, "{net:?}");
    assert_eq!(net[0]["value"][1], "12906990");
    assert_eq!(prom.query("ecs_container_cpu_usage_seconds_total").len(), 2);

    // Redis via the agent.
    assert_eq!(prom.scalar("redis_up{job=\"redis\"}"), Some(1.0));

    // Staleness: when a series disappears from the target, a stale marker ends it at once
    // (without it Prometheus would keep returning it for 5 minutes).
    assert_eq!(
        prom.scalar("synthetic_flappy{job=\"synthetic\"}"),
        Some(1.0)
    );
    text.flappy.store(false, Ordering::SeqCst);
    wait_until(
        "synthetic_flappy to go stale",
        Duration::from_secs(15),
        || prom.query("synthetic_flappy{job=\"synthetic\"}").is_empty(),
    );
    assert!(
        !prom
            .query("synthetic_requests_total{job=\"synthetic\"}")
            .is_empty()
    );

    // Own endpoints.
    assert!(
        agent
            .self_metric(
                "metrics_agent_remote_write_samples_sent_total",
                &[("remote", "prom")]
            )
            .unwrap_or(0.0)
            > 0.0
    );
    assert_eq!(
        http_get(agent.listen_port, "/ready").map(|r| r.0),
        Some(200)
    );
}

// dup: each test spells out its own setup and checks (reads alone when it fails).
#[test]
fn receiver_outage_leaves_no_gap() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut prom = Prometheus::start(&dir.path().join("prom"));
    let t = Target::start(Flavor::TextGzip);
    let cfg = config(dir.path(), &prom.write_url(), &[("synthetic", t.port)], "");
    let agent = Agent::start(&cfg, &dir.path().join("wal"), &[], &[]);
    let sel = "synthetic_requests_total{job=\"synthetic\"}";
    wait_until("first samples", Duration::from_secs(60), || {
        prom.scalar(sel).is_some()
    });
    let start = now_ms();
    std::thread::sleep(Duration::from_secs(2));
    prom.stop();
    std::thread::sleep(Duration::from_secs(6));
    prom.restart();
    std::thread::sleep(Duration::from_secs(2));
    let end = now_ms();
    // Wait for the backlog to drain, then check every second of the window is there.
    wait_until("backlog sent", Duration::from_secs(30), || {
        prom.raw_samples(sel, "2m")
            .last()
            .is_some_and(|s| s.0 >= end)
    });
    let n = assert_no_gap(&prom, sel, start, end, 2500);
    assert!(n >= 8, "only {n} samples over a 10 s window");
    assert!(
        agent
            .self_metric(
                "metrics_agent_remote_write_retries_total",
                &[("remote", "prom")]
            )
            .unwrap_or(0.0)
            > 0.0
    );
    assert_eq!(
        agent.self_metric(
            "metrics_agent_wal_dropped_samples_total",
            &[("remote", "prom"), ("reason", "wal_full")]
        ),
        None
    );
}

// dup: each test spells out its own setup and checks (reads alone when it fails).
#[test]
fn agent_sigkill_during_outage_loses_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut prom = Prometheus::start(&dir.path().join("prom"));
    let t = Target::start(Flavor::TextGzip);
    let cfg = config(dir.path(), &prom.write_url(), &[("synthetic", t.port)], "");
    let mut agent = Agent::start(&cfg, &dir.path().join("wal"), &[], &[]);
    let sel = "synthetic_requests_total{job=\"synthetic\"}";
    wait_until("first samples", Duration::from_secs(60), || {
        prom.scalar(sel).is_some()
    });
    let start = now_ms();
    std::thread::sleep(Duration::from_secs(1));
    // Receiver down: everything scraped from now on is only in the agent's WAL ...
    prom.stop();
    std::thread::sleep(Duration::from_secs(5));
    // ... when the agent is killed without warning, and started again on the same WAL.
    agent.kill9();
    agent.spawn();
    std::thread::sleep(Duration::from_secs(2));
    prom.restart();
    std::thread::sleep(Duration::from_secs(2));
    let end = now_ms();
    wait_until("backlog sent", Duration::from_secs(30), || {
        prom.raw_samples(sel, "2m")
            .last()
            .is_some_and(|s| s.0 >= end)
    });
    // The only hole allowed is the restart itself (well under 2.5 s at a 1 s interval).
    let n = assert_no_gap(&prom, sel, start, end, 2500);
    assert!(
        n >= 8,
        "only {n} samples over a 10 s window:\n{}",
        agent.log()
    );
    assert!(
        agent
            .self_metric(
                "metrics_agent_wal_replayed_samples_total",
                &[("remote", "prom")]
            )
            .unwrap_or(0.0)
            > 0.0
    );
}

#[test]
fn wal_size_cap_is_respected_and_drops_are_reported() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = Target::start(Flavor::Bulk(3000));
    // Nothing listens here: every send fails and the WAL only grows.
    let dead = format!("http://127.0.0.1:{}/api/v1/write", free_port());
    let cfg = config(dir.path(), &dead, &[("bulk", t.port)], "");
    let wal = dir.path().join("wal");
    let mut agent = Agent::start(
        &cfg,
        &wal,
        &["--wal-max-size", "256KiB", "--wal-segment-size", "64KiB"],
        &[],
    );
    let wal_bytes = || -> u64 {
        std::fs::read_dir(wal.join("prom"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                    .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0)
    };
    let mut peak = 0;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(200));
        peak = peak.max(wal_bytes());
    }
    // One segment of slack: the cap is enforced right after each append.
    assert!(peak <= 256 * 1024 + 64 * 1024, "WAL reached {peak} bytes");
    assert!(peak > 128 * 1024, "WAL never filled up ({peak} bytes)");
    let dropped = agent
        .self_metric(
            "metrics_agent_wal_dropped_samples_total",
            &[("remote", "prom"), ("reason", "wal_full")],
        )
        .unwrap_or(0.0);
    assert!(dropped > 0.0, "no drops reported:\n{}", agent.log());
    assert!(t.scrapes.load(Ordering::SeqCst) >= 5);
    assert!(
        agent.terminate(),
        "agent did not exit cleanly on SIGTERM:\n{}",
        agent.log()
    );
}

/// `metrics-agent check --config <file> [extra]`, with E2E_REMOTE_URL_UNSET removed from its
/// environment.
fn check_with(file: &Path, extra: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_metrics-agent"))
        .args(["check", "--config"])
        .arg(file)
        .args(extra)
        .env_remove("E2E_REMOTE_URL_UNSET")
        .output()
        .expect("run check")
}

fn check(file: &Path) -> std::process::Output {
    check_with(file, &[])
}

#[test]
fn check_command_validates_and_names_the_field() {
    let dir = tempfile::tempdir().expect("tmp");
    let good = config(
        dir.path(),
        "http://127.0.0.1:9/api/v1/write",
        &[("a", 1)],
        "",
    );
    let out = check(&good);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "scrape_configs:\n  - job_name: a\n    kubernetes_sd_configs: []\n",
    )
    .expect("write");
    let out = check(&bad);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("scrape_configs[0]") && err.contains("kubernetes_sd_configs"),
        "{err}"
    );
    // With --expand-env, an unset environment reference without a default names its line;
    // without it the text stays literal, as in Prometheus (and is no URL).
    let unset = dir.path().join("unset.yml");
    std::fs::write(
        &unset,
        "scrape_configs: []\nremote_write:\n  - url: ${E2E_REMOTE_URL_UNSET}\n",
    )
    .expect("write");
    let out = check(&unset);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unset.yml:3") && err.contains("is not an http:// or https:// URL"),
        "{err}"
    );
    let out = check_with(&unset, &["--expand-env"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unset.yml:3") && err.contains("${E2E_REMOTE_URL_UNSET} is not set"),
        "{err}"
    );
}
