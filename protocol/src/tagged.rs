//! Reading internally tagged enums (`{"type": "welcome", ...}`) without
//! serde's buffering.
//!
//! serde's derive reads a `#[serde(tag = "...")]` enum by buffering the whole
//! object in its private `Content` tree before it knows the variant, and
//! instantiates every field type's deserializer once more for that tree: a
//! fifth of the browser module's code, and a copy of every frame. Writers of
//! this protocol put the tag first (serde's derive writes it first), so
//! [`deserialize`] reads the tag and hands the rest of the same object, unread,
//! to the variant as an externally tagged enum would get it. Only an object
//! whose tag is not its first key is buffered (as a `serde_json` map) and read
//! again from its text: other writers may order keys as they like.
//!
//! [`tagged_enum!`](crate::tagged_enum) declares such an enum: it writes the
//! enum with `#[derive(Serialize)]` and `#[serde(tag = ..., rename_all =
//! "snake_case")]` (so its JSON text is what the derive has always written),
//! and its `Deserialize` through [`deserialize`] and a private externally
//! tagged copy of the enum.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{MapAccessDeserializer, StringDeserializer};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, IgnoredAny, MapAccess,
    Unexpected, VariantAccess, Visitor,
};
use serde_json::{Map, Value};

/// Reads `T`, an externally tagged enum (serde's default representation), from
/// an object that names its variant in the field `tag` (`expecting` says what
/// the object is, for errors). See the module's documentation.
pub fn deserialize<'de, D, T>(
    deserializer: D,
    tag: &'static str,
    expecting: &'static str,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    deserializer.deserialize_map(TaggedVisitor {
        tag,
        expecting,
        marker: PhantomData,
    })
}

struct TaggedVisitor<T> {
    tag: &'static str,
    expecting: &'static str,
    marker: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> Visitor<'de> for TaggedVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let first = map.next_key::<String>()?;
        if first.as_deref() == Some(self.tag) {
            let variant = map.next_value::<String>()?;
            return T::deserialize(Body { variant, map });
        }
        // The tag is not the first key: buffer the object, take the tag out,
        // and read the rest again from its text.
        let mut fields = Map::new();
        if let Some(key) = first {
            let value = map.next_value::<Value>()?;
            fields.insert(key, value);
        }
        while let Some((key, value)) = map.next_entry::<String, Value>()? {
            fields.insert(key, value);
        }
        let variant = match fields.remove(self.tag) {
            Some(Value::String(variant)) => variant,
            Some(other) => {
                let unexpected = match &other {
                    Value::Bool(b) => Unexpected::Bool(*b),
                    Value::Number(_) => Unexpected::Other("a number"),
                    Value::Null => Unexpected::Unit,
                    Value::Array(_) => Unexpected::Seq,
                    _ => Unexpected::Map,
                };
                return Err(de::Error::invalid_type(unexpected, &"a variant name"));
            }
            None => return Err(de::Error::missing_field(self.tag)),
        };
        let text = serde_json::to_string(&fields).map_err(de::Error::custom)?;
        serde_json::Deserializer::from_str(&text)
            .deserialize_map(BodyVisitor {
                variant,
                marker: PhantomData::<T>,
            })
            .map_err(de::Error::custom)
    }
}

/// Reads the rest of a buffered object as the body of `variant`.
struct BodyVisitor<T> {
    variant: String,
    marker: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> Visitor<'de> for BodyVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(Body {
            variant: self.variant,
            map,
        })
    }
}

/// An object whose tag was read: an enum whose variant is the tag and whose
/// fields are the rest of the object.
struct Body<A> {
    variant: String,
    map: A,
}

impl<'de, A: MapAccess<'de>> Deserializer<'de> for Body<A> {
    type Error = A::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, A::Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de, A: MapAccess<'de>> EnumAccess<'de> for Body<A> {
    type Error = A::Error;
    type Variant = Fields<A>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Fields<A>), A::Error> {
        let variant = seed.deserialize(StringDeserializer::new(self.variant))?;
        Ok((variant, Fields(self.map)))
    }
}

/// The fields of the object after its tag.
struct Fields<A>(A);

impl<'de, A: MapAccess<'de>> VariantAccess<'de> for Fields<A> {
    type Error = A::Error;

    fn unit_variant(mut self) -> Result<(), A::Error> {
        // Fields a later version may add are ignored, as for struct variants.
        while self.0.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, A::Error> {
        seed.deserialize(MapAccessDeserializer::new(self.0))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, A::Error> {
        Err(de::Error::invalid_type(Unexpected::Map, &visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        visitor.visit_map(self.0)
    }
}

/// Declares an internally tagged enum (every variant a unit or a struct
/// variant, names in snake_case on the wire) whose `Deserialize` reads the tag
/// first instead of buffering the object (see [`crate::tagged`]).
///
/// ```ignore
/// tagged_enum! {
///     tag = "type", expecting = "a frame";
///     /// Docs, derives (not `Serialize`/`Deserialize`: the macro adds them).
///     #[derive(Clone, Debug)]
///     pub enum Frame {
///         /// Docs.
///         Ping,
///         Hello { #[serde(default)] token: String },
///     }
/// }
/// ```
#[macro_export]
macro_rules! tagged_enum {
    (
        tag = $tag:literal, expecting = $expecting:literal;
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident $({
                    $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)?
                })?
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(serde::Serialize)]
        #[serde(tag = $tag, rename_all = "snake_case")]
        $vis enum $name {
            $(
                $(#[$vmeta])*
                $variant $({ $( $(#[$fmeta])* $field: $ty ),* })?
            ),*
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                /// The enum as serde's default (externally tagged) derive reads it.
                #[derive(serde::Deserialize)]
                #[serde(rename_all = "snake_case")]
                enum Externally {
                    $(
                        $(#[$vmeta])*
                        $variant $({ $( $(#[$fmeta])* $field: $ty ),* })?
                    ),*
                }
                let value: Externally = $crate::tagged::deserialize(deserializer, $tag, $expecting)?;
                Ok(match value {
                    $( Externally::$variant $({ $($field),* })? => Self::$variant $({ $($field),* })? ),*
                })
            }
        }
    };
}
