//! Documentation-only types of the AIS family's wire format.

#![allow(dead_code)]

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Body of the meta-only create.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"name": "Sample audience name", "description": "A sample description for the audience.", "namespace": "agora", "originName": "Agora_Collaboration"}))]
pub struct MetaOnlyRequest {
    pub name: String,
    pub description: Option<String>,
    pub namespace: String,
    pub origin_name: String,
    /// Generated when absent.
    pub audience_id: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetaOnlyResponse {
    /// The UPS audience's `id`.
    pub id: String,
    pub name: String,
    pub audience_id: String,
}

/// A declared column of the source file.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FieldSpec {
    pub name: String,
    /// string, number, long, integer, date, datetime or boolean.
    #[serde(rename = "type")]
    pub kind: FieldTypeName,
    /// Exactly one field carries it: the identity column.
    pub identity_ns: Option<String>,
    pub labels: Option<Vec<String>>,
}

/// The type a declared column's values must fit.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FieldTypeName {
    String,
    Number,
    Long,
    Integer,
    Date,
    Datetime,
    Boolean,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceParams {
    /// A name in the sandbox's landing zone, relative to `<cloudType or DLZ>/`: Adobe's and
    /// Azure's naming rules (no `..`, `.`, `\`, absolute path or encoded traversal), no spaces.
    pub path: String,
    /// `file` (default) or `folder` (every `.csv` in it).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `Cloud Storage`.
    pub source_type: Option<String>,
    /// S3, DLZ, GCS, SFTP or Azure; the run reads the blob `<cloudType or DLZ>/<path>` of its own
    /// sandbox's landing zone.
    pub cloud_type: Option<String>,
    /// Required for S3, GCS and SFTP.
    pub base_connection_id: Option<String>,
}

/// `{"params": {...}}`; a flat object of the same fields is accepted too.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct SourceSpec {
    pub params: SourceParams,
}

/// The create request of an external audience (and its normalised form in `operationDetails`).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalAudienceRequest {
    pub name: String,
    pub description: Option<String>,
    /// Unique in the sandbox when given.
    pub custom_audience_id: Option<String>,
    /// 1 to 41 fields.
    pub fields: Vec<FieldSpec>,
    pub source_spec: SourceSpec,
    /// 1..90, default 30; a numeric string is accepted.
    #[schema(value_type = Option<i64>)]
    pub ttl_in_days: Option<Value>,
    /// `people`.
    pub audience_type: Option<String>,
    /// `CUSTOM_UPLOAD`.
    pub origin_name: String,
    /// Default `CustomerAudienceUpload`.
    pub namespace: Option<String>,
    pub labels: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    /// Default false; immutable.
    pub express_activation: Option<bool>,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationAccepted {
    pub operation_id: String,
    pub operation_details: ExternalAudienceRequest,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub operation_id: String,
    /// PROCESSING, SUCCESS or FAILED.
    pub status: String,
    pub operation_details: ExternalAudienceRequest,
    /// Present on SUCCESS: the external audience's id, also the UPS audience's `id`.
    pub audience_id: Option<String>,
    pub audience_name: String,
    /// Present on FAILED.
    pub reason: Option<String>,
    pub created_by: String,
    /// Epoch milliseconds.
    pub created_at: i64,
    pub updated_by: String,
    pub updated_at: i64,
}

/// An external audience: its normalised definition plus what the server keeps.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalAudience {
    pub audience_id: String,
    pub name: String,
    pub description: Option<String>,
    pub custom_audience_id: Option<String>,
    pub fields: Vec<FieldSpec>,
    pub source_spec: SourceSpec,
    pub ttl_in_days: i64,
    pub audience_type: String,
    pub origin_name: String,
    pub namespace: String,
    pub labels: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    pub express_activation: bool,
    pub created_by: String,
    pub created_at: i64,
    pub updated_by: String,
    pub updated_at: i64,
    /// Distinct profiles ingested by the last successful run (0 once the data expired).
    pub profile_count: i64,
    pub last_successful_run_id: Option<String>,
    /// Epoch milliseconds when the ingested data expires.
    pub data_expires_at: Option<i64>,
    pub data_expired: Option<bool>,
}

/// PATCH body: a plain partial object. `name` and `expressActivation` may only repeat their
/// current value.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalAudiencePatch {
    pub description: Option<String>,
    pub labels: Option<Vec<String>>,
    /// Merged by name: a field of the same name is replaced, a new one appended.
    pub fields: Option<Vec<FieldSpec>>,
    #[schema(value_type = Option<i64>)]
    pub ttl_in_days: Option<Value>,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"dataFilterStartTime": 764245635}))]
pub struct RunRequest {
    /// Epoch seconds; files modified at or after it are read.
    #[schema(minimum = 0)]
    pub data_filter_start_time: i64,
    /// Epoch seconds, default now; not before `dataFilterStartTime`.
    #[schema(minimum = 0)]
    pub data_filter_end_time: Option<i64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct RowError {
    pub file: String,
    /// Data row number in the file, from 1 (the header is not counted).
    pub row: i64,
    pub column: Option<String>,
    pub reason: String,
}

/// One stage of a run. DATASET_INGEST reports records read/succeeded/failed, files and a sample of
/// row errors; PROFILE_STORE_INGEST reports records received, profiles stored and duplicates.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunStage {
    /// DATASET_INGEST or PROFILE_STORE_INGEST.
    pub stage: String,
    /// PENDING, PROCESSING, SUCCESS, FAILED or SKIPPED.
    pub status: String,
    pub flow_run_id: String,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub duration_ms: Option<i64>,
    pub files: Option<Vec<String>>,
    pub records_read: Option<i64>,
    pub records_succeeded: Option<i64>,
    pub records_failed: Option<i64>,
    pub errors: Option<Vec<RowError>>,
    pub records_received: Option<i64>,
    pub profiles_stored: Option<i64>,
    pub duplicates_merged: Option<i64>,
    /// Why the stage failed.
    pub message: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub run_id: String,
    pub audience_id: String,
    pub name: String,
    /// INGESTION, or TTL_EXTENSION for the re-ingestion of extend-ttl.
    #[serde(rename = "type")]
    pub kind: String,
    /// PROCESSING, SUCCESS or FAILED.
    pub status: String,
    pub data_filter_start_time: i64,
    pub data_filter_end_time: i64,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub details: Vec<RunStage>,
    /// Why the run failed.
    pub message: Option<String>,
}

/// The orders of the run list.
#[derive(Serialize, Deserialize, ToSchema)]
pub enum RunSortBy {
    #[serde(rename = "createdAt")]
    CreatedAt,
    #[serde(rename = "-createdAt")]
    CreatedAtDesc,
    #[serde(rename = "name")]
    Name,
    #[serde(rename = "-name")]
    NameDesc,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunPage {
    pub limit: i64,
    pub count: i64,
    pub total_count: i64,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<Run>,
    #[serde(rename = "_page")]
    pub page: RunPage,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExtendTtlResponse {
    pub audience_id: String,
    pub name: String,
}
