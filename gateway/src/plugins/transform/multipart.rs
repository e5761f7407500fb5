//! `multipart/form-data` bodies: Kong's parser subset (parts by their `name`), the writer,
//! and the parts as a transform target.

use super::Target;

/// The `boundary` parameter of a multipart Content-Type.
pub fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let v = v.trim().trim_matches('"');
        (!v.is_empty() && v.len() <= 200).then(|| v.to_string())
    })
}

/// One part of a multipart body: its header block as sent and its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiPart {
    pub head: Vec<u8>,
    pub name: Option<String>,
    pub value: Vec<u8>,
}

fn find_bytes(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

fn part_name(head: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    text.split("\r\n").find_map(|line| {
        let (k, v) = line.split_once(':')?;
        if !k.trim().eq_ignore_ascii_case("content-disposition") {
            return None;
        }
        v.split(';').find_map(|p| {
            let (k, v) = p.split_once('=')?;
            (k.trim().eq_ignore_ascii_case("name")).then(|| v.trim().trim_matches('"').to_string())
        })
    })
}

/// Parses a multipart body; `None` when it is not well formed (then it is left alone).
pub fn parse_multipart(body: &[u8], boundary: &str) -> Option<Vec<MultiPart>> {
    let delim = format!("--{boundary}").into_bytes();
    let mut pos = find_bytes(body, &delim, 0)? + delim.len();
    let mut parts = Vec::new();
    loop {
        if body[pos..].starts_with(b"--") {
            return Some(parts);
        }
        if !body[pos..].starts_with(b"\r\n") {
            return None;
        }
        pos += 2;
        let head_end = find_bytes(body, b"\r\n\r\n", pos)?;
        let head = body[pos..head_end].to_vec();
        let value_start = head_end + 4;
        let mut next_delim = b"\r\n".to_vec();
        next_delim.extend_from_slice(&delim);
        let end = find_bytes(body, &next_delim, value_start)?;
        parts.push(MultiPart {
            name: part_name(&head),
            head,
            value: body[value_start..end].to_vec(),
        });
        pos = end + next_delim.len();
    }
}

pub fn serialize_multipart(parts: &[MultiPart], boundary: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        out.extend_from_slice(&p.head);
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(&p.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

/// `set_simple`: the first part with the name takes the value, or a new part is added.
fn set_simple(parts: &mut Vec<MultiPart>, name: &str, value: &str) {
    if let Some(p) = parts.iter_mut().find(|p| p.name.as_deref() == Some(name)) {
        p.value = value.as_bytes().to_vec();
        return;
    }
    let quoted = name.replace('"', "%22");
    parts.push(MultiPart {
        head: format!("Content-Disposition: form-data; name=\"{quoted}\"").into_bytes(),
        name: Some(name.to_string()),
        value: value.as_bytes().to_vec(),
    });
}

/// A multipart body's parts as a transform target (Kong's `transform_multipart_body`;
/// run in `MULTIPART_ORDER`, which has no append).
pub struct PartsTarget(pub Vec<MultiPart>);

impl PartsTarget {
    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|p| p.name.as_deref() == Some(name))
    }
}

impl Target<String> for PartsTarget {
    fn remove(&mut self, name: &str) -> bool {
        self.0.retain(|p| p.name.as_deref() != Some(name));
        true
    }

    fn rename(&mut self, old: &str, new: &str) -> bool {
        let Some(v) = self
            .0
            .iter()
            .find(|p| p.name.as_deref() == Some(old))
            .map(|p| p.value.clone())
        else {
            return false;
        };
        set_simple(&mut self.0, new, &String::from_utf8_lossy(&v));
        self.0.retain(|p| p.name.as_deref() != Some(old));
        true
    }

    fn replace(&mut self, name: &str, value: &String) -> bool {
        if !self.has(name) {
            return false;
        }
        self.0.retain(|p| p.name.as_deref() != Some(name));
        set_simple(&mut self.0, name, value);
        true
    }

    fn add(&mut self, name: &str, value: &String) -> bool {
        if self.has(name) {
            return false;
        }
        set_simple(&mut self.0, name, value);
        true
    }

    /// Kong's multipart transform has no append; `MULTIPART_ORDER` never calls it.
    fn append(&mut self, _name: &str, _value: &String) -> bool {
        false
    }
}
