//! What a client sends compressed (permessage-deflate, RFC 7692), inflated with a bound
//! before tungstenite parses it.
//!
//! tungstenite implements no extension: it fails a frame with RSV1 set. On a connection that
//! negotiated permessage-deflate, the bytes read from the client go through an [`Inflater`]
//! first. It follows the frame boundaries (headers are parsed, payloads counted), passes every
//! frame through untouched except those of a compressed message (RSV1 on its first frame,
//! §6.1), whose payload it unmasks and inflates, then hands tungstenite the inflated frame in
//! their place: same FIN and opcode, RSV1 clear, masked with the zero key. Everything else
//! tungstenite checks as before (RSV1 on a control or continuation frame, an unmasked frame,
//! fragmentation, UTF-8 of the inflated text), since such frames pass through as they came.
//!
//! Inflation is bounded by `max_message_size`: a message whose inflated size would pass it
//! stops inflating at once and fails the read with tungstenite's own capacity error, so the
//! connection closes with 1009 as for an uncompressed message that is too big, and no more
//! than `max_message_size` plus one output chunk ([`CHUNK`]) is ever held, whatever the
//! compression ratio. The compressed frame itself is bounded the same way (a frame is
//! passed to tungstenite only whole, and no frame may be larger than `max_message_size`),
//! and so is a read full of small compressed frames: they are inflated as tungstenite takes
//! them, while at most [`READY_LIMIT`] bytes (plus one frame) wait.
//!
//! The inflater (zlib's state and its 32 KiB window) is created by the first compressed
//! message only: browsers never send one, so an ordinary connection pays nothing. With
//! `client_no_context_takeover` negotiated it is dropped after each message; without it the
//! client may refer back to earlier messages (§7.2.3), so it keeps its window.

use flate2::{Decompress, FlushDecompress, Status};

use crate::upgrade::Deflate;

/// Bytes inflated per call to zlib: also the most the output may overshoot the bound by.
const CHUNK: usize = 16 * 1024;

/// The trailer a sender removes from every compressed message (§7.2.2: append it back).
const SYNC_TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Bytes waiting for tungstenite past which [`Inflater::process`] stops (one inflated frame
/// may go past it: a frame is handed over whole).
const READY_LIMIT: usize = 16 * 1024;

/// The longest client frame header: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_HEADER: usize = 14;

/// Why the inflater stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// A compressed message inflates (or a compressed frame is) larger than
    /// `max_message_size`: `size` is how far it got before inflating stopped.
    TooBig { size: usize },
    /// The payload is not a valid deflate stream.
    Corrupt,
}

impl std::fmt::Display for InflateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InflateError::TooBig { size } => {
                write!(f, "compressed message inflates past {size} bytes")
            }
            InflateError::Corrupt => f.write_str("invalid compressed data"),
        }
    }
}

impl std::error::Error for InflateError {}

/// Where the inflater is in the client's stream of frames.
enum State {
    /// Reading a frame header: the bytes so far.
    Header { buf: [u8; MAX_HEADER], len: usize },
    /// Passing a payload through untouched: bytes left.
    Pass { remaining: u64 },
    /// Inflating a compressed frame's payload.
    Inflate(Box<Compressed>),
}

/// A compressed frame being read.
struct Compressed {
    /// The frame's first byte (FIN, RSV1, opcode).
    first: u8,
    mask: [u8; 4],
    /// Payload bytes read so far (the mask's phase).
    read: u64,
    len: u64,
    /// Inflated bytes of this frame.
    out: Vec<u8>,
}

