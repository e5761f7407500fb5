//! Trace context formats of Kong's `propagation` (opentelemetry plugin): which incoming
//! headers start the request's trace (`extract`, first match wins) and which headers
//! carry it upstream (`inject`; `preserve` = the format it came in, else
//! `default_format`). Implemented: `w3c`, `b3`, `b3-single`, `jaeger`, `ot`; Kong's
//! `aws`, `gcp` and `datadog` are refused at load.

use http::{HeaderMap, HeaderName, HeaderValue};

/// A trace context format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    W3c,
    B3,
    B3Single,
    Jaeger,
    Ot,
}

impl Format {
    pub fn parse(name: &str) -> Option<Format> {
        Some(match name {
            "w3c" => Format::W3c,
            "b3" => Format::B3,
            "b3-single" => Format::B3Single,
            "jaeger" => Format::Jaeger,
            "ot" => Format::Ot,
            _ => return None,
        })
    }

    /// Every format, in the order Kong's legacy `header_type` detection tries them.
    pub const ALL: [Format; 5] = [
        Format::W3c,
        Format::B3,
        Format::B3Single,
        Format::Jaeger,
        Format::Ot,
    ];
}

/// The names accepted in `propagation.extract` / `inject` / `default_format` and
/// `header_type` (besides `preserve` and `ignore`).
pub const SUPPORTED: &str = "w3c, b3, b3-single, jaeger, ot, preserve";

/// A trace context read from the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub trace_id: [u8; 16],
    pub parent: [u8; 8],
    /// None: the sender left the decision to us.
    pub sampled: Option<bool>,
    pub format: Format,
}

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static B3_TRACE: HeaderName = HeaderName::from_static("x-b3-traceid");
static B3_SPAN: HeaderName = HeaderName::from_static("x-b3-spanid");
static B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
static B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
static B3_SINGLE: HeaderName = HeaderName::from_static("b3");
static UBER: HeaderName = HeaderName::from_static("uber-trace-id");
static OT_TRACE: HeaderName = HeaderName::from_static("ot-tracer-traceid");
static OT_SPAN: HeaderName = HeaderName::from_static("ot-tracer-spanid");
static OT_SAMPLED: HeaderName = HeaderName::from_static("ot-tracer-sampled");

fn get<'a>(h: &'a HeaderMap, n: &HeaderName) -> Option<&'a str> {
    h.get(n).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// Hex of 1..=`N*2` digits, left-padded with zeros; None for other text or all zeros.
fn hex_id<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.is_empty() || s.len() > N * 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let padded = format!("{s:0>width$}", width = N * 2);
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&padded[i * 2..i * 2 + 2], 16).ok()?;
    }
    (out != [0u8; N]).then_some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A W3C `traceparent` (`00-<trace id>-<parent id>-<flags>`, lower-case hex).
