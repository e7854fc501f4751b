//! The HTTP application: state and routes.

use std::sync::Arc;

use axum::extract::FromRef;
use axum::Router;
use events::EventStore;
use service_kit::auth::ApiKeys;
use service_kit::server::{self, ReadyCheck};
use sqlx::PgPool;

/// What every handler may use, passed by axum's `State`.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub store: Arc<dyn EventStore>,
    pub api_keys: ApiKeys,
}

impl FromRef<AppState> for ApiKeys {
    fn from_ref(state: &AppState) -> ApiKeys {
        state.api_keys.clone()
    }
}

/// The whole application, ready to serve.
pub fn router(state: AppState) -> Router {
    let ready = readiness(state.clone());
    let api = Router::new().with_state(state);
    server::finish(api.merge(server::health_routes(ready)))
}

fn readiness(state: AppState) -> ReadyCheck {
    server::ready_check(move || {
        let state = state.clone();
        async move {
            server::postgres_ready(&state.pool).await?;
            state
                .store
                .head()
                .await
                .map_err(|_| "event store".to_owned())?;
            Ok(())
        }
    })
}
