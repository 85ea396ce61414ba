//! Server-to-client text frames, framed once and written as they are to every client.
//!
//! A WebSocket library frames each message per connection: it copies the payload into that
//! connection's write buffer behind a header. Our events are identical for every client and
//! server frames are unmasked, so the whole frame (header and payload) is built once, when
//! the event is encoded, and each client's socket is handed the same shared buffer.

use bytes::Bytes;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Data, OpCode};

/// Room left in front of the payload for the longest server header (2 + 8 bytes; server
/// frames carry no mask).
const HEADER_ROOM: usize = 10;

/// One complete, final, unmasked WebSocket text frame. Cloning shares the buffer.
#[derive(Clone, Debug)]
pub(crate) struct TextFrame {
    bytes: Bytes,
    header_len: u8,
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
        let payload_len = (buf.len() - HEADER_ROOM) as u64;
        let header = FrameHeader {
            is_final: true,
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
        Ok(TextFrame {
            bytes: Bytes::from(buf).slice(start..),
            header_len: header_len as u8,
        })
    }

    /// The frame as it goes on the wire.
    pub(crate) fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The message's text, without the frame header.
    pub(crate) fn payload(&self) -> &[u8] {
        &self.bytes[usize::from(self.header_len)..]
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

#[cfg(test)]
mod tests {
    // unwrap()/expect() here are test assertions on values the test built.
    use super::*;
    use std::io::Cursor;

    #[test]
    fn frames_parse_back_as_final_unmasked_text_of_their_length() {
        // The three length encodings: 7-bit, 16-bit and 64-bit.
        for (len, header_len) in [(0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            let frame = TextFrame::from_text(&vec![b'x'; len]);
            assert_eq!(frame.as_bytes().len(), header_len + len, "len {len}");
            assert_eq!(frame.payload().len(), len);
            let mut cursor = Cursor::new(frame.as_bytes().as_ref());
            let (header, parsed_len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert_eq!(parsed_len, len as u64);
            assert_eq!(cursor.position() as usize, header_len);
            assert!(header.is_final && header.mask.is_none());
            assert_eq!(header.opcode, OpCode::Data(Data::Text));
        }
    }

    #[test]
    fn an_encoding_error_is_returned_as_is() {
        let result = TextFrame::encode(|_| Err("no"));
        assert_eq!(result.err(), Some("no"));
    }
}
