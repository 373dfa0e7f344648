//! The air-gapped desired-state source: a local directory (a mounted USB stick, or a
//! directory an installer writes) holding ApplicationDeployment YAML files and the packages
//! and keys they name by relative path (`packageLocation: packages/app.tar.gz`,
//! `keyLocation: keys/vendor.asc`).
//!
//! The documents are the `*.yaml` / `*.yml` regular files directly in the directory, read in
//! name order (at most [`DIR_MAX_FILES`], together at most
//! [`DESIRED_STATE_MAX_LAYER_BYTES`]). The revision is the SHA-256 over their names and
//! contents, so an unchanged directory is "unchanged" exactly as an unchanged tag is; an
//! optional file `VERSION` holding a non-negative integer is the rollback-protection version
//! (the OCI source's annotation). Everything after the poll — validation, signatures, status
//! — is the same code as for the registry source.
//!
//! A directory that is missing or unreadable (stick not mounted) is "unreachable": nothing
//! changes, the daemon retries.

use super::layer::{DESIRED_STATE_MAX_LAYER_BYTES, YamlFile};
use super::oci::{ERR_DESIRED_STATE_INVALID, ERR_VERSION_ROLLBACK, Known};
use super::{Polled, Revision, SourceError, check_version, parse_version};
use crate::digest::Digest;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Most YAML files read from the directory.
pub const DIR_MAX_FILES: usize = 256;

#[derive(Debug, Clone)]
pub struct DirSource {
    pub dir: PathBuf,
}

impl DirSource {
    pub fn new(dir: PathBuf) -> DirSource {
        DirSource { dir }
    }

