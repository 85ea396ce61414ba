//! Privacy policies: which session fields a viewer may see.
//!
//! A [`Policy`] names the fields to redact ([`Field`]): Go's five choices, the working
//! directory, the branch, the model, the session id and the source, and this crate's
//! `machine` (the producer a broker node serving several producers labels sessions and
//! health reports with). The endpoint applies one
//! policy per viewer to everything that viewer receives: the `snapshot`, every `delta`,
//! `lifecycle` and `health` event, the events replayed on resume, the snapshot after a lag or
//! a producer restart, the [HTTP API](crate::WsLayer::http_api) and the subagents inside each
//! session. The store and the [`Publisher`](crate::Publisher) keep the full values; redaction
//! happens on the way out.
//!
//! ```
//! use agentwatch_ws::privacy::{Field, Policy};
//! use agentwatch_ws::WsLayer;
//!
//! // The same policy for everyone (what the dashboard's `--redact dir,branch` does):
//! let policy: Policy = "dir,branch".parse()?;
//! assert!(policy.redacts(Field::WorkingDir) && !policy.redacts(Field::Model));
//! let (router, publisher) = WsLayer::new().policy(policy).build::<()>("/ws");
//! # drop((router, publisher));
//! # Ok::<(), agentwatch_ws::InvalidSetting>(())
//! ```
//!
//! # One policy per viewer
//! [`WsLayer::policy_for`](crate::WsLayer::policy_for) chooses a policy from the
//! [`Identity`] the [`auth`](crate::WsLayer::auth) extractor returned, for
//! the WebSocket and the HTTP API alike; [`WsLayer::policy`](crate::WsLayer::policy) is the
//! default for everyone it does not choose for. A team sharing one dashboard, each token
//! with its own view:
//!
//! ```
//! use agentwatch_ws::admission::token::BearerToken;
//! use agentwatch_ws::privacy::{Field, Policy};
//! use agentwatch_ws::{Identity, WsLayer};
//! use axum::extract::FromRequestParts;
//! use axum::http::{StatusCode, request::Parts};
//!
//! /// A member of the team, known by their token.
//! struct Member(&'static str);
//!
//! impl<S: Send + Sync> FromRequestParts<S> for Member {
//!     type Rejection = StatusCode;
//!
//!     async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, StatusCode> {
//!         let BearerToken(token) = BearerToken::from_request_parts(parts, state)
//!             .await
//!             .map_err(|_| StatusCode::UNAUTHORIZED)?;
//!         match token.as_str() {
//!             "owner-token" => Ok(Member("owner")),
//!             "team-token" => Ok(Member("team")),
//!             _ => Err(StatusCode::UNAUTHORIZED),
//!         }
//!     }
//! }
//!
//! impl From<Member> for Identity {
//!     fn from(member: Member) -> Identity {
//!         Identity::new(member.0)
//!     }
//! }
//!
//! let (router, _publisher) = WsLayer::new()
//!     .auth::<Member>()
//!     // Everyone but the owner: no paths, no branches, pseudonymous ids.
//!     .policy(Policy::none().redact(Field::WorkingDir).redact(Field::Branch).redact(Field::SessionId))
//!     // The owner sees everything.
//!     .policy_for(|identity: &Identity| (identity.id() == "owner").then(Policy::none))
//!     .build::<()>("/ws");
//! # drop(router);
//! ```
//!
//! # What each field covers
//!
//! | [`Field`] | name | redacted | how |
//! |---|---|---|---|
//! | [`WorkingDir`](Field::WorkingDir) | `dir` | a session's `workingDir`; a `health` event's `lastError` | emptied |
//! | [`Branch`](Field::Branch) | `branch` | a session's `branch` | emptied |
//! | [`Model`](Field::Model) | `model` | the `model` of a session and of its subagents | emptied |
//! | [`SessionId`](Field::SessionId) | `id` | a session's `id`, its subagents' `id` and `parentId`, a delta's `removed` ids, a `lifecycle` event's `sessionId` | pseudonymised |
//! | | | a session's and its subagents' `slug` (a readable name) | emptied |
//! | [`Source`](Field::Source) | `source` | a session's and a `lifecycle` event's `source` | emptied |
//! | | | a `health` event's `source` (and the HTTP API's `/sources`, `/healthz`) | pseudonymised |
//! | | | a `health` event's `lastError` | emptied |
//! | [`Machine`](Field::Machine) | `machine` | a session's and a `health` event's `machine` (and the HTTP API's `/sessions`, `/healthz`, `/sources`) | pseudonymised |
//! | | | a `health` event's `lastError` | emptied |
//!
//! A `health` event's `lastError` is emptied under `dir`, `source` and `machine` (and `id`):
//! error texts may name the agents' log paths, which hold project paths, agent names and
//! session ids, and host names. Subagents carry no `machine` (their session's is theirs).
//! Every other field (activity, lifecycle state, token counts, the current tool's name,
//! counts, times) is never redacted, as in Go.
//!
//! # Pseudonyms, not blanks
//! A redacted session id is replaced by a pseudonym: 32 lower-case hex digits, the first
//! 128 bits of HMAC-SHA-256 under a key of the bytes `session`, a zero byte and the id
//! (a source name: `source`, a zero byte and the name; a machine name: `machine`, a zero byte
//! and the name), so a tool holding the key can compute them too. The three never share a
//! pseudonym: a machine called `claude` is not the source `claude`. A machine's pseudonym is
//! the same in every session and health report, so a page can still group sessions by
//! machine, and tell two machines' `claude` reports apart, without learning their names. The same id always gets the same
//! pseudonym under the same key, so a `delta` still names the session the viewer's
//! `snapshot` introduced, a `removed` id still removes it and `/sessions/{pseudonym}` still
//! finds it; without the key, a pseudonym says nothing about the id, and two keys give
//! pseudonyms that cannot be linked. The key is the server's
//! ([`WsLayer::pseudonym_key`](crate::WsLayer::pseudonym_key), random when the router is
//! built: stable for the server's life) unless the policy carries its own
//! ([`Policy::pseudonym_key`]): give each viewer group its own key and their pseudonyms
//! cannot be compared. Nodes behind one load balancer must share the server key, or a
//! client that reconnects to another node resumes with pseudonyms it never saw.
//!
//! Go's `session.Policy` empties the ids instead (and applies only to its HTTP API, the same
//! policy for everyone): every redacted session has the id `""`, which a WebSocket client
//! cannot apply a `delta` to.
//!
//! # What a viewer can still learn
//! A redacted viewer receives every event, at the moment it happens, with its `seq`: an event
//! whose only change is a redacted field still arrives (unchanged to that viewer), so the
//! timing of changes is visible. The HTTP API's `ETag` changes with the same events. Fields
//! no policy touches hint at some redacted ones, as in Go: `maxContextTokens` (and
//! `contextUtilization`) at the model's family, `currentTool` (`apply_patch`,
//! `read_many_files`) at the agent.
//!
//! # When a viewer's policy changes
//! A client holds what it was sent. One that reconnects with `?since=` after
//! [`policy_for`](crate::WsLayer::policy_for) started choosing another policy for it is not
//! resumed: it gets a snapshot under its new policy, which replaces what it held. The router
//! remembers the policy of the last 65 536 identities' connections; a node the identity never
//! connected to trusts the resume.
//!
//! # Cost
//! Each event is encoded once per distinct policy in use, on first need, and shared by every
//! viewer with that policy, as the unredacted bytes are; snapshots are cached per policy.
//! Up to 64 distinct policies are cached; viewers with a policy past that get their own
//! encodings (correct, one encoding per event per viewer) and a `warn` is logged once.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::admission::auth::Identity;
use crate::admission::invalid::InvalidSetting;
use crate::wire::{Event, Health, SessionState};

