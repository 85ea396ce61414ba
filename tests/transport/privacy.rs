//! Privacy policies per viewer over real sockets: two viewers of one store with different
//! policies at once, live, after resume, after a lag resync, over the HTTP API; one encoding
//! per distinct policy; and a property test over random policies, streams and reconnects
//! that checks every byte a viewer receives against an independent redaction.
// Test code: unwrap() on values the test itself built or on test I/O.

use crate::common::{Rng, connect_small_buffer, eventually, http_get, serve, within};

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use agentwatch_ws::privacy::{Field, Policy, PseudonymKey};
use agentwatch_ws::wire::{LifecycleEvent, LifecycleEventType, SubagentState};
use agentwatch_ws::{
    Event, EventType, Health, HealthStatus, Identity, LagPolicy, Publisher, SessionState, WsLayer,
};
use axum::Router;
use axum::extract::FromRequestParts;
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use http::request::Parts;
use sha2::Sha256;
use tokio_tungstenite::tungstenite::Message;

const SERVER_KEY: &[u8] = b"the server's pseudonym key, for this test";

/// The viewer named by `?viewer=NAME` (anonymous without one).
struct Viewer(String);

impl<S: Send + Sync> FromRequestParts<S> for Viewer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let name = parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|pair| pair.strip_prefix("viewer="))
            .unwrap_or("");
        Ok(Viewer(name.to_owned()))
    }
}

impl From<Viewer> for Identity {
    fn from(viewer: Viewer) -> Identity {
        Identity::new(viewer.0)
    }
}

