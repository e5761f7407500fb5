//! The corpus: representative Kong declarative files (`gateway/tests/corpus/`), each
//! checked with `gateway check` against its line in `EXPECT` (what Kong 3.9 does with
//! the file; `diverges` marks a known gateway bug). See the corpus README.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// (kind, substring) per file name, from `EXPECT`.
fn expectations(dir: &Path) -> BTreeMap<String, (String, String)> {
    let text = std::fs::read_to_string(dir.join("EXPECT")).expect("read EXPECT");
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.splitn(3, ' ');
        let file = parts.next().expect("file").to_string();
        let kind = parts
            .next()
            .unwrap_or_else(|| panic!("EXPECT:{}: no expectation", n + 1))
            .to_string();
        let sub = parts.next().unwrap_or("").to_string();
        assert!(
            matches!(
                kind.as_str(),
                "ok" | "ok-with-warnings" | "error" | "diverges"
            ),
            "EXPECT:{}: unknown expectation `{kind}`",
            n + 1
        );
        assert!(
            kind == "ok" || !sub.is_empty(),
            "EXPECT:{}: `{kind}` needs a substring",
            n + 1
        );
        assert!(
            out.insert(file.clone(), (kind, sub)).is_none(),
            "EXPECT:{}: `{file}` listed twice",
            n + 1
        );
    }
    out
}

fn check(dir: &Path, file: &str, strict: bool) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gateway"));
    cmd.arg("check").arg("--config").arg(dir.join(file));
    if strict {
        cmd.arg("--strict");
    }
    let out = cmd
        .env_remove("GATEWAY_STRICT")
        .env_remove("GATEWAY_IGNORE_PLUGINS")
        .output()
        .expect("run gateway check");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let prefix = format!("{}/", dir.display());
    (out.status.success(), text.replace(&prefix, ""))
}

#[test]
fn every_corpus_file_loads_or_fails_as_kong_does() {
    let dir = corpus_dir();
    let expect = expectations(&dir);
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("read corpus dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yml") || n.ends_with(".yaml") || n.ends_with(".json"))
        .collect();
    files.sort();
    assert!(files.len() >= 22, "only {} corpus files", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let Some((kind, sub)) = expect.get(file) else {
            failures.push(format!("{file}: no expectation line in EXPECT"));
            continue;
        };
        let (ok, out) = check(&dir, file, false);
        let has_warning = out.contains("warning:");
        let problem = match kind.as_str() {
            "ok" if !ok => Some("expected to load".to_string()),
            "ok" if has_warning => Some("expected to load without warnings".to_string()),
            "ok-with-warnings" if !ok => Some("expected to load (with warnings)".to_string()),
            "ok-with-warnings" if !out.contains(&format!("warning: {sub}")) => {
                Some(format!("expected the warning `{sub}`"))
            }
            "error" | "diverges" if ok => Some(format!("expected to fail with `{sub}`")),
            "error" | "diverges" if !out.contains(sub.as_str()) => {
                Some(format!("expected the error `{sub}`"))
            }
            _ => None,
        };
        if let Some(p) = problem {
            failures.push(format!("{file}: {p}; `gateway check` said:\n{out}"));
            continue;
        }
        // Warnings are exactly what --strict refuses; a clean file stays clean.
        if kind == "ok" || kind == "ok-with-warnings" {
            let (strict_ok, strict_out) = check(&dir, file, true);
            if strict_ok == (kind == "ok-with-warnings") {
                failures.push(format!(
                    "{file}: --strict should {} it:\n{strict_out}",
                    if kind == "ok" { "load" } else { "refuse" }
                ));
            }
        }
    }
    for file in expect.keys() {
        if !files.contains(file) {
            failures.push(format!("EXPECT names `{file}`, which is not in the corpus"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
