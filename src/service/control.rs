//! Test control (`/_local`, docs/CONTROL.md): the reset of a sandbox, its clock offset, and the
//! time of a sandbox that every tenant-scoped rule reads.

use std::path::Path;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::retry;
use crate::{
    domain::{
        clock::Clock,
        control::{self, Removed, SandboxClock},
        Tenant,
    },
    error::ApiError,
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
