//! Headless Chromium driven over the DevTools protocol (a WebSocket, via tokio-tungstenite):
//! no WebDriver, no downloaded browser. Shared by the browser tests; every wait is bounded
//! and the browser process is killed and reaped when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, Weak, mpsc};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use super::process::{ProcessGuard, ScratchDir};

pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long a DevTools command may go without a reply, unless the caller chooses otherwise.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Whether to run: false (after a loud notice) when Chromium is missing and
/// `AGENTWATCH_REQUIRE_BROWSER=1` is not set; a panic when it is set.
pub fn chromium_available() -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    if std::env::var("AGENTWATCH_REQUIRE_BROWSER").as_deref() == Ok("1") {
        panic!(
            "{CHROMIUM} not found and AGENTWATCH_REQUIRE_BROWSER=1: \
             install it with `apt-get install chromium`"
        );
    }
    super::skip_notice(
        &format!("{CHROMIUM} not found"),
        "Install it with `apt-get install chromium`",
        "AGENTWATCH_REQUIRE_BROWSER",
    );
    false
}

/// A headless Chromium process in a fresh profile directory, killed (and reaped) and its
/// profile removed when dropped.
pub struct Chromium {
    /// Its browser-level DevTools WebSocket URL.
    pub devtools_url: String,
    _process: ProcessGuard,
    _profile: ScratchDir,
}

impl Chromium {
    /// Launches Chromium with `extra_args` added to the usual headless flags.
    pub fn launch(extra_args: &[&str]) -> Chromium {
        let profile = ScratchDir::new("agentwatch-chromium");
        let (process, devtools_url) = launch_chromium(&profile.path, extra_args);
        Chromium {
            devtools_url,
            _process: process,
            _profile: profile,
        }
    }

    /// The Chromium that the tests of `shared` use together: the one already running when
    /// another [`Browser`] still holds it, else a new one launched with `extra_args` (and the
    /// flags that keep a page in a background tab running at full speed). It is killed when
    /// the last `Browser` that holds it is dropped. One `shared` per set of `extra_args`.
    pub fn shared(shared: &'static Mutex<Weak<Chromium>>, extra_args: &[&str]) -> Arc<Chromium> {
        let mut current = shared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(chromium) = current.upgrade() {
            return chromium;
        }
        let mut args = vec![
            "--disable-background-timer-throttling",
            "--disable-backgrounding-occluded-windows",
            "--disable-renderer-backgrounding",
        ];
        args.extend_from_slice(extra_args);
        let chromium = Arc::new(Chromium::launch(&args));
        *current = Arc::downgrade(&chromium);
        chromium
    }
}

/// A page (a target of its own, in a window of its own) in a headless Chromium, driven over
/// its own DevTools connection.
pub struct Browser {
    pub cdp: Cdp,
    target_id: String,
    _chromium: Arc<Chromium>,
}

impl Browser {
    /// Starts Chromium with `extra_args` added to the usual headless flags; each DevTools
    /// command may take `CALL_TIMEOUT`.
    pub async fn start(extra_args: &[&str]) -> Browser {
        Browser::start_with(extra_args, CALL_TIMEOUT).await
    }

    /// `start`, with each DevTools command (those of the start included) failing the test
    /// when it gets no reply within `call_timeout`.
    pub async fn start_with(extra_args: &[&str], call_timeout: Duration) -> Browser {
        Browser::open_in(Arc::new(Chromium::launch(extra_args)), call_timeout).await
    }

