//! The `agentwatch-ws` binary run as Gemini CLI runs a command hook (each event's input on
//! stdin, from `tests/data/hooks/gemini-cli-*.json`), and `hooks install|uninstall|status
//! --agent gemini` on temp Gemini CLI settings files.

use crate::hooks_support;

use std::fs;
use std::path::Path;

use agentwatch_ws::markers::{GEMINI_INSTALLED_EVENTS, HookEvent, HookMarker};
use agentwatch_ws::wire::Timestamp;
use hooks_support::{
    SAMPLE_SESSION, assert_one_hook_of_ours, files, gemini_payload, hook, hooks, json, run,
};

#[test]
fn each_gemini_event_writes_its_marker_and_nothing_private() {
    /// A sample's name, and the marker's event and tool (`None`: no marker).
    type Case<'a> = (&'a str, Option<(HookEvent, Option<&'a str>)>);
    let cases: &[Case] = &[
        (
            "0.26-Notification-ToolPermission-exec",
            Some((HookEvent::PermissionRequest, Some("run_shell_command"))),
        ),
        (
            "0.56-Notification-ToolPermission-mcp",
            Some((HookEvent::PermissionRequest, Some("create_issue"))),
        ),
        (
            "0.56-Notification-ToolPermission-edit",
            Some((HookEvent::PermissionRequest, None)),
        ),
        (
            "0.26-AfterTool",
            Some((HookEvent::PostToolUse, Some("run_shell_command"))),
        ),
        (
            "0.26-BeforeAgent",
            Some((HookEvent::UserPromptSubmit, None)),
        ),
        ("0.26-AfterAgent", Some((HookEvent::Stop, None))),
        ("0.26-SessionEnd", Some((HookEvent::SessionEnd, None))),
        ("0.26-BeforeTool", None),
    ];
    for (name, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let markers = dir.path().join("markers");
        let out = hook(&markers, &gemini_payload(name));
        assert_eq!(out.status.code(), Some(0), "{name}: {out:?}");
        assert!(out.stdout.is_empty(), "{name}: printed to stdout");
        assert!(out.stderr.is_empty(), "{name}: printed to stderr");
        let names = files(&markers);
        let Some((event, tool)) = expected else {
            assert!(names.is_empty(), "{name}: wrote {names:?}");
            continue;
        };
        assert_eq!(names.len(), 1, "{name}: {names:?}");
        let bytes = fs::read(markers.join(&names[0])).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for leak in ["SECRET", "/home/dev", "transcript", "cwd", "github", "exit"] {
            assert!(
                !text.contains(leak),
                "{name}: marker holds {leak:?}: {text}"
            );
        }
        let m = HookMarker::from_json(&bytes, Timestamp::now()).unwrap();
        assert_eq!(
            (
                m.session_id(),
                m.event(),
                m.tool_name(),
                m.notification_type()
            ),
            (SAMPLE_SESSION, *event, *tool, None),
            "{name}"
        );
    }
}

#[test]
fn a_gemini_notification_of_another_type_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = hook(
        dir.path(),
        br#"{"session_id":"abc","hook_event_name":"Notification","timestamp":"2026-05-01T10:00:00Z","notification_type":"Other","message":"m","details":{}}"#,
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(files(dir.path()).is_empty());
}

#[test]
fn an_mcp_tool_name_outside_the_charset_is_dropped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let out = hook(
        dir.path(),
        br#"{"session_id":"abc","hook_event_name":"Notification","timestamp":"2026-05-01T10:00:00Z","notification_type":"ToolPermission","message":"m","details":{"type":"mcp","toolName":"a b/../c"}}"#,
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let names = files(dir.path());
    assert_eq!(names.len(), 1);
    let m = HookMarker::from_json(
        &fs::read(dir.path().join(&names[0])).unwrap(),
        Timestamp::now(),
    )
    .unwrap();
    assert_eq!(
        (m.event(), m.tool_name()),
        (HookEvent::PermissionRequest, None)
    );
}

fn gemini(
    action: &str,
    settings: &Path,
    markers: Option<&Path>,
    extra: &[&str],
) -> std::process::Output {
    hooks(action, Some("gemini"), settings, markers, extra)
}

/// Every Gemini event we install has exactly one group with our command (timeout in ms),
/// and hooks are switched on.
fn assert_installed(settings: &Path, markers: &Path) {
    let doc = json(settings);
    assert_eq!(doc["hooksConfig"]["enabled"], true, "{doc}");
    for (event, _) in GEMINI_INSTALLED_EVENTS {
        // Gemini CLI counts milliseconds.
        assert_one_hook_of_ours(&doc, event, markers, 5000);
    }
}

#[test]
fn gemini_install_keeps_other_settings_is_idempotent_and_uninstall_removes_only_ours() {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join(".gemini/settings.json");
    let markers = dir.path().join("markers");
    fs::create_dir_all(settings.parent().unwrap()).unwrap();
    let original = r#"{
  "general": {"vimMode": true},
  "hooksConfig": {"enabled": false, "notifications": true},
  "hooks": {
    "BeforeTool": [{"matcher": "write_file", "hooks": [{"type": "command", "command": "./guard.sh", "name": "guard"}]}],
    "AfterAgent": [{"hooks": [{"type": "command", "command": "notify-send done"}]}]
  }
}
"#;
    fs::write(&settings, original).unwrap();
    assert_eq!(
        gemini("status", &settings, None, &[]).status.code(),
        Some(1)
    );

    let dry = gemini("install", &settings, Some(&markers), &["--dry-run"]);
    assert_eq!(dry.status.code(), Some(0), "{dry:?}");
    assert_eq!(
        fs::read_to_string(&settings).unwrap(),
        original,
        "a dry run writes nothing"
    );
    assert!(String::from_utf8_lossy(&dry.stdout).contains("set hooksConfig.enabled to true"));

    let out = gemini("install", &settings, Some(&markers), &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_installed(&settings, &markers);
    let doc = json(&settings);
    assert_eq!(doc["general"]["vimMode"], true);
    assert_eq!(doc["hooksConfig"]["notifications"], true);
    assert_eq!(
        doc["hooks"]["BeforeTool"][0]["hooks"][0]["command"],
        "./guard.sh"
    );
    assert_eq!(
        doc["hooks"]["AfterAgent"][0]["hooks"][0]["command"],
        "notify-send done"
    );
    let bak = agentwatch_ws::hooks::backup_path(&settings);
    assert_eq!(fs::read_to_string(&bak).unwrap(), original);
    let status = gemini("status", &settings, None, &[]);
    assert_eq!(status.status.code(), Some(0), "{status:?}");

    let again = gemini("install", &settings, Some(&markers), &[]);
    assert_eq!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to change"));

    // The command written runs, and the Gemini input it gets makes a marker.
    let command = doc["hooks"]["Notification"][0]["hooks"][0]["command"]
        .as_str()
        .unwrap()
        .to_owned();
    let words: Vec<&str> = command.split(' ').collect();
    let out = run(
        &words[1..],
        &gemini_payload("0.26-Notification-ToolPermission-exec"),
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(files(&markers).len(), 1);

    // Hooks switched off by hand: status says what is missing.
    let mut off = json(&settings);
    off["hooksConfig"]["enabled"] = false.into();
    fs::write(&settings, serde_json::to_string(&off).unwrap()).unwrap();
    let status = gemini("status", &settings, None, &[]);
    assert_eq!(status.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&status.stdout).contains("hooksConfig.enabled"));

    let out = gemini("uninstall", &settings, None, &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let doc = json(&settings);
    assert_eq!(
        doc["hooks"]["BeforeTool"][0]["hooks"][0]["command"],
        "./guard.sh"
    );
    assert_eq!(doc["hooks"]["AfterAgent"].as_array().unwrap().len(), 1);
    assert!(doc["hooks"].get("Notification").is_none(), "{doc}");
    assert_eq!(
        gemini("status", &settings, None, &[]).status.code(),
        Some(1)
    );
}

#[test]
fn gemini_settings_that_are_not_an_object_are_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let markers = dir.path().join("markers");
    for (i, bad) in ["{\"hooks\": [", "[1]", "{\"hooksConfig\": 3}"]
        .iter()
        .enumerate()
    {
        let settings = dir.path().join(format!("s{i}.json"));
        fs::write(&settings, bad).unwrap();
        let out = gemini("install", &settings, Some(&markers), &[]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {out:?}");
        assert_eq!(fs::read_to_string(&settings).unwrap(), *bad);
        assert!(!agentwatch_ws::hooks::backup_path(&settings).exists());
    }
}
