//! Image archives shipped in a package (`docker save` or OCI-layout tars, the proof of
//! concept's way to run without an image registry), loaded into Podman before the project
//! starts.
//!
//! Archives are the regular files named `*.tar` in the compose directory and in its direct
//! subdirectories (e.g. `images/`), loaded in name order. Each is streamed to Podman from
//! disk. An archive Podman cannot load (truncated, not an image) fails the component with
//! `ERR_IMAGE_LOAD` before any container is created or replaced.

use crate::compose::apply::ApplyError;
use crate::journal;
use crate::podman::Podman;
use crate::state::{Phase, State};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Stable code: an image archive of the package could not be loaded.
pub const ERR_IMAGE_LOAD: &str = "ERR_IMAGE_LOAD";
/// Most image archives one package may hold.
pub const MAX_IMAGE_ARCHIVES: usize = 64;

/// The image archives in `dir` (see the module docs), sorted.
pub fn find_archives(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        let path = entry.path();
        if ft.is_file() && is_archive(&path) {
            out.push(path);
        } else if ft.is_dir() {
            for inner in fs::read_dir(&path)? {
                let inner = inner?;
                if inner.file_type()?.is_file() && is_archive(&inner.path()) {
                    out.push(inner.path());
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

fn is_archive(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "tar")
}

/// Loads every archive of the package directory `dir` into Podman; returns the image names
/// loaded.
pub fn load_archives(
    podman: &mut Podman,
    dir: &Path,
    fields: &[(&str, &str)],
) -> Result<Vec<String>, ApplyError> {
    let fail = |message: String| ApplyError {
        code: ERR_IMAGE_LOAD,
        message,
        podman_unavailable: false,
    };
    let archives = find_archives(dir).map_err(|e| {
        fail(format!(
            "cannot list image archives in {}: {e}",
            dir.display()
        ))
    })?;
    if archives.len() > MAX_IMAGE_ARCHIVES {
        return Err(fail(format!(
            "package directory {} holds {} image archives; at most {MAX_IMAGE_ARCHIVES} are loaded",
            dir.display(),
            archives.len()
        )));
    }
    let mut names = Vec::new();
    for a in &archives {
        let shown = a.strip_prefix(dir).unwrap_or(a).display().to_string();
        match podman.load_image(a) {
            Ok(loaded) => {
                journal::info(
                    &format!(
                        "image archive {shown} loaded: {}",
                        if loaded.is_empty() {
                            "no named image".to_string()
                        } else {
                            loaded.join(", ")
                        }
                    ),
                    fields,
                );
                names.extend(loaded);
            }
            Err(e) if e.is_unavailable() => {
                return Err(ApplyError {
                    code: e.code(),
                    message: e.to_string(),
                    podman_unavailable: true,
                });
            }
            Err(e) => {
                return Err(fail(format!(
                    "image archive {shown} of the package is not a loadable image (truncated, or not a docker save / OCI archive): {e}; no container was changed"
                )));
            }
        }
    }
    Ok(names)
}

/// The fully qualified form of an image reference, as Podman names what it pulled or
/// loaded: `busybox` → `docker.io/library/busybox:latest`, `r.example/a/b` →
/// `r.example/a/b:latest`. Used to compare names from compose files with names from Podman.
pub fn normalise_image(name: &str) -> String {
    let (first, rest) = name.split_once('/').unwrap_or(("", name));
    let qualified = if first.is_empty() {
        format!("docker.io/library/{rest}")
    } else if first.contains('.') || first.contains(':') || first == "localhost" {
        name.to_string()
    } else {
        format!("docker.io/{name}")
    };
    let last = qualified.rsplit('/').next().unwrap_or("");
    if last.contains(':') || last.contains('@') {
        qualified
    } else {
        format!("{qualified}:latest")
    }
}

/// The config section `images`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagesConfig {
    /// After a pass in which every deployment converged, remove the images the agent pulled
    /// or loaded that no deployment uses any more. Default true.
    pub prune: bool,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig { prune: true }
    }
}

/// Records the images a converged component runs (`component` = (deployment id, component
/// name)), and those the agent brought onto the device (`brought`: pulled or loaded), for
/// [`prune_unused`]. Names are compared in their fully qualified form.
pub fn record<'a>(
    state: &mut State,
    component: (&str, &str),
    project: &crate::compose::Project,
    brought: impl Iterator<Item = &'a String>,
) {
    state.images.extend(brought.map(|i| normalise_image(i)));
    let images: BTreeSet<String> = project
        .services
        .iter()
        .map(|s| normalise_image(&s.image))
        .collect();
    if let Some(c) = state
        .deployments
        .get_mut(component.0)
        .and_then(|r| r.components.get_mut(component.1))
    {
        c.images = images.into_iter().collect();
    }
}

