//! The dashboard's `--notify-url` push, against a real HTTP receiver (an axum server on
//! 127.0.0.1:0): one JSON POST per new wait with the wire's fields only, none for a wait
//! that began before the dashboard started, retries after `500`, and a receiver that never
//! answers blocks neither the input nor the page while the queue stays bounded.
//!
//! The dashboard runs the monitor on an empty Claude root (nothing of its own happens) with
//! `--inject`: each wait is a session posted to `/debug/sessions` with `activity=waiting`
//! and a chosen `at_ms` (its `lastActivityAt`, the wait's start).

use crate::common;
use crate::dashboard_support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use common::{eventually, serve_plain};
use dashboard_support::Dashboard;
use serde_json::{Value, json};

/// What the receiver got: (path, JSON body).
type Posts = Arc<Mutex<Vec<(String, Value)>>>;

#[derive(Clone, Default)]
struct Receiver {
    posts: Posts,
    /// Status codes to answer, in order; 200 once empty.
    answers: Arc<Mutex<VecDeque<u16>>>,
    /// Never answer (after recording the request).
    hang: bool,
}

async fn receive(State(r): State<Receiver>, uri: Uri, body: Bytes) -> StatusCode {
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    r.posts.lock().unwrap().push((uri.path().to_string(), json));
    if r.hang {
        std::future::pending::<()>().await;
    }
    let status = r.answers.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap()
}

/// Starts the receiver on its own runtime; returns the runtime (keep it) and the base URL.
fn receiver(r: &Receiver) -> (tokio::runtime::Runtime, String) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let app = Router::new().fallback(receive).with_state(r.clone());
    let addr = rt.block_on(serve_plain(app));
    (rt, format!("http://{addr}"))
}

