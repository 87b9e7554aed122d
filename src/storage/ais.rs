//! SQL for external audiences, their operations, runs and members. Every function that touches
//! tenant data takes the tenant first.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use uuid::Uuid;

use super::{jobs::Job, violated_constraint};
use crate::{
    domain::{external::RunSort, Caller, Sandbox, Tenant},
    error::{ApiError, Code},
};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExternalRow {
    pub id: Uuid,
    pub name: String,
    pub custom_audience_id: Option<String>,
    pub state: String,
    pub spec: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_by: String,
    pub updated_at: DateTime<Utc>,
    pub run_count: i32,
    pub last_success_run_id: Option<Uuid>,
    pub profile_count: i64,
    pub expires_at: Option<DateTime<Utc>>,
    pub expired: bool,
}

const EXTERNAL_COLUMNS: &str = "id, name, custom_audience_id, state, spec::text AS spec, created_by,
    created_at, updated_by, updated_at, run_count, last_success_run_id, profile_count, expires_at, expired";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OperationRow {
    pub id: Uuid,
    pub audience_id: Uuid,
    pub audience_name: String,
    pub status: String,
    pub details: String,
    pub reason: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_by: String,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub id: Uuid,
    pub audience_id: Uuid,
    pub name: String,
    pub kind: String,
    pub status: String,
    pub filter_start: i64,
    pub filter_end: i64,
    pub details: String,
    pub message: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const RUN_COLUMNS: &str = "id, audience_id, name, kind, status, filter_start, filter_end,
    details::text AS details, message, created_by, created_at, updated_at";

/// Reserves an external audience (state `creating`). A taken name or customAudienceId is a 409.
#[allow(clippy::too_many_arguments)]
pub async fn insert_external(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
    name: &str,
    custom_audience_id: Option<&str>,
    spec: &str,
    caller: &Caller,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO external_audiences (id, sandbox_id, name, custom_audience_id, state, spec,
             created_by, created_at, updated_by, updated_at)
         VALUES ($1, $2, $3, $4, 'creating', $5::json, $6, $7, $6, $7)",
    )
    .bind(id)
    .bind(tenant.sandbox_id())
    .bind(name)
    .bind(custom_audience_id)
    .bind(spec)
    .bind(&caller.user_id)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(|e| match violated_constraint(&e) {
        Some("external_audiences_name_key") => ApiError::new(
            Code::AisConflict,
            format!("An external audience named '{name}' already exists in this sandbox."),
        ),
        Some("external_audiences_custom_id_key") => ApiError::new(
            Code::AisConflict,
            format!(
                "An external audience with customAudienceId '{}' already exists in this sandbox.",
                custom_audience_id.unwrap_or_default()
            ),
        ),
        _ => e.into(),
    })?;
    Ok(())
}

