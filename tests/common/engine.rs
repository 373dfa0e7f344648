//! The compose engine driven through the library against a test bed's Podman, for the
//! integration tests and `benches/converge.rs` (which includes this file by path, so it
//! depends on nothing else in `tests/common`).

use margo_agent::compose::apply::{self, ApplyError, ApplyReport, ImageAccess};
use margo_agent::compose::libpod::CreateContext;
use margo_agent::compose::policy::DevicePolicy;
use margo_agent::compose::{self, LoadOptions, Project};
use margo_agent::podman::{Podman, PullAuth, Timeouts};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// The bed's plain registry: no credentials, no TLS (the test image is in Podman's storage).
pub struct PlainRegistry;

impl ImageAccess for PlainRegistry {
    fn pull_auth(&self, _registry: &str) -> Option<PullAuth> {
        None
    }
    fn tls_verify(&self, _registry: &str) -> bool {
        false
    }
}

/// A client of the Podman API at `socket`, with the timeouts the tests use.
pub fn connect(socket: &str) -> Podman {
    let timeouts = Timeouts {
        call: Duration::from_secs(30),
        pull: Duration::from_secs(120),
        stop: Duration::from_secs(2),
    };
    Podman::connect(Path::new(socket), timeouts)
        .unwrap_or_else(|e| panic!("cannot connect to Podman at {socket}: {e}"))
}

/// `converge` with the device policy's defaults and no journal fields.
pub fn converge(
    podman: &mut Podman,
    project: &Project,
    ctx: &CreateContext,
    wait: Option<Duration>,
) -> Result<ApplyReport, ApplyError> {
    apply::converge(
        podman,
        project,
        ctx,
        &PlainRegistry,
        wait,
        &[],
        &DevicePolicy::default(),
    )
}

/// The ten-service fixture `tests/data/compose/ten` as project `project`, with `IMAGE` and
/// `vars` as its variables.
pub fn load_ten(image: &str, project: &str, vars: &[(&str, &str)]) -> Project {
    let mut all: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.insert("IMAGE".into(), image.into());
    let lookup = |k: &str| all.get(k).cloned();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/compose/ten");
    match compose::load(
        &dir,
        &LoadOptions {
            project_name: Some(project),
            variables: &lookup,
            profiles: &[],
        },
    ) {
        Ok(loaded) => loaded.project,
        Err(e) => panic!("tests/data/compose/ten: {e}"),
    }
}
