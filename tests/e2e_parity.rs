//! Parity with a real compose tool: every project of the corpus in `tests/data/compose/parity/`
//! is deployed twice on the bed's Podman, once by margo-agent's compose engine (project
//! `mp-<case>-<bed>`) and once by podman-compose 1.6.0 from PyPI (`pc-<case>-<bed>`, through
//! `tests/bed/podman-compose.sh`), and what matters in `podman inspect` is compared service by
//! service: environment, ports, mounts, networks and aliases, restart policy, user, working
//! directory, capabilities, healthcheck, resource limits, hostname, extra hosts, init,
//! read-only root, stop signal and timeout, labels.
//!
//! Each side gets its own copy of the case directory (bind sources are created inside it) and
//! the same variables from the process environment: `IMAGE` (the bed's busybox) and a free
//! host port per `${…_PORT}` the file uses, different per side so both projects run at once.
//! Facts are normalised before comparing: the project name becomes `{project}`, the side's
//! project directory `{dir}`, a published host port the `${VAR}` it came from.
//!
//! Where the two differ, [`DIFFERENCES`] says so with the reason (docs/compose-parity.md has the
//! same table): every entry is an intended difference. Any other difference fails the case
//! with a readable diff, and so does a case-specific entry the case no longer shows.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Bed, engine, repo};
use margo_agent::compose::libpod::{CreateContext, LABEL_PROJECT, LABEL_SERVICE};
use margo_agent::compose::{LoadOptions, load_file};
use margo_agent::podman::Podman;
use margo_agent::reconcile::{
    LABEL_COMPONENT, LABEL_DEPLOYMENT, LABEL_DEVICE, LABEL_MANAGED_BY, MANAGED_BY,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long margo-agent may take to get a case running and healthy.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Variables both tools get from the process environment besides `IMAGE` and the ports, per
/// case: what a Margo deployment would pass as parameters. They beat the case's `.env`.
const PARAMETERS: &[(&str, &[(&str, &str)])] = &[
    ("photos", &[("DB_PASSWORD", "from-parameters")]),
    (
        "homeauto",
        &[
            ("TZ", "America/New_York"),
            ("HA_PASSTHROUGH", "from-parameters"),
            ("NODE_PASSTHROUGH", "also-from-parameters"),
        ],
    ),
];

/// Where the two sides may differ, and why. `case` and `service` of `"*"` match any; `fact`
/// ends with `*` to match a prefix. `margo` / `podman_compose` are the normalised values each
/// side must show (`-` = the fact is absent on that side, `*` = any value present).
struct Difference {
    case: &'static str,
    service: &'static str,
    fact: &'static str,
    margo: &'static str,
    podman_compose: &'static str,
    why: Why,
}

enum Why {
    /// margo-agent differs on purpose (usually: it follows docker compose where podman-compose
    /// does not).
    Intended(&'static str),
}

/// Every difference the corpus shows (keep docs/compose-parity.md in step).
#[rustfmt::skip]
const DIFFERENCES: &[Difference] = &[
    Difference { case: "*", service: "*", fact: "name", margo: "{project}-{service}-1", podman_compose: "{project}_{service}_1",
        why: Why::Intended("docker compose v2 names containers <project>-<service>-<n>; podman-compose keeps compose v1's underscores") },
    Difference { case: "*", service: "*", fact: "label:com.docker.compose.config-hash", margo: "*", podman_compose: "-",
        why: Why::Intended("docker compose's label; margo-agent recreates a container when this hash of its service changes") },
    Difference { case: "*", service: "*", fact: "label:com.docker.compose.depends_on", margo: "*", podman_compose: "-",
        why: Why::Intended("docker compose's label; margo-agent removes dependents first when it tears a project down") },
    Difference { case: "*", service: "*", fact: "label:com.docker.compose.image", margo: "*", podman_compose: "-",
        why: Why::Intended("docker compose's label (the image the container was made from); margo-agent recreates when it changes") },
    Difference { case: "*", service: "*", fact: "label:com.docker.compose.oneoff", margo: "False", podman_compose: "-",
        why: Why::Intended("docker compose's label; podman-compose does not set it") },
    Difference { case: "*", service: "*", fact: "label:com.docker.compose.project.config_files", margo: "{dir}/compose.yaml", podman_compose: "compose.yaml",
        why: Why::Intended("docker compose records the absolute path; podman-compose the path as given on its command line") },
    Difference { case: "*", service: "*", fact: "label:com.docker.compose.network", margo: "*", podman_compose: "-",
        why: Why::Intended("docker compose labels each network with its compose key; podman-compose does not") },
    Difference { case: "*", service: "*", fact: "label:com.docker.compose.volume", margo: "*", podman_compose: "-",
        why: Why::Intended("docker compose labels each volume with its compose key; podman-compose does not") },
    Difference { case: "*", service: "*", fact: "label:org.margo.*", margo: "*", podman_compose: "-",
        why: Why::Intended("margo-agent's own labels: deployment, component, device, managed-by (how it finds its containers again after a lost state file)") },
    Difference { case: "*", service: "*", fact: "label:io.podman.compose.*", margo: "-", podman_compose: "*",
        why: Why::Intended("podman-compose's own labels (its config hash, project, service, version)") },
    Difference { case: "*", service: "*", fact: "label:PODMAN_SYSTEMD_UNIT", margo: "-", podman_compose: "podman-compose@{project}.service",
        why: Why::Intended("podman-compose's systemd integration; margo-agent is itself the service that keeps projects converged") },
    Difference { case: "*", service: "*", fact: "health", margo: "healthy", podman_compose: "starting",
        why: Why::Intended("Podman schedules healthchecks with systemd timers (none on the bed, nor on many devices); margo-agent runs them itself until healthy, podman-compose leaves them to the timers") },
    Difference { case: "*", service: "*", fact: "stop_timeout", margo: "*", podman_compose: "10",
        why: Why::Intended("docker compose sets the container's stop timeout from stop_grace_period; podman-compose 1.6 only passes it to `podman stop`, so its containers keep Podman's 10 s") },
    Difference { case: "*", service: "*", fact: "restart", margo: "no:0", podman_compose: ":0",
        why: Why::Intended("without `restart`, docker compose sends the policy \"no\"; podman-compose sends none and Podman records an empty name (same behaviour)") },
    Difference { case: "*", service: "*", fact: "tmpfs:/var/tmp", margo: "-", podman_compose: "*",
        why: Why::Intended("with read_only, the podman CLI also mounts tmpfs on /run, /tmp and /var/tmp (--read-only-tmpfs); docker does not, nor does margo-agent") },
    Difference { case: "*", service: "*", fact: "tmpfs:/run", margo: "-", podman_compose: "*",
        why: Why::Intended("as tmpfs:/var/tmp") },
    Difference { case: "*", service: "*", fact: "tmpfs:/tmp", margo: "-", podman_compose: "*",
        why: Why::Intended("as tmpfs:/var/tmp (where the file does not mount /tmp itself)") },
    Difference { case: "more-keys", service: "readonly", fact: "tmpfs:/tmp", margo: "size=8388608,mode=1777,rw,rprivate,nosuid,nodev,tmpcopyup", podman_compose: "size=8m,mode=1777,rw,rprivate,nosuid,nodev,tmpcopyup",
        why: Why::Intended("margo-agent parses tmpfs sizes into bytes, as docker compose does; podman-compose passes the text through (same size)") },
    Difference { case: "more-keys", service: "readonly", fact: "mount:/var/cache/app", margo: "volume {project}_cache rw=true propagation=rprivate options=nocopy,nodev,nosuid,rbind", podman_compose: "volume {project}_cache rw=true propagation=rprivate options=nodev,nosuid,rbind",
        why: Why::Intended("docker compose passes volume.nocopy to the mount; podman-compose 1.6 drops it") },
    Difference { case: "dns", service: "pihole", fact: "network:{project}_default", margo: "aliases=pihole,{project}-pihole", podman_compose: "aliases=pihole",
        why: Why::Intended("docker compose adds the container name to the aliases on every network (compose's getAliases); podman-compose does not") },
    Difference { case: "proxy", service: "db", fact: "network:{project}_backend", margo: "aliases=database,db,postgres,{project}-postgres", podman_compose: "aliases=database,db,postgres",
        why: Why::Intended("as in dns: the container_name is an alias") },
];

// ---------------------------------------------------------------- the cases

#[test]
fn photos_web_db_cache_worker_matches_podman_compose() {
    // web + db + cache + worker, healthchecks and depends_on service_healthy, binds (read-only
    // file, relative directories), a named volume, public + internal networks with aliases,
    // three restart policies, env_file and .env interpolation, mem_limit/cpus/pids limits.
    parity("photos");
}

#[test]
fn media_server_ports_user_tmpfs_hosts_matches_podman_compose() {
    // Jellyfin-like: tcp/udp ports with host IPs and an ephemeral one, user, working_dir,
    // short tmpfs, hostname, extra_hosts, init, legacy limits, list-form environment.
    parity("media");
}

#[test]
fn hardened_vault_caps_read_only_limits_matches_podman_compose() {
    // Vaultwarden-like: cap_drop ALL + cap_add, read_only with tmpfs, deploy limits with pids,
    // on-failure:3, string healthcheck.
    parity("vault");
}

#[test]
fn dns_blocker_udp_ports_caps_dns_matches_podman_compose() {
    // Pi-hole-like: 53/udp and 53/tcp, admin port on 127.0.0.1, NET_ADMIN, dns, hostname,
    // extra_hosts, env_file.
    parity("dns");
}

#[test]
fn reverse_proxy_three_networks_aliases_matches_podman_compose() {
    // Traefik-like: proxy, app and db over three networks (one internal), aliases per
    // network, list and map labels, short depends_on.
    parity("proxy");
}

#[test]
fn home_automation_interpolation_and_env_files_matches_podman_compose() {
    // Home Assistant / Node-RED-like: .env, parameters beating .env, ${V:-d}, ${V-d}, ${V:+r},
    // $$, env_file quoting, list and map environment.
    parity("homeauto");
}

#[test]
fn more_keys_matches_podman_compose() {
    // Small and meant to grow: one service per family of less common keys.
    parity("more-keys");
}

#[test]
fn every_listed_difference_is_in_the_docs() {
    // docs/compose-parity.md carries the same table for readers: one row per entry, with the
    // fact in backticks and the case (`all` for every case).
    let docs = std::fs::read_to_string(repo().join("docs/compose-parity.md")).unwrap();
    for d in DIFFERENCES {
        let case = if d.case == "*" { "all" } else { d.case };
        let fact = format!("| `{}` |", d.fact);
        assert!(
            docs.lines()
                .any(|l| l.starts_with(&format!("| {case} |")) && l.contains(&fact)),
            "docs/compose-parity.md has no row for case {case}, fact {}",
            d.fact
        );
    }
}

// ---------------------------------------------------------------- behaviour the corpus found
// margo-agent bugs the corpus found (now fixed); each asserts what docker compose does.

#[test]
fn margo_starts_a_dependent_only_after_its_dependency_is_healthy() {
    // Fixture: db turns healthy 3 s after it starts; web depends on it with service_healthy.
    let bed = Bed::get();
    let source = repo().join("tests/data/compose/parity/bugs/startup-order");
    let text = std::fs::read_to_string(source.join("compose.yaml")).unwrap();
    let mp = side("margo-agent", "mp", "startup-order", &source, &text);
    remove_project(&mp.project);
    let _clean = Cleanup { side: &mp };
    margo_up(bed, &mp);
    let mut podman = connect(bed);
    let started = |podman: &mut Podman, svc: &str| {
        let i = podman
            .inspect_container_json(&format!("{}-{svc}-1", mp.project))
            .unwrap();
        unix_seconds(&s(&i["State"]["StartedAt"]))
    };
    let (db, web) = (started(&mut podman, "db"), started(&mut podman, "web"));
    assert!(
        web - db >= 2.5,
        "web started {:.2} s after db, before db could be healthy (3 s): depends_on \
         condition service_healthy was not waited for",
        web - db
    );
}

#[test]
fn margo_waits_for_a_service_whose_healthcheck_is_disabled() {
    // Fixture: one service with `healthcheck: disable: true`; converge waits for readiness.
    let bed = Bed::get();
    let source = repo().join("tests/data/compose/parity/bugs/healthcheck-disabled");
    let text = std::fs::read_to_string(source.join("compose.yaml")).unwrap();
    let mp = side("margo-agent", "mp", "healthcheck-disabled", &source, &text);
    remove_project(&mp.project);
    let _clean = Cleanup { side: &mp };
    margo_up(bed, &mp);
    let i = connect(bed)
        .inspect_container_json(&format!("{}-app-1", mp.project))
        .unwrap();
    assert_eq!(i["State"]["Status"], "running");
    assert_eq!(
        i["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["NONE"])
    );
}

#[test]
fn margo_applies_the_memory_reservation() {
    // Fixture: vault has deploy.resources.reservations.memory 32M; docker compose and
    // podman-compose set it as the container's memory reservation.
    let bed = Bed::get();
    let source = repo().join("tests/data/compose/parity/vault");
    let text = std::fs::read_to_string(source.join("compose.yaml")).unwrap();
    let mp = side("margo-agent", "mp", "vault-reservation", &source, &text);
    remove_project(&mp.project);
    let _clean = Cleanup { side: &mp };
    margo_up(bed, &mp);
    let i = connect(bed)
        .inspect_container_json(&format!("{}-vault-1", mp.project))
        .unwrap();
    assert_eq!(i["HostConfig"]["MemoryReservation"], 32 << 20);
}

/// Seconds since the epoch of an RFC 3339 time as Podman prints it
/// (`2026-11-22T13:43:40.640937397Z` or with a `+hh:mm` offset).
fn unix_seconds(t: &str) -> f64 {
    let (date, rest) = t.split_once('T').unwrap();
    let n = |x: &str| x.parse::<i64>().unwrap();
    let d: Vec<i64> = date.split('-').map(n).collect();
    let (clock, offset) = match rest.find(['Z', '+', '-']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let hms: Vec<f64> = clock.split(':').map(|x| x.parse().unwrap()).collect();
    let offset_s = match offset.split_at_checked(1) {
        Some((sign @ ("+" | "-"), hm)) => {
            let (h, m) = hm.split_once(':').unwrap();
            let v = (n(h) * 3600 + n(m) * 60) as f64;
            if sign == "-" { -v } else { v }
        }
        _ => 0.0,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    days as f64 * 86_400.0 + hms[0] * 3600.0 + hms[1] * 60.0 + hms[2] - offset_s
}

// ---------------------------------------------------------------- one case

/// One side of a case: its project name, directory and variables.
struct Side {
    tool: &'static str,
    project: String,
    dir: PathBuf,
    vars: BTreeMap<String, String>,
}

/// Removes a project's containers, networks and volumes when dropped (also on panic).
struct Cleanup<'a> {
    side: &'a Side,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        remove_project(&self.side.project);
    }
}

fn remove_project(project: &str) {
    let bed = Bed::get();
    let filter = format!("label={LABEL_PROJECT}={project}");
    let ids = bed.podman(&["ps", "-aq", "--filter", &filter]);
    let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if !ids.is_empty() {
        // --depend: podman-compose makes dependents require their dependencies.
        let mut args = vec!["rm", "-f", "-i", "--depend", "-t", "0"];
        args.extend(ids.iter().map(String::as_str));
        bed.podman(&args);
    }
    for kind in ["network", "volume"] {
        let out = bed.podman(&[kind, "ls", "-q", "--filter", &filter]);
        for name in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            bed.podman(&[kind, "rm", "-f", name]);
        }
    }
}

fn parity(case: &str) {
    let started = Instant::now();
    let bed = Bed::get();
    install_podman_compose();
    let source = repo().join("tests/data/compose/parity").join(case);
    let text = std::fs::read_to_string(source.join("compose.yaml")).unwrap();
    let mp = side("margo-agent", "mp", case, &source, &text);
    let pc = side("podman-compose", "pc", case, &source, &text);
    remove_project(&mp.project);
    remove_project(&pc.project);
    let _clean_mp = Cleanup { side: &mp };
    let _clean_pc = Cleanup { side: &pc };

    // Both deploy at once: they share nothing but Podman.
    let (warnings, pc_out) = std::thread::scope(|s| {
        let pc_run = s.spawn(|| podman_compose_up(&pc));
        let warnings = margo_up(bed, &mp);
        (warnings, pc_run.join().unwrap())
    });
    assert!(
        pc_out.status.success(),
        "{case}: podman-compose up -d failed:\n{}",
        String::from_utf8_lossy(&pc_out.stderr)
    );
    let deployed = started.elapsed();

    let mut podman = connect(bed);
    let mut left = project_facts(&mut podman, &mp);
    if !warnings.is_empty() {
        let load = Facts::from([("warnings".to_string(), warnings.join("; "))]);
        left.insert("(load)".into(), load);
    }
    let right = project_facts(&mut podman, &pc);
    let services: BTreeSet<&String> = left.keys().chain(right.keys()).collect();
    let mut report = Vec::new();
    let mut used = BTreeSet::new();
    let mut seen = Vec::new();
    for svc in services {
        let empty = BTreeMap::new();
        let l = left.get(svc.as_str()).unwrap_or(&empty);
        let r = right.get(svc.as_str()).unwrap_or(&empty);
        let keys: BTreeSet<&String> = l.keys().chain(r.keys()).collect();
        for k in keys {
            let (lv, rv) = (l.get(k.as_str()), r.get(k.as_str()));
            if lv == rv {
                continue;
            }
            let lv = lv.map_or("-", String::as_str);
            let rv = rv.map_or("-", String::as_str);
            match known_difference(case, svc, k, lv, rv) {
                Some(i) => {
                    let Why::Intended(why) = DIFFERENCES[i].why;
                    seen.push(format!("  {svc} {k}: intended: {why}"));
                    used.insert(i);
                }
                None => report.push(format!(
                    "  {svc} {k}\n      margo-agent:    {lv}\n      podman-compose: {rv}"
                )),
            }
        }
    }
    for (i, entry) in DIFFERENCES.iter().enumerate() {
        // Wildcard entries hold for every case where the fact shows up; a case-specific one
        // that no longer matches anything is stale.
        if entry.case == case && !used.contains(&i) {
            report.push(format!(
                "  listed difference no longer observed (remove it from DIFFERENCES): {} {}",
                entry.service, entry.fact
            ));
        }
    }
    if std::env::var_os("PARITY_DUMP").is_some() {
        eprintln!(
            "---- {case}: differences listed in DIFFERENCES\n{}",
            seen.join("\n")
        );
        for (tool, facts) in [(mp.tool, &left), (pc.tool, &right)] {
            eprintln!("---- {case}: {tool}");
            for (svc, f) in facts {
                for (k, v) in f {
                    eprintln!("  {svc} {k} = {v}");
                }
            }
        }
    }
    eprintln!(
        "{case}: deployed by both in {} ms, compared {} services ({} listed differences seen) in {} ms total",
        deployed.as_millis(),
        left.len().max(right.len()),
        used.len(),
        started.elapsed().as_millis()
    );
    assert!(
        report.is_empty(),
        "{case}: margo-agent ({}) and podman-compose ({}) differ:\n{}\n\
         (normalised: {{project}} = project name, {{dir}} = project directory, ${{VAR}} = the \
         host port from that variable; differences that are fine are listed in DIFFERENCES)",
        mp.project,
        pc.project,
        report.join("\n")
    );
}

fn known_difference(case: &str, service: &str, fact: &str, margo: &str, pc: &str) -> Option<usize> {
    let matches = |pattern: &str, value: &str| match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    };
    let value = |pattern: &str, v: &str| {
        let pattern = pattern.replace("{service}", service);
        pattern == "*" && v != "-" || pattern == v
    };
    DIFFERENCES.iter().position(|i| {
        (i.case == "*" || i.case == case)
            && (i.service == "*" || i.service == service)
            && matches(i.fact, fact)
            && value(i.margo, margo)
            && value(i.podman_compose, pc)
    })
}

/// A copy of the case for one tool, with its variables.
fn side(tool: &'static str, prefix: &str, case: &str, source: &Path, text: &str) -> Side {
    let dir = repo()
        .join("target/e2e-parity")
        .join(case)
        .join(prefix)
        .join(case);
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(source, &dir);
    let project = format!("{prefix}-{case}-{}", bed_id());
    let mut vars = BTreeMap::new();
    vars.insert("IMAGE".to_string(), Bed::get().image().to_string());
    // Fixed container names (as store entries have) get this prefix, so both sides coexist.
    vars.insert("CONTAINER_PREFIX".to_string(), format!("{project}-"));
    for name in port_variables(text) {
        vars.insert(name, common::free_port().to_string());
    }
    for (c, params) in PARAMETERS {
        if *c == case {
            for (k, v) in *params {
                vars.insert((*k).to_string(), (*v).to_string());
            }
        }
    }
    Side {
        tool,
        project,
        dir,
        vars,
    }
}

/// The bed's own suffix (of its bridge `mtbXXXXXX`): network names are shared by every Podman
/// on the host (tests/bed/README.md), so two beds running the corpus at once must not clash.
fn bed_id() -> &'static str {
    let bridge = Bed::get().var("MARGO_TB_BRIDGE");
    bridge.strip_prefix("mtb").unwrap_or(bridge)
}

