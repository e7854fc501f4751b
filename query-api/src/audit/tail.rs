//! `query-api audit tail`: the audit stream as JSON lines on stdout, as they arrive, or, with
//! `--summary`, a small table of outcomes per link for a window.
//!
//! The example consumer for analysts: an ephemeral ordered consumer (nothing to clean up, no
//! acknowledgements), starting with new messages, at a time (`--since 1h`), or with the whole
//! stream (`--from-start`). `--share` and `--outcome` keep only the messages that match. The
//! durable, exactly-once consumer that builds the per-link statistics is the projector's
//! (`projector/src/analytics`).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::{push, DeliverPolicy};
use futures::StreamExt;
use serde::Deserialize;

use super::publisher::ensure_stream;
use super::SUBJECT;

/// What to print, and from where.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Start with the oldest message in the stream.
    pub from_start: bool,
    /// Start with the first message this long ago.
    pub since: Option<Duration>,
    /// Stop after this many printed messages.
    pub limit: Option<u64>,
    pub filter: Filter,
    /// Print a table of outcomes per link for the window, instead of lines.
    pub summary: bool,
}

/// Which messages to keep.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub share: Option<String>,
    /// Any of these outcomes (empty: all).
    pub outcomes: Vec<String>,
}

/// The fields a filter or a summary reads; unknown outcomes are kept as they are.
#[derive(Deserialize)]
struct Fields {
    outcome: Option<String>,
    share_id: Option<String>,
}

impl Filter {
    fn matches(&self, fields: &Fields) -> bool {
        if let Some(share) = &self.share {
            if fields.share_id.as_deref() != Some(share.as_str()) {
                return false;
            }
        }
        self.outcomes.is_empty()
            || fields
                .outcome
                .as_deref()
                .is_some_and(|o| self.outcomes.iter().any(|w| w == o))
    }
}

/// Reads `--since`: a whole number and a unit, `s`, `m`, `h` or `d` (`90s`, `15m`, `1h`, `7d`).
pub fn parse_since(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let unit_at = raw
        .find(|c: char| !c.is_ascii_digit())
        .ok_or("give a unit: s, m, h or d (e.g. 1h)")?;
    let (number, unit) = raw.split_at(unit_at);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?} does not start with a whole number"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit {unit:?}: use s, m, h or d")),
    };
    n.checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{raw:?} is too long ago"))
}

/// The window a summary covers when none is given.
pub const DEFAULT_SUMMARY_WINDOW: Duration = Duration::from_secs(3600);

pub async fn run(nats_url: &str, replicas: usize, options: &Options) -> anyhow::Result<()> {
    let servers = service_kit::nats::servers(nats_url).map_err(anyhow::Error::msg)?;
    let client = service_kit::nats::options("query-api audit tail")
        .connect(servers)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach NATS at {nats_url}: {e}"))?;
    let js = jetstream::new(client.clone());
    let info = ensure_stream(&js, replicas).await?;
    let stream = js.get_stream(super::STREAM).await?;
    let since = match (options.since, options.summary && !options.from_start) {
        (Some(since), _) => Some(since),
        (None, true) => Some(DEFAULT_SUMMARY_WINDOW),
        (None, false) => None,
    };
    let deliver_policy = if let Some(since) = since {
        let start = chrono::Utc::now() - chrono::Duration::from_std(since)?;
        let nanos = start.timestamp_nanos_opt().unwrap_or(0);
        let start_time = async_nats::datetime::from_nanos(i128::from(nanos.max(0)))
            .map_err(|e| anyhow::anyhow!("--since: {e}"))?;
        DeliverPolicy::ByStartTime { start_time }
    } else if options.from_start {
        DeliverPolicy::All
    } else {
        DeliverPolicy::New
    };
    // A summary covers the window up to the stream's last message as it starts.
    let end = info.state.last_sequence;
    if options.summary && (end == 0 || info.state.messages == 0) {
        print!("{}", summary_table(&BTreeMap::new()));
        return Ok(());
    }
    let consumer = stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: SUBJECT.to_owned(),
            deliver_policy,
            ..Default::default()
        })
        .await?;
    // Ready: a caller (or a test) may start producing now.
    tracing::info!("tailing the audit stream");
    let mut messages = consumer.messages().await?;
    let mut printed = 0u64;
    let mut table: Summary = BTreeMap::new();
    loop {
        let next = if options.summary {
            // Nothing more within a few seconds: the window holds nothing newer on this subject.
            match tokio::time::timeout(Duration::from_secs(3), messages.next()).await {
                Ok(next) => next,
                Err(_) => break,
            }
        } else {
            messages.next().await
        };
        let Some(message) = next else { break };
        let message = message?;
        let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        if options.summary && sequence > end {
            break;
        }
        let fields: Fields = serde_json::from_slice(&message.payload).unwrap_or(Fields {
            outcome: None,
            share_id: None,
        });
        if options.filter.matches(&fields) {
            if options.summary {
                let row = table
                    .entry(fields.share_id.unwrap_or_else(|| NO_LINK.to_owned()))
                    .or_default();
                *row.entry(fields.outcome.unwrap_or_else(|| "?".to_owned()))
                    .or_default() += 1;
            } else {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(&message.payload)?;
                stdout.write_all(b"\n")?;
                stdout.flush()?;
                printed += 1;
                if options.limit.is_some_and(|l| printed >= l) {
                    break;
                }
            }
        }
        if options.summary && sequence >= end {
            break;
        }
    }
    if options.summary {
        print!("{}", summary_table(&table));
    }
    Ok(())
}

