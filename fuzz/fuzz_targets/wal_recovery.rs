//! WAL recovery: arbitrary bytes written as WAL segment files (and optionally a cursor
//! file), then `metrics_agent::wal::Wal::open` as at start-up, every shard's reader
//! drained, and the sender's merge of what it read (`merge::concat`).
//!
//! Invariants: opening succeeds (a torn tail is truncated, an unreadable segment is set
//! aside as `.corrupt`: recovered or quarantined, never a panic or an error); each input
//! segment is still there or quarantined (unless the size cap dropped it); readers
//! terminate; and the WAL still works afterwards: a record appended after recovery
//! reaches its shard's reader.
//!
//! Input: byte 0 flags (bits 0-1: segments - 1; bit 2: a cursor file follows; bit 3:
//! prefix each segment with the magic; bit 4: fix record CRCs so framing mutations get
//! past the checksum; bit 5: a 4 KiB size cap; bit 6: a one-hour age cap), byte 1 shards
//! - 1 (mod 4), then if bit 2: a count byte (mod 5) and that many (segment u64, offset
//! u64) little-endian positions; then every segment but the last as a u16 LE length and
//! its bytes, the last one the rest.
#![no_main]

use std::future::Future;
use std::path::PathBuf;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use metrics_agent::self_metrics::AgentMetrics;
use metrics_agent::wal::{RecordIn, Wal, WalOptions};

const MAGIC: &[u8] = b"MAWALv01";
const CURSOR_MAGIC: &[u8] = b"MACURv01";
const HEADER: usize = 32;

struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn byte(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }
    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let t = self.take(8);
        b[..t.len()].copy_from_slice(t);
        u64::from_le_bytes(b)
    }
}

/// Rewrites the CRC of every record whose framing fits in the segment.
fn fix_crcs(seg: &mut [u8]) {
    let mut off = MAGIC.len();
    while off + HEADER <= seg.len() {
        let len = u32::from_le_bytes([seg[off], seg[off + 1], seg[off + 2], seg[off + 3]]) as usize;
        let end = off + HEADER + len;
        if end > seg.len() {
            return;
        }
        let mut c = crc32fast::Hasher::new();
        c.update(&seg[off + 8..off + HEADER]);
        c.update(&seg[off + HEADER..end]);
        seg[off + 4..off + 8].copy_from_slice(&c.finalize().to_le_bytes());
        off = end;
    }
}

fn poll_once<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

fn scratch_dir() -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!("edge-fuzz-wal-{}", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Bytes(data);
    let flags = inp.byte();
    let nseg = usize::from(flags & 3) + 1;
    let shards = usize::from(inp.byte() % 4) + 1;
    let dir = scratch_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");

    if flags & 4 != 0 {
        let n = usize::from(inp.byte() % 5);
        let mut b = CURSOR_MAGIC.to_vec();
        b.extend_from_slice(&(n as u32).to_le_bytes());
        for _ in 0..n {
            b.extend_from_slice(&inp.u64().to_le_bytes());
            b.extend_from_slice(&inp.u64().to_le_bytes());
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        std::fs::write(dir.join("cursor"), b).expect("write cursor");
    }
    for id in 1..=nseg {
        let body = if id < nseg {
            let n = inp.take(2);
            let n = usize::from(u16::from_le_bytes([
                n.first().copied().unwrap_or(0),
                n.get(1).copied().unwrap_or(0),
            ]));
            inp.take(n)
        } else {
            inp.take(usize::MAX)
        };
        let mut seg = Vec::with_capacity(body.len() + MAGIC.len());
        if flags & 8 != 0 {
            seg.extend_from_slice(MAGIC);
        }
        seg.extend_from_slice(body);
        if flags & 16 != 0 {
            fix_crcs(&mut seg);
        }
        std::fs::write(dir.join(format!("{id:020}.seg")), seg).expect("write segment");
    }

    let capped = flags & 32 != 0;
    let opts = WalOptions {
        segment_bytes: 64 << 10,
        max_bytes: if capped { 4096 } else { 1 << 30 },
        max_age: Duration::from_secs(if flags & 64 != 0 {
            3600
        } else {
            10 * 365 * 86_400
        }),
        shards,
    };
    let (wal, _recovery) = Wal::open(&dir, opts, "fuzz", AgentMetrics::new())
        .expect("recovery never fails on bad data");
    if !capped {
        for id in 1..=nseg {
            let seg = dir.join(format!("{id:020}.seg"));
            let bad = dir.join(format!("{id:020}.corrupt"));
            assert!(
                seg.exists() || bad.exists(),
                "segment {id} neither recovered nor quarantined"
            );
        }
    }

    // Drain every shard, as the senders would, and merge what they read.
    let mut readers: Vec<_> = (0..shards).map(|s| wal.reader(s)).collect();
    for r in readers.iter_mut() {
        let mut rounds = 0;
        while let Some(batch) = poll_once(r.next_batch(1000)) {
            assert!(!batch.records.is_empty());
            let _ =
                metrics_agent::merge::concat(batch.records.iter().map(|r| r.payload.as_slice()));
            r.commit(batch.end);
            rounds += 1;
            assert!(rounds < 100_000, "reader does not terminate");
        }
    }
    wal.maintain().expect("maintain after recovery");

    // The recovered WAL still takes and delivers new records.
    let mut w = wal.writer().expect("writer");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let marker = b"fuzz-marker-after-recovery".to_vec();
    w.append(&[RecordIn {
        shard: 0,
        samples: 1,
        min_ts: now,
        max_ts: now,
        payload: marker.clone(),
    }])
    .expect("append after recovery");
    let batch = poll_once(readers[0].next_batch(1000)).expect("the new record is readable");
    assert!(
        batch.records.iter().any(|r| r.payload == marker),
        "the record appended after recovery was not delivered"
    );
    drop(readers);
    drop(w);
    drop(wal);
    let _ = std::fs::remove_dir_all(&dir);
});
