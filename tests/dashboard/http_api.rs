//! The dashboard serves the HTTP API next to `/ws`, with what it publishes.

use crate::dashboard_support::Dashboard;

#[test]
fn curl_sees_the_injected_session_health_and_sources() {
    let root = tempfile::tempdir().unwrap();
    let dashboard = Dashboard::start(
        "http-api",
        &["--claude", root.path().to_str().unwrap(), "--inject"],
    );
    dashboard.inject("id=api-1&slug=api-slug&activity=waiting");

    let (status, body) = dashboard.request("GET", "/sessions/api-1");
    assert_eq!(status, 200, "{body}");
    let session: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(session["id"], "api-1");
    assert_eq!(session["slug"], "api-slug");
    assert!(
        body.ends_with("}\n"),
        "Go's Encoder ends with a newline: {body:?}"
    );

    let (status, body) = dashboard.request("GET", "/sessions");
    assert_eq!(status, 200, "{body}");
    let sessions: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert!(sessions.iter().any(|s| s["id"] == "api-1"), "{body}");

    let (status, body) = dashboard.request("GET", "/sessions/nobody");
    assert_eq!(
        (status, body.as_str()),
        (404, "{\"error\":\"session not found\"}\n")
    );

    // The monitor reports every watched source's health at start.
    let (status, body) = dashboard.request("GET", "/sources");
    assert_eq!(status, 200, "{body}");
    let sources: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        sources["sources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "claude"),
        "{body}"
    );
    let (status, body) = dashboard.request("GET", "/healthz");
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(health["status"].is_string(), "{body}");

    let (status, _) = dashboard.request("POST", "/healthz");
    assert_eq!(status, 405);
}
