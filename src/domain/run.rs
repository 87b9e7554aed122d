//! Ingestion runs: their states, the two stages a client reads in `details`, what a run request
//! may ask, the guardrails on starting one, and what a tenant reads when a run fails.

use chrono::{DateTime, Utc};
use serde::{de::IntoDeserializer, Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::external::from_body;
use crate::error::{ApiError, Code};

named_enum! {
    // Stored in `ais_runs.status` (CHECK).
    /// `PROCESSING` until the run ends `SUCCESS` or `FAILED`.
    #[derive(Serialize, Deserialize, ToSchema)]
    #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
    pub enum RunStatus("run status") {
        Processing = "PROCESSING",
        Success = "SUCCESS",
        Failed = "FAILED",
    }
}

named_enum! {
    // Stored in `ais_runs.kind` (CHECK) as `run` and `extend`.
    /// `INGESTION`, or `TTL_EXTENSION` for the re-ingestion of extend-ttl.
    #[derive(Serialize, ToSchema)]
    pub enum RunKind("run kind") {
        #[serde(rename = "INGESTION")]
        Ingestion = "run",
        #[serde(rename = "TTL_EXTENSION")]
        TtlExtension = "extend",
    }
}

named_enum! {
    // Stored in `ais_runs.details` (CHECK).
    /// The status of one stage of a run.
    #[derive(Serialize, Deserialize, ToSchema)]
    #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
    pub enum StageStatus("stage status") {
        Pending = "PENDING",
        Processing = "PROCESSING",
        Success = "SUCCESS",
        Failed = "FAILED",
        Skipped = "SKIPPED",
    }
}

named_enum! {
    /// The stages of a run, in order.
    #[derive(Serialize, Deserialize, ToSchema)]
    #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
    pub enum StageName("stage name") {
        DatasetIngest = "DATASET_INGEST",
        ProfileStoreIngest = "PROFILE_STORE_INGEST",
    }
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub id: Uuid,
    pub audience_id: Uuid,
    pub name: String,
    pub kind: RunKind,
    pub status: RunStatus,
    /// `dataFilterStartTime` and `dataFilterEndTime`, epoch seconds.
    pub window: (i64, i64),
    pub details: RunDetails,
    /// Why the run failed.
    pub message: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl RunKind {
    /// The name of an audience's `number`th run (`sortBy=name` sorts by it).
    pub fn run_name(self, audience_name: &str, number: i32) -> String {
        match self {
            RunKind::Ingestion => format!("{audience_name} run {number}"),
            RunKind::TtlExtension => format!("{audience_name} ttl-extension {number}"),
        }
    }
}

/// Rows counted so far by DATASET_INGEST: read, good (their identity is staged) and bad.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub read: u64,
    pub good: u64,
    pub bad: u64,
}

/// A bad row, as sampled in DATASET_INGEST's `errors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RowError {
    pub file: String,
    /// Data row number in the file, from 1 (the header is not counted).
    pub row: u64,
    /// `null` when the row has the wrong number of values.
    pub column: Option<String>,
    pub reason: String,
}

/// DATASET_INGEST: reads the files, checks each row, stages the identities of good rows. Counts
/// show while it is `PROCESSING`; `files`, `errors` and the timing when it ended; `message` when
/// it failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetStage {
    /// `DATASET_INGEST`.
    pub stage: StageName,
    pub status: StageStatus,
    pub flow_run_id: Uuid,
    /// Epoch milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records_read: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records_succeeded: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records_failed: Option<u64>,
    /// Epoch milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The files read, by name in the landing zone's container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
    /// At most 100 bad rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<RowError>>,
    /// Why the stage failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// PROFILE_STORE_INGEST: stores the distinct identities as the audience's members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileStage {
    /// `PROFILE_STORE_INGEST`.
    pub stage: StageName,
    pub status: StageStatus,
    pub flow_run_id: Uuid,
    /// Epoch milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    /// Epoch milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Good rows DATASET_INGEST handed over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records_received: Option<u64>,
    /// Distinct identities stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profiles_stored: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicates_merged: Option<u64>,
    /// Why the stage failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A run's `details`: its two stages, on the wire `[DATASET_INGEST, PROFILE_STORE_INGEST]`.
