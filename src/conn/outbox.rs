//! The client's bounded queue and the write in progress.
//!
//! Events wait in a queue bounded by `send_buffer`; control frames wait in one slot per kind
//! (the pong we owe, our heartbeat ping, the close frame), so whatever a client sends, the
//! control bytes queued for it stay under four frames of at most 127 bytes each. A newer pong
//! replaces a queued one that has not started: RFC 6455 §5.5.3 lets an endpoint answer only
//! the most recent ping.
//!
//! Frames go out whole and in a fixed order: the frame already started first (nothing may be
//! written inside a frame), then the pong, our ping, the events in publish order, and the close
//! frame last. Every count the outbox reports is derived from what it holds (queued events are
//! the queue's length plus the frame in progress), so no sequence of pushes, partial writes,
//! backlog drops and closes can make two counters disagree.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::task::{Context, Poll, ready};

use bytes::Bytes;

use super::socket::{ControlKind, Socket};
use crate::frame::{TextFrame, Wire};

/// How many frames one call of [`Outbox::poll_drive`] writes at most before it hands the
/// task back to the connection loop, so that a long backlog does not keep the channel, the
/// read side and the timers waiting.
const FRAMES_PER_DRIVE: usize = 256;

/// Frames per vectored write: one `writev` carries up to this many.
const SLICES_PER_WRITE: usize = 64;

/// Where the outbox writes: the client's socket (a fake one in the tests).
pub(super) trait FrameWrite {
    /// Writes one buffer (`send(2)` on a TCP stream).
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;
    /// Writes several buffers in order (`writev(2)` on a TCP stream).
    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>>;
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl FrameWrite for Socket {
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Socket::poll_write(self, cx, buf)
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Socket::poll_write_vectored(self, cx, bufs)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Socket::poll_flush(self, cx)
    }
}

/// A frame on its way to the client.
enum Outgoing {
    Event(TextFrame),
    /// A control frame (ping, pong or close), framed by tungstenite.
    Control(Bytes),
}

impl Outgoing {
    fn as_bytes(&self, wire: Wire) -> &[u8] {
        match self {
            Outgoing::Event(frame) => frame.wire(wire).0,
            Outgoing::Control(bytes) => bytes,
        }
    }
}

/// The client's bounded queue, and the write in progress.
pub(super) struct Outbox {
    /// The frame partly written, if any: it goes on before anything else.
    started: Option<Outgoing>,
    /// Bytes of `started` already written; zero exactly when `started` is `None`.
    written: usize,
    /// The pong owed for the client's latest ping.
    pong: Option<Bytes>,
    /// Our heartbeat ping.
    ping: Option<Bytes>,
    /// Our close frame, or our answer to the client's: the last frame of the connection.
    close: Option<Bytes>,
    /// Events not started yet, in publish order.
    events: VecDeque<TextFrame>,
    /// `send_buffer`.
    limit: usize,
    /// Replayed events still queued: a resume may hand over more than `send_buffer` events
    /// at once, and those must not count as lag.
    backlog_allowance: usize,
    /// Bytes were written since the last flush.
    unflushed: bool,
    /// Event frames completely written, and their payload bytes, since the last
    /// [`take_sent`](Self::take_sent).
    sent_events: u64,
    sent_bytes: u64,
    /// The socket has refused bytes since the write last moved: see [`stalled`](Self::stalled).
    waiting: bool,
    /// Which form of each event this client gets (compressed with permessage-deflate).
    wire: Wire,
    /// Event frames this connection compressed (the first to need their compressed twin)
    /// since the last [`take_compressed`](Self::take_compressed).
    compressed: u64,
}

impl Outbox {
    /// `limit`: `send_buffer`; `wire`: plain or compressed frames. A compressing client's
    /// events get their compressed twin computed as they are queued (once per frame, by
    /// whichever connection queues it first), so writing only reads it.
    pub(super) fn new(limit: usize, wire: Wire) -> Self {
        Outbox {
            started: None,
            written: 0,
            pong: None,
            ping: None,
            close: None,
            events: VecDeque::new(),
            limit,
            backlog_allowance: 0,
            unflushed: false,
            sent_events: 0,
            sent_bytes: 0,
            waiting: false,
            wire,
            compressed: 0,
        }
    }

    /// Computes the frame's compressed twin now if this client needs it and no connection
    /// has yet.
    fn prepare(&mut self, frame: &TextFrame) {
        if self.wire == Wire::Deflate && frame.wire(Wire::Deflate).1 {
            self.compressed += 1;
        }
    }

