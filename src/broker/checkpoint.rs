//! The state at one stream position: what a checkpoint and a resync entry carry.

use crate::sink::Snapshot;
use crate::wire::{self, Event, Health, Timestamp};

use super::{BrokerError, EntryId, Record};

/// One machine's state at one of its stream entries, from which a node starts without
/// replaying the stream from its beginning.
///
/// Redis: the hash `<stream>:checkpoint:<machine>` with fields `seq`, `entry`, `snapshot` and
/// `health` (see the [module docs](super)).
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The machine (producer name) whose state this is.
    pub machine: String,
    /// The stream `seq` of the entry reflected last.
    pub seq: u64,
    /// The id of that entry: a node applies the machine's entries after it.
    pub entry: EntryId,
    /// A `snapshot` event with every session of the machine, Go-exact JSON, as the producer
    /// encoded it (its own `seq`; no `machine` on the sessions: nodes set it).
    pub snapshot: Vec<u8>,
    /// Every source's latest health on the machine, as a Go-exact JSON array.
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
    /// Encodes `snapshot` as a `snapshot` event, and its health list. The event's `at` is the
    /// `at` of the last event the snapshot reflects (now, when unknown), as for the snapshots
    /// clients get: a node built from it holds the producer's position, and a client can resume
    /// from that position on any node.
    pub(crate) fn encode(snapshot: Snapshot) -> Result<Image, serde_json::Error> {
        let mut event = Event::snapshot(snapshot.seq, snapshot.sessions);
        event.at = snapshot.at.unwrap_or_else(Timestamp::now);
        Ok(Image {
            seq: snapshot.seq,
            snapshot: wire::to_vec(&event)?,
            health: wire::to_vec(&snapshot.health)?,
        })
    }

    /// The resync record carrying this image.
    pub(crate) fn record(&self) -> Record {
        Record {
            event: self.snapshot.clone(),
            health: Some(self.health.clone()),
        }
    }

    /// The checkpoint of `machine` at the entry `entry` of stream seq `seq`.
    pub(crate) fn at(self, machine: &str, entry: EntryId, seq: u64) -> Checkpoint {
        Checkpoint {
            machine: machine.to_owned(),
            seq,
            entry,
            snapshot: self.snapshot,
            health: self.health,
        }
    }
}

/// The record of a *gone* entry: a `health` event, now, whose report (`failed`, `reason` as
/// its `lastError`) every source of the machine takes. `None` if it cannot be encoded (it
/// always can: a fixed shape).
pub(crate) fn gone_record(reason: String) -> Option<Record> {
    let now = Timestamp::now();
    let mut event = Event::health(
        0,
        Health {
            status: crate::wire::HealthStatus::Failed,
            last_error: reason,
            updated_at: now,
            ..Health::default()
        },
    );
    event.at = now;
    wire::to_vec(&event).ok().map(|event| Record {
        event,
        health: None,
    })
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
            crate::wire::from_slice(health)
                .map_err(|e| BrokerError::Malformed(format!("health: {e}")))?
        };
        Ok(State { snapshot, health })
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
    fn image_round_trips() {
        let health = |source: &str, status: HealthStatus| Health {
            source: source.into(),
            status,
            ..Default::default()
        };
        let last_at = Timestamp::parse("2026-11-29T10:00:00.123456789Z").unwrap();
        let snapshot = Snapshot {
            seq: 9,
            at: Some(last_at),
            sessions: vec![SessionState {
                id: "a".into(),
                ..Default::default()
            }],
            health: vec![
                health("codex", HealthStatus::from("healthy")),
                health("claude", HealthStatus::from("degraded")),
            ],
        };
        let image = Image::encode(snapshot.clone()).unwrap();
        let state = image.clone().at("m", "1-0".into(), 1).state().unwrap();
        assert_eq!(state.snapshot.seq, 9);
        assert_eq!(
            state.snapshot.at, last_at,
            "stamped with the last event's at"
        );
        assert_eq!(state.snapshot.sessions, snapshot.sessions);
        assert_eq!(state.health, snapshot.health);
    }
}
