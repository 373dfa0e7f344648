//! Syntax of the individual fields of a deployment: identifiers, component names,
//! environment variable names, package URLs, OCI repositories and SemVer revisions. Each
//! check returns the reason in words; [`super::validate`] adds which field it was.

use super::deployment::{PackageUrl, Revision};
use crate::digest::Digest;
use crate::oci::reference::Reference;

/// Deployment ids travel in URL paths, labels and file names; 253 is the longest
/// Kubernetes-style name a WFM would generate.
pub const DEPLOYMENT_ID_MAX_LEN: usize = 253;
/// The Margo spec: an application id "MUST NOT be more than 200 characters".
pub const APPLICATION_ID_MAX_LEN: usize = 200;
/// Component names end up in container host names, which are DNS labels (63 bytes).
pub const COMPONENT_NAME_MAX_LEN: usize = 63;
/// Package and key URLs longer than this are not something a WFM generates.
pub const PACKAGE_URL_MAX_LEN: usize = 4096;
/// OCI tags are at most 128 characters (distribution spec), so a revision is too.
pub const REVISION_MAX_LEN: usize = 128;
/// Longest component `timeout`: the single-threaded agent waits that long for a component, so
/// a larger value (a typo, or `8760h`) would stall it.
pub const COMPONENT_TIMEOUT_MAX: std::time::Duration = std::time::Duration::from_secs(3600);

/// Deployment and application ids: `[A-Za-z0-9][A-Za-z0-9._-]*`, non-empty, bounded.
pub(super) fn check_identifier(s: &str, max: usize) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    if s.len() > max {
        return Err(format!(
            "is {} characters, over the limit of {max}",
            s.len()
        ));
    }
    let ok = s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(format!(
            "{s:?} must start with a letter or digit and hold only letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Component names become container and project names: `[A-Za-z0-9][A-Za-z0-9._-]*`.
pub(super) fn check_component_name(s: &str) -> Result<(), String> {
    if s.len() > COMPONENT_NAME_MAX_LEN {
        return Err(format!(
            "{s:?} is {} characters, over the limit of {COMPONENT_NAME_MAX_LEN}",
            s.len()
        ));
    }
    check_identifier(s, COMPONENT_NAME_MAX_LEN)
}

/// POSIX-portable environment variable names, which is what Compose interpolates.
pub(super) fn check_env_name(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)"
        ))
    }
}

/// `http(s)://host[:port]/…`: scheme, a host, no credentials, no whitespace.
pub(super) fn package_url(s: &str) -> Result<PackageUrl, String> {
    if s.len() > PACKAGE_URL_MAX_LEN {
        return Err(format!(
            "is {} characters, over the limit of {PACKAGE_URL_MAX_LEN}",
            s.len()
        ));
    }
    if !s.contains("://") {
        return relative_location(s).map(|()| PackageUrl(s.to_string()));
    }
    // `get` rather than slicing: the prefix may end inside a multi-byte character.
    let scheme = |p: &str| s.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p));
    let rest = if scheme("https://") {
        &s[8..]
    } else if scheme("http://") {
        &s[7..]
    } else {
        return Err(format!("{s:?} is not an https:// (or http://) URL"));
    };
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{s:?} contains whitespace or control characters"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(
            "carries credentials in the URL; registry and server credentials belong in the agent's config"
                .into(),
        );
    }
    // `[v6 address]:port` or `host:port`.
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, tail)) => match tail.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return Err(format!("{s:?} has a malformed host")),
            },
            None => return Err(format!("{s:?} has a malformed host")),
        },
        None => match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    if let Some(p) = port
        && p.parse::<u16>().is_err()
    {
        return Err(format!("{s:?} has an invalid port {p:?}"));
    }
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    Ok(PackageUrl(s.to_string()))
}

/// A path relative to the desired-state directory (air-gapped `dir` source): no leading `/`,
/// no `..`, no `:` (so no other URL scheme slips through), no whitespace or control characters.
fn relative_location(s: &str) -> Result<(), String> {
    let why = if s.is_empty() {
        Some("is empty")
    } else if s.starts_with('/') {
        Some("is an absolute path")
    } else if s.split('/').any(|c| c == "..") {
        Some("contains ..")
    } else if s.contains(':') {
        Some("contains ':'")
    } else if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("contains whitespace or control characters")
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(w) => Err(format!(
            "{s:?} is not an https:// (or http://) URL, nor a relative path inside the desired-state directory ({w})"
        )),
    }
}

pub(super) fn oci_repository(s: &str) -> Result<Reference, String> {
    let r = Reference::parse(s).map_err(|e| e.to_string())?;
    if r.tag.is_some() || r.digest.is_some() {
        return Err(format!(
            "{s:?} carries a tag or digest; the version belongs in revision"
        ));
    }
    Ok(r)
}

pub(super) fn parse_revision(s: &str) -> Result<Revision, String> {
    if s.starts_with("sha256:") {
        return Digest::parse(s)
            .map(Revision::Digest)
            .map_err(|e| e.to_string());
    }
    if s.len() > REVISION_MAX_LEN {
        return Err(format!(
            "{s:?} is longer than {REVISION_MAX_LEN} characters, the longest OCI tag"
        ));
    }
    if let Some(rest) = s.strip_prefix(['v', 'V'])
        && check_semver(rest).is_ok()
    {
        return Err(format!(
            "{s:?} starts with 'v'; write SemVer without it ({rest})"
        ));
    }
    check_semver(s).map_err(|r| format!("{s:?} is not SemVer: {r}"))?;
    Ok(Revision::Version(s.to_string()))
}

/// SemVer 2.0.0: `MAJOR.MINOR.PATCH[-pre][+build]`, numbers without leading zeros.
fn check_semver(s: &str) -> Result<(), &'static str> {
    let (rest, build) = match s.split_once('+') {
        Some((r, b)) => (r, Some(b)),
        None => (s, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    let numbers: Vec<&str> = core.split('.').collect();
    if numbers.len() != 3 || !numbers.iter().all(|n| is_numeric_identifier(n)) {
        return Err("expected MAJOR.MINOR.PATCH, numbers without leading zeros");
    }
    let ident_ok =
        |id: &str| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if let Some(pre) = pre {
        let ok = pre.split('.').all(|id| {
            ident_ok(id) && (!id.bytes().all(|b| b.is_ascii_digit()) || is_numeric_identifier(id))
        });
        if !ok {
            return Err("malformed pre-release part");
        }
    }
    if let Some(build) = build
        && !build.split('.').all(ident_ok)
    {
        return Err("malformed build-metadata part");
    }
    Ok(())
}

fn is_numeric_identifier(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && (n == "0" || !n.starts_with('0'))
}
