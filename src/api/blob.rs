//! The Azure Blob REST subset of the landing zones, path-style as Azurite serves it:
//! `<PUBLIC_URL>/<storageAccountName>/dlz-user-container[/<blob>]?<SAS token>`.
//!
//! Put Blob, Put Block, Put Block List, Get Blob (with ranges), Get Blob Properties, Delete Blob,
//! List Blobs and Get Container Properties. Requests are authenticated by the SAS token alone (the
//! Adobe header gate does not apply here), and every answer, errors included, is Azure's: XML
//! bodies, `x-ms-*` headers, Azure's status codes and error codes. Uploads stream to a staging
//! file and become visible by a rename. See docs/LANDING.md.

use std::{
    collections::HashMap,
    io::{Read, Seek, SeekFrom},
    time::{Duration, SystemTime},
};

use actix_web::{
    body::{MessageBody, SizedStream},
    dev::{ServiceRequest, ServiceResponse},
    http::{
        header::{self, HeaderMap, HeaderValue},
        Method, StatusCode,
    },
    middleware::{from_fn, Next},
    web, Error, HttpRequest, HttpResponse, HttpResponseBuilder,
};
use base64::{engine::general_purpose::STANDARD, Engine};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use md5::{Digest, Md5};
use percent_encoding::percent_decode_str;
use quick_xml::{
    escape::{escape, partial_escape},
    events::Event,
    Reader,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{respond::AZURE_REQUEST_ID, AppState};
use crate::{
    domain::landing::{parse_blob_name, BlobName, Permission, CONTAINER_NAME, SAS_VERSION},
    error::{ApiError, Code},
    landing::{FileInfo, Kind, Listed, Upload, Zone, ZoneError},
    service::landing::{authenticate, Limits},
    telemetry,
};

/// The `x-ms-version` answered when the client names none.
const DEFAULT_VERSION: &str = SAS_VERSION;
/// Largest Put Block List body read (50,000 ids of 64 bytes fit in about 5.3 MB).
const MAX_BLOCK_LIST_BYTES: usize = 8 * 1024 * 1024;
/// Azure's limit on the blocks of one blob.
const MAX_BLOCKS: usize = 50_000;
/// Azure's limit on the decoded length of a block id.
const MAX_BLOCK_ID_BYTES: usize = 64;
/// Azure computes a range's MD5 only for ranges up to 4 MiB.
const MAX_RANGE_MD5: u64 = 4 * 1024 * 1024;
/// List Blobs pages hold at most this many items (Azure's limit).
const MAX_RESULTS: usize = 5000;
/// An upload that sends nothing for this long is abandoned.
const IDLE: Duration = Duration::from_secs(120);
/// Buffer of an upload's writes and of a download's reads.
const IO_BUFFER: usize = 256 * 1024;

/// Registers the blob routes. They are not part of the OpenAPI document: the protocol is Azure's,
/// described in docs/LANDING.md.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope(&format!("/{{account}}/{CONTAINER_NAME}"))
            .wrap(from_fn(azure_headers))
            .service(web::resource("").to(container))
            .service(web::resource("/{blob:.*}").to(blob))
            .default_service(web::to(|| async {
                Err::<HttpResponse, _>(ApiError::new(
                    Code::AzureInvalidUri,
                    "The requested URI does not represent any resource on the server.",
                ))
            })),
    );
}

/// Headers every Azure answer carries: the service version (the client's, echoed), the client's
/// request id, and the server's request id (the same as `x-request-id`).
async fn azure_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let sane = |v: &&HeaderValue| {
        v.len() <= 128
            && v.to_str()
                .is_ok_and(|s| s.bytes().all(|b| b.is_ascii_graphic()))
    };
    let version = req.headers().get("x-ms-version").filter(sane).cloned();
    let client_id = req
        .headers()
        .get("x-ms-client-request-id")
        .filter(sane)
        .cloned();
    let mut res = next.call(req).await?;
    let headers = res.headers_mut();
    headers.insert(
        header::HeaderName::from_static("x-ms-version"),
        version.unwrap_or(HeaderValue::from_static(DEFAULT_VERSION)),
    );
    if let Some(id) = client_id {
        headers.insert(
            header::HeaderName::from_static("x-ms-client-request-id"),
            id,
        );
    }
    if !headers.contains_key(AZURE_REQUEST_ID) {
        if let Ok(id) = HeaderValue::from_str(&telemetry::request_id()) {
            headers.insert(header::HeaderName::from_static(AZURE_REQUEST_ID), id);
        }
    }
    Ok(res)
}

/// Non-Azure failures (the database, the blocking pool) in Azure's shape.
fn azure_error(e: ApiError) -> ApiError {
    if e.code.spec().shape == crate::error::Shape::Azure {
        return e;
    }
    let code = if e.code == Code::Unavailable {
        Code::AzureServerBusy
    } else {
        Code::AzureInternalError
    };
    let message = if code == Code::AzureServerBusy {
        "The server is currently unable to receive requests. Please retry your request."
    } else {
        "The server encountered an internal error. Please retry the request."
    };
    ApiError {
        code,
        message: message.into(),
        source: e.source.or_else(|| Some(anyhow::anyhow!(e.message))),
    }
}

fn internal(e: impl Into<anyhow::Error>) -> ApiError {
    azure_error(ApiError::internal(e))
}

/// Runs blocking filesystem work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ZoneError> + Send + 'static,
) -> Result<Result<T, ZoneError>, ApiError> {
    web::block(f).await.map_err(internal)
}

fn not_found() -> ApiError {
    ApiError::new(
        Code::AzureBlobNotFound,
        "The specified blob does not exist.",
    )
}

