//! response-ratelimiting against the real binary and an upstream written here that
//! answers with the `X-Kong-Limit` header the test asks for; local and redis policies
//! (a real `redis-server` started by the test).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use crate::harness::*;

/// An HTTP/1.1 upstream: the request's `?limit=<value>` comes back as `X-Kong-Limit:
/// <value>` (percent-decoded `%3D` and `%2C`, `+` as a space); the body echoes the
/// request's `x-ratelimit-remaining-*` headers.
fn limit_upstream(port: u16) {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind upstream");
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(mut w) = s.try_clone() else { return };
                let mut r = BufReader::new(s);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let mut len = 0usize;
                    let mut seen = Vec::new();
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h == "\r\n" || h == "\n" {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            let k = k.to_ascii_lowercase();
                            if k == "content-length" {
                                len = v.trim().parse().unwrap_or(0);
                            }
                            if k.starts_with("x-ratelimit-remaining") {
                                seen.push(format!("{k}={}", v.trim()));
                            }
                        }
                    }
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let limit = target
                        .split_once("limit=")
                        .map(|(_, v)| {
                            v.split('&')
                                .next()
                                .unwrap_or("")
                                .replace("%3D", "=")
                                .replace("%2C", ",")
                                .replace('+', " ")
                        })
                        .unwrap_or_default();
                    let extra = if limit.is_empty() {
                        String::new()
                    } else {
                        format!("X-Kong-Limit: {limit}\r\n")
                    };
                    let out = format!("upstream saw [{}]", seen.join(" "));
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra}\r\n{out}",
                        out.len()
                    );
                    if w.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    assert!(wait_port(port, Duration::from_secs(5)));
}

fn config(up: u16, policy: &str) -> String {
    format!(
        r#"_format_version: "3.0"
services:
- name: api
  url: http://127.0.0.1:{up}
  routes:
  - name: video
    paths: [/video]
    plugins:
    - name: response-ratelimiting
      config:
        limits:
          video: {{minute: 3, hour: 100}}
          image: {{minute: 10}}
        {policy}
  - name: first
    paths: [/first]
    plugins:
    - name: response-ratelimiting
      config:
        block_on_first_violation: true
        limits:
          image: {{minute: 1}}
          video: {{minute: 10}}
        {policy}
  - name: hidden
    paths: [/hidden]
    plugins:
    - name: response-ratelimiting
      config:
        hide_client_headers: true
        header_name: x-usage
        limits:
          video: {{minute: 1}}
        {policy}
"#
    )
}

async fn get(c: &reqwest::Client, url: &str) -> Got {
    let r = c.get(url).send().await.expect("request");
    let got = Got {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: String::new(),
    };
    Got {
        body: r.text().await.unwrap_or_default(),
        ..got
    }
}

/// The counts are added after each response (Kong's log phase): a short pause lets
/// the next request see them.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

async fn exercise(gw: &Gw) {
    let c = client();
    // Three responses each count 1 against `video` (its minute limit is 3).
    for i in 0..3u64 {
        let r = get(&c, &gw.url("/video?limit=video%3D1")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.h("x-ratelimit-limit-video-minute"), "3");
        assert_eq!(
            r.h("x-ratelimit-remaining-video-minute"),
            (2 - i).to_string()
        );
        assert_eq!(r.h("x-ratelimit-limit-video-hour"), "100");
        assert_eq!(
            r.h("x-ratelimit-remaining-video-hour"),
            (99 - i).to_string()
        );
        assert_eq!(r.h("x-ratelimit-limit-image-minute"), "10");
        assert_eq!(r.h("x-ratelimit-remaining-image-minute"), "10");
        // The remaining count before this response, to the client and the upstream.
        assert_eq!(r.h("x-ratelimit-remaining-video"), (3 - i).to_string());
        assert!(
            r.body
                .contains(&format!("x-ratelimit-remaining-video={}", 3 - i)),
            "{}",
            r.body
        );
        assert!(
            r.headers.get("x-kong-limit").is_none(),
            "the header is removed"
        );
        settle().await;
    }
    // Over the limit: the next response counting against `video` becomes an empty 429.
    let r = get(&c, &gw.url("/video?limit=video%3D1")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.body, "");
    assert_eq!(r.h("x-ratelimit-remaining-video-minute"), "0");
    assert_eq!(r.h("x-ratelimit-limit-video-minute"), "3");
    settle().await;
    // A response that does not count against `video` still goes through, and the
    // 429 above counted nothing.
    let r = get(&c, &gw.url("/video?limit=image%3D4%2C+other%3D1")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.h("x-ratelimit-remaining-video-minute"), "0");
    assert_eq!(r.h("x-ratelimit-remaining-video-hour"), "97");
    assert_eq!(r.h("x-ratelimit-remaining-image-minute"), "6");
    settle().await;
    let r = get(&c, &gw.url("/video")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.h("x-ratelimit-remaining-image-minute"), "6");

    // block_on_first_violation: once `image` is used up, the request is refused at once
    // with Kong's message, whatever it would count.
    let r = get(&c, &gw.url("/first?limit=image%3D1")).await;
    assert_eq!(r.status, 200);
    settle().await;
    let r = get(&c, &gw.url("/first?limit=video%3D1")).await;
    assert_eq!(r.status, 429, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
    assert_eq!(
        v["message"], "API rate limit exceeded for 'image'",
        "{}",
        r.body
    );

    // hide_client_headers, and a custom header name.
    let r = get(&c, &gw.url("/hidden")).await;
    assert!(r.headers.get("x-ratelimit-limit-video-minute").is_none());
    assert!(
        r.headers
            .get("x-ratelimit-remaining-video-minute")
            .is_none()
    );
}

#[tokio::test]
async fn local_policy_counts_what_the_upstream_says() {
    away_from_window_end(60, 8);
    let up = free_port();
    limit_upstream(up);
    let gw = gateway(&config(up, "policy: local"));
    exercise(&gw).await;
}

#[tokio::test]
async fn redis_policy_counts_in_redis() {
    away_from_window_end(60, 8);
    let rp = free_port();
    let _redis = redis_server(rp);
    let up = free_port();
    limit_upstream(up);
    let gw = gateway(&config(
        up,
        &format!("policy: redis\n        redis: {{host: 127.0.0.1, port: {rp}}}"),
    ));
    exercise(&gw).await;
    let keys = redis_cli(rp, &["--scan", "--pattern", "response-ratelimit:*"]);
    assert!(keys.lines().any(|k| k.ends_with(":video:minute")), "{keys}");
    let total: u64 = keys
        .lines()
        .filter(|k| k.ends_with(":video:minute"))
        .map(|k| {
            redis_cli(rp, &["GET", k])
                .trim()
                .parse::<u64>()
                .unwrap_or(0)
        })
        .sum();
    // /video counted 3 (its 429 counted nothing); /first counted only `image`.
    assert_eq!(total, 3, "{keys}");
}
