//! Registry mirrors: one endpoint for everything (config `mirrors`, `docs/mirrors.md`).
//!
//! Devices in protected networks may reach nothing but their WFM, which proxies or caches
//! registries. A mirror rule rewrites a registry host (and optionally only repositories under
//! a path prefix) to another endpoint, with its own credentials, CA and plain-HTTP flag. The
//! rewrite applies to every read the agent makes: the desired-state source, SUP-01 OCI
//! packages, `packageLocation` / `keyLocation` URLs on a mirrored host, and container images
//! before Podman pulls them (the image is then tagged with its original name, so compose's
//! name still finds it). Publishing (`margo-agent publish`) is never rewritten.
//!
//! Integrity does not depend on the mirror: manifests fetched by digest, blobs and blob URLs
//! are verified against the digest the document or the manifest names, so a mirror answering
//! with other content is refused (`ERR_DIGEST_MISMATCH`), exactly as the origin would be.
//!
//! The first rule whose host and prefix match wins; rules with a prefix should come before a
//! catch-all rule for the same host.

use crate::oci::Reference;
use serde::Deserialize;
use std::path::PathBuf;

/// One `mirrors` entry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Mirror {
    /// The registry host as documents name it: `host` or `host:port`
    /// (`docker.io` also matches images without a registry part).
    pub host: String,
    /// Only repositories under this path (`fleet/` or `fleet`); empty: every repository.
    pub prefix: String,
    /// The mirror's `host` or `host:port`.
    pub endpoint: String,
    /// Path put in front of the repository (after `prefix` is removed) on the mirror, e.g.
    /// `proxy/docker.io`; empty: none.
    pub endpoint_prefix: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Read the password from this file instead.
    pub password_file: Option<PathBuf>,
    /// A PEM CA certificate trusted for TLS (added to the agent's trust roots).
    pub ca: Option<PathBuf>,
    /// Speak plain HTTP to the endpoint. Default false.
    pub plain_http: bool,
}

