//! `.env` and `env_file` parsing.
//!
//! Owns the `KEY=VALUE` file format that docker compose reads for the project's `.env`
//! (variables for interpolation) and for a service's `env_file` (variables for the
//! container). Covered:
//!
//! - blank lines and full-line `#` comments;
//! - an optional `export ` prefix;
//! - keys `[A-Za-z_][A-Za-z0-9_.-]*`, whitespace around `=` allowed;
//! - `KEY=` (empty value) and a bare `KEY` (no `=`: "take it from the environment", returned
//!   as `None`);
//! - unquoted values: trimmed, ` #` (whitespace then `#`) starts an inline comment,
//!   `$` expressions are interpolated;
//! - single-quoted values: literal, no escapes, no interpolation;
//! - double-quoted values: escapes `\n \r \t \\ \" \$` (other backslashes are kept),
//!   then interpolation;
//! - quoted values spanning several lines; after the closing quote only whitespace and a
//!   `#` comment may follow.
//!
//! Interpolation inside values looks up the caller's variables first, then entries defined
//! earlier in the same file, so the process environment and Margo parameters keep the
//! precedence they have everywhere else.
//!
//! Refuses: `KEY: VALUE` (YAML style), keys with spaces, text after a closing quote, an
//! unclosed quote. Each error names the file and line.

use super::error::{ComposeError, Warning};
use super::interpolate::{Lookup, interpolate};
use std::io::Read;
use std::path::Path;

/// Largest `.env` or `env_file` read. Real ones are a few KiB; the cap only keeps a broken
/// package from making the agent buffer an arbitrary file.
pub const ENV_FILE_MAX_BYTES: u64 = 256 * 1024;

/// One `KEY=VALUE` entry; the value is `None` for a bare `KEY` line.
pub type Entry = (String, Option<String>);

/// Reads and parses an env file, capped at [`ENV_FILE_MAX_BYTES`].
pub fn read_env_file(
    file: &Path,
    lookup: Lookup<'_>,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<Entry>, ComposeError> {
    let text = read_capped(file, ENV_FILE_MAX_BYTES, "an env file")?;
    parse(&text, file, lookup, warnings)
}

/// Reads a UTF-8 text file of the package, refusing it when over `max` bytes.
pub(crate) fn read_capped(
    file: &Path,
    max: u64,
    what: &'static str,
) -> Result<String, ComposeError> {
    let read_err = |e: std::io::Error| ComposeError::Read {
        file: file.to_path_buf(),
        reason: e.to_string(),
    };
    let f = std::fs::File::open(file).map_err(read_err)?;
    let mut bytes = Vec::new();
    f.take(max + 1).read_to_end(&mut bytes).map_err(read_err)?;
    if bytes.len() as u64 > max {
        let size = std::fs::metadata(file).map_or(max + 1, |m| m.len());
        return Err(ComposeError::TooLarge {
            file: file.to_path_buf(),
            what,
            size,
            max,
        });
    }
    String::from_utf8(bytes).map_err(|_| ComposeError::Read {
        file: file.to_path_buf(),
        reason: "not UTF-8 text".into(),
    })
}

