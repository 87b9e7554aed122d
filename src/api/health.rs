use std::time::Duration;

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
