//! `python3 -m http.server` serving a directory on a free local port, for package
//! downloads over plain HTTP (benches/packages.rs and tests/e2e_packages.rs).
#![allow(clippy::unwrap_used, dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a loaded machine may take to start python and answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The server process and its port; killed on drop.
pub struct FileServer(Child, u16);

impl FileServer {
    /// Starts it and waits until it answers `GET /` (panics if not within 20 s).
    pub fn start(dir: &Path) -> FileServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = FileServer(child, port);
        let deadline = Instant::now() + START_TIMEOUT;
        while !answers(port) {
            assert!(
                Instant::now() < deadline,
                "http.server on {port} did not answer within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    pub fn port(&self) -> u16 {
        self.1
    }
}

/// Whether an HTTP server on `port` answers `GET /`.
fn answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 5];
    s.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
