//! Content negotiation of the resolve: JSON (the source page's shape) or the HTML share page.
//!
//! Its own module because it is a pure function of one header with rules of its own (RFC 9110
//! quality values and specificity), tested without a server, and the hot route calls it on
//! every request, so it must stay allocation-free.

use axum::http::{header, HeaderMap};

use crate::audit::Format;

/// Which rendering the client asked for: the HTML page ([`crate::page`]) only when `Accept` gives
/// `text/html` (or `application/xhtml+xml`) a strictly higher quality than `application/json`
/// and a non-zero one; JSON otherwise (no `Accept`, `*/*`, `application/json`, a tie).
///
/// Each type's quality comes from the most specific range that matches it (RFC 9110 §12.5.1:
/// `text/html` over `text/*` over `*/*`). This is the hot route: no allocation, and a request
/// without `Accept` costs one header lookup.
pub fn negotiate(headers: &HeaderMap) -> Format {
    let mut values = headers.get_all(header::ACCEPT).iter().peekable();
    if values.peek().is_none() {
        return Format::Json;
    }
    let (mut html, mut xhtml, mut json) = (Match::NONE, Match::NONE, Match::NONE);
    for value in values {
        // A value that is not visible ASCII cannot name our types; skip it.
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            let Some((kind, subtype)) = media.split_once('/') else {
                continue;
            };
            let (kind, subtype) = (kind.trim(), subtype.trim());
            let mut q = Some(1000);
            for param in parts {
                if let Some((name, value)) = param.split_once('=') {
                    if name.trim().eq_ignore_ascii_case("q") {
                        q = parse_qvalue(value.trim());
                        break;
                    }
                }
            }
            let Some(q) = q else { continue };
            html.offer(kind, subtype, "text", "html", q);
            xhtml.offer(kind, subtype, "application", "xhtml+xml", q);
            json.offer(kind, subtype, "application", "json", q);
        }
    }
    let html_q = html.q().max(xhtml.q());
    if html_q > 0 && html_q > json.q() {
        Format::Html
    } else {
        Format::Json
    }
}

/// The most specific `Accept` range seen so far for one media type, and its quality.
#[derive(Clone, Copy)]
struct Match {
    /// 0: nothing matched; 1: `*/*`; 2: `type/*`; 3: `type/subtype`.
    specificity: u8,
    /// Thousandths (`q=0.8` is 800).
    q: u16,
}

impl Match {
    const NONE: Match = Match {
        specificity: 0,
        q: 0,
    };

    fn offer(&mut self, kind: &str, subtype: &str, want_kind: &str, want_subtype: &str, q: u16) {
        let specificity = if kind == "*" && subtype == "*" {
            1
        } else if !kind.eq_ignore_ascii_case(want_kind) {
            return;
        } else if subtype == "*" {
            2
        } else if subtype.eq_ignore_ascii_case(want_subtype) {
            3
        } else {
            return;
        };
        if specificity > self.specificity || (specificity == self.specificity && q > self.q) {
            *self = Match { specificity, q };
        }
    }

    fn q(self) -> u16 {
        self.q
    }
}

/// An RFC 9110 `qvalue` in thousandths: `0`, `0.5`, `1`, `1.000`; `None` if malformed.
fn parse_qvalue(value: &str) -> Option<u16> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths = 0u16;
    for digit in fraction.bytes().chain(std::iter::repeat(b'0')).take(3) {
        thousandths = thousandths * 10 + u16::from(digit - b'0');
    }
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn format_for(accept: &[&str]) -> Format {
        let mut headers = HeaderMap::new();
        for value in accept {
            headers.append(
                header::ACCEPT,
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        negotiate(&headers)
    }

    #[test]
    fn html_only_when_it_is_strictly_preferred() {
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert_eq!(format_for(&[browser]), Format::Html);
        assert_eq!(format_for(&["text/html"]), Format::Html);
        assert_eq!(format_for(&["application/xhtml+xml"]), Format::Html);
        assert_eq!(format_for(&["TEXT/HTML; Q=1"]), Format::Html);
        assert_eq!(format_for(&["text/*"]), Format::Html);
        assert_eq!(
            format_for(&["application/json;q=0.5, text/html"]),
            Format::Html
        );
        assert_eq!(
            format_for(&["application/json;q=0.5", "text/html"]),
            Format::Html
        );
        assert_eq!(format_for(&["*/*;q=0.1, text/html;q=0.2"]), Format::Html);

        assert_eq!(format_for(&[]), Format::Json);
        assert_eq!(format_for(&["*/*"]), Format::Json);
        assert_eq!(format_for(&["application/json"]), Format::Json);
        assert_eq!(
            format_for(&["text/html, application/json"]),
            Format::Json,
            "a tie"
        );
        assert_eq!(
            format_for(&["text/html;q=0.5, application/json"]),
            Format::Json
        );
        assert_eq!(format_for(&["text/html;q=0, */*"]), Format::Json);
        assert_eq!(format_for(&["text/html;q=0"]), Format::Json);
        assert_eq!(
            format_for(&["application/*, text/html;q=0.9"]),
            Format::Json
        );
        assert_eq!(format_for(&["text/plain"]), Format::Json);
        assert_eq!(format_for(&[""]), Format::Json);
        assert_eq!(format_for(&["garbage, ;;, /"]), Format::Json);
        // A malformed quality drops that range only.
        assert_eq!(format_for(&["text/html;q=2, */*"]), Format::Json);
        assert_eq!(format_for(&["text/html;q=0.x"]), Format::Json);
    }

    #[test]
    fn qvalues_parse_as_thousandths() {
        assert_eq!(parse_qvalue("1"), Some(1000));
        assert_eq!(parse_qvalue("1.000"), Some(1000));
        assert_eq!(parse_qvalue("0.8"), Some(800));
        assert_eq!(parse_qvalue("0.05"), Some(50));
        assert_eq!(parse_qvalue("0.125"), Some(125));
        assert_eq!(parse_qvalue("0"), Some(0));
        assert_eq!(parse_qvalue("0."), Some(0));
        assert_eq!(parse_qvalue("1.5"), None);
        assert_eq!(parse_qvalue("0.1234"), None);
        assert_eq!(parse_qvalue("-1"), None);
        assert_eq!(parse_qvalue(""), None);
    }
}