/// Inflates the compressed messages in a client's byte stream; see the module docs.
pub(crate) struct Inflater {
    deflate: Deflate,
    max_message_size: usize,
    state: State,
    /// Inside a compressed message (its continuation frames are compressed too).
    in_message: bool,
    /// Inflated bytes of the message so far.
    message_len: usize,
    inflate: Option<Box<Decompress>>,
    /// Bytes for tungstenite, from `ready_from` on.
    ready: Vec<u8>,
    ready_from: usize,
    /// Bytes read from the client not yet processed, from `raw_from` on.
    raw: Vec<u8>,
    raw_from: usize,
    /// Inflated payload bytes produced since the last [`take_inflated`](Self::take_inflated).
    inflated: u64,
    failed: Option<InflateError>,
}

impl Inflater {
    pub(crate) fn new(deflate: Deflate, max_message_size: usize) -> Self {
        Inflater {
            deflate,
            max_message_size,
            state: State::Header {
                buf: [0; MAX_HEADER],
                len: 0,
            },
            in_message: false,
            message_len: 0,
            inflate: None,
            ready: Vec::new(),
            ready_from: 0,
            raw: Vec::new(),
            raw_from: 0,
            inflated: 0,
            failed: None,
        }
    }

    /// Why inflating stopped, if it did: nothing more is accepted then.
    pub(crate) fn failed(&self) -> Option<InflateError> {
        self.failed
    }

    /// Inflated bytes produced since the last call.
    pub(crate) fn take_inflated(&mut self) -> u64 {
        std::mem::take(&mut self.inflated)
    }

    /// Whether bytes wait for tungstenite.
    pub(crate) fn has_ready(&self) -> bool {
        self.ready_from < self.ready.len()
    }

    /// Copies bytes ready for tungstenite into `buf`; returns how many.
    pub(crate) fn read_ready(&mut self, buf: &mut [u8]) -> usize {
        let ready = &self.ready[self.ready_from..];
        let n = ready.len().min(buf.len());
        buf[..n].copy_from_slice(&ready[..n]);
        self.ready_from += n;
        if self.ready_from == self.ready.len() {
            self.ready.clear();
            self.ready_from = 0;
            if self.ready.capacity() > CHUNK {
                // A large inflated frame went through: give its buffer back.
                self.ready = Vec::new();
            }
        }
        n
    }

