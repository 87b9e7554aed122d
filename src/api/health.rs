use std::{
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::Duration,
};

use actix_web::{get, web, HttpResponse};
use serde_json::json;

use super::AppState;

/// Liveness and database reachability.
#[utoipa::path(
    tag = "Operations",
    operation_id = "health",
    summary = "Server and database health",
    description = "200 when the server can reach its database, 503 when it cannot. Needs no headers.",
    responses(
        (status = 200, description = "The database answers", body = schemas::Health),
        (status = 503, description = "The database does not answer", body = schemas::Health),
    )
)]
#[get("/health")]
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let probe = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool);
    let up = matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Ok(1))
    );
    let body = json!({ "status": if up { "ok" } else { "unavailable" }, "database": if up { "up" } else { "down" } });
    if up {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

use super::schemas;
use crate::storage;

/// What `/ready` reads besides the database, and the requests being served (the shutdown waits
/// for them).
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
    migrations_applied: AtomicBool,
    in_flight: AtomicUsize,
}

/// One request being served; counted until dropped.
pub struct InFlight<'a>(&'a Lifecycle);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Lifecycle {
    pub fn enter(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// From now on `/ready` answers 503: the server is shutting down.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Readiness: whether this replica should get traffic.
#[utoipa::path(
    tag = "Operations",
    operation_id = "ready",
    summary = "Readiness for traffic",
    description = "200 when the database answers and every migration of this binary is applied; 503 when the database does not answer, a migration is missing (a server started with `MIGRATE_ON_START=false` before `audience-server migrate` ran), or the server is draining after SIGTERM. Needs no headers. `/health` stays the liveness answer.",
    responses(
        (status = 200, description = "Ready", body = schemas::Readiness),
        (status = 503, description = "Not ready: database down, migrations pending, or draining", body = schemas::Readiness),
    )
)]
#[get("/ready")]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let lifecycle = &state.lifecycle;
    let probe = async {
        if lifecycle.migrations_applied.load(Ordering::SeqCst) {
            sqlx::query_scalar::<_, i32>("SELECT 1")
                .fetch_one(&state.pool)
                .await
                .map(|_| true)
        } else {
            // Once applied, migrations stay applied: later probes only ask for `SELECT 1`.
            let applied = storage::migrations_applied(&state.pool).await?;
            lifecycle
                .migrations_applied
                .store(applied, Ordering::SeqCst);
            Ok(applied)
        }
    };
    let (database, migrations) = match tokio::time::timeout(Duration::from_secs(2), probe).await {
        Ok(Ok(true)) => ("up", "applied"),
        Ok(Ok(false)) => ("up", "pending"),
        _ => ("down", "unknown"),
    };
    let status = if lifecycle.is_draining() {
        "draining"
    } else if (database, migrations) == ("up", "applied") {
        "ready"
    } else {
        "unavailable"
    };
    let body = json!({ "status": status, "database": database, "migrations": migrations });
    if status == "ready" {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
