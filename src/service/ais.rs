//! AIS use cases. Each request is one transaction; the asynchronous part (creating the UPS
//! audience, ingesting files) is queued as a job in that same transaction and carried out by the
//! worker (`crate::worker`).

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Map, Value};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    config::Limits,
    domain::{
        audience::{self, Audience, EXTERNAL_SEGMENT},
        clock::Clock,
        external::{self, RunSort},
        Caller, Tenant,
    },
    error::{ApiError, Code},
    storage::{
        self,
        ais::{ExternalRow, NewRun, OperationRow, RunRow},
        jobs,
    },
};

use super::{audiences, retry};

/// What AIS requests need besides the pool: the clock, the run guardrails and the input bounds.
#[derive(Clone, Debug)]
pub struct AisConfig {
    pub clock: Clock,
    pub runs_per_sandbox_per_day: i64,
    pub runs_per_audience: i64,
    pub limits: Limits,
}

pub fn epoch_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
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

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// Meta-only create: an `ExternalSegment` UPS audience, published, from
/// `{name, description?, namespace, originName, audienceId?}`.
pub async fn create_meta_only(
    pool: &PgPool,
    cfg: &AisConfig,
    tenant: &Tenant,
    caller: &Caller,
    body: Value,
) -> Result<Value, ApiError> {
    let Value::Object(body) = body else {
        return Err(ApiError::ais_invalid(
            "The request body must be a JSON object.",
        ));
    };
    let mut doc = Map::new();
    for (key, required) in [
        ("name", true),
        ("description", false),
        ("namespace", true),
        ("originName", true),
        ("audienceId", false),
    ] {
        match body.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => {
                doc.insert(key.into(), json!(s));
            }
            Some(Value::String(_)) if key == "description" => {}
            None | Some(Value::Null) if !required => {}
            None | Some(Value::Null) => {
                return Err(ApiError::ais_invalid(format!("Field '{key}' is required.")))
            }
            Some(_) => {
                return Err(ApiError::ais_invalid(format!(
                    "Field '{key}' must be a non-empty string."
                )))
            }
        }
    }
    doc.insert("type".into(), json!(EXTERNAL_SEGMENT));
    doc.insert("lifecycleState".into(), json!("published"));
    let id = Uuid::new_v4();
    let fields = audience::new_fields(Value::Object(doc), id).map_err(to_ais)?;
    fields.check_bounds(&cfg.limits).map_err(to_ais)?;
    let created = Audience::create(id, fields, caller, Vec::new());
    let mut tx = pool.begin().await?;
    storage::audiences::insert(&mut tx, tenant, &created)
        .await
        .map_err(|e| to_ais(audiences::write_refused(e, &created)))?;
    tx.commit().await?;
    Ok(json!({
        "id": created.id,
        "name": created.fields.name,
        "audienceId": created.fields.audience_id(),
    }))
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

