//! Chromium over TLS with ALPN `h2`: the page is served over HTTP/2 and
//! its `new WebSocket("wss://…/ws", "agentwatch.v1")` rides the same HTTP/2 connection as an
//! RFC 8441 extended CONNECT. The server records every request's method and version, so the
//! test knows the WebSocket really went over HTTP/2 (and was not quietly retried over
//! HTTP/1.1), then the page receives the snapshot and live events.
//!
//! The certificate is self-signed (rcgen) and Chromium runs with `--ignore-certificate-errors`.
//! Without Chromium the test prints a notice and passes, unless
//! `AGENTWATCH_REQUIRE_BROWSER=1` is set, in which case it fails.

use crate::common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentwatch_ws::{Event, EventSink, WsLayer};
use axum::Router;
use axum::response::Html;
use axum::routing::get;
use common::chromium::{Browser, chromium_available};
use common::*;
use http::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tower::ServiceExt;

/// `(method, version, path)` of every request the server saw.
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

/// Serves `app` over TLS (ALPN `h2`, then `http/1.1`) with hyper-util's auto server and
/// extended CONNECT enabled, as `axum::serve` and `agentwatch_ws::serve` configure HTTP/2.
async fn serve_tls(app: Router, seen: Seen) -> SocketAddr {
    init_tracing();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));

    let app = app.map_request(move |request: Request<hyper::body::Incoming>| {
        seen.lock().unwrap().push((
            request.method().to_string(),
            format!("{:?}", request.version()),
            request.uri().path().to_owned(),
        ));
        request
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http2().enable_connect_protocol();
    let builder = Arc::new(builder);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, builder, app) = (acceptor.clone(), builder.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = TowerToHyperService::new(app);
                let _ = builder
                    .serve_connection_with_upgrades(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_streams_events_over_http2_extended_connect() {
    if !chromium_available() {
        return;
    }
    let ws = WsLayer::new().rate_limit(None);
    let (ws_router, hub) = ws.clone().build("/ws");
    let seen = Seen::default();
    let app = Router::new()
        .route(
            "/",
            get(|| async { Html("<!doctype html><title>h2 test</title>") }),
        )
        .merge(ws_router);
    let addr = serve_tls(app, seen.clone()).await;

    let mut browser = Browser::start(&["--ignore-certificate-errors"]).await;
    browser.navigate(&format!("https://{addr}/")).await;
    let page_protocol = browser
        .cdp
        .eval("performance.getEntriesByType('navigation')[0].nextHopProtocol")
        .await;
    assert_eq!(page_protocol, "h2", "the page itself must come over HTTP/2");

    browser
        .cdp
        .eval(
            "window.got = []; window.state = 'connecting'; \
             window.ws = new WebSocket(`wss://${location.host}/ws`, 'agentwatch.v1'); \
             ws.onopen = () => { window.state = 'open ' + ws.protocol; }; \
             ws.onmessage = m => { const e = JSON.parse(m.data); got.push([e.type, e.seq]); }; \
             ws.onclose = e => { window.state = 'closed ' + e.code; }; true",
        )
        .await;
    let state = browser
        .cdp
        .wait_for(
            "the WebSocket to open",
            Duration::from_secs(10),
            "window.state !== 'connecting' && window.state",
        )
        .await;
    assert_eq!(state, "open agentwatch.v1");
    // RFC 7692 over RFC 8441: the extended CONNECT's 200 accepts Chromium's offer.
    assert_eq!(
        browser.cdp.eval("ws.extensions").await,
        "permessage-deflate; server_no_context_takeover"
    );
    eventually("registered", || hub.client_count() == 1).await;
    for seq in 1..=3 {
        hub.handle_event(&Event::delta(seq, vec![], vec![format!("gone-{seq}")]))
            .unwrap();
    }
    let got = browser
        .cdp
        .wait_for(
            "the snapshot and three deltas",
            Duration::from_secs(10),
            "window.got.length >= 4 && window.got",
        )
        .await;
    assert_eq!(
        got,
        serde_json::json!([["snapshot", 0], ["delta", 1], ["delta", 2], ["delta", 3]])
    );

    let requests = seen.lock().unwrap().clone();
    assert!(
        requests
            .iter()
            .any(|(method, version, path)| method == "CONNECT"
                && version == "HTTP/2.0"
                && path == "/ws"),
        "the WebSocket did not come as an HTTP/2 extended CONNECT: {requests:?}"
    );
    assert!(
        !requests
            .iter()
            .any(|(_, version, path)| path == "/ws" && version != "HTTP/2.0"),
        "the WebSocket also tried HTTP/1.1: {requests:?}"
    );
    assert_eq!(hub.stats().accepted, 1);
    assert_eq!(hub.stats().rejected.total(), 0);
    assert!(browser.cdp.errors.is_empty(), "{:?}", browser.cdp.errors);

    browser.cdp.eval("ws.close(1000); true").await;
    eventually("closed", || hub.client_count() == 0).await;
}
