//! The one judge of a share link: whether it is active at an instant, and if not, why.
//!
//! Three places ask: the command side before saving a shared track, the public resolve, and the
//! owner's share list. They must never disagree (a link the list calls active must resolve, and
//! one the resolve refuses must not be savable), so the rule lives here once, as a plain
//! function of the facts each side already has and of the instant it is asked at. Time comes in
//! as an argument: the judge has no clock, so its tests need none.
//!
//! Precedence, when several causes hold at once: revoked, then expired, then unavailable (the
//! content was removed), then over its view limit. Revocation and removal are final; expiry is
//! judged before removal as the resolve always has; the view count is asked last because it is
//! the only fact that costs a round trip (`query_side.share_usage`, see [`crate::share_usage`]),
//! so a caller may judge with the count it has (0) and count only when the answer hinges on it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a share link is at one instant. Clients of the resolve see one answer for every status
/// but `active` and `unavailable`; the owner's share list and the audit tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = ShareStatus))]
#[serde(rename_all = "snake_case")]
pub enum LinkStatus {
    /// Resolves to its content.
    Active,
    /// Its `expires_at` has passed (the instant itself included).
    Expired,
    /// Its creator revoked it.
    Revoked,
    /// A limited link whose every view was taken.
    OverLimit,
    /// Its creator removed the shared content; the link itself still stands.
    Unavailable,
}

impl LinkStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkStatus::Active => "active",
            LinkStatus::Expired => "expired",
            LinkStatus::Revoked => "revoked",
            LinkStatus::OverLimit => "over_limit",
            LinkStatus::Unavailable => "unavailable",
        }
    }
}

/// The facts a link's status depends on, as the asking side knows them (the command side from
/// the link's and its content's streams, the query side from the read models).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkFacts {
    pub revoked: bool,
    /// `None`: never expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// `None`: no view limit.
    pub max_views: Option<u32>,
    /// The shared track or collection was removed (or is missing, which is judged alike).
    pub content_removed: bool,
}

/// The status of `link` at `now`, given `views_taken` views already taken (successful
/// resolves; it matters only for a limited link that is otherwise active, see the module docs).
pub fn judge(link: &LinkFacts, views_taken: u64, now: DateTime<Utc>) -> LinkStatus {
    if link.revoked {
        LinkStatus::Revoked
    } else if link.expires_at.is_some_and(|at| at <= now) {
        LinkStatus::Expired
    } else if link.content_removed {
        LinkStatus::Unavailable
    } else if link
        .max_views
        .is_some_and(|max| views_taken >= u64::from(max))
    {
        LinkStatus::OverLimit
    } else {
        LinkStatus::Active
    }
}

/// What every dead link answers (unknown, malformed, revoked, expired, over its limit), in words
/// a person reads: one text for every cause, so none can be told apart.
pub const DEAD_LINK_MESSAGE: &str = "This share link is no longer available.";

