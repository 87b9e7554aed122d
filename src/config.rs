//! Typed settings from flags and environment variables, validated at start.

use std::{fmt, path::PathBuf};

use clap::{Args, ValueEnum};

pub use crate::worker::ingest::IngestLimits;

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

    /// Connections of the background worker's own pool (HTTP requests never wait for these).
    #[arg(long, env = "WORKER_DB_POOL_SIZE", default_value_t = 4)]
    pub worker_db_pool_size: u32,

    /// Seconds between two maintenance passes of the worker (TTL expiry, purges, the sweep of
    /// bulk rows nobody needs), whatever the job load.
    #[arg(long, env = "MAINTENANCE_INTERVAL_SECS", default_value_t = 60)]
    pub maintenance_interval_secs: u64,

    /// Hours a finished job or a finished external-audience operation is kept; then it is purged
    /// (the operation then answers 404).
    #[arg(long, env = "JOB_RETENTION_HOURS", default_value_t = 168)]
    pub job_retention_hours: i64,

    /// Longest CSV record (row, or header) an ingestion run accepts, in bytes, line end included.
    #[arg(long, env = "INGEST_MAX_RECORD_BYTES", default_value_t = IngestLimits::DEFAULT.max_record_bytes)]
    pub ingest_max_record_bytes: u64,

    /// Most data rows one ingestion run reads, over all its files.
    #[arg(long, env = "INGEST_MAX_ROWS_PER_RUN", default_value_t = IngestLimits::DEFAULT.max_rows)]
    pub ingest_max_rows_per_run: u64,

    /// Most bytes one ingestion run reads, over all its files.
    #[arg(long, env = "INGEST_MAX_BYTES_PER_RUN", default_value_t = IngestLimits::DEFAULT.max_bytes)]
    pub ingest_max_bytes_per_run: u64,

    /// At most this many ingestion runs per sandbox per UTC day.
    #[arg(long, env = "RUNS_PER_SANDBOX_PER_DAY", default_value_t = 100)]
    pub runs_per_sandbox_per_day: i64,

    /// At most this many ingestion runs per external audience.
    #[arg(long, env = "RUNS_PER_AUDIENCE", default_value_t = 10)]
    pub runs_per_audience: i64,

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

    pub fn ingest_limits(&self) -> IngestLimits {
        IngestLimits {
            max_record_bytes: self.ingest_max_record_bytes,
            max_rows: self.ingest_max_rows_per_run,
            max_bytes: self.ingest_max_bytes_per_run,
        }
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
        // The job loop and the maintenance loop each hold a connection at times.
        if self.worker_db_pool_size < 2 {
            anyhow::bail!("WORKER_DB_POOL_SIZE must be at least 2");
        }
        if self.maintenance_interval_secs < 1 || self.job_retention_hours < 1 {
            anyhow::bail!("MAINTENANCE_INTERVAL_SECS and JOB_RETENTION_HOURS must be at least 1");
        }
        if self.ingest_max_record_bytes < 1
            || self.ingest_max_rows_per_run < 1
            || self.ingest_max_bytes_per_run < 1
        {
            anyhow::bail!(
                "INGEST_MAX_RECORD_BYTES, INGEST_MAX_ROWS_PER_RUN and INGEST_MAX_BYTES_PER_RUN must be at least 1"
            );
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
            http_workers: Some(2),
            auth_mode: AuthMode::Open,
            jwt_secret: None,
            worker_enabled: true,
            worker_poll_ms: 500,
            worker_lease_secs: 30,
            worker_max_attempts: 5,
            worker_db_pool_size: 4,
            maintenance_interval_secs: 60,
            job_retention_hours: 168,
            ingest_max_record_bytes: IngestLimits::DEFAULT.max_record_bytes,
            ingest_max_rows_per_run: IngestLimits::DEFAULT.max_rows,
            ingest_max_bytes_per_run: IngestLimits::DEFAULT.max_bytes,
            runs_per_sandbox_per_day: 100,
            runs_per_audience: 10,
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
        s.worker_max_attempts = 5;
        s.worker_db_pool_size = 1;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("WORKER_DB_POOL_SIZE"));
        s.worker_db_pool_size = 2;
        s.ingest_max_record_bytes = 0;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("INGEST_MAX_RECORD_BYTES"));
        s.ingest_max_record_bytes = 10;
        s.job_retention_hours = 0;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("JOB_RETENTION_HOURS"));
    }

    #[test]
    fn the_worker_takes_its_lease_and_attempts_from_settings() {
        let mut s = Settings::for_database("postgres://x");
        s.worker_lease_secs = 7;
        s.worker_max_attempts = 2;
        s.maintenance_interval_secs = 9;
        s.job_retention_hours = 3;
        s.ingest_max_record_bytes = 100;
        s.ingest_max_rows_per_run = 200;
        s.ingest_max_bytes_per_run = 300;
        let cfg = crate::worker::WorkerConfig::from_settings(&s);
        assert_eq!(cfg.lease, chrono::Duration::seconds(7));
        assert_eq!(cfg.max_attempts, 2);
        assert_eq!(cfg.maintenance_every, std::time::Duration::from_secs(9));
        assert_eq!(cfg.retention, chrono::Duration::hours(3));
        assert_eq!(
            cfg.limits,
            super::IngestLimits {
                max_record_bytes: 100,
                max_rows: 200,
                max_bytes: 300
            }
        );
    }
}