/// Creates an external audience: reserves its name, records the operation and queues the job
/// that creates the UPS audience. Answers the operation id and the normalised request.
pub async fn create_external(
    pool: &PgPool,
    cfg: &AisConfig,
    tenant: &Tenant,
    caller: &Caller,
    body: Value,
) -> Result<Value, ApiError> {
    let doc = external::normalize(body, &cfg.limits)?;
    let name = doc["name"].as_str().unwrap_or_default().to_owned();
    let custom = doc
        .get("customAudienceId")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let details = Value::Object(doc).to_string();
    let audience_id = Uuid::new_v4();
    let operation_id = Uuid::new_v4();
    let now = cfg.clock.now();
    let mut tx = pool.begin().await?;
    storage::ais::insert_external(
        &mut tx,
        tenant,
        audience_id,
        &name,
        custom.as_deref(),
        &details,
        caller,
        now,
    )
    .await?;
    storage::ais::insert_operation(
        &mut tx,
        tenant,
        operation_id,
        audience_id,
        &name,
        &details,
        caller,
        now,
    )
    .await?;
    jobs::insert(
        &mut tx,
        tenant,
        jobs::CREATE_AUDIENCE,
        operation_id,
        "create",
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(json!({
        "operationId": operation_id,
        "operationDetails": parse_json(&details),
    }))
}

fn render_operation(op: &OperationRow) -> Value {
    let mut out = json!({
        "operationId": op.id,
        "status": op.status,
        "operationDetails": parse_json(&op.details),
        "audienceName": op.audience_name,
        "createdBy": op.created_by,
        "createdAt": epoch_ms(op.created_at),
        "updatedBy": op.updated_by,
        "updatedAt": epoch_ms(op.updated_at),
    });
    if op.status == "SUCCESS" {
        out["audienceId"] = json!(op.audience_id);
    }
    if let Some(reason) = &op.reason {
        out["reason"] = json!(reason);
    }
    out
}

pub async fn get_operation(pool: &PgPool, tenant: &Tenant, id: &str) -> Result<Value, ApiError> {
    let uuid = parse_uuid(id, "operation")?;
    let op = storage::ais::get_operation(pool, tenant, uuid)
        .await?
        .ok_or_else(|| not_found("operation", id))?;
    Ok(render_operation(&op))
}

/// An external audience as the API shows it: the normalised request plus what the server keeps.
pub fn render_external(row: &ExternalRow) -> Value {
    let mut out = Map::new();
    out.insert("audienceId".into(), json!(row.id));
    if let Value::Object(spec) = parse_json(&row.spec) {
        out.extend(spec);
    }
    out.insert("createdBy".into(), json!(row.created_by));
    out.insert("createdAt".into(), json!(epoch_ms(row.created_at)));
    out.insert("updatedBy".into(), json!(row.updated_by));
    out.insert("updatedAt".into(), json!(epoch_ms(row.updated_at)));
    out.insert("profileCount".into(), json!(row.profile_count));
    if let Some(run) = row.last_success_run_id {
        out.insert("lastSuccessfulRunId".into(), json!(run));
    }
    if let Some(expires) = row.expires_at {
        out.insert("dataExpiresAt".into(), json!(epoch_ms(expires)));
        out.insert("dataExpired".into(), json!(row.expired));
    }
    Value::Object(out)
}

/// A ready external audience of the tenant, optionally locked.
async fn ready_external(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: &str,
    lock: bool,
) -> Result<ExternalRow, ApiError> {
    let uuid = parse_uuid(id, "external audience")?;
    storage::ais::get_external(conn, tenant, uuid, lock)
        .await?
        .filter(|row| row.state == "ready")
        .ok_or_else(|| not_found("external audience", id))
}

pub async fn get_external(pool: &PgPool, tenant: &Tenant, id: &str) -> Result<Value, ApiError> {
    let mut conn = pool.acquire().await?;
    Ok(render_external(
        &ready_external(&mut conn, tenant, id, false).await?,
    ))
}

/// PATCH: description, labels, fields (merged by name), ttlInDays. The UPS audience follows the
/// description, labels and ttlInDays.
pub async fn patch_external(
    pool: &PgPool,
    cfg: &AisConfig,
    tenant: &Tenant,
    caller: &Caller,
    id: &str,
    patch: Value,
) -> Result<Value, ApiError> {
    retry::on_conflict(|| patch_external_once(pool, cfg, tenant, caller, id, patch.clone())).await
}

/// Lock order: the external audience, then its UPS audience (see `audiences::delete_cascade`).
async fn patch_external_once(
    pool: &PgPool,
    cfg: &AisConfig,
    tenant: &Tenant,
    caller: &Caller,
    id: &str,
    patch: Value,
) -> Result<Value, ApiError> {
    let mut tx = pool.begin().await?;
    let row = ready_external(&mut tx, tenant, id, true).await?;
    let Value::Object(current) = parse_json(&row.spec) else {
        return Err(ApiError::internal(anyhow::anyhow!(
            "stored spec is not an object"
        )));
    };
    let doc = external::patched(&current, patch, &cfg.limits)?;
    let now = cfg.clock.now();
    let spec = Value::Object(doc.clone()).to_string();
    storage::ais::update_spec(&mut tx, tenant, row.id, &spec, caller, now).await?;
    if let Some(mut ups) = storage::audiences::lock(&mut tx, tenant, row.id).await? {
        let mut fields = ups.fields.clone();
        for key in ["description", "labels", "ttlInDays"] {
            match doc.get(key) {
                Some(v) => fields.doc.insert(key.into(), v.clone()),
                None => fields.doc.remove(key),
            };
        }
        let deps = ups.dependencies.clone();
        ups = ups.updated(fields, caller, deps);
        storage::audiences::update(&mut tx, tenant, &ups).await?;
    }
    let updated = storage::ais::get_external(&mut tx, tenant, row.id, false)
        .await?
        .ok_or_else(|| not_found("external audience", id))?;
    tx.commit().await?;
    Ok(render_external(&updated))
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

/// The stages of a run as first written: both pending.
fn initial_details() -> Value {
    json!([
        {"stage": "DATASET_INGEST", "status": "PENDING", "flowRunId": Uuid::new_v4()},
        {"stage": "PROFILE_STORE_INGEST", "status": "PENDING", "flowRunId": Uuid::new_v4()},
    ])
}

pub fn render_run(run: &RunRow) -> Value {
    let mut out = json!({
        "runId": run.id,
        "audienceId": run.audience_id,
        "name": run.name,
        "type": if run.kind == "extend" { "TTL_EXTENSION" } else { "INGESTION" },
        "status": run.status,
        "dataFilterStartTime": run.filter_start,
        "dataFilterEndTime": run.filter_end,
        "createdBy": run.created_by,
        "createdAt": epoch_ms(run.created_at),
        "updatedAt": epoch_ms(run.updated_at),
        "details": parse_json(&run.details),
    });
    if let Some(m) = &run.message {
        out["message"] = json!(m);
    }
    out
}

/// Starts a run (or, for extend-ttl, a re-ingestion) of a locked audience after the guardrails.
#[allow(clippy::too_many_arguments)]
async fn queue_run(
    tx: &mut PgConnection,
    cfg: &AisConfig,
    tenant: &Tenant,
    caller: &Caller,
    row: &ExternalRow,
    kind: &str,
    window: (i64, i64),
    now: DateTime<Utc>,
) -> Result<RunRow, ApiError> {
    storage::ais::lock_sandbox_runs(tx, tenant).await?;
    let day_start = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|d| d.and_utc())
        .unwrap_or(now);
    let counts = storage::ais::run_counts(tx, tenant, row.id, day_start).await?;
    let refuse = |m: String| Err(ApiError::new(Code::AisUnprocessable, m));
    if counts.processing {
        return refuse(
            "Another run of this external audience is still PROCESSING; wait for it to end.".into(),
        );
    }
    if kind == "run" {
        if counts.for_audience >= cfg.runs_per_audience {
            return refuse(format!(
                "The external audience has reached its limit of {} runs.",
                cfg.runs_per_audience
            ));
        }
        if counts.in_sandbox_since >= cfg.runs_per_sandbox_per_day {
            return refuse(format!(
                "The sandbox has reached its limit of {} runs per UTC day.",
                cfg.runs_per_sandbox_per_day
            ));
        }
    }
    let id = Uuid::new_v4();
    let name = match kind {
        "extend" => format!("{} ttl-extension {}", row.name, row.run_count + 1),
        _ => format!("{} run {}", row.name, row.run_count + 1),
    };
    let details = initial_details().to_string();
    storage::ais::insert_run(
        tx,
        tenant,
        &NewRun {
            id,
            audience_id: row.id,
            name: &name,
            kind,
            filter_start: window.0,
            filter_end: window.1,
            details: &details,
        },
        caller,
        now,
    )
    .await?;
    jobs::insert(tx, tenant, jobs::INGEST, id, "dataset", now).await?;
    storage::ais::get_run(tx, tenant, row.id, id)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("run vanished")))
}