/// Parses env-file text; `file` is only used in error messages.
pub fn parse(
    text: &str,
    file: &Path,
    lookup: Lookup<'_>,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<Entry>, ComposeError> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, raw)) = lines.next() {
        let line_no = index + 1;
        let fail = |reason: String| ComposeError::EnvFile {
            file: file.to_path_buf(),
            line: line_no,
            reason,
        };
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = match line.strip_prefix("export") {
            Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
            _ => line,
        };
        let key_len = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
            .unwrap_or(line.len());
        let key = &line[..key_len];
        if !key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            return Err(fail(format!(
                "{:?} does not start with a variable name ([A-Za-z_][A-Za-z0-9_.-]*)",
                truncate(line)
            )));
        }
        let rest = line[key_len..].trim_start();
        if rest.is_empty() || rest.starts_with('#') {
            entries.push((key.to_string(), None));
            continue;
        }
        let Some(after_eq) = rest.strip_prefix('=') else {
            return Err(fail(format!("expected '=' after {key:?}")));
        };
        let value = after_eq.trim_start();
        let expanded = if let Some(body) = value.strip_prefix('\'') {
            let (content, after) = read_quoted(body, '\'', &mut lines)
                .ok_or_else(|| fail(format!("single quote of {key:?} is not closed")))?;
            check_after_quote(&after).map_err(fail)?;
            content
        } else {
            let template = if let Some(body) = value.strip_prefix('"') {
                let (content, after) = read_quoted(body, '"', &mut lines)
                    .ok_or_else(|| fail(format!("double quote of {key:?} is not closed")))?;
                check_after_quote(&after).map_err(fail)?;
                unescape(&content)
            } else {
                // On the untrimmed text, so `KEY= # comment` is empty.
                strip_inline_comment(after_eq).trim().to_string()
            };
            let earlier = |name: &str| {
                lookup(name).or_else(|| {
                    entries
                        .iter()
                        .rev()
                        .find(|(k, _)| k == name)
                        .and_then(|(_, v)| v.clone())
                })
            };
            let path = format!("{} line {line_no}", file.display());
            interpolate(&template, &path, &earlier, warnings)?
        };
        entries.push((key.to_string(), Some(expanded)));
    }
    Ok(entries)
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Finds the closing `quote` in `first` or the following lines (newlines kept). Returns the
/// raw content (escapes untouched) and the text after the closing quote, or `None` when the
/// quote never closes.
fn read_quoted<'a>(
    first: &str,
    quote: char,
    more: &mut impl Iterator<Item = (usize, &'a str)>,
) -> Option<(String, String)> {
    let mut content = String::new();
    let mut current = first.to_string();
    loop {
        let mut escaped = false;
        for (i, c) in current.char_indices() {
            if escaped {
                escaped = false;
            } else if c == '\\' && quote == '"' {
                escaped = true;
            } else if c == quote {
                content.push_str(&current[..i]);
                return Some((content, current[i + 1..].to_string()));
            }
        }
        content.push_str(&current);
        content.push('\n');
        current = more.next()?.1.to_string();
    }
}

fn check_after_quote(after: &str) -> Result<(), String> {
    let t = after.trim_start();
    if t.is_empty() || t.starts_with('#') {
        Ok(())
    } else {
        Err(format!(
            "unexpected {:?} after the closing quote",
            truncate(t)
        ))
    }
}

