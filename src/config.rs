//! Typed settings from flags and environment variables, validated at start.

use std::{fmt, path::PathBuf};

use clap::{Args, Command, FromArgMatches, ValueEnum};

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
    /// installed on the machine (`pg_config --bindir`), keeping data in `--data-dir`. Its value is
    /// never printed (it may hold a password).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
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

    /// HS256 secret that signs tokens in `verify` mode; at least 32 bytes. Never printed.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// In `verify` mode, the `iss` claim every token must carry (unchecked when unset).
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// In `verify` mode, a value the `aud` claim of every token must hold (unchecked when unset).
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

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

    /// Bearer token that `GET /metrics` requires; unset: `/metrics` is open.
    #[arg(long, env = "METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<Secret>,

    /// Serve the test-control endpoints under `/_local` (reset a sandbox, drain its jobs, ...).
    /// Default: on in `open` auth mode, off in `verify` mode, where turning it on also needs
    /// `CONTROL_TOKEN`. See docs/CONTROL.md.
    #[arg(long, env = "CONTROL_API", action = clap::ArgAction::Set)]
    pub control_api: Option<bool>,

    /// Bearer token the `/_local` endpoints require when set (in place of the caller's usual
    /// token); required in `verify` mode. Never printed.
    #[arg(long, env = "CONTROL_TOKEN", hide_env_values = true)]
    pub control_token: Option<Secret>,

    /// Longest `timeout` (seconds) a `POST /_local/worker/drain` may ask for.
    #[arg(long, env = "CONTROL_DRAIN_MAX_SECS", default_value_t = 120)]
    pub control_drain_max_secs: u64,

    /// Drains (`POST /_local/worker/drain`) one process carries out at once; each holds one
    /// connection of the HTTP pool while it runs a step, so this bounds what drains take from
    /// every other request. A drain waits for its turn within its own `timeout`.
    #[arg(long, env = "CONTROL_MAX_CONCURRENT_DRAINS", default_value_t = 2)]
    pub control_max_concurrent_drains: usize,

    /// Largest clock offset (`PUT /_local/clock`) a sandbox may be given, in days.
    #[arg(long, env = "CONTROL_MAX_CLOCK_OFFSET_DAYS", default_value_t = 3660)]
    pub control_max_clock_offset_days: i64,

    /// Most faults (`POST /_local/faults`) one sandbox may hold with runs left.
    #[arg(long, env = "CONTROL_MAX_FAULTS", default_value_t = 100)]
    pub control_max_faults: i64,

    /// How often each server process reads which sandboxes hold request faults, in milliseconds;
    /// the request gate asks the database for a fault only for those. `POST /_local/faults`
    /// answers after twice this, so every replica knows of the fault by then.
    #[arg(long, env = "CONTROL_FAULT_REFRESH_MS", default_value_t = 100)]
    pub control_fault_refresh_ms: u64,

    /// Most bytes (audience bodies and zone files) `GET /_local/sandbox/export` writes.
    #[arg(long, env = "CONTROL_EXPORT_MAX_BYTES", default_value_t = 64 << 20)]
    pub control_export_max_bytes: u64,

    /// Folder of fixture documents (`*.json`, one sandbox each, the format of
    /// `GET /_local/sandbox/export`) loaded at start; what exists already is left alone.
    #[arg(long, env = "FIXTURES_DIR")]
    pub fixtures_dir: Option<PathBuf>,

    /// On SIGTERM or SIGINT, seconds in-flight requests get to finish after the listener closes.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// On SIGTERM or SIGINT, seconds the server keeps accepting requests (with `/ready` answering
    /// 503) before it closes its listener, so that load balancers polling `/ready` stop sending
    /// traffic first. 0 closes the listener at once.
    #[arg(long, env = "SHUTDOWN_DELAY_SECS", default_value_t = 0)]
    pub shutdown_delay_secs: u64,

    #[command(flatten)]
    pub db_timeouts: DbTimeouts,

    #[command(flatten)]
    pub limits: Limits,

    /// The clock rules read (TTL expiry, leases, guardrail days). The system clock, except in
    /// tests, which share an adjustable one with their workers.
    #[arg(skip)]
    pub clock: crate::domain::clock::Clock,
}

/// Timeouts set on every pooled database connection, so that no request (or job) can hold a
/// connection, a lock or an open transaction for long. Past one, the request answers 503 with
/// `Retry-After`. `0` turns a timeout off.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
#[command(next_help_heading = "Database timeouts")]
pub struct DbTimeouts {
    /// Longest one SQL statement may run, in milliseconds (PostgreSQL `statement_timeout`).
    #[arg(long, env = "DB_STATEMENT_TIMEOUT_MS", default_value_t = 10_000)]
    pub statement_ms: u64,

