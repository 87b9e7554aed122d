//! Landing-zone use cases: the zone and its credentials for a tenant (Adobe's Connectors API), and
//! the authentication of a blob request by its URL's account and SAS token.

use std::path::PathBuf;

use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::OnceCell;

use super::control;
use crate::{
    domain::{
        clock::Clock,
        landing::{self, Credential, Permission, SasRefusal, CONTAINER_NAME},
        Tenant,
    },
    error::{ApiError, Code},
    landing::Zone,
    storage,
};

/// Bounds of one zone.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_blob_bytes: u64,
    pub max_zone_bytes: u64,
    pub max_files: u64,
}

/// What the landing-zone requests need besides the pool.
#[derive(Clone, Debug)]
pub struct LandingConfig {
    pub clock: Clock,
    /// Where clients reach this server (no trailing slash).
    pub public_url: String,
    /// `LANDING_DIR`.
    pub root: PathBuf,
    pub ttl_days: i64,
    pub limits: Limits,
}

/// The SAS signing key, read from the database once per process.
#[derive(Default)]
pub struct Keys {
    secret: OnceCell<Vec<u8>>,
}

impl Keys {
    pub async fn secret(&self, pool: &PgPool) -> Result<&[u8], ApiError> {
        let secret = self
            .secret
            .get_or_try_init(|| storage::landing::secret(pool))
            .await?;
        Ok(secret.as_slice())
    }
}

fn check_type(zone_type: Option<&str>) -> Result<(), ApiError> {
    match zone_type {
        Some(landing::ZONE_TYPE) => Ok(()),
        Some(other) => Err(ApiError::new(
            Code::LandingInvalid,
            format!(
                "Query parameter 'type' must be '{}'; got '{other}'.",
                landing::ZONE_TYPE
            ),
        )),
        None => Err(ApiError::new(
            Code::LandingInvalid,
            format!(
                "Query parameter 'type' is required and must be '{}'.",
                landing::ZONE_TYPE
            ),
        )),
    }
}

