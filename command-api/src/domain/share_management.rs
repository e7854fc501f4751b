//! What an owner may do to a share link after creating it, decided as pure functions.
//!
//! Why a module of its own: changing settings, rotating the token and checking a token before a
//! save are decisions about one aggregate (`share-{id}`), and they are easiest to trust when
//! they can be proven without a server: given the link's events, when a command, then events or
//! a rejection (the tests at the bottom). The handlers in `shares` and `library` only parse,
//! load, call these, and append. Anything slow or random (hashing a password, drawing a token)
//! happens in the handler before deciding, so a decision is a function of its inputs.

use chrono::{DateTime, Utc};
use events::event::{
    ShareCreated, ShareSettingsChanged, ShareTokenRotated, TargetType, Visibility,
};
use events::ids::{OrganizationId, UserId};
use events::password::PasswordHash;
use events::share_token::TokenHash;
use events::MusicEvent;

/// A share link as its stream has it now: the creation with every later change applied.
#[derive(Clone, Debug)]
pub struct ShareLink {
    /// The creation, with `token_hash`, `visibility`, `expires_at`, `max_views`,
    /// `password_hash` and `label` as they are now.
    pub created: ShareCreated,
    pub revoked: bool,
    pub created_at: DateTime<Utc>,
    /// The last change of settings or token (`created_at` before any).
    pub updated_at: DateTime<Utc>,
}

impl ShareLink {
    /// Folds a share stream's events, oldest first. `None` before its `ShareCreated`.
    pub fn fold<'a>(
        events: impl IntoIterator<Item = (&'a MusicEvent, DateTime<Utc>)>,
    ) -> Option<ShareLink> {
        let mut share: Option<ShareLink> = None;
        for (event, at) in events {
            match (event, &mut share) {
                (MusicEvent::ShareCreated(created), _) => {
                    share = Some(ShareLink {
                        created: created.clone(),
                        revoked: false,
                        created_at: at,
                        updated_at: at,
                    })
                }
                (MusicEvent::ShareRevoked(_), Some(share)) => share.revoked = true,
                (MusicEvent::ShareSettingsChanged(change), Some(share)) => {
                    let settings = &mut share.created;
                    if let Some(visibility) = change.visibility {
                        settings.visibility = visibility;
                    }
                    if let Some(expires_at) = change.expires_at {
                        settings.expires_at = expires_at;
                    }
                    if let Some(max_views) = change.max_views {
                        settings.max_views = max_views;
                    }
                    if let Some(password_hash) = &change.password_hash {
                        settings.password_hash = password_hash.clone();
                    }
                    if let Some(label) = &change.label {
                        settings.label = label.clone();
                    }
                    share.updated_at = at;
                }
                (MusicEvent::ShareTokenRotated(rotated), Some(share)) => {
                    share.created.token_hash = rotated.token_hash.clone();
                    share.updated_at = at;
                }
                _ => {}
            }
        }
        share
    }

    /// Neither revoked nor expired at `now`. (Over `max_views` is the query side's to know.)
    pub fn is_live_at(&self, now: DateTime<Utc>) -> bool {
        !self.revoked && self.created.expires_at.is_none_or(|at| now < at)
    }

    fn is_owned_by(&self, ctx: &Context) -> bool {
        self.created.organization_id == ctx.org && self.created.owner_id == ctx.actor
    }
}

/// Who decides and when.
#[derive(Clone, Debug)]
pub struct Context {
    pub actor: UserId,
    pub org: OrganizationId,
    pub now: DateTime<Utc>,
}

/// A settings change, valid (the handler has parsed and checked each field, and hashed a new
/// password). `None`: the field was not sent; `Some(None)`: it was sent as `null`.
#[derive(Clone, Debug, Default)]
pub struct SettingsChange {
    pub visibility: Option<Visibility>,
    /// Days from the change, already clamped to 90.
    pub expires_in_days: Option<Option<i64>>,
    pub max_views: Option<Option<u32>>,
    pub password: Option<Option<PasswordHash>>,
    pub label: Option<Option<String>>,
}