    /// Longest one statement may wait for a lock, in milliseconds (`lock_timeout`).
    #[arg(long, env = "DB_LOCK_TIMEOUT_MS", default_value_t = 3_000)]
    pub lock_ms: u64,

    /// Longest a transaction may stay open doing nothing, in milliseconds
    /// (`idle_in_transaction_session_timeout`); PostgreSQL then ends the session.
    #[arg(
        long,
        env = "DB_IDLE_IN_TRANSACTION_TIMEOUT_MS",
        default_value_t = 15_000
    )]
    pub idle_in_transaction_ms: u64,
}

impl Default for DbTimeouts {
    fn default() -> Self {
        clap_defaults()
    }
}

impl DbTimeouts {
    /// No timeout at all: for maintenance connections (tests' own, bulk loads).
    pub fn none() -> Self {
        DbTimeouts {
            statement_ms: 0,
            lock_ms: 0,
            idle_in_transaction_ms: 0,
        }
    }
}

/// Bounds on what one request may hold or ask for. A request past one is refused with a 4xx that
/// names the field (or header, or parameter) and the bound; docs/LIMITS.md lists them all.
/// Lengths of strings are counted in characters (Unicode scalar values).
#[derive(Args, Clone, Debug, PartialEq, Eq)]
#[command(next_help_heading = "Limits")]
pub struct Limits {
    /// Largest request body, in bytes (413 beyond it). A JSON Patch must also keep the audience
    /// within it after each of its operations.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Deepest nesting of arrays and objects in a request body, and in an audience after each
    /// operation of a JSON Patch (at most 100).
    #[arg(long, env = "MAX_JSON_DEPTH", default_value_t = 32)]
    pub max_json_depth: usize,

    /// Longest `name` of an audience or an external audience, in characters (at most 600).
    #[arg(long, env = "MAX_NAME_CHARS", default_value_t = 256)]
    pub max_name_chars: usize,

    /// Longest `description`, in characters.
    #[arg(long, env = "MAX_DESCRIPTION_CHARS", default_value_t = 4096)]
    pub max_description_chars: usize,

    /// Longest identifier-like string, in characters (at most 300): `namespace`, `audienceId`,
    /// `originName`, `mergePolicyId`, `datasetId`, `profileInstanceId`, `schema.name`,
    /// `expression.type` and `.format`, each label and tag, `customAudienceId`, field names,
    /// `identityNs`, `baseConnectionId`, bulk-get ids and list filter values.
    #[arg(long, env = "MAX_ID_CHARS", default_value_t = 256)]
    pub max_id_chars: usize,

    /// Longest `sourceSpec` path of an external audience, in characters.
    #[arg(long, env = "MAX_PATH_CHARS", default_value_t = 1024)]
    pub max_path_chars: usize,

    /// Longest `expression.value`, in characters.
    #[arg(long, env = "MAX_EXPRESSION_CHARS", default_value_t = 65_536)]
    pub max_expression_chars: usize,

    /// Most distinct audiences one expression may reference with `inSegment(...)`.
    #[arg(long, env = "MAX_EXPRESSION_REFERENCES", default_value_t = 100)]
    pub max_expression_references: usize,

    /// Most entries in one `labels` or `tags` list.
    #[arg(long, env = "MAX_LABELS", default_value_t = 100)]
    pub max_labels: usize,

    /// Largest audience: bytes of the JSON of its client fields (at most `MAX_BODY_BYTES`).
    #[arg(long, env = "MAX_AUDIENCE_BYTES", default_value_t = 256 * 1024)]
    pub max_audience_bytes: usize,

    /// Most operations in one JSON Patch.
    #[arg(long, env = "MAX_PATCH_OPERATIONS", default_value_t = 100)]
    pub max_patch_operations: usize,

    /// Byte budget of one page of the audience list (at least `MAX_AUDIENCE_BYTES`): a page ends
    /// early, before the audience that would pass it, whatever `limit` asks. A bulk-get whose
    /// audiences would pass it is refused.
    #[arg(long, env = "MAX_LIST_PAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_list_page_bytes: usize,

    /// Most `property` filters in one audience list query.
    #[arg(long, env = "MAX_LIST_FILTERS", default_value_t = 20)]
    pub max_list_filters: usize,

