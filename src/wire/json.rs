//! Go `encoding/json` byte compatibility: [`GoFormatter`], [`to_vec`], [`to_writer`]
//! and the serde field helpers the wire structs use.

use std::fmt::Write as _;
use std::io;

use serde::ser::{Error as _, Serialize, Serializer};
use serde_json::ser::{CharEscape, Formatter};

use super::buf::StackBuf;

/// A [`serde_json` `Formatter`](Formatter) that writes what Go's `json.Marshal` writes.
///
/// Compact output (no whitespace), plus Go's choices where serde_json's default
/// formatter differs:
///
/// * **Strings**: `<`, `>` and `&` become `\u003c`, `\u003e`, `\u0026`, and U+2028 /
///   U+2029 become `\u2028` / `\u2029` (Go's HTML-safe escaping). `"` and `\` are
///   backslash-escaped; control characters use `\b \f \n \r \t` or `\u00XX` with
///   lowercase hex. Everything else, including DEL, `/` and non-BMP characters, is
///   written as raw UTF-8. Unescaped runs are written with one `write_all` each.
/// * **Floats**: the shortest digits that round-trip, as plain decimals when
///   `1e-6 <= |x| < 1e21` (`0.000001`, `1`, `100000000000000000000`) and in exponent
///   form otherwise, with an explicit exponent sign and no leading zeros (`1e-7`,
///   `1e+21`, `1.7976931348623157e+308`). `-0.0` is `-0`. When the exact value lies
///   exactly halfway between the two closest shortest candidates, the even one is
///   taken, as Go does (`0.11804580688476562`, not `...563`).
/// * Integers are written as serde_json writes them (plain decimal), which is Go's form.
///
/// serde_json's serializer itself turns NaN and ±infinity into `null` before a
/// formatter sees them, where Go fails instead. The wire types in this module refuse
/// non-finite floats in their own `Serialize` impls; if you use `GoFormatter` with your
/// own types, check finiteness yourself.
///
/// ```
/// use agentwatch_ws::wire::GoFormatter;
///
/// let mut out = Vec::new();
/// let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
/// serde::Serialize::serialize(&("<a&b>", 1e21, 1.0, 0.000001), &mut ser)?;
/// assert_eq!(out, br#"["\u003ca\u0026b\u003e",1e+21,1,0.000001]"#);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GoFormatter;

impl Formatter for GoFormatter {
    #[inline]
    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        let mut buf = StackBuf::<FLOAT_CAP>::new();
        format_go_f64(value, &mut buf);
        writer.write_all(buf.as_bytes())
    }

    #[inline]
    fn write_f32<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        let mut buf = StackBuf::<FLOAT_CAP>::new();
        format_go_f32(value, &mut buf);
        writer.write_all(buf.as_bytes())
    }

    #[inline]
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // serde_json has already split out `"`, `\` and control characters; what is left
        // to escape here is Go's HTML-safe set. `fragment` is valid UTF-8 and serde_json
        // only splits at ASCII bytes, so a U+2028/U+2029 sequence is never cut.
        let bytes = fragment.as_bytes();
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            // Skip up to 8 bytes at a time while none of them can start an escape (a
            // short tail is zero-padded; zero bytes never need escaping here).
            let chunk = &bytes[i..bytes.len().min(i + 8)];
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            if !may_need_escape(u64::from_le_bytes(word)) {
                i += chunk.len();
                continue;
            }
            let escape: &[u8] = match bytes[i] {
                b'<' => b"\\u003c",
                b'>' => b"\\u003e",
                b'&' => b"\\u0026",
                0xE2 if bytes.get(i + 1) == Some(&0x80) => match bytes.get(i + 2) {
                    Some(0xA8) => b"\\u2028",
                    Some(0xA9) => b"\\u2029",
                    _ => {
                        i += 1;
                        continue;
                    }
                },
                _ => {
                    i += 1;
                    continue;
                }
            };
            if start < i {
                writer.write_all(&bytes[start..i])?;
            }
            writer.write_all(escape)?;
            i += if bytes[i] == 0xE2 { 3 } else { 1 };
            start = i;
        }
        if start < bytes.len() {
            writer.write_all(&bytes[start..])?;
        }
        Ok(())
    }

    #[inline]
    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        char_escape: CharEscape,
    ) -> io::Result<()> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let two: &[u8] = match char_escape {
            CharEscape::Quote => b"\\\"",
            CharEscape::ReverseSolidus => b"\\\\",
            // Go never escapes `/`; serde_json never asks, but be explicit.
            CharEscape::Solidus => b"/",
            CharEscape::Backspace => b"\\b",
            CharEscape::FormFeed => b"\\f",
            CharEscape::LineFeed => b"\\n",
            CharEscape::CarriageReturn => b"\\r",
            CharEscape::Tab => b"\\t",
            CharEscape::AsciiControl(byte) => {
                let esc = [
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(byte >> 4)],
                    HEX[usize::from(byte & 0xF)],
                ];
                return writer.write_all(&esc);
            }
        };
        writer.write_all(two)
    }
}

