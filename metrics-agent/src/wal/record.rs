//! WAL records: a 32-byte header (`len u32 | crc32 u32 | shard u16 | flags u16 | samples u32 |
//! min_ts i64 | max_ts i64`, little endian; the CRC covers header bytes 8..32 and the
//! payload) followed by the payload, a snappy-compressed `WriteRequest` of one shard.

pub const HEADER_LEN: u64 = 32;
/// Upper bound for a single record payload; larger lengths mean corruption.
pub(super) const MAX_RECORD: u32 = 256 << 20;

/// A record to append.
pub struct RecordIn {
    pub shard: u16,
    pub samples: u32,
    pub min_ts: i64,
    pub max_ts: i64,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Header {
    pub(super) len: u32,
    pub(super) crc: u32,
    pub(super) shard: u16,
    pub(super) samples: u32,
    pub(super) max_ts: i64,
}

pub(super) fn encode_header(r: &RecordIn) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..4].copy_from_slice(&(r.payload.len() as u32).to_le_bytes());
    h[8..10].copy_from_slice(&r.shard.to_le_bytes());
    h[12..16].copy_from_slice(&r.samples.to_le_bytes());
    h[16..24].copy_from_slice(&r.min_ts.to_le_bytes());
    h[24..32].copy_from_slice(&r.max_ts.to_le_bytes());
    let mut c = crc32fast::Hasher::new();
    c.update(&h[8..32]);
    c.update(&r.payload);
    h[4..8].copy_from_slice(&c.finalize().to_le_bytes());
    h
}

pub(super) fn decode_header(h: &[u8; HEADER_LEN as usize]) -> Header {
    let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&h[24..32]);
    Header {
        len: u32_at(0),
        crc: u32_at(4),
        shard: u16::from_le_bytes([h[8], h[9]]),
        samples: u32_at(12),
        max_ts: i64::from_le_bytes(ts),
    }
}

pub(super) fn crc_ok(h: &[u8; HEADER_LEN as usize], hdr: &Header, payload: &[u8]) -> bool {
    let mut c = crc32fast::Hasher::new();
    c.update(&h[8..32]);
    c.update(payload);
    c.finalize() == hdr.crc
}

/// One record read back for sending.
#[derive(Debug, Clone)]
pub struct RecordOut {
    pub payload: Vec<u8>,
    pub max_ts: i64,
}