    /// One poll. See the module docs.
    pub fn poll(&self, known: Known) -> Result<Polled, SourceError> {
        let unreachable = |e: String| {
            SourceError::Unreachable(format!(
                "desired-state directory {}: {e}; nothing is changed, looking again later",
                self.dir.display()
            ))
        };
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| unreachable(e.to_string()))? {
            let entry = entry.map_err(|e| unreachable(e.to_string()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_yaml = name.ends_with(".yaml") || name.ends_with(".yml");
            if is_yaml && !name.starts_with('.') {
                names.push(name);
            }
        }
        names.sort();
        let (files, digest) = self.read_files(&names)?;
        let version = match read_small(&self.dir.join("VERSION")) {
            Ok(Some(text)) => Some(parse_version(&text).map_err(|m| SourceError::Invalid {
                code: ERR_DESIRED_STATE_INVALID,
                message: format!("{}: VERSION {m}", self.dir.display()),
                digest: Some(digest.clone()),
            })?),
            Ok(None) => None,
            Err(e) => return Err(unreachable(e)),
        };
        let is_applied = Some(&digest) == known.applied;
        if (is_applied && known.applied_converged) || Some(&digest) == known.rejected {
            return Ok(Polled::Unchanged);
        }
        if !is_applied {
            check_version(version, known.applied_version).map_err(|m| SourceError::Invalid {
                code: ERR_VERSION_ROLLBACK,
                message: format!("desired-state directory {}: {m}", self.dir.display()),
                digest: Some(digest.clone()),
            })?;
        }
        Ok(Polled::Changed {
            revision: Revision { digest, version },
            files,
        })
    }

    fn read_files(&self, names: &[String]) -> Result<(Vec<YamlFile>, Digest), SourceError> {
        let mut hasher = Vec::new();
        let invalid = |message: String| SourceError::Invalid {
            code: ERR_DESIRED_STATE_INVALID,
            message,
            digest: None,
        };
        if names.len() > DIR_MAX_FILES {
            return Err(invalid(format!(
                "desired-state directory {} holds {} YAML files; at most {DIR_MAX_FILES} are read",
                self.dir.display(),
                names.len()
            )));
        }
        let mut total = 0u64;
        let mut files = Vec::new();
        for name in names {
            let path = self.dir.join(name);
            let meta = fs::symlink_metadata(&path).map_err(|e| {
                SourceError::Unreachable(format!("cannot read {}: {e}", path.display()))
            })?;
            if !meta.file_type().is_file() {
                continue;
            }
            let left = DESIRED_STATE_MAX_LAYER_BYTES.saturating_sub(total);
            let mut bytes = Vec::new();
            fs::File::open(&path)
                .and_then(|f| f.take(left + 1).read_to_end(&mut bytes))
                .map_err(|e| {
                    SourceError::Unreachable(format!("cannot read {}: {e}", path.display()))
                })?;
            total += bytes.len() as u64;
            if total > DESIRED_STATE_MAX_LAYER_BYTES {
                return Err(invalid(format!(
                    "desired-state directory {}: the YAML files together are over the {DESIRED_STATE_MAX_LAYER_BYTES}-byte cap",
                    self.dir.display()
                )));
            }
            hasher.extend_from_slice(name.as_bytes());
            hasher.push(0);
            hasher.extend_from_slice(crate::digest::Digest::of(&bytes).as_str().as_bytes());
            hasher.push(0);
            let text = String::from_utf8(bytes)
                .map_err(|_| invalid(format!("{} is not UTF-8 text", path.display())))?;
            files.push(YamlFile {
                name: name.clone(),
                text,
            });
        }
        Ok((files, Digest::of(&hasher)))
    }
}

/// A small text file, `None` when it does not exist.
fn read_small(path: &Path) -> Result<Option<String>, String> {
    match crate::package::signature::read_capped(path, 64) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Resolves `rel` (a relative `packageLocation` or `keyLocation`) inside `base`, refusing a
/// path that leaves it through a symlink.
pub fn resolve(base: &Path, rel: &Path) -> Result<PathBuf, String> {
    let root = base
        .canonicalize()
        .map_err(|e| format!("desired-state directory {}: {e}", base.display()))?;
    let full = root
        .join(rel)
        .canonicalize()
        .map_err(|e| format!("{} in {}: {e}", rel.display(), base.display()))?;
    if !full.starts_with(&root) {
        return Err(format!(
            "{} leads outside the desired-state directory {} (through a symlink)",
            rel.display(),
            base.display()
        ));
    }
    Ok(full)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn polls_yaml_files_in_name_order_and_notices_changes() {
        let dir = std::env::temp_dir().join(format!("margo-dir-src-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("packages")).unwrap();
        fs::write(dir.join("b.yaml"), "b: 1\n").unwrap();
        fs::write(dir.join("a.yml"), "a: 1\n").unwrap();
        fs::write(dir.join("notes.txt"), "x").unwrap();
        let src = DirSource::new(dir.clone());
        let Polled::Changed { revision, files } = src.poll(Known::default()).unwrap() else {
            panic!("changed expected");
        };
        let names: Vec<_> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a.yml", "b.yaml"]);
        let known = Known {
            applied: Some(&revision.digest),
            applied_converged: true,
            ..Known::default()
        };
        assert!(matches!(src.poll(known).unwrap(), Polled::Unchanged));
        fs::write(dir.join("b.yaml"), "b: 2\n").unwrap();
        assert!(matches!(src.poll(known).unwrap(), Polled::Changed { .. }));
        fs::write(dir.join("VERSION"), "3\n").unwrap();
        let known = Known {
            applied_version: Some(4),
            ..known
        };
        assert!(matches!(
            src.poll(known),
            Err(SourceError::Invalid {
                code: ERR_VERSION_ROLLBACK,
                ..
            })
        ));
        std::os::unix::fs::symlink("/etc", dir.join("packages/out")).unwrap();
        assert!(
            resolve(&dir, Path::new("packages/out/passwd"))
                .unwrap_err()
                .contains("outside")
        );
        let _ = fs::remove_dir_all(&dir);
        assert!(matches!(
            src.poll(Known::default()),
            Err(SourceError::Unreachable(_))
        ));
    }
}
