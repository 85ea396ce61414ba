//! [`Timestamp`]: Go's `time.Time` as it appears in agentwatch JSON.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::ser::{self, Serialize, Serializer};

use super::buf::StackBuf;

const SECS_PER_DAY: i64 = 86_400;
const NANOS_PER_SEC: u32 = 1_000_000_000;
/// Largest offset the wire can carry: Go refuses to marshal a zone hour above 23.
const MAX_OFFSET: i32 = 23 * 3600 + 59 * 60;
/// Unix seconds of `0001-01-01T00:00:00Z`, Go's zero `time.Time`.
const ZERO_UNIX: i64 = -62_135_596_800;
/// Room for the widest possible rendering: a 12-digit signed year (i64 seconds reach
/// year ±292 billion), the clock, 9 fraction digits and a `+hh:mm` zone.
const FORMAT_CAP: usize = 48;

/// A point in time as Go's `encoding/json` writes a `time.Time`: an instant (Unix
/// seconds plus nanoseconds) and the UTC offset it was written in.
///
/// * On the wire it is an RFC 3339 string with up to nanosecond precision, exactly
///   as Go's `time.Time.MarshalJSON` produces it: the fraction loses trailing zeros
///   (and disappears when zero), the original UTC offset is kept (`+05:30`), a zero
///   offset is always written `Z`, and years have four digits (`0099`).
/// * The offset is kept so that decoding and re-encoding gives back the same bytes.
///   It is always a whole number of minutes with a magnitude below 24 hours, which is
///   all RFC 3339 can express.
/// * [`Default`] is Go's zero time, `0001-01-01T00:00:00Z` ([`Timestamp::ZERO`]).
///
/// # Equality and order
///
/// The derived [`PartialEq`]/[`Eq`]/[`Hash`] compare the instant **and** the offset,
/// like Go's `==` on `time.Time` values: `12:00:00+02:00` and `10:00:00Z` are the same
/// instant but are not equal, because they encode differently. Use
/// [`Timestamp::same_instant`] (Go's `Time.Equal`) to compare instants only.
/// [`Ord`] sorts by instant first and uses the offset only to break ties, so it agrees
/// with both: `a < b` whenever `a` is an earlier instant than `b`.
///
/// # Examples
///
/// ```
/// use agentwatch_ws::Timestamp;
///
/// let t = Timestamp::parse("2025-07-01T05:30:00.120+05:30")?;
/// assert_eq!(t.to_string(), "2025-07-01T05:30:00.12+05:30");
/// assert_eq!(t.unix_seconds(), 1_751_328_000);
/// assert_eq!(t.nanos(), 120_000_000);
/// assert_eq!(t.offset_seconds(), 5 * 3600 + 30 * 60);
///
/// let utc = t.to_utc();
/// assert_eq!(utc.to_string(), "2025-07-01T00:00:00.12Z");
/// assert!(utc.same_instant(&t) && utc != t);
///
/// assert_eq!(Timestamp::default().to_string(), "0001-01-01T00:00:00Z");
/// assert!(Timestamp::default().is_zero());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timestamp {
    secs: i64,
    nanos: u32,
    offset: i32,
}

/// Why a string is not a timestamp [`Timestamp::parse`] accepts.
///
/// Its [`Display`](fmt::Display) says what is wrong and at which byte.
///
/// ```
/// use agentwatch_ws::Timestamp;
///
/// let err = Timestamp::parse("2025-02-30T00:00:00Z").unwrap_err();
/// assert_eq!(err.to_string(), "invalid RFC 3339 timestamp: day out of range at byte 8");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampError {
    what: &'static str,
    at: usize,
}

impl TimestampError {
    const fn new(what: &'static str, at: usize) -> Self {
        Self { what, at }
    }

    /// What is wrong, e.g. `"month out of range"`.
    pub fn reason(&self) -> &'static str {
        self.what
    }

    /// Byte offset in the input where the problem was found.
    pub fn position(&self) -> usize {
        self.at
    }
}

impl fmt::Display for TimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid RFC 3339 timestamp: {} at byte {}",
            self.what, self.at
        )
    }
}

impl std::error::Error for TimestampError {}

impl Default for Timestamp {
    fn default() -> Self {
        Self::ZERO
    }
}

impl Timestamp {
    /// Go's zero `time.Time`, `0001-01-01T00:00:00Z`: what a missing or unset time
    /// field holds, and the [`Default`].
    pub const ZERO: Timestamp = Timestamp {
        secs: ZERO_UNIX,
        nanos: 0,
        offset: 0,
    };

