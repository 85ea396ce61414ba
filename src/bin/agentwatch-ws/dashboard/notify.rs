//! `--notify-url`: a JSON POST for each new wait, for when no dashboard page is open.
//!
//! **When.** A session *waits* when its `activity` is `waiting` (and it has not ended). A
//! wait is known by its key, the session id and the wait's start (the session's
//! `lastActivityAt`, which does not move while the session stays waiting). Each key is
//! pushed once: a delta or snapshot repeating a wait pushes nothing, a new wait of the same
//! session (the agent worked, then waits again) is a new key. Waits that began before the
//! dashboard started are not pushed (the first scan of the logs finds every session that
//! waits right now, some since hours: a start should not send a burst); a wait that began
//! later is pushed even when the dashboard learns of it late (a log written while it was
//! busy). A wait is pushed once it has lasted [`SETTLE`]: Claude Code writes a reply as one
//! line per content block, so a reply of text then a tool call can read as a finished turn
//! for the moment between the two lines; such a wait ends before it settles and is not
//! pushed.
//!
//! **Where.** `--notify-url URL` (repeatable): `http://` or `https://` (TLS with the
//! webpki roots compiled in). The URL's last path segment is the ntfy topic, and the POST
//! goes to the URL without it, ntfy's JSON publish: `--notify-url https://ntfy.sh/mytopic`
//! posts `{"topic":"mytopic",…}` to `https://ntfy.sh/`. A URL that ends in `/` has no
//! topic: the POST goes to it as given, without `topic` (a generic JSON webhook:
//! `--notify-url http://127.0.0.1:9000/hooks/agentwatch/`). Credentials in the URL are
//! refused; the topic is not logged (on ntfy.sh it is the only secret). ntfy reads the
//! fields it knows and ignores the others (its server decodes the body with Go's
//! `encoding/json`), and takes a body of up to twice its message limit (8 KB by default).
//!
//! **The body** (`Content-Type: application/json`), ntfy's fields plus `session`, only
//! fields the wire model defines (never a prompt, never a path beyond the repository's
//! name):
//!
//! ```json
//! {"topic":"mytopic","title":"api-server (claude) wants to run Bash",
//!  "message":"claude · api-server · main: wants to run Bash","tags":["hourglass","claude"],
//!  "priority":4,"click":"http://127.0.0.1:3000/#session=3f2a…",
//!  "session":{"id":"3f2a…","source":"claude","slug":"","repository":"api-server",
//!             "branch":"main","activity":"waiting","currentTool":"Bash",
//!             "waitingSince":"2026-03-14T09:26:53.589Z"}}
//! ```
//!
//! The `title` says what the agent waits for: `wants to run TOOL` (`currentTool` set: a
//! permission prompt), `waiting for input` (no message yet: a session waiting for its first
//! prompt), else `finished its turn`. The session is named by its `slug`, else by its
//! repository (the last part of `workingDir`) with its branch.
//!
//! **Delivery.** One worker task per URL, with a queue of at most [`QUEUE`] pushes: when it
//! is full the oldest is dropped (counted, and logged with the count). Each POST has
//! [`TIMEOUT`] for connecting and the response head; a connection failure, a timeout, a
//! `408`, `429` or `5xx` is retried after 0.5 s, 1 s, 2 s… (at most [`ATTEMPTS`] tries), any
//! other non-`2xx` is dropped at once (the receiver refused this body). Pushing never blocks
//! the input: [`Notifier::observe`] only queues.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agentwatch_ws::{Activity, Event, EventType, LifecycleEventType, LifecycleState, SessionState};
use axum::http::{Method, Request, StatusCode, Uri, header};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::sync::Notify;

/// Pushes waiting per URL; beyond it the oldest is dropped.
pub const QUEUE: usize = 64;
/// Tries per push (the first and the retries).
pub const ATTEMPTS: u32 = 5;
/// Per try: connecting, sending, and the response head.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The first retry's delay; each next one doubles.
const BACKOFF: Duration = Duration::from_millis(500);
/// How long a wait must last, still the same wait, before it is pushed.
pub const SETTLE: Duration = Duration::from_millis(1500);

