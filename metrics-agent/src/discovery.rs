//! Target discovery: `file_sd_configs` providers (`dns_sd_configs` in dns_sd.rs,
//! `ec2_sd_configs` in ec2_sd.rs, `consul_sd_configs` in consul_sd.rs, `docker_sd_configs` in docker_sd.rs), and the job manager
//! that turns target groups into running scrape loops (starting loops for new targets and
//! stopping, with stale markers, those of targets that went away).

use crate::appender::Appender;
use crate::config::{FileSd, ScrapeJob, Target, TargetGroup};
use crate::scrape::{JobSettings, ScrapeLoop, ScrapeTarget, Source};
use crate::self_metrics::AgentMetrics;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// The complete current groups of one provider (`static`, `file_sd/0`, `dns_sd/1`, ...).
pub type Update = (String, Vec<TargetGroup>);

/// One target group as written in a file_sd file.
#[derive(Debug, Deserialize)]
struct FileGroup {
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// `host:port`, with brackets around an IPv6 host (Go's net.JoinHostPort).
pub fn host_port(host: &str, port: impl std::fmt::Display) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Prometheus' strutil.SanitizeLabelName: every character outside `[a-zA-Z0-9_]` becomes `_`
/// (for names under a known prefix, such as `__meta_ec2_tag_`).
pub fn sanitize_label_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// Why a file_sd file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileSdError {
    #[error("{0}")]
    Read(#[from] std::io::Error),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Yaml(#[from] serde_norway::Error),
    #[error("group {group}: {name:?} is not a valid label name")]
    LabelName { group: usize, name: String },
    /// From `check`: the file's name before the reason.
    #[error("checking SD file {}: {source}", .file.display())]
    Check {
        file: PathBuf,
        #[source]
        source: Box<FileSdError>,
    },
}

/// Reads one file_sd file (JSON by extension, else YAML) into target groups.
pub fn read_file_groups(path: &Path) -> Result<Vec<TargetGroup>, FileSdError> {
    let text = std::fs::read_to_string(path)?;
    let is_json = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let groups: Vec<FileGroup> = if is_json {
        serde_json::from_str(&text)?
    } else if text.trim().is_empty() {
        Vec::new()
    } else {
        serde_norway::from_str::<Option<Vec<FileGroup>>>(&text)?.unwrap_or_default()
    };
    let file = path.display().to_string();
    let mut out = Vec::with_capacity(groups.len());
    for (i, g) in groups.into_iter().enumerate() {
        if let Some(bad) = g.labels.keys().find(|k| !valid_label_name(k)) {
            return Err(FileSdError::LabelName {
                group: i,
                name: bad.clone(),
            });
        }
        let mut labels = g.labels;
        labels.insert("__meta_filepath".into(), file.clone());
        out.push(TargetGroup {
            source: format!("{file}:{i}"),
            targets: g
                .targets
                .into_iter()
                .map(|t| BTreeMap::from([("__address__".to_string(), t)]))
                .collect(),
            labels,
        });
    }
    Ok(out)
}

/// `*` and `?` in a file name, as in filepath.Match.
fn name_matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some(b'*') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some(b'?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// The files a pattern names right now, sorted.
pub fn expand(pattern: &Path) -> Vec<PathBuf> {
    let name = pattern
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return vec![pattern.to_path_buf()];
    }
    let dir = pattern.parent().unwrap_or(Path::new("."));
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| name_matches(name, n))
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// For `check`: reads every file the job's `file_sd_configs` name now (as promtool does).
/// Returns the number of targets in them.
pub fn check_file_sd(job: &ScrapeJob) -> Result<usize, FileSdError> {
    let mut n = 0;
    for sd in &job.file_sd {
        for pattern in &sd.files {
            for f in expand(pattern) {
                if !f.exists() {
                    continue; // may appear later; Prometheus waits for it too
                }
                let groups = read_file_groups(&f).map_err(|e| FileSdError::Check {
                    file: f.clone(),
                    source: Box::new(e),
                })?;
                n += groups.iter().map(|g| g.targets.len()).sum::<usize>();
            }
        }
    }
    Ok(n)
}

type Fingerprint = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

fn fingerprint(files: &[PathBuf]) -> Fingerprint {
    files
        .iter()
        .map(|f| {
            let meta = std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            (f.clone(), meta)
        })
        .collect()
}

/// Watches the files of one `file_sd_configs` entry: re-reads them when a file changes,
/// appears or disappears (checked every second) and every `refresh_interval`.
pub async fn run_file_sd(
    key: String,
    sd: FileSd,
    tx: mpsc::Sender<Update>,
    mut stop: watch::Receiver<bool>,
) {
    let mut last: Option<Fingerprint> = None;
    let mut cache: HashMap<PathBuf, Vec<TargetGroup>> = HashMap::new();
    let mut last_full = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let files: Vec<PathBuf> = sd.files.iter().flat_map(|p| expand(p)).collect();
        let fp = fingerprint(&files);
        let due = last_full.elapsed() >= sd.refresh_interval;
        if last.as_ref() == Some(&fp) && !due {
            continue;
        }
        last_full = tokio::time::Instant::now();
        let mut groups = Vec::new();
        let mut fresh = HashMap::new();
        for f in &files {
            match read_file_groups(f) {
                Ok(g) => {
                    groups.extend(g.iter().cloned());
                    fresh.insert(f.clone(), g);
                }
                // A file that is gone contributes nothing; one that cannot be read or
                // parsed keeps its previous targets (Prometheus does the same).
                Err(e) => {
                    if f.exists() {
                        tracing::error!(file = %f.display(), "file_sd: {e}");
                        if let Some(old) = cache.get(f) {
                            groups.extend(old.iter().cloned());
                            fresh.insert(f.clone(), old.clone());
                        }
                    }
                }
            }
        }
        cache = fresh;
        last = Some(fp);
        if tx.send((key.clone(), groups)).await.is_err() {
            return;
        }
    }
}

