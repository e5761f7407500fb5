//! Maps a field path (`services[1].routes[0].paths[2]`,
//! `scrape_configs[1].tls_config.ca_file`) to the line where it is written, so the
//! gateway's and the metrics-agent's config errors and warnings name `file:line`.
//!
//! The map is built from the block structure of the YAML text (indentation, `- ` items and
//! `key:` entries). Values in flow style (`[a, b]`, `{k: v}`) resolve to the line of their
//! key, which is where a reader looks anyway.

use std::collections::HashMap;

/// A [`LineIndex`] of a text, built when first asked for.
pub struct LazyIndex<'a> {
    text: &'a str,
    index: std::cell::OnceCell<LineIndex>,
}

impl<'a> LazyIndex<'a> {
    pub fn new(text: &'a str) -> LazyIndex<'a> {
        LazyIndex {
            text,
            index: std::cell::OnceCell::new(),
        }
    }

    pub fn get(&self) -> &LineIndex {
        self.index.get_or_init(|| LineIndex::build(self.text))
    }
}

#[derive(Debug, Default)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

#[derive(Debug, Clone)]
enum Node {
    Key {
        col: usize,
        path: String,
    },
    Item {
        col: usize,
        path: String,
        next_child: usize,
    },
}

impl Node {
    fn path(&self) -> &str {
        match self {
            Node::Key { path, .. } | Node::Item { path, .. } => path,
        }
    }
}

impl LineIndex {
    pub fn build(text: &str) -> LineIndex {
        let mut index = LineIndex::default();
        // Stack of open nodes; the root is an implicit key-less mapping.
        let mut stack: Vec<Node> = Vec::new();
        // Item counters per parent path, for `- ` entries.
        let mut counters: HashMap<String, usize> = HashMap::new();
        let mut block_scalar_indent: Option<usize> = None;

        for (lineno, raw) in text.lines().enumerate() {
            let line_no = lineno + 1;
            let indent = raw.len() - raw.trim_start_matches(' ').len();
            let trimmed = raw.trim();
            if let Some(min) = block_scalar_indent {
                if trimmed.is_empty() || indent > min {
                    continue;
                }
                block_scalar_indent = None;
            }
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed == "---" {
                continue;
            }
            let mut col = indent;
            let mut rest = &raw[indent..];
            // Any number of `- ` markers may start the line (`- - a`).
            loop {
                if rest == "-" || rest.starts_with("- ") {
                    while let Some(top) = stack.last() {
                        let pop = match top {
                            Node::Key { col: c, .. } => *c > col,
                            Node::Item { col: c, .. } => *c >= col,
                        };
                        if pop {
                            stack.pop();
                        } else {
                            break;
                        }
                    }
                    let parent = stack
                        .last()
                        .map(|n| n.path().to_string())
                        .unwrap_or_default();
                    let counter = counters.entry(parent.clone()).or_insert(0);
                    let path = format!("{parent}[{counter}]");
                    *counter += 1;
                    index.lines.entry(path.clone()).or_insert(line_no);
                    stack.push(Node::Item {
                        col,
                        path,
                        next_child: 0,
                    });
                    let after = rest[1..].trim_start_matches(' ');
                    col += rest.len() - after.len();
                    rest = after;
                    if rest.is_empty() {
                        break;
                    }
                } else {
                    break;
                }
            }
            if rest.is_empty() || rest.starts_with('#') {
                continue;
            }
            if let Some((key, value)) = split_key(rest) {
                while let Some(top) = stack.last() {
                    let pop = match top {
                        Node::Key { col: c, .. } => *c >= col,
                        Node::Item { col: c, .. } => *c + 2 > col,
                    };
                    if pop {
                        stack.pop();
                    } else {
                        break;
                    }
                }
                let parent = stack
                    .last()
                    .map(|n| n.path().to_string())
                    .unwrap_or_default();
                let path = if parent.is_empty() {
                    key.to_string()
                } else {
                    format!("{parent}.{key}")
                };
                index.lines.entry(path.clone()).or_insert(line_no);
                counters.remove(&path);
                stack.push(Node::Key { col, path });
                let v = value.trim();
                if v.starts_with('|') || v.starts_with('>') {
                    block_scalar_indent = Some(col);
                }
            }
            if let Some(Node::Item { next_child, .. }) = stack.last_mut() {
                *next_child += 1;
            }
        }
        index
    }

