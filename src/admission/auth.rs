//! Authentication: who is connecting, through axum's extractor seam.
//!
//! There is one mechanism: an axum extractor `A: FromRequestParts<S> + Into<Identity>`. It runs
//! on the request parts before the upgrade; its rejection is the response (marked
//! [`Rejected`](super::Rejected)`(Unauthorized)`), its success is the connection's
//! [`Identity`], which is kept (the Go original threw it away).
//!
//! - [`Anonymous`]: no authentication, everyone is [`Identity::anonymous`].
//! - [`Authenticated`]: runs the Go-shaped [`Authenticator`] installed by
//!   [`AuthenticatorLayer`], for code ported from Go: `None` gives `401 Unauthorized`.
//! - Any extractor of your own (a session cookie, a bearer token checked against app state...)
//!   that converts into [`Identity`]: its rejection is returned unchanged.
//!
//! [`AuthLayer`] runs such an extractor in front of any route and puts the [`Identity`] in the
//! request extensions (read it with `Extension<Identity>`).
//!
//! # Example
//!
//! ```
//! use agentwatch_ws::admission::auth::{AuthLayer, Authenticated, AuthenticatorLayer, Identity};
//! use axum::{Extension, Router, routing::get};
//! use http::request::Parts;
//!
//! let check_token = |parts: &Parts| -> Option<Identity> {
//!     let token = parts.headers.get("authorization")?.to_str().ok()?;
//!     let user = token.strip_prefix("Bearer user-")?;
//!     Some(Identity::new(user))
//! };
//!
//! let app: Router = Router::new()
//!     .route("/ws", get(|Extension(who): Extension<Identity>| async move { format!("hi {who}") }))
//!     .layer(AuthLayer::<Authenticated>::stateless())
//!     .layer(AuthenticatorLayer::new(check_token)); // outermost: runs first
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{Request, StatusCode};
use tower::{Layer, Service};

use super::client_ip::peer_addr;
use super::{RejectReason, mark_rejected, rejection};

/// Who a connection belongs to: an id, plus whatever the app's authentication learned
/// (string claims, or typed values).
///
/// Built with [`Identity::new`] and extended with [`with_claim`](Identity::with_claim) /
/// [`with_extension`](Identity::with_extension), so it can grow without breaking anyone. Only
/// the id is ever logged (it is `Display`, and the connection's span carries it); keep
/// secrets and personal data out of the id.
///
/// ```
/// use agentwatch_ws::admission::auth::Identity;
///
/// #[derive(Clone, Debug, PartialEq)]
/// struct TenantId(u64);
///
/// let alice = Identity::new("alice")
///     .with_claim("role", "viewer")
///     .with_extension(TenantId(7));
/// assert_eq!(alice.id(), "alice");
/// assert_eq!(alice.claim("role"), Some("viewer"));
/// assert_eq!(alice.extension::<TenantId>(), Some(&TenantId(7)));
/// assert_eq!(alice.to_string(), "alice");
/// assert!(Identity::anonymous().is_anonymous());
/// assert_eq!(Identity::anonymous().to_string(), "anonymous");
/// ```
///
/// Equality and hashing look at the id and the claims, not at the typed extensions (which
/// need not be comparable).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Identity {
    id: String,
    claims: std::collections::BTreeMap<String, String>,
    extensions: http::Extensions,
}

impl Identity {
    /// An identity with this id (empty: anonymous).
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            ..Self::default()
        }
    }

    /// The identity of an unauthenticated client (empty id).
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// The identifier; empty for an anonymous client.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the id is empty.
    pub fn is_anonymous(&self) -> bool {
        self.id.is_empty()
    }

    /// The same identity with claim `name` set to `value` (replacing an earlier value).
    #[must_use]
    pub fn with_claim(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.claims.insert(name.into(), value.into());
        self
    }

    /// The value of claim `name`, if set.
    pub fn claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).map(String::as_str)
    }

    /// Every claim, by name.
    pub fn claims(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.claims.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The same identity carrying `value`, one per type (replacing an earlier one), as
    /// [`http::Extensions`] does.
    #[must_use]
    pub fn with_extension<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.extensions.insert(value);
        self
    }

    /// The value of type `T` attached with [`with_extension`](Identity::with_extension).
    pub fn extension<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.extensions.get::<T>()
    }
}

