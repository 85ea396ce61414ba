//! The dashboard with and without Claude Code hooks: `GET /attention` and the page's note
//! while they are not installed, `agentwatch-ws hooks install` into the settings under `HOME`,
//! and then a permission prompt (the hook binary run with Claude Code's input) showing on the
//! page as `waiting` with the tool.

use crate::common;
use crate::dashboard_support;
use crate::hooks_support;
use crate::monitor_support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use agentwatch_ws::wire::Timestamp;
use common::chromium::{Browser, chromium_available};
use common::http_get;
use dashboard_support::Dashboard;
use hooks_support::{SAMPLE_SESSION as ID, payload, run};
use monitor_support::{claude_project, claude_user, write};

fn attention_of(body: &str, source: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == source)
        .cloned()
        .unwrap_or_else(|| panic!("no {source} in {body}"))
}

fn with_home(home: &Path) -> impl FnOnce(&mut std::process::Command) + '_ {
    move |c| {
        c.env("HOME", home)
            .env_remove("XDG_STATE_HOME")
            .env_remove("AGENTWATCH_MARKER_DIR")
            .env_remove("CLAUDE_CONFIG_DIR")
            .env_remove("CODEX_HOME");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_hooks_the_page_says_so_and_with_them_a_prompt_shows_waiting() {
    let home = tempfile::tempdir().unwrap();
    hooks_support::claude_permission_log(
        &home.path().join(".claude/projects"),
        ID,
        Timestamp::now(),
    );
    std::fs::create_dir_all(home.path().join(".codex/sessions")).unwrap();
    let dashboard = tokio::task::spawn_blocking({
        let home = home.path().to_path_buf();
        move || {
            let d = Dashboard::spawn_with("hooks", &[], with_home(&home));
            d.wait_for("open http://");
            d
        }
    })
    .await
    .unwrap();
    let markers = home.path().join(".local/state/agentwatch/markers");
    let line = dashboard.wait_for("markers: ");
    assert!(line.ends_with(markers.to_str().unwrap()), "{line}");
    assert!(
        markers.is_dir(),
        "the dashboard creates the marker directory"
    );
    dashboard.wait_for("claude: permission prompts are not detected");
    let addr = SocketAddr::from(([127, 0, 0, 1], dashboard.port));

    let (status, _, body) = http_get(addr, "/attention", &[]).await;
    assert_eq!(status, 200);
    let claude = attention_of(&body, "claude");
    assert_eq!(claude["permissionPrompts"], false, "{body}");
    assert!(
        claude["note"]
            .as_str()
            .unwrap()
            .contains("agentwatch-ws hooks install")
    );
    let codex = attention_of(&body, "codex");
    assert_eq!(codex["permissionPrompts"], false, "{body}");
    assert!(
        !serde_json::from_str::<serde_json::Value>(&body).unwrap()["sources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["source"] == "gemini"),
        "only watched sources: {body}"
    );

    let mut browser = if chromium_available() {
        let mut b = Browser::start(&[]).await;
        b.open(&format!("http://{addr}/")).await;
        b.cdp
            .wait_for(
                "the note for claude",
                Duration::from_secs(10),
                r#"(() => { const p = document.querySelector('#attention [data-source="claude"]');
                   return !!p && !document.getElementById('attention').hidden
                     && p.textContent.includes('run agentwatch-ws hooks install')
                     && p.querySelector('code').textContent === 'agentwatch-ws hooks install'; })()"#,
            )
            .await;
        Some(b)
    } else {
        None
    };

    // Install the hooks into the settings under HOME.
    let settings = home.path().join(".claude/settings.json");
    let out = tokio::task::spawn_blocking({
        let settings = settings.clone();
        let markers = markers.clone();
        move || {
            run(
                &[
                    "hooks",
                    "install",
                    "--settings",
                    settings.to_str().unwrap(),
                    "--marker-dir",
                    markers.to_str().unwrap(),
                ],
                b"",
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let (_, _, body) = http_get(addr, "/attention", &[]).await;
    assert_eq!(
        attention_of(&body, "claude")["permissionPrompts"],
        true,
        "{body}"
    );

    // Without Chromium, `chromium_available` has said the page part did not run.
    let Some(browser) = browser.as_mut() else {
        return;
    };
    browser.navigate(&format!("http://{addr}/")).await;
    browser
        .cdp
        .wait_for(
            "the session working with Bash, and no note for claude (codex keeps its own)",
            Duration::from_secs(10),
            &format!(
                r#"(() => {{ const s = window.agentwatchDashboard && window.agentwatchDashboard.sessions.get("{ID}");
                   return !!s && s.activity === "working" && s.currentTool === "Bash"
                     && !document.querySelector('#attention [data-source="claude"]')
                     && !!document.querySelector('#attention [data-source="codex"]'); }})()"#
            ),
        )
        .await;

    // Claude Code shows a permission prompt and runs the installed hook command.
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&settings).unwrap()).unwrap();
    let command = doc["hooks"]["PermissionRequest"][0]["hooks"][0]["command"]
        .as_str()
        .unwrap()
        .to_owned();
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        let words: Vec<&str> = command.split(' ').collect();
        run(&words[1..], &payload("PermissionRequest"))
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    browser
        .cdp
        .wait_for(
            "the session waiting with Bash",
            Duration::from_secs(10),
            &format!(
                r#"(() => {{ const s = window.agentwatchDashboard.sessions.get("{ID}");
                   return !!s && s.activity === "waiting" && s.currentTool === "Bash"; }})()"#
            ),
        )
        .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "the page showed the wait after {took:?}"
    );
}

