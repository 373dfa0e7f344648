#![allow(clippy::unwrap_used)]
//! The Fleet Manager side end to end: the real agent binary against the test bed's registry
//! and Podman and the test WFM (`tests/wfm/wfm.py`), which validates every request against the
//! draft's shapes and verifies every X-Payload-Signature with Python's `cryptography`.

mod common;

use common::wfm::TestWfm;
use common::{Bed, Device, deployment, problem_lines};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROJECT: &str = "services:\n  app:\n    image: IMAGE\n    command: [\"sleep\", \"3600\"]\n";

fn compose() -> String {
    PROJECT.replace("IMAGE", Bed::get().image())
}

/// A device configured for `wfm` (its CA and the rogue CA are in the device's trust store,
/// so only pinning can refuse the rogue one); `wfm_extra`: more keys of the `wfm:` section.
fn device(name: &str, wfm: &TestWfm, wfm_extra: &str) -> Device {
    let d = Device::new(name);
    write(&d, wfm, wfm_extra);
    d
}

fn write(d: &Device, wfm: &TestWfm, wfm_extra: &str) {
    d.write_config(&format!(
        "wfm:\n  url: {}\n  data_dir: {}/wfm\n  call_timeout: 2s\n  report_interval: 1s\n  retry_min: 1s\n  retry_max: 2s\n{wfm_extra}",
        wfm.url(),
        d.dir.display()
    ));
    let text = std::fs::read_to_string(&d.config).unwrap();
    let ca = Bed::get().var("MARGO_TB_CA");
    let text = text.replace(
        &format!("extra_ca: [{ca}]"),
        &format!(
            "extra_ca: [{ca}, {}, {}]",
            wfm.ca().display(),
            wfm.rogue_ca().display()
        ),
    );
    std::fs::write(&d.config, text).unwrap();
}

fn outbox_len(d: &Device) -> usize {
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.dir.join("state.json")).unwrap()).unwrap();
    s["wfm"]["outbox"].as_array().map_or(0, Vec::len)
}

fn assert_all_valid(wfm: &TestWfm) {
    let bad = wfm.invalid();
    assert!(bad.is_empty(), "requests the WFM found invalid: {bad:#?}");
}

/// Publishes `docs` as the device's desired state.
fn publish(d: &Device, docs: &[&str]) {
    let out = d.publish_desired(docs, &[]);
    assert!(out.status.success());
}

/// `margo-agent run` for `d`, logging to stderr.
fn daemon(d: &Device) -> Command {
    let mut c = Command::new(common::binary());
    c.arg("--config")
        .arg(&d.config)
        .arg("run")
        .env("MARGO_AGENT_LOG", "stderr");
    c
}

/// Asserts a command succeeded, showing its stderr when it did not.
fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `HH:MM` (UTC) of Unix time `t`.
fn hm(t: u64) -> String {
    format!("{:02}:{:02}", (t % 86400) / 3600, (t % 3600) / 60)
}

