//! The on-disk write-ahead queue of encoded remote-write batches.
//!
//! Layout of `DIR`: `NNNNNNNNNNNNNNNNNNNN.seg` segment files and a `cursor` file.
//!
//! * A segment starts with the 8-byte magic `MAWALv01`, followed by records.
//! * A record is a 32-byte header and a payload (a snappy-compressed `WriteRequest` holding
//!   samples of one shard): `len u32 | crc32 u32 | shard u16 | flags u16 | samples u32 |
//!   min_ts i64 | max_ts i64` (little endian). The CRC covers header bytes 8..32 and the payload.
//! * Appends are fsync'd before they are acknowledged and before readers can see them.
//! * The `cursor` file stores one send position per shard. It is replaced atomically
//!   (write, fsync, rename, fsync dir). A lagging cursor only re-sends data (at least once).
//! * At start-up the last segment is scanned and a torn tail is truncated; writing always
//!   continues in a fresh segment.
//! * The total size is capped (`max_bytes`, oldest segments dropped first) and so is the age
//!   (`max_age`); every dropped unsent sample is counted in
//!   `metrics_agent_wal_dropped_samples_total`. Segments set aside as unreadable
//!   (`NNNN.corrupt`) count towards the size cap and are the first to go when it is reached.
//!
//! Files: `record.rs` (framing, CRC), `segment.rs` (segment files, start-up scan and repair),
//! `cursor.rs` (the cursor file), `writer.rs` (appends, rotation), `reader.rs` (per-shard
//! reads); this file holds the shared state, opening, bounds and maintenance.

mod cursor;
mod reader;
mod record;
mod segment;
mod writer;

pub use reader::{Batch, WalReader};
pub use record::{HEADER_LEN, RecordIn, RecordOut};
pub use writer::WalWriter;

use crate::clock::now_ms;
use crate::self_metrics::AgentMetrics;
use cursor::{read_cursor, write_cursor};
use record::{MAX_RECORD, decode_header};
use segment::{SEG_HEADER_LEN, SegInfo, corrupt_path, create_segment, scan_segment, seg_path};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn ioerr(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A position in the log: segment id and byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

#[derive(Debug, Clone)]
pub struct WalOptions {
    pub segment_bytes: u64,
    pub max_bytes: u64,
    pub max_age: Duration,
    pub shards: usize,
}

struct State {
    segments: BTreeMap<u64, SegInfo>,
    /// Unreadable segments set aside as `NNNN.corrupt`: id -> size in bytes.
    corrupt: BTreeMap<u64, u64>,
    head: Position,
    cursors: Vec<Position>,
    cursors_dirty: bool,
}

struct Shared {
    dir: PathBuf,
    opts: WalOptions,
    remote: String,
    metrics: AgentMetrics,
    state: Mutex<State>,
    head_tx: watch::Sender<Position>,
}

impl State {
    /// Bytes on disk: segments and the corrupt files set aside.
    fn total_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum::<u64>() + self.corrupt.values().sum::<u64>()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn seg_path(&self, id: u64) -> PathBuf {
        seg_path(&self.dir, id)
    }

    fn update_gauges(&self, st: &State) {
        let total = st.total_bytes();
        self.metrics
            .wal_bytes
            .with_label_values(&[&self.remote])
            .set(total as i64);
        self.metrics
            .wal_segments
            .with_label_values(&[&self.remote])
            .set(st.segments.len() as i64);
    }

    fn drop_count(&self, reason: &str, n: u64) {
        if n > 0 {
            self.metrics
                .wal_dropped
                .with_label_values(&[&self.remote, reason])
                .inc_by(n);
        }
    }

    /// Counts samples in `seg` that some shard has not sent yet.
    fn unsent_in_segment(&self, seg: u64, cursors: &[Position]) -> u64 {
        let Ok(f) = File::open(self.seg_path(seg)) else {
            return 0;
        };
        let n = cursors.len().max(1);
        let mut off = SEG_HEADER_LEN;
        let mut unsent = 0u64;
        let mut h = [0u8; HEADER_LEN as usize];
        while f.read_exact_at(&mut h, off).is_ok() {
            let hdr = decode_header(&h);
            if hdr.len > MAX_RECORD {
                break;
            }
            let shard = hdr.shard as usize % n;
            let here = Position {
                segment: seg,
                offset: off,
            };
            if cursors.get(shard).is_none_or(|c| here >= *c) {
                unsent += u64::from(hdr.samples);
            }
            off += HEADER_LEN + u64::from(hdr.len);
        }
        unsent
    }

    /// Deletes corrupt files, then the oldest segments (never the head), until the WAL is
    /// within `max_bytes`.
    fn enforce_size(&self, st: &mut State) {
        while st.total_bytes() > self.opts.max_bytes {
            if let Some((id, size)) = st.corrupt.pop_first() {
                let path = corrupt_path(&self.dir, id);
                match fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::warn!(remote = %self.remote, "WAL over its size cap: deleted the unreadable {} ({size} bytes)", path.display())
                    }
                    Err(e) => {
                        tracing::warn!(remote = %self.remote, "removing {}: {e}", path.display())
                    }
                }
                continue;
            }
            let Some(oldest) = st.segments.keys().next().copied() else {
                return;
            };
            if oldest == st.head.segment {
                return;
            }
            self.remove_segment(st, oldest, "wal_full");
        }
    }

    /// Removes segment `seg` (never the head), counting unsent samples as dropped for `reason`.
    fn remove_segment(&self, st: &mut State, seg: u64, reason: &str) {
        let unsent = self.unsent_in_segment(seg, &st.cursors);
        self.drop_count(reason, unsent);
        st.segments.remove(&seg);
        if let Err(e) = fs::remove_file(self.seg_path(seg)) {
            tracing::warn!(remote = %self.remote, "removing WAL segment {seg}: {e}");
        }
        let next = st
            .segments
            .range(seg + 1..)
            .next()
            .map(|(id, _)| *id)
            .unwrap_or(st.head.segment);
        let floor = Position {
            segment: next,
            offset: SEG_HEADER_LEN,
        };
        for c in st.cursors.iter_mut() {
            if *c < floor {
                *c = floor;
                st.cursors_dirty = true;
            }
        }
        if unsent > 0 {
            tracing::warn!(remote = %self.remote, "WAL dropped segment {seg} with {unsent} unsent samples ({reason})");
        }
    }
}

