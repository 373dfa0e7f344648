//! Where the compose file is in an extracted package.
//!
//! Two layouts exist. SUP-01 (OCI `repository` + `revision`) fixes one: exactly one top
//! directory, of any name, holding a file named exactly `compose.yaml`. The older
//! `packageLocation` tarballs (the PoC's `.app`) hold one of the four names compose itself
//! looks for, at the root or inside a single top directory. Several candidates in one place
//! is an error rather than compose's silent preference, so the package author finds out
//! which file the device would have ignored. The compose file must be a regular file: a
//! symlink would be safe (unpacking keeps links inside the package) but no packager makes
//! one, so it more likely means a mistake.

use super::PackageError;
use std::fs;
use std::path::{Path, PathBuf};

/// Compose file names, in compose's own order of preference.
pub const COMPOSE_FILE_NAMES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];
/// The only name SUP-01 allows.
const SUP01_COMPOSE_FILE: &str = "compose.yaml";
/// How many names an error message lists before "…".
const NAMES_IN_MESSAGE: usize = 5;

/// Which packaging convention the package follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageLayout {
    /// SUP-01 OCI artifact: one top directory holding `compose.yaml`.
    OciCompose,
    /// Older `packageLocation` tarball: a compose file at the root or in a single top
    /// directory.
    Tarball,
}

/// The compose project directory and its compose file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeRoot {
    /// The directory compose runs in (relative paths in the compose file start here).
    pub dir: PathBuf,
    /// The compose file inside `dir`.
    pub file: PathBuf,
}

/// Finds the compose file in the extracted package at `dest`.
pub fn find_compose_root(dest: &Path, layout: PackageLayout) -> Result<ComposeRoot, PackageError> {
    let top = list(dest)?;
    match layout {
        PackageLayout::OciCompose => {
            let dir = match top.as_slice() {
                [only] if only.is_dir => dest.join(&only.name),
                _ => {
                    return Err(no_compose(
                        dest,
                        format!(
                            "an OCI compose package must hold exactly one top directory (SUP-01); found {}",
                            names(&top)
                        ),
                    ));
                }
            };
            let inside = list(&dir)?;
            match compose_files(&inside, &[SUP01_COMPOSE_FILE], &dir)?.as_slice() {
                [file] => Ok(ComposeRoot {
                    file: dir.join(file),
                    dir,
                }),
                _ => Err(no_compose(
                    &dir,
                    format!(
                        "holds no {SUP01_COMPOSE_FILE} (SUP-01 requires that exact name); found {}",
                        names(&inside)
                    ),
                )),
            }
        }
        PackageLayout::Tarball => {
            let at_root = compose_files(&top, &COMPOSE_FILE_NAMES, dest)?;
            if let Some(root) = single_compose(dest, &at_root)? {
                return Ok(root);
            }
            let dirs: Vec<&Listed> = top.iter().filter(|l| l.is_dir).collect();
            let [only] = dirs.as_slice() else {
                return Err(no_compose(
                    dest,
                    format!(
                        "holds no compose file ({}) at the top, nor a single top directory with one; found {}",
                        COMPOSE_FILE_NAMES.join(", "),
                        names(&top)
                    ),
                ));
            };
            let dir = dest.join(&only.name);
            let inside = list(&dir)?;
            let found = compose_files(&inside, &COMPOSE_FILE_NAMES, &dir)?;
            single_compose(&dir, &found)?.ok_or_else(|| {
                no_compose(
                    &dir,
                    format!(
                        "holds no compose file ({}); found {}",
                        COMPOSE_FILE_NAMES.join(", "),
                        names(&inside)
                    ),
                )
            })
        }
    }
}

/// One directory entry, symlinks not followed.
struct Listed {
    name: String,
    is_dir: bool,
    is_file: bool,
}

