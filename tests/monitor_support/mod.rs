//! Shared helpers for the monitor tests: a recording sink, sample logs copied into temp
//! dirs, and bounded waits.
#![allow(dead_code)]

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentwatch_ws::{Event, EventSink, EventType, LifecycleEventType, SessionState, SinkError};

/// Every wait in these tests gives up (and fails the test) after this long.
pub const WAIT: Duration = Duration::from_secs(10);

/// A sink that keeps every event it is given.
#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Vec<Event>>>);

impl EventSink for Recorder {
    fn handle_event(&self, event: &Event) -> Result<(), SinkError> {
        self.0.lock().unwrap().push(event.clone());
        Ok(())
    }
}

impl Recorder {
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }

    /// Takes the events recorded so far.
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// Waits (bounded) until `pred` holds for the recorded events.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        let deadline = Instant::now() + WAIT;
        loop {
            let events = self.events();
            if pred(&events) {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; got {events:#?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The sample log `name` from `tests/data/monitor`.
pub fn sample(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/monitor")
        .join(name);
    fs::read_to_string(path).unwrap()
}

/// Writes `content` to `path`, creating parent directories.
/// The lines of the sample `tests/data/monitor/<name>`, each with its newline, to write or
/// append one at a time.
pub fn sample_lines(name: &str) -> Vec<String> {
    sample(name).lines().map(|l| format!("{l}\n")).collect()
}

/// Reads events until `pred` holds for one of them (each read bounded by `next_event`'s
/// timeout), returning every event read.
pub async fn read_until(
    client: &mut crate::common::Client,
    pred: impl Fn(&Event) -> bool,
) -> Vec<Event> {
    let mut seen = Vec::new();
    loop {
        let event = crate::common::next_event(client).await;
        let done = pred(&event);
        seen.push(event);
        if done {
            return seen;
        }
    }
}

/// One source's monitor serving a connected client: the endpoint is served, a client has read
/// its (empty) snapshot, and a `Monitor` over `root` (never marking a session idle) publishes
/// into the endpoint's `Publisher`. `events` are what the client read up to the monitor's first
/// `health` event.
pub struct Served {
    pub publisher: agentwatch_ws::Publisher,
    pub client: crate::common::Client,
    pub handle: agentwatch_ws::monitor::MonitorHandle,
    pub events: Vec<Event>,
}

/// Serves a [`Monitor`](agentwatch_ws::monitor::Monitor) of `source` over `root` to one
/// connected client; see [`Served`].
pub async fn serve_monitor(source: agentwatch_ws::monitor::SourceKind, root: &Path) -> Served {
    let (ws, publisher) = agentwatch_ws::WsLayer::new().build("/ws");
    let addr = crate::common::serve(axum::Router::new().merge(ws)).await;
    let mut client = crate::common::connect(addr).await;
    assert_eq!(
        crate::common::next_event(&mut client).await.kind,
        EventType::Snapshot
    );
    let handle = agentwatch_ws::monitor::Monitor::builder()
        .root(source, root)
        .idle_after(None)
        .build(publisher.clone())
        .spawn()
        .unwrap();
    let events = read_until(&mut client, |e| e.kind == EventType::Health).await;
    Served {
        publisher,
        client,
        handle,
        events,
    }
}

pub fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// Appends `content` to `path`.
pub fn append(path: &Path, content: &str) {
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap();
    f.write_all(content.as_bytes()).unwrap();
    f.flush().unwrap();
}

/// The last state of session `id` in the `delta` events.
pub fn last_state(events: &[Event], id: &str) -> Option<SessionState> {
    events
        .iter()
        .rev()
        .filter(|e| e.kind == EventType::Delta)
        .flat_map(|e| e.updates.iter())
        .find(|s| s.id == id)
        .cloned()
}

/// The lifecycle event types, in order.
pub fn lifecycle_kinds(events: &[Event]) -> Vec<LifecycleEventType> {
    events
        .iter()
        .filter_map(|e| e.lifecycle.as_ref().map(|l| l.kind.clone()))
        .collect()
}

/// Asserts that seqs are consecutive, starting anywhere.
pub fn assert_consecutive(events: &[Event]) {
    for pair in events.windows(2) {
        assert_eq!(
            pair[1].seq,
            pair[0].seq + 1,
            "seqs not consecutive: {events:#?}"
        );
    }
}

/// A Claude project dir under `root`.
pub fn claude_project(root: &Path) -> PathBuf {
    root.join("-home-dev-parser")
}

/// One Claude user prompt line.
pub fn claude_user(session: &str, uuid: &str, ts: &str, text: &str) -> String {
    format!(
        r#"{{"type":"user","uuid":"{uuid}","sessionId":"{session}","timestamp":"{ts}","cwd":"/home/dev/parser","gitBranch":"main","message":{{"role":"user","content":{}}}}}"#,
        serde_json::to_string(text).unwrap()
    ) + "\n"
}

/// One Claude assistant line: a content block of message `msg`.
pub fn claude_assistant(
    session: &str,
    msg: &str,
    ts: &str,
    block: &str,
    stop: &str,
    output: i64,
) -> String {
    format!(
        r#"{{"type":"assistant","uuid":"{msg}-{output}","sessionId":"{session}","timestamp":"{ts}","message":{{"id":"{msg}","role":"assistant","model":"claude-opus-4-1-20250805","content":[{block}],"stop_reason":{stop},"usage":{{"input_tokens":100,"cache_creation_input_tokens":1000,"cache_read_input_tokens":50000,"output_tokens":{output}}}}}}}"#
    ) + "\n"
}
