//! Unique visitors without their IPs: a visitor is the first 16 bytes of
//! HMAC-SHA256(ANALYTICS_VISITOR_KEY, share_id NUL client IP). Exact distinct counts need a
//! stable identity; an unkeyed hash of an IPv4 address is reversed by trying all 2^32, so the
//! key (kept out of the database) is what makes the stored hash useless on its own. Keying by
//! link too means one visitor cannot be followed from link to link in the tables.

use std::net::IpAddr;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A visitor of one link, as stored.
pub type Visitor = [u8; 16];

/// The secret the visitor hashes are keyed with. No `Debug`: it never reaches a log line.
#[derive(Clone)]
pub struct VisitorKey {
    secret: Vec<u8>,
}

impl VisitorKey {
    pub fn new(secret: Vec<u8>) -> VisitorKey {
        VisitorKey { secret }
    }

    /// The configured key (hex, at least 16 bytes), or the development key kept in `dev_file`
    /// (made once), with a warning.
    pub fn configured_or_dev(configured: Option<&str>, dev_file: &Path) -> anyhow::Result<Self> {
        if let Some(hex_secret) = configured.map(str::trim).filter(|k| !k.is_empty()) {
            let secret = hex::decode(hex_secret)
                .map_err(|_| anyhow::anyhow!("ANALYTICS_VISITOR_KEY is not hex"))?;
            anyhow::ensure!(
                secret.len() >= 16,
                "ANALYTICS_VISITOR_KEY is under 16 bytes"
            );
            return Ok(VisitorKey::new(secret));
        }
        let existed = dev_file.exists();
        let secret = service_kit::dev_secret::load_or_create(dev_file)?;
        if !existed {
            tracing::warn!(
                path = %dev_file.display(),
                "ANALYTICS_VISITOR_KEY is unset: generated a development visitor key"
            );
        }
        Ok(VisitorKey::new(hex::decode(secret.trim()).map_err(
            |_| anyhow::anyhow!("{} does not hold a hex key", dev_file.display()),
        )?))
    }

    /// The visitor `client_ip` is on `share_id`. The address is read as an IP when it is one,
    /// so two spellings of one address (an IPv4-mapped IPv6 one) are one visitor.
    pub fn visitor(&self, share_id: &str, client_ip: &str) -> Visitor {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .expect("HMAC takes a key of any length");
        mac.update(share_id.as_bytes());
        mac.update(&[0]);
        match client_ip.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
            Ok(IpAddr::V4(v4)) => mac.update(&v4.octets()),
            Ok(IpAddr::V6(v6)) => mac.update(&v6.octets()),
            Err(_) => mac.update(client_ip.as_bytes()),
        }
        let digest = mac.finalize().into_bytes();
        let mut visitor = [0u8; 16];
        visitor.copy_from_slice(&digest[..16]);
        visitor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_in_two_spellings_is_one_visitor_and_the_key_matters() {
        let key = VisitorKey::new(vec![7; 32]);
        let link = "mslink_0123456789ab";
        assert_eq!(
            key.visitor(link, "203.0.113.7"),
            key.visitor(link, "::ffff:203.0.113.7")
        );
        assert_ne!(
            key.visitor(link, "203.0.113.7"),
            key.visitor(link, "203.0.113.8")
        );
        assert_ne!(
            key.visitor(link, "203.0.113.7"),
            VisitorKey::new(vec![8; 32]).visitor(link, "203.0.113.7")
        );
    }

    #[test]
    fn a_configured_key_must_be_hex_of_sixteen_bytes() {
        let dir = tempfile::tempdir().expect("dir");
        let dev = dir.path().join("key");
        assert!(VisitorKey::configured_or_dev(Some("zz"), &dev).is_err());
        assert!(VisitorKey::configured_or_dev(Some("00ff"), &dev).is_err());
        assert!(VisitorKey::configured_or_dev(Some(&"ab".repeat(16)), &dev).is_ok());
        assert!(!dev.exists());
        let made = VisitorKey::configured_or_dev(None, &dev).expect("dev key");
        let again = VisitorKey::configured_or_dev(Some(""), &dev).expect("same dev key");
        assert_eq!(made.visitor("l", "1.2.3.4"), again.visitor("l", "1.2.3.4"));
    }
}
