//! Context-window sizes per model, for `maxContextTokens` when a log does not say.
//!
//! Codex logs carry `model_context_window`; Claude Code and Gemini CLI logs do not, so their
//! utilisation comes from this table. The first matching row wins; a model no row matches
//! gets no size (`maxContextTokens` 0, utilisation 0), never a guess.
//!
//! | model name                                   | context window | source of the figure          |
//! |----------------------------------------------|---------------:|-------------------------------|
//! | contains `[1m]` or ends in `-1m` (1M modes)   |      1 000 000 | Anthropic's 1M-context models |
//! | `claude-…`                                   |        200 000 | Anthropic's published size    |
//! | `gemini-…` (2.5 Pro/Flash and later)         |      1 048 576 | Google's published size       |
//! | `gpt-5…` (incl. `gpt-5-codex`, `gpt-5.1-…`)  |        272 000 | Codex CLI's input window      |
//! | `o3…`, `o4…`                                 |        200 000 | OpenAI's published size       |
//!
//! To support a new model, add a row to `TABLE` (most specific first).
//!
//! # Claude Code: the window the log shows
//! Claude Code transcripts name the model without the `[1m]` suffix even when the session
//! runs on the 1M-token context, so the table alone would give 200 000 and a utilisation
//! above 1. [`claude_window`] corrects that from what the log shows: when the largest
//! context a transcript reported exceeds the named window, the window is the smallest of
//! Anthropic's windows (200 000, 1 000 000) that holds it, or that context itself when none
//! does (utilisation 1, never more). A model the table does not know gets the same
//! inference once the log shows any context.

/// How a row matches a model name.
enum Match {
    /// The name starts with this text.
    Prefix(&'static str),
    /// The name contains this text anywhere.
    Contains(&'static str),
    /// The name ends with this text.
    Suffix(&'static str),
}

/// `(pattern, context window in tokens)`, most specific first.
const TABLE: &[(Match, i64)] = &[
    (Match::Contains("[1m]"), 1_000_000),
    (Match::Suffix("-1m"), 1_000_000),
    (Match::Prefix("claude-"), 200_000),
    (Match::Prefix("gemini-"), 1_048_576),
    (Match::Prefix("gpt-5"), 272_000),
    (Match::Prefix("o3"), 200_000),
    (Match::Prefix("o4"), 200_000),
];

/// The context window of `model` in tokens, or `None` for a model the table does not know.
///
/// Matching ignores ASCII case.
pub(crate) fn context_window(model: &str) -> Option<i64> {
    let model = model.to_ascii_lowercase();
    TABLE.iter().find_map(|(pattern, size)| {
        let hit = match pattern {
            Match::Prefix(p) => model.starts_with(p),
            Match::Contains(p) => model.contains(p),
            Match::Suffix(p) => model.ends_with(p),
        };
        hit.then_some(*size)
    })
}

/// Anthropic's context windows in tokens, smallest first.
const CLAUDE_WINDOWS: [i64; 2] = [200_000, 1_000_000];

/// The context window of a Claude Code session on `model` whose largest reported context
/// (input + cache read + cache creation tokens) is `largest_context`: the table's window
/// when it holds that context, else the smallest Anthropic window that does, else
/// `largest_context` itself. 0 when neither the model nor the log tells (no context yet).
pub(crate) fn claude_window(model: &str, largest_context: i64) -> i64 {
    let named = context_window(model).unwrap_or(0);
    if largest_context <= named {
        return named;
    }
    CLAUDE_WINDOWS
        .iter()
        .copied()
        .find(|w| *w >= largest_context)
        .unwrap_or(largest_context)
}

#[cfg(test)]
mod tests {
    use super::{claude_window, context_window};

    #[test]
    fn claude_window_is_inferred_when_the_log_shows_more() {
        assert_eq!(claude_window("claude-opus-4-6", 150_000), 200_000);
        // Transcripts omit `[1m]`: a context above 200 000 means the 1M window.
        assert_eq!(claude_window("claude-opus-4-6", 200_001), 1_000_000);
        assert_eq!(claude_window("claude-sonnet-4-5[1m]", 10), 1_000_000);
        assert_eq!(claude_window("", 0), 0);
        assert_eq!(claude_window("<synthetic>", 5), 200_000);
        assert_eq!(claude_window("claude-opus-4-6", i64::MAX), i64::MAX);
    }

    #[test]
    fn known_and_unknown_models() {
        assert_eq!(context_window("claude-opus-4-1-20250805"), Some(200_000));
        assert_eq!(context_window("claude-sonnet-4-5[1m]"), Some(1_000_000));
        assert_eq!(context_window("Claude-Haiku-4-5"), Some(200_000));
        assert_eq!(context_window("gemini-2.5-pro"), Some(1_048_576));
        assert_eq!(context_window("gpt-5-codex"), Some(272_000));
        assert_eq!(context_window("o4-mini"), Some(200_000));
        assert_eq!(context_window("<synthetic>"), None);
        assert_eq!(context_window(""), None);
    }
}