/// Whether any byte of `word` is `<`, `>`, `&` or `0xE2` (the lead byte of U+2028 and
/// U+2029): the bytes [`GoFormatter`] escapes beyond serde_json's own set. Exact (no
/// false negatives or positives), using the classic "has zero byte" bit trick.
#[inline]
fn may_need_escape(word: u64) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    #[inline]
    fn has_zero_byte(x: u64) -> bool {
        x.wrapping_sub(LO) & !x & HI != 0
    }
    // `<` (0x3C) and `>` (0x3E) differ only in bit 1: OR it in and compare with 0x3E.
    has_zero_byte((word | (LO * 0x02)) ^ (LO * 0x3E))
        || has_zero_byte(word ^ (LO * u64::from(b'&')))
        || has_zero_byte(word ^ (LO * 0xE2))
}

/// Serializes `value` as Go's `json.Marshal` would: compact, Go's escaping and float
/// layout, no trailing newline.
///
/// Fails (never panics) on values Go cannot encode either: NaN or infinite
/// `contextUtilization`, timestamps whose year is outside 0..=9999.
///
/// ```
/// use agentwatch_ws::{Event, Health, HealthStatus, Timestamp, wire};
///
/// let at = Timestamp::parse("2025-03-14T09:32:00Z")?;
/// let mut ev = Event::health(202, Health {
///     source: "gemini-cli".into(),
///     status: HealthStatus::Failed,
///     discover_failures: 4,
///     parse_failures: 2,
///     last_error: "open <path>: permission denied".into(),
///     updated_at: at,
///     ..Default::default()
/// });
/// ev.at = at;
/// let bytes = wire::to_vec(&ev)?;
/// assert_eq!(
///     std::str::from_utf8(&bytes)?,
///     r#"{"seq":202,"at":"2025-03-14T09:32:00Z","type":"health","health":{"source":"gemini-cli","status":"failed","discoverFailures":4,"parseFailures":2,"lastError":"open \u003cpath\u003e: permission denied","updatedAt":"2025-03-14T09:32:00Z"}}"#
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(256);
    to_writer(&mut out, value)?;
    Ok(out)
}

/// Like [`to_vec`], writing into `writer`. On error, part of the output may already
/// have been written.
///
/// Many small writes are issued: wrap unbuffered sinks (files, sockets) in a
/// [`BufWriter`](std::io::BufWriter).
pub fn to_writer<W: io::Write, T: Serialize + ?Sized>(
    writer: W,
    value: &T,
) -> Result<(), serde_json::Error> {
    let mut ser = serde_json::Serializer::with_formatter(writer, GoFormatter);
    value.serialize(&mut ser)
}

// ---------------------------------------------------------------------------
// Floats.
// ---------------------------------------------------------------------------

/// Big enough for any layout: at most 17 significant digits, plus either up to 21
/// integer digits, or `0.` and 5 leading zeros, or an exponent, plus a sign.
const FLOAT_CAP: usize = 48;

/// Writes `v` as Go's `encoding/json` writes a `float64` (`v` should be finite; NaN
/// and infinities are written as Rust prints them, which is never valid JSON).
pub(crate) fn format_go_f64<const N: usize>(v: f64, out: &mut StackBuf<N>) {
    let abs = v.abs();
    let exp_form = abs != 0.0 && !(1e-6..1e21).contains(&abs);
    format_go(v, exp_form, out);
}