/// A field a [`Policy`] can redact: Go's five (`session.Policy`'s `Redact*` flags) and
/// [`Machine`](Field::Machine), this crate's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// The session's working directory (`workingDir`): a local path that names projects.
    WorkingDir,
    /// The git branch (`branch`): branch names carry feature names, tickets, user handles.
    Branch,
    /// The model (`model`), of the session and its subagents.
    Model,
    /// The session id: pseudonymised (see the [module docs](self)); the `slug` is emptied.
    SessionId,
    /// The agent the session belongs to (`source`).
    Source,
    /// The producer (machine) a session or a health report comes from (`machine`, set by
    /// broker nodes serving several producers): host names name people and places.
    /// Pseudonymised (see the [module docs](self)). Go has no such field.
    Machine,
}

impl Field {
    /// Every field, in the order of [`Policy`]'s text form.
    pub const ALL: [Field; 6] = [
        Field::WorkingDir,
        Field::Branch,
        Field::Model,
        Field::SessionId,
        Field::Source,
        Field::Machine,
    ];

    /// The field's name in a policy's text form: `dir`, `branch`, `model`, `id`, `source`,
    /// `machine`.
    pub const fn name(self) -> &'static str {
        match self {
            Field::WorkingDir => "dir",
            Field::Branch => "branch",
            Field::Model => "model",
            Field::SessionId => "id",
            Field::Source => "source",
            Field::Machine => "machine",
        }
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The key session ids are pseudonymised under (see the [module docs](self#pseudonyms-not-blanks)).
///
/// Its `Debug` never prints the key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PseudonymKey(Arc<[u8]>);

impl PseudonymKey {
    /// A key of these bytes. Any length works (HMAC hashes a long key first); use at least 16
    /// random bytes, since whoever can guess the key can test guessed ids against
    /// pseudonyms. Give every node that serves the same clients the same key.
    pub fn from_bytes(bytes: impl AsRef<[u8]>) -> Self {
        PseudonymKey(Arc::from(bytes.as_ref()))
    }

    /// 32 bytes from the operating system's random source, or `None` when it fails (it does
    /// not on Linux, macOS or Windows once booted).
    pub fn random() -> Option<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).ok()?;
        Some(Self::from_bytes(bytes))
    }
}

impl fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PseudonymKey(<secret>)")
    }
}