    /// The Unix epoch, `1970-01-01T00:00:00Z`.
    pub const UNIX_EPOCH: Timestamp = Timestamp {
        secs: 0,
        nanos: 0,
        offset: 0,
    };

    /// The current time in UTC, with the nanosecond precision of [`SystemTime::now`].
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// The instant `secs` seconds and `nanos` nanoseconds after the Unix epoch, in UTC.
    ///
    /// Returns `None` if `nanos` is not below 1 000 000 000. Every `i64` second count
    /// is accepted, but only years 0 to 9999 can be serialized.
    ///
    /// ```
    /// use agentwatch_ws::Timestamp;
    ///
    /// let t = Timestamp::from_unix(1_741_944_413, 589_793_238).ok_or("nanoseconds out of range")?;
    /// assert_eq!(t.to_string(), "2025-03-14T09:26:53.589793238Z");
    /// assert!(Timestamp::from_unix(0, 1_000_000_000).is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub const fn from_unix(secs: i64, nanos: u32) -> Option<Self> {
        if nanos < NANOS_PER_SEC {
            Some(Self {
                secs,
                nanos,
                offset: 0,
            })
        } else {
            None
        }
    }

    /// The instant `millis` milliseconds after the Unix epoch, in UTC.
    ///
    /// ```
    /// use agentwatch_ws::Timestamp;
    ///
    /// assert_eq!(Timestamp::from_unix_millis(-1).to_string(), "1969-12-31T23:59:59.999Z");
    /// ```
    pub const fn from_unix_millis(millis: i64) -> Self {
        Self {
            secs: millis.div_euclid(1000),
            nanos: (millis.rem_euclid(1000) as u32) * 1_000_000,
            offset: 0,
        }
    }

    /// Whole seconds since the Unix epoch (negative before 1970), independent of the offset.
    pub const fn unix_seconds(&self) -> i64 {
        self.secs
    }

    /// The nanoseconds within the second, `0..1_000_000_000`.
    pub const fn nanos(&self) -> u32 {
        self.nanos
    }

    /// Milliseconds since the Unix epoch, rounded down.
    pub const fn unix_millis(&self) -> i128 {
        self.secs as i128 * 1000 + (self.nanos / 1_000_000) as i128
    }

    /// The UTC offset this timestamp is written in, in seconds east of UTC
    /// (`+05:30` is `19800`, `-07:00` is `-25200`, `Z` is `0`).
    pub const fn offset_seconds(&self) -> i32 {
        self.offset
    }

    /// The same instant written in another UTC offset (seconds east of UTC).
    ///
    /// Returns `None` unless the offset is a whole number of minutes between
    /// `-23:59` and `+23:59`, the offsets RFC 3339 and Go's encoder can write.
    ///
    /// ```
    /// use agentwatch_ws::Timestamp;
    ///
    /// let t = Timestamp::parse("2025-06-30T15:00:00Z")?;
    /// let pdt = t.with_offset(-7 * 3600).ok_or("not an RFC 3339 offset")?;
    /// assert_eq!(pdt.to_string(), "2025-06-30T08:00:00-07:00");
    /// assert!(t.with_offset(24 * 3600).is_none());
    /// assert!(t.with_offset(30).is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub const fn with_offset(self, offset_seconds: i32) -> Option<Self> {
        if offset_seconds % 60 == 0 && offset_seconds.abs() <= MAX_OFFSET {
            Some(Self {
                offset: offset_seconds,
                ..self
            })
        } else {
            None
        }
    }

    /// The same instant written in UTC (`Z`).
    pub const fn to_utc(self) -> Self {
        Self { offset: 0, ..self }
    }

    /// Whether this is Go's zero time (`0001-01-01T00:00:00Z`), whatever its offset,
    /// like Go's `Time.IsZero`.
    pub const fn is_zero(&self) -> bool {
        self.secs == ZERO_UNIX && self.nanos == 0
    }

    /// Whether both denote the same instant, ignoring the offsets (Go's `Time.Equal`).
    pub const fn same_instant(&self, other: &Timestamp) -> bool {
        self.secs == other.secs && self.nanos == other.nanos
    }

    /// This instant as a [`SystemTime`], or `None` if the platform cannot represent it
    /// (for example, dates before 1601 on Windows).
    pub fn to_system_time(&self) -> Option<SystemTime> {
        if self.secs >= 0 {
            UNIX_EPOCH.checked_add(Duration::new(self.secs.unsigned_abs(), self.nanos))
        } else {
            UNIX_EPOCH
                .checked_sub(Duration::from_secs(self.secs.unsigned_abs()))?
                .checked_add(Duration::from_nanos(u64::from(self.nanos)))
        }
    }

    /// Parses an RFC 3339 timestamp the way Go's `time.Time.UnmarshalJSON` does
    /// (without the surrounding quotes).
    ///
    /// The accepted form is `YYYY-MM-DDTHH:MM:SS`, an optional fraction (`.` and one
    /// or more digits; like Go, digits past the ninth are truncated), then `Z` or
    /// `±HH:MM`. Every field is range-checked (day against the month's length, leap
    /// years included; no leap second `60`; zone hour at most 23). `T` and `Z` must be
    /// upper case. The offset is kept as written (`-00:00` and `+00:00` mean `Z`).
    ///
    /// Go's fallback parser (`time.Parse` with the RFC 3339 layout, which `UnmarshalJSON`
    /// falls back to; its strict check is disabled, golang/go#54580) also takes a few
    /// non-RFC 3339 forms: a one-digit hour, a `,` before the fraction, an empty seconds
    /// field before it, zone hours of 24 or more, zone minutes of 60 or more. Those are
    /// rejected here: they are not RFC 3339, and no encoder writes them.
    ///
    /// As a JSON string (`Deserialize`), a timestamp is read by its value: escapes inside it
    /// (`"…05\u005a"`) are decoded first. Go's `UnmarshalJSON` parses the raw bytes and
    /// rejects such a string; no encoder writes one.
    ///
    /// ```
    /// use agentwatch_ws::Timestamp;
    ///
    /// let t = Timestamp::parse("0099-12-31T23:59:59.000000001-07:00")?;
    /// assert_eq!(t.to_string(), "0099-12-31T23:59:59.000000001-07:00");
    /// assert!(Timestamp::parse("2025-03-14 09:00:00Z").is_err());
    /// assert!(Timestamp::parse("2025-03-14T09:00:00").is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parse(s: &str) -> Result<Self, TimestampError> {
        parse_rfc3339(s.as_bytes())
    }

    /// Lays out the Go RFC 3339 form into `buf`. Returns `false` if the local year is
    /// outside `0..=9999` (the text is still written, as Go's `Format` would).
    fn format_into(&self, buf: &mut StackBuf<FORMAT_CAP>) -> bool {
        let (year, month, day, sod) = self.local_civil();
        let (hour, minute, second) = (sod / 3600, sod / 60 % 60, sod % 60);

        // Fixed layout into a local array; longest: "9999-12-31T23:59:59.999999999+23:59".
        let mut b = [0u8; 35];
        let in_range = (0..=9999).contains(&year);
        let mut n = if in_range {
            let y = year as u32;
            put2(&mut b, 0, y / 100);
            put2(&mut b, 2, y % 100);
            4
        } else {
            // Go's `Format` writes such years with a sign or more digits; they cannot
            // be serialized, so this path only serves `Display`.
            if year < 0 {
                buf.push(b'-');
            }
            buf.push_padded(year.unsigned_abs(), 4);
            0
        };
        b[n] = b'-';
        put2(&mut b, n + 1, month);
        b[n + 3] = b'-';
        put2(&mut b, n + 4, day);
        b[n + 6] = b'T';
        put2(&mut b, n + 7, hour);
        b[n + 9] = b':';
        put2(&mut b, n + 10, minute);
        b[n + 12] = b':';
        put2(&mut b, n + 13, second);
        n += 15;

        if self.nanos != 0 {
            // ".nnnnnnnnn" without trailing zeros.
            let f = self.nanos;
            b[n] = b'.';
            put2(&mut b, n + 1, f / 10_000_000);
            put2(&mut b, n + 3, f / 100_000 % 100);
            put2(&mut b, n + 5, f / 1_000 % 100);
            put2(&mut b, n + 7, f / 10 % 100);
            b[n + 9] = b'0' + (f % 10) as u8;
            n += 10;
            while b[n - 1] == b'0' {
                n -= 1;
            }
        }

        if self.offset == 0 {
            b[n] = b'Z';
            n += 1;
        } else {
            let minutes = self.offset.unsigned_abs() / 60;
            b[n] = if self.offset < 0 { b'-' } else { b'+' };
            put2(&mut b, n + 1, minutes / 60);
            b[n + 3] = b':';
            put2(&mut b, n + 4, minutes % 60);
            n += 6;
        }
        buf.push_ascii(&b[..n]) && in_range
    }

    /// Whether Go could marshal this value: its year, in its own offset, is within
    /// 0..=9999. Serializing fails exactly when this is `false`.
    pub fn is_encodable(&self) -> bool {
        (0..=9999).contains(&self.local_civil().0)
    }

    /// Local civil date `(year, month, day)` and second of day, in this offset.
    fn local_civil(&self) -> (i64, u32, u32, u32) {
        // Split first, then apply the offset to the second of day: no overflow, even
        // at the extremes of i64.
        let mut days = self.secs.div_euclid(SECS_PER_DAY);
        let mut sod = self.secs.rem_euclid(SECS_PER_DAY) + i64::from(self.offset);
        if sod < 0 {
            sod += SECS_PER_DAY;
            days -= 1;
        } else if sod >= SECS_PER_DAY {
            sod -= SECS_PER_DAY;
            days += 1;
        }
        let (year, month, day) = civil_from_days(days);
        (year, month, day, sod as u32)
    }
}

impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timestamp {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.secs, self.nanos, self.offset).cmp(&(other.secs, other.nanos, other.offset))
    }
}

/// Formats exactly as Go's `time.Time.MarshalJSON` (without the quotes), i.e. Go's
/// `time.RFC3339Nano` layout. Years outside 0..=9999 are written with more digits or
/// a sign, as Go's `Format` does, though such values cannot be serialized.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = StackBuf::new();
        self.format_into(&mut buf);
        f.pad(buf.as_str())
    }
}

/// Shows the wire form: `Timestamp(2025-03-14T09:26:53.589793238Z)`.
impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = StackBuf::new();
        self.format_into(&mut buf);
        f.debug_tuple("Timestamp")
            .field(&format_args!("{}", buf.as_str()))
            .finish()
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl From<SystemTime> for Timestamp {
    /// The same instant, in UTC. Times beyond the `i64` second range saturate.
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Self {
                secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: d.subsec_nanos(),
                offset: 0,
            },
            Err(e) => {
                let d = e.duration();
                let whole = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                if d.subsec_nanos() == 0 {
                    Self {
                        secs: -whole,
                        nanos: 0,
                        offset: 0,
                    }
                } else {
                    Self {
                        secs: (-whole).saturating_sub(1),
                        nanos: NANOS_PER_SEC - d.subsec_nanos(),
                        offset: 0,
                    }
                }
            }
        }
    }
}