/// What a zone error means for a blob: links, folders and anything else that is not a regular
/// file are simply not blobs.
fn zone_error(e: ZoneError) -> ApiError {
    match e {
        ZoneError::NotFound | ZoneError::NotAFile { .. } | ZoneError::Link => not_found(),
        ZoneError::Conflict => ApiError::new(
            Code::AzurePathConflict,
            "The specified path, or an element of the path, exists and its resource type is invalid for this operation: a blob name cannot also be a folder of other blobs.",
        ),
        ZoneError::Exists => ApiError::new(
            Code::AzureBlobAlreadyExists,
            "The specified blob already exists.",
        ),
        ZoneError::Io(e) => internal(e),
    }
}

/// For writes, a link on the way is a conflict, not an absence.
fn write_error(e: ZoneError) -> ApiError {
    match e {
        ZoneError::Link => ApiError::new(
            Code::AzurePathConflict,
            "An element of the path is a symbolic link, which is never followed.",
        ),
        other => zone_error(other),
    }
}

fn query_map(query: &str) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode_str(k).decode_utf8_lossy().into_owned();
        let v = percent_decode_str(v).decode_utf8_lossy().into_owned();
        map.entry(k).or_insert(v);
    }
    map
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The account and the raw (still percent-encoded) blob part of the request's path.
fn split_path(req: &HttpRequest) -> (String, String) {
    let path = req.uri().path().trim_start_matches('/');
    let (account, rest) = path.split_once('/').unwrap_or((path, ""));
    let blob = rest
        .strip_prefix(CONTAINER_NAME)
        .unwrap_or(rest)
        .strip_prefix('/')
        .unwrap_or("");
    (account.to_owned(), blob.to_owned())
}

fn blob_name(raw: &str) -> Result<BlobName, ApiError> {
    let decoded = percent_decode_str(raw).decode_utf8().map_err(|_| {
        ApiError::new(
            Code::AzureInvalidUri,
            "The requested URI does not represent any resource on the server: the blob name is not UTF-8.",
        )
    })?;
    parse_blob_name(&decoded).map_err(|rule| {
        ApiError::new(
            Code::AzureInvalidResourceName,
            format!("The specified resource name contains invalid characters: {rule}."),
        )
    })
}

fn http_date(t: SystemTime) -> String {
    DateTime::<Utc>::from(t)
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

/// A successful Azure answer.
fn azure(status: StatusCode) -> HttpResponseBuilder {
    let mut builder = HttpResponse::build(status);
    builder.insert_header((AZURE_REQUEST_ID, telemetry::request_id()));
    builder
}

/// The properties headers of a blob (Get Blob, Get Blob Properties).
fn properties(builder: &mut HttpResponseBuilder, info: &FileInfo) {
    builder
        .insert_header((header::ETAG, info.etag()))
        .insert_header((header::LAST_MODIFIED, http_date(info.modified)))
        .insert_header(("x-ms-creation-time", http_date(info.arrived())))
        .insert_header(("x-ms-blob-type", "BlockBlob"))
        .insert_header(("x-ms-lease-state", "available"))
        .insert_header(("x-ms-lease-status", "unlocked"))
        .insert_header(("x-ms-server-encrypted", "false"))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::CONTENT_TYPE, "application/octet-stream"));
}

/// `If-Match` / `If-None-Match` against the blob's current state (`None`: no blob).
enum Precondition {
    Proceed,
    NotModified,
}

fn check_conditions(
    headers: &HeaderMap,
    current: Option<&FileInfo>,
    reading: bool,
) -> Result<Precondition, ApiError> {
    let failed = || {
        ApiError::new(
            Code::AzureConditionNotMet,
            "The condition specified using HTTP conditional header(s) is not met.",
        )
    };
    let etag = current.map(FileInfo::etag);
    let matches = |list: &str| {
        list.split(',').map(str::trim).any(|tag| {
            tag == "*" && etag.is_some() || etag.as_deref() == Some(tag.trim_start_matches("W/"))
        })
    };
    if let Some(wanted) = header(headers, "if-match") {
        if !matches(wanted) {
            return Err(failed());
        }
    }
    if let Some(unwanted) = header(headers, "if-none-match") {
        if matches(unwanted) {
            if reading {
                return Ok(Precondition::NotModified);
            }
            return Err(if unwanted == "*" {
                zone_error(ZoneError::Exists)
            } else {
                failed()
            });
        }
    }
    Ok(Precondition::Proceed)
}

/// The zone the request's URL names, opened by the SAS token in its query for what it needs.
async fn open_zone(
    state: &AppState,
    req: &HttpRequest,
    account: &str,
    needed: Permission,
) -> Result<Zone, ApiError> {
    authenticate(
        &state.pool,
        &state.landing_keys,
        &state.landing,
        account,
        req.query_string(),
        needed,
    )
    .await
    .map_err(azure_error)
}