/// The pseudonym the privacy docs define: the first 16 bytes of HMAC-SHA-256 under `key` of
/// `label`, a zero byte and `value`, in hex. Computed here independently of the crate.
fn pseudonym(key: &[u8], label: &str, value: &str) -> String {
    if value.is_empty() {
        return String::new();
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(label.as_bytes());
    mac.update(&[0]);
    mac.update(value.as_bytes());
    mac.finalize().into_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The redaction the privacy docs' table defines, written out here field by field.
fn redact(event: &Event, fields: &[Field], key: &[u8]) -> Event {
    let has = |f: Field| fields.contains(&f);
    let id = |v: &str| {
        if has(Field::SessionId) {
            pseudonym(key, "session", v)
        } else {
            v.to_owned()
        }
    };
    let mut out = event.clone();
    for s in out.sessions.iter_mut().chain(out.updates.iter_mut()) {
        if has(Field::WorkingDir) {
            s.working_dir = String::new();
        }
        if has(Field::Branch) {
            s.branch = String::new();
        }
        if has(Field::Model) {
            s.model = String::new();
        }
        if has(Field::Source) {
            s.source = String::new();
        }
        if has(Field::SessionId) {
            s.slug = String::new();
        }
        if has(Field::Machine) {
            s.machine = pseudonym(key, "machine", &s.machine);
        }
        s.id = id(&s.id);
        for sub in &mut s.subagents {
            if has(Field::Model) {
                sub.model = String::new();
            }
            if has(Field::SessionId) {
                sub.slug = String::new();
            }
            sub.id = id(&sub.id);
            sub.parent_id = id(&sub.parent_id);
        }
    }
    out.removed = out.removed.iter().map(|r| id(r)).collect();
    if let Some(lc) = &mut out.lifecycle {
        lc.session_id = id(&lc.session_id);
        if has(Field::Source) {
            lc.source = String::new();
        }
    }
    if let Some(h) = &mut out.health {
        if has(Field::Source) {
            h.source = pseudonym(key, "source", &h.source);
        }
        if has(Field::Machine) {
            h.machine = pseudonym(key, "machine", &h.machine);
        }
        if has(Field::WorkingDir)
            || has(Field::Source)
            || has(Field::SessionId)
            || has(Field::Machine)
        {
            h.last_error = String::new();
        }
    }
    out
}

fn policy_of(fields: &[Field]) -> Policy {
    fields
        .iter()
        .fold(Policy::none(), |policy, &field| policy.redact(field))
}

/// The machine of session `n` (or of a health report): two machines and none, in turn.
fn machine(n: u64, tag: &str) -> String {
    match n % 3 {
        0 => format!("host-{tag}"),
        1 => format!("host-{tag}-b"),
        _ => String::new(),
    }
}

/// A session whose every redactable value is a distinct, recognisable string.
fn session(n: u64, tag: &str) -> SessionState {
    SessionState {
        id: format!("id-{tag}-{n}"),
        source: format!("src-{tag}"),
        slug: format!("slug-{tag}-{n}"),
        model: format!("model-{tag}-{n}"),
        working_dir: format!("/home/dev/proj-{tag}-{n}"),
        branch: format!("branch-{tag}-{n}"),
        current_tool: "Bash".into(),
        message_count: n as i64,
        subagents: vec![SubagentState {
            id: format!("sub-{tag}-{n}"),
            parent_id: format!("id-{tag}-{n}"),
            slug: format!("subslug-{tag}-{n}"),
            model: format!("submodel-{tag}-{n}"),
            ..SubagentState::default()
        }],
        machine: machine(n, tag),
        ..SessionState::default()
    }
}

/// The secrets `fields` must keep out of a viewer's bytes, for sessions of `tag`.
fn secrets(fields: &[Field], tag: &str) -> Vec<String> {
    let mut out = Vec::new();
    for field in fields {
        out.push(match field {
            Field::WorkingDir => format!("proj-{tag}"),
            Field::Branch => format!("branch-{tag}"),
            Field::Model => format!("model-{tag}"),
            Field::SessionId => format!("id-{tag}"),
            Field::Source => format!("src-{tag}"),
            Field::Machine => format!("host-{tag}"),
            _ => unreachable!(),
        });
    }
    if fields.contains(&Field::SessionId) {
        out.push(format!("slug-{tag}"));
        out.push(format!("sub-{tag}"));
    }
    if fields.iter().any(|f| {
        matches!(
            f,
            Field::WorkingDir | Field::Source | Field::SessionId | Field::Machine
        )
    }) {
        out.push("error-text".into());
    }
    out
}

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: SocketAddr, query: &str) -> Client {
    let (client, _) = within(
        "websocket handshake",
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws?{query}")),
    )
    .await
    .expect("handshake");
    client
}

/// The next text message's bytes.
async fn next_text(client: &mut Client) -> Vec<u8> {
    loop {
        match within("next message", client.next()).await {
            Some(Ok(Message::Text(text))) => return text.as_bytes().to_vec(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

fn assert_no_secret(bytes: &[u8], secrets: &[String], what: &str) {
    let text = String::from_utf8_lossy(bytes);
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{what}: {secret:?} leaked in {text}"
        );
    }
}

/// The layer of these tests: `?viewer=full` sees everything, `?viewer=team` gets `team`,
/// everyone else `default`.
fn layer(default: &[Field], team: &[Field]) -> WsLayer<Viewer> {
    let team = policy_of(team);
    WsLayer::new()
        .rate_limit(None)
        .http_api(true)
        .pseudonym_key(PseudonymKey::from_bytes(SERVER_KEY))
        .auth::<Viewer>()
        .policy(policy_of(default))
        .policy_for(move |identity: &Identity| match identity.id() {
            "full" => Some(Policy::none()),
            "team" => Some(team.clone()),
            _ => None,
        })
}

async fn start(layer: WsLayer<Viewer>) -> (SocketAddr, Publisher) {
    let (ws, publisher) = layer.build::<()>("/ws");
    (serve(Router::new().merge(ws)).await, publisher)
}

fn encode(event: &Event) -> Vec<u8> {
    agentwatch_ws::wire::to_vec(event).unwrap()
}

#[tokio::test]
async fn two_viewers_see_their_own_redaction_live_after_resume_and_over_http() {
    const TEAM: &[Field] = &[Field::WorkingDir, Field::Branch, Field::SessionId];
    let (addr, publisher) = start(layer(&[Field::Model], TEAM)).await;
    let a = session(1, "a");
    publisher
        .publish(Event::delta(0, vec![a.clone()], vec![]))
        .unwrap();
    publisher
        .publish(Event {
            kind: EventType::Health,
            health: Some(Health {
                source: "src-a".into(),
                status: HealthStatus::Degraded,
                last_error: "error-text at <path>".into(),
                ..Health::default()
            }),
            ..Event::default()
        })
        .unwrap();

    let mut full = connect(addr, "viewer=full").await;
    let mut team = connect(addr, "viewer=team").await;
    let team_secrets = secrets(TEAM, "a");

    // The snapshot: the full viewer gets every value, the team viewer its redaction.
    let snap_full: Event = Event::from_json(&next_text(&mut full).await).unwrap();
    assert_eq!(snap_full.kind, EventType::Snapshot);
    assert_eq!(snap_full.sessions, vec![a.clone()]);
    let raw = next_text(&mut team).await;
    assert_no_secret(&raw, &team_secrets, "team snapshot");
    let snap_team = Event::from_json(&raw).unwrap();
    let team_id = pseudonym(SERVER_KEY, "session", "id-a-1");
    assert_eq!(snap_team.sessions[0].id, team_id);
    assert_eq!(
        snap_team.sessions[0].model, "model-a-1",
        "not in the team policy"
    );
    assert_eq!(snap_team.sessions[0].subagents[0].parent_id, team_id);
    assert_eq!(
        raw,
        encode(&redact(&snap_full, TEAM, SERVER_KEY)),
        "the team snapshot is the full one, redacted"
    );
    // The health report after the snapshot.
    let health_full = next_text(&mut full).await;
    let health_team = next_text(&mut team).await;
    assert!(String::from_utf8_lossy(&health_full).contains("error-text"));
    assert_no_secret(&health_team, &team_secrets, "team health");

    // Live: a delta that changes a redacted field, a lifecycle, a removal.
    let mut moved = a.clone();
    moved.branch = "branch-a-other".into();
    let live = [
        Event::delta(0, vec![moved], vec![]),
        Event {
            kind: EventType::Lifecycle,
            lifecycle: Some(LifecycleEvent {
                kind: LifecycleEventType::Updated,
                session_id: "id-a-1".into(),
                source: "src-a".into(),
                ..LifecycleEvent::default()
            }),
            ..Event::default()
        },
        Event::delta(0, vec![], vec!["id-a-1".into()]),
    ];
    let mut last = (0, None);
    for event in live {
        let seq = publisher.publish(event.clone()).unwrap();
        let full_raw = next_text(&mut full).await;
        let as_published = Event::from_json(&full_raw).unwrap();
        assert_eq!(as_published.seq, seq);
        let team_raw = next_text(&mut team).await;
        assert_no_secret(&team_raw, &team_secrets, "team live");
        assert_eq!(team_raw, encode(&redact(&as_published, TEAM, SERVER_KEY)));
        last = (seq, Some(as_published.at));
    }

    // Resume: the team viewer leaves, misses two events and comes back with its position.
    team.close(None).await.unwrap();
    let b = session(2, "a");
    let missed = [
        Event::delta(0, vec![b.clone()], vec![]),
        Event::delta(0, vec![], vec!["id-a-2".into()]),
    ];
    let mut published = Vec::new();
    for event in missed {
        publisher.publish(event).unwrap();
        published.push(Event::from_json(&next_text(&mut full).await).unwrap());
    }
    let at = last.1.unwrap().to_string();
    let mut team = connect(
        addr,
        &format!(
            "viewer=team&since={}&since_at={}",
            last.0,
            at.replace(':', "%3A").replace('+', "%2B")
        ),
    )
    .await;
    for expected in &published {
        let raw = next_text(&mut team).await;
        assert_no_secret(&raw, &secrets(TEAM, "a"), "team resume");
        assert_eq!(
            raw,
            encode(&redact(expected, TEAM, SERVER_KEY)),
            "replayed, not a snapshot"
        );
    }

    // The HTTP API, per viewer: the pseudonym finds the session, the real id does not.
    publisher
        .publish(Event::delta(0, vec![session(3, "a")], vec![]))
        .unwrap();
    let pseudo = pseudonym(SERVER_KEY, "session", "id-a-3");
    let (code, head, body) = http_get(addr, "/sessions?viewer=team", &[]).await;
    assert_eq!(code, 200, "{head}");
    assert_no_secret(body.as_bytes(), &secrets(TEAM, "a"), "team /sessions");
    assert!(body.contains(&pseudo), "{body}");
    let team_etag = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("etag: ")
                .map(str::to_owned)
        })
        .unwrap();
    assert_no_secret(team_etag.as_bytes(), &secrets(TEAM, "a"), "team ETag");
    let (code, _, body) = http_get(addr, &format!("/sessions/{pseudo}?viewer=team"), &[]).await;
    assert_eq!(code, 200);
    let found: SessionState = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (found.id.as_str(), found.model.as_str()),
        (pseudo.as_str(), "model-a-3")
    );
    let (code, _, body) = http_get(addr, "/sessions/id-a-3?viewer=team", &[]).await;
    assert_eq!(
        (code, body.as_str()),
        (404, "{\"error\":\"session not found\"}\n")
    );
    let (code, head, body) = http_get(addr, "/sessions/id-a-3?viewer=full", &[]).await;
    assert_eq!(code, 200);
    assert!(body.contains("/home/dev/proj-a-3"), "{body}");
    let full_etag = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("etag: ")
                .map(str::to_owned)
        })
        .unwrap();
    assert_ne!(full_etag, team_etag, "one tag per policy");
    // The default viewer: model only.
    let (_, _, body) = http_get(addr, "/sessions", &[]).await;
    assert!(
        !body.contains("model-a-3") && body.contains("/home/dev/proj-a-3"),
        "{body}"
    );
    let (_, _, body) = http_get(addr, "/healthz?viewer=team", &[]).await;
    assert!(
        body.contains("\"source\":\"src-a\"") && !body.contains("error-text"),
        "{body}"
    );
}

