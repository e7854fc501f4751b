//! One PostgreSQL database per test, dropped when the test ends.

use sqlx::{Connection, PgConnection, PgPool};

/// The server tests create their databases on (its `postgres` database is only used to create
/// and drop). `TEST_DATABASE_URL` overrides it.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub struct TestDb {
    pub name: String,
    pub url: String,
    /// The server's `postgres` database, where this one is dropped from.
    admin: String,
}

impl TestDb {
    /// A fresh, empty database (not yet migrated: the services migrate it on start, and
    /// [`TestDb::pool`] migrates it for tests that talk to it directly).
    pub async fn new() -> TestDb {
        TestDb::new_on(&admin_url()).await
    }

    /// A fresh, empty database on another server (say, a [`crate::postgres::PrivatePostgres`]),
    /// given the URL of that server's `postgres` database.
    pub async fn new_on(admin: &str) -> TestDb {
        let name = format!("ms_test_{}", uuid::Uuid::new_v4().simple());
        let admin = admin.to_owned();
        let mut conn = PgConnection::connect(&admin)
            .await
            .expect("connect to the test PostgreSQL server");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let url = match admin.rfind('/') {
            Some(slash) => format!("{}/{}", &admin[..slash], name),
            None => panic!("TEST_DATABASE_URL has no database part: {admin}"),
        };
        TestDb { name, url, admin }
    }

    /// A migrated pool on this database.
    pub async fn pool(&self) -> PgPool {
        migrations::prepare(&self.url, 8)
            .await
            .expect("migrate the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs outside any runtime guarantee; use a private thread and runtime.
        let name = self.name.clone();
        let admin = self.admin.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}
