//! The checks every API request passes before anything else runs, in the contract's order:
//! `Authorization`, `x-api-key`, `x-gw-ims-org-id`, `x-sandbox-name`, then `Content-Type` on a body.
//! On success the tenant and the caller are attached to the request for the handlers.

use actix_web::{
    body::{BodySize, BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{header, Method},
    middleware::Next,
    web, Error, HttpMessage,
};

use sha2::{Digest, Sha256};

use super::{respond::error_body, AppState};
use crate::{
    auth,
    domain::Tenant,
    error::{ApiError, Code},
    storage::sandboxes::Caps,
};

/// Which token a request must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    /// The API's: any token in `open` mode, a JWT bound to the org in `verify` mode.
    Api,
    /// The test control's (`/_local`): `CONTROL_TOKEN` when it is set, else as [`Admission::Api`].
    Control,
}

pub async fn gate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    gate_as(req, next, Admission::Api).await
}

/// The gate of the test-control endpoints (docs/CONTROL.md): with `CONTROL_API` off they are not
/// there (404, as any unknown path); on, the same checks as every route, except that the bearer
/// must be `CONTROL_TOKEN` when one is set.
pub async fn control_gate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let enabled = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|s| s.control.is_some());
    if !enabled {
        let message = format!("No resource at {}.", req.path());
        return Ok(req.into_response(error_body(Code::RouteNotFound, &message)));
    }
    gate_as(req, next, Admission::Control).await
}

async fn gate_as(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
    admission: Admission,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(req.into_response(error_body(Code::Internal, "Server state is missing.")));
    };
    match admit(&req, &state, admission).await {
        Ok((tenant, caller)) => {
            if let Err(wait) = state
                .shares
                .admit(tenant.org_id(), request_bytes(&req, &state))
            {
                // The refusal itself takes a second: a client that asks again at once cannot
                // turn refusals into a flood (each one may carry a body the server must drain).
                tokio::time::sleep(SLOW_REFUSAL).await;
                return Ok(req.into_response(over_share(wait.saturating_sub(SLOW_REFUSAL))));
            }
            let faulted = state.control.as_ref().is_some_and(|c| {
                admission == Admission::Api && c.faulted.contains(tenant.sandbox_id())
            });
            if faulted {
                if let Some(answer) = super::control::injected_fault(&req, &state, &tenant).await {
                    return Ok(req.into_response(answer));
                }
            }
            let org = tenant.org_id().to_owned();
            req.extensions_mut().insert(tenant);
            req.extensions_mut().insert(caller);
            let res = next
                .call(req)
                .await
                .map(ServiceResponse::map_into_boxed_body)?;
            if let BodySize::Sized(sent) = res.response().body().size() {
                state.shares.charge(&org, sent);
            }
            Ok(res)
        }
        Err(e) => {
            let response = actix_web::ResponseError::error_response(&e);
            Ok(req.into_response(response))
        }
    }
}

/// What a request's body will take from its organisation's share: its declared length, or the
/// largest body allowed when it is sent in chunks.
fn request_bytes(req: &ServiceRequest, state: &AppState) -> u64 {
    match req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(n) => n,
        None if req.headers().contains_key(header::TRANSFER_ENCODING) => {
            state.limits.max_body_bytes as u64
        }
        None => 0,
    }
}

/// How long an organisation past its share waits for its 429.
const SLOW_REFUSAL: std::time::Duration = std::time::Duration::from_secs(1);

/// 429 for an organisation that used up its share, saying when to come back (at least 1 s).
fn over_share(wait: std::time::Duration) -> actix_web::HttpResponse {
    let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    let mut res = error_body(
        Code::OverShare,
        &format!(
            "This organisation has used its share of the server (TENANT_BYTES_PER_SEC: the bytes of its requests and responses); retry after {seconds} s."
        ),
    );
    res.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
    // The body is not read: closing the connection spares reading (and discarding) it.
    res.head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Close);
    res
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
    admission: Admission,
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
    let limits = &state.limits;
    check_header_length("Authorization", token, limits.max_token_chars)?;
    let Some(api_key) = header_str(req, "x-api-key") else {
        return Err(ApiError::new(Code::ApiKeyMissing, "Api Key is required"));
    };
    check_header_length("x-api-key", api_key, limits.max_api_key_chars)?;
    let org = header_str(req, "x-gw-ims-org-id")
        .ok_or_else(|| ApiError::new(Code::OrgHeaderMissing, "Missing header"))?;
    check_org_id(org, limits.max_org_id_chars)?;
    let control_token = state.control.as_ref().and_then(|c| c.token.as_ref());
    let token = match (admission, control_token) {
        (Admission::Control, Some(expected)) => {
            // Digests are compared so the time taken says nothing about the token.
            if Sha256::digest(token) != Sha256::digest(&expected.0) {
                return Err(ApiError::new(
                    Code::TokenInvalid,
                    "Oauth token is not valid: the /_local endpoints need the CONTROL_TOKEN bearer token.",
                ));
            }
            crate::domain::Caller {
                user_id: "control".into(),
            }
        }
        _ => auth::authenticate(&state.auth, token, org)?,
    };
    check_user(&token, limits.max_id_chars)?;
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
        .resolve(&state.pool, org, sandbox_name, Caps::from_limits(limits))
        .await?;
    Ok((tenant, token))
}

