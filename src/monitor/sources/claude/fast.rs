//! A fast reader of one Claude Code line into the same [`Record`] that `serde_json` builds,
//! or `None` when it cannot be sure of that (the caller then parses the line with
//! `serde_json`, which also decides whether it is invalid).
//!
//! # Why
//! Most of a transcript's bytes are text the state never reads: tool results, prompts,
//! thinking, file snapshots, `progress` records with whole nested messages. `serde_json`
//! walks them a byte (or a word) at a time and decodes every prompt it classifies. This
//! reader checks the line once for control bytes (a vectorised pass), then walks only the
//! structure: strings end at the next `"` or `\` (`memchr2`), values no field reads are
//! skipped, and the fields [`Record`] holds are taken as borrowed slices (checked as UTF-8
//! where `serde_json` reads a string, not where it skips one: as `serde_json` does).
//!
//! # Same result, or none
//! The reader accepts a strict subset of what `serde_json` accepts and returns `Some` only
//! when `serde_json::from_slice::<Record>` returns an equal record:
//! - skipped values follow `serde_json`'s own rules for ignored values (JSON grammar,
//!   escapes checked but not decoded), strings read and keys are checked as UTF-8, and a
//!   line with a control byte anywhere is left to `serde_json`;
//! - keys are matched in any order, only at the level they belong to (a key or a
//!   `"type":"assistant"` inside a prompt, a tool result or a nested message is text or a
//!   skipped value, never a field of the record); a field given twice, a key with an
//!   escape, or nesting deeper than [`MAX_DEPTH`] gives `None`;
//! - a field value of an unusual shape (an escaped string, a number where text is read, an
//!   array for a struct) is handed to `serde_json` alone, deserialized into the field's own
//!   type from exactly its bytes, so its decoding and its errors are `serde_json`'s.
//!
//! `tests::fast_path_equals_serde` checks this on every line of the samples and on
//! mutations of them; the `claude_line` fuzz target checks it on arbitrary input.

use std::borrow::Cow;

use serde::Deserialize;

use super::{AgentResult, Block, BlockOrOther, Content, Flag, Id, MAX_ID, Message, Record, Str};
use super::{Text, TextKind, Usage};

/// Deeper nesting is left to `serde_json` (whose typed parsing stops at 128 levels).
const MAX_DEPTH: u32 = 64;

/// The line as a record, or `None` if only `serde_json` can say (see the module docs).
pub(super) fn record(line: &[u8]) -> Option<Record<'_>> {
    if has_control(line) {
        return None;
    }
    let mut p = Reader {
        b: line,
        i: 0,
        depth: 0,
        surrogate: false,
    };
    p.ws();
    if p.peek()? != b'{' {
        return None;
    }
    let mut rec = Record {
        kind: None,
        subtype: None,
        uuid: None,
        session_id: None,
        timestamp: None,
        cwd: None,
        git_branch: None,
        slug: None,
        is_sidechain: None,
        agent_id: None,
        is_meta: Flag::default(),
        is_compact_summary: Flag::default(),
        is_api_error_message: Flag::default(),
        tool_use_result: AgentResult::default(),
        message: None,
    };
    let mut seen = 0u32;
    p.object(|p, key, escaped| {
        if escaped {
            return None;
        }
        let bit = match key {
            b"type" => 0,
            b"subtype" => 1,
            b"uuid" => 2,
            b"sessionId" => 3,
            b"timestamp" => 4,
            b"cwd" => 5,
            b"gitBranch" => 6,
            b"slug" => 7,
            b"isSidechain" => 8,
            b"agentId" => 9,
            b"isMeta" => 10,
            b"isCompactSummary" => 11,
            b"isApiErrorMessage" => 12,
            b"toolUseResult" => 13,
            b"message" => 14,
            _ => return p.skip(),
        };
        if seen & (1 << bit) != 0 {
            // `serde_json` rejects a field given twice.
            return None;
        }
        seen |= 1 << bit;
        match bit {
            0 => rec.kind = p.text()?,
            1 => rec.subtype = p.text()?,
            2 => rec.uuid = p.text()?,
            3 => rec.session_id = p.text()?,
            4 => rec.timestamp = p.text()?,
            5 => rec.cwd = p.text()?,
            6 => rec.git_branch = p.text()?,
            7 => rec.slug = p.text()?,
            8 => rec.is_sidechain = p.option_bool()?,
            9 => rec.agent_id = p.text()?,
            10 => rec.is_meta = p.flag()?,
            11 => rec.is_compact_summary = p.flag()?,
            12 => rec.is_api_error_message = p.flag()?,
            13 => rec.tool_use_result = p.agent_result()?,
            _ => rec.message = p.message()?,
        }
        Some(())
    })?;
    p.ws();
    (p.i == line.len()).then_some(rec)
}

