#![allow(clippy::unwrap_used)]
//! Convergence of the compose engine against the test bed's real Podman, through the library
//! (`compose::load` → `compose::apply::converge`): the calls Podman sees are counted by the
//! client (`Podman::writes`), what changed is read back from Podman.
//!
//! Fixture: `tests/data/compose/ten` — ten services with a healthchecked database, a one-shot
//! migration, `service_healthy` / `service_completed_successfully` / `restart: true`.
mod common;

use common::Bed;
use common::engine;
use margo_agent::compose::Project;
use margo_agent::compose::apply;
use margo_agent::compose::libpod::CreateContext;
use margo_agent::podman::Podman;
use std::collections::BTreeMap;
use std::time::Duration;

fn podman() -> Podman {
    engine::connect(Bed::get().var("MARGO_TB_PODMAN_SOCK"))
}

fn load(project: &str, vars: &[(&str, &str)]) -> Project {
    engine::load_ten(Bed::get().image(), project, vars)
}

fn converge(podman: &mut Podman, project: &Project) {
    engine::converge(
        podman,
        project,
        &CreateContext::default(),
        Some(Duration::from_secs(60)),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", e.code));
}

/// Container name → (ID, StartedAt) of `project`.
fn snapshot(project: &str) -> BTreeMap<String, (String, String)> {
    let bed = Bed::get();
    bed.containers("com.docker.compose.project", project)
        .into_iter()
        .map(|c| {
            let name = c["Names"][0].as_str().unwrap().to_string();
            let started = bed.inspect(&name)["State"]["StartedAt"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (name, (c["Id"].as_str().unwrap().to_string(), started))
        })
        .collect()
}

/// Which containers were recreated (new ID) and which restarted (same ID, new start).
fn touched(
    before: &BTreeMap<String, (String, String)>,
    after: &BTreeMap<String, (String, String)>,
) -> (Vec<String>, Vec<String>) {
    let mut recreated = Vec::new();
    let mut restarted = Vec::new();
    for (name, (id, started)) in after {
        match before.get(name) {
            Some((old_id, _)) if old_id != id => recreated.push(name.clone()),
            Some((_, old_started)) if old_started != started => restarted.push(name.clone()),
            Some(_) => {}
            None => recreated.push(name.clone()),
        }
    }
    (recreated, restarted)
}

struct Cleanup(&'static str);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let mut p = podman();
        let _ = apply::remove_project(&mut p, self.0, &[]);
        let _ = Bed::get().podman(&["volume", "rm", "-f", &format!("{}_data", self.0)]);
    }
}

#[test]
fn converges_ten_services_with_zero_writes_when_unchanged_and_touches_only_what_changed() {
    let name = "conv-ten";
    let _cleanup = Cleanup(name);
    let mut p = podman();
    let first = load(name, &[]);
    converge(&mut p, &first);
    let installed = snapshot(name);
    assert_eq!(installed.len(), 10, "{installed:?}");
    // The dependency conditions held when each dependent started: api runs only if the
    // migration wrote its schema first (it exits 1 otherwise, which fails the apply), and
    // the migration ran only once db was healthy.
    let bed = Bed::get();
    let api = bed.inspect(&format!("{name}-api-1"));
    assert_eq!(api["State"]["Status"], "running", "{api}");
    let migrate = bed.inspect(&format!("{name}-migrate-1"));
    assert_eq!(migrate["State"]["ExitCode"], 0);
    assert!(
        migrate["State"]["FinishedAt"].as_str() <= api["State"]["StartedAt"].as_str(),
        "api started before the migration completed"
    );
    let db = bed.inspect(&format!("{name}-db-1"));
    assert_eq!(db["State"]["Health"]["Status"], "healthy", "{db}");

    // 1. The same project again (a new load, as after an agent restart): no write at all.
    let writes = p.writes();
    converge(&mut p, &load(name, &[]));
    assert_eq!(p.writes() - writes, 0, "a no-op reconcile wrote to Podman");
    assert_eq!(snapshot(name), installed);

    // 2. One leaf service changed: only its container is recreated.
    converge(&mut p, &load(name, &[("WEB_TAG", "2")]));
    let after_web = snapshot(name);
    let (recreated, restarted) = touched(&installed, &after_web);
    assert_eq!(recreated, [format!("{name}-web-1")]);
    assert!(restarted.is_empty(), "{restarted:?}");

    // 3. The database changed: it is recreated, api (depends_on db with restart: true) is
    // restarted in place, everything else — workers depending on api without restart — keeps
    // running untouched, and the completed migration is not rerun.
    converge(&mut p, &load(name, &[("WEB_TAG", "2"), ("DB_TAG", "2")]));
    let after_db = snapshot(name);
    let (recreated, restarted) = touched(&after_web, &after_db);
    assert_eq!(recreated, [format!("{name}-db-1")]);
    assert_eq!(restarted, [format!("{name}-api-1")]);
}
