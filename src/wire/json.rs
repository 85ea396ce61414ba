//! Go `encoding/json` byte compatibility: [`GoFormatter`], [`to_vec`], [`to_writer`]
//! and the serde field helpers the wire structs use.

use std::fmt::Write as _;
use std::io;

use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
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
///   `1e+21`, `1.7976931348623157e+308`). `-0.0` is `-0`.
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
/// serde::Serialize::serialize(&("<a&b>", 1e21, 1.0, 0.000001), &mut ser).unwrap();
/// assert_eq!(out, br#"["\u003ca\u0026b\u003e",1e+21,1,0.000001]"#);
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

/// Serializes `value` as Go's `json.Marshal` would: compact, Go's escaping and float
/// layout, no trailing newline.
///
/// Fails (never panics) on values Go cannot encode either: NaN or infinite
/// `contextUtilization`, timestamps whose year is outside 0..=9999.
///
/// ```
/// use agentwatch_ws::{Event, Health, HealthStatus, Timestamp, wire};
///
/// let at = Timestamp::parse("2025-03-14T09:32:00Z").unwrap();
/// let mut ev = Event::health(202, Health {
///     source: "gemini-cli".into(),
///     status: HealthStatus::Failed,
///     discover_failures: 4,
///     parse_failures: 2,
///     last_error: "open <path>: permission denied".into(),
///     updated_at: at,
/// });
/// ev.at = at;
/// let bytes = wire::to_vec(&ev).unwrap();
/// assert_eq!(
///     std::str::from_utf8(&bytes).unwrap(),
///     r#"{"seq":202,"at":"2025-03-14T09:32:00Z","type":"health","health":{"source":"gemini-cli","status":"failed","discoverFailures":4,"parseFailures":2,"lastError":"open \u003cpath\u003e: permission denied","updatedAt":"2025-03-14T09:32:00Z"}}"#
/// );
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

/// Writes `v` as Go's `encoding/json` writes a `float64` (`v` must be finite; NaN and
/// infinities are written as Rust prints them, which is never valid JSON).
pub(crate) fn format_go_f64<const N: usize>(v: f64, out: &mut StackBuf<N>) {
    let abs = v.abs();
    let exp_form = abs != 0.0 && !(1e-6..1e21).contains(&abs);
    relayout(format_args!("{v:e}"), exp_form, v.is_finite(), out);
}

/// Writes `v` as Go's `encoding/json` writes a `float32`: the shortest digits that
/// round-trip through `f32`, with the same layout thresholds evaluated in `f32`.
pub(crate) fn format_go_f32<const N: usize>(v: f32, out: &mut StackBuf<N>) {
    let abs = v.abs();
    let exp_form = abs != 0.0 && !(1e-6f32..1e21f32).contains(&abs);
    relayout(format_args!("{v:e}"), exp_form, v.is_finite(), out);
}

/// Takes Rust's shortest round-trip scientific form (`-1.2345e-7`, `1e21`, `-0e0`) and
/// lays it out Go's way.
fn relayout<const N: usize>(
    sci: std::fmt::Arguments<'_>,
    exp_form: bool,
    finite: bool,
    out: &mut StackBuf<N>,
) {
    let mut tmp = StackBuf::<FLOAT_CAP>::new();
    // Cannot fail: the scientific form of any f64 is at most ~25 bytes.
    let _ = tmp.write_fmt(sci);
    let s = tmp.as_bytes();
    if !finite {
        out.push_str(tmp.as_str());
        return;
    }

    let (negative, s) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    let e_pos = s.iter().position(|&c| c == b'e').unwrap_or(s.len());
    let (mantissa, exp_part) = s.split_at(e_pos);
    let exp: i32 = std::str::from_utf8(exp_part.get(1..).unwrap_or_default())
        .ok()
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);

    // Significant digits without the decimal point: "1.2345" -> "12345".
    let mut digits = [0u8; 24];
    let mut nd = 0;
    for &c in mantissa {
        if c.is_ascii_digit() && nd < digits.len() {
            digits[nd] = c;
            nd += 1;
        }
    }
    let digits = &digits[..nd];

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

/// `deserialize_with` giving the zero value for JSON `null`, as Go leaves a field
/// untouched (at its zero value) when it decodes `null`.
pub(crate) fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// `deserialize_with` for slices: `null` is an empty vector, and `null` elements become
/// zero values (Go decodes `[null]` into a one-element slice holding the zero value).
pub(crate) fn null_default_vec<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    struct SeqVisitor<T>(std::marker::PhantomData<T>);

    impl<'de, T: Deserialize<'de> + Default> Visitor<'de> for SeqVisitor<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an array or null")
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }

        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Vec<T>, D2::Error> {
            d.deserialize_seq(self)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            // Cap the hint so a hostile length prefix cannot force a huge allocation.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
            while let Some(item) = seq.next_element::<Option<T>>()? {
                out.push(item.unwrap_or_default());
            }
            Ok(out)
        }
    }

    deserializer.deserialize_option(SeqVisitor(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
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
                // Plain decimals: exactly Rust's shortest `Display` form.
                assert_eq!(s, v.to_string(), "{v:?}");
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
            ("\u{0}\u{1}\u{b}\u{e}\u{1b}\u{1f}", r#""\u0000\u0001\u000b\u000e\u001b\u001f""#),
            ("<>&", r#""\u003c\u003e\u0026""#),
            ("a<b>c&d", r#""a\u003cb\u003ec\u0026d""#),
            ("\u{2028}\u{2029}", r#""\u2028\u2029""#),
            ("x\u{2028}y\u{2029}z", r#""x\u2028y\u2029z""#),
            // Neighbours of U+2028/2029 that share the E2 80 prefix stay raw.
            ("\u{2027}\u{202a}\u{2020}", "\"\u{2027}\u{202a}\u{2020}\""),
            // Other E2-led characters stay raw.
            ("€✓→", "\"€✓→\""),
            ("\u{7f}\u{85}\u{a0}\u{feff}", "\"\u{7f}\u{85}\u{a0}\u{feff}\""),
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
    fn integers_and_compactness() {
        assert_eq!(enc(&u64::MAX), "18446744073709551615");
        assert_eq!(enc(&i64::MIN), "-9223372036854775808");
        assert_eq!(enc(&i64::MAX), "9223372036854775807");
        assert_eq!(enc(&(vec![1, 2], ("a", true, ()))), r#"[[1,2],["a",true,null]]"#);
        let mut w = Vec::new();
        to_writer(&mut w, "x").unwrap();
        assert_eq!(w, b"\"x\"");
    }

    #[test]
    fn null_helpers() {
        #[derive(serde::Deserialize, Debug, PartialEq, Default)]
        #[serde(default)]
        struct S {
            #[serde(deserialize_with = "null_default")]
            n: i64,
            #[serde(deserialize_with = "null_default")]
            s: String,
            #[serde(deserialize_with = "null_default_vec")]
            v: Vec<String>,
        }
        let s: S = serde_json::from_str(r#"{"n":null,"s":null,"v":null}"#).unwrap();
        assert_eq!(s, S::default());
        let s: S = serde_json::from_str(r#"{"v":["a",null,"b"]}"#).unwrap();
        assert_eq!(s.v, ["a", "", "b"]);
        let s: S = serde_json::from_str(r#"{"v":[]}"#).unwrap();
        assert!(s.v.is_empty());
        assert!(serde_json::from_str::<S>(r#"{"v":"x"}"#).is_err());
        assert!(serde_json::from_str::<S>(r#"{"n":"1"}"#).is_err());
    }
}