/// Which fields a viewer may not see: Go's `session.Policy`, applied per viewer (see the
/// [module docs](self)).
///
/// [`Policy::none`] (the `Default`) redacts nothing. Build one with [`redact`](Policy::redact)
/// or parse its text form: field names separated by commas (`dir`, `branch`, `model`, `id`,
/// `source`, `machine`; case, spaces and repeats ignored), `all` for every field, `none` or the empty
/// string for none. [`Display`](fmt::Display) writes the same form (`dir,branch`), never
/// the key.
///
/// ```
/// use agentwatch_ws::privacy::{Field, Policy};
///
/// let policy: Policy = "branch, dir".parse()?;
/// assert_eq!(policy, Policy::none().redact(Field::WorkingDir).redact(Field::Branch));
/// assert_eq!(policy.to_string(), "dir,branch");
/// assert_eq!("all".parse::<Policy>()?, Policy::all());
/// assert!("".parse::<Policy>()?.is_none());
/// assert!("dir,path".parse::<Policy>().is_err());
/// # Ok::<(), agentwatch_ws::InvalidSetting>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Policy {
    fields: u8,
    key: Option<PseudonymKey>,
}

impl Policy {
    /// Redacts nothing: what Go's zero `Policy` does.
    pub const fn none() -> Self {
        Policy {
            fields: 0,
            key: None,
        }
    }

    /// Redacts every [`Field`].
    pub fn all() -> Self {
        Field::ALL
            .into_iter()
            .fold(Self::none(), |policy, field| policy.redact(field))
    }

    /// This policy, also redacting `field`.
    #[must_use]
    pub fn redact(mut self, field: Field) -> Self {
        self.fields |= field.bit();
        self
    }

    /// Whether `field` is redacted.
    pub fn redacts(&self, field: Field) -> bool {
        self.fields & field.bit() != 0
    }

    /// Whether nothing is redacted.
    pub fn is_none(&self) -> bool {
        self.fields == 0
    }

