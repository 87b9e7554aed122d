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
