//! Test control (`/_local`, docs/CONTROL.md): the reset of a sandbox.

use std::path::Path;

use sqlx::PgPool;

use super::retry;
use crate::{
    domain::{control::Removed, Tenant},
    error::ApiError,
    landing::Zone,
    storage,
};

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
