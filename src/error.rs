//! The one error type of the service and its code table.
//!
//! Every failure a client can see is an [`ApiError`]: a [`Code`] (status and wire code, declared once
//! in [`Code::spec`]) plus a human message. The HTTP shape lives in `api::respond`; internal causes
//! are logged there and never sent.

use std::fmt;

/// Every error code the server can answer with. The table in [`Code::spec`] is the only place that
/// maps a code to its HTTP status and wire string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    // Gateway-level header errors: answered in the gateway's flat shape.
    TokenMissing,
    TokenInvalid,
    ApiKeyMissing,
    OrgHeaderMissing,
    ProfileNotValid,
    // UPS family.
    BadBody,
    BadHeader,
    BadParameter,
    LimitExceeded,
    OverShare,
    AudienceInvalid,
    HasDependents,
    BulkGetSize,
    AudienceNotFound,
    BulkGetNoneFound,
    RouteNotFound,
    MethodNotAllowed,
    UnsupportedMediaType,
    PayloadTooLarge,
    AudienceConflict,
    PreconditionFailed,
    Internal,
    Unavailable,
    // AIS family.
    AisValidation,
    AisNotAcceptable,
    AisNotFound,
    AisConflict,
    AisUnprocessable,
    // Test control (`/_local`).
    ControlTimeout,
    // Landing-zone endpoints (Adobe's Connectors API, Flow Service codes).
    LandingInvalid,
    // The Azure Blob subset of the landing zones: answered in Azure's XML shape.
    AzureAuthenticationFailed,
    AzurePermissionMismatch,
    AzureBlobNotFound,
    AzureBlobAlreadyExists,
    AzurePathConflict,
    AzureInvalidResourceName,
    AzureInvalidBlockId,
    AzureInvalidBlockList,
    AzureBlockListTooLong,
    AzureBlockCountExceedsLimit,
    AzureInvalidBlobOrBlock,
    AzureRequestBodyTooLarge,
    AzureInvalidRange,
    AzureConditionNotMet,
    AzureMd5Mismatch,
    AzureMissingRequiredHeader,
    AzureInvalidHeaderValue,
    AzureInvalidQueryParameterValue,
    AzureOutOfRangeQueryParameterValue,
    AzureOutOfRangeInput,
    AzureUnsupportedQueryParameter,
    AzureInvalidXmlDocument,
    AzureInvalidUri,
    AzureUnsupportedHttpVerb,
    AzureRequestTimeout,
    AzureInternalError,
    AzureServerBusy,
}

/// How a code is answered on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `{"error_code": "...", "message": "..."}` as Adobe's gateway answers.
    Gateway,
    /// `{"requestId", "type", "title", "status", "errors": {"<status>": [{code, message}]}}`.
    Service,
    /// Azure Storage's `<Error><Code>…</Code><Message>…</Message></Error>` with the code also in
    /// the `x-ms-error-code` header (the landing zones' blob API).
    Azure,
}

pub struct CodeSpec {
    pub status: u16,
    pub wire: &'static str,
    pub shape: Shape,
}

