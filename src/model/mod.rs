//! Margo documents as plain serde types, and the validation that turns a desired state
//! (one or more `ApplicationDeployment` YAML documents) into deployments the agent can apply.
//!
//! Owns: [`parse_documents`] (multi-document YAML → validated [`ApplicationDeployment`]s),
//! the wire form of both the older (early draft / PoC: `packageLocation`, ids in
//! annotations) and the newer (SUP-01: `repository` + `revision`, `spec.applicationId`)
//! documents in [`document`], the checks in [`validate`] and [`fields`], the validated types
//! in [`deployment`], and [`ModelError`].
//!
//! Refuses, as a whole: input over [`DOCUMENTS_MAX_BYTES`] or with more than
//! [`DOCUMENTS_MAX_COUNT`] documents, text that is not UTF-8 YAML, any document that is not an
//! `ApplicationDeployment`, two documents with one deployment id, and two deployments whose
//! components would share a compose project. A desired state is applied all or nothing, so
//! one invalid deployment refuses the set; the error names that deployment so the caller can
//! report it Failed while keeping what runs.
//!
//! Shape: every source (OCI tag, State Manifest API, directory) hands its bytes here, so all
//! of them get the same validation. Unknown fields are ignored (a newer WFM may add some);
//! fields the agent acts on are checked. Parsing is two passes over the documents (split at
//! their `---`/`...` markers, see `split_documents`): the first into untyped values, only to say what each
//! document *is* (a `DeviceCapabilities` gets "document 2 is a DeviceCapabilities", not a
//! type error); the second into [`DeploymentDocument`], whose `String` fields keep scalars as
//! written. Change detection hashes the canonical JSON of the second (see [`document`]).

pub mod deployment;
pub mod document;
pub mod error;
pub mod fields;
pub mod validate;

pub use deployment::{
    ApplicationDeployment, Component, PackageSource, PackageUrl, Parameter, ProfileType, Revision,
    Target, project_name,
};
pub use document::DeploymentDocument;
pub use error::{ERR_DEPLOYMENT_INVALID, ERR_DESIRED_STATE_INVALID, ModelError};

use serde_json::Value;
use std::collections::BTreeMap;

/// Largest desired state accepted, all documents together. A device's deployments are a
/// few KiB each; 1 MiB leaves room for hundreds while keeping a malicious input from
/// costing the parser real memory.
pub const DOCUMENTS_MAX_BYTES: usize = 1024 * 1024;
/// Most non-empty documents accepted in one desired state; far more deployments than a
/// standalone device runs.
pub const DOCUMENTS_MAX_COUNT: usize = 256;

/// Parses and validates a desired state: YAML documents separated by `---`, empty ones
/// skipped. Documents are numbered from 1 among the non-empty ones in error messages.
pub fn parse_documents(bytes: &[u8]) -> Result<Vec<ApplicationDeployment>, ModelError> {
    if bytes.len() > DOCUMENTS_MAX_BYTES {
        return Err(ModelError::TooLarge {
            size: bytes.len(),
            max: DOCUMENTS_MAX_BYTES,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| ModelError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;

    // The documents, split at their markers; each is parsed from a `&str` (serde-saphyr's
    // reader API would link a whole character-set converter for input that is UTF-8 already).
    let docs = split_documents(text);

    // Pass 1: what each document is, and what it calls itself (for messages).
    let mut headers = Vec::new();
    for doc in &docs {
        let value =
            serde_saphyr::from_str_with_options::<Value>(doc.text, options()).map_err(|e| {
                ModelError::Yaml {
                    message: doc.message(&e),
                }
            })?;
        headers.push(Header::of(headers.len() + 1, &value)?);
        if headers.len() > DOCUMENTS_MAX_COUNT {
            return Err(ModelError::TooManyDocuments {
                max: DOCUMENTS_MAX_COUNT,
            });
        }
    }

    // Pass 2: the typed documents, validated one by one.
    let mut out: Vec<ApplicationDeployment> = Vec::with_capacity(headers.len());
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    for (i, piece) in docs.iter().enumerate() {
        let index = i + 1;
        let doc = serde_saphyr::from_str_with_options::<DeploymentDocument>(piece.text, options())
            .map_err(|e| {
                let h = headers.get(i);
                ModelError::Invalid {
                    index,
                    id: h.and_then(|h| h.id.clone()),
                    name: h.and_then(|h| h.name.clone()),
                    field: String::new(),
                    reason: piece.message(&e),
                }
            })?;
        let d = validate::validate(doc, index)?;
        if let Some(first) = ids.insert(d.id.clone(), index) {
            return Err(ModelError::DuplicateId {
                id: d.id,
                first,
                second: index,
            });
        }
        out.push(d);
    }
    if out.len() != headers.len() {
        // Both passes skip the same empty documents; a mismatch means the reader disagreed
        // with itself, and guessing which document is which would be worse than refusing.
        return Err(ModelError::Yaml {
            message: format!(
                "found {} documents on one reading and {} on another",
                headers.len(),
                out.len()
            ),
        });
    }
    check_projects(&out)?;
    Ok(out)
}

fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        // Messages go to the journal: one line, no source snippet.
        with_snippet: false,
        // `value: .nan` is a string to us; never a reason to refuse the document.
        non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::AsString,
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: Some(DOCUMENTS_MAX_BYTES),
        },
    }
}

