//! UPS audience handlers: parse the request, call the use case, shape the response.

use actix_web::{
    delete, get,
    http::{header, StatusCode},
    patch, post, put, web, HttpRequest, HttpResponse,
};
use serde_json::{json, Map, Value};

use super::{json_body, respond, schemas, AppState};
use crate::{
    domain::{listing::ListQuery, Caller, Tenant},
    error::{ApiError, Code},
    service::audiences::{self as service, IfMatch},
};

/// The `If-Match` header: `*` or a list of entity tags (quotes added when a client left them off).
fn if_match(req: &HttpRequest) -> Option<IfMatch> {
    let raw = req.headers().get(header::IF_MATCH)?.to_str().ok()?.trim();
    if raw == "*" {
        return Some(IfMatch::Any);
    }
    Some(IfMatch::Tags(entity_tags(raw)))
}

fn entity_tags(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            let t = t.strip_prefix("W/").unwrap_or(t);
            if t.starts_with('"') {
                t.to_owned()
            } else {
                format!("\"{t}\"")
            }
        })
        .collect()
}

fn none_match(req: &HttpRequest, etag: &str) -> bool {
    let Some(raw) = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    raw.trim() == "*" || entity_tags(raw).iter().any(|t| t == etag)
}

/// List audiences.
#[utoipa::path(
    tag = "Audiences",
    operation_id = "listAudiences",
    summary = "List audiences",
    description = "A page of the sandbox's audiences, `start`/`limit` offset paging. Without any `property` filter, `inactive` audiences are left out. Query strings are form-encoded (`+` is a space, `==` may arrive as `%3D%3D`).",
    params(
        ("start" = Option<i64>, Query, description = "Offset of the first audience, >= 0 (default 0)"),
        ("limit" = Option<i64>, Query, description = "Page size, 1..1000 (default 20)"),
        ("sort" = Option<String>, Query, description = "`field:asc` or `field:desc`; fields: name, creationTime, updateTime, createEpoch, updateEpoch, lifecycleState, audienceId, namespace (default updateTime:desc; ties broken by id)"),
        ("property" = Option<Vec<String>>, Query, description = "`field==value` or `field!=value`, repeatable; fields: id, audienceId, name, namespace, type, originName, lifecycleState, datasetId, createdBy"),
        ("name" = Option<String>, Query, description = "Case-insensitive substring of the name"),
        ("description" = Option<String>, Query, description = "Case-insensitive substring of the description"),
        ("entityType" = Option<String>, Query, description = "Matches `schema.name`; an audience without a schema counts as `_xdm.context.profile`"),
    ),
    responses(
        (status = 200, description = "A page of audiences", body = schemas::AudienceList),
        (status = 400, description = "A query parameter is invalid", body = schemas::ErrorBody),
    )
)]
#[get("/audiences")]
pub async fn list_audiences(
    state: web::Data<AppState>,
    tenant: Tenant,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q = ListQuery::parse(req.query_string())?;
    let page = service::list(&state.pool, &tenant, &q).await?;
    let page_size = (page.total - q.start).clamp(0, q.limit);
    let next = q.start + page_size;
    let mut page_info = json!({
        "totalCount": page.total,
        "totalPages": (page.total + q.limit - 1) / q.limit,
        "sortField": q.sort.api_name(),
        "sort": q.direction(),
        "pageSize": page_size,
        "limit": q.limit,
        "start": q.start,
    });
    let mut links = Map::new();
    if page_size > 0 && next < page.total {
        page_info["next"] = json!(next);
        links.insert(
            "next".into(),
            json!({ "href": format!("@/audiences?{}", q.link_query(next)) }),
        );
    }
    let body = format!(
        "{{\"children\":[{}],\"_page\":{},\"_links\":{}}}",
        page.children,
        page_info,
        Value::Object(links)
    );
    Ok(respond::json_text(StatusCode::OK, body))
}