    /// The line of `path`, or of its nearest written ancestor.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path.to_string();
        loop {
            if let Some(l) = self.lines.get(&p) {
                return Some(*l);
            }
            let cut = p.rfind(['.', '['])?;
            p.truncate(cut);
            if p.is_empty() {
                return None;
            }
        }
    }
}

/// Splits `key: value` (or `key:`), honouring quoted keys. Returns None for plain scalars.
fn split_key(s: &str) -> Option<(String, &str)> {
    let (key, rest) = if let Some(stripped) = s.strip_prefix('"') {
        let end = stripped.find('"')?;
        (stripped[..end].to_string(), &stripped[end + 1..])
    } else if let Some(stripped) = s.strip_prefix('\'') {
        let end = stripped.find('\'')?;
        (stripped[..end].to_string(), &stripped[end + 1..])
    } else {
        if s.starts_with('[') || s.starts_with('{') {
            return None;
        }
        let mut idx = None;
        let bytes = s.as_bytes();
        for (i, b) in bytes.iter().enumerate() {
            if *b == b':' && (i + 1 == bytes.len() || bytes[i + 1] == b' ') {
                idx = Some(i);
                break;
            }
            if *b == b' ' && bytes.get(i + 1) == Some(&b'#') {
                return None;
            }
        }
        let i = idx?;
        (s[..i].trim_end().to_string(), &s[i..])
    };
    let rest = rest.trim_start();
    let value = rest.strip_prefix(':')?;
    Some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_paths() {
        let text = "_format_version: \"3.0\"\nservices:\n- name: a\n  url: http://x\n  routes:\n  - name: r\n    paths:\n    - /one\n    - /two\n- name: b\n  routes:\n    - paths: [\"/x\"]\n      strip_path: false\n";
        let idx = LineIndex::build(text);
        assert_eq!(idx.line_of("services[0].url"), Some(4));
        assert_eq!(idx.line_of("services[0].routes[0].paths[1]"), Some(9));
        assert_eq!(idx.line_of("services[1].name"), Some(10));
        assert_eq!(idx.line_of("services[1].routes[0].strip_path"), Some(13));
        assert_eq!(idx.line_of("services[1].routes[0].paths[0]"), Some(12));
        assert_eq!(idx.line_of("services[1].nope"), Some(10));
    }

    #[test]
    fn skips_block_scalars() {
        let text = "consumers:\n- username: a\n  jwt_secrets:\n  - key: k\n    rsa_public_key: |\n      -----BEGIN PUBLIC KEY-----\n      name: not-a-key\n    algorithm: RS256\n";
        let idx = LineIndex::build(text);
        assert_eq!(
            idx.line_of("consumers[0].jwt_secrets[0].algorithm"),
            Some(8)
        );
        assert_eq!(idx.line_of("consumers[0].jwt_secrets[0].name"), Some(4));
    }

    #[test]
    fn finds_prometheus_paths() {
        let text = "global:\n  scrape_interval: 5s\nrule_files:\n  - a.yml\nscrape_configs:\n- job_name: a\n  tls_config:\n    ca_file: ca.pem\n- job_name: b\n  static_configs:\n    - targets: [x]\n";
        let idx = LineIndex::build(text);
        assert_eq!(idx.line_of("global.scrape_interval"), Some(2));
        assert_eq!(idx.line_of("rule_files"), Some(3));
        assert_eq!(idx.line_of("scrape_configs[0].tls_config.ca_file"), Some(8));
        assert_eq!(
            idx.line_of("scrape_configs[1].static_configs[0].targets"),
            Some(11)
        );
        assert_eq!(idx.line_of("scrape_configs[1].nope"), Some(9));
    }
}
