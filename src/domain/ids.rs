//! The ids of the domain, one type each, so a uid cannot be passed where a server id is meant.
//! Each is a string on the wire and in storage (`#[serde(transparent)]`), read as `&str`
//! wherever text is wanted (`Deref`, `Borrow<str>`: maps keyed by an id are looked up with a
//! `&str`).
//!
//! Where they come from decides how they are made: from the network, only through
//! [`ServerId::parse`] and its siblings (the id rule of `text::is_valid_id`: 1–128 visible ASCII
//! characters), at the edge, before anything else sees them; from storage rows, ids this
//! instance generated and the configuration, with `From<String>` (already checked when they
//! were first taken in).

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

use super::text::is_valid_id;

/// What can be taken from the network as an id: checked against the id rule on the way in.
pub trait ParseId: Sized {
    fn parse_id(raw: &str) -> Option<Self>;
}

/// Ids not yet given a type of their own (categories, assets) are checked text.
impl ParseId for String {
    fn parse_id(raw: &str) -> Option<String> {
        is_valid_id(raw).then(|| raw.to_owned())
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// An id from the network: `None` unless it follows the id rule.
            pub fn parse(raw: &str) -> Option<$name> {
                is_valid_id(raw).then(|| $name(raw.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl ParseId for $name {
            fn parse_id(raw: &str) -> Option<$name> {
                $name::parse(raw)
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> $name {
                $name(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> $name {
                $name(id.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }
    };
}

id_type!(
    /// A server (community) of this instance.
    ServerId
);
id_type!(
    /// A channel of a server.
    ChannelId
);
id_type!(
    /// A message of a channel.
    MessageId
);
id_type!(
    /// A user: `uid_` and 32 hex digits derived from a key, or a uid bound to a key by an
    /// owner (wire contract B.1).
    UserUid
);

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn network_ids_follow_the_id_rule() {
        assert_eq!(ServerId::parse("srv_1").as_deref(), Some("srv_1"));
        for bad in ["", "a b", "nul\0", "é", &"x".repeat(129)] {
            assert_eq!(ChannelId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ids_read_as_text_and_key_maps_by_text() {
        let id = UserUid::from("uid_alice");
        assert_eq!(id, "uid_alice");
        assert_eq!(id.len(), 9, "derefs to str");
        let mut map = HashMap::new();
        map.insert(id.clone(), 1);
        assert_eq!(map.get("uid_alice"), Some(&1));
        assert_eq!(simd_json::to_string(&id).unwrap(), "\"uid_alice\"");
    }
}