pub fn parse_traceparent(v: &str) -> Option<([u8; 16], [u8; 8], bool)> {
    let mut parts = v.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if version.len() != 2 || version == "ff" || !lower(version) {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if trace.len() != 32 || parent.len() != 16 || flags.len() != 2 {
        return None;
    }
    if !(lower(trace) && lower(parent) && lower(flags)) {
        return None;
    }
    let t = hex_id::<16>(trace)?;
    let p = hex_id::<8>(parent)?;
    let f = u8::from_str_radix(flags, 16).ok()?;
    Some((t, p, f & 1 == 1))
}

fn sampled_flag(s: &str) -> Option<bool> {
    match s {
        "1" | "true" | "d" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// The first of `formats` that the request carries. With several formats, one pass over
/// the header names finds which are present (cheaper than a hashed lookup per format,
/// on every request of a traced route).
pub fn extract(h: &HeaderMap, formats: &[Format]) -> Option<Incoming> {
    if let [f] = formats {
        return extract_one(h, *f);
    }
    let bit = |f: Format| 1u8 << (f as u8);
    let mut present = 0u8;
    for k in h.keys() {
        present |= match k.as_str() {
            "traceparent" => bit(Format::W3c),
            "x-b3-traceid" => bit(Format::B3),
            "b3" => bit(Format::B3Single),
            "uber-trace-id" => bit(Format::Jaeger),
            "ot-tracer-traceid" => bit(Format::Ot),
            _ => 0,
        };
    }
    if present == 0 {
        return None;
    }
    formats
        .iter()
        .filter(|f| present & bit(**f) != 0)
        .find_map(|f| extract_one(h, *f))
}

fn extract_one(h: &HeaderMap, f: Format) -> Option<Incoming> {
    let (trace_id, parent, sampled) = match f {
        Format::W3c => {
            let (t, p, s) = parse_traceparent(get(h, &TRACEPARENT)?)?;
            (t, p, Some(s))
        }
        Format::B3 => {
            let t = hex_id::<16>(get(h, &B3_TRACE)?)?;
            let p = hex_id::<8>(get(h, &B3_SPAN)?)?;
            let debug = get(h, &B3_FLAGS) == Some("1");
            let s = get(h, &B3_SAMPLED).and_then(sampled_flag);
            (t, p, if debug { Some(true) } else { s })
        }
        Format::B3Single => {
            // {trace}-{span}[-{sampled}[-{parent}]]
            let v = get(h, &B3_SINGLE)?;
            let mut it = v.split('-');
            let t = hex_id::<16>(it.next()?)?;
            let p = hex_id::<8>(it.next()?)?;
            (t, p, it.next().and_then(sampled_flag))
        }
        Format::Jaeger => {
            // {trace}:{span}:{parent}:{flags}
            let v = get(h, &UBER)?;
            let mut it = v.split(':');
            let t = hex_id::<16>(it.next()?)?;
            let p = hex_id::<8>(it.next()?)?;
            let _parent = it.next()?;
            let flags = u8::from_str_radix(it.next()?, 16).ok()?;
            (t, p, Some(flags & 1 == 1))
        }
        Format::Ot => {
            let t = hex_id::<16>(get(h, &OT_TRACE)?)?;
            let p = hex_id::<8>(get(h, &OT_SPAN)?)?;
            (t, p, get(h, &OT_SAMPLED).and_then(sampled_flag))
        }
    };
    Some(Incoming {
        trace_id,
        parent,
        sampled,
        format: f,
    })
}

/// Writes the trace context in format `f`: `span` is the parent the upstream sees.
pub fn inject(h: &mut HeaderMap, f: Format, trace_id: &[u8; 16], span: &[u8; 8], sampled: bool) {
    let mut put = |n: &HeaderName, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(n.clone(), v);
        }
    };
    let s = if sampled { "1" } else { "0" };
    match f {
        Format::W3c => put(
            &TRACEPARENT,
            format!("00-{}-{}-0{s}", hex(trace_id), hex(span)),
        ),
        Format::B3 => {
            put(&B3_TRACE, hex(trace_id));
            put(&B3_SPAN, hex(span));
            put(&B3_SAMPLED, s.to_string());
        }
        Format::B3Single => put(&B3_SINGLE, format!("{}-{}-{s}", hex(trace_id), hex(span))),
        Format::Jaeger => put(&UBER, format!("{}:{}:0:{s}", hex(trace_id), hex(span))),
        Format::Ot => {
            // OpenTracing's ids are 64 bits: the low half of a 128-bit trace id.
            put(&OT_TRACE, hex(&trace_id[8..]));
            put(&OT_SPAN, hex(span));
            put(
                &OT_SAMPLED,
                if sampled { "true" } else { "false" }.to_string(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    const T: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const S: &str = "00f067aa0ba902b7";

    #[test]
    fn each_format_extracts_and_injects_the_same_context() {
        for f in Format::ALL {
            let mut h = HeaderMap::new();
            let t = hex_id::<16>(T).expect("trace");
            let s = hex_id::<8>(S).expect("span");
            inject(&mut h, f, &t, &s, true);
            let got = extract(&h, &[f]).expect("extracted");
            let want_t = if f == Format::Ot {
                // 64-bit ids: the low half, left-padded.
                hex_id::<16>(&T[16..]).expect("low half")
            } else {
                t
            };
            assert_eq!(
                (got.trace_id, got.parent, got.sampled, got.format),
                (want_t, s, Some(true), f),
                "{f:?}"
            );
        }
    }

    #[test]
    fn extraction_follows_the_configured_order_and_kongs_header_rules() {
        let h = headers(&[
            ("x-b3-traceid", &T[16..]),
            ("x-b3-spanid", S),
            ("x-b3-flags", "1"),
            ("uber-trace-id", &format!("{T}:{S}:0:0")),
        ]);
        let b3 = extract(&h, &[Format::B3, Format::Jaeger]).expect("b3");
        assert_eq!(b3.format, Format::B3);
        // A 64-bit B3 trace id is left-padded; the debug flag means sampled.
        assert_eq!(hex(&b3.trace_id), format!("0000000000000000{}", &T[16..]));
        assert_eq!(b3.sampled, Some(true));
        let j = extract(&h, &[Format::W3c, Format::Jaeger]).expect("jaeger");
        assert_eq!((j.format, j.sampled), (Format::Jaeger, Some(false)));
        assert!(extract(&h, &[Format::W3c, Format::Ot]).is_none());
        // b3 single without a sampling decision.
        let h = headers(&[("b3", &format!("{T}-{S}"))]);
        assert_eq!(extract(&h, &[Format::B3Single]).expect("b3").sampled, None);
        // Malformed ids are ignored.
        let h = headers(&[("x-b3-traceid", "xyz"), ("x-b3-spanid", S)]);
        assert!(extract(&h, &[Format::B3]).is_none());
    }

    #[test]
    fn traceparent_parsing() {
        assert!(parse_traceparent(&format!("00-{T}-{S}-01")).is_some());
        assert!(parse_traceparent(&format!("00-{}-{S}-01", "0".repeat(32))).is_none());
        assert!(parse_traceparent(&format!("ff-{T}-{S}-01")).is_none());
        assert!(parse_traceparent(&format!("00-{}-{S}-01", T.to_uppercase())).is_none());
        assert!(parse_traceparent("garbage").is_none());
    }
}
