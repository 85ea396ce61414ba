//! The state at one stream position: what a checkpoint and a resync entry carry.

use crate::sink::Snapshot;
use crate::wire::{self, Event, Health, Timestamp};

use super::{BrokerError, EntryId, Record};

/// The state at one stream entry, from which a node starts without replaying the stream from
/// its beginning.
///
/// Redis: the hash `<stream>:checkpoint` with fields `seq`, `entry`, `snapshot` and `health`
/// (see the [module docs](super)).
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The `seq` of the last event reflected.
    pub seq: u64,
    /// The id of the stream entry holding that event: a node continues right after it.
    pub entry: EntryId,
    /// A `snapshot` event with every session at `seq`, Go-exact JSON.
    pub snapshot: Vec<u8>,
    /// Every source's latest health at `seq`, as a Go-exact JSON array.
    pub health: Vec<u8>,
}

/// A [`Snapshot`] encoded for the broker: the payload of a checkpoint or of a resync entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Image {
    pub(crate) seq: u64,
    pub(crate) snapshot: Vec<u8>,
    pub(crate) health: Vec<u8>,
}

impl Image {
    /// Encodes `snapshot` as a `snapshot` event stamped now, and its health list.
    pub(crate) fn encode(snapshot: Snapshot) -> Result<Image, serde_json::Error> {
        let event = Event::snapshot(snapshot.seq, snapshot.sessions);
        Ok(Image {
            seq: snapshot.seq,
            snapshot: wire::to_vec(&event)?,
            health: wire::to_vec(&snapshot.health)?,
        })
    }

    /// The resync record carrying this image.
    pub(crate) fn record(&self) -> Record {
        Record {
            seq: self.seq,
            event: self.snapshot.clone(),
            health: Some(self.health.clone()),
        }
    }

    pub(crate) fn at(self, entry: EntryId) -> Checkpoint {
        Checkpoint {
            seq: self.seq,
            entry,
            snapshot: self.snapshot,
            health: self.health,
        }
    }
}

/// A decoded image: the `snapshot` event and the health reports.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct State {
    pub(crate) snapshot: Event,
    pub(crate) health: Vec<Health>,
}

impl State {
    pub(crate) fn decode(snapshot: &[u8], health: &[u8]) -> Result<State, BrokerError> {
        let snapshot = Event::from_json(snapshot)
            .map_err(|e| BrokerError::Malformed(format!("snapshot: {e}")))?;
        let health = if health.is_empty() {
            Vec::new()
        } else {
            serde_json::from_slice(health)
                .map_err(|e| BrokerError::Malformed(format!("health: {e}")))?
        };
        Ok(State { snapshot, health })
    }

    /// The events that turn a store holding the health reports `current` into this state:
    /// one `health` event (the snapshot's `seq` and `at`) per report that differs, then the
    /// snapshot. The snapshot comes last so that a hub's replay window, reset by the repeated
    /// `seq`, starts with it: a client resuming from just before it gets the whole state.
    pub(crate) fn events(self, current: &[Health]) -> (Vec<Event>, Event) {
        let seq = self.snapshot.seq;
        let at: Timestamp = self.snapshot.at;
        let health = self
            .health
            .into_iter()
            .filter(|h| !current.contains(h))
            .map(|h| {
                let mut event = Event::health(seq, h);
                event.at = at;
                event
            })
            .collect();
        (health, self.snapshot)
    }
}

impl Checkpoint {
    pub(crate) fn state(&self) -> Result<State, BrokerError> {
        State::decode(&self.snapshot, &self.health)
    }
}

#[cfg(test)]
mod tests {
    // Here unwrap() is an assertion on values the test itself built.
    use super::*;
    use crate::wire::{HealthStatus, SessionState};

    #[test]
    fn image_round_trips_and_emits_changed_health_only() {
        let health = |source: &str, status: HealthStatus| Health {
            source: source.into(),
            status,
            ..Default::default()
        };
        let snapshot = Snapshot {
            seq: 9,
            sessions: vec![SessionState {
                id: "a".into(),
                ..Default::default()
            }],
            health: vec![
                health("codex", HealthStatus::from("healthy")),
                health("claude-code", HealthStatus::from("degraded")),
            ],
        };
        let image = Image::encode(snapshot.clone()).unwrap();
        let state = image.clone().at("1-0".into()).state().unwrap();
        assert_eq!(state.snapshot.seq, 9);
        assert_eq!(state.snapshot.sessions, snapshot.sessions);
        assert_eq!(state.health, snapshot.health);
        let (health_events, snapshot_event) =
            state.events(&[health("codex", HealthStatus::from("healthy"))]);
        assert_eq!(health_events.len(), 1);
        assert_eq!(
            health_events[0].health.as_ref().unwrap().source,
            "claude-code"
        );
        assert_eq!(
            (health_events[0].seq, health_events[0].at),
            (9, snapshot_event.at)
        );
    }
}