/// Writes `v` as Go's `encoding/json` writes a `float32`: the shortest digits that
/// round-trip through `f32`, with the same layout thresholds evaluated in `f32`.
pub(crate) fn format_go_f32<const N: usize>(v: f32, out: &mut StackBuf<N>) {
    let abs = v.abs();
    let exp_form = abs != 0.0 && !(1e-6f32..1e21f32).contains(&abs);
    format_go(v, exp_form, out);
}

/// What the float formatting needs from `f64` and `f32`.
trait GoFloat: Copy + PartialEq + std::fmt::Display + std::str::FromStr {
    fn is_finite(self) -> bool;
    /// `|self| = mantissa * 2^exponent`, for finite values.
    fn binary_parts(self) -> (u64, i32);
    fn abs(self) -> Self;
    /// Writes the shortest round-trip digits, in any JSON number layout.
    fn write_shortest<W: io::Write>(self, w: &mut W) -> io::Result<()>;
}

impl GoFloat for f64 {
    fn is_finite(self) -> bool {
        f64::is_finite(self)
    }

    fn binary_parts(self) -> (u64, i32) {
        let bits = self.to_bits();
        let frac = bits & ((1 << 52) - 1);
        match ((bits >> 52) & 0x7FF) as i32 {
            0 => (frac, -1074),
            e => (frac | 1 << 52, e - 1075),
        }
    }

    fn abs(self) -> Self {
        f64::abs(self)
    }

    fn write_shortest<W: io::Write>(self, w: &mut W) -> io::Result<()> {
        serde_json::ser::CompactFormatter.write_f64(w, self)
    }
}

impl GoFloat for f32 {
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }

    fn binary_parts(self) -> (u64, i32) {
        let bits = self.to_bits();
        let frac = u64::from(bits & ((1 << 23) - 1));
        match ((bits >> 23) & 0xFF) as i32 {
            0 => (frac, -149),
            e => (frac | 1 << 23, e - 150),
        }
    }

    fn abs(self) -> Self {
        f32::abs(self)
    }

    fn write_shortest<W: io::Write>(self, w: &mut W) -> io::Result<()> {
        serde_json::ser::CompactFormatter.write_f32(w, self)
    }
}

/// Shortest round-trip digits, laid out Go's way.
///
/// The digits come from serde_json's own float formatter (shortest round-trip digits,
/// closest to the exact value, like Go's; the unit tests check this against Rust's
/// standard library formatting). Its layout (`1.0`, `1e21`, `1e-7`, ...) is parsed back
/// into digits and a decimal exponent and laid out again. Exact ties between two
/// shortest candidates are settled Go's way by [`round_half_even`].
fn format_go<F: GoFloat, const N: usize>(v: F, exp_form: bool, out: &mut StackBuf<N>) {
    let mut tmp = StackBuf::<FLOAT_CAP>::new();
    if !v.is_finite() {
        let _ = write!(tmp, "{v}");
        out.push_str(tmp.as_str());
        return;
    }
    if v.write_shortest(&mut tmp).is_err() {
        // Cannot happen (at most ~25 bytes); fall back to the standard library's form.
        tmp = StackBuf::new();
        let _ = write!(tmp, "{v}");
    }
    let s = tmp.as_bytes();

    // Fast path: a plain decimal that cannot be a tie is already Go's layout, but for
    // the `.0` some formatters append to integers.
    if !exp_form && tie_candidate(v).is_none() && !s.iter().any(|&c| c == b'e' || c == b'E') {
        let plain = s.strip_suffix(b".0").unwrap_or(s);
        let has_point = plain.contains(&b'.');
        if !(has_point && plain.last() == Some(&b'0')) && out.push_ascii(plain) {
            return;
        }
    }

    let (negative, s) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    let e_pos = s
        .iter()
        .position(|&c| c == b'e' || c == b'E')
        .unwrap_or(s.len());
    let (mantissa, exp_part) = s.split_at(e_pos);
    let written_exp: i32 = std::str::from_utf8(exp_part.get(1..).unwrap_or_default())
        .ok()
        .and_then(|e| e.strip_prefix('+').unwrap_or(e).parse().ok())
        .unwrap_or(0);

    // Significant digits without the point or leading zeros ("0.00120" -> "12"), and
    // the number of digits before the decimal point (negative for leading zeros).
    let mut digit_buf = [0u8; 32];
    let mut nd = 0;
    let mut point: i32 = 0;
    let mut seen_point = false;
    for &c in mantissa {
        match c {
            b'.' => seen_point = true,
            b'0' if nd == 0 && seen_point => point -= 1,
            b'0' if nd == 0 => {}
            b'0'..=b'9' if nd < digit_buf.len() => {
                digit_buf[nd] = c;
                nd += 1;
                if !seen_point {
                    point += 1;
                }
            }
            _ => {}
        }
    }
    while nd > 0 && digit_buf[nd - 1] == b'0' {
        nd -= 1;
    }
    // Decimal exponent of the first significant digit.
    let exp = if nd == 0 {
        digit_buf[0] = b'0';
        nd = 1;
        0
    } else {
        point + written_exp - 1
    };
    let digits = &mut digit_buf[..nd];
    round_half_even(v, digits, exp);
    let digits = &*digits;

    if negative {
        out.push(b'-');
    }
    if exp_form {
        // d[.ddd]e±X
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            for &d in &digits[1..] {
                out.push(d);
            }
        }
        out.push(b'e');
        out.push(if exp < 0 { b'-' } else { b'+' });
        out.push_padded(u64::from(exp.unsigned_abs()), 1);
    } else if exp < 0 {
        // 0.000ddd
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push(b'0');
        }
        for &d in digits {
            out.push(d);
        }
    } else {
        // ddd[000][.ddd]
        let int_len = exp as usize + 1;
        for i in 0..int_len {
            out.push(digits.get(i).copied().unwrap_or(b'0'));
        }
        if digits.len() > int_len {
            out.push(b'.');
            for &d in &digits[int_len..] {
                out.push(d);
            }
        }
    }
}