/// `/…/dlz-user-container/<blob>`: the blob operations.
async fn blob(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (account, raw) = split_path(&req);
    let query = query_map(req.query_string());
    let comp = query.get("comp").map(String::as_str);
    let method = req.method().clone();
    let needed = match (&method, comp) {
        (&Method::DELETE, _) => Permission::Delete,
        (&Method::PUT, _) => Permission::Write,
        _ => Permission::Read,
    };
    let zone = open_zone(&state, &req, &account, needed).await?;
    let name = blob_name(&raw)?;
    let limits = &state.landing.limits;
    match (method, comp) {
        (Method::PUT, None) => put_blob(&req, payload, zone, name, limits).await,
        (Method::PUT, Some("block")) => put_block(&req, payload, zone, name, limits, &query).await,
        (Method::PUT, Some("blocklist")) => {
            put_block_list(&req, payload, zone, name, limits).await
        }
        (Method::GET, None) => get_blob(&req, zone, name, false).await,
        (Method::HEAD, None) => get_blob(&req, zone, name, true).await,
        (Method::DELETE, None) => delete_blob(&req, zone, name).await,
        (Method::GET | Method::HEAD | Method::PUT | Method::DELETE, Some(other)) => {
            Err(ApiError::new(
                Code::AzureUnsupportedQueryParameter,
                format!("comp={other} is not supported by this landing zone (supported on blobs: block, blocklist)."),
            ))
        }
        (other, _) => Err(ApiError::new(
            Code::AzureUnsupportedHttpVerb,
            format!("The resource doesn't support the specified HTTP verb {other}."),
        )),
    }
}

/// `/…/dlz-user-container`: List Blobs and Get Container Properties.
async fn container(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let (account, _) = split_path(&req);
    let query = query_map(req.query_string());
    let restype = query.get("restype").map(String::as_str);
    let comp = query.get("comp").map(String::as_str);
    let listing = restype == Some("container") && comp == Some("list");
    let needed = if listing {
        Permission::List
    } else {
        Permission::Read
    };
    let zone = open_zone(&state, &req, &account, needed).await?;
    let method = req.method();
    match (method, restype, comp) {
        (&Method::GET, Some("container"), Some("list")) => {
            list_blobs(&state.landing.public_url, &account, zone, &query).await
        }
        (&Method::GET | &Method::HEAD, Some("container"), None) => {
            container_properties(zone).await
        }
        (&Method::GET | &Method::HEAD | &Method::PUT | &Method::DELETE, _, _) => {
            Err(ApiError::new(
                Code::AzureUnsupportedQueryParameter,
                "Only List Blobs (restype=container&comp=list) and Get Container Properties (restype=container) are supported on the container.",
            ))
        }
        (other, _, _) => Err(ApiError::new(
            Code::AzureUnsupportedHttpVerb,
            format!("The resource doesn't support the specified HTTP verb {other}."),
        )),
    }
}

/// The declared body length, when there is one.
fn content_length(req: &HttpRequest) -> Result<Option<u64>, ApiError> {
    match header(req.headers(), "content-length") {
        None => Ok(None),
        Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
            ApiError::new(
                Code::AzureInvalidHeaderValue,
                "The value for one of the HTTP headers is not in the correct format: Content-Length.",
            )
        }),
    }
}

fn too_large(what: &str) -> ApiError {
    ApiError::new(
        Code::AzureRequestBodyTooLarge,
        format!("The request body is too large and exceeds the maximum permissible limit: {what}."),
    )
}

fn blob_limit(limits: &Limits) -> ApiError {
    too_large(&format!(
        "a blob may hold at most {} bytes (LANDING_MAX_BLOB_BYTES)",
        limits.max_blob_bytes
    ))
}

fn zone_limit(limits: &Limits) -> ApiError {
    too_large(&format!(
        "the landing zone may hold at most {} bytes (LANDING_MAX_ZONE_BYTES), uncommitted blocks included; delete blobs first",
        limits.max_zone_bytes
    ))
}

fn files_limit(limits: &Limits) -> ApiError {
    too_large(&format!(
        "the landing zone may hold at most {} files (LANDING_MAX_FILES), uncommitted blocks included; delete blobs first",
        limits.max_files
    ))
}

/// What an upload received.
struct Received {
    md5: [u8; 16],
}

/// Streams the request body into the upload's file, never holding more than one buffer, and
/// stops as soon as it passes `limit` bytes (`over` says which bound that is).
async fn receive(
    payload: &mut web::Payload,
    upload: &Upload,
    limit: u64,
    over: impl Fn(u64) -> ApiError,
) -> Result<Received, ApiError> {
    let file = upload.file.try_clone().map_err(internal)?;
    let mut out = tokio::io::BufWriter::with_capacity(IO_BUFFER, tokio::fs::File::from_std(file));
    let mut md5 = Md5::new();
    let mut len: u64 = 0;
    loop {
        let next = tokio::time::timeout(IDLE, payload.next())
            .await
            .map_err(|_| {
                ApiError::new(
                    Code::AzureRequestTimeout,
                    format!(
                        "The operation could not be completed within the permitted time: no data for {} s.",
                        IDLE.as_secs()
                    ),
                )
            })?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                Code::AzureInvalidBlobOrBlock,
                format!("The specified blob or block content is invalid: the request body could not be read ({e})."),
            )
        })?;
        len += chunk.len() as u64;
        if len > limit {
            return Err(over(len));
        }
        md5.update(&chunk);
        out.write_all(&chunk).await.map_err(internal)?;
    }
    out.flush().await.map_err(internal)?;
    Ok(Received {
        md5: md5.finalize().into(),
    })
}

/// Receives a request body into a new upload of `zone`, within the blob bound and the `room` the
/// zone has left, and checks the `Content-MD5` the client sent, if any.
async fn receive_upload(
    req: &HttpRequest,
    payload: &mut web::Payload,
    zone: &Zone,
    limits: &Limits,
    room: u64,
) -> Result<(Upload, Received), ApiError> {
    if content_length(req)?.is_some_and(|n| n > room) {
        return Err(zone_limit(limits));
    }
    let z = zone.clone();
    let upload = blocking(move || z.begin_upload())
        .await?
        .map_err(write_error)?;
    let limit = limits.max_blob_bytes.min(room);
    let received = receive(payload, &upload, limit, |len| {
        if len > limits.max_blob_bytes {
            blob_limit(limits)
        } else {
            zone_limit(limits)
        }
    })
    .await?;
    check_md5(req, &received.md5)?;
    Ok((upload, received))
}

