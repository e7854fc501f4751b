//! Every service binary starts, answers health checks, speaks the error envelope for unknown
//! routes, and stops cleanly on SIGTERM.

use std::time::Duration;

use tests::db::TestDb;
use tests::process::{Bin, Service, ServiceEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_serves_health_and_stops_on_sigterm() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let env = ServiceEnv::new(&db, &tests::nats::shared_url(), dir.path());
    let http = reqwest::Client::new();

    for bin in [Bin::CommandApi, Bin::Projector, Bin::QueryApi] {
        let mut service = Service::start(bin, &env, &dir.path().join("logs"), &[]).await;

        let health = http
            .get(service.url("/healthz"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(health.status(), 200, "{}", bin.name());
        let ready = http
            .get(service.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        assert_eq!(
            ready.status(),
            200,
            "{}: {:?}",
            bin.name(),
            ready.text().await
        );

        let missing = http
            .get(service.url("/no/such/route"))
            .send()
            .await
            .expect("unknown route");
        assert_eq!(missing.status(), 404);
        let request_id = missing.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_owned();
        let body: serde_json::Value = missing.json().await.expect("json envelope");
        assert_eq!(body["success"], false);
        assert_eq!(body["error"]["code"], "RESOURCE_NOT_FOUND");
        assert_eq!(body["error"]["status"], 404);
        assert_eq!(body["error"]["trace_id"], request_id.as_str());

        let wrong_method = http
            .delete(service.url("/healthz"))
            .send()
            .await
            .expect("wrong method");
        assert_eq!(wrong_method.status(), 405);
        let body: serde_json::Value = wrong_method.json().await.expect("json envelope");
        assert_eq!(body["error"]["code"], "METHOD_NOT_ALLOWED");

        let kept = http
            .get(service.url("/healthz"))
            .header("x-request-id", "req_0123456789abcdefXYZ")
            .send()
            .await
            .expect("healthz with id");
        assert_eq!(kept.headers()["x-request-id"], "req_0123456789abcdefXYZ");

        service.terminate();
        let status = service
            .wait(Duration::from_secs(15))
            .await
            .expect("exits after SIGTERM");
        assert!(
            status.success(),
            "{} exited with {status}:\n{}",
            bin.name(),
            service.logs()
        );
    }
}

/// `scripts/stack` starts all three services at once on a database that may not exist yet: each
/// tries to create it, and the ones that lose the race must simply use it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_started_together_create_the_database_once_and_all_come_up() {
    let db = TestDb::new().await;
    {
        let admin = tests::db::admin_url();
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
            .await
            .expect("admin connection");
        sqlx::query(&format!("DROP DATABASE {}", db.name))
            .execute(&mut conn)
            .await
            .expect("drop: the services must create it");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let env = ServiceEnv::new(&db, &tests::nats::shared_url(), dir.path());
    let logs = dir.path().join("logs");
    let (projector, command, query) = tokio::join!(
        Service::start(Bin::Projector, &env, &logs, &[]),
        Service::start(Bin::CommandApi, &env, &logs, &[]),
        Service::start(Bin::QueryApi, &env, &logs, &[]),
    );
    let http = reqwest::Client::new();
    for service in [&projector, &command, &query] {
        let ready = http
            .get(service.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        assert_eq!(ready.status(), 200, "{}", service.bin.name());
    }
}