impl Serialize for Timestamp {
    /// Serializes as the Go RFC 3339 string. Fails (never panics) when the year, in
    /// the timestamp's own offset, is outside 0..=9999, as Go's `MarshalJSON` does.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = StackBuf::new();
        if !self.format_into(&mut buf) {
            return Err(ser::Error::custom(
                "Time.MarshalJSON: year outside of range [0,9999]",
            ));
        }
        serializer.serialize_str(buf.as_str())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TsVisitor;

        impl Visitor<'_> for TsVisitor {
            type Value = Timestamp;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp string")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse(v).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(TsVisitor)
    }
}

/// "00" to "99", for two-digit fields.
const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Writes `v` (below 100) as two digits at `b[at..at + 2]`.
#[inline]
fn put2(b: &mut [u8; 35], at: usize, v: u32) {
    let i = (v as usize % 100) * 2;
    b[at] = DIGIT_PAIRS[i];
    b[at + 1] = DIGIT_PAIRS[i + 1];
}

// ---------------------------------------------------------------------------
// Civil-date arithmetic (proleptic Gregorian), after Howard Hinnant's algorithms.
// ---------------------------------------------------------------------------

/// Days since 1970-01-01 for a civil date.
const fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let mp = (month as i64 + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + day as i64 - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// Civil date `(year, month, day)` for days since 1970-01-01.
const fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}

const fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

const fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// ---------------------------------------------------------------------------
// Parsing.
// ---------------------------------------------------------------------------

/// Reads `len` ASCII digits at `at` and checks the value against `min..=max`.
fn field(
    s: &[u8],
    at: usize,
    len: usize,
    min: u32,
    max: u32,
    which: Field,
) -> Result<u32, TimestampError> {
    let mut v = 0u32;
    for i in at..at + len {
        match s.get(i) {
            Some(c @ b'0'..=b'9') => v = v * 10 + u32::from(c - b'0'),
            _ => return Err(TimestampError::new(EXPECTED[which as usize], i)),
        }
    }
    if v < min || v > max {
        return Err(TimestampError::new(OUT_OF_RANGE[which as usize], at));
    }
    Ok(v)
}

/// The numeric fields of an RFC 3339 timestamp, indexing [`EXPECTED`] and [`OUT_OF_RANGE`].
#[derive(Clone, Copy)]
enum Field {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    ZoneHour,
    ZoneMinute,
}

const EXPECTED: [&str; 8] = [
    "expected 4-digit year",
    "expected 2-digit month",
    "expected 2-digit day",
    "expected 2-digit hour",
    "expected 2-digit minute",
    "expected 2-digit second",
    "expected 2-digit zone hour",
    "expected 2-digit zone minute",
];
const OUT_OF_RANGE: [&str; 8] = [
    "year out of range",
    "month out of range",
    "day out of range",
    "hour out of range",
    "minute out of range",
    "second out of range",
    "zone hour out of range",
    "zone minute out of range",
];

