//! End-to-end test of the `dashboard` example in a real browser.
//!
//! Starts the example (`--inject --rate 20`) on a free port, opens its page in headless Debian
//! Chromium (`/usr/bin/chromium`) and drives Chromium over the DevTools protocol directly
//! (a WebSocket, via `tokio-tungstenite`): no WebDriver, no downloaded browser. It checks
//! that session cards appear, that cards change as deltas arrive, that a session injected
//! through `POST /debug/sessions` shows up within a second, and that the connection indicator
//! says connected; then it saves a screenshot to `target/browser-test/dashboard.png`.
//!
//! Without `/usr/bin/chromium` the test prints a notice and passes, unless
//! `AGENTWATCH_REQUIRE_BROWSER=1` is set (as CI does), in which case it fails.
//! Install the browser with `apt-get install chromium`.

use std::collections::HashMap;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream as TokioTcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

const CHROMIUM: &str = "/usr/bin/chromium";
const VIEWPORT: (u32, u32) = (1440, 900);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_live_sessions_in_chromium() {
    if !Path::new(CHROMIUM).exists() {
        if std::env::var("AGENTWATCH_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!(
                "{CHROMIUM} not found and AGENTWATCH_REQUIRE_BROWSER=1: \
                 install it with `apt-get install chromium`"
            );
        }
        eprintln!(
            "\n{bar}\n  SKIPPED browser test: {CHROMIUM} not found.\n  \
             Install it with `apt-get install chromium` to run it;\n  \
             set AGENTWATCH_REQUIRE_BROWSER=1 to make its absence a failure.\n{bar}\n",
            bar = "!".repeat(72)
        );
        return;
    }
    let started = Instant::now();
    let scratch = ScratchDir::new("agentwatch-browser-test");

    // The example server.
    let binary = dashboard_binary();
    let port = free_port();
    let server = start_dashboard(&binary, port, &scratch.path.join("dashboard.log"));
    let base = format!("http://127.0.0.1:{port}");
    let server_ready = started.elapsed();

    // The browser.
    let user_data = scratch.path.join("chromium-profile");
    fs::create_dir_all(&user_data).expect("create chromium profile dir");
    let (browser, devtools_url) = launch_chromium(&user_data);
    let mut cdp = Cdp::connect(&devtools_url).await;
    let target = cdp
        .call("Target.createTarget", json!({ "url": "about:blank" }))
        .await;
    let target_id = target["targetId"].as_str().expect("targetId").to_string();
    let attached = cdp
        .call(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        )
        .await;
    cdp.session = Some(
        attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string(),
    );
    cdp.call("Runtime.enable", json!({})).await;
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": VIEWPORT.0, "height": VIEWPORT.1, "deviceScaleFactor": 1, "mobile": false }),
    )
    .await;
    let nav = cdp
        .call("Page.navigate", json!({ "url": format!("{base}/") }))
        .await;
    assert!(
        nav.get("errorText").is_none(),
        "navigation to {base}/ failed: {nav}"
    );

    // 1. The page connects and says so.
    let state = cdp
        .wait_for(
            "the connection indicator to say connected",
            Duration::from_secs(15),
            "(() => { const c = document.getElementById('conn-status'); \
               return c && c.dataset.state === 'connected' ? c.textContent : null; })()",
        )
        .await;
    assert!(
        state.as_str().unwrap_or("").contains("connected"),
        "indicator text: {state}"
    );

    // 2. Session cards appear, with their content.
    let cards = cdp
        .wait_for(
            "session cards",
            Duration::from_secs(10),
            "(() => { const n = document.querySelectorAll('[data-session-id]').length; \
               return n > 0 ? n : null; })()",
        )
        .await;
    eprintln!("browser test: {cards} session cards rendered");
    let first_card = cdp
        .eval("document.querySelector('[data-session-id]').textContent")
        .await;
    let first_card = first_card.as_str().unwrap_or_default();
    assert!(
        first_card.contains('%') && first_card.contains("tokens") && first_card.contains("msgs"),
        "a card shows no context/token/message figures: {first_card:?}"
    );

    // 3. Cards change as deltas arrive (ignoring the relative times, which tick by themselves).
    const CARD_TEXTS: &str = "(() => { const o = {}; \
        for (const c of document.querySelectorAll('[data-session-id]')) { \
          const k = c.cloneNode(true); k.querySelectorAll('.rel').forEach(e => e.remove()); \
          o[c.dataset.sessionId] = k.textContent; } \
        return o; })()";
    let before: HashMap<String, String> =
        serde_json::from_value(cdp.eval(CARD_TEXTS).await).expect("card texts");
    let deadline = Instant::now() + Duration::from_secs(10);
    let changed = loop {
        let now: HashMap<String, String> =
            serde_json::from_value(cdp.eval(CARD_TEXTS).await).expect("card texts");
        if let Some(id) = before
            .iter()
            .find(|(id, text)| now.get(*id).is_some_and(|t| t != *text))
            .map(|(id, _)| id.clone())
        {
            break id;
        }
        assert!(
            Instant::now() < deadline,
            "no card changed within 10 s while the simulation runs at 20 events/s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("browser test: card {changed} changed as deltas arrived");

    // 4. A session injected through the server's store + hub path appears within a second.
    let id = format!("browser-test-{:012x}", random_u64() & 0xffff_ffff_ffff);
    let (status, body) = http_post(port, &format!("/debug/sessions?id={id}&source=codex"));
    assert_eq!(
        status, 200,
        "POST /debug/sessions answered {status}: {body}"
    );
    let posted = Instant::now();
    let query = format!("document.querySelector('[data-session-id=\"{id}\"]') !== null");
    loop {
        if cdp.eval(&query).await == Value::Bool(true) {
            break;
        }
        assert!(
            posted.elapsed() < Duration::from_secs(1),
            "injected session {id} did not appear on the page within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let appeared_after = posted.elapsed();
    let injected_text = cdp
        .eval(&format!(
            "document.querySelector('[data-session-id=\"{id}\"]').textContent"
        ))
        .await;
    let injected_text = injected_text.as_str().unwrap_or_default();
    assert!(
        injected_text.contains(&id) && injected_text.contains("codex"),
        "injected card text: {injected_text:?}"
    );
    eprintln!("browser test: injected session appeared after {appeared_after:?}");

    // 5. Still connected; the footer shows progress; nothing was fetched from elsewhere.
    let indicator = cdp
        .eval(
            "(() => { const c = document.getElementById('conn-status'); \
               return [c.dataset.state, c.textContent]; })()",
        )
        .await;
    assert_eq!(
        indicator,
        json!(["connected", "connected"]),
        "connection indicator"
    );
    let seq = cdp
        .eval("document.getElementById('last-seq').textContent")
        .await;
    assert!(
        seq.as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|s| s > 0),
        "footer shows no last seq: {seq}"
    );
    let foreign = cdp
        .eval(&format!(
            "performance.getEntriesByType('resource').map(e => e.name)\
               .filter(u => !u.startsWith('{base}/') && !u.startsWith('data:'))"
        ))
        .await;
    assert_eq!(
        foreign,
        json!([]),
        "the page fetched from outside its origin"
    );

    // Let the relative times and the rate settle for a nicer picture, then screenshot.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let shot = cdp
        .call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": false }),
        )
        .await;
    let png = base64_decode(shot["data"].as_str().expect("screenshot data"));
    assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
    let shot_path = target_dir().join("browser-test").join("dashboard.png");
    fs::create_dir_all(shot_path.parent().unwrap()).expect("create screenshot dir");
    fs::write(&shot_path, &png).expect("write screenshot");
    eprintln!("browser test: screenshot saved to {}", shot_path.display());

    // Text from the wire is shown as text, never parsed as HTML.
    let evil_id = format!("{id}-html");
    let evil_source = "<img src=x onerror=\"document.body.dataset.pwned=1\">";
    let (status, body) = http_post(
        port,
        &format!(
            "/debug/sessions?id={evil_id}&source={}",
            percent_encode(evil_source)
        ),
    );
    assert_eq!(
        status, 200,
        "POST /debug/sessions answered {status}: {body}"
    );
    let rendered = cdp
        .wait_for(
            "the session with an HTML source",
            Duration::from_secs(5),
            &format!(
                "(() => {{ const c = document.querySelector('[data-session-id=\"{evil_id}\"]'); \
                   return c ? [c.querySelector('.badge').textContent, \
                               c.querySelectorAll('img').length, \
                               document.body.dataset.pwned || ''] : null; }})()"
            ),
        )
        .await;
    assert_eq!(
        rendered,
        json!([evil_source, 0, ""]),
        "wire text must be rendered as text"
    );

    // 6. Ctrl-C on the server: the hub closes the page's socket (1001), the page counts down
    //    to a reconnect, and once the server is back it reconnects (with `?since=`) on its own.
    let mut server = server;
    server.interrupt();
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(
        status.success(),
        "the dashboard exited with {status} on Ctrl-C"
    );
    let text = cdp
        .wait_for(
            "the indicator to count down to a reconnect",
            Duration::from_secs(5),
            "(() => { const c = document.getElementById('conn-status'); \
               return c.dataset.state === 'reconnecting' ? c.textContent : null; })()",
        )
        .await;
    assert!(
        text.as_str().unwrap_or("").starts_with("reconnecting in "),
        "indicator while the server is down: {text}"
    );
    let shot = cdp
        .call("Page.captureScreenshot", json!({ "format": "png" }))
        .await;
    fs::write(
        shot_path.with_file_name("dashboard-reconnecting.png"),
        base64_decode(shot["data"].as_str().expect("screenshot data")),
    )
    .expect("write screenshot");
    let server = start_dashboard(&binary, port, &scratch.path.join("dashboard-2.log"));
    let tip = cdp
        .wait_for(
            "the page to reconnect to the restarted server",
            Duration::from_secs(20),
            "(() => { const c = document.getElementById('conn-status'); \
               return c.dataset.state === 'connected' ? c.title : null; })()",
        )
        .await;
    assert!(
        tip.as_str().unwrap_or("").contains("/ws?since="),
        "the reconnect did not ask for the missed events with ?since=: {tip}"
    );
    // The new server's snapshot replaced the old state: the injected session is gone.
    cdp.wait_for(
        "the injected session to disappear after the new snapshot",
        Duration::from_secs(5),
        &format!("document.querySelector('[data-session-id=\"{id}\"]') === null"),
    )
    .await;
    eprintln!("browser test: page reconnected after a server restart");

    let errors = cdp.page_errors();
    assert!(errors.is_empty(), "the page reported errors: {errors:#?}");

    // Close the browser cleanly (the guard kills it anyway, also on failure).
    cdp.session = None;
    cdp.call("Browser.close", json!({})).await;
    drop(cdp);
    drop(browser);
    drop(server);
    eprintln!(
        "browser test: passed in {:.1?} (server ready after {server_ready:.1?})",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// The DevTools protocol, just enough of it.

struct Cdp {
    ws: WebSocketStream<MaybeTlsStream<TokioTcpStream>>,
    next_id: u64,
    /// The flattened page session commands go to (None: the browser target).
    session: Option<String>,
    /// Exceptions and console errors the page reported.
    errors: Vec<String>,
}

impl Cdp {
    async fn connect(url: &str) -> Cdp {
        let (ws, _) = tokio::time::timeout(Duration::from_secs(10), connect_async(url))
            .await
            .unwrap_or_else(|_| panic!("connecting to DevTools at {url} timed out"))
            .unwrap_or_else(|e| panic!("connecting to DevTools at {url}: {e}"));
        Cdp {
            ws,
            next_id: 0,
            session: None,
            errors: Vec::new(),
        }
    }

    /// Sends a command and waits (at most 10 s) for its result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = &self.session {
            msg["sessionId"] = json!(session);
        }
        let fut = async {
            self.ws
                .send(Message::Text(msg.to_string().into()))
                .await
                .unwrap_or_else(|e| panic!("sending {method}: {e}"));
            loop {
                let frame = self
                    .ws
                    .next()
                    .await
                    .unwrap_or_else(|| panic!("DevTools connection closed during {method}"))
                    .unwrap_or_else(|e| panic!("reading DevTools reply to {method}: {e}"));
                let Message::Text(text) = frame else { continue };
                let reply: Value = serde_json::from_str(&text).expect("DevTools sent bad JSON");
                if reply["id"].as_u64() == Some(id) {
                    if let Some(error) = reply.get("error") {
                        panic!("{method} failed: {error}");
                    }
                    return reply["result"].clone();
                }
                self.note_event(&reply);
            }
        };
        match tokio::time::timeout(Duration::from_secs(10), fut).await {
            Ok(result) => result,
            Err(_) => panic!("DevTools command {method} got no reply within 10 s"),
        }
    }

    fn note_event(&mut self, event: &Value) {
        match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let d = &event["params"]["exceptionDetails"];
                let text = d["exception"]["description"]
                    .as_str()
                    .or(d["text"].as_str())
                    .unwrap_or("exception");
                self.errors.push(format!("exception: {text}"));
            }
            Some("Runtime.consoleAPICalled") if event["params"]["type"] == "error" => {
                self.errors
                    .push(format!("console.error: {}", event["params"]["args"]));
            }
            _ => {}
        }
    }

    fn page_errors(&self) -> Vec<String> {
        self.errors.clone()
    }

    /// Evaluates a JavaScript expression in the page and returns its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        if let Some(details) = result.get("exceptionDetails") {
            panic!("evaluating `{expression}` threw: {details}");
        }
        result["result"]
            .get("value")
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Polls `expression` until it gives something other than null/false, within `timeout`.
    async fn wait_for(&mut self, what: &str, timeout: Duration, expression: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(expression).await;
            if !matches!(v, Value::Null | Value::Bool(false)) {
                return v;
            }
            if Instant::now() >= deadline {
                let body = self
                    .eval("document.body ? document.body.innerText.slice(0, 2000) : ''")
                    .await;
                panic!("timed out after {timeout:?} waiting for {what}; page text:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn launch_chromium(user_data: &Path) -> (ProcessGuard, String) {
    let mut command = Command::new(CHROMIUM);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--mute-audio",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", user_data.display()))
        .arg(format!("--window-size={},{}", VIEWPORT.0, VIEWPORT.1))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut guard = ProcessGuard::spawn("chromium", &mut command, None);
    let stderr = guard.child.stderr.take().expect("chromium stderr");
    let (tx, rx) = mpsc::channel();
    let tail = guard.stderr_tail.clone();
    // Read stderr for the DevTools address, then keep draining it (a full pipe would stall
    // Chromium), remembering the last lines for failure messages.
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(url) = line.strip_prefix("DevTools listening on ") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(url.trim().to_string());
                }
            }
            if line.contains("dbus/") {
                continue; // there is no D-Bus in a test environment; Chromium says so a lot
            }
            let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
            if tail.len() >= 40 {
                tail.remove(0);
            }
            tail.push(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(url) => return (guard, url),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Ok(Some(status)) = guard.child.try_wait() {
                    panic!(
                        "chromium exited ({status}) before listening; its stderr:\n{}",
                        guard.tail()
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "chromium printed no `DevTools listening on` line within 30 s; its stderr:\n{}",
                    guard.tail()
                );
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                "chromium closed stderr before listening; its stderr:\n{}",
                guard.tail()
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Processes, ports, files.

/// Starts the example on `port` (logging to `log`) and waits until it listens.
fn start_dashboard(binary: &Path, port: u16, log: &Path) -> ProcessGuard {
    let file = fs::File::create(log).expect("create server log");
    let mut command = Command::new(binary);
    command
        .args(["--port", &port.to_string(), "--inject", "--rate", "20"])
        .env("RUST_LOG", "info")
        .env_remove("PORT")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("clone log handle"))
        .stderr(file);
    let mut server = ProcessGuard::spawn("dashboard", &mut command, Some(log.to_path_buf()));
    wait_for_listener(port, &mut server, Duration::from_secs(30));
    server
}

/// Kills and reaps the child when dropped, also when the test panics (then it prints the
/// child's log, to help explain the failure).
struct ProcessGuard {
    name: &'static str,
    child: Child,
    log: Option<PathBuf>,
    stderr_tail: Arc<Mutex<Vec<String>>>,
}

impl ProcessGuard {
    fn spawn(name: &'static str, command: &mut Command, log: Option<PathBuf>) -> ProcessGuard {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({:?}): {e}", command.get_program()));
        ProcessGuard {
            name,
            child,
            log,
            stderr_tail: Arc::default(),
        }
    }

    /// Sends SIGINT, as Ctrl-C in a terminal would.
    fn interrupt(&mut self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill -INT");
        assert!(status.success(), "kill -INT {} failed", self.child.id());
    }

    /// Waits for the child to exit on its own, at most `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}:\n{}",
                self.name,
                self.tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn tail(&self) -> String {
        if let Some(log) = &self.log {
            let text = fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            return lines[lines.len().saturating_sub(40)..].join("\n");
        }
        self.stderr_tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- last output of {} ----\n{}\n----",
                self.name,
                self.tail()
            );
        }
    }
}