/// [`DEAD_LINK_MESSAGE`] for developers (the envelope's `system_message`): still one text for
/// every cause.
pub const DEAD_LINK_REASON: &str = "Share token invalid, revoked, or expired";

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;
    use LinkStatus::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_782_000_000 + seconds, 0)
            .single()
            .expect("a valid instant")
    }

    const LIVE: LinkFacts = LinkFacts {
        revoked: false,
        expires_at: None,
        max_views: None,
        content_removed: false,
    };

    #[test]
    fn a_table_of_links_judged_at_an_instant() {
        let now = at(0);
        let expiring = |offset: Duration| LinkFacts {
            expires_at: Some(now + offset),
            ..LIVE
        };
        let limited = |max| LinkFacts {
            max_views: Some(max),
            ..LIVE
        };
        let cases: &[(&str, LinkFacts, u64, LinkStatus)] = &[
            ("no expiry, no limit", LIVE, 0, Active),
            ("unlimited links ignore any count", LIVE, u64::MAX, Active),
            (
                "expires a second later",
                expiring(Duration::seconds(1)),
                0,
                Active,
            ),
            (
                "expires a nanosecond later",
                expiring(Duration::nanoseconds(1)),
                0,
                Active,
            ),
            (
                "expires at this very instant",
                expiring(Duration::zero()),
                0,
                Expired,
            ),
            (
                "expired a nanosecond ago",
                expiring(-Duration::nanoseconds(1)),
                0,
                Expired,
            ),
            (
                "expired long ago",
                expiring(-Duration::days(400)),
                0,
                Expired,
            ),
            (
                "revoked",
                LinkFacts {
                    revoked: true,
                    ..LIVE
                },
                0,
                Revoked,
            ),
            (
                "revoked and expired: revoked",
                LinkFacts {
                    revoked: true,
                    ..expiring(-Duration::seconds(1))
                },
                0,
                Revoked,
            ),
            (
                "revoked, removed and over the limit: revoked",
                LinkFacts {
                    revoked: true,
                    max_views: Some(1),
                    content_removed: true,
                    ..LIVE
                },
                5,
                Revoked,
            ),
            ("one view left of three", limited(3), 2, Active),
            ("every view taken", limited(3), 3, OverLimit),
            ("more taken than allowed", limited(3), 7, OverLimit),
            ("a one-time link, unopened", limited(1), 0, Active),
            ("a one-time link, opened", limited(1), 1, OverLimit),
            (
                "expired and over the limit: expired",
                LinkFacts {
                    max_views: Some(1),
                    ..expiring(Duration::zero())
                },
                1,
                Expired,
            ),
            (
                "removed content",
                LinkFacts {
                    content_removed: true,
                    ..LIVE
                },
                0,
                Unavailable,
            ),
            (
                "removed content of a link that will expire",
                LinkFacts {
                    content_removed: true,
                    ..expiring(Duration::seconds(1))
                },
                0,
                Unavailable,
            ),
            (
                "removed content of an expired link: expired",
                LinkFacts {
                    content_removed: true,
                    ..expiring(Duration::zero())
                },
                0,
                Expired,
            ),
            (
                "removed content of a link over its limit: unavailable",
                LinkFacts {
                    content_removed: true,
                    max_views: Some(2),
                    ..LIVE
                },
                2,
                Unavailable,
            ),
        ];
        for (name, link, views_taken, expected) in cases {
            assert_eq!(judge(link, *views_taken, now), *expected, "{name}");
        }
    }

    /// A link is active up to, and expired from, its `expires_at`, whatever instant asks.
    #[test]
    fn expiry_passes_exactly_at_its_instant() {
        let expires_at = at(90 * 86_400);
        let link = LinkFacts {
            expires_at: Some(expires_at),
            ..LIVE
        };
        for (now, expected) in [
            (expires_at - Duration::milliseconds(1), Active),
            (expires_at - Duration::microseconds(1), Active),
            (expires_at, Expired),
            (expires_at + Duration::microseconds(1), Expired),
        ] {
            assert_eq!(judge(&link, 0, now), expected, "{now}");
        }
    }

    /// A caller may judge first with the count it has: more views never revive a link, and
    /// the count only ever turns an active link over its limit.
    #[test]
    fn counting_views_only_moves_an_active_limited_link_over_its_limit() {
        let now = at(0);
        let links = [
            LIVE,
            LinkFacts {
                max_views: Some(2),
                ..LIVE
            },
            LinkFacts {
                max_views: Some(2),
                revoked: true,
                ..LIVE
            },
            LinkFacts {
                max_views: Some(2),
                content_removed: true,
                ..LIVE
            },
            LinkFacts {
                max_views: Some(2),
                expires_at: Some(now),
                ..LIVE
            },
        ];
        for link in links {
            let first = judge(&link, 0, now);
            for taken in [1, 2, 3, u64::MAX] {
                let counted = judge(&link, taken, now);
                assert!(
                    counted == first || (first == Active && counted == OverLimit),
                    "{link:?}: {first:?} then {counted:?} at {taken}"
                );
            }
        }
    }

    #[test]
    fn statuses_serialize_as_the_contract_names_them() {
        for status in [Active, Expired, Revoked, OverLimit, Unavailable] {
            assert_eq!(
                serde_json::to_value(status).expect("serializes"),
                serde_json::Value::from(status.as_str())
            );
        }
    }
}
