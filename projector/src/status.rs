//! `projector status`: how far the live read models are, for operators and scripts.

use std::sync::Arc;

use events::{EventStore, Position};
use sqlx::PgPool;

use crate::schema;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The live read models reflect the log up to here.
    pub checkpoint: Position,
    /// The last committed event.
    pub head: Position,
    /// Where an unfinished rebuild is, if one is under way or was interrupted.
    pub rebuild: Option<Position>,
}

impl Status {
    /// How far the live read models trail the log, in positions (events, on PostgreSQL).
    pub fn lag(&self) -> u64 {
        self.head.saturating_sub(self.checkpoint)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "checkpoint: {}", self.checkpoint)?;
        writeln!(f, "head: {}", self.head)?;
        writeln!(f, "lag: {}", self.lag())?;
        if let Some(rebuild) = self.rebuild {
            writeln!(f, "rebuild checkpoint: {rebuild}")?;
        }
        Ok(())
    }
}

pub async fn read(pool: &PgPool, store: &Arc<dyn EventStore>) -> anyhow::Result<Status> {
    let checkpoint = schema::read_checkpoint(pool, schema::LIVE)
        .await?
        .unwrap_or(0);
    let rebuild = schema::read_checkpoint(pool, schema::REBUILD).await?;
    let head = store.head().await?;
    Ok(Status {
        checkpoint,
        head,
        rebuild,
    })
}
