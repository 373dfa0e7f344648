//! A service's storage: the `volumes` list (short and long syntax) and `tmpfs`, read into
//! [`Mount`]s.
//!
//! Owns the distinction compose makes between host paths (binds), named volumes and tmpfs,
//! and the options margo-agent passes on (read-only, SELinux relabel, bind propagation,
//! `nocopy`, tmpfs size and mode). Bind sources stay as written here; [`super::project`]
//! resolves them against the project directory and refuses ones that escape it.
//!
//! Refuses: volume types other than `bind`, `volume` and `tmpfs` (`npipe`, `cluster`,
//! `image`), volume options other than `nocopy` (`subpath`), tmpfs options other than `size`
//! and `mode`, relative container paths.

use super::error::ComposeError;
use super::syntax::{self, PROPAGATIONS, SELINUX_LABELS};
use super::tree::Node;
use serde::Serialize;

/// A mount. In a [`super::service::Service`] bind sources are as written and volume names are top-level
/// volume keys; in a [`super::project::ServiceSpec`] bind sources are absolute and volume
/// names are Podman volume names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Mount {
    Bind {
        source: String,
        target: String,
        read_only: bool,
        /// Create the host directory when missing (compose's default for binds).
        create_host_path: bool,
        propagation: Option<String>,
        selinux: Option<String>,
    },
    Volume {
        /// `None` for an anonymous volume.
        source: Option<String>,
        target: String,
        read_only: bool,
        nocopy: bool,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
        mode: Option<u32>,
    },
}

pub(super) fn volumes(v: &Node<'_>) -> Result<Vec<Mount>, ComposeError> {
    let mut out = Vec::new();
    for item in v.items()? {
        let mount = match item.value {
            serde_json::Value::Object(_) => long_volume(&item)?,
            serde_json::Value::String(s) => {
                let sv = syntax::short_volume(s).map_err(|e| item.invalid(e))?;
                match (sv.is_bind, sv.source) {
                    (true, Some(source)) => Mount::Bind {
                        source,
                        target: sv.target,
                        read_only: sv.read_only,
                        create_host_path: true,
                        propagation: sv.propagation,
                        selinux: sv.selinux,
                    },
                    (_, source) => Mount::Volume {
                        source,
                        target: sv.target,
                        read_only: sv.read_only,
                        nocopy: sv.nocopy,
                    },
                }
            }
            _ => return Err(item.type_error("a volume string such as \"data:/data\" or a mapping")),
        };
        out.push(mount);
    }
    Ok(out)
}

fn long_volume(item: &Node<'_>) -> Result<Mount, ComposeError> {
    let (mut kind, mut source, mut target, mut read_only) = (None, None, None, false);
    let (mut create_host_path, mut propagation, mut selinux, mut nocopy) =
        (true, None, None, false);
    let (mut size, mut mode) = (None, None);
    for (k, e) in item.entries()? {
        match k {
            "type" => kind = Some(e.string()?),
            "source" => source = e.opt_string()?,
            "target" => target = Some(e.string()?),
            "read_only" => read_only = e.bool()?,
            "consistency" => drop(e.string()?),
            "bind" => {
                for (bk, be) in e.entries()? {
                    match bk {
                        "create_host_path" => create_host_path = be.bool()?,
                        // Both end up as mount options: only the known values may pass.
                        "propagation" => propagation = Some(one_of(&be, PROPAGATIONS)?),
                        "selinux" => selinux = Some(one_of(&be, SELINUX_LABELS)?),
                        _ => return Err(be.invalid(
                            "unknown bind option; expected create_host_path, propagation, selinux",
                        )),
                    }
                }
            }
            "volume" => {
                for (vk, ve) in e.entries()? {
                    match vk {
                        "nocopy" => nocopy = ve.bool()?,
                        _ => {
                            return Err(
                                ve.invalid("margo-agent supports only the nocopy volume option")
                            );
                        }
                    }
                }
            }
            "tmpfs" => {
                for (tk, te) in e.entries()? {
                    match tk {
                        "size" => size = Some(te.bytes()?),
                        "mode" => mode = Some(octal_mode(&te)?),
                        _ => return Err(te.invalid("unknown tmpfs option; expected size or mode")),
                    }
                }
            }
            _ => return Err(e.invalid(
                "unknown volume key; expected type, source, target, read_only, bind, volume, tmpfs",
            )),
        }
    }
    let target = target.ok_or_else(|| item.invalid("a long-form volume needs a target"))?;
    if !target.starts_with('/') {
        return Err(item.invalid(format!("the container path {target:?} must be absolute")));
    }
    match kind.as_deref() {
        Some("bind") => Ok(Mount::Bind {
            source: source.ok_or_else(|| item.invalid("a bind mount needs a source"))?,
            target,
            read_only,
            create_host_path,
            propagation,
            selinux,
        }),
        Some("volume") => Ok(Mount::Volume {
            source,
            target,
            read_only,
            nocopy,
        }),
        Some("tmpfs") => Ok(Mount::Tmpfs { target, size, mode }),
        Some(other) => Err(ComposeError::invalid(
            &format!("{}.type", item.path),
            format!("volume type {other:?} is not supported; use bind, volume or tmpfs"),
        )),
        None => Err(item.invalid("a long-form volume needs a type (bind, volume or tmpfs)")),
    }
}

fn octal_mode(v: &Node<'_>) -> Result<u32, ComposeError> {
    // YAML `mode: 1777` arrives as a number whose digits are meant as octal.
    let text = v.string()?;
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .map_err(|_| v.invalid(format!("{text:?} is not an octal file mode")))
}

