//! The fold: audit messages in, what they add to the per-link statistics out. Pure (no I/O, no
//! clock), so every counting rule is proven here with given/when/then tests, and the live
//! consumer and a rebuild count alike.
//!
//! Rules (CONTRACT.md, "Per-link statistics"): only attempts that matched a link (`share_id`
//! set) count, and media fetches never do. Outcome `ok` is a view, `preview` a preview, and any
//! other outcome (rate limited, password, dead, and outcomes this build has never heard of) is
//! denied. A view's client IP becomes a keyed visitor hash ([`VisitorKey`]) and goes no
//! further. The day is the UTC date of `occurred_at`, the attempt's own time, so a rebuild folds
//! every message into the same day whenever it runs.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;

use super::visitor::{Visitor, VisitorKey};

/// What one batch of messages adds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Folded {
    /// The highest sequence folded (counted or not); `None` if every message was at or before
    /// the position the fold started after.
    pub last_sequence: Option<u64>,
    /// Per link and day.
    pub days: BTreeMap<(String, NaiveDate), DayCounts>,
    /// Who viewed each link on each day (distinct within the batch).
    pub visitors: BTreeSet<(String, NaiveDate, Visitor)>,
    /// Messages folded (past `after`), counted or not.
    pub messages: u64,
    /// Messages that are not audit attempts this build can read (kept out of the counts).
    pub unreadable: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DayCounts {
    pub views: i64,
    pub previews: i64,
    pub denied: i64,
    pub last_viewed_at: Option<DateTime<Utc>>,
}

/// How one attempt counts for its link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counted {
    View,
    Preview,
    Denied,
}

/// The counting rule for an attempt's `outcome` and `format`; `None`: not counted at all.
pub fn classify(outcome: &str, format: &str) -> Option<Counted> {
    if format == "media" {
        return None;
    }
    Some(match outcome {
        "ok" => Counted::View,
        "preview" => Counted::Preview,
        _ => Counted::Denied,
    })
}

/// The fields of an audit message the fold reads; the rest are ignored, so new fields and new
/// outcomes never stop the consumer.
#[derive(Deserialize)]
struct Attempt<'a> {
    #[serde(borrow)]
    outcome: Cow<'a, str>,
    #[serde(borrow)]
    format: Cow<'a, str>,
    #[serde(borrow, default)]
    share_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    client_ip: Cow<'a, str>,
    #[serde(borrow)]
    occurred_at: Cow<'a, str>,
}

/// Folds the messages with a stream sequence after `after` (those at or before it were folded
/// already: a redelivery), in the order given.
pub fn fold<'m>(
    after: u64,
    messages: impl IntoIterator<Item = (u64, &'m [u8])>,
    key: &VisitorKey,
) -> Folded {
    let mut folded = Folded::default();
    for (sequence, payload) in messages {
        if sequence <= after {
            continue;
        }
        folded.last_sequence = Some(folded.last_sequence.map_or(sequence, |s| s.max(sequence)));
        folded.messages += 1;
        let Some((attempt, at)) = read(payload) else {
            folded.unreadable += 1;
            continue;
        };
        let Some(share_id) = attempt.share_id.filter(|s| !s.is_empty()) else {
            continue;
        };
        let Some(counted) = classify(&attempt.outcome, &attempt.format) else {
            continue;
        };
        let day = at.date_naive();
        let counts = folded
            .days
            .entry((share_id.clone().into_owned(), day))
            .or_default();
        match counted {
            Counted::View => {
                counts.views += 1;
                counts.last_viewed_at = Some(counts.last_viewed_at.map_or(at, |l| l.max(at)));
                let visitor = key.visitor(&share_id, &attempt.client_ip);
                folded
                    .visitors
                    .insert((share_id.into_owned(), day, visitor));
            }
            Counted::Preview => counts.previews += 1,
            Counted::Denied => counts.denied += 1,
        }
    }
    folded
}