/// If `|v|` is a decimal `exact × 10^-k` with at most 18 digits and `k ≥ 1` (so
/// `exact` ends in 5), returns `(exact, k)`: only such values can be exact ties
/// between two shortest candidates. Everything else is `None` after a few integer
/// operations.
#[inline]
fn tie_candidate<F: GoFloat>(v: F) -> Option<(u128, u32)> {
    let (m, e2) = v.binary_parts();
    if m == 0 {
        return None;
    }
    let tz = m.trailing_zeros();
    let (m, e2) = (m >> tz, e2 + tz as i32);
    // |v| = m × 2^e2 with m odd. Integers can't tie (odd ones below 2^53 are exact,
    // even ones don't end in 5), and for k = -e2 > 27 the exact expansion m × 5^k
    // has more than 18 digits.
    if !(-27..0).contains(&e2) {
        return None;
    }
    let k = e2.unsigned_abs();
    // |v| = m × 5^k × 10^-k, and m × 5^k is odd and a multiple of 5: it ends in 5.
    let exact = u128::from(m) * 5u128.pow(k);
    (exact < 10u128.pow(18)).then_some((exact, k))
}

/// Number of decimal digits of `n` (`n > 0`).
fn decimal_len(n: u128) -> usize {
    n.checked_ilog10().map_or(1, |l| l as usize + 1)
}

/// Makes the shortest `digits` (value `digits × 10^(exp - len + 1)`) Go's choice in
/// the one case where shortest-digit algorithms differ: the exact binary value is a
/// decimal with exactly one more digit than the shortest form, ending in 5, so the two
/// nearest shortest candidates are equally close. Go (Ryū) takes the even one; Rust's
/// standard library, for one, takes the upper one.
///
/// Only values `m × 2^-k` (m odd, k ≥ 1) whose exact expansion `m × 5^k` has at most
/// 18 digits can be such a tie; everything else returns after a few integer operations.
fn round_half_even<F: GoFloat>(v: F, digits: &mut [u8], exp: i32) {
    let Some((exact, k)) = tie_candidate(v) else {
        return;
    };
    let nd = digits.len();
    if decimal_len(exact) != nd + 1 {
        return;
    }
    // Both forms must sit at the same decimal position: exact = P5 × 10^-k.
    if exp - nd as i32 + 1 != 1 - k as i32 {
        return;
    }
    let lower = exact / 10;
    let even = if lower % 2 == 0 { lower } else { lower + 1 };
    if decimal_len(even) != nd {
        return;
    }
    let rust = digits
        .iter()
        .fold(0u128, |acc, &d| acc * 10 + u128::from(d - b'0'));
    if rust == even {
        return;
    }
    // Take the even candidate only if it still round-trips (it can fall outside the
    // narrower lower half-interval below a power of two; Go then rounds up too).
    let mut text = StackBuf::<FLOAT_CAP>::new();
    let _ = write!(text, "{even}e{}", 1 - k as i32);
    if text.as_str().parse::<F>().ok() == Some(v.abs()) {
        let mut n = even;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }
}

