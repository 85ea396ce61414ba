//! A source of your own: the monitor reading a small agent's logs, served over WebSocket like
//! the built-in sources' sessions.
//!
//! ```text
//! cargo run --example custom_source                   # logs in ./tiny-agent-logs
//! cargo run --example custom_source -- /path/to/logs
//! ```
//!
//! The agent ("tiny") writes one JSON-lines log per session, `<root>/<session id>.jsonl`,
//! and, for each subagent, `<root>/<session id>/<subagent id>.jsonl`:
//!
//! ```text
//! {"type":"user","time":"2026-01-05T09:00:00Z","cwd":"/home/a/app","text":"fix the test"}
//! {"type":"assistant","time":"2026-01-05T09:00:02Z","model":"tiny-1","context":1200,"output":40,"text":"…"}
//! {"type":"tool","time":"2026-01-05T09:00:03Z","name":"Read","status":"start"}
//! {"type":"tool","time":"2026-01-05T09:00:04Z","name":"Read","status":"end"}
//! {"type":"assistant","time":"2026-01-05T09:00:05Z","model":"tiny-1","end":true,"text":"…"}
//! ```
//!
//! The example writes such a session into the root, then serves `ws://127.0.0.1:8080/ws`:
//! `websocat ws://127.0.0.1:8080/ws` shows its snapshot, and appending a line to the log
//! shows the update. Its `source` is `tiny`, and a `health` event for `tiny` comes at start.

use std::path::{Path, PathBuf};

use agentwatch_ws::monitor::{LineResult, LogFile, LogParser, Monitor, SessionReport, Source};
use agentwatch_ws::{Activity, Timestamp, WsLayer};
use axum::Router;
use serde::Deserialize;

/// The tiny agent's logs.
struct Tiny;

impl Source for Tiny {
    fn name(&self) -> &str {
        "tiny"
    }

    fn classify(&self, relative: &Path) -> Option<LogFile> {
        if relative.extension()? != "jsonl" {
            return None;
        }
        let parts: Vec<&str> = relative.iter().filter_map(|p| p.to_str()).collect();
        match parts.as_slice() {
            [_] => Some(LogFile::session()),
            [parent, name] => {
                let agent = name.strip_suffix(".jsonl")?;
                Some(LogFile::subagent(*parent, agent))
            }
            _ => None,
        }
    }

    fn parser(&self, _file: &LogFile) -> Box<dyn LogParser> {
        Box::new(TinyLog::default())
    }
}

/// One line, as far as the monitor needs it: the `text` field (prompts and replies) is not
/// even named, so it is skipped unread and never kept.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    time: Option<&'a str>,
    session: Option<&'a str>,
    cwd: Option<&'a str>,
    model: Option<&'a str>,
    name: Option<&'a str>,
    status: Option<&'a str>,
    context: Option<i64>,
    output: Option<i64>,
    #[serde(default)]
    end: bool,
}

/// A tiny log read so far.
#[derive(Default)]
struct TinyLog {
    report: SessionReport,
}

impl LogParser for TinyLog {
    fn line(&mut self, line: &[u8]) -> LineResult {
        let Ok(line) = serde_json::from_slice::<Line<'_>>(line) else {
            return LineResult::Invalid;
        };
        let r = &mut self.report;
        match line.kind {
            "user" => {
                r.messages += 1;
                r.activity = Activity::Working;
                if let Some(cwd) = line.cwd {
                    r.working_dir = cwd.to_owned();
                }
                if let Some(id) = line.session {
                    r.session_id = id.to_owned();
                }
            }
            "assistant" => {
                r.messages += 1;
                if let Some(model) = line.model {
                    r.model = model.to_owned();
                }
                r.context_tokens = line.context.unwrap_or(r.context_tokens);
                r.output_tokens += line.output.unwrap_or(0);
                if line.end {
                    r.activity = Activity::Waiting;
                    r.current_tool.clear();
                }
            }
            "tool" => match (line.status, line.name) {
                (Some("start"), Some(name)) => {
                    r.tool_calls += 1;
                    r.current_tool = name.to_owned();
                    r.activity = Activity::Working;
                }
                (Some("end"), _) => r.current_tool.clear(),
                _ => return LineResult::Unknown,
            },
            "exit" => {
                r.activity = Activity::Terminal;
                r.current_tool.clear();
            }
            _ => return LineResult::Unknown,
        }
        if let Some(at) = line.time.and_then(|t| Timestamp::parse(t).ok()) {
            if r.started_at == Timestamp::ZERO {
                r.started_at = at;
            }
            r.last_activity_at = at;
        }
        LineResult::Used
    }

    fn report(&self) -> &SessionReport {
        &self.report
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let root = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("tiny-agent-logs"), PathBuf::from);
    std::fs::create_dir_all(&root)?;
    let now = Timestamp::now();
    std::fs::write(
        root.join("7c1d2e3f-0000-4000-8000-000000000001.jsonl"),
        format!(
            "{{\"type\":\"user\",\"time\":\"{now}\",\"cwd\":\"/home/a/app\",\"text\":\"fix the test\"}}\n\
             {{\"type\":\"assistant\",\"time\":\"{now}\",\"model\":\"tiny-1\",\"context\":1200,\"output\":40}}\n\
             {{\"type\":\"tool\",\"time\":\"{now}\",\"name\":\"Read\",\"status\":\"start\"}}\n"
        ),
    )?;

    let (ws, publisher) = WsLayer::new().build("/ws");
    let monitor = Monitor::builder()
        .source(Tiny, &root)
        .build(publisher.clone())
        .spawn()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    tracing::info!(root = %root.display(), "serving ws://127.0.0.1:8080/ws");
    agentwatch_ws::serve(listener, Router::new().merge(ws))
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            publisher.stop(); // 1001 to every client
        })
        .await?;
    monitor.stop();
    Ok(())
}
