//! Types that describe the wire format in the OpenAPI document. Handlers pass stored JSON
//! through; these types say what that JSON holds.

#![allow(dead_code)]

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// The service's error body.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "requestId": "YrgXiqvCobA9neOmrzCP7kQLi4yIizoP",
    "type": "https://ns.adobe.com/aep/errors/UPAPI-113430-404",
    "title": "The audience entity e65765df-4a12-4f6a-9b5f-02d1c5a5d1a0 is not found. Use a valid entity and try again.",
    "status": 404,
    "errors": {"404": [{"code": "UPAPI-113430-404", "message": "The audience entity e65765df-4a12-4f6a-9b5f-02d1c5a5d1a0 is not found. Use a valid entity and try again."}]}
}))]
pub struct ErrorBody {
    /// The request's `x-request-id`.
    pub request_id: String,
    /// `https://ns.adobe.com/aep/errors/<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// What went wrong, naming the field or parameter and the rule.
    pub title: String,
    pub status: u16,
    /// The same message keyed by status: `{"<status>": [{code, message}]}`.
    pub errors: std::collections::BTreeMap<String, Vec<ErrorDetail>>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// The gateway's error body, for header and token failures.
#[derive(Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"error_code": "401013", "message": "Oauth token is not valid"}))]
pub struct GatewayError {
    pub error_code: String,
    pub message: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: String,
    /// `up` or `down`.
    pub database: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// `ready`, `unavailable` (the database does not answer or lacks migrations) or `draining`
    /// (the server is shutting down).
    pub status: String,
    /// `up` or `down`.
    pub database: String,
    /// `applied` (every migration of this binary is recorded in `_sqlx_migrations`), `pending`,
    /// or `unknown` (the database did not answer).
    pub migrations: String,
}

/// A sandbox, as shown inside every audience.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxInfo {
    /// A stable id, given when the sandbox is first used.
    pub sandbox_id: String,
    /// The `x-sandbox-name` the audience was written with.
    pub sandbox_name: String,
    #[serde(rename = "type")]
    pub kind: SandboxType,
    /// True for `prod`, the organisation's default sandbox.
    pub default: bool,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SandboxType {
    Production,
    Development,
}

/// A PQL expression. All three fields are required.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Expression {
    /// `PQL`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `pql/text` or `pql/json`.
    pub format: String,
    /// The expression; `inSegment("<id>")` references other audiences of the sandbox and makes
    /// them dependencies (an unknown id is refused with 400).
    pub value: String,
}

/// The audience's XDM schema class.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct SchemaRef {
    /// For example `_xdm.context.profile` (the default) or `_xdm.context.experienceevent`.
    pub name: String,
}

/// `schema` as a client may send it: the object, or a bare class name that is stored as
/// `{"name": ...}`. Responses always hold the object.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SchemaField {
    Object(SchemaRef),
    Name(String),
}

/// `SegmentDefinition` for audiences built in Platform from a PQL expression, `ExternalSegment`
/// for audiences generated elsewhere. Differs from Adobe's document: Adobe's schema lists
/// `ExternalAudience`, but the service and its guides use `ExternalSegment`, so only that value
/// is accepted (API.md, section 2).
#[derive(Serialize, Deserialize, ToSchema)]
pub enum AudienceType {
    SegmentDefinition,
    ExternalSegment,
}

/// `draft`, `published` or `inactive`; `active` is accepted on input and stored as
/// `published`. Allowed changes: draft to published, published to inactive, inactive to
/// published. Differs from Adobe's document: `archived` (and `deleted`) are refused with 400,
/// because an audience is removed with DELETE (API.md, section 2).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LifecycleState {
    Draft,
    Published,
    Inactive,
    Active,
}

/// How the audience is evaluated. Platform audiences get
/// `{"batch": {"enabled": true}, "continuous": {"enabled": false}, "synchronous": {"enabled": false}}`
/// when none is given. The server checks only that this is an object and keeps what is inside as
/// given, so the members below are described, not enforced.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct EvaluationInfo {
    /// Daily batch evaluation: `{"enabled": true|false}`.
    pub batch: Option<Value>,
    /// Streaming evaluation: `{"enabled": true|false}`.
    pub continuous: Option<Value>,
    /// Edge evaluation: `{"enabled": true|false}`.
    pub synchronous: Option<Value>,
}

/// The audience's data governance policy. Kept as given (the server checks only that it is an
/// object).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataGovernancePolicy {
    /// A boolean: leave out profiles that opted out.
    pub exclude_opt_out: Option<Value>,
}