pub async fn start_run(
    pool: &PgPool,
    cfg: &AisConfig,
    tenant: &Tenant,
    caller: &Caller,
    id: &str,
    body: Value,
) -> Result<Value, ApiError> {
    let now = cfg.clock.now();
    let window = external::run_window(&body, now.timestamp())?;
    retry::on_conflict(|| async {
        let mut tx = pool.begin().await?;
        let row = ready_external(&mut tx, tenant, id, true).await?;
        let run = queue_run(&mut tx, cfg, tenant, caller, &row, "run", window, now).await?;
        tx.commit().await?;
        Ok(render_run(&run))
    })
    .await
}

/// Re-ingests the data of the last successful run, which restarts the TTL when it succeeds.
pub async fn extend_ttl(
    pool: &PgPool,
    cfg: &AisConfig,
    tenant: &Tenant,
    caller: &Caller,
    id: &str,
) -> Result<Value, ApiError> {
    retry::on_conflict(|| extend_ttl_once(pool, cfg, tenant, caller, id)).await
}

async fn extend_ttl_once(
    pool: &PgPool,
    cfg: &AisConfig,
    tenant: &Tenant,
    caller: &Caller,
    id: &str,
) -> Result<Value, ApiError> {
    let now = cfg.clock.now();
    let mut tx = pool.begin().await?;
    let row = ready_external(&mut tx, tenant, id, true).await?;
    let last = match row.last_success_run_id {
        Some(run_id) => storage::ais::get_run(&mut tx, tenant, row.id, run_id).await?,
        None => None,
    };
    let Some(last) = last else {
        return Err(ApiError::new(
            Code::AisUnprocessable,
            "The external audience has no successful run, so there is no data whose TTL could be extended.",
        ));
    };
    let window = (last.filter_start, last.filter_end);
    queue_run(&mut tx, cfg, tenant, caller, &row, "extend", window, now).await?;
    tx.commit().await?;
    Ok(json!({ "audienceId": row.id, "name": row.name }))
}

pub async fn get_run(
    pool: &PgPool,
    tenant: &Tenant,
    audience_id: &str,
    run_id: &str,
) -> Result<Value, ApiError> {
    let mut conn = pool.acquire().await?;
    let row = ready_external(&mut conn, tenant, audience_id, false).await?;
    let run_uuid = parse_uuid(run_id, "run")?;
    let run = storage::ais::get_run(&mut conn, tenant, row.id, run_uuid)
        .await?
        .ok_or_else(|| not_found("run", run_id))?;
    Ok(render_run(&run))
}

pub async fn list_runs(
    pool: &PgPool,
    tenant: &Tenant,
    audience_id: &str,
    limit: i64,
    sort: RunSort,
) -> Result<Value, ApiError> {
    let row = {
        let mut conn = pool.acquire().await?;
        ready_external(&mut conn, tenant, audience_id, false).await?
    };
    let (runs, total) = storage::ais::list_runs(pool, tenant, row.id, limit, sort).await?;
    Ok(json!({
        "runs": runs.iter().map(render_run).collect::<Vec<_>>(),
        "_page": { "limit": limit, "count": runs.len(), "totalCount": total },
    }))
}

/// How long data lives after a successful run.
pub fn ttl_after(now: DateTime<Utc>, days: i64) -> DateTime<Utc> {
    now + Duration::days(days)
}