/// A parsed `--notify-url`. Its `Debug` shows the origin only: the topic is a secret.
#[derive(Clone)]
pub struct Target {
    /// Where the POST goes.
    post_to: Uri,
    /// The ntfy topic (the URL's last path segment), if any.
    topic: Option<String>,
    /// `scheme://host[:port]`, for logs: neither the path nor the topic.
    origin: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("origin", &self.origin)
            .field("topic", &self.topic.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Parses `url`: `http(s)://host[:port]/…/topic` or `…/` (see the module docs).
    pub fn parse(url: &str) -> Result<Target, String> {
        let uri: Uri = url
            .parse()
            .map_err(|_| "--notify-url needs an http:// or https:// URL".to_string())?;
        let scheme = uri.scheme_str().unwrap_or_default();
        if scheme != "http" && scheme != "https" {
            return Err("--notify-url needs an http:// or https:// URL".into());
        }
        let Some(authority) = uri.authority() else {
            return Err("--notify-url needs a host".into());
        };
        if authority.as_str().contains('@') {
            return Err("--notify-url: credentials in the URL are not supported".into());
        }
        if uri.query().is_some() {
            return Err("--notify-url: a query string is not supported".into());
        }
        let origin = format!("{scheme}://{authority}");
        let path = uri.path();
        let (post_path, topic) = match path.rsplit_once('/') {
            Some((dir, last)) if !last.is_empty() => (format!("{dir}/"), Some(last.to_string())),
            _ => (path.to_string(), None),
        };
        let post_to = format!("{origin}{post_path}")
            .parse()
            .map_err(|_| "--notify-url is not a valid URL".to_string())?;
        Ok(Target {
            post_to,
            topic,
            origin,
        })
    }
}

/// One wait to push.
#[derive(Debug, Clone, Serialize)]
struct Push {
    title: String,
    message: String,
    session: WaitInfo,
}

/// The wire fields a push carries about its session.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct WaitInfo {
    id: String,
    source: String,
    slug: String,
    /// The last part of `workingDir`.
    repository: String,
    branch: String,
    activity: String,
    current_tool: String,
    /// `lastActivityAt`: when the wait began (RFC 3339).
    waiting_since: String,
}

/// The JSON body of a POST.
#[derive(Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    title: &'a str,
    message: &'a str,
    tags: [&'a str; 2],
    priority: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    click: Option<String>,
    session: &'a WaitInfo,
}

/// What the agent waits for, as the page says it too.
fn reason(s: &SessionState) -> String {
    if !s.current_tool.is_empty() {
        format!("wants to run {}", s.current_tool)
    } else if s.message_count == 0 {
        "waiting for input".to_string()
    } else {
        "finished its turn".to_string()
    }
}

fn repository(s: &SessionState) -> &str {
    let dir = s.working_dir.trim_end_matches('/');
    dir.rsplit('/').next().unwrap_or(dir)
}

impl Push {
    fn of(s: &SessionState) -> Push {
        let repo = repository(s);
        let name = if !s.slug.is_empty() {
            s.slug.clone()
        } else if !repo.is_empty() {
            repo.to_string()
        } else {
            s.id.chars().take(8).collect()
        };
        let why = reason(s);
        let place: Vec<&str> = [s.source.as_str(), repo, &s.branch]
            .into_iter()
            .filter(|part| !part.is_empty())
            .collect();
        Push {
            title: format!("{name} ({}) {why}", s.source),
            message: format!("{}: {why}", place.join(" · ")),
            session: WaitInfo {
                id: s.id.clone(),
                source: s.source.clone(),
                slug: s.slug.clone(),
                repository: repo.to_string(),
                branch: s.branch.clone(),
                activity: s.activity.as_str().to_string(),
                current_tool: s.current_tool.clone(),
                waiting_since: s.last_activity_at.to_string(),
            },
        }
    }
}

/// A URL's queue and counters.
struct Queue {
    target: Target,
    pending: Mutex<VecDeque<Push>>,
    wake: Notify,
    dropped: AtomicU64,
}

/// Watches the published events for new waits and pushes each to every `--notify-url`.
/// Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    queues: Vec<Arc<Queue>>,
    /// Unix ms: waits that began before are not pushed.
    started_ms: i128,
    /// `http://host:port/` of this dashboard, for the `click` link.
    page: Option<String>,
    /// Session id → the start (Unix ms) of its wait already handled, for the sessions that
    /// wait now (one entry per waiting session: bounded by the sessions the input holds).
    waiting: Mutex<HashMap<String, i128>>,
    /// Where a new wait waits [`SETTLE`] before it is queued (`observe` may be called from
    /// the monitor's own thread).
    runtime: tokio::runtime::Handle,
}

