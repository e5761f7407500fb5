//! Reloads under continuous load (SIGHUP and POST /config, valid and invalid) and the
//! graceful drain on SIGTERM.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::harness::*;

fn config(up: u16, extra_route: Option<&str>) -> String {
    let mut s = format!(
        "_format_version: \"3.0\"\nservices:\n- name: svc\n  url: http://127.0.0.1:{up}\n  routes:\n  - name: main\n    paths: [/load]\n"
    );
    if let Some(p) = extra_route {
        s.push_str(&format!("  - name: extra\n    paths: [{p}]\n"));
    }
    s
}

#[tokio::test]
async fn reloads_under_load_drop_nothing() {
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway(&config(up, None));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), gw.url("/load"));
        workers.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(r) if r.status().as_u16() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let c = client();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 1. SIGHUP with a valid file adds a route.
    gw.write_config(&config(up, Some("/v2")));
    gw.proc.signal("HUP");
    let added = eventually(Duration::from_secs(5), || {
        let c = c.clone();
        let url = gw.url("/v2/x");
        async move { get_json(&c, &url).await.0 == 200 }
    })
    .await;
    assert!(added, "SIGHUP reload did not apply");

    // 2. SIGHUP with an invalid file: rejected, the old config keeps serving.
    gw.write_config("_format_version: \"3.0\"\nservices:\n- name: svc\n  url: http://127.0.0.1:1\n  routes:\n  - name: main\n    pathz: [/load]\n");
    gw.proc.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get_json(&c, &gw.url("/v2/x")).await.0, 200);

    // 3. POST /config with a valid config replaces it (route /v2 goes, /v3 comes).
    let r = c
        .post(gw.status_url("/config"))
        .body(config(up, Some("/v3")))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(get_json(&c, &gw.url("/v3/x")).await.0, 200);
    assert_eq!(get_json(&c, &gw.url("/v2/x")).await.0, 404);

    // 4. POST /config with an invalid config: 400 with the errors, nothing changes.
    let r = c
        .post(gw.status_url("/config"))
        .body("_format_version: \"3.0\"\nservices:\n- name: svc\n  url: http://127.0.0.1:1\n  routes:\n  - name: main\n    paths: [\"~/(\"]\n")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 400);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["errors"][0]["path"], "services[0].routes[0].paths[0]");
    assert_eq!(v["errors"][0]["line"], 7);
    assert_eq!(get_json(&c, &gw.url("/v3/x")).await.0, 200);

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    let (n_ok, n_failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(n_ok > 40, "too little load to mean anything: {n_ok}");
    assert_eq!(
        n_failed,
        0,
        "{n_failed} of {} requests failed during reloads",
        n_ok + n_failed
    );

    let (_, m) = get_json(&c, &gw.status_url("/metrics")).await;
    let text = m.as_str().unwrap_or("");
    assert!(
        text.contains("gateway_config_reloads_total{result=\"success\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("gateway_config_reloads_total{result=\"failure\"} 2"),
        "{text}"
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let up = free_port();
    let _u = upstream(up);
    let mut gw = gateway_with(
        &config(up, None).replace("paths: [/load]", "paths: [/load, /delay]"),
        GwOpts {
            extra: vec!["--drain-timeout".into(), "10".into()],
            tls: None,
        },
    );
    let c = client();
    let url = gw.url("/delay/1500");
    let slow = tokio::spawn(async move { c.get(&url).send().await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    gw.proc.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // New connections are refused while the old request finishes.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", gw.port)).is_err(),
        "still accepting after SIGTERM"
    );
    assert_eq!(
        slow.await.expect("task").expect("in-flight request failed"),
        200
    );
    let mut exited = None;
    while t0.elapsed() < Duration::from_secs(8) {
        if let Ok(Some(st)) = gw.proc.child.try_wait() {
            exited = Some(st);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = exited.expect("gateway did not exit after draining");
    assert!(st.success(), "exit status {st:?}");
    // It exits as soon as the drain is done, not after the whole timeout.
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t0.elapsed()
    );
}