struct Running {
    removed: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// Runs the scrape loops of one job from the groups its providers send.
pub struct JobManager {
    pub job: Arc<ScrapeJob>,
    pub settings: Arc<JobSettings>,
    pub client: reqwest::Client,
    pub appender: Appender,
    pub metrics: AgentMetrics,
}

/// What a job manager is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Run,
    /// Agent shutdown or the job changed on reload: stop scraping, no stale markers.
    Stop,
    /// The job was removed on reload: its series get stale markers.
    Retire,
}

impl JobManager {
    /// Starts the job's providers and manages its targets until `control` leaves `Run`.
    pub async fn run(self, mut control: watch::Receiver<Control>) {
        let (stop_tx, stop) = watch::channel(false);
        let (tx, mut rx) = mpsc::channel::<Update>(16);
        let mut providers = Vec::new();
        for (i, sd) in self.job.file_sd.iter().enumerate() {
            providers.push(tokio::spawn(run_file_sd(
                format!("file_sd/{i}"),
                sd.clone(),
                tx.clone(),
                stop.clone(),
            )));
        }
        for (i, sd) in self.job.dns_sd.iter().enumerate() {
            providers.push(tokio::spawn(crate::dns_sd::run(
                format!("dns_sd/{i}"),
                sd.clone(),
                tx.clone(),
                stop.clone(),
            )));
        }
        for (i, sd) in self.job.ec2_sd.iter().enumerate() {
            providers.push(tokio::spawn(crate::ec2_sd::run(
                format!("ec2_sd/{i}"),
                sd.clone(),
                tx.clone(),
                stop.clone(),
            )));
        }
        for (i, sd) in self.job.consul_sd.iter().enumerate() {
            providers.push(tokio::spawn(crate::consul_sd::run(
                format!("consul_sd/{i}"),
                sd.clone(),
                tx.clone(),
                stop.clone(),
            )));
        }
        for (i, sd) in self.job.docker_sd.iter().enumerate() {
            providers.push(tokio::spawn(crate::docker_sd::run(
                format!("docker_sd/{i}"),
                sd.clone(),
                tx.clone(),
                stop.clone(),
            )));
        }
        drop(tx);
        let mut groups: BTreeMap<String, Vec<TargetGroup>> = BTreeMap::new();
        groups.insert("static".into(), self.job.static_groups.clone());
        let mut running: HashMap<Target, Running> = HashMap::new();
        self.sync(&groups, &mut running, &stop);
        let mut providers_done = false;
        while *control.borrow() == Control::Run {
            tokio::select! {
                u = rx.recv(), if !providers_done => match u {
                    Some((key, g)) => {
                        groups.insert(key, g);
                        self.sync(&groups, &mut running, &stop);
                    }
                    // Static only (or every provider ended): wait for the control.
                    None => providers_done = true,
                },
                r = control.changed() => if r.is_err() { break },
            }
        }
        let retire = *control.borrow() == Control::Retire;
        if !retire {
            // (a send wakes the loops even with an unchanged value: only on Stop)
            let _ = stop_tx.send(true);
        }
        for p in providers {
            p.abort();
            let _ = p.await;
        }
        for (_, r) in running {
            if retire {
                let _ = r.removed.send(true);
            }
            let mut h = r.handle;
            if tokio::time::timeout(Duration::from_secs(15), &mut h)
                .await
                .is_err()
            {
                h.abort();
                let _ = h.await;
            }
        }
    }