    /// Takes bytes read from the client and processes what it can of them (see
    /// [`process`](Self::process)). Errors (and every call after one) say why the stream
    /// cannot go on; bytes ready before stay readable.
    pub(crate) fn feed(&mut self, input: &[u8]) -> Result<(), InflateError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        self.raw.extend_from_slice(input);
        self.process()
    }

    /// Whether bytes fed are not yet processed: call [`process`](Self::process) once the
    /// ready bytes are taken.
    pub(crate) fn has_pending(&self) -> bool {
        self.failed.is_none() && self.raw_from < self.raw.len()
    }

    /// Processes the bytes fed, until [`READY_LIMIT`] bytes wait for tungstenite: a read
    /// full of small compressed frames (each inflating to up to `max_message_size`) is
    /// inflated a few frames at a time as tungstenite takes them, never all at once.
    pub(crate) fn process(&mut self) -> Result<(), InflateError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        let raw = std::mem::take(&mut self.raw);
        let mut result = Ok(());
        while self.raw_from < raw.len() && self.ready.len() - self.ready_from < READY_LIMIT {
            match self.step(&raw[self.raw_from..]) {
                Ok(consumed) => self.raw_from += consumed,
                Err(error) => {
                    self.failed = Some(error);
                    // Whatever was inflated is dropped now, not when the connection ends.
                    self.state = State::Pass { remaining: 0 };
                    self.inflate = None;
                    result = Err(error);
                    break;
                }
            }
        }
        self.raw = raw;
        if self.raw_from == self.raw.len() || self.failed.is_some() {
            self.raw.clear();
            self.raw_from = 0;
        }
        result
    }

    /// Takes what it can of `input` in the current state; returns how many bytes.
    fn step(&mut self, input: &[u8]) -> Result<usize, InflateError> {
        match &mut self.state {
            State::Header { buf, len } => {
                // Two bytes first; they tell how long the rest of the header is.
                let need = header_len(&buf[..*len]).unwrap_or(2);
                let take = (need - *len).min(input.len());
                buf[*len..*len + take].copy_from_slice(&input[..take]);
                *len += take;
                let (buf, len) = (*buf, *len);
                if header_len(&buf[..len]) == Some(len) {
                    self.start_frame(&buf[..len])?;
                }
                Ok(take)
            }
            State::Pass { remaining } => {
                let take = (input.len() as u64).min(*remaining) as usize;
                self.ready.extend_from_slice(&input[..take]);
                *remaining -= take as u64;
                if *remaining == 0 {
                    self.state = header_state();
                }
                Ok(take)
            }
            State::Inflate(_) => self.inflate_payload(input),
        }
    }

    /// A whole header was read: decides whether its frame passes through or is inflated.
    fn start_frame(&mut self, header: &[u8]) -> Result<(), InflateError> {
        let (first, second) = (header[0], header[1]);
        let len = payload_len(header);
        let opcode = first & 0x0f;
        let rsv1 = first & 0x40 != 0;
        let masked = second & 0x80 != 0;
        // RSV1 on the first frame of a text or binary message; continuations of a compressed
        // message carry RSV1 clear (§6.1). Anything else passes through for tungstenite to
        // judge (RSV1 on a control or continuation frame, an unmasked frame).
        let compressed = masked
            && first & 0x30 == 0
            && match opcode {
                1 | 2 => rsv1 && !self.in_message,
                0 => !rsv1 && self.in_message,
                _ => false,
            };
        if !compressed {
            self.ready.extend_from_slice(header);
            self.state = if len == 0 {
                header_state()
            } else {
                State::Pass { remaining: len }
            };
            return Ok(());
        }
        if len > self.max_message_size as u64 {
            return Err(InflateError::TooBig {
                size: usize::try_from(len).unwrap_or(usize::MAX),
            });
        }
        self.in_message = true;
        let mask_at = header.len() - 4;
        let mut mask = [0; 4];
        mask.copy_from_slice(&header[mask_at..]);
        self.state = State::Inflate(Box::new(Compressed {
            first,
            mask,
            read: 0,
            len,
            out: Vec::new(),
        }));
        if len == 0 {
            return self.finish_frame();
        }
        Ok(())
    }

    /// Unmasks and inflates what `input` holds of the compressed frame's payload.
    fn inflate_payload(&mut self, input: &[u8]) -> Result<usize, InflateError> {
        let State::Inflate(frame) = &mut self.state else {
            return Ok(0);
        };
        let take = (input.len() as u64).min(frame.len - frame.read) as usize;
        let mut chunk = [0u8; 1024];
        let mut done = 0;
        while done < take {
            let n = (take - done).min(chunk.len());
            for (i, (out, byte)) in chunk[..n].iter_mut().zip(&input[done..]).enumerate() {
                *out = byte ^ frame.mask[((frame.read as usize) + i) % 4];
            }
            frame.read += n as u64;
            done += n;
            let inflate = self
                .inflate
                .get_or_insert_with(|| Box::new(Decompress::new(false)));
            inflate_into(
                inflate,
                &chunk[..n],
                &mut frame.out,
                self.message_len,
                self.max_message_size,
            )?;
        }
        if frame.read == frame.len {
            self.finish_frame()?;
        }
        Ok(take)
    }

    /// The compressed frame was read whole: ends its message if it is the last, and hands
    /// tungstenite the inflated frame.
    fn finish_frame(&mut self) -> Result<(), InflateError> {
        let State::Inflate(mut frame) = std::mem::replace(&mut self.state, header_state()) else {
            return Ok(());
        };
        let fin = frame.first & 0x80 != 0;
        if fin {
            let inflate = self
                .inflate
                .get_or_insert_with(|| Box::new(Decompress::new(false)));
            inflate_into(
                inflate,
                &SYNC_TRAILER,
                &mut frame.out,
                self.message_len,
                self.max_message_size,
            )?;
        }
        self.message_len += frame.out.len();
        self.inflated += frame.out.len() as u64;
        if fin {
            self.in_message = false;
            self.message_len = 0;
            if self.deflate.client_no_context_takeover {
                // The next message starts from an empty window: nothing to keep.
                self.inflate = None;
            }
        }
        // The same frame, uncompressed: RSV1 clear, masked with the zero key.
        let len = frame.out.len() as u64;
        self.ready.push(frame.first & !0x40);
        match len {
            0..=125 => self.ready.push(0x80 | len as u8),
            126..=0xffff => {
                self.ready.push(0x80 | 126);
                self.ready.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                self.ready.push(0x80 | 127);
                self.ready.extend_from_slice(&len.to_be_bytes());
            }
        }
        self.ready.extend_from_slice(&[0; 4]);
        self.ready.extend_from_slice(&frame.out);
        Ok(())
    }
}

