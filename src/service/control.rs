//! Test control (`/_local`, docs/CONTROL.md): the reset of a sandbox, its clock offset, and the
//! time of a sandbox that every tenant-scoped rule reads.

use std::path::Path;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::retry;
use crate::{
    domain::{
        clock::Clock,
        control::{self, Fault, FaultKind, Removed, SandboxClock},
        Tenant,
    },
    error::{ApiError, Code},
    landing::Zone,
    storage::{self, StoreError},
};

/// The time of the tenant's sandbox: the server's clock plus the sandbox's offset (read from the
/// database, so every replica agrees). Every rule that writes or compares a time of the sandbox
/// (TTL expiry, runs, credentials, zone files) reads this one.
pub async fn now_for<'e>(
    conn: impl sqlx::PgExecutor<'e>,
    clock: &Clock,
    sandbox_id: uuid::Uuid,
) -> Result<DateTime<Utc>, StoreError> {
    let offset = storage::control::clock_offset(conn, sandbox_id).await?;
    Ok(control::sandbox_time(clock.now(), offset))
}

/// The sandbox's clock.
pub async fn clock(
    pool: &PgPool,
    clock: &Clock,
    tenant: &Tenant,
) -> Result<SandboxClock, ApiError> {
    let offset_seconds = storage::control::clock_offset(pool, tenant.sandbox_id()).await?;
    Ok(SandboxClock {
        offset_seconds,
        now: control::sandbox_time(clock.now(), offset_seconds),
    })
}

/// Sets the sandbox's clock offset (already checked against its bound).
pub async fn set_clock(
    pool: &PgPool,
    clock: &Clock,
    tenant: &Tenant,
    offset_seconds: i64,
) -> Result<SandboxClock, ApiError> {
    let mut conn = pool.acquire().await?;
    storage::control::set_clock_offset(&mut conn, tenant, offset_seconds, clock.now()).await?;
    Ok(SandboxClock {
        offset_seconds,
        now: control::sandbox_time(clock.now(), offset_seconds),
    })
}

/// Removes the sandbox's clock offset; its clock is the server's again.
pub async fn clear_clock(
    pool: &PgPool,
    clock: &Clock,
    tenant: &Tenant,
) -> Result<SandboxClock, ApiError> {
    let mut conn = pool.acquire().await?;
    storage::control::clear_clock_offset(&mut conn, tenant).await?;
    Ok(SandboxClock {
        offset_seconds: 0,
        now: clock.now(),
    })
}

/// Removes everything of the tenant's sandbox in one transaction (`storage::control::reset`),
/// then the files of its landing zone under `landing_root`. The sandbox, its landing zone's
/// account and its credential stay, so a suite's SAS URL keeps working.
pub async fn reset(
    pool: &PgPool,
    tenant: &Tenant,
    landing_root: &Path,
) -> Result<Removed, ApiError> {
    let mut removed = retry::on_conflict(|| async {
        let mut tx = pool.begin().await?;
        let removed = storage::control::reset(&mut tx, tenant).await?;
        tx.commit().await?;
        Ok::<_, ApiError>(removed)
    })
    .await?;
    let account = {
        let mut conn = pool.acquire().await?;
        storage::landing::account_of(&mut conn, tenant).await?
    };
    if let Some(zone) = account.and_then(|a| Zone::new(landing_root, &a)) {
        removed.zone_files = tokio::task::spawn_blocking(move || zone.clear())
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
    }
    Ok(removed)
}

/// Adds a fault to the sandbox (already parsed): a run fault's audience must be an external
/// audience of the sandbox; at most `max` live faults per sandbox.
pub async fn add_fault(
    pool: &PgPool,
    clock: &Clock,
    tenant: &Tenant,
    kind: FaultKind,
    count: i32,
    max: i64,
) -> Result<Fault, ApiError> {
    let mut tx = pool.begin().await?;
    if let FaultKind::Run { audience_id, .. } = &kind {
        if storage::ais::external(&mut tx, tenant, *audience_id)
            .await?
            .is_none()
        {
            return Err(ApiError::new(
                Code::BadBody,
                format!("Field 'audienceId': no external audience {audience_id} in this sandbox."),
            ));
        }
    }
    let added =
        storage::control::add_fault(&mut tx, tenant, &kind, count, max, clock.now()).await?;
    let storage::control::Added::Fault(fault) = added else {
        return Err(ApiError::limit(format!(
            "The sandbox already holds {max} faults with runs left (CONTROL_MAX_FAULTS); delete them first (DELETE /_local/faults)."
        )));
    };
    tx.commit().await?;
    Ok(fault)
}

pub async fn faults(pool: &PgPool, tenant: &Tenant) -> Result<Vec<Fault>, ApiError> {
    let mut conn = pool.acquire().await?;
    Ok(storage::control::faults(&mut conn, tenant).await?)
}

/// Deletes the sandbox's faults; how many there were.
pub async fn clear_faults(pool: &PgPool, tenant: &Tenant) -> Result<u64, ApiError> {
    let mut conn = pool.acquire().await?;
    Ok(storage::control::clear_faults(&mut conn, tenant).await?)
}

/// Uses one run of a request fault of the sandbox for `method` and `path`; its status.
pub async fn take_request_fault(
    pool: &PgPool,
    tenant: &Tenant,
    method: &str,
    path: &str,
) -> Result<Option<u16>, ApiError> {
    Ok(storage::control::take_request_fault(pool, tenant.sandbox_id(), method, path).await?)
}

/// The sandboxes holding request faults with runs left.
pub async fn request_faulted_sandboxes(pool: &PgPool) -> Result<Vec<uuid::Uuid>, ApiError> {
    Ok(storage::control::sandboxes_with_request_faults(pool).await?)
}
