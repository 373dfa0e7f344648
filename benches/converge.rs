//! Compose-engine convergence figures on a real Podman (the test bed), through the library:
//!
//! - no-op reconcile of the ten-service project (`tests/data/compose/ten`): Podman write
//!   calls (must be 0), CPU ms of this process (from `/proc/thread-self/schedstat`), wall ms;
//! - update of one of ten services: containers recreated and restarted (must be 1, plus the
//!   dependents that must restart).
//!
//! Run: `tests/bed/up.sh /tmp/bed && MARGO_TESTBED=/tmp/bed/env cargo bench --bench converge`
//! (knob: `BENCH_RUNS`, default 5). Figures in `docs/bench.md`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "../tests/common/engine.rs"]
mod engine;

use common::{bed, median, thread_cpu_ns};
use margo_agent::compose::Project;
use margo_agent::compose::apply;
use margo_agent::compose::libpod::CreateContext;
use margo_agent::podman::Podman;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn load(image: &str, vars: &[(&str, &str)]) -> Project {
    engine::load_ten(image, "bench-ten", vars)
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

/// Container name → (ID, start time).
fn snapshot(podman: &mut Podman) -> BTreeMap<String, (String, String)> {
    let listed = podman
        .list_containers(&[("com.docker.compose.project", "bench-ten")])
        .unwrap();
    listed
        .into_iter()
        .map(|c| {
            let inspect = podman.inspect_container_json(&c.id).unwrap();
            let started = inspect["State"]["StartedAt"]
                .as_str()
                .unwrap_or("")
                .to_string();
            (c.name().to_string(), (c.id, started))
        })
        .collect()
}

fn main() {
    let env = bed();
    let image = env["MARGO_TB_IMAGE"].clone();
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let mut podman = engine::connect(&env["MARGO_TB_PODMAN_SOCK"]);
    let _ = apply::remove_project(&mut podman, "bench-ten", &[]);

    let t = Instant::now();
    converge(&mut podman, &load(&image, &[]));
    println!(
        "first apply, 10 services (db healthcheck 1 s, migration, restart-on-db api): {} ms",
        t.elapsed().as_millis()
    );

    let (mut writes, mut cpu, mut wall) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let w0 = podman.writes();
        let c0 = thread_cpu_ns();
        let t0 = Instant::now();
        converge(&mut podman, &load(&image, &[]));
        wall.push(t0.elapsed().as_secs_f64() * 1000.0);
        cpu.push((thread_cpu_ns() - c0) as f64 / 1e6);
        writes.push((podman.writes() - w0) as f64);
    }
    println!(
        "no-op reconcile (load + plan + converge), median of {runs}: {} Podman write calls, {:.1} ms CPU, {:.1} ms wall",
        median(writes),
        median(cpu),
        median(wall)
    );

    for (what, vars) in [
        ("leaf service `web` changed", vec![("WEB_TAG", "2")]),
        (
            "`db` changed (api depends on it with restart: true)",
            vec![("WEB_TAG", "2"), ("DB_TAG", "2")],
        ),
    ] {
        let before = snapshot(&mut podman);
        let t0 = Instant::now();
        converge(&mut podman, &load(&image, &vars));
        let ms = t0.elapsed().as_millis();
        let after = snapshot(&mut podman);
        let recreated: Vec<&String> = after
            .iter()
            .filter(|(n, (id, _))| before.get(*n).is_none_or(|(old, _)| old != id))
            .map(|(n, _)| n)
            .collect();
        let restarted: Vec<&String> = after
            .iter()
            .filter(|(n, (id, started))| {
                before
                    .get(*n)
                    .is_some_and(|(old, s)| old == id && s != started)
            })
            .map(|(n, _)| n)
            .collect();
        println!(
            "update, {what}: {} recreated {recreated:?}, {} restarted {restarted:?}, {} untouched, {ms} ms",
            recreated.len(),
            restarted.len(),
            after.len() - recreated.len() - restarted.len()
        );
    }
    let _ = apply::remove_project(&mut podman, "bench-ten", &[]);
}
