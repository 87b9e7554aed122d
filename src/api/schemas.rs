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

/// A sandbox, as shown inside every audience.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxInfo {
    pub sandbox_id: String,
    pub sandbox_name: String,
    /// `production` or `development`.
    #[serde(rename = "type")]
    pub kind: String,
    pub default: bool,
}

/// A PQL expression.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Expression {
    /// `PQL`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `pql/text` or `pql/json`.
    pub format: String,
    /// The expression; `inSegment("<id>")` references make dependencies.
    pub value: String,
}

/// The audience's XDM schema.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct SchemaRef {
    pub name: String,
}

/// An audience. Fields the server does not know are kept and returned as given.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "id": "60ccea95-1435-4180-97a5-58af4aa285ab",
    "audienceId": "60ccea95-1435-4180-97a5-58af4aa285ab",
    "imsOrgId": "1BD6382559DF0C130A49422D@AdobeOrg",
    "sandbox": {"sandboxId": "6ed34f6f-fe21-4a30-934f-6ffe21fa3075", "sandboxName": "prod", "type": "production", "default": true},
    "name": "People who ordered in the last 30 days",
    "profileInstanceId": "ups",
    "description": "Last 30 days",
    "type": "SegmentDefinition",
    "expression": {"type": "PQL", "format": "pql/text", "value": "workAddress.country = \"US\""},
    "schema": {"name": "_xdm.context.profile"},
    "labels": ["core/C1"],
    "ttlInDays": 60,
    "namespace": "AEPSegments",
    "originName": "REAL_TIME_CUSTOMER_PROFILE",
    "evaluationInfo": {"batch": {"enabled": true}, "continuous": {"enabled": false}, "synchronous": {"enabled": false}},
    "lifecycleState": "published",
    "isSystem": false,
    "definedOn": [{"meta:resourceType": "unions", "meta:containerId": "tenant", "$ref": "https://ns.adobe.com/xdm/context/profile__union"}],
    "dependencies": [],
    "dependents": [],
    "createdBy": "3b0d8a1f2c4e5d6a7b8c9d0e@AdobeID",
    "creationTime": 1650374572000_i64,
    "updateTime": 1650374572000_i64,
    "createEpoch": 1650374572,
    "updateEpoch": 1650374572,
    "_etag": "\"33120d7c-0000-0200-0000-625eb7ac0000\""
}))]
pub struct Audience {
    /// Server-generated id; the `{id}` of the audience paths.
    #[schema(read_only)]
    pub id: Option<String>,
    /// Equal to `id` for platform audiences; client-given for external ones. Immutable.
    pub audience_id: Option<String>,
    #[schema(read_only)]
    pub ims_org_id: Option<String>,
    #[schema(read_only)]
    pub sandbox: Option<SandboxInfo>,
    /// Required.
    pub name: String,
    pub description: Option<String>,
    /// `AEPSegments` for platform audiences. Immutable.
    pub namespace: Option<String>,
    /// `SegmentDefinition` or `ExternalSegment`. Immutable.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `REAL_TIME_CUSTOMER_PROFILE`, `CUSTOM_UPLOAD`, `AUDIENCE_ORCHESTRATION`, ...
    pub origin_name: Option<String>,
    /// `draft`, `published` or `inactive` (`active` is read as `published`).
    pub lifecycle_state: Option<String>,
    pub expression: Option<Expression>,
    /// An object `{name}`; a bare name is accepted.
    pub schema: Option<SchemaRef>,
    pub merge_policy_id: Option<String>,
    pub evaluation_info: Option<Value>,
    pub data_governance_policy: Option<Value>,
    pub labels: Option<Vec<String>>,
    pub ttl_in_days: Option<i64>,
    pub dataset_id: Option<String>,
    pub linked_audience_ref: Option<Value>,
    pub audience_meta: Option<Value>,
    pub profile_instance_id: Option<String>,
    pub override_performance_warnings: Option<bool>,
    #[schema(read_only)]
    pub is_system: Option<bool>,
    #[schema(read_only)]
    pub defined_on: Option<Vec<Value>>,
    /// Ids of the audiences this one references with `inSegment`.
    #[schema(read_only)]
    pub dependencies: Option<Vec<String>>,
    /// Ids of the audiences that reference this one.
    #[schema(read_only)]
    pub dependents: Option<Vec<String>>,
    #[schema(read_only)]
    pub created_by: Option<String>,
    #[schema(read_only)]
    pub last_modified_by: Option<String>,
    /// Epoch milliseconds.
    #[schema(read_only)]
    pub creation_time: Option<i64>,
    /// Epoch milliseconds.
    #[schema(read_only)]
    pub update_time: Option<i64>,
    /// Epoch seconds.
    #[schema(read_only)]
    pub create_epoch: Option<i64>,
    /// Epoch seconds.
    #[schema(read_only)]
    pub update_epoch: Option<i64>,
    /// A quoted opaque version, new on every write; also the `ETag` header.
    #[serde(rename = "_etag")]
    #[schema(read_only)]
    pub etag: Option<String>,
}

/// Paging of a list.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageInfo {
    pub total_count: i64,
    pub total_pages: i64,
    pub sort_field: String,
    /// `asc` or `desc`.
    pub sort: String,
    /// Number of audiences on this page.
    pub page_size: i64,
    pub limit: i64,
    pub start: i64,
    /// The `start` of the next page; absent on the last page.
    pub next: Option<i64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Link {
    /// `@/audiences?start=..&limit=..&sort=..` with the caller's filters.
    pub href: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct PageLinks {
    /// Absent on the last page.
    pub next: Option<Link>,
}

/// A page of audiences.
#[derive(Serialize, Deserialize, ToSchema)]
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
    /// `add`, `remove`, `replace`, `move`, `copy` or `test`.
    pub op: String,
    /// A JSON Pointer to a client field.
    pub path: String,
    /// For `move` and `copy`.
    pub from: Option<String>,
    pub value: Option<Value>,
}

/// An id in a bulk-get body: a bare string or `{"id": ".."}`.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum BulkGetId {
    Bare(String),
    Object { id: String },
}

#[derive(Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"ids": [{"id": "72c393ea-caed-441a-9eb6-5f66bb1bd6cd"}, {"id": "QU9fLTEzOTgzNTE0MzY0NzY0NDg5NzkyOTkx_6ed34f6f-fe21-4a30-934f-6ffe21fa3075"}]}))]
pub struct BulkGetRequest {
    /// 1 to 100 ids.
    pub ids: Vec<BulkGetId>,
}

/// Each requested id maps to its audience, or to an error body when it is not found.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct BulkGetResponse {
    pub results: std::collections::BTreeMap<String, Value>,
}
