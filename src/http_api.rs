//! The HTTP API: agentwatch's `transport/httpapi` routes over a [`Publisher`]'s state.
//!
//! `GET /sessions`, `GET /sessions/{id}`, `GET /healthz`, `GET /sources`, each answering
//! JSON in the bytes Go's `json.NewEncoder(w).Encode` writes (Go's `encoding/json` rules,
//! then a newline). Mounted by [`WsLayer::http_api`](crate::WsLayer::http_api) behind the
//! endpoint's admission, or on its own by [`Publisher::http_api`].
//!
//! Where a broker node serves several producers, sessions and health reports carry
//! `machine` (see [`SessionState::machine`](crate::SessionState::machine)), and `/sources`
//! adds `machines`: keys Go's clients ignore, absent for a single producer.

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::SocketAddr;

use axum::Router;
use axum::extract::{FromRequestParts, Path};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use serde::Serialize;

use crate::admission::auth::{Identity, reject_unauthorized};
use crate::admission::client_ip::peer_addr;
use crate::privacy::Viewer;
use crate::publisher::Publisher;
use crate::wire::{self, Health, HealthStatus};

/// What every answer of one router shares: the publisher it reads and the prefix that keeps
/// its entity tags apart from those of any other router or process.
#[derive(Clone)]
struct Api {
    publisher: Publisher,
    /// Random per router: a restarted process numbers its state from 0 again, and a client's
    /// `If-None-Match` from before the restart must not match.
    epoch: u64,
}

/// Go's `healthzResponse`.
#[derive(Serialize)]
struct Healthz<'a> {
    status: HealthStatus,
    sources: &'a [Health],
}

/// Go's `sourcesResponse`: the source of each health report, in first-report order. Where
/// a broker node serves several producers, `machines` (this crate's own key, omitted when no
/// report has a machine, so a single producer's answer stays Go's bytes) gives each report's
/// machine at the same index (`""` for a report without one): two machines' `claude` are
/// two entries. Go's decoder ignores the key.
#[derive(Serialize)]
struct Sources<'a> {
    sources: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    machines: Vec<&'a str>,
}

/// Go's `errorResponse`.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

/// The four routes, with `A` extracted (and its rejection returned unchanged) before each
/// answer, and each answer redacted by the privacy policy chosen for `A`'s identity.
/// `A = Anonymous` admits every request (and gets the anonymous viewer's policy).
pub(crate) fn routes<S, A>(publisher: Publisher) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    A: FromRequestParts<S> + Into<Identity> + Send + 'static,
    A::Rejection: Send,
{
    let api = Api {
        publisher,
        epoch: std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish(),
    };
    let (sessions, session, healthz, sources) = (api.clone(), api.clone(), api.clone(), api);
    Router::new()
        .route(
            "/sessions",
            get(
                move |auth: Result<A, A::Rejection>, ext: Extensions, headers: HeaderMap| async move {
                    let viewer = match sessions.viewer(auth, &ext) {
                        Ok(viewer) => viewer,
                        Err(refused) => return *refused,
                    };
                    let (version, mut list) = sessions.publisher.store().versioned_sessions();
                    if let Some(redactor) = &viewer.redactor {
                        list.iter_mut().for_each(|state| redactor.session(state));
                        // Sorted by the ids this viewer sees: the real ids' order is theirs.
                        list.sort_unstable_by(|a, b| a.id.cmp(&b.id));
                    }
                    sessions.answer(&headers, &viewer, version, &list)
                },
            ),
        )
        .route(
            "/sessions/{id}",
            get(
                move |auth: Result<A, A::Rejection>,
                      ext: Extensions,
                      headers: HeaderMap,
                      Path(id): Path<String>| async move {
                    let viewer = match session.viewer(auth, &ext) {
                        Ok(viewer) => viewer,
                        Err(refused) => return *refused,
                    };
                    let store = session.publisher.store();
                    let found = match &viewer.redactor {
                        None => store.versioned_session(&id),
                        // Only the pseudonym finds a session: the real id must not, or it
                        // would tell this viewer which ids exist.
                        Some(redactor) => {
                            let (version, list) = store.versioned_sessions();
                            let found = list
                                .into_iter()
                                .find(|state| redactor.session_id(&state.id) == id)
                                .map(|mut state| {
                                    redactor.session(&mut state);
                                    state
                                });
                            (version, found)
                        }
                    };
                    match found {
                        (version, Some(found)) => session.answer(&headers, &viewer, version, &found),
                        (_, None) => json(
                            StatusCode::NOT_FOUND,
                            &ErrorBody {
                                error: "session not found",
                            },
                        ),
                    }
                },
            ),
        )
        .route(
            "/healthz",
            get(
                move |auth: Result<A, A::Rejection>, ext: Extensions, headers: HeaderMap| async move {
                    let viewer = match healthz.viewer(auth, &ext) {
                        Ok(viewer) => viewer,
                        Err(refused) => return *refused,
                    };
                    let (version, mut reports) = healthz.publisher.store().versioned_health();
                    if let Some(redactor) = &viewer.redactor {
                        reports.iter_mut().for_each(|health| redactor.health(health));
                    }
                    let body = Healthz {
                        status: worst(&reports),
                        sources: &reports,
                    };
                    // A load balancer takes a node out once its publisher is stopped (the
                    // WebSocket then answers 503 too); before that, Go's 200 whatever the
                    // sources' status says.
                    if healthz.publisher.is_stopped() {
                        return json(StatusCode::SERVICE_UNAVAILABLE, &body);
                    }
                    healthz.answer(&headers, &viewer, version, &body)
                },
            ),
        )
        .route(
            "/sources",
            get(
                move |auth: Result<A, A::Rejection>, ext: Extensions, headers: HeaderMap| async move {
                    let viewer = match sources.viewer(auth, &ext) {
                        Ok(viewer) => viewer,
                        Err(refused) => return *refused,
                    };
                    let (version, reports) = sources.publisher.store().versioned_health();
                    let names: Vec<(String, String)> = reports
                        .iter()
                        .map(|h| match &viewer.redactor {
                            Some(redactor) => (
                                redactor.source_name(&h.source),
                                redactor.machine_name(&h.machine),
                            ),
                            None => (h.source.clone(), h.machine.clone()),
                        })
                        .collect();
                    let any_machine = names.iter().any(|(_, machine)| !machine.is_empty());
                    let body = Sources {
                        sources: names.iter().map(|(source, _)| source.as_str()).collect(),
                        machines: names
                            .iter()
                            .filter(|_| any_machine)
                            .map(|(_, machine)| machine.as_str())
                            .collect(),
                    };
                    sources.answer(&headers, &viewer, version, &body)
                },
            ),
        )
}