impl PartialEq for Identity {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.claims == other.claims
    }
}

impl Eq for Identity {}

impl std::hash::Hash for Identity {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state);
        self.claims.hash(state);
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_anonymous() {
            f.write_str("anonymous")
        } else {
            f.write_str(&self.id)
        }
    }
}

/// The Go-shaped authentication hook: look at the request head, answer who it is or `None`.
///
/// Implemented for closures `Fn(&Parts) -> Option<Identity>` (annotate the argument type:
/// `|parts: &Parts| ...`). Install one with [`AuthenticatorLayer`] and extract
/// [`Authenticated`]. Never panic on header values: use `to_str().ok()?` and the like.
pub trait Authenticator: Send + Sync + 'static {
    /// The identity of the client making this request, or `None` to answer `401`.
    fn authenticate(&self, parts: &Parts) -> Option<Identity>;
}

impl<F> Authenticator for F
where
    F: Fn(&Parts) -> Option<Identity> + Send + Sync + 'static,
{
    fn authenticate(&self, parts: &Parts) -> Option<Identity> {
        self(parts)
    }
}

/// Extractor meaning "no authentication": always succeeds, converting into
/// [`Identity::anonymous`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Anonymous;

impl<S: Send + Sync> FromRequestParts<S> for Anonymous {
    type Rejection = Infallible;

    async fn from_request_parts(_parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Anonymous)
    }
}

impl From<Anonymous> for Identity {
    fn from(_: Anonymous) -> Self {
        Identity::anonymous()
    }
}

/// Request extension carrying the configured [`Authenticator`]; inserted by
/// [`AuthenticatorLayer`] and read by [`Authenticated`]. Cheap to clone.
#[derive(Clone)]
pub struct AuthenticatorHandle(pub(crate) Arc<dyn Authenticator>);

impl AuthenticatorHandle {
    /// Wraps an authenticator.
    pub fn new(authenticator: impl Authenticator) -> Self {
        Self(Arc::new(authenticator))
    }

    /// Runs the authenticator.
    pub fn authenticate(&self, parts: &Parts) -> Option<Identity> {
        self.0.authenticate(parts)
    }
}

impl fmt::Debug for AuthenticatorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthenticatorHandle")
            .finish_non_exhaustive()
    }
}

/// Extractor running the [`Authenticator`] from the [`AuthenticatorHandle`] request extension.
///
/// Rejects with [`AuthRejection::Unauthorized`] (`401`, logged at warn level with the peer)
/// when the authenticator answers `None`, and with [`AuthRejection::MissingAuthenticator`]
/// (`500`, logged once per process at error level) when no [`AuthenticatorLayer`] put a handle
/// in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated(pub Identity);

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(handle) = parts.extensions.get::<AuthenticatorHandle>().cloned() else {
            // A deployment mistake, not a client's: say it loudly once, not per request.
            if !MISSING_AUTHENTICATOR_LOGGED.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    peer = peer_addr(&parts.extensions).map(tracing::field::display),
                    reason = %RejectReason::Unauthorized,
                    "`Authenticated` extractor used without `AuthenticatorLayer`; answering 500"
                );
            }
            return Err(AuthRejection::MissingAuthenticator);
        };
        match handle.authenticate(parts) {
            Some(identity) => Ok(Authenticated(identity)),
            None => {
                tracing::warn!(
                    peer = peer_addr(&parts.extensions).map(tracing::field::display),
                    reason = %RejectReason::Unauthorized,
                    "rejected WebSocket upgrade: authenticator said no"
                );
                Err(AuthRejection::Unauthorized)
            }
        }
    }
}

/// Whether the missing-`AuthenticatorLayer` error was logged already (process-wide).
static MISSING_AUTHENTICATOR_LOGGED: AtomicBool = AtomicBool::new(false);

impl From<Authenticated> for Identity {
    fn from(Authenticated(identity): Authenticated) -> Self {
        identity
    }
}

/// Rejection of the [`Authenticated`] extractor. Both responses carry
/// [`Rejected`](super::Rejected)`(`[`RejectReason::Unauthorized`]`)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthRejection {
    /// The authenticator answered `None`: `401 Unauthorized`, body `unauthorized`.
    Unauthorized,
    /// No [`AuthenticatorLayer`] is installed on the route: `500`, body naming the layer.
    MissingAuthenticator,
}