/// Checks a `Content-MD5` the client sent against what was received.
fn check_md5(req: &HttpRequest, got: &[u8; 16]) -> Result<(), ApiError> {
    let Some(sent) = header(req.headers(), "content-md5") else {
        return Ok(());
    };
    if STANDARD.decode(sent).ok().as_deref() == Some(got.as_slice()) {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::AzureMd5Mismatch,
            "The MD5 value specified in the request did not match with the MD5 value calculated by the server.",
        ))
    }
}

/// The current blob (if any) at `name`, for conditions and for what a replace frees.
async fn current(zone: &Zone, name: &BlobName) -> Result<Option<FileInfo>, ApiError> {
    let (zone, name) = (zone.clone(), name.clone());
    match blocking(move || zone.entry(&name)).await? {
        Ok(Kind::File(info)) => Ok(Some(info)),
        Ok(_) | Err(ZoneError::NotFound | ZoneError::Link) => Ok(None),
        Err(e) => Err(zone_error(e)),
    }
}

/// How much room the zone has for a new file of up to `incoming` bytes that replaces `freed`.
async fn room(zone: &Zone, limits: &Limits, freed: u64, new_file: bool) -> Result<u64, ApiError> {
    let z = zone.clone();
    let usage = blocking(move || z.usage()).await?.map_err(zone_error)?;
    if new_file && usage.files >= limits.max_files {
        return Err(files_limit(limits));
    }
    Ok((limits.max_zone_bytes + freed).saturating_sub(usage.bytes))
}

fn no_replace(req: &HttpRequest) -> bool {
    header(req.headers(), "if-none-match") == Some("*")
}

fn check_blob_type(req: &HttpRequest) -> Result<(), ApiError> {
    if req.headers().contains_key("x-ms-copy-source") {
        return Err(ApiError::new(
            Code::AzureInvalidHeaderValue,
            "Copy Blob (x-ms-copy-source) is not supported by this landing zone: upload the data.",
        ));
    }
    match header(req.headers(), "x-ms-blob-type") {
        None => Err(ApiError::new(
            Code::AzureMissingRequiredHeader,
            "An HTTP header that's mandatory for this request is not specified: x-ms-blob-type (BlockBlob).",
        )),
        Some("BlockBlob") => Ok(()),
        Some(other) => Err(ApiError::new(
            Code::AzureInvalidHeaderValue,
            format!("The value for one of the HTTP headers is not in the correct format: x-ms-blob-type is '{other}'; this landing zone holds block blobs only (BlockBlob)."),
        )),
    }
}

/// Put Blob: the whole blob in one request.
async fn put_blob(
    req: &HttpRequest,
    mut payload: web::Payload,
    zone: Zone,
    name: BlobName,
    limits: &Limits,
) -> Result<HttpResponse, ApiError> {
    check_blob_type(req)?;
    let declared = content_length(req)?;
    if declared.is_some_and(|n| n > limits.max_blob_bytes) {
        return Err(blob_limit(limits));
    }
    let existing = current(&zone, &name).await?;
    check_conditions(req.headers(), existing.as_ref(), false)?;
    let freed = existing.map_or(0, |i| i.size);
    let room = room(&zone, limits, freed, existing.is_none()).await?;
    let (upload, received) = receive_upload(req, &mut payload, &zone, limits, room).await?;
    let info = commit(req, &zone, &name, upload, limits).await?;
    Ok(azure(StatusCode::CREATED)
        .insert_header((header::ETAG, info.etag()))
        .insert_header((header::LAST_MODIFIED, http_date(info.modified)))
        .insert_header(("content-md5", STANDARD.encode(received.md5)))
        .insert_header(("x-ms-request-server-encrypted", "false"))
        .finish())
}

/// Commits a complete upload as `name`: the conditions and the zone's bound are checked again on
/// what is there now (another upload may have landed meanwhile), uncommitted blocks of the name
/// are discarded, as Azure does.
async fn commit(
    req: &HttpRequest,
    zone: &Zone,
    name: &BlobName,
    upload: Upload,
    limits: &Limits,
) -> Result<FileInfo, ApiError> {
    let existing = current(zone, name).await?;
    check_conditions(req.headers(), existing.as_ref(), false)?;
    let z = zone.clone();
    let usage = blocking(move || z.usage()).await?.map_err(zone_error)?;
    // The upload itself is counted in the usage already.
    if usage.bytes.saturating_sub(existing.map_or(0, |i| i.size)) > limits.max_zone_bytes {
        return Err(zone_limit(limits));
    }
    let replace = !no_replace(req);
    let (z, n) = (zone.clone(), name.clone());
    let info = blocking(move || {
        let info = z.commit(upload, &n, replace)?;
        z.drop_blocks(&n)?;
        Ok(info)
    })
    .await?
    .map_err(write_error)?;
    Ok(info)
}

/// A block id: base64 of at most 64 bytes; kept on disk as hex.
fn block_hex(id: &str) -> Result<String, ApiError> {
    let invalid = || {
        ApiError::new(
            Code::AzureInvalidBlockId,
            format!("The specified block ID is invalid. The block ID must be Base64-encoded, at most {MAX_BLOCK_ID_BYTES} bytes before encoding."),
        )
    };
    let bytes = STANDARD.decode(id).map_err(|_| invalid())?;
    if bytes.is_empty() || bytes.len() > MAX_BLOCK_ID_BYTES {
        return Err(invalid());
    }
    Ok(hex::encode(bytes))
}

