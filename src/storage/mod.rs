//! SQL, one module per entity. Every function that touches tenant data takes the tenant first.

pub mod ais;
pub mod audiences;
pub mod jobs;
pub mod sandboxes;

use std::time::Duration;

use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    PgPool,
};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    connect_with(url, max_connections, DEFAULT_STATEMENT_CACHE).await
}

/// sqlx's default number of prepared statements kept per connection.
pub const DEFAULT_STATEMENT_CACHE: usize = 100;

/// A pool whose connections keep at most `statement_cache` prepared statements (0: none).
pub async fn connect_with(
    url: &str,
    max_connections: u32,
    statement_cache: usize,
) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.statement_cache_capacity(statement_cache))
        .await?;
    Ok(pool)
}

/// Whether every migration this binary carries is recorded as applied in the database.
pub async fn migrations_applied(pool: &PgPool) -> sqlx::Result<bool> {
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
            .or_else(|e| match &e {
                // No migration table yet: nothing is applied.
                sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => {
                    Ok(Vec::new())
                }
                _ => Err(e),
            })?;
    Ok(MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .all(|m| applied.contains(&m.version)))
}

/// The name of the constraint a database error violated, if any.
pub fn violated_constraint(e: &sqlx::Error) -> Option<&str> {
    match e {
        sqlx::Error::Database(db) => db.constraint(),
        _ => None,
    }
}
