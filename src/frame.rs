//! Server-to-client text frames, framed once and written as they are to every client.
//!
//! A WebSocket library frames each message per connection: it copies the payload into that
//! connection's write buffer behind a header. Our events are identical for every client and
//! server frames are unmasked, so the whole frame (header and payload) is built once, when
//! the event is encoded, and each client's socket is handed the same shared buffer.
//!
//! # permessage-deflate (RFC 7692)
//! Clients that negotiated compression get the frame's compressed twin instead: the payload
//! compressed as raw deflate with a sync flush, its trailing `00 00 ff ff` removed (§7.2.1),
//! behind a header with RSV1 set. The server never takes over its compression context
//! (`server_no_context_takeover` is always negotiated), so a message's compressed bytes do
//! not depend on what the connection sent before, and one twin serves every client. It is
//! computed lazily, by the first connection that writes the frame to a compressing client,
//! and kept beside the plain frame for the others: a server with no such client never
//! compresses anything, and whatever produces `TextFrame`s gets compression for free.
//!
//! A payload that does not shrink (tiny events, mostly) has no twin: the plain frame goes
//! out (RSV1 clear), which RFC 7692 §6 allows per message.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

use flate2::{Compress, Compression, FlushCompress, Status};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Data, OpCode};

/// Room left in front of the payload for the longest server header (2 + 8 bytes; server
/// frames carry no mask).
const HEADER_ROOM: usize = 10;

/// Payloads shorter than this are never compressed: a deflate block's own overhead (the
/// block header, the end code, Huffman tables) leaves nothing to gain below it.
const MIN_DEFLATE_PAYLOAD: usize = 64;

/// The compression level, zlib's scale (1 fastest … 9 smallest): 6, zlib's default. Each
/// event is compressed once whatever the number of clients, so the level costs per event,
/// not per delivery.
const DEFLATE_LEVEL: u32 = 6;

/// The empty stored block a sync flush ends with; RFC 7692 §7.2.1 removes it from the wire.
const SYNC_TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// One complete, final, unmasked WebSocket text frame. Cloning shares the buffer (and the
/// compressed twin, once computed).
#[derive(Clone, Debug)]
pub(crate) struct TextFrame(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    /// Header room, then the payload; the frame starts at `start`.
    buf: Vec<u8>,
    start: u8,
    /// The compressed twin: `Some` once computed and smaller than the plain frame.
    deflated: OnceLock<Option<Deflated>>,
}

/// A compressed frame: header room, then the compressed payload; the frame starts at `start`.
#[derive(Debug)]
struct Deflated {
    buf: Box<[u8]>,
    start: u8,
}

/// Which of a frame's two forms a connection sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    /// The plain frame, for clients without permessage-deflate.
    Plain,
    /// The compressed twin when it is smaller, else the plain frame.
    Deflate,
}

impl TextFrame {
    /// Frames the text that `write` appends to the buffer it is given. The payload is written
    /// once, straight behind room for the header, so framing it copies nothing.
    ///
    /// `write` must append valid UTF-8 (a text frame's payload); every caller writes JSON
    /// through serde_json, which only produces UTF-8. The crate encodes through
    /// `Counters::encode`, which counts every attempt (`HubStats::encodings`).
    pub(crate) fn encode<E>(write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>) -> Result<Self, E> {
        let mut buf = Vec::with_capacity(256);
        buf.resize(HEADER_ROOM, 0);
        write(&mut buf)?;
        debug_assert!(std::str::from_utf8(&buf[HEADER_ROOM..]).is_ok());
        let start = frame_header(&mut buf, false);
        Ok(TextFrame(Arc::new(Shared {
            buf,
            start: start as u8,
            deflated: OnceLock::new(),
        })))
    }

