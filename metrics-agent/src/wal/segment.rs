//! Segment files: `NNNNNNNNNNNNNNNNNNNN.seg`, the 8-byte magic `MAWALv01` and records;
//! unreadable ones are set aside as `NNNNNNNNNNNNNNNNNNNN.corrupt`.

use super::record::{HEADER_LEN, MAX_RECORD, crc_ok, decode_header};
use super::{WalError, ioerr};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub(super) const SEG_MAGIC: &[u8; 8] = b"MAWALv01";
pub(super) const SEG_HEADER_LEN: u64 = SEG_MAGIC.len() as u64;

#[derive(Debug, Clone, Copy)]
pub(super) struct SegInfo {
    pub(super) size: u64,
    pub(super) max_ts: i64,
}

pub(super) fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

pub(super) fn corrupt_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.corrupt"))
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Scans a segment. For the last segment (`repair`), a torn or corrupt tail is truncated.
/// Returns the segment info and the number of bytes truncated.
pub(super) fn scan_segment(path: &Path, repair: bool) -> io::Result<(SegInfo, u64)> {
    let f = OpenOptions::new().read(true).write(repair).open(path)?;
    let len = f.metadata()?.len();
    let mut magic = [0u8; 8];
    if len < SEG_HEADER_LEN || f.read_exact_at(&mut magic, 0).is_err() || &magic != SEG_MAGIC {
        if repair {
            // A segment whose magic never reached the disk: rewrite it empty.
            f.set_len(0)?;
            f.write_all_at(SEG_MAGIC, 0)?;
            f.sync_all()?;
            return Ok((
                SegInfo {
                    size: SEG_HEADER_LEN,
                    max_ts: i64::MIN,
                },
                len,
            ));
        }
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad segment magic",
        ));
    }
    let mut off = SEG_HEADER_LEN;
    let mut max_ts = i64::MIN;
    let mut h = [0u8; HEADER_LEN as usize];
    let mut payload = Vec::new();
    while off < len {
        if off + HEADER_LEN > len {
            break;
        }
        f.read_exact_at(&mut h, off)?;
        let hdr = decode_header(&h);
        let end = off + HEADER_LEN + u64::from(hdr.len);
        if hdr.len > MAX_RECORD || end > len {
            break;
        }
        if repair {
            payload.resize(hdr.len as usize, 0);
            f.read_exact_at(&mut payload, off + HEADER_LEN)?;
            if !crc_ok(&h, &hdr, &payload) {
                break;
            }
        }
        max_ts = max_ts.max(hdr.max_ts);
        off = end;
    }
    let truncated = len - off;
    if truncated > 0 {
        if repair {
            f.set_len(off)?;
            f.sync_all()?;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad record framing",
            ));
        }
    }
    Ok((SegInfo { size: off, max_ts }, truncated))
}

/// Creates segment `id` holding only the magic, fsync'd with its directory entry.
pub(super) fn create_segment(dir: &Path, id: u64) -> Result<File, WalError> {
    let path = seg_path(dir, id);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .read(true)
        .open(&path)
        .map_err(ioerr(&path))?;
    f.write_all(SEG_MAGIC).map_err(ioerr(&path))?;
    f.sync_all().map_err(ioerr(&path))?;
    sync_dir(dir).map_err(ioerr(dir))?;
    Ok(f)
}
