//! The share page: the HTML rendering of `GET /v1/music/shared/{token}`, for a person who opens
//! a link in a browser (the resolve route answers it when `Accept` prefers `text/html`, see
//! [`crate::resolve::negotiate`]).
//!
//! Why a module of its own: [`crate::resolve`] decides what a token resolves to (rate limit,
//! judgement, `max_views`, audit) and stays the only place that does; this module only turns a
//! [`Resolution`] into a page, as `render_json` turns it into the source page's JSON. The facts
//! come from the same [`ResolvedView`] the JSON shows, so the two renderings cannot disagree.
//!
//! The templates live in `query-api/templates/` (askama, HTML auto-escaping on: titles and
//! descriptions are the owner's text, shown to strangers). The page needs no JavaScript and its
//! `Content-Security-Policy` allows none. What it must never do:
//! - put the token-bearing page URL or a signed playback URL in link-preview tags (previews are
//!   cached by third parties; the playback URL expires in minutes);
//! - tell dead links apart: every cause gets one byte-identical page, without a trace id;
//! - let search engines index anything but a live `public` share.

use askama::Template;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use events::event::Visibility;
use events::link::LinkStatus;
use service_kit::ApiError;

use crate::app::AppState;
use crate::resolve::{Refusal, Resolution};
use crate::view::{ResolvedView, TrackView, UNAVAILABLE_MESSAGE};

/// `og:site_name`, and the suffix of every `<title>`.
pub const SITE_NAME: &str = "Music Share";

/// The heading and first line of the one page every dead link gets (the JSON message).
pub const DEAD_HEADING: &str = "This link is no longer available";
const DEAD_MESSAGE: &str = events::link::DEAD_LINK_MESSAGE;

/// No script at all; inline style only; media from wherever the signed URLs point; forms (the
/// password form, "Listen") post only back to this origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
     media-src http: https:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Served if a template ever fails to render (it should not: every value is a plain string).
const RENDER_FAILED: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"robots\" content=\"noindex\"><title>Music Share</title></head><body>\
<p>Something went wrong. Please try again later.</p></body></html>";

/// What every page's `<head>` says: the title, the link-preview tags, the robots rule.
struct Head {
    title: String,
    description: String,
    /// `og:type`: `music.song`, `music.playlist`, or `website` for the message pages.
    og_type: &'static str,
    noindex: bool,
    site_name: &'static str,
}

impl Head {
    fn new(
        title: impl Into<String>,
        description: impl Into<String>,
        og_type: &'static str,
    ) -> Head {
        Head {
            title: title.into(),
            description: description.into(),
            og_type,
            noindex: true,
            site_name: SITE_NAME,
        }
    }
}

#[derive(Template)]
#[template(path = "track.html")]
struct TrackPage {
    head: Head,
    track: PageTrack,
    expiry: Option<Expiry>,
    /// Read-only (a limited link's `GET`, a preview): a "Listen" button instead of a player.
    listen: bool,
}

#[derive(Template)]
#[template(path = "collection.html")]
struct CollectionPage {
    head: Head,
    name: String,
    description: Option<String>,
    count: String,
    tracks: Vec<PageTrack>,
    expiry: Option<Expiry>,
    listen: bool,
}

/// A protected link: only the password form (nothing of the share, not even its title).
#[derive(Template)]
#[template(path = "password.html")]
struct PasswordPage {
    head: Head,
    problem: Option<&'static str>,
}

/// Dead link, removed content, rate limited, store failure.
#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    head: Head,
    heading: &'static str,
    lines: Vec<String>,
    /// The request id, on failure pages only (never on the dead-link page).
    reference: Option<String>,
}

/// One track as the page shows it: the view's facts in plain words.
struct PageTrack {
    title: String,
    /// `m:ss`.
    clock: String,
    /// The measured duration in seconds, exactly as the JSON gives it.
    seconds: String,
    /// `None` on a read-only page.
    playback_url: Option<String>,
    commercial: &'static str,
    attribution: &'static str,
    licence_class: String,
    licence_version: String,
    instrumental: &'static str,
    engine: String,
    mode: String,
    /// For the preview text.
    is_instrumental: bool,
    needs_attribution: bool,
}

impl PageTrack {
    fn new(track: TrackView) -> PageTrack {
        let seconds = track.measured_duration_seconds;
        PageTrack {
            title: track.title,
            clock: clock(seconds),
            seconds: format!("{seconds}"),
            playback_url: track.playback_url,
            commercial: if track.licence.commercial_use {
                "Commercial use allowed"
            } else {
                "Personal use only"
            },
            attribution: if track.licence.requires_attribution {
                "Attribution required"
            } else {
                "No attribution required"
            },
            licence_class: track.licence.licence_class,
            licence_version: track.licence.licence_version,
            instrumental: if track.instrumental { "Yes" } else { "No" },
            engine: track.engine,
            mode: track.mode,
            is_instrumental: track.instrumental,
            needs_attribution: track.licence.requires_attribution,
        }
    }