#[tokio::test]
async fn source_redaction_covers_health_sources_and_lifecycle() {
    const STRICT: &[Field] = &[
        Field::WorkingDir,
        Field::Branch,
        Field::Model,
        Field::SessionId,
        Field::Source,
    ];
    let (addr, publisher) = start(layer(STRICT, &[])).await;
    publisher
        .publish(Event {
            kind: EventType::Health,
            health: Some(Health {
                source: "src-s".into(),
                status: HealthStatus::Failed,
                last_error: "error-text".into(),
                ..Health::default()
            }),
            ..Event::default()
        })
        .unwrap();
    let pseudo = pseudonym(SERVER_KEY, "source", "src-s");
    let (code, _, body) = http_get(addr, "/sources", &[]).await;
    assert_eq!(
        (code, body),
        (200, format!("{{\"sources\":[\"{pseudo}\"]}}\n"))
    );
    let (code, _, body) = http_get(addr, "/healthz", &[]).await;
    assert_eq!(code, 200);
    assert!(body.starts_with("{\"status\":\"failed\""), "{body}");
    assert_no_secret(body.as_bytes(), &secrets(STRICT, "s"), "/healthz");
    let (_, _, body) = http_get(addr, "/sources?viewer=full", &[]).await;
    assert_eq!(body, "{\"sources\":[\"src-s\"]}\n");

    let mut client = connect(addr, "").await;
    let _snapshot = next_text(&mut client).await;
    let health = next_text(&mut client).await;
    assert_no_secret(&health, &secrets(STRICT, "s"), "health after the snapshot");
    assert!(String::from_utf8_lossy(&health).contains(&pseudo));
    publisher
        .publish(Event::delta(0, vec![session(1, "s")], vec![]))
        .unwrap();
    let raw = next_text(&mut client).await;
    assert_no_secret(&raw, &secrets(STRICT, "s"), "delta");
}

