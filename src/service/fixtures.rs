//! Fixtures (test control, docs/CONTROL.md): sandboxes loaded from `FIXTURES_DIR` at start, and
//! written in the same format by `GET /_local/sandbox/export`. Loading keeps the documents' ids
//! and adds only what is missing, under a lock per sandbox, so restarts and replicas that load
//! the same files at once end with one copy.

use std::path::Path;

use anyhow::Context;
use sqlx::PgPool;

use crate::{
    config::Limits,
    domain::{
        audience::Audience,
        clock::Clock,
        control::{Loaded, SandboxFixture, ZoneFile},
        landing::parse_blob_name,
        Caller, Tenant,
    },
    error::ApiError,
    landing::{Zone, ZoneError},
    storage::{
        self,
        sandboxes::{Caps, Registered},
    },
};

/// Where fixtures are loaded from and with which bounds.
pub struct FixtureConfig<'a> {
    pub limits: &'a Limits,
    pub clock: &'a Clock,
    /// `LANDING_DIR`.
    pub landing_root: &'a Path,
    /// `LANDING_MAX_BLOB_BYTES`.
    pub max_file_bytes: u64,
}

/// Loads every `*.json` document of `dir` (in name order); what each added.
pub async fn load_dir(
    pool: &PgPool,
    cfg: &FixtureConfig<'_>,
    dir: &Path,
) -> anyhow::Result<Vec<(String, Loaded)>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("FIXTURES_DIR {} cannot be read", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
        .collect();
    files.sort();
    let mut out = Vec::with_capacity(files.len());
    for file in files {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(&file).with_context(|| format!("fixture {name}"))?;
        let fixture: SandboxFixture =
            serde_json::from_str(&text).with_context(|| format!("fixture {name}"))?;
        let loaded = load(pool, cfg, fixture)
            .await
            .map_err(|e| anyhow::anyhow!("fixture {name}: {e}"))?;
        out.push((name, loaded));
    }
    Ok(out)
}

/// Loads one sandbox's document: what is missing is added, what exists is left alone.
pub async fn load(
    pool: &PgPool,
    cfg: &FixtureConfig<'_>,
    fixture: SandboxFixture,
) -> Result<Loaded, ApiError> {
    let sandbox = match storage::sandboxes::register(
        pool,
        &fixture.org_id,
        &fixture.sandbox_name,
        Caps::from_limits(cfg.limits),
    )
    .await?
    {
        Registered::Sandbox(s) => s,
        Registered::OrgFull => {
            return Err(ApiError::limit(
                "the organisation already has MAX_SANDBOXES_PER_ORG sandboxes",
            ))
        }
        Registered::ServerFull => {
            return Err(ApiError::limit(
                "the server already has MAX_ORGANISATIONS organisations",
            ))
        }
    };
    let tenant = Tenant::new(fixture.org_id.clone(), sandbox);
    let now = cfg.clock.now();
    let mut loaded = Loaded::default();
    let mut tx = pool.begin().await?;
    storage::control::lock_fixture(&mut tx, &tenant).await?;
    // External audiences first (reserved as being created), then UPS audiences, then the UPS
    // audiences the document lacks for its external audiences; then they are ready.
    let mut added_externals = Vec::new();
    for ext in &fixture.external_audiences {
        if storage::ais::external(&mut tx, &tenant, ext.id)
            .await?
            .is_some()
        {
            continue;
        }
        let caller = Caller {
            user_id: ext.created_by.clone(),
        };
        storage::ais::insert_external(&mut tx, &tenant, ext.id, &ext.definition, &caller, now)
            .await
            .map_err(|e| refused(format!("external audience {}", ext.id), e))?;
        added_externals.push(ext.id);
    }
    for body in &fixture.audiences {
        let audience = Audience::from_body(body.clone())
            .map_err(|e| ApiError::bad_body(format!("an audience does not read: {e}")))?;
        audience.fields.check_bounds(cfg.limits)?;
        if storage::audiences::read(&mut *tx, &tenant, audience.id)
            .await?
            .is_some()
        {
            continue;
        }
        storage::audiences::insert(&mut tx, &tenant, &audience)
            .await
            .map_err(|e| refused(format!("audience {}", audience.id), e))?;
        loaded.audiences += 1;
    }
    for id in added_externals {
        if storage::audiences::read(&mut *tx, &tenant, id)
            .await?
            .is_none()
        {
            let ext = storage::ais::external(&mut tx, &tenant, id).await?;
            let ext = ext.ok_or_else(|| ApiError::internal(anyhow::anyhow!("{id} vanished")))?;
            let ups = ext.ups_audience(now)?;
            storage::audiences::insert(&mut tx, &tenant, &ups)
                .await
                .map_err(|e| refused(format!("the UPS audience of {id}"), e))?;
            loaded.audiences += 1;
        }
        storage::ais::mark_ready(&mut tx, &tenant, id).await?;
        loaded.external_audiences += 1;
    }
    tx.commit().await?;
    loaded.zone_files = write_zone_files(pool, cfg, &tenant, fixture.zone_files).await?;
    Ok(loaded)
}

