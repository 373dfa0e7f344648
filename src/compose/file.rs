//! A whole compose file: YAML text → generic tree → `x-*` removed → interpolated → typed.
//!
//! Owns the top level of the format (`name`, `version`, `services`, `networks`, `volumes`,
//! `secrets`, `configs`) and the definitions of networks, volumes, secrets and configs.
//! Services are read by [`super::service`].
//!
//! The order of the steps is the compose specification's: YAML merge keys and anchors are
//! expanded by the YAML reader, extension (`x-*`) keys are dropped at the top level and in
//! each service *before* interpolation (so an unused fragment holding `${X:?}` does not fail
//! the file; its content has already been copied where it was merged), and every remaining
//! string value is interpolated before any type is checked.
//!
//! Refuses: `include` (a package holds one self-contained file), `models`, network drivers
//! other than `bridge`, volume drivers other than `local`, and secrets or configs not read
//! from a `file:` in the package (`external`, `environment`, `content`): a device has no
//! secret store, and the package is what was signed and deployed.

use super::error::{ComposeError, Warning};
use super::interpolate::{Lookup, interpolate_tree};
use super::service::{self, Service};
use super::tree::{self, Node};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// A compose file after interpolation, typed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ComposeFile {
    /// The top-level `name:`, not yet normalised.
    pub name: Option<String>,
    pub services: BTreeMap<String, Service>,
    pub networks: BTreeMap<String, NetworkDef>,
    pub volumes: BTreeMap<String, VolumeDef>,
    /// Top-level `secrets`: key → the `file:` as written (relative to the package).
    pub secrets: BTreeMap<String, String>,
    /// Top-level `configs`: key → the `file:` as written.
    pub configs: BTreeMap<String, String>,
}

/// A top-level network definition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkDef {
    /// `name:`: the Podman name, used verbatim instead of `<project>_<key>`.
    pub name: Option<String>,
    /// Managed outside the project: never created, never removed.
    pub external: bool,
    pub internal: bool,
    pub enable_ipv6: bool,
    pub labels: BTreeMap<String, String>,
    /// `ipam.config[]` entries.
    pub subnets: Vec<Subnet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub subnet: String,
    pub gateway: Option<String>,
}

/// A top-level volume definition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeDef {
    pub name: Option<String>,
    pub external: bool,
    pub labels: BTreeMap<String, String>,
    /// Options of the `local` driver (`type`, `device`, `o`).
    pub driver_opts: BTreeMap<String, String>,
}

/// Parses compose text. `file` names it in errors; `lookup` supplies variables.
pub fn parse(
    text: &str,
    file: &Path,
    lookup: Lookup<'_>,
    warnings: &mut Vec<Warning>,
) -> Result<ComposeFile, ComposeError> {
    let mut tree = tree::parse_yaml(text, file)?;
    drop_extensions(&mut tree);
    interpolate_tree(&mut tree, "", lookup, warnings)?;
    read(&Node::new(&tree, ""), warnings)
}

fn is_extension(key: &str) -> bool {
    key.starts_with("x-")
}

/// Removes `x-*` keys at the top level, in each service, network and volume.
fn drop_extensions(tree: &mut Value) {
    let Value::Object(top) = tree else { return };
    top.retain(|k, _| !is_extension(k));
    for section in ["services", "networks", "volumes"] {
        if let Some(Value::Object(entries)) = top.get_mut(section) {
            for entry in entries.values_mut() {
                if let Value::Object(fields) = entry {
                    fields.retain(|k, _| !is_extension(k));
                }
            }
        }
    }
}

fn read(root: &Node<'_>, warnings: &mut Vec<Warning>) -> Result<ComposeFile, ComposeError> {
    if !root.value.is_object() {
        return Err(ComposeError::Type {
            path: "(top level)".into(),
            expected: "a mapping with services",
            found: tree::type_name(root.value),
        });
    }
    let mut f = ComposeFile::default();
    for (key, v) in root.entries()? {
        match key {
            // Obsolete: the spec says it is informative only.
            "version" => {}
            "name" => f.name = v.opt_string()?,
            "services" => {
                for (name, s) in v.entries()? {
                    check_name(&s, name, "service")?;
                    if !s.value.is_object() {
                        return Err(s.type_error("a mapping of service keys"));
                    }
                    f.services
                        .insert(name.to_string(), service::read(name, &s, warnings)?);
                }
            }
            "networks" => {
                for (name, n) in v.entries()? {
                    check_name(&n, name, "network")?;
                    f.networks.insert(name.to_string(), network(&n)?);
                }
            }
            "volumes" => {
                for (name, n) in v.entries()? {
                    check_name(&n, name, "volume")?;
                    f.volumes.insert(name.to_string(), volume(&n)?);
                }
            }
            "include" => {
                return Err(ComposeError::unsupported(
                    None,
                    key,
                    "the package must hold one self-contained compose file",
                ));
            }
            "secrets" | "configs" => {
                let out = if key == "secrets" {
                    &mut f.secrets
                } else {
                    &mut f.configs
                };
                for (name, n) in v.entries()? {
                    check_name(&n, name, if key == "secrets" { "secret" } else { "config" })?;
                    out.insert(name.to_string(), file_source(&n)?);
                }
            }
            "models" => {
                return Err(ComposeError::unsupported(
                    None,
                    key,
                    "model runners are not supported",
                ));
            }
            _ => {
                return Err(ComposeError::unsupported(
                    None,
                    key,
                    "it is not a compose-spec top-level key (custom keys must start with x-)",
                ));
            }
        }
    }
    if f.services.is_empty() {
        return Err(ComposeError::invalid(
            "services",
            "the compose file defines no services",
        ));
    }
    Ok(f)
}

