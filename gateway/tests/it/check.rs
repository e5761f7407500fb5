//! `gateway check`: every error, with file, line and field path.

use std::process::Command;

fn check(config: &str, extra: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kong.yml");
    std::fs::write(&path, config).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .args(extra)
        .output()
        .expect("run check");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (
        out.status.success(),
        text.replace(&path.display().to_string(), "kong.yml"),
    )
}

// dup: each test spells out its own setup and checks (reads alone when it fails).
#[test]
fn reports_every_error_with_line_and_path() {
    let cfg = "_format_version: \"3.0\"
services:
- name: a
  url: http://127.0.0.1:1
  routes:
  - name: r1
    paths: [/a]
- name: b
  url: http://127.0.0.1:2
  routes:
  - name: r2
    paths:
    - /b
    - ~/bad(
  - name: r3
    stip_path: true
upstreams:
- name: u
  algorithm: fastest
plugins:
- name: aws-lambda
  config: {}
";
    let (ok, out) = check(cfg, &[]);
    assert!(!ok);
    assert!(
        out.contains("kong.yml:14: services[1].routes[0].paths[1]: invalid regex"),
        "{out}"
    );
    assert!(
        out.contains("kong.yml:16: services[1].routes[1].stip_path: unknown field `stip_path`"),
        "{out}"
    );
    assert!(
        out.contains("kong.yml:19: upstreams[0].algorithm: unknown algorithm `fastest`"),
        "{out}"
    );
    assert!(
        out.contains("kong.yml:21: plugins[0].name: plugin `aws-lambda` is not implemented"),
        "{out}"
    );
    assert!(out.contains("4 error(s)"), "{out}");
}

#[test]
fn ignore_plugin_and_env_references() {
    let cfg = "_format_version: \"3.0\"
services:
- name: a
  url: ${{ env \"GW_TEST_UPSTREAM_URL\" }}
  routes:
  - name: r
    paths: [/]
plugins:
- name: bot-detection
";
    let (ok, out) = check(cfg, &["--ignore-plugin", "bot-detection"]);
    assert!(!ok, "unset variable must fail: {out}");
    assert!(
        out.contains(
            "kong.yml:4: environment variable `GW_TEST_UPSTREAM_URL` referenced here is not set"
        ),
        "{out}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kong.yml");
    std::fs::write(&path, cfg).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["check", "--config"])
        .arg(&path)
        .args(["--ignore-plugin", "bot-detection"])
        .env("GW_TEST_UPSTREAM_URL", "http://127.0.0.1:9")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("plugin `bot-detection` is ignored"));
}

#[test]
fn bad_keys_regexes_and_cors_contradictions() {
    let cfg = "_format_version: \"3.0\"
consumers:
- username: a
  jwt_secrets:
  - key: k1
    algorithm: RS256
    rsa_public_key: |
      -----BEGIN PUBLIC KEY-----
      bm90IGEga2V5
      -----END PUBLIC KEY-----
  - key: k2
    algorithm: HS256
services:
- name: s
  url: http://127.0.0.1:1
  routes:
  - name: r
    paths: [/]
    plugins:
    - name: cors
      config:
        origins: [\"*\", \"https://a.example.com\"]
    - name: jwt
      config:
        maximum_expiration: 60
plugins:
- name: cors
  config:
    origins: [\"(bad\"]
";
    let (ok, out) = check(cfg, &[]);
    assert!(!ok);
    assert!(
        out.contains(
            "kong.yml:7: consumers[0].jwt_secrets[0].rsa_public_key: invalid public key for RS256"
        ),
        "{out}"
    );
    assert!(
        out.contains("kong.yml:11: consumers[0].jwt_secrets[1].secret: required for HS256"),
        "{out}"
    );
    assert!(
        out.contains(
            "kong.yml:22: services[0].routes[0].plugins[0].config.origins: `*` allows every origin"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "services[0].routes[0].plugins[1].config.claims_to_verify: expected to contain: exp"
        ),
        "{out}"
    );
    assert!(
        out.contains("kong.yml:29: plugins[0].config.origins[0]: invalid regex"),
        "{out}"
    );
}

#[test]
fn risky_but_kong_valid_settings_are_warnings_and_strict_makes_them_errors() {
    let cfg = "_format_version: \"3.0\"
plugins:
- name: cors
  config:
    origins: [\"*\"]
    credentials: true
";
    let (ok, out) = check(cfg, &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("warning: kong.yml:6: plugins[0].config.credentials:"),
        "{out}"
    );
    let (ok, out) = check(cfg, &["--strict"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("kong.yml:6: plugins[0].config.credentials:"),
        "{out}"
    );
    assert!(out.contains("--strict"), "{out}");
}

// dup: each test spells out its own setup and checks (reads alone when it fails).
#[test]
fn url_next_to_its_parts_loads_as_kong_does_with_a_warning() {
    let cfg = "_format_version: \"3.0\"
services:
- name: s
  url: http://127.0.0.1:9/v1
  host: other.example.com
  path: /ignored
  routes:
  - name: r
    paths: [/]
";
    let (ok, out) = check(cfg, &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("warning: kong.yml:4: services[0].url: `url` replaces host, path"),
        "{out}"
    );
    assert!(!check(cfg, &["--strict"]).0);
}

#[test]
fn format_2x_regex_paths_load_with_a_warning_naming_the_migration() {
    let cfg = "_format_version: \"2.1\"
services:
- name: s
  url: http://127.0.0.1:9
  routes:
  - name: r
    paths:
    - /plain
    - /users/\\d+
";
    let (ok, out) = check(cfg, &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("warning: kong.yml:9: services[0].routes[0].paths[1]: `/users/\\d+` is a regex in a `_format_version` 2.x file: loaded as `~/users/\\d+`"),
        "{out}"
    );
    assert!(!out.contains("paths[0]"), "{out}");
    assert!(!check(cfg, &["--strict"]).0);
}

// dup: each test spells out its own setup and checks (reads alone when it fails).
#[test]
fn unevaluable_template_lua_loads_with_a_warning() {
    let cfg = "_format_version: \"3.0\"
services:
- name: s
  url: http://127.0.0.1:9
  routes:
  - name: r
    paths: [/]
    plugins:
    - name: request-transformer
      config:
        add:
          headers:
          - \"x-a:$(type(headers.x) == 'table' and 'many' or 'one')\"
";
    let (ok, out) = check(cfg, &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("services[0].routes[0].plugins[0].config.add.headers[0]: template expression"),
        "{out}"
    );
    assert!(!check(cfg, &["--strict"]).0);
}

#[test]
fn traffic_plugins_load_and_bad_regexes_name_the_field() {
    let cfg = "_format_version: \"3.0\"
services:
- name: s
  url: http://127.0.0.1:1
  routes:
  - name: r
    paths: [/]
    plugins:
    - name: bot-detection
      config:
        allow: [\"^good\"]
        deny: [\"bad\", \"evil\"]
    - name: proxy-cache
      config:
        strategy: memory
        cache_control: true
        vary_headers: [accept]
        response_headers: {age: false}
    - name: response-ratelimiting
      config:
        limits: {video: {second: 5, minute: 60}}
        policy: redis
        redis: {host: 127.0.0.1, port: 6379}
plugins:
- name: bot-detection
";
    let (ok, out) = check(cfg, &[]);
    assert!(ok, "{out}");
    let redis = cfg.replace("strategy: memory", "strategy: redis");
    let (ok, out) = check(&redis, &[]);
    assert!(!ok);
    assert!(
        out.contains("services[0].routes[0].plugins[1].config.strategy: expected one of: memory"),
        "{out}"
    );
    // Kong's bot-detection cannot be configured on a consumer.
    let on_consumer =
        format!("{cfg}consumers:\n- username: c\n  plugins:\n  - name: bot-detection\n");
    let (ok, out) = check(&on_consumer, &[]);
    assert!(!ok);
    assert!(
        out.contains("consumers[0].plugins[0]: consumer: value must be null"),
        "{out}"
    );
    let lower = cfg.replace("minute: 60", "minute: 1");
    let (ok, out) = check(&lower, &[]);
    assert!(!ok);
    assert!(
        out.contains("services[0].routes[0].plugins[2].config.limits.video.minute: The limit for minute(1.0) cannot be lower than the limit for second(5.0)"),
        "{out}"
    );
    let bad = cfg.replace("\"evil\"", "\"(?<=x)evil\"");
    let (ok, out) = check(&bad, &[]);
    assert!(!ok);
    assert!(
        out.contains("services[0].routes[0].plugins[0].config.deny[1]: not a valid regex"),
        "{out}"
    );
}