/// A row the database refused: another sandbox holds the id, or a unique key is taken.
fn refused(what: String, e: storage::StoreError) -> ApiError {
    match e {
        storage::StoreError::Conflict(c) => {
            ApiError::bad_body(format!("{what} conflicts with an existing one ({c:?})"))
        }
        storage::StoreError::Db(db) if storage::violated_constraint(&db).is_some() => {
            ApiError::bad_body(format!(
                "{what} conflicts with an existing row ({}): its id is used by another sandbox",
                storage::violated_constraint(&db).unwrap_or_default()
            ))
        }
        other => other.into(),
    }
}

/// Writes the files the zone does not hold yet (an existing file is left alone, so a restart does
/// not make it younger); how many were written.
async fn write_zone_files(
    pool: &PgPool,
    cfg: &FixtureConfig<'_>,
    tenant: &Tenant,
    files: Vec<ZoneFile>,
) -> Result<u64, ApiError> {
    if files.is_empty() {
        return Ok(0);
    }
    let now = super::control::now_for(pool, cfg.clock, tenant.sandbox_id()).await?;
    let credential = storage::landing::zone(pool, tenant, now).await?;
    let zone = Zone::new(cfg.landing_root, &credential.account)
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("bad account {}", credential.account)))?;
    let max = cfg.max_file_bytes;
    let mut entries = Vec::with_capacity(files.len());
    for file in files {
        let name = parse_blob_name(&file.path)
            .map_err(|e| ApiError::bad_body(format!("zone file '{}': {e}", file.path)))?;
        let bytes = file.bytes().map_err(ApiError::bad_body)?;
        if bytes.len() as u64 > max {
            return Err(ApiError::limit(format!(
                "zone file '{}' is {} bytes; at most {max} (LANDING_MAX_BLOB_BYTES)",
                file.path,
                bytes.len()
            )));
        }
        entries.push((name, bytes));
    }
    tokio::task::spawn_blocking(move || {
        let mut written = 0;
        for (name, bytes) in entries {
            let mut upload = zone.begin_upload()?;
            std::io::Write::write_all(&mut upload.file, &bytes)?;
            match zone.commit(upload, &name, false) {
                Ok(_) => written += 1,
                Err(ZoneError::Exists) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(written)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e: ZoneError| ApiError::internal(anyhow::anyhow!("writing a zone file: {e}")))
}

/// The tenant's sandbox as a fixture document, refused past `max_bytes` (audience bodies and
/// zone files together).
pub async fn export(
    pool: &PgPool,
    tenant: &Tenant,
    landing_root: &Path,
    max_bytes: u64,
) -> Result<SandboxFixture, ApiError> {
    let too_large = || {
        ApiError::limit(format!(
            "The sandbox holds more than {max_bytes} bytes of audiences and zone files (CONTROL_EXPORT_MAX_BYTES)."
        ))
    };
    let mut conn = pool.acquire().await?;
    let mut budget = max_bytes;
    let bytes = u64::try_from(storage::control::audience_bytes(&mut conn, tenant).await?)
        .unwrap_or(u64::MAX);
    budget = budget.checked_sub(bytes).ok_or_else(too_large)?;
    let audiences = storage::control::audience_bodies(&mut conn, tenant)
        .await?
        .iter()
        .map(|b| serde_json::from_str(b))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::internal)?;
    let external_audiences = storage::control::external_fixtures(&mut conn, tenant).await?;
    let account = storage::landing::account_of(&mut conn, tenant).await?;
    drop(conn);
    let zone = account.and_then(|a| Zone::new(landing_root, &a));
    let zone_files = match zone {
        None => Vec::new(),
        Some(zone) => tokio::task::spawn_blocking(move || read_zone(&zone, budget))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| ApiError::internal(anyhow::anyhow!("reading the zone: {e}")))?
            .ok_or_else(too_large)?,
    };
    Ok(SandboxFixture {
        org_id: tenant.org_id().to_owned(),
        sandbox_name: tenant.sandbox().name.clone(),
        audiences,
        external_audiences,
        zone_files,
    })
}

/// The zone's files; `None` past `budget` bytes.
fn read_zone(zone: &Zone, mut budget: u64) -> Result<Option<Vec<ZoneFile>>, ZoneError> {
    let mut out = Vec::new();
    for listed in zone.list(&[])? {
        budget = match budget.checked_sub(listed.info.size) {
            Some(left) => left,
            None => return Ok(None),
        };
        let name = parse_blob_name(&listed.name).map_err(|_| ZoneError::NotFound)?;
        let (mut file, _) = zone.open_file(&name)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes)?;
        out.push(ZoneFile::new(listed.name, bytes));
    }
    Ok(Some(out))
}