// ---------------------------------------------------------------------------
// serde field helpers.
// ---------------------------------------------------------------------------

/// `skip_serializing_if` for Go's `omitempty` on an `int`.
pub(crate) fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// `serialize_with` for `float64` fields: Go's `json.Marshal` refuses NaN and ±Inf
/// (serde_json would silently write `null`).
pub(crate) fn finite_f64<S: Serializer>(v: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        serializer.serialize_f64(*v)
    } else {
        let shown = if v.is_nan() {
            "NaN"
        } else if *v > 0.0 {
            "+Inf"
        } else {
            "-Inf"
        };
        Err(S::Error::custom(format_args!(
            "json: unsupported value: {shown}"
        )))
    }
}

#[cfg(test)]
mod tests {
    // Here unwrap() and expect() are assertions on values the test itself built: a failure
    // fails the test, with the message. The module is built for `cargo test` only.
    use super::*;

    fn go(v: f64) -> String {
        let mut b = StackBuf::<FLOAT_CAP>::new();
        format_go_f64(v, &mut b);
        b.as_str().to_owned()
    }

    fn go32(v: f32) -> String {
        let mut b = StackBuf::<FLOAT_CAP>::new();
        format_go_f32(v, &mut b);
        b.as_str().to_owned()
    }

    fn enc<T: Serialize + ?Sized>(v: &T) -> String {
        String::from_utf8(to_vec(v).unwrap()).unwrap()
    }

