//! Incremental line reading: each JSONL log is read from a saved byte offset, a buffer at a
//! time, never from the start again and never whole into memory.
//!
//! - Only newline-terminated lines are handed out; a partial last line is kept (at most
//!   [`MAX_LINE`] bytes) until its newline arrives.
//! - A line longer than [`MAX_LINE`] is skipped up to the next newline and counted in
//!   [`ReadOutcome::over_long`]; reading goes on after it (Go's reader stopped for good).
//! - A file that shrank below the offset (truncated) or whose identity changed (replaced,
//!   e.g. by a rename over it) is read again from the start, and the outcome says so
//!   ([`ReadOutcome::restarted`]) so the caller derives that file's counters again from
//!   scratch instead of counting twice.

use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// The longest line handed out, newline excluded: 1 MiB. Longer lines are skipped.
pub(crate) const MAX_LINE: usize = 1 << 20;

/// Bytes read per `read(2)`.
const CHUNK: usize = 64 * 1024;

/// Identity of a file: device and inode on Unix (nothing elsewhere, where only truncation
/// is detected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FileId(u64, u64);

impl FileId {
    /// The identity of the file `meta` describes.
    pub(crate) fn of(meta: &Metadata) -> Self {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            FileId(meta.dev(), meta.ino())
        }
        #[cfg(not(unix))]
        {
            let _ = meta;
            FileId(0, 0)
        }
    }
}

/// What [`Tail::read`] hands its callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Item<'a> {
    /// The file was truncated or replaced: what was derived from it so far is void; lines
    /// from the start follow.
    Restart,
    /// One complete line, without its newline (and without a trailing `\r`).
    Line(&'a [u8]),
}

/// What one [`Tail::read`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadOutcome {
    /// The file was truncated or replaced and read again from the start.
    pub(crate) restarted: bool,
    /// Complete lines handed out.
    pub(crate) lines: u64,
    /// Lines skipped for being longer than [`MAX_LINE`].
    pub(crate) over_long: u64,
    /// Bytes read.
    pub(crate) bytes: u64,
}

/// The read position in one file.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    /// Bytes consumed so far, including `partial`.
    offset: u64,
    id: Option<FileId>,
    /// The start of a line whose newline has not arrived yet.
    partial: Vec<u8>,
    /// Inside an over-long line: drop bytes up to the next newline.
    skipping: bool,
}

