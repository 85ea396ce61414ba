//! The dashboard survives a developer reloading it 20 times a minute. Each reload
//! is one WebSocket upgrade from 127.0.0.1; the crate's default per-IP limit (12 a minute,
//! burst 4) refused the fifth, the dashboard's own (60 a minute, burst 20) admits all 20.

use crate::common;
use crate::dashboard_support;

use agentwatch_ws::EventType;
use common::{next_event, within};
use dashboard_support::Dashboard;
use tokio_tungstenite::tungstenite::Error as WsError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_quick_reloads_are_never_refused() {
    let dashboard =
        tokio::task::spawn_blocking(|| Dashboard::start("reload", &["--demo", "--rate", "5"]))
            .await
            .expect("start the dashboard");
    for reload in 1..=20 {
        let (mut client, response) = within(
            "a reload's upgrade",
            tokio_tungstenite::connect_async(dashboard.ws_url("")),
        )
        .await
        .unwrap_or_else(|e| panic!("reload {reload} of 20 was refused: {e}"));
        assert_eq!(response.status(), 101, "reload {reload}");
        // Admitted for real: the page's first message, its state.
        assert_eq!(next_event(&mut client).await.kind, EventType::Snapshot);
        drop(client);
    }

    // The limit is on, not off: a client hammering past the burst is refused with 429
    // (one token comes back per second; these attempts take a few milliseconds each).
    let mut refused = None;
    for attempt in 1..=30 {
        match within(
            "an upgrade past the burst",
            tokio_tungstenite::connect_async(dashboard.ws_url("")),
        )
        .await
        {
            Ok(_) => continue,
            Err(WsError::Http(response)) => {
                refused = Some((attempt, response.status().as_u16()));
                break;
            }
            Err(other) => panic!("attempt {attempt}: {other}"),
        }
    }
    let (attempt, status) = refused.expect("30 more upgrades within a second all admitted");
    assert_eq!(status, 429, "refused past the burst after {attempt} more");
}