fn list(dir: &Path) -> Result<Vec<Listed>, PackageError> {
    let io = |action, e| PackageError::Io {
        action,
        path: dir.to_path_buf(),
        source: e,
    };
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io("list", e))? {
        let entry = entry.map_err(|e| io("list", e))?;
        let ft = entry.file_type().map_err(|e| io("inspect entries of", e))?;
        out.push(Listed {
            name: entry.file_name().to_string_lossy().into_owned(),
            is_dir: ft.is_dir(),
            is_file: ft.is_file(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The entries of `listed` named like a compose file, which must be regular files.
fn compose_files<'a>(
    listed: &'a [Listed],
    wanted: &[&str],
    dir: &Path,
) -> Result<Vec<&'a str>, PackageError> {
    let mut found = Vec::new();
    for w in wanted {
        if let Some(l) = listed.iter().find(|l| l.name == *w) {
            if !l.is_file {
                return Err(no_compose(dir, format!("{w} is not a regular file")));
            }
            found.push(l.name.as_str());
        }
    }
    Ok(found)
}

fn single_compose(dir: &Path, found: &[&str]) -> Result<Option<ComposeRoot>, PackageError> {
    match found {
        [] => Ok(None),
        [file] => Ok(Some(ComposeRoot {
            dir: dir.to_path_buf(),
            file: dir.join(file),
        })),
        several => Err(no_compose(
            dir,
            format!(
                "holds several compose files ({}); a package must have exactly one",
                several.join(", ")
            ),
        )),
    }
}

fn no_compose(dir: &Path, reason: String) -> PackageError {
    PackageError::NoComposeFile {
        dir: dir.to_path_buf(),
        reason,
    }
}

fn names(listed: &[Listed]) -> String {
    if listed.is_empty() {
        return "nothing".into();
    }
    let mut s: Vec<String> = listed
        .iter()
        .take(NAMES_IN_MESSAGE)
        .map(|l| {
            if l.is_dir {
                format!("{}/", l.name)
            } else {
                l.name.clone()
            }
        })
        .collect();
    if listed.len() > NAMES_IN_MESSAGE {
        s.push(format!("and {} more", listed.len() - NAMES_IN_MESSAGE));
    }
    s.join(", ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::*;
    use crate::package::ERR_PACKAGE_INVALID;

    /// A directory tree from `(path, is_dir)` pairs, removed on drop.
    struct Tree(PathBuf);

    impl Tree {
        fn new(tag: &str, entries: &[&str]) -> Tree {
            let root = std::env::temp_dir()
                .join(format!("margo-layout-test-{}-{tag}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(&root).unwrap();
            for e in entries {
                let p = root.join(e.trim_end_matches('/'));
                if e.ends_with('/') {
                    fs::create_dir_all(&p).unwrap();
                } else {
                    fs::create_dir_all(p.parent().unwrap()).unwrap();
                    fs::write(&p, b"services: {}\n").unwrap();
                }
            }
            Tree(root)
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn refused(t: &Tree, layout: PackageLayout) -> String {
        let e = find_compose_root(&t.0, layout).unwrap_err();
        assert_eq!(e.code(), ERR_PACKAGE_INVALID);
        e.to_string()
    }

    #[test]
    fn finds_compose_yaml_in_the_single_top_directory_of_an_oci_package() {
        let t = Tree::new(
            "oci-ok",
            &["whatever-name/compose.yaml", "whatever-name/app.env"],
        );
        let r = find_compose_root(&t.0, PackageLayout::OciCompose).unwrap();
        assert_eq!(r.dir, t.0.join("whatever-name"));
        assert_eq!(r.file, t.0.join("whatever-name/compose.yaml"));
    }

    #[test]
    fn oci_package_needs_exactly_one_top_directory_and_the_exact_name() {
        let t = Tree::new("oci-two", &["a/compose.yaml", "b/compose.yaml"]);
        assert!(refused(&t, PackageLayout::OciCompose).contains("exactly one top directory"));
        let t = Tree::new("oci-root", &["compose.yaml"]);
        assert!(refused(&t, PackageLayout::OciCompose).contains("found compose.yaml"));
        let t = Tree::new("oci-yml", &["app/docker-compose.yml"]);
        let msg = refused(&t, PackageLayout::OciCompose);
        assert!(
            msg.contains("holds no compose.yaml") && msg.contains("docker-compose.yml"),
            "{msg}"
        );
    }

    #[test]
    fn tarball_compose_file_at_root_or_in_single_directory() {
        let t = Tree::new("tar-root", &["docker-compose.yaml", "images/web.tar"]);
        let r = find_compose_root(&t.0, PackageLayout::Tarball).unwrap();
        assert_eq!(r.dir, t.0);
        assert_eq!(r.file, t.0.join("docker-compose.yaml"));
        let t = Tree::new("tar-dir", &["app/compose.yml"]);
        let r = find_compose_root(&t.0, PackageLayout::Tarball).unwrap();
        assert_eq!(r.file, t.0.join("app/compose.yml"));
    }

    #[test]
    fn tarball_with_several_or_no_compose_files_is_refused() {
        let t = Tree::new("tar-several", &["compose.yaml", "docker-compose.yml"]);
        let msg = refused(&t, PackageLayout::Tarball);
        assert!(
            msg.contains("several compose files (compose.yaml, docker-compose.yml)"),
            "{msg}"
        );
        let t = Tree::new("tar-none", &["a/readme.txt", "b/"]);
        assert!(refused(&t, PackageLayout::Tarball).contains("holds no compose file"));
        let t = Tree::new("tar-empty", &[]);
        assert!(refused(&t, PackageLayout::Tarball).contains("found nothing"));
    }

    #[test]
    fn compose_file_must_be_a_regular_file() {
        let t = Tree::new("tar-link", &["real.yaml"]);
        std::os::unix::fs::symlink("real.yaml", t.0.join("compose.yaml")).unwrap();
        assert!(refused(&t, PackageLayout::Tarball).contains("not a regular file"));
    }
}