/// Makes the zone's container folder, so that it can be found on disk (and filled by hand on a
/// single-team server) as soon as the zone is known.
async fn ensure_folder(cfg: &LandingConfig, zone: &Credential) -> Result<(), ApiError> {
    let Some(zone) = Zone::new(&cfg.root, &zone.account) else {
        return Err(ApiError::internal(anyhow::anyhow!(
            "stored account name {} is not account-shaped",
            zone.account
        )));
    };
    let path = zone.container_path();
    tokio::task::spawn_blocking(move || std::fs::create_dir_all(path))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

/// `GET /landingzone?type=user_drop_zone`: the container and how long files stay in it.
pub async fn landing_zone(
    pool: &PgPool,
    cfg: &LandingConfig,
    tenant: &Tenant,
    zone_type: Option<&str>,
) -> Result<Value, ApiError> {
    check_type(zone_type)?;
    let now = control::now_for(pool, &cfg.clock, tenant.sandbox_id()).await?;
    let zone = storage::landing::zone(pool, tenant, now).await?;
    ensure_folder(cfg, &zone).await?;
    Ok(json!({
        "containerName": CONTAINER_NAME,
        "containerTTL": cfg.ttl_days.to_string(),
    }))
}

/// `GET /landingzone/credentials?type=user_drop_zone`. An expired credential is replaced on read,
/// as Adobe does.
pub async fn credentials(
    pool: &PgPool,
    keys: &Keys,
    cfg: &LandingConfig,
    tenant: &Tenant,
    zone_type: Option<&str>,
) -> Result<Value, ApiError> {
    check_type(zone_type)?;
    issue(pool, keys, cfg, tenant, false).await
}

/// `POST /landingzone/credentials?type=user_drop_zone&action=refresh`: a new credential, which
/// revokes the earlier ones.
pub async fn refresh_credentials(
    pool: &PgPool,
    keys: &Keys,
    cfg: &LandingConfig,
    tenant: &Tenant,
    zone_type: Option<&str>,
    action: Option<&str>,
) -> Result<Value, ApiError> {
    check_type(zone_type)?;
    if action != Some(landing::REFRESH_ACTION) {
        return Err(ApiError::new(
            Code::LandingInvalid,
            match action {
                None => "Query parameter 'action' is required and must be 'refresh'.".to_owned(),
                Some(a) => format!("Query parameter 'action' must be 'refresh'; got '{a}'."),
            },
        ));
    }
    issue(pool, keys, cfg, tenant, true).await
}

async fn issue(
    pool: &PgPool,
    keys: &Keys,
    cfg: &LandingConfig,
    tenant: &Tenant,
    refresh: bool,
) -> Result<Value, ApiError> {
    let now = control::now_for(pool, &cfg.clock, tenant.sandbox_id()).await?;
    let mut zone = storage::landing::zone(pool, tenant, now).await?;
    if refresh || zone.expires_at <= now {
        // Concurrent reads of an expired credential rotate it once; the others read the winner's.
        zone = match storage::landing::rotate(pool, tenant, now, !refresh).await? {
            Some(rotated) => rotated,
            None => storage::landing::zone(pool, tenant, now).await?,
        };
    }
    ensure_folder(cfg, &zone).await?;
    let token = zone.token(keys.secret(pool).await?);
    Ok(json!({
        "containerName": CONTAINER_NAME,
        "SASToken": token,
        "storageAccountName": zone.account,
        "SASUri": format!("{}/{}/{CONTAINER_NAME}?{token}", cfg.public_url, zone.account),
        "expiryDate": zone.expiry_date(),
    }))
}

/// Authenticates a blob request: the zone its URL's account names, opened by the SAS token in its
/// query, for what it needs. Every refusal is 403 in Azure's shape, and an unknown account is
/// refused exactly like a wrong signature, so a caller learns nothing about other zones.
pub async fn authenticate(
    pool: &PgPool,
    keys: &Keys,
    cfg: &LandingConfig,
    account: &str,
    query: &str,
    needed: Permission,
) -> Result<Zone, ApiError> {
    let refused = |reason: SasRefusal| {
        let (code, message) = match reason {
            SasRefusal::Missing => (
                Code::AzureAuthenticationFailed,
                "The request carries no SAS token: append the SASToken of GET /data/foundation/connectors/landingzone/credentials?type=user_drop_zone as the query string.".to_owned(),
            ),
            SasRefusal::Malformed(why) => (
                Code::AzureAuthenticationFailed,
                format!("Signature fields not well formed: {why}."),
            ),
            SasRefusal::Mismatch => (
                Code::AzureAuthenticationFailed,
                "Signature did not match: the SAS token is not one issued for this container.".to_owned(),
            ),
            SasRefusal::Expired => (
                Code::AzureAuthenticationFailed,
                "Signed expiry time has passed: fetch the current credentials.".to_owned(),
            ),
            SasRefusal::Revoked => (
                Code::AzureAuthenticationFailed,
                "The SAS token was revoked by a credentials refresh: fetch the current credentials.".to_owned(),
            ),
            SasRefusal::NotPermitted => (
                Code::AzurePermissionMismatch,
                "This request is not authorized to perform this operation using this permission.".to_owned(),
            ),
        };
        ApiError::new(code, message)
    };
    let fields = landing::sas_fields(query)
        .map_err(refused)?
        .ok_or_else(|| refused(SasRefusal::Missing))?;
    let secret = keys.secret(pool).await?;
    // A well-formed name is looked up; any other answers as an unknown account does.
    let zone = if landing::is_account_name(account) {
        storage::landing::zone_by_account(pool, account).await?
    } else {
        None
    };
    let Some(zone) = zone else {
        // The same work as for a known account, so the answer's timing says nothing either.
        let unknown = Credential {
            account: account.to_owned(),
            sandbox_id: uuid::Uuid::nil(),
            credential_id: uuid::Uuid::nil(),
            expires_at: cfg.clock.now(),
        };
        let _ = landing::verify(&fields, &unknown, secret, cfg.clock.now(), needed);
        return Err(refused(SasRefusal::Mismatch));
    };
    let now = control::now_for(pool, &cfg.clock, zone.sandbox_id).await?;
    landing::verify(&fields, &zone, secret, now, needed).map_err(refused)?;
    Zone::new(&cfg.root, &zone.account)
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("bad stored account {}", zone.account)))
}