fn read(payload: &[u8]) -> Option<(Attempt<'_>, DateTime<Utc>)> {
    let attempt: Attempt = serde_json::from_slice(payload).ok()?;
    let at = DateTime::parse_from_rfc3339(&attempt.occurred_at)
        .ok()?
        .with_timezone(&Utc);
    Some((attempt, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINK: &str = "mslink_0123456789ab";
    const OTHER: &str = "mslink_ba9876543210";

    fn key() -> VisitorKey {
        VisitorKey::new(b"a test key of at least sixteen bytes".to_vec())
    }

    fn attempt(outcome: &str, format: &str, share: Option<&str>, ip: &str, at: &str) -> Vec<u8> {
        serde_json::json!({
            "event_id": "01900000-0000-7000-8000-000000000000",
            "occurred_at": at,
            "outcome": outcome,
            "client_ip": ip,
            "user_agent": "test",
            "share_id": share,
            "target_type": share.map(|_| "track"),
            "target_id": share.map(|_| "mtrack_0123456789ab"),
            "format": format,
            "trace_id": "req_0000000000000000",
        })
        .to_string()
        .into_bytes()
    }

    fn day(s: &str) -> NaiveDate {
        s.parse().expect("date")
    }

    fn when(after: u64, messages: &[Vec<u8>]) -> Folded {
        fold(
            after,
            messages
                .iter()
                .enumerate()
                .map(|(i, m)| (i as u64 + 1, m.as_slice())),
            &key(),
        )
    }

    #[test]
    fn views_from_several_ips_count_each_view_and_each_visitor_once() {
        // given three views of one link, two of them from the same IP, in JSON and HTML
        let at = "2026-12-02T10:00:00.000Z";
        let messages = [
            attempt("ok", "json", Some(LINK), "203.0.113.7", at),
            attempt(
                "ok",
                "html",
                Some(LINK),
                "203.0.113.7",
                "2026-12-02T10:00:05.250Z",
            ),
            attempt("ok", "json", Some(LINK), "198.51.100.9", at),
        ];
        // when folded
        let folded = when(0, &messages);
        // then three views, two visitors, the latest view's time
        let counts = &folded.days[&(LINK.to_owned(), day("2026-12-02"))];
        assert_eq!(counts.views, 3);
        assert_eq!((counts.previews, counts.denied), (0, 0));
        assert_eq!(
            counts.last_viewed_at,
            Some("2026-12-02T10:00:05.250Z".parse().expect("time"))
        );
        assert_eq!(folded.visitors.len(), 2);
        assert_eq!(folded.last_sequence, Some(3));
        assert_eq!(folded.messages, 3);
    }

    #[test]
    fn previews_and_every_other_outcome_of_a_matched_link_count_apart_from_views() {
        // given a preview and denied attempts of every kind, including outcomes from other
        // branches of the product this build does not know
        let at = "2026-12-02T10:00:00.000Z";
        let mut messages = vec![attempt("preview", "json", Some(LINK), "203.0.113.7", at)];
        for outcome in [
            "rate_limited",
            "over_limit",
            "revoked",
            "expired",
            "unavailable",
            "password_required",
            "password_invalid",
            "an_outcome_from_the_future",
        ] {
            messages.push(attempt(outcome, "json", Some(LINK), "203.0.113.7", at));
        }
        // when folded
        let folded = when(0, &messages);
        // then one preview and eight denied, no view and no visitor
        let counts = &folded.days[&(LINK.to_owned(), day("2026-12-02"))];
        assert_eq!((counts.views, counts.previews, counts.denied), (0, 1, 8));
        assert_eq!(counts.last_viewed_at, None);
        assert!(folded.visitors.is_empty());
    }

    #[test]
    fn media_fetches_and_attempts_that_matched_no_link_are_not_counted() {
        // given a media fetch of a link, a bad media signature, and dead tokens of no link
        let at = "2026-12-02T10:00:00.000Z";
        let messages = [
            attempt("ok", "media", Some(LINK), "203.0.113.7", at),
            attempt("forbidden", "media", None, "203.0.113.7", at),
            attempt("not_found", "json", None, "203.0.113.7", at),
            attempt("rate_limited", "html", None, "203.0.113.7", at),
        ];
        // when folded
        let folded = when(0, &messages);
        // then nothing is counted, but every message is folded
        assert!(folded.days.is_empty());
        assert_eq!(folded.messages, 4);
        assert_eq!(folded.last_sequence, Some(4));
    }

    #[test]
    fn a_redelivered_message_at_or_before_the_folded_position_counts_nothing() {
        // given five views, of which the first three were folded already
        let at = "2026-12-02T10:00:00.000Z";
        let messages: Vec<_> = (0..5)
            .map(|i| attempt("ok", "json", Some(LINK), &format!("203.0.113.{i}"), at))
            .collect();
        // when the batch is redelivered whole and folded after position 3
        let folded = when(3, &messages);
        // then only the last two count
        assert_eq!(folded.days[&(LINK.to_owned(), day("2026-12-02"))].views, 2);
        assert_eq!(folded.messages, 2);
        assert_eq!(folded.last_sequence, Some(5));
        // and a batch entirely at or before the position adds nothing at all
        assert_eq!(when(5, &messages), Folded::default());
    }

    #[test]
    fn attempts_fall_on_their_own_utc_day() {
        // given views either side of midnight UTC (the second written with an offset)
        let messages = [
            attempt(
                "ok",
                "json",
                Some(LINK),
                "203.0.113.7",
                "2026-12-01T23:59:59.999Z",
            ),
            attempt(
                "ok",
                "json",
                Some(LINK),
                "203.0.113.7",
                "2026-12-02T01:00:00.000+02:00",
            ),
            attempt(
                "ok",
                "json",
                Some(LINK),
                "203.0.113.7",
                "2026-12-02T00:00:00.000Z",
            ),
        ];
        // when folded
        let folded = when(0, &messages);
        // then two views on the 1st (23:00Z is still the 1st) and one on the 2nd, and the
        // visitor is counted on each day
        assert_eq!(folded.days[&(LINK.to_owned(), day("2026-12-01"))].views, 2);
        assert_eq!(folded.days[&(LINK.to_owned(), day("2026-12-02"))].views, 1);
        assert_eq!(folded.visitors.len(), 2);
    }

    #[test]
    fn unreadable_messages_are_folded_past_but_never_counted() {
        // given a message that is not JSON, one without a time, and a good view
        let at = "2026-12-02T10:00:00.000Z";
        let messages = [
            b"not json".to_vec(),
            br#"{"outcome":"ok","format":"json","share_id":"mslink_0123456789ab","client_ip":"1.2.3.4","occurred_at":"yesterday"}"#.to_vec(),
            attempt("ok", "json", Some(LINK), "203.0.113.7", at),
        ];
        // when folded
        let folded = when(0, &messages);
        // then the position moves past all three and only the view counts
        assert_eq!(folded.last_sequence, Some(3));
        assert_eq!(folded.unreadable, 2);
        assert_eq!(folded.days[&(LINK.to_owned(), day("2026-12-02"))].views, 1);
    }

    #[test]
    fn one_ip_on_two_links_is_two_visitors_that_cannot_be_linked() {
        // given the same IP viewing two links
        let at = "2026-12-02T10:00:00.000Z";
        let messages = [
            attempt("ok", "json", Some(LINK), "203.0.113.7", at),
            attempt("ok", "json", Some(OTHER), "203.0.113.7", at),
        ];
        // when folded
        let folded = when(0, &messages);
        // then each link has one visitor, under different hashes
        let hashes: BTreeSet<_> = folded.visitors.iter().map(|(_, _, v)| *v).collect();
        assert_eq!(hashes.len(), 2);
    }
}