    /// The preview text: duration, instrumental, what the licence allows and asks.
    fn summary(&self) -> String {
        let instrumental = if self.is_instrumental {
            " · Instrumental"
        } else {
            ""
        };
        let attribution = if self.needs_attribution {
            " · Attribution required"
        } else {
            ""
        };
        format!(
            "Track · {}{instrumental} · {}{attribution}",
            self.clock, self.commercial
        )
    }
}

struct Expiry {
    /// RFC 3339, for `<time datetime>`.
    iso: String,
    text: String,
}

impl Expiry {
    fn new(at: DateTime<Utc>) -> Expiry {
        Expiry {
            iso: events::format::rfc3339(at),
            text: at.format("%Y-%m-%d %H:%M UTC").to_string(),
        }
    }
}

/// The page for a resolved token, with the status the JSON rendering would have.
pub fn render(app: &AppState, resolution: &Resolution, now: DateTime<Utc>) -> Response {
    match resolution.refusal {
        Some(Refusal::PasswordRequired) => return password_form(None),
        Some(Refusal::PasswordInvalid) => {
            return password_form(Some("That password is not correct. Please try again."))
        }
        Some(Refusal::TooManyGuesses(wait)) => {
            let mut response = rate_limited(wait);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait));
            return response;
        }
        None => {}
    }
    match (resolution.status, resolution.row()) {
        (Some(LinkStatus::Active), Some(row)) if resolution.preview => {
            live(ResolvedView::live(row, |_| None), row.visibility, true)
        }
        (Some(LinkStatus::Active), Some(row)) => {
            let view = ResolvedView::live(row, |track_id| Some(app.signer.mint(track_id, now)));
            live(view, row.visibility, false)
        }
        (Some(LinkStatus::Unavailable), Some(row)) => removed(row.target_type.as_str()),
        _ => dead(),
    }
}

/// The password form of a protected link (401, like the JSON's `PASSWORD_REQUIRED` and
/// `INVALID_PASSWORD`), with why the last try failed.
fn password_form(problem: Option<&'static str>) -> Response {
    let head = Head::new(
        "Password required",
        "This share link is protected by a password.",
        "website",
    );
    respond(StatusCode::UNAUTHORIZED, &PasswordPage { head, problem })
}

fn live(view: ResolvedView, visibility: Visibility, listen: bool) -> Response {
    let noindex = visibility != Visibility::Public;
    let expiry = view
        .share
        .as_ref()
        .and_then(|share| share.expires_at)
        .map(Expiry::new);
    match (view.track, view.collection, view.tracks) {
        (Some(track), _, _) => {
            let track = PageTrack::new(track);
            let mut head = Head::new(track.title.clone(), track.summary(), "music.song");
            head.noindex = noindex;
            respond(
                StatusCode::OK,
                &TrackPage {
                    head,
                    track,
                    expiry,
                    listen,
                },
            )
        }
        (None, Some(collection), tracks) => {
            let tracks: Vec<PageTrack> = tracks
                .unwrap_or_default()
                .into_iter()
                .map(PageTrack::new)
                .collect();
            let count = match tracks.len() {
                1 => "1 track".to_owned(),
                n => format!("{n} tracks"),
            };
            let description = collection.description.filter(|d| !d.trim().is_empty());
            let preview = match &description {
                Some(d) => preview_text(d),
                None => format!("Collection · {count}"),
            };
            let mut head = Head::new(collection.name.clone(), preview, "music.playlist");
            head.noindex = noindex;
            respond(
                StatusCode::OK,
                &CollectionPage {
                    head,
                    name: collection.name,
                    description,
                    count,
                    tracks,
                    expiry,
                    listen,
                },
            )
        }
        _ => removed(view.kind),
    }
}

/// The creator removed the content: 200, as the JSON's `available: false`.
fn removed(kind: &str) -> Response {
    let heading = if kind == "collection" {
        "This collection was removed"
    } else {
        "This track was removed"
    };
    message(
        StatusCode::OK,
        heading,
        vec![UNAVAILABLE_MESSAGE.to_owned()],
        None,
    )
}

/// Every dead cause: one page, identical to the byte, status 404 as the JSON.
fn dead() -> Response {
    respond(StatusCode::NOT_FOUND, &MessagePage::dead())
}

/// The resolve limit refused the request; the caller adds `Retry-After` and `RateLimit-*`.
pub fn rate_limited(retry_after_secs: u64) -> Response {
    let wait = match retry_after_secs.max(1) {
        1 => "1 second".to_owned(),
        n => format!("{n} seconds"),
    };
    message(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many requests",
        vec![
            "Too many requests. Please try again later.".to_owned(),
            format!("You can try again in {wait}."),
        ],
        None,
    )
}

