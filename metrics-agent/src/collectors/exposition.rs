//! A small writer for the Prometheus text format used by the collectors.

use std::fmt::Write;

#[derive(Default)]
pub struct Exposition {
    buf: String,
}

fn escape(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
}

fn fmt_value(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes one sample line. Label pairs with empty values are omitted.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.buf.push_str(name);
        let mut first = true;
        for (k, v) in labels {
            if v.is_empty() {
                continue;
            }
            self.buf.push(if first { '{' } else { ',' });
            first = false;
            self.buf.push_str(k);
            self.buf.push_str("=\"");
            escape(v, &mut self.buf);
            self.buf.push('"');
        }
        if !first {
            self.buf.push('}');
        }
        self.buf.push(' ');
        fmt_value(value, &mut self.buf);
        self.buf.push('\n');
    }

    pub fn finish(self) -> String {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::{Format, parse, parse_series};

    #[test]
    fn output_parses_back() {
        let mut e = Exposition::new();
        e.sample("a_total", &[("x", "q\"uote\\d\n"), ("empty", "")], 1.5);
        e.sample("b", &[], f64::INFINITY);
        let text = e.finish();
        let s = parse(&text, Format::Text).expect("parse");
        assert_eq!(s.len(), 2);
        let (_, l) = parse_series(s[0].series).expect("series");
        assert_eq!(l, vec![("x".to_string(), "q\"uote\\d\n".to_string())]);
        assert_eq!(s[1].value, f64::INFINITY);
    }
}