#[tokio::test]
async fn machine_redaction_covers_sessions_health_and_the_http_api() {
    const MACHINE: &[Field] = &[Field::Machine];
    let (addr, publisher) = start(layer(MACHINE, &[])).await;
    let report = |machine: &str| Health {
        source: "src-m".into(),
        status: HealthStatus::Degraded,
        last_error: "error-text".into(),
        machine: machine.into(),
        ..Health::default()
    };
    publisher
        .publish(Event::health(0, report("host-m")))
        .unwrap();
    publisher
        .publish(Event::health(0, report("host-m-b")))
        .unwrap();
    publisher
        .publish(Event::delta(
            0,
            vec![session(0, "m"), session(1, "m")],
            vec![],
        ))
        .unwrap();
    let (a, b) = (
        pseudonym(SERVER_KEY, "machine", "host-m"),
        pseudonym(SERVER_KEY, "machine", "host-m-b"),
    );
    let secrets = secrets(MACHINE, "m");

    // The HTTP API: one entry per (machine, source), machines pseudonymised.
    let (code, _, body) = http_get(addr, "/sources", &[]).await;
    assert_eq!(
        (code, body),
        (
            200,
            format!("{{\"sources\":[\"src-m\",\"src-m\"],\"machines\":[\"{a}\",\"{b}\"]}}\n")
        )
    );
    let (_, _, body) = http_get(addr, "/healthz", &[]).await;
    assert_no_secret(body.as_bytes(), &secrets, "/healthz");
    assert!(body.contains(&format!("\"machine\":\"{a}\"")), "{body}");
    assert!(body.contains(&format!("\"machine\":\"{b}\"")), "{body}");
    let (_, _, body) = http_get(addr, "/sessions", &[]).await;
    assert_no_secret(body.as_bytes(), &secrets, "/sessions");
    let sessions: Vec<SessionState> = agentwatch_ws::wire::from_slice(body.as_bytes()).unwrap();
    let mut machines: Vec<&str> = sessions.iter().map(|s| s.machine.as_str()).collect();
    machines.sort_unstable();
    let mut want = vec![a.as_str(), b.as_str()];
    want.sort_unstable();
    assert_eq!(machines, want);
    // The id is not redacted, so the session is found by it, its machine redacted.
    let (_, _, body) = http_get(addr, "/sessions/id-m-0", &[]).await;
    assert!(body.contains(&format!("\"machine\":\"{a}\"}}")), "{body}");
    // The full viewer sees the names.
    let (_, _, body) = http_get(addr, "/sources?viewer=full", &[]).await;
    assert_eq!(
        body,
        "{\"sources\":[\"src-m\",\"src-m\"],\"machines\":[\"host-m\",\"host-m-b\"]}\n"
    );

    // The WebSocket: the snapshot, both reports after it, and a live delta.
    let mut client = connect(addr, "").await;
    let snapshot = next_text(&mut client).await;
    assert_no_secret(&snapshot, &secrets, "snapshot");
    let snapshot = Event::from_json(&snapshot).unwrap();
    assert_eq!(snapshot.sessions[0].machine, a);
    assert_eq!(snapshot.sessions[1].machine, b);
    for expected in [&a, &b] {
        let raw = next_text(&mut client).await;
        assert_no_secret(&raw, &secrets, "health after the snapshot");
        let health = Event::from_json(&raw).unwrap().health.unwrap();
        assert_eq!(&health.machine, expected);
        assert_eq!(
            (health.source.as_str(), health.last_error.as_str()),
            ("src-m", "")
        );
    }
    publisher
        .publish(Event::delta(0, vec![session(3, "m")], vec![]))
        .unwrap();
    let raw = next_text(&mut client).await;
    assert_no_secret(&raw, &secrets, "delta");
    assert_eq!(Event::from_json(&raw).unwrap().updates[0].machine, a);
    publisher
        .publish(Event::health(0, report("host-m-b")))
        .unwrap();
    let raw = next_text(&mut client).await;
    assert_no_secret(&raw, &secrets, "live health");
    assert_eq!(Event::from_json(&raw).unwrap().health.unwrap().machine, b);
}

