//! `GET /metrics`: this server's metrics in Prometheus' text format. The request counters come
//! from the middleware (`context::request_context`); the pool and queue gauges are read here, at
//! scrape time.

use std::time::{Duration, Instant};

use actix_web::{get, http::header, web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

use super::{respond::error_body, AppState};
use crate::{error::Code, storage};

/// How long a scrape waits for a database connection and for the queue counts.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Prometheus metrics.
#[utoipa::path(
    tag = "Operations",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    description = "This server's metrics in Prometheus' text exposition format: HTTP requests by route template, method and status, request latency, the database pool, the job queue, run stage durations, ingested rows and errors by wire code (docs/OPERATIONS.md lists them). Needs no tenant headers. When the server is started with `METRICS_TOKEN`, `Authorization: Bearer <that token>` is required.",
    responses(
        (status = 200, description = "The metrics", content_type = "text/plain", body = String),
        (status = 401, description = "`METRICS_TOKEN` is set and the request does not carry it as a bearer token (gateway shape).", body = schemas::GatewayError),
    )
)]
#[get("/metrics")]
pub async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Some(expected) = &state.metrics_token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            None => return error_body(Code::TokenMissing, "Oauth token is missing."),
            // Digests are compared so the time taken says nothing about the token.
            Some(token) if Sha256::digest(token.trim()) != Sha256::digest(&expected.0) => {
                return error_body(Code::TokenInvalid, "Oauth token is not valid")
            }
            Some(_) => {}
        }
    }
    let monitoring = &state.monitoring;
    let started = Instant::now();
    let stats = match tokio::time::timeout(PROBE_TIMEOUT, state.pool.acquire()).await {
        Ok(Ok(mut conn)) => {
            monitoring.pool(&state.pool, started.elapsed().as_secs_f64());
            let now = state.ais.clock.now();
            tokio::time::timeout(PROBE_TIMEOUT, storage::jobs::stats(&mut conn, now))
                .await
                .ok()
                .and_then(Result::ok)
        }
        _ => {
            monitoring.pool(&state.pool, started.elapsed().as_secs_f64());
            None
        }
    };
    monitoring.jobs(stats.as_deref());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(monitoring.render())
}

use super::schemas;
