//! SQL for the worker's jobs. A job is claimed with `FOR UPDATE SKIP LOCKED` by writing a fresh
//! `claim` token and a lease; every later write of the claimant names that token, so a worker
//! whose lease ran out (and was taken over) can no longer change anything. Every claim counts an
//! attempt of the job's step, so a step that kills its worker is not retried forever. Claims go
//! round the sandboxes with due work, least recently served first, so one tenant's queue delays
//! another tenant's work by at most the jobs already in progress.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use uuid::Uuid;

use super::StoreError;
use crate::domain::{
    job::{JobKind, JobStep},
    Tenant,
};

/// A claimed job: what a worker holds while it carries out one step.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    pub id: Uuid,
    pub sandbox_id: Uuid,
    #[sqlx(try_from = "String")]
    pub kind: JobKind,
    pub target_id: Uuid,
    #[sqlx(try_from = "String")]
    pub step: JobStep,
    pub attempts: i32,
    pub claim: Uuid,
    pub staged_claim: Option<Uuid>,
    /// Members the profile step has stored so far (its batches survive a takeover).
    pub members_stored: i64,
}

const JOB_COLUMNS: &str =
    "id, sandbox_id, kind, target_id, step, attempts, claim, staged_claim, members_stored";

/// Sandboxes looked at per claim, least recently served first.
const FAIR_CANDIDATES: i64 = 8;

/// Queues a job at its kind's first step in the caller's transaction, due now.
pub async fn insert(
    conn: &mut PgConnection,
    tenant: &Tenant,
    kind: JobKind,
    target_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO ais_jobs (id, sandbox_id, kind, target_id, step, run_after, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(Uuid::new_v4())
    .bind(tenant.sandbox_id())
    .bind(kind.as_str())
    .bind(target_id)
    .bind(kind.first_step().as_str())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Claims a due job that nobody holds (or whose holder's lease ran out): the oldest one of the
/// sandbox with due work that was served longest ago (a sandbox never served first). The claim
/// counts an attempt of the job's step.
pub async fn claim(
    pool: &PgPool,
    worker: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<Option<Job>, StoreError> {
    let sandboxes: Vec<Uuid> = sqlx::query_scalar(
        "SELECT d.sandbox_id FROM (
             SELECT DISTINCT sandbox_id FROM ais_jobs
             WHERE done_at IS NULL AND run_after <= $1
               AND (locked_until IS NULL OR locked_until < $1)) d
         LEFT JOIN ais_job_turns t ON t.sandbox_id = d.sandbox_id
         ORDER BY t.turn NULLS FIRST, d.sandbox_id
         LIMIT $2",
    )
    .bind(now)
    .bind(FAIR_CANDIDATES)
    .fetch_all(pool)
    .await?;
    // A sandbox whose due jobs another worker is claiming right now yields nothing: try the next.
    for sandbox in sandboxes {
        if let Some(job) = claim_in(pool, sandbox, worker, now, now, lease_until).await? {
            return Ok(Some(job));
        }
    }
    Ok(None)
}

/// Claims the oldest open job of one sandbox that nobody holds, due by `due_by` (the test
/// control's drain passes a time past every backoff, so a job waiting to retry is taken at once).
pub async fn claim_in(
    pool: &PgPool,
    sandbox_id: Uuid,
    worker: &str,
    now: DateTime<Utc>,
    due_by: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<Option<Job>, StoreError> {
    let sql = format!(
        "WITH claimed AS (
             UPDATE ais_jobs SET claim = $1, locked_by = $2, locked_until = $4,
                 attempts = attempts + 1
             WHERE id = (
                 SELECT id FROM ais_jobs
                 WHERE sandbox_id = $5 AND done_at IS NULL AND run_after <= $6
                   AND (locked_until IS NULL OR locked_until < $3)
                 ORDER BY run_after, created_at
                 LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING {JOB_COLUMNS}),
         turn AS (
             INSERT INTO ais_job_turns (sandbox_id, turn)
             SELECT sandbox_id, nextval('ais_job_turn_seq') FROM claimed
             ON CONFLICT (sandbox_id) DO UPDATE SET turn = EXCLUDED.turn)
         SELECT {JOB_COLUMNS} FROM claimed"
    );
    Ok(sqlx::query_as::<_, Job>(AssertSqlSafe(sql))
        .bind(Uuid::new_v4())
        .bind(worker)
        .bind(now)
        .bind(lease_until)
        .bind(sandbox_id)
        .bind(due_by)
        .fetch_optional(pool)
        .await?)
}

/// How many jobs of the sandbox are not done (due, held, or waiting to retry).
pub async fn open_in(pool: &PgPool, sandbox_id: Uuid) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM ais_jobs WHERE sandbox_id = $1 AND done_at IS NULL",
    )
    .bind(sandbox_id)
    .fetch_one(pool)
    .await?)
}

/// Locks a job for a transaction of its step, if the claim is still the worker's; `false` when
/// it is not (the lease ran out and another worker took the job over, or it ended).
pub async fn lock_claimed(conn: &mut PgConnection, job: &Job) -> Result<bool, StoreError> {
    let row: Option<(Uuid,)> = sqlx::query_as(
        "SELECT id FROM ais_jobs WHERE id = $1 AND claim = $2 AND done_at IS NULL FOR UPDATE",
    )
    .bind(job.id)
    .bind(job.claim)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.is_some())
}