impl fmt::Display for AuthRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthRejection::Unauthorized => "unauthorized",
            AuthRejection::MissingAuthenticator => "authenticator layer missing",
        })
    }
}

impl std::error::Error for AuthRejection {}

/// Response extension: the rejection was logged where it was made (by [`Authenticated`]),
/// so [`reject_unauthorized`] does not log it again.
#[derive(Debug, Clone, Copy)]
struct Logged;

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        let mut response = match self {
            AuthRejection::Unauthorized => rejection(
                RejectReason::Unauthorized,
                StatusCode::UNAUTHORIZED,
                "unauthorized\n",
                None,
            ),
            AuthRejection::MissingAuthenticator => rejection(
                RejectReason::Unauthorized,
                StatusCode::INTERNAL_SERVER_ERROR,
                "server misconfigured: the Authenticated extractor needs AuthenticatorLayer\n",
                None,
            ),
        };
        response.extensions_mut().insert(Logged);
        response
    }
}

/// Turns an auth extractor's rejection into the response to send: unchanged status, headers
/// and body, plus [`Rejected`](super::Rejected)`(Unauthorized)`. Logs a warning with `peer` and the status
/// (never the request's credentials) unless [`Authenticated`] made the rejection and logged
/// it already.
///
/// This is what a handler taking `Result<A, A::Rejection>` calls on `Err`.
pub(crate) fn reject_unauthorized(
    rejection: impl IntoResponse,
    peer: Option<SocketAddr>,
) -> Response {
    let response = rejection.into_response();
    if response.extensions().get::<Logged>().is_none() {
        tracing::warn!(
            peer = peer.map(tracing::field::display),
            reason = %RejectReason::Unauthorized,
            status = response.status().as_u16(),
            "rejected WebSocket upgrade: authentication extractor rejected the request"
        );
    }
    mark_rejected(response, RejectReason::Unauthorized)
}

/// Installs an [`Authenticator`] as an [`AuthenticatorHandle`] request extension, so the
/// [`Authenticated`] extractor works on the wrapped routes. Put it outside (after, in
/// `.layer(...)` order) any [`AuthLayer<Authenticated>`](AuthLayer).
#[derive(Debug, Clone)]
pub struct AuthenticatorLayer {
    handle: AuthenticatorHandle,
}

impl AuthenticatorLayer {
    /// A layer installing `authenticator`.
    pub fn new(authenticator: impl Authenticator) -> Self {
        Self::from_handle(AuthenticatorHandle::new(authenticator))
    }

    /// A layer installing an existing handle.
    pub fn from_handle(handle: AuthenticatorHandle) -> Self {
        Self { handle }
    }
}

impl<I> Layer<I> for AuthenticatorLayer {
    type Service = AuthenticatorService<I>;

    fn layer(&self, inner: I) -> Self::Service {
        AuthenticatorService {
            inner,
            handle: self.handle.clone(),
        }
    }
}

/// The service made by [`AuthenticatorLayer`].
#[derive(Debug, Clone)]
pub struct AuthenticatorService<I> {
    inner: I,
    handle: AuthenticatorHandle,
}

impl<I, B> Service<Request<B>> for AuthenticatorService<I>
where
    I: Service<Request<B>>,
{
    type Response = I::Response;
    type Error = I::Error;
    type Future = I::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        req.extensions_mut().insert(self.handle.clone());
        self.inner.call(req)
    }
}

/// Runs the extractor `A` with app state `S` on every request: on success the [`Identity`] is
/// inserted into the request extensions and the inner service is called; on rejection the
/// extractor's own response is returned unchanged except for the
/// [`Rejected`](super::Rejected)`(`[`RejectReason::Unauthorized`]`)` extension, and a warning is logged.
///
/// ```
/// use agentwatch_ws::admission::auth::{AuthLayer, Identity};
/// use axum::extract::{FromRef, FromRequestParts};
/// use axum::{Extension, Router, routing::get};
/// use http::{StatusCode, request::Parts};
///
/// #[derive(Clone)]
/// struct AppState { api_key: String }
///
/// struct ApiKey;
///
/// impl FromRequestParts<AppState> for ApiKey {
///     type Rejection = (StatusCode, &'static str);
///     async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
///         match parts.headers.get("x-api-key") {
///             Some(key) if key.as_bytes() == state.api_key.as_bytes() => Ok(ApiKey),
///             _ => Err((StatusCode::UNAUTHORIZED, "bad api key")),
///         }
///     }
/// }
///
/// impl From<ApiKey> for Identity {
///     fn from(_: ApiKey) -> Self { Identity::new("api-client") }
/// }
///
/// let state = AppState { api_key: "secret".into() };
/// let app: Router = Router::new()
///     .route("/ws", get(|Extension(who): Extension<Identity>| async move { who.to_string() }))
///     .layer(AuthLayer::<ApiKey, _>::new(state));
/// ```
pub struct AuthLayer<A, S = ()> {
    state: S,
    _extractor: PhantomData<fn() -> A>,
}