/// Header values are visible ASCII (`header_str` only reads those), so bytes are characters.
fn check_header_length(name: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.len() <= max {
        return Ok(());
    }
    Err(ApiError::new(
        Code::BadHeader,
        format!(
            "Header '{name}' is {} characters long; at most {max} are allowed.",
            value.len()
        ),
    ))
}

/// The caller's id is stored as `createdBy` and filtered on like an identifier.
fn check_user(caller: &crate::domain::Caller, max: usize) -> Result<(), ApiError> {
    let chars = caller.user_id.chars().count();
    if chars <= max {
        return Ok(());
    }
    Err(ApiError::new(
        Code::BadHeader,
        format!(
            "Header 'Authorization': the token's user ('user_id' or 'sub' claim) is {chars} characters long; at most {max} are allowed."
        ),
    ))
}

/// Adobe's org ids are 24 alphanumerics and `@AdobeOrg`; test setups use simpler names such as
/// `test-org@AdobeOrg`. Both fit: letters, digits, `@`, `.`, `_` and `-`, up to the bound.
fn check_org_id(org: &str, max: usize) -> Result<(), ApiError> {
    check_header_length("x-gw-ims-org-id", org, max)?;
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'@' | b'.' | b'_' | b'-');
    if org.bytes().all(allowed) {
        return Ok(());
    }
    Err(ApiError::new(
        Code::BadHeader,
        "Header 'x-gw-ims-org-id' must hold only letters, digits, '@', '.', '_' and '-', such as 1BD6382559DF0C130A49422D@AdobeOrg.",
    ))
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

/// The gate's answers, as the OpenAPI document states them. Every operation under a gated base path
/// gets them, so an endpoint added behind the gate is documented without repeating them in its
/// handler: 401 and 403 in the gateway's shape, 400 that may also come in the gateway's shape, 415
/// and 413 on operations that take a body, and 503 when the database does not answer. Every
/// operation, gated or not, documents `x-request-id`.
pub mod openapi {
    use utoipa::openapi::{
        header::HeaderBuilder,
        path::{Operation, ParameterBuilder, ParameterIn},
        response::{Response, ResponseBuilder},
        schema::{ObjectBuilder, Type},
        Content, OpenApi, Ref, RefOr, Required,
    };

    use crate::api::{AIS_BASE, CONTROL_BASE, LANDING_BASE, UPS_BASE};

    const JSON: &str = "application/json";
    const REQUEST_ID: &str = "x-request-id";

    fn error_response(description: &str, schema: &str) -> RefOr<Response> {
        ResponseBuilder::new()
            .description(description)
            .content(JSON, Content::new(Some(Ref::from_schema_name(schema))))
            .build()
            .into()
    }

    fn add_missing(op: &mut Operation, status: &str, response: RefOr<Response>) {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert(response);
    }

