//! Secrets stay secret: after a scenario that touches every command, no raw share token and no
//! raw API key appears in any table (every text and JSON column of every schema), any event, or
//! any log line the service wrote. Their hashes do appear, which shows the search can find things.

use reqwest::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tests::command::{expect_json, new_org, new_user, CommandApi};

/// Where `needle` occurs: `schema.table.column` for every text-like column that contains it.
async fn found_in_tables(pool: &PgPool, needle: &str) -> Vec<String> {
    let columns: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT table_schema::text, table_name::text, column_name::text \
           FROM information_schema.columns \
          WHERE table_schema NOT IN ('pg_catalog', 'information_schema') \
            AND data_type IN ('text', 'character varying', 'character', 'json', 'jsonb', 'ARRAY', 'USER-DEFINED')",
    )
    .fetch_all(pool)
    .await
    .expect("columns");
    assert!(
        columns.len() > 10,
        "the dump must see the schema: {columns:?}"
    );
    let mut found = Vec::new();
    for (schema, table, column) in columns {
        let sql = format!(
            "SELECT count(*) FROM \"{schema}\".\"{table}\" WHERE strpos(\"{column}\"::text, $1) > 0"
        );
        let n: i64 = sqlx::query_scalar(&sql)
            .bind(needle)
            .fetch_one(pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        if n > 0 {
            found.push(format!("{schema}.{table}.{column}"));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_raw_token_or_key_is_kept_anywhere() {
    let api = CommandApi::start().await;
    let (owner, org) = (new_user(), new_org());
    let owner_key = api.key(&owner, &[&org]).await;
    let saver = new_user();
    let saver_key = api.key(&saver, &[&org]).await;

    // Every command, with the secrets travelling in both header styles.
    let track = api.track(&owner_key, &org).await;
    let collection = api.collection(&owner_key, &org).await;
    expect_json(
        api.post_json(
            &owner_key,
            &format!("/v1/music/{org}/collections/{collection}/tracks"),
            json!({"track_id": track}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let mut tokens = Vec::new();
    for path in [
        format!("/v1/music/{org}/tracks/{track}/share"),
        format!("/v1/music/{org}/collections/{collection}/share"),
    ] {
        let link = expect_json(
            api.post_json(
                &owner_key,
                &path,
                json!({"expires_in_days": 3, "max_views": 5}),
            )
            .await,
            StatusCode::CREATED,
        )
        .await;
        tokens.push((
            link["id"].as_str().expect("id").to_owned(),
            link["token"].as_str().expect("token").to_owned(),
        ));
    }
    let response = api
        .http
        .post(api.url(&format!("/v1/music/shared/{}/save", tokens[0].1)))
        .header("authorization", format!("Bearer {saver_key}"))
        .send()
        .await
        .expect("save");
    expect_json(response, StatusCode::CREATED).await;
    // A dead-link save and a failed authentication put the secret-bearing path and header
    // through the error paths too.
    let _ = api
        .post_empty(
            &saver_key,
            &format!("/v1/music/shared/{}/save", tokens[1].1),
        )
        .await;
    let _ = api
        .http
        .post(api.url(&format!("/v1/music/{org}/collections")))
        .header(
            "x-api-key",
            format!("{}0", &owner_key[..owner_key.len() - 1]),
        )
        .json(&json!({"name": "x"}))
        .send()
        .await;
    for (id, _) in &tokens {
        expect_json(
            api.delete(&owner_key, &format!("/v1/music/{org}/share/{id}"))
                .await,
            StatusCode::OK,
        )
        .await;
    }
    expect_json(
        api.delete(
            &owner_key,
            &format!("/v1/music/{org}/collections/{collection}"),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    expect_json(
        api.delete(&owner_key, &format!("/v1/music/{org}/tracks/{track}"))
            .await,
        StatusCode::OK,
    )
    .await;

    let pool = api.pool().await;
    let logs = api.all_logs();
    assert!(logs.lines().count() > 10, "the service logged the scenario");
    let secrets: Vec<&str> = tokens
        .iter()
        .map(|(_, t)| t.as_str())
        .chain([owner_key.as_str(), saver_key.as_str()])
        .collect();
    for secret in &secrets {
        // The hex part alone, too: a secret must not leak without its prefix either.
        let hex = &secret[4..];
        for needle in [*secret, hex] {
            assert_eq!(
                found_in_tables(&pool, needle).await,
                Vec::<String>::new(),
                "a secret is stored"
            );
            assert!(!logs.contains(needle), "a secret is in the logs");
        }
        // What is kept is the hash.
        let hash = hex::encode(Sha256::digest(secret.as_bytes()));
        assert!(
            !found_in_tables(&pool, &hash).await.is_empty(),
            "the hash of a secret is kept"
        );
    }
}
