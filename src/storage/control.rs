//! SQL of the test-control endpoints (`/_local`, docs/CONTROL.md): the reset of a whole sandbox,
//! the sandbox's faults, and its clock offset (which every replica reads here, so they agree).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreError;
use crate::domain::{
    control::{ExternalFixture, Fault, FaultKind, Removed},
    run::StageName,
    Tenant,
};

/// Deletes every row of the tenant's sandbox, in the caller's transaction, taking the row locks
/// in the one lock order (`service::audiences::delete_cascade`): jobs, operations, external
/// audiences, UPS audiences (in id order), runs. The bulk rows (members, staged identities) of
/// the sandbox's audiences and runs go too. The sandbox itself and its landing zone (account and
/// credential) stay; the zone's files are the caller's.
pub async fn reset(conn: &mut PgConnection, tenant: &Tenant) -> Result<Removed, StoreError> {
    let sandbox = tenant.sandbox_id();
    let locked = |table: &str| {
        format!("SELECT id FROM {table} WHERE sandbox_id = $1 ORDER BY id FOR UPDATE")
    };
    // 1, 2, 3: jobs, operations, external audiences (the ids kept are the last table's).
    let mut externals: Vec<Uuid> = Vec::new();
    for table in ["ais_jobs", "ais_operations", "external_audiences"] {
        externals = sqlx::query_scalar(sqlx::AssertSqlSafe(locked(table)))
            .bind(sandbox)
            .fetch_all(&mut *conn)
            .await?;
    }
    // 4: UPS audiences, locked in id order, then deleted together (they may reference each other;
    // none is left to refer to them).
    let audiences: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(locked("audiences")))
        .bind(sandbox)
        .fetch_all(&mut *conn)
        .await?;
    delete_all(conn, "audiences", sandbox).await?;
    // 5: runs, with the identities their stages staged.
    let runs: Vec<Uuid> =
        sqlx::query_scalar("DELETE FROM ais_runs WHERE sandbox_id = $1 RETURNING id")
            .bind(sandbox)
            .fetch_all(&mut *conn)
            .await?;
    let staged_rows = sqlx::query("DELETE FROM ais_staged_members WHERE run_id = ANY($1)")
        .bind(&runs)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    let members = sqlx::query("DELETE FROM ais_members WHERE audience_id = ANY($1)")
        .bind(&externals)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    // The rows locked first go last: nothing refers to them any more.
    let external_audiences = delete_all(conn, "external_audiences", sandbox).await?;
    let operations = delete_all(conn, "ais_operations", sandbox).await?;
    let jobs = delete_all(conn, "ais_jobs", sandbox).await?;
    delete_all(conn, "ais_job_turns", sandbox).await?;
    let clock_offset = delete_all(conn, "control_clocks", sandbox).await? > 0;
    let faults = delete_all(conn, "control_faults", sandbox).await?;
    Ok(Removed {
        audiences: audiences.len() as u64,
        external_audiences,
        operations,
        runs: runs.len() as u64,
        jobs,
        members,
        staged_rows,
        clock_offset,
        faults,
        zone_files: 0,
    })
}

/// Deletes the sandbox's rows of `table` (one of this module's, never a caller's string).
async fn delete_all(
    conn: &mut PgConnection,
    table: &'static str,
    sandbox: Uuid,
) -> Result<u64, StoreError> {
    let sql = format!("DELETE FROM {table} WHERE sandbox_id = $1");
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(sandbox)
        .execute(&mut *conn)
        .await?
        .rows_affected())
}

/// The clock offset of a sandbox in seconds (0 when none is set). By sandbox id, so that the
/// blob API (which knows a zone's sandbox, not its tenant) can ask too.
pub async fn clock_offset<'e>(
    conn: impl sqlx::PgExecutor<'e>,
    sandbox_id: Uuid,
) -> Result<i64, StoreError> {
    let offset: Option<i64> =
        sqlx::query_scalar("SELECT offset_seconds FROM control_clocks WHERE sandbox_id = $1")
            .bind(sandbox_id)
            .fetch_optional(conn)
            .await?;
    Ok(offset.unwrap_or(0))
}

