//! Merging WAL records into one remote-write body without recompressing them.
//!
//! Each record payload is a snappy raw block of a `WriteRequest` holding only `timeseries`
//! (field 1). Two such messages concatenated are the message with both lists, and snappy
//! raw blocks concatenate too: a block is its uncompressed length (a varint) followed by
//! literal and copy elements, and a copy's offset counts back from the current output
//! position. A block compressed on its own never copies from before its own start, so
//! its elements decode to the same bytes after another block's. The merged body is
//! therefore the varint of the summed lengths followed by every record's elements: no
//! decompression, no compression, one copy of the compressed bytes.

/// A payload whose snappy header cannot be read, or a merge too large for snappy.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MergeError {
    #[error("record {0}: invalid snappy length header")]
    Header(usize),
    #[error("merged body of {0} bytes is over snappy's 4 GiB limit")]
    TooLarge(u64),
}

/// Reads a snappy raw block's header: (uncompressed length, header bytes).
fn block_header(payload: &[u8]) -> Option<(u64, usize)> {
    let mut len = 0u64;
    for (i, b) in payload.iter().take(5).enumerate() {
        len |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (len <= u64::from(u32::MAX)).then_some((len, i + 1));
        }
    }
    None
}

/// Concatenates snappy raw blocks into one block that decodes to their concatenation.
pub fn concat<'a>(
    blocks: impl ExactSizeIterator<Item = &'a [u8]> + Clone,
) -> Result<Vec<u8>, MergeError> {
    let mut total = 0u64;
    let mut size = 0usize;
    for (i, b) in blocks.clone().enumerate() {
        let (len, hdr) = block_header(b).ok_or(MergeError::Header(i))?;
        total += len;
        size += b.len() - hdr;
    }
    if total > u64::from(u32::MAX) {
        return Err(MergeError::TooLarge(total));
    }
    let mut out = Vec::with_capacity(size + 5);
    let mut v = total;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    for b in blocks {
        let (_, hdr) = block_header(b).ok_or(MergeError::Header(0))?;
        out.extend_from_slice(&b[hdr..]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(b: &[u8]) -> Vec<u8> {
        snap::raw::Encoder::new().compress_vec(b).expect("snappy")
    }

    #[test]
    fn concatenated_blocks_decode_to_the_concatenated_input() {
        // Repetitive inputs (long back-references), an empty one, one over snappy's 64 KiB
        // block size, and incompressible bytes.
        let mut noise = Vec::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..70_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            noise.push(x as u8);
        }
        let inputs: Vec<Vec<u8>> = vec![
            b"abcabcabcabcabcabc_series{job=\"a\"}".repeat(50),
            Vec::new(),
            b"xyz".repeat(40_000),
            noise,
            b"abcabcabcabcabcabc_series{job=\"b\"}".repeat(3),
        ];
        let blocks: Vec<Vec<u8>> = inputs.iter().map(|i| compress(i)).collect();
        let merged = concat(blocks.iter().map(Vec::as_slice)).expect("merge");
        let got = snap::raw::Decoder::new()
            .decompress_vec(&merged)
            .expect("valid snappy");
        assert_eq!(got, inputs.concat());
    }

    #[test]
    fn merged_write_requests_hold_every_series() {
        use crate::labels::Labels;
        use crate::prompb;
        use prost::Message;
        let mut blocks = Vec::new();
        for i in 0..3 {
            let l = prompb::encode_labels(&Labels::from_pairs([
                ("__name__", "m"),
                ("i", &i.to_string()),
            ]));
            let mut body = Vec::new();
            prompb::append_series(&l, f64::from(i), 1000 + i64::from(i), &mut body);
            blocks.push(compress(&body));
        }
        let merged = concat(blocks.iter().map(Vec::as_slice)).expect("merge");
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&merged)
            .expect("snappy");
        let req = prompb::WriteRequest::decode(raw.as_slice()).expect("protobuf");
        assert_eq!(req.timeseries.len(), 3);
        assert_eq!(req.timeseries[2].samples[0].timestamp, 1002);
    }

    #[test]
    fn invalid_headers_are_errors() {
        assert_eq!(
            concat([b"\x80\x80".as_slice()].into_iter()),
            Err(MergeError::Header(0))
        );
        assert_eq!(
            concat([b"\xff\xff\xff\xff\x7f".as_slice()].into_iter()),
            Err(MergeError::Header(0))
        );
    }
}