/// A dashboard started before the hooks are installed reads the default marker directory; hooks
/// installed then for another directory write where it never reads, and `/attention` says so
/// instead of claiming that permission prompts are detected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_installed_later_for_another_marker_directory_are_not_claimed_detected() {
    let home = tempfile::tempdir().unwrap();
    let now = Timestamp::now();
    let log = claude_project(&home.path().join(".claude/projects")).join(format!("{ID}.jsonl"));
    write(
        &log,
        &claude_user(ID, "u1", &now.to_string(), "run the tests"),
    );
    let dashboard = tokio::task::spawn_blocking({
        let home = home.path().to_path_buf();
        move || {
            let d = Dashboard::spawn_with("hooks-elsewhere", &[], with_home(&home));
            d.wait_for("open http://");
            d
        }
    })
    .await
    .unwrap();
    dashboard.wait_for("claude: permission prompts are not detected");
    let addr = SocketAddr::from(([127, 0, 0, 1], dashboard.port));

    let settings = home.path().join(".claude/settings.json");
    let elsewhere = home.path().join("other-markers");
    let out = tokio::task::spawn_blocking({
        let settings = settings.clone();
        move || {
            run(
                &[
                    "hooks",
                    "install",
                    "--settings",
                    settings.to_str().unwrap(),
                    "--marker-dir",
                    elsewhere.to_str().unwrap(),
                ],
                b"",
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let (status, _, body) = http_get(addr, "/attention", &[]).await;
    assert_eq!(status, 200);
    let claude = attention_of(&body, "claude");
    assert_eq!(claude["permissionPrompts"], false, "{body}");
    let note = claude["note"].as_str().unwrap();
    assert!(note.contains("restart the dashboard"), "{body}");
    assert!(
        !note.contains("other-markers"),
        "no path in the note: {body}"
    );

    // Installed again for the directory it reads: detected, without a restart.
    let markers = home.path().join(".local/state/agentwatch/markers");
    let out = tokio::task::spawn_blocking(move || {
        run(
            &[
                "hooks",
                "install",
                "--settings",
                settings.to_str().unwrap(),
                "--marker-dir",
                markers.to_str().unwrap(),
            ],
            b"",
        )
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let (_, _, body) = http_get(addr, "/attention", &[]).await;
    assert_eq!(
        attention_of(&body, "claude")["permissionPrompts"],
        true,
        "{body}"
    );
}

/// A file where the marker directory should be: the dashboard says it is not a directory
/// (it is never read), not that it is "read at each rescan".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_directory_that_is_a_file_is_reported_as_such() {
    let home = tempfile::tempdir().unwrap();
    let log = claude_project(&home.path().join(".claude/projects")).join(format!("{ID}.jsonl"));
    write(
        &log,
        &claude_user(ID, "u1", &Timestamp::now().to_string(), "hi"),
    );
    let markers = home.path().join(".local/state/agentwatch/markers");
    std::fs::create_dir_all(markers.parent().unwrap()).unwrap();
    std::fs::write(&markers, b"").unwrap();
    let line = tokio::task::spawn_blocking({
        let home = home.path().to_path_buf();
        move || {
            let d = Dashboard::spawn_with("markers-file", &[], with_home(&home));
            let line = d.wait_for("markers: ");
            d.wait_for("open http://");
            line
        }
    })
    .await
    .unwrap();
    assert!(line.contains("is not a directory"), "{line}");
    assert!(!line.contains("read at each rescan"), "{line}");
    assert!(markers.is_file(), "the file is left alone");
}

/// A dashboard over a Gemini CLI root under `HOME`: `GET /attention` says Gemini permission
/// prompts are not detected and how to fix it, then detected once `agentwatch-ws hooks
/// install --agent gemini` wrote Gemini CLI's settings under `HOME`, and not again once
/// `hooksConfig.enabled` is switched off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_attention_follows_the_gemini_hooks() {
    let home = tempfile::tempdir().unwrap();
    let now = Timestamp::now().to_string();
    write(
        &home
            .path()
            .join(".gemini/tmp")
            .join(hooks_support::GEMINI_CHAT),
        &format!(
            "{}\n{}\n",
            hooks_support::gemini_session(ID, &now, &now),
            hooks_support::gemini_user("u1", &now, "hi"),
        ),
    );
    let dashboard = tokio::task::spawn_blocking({
        let home = home.path().to_path_buf();
        move || {
            let d = Dashboard::spawn_with("gemini-hooks", &[], |c| {
                with_home(&home)(c);
                c.env_remove("GEMINI_CLI_HOME");
            });
            d.wait_for("open http://");
            d
        }
    })
    .await
    .unwrap();
    dashboard.wait_for("gemini: permission prompts are not detected");
    let addr = SocketAddr::from(([127, 0, 0, 1], dashboard.port));
    let gemini = |body: &str| attention_of(body, "gemini");

    let (status, _, body) = http_get(addr, "/attention", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(gemini(&body)["permissionPrompts"], false, "{body}");
    assert!(
        gemini(&body)["note"]
            .as_str()
            .unwrap()
            .contains("`agentwatch-ws hooks install --agent gemini`"),
        "{body}"
    );
    let mut browser = if chromium_available() {
        let mut b = Browser::start(&[]).await;
        b.open(&format!("http://{addr}/")).await;
        b.cdp
            .wait_for(
                "the note for gemini",
                Duration::from_secs(10),
                r#"(() => { const p = document.querySelector('#attention [data-source="gemini"]');
                   return !!p && !document.getElementById('attention').hidden
                     && p.querySelector('code').textContent === 'agentwatch-ws hooks install --agent gemini'; })()"#,
            )
            .await;
        Some(b)
    } else {
        None
    };

    let settings = home.path().join(".gemini/settings.json");
    let markers = home.path().join(".local/state/agentwatch/markers");
    let out = tokio::task::spawn_blocking({
        let settings = settings.clone();
        move || {
            run(
                &[
                    "hooks",
                    "install",
                    "--agent",
                    "gemini",
                    "--settings",
                    settings.to_str().unwrap(),
                    "--marker-dir",
                    markers.to_str().unwrap(),
                ],
                b"",
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let (_, _, body) = http_get(addr, "/attention", &[]).await;
    assert_eq!(gemini(&body)["permissionPrompts"], true, "{body}");

    if let Some(browser) = browser.as_mut() {
        browser.navigate(&format!("http://{addr}/")).await;
        browser
            .cdp
            .wait_for(
                "the Gemini session working, and no note for gemini",
                Duration::from_secs(10),
                &format!(
                    r#"(() => {{ const s = window.agentwatchDashboard && window.agentwatchDashboard.sessions.get("{ID}");
                       return !!s && s.activity === "working"
                         && !document.querySelector('#attention [data-source="gemini"]'); }})()"#
                ),
            )
            .await;
        // Gemini CLI shows a shell command's confirmation and runs the installed hook.
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&settings).unwrap()).unwrap();
        let command = doc["hooks"]["Notification"][0]["hooks"][0]["command"]
            .as_str()
            .unwrap()
            .to_owned();
        let out = tokio::task::spawn_blocking(move || {
            let words: Vec<&str> = command.split(' ').collect();
            run(
                &words[1..],
                &hooks_support::gemini_payload("0.26-Notification-ToolPermission-exec"),
            )
        })
        .await
        .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        browser
            .cdp
            .wait_for(
                "the Gemini session waiting with run_shell_command",
                Duration::from_secs(10),
                &format!(
                    r#"(() => {{ const s = window.agentwatchDashboard.sessions.get("{ID}");
                       return !!s && s.activity === "waiting" && s.currentTool === "run_shell_command"; }})()"#
                ),
            )
            .await;
    }
    // Without Chromium, `chromium_available` has said the page part did not run.

    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&settings).unwrap()).unwrap();
    doc["hooksConfig"]["enabled"] = false.into();
    std::fs::write(&settings, doc.to_string()).unwrap();
    let (_, _, body) = http_get(addr, "/attention", &[]).await;
    assert_eq!(gemini(&body)["permissionPrompts"], false, "{body}");
}