/// One document of a multi-document YAML stream.
struct Piece<'a> {
    text: &'a str,
    /// Lines of the whole input before `text` (added to the line numbers in messages).
    lines_before: usize,
}

impl Piece<'_> {
    /// The parser's message with its line numbers counted in the whole input.
    fn message(&self, e: &serde_saphyr::Error) -> String {
        shift_lines(&e.to_string(), self.lines_before)
    }
}

/// Adds `by` to every `line N` in a parser message.
fn shift_lines(message: &str, by: usize) -> String {
    if by == 0 {
        return message.to_string();
    }
    let mut out = String::with_capacity(message.len() + 8);
    let mut rest = message;
    while let Some(at) = rest.find("line ") {
        let (head, tail) = rest.split_at(at + "line ".len());
        out.push_str(head);
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        match tail[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + by).to_string()),
            Err(_) => out.push_str(&tail[..digits]),
        }
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

/// Splits a YAML stream into its non-empty documents. Document markers (`---`, `...` at
/// column 0, then a blank or the line's end) cannot occur inside a document in YAML 1.2 —
/// block and quoted scalars included — so a line scan finds exactly the parser's documents.
/// A `---` line stays with the document it opens (it may carry content: `--- |`); directives
/// (`%YAML`) stay with the `---` that follows them. Empty documents (blanks, comments,
/// markers only) are dropped, as the parser's stream reader drops them.
fn split_documents(text: &str) -> Vec<Piece<'_>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let is_marker = |line: &str, m: &str| {
        line.strip_prefix(m)
            .is_some_and(|r| r.is_empty() || r.starts_with([' ', '\t', '\r']))
    };
    let has_content = |s: &str| {
        let t = s.trim_start();
        !t.is_empty() && !t.starts_with('#')
    };
    let mut out = Vec::new();
    let (mut start, mut start_line, mut content, mut directives) = (0usize, 0usize, false, false);
    let mut close = |start: usize, start_line: usize, end: usize, content: bool| {
        if content {
            out.push(Piece {
                text: &text[start..end],
                lines_before: start_line,
            });
        }
    };
    let mut pos = 0usize;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        if is_marker(bare, "---") {
            if content {
                close(start, start_line, pos, true);
                directives = false;
            }
            if content || !directives {
                (start, start_line) = (pos, n);
            }
            content = has_content(&bare[3..]);
            directives = false;
        } else if is_marker(bare, "...") {
            close(start, start_line, pos + line.len(), content);
            (start, start_line, content, directives) = (pos + line.len(), n + 1, false, false);
        } else if !content && bare.starts_with('%') {
            if !directives {
                (start, start_line) = (pos, n);
            }
            directives = true;
        } else if has_content(bare) {
            content = true;
        }
        pos += line.len();
    }
    close(start, start_line, text.len(), content);
    out
}

