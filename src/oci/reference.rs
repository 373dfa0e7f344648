//! OCI references: `[oci://]registry[:port]/repository[:tag][@sha256:…]`.
//!
//! Parsed strictly per the distribution spec's grammar (repository components
//! `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, tags `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`). A name
//! without a registry host follows docker's convention (`docker.io`, `library/` for one
//! component) so image names in Compose files mean what they mean to docker.

use crate::digest::Digest;
use std::fmt;

/// Default registry for names without a host, as docker resolves them.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// Tag used when a reference names neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";

/// A parsed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]` as written (lowercased).
    pub registry: String,
    /// Repository path, e.g. `fleet/device-42/desired-state`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("reference {input:?} is invalid: {reason}")]
pub struct ReferenceError {
    pub input: String,
    pub reason: String,
}

impl Reference {
    /// Parses a reference; `oci://` is accepted and dropped.
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        let err = |reason: &str| ReferenceError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let s = input.strip_prefix("oci://").unwrap_or(input);
        if s.is_empty() || s.len() > 4096 {
            return Err(err("empty or longer than 4096 characters"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(Digest::parse(d).map_err(|e| err(&e.to_string()))?)),
            None => (s, None),
        };
        // A tag follows the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/');
        let (name, tag) = match rest.rfind(':') {
            Some(i) if last_slash.is_none_or(|sl| i > sl) => {
                (&rest[..i], Some(rest[i + 1..].to_string()))
            }
            _ => (rest, None),
        };
        if let Some(t) = &tag
            && !valid_tag(t)
        {
            return Err(err("tag must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_ascii_lowercase(), path.to_string())
            }
            _ if !name.contains('/') => (DEFAULT_REGISTRY.to_string(), format!("library/{name}")),
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        if !valid_registry(&registry) {
            return Err(err("registry host must be host[:port]"));
        }
        if repository.len() > 255 || !repository.split('/').all(valid_component) {
            return Err(err(
                "repository components must be lowercase [a-z0-9] separated by '.', '_', '__' or '-'",
            ));
        }
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The tag, or `latest` when neither a tag nor a digest is given.
    pub fn tag_or_default(&self) -> &str {
        self.tag.as_deref().unwrap_or(DEFAULT_TAG)
    }

    /// What a manifest request names: the digest when pinned, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// The same repository with another tag.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_registry(r: &str) -> bool {
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) if !h.contains(']') || h.ends_with(']') => (h, Some(p)),
        _ => (r, None),
    };
    if let Some(p) = port
        && p.parse::<u16>().is_err()
    {
        return false;
    }
    !host.is_empty()
        && host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'[' | b']' | b':'))
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_lowercase() && !b[0].is_ascii_digit() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let ch = b[i];
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            i += 1;
            continue;
        }
        // A separator: '.', '_', '__' or a run of '-', followed by an alphanumeric.
        let start = i;
        match ch {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !(b[i].is_ascii_lowercase() || b[i].is_ascii_digit()) {
            return false;
        }
    }
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;

    #[test]
    fn parses_registry_port_repo_and_tag() {
        let r = Reference::parse("oci://127.0.0.1:5000/fleet/dev-1/desired:v2").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "fleet/dev-1/desired");
        assert_eq!(r.tag.as_deref(), Some("v2"));
        assert_eq!(r.to_string(), "127.0.0.1:5000/fleet/dev-1/desired:v2");
    }

    #[test]
    fn docker_hub_short_names_expand_like_docker() {
        let r = Reference::parse("nginx").unwrap();
        assert_eq!(r.name(), "docker.io/library/nginx");
        assert_eq!(r.tag_or_default(), "latest");
        let r = Reference::parse("bitnami/redis:7").unwrap();
        assert_eq!(r.name(), "docker.io/bitnami/redis");
    }

    #[test]
    fn digest_pins_the_manifest_request() {
        let d = Digest::of(b"x");
        let r = Reference::parse(&format!("reg.example.com/a/b:t@{d}")).unwrap();
        assert_eq!(r.manifest_ref(), d.to_string());
    }

    #[test]
    fn rejects_malformed_references() {
        for bad in [
            "",
            "reg.example.com/UPPER/x",
            "reg.example.com/a//b",
            "reg.example.com/a/b:-bad",
            "reg.example.com:99999/a",
            "reg.example.com/a/b@sha256:zz",
            "reg.example.com/a-/b",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
