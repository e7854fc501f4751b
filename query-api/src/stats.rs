//! View statistics for the owner's share list: successful resolves per share, counted in memory
//! and added to `query_side.share_views` every few seconds (eventually consistent, and free on
//! the request path).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Per share id: views since the last flush, and the latest of them.
type Pending = HashMap<String, (i64, DateTime<Utc>)>;

#[derive(Clone, Default)]
pub struct ViewStats {
    pending: Arc<Mutex<Pending>>,
}

impl ViewStats {
    pub fn record(&self, share_id: &str, at: DateTime<Utc>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        match pending.get_mut(share_id) {
            Some((count, last)) => {
                *count += 1;
                *last = (*last).max(at);
            }
            None => {
                pending.insert(share_id.to_owned(), (1, at));
            }
        }
    }

    /// Adds what was counted since the last flush; on failure the counts are kept for the next.
    pub async fn flush(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let batch: HashMap<_, _> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *pending)
        };
        if batch.is_empty() {
            return Ok(());
        }
        let mut ids = Vec::with_capacity(batch.len());
        let mut counts = Vec::with_capacity(batch.len());
        let mut lasts = Vec::with_capacity(batch.len());
        for (id, (count, last)) in &batch {
            ids.push(id.clone());
            counts.push(*count);
            lasts.push(*last);
        }
        let result = sqlx::query(
            "INSERT INTO query_side.share_views (share_id, view_count, last_viewed_at) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::timestamptz[]) \
             ON CONFLICT (share_id) DO UPDATE SET \
                view_count = share_views.view_count + excluded.view_count, \
                last_viewed_at = greatest(share_views.last_viewed_at, excluded.last_viewed_at)",
        )
        .bind(&ids)
        .bind(&counts)
        .bind(&lasts)
        .execute(pool)
        .await;
        if let Err(e) = result {
            for (id, (count, last)) in batch {
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                let entry = pending.entry(id).or_insert((0, last));
                entry.0 += count;
                entry.1 = entry.1.max(last);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Flushes every `every`, forever.
    pub async fn flush_every(self, pool: PgPool, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.flush(&pool).await {
                tracing::warn!(error = %e, "could not flush view statistics; will retry");
            }
        }
    }
}
