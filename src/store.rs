//! The embedded session store: folds events into a map of sessions and hands out snapshots.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::sink::{EventSink, SinkError, Snapshot, SnapshotSource};
use crate::wire::{Event, EventType, Health, SessionState, Timestamp};

/// The current state of every session, kept from the event stream itself.
///
/// Crate-private: [`Publisher`](crate::Publisher) owns one and feeds it before the hub. It is
/// an [`EventSink`] and the [`SnapshotSource`] a connecting client's snapshot comes from.
/// Cloning is cheap: clones share one map.
///
/// Folding rules, for an event of any type: a `snapshot` event replaces every session with its
/// `sessions`; then each of `updates` is upserted by id and each id in `removed` deleted; an
/// event's `health` replaces the last report of its (`machine`, `source`) pair: two machines'
/// `claude` reports are two entries, a report without a machine is its source's (reports are
/// kept across snapshots, which carry none). The store remembers the seq and the `at` of the last event it handled, of any
/// type (a new store is at seq 0, with no `at`), and snapshots carry both: the seq makes the
/// hand-over to the live stream exact, the `at` lets a client resume from the snapshot (see
/// [`Snapshot::at`]).
#[derive(Clone, Default)]
pub(crate) struct SessionStore {
    inner: Arc<RwLock<State>>,
}

#[derive(Default)]
struct State {
    /// Events handled: what [`SnapshotSource::version`] reports.
    version: u64,
    seq: u64,
    /// The `at` of the event `seq`, once one was handled.
    at: Option<Timestamp>,
    /// Insertion order is kept so snapshots list sessions in the order they were discovered
    /// (machine by machine, when sessions carry one: see `insert_in_order`).
    order: Vec<String>,
    sessions: HashMap<String, SessionState>,
    /// The latest health per (machine, source), in the order the pairs first reported.
    health: Vec<Health>,
}

impl State {
    fn upsert(&mut self, session: &SessionState) {
        match self.sessions.get_mut(&session.id) {
            Some(existing) if existing.machine == session.machine => existing.clone_from(session),
            Some(_) => {
                // Moved to another machine: to the end of that machine's sessions.
                self.order.retain(|id| *id != session.id);
                self.sessions.insert(session.id.clone(), session.clone());
                self.insert_in_order(session);
            }
            None => {
                self.sessions.insert(session.id.clone(), session.clone());
                self.insert_in_order(session);
            }
        }
    }

    /// Puts a new session after the last one of its machine (machines in name order): the
    /// order is the order sessions were discovered, machine by machine, so every broker node
    /// lists them alike however it learnt them; without machines, plain discovery order.
    fn insert_in_order(&mut self, session: &SessionState) {
        let sessions = &self.sessions;
        let at = self.order.partition_point(|id| {
            sessions.get(id).map_or("", |s| s.machine.as_str()) <= session.machine.as_str()
        });
        self.order.insert(at, session.id.clone());
    }

    /// Keeps `health` as the latest report of its (machine, source) pair; a new pair goes
    /// after the last report of its machine (machines in name order), as sessions do.
    fn report(&mut self, health: &Health) {
        match self
            .health
            .iter_mut()
            .find(|h| h.source == health.source && h.machine == health.machine)
        {
            Some(existing) => existing.clone_from(health),
            None => {
                let at = self
                    .health
                    .partition_point(|h| h.machine.as_str() <= health.machine.as_str());
                self.health.insert(at, health.clone());
            }
        }
    }

    fn remove_all(&mut self, ids: &[String]) {
        let before = self.sessions.len();
        for id in ids {
            self.sessions.remove(id);
        }
        if self.sessions.len() != before {
            let sessions = &self.sessions;
            self.order.retain(|id| sessions.contains_key(id));
        }
    }
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("SessionStore")
            .field("seq", &state.seq)
            .field("sessions", &state.sessions.len())
            .finish()
    }
}

impl SessionStore {
    /// An empty store at seq 0.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The seq of the last event handled (0 for a new store).
    pub(crate) fn seq(&self) -> u64 {
        self.read(|s| s.seq)
    }

    /// A copy of one session.
    pub(crate) fn get(&self, id: &str) -> Option<SessionState> {
        self.read(|s| s.sessions.get(id).cloned())
    }

