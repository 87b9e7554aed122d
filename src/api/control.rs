//! Test control for client suites (`/_local`, docs/CONTROL.md): reset a sandbox, drain its jobs,
//! move its clock, inject faults, export it as a fixture.
//! Served only with `CONTROL_API` on (`gate::control_gate`); tenant-scoped by the usual headers.

use actix_web::{delete, get, http::StatusCode, post, put, web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::{ais::query_param, json_body, respond, schemas::ErrorBody, AppState, Family};
use crate::{
    config::Secret,
    domain::{
        control::{
            self, ClockOffset, Drained, Fault, FaultBounds, FaultRequest, Removed, SandboxClock,
            SandboxFixture,
        },
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
    /// One permit per drain running now (`CONTROL_MAX_CONCURRENT_DRAINS`).
    pub drains: tokio::sync::Semaphore,
    /// `CONTROL_MAX_CLOCK_OFFSET_DAYS`.
    pub max_clock_offset_days: i64,
    /// `CONTROL_MAX_FAULTS`.
    pub max_faults: i64,
    /// `CONTROL_EXPORT_MAX_BYTES`.
    pub export_max_bytes: u64,
    /// A worker on the HTTP side's pool that carries out a drained sandbox's jobs.
    pub worker: Worker,
    /// The sandboxes with request faults, as this process last read them.
    pub faulted: FaultedSandboxes,
    /// `CONTROL_FAULT_REFRESH_MS`.
    pub fault_refresh: std::time::Duration,
}

/// The sandboxes that hold request faults with runs left, read from the database every
/// `CONTROL_FAULT_REFRESH_MS` by each process ([`refresh_faulted`]), so that the request gate asks
/// the database for a fault only for requests of those sandboxes, not for every request.
#[derive(Default)]
pub struct FaultedSandboxes(std::sync::RwLock<std::collections::HashSet<uuid::Uuid>>);

impl FaultedSandboxes {
    pub fn contains(&self, sandbox: uuid::Uuid) -> bool {
        self.0.read().is_ok_and(|s| s.contains(&sandbox))
    }

    fn insert(&self, sandbox: uuid::Uuid) {
        if let Ok(mut s) = self.0.write() {
            s.insert(sandbox);
        }
    }

    fn replace(&self, sandboxes: Vec<uuid::Uuid>) {
        if let Ok(mut s) = self.0.write() {
            *s = sandboxes.into_iter().collect();
        }
    }
}

/// Reads which sandboxes hold request faults every `CONTROL_FAULT_REFRESH_MS`, for as long as
/// the server runs (a failed read keeps the last answer).
pub async fn refresh_faulted(state: web::Data<AppState>) {
    let Some(control) = &state.control else {
        return;
    };
    let mut every = tokio::time::interval(control.fault_refresh);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match service::request_faulted_sandboxes(&state.pool).await {
            Ok(sandboxes) => control.faulted.replace(sandboxes),
            Err(e) => tracing::debug!(error = %e, "could not read the sandboxes with faults"),
        }
    }
}

/// The answer of a request fault the sandbox asked for (`POST /_local/faults`), if this request
/// uses one: its status, in the service's error shape (429 and 503 get `Retry-After` from the
/// request context, as every such answer does). A database failure answers as it would anywhere.
pub async fn injected_fault(
    req: &actix_web::dev::ServiceRequest,
    state: &AppState,
    tenant: &Tenant,
) -> Option<HttpResponse> {
    let taken =
        service::take_request_fault(&state.pool, tenant, req.method().as_str(), req.path()).await;
    let status = match taken {
        Ok(status) => status?,
        Err(e) => return Some(actix_web::ResponseError::error_response(&e)),
    };
    let code = match status {
        404 => Code::RouteNotFound,
        408 => Code::ControlTimeout,
        409 => Code::AudienceConflict,
        412 => Code::PreconditionFailed,
        429 => Code::OverShare,
        500 => Code::Internal,
        503 => Code::Unavailable,
        _ => Code::BadBody,
    };
    let mut res = respond::error_body(
        code,
        &format!(
            "Injected fault: this sandbox asked for {} {} to answer {status} (POST /_local/faults).",
            req.method(),
            req.path()
        ),
    );
    *res.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Some(res)
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
        (status = 408, description = "Jobs were left when `timeout` passed, or other drains held every turn (`CONTROL_MAX_CONCURRENT_DRAINS`) until then (`UPAPI-113408-408`)", body = ErrorBody),
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
    let Ok(Ok(_turn)) = tokio::time::timeout_at(deadline, control.drains.acquire()).await else {
        return Err(ApiError::new(
            Code::ControlTimeout,
            format!(
                "Query parameter 'timeout': other drains kept this server busy for {seconds} s (CONTROL_MAX_CONCURRENT_DRAINS); no job was run. Ask again, or wait for the background worker."
            ),
        ));
    };
    let drain = control
        .worker
        .drain_sandbox(tenant.sandbox_id(), deadline)
        .await
        .map_err(worker_failed)?;
    if !drain.drained {
        return Err(ApiError::new(
            Code::ControlTimeout,
            format!(
                "Query parameter 'timeout': jobs of this sandbox were still open after {seconds} s ({} steps done); the background worker continues them.",
                drain.steps
            ),
        ));
    }
    ok(&Drained {
        steps: drain.steps,
        expired: drain.expired,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// Read the sandbox's clock.
#[utoipa::path(
    tag = TAG,
    operation_id = "getSandboxClock",
    summary = "The sandbox's clock offset and time",
    description = "How many seconds the sandbox's clock runs ahead of the server's (`PUT /_local/clock`), and the sandbox's time now.",
    responses(
        (status = 200, description = "The offset (0 when none is set) and the sandbox's time", body = SandboxClock),
        (status = 404, description = "`CONTROL_API` is off: the test-control endpoints are not served", body = ErrorBody),
    )
)]
#[get("/clock")]
pub async fn get_clock(
    state: web::Data<AppState>,
    tenant: Tenant,
) -> Result<HttpResponse, ApiError> {
    ok(&service::clock(&state.pool, &state.clock, &tenant).await?)
}

/// Move the sandbox's clock.
#[utoipa::path(
    tag = TAG,
    operation_id = "setSandboxClock",
    summary = "Run the sandbox's clock ahead",
    description = "Sets how many seconds the sandbox's clock runs ahead of the server's: 0 to `CONTROL_MAX_CLOCK_OFFSET_DAYS` days (default 3660). Stored in the database, so every replica agrees. The sandbox's TTL expiry, run and operation time stamps, external-audience times, landing-zone credential expiry and zone file expiry read this clock; the job queue keeps the server's. Expiry happens at the worker's next maintenance pass, or at once with `POST /_local/worker/drain`.",
    request_body(content = ClockOffset, content_type = "application/json"),
    responses(
        (status = 200, description = "The offset set and the sandbox's time", body = SandboxClock),
        (status = 400, description = "`offsetSeconds` is missing, not an integer, or out of its bounds", body = ErrorBody),
        (status = 404, description = "`CONTROL_API` is off: the test-control endpoints are not served", body = ErrorBody),
    )
)]
#[put("/clock")]
pub async fn set_clock(
    state: web::Data<AppState>,
    tenant: Tenant,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let max_days = control(&state)?.max_clock_offset_days;
    let value = json_body(&body, Family::Ups, &state.limits)?;
    let request: ClockOffset = serde_json::from_value(value).map_err(|e| {
        ApiError::bad_body(format!(
            "Field 'offsetSeconds' is required and must be a whole number of seconds: {e}."
        ))
    })?;
    let seconds =
        control::check_clock_offset(request.offset_seconds, max_days).map_err(ApiError::limit)?;
    ok(&service::set_clock(&state.pool, &state.clock, &tenant, seconds).await?)
}

