//! Typed settings from flags and environment variables, validated at start.

use std::{fmt, path::PathBuf};

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Any non-empty bearer token is accepted (the default, for laptops and CI).
    Open,
    /// Tokens must be HS256 JWTs signed with `JWT_SECRET`, unexpired, and bound to the org they use.
    Verify,
}

#[derive(Args, Clone)]
pub struct Settings {
    /// PostgreSQL URL. When unset, the server starts its own PostgreSQL from the binaries
    /// installed on the machine (`pg_config --bindir`), keeping data in `--data-dir`.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Log filter, in `tracing` syntax (e.g. `info`, `audience_server=debug`).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Folder of the embedded PostgreSQL's data and the default landing folder.
    #[arg(long, env = "DATA_DIR", default_value = ".data")]
    pub data_dir: PathBuf,

    /// Root of the landing zone that ingestion runs read (`<LANDING_DIR>/<cloudType>/<path>`).
    /// Defaults to `<DATA_DIR>/landing`.
    #[arg(long, env = "LANDING_DIR")]
    pub landing_dir: Option<PathBuf>,

    /// Maximum connections in the database pool.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,

    /// Prepared statements each database connection keeps (sqlx's statement cache); 0 keeps none.
    /// See docs/OPERATIONS.md before putting a transaction-pooling proxy (pgbouncer) in front.
    #[arg(long, env = "DB_STATEMENT_CACHE", default_value_t = 100)]
    pub db_statement_cache: usize,

    /// Apply the database migrations at start. Set to false when migrations are run separately
    /// (`audience-server migrate` on a direct connection), e.g. behind a transaction-pooling proxy;
    /// `/ready` then answers 503 until they are applied.
    #[arg(long, env = "MIGRATE_ON_START", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate_on_start: bool,

    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "HTTP_WORKERS")]
    pub http_workers: Option<usize>,

    /// How bearer tokens are checked.
    #[arg(long, env = "AUTH_MODE", value_enum, default_value_t = AuthMode::Open)]
    pub auth_mode: AuthMode,

    /// HS256 secret that signs tokens in `verify` mode.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// Run the background worker in this process.
    #[arg(long, env = "WORKER_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub worker_enabled: bool,

    /// How often the worker looks for due jobs, in milliseconds.
    #[arg(long, env = "WORKER_POLL_MS", default_value_t = 500)]
    pub worker_poll_ms: u64,

    /// Seconds a worker's claim on a job holds without renewal; after that another process may
    /// take the job over (how work survives a killed server).
    #[arg(long, env = "WORKER_LEASE_SECS", default_value_t = 30)]
    pub worker_lease_secs: i64,

    /// Attempts of one job step before its operation or run is failed.
    #[arg(long, env = "WORKER_MAX_ATTEMPTS", default_value_t = 5)]
    pub worker_max_attempts: i32,

    /// At most this many ingestion runs per sandbox per UTC day.
    #[arg(long, env = "RUNS_PER_SANDBOX_PER_DAY", default_value_t = 100)]
    pub runs_per_sandbox_per_day: i64,

    /// At most this many ingestion runs per external audience.
    #[arg(long, env = "RUNS_PER_AUDIENCE", default_value_t = 10)]
    pub runs_per_audience: i64,

    /// Bearer token that `GET /metrics` requires; unset: `/metrics` is open.
    #[arg(long, env = "METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<Secret>,

    /// On SIGTERM or SIGINT, seconds in-flight requests get to finish after the listener closes.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// On SIGTERM or SIGINT, seconds the server keeps accepting requests (with `/ready` answering
    /// 503) before it closes its listener, so that load balancers polling `/ready` stop sending
    /// traffic first. 0 closes the listener at once.
    #[arg(long, env = "SHUTDOWN_DELAY_SECS", default_value_t = 0)]
    pub shutdown_delay_secs: u64,

    /// The clock rules read (TTL expiry, leases, guardrail days). The system clock, except in
    /// tests, which share an adjustable one with their workers.
    #[arg(skip)]
    pub clock: crate::domain::clock::Clock,
}

impl Settings {
    pub fn landing_dir(&self) -> PathBuf {
        self.landing_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("landing"))
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.auth_mode == AuthMode::Verify && self.jwt_secret.is_none() {
            anyhow::bail!("AUTH_MODE=verify needs JWT_SECRET to be set");
        }
        if self.db_pool_size == 0 {
            anyhow::bail!("DB_POOL_SIZE must be at least 1");
        }
        if self.worker_lease_secs < 1 || self.worker_max_attempts < 1 {
            anyhow::bail!("WORKER_LEASE_SECS and WORKER_MAX_ATTEMPTS must be at least 1");
        }
        if self.runs_per_audience < 1 || self.runs_per_sandbox_per_day < 1 {
            anyhow::bail!("run guardrails must be at least 1");
        }
        Ok(())
    }

    /// Settings for tests and embedding: everything default, the given database.
    pub fn for_database(database_url: &str) -> Self {
        Settings {
            database_url: Some(database_url.to_owned()),
            host: "127.0.0.1".into(),
            port: 0,
            log_level: "warn".into(),
            log_format: LogFormat::Text,
            data_dir: PathBuf::from(".data"),
            landing_dir: None,
            db_pool_size: 8,
            db_statement_cache: 100,
            migrate_on_start: true,
            http_workers: Some(2),
            auth_mode: AuthMode::Open,
            jwt_secret: None,
            worker_enabled: true,
            worker_poll_ms: 500,
            worker_lease_secs: 30,
            worker_max_attempts: 5,
            runs_per_sandbox_per_day: 100,
            runs_per_audience: 10,
            metrics_token: None,
            shutdown_grace_secs: 30,
            shutdown_delay_secs: 0,
            clock: crate::domain::clock::Clock::system(),
        }
    }
}

/// A string that never prints.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("database_url", &self.database_url.as_ref().map(|_| "****"))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("data_dir", &self.data_dir)
            .field("landing_dir", &self.landing_dir())
            .field("auth_mode", &self.auth_mode)
            .field("worker_enabled", &self.worker_enabled)
            .field("db_statement_cache", &self.db_statement_cache)
            .field("migrate_on_start", &self.migrate_on_start)
            .field("metrics_token", &self.metrics_token)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .field("shutdown_delay_secs", &self.shutdown_delay_secs)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::Settings;

    #[test]
    fn worker_numbers_must_be_positive() {
        let mut s = Settings::for_database("postgres://x");
        assert!(s.validate().is_ok());
        s.worker_lease_secs = 0;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("WORKER_LEASE_SECS"));
        s.worker_lease_secs = 10;
        s.worker_max_attempts = 0;
        assert!(s.validate().is_err());
    }

    #[test]
    fn the_worker_takes_its_lease_and_attempts_from_settings() {
        let mut s = Settings::for_database("postgres://x");
        s.worker_lease_secs = 7;
        s.worker_max_attempts = 2;
        let cfg = crate::worker::WorkerConfig::from_settings(&s);
        assert_eq!(cfg.lease, chrono::Duration::seconds(7));
        assert_eq!(cfg.max_attempts, 2);
    }
}
