//! Share tokens and their hashes.
//!
//! The raw token (`shr_` + 32 lowercase hex, 128 bits from the OS CSPRNG) is the only secret a
//! share link has. It exists in exactly two places: the `201` body that creates it and the URL
//! its holder opens. Everything the system keeps, logs, events or audits is the [`TokenHash`].
//! [`ShareToken`] deliberately has no `Debug`, `Display` or `Serialize`, so it cannot slip into a
//! log line or an event by accident; [`ShareToken::expose`] is the one explicit way out.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::format::is_lower_hex;
use crate::ids::random_hex;

const PREFIX: &str = "shr_";

/// A raw share token. Secret: see the module docs.
pub struct ShareToken(String);

impl ShareToken {
    pub fn generate() -> Self {
        Self(format!("{PREFIX}{}", random_hex(16)))
    }

    /// Accepts only a well-formed token. A malformed one is still a dead link to the caller, but
    /// knowing it is malformed saves a lookup.
    pub fn parse(raw: &str) -> Option<Self> {
        let rest = raw.strip_prefix(PREFIX)?;
        let ok = rest.len() == 32 && is_lower_hex(rest);
        ok.then(|| Self(raw.to_owned()))
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }

    /// The raw token, for the one response that may show it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// SHA-256 of a raw share token, as 64 lowercase hex. Safe to store, log and publish.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenHash(String);

impl TokenHash {
    /// Hashes any string, well-formed token or not, so that every lookup of a dead link does
    /// the same work.
    pub fn of(raw: &str) -> Self {
        Self(hex::encode(Sha256::digest(raw.as_bytes())))
    }

    /// Wraps a hash read back from storage.
    pub fn from_hex(hex: String) -> Self {
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({})", self.0)
    }
}

impl fmt::Display for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_contract_shape_and_hash_stably() {
        let token = ShareToken::generate();
        assert!(token.expose().starts_with("shr_"));
        assert_eq!(token.expose().len(), 36);
        assert!(ShareToken::parse(token.expose()).is_some());
        assert_eq!(token.hash(), TokenHash::of(token.expose()));
        assert_eq!(token.hash().as_str().len(), 64);
        assert_ne!(token.hash().as_str(), token.expose());
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "",
            "shr_",
            "shr_XYZ",
            "shr_1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6",
            "tok_1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d",
        ] {
            assert!(ShareToken::parse(bad).is_none(), "{bad}");
        }
        assert!(ShareToken::parse("shr_1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d").is_some());
    }
}
