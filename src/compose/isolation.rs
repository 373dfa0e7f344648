//! What a service's container may reach of the host kernel: `devices`, `security_opt`, `pid`,
//! `ipc`, `sysctls`, `ulimits`, `group_add`, `annotations`.
//!
//! Owns the canonical forms these keys take in [`super::project::ServiceSpec`], because the
//! device policy decides on exactly these values and the config hash is computed over them:
//!
//! | key | canonical form |
//! |---|---|
//! | `devices` | `host:container:permissions` (`/dev/ttyUSB0:/dev/ttyUSB0:rwm`) |
//! | `security_opt` | `no-new-privileges:true` / `:false`, `label=disable`, `label=<type\|level\|user\|role>:<v>`, `label=nested`, `seccomp=unconfined`, `seccomp=<path>`, `apparmor=<profile>`, `systempaths=unconfined` |
//! | `pid` | `host` |
//! | `ipc` | `host`, `private`, `shareable`, `none` |
//!
//! Refuses, naming the value: CDI device names, `security_opt` options libpod has no field
//! for (`mask`, `unmask`, `proc-opts`, `credentialspec`, …), `pid`/`ipc` modes that join
//! another container (`service:x`, `container:x`: the plan does not yet recreate a container
//! when the one whose namespace it joins is recreated), unknown rlimit names.
//!
//! A `seccomp=<path>` stays as written here; [`super::project`] confines it to the package.

use super::error::ComposeError;
use super::tree::Node;
use serde::Serialize;
use std::collections::BTreeMap;

/// Resource limits `ulimits` may set (docker's names, without `RLIMIT_`).
const RLIMITS: &[&str] = &[
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// SELinux label options `security_opt: label=…` may carry (podman's `--security-opt label`).
const LABEL_KINDS: &[&str] = &["type", "level", "user", "role", "filetype"];

/// One `ulimits` entry; `u64::MAX` is unlimited (`-1` in the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ulimit {
    pub soft: u64,
    pub hard: u64,
}

/// `devices`: short `host[:container[:permissions]]` strings or long `{source, target,
/// permissions}` mappings, each normalised to `host:container:permissions`.
pub(super) fn devices(v: &Node<'_>) -> Result<Vec<String>, ComposeError> {
    let mut out = Vec::new();
    for item in v.items()? {
        let (host, container, perms) = if item.value.is_object() {
            let (mut host, mut container, mut perms) = (None, None, None);
            for (k, e) in item.entries()? {
                match k {
                    "source" => host = Some(e.string()?),
                    "target" => container = Some(e.string()?),
                    "permissions" => perms = Some(e.string()?),
                    _ => {
                        return Err(
                            e.invalid("unknown device key; expected source, target, permissions")
                        );
                    }
                }
            }
            let host = host.ok_or_else(|| item.invalid("a long-form device needs a source"))?;
            (host, container, perms)
        } else {
            let text = item.string()?;
            let mut parts = text.splitn(3, ':').map(str::to_string);
            let host = parts.next().unwrap_or_default();
            (host, parts.next(), parts.next())
        };
        if !host.starts_with('/') {
            let why = if host.contains('=') {
                "CDI device names are not supported; name the device node (/dev/…)"
            } else {
                "the host device path must be absolute (/dev/…)"
            };
            return Err(item.invalid(format!("{host:?}: {why}")));
        }
        let container = container
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| host.clone());
        if !container.starts_with('/') {
            return Err(item.invalid(format!("container path {container:?} must be absolute")));
        }
        let perms = perms
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "rwm".into());
        let mut seen = String::new();
        for c in perms.chars() {
            if !"rwm".contains(c) || seen.contains(c) {
                return Err(item.invalid(format!(
                    "device permissions {perms:?} must be made of r, w and m, each at most once"
                )));
            }
            seen.push(c);
        }
        out.push(format!("{host}:{container}:{perms}"));
    }
    Ok(out)
}

