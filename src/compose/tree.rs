//! The generic document tree a compose file is read into, and path-aware typed access to it.
//!
//! Owns: turning YAML text into a `serde_json::Value` under caps (one document, size, node
//! and alias budgets; YAML merge keys `<<` and anchors are expanded by serde-saphyr, see the
//! tests), and reading typed values out of that tree so that every type error names the
//! dotted path of the value (`services.web.ports: expected a list, found a number`).
//!
//! Why a generic tree rather than `#[derive(Deserialize)]` straight into typed structs:
//! interpolation must run on string values before types are known (`retries: ${N:-3}` is a
//! string until interpolated), `x-*` keys must be dropped first, and serde's errors do not say
//! which key of which service was wrong.
//!
//! Scalars are read leniently where compose is: a string is accepted where a number or
//! boolean is expected if it parses (`"3"`, `"true"`, the usual result of interpolation), and
//! numbers and booleans are accepted where a string is expected (`user: 1000`).

use super::error::ComposeError;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// Largest compose file accepted. Real files (app stores, awesome-compose) are under 64 KiB;
/// 1 MiB leaves room for generated files while bounding memory on small devices.
pub const COMPOSE_FILE_MAX_BYTES: u64 = 1024 * 1024;

/// Most YAML nodes (scalars, sequences, mappings, alias expansions included) in one compose
/// file: a 1 MiB file of short scalars stays well under it, an alias bomb does not.
const COMPOSE_MAX_NODES: usize = 100_000;

/// Parses YAML text into the generic tree. Exactly one document is accepted.
pub fn parse_yaml(text: &str, file: &Path) -> Result<Value, ComposeError> {
    let yaml_err = |reason: String| ComposeError::Yaml {
        file: file.to_path_buf(),
        reason,
    };
    if text.len() as u64 > COMPOSE_FILE_MAX_BYTES {
        return Err(ComposeError::TooLarge {
            file: file.to_path_buf(),
            what: "a compose file",
            size: text.len() as u64,
            max: COMPOSE_FILE_MAX_BYTES,
        });
    }
    let options = serde_saphyr::options! {
        // One line in the journal: no source snippet.
        with_snippet: false,
        // YAML 1.2 booleans only: `FEATURE: yes` stays the string "yes", as in docker compose.
        strict_booleans: true,
        // `MODE: 0755` stays "0755" rather than becoming the number 755.
        leading_zero_numbers_as_strings: true,
        budget: serde_saphyr::budget! {
            max_nodes: COMPOSE_MAX_NODES,
            max_events: 2 * COMPOSE_MAX_NODES,
        },
    };
    let mut documents: Vec<Value> =
        serde_saphyr::from_str_multiple_with_options::<Value, Vec<Value>>(text, options)
            .map_err(|e| yaml_err(e.to_string()))?;
    match documents.len() {
        0 => Err(yaml_err("the file is empty".into())),
        1 => Ok(documents.remove(0)),
        n => Err(yaml_err(format!(
            "it holds {n} YAML documents; a compose file is exactly one"
        ))),
    }
}

/// Describes a value's type for error messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A value of the tree and the dotted path that leads to it.
#[derive(Debug, Clone)]
pub struct Node<'a> {
    pub value: &'a Value,
    pub path: String,
}