    /// This policy, pseudonymising ids under `key` rather than the server's key: viewers
    /// under different keys cannot link their pseudonyms. Only matters with
    /// [`Field::SessionId`], [`Field::Source`] or [`Field::Machine`].
    #[must_use]
    pub fn pseudonym_key(mut self, key: PseudonymKey) -> Self {
        self.key = Some(key);
        self
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("redact", &format_args!("{self}"))
            .field("own_key", &self.key.is_some())
            .finish()
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_none() {
            return f.write_str("none");
        }
        let mut first = true;
        for field in Field::ALL.into_iter().filter(|&field| self.redacts(field)) {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            f.write_str(field.name())?;
        }
        Ok(())
    }
}

impl FromStr for Policy {
    type Err = InvalidSetting;

    fn from_str(text: &str) -> Result<Self, InvalidSetting> {
        let mut policy = Policy::none();
        for name in text
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            let name = name.to_ascii_lowercase();
            match name.as_str() {
                "all" => policy = Policy::all(),
                "none" => {}
                _ => {
                    let Some(field) = Field::ALL.into_iter().find(|f| f.name() == name) else {
                        return Err(InvalidSetting::new(
                            "policy",
                            &name,
                            "expected field names separated by commas: dir, branch, model, id, source, machine (or all, none)",
                        ));
                    };
                    policy = policy.redact(field);
                }
            }
        }
        Ok(policy)
    }
}

/// Chooses a viewer's policy from their identity; `None`: the default policy.
pub(crate) type Chooser = Arc<dyn Fn(&Identity) -> Option<Policy> + Send + Sync>;

/// How many distinct policies get shared encodings.
pub(crate) const MAX_SHARED_POLICIES: usize = 64;

/// A policy with its key: what turns an event into what one viewer may see.
pub(crate) struct Redactor {
    fields: u8,
    mac: Hmac<Sha256>,
}

impl Redactor {
    fn new(fields: u8, key: &PseudonymKey) -> Self {
        // HMAC takes keys of any length, so this never fails; were it to, a fixed key keeps
        // pseudonyms opaque to other servers without a panic.
        let mac = Hmac::<Sha256>::new_from_slice(&key.0)
            .unwrap_or_else(|_| <Hmac<Sha256> as hmac::digest::KeyInit>::new(&Default::default()));
        Redactor { fields, mac }
    }

    fn redacts(&self, field: Field) -> bool {
        self.fields & field.bit() != 0
    }

    /// The pseudonym of `value` in the `label` domain (ids and sources never share one):
    /// 32 hex digits. An empty value stays empty (nothing to hide, and a subagent without a
    /// parent keeps saying so).
    pub(crate) fn pseudonym(&self, label: &[u8], value: &str) -> String {
        if value.is_empty() {
            return String::new();
        }
        let mut mac = self.mac.clone();
        mac.update(label);
        mac.update(&[0]);
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        crate::hex::lower(&digest[..16])
    }

    /// The pseudonym of a session id.
    pub(crate) fn session_id(&self, id: &str) -> String {
        if self.redacts(Field::SessionId) {
            self.pseudonym(b"session", id)
        } else {
            id.to_owned()
        }
    }

    /// The name of a source as this viewer sees it in health reports.
    pub(crate) fn source_name(&self, source: &str) -> String {
        if self.redacts(Field::Source) {
            self.pseudonym(b"source", source)
        } else {
            source.to_owned()
        }
    }

    /// The name of a machine as this viewer sees it, in sessions and health reports.
    pub(crate) fn machine_name(&self, machine: &str) -> String {
        if self.redacts(Field::Machine) {
            self.pseudonym(b"machine", machine)
        } else {
            machine.to_owned()
        }
    }

    /// Whether error texts, which may name log paths (and hosts), are hidden.
    fn hides_errors(&self) -> bool {
        self.redacts(Field::WorkingDir)
            || self.redacts(Field::Source)
            || self.redacts(Field::SessionId)
            || self.redacts(Field::Machine)
    }

