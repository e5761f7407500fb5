//! Kong's prometheus-plugin series after real traffic: names, types, labels, flags.

use crate::harness::*;

fn config(up: u16, flags: &str) -> String {
    format!(
        "_format_version: \"3.0\"\nconsumers:\n- username: alice\n  keyauth_credentials:\n  - key: k-alice\nservices:\n- name: orders\n  url: http://127.0.0.1:{up}\n  routes:\n  - name: orders-api\n    paths: [/orders]\n    plugins:\n    - name: key-auth\nplugins:\n- name: prometheus\n  config: {flags}\n"
    )
}

async fn metrics_text(gw: &Gw) -> String {
    client()
        .get(gw.status_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

#[tokio::test]
async fn kong_series_follow_the_plugin_flags() {
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway(&config(
        up,
        "{per_consumer: true, status_code_metrics: true, latency_metrics: true, bandwidth_metrics: true, upstream_health_metrics: true}",
    ));
    let c = client();
    for _ in 0..3 {
        assert_eq!(
            c.get(gw.url("/orders/1"))
                .header("apikey", "k-alice")
                .send()
                .await
                .expect("send")
                .status()
                .as_u16(),
            200
        );
    }
    assert_eq!(
        c.get(gw.url("/orders/1"))
            .send()
            .await
            .expect("send")
            .status()
            .as_u16(),
        401
    );
    assert_eq!(
        c.get(gw.url("/nowhere"))
            .send()
            .await
            .expect("send")
            .status()
            .as_u16(),
        404
    );
    let t = metrics_text(&gw).await;
    for want in [
        "# TYPE kong_http_requests_total counter",
        "kong_http_requests_total{code=\"200\",consumer=\"alice\",route=\"orders-api\",service=\"orders\",source=\"service\",workspace=\"default\"} 3",
        "kong_http_requests_total{code=\"401\",consumer=\"\",route=\"orders-api\",service=\"orders\",source=\"kong\",workspace=\"default\"} 1",
        "# TYPE kong_request_latency_ms histogram",
        "kong_request_latency_ms_count{route=\"orders-api\",service=\"orders\",workspace=\"default\"} 4",
        "kong_upstream_latency_ms_count{route=\"orders-api\",service=\"orders\",workspace=\"default\"} 3",
        "kong_kong_latency_ms_bucket{route=\"orders-api\",service=\"orders\",workspace=\"default\",le=\"1\"}",
        "kong_request_latency_ms_bucket{route=\"orders-api\",service=\"orders\",workspace=\"default\",le=\"25\"}",
        "kong_bandwidth_bytes{consumer=\"alice\",direction=\"egress\",route=\"orders-api\",service=\"orders\",workspace=\"default\"}",
        "kong_bandwidth_bytes{consumer=\"alice\",direction=\"ingress\",route=\"orders-api\",service=\"orders\",workspace=\"default\"}",
        "kong_upstream_target_health{address=\"127.0.0.1:",
        "kong_nginx_requests_total{node_id=\"\",subsystem=\"http\"} 5",
        "gateway_auth_failures_total{plugin=\"key-auth\",reason=\"no_key\",route=\"orders-api\"} 1",
        "kong_datastore_reachable 1",
    ] {
        assert!(t.contains(want), "missing `{want}` in:\n{t}");
    }
    // Kong records nothing per request for a request that matched no route.
    assert!(!t.contains("code=\"404\""), "{t}");
    assert!(!t.contains("route=\"\""), "{t}");
    // Ingress counts the whole request as Kong does (headers too), not only a body.
    let ingress: u64 = t
        .lines()
        .find(|l| l.starts_with("kong_bandwidth_bytes{consumer=\"alice\",direction=\"ingress\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("ingress series");
    assert!(
        ingress > 3 * 40,
        "ingress bytes {ingress} do not include the request headers"
    );
}

#[tokio::test]
async fn default_flags_export_no_per_request_series() {
    let up = free_port();
    let _u = upstream(up);
    let gw = gateway(&config(up, "{}"));
    let c = client();
    assert_eq!(
        c.get(gw.url("/orders/1"))
            .header("apikey", "k-alice")
            .send()
            .await
            .expect("send")
            .status()
            .as_u16(),
        200
    );
    let t = metrics_text(&gw).await;
    assert!(!t.contains("kong_http_requests_total{"), "{t}");
    assert!(!t.contains("kong_request_latency_ms_count{"), "{t}");
    assert!(!t.contains("kong_upstream_target_health{"), "{t}");
    assert!(t.contains("kong_nginx_requests_total"), "{t}");
}