/// Whether `line` holds a control byte (below 0x20): invalid in a JSON string, and outside
/// strings only as white space other than the space (tab, CR, LF), which Claude Code never
/// writes there. Such a line is left to `serde_json`.
fn has_control(line: &[u8]) -> bool {
    // The smallest byte, in a branch-free fold that compiles to vector minimums (about the
    // speed of `memchr`; a fold of `b < 0x20` flags ran at a seventh of it).
    line.iter().fold(u8::MAX, |m, &b| m.min(b)) < 0x20
}

/// Decoded bytes of an escaped text that decide its [`TextKind`] (the longest prefix
/// [`TextKind::of`] tests is 84 bytes, after leading white space).
const PREFIX: usize = 128;

/// The [`TextKind`] of the escaped JSON string contents `raw` (valid UTF-8, escapes checked,
/// no surrogate escape: then `serde_json` decodes it without error) from its first
/// [`PREFIX`] decoded bytes, when those decide it: the whole text fits, or what follows its
/// leading white space (at least 96 bytes) is long enough for every prefix test and is no
/// task notification (whose id may come anywhere). `None`: decode it all.
fn prefix_kind(raw: &[u8]) -> Option<TextKind> {
    let mut out = Vec::with_capacity(PREFIX + 8);
    let mut i = 0;
    while i < raw.len() && out.len() < PREFIX {
        // Plain bytes up to the next escape, at most to the prefix's end (then on to a
        // character boundary).
        let run = memchr::memchr(b'\\', &raw[i..]).unwrap_or(raw.len() - i);
        let mut take = run.min(PREFIX - out.len());
        while i + take < raw.len() && take < run && (raw[i + take] & 0xC0) == 0x80 {
            take += 1;
        }
        out.extend_from_slice(&raw[i..i + take]);
        i += take;
        if take < run || i >= raw.len() {
            break;
        }
        let c = match *raw.get(i + 1)? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hex = std::str::from_utf8(raw.get(i + 2..i + 6)?).ok()?;
                let c = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
                i += 4;
                c
            }
            _ => return None,
        };
        i += 2;
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
    let text = String::from_utf8(out).ok()?;
    if i < raw.len() {
        let t = text.trim_start();
        if t.len() < 96 || t.starts_with("<task-notification>") {
            return None;
        }
    }
    Some(TextKind::of(&text))
}

/// A cursor over one line; every method returns `None` where the line leaves the subset
/// this reader is sure of.
struct Reader<'a> {
    b: &'a [u8],
    i: usize,
    depth: u32,
    /// The last [`Reader::string`] held a `\u` escape of a UTF-16 surrogate (`serde_json`
    /// decodes those only in pairs).
    surrogate: bool,
}

impl<'a> Reader<'a> {
    /// Bytes `s..e` as text: what `serde_json` checks of a string it reads (of a string it
    /// skips it checks only the escapes and control bytes).
    fn utf8(&self, s: usize, e: usize) -> Option<&'a str> {
        std::str::from_utf8(&self.b[s..e]).ok()
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Skips spaces ([`has_control`] leaves no other white space).
    fn ws(&mut self) {
        while self.b.get(self.i) == Some(&b' ') {
            self.i += 1;
        }
    }

