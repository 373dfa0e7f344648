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
