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

/// The browser helper drives headless Chromium: load a page, read it, take a screenshot.
#[tokio::test]
async fn headless_chromium_loads_a_page_and_takes_a_screenshot() {
    let browser = tests::browser::Browser::start().await;
    browser
        .goto("data:text/html,<title>hello</title><p id=p>music-share</p>")
        .await;
    let title = browser.execute("return document.title", vec![]).await;
    assert_eq!(title, "hello");
    browser
        .wait_until(
            "return document.getElementById('p').textContent === 'music-share'",
            std::time::Duration::from_secs(5),
        )
        .await;
    let dir = tempfile::tempdir().expect("dir");
    let png = dir.path().join("shot.png");
    browser.screenshot(&png).await;
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    browser.quit().await;
}
