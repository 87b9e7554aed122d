//! AIS use cases. Each request is one transaction; the asynchronous part (creating the UPS
//! audience, ingesting files) is queued as a job in that same transaction and carried out by the
//! worker (`crate::worker`). Conflicts the store reports are answered here with the AIS codes.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    config::Limits,
    domain::{
        audience::{self, Audience},
        clock::Clock,
        external::{
            self, ExternalAudience, ExternalAudiencePatch, ExternalAudienceRequest,
            ExternalAudienceSpec, MetaOnlyRequest, Operation,
        },
        job::JobKind,
        run::{self, Run, RunDetails, RunKind, RunLimits, RunRequest, RunSort},
        Caller, Tenant,
    },
    error::{ApiError, Code},
    storage::{self, ais::NewRun, jobs, Conflict, StoreError},
};

use super::{audiences, control, retry};

/// What AIS requests need besides the pool: the clock, the run guardrails and the input bounds.
#[derive(Clone, Debug)]
pub struct AisConfig {
    pub clock: Clock,
    pub runs_per_sandbox_per_day: i64,
    pub runs_per_audience: i64,
    pub limits: Limits,
}

impl AisConfig {
    fn run_limits(&self) -> RunLimits {
        RunLimits {
            per_audience: self.runs_per_audience,
            per_sandbox_per_day: self.runs_per_sandbox_per_day,
        }
    }
}

fn parse_uuid(id: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| not_found(what, id))
}

fn not_found(what: &str, id: &str) -> ApiError {
    ApiError::new(
        Code::AisNotFound,
        format!("The {what} {id} is not found. Use a valid id and try again."),
    )
}

/// The AIS answer to a creation the store refused: a name or customAudienceId taken in the
/// sandbox is 409.
fn creation_refused(e: StoreError, spec: &ExternalAudienceSpec) -> ApiError {
    let taken = |m: String| ApiError::new(Code::AisConflict, m);
    match e {
        StoreError::Conflict(Conflict::ExternalNameTaken) => taken(format!(
            "An external audience named '{}' already exists in this sandbox.",
            spec.name
        )),
        StoreError::Conflict(Conflict::ExternalCustomIdTaken) => taken(format!(
            "An external audience with customAudienceId '{}' already exists in this sandbox.",
            spec.custom_audience_id.as_deref().unwrap_or_default()
        )),
        other => other.into(),
    }
}

/// The AIS answer to a run the store refused: another one in progress is 422 (the database's
/// last word on the check `RunKind::check_start` made).
fn run_refused(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(Conflict::RunInProgress) => {
            ApiError::new(Code::AisUnprocessable, run::RUN_IN_PROGRESS)
        }
        other => other.into(),
    }
}

/// UPS rule failures seen through AIS answer with AIS codes.
fn to_ais(e: ApiError) -> ApiError {
    match e.code {
        Code::AudienceConflict => ApiError::new(Code::AisConflict, e.message),
        Code::BadBody | Code::AudienceInvalid | Code::LimitExceeded => {
            ApiError::ais_invalid(e.message)
        }
        _ => e,
    }
}

/// Meta-only create: an `ExternalSegment` UPS audience, published, created at once.
pub async fn create_meta_only(
    pool: &PgPool,
    cfg: &AisConfig,
    tenant: &Tenant,
    caller: &Caller,
    request: MetaOnlyRequest,
) -> Result<Audience, ApiError> {
    let doc = request.ups_document()?;
    let id = Uuid::new_v4();
    let fields = audience::new_fields(doc, id).map_err(to_ais)?;
    fields.check_bounds(&cfg.limits).map_err(to_ais)?;
    let created = Audience::create(id, fields, caller, Vec::new(), cfg.clock.now());
    let mut tx = pool.begin().await?;
    storage::audiences::insert(&mut tx, tenant, &created)
        .await
        .map_err(|e| to_ais(audiences::write_refused(e, &created)))?;
    tx.commit().await?;
    Ok(created)
}

/// What a create answers: the operation id and the normalised request.
pub struct Accepted {
    pub operation_id: Uuid,
    pub spec: ExternalAudienceSpec,
}

