//! UPS audience handlers: parse the request, call the use case, shape the response.

use actix_web::{
    delete, get,
    http::{header, StatusCode},
    patch, post, put, web, HttpRequest, HttpResponse,
};
use serde_json::{json, Map, Value};

use super::{examples, json_body, respond, schemas, AppState, Family};
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
    description = "A page of the sandbox's audiences with `start`/`limit` offset paging, sorted, and filtered by exact `property` matches and case-insensitive `name`/`description` substrings. Without any `property` filter, `inactive` audiences are left out (as the real service does); with one they are included. `_page.next` and `_links.next` are present only when another page follows; `_links.next.href` keeps the caller's filters and adds a `cursor`: following it reads the next page from the index at its position. Query strings are form-encoded (`+` is a space, `==` may arrive as `%3D%3D`).

Differs from Adobe's document (deliberate, see API.md section 2):
- `parameter property (query) type`: `property` may be repeated (`property=type==ExternalSegment&property=lifecycleState!=draft`) and every filter must hold, so it is an array of strings; a single `property` is sent exactly as Adobe's.",
    params(
        ("start" = Option<i64>, Query, minimum = 0, description = "Offset of the first audience, >= 0 (default 0)", example = 0),
        ("cursor" = Option<String>, Query, description = "Opaque: the position `_links.next.href` carries so that the next page is read from where the last one ended (as cheap deep in the list as at its head, and not shifted by audiences created meanwhile). Send it only as the link gives it, with the link's `start`; a cursor altered or made for another sandbox, sort, filter or `start` is a 400 naming `cursor`. Without it, `start` alone pages as before"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Page size, 1..1000 (default 20)", example = 20),
        ("sort" = Option<String>, Query, description = "`field:asc` or `field:desc`; fields: `name`, `creationTime`, `updateTime`, `createEpoch`, `updateEpoch`, `lifecycleState`, `audienceId`, `namespace` (default `updateTime:desc`; ties broken by `id`, so pages never repeat or skip)", example = "updateTime:desc"),
        ("property" = Option<Vec<String>>, Query, explode = true, description = "`field==value` (exact) or `field!=value`, for example `audienceId==test-audience-id`; repeatable, all must hold; fields: `id`, `audienceId`, `name`, `namespace`, `type`, `originName`, `lifecycleState`, `datasetId`, `createdBy`"),
        ("name" = Option<String>, Query, description = "Case-insensitive substring of the name"),
        ("description" = Option<String>, Query, description = "Case-insensitive substring of the description"),
        ("entityType" = Option<String>, Query, description = "Matches `schema.name` exactly; an audience without a schema counts as `_xdm.context.profile`"),
    ),
    responses(
        (status = 200, description = "A page of audiences", body = schemas::AudienceList),
        (status = 400, description = "A query parameter is invalid: unknown sort field, bad operator, malformed `property`, negative `start`, `limit` out of range (the message names the parameter)", body = schemas::ErrorBody),
    )
)]
#[get("/audiences")]
pub async fn list_audiences(
    state: web::Data<AppState>,
    tenant: Tenant,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q = ListQuery::parse(req.query_string(), &state.limits)?;
    // The server's stored secret also keys the list cursors (they are bound to it by a MAC).
    let secret = state.landing_keys.secret(&state.pool).await?;
    let listed = service::list(&state.pool, secret, &tenant, &q).await?;
    let page = listed.page;
    // The page may end before `limit` when its byte budget is spent; `next` follows what was
    // sent, so a client that follows it sees every audience once.
    let page_size = page.count;
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
        // The cursor (URL-safe base64) lets the next page be read from the index at its
        // position; `start` stays for clients that read it.
        let cursor = listed
            .next_cursor
            .map(|c| format!("&cursor={c}"))
            .unwrap_or_default();
        links.insert(
            "next".into(),
            json!({ "href": format!("@/audiences?{}{cursor}", q.link_query(next)) }),
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
    description = "Creates a platform-generated (`SegmentDefinition`, from a PQL `expression`) or externally generated (`ExternalSegment`) audience and answers it whole, with its `_etag` also in `ETag`. `name` is required. Read-only fields sent by the client are ignored; fields the server does not know are kept and returned. Defaults: platform audiences get `audienceId` = `id`, `namespace` `AEPSegments`, `originName` `REAL_TIME_CUSTOMER_PROFILE`, the profile schema and batch evaluation; external ones keep the client's `audienceId` (one is generated when absent) and get `originName` `CUSTOM_UPLOAD`. `lifecycleState` defaults to `published`. Every `inSegment(\"<id>\")` in the expression must name an audience of the sandbox.

Differs from Adobe's document (deliberate, see API.md section 2):
- `status 201`: a create answers 200, as the service and its guides do; Adobe's document says 201.",
    request_body(content = schemas::Audience, content_type = "application/json", examples(
        ("Platform-generated audience" = (summary = "A PQL audience on profiles", value = json!(examples::create_platform_request()))),
        ("Externally generated audience" = (summary = "An audience whose members come from a dataset", value = json!(examples::create_external_request()))),
    )),
    responses(
        (status = 200, description = "The created audience", body = schemas::Audience, headers(("ETag" = String, description = "The audience's `_etag`")), examples(
            ("Platform-generated audience" = (value = json!(examples::platform_audience()))),
            ("Externally generated audience" = (value = json!(examples::external_audience()))),
        )),
        (status = 400, description = "The body is not a JSON object, a field has the wrong type, `name` is missing (`UPLIB-101206-500`), or the audience is invalid: unknown `type` or `lifecycleState`, `deleted`/`archived`, an `inSegment` reference to an unknown or unpublished audience or a cycle (`UPAPI-113434-400`)", body = schemas::ErrorBody),
        (status = 409, description = "(`namespace`, `audienceId`) is already taken in this sandbox (`UPAPI-113409-409`)", body = schemas::ErrorBody),
    )
)]
#[post("/audiences")]
pub async fn create_audience(
    state: web::Data<AppState>,
    tenant: Tenant,
    caller: Caller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body = json_body(&body, Family::Ups, &state.limits)?;
    let written = service::create(
        &state.pool,
        &state.limits,
        &state.clock,
        &tenant,
        &caller,
        body,
    )
    .await?;
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
    description = "Reads 1 to 100 audiences by `id` in one call. The body lists ids as objects (`{\"id\": \"...\"}`, as Adobe's guide does) or as bare strings. The answer maps every requested id to its audience, or to a 404 error body when that id is not found in the sandbox; when none is found the whole call answers 404.",
    request_body(content = schemas::BulkGetRequest, content_type = "application/json"),
    responses(
        (status = 207, description = "One result per requested id: the audience, or an error body", body = schemas::BulkGetResponse),
        (status = 400, description = "The body is not valid (`UPLIB-101206-500`), or it holds no ids or more than 100 (`UPAPI-113015-400`), or an id is longer than `MAX_ID_CHARS` or the audiences found are more than `MAX_LIST_PAGE_BYTES` of JSON (4 MiB by default; `UPAPI-113414-400`: ask for fewer at once)", body = schemas::ErrorBody),
        (status = 404, description = "None of the ids was found (`UPAPI-113000-404`)", body = schemas::ErrorBody),
    )
)]
#[post("/audiences/bulk-get")]
pub async fn bulk_get_audiences(
    state: web::Data<AppState>,
    tenant: Tenant,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body = json_body(&body, Family::Ups, &state.limits)?;
    let ids = service::bulk_get_ids(&body, &state.limits)?;
    let found = service::bulk_get(&state.pool, &state.limits, &tenant, &ids).await?;
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
    respond::error_json(error.code, &error.message).to_string()
}

