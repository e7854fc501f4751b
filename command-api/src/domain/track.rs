//! The track aggregate (stream `track-{id}`): `TrackImported`, then perhaps `ContentRemoved`.
//!
//! Import is the only command that takes a file. The handler streams it to disk and measures it
//! (I/O), then asks [`decide`] with the form's raw text fields and what the audio turned out to
//! be; a track exists only with valid fields and measured audio. Deleting is for the creator
//! alone: another member of the organization gets a 403 (as the source pages say), anyone else
//! the 404.

use chrono::{DateTime, Utc};
use events::event::{ContentRemoved, MediaFile, TargetType, TrackImported};
use events::ids::{OrganizationId, TrackId};
use events::licence::{self, LicenceClass};
use events::MusicEvent;

use super::{Context, Decided, Recorded, Rejection};
use crate::text;

pub const TITLE_MAX_CHARS: usize = 512;
/// `engine` and `mode` are short keys (`studio`, `creation`).
pub const KEY_MAX_CHARS: usize = 64;

/// A track as decided from its stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Track {
    pub imported: TrackImported,
    pub created_at: DateTime<Utc>,
    pub removed: bool,
}

impl Track {
    /// Live and in `org`: what every command that points at a track requires.
    pub fn is_live_in(&self, org: &OrganizationId) -> bool {
        !self.removed && &self.imported.organization_id == org
    }
}

/// Folds a track stream; `None` if it holds no `TrackImported`.
pub fn from_history(history: &[Recorded]) -> Option<Track> {
    history.iter().fold(None, evolve)
}

pub fn evolve(state: Option<Track>, recorded: &Recorded) -> Option<Track> {
    match (&recorded.event, state) {
        (MusicEvent::TrackImported(imported), _) => Some(Track {
            imported: imported.clone(),
            created_at: recorded.occurred_at,
            removed: false,
        }),
        (MusicEvent::ContentRemoved(_), Some(track)) => Some(Track {
            removed: true,
            ..track
        }),
        (_, state) => state,
    }
}

/// The multipart form's text fields as received (absent: `None`), and what was already wrong
/// while reading it (a field given twice, too long, not UTF-8).
#[derive(Clone, Debug, Default)]
pub struct TrackForm {
    pub title: Option<String>,
    pub engine: Option<String>,
    pub mode: Option<String>,
    pub instrumental: Option<String>,
    pub licence_class: Option<String>,
    pub problems: Vec<(String, String)>,
}

/// What the uploaded audio turned out to be.
#[derive(Clone, Debug)]
pub enum Audio {
    /// No `audio` field.
    Missing,
    /// It did not decode as audio we accept: why, safe to show.
    Refused(String),
    /// Decoded and measured, stored content-addressed under `media`.
    Measured { duration_ms: u64, media: MediaFile },
}

// One command per request, built once and moved into `decide`: its size costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum TrackCommand {
    /// Import a track under a fresh `track_id` (the runner draws a new one on a collision).
    Import {
        org: OrganizationId,
        track_id: TrackId,
        form: TrackForm,
        audio: Audio,
    },
    /// Delete a track: its shares stay and resolve as unavailable.
    Remove {
        org: OrganizationId,
        track_id: TrackId,
    },
}

pub fn decide(state: &Option<Track>, command: TrackCommand, ctx: &Context) -> Decided {
    match command {
        TrackCommand::Import {
            org,
            track_id,
            form,
            audio,
        } => import(org, track_id, form, audio, ctx),
        TrackCommand::Remove { org, track_id } => {
            let track = state
                .as_ref()
                .filter(|t| t.is_live_in(&org))
                .ok_or_else(|| Rejection::not_found("track_id", track_id.as_str()))?;
            if track.imported.owner_id != ctx.actor {
                return Err(Rejection::NotCreator {
                    field: "track_id",
                    id: track_id.to_string(),
                    why: "Only the track's creator may delete it",
                });
            }
            Ok(vec![MusicEvent::ContentRemoved(ContentRemoved {
                target_type: TargetType::Track,
                target_id: track_id.to_string(),
                organization_id: org,
            })])
        }
    }
}