impl Notifier {
    /// Starts one worker task per target (on the current tokio runtime). `page`: the
    /// dashboard's URL for the `click` link, if known.
    pub fn start(targets: Vec<Target>, page: Option<String>) -> Result<Notifier, String> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(tokio_rustls::rustls::crypto::ring::default_provider())
            .map_err(|error| format!("--notify-url: TLS setup failed: {error}"))?
            .https_or_http()
            .enable_http1()
            .build();
        let client: Client<HttpsConnector<HttpConnector>, String> =
            Client::builder(TokioExecutor::new()).build(connector);
        let queues: Vec<Arc<Queue>> = targets
            .into_iter()
            .map(|target| {
                Arc::new(Queue {
                    target,
                    pending: Mutex::new(VecDeque::new()),
                    wake: Notify::new(),
                    dropped: AtomicU64::new(0),
                })
            })
            .collect();
        let inner = Arc::new(Inner {
            queues,
            started_ms: agentwatch_ws::Timestamp::now().unix_millis(),
            page,
            waiting: Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::current(),
        });
        for queue in &inner.queues {
            tracing::info!(to = %queue.target.origin, topic = queue.target.topic.is_some(), "notify: pushing new waits");
            tokio::spawn(deliver(client.clone(), queue.clone(), inner.page.clone()));
        }
        Ok(Notifier { inner })
    }

    /// Looks at an event about to be published and queues a push for each new wait in it.
    /// Never blocks on the network.
    pub fn observe(&self, event: &Event) {
        let mut waiting = self
            .inner
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut new = Vec::new();
        if event.kind == EventType::Snapshot {
            let ids: HashSet<&str> = event.sessions.iter().map(|s| s.id.as_str()).collect();
            waiting.retain(|id, _| ids.contains(id.as_str()));
        }
        for s in event.sessions.iter().chain(&event.updates) {
            let waits = s.activity == Activity::Waiting
                && s.lifecycle != LifecycleState::Terminal
                && !s.last_activity_at.is_zero();
            if !waits {
                waiting.remove(&s.id);
                continue;
            }
            let start = s.last_activity_at.unix_millis();
            if waiting.insert(s.id.clone(), start) == Some(start) {
                continue; // this wait, again
            }
            if start >= self.inner.started_ms {
                new.push((Push::of(s), start));
            }
        }
        for id in &event.removed {
            waiting.remove(id);
        }
        if let Some(lc) = &event.lifecycle {
            if lc.kind == LifecycleEventType::Removed {
                waiting.remove(&lc.session_id);
            }
        }
        drop(waiting);
        for (push, start) in new {
            let inner = self.inner.clone();
            self.inner.runtime.spawn(async move {
                tokio::time::sleep(SETTLE).await;
                let current = inner
                    .waiting
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&push.session.id)
                    .copied();
                if current != Some(start) {
                    tracing::debug!(source = %push.session.source, "notify: a wait ended before it settled; not pushed");
                    return;
                }
                for queue in &inner.queues {
                    queue.enqueue(push.clone());
                }
            });
        }
    }
}

impl Queue {
    fn enqueue(&self, push: Push) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.len() >= QUEUE {
            pending.pop_front();
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                to = %self.target.origin,
                dropped,
                queue = QUEUE,
                "notify: queue full, dropped the oldest push"
            );
        }
        pending.push_back(push);
        drop(pending);
        self.wake.notify_one();
    }

    fn next(&self) -> Option<Push> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }
}

/// Why a try failed.
enum Failure {
    /// Worth another try.
    Retry(String),
    /// The receiver refused this body: no retry.
    Refused(StatusCode),
}

/// The worker of one URL: takes pushes in order, each tried up to [`ATTEMPTS`] times.
async fn deliver(
    client: Client<HttpsConnector<HttpConnector>, String>,
    queue: Arc<Queue>,
    page: Option<String>,
) {
    loop {
        let Some(push) = queue.next() else {
            queue.wake.notified().await;
            continue;
        };
        let body = Body {
            topic: queue.target.topic.as_deref(),
            title: &push.title,
            message: &push.message,
            tags: ["hourglass", &push.session.source],
            priority: 4,
            click: page
                .as_ref()
                .map(|page| format!("{page}#session={}", push.session.id)),
            session: &push.session,
        };
        let body = match serde_json::to_string(&body) {
            Ok(body) => body,
            Err(error) => {
                tracing::warn!(%error, "notify: cannot encode a push");
                continue;
            }
        };
        let mut delay = BACKOFF;
        for attempt in 1..=ATTEMPTS {
            match post(&client, &queue.target.post_to, body.clone()).await {
                Ok(status) => {
                    tracing::info!(to = %queue.target.origin, %status, attempt, source = %push.session.source, "notify: pushed a wait");
                    break;
                }
                Err(Failure::Refused(status)) => {
                    tracing::warn!(to = %queue.target.origin, %status, "notify: the receiver refused the push; not retried");
                    break;
                }
                Err(Failure::Retry(why)) if attempt < ATTEMPTS => {
                    tracing::warn!(to = %queue.target.origin, attempt, why, retry_in = ?delay, "notify: push failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                }
                Err(Failure::Retry(why)) => {
                    tracing::warn!(to = %queue.target.origin, attempts = ATTEMPTS, why, "notify: push failed, giving up");
                }
            }
        }
    }
}

async fn post(
    client: &Client<HttpsConnector<HttpConnector>, String>,
    to: &Uri,
    body: String,
) -> Result<StatusCode, Failure> {
    let request = Request::builder()
        .method(Method::POST)
        .uri(to.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, "agentwatch-dashboard")
        .body(body)
        .map_err(|error| Failure::Retry(error.to_string()))?;
    let response = match tokio::time::timeout(TIMEOUT, client.request(request)).await {
        Err(_) => return Err(Failure::Retry(format!("no response within {TIMEOUT:?}"))),
        Ok(Err(error)) => return Err(Failure::Retry(error.to_string())),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if status.is_success() {
        Ok(status)
    } else if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        Err(Failure::Retry(format!("status {status}")))
    } else {
        Err(Failure::Refused(status))
    }
}
