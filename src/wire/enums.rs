//! The string-valued enums of the wire format (Go `type X string` with constants).
//!
//! Each is a plain JSON string on the wire. Values this crate does not know are kept
//! in `Other(String)` and written back unchanged, so a newer agentwatch can add values
//! without breaking older consumers. Go's zero value, `""`, is `Other(String::new())`,
//! which is also the [`Default`].

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::ser::{Serialize, Serializer};

macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// Any other value, kept verbatim so that it round-trips unchanged.
            ///
            /// `Other(String::new())` is Go's zero value `""` and the [`Default`].
            /// Build values with [`From`] rather than by hand: `Other` holding a known
            /// value encodes the same but does not compare equal to the known variant.
            Other(String),
        }

        impl $name {
            /// The value as written on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $wire, )+
                    Self::Other(s) => s,
                }
            }

            /// Whether this is one of the values this crate knows (not `Other`).
            pub fn is_known(&self) -> bool {
                !matches!(self, Self::Other(_))
            }

            /// Whether this is Go's zero value, the empty string.
            pub fn is_empty(&self) -> bool {
                matches!(self, Self::Other(s) if s.is_empty())
            }

            fn known(s: &str) -> Option<Self> {
                match s {
                    $( $wire => Some(Self::$variant), )+
                    _ => None,
                }
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::Other(String::new())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self::known(s).unwrap_or_else(|| Self::Other(s.to_owned()))
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self::known(&s).unwrap_or(Self::Other(s))
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                match v {
                    $name::Other(s) => s,
                    known => known.as_str().to_owned(),
                }
            }
        }

        impl FromStr for $name {
            type Err = Infallible;

            fn from_str(s: &str) -> Result<Self, Infallible> {
                Ok(Self::from(s))
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct StrVisitor;

                impl Visitor<'_> for StrVisitor {
                    type Value = $name;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!("a string (", stringify!($name), ")"))
                    }

                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        Ok($name::from(v))
                    }

                    fn visit_string<E: de::Error>(self, v: String) -> Result<$name, E> {
                        Ok($name::from(v))
                    }
                }

                deserializer.deserialize_str(StrVisitor)
            }
        }
    };
}

string_enum! {
    /// What a session or subagent is doing (Go `session.Activity`).
    ///
    /// ```
    /// use agentwatch_ws::Activity;
    ///
    /// assert_eq!(Activity::from("working"), Activity::Working);
    /// assert_eq!(Activity::from("thinking"), Activity::Other("thinking".into()));
    /// assert_eq!(Activity::from("thinking").as_str(), "thinking");
    /// assert_eq!(Activity::default().as_str(), "");
    /// ```
    pub enum Activity {
        /// `"idle"`: waiting for nothing in particular.
        Idle = "idle",
        /// `"working"`: the agent is producing output or running tools.
        Working = "working",
        /// `"waiting"`: the agent waits for the user (input or a permission prompt).
        Waiting = "waiting",
        /// `"terminal"`: the session or subagent has finished.
        Terminal = "terminal",
    }
}

string_enum! {
    /// Whether a session is still live (Go `session.LifecycleState`).
    ///
    /// ```
    /// use agentwatch_ws::LifecycleState;
    ///
    /// assert_eq!(LifecycleState::from("active"), LifecycleState::Active);
    /// assert_eq!(LifecycleState::from("paused").to_string(), "paused");
    /// ```
    pub enum LifecycleState {
        /// `"active"`: the session is live.
        Active = "active",
        /// `"terminal"`: the session has ended.
        Terminal = "terminal",
    }
}

string_enum! {
    /// The kind of a [`LifecycleEvent`](crate::wire::LifecycleEvent) (Go
    /// `session.LifecycleEventType`).
    ///
    /// ```
    /// use agentwatch_ws::LifecycleEventType;
    ///
    /// assert_eq!(LifecycleEventType::from("stale"), LifecycleEventType::Stale);
    /// assert_eq!(LifecycleEventType::Resumed.as_str(), "resumed");
    /// ```
    pub enum LifecycleEventType {
        /// `"discovered"`: a session was seen for the first time.
        Discovered = "discovered",
        /// `"updated"`: a known session changed.
        Updated = "updated",
        /// `"resumed"`: a terminal session received new data and is active again.
        Resumed = "resumed",
        /// `"terminal"`: a session ended.
        Terminal = "terminal",
        /// `"stale"`: a session received no data for too long and was marked terminal.
        Stale = "stale",
        /// `"removed"`: a session was dropped from the monitor.
        Removed = "removed",
    }
}

