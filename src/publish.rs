//! `margo-agent publish`: pushes what a device consumes, for demos, tests, and WFM or CI
//! pipelines.
//!
//! - Desired state: `publish --to REF [--form yaml|tar-gzip] [--version N] FILE...` packs
//!   ApplicationDeployment YAML files into the single-layer desired-state artifact (empty
//!   config, artifactType `application/vnd.margo.desired-state.v1`, optional
//!   `org.margo.ApplicationDeployment.version` annotation) and pushes it under REF's tag.
//!   No files publishes an empty desired state (every deployment is removed).
//! - Compose package: `publish --package DIR --to REF` packs DIR (which holds `compose.yaml`)
//!   as one top directory in a tar+gzip layer of a SUP-01 artifact
//!   (`application/vnd.org.margo.component.compose+json`). REF's tag is the revision, with
//!   `+` written as `_`.
//!
//! Registry access comes from the config file when one is given (`--config`: the same
//! `registries` entries and CAs the agent uses), plus `--plain-http`. Archives are built
//! deterministically, so publishing unchanged files again does not move the digest.

use crate::config::Config;
use crate::daemon::exit;
use crate::digest::Digest;
use crate::oci::manifest::{ImageManifest, MEDIA_TYPE_OCI_MANIFEST};
use crate::oci::{BlobSource, Descriptor, OciClient, Reference, RegistryAccess};
use crate::source::VERSION_ANNOTATION;
use crate::source::layer::{self, LayerForm, YamlFile};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// artifactType of a SUP-01 Compose package.
pub const PACKAGE_ARTIFACT_TYPE: &str = "application/vnd.org.margo.component.compose+json";
/// Layer media type of a SUP-01 Compose package.
pub const PACKAGE_LAYER_MEDIA_TYPE: &str = "application/vnd.org.margo.component.compose.tar+gzip";
/// Largest file `publish` reads (ApplicationDeployment YAML, package files).
const PUBLISH_FILE_MAX_BYTES: u64 = 64 * 1024 * 1024;

const USAGE: &str = "\
usage: margo-agent [--config PATH] publish --to REGISTRY/REPO:TAG [options] FILE...
       margo-agent [--config PATH] publish --package DIR --to REGISTRY/REPO:REVISION

options:
  --form yaml|tar-gzip   desired-state layer form (default yaml)
  --version N            add the org.margo.ApplicationDeployment.version annotation
  --plain-http           speak plain HTTP to the target registry
Registry credentials and CAs come from the config's `registries` and `tls` when --config is
given; MARGO_REGISTRY_USER / MARGO_REGISTRY_PASSWORD set credentials for the target too.";

struct Args {
    to: String,
    form: LayerForm,
    version: Option<u64>,
    plain_http: bool,
    package: Option<PathBuf>,
    files: Vec<PathBuf>,
}

fn parse_args(opts: &[String]) -> Result<Args, String> {
    let mut a = Args {
        to: String::new(),
        form: LayerForm::Yaml,
        version: None,
        plain_http: false,
        package: None,
        files: Vec::new(),
    };
    let mut it = opts.iter();
    while let Some(o) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match o.as_str() {
            "--to" => a.to = value("--to")?,
            "--form" => {
                a.form = match value("--form")?.as_str() {
                    "yaml" => LayerForm::Yaml,
                    "tar-gzip" | "tar+gzip" => LayerForm::TarGzip,
                    f => return Err(format!("--form {f:?}: expected yaml or tar-gzip")),
                }
            }
            "--version" => {
                let v = value("--version")?;
                a.version =
                    Some(crate::source::parse_version(&v).map_err(|_| {
                        format!("--version {v:?}: expected a non-negative integer")
                    })?);
            }
            "--plain-http" => a.plain_http = true,
            "--package" => a.package = Some(PathBuf::from(value("--package")?)),
            "--help" | "-h" => return Err(String::new()),
            f if f.starts_with("--") => return Err(format!("unknown option {f}")),
            f => a.files.push(PathBuf::from(f)),
        }
    }
    if a.to.is_empty() {
        return Err("--to is required".into());
    }
    if a.package.is_some() && !a.files.is_empty() {
        return Err("--package takes no FILE arguments".into());
    }
    Ok(a)
}

pub fn main(opts: &[String], config_path: Option<&Path>) -> u8 {
    let args = match parse_args(opts) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return exit::OK;
        }
        Err(e) => {
            eprintln!("{e}\n\n{USAGE}");
            return exit::USAGE;
        }
    };
    match publish(&args, config_path) {
        Ok(msg) => {
            println!("{msg}");
            exit::OK
        }
        Err((code, msg)) => {
            eprintln!("publish failed: {msg}");
            code
        }
    }
}