/// Put Block: one uncommitted block of a blob.
async fn put_block(
    req: &HttpRequest,
    mut payload: web::Payload,
    zone: Zone,
    name: BlobName,
    limits: &Limits,
    query: &HashMap<String, String>,
) -> Result<HttpResponse, ApiError> {
    let Some(id) = query.get("blockid") else {
        return Err(ApiError::new(
            Code::AzureInvalidQueryParameterValue,
            "Value for one of the query parameters specified in the request URI is invalid: blockid is required.",
        ));
    };
    let block = block_hex(id)?;
    let declared = content_length(req)?;
    if declared.is_some_and(|n| n > limits.max_blob_bytes) {
        return Err(blob_limit(limits));
    }
    let (z, n) = (zone.clone(), name.clone());
    let blocks = blocking(move || z.blocks(&n)).await?.map_err(zone_error)?;
    if blocks.iter().any(|(b, _)| b.len() != block.len()) {
        return Err(ApiError::new(
            Code::AzureInvalidBlobOrBlock,
            "The specified blob or block content is invalid: every block id of a blob must have the same length.",
        ));
    }
    let replaced = blocks.iter().find(|(b, _)| *b == block).map(|(_, s)| *s);
    if replaced.is_none() && blocks.len() >= MAX_BLOCKS {
        return Err(ApiError::new(
            Code::AzureBlockCountExceedsLimit,
            format!("The uncommitted block count cannot exceed the maximum limit of {MAX_BLOCKS} blocks."),
        ));
    }
    let room = match room(&zone, limits, replaced.unwrap_or(0), replaced.is_none()).await {
        Err(e) if e.code == Code::AzureRequestBodyTooLarge && replaced.is_none() => {
            return Err(ApiError::new(
                Code::AzureBlockCountExceedsLimit,
                format!("The uncommitted block count cannot exceed the limit of this landing zone: it may hold at most {} files (LANDING_MAX_FILES), uncommitted blocks included.", limits.max_files),
            ))
        }
        other => other?,
    };
    let (upload, received) = receive_upload(req, &mut payload, &zone, limits, room).await?;
    blocking(move || zone.stage_block(upload, &name, &block))
        .await?
        .map_err(write_error)?;
    Ok(azure(StatusCode::CREATED)
        .insert_header(("content-md5", STANDARD.encode(received.md5)))
        .insert_header(("x-ms-request-server-encrypted", "false"))
        .finish())
}

/// The block ids of a Put Block List body, in order. Only `Latest` and `Uncommitted` entries can
/// be honoured: a committed blob's block list is not kept.
fn parse_block_list(body: &[u8]) -> Result<Vec<String>, ApiError> {
    let bad_xml = |why: String| {
        ApiError::new(
            Code::AzureInvalidXmlDocument,
            format!("XML specified is not syntactically valid: {why}."),
        )
    };
    let text = std::str::from_utf8(body).map_err(|_| bad_xml("the body is not UTF-8".into()))?;
    let mut reader = Reader::from_str(text);
    let mut ids = Vec::new();
    let mut depth = 0;
    let mut saw_root = false;
    let mut id = String::new();
    loop {
        let event = reader.read_event().map_err(|e| bad_xml(e.to_string()))?;
        match event {
            Event::Start(e) => {
                let tag = e.local_name().into_inner();
                match (depth, tag) {
                    (0, "BlockList") => saw_root = true,
                    (0, other) => {
                        return Err(bad_xml(format!(
                            "the root element is '{other}', not 'BlockList'"
                        )))
                    }
                    (1, "Latest" | "Uncommitted") => id.clear(),
                    (1, "Committed") => {
                        return Err(ApiError::new(
                            Code::AzureInvalidBlockList,
                            "The specified block list is invalid: this landing zone keeps no committed block lists; list every block as Latest or Uncommitted.",
                        ))
                    }
                    (_, other) => return Err(bad_xml(format!("unexpected element '{other}'"))),
                }
                depth += 1;
            }
            Event::Empty(e) if depth == 0 && e.local_name().into_inner() == "BlockList" => {
                saw_root = true;
            }
            Event::Empty(e) => {
                return Err(bad_xml(format!(
                    "unexpected empty element '{}'",
                    e.local_name().into_inner()
                )))
            }
            Event::Text(t) if depth == 2 => id.push_str(&t),
            Event::GeneralRef(r) if depth == 2 => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => quick_xml::escape::resolve_predefined_entity(&r)
                        .ok_or_else(|| bad_xml(format!("unknown entity '&{};'", &*r)))?
                        .to_owned(),
                };
                id.push_str(&resolved);
            }
            Event::Text(t) if t.trim().is_empty() => {}
            Event::Text(_) | Event::GeneralRef(_) | Event::CData(_) => {
                return Err(bad_xml("text outside a block id".into()))
            }
            Event::End(_) => {
                if depth == 2 {
                    ids.push(id.trim().to_owned());
                    if ids.len() > MAX_BLOCKS {
                        return Err(ApiError::new(
                            Code::AzureBlockListTooLong,
                            format!(
                                "The block list may not contain more than {MAX_BLOCKS} blocks."
                            ),
                        ));
                    }
                }
                depth -= 1;
            }
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if !saw_root || depth != 0 {
        return Err(bad_xml("a complete BlockList element is required".into()));
    }
    Ok(ids)
}

