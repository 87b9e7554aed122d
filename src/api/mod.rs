//! HTTP only: routes, extractors, and the mapping of errors to responses.

pub mod ais;
pub mod ais_schemas;
pub mod audiences;
pub mod blob;
pub mod context;
pub mod control;
pub mod docs;
pub mod examples;
pub mod gate;
pub mod health;
pub mod landing;
pub mod links;
pub mod metrics;
pub mod respond;
pub mod schemas;
pub mod share;

use std::{
    collections::HashMap,
    future::{ready, Ready},
    sync::{LazyLock, RwLock},
};

use actix_web::{
    dev::{Payload, ResourceDef},
    middleware::from_fn,
    web, FromRequest, HttpMessage, HttpRequest, HttpResponse,
};
use serde_json::Value;
use sqlx::PgPool;
use utoipa_actix_web::{scope, service_config::ServiceConfig, AppExt};

use crate::{
    auth::AuthConfig,
    config::Limits,
    domain::{limits::check_body_depth, Caller, Sandbox, Tenant},
    error::{ApiError, Code},
    storage::{
        self,
        sandboxes::{Caps, Registered},
    },
};

pub const UPS_BASE: &str = "/data/core/ups";
pub const AIS_BASE: &str = "/data/core/ais";
/// Adobe's Connectors API, where the Data Landing Zone endpoints live.
pub const LANDING_BASE: &str = "/data/foundation/connectors";
/// The test-control endpoints (docs/CONTROL.md), served only with `CONTROL_API` on.
pub const CONTROL_BASE: &str = "/_local";

/// What every handler can reach.
pub struct AppState {
    pub pool: PgPool,
    pub auth: AuthConfig,
    pub sandboxes: SandboxCache,
    pub openapi_json: String,
    /// The time every rule reads (`Settings::clock`).
    pub clock: crate::domain::clock::Clock,
    /// The clock and the run guardrails of the AIS family.
    pub ais: crate::service::ais::AisConfig,
    /// The bounds on every input.
    pub limits: Limits,
    /// Each organisation's share of this server (bytes per second).
    pub shares: share::Shares,
    /// Landing zones: where they live, their bounds, the public URL of the blob API.
    pub landing: crate::service::landing::LandingConfig,
    /// The key that signs landing-zone SAS tokens, read once.
    pub landing_keys: crate::service::landing::Keys,
    /// This server's metrics.
    pub monitoring: std::sync::Arc<crate::monitoring::Monitoring>,
    /// The bearer token `/metrics` requires, when one is configured.
    pub metrics_token: Option<crate::config::Secret>,
    /// Readiness: set on SIGTERM, and once the migrations were found applied.
    pub lifecycle: std::sync::Arc<health::Lifecycle>,
    /// The test control (`/_local`), when `CONTROL_API` is on.
    pub control: Option<control::Control>,
}

/// Sandboxes already registered, so that a request costs no extra query once its sandbox is known.
/// Only sandboxes the database registered are cached, so the cache cannot let an organisation
/// pass its cap of sandboxes.
#[derive(Default)]
pub struct SandboxCache {
    known: RwLock<HashMap<(String, String), Sandbox>>,
}

impl SandboxCache {
    const MAX_ENTRIES: usize = 10_000;

    pub async fn resolve(
        &self,
        pool: &PgPool,
        org: &str,
        name: &str,
        caps: Caps,
    ) -> Result<Tenant, ApiError> {
        let key = (org.to_owned(), name.to_owned());
        let cached = self.known.read().ok().and_then(|m| m.get(&key).cloned());
        let sandbox = match cached {
            Some(s) => s,
            None => {
                let s = match storage::sandboxes::register(pool, org, name, caps).await? {
                    Registered::Sandbox(s) => s,
                    Registered::OrgFull => {
                        return Err(ApiError::limit(format!(
                            "Header 'x-sandbox-name': the organisation already uses {} sandboxes, the most this server allows; use one of them.",
                            caps.sandboxes_per_org
                        )))
                    }
                    Registered::ServerFull => {
                        return Err(ApiError::limit(format!(
                            "Header 'x-gw-ims-org-id': the server already serves {} organisations, the most it allows; use a known one.",
                            caps.organisations
                        )))
                    }
                };
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

/// The API family a body belongs to, for the codes its refusals carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Ups,
    Ais,
}

impl Family {
    fn bad_body(self, message: impl Into<String>) -> ApiError {
        match self {
            Family::Ups => ApiError::bad_body(message),
            Family::Ais => ApiError::ais_invalid(message),
        }
    }

    fn limit(self, message: impl Into<String>) -> ApiError {
        match self {
            Family::Ups => ApiError::limit(message),
            Family::Ais => ApiError::ais_invalid(message),
        }
    }
}

/// Parses a request body as JSON, within the depth bound.
pub fn json_body(bytes: &[u8], family: Family, limits: &Limits) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(family.bad_body("The request body is required."));
    }
    // Measured on the text first: the parser refuses deep nesting with a message of its own.
    check_body_depth(bytes, limits.max_json_depth).map_err(|m| family.limit(m))?;
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| family.bad_body(format!("The request body is not valid JSON: {e}.")))?;
    if holds_nul(&value) {
        return Err(family.bad_body(
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
    cfg.service(
        scope::scope(LANDING_BASE)
            .wrap(from_fn(gate::gate))
            .service(landing::get_landing_zone)
            .service(landing::get_credentials)
            .service(landing::refresh_credentials)
            .default_service(web::to(unmatched)),
    );
    // Registered (and documented) always; `control_gate` answers 404 when `CONTROL_API` is off.
    cfg.service(
        scope::scope(CONTROL_BASE)
            .wrap(from_fn(gate::control_gate))
            .service(control::reset_sandbox)
            .service(control::drain_worker)
            .service(control::get_clock)
            .service(control::set_clock)
            .service(control::clear_clock)
            .service(control::add_fault)
            .service(control::list_faults)
            .service(control::clear_faults)
            .service(control::export_sandbox)
            .default_service(web::to(unmatched)),
    );
}

/// The paths `configure` registers (utoipa-actix-web collects them as it registers the handlers),
/// as actix matches them: a request no route took on one of these had the wrong method (405),
/// anywhere else the wrong path (404). Read once, from the registration itself, so a new
/// endpoint is known here without a second list.
fn served_paths() -> &'static [ResourceDef] {
    static PATHS: LazyLock<Vec<ResourceDef>> = LazyLock::new(|| {
        let (_, doc) = actix_web::App::new()
            .into_utoipa_app()
            .configure(configure)
            .split_for_parts();
        doc.paths
            .paths
            .keys()
            .map(|path| ResourceDef::new(path.as_str()))
            .collect()
    });
    &PATHS
}

/// The answer for any request no route took.
pub async fn unmatched(req: HttpRequest) -> HttpResponse {
    let path = req.path();
    let known = served_paths().iter().any(|p| p.is_match(path));
    if known {
        respond::error_body(
            Code::MethodNotAllowed,
            &format!("Method {} is not allowed on {path}.", req.method()),
        )
    } else {
        respond::error_body(Code::RouteNotFound, &format!("No resource at {path}."))
    }
}