/// Names of the `${…_PORT}` variables a compose file uses.
fn port_variables(text: &str) -> BTreeSet<String> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            name.ends_with("_PORT").then_some(name)
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

// ---------------------------------------------------------------- the two tools

fn connect(bed: &Bed) -> Podman {
    engine::connect(bed.var("MARGO_TB_PODMAN_SOCK"))
}

/// Deploys the case as the agent's reconcile pass does: load with the deployment's parameters
/// as variables, converge with the agent's labels, wait until running and healthy. Returns
/// the load warnings (the agent would journal them).
fn margo_up(bed: &Bed, side: &Side) -> Vec<String> {
    let lookup = |k: &str| side.vars.get(k).cloned();
    let opts = LoadOptions {
        project_name: Some(&side.project),
        variables: &lookup,
        profiles: &[],
    };
    let loaded = load_file(&side.dir.join("compose.yaml"), &opts)
        .unwrap_or_else(|e| panic!("{}: margo-agent refused the file: {e}", side.project));
    let labels = [
        (LABEL_DEPLOYMENT, "parity"),
        (LABEL_COMPONENT, side.project.as_str()),
        (LABEL_DEVICE, "parity"),
        (LABEL_MANAGED_BY, MANAGED_BY),
    ];
    let ctx = CreateContext {
        extra_labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..CreateContext::default()
    };
    let mut podman = connect(bed);
    engine::converge(&mut podman, &loaded.project, &ctx, Some(CONVERGE_TIMEOUT))
        .unwrap_or_else(|e| panic!("{}: margo-agent did not converge: {e}", side.project));
    loaded.warnings.iter().map(ToString::to_string).collect()
}

