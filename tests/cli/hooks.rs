//! The `agentwatch-ws` binary, run as Claude Code runs it: `hook` with each event's input on
//! stdin, every kind of bad input, and `hooks install|uninstall|status` on temp settings
//! files.

use crate::hooks_support;

use std::fs;
use std::path::Path;

use agentwatch_ws::markers::{HookEvent, HookMarker, INSTALLED_EVENTS};
use agentwatch_ws::wire::Timestamp;
use hooks_support::{
    SAMPLE_SESSION, assert_one_hook_of_ours, files, hook, hooks, json, payload, run,
};

#[test]
fn each_hook_event_writes_one_marker_and_prints_nothing() {
    let cases: &[(&str, HookEvent, Option<&str>, Option<&str>)] = &[
        (
            "PermissionRequest",
            HookEvent::PermissionRequest,
            Some("Bash"),
            None,
        ),
        (
            "Notification-permission_prompt",
            HookEvent::Notification,
            None,
            Some("permission_prompt"),
        ),
        (
            "Notification-idle_prompt",
            HookEvent::Notification,
            None,
            Some("idle_prompt"),
        ),
        ("PostToolUse", HookEvent::PostToolUse, Some("Bash"), None),
        (
            "PreToolUse",
            HookEvent::PreToolUse,
            Some("mcp__github__create_issue"),
            None,
        ),
        ("UserPromptSubmit", HookEvent::UserPromptSubmit, None, None),
        ("Stop", HookEvent::Stop, None, None),
        ("SubagentStop", HookEvent::SubagentStop, None, None),
        ("SessionStart", HookEvent::SessionStart, None, None),
        ("SessionEnd", HookEvent::SessionEnd, None, None),
    ];
    for (name, event, tool, notification) in cases {
        let dir = tempfile::tempdir().unwrap();
        let markers = dir.path().join("markers");
        let before = Timestamp::now();
        let out = hook(&markers, &payload(name));
        assert_eq!(out.status.code(), Some(0), "{name}: {out:?}");
        assert!(out.stdout.is_empty(), "{name}: printed to stdout");
        assert!(out.stderr.is_empty(), "{name}: printed to stderr");
        let names = files(&markers);
        assert_eq!(names.len(), 1, "{name}: {names:?}");
        assert!(
            names[0].starts_with("hook-") && names[0].ends_with(".json"),
            "{name}: {names:?}"
        );
        let bytes = fs::read(markers.join(&names[0])).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for leak in ["SECRET", "/home/dev", "transcript", "cwd"] {
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
            (SAMPLE_SESSION, *event, *tool, *notification),
            "{name}"
        );
        assert!(m.at().unix_millis() >= before.unix_millis());
        if *event == HookEvent::SessionEnd {
            assert_eq!(m.reason(), Some("prompt_input_exit"));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&markers).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{name}: marker directory mode");
        }
    }
}

#[test]
fn an_event_without_meaning_exits_0_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = hook(
        dir.path(),
        br#"{"session_id":"abc","hook_event_name":"PreCompact","trigger":"auto"}"#,
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(files(dir.path()).is_empty());
}