    /// Longest `x-gw-ims-org-id` header, in characters (at most 1000).
    #[arg(long, env = "MAX_ORG_ID_CHARS", default_value_t = 64)]
    pub max_org_id_chars: usize,

    /// Longest `x-api-key` header, in characters.
    #[arg(long, env = "MAX_API_KEY_CHARS", default_value_t = 256)]
    pub max_api_key_chars: usize,

    /// Longest bearer token, in characters.
    #[arg(long, env = "MAX_TOKEN_CHARS", default_value_t = 8192)]
    pub max_token_chars: usize,

    /// Most sandboxes one organisation may register (each new `x-sandbox-name` registers one).
    #[arg(long, env = "MAX_SANDBOXES_PER_ORG", default_value_t = 100)]
    pub max_sandboxes_per_org: i64,

    /// Most organisations the server registers (each new `x-gw-ims-org-id` registers one). In the
    /// open auth mode any caller can name any organisation; this bounds how many tenants they make.
    #[arg(long, env = "MAX_ORGANISATIONS", default_value_t = 10_000)]
    pub max_organisations: i64,

    /// Each organisation's share of one server, in bytes per second: the request bodies it sends
    /// and the response bodies it receives, plus 1 KiB per request, refill a token bucket at this
    /// rate; an organisation whose bucket is empty gets 429 with `Retry-After` until it refills.
    /// Per server process. 0: no share is enforced.
    #[arg(long, env = "TENANT_BYTES_PER_SEC", default_value_t = 64 * 1024 * 1024)]
    pub tenant_bytes_per_sec: u64,

    /// The bucket of `TENANT_BYTES_PER_SEC`: how many bytes an organisation may use in a burst
    /// (at least `MAX_BODY_BYTES` plus `MAX_LIST_PAGE_BYTES`, so any one request fits).
    #[arg(long, env = "TENANT_BURST_BYTES", default_value_t = 128 * 1024 * 1024)]
    pub tenant_burst_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        clap_defaults()
    }
}

/// Above these, a value could pass PostgreSQL's B-tree limit of about 2,700 bytes per index row
/// (a character takes up to 4 bytes; `namespace` and `audienceId` share one unique index).
const MAX_SAFE_NAME_CHARS: usize = 600;
const MAX_SAFE_ID_CHARS: usize = 300;
const MAX_SAFE_ORG_ID_CHARS: usize = 1000;
/// serde_json refuses bodies nested deeper than 128 by itself; ours must answer first.
const MAX_SAFE_JSON_DEPTH: usize = 100;

impl Limits {
    pub fn validate(&self) -> anyhow::Result<()> {
        let positive = [
            ("MAX_BODY_BYTES", self.max_body_bytes),
            ("MAX_JSON_DEPTH", self.max_json_depth),
            ("MAX_NAME_CHARS", self.max_name_chars),
            ("MAX_DESCRIPTION_CHARS", self.max_description_chars),
            ("MAX_ID_CHARS", self.max_id_chars),
            ("MAX_PATH_CHARS", self.max_path_chars),
            ("MAX_EXPRESSION_CHARS", self.max_expression_chars),
            ("MAX_EXPRESSION_REFERENCES", self.max_expression_references),
            ("MAX_LABELS", self.max_labels),
            ("MAX_AUDIENCE_BYTES", self.max_audience_bytes),
            ("MAX_PATCH_OPERATIONS", self.max_patch_operations),
            ("MAX_LIST_PAGE_BYTES", self.max_list_page_bytes),
            ("MAX_LIST_FILTERS", self.max_list_filters),
            ("MAX_ORG_ID_CHARS", self.max_org_id_chars),
            ("MAX_API_KEY_CHARS", self.max_api_key_chars),
            ("MAX_TOKEN_CHARS", self.max_token_chars),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            anyhow::bail!("{name} must be at least 1");
        }
        let at_most = [
            ("MAX_JSON_DEPTH", self.max_json_depth, MAX_SAFE_JSON_DEPTH),
            ("MAX_NAME_CHARS", self.max_name_chars, MAX_SAFE_NAME_CHARS),
            ("MAX_ID_CHARS", self.max_id_chars, MAX_SAFE_ID_CHARS),
            (
                "MAX_ORG_ID_CHARS",
                self.max_org_id_chars,
                MAX_SAFE_ORG_ID_CHARS,
            ),
            (
                "MAX_AUDIENCE_BYTES",
                self.max_audience_bytes,
                self.max_body_bytes,
            ),
        ];
        if let Some((name, value, max)) = at_most.iter().find(|(_, v, max)| v > max) {
            anyhow::bail!("{name} is {value}; it must be at most {max}");
        }
        if self.max_list_page_bytes < self.max_audience_bytes {
            anyhow::bail!("MAX_LIST_PAGE_BYTES must be at least MAX_AUDIENCE_BYTES");
        }
        if self.max_sandboxes_per_org < 1 {
            anyhow::bail!("MAX_SANDBOXES_PER_ORG must be at least 1");
        }
        if self.max_organisations < 1 {
            anyhow::bail!("MAX_ORGANISATIONS must be at least 1");
        }
        let one_request = (self.max_body_bytes + self.max_list_page_bytes) as u64;
        if self.tenant_bytes_per_sec > 0 && self.tenant_burst_bytes < one_request {
            anyhow::bail!(
                "TENANT_BURST_BYTES must be at least MAX_BODY_BYTES + MAX_LIST_PAGE_BYTES ({one_request})"
            );
        }
        Ok(())
    }
}