/// Ids that tie an external audience to other systems, each a string. Kept as given (the server
/// checks only that it is an object).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkedAudienceRef {
    /// The dataflow that brings the audience's data in.
    pub flow_id: Option<Value>,
    /// The Audience Orchestration composition it came from.
    pub ao_workflow_id: Option<Value>,
    /// The XDM field group that describes the audience's payload.
    pub payload_field_group_ref: Option<Value>,
    /// The Audience Manager folder of the audience.
    pub audience_folder_id: Option<Value>,
}

/// The XDM union a platform audience is defined on. Here always `{"meta:resourceType": "unions",
/// "meta:containerId": "tenant", "$ref": "https://ns.adobe.com/xdm/context/profile__union"}`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct DefinedOn {
    #[serde(rename = "meta:resourceType")]
    pub resource_type: String,
    #[serde(rename = "meta:containerId")]
    pub container_id: String,
    /// The union's URI.
    #[serde(rename = "$ref")]
    pub uri: String,
}

/// An audience: platform-generated (`SegmentDefinition`, built from a PQL expression) or
/// externally generated (`ExternalSegment`). The same shape is read and written: read-only fields
/// sent back by a client (a PUT of the object just read) are ignored, and fields the server does
/// not know are kept and returned as given.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!(super::examples::platform_audience()))]
pub struct Audience {
    /// Server-generated id; the `{id}` of the audience paths.
    #[schema(read_only, nullable = false)]
    pub id: Option<String>,
    /// Equal to `id` for platform audiences; given by the client (or generated) for external
    /// ones. Unique with `namespace` in a sandbox. Immutable.
    #[schema(nullable = false, min_length = 1)]
    pub audience_id: Option<String>,
    /// The organisation (`x-gw-ims-org-id`).
    #[schema(read_only, nullable = false)]
    pub ims_org_id: Option<String>,
    #[schema(read_only, nullable = false)]
    pub sandbox: Option<SandboxInfo>,
    /// Required, not blank.
    #[schema(min_length = 1)]
    pub name: String,
    pub description: Option<String>,
    /// `AEPSegments` for platform audiences, `CustomerAudienceUpload` by default for external
    /// ones; any non-empty name is accepted (Adobe lists `AAM`, `AAMSegments`, `AAMTraits`,
    /// `AEPSegments`; its own examples use others). Immutable.
    #[schema(nullable = false, min_length = 1)]
    pub namespace: Option<String>,
    /// Inferred when absent: `ExternalSegment` when `audienceId` or `datasetId` is sent without an
    /// `expression`, else `SegmentDefinition`. Immutable.
    #[serde(rename = "type")]
    #[schema(nullable = false)]
    pub kind: Option<AudienceType>,
    /// `REAL_TIME_CUSTOMER_PROFILE` (platform default), `CUSTOM_UPLOAD` (external default),
    /// `AUDIENCE_ORCHESTRATION`, `AUDIENCE_MANAGER`, `AUDIENCE_MATCH`.
    #[schema(nullable = false)]
    pub origin_name: Option<String>,
    /// `published` when not given on create.
    #[schema(nullable = false)]
    pub lifecycle_state: Option<LifecycleState>,
    #[schema(nullable = false)]
    pub expression: Option<Expression>,
    /// `{"name": "_xdm.context.profile"}` for platform audiences when not given.
    #[schema(nullable = false)]
    pub schema: Option<SchemaField>,
    /// The merge policy the audience is evaluated with.
    #[schema(nullable = false)]
    pub merge_policy_id: Option<String>,
    #[schema(nullable = false)]
    pub evaluation_info: Option<EvaluationInfo>,
    #[schema(nullable = false)]
    pub data_governance_policy: Option<DataGovernancePolicy>,
    /// Data usage and access control labels, such as `core/C1`.
    #[schema(nullable = false)]
    pub labels: Option<Vec<String>>,
    /// Data expiration, in days.
    #[schema(nullable = false, minimum = 1)]
    pub ttl_in_days: Option<i64>,
    /// The dataset that holds an external audience's data.
    #[schema(nullable = false)]
    pub dataset_id: Option<String>,
    #[schema(nullable = false)]
    pub linked_audience_ref: Option<LinkedAudienceRef>,
    /// Metadata of an external audience, kept as given.
    #[schema(nullable = false)]
    pub audience_meta: Option<serde_json::Map<String, Value>>,
    /// Kept as given (`ups` in Adobe's examples); not used.
    #[schema(nullable = false)]
    pub profile_instance_id: Option<String>,
    /// Kept as given.
    #[schema(nullable = false)]
    pub override_performance_warnings: Option<bool>,
    /// Always false: the server holds no system audiences.
    #[schema(read_only, nullable = false)]
    pub is_system: Option<bool>,
    /// Platform audiences only.
    #[schema(read_only, nullable = false)]
    pub defined_on: Option<Vec<DefinedOn>>,
    /// Ids of the audiences this one references with `inSegment`.
    #[schema(read_only, nullable = false)]
    pub dependencies: Option<Vec<String>>,
    /// Ids of the audiences that reference this one.
    #[schema(read_only, nullable = false)]
    pub dependents: Option<Vec<String>>,
    /// The caller that created it: the token's `user_id` or `sub` claim, else an id derived from
    /// the token.
    #[schema(read_only, nullable = false)]
    pub created_by: Option<String>,
    /// The caller of the last write, once there has been one after the create.
    #[schema(read_only, nullable = false)]
    pub last_modified_by: Option<String>,
    /// Epoch milliseconds.
    #[schema(read_only, nullable = false)]
    pub creation_time: Option<i64>,
    /// Epoch milliseconds.
    #[schema(read_only, nullable = false)]
    pub update_time: Option<i64>,
    /// Epoch seconds.
    #[schema(read_only, nullable = false)]
    pub create_epoch: Option<i64>,
    /// Epoch seconds.
    #[schema(read_only, nullable = false)]
    pub update_epoch: Option<i64>,
    /// A quoted opaque version, new on every write; also the `ETag` header. Send it in
    /// `If-Match` to make a write conditional, or in `If-None-Match` to read only when changed.
    #[serde(rename = "_etag")]
    #[schema(read_only, nullable = false)]
    pub etag: Option<String>,
}