/// Every field checked, every problem named (sorted by field); the audio's problem beside the
/// text fields' ones, so one answer lists all that is wrong.
fn import(
    org: OrganizationId,
    track_id: TrackId,
    form: TrackForm,
    audio: Audio,
    ctx: &Context,
) -> Decided {
    let mut problems = form.problems;
    let mut problem = |field: &str, why: &str| {
        if !problems.iter().any(|(f, _)| f == field) {
            problems.push((field.to_owned(), why.to_owned()));
        }
    };
    let mut text_field = |field: &str, value: Option<String>, max_chars: usize| match value {
        None => {
            problem(field, "is required");
            None
        }
        Some(v) => match text::non_blank_problem(&v, max_chars) {
            Some(why) => {
                problem(field, &why);
                None
            }
            None => Some(v),
        },
    };
    let title = text_field("title", form.title, TITLE_MAX_CHARS);
    let engine = text_field("engine", form.engine, KEY_MAX_CHARS);
    let mode = text_field("mode", form.mode, KEY_MAX_CHARS);
    let instrumental = match form.instrumental.as_deref().map(str::trim) {
        None | Some("false") => Some(false),
        Some("true") => Some(true),
        Some(_) => {
            problem("instrumental", "must be true or false");
            None
        }
    };
    let licence_class = match form.licence_class.as_deref() {
        None => {
            problem("licence_class", "is required");
            None
        }
        Some(raw) => LicenceClass::parse(raw.trim()).or_else(|| {
            let known: Vec<_> = LicenceClass::ALL.iter().map(|c| c.as_str()).collect();
            problem(
                "licence_class",
                &format!("must be one of {}", known.join(", ")),
            );
            None
        }),
    };
    let measured = match audio {
        Audio::Missing => {
            problem("audio", "is required (an audio file)");
            None
        }
        Audio::Refused(why) => {
            problem("audio", &why);
            None
        }
        Audio::Measured { duration_ms, media } => Some((duration_ms, media)),
    };
    let (
        Some(title),
        Some(engine),
        Some(mode),
        Some(instrumental),
        Some(licence_class),
        Some((measured_duration_ms, media)),
        true,
    ) = (
        title,
        engine,
        mode,
        instrumental,
        licence_class,
        measured,
        problems.is_empty(),
    )
    else {
        problems.sort();
        return Err(Rejection::Invalid(problems));
    };
    Ok(vec![MusicEvent::TrackImported(TrackImported {
        track_id,
        organization_id: org,
        owner_id: ctx.actor.clone(),
        title,
        engine,
        mode,
        instrumental,
        licence_class,
        licence_version: licence::CURRENT_VERSION.to_owned(),
        measured_duration_ms,
        media,
    })])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::given::{self, *};

    fn given(events: impl IntoIterator<Item = MusicEvent>) -> Given<Option<Track>, TrackCommand> {
        given::given(from_history, decide, events)
    }

    fn valid_form() -> TrackForm {
        TrackForm {
            title: Some("Late Night Study".into()),
            engine: Some("studio".into()),
            mode: Some("creation".into()),
            instrumental: Some("true".into()),
            licence_class: Some("personal_only".into()),
            problems: Vec::new(),
        }
    }

    fn measured() -> Audio {
        Audio::Measured {
            duration_ms: 250,
            media: media(),
        }
    }

    fn import(form: TrackForm, audio: Audio) -> TrackCommand {
        TrackCommand::Import {
            org: org(),
            track_id: track_id(),
            form,
            audio,
        }
    }

    fn remove(org: OrganizationId) -> TrackCommand {
        TrackCommand::Remove {
            org,
            track_id: track_id(),
        }
    }

    fn removed() -> MusicEvent {
        MusicEvent::ContentRemoved(ContentRemoved {
            target_type: TargetType::Track,
            target_id: track_id().to_string(),
            organization_id: org(),
        })
    }

    #[test]
    fn a_valid_form_with_measured_audio_imports_the_track_under_the_current_licence_catalogue() {
        given([])
            .when(import(valid_form(), measured()))
            .then([track_imported(&org(), &owner())]);
    }

    #[test]
    fn instrumental_may_be_absent_and_text_is_kept_as_sent() {
        let form = TrackForm {
            instrumental: None,
            title: Some("  spaced  ".into()),
            ..valid_form()
        };
        let events = given([]).when(import(form, measured())).events();
        let MusicEvent::TrackImported(imported) = &events[0] else {
            panic!("{events:?}")
        };
        assert!(!imported.instrumental);
        assert_eq!(imported.title, "  spaced  ");
    }

    #[test]
    fn instrumental_and_the_licence_class_are_read_trimmed() {
        let form = TrackForm {
            instrumental: Some(" false\n".into()),
            licence_class: Some(" commercial_cleared ".into()),
            ..valid_form()
        };
        let events = given([]).when(import(form, measured())).events();
        let MusicEvent::TrackImported(imported) = &events[0] else {
            panic!("{events:?}")
        };
        assert!(!imported.instrumental);
        assert_eq!(imported.licence_class, LicenceClass::CommercialCleared);
    }

    #[test]
    fn each_wrong_field_is_named_once_and_sorted() {
        let form = TrackForm {
            title: Some(" \u{3000}".into()),
            engine: Some("e".repeat(KEY_MAX_CHARS + 1)),
            mode: None,
            instrumental: Some("yes".into()),
            licence_class: Some("free".into()),
            problems: Vec::new(),
        };
        let rejection = given([])
            .when(import(form, Audio::Refused("could not be decoded".into())))
            .rejection();
        let Rejection::Invalid(problems) = rejection else {
            panic!("{rejection:?}")
        };
        let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "audio",
                "engine",
                "instrumental",
                "licence_class",
                "mode",
                "title"
            ]
        );
        assert_eq!(problems[0].1, "could not be decoded");
    }

    #[test]
    fn missing_audio_is_required() {
        given([])
            .when(import(valid_form(), Audio::Missing))
            .then(Rejection::invalid("audio", "is required (an audio file)"));
    }

    #[test]
    fn a_problem_found_while_reading_the_form_wins_over_a_later_one() {
        let form = TrackForm {
            title: None,
            problems: vec![("title".into(), "must be given once".into())],
            ..valid_form()
        };
        given([])
            .when(import(form, measured()))
            .then(Rejection::invalid("title", "must be given once"));
    }

    #[test]
    fn a_nul_in_a_title_is_refused() {
        let form = TrackForm {
            title: Some("a\0b".into()),
            ..valid_form()
        };
        given([])
            .when(import(form, measured()))
            .then(Rejection::invalid(
                "title",
                "must not contain NUL characters (U+0000)",
            ));
    }

    #[test]
    fn the_creator_deletes_a_live_track() {
        given([track_imported(&org(), &owner())])
            .when(remove(org()))
            .then([removed()]);
    }

    #[test]
    fn another_member_of_the_organization_may_not_delete_it() {
        given([track_imported(&org(), &owner())])
            .by(&member())
            .when(remove(org()))
            .then(Rejection::NotCreator {
                field: "track_id",
                id: track_id().to_string(),
                why: "Only the track's creator may delete it",
            });
    }

    #[test]
    fn an_absent_removed_or_other_organizations_track_is_not_found() {
        let not_found = Rejection::not_found("track_id", track_id().as_str());
        given([]).when(remove(org())).then(not_found.clone());
        given([track_imported(&org(), &owner()), removed()])
            .when(remove(org()))
            .then(not_found.clone());
        given([track_imported(&org(), &owner())])
            .when(remove(other_org()))
            .then(not_found);
    }

    #[test]
    fn the_fold_keeps_the_import_instant_and_the_removal() {
        let track = from_history(&given::recorded([
            track_imported(&org(), &owner()),
            removed(),
        ]))
        .expect("a track");
        assert!(track.removed);
        assert_eq!(track.created_at, given::earlier());
        assert!(!track.is_live_in(&org()));
    }
}