/// Creates an external audience: reserves its name, records the operation and queues the job
/// that creates the UPS audience.
pub async fn create_external(
    pool: &PgPool,
    cfg: &AisConfig,
    tenant: &Tenant,
    caller: &Caller,
    request: ExternalAudienceRequest,
) -> Result<Accepted, ApiError> {
    let spec = external::normalize(request, &cfg.limits)?;
    let audience_id = Uuid::new_v4();
    let operation_id = Uuid::new_v4();
    let mut tx = pool.begin().await?;
    // The sandbox's time for what it shows; the server's for the job queue.
    let at = control::now_for(&mut *tx, &cfg.clock, tenant.sandbox_id()).await?;
    storage::ais::insert_external(&mut tx, tenant, audience_id, &spec, caller, at)
        .await
        .map_err(|e| creation_refused(e, &spec))?;
    storage::ais::insert_operation(
        &mut tx,
        tenant,
        operation_id,
        audience_id,
        &spec,
        caller,
        at,
    )
    .await?;
    let now = cfg.clock.now();
    jobs::insert(&mut tx, tenant, JobKind::CreateAudience, operation_id, now).await?;
    tx.commit().await?;
    Ok(Accepted { operation_id, spec })
}

pub async fn get_operation(
    pool: &PgPool,
    tenant: &Tenant,
    id: &str,
) -> Result<Operation, ApiError> {
    let uuid = parse_uuid(id, "operation")?;
    storage::ais::operation(pool, tenant, uuid)
        .await?
        .ok_or_else(|| not_found("operation", id))
}

/// A ready external audience of the tenant (one still being created does not exist for the
/// API), optionally locked.
async fn ready_external(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: &str,
    lock: bool,
) -> Result<ExternalAudience, ApiError> {
    let uuid = parse_uuid(id, "external audience")?;
    let found = match lock {
        true => storage::ais::lock_external(conn, tenant, uuid).await?,
        false => storage::ais::external(conn, tenant, uuid).await?,
    };
    found
        .filter(|e| e.state == external::ExternalState::Ready)
        .ok_or_else(|| not_found("external audience", id))
}

pub async fn get_external(
    pool: &PgPool,
    tenant: &Tenant,
    id: &str,
) -> Result<ExternalAudience, ApiError> {
    let mut conn = pool.acquire().await?;
    ready_external(&mut conn, tenant, id, false).await
}

/// PATCH: description, labels, fields (merged by name), ttlInDays. The UPS audience follows the
/// definition (`ExternalAudienceSpec::copy_to_ups`).
pub async fn patch_external(
    pool: &PgPool,
    cfg: &AisConfig,
    tenant: &Tenant,
    caller: &Caller,
    id: &str,
    patch: ExternalAudiencePatch,
) -> Result<ExternalAudience, ApiError> {
    retry::on_conflict(|| patch_external_once(pool, cfg, tenant, caller, id, patch.clone())).await
}

/// Lock order: the external audience, then its UPS audience (see `audiences::delete_cascade`).
async fn patch_external_once(
    pool: &PgPool,
    cfg: &AisConfig,
    tenant: &Tenant,
    caller: &Caller,
    id: &str,
    patch: ExternalAudiencePatch,
) -> Result<ExternalAudience, ApiError> {
    let mut tx = pool.begin().await?;
    let current = ready_external(&mut tx, tenant, id, true).await?;
    let spec = current.spec.patched(patch, &cfg.limits)?;
    let now = control::now_for(&mut *tx, &cfg.clock, tenant.sandbox_id()).await?;
    storage::ais::update_spec(&mut tx, tenant, current.id, &spec, caller, now).await?;
    if let Some(ups) = storage::audiences::lock(&mut tx, tenant, current.id).await? {
        let fields = spec.ups_fields(&ups.fields);
        let updated = ups.updated(fields, caller, ups.dependencies.clone(), now);
        storage::audiences::update(&mut tx, tenant, &updated).await?;
    }
    let patched = storage::ais::external(&mut tx, tenant, current.id)
        .await?
        .ok_or_else(|| not_found("external audience", id))?;
    tx.commit().await?;
    Ok(patched)
}

/// Deletes an external audience and its UPS audience; its runs go with it, its members are swept
/// by the worker's maintenance. The same cascade as a UPS delete, in the same lock order.
pub async fn delete_external(pool: &PgPool, tenant: &Tenant, id: &str) -> Result<(), ApiError> {
    let uuid = parse_uuid(id, "external audience")?;
    match audiences::delete_cascade(pool, tenant, uuid, audiences::DeleteVia::Ais).await? {
        true => Ok(()),
        false => Err(not_found("external audience", id)),
    }
}

