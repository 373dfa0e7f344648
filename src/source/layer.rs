//! The desired-state artifact's single layer, in either form found in the field:
//!
//! - one YAML layer (`application/vnd.margo.desired-state.v1+yaml`), possibly holding several
//!   `---` documents;
//! - one tar+gzip layer of YAML files (`application/vnd.margo.manifests.layer.v1+tar+gzip`,
//!   also published as `application/vnd.org.margo.manifests.layer.v1+gzip` and
//!   `…+tar+gzip`).
//!
//! Decoding is pure (bytes in, documents out) and capped: the compressed layer is capped by the
//! caller's download cap, the unpacked YAML by [`DESIRED_STATE_MAX_UNPACKED_BYTES`] and
//! [`DESIRED_STATE_MAX_FILES`]. Only regular `*.yaml`/`*.yml` files are read; directories are
//! walked, anything else (links, devices) is refused, as are names that are not plain relative
//! paths. Building the same artifact again gives the same bytes (sorted names, zero mtimes), so
//! re-publishing unchanged files does not move the digest.

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use std::io::Read;

pub const MEDIA_TYPE_YAML: &str = "application/vnd.margo.desired-state.v1+yaml";
pub const MEDIA_TYPE_TAR_GZIP: &str = "application/vnd.margo.manifests.layer.v1+tar+gzip";
/// Spellings of the tar+gzip form seen in Margo texts.
pub const MEDIA_TYPES_TAR_GZIP: &[&str] = &[
    MEDIA_TYPE_TAR_GZIP,
    "application/vnd.org.margo.manifests.layer.v1+gzip",
    "application/vnd.org.margo.manifests.layer.v1+tar+gzip",
];
/// Spellings of the single-YAML form.
pub const MEDIA_TYPES_YAML: &[&str] = &[
    MEDIA_TYPE_YAML,
    "application/vnd.margo.desired-state.v1",
    "application/yaml",
    "application/x-yaml",
];
/// artifactType `publish` writes (the proof of concept's).
pub const ARTIFACT_TYPE: &str = "application/vnd.margo.desired-state.v1";
/// Largest desired-state layer downloaded (a device's deployments are a few KiB of YAML).
pub const DESIRED_STATE_MAX_LAYER_BYTES: u64 = 4 * 1024 * 1024;
/// Largest total of YAML unpacked from a tar+gzip layer (decompression-bomb guard).
pub const DESIRED_STATE_MAX_UNPACKED_BYTES: u64 = 16 * 1024 * 1024;
/// Most entries in a tar+gzip layer.
pub const DESIRED_STATE_MAX_FILES: usize = 1000;

/// One YAML file of the desired state (for a YAML layer, the layer itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlFile {
    pub name: String,
    pub text: String,
}

/// The layer forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerForm {
    Yaml,
    TarGzip,
}

impl LayerForm {
    pub fn of(media_type: &str) -> Option<LayerForm> {
        if MEDIA_TYPES_YAML.contains(&media_type) {
            Some(LayerForm::Yaml)
        } else if MEDIA_TYPES_TAR_GZIP.contains(&media_type) {
            Some(LayerForm::TarGzip)
        } else {
            None
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            LayerForm::Yaml => MEDIA_TYPE_YAML,
            LayerForm::TarGzip => MEDIA_TYPE_TAR_GZIP,
        }
    }
}

/// Decodes a layer into its YAML files. Errors are plain sentences for the journal.
pub fn decode(form: LayerForm, bytes: &[u8]) -> Result<Vec<YamlFile>, String> {
    match form {
        LayerForm::Yaml => {
            let text = std::str::from_utf8(bytes)
                .map_err(|e| format!("the YAML layer is not UTF-8 text: {e}"))?;
            Ok(vec![YamlFile {
                name: "desired-state.yaml".into(),
                text: text.to_string(),
            }])
        }
        LayerForm::TarGzip => decode_tar_gz(bytes),
    }
}