/// Put Block List: the blob made of the listed uncommitted blocks, in order.
async fn put_block_list(
    req: &HttpRequest,
    mut payload: web::Payload,
    zone: Zone,
    name: BlobName,
    limits: &Limits,
) -> Result<HttpResponse, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = tokio::time::timeout(IDLE, payload.next())
        .await
        .map_err(|_| {
            ApiError::new(
                Code::AzureRequestTimeout,
                "The operation could not be completed within the permitted time.",
            )
        })?
    {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                Code::AzureInvalidXmlDocument,
                format!(
                    "XML specified is not syntactically valid: the body could not be read ({e})."
                ),
            )
        })?;
        if body.len() + chunk.len() > MAX_BLOCK_LIST_BYTES {
            return Err(too_large(&format!(
                "a block list body may have at most {MAX_BLOCK_LIST_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    let ids = parse_block_list(&body)?;
    let order = ids
        .iter()
        .map(|id| {
            block_hex(id).map_err(|_| {
                ApiError::new(
                    Code::AzureInvalidBlockList,
                    format!("The specified block list is invalid: '{id}' is not a block id."),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (z, n) = (zone.clone(), name.clone());
    let blocks: HashMap<String, u64> = blocking(move || z.blocks(&n))
        .await?
        .map_err(zone_error)?
        .into_iter()
        .collect();
    let mut total: u64 = 0;
    for (hex, id) in order.iter().zip(&ids) {
        let Some(size) = blocks.get(hex) else {
            return Err(ApiError::new(
                Code::AzureInvalidBlockList,
                format!("The specified block list is invalid: block '{id}' was not uploaded (or was already committed)."),
            ));
        };
        total += size;
    }
    if total > limits.max_blob_bytes {
        return Err(blob_limit(limits));
    }
    let existing = current(&zone, &name).await?;
    check_conditions(req.headers(), existing.as_ref(), false)?;
    // After the commit the blocks are gone and the blob holds `total` bytes.
    let z = zone.clone();
    let usage = blocking(move || z.usage()).await?.map_err(zone_error)?;
    let staged: u64 = blocks.values().sum();
    let after = usage
        .bytes
        .saturating_sub(staged + existing.map_or(0, |i| i.size))
        + total;
    if after > limits.max_zone_bytes {
        return Err(zone_limit(limits));
    }
    let (z, n) = (zone.clone(), name.clone());
    let upload = blocking(move || z.assemble(&n, &order))
        .await?
        .map_err(|e| match e {
            ZoneError::NotFound => ApiError::new(
                Code::AzureInvalidBlockList,
                "The specified block list is invalid: a block was committed or removed meanwhile.",
            ),
            other => zone_error(other),
        })?;
    let info = commit(
        req,
        &zone,
        &name,
        upload,
        &Limits {
            // The blocks counted in the usage go with the commit.
            max_zone_bytes: limits.max_zone_bytes + staged,
            ..limits.clone()
        },
    )
    .await?;
    let md5: [u8; 16] = Md5::digest(&body).into();
    Ok(azure(StatusCode::CREATED)
        .insert_header((header::ETAG, info.etag()))
        .insert_header((header::LAST_MODIFIED, http_date(info.modified)))
        .insert_header(("content-md5", STANDARD.encode(md5)))
        .insert_header(("x-ms-request-server-encrypted", "false"))
        .finish())
}

/// `bytes=a-b` or `bytes=a-`, from `x-ms-range` (preferred, as Azure does) or `Range`.
fn requested_range(headers: &HeaderMap) -> Result<Option<(u64, Option<u64>)>, ApiError> {
    let Some(raw) = header(headers, "x-ms-range").or_else(|| header(headers, "range")) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::new(
            Code::AzureInvalidHeaderValue,
            format!("The value for one of the HTTP headers is not in the correct format: range '{raw}' (expected bytes=<start>-[<end>])."),
        )
    };
    let spec = raw.strip_prefix("bytes=").ok_or_else(bad)?;
    let (start, end) = spec.split_once('-').ok_or_else(bad)?;
    let start: u64 = start.trim().parse().map_err(|_| bad())?;
    let end = match end.trim() {
        "" => None,
        e => Some(e.parse::<u64>().map_err(|_| bad())?),
    };
    if end.is_some_and(|e| e < start) {
        return Err(bad());
    }
    Ok(Some((start, end)))
}

/// Get Blob (`head` false) and Get Blob Properties (`head` true).
async fn get_blob(
    req: &HttpRequest,
    zone: Zone,
    name: BlobName,
    head: bool,
) -> Result<HttpResponse, ApiError> {
    let (file, info) = blocking(move || zone.open_file(&name))
        .await?
        .map_err(zone_error)?;
    if let Precondition::NotModified = check_conditions(req.headers(), Some(&info), true)? {
        let mut res = azure(StatusCode::NOT_MODIFIED);
        res.insert_header((header::ETAG, info.etag()))
            .insert_header((header::LAST_MODIFIED, http_date(info.modified)));
        return Ok(res.finish());
    }
    if head {
        let mut res = azure(StatusCode::OK);
        properties(&mut res, &info);
        res.insert_header(("x-ms-access-tier", "Hot"))
            .insert_header(("x-ms-access-tier-inferred", "true"));
        return Ok(res.body(SizedStream::new(
            info.size,
            futures_util::stream::empty::<Result<web::Bytes, Error>>(),
        )));
    }
    let range = requested_range(req.headers())?;
    let (start, len, status) = match range {
        None => (0, info.size, StatusCode::OK),
        Some((start, end)) => {
            if start >= info.size {
                let mut res = HttpResponse::from_error(ApiError::new(
                    Code::AzureInvalidRange,
                    "The range specified is invalid for the current size of the resource.",
                ));
                res.headers_mut().insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{}", info.size)).map_err(internal)?,
                );
                return Ok(res);
            }
            let end = end.map_or(info.size - 1, |e| e.min(info.size - 1));
            (start, end - start + 1, StatusCode::PARTIAL_CONTENT)
        }
    };
    let mut res = azure(status);
    properties(&mut res, &info);
    if status == StatusCode::PARTIAL_CONTENT {
        res.insert_header((
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{}", start + len - 1, info.size),
        ));
    }
    let want_md5 = header(req.headers(), "x-ms-range-get-content-md5")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if want_md5 {
        if range.is_none() || len > MAX_RANGE_MD5 {
            return Err(ApiError::new(
                Code::AzureOutOfRangeInput,
                format!("One of the request inputs is out of range: x-ms-range-get-content-md5 needs a range of at most {MAX_RANGE_MD5} bytes."),
            ));
        }
        let data = blocking(move || {
            let mut file = file;
            file.seek(SeekFrom::Start(start))?;
            let mut data = Vec::with_capacity(len as usize);
            file.take(len).read_to_end(&mut data)?;
            Ok(data)
        })
        .await?
        .map_err(zone_error)?;
        let md5: [u8; 16] = Md5::digest(&data).into();
        res.insert_header(("content-md5", STANDARD.encode(md5)));
        return Ok(res.body(data));
    }
    let mut file = file;
    file.seek(SeekFrom::Start(start)).map_err(internal)?;
    let file = tokio::fs::File::from_std(file);
    let stream = futures_util::stream::unfold((file, len), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; (left as usize).min(IO_BUFFER)];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(web::Bytes::from(buf)), (file, left - n as u64)))
            }
            Err(e) => Some((Err(Error::from(e)), (file, 0))),
        }
    });
    Ok(res.body(SizedStream::new(len, stream)))
}