/// Every change a run goes through is one of the methods below.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDetails {
    pub dataset: DatasetStage,
    pub profile: ProfileStage,
}

impl Serialize for RunDetails {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.dataset, &self.profile).serialize(s)
    }
}

impl<'de> Deserialize<'de> for RunDetails {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (dataset, profile) = <(DatasetStage, ProfileStage)>::deserialize(d)?;
        Ok(RunDetails { dataset, profile })
    }
}

/// When a stage ran, in epoch milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageTiming {
    pub started_at: i64,
    pub completed_at: i64,
    pub duration_ms: u64,
}

/// What DATASET_INGEST read, for [`RunDetails::end_dataset`].
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetReport {
    pub files: Vec<String>,
    pub counts: Counts,
    pub errors: Vec<RowError>,
    /// Why the scan stopped (a missing file, a bad header, a bound), if it did.
    pub failure: Option<String>,
}

impl Default for RunDetails {
    fn default() -> Self {
        Self::new()
    }
}

impl RunDetails {
    /// A new run: both stages pending, each with a fresh flow run id.
    pub fn new() -> Self {
        RunDetails {
            dataset: DatasetStage {
                stage: StageName::DatasetIngest,
                status: StageStatus::Pending,
                flow_run_id: Uuid::new_v4(),
                started_at: None,
                records_read: None,
                records_succeeded: None,
                records_failed: None,
                completed_at: None,
                duration_ms: None,
                files: None,
                errors: None,
                message: None,
            },
            profile: ProfileStage {
                stage: StageName::ProfileStoreIngest,
                status: StageStatus::Pending,
                flow_run_id: Uuid::new_v4(),
                started_at: None,
                completed_at: None,
                duration_ms: None,
                records_received: None,
                profiles_stored: None,
                duplicates_merged: None,
                message: None,
            },
        }
    }

    /// DATASET_INGEST starts (again, after an attempt that did not end): whatever an earlier
    /// attempt showed is dropped.
    pub fn start_dataset(&mut self, started_at: i64) {
        let fresh = RunDetails::new().dataset;
        self.dataset = DatasetStage {
            status: StageStatus::Processing,
            flow_run_id: self.dataset.flow_run_id,
            started_at: Some(started_at),
            ..fresh
        };
    }

    /// The counts so far of a DATASET_INGEST in progress.
    pub fn show_progress(&mut self, counts: &Counts) {
        let stage = &mut self.dataset;
        stage.records_read = Some(counts.read);
        stage.records_succeeded = Some(counts.good);
        stage.records_failed = Some(counts.bad);
    }

    /// DATASET_INGEST ends: `SUCCESS`, or `FAILED` when the scan stopped or no row was good (the
    /// profile stage is then skipped). Returns the run's message when it failed.
    pub fn end_dataset(&mut self, report: DatasetReport, timing: StageTiming) -> Option<String> {
        let counts = &report.counts;
        let failure = report.failure.or_else(|| {
            (counts.good == 0).then(|| {
                format!(
                    "No valid row: {} rows read, all rejected{}.",
                    counts.read,
                    if counts.read == 0 {
                        " (the files hold no data row)"
                    } else {
                        ""
                    }
                )
            })
        });
        self.show_progress(counts);
        let stage = &mut self.dataset;
        stage.status = match failure {
            Some(_) => StageStatus::Failed,
            None => StageStatus::Success,
        };
        stage.started_at = Some(timing.started_at);
        stage.completed_at = Some(timing.completed_at);
        stage.duration_ms = Some(timing.duration_ms);
        stage.files = Some(report.files);
        stage.errors = Some(report.errors);
        stage.message.clone_from(&failure);
        if failure.is_some() {
            self.profile.status = StageStatus::Skipped;
        }
        failure.map(|message| format!("DATASET_INGEST failed: {message}"))
    }

    /// PROFILE_STORE_INGEST ends: `profiles_stored` distinct identities of the good rows.
    pub fn end_profile(&mut self, profiles_stored: u64, timing: StageTiming) {
        let received = self.dataset.records_succeeded.unwrap_or(0);
        self.profile = ProfileStage {
            status: StageStatus::Success,
            started_at: Some(timing.started_at),
            completed_at: Some(timing.completed_at),
            duration_ms: Some(timing.duration_ms),
            records_received: Some(received),
            profiles_stored: Some(profiles_stored),
            duplicates_merged: Some(received.saturating_sub(profiles_stored)),
            ..self.profile.clone()
        };
    }