    pub(super) fn push_event(&mut self, frame: TextFrame) {
        self.prepare(&frame);
        self.events.push_back(frame);
    }

    /// Queues replayed events; they do not count against `send_buffer` until written.
    pub(super) fn push_backlog(&mut self, frames: Vec<TextFrame>) {
        self.backlog_allowance = frames.len();
        for frame in frames {
            self.push_event(frame);
        }
    }

    /// Queues a snapshot and the health reports that follow it. The reports do not count as
    /// lag: a client may fall `send_buffer` events behind after them.
    pub(super) fn push_snapshot(&mut self, frames: &[TextFrame]) {
        self.backlog_allowance += frames.len().saturating_sub(1);
        for frame in frames {
            self.push_event(frame.clone());
        }
    }

    /// Event frames this connection compressed since the last call (see [`new`](Self::new)).
    pub(super) fn take_compressed(&mut self) -> u64 {
        std::mem::take(&mut self.compressed)
    }

    /// Queues a control frame in its kind's slot, replacing one of the same kind that has not
    /// started (a newer pong answers the latest ping; a newer heartbeat ping supersedes an
    /// older one). A close frame already queued is kept: there is only one per connection.
    pub(super) fn push_control(&mut self, kind: ControlKind, frame: Bytes) {
        match kind {
            ControlKind::Pong => self.pong = Some(frame),
            ControlKind::Ping => self.ping = Some(frame),
            ControlKind::Close => {
                self.close.get_or_insert(frame);
            }
        }
    }

    /// Event frames queued and not completely written: what `send_buffer` bounds.
    pub(super) fn queued_events(&self) -> usize {
        self.events.len() + usize::from(matches!(self.started, Some(Outgoing::Event(_))))
    }

    pub(super) fn is_over_limit(&self) -> bool {
        self.queued_events() > self.limit + self.backlog_allowance
    }

    /// Whether a pong waits that has not started: the client's pings are not being answered
    /// as fast as it sends them, and reading more of them would only replace it.
    pub(super) fn owes_pong(&self) -> bool {
        self.pong.is_some()
    }

    /// Drops every queued event not yet started on the socket; returns how many. A frame
    /// partly written stays: cutting it would corrupt the stream.
    pub(super) fn drop_backlog(&mut self) -> usize {
        let dropped = self.events.len();
        self.events.clear();
        self.backlog_allowance = 0;
        dropped
    }

    /// Keeps only what a closing connection still sends: the frame already started and the
    /// close frame. Events, pongs and pings not started are dropped (after our close frame
    /// nothing else may follow, and tungstenite answers no ping once either side closed).
    pub(super) fn keep_only_close(&mut self) {
        self.drop_backlog();
        self.pong = None;
        self.ping = None;
    }

    pub(super) fn is_busy(&self) -> bool {
        self.started.is_some()
            || self.pong.is_some()
            || self.ping.is_some()
            || !self.events.is_empty()
            || self.close.is_some()
            || self.unflushed
    }

    /// Event frames and payload bytes (as sent: compressed ones for a compressing client)
    /// completely written since the last call.
    pub(super) fn take_sent(&mut self) -> (u64, u64) {
        (
            std::mem::take(&mut self.sent_events),
            std::mem::take(&mut self.sent_bytes),
        )
    }

    /// Call when [`poll_drive`](Self::poll_drive) returned `Pending`: whether the socket has
    /// just started refusing bytes (the write began or moved since the last `Pending`), so
    /// that the write timeout runs from now. A write that keeps moving, however slowly,
    /// restarts it each time; one that does not move lets it run out.
    pub(super) fn stalled(&mut self) -> bool {
        !std::mem::replace(&mut self.waiting, true)
    }

    /// The frames not started, in the order they go out.
    fn pending(&self) -> impl Iterator<Item = &[u8]> {
        let pong = self.pong.as_deref();
        let ping = self.ping.as_deref();
        let wire = self.wire;
        let events = self.events.iter().map(move |frame| frame.wire(wire).0);
        let close = self.close.as_deref();
        pong.into_iter().chain(ping).chain(events).chain(close)
    }

    /// How many frames [`pending`](Self::pending) yields.
    fn pending_len(&self) -> usize {
        usize::from(self.pong.is_some())
            + usize::from(self.ping.is_some())
            + self.events.len()
            + usize::from(self.close.is_some())
    }

    /// Takes the next frame not started, in the order of [`pending`](Self::pending).
    fn pop_pending(&mut self) -> Option<Outgoing> {
        if let Some(pong) = self.pong.take() {
            return Some(Outgoing::Control(pong));
        }
        if let Some(ping) = self.ping.take() {
            return Some(Outgoing::Control(ping));
        }
        if let Some(event) = self.events.pop_front() {
            return Some(Outgoing::Event(event));
        }
        self.close.take().map(Outgoing::Control)
    }

