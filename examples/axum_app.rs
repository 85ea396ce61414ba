//! How an existing axum app adopts agentwatch-ws: its own routes and state, the WebSocket
//! router merged at `/ws`, a bearer-token extractor for authentication, an origin allowlist
//! and `TraceLayer` on top.
//!
//! ```sh
//! cargo run --example axum_app
//! # then, with any WebSocket client:
//! websocat -H 'Authorization: Bearer let-me-in' ws://127.0.0.1:3002/ws
//! ```

use std::time::Duration;

use agentwatch_ws::{Event, EventSink, Identity, MultiSink, SessionState, SessionStore, WsLayer};
use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::{StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::{Router, routing::get};
use tower_http::trace::TraceLayer;

/// The app's own state; the token check reads from it.
#[derive(Clone)]
struct AppState {
    api_token: String,
}

/// `Authorization: Bearer <token>`: an ordinary axum extractor, written by the app.
struct Bearer(Identity);

impl<S: Send + Sync> FromRequestParts<S> for Bearer
where
    AppState: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let expected = AppState::from_ref(state).api_token;
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        match token {
            Some(token) if token == expected => Ok(Bearer(Identity::new("dashboard-user"))),
            _ => Err((
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "missing or wrong bearer token\n",
            )
                .into_response()),
        }
    }
}

impl From<Bearer> for Identity {
    fn from(Bearer(identity): Bearer) -> Identity {
        identity
    }
}

async fn health(State(state): State<AppState>) -> String {
    format!("ok ({} byte token configured)\n", state.api_token.len())
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=debug".into()),
        )
        .init();

    let store = SessionStore::new();
    let ws = WsLayer::new(store.clone())
        .allowed_origins(["https://dashboard.example.com"])
        .auth::<Bearer>()
        .max_connections(100);
    let monitor = MultiSink::new().with(store).with(ws.hub());

    let state = AppState {
        api_token: "let-me-in".into(),
    };
    let app = Router::new()
        .route("/healthz", get(health))
        .merge(ws.router::<AppState>("/ws"))
        .layer(TraceLayer::new_for_http())
        .with_state(state);

    // Stand-in for the real monitor: one session that keeps working.
    tokio::spawn(async move {
        let mut session = SessionState {
            id: "demo".into(),
            source: "claude-code".into(),
            ..Default::default()
        };
        for seq in 1.. {
            session.message_count = seq as i64;
            if let Err(error) =
                monitor.handle_event(&Event::delta(seq, vec![session.clone()], vec![]))
            {
                tracing::error!(%error, "publish failed");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3002").await?;
    tracing::info!("listening on http://127.0.0.1:3002 (WebSocket at /ws)");
    // The served-the-right-way path: a 10 s deadline on request heads (slowloris),
    // TCP_NODELAY, and the client address the per-IP rate limit needs.
    agentwatch_ws::serve(listener, app).await
}
