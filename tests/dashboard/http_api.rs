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

/// `--redact dir,id` with `AGENTWATCH_PSEUDONYM_KEY`: the HTTP API hides the directory and
/// names the session by the pseudonym the documented derivation gives under that key, so two
/// nodes given the same key agree; a `--redis` node with `--redact id` and no key refuses to
/// start.
#[test]
fn redact_uses_the_given_key_and_a_cluster_node_needs_one() {
    use hmac::{Hmac, Mac};
    let key = "a shared pseudonym key for the test";
    let root = tempfile::tempdir().unwrap();
    let args = [
        "--claude",
        root.path().to_str().unwrap(),
        "--inject",
        "--redact",
        "dir,id",
    ];
    let dashboard = Dashboard::spawn_with("redact-key", &args, |command| {
        command.env("AGENTWATCH_PSEUDONYM_KEY", key);
    });
    dashboard.wait_for("open http://");
    dashboard.inject("id=redact-1&slug=r-slug&dir=/home/dev/src/secret-repo&branch=main");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(b"session\0redact-1");
    let pseudonym: String = mac.finalize().into_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (status, body) = dashboard.request("GET", &format!("/sessions/{pseudonym}"));
    assert_eq!(status, 200, "{body}");
    assert!(
        !body.contains("secret-repo") && !body.contains("r-slug"),
        "{body}"
    );
    assert!(
        body.contains("\"branch\":\"main\""),
        "branch is not redacted: {body}"
    );
    let (status, _) = dashboard.request("GET", "/sessions/redact-1");
    assert_eq!(status, 404, "the real id finds nothing");

    let out = std::process::Command::new(crate::dashboard_support::binary())
        .args([
            "--redis",
            "redis://127.0.0.1:1",
            "--redact",
            "id",
            "--port",
            "0",
        ])
        .env_remove("AGENTWATCH_PSEUDONYM_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("AGENTWATCH_PSEUDONYM_KEY"), "{stderr}");
}