    /// Writes what is queued, whole frames in order, [`SLICES_PER_WRITE`] frames per vectored
    /// write (a lone frame with a plain write), then flushes. Ready when everything is written
    /// and flushed, or after [`FRAMES_PER_DRIVE`] frames, so the caller polls its other
    /// sources; `Pending` while the socket takes no more.
    pub(super) fn poll_drive<W: FrameWrite>(
        &mut self,
        socket: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        let mut frames = 0;
        loop {
            let queued = usize::from(self.started.is_some()) + self.pending_len();
            let written = if queued <= 1 {
                // The usual case once a stream is steady: one event per wake-up, written
                // without building a slice array.
                let Some(frame) = self.started.as_ref().map_or_else(
                    || self.pending().next(),
                    |started| Some(&started.as_bytes(self.wire)[self.written..]),
                ) else {
                    break;
                };
                ready!(socket.poll_write(cx, frame))?
            } else {
                let mut slices = [IoSlice::new(&[]); SLICES_PER_WRITE];
                let mut count = 0;
                if let Some(started) = &self.started {
                    slices[0] = IoSlice::new(&started.as_bytes(self.wire)[self.written..]);
                    count = 1;
                }
                for (slot, frame) in slices[count..].iter_mut().zip(self.pending()) {
                    *slot = IoSlice::new(frame);
                    count += 1;
                }
                ready!(socket.poll_write_vectored(cx, &slices[..count]))?
            };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.unflushed = true;
            self.waiting = false;
            frames += self.advance(written);
            if frames >= FRAMES_PER_DRIVE {
                return Poll::Ready(Ok(()));
            }
        }
        if self.unflushed {
            ready!(socket.poll_flush(cx))?;
            self.unflushed = false;
        }
        self.waiting = false;
        Poll::Ready(Ok(()))
    }

    /// Takes `written` bytes off the front of the frames in write order; returns how many
    /// frames were completed.
    fn advance(&mut self, mut written: usize) -> usize {
        let mut completed = 0;
        while written > 0 {
            let Some(frame) = self.started.take().or_else(|| self.pop_pending()) else {
                // A transport claiming more than it was given: nothing is left to account.
                break;
            };
            let left = frame.as_bytes(self.wire).len() - self.written;
            if written < left {
                self.written += written;
                self.started = Some(frame);
                break;
            }
            written -= left;
            self.written = 0;
            completed += 1;
            if let Outgoing::Event(event) = frame {
                self.sent_events += 1;
                self.sent_bytes += event.wire_payload_len(self.wire) as u64;
                self.backlog_allowance = self.backlog_allowance.saturating_sub(1);
            }
        }
        completed
    }
}

#[cfg(test)]
mod tests {
    // unwrap()/expect() here are test assertions on values the test built.
    use super::*;
    use std::task::Waker;
    use tungstenite::protocol::frame::FrameHeader;

    fn event(len: usize) -> TextFrame {
        TextFrame::from_text(&vec![b'e'; len])
    }

    fn control(opcode: u8, payload: &[u8]) -> Bytes {
        let mut frame = vec![0x80 | opcode, payload.len() as u8];
        frame.extend_from_slice(payload);
        Bytes::from(frame)
    }

    /// A socket that takes `budget` bytes, then answers `Pending`; it records what it took.
    #[derive(Default)]
    struct FakeSocket {
        budget: usize,
        wire: Vec<u8>,
        flushes: usize,
    }

