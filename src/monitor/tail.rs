//! Incremental line reading: each JSONL log is read from a saved byte offset, a buffer at a
//! time, never from the start again and never whole into memory.
//!
//! - Only regular files are read: [`open_regular`] opens without blocking (`O_NONBLOCK`,
//!   `O_NOCTTY` on Unix) and checks the type of what it opened (`fstat`), so a FIFO, socket
//!   or device file put where a log is expected never blocks the monitor.
//! - One [`Tail::read`] reads at most up to the length the file had when it was opened, and
//!   stops earlier at its [`Limit`] (bytes and a deadline); the outcome says whether unread
//!   bytes are left ([`ReadOutcome::behind`]), and the next call goes on from there.
//! - Only newline-terminated lines are handed out; a partial last line is kept (at most
//!   [`MAX_LINE`] bytes) until its newline arrives.
//! - A line longer than [`MAX_LINE`] is skipped up to the next newline and counted in
//!   [`ReadOutcome::over_long`]; reading goes on after it (Go's reader stopped for good).
//! - A file that shrank below the offset (truncated) or whose identity changed (replaced,
//!   e.g. by a rename over it) is read again from the start, and the outcome says so
//!   ([`ReadOutcome::restarted`]) so the caller derives that file's counters again from
//!   scratch instead of counting twice.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Instant;

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

/// What kind of file a path that is not a regular file is, for logs and counters.
pub(crate) fn special_kind(meta: &Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "fifo";
        }
        if t.is_socket() {
            return "socket";
        }
        if t.is_char_device() {
            return "char device";
        }
        if t.is_block_device() {
            return "block device";
        }
    }
    if meta.is_dir() { "directory" } else { "other" }
}

/// What [`open_regular`] found at a path.
#[derive(Debug)]
pub(crate) enum Opened {
    /// A regular file, open for reading, with its metadata from the open descriptor.
    File(File, Metadata),
    /// Not a regular file (FIFO, socket, device, directory): nothing was read from it. The
    /// name says which ([`special_kind`]).
    Special(&'static str),
}

/// Opens `path` for reading if, and only if, it is a regular file (links followed), without
/// ever blocking: the type is checked with `stat` first (so a FIFO is never opened, which
/// would disturb its writer), and again with `fstat` on the opened descriptor (the path may
/// have been replaced in between). On Unix the open is `O_NONBLOCK | O_NOCTTY`, so even a
/// FIFO or terminal swapped in after the `stat` cannot block or become the controlling
/// terminal; a Unix socket cannot be opened at all and is reported as
/// [`Opened::Special`].
///
/// # Errors
/// The path does not exist or cannot be opened or `stat`ed.
pub(crate) fn open_regular(path: &Path) -> io::Result<Opened> {
    let before = std::fs::metadata(path)?;
    if !before.is_file() {
        return Ok(Opened::Special(special_kind(&before)));
    }
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(
            (rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY).bits() as i32,
        );
    }
    let file = match options.open(path) {
        Ok(file) => file,
        // A socket swapped in after the `stat`.
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) => {
            return Ok(Opened::Special("socket"));
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(Opened::Special(special_kind(&meta)));
    }
    Ok(Opened::File(file, meta))
}

/// How much one [`Tail::read`] may read: it stops at whichever comes first. At least one
/// buffer (64 KiB) is read whatever the limit, so every call makes progress.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit {
    /// Bytes.
    pub(crate) bytes: u64,
    /// When to stop, checked after each buffer.
    pub(crate) until: Option<Instant>,
}

impl Limit {
    /// No limit but the file's length at open.
    #[cfg(test)]
    pub(crate) const NONE: Limit = Limit {
        bytes: u64::MAX,
        until: None,
    };
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
    /// The read stopped at its [`Limit`] with bytes of the file left unread.
    pub(crate) behind: bool,
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
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads what was appended to `file` since the last call, up to the length `meta` gives
    /// and within `limit`, handing each complete line to `on` (after an [`Item::Restart`] if
    /// the file has to be read again from the start).
    ///
    /// `file` and `meta` come from [`open_regular`]: `meta` describes the open descriptor, so
    /// truncation and replacement are judged on the file actually read.
    ///
    /// # Errors
    /// Seeking or reading failed; the offset then stays after the last complete buffer, so a
    /// later call goes on from there.
    pub(crate) fn read(
        &mut self,
        file: &mut File,
        meta: &Metadata,
        limit: Limit,
        mut on: impl FnMut(Item<'_>),
    ) -> io::Result<ReadOutcome> {
        let mut outcome = ReadOutcome::default();
        let id = FileId::of(meta);
        let len = meta.len();
        if len < self.offset || self.id.is_some_and(|old| old != id) {
            *self = Tail::new();
            outcome.restarted = true;
            on(Item::Restart);
        }
        self.id = Some(id);
        if len == self.offset {
            return Ok(outcome);
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = vec![0u8; CHUNK];
        let mut on_line = |line: &[u8]| on(Item::Line(line));
        while self.offset < len {
            if outcome.bytes > 0
                && (outcome.bytes >= limit.bytes
                    || limit.until.is_some_and(|t| Instant::now() >= t))
            {
                outcome.behind = true;
                break;
            }
            let want = usize::try_from(len - self.offset).map_or(CHUNK, |left| left.min(CHUNK));
            let n = match file.read(&mut buf[..want]) {
                // Truncated while reading: the next call sees the new length.
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
        read_limited(tail, path, Limit::NONE)
    }

    fn read_limited(tail: &mut Tail, path: &Path, limit: Limit) -> (ReadOutcome, Vec<String>) {
        let Opened::File(mut file, meta) = open_regular(path).unwrap() else {
            panic!("not a regular file");
        };
        let mut lines = Vec::new();
        let outcome = tail
            .read(&mut file, &meta, limit, |item| match item {
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

    #[test]
    fn a_limited_read_goes_on_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let line = format!("{}\n", "y".repeat(999));
        std::fs::write(&path, line.repeat(300)).unwrap();
        let mut tail = Tail::new();
        let limit = Limit {
            bytes: 100_000,
            until: None,
        };
        let mut total = 0;
        let mut reads = 0;
        loop {
            let (o, lines) = read_limited(&mut tail, &path, limit);
            assert!(o.bytes <= 100_000 + CHUNK as u64, "{o:?}");
            assert!(lines.iter().all(|l| l.len() == 999));
            total += lines.len();
            reads += 1;
            if !o.behind {
                break;
            }
        }
        assert_eq!((total, tail.offset()), (300, 300_000));
        assert!(reads >= 3, "{reads} reads");
        // A deadline already past still reads one buffer: every call makes progress.
        let mut tail = Tail::new();
        let past = Limit {
            bytes: u64::MAX,
            until: Some(Instant::now()),
        };
        let (o, _) = read_limited(&mut tail, &path, past);
        assert!(o.behind && o.bytes == CHUNK as u64, "{o:?}");
    }

    #[cfg(unix)]
    #[test]
    fn only_regular_files_are_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.jsonl");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let socket = dir.path().join("socket.jsonl");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let zero = dir.path().join("zero.jsonl");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        for (path, kind) in [(&fifo, "fifo"), (&socket, "socket"), (&zero, "char device")] {
            match open_regular(path).unwrap() {
                Opened::Special(k) => assert_eq!(k, kind),
                Opened::File(..) => panic!("{kind} opened as a regular file"),
            }
        }
    }
}
