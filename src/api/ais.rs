//! AIS handlers: parse the request, call the use case, shape the response.

use actix_web::{
    delete, get,
    http::{header, StatusCode},
    patch, post, web, HttpRequest, HttpResponse,
};
use serde::Serialize;

use super::{ais_schemas as s, json_body, respond, schemas::ErrorBody, AppState, Family};
use crate::{
    domain::{
        external::{ExternalAudiencePatch, ExternalAudienceRequest, MetaOnlyRequest},
        run::{self, RunRequest, RunSort},
        Caller, Tenant,
    },
    error::{ApiError, Code},
    service::ais as service,
};

const TAG: &str = "Audience ingestion";
/// The media type the meta-only create must be asked for.
pub const META_ONLY_ACCEPT: &str = "application/vnd.adobe.external.audiences+json";

fn ok(status: StatusCode, body: &impl Serialize) -> Result<HttpResponse, ApiError> {
    let text = serde_json::to_string(body).map_err(ApiError::internal)?;
    Ok(respond::json_text(status, text))
}

pub(super) fn query_param(req: &HttpRequest, name: &str) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Whether `Accept` asks for the external audiences media type, version 2.
fn accepts_meta_only(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let essence = parts.next().unwrap_or_default();
            essence.eq_ignore_ascii_case(META_ONLY_ACCEPT)
                && parts.any(|p| {
                    p.split_once('=').is_some_and(|(k, v)| {
                        k.trim().eq_ignore_ascii_case("version")
                            && v.trim().trim_matches('"') == "2"
                    })
                })
        })
}

/// Create a meta-only audience.
#[utoipa::path(
    tag = TAG,
    operation_id = "createAudienceMetaOnly",
    summary = "Create a meta-only audience",
    description = "Creates an `ExternalSegment` UPS audience, published, without data. Requires `createAudienceMetaOnly=true` and `Accept: application/vnd.adobe.external.audiences+json; version=2`.",
    params(
        ("createAudienceMetaOnly" = bool, Query, description = "Must be `true`"),
        ("Accept" = String, Header, description = "`application/vnd.adobe.external.audiences+json; version=2`"),
    ),
    request_body(content = MetaOnlyRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The created audience", body = s::MetaOnlyResponse),
        (status = 400, description = "The query flag is missing or the body is invalid", body = ErrorBody),
        (status = 406, description = "The Accept header does not ask for the external audiences media type, version 2", body = ErrorBody),
        (status = 409, description = "(namespace, audienceId) is taken in this sandbox", body = ErrorBody),
    )
)]
#[post("/audiences")]
pub async fn create_meta_only(
    state: web::Data<AppState>,
    tenant: Tenant,
    caller: Caller,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    if !accepts_meta_only(&req) {
        return Err(ApiError::new(
            Code::AisNotAcceptable,
            format!("Header 'Accept' must be '{META_ONLY_ACCEPT}; version=2'."),
        ));
    }
    let flag = query_param(&req, "createAudienceMetaOnly");
    if !flag.is_some_and(|f| f.eq_ignore_ascii_case("true")) {
        return Err(ApiError::ais_invalid(
            "Query parameter 'createAudienceMetaOnly' must be 'true'.",
        ));
    }
    let request = MetaOnlyRequest::from_body(json_body(&body, Family::Ais, &state.limits)?)?;
    let created =
        service::create_meta_only(&state.pool, &state.ais, &tenant, &caller, request).await?;
    ok(StatusCode::OK, &s::MetaOnlyResponse::from(&created))
}

/// Create an external audience.
#[utoipa::path(
    tag = TAG,
    operation_id = "createExternalAudience",
    summary = "Create an external audience",
    description = "Validates and records the request and answers at once; the audience is created by the background worker. Poll the operation for its `audienceId`.",
    request_body(content = ExternalAudienceRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted: the operation id and the normalised request", body = s::OperationAccepted),
        (status = 400, description = "A field is invalid (the message names it)", body = ErrorBody),
        (status = 409, description = "An external audience with this name or customAudienceId exists in this sandbox", body = ErrorBody),
    )
)]
#[post("/external-audience")]
pub async fn create_external(
    state: web::Data<AppState>,
    tenant: Tenant,
    caller: Caller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let request =
        ExternalAudienceRequest::from_body(json_body(&body, Family::Ais, &state.limits)?)?;
    let accepted =
        service::create_external(&state.pool, &state.ais, &tenant, &caller, request).await?;
    ok(
        StatusCode::ACCEPTED,
        &s::OperationAccepted {
            operation_id: accepted.operation_id,
            operation_details: accepted.spec,
        },
    )
}

