//! The closing handshake (RFC 6455 §7.1), done so that the close frame reaches the client.
//!
//! Dropping a socket that still holds unread client data makes the kernel answer with a TCP
//! reset, and a reset can reach the client before it has read the close frame: a browser then
//! reports 1006 with no reason instead of the code we sent. So after the close frame, the
//! server shuts down its write half (the client reads the close frame, then the end of the
//! stream) and keeps reading and discarding what the client sends until the client's close
//! frame or the end of its stream, for at most [`CLOSE_GRACE`]; only then is the socket
//! dropped. A client that keeps sending more than [`DRAIN_LIMIT`] meanwhile is no longer read
//! (TCP flow control holds it back) but keeps the grace period to read the close frame. The
//! server thus closes the TCP connection first, as §7.1.1 asks.

use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;

use super::end::End;
use super::outbox::Outbox;
use super::socket::Socket;

/// How long saying goodbye may take, close frame and the client's answer included, before
/// the socket is simply dropped.
pub(super) const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The most a closing connection reads from the client while waiting for its answer.
pub(super) const DRAIN_LIMIT: u64 = 1024 * 1024;

/// Ends the connection: sends the close frame `end` calls for (or the answer to the client's
/// close), after the frame already in progress, when the socket takes it within the grace
/// period; then shuts down the write half and drains the read half; then drops nothing
/// itself (the caller drops the socket).
pub(super) async fn finish(out: &mut Outbox, end: End, socket: &mut Socket) {
    out.keep_only_close();
    match end.close_frame() {
        Some((code, reason)) => {
            socket.close(code, reason);
            socket.take_control(|kind, frame| out.push_control(kind, frame));
        }
        // tungstenite queued its answer to the client's close when it read it.
        None if end == End::ClientClosed => {}
        // The socket is stuck, gone or broken: nothing more to say on it.
        None => return,
    }
    let closed = tokio::time::timeout(CLOSE_GRACE, async {
        while out.is_busy() {
            poll_fn(|cx| out.poll_drive(socket, cx)).await?;
        }
        poll_fn(|cx| socket.poll_shutdown(cx)).await?;
        drain(socket).await;
        Ok::<(), std::io::Error>(())
    })
    .await;
    match closed {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "close handshake failed"),
        Err(_) => tracing::debug!("close handshake did not complete within the grace period"),
    }
}

/// Reads until the client's close frame (while the client's frames can still be parsed:
/// not after a read error), the end of its stream or a read error. After [`DRAIN_LIMIT`] bytes it reads no
/// more but never returns: the socket stays open, without costing CPU, until the caller's
/// grace period ends, so that a client still sending has that long to read the close frame
/// before the reset that dropping the socket then causes.
async fn drain(socket: &mut Socket) {
    // Not after a read error: the bytes that follow a broken or oversized frame are not
    // frames, and the parser that failed is not used again.
    let mut parse = !socket.is_failed();
    let mut read = socket.take_read();
    while read < DRAIN_LIMIT {
        let more = poll_fn(|cx| {
            if parse {
                match socket.poll_recv(cx) {
                    Poll::Ready(Some(Ok(message))) => Poll::Ready(Some(!message.is_close())),
                    Poll::Ready(None) => Poll::Ready(Some(false)),
                    // Nothing parses any more: read the rest as bytes.
                    Poll::Ready(Some(Err(_))) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            } else {
                match socket.poll_discard(cx) {
                    Poll::Ready(Ok(n)) => Poll::Ready(Some(n > 0)),
                    Poll::Ready(Err(_)) => Poll::Ready(Some(false)),
                    Poll::Pending => Poll::Pending,
                }
            }
        })
        .await;
        match more {
            Some(true) => {}
            Some(false) => return,
            None => parse = false,
        }
        read += socket.take_read();
    }
    tracing::debug!(read, "client kept sending after the close frame");
    std::future::pending::<()>().await;
}