static PODMAN_COMPOSE: OnceLock<()> = OnceLock::new();

fn install_podman_compose() {
    PODMAN_COMPOSE.get_or_init(|| {
        let out = Command::new(repo().join("tests/bed/podman-compose.sh"))
            .arg("--install")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "installing podman-compose failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// `podman-compose -p pc-<case>-<bed> up -d` in the case's directory, with nothing but the case's
/// variables in its environment (interpolation must not see the test's own environment).
fn podman_compose_up(side: &Side) -> std::process::Output {
    Command::new(repo().join("tests/bed/podman-compose.sh"))
        .args(["-p", &side.project, "up", "-d"])
        .current_dir(&side.dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MARGO_TB_DIR", Bed::get().var("MARGO_TB_DIR"))
        .envs(&side.vars)
        .output()
        .unwrap()
}

// ---------------------------------------------------------------- facts

type Facts = BTreeMap<String, String>;

/// Service name → normalised facts of its container, plus `(network …)` and `(volume …)`
/// entries for the project's networks and volumes.
fn project_facts(podman: &mut Podman, side: &Side) -> BTreeMap<String, Facts> {
    let mut out = BTreeMap::new();
    let containers = podman
        .list_containers(&[(LABEL_PROJECT, &side.project)])
        .unwrap();
    let services: BTreeMap<String, String> = containers
        .iter()
        .map(|c| {
            let service = c.labels.get(LABEL_SERVICE).cloned().unwrap_or_default();
            (c.id.clone(), service)
        })
        .collect();
    for c in &containers {
        let inspect = podman.inspect_container_json(&c.id).unwrap();
        out.insert(
            services[&c.id].clone(),
            container_facts(&inspect, side, &services),
        );
    }
    assert!(!out.is_empty(), "{}: no containers", side.project);
    out.extend(network_facts(side));
    out.extend(volume_facts(side));
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Sorted, comma-joined strings of a JSON array (empty for null).
fn sorted(v: &Value) -> String {
    let mut items: Vec<String> = v.as_array().into_iter().flatten().map(s).collect();
    items.sort();
    items.join(",")
}

impl Side {
    /// Replaces what legitimately differs between the sides by placeholders.
    fn norm(&self, value: &str) -> String {
        let mut v = value.replace(&self.dir.to_string_lossy().into_owned(), "{dir}");
        v = v.replace(&self.project, "{project}");
        for (k, port) in self.vars.iter().filter(|(k, _)| k.ends_with("_PORT")) {
            v = v.replace(port.as_str(), &format!("${{{k}}}"));
        }
        v
    }

    fn port_symbol(&self, host_port: &str) -> String {
        if host_port.is_empty() || host_port == "0" {
            return String::new();
        }
        self.vars
            .iter()
            .find(|(k, v)| k.ends_with("_PORT") && v.as_str() == host_port)
            .map_or_else(|| "(random)".to_string(), |(k, _)| format!("${{{k}}}"))
    }
}

/// `services` maps container IDs of the project to their service (for `network_mode:
/// service:x`, which Podman records as `container:<id>`).
fn container_facts(i: &Value, side: &Side, services: &BTreeMap<String, String>) -> Facts {
    let mut f = Facts::new();
    let cfg = &i["Config"];
    let host = &i["HostConfig"];
    let id = s(&i["Id"]);
    let short_id = id.get(..12).unwrap_or_default();
    let mut put = |k: &str, v: String| {
        f.insert(k.to_string(), v);
    };
    put("name", side.norm(&s(&i["Name"])));
    put("image", s(&i["ImageName"]));
    put("state", s(&i["State"]["Status"]));
    put("health", s(&i["State"]["Health"]["Status"]));
    put("command", cfg["Cmd"].to_string());
    put("entrypoint", s(&cfg["Entrypoint"]));
    for e in cfg["Env"].as_array().into_iter().flatten() {
        let e = s(e);
        let (k, v) = e.split_once('=').unwrap_or((&e, ""));
        // Podman sets these on both sides; HOSTNAME is the container's own.
        if !matches!(k, "PATH" | "HOSTNAME" | "container") {
            put(&format!("env:{k}"), side.norm(v));
        }
    }
    for (k, v) in cfg["Labels"].as_object().into_iter().flatten() {
        put(&format!("label:{k}"), side.norm(&s(v)));
    }
    let mut ports = Vec::new();
    for (port, bindings) in host["PortBindings"].as_object().into_iter().flatten() {
        for b in bindings.as_array().into_iter().flatten() {
            ports.push(format!(
                "{} -> {}:{}",
                port,
                s(&b["HostIp"]),
                side.port_symbol(&s(&b["HostPort"]))
            ));
        }
    }
    ports.sort();
    put("ports", ports.join(", "));
    for m in i["Mounts"].as_array().into_iter().flatten() {
        let kind = s(&m["Type"]);
        let source = match kind.as_str() {
            "volume" => side.norm(&s(&m["Name"])),
            _ => side.norm(&s(&m["Source"])),
        };
        put(
            &format!("mount:{}", s(&m["Destination"])),
            format!(
                "{kind} {source} rw={} propagation={} options={}",
                m["RW"],
                s(&m["Propagation"]),
                sorted(&m["Options"])
            ),
        );
    }
    for (dest, opts) in host["Tmpfs"].as_object().into_iter().flatten() {
        put(&format!("tmpfs:{dest}"), s(opts));
    }
    for (net, settings) in i["NetworkSettings"]["Networks"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let mut aliases: Vec<String> = settings["Aliases"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            // Podman adds the short ID of the container (of the namespace's owner, for
            // `network_mode: service:x`).
            .filter(|a| a.len() != 12 || !services.keys().any(|id| id.starts_with(a.as_str())))
            .map(|a| side.norm(&a))
            .collect();
        aliases.sort();
        put(
            &format!("network:{}", side.norm(net)),
            format!("aliases={}", aliases.join(",")),
        );
    }
    let mode = s(&host["NetworkMode"]);
    put(
        "network_mode",
        match mode
            .strip_prefix("container:")
            .and_then(|id| services.get(id))
        {
            Some(service) => format!("container of service {service}"),
            None => mode,
        },
    );
    let exposed: Vec<&String> = cfg["ExposedPorts"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.keys())
        .collect();
    put(
        "exposed_ports",
        exposed
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(","),
    );
    put(
        "restart",
        format!(
            "{}:{}",
            s(&host["RestartPolicy"]["Name"]),
            host["RestartPolicy"]["MaximumRetryCount"]
        ),
    );
    put("user", s(&cfg["User"]));
    put("working_dir", s(&cfg["WorkingDir"]));
    put("cap_add", sorted(&host["CapAdd"]));
    put("cap_drop", sorted(&host["CapDrop"]));
    put("effective_caps", sorted(&i["EffectiveCaps"]));
    put("healthcheck", cfg["Healthcheck"].to_string());
    put("memory", s(&host["Memory"]));
    put("memory_swap", s(&host["MemorySwap"]));
    put("memory_reservation", s(&host["MemoryReservation"]));
    put(
        "cpu",
        format!(
            "nano_cpus={} quota={} period={}",
            host["NanoCpus"], host["CpuQuota"], host["CpuPeriod"]
        ),
    );
    put("pids_limit", s(&host["PidsLimit"]));
    let hostname = s(&cfg["Hostname"]);
    put(
        "hostname",
        if hostname == short_id {
            "(container id)".into()
        } else {
            hostname
        },
    );
    put("extra_hosts", sorted(&host["ExtraHosts"]));
    put("dns", sorted(&host["Dns"]));
    put("init", s(&host["Init"]));
    put("read_only", s(&host["ReadonlyRootfs"]));
    put("privileged", s(&host["Privileged"]));
    put("tty", s(&cfg["Tty"]));
    put("stdin_open", s(&cfg["OpenStdin"]));
    put("stop_signal", s(&cfg["StopSignal"]));
    put("stop_timeout", s(&cfg["StopTimeout"]));
    f
}

fn cli_json(args: &[&str]) -> Value {
    let out = Bed::get().podman(args);
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `(network <name>)` → driver, internal, DNS and labels of each network the project created.
fn network_facts(side: &Side) -> BTreeMap<String, Facts> {
    let filter = format!("label={LABEL_PROJECT}={}", side.project);
    let names = Bed::get().podman(&["network", "ls", "-q", "--filter", &filter]);
    let mut out = BTreeMap::new();
    for name in String::from_utf8_lossy(&names.stdout).split_whitespace() {
        let n = &cli_json(&["network", "inspect", name])[0];
        let mut f = Facts::new();
        for (k, v) in n["labels"].as_object().into_iter().flatten() {
            f.insert(format!("label:{k}"), side.norm(&s(v)));
        }
        f.insert("driver".into(), s(&n["driver"]));
        f.insert("internal".into(), s(&n["internal"]));
        f.insert("dns_enabled".into(), s(&n["dns_enabled"]));
        f.insert("ipv6".into(), s(&n["ipv6_enabled"]));
        out.insert(format!("(network {})", side.norm(name)), f);
    }
    out
}

/// `(volume <name>)` → driver, options and labels of each volume the project created.
fn volume_facts(side: &Side) -> BTreeMap<String, Facts> {
    let filter = format!("label={LABEL_PROJECT}={}", side.project);
    let names = Bed::get().podman(&["volume", "ls", "-q", "--filter", &filter]);
    let mut out = BTreeMap::new();
    for name in String::from_utf8_lossy(&names.stdout).split_whitespace() {
        let v = &cli_json(&["volume", "inspect", name])[0];
        let mut f = Facts::new();
        for (k, o) in v["Options"].as_object().into_iter().flatten() {
            f.insert(format!("option:{k}"), s(o));
        }
        for (k, l) in v["Labels"].as_object().into_iter().flatten() {
            f.insert(format!("label:{k}"), side.norm(&s(l)));
        }
        f.insert("driver".into(), s(&v["Driver"]));
        out.insert(format!("(volume {})", side.norm(&s(&v["Name"]))), f);
    }
    out
}