pub async fn get_external(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
    lock: bool,
) -> sqlx::Result<Option<ExternalRow>> {
    let sql = format!(
        "SELECT {EXTERNAL_COLUMNS} FROM external_audiences WHERE sandbox_id = $1 AND id = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    sqlx::query_as::<_, ExternalRow>(AssertSqlSafe(sql))
        .bind(tenant.sandbox_id())
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
}

pub async fn update_spec(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
    spec: &str,
    caller: &Caller,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE external_audiences SET spec = $3::json, updated_by = $4, updated_at = $5
         WHERE sandbox_id = $1 AND id = $2",
    )
    .bind(tenant.sandbox_id())
    .bind(id)
    .bind(spec)
    .bind(&caller.user_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn mark_ready(conn: &mut PgConnection, tenant: &Tenant, id: Uuid) -> sqlx::Result<()> {
    sqlx::query("UPDATE external_audiences SET state = 'ready' WHERE sandbox_id = $1 AND id = $2")
        .bind(tenant.sandbox_id())
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Deletes an external audience; its runs go with it (foreign key). Its member and staged rows
/// are no longer wanted by anyone and are deleted in batches by the maintenance sweep
/// ([`garbage_member_sets`], [`garbage_staged_sets`]): no transaction here is sized by a file.
pub async fn delete_external(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM external_audiences WHERE sandbox_id = $1 AND id = $2")
        .bind(tenant.sandbox_id())
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

#[allow(clippy::too_many_arguments)]
pub async fn insert_operation(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
    audience_id: Uuid,
    audience_name: &str,
    details: &str,
    caller: &Caller,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO ais_operations (id, sandbox_id, audience_id, audience_name, status, details,
             created_by, created_at, updated_by, updated_at)
         VALUES ($1, $2, $3, $4, 'PROCESSING', $5::json, $6, $7, $6, $7)",
    )
    .bind(id)
    .bind(tenant.sandbox_id())
    .bind(audience_id)
    .bind(audience_name)
    .bind(details)
    .bind(&caller.user_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn get_operation(
    pool: &PgPool,
    tenant: &Tenant,
    id: Uuid,
) -> sqlx::Result<Option<OperationRow>> {
    sqlx::query_as(
        "SELECT id, audience_id, audience_name, status, details::text AS details, reason,
             created_by, created_at, updated_by, updated_at
         FROM ais_operations WHERE sandbox_id = $1 AND id = $2",
    )
    .bind(tenant.sandbox_id())
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Ends an operation; only one still `PROCESSING` changes.
pub async fn finish_operation(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
    status: &str,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE ais_operations SET status = $3, reason = $4, updated_at = $5, updated_by = 'ais-worker'
         WHERE sandbox_id = $1 AND id = $2 AND status = 'PROCESSING'",
    )
    .bind(tenant.sandbox_id())
    .bind(id)
    .bind(status)
    .bind(reason)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What the guardrails need to know before a run starts.
pub struct RunCounts {
    pub processing: bool,
    pub for_audience: i64,
    pub in_sandbox_since: i64,
}

/// Counts runs for the guardrails. The caller holds the audience's row lock and the sandbox's
/// run lock ([`lock_sandbox_runs`]), so the counts stay true until it commits.
pub async fn run_counts(
    conn: &mut PgConnection,
    tenant: &Tenant,
    audience_id: Uuid,
    day_start: DateTime<Utc>,
) -> sqlx::Result<RunCounts> {
    let (processing, for_audience, in_sandbox_since): (bool, i64, i64) = sqlx::query_as(
        "SELECT
             EXISTS (SELECT 1 FROM ais_runs WHERE sandbox_id = $1 AND audience_id = $2 AND status = 'PROCESSING'),
             (SELECT count(*) FROM ais_runs WHERE sandbox_id = $1 AND audience_id = $2 AND kind = 'run'),
             (SELECT count(*) FROM ais_runs WHERE sandbox_id = $1 AND kind = 'run' AND created_at >= $3)",
    )
    .bind(tenant.sandbox_id())
    .bind(audience_id)
    .bind(day_start)
    .fetch_one(&mut *conn)
    .await?;
    Ok(RunCounts {
        processing,
        for_audience,
        in_sandbox_since,
    })
}

/// Serialises run creation within a sandbox until the transaction ends.
pub async fn lock_sandbox_runs(conn: &mut PgConnection, tenant: &Tenant) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 4))")
        .bind(tenant.sandbox_id())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub struct NewRun<'a> {
    pub id: Uuid,
    pub audience_id: Uuid,
    pub name: &'a str,
    pub kind: &'a str,
    pub filter_start: i64,
    pub filter_end: i64,
    pub details: &'a str,
}

/// Inserts a run (and counts it on its audience). A second run in progress is refused by the
/// database as 422.
pub async fn insert_run(
    conn: &mut PgConnection,
    tenant: &Tenant,
    run: &NewRun<'_>,
    caller: &Caller,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO ais_runs (id, sandbox_id, audience_id, name, kind, status, filter_start,
             filter_end, details, created_by, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, 'PROCESSING', $6, $7, $8::json, $9, $10, $10)",
    )
    .bind(run.id)
    .bind(tenant.sandbox_id())
    .bind(run.audience_id)
    .bind(run.name)
    .bind(run.kind)
    .bind(run.filter_start)
    .bind(run.filter_end)
    .bind(run.details)
    .bind(&caller.user_id)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(|e| {
        if violated_constraint(&e) == Some("ais_runs_one_processing") {
            ApiError::new(
                Code::AisUnprocessable,
                "Another run of this external audience is still PROCESSING; wait for it to end.",
            )
        } else {
            e.into()
        }
    })?;
    sqlx::query(
        "UPDATE external_audiences SET run_count = run_count + 1 WHERE sandbox_id = $1 AND id = $2",
    )
    .bind(tenant.sandbox_id())
    .bind(run.audience_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn get_run(
    conn: &mut PgConnection,
    tenant: &Tenant,
    audience_id: Uuid,
    run_id: Uuid,
) -> sqlx::Result<Option<RunRow>> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM ais_runs WHERE sandbox_id = $1 AND audience_id = $2 AND id = $3"
    );
    sqlx::query_as::<_, RunRow>(AssertSqlSafe(sql))
        .bind(tenant.sandbox_id())
        .bind(audience_id)
        .bind(run_id)
        .fetch_optional(&mut *conn)
        .await
}

/// A page of an audience's runs and how many it has in all.
pub async fn list_runs(
    pool: &PgPool,
    tenant: &Tenant,
    audience_id: Uuid,
    limit: i64,
    sort: RunSort,
) -> sqlx::Result<(Vec<RunRow>, i64)> {
    let order = match sort {
        RunSort::CreatedAsc => "created_at ASC, id ASC",
        RunSort::CreatedDesc => "created_at DESC, id DESC",
        RunSort::NameAsc => "name ASC, id ASC",
        RunSort::NameDesc => "name DESC, id DESC",
    };
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM ais_runs WHERE sandbox_id = $1 AND audience_id = $2
         ORDER BY {order} LIMIT $3"
    );
    let rows = sqlx::query_as::<_, RunRow>(AssertSqlSafe(sql))
        .bind(tenant.sandbox_id())
        .bind(audience_id)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    let (total,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM ais_runs WHERE sandbox_id = $1 AND audience_id = $2")
            .bind(tenant.sandbox_id())
            .bind(audience_id)
            .fetch_one(pool)
            .await?;
    Ok((rows, total))
}

/// Writes a run's details while it is in progress.
pub async fn update_run_details(
    conn: &mut PgConnection,
    tenant: &Tenant,
    run_id: Uuid,
    details: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE ais_runs SET details = $3::json, updated_at = $4
         WHERE sandbox_id = $1 AND id = $2 AND status = 'PROCESSING'",
    )
    .bind(tenant.sandbox_id())
    .bind(run_id)
    .bind(details)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Ends a run; only one still `PROCESSING` changes.
pub async fn finish_run(
    conn: &mut PgConnection,
    tenant: &Tenant,
    run_id: Uuid,
    status: &str,
    details: &str,
    message: Option<&str>,
    now: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE ais_runs SET status = $3, details = $4::json, message = $5, updated_at = $6
         WHERE sandbox_id = $1 AND id = $2 AND status = 'PROCESSING'",
    )
    .bind(tenant.sandbox_id())
    .bind(run_id)
    .bind(status)
    .bind(details)
    .bind(message)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What became of a batch handed to [`stage_members`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staging {
    Staged,
    /// The job's claim is no longer this worker's: it stops.
    NotOurs,
    /// The run was deleted or has ended: there is nothing to stage for.
    RunGone,
}

/// Adds a batch of identities read by a run under the job's claim, through `COPY` (several times
/// faster than row inserts for large files), if the claim is still the worker's and the run still
/// in progress. The checks take no lock, so a worker that died in the middle of a batch never
/// holds up a takeover or a delete: a batch that lands just after one is staged under a claim or
/// for a run nobody wants any more, which makes it garbage for the maintenance sweep (see below).
pub async fn stage_members(
    conn: &mut PgConnection,
    tenant: &Tenant,
    job: &Job,
    run_id: Uuid,
    identities: &[String],
) -> sqlx::Result<Staging> {
    let (ours, running): (bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM ais_jobs WHERE id = $1 AND claim = $2 AND done_at IS NULL),
                EXISTS (SELECT 1 FROM ais_runs
                        WHERE sandbox_id = $3 AND id = $4 AND status = 'PROCESSING')",
    )
    .bind(job.id)
    .bind(job.claim)
    .bind(tenant.sandbox_id())
    .bind(run_id)
    .fetch_one(&mut *conn)
    .await?;
    if !ours {
        return Ok(Staging::NotOurs);
    }
    if !running {
        return Ok(Staging::RunGone);
    }
    if identities.is_empty() {
        return Ok(Staging::Staged);
    }
    let prefix = format!("{run_id}\t{}\t", job.claim);
    let mut data = Vec::with_capacity(identities.iter().map(|i| i.len() + 80).sum());
    for identity in identities {
        data.extend_from_slice(prefix.as_bytes());
        copy_text_escape(identity, &mut data);
        data.push(b'\n');
    }
    let mut copy = conn
        .copy_in_raw("COPY ais_staged_members (run_id, claim, identity) FROM STDIN")
        .await?;
    copy.send(data).await?;
    copy.finish().await?;
    Ok(Staging::Staged)
}

/// Escapes a value for COPY's text format.
fn copy_text_escape(value: &str, out: &mut Vec<u8>) {
    for b in value.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

/// How much one [`move_staged_batch`] did.
pub struct Moved {
    /// Staged rows taken (fewer than asked: nothing is left).
    pub taken: i64,
    /// Identities new to the run's member set.
    pub stored: i64,
}

/// Moves up to `limit` rows a run staged under `claim` into the run's member set (distinct
/// identities), in the caller's transaction: the staged rows are deleted by the statement that
/// stores them, so a batch is applied once whatever happens to the worker. The batch goes into the
/// index in identity order (fewer pages touched than in hash order).
pub async fn move_staged_batch(
    conn: &mut PgConnection,
    tenant: &Tenant,
    audience_id: Uuid,
    run_id: Uuid,
    claim: Uuid,
    limit: i64,
) -> sqlx::Result<Moved> {
    let (taken, stored): (i64, i64) = sqlx::query_as(
        "WITH run AS (
             SELECT id FROM ais_runs WHERE sandbox_id = $1 AND id = $3 AND audience_id = $2),
         taken AS (
             DELETE FROM ais_staged_members
             WHERE ctid = ANY (ARRAY(
                 SELECT s.ctid FROM ais_staged_members s JOIN run ON run.id = s.run_id
                 WHERE s.claim = $4 LIMIT $5))
             RETURNING identity),
         stored AS (
             INSERT INTO ais_members (audience_id, run_id, identity)
             SELECT DISTINCT $2::uuid, $3::uuid, identity FROM taken ORDER BY identity
             ON CONFLICT DO NOTHING
             RETURNING 1)
         SELECT (SELECT count(*) FROM taken), (SELECT count(*) FROM stored)",
    )
    .bind(tenant.sandbox_id())
    .bind(audience_id)
    .bind(run_id)
    .bind(claim)
    .bind(limit)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Moved { taken, stored })
}

/// Makes a run's member set the audience's members and records the ingestion: profile count and
/// when the data expires. The set was written beforehand; readers see the old members until this
/// commits and the new ones after.
pub async fn switch_members(
    conn: &mut PgConnection,
    tenant: &Tenant,
    audience_id: Uuid,
    run_id: Uuid,
    profiles: i64,
    expires_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE external_audiences SET members_run_id = $3, last_success_run_id = $3,
             profile_count = $4, expires_at = $5, expired = false
         WHERE sandbox_id = $1 AND id = $2",
    )
    .bind(tenant.sandbox_id())
    .bind(audience_id)
    .bind(run_id)
    .bind(profiles)
    .bind(expires_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Takes one audience whose data has expired, locked; returns its id and sandbox.
pub async fn claim_expired(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<(Uuid, Uuid)>> {
    sqlx::query_as(
        "SELECT id, sandbox_id FROM external_audiences
         WHERE NOT expired AND expires_at <= $1
         ORDER BY expires_at LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .bind(now)
    .fetch_optional(&mut *conn)
    .await
}

/// Marks an audience's data expired: it has no members from now on (its member set is left to
/// the maintenance sweep).
pub async fn expire(
    conn: &mut PgConnection,
    tenant: &Tenant,
    audience_id: Uuid,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE external_audiences SET expired = true, profile_count = 0, members_run_id = NULL
         WHERE sandbox_id = $1 AND id = $2",
    )
    .bind(tenant.sandbox_id())
    .bind(audience_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Deletes up to `limit` operations that ended before `before`; returns how many. A purged
/// operation answers 404 like one that never existed.
pub async fn purge_finished_operations(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM ais_operations WHERE id IN (
             SELECT id FROM ais_operations WHERE status <> 'PROCESSING' AND updated_at < $1
             ORDER BY updated_at LIMIT $2)",
    )
    .bind(before)
    .bind(limit)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

// The maintenance sweep. The bulk tables carry no foreign keys (a key is checked row by row), so
// their rows are grouped in sets and a set is garbage when nothing can want it any more:
// - a member set (audience, run) when the audience does not point at it and no open job works
//   on the run (only the run's own open job adds to it, and only its closing transaction can
//   make the audience point at it);
// - a staged set (run, claim) when no open job of the run holds the claim or reads it as its
//   staged claim (a claim, once replaced, never comes back; a batch checked just before its claim
//   was replaced may still land afterwards, and is then garbage like the rest of the set).
// A set that is garbage stays garbage, so deleting it batch by batch is safe. The sets are found
// by walking the distinct keys of the tables' indexes, so no row can be left out.

/// Member sets nobody wants, at most `limit`.
pub async fn garbage_member_sets(
    conn: &mut PgConnection,
    limit: i64,
) -> sqlx::Result<Vec<(Uuid, Uuid)>> {
    sqlx::query_as(
        "WITH RECURSIVE sets (audience_id, run_id) AS (
             (SELECT audience_id, run_id FROM ais_members ORDER BY audience_id, run_id LIMIT 1)
             UNION ALL
             SELECT n.audience_id, n.run_id FROM sets s CROSS JOIN LATERAL (
                 SELECT m.audience_id, m.run_id FROM ais_members m
                 WHERE (m.audience_id, m.run_id) > (s.audience_id, s.run_id)
                 ORDER BY m.audience_id, m.run_id LIMIT 1) n)
         SELECT audience_id, run_id FROM sets s
         WHERE NOT EXISTS (SELECT 1 FROM external_audiences a
                           WHERE a.id = s.audience_id AND a.members_run_id = s.run_id)
           AND NOT EXISTS (SELECT 1 FROM ais_jobs j
                           WHERE j.target_id = s.run_id AND j.done_at IS NULL)
         LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&mut *conn)
    .await
}

/// Staged sets nobody wants, at most `limit`.
pub async fn garbage_staged_sets(
    conn: &mut PgConnection,
    limit: i64,
) -> sqlx::Result<Vec<(Uuid, Uuid)>> {
    sqlx::query_as(
        "WITH RECURSIVE sets (run_id, claim) AS (
             (SELECT run_id, claim FROM ais_staged_members ORDER BY run_id, claim LIMIT 1)
             UNION ALL
             SELECT n.run_id, n.claim FROM sets s CROSS JOIN LATERAL (
                 SELECT m.run_id, m.claim FROM ais_staged_members m
                 WHERE (m.run_id, m.claim) > (s.run_id, s.claim)
                 ORDER BY m.run_id, m.claim LIMIT 1) n)
         SELECT run_id, claim FROM sets s
         WHERE NOT EXISTS (SELECT 1 FROM ais_jobs j
                           WHERE j.target_id = s.run_id AND j.done_at IS NULL
                             AND (j.claim = s.claim OR j.staged_claim = s.claim))
         LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&mut *conn)
    .await
}

/// Deletes up to `limit` rows of a member set; returns how many.
pub async fn delete_member_rows(
    conn: &mut PgConnection,
    audience_id: Uuid,
    run_id: Uuid,
    limit: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM ais_members WHERE ctid = ANY (ARRAY(
             SELECT ctid FROM ais_members WHERE audience_id = $1 AND run_id = $2 LIMIT $3))",
    )
    .bind(audience_id)
    .bind(run_id)
    .bind(limit)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes up to `limit` rows of a staged set; returns how many.
pub async fn delete_staged_rows(
    conn: &mut PgConnection,
    run_id: Uuid,
    claim: Uuid,
    limit: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM ais_staged_members WHERE ctid = ANY (ARRAY(
             SELECT ctid FROM ais_staged_members WHERE run_id = $1 AND claim = $2 LIMIT $3))",
    )
    .bind(run_id)
    .bind(claim)
    .bind(limit)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// The tenant a sandbox belongs to, for work that starts from a row rather than a request.
pub async fn tenant_of(conn: &mut PgConnection, sandbox_id: Uuid) -> sqlx::Result<Option<Tenant>> {
    let row: Option<(String, String, String, bool)> = sqlx::query_as(
        "SELECT org_id, name, sandbox_type, is_default FROM sandboxes WHERE sandbox_id = $1",
    )
    .bind(sandbox_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|(org, name, sandbox_type, is_default)| {
        Tenant::new(
            org,
            Sandbox {
                sandbox_id,
                name,
                sandbox_type,
                is_default,
            },
        )
    }))
}

/// A run by its id alone (the worker knows runs, not the audiences they belong to).
pub async fn get_run_by_id(
    conn: &mut PgConnection,
    tenant: &Tenant,
    run_id: Uuid,
) -> sqlx::Result<Option<RunRow>> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM ais_runs WHERE sandbox_id = $1 AND id = $2");
    sqlx::query_as::<_, RunRow>(AssertSqlSafe(sql))
        .bind(tenant.sandbox_id())
        .bind(run_id)
        .fetch_optional(&mut *conn)
        .await
}

/// The operation whose job creates an external audience, by id, on a connection.
pub async fn get_operation_on(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
) -> sqlx::Result<Option<OperationRow>> {
    sqlx::query_as(
        "SELECT id, audience_id, audience_name, status, details::text AS details, reason,
             created_by, created_at, updated_by, updated_at
         FROM ais_operations WHERE sandbox_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(tenant.sandbox_id())
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn copy_text_escapes_its_special_bytes() {
        let mut out = Vec::new();
        super::copy_text_escape("a\tb\\c\nd\re", &mut out);
        assert_eq!(out, b"a\\tb\\\\c\\nd\\re");
    }
}