/// Service, network and volume keys become parts of Podman object names.
fn check_name(node: &Node<'_>, name: &str, what: &str) -> Result<(), ComposeError> {
    let ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(node.invalid(format!(
            "{what} name {name:?} must start with a letter or digit and hold only letters, digits, '_', '.', '-'"
        )))
    }
}

fn labels(v: &Node<'_>) -> Result<BTreeMap<String, String>, ComposeError> {
    Ok(v.key_values()?
        .into_iter()
        .map(|(k, val)| (k, val.unwrap_or_default()))
        .collect())
}

fn network(n: &Node<'_>) -> Result<NetworkDef, ComposeError> {
    let mut d = NetworkDef::default();
    if n.is_null() {
        return Ok(d);
    }
    for (k, e) in n.entries()? {
        match k {
            "name" => d.name = e.opt_string()?,
            "external" => d.external = e.bool()?,
            "internal" => d.internal = e.bool()?,
            "enable_ipv6" => d.enable_ipv6 = e.bool()?,
            "labels" => d.labels = labels(&e)?,
            "driver" => match e.string()?.as_str() {
                "bridge" => {}
                other => {
                    return Err(ComposeError::unsupported(
                        None,
                        &e.path,
                        format!(
                            "network driver {other:?}: margo-agent creates bridge networks only"
                        ),
                    ));
                }
            },
            "ipam" => d.subnets = ipam(&e)?,
            "attachable" => {
                e.bool()?;
            }
            _ => {
                return Err(ComposeError::unsupported(
                    None,
                    &e.path,
                    "supported network keys are name, external, internal, enable_ipv6, labels, driver (bridge), ipam",
                ));
            }
        }
    }
    Ok(d)
}

fn ipam(v: &Node<'_>) -> Result<Vec<Subnet>, ComposeError> {
    let mut subnets = Vec::new();
    for (k, e) in v.entries()? {
        match k {
            "driver" if e.string()? == "default" => {}
            "config" => {
                for item in e.items()? {
                    let mut s = Subnet {
                        subnet: String::new(),
                        gateway: None,
                    };
                    for (ck, ce) in item.entries()? {
                        match ck {
                            "subnet" => s.subnet = ce.string()?,
                            "gateway" => s.gateway = ce.opt_string()?,
                            _ => {
                                return Err(ComposeError::unsupported(
                                    None,
                                    &ce.path,
                                    "only subnet and gateway are supported in ipam.config",
                                ));
                            }
                        }
                    }
                    if s.subnet.is_empty() {
                        return Err(item.invalid("an ipam.config entry needs a subnet"));
                    }
                    subnets.push(s);
                }
            }
            _ => {
                return Err(ComposeError::unsupported(
                    None,
                    &e.path,
                    "only the default ipam driver with config entries is supported",
                ));
            }
        }
    }
    Ok(subnets)
}

/// A top-level secret or config: only `file:` (plus `name`/`labels`, which have no effect on
/// a bind-mounted file).
fn file_source(n: &Node<'_>) -> Result<String, ComposeError> {
    let mut file = None;
    for (k, e) in n.entries()? {
        match k {
            "file" => file = Some(e.string()?),
            "name" => drop(e.opt_string()?),
            "labels" => drop(labels(&e)?),
            "external" | "environment" | "content" | "driver" | "driver_opts"
            | "template_driver" => {
                return Err(ComposeError::unsupported(
                    None,
                    &e.path,
                    "margo-agent reads secrets and configs only from a file: in the package (a device has no secret store and the deployment's variables are not files)",
                ));
            }
            _ => return Err(e.invalid("unknown key; expected file (name, labels)")),
        }
    }
    file.filter(|f| !f.is_empty())
        .ok_or_else(|| n.invalid("needs file: (a path in the package)"))
}

