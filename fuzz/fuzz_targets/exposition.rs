//! The agent's exposition parser on arbitrary text, as a scrape runs it: the Prometheus
//! text format (0.0.4) and OpenMetrics 1.0 (`metrics_agent::parser::parse`), then each
//! sample's series split into name and labels (`parser::parse_series`).
//!
//! Invariant: every sample that parses is written again by the collectors' writer
//! (`collectors::exposition::Exposition`) and parses back to the same name, labels
//! (empty values are omitted by the writer, as Prometheus treats them) and value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metrics_agent::collectors::exposition::Exposition;
use metrics_agent::parser::{self, Format};

fuzz_target!(|data: &[u8]| {
    let body = String::from_utf8_lossy(data);
    for format in [Format::Text, Format::OpenMetrics] {
        let Ok(samples) = parser::parse(&body, format) else {
            continue;
        };
        for s in samples {
            let Ok((name, labels)) = parser::parse_series(s.series) else {
                continue;
            };
            let pairs: Vec<(&str, &str)> = labels
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let mut e = Exposition::new();
            e.sample(&name, &pairs, s.value);
            let text = e.finish();
            let back = parser::parse(&text, Format::Text)
                .unwrap_or_else(|err| panic!("writer output {text:?} does not parse: {err}"));
            assert_eq!(back.len(), 1, "{text:?}");
            let (name2, labels2) = parser::parse_series(back[0].series)
                .unwrap_or_else(|err| panic!("writer series {text:?} does not parse: {err}"));
            assert_eq!(name2, name);
            let want: Vec<(String, String)> = pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            assert_eq!(labels2, want, "{text:?}");
            let v = back[0].value;
            assert!(
                v == s.value || (v.is_nan() && s.value.is_nan()),
                "{text:?}: value {} read back as {v}",
                s.value
            );
        }
    }
});
