//! margo-agent: the device-side agent of the Margo edge interoperability standard for
//! standalone devices that run Compose workloads.
//!
//! The tree reads in the order data flows:
//!
//! - [`source`]: where desired state comes from (an OCI artifact today) → revision + documents
//! - [`model`]: Margo `ApplicationDeployment` documents, parsed and validated
//! - [`package`]: Compose packages fetched, verified and unpacked safely
//! - [`compose`]: the Compose engine — parse, interpolate, validate, plan (pure), apply
//! - [`podman`]: a thin client of Podman's libpod REST API on its Unix socket
//! - [`reconcile`]: one pass source → model → plan → apply → report
//! - [`daemon`]: the single-threaded loop around it (timers, signals, watchdog)
//! - [`telemetry`]: OTLP/HTTP metrics of the agent and its containers, a timed job of the loop
//!
//! beside them [`config`], [`state`] (the one flat file), [`journal`] (logging, sd_notify),
//! [`oci`] (the registry client), [`http`] (every HTTP client's timeouts and trust roots).
#![forbid(unsafe_code)]

pub mod cli;
pub mod compose;
pub mod config;
pub mod daemon;
pub mod device;
pub mod digest;
pub mod http;
pub mod identity;
pub mod journal;
pub mod mirror;
pub mod model;
pub mod oci;
pub mod package;
pub mod podman;
pub mod publish;
pub mod reconcile;
pub mod service;
pub mod source;
pub mod state;
pub mod telemetry;
pub mod units;
pub mod wfm;