impl<A, S> AuthLayer<A, S> {
    /// A layer running extractor `A` with `state`.
    pub fn new(state: S) -> Self {
        Self {
            state,
            _extractor: PhantomData,
        }
    }
}

impl<A> AuthLayer<A, ()> {
    /// A layer running extractor `A` with the unit state (for extractors generic over the
    /// state, such as [`Anonymous`] and [`Authenticated`]).
    pub fn stateless() -> Self {
        Self::new(())
    }
}

impl<A> Default for AuthLayer<A, ()> {
    fn default() -> Self {
        Self::stateless()
    }
}

impl<A, S: Clone> Clone for AuthLayer<A, S> {
    fn clone(&self) -> Self {
        Self::new(self.state.clone())
    }
}

impl<A, S> fmt::Debug for AuthLayer<A, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("extractor", &std::any::type_name::<A>())
            .finish_non_exhaustive()
    }
}

impl<A, S: Clone, I> Layer<I> for AuthLayer<A, S> {
    type Service = AuthService<I, A, S>;

    fn layer(&self, inner: I) -> Self::Service {
        AuthService {
            inner,
            state: self.state.clone(),
            _extractor: PhantomData,
        }
    }
}

/// The service made by [`AuthLayer`].
pub struct AuthService<I, A, S = ()> {
    inner: I,
    state: S,
    _extractor: PhantomData<fn() -> A>,
}

impl<I: Clone, A, S: Clone> Clone for AuthService<I, A, S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            state: self.state.clone(),
            _extractor: PhantomData,
        }
    }
}

impl<I: fmt::Debug, A, S> fmt::Debug for AuthService<I, A, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthService")
            .field("inner", &self.inner)
            .field("extractor", &std::any::type_name::<A>())
            .finish_non_exhaustive()
    }
}

/// Response future of [`AuthService`].
pub type AuthFuture<E> = Pin<Box<dyn Future<Output = Result<Response, E>> + Send + 'static>>;

impl<I, A, S, B> Service<Request<B>> for AuthService<I, A, S>
where
    I: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    I::Future: Send + 'static,
    A: FromRequestParts<S> + Into<Identity> + 'static,
    S: Clone + Send + Sync + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = I::Error;
    type Future = AuthFuture<I::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // Use the service that was driven to readiness; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            // Neither the extractor nor its rejection is kept across the inner call, so
            // neither needs to be `Send`.
            let identity: Identity = match A::from_request_parts(&mut parts, &state).await {
                Ok(extracted) => extracted.into(),
                Err(rejected) => {
                    return Ok(reject_unauthorized(rejected, peer_addr(&parts.extensions)));
                }
            };
            parts.extensions.insert(identity);
            inner.call(Request::from_parts(parts, body)).await
        })
    }
}

#[cfg(test)]
mod tests {
    // Here unwrap() and expect() are assertions on values the test itself built: a failure
    // fails the test, with the message. The module is built for `cargo test` only.
    use super::*;
    use crate::Rejected;
    use axum::body::{Body, to_bytes};
    use axum::extract::ConnectInfo;
    use axum::routing::get;
    use axum::{Extension, Router};
    use http::{HeaderValue, header};
    use std::time::Duration;
    use tokio::time::timeout;
    use tower::ServiceExt;

    const T: Duration = Duration::from_secs(5);

    fn token_auth(parts: &Parts) -> Option<Identity> {
        let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        value.strip_prefix("Bearer user-").map(Identity::new)
    }

