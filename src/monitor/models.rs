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

#[cfg(test)]
mod tests {
    use super::context_window;

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
