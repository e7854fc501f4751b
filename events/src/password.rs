//! Share-link passwords: the one place they are hashed and checked.
//!
//! Both sides need the same rule (the query side checks a password on resolve, the command side
//! when a protected track is saved), so it lives here. A password is kept only as an Argon2id
//! PHC string ([`PasswordHash`]) with OWASP's minimum parameters (19 MiB, 2 passes, 1 lane):
//! slow enough to make a stolen hash costly to guess, cheap enough to verify on a request. The
//! raw password ([`SharePassword`]) has no `Debug`, `Display` or `Serialize`, like a raw share
//! token, so it cannot slip into a log line, an event or an audit message by accident.
//!
//! Hashing and verifying take tens of milliseconds of CPU: callers on an async executor must run
//! them on a blocking thread (`tokio::task::spawn_blocking`), never inline.

use std::fmt;

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Shortest and longest password an owner may set (characters).
pub const MIN_CHARS: usize = 8;
pub const MAX_CHARS: usize = 128;

/// Longest password a checker accepts before it even hashes (bytes): anything longer cannot be
/// right (at most 128 characters of 4 bytes) and would only cost CPU.
const MAX_CANDIDATE_BYTES: usize = MAX_CHARS * 4;

/// OWASP Password Storage Cheat Sheet, Argon2id: m = 19 MiB, t = 2, p = 1.
const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;
const LANES: u32 = 1;

fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None)
        .expect("OWASP's Argon2id parameters are within argon2's bounds");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A raw password, as an owner set it or a visitor typed it. Secret: see the module docs.
pub struct SharePassword(String);

impl SharePassword {
    /// Wraps what a client sent, without judging it (a visitor's guess may be anything).
    pub fn new(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    /// Whether an owner may set it: 8 to 128 characters, none of them NUL.
    pub fn check_settable(&self) -> Result<(), &'static str> {
        let chars = self.0.chars().count();
        if !(MIN_CHARS..=MAX_CHARS).contains(&chars) {
            return Err("must be a string of 8 to 128 characters");
        }
        if self.0.contains('\0') {
            return Err("must not contain NUL characters");
        }
        Ok(())
    }

    /// The raw bytes, for a keyed hash that remembers a verified password in memory.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Argon2id with a fresh 16-byte salt from the OS CSPRNG. Slow: see the module docs.
    pub fn hash(&self) -> PasswordHash {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt length");
        let hash = argon2()
            .hash_password(self.0.as_bytes(), &salt)
            .expect("hashing a bounded password with valid parameters cannot fail");
        PasswordHash(hash.to_string())
    }
}

/// An Argon2id PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`). Safe to store and event.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Wraps a PHC string read back from storage.
    pub fn from_phc(phc: String) -> Self {
        Self(phc)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is the password. A stored hash that does not parse matches nothing.
    /// Slow: see the module docs.
    pub fn verify(&self, candidate: &SharePassword) -> bool {
        if candidate.0.len() > MAX_CANDIDATE_BYTES {
            return false;
        }
        let Ok(parsed) = argon2::PasswordHash::new(&self.0) else {
            tracing::error!("a stored share password hash is not a PHC string");
            return false;
        };
        // The parameters come from the PHC string, so a hash made with other costs still checks.
        Argon2::default()
            .verify_password(candidate.0.as_bytes(), &parsed)
            .is_ok()
    }
}

/// Shows the algorithm and parameters only: even a hash need not fill logs.
impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let params = self.0.split('$').take(4).collect::<Vec<_>>().join("$");
        write!(f, "PasswordHash({params}$…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_and_nothing_else() {
        let password = SharePassword::new("correct horse");
        let hash = password.hash();
        assert!(hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(!hash.as_str().contains("correct horse"));
        assert!(hash.verify(&SharePassword::new("correct horse")));
        assert!(!hash.verify(&SharePassword::new("correct horsE")));
        assert!(!hash.verify(&SharePassword::new("")));
        assert!(!hash.verify(&SharePassword::new("x".repeat(10_000))));
        // Salted: the same password hashes differently each time.
        assert_ne!(hash, password.hash());
        assert!(!format!("{hash:?}").contains(&hash.as_str()[40..]));
        assert!(!PasswordHash::from_phc("garbage".into()).verify(&password));
    }

    #[test]
    fn owners_may_set_8_to_128_characters() {
        assert!(SharePassword::new("1234567").check_settable().is_err());
        assert!(SharePassword::new("12345678").check_settable().is_ok());
        assert!(SharePassword::new("é".repeat(128)).check_settable().is_ok());
        assert!(SharePassword::new("é".repeat(129))
            .check_settable()
            .is_err());
        assert!(SharePassword::new("1234\u{0}5678")
            .check_settable()
            .is_err());
    }
}