    impl FakeSocket {
        fn take(&mut self, buf: &[u8]) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.budget);
            if n == 0 {
                return Poll::Pending;
            }
            self.budget -= n;
            self.wire.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
    }

    impl FrameWrite for FakeSocket {
        fn poll_write(&mut self, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            assert!(!buf.is_empty(), "an empty write");
            self.take(buf)
        }

        fn poll_write_vectored(
            &mut self,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut total = 0;
            for buf in bufs {
                match self.take(buf) {
                    Poll::Ready(Ok(n)) => total += n,
                    _ => break,
                }
            }
            if total == 0 {
                Poll::Pending
            } else {
                Poll::Ready(Ok(total))
            }
        }

        fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }
    }

    fn drive(out: &mut Outbox, socket: &mut FakeSocket) -> Poll<io::Result<()>> {
        out.poll_drive(socket, &mut Context::from_waker(Waker::noop()))
    }

    /// Splits what reached the wire back into frames; panics unless it is whole frames.
    fn frames_on(wire: &[u8]) -> Vec<Vec<u8>> {
        let (frames, cut) = scan(wire);
        assert_eq!(cut, None, "a frame cut short");
        frames
    }

    /// Xorshift: a seeded, dependency-free source of random steps.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// What reached the wire: its whole frames, and the opcode of a frame cut short at the
    /// end (the one in progress), if any.
    fn scan(wire: &[u8]) -> (Vec<Vec<u8>>, Option<u8>) {
        let mut frames = Vec::new();
        let mut rest = wire;
        while !rest.is_empty() {
            let mut cursor = std::io::Cursor::new(rest);
            let whole = match FrameHeader::parse(&mut cursor) {
                Ok(Some((_, len))) => Some(cursor.position() as usize + len as usize),
                _ => None,
            };
            match whole {
                Some(end) if end <= rest.len() => {
                    frames.push(rest[..end].to_vec());
                    rest = &rest[end..];
                }
                _ => return (frames, Some(rest[0] & 0x0f)),
            }
        }
        (frames, None)
    }

    /// Random pushes, partial writes stopping at every byte boundary (a socket that takes N
    /// bytes, then `Pending`), backlog drops and closes, checked against a model kept the
    /// simple way (the events not started, in order, and the events that must reach the
    /// wire): what reaches the wire is a sequence of whole frames; its events are exactly the
    /// ones pushed and not dropped before they started, in order, once each; nothing follows
    /// the close frame; the queued-event count and the sent counters match the model at
    /// every step. The counters are unsigned: an underflow (a batch count
    /// subtracted after `finish` had reset the queue) panics here in a debug build.
    #[test]
    fn random_operations_keep_whole_frames_in_order_and_counts_exact() {
        for seed in 1..=3_000u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut out = Outbox::new(usize::MAX / 2, Wire::Plain);
            let mut socket = FakeSocket::default();
            // The model: events pushed and not started, and events started (on the wire,
            // whole or in part), each in order.
            let mut not_started: VecDeque<Vec<u8>> = VecDeque::new();
            let mut started: Vec<Vec<u8>> = Vec::new();
            let mut sent_events = 0u64;
            let mut closed = false;
            let mut next_id = 0u32;
            for _ in 0..1 + rng.below(60) {
                match rng.below(10) {
                    0..=2 if !closed => {
                        next_id += 1;
                        // Lengths around the 7-bit and 16-bit header boundaries.
                        let pad = [0, 1, 60, 117, 118, 300][rng.below(6)];
                        let mut text = format!("{next_id:08}").into_bytes();
                        text.resize(text.len() + pad, b'.');
                        let frame = TextFrame::from_text(&text);
                        not_started.push_back(frame.as_bytes().to_vec());
                        out.push_event(frame);
                    }
                    3 if !closed => {
                        let (kind, opcode) =
                            [(ControlKind::Ping, 9), (ControlKind::Pong, 10)][rng.below(2)];
                        let payload = vec![b'c'; rng.below(126)];
                        out.push_control(kind, control(opcode, &payload));
                    }
                    4..=7 => {
                        // Any number of bytes, often less than one frame.
                        socket.budget = [0, 1, 2, 3, 7, 50, 131, 1000][rng.below(8)];
                        if drive(&mut out, &mut socket).is_pending() {
                            assert!(out.is_busy(), "seed {seed}");
                        }
                    }
                    8 => {
                        sync(&socket.wire, &mut not_started, &mut started);
                        let before = out.queued_events();
                        let dropped = out.drop_backlog();
                        assert_eq!(dropped, not_started.len(), "seed {seed}");
                        assert_eq!(out.queued_events(), before - dropped, "seed {seed}");
                        not_started.clear();
                    }
                    _ if !closed => {
                        sync(&socket.wire, &mut not_started, &mut started);
                        closed = true;
                        out.keep_only_close();
                        not_started.clear();
                        out.push_control(ControlKind::Close, control(8, &[0x03, 0xe9]));
                    }
                    _ => {}
                }
                let in_progress = sync(&socket.wire, &mut not_started, &mut started);
                sent_events += out.take_sent().0;
                let whole = started.len() - usize::from(in_progress);
                assert_eq!(sent_events as usize, whole, "seed {seed}");
                assert_eq!(
                    out.queued_events(),
                    not_started.len() + usize::from(in_progress),
                    "seed {seed}"
                );
            }
            // Let everything out.
            socket.budget = usize::MAX;
            while out.is_busy() {
                assert!(drive(&mut out, &mut socket).is_ready(), "seed {seed}");
            }
            sync(&socket.wire, &mut not_started, &mut started);
            sent_events += out.take_sent().0;
            assert_eq!(out.queued_events(), 0, "seed {seed}");
            assert!(not_started.is_empty(), "seed {seed}: an event never sent");

            let (frames, cut) = scan(&socket.wire);
            assert_eq!(cut, None, "seed {seed}: the wire ends inside a frame");
            let events: Vec<_> = frames.iter().filter(|f| f[0] == 0x81).cloned().collect();
            assert_eq!(
                events, started,
                "seed {seed}: events lost, repeated or reordered"
            );
            assert_eq!(sent_events as usize, events.len(), "seed {seed}");
            for (i, frame) in frames.iter().enumerate() {
                match frame[0] {
                    0x81 | 0x89 | 0x8a => {}
                    0x88 => assert_eq!(i, frames.len() - 1, "seed {seed}: a frame after close"),
                    other => panic!("seed {seed}: unexpected first byte {other:#x}"),
                }
            }
            assert_eq!(
                closed,
                frames.last().is_some_and(|f| f[0] == 0x88),
                "seed {seed}"
            );
        }
    }

    /// Moves the events that have reached the wire (whole or in part) from `not_started`
    /// to `started`; returns whether the wire ends inside an event.
    fn sync(wire: &[u8], not_started: &mut VecDeque<Vec<u8>>, started: &mut Vec<Vec<u8>>) -> bool {
        let (frames, cut) = scan(wire);
        let in_progress = cut == Some(1);
        let on_wire = frames.iter().filter(|f| f[0] == 0x81).count() + usize::from(in_progress);
        while started.len() < on_wire {
            let next = not_started
                .pop_front()
                .expect("an event on the wire that the model does not have");
            started.push(next);
        }
        in_progress
    }

    #[test]
    fn a_partly_written_frame_survives_a_backlog_drop_and_counts_once_written() {
        let mut out = Outbox::new(8, Wire::Plain);
        for _ in 0..3 {
            out.push_event(event(100));
        }
        out.push_control(ControlKind::Ping, control(9, &[]));
        let mut socket = FakeSocket {
            budget: 51,
            ..FakeSocket::default()
        };
        // Half of the first frame (2-byte header + 100) goes out.
        assert!(drive(&mut out, &mut socket).is_pending());
        assert_eq!(
            socket.wire,
            control(9, &[]).to_vec()[..2]
                .iter()
                .chain(&event(100).as_bytes()[..49])
                .copied()
                .collect::<Vec<_>>()
        );
        assert_eq!(out.queued_events(), 3);
        assert_eq!(out.drop_backlog(), 2, "the two frames not started");
        assert_eq!(out.queued_events(), 1, "the started frame stays");
        socket.budget = usize::MAX;
        assert!(drive(&mut out, &mut socket).is_ready());
        assert!(!out.is_busy());
        assert_eq!(out.take_sent(), (1, 100));
        assert_eq!(
            frames_on(&socket.wire).len(),
            2,
            "the ping and one whole event"
        );
    }

    #[test]
    fn a_newer_pong_replaces_one_not_started_and_control_goes_between_frames() {
        let mut out = Outbox::new(8, Wire::Plain);
        out.push_event(event(10));
        let mut socket = FakeSocket {
            budget: 5,
            ..FakeSocket::default()
        };
        assert!(drive(&mut out, &mut socket).is_pending());
        for n in 0..1000u32 {
            out.push_control(ControlKind::Pong, control(10, &n.to_be_bytes()));
        }
        assert!(out.owes_pong());
        socket.budget = usize::MAX;
        assert!(drive(&mut out, &mut socket).is_ready());
        let frames = frames_on(&socket.wire);
        assert_eq!(frames.len(), 2, "the event, then one pong");
        assert_eq!(frames[0], event(10).as_bytes().to_vec());
        assert_eq!(frames[1], control(10, &999u32.to_be_bytes()).to_vec());
        assert!(!out.owes_pong());
    }

    #[test]
    fn the_stall_clock_restarts_whenever_bytes_move() {
        let mut out = Outbox::new(8, Wire::Plain);
        out.push_event(event(1000));
        let mut socket = FakeSocket::default();
        assert!(drive(&mut out, &mut socket).is_pending());
        assert!(out.stalled(), "the write started: its timeout starts");
        assert!(drive(&mut out, &mut socket).is_pending());
        assert!(!out.stalled(), "nothing moved: the timeout keeps running");
        socket.budget = 1;
        assert!(drive(&mut out, &mut socket).is_pending());
        assert!(out.stalled(), "one byte moved: the timeout restarts");
    }
}
