//! The one mapping from [`ApiError`] to an HTTP response, and the helpers handlers answer with.

use actix_web::{
    body::BoxBody,
    http::{header, StatusCode},
    HttpResponse, HttpResponseBuilder, ResponseError,
};
use serde_json::json;

use super::context;
use crate::error::{ApiError, Code, Shape};

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code.spec().status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        if let Some(source) = &self.source {
            tracing::error!(code = self.code.spec().wire, error = ?source, "request failed");
        }
        error_body(self.code, &self.message)
    }
}

/// An error response in the shape its code calls for.
pub fn error_body(code: Code, message: &str) -> HttpResponse {
    let status =
        StatusCode::from_u16(code.spec().status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status)
        .content_type(mime_json())
        .body(error_json(code, message).to_string());
    // The middleware counts errors by code from this mark.
    response.extensions_mut().insert(AnsweredCode(code));
    response
}

/// The error code a response answers with, for the metrics.
#[derive(Debug, Clone, Copy)]
pub struct AnsweredCode(pub Code);

/// The JSON of an error body, for answers that embed one (bulk-get's missing ids).
pub fn error_json(code: Code, message: &str) -> serde_json::Value {
    let spec = code.spec();
    match spec.shape {
        Shape::Gateway => json!({ "error_code": spec.wire, "message": message }),
        Shape::Service => json!({
            "requestId": context::request_id(),
            "type": format!("https://ns.adobe.com/aep/errors/{}", spec.wire),
            "title": message,
            "status": spec.status,
            "errors": { spec.status.to_string(): [ { "code": spec.wire, "message": message } ] },
        }),
    }
}

pub fn mime_json() -> header::ContentType {
    header::ContentType::json()
}

/// A response whose body is JSON text the storage already rendered.
pub fn json_text(status: StatusCode, body: String) -> HttpResponse {
    HttpResponseBuilder::new(status)
        .content_type(mime_json())
        .body(body)
}

/// One audience, with its etag also in the `ETag` header.
pub fn audience(status: StatusCode, body: String, etag: &str) -> HttpResponse {
    HttpResponseBuilder::new(status)
        .content_type(mime_json())
        .insert_header((header::ETAG, etag))
        .body(body)
}
