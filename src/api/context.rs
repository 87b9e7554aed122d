//! Per-request context: the request id (echoed or made), the access log line, path aliases, and
//! the guarantee that every error body is JSON in the service's shape.

use std::time::Instant;

use actix_web::{
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{
        header::{self, HeaderName, HeaderValue},
        uri::{PathAndQuery, Uri},
        ConnectionType, StatusCode,
    },
    middleware::Next,
    web, Error,
};

use super::{
    respond::{error_body, AnsweredCode},
    AppState,
};
use crate::{
    error::Code,
    monitoring::UNMATCHED_ROUTE,
    telemetry::{new_request_id, with_request_id},
};

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Seconds a client is told (`Retry-After`) to wait before retrying a 503 or a 429. Every such
/// answer carries it, whichever part of the server made it.
pub const RETRY_AFTER_SECS: u32 = 2;

/// A caller's id is echoed when it is a sane header value; otherwise one is made.
fn incoming_request_id(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get(&REQUEST_ID_HEADER)?.to_str().ok()?.trim();
    let sane =
        !value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic());
    sane.then(|| value.to_owned())
}

/// Outermost middleware: request id, access log, metrics, JSON error bodies.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let id = incoming_request_id(&req).unwrap_or_else(new_request_id);
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.path().to_owned();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let _serving = state.as_ref().map(|s| s.lifecycle.enter());
    let mut res = with_request_id(id.clone(), async move {
        next.call(req)
            .await
            .map(|res| ensure_json_error(res.map_into_boxed_body()))
    })
    .await?;
    res.headers_mut().insert(
        REQUEST_ID_HEADER,
        HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid")),
    );
    let retry_later = matches!(
        res.status(),
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
    );
    if retry_later && !res.headers().contains_key(header::RETRY_AFTER) {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    if let Some(state) = &state {
        record(state, &res, started);
        // Draining: each connection ends with the answer it carries, so clients that keep their
        // connections busy neither hold the shutdown nor keep sending to a replica on its way out.
        if state.lifecycle.is_draining() {
            res.response_mut()
                .head_mut()
                .set_connection_type(ConnectionType::Close);
        }
    }
    tracing::info!(
        target: "access",
        request_id = %id,
        method = %method,
        path = %path,
        status = res.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
    );
    Ok(res)
}

/// Counts the request by its route template (ids never become labels) and its error code.
fn record(state: &AppState, res: &ServiceResponse<BoxBody>, started: Instant) {
    let status = res.status().as_u16();
    let route = res.request().match_pattern();
    let route = route.as_deref().unwrap_or(UNMATCHED_ROUTE);
    let monitoring = &state.monitoring;
    monitoring.http_request(
        route,
        res.request().method().as_str(),
        status,
        started.elapsed().as_secs_f64(),
    );
    if let Some(AnsweredCode(code)) = res.response().extensions().get::<AnsweredCode>() {
        monitoring.error(code.spec().wire, status);
    }
}

/// Errors produced by actix itself (payload too large, and the like) come as text; answer them in
/// the service's error shape instead. The landing zones' blob API answers in Azure's XML shape
/// (marked by `x-ms-error-code`), which Azure clients parse: those are left as they are.
fn ensure_json_error(res: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    if res.headers().contains_key(super::respond::AZURE_ERROR_CODE) {
        return res;
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return res;
    }
    let code = match status.as_u16() {
        404 => Code::RouteNotFound,
        405 => Code::MethodNotAllowed,
        413 => Code::PayloadTooLarge,
        415 => Code::UnsupportedMediaType,
        s if s >= 500 => Code::Internal,
        _ => Code::BadBody,
    };
    let reason = status.canonical_reason().unwrap_or("Request failed");
    let mut replaced = error_body(code, &format!("{reason}."));
    *replaced.status_mut() = status;
    res.into_response(replaced)
}

/// Serves the documented aliases: `/core/...` for `/data/core/...` (one of Adobe's guides uses
/// it; `/foundation/...` likewise for the landing-zone endpoints) and any path with a trailing
/// slash, except Swagger UI's `/docs/` pages.
pub async fn normalize_path(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let path = req.path();
    let mut rewritten = None;
    // Swagger UI's pages live under `/docs/` and load their assets relative to it.
    if path.len() > 1 && path.ends_with('/') && !path.starts_with(super::docs::DOCS_PATH) {
        rewritten = Some(path.trim_end_matches('/').to_owned());
    }
    let current = rewritten.as_deref().unwrap_or(path);
    if current.starts_with("/core/") || current.starts_with("/foundation/") {
        rewritten = Some(format!("/data{current}"));
    }
    if let Some(new_path) = rewritten {
        let new_path = if new_path.is_empty() {
            "/".to_owned()
        } else {
            new_path
        };
        let pq = match req.uri().query() {
            Some(q) => format!("{new_path}?{q}"),
            None => new_path,
        };
        let mut parts = req.uri().clone().into_parts();
        if let Ok(pq) = PathAndQuery::try_from(pq) {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = Uri::from_parts(parts) {
                req.match_info_mut().get_mut().update(&uri);
                req.head_mut().uri = uri;
            }
        }
    }
    next.call(req).await
}
