//! What can wake a connection task, told apart.
//!
//! A connection waits on four things at once: the event channel, the socket's read side, its
//! timers and its write side. Under a steady event stream nearly every wake-up is an event,
//! yet a plain `select!` polls every branch on every wake-up. Polling the read side is the
//! expensive one (tungstenite's frame reader, a flush of its protocol state and the socket's
//! readiness), and the timers come next; both would run once per delivery for nothing. So the read side and the timers are polled with wakers of their own, which
//! record which trigger fired before waking the task, and a wake-up polls them only when they
//! fired (the idea behind `FuturesUnordered`).
//!
//! The event channel and the write side use the task's own waker: they are what a wake-up is
//! for, and a waker in between would add a reference count, an atomic and a lock per
//! delivery.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use tokio::sync::broadcast::{
    self,
    error::{RecvError, TryRecvError},
};
use tokio_util::sync::ReusableBoxFuture;

use crate::hub::Signal;

/// What woke the task. Bits of one mask.
#[derive(Debug, Clone, Copy)]
pub(super) enum Trigger {
    /// The socket's read side.
    Read = 1,
    /// The heartbeat and the write deadline.
    Timers = 2,
}

const ALL: u8 = Trigger::Read as u8 | Trigger::Timers as u8;

/// Shared between the task and the wakers it hands out.
#[derive(Default)]
struct Fired {
    /// Triggers woken since the task last looked.
    mask: AtomicU8,
    /// The task's own waker. It stays in place when used (unlike an `AtomicWaker`, which
    /// hands it out on wake and must be re-registered on every poll), so a poll that finds
    /// nothing fired has nothing to do. The lock is only taken when a trigger fires, which
    /// is rare, or when the task's waker changes.
    task: Mutex<Option<Waker>>,
}

impl Fired {
    fn mark(&self, trigger: Trigger) {
        self.mask.fetch_or(trigger as u8, Ordering::AcqRel);
    }

    fn notify(&self) {
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(task) = task {
            task.wake();
        }
    }
}

/// Wakes the task on behalf of one trigger.
struct SourceWaker {
    fired: Arc<Fired>,
    trigger: Trigger,
}

impl Wake for SourceWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Mark first: the task, once woken, must find the bit.
        self.fired.mark(self.trigger);
        self.fired.notify();
    }
}

/// The per-trigger wakers of one connection task, and which triggers are due to be polled.
pub(super) struct Triggers {
    fired: Arc<Fired>,
    read: Waker,
    timers: Waker,
    /// Triggers to poll: fired, or not yet polled back to `Pending` since they last were.
    due: u8,
    /// The task waker registered last, to tell when it changes.
    task: Option<Waker>,
}

impl Triggers {
    pub(super) fn new() -> Self {
        let fired = Arc::new(Fired::default());
        let waker = |trigger| {
            Waker::from(Arc::new(SourceWaker {
                fired: fired.clone(),
                trigger,
            }))
        };
        Triggers {
            read: waker(Trigger::Read),
            timers: waker(Trigger::Timers),
            // Everything is polled once, which registers every waker.
            due: ALL,
            task: None,
            fired,
        }
    }

    /// Takes in what fired since the last call; the task will be woken for what fires next.
    pub(super) fn refresh(&mut self, cx: &Context<'_>) {
        let waker = cx.waker();
        if !self.task.as_ref().is_some_and(|w| w.will_wake(waker)) {
            // Stored before the mask is read: a trigger firing in between wakes this waker.
            *self
                .fired
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(waker.clone());
            self.task = Some(waker.clone());
        }
        // A plain load first: most polls find nothing fired, and a swap would write the line.
        if self.fired.mask.load(Ordering::Acquire) != 0 {
            self.due |= self.fired.mask.swap(0, Ordering::AcqRel);
        }
    }

    pub(super) fn is_due(&self, trigger: Trigger) -> bool {
        self.due & trigger as u8 != 0
    }

    /// `trigger` returned `Pending` with its waker registered.
    pub(super) fn settle(&mut self, trigger: Trigger) {
        self.due &= !(trigger as u8);
    }

