//! Request and response heads: `http`'s method, URI, version, status and header map, with
//! the edits the gateway and its plugins make (insert, append, remove; URI and method).

use http::header::AsHeaderName;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};

use super::{Error, Result};

/// A header name given as text or as a `HeaderName`.
pub trait IntoHeaderName {
    fn into_header_name(self) -> Result<HeaderName>;
}

impl IntoHeaderName for HeaderName {
    fn into_header_name(self) -> Result<HeaderName> {
        Ok(self)
    }
}

impl IntoHeaderName for &HeaderName {
    fn into_header_name(self) -> Result<HeaderName> {
        Ok(self.clone())
    }
}

impl IntoHeaderName for &str {
    fn into_header_name(self) -> Result<HeaderName> {
        HeaderName::from_bytes(self.as_bytes()).map_err(|_| Error::HeaderName)
    }
}

impl IntoHeaderName for String {
    fn into_header_name(self) -> Result<HeaderName> {
        self.as_str().into_header_name()
    }
}

impl IntoHeaderName for &String {
    fn into_header_name(self) -> Result<HeaderName> {
        self.as_str().into_header_name()
    }
}

fn value<V: TryInto<HeaderValue>>(v: V) -> Result<HeaderValue> {
    v.try_into().map_err(|_| Error::HeaderValue)
}

/// Replaces every value of `name` with `value` (both heads' `insert_header`).
fn insert<N: IntoHeaderName, V: TryInto<HeaderValue>>(
    map: &mut HeaderMap,
    name: N,
    value_: V,
) -> Result<()> {
    map.insert(name.into_header_name()?, value(value_)?);
    Ok(())
}

/// Adds a value to `name` (both heads' `append_header`).
fn append<N: IntoHeaderName, V: TryInto<HeaderValue>>(
    map: &mut HeaderMap,
    name: N,
    value_: V,
) -> Result<bool> {
    Ok(map.append(name.into_header_name()?, value(value_)?))
}

/// The request head: as received from the client, then edited on its way upstream.
#[derive(Debug, Clone)]
pub struct RequestHeader {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
}

impl RequestHeader {
    pub fn from_parts(p: http::request::Parts) -> RequestHeader {
        RequestHeader {
            method: p.method,
            uri: p.uri,
            version: p.version,
            headers: p.headers,
        }
    }

    // dup: both head types offer these methods; the logic is in `insert`/`append`.
    /// Replaces every value of `name` with `value`.
    pub fn insert_header<N: IntoHeaderName, V: TryInto<HeaderValue>>(
        &mut self,
        name: N,
        value_: V,
    ) -> Result<()> {
        insert(&mut self.headers, name, value_)
    }

    /// Adds a value to `name`, keeping the ones already there.
    pub fn append_header<N: IntoHeaderName, V: TryInto<HeaderValue>>(
        &mut self,
        name: N,
        value_: V,
    ) -> Result<bool> {
        append(&mut self.headers, name, value_)
    }

    pub fn remove_header<N: AsHeaderName>(&mut self, name: N) -> Option<HeaderValue> {
        self.headers.remove(name)
    }

    pub fn set_uri(&mut self, uri: Uri) {
        self.uri = uri;
    }

    pub fn set_method(&mut self, method: Method) {
        self.method = method;
    }
}

/// The response head: from the upstream or built by the gateway.
#[derive(Debug, Clone)]
pub struct ResponseHeader {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
}

impl ResponseHeader {
    pub fn build(status: u16, capacity: Option<usize>) -> Result<ResponseHeader> {
        Ok(ResponseHeader {
            status: StatusCode::from_u16(status).map_err(|_| Error::Status(status))?,
            version: Version::HTTP_11,
            headers: HeaderMap::with_capacity(capacity.unwrap_or(8)),
        })
    }

    pub fn from_parts(p: http::response::Parts) -> ResponseHeader {
        ResponseHeader {
            status: p.status,
            version: p.version,
            headers: p.headers,
        }
    }

    pub fn set_status(&mut self, status: u16) -> Result<()> {
        self.status = StatusCode::from_u16(status).map_err(|_| Error::Status(status))?;
        Ok(())
    }

    // dup: both head types offer these methods; the logic is in `insert`/`append`.
    pub fn insert_header<N: IntoHeaderName, V: TryInto<HeaderValue>>(
        &mut self,
        name: N,
        value_: V,
    ) -> Result<()> {
        insert(&mut self.headers, name, value_)
    }

    pub fn append_header<N: IntoHeaderName, V: TryInto<HeaderValue>>(
        &mut self,
        name: N,
        value_: V,
    ) -> Result<bool> {
        append(&mut self.headers, name, value_)
    }

    pub fn remove_header<N: AsHeaderName>(&mut self, name: N) -> Option<HeaderValue> {
        self.headers.remove(name)
    }
}

/// A small number as a header value without an allocation (latency headers are mostly a
/// few milliseconds); larger ones are formatted.
pub fn number_value(n: u64) -> HeaderValue {
    static SMALL: [HeaderValue; 16] = [
        HeaderValue::from_static("0"),
        HeaderValue::from_static("1"),
        HeaderValue::from_static("2"),
        HeaderValue::from_static("3"),
        HeaderValue::from_static("4"),
        HeaderValue::from_static("5"),
        HeaderValue::from_static("6"),
        HeaderValue::from_static("7"),
        HeaderValue::from_static("8"),
        HeaderValue::from_static("9"),
        HeaderValue::from_static("10"),
        HeaderValue::from_static("11"),
        HeaderValue::from_static("12"),
        HeaderValue::from_static("13"),
        HeaderValue::from_static("14"),
        HeaderValue::from_static("15"),
    ];
    match SMALL.get(n as usize) {
        Some(v) => v.clone(),
        None => HeaderValue::from(n),
    }
}

#[cfg(test)]
mod number_tests {
    #[test]
    fn number_value_matches_formatting() {
        for n in [0u64, 1, 9, 15, 16, 99, 12345, u64::MAX] {
            assert_eq!(
                super::number_value(n).to_str().ok(),
                Some(n.to_string().as_str())
            );
        }
    }
}
