//! The dashboard page tells the person when a session starts waiting, in headless Chromium
//! against the real dashboard binary (the monitor on an empty root, sessions injected with
//! `--inject` at chosen wait starts).
//!
//! Notifications are observed by wrapping `window.Notification` before the page's script
//! runs (`Page.addScriptToEvaluateOnNewDocument`): each one constructed is recorded in
//! `localStorage` (which survives reloads) and then shown for real (beeps likewise, by
//! wrapping `AudioContext`'s `createOscillator`); the permission is
//! granted with `Browser.grantPermissions`. The tab's visibility is emulated by the same
//! script (`document.visibilityState`/`hidden`, plus the `visibilitychange` event), kept
//! across reloads in `sessionStorage`.

use crate::common;
use crate::dashboard_support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::chromium::{Browser, chromium_available};
use dashboard_support::Dashboard;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

/// Runs before the page's own script on every document.
const HOOKS: &str = r#"(() => {
  const Real = window.Notification;
  if (typeof Real === "function") {
    window.__notes = [];
    class Recorded extends Real {
      constructor(title, options) {
        const log = JSON.parse(localStorage.getItem("test.notes") || "[]");
        log.push({ title, body: options && options.body, tag: options && options.tag });
        localStorage.setItem("test.notes", JSON.stringify(log));
        super(title, options);
        window.__notes.push(this);
      }
    }
    window.Notification = Recorded;
  }
  const RealAudio = window.AudioContext;
  if (typeof RealAudio === "function") {
    window.AudioContext = class extends RealAudio {
      createOscillator() {
        localStorage.setItem("test.beeps", String(Number(localStorage.getItem("test.beeps") || 0) + 1));
        return super.createOscillator();
      }
    };
  }
  let hidden = sessionStorage.getItem("test.hidden") === "1";
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => hidden ? "hidden" : "visible" });
  Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
  window.__setHidden = (h) => {
    hidden = h;
    sessionStorage.setItem("test.hidden", h ? "1" : "0");
    document.dispatchEvent(new Event("visibilitychange"));
  };
})();"#;

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

fn quiet_dashboard(name: &str, root: &std::path::Path, port: Option<u16>) -> Dashboard {
    let root = root.to_str().unwrap();
    let port = port.map(|p| p.to_string());
    let mut args = vec!["--claude", root, "--inject"];
    if let Some(port) = &port {
        args.extend(["--port", port.as_str()]); // the last --port wins
    }
    let mut dashboard = Dashboard::start(name, &args);
    if let Some(port) = port {
        dashboard.port = port.parse().unwrap();
    }
    dashboard
}

/// Chromium with the hooks installed and the notification permission granted for `port`.
async fn browser_for(port: u16) -> Browser {
    let mut browser = Browser::start(&["--window-size=1200,900"]).await;
    let page = browser.cdp.session.take();
    browser
        .cdp
        .call(
            "Browser.grantPermissions",
            json!({ "permissions": ["notifications"], "origin": format!("http://127.0.0.1:{port}") }),
        )
        .await;
    browser.cdp.session = page;
    browser.cdp.call("Page.enable", json!({})).await;
    browser
        .cdp
        .call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": HOOKS }),
        )
        .await;
    browser
}

/// Loads the page and waits until it is connected and shows session `id`.
async fn load(browser: &mut Browser, port: u16, id: &str) {
    browser.navigate(&format!("http://127.0.0.1:{port}/")).await;
    shows(browser, id).await;
}

async fn shows(browser: &mut Browser, id: &str) {
    browser
        .cdp
        .wait_for(
            &format!("the page connected, showing {id}"),
            WAIT,
            &format!(
                "(() => {{ const c = document.getElementById('conn-status'); \
                   return !!c && c.dataset.state === 'connected' \
                     && !!document.querySelector('[data-session-id=\"{id}\"]'); }})()"
            ),
        )
        .await;
}

/// The notifications recorded so far, across reloads.
async fn notes(browser: &mut Browser) -> Vec<Value> {
    let v = browser
        .cdp
        .eval("JSON.parse(localStorage.getItem('test.notes') || '[]')")
        .await;
    v.as_array().cloned().unwrap_or_default()
}