#[test]
fn bad_input_exits_1_with_one_line_and_writes_nothing() {
    let huge = {
        let mut v = br#"{"session_id":"abc","hook_event_name":"PostToolUse","tool_name":"Bash","tool_response":""#.to_vec();
        v.extend(std::iter::repeat_n(b'x', 64 << 20));
        v.extend(br#""}"#);
        v
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty stdin", Vec::new()),
        ("not JSON", b"PermissionRequest Bash".to_vec()),
        (
            "truncated JSON",
            br#"{"session_id":"abc","hook_event_name":"Stop""#.to_vec(),
        ),
        (
            "an array",
            br#"[{"session_id":"abc","hook_event_name":"Stop"}]"#.to_vec(),
        ),
        ("oversize", huge),
        ("no session id", br#"{"hook_event_name":"Stop"}"#.to_vec()),
        ("no event", br#"{"session_id":"abc"}"#.to_vec()),
        (
            "path traversal in the id",
            br#"{"session_id":"../../../etc/cron.d/x","hook_event_name":"Stop"}"#.to_vec(),
        ),
        (
            "a slash in the id",
            br#"{"session_id":"a/b","hook_event_name":"Stop"}"#.to_vec(),
        ),
        (
            "a 129-byte id",
            format!(
                r#"{{"session_id":"{}","hook_event_name":"Stop"}}"#,
                "a".repeat(129)
            )
            .into_bytes(),
        ),
        (
            "a huge number as the id",
            br#"{"session_id":1e400,"hook_event_name":"Stop"}"#.to_vec(),
        ),
        (
            "a number as the id",
            br#"{"session_id":18446744073709551616,"hook_event_name":"Stop"}"#.to_vec(),
        ),
        (
            "an object as the event",
            br#"{"session_id":"abc","hook_event_name":{"x":1}}"#.to_vec(),
        ),
        (
            "an array as the tool",
            br#"{"session_id":"abc","hook_event_name":"PermissionRequest","tool_name":["Bash"]}"#
                .to_vec(),
        ),
        (
            "a tool name with a path",
            br#"{"session_id":"abc","hook_event_name":"PermissionRequest","tool_name":"../x"}"#
                .to_vec(),
        ),
        (
            "a newline in the tool name",
            br#"{"session_id":"abc","hook_event_name":"PermissionRequest","tool_name":"Bash\nrm"}"#
                .to_vec(),
        ),
        (
            "not UTF-8",
            b"{\"session_id\":\"ab\xff\xfe\",\"hook_event_name\":\"Stop\"}".to_vec(),
        ),
        (
            "a NUL in the id",
            br#"{"session_id":"ab\u0000c","hook_event_name":"Stop"}"#.to_vec(),
        ),
    ];
    for (what, input) in cases {
        let dir = tempfile::tempdir().unwrap();
        let markers = dir.path().join("markers");
        let out = hook(&markers, &input);
        assert_eq!(out.status.code(), Some(1), "{what}: {out:?}");
        assert!(out.stdout.is_empty(), "{what}: printed to stdout");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{what}: stderr {err:?}");
        assert!(err.starts_with("agentwatch-ws: "), "{what}: {err:?}");
        assert!(
            !err.contains("etc/cron"),
            "{what}: echoes its input: {err:?}"
        );
        assert!(
            files(&markers).is_empty(),
            "{what}: wrote {:?}",
            files(&markers)
        );
    }
}

#[test]
fn a_usage_error_never_exits_2() {
    // Exit code 2 from a hook blocks Claude Code's event (a denied permission).
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &["hook", "--no-such-flag", dir.path().to_str().unwrap()],
        &payload("Stop"),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty());
}

fn install(settings: &Path, markers: &Path, extra: &[&str]) -> std::process::Output {
    hooks("install", None, settings, Some(markers), extra)
}

fn uninstall(settings: &Path, extra: &[&str]) -> std::process::Output {
    hooks("uninstall", None, settings, None, extra)
}

fn status(settings: &Path) -> std::process::Output {
    hooks("status", None, settings, None, &[])
}

/// Every event we install has exactly one group running our hook command into `markers`.
fn assert_installed(settings: &Path, markers: &Path) {
    let doc = json(settings);
    for (event, _) in INSTALLED_EVENTS {
        assert_one_hook_of_ours(&doc, event.name(), markers, 5);
    }
}

#[test]
fn install_into_an_absent_file_then_status_then_uninstall() {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("claude/settings.json");
    let markers = dir.path().join("markers");
    assert_eq!(status(&settings).status.code(), Some(1), "not installed");
    let out = install(&settings, &markers, &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_installed(&settings, &markers);
    assert!(
        !hooks_bak(&settings).exists(),
        "nothing to back up from an absent file"
    );
    let out = status(&settings);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("installed"));
    // The hook command written into the settings runs and writes where it says.
    let doc = json(&settings);
    let command = doc["hooks"]["PermissionRequest"][0]["hooks"][0]["command"]
        .as_str()
        .unwrap()
        .to_owned();
    let words: Vec<&str> = command.split(' ').collect();
    let out = run(&words[1..], &payload("PermissionRequest"));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(files(&markers).len(), 1);
    let out = uninstall(&settings, &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(json(&settings), serde_json::json!({}));
    assert_eq!(status(&settings).status.code(), Some(1));
}

fn hooks_bak(settings: &Path) -> std::path::PathBuf {
    agentwatch_ws::hooks::backup_path(settings)
}

#[test]
fn install_into_an_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("settings.json");
    fs::write(&settings, "").unwrap();
    let markers = dir.path().join("markers");
    let out = install(&settings, &markers, &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_installed(&settings, &markers);
    assert_eq!(fs::read(hooks_bak(&settings)).unwrap(), b"");
}

const OTHERS: &str = r#"{
  "model": "opus",
  "permissions": {
    "allow": [
      "Bash(npm test)"
    ]
  },
  "hooks": {
    "Stop": [
      {
        "hooks": [
          {
            "type": "command",
            "command": "notify-send done"
          }
        ]
      }
    ],
    "PreToolUse": [
      {
        "matcher": "Bash",
        "hooks": [
          {
            "type": "command",
            "command": "~/bin/guard.sh"
          }
        ]
      }
    ]
  },
  "env": {
    "A": "1"
  }
}
"#;

#[test]
fn install_keeps_other_hooks_keys_and_order_and_uninstall_restores() {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("settings.json");
    fs::write(&settings, OTHERS).unwrap();
    let markers = dir.path().join("markers");
    let out = install(&settings, &markers, &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_installed(&settings, &markers);
    let doc = json(&settings);
    let keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["model", "permissions", "hooks", "env"],
        "key order kept"
    );
    assert_eq!(
        doc["hooks"]["Stop"][0]["hooks"][0]["command"],
        "notify-send done"
    );
    assert_eq!(doc["hooks"]["Stop"].as_array().unwrap().len(), 2);
    assert_eq!(doc["hooks"]["PreToolUse"][0]["matcher"], "Bash");
    assert_eq!(doc["permissions"]["allow"][0], "Bash(npm test)");
    // The backup is the file as it was.
    assert_eq!(fs::read_to_string(hooks_bak(&settings)).unwrap(), OTHERS);

    // Installing again changes nothing: not even the bytes.
    let before = fs::read(&settings).unwrap();
    let out = install(&settings, &markers, &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to change"));
    assert_eq!(fs::read(&settings).unwrap(), before);

    // Another marker directory replaces our entries, never duplicates them.
    let elsewhere = dir.path().join("elsewhere");
    let out = install(&settings, &elsewhere, &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_installed(&settings, &elsewhere);
    assert_eq!(
        fs::read_to_string(hooks_bak(&settings)).unwrap(),
        OTHERS,
        "the first backup is kept"
    );

    let out = uninstall(&settings, &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        fs::read_to_string(&settings).unwrap(),
        OTHERS,
        "restored byte for byte"
    );
}

#[test]
fn dry_runs_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("settings.json");
    fs::write(&settings, OTHERS).unwrap();
    let markers = dir.path().join("markers");
    let out = install(&settings, &markers, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("+ add hook PermissionRequest"), "{stdout}");
    assert!(stdout.contains("not changed"), "{stdout}");
    assert_eq!(fs::read_to_string(&settings).unwrap(), OTHERS);
    assert!(!hooks_bak(&settings).exists());

    assert_eq!(install(&settings, &markers, &[]).status.code(), Some(0));
    let installed = fs::read(&settings).unwrap();
    let out = uninstall(&settings, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("- remove hook Stop"));
    assert_eq!(fs::read(&settings).unwrap(), installed);
}

#[test]
fn invalid_settings_are_never_overwritten() {
    for bad in [
        "{\"model\": \"opus\",",
        "[1, 2]",
        "{\"hooks\": []}",
        "{\"hooks\": {\"Stop\": {}}}",
        "\u{feff}{}x",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let settings = dir.path().join("settings.json");
        fs::write(&settings, bad).unwrap();
        let markers = dir.path().join("markers");
        for out in [install(&settings, &markers, &[]), uninstall(&settings, &[])] {
            let err = String::from_utf8_lossy(&out.stderr);
            if bad.starts_with("{\"hooks\"") && out.status.code() == Some(0) {
                // Uninstall finds none of ours in a `hooks` it cannot use: nothing to change.
                assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to change"));
                continue;
            }
            assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
            assert_eq!(err.lines().count(), 1, "{bad:?}: {err}");
            assert!(
                err.contains("not changed") || err.contains("not valid JSON"),
                "{err}"
            );
        }
        assert_eq!(
            fs::read_to_string(&settings).unwrap(),
            bad,
            "{bad:?} untouched"
        );
        assert!(!hooks_bak(&settings).exists());
        let unreadable = !bad.starts_with("{\"hooks\"");
        let expected = if unreadable { 2 } else { 1 };
        assert_eq!(status(&settings).status.code(), Some(expected), "{bad:?}");
    }
}

/// A person who made the settings file read-only, or whose dotfiles link points at a file not
/// there yet, gets a refusal: the installer writes through a rename, which would replace the
/// read-only file or the link.
#[cfg(unix)]
#[test]
fn a_read_only_file_or_a_dangling_link_is_never_written() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let markers = dir.path().join("markers");

    let read_only = dir.path().join("settings.json");
    fs::write(&read_only, "{\"model\": \"opus\"}\n").unwrap();
    fs::set_permissions(&read_only, fs::Permissions::from_mode(0o444)).unwrap();
    let out = install(&read_only, &markers, &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("read-only; not changed"), "{err}");
    assert_eq!(
        fs::read_to_string(&read_only).unwrap(),
        "{\"model\": \"opus\"}\n"
    );
    assert!(!hooks_bak(&read_only).exists());
    // Made writable again, it installs.
    fs::set_permissions(&read_only, fs::Permissions::from_mode(0o644)).unwrap();
    let out = install(&read_only, &markers, &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_installed(&read_only, &markers);

    let link = dir.path().join("linked.json");
    std::os::unix::fs::symlink("dotfiles/claude/settings.json", &link).unwrap();
    let out = install(&link, &markers, &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("symbolic link to a missing file"), "{err}");
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link stays a link"
    );
    assert!(!dir.path().join("dotfiles").exists());
}

/// `agentwatch-ws hooks install | head -1`: the reader goes away; the command neither panics
/// nor fails (the settings file is written before the report).
#[test]
fn a_closed_stdout_does_not_make_the_installer_panic() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("settings.json");
    let markers = dir.path().join("markers");
    for args in [
        vec!["hooks", "install", "--dry-run"],
        vec!["hooks", "install"],
        vec!["hooks", "status"],
    ] {
        let mut child = Command::new(hooks_support::binary())
            .args(&args)
            .args(["--settings", settings.to_str().unwrap()])
            .args(if args[1] == "install" {
                vec!["--marker-dir", markers.to_str().unwrap()]
            } else {
                vec![]
            })
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The read end closes before the command has written anything.
        drop(child.stdout.take());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "{args:?} did not exit within 10 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
    assert_installed(&settings, &markers);
}

/// The binary the hooks name was moved or removed (installed from a build directory since
/// cleaned, say): every hook run fails with "not found", so `hooks status` must not say
/// installed, and installing again repairs the entries.
#[test]
fn status_does_not_count_hooks_whose_program_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("settings.json");
    let markers = dir.path().join("markers");
    let out = install(&settings, &markers, &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(status(&settings).status.code(), Some(0));
    let program = hooks_support::binary();
    let gone = dir.path().join("removed/bin/agentwatch-ws");
    let text = fs::read_to_string(&settings)
        .unwrap()
        .replace(program.to_str().unwrap(), gone.to_str().unwrap());
    fs::write(&settings, text).unwrap();
    assert!(
        fs::read_to_string(&settings)
            .unwrap()
            .contains("removed/bin")
    );
    let out = status(&settings);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("not installed"),
        "{out:?}"
    );
    let out = install(&settings, &markers, &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("update hook Stop"));
    assert_eq!(status(&settings).status.code(), Some(0));
}

#[test]
fn a_post_tool_use_carrying_a_large_file_writes_its_marker() {
    // A `Write` of a 3 MiB file: its content is in `tool_input` and again in `tool_response`.
    let content = "y".repeat(3 << 20);
    let input = serde_json::json!({
        "session_id": "abc",
        "transcript_path": "/home/u/.claude/projects/-w/abc.jsonl",
        "cwd": "/w",
        "hook_event_name": "PostToolUse",
        "tool_name": "Write",
        "tool_input": {"file_path": "/w/big.txt", "content": content},
        "tool_response": {"filePath": "/w/big.txt", "content": content, "type": "create"},
    });
    let dir = tempfile::tempdir().unwrap();
    let out = hook(dir.path(), serde_json::to_vec(&input).unwrap().as_slice());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let written = files(dir.path());
    assert_eq!(written.len(), 1, "{written:?}");
    let marker = std::fs::read_to_string(dir.path().join(&written[0])).unwrap();
    assert!(
        marker.contains("PostToolUse") && !marker.contains("yyyy"),
        "{marker}"
    );
}
