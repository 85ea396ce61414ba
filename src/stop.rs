//! Whether the hub was stopped, as a small shared flag: what admission checks on every
//! upgrade request, without holding the whole hub.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once by [`Publisher::stop`](crate::Publisher::stop), never cleared. Clones share the flag.
#[derive(Debug, Clone, Default)]
pub(crate) struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// Raises the flag; returns whether it was already raised.
    pub(crate) fn raise(&self) -> bool {
        self.0.swap(true, Ordering::SeqCst)
    }

    pub(crate) fn is_raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