    /// The plain frame as it goes on the wire.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0.buf[usize::from(self.0.start)..]
    }

    /// The message's text, without the frame header.
    pub(crate) fn payload(&self) -> &[u8] {
        &self.0.buf[HEADER_ROOM..]
    }

    /// The frame as it goes to a client using `wire`, and whether this call compressed it
    /// (the first for this frame, among every connection that shares it: at most one call
    /// per frame returns `true`).
    pub(crate) fn wire(&self, wire: Wire) -> (&[u8], bool) {
        if wire == Wire::Plain {
            return (self.as_bytes(), false);
        }
        let mut compressed_here = false;
        let deflated = self.0.deflated.get_or_init(|| {
            compressed_here = true;
            deflate_frame(self.payload())
        });
        match deflated {
            Some(twin) => (&twin.buf[usize::from(twin.start)..], compressed_here),
            None => (self.as_bytes(), compressed_here),
        }
    }

    /// The payload length of the frame [`wire`](Self::wire) returns (the compressed one's
    /// when it is the twin), in bytes.
    pub(crate) fn wire_payload_len(&self, wire: Wire) -> usize {
        match (wire, self.0.deflated.get()) {
            (Wire::Deflate, Some(Some(twin))) => twin.buf.len() - HEADER_ROOM,
            _ => self.payload().len(),
        }
    }

    /// A frame carrying `text`, for tests.
    #[cfg(test)]
    pub(crate) fn from_text(text: &[u8]) -> Self {
        let framed = TextFrame::encode(|buf| {
            buf.extend_from_slice(text);
            Ok::<(), std::convert::Infallible>(())
        });
        match framed {
            Ok(frame) => frame,
            Err(never) => match never {},
        }
    }
}

/// Writes the header of a final, unmasked text frame (RSV1 set when `deflated`) in front of
/// the payload that follows `HEADER_ROOM` in `buf`; returns where the frame starts.
fn frame_header(buf: &mut [u8], deflated: bool) -> usize {
    let payload_len = (buf.len() - HEADER_ROOM) as u64;
    let header = FrameHeader {
        is_final: true,
        rsv1: deflated,
        opcode: OpCode::Data(Data::Text),
        mask: None,
        ..FrameHeader::default()
    };
    let header_len = header.len(payload_len);
    let start = HEADER_ROOM - header_len;
    // Formatting into a slice of exactly the header's length cannot run out of room.
    let mut room = &mut buf[start..HEADER_ROOM];
    let formatted = header.format(payload_len, &mut room);
    debug_assert!(formatted.is_ok() && room.is_empty());
    start
}

thread_local! {
    /// One compressor per thread, reset before each message: its state (some 300 KiB for a
    /// 32 KiB window) is allocated once per runtime worker, not once per event.
    static DEFLATER: RefCell<Option<Compress>> = const { RefCell::new(None) };
}

/// The compressed twin of a frame carrying `payload`: header (RSV1) and compressed payload,
/// or `None` when compressing does not make the frame smaller.
fn deflate_frame(payload: &[u8]) -> Option<Deflated> {
    if payload.len() < MIN_DEFLATE_PAYLOAD {
        return None;
    }
    DEFLATER.with(|cell| {
        let mut cell = cell.try_borrow_mut().ok()?;
        let compress = cell.get_or_insert_with(|| {
            // Raw deflate (no zlib header), 32 KiB window, as RFC 7692 §7.1.2.1's default.
            Compress::new(Compression::new(DEFLATE_LEVEL), false)
        });
        // No context takeover: every message starts from an empty window.
        compress.reset();
        deflate_into(compress, payload)
    })
}

/// Compresses `payload` into a buffer no larger than the plain payload (plus the sync
/// trailer, removed at the end); gives up (`None`) as soon as the output would not be smaller.
fn deflate_into(compress: &mut Compress, payload: &[u8]) -> Option<Deflated> {
    let mut buf = vec![0u8; HEADER_ROOM + payload.len() + SYNC_TRAILER.len()];
    let mut read = 0;
    let mut written = HEADER_ROOM;
    loop {
        let (in_before, out_before) = (compress.total_in(), compress.total_out());
        let status = compress
            .compress(&payload[read..], &mut buf[written..], FlushCompress::Sync)
            .ok()?;
        read += (compress.total_in() - in_before) as usize;
        written += (compress.total_out() - out_before) as usize;
        let flushed = read == payload.len() && written < buf.len();
        match status {
            // Room left after consuming everything: the sync flush completed.
            Status::Ok | Status::BufError if flushed => break,
            // Output full: the compressed form is not smaller than the plain one.
            _ if written == buf.len() => return None,
            Status::Ok => continue,
            Status::BufError | Status::StreamEnd => return None,
        }
    }
    if !buf[..written].ends_with(&SYNC_TRAILER) {
        return None;
    }
    written -= SYNC_TRAILER.len();
    if written - HEADER_ROOM >= payload.len() {
        return None;
    }
    buf.truncate(written);
    let start = frame_header(&mut buf, true);
    Some(Deflated {
        buf: buf.into_boxed_slice(),
        start: start as u8,
    })
}

