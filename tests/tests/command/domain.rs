//! The order of the command side's rules, seen from outside: on owner-only routes, who may act
//! is decided before the body is read, so a member of the organization who does not own the
//! track, collection or link gets the 404 whatever the body holds, and the owner gets the 422
//! for the same body. (The rules themselves are proven as pure functions in
//! `command-api/src/domain`; this proves the running API keeps their order.)

use serde_json::{json, Value};
use tests::command::{expect_error, new_org, new_user, CommandApi};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_owner_gets_the_404_whatever_the_body_holds_and_the_owner_the_422() {
    let api = CommandApi::start().await;
    let org = new_org();
    let owner = api.key(&new_user(), &[&org]).await;
    let member = api.key(&new_user(), &[&org]).await;
    let track = api.track(&owner, &org).await;
    let collection = api.collection(&owner, &org).await;
    let events_before = event_count(&api).await;

    let share_track = format!("/v1/music/{org}/tracks/{track}/share");
    let share_collection = format!("/v1/music/{org}/collections/{collection}/share");
    let add = format!("/v1/music/{org}/collections/{collection}/tracks");
    let cases: [(&str, Value, &str, &str); 5] = [
        (
            &share_track,
            json!({"max_views": 0}),
            "track_id",
            "max_views",
        ),
        (
            &share_track,
            json!({"visibility": "private", "expires_in_days": 0}),
            "track_id",
            "visibility",
        ),
        (
            &share_collection,
            json!({"max_views": 0}),
            "collection_id",
            "max_views",
        ),
        (&add, json!({"track_id": 42}), "collection_id", "track_id"),
        (&add, json!({}), "collection_id", "track_id"),
    ];
    for (path, body, resource, field) in &cases {
        let refused = expect_error(
            api.post_json(&member, path, body.clone()).await,
            404,
            "RESOURCE_NOT_FOUND",
        )
        .await;
        assert!(
            refused["error"]["details"][*resource].is_string(),
            "{path} {body}: {refused}"
        );
        let invalid = expect_error(
            api.post_json(&owner, path, body.clone()).await,
            422,
            "VALIDATION_ERROR",
        )
        .await;
        assert!(
            invalid["error"]["details"][*field].is_string(),
            "{path} {body}: {invalid}"
        );
    }
    // Reordering, too.
    let order = format!("/v1/music/{org}/collections/{collection}/order");
    let body = json!({"ordered_track_ids": "no"});
    expect_error(
        api.patch_json(&member, &order, body.clone()).await,
        404,
        "RESOURCE_NOT_FOUND",
    )
    .await;
    expect_error(
        api.patch_json(&owner, &order, body).await,
        422,
        "VALIDATION_ERROR",
    )
    .await;
    assert_eq!(
        event_count(&api).await,
        events_before,
        "nothing was appended"
    );
}

async fn event_count(api: &CommandApi) -> i64 {
    let pool = api.pool().await;
    let n = sqlx::query_scalar("SELECT count(*) FROM event_store.events")
        .fetch_one(&pool)
        .await
        .expect("count");
    pool.close().await;
    n
}