/// Reset the sandbox's clock.
#[utoipa::path(
    tag = TAG,
    operation_id = "clearSandboxClock",
    summary = "Give the sandbox the server's clock again",
    description = "Removes the sandbox's clock offset. Times already written at the offset stay as they are.",
    responses(
        (status = 200, description = "The sandbox's clock, now the server's", body = SandboxClock),
        (status = 404, description = "`CONTROL_API` is off: the test-control endpoints are not served", body = ErrorBody),
    )
)]
#[delete("/clock")]
pub async fn clear_clock(
    state: web::Data<AppState>,
    tenant: Tenant,
) -> Result<HttpResponse, ApiError> {
    ok(&service::clear_clock(&state.pool, &state.clock, &tenant).await?)
}

/// The sandbox's faults.
#[derive(Serialize, utoipa::ToSchema)]
pub struct FaultList {
    pub faults: Vec<Fault>,
}

/// Add a fault.
#[utoipa::path(
    tag = TAG,
    operation_id = "addFault",
    summary = "Make the next runs or requests of this sandbox fail",
    description = "Either a run fault, `{\"audienceId\", \"stage\", \"message\", \"count\"}`: the next `count` runs of that external audience that reach `stage` (`DATASET_INGEST` or `PROFILE_STORE_INGEST`) fail there with `message`; or a request fault, `{\"method\", \"path\", \"status\", \"count\"}`: the next `count` requests of this sandbox with that method and exactly that path (no query; `/_local` paths excluded) answer `status` (400, 404, 408, 409, 412, 429, 500 or 503) in the service's error shape, before anything else runs; 429 and 503 carry `Retry-After`. `count` is 1 to 10000 (default 1). Faults are stored in the database (every replica uses them), belong to this sandbox only, and their counts are decremented atomically. At most `CONTROL_MAX_FAULTS` (default 100) faults with runs left per sandbox. Adding a request fault answers after twice `CONTROL_FAULT_REFRESH_MS` (200 ms by default), when every server process of a fleet knows of it.",
    request_body(content = FaultRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The fault", body = Fault),
        (status = 400, description = "The body is not one of the two shapes, a field is out of its bounds, the audience is not an external audience of this sandbox, or the sandbox holds `CONTROL_MAX_FAULTS` faults", body = ErrorBody),
        (status = 404, description = "`CONTROL_API` is off: the test-control endpoints are not served", body = ErrorBody),
    )
)]
#[post("/faults")]
pub async fn add_fault(
    state: web::Data<AppState>,
    tenant: Tenant,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let max = control(&state)?.max_faults;
    let value = json_body(&body, Family::Ups, &state.limits)?;
    let request: FaultRequest = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_body(format!("The fault is not valid: {e}.")))?;
    let bounds = FaultBounds {
        max_message_chars: state.limits.max_description_chars,
        max_path_chars: state.limits.max_path_chars,
    };
    let (kind, count) = request.parse(bounds).map_err(ApiError::bad_body)?;
    let request_fault = matches!(kind, control::FaultKind::Request { .. });
    let fault = service::add_fault(&state.pool, &state.clock, &tenant, kind, count, max).await?;
    if request_fault {
        // This process probes at once; the others within a refresh, which the answer waits for.
        let control = control(&state)?;
        control.faulted.insert(tenant.sandbox_id());
        tokio::time::sleep(control.fault_refresh * 2).await;
    }
    ok(&fault)
}

