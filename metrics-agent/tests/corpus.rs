//! The corpus: representative prometheus.yml files (tests/corpus/*.yml). Each is checked
//! by Prometheus' own `promtool check config` and by `metrics-agent check`; both must
//! accept it (`*.ok.yml`) or both must reject it (`*.bad.yml`). Relative paths in the
//! files (rules, SD files, TLS files, secrets) point into tests/corpus/files.

mod common;

use common::find_on_path;
use std::path::{Path, PathBuf};
use std::process::Command;

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/corpus")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    files
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .env_remove("METRICS_AGENT_EXPAND_ENV")
        .output()
        .expect("run checker");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn promtool_and_metrics_agent_agree_on_every_corpus_file() {
    let promtool = find_on_path("promtool");
    let files = corpus();
    assert!(files.len() >= 20, "only {} corpus files", files.len());
    let mut problems = Vec::new();
    let (mut ok, mut bad) = (0, 0);
    for f in &files {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let expect_ok = name.ends_with(".ok.yml");
        assert!(
            expect_ok || name.ends_with(".bad.yml"),
            "{name}: name it *.ok.yml or *.bad.yml"
        );
        // Both run from the file's directory, as an operator would.
        let dir = f.parent().expect("dir");
        let (p_ok, p_out) = run(Command::new(&promtool)
            .args(["check", "config", name])
            .current_dir(dir));
        let (a_ok, a_out) = run(Command::new(env!("CARGO_BIN_EXE_metrics-agent"))
            .args(["check", "--config", name])
            .current_dir(dir));
        if p_ok != expect_ok {
            problems.push(format!(
                "{name}: promtool {} it (expected {}):\n{p_out}",
                if p_ok { "accepts" } else { "rejects" },
                if expect_ok { "ok" } else { "bad" }
            ));
        }
        if a_ok != expect_ok {
            problems.push(format!(
                "{name}: metrics-agent {} it (expected {}):\n{a_out}",
                if a_ok { "accepts" } else { "rejects" },
                if expect_ok { "ok" } else { "bad" }
            ));
        }
        if expect_ok {
            ok += 1;
            assert!(a_out.contains(": OK ("), "{name}: {a_out}");
        } else {
            bad += 1;
            // a rejection names the file, like promtool's
            assert!(a_out.contains(name), "{name}: {a_out}");
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(ok >= 20 && bad >= 5, "{ok} accepted, {bad} rejected");
}
