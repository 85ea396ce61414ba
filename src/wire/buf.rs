//! A tiny fixed-capacity byte buffer on the stack, used to lay out timestamps and
//! numbers without allocating.

use std::{fmt, io};

/// Fixed-capacity ASCII/UTF-8 buffer. Writes past the capacity are refused
/// (`fmt::Error` / `false`) instead of panicking.
pub(crate) struct StackBuf<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> StackBuf<N> {
    /// An empty buffer.
    pub(crate) const fn new() -> Self {
        Self {
            bytes: [0; N],
            len: 0,
        }
    }

    /// Appends one ASCII byte. Returns `false` (and writes nothing) when full.
    #[inline]
    pub(crate) fn push(&mut self, b: u8) -> bool {
        debug_assert!(b.is_ascii());
        if self.len < N {
            self.bytes[self.len] = b;
            self.len += 1;
            true
        } else {
            false
        }
    }

    /// Appends a string. Returns `false` (and writes nothing) when it does not fit.
    #[inline]
    pub(crate) fn push_str(&mut self, s: &str) -> bool {
        let b = s.as_bytes();
        match self.bytes.get_mut(self.len..self.len + b.len()) {
            Some(dst) => {
                dst.copy_from_slice(b);
                self.len += b.len();
                true
            }
            None => false,
        }
    }

    /// Appends ASCII bytes. Returns `false` (and writes nothing) when they do not fit.
    #[inline]
    pub(crate) fn push_ascii(&mut self, b: &[u8]) -> bool {
        debug_assert!(b.is_ascii());
        match self.bytes.get_mut(self.len..self.len + b.len()) {
            Some(dst) if b.is_ascii() => {
                dst.copy_from_slice(b);
                self.len += b.len();
                true
            }
            _ => false,
        }
    }

    /// Appends `n` as decimal, zero-padded to at least `width` digits.
    pub(crate) fn push_padded(&mut self, n: u64, width: usize) -> bool {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut n = n;
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let used = digits.len() - i;
        for _ in used..width {
            if !self.push(b'0') {
                return false;
            }
        }
        for &d in &digits[i..] {
            if !self.push(d) {
                return false;
            }
        }
        true
    }

    /// The bytes written so far.
    #[inline]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The text written so far. Only `&str` and ASCII bytes are ever pushed, so this
    /// is always valid UTF-8.
    #[inline]
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl<const N: usize> fmt::Write for StackBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.push_str(s) {
            Ok(())
        } else {
            Err(fmt::Error)
        }
    }
}

impl<const N: usize> io::Write for StackBuf<N> {
    /// Accepts only valid UTF-8 that fits entirely; used to capture serde_json's
    /// (ASCII) number output.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(s) if self.push_str(s) => Ok(buf.len()),
            _ => Err(io::ErrorKind::WriteZero.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    // Here unwrap() and expect() are assertions on values the test itself built: a failure
    // fails the test, with the message. The module is built for `cargo test` only.
    use super::StackBuf;
    use std::fmt::Write;
    use std::io;

    #[test]
    fn padded_and_overflow() {
        let mut b = StackBuf::<8>::new();
        assert!(b.push_padded(7, 4));
        assert!(b.push(b'-'));
        assert_eq!(b.as_str(), "0007-");
        assert!(!b.push_str("abcd"));
        assert_eq!(b.as_str(), "0007-");
        assert!(write!(b, "abcd").is_err());
        assert!(b.push_padded(123, 0));
        assert_eq!(b.as_str(), "0007-123");
        assert!(!b.push(b'x'));
        let mut z = StackBuf::<4>::new();
        assert!(z.push_padded(0, 1));
        assert_eq!(z.as_str(), "0");
        let mut io_buf = StackBuf::<4>::new();
        assert!(io::Write::write_all(&mut io_buf, b"1e21").is_ok());
        assert!(io::Write::write_all(&mut io_buf, b"x").is_err());
        assert!(io::Write::write_all(&mut StackBuf::<4>::new(), b"\xff").is_err());
        let mut m = StackBuf::<20>::new();
        assert!(m.push_padded(u64::MAX, 2));
        assert_eq!(m.as_str(), u64::MAX.to_string());
    }
}
