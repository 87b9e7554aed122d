//! Housekeeping on its own schedule (`MAINTENANCE_INTERVAL_SECS`), however busy the job queue
//! is: TTL expiry, the purge of finished jobs and operations (`JOB_RETENTION_HOURS`), the sweep of
//! bulk rows nobody wants any more, and the expiry of landing-zone files (`LANDING_TTL_DAYS`).
//! Every pass is bounded (at most so many audiences, rows, statements and entries), every
//! transaction small, and several processes may run it at once. New housekeeping belongs in
//! [`Worker::maintain`].

use anyhow::anyhow;
use chrono::{DateTime, Utc};

use super::{write_metrics, Worker};
use crate::{landing, storage};

/// Audiences expired per pass.
const EXPIRIES_PER_PASS: usize = 100;
/// Rows per purge or sweep statement.
const ROWS_PER_STATEMENT: i64 = 10_000;
/// Purge or sweep statements per pass (so a pass deletes at most 1,000,000 bulk rows).
const STATEMENTS_PER_PASS: usize = 100;

/// What one maintenance pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Maintained {
    /// Audiences whose data expired.
    pub expired: usize,
    pub jobs_purged: u64,
    pub operations_purged: u64,
    /// Member and staged rows deleted by the sweep.
    pub rows_swept: u64,
    /// Landing-zone files (and stale uploads) deleted.
    pub landing: landing::Expired,
}

impl Worker {
    /// One maintenance pass. Each task runs even when an earlier one failed; the first error is
    /// returned after all have run.
    pub async fn maintain(&self) -> anyhow::Result<Maintained> {
        let mut done = Maintained::default();
        let mut first_error = None;
        let mut note = |r: anyhow::Result<()>| {
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
        };
        note(self.expire_due(&mut done).await);
        note(self.purge_finished(&mut done).await);
        note(self.sweep(&mut done).await);
        match self.expire_landing_files().await {
            Ok(expired) => done.landing = expired,
            Err(e) => note(Err(e)),
        }
        match first_error {
            None => Ok(done),
            Some(e) => Err(e),
        }
    }

    /// Expires audiences whose TTL has passed, one transaction each.
    async fn expire_due(&self, done: &mut Maintained) -> anyhow::Result<()> {
        while done.expired < EXPIRIES_PER_PASS && self.expire_one(None).await? {
            done.expired += 1;
        }
        Ok(())
    }

    /// Marks the data of one audience whose TTL has passed (by its sandbox's time) expired, of
    /// one sandbox when `sandbox` is given; `false` when none has. Lock order: external
    /// audience, then UPS audience (see `service::audiences::delete_cascade`).
    pub(super) async fn expire_one(&self, sandbox: Option<uuid::Uuid>) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let found = storage::ais::lock_next_expired(&mut tx, self.now(), sandbox).await?;
        let Some((id, sandbox_id)) = found else {
            return Ok(false);
        };
        let tenant = storage::ais::tenant_of(&mut tx, sandbox_id)
            .await?
            .ok_or_else(|| anyhow!("sandbox {sandbox_id} does not exist"))?;
        let now = self.sandbox_now(sandbox_id).await?;
        storage::ais::expire(&mut tx, &tenant, id).await?;
        write_metrics(&mut tx, &tenant, id, 0, true, now).await?;
        tx.commit().await?;
        tracing::info!(audience = %id, "external audience data expired");
        Ok(true)
    }

    /// Deletes jobs and operations that finished more than the retention ago.
    async fn purge_finished(&self, done: &mut Maintained) -> anyhow::Result<()> {
        let before: DateTime<Utc> = self.now() - self.cfg.retention;
        let mut conn = self.pool.acquire().await?;
        for _ in 0..STATEMENTS_PER_PASS {
            let n = storage::jobs::purge_finished(&mut conn, before, ROWS_PER_STATEMENT).await?;
            done.jobs_purged += n;
            if n < ROWS_PER_STATEMENT as u64 {
                break;
            }
        }
        for _ in 0..STATEMENTS_PER_PASS {
            let n = storage::ais::purge_finished_operations(&mut conn, before, ROWS_PER_STATEMENT)
                .await?;
            done.operations_purged += n;
            if n < ROWS_PER_STATEMENT as u64 {
                break;
            }
        }
        storage::jobs::purge_idle_turns(&mut conn).await?;
        Ok(())
    }

    /// Deletes the rows of member and staged sets nobody wants (see `storage::ais` for when a
    /// set is garbage), [`ROWS_PER_STATEMENT`] at a time.
    async fn sweep(&self, done: &mut Maintained) -> anyhow::Result<()> {
        let mut conn = self.pool.acquire().await?;
        let mut statements = 0;
        let members = storage::ais::garbage_member_sets(&mut conn, 100).await?;
        for (audience_id, run_id) in members {
            while statements < STATEMENTS_PER_PASS {
                statements += 1;
                let n = storage::ais::delete_member_rows(
                    &mut conn,
                    audience_id,
                    run_id,
                    ROWS_PER_STATEMENT,
                )
                .await?;
                done.rows_swept += n;
                if n < ROWS_PER_STATEMENT as u64 {
                    break;
                }
            }
        }
        let staged = storage::ais::garbage_staged_sets(&mut conn, 100).await?;
        for (run_id, claim) in staged {
            while statements < STATEMENTS_PER_PASS {
                statements += 1;
                let n =
                    storage::ais::delete_staged_rows(&mut conn, run_id, claim, ROWS_PER_STATEMENT)
                        .await?;
                done.rows_swept += n;
                if n < ROWS_PER_STATEMENT as u64 {
                    break;
                }
            }
        }
        Ok(())
    }
}