/// Delete Blob.
async fn delete_blob(
    req: &HttpRequest,
    zone: Zone,
    name: BlobName,
) -> Result<HttpResponse, ApiError> {
    let existing = current(&zone, &name).await?;
    if existing.is_none() {
        return Err(not_found());
    }
    check_conditions(req.headers(), existing.as_ref(), false)?;
    blocking(move || zone.delete(&name))
        .await?
        .map_err(zone_error)?;
    Ok(azure(StatusCode::ACCEPTED)
        .insert_header(("x-ms-delete-type-permanent", "true"))
        .finish())
}

/// Get Container Properties: the container always exists.
async fn container_properties(zone: Zone) -> Result<HttpResponse, ApiError> {
    let path = zone.container_path();
    let modified = web::block(move || std::fs::symlink_metadata(path).and_then(|m| m.modified()))
        .await
        .map_err(internal)?
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let stamp = modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    Ok(azure(StatusCode::OK)
        .insert_header((header::ETAG, format!("\"0x{stamp:X}\"")))
        .insert_header((header::LAST_MODIFIED, http_date(modified)))
        .insert_header(("x-ms-lease-state", "available"))
        .insert_header(("x-ms-lease-status", "unlocked"))
        .insert_header(("x-ms-has-immutability-policy", "false"))
        .insert_header(("x-ms-has-legal-hold", "false"))
        .finish())
}

/// One item of a listing page: a blob, or a prefix standing for the blobs under it.
enum Item<'a> {
    Blob(&'a Listed),
    Prefix(String),
}

impl Item<'_> {
    fn key(&self) -> &str {
        match self {
            Item::Blob(l) => &l.name,
            Item::Prefix(p) => p,
        }
    }
}

fn bad_query(name: &str, why: &str) -> ApiError {
    ApiError::new(
        Code::AzureInvalidQueryParameterValue,
        format!("Value for one of the query parameters specified in the request URI is invalid: {name} {why}."),
    )
}