/// Handle to an open WAL. Create readers with [`Wal::reader`] and one writer with
/// [`Wal::writer`] (taken once).
pub struct Wal {
    shared: Arc<Shared>,
    writer: Mutex<Option<WalWriter>>,
}

/// What start-up recovery found.
#[derive(Debug, Default, Clone)]
pub struct Recovery {
    pub segments: usize,
    pub truncated_bytes: u64,
    pub unsent_samples: u64,
}

impl Wal {
    /// Opens (or creates) the WAL in `dir`, repairing a torn tail.
    pub fn open(
        dir: &Path,
        opts: WalOptions,
        remote: &str,
        metrics: AgentMetrics,
    ) -> Result<(Wal, Recovery), WalError> {
        fs::create_dir_all(dir).map_err(ioerr(dir))?;
        let mut ids: Vec<u64> = Vec::new();
        let mut corrupt = BTreeMap::new();
        for e in fs::read_dir(dir).map_err(ioerr(dir))? {
            let e = e.map_err(ioerr(dir))?;
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(stem) = name.strip_suffix(".seg")
                && let Ok(id) = stem.parse::<u64>()
            {
                ids.push(id);
            } else if let Some(stem) = name.strip_suffix(".corrupt")
                && let Ok(id) = stem.parse::<u64>()
            {
                let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                corrupt.insert(id, size);
            }
        }
        ids.sort_unstable();
        let mut rec = Recovery::default();
        let mut segments = BTreeMap::new();
        let last = ids.last().copied();
        for id in &ids {
            let p = seg_path(dir, *id);
            match scan_segment(&p, Some(*id) == last) {
                Ok((info, truncated)) => {
                    if truncated > 0 {
                        rec.truncated_bytes += truncated;
                        metrics
                            .wal_repaired_bytes
                            .with_label_values(&[remote])
                            .inc_by(truncated);
                        metrics.wal_corruptions.with_label_values(&[remote]).inc();
                        tracing::warn!(
                            "WAL {}: truncated {truncated} bytes of a torn write",
                            p.display()
                        );
                    }
                    segments.insert(*id, info);
                }
                Err(e) => {
                    metrics.wal_corruptions.with_label_values(&[remote]).inc();
                    tracing::error!("WAL {}: unreadable segment skipped: {e}", p.display());
                    let bad = corrupt_path(dir, *id);
                    match fs::rename(&p, &bad) {
                        Ok(()) => {
                            let size = fs::metadata(&bad).map(|m| m.len()).unwrap_or(0);
                            corrupt.insert(*id, size);
                        }
                        Err(e) => tracing::error!("WAL {}: cannot set aside: {e}", p.display()),
                    }
                }
            }
        }
        rec.segments = segments.len();
        let head_id = ids.last().map(|i| i + 1).unwrap_or(1);
        let first = segments.keys().next().copied().unwrap_or(head_id);
        let start = Position {
            segment: first,
            offset: SEG_HEADER_LEN,
        };
        let mut cursors = match read_cursor(&dir.join("cursor")) {
            Some(c) if c.len() == opts.shards => c,
            Some(c) => {
                // Shard count changed: restart every shard from the oldest saved position.
                let min = c.iter().min().copied().unwrap_or(start);
                vec![min; opts.shards]
            }
            None => vec![start; opts.shards],
        };
        for c in cursors.iter_mut() {
            if let Some(info) = segments.get(&c.segment) {
                c.offset = c.offset.clamp(SEG_HEADER_LEN, info.size);
            } else {
                // Segment gone (sent and removed, or dropped): continue at the next one.
                let next = segments
                    .range(c.segment..)
                    .next()
                    .map(|(i, _)| *i)
                    .unwrap_or(head_id);
                *c = Position {
                    segment: next,
                    offset: SEG_HEADER_LEN,
                };
            }
        }
        // Open the new head segment.
        let file = create_segment(dir, head_id)?;
        segments.insert(
            head_id,
            SegInfo {
                size: SEG_HEADER_LEN,
                max_ts: i64::MIN,
            },
        );
        let head = Position {
            segment: head_id,
            offset: SEG_HEADER_LEN,
        };
        let (head_tx, _) = watch::channel(head);
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            opts,
            remote: remote.to_string(),
            metrics,
            state: Mutex::new(State {
                segments,
                corrupt,
                head,
                cursors,
                cursors_dirty: true,
            }),
            head_tx,
        });
        {
            let mut st = shared.lock();
            // Segments set aside as corrupt by earlier runs count towards the cap too.
            shared.enforce_size(&mut st);
            let mut unsent = 0;
            for id in st.segments.keys() {
                if *id != head_id {
                    unsent += shared.unsent_in_segment(*id, &st.cursors);
                }
            }
            rec.unsent_samples = unsent;
            shared
                .metrics
                .wal_replayed_samples
                .with_label_values(&[remote])
                .inc_by(unsent);
            shared.update_gauges(&st);
        }
        let writer = WalWriter {
            shared: shared.clone(),
            file,
            head,
        };
        Ok((
            Wal {
                shared,
                writer: Mutex::new(Some(writer)),
            },
            rec,
        ))
    }

    /// Takes the single writer.
    pub fn writer(&self) -> Option<WalWriter> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// A reader for `shard`, starting at that shard's saved cursor.
    pub fn reader(&self, shard: usize) -> WalReader {
        let pos = self
            .shared
            .lock()
            .cursors
            .get(shard)
            .copied()
            .unwrap_or_default();
        WalReader {
            shared: self.shared.clone(),
            shard,
            pos,
            head_rx: self.shared.head_tx.subscribe(),
            file: None,
        }
    }

    /// Saves cursors if they changed and applies the age bound and cleanup of sent segments.
    pub fn maintain(&self) -> Result<(), WalError> {
        let sh = &self.shared;
        let mut st = sh.lock();
        let cutoff = now_ms() - sh.opts.max_age.as_millis() as i64;
        let head_seg = st.head.segment;
        let min_cursor = st.cursors.iter().min().copied().unwrap_or(st.head);
        let ids: Vec<u64> = st.segments.keys().copied().collect();
        for id in ids {
            if id == head_seg {
                continue;
            }
            let Some(info) = st.segments.get(&id).copied() else {
                continue;
            };
            if min_cursor.segment > id {
                // Fully sent by every shard.
                st.segments.remove(&id);
                if let Err(e) = fs::remove_file(sh.seg_path(id)) {
                    tracing::warn!("removing sent WAL segment {id}: {e}");
                }
            } else if info.max_ts < cutoff {
                sh.remove_segment(&mut st, id, "too_old");
            }
        }
        sh.update_gauges(&st);
        if st.cursors_dirty {
            let cursors = st.cursors.clone();
            st.cursors_dirty = false;
            drop(st);
            write_cursor(&sh.dir, &cursors)?;
        }
        Ok(())
    }

    /// The shards' send positions (changes whenever something was sent).
    pub fn progress(&self) -> Vec<Position> {
        self.shared.lock().cursors.clone()
    }

    /// True when every shard has sent everything appended so far.
    pub fn fully_sent(&self) -> bool {
        let st = self.shared.lock();
        st.cursors.iter().all(|c| *c >= st.head)
    }
}

