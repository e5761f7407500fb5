//! Kong's `file-log`: one JSON line per request (Kong's basic log serializer, see
//! `log_serializer.rs`) appended to `path`. Kong writes in the request's log phase; here
//! the line goes to a bounded queue and one writer thread shared by every file-log
//! instance appends it, so a slow disk never holds a request. A full queue drops the
//! line and counts it (`dropped()`).
//!
//! `custom_fields_by_lua` is refused: it runs Lua, which this gateway cannot, and a
//! configuration relying on it (often to remove a field such as an API key header)
//! would otherwise log something else than intended.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use serde::Deserialize;

use super::log_serializer::{self, Entities};
use super::{BuildContext, BuildError, Plugin, SpecError};
use crate::core::state::RequestState;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub path: String,
    #[serde(default)]
    pub reopen: bool,
    #[serde(default)]
    pub custom_fields_by_lua: Option<BTreeMap<String, String>>,
}

impl Config {
    pub fn validate(&self) -> Result<(), SpecError> {
        // Kong: `^[^*&%\`]+$`, "not a valid filename".
        if self.path.is_empty() || self.path.contains(['*', '&', '%', '\\', '`']) {
            return Err(SpecError::at("path", "not a valid filename"));
        }
        log_serializer::reject_lua(&self.custom_fields_by_lua)
    }
}

/// Lines waiting for the writer thread, across every file-log instance.
pub const QUEUE_LINES: usize = 65_536;

static DROPPED: AtomicU64 = AtomicU64::new(0);
static WRITER: OnceLock<Option<SyncSender<Line>>> = OnceLock::new();

/// Lines dropped because the writer's queue was full.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

struct Line {
    path: Arc<str>,
    reopen: bool,
    text: Vec<u8>,
}

fn writer() -> Option<&'static SyncSender<Line>> {
    WRITER
        .get_or_init(|| {
            let (tx, rx) = sync_channel::<Line>(QUEUE_LINES);
            std::thread::Builder::new()
                .name("file-log".into())
                .spawn(move || write_lines(rx))
                .map_err(
                    |e| tracing::error!(error = %e, "file-log: cannot start the writer thread"),
                )
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

fn open(path: &str) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(path)
}

fn write_lines(rx: Receiver<Line>) {
    let mut files: HashMap<Arc<str>, std::io::BufWriter<std::fs::File>> = HashMap::new();
    let mut failures: u64 = 0;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(line) = next.take() {
            if line.reopen
                && let Some(mut f) = files.remove(&line.path)
            {
                let _ = f.flush();
            }
            let f = match files.get_mut(&line.path) {
                Some(f) => Some(f),
                None => match open(&line.path) {
                    Ok(f) => Some(
                        files
                            .entry(line.path.clone())
                            .or_insert_with(|| std::io::BufWriter::with_capacity(64 * 1024, f)),
                    ),
                    Err(e) => {
                        failures += 1;
                        if failures.is_power_of_two() {
                            tracing::error!(path = %line.path, error = %e, "file-log: failed to open the file");
                        }
                        None
                    }
                },
            };
            if let Some(f) = f
                && let Err(e) = f.write_all(&line.text)
            {
                tracing::error!(path = %line.path, error = %e, "file-log: write failed");
                files.remove(&line.path);
            }
            if line.reopen
                && let Some(mut f) = files.remove(&line.path)
            {
                let _ = f.flush();
            }
            next = rx.try_recv().ok();
        }
        for f in files.values_mut() {
            let _ = f.flush();
        }
    }
}

pub struct FileLog {
    path: Arc<str>,
    reopen: bool,
    entities: Arc<Entities>,
}

impl FileLog {
    // dup: the shape of every plugin file (its own Config, checks and hook types).
    pub fn new(cfg: Config, ctx: &BuildContext<'_>) -> Result<FileLog, BuildError> {
        Ok(FileLog {
            path: cfg.path.into(),
            reopen: cfg.reopen,
            entities: Entities::shared(ctx)?,
        })
    }
}

#[async_trait]
impl Plugin for FileLog {
    fn name(&self) -> &'static str {
        "file-log"
    }

    fn priority(&self) -> i32 {
        9
    }

    fn has_access(&self) -> bool {
        false
    }

    fn logs_heads(&self) -> bool {
        true
    }

    fn log(&self, st: &RequestState, status: u16) {
        let record = log_serializer::serialize(st, status, &self.entities);
        let Ok(mut text) = serde_json::to_vec(&record) else {
            return;
        };
        text.push(b'\n');
        let Some(tx) = writer() else { return };
        let line = Line {
            path: self.path.clone(),
            reopen: self.reopen,
            text,
        };
        if let Err(TrySendError::Full(_)) = tx.try_send(line) {
            let n = DROPPED.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "file-log: writer queue full, lines dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &str) -> Result<Config, SpecError> {
        crate::plugins::test_config::parse(v, Config::validate)
    }

    #[test]
    fn schema_like_kong() {
        let c = parse("path: /tmp/x.log").expect("test value");
        assert!(!c.reopen);
        assert!(parse("reopen: true").is_err(), "path is required");
        let e = parse("path: /tmp/a*b").expect_err("an error").to_string();
        assert!(e.contains("not a valid filename"), "{e}");
        let e = parse("path: /tmp/x\ncustom_fields_by_lua: {a: return 1}").expect_err("an error");
        assert!(
            matches!(&e, SpecError::Invalid { path, .. } if path == "custom_fields_by_lua"),
            "{e:?}"
        );
        assert!(parse("path: /tmp/x\ncustom_fields_by_lua: {}").is_ok());
        assert!(parse("path: /tmp/x\nother: 1").is_err());
    }
}
