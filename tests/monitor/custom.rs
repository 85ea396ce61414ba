//! A source of the user's own, registered through the public `Source` trait: its sessions,
//! subagents, lifecycle and health reach a WebSocket client the way a built-in source's do.

use std::path::Path;

use crate::common;
use crate::monitor_support;

use agentwatch_ws::monitor::{LineResult, LogFile, LogParser, Monitor, SessionReport, Source};
use agentwatch_ws::{Activity, EventType, HealthStatus, LifecycleEventType, Timestamp, WsLayer};
use axum::Router;
use common::{connect, next_event, serve};
use monitor_support::{Recorder, append, last_state, lifecycle_kinds, read_until, write};

const ID: &str = "7c1d2e3f-0000-4000-8000-00000000c051";

/// Logs `<root>/<id>.jsonl` (sessions), `<root>/<parent>/<agent>.jsonl` (subagents) and
/// `<root>/<id>.json` (a whole JSON document: `{"time":…,"messages":n}`).
struct Tiny;

impl Source for Tiny {
    fn name(&self) -> &str {
        "tiny"
    }

    fn classify(&self, relative: &Path) -> Option<LogFile> {
        let parts: Vec<&str> = relative.iter().filter_map(|p| p.to_str()).collect();
        match parts.as_slice() {
            [name] if name.ends_with(".jsonl") => Some(LogFile::session()),
            [name] if name.ends_with(".json") => Some(LogFile::session().whole()),
            [parent, name] => Some(LogFile::subagent(*parent, name.strip_suffix(".jsonl")?)),
            _ => None,
        }
    }

    fn parser(&self, _file: &LogFile) -> Box<dyn LogParser> {
        Box::new(TinyLog(SessionReport::default()))
    }
}

struct TinyLog(SessionReport);

impl TinyLog {
    fn time(&mut self, v: &serde_json::Value) {
        if let Some(at) = v["time"].as_str().and_then(|t| Timestamp::parse(t).ok()) {
            if self.0.started_at == Timestamp::ZERO {
                self.0.started_at = at;
            }
            self.0.last_activity_at = at;
        }
    }
}

impl LogParser for TinyLog {
    fn line(&mut self, line: &[u8]) -> LineResult {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            return LineResult::Invalid;
        };
        let r = &mut self.0;
        match v["type"].as_str() {
            Some("user") => {
                r.messages += 1;
                r.activity = Activity::Working;
                r.session_id = v["session"].as_str().unwrap_or_default().to_owned();
                r.working_dir = v["cwd"].as_str().unwrap_or_default().to_owned();
            }
            Some("assistant") => {
                r.messages += 1;
                r.model = v["model"].as_str().unwrap_or_default().to_owned();
                r.context_tokens = v["context"].as_i64().unwrap_or_default();
                r.output_tokens += v["output"].as_i64().unwrap_or_default();
                if v["end"] == true {
                    r.activity = Activity::Waiting;
                }
            }
            Some("tool") if v["status"] == "start" => {
                r.tool_calls += 1;
                r.current_tool = v["name"].as_str().unwrap_or_default().to_owned();
            }
            Some("tool") => r.current_tool.clear(),
            Some("exit") => r.activity = Activity::Terminal,
            Some("boom") => panic!("a parser bug"),
            _ => return LineResult::Unknown,
        }
        self.time(&v);
        LineResult::Used
    }

    fn whole(&mut self, bytes: &[u8]) -> LineResult {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
            return LineResult::Invalid;
        };
        self.0.messages = v["messages"].as_i64().unwrap_or_default();
        self.0.activity = Activity::Working;
        self.time(&v);
        LineResult::Used
    }

    fn report(&self) -> &SessionReport {
        &self.0
    }
}