    /// The header errors: the service's 400 (and other errors the handler documents) becomes
    /// "the service's body or the gateway's".
    fn document_gate(op: &mut Operation) {
        const HEADERS_400: &str = "Or a header is missing or malformed: `x-gw-ims-org-id` missing (gateway shape, `400003`); in the service's shape (`UPAPI-113400-400`), `x-gw-ims-org-id` not letters, digits, `@`, `.`, `_`, `-` or longer than 64 characters, `x-sandbox-name` missing or not `[a-z0-9-]{1,64}`, the bearer token longer than 8192 characters or `x-api-key` longer than 256 (the bounds are settings, docs/LIMITS.md); or a new `x-sandbox-name` would pass the organisation's 100 sandboxes (`UPAPI-113414-400`).";
        let bad_request = op.responses.responses.remove("400");
        let description = match bad_request {
            Some(RefOr::T(r)) => {
                let own = r.description.trim_end();
                let stop = if own.ends_with('.') { "" } else { "." };
                format!("{own}{stop} {HEADERS_400}")
            }
            _ => HEADERS_400.replacen("Or a", "A", 1),
        };
        op.responses.responses.insert(
            "400".to_owned(),
            error_response(&description, "BadRequestBody"),
        );
        add_missing(
            op,
            "401",
            error_response(
                "`Authorization` is missing (`403010`) or is not a valid bearer token (`401013`). Gateway shape.",
                "GatewayError",
            ),
        );
        add_missing(
            op,
            "403",
            error_response(
                "`x-api-key` is missing (`403000`), or in `verify` mode the token may not act for this organisation (`403025`). Gateway shape.",
                "GatewayError",
            ),
        );
        if op.request_body.is_some() {
            add_missing(
                op,
                "413",
                error_response(
                    "The body is larger than `MAX_BODY_BYTES` (2 MiB by default).",
                    "ErrorBody",
                ),
            );
            add_missing(
                op,
                "415",
                error_response(
                    "`Content-Type` is neither JSON (`application/json`, `application/*+json`) nor `application/x-www-form-urlencoded` (what `curl -d` sends; the body is read as JSON).",
                    "ErrorBody",
                ),
            );
        }
        add_missing(
            op,
            "429",
            retry_later("The organisation has used its share of this server (`TENANT_BYTES_PER_SEC`, bytes of requests and responses); retry after `Retry-After` seconds (`UPAPI-113429-429`)."),
        );
        add_missing(
            op,
            "503",
            retry_later("The database timed out, is not reachable or is overloaded; retry after `Retry-After` seconds."),
        );
    }

    /// 503: the database timed out, is unreachable or overloaded; `Retry-After` says when to retry.
    /// An error answer that says when to come back (`Retry-After`).
    fn retry_later(description: &str) -> RefOr<Response> {
        let mut response = ResponseBuilder::new()
            .description(description)
            .content(JSON, Content::new(Some(Ref::from_schema_name("ErrorBody"))))
            .build();
        response.headers.insert(
            "Retry-After".to_owned(),
            HeaderBuilder::new()
                .schema(Some(
                    ObjectBuilder::new().schema_type(Type::Integer).build(),
                ))
                .description(Some("Seconds to wait before retrying."))
                .build()
                .into(),
        );
        response.into()
    }

    /// `x-request-id` is echoed (or made) on every response.
    fn document_request_id(op: &mut Operation) {
        let string = || ObjectBuilder::new().schema_type(Type::String).build();
        let parameter = ParameterBuilder::new()
            .name(REQUEST_ID)
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "Your id for this request (up to 128 visible ASCII characters); echoed in the response and in error bodies. One is made when absent.",
            ))
            .schema(Some(string()))
            .build();
        let parameters = op.parameters.get_or_insert_with(Vec::new);
        let present = parameters
            .iter()
            .any(|p| matches!(p, RefOr::T(p) if p.name.eq_ignore_ascii_case(REQUEST_ID)));
        if !present {
            parameters.push(RefOr::T(parameter));
        }
        for response in op.responses.responses.values_mut() {
            if let RefOr::T(response) = response {
                response
                    .headers
                    .entry(REQUEST_ID.to_owned())
                    .or_insert_with(|| {
                        HeaderBuilder::new()
                        .schema(Some(string()))
                        .description(Some(
                            "The caller's `x-request-id`, or 32 alphanumerics made by the server.",
                        ))
                        .build()
                        .into()
                    });
            }
        }
    }

    /// Applies the gate's answers to the operations it guards, and states that the others need
    /// no credentials.
    pub fn document(doc: &mut OpenApi) {
        for (path, item) in doc.paths.paths.iter_mut() {
            let gated = [UPS_BASE, AIS_BASE, LANDING_BASE, CONTROL_BASE]
                .iter()
                .any(|base| path.starts_with(&format!("{base}/")));
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ]
            .into_iter()
            .flatten()
            {
                if gated {
                    document_gate(op);
                } else {
                    op.security = Some(Vec::new());
                }
                document_request_id(op);
            }
        }
    }
}
