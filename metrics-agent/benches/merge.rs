//! CPU cost of merging WAL records into one remote-write body: the old way (decompress every
//! record, concatenate, compress again) against `merge::concat` (splice the snappy blocks).
//!
//!     cargo bench -p metrics-agent --bench merge
//!
//! Records are built like the WAL writer builds them: realistic series (gateway-style labels),
//! `prompb::append_series`, one snappy block per record. CPU time is the process' user+system
//! time from /proc/self/stat (the work is single-threaded), so it is not skewed by waiting.

use metrics_agent::labels::Labels;
use metrics_agent::{merge, prompb};
use std::hint::black_box;

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name; 100 Hz.
    (ticks(11) + ticks(12)) / 100.0
}

/// `records` records of `per_record` samples each, as compressed WAL payloads.
fn records(records: usize, per_record: usize) -> Vec<Vec<u8>> {
    let mut enc = snap::raw::Encoder::new();
    let mut out = Vec::new();
    let mut n = 0usize;
    for r in 0..records {
        let mut body = Vec::new();
        for _ in 0..per_record {
            n += 1;
            let route = format!("route-{}", n % 97);
            let code = ["200", "201", "404", "429", "500"][n % 5].to_string();
            let le = format!("{}", (n % 13) as f64 * 0.05);
            let labels = Labels::from_pairs([
                ("__name__", "kong_request_latency_ms_bucket"),
                ("instance", "10.0.3.17:8100"),
                ("job", "gateway"),
                ("ecs_task_id", "4f2d0c1e9b7a4d2c8e6f1a3b5c7d9e0f"),
                ("route", route.as_str()),
                ("service", "orders"),
                ("code", code.as_str()),
                ("le", le.as_str()),
            ]);
            let enc_labels = prompb::encode_labels(&labels);
            let ts = 1_765_000_000_000 + (r as i64) * 1000;
            prompb::append_series(&enc_labels, (n * 7 % 1000) as f64, ts, &mut body);
        }
        out.push(enc.compress_vec(&body).expect("snappy"));
    }
    out
}

/// The merge before this change.
fn recompress(blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut dec = snap::raw::Decoder::new();
    let mut raw = Vec::new();
    for b in blocks {
        raw.extend_from_slice(&dec.decompress_vec(b).expect("snappy"));
    }
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("snappy")
}

fn measure(name: &str, iters: usize, samples: usize, f: impl Fn() -> usize) -> f64 {
    let start = cpu_seconds();
    let wall = std::time::Instant::now();
    let mut bytes = 0usize;
    for _ in 0..iters {
        bytes += black_box(f());
    }
    let cpu = cpu_seconds() - start;
    let per_batch_us = cpu / iters as f64 * 1e6;
    println!(
        "{name:<12} {per_batch_us:>9.1} µs CPU per merged batch, {:>6.1} ns per sample (wall {:.2} s, {} bytes/batch)",
        per_batch_us * 1000.0 / samples as f64,
        wall.elapsed().as_secs_f64(),
        bytes / iters
    );
    per_batch_us
}

fn main() {
    // Defaults: max_samples_per_send 2000; records as the writer cuts them when scrapes of a
    // few hundred series each land in separate commit windows (a backlog after an outage).
    for (n, per) in [(10usize, 200usize), (4, 500), (40, 50)] {
        let blocks = records(n, per);
        let samples = n * per;
        let merged = merge::concat(blocks.iter().map(Vec::as_slice)).expect("merge");
        assert_eq!(
            snap::raw::Decoder::new()
                .decompress_vec(&merged)
                .expect("valid"),
            snap::raw::Decoder::new()
                .decompress_vec(&recompress(&blocks))
                .expect("valid")
        );
        println!("{n} records x {per} samples:");
        // CPU time has a 10 ms tick: enough iterations of each for a few hundred ticks.
        let old = measure("recompress", 3_000, samples, || recompress(&blocks).len());
        let new = measure("concat", 300_000, samples, || {
            merge::concat(blocks.iter().map(Vec::as_slice))
                .expect("merge")
                .len()
        });
        println!(
            "  saved {:.1} µs CPU per batch ({:.0}%)",
            old - new,
            (old - new) / old * 100.0
        );
    }
}