fn line(kind: &str, rest: &str) -> String {
    format!(
        "{{\"type\":\"{kind}\",\"time\":\"{}\"{rest}}}\n",
        Timestamp::now()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_source_reaches_a_client_like_a_builtin_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let log = root.join(format!("{ID}.jsonl"));
    write(
        &log,
        &(line(
            "user",
            &format!(",\"session\":\"{ID}\",\"cwd\":\"/home/a/app\",\"text\":\"secret prompt\""),
        ) + &line(
            "assistant",
            ",\"model\":\"tiny-1\",\"context\":1200,\"output\":40,\"text\":\"secret reply\"",
        ) + &line("tool", ",\"name\":\"Read\",\"status\":\"start\"")
            + "not json\n"),
    );

    let (router, publisher) = WsLayer::new().build("/ws");
    let addr = serve(Router::new().merge(router)).await;
    let mut client = connect(addr).await;
    let snapshot = next_event(&mut client).await;
    assert_eq!(snapshot.kind, EventType::Snapshot);

    let monitor = Monitor::builder()
        .source(Tiny, root)
        .idle_after(None)
        .build(publisher.clone());
    assert_eq!(monitor.roots(), [("tiny".to_owned(), root.to_path_buf())]);
    let handle = monitor.spawn().unwrap();

    let events = read_until(&mut client, |e| e.kind == EventType::Health).await;
    let kinds: Vec<EventType> = events.iter().map(|e| e.kind.clone()).collect();
    assert_eq!(
        kinds,
        [EventType::Lifecycle, EventType::Delta, EventType::Health]
    );
    let lc = events[0].lifecycle.as_ref().unwrap();
    assert_eq!(
        (lc.kind.clone(), lc.session_id.as_str(), lc.source.as_str()),
        (LifecycleEventType::Discovered, ID, "tiny")
    );
    let s = &events[1].updates[0];
    assert_eq!((s.id.as_str(), s.source.as_str()), (ID, "tiny"));
    assert_eq!(
        (s.model.as_str(), s.working_dir.as_str()),
        ("tiny-1", "/home/a/app")
    );
    assert_eq!((s.context_tokens, s.output_tokens), (1200, 40));
    assert_eq!((s.message_count, s.tool_call_count), (2, 1));
    assert_eq!(
        (s.activity.clone(), s.current_tool.as_str()),
        (Activity::Working, "Read")
    );
    let h = events[2].health.as_ref().unwrap();
    assert_eq!(
        (h.source.as_str(), h.status.clone()),
        ("tiny", HealthStatus::Healthy)
    );
    let frames = serde_json::to_string(&events).unwrap();
    assert!(
        !frames.contains("secret"),
        "no prompt or reply text on the wire"
    );

    // Appended lines: the tool ends, the turn ends; counts add up from the file's totals.
    append(&log, &line("tool", ",\"name\":\"Read\",\"status\":\"end\""));
    append(
        &log,
        &line(
            "assistant",
            ",\"model\":\"tiny-1\",\"output\":10,\"end\":true",
        ),
    );
    let events = read_until(&mut client, |e| {
        e.updates
            .iter()
            .any(|s| s.id == ID && s.activity == Activity::Waiting)
    })
    .await;
    let s = events.last().unwrap().updates[0].clone();
    assert_eq!((s.message_count, s.tool_call_count), (3, 1));
    assert_eq!((s.output_tokens, s.current_tool.as_str()), (50, ""));

    // A subagent's log: shown in its parent's `subagents`.
    let sub = root.join(ID).join("helper-1.jsonl");
    write(
        &sub,
        &(line("user", "") + &line("tool", ",\"name\":\"Grep\",\"status\":\"start\"")),
    );
    let events = read_until(&mut client, |e| {
        e.updates
            .iter()
            .any(|s| s.id == ID && !s.subagents.is_empty())
    })
    .await;
    let s = events.last().unwrap().updates[0].clone();
    let a = &s.subagents[0];
    assert_eq!(
        (a.id.as_str(), a.parent_id.as_str(), a.current_tool.as_str()),
        ("helper-1", ID, "Grep")
    );
    assert_eq!((a.message_count, a.tool_call_count), (1, 1));
    assert_eq!(
        publisher.session(ID).map(|s| s.source),
        Some("tiny".to_owned())
    );

    handle.stop();
}

#[test]
fn a_whole_file_is_read_again_at_each_change_without_counting_twice() {
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("w1.json");
    let rec = Recorder::default();
    let mut m = Monitor::builder()
        .source(Tiny, dir.path())
        .idle_after(None)
        .build(rec.clone());
    write(
        &doc,
        &format!("{{\"time\":\"{}\",\"messages\":2}}", Timestamp::now()),
    );
    m.scan();
    let events = rec.take();
    assert_eq!(lifecycle_kinds(&events), [LifecycleEventType::Discovered]);
    let s = last_state(&events, "w1").expect("named by its stem");
    assert_eq!((s.source.as_str(), s.message_count), ("tiny", 2));

    // Rewritten whole with one more message (a different length, so a different stamp).
    write(
        &doc,
        &format!("{{\"time\":\"{}\",\"messages\":3 }}", Timestamp::now()),
    );
    m.scan();
    let s = last_state(&rec.take(), "w1").expect("updated");
    assert_eq!(
        s.message_count, 3,
        "the totals of the new version, not added"
    );

    // A version that is no JSON: a parse failure, the session unchanged.
    write(&doc, "{ half");
    m.scan();
    assert!(last_state(&rec.take(), "w1").is_none());
    assert_eq!(m.sessions()[0].message_count, 3);
}

#[test]
fn an_unreadable_root_degrades_the_sources_health_under_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::default();
    // One source value for two roots (an `Arc`, and a `Box<dyn Source>`): one health.
    let shared = std::sync::Arc::new(Tiny);
    let boxed: Box<dyn Source> = Box::new(std::sync::Arc::clone(&shared));
    let mut m = Monitor::builder()
        .source(boxed, dir.path())
        .source(shared, dir.path().join("missing"))
        .health_threshold(1)
        .build(rec.clone());
    assert_eq!(m.roots().len(), 2);
    m.scan();
    let health = m.health();
    assert_eq!(health.len(), 1);
    assert_eq!(
        (health[0].source.as_str(), health[0].status.clone()),
        ("tiny", HealthStatus::Degraded)
    );
}

#[test]
fn a_parser_that_panics_loses_the_line_not_the_monitor() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join(format!("{ID}.jsonl"));
    write(
        &log,
        &(line("user", &format!(",\"session\":\"{ID}\""))
            + &line("boom", "")
            + "\n"
            + &line("tool", ",\"name\":\"Edit\",\"status\":\"start\"")),
    );
    let rec = Recorder::default();
    let mut m = Monitor::builder()
        .source(Tiny, dir.path())
        .idle_after(None)
        .build(rec.clone());
    m.scan();
    let s = last_state(&rec.take(), ID).expect("the session");
    assert_eq!((s.message_count, s.tool_call_count), (1, 1));
    assert_eq!(s.current_tool, "Edit");
    let health = m.health();
    assert_eq!(
        (health[0].source.as_str(), health[0].parse_failures),
        ("tiny", 1),
        "the panicking line is one failure, the blank line none"
    );
}