fn decode_tar_gz(bytes: &[u8]) -> Result<Vec<YamlFile>, String> {
    let mut archive = tar::Archive::new(GzDecoder::new(bytes));
    let mut files = Vec::new();
    let mut total: u64 = 0;
    let entries = archive
        .entries()
        .map_err(|e| format!("the tar+gzip layer cannot be read: {e}"))?;
    for (i, entry) in entries.enumerate() {
        if i >= DESIRED_STATE_MAX_FILES {
            return Err(format!(
                "the tar+gzip layer has more than {DESIRED_STATE_MAX_FILES} entries"
            ));
        }
        let mut entry = entry.map_err(|e| format!("the tar+gzip layer is corrupt: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("entry {i} of the layer has an unreadable name: {e}"))?
            .to_string_lossy()
            .into_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            return Err(format!(
                "layer entry {path:?} is not a regular file; only YAML files are allowed"
            ));
        }
        if path.starts_with('/') || path.split('/').any(|c| c == "..") {
            return Err(format!("layer entry {path:?} is not a plain relative path"));
        }
        let base = path.rsplit('/').next().unwrap_or("");
        if base.starts_with('.') || !(path.ends_with(".yaml") || path.ends_with(".yml")) {
            // Not a deployment document (README, signatures): skipped, not an error.
            continue;
        }
        let room = DESIRED_STATE_MAX_UNPACKED_BYTES - total;
        let mut buf = Vec::new();
        (&mut entry)
            .take(room + 1)
            .read_to_end(&mut buf)
            .map_err(|e| format!("reading layer entry {path:?}: {e}"))?;
        total += buf.len() as u64;
        if total > DESIRED_STATE_MAX_UNPACKED_BYTES {
            return Err(format!(
                "the tar+gzip layer unpacks to more than {DESIRED_STATE_MAX_UNPACKED_BYTES} bytes of YAML"
            ));
        }
        let text = String::from_utf8(buf)
            .map_err(|_| format!("layer entry {path:?} is not UTF-8 text"))?;
        files.push(YamlFile { name: path, text });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// Builds a layer from YAML files. Deterministic: the same files give the same bytes.
pub fn encode(form: LayerForm, files: &[YamlFile]) -> std::io::Result<Vec<u8>> {
    match form {
        LayerForm::Yaml => {
            let mut out = String::new();
            for (i, f) in files.iter().enumerate() {
                let t = f.text.trim_start_matches("---\n");
                if i > 0 {
                    out.push_str("---\n");
                }
                out.push_str(t);
                if !t.ends_with('\n') {
                    out.push('\n');
                }
            }
            Ok(out.into_bytes())
        }
        LayerForm::TarGzip => {
            let mut sorted: Vec<&YamlFile> = files.iter().collect();
            sorted.sort_by(|a, b| a.name.cmp(&b.name));
            let gz = GzEncoder::new(Vec::new(), Compression::best());
            let mut builder = tar::Builder::new(gz);
            for f in sorted {
                let mut header = tar::Header::new_gnu();
                header.set_size(f.text.len() as u64);
                header.set_mode(0o644);
                header.set_mtime(0);
                header.set_entry_type(tar::EntryType::Regular);
                builder.append_data(&mut header, &f.name, f.text.as_bytes())?;
            }
            builder.into_inner()?.finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> YamlFile {
        YamlFile {
            name: name.into(),
            text: text.into(),
        }
    }

    #[test]
    fn tar_gzip_round_trip_is_deterministic_and_sorted() {
        let files = vec![file("b.yaml", "kind: B\n"), file("a.yml", "kind: A\n")];
        let one = encode(LayerForm::TarGzip, &files).unwrap();
        let two = encode(LayerForm::TarGzip, &files).unwrap();
        assert_eq!(one, two);
        let back = decode(LayerForm::TarGzip, &one).unwrap();
        assert_eq!(
            back,
            vec![file("a.yml", "kind: A\n"), file("b.yaml", "kind: B\n")]
        );
    }

    #[test]
    fn yaml_form_joins_documents() {
        let files = vec![file("a", "x: 1\n"), file("b", "---\ny: 2")];
        let bytes = encode(LayerForm::Yaml, &files).unwrap();
        assert_eq!(String::from_utf8(bytes).unwrap(), "x: 1\n---\ny: 2\n");
    }

    #[test]
    fn accepts_every_media_type_spelling_and_refuses_others() {
        for m in MEDIA_TYPES_TAR_GZIP {
            assert_eq!(LayerForm::of(m), Some(LayerForm::TarGzip));
        }
        assert_eq!(LayerForm::of(MEDIA_TYPE_YAML), Some(LayerForm::Yaml));
        assert_eq!(
            LayerForm::of("application/vnd.oci.image.layer.v1.tar"),
            None
        );
    }

    fn raw_tar(name: &[u8], kind: tar::EntryType, data: &[u8]) -> Vec<u8> {
        let gz = GzEncoder::new(Vec::new(), Compression::fast());
        let mut b = tar::Builder::new(gz);
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_size(data.len() as u64);
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data).unwrap();
        b.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn refuses_escaping_names_links_and_devices() {
        let bad = raw_tar(b"../evil.yaml", tar::EntryType::Regular, b"x: 1");
        assert!(
            decode(LayerForm::TarGzip, &bad)
                .unwrap_err()
                .contains("plain relative")
        );
        let bad = raw_tar(b"/etc/evil.yaml", tar::EntryType::Regular, b"x: 1");
        assert!(decode(LayerForm::TarGzip, &bad).is_err());
        let bad = raw_tar(b"link.yaml", tar::EntryType::Symlink, b"");
        assert!(
            decode(LayerForm::TarGzip, &bad)
                .unwrap_err()
                .contains("not a regular file")
        );
        let bad = raw_tar(b"dev.yaml", tar::EntryType::Char, b"");
        assert!(decode(LayerForm::TarGzip, &bad).is_err());
    }

    #[test]
    fn refuses_garbage_and_decompression_bombs() {
        assert!(decode(LayerForm::TarGzip, b"not gzip at all").is_err());
        let big = vec![b'a'; (DESIRED_STATE_MAX_UNPACKED_BYTES + 10) as usize];
        let bomb = raw_tar(b"big.yaml", tar::EntryType::Regular, &big);
        assert!(bomb.len() < 1024 * 1024);
        assert!(
            decode(LayerForm::TarGzip, &bomb)
                .unwrap_err()
                .contains("more than")
        );
    }

    #[test]
    fn skips_non_yaml_files() {
        let t = raw_tar(b"README.md", tar::EntryType::Regular, b"hello");
        assert_eq!(decode(LayerForm::TarGzip, &t).unwrap(), vec![]);
    }
}