/// What an owner asks of a share link.
#[derive(Clone, Debug)]
pub enum ShareCommand {
    ChangeSettings(SettingsChange),
    /// `token_hash` is the hash of a token the handler drew (and indexed) for this attempt.
    RotateToken {
        token_hash: TokenHash,
    },
}

/// Why a command was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// No such link, or not the caller's: the one 404.
    NotFound,
    /// A revoked link cannot be changed (409).
    Revoked,
}

/// Decides a command on a share link. An empty list: nothing to change (the PATCH answers the
/// settings as they are).
pub fn decide(
    share: Option<&ShareLink>,
    command: ShareCommand,
    ctx: &Context,
) -> Result<Vec<MusicEvent>, Rejection> {
    let share = share
        .filter(|s| s.is_owned_by(ctx))
        .ok_or(Rejection::NotFound)?;
    if share.revoked {
        return Err(Rejection::Revoked);
    }
    let now = ctx.now;
    let current = &share.created;
    match command {
        ShareCommand::ChangeSettings(wanted) => {
            let mut change = ShareSettingsChanged::of(current.share_id.clone());
            change.visibility = wanted.visibility.filter(|v| *v != current.visibility);
            change.expires_at = wanted
                .expires_in_days
                .map(|days| days.map(|d| now + chrono::Duration::days(d)))
                .filter(|at| *at != current.expires_at);
            change.max_views = wanted.max_views.filter(|m| *m != current.max_views);
            // A new password always changes the hash (a fresh salt), even if it is the same
            // password: the owner asked for it, so it is recorded.
            change.password_hash = wanted
                .password
                .filter(|p| p.is_some() || current.password_hash.is_some());
            change.label = wanted.label.filter(|l| *l != current.label);
            if change.is_empty() {
                Ok(Vec::new())
            } else {
                Ok(vec![MusicEvent::ShareSettingsChanged(change)])
            }
        }
        ShareCommand::RotateToken { token_hash } => {
            Ok(vec![MusicEvent::ShareTokenRotated(ShareTokenRotated {
                share_id: current.share_id.clone(),
                token_hash,
            })])
        }
    }
}

/// What a token holder may do with a share link before saving its track.
#[derive(Clone, Debug, PartialEq)]
pub enum SaveAccess {
    /// A live, open track share: save the track.
    Open,
    /// A live track share behind a password: check it first.
    NeedsPassword(PasswordHash),
}

