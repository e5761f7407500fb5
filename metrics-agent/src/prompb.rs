//! Remote-write 1.0 protobuf messages (`prometheus.WriteRequest`) and a fast encoder.
//!
//! The prost types describe the wire format; tests decode requests with them and check the
//! fast encoder against prost's own encoding. The hot path encodes
//! each series' labels once (cached per series) and splices those bytes into requests.

use crate::labels::Labels;
use prost::encoding::{encode_varint, encoded_len_varint};

#[cfg(test)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

#[cfg(test)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[cfg(test)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[cfg(test)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

const TAG_LEN_1: u8 = 0x0a; // field 1, length-delimited
const TAG_LEN_2: u8 = 0x12; // field 2, length-delimited
const TAG_F64_1: u8 = 0x09; // field 1, 64-bit
const TAG_VARINT_2: u8 = 0x10; // field 2, varint

fn put_bytes_field(tag: u8, data: &[u8], buf: &mut Vec<u8>) {
    buf.push(tag);
    encode_varint(data.len() as u64, buf);
    buf.extend_from_slice(data);
}

/// Encodes the `labels` field of a TimeSeries (repeated Label, field 1).
pub fn encode_labels(labels: &Labels) -> Vec<u8> {
    let mut out = Vec::with_capacity(labels.len() * 24);
    let mut one = Vec::with_capacity(64);
    for (n, v) in labels.iter() {
        one.clear();
        put_bytes_field(TAG_LEN_1, n.as_bytes(), &mut one);
        put_bytes_field(TAG_LEN_2, v.as_bytes(), &mut one);
        put_bytes_field(TAG_LEN_1, &one, &mut out);
    }
    out
}

fn sample_len(value: f64, ts: i64) -> usize {
    let mut n = 0;
    if value != 0.0 {
        n += 9;
    }
    if ts != 0 {
        n += 1 + encoded_len_varint(ts as u64);
    }
    n
}

/// Appends one TimeSeries with a single sample to a WriteRequest body.
pub fn append_series(label_bytes: &[u8], value: f64, ts: i64, buf: &mut Vec<u8>) {
    let slen = sample_len(value, ts);
    let ts_len = label_bytes.len() + 1 + encoded_len_varint(slen as u64) + slen;
    buf.push(TAG_LEN_1);
    encode_varint(ts_len as u64, buf);
    buf.extend_from_slice(label_bytes);
    buf.push(TAG_LEN_2);
    encode_varint(slen as u64, buf);
    if value != 0.0 {
        buf.push(TAG_F64_1);
        buf.extend_from_slice(&value.to_le_bytes());
    }
    if ts != 0 {
        buf.push(TAG_VARINT_2);
        encode_varint(ts as u64, buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::stale_nan;
    use prost::Message;

    #[test]
    fn fast_encoder_matches_prost() {
        let l1 = Labels::from_pairs([("__name__", "up"), ("job", "a"), ("instance", "x:1")]);
        let l2 = Labels::from_pairs([("__name__", "zero"), ("ü", "∂")]);
        let mut body = Vec::new();
        append_series(&encode_labels(&l1), 1.0, 1_700_000_000_123, &mut body);
        append_series(&encode_labels(&l2), 0.0, 0, &mut body);
        append_series(&encode_labels(&l1), stale_nan(), -5, &mut body);
        let to_pb = |l: &Labels| {
            l.iter()
                .map(|(n, v)| Label {
                    name: n.into(),
                    value: v.into(),
                })
                .collect::<Vec<_>>()
        };
        let want = WriteRequest {
            timeseries: vec![
                TimeSeries {
                    labels: to_pb(&l1),
                    samples: vec![Sample {
                        value: 1.0,
                        timestamp: 1_700_000_000_123,
                    }],
                },
                TimeSeries {
                    labels: to_pb(&l2),
                    samples: vec![Sample {
                        value: 0.0,
                        timestamp: 0,
                    }],
                },
                TimeSeries {
                    labels: to_pb(&l1),
                    samples: vec![Sample {
                        value: stale_nan(),
                        timestamp: -5,
                    }],
                },
            ],
        };
        assert_eq!(body, want.encode_to_vec());
        let back = WriteRequest::decode(body.as_slice()).expect("decode");
        assert_eq!(
            back.timeseries[2].samples[0].value.to_bits(),
            stale_nan().to_bits()
        );
    }
}
