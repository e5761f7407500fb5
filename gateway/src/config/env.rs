//! `${{ env "NAME" }}` references, as deck writes them, resolved before parsing.

/// Replaces every reference with the variable's value. Returns the new text, or the
/// list of (line, message) for references that cannot be resolved.
pub fn substitute(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<(usize, String)>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("${{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 3..];
            let Some(end) = after.find("}}") else {
                errors.push((i + 1, "unterminated `${{` reference".to_string()));
                out.push_str(&rest[start..]);
                rest = "";
                break;
            };
            let expr = after[..end].trim();
            match parse_env_expr(expr) {
                Some(name) => match lookup(name) {
                    Some(v) => out.push_str(&v),
                    None => errors.push((
                        i + 1,
                        format!("environment variable `{name}` referenced here is not set"),
                    )),
                },
                None => errors.push((
                    i + 1,
                    format!("unsupported reference `${{{{ {expr} }}}}`: expected `${{{{ env \"NAME\" }}}}`"),
                )),
            }
            rest = &after[end + 2..];
        }
        out.push_str(rest);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Lines (1-based) holding a `${{ ... }}` reference.
pub fn reference_lines(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains("${{"))
        .map(|(i, _)| i + 1)
        .collect()
}

fn parse_env_expr(expr: &str) -> Option<&str> {
    let rest = expr.strip_prefix("env")?.trim_start();
    let name = rest.strip_prefix('"')?.strip_suffix('"')?;
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Some(name)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_reports() {
        let look = |n: &str| (n == "SECRET").then(|| "s3cr3t".to_string());
        assert_eq!(
            substitute("a: ${{ env \"SECRET\" }}\n", look).ok(),
            Some("a: s3cr3t\n".to_string())
        );
        let err = substitute("a: 1\nb: ${{ env \"MISSING\" }}\n", look).err();
        assert_eq!(err.map(|e| e[0].0), Some(2));
    }
}
