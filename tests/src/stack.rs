//! The whole system for one test: the three services on its [`TestApp`] (own database, a
//! shared or private NATS server, private media and spool directories), seeded through the
//! command API as a client would.

use std::ops::Deref;

use serde_json::Value;

use crate::app::TestApp;
use crate::command::{CommandCalls, TrackForm};
use crate::db::TestDb;
use crate::process::{Bin, Service, ServiceEnv};

/// The organization and user the end-to-end tests act as.
pub const ORG: &str = "org_e2e_music";
pub const USER: &str = "usr_0000000000e1";

/// Projector, command API and query API on one [`TestApp`], which it derefs to.
pub struct Stack {
    app: TestApp,
    pub command: Service,
    pub projector: Service,
    pub query: Service,
}

impl Deref for Stack {
    type Target = TestApp;

    fn deref(&self) -> &TestApp {
        &self.app
    }
}

impl Stack {
    /// All three services on the shared NATS server.
    pub async fn start() -> Stack {
        TestApp::builder().stack().await
    }

    /// All three services on `nats_url`, after `customize` has adjusted their environment.
    pub async fn start_with(nats_url: &str, customize: impl FnOnce(&mut ServiceEnv)) -> Stack {
        let mut app = TestApp::builder().nats(nats_url).build().await;
        customize(&mut app.env);
        Stack::on(app).await
    }

    /// All three services on `db` (which may live on a private server) and `nats_url`.
    pub async fn start_on(
        db: TestDb,
        nats_url: &str,
        customize: impl FnOnce(&mut ServiceEnv),
    ) -> Stack {
        let mut app = TestApp::builder().database(db).nats(nats_url).build().await;
        customize(&mut app.env);
        Stack::on(app).await
    }

    /// The three services on `app`.
    pub async fn on(app: TestApp) -> Stack {
        // The projector first, so the first command finds it heard and waits for it.
        let projector = app.spawn(Bin::Projector).await;
        let command = app.spawn(Bin::CommandApi).await;
        let query = app.spawn(Bin::QueryApi).await;
        Stack {
            app,
            command,
            projector,
            query,
        }
    }

    /// Starts one more instance of a service on this stack's database (say, a second query API).
    pub async fn start_another(&self, bin: Bin) -> Service {
        self.app.spawn(bin).await
    }

    /// Typed calls to this stack's command API.
    pub fn commands(&self) -> CommandCalls<'_> {
        CommandCalls::new(&self.app.http, &self.command)
    }

    /// Uploads `audio` (a WAV) as [`ORG`]'s instrumental, personal-use track titled `title`;
    /// returns the track object.
    pub async fn upload_track(&self, key: &str, title: &str, audio: Vec<u8>) -> Value {
        let form = TrackForm::valid()
            .with("title", title)
            .audio(audio, "track.wav");
        self.commands().create_track(key, ORG, form).await
    }

    /// A share link of [`ORG`]'s `target` (`tracks/{id}` or `collections/{id}`) with `body`;
    /// returns the share link object, raw token included.
    pub async fn share(&self, key: &str, target: &str, body: Value) -> Value {
        self.commands().share(key, ORG, target, body).await
    }
}

/// One second of silence as 16-bit mono PCM WAV.
pub fn wav() -> Vec<u8> {
    crate::audio::wav(8000, &vec![0; 8000])
}

/// Uploads one second of silence as a track; returns its id.
pub async fn upload_via_api(stack: &Stack, key: &str) -> String {
    let track = stack.upload_track(key, "End to end", wav()).await;
    track["id"].as_str().expect("id").to_owned()
}

/// [`Stack::upload_track`], kept under its old name.
pub async fn upload_audio_via_api(stack: &Stack, key: &str, title: &str, audio: Vec<u8>) -> Value {
    stack.upload_track(key, title, audio).await
}

/// [`Stack::share`], kept under its old name.
pub async fn share_via_api(stack: &Stack, key: &str, path: &str, body: Value) -> Value {
    stack.share(key, path, body).await
}

/// A fresh API key for `user` in `orgs` on `env`'s database, via `command-api admin create-key`
/// (for tests that start the command API alone).
pub async fn create_api_key(env: &ServiceEnv, user: &str, orgs: &[&str]) -> String {
    let mut args = vec!["admin", "create-key", "--user", user];
    for org in orgs {
        args.extend(["--org", org]);
    }
    let output = env.run(Bin::CommandApi, &args).await;
    assert!(
        output.status.success(),
        "create-key failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8 key")
        .trim()
        .to_owned()
}
