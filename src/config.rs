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

    /// Root of the sandboxes' landing zones, one folder per zone
    /// (`<LANDING_DIR>/<storageAccountName>/dlz-user-container/`); replicas share it on one
    /// volume. Defaults to `<DATA_DIR>/landing`.
    #[arg(long, env = "LANDING_DIR")]
    pub landing_dir: Option<PathBuf>,

    /// The server's address as clients reach it, without a trailing slash; the landing-zone
    /// credentials point there (`SASUri`). Defaults to `http://<HOST>:<PORT>` (`127.0.0.1` for an
    /// unspecified HOST such as `0.0.0.0`).
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Days a file stays in a landing zone after it arrived (Adobe: 7); the worker deletes it then.
    #[arg(long, env = "LANDING_TTL_DAYS", default_value_t = 7)]
    pub landing_ttl_days: i64,

    /// Largest blob a landing zone accepts, in bytes (Put Blob, or the blocks of Put Block List).
    #[arg(long, env = "LANDING_MAX_BLOB_BYTES", default_value_t = 1 << 30)]
    pub landing_max_blob_bytes: u64,

    /// Bytes one landing zone may hold, uncommitted blocks and uploads in progress included.
    #[arg(long, env = "LANDING_MAX_ZONE_BYTES", default_value_t = 4 << 30)]
    pub landing_max_zone_bytes: u64,

    /// Files one landing zone may hold, uncommitted blocks included.
    #[arg(long, env = "LANDING_MAX_FILES", default_value_t = 10_000)]
    pub landing_max_files: u64,

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

    /// The URL clients reach this server at: `PUBLIC_URL`, or made from the listen address and
    /// the port actually bound.
    pub fn public_url(&self, bound_port: u16) -> String {
        if let Some(url) = &self.public_url {
            return url.trim_end_matches('/').to_owned();
        }
        let host = match self.host.parse::<std::net::IpAddr>() {
            Ok(ip) if ip.is_unspecified() => "127.0.0.1".to_owned(),
            Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
            _ => self.host.clone(),
        };
        format!("http://{host}:{bound_port}")
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(raw) = &self.public_url {
            let url = url::Url::parse(raw)
                .map_err(|e| anyhow::anyhow!("PUBLIC_URL '{raw}' is not a URL: {e}"))?;
            if !matches!(url.scheme(), "http" | "https")
                || url.query().is_some()
                || url.fragment().is_some()
                || url.host_str().is_none()
            {
                anyhow::bail!(
                    "PUBLIC_URL must be an http or https URL without query or fragment, e.g. https://aep.example.com"
                );
            }
        }
        if !(1..=36_500).contains(&self.landing_ttl_days) {
            anyhow::bail!("LANDING_TTL_DAYS must be between 1 and 36500");
        }
        if self.landing_max_blob_bytes < 1
            || self.landing_max_files < 1
            || self.landing_max_zone_bytes < self.landing_max_blob_bytes
        {
            anyhow::bail!(
                "LANDING_MAX_BLOB_BYTES and LANDING_MAX_FILES must be at least 1, and LANDING_MAX_ZONE_BYTES at least LANDING_MAX_BLOB_BYTES"
            );
        }
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
            public_url: None,
            landing_ttl_days: 7,
            landing_max_blob_bytes: 1 << 30,
            landing_max_zone_bytes: 4 << 30,
            landing_max_files: 10_000,
            db_pool_size: 8,
            http_workers: Some(2),
            auth_mode: AuthMode::Open,
            jwt_secret: None,
            worker_enabled: true,
            worker_poll_ms: 500,
            worker_lease_secs: 30,
            worker_max_attempts: 5,
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
            .field("public_url", &self.public_url)
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
    }

    #[test]
    fn the_public_url_defaults_from_the_listen_address() {
        let mut s = Settings::for_database("postgres://x");
        assert_eq!(s.public_url(4321), "http://127.0.0.1:4321");
        s.host = "0.0.0.0".into();
        assert_eq!(s.public_url(8080), "http://127.0.0.1:8080");
        s.host = "::1".into();
        assert_eq!(s.public_url(8080), "http://[::1]:8080");
        s.public_url = Some("https://aep.example.com/".into());
        assert_eq!(s.public_url(8080), "https://aep.example.com");
        assert!(s.validate().is_ok());
        s.public_url = Some("ftp://x".into());
        assert!(s.validate().unwrap_err().to_string().contains("PUBLIC_URL"));
        s.public_url = None;
        s.landing_max_zone_bytes = 1;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("LANDING_MAX_ZONE_BYTES"));
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