/// Go's rule: `failed` if any source failed, else `degraded` if any is degraded, else
/// `healthy` (no reports at all included; a status Go does not name counts as healthy).
fn worst(reports: &[Health]) -> HealthStatus {
    let mut overall = HealthStatus::Healthy;
    for report in reports {
        match report.status {
            HealthStatus::Failed => return HealthStatus::Failed,
            HealthStatus::Degraded => overall = HealthStatus::Degraded,
            _ => {}
        }
    }
    overall
}

fn refuse(rejection: impl IntoResponse, extensions: &Extensions) -> Response {
    let peer: Option<SocketAddr> = peer_addr(extensions);
    reject_unauthorized(rejection, peer)
}

impl Api {
    /// The viewer the request's identity gets, or the extractor's rejection as the answer.
    fn viewer<A: Into<Identity>>(
        &self,
        auth: Result<A, impl IntoResponse>,
        extensions: &Extensions,
    ) -> Result<Viewer, Box<Response>> {
        match auth {
            Ok(extracted) => Ok(self.publisher.hub().privacy().viewer(&extracted.into())),
            Err(rejection) => Err(Box::new(refuse(rejection, extensions))),
        }
    }

    /// `200` with `value` and an `ETag` for `version` as `viewer` sees it, or
    /// `304 Not Modified` when the request's `If-None-Match` already names that tag. The tag
    /// hashes the viewer's policy (never a field, never which policy): viewers with
    /// different policies get different tags for the same version.
    fn answer<T: Serialize + ?Sized>(
        &self,
        headers: &HeaderMap,
        viewer: &Viewer,
        version: u64,
        value: &T,
    ) -> Response {
        // The router's epoch and the viewer's policy, hashed: opaque, and one per policy.
        let prefix = {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            (self.epoch, viewer.fingerprint).hash(&mut hasher);
            hasher.finish()
        };
        let tag = format!("\"{prefix:016x}-{version}\"");
        let Ok(etag) = HeaderValue::from_str(&tag) else {
            // Hex digits, a dash and decimal digits: always a valid header value.
            return json(StatusCode::OK, value);
        };
        if matches_etag(headers, &tag) {
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            let h = response.headers_mut();
            h.insert(header::ETAG, etag);
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return response;
        }
        let mut response = json(StatusCode::OK, value);
        if response.status() == StatusCode::OK {
            response.headers_mut().insert(header::ETAG, etag);
        }
        response
    }
}

/// Whether any `If-None-Match` value is `*` or names `tag` (weak comparison, RFC 9110
/// §13.1.2: a `W/` prefix is ignored).
fn matches_etag(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == tag)
}

/// `value` as Go's `json.Encoder` writes it (compact, Go's escaping, then `\n`), with
/// `Content-Type: application/json` and `Cache-Control: no-store`. A value Go would refuse
/// to encode (a non-finite `contextUtilization`, a year outside 0..=9999) is a `500` with
/// `{"error":"..."}` and an `error` tracing event.
fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    let (status, mut body) = match wire::to_vec(value) {
        Ok(body) => (status, body),
        Err(error) => {
            tracing::error!(%error, "HTTP API: state cannot be encoded as Go's encoding/json would");
            let fallback = ErrorBody {
                error: "state cannot be encoded as JSON",
            };
            let body = wire::to_vec(&fallback)
                .unwrap_or_else(|_| br#"{"error":"internal error"}"#.to_vec());
            (StatusCode::INTERNAL_SERVER_ERROR, body)
        }
    };
    body.push(b'\n');
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_forms() {
        let tag = "\"00000000000000ab-3\"";
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_static(v));
            matches_etag(&h, tag)
        };
        assert!(with("\"00000000000000ab-3\""));
        assert!(with("W/\"00000000000000ab-3\""));
        assert!(with("\"x\", \"00000000000000ab-3\""));
        assert!(with("*"));
        assert!(!with("\"00000000000000ab-4\""));
        assert!(!with("00000000000000ab-3"));
        assert!(!matches_etag(&HeaderMap::new(), tag));
    }

    #[test]
    fn worst_follows_go() {
        let report = |status| Health {
            status,
            ..Default::default()
        };
        assert_eq!(worst(&[]), HealthStatus::Healthy);
        assert_eq!(
            worst(&[
                report(HealthStatus::Degraded),
                report(HealthStatus::Healthy)
            ]),
            HealthStatus::Degraded
        );
        assert_eq!(
            worst(&[report(HealthStatus::Degraded), report(HealthStatus::Failed)]),
            HealthStatus::Failed
        );
        assert_eq!(
            worst(&[report(HealthStatus::from("unknown"))]),
            HealthStatus::Healthy
        );
    }
}