/// Get the status of a creation operation.
#[utoipa::path(
    tag = TAG,
    operation_id = "getExternalAudienceOperation",
    summary = "Get an external audience's creation operation",
    description = "The status of the asynchronous creation: `PROCESSING`, then `SUCCESS` with the `audienceId` (the `id` of the UPS audience it created) or `FAILED` with a reason. The background worker carries the operation forward; it survives restarts.",
    params(("operationId" = String, Path, description = "The id the create answered")),
    responses(
        (status = 200, description = "The operation: PROCESSING, SUCCESS (with audienceId) or FAILED (with reason)", body = s::Operation),
        (status = 404, description = "No such operation in this sandbox", body = ErrorBody),
    )
)]
#[get("/external-audience/operations/{operationId}")]
pub async fn get_operation(
    state: web::Data<AppState>,
    tenant: Tenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let op = service::get_operation(&state.pool, &tenant, &path).await?;
    ok(StatusCode::OK, &s::Operation::from(op))
}

/// Extend an external audience's TTL.
#[utoipa::path(
    tag = TAG,
    operation_id = "extendExternalAudienceTtl",
    summary = "Extend an external audience's TTL",
    description = "Re-ingests the data of the last successful run (same filter window); when that run succeeds the TTL starts again.",
    params(("audienceId" = String, Path, description = "The external audience's id")),
    responses(
        (status = 200, description = "The re-ingestion is queued", body = s::ExtendTtlResponse),
        (status = 404, description = "No such external audience in this sandbox", body = ErrorBody),
        (status = 422, description = "Nothing to extend (no successful run) or a run is in progress", body = ErrorBody),
    )
)]
#[post("/external-audience/extend-ttl/{audienceId}")]
pub async fn extend_ttl(
    state: web::Data<AppState>,
    tenant: Tenant,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let audience = service::extend_ttl(&state.pool, &state.ais, &tenant, &caller, &path).await?;
    ok(
        StatusCode::OK,
        &s::ExtendTtlResponse {
            audience_id: audience.id,
            name: audience.name,
        },
    )
}

/// Get an external audience.
#[utoipa::path(
    tag = TAG,
    operation_id = "getExternalAudience",
    summary = "Get an external audience",
    description = "The external audience as created and patched, with its source, fields, TTL and, after a successful run, its profile count. Not part of Adobe's published API; offered so clients can read back what they sent.",
    params(("audienceId" = String, Path, description = "The external audience's id")),
    responses(
        (status = 200, description = "The external audience", body = s::ExternalAudience),
        (status = 404, description = "No such external audience in this sandbox", body = ErrorBody),
    )
)]
#[get("/external-audience/{audienceId}")]
pub async fn get_external(
    state: web::Data<AppState>,
    tenant: Tenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let audience = service::get_external(&state.pool, &tenant, &path).await?;
    ok(StatusCode::OK, &s::ExternalAudience::from(audience))
}

/// Update an external audience.
#[utoipa::path(
    tag = TAG,
    operation_id = "patchExternalAudience",
    summary = "Update an external audience",
    description = "A plain partial object: `description`, `labels`, `fields` (merged by name) and `ttlInDays`. `name` and `expressActivation` are immutable.",
    params(("audienceId" = String, Path, description = "The external audience's id")),
    request_body(content = ExternalAudiencePatch, content_type = "application/json"),
    responses(
        (status = 200, description = "The updated external audience", body = s::ExternalAudience),
        (status = 400, description = "An immutable or unknown field, or an invalid result", body = ErrorBody),
        (status = 404, description = "No such external audience in this sandbox", body = ErrorBody),
    )
)]
#[patch("/external-audience/{audienceId}")]
pub async fn patch_external(
    state: web::Data<AppState>,
    tenant: Tenant,
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let patch = ExternalAudiencePatch::from_body(json_body(&body, Family::Ais, &state.limits)?)?;
    let audience =
        service::patch_external(&state.pool, &state.ais, &tenant, &caller, &path, patch).await?;
    ok(StatusCode::OK, &s::ExternalAudience::from(audience))
}

