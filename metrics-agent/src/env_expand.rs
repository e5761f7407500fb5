//! Environment references in the config file.
//!
//! By default the agent does what Prometheus does: only `global.external_labels` values are
//! expanded ([`expand_label_value`]: `$NAME` and `${NAME}`, an unset or empty variable
//! becomes the empty string with a warning, `$$` is a literal `$`), everything else is
//! left as written.
//!
//! The ECS sidecar's whole-file expansion ([`expand`]) is only used when enabled
//! explicitly (`--expand-env`, `METRICS_AGENT_EXPAND_ENV=true`, set by the image):
//! `${NAME}` and `${NAME:-default}`, so one image serves every environment (the remote-write URL, the region and a per-task label
//! come from the container's environment). `$$` is a literal `$`. Only names that start
//! with a letter or `_` are references: relabel replacements such as `${1}` or `$1` pass
//! through untouched.

/// A reference to a variable that is not set and has no default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unset {
    /// 1-based line of the reference.
    pub line: usize,
    pub name: String,
}

/// Expands the references in `text`, looking names up with `lookup`. Comment lines
/// (first non-blank character `#`) are kept as they are.
pub fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, Unset> {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
        } else {
            expand_line(line, i + 1, &lookup, &mut out)?;
        }
    }
    Ok(out)
}

/// Expands line `number` (1-based) into `out`; the error names an unset variable.
fn expand_line(
    line: &str,
    number: usize,
    lookup: &impl Fn(&str) -> Option<String>,
    out: &mut String,
) -> Result<(), Unset> {
    let mut rest = line;
    while let Some(i) = rest.find('$') {
        let (before, from) = rest.split_at(i);
        out.push_str(before);
        if let Some(after) = from.strip_prefix("$$") {
            out.push('$');
            rest = after;
            continue;
        }
        match reference(from) {
            Some((name, default, len)) => {
                match lookup(name).filter(|v| !v.is_empty() || default.is_none()) {
                    Some(v) => out.push_str(&v),
                    None => out.push_str(default.ok_or_else(|| Unset {
                        line: number,
                        name: name.to_string(),
                    })?),
                }
                rest = &from[len..];
            }
            None => {
                out.push('$');
                rest = &from[1..];
            }
        }
    }
    out.push_str(rest);
    Ok(())
}

/// Parses `${NAME}` or `${NAME:-default}` at the start of `s`: (name, default, length).
fn reference(s: &str) -> Option<(&str, Option<&str>, usize)> {
    let body = s.strip_prefix("${")?;
    let end = body.find('}')?;
    let inner = &body[..end];
    let (name, default) = match inner.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (inner, None),
    };
    let mut chars = name.chars();
    let valid = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some((name, default, end + 3))
}

/// Expands one `external_labels` value the way Prometheus does (Go's `os.Expand` with
/// `$$` meaning `$`). Returns the value and the names that were unset or empty.
pub fn expand_label_value(
    value: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> (String, Vec<String>) {
    let b = value.as_bytes();
    let mut out = String::with_capacity(value.len());
    let mut empty = Vec::new();
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        if b[i] != b'$' || i + 1 >= b.len() {
            i += 1;
            continue;
        }
        out.push_str(&value[copied..i]);
        let (name, width) = shell_name(&value[i + 1..]);
        match name {
            // `${}` or an unclosed `${`: Go drops the characters.
            None if width > 0 => {}
            None => out.push('$'),
            Some("$") => out.push('$'),
            Some(n) => match lookup(n).filter(|v| !v.is_empty()) {
                Some(v) => out.push_str(&v),
                None => empty.push(n.to_string()),
            },
        }
        i += 1 + width;
        copied = i;
    }
    out.push_str(&value[copied..]);
    (out, empty)
}

/// The variable name after a `$` and how many bytes it takes (Go's `getShellName`).
fn shell_name(s: &str) -> (Option<&str>, usize) {
    let b = s.as_bytes();
    let special = |c: u8| b"*#$@!?-0123456789".contains(&c);
    if b[0] == b'{' {
        if b.len() > 2 && special(b[1]) && b[2] == b'}' {
            return (Some(&s[1..2]), 3);
        }
        return match s[1..].find('}') {
            Some(0) => (None, 2),
            Some(end) => (Some(&s[1..end + 1]), end + 2),
            None => (None, 1),
        };
    }
    if special(b[0]) {
        return (Some(&s[0..1]), 1);
    }
    let n = b
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    if n == 0 {
        (None, 0)
    } else {
        (Some(&s[..n]), n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "URL" => Some("https://aps.example/api/v1/remote_write".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_names_and_defaults() {
        let got = expand(
            "url: ${URL}\nregion: ${REGION:-eu-west-1}\ne: '${EMPTY:-x}'\n",
            env,
        );
        assert_eq!(
            got.as_deref(),
            Ok("url: https://aps.example/api/v1/remote_write\nregion: eu-west-1\ne: 'x'\n")
        );
    }

    #[test]
    fn leaves_relabel_replacements_and_escapes() {
        let text = "replacement: ${1}:$2\nprice: $$5\nlone: $ and ${ unclosed\n  # ${NOPE} here\n";
        assert_eq!(
            expand(text, env).as_deref(),
            Ok("replacement: ${1}:$2\nprice: $5\nlone: $ and ${ unclosed\n  # ${NOPE} here\n")
        );
    }

    #[test]
    fn names_the_line_of_an_unset_variable() {
        assert_eq!(
            expand("a: 1\nb: 2\nurl: ${NOPE}\n", env),
            Err(Unset {
                line: 3,
                name: "NOPE".into()
            })
        );
    }

    #[test]
    fn label_values_expand_as_prometheus_does() {
        let (v, empty) = expand_label_value("$URL|${URL}|${EMPTY}|$NOPE|$$|${1}|a$", env);
        let url = "https://aps.example/api/v1/remote_write";
        assert_eq!(v, format!("{url}|{url}|||$||a$"));
        assert_eq!(empty, ["EMPTY", "NOPE", "1"]);
        let (v, _) = expand_label_value("${REGION:-x} ${} ${open", env);
        assert_eq!(v, "  open");
        assert_eq!(expand_label_value("plain", env).0, "plain");
    }
}
