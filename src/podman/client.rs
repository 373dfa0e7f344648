use super::transport::{NoResolver, UnixConnector};

#[path = "images.rs"]
mod images;
use crate::http::query_escape;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest JSON reply read from Podman (container lists of a busy device stay far below).
pub const PODMAN_RESPONSE_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Longest single line of a pull progress stream.
pub const PULL_LINE_MAX_BYTES: usize = 64 * 1024;
/// Log bytes kept for an error message about a failed container.
pub const LOG_TAIL_MAX_BYTES: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum PodmanError {
    #[error("Podman API socket {socket} is not reachable: {reason}")]
    Unreachable { socket: PathBuf, reason: String },
    #[error("Podman {op} {target} failed (HTTP {status}): {message}")]
    Api {
        op: &'static str,
        target: String,
        status: u16,
        message: String,
    },
    #[error("Podman {op} {target}: {reason}")]
    Protocol {
        op: &'static str,
        target: String,
        reason: String,
    },
    #[error("pulling image {image} failed: {message}")]
    Pull { image: String, message: String },
    #[error("Podman {op} {target} timed out after {timeout:?}")]
    Timeout {
        op: &'static str,
        target: String,
        timeout: Duration,
    },
}

impl PodmanError {
    /// Stable code for deployment status.
    pub fn code(&self) -> &'static str {
        match self {
            PodmanError::Unreachable { .. } => "ERR_PODMAN_UNAVAILABLE",
            PodmanError::Pull { .. } => "ERR_IMAGE_PULL",
            PodmanError::Timeout { .. } => "ERR_PODMAN_TIMEOUT",
            PodmanError::Api { .. } | PodmanError::Protocol { .. } => "ERR_PODMAN_API",
        }
    }

    /// Whether Podman itself is away (socket missing, service restarting): the apply is
    /// retried later rather than the deployment marked Failed for good.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, PodmanError::Unreachable { .. })
    }
}

/// Deadlines of the client.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub call: Duration,
    pub pull: Duration,
    pub stop: Duration,
}

/// A container as `GET /libpod/containers/json` lists it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ContainerSummary {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Names", default)]
    pub names: Vec<String>,
    #[serde(rename = "Labels", default, deserialize_with = "null_map")]
    pub labels: BTreeMap<String, String>,
    /// `created`, `running`, `exited`, `paused`, …
    #[serde(rename = "State", default)]
    pub state: String,
    #[serde(rename = "ExitCode", default)]
    pub exit_code: i64,
    #[serde(rename = "Image", default)]
    pub image: String,
    #[serde(rename = "ImageID", default)]
    pub image_id: String,
    /// Unix seconds; negative (year 1) for a container never started.
    #[serde(rename = "StartedAt", default)]
    pub started_at: i64,
    /// The health status (`starting`, `healthy`, `unhealthy`), empty without a healthcheck.
    #[serde(rename = "Status", default)]
    pub health: String,
}

impl ContainerSummary {
    pub fn name(&self) -> &str {
        self.names.first().map_or(self.id.as_str(), String::as_str)
    }
}

/// One container in the `GET /libpod/containers/stats?stream=false` reply (cumulative
/// counters since the container started; CPU in nanoseconds, the rest in bytes).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ContainerStats {
    #[serde(rename = "ContainerID", default)]
    pub id: String,
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "CPUNano", default)]
    pub cpu_nano: u64,
    #[serde(rename = "MemUsage", default)]
    pub mem_usage: u64,
    #[serde(rename = "MemLimit", default)]
    pub mem_limit: u64,
    #[serde(rename = "NetInput", default)]
    pub net_input: u64,
    #[serde(rename = "NetOutput", default)]
    pub net_output: u64,
    #[serde(rename = "BlockInput", default)]
    pub block_input: u64,
    #[serde(rename = "BlockOutput", default)]
    pub block_output: u64,
    #[serde(rename = "PIDs", default)]
    pub pids: u64,
}

#[derive(Deserialize)]
struct StatsReply {
    #[serde(rename = "Error", default)]
    error: Option<serde_json::Value>,
    #[serde(rename = "Stats", default, deserialize_with = "null_vec")]
    stats: Vec<ContainerStats>,
}

