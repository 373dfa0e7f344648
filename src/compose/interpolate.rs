//! Compose-spec interpolation of `$` expressions in string values.
//!
//! Owns: the expression syntax of the compose specification's interpolation chapter, applied
//! to every string *value* of the document tree (never to mapping keys, never to numbers or
//! booleans), and to the values of `.env`/`env_file` entries.
//!
//! | Expression            | Result                                                        |
//! |-----------------------|---------------------------------------------------------------|
//! | `$$`                  | a literal `$`                                                 |
//! | `$VAR`, `${VAR}`      | the value; unset → empty string and a [`Warning`]             |
//! | `${VAR:-default}`     | `default` when `VAR` is unset or empty                        |
//! | `${VAR-default}`      | `default` when `VAR` is unset                                 |
//! | `${VAR:?message}`     | error naming `VAR` and the path when unset or empty           |
//! | `${VAR?message}`      | error when unset                                              |
//! | `${VAR:+replacement}` | `replacement` when `VAR` is set and not empty, else empty     |
//! | `${VAR+replacement}`  | `replacement` when `VAR` is set, else empty                   |
//!
//! Defaults, messages and replacements are themselves templates (`${A:-${B:-x}}`). They are
//! *parsed* eagerly, so a malformed branch is an error even when it is not taken, but
//! *evaluated* lazily, so `${A:-${B:?}}` only fails when `A` is unset. Names are
//! `[_A-Za-z][_A-Za-z0-9]*`. A `$` not followed by `$`, `{` or a name start is kept literally
//! (`"^REGEX$"`, `"a $ sign"`), as docker compose does. `${`, `${}`, `${ x}`, `${x }`,
//! `${x!}` and a missing `}` are errors.
//!
//! Refuses: shell features beyond these (`${#VAR}`, `${VAR/a/b}`, command substitution).
//! The lookup is a plain function so the caller decides the layering (the agent: Margo
//! parameters over the package's `.env`, never its own process environment) and tests need no
//! environment.

use super::error::{ComposeError, Warning};
use serde_json::Value;

/// Where variable values come from. `None` means unset, which differs from `Some("")`.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `:-`
    DefaultIfUnsetOrEmpty,
    /// `-`
    DefaultIfUnset,
    /// `:?`
    ErrorIfUnsetOrEmpty,
    /// `?`
    ErrorIfUnset,
    /// `:+`
    ReplaceIfNonEmpty,
    /// `+`
    ReplaceIfSet,
}

/// Operators in the order they are tried: two-character forms first, so `:-` is never read
/// as `:` followed by `-`.
const OPERATORS: [(&str, Op); 6] = [
    (":-", Op::DefaultIfUnsetOrEmpty),
    (":?", Op::ErrorIfUnsetOrEmpty),
    (":+", Op::ReplaceIfNonEmpty),
    ("-", Op::DefaultIfUnset),
    ("?", Op::ErrorIfUnset),
    ("+", Op::ReplaceIfSet),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Variable {
        name: String,
        operation: Option<(Op, Vec<Part>)>,
    },
}

/// Interpolates one string value found at `path` (used in errors and warnings).
/// Most `${…}` in one value. Real values hold a handful; the bound keeps a crafted value from
/// recursing the parser off the stack.
pub const INTERPOLATION_MAX_SUBSTITUTIONS: usize = 256;

pub fn interpolate(
    template: &str,
    path: &str,
    lookup: Lookup<'_>,
    warnings: &mut Vec<Warning>,
) -> Result<String, ComposeError> {
    if !template.contains('$') {
        return Ok(template.to_string());
    }
    let malformed = |reason: String| ComposeError::Interpolation {
        path: path.to_string(),
        variable: None,
        reason: format!("invalid interpolation in {template:?}: {reason}"),
    };
    // Parsing and evaluation recurse once per `${`; bounding their number bounds the stack.
    if template.matches("${").count() > INTERPOLATION_MAX_SUBSTITUTIONS {
        return Err(malformed(format!(
            "more than {INTERPOLATION_MAX_SUBSTITUTIONS} substitutions in one value"
        )));
    }
    let (parts, end) = parse(template, 0, false).map_err(malformed)?;
    debug_assert_eq!(end, template.len());
    let mut out = String::with_capacity(template.len());
    evaluate(&parts, path, lookup, warnings, &mut out)?;
    Ok(out)
}