    /// Redacts one session in place.
    pub(crate) fn session(&self, state: &mut SessionState) {
        if self.redacts(Field::WorkingDir) {
            state.working_dir.clear();
        }
        if self.redacts(Field::Branch) {
            state.branch.clear();
        }
        if self.redacts(Field::Model) {
            state.model.clear();
            for sub in &mut state.subagents {
                sub.model.clear();
            }
        }
        if self.redacts(Field::SessionId) {
            state.id = self.pseudonym(b"session", &state.id);
            state.slug.clear();
            for sub in &mut state.subagents {
                sub.id = self.pseudonym(b"session", &sub.id);
                sub.parent_id = self.pseudonym(b"session", &sub.parent_id);
                sub.slug.clear();
            }
        }
        if self.redacts(Field::Source) {
            state.source.clear();
        }
        if self.redacts(Field::Machine) {
            state.machine = self.pseudonym(b"machine", &state.machine);
        }
    }

    /// Redacts one health report in place.
    pub(crate) fn health(&self, health: &mut Health) {
        health.source = self.source_name(&health.source);
        if self.redacts(Field::Machine) {
            health.machine = self.pseudonym(b"machine", &health.machine);
        }
        if self.hides_errors() {
            health.last_error.clear();
        }
    }

    /// The event as this viewer may see it.
    pub(crate) fn event(&self, event: &Event) -> Event {
        let mut out = event.clone();
        for state in out.sessions.iter_mut().chain(out.updates.iter_mut()) {
            self.session(state);
        }
        if self.redacts(Field::SessionId) {
            for id in &mut out.removed {
                *id = self.pseudonym(b"session", id);
            }
        }
        if let Some(lifecycle) = &mut out.lifecycle {
            lifecycle.session_id = self.session_id(&lifecycle.session_id);
            if self.redacts(Field::Source) {
                lifecycle.source.clear();
            }
        }
        if let Some(health) = &mut out.health {
            self.health(health);
        }
        out
    }
}

/// See `crate::fuzzing::redact`.
#[cfg(fuzzing)]
pub(crate) fn fuzz_redact(event: &Event, fields: u8) -> Event {
    Redactor::new(fields & 0x3f, &PseudonymKey::from_bytes(b"fuzzing key")).event(event)
}

/// One viewer's policy, resolved: `redactor` is `None` for a viewer who sees everything;
/// `slot` is where the shared encodings and cached snapshot for its policy are kept (0: the
/// full view; `None`: past [`MAX_SHARED_POLICIES`], encoded for this viewer alone).
#[derive(Clone)]
pub(crate) struct Viewer {
    pub(crate) redactor: Option<Arc<Redactor>>,
    pub(crate) slot: Option<usize>,
    /// Names the resolved policy (fields and key) without showing either: equal for equal
    /// policies in this process, different otherwise.
    pub(crate) fingerprint: u64,
    /// The policy's text form (`dir,branch`, `none`), for logs: never the key.
    pub(crate) policy: Arc<str>,
}

impl fmt::Debug for Viewer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Viewer")
            .field("policy", &self.policy)
            .field("slot", &self.slot)
            .finish()
    }
}

impl Viewer {
    /// A viewer who sees everything.
    pub(crate) fn full() -> Self {
        Viewer {
            redactor: None,
            slot: Some(0),
            fingerprint: 0,
            policy: Arc::from("none"),
        }
    }
}

/// How many identities [`Privacy`] remembers the policy of (see [`Privacy::viewer`]).
const REMEMBERED_IDENTITIES: usize = 65_536;

/// The endpoint's privacy settings and the policies seen so far, shared by the WebSocket
/// connections, the hub and the HTTP API of one router.
pub(crate) struct Privacy {
    default: Policy,
    chooser: Option<Chooser>,
    key: PseudonymKey,
    /// The distinct policies met so far, each with its redactor; index + 1 is its slot.
    seen: Mutex<Vec<(Policy, Arc<Redactor>)>>,
    /// The fingerprint of the policy each identity's last WebSocket got, by identity id.
    last: Mutex<HashMap<String, u64>>,
    /// Keys the fingerprints: random per router, so a fingerprint says nothing of a key.
    fingerprints: std::collections::hash_map::RandomState,
    warned: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for Privacy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Privacy")
            .field("default", &self.default)
            .field("per_viewer", &self.chooser.is_some())
            .finish_non_exhaustive()
    }
}