/// List Blobs: `prefix`, `delimiter`, `marker` and `maxresults` paging, in name order.
async fn list_blobs(
    public_url: &str,
    account: &str,
    zone: Zone,
    query: &HashMap<String, String>,
) -> Result<HttpResponse, ApiError> {
    let prefix = query.get("prefix").cloned().unwrap_or_default();
    let delimiter = query.get("delimiter").cloned().filter(|d| !d.is_empty());
    let max = match query.get("maxresults") {
        None => MAX_RESULTS,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n >= 1 => usize::try_from(n).unwrap_or(MAX_RESULTS).min(MAX_RESULTS),
            Ok(_) => {
                return Err(ApiError::new(
                    Code::AzureOutOfRangeQueryParameterValue,
                    "One of the query parameters specified in the request URI is outside the permissible range: maxresults must be at least 1.",
                ))
            }
            Err(_) => return Err(bad_query("maxresults", "is not an integer")),
        },
    };
    let marker = match query.get("marker").filter(|m| !m.is_empty()) {
        None => None,
        Some(m) => Some(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(m)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| bad_query("marker", "is not a marker this server returned"))?,
        ),
    };
    // Only the folders the prefix names in full are walked.
    let folders: Vec<String> = match prefix.rsplit_once('/') {
        Some((dirs, _)) => dirs.split('/').map(str::to_owned).collect(),
        None => Vec::new(),
    };
    let listed = blocking(move || {
        let under: Vec<&str> = folders.iter().map(String::as_str).collect();
        zone.list(&under)
    })
    .await?
    .map_err(zone_error)?;
    let mut items: Vec<Item> = Vec::new();
    for l in listed.iter().filter(|l| l.name.starts_with(&prefix)) {
        let rest = &l.name[prefix.len()..];
        match delimiter
            .as_deref()
            .and_then(|d| rest.find(d).map(|i| (d, i)))
        {
            Some((d, i)) => {
                let p = format!("{prefix}{}{d}", &rest[..i]);
                if !matches!(items.last(), Some(Item::Prefix(last)) if *last == p) {
                    items.push(Item::Prefix(p));
                }
            }
            None => items.push(Item::Blob(l)),
        }
    }
    items.sort_by(|a, b| a.key().as_bytes().cmp(b.key().as_bytes()));
    items.dedup_by(|a, b| a.key() == b.key());
    let start = marker
        .as_deref()
        .map_or(0, |m| items.partition_point(|i| i.key() <= m));
    let page: Vec<&Item> = items[start..].iter().take(max).collect();
    let next = (start + page.len() < items.len())
        .then(|| page.last().map(|i| i.key().to_owned()))
        .flatten();

    let text = |s: &str| partial_escape(s).into_owned();
    let mut xml = String::from(r#"<?xml version="1.0" encoding="utf-8"?>"#);
    xml.push_str(&format!(
        r#"<EnumerationResults ServiceEndpoint="{}" ContainerName="{CONTAINER_NAME}">"#,
        escape(format!("{public_url}/{account}/").as_str())
    ));
    if !prefix.is_empty() {
        xml.push_str(&format!("<Prefix>{}</Prefix>", text(&prefix)));
    }
    if let Some(m) = query.get("marker").filter(|m| !m.is_empty()) {
        xml.push_str(&format!("<Marker>{}</Marker>", text(m)));
    }
    if query.contains_key("maxresults") {
        xml.push_str(&format!("<MaxResults>{max}</MaxResults>"));
    }
    if let Some(d) = &delimiter {
        xml.push_str(&format!("<Delimiter>{}</Delimiter>", text(d)));
    }
    xml.push_str("<Blobs>");
    for item in page {
        match item {
            Item::Prefix(p) => xml.push_str(&format!(
                "<BlobPrefix><Name>{}</Name></BlobPrefix>",
                text(p)
            )),
            Item::Blob(l) => {
                let etag = l.info.etag();
                xml.push_str(&format!(
                    "<Blob><Name>{}</Name><Properties><Creation-Time>{}</Creation-Time><Last-Modified>{}</Last-Modified><Etag>{}</Etag><Content-Length>{}</Content-Length><Content-Type>application/octet-stream</Content-Type><Content-Encoding /><Content-Language /><Content-CRC64 /><Content-MD5 /><Cache-Control /><Content-Disposition /><BlobType>BlockBlob</BlobType><AccessTier>Hot</AccessTier><AccessTierInferred>true</AccessTierInferred><LeaseStatus>unlocked</LeaseStatus><LeaseState>available</LeaseState><ServerEncrypted>false</ServerEncrypted></Properties><OrMetadata /></Blob>",
                    text(&l.name),
                    http_date(l.info.arrived()),
                    http_date(l.info.modified),
                    text(etag.trim_matches('"')),
                    l.info.size,
                ));
            }
        }
    }
    xml.push_str("</Blobs>");
    match next {
        Some(last) => xml.push_str(&format!(
            "<NextMarker>{}</NextMarker>",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last.as_bytes())
        )),
        None => xml.push_str("<NextMarker />"),
    }
    xml.push_str("</EnumerationResults>");
    Ok(azure(StatusCode::OK)
        .content_type("application/xml")
        .body(xml))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_lists_parse_in_order() {
        let body = br#"<?xml version="1.0" encoding="utf-8"?>
            <BlockList><Latest>AAA=</Latest><Uncommitted>BBB=</Uncommitted>
            <Latest>CCC=</Latest></BlockList>"#;
        assert_eq!(parse_block_list(body).unwrap(), ["AAA=", "BBB=", "CCC="]);
        assert_eq!(
            parse_block_list(b"<BlockList/>").unwrap(),
            Vec::<String>::new()
        );
        for bad in [
            &b"<Other/>"[..],
            b"<BlockList><Latest>x</Latest>",
            b"not xml",
            b"<BlockList><Latest><X/></Latest></BlockList>",
        ] {
            let e = parse_block_list(bad).unwrap_err();
            assert_eq!(
                e.code,
                Code::AzureInvalidXmlDocument,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let e =
            parse_block_list(b"<BlockList><Committed>AAA=</Committed></BlockList>").unwrap_err();
        assert_eq!(e.code, Code::AzureInvalidBlockList);
    }

    #[test]
    fn block_ids_are_base64_of_at_most_64_bytes() {
        assert_eq!(block_hex("AAE=").unwrap(), "0001");
        assert!(block_hex("not base64!").is_err());
        assert!(block_hex("").is_err());
        assert!(block_hex(&STANDARD.encode([0u8; 65])).is_err());
    }

    #[test]
    fn ranges_parse_like_azure() {
        let mut h = HeaderMap::new();
        assert_eq!(requested_range(&h).unwrap(), None);
        h.insert(header::RANGE, HeaderValue::from_static("bytes=5-"));
        assert_eq!(requested_range(&h).unwrap(), Some((5, None)));
        h.insert(
            header::HeaderName::from_static("x-ms-range"),
            HeaderValue::from_static("bytes=0-9"),
        );
        assert_eq!(requested_range(&h).unwrap(), Some((0, Some(9))));
        h.insert(
            header::HeaderName::from_static("x-ms-range"),
            HeaderValue::from_static("bytes=9-0"),
        );
        assert!(requested_range(&h).is_err());
    }
}
