//! Responses the gateway writes itself: Kong's error bodies and headers.

use crate::core::ResponseHeader;
use bytes::Bytes;

use crate::core::state::RequestState;

pub const SERVER_TOKEN: &str = concat!("gateway/", env!("CARGO_PKG_VERSION"));

/// A response produced by the gateway or a plugin.
#[derive(Debug, Clone)]
pub struct LocalResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// The message of `kong.response.error`/`exit(status, {message = ...})`: what a gRPC
    /// client gets as `grpc-message` instead of the body.
    pub message: Option<String>,
}

impl LocalResponse {
    /// `kong.response.exit(status, {message = ...})`: a compact JSON body.
    pub fn message(status: u16, message: &str) -> LocalResponse {
        let body = serde_json::json!({ "message": message }).to_string();
        let mut r = LocalResponse::json(status, body);
        r.message = Some(message.to_string());
        r
    }

    pub fn json(status: u16, body: String) -> LocalResponse {
        LocalResponse {
            status,
            headers: vec![(
                "content-type".into(),
                "application/json; charset=utf-8".into(),
            )],
            body: Bytes::from(body),
            message: None,
        }
    }

    /// `kong.response.error(status, message)`: Kong's error template, chosen by `Accept`.
    pub fn error(
        status: u16,
        message: &str,
        request_id: &str,
        accept: Option<&str>,
    ) -> LocalResponse {
        let esc = json_escape(message);
        let rid = json_escape(request_id);
        let (ctype, body) = match preferred_type(accept) {
            ErrorType::Html => (
                "text/html; charset=utf-8",
                format!(
                    "<!doctype html>\n<html>\n  <head>\n    <meta charset=\"utf-8\">\n    <title>Error</title>\n  </head>\n  <body>\n    <h1>Error</h1>\n    <p>{}.</p>\n    <p>request_id: {}</p>\n  </body>\n</html>\n",
                    html_escape(message),
                    html_escape(request_id)
                ),
            ),
            ErrorType::Plain => (
                "text/plain; charset=utf-8",
                format!("{message}\nrequest_id: {request_id}\n"),
            ),
            ErrorType::Xml => (
                "application/xml; charset=utf-8",
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<error>\n  <message>{}</message>\n  <requestid>{}</requestid>\n</error>\n",
                    html_escape(message),
                    html_escape(request_id)
                ),
            ),
            ErrorType::Json => (
                "application/json; charset=utf-8",
                format!("{{\n  \"message\":\"{esc}\",\n  \"request_id\":\"{rid}\"\n}}"),
            ),
        };
        LocalResponse {
            status,
            headers: vec![("content-type".into(), ctype.into())],
            body: Bytes::from(body),
            message: Some(message.to_string()),
        }
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> LocalResponse {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

enum ErrorType {
    Json,
    Html,
    Plain,
    Xml,
}

/// Kong's choice of error format from `Accept` (`kong.tools.http.get_response_type`):
/// the media range with the highest q wins (the first on a tie); `*/*`, `application/*`
/// and any type without a template mean JSON, `text/*` plain text.
fn preferred_type(accept: Option<&str>) -> ErrorType {
    let Some(accept) = accept else {
        return ErrorType::Json;
    };
    let mut best = (0.0f32, ErrorType::Json);
    for part in accept.split(',') {
        let mut it = part.split(';');
        let media = it.next().unwrap_or("").trim().to_ascii_lowercase();
        let Some((main, sub)) = media.split_once('/') else {
            continue;
        };
        if main.is_empty() || sub.is_empty() {
            continue;
        }
        let q = it
            .filter_map(|p| p.trim().strip_prefix("q="))
            .filter_map(|q| q.trim().parse::<f32>().ok())
            .next()
            .unwrap_or(1.0);
        if !(0.0..=1.0).contains(&q) || q <= best.0 {
            continue;
        }
        let kind = match (main, sub) {
            ("text", "html") => ErrorType::Html,
            ("text", "plain") | ("text", "*") => ErrorType::Plain,
            ("application", "xml") => ErrorType::Xml,
            _ => ErrorType::Json,
        };
        best = (q, kind);
    }
    best.1
}

fn json_escape(s: &str) -> String {
    let q = serde_json::Value::String(s.to_string()).to_string();
    q[1..q.len() - 1].to_string()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders a local response: the gateway's headers and the plugins' header and body
/// hooks (response-transformer sees local answers too, as in Kong).
const X_KONG_RESPONSE_LATENCY: http::HeaderName =
    http::HeaderName::from_static("x-kong-response-latency");

pub fn render(st: &mut RequestState, resp: LocalResponse) -> (ResponseHeader, Bytes) {
    let resp = if st.grpc { for_grpc(resp) } else { resp };
    let mut h =
        ResponseHeader::build(resp.status, Some(resp.headers.len() + 6)).unwrap_or_else(|_| {
            ResponseHeader {
                status: http::StatusCode::INTERNAL_SERVER_ERROR,
                version: http::Version::HTTP_11,
                headers: http::HeaderMap::new(),
            }
        });
    for (i, (k, v)) in resp.headers.iter().enumerate() {
        // A name given more than once keeps every value (a cached response's Set-Cookie).
        let repeated = resp.headers[..i]
            .iter()
            .any(|(p, _)| p.eq_ignore_ascii_case(k));
        let done = if repeated {
            h.append_header(k.as_str(), v.as_str()).map(|_| ())
        } else {
            h.insert_header(k.as_str(), v.as_str())
        };
        if let Err(e) = done {
            tracing::debug!(header = %k, error = %e, "local response header dropped");
        }
    }
    h.headers.insert(
        http::header::SERVER,
        http::HeaderValue::from_static(SERVER_TOKEN),
    );
    h.headers.insert(
        X_KONG_RESPONSE_LATENCY,
        super::head::number_value(st.elapsed_ms()),
    );
    st.local_response = true;
    st.local_status = Some(resp.status);
    crate::core::chain::finish_response_headers(&mut h, st);
    let mut body = resp.body;
    let plugins = crate::core::chain::active_plugins(st);
    if plugins.iter().any(|p| p.buffers_response(&h)) {
        let mut b = bytes::BytesMut::from(&body[..]);
        for p in plugins.iter() {
            p.response_body(&mut b, st);
        }
        body = b.freeze();
    }
    h.headers.remove(http::header::CONTENT_LENGTH);
    (h, body)
}

/// Kong's gRPC status for an HTTP status (`kong.response`'s table; other codes by class).
pub fn grpc_status(status: u16) -> u8 {
    const TABLE: [(u16, u8); 12] = [
        (200, 0),
        (400, 3),
        (401, 16),
        (403, 7),
        (404, 5),
        (409, 6),
        (429, 8),
        (499, 1),
        (500, 13),
        (501, 12),
        (503, 14),
        (504, 4),
    ];
    if let Some((_, g)) = TABLE.iter().find(|(h, _)| *h == status) {
        return *g;
    }
    match status {
        500..=599 => 13,
        400..=499 => 3,
        200..=299 => 0,
        _ => 2,
    }
}

/// The name gRPC gives a status code (Kong's `grpc-message` when there is no message).
fn grpc_status_name(code: u8) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    NAMES.get(usize::from(code)).copied().unwrap_or("Unknown")
}

/// A gateway answer to a gRPC client, as Kong's `kong.response` sends it: the HTTP
/// status kept, `grpc-status` from it, the message in `grpc-message`, no body. An
/// answer that already is gRPC (`Content-Type: application/grpc`) only gets the status
/// headers it lacks; one with another explicit content type (a configured body) is
/// sent as it is.
fn for_grpc(mut resp: LocalResponse) -> LocalResponse {
    let has =
        |r: &LocalResponse, name: &str| r.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let ctype = resp
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.clone());
    let output_is_grpc = ctype
        .as_deref()
        .is_some_and(|c| c.starts_with("application/grpc"));
    if !output_is_grpc && resp.message.is_none() && ctype.is_some() {
        return resp;
    }
    let code = grpc_status(resp.status);
    if !has(&resp, "grpc-status") {
        resp.headers.push(("grpc-status".into(), code.to_string()));
    }
    if output_is_grpc {
        if !has(&resp, "grpc-message") {
            resp.headers
                .push(("grpc-message".into(), grpc_status_name(code).into()));
        }
        return resp;
    }
    let message = match resp.message.take() {
        Some(m) => m,
        None if !resp.body.is_empty() => String::from_utf8_lossy(&resp.body).into_owned(),
        None => grpc_status_name(code).to_string(),
    };
    resp.headers
        .retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
    resp.headers
        .push(("content-type".into(), "application/grpc".into()));
    if !has(&resp, "grpc-message") {
        // A header value cannot hold control characters.
        let clean: String = message.chars().filter(|c| !c.is_control()).collect();
        resp.headers.push(("grpc-message".into(), clean));
    }
    resp.body = Bytes::new();
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(accept: &str) -> &'static str {
        match preferred_type(Some(accept)) {
            ErrorType::Json => "json",
            ErrorType::Html => "html",
            ErrorType::Plain => "plain",
            ErrorType::Xml => "xml",
        }
    }

    #[test]
    fn error_format_follows_kongs_accept_rules() {
        assert_eq!(kind("application/xml"), "xml");
        assert_eq!(kind("text/html"), "html");
        assert_eq!(kind("text/*"), "plain");
        assert_eq!(kind("*/*"), "json");
        assert_eq!(kind("image/png"), "json");
        assert_eq!(kind("text/html;q=0.5, application/xml;q=0.9"), "xml");
        // An unknown type with a higher q still wins, and means JSON (Kong's default).
        assert_eq!(kind("text/html;q=0.5, image/png"), "json");
        // Ties: the first one.
        assert_eq!(kind("text/plain, text/html"), "plain");
        let r = LocalResponse::error(
            404,
            "no Route matched with those values",
            "abc",
            Some("application/xml"),
        );
        assert_eq!(
            std::str::from_utf8(&r.body).unwrap_or_default(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<error>\n  <message>no Route matched with those values</message>\n  <requestid>abc</requestid>\n</error>\n"
        );
    }
}
