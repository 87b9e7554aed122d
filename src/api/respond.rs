//! The one mapping from [`ApiError`] to an HTTP response, and the helpers handlers answer with.

use actix_web::{
    body::BoxBody,
    http::{header, StatusCode},
    HttpResponse, HttpResponseBuilder, ResponseError,
};
use serde_json::json;

use crate::{
    error::{ApiError, Code, Shape},
    telemetry,
};

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code.spec().status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        // The cause (database or file-system text) goes to the log only, with the request id
        // the client sees in its error body.
        if let Some(source) = &self.source {
            tracing::error!(
                request_id = %telemetry::request_id(),
                code = self.code.spec().wire,
                error = ?source,
                "request failed"
            );
        }
        error_body(self.code, &self.message)
    }
}

/// An error response in the shape its code calls for.
pub fn error_body(code: Code, message: &str) -> HttpResponse {
    let status =
        StatusCode::from_u16(code.spec().status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = if code.spec().shape == Shape::Azure {
        HttpResponse::build(status)
            .content_type("application/xml")
            .insert_header((AZURE_ERROR_CODE, code.spec().wire))
            .insert_header((AZURE_REQUEST_ID, telemetry::request_id()))
            .body(azure_error_xml(code, message))
    } else {
        HttpResponse::build(status)
            .content_type(mime_json())
            .body(error_json(code, message).to_string())
    };
    // The middleware counts errors by code from this mark.
    response.extensions_mut().insert(AnsweredCode(code));
    response
}

/// The header that carries an Azure error's code (the only place a HEAD answer can say it).
pub const AZURE_ERROR_CODE: &str = "x-ms-error-code";
pub const AZURE_REQUEST_ID: &str = "x-ms-request-id";

/// Azure Storage's error document. `AuthenticationFailed` keeps Azure's fixed message and puts the
/// reason in `AuthenticationErrorDetail`, as the real service does.
fn azure_error_xml(code: Code, message: &str) -> String {
    use quick_xml::escape::partial_escape as escape;
    let now = chrono::Utc::now();
    // Azure states the time with seven fractional digits.
    let stamp = format!(
        "\nRequestId:{}\nTime:{}.{:07}Z",
        telemetry::request_id(),
        now.format("%Y-%m-%dT%H:%M:%S"),
        now.timestamp_subsec_nanos() / 100
    );
    let (text, detail) = if code == Code::AzureAuthenticationFailed {
        (
            "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
            Some(message),
        )
    } else {
        (message, None)
    };
    let detail = detail
        .map(|d| {
            format!(
                "<AuthenticationErrorDetail>{}</AuthenticationErrorDetail>",
                escape(d)
            )
        })
        .unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{}</Code><Message>{}</Message>{detail}</Error>",
        code.spec().wire,
        escape(format!("{text}{stamp}").as_str()),
    )
}

/// The error code a response answers with, for the metrics.
#[derive(Debug, Clone, Copy)]
pub struct AnsweredCode(pub Code);

/// The JSON of an error body, for answers that embed one (bulk-get's missing ids).
pub fn error_json(code: Code, message: &str) -> serde_json::Value {
    let spec = code.spec();
    match spec.shape {
        Shape::Gateway => json!({ "error_code": spec.wire, "message": message }),
        Shape::Service | Shape::Azure => json!({
            "requestId": telemetry::request_id(),
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