    /// Consumes `word` (a literal) at the cursor.
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + word.len())? == word {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }

    /// The string at the cursor (which is at its `"`): the range of its raw contents and
    /// whether it holds an escape. Escapes are checked as `serde_json` checks them in a
    /// value it ignores (a known letter, or `u` and four hex digits), not decoded.
    fn string(&mut self) -> Option<(usize, usize, bool)> {
        let start = self.i + 1;
        let mut at = start;
        let mut escaped = false;
        self.surrogate = false;
        loop {
            at += memchr::memchr2(b'"', b'\\', self.b.get(at..)?)?;
            if self.b[at] == b'"' {
                self.i = at + 1;
                return Some((start, at, escaped));
            }
            escaped = true;
            match *self.b.get(at + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at += 2,
                b'u' => {
                    let hex = self.b.get(at + 2..at + 6)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    // `\uD800` to `\uDFFF` (hex digits in any case).
                    self.surrogate |= matches!(hex[0], b'd' | b'D')
                        && matches!(hex[1], b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F');
                    at += 6;
                }
                _ => return None,
            }
        }
    }

    /// The object at the cursor (at its `{`): `member` is called with each key (raw, and
    /// whether it holds an escape) with the cursor at the value, which it must consume.
    fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, &'a [u8], bool) -> Option<()>,
    ) -> Option<()> {
        self.enter()?;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            self.depth -= 1;
            return Some(());
        }
        loop {
            self.ws();
            if self.peek()? != b'"' {
                return None;
            }
            let (s, e, escaped) = self.string()?;
            // Keys are read as text by typed structs and some visitors: checked here for all.
            if !self.b[s..e].is_ascii() {
                self.utf8(s, e)?;
            }
            self.ws();
            if self.peek()? != b':' {
                return None;
            }
            self.i += 1;
            self.ws();
            member(self, &self.b[s..e], escaped)?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    self.depth -= 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// The array at the cursor (at its `[`): `element` consumes each element.
    fn array(&mut self, mut element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.enter()?;
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            self.depth -= 1;
            return Some(());
        }
        loop {
            self.ws();
            element(self)?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    self.depth -= 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Steps over an opening bracket, one level deeper.
    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        Some(())
    }

    /// Skips the value at the cursor, checked as `serde_json` checks a value it ignores.
    /// Keys with escapes are left to `serde_json`: in a map some visitors read keys decoded.
    fn skip(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.object(|p, _, escaped| if escaped { None } else { p.skip() }),
            b'[' => self.array(Self::skip),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// Skips a number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        if self.peek()? == b'-' {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek()?, b'+' | b'-') {
                self.i += 1;
            }
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
    }

    /// Hands the value at the cursor to `serde_json` as a `T` of its own (after checking its
    /// extent): exactly what the embedded value would have given.
    fn delegate<T: Deserialize<'a>>(&mut self) -> Option<T> {
        let start = self.i;
        self.skip()?;
        serde_json::from_slice(&self.b[start..self.i]).ok()
    }

    /// A string read by a visitor that only notes it is one: `value` if it holds no escape,
    /// else what `serde_json` makes of it (escapes decoded and checked).
    fn plain_str<T: Deserialize<'a>>(&mut self, value: T) -> Option<T> {
        let at = self.i;
        match self.string()? {
            (s, e, false) => self.utf8(s, e).map(|_| value),
            _ => serde_json::from_slice(&self.b[at..self.i]).ok(),
        }
    }

    /// An optional text field (`Option<Str>`).
    fn text(&mut self) -> Option<Text<'a>> {
        match self.peek()? {
            b'n' => self.literal(b"null").map(|()| None),
            b'"' => {
                let at = self.i;
                let (s, e, escaped) = self.string()?;
                if escaped {
                    serde_json::from_slice::<Str<'a>>(&self.b[at..self.i])
                        .ok()
                        .map(Some)
                } else {
                    Some(Some(Str(Cow::Borrowed(self.utf8(s, e)?))))
                }
            }
            // `serde_json` rejects the line (a number, a map… where text is expected).
            _ => None,
        }
    }

    /// A string classified as [`TextKind`]: its raw contents when it holds no escape, else
    /// the start of it decoded (see [`prefix_kind`]), else what `serde_json` makes of it.
    fn text_kind(&mut self) -> Option<TextKind> {
        let at = self.i;
        let (s, e, escaped) = self.string()?;
        if !escaped {
            return Some(TextKind::of(self.utf8(s, e)?));
        }
        if !self.surrogate && self.utf8(s, e).is_some() {
            if let Some(kind) = prefix_kind(&self.b[s..e]) {
                return Some(kind);
            }
        }
        serde_json::from_slice(&self.b[at..self.i]).ok()
    }

    /// `isSidechain`: `Option<bool>`.
    fn option_bool(&mut self) -> Option<Option<bool>> {
        match self.peek()? {
            b't' => self.literal(b"true").map(|()| Some(true)),
            b'f' => self.literal(b"false").map(|()| Some(false)),
            b'n' => self.literal(b"null").map(|()| None),
            _ => None,
        }
    }

    /// A [`Flag`]: `true`, or any other value.
    fn flag(&mut self) -> Option<Flag> {
        match self.peek()? {
            b't' => self.literal(b"true").map(|()| Flag(true)),
            b'f' | b'n' | b'{' | b'[' => self.skip().map(|()| Flag(false)),
            b'"' => self.plain_str(Flag(false)),
            // Numbers are parsed (and may be out of range): `serde_json` decides.
            _ => self.delegate(),
        }
    }

    /// An [`Id`]: a short string, or nothing.
    fn id(&mut self) -> Option<Option<String>> {
        match self.peek()? {
            b'"' => {
                let at = self.i;
                let (s, e, escaped) = self.string()?;
                if escaped {
                    return serde_json::from_slice::<Id>(&self.b[at..self.i])
                        .ok()
                        .map(|id| id.0);
                }
                let v = self.utf8(s, e)?;
                Some((!v.is_empty() && v.len() <= MAX_ID).then(|| v.to_owned()))
            }
            b't' | b'f' | b'n' | b'{' | b'[' => self.skip().map(|()| None),
            _ => self.delegate::<Id>().map(|id| id.0),
        }
    }

    /// `toolUseResult`.
    fn agent_result(&mut self) -> Option<AgentResult> {
        match self.peek()? {
            b'{' => {
                let mut out = AgentResult::default();
                self.object(|p, key, escaped| {
                    if escaped {
                        return None;
                    }
                    // Read by a hand-written visitor: the last of a repeated key wins.
                    match key {
                        b"agentId" => out.agent_id = p.id()?,
                        b"status" => out.status = p.id()?,
                        _ => p.skip()?,
                    }
                    Some(())
                })?;
                Some(out)
            }
            b'"' => self.plain_str(AgentResult::default()),
            b't' | b'f' | b'n' | b'[' => self.skip().map(|()| AgentResult::default()),
            _ => self.delegate(),
        }
    }

    /// `message`.
    fn message(&mut self) -> Option<Option<Message<'a>>> {
        match self.peek()? {
            b'n' => self.literal(b"null").map(|()| None),
            b'{' => {
                let mut m = Message {
                    id: None,
                    model: None,
                    content: None,
                    stop_reason: None,
                    usage: None,
                };
                let mut seen = 0u8;
                self.object(|p, key, escaped| {
                    if escaped {
                        return None;
                    }
                    let bit = match key {
                        b"id" => 0,
                        b"model" => 1,
                        b"content" => 2,
                        b"stop_reason" => 3,
                        b"usage" => 4,
                        _ => return p.skip(),
                    };
                    if seen & (1 << bit) != 0 {
                        return None;
                    }
                    seen |= 1 << bit;
                    match bit {
                        0 => m.id = p.text()?,
                        1 => m.model = p.text()?,
                        2 => m.content = p.content()?,
                        3 => m.stop_reason = p.text()?,
                        _ => m.usage = p.usage()?,
                    }
                    Some(())
                })?;
                Some(Some(m))
            }
            // A struct from an array (fields by position), or an error: `serde_json`.
            _ => self.delegate(),
        }
    }

    /// `message.content`.
    fn content(&mut self) -> Option<Option<Content<'a>>> {
        match self.peek()? {
            b'n' => self.literal(b"null").map(|()| None),
            b'"' => self.text_kind().map(|k| Some(Content::Text(k))),
            b'[' => {
                let mut blocks = Vec::new();
                self.array(|p| {
                    if p.peek()? == b'{' {
                        blocks.push(p.block()?);
                        return Some(());
                    }
                    match p.element()? {
                        BlockOrOther::Block(b) => blocks.push(b),
                        BlockOrOther::Other => {}
                    }
                    Some(())
                })?;
                Some(Some(Content::Blocks(blocks)))
            }
            b'{' => self.skip().map(|()| Some(Content::Blocks(Vec::new()))),
            _ => None,
        }
    }

    /// A content element that is not an object.
    fn element(&mut self) -> Option<BlockOrOther<'a>> {
        match self.peek()? {
            b'"' => self.plain_str(BlockOrOther::Other),
            b't' | b'f' | b'n' | b'[' => self.skip().map(|()| BlockOrOther::Other),
            _ => self.delegate(),
        }
    }

    /// A content block (an object).
    fn block(&mut self) -> Option<Block<'a>> {
        let mut b = Block {
            kind: None,
            id: None,
            name: None,
            tool_use_id: None,
            text: None,
        };
        let mut seen = 0u8;
        self.object(|p, key, escaped| {
            if escaped {
                return None;
            }
            let bit = match key {
                b"type" => 0,
                b"id" => 1,
                b"name" => 2,
                b"tool_use_id" => 3,
                b"text" => 4,
                _ => return p.skip(),
            };
            if seen & (1 << bit) != 0 {
                return None;
            }
            seen |= 1 << bit;
            match bit {
                0 => b.kind = p.text()?,
                1 => b.id = p.text()?,
                2 => b.name = p.text()?,
                3 => b.tool_use_id = p.text()?,
                _ => {
                    b.text = match p.peek()? {
                        b'n' => p.literal(b"null").map(|()| None)?,
                        b'"' => Some(p.text_kind()?),
                        b't' | b'f' | b'{' | b'[' => p.skip().map(|()| Some(TextKind::Other))?,
                        _ => p.delegate()?,
                    }
                }
            }
            Some(())
        })?;
        Some(b)
    }

    /// `message.usage`.
    fn usage(&mut self) -> Option<Option<Usage>> {
        match self.peek()? {
            b'n' => self.literal(b"null").map(|()| None),
            b'{' => {
                let mut u = Usage::default();
                let mut seen = 0u8;
                self.object(|p, key, escaped| {
                    if escaped {
                        return None;
                    }
                    let (bit, field) = match key {
                        b"input_tokens" => (0, &mut u.input_tokens),
                        b"cache_read_input_tokens" => (1, &mut u.cache_read_input_tokens),
                        b"cache_creation_input_tokens" => (2, &mut u.cache_creation_input_tokens),
                        b"output_tokens" => (3, &mut u.output_tokens),
                        _ => return p.skip(),
                    };
                    if seen & (1 << bit) != 0 {
                        return None;
                    }
                    seen |= 1 << bit;
                    *field = p.int()?;
                    Some(())
                })?;
                Some(Some(u))
            }
            _ => self.delegate(),
        }
    }

    /// An `i64`: plain integers of up to 18 digits here (not `-0`), anything else by
    /// `serde_json`.
    fn int(&mut self) -> Option<i64> {
        let start = self.i;
        let negative = self.peek()? == b'-';
        let first = start + usize::from(negative);
        let mut end = first;
        while self.b.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        let digits = &self.b[first..end];
        // `-0` is a float to `serde_json` (the sign kept): an error for an `i64`.
        let simple = !digits.is_empty()
            && digits.len() <= 18
            && (digits[0] != b'0' || (digits.len() == 1 && !negative))
            && !matches!(self.b.get(end), Some(b'.' | b'e' | b'E'));
        if !simple {
            return self.delegate();
        }
        let n = digits
            .iter()
            .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
        self.i = end;
        Some(if negative { -n } else { n })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decoded start of an escaped text classifies it as `serde_json`'s whole decoding
    /// does, whatever its length, leading white space or start.
    #[test]
    fn a_decoded_prefix_classifies_as_the_whole_text() {
        let starts = [
            "",
            "\n\n",
            " \t\u{a0}\u{2003}",
            "[Request interrupted by user]",
            "[Request interrupted by user for tool use]",
            "<command-name>/model</command-name>",
            "Caveat: The messages below were generated by the user while running local commands",
            "<bash-input>ls</bash-input>",
            "Warmup",
            "<task-notification>\n<task-id>a1</task-id>",
            "<task-notification>",
            "fix the \"bug\" in C:\\src\u{1}",
            "é😀 \u{7f}",
        ];
        let fills = ["", "x", "\n", " ", "\"quoted\"", "😀"];
        let (mut decided, mut total) = (0, 0);
        for start in starts {
            for lead in ["", "\n", &" ".repeat(300)] {
                for fill in fills {
                    for (n, end) in [0, 1, 40, 200, 300]
                        .into_iter()
                        .zip(["", "<task-id>a9</task-id>"].into_iter().cycle())
                    {
                        let text = format!("{lead}{start}{}{end}", fill.repeat(n));
                        let json = serde_json::to_string(&text).unwrap();
                        let full: TextKind = serde_json::from_str(&json).unwrap();
                        let raw = &json.as_bytes()[1..json.len() - 1];
                        total += 1;
                        if let Some(kind) = prefix_kind(raw) {
                            assert_eq!(kind, full, "{json}");
                            decided += 1;
                        }
                    }
                }
            }
        }
        assert!(
            decided * 2 > total,
            "{decided} of {total} decided by the prefix"
        );
    }
}
