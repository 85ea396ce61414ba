//! Field types that never fail a line: a value of an unexpected JSON type reads as absent,
//! and an array element that is not an object is skipped. A log line with one odd field is
//! still read for the rest (a field of another version's shape must not hide the line).
//!
//! Values the parsers do not need are skipped with [`IgnoredAny`], which scans a string
//! without keeping it: prompt and tool text is never allocated through these types.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A string field: `Some` for a JSON string, `None` for any other value (or `null`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct LooseStr(pub(crate) Option<String>);

impl LooseStr {
    /// The string, if the field held one.
    pub(crate) fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<'de> Deserialize<'de> for LooseStr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LooseStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LooseStr, E> {
                Ok(LooseStr(Some(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<LooseStr, E> {
                Ok(LooseStr(Some(v)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<LooseStr, E> {
                Ok(LooseStr(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<LooseStr, E> {
                Ok(LooseStr(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<LooseStr, E> {
                Ok(LooseStr(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<LooseStr, E> {
                Ok(LooseStr(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<LooseStr, E> {
                Ok(LooseStr(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<LooseStr, E> {
                Ok(LooseStr(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<LooseStr, D::Error> {
                d.deserialize_any(V)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<LooseStr, A::Error> {
                IgnoredAny.visit_seq(seq)?;
                Ok(LooseStr(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<LooseStr, A::Error> {
                IgnoredAny.visit_map(map)?;
                Ok(LooseStr(None))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A token count: a JSON integer (a float is truncated, a value beyond `i64` saturates);
/// any other value reads as 0.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LooseI64(pub(crate) i64);

impl<'de> Deserialize<'de> for LooseI64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LooseI64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<LooseI64, E> {
                Ok(LooseI64(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<LooseI64, E> {
                Ok(LooseI64(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<LooseI64, E> {
                // `as` saturates and maps NaN to 0.
                Ok(LooseI64(v as i64))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<LooseI64, E> {
                Ok(LooseI64(0))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<LooseI64, E> {
                Ok(LooseI64(0))
            }
            fn visit_unit<E: de::Error>(self) -> Result<LooseI64, E> {
                Ok(LooseI64(0))
            }
            fn visit_none<E: de::Error>(self) -> Result<LooseI64, E> {
                Ok(LooseI64(0))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<LooseI64, D::Error> {
                d.deserialize_any(V)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<LooseI64, A::Error> {
                IgnoredAny.visit_seq(seq)?;
                Ok(LooseI64(0))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<LooseI64, A::Error> {
                IgnoredAny.visit_map(map)?;
                Ok(LooseI64(0))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// An object field: `Some(T)` for a JSON object that reads as `T`, `None` for any other
/// value. (An object that does not read as `T` still fails the line: `T`'s own fields
/// should be loose.)
#[derive(Debug)]
pub(crate) struct Obj<T>(pub(crate) Option<T>);

impl<T> Default for Obj<T> {
    fn default() -> Self {
        Obj(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(|t| Obj(Some(t)))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Obj<T>, E> {
                Ok(Obj(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Obj<T>, E> {
                Ok(Obj(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Obj<T>, E> {
                Ok(Obj(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Obj<T>, E> {
                Ok(Obj(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Obj<T>, E> {
                Ok(Obj(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Obj<T>, E> {
                Ok(Obj(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Obj<T>, E> {
                Ok(Obj(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Obj<T>, D::Error> {
                d.deserialize_any(V(PhantomData))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Obj<T>, A::Error> {
                IgnoredAny.visit_seq(seq)?;
                Ok(Obj(None))
            }
        }
        deserializer.deserialize_any(V(PhantomData))
    }
}

/// An array of objects: the elements that are objects reading as `T`; other elements are
/// skipped, and a value that is not an array (a bare string, `null`) reads as empty.
#[derive(Debug)]
pub(crate) struct Objects<T>(pub(crate) Vec<T>);

impl<T> Default for Objects<T> {
    fn default() -> Self {
        Objects(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Objects<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Objects<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Objects<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(Obj(item)) = seq.next_element::<Obj<T>>()? {
                    out.extend(item);
                }
                Ok(Objects(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Objects<T>, A::Error> {
                IgnoredAny.visit_map(map)?;
                Ok(Objects(Vec::new()))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Objects<T>, E> {
                Ok(Objects(Vec::new()))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Objects<T>, E> {
                Ok(Objects(Vec::new()))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Objects<T>, E> {
                Ok(Objects(Vec::new()))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Objects<T>, E> {
                Ok(Objects(Vec::new()))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Objects<T>, E> {
                Ok(Objects(Vec::new()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Objects<T>, E> {
                Ok(Objects(Vec::new()))
            }
            fn visit_none<E: de::Error>(self) -> Result<Objects<T>, E> {
                Ok(Objects(Vec::new()))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Objects<T>, D::Error> {
                d.deserialize_any(V(PhantomData))
            }
        }
        deserializer.deserialize_any(V(PhantomData))
    }
}

/// Whether a key is present at all (any value, `null` included); absent reads as `false`
/// through `#[serde(default)]`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Present(pub(crate) bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(deserializer)?;
        Ok(Present(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct B {
        #[serde(default)]
        name: LooseStr,
        #[serde(default)]
        n: LooseI64,
    }

    #[derive(Deserialize)]
    struct R {
        #[serde(default)]
        s: LooseStr,
        #[serde(default)]
        o: Obj<B>,
        #[serde(default)]
        list: Objects<B>,
        #[serde(default)]
        here: Present,
        #[serde(default)]
        gone: Present,
    }

    #[test]
    fn odd_values_read_as_absent() {
        let r: R = serde_json::from_str(
            r#"{"s":[1],"o":"x","list":[1,"a",{"name":5,"n":"x"},{"name":"k","n":1e300},null],"here":null}"#,
        )
        .unwrap();
        assert_eq!(r.s.as_deref(), None);
        assert!(r.o.0.is_none());
        assert_eq!(r.list.0.len(), 2);
        assert_eq!((r.list.0[0].name.as_deref(), r.list.0[0].n.0), (None, 0));
        assert_eq!(
            (r.list.0[1].name.as_deref(), r.list.0[1].n.0),
            (Some("k"), i64::MAX)
        );
        assert!(r.here.0 && !r.gone.0);
        let r: R =
            serde_json::from_str(r#"{"list":"a bare string","o":{"n":18446744073709551615}}"#)
                .unwrap();
        assert!(r.list.0.is_empty());
        assert_eq!(r.o.0.map(|b| b.n.0), Some(i64::MAX));
    }
}