/// Removes the images the agent brought onto the device that no deployment's components use
/// any more, and forgets those removed. Does nothing while a deployment is Installing (its
/// images may not be recorded yet).
pub fn prune_unused(podman: &mut Podman, state: &mut State) {
    let candidates = unused(state);
    if candidates.is_empty() {
        return;
    }
    for i in prune(podman, &candidates).removed {
        state.images.remove(&i);
    }
}

/// The images [`prune_unused`] would remove: none while a deployment is Installing.
pub fn unused(state: &State) -> Vec<String> {
    if state
        .deployments
        .values()
        .any(|r| r.phase == Phase::Installing)
    {
        return Vec::new();
    }
    let used: BTreeSet<&String> = state
        .deployments
        .values()
        .flat_map(|r| r.components.values())
        .flat_map(|c| c.images.iter())
        .collect();
    state
        .images
        .iter()
        .filter(|i| !used.contains(i))
        .cloned()
        .collect()
}

/// What an image prune did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Images removed (or already gone): no longer tracked.
    pub removed: Vec<String>,
    /// Images Podman kept (a container still uses them, or the call failed): tracked still.
    pub kept: Vec<String>,
}

/// Removes `candidates` from Podman, one by one. An image a container still uses is refused
/// by Podman and kept; a Podman outage stops the prune (tried again after the next apply).
pub fn prune(podman: &mut Podman, candidates: &[String]) -> Pruned {
    let mut out = Pruned::default();
    for image in candidates {
        match podman.remove_image(image) {
            Ok(()) => {
                journal::notice(
                    &format!("image {image} pruned: no deployment uses it any more"),
                    &[("IMAGE", image.as_str())],
                );
                out.removed.push(image.clone());
            }
            Err(e) if e.is_unavailable() => {
                out.kept.push(image.clone());
                break;
            }
            Err(e) => {
                journal::debug(
                    &format!("image {image} not pruned: {e}; kept"),
                    &[("IMAGE", image.as_str())],
                );
                out.kept.push(image.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{normalise_image, unused};
    use crate::state::{ComponentRecord, DeploymentRecord, Phase, State};

    #[test]
    fn only_images_the_agent_brought_and_nobody_uses_are_pruned_and_never_while_installing() {
        let mut s = State::default();
        s.images.insert("docker.io/library/old:1".into());
        s.images.insert("docker.io/library/web:2".into());
        let mut components = std::collections::BTreeMap::new();
        components.insert(
            "web".to_string(),
            ComponentRecord {
                phase: Phase::Installed,
                project: "p".into(),
                error: None,
                problems: Vec::new(),
                images: vec!["docker.io/library/web:2".into(), "r.io/not-ours:1".into()],
            },
        );
        s.deployments.insert(
            "d".into(),
            DeploymentRecord {
                application_id: "a".into(),
                name: "n".into(),
                digest: crate::digest::Digest::of(b"d"),
                phase: Phase::Installed,
                error: None,
                components,
                since: 0,
            },
        );
        assert_eq!(unused(&s), ["docker.io/library/old:1"]);
        if let Some(d) = s.deployments.get_mut("d") {
            d.phase = Phase::Installing;
        }
        assert!(unused(&s).is_empty());
    }

    #[test]
    fn image_names_normalise_like_podman() {
        assert_eq!(
            normalise_image("busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(normalise_image("me/app:1"), "docker.io/me/app:1");
        assert_eq!(
            normalise_image("127.0.0.1:5000/a/b"),
            "127.0.0.1:5000/a/b:latest"
        );
        assert_eq!(normalise_image("localhost/x:2"), "localhost/x:2");
        assert_eq!(normalise_image("r.io/a@sha256:00"), "r.io/a@sha256:00");
    }
}
