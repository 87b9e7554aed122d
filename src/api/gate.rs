//! The checks every API request passes before anything else runs, in the contract's order:
//! `Authorization`, `x-api-key`, `x-gw-ims-org-id`, `x-sandbox-name`, then `Content-Type` on a body.
//! On success the tenant and the caller are attached to the request for the handlers.

use actix_web::{
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{header, Method},
    middleware::Next,
    web, Error, HttpMessage,
};

use super::{respond::error_body, AppState};
use crate::{
    auth,
    domain::Tenant,
    error::{ApiError, Code},
};

pub async fn gate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(req.into_response(error_body(Code::Internal, "Server state is missing.")));
    };
    match admit(&req, &state).await {
        Ok((tenant, caller)) => {
            req.extensions_mut().insert(tenant);
            req.extensions_mut().insert(caller);
            next.call(req)
                .await
                .map(ServiceResponse::map_into_boxed_body)
        }
        Err(e) => {
            let response = actix_web::ResponseError::error_response(&e);
            Ok(req.into_response(response))
        }
    }
}

fn header_str<'a>(req: &'a ServiceRequest, name: &str) -> Option<&'a str> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

async fn admit(
    req: &ServiceRequest,
    state: &AppState,
) -> Result<(Tenant, crate::domain::Caller), ApiError> {
    let authorization = req.headers().get(header::AUTHORIZATION);
    let Some(authorization) = authorization else {
        return Err(ApiError::new(Code::TokenMissing, "Oauth token is missing."));
    };
    let token = authorization
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::new(Code::TokenInvalid, "Oauth token is not valid"))?;
    if header_str(req, "x-api-key").is_none() {
        return Err(ApiError::new(Code::ApiKeyMissing, "Api Key is required"));
    }
    let org = header_str(req, "x-gw-ims-org-id")
        .ok_or_else(|| ApiError::new(Code::OrgHeaderMissing, "Missing header"))?;
    let token = auth::authenticate(&state.auth, token, org)?;
    let sandbox_name = match req.headers().get("x-sandbox-name") {
        None => {
            return Err(ApiError::new(
                Code::BadHeader,
                "Header 'x-sandbox-name' is required.",
            ))
        }
        Some(v) => v.to_str().unwrap_or_default().trim(),
    };
    let valid_sandbox = (1..=64).contains(&sandbox_name.len())
        && sandbox_name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid_sandbox {
        return Err(ApiError::new(
            Code::BadHeader,
            "Header 'x-sandbox-name' must be 1 to 64 characters of a-z, 0-9 and '-'.",
        ));
    }
    check_content_type(req)?;
    let tenant = state
        .sandboxes
        .resolve(&state.pool, org, sandbox_name)
        .await?;
    Ok((tenant, token))
}

/// A request that carries a body must declare JSON, or declare nothing. Adobe's own tutorial posts
/// with curl's `-d` and no header, which sends `application/x-www-form-urlencoded`: that form is
/// read as JSON too (docs/DECISIONS.md). Bodiless requests are never refused for their header.
fn check_content_type(req: &ServiceRequest) -> Result<(), ApiError> {
    let has_body = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH)
        && (req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > 0)
            || req.headers().contains_key(header::TRANSFER_ENCODING));
    if !has_body {
        return Ok(());
    }
    let Some(content_type) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = content_type
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let accepted = essence == "application/json"
        || essence == "application/x-www-form-urlencoded"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if accepted {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::UnsupportedMediaType,
            format!("Header 'Content-Type' must be application/json; got '{essence}'."),
        ))
    }
}