fn header_state() -> State {
    State::Header {
        buf: [0; MAX_HEADER],
        len: 0,
    }
}

/// The length of the header that starts with `bytes`, once its first two bytes are there.
fn header_len(bytes: &[u8]) -> Option<usize> {
    let second = *bytes.get(1)?;
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    Some(2 + extended + mask)
}

/// The payload length a whole header declares.
fn payload_len(header: &[u8]) -> u64 {
    match header[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
        127 => {
            let mut len = [0; 8];
            len.copy_from_slice(&header[2..10]);
            u64::from_be_bytes(len)
        }
        len => u64::from(len),
    }
}

/// Inflates `input` into `out`, failing as soon as the message (`before` bytes in earlier
/// frames, plus `out`) passes `max`. `out` never grows past `max + 1 - before` bytes: zlib
/// writes only into the capacity reserved here.
fn inflate_into(
    inflate: &mut Decompress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    before: usize,
    max: usize,
) -> Result<(), InflateError> {
    let too_big = |out: &Vec<u8>| InflateError::TooBig {
        size: before + out.len(),
    };
    loop {
        let room = (max + 1).saturating_sub(before + out.len()).min(CHUNK);
        if room == 0 {
            return Err(too_big(out));
        }
        // Exactly: `decompress_vec` fills the spare capacity, which stays within the bound.
        out.reserve_exact(room);
        let (in_before, out_before) = (inflate.total_in(), inflate.total_out());
        let status = inflate
            .decompress_vec(input, out, FlushDecompress::Sync)
            .map_err(|_| InflateError::Corrupt)?;
        let consumed = (inflate.total_in() - in_before) as usize;
        let produced = (inflate.total_out() - out_before) as usize;
        input = &input[consumed..];
        if before + out.len() > max {
            return Err(too_big(out));
        }
        match status {
            // The client ended the deflate stream (BFINAL): what follows starts a new one.
            Status::StreamEnd => {
                inflate.reset(false);
                if input.is_empty() {
                    return Ok(());
                }
            }
            // Everything taken and the output not full: nothing is pending in zlib.
            _ if input.is_empty() && out.len() < out.capacity() => return Ok(()),
            _ if consumed == 0 && produced == 0 => {
                // zlib moves neither way: with input left and room for output, only a
                // broken stream does that.
                return if input.is_empty() {
                    Ok(())
                } else {
                    Err(InflateError::Corrupt)
                };
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    // unwrap()/expect() here are test assertions on values the test built.
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut compress = Compress::new(Compression::default(), false);
        let mut out = Vec::with_capacity(data.len() + 64);
        compress
            .compress_vec(data, &mut out, FlushCompress::Sync)
            .unwrap();
        assert!(out.ends_with(&SYNC_TRAILER));
        out.truncate(out.len() - 4);
        out
    }

    /// A masked client frame.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![first];
        match payload.len() {
            len @ 0..=125 => out.push(0x80 | len as u8),
            len @ 126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn drain(inflater: &mut Inflater) -> Vec<u8> {
        let mut out = vec![0; 1 << 20];
        let n = inflater.read_ready(&mut out);
        out.truncate(n);
        out
    }

    #[test]
    fn compressed_messages_come_out_inflated_and_others_untouched_at_any_split() {
        let text = b"{\"hello\":\"world\",\"hello again\":\"world\"}".repeat(20);
        let compressed = deflate(&text);
        let ping = frame(0x89, b"ping");
        let plain = frame(0x81, b"plain");
        let mut stream = ping.clone();
        stream.extend(frame(0xc1, &compressed));
        stream.extend(&plain);
        // A fragmented compressed message: RSV1 on the first frame only.
        let (a, b) = compressed.split_at(compressed.len() / 2);
        stream.extend(frame(0x41, a));
        stream.extend(frame(0x00, &[]));
        stream.extend(frame(0x80, b));
        let mut expected = ping.clone();
        expected.extend(frame_zero_mask(0x81, &text));
        expected.extend(&plain);
        for split in [1, 2, 3, 7, 100, stream.len()] {
            let mut inflater = Inflater::new(Deflate::default(), 1 << 20);
            let mut got = Vec::new();
            for piece in stream.chunks(split) {
                inflater.feed(piece).unwrap();
                got.extend(drain(&mut inflater));
            }
            assert_eq!(got[..expected.len()], expected[..], "split {split}");
            // The fragments: inflated per frame, RSV1 cleared, the halves' text in order.
            let rest = &got[expected.len()..];
            let mut inflated = Vec::new();
            let mut at = 0;
            let mut firsts = Vec::new();
            while at < rest.len() {
                let len = header_len(&rest[at..]).unwrap();
                let payload = payload_len(&rest[at..at + len]) as usize;
                firsts.push(rest[at]);
                inflated.extend_from_slice(&rest[at + len..at + len + payload]);
                at += len + payload;
            }
            assert_eq!(firsts, [0x01, 0x00, 0x80]);
            assert_eq!(inflated, text, "split {split}");
        }
    }

    /// A frame as the inflater re-frames it: masked with the zero key.
    fn frame_zero_mask(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            len @ 0..=125 => out.push(0x80 | len as u8),
            len => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn a_bomb_stops_at_the_bound_and_corrupt_data_fails() {
        let bomb = deflate(&vec![b'a'; 10 << 20]);
        assert!(bomb.len() < 16 * 1024, "{}", bomb.len());
        let mut inflater = Inflater::new(Deflate::default(), 4096);
        // Too big as a frame already.
        let error = inflater.feed(&frame(0xc1, &bomb)).unwrap_err();
        assert!(matches!(error, InflateError::TooBig { .. }));
        let small_bomb = deflate(&vec![b'a'; 1 << 20]);
        assert!(small_bomb.len() <= 4096, "{}", small_bomb.len());
        let mut inflater = Inflater::new(Deflate::default(), 4096);
        let error = inflater.feed(&frame(0xc1, &small_bomb)).unwrap_err();
        let InflateError::TooBig { size } = error else {
            panic!("{error:?}")
        };
        assert!(size > 4096 && size <= 4096 + CHUNK, "{size}");
        assert_eq!(inflater.feed(b"x"), Err(error), "stays failed");
        assert!(!inflater.has_ready());

        let mut inflater = Inflater::new(Deflate::default(), 4096);
        assert_eq!(
            inflater.feed(&frame(0xc1, &[0xff; 40])),
            Err(InflateError::Corrupt)
        );
    }

    /// Random client streams (frames with random first bytes, lengths around the encodings'
    /// boundaries, compressed or random payloads), fed in random pieces: nothing panics,
    /// what waits for tungstenite stays bounded, and a failure sticks.
    #[test]
    fn random_streams_never_panic_and_stay_bounded() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let good = deflate(&b"{\"a\":\"bcdefgh\"}".repeat(40));
        for _ in 0..2_000 {
            let mut stream = Vec::new();
            for _ in 0..1 + next(6) {
                let first = [0xc1, 0x41, 0x80, 0x00, 0xc9, 0x81, next(256) as u8][next(7)];
                let payload: Vec<u8> = match next(3) {
                    0 => good.clone(),
                    1 => good[..next(good.len())].to_vec(),
                    _ => (0..next(300)).map(|_| next(256) as u8).collect(),
                };
                let mut f = frame(first, &payload);
                if next(10) == 0 {
                    // A mangled length or mask bit.
                    f[1] ^= 1 << next(8);
                }
                stream.extend(f);
            }
            let mut inflater = Inflater::new(Deflate::default(), 4096);
            let mut failed = None;
            let mut at = 0;
            while at < stream.len() {
                let end = (at + 1 + next(64)).min(stream.len());
                let mut result = inflater.feed(&stream[at..end]);
                loop {
                    match result {
                        Ok(()) => assert!(failed.is_none(), "a failure did not stick"),
                        Err(error) => {
                            assert!(failed.is_none_or(|f| f == error));
                            failed = Some(error);
                        }
                    }
                    // At most the limit plus one inflated frame (max_message_size + 1 and
                    // a header) waits at once.
                    assert!(inflater.ready.len() <= READY_LIMIT + 4096 + 1 + 14);
                    drain(&mut inflater);
                    if !inflater.has_pending() {
                        break;
                    }
                    result = inflater.process();
                }
                at = end;
            }
        }
    }

    /// A read full of small frames that each inflate to just under the bound is inflated
    /// as tungstenite takes it, not all at once.
    #[test]
    fn many_small_bombs_in_one_read_are_inflated_a_few_at_a_time() {
        let small = deflate(&[b'a'; 4000]);
        let one = frame(0xc1, &small);
        let stream = one.repeat(64 * 1024 / one.len());
        let mut inflater = Inflater::new(Deflate::default(), 4096);
        inflater.feed(&stream).unwrap();
        let mut frames = 0;
        loop {
            assert!(inflater.ready.len() <= READY_LIMIT + 4096 + 1 + 14);
            let ready = drain(&mut inflater);
            frames += ready.len() / (4000 + 8);
            if !inflater.has_pending() {
                break;
            }
            inflater.process().unwrap();
        }
        assert_eq!(frames, stream.len() / one.len(), "every frame, inflated");
    }

    #[test]
    fn context_takeover_is_kept_unless_negotiated_away() {
        // Two messages compressed with one context: the second refers back to the first.
        let mut compress = Compress::new(Compression::default(), false);
        let text = b"the same sentence, said twice over. ".repeat(4);
        let mut messages = Vec::new();
        for _ in 0..2 {
            let mut out = Vec::with_capacity(1024);
            compress
                .compress_vec(&text, &mut out, FlushCompress::Sync)
                .unwrap();
            out.truncate(out.len() - 4);
            messages.push(out);
        }
        assert!(messages[1].len() < messages[0].len() / 2, "refers back");
        let mut inflater = Inflater::new(Deflate::default(), 4096);
        for message in &messages {
            inflater.feed(&frame(0xc1, message)).unwrap();
            assert_eq!(drain(&mut inflater), frame_zero_mask(0x81, &text));
        }
        assert!(inflater.inflate.is_some(), "the window is kept");
        let takeover_off = Deflate {
            client_no_context_takeover: true,
            ..Deflate::default()
        };
        let mut inflater = Inflater::new(takeover_off, 4096);
        inflater.feed(&frame(0xc1, &messages[0])).unwrap();
        assert!(inflater.inflate.is_none(), "dropped after the message");
    }
}
