//! Test control (`/_local`, docs/CONTROL.md): what a reset removed, and the bounds of a drain.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