string_enum! {
    /// The `type` of an [`Event`](crate::wire::Event) envelope (Go `monitor.EventType`).
    ///
    /// The type does not restrict which payload fields are present.
    ///
    /// ```
    /// use agentwatch_ws::EventType;
    ///
    /// assert_eq!(EventType::from("delta"), EventType::Delta);
    /// assert!(!EventType::from("custom").is_known());
    /// ```
    pub enum EventType {
        /// `"snapshot"`: the full set of sessions, in `sessions`.
        Snapshot = "snapshot",
        /// `"delta"`: changed sessions in `updates` and removed ids in `removed`.
        Delta = "delta",
        /// `"lifecycle"`: one session transition, in `lifecycle`.
        Lifecycle = "lifecycle",
        /// `"health"`: a source's health changed, in `health`.
        Health = "health",
    }
}

string_enum! {
    /// The health of one session source (Go `monitor.HealthStatus`).
    ///
    /// ```
    /// use agentwatch_ws::HealthStatus;
    ///
    /// assert_eq!(HealthStatus::from("degraded"), HealthStatus::Degraded);
    /// assert_eq!(HealthStatus::Failed, "failed");
    /// ```
    pub enum HealthStatus {
        /// `"healthy"`: discovery and parsing work.
        Healthy = "healthy",
        /// `"degraded"`: some discovery or parse failures.
        Degraded = "degraded",
        /// `"failed"`: the source cannot be read.
        Failed = "failed",
    }
}

#[cfg(test)]
mod tests {
    // Here unwrap() and expect() are assertions on values the test itself built: a failure
    // fails the test, with the message. The module is built for `cargo test` only.
    use super::*;

    #[test]
    fn known_values_roundtrip() {
        for (v, s) in [
            (Activity::Idle, "idle"),
            (Activity::Working, "working"),
            (Activity::Waiting, "waiting"),
            (Activity::Terminal, "terminal"),
        ] {
            assert_eq!(v.as_str(), s);
            assert_eq!(Activity::from(s), v);
            assert_eq!(Activity::from(s.to_owned()), v);
            assert_eq!(serde_json::to_string(&v).unwrap(), format!("\"{s}\""));
            assert_eq!(
                serde_json::from_str::<Activity>(&format!("\"{s}\"")).unwrap(),
                v
            );
            assert!(v.is_known());
        }
        for s in [
            "discovered",
            "updated",
            "resumed",
            "terminal",
            "stale",
            "removed",
        ] {
            let v = LifecycleEventType::from(s);
            assert!(v.is_known() && v == s);
        }
        for s in ["snapshot", "delta", "lifecycle", "health"] {
            assert!(EventType::from(s).is_known());
        }
        for s in ["healthy", "degraded", "failed"] {
            assert!(HealthStatus::from(s).is_known());
        }
        for s in ["active", "terminal"] {
            assert!(LifecycleState::from(s).is_known());
        }
    }

    #[test]
    fn unknown_and_empty_pass_through() {
        let v: Activity = serde_json::from_str("\"Working\"").unwrap();
        assert_eq!(v, Activity::Other("Working".into()));
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"Working\"");

        let e: EventType = serde_json::from_str("\"\"").unwrap();
        assert_eq!(e, EventType::default());
        assert!(e.is_empty() && !e.is_known());
        assert_eq!(serde_json::to_string(&e).unwrap(), "\"\"");

        let odd = "weird \"<&>\" \u{2028} ✓";
        let h = HealthStatus::from(odd);
        assert_eq!(h.to_string(), odd);
        assert_eq!(String::from(h.clone()), odd);
        assert_eq!(String::from(HealthStatus::Failed), "failed");
        assert_eq!(
            "x".parse::<LifecycleState>().unwrap(),
            LifecycleState::Other("x".into())
        );
        assert_eq!(h.as_ref(), odd);

        assert!(serde_json::from_str::<Activity>("1").is_err());
        assert!(serde_json::from_str::<Activity>("null").is_err());
    }
}