    fn sync(
        &self,
        groups: &BTreeMap<String, Vec<TargetGroup>>,
        running: &mut HashMap<Target, Running>,
        shutdown: &watch::Receiver<bool>,
    ) {
        let targets = self.job.resolve(groups.values().flatten());
        let limit = self.job.limits.target;
        let over = limit > 0 && targets.len() > limit;
        if over
            != self
                .settings
                .over_target_limit
                .swap(over, Ordering::Relaxed)
            && over
        {
            tracing::warn!(
                job = %self.job.name,
                targets = targets.len(),
                limit,
                "target_limit exceeded: every scrape of the job fails until there are fewer targets"
            );
        }
        let wanted: std::collections::HashSet<&Target> = targets.iter().collect();
        let gone: Vec<Target> = running
            .keys()
            .filter(|t| !wanted.contains(t))
            .cloned()
            .collect();
        for t in gone {
            if let Some(r) = running.remove(&t) {
                tracing::info!(job = %self.job.name, target = %t.labels, "target removed");
                let _ = r.removed.send(true);
                drop(r.handle); // the loop writes its stale markers and ends on its own
            }
        }
        for t in targets {
            if running.contains_key(&t) {
                continue;
            }
            tracing::info!(job = %self.job.name, target = %t.labels, url = %t.url, "target added");
            let l = ScrapeLoop::new(
                ScrapeTarget {
                    job: self.settings.clone(),
                    labels: t.labels.clone(),
                    source: Source::Http {
                        url: t.url.clone(),
                        client: self.client.clone(),
                    },
                },
                self.appender.clone(),
                self.metrics.clone(),
            );
            let (removed, removed_rx) = watch::channel(false);
            let handle = tokio::spawn(l.run_until(shutdown.clone(), removed_rx));
            running.insert(t, Running { removed, handle });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_file_sd_yaml_and_json() {
        let dir = tempfile::tempdir().expect("tmp");
        let y = dir.path().join("a.yml");
        std::fs::write(
            &y,
            "- targets: ['h1:9100', 'h2:9100']\n  labels: {env: prod}\n- targets: ['h3:1']\n",
        )
        .expect("write");
        let g = read_file_groups(&y).expect("yaml");
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].targets.len(), 2);
        assert_eq!(g[0].labels.get("env").map(String::as_str), Some("prod"));
        assert_eq!(
            g[1].labels.get("__meta_filepath").map(String::as_str),
            Some(y.to_str().expect("utf8"))
        );
        let j = dir.path().join("b.json");
        std::fs::write(&j, r#"[{"targets": ["x:1"], "labels": {"a": "b"}}]"#).expect("write");
        assert_eq!(
            read_file_groups(&j).expect("json")[0].source,
            format!("{}:0", j.display())
        );
        std::fs::write(&j, r#"[{"targets": ["x:1"], "labels": {"a-b": "c"}}]"#).expect("write");
        assert!(read_file_groups(&j).is_err());
        let mut found = expand(&dir.path().join("*.yml"));
        found.extend(expand(&dir.path().join("?.json")));
        assert_eq!(found, [y, j]);
    }
}
