//! Tolerant deserialization: a field of an unexpected JSON type reads as absent (its
//! default) instead of failing the whole document, and whatever is not read is skipped
//! without being built. The reviewed object (anything may be posted to the webhook) and the
//! objects the caches keep (one odd object must not stop a watch) are read this way.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The visitor arms for JSON values of an unexpected type: skipped (not built), and the
/// visitor's `Value::default()` returned.
macro_rules! other_values_are_default {
    () => {
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Default::default())
        }
        scalars_are_default!();
    };
}

/// The visitor arms for JSON scalars and null: `Value::default()`.
macro_rules! scalars_are_default {
    () => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
    };
}

pub fn d_any<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    deserializer: D,
) -> Result<T, D::Error> {
    deserializer.deserialize_any(LenientMap::<T>::new())
}

/// Deserializes a map as `T`, and any other JSON value as `T::default()`.
pub struct LenientMap<T>(std::marker::PhantomData<T>);

impl<T> LenientMap<T> {
    pub fn new() -> Self {
        LenientMap(std::marker::PhantomData)
    }
}

impl<T> Default for LenientMap<T> {
    fn default() -> Self {
        LenientMap::new()
    }
}

impl<'de, T: Deserialize<'de> + Default> Visitor<'de> for LenientMap<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<T, E> {
        Ok(T::default())
    }

    other_values_are_default!();
}

/// An object as `Some(T)`, or `None` for any other JSON value (which is skipped, not built).
pub fn lenient_object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    struct Present<T>(Option<T>);
    impl<T> Default for Present<T> {
        fn default() -> Self {
            Present(None)
        }
    }
    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Present<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            T::deserialize(d).map(|t| Present(Some(t)))
        }
    }
    d_any::<_, Present<T>>(deserializer).map(|p| p.0)
}

/// A string, or `None` for any other JSON value (which is skipped, not built).
pub fn lenient_string<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    struct LenientString;
    impl<'de> Visitor<'de> for LenientString {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_owned()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        other_values_are_default!();
    }
    deserializer.deserialize_any(LenientString)
}

/// A list whose elements are read with [`LenientMap`] (an element that is not an object is
/// its default), or an empty list for any other JSON value.
pub fn lenient_list<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    deserializer: D,
) -> Result<Vec<T>, D::Error> {
    struct Element<T>(T);
    impl<'de, T: Deserialize<'de> + Default> Deserialize<'de> for Element<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d_any(d).map(Element)
        }
    }
    let elements: Vec<Element<T>> = list_of(deserializer)?;
    Ok(elements.into_iter().map(|e| e.0).collect())
}

/// A list of strings; elements that are not strings are dropped.
pub fn lenient_strings<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    struct Text(Option<String>);
    impl<'de> Deserialize<'de> for Text {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            lenient_string(d).map(Text)
        }
    }
    let texts: Vec<Text> = list_of(deserializer)?;
    Ok(texts.into_iter().filter_map(|t| t.0).collect())
}

/// A list of `I`, or an empty list for any other JSON value (which is skipped, not built).
fn list_of<'de, D: Deserializer<'de>, I: Deserialize<'de>>(
    deserializer: D,
) -> Result<Vec<I>, D::Error> {
    struct List<I>(std::marker::PhantomData<I>);
    impl<'de, I: Deserialize<'de>> Visitor<'de> for List<I> {
        type Value = Vec<I>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<I>, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element()? {
                items.push(item);
            }
            Ok(items)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<I>, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Vec::new())
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Vec<I>, E> {
            Ok(Vec::new())
        }
        scalars_are_default!();
    }
    deserializer.deserialize_any(List(std::marker::PhantomData))
}
