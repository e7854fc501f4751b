//! One judge of a link: where several causes hold at once, the resolve and the owner's share
//! list say the same thing of a link (`events::link::judge`, first of revoked, expired,
//! unavailable, over its limit).

use std::collections::HashMap;

use chrono::{Duration, Utc};
use serde_json::Value;
use tests::query::{audio_bytes, QueryEnv, ShareOpts, ORG_ACME, OWNER};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resolve_and_the_share_list_judge_links_alike() {
    let q = QueryEnv::new(&tests::nats::shared_url()).await;
    let key = q.api_key(OWNER, &[ORG_ACME]).await;
    let doomed = q.track("Doomed", &audio_bytes(10)).await;
    let kept = q.track("Kept", &audio_bytes(11)).await;
    let now = Utc::now();
    let one_view = ShareOpts {
        max_views: Some(1),
        ..ShareOpts::default()
    };
    // Used up, then its track removed.
    let (used_up_removed, used_up_removed_id) = q.share("track", &doomed, one_view).await;
    // Used up, its track live.
    let (used_up, used_up_id) = q.share("track", &kept, one_view).await;
    // Expired, then revoked.
    let (revoked_expired, revoked_expired_id) = q
        .share(
            "track",
            &kept,
            ShareOpts {
                created_at: Some(now - Duration::hours(2)),
                expires_at: Some(now - Duration::hours(1)),
                revoked_at: Some(now - Duration::minutes(30)),
                ..ShareOpts::default()
            },
        )
        .await;
    // Expired, its track removed.
    let (expired_removed, expired_removed_id) = q
        .share(
            "track",
            &doomed,
            ShareOpts {
                created_at: Some(now - Duration::hours(2)),
                expires_at: Some(now - Duration::hours(1)),
                ..ShareOpts::default()
            },
        )
        .await;
    // Every resolve reads the read models, so the removal counts from the moment it is
    // projected (with the cache, a change notice would have to reach the instance first).
    let api = q.start_query(&[("RESOLVE_CACHE_DISABLED", "true")]).await;

    assert_eq!(q.resolve(&api, &used_up_removed).await.0, 200);
    assert_eq!(q.resolve(&api, &used_up).await.0, 200);
    q.remove("track", &doomed).await;

    let (status, body) = q.resolve(&api, &used_up_removed).await;
    assert_eq!(
        status, 200,
        "removed content outranks the view limit: {body}"
    );
    assert_eq!(body["available"], false, "{body}");
    for dead in [&used_up, &revoked_expired, &expired_removed] {
        let (status, body) = q.resolve(&api, dead).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(
            body["error"]["message"],
            "This share link is no longer available."
        );
    }

    let list = q
        .http
        .get(api.url("/v1/music/org_acme/shares"))
        .header("x-api-key", &key)
        .send()
        .await
        .expect("list");
    assert_eq!(list.status().as_u16(), 200);
    let page: Value = list.json().await.expect("json");
    let statuses: HashMap<&str, &str> = page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|i| {
            let id = i["id"].as_str().expect("id");
            (id, i["status"].as_str().expect("status"))
        })
        .collect();
    assert_eq!(
        statuses,
        HashMap::from([
            (used_up_removed_id.as_str(), "unavailable"),
            (used_up_id.as_str(), "over_limit"),
            (revoked_expired_id.as_str(), "revoked"),
            (expired_removed_id.as_str(), "expired"),
        ])
    );
}