#[test]
fn onboarding_from_scratch_reports_in_order_and_capabilities_change_is_a_put() {
    let wfm = TestWfm::start(common::repo().join("target/e2e/wfm-onboard-srv"), 3600);
    let d = device("wfm-onboard", &wfm, "");
    let repo = d.publish_package("web", &compose(), "1.0.0");
    let out = d.publish_desired(&[&deployment("wfm-a", "web", &repo, "1.0.0")], &[]);
    assert!(out.status.success());

    let (code, log) = d.run_once();
    assert_eq!(code, 0, "{log}");
    assert!(problem_lines(&log).is_empty(), "{log}");
    // Onboarding results: CA pinned, secrets 0600 and never logged.
    let wdir = d.dir.join("wfm");
    assert_eq!(
        std::fs::read(wdir.join("ca.pem")).unwrap(),
        std::fs::read(wfm.ca()).unwrap()
    );
    for f in ["secrets.json", "device-key.pem"] {
        let mode = std::fs::metadata(wdir.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let secrets: serde_json::Value =
        serde_json::from_slice(&std::fs::read(wdir.join("secrets.json")).unwrap()).unwrap();
    let secret = secrets["clientSecret"].as_str().unwrap();
    assert!(!log.contains(secret), "client secret logged:\n{log}");
    assert!(
        !std::fs::read_to_string(wdir.join("onboarding.json"))
            .unwrap()
            .contains(secret)
    );
    assert_eq!(
        wfm.reports(),
        ["wfm-a:Pending", "wfm-a:Installing", "wfm-a:Installed"]
    );
    assert_eq!(wfm.count("POST", "/capabilities"), 1);
    assert_eq!(outbox_len(&d), 0);
    assert_all_valid(&wfm);

    // Idle: nothing changed, nothing sent (not even a token request).
    let before = wfm.requests().len();
    let (code, log) = d.run_once();
    assert_eq!(code, 0, "{log}");
    assert_eq!(wfm.requests().len(), before, "idle run talked to the WFM");

    // A capability change (board override) is a PUT; the printed document has it.
    write(&d, &wfm, "  capabilities:\n    serial: SN-CHANGED\n");
    let out = d.cmd(&["capabilities"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["properties"]["serialNumber"], "SN-CHANGED");
    assert_eq!(doc["properties"]["id"], "wfm-onboard");
    let (code, log) = d.run_once();
    assert_eq!(code, 0, "{log}");
    assert_eq!(wfm.count("PUT", "/capabilities"), 1);
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(wfm.dir.join("capabilities.json")).unwrap()).unwrap();
    assert_eq!(stored["properties"]["serialNumber"], "SN-CHANGED");

    // Re-onboarding is explicit.
    let out = d.cmd(&["onboard"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--force"));
    let out = d.cmd(&["onboard", "--force"]);
    assert_success(&out);
    assert_eq!(wfm.count("POST", "/onboarding"), 2);
    assert_all_valid(&wfm);
    d.cleanup();
}

/// Status reports the WFM answered with 401.
fn unauthorised_status_calls(wfm: &TestWfm) -> usize {
    wfm.requests()
        .iter()
        .filter(|r| r["status"] == 401 && r["path"].as_str().unwrap_or("").ends_with("/status"))
        .count()
}

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn outage_with_three_changes_and_a_killed_agent_loses_nothing_and_repeats_nothing() {
    // Tokens live 4 s: they expire while the agent runs.
    let mut wfm = TestWfm::start(common::repo().join("target/e2e/wfm-outage-srv"), 4);
    let d = device("wfm-outage", &wfm, "");
    let repo = d.publish_package("web", &compose(), "1.0.0");
    let dep = |id: &str| deployment(id, "web", &repo, "1.0.0");
    publish(&d, &[&dep("wfm-o1")]);
    let (code, log) = d.run_once();
    assert_eq!(code, 0, "{log}");
    assert_eq!(wfm.reports().len(), 3);

    // The WFM goes away; three deployments change (one removed, two installed).
    wfm.down();
    publish(&d, &[&dep("wfm-o2"), &dep("wfm-o3")]);
    let log_path = d.dir.join("daemon.log");
    let spawn = || {
        daemon(&d)
            .stderr(std::fs::File::create(&log_path).unwrap())
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut agent = spawn();
    // 2 removal + 2×3 install reports queued in the state file.
    wait_until("8 queued reports", Duration::from_secs(90), || {
        std::fs::read(d.dir.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|s| s["wfm"]["outbox"].as_array().map_or(0, Vec::len) == 8)
    });
    // Killed during the outage, no chance to flush anything.
    agent.kill().unwrap();
    agent.wait().unwrap();
    let outage_log = std::fs::read_to_string(&log_path).unwrap();
    let errors = problem_lines(&outage_log);
    assert_eq!(
        errors
            .iter()
            .filter(|l| l.contains("ERR_WFM_UNREACHABLE") || l.contains("127.0.0.1:"))
            .count(),
        1,
        "the outage is logged once:\n{outage_log}"
    );
    assert_eq!(outbox_len(&d), 8);

    wfm.up(false);
    let mut agent = spawn();
    wait_until("all reports delivered", Duration::from_secs(60), || {
        wfm.reports().len() == 11
    });
    // The WFM forgets the agent's token (401): one refresh and the call is retried.
    let tokens = wfm.count("POST", "/token");
    wfm.revoke_tokens();
    publish(&d, &[&dep("wfm-o2"), &dep("wfm-o3"), &dep("wfm-o4")]);
    wait_until(
        "the reports after the revocation",
        Duration::from_secs(60),
        || wfm.reports().len() == 14,
    );
    let unauthorised = unauthorised_status_calls(&wfm);
    assert_eq!(unauthorised, 1, "exactly one call met the revoked token");
    // At least the refresh after the 401; the 4 s token may also have expired in the
    // meantime on a loaded machine, which is a second, legitimate fetch.
    assert!(wfm.count("POST", "/token") > tokens);
    // The token expires while the agent runs (TTL 4 s): it is fetched again before use,
    // so no call meets an expired token (no further 401).
    let tokens = wfm.count("POST", "/token");
    std::thread::sleep(Duration::from_secs(5));
    publish(&d, &[&dep("wfm-o2"), &dep("wfm-o3")]);
    wait_until(
        "the reports after the expiry",
        Duration::from_secs(60),
        || wfm.reports().len() == 16,
    );
    assert!(
        wfm.count("POST", "/token") > tokens,
        "the expired token was renewed"
    );
    let unauthorised_after = unauthorised_status_calls(&wfm);
    assert_eq!(unauthorised_after, 1, "an expired token was used");
    agent.kill().unwrap();
    agent.wait().unwrap();

    let reports = wfm.reports();
    let of = |id: &str| -> Vec<String> {
        reports
            .iter()
            .filter(|r| r.starts_with(&format!("{id}:")))
            .map(|r| r.split(':').nth(1).unwrap().to_string())
            .collect()
    };
    let removed = ["Pending", "Installing", "Installed", "Removing", "Removed"];
    assert_eq!(of("wfm-o1"), removed, "{reports:?}");
    assert_eq!(of("wfm-o4"), removed, "{reports:?}");
    for id in ["wfm-o2", "wfm-o3"] {
        let installed = ["Pending", "Installing", "Installed"];
        assert_eq!(of(id), installed, "{id}: {reports:?}");
    }
    assert_eq!(outbox_len(&d), 0);
    assert_all_valid(&wfm);
    d.cleanup();
}

#[test]
fn downtime_window_is_silent_and_reports_wait() {
    let wfm = TestWfm::start(common::repo().join("target/e2e/wfm-downtime-srv"), 3600);
    let d = device("wfm-downtime", &wfm, "");
    let repo = d.publish_package("web", &compose(), "1.0.0");
    let dep = |id: &str| deployment(id, "web", &repo, "1.0.0");
    publish(&d, &[&dep("wfm-d1")]);
    let (code, log) = d.run_once();
    assert_eq!(code, 0, "{log}");
    assert_eq!(wfm.reports().len(), 3);
    publish(&d, &[&dep("wfm-d1"), &dep("wfm-d2")]);
    let now = now_unix();
    let window = format!(
        "  downtime:\n    - daily: \"{}-{}\"\n",
        hm(now - 120),
        hm(now + 600)
    );
    // The WFM is down too: in the window that must not matter.
    let mut wfm = wfm;
    wfm.down();
    write(&d, &wfm, &window);
    let before = wfm.requests().len();
    let (code, log) = d.run_once();
    assert_eq!(code, 0, "{log}");
    assert!(
        problem_lines(&log).is_empty(),
        "downtime must be silent:\n{log}"
    );
    assert_eq!(outbox_len(&d), 3);
    wfm.up(false);
    let (code, log) = d.run_once();
    assert_eq!(code, 0, "{log}");
    assert_eq!(wfm.requests().len(), before, "no WFM call in the window");
    // The window ends (config without it): everything arrives.
    write(&d, &wfm, "");
    let (code, log) = d.run_once();
    assert_eq!(code, 0, "{log}");
    assert_eq!(
        wfm.reports()[3..],
        ["wfm-d2:Pending", "wfm-d2:Installing", "wfm-d2:Installed"]
    );
    assert_all_valid(&wfm);
    d.cleanup();
}

/// One `run --once` that must converge (exit 0) while the WFM misbehaves, with a journal
/// line holding every needle; the queued reports must all still be there.
fn misbehaving(d: &Device, case: &str, needles: &[&str], queued: usize) {
    let started = Instant::now();
    let (code, log) = d.run_once();
    assert_eq!(code, 0, "{case}: convergence must continue:\n{log}");
    assert!(!log.contains("panicked"), "{case}:\n{log}");
    let lines = problem_lines(&log);
    assert!(
        lines.iter().any(|l| needles.iter().all(|n| l.contains(n))),
        "{case}: no journal line with {needles:?}:\n{log}"
    );
    assert_eq!(outbox_len(d), queued, "{case}: reports lost");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{case}: took {:?}",
        started.elapsed()
    );
}

#[test]
fn bad_wfm_answers_are_logged_and_lose_nothing() {
    let mut wfm = TestWfm::start(common::repo().join("target/e2e/wfm-bad-srv"), 3600);
    let d = device("wfm-bad", &wfm, "");
    let repo = d.publish_package("web", &compose(), "1.0.0");

    // Onboarding answer missing a field: nothing stored, the missing field named.
    wfm.set_mode("onboard-missing");
    let out = d.cmd(&["onboard"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("lacks clientSecret"), "{err}");
    assert!(!d.dir.join("wfm/onboarding.json").exists());
    wfm.set_mode("normal");
    let out = d.cmd(&["onboard"]);
    assert_success(&out);

    publish(&d, &[&deployment("wfm-b1", "web", &repo, "1.0.0")]);
    wfm.set_mode("500");
    // Retry-After (7 s) wins over the backoff (1 s here).
    misbehaving(&d, "500", &["answered 500", "next try in 7s"], 3);
    wfm.set_mode("token-html");
    misbehaving(
        &d,
        "token HTML",
        &["text/html", "instead of a JSON token"],
        3,
    );
    wfm.set_mode("token-401");
    misbehaving(&d, "token 401", &["401", "onboard --force"], 3);
    wfm.set_mode("slow");
    misbehaving(&d, "slow", &["no answer within the deadline"], 3);
    wfm.set_mode("huge");
    misbehaving(&d, "huge", &["byte cap"], 3);
    wfm.set_mode("normal");
    // A certificate the device's trust store accepts but not from the pinned CA.
    wfm.up(true);
    misbehaving(&d, "rogue certificate", &["TLS", "pinned"], 3);
    wfm.up(false);

    // A corrupted outbox entry: dropped with a clear line, the others delivered.
    let path = d.dir.join("state.json");
    let mut s: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    s["wfm"]["outbox"]
        .as_array_mut()
        .unwrap()
        .insert(1, serde_json::json!({"seq": "garbage", "body": 7}));
    std::fs::write(&path, serde_json::to_vec_pretty(&s).unwrap()).unwrap();
    let (code, log) = d.run_once();
    assert_eq!(code, 0, "{log}");
    let lines = problem_lines(&log);
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("outbox entry is unreadable"), "{log}");
    assert_eq!(
        wfm.reports(),
        ["wfm-b1:Pending", "wfm-b1:Installing", "wfm-b1:Installed"]
    );

    // A status endpoint answering 400 with a problem body: logged with the body, dropped.
    wfm.set_mode("status-400");
    publish(
        &d,
        &[
            &deployment("wfm-b1", "web", &repo, "1.0.0"),
            &deployment("wfm-b2", "web", &repo, "1.0.0"),
        ],
    );
    let (code, log) = d.run_once();
    assert_eq!(code, 0, "{log}");
    let refused: Vec<_> = problem_lines(&log)
        .into_iter()
        .filter(|l| {
            l.contains("refused status report") && l.contains("is not assigned to this device")
        })
        .collect();
    assert_eq!(refused.len(), 3, "{log}");
    assert_eq!(outbox_len(&d), 0);
    assert_all_valid(&wfm);
    d.cleanup();
}

/// Bench (run by `benches/wfm.sh`, not by CI): WFM traffic at idle, and delivering 100
/// reports queued during a 1-hour outage.
#[test]
#[ignore]
fn bench_wfm_idle_traffic_and_outbox_delivery() {
    let mut wfm = TestWfm::start(common::repo().join("target/e2e/wfm-bench-srv"), 3600);
    let d = device("wfm-bench", &wfm, "");
    let repo = d.publish_package("web", &compose(), "1.0.0");
    publish(&d, &[&deployment("wfm-x1", "web", &repo, "1.0.0")]);
    let (code, log) = d.run_once();
    assert_eq!(code, 0, "{log}");

    // 1. Idle: the daemon, converged, capabilities sent; poll_interval 1s.
    let before = wfm.requests().len();
    let mut agent = daemon(&d).stderr(Stdio::null()).spawn().unwrap();
    let idle = Duration::from_secs(30);
    std::thread::sleep(idle);
    agent.kill().unwrap();
    agent.wait().unwrap();
    let idle_requests = wfm.requests().len() - before;
    println!(
        "BENCH idle: {idle_requests} WFM requests in {} s with WFM configured (0 bytes), i.e. {} per hour; desired-state polls: 1 HEAD each (60/h at the default 60s)",
        idle.as_secs(),
        idle_requests as u64 * 3600 / idle.as_secs()
    );
    assert_eq!(idle_requests, 0);

    // 2. 100 reports queued during an outage (synthetic transitions of 34 deployments),
    //    delivered in one `run --once` after the WFM returns.
    wfm.down();
    let path = d.dir.join("state.json");
    let mut s: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let states = ["Pending", "Installing", "Installed"];
    let outbox: Vec<serde_json::Value> = (0..100u64)
        .map(|i| {
            let dep = format!("bench-{}", i / 3);
            let st = states[(i % 3) as usize];
            serde_json::json!({"seq": 1000 + i, "deployment_id": dep, "state": st, "queued": 0,
                "body": {"apiVersion": "deployment.margo/v1", "kind": "DeploymentStatus",
                         "deploymentId": dep, "status": {"state": st},
                         "components": [{"name": "web", "state": st}]}})
        })
        .collect();
    s["wfm"]["outbox"] = serde_json::Value::Array(outbox);
    s["wfm"]["next_seq"] = serde_json::json!(1100);
    std::fs::write(&path, serde_json::to_vec_pretty(&s).unwrap()).unwrap();
    wfm.up(false);
    let before = wfm.reports().len();
    let requests_before = wfm.requests().len();
    let t0 = Instant::now();
    let (code, log) = d.run_once();
    let took = t0.elapsed();
    assert_eq!(code, 0, "{log}");
    assert_eq!(wfm.reports().len() - before, 100);
    assert_eq!(outbox_len(&d), 0);
    assert_all_valid(&wfm);
    let status_requests: usize = wfm.requests()[requests_before..]
        .iter()
        .filter(|r| r["path"].as_str().unwrap_or("").ends_with("/status"))
        .count();
    println!(
        "BENCH outbox: 100 queued reports delivered in {} ms (whole `run --once`: start, one unchanged poll, token, 100 signed POSTs; {status_requests} status requests)",
        took.as_millis()
    );

    // 3. When does delivery start after a 1-hour outage? Simulated clock, default backoff
    //    (retry_min 5s, retry_max 10m, half fixed + half random), 10,000 outages.
    let (min, max) = (Duration::from_secs(5), Duration::from_secs(600));
    let mut waits = Vec::new();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..10_000 {
        let mut t = 0u64;
        let mut failures = 0;
        while t < 3600 {
            failures += 1;
            let b = margo_agent::wfm::backoff(min, max, failures).as_secs();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            t += b / 2 + seed % (b / 2 + 1);
        }
        waits.push(t - 3600);
    }
    waits.sort_unstable();
    println!(
        "BENCH after a 1 h outage (simulated): first retry {} s after the WFM is back (median; p95 {} s, max {} s), then the 100 reports as above",
        waits[waits.len() / 2],
        waits[waits.len() * 95 / 100],
        waits[waits.len() - 1]
    );
    d.cleanup();
}

#[test]
fn daemon_holds_desired_state_polls_outside_polling_hours() {
    // Registry-only mode (no wfm.url): the schedule applies to desired-state polls alone.
    let d = Device::new("wfm-hours");
    let repo = d.publish_package("web", &compose(), "1.0.0");
    publish(&d, &[&deployment("wfm-h1", "web", &repo, "1.0.0")]);
    let now = now_unix();
    let run_for = |hours: &str, secs: u64| {
        d.write_config(&format!("wfm:\n  polling_hours: \"{hours}\"\n"));
        let mut agent = daemon(&d).stderr(Stdio::piped()).spawn().unwrap();
        std::thread::sleep(Duration::from_secs(secs));
        agent.kill().unwrap();
        let out = agent.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Polling allowed only in two hours that start an hour from now.
    let log = run_for(&format!("{}-{}", hm(now + 3600), hm(now + 3 * 3600)), 4);
    assert!(
        d.container_ids().is_empty(),
        "polled outside polling hours:\n{log}"
    );
    assert!(!log.contains("desired state changed"), "{log}");
    // Now inside them.
    let log = run_for(&format!("{}-{}", hm(now - 600), hm(now + 3600)), 6);
    assert_eq!(d.container_ids().len(), 1, "{log}");
    d.cleanup();
}
