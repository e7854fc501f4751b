//! The library aggregate (stream `library-{user}`): a signed-in user saves a shared track.
//!
//! Edges are keyed by track, so saving a track again, through any link, changes nothing and the
//! edge already there is the answer. Only a live link to a live track can be saved; every other
//! case (unknown token, a collection link, revoked, expired, over its view limit, removed
//! content) is the one dead-link 404, so this route tells a token holder nothing the public
//! resolve would not. The handler finds the link through the command side's token index and
//! passes in what the link's and the track's streams fold to, and how often the link was opened.

use chrono::{DateTime, Utc};
use events::event::{SharedTrackSaved, TargetType};
use events::ids::{LibraryItemId, TrackId};
use events::link::LinkStatus;
use events::share_token::TokenHash;
use events::MusicEvent;

use super::share::ShareLink;
use super::track::Track;
use super::{Context, Decided, Recorded, Rejection};

/// One saved track.
#[derive(Clone, Debug, PartialEq)]
pub struct LibraryItem {
    pub saved: SharedTrackSaved,
    pub created_at: DateTime<Utc>,
}

/// A user's library: its edges in the order they were saved.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Library {
    pub items: Vec<LibraryItem>,
}

impl Library {
    /// The edge of `track`, if it was saved.
    pub fn item(&self, track: &TrackId) -> Option<&LibraryItem> {
        self.items.iter().find(|i| &i.saved.track_id == track)
    }
}

pub fn from_history(history: &[Recorded]) -> Library {
    history.iter().fold(Library::default(), evolve)
}

pub fn evolve(mut library: Library, recorded: &Recorded) -> Library {
    if let MusicEvent::SharedTrackSaved(saved) = &recorded.event {
        library.items.push(LibraryItem {
            saved: saved.clone(),
            created_at: recorded.occurred_at,
        });
    }
    library
}

#[derive(Clone, Debug)]
pub enum LibraryCommand {
    /// Save the track behind a link. `share` is the link the token names (`None`: no such
    /// token), `track` what its target's stream folds to, `views_used` how often the link was
    /// opened; `library_item_id` is fresh.
    Save {
        share: Option<ShareLink>,
        track: Option<Track>,
        views_used: u64,
        library_item_id: LibraryItemId,
        /// The hash of the token the caller presented: only the link's current one saves (a
        /// token a rotation retired is dead).
        presented: TokenHash,
        /// What the handler found checking `X-Share-Password` against the link's hash.
        password: PasswordCheck,
    },
}

/// A protected link's password, as checked by the handler (Argon2 is too slow to run here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasswordCheck {
    NotSent,
    Wrong,
    Right,
}