/// The resolve failed (the read models are unreachable: 503; a bug: 500), with the error's
/// status and `Retry-After`.
pub fn failure(error: &ApiError) -> Response {
    let status = error.status();
    let (heading, line) = if status == StatusCode::SERVICE_UNAVAILABLE {
        (
            "Temporarily unavailable",
            "The service is temporarily unavailable. Please try again shortly.",
        )
    } else {
        (
            "Something went wrong",
            "An internal error occurred. Please try again later.",
        )
    };
    let mut response = message(
        status,
        heading,
        vec![line.to_owned()],
        service_kit::current_request_id(),
    );
    if let Some(seconds) = error.retry_after() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn message(
    status: StatusCode,
    heading: &'static str,
    lines: Vec<String>,
    reference: Option<String>,
) -> Response {
    respond(status, &MessagePage::new(heading, lines, reference))
}

impl MessagePage {
    fn new(heading: &'static str, lines: Vec<String>, reference: Option<String>) -> MessagePage {
        let description = lines.first().cloned().unwrap_or_default();
        MessagePage {
            head: Head::new(heading, description, "website"),
            heading,
            lines,
            reference,
        }
    }

    /// Every dead cause: one page, identical to the byte.
    fn dead() -> MessagePage {
        MessagePage::new(
            DEAD_HEADING,
            vec![
                DEAD_MESSAGE.to_owned(),
                "If someone shared it with you, ask them for a new link.".to_owned(),
            ],
            None,
        )
    }
}

fn respond(status: StatusCode, page: &impl Template) -> Response {
    let mut response = match page.render() {
        Ok(body) => (status, Html(body)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a share page did not render");
            (StatusCode::INTERNAL_SERVER_ERROR, Html(RENDER_FAILED)).into_response()
        }
    };
    protect(response.headers_mut());
    response
}

fn protect(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    // The page's URL carries the token: never send it on as a referrer (to the media host).
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// `m:ss`, whole seconds rounded down (never negative).
fn clock(seconds: f64) -> String {
    let whole = if seconds.is_finite() && seconds > 0.0 {
        seconds.floor() as u64
    } else {
        0
    };
    format!("{}:{:02}", whole / 60, whole % 60)
}

/// At most 200 characters of `text` on one line, for a link preview.
fn preview_text(text: &str) -> String {
    const MAX: usize = 200;
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= MAX {
        flat
    } else {
        let mut cut: String = flat.chars().take(MAX - 1).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::LicenceView;

    fn track(title: &str, seconds: f64) -> TrackView {
        TrackView {
            id: "mtrack_0123456789ab".to_owned(),
            title: title.to_owned(),
            engine: "studio".to_owned(),
            mode: "creation".to_owned(),
            measured_duration_seconds: seconds,
            instrumental: false,
            playback_url: Some(
                "http://m/v1/music/media/mtrack_0123456789ab?exp=1&kid=k&sig=ab".to_owned(),
            ),
            licence: LicenceView {
                licence_class: "personal_only".to_owned(),
                licence_version: "2026-01".to_owned(),
                commercial_use: false,
                requires_attribution: false,
            },
        }
    }

    #[test]
    fn durations_read_as_minutes_and_seconds() {
        assert_eq!(clock(120.4), "2:00");
        assert_eq!(clock(59.999), "0:59");
        assert_eq!(clock(3600.0), "60:00");
        assert_eq!(clock(0.0), "0:00");
        assert_eq!(clock(-3.0), "0:00");
        assert_eq!(clock(f64::NAN), "0:00");
    }

    #[test]
    fn previews_are_one_bounded_line() {
        assert_eq!(preview_text("  Songs\nfor   later "), "Songs for later");
        let long = "é".repeat(500);
        let cut = preview_text(&long);
        assert_eq!(cut.chars().count(), 200);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn a_track_page_escapes_the_owners_text_and_keeps_urls_out_of_previews() {
        let page = TrackPage {
            head: Head::new("<script>x</script>", "d", "music.song"),
            track: PageTrack::new(track("<script>x</script>", 61.5)),
            expiry: None,
            listen: false,
        };
        let html = page.render().expect("renders");
        assert!(!html.contains("<script"), "{html}");
        assert!(
            html.contains("&#60;script&#62;x&#60;/script&#62;"),
            "{html}"
        );
        assert!(html.contains("1:01"));
        assert!(html.contains("61.5"));
        assert!(html.contains("Personal use only"));
        assert!(html.contains("No attribution required"));
        assert!(html.contains(r#"<meta name="robots" content="noindex">"#));
        for line in html
            .lines()
            .filter(|l| l.contains("og:") || l.contains("twitter:"))
        {
            assert!(
                !line.contains("/v1/music/"),
                "a URL in a preview tag: {line}"
            );
        }
    }

    #[test]
    fn the_dead_page_never_varies() {
        let first = MessagePage::dead().render().expect("renders");
        assert_eq!(first, MessagePage::dead().render().expect("renders"));
        assert!(first.contains(r#"<meta name="robots" content="noindex">"#));
        assert!(first.contains(DEAD_MESSAGE));
        assert!(!first.contains("req_"), "no request id on the dead page");
        let response = dead();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
    }
}
