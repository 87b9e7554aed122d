//! Test control for client suites (`/_local`, docs/CONTROL.md): reset a sandbox, drain its jobs.
//! Served only with `CONTROL_API` on (`gate::control_gate`); tenant-scoped by the usual headers.

use actix_web::{http::StatusCode, post, web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::{ais::query_param, respond, schemas::ErrorBody, AppState};
use crate::{
    config::Secret,
    domain::{
        control::{self, Drained, Removed},
        Tenant,
    },
    error::{ApiError, Code},
    service::control as service,
    storage::{self, StoreError},
    worker::Worker,
};

pub const TAG: &str = "Test control";

/// What the test-control endpoints need; present only when `CONTROL_API` is on.
pub struct Control {
    /// `CONTROL_TOKEN`: the bearer the endpoints require when set.
    pub token: Option<Secret>,
    /// `CONTROL_DRAIN_MAX_SECS`.
    pub drain_max_secs: u64,
    /// A worker on the HTTP side's pool that carries out a drained sandbox's jobs.
    pub worker: Worker,
}

fn ok(body: &impl Serialize) -> Result<HttpResponse, ApiError> {
    let text = serde_json::to_string(body).map_err(ApiError::internal)?;
    Ok(respond::json_text(StatusCode::OK, text))
}

fn control(state: &AppState) -> Result<&Control, ApiError> {
    state
        .control
        .as_ref()
        .ok_or_else(|| ApiError::new(Code::RouteNotFound, "No resource at this path."))
}

/// A step's failure as the client sees it: 503 when the database could not serve (as every
/// request answers then), else a fault of ours.
fn worker_failed(e: anyhow::Error) -> ApiError {
    let unavailable = e.chain().any(|cause| {
        let db = match cause.downcast_ref::<StoreError>() {
            Some(StoreError::Db(db)) => Some(db),
            _ => cause.downcast_ref::<sqlx::Error>(),
        };
        db.is_some_and(storage::is_unavailable)
    });
    if unavailable {
        ApiError::unavailable(e)
    } else {
        ApiError::internal(e)
    }
}

/// Reset the sandbox.
#[utoipa::path(
    tag = TAG,
    operation_id = "resetSandbox",
    summary = "Remove everything of this sandbox",
    description = "Deletes, in one transaction, every UPS audience, external audience, creation operation, ingestion run (with its members and staged rows), worker job and the clock offset of the sandbox named by the headers, then the files of its landing zone. Other sandboxes are untouched. The sandbox itself, its landing zone's account and its credential stay. Answers what was removed.",
    responses(
        (status = 200, description = "What was removed", body = Removed),
        (status = 404, description = "`CONTROL_API` is off: the test-control endpoints are not served", body = ErrorBody),
    )
)]
#[post("/sandbox/reset")]
pub async fn reset_sandbox(
    state: web::Data<AppState>,
    tenant: Tenant,
) -> Result<HttpResponse, ApiError> {
    let removed = service::reset(&state.pool, &tenant, &state.landing.root).await?;
    ok(&removed)
}

/// Drain the sandbox's jobs.
#[utoipa::path(
    tag = TAG,
    operation_id = "drainWorker",
    summary = "Run every job of this sandbox now",
    description = "Carries out every open job of the sandbox (external-audience creations, ingestion-run stages), including jobs waiting for a retry's backoff, and waits for the steps other workers are running; answers when none is left, so a suite needs no polling. A step that keeps failing is retried at once until `WORKER_MAX_ATTEMPTS`, then its operation or run fails as usual. Past `timeout` the answer is 408 and the jobs left are continued by the background worker.",
    params(
        ("timeout" = Option<u64>, Query, minimum = 1, description = "Seconds to wait at most: 1 to `CONTROL_DRAIN_MAX_SECS` (default 120); default 30"),
    ),
    responses(
        (status = 200, description = "No job of the sandbox is left", body = Drained),
        (status = 400, description = "`timeout` is not 1 to `CONTROL_DRAIN_MAX_SECS`", body = ErrorBody),
        (status = 404, description = "`CONTROL_API` is off: the test-control endpoints are not served", body = ErrorBody),
        (status = 408, description = "Jobs were left when `timeout` passed (`UPAPI-113408-408`)", body = ErrorBody),
    )
)]
#[post("/worker/drain")]
pub async fn drain_worker(
    state: web::Data<AppState>,
    tenant: Tenant,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let control = control(&state)?;
    let raw = query_param(&req, "timeout");
    let seconds = control::drain_timeout(raw.as_deref(), control.drain_max_secs)
        .map_err(|rule| ApiError::bad_param("timeout", rule))?;
    let started = tokio::time::Instant::now();
    let deadline = started + std::time::Duration::from_secs(seconds);
    let (steps, drained) = control
        .worker
        .drain_sandbox(tenant.sandbox_id(), deadline)
        .await
        .map_err(worker_failed)?;
    if !drained {
        return Err(ApiError::new(
            Code::ControlTimeout,
            format!(
                "Query parameter 'timeout': jobs of this sandbox were still open after {seconds} s ({steps} steps done); the background worker continues them."
            ),
        ));
    }
    ok(&Drained {
        steps,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}
