//! OTLP/HTTP metrics end to end: the real daemon exports to a receiver that decodes with the
//! official OpenTelemetry proto definitions (`tests/otlp_receiver.py`, PyPI
//! `opentelemetry-proto`), while it converges real workloads on the test bed's Podman.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure
mod common;

use common::{Bed, Device, deployment};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The receiver process (killed on drop).
struct Receiver {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    control: PathBuf,
    /// Extra arguments: certificate, key and client CA for HTTPS.
    tls: Vec<String>,
}

fn python() -> String {
    let out = Command::new(common::repo().join("tests/bed/otlp-venv.sh"))
        .output()
        .expect("run tests/bed/otlp-venv.sh");
    assert!(
        out.status.success(),
        "otlp-venv.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Receiver {
    fn new(dir: &Path) -> Receiver {
        let mut r = Receiver {
            child: None,
            port: common::free_port(),
            log: dir.join("otlp.jsonl"),
            control: dir.join("otlp-control.json"),
            tls: Vec::new(),
        };
        r.start();
        r
    }

    fn start(&mut self) {
        let child = Command::new(python())
            .arg(common::repo().join("tests/otlp_receiver.py"))
            .arg(self.port.to_string())
            .arg(&self.log)
            .arg(&self.control)
            .args(&self.tls)
            .stdout(Stdio::null())
            .spawn()
            .expect("start otlp_receiver.py");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "the OTLP receiver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits until the log holds more than `n` requests and `pred` holds for the last one.
    fn wait(&self, n: usize, within: Duration, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let all = self.requests();
            if all.len() > n && all.last().is_some_and(&pred) {
                return all;
            }
            assert!(
                Instant::now() < deadline,
                "no matching export within {within:?}; last request: {}",
                all.last().map(Value::to_string).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The next answers, in order.
    fn script(&self, answers: Value) {
        std::fs::write(&self.control, answers.to_string()).unwrap();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The daemon (`run`), stopped with SIGTERM on drop; its log is a file.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(dev: &Device, env: &[(&str, &str)]) -> Daemon {
        let log = dev.dir.join(format!("daemon-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&log);
        let child = Command::new(common::binary())
            .arg("--config")
            .arg(&dev.config)
            .arg("run")
            .env("MARGO_AGENT_LOG", "stderr")
            .envs(env.iter().copied())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start margo-agent run");
        Daemon { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .unwrap()
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let log = self.log();
        eprintln!("--- daemon log ---\n{log}");
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every metric of a decoded request (MessageToDict form), with the resource it belongs to.
fn resource_metrics(req: &Value) -> Vec<(&Value, &Value)> {
    let mut out = Vec::new();
    for rm in req["request"]["resourceMetrics"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for sm in rm["scopeMetrics"].as_array().into_iter().flatten() {
            for m in sm["metrics"].as_array().into_iter().flatten() {
                out.push((&rm["resource"], m));
            }
        }
    }
    out
}

/// Every metric of a decoded request.
fn metrics(req: &Value) -> Vec<&Value> {
    resource_metrics(req).into_iter().map(|(_, m)| m).collect()
}

fn metric<'a>(req: &'a Value, name: &str) -> Option<&'a Value> {
    metrics(req).into_iter().find(|m| m["name"] == name)
}

/// Every metric called `name`, with the resource it belongs to.
fn all_of<'a>(req: &'a Value, name: &str) -> Vec<(&'a Value, &'a Value)> {
    resource_metrics(req)
        .into_iter()
        .filter(|(_, m)| m["name"] == name)
        .collect()
}

/// The `margo.agent.deployments` point of the Installed state.
fn installed(req: &Value) -> Option<f64> {
    point_value(
        req,
        "margo.agent.deployments",
        "margo.deployment.state",
        "Installed",
    )
}

/// Asserts a command succeeded, showing its stderr when it did not.
fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The digest of the desired state the device applied last.
fn applied_digest(dev: &Device) -> String {
    dev.status()["source"]["applied"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The metric `name` of the container resource with `container.id` = `id`.
fn container_metric<'a>(req: &'a Value, id: &str, name: &str) -> Option<&'a Value> {
    all_of(req, name)
        .into_iter()
        .find(|(res, _)| attr_str(res, "container.id") == Some(id))
        .map(|(_, m)| m)
}

fn points(m: &Value) -> Vec<&Value> {
    ["sum", "gauge", "histogram"]
        .iter()
        .filter_map(|k| m[*k]["dataPoints"].as_array())
        .flatten()
        .collect()
}

fn attr<'a>(p: &'a Value, key: &str) -> Option<&'a Value> {
    p["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

fn attr_str<'a>(p: &'a Value, key: &str) -> Option<&'a str> {
    attr(p, key)?["stringValue"].as_str()
}

/// A number data point's value (asInt is a decimal string in the JSON mapping).
fn value(p: &Value) -> f64 {
    if let Some(d) = p["asDouble"].as_f64() {
        return d;
    }
    match &p["asInt"] {
        Value::String(s) => s.parse().unwrap(),
        Value::Null => 0.0, // proto3 JSON leaves a zero out
        v => v.as_f64().unwrap(),
    }
}

/// The value of the point of `name` whose attribute `key` is `val`.
fn point_value(req: &Value, name: &str, key: &str, val: &str) -> Option<f64> {
    let m = metric(req, name)?;
    points(m)
        .into_iter()
        .find(|p| attr_str(p, key) == Some(val))
        .map(value)
}

/// (kind, monotonic) of a metric.
fn kind(m: &Value) -> (&'static str, bool) {
    let cumulative =
        |k: &str| m[k]["aggregationTemporality"] == "AGGREGATION_TEMPORALITY_CUMULATIVE";
    if m.get("sum").is_some() {
        assert!(cumulative("sum"), "{m}");
        ("sum", m["sum"]["isMonotonic"] == true)
    } else if m.get("histogram").is_some() {
        assert!(cumulative("histogram"), "{m}");
        ("histogram", false)
    } else {
        assert!(m.get("gauge").is_some(), "{m}");
        ("gauge", false)
    }
}

fn resource_attr<'a>(req: &'a Value, key: &str) -> Option<&'a Value> {
    attr(&req["request"]["resourceMetrics"][0]["resource"], key)
}

fn compose(image: &str) -> String {
    format!(
        "services:\n\
         \x20 web:\n    image: {image}\n    command: [sh, -c, 'touch /tmp/ok; while true; do echo x > /dev/null; sleep 0.1; done']\n\
         \x20   healthcheck: {{test: [CMD, test, -f, /tmp/ok], interval: 1s, retries: 1}}\n\
         \x20 worker:\n    image: {image}\n    command: [sleep, '600']\n\
         \x20   environment: {{HTTP_OTEL_EXPORTER_OTLP_ENDPOINT: 'http://own-collector:4318'}}\n"
    )
}

fn env_of(container: &Value) -> Vec<String> {
    container["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// Every encoding the exporter offers, decoded by the official definitions; names, units,
/// kinds, attributes and values of agent, process and container metrics; workload injection.
#[test]
fn metrics_decode_with_the_official_proto_in_every_encoding() {
    let bed = Bed::get();
    let dev = Device::new("otel-main");
    dev.cleanup();
    let receiver = Receiver::new(&dev.dir);
    // The file names a collector that does not exist: the environment must win.
    dev.write_config(
        "telemetry:\n  endpoint: http://127.0.0.1:9\n  protocol: http/json\n  workloads:\n    http_endpoint: http://host.containers.internal:4318\n    protocol: http/protobuf\n",
    );
    let package = dev.publish_package("otel", &compose(bed.image()), "1.0.0");
    let dep = "otel-main-dep";
    let out = dev.publish_desired(&[&deployment(dep, "otel", &package, "1.0.0")], &[]);
    assert_success(&out);
    let endpoint = receiver.endpoint();
    let mut seen = 0;
    let mut last_cpu = 0.0;
    for (protocol, compression) in [
        ("http/protobuf", "none"),
        ("http/protobuf", "gzip"),
        ("http/json", "none"),
        ("http/json", "gzip"),
    ] {
        let daemon = Daemon::start(
            &dev,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", protocol),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", compression),
                ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "x-margo-test=combo%201"),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "deployment.environment=test%20bed",
                ),
            ],
        );
        // Two exports with both containers running and the web one healthy.
        let all = receiver.wait(seen + 1, Duration::from_secs(90), |r| {
            all_of(r, "container.cpu.time").len() == 2
                && all_of(r, "margo.container.healthy").len() == 1
                && all_of(r, "margo.container.healthy")
                    .iter()
                    .all(|(_, m)| value(points(m)[0]) == 1.0)
        });
        let all = receiver.wait(all.len(), Duration::from_secs(10), |_| true);
        daemon.stop();
        let (first, second) = (&all[all.len() - 2], &all[all.len() - 1]);
        seen = all.len();
        for r in [first, second] {
            let case = format!("{protocol}/{compression} request {}", r["n"]);
            assert_eq!(r["error"], Value::Null, "{case}: {r}");
            assert_eq!(r["path"], "/v1/metrics", "{case}");
            let ctype = if protocol == "http/json" {
                "application/json"
            } else {
                "application/x-protobuf"
            };
            assert_eq!(r["content_type"], ctype, "{case}");
            let enc = if compression == "gzip" { "gzip" } else { "" };
            assert_eq!(r["content_encoding"], enc, "{case}");
            assert_eq!(r["headers"]["x-margo-test"], "combo 1", "{case}");
            if compression == "gzip" {
                assert!(
                    r["wire_bytes"].as_u64() < r["raw_bytes"].as_u64(),
                    "{case}: gzip shrinks"
                );
            }
        }
        let r = second;
        // Resource.
        let res = |k: &str| resource_attr(r, k).and_then(|v| v["stringValue"].as_str());
        assert_eq!(res("service.name"), Some("margo-agent"));
        assert_eq!(res("service.version"), Some(env!("CARGO_PKG_VERSION")));
        assert_eq!(res("margo.device.id"), Some("otel-main"));
        assert_eq!(res("os.type"), Some("linux"));
        assert!(res("host.name").is_some_and(|h| !h.is_empty()));
        assert_eq!(res("deployment.environment"), Some("test bed"));
        // Names, units, kinds.
        for (name, unit, k, monotonic) in [
            ("margo.agent.reconciles", "{reconcile}", "sum", true),
            ("margo.agent.reconcile.duration", "s", "histogram", false),
            ("margo.agent.desired_state.polls", "{poll}", "sum", true),
            ("margo.agent.desired_state.bytes", "By", "sum", true),
            ("margo.agent.deployments", "{deployment}", "sum", false),
            ("margo.agent.status_outbox.length", "{status}", "sum", false),
            ("margo.agent.desired_state.revision", "1", "gauge", false),
            ("process.cpu.time", "s", "sum", true),
            ("process.memory.usage", "By", "sum", false),
            ("process.memory.virtual", "By", "sum", false),
            (
                "process.unix.file_descriptor.count",
                "{file_descriptor}",
                "sum",
                false,
            ),
            ("process.uptime", "s", "gauge", false),
            ("container.cpu.time", "s", "sum", true),
            ("container.memory.usage", "By", "sum", false),
            ("container.network.io", "By", "sum", true),
            ("container.disk.io", "By", "sum", true),
            ("container.uptime", "s", "gauge", false),
            ("margo.container.healthy", "1", "gauge", false),
        ] {
            let m =
                metric(r, name).unwrap_or_else(|| panic!("{protocol}/{compression}: no {name}"));
            assert_eq!(m["unit"], unit, "{name}");
            assert_eq!(kind(m), (k, monotonic), "{name}");
            assert!(
                !m["description"].as_str().unwrap_or("").is_empty(),
                "{name}"
            );
        }
        // Agent values.
        let installed = installed(r);
        assert_eq!(installed, Some(1.0));
        let outbox = metric(r, "margo.agent.status_outbox.length").unwrap();
        assert_eq!(value(points(outbox)[0]), 0.0);
        let rev = points(metric(r, "margo.agent.desired_state.revision").unwrap())[0];
        assert!(
            attr_str(rev, "margo.revision.digest")
                .unwrap()
                .starts_with("sha256:")
        );
        let reconciles: f64 = points(metric(r, "margo.agent.reconciles").unwrap())
            .iter()
            .map(|p| value(p))
            .sum();
        assert!(reconciles >= 1.0);
        let hist = points(metric(r, "margo.agent.reconcile.duration").unwrap());
        let count: f64 = hist
            .iter()
            .map(|p| p["count"].as_str().unwrap().parse::<f64>().unwrap())
            .sum();
        assert_eq!(count, reconciles, "the histogram counts every reconcile");
        let polls: f64 = points(metric(r, "margo.agent.desired_state.polls").unwrap())
            .iter()
            .map(|p| value(p))
            .sum();
        assert!(polls >= 1.0);
        // Process values.
        let cpu = |r: &Value| -> f64 {
            points(metric(r, "process.cpu.time").unwrap())
                .iter()
                .map(|p| value(p))
                .sum()
        };
        assert!(
            cpu(second) >= cpu(first),
            "process CPU time never decreases"
        );
        assert!(point_value(r, "process.cpu.time", "cpu.mode", "user").is_some());
        assert!(value(points(metric(r, "process.memory.usage").unwrap())[0]) > 1e6);
        assert!(value(points(metric(r, "process.unix.file_descriptor.count").unwrap())[0]) >= 3.0);
        // Cumulative series keep their start time between exports.
        let start = |r: &Value, name: &str| {
            points(metric(r, name).unwrap())[0]["startTimeUnixNano"].clone()
        };
        assert_eq!(
            start(first, "margo.agent.reconciles"),
            start(second, "margo.agent.reconciles")
        );
        // Container values, one series per running container, with its attributes.
        let ids = dev.container_ids();
        assert_eq!(ids.len(), 2);
        for (name, id) in &ids {
            let one = |r: &Value, metric: &str| {
                let m = container_metric(r, id, metric)
                    .unwrap_or_else(|| panic!("no {metric} for {name}"));
                value(points(m)[0])
            };
            let (res, _) = all_of(r, "container.memory.usage")
                .into_iter()
                .find(|(res, _)| attr_str(res, "container.id") == Some(id))
                .unwrap();
            assert!(one(r, "container.memory.usage") > 0.0, "{name}: memory > 0");
            assert_eq!(attr_str(res, "container.name"), Some(name.as_str()));
            assert_eq!(attr_str(res, "margo.deployment.id"), Some(dep));
            assert_eq!(attr_str(res, "margo.component"), Some("otel"));
            assert_eq!(attr_str(res, "margo.device.id"), Some("otel-main"));
            assert!(
                attr_str(res, "container.image.name")
                    .unwrap()
                    .contains("busybox")
            );
            assert!(attr_str(res, "margo.compose.project").is_some());
            assert!(one(r, "container.uptime") > 0.0);
            let start = |r: &Value| {
                points(container_metric(r, id, "container.cpu.time").unwrap())[0]
                    ["startTimeUnixNano"]
                    .clone()
            };
            assert_eq!(start(first), start(second), "{name}: one cumulative series");
            if attr_str(res, "margo.compose.service") == Some("web") {
                let cpu = |r: &Value| one(r, "container.cpu.time");
                assert!(cpu(second) > cpu(first), "{name}: CPU time grows");
                assert!(
                    cpu(second) >= last_cpu,
                    "{name}: continuous across agent restarts"
                );
                last_cpu = cpu(second);
            }
            let net = container_metric(r, id, "container.network.io").unwrap();
            for dir in ["receive", "transmit"] {
                let n = points(net)
                    .into_iter()
                    .filter(|p| attr_str(p, "network.io.direction") == Some(dir))
                    .count();
                assert_eq!(n, 1, "{name}: network.io {dir}");
            }
        }
    }
    // Workload injection: the configured collector, unless the compose file names its own.
    for (name, _) in dev.container_ids() {
        let env = env_of(&bed.inspect(&name));
        if name.contains("worker") {
            assert!(
                env.contains(&"HTTP_OTEL_EXPORTER_OTLP_ENDPOINT=http://own-collector:4318".into()),
                "{env:?}"
            );
        } else {
            assert!(
                env.contains(
                    &"HTTP_OTEL_EXPORTER_OTLP_ENDPOINT=http://host.containers.internal:4318".into()
                ),
                "{env:?}"
            );
        }
        assert!(
            env.contains(&"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf".into()),
            "{env:?}"
        );
        assert!(!env.iter().any(|e| e.starts_with("GRPC_OTEL")), "{env:?}");
    }
    dev.cleanup();
}

fn reconciles(r: &Value) -> f64 {
    metric(r, "margo.agent.reconciles")
        .map(|m| points(m).iter().map(|p| value(p)).sum())
        .unwrap_or(0.0)
}

fn wait_installed(dev: &Device, dep: &str, digest_not: Option<&str>, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let s = dev.status();
        let d = &s["deployments"][dep];
        let applied = s["source"]["applied"].as_str().unwrap_or("");
        if d["phase"] == "Installed" && digest_not != Some(applied) && !applied.is_empty() {
            return s;
        }
        assert!(Instant::now() < deadline, "{dep} not installed: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The collector away for several intervals, then back; then scripted bad answers (429 with
/// Retry-After, partial success, 400, HTML, a huge body, a dropped connection). The daemon
/// never stops converging, memory stays flat, exports resume with continuous values, and
/// each problem is logged once.
#[test]
fn collector_outages_and_bad_answers_do_not_affect_convergence() {
    let bed = Bed::get();
    let dev = Device::new("otel-outage");
    dev.cleanup();
    let mut receiver = Receiver::new(&dev.dir);
    let endpoint = receiver.endpoint();
    dev.write_config(&format!(
        "telemetry:\n  endpoint: {endpoint}\n  export_interval: 1s\n"
    ));
    let app = |n: &str| {
        format!(
            "services:\n  app:\n    image: {}\n    command: [sleep, '{n}']\n",
            bed.image()
        )
    };
    let dep = "otel-outage-dep";
    let publish = |n: &str, rev: &str| {
        let package = dev.publish_package("out", &app(n), rev);
        let out = dev.publish_desired(&[&deployment(dep, "out", &package, rev)], &[]);
        assert_success(&out);
    };
    publish("600", "1.0.0");
    let mut daemon = Daemon::start(&dev, &[]);
    let all = receiver.wait(0, Duration::from_secs(60), |r| installed(r) == Some(1.0));
    let before = all.last().unwrap().clone();
    // Injected without a workloads section: the agent's own endpoint.
    let c = &bed.containers("org.margo.deployment-id", dep)[0];
    let env = env_of(&bed.inspect(c["Names"][0].as_str().unwrap()));
    assert!(
        env.contains(&format!("HTTP_OTEL_EXPORTER_OTLP_ENDPOINT={endpoint}")),
        "{env:?}"
    );

    // Collector down for several intervals while the desired state changes.
    receiver.stop();
    let rss_down = daemon.rss_kib();
    let applied = applied_digest(&dev);
    publish("601", "1.0.1");
    wait_installed(&dev, dep, Some(&applied), Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(5));
    assert!(daemon.alive(), "the daemon survived the outage");
    let rss_after = daemon.rss_kib();
    assert!(
        rss_after < rss_down + 2048,
        "RSS grew from {rss_down} KiB to {rss_after} KiB while the collector was away"
    );
    receiver.start();
    let n = receiver.requests().len();
    let all = receiver.wait(n, Duration::from_secs(30), |r| r["error"].is_null());
    let after = all.last().unwrap();
    assert!(
        reconciles(after) > reconciles(&before),
        "counts kept growing while away"
    );
    let start = |r: &Value| {
        points(metric(r, "margo.agent.reconciles").unwrap())[0]["startTimeUnixNano"].clone()
    };
    assert_eq!(start(&before), start(after), "the same cumulative series");
    let log = daemon.log();
    assert_eq!(
        log.matches("metrics export failed").count(),
        1,
        "an outage is logged once:\n{log}"
    );
    assert!(log.contains("works again"), "{log}");

    // 429 with Retry-After: 3 → the next attempt waits 3 s (the interval is 1 s).
    receiver.script(serde_json::json!([{"status": 429, "headers": {"Retry-After": "3"}}]));
    let n = receiver.requests().len();
    let all = receiver.wait(n, Duration::from_secs(10), |r| r["status"] == 429);
    let t429 = all.last().unwrap()["t"].as_f64().unwrap();
    let all = receiver.wait(all.len(), Duration::from_secs(10), |_| true);
    let gap = all.last().unwrap()["t"].as_f64().unwrap() - t429;
    assert!(
        gap >= 2.9,
        "Retry-After honoured: next attempt {gap:.2} s after the 429"
    );

    // Partial success: logged, not retried (the next attempt comes one interval later, and
    // no retry is scheduled: no "retrying in" line after the partial answer).
    let logged = daemon.log().len();
    receiver.script(serde_json::json!([{"partial": [5, "unit {reconcile} refused"]}]));
    let n = receiver.requests().len();
    let all = receiver.wait(n + 1, Duration::from_secs(10), |_| true);
    let k = all.len();
    let gap = all[k - 1]["t"].as_f64().unwrap() - all[k - 2]["t"].as_f64().unwrap();
    assert!(gap >= 0.9, "partial success is not retried ({gap:.2} s)");
    let log = daemon.log();
    assert!(log.contains("rejected 5 data point(s)"), "{log}");
    assert!(
        !log[logged..].contains("retrying in"),
        "a partial success was retried:\n{}",
        &log[logged..]
    );

    // 400 with a partial-success body, HTML error pages, a huge body, a dropped connection.
    receiver.script(serde_json::json!([
        {"status": 400, "partial": [1, "bad"]},
        {"status": 500, "body": "<html><body>\n<h1>Internal Server Error</h1></body></html>", "content_type": "text/html"},
        {"status": 200, "body_size": 20_000_000, "content_type": "text/html"},
        {"status": 503, "body_size": 20_000_000, "content_type": "text/html"},
        {"close": true},
    ]));
    let applied = applied_digest(&dev);
    publish("602", "1.0.2");
    wait_installed(&dev, dep, Some(&applied), Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&receiver.control).unwrap().trim() != "[]" {
        assert!(
            Instant::now() < deadline,
            "the scripted answers were not all used"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let n = receiver.requests().len();
    receiver.wait(n, Duration::from_secs(30), |r| r["status"] == 200);
    assert!(daemon.alive());
    assert!(
        daemon.rss_kib() < rss_down + 4096,
        "no body was buffered whole"
    );
    let log = daemon.stop();
    assert!(log.contains("answered HTTP 400"), "{log}");
    assert!(
        log.contains("Internal Server Error") || log.contains("<html>"),
        "{log}"
    );
    assert!(!log.contains("panicked"));
    dev.cleanup();
}

/// Malformed settings stop the agent at start, naming the variable; a collector that does
/// not speak TLS is an export failure, never a convergence one; nothing configured means
/// nothing injected.
#[test]
fn bad_settings_are_named_and_tls_errors_do_not_affect_convergence() {
    let bed = Bed::get();
    let dev = Device::new("otel-bad");
    dev.cleanup();
    for (var, val, needle) in [
        ("OTEL_EXPORTER_OTLP_HEADERS", "api-key", "key=value"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "not supported"),
        (
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
            "http/thrift",
            "http/thrift",
        ),
        ("OTEL_METRIC_EXPORT_INTERVAL", "-5", "milliseconds"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "ten", "milliseconds"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "br", "gzip"),
        ("OTEL_RESOURCE_ATTRIBUTES", "a=%G1", "percent"),
    ] {
        let (code, log) = dev.run_once_env(&[(var, val)]);
        let line =
            common::assert_one_problem(&format!("{var}={val}"), (code, &log), 3, &[var, needle]);
        assert!(line.contains("cannot start"), "{line}");
    }
    // A certificate file that does not exist is found when the daemon starts its exporter.
    let out = dev.cmd_env(
        &["run"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://127.0.0.1:9"),
            (
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                "/nonexistent/collector-ca.pem",
            ),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("OTEL_EXPORTER_OTLP_CERTIFICATE")
            && err.contains("/nonexistent/collector-ca.pem"),
        "{err}"
    );

    // Nothing configured: nothing injected.
    let package = dev.publish_package(
        "bad",
        &format!(
            "services:\n  app:\n    image: {}\n    command: [sleep, '600']\n",
            bed.image()
        ),
        "1.0.0",
    );
    let dep = "otel-bad-dep";
    let out = dev.publish_desired(&[&deployment(dep, "bad", &package, "1.0.0")], &[]);
    assert!(out.status.success());
    let (code, log) = dev.run_once();
    assert_eq!(code, 0, "{log}");
    let c = &bed.containers("org.margo.deployment-id", dep)[0];
    let env = env_of(&bed.inspect(c["Names"][0].as_str().unwrap()));
    assert!(!env.iter().any(|e| e.contains("OTEL")), "{env:?}");
    let hash = c["Labels"]["com.docker.compose.config-hash"].clone();

    // TLS to a collector that speaks plain HTTP: the export fails, the apply does not.
    let receiver = Receiver::new(&dev.dir);
    dev.write_config(&format!(
        "telemetry:\n  endpoint: https://127.0.0.1:{}\n  export_interval: 1s\n",
        receiver.port
    ));
    let daemon = Daemon::start(&dev, &[]);
    let applied = applied_digest(&dev);
    let package = dev.publish_package(
        "bad",
        &format!(
            "services:\n  app:\n    image: {}\n    command: [sleep, '601']\n",
            bed.image()
        ),
        "1.0.1",
    );
    let out = dev.publish_desired(&[&deployment(dep, "bad", &package, "1.0.1")], &[]);
    assert!(out.status.success());
    wait_installed(&dev, dep, Some(&applied), Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3));
    let log = daemon.stop();
    assert_eq!(log.matches("metrics export failed").count(), 1, "{log}");
    // An https exporter never completes a request with a plain-HTTP collector.
    assert!(receiver.requests().is_empty(), "{:?}", receiver.requests());
    // The new container got the collector variable; its config hash moved with it.
    let c = &bed.containers("org.margo.deployment-id", dep)[0];
    assert_ne!(c["Labels"]["com.docker.compose.config-hash"], hash);
    dev.cleanup();
}

/// A collector behind TLS with its own CA (`OTEL_EXPORTER_OTLP_CERTIFICATE`, not in the
/// agent's trust store) that requires a client certificate (`…_CLIENT_CERTIFICATE`,
/// `…_CLIENT_KEY`): exports arrive; without the client certificate the handshake fails, which
/// is logged once and changes nothing else.
#[test]
fn mutual_tls_to_the_collector() {
    let bed = Bed::get();
    let dev = Device::new("otel-tls");
    let ca = bed.var("MARGO_TB_CA");
    let tls_dir = Path::new(ca).parent().unwrap();
    // A client certificate signed by the bed's CA.
    let key = dev.dir.join("client.key");
    let cert = dev.dir.join("client.pem");
    let csr = dev.dir.join("client.csr");
    let sh = format!(
        "openssl ecparam -name prime256v1 -genkey -noout -out {key} && \
         openssl req -new -key {key} -subj /CN=margo-agent-otel -out {csr} && \
         printf 'basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n' > {ext} && \
         openssl x509 -req -in {csr} -CA {ca} -CAkey {cakey} -CAcreateserial -CAserial {serial} -days 1 -extfile {ext} -out {cert}",
        key = key.display(),
        csr = csr.display(),
        cert = cert.display(),
        cakey = bed.var("MARGO_TB_CA_KEY"),
        serial = dev.dir.join("ca.srl").display(),
        ext = dev.dir.join("client.ext").display(),
    );
    let out = Command::new("sh").args(["-c", &sh]).output().unwrap();
    assert_success(&out);
    let mut receiver = Receiver {
        child: None,
        port: common::free_port(),
        log: dev.dir.join("otlp.jsonl"),
        control: dev.dir.join("otlp-control.json"),
        tls: [
            tls_dir.join("server.pem"),
            tls_dir.join("server.key"),
            PathBuf::from(ca),
        ]
        .iter()
        .map(|p| p.display().to_string())
        .collect(),
    };
    receiver.start();
    // The agent's own trust store does not hold the bed's CA.
    let config = std::fs::read_to_string(&dev.config).unwrap();
    std::fs::write(
        &dev.config,
        config.replace(&format!("extra_ca: [{ca}]"), "extra_ca: []"),
    )
    .unwrap();
    let endpoint = format!("https://127.0.0.1:{}", receiver.port);
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let base = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
        ("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", ca),
    ];
    let mut env = base.to_vec();
    env.extend([
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", cert.as_str()),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", key.as_str()),
    ]);
    let daemon = Daemon::start(&dev, &env);
    let all = receiver.wait(1, Duration::from_secs(30), |r| r["error"].is_null());
    assert!(metric(all.last().unwrap(), "process.cpu.time").is_some());
    let log = daemon.stop();
    assert!(!log.contains("metrics export"), "{log}");

    let n = receiver.requests().len();
    let daemon = Daemon::start(&dev, &base);
    std::thread::sleep(Duration::from_secs(4));
    let log = daemon.stop();
    assert_eq!(
        receiver.requests().len(),
        n,
        "no export without the client certificate"
    );
    assert_eq!(log.matches("metrics export failed").count(), 1, "{log}");

    // A certificate rustls cannot use (X.509 v1, no extensions) is a startup error naming the
    // variable, not a crash at the first export.
    let v1 = dev.dir.join("client-v1.pem");
    let sh = format!(
        "openssl x509 -req -in {csr} -CA {ca} -CAkey {cakey} -CAserial {serial} -days 1 -out {v1}",
        csr = csr.display(),
        cakey = bed.var("MARGO_TB_CA_KEY"),
        serial = dev.dir.join("ca.srl").display(),
        v1 = v1.display(),
    );
    let out = Command::new("sh").args(["-c", &sh]).output().unwrap();
    assert_success(&out);
    let v1 = v1.display().to_string();
    let mut env = base.to_vec();
    env.extend([
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", v1.as_str()),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", key.as_str()),
    ]);
    let out = dev.cmd_env(&["run"], &env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"),
        "{err}"
    );
    eprintln!("{err}");
}

/// SIGHUP re-reads the telemetry settings: exports move to the new collector; a config with a
/// bad telemetry value is refused and the running export goes on.
#[test]
fn reload_moves_the_export_and_refuses_bad_settings() {
    let dev = Device::new("otel-reload");
    let a = Receiver::new(&dev.dir);
    let b_dir = dev.dir.join("b");
    std::fs::create_dir_all(&b_dir).unwrap();
    let b = Receiver::new(&b_dir);
    let base = std::fs::read_to_string(&dev.config).unwrap();
    let with = |extra: &str| std::fs::write(&dev.config, format!("{base}{extra}")).unwrap();
    with(&format!(
        "telemetry:\n  endpoint: {}\n  export_interval: 1s\n",
        a.endpoint()
    ));
    let daemon = Daemon::start(&dev, &[]);
    a.wait(0, Duration::from_secs(30), |r| r["error"].is_null());
    with(&format!(
        "telemetry:\n  endpoint: {}\n  export_interval: 1s\n",
        b.endpoint()
    ));
    let hup = || {
        let ok = Command::new("kill")
            .args(["-HUP", &daemon.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    hup();
    b.wait(0, Duration::from_secs(30), |r| r["error"].is_null());
    let n = a.requests().len();
    with(&format!(
        "telemetry:\n  endpoint: {}\n  protocol: grpc\n",
        a.endpoint()
    ));
    hup();
    let m = b.requests().len();
    b.wait(m + 1, Duration::from_secs(30), |r| r["error"].is_null());
    assert!(
        a.requests().len() <= n + 1,
        "a refused reload does not move the export"
    );
    let log = daemon.stop();
    assert!(
        log.contains("telemetry.protocol") && log.contains("keeping the running config"),
        "{log}"
    );
}