/// Double-quote escapes. `\$` becomes `$$` so that interpolation leaves a literal `$`.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some('$') => out.push_str("$$"),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// An unquoted value ends where whitespace is followed by `#`.
fn strip_inline_comment(value: &str) -> &str {
    let bytes = value.as_bytes();
    for i in 1..bytes.len() {
        if bytes[i] == b'#' && matches!(bytes[i - 1], b' ' | b'\t') {
            return &value[..i];
        }
    }
    value
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db.local".into()),
            "SHADOWED" => Some("from-process".into()),
            _ => None,
        }
    }

    fn parse_ok(text: &str) -> Vec<Entry> {
        match parse(text, Path::new(".env"), &env, &mut Vec::new()) {
            Ok(e) => e,
            Err(e) => panic!("{e}"),
        }
    }

    fn one(text: &str) -> Option<String> {
        let entries = parse_ok(text);
        assert_eq!(entries.len(), 1, "{entries:?}");
        entries[0].1.clone()
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn skips_blank_lines_and_comments() {
        let entries = parse_ok("# a comment\n\n   # indented comment\nA=1\n\n");
        assert_eq!(entries, vec![("A".into(), s("1"))]);
    }

    #[test]
    fn accepts_export_prefix() {
        assert_eq!(one("export A=1"), s("1"));
        assert_eq!(one("export\tA=1"), s("1"));
        // A variable merely starting with "export" is a name, not the prefix.
        assert_eq!(parse_ok("exporter=x")[0].0, "exporter");
    }

    #[test]
    fn empty_value_and_bare_key_differ() {
        assert_eq!(
            parse_ok("A=\nB\nC= # nothing"),
            vec![("A".into(), s("")), ("B".into(), None), ("C".into(), s("")),]
        );
    }

    #[test]
    fn unquoted_values_are_trimmed_and_lose_inline_comments() {
        assert_eq!(one("A =  hello world   "), s("hello world"));
        assert_eq!(one("A=value # comment"), s("value"));
        assert_eq!(one("A=value\t# comment"), s("value"));
        assert_eq!(one("A=pass#word"), s("pass#word"));
        assert_eq!(one("A=x=y=z"), s("x=y=z"));
    }

    #[test]
    fn single_quotes_are_literal() {
        assert_eq!(
            one(r"A='$HOST \n # not a comment'"),
            s(r"$HOST \n # not a comment")
        );
        assert_eq!(one("A='x' # trailing comment"), s("x"));
    }

    #[test]
    fn double_quotes_process_escapes() {
        assert_eq!(one(r#"A="line1\nline2""#), s("line1\nline2"));
        assert_eq!(one(r#"A="tab\there""#), s("tab\there"));
        assert_eq!(one(r#"A="say \"hi\"""#), s("say \"hi\""));
        assert_eq!(one(r#"A="back\\slash""#), s("back\\slash"));
        assert_eq!(one(r#"A="price \$5""#), s("price $5"));
        assert_eq!(one(r#"A="keep \d""#), s("keep \\d"));
        assert_eq!(one(r##"A="# not a comment""##), s("# not a comment"));
    }

    #[test]
    fn quoted_values_may_span_lines() {
        let entries = parse_ok("KEY=\"-----BEGIN-----\nabc\n-----END-----\"\nNEXT=1\n");
        assert_eq!(entries[0].1, s("-----BEGIN-----\nabc\n-----END-----"));
        assert_eq!(entries[1], ("NEXT".into(), s("1")));
        assert_eq!(one("A='one\ntwo'"), s("one\ntwo"));
    }

    #[test]
    fn interpolates_unquoted_and_double_quoted_values() {
        assert_eq!(
            one("URL=postgres://$HOST/app"),
            s("postgres://db.local/app")
        );
        assert_eq!(one("URL=\"${HOST:-x}:5432\""), s("db.local:5432"));
        assert_eq!(one("URL='${HOST}'"), s("${HOST}"));
    }

    #[test]
    fn later_entries_see_earlier_ones_but_the_caller_wins() {
        let entries = parse_ok("USER=app\nSHADOWED=file\nDSN=${USER}@${SHADOWED}\n");
        assert_eq!(entries[2].1, s("app@from-process"));
    }

    #[test]
    fn handles_crlf_line_endings() {
        assert_eq!(
            parse_ok("A=1\r\nB=2\r\n"),
            vec![("A".into(), s("1")), ("B".into(), s("2"))]
        );
    }

    #[test]
    fn rejects_malformed_lines_with_file_and_line() {
        let cases = [
            ("A=1\nMY KEY=1", 2, "expected '=' after \"MY\""),
            ("1ABC=x", 1, "does not start with a variable name"),
            ("A=\"open", 1, "double quote of \"A\" is not closed"),
            ("A='open\nB=2", 1, "single quote of \"A\" is not closed"),
            ("A=\"x\" y", 1, "after the closing quote"),
            ("KEY: value", 1, "expected '='"),
        ];
        for (text, line, reason) in cases {
            let e = parse(text, Path::new("app.env"), &env, &mut Vec::new()).unwrap_err();
            match &e {
                ComposeError::EnvFile {
                    line: l, reason: r, ..
                } => {
                    assert_eq!(*l, line, "{text:?}");
                    assert!(r.contains(reason), "{text:?}: {r}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
            assert!(e.to_string().starts_with("app.env line "), "{e}");
        }
    }

    #[test]
    fn required_variable_in_env_file_names_file_and_line() {
        let e = parse(
            "A=1\nB=${NOPE:?set NOPE}",
            Path::new("app.env"),
            &env,
            &mut Vec::new(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "app.env line 2: required variable NOPE is missing a value: set NOPE"
        );
    }
}
