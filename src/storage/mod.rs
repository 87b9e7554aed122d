//! SQL, one module per entity. Every function that touches tenant data takes the tenant first.

pub mod ais;
pub mod audiences;
pub mod jobs;
pub mod sandboxes;

use std::time::Duration;

use sqlx::{postgres::PgPoolOptions, PgPool};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await?;
    Ok(pool)
}

/// A second pool on the same database, for the background worker: HTTP requests never wait for
/// a connection behind ingestion, and the worker's sessions show as `application_name` in
/// `pg_stat_activity`. It copies the first pool's connection options, and connects lazily.
pub fn worker_pool(pool: &PgPool, max_connections: u32) -> PgPool {
    let options = (*pool.connect_options())
        .clone()
        .application_name("audience-server-worker");
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(30))
        .connect_lazy_with(options)
}

/// Whether a database error aborted the transaction for a deadlock (40P01) or a serialization
/// failure (40001): running the whole transaction again may well succeed.
pub fn is_retryable_conflict(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("40P01" | "40001")),
        _ => false,
    }
}

/// The name of the constraint a database error violated, if any.
pub fn violated_constraint(e: &sqlx::Error) -> Option<&str> {
    match e {
        sqlx::Error::Database(db) => db.constraint(),
        _ => None,
    }
}
