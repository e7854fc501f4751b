//! Signed playback URLs: minted on every resolve, checked by the media route.
//!
//! `{MEDIA_BASE_URL}/v1/music/media/{track_id}?exp={unix}&kid={kid}&sig={hex}` where `sig` is
//! HMAC-SHA256, under the key `kid`, over `"{path}\n{exp}\n{kid}"`. Several keys may verify (so
//! a key can be rotated out while URLs it signed are still valid); the first one signs. Keys are
//! secrets: they have no `Debug`, and never reach a log line.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The path the media route serves a track under (and the path a signature covers).
pub fn media_path(track_id: &str) -> String {
    format!("/v1/music/media/{track_id}")
}

struct SigningKey {
    kid: String,
    secret: Vec<u8>,
}

pub struct PlaybackSigner {
    /// Never empty; the first signs.
    keys: Vec<SigningKey>,
    ttl: Duration,
    base_url: String,
}

/// Why a media URL was refused (for the log and audit; the client gets one 403).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Malformed,
    UnknownKey,
    BadSignature,
    Expired,
}

impl PlaybackSigner {
    pub fn new(keys: &str, ttl: Duration, base_url: &str) -> Result<Self, String> {
        let mut parsed = Vec::new();
        for item in keys.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (kid, secret) = item
                .split_once(':')
                .ok_or("PLAYBACK_SIGNING_KEYS entries are kid:hexsecret")?;
            if kid.is_empty()
                || kid.len() > 64
                || !kid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err("a PLAYBACK_SIGNING_KEYS key id must be 1-64 of [A-Za-z0-9_-]".into());
            }
            let secret = hex::decode(secret)
                .map_err(|_| format!("the secret of signing key {kid:?} is not hex"))?;
            if secret.len() < 16 {
                return Err(format!(
                    "the secret of signing key {kid:?} is under 16 bytes"
                ));
            }
            parsed.push(SigningKey {
                kid: kid.to_owned(),
                secret,
            });
        }
        if parsed.is_empty() {
            return Err("PLAYBACK_SIGNING_KEYS holds no key".into());
        }
        Ok(PlaybackSigner {
            keys: parsed,
            ttl,
            base_url: base_url.trim_end_matches('/').to_owned(),
        })
    }

    /// A signed URL for `track_id`, valid for the TTL from `now`.
    pub fn mint(&self, track_id: &str, now: DateTime<Utc>) -> String {
        let key = &self.keys[0];
        let exp = now.timestamp() + self.ttl.as_secs() as i64;
        let path = media_path(track_id);
        let sig = hex::encode(sign(&key.secret, &path, &exp.to_string(), &key.kid));
        format!(
            "{}{path}?exp={exp}&kid={}&sig={sig}",
            self.base_url, key.kid
        )
    }

    /// Checks a media request's parameters in constant time (for the signature itself).
    pub fn verify(
        &self,
        track_id: &str,
        exp: Option<&str>,
        kid: Option<&str>,
        sig: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), Refusal> {
        let (Some(exp), Some(kid), Some(sig)) = (exp, kid, sig) else {
            return Err(Refusal::Malformed);
        };
        let expires: i64 = exp.parse().map_err(|_| Refusal::Malformed)?;
        let sig = hex::decode(sig).map_err(|_| Refusal::Malformed)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or(Refusal::UnknownKey)?;
        let mac = mac(&key.secret, &media_path(track_id), exp, kid);
        mac.verify_slice(&sig).map_err(|_| Refusal::BadSignature)?;
        // Checked after the signature, so an attacker learns nothing from a forged expiry.
        if expires <= now.timestamp() {
            return Err(Refusal::Expired);
        }
        Ok(())
    }
}

fn mac(secret: &[u8], path: &str, exp: &str, kid: &str) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(path.as_bytes());
    mac.update(b"\n");
    mac.update(exp.as_bytes());
    mac.update(b"\n");
    mac.update(kid.as_bytes());
    mac
}

fn sign(secret: &[u8], path: &str, exp: &str, kid: &str) -> Vec<u8> {
    mac(secret, path, exp, kid).finalize().into_bytes().to_vec()
}

/// The keys from `PLAYBACK_SIGNING_KEYS`, or else a development key made once and kept in
/// `file` (so every instance sharing the data directory, and every restart, agrees).
pub fn keys_or_dev_key(configured: Option<&str>, file: &Path) -> anyhow::Result<String> {
    if let Some(keys) = configured.filter(|k| !k.trim().is_empty()) {
        return Ok(keys.to_owned());
    }
    let kept = service_kit::dev_secret::load_or_create(file)?;
    tracing::warn!(
        path = %file.display(),
        "PLAYBACK_SIGNING_KEYS is unset: signing with a development key"
    );
    // Files written before the key was kept by `dev_secret` already hold `dev:{hex}`.
    Ok(if kept.contains(':') {
        kept
    } else {
        format!("dev:{kept}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(url: &str) -> (String, String, String, String) {
        let (path, query) = url.split_once('?').expect("query");
        let get = |name: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .expect(name)
                .to_owned()
        };
        let track = path.rsplit('/').next().expect("track").to_owned();
        (track, get("exp"), get("kid"), get("sig"))
    }

    #[test]
    fn minted_urls_verify_and_tampering_does_not() {
        let keys = format!("k2:{},k1:{}", "ab".repeat(16), "cd".repeat(16));
        let signer = PlaybackSigner::new(&keys, Duration::from_secs(300), "http://x/").expect("s");
        let now = Utc::now();
        let url = signer.mint("mtrack_0123456789ab", now);
        assert!(url.starts_with("http://x/v1/music/media/mtrack_0123456789ab?exp="));
        let (track, exp, kid, sig) = params(&url);
        let ok =
            |t: &str, e: &str, k: &str, s: &str| signer.verify(t, Some(e), Some(k), Some(s), now);
        assert_eq!(ok(&track, &exp, &kid, &sig), Ok(()));
        assert_eq!(
            ok("mtrack_0123456789ac", &exp, &kid, &sig),
            Err(Refusal::BadSignature)
        );
        let later = (exp.parse::<i64>().expect("exp") + 1).to_string();
        assert_eq!(ok(&track, &later, &kid, &sig), Err(Refusal::BadSignature));
        assert_eq!(ok(&track, &exp, "k9", &sig), Err(Refusal::UnknownKey));
        assert_eq!(ok(&track, &exp, &kid, "zz"), Err(Refusal::Malformed));
        let after = now + chrono::Duration::seconds(301);
        assert_eq!(
            signer.verify(&track, Some(&exp), Some(&kid), Some(&sig), after),
            Err(Refusal::Expired)
        );

        // The second key still verifies what it signed.
        let old = PlaybackSigner::new(
            &format!("k1:{}", "cd".repeat(16)),
            Duration::from_secs(300),
            "http://x",
        )
        .expect("old");
        let (track, exp, kid, sig) = params(&old.mint("mtrack_0123456789ab", now));
        assert_eq!(ok(&track, &exp, &kid, &sig), Ok(()));
    }
}