/// The defaults clap gives a group of settings, without reading the environment: one source for
/// the defaults of the server and of the tests.
fn clap_defaults<T: Args + FromArgMatches>() -> T {
    let command = T::augment_args(Command::new("defaults")).mut_args(|a| a.env(None::<&str>));
    let matches = command
        .try_get_matches_from(["defaults"])
        .expect("every setting of the group has a default");
    T::from_arg_matches(&matches).expect("the defaults parse")
}

/// At least this many bytes of secret for HS256 (RFC 7518 section 3.2: a key as long as the hash).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

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
        if self.auth_mode == AuthMode::Verify
            && self.control_enabled()
            && self.control_token.as_ref().is_none_or(|t| t.0.is_empty())
        {
            anyhow::bail!(
                "CONTROL_API is on in AUTH_MODE=verify: set CONTROL_TOKEN, the bearer token the /_local endpoints then require"
            );
        }
        if !(1..=3600).contains(&self.control_drain_max_secs) {
            anyhow::bail!("CONTROL_DRAIN_MAX_SECS must be between 1 and 3600");
        }
        if !(1..=64).contains(&self.control_max_concurrent_drains) {
            anyhow::bail!("CONTROL_MAX_CONCURRENT_DRAINS must be between 1 and 64");
        }
        if !(10..=10_000).contains(&self.control_fault_refresh_ms) {
            anyhow::bail!("CONTROL_FAULT_REFRESH_MS must be between 10 and 10000");
        }
        if self.control_export_max_bytes < 1 {
            anyhow::bail!("CONTROL_EXPORT_MAX_BYTES must be at least 1");
        }
        if !(1..=10_000).contains(&self.control_max_faults) {
            anyhow::bail!("CONTROL_MAX_FAULTS must be between 1 and 10000");
        }
        if !(0..=36_600).contains(&self.control_max_clock_offset_days) {
            anyhow::bail!("CONTROL_MAX_CLOCK_OFFSET_DAYS must be between 0 and 36600");
        }
        if let Some(secret) = &self.jwt_secret {
            if secret.0.len() < MIN_JWT_SECRET_BYTES {
                anyhow::bail!(
                    "JWT_SECRET is {} bytes; it must be at least {MIN_JWT_SECRET_BYTES}",
                    secret.0.len()
                );
            }
        }
        self.limits.validate()?;
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

    /// Whether the `/_local` test-control endpoints are served: `CONTROL_API`, by default on in
    /// `open` mode and off in `verify` mode.
    pub fn control_enabled(&self) -> bool {
        self.control_api.unwrap_or(self.auth_mode == AuthMode::Open)
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
            db_statement_cache: 100,
            migrate_on_start: true,
            http_workers: Some(2),
            auth_mode: AuthMode::Open,
            jwt_secret: None,
            jwt_issuer: None,
            jwt_audience: None,
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
            db_timeouts: DbTimeouts::default(),
            limits: Limits::default(),
            metrics_token: None,
            control_api: None,
            control_token: None,
            control_drain_max_secs: 120,
            control_max_concurrent_drains: 2,
            control_max_clock_offset_days: 3660,
            control_max_faults: 100,
            control_export_max_bytes: 64 << 20,
            control_fault_refresh_ms: 100,
            fixtures_dir: None,
            shutdown_grace_secs: 30,
            shutdown_delay_secs: 0,
            clock: crate::domain::clock::Clock::system(),
        }
    }

    /// A warning for the start log when any token is accepted on an address others can reach.
    pub fn open_mode_warning(&self) -> Option<String> {
        if self.auth_mode != AuthMode::Open || is_loopback(&self.host) {
            return None;
        }
        Some(format!(
            "AUTH_MODE=open accepts any bearer token, and HOST={} is reachable from other machines; set AUTH_MODE=verify on a shared server",
            self.host
        ))
    }
}

