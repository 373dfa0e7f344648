//! A thin client of Podman's libpod REST API on its Unix socket.
//!
//! Typed calls for what the compose engine needs — containers, images, networks, volumes,
//! healthchecks, logs — with the API version negotiated once through `/_ping`
//! (`Libpod-API-Version`: v4 or v5 prefix), a deadline on every call, response bodies read with
//! a cap, and errors that carry Podman's own message. It knows nothing of Compose: bodies for
//! create calls come ready-made from `compose::`.
//!
//! Every call that changes Podman's state is counted ([`Podman::writes`]), so tests and the
//! bench can prove that a reconcile of an unchanged state writes nothing.

mod client;
mod transport;

pub use client::*;
