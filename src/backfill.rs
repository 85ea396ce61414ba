//! Resuming a client from before the replay window: the seam through which a source that
//! still holds older events (a `hub::Backfill`: the broker `Follower`, from its stream)
//! serves them.

use crate::hub::{Frame, Hub, Position};
use crate::wire;

/// For a client resuming from `since` that `hub`'s window no longer covers: the missed events
/// its backfill source still has, framed, and the position after them, from which
/// [`Hub::subscribe`] continues (the window must still cover that one, or the client gets a
/// snapshot as usual). `(since, [])` when there is nothing to add.
pub(crate) async fn backfill(hub: &Hub, since: Option<Position>) -> (Option<Position>, Vec<Frame>) {
    let nothing = (since, Vec::new());
    let (Some(position), Some(source)) = (since, hub.backfill_source()) else {
        return nothing;
    };
    if hub.covers(position) {
        return nothing;
    }
    let Some(events) = source.events_after(position).await else {
        return nothing;
    };
    let Some(last) = events.last() else {
        return nothing;
    };
    let after = Position {
        seq: last.seq,
        at: Some(last.at),
    };
    let mut frames = Vec::with_capacity(events.len());
    for event in &events {
        let Ok(text) = hub.counters().encode(|buf| wire::to_writer(buf, event)) else {
            return nothing;
        };
        frames.push(Frame {
            seq: event.seq,
            text,
            restart: false,
            // Framed for this client alone: a redacted viewer encodes its own variant.
            variants: hub.variants(event, false),
        });
    }
    (Some(after), frames)
}
