//! Compose packages: what arrives as a tar+gzip archive (a SUP-01 OCI layer, or the older
//! `packageLocation` tarball) becomes a directory holding a compose file.
//!
//! Owns: [`unpack::unpack_tar_gz`], the safe extraction of an archive that is already on disk
//! and digest-verified (its per-entry rules, pure, in [`paths`]), and
//! [`layout::find_compose_root`], which finds the compose file in what was extracted. Fetching, PGP verification and image archives come later and sit
//! beside these.
//!
//! Refuses: anything that could write outside the destination directory or onto the device
//! (absolute paths, `..`, links that escape, writing through a symlink, device and FIFO
//! nodes), archives that grow past their caps while streaming (decompression bombs), and
//! packages with no compose file or several. Why so strict: the digest says the archive is
//! the one the WFM named, not that the archive is benign, and the agent runs as root.
//!
//! Errors carry a stable code for DeploymentStatus: `ERR_PACKAGE_UNSAFE`,
//! `ERR_PACKAGE_INVALID`, `ERR_PACKAGE_IO`.

pub mod fetch;
pub mod images;
pub mod layout;
pub mod openpgp;
pub mod paths;
pub mod signature;
pub mod unpack;
pub mod verify;

pub use layout::{COMPOSE_FILE_NAMES, ComposeRoot, PackageLayout, find_compose_root};
pub use unpack::{UnpackLimits, Unpacked, unpack_tar_gz};

use std::io;
use std::path::PathBuf;

/// Stable code: the package tried to escape its directory, holds a device node, or is a bomb.
pub const ERR_PACKAGE_UNSAFE: &str = "ERR_PACKAGE_UNSAFE";
/// Stable code: the package is not a gzip tar, or holds no usable compose file.
pub const ERR_PACKAGE_INVALID: &str = "ERR_PACKAGE_INVALID";
/// Stable code: the device's filesystem failed us (full disk, permissions).
pub const ERR_PACKAGE_IO: &str = "ERR_PACKAGE_IO";

/// Why a package was refused. The archive path and the entry name are in every message; the
/// caller adds what happens next (the destination is already removed).
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// An entry could reach outside the destination or onto the device.
    #[error("package {}: entry {entry:?} {reason}", archive.display())]
    Unsafe {
        archive: PathBuf,
        entry: String,
        reason: String,
    },

    /// More entries than the cap allows.
    #[error("package {} has more than {max} entries", archive.display())]
    TooManyEntries { archive: PathBuf, max: u64 },

    /// Uncompressed content over a cap: counted as it streams, not taken from headers.
    #[error("package {}: {what} is over the {max}-byte cap", archive.display())]
    TooLarge {
        archive: PathBuf,
        /// e.g. `entry "images/app.tar"` or `the uncompressed content`.
        what: String,
        max: u64,
    },

    /// Not a gzip-compressed tar, or an entry this agent does not extract.
    #[error("package {} is invalid: {reason}", archive.display())]
    Invalid { archive: PathBuf, reason: String },

    /// The extracted package has no compose file where the layout requires one, or several.
    #[error("package directory {}: {reason}", dir.display())]
    NoComposeFile { dir: PathBuf, reason: String },

    /// The destination already holds something.
    #[error("cannot unpack into {}: it exists and is not an empty directory", dest.display())]
    DestinationInUse { dest: PathBuf },

    /// A filesystem operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl PackageError {
    /// The stable code for status reports.
    pub fn code(&self) -> &'static str {
        match self {
            PackageError::Unsafe { .. }
            | PackageError::TooManyEntries { .. }
            | PackageError::TooLarge { .. } => ERR_PACKAGE_UNSAFE,
            PackageError::Invalid { .. } | PackageError::NoComposeFile { .. } => {
                ERR_PACKAGE_INVALID
            }
            PackageError::DestinationInUse { .. } | PackageError::Io { .. } => ERR_PACKAGE_IO,
        }
    }
}