/// Starts a run of a locked audience (a client's run, or the re-ingestion of extend-ttl) within
/// the guardrails, and queues its job.
#[allow(clippy::too_many_arguments)]
async fn queue_run(
    tx: &mut PgConnection,
    cfg: &AisConfig,
    tenant: &Tenant,
    caller: &Caller,
    audience: &ExternalAudience,
    kind: RunKind,
    window: (i64, i64),
) -> Result<Run, ApiError> {
    // The sandbox's time for the run and its guardrail day; the server's for the job queue.
    let now = control::now_for(&mut *tx, &cfg.clock, tenant.sandbox_id()).await?;
    storage::ais::lock_sandbox_runs(tx, tenant).await?;
    let counts = storage::ais::run_counts(tx, tenant, audience.id, run::utc_day_start(now)).await?;
    kind.check_start(&counts, &cfg.run_limits())?;
    let id = Uuid::new_v4();
    let name = kind.run_name(&audience.name, audience.run_count + 1);
    let new = NewRun {
        id,
        audience_id: audience.id,
        name: &name,
        kind,
        window,
        details: &RunDetails::new(),
    };
    storage::ais::insert_run(tx, tenant, &new, caller, now)
        .await
        .map_err(run_refused)?;
    jobs::insert(tx, tenant, JobKind::Ingest, id, cfg.clock.now()).await?;
    storage::ais::run(tx, tenant, audience.id, id)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("run {id} vanished")))
}

pub async fn start_run(
    pool: &PgPool,
    cfg: &AisConfig,
    tenant: &Tenant,
    caller: &Caller,
    id: &str,
    request: RunRequest,
) -> Result<Run, ApiError> {
    retry::on_conflict(|| async {
        let mut tx = pool.begin().await?;
        // The window's default end is the sandbox's time.
        let now = control::now_for(&mut *tx, &cfg.clock, tenant.sandbox_id()).await?;
        let window = request.window(now.timestamp())?;
        let audience = ready_external(&mut tx, tenant, id, true).await?;
        let run = queue_run(
            &mut tx,
            cfg,
            tenant,
            caller,
            &audience,
            RunKind::Ingestion,
            window,
        )
        .await?;
        tx.commit().await?;
        Ok(run)
    })
    .await
}

/// Re-ingests the data of the last successful run, which restarts the TTL when it succeeds.
/// Answers the audience.
pub async fn extend_ttl(
    pool: &PgPool,
    cfg: &AisConfig,
    tenant: &Tenant,
    caller: &Caller,
    id: &str,
) -> Result<ExternalAudience, ApiError> {
    retry::on_conflict(|| extend_ttl_once(pool, cfg, tenant, caller, id)).await
}

async fn extend_ttl_once(
    pool: &PgPool,
    cfg: &AisConfig,
    tenant: &Tenant,
    caller: &Caller,
    id: &str,
) -> Result<ExternalAudience, ApiError> {
    let mut tx = pool.begin().await?;
    let audience = ready_external(&mut tx, tenant, id, true).await?;
    let last = match audience.last_success_run_id {
        Some(run_id) => storage::ais::run(&mut tx, tenant, audience.id, run_id).await?,
        None => None,
    };
    let Some(last) = last else {
        return Err(ApiError::new(
            Code::AisUnprocessable,
            "The external audience has no successful run, so there is no data whose TTL could be extended.",
        ));
    };
    queue_run(
        &mut tx,
        cfg,
        tenant,
        caller,
        &audience,
        RunKind::TtlExtension,
        last.window,
    )
    .await?;
    tx.commit().await?;
    Ok(audience)
}

pub async fn get_run(
    pool: &PgPool,
    tenant: &Tenant,
    audience_id: &str,
    run_id: &str,
) -> Result<Run, ApiError> {
    let mut conn = pool.acquire().await?;
    let audience = ready_external(&mut conn, tenant, audience_id, false).await?;
    let run_uuid = parse_uuid(run_id, "run")?;
    storage::ais::run(&mut conn, tenant, audience.id, run_uuid)
        .await?
        .ok_or_else(|| not_found("run", run_id))
}

/// A page of an audience's runs and how many it has in all.
pub async fn list_runs(
    pool: &PgPool,
    tenant: &Tenant,
    audience_id: &str,
    limit: i64,
    sort: RunSort,
) -> Result<(Vec<Run>, i64), ApiError> {
    let audience = {
        let mut conn = pool.acquire().await?;
        ready_external(&mut conn, tenant, audience_id, false).await?
    };
    Ok(storage::ais::list_runs(pool, tenant, audience.id, limit, sort).await?)
}
