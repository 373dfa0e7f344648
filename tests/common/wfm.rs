//! The test Fleet Manager (`tests/wfm/wfm.py`) as a process the tests start, stop (an
//! outage) and switch between misbehaviours.

use super::{free_port, repo};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestWfm {
    pub dir: PathBuf,
    pub port: u16,
    pub token_ttl: u64,
    child: Option<Child>,
}

impl TestWfm {
    pub fn start(dir: PathBuf, token_ttl: u64) -> TestWfm {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir wfm");
        let mut w = TestWfm {
            dir,
            port: free_port(),
            token_ttl,
            child: None,
        };
        w.up(false);
        w
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/api/v1", self.port)
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn rogue_ca(&self) -> PathBuf {
        self.dir.join("rogue-ca.pem")
    }

    /// Starts the server (again); `rogue`: with a certificate from another CA.
    pub fn up(&mut self, rogue: bool) {
        self.down();
        let _ = std::fs::remove_file(self.dir.join("ready"));
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(repo().join("tests/wfm/wfm.py"))
            .arg(&self.dir)
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--token-ttl")
            .arg(self.token_ttl.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if rogue {
            cmd.arg("--rogue-cert");
        }
        self.child = Some(cmd.spawn().expect("start tests/wfm/wfm.py"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.dir.join("ready").exists()
            || std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err()
        {
            assert!(Instant::now() < deadline, "test WFM did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server: connections are refused until [`TestWfm::up`].
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Makes the WFM forget every token it issued: the next call with one gets 401.
    pub fn revoke_tokens(&self) {
        std::fs::write(self.dir.join("revoke"), "").expect("write revoke");
    }

    pub fn set_mode(&self, mode: &str) {
        std::fs::write(self.dir.join("mode"), mode).expect("write mode");
    }

    fn jsonl(&self, name: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join(name))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Every request the WFM got.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.jsonl("requests.jsonl")
    }

    /// Requests that did not conform to the draft (must be none).
    pub fn invalid(&self) -> Vec<serde_json::Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["valid"] == false)
            .collect()
    }

    /// Accepted deployment statuses as `deployment:state`, in arrival order.
    pub fn reports(&self) -> Vec<String> {
        self.jsonl("reports.jsonl")
            .iter()
            .map(|r| {
                format!(
                    "{}:{}",
                    r["deploymentId"].as_str().unwrap_or(""),
                    r["state"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    /// Requests with this method whose path ends with `suffix`.
    pub fn count(&self, method: &str, suffix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r["method"] == method && r["path"].as_str().unwrap_or("").ends_with(suffix))
            .count()
    }
}

impl Drop for TestWfm {
    fn drop(&mut self) {
        self.down();
    }
}