#[tokio::test]
async fn a_lag_resync_sends_the_redacted_snapshot() {
    const TEAM: &[Field] = &[Field::WorkingDir, Field::SessionId];
    let layer = layer(TEAM, &[]).on_lag(LagPolicy::Resync).send_buffer(4);
    let (addr, publisher) = start(layer).await;
    publisher
        .publish(Event::delta(0, vec![session(0, "l")], vec![]))
        .unwrap();
    // A client that does not read, with a small receive buffer: it falls behind.
    let mut slow = connect_small_buffer(addr).await;
    eventually("the client is connected", || publisher.client_count() == 1).await;
    let big = "x".repeat(16 * 1024);
    let mut n = 1;
    while publisher.stats().resyncs == 0 {
        let mut s = session(n, "l");
        s.current_tool = big.clone();
        publisher.publish(Event::delta(0, vec![s], vec![])).unwrap();
        n += 1;
        assert!(n < 20_000, "the client never fell behind");
        if n % 64 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // After the resync, live deltas again; read up to the last one: snapshots and deltas,
    // all redacted.
    for i in 0..3 {
        publisher
            .publish(Event::delta(0, vec![session(90_000 + i, "l")], vec![]))
            .unwrap();
    }
    let last = pseudonym(SERVER_KEY, "session", "id-l-90002");
    let mut snapshots = 0;
    within("the deltas after the resync", async {
        loop {
            match slow.next().await {
                Some(Ok(Message::Text(text))) => {
                    assert_no_secret(text.as_bytes(), &secrets(TEAM, "l"), "after a resync");
                    if text.as_str().contains("\"type\":\"snapshot\"") {
                        snapshots += 1;
                    }
                    if text.as_str().contains(&last) {
                        break;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("the stream ended: {other:?}"),
            }
        }
    })
    .await;
    assert!(
        snapshots >= 2,
        "the first snapshot and the resync's: {snapshots}"
    );
    slow.close(None).await.ok();
}

#[tokio::test]
async fn each_event_is_encoded_once_per_policy_not_per_client() {
    const TEAM: &[Field] = &[Field::Branch];
    let (addr, publisher) = start(layer(&[], TEAM)).await;
    let mut clients = Vec::new();
    for i in 0..20 {
        let query = if i % 2 == 0 {
            "viewer=team"
        } else {
            "viewer=full"
        };
        let mut client = connect(addr, query).await;
        next_text(&mut client).await; // the snapshot
        clients.push(client);
    }
    let before = publisher.stats().encodings;
    for n in 0..50 {
        publisher
            .publish(Event::delta(0, vec![session(n, "e")], vec![]))
            .unwrap();
    }
    for client in &mut clients {
        for _ in 0..50 {
            next_text(client).await;
        }
    }
    assert_eq!(
        publisher.stats().encodings - before,
        100,
        "50 events, 2 policies"
    );
}

/// What one viewer of the property test has: its policy, its connection and the position of
/// the last event it applied.
struct Watcher {
    name: String,
    fields: Vec<Field>,
    key: Vec<u8>,
    client: Option<Client>,
    last: Option<(u64, String)>,
    /// The state as the viewer applied it, by (redacted) id.
    view: BTreeMap<String, SessionState>,
    /// The seq of the last snapshot it got on this connection.
    snapshot_seq: Option<u64>,
    /// How many `health` events followed that snapshot so far.
    after_snapshot: usize,
}

/// The store's latest report per (machine, source) up to `seq`, machine by machine (in name
/// order), each machine's in first-report order: what follows a snapshot at `seq`.
fn reports_up_to(by_seq: &HashMap<u64, Event>, seq: u64) -> Vec<Health> {
    let mut seqs: Vec<u64> = by_seq.keys().copied().filter(|s| *s <= seq).collect();
    seqs.sort_unstable();
    let mut reports: Vec<Health> = Vec::new();
    for health in seqs.iter().filter_map(|s| by_seq[s].health.as_ref()) {
        match reports
            .iter_mut()
            .find(|h| h.machine == health.machine && h.source == health.source)
        {
            Some(kept) => *kept = health.clone(),
            None => {
                let at = reports.partition_point(|h| h.machine <= health.machine);
                reports.insert(at, health.clone());
            }
        }
    }
    reports
}

#[tokio::test]
async fn property_random_policies_streams_and_reconnects_leak_nothing() {
    for seed in 1..=4u64 {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
        // Random policies: each viewer redacts a random subset, some under their own key.
        let mut watchers = Vec::new();
        let mut policies = HashMap::new();
        for v in 0..4 {
            let fields: Vec<Field> = Field::ALL
                .into_iter()
                .filter(|_| rng.below(2) == 0)
                .collect();
            let own_key = rng.below(3) == 0;
            let key = if own_key {
                format!("key-{seed}-{v}").into_bytes()
            } else {
                SERVER_KEY.to_vec()
            };
            let mut policy = policy_of(&fields);
            if own_key {
                policy = policy.pseudonym_key(PseudonymKey::from_bytes(&key));
            }
            let name = format!("v{v}");
            policies.insert(name.clone(), policy);
            watchers.push(Watcher {
                name,
                fields,
                key,
                client: None,
                last: None,
                view: BTreeMap::new(),
                snapshot_seq: None,
                after_snapshot: 0,
            });
        }
        let (ws, publisher) = WsLayer::new()
            .rate_limit(None)
            .replay_window(8)
            .pseudonym_key(PseudonymKey::from_bytes(SERVER_KEY))
            .auth::<Viewer>()
            .policy_for(move |identity: &Identity| policies.get(identity.id()).cloned())
            .build::<()>("/ws");
        let addr = serve(Router::new().merge(ws)).await;
        let tag = format!("p{seed}");
        // Every event published, as the full store has it, by seq.
        let mut by_seq: HashMap<u64, Event> = HashMap::new();
        let mut live: Vec<u64> = Vec::new();

        for step in 0..60 {
            // Random reconnects: drop a viewer, or bring one back (with its position, or a
            // stale one that gets a snapshot).
            for w in &mut watchers {
                if w.client.is_some() && rng.below(6) == 0 {
                    w.client = None;
                } else if w.client.is_none() && (step == 0 || rng.below(2) == 0) {
                    let query = match &w.last {
                        Some((seq, at)) if rng.below(4) != 0 => format!(
                            "viewer={}&since={seq}&since_at={}",
                            w.name,
                            at.replace(':', "%3A").replace('+', "%2B")
                        ),
                        _ => format!("viewer={}", w.name),
                    };
                    w.client = Some(connect(addr, &query).await);
                    w.snapshot_seq = None;
                }
            }
            // A random event.
            let n = rng.below(6);
            let event = match rng.below(5) {
                0 | 1 => {
                    let mut s = session(n, &tag);
                    s.message_count = step;
                    Event::delta(0, vec![s], vec![])
                }
                2 => Event::delta(0, vec![], vec![format!("id-{tag}-{n}")]),
                3 => Event {
                    kind: EventType::Lifecycle,
                    lifecycle: Some(LifecycleEvent {
                        kind: LifecycleEventType::Updated,
                        session_id: format!("id-{tag}-{n}"),
                        source: format!("src-{tag}"),
                        ..LifecycleEvent::default()
                    }),
                    ..Event::default()
                },
                _ => Event {
                    kind: EventType::Health,
                    health: Some(Health {
                        source: format!("src-{tag}"),
                        status: HealthStatus::Degraded,
                        last_error: format!("error-text {step}"),
                        // Three reports of one source: two machines' and one without.
                        machine: machine(n, &tag),
                        ..Health::default()
                    }),
                    ..Event::default()
                },
            };
            let seq = publisher.publish(event.clone()).unwrap();
            let mut stamped = event;
            stamped.seq = seq;
            by_seq.insert(seq, stamped);
            live.push(seq);

            // Every connected viewer reads until it has applied this event.
            for w in &mut watchers {
                let Some(client) = &mut w.client else {
                    continue;
                };
                loop {
                    let raw = next_text(client).await;
                    assert_no_secret(&raw, &secrets(&w.fields, &tag), &w.name);
                    let got = Event::from_json(&raw).unwrap();
                    let follows_snapshot =
                        got.kind == EventType::Health && w.snapshot_seq == Some(got.seq);
                    let expected = if got.kind == EventType::Snapshot {
                        w.view = got
                            .sessions
                            .iter()
                            .map(|s| (s.id.clone(), s.clone()))
                            .collect();
                        w.snapshot_seq = Some(got.seq);
                        w.after_snapshot = 0;
                        None
                    } else if follows_snapshot {
                        // The reports after the snapshot: the latest of each (machine,
                        // source) up to the snapshot, in first-report order, with the
                        // snapshot's position.
                        let latest = reports_up_to(&by_seq, got.seq)
                            .get(w.after_snapshot)
                            .cloned();
                        assert!(latest.is_some(), "seed {seed}: an extra health report");
                        w.after_snapshot += 1;
                        Some(Event {
                            seq: got.seq,
                            at: got.at,
                            kind: EventType::Health,
                            health: latest,
                            ..Event::default()
                        })
                    } else {
                        let mut original = by_seq[&got.seq].clone();
                        original.at = got.at;
                        for s in &got.updates {
                            w.view.insert(s.id.clone(), s.clone());
                        }
                        for id in &got.removed {
                            w.view.remove(id);
                        }
                        Some(original)
                    };
                    if let Some(original) = expected {
                        // Exactly the published event (or report), redacted.
                        assert_eq!(
                            String::from_utf8_lossy(&raw),
                            String::from_utf8_lossy(&encode(&redact(&original, &w.fields, &w.key))),
                            "seed {seed} step {step} viewer {} ({:?})",
                            w.name,
                            w.fields
                        );
                    }
                    w.last = Some((got.seq, got.at.to_string()));
                    if got.seq >= seq && !follows_snapshot {
                        break;
                    }
                }
            }
        }
        // Every connected viewer's state is the store's, redacted by its policy.
        let store = publisher.sessions();
        for w in &watchers {
            if w.client.is_none() {
                continue;
            }
            let expected: BTreeMap<String, SessionState> = store
                .iter()
                .map(|s| {
                    let r = redact(&Event::delta(0, vec![s.clone()], vec![]), &w.fields, &w.key);
                    let s = r.updates.into_iter().next().unwrap();
                    (s.id.clone(), s)
                })
                .collect();
            assert_eq!(
                w.view, expected,
                "seed {seed} viewer {} ({:?})",
                w.name, w.fields
            );
        }
        let stats = publisher.stats();
        assert!(
            stats.resumed > 0 && stats.snapshots > 4,
            "seed {seed}: the run must both resume and snapshot: {stats:?}"
        );
        for w in &mut watchers {
            if let Some(mut client) = w.client.take() {
                client.close(None).await.ok();
            }
        }
        drop(live);
    }
}

/// Nothing sideways: every tracing event of a redacted viewer's connection, resume, HTTP
/// requests and lag close (at TRACE), its close reason and its `/ws/status` answer hold no
/// redacted value.
#[tokio::test(flavor = "current_thread")]
async fn no_redacted_value_in_logs_close_reasons_or_status() {
    let (log, _guard) = crate::common::Captured::install(tracing::Level::TRACE);
    let all = Field::ALL.to_vec();
    let (addr, publisher) = start(layer(&all, &[]).send_buffer(2)).await;
    publisher
        .publish(Event::delta(0, vec![session(1, "t")], vec![]))
        .unwrap();
    let mut client = connect(addr, "").await;
    let snapshot = next_text(&mut client).await;
    assert_no_secret(&snapshot, &secrets(&all, "t"), "snapshot");
    for path in ["/sessions", "/healthz", "/sources", "/ws/status"] {
        let (_, head, body) = http_get(addr, path, &[]).await;
        assert_no_secret(head.as_bytes(), &secrets(&all, "t"), path);
        assert_no_secret(body.as_bytes(), &secrets(&all, "t"), path);
    }
    let pseudo = pseudonym(SERVER_KEY, "session", "id-t-1");
    let (code, _, _) = http_get(addr, &format!("/sessions/{pseudo}"), &[]).await;
    assert_eq!(code, 200);
    // A burst the connection task cannot keep up with (this runtime has one thread and the
    // burst does not yield): closed with 1013 and a reason.
    for n in 2..200 {
        publisher
            .publish(Event::delta(0, vec![session(n, "t")], vec![]))
            .unwrap();
    }
    let close = within("the lag close", async {
        loop {
            match client.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(Message::Text(text))) => {
                    assert_no_secret(text.as_bytes(), &secrets(&all, "t"), "delta");
                }
                Some(Ok(_)) => {}
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("a close frame with a reason");
    assert_eq!(u16::from(close.code), 1013);
    assert_no_secret(close.reason.as_bytes(), &secrets(&all, "t"), "close reason");
    eventually("the connection ends", || publisher.client_count() == 0).await;
    let logged = log.text();
    assert!(
        logged.contains("client connected"),
        "the log was captured: {logged}"
    );
    assert_no_secret(logged.as_bytes(), &secrets(&all, "t"), "the log");
}

/// A viewer whose policy was tightened while it was away is not resumed: what it holds was
/// redacted otherwise (here: not at all), so it gets a snapshot under its new policy.
#[tokio::test]
async fn a_changed_policy_means_a_snapshot_not_a_resume() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let strict = Arc::new(AtomicBool::new(false));
    let chosen = strict.clone();
    let (ws, publisher) = WsLayer::new()
        .rate_limit(None)
        .pseudonym_key(PseudonymKey::from_bytes(SERVER_KEY))
        .auth::<Viewer>()
        .policy_for(move |_: &Identity| {
            Some(if chosen.load(Ordering::SeqCst) {
                Policy::all()
            } else {
                Policy::none()
            })
        })
        .build::<()>("/ws");
    let addr = serve(Router::new().merge(ws)).await;
    publisher
        .publish(Event::delta(0, vec![session(1, "c")], vec![]))
        .unwrap();
    let mut owner = connect(addr, "viewer=owner").await;
    let snapshot = Event::from_json(&next_text(&mut owner).await).unwrap();
    assert_eq!(snapshot.sessions[0].working_dir, "/home/dev/proj-c-1");
    let position = |e: &Event| {
        format!(
            "viewer=owner&since={}&since_at={}",
            e.seq,
            e.at.to_string().replace(':', "%3A").replace('+', "%2B")
        )
    };
    // Unchanged policy: a resume (the next message is the missed delta, not a snapshot).
    owner.close(None).await.ok();
    publisher
        .publish(Event::delta(0, vec![session(2, "c")], vec![]))
        .unwrap();
    let mut owner = connect(addr, &position(&snapshot)).await;
    let missed = Event::from_json(&next_text(&mut owner).await).unwrap();
    assert_eq!(missed.kind, EventType::Delta, "resumed");
    owner.close(None).await.ok();

    // Tightened while away: a snapshot under the new policy, whatever `since` says.
    strict.store(true, Ordering::SeqCst);
    publisher
        .publish(Event::delta(0, vec![session(3, "c")], vec![]))
        .unwrap();
    let mut owner = connect(addr, &position(&missed)).await;
    let raw = next_text(&mut owner).await;
    assert_no_secret(&raw, &secrets(&Field::ALL, "c"), "after the change");
    let got = Event::from_json(&raw).unwrap();
    assert_eq!(got.kind, EventType::Snapshot, "not resumed: {got:?}");
    assert_eq!(got.sessions.len(), 3);
}