async fn wait_notes(browser: &mut Browser, n: usize) -> Vec<Value> {
    browser
        .cdp
        .wait_for(
            &format!("{n} notification(s)"),
            WAIT,
            &format!("JSON.parse(localStorage.getItem('test.notes') || '[]').length >= {n}"),
        )
        .await;
    notes(browser).await
}

/// (document.title, the favicon's waiting count, the favicon's SVG).
async fn title_and_icon(browser: &mut Browser) -> (String, String, String) {
    let v = browser
        .cdp
        .eval(
            "(() => { const l = document.querySelector('link[rel=icon]'); \
               return [document.title, l.dataset.waiting || '', \
                       decodeURIComponent(l.href.replace(/^data:image\\/svg\\+xml,/, ''))]; })()",
        )
        .await;
    let s = |i: usize| v[i].as_str().unwrap_or_default().to_string();
    (s(0), s(1), s(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_in_a_background_tab_notifies_once_across_reload_and_reconnect() {
    if !chromium_available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let root_path = root.path().to_path_buf();
    let mut dashboard =
        tokio::task::spawn_blocking(move || quiet_dashboard("notify-page", &root_path, None))
            .await
            .unwrap();
    let port = dashboard.port;
    dashboard.inject("id=n0&slug=n0-working");
    let mut browser = browser_for(port).await;
    load(&mut browser, port, "n0").await;

    // Switched on from the page (the permission is granted already: no prompt).
    browser
        .cdp
        .eval("document.getElementById('notify-toggle').click()")
        .await;
    browser
        .cdp
        .wait_for(
            "notifications switched on",
            WAIT,
            "document.getElementById('notify-toggle').getAttribute('aria-pressed') === 'true'",
        )
        .await;
    let (title, waiting, icon) = title_and_icon(&mut browser).await;
    assert!(!title.starts_with('('), "nothing waits yet: {title}");
    assert_eq!(waiting, "0");
    assert!(!icon.contains("<text"), "{icon}");

    // The tab goes to the background; a session asks for a permission.
    browser.cdp.eval("window.__setHidden(true)").await;
    let t1 = now_ms();
    dashboard.inject(&format!(
        "id=n1&slug=n1-migrate&dir=/w/api&branch=main&activity=waiting&tool=Bash&at_ms={t1}"
    ));
    let shown = wait_notes(&mut browser, 1).await;
    assert_eq!(
        shown[0],
        json!({ "title": "n1-migrate (claude) wants to run Bash",
                "body": "claude · api · main: wants to run Bash", "tag": "agentwatch:n1" })
    );
    browser
        .cdp
        .wait_for(
            "the title to count the wait",
            WAIT,
            "document.title.startsWith('(1 waiting)')",
        )
        .await;
    let (_, waiting, icon) = title_and_icon(&mut browser).await;
    assert_eq!(waiting, "1");
    assert!(icon.contains(">1</text>"), "{icon}");

    // A wait that began 13 minutes before the page opened: counted, timed from its start,
    // never notified (a page opened now fires no burst for old waits).
    let old = now_ms() - (13 * 60 + 5) * 1000;
    dashboard.inject(&format!(
        "id=n4&slug=n4-old&activity=waiting&messages=3&at_ms={old}"
    ));
    let since = browser
        .cdp
        .wait_for(
            "n4's wait timer",
            WAIT,
            "(() => { const c = document.querySelector('[data-session-id=\"n4\"] .since'); \
               return c && c.textContent.startsWith('waiting for you') ? c.textContent : null; })()",
        )
        .await;
    assert!(
        since.as_str().unwrap().starts_with("waiting for you · 13m"),
        "{since}"
    );

    // A reload: the same wait (n1) comes again in the snapshot, within the clock grace of
    // the new page. No second notification: the next one is the next new wait's.
    browser.cdp.eval("window.__old = true").await;
    browser.cdp.call("Page.reload", json!({})).await;
    browser
        .cdp
        .wait_for(
            "the reloaded document",
            WAIT,
            "!window.__old && document.readyState === 'complete'",
        )
        .await;
    shows(&mut browser, "n1").await;
    let since = browser
        .cdp
        .eval("document.querySelector('[data-session-id=\"n4\"] .since').textContent")
        .await;
    assert!(
        since.as_str().unwrap().starts_with("waiting for you · 13m"),
        "after a reload the timer still counts from lastActivityAt: {since}"
    );
    assert_eq!(
        browser
            .cdp
            .eval("document.getElementById('notify-toggle').getAttribute('aria-pressed')")
            .await,
        "true",
        "the switch persists"
    );
    dashboard.inject(&format!(
        "id=n2&slug=n2-done&activity=waiting&at_ms={}",
        now_ms()
    ));
    let shown = wait_notes(&mut browser, 2).await;
    assert_eq!(shown[1]["title"], "n2-done (claude) finished its turn");
    assert_eq!(shown.len(), 2, "{shown:?}");

    // A reconnect: the server restarts on the same port (a fresh store: the page gets a
    // snapshot), and the same waits are published again. Still nothing until a new wait.
    let root_path = root.path().to_path_buf();
    dashboard = tokio::task::spawn_blocking(move || {
        dashboard.kill();
        drop(dashboard);
        quiet_dashboard("notify-page-2", &root_path, Some(port))
    })
    .await
    .unwrap();
    dashboard.inject(&format!(
        "id=n1&slug=n1-migrate&dir=/w/api&branch=main&activity=waiting&tool=Bash&at_ms={t1}"
    ));
    // The new server's snapshot has no n0: once it is gone, the page has reconnected.
    browser
        .cdp
        .wait_for(
            "the page to reconnect to the new server",
            WAIT,
            "document.getElementById('conn-status').dataset.state === 'connected' \
             && !!document.querySelector('[data-session-id]') \
             && !document.querySelector('[data-session-id=\"n0\"]')",
        )
        .await;
    shows(&mut browser, "n1").await;
    let t3 = now_ms();
    dashboard.inject(&format!(
        "id=n3&slug=n3-ask&activity=waiting&messages=0&at_ms={t3}"
    ));
    let shown = wait_notes(&mut browser, 3).await;
    assert_eq!(shown[2]["title"], "n3-ask (claude) waiting for input");
    assert_eq!(shown.len(), 3, "{shown:?}");
    // A new wait of a known session (n1 worked, then waits again) is a new notification,
    // with the same tag: it replaces the older one.
    dashboard.inject("id=n1&slug=n1-migrate&dir=/w/api&branch=main");
    dashboard.inject(&format!(
        "id=n1&slug=n1-migrate&dir=/w/api&branch=main&activity=waiting&at_ms={}",
        now_ms()
    ));
    let shown = wait_notes(&mut browser, 4).await;
    assert_eq!(shown[3]["tag"], "agentwatch:n1");
    assert_eq!(shown[3]["title"], "n1-migrate (claude) finished its turn");

    // Clicking a notification brings the page forward at that session's card.
    browser
        .cdp
        .eval("window.__notes[window.__notes.length - 1].dispatchEvent(new Event('click'))")
        .await;
    browser
        .cdp
        .wait_for(
            "n1's card highlighted and focused",
            WAIT,
            "(() => { const c = document.querySelector('[data-session-id=\"n1\"]'); \
               return c && c.classList.contains('flash') && document.activeElement === c; })()",
        )
        .await;

    // The title and the favicon follow the count down to none.
    browser
        .cdp
        .wait_for(
            "the title to count 2 waits (n1, n3)",
            WAIT,
            "document.title.startsWith('(2 waiting)')",
        )
        .await;
    for id in ["n1", "n3"] {
        dashboard.inject(&format!("id={id}"));
    }
    browser
        .cdp
        .wait_for(
            "no wait in the title",
            WAIT,
            "!document.title.startsWith('(')",
        )
        .await;
    let (_, waiting, icon) = title_and_icon(&mut browser).await;
    assert_eq!(waiting, "0");
    assert!(!icon.contains("<text"), "{icon}");
    assert_eq!(notes(&mut browser).await.len(), 4);
    let errors = browser.cdp.page_errors();
    assert!(errors.is_empty(), "page errors: {errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_waits_after_switching_on_are_announced_and_the_sound_is_optional() {
    if !chromium_available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let root_path = root.path().to_path_buf();
    let dashboard =
        tokio::task::spawn_blocking(move || quiet_dashboard("notify-switch", &root_path, None))
            .await
            .unwrap();
    let port = dashboard.port;
    dashboard.inject("id=s0");
    let mut browser = browser_for(port).await;
    load(&mut browser, port, "s0").await;
    let off = browser
        .cdp
        .eval(
            "[document.getElementById('notify-toggle').getAttribute('aria-pressed'), \
              document.getElementById('notify-toggle').textContent, \
              document.getElementById('f-sound').checked]",
        )
        .await;
    assert_eq!(
        off,
        json!(["false", "notify me", false]),
        "both off by default"
    );

    // Hidden, everything off: a wait begins, nothing is announced.
    browser.cdp.eval("window.__setHidden(true)").await;
    let s1 = now_ms();
    dashboard.inject(&format!("id=s1&activity=waiting&at_ms={s1}"));
    shows(&mut browser, "s1").await;
    browser
        .cdp
        .wait_for(
            "the title to count s1",
            WAIT,
            "document.title.startsWith('(1 waiting)')",
        )
        .await;

    // Switched on now: s1 began before, so it stays quiet; the next wait is announced.
    browser
        .cdp
        .eval("document.getElementById('notify-toggle').click()")
        .await;
    browser
        .cdp
        .wait_for(
            "notifications switched on",
            WAIT,
            "document.getElementById('notify-toggle').getAttribute('aria-pressed') === 'true'",
        )
        .await;
    // s1's wait published again (a delta repeating it): still quiet.
    dashboard.inject(&format!("id=s1&activity=waiting&at_ms={s1}"));
    dashboard.inject(&format!(
        "id=s2&slug=s2&activity=waiting&at_ms={}",
        now_ms()
    ));
    let shown = wait_notes(&mut browser, 1).await;
    assert_eq!(shown[0]["tag"], "agentwatch:s2", "{shown:?}");
    assert_eq!(
        browser.cdp.eval("localStorage.getItem('test.beeps')").await,
        Value::Null,
        "no beep while the sound is off"
    );

    // The sound switched on: the next wait beeps once (and notifies).
    browser
        .cdp
        .eval("document.getElementById('f-sound').click()")
        .await;
    dashboard.inject(&format!(
        "id=s3&slug=s3&activity=waiting&at_ms={}",
        now_ms()
    ));
    let shown = wait_notes(&mut browser, 2).await;
    assert_eq!(shown[1]["tag"], "agentwatch:s3", "{shown:?}");
    assert_eq!(
        browser.cdp.eval("localStorage.getItem('test.beeps')").await,
        "1"
    );
    assert_eq!(
        browser
            .cdp
            .eval("localStorage.getItem('agentwatch.sound')")
            .await,
        "on",
        "the sound choice persists"
    );
    // A wait that ends before it settles (a reply's text line read before its tool call's
    // line) announces nothing; the next lasting wait is the next notification.
    dashboard.inject(&format!(
        "id=flicker&slug=flicker&activity=waiting&at_ms={}",
        now_ms()
    ));
    dashboard.inject("id=flicker&slug=flicker&activity=working&tool=Bash");
    dashboard.inject(&format!(
        "id=s4&slug=s4&activity=waiting&at_ms={}",
        now_ms()
    ));
    let shown = wait_notes(&mut browser, 3).await;
    assert_eq!(shown[2]["tag"], "agentwatch:s4", "{shown:?}");
    assert_eq!(shown.len(), 3, "{shown:?}");

    let errors = browser.cdp.page_errors();
    assert!(errors.is_empty(), "page errors: {errors:?}");
}