    #[test]
    fn float_layouts() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (-1.0, "-1"),
            (0.1, "0.1"),
            (0.5, "0.5"),
            (1.5, "1.5"),
            (2.0 / 3.0, "0.6666666666666666"),
            (0.333333333333, "0.333333333333"),
            (0.771605, "0.771605"),
            (1e-6, "0.000001"),
            (-1e-6, "-0.000001"),
            (1.5e-6, "0.0000015"),
            (1.234e-5, "0.00001234"),
            (9.99e-7, "9.99e-7"),
            (1e-7, "1e-7"),
            (-1e-7, "-1e-7"),
            (1.25e-10, "1.25e-10"),
            (1e-100, "1e-100"),
            (1e20, "100000000000000000000"),
            (123456789012345680000.0, "123456789012345680000"),
            (1e21, "1e+21"),
            (-1e21, "-1e+21"),
            (1.5e21, "1.5e+21"),
            (1e22, "1e+22"),
            (1e100, "1e+100"),
            (123456789.125, "123456789.125"),
            (100.0, "100"),
            (1234.5, "1234.5"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::MIN, "-1.7976931348623157e+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (5e-324, "5e-324"),
            (-5e-324, "-5e-324"),
            (9007199254740993.0, "9007199254740992"),
            (0.1 + 0.2, "0.30000000000000004"),
            (999999999999999900000.0, "999999999999999900000"),
        ];
        for &(v, want) in cases {
            assert_eq!(go(v), want, "{v:?}");
            assert_eq!(enc(&v), want, "{v:?}");
        }
    }

    #[test]
    fn exact_ties_round_half_even_like_go() {
        // The exact value is halfway between two shortest candidates; Go takes the even one.
        let tie = 32_826_376_843_575.0 + 5.0 / 16.0; // exactly ...575.3125
        assert_eq!(go(tie), "32826376843575.312");
        assert_eq!(go(-tie), "-32826376843575.312");
        assert_eq!(go(2f64.powi(-25)), "2.9802322387695312e-8");
        // Ties whose lower neighbour is odd round up, as in Rust.
        assert_eq!(go(tie + 0.125), "32826376843575.438");
        // Reference outputs of Go's json.Marshal for tie values (few fraction bits, as
        // in a token count divided by a power-of-two window size).
        let go_reference: &[(u64, &str)] = &[
            (0x3fbe384000000000, "0.11804580688476562"),
            (0x3fefb11000000000, "0.9903640747070312"),
            (0x3fbf314000000000, "0.12184524536132812"),
            (0x41c7aa0409608000, "794036242.7539062"),
            (0x3fe4f01000000000, "0.6543045043945312"),
            (0x3f62aa0000000000, "0.0022783279418945312"),
            (0x4149a6db42100000, "3362230.5161132812"),
            (0x3f53440000000000, "0.0011758804321289062"),
            (0x3eba000000000000, "0.0000015497207641601562"),
            (0x3ecd000000000000, "0.0000034570693969726562"),
            (0x3eb2000000000000, "0.0000010728836059570312"),
            (0x3efa400000000000, "0.000025033950805664062"),
        ];
        for &(bits, want) in go_reference {
            assert_eq!(go(f64::from_bits(bits)), want, "{bits:#x}");
        }
        // Not ties: unchanged.
        assert_eq!(go(0.3125), "0.3125");
        assert_eq!(go(2f64.powi(-24)), "5.960464477539063e-8");
    }

    #[test]
    fn float32_layouts() {
        assert_eq!(go32(0.1), "0.1");
        assert_eq!(go32(1.0), "1");
        assert_eq!(go32(-0.0), "-0");
        assert_eq!(go32(1e-7), "1e-7");
        assert_eq!(go32(1e21), "1e+21");
        assert_eq!(go32(f32::MAX), "3.4028235e+38");
        assert_eq!(go32(16777216.0), "16777216");
        assert_eq!(enc(&0.1f32), "0.1");
    }

    /// A small deterministic PRNG (xorshift64*), so no dependency is needed.
    fn rng(state: &mut u64) -> u64 {
        let mut x = *state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    #[test]
    fn random_floats_roundtrip_and_follow_layout_rules() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut checked = 0;
        let mut ties = 0;
        while checked < 200_000 {
            let r = rng(&mut state);
            // Mix raw bit patterns (all magnitudes) with values in the usual 0..1 range.
            let v = if checked % 2 == 0 {
                f64::from_bits(r)
            } else {
                (r >> 11) as f64 / (1u64 << 53) as f64
            };
            if !v.is_finite() {
                continue;
            }
            checked += 1;
            let s = go(v);
            let back: f64 = s.parse().unwrap();
            assert_eq!(back.to_bits(), v.to_bits(), "{v:?} -> {s}");
            let abs = v.abs();
            if abs == 0.0 || (1e-6..1e21).contains(&abs) {
                // Plain decimals: Rust's shortest `Display` form, except that exact
                // ties go to the even last digit (Rust rounds them up).
                let rust = v.to_string();
                if s != rust {
                    ties += 1;
                    assert_eq!(s.len(), rust.len(), "{v:?}");
                    let (a, b) = (s.as_bytes(), rust.as_bytes());
                    assert_eq!(a[..a.len() - 1], b[..b.len() - 1], "{v:?}");
                    assert_eq!((a[a.len() - 1] - b'0') % 2, 0, "{v:?}");
                    assert_eq!(a[a.len() - 1] + 1, b[b.len() - 1], "{v:?}");
                }
            } else {
                let sci = format!("{v:e}");
                let (m, e) = sci.split_once('e').unwrap();
                let want = if e.starts_with('-') {
                    format!("{m}e{e}")
                } else {
                    format!("{m}e+{e}")
                };
                assert_eq!(s, want, "{v:?}");
                assert!(!s.contains("e-0") && !s.contains("e+0"), "{s}");
            }
            // The serde_json parser agrees on the value too.
            let parsed: f64 = serde_json::from_str(&s).unwrap();
            assert_eq!(parsed.to_bits(), v.to_bits(), "{s}");
        }
        // Ties are rare but do occur among values in 0..1 with few significant bits.
        assert!(ties < 1000, "{ties}");
    }

    #[test]
    fn non_finite_is_an_error_not_null() {
        #[derive(serde::Serialize)]
        struct S {
            #[serde(serialize_with = "finite_f64")]
            x: f64,
        }
        for (v, shown) in [
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            let err = to_vec(&S { x: v }).unwrap_err();
            assert!(err.to_string().contains(shown), "{err}");
            assert!(serde_json::to_vec(&S { x: v }).is_err());
        }
        assert_eq!(enc(&S { x: 0.25 }), r#"{"x":0.25}"#);
    }

    #[test]
    fn string_escapes() {
        let cases: &[(&str, &str)] = &[
            ("", r#""""#),
            ("plain", r#""plain""#),
            ("q\"b\\", r#""q\"b\\""#),
            ("\n\r\t\u{8}\u{c}", r#""\n\r\t\b\f""#),
            (
                "\u{0}\u{1}\u{b}\u{e}\u{1b}\u{1f}",
                r#""\u0000\u0001\u000b\u000e\u001b\u001f""#,
            ),
            ("<>&", r#""\u003c\u003e\u0026""#),
            ("a<b>c&d", r#""a\u003cb\u003ec\u0026d""#),
            ("\u{2028}\u{2029}", r#""\u2028\u2029""#),
            ("x\u{2028}y\u{2029}z", r#""x\u2028y\u2029z""#),
            // Neighbours of U+2028/2029 that share the E2 80 prefix stay raw.
            ("\u{2027}\u{202a}\u{2020}", "\"\u{2027}\u{202a}\u{2020}\""),
            // Other E2-led characters stay raw.
            ("€✓→", "\"€✓→\""),
            (
                "\u{7f}\u{85}\u{a0}\u{feff}",
                "\"\u{7f}\u{85}\u{a0}\u{feff}\"",
            ),
            ("/ '", r#""/ '""#),
            ("🚀𝄞", "\"🚀𝄞\""),
            ("é日本語", "\"é日本語\""),
            ("&\n<", r#""\u0026\n\u003c""#),
            ("<", r#""\u003c""#),
            ("\u{2029}", r#""\u2029""#),
        ];
        for &(input, want) in cases {
            assert_eq!(enc(input), want, "{input:?}");
            // And the output is valid JSON decoding back to the input.
            assert_eq!(serde_json::from_str::<String>(want).unwrap(), input);
        }
        // Every control character.
        for c in 0u8..0x20 {
            let s = (c as char).to_string();
            let want = match c {
                0x08 => "\"\\b\"".to_owned(),
                0x09 => "\"\\t\"".to_owned(),
                0x0a => "\"\\n\"".to_owned(),
                0x0c => "\"\\f\"".to_owned(),
                0x0d => "\"\\r\"".to_owned(),
                _ => format!("\"\\u{c:04x}\""),
            };
            assert_eq!(enc(&s), want);
        }
        // Map keys go through the same escaping.
        let mut m = std::collections::BTreeMap::new();
        m.insert("<k>", 1);
        assert_eq!(enc(&m), r#"{"\u003ck\u003e":1}"#);
    }

    #[test]
    fn escape_scan_is_exact() {
        for b in 0..=255u8 {
            let special = matches!(b, b'<' | b'>' | b'&' | 0xE2);
            for pos in 0..8 {
                let mut word = [b'a'; 8];
                word[pos] = b;
                assert_eq!(
                    may_need_escape(u64::from_le_bytes(word)),
                    special,
                    "{b:#x}@{pos}"
                );
                let mut word = [0xFFu8; 8];
                word[pos] = b;
                assert_eq!(
                    may_need_escape(u64::from_le_bytes(word)),
                    special,
                    "{b:#x}@{pos}"
                );
            }
        }
        // Escapes at every position relative to the 8-byte chunks, including U+2028
        // straddling a chunk boundary.
        for pad in 0..17 {
            let prefix = "x".repeat(pad);
            for (special, escaped) in [
                ("<", "\\u003c"),
                ("&", "\\u0026"),
                ("\u{2028}", "\\u2028"),
                ("\u{2029}", "\\u2029"),
            ] {
                let input = format!("{prefix}{special}{prefix}{special}é");
                let want = format!("\"{prefix}{escaped}{prefix}{escaped}é\"");
                assert_eq!(enc(&input), want);
            }
        }
    }

    #[test]
    fn integers_and_compactness() {
        assert_eq!(enc(&u64::MAX), "18446744073709551615");
        assert_eq!(enc(&i64::MIN), "-9223372036854775808");
        assert_eq!(enc(&i64::MAX), "9223372036854775807");
        assert_eq!(
            enc(&(vec![1, 2], ("a", true, ()))),
            r#"[[1,2],["a",true,null]]"#
        );
        let mut w = Vec::new();
        to_writer(&mut w, "x").unwrap();
        assert_eq!(w, b"\"x\"");
    }
}
