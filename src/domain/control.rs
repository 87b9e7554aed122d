//! Test control (`/_local`, docs/CONTROL.md): what a reset removed, the bounds of a drain, and a
//! sandbox's clock offset.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The time of a sandbox whose clock is `offset_seconds` ahead of the server's `now`.
pub fn sandbox_time(now: DateTime<Utc>, offset_seconds: i64) -> DateTime<Utc> {
    now + Duration::seconds(offset_seconds)
}

/// `PUT /_local/clock`: how far the sandbox's clock runs ahead of the server's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClockOffset {
    /// Seconds, from 0 to `CONTROL_MAX_CLOCK_OFFSET_DAYS` days.
    pub offset_seconds: i64,
}

/// The sandbox's clock as `GET`/`PUT /_local/clock` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxClock {
    pub offset_seconds: i64,
    /// The sandbox's time now (RFC 3339).
    #[schema(value_type = String, format = DateTime)]
    pub now: DateTime<Utc>,
}

/// Checks an offset against its bound: 0 to `max_days` days (time only moves forward, so data
/// written at an earlier offset never lies in the sandbox's future).
pub fn check_clock_offset(seconds: i64, max_days: i64) -> Result<i64, String> {
    let max = max_days.saturating_mul(24 * 3600);
    if (0..=max).contains(&seconds) {
        Ok(seconds)
    } else {
        Err(format!(
            "Field 'offsetSeconds' must be from 0 to {max} ({max_days} days, CONTROL_MAX_CLOCK_OFFSET_DAYS); got {seconds}."
        ))
    }
}

/// What `POST /_local/sandbox/reset` removed from the sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Removed {
    /// UPS audiences (those of external audiences included).
    pub audiences: u64,
    pub external_audiences: u64,
    /// Creation operations of external audiences.
    pub operations: u64,
    /// Ingestion runs.
    pub runs: u64,
    /// Worker jobs, open or finished.
    pub jobs: u64,
    /// Member rows of the external audiences.
    pub members: u64,
    /// Identities staged by runs in progress.
    pub staged_rows: u64,
    /// Whether a clock offset was set.
    pub clock_offset: bool,
    /// Faults, used up or not.
    pub faults: u64,
    /// Files (committed blobs, uncommitted blocks and uploads in progress) deleted from the
    /// sandbox's landing zone.
    pub zone_files: u64,
}

/// What `POST /_local/worker/drain` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Drained {
    /// Job steps this request carried out (steps other workers were running are waited for,
    /// not counted).
    pub steps: u64,
    /// External audiences whose data expired (their TTL passed by the sandbox's time).
    pub expired: u64,
    /// Milliseconds the drain took.
    pub elapsed_ms: u64,
}

/// The drain's `timeout` when the request names none, in seconds.
pub const DEFAULT_DRAIN_SECS: u64 = 30;

/// Reads a drain's `timeout` parameter (whole seconds, 1 to `max`); `None` takes the default
/// (bounded by `max` too). `Err` says what is wrong.
pub fn drain_timeout(raw: Option<&str>, max: u64) -> Result<u64, String> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_DRAIN_SECS.min(max));
    };
    match raw.trim().parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "must be a whole number of seconds from 1 to {max} (CONTROL_DRAIN_MAX_SECS); got '{}'.",
            raw.chars().take(32).collect::<String>()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_offset_is_bounded() {
        assert_eq!(check_clock_offset(0, 1), Ok(0));
        assert_eq!(check_clock_offset(86_400, 1), Ok(86_400));
        assert!(check_clock_offset(86_401, 1).is_err());
        assert!(check_clock_offset(-1, 1)
            .unwrap_err()
            .contains("'offsetSeconds'"));
        let now = Utc::now();
        assert_eq!(sandbox_time(now, 60) - now, Duration::seconds(60));
    }

    #[test]
    fn the_drain_timeout_is_bounded() {
        assert_eq!(drain_timeout(None, 120), Ok(30));
        assert_eq!(drain_timeout(None, 10), Ok(10));
        assert_eq!(drain_timeout(Some("5"), 120), Ok(5));
        assert_eq!(drain_timeout(Some("120"), 120), Ok(120));
        for bad in ["0", "121", "-1", "1.5", "x", ""] {
            assert!(drain_timeout(Some(bad), 120).is_err(), "{bad}");
        }
    }
}

