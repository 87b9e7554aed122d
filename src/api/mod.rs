//! HTTP only: routes, extractors, and the mapping of errors to responses.

pub mod ais;
pub mod ais_schemas;
pub mod audiences;
pub mod context;
pub mod docs;
pub mod examples;
pub mod gate;
pub mod health;
pub mod metrics;
pub mod respond;
pub mod schemas;

use std::{
    collections::HashMap,
    future::{ready, Ready},
    sync::RwLock,
};

use actix_web::{
    dev::{Payload, ResourceDef},
    middleware::from_fn,
    web, FromRequest, HttpMessage, HttpRequest, HttpResponse,
};
use serde_json::Value;
use sqlx::PgPool;
use utoipa_actix_web::{scope, service_config::ServiceConfig};

use crate::{
    auth::AuthConfig,
    domain::{Caller, Sandbox, Tenant},
    error::{ApiError, Code},
    storage,
};

pub const UPS_BASE: &str = "/data/core/ups";
pub const AIS_BASE: &str = "/data/core/ais";
/// Request bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// What every handler can reach.
pub struct AppState {
    pub pool: PgPool,
    pub auth: AuthConfig,
    pub sandboxes: SandboxCache,
    pub openapi_json: String,
    /// The clock and the run guardrails of the AIS family.
    pub ais: crate::service::ais::AisConfig,
    /// This server's metrics.
    pub monitoring: std::sync::Arc<crate::monitoring::Monitoring>,
    /// The bearer token `/metrics` requires, when one is configured.
    pub metrics_token: Option<crate::config::Secret>,
    /// Readiness: set on SIGTERM, and once the migrations were found applied.
    pub lifecycle: std::sync::Arc<health::Lifecycle>,
}

/// Sandboxes already registered, so that a request costs no extra query once its sandbox is known.
#[derive(Default)]
pub struct SandboxCache {
    known: RwLock<HashMap<(String, String), Sandbox>>,
}

impl SandboxCache {
    const MAX_ENTRIES: usize = 10_000;

    pub async fn resolve(&self, pool: &PgPool, org: &str, name: &str) -> Result<Tenant, ApiError> {
        let key = (org.to_owned(), name.to_owned());
        let cached = self.known.read().ok().and_then(|m| m.get(&key).cloned());
        let sandbox = match cached {
            Some(s) => s,
            None => {
                let s = storage::sandboxes::register(pool, org, name).await?;
                if let Ok(mut m) = self.known.write() {
                    if m.len() >= Self::MAX_ENTRIES {
                        m.clear();
                    }
                    m.insert(key, s.clone());
                }
                s
            }
        };
        Ok(Tenant::new(org.to_owned(), sandbox))
    }
}

/// Reads what the gate attached to the request.
fn from_extensions<T: Clone + 'static>(req: &HttpRequest) -> Result<T, ApiError> {
    req.extensions()
        .get::<T>()
        .cloned()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("request did not pass the gate")))
}

impl FromRequest for Tenant {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(from_extensions(req))
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(from_extensions(req))
    }
}

/// Parses a request body as JSON; `code` is the family's "bad body" code.
pub fn json_body(bytes: &[u8], code: Code) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(code, "The request body is required."));
    }
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(code, format!("The request body is not valid JSON: {e}.")))?;
    if holds_nul(&value) {
        return Err(ApiError::new(
            code,
            "The request body must not contain the character U+0000 (\\u0000) in a string or key.",
        ));
    }
    Ok(value)
}

/// Whether a string or key anywhere in `value` holds U+0000, which PostgreSQL text cannot store.
fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// Registers every route. Both the server and the OpenAPI export call this, so the document
/// describes exactly what is served.
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(health::health)
        .service(health::ready)
        .service(metrics::metrics)
        .service(
            scope::scope(UPS_BASE)
                .wrap(from_fn(gate::gate))
                .service(audiences::list_audiences)
                .service(audiences::create_audience)
                .service(audiences::bulk_get_audiences)
                .service(audiences::get_audience)
                .service(audiences::replace_audience)
                .service(audiences::patch_audience)
                .service(audiences::delete_audience)
                .default_service(web::to(unmatched)),
        );
    // AIS: `extend-ttl/{id}` is registered before `{id}/runs` so the literal segment wins.
    cfg.service(
        scope::scope(AIS_BASE)
            .wrap(from_fn(gate::gate))
            .service(ais::create_meta_only)
            .service(ais::create_external)
            .service(ais::get_operation)
            .service(ais::extend_ttl)
            .service(ais::get_external)
            .service(ais::patch_external)
            .service(ais::delete_external)
            .service(ais::start_run)
            .service(ais::list_runs)
            .service(ais::get_run)
            .default_service(web::to(unmatched)),
    );
}

/// Paths the API serves, for telling a wrong method (405) from an unknown path (404).
const KNOWN_PATHS: &[&str] = &[
    "/data/core/ups/audiences",
    "/data/core/ups/audiences/bulk-get",
    "/data/core/ups/audiences/{id}",
    "/data/core/ais/audiences",
    "/data/core/ais/external-audience",
    "/data/core/ais/external-audience/operations/{id}",
    "/data/core/ais/external-audience/extend-ttl/{id}",
    "/data/core/ais/external-audience/{id}",
    "/data/core/ais/external-audience/{id}/runs",
    "/data/core/ais/external-audience/{id}/runs/{run}",
];

/// The answer for any request no route took.
pub async fn unmatched(req: HttpRequest) -> HttpResponse {
    let path = req.path();
    let known = KNOWN_PATHS
        .iter()
        .any(|p| ResourceDef::new(*p).is_match(path));
    if known {
        respond::error_body(
            Code::MethodNotAllowed,
            &format!("Method {} is not allowed on {path}.", req.method()),
        )
    } else {
        respond::error_body(Code::RouteNotFound, &format!("No resource at {path}."))
    }
}