fn expect(s: &[u8], at: usize, c: u8, what: &'static str) -> Result<(), TimestampError> {
    if s.get(at) == Some(&c) {
        Ok(())
    } else {
        Err(TimestampError::new(what, at))
    }
}

fn parse_rfc3339(s: &[u8]) -> Result<Timestamp, TimestampError> {
    let year = field(s, 0, 4, 0, 9999, Field::Year)?;
    expect(s, 4, b'-', "expected '-' after year")?;
    let month = field(s, 5, 2, 1, 12, Field::Month)?;
    expect(s, 7, b'-', "expected '-' after month")?;
    let dim = days_in_month(i64::from(year), month);
    let day = field(s, 8, 2, 1, dim, Field::Day)?;
    expect(s, 10, b'T', "expected 'T' between date and time")?;
    let hour = field(s, 11, 2, 0, 23, Field::Hour)?;
    expect(s, 13, b':', "expected ':' after hour")?;
    let minute = field(s, 14, 2, 0, 59, Field::Minute)?;
    expect(s, 16, b':', "expected ':' after minute")?;
    let second = field(s, 17, 2, 0, 59, Field::Second)?;

    let mut i = 19;
    let mut nanos = 0u32;
    if s.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        let mut scale = NANOS_PER_SEC;
        while let Some(c @ b'0'..=b'9') = s.get(i) {
            if scale > 1 {
                scale /= 10;
                nanos += u32::from(c - b'0') * scale;
            }
            i += 1;
        }
        if i == start {
            return Err(TimestampError::new("expected digits after '.'", i));
        }
    }

    let offset = match s.get(i) {
        Some(b'Z') if s.len() == i + 1 => 0,
        Some(b'Z') => return Err(TimestampError::new("unexpected text after 'Z'", i + 1)),
        Some(&sign @ (b'+' | b'-')) => {
            let zh = field(s, i + 1, 2, 0, 23, Field::ZoneHour)?;
            expect(s, i + 3, b':', "expected ':' in zone offset")?;
            let zm = field(s, i + 4, 2, 0, 59, Field::ZoneMinute)?;
            if s.len() != i + 6 {
                return Err(TimestampError::new(
                    "unexpected text after zone offset",
                    i + 6,
                ));
            }
            let off = (zh * 3600 + zm * 60) as i32;
            if sign == b'-' { -off } else { off }
        }
        Some(_) => return Err(TimestampError::new("expected 'Z', '+' or '-' zone", i)),
        None => return Err(TimestampError::new("missing zone ('Z' or '±hh:mm')", i)),
    };

    let days = days_from_civil(i64::from(year), month, day);
    let local = days * SECS_PER_DAY + i64::from(hour * 3600 + minute * 60 + second);
    Ok(Timestamp {
        secs: local - i64::from(offset),
        nanos,
        offset,
    })
}

#[cfg(test)]
mod tests {
    // Here unwrap() and expect() are assertions on values the test itself built: a failure
    // fails the test, with the message. The module is built for `cargo test` only.
    use super::*;

    fn rt(s: &str) -> String {
        Timestamp::parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .to_string()
    }