fn posts(r: &Receiver) -> Vec<(String, Value)> {
    r.posts.lock().unwrap().clone()
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

fn quiet_dashboard(name: &str, notify_url: &str, root: &std::path::Path) -> Dashboard {
    let root = root.to_str().unwrap();
    Dashboard::start(
        name,
        &["--claude", root, "--inject", "--notify-url", notify_url],
    )
}

#[test]
fn each_new_wait_is_pushed_once_with_the_wire_fields() {
    let r = Receiver::default();
    let (rt, base) = receiver(&r);
    let root = tempfile::tempdir().unwrap();
    // An ntfy URL: the last segment is the topic, the POST goes to the root.
    let dashboard = quiet_dashboard("notify-once", &format!("{base}/aw-topic-7"), root.path());
    let started = now_ms();

    // A wait that began a minute before the dashboard started: not pushed.
    dashboard.inject(&format!(
        "id=old-wait&slug=old-wait&activity=waiting&at_ms={}",
        started - 60_000
    ));
    // A permission prompt, in a session without a slug (named by its repository).
    let t1 = now_ms();
    let prompt = format!(
        "id=sess-a&slug=&dir=/home/dev/secret-place/api-server&branch=main&activity=waiting\
         &tool=Bash&at_ms={t1}"
    );
    dashboard.inject(&prompt);
    rt.block_on(eventually("the first push", || posts(&r).len() == 1));
    let (path, body) = posts(&r).remove(0);
    assert_eq!(path, "/", "an ntfy URL posts to the root");
    let waiting_since = body["session"]["waitingSince"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        body,
        json!({
            "topic": "aw-topic-7",
            "title": "api-server (claude) wants to run Bash",
            "message": "claude · api-server · main: wants to run Bash",
            "tags": ["hourglass", "claude"],
            "priority": 4,
            "click": format!("http://127.0.0.1:{}/#session=sess-a", dashboard.port),
            "session": {
                "id": "sess-a", "source": "claude", "slug": "", "repository": "api-server",
                "branch": "main", "activity": "waiting", "currentTool": "Bash",
                "waitingSince": waiting_since,
            },
        })
    );
    assert_eq!(
        agentwatch_ws::Timestamp::parse(&waiting_since)
            .unwrap()
            .unix_millis(),
        t1 as i128,
        "waitingSince is the session's lastActivityAt"
    );
    assert!(
        !body.to_string().contains("/home/dev"),
        "no path beyond the repository's name: {body}"
    );

    // The same wait again (a delta repeating it): nothing. Then a session waiting for its
    // first prompt: its push is the next one, so a repeat would have come before it.
    dashboard.inject(&prompt);
    dashboard.inject(&format!(
        "id=sess-b&slug=fix-login&dir=/w/web&branch=dev&source=codex&activity=waiting\
         &messages=0&at_ms={}",
        now_ms()
    ));
    rt.block_on(eventually("the second push", || posts(&r).len() >= 2));
    let second = &posts(&r)[1].1;
    assert_eq!(second["session"]["id"], "sess-b", "{:?}", posts(&r));
    assert_eq!(second["title"], "fix-login (codex) waiting for input");
    assert_eq!(second["message"], "codex · web · dev: waiting for input");

    // sess-a works, then waits again: a new wait, pushed.
    dashboard.inject("id=sess-a&slug=&dir=/home/dev/secret-place/api-server&branch=main");
    let t2 = now_ms() + 1;
    dashboard.inject(&format!(
        "id=sess-a&slug=&dir=/home/dev/secret-place/api-server&branch=main&activity=waiting\
         &at_ms={t2}"
    ));
    rt.block_on(eventually("the third push", || posts(&r).len() >= 3));
    let all = posts(&r);
    assert_eq!(all[2].1["title"], "api-server (claude) finished its turn");
    assert_eq!(all[2].1["session"]["currentTool"], "");
    assert_eq!(
        all.len(),
        3,
        "one push per wait, none for old-wait: {all:?}"
    );
    assert!(
        !dashboard.output().contains("aw-topic-7"),
        "the topic is not logged:\n{}",
        dashboard.output()
    );
}

#[test]
fn a_push_answered_500_twice_is_delivered_on_the_third_try() {
    let r = Receiver::default();
    r.answers.lock().unwrap().extend([500, 500]);
    let (rt, base) = receiver(&r);
    let root = tempfile::tempdir().unwrap();
    // A URL ending in `/`: a generic webhook, posted as given, without a topic.
    let dashboard = quiet_dashboard("notify-retry", &format!("{base}/hooks/aw/"), root.path());
    dashboard.inject(&format!(
        "id=retry-me&slug=retry-me&activity=waiting&at_ms={}",
        now_ms()
    ));
    rt.block_on(eventually("three tries", || posts(&r).len() == 3));
    let line = dashboard.wait_for("notify: pushed a wait");
    assert!(line.contains("attempt=3"), "{line}");
    let all = posts(&r);
    for (path, body) in &all {
        assert_eq!(path, "/hooks/aw/");
        assert_eq!(body, &all[0].1, "each try sends the same body");
    }
    assert!(all[0].1.get("topic").is_none(), "{}", all[0].1);
    assert_eq!(all[0].1["session"]["id"], "retry-me");
    assert_eq!(
        dashboard
            .output()
            .matches("notify: push failed, retrying")
            .count(),
        2
    );
}

#[test]
fn a_receiver_that_never_answers_blocks_nothing_and_the_queue_stays_bounded() {
    const QUEUE: usize = 64; // the dashboard's notify::QUEUE
    let r = Receiver {
        hang: true,
        ..Receiver::default()
    };
    let (rt, base) = receiver(&r);
    let root = tempfile::tempdir().unwrap();
    let dashboard = quiet_dashboard("notify-hang", &format!("{base}/t"), root.path());
    dashboard.inject(&format!("id=w0&activity=waiting&at_ms={}", now_ms()));
    rt.block_on(eventually("the first push to hang", || {
        posts(&r).len() == 1
    }));
    // The worker now waits for an answer that never comes: the input goes on, each wait
    // is queued, and past QUEUE the oldest are dropped.
    let extra = QUEUE + 9;
    let begun = std::time::Instant::now();
    for i in 1..=extra {
        dashboard.inject(&format!("id=w{i}&activity=waiting&at_ms={}", now_ms()));
    }
    let took = begun.elapsed();
    assert!(
        took < std::time::Duration::from_secs(5),
        "{extra} injects took {took:?}"
    );
    let line = dashboard.wait_for("dropped=9 ");
    assert!(
        line.contains("queue full, dropped the oldest push"),
        "{line}"
    );
    assert_eq!(
        dashboard
            .output()
            .matches("queue full, dropped the oldest push")
            .count(),
        9,
        "exactly the waits beyond the queue are dropped"
    );
    let (status, page) = dashboard.request("GET", "/");
    assert_eq!(status, 200);
    assert!(page.contains("agentwatch"));
    assert_eq!(posts(&r).len(), 1, "one request in flight at a time");
}

#[test]
fn a_bad_notify_url_is_refused_at_start_without_echoing_it() {
    for (url, says) in [
        (
            "ftp://example.com/t",
            "--notify-url needs an http:// or https:// URL",
        ),
        (
            "https://user:hunter2@ntfy.example/t",
            "--notify-url: credentials in the URL are not supported",
        ),
        (
            "http://127.0.0.1:9/t?auth=hunter2",
            "--notify-url: a query string is not supported",
        ),
    ] {
        let dashboard = Dashboard::spawn("notify-bad", &["--demo", "--notify-url", url]);
        dashboard.wait_for(says);
        assert!(
            !dashboard.output().contains("hunter2"),
            "{}",
            dashboard.output()
        );
    }
}

#[test]
fn a_wait_that_ends_before_it_settles_is_not_pushed() {
    let r = Receiver::default();
    let (rt, base) = receiver(&r);
    let root = tempfile::tempdir().unwrap();
    let dashboard = quiet_dashboard("notify-settle", &format!("{base}/"), root.path());

    // A reply's text line read before its tool call's line: `waiting` for a moment, then
    // `working` again (well within the settle time), then a wait that lasts.
    dashboard.inject(&format!(
        "id=flicker&slug=flicker&activity=waiting&at_ms={}",
        now_ms()
    ));
    dashboard.inject("id=flicker&slug=flicker&activity=working&tool=Bash");
    dashboard.inject(&format!(
        "id=lasting&slug=lasting&activity=waiting&at_ms={}",
        now_ms()
    ));
    rt.block_on(eventually("the lasting wait's push", || {
        !posts(&r).is_empty()
    }));
    // One worker per URL posts in queue order, and the flicker began first: had it been
    // pushed, it would have arrived before the lasting wait.
    let ids: Vec<Value> = posts(&r)
        .iter()
        .map(|(_, body)| body["session"]["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!("lasting")], "pushed: {ids:?}");
}
