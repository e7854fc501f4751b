//! The share body as the command API reads it: any bytes through the JSON extractor's parser,
//! then the share decision for an owner's live track. Either a clear rejection (400, 422) or
//! one `ShareCreated`; never a panic.
#![no_main]

use chrono::{TimeZone, Utc};
use command_api::domain::share::{decide, CreateShare, ShareCommand, ShareRequest, ShareTarget};
use command_api::domain::track::Track;
use command_api::domain::Context;
use events::event::{MediaFile, MusicEvent, TrackImported};
use events::ids::{OrganizationId, ShareLinkId, TrackId, UserId};
use events::licence::{LicenceClass, CURRENT_VERSION};
use events::share_token::TokenHash;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = match service_kit::json::parse::<ShareRequest>(data) {
        Ok(body) => body,
        Err(refused) => {
            let status = refused.status().as_u16();
            assert!(status == 400 || status == 422, "parse answered {status}");
            if std::str::from_utf8(data).is_err() {
                assert_eq!(status, 400, "invalid UTF-8 must be a 400");
            }
            return;
        }
    };
    assert!(std::str::from_utf8(data).is_ok(), "accepted invalid UTF-8");
    let org = OrganizationId::parse("org_fuzz").expect("org");
    let owner = UserId::parse("usr_0123456789ab").expect("user");
    let track_id = TrackId::generate();
    let imported = TrackImported {
        track_id: track_id.clone(),
        organization_id: org.clone(),
        owner_id: owner.clone(),
        title: "Fuzz".to_owned(),
        engine: "studio".to_owned(),
        mode: "creation".to_owned(),
        instrumental: false,
        licence_class: LicenceClass::PersonalOnly,
        licence_version: CURRENT_VERSION.to_owned(),
        measured_duration_ms: 1_000,
        media: MediaFile {
            sha256: "ab".repeat(32),
            content_type: "audio/wav".to_owned(),
            bytes: 44,
        },
    };
    let now = Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap();
    let command = ShareCommand::Create(CreateShare {
        org,
        target: ShareTarget::Track {
            id: track_id,
            state: Some(Track {
                imported,
                created_at: now,
                removed: false,
            }),
        },
        share_id: ShareLinkId::generate(),
        token_hash: TokenHash::of("shr_00000000000000000000000000000000"),
        body,
    });
    let ctx = Context { actor: owner, now };
    match decide(&None, command, &ctx) {
        Ok(events) => {
            assert_eq!(events.len(), 1);
            let MusicEvent::ShareCreated(created) = &events[0] else {
                panic!("not a ShareCreated: {events:?}");
            };
            if let Some(expires_at) = created.expires_at {
                let days = (expires_at - now).num_days();
                assert!((1..=90).contains(&days), "expires in {days} days");
            }
            if let Some(max) = created.max_views {
                assert!(max >= 1 && i64::from(max) <= 2_147_483_647);
            }
        }
        Err(rejection) => {
            let status = service_kit::ApiError::from(rejection).status().as_u16();
            assert_eq!(status, 422, "decide answered {status}");
        }
    }
});