    /// The context to poll `trigger` with.
    pub(super) fn context(&self, trigger: Trigger) -> Context<'_> {
        Context::from_waker(match trigger {
            Trigger::Read => &self.read,
            Trigger::Timers => &self.timers,
        })
    }
}

type Received = (Result<Signal, RecvError>, broadcast::Receiver<Signal>);

/// A broadcast receiver that can be polled, keeping its place in the waiter list between
/// polls.
///
/// `Receiver::recv` is an `async fn`: a future waiting on it must survive from one poll to
/// the next, or each wake-up would unlink and relink the waiter under the channel's tail
/// lock. The receiver lives inside a reusable boxed future while it waits, so there is one
/// allocation per connection, not one per event. Once a value came out, the receiver is kept
/// bare and the next values are taken with `try_recv`, which costs no future (no box to
/// refill, no cooperative-budget bookkeeping): the future is only set again when the channel
/// is empty and the task must wait.
pub(super) struct EventFeed {
    next: ReusableBoxFuture<'static, Received>,
    /// The receiver, while no future holds it (after a value, until the channel is empty).
    bare: Option<broadcast::Receiver<Signal>>,
}

async fn receive(mut events: broadcast::Receiver<Signal>) -> Received {
    let received = events.recv().await;
    (received, events)
}

impl EventFeed {
    pub(super) fn new(events: broadcast::Receiver<Signal>) -> Self {
        EventFeed {
            next: ReusableBoxFuture::new(receive(events)),
            bare: None,
        }
    }

    /// The next signal. `Pending` leaves the waker registered with the channel, so draining
    /// until `Pending` costs one tail lock per batch, not one per event plus one to wait.
    pub(super) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Signal, RecvError>> {
        if let Some(events) = &mut self.bare {
            match events.try_recv() {
                Ok(signal) => return Poll::Ready(Ok(signal)),
                Err(TryRecvError::Lagged(missed)) => {
                    return Poll::Ready(Err(RecvError::Lagged(missed)));
                }
                Err(TryRecvError::Closed) => return Poll::Ready(Err(RecvError::Closed)),
                Err(TryRecvError::Empty) => {
                    // Wait: the future registers the task with the channel (and takes a
                    // value that arrived since the check).
                    if let Some(events) = self.bare.take() {
                        self.next.set(receive(events));
                    }
                }
            }
        }
        let (received, events) = std::task::ready!(self.next.poll(cx));
        self.bare = Some(events);
        Poll::Ready(received)
    }

    /// Follows `events` from now on; the old receiver is dropped (with the future that may
    /// hold it).
    pub(super) fn replace(&mut self, events: broadcast::Receiver<Signal>) {
        self.bare = None;
        self.next.set(receive(events));
    }
}

#[cfg(test)]
mod tests {
    // Here unwrap() and expect() are assertions on values the test itself built: a failure
    // fails the test, with the message. The module is built for `cargo test` only.
    use super::*;
    use crate::frame::TextFrame;
    use crate::hub::Frame;

    fn frame(seq: u64) -> Signal {
        Signal::Event(Frame {
            seq,
            text: TextFrame::from_text(b"{}"),
            restart: false,
            variants: None,
        })
    }

    #[test]
    fn a_source_waker_marks_its_source_and_wakes_the_task() {
        let mut triggers = Triggers::new();
        let task = Arc::new(Counter::default());
        let task_waker = Waker::from(task.clone());
        triggers.refresh(&Context::from_waker(&task_waker));
        assert!(triggers.is_due(Trigger::Read) && triggers.is_due(Trigger::Timers));
        for trigger in [Trigger::Read, Trigger::Timers] {
            triggers.settle(trigger);
        }
        assert!(!triggers.is_due(Trigger::Read));

        triggers.context(Trigger::Timers).waker().wake_by_ref();
        assert_eq!(task.count(), 1);
        triggers.refresh(&Context::from_waker(&task_waker));
        assert!(triggers.is_due(Trigger::Timers));
        assert!(!triggers.is_due(Trigger::Read));

        // A fired trigger stays due until it is settled, whatever fires next.
        triggers.context(Trigger::Read).waker().wake_by_ref();
        triggers.refresh(&Context::from_waker(&task_waker));
        assert!(triggers.is_due(Trigger::Timers) && triggers.is_due(Trigger::Read));
        assert_eq!(task.count(), 2);
    }

