//! SQL for external audiences, their operations, runs and members. Every function that touches
//! one tenant's rows takes the tenant first; the maintenance sweep's functions work across
//! tenants by design. Rows are decoded into the domain's types here: a state, a kind or a JSON
//! document that does not decode is a fault of the store ([`StoreError::Corrupt`]). Reads named
//! `lock_*` take the rows' locks (`FOR UPDATE`) until the transaction ends; the others take none.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use sqlx::{postgres::PgRow, AssertSqlSafe, PgConnection, PgPool, Row};
use uuid::Uuid;

use super::{jobs::Job, violated_constraint, Conflict, StoreError};
use crate::domain::{
    external::{ExternalAudience, ExternalAudienceSpec, Operation, OperationStatus},
    run::{Run, RunCounts, RunDetails, RunKind, RunSort, RunStatus},
    Caller, Sandbox, Tenant, UnknownName,
};

/// A state or kind column, decoded.
fn named<T: TryFrom<String, Error = UnknownName>>(
    row: &PgRow,
    column: &str,
) -> Result<T, StoreError> {
    Ok(T::try_from(row.try_get::<String, _>(column)?)?)
}

/// A JSON column selected as text, decoded.
fn document<T: DeserializeOwned>(row: &PgRow, column: &str) -> Result<T, StoreError> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text)
        .map_err(|e| StoreError::Corrupt(anyhow::Error::new(e).context(format!("column {column}"))))
}

fn to_json(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.into()))
}

const EXTERNAL_COLUMNS: &str = "id, name, custom_audience_id, state, spec::text AS spec, created_by,
    created_at, updated_by, updated_at, run_count, last_success_run_id, profile_count, expires_at, expired";

fn external_from(row: PgRow) -> Result<ExternalAudience, StoreError> {
    Ok(ExternalAudience {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        custom_audience_id: row.try_get("custom_audience_id")?,
        state: named(&row, "state")?,
        spec: document(&row, "spec")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        updated_by: row.try_get("updated_by")?,
        updated_at: row.try_get("updated_at")?,
        run_count: row.try_get("run_count")?,
        last_success_run_id: row.try_get("last_success_run_id")?,
        profile_count: row.try_get("profile_count")?,
        expires_at: row.try_get("expires_at")?,
        expired: row.try_get("expired")?,
    })
}

const OPERATION_COLUMNS: &str = "id, audience_id, audience_name, status, details::text AS details,
    reason, created_by, created_at, updated_by, updated_at";

fn operation_from(row: PgRow) -> Result<Operation, StoreError> {
    Ok(Operation {
        id: row.try_get("id")?,
        audience_id: row.try_get("audience_id")?,
        audience_name: row.try_get("audience_name")?,
        status: named(&row, "status")?,
        details: document(&row, "details")?,
        reason: row.try_get("reason")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        updated_by: row.try_get("updated_by")?,
        updated_at: row.try_get("updated_at")?,
    })
}

const RUN_COLUMNS: &str = "id, audience_id, name, kind, status, filter_start, filter_end,
    details::text AS details, message, created_by, created_at, updated_at";

