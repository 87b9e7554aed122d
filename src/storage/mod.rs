//! SQL, one module per entity. Storage knows no HTTP: it returns data or a [`StoreError`].
//!
//! A function that reads or writes one tenant's rows takes the tenant right after its connection
//! (`conn, tenant, ..`) and filters by its sandbox, so no query can forget it. The others work
//! across tenants by design: the sandbox registry (`sandboxes`), the job queue (`jobs`, whose jobs
//! carry their sandbox), the maintenance passes over every tenant (`ais::lock_next_expired`, the
//! purges and the sweep of bulk rows), and the look-ups that find the tenant of a row or of a
//! landing-zone account (`ais::tenant_of`, `landing::zone_by_account`) or read the server's own
//! key (`landing::secret`).
//!
//! Reads named `lock*` lock the rows they read (`FOR UPDATE`, or `FOR SHARE` where said) until the
//! transaction ends; reads with plain names lock nothing. A worker's `jobs::claim` locks the job
//! it takes (`FOR UPDATE SKIP LOCKED`).

pub mod ais;
pub mod audiences;
pub mod control;
pub mod jobs;
pub mod landing;
pub mod sandboxes;

use std::time::Duration;

use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    PgPool,
};

use crate::config::DbTimeouts;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// sqlx's default number of prepared statements kept per connection.
pub const DEFAULT_STATEMENT_CACHE: usize = 100;

/// A pool of at most `max_connections` connections to `url`, each opened with `timeouts` as its
/// session settings, keeping sqlx's default statement cache.
pub async fn connect(
    url: &str,
    max_connections: u32,
    timeouts: &DbTimeouts,
) -> anyhow::Result<PgPool> {
    connect_with(url, max_connections, timeouts, DEFAULT_STATEMENT_CACHE).await
}

/// A pool of at most `max_connections` connections to `url`, each opened with `timeouts` as its
/// session settings (sent in the startup packet, so they hold from the first statement on) and
/// keeping at most `statement_cache` prepared statements (0: none).
pub async fn connect_with(
    url: &str,
    max_connections: u32,
    timeouts: &DbTimeouts,
    statement_cache: usize,
) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = url.parse()?;
    let options = options
        .options([
            ("statement_timeout", timeouts.statement_ms),
            ("lock_timeout", timeouts.lock_ms),
            (
                "idle_in_transaction_session_timeout",
                timeouts.idle_in_transaction_ms,
            ),
        ])
        .statement_cache_capacity(statement_cache);
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
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

/// Applies the migrations on a connection of `pool` whose timeouts are lifted (a migration may
/// rewrite a large table); the connection is closed afterwards rather than returned to the pool.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    sqlx::raw_sql("SET statement_timeout = 0; SET lock_timeout = 0")
        .execute(&mut *conn)
        .await?;
    let result = MIGRATOR.run(&mut *conn).await;
    conn.close().await?;
    Ok(result?)
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

/// Why a storage call failed. Storage knows no HTTP: a write the database refused for a rule the
/// client can be told about is a [`Conflict`], which each API family maps to its own code; anything
/// else is the database's error (unavailable or a fault, see [`is_unavailable`]) or a stored row
/// that does not decode (a fault of the store).
#[derive(Debug)]
pub enum StoreError {
    Conflict(Conflict),
    Db(sqlx::Error),
    Corrupt(anyhow::Error),
}

/// The rules the database enforces with a constraint and a client may break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// (namespace, audienceId) is taken in the sandbox.
    AudienceKeyTaken,
    /// An external audience of that name exists in the sandbox.
    ExternalNameTaken,
    /// An external audience with that customAudienceId exists in the sandbox.
    ExternalCustomIdTaken,
    /// Another run of the external audience is still in progress.
    RunInProgress,
}

impl From<sqlx::Error> for StoreError {
    /// A column that does not decode into its type is a fault of the store, not of the database.
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                StoreError::Corrupt(e.into())
            }
            e => StoreError::Db(e),
        }
    }
}

impl From<crate::domain::UnknownName> for StoreError {
    fn from(e: crate::domain::UnknownName) -> Self {
        StoreError::Corrupt(e.into())
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Conflict(c) => write!(f, "conflict: {c:?}"),
            StoreError::Db(e) => write!(f, "database: {e}"),
            StoreError::Corrupt(e) => write!(f, "stored data does not decode: {e:#}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// The name of the constraint a database error violated, if any.
pub fn violated_constraint(e: &sqlx::Error) -> Option<&str> {
    match e {
        sqlx::Error::Database(db) => db.constraint(),
        _ => None,
    }
}

/// The SQLSTATE of a database error, if it is one.
fn sqlstate(e: &sqlx::Error) -> Option<std::borrow::Cow<'_, str>> {
    match e {
        sqlx::Error::Database(db) => db.code(),
        _ => None,
    }
}

/// Whether the transaction lost to a concurrent one (deadlock `40P01`, serialization failure
/// `40001`) and may simply be run again.
pub fn is_retryable_conflict(e: &sqlx::Error) -> bool {
    sqlstate(e).is_some_and(|code| matches!(code.as_ref(), "40P01" | "40001"))
}

/// Whether an error says the database cannot serve now, rather than that the request or the
/// code is wrong: a timeout, a lost or refused connection, a shutting-down or overloaded server,
/// or a conflict with a concurrent transaction. Such a request may succeed when retried later.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        _ => sqlstate(e).is_some_and(|code| unavailable_sqlstate(&code)),
    }
}

/// The SQLSTATEs of [`is_unavailable`].
fn unavailable_sqlstate(code: &str) -> bool {
    matches!(
        code,
        // query_canceled (statement_timeout), lock_not_available (lock_timeout),
        // idle_in_transaction_session_timeout, admin/crash shutdown, cannot connect now,
        // deadlock and serialization failures.
        "57014" | "55P03" | "25P03" | "57P01" | "57P02" | "57P03" | "57P05" | "40P01" | "40001"
    ) || code.starts_with("08") // connection exceptions
        || code.starts_with("53") // insufficient resources: disk full, out of memory, too many connections
}

#[cfg(test)]
mod tests {
    use super::unavailable_sqlstate;

    #[test]
    fn timeouts_and_lost_connections_are_unavailable_but_bad_data_is_not() {
        for code in [
            "57014", "55P03", "25P03", "57P01", "57P02", "57P03", "08006", "08003", "53100",
            "53300", "40P01", "40001",
        ] {
            assert!(unavailable_sqlstate(code), "{code}");
        }
        for code in ["23505", "22P02", "54000", "42P01", "XX000"] {
            assert!(!unavailable_sqlstate(code), "{code}");
        }
    }
}