/// Delete an external audience.
#[utoipa::path(
    tag = TAG,
    operation_id = "deleteExternalAudience",
    summary = "Delete an external audience",
    description = "Also deletes its UPS audience and its runs; from then on it has no members (their rows are removed in the background).",
    params(("audienceId" = String, Path, description = "The external audience's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Other audiences that are not inactive depend on its UPS audience", body = ErrorBody),
        (status = 404, description = "No such external audience in this sandbox", body = ErrorBody),
    )
)]
#[delete("/external-audience/{audienceId}")]
pub async fn delete_external(
    state: web::Data<AppState>,
    tenant: Tenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    service::delete_external(&state.pool, &tenant, &path).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Start an ingestion run.
#[utoipa::path(
    tag = TAG,
    operation_id = "startExternalAudienceRun",
    summary = "Start an ingestion run",
    description = "Queues a run that reads the blob `<cloudType or DLZ>/<path>` of the sandbox's own landing zone (a file, or every `.csv` directly in a folder): the files modified within [dataFilterStartTime, dataFilterEndTime].",
    params(("audienceId" = String, Path, description = "The external audience's id")),
    request_body(content = RunRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The run, PROCESSING", body = s::Run),
        (status = 400, description = "The body is invalid", body = ErrorBody),
        (status = 404, description = "No such external audience in this sandbox", body = ErrorBody),
        (status = 422, description = "A run is in progress, or a guardrail (runs per audience, runs per sandbox per UTC day) is reached", body = ErrorBody),
    )
)]
#[post("/external-audience/{audienceId}/runs")]
pub async fn start_run(
    state: web::Data<AppState>,
    tenant: Tenant,
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let request = RunRequest::from_body(json_body(&body, Family::Ais, &state.limits)?)?;
    let run = service::start_run(&state.pool, &state.ais, &tenant, &caller, &path, request).await?;
    ok(StatusCode::OK, &s::Run::from(run))
}

/// List an external audience's runs.
#[utoipa::path(
    tag = TAG,
    operation_id = "listExternalAudienceRuns",
    summary = "List ingestion runs",
    description = "The audience's runs, newest first by default. `limit` 1..40 (default 20); `sortBy` one of `createdAt`, `-createdAt`, `name`, `-name`. `_page` gives `limit`, `count` and `totalCount`.",
    params(
        ("audienceId" = String, Path, description = "The external audience's id"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 40, description = "1..40 (default 20)"),
        ("sortBy" = inline(Option<RunSort>), Query, description = "createdAt, -createdAt (default), name or -name"),
    ),
    responses(
        (status = 200, description = "A page of runs", body = s::RunList),
        (status = 400, description = "A query parameter is invalid", body = ErrorBody),
        (status = 404, description = "No such external audience in this sandbox", body = ErrorBody),
    )
)]
#[get("/external-audience/{audienceId}/runs")]
pub async fn list_runs(
    state: web::Data<AppState>,
    tenant: Tenant,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (limit, sort) = run::run_list_params(
        query_param(&req, "limit").as_deref(),
        query_param(&req, "sortBy").as_deref(),
    )?;
    let (runs, total) = service::list_runs(&state.pool, &tenant, &path, limit, sort).await?;
    ok(StatusCode::OK, &s::RunList::new(runs, limit, total))
}

/// Get an ingestion run.
#[utoipa::path(
    tag = TAG,
    operation_id = "getExternalAudienceRun",
    summary = "Get an ingestion run",
    description = "A run's `status` (`PROCESSING`, `SUCCESS`, `FAILED`) and its `details`: one entry per stage (`DATASET_INGEST`, `PROFILE_STORE_INGEST`) with status, counts, timing and, when it failed, the errors. Counts grow while the run is processing.",
    params(
        ("audienceId" = String, Path, description = "The external audience's id"),
        ("runId" = String, Path, description = "The run's id"),
    ),
    responses(
        (status = 200, description = "The run with its stages", body = s::Run),
        (status = 404, description = "No such external audience or run in this sandbox", body = ErrorBody),
    )
)]
#[get("/external-audience/{audienceId}/runs/{runId}")]
pub async fn get_run(
    state: web::Data<AppState>,
    tenant: Tenant,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (audience_id, run_id) = path.into_inner();
    let run = service::get_run(&state.pool, &tenant, &audience_id, &run_id).await?;
    ok(StatusCode::OK, &s::Run::from(run))
}