impl Tail {
    /// A reader at the start of a file.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Bytes consumed so far.
    #[cfg(test)]
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads what was appended to `path` since the last call, handing each complete line to
    /// `on` (after an [`Item::Restart`] if the file has to be read again from the start).
    ///
    /// `meta` is the file's current metadata (from `std::fs::metadata`), used to detect
    /// truncation and replacement before reading.
    ///
    /// # Errors
    /// Opening, seeking or reading the file failed; the offset then stays where the last
    /// complete read left it, so a later call retries.
    pub(crate) fn read(
        &mut self,
        path: &Path,
        meta: &Metadata,
        mut on: impl FnMut(Item<'_>),
    ) -> io::Result<ReadOutcome> {
        let mut outcome = ReadOutcome::default();
        let id = FileId::of(meta);
        if meta.len() < self.offset || self.id.is_some_and(|old| old != id) {
            *self = Tail::new();
            outcome.restarted = true;
            on(Item::Restart);
        }
        self.id = Some(id);
        if meta.len() == self.offset {
            return Ok(outcome);
        }
        let mut file = File::open(path)?;
        // The file may have been replaced between `metadata` and `open`: trust the open one.
        let opened = FileId::of(&file.metadata()?);
        if opened != id {
            if self.offset > 0 {
                outcome.restarted = true;
                on(Item::Restart);
            }
            *self = Tail::new();
            self.id = Some(opened);
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = vec![0u8; CHUNK];
        let mut on_line = |line: &[u8]| on(Item::Line(line));
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.offset += n as u64;
            outcome.bytes += n as u64;
            self.consume(&buf[..n], &mut outcome, &mut on_line);
        }
        Ok(outcome)
    }

    fn consume(
        &mut self,
        mut chunk: &[u8],
        outcome: &mut ReadOutcome,
        on_line: &mut impl FnMut(&[u8]),
    ) {
        while let Some(pos) = memchr::memchr(b'\n', chunk) {
            let piece = &chunk[..pos];
            chunk = &chunk[pos + 1..];
            if self.skipping {
                self.skipping = false;
                continue;
            }
            if self.partial.len() + piece.len() > MAX_LINE {
                self.partial.clear();
                outcome.over_long += 1;
                continue;
            }
            outcome.lines += 1;
            if self.partial.is_empty() {
                on_line(trim_cr(piece));
            } else {
                self.partial.extend_from_slice(piece);
                let line = std::mem::take(&mut self.partial);
                on_line(trim_cr(&line));
                // Keep the allocation for the next partial line, unless it grew large.
                if line.capacity() <= CHUNK {
                    self.partial = line;
                    self.partial.clear();
                }
            }
        }
        if self.skipping || chunk.is_empty() {
            return;
        }
        if self.partial.len() + chunk.len() > MAX_LINE {
            self.partial = Vec::new();
            self.skipping = true;
            outcome.over_long += 1;
        } else {
            self.partial.extend_from_slice(chunk);
        }
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read_all(tail: &mut Tail, path: &Path) -> (ReadOutcome, Vec<String>) {
        let meta = std::fs::metadata(path).unwrap();
        let mut lines = Vec::new();
        let outcome = tail
            .read(path, &meta, |item| match item {
                Item::Line(l) => lines.push(String::from_utf8_lossy(l).into_owned()),
                Item::Restart => lines.push("<restart>".to_owned()),
            })
            .unwrap();
        (outcome, lines)
    }

    #[test]
    fn partial_lines_wait_for_their_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"one\ntw").unwrap();
        let mut tail = Tail::new();
        assert_eq!(read_all(&mut tail, &path).1, ["one"]);
        f.write_all(b"o\r\nthree").unwrap();
        assert_eq!(read_all(&mut tail, &path).1, ["two"]);
        f.write_all(b"\n").unwrap();
        assert_eq!(read_all(&mut tail, &path).1, ["three"]);
        assert_eq!(read_all(&mut tail, &path).1, Vec::<String>::new());
        assert_eq!(tail.offset(), 15);
    }

    #[test]
    fn over_long_lines_are_skipped_not_stalled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"a\n").unwrap();
        f.write_all(&vec![b'x'; MAX_LINE + 10]).unwrap();
        let mut tail = Tail::new();
        let (o, lines) = read_all(&mut tail, &path);
        assert_eq!((lines.len(), o.over_long), (1, 1));
        f.write_all(b"yyy\nb\n").unwrap();
        let (o, lines) = read_all(&mut tail, &path);
        assert_eq!((lines, o.over_long), (vec!["b".to_string()], 0));
        // An over-long line arriving whole in one read.
        f.write_all(&vec![b'z'; MAX_LINE + 1]).unwrap();
        f.write_all(b"\nc\n").unwrap();
        let (o, lines) = read_all(&mut tail, &path);
        assert_eq!((lines, o.over_long), (vec!["c".to_string()], 1));
    }

    #[test]
    fn truncation_and_replacement_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        std::fs::write(&path, b"one\ntwo\n").unwrap();
        let mut tail = Tail::new();
        assert_eq!(read_all(&mut tail, &path).1.len(), 2);
        std::fs::write(&path, b"x\n").unwrap();
        let (o, lines) = read_all(&mut tail, &path);
        assert!(o.restarted);
        assert_eq!(lines, ["<restart>", "x"]);
        // Replaced by a rename: a different inode, even if longer.
        let other = dir.path().join("b.jsonl");
        std::fs::write(&other, b"p\nq\nr\n").unwrap();
        std::fs::rename(&other, &path).unwrap();
        let (o, lines) = read_all(&mut tail, &path);
        assert!(o.restarted);
        assert_eq!(lines, ["<restart>", "p", "q", "r"]);
    }
}