    /// A copy of every session, sorted by id (byte order of the UTF-8 ids).
    pub(crate) fn sessions_by_id(&self) -> Vec<SessionState> {
        let mut sessions: Vec<SessionState> = self.read(|s| s.sessions.values().cloned().collect());
        sessions.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        sessions
    }

    /// The number of events handled (the store's version) with every session sorted by id,
    /// read under one lock so the two agree.
    pub(crate) fn versioned_sessions(&self) -> (u64, Vec<SessionState>) {
        let (version, mut sessions) =
            self.read(|s| (s.version, s.sessions.values().cloned().collect::<Vec<_>>()));
        sessions.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        (version, sessions)
    }

    /// The version with one session, read under one lock.
    pub(crate) fn versioned_session(&self, id: &str) -> (u64, Option<SessionState>) {
        self.read(|s| (s.version, s.sessions.get(id).cloned()))
    }

    /// The version with the latest health report of every (machine, source) pair, in the
    /// order the pairs first reported, read under one lock.
    pub(crate) fn versioned_health(&self) -> (u64, Vec<Health>) {
        self.read(|s| (s.version, s.health.clone()))
    }

    fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters more than losing the whole store would, so a poisoned lock is used as is.
        f(&self.inner.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl EventSink for SessionStore {
    fn handle_event(&self, event: &Event) -> Result<(), SinkError> {
        let mut state = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if event.kind == EventType::Snapshot {
            state.sessions.clear();
            state.order.clear();
            for session in &event.sessions {
                state.upsert(session);
            }
        }
        for session in &event.updates {
            state.upsert(session);
        }
        state.remove_all(&event.removed);
        if let Some(health) = &event.health {
            state.report(health);
        }
        state.seq = event.seq;
        state.at = Some(event.at);
        state.version += 1;
        Ok(())
    }
}

impl SnapshotSource for SessionStore {
    fn snapshot(&self) -> Snapshot {
        self.read(|state| Snapshot {
            seq: state.seq,
            at: state.at,
            sessions: state
                .order
                .iter()
                .filter_map(|id| state.sessions.get(id).cloned())
                .collect(),
            health: state.health.clone(),
        })
    }

    /// The number of events handled: every event may change the state, so clients
    /// connecting between two events share one encoded snapshot. Clones share it.
    fn version(&self) -> Option<u64> {
        Some(self.read(|state| state.version))
    }
}

#[cfg(test)]
mod tests {
    // Here unwrap() and expect() are assertions on values the test itself built: a failure
    // fails the test, with the message. The module is built for `cargo test` only.
    use super::*;

    fn session(id: &str, messages: i64) -> SessionState {
        SessionState {
            id: id.into(),
            message_count: messages,
            ..Default::default()
        }
    }

    /// The ids of a snapshot, in its order.
    fn snapshot_ids(store: &SessionStore) -> Vec<String> {
        store
            .snapshot()
            .sessions
            .into_iter()
            .map(|s| s.id)
            .collect()
    }

    #[test]
    fn folds_updates_removals_and_snapshots() {
        let store = SessionStore::new();
        assert_eq!(store.snapshot(), Snapshot::default());
        store
            .handle_event(&Event::delta(
                1,
                vec![session("a", 1), session("b", 1)],
                vec![],
            ))
            .unwrap();
        store
            .handle_event(&Event::delta(
                2,
                vec![session("a", 2)],
                vec!["b".into(), "zz".into()],
            ))
            .unwrap();
        let snap = store.snapshot();
        assert_eq!(snap.seq, 2);
        assert_eq!(snap.sessions, vec![session("a", 2)]);
        store
            .handle_event(&Event::health(3, Default::default()))
            .unwrap();
        assert_eq!(store.seq(), 3);
        store
            .handle_event(&Event::snapshot(4, vec![session("c", 0), session("d", 0)]))
            .unwrap();
        let ids = snapshot_ids(&store);
        assert_eq!(ids, ["c", "d"]);
        assert_eq!(store.get("c"), Some(session("c", 0)));
    }

    #[test]
    fn snapshot_keeps_discovery_order() {
        let store = SessionStore::new();
        for (seq, id) in ["z", "a", "m"].into_iter().enumerate() {
            store
                .handle_event(&Event::delta(seq as u64 + 1, vec![session(id, 0)], vec![]))
                .unwrap();
        }
        store
            .handle_event(&Event::delta(4, vec![session("a", 5)], vec![]))
            .unwrap();
        let ids = snapshot_ids(&store);
        assert_eq!(ids, ["z", "a", "m"]);
        let by_id: Vec<String> = store.sessions_by_id().into_iter().map(|s| s.id).collect();
        assert_eq!(by_id, ["a", "m", "z"]);
    }

    #[test]
    fn sessions_of_several_machines_are_listed_machine_by_machine() {
        let store = SessionStore::new();
        let on = |id: &str, machine: &str| SessionState {
            machine: machine.into(),
            ..session(id, 0)
        };
        // Discovered interleaved, listed by machine (in name order), each in discovery order:
        // what a node built later from each machine's checkpoint lists too.
        for (seq, (id, machine)) in [("b1", "bob"), ("a1", "ana"), ("b0", "bob"), ("a0", "ana")]
            .into_iter()
            .enumerate()
        {
            store
                .handle_event(&Event::delta(seq as u64 + 1, vec![on(id, machine)], vec![]))
                .unwrap();
        }
        assert_eq!(snapshot_ids(&store), ["a1", "a0", "b1", "b0"]);
        // A session moving to another machine goes to the end of that machine's.
        store
            .handle_event(&Event::delta(5, vec![on("b1", "ana")], vec![]))
            .unwrap();
        assert_eq!(snapshot_ids(&store), ["a1", "a0", "b1", "b0"]);
        store
            .handle_event(&Event::delta(6, vec![on("a1", "bob")], vec![]))
            .unwrap();
        assert_eq!(snapshot_ids(&store), ["a0", "b1", "b0", "a1"]);
        // Health reports likewise.
        for (seq, (source, machine)) in [("codex", "bob"), ("claude", "ana"), ("claude", "bob")]
            .into_iter()
            .enumerate()
        {
            let report = Health {
                source: source.into(),
                machine: machine.into(),
                ..Default::default()
            };
            store
                .handle_event(&Event::health(7 + seq as u64, report))
                .unwrap();
        }
        let pairs: Vec<(String, String)> = store
            .snapshot()
            .health
            .into_iter()
            .map(|h| (h.machine, h.source))
            .collect();
        assert_eq!(
            pairs,
            [
                ("ana".to_string(), "claude".to_string()),
                ("bob".to_string(), "codex".to_string()),
                ("bob".to_string(), "claude".to_string())
            ]
        );
    }

    #[test]
    fn reports_are_kept_across_snapshot_events() {
        let store = SessionStore::new();
        let health = Health {
            source: "claude".into(),
            status: crate::wire::HealthStatus::Degraded,
            ..Default::default()
        };
        store.handle_event(&Event::health(1, health)).unwrap();
        store
            .handle_event(&Event::snapshot(2, vec![session("a", 0)]))
            .unwrap();
        let snapshot = store.snapshot();
        assert_eq!(snapshot.seq, 2);
        assert_eq!(snapshot.health.len(), 1);
        assert_eq!(
            snapshot.health[0].status,
            crate::wire::HealthStatus::Degraded
        );
    }

    #[test]
    fn health_is_kept_per_machine_and_source() {
        let store = SessionStore::new();
        let report = |machine: &str, source: &str, status: &str| Health {
            source: source.into(),
            machine: machine.into(),
            status: crate::wire::HealthStatus::from(status),
            ..Default::default()
        };
        let events = [
            report("laptop", "claude", "healthy"),
            report("desk", "claude", "degraded"),
            report("", "claude", "healthy"),
            report("laptop", "codex", "healthy"),
            // Replaces laptop's claude report in place, and only it.
            report("laptop", "claude", "failed"),
        ];
        for (seq, health) in events.into_iter().enumerate() {
            store
                .handle_event(&Event::health(seq as u64 + 1, health))
                .unwrap();
        }
        let (_, reports) = store.versioned_health();
        let kept: Vec<(&str, &str, &str)> = reports
            .iter()
            .map(|h| (h.machine.as_str(), h.source.as_str(), h.status.as_str()))
            .collect();
        // Machine by machine (in name order), each in the order its pairs first reported.
        assert_eq!(
            kept,
            [
                ("", "claude", "healthy"),
                ("desk", "claude", "degraded"),
                ("laptop", "claude", "failed"),
                ("laptop", "codex", "healthy"),
            ]
        );
        assert_eq!(store.snapshot().health, reports);
    }
}