    fn req(auth: Option<&[u8]>) -> Request<Body> {
        let mut req = Request::get("/ws").body(Body::empty()).unwrap();
        if let Some(auth) = auth {
            req.headers_mut().insert(
                header::AUTHORIZATION,
                HeaderValue::from_bytes(auth).unwrap(),
            );
        }
        req.extensions_mut().insert(ConnectInfo(
            "198.51.100.7:50000".parse::<SocketAddr>().unwrap(),
        ));
        req
    }

    async fn send(app: &Router, req: Request<Body>) -> (StatusCode, Option<Rejected>, String) {
        let res = timeout(T, app.clone().oneshot(req)).await.unwrap().unwrap();
        let status = res.status();
        let rejected = res.extensions().get::<Rejected>().copied();
        let body = to_bytes(res.into_body(), 4096).await.unwrap();
        (status, rejected, String::from_utf8(body.to_vec()).unwrap())
    }

    fn who_handler() -> axum::routing::MethodRouter {
        get(|Extension(who): Extension<Identity>| async move { format!("hi {who}") })
    }

    #[test]
    fn identity_basics() {
        let alice = Identity::new("alice");
        assert_eq!(alice.id(), "alice");
        assert!(!alice.is_anonymous());
        assert_eq!(alice.to_string(), "alice");
        let anon = Identity::anonymous();
        assert!(anon.is_anonymous());
        assert_eq!(anon.to_string(), "anonymous");
        assert_eq!(anon, Identity::default());
        assert_eq!(Identity::from(Anonymous), anon);
        assert_eq!(Identity::from(Authenticated(alice.clone())), alice);
        let set: std::collections::HashSet<_> = [alice.clone(), alice, anon].into_iter().collect();
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn closures_are_authenticators() {
        let handle = AuthenticatorHandle::new(token_auth);
        let (mut parts, ()) = Request::get("/")
            .header(header::AUTHORIZATION, "Bearer user-bob")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(handle.authenticate(&parts), Some(Identity::new("bob")));
        parts.headers.clear();
        assert_eq!(handle.clone().authenticate(&parts), None);
        let always = AuthenticatorHandle::new(|_: &Parts| Some(Identity::new("x")));
        assert_eq!(always.authenticate(&parts), Some(Identity::new("x")));
        assert!(format!("{always:?}").contains("AuthenticatorHandle"));
    }

    #[tokio::test]
    async fn authenticated_through_layers() {
        let app = Router::new()
            .route("/ws", who_handler())
            .layer(AuthLayer::<Authenticated>::stateless())
            .layer(AuthenticatorLayer::new(token_auth));

        assert_eq!(
            send(&app, req(Some(b"Bearer user-alice"))).await,
            (StatusCode::OK, None, "hi alice".into())
        );
        for bad in [
            None,
            Some(&b"Bearer nope"[..]),
            Some(b"Bearer user-\xff\xfe"),
            Some(b""),
        ] {
            assert_eq!(
                send(&app, req(bad)).await,
                (
                    StatusCode::UNAUTHORIZED,
                    Some(Rejected(RejectReason::Unauthorized)),
                    "unauthorized\n".into()
                ),
                "{bad:?}"
            );
        }
        let huge = vec![b'a'; 60_000];
        assert_eq!(
            send(&app, req(Some(&huge))).await.0,
            StatusCode::UNAUTHORIZED
        );
    }

    #[tokio::test]
    async fn authenticated_without_authenticator_layer_is_500() {
        let app = Router::new()
            .route("/ws", who_handler())
            .layer(AuthLayer::<Authenticated>::default());
        let (status, rejected, body) = send(&app, req(Some(b"Bearer user-alice"))).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(rejected, Some(Rejected(RejectReason::Unauthorized)));
        assert!(body.contains("AuthenticatorLayer"), "{body}");
    }

    #[tokio::test]
    async fn anonymous_inserts_the_anonymous_identity() {
        let app = Router::new()
            .route("/ws", who_handler())
            .layer(AuthLayer::<Anonymous>::stateless());
        assert_eq!(
            send(&app, req(None)).await,
            (StatusCode::OK, None, "hi anonymous".into())
        );
    }

    /// A user extractor with state and a rejection of its own.
    #[derive(Clone)]
    struct AppState {
        key: &'static str,
    }

    struct ApiKey(String);

    impl FromRequestParts<AppState> for ApiKey {
        type Rejection = Response;

        async fn from_request_parts(
            parts: &mut Parts,
            state: &AppState,
        ) -> Result<Self, Self::Rejection> {
            match parts.headers.get("x-api-key") {
                Some(key) if key.as_bytes() == state.key.as_bytes() => Ok(ApiKey("svc".into())),
                _ => Err((
                    StatusCode::FORBIDDEN,
                    [("x-custom", "yes")],
                    "custom rejection body",
                )
                    .into_response()),
            }
        }
    }

    impl From<ApiKey> for Identity {
        fn from(ApiKey(id): ApiKey) -> Self {
            Identity::new(id)
        }
    }

    #[tokio::test]
    async fn user_extractor_with_state_rejection_passes_unchanged() {
        let app = Router::new()
            .route("/ws", who_handler())
            .layer(AuthLayer::<ApiKey, _>::new(AppState { key: "s3cret" }));

        let mut ok = req(None);
        ok.headers_mut()
            .insert("x-api-key", HeaderValue::from_static("s3cret"));
        assert_eq!(
            send(&app, ok).await,
            (StatusCode::OK, None, "hi svc".into())
        );

        let mut bad = req(None);
        bad.headers_mut()
            .insert("x-api-key", HeaderValue::from_static("wrong"));
        let res = timeout(T, app.clone().oneshot(bad)).await.unwrap().unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert_eq!(res.headers()["x-custom"], "yes");
        assert_eq!(
            res.extensions().get::<Rejected>(),
            Some(&Rejected(RejectReason::Unauthorized))
        );
        let body = to_bytes(res.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"custom rejection body");
    }

    #[tokio::test]
    async fn handler_style_result_extractor() {
        // The shape the WebSocket handler uses: `Result<A, A::Rejection>`, marked on Err.
        async fn handler(
            ConnectInfo(peer): ConnectInfo<SocketAddr>,
            auth: Result<Authenticated, AuthRejection>,
        ) -> Response {
            match auth {
                Ok(who) => Identity::from(who).to_string().into_response(),
                Err(rejection) => reject_unauthorized(rejection, Some(peer)),
            }
        }
        let app = Router::new()
            .route("/ws", get(handler))
            .layer(AuthenticatorLayer::new(token_auth));
        assert_eq!(
            send(&app, req(Some(b"Bearer user-carol"))).await,
            (StatusCode::OK, None, "carol".into())
        );
        assert_eq!(
            send(&app, req(None)).await,
            (
                StatusCode::UNAUTHORIZED,
                Some(Rejected(RejectReason::Unauthorized)),
                "unauthorized\n".into()
            )
        );

        // A plain rejection gets the marker too, status and body untouched.
        let marked = reject_unauthorized((StatusCode::IM_A_TEAPOT, "short and stout"), None);
        assert_eq!(marked.status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(
            marked.extensions().get::<Rejected>(),
            Some(&Rejected(RejectReason::Unauthorized))
        );
        let body = to_bytes(marked.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"short and stout");
    }

    #[tokio::test]
    async fn auth_service_over_service_fn() {
        let inner = tower::service_fn(|req: Request<Body>| async move {
            let who = req
                .extensions()
                .get::<Identity>()
                .cloned()
                .unwrap_or_default();
            Ok::<_, Infallible>(who.to_string().into_response())
        });
        let svc = AuthenticatorLayer::new(|parts: &Parts| {
            parts
                .headers
                .contains_key("x-ok")
                .then(|| Identity::new("svc-fn"))
        })
        .layer(AuthLayer::<Authenticated>::stateless().layer(inner));

        let ok = Request::get("/")
            .header("x-ok", "1")
            .body(Body::empty())
            .unwrap();
        let res = timeout(T, svc.clone().oneshot(ok)).await.unwrap().unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(&to_bytes(res.into_body(), 64).await.unwrap()[..], b"svc-fn");

        let bad = Request::get("/").body(Body::empty()).unwrap();
        let res = timeout(T, svc.oneshot(bad)).await.unwrap().unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn rejection_display() {
        assert_eq!(AuthRejection::Unauthorized.to_string(), "unauthorized");
        assert_eq!(
            AuthRejection::MissingAuthenticator.to_string(),
            "authenticator layer missing"
        );
        assert!(format!("{:?}", AuthLayer::<Anonymous>::stateless()).contains("Anonymous"));
    }
}