/// `security_opt`: the options libpod has a field for, in their canonical form.
pub(super) fn security_opt(v: &Node<'_>) -> Result<Vec<String>, ComposeError> {
    let mut out = Vec::new();
    for item in v.items()? {
        let text = item.string()?;
        // Docker accepts both `key=value` and the older `key:value`.
        let (key, value) = match (text.split_once('='), text.split_once(':')) {
            (Some((k, v)), Some((k2, _))) if k.len() < k2.len() => (k, Some(v)),
            (_, Some((k, v))) => (k, Some(v)),
            (Some((k, v)), None) => (k, Some(v)),
            (None, None) => (text.as_str(), None),
        };
        let bad = |why: &str| item.invalid(format!("{text:?}: {why}"));
        let canonical = match (key, value) {
            ("no-new-privileges", None) => "no-new-privileges:true".to_string(),
            ("no-new-privileges", Some(b)) => match b {
                "true" => "no-new-privileges:true".to_string(),
                "false" => "no-new-privileges:false".to_string(),
                _ => return Err(bad("no-new-privileges takes true or false")),
            },
            ("label", Some("disable")) => "label=disable".to_string(),
            ("label", Some("nested")) => "label=nested".to_string(),
            ("label", Some(l)) => match l.split_once(':') {
                Some((kind, val)) if LABEL_KINDS.contains(&kind) && !val.is_empty() => {
                    format!("label={kind}:{val}")
                }
                _ => {
                    return Err(bad(
                        "label takes disable, nested, or type:, level:, user:, role:, filetype: with a value",
                    ));
                }
            },
            ("seccomp", Some("unconfined")) => "seccomp=unconfined".to_string(),
            ("seccomp", Some(path)) if !path.is_empty() => format!("seccomp={path}"),
            ("apparmor", Some(profile)) if !profile.is_empty() => format!("apparmor={profile}"),
            ("systempaths", Some("unconfined")) => "systempaths=unconfined".to_string(),
            ("seccomp" | "apparmor" | "systempaths" | "label", _) => {
                return Err(bad("missing or unsupported value"));
            }
            _ => {
                return Err(ComposeError::unsupported(
                    None,
                    &item.path,
                    format!(
                        "security option {key:?}: margo-agent supports no-new-privileges, label, seccomp, apparmor and systempaths=unconfined"
                    ),
                ));
            }
        };
        out.push(canonical);
    }
    Ok(out)
}

/// `pid`: only `host` (sharing another container's PID namespace is not supported).
pub(super) fn pid(v: &Node<'_>) -> Result<Option<String>, ComposeError> {
    match v.opt_string()?.as_deref() {
        None | Some("") => Ok(None),
        Some("host") => Ok(Some("host".into())),
        Some(other) => Err(namespace_refusal(v, "pid", other, "host")),
    }
}

/// `ipc`: `host`, `private`, `shareable` or `none`.
pub(super) fn ipc(v: &Node<'_>) -> Result<Option<String>, ComposeError> {
    match v.opt_string()?.as_deref() {
        None | Some("") => Ok(None),
        Some(mode @ ("host" | "private" | "shareable" | "none")) => Ok(Some(mode.to_string())),
        Some(other) => Err(namespace_refusal(
            v,
            "ipc",
            other,
            "host, private, shareable, none",
        )),
    }
}

fn namespace_refusal(v: &Node<'_>, key: &str, value: &str, allowed: &str) -> ComposeError {
    if value.starts_with("service:") || value.starts_with("container:") {
        ComposeError::unsupported(
            None,
            &v.path,
            format!(
                "{key} {value:?}: joining another container's {key} namespace is not supported (margo-agent would not recreate this container when that one is recreated)"
            ),
        )
    } else {
        v.invalid(format!("{value:?} is not one of {allowed}"))
    }
}

/// `sysctls`: a mapping or a list of `name=value`.
pub(super) fn sysctls(v: &Node<'_>) -> Result<BTreeMap<String, String>, ComposeError> {
    let mut out = BTreeMap::new();
    for (k, val) in v.key_values()? {
        if k.contains(char::is_whitespace) || k.starts_with('.') || k.ends_with('.') {
            return Err(v.invalid(format!("{k:?} is not a sysctl name")));
        }
        let Some(val) = val else {
            return Err(v.invalid(format!("sysctl {k:?} has no value")));
        };
        out.insert(k, val);
    }
    Ok(out)
}