/// A fresh directory under the system temp dir, removed when dropped.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn new(prefix: &str) -> ScratchDir {
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{:x}",
            std::process::id(),
            random_u64()
        ));
        fs::create_dir_all(&path).expect("create scratch dir");
        ScratchDir { path }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

fn random_u64() -> u64 {
    // RandomState is seeded randomly per process; mix in the clock for good measure.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

fn wait_for_listener(port: u16, server: &mut ProcessGuard, timeout: Duration) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!(
                "the dashboard example exited ({status}) before listening on {port}:\n{}",
                server.tail()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the dashboard example did not listen on {port} within {timeout:?}:\n{}",
            server.tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Percent-encodes everything but unreserved characters, for a query parameter value.
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A bodiless HTTP/1.1 POST; returns the status code and body.
fn http_post(port: u16, path: &str) -> (u16, String) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to dashboard");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set read timeout");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send POST");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read POST response");
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

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
    }
}

/// The example binary `cargo test` built next to this test (`target/<profile>/examples/`),
/// or a fresh build of it when it is missing or older than its sources.
fn dashboard_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/browser-<hash> -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let binary = profile_dir
        .join("examples")
        .join(format!("dashboard{}", std::env::consts::EXE_SUFFIX));
    if binary.exists() && !older_than_sources(&binary) {
        return binary;
    }
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_string(),
        Some(other) => other.to_string(),
    };
    eprintln!(
        "browser test: building the dashboard example ({}), profile {profile}",
        if binary.exists() { "stale" } else { "missing" }
    );
    let mut child = Command::new(env!("CARGO"))
        .args(["build", "--example", "dashboard", "--profile", &profile])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .spawn()
        .expect("run cargo build --example dashboard");
    let deadline = Instant::now() + Duration::from_secs(900);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for cargo") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`cargo build --example dashboard` did not finish within 15 minutes");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success(), "`cargo build --example dashboard` failed");
    assert!(
        binary.exists(),
        "{} missing after the build",
        binary.display()
    );
    binary
}

/// Whether any source the example is built from changed after `binary` was linked.
fn older_than_sources(binary: &Path) -> bool {
    fn newest(path: &Path, newest_seen: &mut SystemTime) {
        let Ok(meta) = fs::metadata(path) else { return };
        if meta.is_dir() {
            for entry in fs::read_dir(path).into_iter().flatten().flatten() {
                newest(&entry.path(), newest_seen);
            }
        } else if let Ok(modified) = meta.modified() {
            *newest_seen = (*newest_seen).max(modified);
        }
    }
    let Ok(built) = fs::metadata(binary).and_then(|m| m.modified()) else {
        return true;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut latest = SystemTime::UNIX_EPOCH;
    for part in ["src", "examples/dashboard", "Cargo.toml"] {
        newest(&root.join(part), &mut latest);
    }
    latest > built
}

fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => panic!("invalid base64 byte {c:#x}"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[test]
fn base64_decodes() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode("YWJj"), b"abc");
}