/// Create an audience.
#[utoipa::path(
    tag = "Audiences",
    operation_id = "createAudience",
    summary = "Create an audience",
    description = "Creates a platform-generated (`SegmentDefinition`) or externally generated (`ExternalSegment`) audience. System fields sent by the client are ignored; unknown fields are kept.",
    request_body(content = schemas::Audience, content_type = "application/json"),
    responses(
        (status = 200, description = "The created audience", body = schemas::Audience, headers(("ETag" = String, description = "The audience's _etag"))),
        (status = 400, description = "The body is invalid", body = schemas::ErrorBody),
        (status = 409, description = "(namespace, audienceId) is taken in this sandbox", body = schemas::ErrorBody),
    )
)]
#[post("/audiences")]
pub async fn create_audience(
    state: web::Data<AppState>,
    tenant: Tenant,
    caller: Caller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body = json_body(&body, Code::BadBody)?;
    let written = service::create(&state.pool, &tenant, &caller, body).await?;
    Ok(respond::audience(
        StatusCode::OK,
        written.body,
        &written.etag,
    ))
}

/// Get several audiences at once.
#[utoipa::path(
    tag = "Audiences",
    operation_id = "bulkGetAudiences",
    summary = "Get several audiences by id",
    request_body(content = schemas::BulkGetRequest, content_type = "application/json"),
    responses(
        (status = 207, description = "One result per requested id: the audience, or an error body", body = schemas::BulkGetResponse),
        (status = 400, description = "No ids or more than 100", body = schemas::ErrorBody),
        (status = 404, description = "None of the ids was found", body = schemas::ErrorBody),
    )
)]
#[post("/audiences/bulk-get")]
pub async fn bulk_get_audiences(
    state: web::Data<AppState>,
    tenant: Tenant,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body = json_body(&body, Code::BadBody)?;
    let ids = service::bulk_get_ids(&body)?;
    let found = service::bulk_get(&state.pool, &tenant, &ids).await?;
    if found.iter().all(|(_, body)| body.is_none()) {
        return Err(ApiError::new(
            Code::BulkGetNoneFound,
            "None of the requested audiences was found.",
        ));
    }
    let mut results = Vec::with_capacity(found.len());
    for (id, audience) in found {
        let value = match audience {
            Some(body) => body,
            None => not_found_entry(&id),
        };
        results.push(format!("{}:{}", Value::String(id), value));
    }
    let body = format!("{{\"results\":{{{}}}}}", results.join(","));
    Ok(respond::json_text(StatusCode::MULTI_STATUS, body))
}

fn not_found_entry(id: &str) -> String {
    let error = ApiError::audience_not_found(id);
    let spec = error.code.spec();
    json!({
        "requestId": super::context::request_id(),
        "type": format!("https://ns.adobe.com/aep/errors/{}", spec.wire),
        "title": error.message,
        "status": spec.status,
        "errors": { spec.status.to_string(): [ { "code": spec.wire, "message": error.message } ] },
    })
    .to_string()
}

/// Get an audience.
#[utoipa::path(
    tag = "Audiences",
    operation_id = "getAudience",
    summary = "Get an audience",
    params(
        ("id" = String, Path, description = "The audience's `id` (not its `audienceId`)"),
        ("If-None-Match" = Option<String>, Header, description = "An `_etag`; when it is current the answer is 304 without a body"),
    ),
    responses(
        (status = 200, description = "The audience", body = schemas::Audience, headers(("ETag" = String))),
        (status = 304, description = "The audience still has the given etag"),
        (status = 404, description = "No such audience in this sandbox", body = schemas::ErrorBody),
    )
)]
#[get("/audiences/{id}")]
pub async fn get_audience(
    state: web::Data<AppState>,
    tenant: Tenant,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let stored = service::get(&state.pool, &tenant, &id).await?;
    if none_match(&req, &stored.etag) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, stored.etag))
            .finish());
    }
    Ok(respond::audience(StatusCode::OK, stored.body, &stored.etag))
}

