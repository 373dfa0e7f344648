//! The pure rules for names inside a package: entry paths, symlink targets, file modes.
//! No filesystem access here, so each rule is tested on its own; [`super::unpack`] applies
//! them before it writes anything for an entry.

use std::path::{Component, Path, PathBuf};

/// Longest single name, Linux's `NAME_MAX`.
pub const NAME_MAX_BYTES: usize = 255;
/// Longest entry name quoted in a message.
const NAME_IN_MESSAGE_MAX_CHARS: usize = 200;

/// Why one entry is refused: the variant decides the error code.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Could reach outside the package or onto the device (`ERR_PACKAGE_UNSAFE`).
    Unsafe(String),
    /// Malformed or unsupported (`ERR_PACKAGE_INVALID`).
    Invalid(String),
}

/// Checks an archive path and returns it relative (empty for the root itself).
pub(super) fn relative_path(raw: &[u8], max_bytes: usize) -> Result<PathBuf, Refusal> {
    let s = std::str::from_utf8(raw)
        .map_err(|_| Refusal::Invalid("has a name that is not UTF-8".into()))?;
    if s.len() > max_bytes {
        return Err(Refusal::Unsafe(format!(
            "has a path of {} bytes, over the {max_bytes}-byte cap",
            s.len()
        )));
    }
    if s.starts_with('/') {
        return Err(Refusal::Unsafe("is an absolute path".into()));
    }
    let mut out = PathBuf::new();
    for part in s.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(Refusal::Unsafe("contains '..'".into())),
            p if p.len() > NAME_MAX_BYTES => {
                return Err(Refusal::Unsafe(format!(
                    "has a name over {NAME_MAX_BYTES} bytes"
                )));
            }
            p => out.push(p),
        }
    }
    Ok(out)
}

/// Checks a symlink target as seen from `link`'s directory and returns it unchanged.
pub(super) fn symlink_target(
    link: &Path,
    raw: &[u8],
    max_bytes: usize,
) -> Result<PathBuf, Refusal> {
    let s = std::str::from_utf8(raw)
        .map_err(|_| Refusal::Invalid("is a symlink whose target is not UTF-8".into()))?;
    if s.len() > max_bytes {
        return Err(Refusal::Unsafe(format!(
            "is a symlink whose target is over the {max_bytes}-byte cap"
        )));
    }
    if s.starts_with('/') {
        return Err(Refusal::Unsafe(format!(
            "is a symlink to the absolute path {s:?}; only relative links inside the package are allowed"
        )));
    }
    // Depth of the link's directory below the destination.
    let mut depth = link.parent().map_or(0, |p| p.components().count());
    let mut seen_name = false;
    for c in Path::new(s).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if seen_name => {
                return Err(Refusal::Unsafe(format!(
                    "is a symlink to {s:?}, with '..' after a name; only leading '..' is allowed"
                )));
            }
            Component::ParentDir => {
                if depth == 0 {
                    return Err(Refusal::Unsafe(format!(
                        "is a symlink to {s:?}, which points outside the package"
                    )));
                }
                depth -= 1;
            }
            Component::Normal(_) => seen_name = true,
            Component::RootDir | Component::Prefix(_) => {
                return Err(Refusal::Unsafe(format!(
                    "is a symlink to the absolute path {s:?}"
                )));
            }
        }
    }
    Ok(PathBuf::from(s))
}

/// Header mode → file mode: setuid/setgid/sticky and group/other write dropped, owner
/// read/write kept so the agent can always read what it extracted.
pub(super) fn file_mode(header_mode: u32) -> u32 {
    (header_mode & 0o755) | 0o600
}

/// An entry name for messages: lossy UTF-8, length capped (messages quote it with `{:?}`,
/// which escapes control characters).
pub(super) fn printable(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let mut out: String = s.chars().take(NAME_IN_MESSAGE_MAX_CHARS).collect();
    if s.chars().count() > NAME_IN_MESSAGE_MAX_CHARS {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> Result<PathBuf, Refusal> {
        relative_path(s.as_bytes(), 1024)
    }

    fn link(at: &str, target: &str) -> Result<PathBuf, Refusal> {
        symlink_target(Path::new(at), target.as_bytes(), 1024)
    }

    #[test]
    fn entry_paths_are_normalised_or_refused() {
        assert_eq!(rel("./a//b/./c"), Ok(PathBuf::from("a/b/c")));
        assert_eq!(rel("./"), Ok(PathBuf::new()));
        assert!(matches!(rel("/etc/passwd"), Err(Refusal::Unsafe(_))));
        assert!(matches!(rel("a/../b"), Err(Refusal::Unsafe(_))));
        assert!(matches!(rel(&"n".repeat(256)), Err(Refusal::Unsafe(_))));
        assert!(matches!(
            relative_path(b"a\xff", 1024),
            Err(Refusal::Invalid(_))
        ));
    }

    #[test]
    fn symlink_targets_must_stay_inside() {
        assert!(link("a/b/l", "../../x").is_ok());
        assert!(link("a/l", "./b/c").is_ok());
        assert!(link("l", ".").is_ok());
        assert!(matches!(link("a/l", "../../x"), Err(Refusal::Unsafe(_))));
        assert!(matches!(link("l", "/"), Err(Refusal::Unsafe(_))));
        assert!(matches!(link("l", "b/../c"), Err(Refusal::Unsafe(_))));
    }

    #[test]
    fn file_modes_lose_special_bits_and_group_write() {
        assert_eq!(file_mode(0o104755), 0o755);
        assert_eq!(file_mode(0o2777), 0o755);
        assert_eq!(file_mode(0o1666), 0o644);
        assert_eq!(file_mode(0o000), 0o600);
    }
}
