//! Ending a WebSocket over HTTP/2 (RFC 8441) for good when its connection task ends.
//!
//! hyper hands an extended CONNECT stream over as an `Upgraded` whose writes go through a
//! channel to a send task hyper spawns on the server's executor. That task holds the h2
//! `SendStream` and the chunk it is writing; while the peer's flow-control window stays
//! closed it waits for capacity and never looks at its channel again. Dropping the
//! `Upgraded` therefore neither ends nor resets the stream: the stream, its buffered data
//! and the task stay until the whole HTTP/2 connection closes, and a peer that never opens
//! its window keeps them forever (hyper 1.x: `proto/h2/upgrade.rs`).
//!
//! [`serve`](crate::serve()) works around it: its executor spawns that send task with an
//! abort handle, linked to the stream's [`StreamEnd`], which the request carries to the
//! WebSocket handler. When the connection task ends, [`StreamEnd::reset`] aborts the send
//! task if it is still running: the `SendStream` is dropped with the receiving half already
//! gone, so h2 sends `RST_STREAM(CANCEL)` and frees the stream's buffered data at once. A
//! stream that already finished (the close handshake went through and hyper sent
//! `END_STREAM`) is left alone.
//!
//! The link: hyper polls the service's response future and, in the same call on the same
//! thread, spawns the send task of a successful CONNECT. The service future (`serve`'s)
//! arms a thread-local with the stream's slot just before it returns the response; the
//! executor's next spawn on that thread takes it.

use std::cell::RefCell;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::task::AbortHandle;

use crate::serve::Active;

thread_local! {
    /// The slot of the CONNECT stream whose response was just produced on this thread.
    static ARMED: RefCell<Option<Arc<Slot>>> = const { RefCell::new(None) };
}

#[derive(Default)]
struct Slot {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The send task, once spawned.
    task: Option<AbortHandle>,
    /// [`StreamEnd::reset`] came before the task was linked.
    reset: bool,
    /// Keeps the HTTP connection busy (not idle): moved into the send task when it is
    /// spawned, so it lasts as long as the stream; dropped with the request otherwise.
    active: Option<Active>,
}

/// The end of one HTTP/2 CONNECT stream served by [`serve`](crate::serve()): a request
/// extension the WebSocket handler takes and keeps for the connection's life.
#[derive(Clone)]
pub(crate) struct StreamEnd {
    slot: Arc<Slot>,
}

impl StreamEnd {
    pub(crate) fn new(active: Active) -> Self {
        let slot = Slot::default();
        slot.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .active = Some(active);
        StreamEnd {
            slot: Arc::new(slot),
        }
    }

    /// Called by the service future when it returns a successful response to this CONNECT:
    /// the executor's next spawn on this thread is the stream's send task.
    pub(crate) fn arm(&self) {
        ARMED.with(|armed| *armed.borrow_mut() = Some(self.slot.clone()));
    }

    /// Ends the stream now if hyper's send task still holds it: returns whether it did (a
    /// reset is sent), `false` when the stream had already ended.
    pub(crate) fn reset(&self) -> bool {
        let mut state = self
            .slot
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.reset = true;
        match state.task.take() {
            Some(task) if !task.is_finished() => {
                task.abort();
                true
            }
            _ => false,
        }
    }
}

/// Spawns `future` on tokio; if it is the send task of a CONNECT stream just armed on this
/// thread, links it to that stream's [`StreamEnd`], and the stream's activity guard lives as
/// long as the task.
pub(crate) fn spawn<F>(future: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let Some(slot) = ARMED.with(|armed| armed.borrow_mut().take()) else {
        tokio::spawn(future);
        return;
    };
    let mut state = slot.state.lock().unwrap_or_else(PoisonError::into_inner);
    let active = state.active.take();
    let handle = tokio::spawn(async move {
        let _active = active;
        future.await;
    });
    if state.reset {
        handle.abort();
    } else {
        state.task = Some(handle.abort_handle());
    }
}
