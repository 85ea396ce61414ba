//! [`InvalidSetting`]: the one error of every setting that parses what it is given.

use std::fmt;

use super::token::TOKEN_PROTOCOL_PREFIX;

/// Longest part of an offending input kept in an [`InvalidSetting`], in bytes: enough to
/// recognise any real entry, short enough for one log line.
const MAX_INPUT_SHOWN: usize = 128;

/// A setting was given a value it cannot take: which setting, the offending entry, and why.
///
/// Returned by [`WsLayer::allowed_origins`](crate::WsLayer::allowed_origins),
/// [`WsLayer::allowed_hosts`](crate::WsLayer::allowed_hosts),
/// [`WsLayer::protocols`](crate::WsLayer::protocols),
/// [`TrustedProxies::new`](crate::TrustedProxies::new) and
/// [`OriginPolicy`](crate::admission::origin::OriginPolicy)'s constructors, for the first
/// entry that is invalid; nothing is applied then.
///
/// `Display` names the setting, the entry (cut to 128 bytes, escaped) and the reason, and
/// never prints a secret: a subprotocol that carries a token (`agentwatch.token.…`) is shown
/// without its token.
///
/// ```
/// use agentwatch_ws::admission::origin::OriginPolicy;
///
/// let error = OriginPolicy::new(["https://dash.example.com", "*"]).unwrap_err();
/// assert_eq!(error.setting(), "allowed_origins");
/// assert_eq!(error.input(), "*");
/// assert_eq!(
///     error.to_string(),
///     r#"invalid allowed_origins entry "*": `*` is not a wildcard: list each origin"#,
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSetting {
    setting: &'static str,
    input: String,
    reason: &'static str,
}

impl InvalidSetting {
    /// An error for `setting` (the method's name, e.g. `"allowed_origins"`) about `input`.
    /// The input is kept cut to 128 bytes, and without anything after a token carrier's
    /// `agentwatch.token.` prefix (compared case-insensitively).
    pub(crate) fn new(setting: &'static str, input: &str, reason: &'static str) -> Self {
        let lower = input.to_ascii_lowercase();
        let input = match lower.find(TOKEN_PROTOCOL_PREFIX) {
            // Everything up to and with the carrier's prefix, never what follows it.
            Some(at) => {
                let end = at + TOKEN_PROTOCOL_PREFIX.len();
                format!("{}{}", &input[..end], crate::redact::REDACTED)
            }
            None => {
                let mut end = input.len().min(MAX_INPUT_SHOWN);
                while !input.is_char_boundary(end) {
                    end -= 1;
                }
                input[..end].to_owned()
            }
        };
        Self {
            setting,
            input,
            reason,
        }
    }

    /// The setting that refused the entry: `"allowed_origins"`, `"allowed_hosts"`,
    /// `"protocols"` or `"trusted_proxies"`.
    pub fn setting(&self) -> &'static str {
        self.setting
    }

    /// The offending entry as given (cut to 128 bytes; a token-carrying subprotocol without
    /// its token).
    pub fn input(&self) -> &str {
        &self.input
    }

    /// Why the entry cannot be used, in a short English phrase.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for InvalidSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} entry {:?}: {}",
            self.setting, self.input, self.reason
        )
    }
}

impl std::error::Error for InvalidSetting {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_setting_input_and_reason_without_secrets() {
        let error = InvalidSetting::new("protocols", "agentwatch.token.czNjcmV0", "no");
        assert_eq!(error.input(), "agentwatch.token.<redacted>");
        assert!(!error.to_string().contains("czNjcmV0"));
        let error = InvalidSetting::new("protocols", "a, AgentWatch.Token.czNjcmV0", "no");
        assert_eq!(error.input(), "a, AgentWatch.Token.<redacted>");
        let long = "é".repeat(200);
        let error = InvalidSetting::new("allowed_hosts", &long, "too long");
        assert!(error.input().len() <= 128);
        assert!(long.starts_with(error.input()));
        assert_eq!(error.setting(), "allowed_hosts");
        assert_eq!(error.reason(), "too long");
    }
}
