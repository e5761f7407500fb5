//! The `cursor` file: one send position per shard, replaced atomically (write, fsync,
//! rename, fsync dir).

use super::segment::sync_dir;
use super::{Position, WalError, ioerr};
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

const CUR_MAGIC: &[u8; 8] = b"MACURv01";

pub(super) fn read_cursor(path: &Path) -> Option<Vec<Position>> {
    let b = fs::read(path).ok()?;
    if b.len() < 16 || &b[0..8] != CUR_MAGIC {
        tracing::warn!(
            "{}: invalid cursor file, replaying from the oldest segment",
            path.display()
        );
        return None;
    }
    let n = u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize;
    let body_end = 12 + n * 16;
    if b.len() != body_end + 4 {
        tracing::warn!(
            "{}: truncated cursor file, replaying from the oldest segment",
            path.display()
        );
        return None;
    }
    let crc = u32::from_le_bytes([
        b[body_end],
        b[body_end + 1],
        b[body_end + 2],
        b[body_end + 3],
    ]);
    if crc32fast::hash(&b[..body_end]) != crc {
        tracing::warn!(
            "{}: cursor checksum mismatch, replaying from the oldest segment",
            path.display()
        );
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let o = 12 + i * 16;
        let mut s = [0u8; 8];
        let mut f = [0u8; 8];
        s.copy_from_slice(&b[o..o + 8]);
        f.copy_from_slice(&b[o + 8..o + 16]);
        out.push(Position {
            segment: u64::from_le_bytes(s),
            offset: u64::from_le_bytes(f),
        });
    }
    Some(out)
}

pub(super) fn write_cursor(dir: &Path, cursors: &[Position]) -> Result<(), WalError> {
    let mut b = Vec::with_capacity(16 + cursors.len() * 16);
    b.extend_from_slice(CUR_MAGIC);
    b.extend_from_slice(&(cursors.len() as u32).to_le_bytes());
    for c in cursors {
        b.extend_from_slice(&c.segment.to_le_bytes());
        b.extend_from_slice(&c.offset.to_le_bytes());
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join("cursor.tmp");
    let dst = dir.join("cursor");
    let mut f = File::create(&tmp).map_err(ioerr(&tmp))?;
    f.write_all(&b).map_err(ioerr(&tmp))?;
    f.sync_all().map_err(ioerr(&tmp))?;
    fs::rename(&tmp, &dst).map_err(ioerr(&dst))?;
    sync_dir(dir).map_err(ioerr(dir))
}