/// Whether a listen address only accepts connections from this machine.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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
            .field("jwt_secret", &self.jwt_secret)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("worker_enabled", &self.worker_enabled)
            .field("db_timeouts", &self.db_timeouts)
            .field("limits", &self.limits)
            .field("db_statement_cache", &self.db_statement_cache)
            .field("migrate_on_start", &self.migrate_on_start)
            .field("metrics_token", &self.metrics_token)
            .field("control_api", &self.control_enabled())
            .field("control_token", &self.control_token)
            .field("fixtures_dir", &self.fixtures_dir)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .field("shutdown_delay_secs", &self.shutdown_delay_secs)
            .finish_non_exhaustive()
    }
}

/// What one ingestion run may read (settings `INGEST_MAX_RECORD_BYTES`,
/// `INGEST_MAX_ROWS_PER_RUN`, `INGEST_MAX_BYTES_PER_RUN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestLimits {
    /// Bytes of one record (a row or the header), line end included.
    pub max_record_bytes: u64,
    /// Data rows over all the run's files.
    pub max_rows: u64,
    /// Bytes over all the run's files.
    pub max_bytes: u64,
}

impl IngestLimits {
    pub const DEFAULT: IngestLimits = IngestLimits {
        max_record_bytes: 1024 * 1024,
        max_rows: 10_000_000,
        max_bytes: 1024 * 1024 * 1024,
    };
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self::DEFAULT
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
    fn a_short_jwt_secret_is_refused() {
        let mut s = Settings::for_database("postgres://x");
        s.jwt_secret = Some(super::Secret("x".repeat(31)));
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "JWT_SECRET is 31 bytes; it must be at least 32"
        );
        s.jwt_secret = Some(super::Secret("x".repeat(32)));
        assert!(s.validate().is_ok());
    }

    #[test]
    fn limits_must_fit_the_database_and_each_other() {
        let mut s = Settings::for_database("postgres://x");
        s.limits.max_id_chars = 400;
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "MAX_ID_CHARS is 400; it must be at most 300"
        );
        s.limits = super::Limits::default();
        s.limits.max_list_page_bytes = s.limits.max_audience_bytes - 1;
        assert!(s.validate().is_err());
        s.limits = super::Limits::default();
        s.limits.max_labels = 0;
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "MAX_LABELS must be at least 1"
        );
    }

    #[test]
    fn defaults_come_from_the_flags_and_ignore_the_environment() {
        let l = super::Limits::default();
        assert_eq!(l.max_body_bytes, 2 * 1024 * 1024);
        assert_eq!(l.max_sandboxes_per_org, 100);
        assert_eq!(l.max_organisations, 10_000);
        let t = super::DbTimeouts::default();
        assert_eq!((t.statement_ms, t.lock_ms), (10_000, 3_000));
    }

    #[test]
    fn the_control_api_follows_the_auth_mode_and_needs_a_token_in_verify_mode() {
        let mut s = Settings::for_database("postgres://x");
        assert!(s.control_enabled());
        s.auth_mode = super::AuthMode::Verify;
        s.jwt_secret = Some(super::Secret("x".repeat(32)));
        assert!(!s.control_enabled());
        assert!(s.validate().is_ok());
        s.control_api = Some(true);
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("CONTROL_TOKEN"));
        s.control_token = Some(super::Secret("t".into()));
        assert!(s.validate().is_ok());
        s.auth_mode = super::AuthMode::Open;
        s.control_api = Some(false);
        assert!(!s.control_enabled());
        s.control_drain_max_secs = 0;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("CONTROL_DRAIN_MAX_SECS"));
    }

    #[test]
    fn open_mode_warns_off_loopback() {
        let mut s = Settings::for_database("postgres://x");
        for host in ["127.0.0.1", "::1", "[::1]", "localhost"] {
            s.host = host.into();
            assert!(s.open_mode_warning().is_none(), "{host}");
        }
        for host in ["0.0.0.0", "::", "10.0.0.5", "staging.example"] {
            s.host = host.into();
            assert!(s.open_mode_warning().is_some(), "{host}");
        }
        s.auth_mode = super::AuthMode::Verify;
        assert!(s.open_mode_warning().is_none());
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