/// The clock offsets of the landing zones whose sandbox has one, by account name.
pub async fn zone_clock_offsets(
    conn: &mut PgConnection,
) -> Result<std::collections::HashMap<String, i64>, StoreError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT z.account_name, c.offset_seconds FROM landing_zones z
         JOIN control_clocks c USING (sandbox_id)",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Sets the tenant's clock offset.
pub async fn set_clock_offset(
    conn: &mut PgConnection,
    tenant: &Tenant,
    seconds: i64,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO control_clocks (sandbox_id, offset_seconds, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (sandbox_id) DO UPDATE SET offset_seconds = $2, updated_at = $3",
    )
    .bind(tenant.sandbox_id())
    .bind(seconds)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Removes the tenant's clock offset; whether there was one.
pub async fn clear_clock_offset(
    conn: &mut PgConnection,
    tenant: &Tenant,
) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM control_clocks WHERE sandbox_id = $1")
        .bind(tenant.sandbox_id())
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// What inserting a fault came to.
pub enum Added {
    Fault(Fault),
    /// The sandbox already has `max` faults with something left.
    Full,
}

const FAULT_COLUMNS: &str =
    "id, audience_id, stage, message, method, path, status, count, remaining";

#[derive(sqlx::FromRow)]
struct FaultRow {
    id: Uuid,
    audience_id: Option<Uuid>,
    stage: Option<String>,
    message: Option<String>,
    method: Option<String>,
    path: Option<String>,
    status: Option<i32>,
    count: i32,
    remaining: i32,
}

impl From<FaultRow> for Fault {
    fn from(r: FaultRow) -> Self {
        Fault {
            id: r.id,
            audience_id: r.audience_id,
            stage: r.stage,
            message: r.message,
            method: r.method,
            path: r.path,
            status: r.status.and_then(|s| u16::try_from(s).ok()),
            count: r.count,
            remaining: r.remaining,
        }
    }
}

/// Adds a fault to the tenant's sandbox unless it holds `max` live ones (counted under a
/// transaction-scoped advisory lock on the sandbox, so concurrent adds cannot pass the bound).
/// Faults used up are deleted first.
pub async fn add_fault(
    conn: &mut PgConnection,
    tenant: &Tenant,
    kind: &FaultKind,
    count: i32,
    max: i64,
    now: DateTime<Utc>,
) -> Result<Added, StoreError> {
    let sandbox = tenant.sandbox_id();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 12))")
        .bind(sandbox)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM control_faults WHERE sandbox_id = $1 AND remaining = 0")
        .bind(sandbox)
        .execute(&mut *conn)
        .await?;
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM control_faults WHERE sandbox_id = $1")
        .bind(sandbox)
        .fetch_one(&mut *conn)
        .await?;
    if live >= max {
        return Ok(Added::Full);
    }
    let (audience_id, stage, message, method, path, status) = match kind {
        FaultKind::Run {
            audience_id,
            stage,
            message,
        } => (
            Some(*audience_id),
            Some(stage.as_str()),
            Some(message.as_str()),
            None,
            None,
            None,
        ),
        FaultKind::Request {
            method,
            path,
            status,
        } => (
            None,
            None,
            None,
            Some(method.as_str()),
            Some(path.as_str()),
            Some(i32::from(*status)),
        ),
    };
    let kind_name = match kind {
        FaultKind::Run { .. } => "run",
        FaultKind::Request { .. } => "request",
    };
    let row: FaultRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO control_faults (id, sandbox_id, kind, audience_id, stage, message, method,
             path, status, count, remaining, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11)
         RETURNING {FAULT_COLUMNS}"
    )))
    .bind(Uuid::new_v4())
    .bind(sandbox)
    .bind(kind_name)
    .bind(audience_id)
    .bind(stage)
    .bind(message)
    .bind(method)
    .bind(path)
    .bind(status)
    .bind(count)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Added::Fault(row.into()))
}

/// The tenant's faults, oldest first.
pub async fn faults(conn: &mut PgConnection, tenant: &Tenant) -> Result<Vec<Fault>, StoreError> {
    let rows: Vec<FaultRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {FAULT_COLUMNS} FROM control_faults WHERE sandbox_id = $1 ORDER BY created_at, id"
    )))
    .bind(tenant.sandbox_id())
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Deletes the tenant's faults; returns how many there were.
pub async fn clear_faults(conn: &mut PgConnection, tenant: &Tenant) -> Result<u64, StoreError> {
    delete_all(conn, "control_faults", tenant.sandbox_id()).await
}

