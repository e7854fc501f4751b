//! The contract's two text formats that every crate writes or checks: lowercase hex (ids,
//! tokens, hashes, keys) and RFC 3339 timestamps in whole seconds with `Z`.

use chrono::{DateTime, SecondsFormat, Utc};

/// Only `0-9a-f` (an empty string too: callers check the length they expect).
pub fn is_lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// RFC 3339, whole seconds, `Z`: the contract's one timestamp format.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn hex_is_lowercase_digits_and_a_to_f() {
        assert!(is_lower_hex("0123456789abcdef"));
        for bad in ["ABC", "g", "0x1", " a", "é"] {
            assert!(!is_lower_hex(bad), "{bad}");
        }
    }

    #[test]
    fn timestamps_drop_fractions_and_end_in_z() {
        let t = Utc
            .with_ymd_and_hms(2026, 6, 28, 10, 30, 0)
            .single()
            .expect("a date")
            + chrono::Duration::milliseconds(999);
        assert_eq!(rfc3339(t), "2026-06-28T10:30:00Z");
    }
}