    /// Opens a new page in `chromium` (in a window of its own, with focus emulated so that
    /// keyboard focus works as in the front window), over a DevTools connection of its own.
    pub async fn open_in(chromium: Arc<Chromium>, call_timeout: Duration) -> Browser {
        let mut cdp = Cdp::connect(&chromium.devtools_url).await;
        cdp.call_timeout = call_timeout;
        let target = cdp
            .call(
                "Target.createTarget",
                json!({ "url": "about:blank", "newWindow": true }),
            )
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
            "Emulation.setFocusEmulationEnabled",
            json!({ "enabled": true }),
        )
        .await;
        Browser {
            cdp,
            target_id,
            _chromium: chromium,
        }
    }

    /// Closes this page (the browser goes when its last `Browser` is dropped).
    pub async fn close(mut self) {
        self.cdp.session = None;
        let target_id = self.target_id.clone();
        self.cdp
            .call("Target.closeTarget", json!({ "targetId": target_id }))
            .await;
    }

    /// Sets the page's viewport to `width` × `height` CSS pixels (scale 1, not mobile).
    pub async fn viewport(&mut self, width: u32, height: u32) {
        self.cdp
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
            )
            .await;
    }

    /// Starts navigating to `url` (failing on a navigation error) without waiting for the load.
    pub async fn open(&mut self, url: &str) {
        let nav = self.cdp.call("Page.navigate", json!({ "url": url })).await;
        assert!(
            nav.get("errorText").is_none(),
            "navigation to {url} failed: {nav}"
        );
    }

    /// Navigates and waits (bounded) until the document is complete.
    pub async fn navigate(&mut self, url: &str) {
        self.open(url).await;
        self.cdp
            .wait_for(
                "the page to load",
                Duration::from_secs(10),
                "document.readyState === 'complete'",
            )
            .await;
    }
}

/// The DevTools protocol, just enough of it.
pub struct Cdp {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// The flattened page session commands go to (None: the browser target).
    pub session: Option<String>,
    /// Exceptions and console errors the page reported.
    pub errors: Vec<String>,
    /// How long `call` waits for a reply before failing the test.
    pub call_timeout: Duration,
}

impl Cdp {
    pub async fn connect(url: &str) -> Cdp {
        let (ws, _) = tokio::time::timeout(Duration::from_secs(10), connect_async(url))
            .await
            .unwrap_or_else(|_| panic!("connecting to DevTools at {url} timed out"))
            .unwrap_or_else(|e| panic!("connecting to DevTools at {url}: {e}"));
        Cdp {
            ws,
            next_id: 0,
            session: None,
            errors: Vec::new(),
            call_timeout: CALL_TIMEOUT,
        }
    }

    /// Sends a command and waits (at most `call_timeout`) for its result.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = &self.session {
            msg["sessionId"] = json!(session);
        }
        let limit = self.call_timeout;
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
        match tokio::time::timeout(limit, fut).await {
            Ok(result) => result,
            Err(_) => panic!("DevTools command {method} got no reply within {limit:?}"),
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

    /// The exceptions and console errors the page reported so far.
    pub fn page_errors(&self) -> Vec<String> {
        self.errors.clone()
    }

    /// Evaluates a JavaScript expression in the page and returns its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        self.evaluate(expression, false).await
    }

    /// Evaluates an expression giving a promise and returns what it resolves to (give the
    /// promise its own timeout under `call_timeout`).
    pub async fn eval_async(&mut self, expression: &str) -> Value {
        self.evaluate(expression, true).await
    }

    async fn evaluate(&mut self, expression: &str, await_promise: bool) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true,
                        "awaitPromise": await_promise }),
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

    /// Polls `expression` until it gives something other than null/false, within `timeout`;
    /// on timeout the failure shows the start of the page's text.
    pub async fn wait_for(&mut self, what: &str, timeout: Duration, expression: &str) -> Value {
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

/// Launches Chromium headless with a DevTools port and returns its DevTools URL.
fn launch_chromium(user_data: &Path, extra_args: &[&str]) -> (ProcessGuard, String) {
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
            "--mute-audio",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ])
        .args(extra_args)
        .arg(format!("--user-data-dir={}", user_data.display()))
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
                    "chromium printed no `DevTools listening on` line within 30 s; stderr:\n{}",
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