/// `tmpfs: /run` or a list of `/path[:options]`; only `size=` and `mode=` options.
pub(super) fn tmpfs(v: &Node<'_>) -> Result<Vec<Mount>, ComposeError> {
    let mut out = Vec::new();
    for spec in v.string_or_list()? {
        let (target, options) = spec.split_once(':').unwrap_or((&spec, ""));
        let (mut size, mut mode) = (None, None);
        for opt in options.split(',').filter(|o| !o.is_empty()) {
            match opt.split_once('=') {
                Some(("size", s)) => {
                    size = Some(crate::units::parse_bytes(s).map_err(|e| v.invalid(e))?)
                }
                Some(("mode", m)) => {
                    mode = Some(
                        u32::from_str_radix(m, 8)
                            .map_err(|_| v.invalid(format!("{m:?} is not an octal mode")))?,
                    );
                }
                _ => {
                    return Err(v.invalid(format!(
                        "tmpfs option {opt:?} is not supported; use size= or mode="
                    )));
                }
            }
        }
        if !target.starts_with('/') {
            return Err(v.invalid(format!("tmpfs path {target:?} must be absolute")));
        }
        out.push(Mount::Tmpfs {
            target: target.to_string(),
            size,
            mode,
        });
    }
    Ok(out)
}

/// A string that must be one of `allowed`.
fn one_of(node: &Node<'_>, allowed: &[&str]) -> Result<String, ComposeError> {
    let v = node.string()?;
    if allowed.contains(&v.as_str()) {
        Ok(v)
    } else {
        Err(node.invalid(format!("{v:?} is not one of {}", allowed.join(", "))))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;

    #[test]
    fn long_form_bind_options_accept_only_known_values() {
        let bad =
            "volumes: [{type: bind, source: /srv/x, target: /x, bind: {selinux: 'rw,suid,dev'}}]";
        let good = "volumes: [{type: bind, source: /srv/x, target: /x, bind: {selinux: z, propagation: rslave}}]";
        let err = mounts(bad).unwrap_err().to_string();
        assert!(err.contains("is not one of"), "{err}");
        assert!(mounts(good).is_ok());
        assert!(
            mounts(
                "volumes: [{type: bind, source: /a, target: /b, bind: {propagation: 'rw,dev'}}]"
            )
            .is_err()
        );
    }
    use crate::compose::file;
    use std::path::Path;

    fn mounts(body: &str) -> Result<Vec<Mount>, ComposeError> {
        let text = format!(
            "services:\n  web:\n    image: x\n{}volumes: {{data: }}\n",
            body.lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        );
        let f = file::parse(&text, Path::new("compose.yaml"), &|_| None, &mut Vec::new())?;
        Ok(f.services["web"].mounts.clone())
    }

    #[test]
    fn reads_short_bind_volume_and_anonymous_forms() {
        let m = mounts("volumes: ['./conf:/etc/app:ro', 'data:/data', '/cache']").unwrap();
        assert!(
            matches!(&m[0], Mount::Bind { source, read_only: true, create_host_path: true, .. } if source == "./conf")
        );
        assert!(matches!(&m[1], Mount::Volume { source: Some(s), .. } if s == "data"));
        assert!(matches!(&m[2], Mount::Volume { source: None, target, .. } if target == "/cache"));
    }

    #[test]
    fn reads_long_form_bind_volume_and_tmpfs() {
        let m = mounts(
            "volumes:\n  - {type: bind, source: /srv/x, target: /x, read_only: true, bind: {create_host_path: false, propagation: rslave}}\n  \
             - {type: volume, source: data, target: /data, volume: {nocopy: true}}\n  \
             - {type: tmpfs, target: /run, tmpfs: {size: 16m, mode: 1777}}",
        )
        .unwrap();
        assert_eq!(
            m[0],
            Mount::Bind {
                source: "/srv/x".into(),
                target: "/x".into(),
                read_only: true,
                create_host_path: false,
                propagation: Some("rslave".into()),
                selinux: None,
            }
        );
        assert!(matches!(&m[1], Mount::Volume { nocopy: true, .. }));
        assert_eq!(
            m[2],
            Mount::Tmpfs {
                target: "/run".into(),
                size: Some(16 << 20),
                mode: Some(0o1777)
            }
        );
    }

    #[test]
    fn reads_tmpfs_key_string_or_list_with_options() {
        let m = mounts("tmpfs: /run").unwrap();
        assert_eq!(
            m,
            vec![Mount::Tmpfs {
                target: "/run".into(),
                size: None,
                mode: None
            }]
        );
        let m = mounts("tmpfs: ['/tmp:size=64m,mode=755']").unwrap();
        assert_eq!(
            m,
            vec![Mount::Tmpfs {
                target: "/tmp".into(),
                size: Some(64 << 20),
                mode: Some(0o755)
            }]
        );
        assert!(mounts("tmpfs: ['/tmp:noexec']").is_err());
    }

    #[test]
    fn rejects_unsupported_volume_types_and_relative_targets() {
        let e = mounts("volumes: [{type: npipe, source: x, target: /x}]").unwrap_err();
        assert_eq!(
            e.to_string(),
            "services.web.volumes[0].type: volume type \"npipe\" is not supported; use bind, volume or tmpfs"
        );
        let e = mounts("volumes: [{type: volume, source: data, target: data}]").unwrap_err();
        assert!(e.to_string().contains("must be absolute"), "{e}");
        let e = mounts("volumes: [42]").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("services.web.volumes[0]: expected a volume string"),
            "{e}"
        );
    }
}