/// List the faults.
#[utoipa::path(
    tag = TAG,
    operation_id = "listFaults",
    summary = "The sandbox's faults and their remaining counts",
    description = "Every fault of this sandbox (never another's), oldest first, with how many runs or requests it still applies to.",
    responses(
        (status = 200, description = "The faults, oldest first (used-up ones until the next add or delete)", body = FaultList),
        (status = 404, description = "`CONTROL_API` is off: the test-control endpoints are not served", body = ErrorBody),
    )
)]
#[get("/faults")]
pub async fn list_faults(
    state: web::Data<AppState>,
    tenant: Tenant,
) -> Result<HttpResponse, ApiError> {
    let faults = service::faults(&state.pool, &tenant).await?;
    ok(&FaultList { faults })
}

/// Delete the faults.
#[utoipa::path(
    tag = TAG,
    operation_id = "clearFaults",
    summary = "Remove the sandbox's faults",
    description = "Deletes every fault of this sandbox, used up or not.",
    responses(
        (status = 204, description = "The sandbox has no faults any more"),
        (status = 404, description = "`CONTROL_API` is off: the test-control endpoints are not served", body = ErrorBody),
    )
)]
#[delete("/faults")]
pub async fn clear_faults(
    state: web::Data<AppState>,
    tenant: Tenant,
) -> Result<HttpResponse, ApiError> {
    service::clear_faults(&state.pool, &tenant).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Export the sandbox.
#[utoipa::path(
    tag = TAG,
    operation_id = "exportSandbox",
    summary = "The sandbox as a fixture document",
    description = "Writes the sandbox in the format `FIXTURES_DIR` loads at start: its UPS audiences as stored (ids, times and etags kept), its ready external audiences (definition, without runs or members) and the files of its landing zone. Saved as a file in `FIXTURES_DIR`, it is loaded at the next start; loading keeps the ids and adds only what is missing. Refused past `CONTROL_EXPORT_MAX_BYTES` (default 64 MiB).",
    responses(
        (status = 200, description = "The fixture document", body = SandboxFixture),
        (status = 400, description = "The sandbox holds more than `CONTROL_EXPORT_MAX_BYTES` (`UPAPI-113414-400`)", body = ErrorBody),
        (status = 404, description = "`CONTROL_API` is off: the test-control endpoints are not served", body = ErrorBody),
    )
)]
#[get("/sandbox/export")]
pub async fn export_sandbox(
    state: web::Data<AppState>,
    tenant: Tenant,
) -> Result<HttpResponse, ApiError> {
    let max = control(&state)?.export_max_bytes;
    let fixture =
        crate::service::fixtures::export(&state.pool, &tenant, &state.landing.root, max).await?;
    ok(&fixture)
}