    #[test]
    fn a_wake_racing_with_a_refresh_is_never_lost() {
        // A trigger marks its bit, the task refreshes (taking the bit), and only then does
        // the trigger's notify run. The task's waker must still be in place for the next fire.
        let mut triggers = Triggers::new();
        let task = Arc::new(Counter::default());
        let task_waker = Waker::from(task.clone());
        let cx = Context::from_waker(&task_waker);
        triggers.refresh(&cx);
        triggers.settle(Trigger::Read);
        triggers.settle(Trigger::Timers);

        triggers.fired.mark(Trigger::Read);
        triggers.refresh(&cx);
        triggers.fired.notify();
        assert!(triggers.is_due(Trigger::Read));
        triggers.settle(Trigger::Read);
        triggers.refresh(&cx);
        assert_eq!(task.count(), 1);

        triggers.context(Trigger::Timers).waker().wake_by_ref();
        assert_eq!(task.count(), 2, "the second fire woke the task");
        triggers.refresh(&cx);
        assert!(triggers.is_due(Trigger::Timers));
        assert!(!triggers.is_due(Trigger::Read));
    }

    #[test]
    fn the_feed_drains_then_waits_and_is_woken_by_a_send() {
        let (tx, rx) = broadcast::channel(8);
        let mut feed = EventFeed::new(rx);
        let task = Arc::new(Counter::default());
        let waker = Waker::from(task.clone());

        tx.send(frame(1)).ok();
        tx.send(frame(2)).ok();
        let mut seen = Vec::new();
        while let Poll::Ready(Ok(Signal::Event(f))) =
            feed.poll_recv(&mut Context::from_waker(&waker))
        {
            seen.push(f.seq);
        }
        assert_eq!(seen, [1, 2]);
        assert_eq!(task.count(), 0);

        tx.send(frame(3)).ok();
        assert_eq!(task.count(), 1, "the waiting feed was woken");
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(
            feed.poll_recv(&mut cx),
            Poll::Ready(Ok(Signal::Event(Frame { seq: 3, .. })))
        ));

        let (tx2, rx2) = broadcast::channel(8);
        feed.replace(rx2);
        tx.send(frame(4)).ok();
        tx2.send(frame(10)).ok();
        assert!(matches!(
            feed.poll_recv(&mut cx),
            Poll::Ready(Ok(Signal::Event(Frame { seq: 10, .. })))
        ));
    }

    #[derive(Default)]
    struct Counter(std::sync::atomic::AtomicUsize);

    impl Counter {
        fn count(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_feed_reports_lag_and_a_replace_drops_the_old_receiver() {
        let (tx, rx) = broadcast::channel(2);
        let mut feed = EventFeed::new(rx);
        let task = Arc::new(Counter::default());
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        tx.send(frame(1)).ok();
        assert!(matches!(
            feed.poll_recv(&mut cx),
            Poll::Ready(Ok(Signal::Event(Frame { seq: 1, .. })))
        ));
        // Taken bare (no future) from here: five more into a channel of two.
        for seq in 2..=6 {
            tx.send(frame(seq)).ok();
        }
        assert!(matches!(
            feed.poll_recv(&mut cx),
            Poll::Ready(Err(RecvError::Lagged(3)))
        ));
        assert!(matches!(
            feed.poll_recv(&mut cx),
            Poll::Ready(Ok(Signal::Event(Frame { seq: 5, .. })))
        ));
        // Bare, then replaced: one receiver left. Waiting, then replaced: the same.
        feed.replace(tx.subscribe());
        assert_eq!(tx.receiver_count(), 1);
        assert!(feed.poll_recv(&mut cx).is_pending());
        feed.replace(tx.subscribe());
        assert_eq!(tx.receiver_count(), 1);
        // The caller polls a replaced feed, which registers the task.
        assert!(feed.poll_recv(&mut cx).is_pending());
        tx.send(frame(7)).ok();
        assert_eq!(task.count(), 1, "the replacement registered the task");
        assert!(matches!(
            feed.poll_recv(&mut cx),
            Poll::Ready(Ok(Signal::Event(Frame { seq: 7, .. })))
        ));
    }
}
