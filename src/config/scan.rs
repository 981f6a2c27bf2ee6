//! The first, untyped pass over the document: duplicate keys and `${NAME}` references.
//!
//! - Duplicate keys: serde's derived structs notice a repeated field only after its key was
//!   read, so serde_yaml would report the position of the enclosing mapping. Here each key is
//!   checked *while* it is deserialized, so the error points at the repeated key itself.
//! - Variable names: the typed pass expands `${NAME}` inside `Deserialize` impls, which can
//!   only reach an owned snapshot of the environment (see [`super::context`]); this pass lists
//!   the names to look up for it.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};

use super::env;

/// Checks `text` for duplicate keys and returns the variable names its string values use.
pub(crate) fn scan(text: &str) -> Result<Vec<String>, serde_yaml::Error> {
    let names = RefCell::new(Vec::new());
    Node { names: &names }.deserialize(serde_yaml::Deserializer::from_str(text))?;
    Ok(names.into_inner())
}

/// Any value; collects the variable names of the strings in it.
#[derive(Clone, Copy)]
struct Node<'a> {
    names: &'a RefCell<Vec<String>>,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<(), E> {
        self.names.borrow_mut().extend(env::referenced_names(value));
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    /// An empty document.
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while map.next_key_seed(Key { seen: &mut seen })?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }

    /// A tagged value (`!tag value`); the typed pass decides whether the tag is acceptable.
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        let (_, variant) = data.variant::<de::IgnoredAny>()?;
        de::VariantAccess::newtype_variant_seed(variant, self)
    }
}

/// A mapping key, unique within its mapping. Non-string keys are compared by their text.
struct Key<'s> {
    seen: &'s mut HashSet<String>,
}

impl Key<'_> {
    fn check<E: de::Error>(self, key: String) -> Result<(), E> {
        if self.seen.contains(&key) {
            // `error::ConfigError::from_yaml` turns "duplicate key `k`" into the key path.
            return Err(E::custom(format!(
                "duplicate key `{key}`: each key may appear only once in a mapping"
            )));
        }
        self.seen.insert(key);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a scalar key")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<(), E> {
        self.check(value.to_string())
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<(), E> {
        self.check(value.to_string())
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<(), E> {
        self.check(value.to_string())
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<(), E> {
        self.check(value.to_string())
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<(), E> {
        self.check(value.to_string())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.check("~".to_string())
    }
}
