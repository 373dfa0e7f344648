//! The OCI Distribution v1.1 client margo-agent pulls desired state and packages with, and
//! `publish` pushes with.
//!
//! - [`reference`](mod@reference): `registry/repository[:tag][@digest]` parsing
//! - [`manifest`]: manifest, index and descriptor types; parsing with Content-Type checks
//! - [`auth`]: `WWW-Authenticate` parsing and the bearer-token cache (pure)
//! - [`client`]: [`OciClient`] — construction, per-host access, manifests
//! - `request` (the request core: authentication, deadlines, capped reads), `blob` (blob and
//!   URL downloads, streamed and verified) and `push` (uploads) add methods to [`OciClient`]
//! - [`error`]: [`OciError`], one variant per way an exchange fails
//!
//! Why our own client: the published Rust OCI clients are async (a second HTTP stack and a
//! runtime in a single-threaded agent, ~140 crates); the subset a device needs — pull by tag,
//! verify, stream to disk, push a small artifact — fits in these files on top of ureq.
//!
//! Out of scope: the referrers API, chunked uploads, cross-repository mounts, the OAuth2
//! `POST` token flow (optional in the token spec, whose clients fall back to the `GET` flow
//! used here), and sha512 digests (refused by [`crate::digest`], never silently accepted).

pub mod auth;
mod blob;
pub mod client;
pub mod error;
pub mod manifest;
mod push;
pub mod reference;
mod request;

#[cfg(test)]
mod client_tests;
#[cfg(test)]
pub(crate) mod test_server;

pub(crate) use blob::{CopyError, Expect, copy_to_file, registry_blob_path};
pub use client::{FetchedManifest, ManifestHead, OciClient, RegistryAccess};
pub use error::{OciError, Target};
pub use manifest::{
    Descriptor, ImageIndex, ImageManifest, MANIFEST_MAX_BYTES, Manifest, ManifestError,
    parse_manifest,
};
pub use push::{BlobSource, join_location};
pub use reference::Reference;
pub(crate) use request::authority_of;
