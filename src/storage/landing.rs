//! SQL for landing zones and the key that signs their SAS tokens. Functions that act for a tenant
//! take it first; [`zone_by_account`] is the one lookup made before a tenant is known (the blob
//! API authenticates by the account in its URL and the token, not by tenant headers).

use chrono::{DateTime, Utc};
use rand::RngCore;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{violated_constraint, StoreError};
use crate::domain::{
    landing::{self, Credential},
    Tenant,
};

#[derive(sqlx::FromRow)]
struct ZoneRow {
    sandbox_id: Uuid,
    account_name: String,
    credential_id: Uuid,
    credential_expires_at: DateTime<Utc>,
}

impl From<ZoneRow> for Credential {
    fn from(row: ZoneRow) -> Self {
        Credential {
            account: row.account_name,
            sandbox_id: row.sandbox_id,
            credential_id: row.credential_id,
            expires_at: row.credential_expires_at,
        }
    }
}

const ZONE_COLUMNS: &str = "sandbox_id, account_name, credential_id, credential_expires_at";

/// The signing key, created by the first caller. Concurrent first callers agree on one key: the
/// insert does nothing when another won, and the read sees the winner's committed row.
pub async fn secret(pool: &PgPool) -> Result<Vec<u8>, StoreError> {
    let mut fresh = vec![0u8; 32];
    rand::rng().fill_bytes(&mut fresh);
    sqlx::query(
        "INSERT INTO landing_secret (id, secret) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&fresh)
    .execute(pool)
    .await?;
    Ok(
        sqlx::query_scalar("SELECT secret FROM landing_secret WHERE id = 1")
            .fetch_one(pool)
            .await?,
    )
}

/// The tenant's zone, created with a fresh account name and credential when it has none. An
/// account name already taken (vanishingly rare) is drawn again.
pub async fn zone(
    pool: &PgPool,
    tenant: &Tenant,
    now: DateTime<Utc>,
) -> Result<Credential, StoreError> {
    if let Some(zone) = find(pool, tenant).await? {
        return Ok(zone);
    }
    for _ in 0..5 {
        let inserted = sqlx::query(
            "INSERT INTO landing_zones
                 (sandbox_id, account_name, credential_id, credential_expires_at, created_at, rotated_at)
             VALUES ($1, $2, $3, $4, $5, $5)
             ON CONFLICT (sandbox_id) DO NOTHING",
        )
        .bind(tenant.sandbox_id())
        .bind(landing::new_account_name())
        .bind(Uuid::new_v4())
        .bind(landing::credential_expiry(now))
        .bind(now)
        .execute(pool)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if violated_constraint(&e) == Some("landing_zones_account_name_key") => continue,
            Err(e) => return Err(e.into()),
        }
        if let Some(zone) = find(pool, tenant).await? {
            return Ok(zone);
        }
    }
    Err(StoreError::Corrupt(anyhow::anyhow!(
        "no landing zone for sandbox {} after five account names were drawn",
        tenant.sandbox_id()
    )))
}

async fn find(pool: &PgPool, tenant: &Tenant) -> Result<Option<Credential>, StoreError> {
    let row: Option<ZoneRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ZONE_COLUMNS} FROM landing_zones WHERE sandbox_id = $1"
    )))
    .bind(tenant.sandbox_id())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Into::into))
}

/// Replaces the tenant's credential. With `only_if_expired`, only a credential whose expiry has
/// passed at `now` is replaced (concurrent callers then rotate it once); `None` when nothing was
/// replaced.
pub async fn rotate(
    pool: &PgPool,
    tenant: &Tenant,
    now: DateTime<Utc>,
    only_if_expired: bool,
) -> Result<Option<Credential>, StoreError> {
    let row: Option<ZoneRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE landing_zones
            SET credential_id = $2, credential_expires_at = $3, rotated_at = $4
          WHERE sandbox_id = $1 AND (NOT $5 OR credential_expires_at <= $4)
      RETURNING {ZONE_COLUMNS}"
    )))
    .bind(tenant.sandbox_id())
    .bind(Uuid::new_v4())
    .bind(landing::credential_expiry(now))
    .bind(now)
    .bind(only_if_expired)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Into::into))
}

/// The zone a storage account name routes to, if any.
pub async fn zone_by_account(
    pool: &PgPool,
    account: &str,
) -> Result<Option<Credential>, StoreError> {
    let row: Option<ZoneRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ZONE_COLUMNS} FROM landing_zones WHERE account_name = $1"
    )))
    .bind(account)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Into::into))
}

/// The account name of the tenant's zone, for the worker; `None` when the sandbox never asked for
/// one (its zone is then empty).
pub async fn account_of(
    conn: &mut PgConnection,
    tenant: &Tenant,
) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT account_name FROM landing_zones WHERE sandbox_id = $1")
            .bind(tenant.sandbox_id())
            .fetch_optional(conn)
            .await?,
    )
}