/// Whether the token whose hash is `presented` may save from `share` at `now`: only the link's
/// current token, only a live track share. `None`: the one dead-link 404 (an old token after a
/// rotation, revoked, expired, a collection share). Over `max_views` is checked by the caller,
/// which alone can read the query side's counter.
pub fn save_access(
    share: Option<&ShareLink>,
    presented: &TokenHash,
    now: DateTime<Utc>,
) -> Option<SaveAccess> {
    let share = share?;
    let current = &share.created;
    if &current.token_hash != presented
        || !share.is_live_at(now)
        || current.target_type != TargetType::Track
    {
        return None;
    }
    Some(match &current.password_hash {
        None => SaveAccess::Open,
        Some(hash) => SaveAccess::NeedsPassword(hash.clone()),
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use events::event::ShareRevoked;
    use events::ids::ShareLinkId;
    use events::share_token::ShareToken;

    use super::*;

    fn t(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 2, hour, 0, 0).unwrap()
    }

    fn ctx(now: DateTime<Utc>) -> Context {
        Context {
            actor: UserId::parse("usr_0123456789ab").unwrap(),
            org: OrganizationId::parse("org_acme").unwrap(),
            now,
        }
    }

    fn created(max_views: Option<u32>) -> ShareCreated {
        ShareCreated {
            share_id: ShareLinkId::parse("mslink_8c4e2a9f1b73").unwrap(),
            token_hash: TokenHash::of("shr_first"),
            target_type: TargetType::Track,
            target_id: "mtrack_5e8a1d3f9c27".to_owned(),
            organization_id: OrganizationId::parse("org_acme").unwrap(),
            owner_id: UserId::parse("usr_0123456789ab").unwrap(),
            visibility: Visibility::LinkOnly,
            expires_at: Some(t(12)),
            max_views,
            password_hash: None,
            label: None,
        }
    }

    /// Given these events (each at its hour), the link as folded.
    fn given(events: &[(MusicEvent, u32)]) -> Option<ShareLink> {
        ShareLink::fold(events.iter().map(|(e, h)| (e, t(*h))))
    }

    fn change(f: impl FnOnce(&mut SettingsChange)) -> ShareCommand {
        let mut change = SettingsChange::default();
        f(&mut change);
        ShareCommand::ChangeSettings(change)
    }

    fn settings_changed(events: Vec<MusicEvent>) -> ShareSettingsChanged {
        match events.as_slice() {
            [MusicEvent::ShareSettingsChanged(change)] => change.clone(),
            other => panic!("expected one ShareSettingsChanged, got {other:?}"),
        }
    }

    #[test]
    fn only_what_changed_is_recorded() {
        let share = given(&[(created(Some(3)).into(), 1)]);
        let events = decide(
            share.as_ref(),
            change(|c| {
                c.visibility = Some(Visibility::LinkOnly); // as it is
                c.max_views = Some(Some(3)); // as it is
                c.label = Some(Some("for Ana".to_owned()));
            }),
            &ctx(t(2)),
        )
        .expect("decided");
        let change = settings_changed(events);
        assert_eq!(change.label, Some(Some("for Ana".to_owned())));
        assert_eq!((change.visibility, change.max_views), (None, None));
        assert_eq!((change.expires_at, change.password_hash), (None, None));
    }

    #[test]
    fn nothing_to_change_appends_nothing() {
        let share = given(&[(created(None).into(), 1)]);
        let events = decide(
            share.as_ref(),
            change(|c| {
                c.max_views = Some(None);
                c.password = Some(None);
                c.label = Some(None);
            }),
            &ctx(t(2)),
        )
        .expect("decided");
        assert!(events.is_empty(), "{events:?}");
    }

    #[test]
    fn expiry_counts_from_the_change_and_null_means_never() {
        let share = given(&[(created(None).into(), 1)]);
        let now = t(20); // past the 12:00 expiry: an expired link may be revived
        let change7 = settings_changed(
            decide(
                share.as_ref(),
                change(|c| c.expires_in_days = Some(Some(7))),
                &ctx(now),
            )
            .expect("decided"),
        );
        assert_eq!(
            change7.expires_at,
            Some(Some(now + chrono::Duration::days(7)))
        );
        let never = settings_changed(
            decide(
                share.as_ref(),
                change(|c| c.expires_in_days = Some(None)),
                &ctx(now),
            )
            .expect("decided"),
        );
        assert_eq!(never.expires_at, Some(None));

        let revived = given(&[
            (created(None).into(), 1),
            (MusicEvent::ShareSettingsChanged(change7), 20),
        ])
        .expect("share");
        assert!(revived.is_live_at(t(21)));
        assert_eq!(revived.updated_at, t(20));
    }

    #[test]
    fn a_password_is_set_replaced_and_removed_as_its_hash() {
        let hash = PasswordHash::from_phc("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into());
        let share = given(&[(created(None).into(), 1)]);
        let set = settings_changed(
            decide(
                share.as_ref(),
                change(|c| c.password = Some(Some(hash.clone()))),
                &ctx(t(2)),
            )
            .expect("decided"),
        );
        assert_eq!(set.password_hash, Some(Some(hash.clone())));
        let protected = given(&[
            (created(None).into(), 1),
            (MusicEvent::ShareSettingsChanged(set), 2),
        ]);
        assert_eq!(
            protected.as_ref().expect("share").created.password_hash,
            Some(hash)
        );
        let removed = settings_changed(
            decide(
                protected.as_ref(),
                change(|c| c.password = Some(None)),
                &ctx(t(3)),
            )
            .expect("decided"),
        );
        assert_eq!(removed.password_hash, Some(None));
    }

    #[test]
    fn strangers_get_not_found_and_revoked_links_a_conflict() {
        let share = given(&[(created(None).into(), 1)]);
        let mut stranger = ctx(t(2));
        stranger.actor = UserId::parse("usr_ffffffffffff").unwrap();
        let rotate = || ShareCommand::RotateToken {
            token_hash: TokenHash::of("shr_second"),
        };
        assert_eq!(
            decide(share.as_ref(), rotate(), &stranger).unwrap_err(),
            Rejection::NotFound
        );
        let mut other_org = ctx(t(2));
        other_org.org = OrganizationId::parse("org_other").unwrap();
        assert_eq!(
            decide(share.as_ref(), rotate(), &other_org).unwrap_err(),
            Rejection::NotFound
        );
        assert_eq!(
            decide(None, rotate(), &ctx(t(2))).unwrap_err(),
            Rejection::NotFound
        );

        let revoked = given(&[
            (created(None).into(), 1),
            (
                MusicEvent::ShareRevoked(ShareRevoked {
                    share_id: created(None).share_id,
                }),
                2,
            ),
        ]);
        assert_eq!(
            decide(revoked.as_ref(), rotate(), &ctx(t(3))).unwrap_err(),
            Rejection::Revoked
        );
        assert_eq!(
            decide(
                revoked.as_ref(),
                change(|c| c.label = Some(None)),
                &ctx(t(3))
            )
            .unwrap_err(),
            Rejection::Revoked
        );
    }

    #[test]
    fn rotation_keeps_the_link_and_retires_the_old_token() {
        let new_token = ShareToken::generate();
        let share = given(&[(created(Some(1)).into(), 1)]);
        let events = decide(
            share.as_ref(),
            ShareCommand::RotateToken {
                token_hash: new_token.hash(),
            },
            &ctx(t(2)),
        )
        .expect("decided");
        assert!(matches!(
            events.as_slice(),
            [MusicEvent::ShareTokenRotated(r)] if r.token_hash == new_token.hash()
        ));
        let rotated = ShareLink::fold(
            std::iter::once((&MusicEvent::from(created(Some(1))), t(1)))
                .chain(events.iter().map(|e| (e, t(2)))),
        )
        .expect("share");
        assert_eq!(rotated.created.share_id, created(None).share_id);
        assert_eq!(rotated.created.max_views, Some(1));
        assert_eq!(rotated.created_at, t(1));
        assert_eq!(rotated.updated_at, t(2));

        // Saving: the new token works, the old one is the dead-link answer.
        assert_eq!(
            save_access(Some(&rotated), &new_token.hash(), t(3)),
            Some(SaveAccess::Open)
        );
        assert_eq!(
            save_access(Some(&rotated), &TokenHash::of("shr_first"), t(3)),
            None
        );
    }

    #[test]
    fn saving_needs_a_live_track_link_and_its_password() {
        let hash = PasswordHash::from_phc("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into());
        let mut protected = created(None);
        protected.password_hash = Some(hash.clone());
        let token = protected.token_hash.clone();
        let share = given(&[(protected.into(), 1)]);
        assert_eq!(
            save_access(share.as_ref(), &token, t(2)),
            Some(SaveAccess::NeedsPassword(hash))
        );
        // Expired at 12:00.
        assert_eq!(save_access(share.as_ref(), &token, t(13)), None);
        let mut collection = created(None);
        collection.target_type = TargetType::Collection;
        let share = given(&[(collection.into(), 1)]);
        assert_eq!(save_access(share.as_ref(), &token, t(2)), None);
        assert_eq!(save_access(None, &token, t(2)), None);
    }
}
