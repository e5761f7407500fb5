//! Reading one shard's records back for sending.

use super::record::{HEADER_LEN, MAX_RECORD, RecordOut, crc_ok, decode_header};
use super::segment::SEG_HEADER_LEN;
use super::{Position, Shared};
use crate::clock::now_ms;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Records read for one shard, and the position just past them.
#[derive(Debug, Default)]
pub struct Batch {
    pub records: Vec<RecordOut>,
    pub samples: u64,
    pub end: Position,
}

/// Reads one shard's records in log order.
pub struct WalReader {
    pub(super) shared: Arc<Shared>,
    pub(super) shard: usize,
    pub(super) pos: Position,
    pub(super) head_rx: watch::Receiver<Position>,
    pub(super) file: Option<(u64, File)>,
}

impl WalReader {
    /// Waits until at least one record for this shard is available, then returns up to
    /// `max_samples` samples worth of records (at least one record).
    pub async fn next_batch(&mut self, max_samples: u64) -> Batch {
        loop {
            let head = *self.head_rx.borrow_and_update();
            let batch = self.read_available(head, max_samples);
            if !batch.records.is_empty() {
                return batch;
            }
            // Nothing for this shard up to `head`: remember that we skipped it.
            if batch.end > self.pos {
                self.commit(batch.end);
            }
            if self.head_rx.changed().await.is_err() {
                // Writer gone: nothing more will arrive.
                std::future::pending::<()>().await;
            }
        }
    }

    fn read_available(&mut self, head: Position, max_samples: u64) -> Batch {
        let mut out = Batch {
            end: self.pos,
            ..Batch::default()
        };
        let cutoff = now_ms() - self.shared.opts.max_age.as_millis() as i64;
        let nshards = self.shared.opts.shards.max(1);
        let my_shard = self.shard;
        let mut too_old = 0u64;
        loop {
            let mut pos = out.end;
            if pos >= head {
                break;
            }
            // Find where `pos` lives (the segment may have been removed).
            let seg_size = {
                let st = self.shared.lock();
                match st.segments.get(&pos.segment) {
                    Some(info) => Some(if pos.segment == head.segment {
                        head.offset
                    } else {
                        info.size
                    }),
                    None => {
                        let next = st.segments.range(pos.segment..).next().map(|(i, _)| *i);
                        match next {
                            Some(n) => {
                                pos = Position {
                                    segment: n,
                                    offset: SEG_HEADER_LEN,
                                };
                                out.end = pos;
                                continue;
                            }
                            None => None,
                        }
                    }
                }
            };
            let Some(seg_size) = seg_size else { break };
            if pos.offset < SEG_HEADER_LEN {
                pos.offset = SEG_HEADER_LEN;
            }
            if pos.offset >= seg_size {
                if pos.segment >= head.segment {
                    break;
                }
                let next = self
                    .shared
                    .lock()
                    .segments
                    .range(pos.segment + 1..)
                    .next()
                    .map(|(i, _)| *i);
                match next {
                    Some(n) => {
                        out.end = Position {
                            segment: n,
                            offset: SEG_HEADER_LEN,
                        };
                        continue;
                    }
                    None => break,
                }
            }
            let file = match self.open(pos.segment) {
                Some(f) => f,
                None => {
                    // Segment vanished between the lookup and the open: retry the lookup.
                    out.end = Position {
                        segment: pos.segment + 1,
                        offset: SEG_HEADER_LEN,
                    };
                    continue;
                }
            };
            let mut h = [0u8; HEADER_LEN as usize];
            let hdr = match file.read_exact_at(&mut h, pos.offset) {
                Ok(()) => decode_header(&h),
                Err(_) => {
                    self.corrupt(&mut out, pos);
                    continue;
                }
            };
            let next = Position {
                segment: pos.segment,
                offset: pos.offset + HEADER_LEN + u64::from(hdr.len),
            };
            if hdr.len > MAX_RECORD || next.offset > seg_size {
                self.corrupt(&mut out, pos);
                continue;
            }
            if hdr.shard as usize % nshards != my_shard {
                out.end = next;
                continue;
            }
            if !out.records.is_empty() && out.samples + u64::from(hdr.samples) > max_samples {
                break;
            }
            if hdr.max_ts < cutoff {
                too_old += u64::from(hdr.samples);
                out.end = next;
                continue;
            }
            let mut payload = vec![0u8; hdr.len as usize];
            if file
                .read_exact_at(&mut payload, pos.offset + HEADER_LEN)
                .is_err()
                || !crc_ok(&h, &hdr, &payload)
            {
                self.corrupt(&mut out, pos);
                continue;
            }
            out.samples += u64::from(hdr.samples);
            out.records.push(RecordOut {
                payload,
                max_ts: hdr.max_ts,
            });
            out.end = next;
        }
        self.shared.drop_count("too_old", too_old);
        out
    }

    fn corrupt(&mut self, out: &mut Batch, pos: Position) {
        self.shared
            .metrics
            .wal_corruptions
            .with_label_values(&[&self.shared.remote])
            .inc();
        tracing::error!(remote = %self.shared.remote, "corrupt WAL record at segment {} offset {}: skipping the rest of the segment", pos.segment, pos.offset);
        let next = self
            .shared
            .lock()
            .segments
            .range(pos.segment + 1..)
            .next()
            .map(|(i, _)| *i)
            .unwrap_or(pos.segment + 1);
        out.end = Position {
            segment: next,
            offset: SEG_HEADER_LEN,
        };
    }

    fn open(&mut self, seg: u64) -> Option<&File> {
        if self.file.as_ref().is_none_or(|(id, _)| *id != seg) {
            let f = File::open(self.shared.seg_path(seg)).ok()?;
            self.file = Some((seg, f));
        }
        self.file.as_ref().map(|(_, f)| f)
    }

    /// Marks everything up to `end` as sent (or permanently failed) for this shard.
    pub fn commit(&mut self, end: Position) {
        self.pos = end;
        let mut st = self.shared.lock();
        if let Some(c) = st.cursors.get_mut(self.shard)
            && end > *c
        {
            *c = end;
            st.cursors_dirty = true;
        }
    }

    /// Drops a batch that can never be sent because it is older than the WAL age bound.
    pub fn max_age(&self) -> Duration {
        self.shared.opts.max_age
    }

    /// Counts samples dropped for `reason` (used by the sender for too-old batches).
    pub fn count_dropped(&self, reason: &str, n: u64) {
        self.shared.drop_count(reason, n);
    }
}
