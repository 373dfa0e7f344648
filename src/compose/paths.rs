//! Confinement of relative paths to the package directory.
//!
//! A compose package comes from the network; its `./conf` bind sources and `env_file`s must
//! not reach files outside the directory it was unpacked into. A path is refused when it
//! leaves the directory lexically (`../x`, an absolute path elsewhere for an `env_file`) or,
//! when it already exists, when its canonical form lies outside (a symlink pointing out).
//! Absolute bind sources are host paths chosen by the deployment and are not confined here;
//! bounding them is the device policy's job.

use super::error::ComposeError;
use std::path::{Component, Path, PathBuf};

/// Resolves a relative path against the project directory and refuses one that leaves it,
/// lexically (`../x`) or through a symlink that already exists.
pub fn inside_project(dir: &Path, rel: &str, path: &str) -> Result<PathBuf, ComposeError> {
    let escape = || {
        ComposeError::invalid(
            path,
            format!(
                "{rel:?} leads outside the project directory {}",
                dir.display()
            ),
        )
    };
    let mut out = dir.to_path_buf();
    let mut depth = 0usize;
    let given = Path::new(rel);
    let relative = match given.strip_prefix(dir) {
        Ok(r) if given.is_absolute() => r,
        _ if given.is_absolute() => return Err(escape()),
        _ => given,
    };
    for c in relative.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(p) => {
                out.push(p);
                depth += 1;
            }
            Component::ParentDir if depth > 0 => {
                out.pop();
                depth -= 1;
            }
            _ => return Err(escape()),
        }
    }
    if let (Ok(real), Ok(real_dir)) = (out.canonicalize(), dir.canonicalize())
        && !real.starts_with(real_dir)
    {
        return Err(escape());
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_paths_inside_the_directory() {
        let dir = Path::new("/srv/pkg");
        assert_eq!(
            inside_project(dir, "./conf", "p").unwrap(),
            Path::new("/srv/pkg/conf")
        );
        assert_eq!(
            inside_project(dir, "a/../b/./c", "p").unwrap(),
            Path::new("/srv/pkg/b/c")
        );
        assert_eq!(
            inside_project(dir, ".", "p").unwrap(),
            Path::new("/srv/pkg")
        );
        assert_eq!(
            inside_project(dir, "/srv/pkg/app.env", "p").unwrap(),
            Path::new("/srv/pkg/app.env")
        );
    }

    #[test]
    fn refuses_paths_that_leave_the_directory() {
        let dir = Path::new("/srv/pkg");
        for rel in ["../x", "a/../../x", "/etc/passwd", "/srv/pkg2/x"] {
            let e = inside_project(dir, rel, "services.web.env_file[0]").unwrap_err();
            assert!(
                e.to_string().starts_with("services.web.env_file[0]: ")
                    && e.to_string().contains("leads outside"),
                "{rel}: {e}"
            );
        }
    }

    #[test]
    fn refuses_a_symlink_that_points_outside() {
        let base = std::env::temp_dir().join(format!("margo-compose-paths-{}", std::process::id()));
        let pkg = base.join("pkg");
        std::fs::create_dir_all(&pkg).unwrap();
        let link = pkg.join("escape");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/etc", &link).unwrap();
        let result = inside_project(&pkg, "./escape", "p");
        std::fs::remove_dir_all(&base).unwrap();
        assert!(result.is_err(), "{result:?}");
    }
}