fn publish(args: &Args, config_path: Option<&Path>) -> Result<String, (u8, String)> {
    let target = Reference::parse(&args.to).map_err(|e| (exit::USAGE, e.to_string()))?;
    let config = match config_path {
        Some(p) => Config::load(p).map_err(|e| (exit::CONFIG, e.to_string()))?,
        None => Config::default(),
    };
    let roots = crate::http::trust_roots(Some(&config.tls.ca_bundle), &config.tls.extra_ca)
        .map_err(|e| (exit::CONFIG, e.to_string()))?;
    let mut client = OciClient::from_config(crate::http::client(&roots), &config)
        .map_err(|e| (exit::CONFIG, e.to_string()))?;
    let env_user = std::env::var("MARGO_REGISTRY_USER").ok();
    if args.plain_http || env_user.is_some() {
        let mut access = RegistryAccess {
            plain_http: args.plain_http || config.plain_http(&target.registry),
            credentials: config.credentials(&target.registry).ok().flatten(),
        };
        if let Some(u) = env_user {
            let p = std::env::var("MARGO_REGISTRY_PASSWORD").unwrap_or_default();
            access.credentials = Some((u, p));
        }
        client.set_access(&target.registry, access);
    }
    let tag = target.tag_or_default().to_string();
    let (artifact_type, layer_media_type, layer_bytes, annotations) = match &args.package {
        Some(dir) => {
            let bytes = pack_package(dir).map_err(|e| (exit::USAGE, e))?;
            (
                PACKAGE_ARTIFACT_TYPE,
                PACKAGE_LAYER_MEDIA_TYPE,
                bytes,
                BTreeMap::new(),
            )
        }
        None => {
            let mut files = Vec::new();
            for f in &args.files {
                let text = read_capped(f).map_err(|e| (exit::USAGE, e))?;
                let name = f.file_name().map_or_else(
                    || "deployment.yaml".into(),
                    |n| n.to_string_lossy().into_owned(),
                );
                files.push(YamlFile { name, text });
            }
            let bytes = layer::encode(args.form, &files)
                .map_err(|e| (exit::USAGE, format!("packing the layer: {e}")))?;
            let mut ann = BTreeMap::new();
            if let Some(v) = args.version {
                ann.insert(VERSION_ANNOTATION.to_string(), v.to_string());
            }
            (layer::ARTIFACT_TYPE, args.form.media_type(), bytes, ann)
        }
    };
    let push_err = |e: crate::oci::OciError| (exit::SOURCE_UNREACHABLE, e.to_string());
    let config_desc = Descriptor::empty();
    let empty = b"{}";
    client
        .push_blob(&target, BlobSource::Bytes(empty), &config_desc.digest, 2)
        .map_err(push_err)?;
    let layer_digest = Digest::of(&layer_bytes);
    client
        .push_blob(
            &target,
            BlobSource::Bytes(&layer_bytes),
            &layer_digest,
            layer_bytes.len() as u64,
        )
        .map_err(push_err)?;
    let layer_desc = Descriptor::new(layer_media_type, layer_digest, layer_bytes.len() as u64);
    let manifest = ImageManifest::artifact(artifact_type, vec![layer_desc], annotations);
    let bytes = manifest.to_bytes();
    let digest = client
        .push_manifest(&target, &tag, &bytes, MEDIA_TYPE_OCI_MANIFEST)
        .map_err(push_err)?;
    Ok(format!("pushed {}:{tag}@{digest}", target.name()))
}

fn read_capped(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > PUBLISH_FILE_MAX_BYTES {
        return Err(format!(
            "{} is larger than {PUBLISH_FILE_MAX_BYTES} bytes",
            path.display()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// tar+gzip of `dir` as one top directory named after it; regular files and directories only,
/// sorted, zero mtimes, so the same tree gives the same bytes.
pub fn pack_package(dir: &Path) -> Result<Vec<u8>, String> {
    use flate2::Compression;
    use flate2::write::GzEncoder;
    if !dir.join("compose.yaml").is_file() {
        return Err(format!("{} holds no compose.yaml", dir.display()));
    }
    let top = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "package".into());
    let mut entries = Vec::new();
    collect(dir, Path::new(&top), &mut entries)?;
    entries.sort();
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::best()));
    for (rel, abs) in entries {
        let meta = std::fs::metadata(&abs).map_err(|e| format!("{}: {e}", abs.display()))?;
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        if meta.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            builder
                .append_data(&mut h, &rel, std::io::empty())
                .map_err(|e| e.to_string())?;
        } else {
            use std::os::unix::fs::PermissionsExt;
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            });
            h.set_size(meta.len());
            let f = std::fs::File::open(&abs).map_err(|e| format!("{}: {e}", abs.display()))?;
            builder
                .append_data(&mut h, &rel, f)
                .map_err(|e| e.to_string())?;
        }
    }
    let gz = builder.into_inner().map_err(|e| e.to_string())?;
    gz.finish().map_err(|e| e.to_string())
}

fn collect(abs: &Path, rel: &Path, out: &mut Vec<(PathBuf, PathBuf)>) -> Result<(), String> {
    out.push((rel.to_path_buf(), abs.to_path_buf()));
    let meta = std::fs::symlink_metadata(abs).map_err(|e| format!("{}: {e}", abs.display()))?;
    if meta.is_dir() {
        let rd = std::fs::read_dir(abs).map_err(|e| format!("{}: {e}", abs.display()))?;
        for entry in rd {
            let entry = entry.map_err(|e| e.to_string())?;
            let ft = entry.file_type().map_err(|e| e.to_string())?;
            if ft.is_symlink() {
                return Err(format!(
                    "{} is a symbolic link; packages hold regular files only",
                    entry.path().display()
                ));
            }
            collect(&entry.path(), &rel.join(entry.file_name()), out)?;
        }
    }
    Ok(())
}
