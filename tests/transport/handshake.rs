//! The opening handshake over raw sockets, header by header: every answer RFC 6455
//! §4.2.1–4.2.2 and RFC 9110's field-list rules call for. Requests are
//! written byte for byte, so repeated headers, odd cases and lists are exactly as sent.

use crate::common;

use agentwatch_ws::Publisher;
use std::net::SocketAddr;

use agentwatch_ws::WsLayer;
use axum::Router;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// RFC 6455 §1.3's example: the accept value for `KEY`.
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

async fn start() -> (Publisher, SocketAddr) {
    let ws = WsLayer::new().rate_limit(None);
    let (router, hub) = ws.clone().build("/ws");
    let addr = serve(Router::new().merge(router)).await;
    (hub, addr)
}

/// An answer as read off the socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// `(lowercase name, value)`, in order.
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        let mut found = self.headers.iter().filter(|(n, _)| n == name);
        let first = found.next().map(|(_, v)| v.as_str());
        assert!(found.next().is_none(), "{name} sent twice: {self:?}");
        first
    }
}

/// Sends `GET /ws HTTP/1.1`, `Host`, then `lines` (each `Name: value`) and reads the answer
/// head, and the body when it has a `Content-Length`.
async fn request(addr: SocketAddr, version: &str, lines: &[&str]) -> Answer {
    let mut stream = within("tcp connect", TcpStream::connect(addr))
        .await
        .unwrap();
    let mut head = format!("GET /ws {version}\r\nHost: {addr}\r\n");
    for line in lines {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();

    let mut buf = Vec::new();
    let head_end = within("answer head", async {
        loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return i + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before an answer: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let text = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = buf[head_end..].to_vec();
    within("answer body", async {
        while body.len() < length {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed inside the body");
            body.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A browser's upgrade request with one header replaced (or dropped with `None`) and `extra`
/// lines added.
fn upgrade_lines<'a>(replace: &'a str, with: Option<&'a str>, extra: &[&'a str]) -> Vec<String> {
    let mut lines: Vec<String> = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", KEY),
    ]
    .iter()
    .filter_map(|(name, value)| {
        if name.eq_ignore_ascii_case(replace) {
            with.map(|w| format!("{name}: {w}"))
        } else {
            Some(format!("{name}: {value}"))
        }
    })
    .collect();
    lines.extend(extra.iter().map(|l| l.to_string()));
    lines
}

async fn upgrade(addr: SocketAddr, lines: &[String]) -> Answer {
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    request(addr, "HTTP/1.1", &lines).await
}

fn assert_switched(answer: &Answer) {
    assert_eq!(answer.status, 101, "{answer:?}");
    assert_eq!(answer.header("sec-websocket-accept"), Some(ACCEPT));
    assert!(
        answer
            .header("upgrade")
            .unwrap()
            .eq_ignore_ascii_case("websocket")
    );
    assert!(
        answer
            .header("connection")
            .unwrap()
            .eq_ignore_ascii_case("upgrade")
    );
}

fn assert_bad_request(answer: &Answer, body_mentions: &str) {
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(answer.body.contains(body_mentions), "{answer:?}");
    assert!(answer.body.len() < 100, "short body: {answer:?}");
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
}

#[tokio::test]
async fn a_plain_get_is_426_with_upgrade_and_connection_headers() {
    let (hub, addr) = start().await;
    for lines in [
        vec![],
        vec!["Connection: keep-alive"],
        // An upgrade to something else is not a WebSocket upgrade.
        vec!["Connection: Upgrade", "Upgrade: h2c"],
        vec!["Connection: Upgrade", "Upgrade: websocket/13"],
        // Half an upgrade: the token must be in both headers.
        vec!["Upgrade: websocket"],
        vec!["Connection: Upgrade"],
    ] {
        let answer = request(addr, "HTTP/1.1", &lines).await;
        assert_eq!(answer.status, 426, "{lines:?}: {answer:?}");
        assert_eq!(answer.header("upgrade"), Some("websocket"), "{answer:?}");
        assert_eq!(answer.header("connection"), Some("upgrade"), "{answer:?}");
        assert!(
            answer
                .body
                .starts_with("this endpoint needs a WebSocket upgrade")
        );
    }
    assert_eq!(hub.stats().rejected.not_upgrade, 6);
    assert_eq!(hub.stats().accepted, 0);
}

#[tokio::test]
async fn malformed_keys_are_400_and_never_upgraded() {
    let (log, _guard) = Captured::install(tracing::Level::WARN);
    let (hub, addr) = start().await;
    let cases: Vec<Vec<String>> = vec![
        upgrade_lines("Sec-WebSocket-Key", None, &[]),
        upgrade_lines("Sec-WebSocket-Key", Some(""), &[]),
        upgrade_lines("Sec-WebSocket-Key", Some("not base64 at all!"), &[]),
        // The base64 of 15 and of 17 bytes.
        upgrade_lines("Sec-WebSocket-Key", Some("AAAAAAAAAAAAAAAAAAAA"), &[]),
        upgrade_lines("Sec-WebSocket-Key", Some("AAAAAAAAAAAAAAAAAAAAAAA="), &[]),
        // Sent twice: on two lines, and as a list on one.
        upgrade_lines(
            "Sec-WebSocket-Key",
            Some(KEY),
            &["Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="],
        ),
        upgrade_lines("Sec-WebSocket-Key", Some(&format!("{KEY}, {KEY}")), &[]),
    ];
    for lines in &cases {
        let answer = upgrade(addr, lines).await;
        assert_bad_request(&answer, "Sec-WebSocket-Key");
    }
    assert_eq!(hub.stats().rejected.not_upgrade, cases.len() as u64);
    // Each rejection is logged once, at warn, with the peer and the reason.
    let text = log.text();
    let logged: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("upgrade rejected"))
        .collect();
    assert_eq!(logged.len(), cases.len(), "{text}");
    for line in logged {
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains("peer=127.0.0.1:"), "{line}");
        assert!(line.contains("reason=\"not_upgrade\""), "{line}");
        assert!(line.contains("Sec-WebSocket-Key"), "{line}");
    }
    assert_eq!(hub.stats().accepted, 0);
}

#[tokio::test]
async fn unsupported_versions_are_400_listing_version_13() {
    let (hub, addr) = start().await;
    let cases: Vec<Vec<String>> = vec![
        upgrade_lines("Sec-WebSocket-Version", None, &[]),
        upgrade_lines("Sec-WebSocket-Version", Some("8"), &[]),
        upgrade_lines("Sec-WebSocket-Version", Some("14"), &[]),
        upgrade_lines("Sec-WebSocket-Version", Some("13, 8"), &[]),
        upgrade_lines(
            "Sec-WebSocket-Version",
            Some("13"),
            &["Sec-WebSocket-Version: 8"],
        ),
    ];
    for lines in &cases {
        let answer = upgrade(addr, lines).await;
        assert_bad_request(&answer, "Sec-WebSocket-Version");
        // RFC 6455 §4.2.2 (4): the versions the server supports.
        assert_eq!(
            answer.header("sec-websocket-version"),
            Some("13"),
            "{lines:?}"
        );
    }
    assert_eq!(hub.stats().rejected.not_upgrade, cases.len() as u64);
    assert_eq!(hub.stats().accepted, 0);
}

#[tokio::test]
async fn an_upgrade_over_http_1_0_is_400() {
    let (hub, addr) = start().await;
    let lines = upgrade_lines("", None, &[]);
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let answer = request(addr, "HTTP/1.0", &lines).await;
    assert_bad_request(&answer, "HTTP/1.1");
    assert_eq!(hub.stats().rejected.not_upgrade, 1);
    assert_eq!(hub.stats().accepted, 0);
}

#[tokio::test]
async fn field_lists_are_read_token_by_token_on_every_line() {
    let (hub, addr) = start().await;
    let cases: Vec<Vec<String>> = vec![
        upgrade_lines("Connection", Some("keep-alive, Upgrade"), &[]),
        upgrade_lines("Connection", Some("UPGRADE"), &[]),
        // The token on a second Connection line.
        upgrade_lines("Connection", Some("keep-alive"), &["Connection: upgrade"]),
        upgrade_lines("Upgrade", Some("WebSocket"), &[]),
        upgrade_lines("Upgrade", Some("h2c, websocket"), &[]),
        upgrade_lines("Upgrade", Some("h2c"), &["Upgrade: websocket"]),
    ];
    for lines in &cases {
        let answer = upgrade(addr, lines).await;
        assert_switched(&answer);
    }
    eventually("every upgraded connection counted", || {
        hub.stats().accepted == cases.len() as u64
    })
    .await;
    assert_eq!(hub.stats().rejected.total(), 0);
}

#[tokio::test]
async fn a_valid_handshake_streams_the_snapshot() {
    let (hub, addr) = start().await;
    let mut client = connect(addr).await;
    assert_eq!(
        next_event(&mut client).await.kind,
        agentwatch_ws::EventType::Snapshot
    );
    assert_eq!(hub.stats().accepted, 1);
    close_and_expect_reply(client).await;
}

/// RFC 6455 §4.2.2 (5.4): the chosen subprotocol is sent once, on one line, whatever the
/// number of lines the client offered on; a client offering none gets no header.
#[tokio::test]
async fn subprotocols_offered_on_several_lines_are_all_read() {
    let (hub, addr) = start().await;
    let answer = upgrade(
        addr,
        &upgrade_lines(
            "",
            None,
            &[
                "Sec-WebSocket-Protocol: chat, , superchat",
                "Sec-WebSocket-Protocol:  agentwatch.v1 ",
            ],
        ),
    )
    .await;
    assert_switched(&answer);
    assert_eq!(
        answer.header("sec-websocket-protocol"),
        Some("agentwatch.v1")
    );

    let answer = upgrade(addr, &upgrade_lines("", None, &[])).await;
    assert_switched(&answer);
    assert_eq!(answer.header("sec-websocket-protocol"), None);

    let answer = upgrade(
        addr,
        &upgrade_lines(
            "",
            None,
            &[
                "Sec-WebSocket-Protocol: chat",
                "Sec-WebSocket-Protocol: mqtt",
            ],
        ),
    )
    .await;
    assert_bad_request(&answer, "Sec-WebSocket-Protocol");
    assert_eq!(answer.header("sec-websocket-protocol"), None);
    eventually("both upgrades counted", || hub.stats().accepted == 2).await;
    assert_eq!(hub.stats().rejected.not_upgrade, 1);
}