#[cfg(test)]
mod tests {
    // unwrap()/expect() here are test assertions on values the test built.
    use super::*;
    use flate2::{Decompress, FlushDecompress};
    use std::io::Cursor;

    #[test]
    fn frames_parse_back_as_final_unmasked_text_of_their_length() {
        // The three length encodings: 7-bit, 16-bit and 64-bit.
        for (len, header_len) in [(0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            let frame = TextFrame::from_text(&vec![b'x'; len]);
            assert_eq!(frame.as_bytes().len(), header_len + len, "len {len}");
            assert_eq!(frame.payload().len(), len);
            let mut cursor = Cursor::new(frame.as_bytes());
            let (header, parsed_len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert_eq!(parsed_len, len as u64);
            assert_eq!(cursor.position() as usize, header_len);
            assert!(header.is_final && header.mask.is_none() && !header.rsv1);
            assert_eq!(header.opcode, OpCode::Data(Data::Text));
        }
    }

    #[test]
    fn an_encoding_error_is_returned_as_is() {
        let result = TextFrame::encode(|_| Err("no"));
        assert_eq!(result.err(), Some("no"));
    }

    /// Parses a frame and inflates its payload as a client would (RFC 7692 §7.2.2: append
    /// the sync trailer, inflate raw deflate); returns RSV1 and the text.
    fn client_reads(frame: &[u8]) -> (bool, Vec<u8>) {
        let mut cursor = Cursor::new(frame);
        let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        let payload = &frame[cursor.position() as usize..];
        assert_eq!(payload.len() as u64, len, "one whole frame");
        assert!(header.is_final && header.mask.is_none());
        if !header.rsv1 {
            return (false, payload.to_vec());
        }
        let mut input = payload.to_vec();
        input.extend_from_slice(&SYNC_TRAILER);
        let mut inflate = Decompress::new(false);
        let mut out = Vec::with_capacity(4 << 20);
        inflate
            .decompress_vec(&input, &mut out, FlushDecompress::Sync)
            .unwrap();
        assert_eq!(inflate.total_in() as usize, input.len());
        (true, out)
    }

    #[test]
    fn the_compressed_twin_inflates_to_the_payload_and_is_computed_once() {
        // Every header length, JSON-like (compressible) text.
        for repeats in [2, 10, 1_000, 20_000] {
            let text =
                r#"{"id":"a8d0e2f4","source":"codex","activity":"thinking"}"#.repeat(repeats);
            let frame = TextFrame::from_text(text.as_bytes());
            let clone = frame.clone();
            let (wire, first) = frame.wire(Wire::Deflate);
            assert!(first, "the first call compresses");
            assert!(wire.len() < frame.as_bytes().len(), "smaller");
            assert_eq!(client_reads(wire), (true, text.clone().into_bytes()));
            let (again, second) = clone.wire(Wire::Deflate);
            assert!(!second, "a clone shares the twin");
            assert_eq!(again.as_ptr(), wire.as_ptr(), "the same bytes");
            assert_eq!(frame.wire(Wire::Plain), (frame.as_bytes(), false));
        }
    }

    #[test]
    fn frames_that_do_not_shrink_go_out_plain() {
        // Too short to try.
        let tiny = TextFrame::from_text(br#"{"seq":1}"#);
        let (wire, computed) = tiny.wire(Wire::Deflate);
        assert!(computed);
        assert_eq!(wire, tiny.as_bytes());
        // Incompressible: every byte different from a xorshift stream (as base64-ish text).
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                    [(x % 64) as usize]
            })
            .collect();
        let frame = TextFrame::from_text(&noise);
        let (wire, _) = frame.wire(Wire::Deflate);
        // 64 symbols: 6 bits of 8, so deflate does shrink it; raw bytes would not. Either
        // way what goes out must read back as the payload.
        assert_eq!(client_reads(wire).1, noise);
        let random: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 56) as u8
            })
            .collect();
        // Not UTF-8, but compress_into only sees bytes.
        let mut compress = Compress::new(Compression::new(DEFLATE_LEVEL), false);
        assert!(
            deflate_into(&mut compress, &random).is_none(),
            "random bytes never shrink"
        );
    }
}