/// Outcomes counted per link (the row of attempts that matched no link is [`NO_LINK`]).
type Summary = BTreeMap<String, BTreeMap<String, u64>>;

const NO_LINK: &str = "(none)";

/// One row per link (most attempts first), one column per outcome seen, and a total.
fn summary_table(table: &Summary) -> String {
    let mut outcomes: Vec<&str> = table
        .values()
        .flat_map(|row| row.keys().map(String::as_str))
        .collect();
    outcomes.sort_unstable();
    outcomes.dedup();
    let mut rows: Vec<(&str, &BTreeMap<String, u64>, u64)> = table
        .iter()
        .map(|(link, row)| (link.as_str(), row, row.values().sum()))
        .collect();
    rows.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(b.0)));

    let mut header = vec!["share_id".to_owned()];
    header.extend(outcomes.iter().map(|o| (*o).to_owned()));
    header.push("total".to_owned());
    let mut lines = vec![header];
    let mut totals = vec![0u64; outcomes.len() + 1];
    for (link, row, total) in &rows {
        let mut line = vec![(*link).to_owned()];
        for (i, outcome) in outcomes.iter().enumerate() {
            let n = row.get(*outcome).copied().unwrap_or(0);
            totals[i] += n;
            line.push(n.to_string());
        }
        totals[outcomes.len()] += total;
        line.push(total.to_string());
        lines.push(line);
    }
    let mut last = vec!["total".to_owned()];
    last.extend(totals.iter().map(u64::to_string));
    lines.push(last);

    let widths: Vec<usize> = (0..lines[0].len())
        .map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c == 0 {
                    format!("{cell:<width$}", width = widths[c])
                } else {
                    format!("{cell:>width$}", width = widths[c])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_number_and_a_unit() {
        assert_eq!(parse_since("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_since("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_since("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_since("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in ["", "1", "h", "1w", "-1h", "1.5h", "99999999999999999999d"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_filter_keeps_the_named_link_and_outcomes() {
        let fields = |outcome: &str, share: Option<&str>| Fields {
            outcome: Some(outcome.to_owned()),
            share_id: share.map(str::to_owned),
        };
        let filter = Filter {
            share: Some("mslink_0123456789ab".to_owned()),
            outcomes: vec!["ok".to_owned(), "preview".to_owned()],
        };
        assert!(filter.matches(&fields("ok", Some("mslink_0123456789ab"))));
        assert!(filter.matches(&fields("preview", Some("mslink_0123456789ab"))));
        assert!(!filter.matches(&fields("revoked", Some("mslink_0123456789ab"))));
        assert!(!filter.matches(&fields("ok", Some("mslink_ba9876543210"))));
        assert!(!filter.matches(&fields("ok", None)));
        assert!(Filter::default().matches(&fields("anything", None)));
    }

    #[test]
    fn the_summary_is_one_row_per_link_with_a_column_per_outcome() {
        let mut table: Summary = BTreeMap::new();
        let mut add = |link: &str, outcome: &str, n: u64| {
            *table
                .entry(link.to_owned())
                .or_default()
                .entry(outcome.to_owned())
                .or_default() += n;
        };
        add("mslink_0123456789ab", "ok", 3);
        add("mslink_0123456789ab", "rate_limited", 2);
        add("mslink_ba9876543210", "ok", 1);
        add(NO_LINK, "not_found", 4);
        assert_eq!(
            summary_table(&table),
            "share_id             not_found  ok  rate_limited  total\n\
             mslink_0123456789ab          0   3             2      5\n\
             (none)                       4   0             0      4\n\
             mslink_ba9876543210          0   1             0      1\n\
             total                        4   4             2     10\n"
        );
    }
}
