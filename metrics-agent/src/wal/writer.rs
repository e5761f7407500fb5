//! The single appender of a WAL.

use super::record::{HEADER_LEN, RecordIn, encode_header};
use super::segment::{SEG_HEADER_LEN, SegInfo, create_segment};
use super::{Position, Shared, WalError, ioerr};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// The single appender. Blocking I/O: run it on a dedicated thread.
pub struct WalWriter {
    pub(super) shared: Arc<Shared>,
    pub(super) file: File,
    pub(super) head: Position,
}

impl WalWriter {
    /// Appends `records`, fsyncs, then publishes them to readers.
    pub fn append(&mut self, records: &[RecordIn]) -> Result<(), WalError> {
        if records.is_empty() {
            return Ok(());
        }
        let sh = self.shared.clone();
        if self.head.offset >= sh.opts.segment_bytes {
            self.rotate()?;
        }
        let path = sh.seg_path(self.head.segment);
        let mut buf = Vec::with_capacity(
            records
                .iter()
                .map(|r| r.payload.len() + HEADER_LEN as usize)
                .sum(),
        );
        let mut max_ts = i64::MIN;
        let mut samples = 0u64;
        for r in records {
            buf.extend_from_slice(&encode_header(r));
            buf.extend_from_slice(&r.payload);
            max_ts = max_ts.max(r.max_ts);
            samples += u64::from(r.samples);
        }
        self.file
            .write_all_at(&buf, self.head.offset)
            .map_err(ioerr(&path))?;
        self.file.sync_data().map_err(ioerr(&path))?;
        self.head.offset += buf.len() as u64;
        {
            let mut st = sh.lock();
            st.head = self.head;
            if let Some(info) = st.segments.get_mut(&self.head.segment) {
                info.size = self.head.offset;
                info.max_ts = info.max_ts.max(max_ts);
            }
            sh.enforce_size(&mut st);
            sh.update_gauges(&st);
        }
        sh.metrics
            .samples_appended
            .with_label_values(&[&sh.remote])
            .inc_by(samples);
        sh.metrics
            .wal_highest_appended_ts
            .with_label_values(&[&sh.remote])
            .set(max_ts as f64 / 1000.0);
        sh.head_tx.send_replace(self.head);
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), WalError> {
        let id = self.head.segment + 1;
        self.file = create_segment(&self.shared.dir, id)?;
        self.head = Position {
            segment: id,
            offset: SEG_HEADER_LEN,
        };
        let mut st = self.shared.lock();
        st.segments.insert(
            id,
            SegInfo {
                size: SEG_HEADER_LEN,
                max_ts: i64::MIN,
            },
        );
        st.head = self.head;
        Ok(())
    }
}