pub fn decide(library: &Library, command: LibraryCommand, ctx: &Context) -> Decided {
    let LibraryCommand::Save {
        share,
        track,
        views_used,
        library_item_id,
        presented,
        password,
    } = command;
    let link = share
        .filter(|s| s.facts.token_hash == presented && s.facts.target_type == TargetType::Track)
        .ok_or(Rejection::DeadLink)?;
    let track_id = TrackId::parse(&link.facts.target_id).map_err(|_| Rejection::DeadLink)?;
    let removed = !track.is_some_and(|t| {
        t.imported.track_id == track_id && t.is_live_in(&link.facts.organization_id)
    });
    if link.status_at(ctx.now, views_used, removed) != LinkStatus::Active {
        return Err(Rejection::DeadLink);
    }
    // A dead link is the common 404 whatever password is sent; a live one asks for it.
    if link.facts.password_hash.is_some() {
        match password {
            PasswordCheck::Right => {}
            PasswordCheck::NotSent => return Err(Rejection::PasswordRequired),
            PasswordCheck::Wrong => return Err(Rejection::InvalidPassword),
        }
    }
    if library.item(&track_id).is_some() {
        return Ok(Vec::new());
    }
    Ok(vec![MusicEvent::SharedTrackSaved(SharedTrackSaved {
        library_item_id,
        user_id: ctx.actor.clone(),
        track_id,
        share_link_id: link.facts.share_id,
    })])
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use events::event::{ContentRemoved, ShareCreated, ShareRevoked};
    use events::ids::ShareLinkId;

    use super::*;
    use crate::domain::given::{self, *};
    use crate::domain::{share, track};

    fn given(events: impl IntoIterator<Item = MusicEvent>) -> Given<Library, LibraryCommand> {
        given::given(from_history, decide, events)
    }

    fn item_id() -> LibraryItemId {
        LibraryItemId::parse("mlib_00000000000e").expect("an id")
    }

    fn link(change: impl FnOnce(&mut ShareCreated), revoked: bool) -> Option<ShareLink> {
        let mut created = share_created();
        change(&mut created);
        let mut history = vec![MusicEvent::ShareCreated(created)];
        if revoked {
            history.push(MusicEvent::ShareRevoked(ShareRevoked {
                share_id: share_id(),
            }));
        }
        share::from_history(&given::recorded(history))
    }

    fn live_track() -> Option<Track> {
        track::from_history(&given::recorded([track_imported(&org(), &owner())]))
    }

    fn save(share: Option<ShareLink>, track: Option<Track>, views_used: u64) -> LibraryCommand {
        LibraryCommand::Save {
            share,
            track,
            views_used,
            library_item_id: item_id(),
            presented: token_hash(),
            password: PasswordCheck::NotSent,
        }
    }

    #[test]
    fn only_the_links_current_token_saves_and_a_protected_link_needs_its_password() {
        let protected = link(
            |c| {
                c.password_hash = Some(events::password::PasswordHash::from_phc(
                    "$argon2id$x".into(),
                ))
            },
            false,
        );
        let with =
            |share: Option<ShareLink>, presented: TokenHash, password| LibraryCommand::Save {
                share,
                track: live_track(),
                views_used: 0,
                library_item_id: item_id(),
                presented,
                password,
            };
        given([])
            .by(&member())
            .when(with(
                link(|_| {}, false),
                TokenHash::of("shr_retired"),
                PasswordCheck::NotSent,
            ))
            .then(Rejection::DeadLink);
        given([])
            .by(&member())
            .when(with(
                protected.clone(),
                token_hash(),
                PasswordCheck::NotSent,
            ))
            .then(Rejection::PasswordRequired);
        given([])
            .by(&member())
            .when(with(protected.clone(), token_hash(), PasswordCheck::Wrong))
            .then(Rejection::InvalidPassword);
        given([])
            .by(&member())
            .when(with(protected, token_hash(), PasswordCheck::Right))
            .then([saved(share_id())]);
        // Dead first: a revoked protected link is the common 404 whatever is sent.
        let revoked = link(
            |c| {
                c.password_hash = Some(events::password::PasswordHash::from_phc(
                    "$argon2id$x".into(),
                ))
            },
            true,
        );
        given([])
            .by(&member())
            .when(with(revoked, token_hash(), PasswordCheck::Wrong))
            .then(Rejection::DeadLink);
    }

    fn saved(share_link_id: ShareLinkId) -> MusicEvent {
        MusicEvent::SharedTrackSaved(SharedTrackSaved {
            library_item_id: item_id(),
            user_id: member(),
            track_id: track_id(),
            share_link_id,
        })
    }

    #[test]
    fn a_live_track_link_saves_the_track_for_the_caller() {
        given([])
            .by(&member())
            .when(save(link(|_| {}, false), live_track(), 0))
            .then([saved(share_id())]);
    }

    #[test]
    fn the_creator_may_save_their_own_shared_track() {
        let events = given([])
            .when(save(link(|_| {}, false), live_track(), 0))
            .events();
        let [MusicEvent::SharedTrackSaved(saved)] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert_eq!(saved.user_id, owner());
    }

    #[test]
    fn a_track_saved_before_through_any_link_changes_nothing() {
        let other_link = ShareLinkId::parse("mslink_0000000000ff").expect("an id");
        given([saved(other_link)])
            .by(&member())
            .when(save(link(|_| {}, false), live_track(), 0))
            .then_nothing();
    }

    #[test]
    fn an_unknown_revoked_or_collection_link_is_the_dead_link() {
        for share in [
            None,
            link(|_| {}, true),
            link(
                |c| {
                    c.target_type = TargetType::Collection;
                    c.target_id = collection_id().to_string();
                },
                false,
            ),
        ] {
            given([])
                .by(&member())
                .when(save(share, live_track(), 0))
                .then(Rejection::DeadLink);
        }
    }

    #[test]
    fn an_expired_link_is_dead_from_its_expiry_instant() {
        let expiring = || link(|c| c.expires_at = Some(now()), false);
        given([])
            .by(&member())
            .when(save(expiring(), live_track(), 0))
            .then(Rejection::DeadLink);
        given([])
            .by(&member())
            .at(now() - Duration::seconds(1))
            .when(save(expiring(), live_track(), 0))
            .then([saved(share_id())]);
    }

    #[test]
    fn a_link_over_its_view_limit_is_dead_even_for_a_track_saved_before() {
        let limited = || link(|c| c.max_views = Some(3), false);
        given([saved(share_id())])
            .by(&member())
            .when(save(limited(), live_track(), 3))
            .then(Rejection::DeadLink);
        given([])
            .by(&member())
            .when(save(limited(), live_track(), 2))
            .then([saved(share_id())]);
    }

    #[test]
    fn a_removed_absent_or_moved_track_is_the_dead_link() {
        let removed = track::from_history(&given::recorded([
            track_imported(&org(), &owner()),
            MusicEvent::ContentRemoved(ContentRemoved {
                target_type: TargetType::Track,
                target_id: track_id().to_string(),
                organization_id: org(),
            }),
        ]));
        let elsewhere =
            track::from_history(&given::recorded([track_imported(&other_org(), &owner())]));
        for track in [removed, None, elsewhere] {
            given([])
                .by(&member())
                .when(save(link(|_| {}, false), track, 0))
                .then(Rejection::DeadLink);
        }
    }

    #[test]
    fn the_fold_keeps_each_edge_with_its_instant() {
        let library = from_history(&given::recorded([saved(share_id())]));
        let item = library.item(&track_id()).expect("saved");
        assert_eq!(item.created_at, given::earlier());
        assert_eq!(item.saved.library_item_id, item_id());
    }
}
