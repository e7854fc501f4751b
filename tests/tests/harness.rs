//! The harness's own outage helpers work: a private PostgreSQL can be stopped and resumed.

use sqlx::{Connection, PgConnection};
use tests::postgres::PrivatePostgres;

#[tokio::test]
async fn a_private_postgres_stops_and_resumes() {
    let pg = PrivatePostgres::start();
    let url = pg.url("postgres");
    let mut conn = PgConnection::connect(&url).await.expect("connect");
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .expect("query");
    assert_eq!(one, 1);
    pg.stop();
    assert!(
        sqlx::query("SELECT 1").execute(&mut conn).await.is_err(),
        "the server is down"
    );
    assert!(PgConnection::connect(&url).await.is_err());
    pg.resume();
    let mut conn = PgConnection::connect(&url)
        .await
        .expect("reconnect after resume");
    sqlx::query("SELECT 1")
        .execute(&mut conn)
        .await
        .expect("query after resume");
}
