//! Parser for the Prometheus text format (0.0.4) and OpenMetrics 1.0 text.
//!
//! Samples are returned with their raw series text (`name{labels}`) so callers can cache the
//! processed label set per series and only parse labels on a cache miss.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    OpenMetrics,
}

impl Format {
    /// Picks the format from a Content-Type header value.
    pub fn from_content_type(ct: Option<&str>) -> Format {
        match ct {
            Some(c) if c.trim_start().starts_with("application/openmetrics-text") => {
                Format::OpenMetrics
            }
            _ => Format::Text,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Why a sample line does not parse (the message of a [`ParseError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("invalid metric name in {0:?}")]
    MetricName(String),
    #[error("unterminated label set in {0:?}")]
    UnterminatedLabels(String),
    #[error("expected whitespace after series in {0:?}")]
    NoWhitespace(String),
    #[error("missing value in {0:?}")]
    MissingValue(String),
    #[error("invalid value {0:?}")]
    Value(String),
    #[error("invalid timestamp {0:?}")]
    Timestamp(String),
    #[error("unexpected trailing text in {0:?}")]
    TrailingText(String),
}

/// Why a series (`name{label="value",...}`) does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeriesError {
    #[error("unterminated label set")]
    Unterminated,
    #[error("invalid label name in {0:?}")]
    LabelName(String),
    #[error("expected '=' after label {0:?}")]
    NoEquals(String),
    #[error("expected quoted value for label {0:?}")]
    NotQuoted(String),
    #[error("unterminated value for label {0:?}")]
    UnterminatedValue(String),
    #[error("dangling escape")]
    DanglingEscape,
    #[error("duplicate label {0:?}")]
    Duplicate(String),
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSample<'a> {
    /// `name` or `name{labels}` exactly as exposed.
    pub series: &'a str,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}
fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => {
            let b = s.as_bytes();
            if b.is_empty() || !(b[0].is_ascii_digit() || matches!(b[0], b'-' | b'+' | b'.')) {
                return None;
            }
            s.parse::<f64>().ok()
        }
    }
}

/// Parses an exposition body. Comment, HELP, TYPE and UNIT lines are skipped.
pub fn parse(body: &str, format: Format) -> Result<Vec<RawSample<'_>>, ParseError> {
    let mut out = Vec::new();
    let mut saw_eof = false;
    for (idx, line) in body.lines().enumerate() {
        let lineno = idx + 1;
        let err = |m: &str| ParseError {
            line: lineno,
            message: m.to_string(),
        };
        if saw_eof {
            if line.trim().is_empty() {
                continue;
            }
            return Err(err("content after # EOF"));
        }
        let line = if format == Format::Text {
            line.trim()
        } else {
            line
        };
        if line.is_empty() {
            if format == Format::OpenMetrics {
                return Err(err("empty line not allowed in OpenMetrics"));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            if rest.trim() == "EOF" {
                saw_eof = true;
            }
            continue;
        }
        out.push(parse_line(line, format).map_err(|m| err(&m.to_string()))?);
    }
    if format == Format::OpenMetrics && !saw_eof {
        return Err(ParseError {
            line: body.lines().count(),
            message: "OpenMetrics exposition missing # EOF".into(),
        });
    }
    Ok(out)
}

fn parse_line(line: &str, format: Format) -> Result<RawSample<'_>, LineError> {
    let b = line.as_bytes();
    if b.is_empty() || !is_name_start(b[0]) {
        return Err(LineError::MetricName(line.to_string()));
    }
    let mut i = 1;
    while i < b.len() && is_name_char(b[i]) {
        i += 1;
    }
    let mut series_end = i;
    if i < b.len() && b[i] == b'{' {
        i = scan_labels_end(b, i).ok_or_else(|| LineError::UnterminatedLabels(line.to_string()))?;
        series_end = i;
    }
    let series = &line[..series_end];
    let rest = &line[series_end..];
    if !rest.starts_with(' ') && !rest.starts_with('\t') {
        return Err(LineError::NoWhitespace(line.to_string()));
    }
    let rest = match format {
        Format::OpenMetrics => rest.split(" # ").next().unwrap_or(rest),
        Format::Text => rest,
    };
    let mut parts = rest.split_ascii_whitespace();
    let vtok = parts
        .next()
        .ok_or_else(|| LineError::MissingValue(line.to_string()))?;
    let value = parse_value(vtok).ok_or_else(|| LineError::Value(vtok.to_string()))?;
    let timestamp_ms = match parts.next() {
        None => None,
        Some(t) => Some(match format {
            Format::Text => t
                .parse::<i64>()
                .map_err(|_| LineError::Timestamp(t.to_string()))?,
            Format::OpenMetrics => {
                let secs = t
                    .parse::<f64>()
                    .map_err(|_| LineError::Timestamp(t.to_string()))?;
                (secs * 1000.0).round() as i64
            }
        }),
    };
    if parts.next().is_some() {
        return Err(LineError::TrailingText(line.to_string()));
    }
    Ok(RawSample {
        series,
        value,
        timestamp_ms,
    })
}

/// Returns the index just past the closing `}` of a label block starting at `start`.
fn scan_labels_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    let mut in_quotes = false;
    while i < b.len() {
        let c = b[i];
        if in_quotes {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                in_quotes = false;
            }
        } else if c == b'"' {
            in_quotes = true;
        } else if c == b'}' {
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// Splits a raw series into its metric name and label pairs (unescaped).
pub fn parse_series(series: &str) -> Result<(String, Vec<(String, String)>), SeriesError> {
    let (name, rest) = match series.find('{') {
        Some(p) => (&series[..p], &series[p..]),
        None => (series, ""),
    };
    let mut labels = Vec::new();
    if rest.is_empty() {
        return Ok((name.to_string(), labels));
    }
    let b = rest.as_bytes();
    let mut i = 1;
    loop {
        while i < b.len() && (b[i] == b' ' || b[i] == b',') {
            i += 1;
        }
        if i >= b.len() {
            return Err(SeriesError::Unterminated);
        }
        if b[i] == b'}' {
            break;
        }
        let ns = i;
        if !(b[i].is_ascii_alphabetic() || b[i] == b'_') {
            return Err(SeriesError::LabelName(series.to_string()));
        }
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        let lname = &rest[ns..i];
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        if i >= b.len() || b[i] != b'=' {
            return Err(SeriesError::NoEquals(lname.to_string()));
        }
        i += 1;
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        if i >= b.len() || b[i] != b'"' {
            return Err(SeriesError::NotQuoted(lname.to_string()));
        }
        i += 1;
        let mut val = String::new();
        let mut seg = i;
        loop {
            if i >= b.len() {
                return Err(SeriesError::UnterminatedValue(lname.to_string()));
            }
            match b[i] {
                b'"' => {
                    val.push_str(&rest[seg..i]);
                    i += 1;
                    break;
                }
                b'\\' => {
                    val.push_str(&rest[seg..i]);
                    match b.get(i + 1) {
                        Some(b'n') => val.push('\n'),
                        Some(b'\\') => val.push('\\'),
                        Some(b'"') => val.push('"'),
                        Some(_) => val.push('\\'),
                        None => return Err(SeriesError::DanglingEscape),
                    }
                    if matches!(b.get(i + 1), Some(b'n' | b'\\' | b'"')) {
                        i += 2;
                    } else {
                        i += 1;
                    }
                    seg = i;
                }
                _ => i += 1,
            }
        }
        if labels.iter().any(|(n, _): &(String, String)| n == lname) {
            return Err(SeriesError::Duplicate(lname.to_string()));
        }
        labels.push((lname.to_string(), val));
    }
    Ok((name.to_string(), labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_format() {
        let body = "# HELP http_requests_total The total.\n# TYPE http_requests_total counter\n\
http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n\
http_requests_total{method=\"post\",code=\"400\"}    3 1395066363000\n\
\n\
msdos_file_access_time_seconds{path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot find file:\\n\\\"FILE.TXT\\\"\"} 1.458255915e9\n\
metric_without_timestamp_and_labels 12.47\n\
something_weird{problem=\"division by zero\"} +Inf -3982045\n\
rpc_duration_seconds{quantile=\"0.5\"} 4773\n\
go:gc_total{a=\"}\"} NaN\n";
        let s = parse(body, Format::Text).expect("parse");
        assert_eq!(s.len(), 7);
        assert_eq!(
            s[0].series,
            "http_requests_total{method=\"post\",code=\"200\"}"
        );
        assert_eq!(s[0].value, 1027.0);
        assert_eq!(s[0].timestamp_ms, Some(1395066363000));
        assert_eq!(s[1].value, 3.0);
        let (name, labels) = parse_series(s[2].series).expect("labels");
        assert_eq!(name, "msdos_file_access_time_seconds");
        assert_eq!(labels[0], ("path".into(), "C:\\DIR\\FILE.TXT".into()));
        assert_eq!(
            labels[1],
            ("error".into(), "Cannot find file:\n\"FILE.TXT\"".into())
        );
        assert_eq!(s[4].value, f64::INFINITY);
        assert_eq!(s[4].timestamp_ms, Some(-3982045));
        assert!(s[6].value.is_nan());
        assert_eq!(parse_series(s[6].series).expect("labels").1[0].1, "}");
    }

    #[test]
    fn parses_openmetrics_with_exemplars_and_second_timestamps() {
        let body = "# TYPE foo counter\n# UNIT foo seconds\nfoo_total{a=\"b\"} 17.0 1520879607.789 # {trace_id=\"KOO5S4vxi0o\"} 0.67\nfoo_created{a=\"b\"} 1520872607.123\n# EOF\n";
        let s = parse(body, Format::OpenMetrics).expect("parse");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].timestamp_ms, Some(1520879607789));
        assert_eq!(s[0].value, 17.0);
        assert!(parse("foo 1\n", Format::OpenMetrics).is_err());
        assert!(parse("foo 1\n# EOF\nbar 2\n", Format::OpenMetrics).is_err());
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("1abc 3\n", Format::Text).is_err());
        assert!(parse("abc{a=\"b\" 3\n", Format::Text).is_err());
        assert!(parse("abc xyz\n", Format::Text).is_err());
        assert!(parse_series("a{b=c}").is_err());
        assert!(parse_series("a{b=\"1\",b=\"2\"}").is_err());
    }

    #[test]
    fn content_type_selects_format() {
        assert_eq!(
            Format::from_content_type(Some(
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::from_content_type(Some("text/plain; version=0.0.4")),
            Format::Text
        );
        assert_eq!(Format::from_content_type(None), Format::Text);
    }
}