/// The sandboxes that hold request faults with runs left (the request gate probes only these).
pub async fn sandboxes_with_request_faults(pool: &sqlx::PgPool) -> Result<Vec<Uuid>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT sandbox_id FROM control_faults WHERE kind = 'request' AND remaining > 0",
    )
    .fetch_all(pool)
    .await?)
}

/// Uses one run of the oldest live request fault of the sandbox for `method` and `path`, if
/// any: decremented atomically, so N concurrent requests take exactly N. Returns its status.
pub async fn take_request_fault<'e>(
    conn: impl sqlx::PgExecutor<'e>,
    sandbox_id: Uuid,
    method: &str,
    path: &str,
) -> Result<Option<u16>, StoreError> {
    let status: Option<i32> = sqlx::query_scalar(
        "UPDATE control_faults SET remaining = remaining - 1
         WHERE id = (
             SELECT id FROM control_faults
             WHERE sandbox_id = $1 AND kind = 'request' AND remaining > 0
               AND method = $2 AND path = $3
             ORDER BY created_at, id LIMIT 1 FOR UPDATE)
           AND remaining > 0
         RETURNING status",
    )
    .bind(sandbox_id)
    .bind(method)
    .bind(path)
    .fetch_optional(conn)
    .await?;
    Ok(status.and_then(|s| u16::try_from(s).ok()))
}

/// Uses one run of the oldest live run fault of the tenant for `audience_id` at `stage`, if
/// any (decremented atomically). Returns its message.
pub async fn take_run_fault(
    conn: &mut PgConnection,
    tenant: &Tenant,
    audience_id: Uuid,
    stage: StageName,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "UPDATE control_faults SET remaining = remaining - 1
         WHERE id = (
             SELECT id FROM control_faults
             WHERE sandbox_id = $1 AND kind = 'run' AND remaining > 0
               AND audience_id = $2 AND stage = $3
             ORDER BY created_at, id LIMIT 1 FOR UPDATE)
           AND remaining > 0
         RETURNING message",
    )
    .bind(tenant.sandbox_id())
    .bind(audience_id)
    .bind(stage.as_str())
    .fetch_optional(&mut *conn)
    .await?)
}

/// Holds the tenant's fixture lock until the transaction ends, so that replicas loading the same
/// fixtures at start load it one after the other (the second finds everything there).
pub async fn lock_fixture(conn: &mut PgConnection, tenant: &Tenant) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 13))")
        .bind(tenant.sandbox_id())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Bytes of the tenant's stored audience bodies, to bound an export before reading them.
pub async fn audience_bytes(conn: &mut PgConnection, tenant: &Tenant) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(sum(octet_length(body::text)), 0)::int8 FROM audiences WHERE sandbox_id = $1",
    )
    .bind(tenant.sandbox_id())
    .fetch_one(&mut *conn)
    .await?)
}

/// The tenant's audience bodies as stored (what GET answers), in id order.
pub async fn audience_bodies(
    conn: &mut PgConnection,
    tenant: &Tenant,
) -> Result<Vec<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT body::text FROM audiences WHERE sandbox_id = $1 ORDER BY id")
            .bind(tenant.sandbox_id())
            .fetch_all(&mut *conn)
            .await?,
    )
}

/// The tenant's ready external audiences as fixtures, in id order.
pub async fn external_fixtures(
    conn: &mut PgConnection,
    tenant: &Tenant,
) -> Result<Vec<ExternalFixture>, StoreError> {
    let rows: Vec<(Uuid, String, String)> = sqlx::query_as(
        "SELECT id, spec::text, created_by FROM external_audiences
         WHERE sandbox_id = $1 AND state = 'ready' ORDER BY id",
    )
    .bind(tenant.sandbox_id())
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|(id, spec, created_by)| {
            let definition = serde_json::from_str(&spec)
                .map_err(|e| StoreError::Corrupt(anyhow::Error::new(e).context("column spec")))?;
            Ok(ExternalFixture {
                id,
                definition,
                created_by,
            })
        })
        .collect()
}