fn norm_prefix(p: &str) -> String {
    let p = p.trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

impl Mirror {
    /// The repository on the mirror for `repository` on the original host, if this rule
    /// applies.
    fn map_repository(&self, host: &str, repository: &str) -> Option<String> {
        if !self.host.eq_ignore_ascii_case(host) {
            return None;
        }
        let prefix = norm_prefix(&self.prefix);
        let rest = repository.strip_prefix(prefix.as_str())?;
        Some(format!("{}{rest}", norm_prefix(&self.endpoint_prefix)))
    }

    /// Username and password, reading `password_file` when set.
    pub fn credentials(&self) -> Result<Option<(String, String)>, String> {
        let Some(user) = &self.username else {
            return Ok(None);
        };
        let password = match (&self.password, &self.password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map_err(|e| {
                    format!(
                        "cannot read password_file {} for mirror {}: {e}",
                        f.display(),
                        self.endpoint
                    )
                })?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
            (None, None) => String::new(),
        };
        Ok(Some((user.clone(), password)))
    }

    fn problem(&self, i: usize) -> Option<(String, String)> {
        let key = |k: &str| format!("mirrors[{i}].{k}");
        let hostish = |s: &str| !s.is_empty() && !s.contains('/') && !s.contains("://");
        if !hostish(&self.host) {
            return Some((key("host"), "must be host or host:port".into()));
        }
        if !hostish(&self.endpoint) {
            return Some((key("endpoint"), "must be host or host:port".into()));
        }
        if self.password.is_some() && self.password_file.is_some() {
            return Some((
                format!("mirrors[{i}]"),
                "set password or password_file, not both".into(),
            ));
        }
        if self.username.is_none() && (self.password.is_some() || self.password_file.is_some()) {
            return Some((key("username"), "a password needs a username".into()));
        }
        for (k, v) in [
            ("prefix", &self.prefix),
            ("endpoint_prefix", &self.endpoint_prefix),
        ] {
            if v.split('/').any(|c| c == "..") || v.chars().any(|c| c.is_whitespace()) {
                return Some((key(k), format!("{v:?} is not a repository path")));
            }
        }
        None
    }
}

/// The `mirrors` section: an ordered list of rules.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Mirrors(pub Vec<Mirror>);

impl Mirrors {
    /// The first invalid value, as (key, reason).
    pub fn problem(&self) -> Option<(String, String)> {
        self.0.iter().enumerate().find_map(|(i, m)| m.problem(i))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The rule and mirrored repository for `host`/`repository`.
    fn find(&self, host: &str, repository: &str) -> Option<(&Mirror, String)> {
        self.0
            .iter()
            .find_map(|m| m.map_repository(host, repository).map(|r| (m, r)))
    }

    /// The rule for the endpoint `host` (for credentials of pulls through the mirror).
    pub fn endpoint(&self, host: &str) -> Option<&Mirror> {
        self.0
            .iter()
            .find(|m| m.endpoint.eq_ignore_ascii_case(host))
    }

    /// `r` routed through its mirror, if one applies.
    pub fn reference(&self, r: &Reference) -> Option<Reference> {
        let (m, repository) = self.find(&r.registry, &r.repository)?;
        Some(Reference {
            registry: m.endpoint.clone(),
            repository,
            ..r.clone()
        })
    }

    /// An `http(s)://host/path` URL routed through its mirror: a registry blob URL
    /// (`/v2/<repo>/blobs/<digest>`) gets its repository mapped; any other path on a mirrored
    /// host is kept, behind `endpoint_prefix`.
    pub fn url(&self, url: &str) -> Option<String> {
        let (_, rest) = url.split_once("://")?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if let Some((repo, digest)) = crate::oci::registry_blob_path(path) {
            let (m, repository) = self.find(host, &repo)?;
            return Some(format!(
                "{}://{}/v2/{repository}/blobs/{digest}",
                scheme(m),
                m.endpoint
            ));
        }
        let m = self
            .0
            .iter()
            .find(|m| m.host.eq_ignore_ascii_case(host) && norm_prefix(&m.prefix).is_empty())?;
        let ep = norm_prefix(&m.endpoint_prefix);
        let ep = if ep.is_empty() {
            String::new()
        } else {
            format!("/{}", ep.trim_end_matches('/'))
        };
        Some(format!("{}://{}{ep}{path}", scheme(m), m.endpoint))
    }

    /// A container image (`[host/]repo[:tag|@digest]`) routed through its mirror. Images
    /// without a registry part are `docker.io` (`library/` for single names), as Podman and
    /// Docker resolve them.
    pub fn image(&self, image: &str) -> Option<String> {
        let (first, rest) = image.split_once('/').unwrap_or(("", image));
        let (host, path) = if !first.is_empty()
            && (first.contains('.') || first.contains(':') || first == "localhost")
        {
            (first, rest.to_string())
        } else if first.is_empty() {
            ("docker.io", format!("library/{rest}"))
        } else {
            ("docker.io", image.to_string())
        };
        let split = path
            .find('@')
            .or_else(|| {
                let slash = path.rfind('/').map_or(0, |i| i + 1);
                path[slash..].find(':').map(|i| i + slash)
            })
            .unwrap_or(path.len());
        let (repo, suffix) = path.split_at(split);
        let (m, repository) = self.find(host, repo)?;
        Some(format!("{}/{repository}{suffix}", m.endpoint))
    }

    /// CA files of every endpoint.
    pub fn ca_files(&self) -> Vec<PathBuf> {
        self.0.iter().filter_map(|m| m.ca.clone()).collect()
    }
}

fn scheme(m: &Mirror) -> &'static str {
    if m.plain_http { "http" } else { "https" }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn mirrors() -> Mirrors {
        Mirrors(vec![
            Mirror {
                host: "registry.example.com".into(),
                prefix: "fleet".into(),
                endpoint: "wfm.local:8443".into(),
                endpoint_prefix: "cache/fleet".into(),
                ..Mirror::default()
            },
            Mirror {
                host: "docker.io".into(),
                endpoint: "wfm.local:8443".into(),
                endpoint_prefix: "hub".into(),
                plain_http: true,
                ..Mirror::default()
            },
        ])
    }

    #[test]
    fn references_urls_and_images_are_routed_by_host_and_prefix() {
        let m = mirrors();
        let r = Reference::parse("registry.example.com/fleet/dev1/desired:latest").unwrap();
        let routed = m.reference(&r).unwrap();
        assert_eq!(routed.registry, "wfm.local:8443");
        assert_eq!(routed.repository, "cache/fleet/dev1/desired");
        assert_eq!(routed.tag.as_deref(), Some("latest"));
        let other = Reference::parse("registry.example.com/apps/x:1").unwrap();
        assert!(m.reference(&other).is_none(), "prefix must match");
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            m.url(&format!(
                "https://registry.example.com/v2/fleet/p/blobs/{d}"
            ))
            .unwrap(),
            format!("https://wfm.local:8443/v2/cache/fleet/p/blobs/{d}")
        );
        assert_eq!(
            m.url("https://docker.io/some/file.tar.gz").unwrap(),
            "http://wfm.local:8443/hub/some/file.tar.gz"
        );
        assert!(m.url("https://elsewhere.example/x").is_none());
        assert_eq!(
            m.image("busybox:1.35").unwrap(),
            "wfm.local:8443/hub/library/busybox:1.35"
        );
        assert_eq!(
            m.image(&format!("registry.example.com/fleet/app@{d}"))
                .unwrap(),
            format!("wfm.local:8443/cache/fleet/app@{d}")
        );
        assert!(m.image("quay.io/x/y:1").is_none());
    }

    #[test]
    fn config_sections_parse_and_bad_values_name_their_key() {
        use crate::config::Config;
        let parse = |t: &str| Config::from_yaml(std::path::Path::new("t.yaml"), t);
        let c = parse(
            "desired_state:\n  directory: /media/margo\n\
             mirrors:\n  - host: registry.example.com\n    endpoint: wfm:8443\n    username: u\n    password: p\n\
             signatures:\n  policy: require\n  allowed_fingerprints: ['7A25 924E 6171 9339 8319  8BCC 483D 7982 D8AD D1FE']\n\
             images:\n  prune: false\n",
        )
        .unwrap();
        assert_eq!(c.mirrors.0[0].endpoint, "wfm:8443");
        assert_eq!(
            c.mirrors.0[0].credentials().unwrap(),
            Some(("u".into(), "p".into()))
        );
        assert!(!c.images.prune);
        assert_eq!(
            c.signatures.policy,
            crate::package::signature::SignaturePolicy::Require
        );
        let d = parse("").unwrap();
        assert!(d.images.prune && d.mirrors.is_empty());
        for (text, key) in [
            ("signatures:\n  policy: sometimes\n", "sometimes"),
            (
                "signatures:\n  allowed_fingerprints: [abc]\n",
                "signatures.allowed_fingerprints[0]",
            ),
            (
                "signatures:\n  trusted_keys: [/nonexistent.asc]\n",
                "signatures.trusted_keys[0]",
            ),
            (
                "mirrors:\n  - host: a\n    endpoint: b\n    password: p\n",
                "mirrors[0].username",
            ),
            (
                "desired_state:\n  reference: r.io/a\n  directory: /x\n",
                "desired_state.directory",
            ),
            ("desired_state:\n  directory: rel/dir\n", "absolute"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?}: {e}");
        }
    }

    #[test]
    fn bad_rules_are_named() {
        let m = Mirrors(vec![Mirror {
            host: "a".into(),
            endpoint: "https://b".into(),
            ..Mirror::default()
        }]);
        assert_eq!(m.problem().unwrap().0, "mirrors[0].endpoint");
    }
}