#[cfg(test)]
mod tests {
    use super::record::encode_header;
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;

    fn opts(shards: usize) -> WalOptions {
        WalOptions {
            segment_bytes: 4096,
            max_bytes: 1 << 30,
            max_age: Duration::from_secs(3600),
            shards,
        }
    }

    fn rec(shard: u16, n: u32, tag: u8) -> RecordIn {
        RecordIn {
            shard,
            samples: n,
            min_ts: now_ms(),
            max_ts: now_ms(),
            payload: vec![tag; 100],
        }
    }

    async fn drain(r: &mut WalReader) -> Vec<u8> {
        let mut tags = Vec::new();
        loop {
            let b = tokio::time::timeout(Duration::from_millis(100), r.next_batch(1_000_000)).await;
            match b {
                Ok(b) => {
                    tags.extend(b.records.iter().map(|r| r.payload[0]));
                    r.commit(b.end);
                }
                Err(_) => return tags,
            }
        }
    }

    #[tokio::test]
    async fn append_read_commit_and_restart_resumes_at_cursor() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = AgentMetrics::new();
        {
            let (wal, _) = Wal::open(dir.path(), opts(2), "t", m.clone()).expect("open");
            let mut w = wal.writer().expect("writer");
            for i in 0..60u8 {
                w.append(&[rec(u16::from(i % 2), 10, i)]).expect("append");
            }
            let mut r0 = wal.reader(0);
            let got = drain(&mut r0).await;
            assert_eq!(got, (0..60).step_by(2).collect::<Vec<u8>>());
            // Shard 1 reads only half before the "crash".
            let mut r1 = wal.reader(1);
            let b = r1.next_batch(150).await;
            assert_eq!(b.records.len(), 15);
            r1.commit(b.end);
            wal.maintain().expect("maintain");
        }
        let (wal, rec) = Wal::open(dir.path(), opts(2), "t", m).expect("reopen");
        assert_eq!(rec.unsent_samples, 150);
        let mut r0 = wal.reader(0);
        assert!(drain(&mut r0).await.is_empty());
        let mut r1 = wal.reader(1);
        assert_eq!(
            drain(&mut r1).await,
            (31..60).step_by(2).collect::<Vec<u8>>()
        );
    }

    #[tokio::test]
    async fn torn_tail_is_truncated_and_earlier_records_survive() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = AgentMetrics::new();
        let seg;
        {
            let (wal, _) = Wal::open(dir.path(), opts(1), "t", m.clone()).expect("open");
            let mut w = wal.writer().expect("writer");
            w.append(&[rec(0, 5, 1), rec(0, 5, 2)]).expect("append");
            seg = seg_path(dir.path(), w.head.segment);
        }
        // Simulate a crash in the middle of a third record: header written, payload partial.
        let mut torn = encode_header(&rec(0, 5, 3)).to_vec();
        torn.extend_from_slice(&[3u8; 40]);
        let mut f = OpenOptions::new()
            .append(true)
            .open(&seg)
            .expect("open seg");
        f.write_all(&torn).expect("write");
        drop(f);
        // And a record with a flipped payload byte after it would also be cut.
        let (wal, rec) = Wal::open(dir.path(), opts(1), "t", m.clone()).expect("reopen");
        assert_eq!(rec.truncated_bytes, torn.len() as u64);
        assert_eq!(
            m.wal_repaired_bytes.with_label_values(&["t"]).get(),
            torn.len() as u64
        );
        let mut r = wal.reader(0);
        assert_eq!(drain(&mut r).await, vec![1, 2]);
    }

    #[tokio::test]
    async fn bit_flip_in_last_segment_truncates_from_that_record() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = AgentMetrics::new();
        let seg;
        {
            let (wal, _) = Wal::open(dir.path(), opts(1), "t", m.clone()).expect("open");
            let mut w = wal.writer().expect("writer");
            w.append(&[rec(0, 5, 1), rec(0, 5, 2), rec(0, 5, 3)])
                .expect("append");
            seg = seg_path(dir.path(), w.head.segment);
        }
        let mut bytes = fs::read(&seg).expect("read");
        let second_payload = (SEG_HEADER_LEN + HEADER_LEN + 100 + HEADER_LEN + 7) as usize;
        bytes[second_payload] ^= 0xff;
        fs::write(&seg, &bytes).expect("write");
        let (wal, _) = Wal::open(dir.path(), opts(1), "t", m).expect("reopen");
        let mut r = wal.reader(0);
        assert_eq!(drain(&mut r).await, vec![1]);
    }

    #[tokio::test]
    async fn size_cap_drops_oldest_unsent_and_counts_them() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = AgentMetrics::new();
        let o = WalOptions {
            segment_bytes: 1000,
            max_bytes: 3000,
            ..opts(1)
        };
        let (wal, _) = Wal::open(dir.path(), o, "t", m.clone()).expect("open");
        let mut w = wal.writer().expect("writer");
        for i in 0..100u8 {
            w.append(&[rec(0, 7, i)]).expect("append");
            let total: u64 = fs::read_dir(dir.path())
                .expect("ls")
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum();
            assert!(total <= 3000, "WAL is {total} bytes");
        }
        let dropped = m.wal_dropped.with_label_values(&["t", "wal_full"]).get();
        assert!(dropped > 0);
        let mut r = wal.reader(0);
        let got = drain(&mut r).await;
        assert_eq!(dropped + got.len() as u64 * 7, 700);
        assert_eq!(*got.last().expect("some"), 99);
    }

    #[tokio::test]
    async fn records_older_than_max_age_are_dropped_and_counted() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = AgentMetrics::new();
        let (wal, _) = Wal::open(dir.path(), opts(1), "t", m.clone()).expect("open");
        let mut w = wal.writer().expect("writer");
        let mut old = rec(0, 4, 1);
        old.max_ts = now_ms() - 7_200_000;
        w.append(&[old, rec(0, 3, 2)]).expect("append");
        let mut r = wal.reader(0);
        assert_eq!(drain(&mut r).await, vec![2]);
        assert_eq!(m.wal_dropped.with_label_values(&["t", "too_old"]).get(), 4);
    }

    #[tokio::test]
    async fn corrupt_cursor_replays_everything() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = AgentMetrics::new();
        {
            let (wal, _) = Wal::open(dir.path(), opts(1), "t", m.clone()).expect("open");
            let mut w = wal.writer().expect("writer");
            w.append(&[rec(0, 1, 1), rec(0, 1, 2)]).expect("append");
            let mut r = wal.reader(0);
            let b = r.next_batch(100).await;
            r.commit(b.end);
            wal.maintain().expect("maintain");
        }
        fs::write(dir.path().join("cursor"), b"garbage").expect("write");
        let (wal, _) = Wal::open(dir.path(), opts(1), "t", m).expect("reopen");
        let mut r = wal.reader(0);
        assert_eq!(drain(&mut r).await, vec![1, 2]);
    }

    fn wal_files_size(dir: &Path) -> u64 {
        fs::read_dir(dir)
            .expect("ls")
            .filter_map(|e| e.ok())
            .filter(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                n.ends_with(".seg") || n.ends_with(".corrupt")
            })
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    #[tokio::test]
    async fn corrupt_segments_count_towards_the_size_cap() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = AgentMetrics::new();
        let o = WalOptions {
            segment_bytes: 1000,
            max_bytes: 3000,
            ..opts(1)
        };
        let first;
        {
            let (wal, _) = Wal::open(dir.path(), o.clone(), "t", m.clone()).expect("open");
            let mut w = wal.writer().expect("writer");
            first = w.head.segment;
            for i in 0..20u8 {
                w.append(&[rec(0, 1, i)]).expect("append");
            }
        }
        // A middle segment becomes unreadable: it is set aside as `.corrupt` on open.
        let mut bytes = fs::read(seg_path(dir.path(), first)).expect("read");
        bytes[0] ^= 0xff;
        fs::write(seg_path(dir.path(), first), &bytes).expect("write");
        // Earlier runs left big corrupt files behind: they are deleted first.
        fs::write(corrupt_path(dir.path(), 0), vec![0u8; 5000]).expect("write");
        let (wal, _) = Wal::open(dir.path(), o, "t", m.clone()).expect("reopen");
        assert!(!corrupt_path(dir.path(), 0).exists());
        assert!(wal_files_size(dir.path()) <= 3000);
        let mut w = wal.writer().expect("writer");
        for i in 0..100u8 {
            w.append(&[rec(0, 1, i)]).expect("append");
            let total = wal_files_size(dir.path());
            assert!(total <= 3000, "WAL with corrupt files is {total} bytes");
        }
        assert!(!corrupt_path(dir.path(), first).exists());
        let gauge = m.wal_bytes.with_label_values(&["t"]).get() as u64;
        assert_eq!(gauge, wal_files_size(dir.path()));
    }
}