impl<'a> Node<'a> {
    pub fn new(value: &'a Value, path: impl Into<String>) -> Node<'a> {
        Node {
            value,
            path: path.into(),
        }
    }

    /// The entry `key` of a mapping, as a node.
    pub fn child(&self, key: &str, value: &'a Value) -> Node<'a> {
        let path = if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        };
        Node { value, path }
    }

    pub fn type_error(&self, expected: &'static str) -> ComposeError {
        ComposeError::Type {
            path: self.path.clone(),
            expected,
            found: type_name(self.value),
        }
    }

    pub fn invalid(&self, reason: impl Into<String>) -> ComposeError {
        ComposeError::invalid(&self.path, reason)
    }

    pub fn is_null(&self) -> bool {
        self.value.is_null()
    }

    /// The entries of a mapping, in key order.
    pub fn entries(&self) -> Result<Vec<(&'a str, Node<'a>)>, ComposeError> {
        match self.value {
            Value::Object(map) => Ok(map
                .iter()
                .map(|(k, v)| (k.as_str(), self.child(k, v)))
                .collect()),
            _ => Err(self.type_error("a mapping")),
        }
    }

    /// The items of a list.
    pub fn items(&self) -> Result<Vec<Node<'a>>, ComposeError> {
        match self.value {
            Value::Array(items) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, v)| Node::new(v, format!("{}[{i}]", self.path)))
                .collect()),
            _ => Err(self.type_error("a list")),
        }
    }

    /// A scalar as text: strings as they are, numbers and booleans in their YAML spelling.
    pub fn string(&self) -> Result<String, ComposeError> {
        match self.value {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => Err(self.type_error("a string")),
        }
    }

    /// Like [`Node::string`], with `null` read as absent.
    pub fn opt_string(&self) -> Result<Option<String>, ComposeError> {
        if self.is_null() {
            Ok(None)
        } else {
            self.string().map(Some)
        }
    }

    /// A boolean; as strings, docker compose's spellings `true/yes/y/on` and
    /// `false/no/n/off` (any case) are accepted, so `privileged: yes` means what it does there.
    pub fn bool(&self) -> Result<bool, ComposeError> {
        match self.value {
            Value::Bool(b) => Ok(*b),
            Value::String(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "y" | "on" => Ok(true),
                "false" | "no" | "n" | "off" => Ok(false),
                _ => Err(self.type_error("a boolean (true or false)")),
            },
            _ => Err(self.type_error("a boolean (true or false)")),
        }
    }

    pub fn i64(&self) -> Result<i64, ComposeError> {
        let parsed = match self.value {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        parsed.ok_or_else(|| self.type_error("an integer"))
    }

    pub fn u64(&self) -> Result<u64, ComposeError> {
        let parsed = match self.value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        parsed.ok_or_else(|| self.type_error("a non-negative integer"))
    }

    pub fn f64(&self) -> Result<f64, ComposeError> {
        let parsed = match self.value {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        parsed
            .filter(|f: &f64| f.is_finite())
            .ok_or_else(|| self.type_error("a number"))
    }

    /// A compose duration (`1m30s`, `500ms`; a bare number is seconds).
    pub fn duration(&self) -> Result<Duration, ComposeError> {
        let text = match self.value {
            Value::Number(_) | Value::String(_) => self.string()?,
            _ => return Err(self.type_error("a duration such as 30s or 1m30s")),
        };
        crate::units::parse_duration(&text).map_err(|e| self.invalid(e))
    }

    /// A compose byte size (`512m`, `1g`, a bare number is bytes).
    pub fn bytes(&self) -> Result<u64, ComposeError> {
        let text = match self.value {
            Value::Number(_) | Value::String(_) => self.string()?,
            _ => return Err(self.type_error("a size such as 512m or 1g")),
        };
        crate::units::parse_bytes(&text).map_err(|e| self.invalid(e))
    }

    /// A list of scalars.
    pub fn string_list(&self) -> Result<Vec<String>, ComposeError> {
        self.items()?.iter().map(Node::string).collect()
    }

    /// A single string or a list of strings (`dns: 8.8.8.8`, `env_file: a.env`).
    pub fn string_or_list(&self) -> Result<Vec<String>, ComposeError> {
        match self.value {
            Value::Array(_) => self.string_list(),
            Value::String(_) | Value::Number(_) => Ok(vec![self.string()?]),
            _ => Err(self.type_error("a string or a list of strings")),
        }
    }

    /// `environment`/`labels`-style data: a mapping (`KEY: value`, `KEY:` is `None`) or a
    /// list of `KEY=value` / `KEY` strings. Keys are kept in their written order for lists
    /// and sorted for mappings; a repeated key keeps the last value.
    pub fn key_values(&self) -> Result<Vec<(String, Option<String>)>, ComposeError> {
        match self.value {
            Value::Object(_) => self
                .entries()?
                .into_iter()
                .map(|(k, v)| Ok((k.to_string(), v.opt_string()?)))
                .collect(),
            Value::Array(_) => {
                let mut out = Vec::new();
                for item in self.items()? {
                    let text = item.string()?;
                    let (k, v) = match text.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (text.clone(), None),
                    };
                    if k.is_empty() {
                        return Err(item.invalid(format!("{text:?} has an empty name")));
                    }
                    out.push((k, v));
                }
                Ok(out)
            }
            _ => Err(self.type_error("a mapping or a list of KEY=value strings")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;
    use serde_json::json;

    fn yaml(text: &str) -> Value {
        match parse_yaml(text, Path::new("compose.yaml")) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn expands_merge_keys_with_explicit_keys_winning() {
        let v = yaml(
            "x-common: &common\n  restart: always\n  environment: {A: '1'}\nservices:\n  web:\n    <<: *common\n    restart: unless-stopped\n",
        );
        assert_eq!(v["services"]["web"]["restart"], "unless-stopped");
        assert_eq!(v["services"]["web"]["environment"], json!({"A": "1"}));
    }

    #[test]
    fn expands_merge_key_lists_with_earlier_sources_winning() {
        let v = yaml("x-a: &a {p: a, q: a}\nx-b: &b {q: b, r: b}\ns:\n  <<: [*a, *b]\n");
        assert_eq!(v["s"], json!({"p": "a", "q": "a", "r": "b"}));
    }

    #[test]
    fn expands_plain_aliases() {
        let v = yaml("x-env: &env [A=1, B=2]\nservices:\n  web:\n    environment: *env\n");
        assert_eq!(v["services"]["web"]["environment"], json!(["A=1", "B=2"]));
    }

    #[test]
    fn yes_and_leading_zero_numbers_stay_strings() {
        let v = yaml("a: yes\nb: on\nc: 0755\nd: true\ne: 8080\n");
        assert_eq!(
            v,
            json!({"a": "yes", "b": "on", "c": "0755", "d": true, "e": 8080})
        );
    }

    #[test]
    fn rejects_empty_multi_document_and_malformed_files() {
        for (text, reason) in [
            ("", "the file is empty"),
            ("# only a comment\n", "the file is empty"),
            ("a: 1\n---\nb: 2\n", "2 YAML documents"),
            ("a: [1\n", "unclosed"),
            ("a: 1\na: 2\n", "duplicate mapping key"),
        ] {
            let e = parse_yaml(text, Path::new("compose.yaml")).unwrap_err();
            assert!(matches!(e, ComposeError::Yaml { .. }), "{text:?}: {e:?}");
            assert!(e.to_string().contains(reason), "{text:?}: {e}");
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn rejects_files_over_the_size_cap() {
        let text = format!(
            "a: \"{}\"\n",
            "x".repeat(usize::try_from(COMPOSE_FILE_MAX_BYTES).unwrap())
        );
        let e = parse_yaml(&text, Path::new("compose.yaml")).unwrap_err();
        assert!(matches!(e, ComposeError::TooLarge { .. }), "{e:?}");
    }

    #[test]
    fn rejects_alias_bombs() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(parse_yaml(&text, Path::new("compose.yaml")).is_err());
    }

    #[test]
    fn type_errors_name_path_expected_and_found() {
        let v = json!(80);
        let e = Node::new(&v, "services.web.ports").items().unwrap_err();
        assert_eq!(
            e.to_string(),
            "services.web.ports: expected a list, found a number"
        );
    }

    #[test]
    fn scalars_are_read_leniently_after_interpolation() {
        let v = json!({"n": "3", "b": "true", "f": "0.5", "u": 1000});
        let n = Node::new(&v, "");
        let get = |k: &str| n.child(k, &v[k]);
        assert_eq!(get("n").u64(), Ok(3));
        assert_eq!(get("b").bool(), Ok(true));
        let yes = json!("Yes");
        assert_eq!(Node::new(&yes, "privileged").bool(), Ok(true));
        let off = json!("off");
        assert_eq!(Node::new(&off, "tty").bool(), Ok(false));
        assert_eq!(get("f").f64(), Ok(0.5));
        assert_eq!(get("u").string(), Ok("1000".into()));
        assert!(get("b").u64().is_err());
    }

    #[test]
    fn key_values_accept_maps_and_lists() {
        let v = json!({"A": "1", "B": null, "C": 2});
        assert_eq!(
            Node::new(&v, "env").key_values(),
            Ok(vec![
                ("A".into(), Some("1".into())),
                ("B".into(), None),
                ("C".into(), Some("2".into()))
            ])
        );
        let v = json!(["A=1=2", "B", "C="]);
        assert_eq!(
            Node::new(&v, "env").key_values(),
            Ok(vec![
                ("A".into(), Some("1=2".into())),
                ("B".into(), None),
                ("C".into(), Some(String::new()))
            ])
        );
        let v = json!(["=x"]);
        assert!(Node::new(&v, "env").key_values().is_err());
    }
}
