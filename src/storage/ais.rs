//! SQL for external audiences, their operations, runs and members. Every function that touches
//! tenant data takes the tenant first.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use uuid::Uuid;

use super::violated_constraint;
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

/// Deletes an external audience; its runs, staged rows and members go with it.
pub async fn delete_external(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
) -> sqlx::Result<bool> {
    // The bulk tables have no foreign keys (see the migration): their rows go first, explicitly.
    sqlx::query(
        "DELETE FROM ais_staged_members s USING ais_runs r
         WHERE r.sandbox_id = $1 AND r.audience_id = $2 AND s.run_id = r.id",
    )
    .bind(tenant.sandbox_id())
    .bind(id)
    .execute(&mut *conn)
    .await?;
    delete_members(conn, tenant, id).await?;
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

/// Adds a batch of identities read by a run under `claim`, through `COPY` (several times faster
/// than row inserts for large files). Nothing is staged for a run outside the tenant.
pub async fn stage_members(
    conn: &mut PgConnection,
    tenant: &Tenant,
    run_id: Uuid,
    claim: Uuid,
    identities: &[String],
) -> sqlx::Result<()> {
    let (in_tenant,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM ais_runs WHERE sandbox_id = $1 AND id = $2)")
            .bind(tenant.sandbox_id())
            .bind(run_id)
            .fetch_one(&mut *conn)
            .await?;
    if !in_tenant || identities.is_empty() {
        return Ok(());
    }
    let prefix = format!("{run_id}\t{claim}\t");
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
    Ok(())
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

/// Forgets what earlier attempts of a run staged.
pub async fn clear_staged(
    conn: &mut PgConnection,
    tenant: &Tenant,
    run_id: Uuid,
    except_claim: Option<Uuid>,
) -> sqlx::Result<()> {
    sqlx::query(
        "DELETE FROM ais_staged_members s USING ais_runs r
         WHERE r.sandbox_id = $1 AND r.id = $2 AND s.run_id = r.id
           AND ($3::uuid IS NULL OR s.claim <> $3)",
    )
    .bind(tenant.sandbox_id())
    .bind(run_id)
    .bind(except_claim)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Removes every member of an external audience of the tenant.
async fn delete_members(
    conn: &mut PgConnection,
    tenant: &Tenant,
    audience_id: Uuid,
) -> sqlx::Result<()> {
    sqlx::query(
        "DELETE FROM ais_members m USING external_audiences a
         WHERE a.sandbox_id = $1 AND a.id = $2 AND m.audience_id = a.id",
    )
    .bind(tenant.sandbox_id())
    .bind(audience_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Replaces an audience's members with the distinct identities a run staged under `claim`, and
/// returns how many distinct profiles it now has.
pub async fn replace_members(
    conn: &mut PgConnection,
    tenant: &Tenant,
    audience_id: Uuid,
    run_id: Uuid,
    claim: Uuid,
) -> sqlx::Result<i64> {
    delete_members(conn, tenant, audience_id).await?;
    let inserted = sqlx::query(
        "INSERT INTO ais_members (audience_id, identity, run_id)
         SELECT DISTINCT $2::uuid, s.identity, $3::uuid
         FROM ais_staged_members s JOIN ais_runs r ON r.id = s.run_id
         WHERE r.sandbox_id = $1 AND r.id = $3 AND r.audience_id = $2 AND s.claim = $4",
    )
    .bind(tenant.sandbox_id())
    .bind(audience_id)
    .bind(run_id)
    .bind(claim)
    .execute(&mut *conn)
    .await?;
    Ok(inserted.rows_affected() as i64)
}

/// Records a successful ingestion on the audience: its profile count and when its data expires.
pub async fn record_success(
    conn: &mut PgConnection,
    tenant: &Tenant,
    audience_id: Uuid,
    run_id: Uuid,
    profiles: i64,
    expires_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE external_audiences SET last_success_run_id = $3, profile_count = $4,
             expires_at = $5, expired = false
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

/// Removes an audience's members and marks its data expired.
pub async fn expire(
    conn: &mut PgConnection,
    tenant: &Tenant,
    audience_id: Uuid,
) -> sqlx::Result<()> {
    delete_members(conn, tenant, audience_id).await?;
    sqlx::query(
        "UPDATE external_audiences SET expired = true, profile_count = 0
         WHERE sandbox_id = $1 AND id = $2",
    )
    .bind(tenant.sandbox_id())
    .bind(audience_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
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