/// `ulimits`: `name: N` (soft = hard) or `name: {soft: N, hard: M}`; `-1` is unlimited.
pub(super) fn ulimits(v: &Node<'_>) -> Result<BTreeMap<String, Ulimit>, ComposeError> {
    let mut out = BTreeMap::new();
    for (name, e) in v.entries()? {
        if !RLIMITS.contains(&name) {
            return Err(e.invalid(format!(
                "{name:?} is not a resource limit ({})",
                RLIMITS.join(", ")
            )));
        }
        let limit = if e.value.is_object() {
            let (mut soft, mut hard) = (None, None);
            for (k, x) in e.entries()? {
                match k {
                    "soft" => soft = Some(rlimit_value(&x)?),
                    "hard" => hard = Some(rlimit_value(&x)?),
                    _ => return Err(x.invalid("unknown key; expected soft and hard")),
                }
            }
            match (soft, hard) {
                (Some(soft), Some(hard)) => Ulimit { soft, hard },
                _ => return Err(e.invalid("a ulimit mapping needs both soft and hard")),
            }
        } else {
            let n = rlimit_value(&e)?;
            Ulimit { soft: n, hard: n }
        };
        if limit.soft > limit.hard {
            return Err(e.invalid(format!(
                "the soft limit {} is above the hard limit {}",
                limit.soft, limit.hard
            )));
        }
        out.insert(name.to_string(), limit);
    }
    Ok(out)
}

fn rlimit_value(v: &Node<'_>) -> Result<u64, ComposeError> {
    match v.i64() {
        Ok(-1) => Ok(u64::MAX),
        Ok(n) => u64::try_from(n).map_err(|_| {
            v.invalid(format!(
                "{n} is not a limit (a non-negative integer, or -1 for unlimited)"
            ))
        }),
        Err(_) => v.u64(),
    }
}