fn null_vec<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// The part of `GET /libpod/containers/{id}/json` the agent reads.
#[derive(Debug, Clone, Deserialize)]
pub struct ContainerInspect {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "State")]
    pub state: InspectState,
    #[serde(rename = "Config", default)]
    pub config: InspectConfig,
    #[serde(rename = "HostConfig", default)]
    pub host_config: InspectHostConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct InspectConfig {
    #[serde(rename = "Healthcheck", default)]
    pub healthcheck: Option<HealthConfig>,
}

/// A healthcheck as Podman stores it (durations in nanoseconds).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct HealthConfig {
    #[serde(rename = "Test", default)]
    pub test: Vec<String>,
    #[serde(rename = "Interval", default)]
    pub interval: i64,
    #[serde(rename = "Timeout", default)]
    pub timeout: i64,
    #[serde(rename = "StartPeriod", default)]
    pub start_period: i64,
    #[serde(rename = "Retries", default)]
    pub retries: i64,
}

impl HealthConfig {
    /// Whether it checks anything (`["NONE"]` and an empty test disable it).
    pub fn enabled(&self) -> bool {
        !matches!(self.test.first().map(String::as_str), None | Some("NONE"))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct InspectHostConfig {
    #[serde(rename = "RestartPolicy", default)]
    pub restart_policy: Option<RestartPolicyInspect>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RestartPolicyInspect {
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "MaximumRetryCount", default)]
    pub maximum_retry_count: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InspectState {
    #[serde(rename = "Status", default)]
    pub status: String,
    #[serde(rename = "Running", default)]
    pub running: bool,
    #[serde(rename = "ExitCode", default)]
    pub exit_code: i64,
    #[serde(rename = "Health", default)]
    pub health: Option<Health>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Health {
    #[serde(rename = "Status", default)]
    pub status: String,
    #[serde(rename = "FailingStreak", default)]
    pub failing_streak: i64,
}

/// A network as listed.
#[derive(Debug, Clone, Deserialize)]
pub struct NetworkSummary {
    pub name: String,
    #[serde(default, deserialize_with = "null_map")]
    pub labels: BTreeMap<String, String>,
}

fn null_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(Option::<BTreeMap<String, String>>::deserialize(d)?.unwrap_or_default())
}

/// Credentials for an image pull (`X-Registry-Auth`).
#[derive(Debug, Clone)]
pub struct PullAuth {
    pub username: String,
    pub password: String,
    pub server: String,
}

/// The connection to Podman.
pub struct Podman {
    agent: ureq::Agent,
    socket: PathBuf,
    prefix: String,
    /// The libpod API version Podman reported.
    pub api_version: String,
    timeouts: Timeouts,
    writes: u64,
}

impl std::fmt::Debug for Podman {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Podman")
            .field("socket", &self.socket)
            .field("api_version", &self.api_version)
            .finish()
    }
}

type Response = ureq::http::Response<ureq::Body>;

impl Podman {
    /// Connects and negotiates the API version (`GET /_ping`).
    pub fn connect(socket: &Path, timeouts: Timeouts) -> Result<Podman, PodmanError> {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeouts.call))
            .max_redirects(0)
            .user_agent(concat!("margo-agent/", env!("CARGO_PKG_VERSION")))
            .build();
        let agent = ureq::Agent::with_parts(
            config,
            UnixConnector {
                path: socket.to_path_buf(),
            },
            NoResolver,
        );
        let mut podman = Podman {
            agent,
            socket: socket.to_path_buf(),
            prefix: String::new(),
            api_version: String::new(),
            timeouts,
            writes: 0,
        };
        let resp = podman.send("ping", "", "GET", "http://d/_ping", None)?;
        let version = resp
            .headers()
            .get("Libpod-API-Version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if resp.status() != 200 {
            return Err(PodmanError::Protocol {
                op: "ping",
                target: socket.display().to_string(),
                reason: format!("answered HTTP {}, not OK", resp.status()),
            });
        }
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if major < 4 {
            return Err(PodmanError::Protocol {
                op: "ping",
                target: socket.display().to_string(),
                reason: format!(
                    "libpod API version {version:?} is too old; margo-agent needs Podman 4.0 or newer"
                ),
            });
        }
        podman.prefix = if major >= 5 {
            "/v5.0.0/libpod".into()
        } else {
            "/v4.0.0/libpod".into()
        };
        podman.api_version = version;
        Ok(podman)
    }

    /// Number of state-changing calls made so far.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    fn url(&self, path: &str) -> String {
        format!("http://d{}{}", self.prefix, path)
    }

    fn send(
        &mut self,
        op: &'static str,
        target: &str,
        method: &str,
        url: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, PodmanError> {
        self.send_with(op, target, method, url, body, &[], self.timeouts.call)
    }

    #[allow(clippy::too_many_arguments)] // one private funnel for every call
    fn send_with(
        &mut self,
        op: &'static str,
        target: &str,
        method: &str,
        url: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Response, PodmanError> {
        if method != "GET" && method != "HEAD" {
            self.writes += 1;
        }
        let mut req = ureq::http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let result = match body {
            Some(b) => {
                let req = req
                    .header("content-type", "application/json")
                    .body(b.to_vec())
                    .map_err(|e| protocol(op, target, e.to_string()))?;
                let req = self
                    .agent
                    .configure_request(req)
                    .timeout_global(Some(timeout))
                    .build();
                self.agent.run(req)
            }
            None => {
                let req = req
                    .body(())
                    .map_err(|e| protocol(op, target, e.to_string()))?;
                let req = self
                    .agent
                    .configure_request(req)
                    .timeout_global(Some(timeout))
                    .build();
                self.agent.run(req)
            }
        };
        result.map_err(|e| match e {
            ureq::Error::Timeout(_) => PodmanError::Timeout {
                op,
                target: target.to_string(),
                timeout,
            },
            ureq::Error::Io(io) => PodmanError::Unreachable {
                socket: self.socket.clone(),
                reason: io.to_string(),
            },
            other => protocol(op, target, other.to_string()),
        })
    }

    fn read_body(op: &'static str, target: &str, resp: Response) -> Result<Vec<u8>, PodmanError> {
        let mut resp = resp;
        resp.body_mut()
            .with_config()
            .limit(PODMAN_RESPONSE_MAX_BYTES)
            .read_to_vec()
            .map_err(|e| protocol(op, target, format!("reading the reply: {e}")))
    }

    /// Fails with Podman's message unless the status is one of `ok`.
    fn expect(
        op: &'static str,
        target: &str,
        resp: Response,
        ok: &[u16],
    ) -> Result<Vec<u8>, PodmanError> {
        let status = resp.status().as_u16();
        let body = Self::read_body(op, target, resp)?;
        if ok.contains(&status) {
            return Ok(body);
        }
        Err(PodmanError::Api {
            op,
            target: target.to_string(),
            status,
            message: error_message(&body),
        })
    }

    fn json<T: serde::de::DeserializeOwned>(
        op: &'static str,
        target: &str,
        body: &[u8],
    ) -> Result<T, PodmanError> {
        serde_json::from_slice(body)
            .map_err(|e| protocol(op, target, format!("unexpected reply: {e}")))
    }

    /// `GET /<kind>/<name>/exists`: 204 yes, 404 no.
    fn exists(&mut self, op: &'static str, kind: &str, name: &str) -> Result<bool, PodmanError> {
        let url = self.url(&format!("/{kind}/{}/exists", query_escape(name)));
        let resp = self.send(op, name, "GET", &url, None)?;
        let status = resp.status().as_u16();
        Self::expect(op, name, resp, &[204, 404])?;
        Ok(status == 204)
    }

    /// `POST <path>` with a JSON body; 200 or 201 is success.
    fn create(
        &mut self,
        op: &'static str,
        path: &str,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<(), PodmanError> {
        let url = self.url(path);
        let bytes = body.to_string().into_bytes();
        let resp = self.send(op, name, "POST", &url, Some(&bytes))?;
        Self::expect(op, name, resp, &[200, 201]).map(drop)
    }

    /// `GET <path>?filters={"label":[k=v,…]}` decoded as JSON.
    fn list_by_labels<T: serde::de::DeserializeOwned>(
        &mut self,
        op: &'static str,
        path: &str,
        labels: &[(&str, &str)],
    ) -> Result<T, PodmanError> {
        let filter: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let filters = serde_json::json!({ "label": filter }).to_string();
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = self.url(&format!("{path}{sep}filters={}", query_escape(&filters)));
        let resp = self.send(op, "", "GET", &url, None)?;
        let body = Self::expect(op, "", resp, &[200])?;
        Self::json(op, "", &body)
    }

    /// Containers carrying every `key=value` label given.
    pub fn list_containers(
        &mut self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<ContainerSummary>, PodmanError> {
        self.list_by_labels("list containers", "/containers/json?all=true", labels)
    }

    /// One non-streaming `GET /containers/stats` for the given (running) containers. An empty
    /// list asks for nothing (Podman would answer for every container).
    pub fn container_stats(&mut self, ids: &[&str]) -> Result<Vec<ContainerStats>, PodmanError> {
        const OP: &str = "container stats";
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut path = "/containers/stats?stream=false".to_string();
        for id in ids {
            path.push_str("&containers=");
            path.push_str(&query_escape(id));
        }
        let url = self.url(&path);
        let resp = self.send(OP, "", "GET", &url, None)?;
        let body = Self::expect(OP, "", resp, &[200])?;
        let reply: StatsReply = Self::json(OP, "", &body)?;
        match reply.error {
            Some(e) if reply.stats.is_empty() && !e.is_null() => {
                Err(protocol(OP, "", e.to_string()))
            }
            _ => Ok(reply.stats),
        }
    }

    pub fn inspect_container(&mut self, id: &str) -> Result<ContainerInspect, PodmanError> {
        let body = self.inspect_body(id)?;
        Self::json("inspect container", id, &body)
    }

    /// The whole inspect document, for callers that need fields `ContainerInspect` omits.
    pub fn inspect_container_json(&mut self, id: &str) -> Result<serde_json::Value, PodmanError> {
        let body = self.inspect_body(id)?;
        Self::json("inspect container", id, &body)
    }

    fn inspect_body(&mut self, id: &str) -> Result<Vec<u8>, PodmanError> {
        let url = self.url(&format!("/containers/{}/json", query_escape(id)));
        let resp = self.send("inspect container", id, "GET", &url, None)?;
        Self::expect("inspect container", id, resp, &[200])
    }

    /// Whether a container of that name or id exists.
    pub fn container_exists(&mut self, name: &str) -> Result<bool, PodmanError> {
        self.exists("check container", "containers", name)
    }

    /// Creates a container from a libpod create body; returns its id.
    pub fn create_container(
        &mut self,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<String, PodmanError> {
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "Id")]
            id: String,
        }
        let url = self.url("/containers/create");
        let bytes = body.to_string().into_bytes();
        let resp = self.send("create container", name, "POST", &url, Some(&bytes))?;
        let body = Self::expect("create container", name, resp, &[201])?;
        Ok(Self::json::<Created>("create container", name, &body)?.id)
    }

    pub fn start_container(&mut self, id: &str) -> Result<(), PodmanError> {
        let url = self.url(&format!("/containers/{}/start", query_escape(id)));
        let resp = self.send("start container", id, "POST", &url, None)?;
        Self::expect("start container", id, resp, &[204, 304]).map(drop)
    }

    /// Restarts a container (stop with the grace time, then start).
    pub fn restart_container(&mut self, id: &str) -> Result<(), PodmanError> {
        let grace = self.timeouts.stop.as_secs();
        let url = self.url(&format!(
            "/containers/{}/restart?t={grace}",
            query_escape(id)
        ));
        let deadline = self.timeouts.call + self.timeouts.stop;
        let resp = self.send_with("restart container", id, "POST", &url, None, &[], deadline)?;
        Self::expect("restart container", id, resp, &[204]).map(drop)
    }

    /// The ID of a local image, `None` when it is not present.
    pub fn image_id(&mut self, reference: &str) -> Result<Option<String>, PodmanError> {
        #[derive(Deserialize)]
        struct Image {
            #[serde(rename = "Id")]
            id: String,
        }
        let url = self.url(&format!("/images/{}/json", query_escape(reference)));
        let resp = self.send("inspect image", reference, "GET", &url, None)?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        let body = Self::expect("inspect image", reference, resp, &[200])?;
        Ok(Some(
            Self::json::<Image>("inspect image", reference, &body)?.id,
        ))
    }

    /// Removes a container (stopping it first, forcefully after the grace time) and its
    /// anonymous volumes. A container already gone is not an error.
    pub fn remove_container(&mut self, id: &str) -> Result<(), PodmanError> {
        let grace = self.timeouts.stop.as_secs();
        let url = self.url(&format!(
            "/containers/{}?force=true&volumes=true&timeout={grace}",
            query_escape(id)
        ));
        let deadline = self.timeouts.call + self.timeouts.stop;
        let resp = self.send_with("remove container", id, "DELETE", &url, None, &[], deadline)?;
        Self::expect("remove container", id, resp, &[200, 204, 404]).map(drop)
    }

    /// Runs the container's healthcheck once; returns `healthy`, `unhealthy` or `starting`.
    pub fn run_healthcheck(&mut self, id: &str) -> Result<String, PodmanError> {
        #[derive(Deserialize)]
        struct Check {
            #[serde(rename = "Status", default)]
            status: String,
        }
        let url = self.url(&format!("/containers/{}/healthcheck", query_escape(id)));
        let resp = self.send_with(
            "run healthcheck",
            id,
            "GET",
            &url,
            None,
            &[],
            self.timeouts.call,
        )?;
        let body = Self::expect("run healthcheck", id, resp, &[200])?;
        Ok(Self::json::<Check>("run healthcheck", id, &body)?.status)
    }

    /// The last lines of a container's output (bounded), for error messages.
    pub fn logs_tail(&mut self, id: &str, lines: u32) -> Result<String, PodmanError> {
        let url = self.url(&format!(
            "/containers/{}/logs?stdout=true&stderr=true&tail={lines}",
            query_escape(id)
        ));
        let resp = self.send("read logs", id, "GET", &url, None)?;
        let body = Self::expect("read logs", id, resp, &[200])?;
        let text = demux_logs(&body);
        let start = text.len().saturating_sub(LOG_TAIL_MAX_BYTES);
        let mut start = start;
        while !text.is_char_boundary(start) {
            start += 1;
        }
        Ok(text[start..].trim_end().to_string())
    }

    pub fn image_exists(&mut self, reference: &str) -> Result<bool, PodmanError> {
        self.exists("check image", "images", reference)
    }

    /// Pulls an image. The reply is a progress stream answered with HTTP 200 even when the pull
    /// fails (Podman 4.x–5.x), so every line is read for an `error`, and success is confirmed
    /// by an `images` line.
    pub fn pull_image(
        &mut self,
        reference: &str,
        auth: Option<&PullAuth>,
        tls_verify: bool,
    ) -> Result<(), PodmanError> {
        let url = self.url(&format!(
            "/images/pull?reference={}&policy=missing&tlsVerify={tls_verify}&quiet=false",
            query_escape(reference)
        ));
        let auth_header = auth.map(|a| {
            use base64::Engine;
            let json = serde_json::json!({
                "username": a.username, "password": a.password, "serveraddress": a.server
            });
            base64::engine::general_purpose::URL_SAFE.encode(json.to_string())
        });
        let headers: Vec<(&str, &str)> = auth_header
            .as_deref()
            .map(|h| vec![("X-Registry-Auth", h)])
            .unwrap_or_default();
        let resp = self.send_with(
            "pull image",
            reference,
            "POST",
            &url,
            None,
            &headers,
            self.timeouts.pull,
        )?;
        let status = resp.status().as_u16();
        if status != 200 {
            let body = Self::read_body("pull image", reference, resp)?;
            return Err(PodmanError::Pull {
                image: reference.to_string(),
                message: format!("HTTP {status}: {}", error_message(&body)),
            });
        }
        let reader = resp.into_body().into_reader();
        let result = scan_pull_stream(BufReader::new(reader));
        result.map_err(|message| PodmanError::Pull {
            image: reference.to_string(),
            message,
        })
    }

    /// Networks carrying every `key=value` label given.
    pub fn list_networks(
        &mut self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<NetworkSummary>, PodmanError> {
        self.list_by_labels("list networks", "/networks/json", labels)
    }

    pub fn network_exists(&mut self, name: &str) -> Result<bool, PodmanError> {
        self.exists("check network", "networks", name)
    }

    pub fn create_network(
        &mut self,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<(), PodmanError> {
        self.create("create network", "/networks/create", name, body)
    }

    /// Removes a network. Podman answers 200 with an `Err` entry when it is still in use
    /// (references pitfall 6), which is reported as an error.
    pub fn remove_network(&mut self, name: &str) -> Result<(), PodmanError> {
        let url = self.url(&format!("/networks/{}", query_escape(name)));
        let resp = self.send("remove network", name, "DELETE", &url, None)?;
        let body = Self::expect("remove network", name, resp, &[200, 204, 404])?;
        #[derive(Deserialize)]
        struct Report {
            #[serde(rename = "Err", default)]
            err: Option<String>,
        }
        if let Ok(reports) = serde_json::from_slice::<Vec<Report>>(&body)
            && let Some(err) = reports.into_iter().find_map(|r| r.err)
        {
            return Err(PodmanError::Api {
                op: "remove network",
                target: name.to_string(),
                status: 200,
                message: err,
            });
        }
        Ok(())
    }

    pub fn volume_exists(&mut self, name: &str) -> Result<bool, PodmanError> {
        self.exists("check volume", "volumes", name)
    }

    pub fn create_volume(
        &mut self,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<(), PodmanError> {
        self.create("create volume", "/volumes/create", name, body)
    }
}

fn protocol(op: &'static str, target: &str, reason: String) -> PodmanError {
    PodmanError::Protocol {
        op,
        target: target.to_string(),
        reason,
    }
}

/// Podman's error body is `{"cause","message","response"}`; fall back to the raw text.
fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ApiError {
        #[serde(default)]
        message: String,
        #[serde(default)]
        cause: String,
    }
    if let Ok(e) = serde_json::from_slice::<ApiError>(body) {
        if !e.message.is_empty() {
            return e.message;
        }
        if !e.cause.is_empty() {
            return e.cause;
        }
    }
    let text = String::from_utf8_lossy(body);
    let t = text.trim();
    if t.is_empty() {
        "no message".into()
    } else {
        t.chars().take(512).collect()
    }
}

/// Reads a pull progress stream: any `error` line fails; an `images`/`id` line succeeds.
fn scan_pull_stream<R: BufRead>(mut reader: R) -> Result<(), String> {
    #[derive(Deserialize)]
    struct Line {
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        images: Option<Vec<String>>,
        #[serde(default)]
        id: Option<String>,
    }
    let mut done = false;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = (&mut reader)
            .take(PULL_LINE_MAX_BYTES as u64)
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("reading Podman's pull progress: {e}"))?;
        if n == 0 {
            break;
        }
        crate::journal::keep_alive();
        if buf.last() != Some(&b'\n') && n == PULL_LINE_MAX_BYTES {
            return Err("a pull progress line exceeds 64 KiB".into());
        }
        let Ok(line) = serde_json::from_slice::<Line>(&buf) else {
            continue;
        };
        if let Some(e) = line.error.filter(|e| !e.is_empty()) {
            return Err(e);
        }
        if line.images.is_some_and(|i| !i.is_empty()) || line.id.is_some_and(|i| !i.is_empty()) {
            done = true;
        }
    }
    if done {
        Ok(())
    } else {
        Err("Podman's pull stream ended without naming the pulled image".into())
    }
}

/// Strips Docker's 8-byte stream headers from a non-TTY log stream (falls back to the raw
/// bytes when the stream is not framed).
fn demux_logs(body: &[u8]) -> String {
    let mut out = Vec::new();
    let mut rest = body;
    while rest.len() >= 8 && matches!(rest[0], 0..=2) && rest[1..4] == [0, 0, 0] {
        let len = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        let end = (8 + len).min(rest.len());
        out.extend_from_slice(&rest[8..end]);
        rest = &rest[end..];
    }
    if out.is_empty() {
        out.extend_from_slice(rest);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_stream_error_line_fails_even_with_http_200() {
        let stream = b"{\"stream\":\"Trying to pull...\"}\n{\"error\":\"initializing source: manifest unknown\"}\n";
        assert_eq!(
            scan_pull_stream(&stream[..]),
            Err("initializing source: manifest unknown".into())
        );
    }

    #[test]
    fn pull_stream_images_line_succeeds() {
        let stream = b"{\"stream\":\"Copying blob\"}\n{\"images\":[\"abc\"],\"id\":\"abc\"}\n";
        assert_eq!(scan_pull_stream(&stream[..]), Ok(()));
        assert!(scan_pull_stream(&b"{\"stream\":\"x\"}\n"[..]).is_err());
    }

    #[test]
    fn error_message_prefers_podman_message_then_raw_text() {
        assert_eq!(
            error_message(br#"{"cause":"no such container","message":"container x: no such container","response":404}"#),
            "container x: no such container"
        );
        assert_eq!(error_message(b"  plain text "), "plain text");
        assert_eq!(error_message(b""), "no message");
    }

    #[test]
    fn demuxes_framed_logs() {
        let mut body = vec![1, 0, 0, 0, 0, 0, 0, 3];
        body.extend_from_slice(b"hi\n");
        body.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 4]);
        body.extend_from_slice(b"err\n");
        assert_eq!(demux_logs(&body), "hi\nerr\n");
        assert_eq!(demux_logs(b"raw text"), "raw text");
    }
}