    #[test]
    fn zero_and_default() {
        assert_eq!(Timestamp::default(), Timestamp::ZERO);
        assert_eq!(Timestamp::ZERO.to_string(), "0001-01-01T00:00:00Z");
        assert!(Timestamp::ZERO.is_zero());
        assert!(Timestamp::ZERO.with_offset(3600).unwrap().is_zero());
        assert!(!Timestamp::UNIX_EPOCH.is_zero());
        assert_eq!(Timestamp::UNIX_EPOCH.to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(rt("0001-01-01T00:00:00Z"), "0001-01-01T00:00:00Z");
        assert!(Timestamp::parse("0001-01-01T00:00:00Z").unwrap().is_zero());
        assert_eq!(days_from_civil(1, 1, 1) * SECS_PER_DAY, ZERO_UNIX);
    }

    #[test]
    fn each_fraction_length() {
        let cases = [
            ("2025-01-02T03:04:05Z", "2025-01-02T03:04:05Z", 0),
            (
                "2025-01-02T03:04:05.1Z",
                "2025-01-02T03:04:05.1Z",
                100_000_000,
            ),
            (
                "2025-01-02T03:04:05.12Z",
                "2025-01-02T03:04:05.12Z",
                120_000_000,
            ),
            (
                "2025-01-02T03:04:05.123Z",
                "2025-01-02T03:04:05.123Z",
                123_000_000,
            ),
            (
                "2025-01-02T03:04:05.1234Z",
                "2025-01-02T03:04:05.1234Z",
                123_400_000,
            ),
            (
                "2025-01-02T03:04:05.12345Z",
                "2025-01-02T03:04:05.12345Z",
                123_450_000,
            ),
            (
                "2025-01-02T03:04:05.123456Z",
                "2025-01-02T03:04:05.123456Z",
                123_456_000,
            ),
            (
                "2025-01-02T03:04:05.1234567Z",
                "2025-01-02T03:04:05.1234567Z",
                123_456_700,
            ),
            (
                "2025-01-02T03:04:05.12345678Z",
                "2025-01-02T03:04:05.12345678Z",
                123_456_780,
            ),
            (
                "2025-01-02T03:04:05.123456789Z",
                "2025-01-02T03:04:05.123456789Z",
                123_456_789,
            ),
            (
                "2025-01-02T03:04:05.000000001Z",
                "2025-01-02T03:04:05.000000001Z",
                1,
            ),
            ("2025-01-02T03:04:05.0Z", "2025-01-02T03:04:05Z", 0),
            ("2025-01-02T03:04:05.000000000Z", "2025-01-02T03:04:05Z", 0),
            (
                "2025-01-02T03:04:05.120000000Z",
                "2025-01-02T03:04:05.12Z",
                120_000_000,
            ),
            (
                "2025-01-02T03:04:05.0005Z",
                "2025-01-02T03:04:05.0005Z",
                500_000,
            ),
            // Go truncates digits past the ninth.
            (
                "2025-01-02T03:04:05.1234567899Z",
                "2025-01-02T03:04:05.123456789Z",
                123_456_789,
            ),
            ("2025-01-02T03:04:05.0000000009Z", "2025-01-02T03:04:05Z", 0),
        ];
        for (input, want, nanos) in cases {
            let t = Timestamp::parse(input).unwrap();
            assert_eq!(t.to_string(), want, "{input}");
            assert_eq!(t.nanos(), nanos, "{input}");
        }
    }

    #[test]
    fn offsets() {
        assert_eq!(rt("2025-03-14T09:00:00+00:00"), "2025-03-14T09:00:00Z");
        assert_eq!(rt("2025-03-14T09:00:00-00:00"), "2025-03-14T09:00:00Z");
        assert_eq!(rt("2025-06-30T08:00:00-07:00"), "2025-06-30T08:00:00-07:00");
        assert_eq!(
            rt("2025-07-01T05:30:00.12+05:30"),
            "2025-07-01T05:30:00.12+05:30"
        );
        assert_eq!(rt("2025-01-01T00:00:00-09:30"), "2025-01-01T00:00:00-09:30");
        assert_eq!(rt("2025-01-01T00:00:00+23:59"), "2025-01-01T00:00:00+23:59");
        assert_eq!(rt("2025-01-01T00:00:00-23:59"), "2025-01-01T00:00:00-23:59");

        let a = Timestamp::parse("2025-06-30T08:00:00-07:00").unwrap();
        let b = Timestamp::parse("2025-06-30T15:00:00Z").unwrap();
        assert_eq!(a.offset_seconds(), -25_200);
        assert_eq!(a.unix_seconds(), b.unix_seconds());
        assert!(a.same_instant(&b));
        assert_ne!(a, b);
        assert_eq!(a.to_utc(), b);
        assert_eq!(b.with_offset(-25_200), Some(a));
        // Crossing a day/year boundary through the offset.
        let c = Timestamp::parse("2024-12-31T23:30:00Z").unwrap();
        assert_eq!(
            c.with_offset(3600).unwrap().to_string(),
            "2025-01-01T00:30:00+01:00"
        );
        assert_eq!(
            c.with_offset(-86_340).unwrap().to_string(),
            "2024-12-30T23:31:00-23:59"
        );
        assert_eq!(c.with_offset(86_400), None);
        assert_eq!(c.with_offset(-86_400), None);
        assert_eq!(c.with_offset(61), None);
    }

    #[test]
    fn ordering_by_instant() {
        let early = Timestamp::parse("2025-06-30T10:00:00+05:00").unwrap(); // 05:00Z
        let late = Timestamp::parse("2025-06-30T06:00:00Z").unwrap();
        assert!(early < late);
        let same_z = Timestamp::parse("2025-06-30T05:00:00Z").unwrap();
        assert_ne!(early.cmp(&same_z), Ordering::Equal);
        assert!(same_z < Timestamp::parse("2025-06-30T05:00:00.000000001Z").unwrap());
        let mut v = [late, early, Timestamp::ZERO];
        v.sort();
        assert_eq!(v, [Timestamp::ZERO, early, late]);
    }

    #[test]
    fn small_and_large_years() {
        assert_eq!(rt("0099-03-01T00:00:00Z"), "0099-03-01T00:00:00Z");
        assert_eq!(rt("0000-01-01T00:00:00Z"), "0000-01-01T00:00:00Z");
        assert_eq!(
            rt("9999-12-31T23:59:59.999999999Z"),
            "9999-12-31T23:59:59.999999999Z"
        );
        assert_eq!(rt("0000-02-29T12:00:00Z"), "0000-02-29T12:00:00Z"); // year 0 is leap
        assert_eq!(rt("2000-02-29T12:00:00Z"), "2000-02-29T12:00:00Z");
        assert!(Timestamp::parse("1900-02-29T12:00:00Z").is_err());
        assert!(Timestamp::parse("2023-02-29T12:00:00Z").is_err());
        assert_eq!(rt("2024-02-29T12:00:00Z"), "2024-02-29T12:00:00Z");

        // Year 0 in +05:00 is year -1 in UTC: the instant exists but UTC can't encode it.
        let t = Timestamp::parse("0000-01-01T00:00:00+05:00").unwrap();
        assert!(t.is_encodable());
        assert!(!t.to_utc().is_encodable());
        assert_eq!(t.to_utc().to_string(), "-0001-12-31T19:00:00Z");

        let y10k = Timestamp::parse("9999-12-31T23:59:59Z").unwrap();
        let next = Timestamp::from_unix(y10k.unix_seconds() + 1, 0).unwrap();
        assert_eq!(next.to_string(), "10000-01-01T00:00:00Z");
        assert!(!next.is_encodable());
    }

    #[test]
    fn extremes_do_not_panic() {
        for secs in [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX] {
            for off in [-MAX_OFFSET, 0, MAX_OFFSET] {
                let t = Timestamp::from_unix(secs, 999_999_999)
                    .unwrap()
                    .with_offset(off)
                    .unwrap();
                let s = t.to_string();
                assert!(s.len() >= 20, "{s}");
                let extreme = secs.unsigned_abs() > 1 << 40;
                assert_eq!(t.is_encodable(), !extreme, "{s}");
                assert_eq!(serde_json::to_string(&t).is_ok(), !extreme, "{s}");
            }
        }
        assert_eq!(
            Timestamp::from_unix(i64::MAX, 0).unwrap().to_string(),
            "292277026596-12-04T15:30:07Z"
        );
        assert_eq!(
            Timestamp::from_unix(i64::MIN, 0).unwrap().to_string(),
            "-292277022657-01-27T08:29:52Z"
        );
    }

    #[test]
    fn civil_roundtrip_every_day() {
        // Every day from year -1 to 10000 maps back to itself.
        let start = days_from_civil(-1, 1, 1);
        let end = days_from_civil(10_001, 1, 1);
        let (mut y, mut m, mut d) = (-1i64, 1u32, 1u32);
        for days in start..end {
            assert_eq!(civil_from_days(days), (y, m, d));
            assert_eq!(days_from_civil(y, m, d), days);
            d += 1;
            if d > days_in_month(y, m) {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn debug_and_padding() {
        let t = Timestamp::parse("2025-03-14T09:26:53.5+01:00").unwrap();
        assert_eq!(format!("{t:?}"), "Timestamp(2025-03-14T09:26:53.5+01:00)");
        assert_eq!(
            format!("[{:>22}]", Timestamp::UNIX_EPOCH),
            "[  1970-01-01T00:00:00Z]"
        );
    }

    #[test]
    fn known_instants() {
        let t = Timestamp::parse("2025-03-14T09:26:53.589793238Z").unwrap();
        assert_eq!((t.unix_seconds(), t.nanos()), (1_741_944_413, 589_793_238));
        assert_eq!(
            Timestamp::parse("1969-12-31T23:59:59Z")
                .unwrap()
                .unix_seconds(),
            -1
        );
        assert_eq!(
            Timestamp::parse("2038-01-19T03:14:08Z")
                .unwrap()
                .unix_seconds(),
            1 << 31
        );
        assert_eq!(
            Timestamp::from_unix_millis(1_500).to_string(),
            "1970-01-01T00:00:01.5Z"
        );
        assert_eq!(Timestamp::from_unix_millis(-1_500).unix_millis(), -1_500);
    }

    #[test]
    fn garbage_rejected() {
        let bad = [
            "",
            "2025",
            "garbage",
            "2025-03-14",
            "2025-03-14T09:00:00",
            "2025-03-14T09:00Z",
            "2025-03-14 09:00:00Z",
            "2025-03-14t09:00:00Z",
            "2025-03-14T09:00:00z",
            "2025-03-14T09:00:00ZZ",
            "2025-03-14T09:00:00Z ",
            " 2025-03-14T09:00:00Z",
            "2025-03-14T09:00:00.Z",
            "2025-03-14T09:00:00,5Z",
            "2025-03-14T09:00:00.5",
            "2025-03-14T09:00:00+0100",
            "2025-03-14T09:00:00+01",
            "2025-03-14T09:00:00+01:00:00",
            "2025-03-14T09:00:00+24:00",
            "2025-03-14T09:00:00+01:60",
            "2025-03-14T09:00:00 +01:00",
            "2025-13-14T09:00:00Z",
            "2025-00-14T09:00:00Z",
            "2025-03-00T09:00:00Z",
            "2025-03-32T09:00:00Z",
            "2025-04-31T09:00:00Z",
            "2025-03-14T24:00:00Z",
            "2025-03-14T23:60:00Z",
            "2025-03-14T23:59:60Z",
            "2025-3-14T09:00:00Z",
            "2025-03-14T9:00:00Z",
            "+2025-03-14T09:00:00Z",
            "-001-03-14T09:00:00Z",
            "10000-01-01T00:00:00Z",
            "2025/03/14T09:00:00Z",
            "2025-03-14T09-00-00Z",
            "２０２５-03-14T09:00:00Z",
            "2025-03-14T09:00:00.١Z",
        ];
        for s in bad {
            let err = Timestamp::parse(s).expect_err(s);
            assert!(err.to_string().starts_with("invalid RFC 3339 timestamp: "));
            assert!(!err.reason().is_empty());
            assert!(err.position() <= s.len());
        }
        assert_eq!(
            Timestamp::parse("2025-13-01T00:00:00Z")
                .unwrap_err()
                .reason(),
            "month out of range"
        );
        assert_eq!(
            Timestamp::parse("2025-03-14T09:00:00")
                .unwrap_err()
                .reason(),
            "missing zone ('Z' or '±hh:mm')"
        );
        assert_eq!(
            Timestamp::parse("2025-x3-14T09:00:00Z").unwrap_err(),
            TimestampError::new("expected 2-digit month", 5)
        );
    }

    #[test]
    fn system_time_roundtrip() {
        let now = SystemTime::now();
        let t = Timestamp::from(now);
        assert_eq!(t.to_system_time(), Some(now));
        assert_eq!(t.offset_seconds(), 0);

        let before = UNIX_EPOCH - Duration::new(10, 250_000_000);
        let t = Timestamp::from(before);
        assert_eq!((t.unix_seconds(), t.nanos()), (-11, 750_000_000));
        assert_eq!(t.to_string(), "1969-12-31T23:59:49.75Z");
        assert_eq!(t.to_system_time(), Some(before));

        let whole = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(Timestamp::from(whole).unix_seconds(), -5);
        assert_eq!(Timestamp::from(whole).nanos(), 0);

        let n = Timestamp::now();
        assert!(n > Timestamp::parse("2024-01-01T00:00:00Z").unwrap());
        assert!(n.is_encodable());
    }

    #[test]
    fn serde_string_form() {
        let t = Timestamp::parse("2025-06-30T23:59:59.999+02:00").unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2025-06-30T23:59:59.999+02:00\"");
        let back: Timestamp = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        // Escaped characters inside the string are read by their value (Go rejects them: its
        // `UnmarshalJSON` parses the raw bytes; documented on `Timestamp::parse`).
        let esc: Timestamp = serde_json::from_str("\"2025-06-30T23:59:59\\u005a\"").unwrap();
        assert_eq!(esc.to_string(), "2025-06-30T23:59:59Z");

        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
        assert!(serde_json::from_str::<Timestamp>("12345").is_err());
        assert!(serde_json::from_str::<Timestamp>("null").is_err());

        for bad in [
            Timestamp::from_unix(i64::MAX, 0).unwrap(),
            Timestamp::parse("0000-01-01T00:00:00Z")
                .unwrap()
                .with_offset(-60)
                .unwrap(),
            Timestamp::parse("9999-12-31T23:59:00Z")
                .unwrap()
                .with_offset(60)
                .unwrap(),
        ] {
            let err = serde_json::to_string(&bad).unwrap_err();
            assert!(err.to_string().contains("year outside of range"), "{err}");
        }
        assert_eq!(
            "2025-01-01T00:00:00Z".parse::<Timestamp>().unwrap().nanos(),
            0
        );
    }
}
