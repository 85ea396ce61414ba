//! The client's socket after the upgrade: the connection task writes to it directly, and
//! tungstenite parses what the client sends.
//!
//! Writing is ours: events are [`TextFrame`]s framed once for every client; a batch of them
//! goes out in vectored writes and a lone one in a plain write, with no per-client copy. tungstenite's
//! [`WebSocketContext`] keeps the protocol state and reads frames (pongs, closes, pings,
//! whatever a client sends), and frames the few control messages the server sends. Everything
//! it writes (a pong it owes, a close or its reply, our heartbeat ping) lands in a side
//! buffer, which the connection queues between whole frames: nothing can be written into the
//! middle of a frame.

use std::io::{self, IoSlice, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::inflate::{InflateError, Inflater};
use crate::frame::Wire;
use crate::serve::{Counted, TableSlot};
use crate::upgrade::Deflate;
use tungstenite::error::CapacityError;
use tungstenite::protocol::frame::coding::{CloseCode, Control as OpCtl, OpCode, OpCode::Control};
use tungstenite::protocol::frame::{Frame, FrameHeader};
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Error, Message};

/// The upgraded connection. Over `axum::serve` it is the `TcpStream` itself; any other
/// server setup (TLS, a custom listener) keeps hyper's boxed `Upgraded`, which works the
/// same at the cost of one indirection per call.
pub(crate) enum Transport {
    Tcp(TcpStream),
    Upgraded(TokioIo<Upgraded>),
}

