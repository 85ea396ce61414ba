//! The dashboard example as a child process: started on a free port, waited for until it
//! prints its URL, killed (and reaped) when dropped, also when the test panics, and then its
//! output is printed to explain the failure.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a dashboard may take from spawn to its URL line (its binary is built already).
pub const START: Duration = Duration::from_secs(30);

/// The dashboard binary, built once per test process with the test's profile.
pub fn binary() -> &'static PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| crate::common::example_binary("dashboard"))
}

/// A running dashboard.
pub struct Dashboard {
    pub name: String,
    pub port: u16,
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
}

impl Dashboard {
    /// Starts `dashboard --port <free port> args…` and waits for its URL line.
    pub fn start(name: &str, args: &[&str]) -> Dashboard {
        let dashboard = Dashboard::spawn(name, args);
        dashboard.wait_for("open http://");
        dashboard
    }

    /// Starts `dashboard --port <free port> args…` without waiting for anything.
    pub fn spawn(name: &str, args: &[&str]) -> Dashboard {
        Dashboard::spawn_with(name, args, |_| {})
    }

    /// `spawn`, with `configure` applied to the command first (its environment, say).
    pub fn spawn_with(
        name: &str,
        args: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> Dashboard {
        let port = free_port();
        let mut command = Command::new(binary());
        configure(&mut command);
        let mut child = command
            .args(["--port", &port.to_string()])
            .args(args)
            .env_remove("PORT")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the dashboard {name}: {e}"));
        let output = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().expect("piped stdout"), &output);
        collect(child.stderr.take().expect("piped stderr"), &output);
        Dashboard {
            name: name.to_string(),
            port,
            child,
            output,
        }
    }

    /// Waits (at most [`START`]) until a line containing `needle` was printed; returns it.
    pub fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + START;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| l.contains(needle)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "dashboard {} printed no line with {needle:?} within {START:?}:\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (at most [`START`]) for it to exit on its own; its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + START;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the dashboard") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "dashboard {} did not exit within {START:?}:\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it now (SIGKILL), as a node that dies.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn lines(&self) -> Vec<String> {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `ws://127.0.0.1:<port>/ws` plus `query` (with its `?`, or empty).
    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://127.0.0.1:{}/ws{query}", self.port)
    }

    /// A bodiless `method path` request to it: see [`http_request`].
    pub fn request(&self, method: &str, path: &str) -> (u16, String) {
        http_request(self.port, method, path)
    }

    /// `POST /debug/sessions?QUERY` (the dashboard runs with `--inject`); panics unless 200.
    pub fn inject(&self, query: &str) {
        let (status, body) = self.request("POST", &format!("/debug/sessions?{query}"));
        assert_eq!(status, 200, "injecting {query}: {body}");
    }

    /// Everything it printed so far (stdout and stderr, interleaved by line).
    pub fn output(&self) -> String {
        self.lines().join("\n")
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- output of dashboard {} ----\n{}\n----",
                self.name,
                self.output()
            );
        }
    }
}

/// Reads `stream` line by line into `output` on a thread.
fn collect(stream: impl Read + Send + 'static, output: &Arc<Mutex<Vec<String>>>) {
    let output = output.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            output.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    });
}

/// A loopback port nothing listens on (at the time of asking).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A bodiless HTTP/1.1 `method path` request to `127.0.0.1:port` (`Connection: close`, 5 s
/// timeouts); returns the status code (0 when the answer has none) and the body.
pub fn http_request(port: u16, method: &str, path: &str) -> (u16, String) {
    use std::io::Write;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connecting to 127.0.0.1:{port}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set read timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .unwrap_or_else(|e| panic!("{method} {path} on 127.0.0.1:{port}: {e}"));
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