/// Runs of one fault at most (`count`).
pub const MAX_FAULT_COUNT: i32 = 10_000;

/// The statuses a request fault may answer with (each has a code in the service's table).
pub const FAULT_STATUSES: [u16; 8] = [400, 404, 408, 409, 412, 429, 500, 503];

/// The methods a request fault may match.
pub const FAULT_METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

/// What a fault does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// The next runs of `audience_id` that reach `stage` fail with `message`.
    Run {
        audience_id: uuid::Uuid,
        stage: crate::domain::run::StageName,
        message: String,
    },
    /// The next requests of the sandbox for `method` and `path` answer `status`.
    Request {
        method: String,
        path: String,
        status: u16,
    },
}

/// `POST /_local/faults`: one of the two shapes.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultRequest {
    /// Run fault: the external audience whose next runs fail.
    pub audience_id: Option<String>,
    /// Run fault: `DATASET_INGEST` or `PROFILE_STORE_INGEST`.
    pub stage: Option<String>,
    /// Run fault: the message the failed stage and run show.
    pub message: Option<String>,
    /// Request fault: `GET`, `POST`, `PUT`, `PATCH`, `DELETE` or `HEAD`.
    pub method: Option<String>,
    /// Request fault: the request path, exactly (no query), e.g. `/data/core/ups/audiences`.
    pub path: Option<String>,
    /// Request fault: 400, 404, 408, 409, 412, 429, 500 or 503 (429 and 503 carry `Retry-After`).
    pub status: Option<u16>,
    /// How many runs or requests it applies to: 1 to 10000 (default 1).
    pub count: Option<i32>,
}

/// A fault as `GET /_local/faults` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    pub id: uuid::Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience_id: Option<uuid::Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub count: i32,
    /// Runs or requests it still applies to.
    pub remaining: i32,
}

/// The bounds a fault request is checked against.
#[derive(Debug, Clone, Copy)]
pub struct FaultBounds {
    pub max_message_chars: usize,
    pub max_path_chars: usize,
}