impl Transport {
    /// Takes the connection out of hyper, with whatever the client sent after its handshake
    /// that hyper had already read.
    ///
    /// On the bare `TcpStream` path, sets `TCP_NODELAY` whoever served the app (plain
    /// `axum::serve` does not): the outbox already batches what it writes, so Nagle's
    /// algorithm would only hold a lone event back until the client's delayed ACK.
    ///
    /// Under [`serve`](crate::serve) the connection's place among the server's open
    /// connections comes along (`Some`): the caller holds it until the connection ends, so a
    /// WebSocket counts towards the per-IP and total bounds for as long as it lives. (Over
    /// other transports than a bare `TcpStream` it travels inside the boxed `Upgraded`.)
    pub(crate) fn from_upgraded(upgraded: Upgraded) -> (Self, Bytes, Option<TableSlot>) {
        use hyper_util::server::conn::auto::upgrade::downcast;
        // crate::serve and axum::serve run hyper-util's HTTP/1-or-2 server, which wraps the
        // stream in a type of its own; a plain hyper HTTP/1 server does not.
        let upgraded = match downcast::<TokioIo<Counted<TcpStream>>>(upgraded) {
            Ok(parts) => {
                let (stream, slot) = parts.io.into_inner().into_parts();
                return (Self::tcp(stream), parts.read_buf, Some(slot));
            }
            Err(upgraded) => upgraded,
        };
        let upgraded = match downcast::<TokioIo<TcpStream>>(upgraded) {
            Ok(parts) => return (Self::tcp(parts.io.into_inner()), parts.read_buf, None),
            Err(upgraded) => upgraded,
        };
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => (Self::tcp(parts.io.into_inner()), parts.read_buf, None),
            Err(upgraded) => (
                Transport::Upgraded(TokioIo::new(upgraded)),
                Bytes::new(),
                None,
            ),
        }
    }

    fn tcp(stream: TcpStream) -> Self {
        if let Err(error) = stream.set_nodelay(true) {
            // Only costs latency; the connection works without it.
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        Transport::Tcp(stream)
    }

    /// Whether `TCP_NODELAY` is on, for tests: `None` off the bare TCP path.
    #[cfg(test)]
    pub(crate) fn nodelay(&self) -> Option<bool> {
        match self {
            Transport::Tcp(stream) => stream.nodelay().ok(),
            Transport::Upgraded(_) => None,
        }
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self {
            Transport::Tcp(io) => Pin::new(io).poll_read(cx, buf),
            Transport::Upgraded(io) => Pin::new(io).poll_read(cx, buf),
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self {
            Transport::Tcp(io) => Pin::new(io).poll_write(cx, buf),
            Transport::Upgraded(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self {
            Transport::Tcp(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Transport::Upgraded(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            // A TcpStream has nothing to flush: skip the call on the hot path.
            Transport::Tcp(_) => Poll::Ready(Ok(())),
            Transport::Upgraded(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Transport::Tcp(io) => Pin::new(io).poll_shutdown(cx),
            Transport::Upgraded(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

/// What a control frame framed by tungstenite is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ControlKind {
    Ping,
    Pong,
    Close,
}

/// One client's WebSocket, server side.
pub(crate) struct Socket {
    transport: Transport,
    protocol: WebSocketContext,
    /// Frames tungstenite wrote, not yet queued for the client.
    control: Vec<u8>,
    /// Bytes read from the client since the last [`take_read`](Self::take_read): every
    /// byte, whatever frame it belongs to (headers, continuations, control frames).
    read: u64,
    /// tungstenite reported an error reading (a protocol violation, an oversized message,
    /// invalid UTF-8, an I/O error): its state is never touched again. Reading past such an
    /// error trips tungstenite's own debug assertions (a frame declaring more than
    /// `max_message_size`, then a full read buffer of its payload).
    failed: bool,
    /// permessage-deflate was negotiated: what the client sends goes through the inflater
    /// before tungstenite (see `inflate.rs`), and events go out compressed. Boxed: a
    /// connection without it pays one pointer.
    inflater: Option<Box<Inflater>>,
}

impl Socket {
    /// `early`: bytes the client sent right after its handshake, already read by hyper.
    /// `deflate`: the permessage-deflate parameters, when the handshake negotiated it.
    pub(crate) fn new(
        transport: Transport,
        early: Bytes,
        config: WebSocketConfig,
        deflate: Option<Deflate>,
    ) -> Self {
        let read = early.len() as u64;
        let mut inflater = deflate.map(|deflate| {
            Box::new(Inflater::new(
                deflate,
                config.max_message_size.unwrap_or(usize::MAX),
            ))
        });
        // A copy, not `early.into()`: that can hand tungstenite hyper's whole read buffer
        // (8 KiB, already touched) to keep as this connection's read buffer.
        let early = match &mut inflater {
            Some(inflater) => {
                // Goes through the inflater like everything else the client sends; a
                // failure is reported by the first read.
                let _ = inflater.feed(&early);
                Vec::new()
            }
            None => early.to_vec(),
        };
        Socket {
            transport,
            read,
            protocol: WebSocketContext::from_partially_read(early, Role::Server, Some(config)),
            control: Vec::new(),
            failed: false,
            inflater,
        }
    }

    /// How events go out to this client: compressed when it negotiated permessage-deflate.
    pub(crate) fn wire(&self) -> Wire {
        if self.inflater.is_some() {
            Wire::Deflate
        } else {
            Wire::Plain
        }
    }

    /// The largest message a client may send (`max_message_size`), in bytes.
    pub(crate) fn max_message_size(&self) -> usize {
        self.protocol
            .get_config()
            .max_message_size
            .unwrap_or(usize::MAX)
    }

    /// Bytes read from the client since the last call.
    pub(crate) fn take_read(&mut self) -> u64 {
        std::mem::take(&mut self.read)
    }

    /// The next message from the client; `None` once the connection is closed. tungstenite
    /// answers pings and closes by itself: see [`take_control`](Self::take_control).
    ///
    /// After the first error it returns `None` without reading: the protocol state that
    /// reported the error is never used again ([`is_failed`](Self::is_failed)); what the
    /// client still sends can only be discarded ([`poll_discard`](Self::poll_discard)).
    pub(crate) fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message, Error>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let mut io = ProtocolIo {
            transport: &mut self.transport,
            cx,
            written: &mut self.control,
            read: &mut self.read,
            inflater: self.inflater.as_deref_mut(),
        };
        match self.protocol.read(&mut io) {
            Ok(message) => Poll::Ready(Some(Ok(message))),
            Err(Error::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            Err(Error::ConnectionClosed | Error::AlreadyClosed) => Poll::Ready(None),
            Err(error) => {
                self.failed = true;
                let inflated = self.inflater.as_deref().and_then(Inflater::failed);
                let error = match (inflated, error) {
                    // Too big once inflated: what tungstenite says of an uncompressed message
                    // that is too big (1009).
                    (Some(InflateError::TooBig { size }), Error::Io(_)) => {
                        Error::Capacity(CapacityError::MessageTooLong {
                            size,
                            max_size: self.max_message_size(),
                        })
                    }
                    (_, error) => error,
                };
                Poll::Ready(Some(Err(error)))
            }
        }
    }

    /// Whether reading failed (see [`poll_recv`](Self::poll_recv)): the client's bytes can no
    /// longer be parsed as frames, and tungstenite is no longer asked to frame anything.
    pub(crate) fn is_failed(&self) -> bool {
        self.failed
    }

    /// Frames a heartbeat ping carrying `payload`; collect it with
    /// [`take_control`](Self::take_control).
    pub(crate) fn ping(&mut self, payload: &[u8]) {
        let payload = Bytes::copy_from_slice(payload);
        self.with_protocol(|protocol, io| protocol.write(io, Message::Ping(payload)));
    }

    /// Frames a close frame (the client is expected to answer it, and nothing may be sent
    /// after it); collect it with [`take_control`](Self::take_control). Nothing is framed
    /// when the connection is closing already.
    ///
    /// After a read error the close frame is framed without tungstenite's protocol state
    /// (which reported the error and is not touched again), by its stateless frame encoder.
    pub(crate) fn close(&mut self, code: u16, reason: &'static str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        if self.failed {
            if let Err(error) = Frame::close(Some(frame)).format(&mut self.control) {
                tracing::debug!(%error, "cannot frame the close frame");
            }
            return;
        }
        self.with_protocol(|protocol, io| protocol.close(io, Some(frame)));
    }

    /// Hands `queue` each control frame tungstenite has framed since the last call (a pong it
    /// owes the client, the answer to the client's close, our ping or close), one whole frame
    /// at a time, with its kind.
    pub(crate) fn take_control(&mut self, mut queue: impl FnMut(ControlKind, Bytes)) {
        // A reply tungstenite owes is framed only on its next write or flush.
        self.with_protocol(|protocol, io| protocol.flush(io));
        if self.control.is_empty() {
            return;
        }
        let mut frames = Bytes::from(std::mem::take(&mut self.control));
        while !frames.is_empty() {
            let mut cursor = io::Cursor::new(&frames[..]);
            let Ok(Some((header, len))) = FrameHeader::parse(&mut cursor) else {
                break;
            };
            let end = (cursor.position() + len) as usize;
            if end > frames.len() {
                break;
            }
            let frame = frames.split_to(end);
            let kind = match header.opcode {
                Control(OpCtl::Ping) => ControlKind::Ping,
                Control(OpCtl::Pong) => ControlKind::Pong,
                Control(OpCtl::Close) => ControlKind::Close,
                OpCode::Control(OpCtl::Reserved(_)) | OpCode::Data(_) => continue,
            };
            queue(kind, frame);
        }
        if !frames.is_empty() {
            // tungstenite writes whole frames: not reachable.
            tracing::debug!(bytes = frames.len(), "partial control frame dropped");
        }
    }

    /// Reads what the client sent and throws it away, without parsing it: for a closing
    /// connection whose frames can no longer be trusted (after a protocol error or an
    /// oversized frame). Ready with the number of bytes discarded, 0 at the end of the stream.
    pub(crate) fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut buf = [0u8; 2048];
        let mut buf = ReadBuf::new(&mut buf);
        ready!(self.transport.poll_read(cx, &mut buf))?;
        let n = buf.filled().len();
        self.read += n as u64;
        Poll::Ready(Ok(n))
    }

    /// Shuts down the write half: the client sees the end of the stream after the last frame
    /// (TCP `FIN`), while the read half stays open for its answer.
    pub(crate) fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.transport.poll_shutdown(cx)
    }

    /// Lets tungstenite write: it only ever writes into `control` here, never to the socket.
    fn with_protocol(
        &mut self,
        write: impl FnOnce(&mut WebSocketContext, &mut ProtocolIo<'_, '_>) -> Result<(), Error>,
    ) {
        if self.failed {
            return;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut io = ProtocolIo {
            transport: &mut self.transport,
            cx: &mut cx,
            written: &mut self.control,
            read: &mut self.read,
            inflater: None,
        };
        // Errors only say the protocol is past the point where this frame applies (closed
        // already): then there is nothing to send.
        if let Err(error) = write(&mut self.protocol, &mut io) {
            tracing::trace!(%error, "no control frame to send");
        }
    }

    /// Writes one buffer. On a TcpStream this is `send(2)`, which the kernel serves on a
    /// shorter path than a one-element `writev(2)`.
    pub(crate) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.transport.poll_write(cx, buf)
    }

    pub(crate) fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.transport.poll_write_vectored(cx, bufs)
    }

    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.transport.poll_flush(cx)
    }
}

/// What tungstenite reads from and writes to: reads come from the socket (registering the
/// caller's waker when there is nothing to read), through the inflater when there is one;
/// writes go to the control buffer.
struct ProtocolIo<'a, 'b> {
    transport: &'a mut Transport,
    cx: &'a mut Context<'b>,
    written: &'a mut Vec<u8>,
    /// Bytes read from the client, plus the bytes inflated from them: both cost the server.
    read: &'a mut u64,
    inflater: Option<&'a mut Inflater>,
}

impl ProtocolIo<'_, '_> {
    fn read_transport(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        match self.transport.poll_read(self.cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len();
                *self.read += n as u64;
                Ok(n)
            }
            Poll::Ready(Err(error)) => Err(error),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Read for ProtocolIo<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.inflater.is_none() || buf.is_empty() {
            return self.read_transport(buf);
        }
        loop {
            let Some(inflater) = self.inflater.as_deref_mut() else {
                return Ok(0);
            };
            // What came before a failure is handed over first: a close the client sent
            // ahead of a bad frame is still seen.
            if inflater.has_ready() {
                return Ok(inflater.read_ready(buf));
            }
            if let Some(error) = inflater.failed() {
                return Err(io::Error::other(error));
            }
            if inflater.has_pending() {
                // Bytes read earlier, held back while tungstenite took the inflated ones.
                let _ = inflater.process();
                *self.read += inflater.take_inflated();
                continue;
            }
            let n = self.read_transport(buf)?;
            let Some(inflater) = self.inflater.as_deref_mut() else {
                return Ok(n);
            };
            if n == 0 {
                return Ok(0);
            }
            // An error is recorded in the inflater and reported on the next turn.
            let _ = inflater.feed(&buf[..n]);
            *self.read += inflater.take_inflated();
        }
    }
}

impl Write for ProtocolIo<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    // unwrap() here asserts on sockets and channels the test itself set up.
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A plain hyper HTTP/1 server, as `axum::serve` runs one, sets no `TCP_NODELAY`; the
    /// transport taken from it must have it.
    #[tokio::test]
    async fn the_tcp_transport_taken_from_hyper_has_nodelay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            assert!(!stream.nodelay().unwrap(), "off as accepted");
            let tx = std::sync::Mutex::new(Some(tx));
            let service = hyper::service::service_fn(move |request| {
                let on_upgrade = hyper::upgrade::on(request);
                let tx = tx.lock().unwrap().take();
                tokio::spawn(async move {
                    let (transport, _, _) = Transport::from_upgraded(on_upgrade.await.unwrap());
                    if let Some(tx) = tx {
                        let _ = tx.send(transport.nodelay());
                    }
                });
                let response = http::Response::builder()
                    .status(http::StatusCode::SWITCHING_PROTOCOLS)
                    .header(http::header::CONNECTION, "upgrade")
                    .header(http::header::UPGRADE, "websocket")
                    .body(axum::body::Body::empty())
                    .unwrap();
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            )
            .await
            .unwrap();
        let nodelay = tokio::time::timeout(std::time::Duration::from_secs(10), rx)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(nodelay, Some(true));
    }
}