    /// The first stage that has not ended.
    pub fn open_stage(&self) -> Option<StageName> {
        let open = |s: StageStatus| matches!(s, StageStatus::Pending | StageStatus::Processing);
        if open(self.dataset.status) {
            Some(StageName::DatasetIngest)
        } else if open(self.profile.status) {
            Some(StageName::ProfileStoreIngest)
        } else {
            None
        }
    }

    /// Fails the first stage that has not ended with `reason`, and skips the one after it.
    pub fn fail_open_stage(&mut self, reason: &str) {
        match self.open_stage() {
            Some(StageName::DatasetIngest) => {
                self.dataset.status = StageStatus::Failed;
                self.dataset.message = Some(reason.to_owned());
                self.profile.status = StageStatus::Skipped;
            }
            Some(StageName::ProfileStoreIngest) => {
                self.profile.status = StageStatus::Failed;
                self.profile.message = Some(reason.to_owned());
            }
            None => {}
        }
    }
}

/// What a tenant reads when a run's job was given up: the stage and the job, never the cause
/// (database or file-system text stays in the log and in the job's internal `last_error`).
pub fn gave_up_reason(attempts: i32, stage: StageName, job_id: Uuid) -> String {
    format!(
        "Gave up after {attempts} attempts: the {stage} stage did not complete (job {job_id}; the cause is in the server log)."
    )
}

/// What the guardrails need to know before a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunCounts {
    /// Whether a run of the audience is `PROCESSING`.
    pub processing: bool,
    /// Client runs the audience ever had.
    pub for_audience: i64,
    /// Client runs started in the sandbox since the start of the UTC day.
    pub in_sandbox_today: i64,
}

/// The guardrails (`RUNS_PER_AUDIENCE`, `RUNS_PER_SANDBOX_PER_DAY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    pub per_audience: i64,
    pub per_sandbox_per_day: i64,
}

pub const RUN_IN_PROGRESS: &str =
    "Another run of this external audience is still PROCESSING; wait for it to end.";

impl RunKind {
    /// Whether a run of this kind may start: one at a time per audience, and client runs within
    /// the guardrails (TTL extensions are not counted). A refusal is 422.
    pub fn check_start(self, counts: &RunCounts, limits: &RunLimits) -> Result<(), ApiError> {
        let refuse = |m: String| Err(ApiError::new(Code::AisUnprocessable, m));
        if counts.processing {
            return refuse(RUN_IN_PROGRESS.into());
        }
        if self == RunKind::TtlExtension {
            return Ok(());
        }
        if counts.for_audience >= limits.per_audience {
            return refuse(format!(
                "The external audience has reached its limit of {} runs.",
                limits.per_audience
            ));
        }
        if counts.in_sandbox_today >= limits.per_sandbox_per_day {
            return refuse(format!(
                "The sandbox has reached its limit of {} runs per UTC day.",
                limits.per_sandbox_per_day
            ));
        }
        Ok(())
    }
}

/// The start of `now`'s UTC day, from which the per-sandbox guardrail counts.
pub fn utc_day_start(now: DateTime<Utc>) -> DateTime<Utc> {
    now.date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|d| d.and_utc())
        .unwrap_or(now)
}

/// The body of a run request.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"dataFilterStartTime": 764245635}))]
pub struct RunRequest {
    /// Epoch seconds; files modified at or after it are read.
    #[schema(value_type = i64, minimum = 0, required)]
    pub data_filter_start_time: Option<i64>,
    /// Epoch seconds, default now; not before `dataFilterStartTime`.
    #[schema(minimum = 0)]
    pub data_filter_end_time: Option<i64>,
}

impl RunRequest {
    pub fn from_body(body: Value) -> Result<Self, ApiError> {
        if !body.is_object() {
            return Err(ApiError::ais_invalid(
                "The request body must be a JSON object.",
            ));
        }
        from_body(body)
    }