/// Replace an audience.
#[utoipa::path(
    tag = "Audiences",
    operation_id = "replaceAudience",
    summary = "Replace an audience",
    description = "Full replacement of the client fields. `namespace`, `audienceId` and `type` are immutable: left out they are kept, changed they are refused. Lifecycle changes follow the allowed transitions.",
    params(
        ("id" = String, Path, description = "The audience's `id`"),
        ("If-Match" = Option<String>, Header, description = "The `_etag` the change is based on, or `*`"),
    ),
    request_body(content = schemas::Audience, content_type = "application/json"),
    responses(
        (status = 200, description = "The replaced audience", body = schemas::Audience, headers(("ETag" = String))),
        (status = 400, description = "The body is invalid, an immutable field changed, or the lifecycle change is not allowed", body = schemas::ErrorBody),
        (status = 404, description = "No such audience in this sandbox", body = schemas::ErrorBody),
        (status = 412, description = "If-Match does not match the current _etag", body = schemas::ErrorBody),
    )
)]
#[put("/audiences/{id}")]
pub async fn replace_audience(
    state: web::Data<AppState>,
    tenant: Tenant,
    caller: Caller,
    id: web::Path<String>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body = json_body(&body, Code::BadBody)?;
    let written =
        service::replace(&state.pool, &tenant, &caller, &id, if_match(&req), body).await?;
    Ok(respond::audience(
        StatusCode::OK,
        written.body,
        &written.etag,
    ))
}

/// Patch an audience.
#[utoipa::path(
    tag = "Audiences",
    operation_id = "patchAudience",
    summary = "Patch an audience (RFC 6902)",
    description = "A JSON Patch array: add, remove, replace, move, copy, test. System and immutable fields cannot be changed (`test` may read them). The patched audience is validated as a whole.",
    params(
        ("id" = String, Path, description = "The audience's `id`"),
        ("If-Match" = Option<String>, Header, description = "The `_etag` the change is based on, or `*`"),
    ),
    request_body(content = Vec<schemas::PatchOperation>, content_type = "application/json"),
    responses(
        (status = 200, description = "The patched audience", body = schemas::Audience, headers(("ETag" = String))),
        (status = 400, description = "The patch is malformed, a test failed, or the result is invalid", body = schemas::ErrorBody),
        (status = 404, description = "No such audience in this sandbox", body = schemas::ErrorBody),
        (status = 412, description = "If-Match does not match the current _etag", body = schemas::ErrorBody),
    )
)]
#[patch("/audiences/{id}")]
pub async fn patch_audience(
    state: web::Data<AppState>,
    tenant: Tenant,
    caller: Caller,
    id: web::Path<String>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let ops = json_body(&body, Code::BadBody)?;
    let written = service::patch(&state.pool, &tenant, &caller, &id, if_match(&req), ops).await?;
    Ok(respond::audience(
        StatusCode::OK,
        written.body,
        &written.etag,
    ))
}

/// Delete an audience.
#[utoipa::path(
    tag = "Audiences",
    operation_id = "deleteAudience",
    summary = "Delete an audience",
    params(
        ("id" = String, Path, description = "The audience's `id`"),
        ("If-Match" = Option<String>, Header, description = "The `_etag` the deletion is based on, or `*`"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Other audiences that are not inactive depend on it", body = schemas::ErrorBody),
        (status = 404, description = "No such audience in this sandbox", body = schemas::ErrorBody),
        (status = 412, description = "If-Match does not match the current _etag", body = schemas::ErrorBody),
    )
)]
#[delete("/audiences/{id}")]
pub async fn delete_audience(
    state: web::Data<AppState>,
    tenant: Tenant,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    service::delete(&state.pool, &tenant, &id, if_match(&req)).await?;
    Ok(HttpResponse::NoContent().finish())
}
