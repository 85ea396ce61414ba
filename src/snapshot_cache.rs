//! The encoded snapshot shared by every client connecting at the same state of the source.
//!
//! A reconnect storm (every client after a deploy) would otherwise copy and encode the whole
//! state once per client: 1.4 ms each with 1 000 sessions, on a runtime worker. The cache
//! keeps one entry per privacy policy slot (slot 0: everything visible; see
//! [`crate::privacy`]): the frames (the `snapshot` event and the `health` events that follow
//! it) of the last snapshot built, with the source's [`version`](crate::sink::SnapshotSource::version)
//! they were built at.
//!
//! # Why a hit is exact
//! The version is read *after* the client subscribed to the hub, as `snapshot()` would be
//! called. A source's version changes whenever its snapshot would, so equal versions mean the
//! state did not change between the moment the frames were built and this read: serving the
//! cached frames is serving a snapshot taken at the moment of the read, which the hand-over
//! contract allows (see [`SnapshotSource`](crate::sink::SnapshotSource)). An entry is stored only
//! when the version read before building equals the one read after, so it never mixes two
//! states. The key is a version rather than the snapshot's `seq` because a `health` event may
//! carry the very seq and `at` of the event before it and still change the state.
//!
//! Building runs under the cache's lock, so clients connecting together wait for one
//! encoding instead of each doing their own (the lock is never held across an `.await`).

use std::sync::{Arc, Mutex, PoisonError};

use crate::frame::TextFrame;

/// An encoded snapshot: its seq (where the hand-over starts) and its frames.
#[derive(Debug, Clone)]
pub(crate) struct EncodedSnapshot {
    pub(crate) seq: u64,
    pub(crate) frames: Arc<[TextFrame]>,
}

/// One entry per policy slot: the last snapshot built for it, by source version.
#[derive(Debug, Default)]
pub(crate) struct SnapshotCache {
    slots: Mutex<Vec<Option<(u64, EncodedSnapshot)>>>,
}

impl SnapshotCache {
    /// The snapshot for `version` and policy `slot`: the cached one when it was built at that
    /// version, else `build()`'s, stored when `version_after()` still equals `version`.
    /// Without a version (`None`: the source cannot tell) or a slot (a policy past the shared
    /// ones) every call builds and nothing is stored.
    pub(crate) fn get_or_build<E>(
        &self,
        version: Option<u64>,
        slot: Option<usize>,
        build: impl FnOnce() -> Result<EncodedSnapshot, E>,
        version_after: impl FnOnce() -> Option<u64>,
    ) -> Result<EncodedSnapshot, E> {
        let (Some(version), Some(index)) = (version, slot) else {
            return build();
        };
        // Plain data, consistent after every statement: a poisoned lock is used as is.
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots.len() <= index {
            slots.resize(index + 1, None);
        }
        let slot = &mut slots[index];
        if let Some((cached, snapshot)) = &*slot {
            if *cached == version {
                return Ok(snapshot.clone());
            }
        }
        let snapshot = build()?;
        if version_after() == Some(version) {
            *slot = Some((version, snapshot.clone()));
        }
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(seq: u64) -> Result<EncodedSnapshot, ()> {
        Ok(EncodedSnapshot {
            seq,
            frames: Arc::from(vec![TextFrame::from_text(b"{}")]),
        })
    }

    #[test]
    fn hits_only_at_the_version_it_was_built_at() {
        let cache = SnapshotCache::default();
        let builds = std::cell::Cell::new(0);
        let get = |version, after| {
            cache
                .get_or_build(
                    version,
                    Some(0),
                    || {
                        builds.set(builds.get() + 1);
                        encoded(version.unwrap_or(0))
                    },
                    || after,
                )
                .unwrap()
                .seq
        };
        assert_eq!(get(Some(1), Some(1)), 1);
        assert_eq!(get(Some(1), Some(1)), 1);
        assert_eq!(get(Some(2), Some(2)), 2);
        // The state moved while building: served, not kept.
        assert_eq!(get(Some(3), Some(4)), 3);
        assert_eq!(get(Some(3), Some(3)), 3);
        assert_eq!(get(None, None), 0);
        assert_eq!(get(None, None), 0);
        assert_eq!(builds.get(), 6);
    }
}