/// What a document says about itself, read leniently.
struct Header {
    id: Option<String>,
    name: Option<String>,
}

impl Header {
    fn of(index: usize, v: &Value) -> Result<Header, ModelError> {
        let Value::Object(map) = v else {
            let what = match v {
                Value::Array(_) => "a list",
                Value::String(_) => "a plain string",
                _ => "a single value",
            };
            return Err(ModelError::WrongKind {
                index,
                what: what.into(),
            });
        };
        match map.get("kind") {
            Some(Value::String(k)) if k == validate::KIND => {}
            Some(Value::String(k)) => {
                return Err(ModelError::WrongKind {
                    index,
                    what: format!("a {k}"),
                });
            }
            Some(_) => {
                return Err(ModelError::WrongKind {
                    index,
                    what: "a document whose kind is not text".into(),
                });
            }
            None => {
                return Err(ModelError::WrongKind {
                    index,
                    what: "a document without kind".into(),
                });
            }
        }
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        let metadata = map.get("metadata");
        let name = text(metadata.and_then(|m| m.get("name")));
        let id = text(
            metadata
                .and_then(|m| m.get("annotations"))
                .and_then(|a| a.get("id")),
        )
        .or_else(|| text(map.get("id")))
        .or_else(|| name.clone());
        Ok(Header { id, name })
    }
}

/// Two deployments whose components map to one compose project would fight over the same
/// containers; refuse rather than let the second silently take over the first.
fn check_projects(deployments: &[ApplicationDeployment]) -> Result<(), ModelError> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for d in deployments {
        for c in &d.components {
            let project = d.project_name(&c.name);
            match seen.get(project.as_str()) {
                Some(first) if *first != d.id => {
                    return Err(ModelError::ProjectClash {
                        project,
                        first: (*first).to_string(),
                        second: d.id.clone(),
                    });
                }
                _ => {
                    seen.insert(project, &d.id);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests;

#[cfg(test)]
mod split_tests {
    use super::*;

    fn texts(s: &str) -> Vec<(&str, usize)> {
        split_documents(s)
            .iter()
            .map(|p| (p.text, p.lines_before))
            .collect()
    }

    #[test]
    fn documents_split_at_markers_and_empty_ones_drop() {
        assert_eq!(texts("a: 1\n"), [("a: 1\n", 0)]);
        assert_eq!(
            texts("---\na: 1\n---\n# only a comment\n---\nb: 2\n...\n\n"),
            [("---\na: 1\n", 0), ("---\nb: 2\n...\n", 4)]
        );
        // A marker carrying content, a directive staying with its document, CRLF lines.
        assert_eq!(
            texts("--- |\n  text\n...\n%YAML 1.2\n---\nc: 3\r\n---\r\nd: 4\r\n"),
            [
                ("--- |\n  text\n...\n", 0),
                ("%YAML 1.2\n---\nc: 3\r\n", 3),
                ("---\r\nd: 4\r\n", 6)
            ]
        );
        // `----` and `---x` are content, not markers; a BOM is dropped.
        assert_eq!(
            texts("\u{feff}k: |\n  ----\n  ---x\n"),
            [("k: |\n  ----\n  ---x\n", 0)]
        );
        assert!(texts("").is_empty());
        assert!(texts("---\n...\n# x\n---\n").is_empty());
    }

    #[test]
    fn split_documents_parse_like_the_stream_and_lines_count_in_the_whole_input() {
        let input = "---\na: 1\n---\n\nb: [1,\n";
        let pieces = split_documents(input);
        assert_eq!(pieces.len(), 2);
        let e = serde_saphyr::from_str::<Value>(pieces[1].text).unwrap_err();
        let m = pieces[1].message(&e);
        // The error is on line 5 of the whole input (line 3 of the second document).
        assert!(m.contains("line 5") || m.contains("line 6"), "{m}");
        assert_eq!(
            shift_lines("bad at line 3, column 2 (defined at line 1, column 1)", 10),
            "bad at line 13, column 2 (defined at line 11, column 1)"
        );
        assert_eq!(shift_lines("no number: line x", 4), "no number: line x");
    }
}
