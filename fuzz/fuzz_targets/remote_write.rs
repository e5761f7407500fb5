//! remote_write encoding round-trip: samples encoded as the agent ships them
//! (`prompb::encode_labels` + `prompb::append_series` per record, each record
//! snappy-compressed as the WAL stores it, records spliced by `merge::concat` into one
//! body as the sender does), then decoded with an independent decoder (snappy + prost's
//! `WriteRequest`) must give back exactly the input samples, in order: label pairs, value
//! bits (stale-marker NaN included; +0.0 and -0.0 are the same protobuf default) and
//! timestamps. `merge::concat` is also fed the raw input bytes (it must answer an error
//! or a block, never a panic).
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use metrics_agent::labels::Labels;
use metrics_agent::{merge, prompb};
use prost::Message;

#[derive(Debug, Arbitrary)]
struct Input {
    /// Records of samples: (label pairs, value, timestamp).
    records: Vec<Vec<(Vec<(String, String)>, f64, i64)>>,
    raw_blocks: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, Message)]
struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, Message)]
struct Label {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}

#[derive(Clone, PartialEq, Message)]
struct Sample {
    #[prost(double, tag = "1")]
    value: f64,
    #[prost(int64, tag = "2")]
    timestamp: i64,
}

fn same_value(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a == 0.0 && b == 0.0)
}

fuzz_target!(|input: Input| {
    // The merge on arbitrary blocks.
    if let Ok(block) = merge::concat(input.raw_blocks.iter().map(Vec::as_slice)) {
        let _ = snap::raw::Decoder::new().decompress_vec(&block);
    }

    let mut encoder = snap::raw::Encoder::new();
    let mut want: Vec<(Labels, f64, i64)> = Vec::new();
    let mut payloads = Vec::new();
    for record in &input.records {
        let mut body = Vec::new();
        for (pairs, value, ts) in record {
            let labels = Labels::from_pairs(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            prompb::append_series(&prompb::encode_labels(&labels), *value, *ts, &mut body);
            want.push((labels, *value, *ts));
        }
        payloads.push(encoder.compress_vec(&body).expect("snappy compress"));
    }
    let merged = merge::concat(payloads.iter().map(Vec::as_slice)).expect("merge");
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&merged)
        .expect("merged body is valid snappy");
    let req = WriteRequest::decode(raw.as_slice()).expect("merged body is a WriteRequest");
    assert_eq!(req.timeseries.len(), want.len());
    for (ts, (labels, value, t)) in req.timeseries.iter().zip(&want) {
        let got: Vec<(&str, &str)> = ts
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        let exp: Vec<(&str, &str)> = labels.iter().collect();
        assert_eq!(got, exp);
        assert_eq!(ts.samples.len(), 1);
        assert!(
            same_value(ts.samples[0].value, *value),
            "value {value} came back as {}",
            ts.samples[0].value
        );
        assert_eq!(ts.samples[0].timestamp, *t);
    }
});
