//! bot-detection against the real binary and `echo-upstream`: Kong's built-in rules,
//! allow before deny, several User-Agent headers.

use serde_json::Value;

use crate::harness::*;

fn config(up: u16) -> String {
    format!(
        r#"_format_version: "3.0"
services:
- name: api
  url: http://127.0.0.1:{up}
  routes:
  - name: default-rules
    paths: [/bots]
    plugins:
    - name: bot-detection
  - name: lists
    paths: [/lists]
    plugins:
    - name: bot-detection
      config:
        allow: ["facebookexternalhit/", "^friendly"]
        deny: ["facebook", "^hello", "friendly"]
"#
    )
}

async fn send(c: &reqwest::Client, url: &str, agents: &[&str]) -> (u16, String) {
    let mut r = c.get(url);
    for a in agents {
        r = r.header("user-agent", *a);
    }
    let r = r.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

#[tokio::test]
async fn bots_are_forbidden_and_allow_beats_deny() {
    let up_port = free_port();
    let _up = upstream(up_port);
    let gw = gateway(&config(up_port));
    let c = client();
    let bots = gw.url("/bots");
    let lists = gw.url("/lists");

    // Built-in rules: a crawler gets Kong's 403 with the "Forbidden" message.
    let (s, body) = send(
        &c,
        &bots,
        &["Googlebot/2.1 (+http://www.google.com/bot.html)"],
    )
    .await;
    assert_eq!(s, 403, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(v["message"], "Forbidden", "{body}");
    assert!(v["request_id"].is_string(), "{body}");
    // The same agent again (a cached verdict) still gets 403.
    let (s, _) = send(
        &c,
        &bots,
        &["Googlebot/2.1 (+http://www.google.com/bot.html)"],
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = send(&c, &bots, &["facebookexternalhit/1.1"]).await;
    assert_eq!(s, 403);
    // Browsers, curl and requests without an agent pass.
    let chrome = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_5) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/50.0.2661.102 Safari/537.36";
    let (s, body) = send(&c, &bots, &[chrome]).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(send(&c, &bots, &["curl/7.43.0"]).await.0, 200);
    assert_eq!(send(&c, &bots, &[]).await.0, 200);

    // allow wins over deny and over the built-in rules; deny applies otherwise.
    assert_eq!(send(&c, &lists, &["facebookexternalhit/1.1"]).await.0, 200);
    assert_eq!(send(&c, &lists, &["friendly agent"]).await.0, 200);
    assert_eq!(send(&c, &lists, &["hello world"]).await.0, 403);
    assert_eq!(send(&c, &lists, &["very friendly agent"]).await.0, 403);
    assert_eq!(send(&c, &lists, &["Twitterbot/1.0"]).await.0, 403);
    assert_eq!(send(&c, &lists, &[chrome]).await.0, 200);

    // Several User-Agent headers: 400.
    let (s, body) = send(&c, &bots, &["curl/7.43.0", "other/1.0"]).await;
    assert_eq!(s, 400, "{body}");
    assert!(
        body.contains("Only one User-Agent header allowed"),
        "{body}"
    );
}