/// Interpolates every string value of `tree` in place; `path` names the tree's root.
/// Mapping keys are left alone, as the specification requires.
pub fn interpolate_tree(
    tree: &mut Value,
    path: &str,
    lookup: Lookup<'_>,
    warnings: &mut Vec<Warning>,
) -> Result<(), ComposeError> {
    match tree {
        Value::String(s) => {
            if s.contains('$') {
                *s = interpolate(s, path, lookup, warnings)?;
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_tree(item, &format!("{path}[{i}]"), lookup, warnings)?;
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                interpolate_tree(item, &child, lookup, warnings)?;
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

fn is_name_start(b: u8) -> bool {
    b == b'_' || b.is_ascii_alphabetic()
}

fn is_name_char(b: u8) -> bool {
    b == b'_' || b.is_ascii_alphanumeric()
}

/// Parses from byte `pos`. In an operator argument (`nested`), stops before the first `}`
/// that closes the enclosing `${`; returns the parts and the position reached.
fn parse(s: &str, mut pos: usize, nested: bool) -> Result<(Vec<Part>, usize), String> {
    let bytes = s.as_bytes();
    let mut parts = Vec::new();
    let mut literal = String::new();
    // Every index below is at an ASCII byte ('$', '{', '}', name characters), so slicing
    // `s` there never splits a UTF-8 sequence.
    let mut run_start = pos;
    while pos < bytes.len() {
        match bytes[pos] {
            b'}' if nested => break,
            b'$' => {
                literal.push_str(&s[run_start..pos]);
                match bytes.get(pos + 1) {
                    Some(b'$') => {
                        literal.push('$');
                        pos += 2;
                    }
                    Some(b'{') => {
                        let (part, next) = parse_braced(s, pos + 2)?;
                        flush(&mut literal, &mut parts);
                        parts.push(part);
                        pos = next;
                    }
                    Some(&b) if is_name_start(b) => {
                        let end = name_end(bytes, pos + 1);
                        flush(&mut literal, &mut parts);
                        parts.push(Part::Variable {
                            name: s[pos + 1..end].to_string(),
                            operation: None,
                        });
                        pos = end;
                    }
                    _ => {
                        literal.push('$');
                        pos += 1;
                    }
                }
                run_start = pos;
                continue;
            }
            _ => {}
        }
        pos += 1;
    }
    literal.push_str(&s[run_start..pos]);
    flush(&mut literal, &mut parts);
    Ok((parts, pos))
}

fn flush(literal: &mut String, parts: &mut Vec<Part>) {
    if !literal.is_empty() {
        parts.push(Part::Literal(std::mem::take(literal)));
    }
}

fn name_end(bytes: &[u8], start: usize) -> usize {
    let mut end = start;
    while end < bytes.len() && is_name_char(bytes[end]) {
        end += 1;
    }
    end
}

/// Parses the inside of `${…}` starting just after `${`; returns the part and the position
/// after the closing `}`.
fn parse_braced(s: &str, start: usize) -> Result<(Part, usize), String> {
    let bytes = s.as_bytes();
    if !bytes.get(start).is_some_and(|&b| is_name_start(b)) {
        return Err(match bytes.get(start) {
            None => "\"${\" is not closed".to_string(),
            Some(b'}') => "\"${}\" names no variable".to_string(),
            Some(_) => {
                "\"${\" must be followed by a variable name ([_A-Za-z][_A-Za-z0-9]*)".to_string()
            }
        });
    }
    let end = name_end(bytes, start);
    let name = s[start..end].to_string();
    if bytes.get(end) == Some(&b'}') {
        return Ok((
            Part::Variable {
                name,
                operation: None,
            },
            end + 1,
        ));
    }
    let rest = &s[end..];
    let Some(&(token, op)) = OPERATORS.iter().find(|(t, _)| rest.starts_with(t)) else {
        return Err(match rest.chars().next() {
            None => format!("\"${{{name}\" is not closed"),
            Some(c) => format!(
                "unexpected {c:?} after \"${{{name}\"; expected \"}}\" or one of :- - :? ? :+ +"
            ),
        });
    };
    let (argument, close) = parse(s, end + token.len(), true)?;
    if bytes.get(close) != Some(&b'}') {
        return Err(format!("\"${{{name}{token}\" is not closed"));
    }
    Ok((
        Part::Variable {
            name,
            operation: Some((op, argument)),
        },
        close + 1,
    ))
}

fn evaluate(
    parts: &[Part],
    path: &str,
    lookup: Lookup<'_>,
    warnings: &mut Vec<Warning>,
    out: &mut String,
) -> Result<(), ComposeError> {
    for part in parts {
        match part {
            Part::Literal(text) => out.push_str(text),
            Part::Variable {
                name,
                operation: None,
            } => match lookup(name) {
                Some(value) => out.push_str(&value),
                None => warnings.push(Warning::UnsetVariable {
                    variable: name.clone(),
                    path: path.to_string(),
                }),
            },
            Part::Variable {
                name,
                operation: Some((op, argument)),
            } => {
                let value = lookup(name);
                let non_empty = value.as_deref().is_some_and(|v| !v.is_empty());
                let use_argument = match op {
                    Op::DefaultIfUnsetOrEmpty => !non_empty,
                    Op::DefaultIfUnset => value.is_none(),
                    Op::ReplaceIfNonEmpty => non_empty,
                    Op::ReplaceIfSet => value.is_some(),
                    Op::ErrorIfUnsetOrEmpty | Op::ErrorIfUnset => {
                        let missing = match op {
                            Op::ErrorIfUnsetOrEmpty => !non_empty,
                            _ => value.is_none(),
                        };
                        if missing {
                            let mut message = String::new();
                            evaluate(argument, path, lookup, warnings, &mut message)?;
                            return Err(missing_required(path, name, &message));
                        }
                        false
                    }
                };
                match (use_argument, op) {
                    (true, _) => evaluate(argument, path, lookup, warnings, out)?,
                    (false, Op::ReplaceIfNonEmpty | Op::ReplaceIfSet) => {}
                    (false, _) => out.push_str(value.as_deref().unwrap_or_default()),
                }
            }
        }
    }
    Ok(())
}

fn missing_required(path: &str, name: &str, message: &str) -> ComposeError {
    let mut reason = format!("required variable {name} is missing a value");
    if !message.is_empty() {
        reason.push_str(": ");
        reason.push_str(message);
    }
    ComposeError::Interpolation {
        path: path.to_string(),
        variable: Some(name.to_string()),
        reason,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;

    #[test]
    fn refuses_deeply_nested_substitutions_instead_of_overflowing_the_stack() {
        let deep = "${A:-".repeat(20_000) + &"}".repeat(20_000);
        let err = run(&deep).unwrap_err().to_string();
        assert!(err.contains("substitutions"), "{err}");
        // Real nesting still works.
        assert_eq!(ok("${NOPE:-${B:-x}}"), "bee");
    }

    /// The variables the compose-spec examples assume: `FOO` set, `BAR` set but empty.
    fn vars(name: &str) -> Option<String> {
        match name {
            "FOO" => Some("first".into()),
            "BAR" => Some(String::new()),
            "B" => Some("bee".into()),
            _ => None,
        }
    }

    fn run(template: &str) -> Result<String, ComposeError> {
        interpolate(template, "services.web.image", &vars, &mut Vec::new())
    }

    fn ok(template: &str) -> String {
        match run(template) {
            Ok(s) => s,
            Err(e) => panic!("{template:?} failed: {e}"),
        }
    }

    fn err(template: &str) -> String {
        match run(template) {
            Ok(s) => panic!("{template:?} unexpectedly gave {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn substitutes_plain_and_braced_variables() {
        assert_eq!(ok("This $FOO var"), "This first var");
        assert_eq!(ok("This ${FOO} var"), "This first var");
        assert_eq!(ok("${FOO}${FOO}"), "firstfirst");
        assert_eq!(ok("no dollar"), "no dollar");
    }

    #[test]
    fn unbraced_name_stops_at_first_non_name_character() {
        assert_eq!(ok("$FOO-bar"), "first-bar");
        assert_eq!(ok("$FOO.conf"), "first.conf");
        assert_eq!(ok("$FOO_bar"), "");
    }

    #[test]
    fn double_dollar_is_a_literal_dollar() {
        assert_eq!(ok("$${FOO}"), "${FOO}");
        assert_eq!(ok("$$FOO"), "$FOO");
        assert_eq!(ok("cost: $$5"), "cost: $5");
    }

    #[test]
    fn lone_dollar_not_starting_an_expression_is_kept() {
        for t in ["a $ string", "^REGEX$", "$}", "$", "$1", "100$ and 50%"] {
            assert_eq!(ok(t), t);
        }
    }

    #[test]
    fn unset_variable_without_default_becomes_empty_with_a_warning() {
        let mut warnings = Vec::new();
        let out = interpolate(
            "This ${missing} var",
            "services.web.command",
            &vars,
            &mut warnings,
        );
        assert_eq!(out, Ok("This  var".to_string()));
        assert_eq!(
            warnings,
            vec![Warning::UnsetVariable {
                variable: "missing".into(),
                path: "services.web.command".into()
            }]
        );
    }

    #[test]
    fn empty_variable_is_not_warned_about() {
        let mut warnings = Vec::new();
        let out = interpolate("x${BAR}y", "p", &vars, &mut warnings);
        assert_eq!(out, Ok("xy".into()));
        assert!(warnings.is_empty());
    }

    #[test]
    fn colon_dash_defaults_when_unset_or_empty() {
        assert_eq!(ok("ok ${missing:-def}"), "ok def");
        assert_eq!(ok("ok ${BAR:-def}"), "ok def");
        assert_eq!(ok("ok ${FOO:-def}"), "ok first");
    }

    #[test]
    fn dash_defaults_only_when_unset() {
        assert_eq!(ok("ok ${missing-def}"), "ok def");
        assert_eq!(ok("ok ${BAR-def}"), "ok ");
        assert_eq!(ok("ok ${FOO-def}"), "ok first");
    }

    #[test]
    fn default_may_contain_operator_characters() {
        assert_eq!(ok("ok ${BAR:-/non:-alphanumeric}"), "ok /non:-alphanumeric");
        assert_eq!(ok("${missing-myerror?msg}"), "myerror?msg");
        assert_eq!(ok("${missing:-a:b-c+d?e}"), "a:b-c+d?e");
        assert_eq!(ok("${missing:-}"), "");
    }

    #[test]
    fn nested_defaults_are_evaluated() {
        assert_eq!(ok("${A:-${B:-x}}"), "bee");
        assert_eq!(ok("${A:-${C:-x}}"), "x");
        assert_eq!(ok("ok ${missing-${FOO} ${FOO}}"), "ok first first");
        assert_eq!(ok("ok ${BAR:-$FOO}"), "ok first");
        assert_eq!(ok("+ok ${missing:-${BAR-defaultValue}}"), "+ok ");
        assert_eq!(ok("${A:-${C:-${FOO}}}-tail"), "first-tail");
    }

    #[test]
    fn defaults_not_taken_are_not_evaluated() {
        assert_eq!(ok("${FOO:-${missing:?never asked}}"), "first");
        let mut warnings = Vec::new();
        let out = interpolate("${FOO:-$missing}", "p", &vars, &mut warnings);
        assert_eq!(out, Ok("first".into()));
        assert!(warnings.is_empty());
    }

    #[test]
    fn plus_replaces_when_set() {
        assert_eq!(ok("ok ${missing:+v}"), "ok ");
        assert_eq!(ok("ok ${missing+v}"), "ok ");
        assert_eq!(ok("ok ${FOO:+v}"), "ok v");
        assert_eq!(ok("ok ${FOO+v}"), "ok v");
        assert_eq!(ok("ok ${BAR+v}"), "ok v");
        assert_eq!(ok("ok ${BAR:+v}"), "ok ");
        assert_eq!(ok("ok ${BAR+$FOO ${FOO:+second}}"), "ok first second");
    }

    #[test]
    fn question_mark_fails_naming_variable_path_and_message() {
        let e = run("postgres://${DB_PASSWORD:?set the database password}@db").unwrap_err();
        assert_eq!(
            e,
            ComposeError::Interpolation {
                path: "services.web.image".into(),
                variable: Some("DB_PASSWORD".into()),
                reason:
                    "required variable DB_PASSWORD is missing a value: set the database password"
                        .into(),
            }
        );
        assert_eq!(e.code(), "ERR_COMPOSE_INTERPOLATION");
        assert_eq!(
            err("${BAR:?empty}"),
            "services.web.image: required variable BAR is missing a value: empty"
        );
        assert_eq!(
            err("${missing:?}"),
            "services.web.image: required variable missing is missing a value"
        );
        assert_eq!(
            err("${missing?}"),
            "services.web.image: required variable missing is missing a value"
        );
    }

    #[test]
    fn question_mark_without_colon_accepts_empty_value() {
        assert_eq!(ok("ok ${BAR?err}"), "ok ");
        assert_eq!(ok("ok ${FOO?err}"), "ok first");
        assert_eq!(ok("ok ${FOO:?err}"), "ok first");
    }

    #[test]
    fn required_message_is_itself_interpolated() {
        assert_eq!(
            err("${missing?need ${FOO}}"),
            "services.web.image: required variable missing is missing a value: need first"
        );
    }

    #[test]
    fn first_operator_after_the_name_wins() {
        assert!(err("${missing?bar-baz}").ends_with("missing a value: bar-baz"));
        assert_eq!(ok("${FOO?bar-baz}"), "first");
    }

    #[test]
    fn rejects_malformed_braces() {
        for t in [
            "${",
            "${}",
            "${ }",
            "${ foo}",
            "${foo }",
            "${foo!}",
            "${foo",
            "${foo:-bar",
            "x ${FOO:-${BAR}",
            "${1abc}",
            "${foo:bar}",
        ] {
            let e = run(t).unwrap_err();
            assert!(
                matches!(&e, ComposeError::Interpolation { variable: None, .. }),
                "{t:?}: {e:?}"
            );
            assert!(
                e.to_string().contains("invalid interpolation"),
                "{t:?}: {e}"
            );
        }
    }

    #[test]
    fn malformed_default_is_an_error_even_when_not_taken() {
        let e = err("${FOO:-${}}");
        assert!(e.contains("names no variable"), "{e}");
    }

    #[test]
    fn closing_brace_after_expression_is_literal() {
        assert_eq!(ok("${FOO}}"), "first}");
        assert_eq!(ok("{${FOO}}"), "{first}");
    }

    #[test]
    fn keeps_non_ascii_text_intact() {
        assert_eq!(ok("größe ${FOO} é$ ü"), "größe first é$ ü");
        assert_eq!(ok("${missing:-défaut}"), "défaut");
    }

    #[test]
    fn interpolates_values_but_never_keys() {
        let mut tree = serde_json::json!({
            "services": {"web": {
                "image": "nginx:${TAG:-1.27}",
                "environment": {"$FOO": "${FOO}", "N": 3, "B": true},
                "command": ["echo", "$FOO"]
            }}
        });
        let mut warnings = Vec::new();
        interpolate_tree(&mut tree, "", &vars, &mut warnings).unwrap();
        assert_eq!(tree["services"]["web"]["image"], "nginx:1.27");
        assert_eq!(tree["services"]["web"]["environment"]["$FOO"], "first");
        assert_eq!(tree["services"]["web"]["environment"]["N"], 3);
        assert_eq!(tree["services"]["web"]["command"][1], "first");
        assert!(warnings.is_empty());
    }

    #[test]
    fn tree_errors_carry_the_value_path() {
        let mut tree = serde_json::json!({
            "services": {"web": {"environment": {"DB_URL": "${DB:?}"}, "ports": ["${P:?}"]}}
        });
        let e = interpolate_tree(&mut tree, "", &vars, &mut Vec::new()).unwrap_err();
        // Keys are visited in sorted order: environment before ports.
        assert_eq!(
            e.to_string(),
            "services.web.environment.DB_URL: required variable DB is missing a value"
        );
        let mut tree = serde_json::json!({"services": {"web": {"ports": ["80", "${P:?}"]}}});
        let e = interpolate_tree(&mut tree, "", &vars, &mut Vec::new()).unwrap_err();
        assert!(e.to_string().starts_with("services.web.ports[1]: "), "{e}");
    }
}
