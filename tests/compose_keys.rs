#![allow(clippy::unwrap_used)]
//! Compose service keys against the test bed's real Podman: each test loads a compose file
//! the way the agent does (`compose::load`), converges it with `compose::apply::converge`,
//! then reads `podman inspect` (or runs a command in the container) to check the exact effect
//! of each key. Every test uses its own project name, so they can run in parallel, and a
//! [`Cleanup`] guard removes its containers, networks and volumes even when an assertion
//! fails.

mod common;

use common::{Bed, engine};
use margo_agent::compose::apply;
use margo_agent::compose::{self, CreateContext, LoadOptions, Project};
use margo_agent::podman::{Podman, Timeouts};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The bed's image is already in Podman's storage: nothing is pulled.
/// Removes a test's project (containers, networks), its volumes, what the test created
/// outside it (external networks and volumes) and its package directory, on drop.
struct Cleanup {
    project: String,
    dir: PathBuf,
    /// podman CLI commands run last (`["network", "rm", "-f", "x"]`).
    extra: Vec<Vec<String>>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let bed = Bed::get();
        if let Ok(mut podman) = connect() {
            let _ = apply::remove_project(&mut podman, &self.project, &[]);
        }
        let label = format!("label=com.docker.compose.project={}", self.project);
        let out = bed.podman(&["volume", "ls", "-q", "--filter", &label]);
        for v in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = bed.podman(&["volume", "rm", "-f", v.trim()]);
        }
        for cmd in &self.extra {
            let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
            let _ = bed.podman(&args);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn connect() -> Result<Podman, margo_agent::podman::PodmanError> {
    Podman::connect(
        Path::new(Bed::get().var("MARGO_TB_PODMAN_SOCK")),
        Timeouts {
            call: Duration::from_secs(30),
            pull: Duration::from_secs(120),
            stop: Duration::from_secs(5),
        },
    )
}

/// A package directory for `project` holding `compose.yaml` (`$IMAGE` replaced by the bed's
/// image) and `files`, and the guard that removes everything again.
fn package(project: &str, yaml: &str, files: &[(&str, &str)]) -> (Cleanup, PathBuf) {
    let dir = common::repo().join("target/compose-keys").join(project);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("compose.yaml"),
        yaml.replace("$IMAGE", Bed::get().image()),
    )
    .unwrap();
    for (rel, content) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    let guard = Cleanup {
        project: project.to_string(),
        dir: dir.clone(),
        extra: Vec::new(),
    };
    (guard, dir)
}