/// `group_add`: group names or numeric IDs.
pub(super) fn group_add(v: &Node<'_>) -> Result<Vec<String>, ComposeError> {
    let groups = v.string_list()?;
    if let Some(g) = groups
        .iter()
        .find(|g| g.is_empty() || g.contains(char::is_whitespace))
    {
        return Err(v.invalid(format!("{g:?} is not a group name or ID")));
    }
    Ok(groups)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use crate::compose::error::ComposeError;
    use crate::compose::file;
    use crate::compose::service::Service;
    use std::path::Path;

    fn web(body: &str) -> Result<Service, ComposeError> {
        let text = format!(
            "services:\n  web:\n    image: x\n{}",
            body.lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        );
        let f = file::parse(&text, Path::new("compose.yaml"), &|_| None, &mut Vec::new())?;
        Ok(f.services["web"].clone())
    }

    fn err(body: &str) -> String {
        match web(body) {
            Ok(s) => panic!("accepted: {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn normalises_short_and_long_devices() {
        let s = web(
            "devices:\n  - /dev/ttyUSB0\n  - /dev/null:/dev/mynull\n  - /dev/zero:/dev/z:r\n  - {source: /dev/i2c-1, target: /dev/i2c, permissions: rw}\n  - {source: /dev/fuse}",
        )
        .unwrap();
        assert_eq!(
            s.devices,
            [
                "/dev/ttyUSB0:/dev/ttyUSB0:rwm",
                "/dev/null:/dev/mynull:rwm",
                "/dev/zero:/dev/z:r",
                "/dev/i2c-1:/dev/i2c:rw",
                "/dev/fuse:/dev/fuse:rwm",
            ]
        );
    }

    #[test]
    fn refuses_bad_devices_with_their_path() {
        assert_eq!(
            err("devices: [ttyUSB0]"),
            "services.web.devices[0]: \"ttyUSB0\": the host device path must be absolute (/dev/…)"
        );
        assert!(
            err("devices: ['nvidia.com/gpu=all']").contains("CDI device names are not supported")
        );
        assert_eq!(
            err("devices: ['/dev/null:/dev/n:rwx']"),
            "services.web.devices[0]: device permissions \"rwx\" must be made of r, w and m, each at most once"
        );
        assert!(err("devices: ['/dev/null:dev/n']").contains("must be absolute"));
        assert!(err("devices: [{target: /dev/x}]").contains("needs a source"));
        assert_eq!(
            err("devices: /dev/null"),
            "services.web.devices: expected a list, found a string"
        );
    }

    #[test]
    fn normalises_security_options() {
        let s = web(
            "security_opt: [no-new-privileges, 'no-new-privileges:false', 'label=disable', 'label:type:spc_t', \
             'seccomp=unconfined', 'seccomp=./seccomp.json', 'apparmor=unconfined', 'systempaths=unconfined']",
        )
        .unwrap();
        assert_eq!(
            s.security_opt,
            [
                "no-new-privileges:true",
                "no-new-privileges:false",
                "label=disable",
                "label=type:spc_t",
                "seccomp=unconfined",
                "seccomp=./seccomp.json",
                "apparmor=unconfined",
                "systempaths=unconfined",
            ]
        );
        assert_eq!(
            web("security_opt: ['no-new-privileges=true']")
                .unwrap()
                .security_opt,
            ["no-new-privileges:true"]
        );
    }

    #[test]
    fn refuses_security_options_without_a_libpod_field_by_name() {
        assert_eq!(
            err("security_opt: ['mask=/proc/x']"),
            "key \"services.web.security_opt[0]\" is not supported: security option \"mask\": \
             margo-agent supports no-new-privileges, label, seccomp, apparmor and systempaths=unconfined"
        );
        assert!(err("security_opt: ['label=bogus']").starts_with("services.web.security_opt[0]: "));
        assert!(err("security_opt: ['no-new-privileges:maybe']").contains("true or false"));
        assert!(err("security_opt: ['systempaths=confined']").contains("unsupported value"));
    }

    #[test]
    fn reads_pid_and_ipc_modes_and_refuses_joining_other_containers() {
        let s = web("pid: host\nipc: shareable").unwrap();
        assert_eq!(s.pid.as_deref(), Some("host"));
        assert_eq!(s.ipc.as_deref(), Some("shareable"));
        assert!(
            err("pid: private").starts_with("services.web.pid: \"private\" is not one of host")
        );
        let e = web("ipc: 'service:db'").unwrap_err();
        assert_eq!(e.code(), "ERR_COMPOSE_UNSUPPORTED");
        assert!(e.to_string().contains("services.web.ipc"), "{e}");
        assert!(err("ipc: shared").contains("host, private, shareable, none"));
    }

    #[test]
    fn reads_sysctls_as_map_or_list() {
        let s = web("sysctls: {net.core.somaxconn: 1024, net.ipv4.tcp_syncookies: 0}").unwrap();
        assert_eq!(s.sysctls["net.core.somaxconn"], "1024");
        assert_eq!(s.sysctls["net.ipv4.tcp_syncookies"], "0");
        let s = web("sysctls: [net.core.somaxconn=512]").unwrap();
        assert_eq!(s.sysctls["net.core.somaxconn"], "512");
        assert_eq!(
            err("sysctls: [net.core.somaxconn]"),
            "services.web.sysctls: sysctl \"net.core.somaxconn\" has no value"
        );
        assert!(err("sysctls: 5").contains("expected a mapping or a list"));
    }

    #[test]
    fn reads_ulimits_single_and_soft_hard() {
        let s = web("ulimits:\n  nproc: 65535\n  nofile: {soft: 20000, hard: 40000}\n  core: -1")
            .unwrap();
        assert_eq!(s.ulimits["nproc"].soft, 65535);
        assert_eq!(s.ulimits["nproc"].hard, 65535);
        assert_eq!(
            (s.ulimits["nofile"].soft, s.ulimits["nofile"].hard),
            (20000, 40000)
        );
        assert_eq!(s.ulimits["core"].hard, u64::MAX);
        assert_eq!(
            err("ulimits: {nofile: {soft: 2, hard: 1}}"),
            "services.web.ulimits.nofile: the soft limit 2 is above the hard limit 1"
        );
        assert!(err("ulimits: {nofile: {soft: 2}}").contains("needs both soft and hard"));
        assert!(err("ulimits: {files: 2}").starts_with("services.web.ulimits.files: "));
        assert_eq!(
            err("ulimits: {nofile: -5}"),
            "services.web.ulimits.nofile: -5 is not a limit (a non-negative integer, or -1 for unlimited)"
        );
        assert_eq!(
            err("ulimits: {nofile: many}"),
            "services.web.ulimits.nofile: expected a non-negative integer, found a string"
        );
    }

    #[test]
    fn reads_group_add() {
        assert_eq!(
            web("group_add: [audio, 1234]").unwrap().group_add,
            ["audio", "1234"]
        );
        assert!(err("group_add: ['']").starts_with("services.web.group_add: "));
    }
}