    /// The filter window, epoch seconds: start required, end `now_s` when absent (or the start,
    /// if that is later), start <= end.
    pub fn window(&self, now_s: i64) -> Result<(i64, i64), ApiError> {
        let check = |key: &str, value: Option<i64>| match value {
            Some(n) if n < 0 => Err(ApiError::ais_invalid(format!(
                "Field '{key}' must be a non-negative integer (epoch seconds)."
            ))),
            other => Ok(other),
        };
        let Some(start) = check("dataFilterStartTime", self.data_filter_start_time)? else {
            return Err(ApiError::ais_invalid(
                "Field 'dataFilterStartTime' is required.",
            ));
        };
        let end =
            check("dataFilterEndTime", self.data_filter_end_time)?.unwrap_or(now_s.max(start));
        if end < start {
            return Err(ApiError::ais_invalid(
                "Field 'dataFilterEndTime' must not be before 'dataFilterStartTime'.",
            ));
        }
        Ok((start, end))
    }
}

/// The orders of the run list (`sortBy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
pub enum RunSort {
    #[serde(rename = "createdAt")]
    CreatedAsc,
    #[serde(rename = "-createdAt")]
    CreatedDesc,
    #[serde(rename = "name")]
    NameAsc,
    #[serde(rename = "-name")]
    NameDesc,
}

/// Runs per page of the run list, at most.
pub const MAX_RUNS_PER_PAGE: i64 = 40;