/// Creates an `external` network or volume (`kind`) outside the project; the guard removes it.
fn create_external(guard: &mut Cleanup, kind: &str, name: &str) {
    guard
        .extra
        .push([kind, "rm", "-f", name].map(String::from).to_vec());
    let out = Bed::get().podman(&[kind, "create", name]);
    assert!(
        out.status.success(),
        "{kind} create {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Replaces the package's `compose.yaml` (`$IMAGE` replaced as by [`package`]).
fn rewrite(dir: &Path, yaml: &str) {
    std::fs::write(
        dir.join("compose.yaml"),
        yaml.replace("$IMAGE", Bed::get().image()),
    )
    .unwrap();
}

fn load(project: &str, dir: &Path) -> Project {
    let no_vars = |_: &str| None;
    let opts = LoadOptions {
        project_name: Some(project),
        variables: &no_vars,
        profiles: &[],
    };
    match compose::load(dir, &opts) {
        Ok(l) => l.project,
        Err(e) => panic!("{project}: load failed: {e}"),
    }
}

/// Loads and converges; `wait` as a component's `wait`/`timeout`.
fn converge(project: &str, dir: &Path, wait: Option<Duration>) -> (Project, Podman) {
    let p = load(project, dir);
    let mut podman = connect().unwrap();
    if let Err(e) = engine::converge(&mut podman, &p, &CreateContext::default(), wait) {
        panic!("{project}: converge failed: {e}");
    }
    (p, podman)
}

fn inspect(podman: &mut Podman, container: &str) -> Value {
    podman.inspect_container_json(container).unwrap()
}

/// Runs `sh -c script` in the container; returns its trimmed stdout.
fn exec(container: &str, script: &str) -> String {
    let out = Bed::get().podman(&["exec", container, "sh", "-c", script]);
    assert!(
        out.status.success(),
        "exec {script:?} in {container}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A subnet inside this bed's pool for networks (the bed's `MARGO_TB_SUBNET_POOL`, a /16),
/// so static addresses never collide with another bed's bridges.
fn bed_subnet(third_octet: u8) -> (String, String) {
    let pool = Bed::get().var("MARGO_TB_SUBNET_POOL");
    let base: Vec<&str> = pool.split('/').next().unwrap().split('.').collect();
    let prefix = format!("{}.{}.{third_octet}", base[0], base[1]);
    (format!("{prefix}.0/24"), prefix)
}

fn env_list(c: &Value) -> Vec<String> {
    c["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn process_keys_reach_the_container() {
    // Fixture: one service using the keys that shape the process: command, entrypoint
    // (cleared), environment over env_file, user, working_dir, hostname, domainname, labels,
    // annotations, stop_signal, stop_grace_period, init, read_only, tty, stdin_open,
    // extra_hosts, dns, dns_search, dns_opt, restart on-failure:3; a second service in an
    // inactive profile must not be created; x-* keys are ignored.
    let project = "mkeys-process";
    let yaml = "\
name: ignored-because-the-caller-names-the-project
x-note: {anything: goes}
services:
  app:
    image: $IMAGE
    entrypoint: []
    command: [sleep, '300']
    environment: {FROM_ENV: set, SHARED: from-environment}
    env_file: [app.env]
    user: '1000:1000'
    working_dir: /tmp
    hostname: apphost
    domainname: example.org
    labels: {tier: test}
    annotations: {org.example/note: hello}
    stop_signal: SIGINT
    stop_grace_period: 7s
    init: true
    read_only: true
    tty: true
    stdin_open: true
    extra_hosts: ['gateway.local=10.9.8.7']
    dns: [10.9.8.1]
    dns_search: [example.org]
    dns_opt: ['ndots:2']
    restart: on-failure:3
    x-extra: ignored
  debug:
    image: $IMAGE
    command: [sleep, '300']
    profiles: [debug]
";
    let (_guard, dir) = package(
        project,
        yaml,
        &[("app.env", "FROM_FILE=file\nSHARED=from-file\n")],
    );
    let (p, mut podman) = converge(project, &dir, None);
    assert!(p.service("debug").is_none());
    assert!(
        !podman.container_exists("mkeys-process-debug-1").unwrap(),
        "a service of an inactive profile must not be created"
    );
    let name = "mkeys-process-app-1";
    let c = inspect(&mut podman, name);
    let cfg = &c["Config"];
    let host = &c["HostConfig"];
    let env = env_list(&c);
    for e in ["FROM_ENV=set", "FROM_FILE=file", "SHARED=from-environment"] {
        assert!(env.contains(&e.to_string()), "{e} missing from {env:?}");
    }
    assert_eq!(cfg["Cmd"], json!(["sleep", "300"]));
    let entrypoint = &cfg["Entrypoint"];
    assert!(
        entrypoint.is_null() || *entrypoint == json!("") || *entrypoint == json!([]),
        "entrypoint cleared: {entrypoint}"
    );
    assert_eq!(cfg["User"], "1000:1000");
    assert_eq!(cfg["WorkingDir"], "/tmp");
    assert_eq!(cfg["Hostname"], "apphost");
    assert_eq!(exec(name, "hostname"), "apphost");
    assert_eq!(exec(name, "cat /proc/sys/kernel/domainname"), "example.org");
    assert_eq!(exec(name, "id -u; id -g"), "1000\n1000");
    assert_eq!(cfg["Labels"]["tier"], "test");
    assert_eq!(cfg["Annotations"]["org.example/note"], "hello");
    // Podman 4 reports the stop signal as a number, Podman 5 as a name.
    assert!(
        cfg["StopSignal"] == json!(2) || cfg["StopSignal"] == json!("SIGINT"),
        "{}",
        cfg["StopSignal"]
    );
    assert_eq!(cfg["StopTimeout"], json!(7));
    assert_eq!(host["Init"], json!(true));
    assert_eq!(host["ReadonlyRootfs"], json!(true));
    assert_eq!(cfg["Tty"], json!(true));
    assert_eq!(cfg["OpenStdin"], json!(true));
    assert_eq!(host["ExtraHosts"], json!(["gateway.local:10.9.8.7"]));
    assert_eq!(host["Dns"], json!(["10.9.8.1"]));
    assert_eq!(host["DnsSearch"], json!(["example.org"]));
    assert_eq!(host["DnsOptions"], json!(["ndots:2"]));
    let resolv = exec(name, "cat /etc/resolv.conf");
    assert!(resolv.contains("nameserver 10.9.8.1"), "{resolv}");
    assert!(resolv.contains("search example.org"), "{resolv}");
    assert!(resolv.contains("ndots:2"), "{resolv}");
    assert!(exec(name, "cat /etc/hosts").contains("10.9.8.7"));
    assert_eq!(
        host["RestartPolicy"],
        json!({"Name": "on-failure", "MaximumRetryCount": 3})
    );
    // read_only: the root filesystem refuses writes.
    let out = Bed::get().podman(&["exec", name, "sh", "-c", "touch /rootfs-write"]);
    assert!(!out.status.success(), "read_only root accepted a write");
}

#[test]
fn storage_keys_mount_what_they_say() {
    // Fixture: ports (host IP, udp, a range, an unpublished port), a read-only bind from the
    // package, a named volume with local driver options, an external volume, tmpfs in short
    // and long form with size and mode, and a secret and a config from package files.
    let project = "mkeys-storage";
    let yaml = "\
services:
  app:
    image: $IMAGE
    command: [sleep, '300']
    ports:
      - '127.0.0.1:18931:80'
      - '18932:53/udp'
      - '18933-18934:8000-8001'
      - {target: 9000, published: '18935', protocol: udp, host_ip: 127.0.0.1}
    volumes:
      - ./conf:/conf:ro
      - data:/data
      - {type: volume, source: shared, target: /shared, read_only: true}
      - {type: tmpfs, target: /scratch, tmpfs: {size: 2m, mode: 1770}}
    tmpfs: ['/run/app:size=1m,mode=700']
    secrets: [token]
    configs: [{source: settings, target: /etc/app/settings.ini}]
volumes:
  data:
    driver: local
    driver_opts: {type: tmpfs, device: tmpfs, o: uid=1000}
  shared:
    external: true
    name: mkeys-storage-external
secrets:
  token: {file: ./secrets/token.txt}
configs:
  settings: {file: settings.ini}
";
    let (mut guard, dir) = package(
        project,
        yaml,
        &[
            ("conf/app.conf", "hello"),
            ("secrets/token.txt", "s3cret"),
            ("settings.ini", "[a]\nb=1\n"),
        ],
    );
    create_external(&mut guard, "volume", "mkeys-storage-external");
    let (_p, mut podman) = converge(project, &dir, None);
    let name = "mkeys-storage-app-1";
    let c = inspect(&mut podman, name);
    let ports = &c["HostConfig"]["PortBindings"];
    assert_eq!(
        ports["80/tcp"],
        json!([{"HostIp": "127.0.0.1", "HostPort": "18931"}])
    );
    assert_eq!(ports["53/udp"][0]["HostPort"], "18932");
    assert_eq!(ports["8000/tcp"][0]["HostPort"], "18933");
    assert_eq!(ports["8001/tcp"][0]["HostPort"], "18934");
    assert_eq!(
        ports["9000/udp"],
        json!([{"HostIp": "127.0.0.1", "HostPort": "18935"}])
    );
    let mounts = c["Mounts"].as_array().unwrap();
    let mount = |dest: &str| {
        mounts
            .iter()
            .find(|m| m["Destination"] == dest)
            .unwrap_or_else(|| panic!("no mount at {dest}: {mounts:?}"))
            .clone()
    };
    let conf = mount("/conf");
    assert_eq!(conf["Type"], "bind");
    assert_eq!(conf["RW"], json!(false));
    assert_eq!(
        Path::new(conf["Source"].as_str().unwrap()),
        dir.join("conf")
    );
    assert_eq!(exec(name, "cat /conf/app.conf"), "hello");
    let data = mount("/data");
    assert_eq!(data["Type"], "volume");
    assert_eq!(data["Name"], "mkeys-storage_data");
    // driver_opts reached the volume: it is a tmpfs owned by uid 1000. (Podman reads `size`
    // in `o` as an XFS project quota, which the bed's filesystem lacks, so no size here.)
    let mnt = exec(name, "grep ' /data ' /proc/mounts; stat -c %u /data");
    assert!(
        mnt.starts_with("tmpfs /data tmpfs") && mnt.ends_with("\n1000"),
        "{mnt}"
    );
    let shared = mount("/shared");
    assert_eq!(shared["Name"], "mkeys-storage-external");
    assert_eq!(shared["RW"], json!(false));
    let scratch = exec(name, "stat -c %a /scratch; df -k /scratch | tail -1");
    assert!(scratch.starts_with("1770\ntmpfs"), "{scratch}");
    assert!(scratch.contains(" 2048 "), "{scratch}");
    let run_app = exec(name, "stat -c %a /run/app; df -k /run/app | tail -1");
    assert!(
        run_app.starts_with("700\ntmpfs") && run_app.contains(" 1024 "),
        "{run_app}"
    );
    let secret = mount("/run/secrets/token");
    assert_eq!(secret["RW"], json!(false));
    assert_eq!(exec(name, "cat /run/secrets/token"), "s3cret");
    assert_eq!(mount("/etc/app/settings.ini")["RW"], json!(false));
    assert_eq!(exec(name, "cat /etc/app/settings.ini"), "[a]\nb=1");
    let out = Bed::get().podman(&["exec", name, "sh", "-c", "echo x > /run/secrets/token"]);
    assert!(!out.status.success(), "a secret must be read-only");
}

#[test]
fn network_keys_attach_and_address_the_container() {
    // Fixture: a service on two project networks (one internal with a subnet and a static
    // IPv4 address and MAC address) with aliases, on an external network, and services with
    // network_mode none, host and service:x.
    let project = "mkeys-net";
    let (subnet, prefix) = bed_subnet(231);
    let yaml = format!(
        "\
services:
  app:
    image: $IMAGE
    command: [sleep, '300']
    networks:
      front: {{aliases: [web, www]}}
      back: {{ipv4_address: {prefix}.10, mac_address: '02:42:0a:d8:e7:0a'}}
      outside:
  peer:
    image: $IMAGE
    command: [sleep, '300']
    networks: [back]
  isolated:
    image: $IMAGE
    command: [sleep, '300']
    network_mode: none
  onhost:
    image: $IMAGE
    command: [sleep, '300']
    network_mode: host
  sidecar:
    image: $IMAGE
    command: [sleep, '300']
    network_mode: 'service:app'
networks:
  front:
  back:
    internal: true
    ipam: {{config: [{{subnet: {subnet}}}]}}
  outside:
    external: true
    name: mkeys-net-external
"
    );
    let (mut guard, dir) = package(project, &yaml, &[]);
    create_external(&mut guard, "network", "mkeys-net-external");
    let bed = Bed::get();
    let (_p, mut podman) = converge(project, &dir, None);
    let c = inspect(&mut podman, "mkeys-net-app-1");
    let nets = &c["NetworkSettings"]["Networks"];
    let keys: Vec<&String> = nets.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["mkeys-net-external", "mkeys-net_back", "mkeys-net_front"]
    );
    let aliases = nets["mkeys-net_front"]["Aliases"].as_array().unwrap();
    for a in ["app", "web", "www"] {
        assert!(aliases.contains(&json!(a)), "{a} not in {aliases:?}");
    }
    assert_eq!(nets["mkeys-net_back"]["IPAddress"], format!("{prefix}.10"));
    assert_eq!(nets["mkeys-net_back"]["MacAddress"], "02:42:0a:d8:e7:0a");
    let back = bed.podman(&["network", "inspect", "mkeys-net_back"]);
    let back: Value = serde_json::from_slice(&back.stdout).unwrap();
    assert_eq!(back[0]["internal"], json!(true));
    assert_eq!(back[0]["subnets"][0]["subnet"], subnet);
    // The peer resolves the app's address on the internal network by service name.
    let resolved = exec("mkeys-net-peer-1", "nslookup app 2>&1 || true");
    assert!(resolved.contains(&format!("{prefix}.10")), "{resolved}");
    let isolated = inspect(&mut podman, "mkeys-net-isolated-1");
    assert_eq!(isolated["HostConfig"]["NetworkMode"], "none");
    assert_eq!(exec("mkeys-net-isolated-1", "ls /sys/class/net"), "lo");
    let onhost = inspect(&mut podman, "mkeys-net-onhost-1");
    assert_eq!(onhost["HostConfig"]["NetworkMode"], "host");
    let sidecar = inspect(&mut podman, "mkeys-net-sidecar-1");
    let mode = sidecar["HostConfig"]["NetworkMode"].as_str().unwrap();
    assert!(
        mode.starts_with("container:") && mode.ends_with(c["Id"].as_str().unwrap()),
        "{mode}"
    );
}

#[test]
fn kernel_keys_set_privileges_limits_and_namespaces() {
    // Fixture: caps, a device renamed inside the container, security options, ulimits, a
    // namespaced sysctl, shm_size, ipc: shareable, group_add, oom_score_adj, k8s-file
    // logging with a size; a privileged service with pid: host and logging none.
    let project = "mkeys-kernel";
    // ulimits names nproc as well as nofile: when a container sets any rlimit, Podman 4
    // stops applying its configured default nproc and uses a value this bed's kernel refuses.
    let yaml = "\
services:
  app:
    image: $IMAGE
    command: [sleep, '300']
    cap_add: [NET_ADMIN]
    cap_drop: [MKNOD]
    devices: ['/dev/null:/dev/mynull:rw']
    security_opt: [no-new-privileges, 'label=disable', 'seccomp=unconfined']
    ulimits:
      nofile: {soft: 1000, hard: 2000}
      nproc: 3000
    sysctls: {net.core.somaxconn: 1024}
    shm_size: 32m
    ipc: shareable
    group_add: ['4321']
    oom_score_adj: 100
    logging: {driver: json-file, options: {max-size: 1m}}
  root:
    image: $IMAGE
    command: [sleep, '300']
    privileged: true
    pid: host
    logging: {driver: none}
";
    let (_guard, dir) = package(project, yaml, &[]);
    let (_p, mut podman) = converge(project, &dir, None);
    let name = "mkeys-kernel-app-1";
    let c = inspect(&mut podman, name);
    let host = &c["HostConfig"];
    let caps = |key: &str| -> Vec<String> {
        host[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        caps("CapAdd").iter().any(|c| c.ends_with("NET_ADMIN")),
        "{:?}",
        caps("CapAdd")
    );
    assert!(
        caps("CapDrop").iter().any(|c| c.ends_with("MKNOD")),
        "{:?}",
        caps("CapDrop")
    );
    assert_eq!(
        host["Devices"],
        json!([{"PathOnHost": "/dev/null", "PathInContainer": "/dev/mynull", "CgroupPermissions": ""}])
    );
    assert!(exec(name, "ls -l /dev/mynull").starts_with('c'));
    let secopt: Vec<&str> = host["SecurityOpt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(secopt.contains(&"no-new-privileges"), "{secopt:?}");
    // Podman 4 lists neither seccomp=unconfined nor label=disable in SecurityOpt: the
    // process status shows the first; the bed has no SELinux, so the second only has to be
    // accepted (its mapping to selinux_opts is checked in libpod.rs's unit tests).
    assert_eq!(
        exec(name, "grep NoNewPrivs /proc/self/status"),
        "NoNewPrivs:\t1"
    );
    assert_eq!(exec(name, "grep Seccomp: /proc/self/status"), "Seccomp:\t0");
    // The limits of the container's main process (`podman exec` starts its shell with
    // limits of its own).
    let limits = exec(name, "grep -E 'open files|processes' /proc/1/limits");
    assert!(
        limits.contains("Max processes             3000                 3000")
            && limits.contains("Max open files            1000                 2000"),
        "{limits}"
    );
    let ulimits = &host["Ulimits"];
    assert!(
        ulimits
            .as_array()
            .unwrap()
            .contains(&json!({"Name": "RLIMIT_NOFILE", "Soft": 1000, "Hard": 2000})),
        "{ulimits}"
    );
    assert_eq!(exec(name, "cat /proc/sys/net/core/somaxconn"), "1024");
    assert_eq!(host["ShmSize"], json!(32 << 20));
    assert!(exec(name, "df -k /dev/shm | tail -1").contains(" 32768 "));
    assert_eq!(host["IpcMode"], "shareable");
    assert_eq!(host["GroupAdd"], json!(["4321"]));
    assert!(exec(name, "id -G").split_whitespace().any(|g| g == "4321"));
    assert_eq!(host["OomScoreAdj"], json!(100));
    assert_eq!(exec(name, "cat /proc/self/oom_score_adj"), "100");
    assert_eq!(host["LogConfig"]["Type"], "k8s-file");
    assert_eq!(host["LogConfig"]["Size"], "1.049MB");
    let root = inspect(&mut podman, "mkeys-kernel-root-1");
    assert_eq!(root["HostConfig"]["Privileged"], json!(true));
    assert_eq!(root["HostConfig"]["PidMode"], "host");
    // With the host's PID namespace, PID 1 is the host's init, not the container's sleep.
    assert_ne!(exec("mkeys-kernel-root-1", "cat /proc/1/comm"), "sleep");
    assert_eq!(root["HostConfig"]["LogConfig"]["Type"], "none");
}

#[test]
fn resource_keys_become_cgroup_limits() {
    // Fixture: legacy limits (mem_limit, mem_reservation, memswap_limit, cpus, cpu_shares,
    // pids_limit) on one service and deploy.resources on another. The bed runs cgroup v1
    // with cgroupfs; Podman accepts every one of these limits there.
    let project = "mkeys-limits";
    let yaml = "\
services:
  legacy:
    image: $IMAGE
    command: [sleep, '300']
    mem_limit: 64m
    mem_reservation: 32m
    memswap_limit: 128m
    cpus: 0.5
    cpu_shares: 512
    pids_limit: 50
  deployed:
    image: $IMAGE
    command: [sleep, '300']
    deploy:
      resources:
        limits: {cpus: '1.5', memory: 96m, pids: 60}
        reservations: {memory: 48m}
";
    let (_guard, dir) = package(project, yaml, &[]);
    let (_p, mut podman) = converge(project, &dir, None);
    let c = inspect(&mut podman, "mkeys-limits-legacy-1");
    let h = &c["HostConfig"];
    assert_eq!(h["Memory"], json!(64 << 20));
    assert_eq!(h["MemoryReservation"], json!(32 << 20));
    assert_eq!(h["MemorySwap"], json!(128 << 20));
    assert_eq!(h["CpuQuota"], json!(50_000));
    assert_eq!(h["CpuPeriod"], json!(100_000));
    assert_eq!(h["CpuShares"], json!(512));
    assert_eq!(h["PidsLimit"], json!(50));
    let c = inspect(&mut podman, "mkeys-limits-deployed-1");
    let h = &c["HostConfig"];
    assert_eq!(h["Memory"], json!(96 << 20));
    assert_eq!(h["MemoryReservation"], json!(48 << 20));
    assert_eq!(h["CpuQuota"], json!(150_000));
    assert_eq!(h["PidsLimit"], json!(60));
}

#[test]
fn healthcheck_and_restart_keys_configure_podman() {
    // Fixture: a healthcheck with every timing key, one disabled, one with only a test, and
    // the restart policies no, always and unless-stopped. Converged without `wait`: apply's
    // wait runs the healthcheck of every service with a `healthcheck` key, the disabled one
    // included, which Podman answers with 409 (reported to the plan/apply owner). The
    // checks are run here instead.
    let project = "mkeys-health";
    let yaml = "\
services:
  checked:
    image: $IMAGE
    command: [sleep, '300']
    healthcheck:
      test: [CMD, 'true']
      interval: 1m30s
      timeout: 5s
      retries: 4
      start_period: 20s
    restart: always
  unchecked:
    image: $IMAGE
    command: [sleep, '300']
    healthcheck: {disable: true}
    restart: unless-stopped
  plain:
    image: $IMAGE
    command: [sleep, '300']
    healthcheck: {test: 'test -d /'}
    restart: 'no'
";
    let (_guard, dir) = package(project, yaml, &[]);
    let (_p, mut podman) = converge(project, &dir, None);
    assert_eq!(
        podman.run_healthcheck("mkeys-health-checked-1").unwrap(),
        "healthy"
    );
    assert_eq!(
        podman.run_healthcheck("mkeys-health-plain-1").unwrap(),
        "healthy"
    );
    assert!(
        podman.run_healthcheck("mkeys-health-unchecked-1").is_err(),
        "a disabled healthcheck cannot be run"
    );
    let c = inspect(&mut podman, "mkeys-health-checked-1");
    assert_eq!(
        c["Config"]["Healthcheck"],
        json!({
            "Test": ["CMD", "true"],
            "Interval": 90_000_000_000u64,
            "Timeout": 5_000_000_000u64,
            "Retries": 4,
            "StartPeriod": 20_000_000_000u64,
        })
    );
    assert_eq!(c["HostConfig"]["RestartPolicy"]["Name"], "always");
    let c = inspect(&mut podman, "mkeys-health-unchecked-1");
    let hc = &c["Config"]["Healthcheck"];
    assert!(
        hc.is_null() || hc["Test"] == json!(["NONE"]),
        "disabled healthcheck: {hc}"
    );
    assert_eq!(c["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped");
    let c = inspect(&mut podman, "mkeys-health-plain-1");
    assert_eq!(
        c["Config"]["Healthcheck"]["Test"],
        json!(["CMD-SHELL", "test -d /"])
    );
    assert_eq!(
        c["Config"]["Healthcheck"]["Interval"],
        json!(30_000_000_000u64)
    );
    let restart = &c["HostConfig"]["RestartPolicy"]["Name"];
    assert!(*restart == "" || *restart == "no", "{restart}");
}

#[test]
fn links_make_the_alias_resolvable() {
    // Fixture: web links db under the alias "database"; web can resolve it.
    let project = "mkeys-links";
    let yaml = "\
services:
  web:
    image: $IMAGE
    command: [sleep, '300']
    links: ['db:database']
  db:
    image: $IMAGE
    command: [sleep, '300']
";
    let (_guard, dir) = package(project, yaml, &[]);
    let (_p, mut podman) = converge(project, &dir, None);
    let db = inspect(&mut podman, "mkeys-links-db-1");
    let ip = db["NetworkSettings"]["Networks"]["mkeys-links_default"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let resolved = exec("mkeys-links-web-1", "nslookup database 2>&1 || true");
    assert!(
        resolved.contains(&ip),
        "database should resolve to {ip}: {resolved}"
    );
}

#[test]
fn replicas_scale_up_and_down_leaving_the_others_alone() {
    // Fixture: three healthchecked worker replicas publishing container port 80 on free host
    // ports; web waits for all of them to be healthy. Then 3 → 1 → 2 replicas.
    let project = "mkeys-replicas";
    let yaml = |n: u32| {
        format!(
            "\
services:
  web:
    image: $IMAGE
    command: [sleep, '300']
    depends_on: {{worker: {{condition: service_healthy}}}}
  worker:
    image: $IMAGE
    command: [httpd, -f, -p, '80']
    ports: ['80']
    healthcheck: {{test: [CMD, 'true'], interval: 1s}}
    deploy: {{replicas: {n}}}
"
        )
    };
    let (_guard, dir) = package(project, &yaml(3), &[]);
    let (_p, mut podman) = converge(project, &dir, Some(Duration::from_secs(60)));
    let id = |podman: &mut Podman, name: &str| inspect(podman, name)["Id"].clone();
    let mut host_ports = std::collections::BTreeSet::new();
    for n in 1..=3 {
        let name = format!("mkeys-replicas-worker-{n}");
        let c = inspect(&mut podman, &name);
        assert_eq!(c["State"]["Running"], true, "{name}");
        assert_eq!(
            c["Config"]["Labels"]["com.docker.compose.container-number"],
            n.to_string()
        );
        assert_eq!(c["State"]["Health"]["Status"], "healthy", "{name}");
        let port = c["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"].clone();
        assert!(port.is_string(), "{name}: {port}");
        host_ports.insert(port.to_string());
    }
    assert_eq!(host_ports.len(), 3, "each replica has its own host port");
    // The service name resolves to every replica.
    let resolved = exec("mkeys-replicas-web-1", "nslookup worker 2>&1 || true");
    for n in 1..=3 {
        let c = inspect(&mut podman, &format!("mkeys-replicas-worker-{n}"));
        let ip = c["NetworkSettings"]["Networks"]["mkeys-replicas_default"]["IPAddress"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            resolved.contains(&ip),
            "worker should resolve to {ip}: {resolved}"
        );
    }
    let web = id(&mut podman, "mkeys-replicas-web-1");
    let first = id(&mut podman, "mkeys-replicas-worker-1");
    // Scaling leaves replica 1 and web as they were.
    let kept = |podman: &mut Podman| {
        assert_eq!(
            id(podman, "mkeys-replicas-worker-1"),
            first,
            "replica 1 kept"
        );
        assert_eq!(id(podman, "mkeys-replicas-web-1"), web, "web untouched");
    };

    rewrite(&dir, &yaml(1));
    let (_p, mut podman) = converge(project, &dir, Some(Duration::from_secs(60)));
    let names: Vec<String> = Bed::get()
        .containers("com.docker.compose.project", project)
        .iter()
        .map(|c| c["Names"][0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    kept(&mut podman);

    rewrite(&dir, &yaml(2));
    let (p, mut podman) = converge(project, &dir, Some(Duration::from_secs(60)));
    kept(&mut podman);
    assert_eq!(
        inspect(&mut podman, "mkeys-replicas-worker-2")["State"]["Running"],
        true
    );
    // Unchanged: no write at all.
    let writes = podman.writes();
    engine::converge(&mut podman, &p, &CreateContext::default(), None).unwrap();
    assert_eq!(podman.writes(), writes, "a no-op converge wrote to Podman");
}
