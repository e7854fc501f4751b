//! Identifier formats from the contract: `mtrack_`, `mcoll_`, `mslink_`, `mlib_` and `usr_` each
//! followed by 12 lowercase hex, and organizations `org_[a-z0-9_]{3,40}`.
//!
//! Ids are parsed once at the edge (a path segment, a CLI flag) and carried as types afterwards,
//! so a track id can never be handed to something that expects a collection.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::format::is_lower_hex;

/// A string that is not a well-formed id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {kind} id")]
pub struct InvalidId {
    pub kind: &'static str,
}

/// `bytes` random bytes from the operating system's CSPRNG, as lowercase hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random id. Collisions are astronomically unlikely; writers that insert
            /// ids under a unique constraint still retry with a new one rather than fail.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, random_hex(6)))
            }

            pub fn parse(s: &str) -> Result<Self, InvalidId> {
                match s.strip_prefix($prefix) {
                    Some(rest) if rest.len() == 12 && is_lower_hex(rest) => Ok(Self(s.to_owned())),
                    _ => Err(InvalidId { kind: $kind }),
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, InvalidId> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

hex_id!(
    /// A track (`mtrack_` + 12 hex).
    TrackId, "mtrack_", "track"
);
hex_id!(
    /// A collection (`mcoll_` + 12 hex).
    CollectionId, "mcoll_", "collection"
);
hex_id!(
    /// A share link (`mslink_` + 12 hex). Public; the secret is the token, never the id.
    ShareLinkId, "mslink_", "share link"
);
hex_id!(
    /// An edge in a user's library (`mlib_` + 12 hex).
    LibraryItemId, "mlib_", "library item"
);
hex_id!(
    /// A user (`usr_` + 12 hex).
    UserId, "usr_", "user"
);

/// An organization: `org_` followed by 3 to 40 of `[a-z0-9_]`. Chosen by people, not generated.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrganizationId(String);

impl OrganizationId {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let ok = s.strip_prefix("org_").is_some_and(|rest| {
            (3..=40).contains(&rest.len())
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        });
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidId {
                kind: "organization",
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrganizationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for OrganizationId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, InvalidId> {
        Self::parse(s)
    }
}

impl TryFrom<String> for OrganizationId {
    type Error = InvalidId;
    fn try_from(s: String) -> Result<Self, InvalidId> {
        Self::parse(&s)
    }
}

impl From<OrganizationId> for String {
    fn from(id: OrganizationId) -> String {
        id.0
    }
}

impl AsRef<str> for OrganizationId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back() {
        let id = TrackId::generate();
        assert_eq!(TrackId::parse(id.as_str()), Ok(id.clone()));
        assert_eq!(id.as_str().len(), "mtrack_".len() + 12);
        assert!(CollectionId::parse(id.as_str()).is_err());
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "",
            "mtrack_",
            "mtrack_ABCDEF123456",
            "mtrack_abcdef12345",
            "mtrack_abcdef1234567",
            "track_abcdef123456",
        ] {
            assert!(TrackId::parse(bad).is_err(), "{bad}");
        }
        assert!(OrganizationId::parse("org_abc123").is_ok());
        assert!(OrganizationId::parse("org_ab").is_err());
        assert!(OrganizationId::parse("org_ABC").is_err());
        assert!(OrganizationId::parse(&format!("org_{}", "a".repeat(41))).is_err());
    }
}