/// Paging of a list.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageInfo {
    /// Audiences that match the filters, on all pages.
    pub total_count: i64,
    pub total_pages: i64,
    /// The field the list is sorted by.
    pub sort_field: String,
    pub sort: SortDirection,
    /// Number of audiences on this page.
    pub page_size: i64,
    pub limit: i64,
    pub start: i64,
    /// The `start` of the next page; absent on the last page.
    #[schema(nullable = false)]
    pub next: Option<i64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SortDirection {
    Asc,
    Desc,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Link {
    /// `@/audiences?start=..&limit=..&sort=..`, keeping the caller's filters.
    pub href: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct PageLinks {
    /// Absent on the last page.
    #[schema(nullable = false)]
    pub next: Option<Link>,
}

/// A page of audiences.
#[derive(Serialize, Deserialize, ToSchema)]
#[schema(example = json!(super::examples::audience_list()))]
pub struct AudienceList {
    pub children: Vec<Audience>,
    #[serde(rename = "_page")]
    pub page: PageInfo,
    #[serde(rename = "_links")]
    pub links: PageLinks,
}

/// One RFC 6902 operation.
#[derive(Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"op": "add", "path": "/expression", "value": {"type": "PQL", "format": "pql/text", "value": "workAddress.country = \"CA\""}}))]
pub struct PatchOperation {
    pub op: PatchOp,
    /// A JSON Pointer to a client field, such as `/description`.
    pub path: String,
    /// The source pointer of `move` and `copy`.
    #[schema(nullable = false)]
    pub from: Option<String>,
    /// The value of `add`, `replace` and `test`.
    pub value: Option<Value>,
}

/// Adobe's guides only ever use `add`; all six operations of RFC 6902 work.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PatchOp {
    Add,
    Remove,
    Replace,
    Move,
    Copy,
    Test,
}

/// An id in a bulk-get body: `{"id": ".."}` or a bare string.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum BulkGetId {
    Object(BulkGetIdObject),
    Bare(String),
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct BulkGetIdObject {
    /// An audience's `id`.
    pub id: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"ids": [{"id": "72c393ea-caed-441a-9eb6-5f66bb1bd6cd"}, {"id": "QU9fLTEzOTgzNTE0MzY0NzY0NDg5NzkyOTkx_6ed34f6f-fe21-4a30-934f-6ffe21fa3075"}]}))]
pub struct BulkGetRequest {
    /// 1 to 100 ids.
    #[schema(min_items = 1, max_items = 100)]
    pub ids: Vec<BulkGetId>,
}

/// One entry of a bulk-get: the audience, or the error body of an id that was not found.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum BulkGetResult {
    Found(Box<Audience>),
    NotFound(ErrorBody),
}

/// Each requested id maps to its audience, or to an error body when it is not found.
#[derive(Serialize, Deserialize, ToSchema)]
#[schema(example = json!(super::examples::bulk_get_response()))]
pub struct BulkGetResponse {
    pub results: std::collections::BTreeMap<String, BulkGetResult>,
}

/// A 400 answer: the service's error body, or the gateway's when `x-gw-ims-org-id` is missing.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum BadRequestBody {
    Service(ErrorBody),
    Gateway(GatewayError),
}
