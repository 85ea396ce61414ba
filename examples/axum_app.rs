//! How an existing axum app adopts agentwatch-ws: its own routes and state, the WebSocket
//! router merged at `/ws`, a bearer-token extractor for authentication that browsers can
//! satisfy too, an origin allowlist and `TraceLayer` on top.
//!
//! ```sh
//! cargo run --example axum_app          # port 3002; --port N (or PORT=N) for another
//! # a browser: open http://127.0.0.1:3002/ (the page sends the token as a subprotocol)
//! # any other WebSocket client:
//! websocat -H 'Authorization: Bearer let-me-in' ws://127.0.0.1:3002/ws
//! websocat --protocol "agentwatch.v1, agentwatch.token.bGV0LW1lLWlu" ws://127.0.0.1:3002/ws
//! ```
//!
//! A page cannot set `Authorization` on a WebSocket, so the extractor takes the token from
//! whichever carrier the client used ([`BearerToken`]): the header, an
//! `agentwatch.token.<base64url>` subprotocol offered next to `agentwatch.v1` (the server
//! echoes only `agentwatch.v1`), or `?access_token=`.

use std::time::Duration;

use agentwatch_ws::admission::token::{BearerToken, TokenRejection};
use agentwatch_ws::{Event, Identity, SessionState, WsLayer};
use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::Html;
use axum::{Router, routing::get};
use tower_http::trace::TraceLayer;

/// The app's own state; the token check reads from it.
#[derive(Clone)]
struct AppState {
    api_token: String,
}

/// A bearer token from any carrier, checked against the app's state: an ordinary axum
/// extractor, written by the app. Its rejection (`401`, `WWW-Authenticate: Bearer`) reaches
/// the client unchanged.
struct Bearer(Identity);

impl<S: Send + Sync> FromRequestParts<S> for Bearer
where
    AppState: FromRef<S>,
{
    type Rejection = TokenRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, TokenRejection> {
        let BearerToken(token) = BearerToken::from_request_parts(parts, state).await?;
        if token == AppState::from_ref(state).api_token {
            Ok(Bearer(Identity::new("dashboard-user")))
        } else {
            Err(TokenRejection::Invalid)
        }
    }
}

impl From<Bearer> for Identity {
    fn from(Bearer(identity): Bearer) -> Identity {
        identity
    }
}

/// A page connecting the browser way. A real app would get the token from its login, not
/// embed it.
async fn page() -> Html<&'static str> {
    Html(
        r#"<!doctype html><meta charset="utf-8"><title>agentwatch-ws</title>
<pre id="log">connecting…</pre>
<script>
const token = "let-me-in";
const base64url = btoa(token).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const ws = new WebSocket(`ws://${location.host}/ws`, ["agentwatch.v1", "agentwatch.token." + base64url]);
const log = document.getElementById("log");
ws.onopen = () => { log.textContent = `connected, protocol ${ws.protocol}\n`; };
ws.onmessage = (m) => { const e = JSON.parse(m.data); log.textContent += `${e.type} seq ${e.seq}\n`; };
ws.onclose = (e) => { log.textContent += `closed ${e.code} (see /ws/status)\n`; };
</script>"#,
    )
}

async fn health(State(state): State<AppState>) -> String {
    format!("ok ({} byte token configured)\n", state.api_token.len())
}

/// The command line (`--help` lists it).
#[derive(clap::Parser)]
#[command(about = "An axum app with its own routes, serving agentwatch-ws at /ws")]
struct Args {
    /// Port to listen on, on 127.0.0.1 [default: $PORT, else 3002].
    #[arg(long, value_name = "N")]
    port: Option<u16>,
}

impl Args {
    fn port(&self) -> std::io::Result<u16> {
        match (self.port, std::env::var("PORT")) {
            (Some(port), _) => Ok(port),
            (None, Ok(port)) => port.parse().map_err(std::io::Error::other),
            (None, Err(_)) => Ok(3002),
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=debug".into()),
        )
        .init();

    let port = <Args as clap::Parser>::parse().port()?;
    let ws = WsLayer::new()
        // The production page, and the demo page this example serves.
        .allowed_origins([
            "https://dashboard.example.com".to_owned(),
            format!("http://127.0.0.1:{port}"),
        ])
        .map_err(std::io::Error::other)?
        .auth::<Bearer>()
        .max_connections(100);
    let (ws, publisher) = ws.build::<AppState>("/ws");

    let state = AppState {
        api_token: "let-me-in".into(),
    };
    let app = Router::new()
        .route("/", get(page))
        .route("/healthz", get(health))
        .merge(ws)
        // Spans print the URI without token carriers (`?access_token=` values): the default
        // `TraceLayer` span would print the token with every event inside it.
        .layer(TraceLayer::new_for_http().make_span_with(agentwatch_ws::redact::make_span))
        .with_state(state);

    // Stand-in for the real monitor: one session that keeps working.
    tokio::spawn(async move {
        let mut session = SessionState {
            id: "demo".into(),
            source: "claude".into(),
            ..Default::default()
        };
        for messages in 1.. {
            session.message_count = messages;
            // Seq 0: the publisher numbers the event.
            if let Err(error) = publisher.publish(Event::delta(0, vec![session.clone()], vec![])) {
                tracing::error!(%error, "publish failed");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    tracing::info!("listening on http://127.0.0.1:{port} (WebSocket at /ws)");
    // The served-the-right-way path: a 10 s deadline on request heads (slowloris),
    // TCP_NODELAY, and the client address the per-IP rate limit needs.
    agentwatch_ws::serve(listener, app).await
}