fn volume(n: &Node<'_>) -> Result<VolumeDef, ComposeError> {
    let mut d = VolumeDef::default();
    if n.is_null() {
        return Ok(d);
    }
    for (k, e) in n.entries()? {
        match k {
            "name" => d.name = e.opt_string()?,
            "external" => d.external = e.bool()?,
            "labels" => d.labels = labels(&e)?,
            "driver" => match e.string()?.as_str() {
                "local" => {}
                other => {
                    return Err(ComposeError::unsupported(
                        None,
                        &e.path,
                        format!("volume driver {other:?}: margo-agent uses the local driver only"),
                    ));
                }
            },
            "driver_opts" => d.driver_opts = labels(&e)?,
            _ => {
                return Err(ComposeError::unsupported(
                    None,
                    &e.path,
                    "supported volume keys are name, external, labels, driver (local), driver_opts",
                ));
            }
        }
    }
    Ok(d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> ComposeFile {
        match parse(text, Path::new("compose.yaml"), &|_| None, &mut Vec::new()) {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        }
    }

    fn parse_err(text: &str) -> ComposeError {
        parse(text, Path::new("compose.yaml"), &|_| None, &mut Vec::new()).unwrap_err()
    }

    #[test]
    fn ignores_version_and_top_level_extensions() {
        let f =
            parse_ok("version: '3.8'\nx-anything: {a: '${NOPE:?}'}\nservices: {web: {image: x}}");
        assert_eq!(f.services.len(), 1);
        assert_eq!(f.name, None);
    }

    #[test]
    fn refuses_include_and_unknown_top_level_keys() {
        let e = parse_err("include: [other.yaml]\nservices: {web: {image: x}}");
        assert_eq!(
            e.to_string(),
            "key \"include\" is not supported: the package must hold one self-contained compose file"
        );
        let e = parse_err("servics: {web: {image: x}}");
        assert_eq!(e.code(), "ERR_COMPOSE_UNSUPPORTED");
        assert!(
            e.to_string().contains("not a compose-spec top-level key"),
            "{e}"
        );
    }

    #[test]
    fn refuses_a_file_without_services() {
        assert_eq!(
            parse_err("name: x").to_string(),
            "services: the compose file defines no services"
        );
        let e = parse_err("- just\n- a list");
        assert_eq!(
            e.to_string(),
            "(top level): expected a mapping with services, found a list"
        );
        let e = parse_err("services: {web: }");
        assert_eq!(
            e.to_string(),
            "services.web: expected a mapping of service keys, found null"
        );
    }

    #[test]
    fn refuses_service_names_podman_cannot_use() {
        let e = parse_err("services: {'web app': {image: x}}");
        assert!(
            e.to_string()
                .starts_with("services.web app: service name \"web app\""),
            "{e}"
        );
    }

    #[test]
    fn reads_network_definitions() {
        let f = parse_ok(
            "services: {web: {image: x}}\nnetworks:\n  front:\n  back:\n    internal: true\n    labels: [tier=back]\n    \
             ipam: {config: [{subnet: 10.89.10.0/24, gateway: 10.89.10.1}]}\n  shared: {external: true, name: plant-net}",
        );
        assert_eq!(f.networks["front"], NetworkDef::default());
        let back = &f.networks["back"];
        assert!(back.internal);
        assert_eq!(back.labels["tier"], "back");
        assert_eq!(
            back.subnets,
            vec![Subnet {
                subnet: "10.89.10.0/24".into(),
                gateway: Some("10.89.10.1".into())
            }]
        );
        assert!(f.networks["shared"].external);
        assert_eq!(f.networks["shared"].name.as_deref(), Some("plant-net"));
    }

    #[test]
    fn refuses_non_bridge_network_drivers() {
        let e = parse_err("services: {web: {image: x}}\nnetworks: {lan: {driver: macvlan}}");
        assert_eq!(
            e.to_string(),
            "key \"networks.lan.driver\" is not supported: network driver \"macvlan\": margo-agent creates bridge networks only"
        );
    }

    #[test]
    fn reads_volume_definitions_and_refuses_other_drivers() {
        let f = parse_ok(
            "services: {web: {image: x}}\nvolumes:\n  data:\n  nfs: {driver: local, driver_opts: {type: nfs, o: 'addr=10.0.0.1', device: ':/export'}}\n  \
             old: {external: true}",
        );
        assert_eq!(f.volumes["data"], VolumeDef::default());
        assert_eq!(f.volumes["nfs"].driver_opts["type"], "nfs");
        assert!(f.volumes["old"].external);
        let e = parse_err("services: {web: {image: x}}\nvolumes: {d: {driver: rexray}}");
        assert_eq!(e.code(), "ERR_COMPOSE_UNSUPPORTED");
    }

    #[test]
    fn interpolates_the_project_name() {
        let f = parse(
            "name: ${N:-app}-edge\nservices: {web: {image: x}}",
            Path::new("compose.yaml"),
            &|n| (n == "N").then(|| "gallery".into()),
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(f.name.as_deref(), Some("gallery-edge"));
    }
}