/// Adds to the members a held job's profile step has stored and renews its lease, in the
/// transaction of the batch that stored them; returns the new total.
pub async fn add_members_stored(
    conn: &mut PgConnection,
    job: &Job,
    stored: i64,
    lease_until: DateTime<Utc>,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "UPDATE ais_jobs SET members_stored = members_stored + $2, locked_until = $3
         WHERE id = $1 RETURNING members_stored",
    )
    .bind(job.id)
    .bind(stored)
    .bind(lease_until)
    .fetch_one(&mut *conn)
    .await?)
}

/// Extends the lease; `false` when the claim is no longer ours.
pub async fn renew(
    conn: &mut PgConnection,
    job: &Job,
    lease_until: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE ais_jobs SET locked_until = $3 WHERE id = $1 AND claim = $2 AND done_at IS NULL",
    )
    .bind(job.id)
    .bind(job.claim)
    .bind(lease_until)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Moves a held job to its next step and releases it, due now.
pub async fn advance(
    conn: &mut PgConnection,
    job: &Job,
    step: JobStep,
    staged_claim: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE ais_jobs SET step = $2, staged_claim = $3, attempts = 0, members_stored = 0,
             claim = NULL, locked_by = NULL, locked_until = NULL, run_after = $4, last_error = NULL
         WHERE id = $1",
    )
    .bind(job.id)
    .bind(step.as_str())
    .bind(staged_claim)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Marks a held job done; `error` is the internal cause when it was given up.
pub async fn finish(
    conn: &mut PgConnection,
    job: &Job,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    finish_with(conn, job, now, None).await
}

pub async fn finish_with(
    conn: &mut PgConnection,
    job: &Job,
    now: DateTime<Utc>,
    error: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE ais_jobs SET done_at = $2, claim = NULL, locked_by = NULL, locked_until = NULL,
             last_error = coalesce($3, last_error)
         WHERE id = $1",
    )
    .bind(job.id)
    .bind(now)
    .bind(error)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Releases a job after a transient failure, due again at `run_after`. The attempt was counted
/// when the job was claimed.
pub async fn retry_later(
    pool: &PgPool,
    job: &Job,
    run_after: DateTime<Utc>,
    error: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE ais_jobs SET run_after = $3, last_error = $4,
             claim = NULL, locked_by = NULL, locked_until = NULL
         WHERE id = $1 AND claim = $2",
    )
    .bind(job.id)
    .bind(job.claim)
    .bind(run_after)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Deletes up to `limit` jobs that finished before `before`; returns how many.
pub async fn purge_finished(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "DELETE FROM ais_jobs WHERE id IN (
             SELECT id FROM ais_jobs WHERE done_at < $1 ORDER BY done_at LIMIT $2)",
    )
    .bind(before)
    .bind(limit)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Forgets when sandboxes without open jobs were last served (they come first when they have
/// work again, which is what an idle tenant deserves).
pub async fn purge_idle_turns(conn: &mut PgConnection) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "DELETE FROM ais_job_turns t WHERE NOT EXISTS (
             SELECT 1 FROM ais_jobs j WHERE j.sandbox_id = t.sandbox_id AND j.done_at IS NULL)",
    )
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Hands a claimed job back, due as before and without counting an attempt (the claim's is given
/// back): the process is shutting down, so another one may take the job at once instead of
/// waiting for the lease.
pub async fn release(pool: &PgPool, job: &Job) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE ais_jobs SET claim = NULL, locked_by = NULL, locked_until = NULL,
             attempts = greatest(attempts - 1, 0)
         WHERE id = $1 AND claim = $2 AND done_at IS NULL",
    )
    .bind(job.id)
    .bind(job.claim)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Open jobs of one kind, for the metrics.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobStats {
    #[sqlx(try_from = "String")]
    pub kind: JobKind,
    /// Due and not held by a live lease.
    pub queued: i64,
    /// Held by a live lease.
    pub running: i64,
    /// Released after a failure, waiting for their backoff.
    pub retrying: i64,
    /// How long the oldest queued job has been due, in seconds (0 when none).
    pub oldest_due_secs: f64,
}

/// Counts the open jobs by kind (reads the `ais_jobs_due` partial index's rows only).
pub async fn stats(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
) -> Result<Vec<JobStats>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT kind,
             count(*) FILTER (WHERE run_after <= $1 AND (locked_until IS NULL OR locked_until < $1)) AS queued,
             count(*) FILTER (WHERE locked_until >= $1) AS running,
             count(*) FILTER (WHERE run_after > $1 AND attempts > 0
                              AND (locked_until IS NULL OR locked_until < $1)) AS retrying,
             COALESCE(EXTRACT(EPOCH FROM $1 - min(run_after) FILTER (
                 WHERE run_after <= $1 AND (locked_until IS NULL OR locked_until < $1))), 0)::float8
                 AS oldest_due_secs
         FROM ais_jobs WHERE done_at IS NULL GROUP BY kind",
    )
    .bind(now)
    .fetch_all(&mut *conn)
    .await?)
}