/// Get an audience.
#[utoipa::path(
    tag = "Audiences",
    operation_id = "getAudience",
    summary = "Get an audience",
    description = "One audience by its `id` (not its `audienceId`), with its `_etag` also in `ETag`. With `If-None-Match` holding the current etag (or `*`) the answer is 304 without a body.",
    params(
        ("id" = String, Path, description = "The audience's `id` (not its `audienceId`)", example = "60ccea95-1435-4180-97a5-58af4aa285ab"),
        ("If-None-Match" = Option<String>, Header, nullable = false, description = "One or more `_etag`s, or `*`; when one is current the answer is 304 without a body"),
    ),
    responses(
        (status = 200, description = "The audience", body = schemas::Audience, headers(("ETag" = String, description = "The audience's `_etag`")), examples(
            ("Platform-generated audience" = (value = json!(examples::platform_audience()))),
            ("Externally generated audience" = (value = json!(examples::external_audience()))),
        )),
        (status = 304, description = "The audience still has the given etag", headers(("ETag" = String, description = "The audience's `_etag`"))),
        (status = 404, description = "No such audience in this sandbox (`UPAPI-113430-404`)", body = schemas::ErrorBody),
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
    description = "Replaces all client fields of the audience (send the whole object; read-only fields sent back are ignored). `namespace`, `audienceId` and `type` are immutable: left out they are kept, changed they are refused. A `lifecycleState` change must be allowed: draft to published, published to inactive, inactive to published; deactivating needs every dependent audience inactive. With `If-Match` the write applies only to that version.

Differs from Adobe's document (deliberate, see API.md sections 1 and 2):
- `status 201`: an update answers 200, as the service and its guides do; Adobe's document says 201.
- `status 500`: 5xx answers are kept for real faults (clients retry them blindly), so none is part of the contract beyond 503 when the database does not answer.",
    params(
        ("id" = String, Path, description = "The audience's `id`", example = "4afe34ae-8c98-4513-8a1d-67ccaa54bc05"),
        ("If-Match" = Option<String>, Header, nullable = false, description = "The `_etag` the change is based on, or `*`; a stale one gives 412 and changes nothing"),
    ),
    request_body(content = schemas::Audience, content_type = "application/json", examples(
        ("Rename an external audience" = (value = json!(examples::replace_request()))),
    )),
    responses(
        (status = 200, description = "The replaced audience", body = schemas::Audience, headers(("ETag" = String, description = "The audience's new `_etag`"))),
        (status = 400, description = "The body is invalid (`UPLIB-101206-500`); an immutable field changed, or the lifecycle change or a reference is not allowed (`UPAPI-113434-400`); or deactivation is refused because active audiences depend on it (`UPAPI-113631-403`)", body = schemas::ErrorBody),
        (status = 404, description = "No such audience in this sandbox (`UPAPI-113430-404`)", body = schemas::ErrorBody),
        (status = 412, description = "`If-Match` does not match the current `_etag` (`UPAPI-113412-412`)", body = schemas::ErrorBody),
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
    let body = json_body(&body, Family::Ups, &state.limits)?;
    let written = service::replace(
        &state.pool,
        &state.limits,
        &state.clock,
        &tenant,
        &caller,
        &id,
        if_match(&req),
        body,
    )
    .await?;
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
    description = "Applies a JSON Patch array (`add`, `remove`, `replace`, `move`, `copy`, `test`) to the audience as a client sees it. Read-only and immutable fields cannot be changed (`test` may read them); a failed `test` refuses the whole patch. The patched audience is validated as a whole, like a PUT. With `If-Match` the write applies only to that version.

Differs from Adobe's document (deliberate, see API.md section 2):
- `status 201`: an update answers 200, as the service and its guides do; Adobe's document says 201.",
    params(
        ("id" = String, Path, description = "The audience's `id`", example = "4afe34ae-8c98-4513-8a1d-67ccaa54bc05"),
        ("If-Match" = Option<String>, Header, nullable = false, description = "The `_etag` the change is based on, or `*`; a stale one gives 412 and changes nothing"),
    ),
    request_body(content = Vec<schemas::PatchOperation>, content_type = "application/json", examples(
        ("Change the expression" = (value = json!(examples::patch_request()))),
    )),
    responses(
        (status = 200, description = "The patched audience", body = schemas::Audience, headers(("ETag" = String, description = "The audience's new `_etag`"))),
        (status = 400, description = "The body is not a JSON Patch array or an operation is malformed (`UPLIB-101206-500`); an operation touches a read-only or immutable field, a `test` failed, or the patched audience is invalid (`UPAPI-113434-400`); or deactivation is refused because active audiences depend on it (`UPAPI-113631-403`)", body = schemas::ErrorBody),
        (status = 404, description = "No such audience in this sandbox (`UPAPI-113430-404`)", body = schemas::ErrorBody),
        (status = 412, description = "`If-Match` does not match the current `_etag` (`UPAPI-113412-412`)", body = schemas::ErrorBody),
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
    let ops = json_body(&body, Family::Ups, &state.limits)?;
    let written = service::patch(
        &state.pool,
        &state.limits,
        &state.clock,
        &tenant,
        &caller,
        &id,
        if_match(&req),
        ops,
    )
    .await?;
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
    description = "Deletes the audience; later reads answer 404. Refused while other audiences that are not inactive depend on it. With `If-Match` the deletion applies only to that version.",
    params(
        ("id" = String, Path, description = "The audience's `id`", example = "60ccea95-1435-4180-97a5-58af4aa285ab"),
        ("If-Match" = Option<String>, Header, nullable = false, description = "The `_etag` the deletion is based on, or `*`; a stale one gives 412 and deletes nothing"),
    ),
    responses(
        (status = 204, description = "Deleted; no body"),
        (status = 400, description = "Other audiences that are not inactive depend on it (`UPAPI-113631-403`)", body = schemas::ErrorBody),
        (status = 404, description = "No such audience in this sandbox (`UPAPI-113430-404`)", body = schemas::ErrorBody),
        (status = 412, description = "`If-Match` does not match the current `_etag` (`UPAPI-113412-412`)", body = schemas::ErrorBody),
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