impl FaultRequest {
    /// The fault asked for and its count, or what is wrong (naming the field).
    pub fn parse(self, bounds: FaultBounds) -> Result<(FaultKind, i32), String> {
        let count = self.count.unwrap_or(1);
        if !(1..=MAX_FAULT_COUNT).contains(&count) {
            return Err(format!(
                "Field 'count' must be from 1 to {MAX_FAULT_COUNT}; got {count}."
            ));
        }
        let run = self.audience_id.is_some() || self.stage.is_some() || self.message.is_some();
        let request = self.method.is_some() || self.path.is_some() || self.status.is_some();
        let kind = match (run, request) {
            (true, false) => {
                let audience_id = self
                    .audience_id
                    .as_deref()
                    .and_then(|a| uuid::Uuid::parse_str(a).ok())
                    .ok_or("Field 'audienceId' is required and must be an external audience's id.")?;
                let stage = self
                    .stage
                    .as_deref()
                    .and_then(|s| s.parse().ok())
                    .ok_or("Field 'stage' must be DATASET_INGEST or PROFILE_STORE_INGEST.")?;
                let message = self.message.unwrap_or_default();
                let chars = message.chars().count();
                if chars == 0 || chars > bounds.max_message_chars {
                    return Err(format!(
                        "Field 'message' must be 1 to {} characters (MAX_DESCRIPTION_CHARS); got {chars}.",
                        bounds.max_message_chars
                    ));
                }
                FaultKind::Run {
                    audience_id,
                    stage,
                    message,
                }
            }
            (false, true) => {
                let method = self.method.unwrap_or_default().to_ascii_uppercase();
                if !FAULT_METHODS.contains(&method.as_str()) {
                    return Err(format!(
                        "Field 'method' must be one of {}.",
                        FAULT_METHODS.join(", ")
                    ));
                }
                let path = self.path.unwrap_or_default();
                let chars = path.chars().count();
                if !path.starts_with('/') || path.contains('?') || chars > bounds.max_path_chars {
                    return Err(format!(
                        "Field 'path' must be a request path starting with '/', without a query, of at most {} characters (MAX_PATH_CHARS).",
                        bounds.max_path_chars
                    ));
                }
                if path == "/_local" || path.starts_with("/_local/") {
                    return Err(
                        "Field 'path': the test-control endpoints (/_local) cannot be given faults."
                            .into(),
                    );
                }
                let status = self.status.unwrap_or_default();
                if !FAULT_STATUSES.contains(&status) {
                    return Err(format!(
                        "Field 'status' must be one of {:?}.",
                        FAULT_STATUSES
                    ));
                }
                FaultKind::Request {
                    method,
                    path,
                    status,
                }
            }
            _ => {
                return Err("Give either a run fault ('audienceId', 'stage', 'message') or a request fault ('method', 'path', 'status').".into())
            }
        };
        Ok((kind, count))
    }
}

/// One sandbox as a fixture: what `FIXTURES_DIR` holds (one document per file) and what
/// `GET /_local/sandbox/export` writes. Ids are kept, so loading a document again (another
/// restart, another replica) finds what it loaded before and adds nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxFixture {
    /// The organisation (`x-gw-ims-org-id`).
    pub org_id: String,
    /// The sandbox (`x-sandbox-name`).
    pub sandbox_name: String,
    /// UPS audiences as `GET /audiences/{id}` shows them (ids, times, etags kept), the UPS
    /// audiences of the external audiences included.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub audiences: Vec<serde_json::Value>,
    #[serde(default)]
    pub external_audiences: Vec<ExternalFixture>,
    #[serde(default)]
    pub zone_files: Vec<ZoneFile>,
}

/// An external audience of a fixture: ready, without runs or members (start a run after
/// loading to ingest its file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalFixture {
    pub id: uuid::Uuid,
    /// Its definition as stored (what export writes).
    pub definition: crate::domain::external::ExternalAudienceSpec,
    pub created_by: String,
}

/// A file of the sandbox's landing zone: `path` under the container (e.g. `DLZ/people.csv`),
/// its bytes as UTF-8 `content` or as `contentBase64`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneFile {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<String>,
}

impl ZoneFile {
    /// A file's entry: text when its bytes are UTF-8, base64 otherwise.
    pub fn new(path: String, bytes: Vec<u8>) -> Self {
        use base64::Engine;
        match String::from_utf8(bytes) {
            Ok(text) => ZoneFile {
                path,
                content: Some(text),
                content_base64: None,
            },
            Err(e) => ZoneFile {
                path,
                content: None,
                content_base64: Some(
                    base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
                ),
            },
        }
    }

    /// The file's bytes, or what is wrong with the entry.
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        use base64::Engine;
        match (&self.content, &self.content_base64) {
            (Some(text), None) => Ok(text.clone().into_bytes()),
            (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| {
                    format!(
                        "zone file '{}': 'contentBase64' is not base64: {e}",
                        self.path
                    )
                }),
            _ => Err(format!(
                "zone file '{}' needs exactly one of 'content' and 'contentBase64'",
                self.path
            )),
        }
    }
}

/// What loading a fixture added (what was there already is left as it is).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Loaded {
    pub audiences: u64,
    pub external_audiences: u64,
    pub zone_files: u64,
}