fn run_from(row: PgRow) -> Result<Run, StoreError> {
    Ok(Run {
        id: row.try_get("id")?,
        audience_id: row.try_get("audience_id")?,
        name: row.try_get("name")?,
        kind: named(&row, "kind")?,
        status: named(&row, "status")?,
        window: (row.try_get("filter_start")?, row.try_get("filter_end")?),
        details: document(&row, "details")?,
        message: row.try_get("message")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Reserves an external audience (state `creating`) under its name and customAudienceId, which
/// are unique in the sandbox.
pub async fn insert_external(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
    spec: &ExternalAudienceSpec,
    caller: &Caller,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO external_audiences (id, sandbox_id, name, custom_audience_id, state, spec,
             created_by, created_at, updated_by, updated_at)
         VALUES ($1, $2, $3, $4, 'creating', $5::json, $6, $7, $6, $7)",
    )
    .bind(id)
    .bind(tenant.sandbox_id())
    .bind(&spec.name)
    .bind(&spec.custom_audience_id)
    .bind(to_json(spec)?)
    .bind(&caller.user_id)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(|e| match violated_constraint(&e) {
        Some("external_audiences_name_key") => StoreError::Conflict(Conflict::ExternalNameTaken),
        Some("external_audiences_custom_id_key") => {
            StoreError::Conflict(Conflict::ExternalCustomIdTaken)
        }
        _ => e.into(),
    })?;
    Ok(())
}

async fn read_external(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
    lock: &str,
) -> Result<Option<ExternalAudience>, StoreError> {
    let sql = format!(
        "SELECT {EXTERNAL_COLUMNS} FROM external_audiences WHERE sandbox_id = $1 AND id = $2{lock}"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(tenant.sandbox_id())
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .map(external_from)
        .transpose()
}

/// An external audience, in any state.
pub async fn external(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
) -> Result<Option<ExternalAudience>, StoreError> {
    read_external(conn, tenant, id, "").await
}

/// An external audience, in any state, locked.
pub async fn lock_external(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
) -> Result<Option<ExternalAudience>, StoreError> {
    read_external(conn, tenant, id, " FOR UPDATE").await
}

pub async fn update_spec(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
    spec: &ExternalAudienceSpec,
    caller: &Caller,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE external_audiences SET spec = $3::json, updated_by = $4, updated_at = $5
         WHERE sandbox_id = $1 AND id = $2",
    )
    .bind(tenant.sandbox_id())
    .bind(id)
    .bind(to_json(spec)?)
    .bind(&caller.user_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn mark_ready(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
) -> Result<(), StoreError> {
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
) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM external_audiences WHERE sandbox_id = $1 AND id = $2")
        .bind(tenant.sandbox_id())
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Records the creation operation of an external audience, `PROCESSING`.
pub async fn insert_operation(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
    audience_id: Uuid,
    spec: &ExternalAudienceSpec,
    caller: &Caller,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO ais_operations (id, sandbox_id, audience_id, audience_name, status, details,
             created_by, created_at, updated_by, updated_at)
         VALUES ($1, $2, $3, $4, 'PROCESSING', $5::json, $6, $7, $6, $7)",
    )
    .bind(id)
    .bind(tenant.sandbox_id())
    .bind(audience_id)
    .bind(&spec.name)
    .bind(to_json(spec)?)
    .bind(&caller.user_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn operation(
    pool: &PgPool,
    tenant: &Tenant,
    id: Uuid,
) -> Result<Option<Operation>, StoreError> {
    sqlx::query(AssertSqlSafe(format!(
        "SELECT {OPERATION_COLUMNS} FROM ais_operations WHERE sandbox_id = $1 AND id = $2"
    )))
    .bind(tenant.sandbox_id())
    .bind(id)
    .fetch_optional(pool)
    .await?
    .map(operation_from)
    .transpose()
}

/// The operation whose job creates an external audience, locked.
pub async fn lock_operation(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
) -> Result<Option<Operation>, StoreError> {
    sqlx::query(AssertSqlSafe(format!(
        "SELECT {OPERATION_COLUMNS} FROM ais_operations WHERE sandbox_id = $1 AND id = $2
         FOR UPDATE"
    )))
    .bind(tenant.sandbox_id())
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .map(operation_from)
    .transpose()
}

/// Ends an operation; only one still `PROCESSING` changes.
pub async fn finish_operation(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
    status: OperationStatus,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE ais_operations SET status = $3, reason = $4, updated_at = $5, updated_by = 'ais-worker'
         WHERE sandbox_id = $1 AND id = $2 AND status = 'PROCESSING'",
    )
    .bind(tenant.sandbox_id())
    .bind(id)
    .bind(status.as_str())
    .bind(reason)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Counts runs for the guardrails. The caller holds the audience's row lock and the sandbox's
/// run lock ([`lock_sandbox_runs`]), so the counts stay true until it commits.
pub async fn run_counts(
    conn: &mut PgConnection,
    tenant: &Tenant,
    audience_id: Uuid,
    day_start: DateTime<Utc>,
) -> Result<RunCounts, StoreError> {
    let (processing, for_audience, in_sandbox_today): (bool, i64, i64) = sqlx::query_as(
        "SELECT
             EXISTS (SELECT 1 FROM ais_runs WHERE sandbox_id = $1 AND audience_id = $2 AND status = 'PROCESSING'),
             (SELECT count(*) FROM ais_runs WHERE sandbox_id = $1 AND audience_id = $2 AND kind = $4),
             (SELECT count(*) FROM ais_runs WHERE sandbox_id = $1 AND kind = $4 AND created_at >= $3)",
    )
    .bind(tenant.sandbox_id())
    .bind(audience_id)
    .bind(day_start)
    .bind(RunKind::Ingestion.as_str())
    .fetch_one(&mut *conn)
    .await?;
    Ok(RunCounts {
        processing,
        for_audience,
        in_sandbox_today,
    })
}

/// Serialises run creation within a sandbox until the transaction ends.
pub async fn lock_sandbox_runs(conn: &mut PgConnection, tenant: &Tenant) -> Result<(), StoreError> {
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
    pub kind: RunKind,
    pub window: (i64, i64),
    pub details: &'a RunDetails,
}

/// Inserts a run, `PROCESSING`, and counts it on its audience. A second run in progress is
/// refused by the database ([`Conflict::RunInProgress`]).
pub async fn insert_run(
    conn: &mut PgConnection,
    tenant: &Tenant,
    run: &NewRun<'_>,
    caller: &Caller,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO ais_runs (id, sandbox_id, audience_id, name, kind, status, filter_start,
             filter_end, details, created_by, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, 'PROCESSING', $6, $7, $8::json, $9, $10, $10)",
    )
    .bind(run.id)
    .bind(tenant.sandbox_id())
    .bind(run.audience_id)
    .bind(run.name)
    .bind(run.kind.as_str())
    .bind(run.window.0)
    .bind(run.window.1)
    .bind(to_json(run.details)?)
    .bind(&caller.user_id)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(|e| match violated_constraint(&e) {
        Some("ais_runs_one_processing") => StoreError::Conflict(Conflict::RunInProgress),
        _ => e.into(),
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

/// A run of an audience.
pub async fn run(
    conn: &mut PgConnection,
    tenant: &Tenant,
    audience_id: Uuid,
    run_id: Uuid,
) -> Result<Option<Run>, StoreError> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM ais_runs WHERE sandbox_id = $1 AND audience_id = $2 AND id = $3"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(tenant.sandbox_id())
        .bind(audience_id)
        .bind(run_id)
        .fetch_optional(&mut *conn)
        .await?
        .map(run_from)
        .transpose()
}

/// A run by its id alone (the worker knows runs, not the audiences they belong to).
pub async fn run_by_id(
    conn: &mut PgConnection,
    tenant: &Tenant,
    run_id: Uuid,
) -> Result<Option<Run>, StoreError> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM ais_runs WHERE sandbox_id = $1 AND id = $2");
    sqlx::query(AssertSqlSafe(sql))
        .bind(tenant.sandbox_id())
        .bind(run_id)
        .fetch_optional(&mut *conn)
        .await?
        .map(run_from)
        .transpose()
}

/// A page of an audience's runs and how many it has in all.
pub async fn list_runs(
    pool: &PgPool,
    tenant: &Tenant,
    audience_id: Uuid,
    limit: i64,
    sort: RunSort,
) -> Result<(Vec<Run>, i64), StoreError> {
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
    let runs = sqlx::query(AssertSqlSafe(sql))
        .bind(tenant.sandbox_id())
        .bind(audience_id)
        .bind(limit)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(run_from)
        .collect::<Result<Vec<_>, _>>()?;
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ais_runs WHERE sandbox_id = $1 AND audience_id = $2",
    )
    .bind(tenant.sandbox_id())
    .bind(audience_id)
    .fetch_one(pool)
    .await?;
    Ok((runs, total))
}

/// Writes a run's details while it is in progress.
pub async fn update_run_details(
    conn: &mut PgConnection,
    tenant: &Tenant,
    run_id: Uuid,
    details: &RunDetails,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE ais_runs SET details = $3::json, updated_at = $4
         WHERE sandbox_id = $1 AND id = $2 AND status = 'PROCESSING'",
    )
    .bind(tenant.sandbox_id())
    .bind(run_id)
    .bind(to_json(details)?)
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
    status: RunStatus,
    details: &RunDetails,
    message: Option<&str>,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE ais_runs SET status = $3, details = $4::json, message = $5, updated_at = $6
         WHERE sandbox_id = $1 AND id = $2 AND status = 'PROCESSING'",
    )
    .bind(tenant.sandbox_id())
    .bind(run_id)
    .bind(status.as_str())
    .bind(to_json(details)?)
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
) -> Result<Staging, StoreError> {
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
) -> Result<Moved, StoreError> {
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
) -> Result<(), StoreError> {
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

/// Locks one audience whose data has expired by its sandbox's time (the server's `now` plus the
/// sandbox's test-control clock offset), skipping those another transaction holds; of one
/// sandbox only when `sandbox` is given. Returns its id and sandbox. The largest offset bounds
/// the index range read; without offsets it is the plain `expires_at <= now`.
pub async fn lock_next_expired(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    sandbox: Option<Uuid>,
) -> Result<Option<(Uuid, Uuid)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT e.id, e.sandbox_id FROM external_audiences e
         WHERE NOT e.expired
           AND e.expires_at <= $1 + make_interval(secs =>
               (SELECT coalesce(max(offset_seconds), 0) FROM control_clocks))
           AND e.expires_at <= $1 + make_interval(secs => coalesce(
               (SELECT c.offset_seconds FROM control_clocks c WHERE c.sandbox_id = e.sandbox_id), 0))
           AND ($2::uuid IS NULL OR e.sandbox_id = $2)
         ORDER BY e.expires_at LIMIT 1 FOR UPDATE OF e SKIP LOCKED",
    )
    .bind(now)
    .bind(sandbox)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Marks an audience's data expired: it has no members from now on (its member set is left to
/// the maintenance sweep).
pub async fn expire(
    conn: &mut PgConnection,
    tenant: &Tenant,
    audience_id: Uuid,
) -> Result<(), StoreError> {
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
) -> Result<u64, StoreError> {
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
) -> Result<Vec<(Uuid, Uuid)>, StoreError> {
    Ok(sqlx::query_as(
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
    .await?)
}

/// Staged sets nobody wants, at most `limit`.
pub async fn garbage_staged_sets(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<(Uuid, Uuid)>, StoreError> {
    Ok(sqlx::query_as(
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
    .await?)
}

/// Deletes up to `limit` rows of a member set; returns how many.
pub async fn delete_member_rows(
    conn: &mut PgConnection,
    audience_id: Uuid,
    run_id: Uuid,
    limit: i64,
) -> Result<u64, StoreError> {
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
) -> Result<u64, StoreError> {
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
pub async fn tenant_of(
    conn: &mut PgConnection,
    sandbox_id: Uuid,
) -> Result<Option<Tenant>, StoreError> {
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

#[cfg(test)]
mod tests {
    #[test]
    fn copy_text_escapes_its_special_bytes() {
        let mut out = Vec::new();
        super::copy_text_escape("a\tb\\c\nd\re", &mut out);
        assert_eq!(out, b"a\\tb\\\\c\\nd\\re");
    }
}