/// `limit` (1..40, default 20) and `sortBy` (default `-createdAt`) of the run list.
pub fn run_list_params(
    limit: Option<&str>,
    sort_by: Option<&str>,
) -> Result<(i64, RunSort), ApiError> {
    let limit = match limit {
        None => 20,
        Some(l) => match l.trim().parse::<i64>() {
            Ok(n) if (1..=MAX_RUNS_PER_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::ais_invalid(format!(
                    "Query parameter 'limit' must be an integer from 1 to {MAX_RUNS_PER_PAGE}."
                )))
            }
        },
    };
    let sort_by = sort_by.unwrap_or("-createdAt");
    let parsed: Result<RunSort, serde::de::value::Error> =
        RunSort::deserialize(sort_by.into_deserializer());
    let sort = parsed.map_err(|_| {
        ApiError::ais_invalid(
            "Query parameter 'sortBy' must be one of createdAt, -createdAt, name, -name.",
        )
    })?;
    Ok((limit, sort))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn timing() -> StageTiming {
        StageTiming {
            started_at: 1,
            completed_at: 3,
            duration_ms: 2,
        }
    }

    #[test]
    fn details_read_and_write_the_wire_shape() {
        let mut d = RunDetails::new();
        let wire = serde_json::to_value(&d).unwrap();
        assert_eq!(wire[0]["stage"], "DATASET_INGEST");
        assert_eq!(wire[1]["stage"], "PROFILE_STORE_INGEST");
        assert_eq!(wire[0].as_object().unwrap().len(), 3, "{wire}");
        d.start_dataset(1);
        d.show_progress(&Counts {
            read: 5,
            good: 4,
            bad: 1,
        });
        let text = serde_json::to_string(&d.dataset).unwrap();
        let keys: Vec<String> = serde_json::from_str::<serde_json::Map<String, Value>>(&text)
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            keys,
            [
                "stage",
                "status",
                "flowRunId",
                "startedAt",
                "recordsRead",
                "recordsSucceeded",
                "recordsFailed"
            ]
        );
        let back: RunDetails = serde_json::from_value(serde_json::to_value(&d).unwrap()).unwrap();
        assert_eq!(back, d);
        assert!(
            serde_json::from_value::<RunDetails>(json!([{"stage": "DATASET_INGEST"}])).is_err()
        );
    }

    #[test]
    fn a_dataset_stage_without_a_good_row_fails_and_skips_the_profile_stage() {
        let mut d = RunDetails::new();
        d.start_dataset(1);
        let message = d.end_dataset(
            DatasetReport {
                files: vec!["DLZ/a.csv".into()],
                counts: Counts {
                    read: 2,
                    good: 0,
                    bad: 2,
                },
                errors: Vec::new(),
                failure: None,
            },
            timing(),
        );
        assert_eq!(
            message.as_deref(),
            Some("DATASET_INGEST failed: No valid row: 2 rows read, all rejected.")
        );
        assert_eq!(d.dataset.status, StageStatus::Failed);
        assert_eq!(d.profile.status, StageStatus::Skipped);
        assert_eq!(d.open_stage(), None);
    }

    #[test]
    fn the_profile_stage_counts_duplicates_of_the_good_rows() {
        let mut d = RunDetails::new();
        d.start_dataset(1);
        let report = DatasetReport {
            files: Vec::new(),
            counts: Counts {
                read: 6,
                good: 4,
                bad: 2,
            },
            errors: Vec::new(),
            failure: None,
        };
        assert_eq!(d.end_dataset(report, timing()), None);
        assert_eq!(d.open_stage(), Some(StageName::ProfileStoreIngest));
        d.end_profile(3, timing());
        assert_eq!(d.profile.records_received, Some(4));
        assert_eq!(d.profile.duplicates_merged, Some(1));
        assert_eq!(d.profile.status, StageStatus::Success);
    }

    #[test]
    fn a_given_up_run_fails_its_open_stage_and_skips_the_rest() {
        let mut d = RunDetails::new();
        d.dataset.status = StageStatus::Success;
        d.fail_open_stage("why");
        assert_eq!(d.dataset.status, StageStatus::Success);
        assert_eq!(d.profile.status, StageStatus::Failed);
        assert_eq!(d.profile.message.as_deref(), Some("why"));
        let mut d = RunDetails::new();
        d.start_dataset(1);
        d.fail_open_stage("why");
        assert_eq!(
            (d.dataset.status, d.profile.status),
            (StageStatus::Failed, StageStatus::Skipped)
        );
    }

    #[test]
    fn guardrails_count_client_runs_only() {
        let limits = RunLimits {
            per_audience: 2,
            per_sandbox_per_day: 3,
        };
        let counts = |processing, for_audience, in_sandbox_today| RunCounts {
            processing,
            for_audience,
            in_sandbox_today,
        };
        assert!(RunKind::Ingestion
            .check_start(&counts(false, 1, 2), &limits)
            .is_ok());
        for (c, needle) in [
            (counts(true, 0, 0), "PROCESSING"),
            (counts(false, 2, 0), "limit of 2 runs"),
            (counts(false, 0, 3), "per UTC day"),
        ] {
            let err = RunKind::Ingestion.check_start(&c, &limits).unwrap_err();
            assert_eq!(err.code, Code::AisUnprocessable);
            assert!(err.message.contains(needle), "{}", err.message);
        }
        assert!(RunKind::TtlExtension
            .check_start(&counts(false, 9, 9), &limits)
            .is_ok());
        assert!(RunKind::TtlExtension
            .check_start(&counts(true, 0, 0), &limits)
            .is_err());
        assert_eq!(RunKind::TtlExtension.run_name("a", 3), "a ttl-extension 3");
    }

    #[test]
    fn run_window_rules() {
        let window = |body: Value, now| RunRequest::from_body(body)?.window(now);
        assert_eq!(
            window(json!({"dataFilterStartTime": 764245635}), 2_000_000_000).unwrap(),
            (764245635, 2_000_000_000)
        );
        assert!(window(json!({}), 10)
            .unwrap_err()
            .message
            .contains("'dataFilterStartTime' is required"));
        assert!(window(
            json!({"dataFilterStartTime": 10, "dataFilterEndTime": 5}),
            10
        )
        .is_err());
        for bad in [
            json!({"dataFilterStartTime": "x"}),
            json!({"dataFilterStartTime": -1}),
        ] {
            let err = window(bad, 10).unwrap_err();
            assert!(
                err.message.contains("'dataFilterStartTime'"),
                "{}",
                err.message
            );
        }
        assert!(window(json!([1]), 10)
            .unwrap_err()
            .message
            .contains("JSON object"));
        assert_eq!(
            run_list_params(None, None).unwrap(),
            (20, RunSort::CreatedDesc)
        );
        assert_eq!(
            run_list_params(Some("40"), Some("name")).unwrap(),
            (40, RunSort::NameAsc)
        );
        assert!(run_list_params(Some("41"), None).is_err());
        assert!(run_list_params(None, Some("updatedAt")).is_err());
    }
}