impl Code {
    pub const fn spec(self) -> CodeSpec {
        use Code::*;
        use Shape::*;
        let (status, wire, shape) = match self {
            TokenMissing => (401, "403010", Gateway),
            TokenInvalid => (401, "401013", Gateway),
            ApiKeyMissing => (403, "403000", Gateway),
            OrgHeaderMissing => (400, "400003", Gateway),
            ProfileNotValid => (403, "403025", Gateway),
            BadBody => (400, "UPLIB-101206-500", Service),
            BadHeader => (400, "UPAPI-113400-400", Service),
            BadParameter => (400, "UPAPI-113401-400", Service),
            LimitExceeded => (400, "UPAPI-113414-400", Service),
            OverShare => (429, "UPAPI-113429-429", Service),
            AudienceInvalid => (400, "UPAPI-113434-400", Service),
            HasDependents => (400, "UPAPI-113631-403", Service),
            BulkGetSize => (400, "UPAPI-113015-400", Service),
            AudienceNotFound => (404, "UPAPI-113430-404", Service),
            BulkGetNoneFound => (404, "UPAPI-113000-404", Service),
            RouteNotFound => (404, "UPAPI-113404-404", Service),
            MethodNotAllowed => (405, "UPAPI-113405-405", Service),
            UnsupportedMediaType => (415, "UPAPI-113415-415", Service),
            PayloadTooLarge => (413, "UPAPI-113413-413", Service),
            AudienceConflict => (409, "UPAPI-113409-409", Service),
            PreconditionFailed => (412, "UPAPI-113412-412", Service),
            Internal => (500, "UPAPI-113500-500", Service),
            Unavailable => (503, "UPAPI-113503-503", Service),
            AisValidation => (400, "100910-400", Service),
            AisNotAcceptable => (406, "100906-406", Service),
            AisNotFound => (404, "100940-404", Service),
            AisConflict => (409, "100950-409", Service),
            AisUnprocessable => (422, "100960-422", Service),
            ControlTimeout => (408, "UPAPI-113408-408", Service),
            LandingInvalid => (400, "1100-400", Service),
            AzureAuthenticationFailed => (403, "AuthenticationFailed", Azure),
            AzurePermissionMismatch => (403, "AuthorizationPermissionMismatch", Azure),
            AzureBlobNotFound => (404, "BlobNotFound", Azure),
            AzureBlobAlreadyExists => (409, "BlobAlreadyExists", Azure),
            AzurePathConflict => (409, "PathConflict", Azure),
            AzureInvalidResourceName => (400, "InvalidResourceName", Azure),
            AzureInvalidBlockId => (400, "InvalidBlockId", Azure),
            AzureInvalidBlockList => (400, "InvalidBlockList", Azure),
            AzureBlockListTooLong => (400, "BlockListTooLong", Azure),
            AzureBlockCountExceedsLimit => (409, "BlockCountExceedsLimit", Azure),
            AzureInvalidBlobOrBlock => (400, "InvalidBlobOrBlock", Azure),
            AzureRequestBodyTooLarge => (413, "RequestBodyTooLarge", Azure),
            AzureInvalidRange => (416, "InvalidRange", Azure),
            AzureConditionNotMet => (412, "ConditionNotMet", Azure),
            AzureMd5Mismatch => (400, "Md5Mismatch", Azure),
            AzureMissingRequiredHeader => (400, "MissingRequiredHeader", Azure),
            AzureInvalidHeaderValue => (400, "InvalidHeaderValue", Azure),
            AzureInvalidQueryParameterValue => (400, "InvalidQueryParameterValue", Azure),
            AzureOutOfRangeQueryParameterValue => (400, "OutOfRangeQueryParameterValue", Azure),
            AzureOutOfRangeInput => (400, "OutOfRangeInput", Azure),
            AzureUnsupportedQueryParameter => (400, "UnsupportedQueryParameter", Azure),
            AzureInvalidXmlDocument => (400, "InvalidXmlDocument", Azure),
            AzureInvalidUri => (400, "InvalidUri", Azure),
            AzureUnsupportedHttpVerb => (405, "UnsupportedHttpVerb", Azure),
            AzureRequestTimeout => (408, "OperationTimedOut", Azure),
            AzureInternalError => (500, "InternalError", Azure),
            AzureServerBusy => (503, "ServerBusy", Azure),
        };
        CodeSpec {
            status,
            wire,
            shape,
        }
    }
}

/// A client-visible failure: what went wrong (code) and a message that names the field and rule.
#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    /// The internal cause, logged and never sent.
    pub source: Option<anyhow::Error>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            source: None,
        }
    }

    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        ApiError {
            code: Code::Internal,
            message: "An internal error occurred. Quote the requestId when reporting it.".into(),
            source: Some(source.into()),
        }
    }

    /// The database cannot serve now (timeout, lost connection, overload): 503, retry later.
    pub fn unavailable(source: impl Into<anyhow::Error>) -> Self {
        ApiError {
            code: Code::Unavailable,
            message: "The service is busy or its database is not reachable. Retry after the time in the Retry-After header.".into(),
            source: Some(source.into()),
        }
    }

    /// A request went past one of the server's bounds (`config::Limits`).
    pub fn limit(message: impl Into<String>) -> Self {
        Self::new(Code::LimitExceeded, message)
    }

    pub fn audience_not_found(id: &str) -> Self {
        Self::new(
            Code::AudienceNotFound,
            format!("The audience entity {id} is not found. Use a valid entity and try again."),
        )
    }

    /// (namespace, audienceId) is taken in the sandbox: the UPS answer to
    /// [`Conflict::AudienceKeyTaken`](crate::storage::Conflict::AudienceKeyTaken).
    pub fn audience_key_taken(namespace: &str, audience_id: &str) -> Self {
        Self::new(
            Code::AudienceConflict,
            format!(
                "An audience with namespace '{namespace}' and audienceId '{audience_id}' already exists in this sandbox."
            ),
        )
    }

    pub fn bad_body(message: impl Into<String>) -> Self {
        Self::new(Code::BadBody, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::AudienceInvalid, message)
    }

    pub fn bad_param(name: &str, rule: impl fmt::Display) -> Self {
        Self::new(
            Code::BadParameter,
            format!("Query parameter '{name}' is invalid: {rule}"),
        )
    }

    pub fn ais_invalid(message: impl Into<String>) -> Self {
        Self::new(Code::AisValidation, message)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.spec().wire, self.message)
    }
}

impl std::error::Error for ApiError {}