impl Privacy {
    pub(crate) fn new(default: Policy, chooser: Option<Chooser>, key: PseudonymKey) -> Self {
        Privacy {
            default,
            chooser,
            key,
            seen: Mutex::new(Vec::new()),
            last: Mutex::new(HashMap::new()),
            fingerprints: std::collections::hash_map::RandomState::new(),
            warned: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// No redaction at all: nobody's policy redacts anything.
    #[cfg(test)]
    pub(crate) fn off() -> Self {
        Privacy::new(Policy::none(), None, PseudonymKey::from_bytes([0u8; 32]))
    }

    /// Whether any viewer may be redacted: the hub then keeps each event beside its bytes,
    /// to encode redacted variants on demand.
    pub(crate) fn is_configured(&self) -> bool {
        self.chooser.is_some() || !self.default.is_none()
    }

    /// How many policies have shared slots so far (the length a frame's variant table needs).
    pub(crate) fn slots(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The viewer for `identity`: the chooser's policy, else the default.
    pub(crate) fn viewer(&self, identity: &Identity) -> Viewer {
        let chosen = self.chooser.as_ref().and_then(|choose| choose(identity));
        self.viewer_with(chosen.as_ref().unwrap_or(&self.default))
    }

    /// Records that `identity` connects as `viewer`; `false` when its last connection (that
    /// this router remembers) had another policy. A client resuming with `since` after its
    /// policy changed holds events redacted otherwise (or not at all): it must start over
    /// from a snapshot. The last policy of up to 65 536 identities is remembered; past
    /// that, or on a node the identity never connected to, a resume is trusted.
    pub(crate) fn same_policy_as_before(&self, identity: &Identity, viewer: &Viewer) -> bool {
        if !self.is_configured() {
            return true;
        }
        // Plain data, consistent after every statement.
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.len() >= REMEMBERED_IDENTITIES && !last.contains_key(identity.id()) {
            last.clear();
        }
        match last.insert(identity.id().to_owned(), viewer.fingerprint) {
            Some(before) => before == viewer.fingerprint,
            None => true,
        }
    }

    fn viewer_with(&self, policy: &Policy) -> Viewer {
        if policy.is_none() {
            return Viewer::full();
        }
        let key = policy.key.clone().unwrap_or_else(|| self.key.clone());
        let resolved = Policy {
            fields: policy.fields,
            key: Some(key.clone()),
        };
        // 0 is the full view's.
        let fingerprint = std::hash::BuildHasher::hash_one(&self.fingerprints, &resolved).max(1);
        let text: Arc<str> = Arc::from(policy.to_string());
        // Plain data, consistent after every statement.
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = seen.iter().position(|(known, _)| *known == resolved) {
            return Viewer {
                redactor: Some(seen[i].1.clone()),
                slot: Some(i + 1),
                fingerprint,
                policy: text,
            };
        }
        let redactor = Arc::new(Redactor::new(resolved.fields, &key));
        if seen.len() < MAX_SHARED_POLICIES {
            seen.push((resolved, redactor.clone()));
            return Viewer {
                redactor: Some(redactor),
                slot: Some(seen.len()),
                fingerprint,
                policy: text,
            };
        }
        if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(
                max = MAX_SHARED_POLICIES,
                "more distinct privacy policies than are shared: later ones are encoded per viewer"
            );
        }
        Viewer {
            redactor: Some(redactor),
            slot: None,
            fingerprint,
            policy: text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{EventType, LifecycleEvent, SubagentState};

    fn state() -> SessionState {
        SessionState {
            id: "sess-abc".into(),
            source: "claude".into(),
            slug: "my-feature".into(),
            model: "claude-opus-4-6".into(),
            working_dir: "/home/user/projects/secret".into(),
            branch: "feat/secret".into(),
            current_tool: "Bash".into(),
            message_count: 10,
            subagents: vec![SubagentState {
                id: "sub-1".into(),
                parent_id: "sess-abc".into(),
                slug: "helper".into(),
                model: "haiku".into(),
                ..SubagentState::default()
            }],
            machine: "alice-laptop".into(),
            ..SessionState::default()
        }
    }

    fn redactor(policy: &str, key: &[u8]) -> Redactor {
        let policy: Policy = policy.parse().unwrap();
        Redactor::new(policy.fields, &PseudonymKey::from_bytes(key))
    }

    #[test]
    fn each_field_redacts_its_values_only() {
        let full = state();
        for field in Field::ALL {
            let r = Redactor::new(field.bit(), &PseudonymKey::from_bytes(b"k"));
            let mut s = full.clone();
            r.session(&mut s);
            assert_eq!(
                s.working_dir.is_empty(),
                field == Field::WorkingDir,
                "{field}"
            );
            assert_eq!(s.branch.is_empty(), field == Field::Branch, "{field}");
            assert_eq!(s.model.is_empty(), field == Field::Model, "{field}");
            assert_eq!(
                s.subagents[0].model.is_empty(),
                field == Field::Model,
                "{field}"
            );
            assert_eq!(s.id != full.id, field == Field::SessionId, "{field}");
            assert_eq!(s.slug.is_empty(), field == Field::SessionId, "{field}");
            assert_eq!(s.source.is_empty(), field == Field::Source, "{field}");
            assert_eq!(
                s.machine != full.machine,
                field == Field::Machine,
                "{field}"
            );
            assert_eq!(s.current_tool, "Bash");
            assert_eq!(s.message_count, 10);
        }
    }

    #[test]
    fn pseudonyms_are_stable_per_key_and_link_parent_and_child() {
        let a = redactor("id", b"key-a");
        let b = redactor("id", b"key-b");
        let mut s = state();
        a.session(&mut s);
        assert_eq!(s.id.len(), 32);
        assert!(s.id.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(s.id, a.pseudonym(b"session", "sess-abc"));
        assert_eq!(s.subagents[0].parent_id, s.id);
        assert_ne!(s.id, b.pseudonym(b"session", "sess-abc"));
        assert_ne!(
            a.pseudonym(b"session", "claude"),
            a.pseudonym(b"source", "claude")
        );
        assert_eq!(a.pseudonym(b"session", ""), "");

        // A machine's pseudonym: its own domain, the same in sessions and health reports.
        let a = redactor("machine", b"key-a");
        let mut s = state();
        a.session(&mut s);
        assert_eq!(s.machine, a.pseudonym(b"machine", "alice-laptop"));
        assert_eq!(s.machine.len(), 32);
        assert_ne!(s.machine, a.pseudonym(b"source", "alice-laptop"));
        let mut h = Health {
            source: "claude".into(),
            machine: "alice-laptop".into(),
            last_error: "dial alice-laptop.local: refused".into(),
            ..Health::default()
        };
        a.health(&mut h);
        assert_eq!(h.machine, s.machine);
        assert_eq!((h.source.as_str(), h.last_error.as_str()), ("claude", ""));
        assert_eq!(a.machine_name("alice-laptop"), s.machine);
        assert_eq!(redactor("source", b"key-a").machine_name("m"), "m");
        // No machine: nothing to hide, and nothing appears.
        let mut bare = SessionState::default();
        a.session(&mut bare);
        assert_eq!(bare.machine, "");
    }

    #[test]
    fn events_are_redacted_everywhere_an_id_or_source_appears() {
        let r = redactor("id,source,dir,machine", b"k");
        let event = Event {
            seq: 3,
            kind: EventType::Delta,
            updates: vec![state()],
            removed: vec!["gone-1".into()],
            ..Event::default()
        };
        let out = r.event(&event);
        assert_eq!(out.removed, vec![r.pseudonym(b"session", "gone-1")]);
        assert_eq!(out.updates[0].source, "");
        assert_eq!(
            out.updates[0].machine,
            r.pseudonym(b"machine", "alice-laptop")
        );
        let snapshot = r.event(&Event::snapshot(4, vec![state()]));
        assert_eq!(
            snapshot.sessions[0].machine,
            r.pseudonym(b"machine", "alice-laptop")
        );
        let lifecycle = Event {
            lifecycle: Some(LifecycleEvent {
                session_id: "sess-abc".into(),
                source: "codex".into(),
                ..LifecycleEvent::default()
            }),
            ..Event::default()
        };
        let out = r.event(&lifecycle).lifecycle.unwrap();
        assert_eq!(out.session_id, r.pseudonym(b"session", "sess-abc"));
        assert_eq!(out.source, "");
        let health = Event {
            health: Some(Health {
                source: "codex".into(),
                last_error: "open <path>: denied".into(),
                machine: "build-box".into(),
                ..Health::default()
            }),
            ..Event::default()
        };
        let out = r.event(&health).health.unwrap();
        assert_eq!(out.source, r.pseudonym(b"source", "codex"));
        assert_eq!(out.machine, r.pseudonym(b"machine", "build-box"));
        assert_eq!(out.last_error, "");
    }

    #[test]
    fn text_form_round_trips_and_refuses_unknown_names() {
        for field in Field::ALL {
            let policy: Policy = field.name().parse().unwrap();
            assert!(policy.redacts(field));
            assert_eq!(policy.to_string(), field.name());
        }
        assert_eq!(
            Policy::all().to_string(),
            "dir,branch,model,id,source,machine"
        );
        assert_eq!(
            "Machine, source".parse::<Policy>().unwrap(),
            Policy::none().redact(Field::Source).redact(Field::Machine)
        );
        assert_eq!("machine".parse::<Policy>().unwrap().to_string(), "machine");
        assert!("all".parse::<Policy>().unwrap().redacts(Field::Machine));
        assert!("machines".parse::<Policy>().is_err());
        assert_eq!(" DIR , dir ".parse::<Policy>().unwrap().to_string(), "dir");
        assert_eq!(Policy::none().to_string(), "none");
        let error = "dir,secret-token".parse::<Policy>().unwrap_err();
        assert_eq!(error.setting(), "policy");
        let keyed = Policy::all().pseudonym_key(PseudonymKey::from_bytes(b"hunter2"));
        assert!(!format!("{keyed:?}").contains("hunter2"));
        assert!(!keyed.to_string().contains("hunter2"));
    }

    #[test]
    fn viewers_share_a_slot_per_distinct_policy_and_key() {
        let privacy = Privacy::new(
            Policy::none().redact(Field::Branch),
            Some(Arc::new(|identity: &Identity| {
                (identity.id() == "owner").then(Policy::none)
            })),
            PseudonymKey::from_bytes(b"server"),
        );
        assert!(privacy.viewer(&Identity::new("owner")).redactor.is_none());
        let a = privacy.viewer(&Identity::new("a"));
        let b = privacy.viewer(&Identity::anonymous());
        assert_eq!((a.slot, b.slot), (Some(1), Some(1)));
        // The server's key, given explicitly, is the same policy.
        let same = privacy.viewer_with(
            &Policy::none()
                .redact(Field::Branch)
                .pseudonym_key(PseudonymKey::from_bytes(b"server")),
        );
        assert_eq!(same.slot, Some(1));
        let other = privacy.viewer_with(
            &Policy::none()
                .redact(Field::Branch)
                .pseudonym_key(PseudonymKey::from_bytes(b"other")),
        );
        assert_eq!(other.slot, Some(2));
        for n in 0..100u32 {
            let key = PseudonymKey::from_bytes(n.to_le_bytes());
            let viewer = privacy.viewer_with(&Policy::all().pseudonym_key(key));
            assert!(viewer.redactor.is_some());
        }
        assert_eq!(privacy.slots(), MAX_SHARED_POLICIES);
    }
}
