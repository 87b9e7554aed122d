//! The answers of the AIS family, as they go on the wire: built from what the use cases return,
//! serialised as they are documented. The request bodies are the domain's own types
//! (`domain::external`, `domain::run`), read with serde and documented from the same structs.

use serde::Serialize;
use utoipa::{
    openapi::{
        schema::{AllOfBuilder, ArrayBuilder, ArrayItems, Schema},
        RefOr,
    },
    PartialSchema, ToSchema,
};
use uuid::Uuid;

use crate::domain::{
    audience::Audience,
    external::{self, ExternalAudienceSpec, OperationStatus},
    run::{self, DatasetStage, ProfileStage, RunDetails, RunKind, RunStatus},
};

/// `details` is a pair: the DATASET_INGEST stage, then the PROFILE_STORE_INGEST one (each
/// described in place: a `prefixItems` entry cannot be a bare `$ref`).
impl PartialSchema for RunDetails {
    fn schema() -> RefOr<Schema> {
        let in_place = |stage: RefOr<Schema>| match stage {
            RefOr::T(schema) => schema,
            RefOr::Ref(reference) => Schema::AllOf(AllOfBuilder::new().item(reference).build()),
        };
        ArrayBuilder::new()
            .prefix_items([
                in_place(DatasetStage::schema()),
                in_place(ProfileStage::schema()),
            ])
            .items(ArrayItems::False)
            .min_items(Some(2))
            .description(Some(
                "A run's stages, in order: `[DATASET_INGEST, PROFILE_STORE_INGEST]`.",
            ))
            .build()
            .into()
    }
}

impl ToSchema for RunDetails {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        <DatasetStage as ToSchema>::schemas(schemas);
        <ProfileStage as ToSchema>::schemas(schemas);
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetaOnlyResponse {
    /// The UPS audience's `id`.
    pub id: Uuid,
    pub name: String,
    pub audience_id: String,
}

impl From<&Audience> for MetaOnlyResponse {
    fn from(a: &Audience) -> Self {
        MetaOnlyResponse {
            id: a.id,
            name: a.fields.name.clone(),
            audience_id: a.fields.audience_id().to_owned(),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationAccepted {
    pub operation_id: Uuid,
    /// The normalised request.
    pub operation_details: ExternalAudienceSpec,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub operation_id: Uuid,
    pub status: OperationStatus,
    /// The normalised request.
    pub operation_details: ExternalAudienceSpec,
    pub audience_name: String,
    pub created_by: String,
    /// Epoch milliseconds.
    pub created_at: i64,
    pub updated_by: String,
    /// Epoch milliseconds.
    pub updated_at: i64,
    /// Present on SUCCESS: the external audience's id, also the UPS audience's `id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience_id: Option<Uuid>,
    /// Present on FAILED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<external::Operation> for Operation {
    fn from(op: external::Operation) -> Self {
        Operation {
            operation_id: op.id,
            status: op.status,
            operation_details: op.details,
            audience_name: op.audience_name,
            created_by: op.created_by,
            created_at: op.created_at.timestamp_millis(),
            updated_by: op.updated_by,
            updated_at: op.updated_at.timestamp_millis(),
            audience_id: (op.status == OperationStatus::Success).then_some(op.audience_id),
            reason: op.reason,
        }
    }
}

/// An external audience: its normalised definition plus what the server keeps.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalAudience {
    pub audience_id: Uuid,
    #[serde(flatten)]
    pub definition: ExternalAudienceSpec,
    pub created_by: String,
    /// Epoch milliseconds.
    pub created_at: i64,
    pub updated_by: String,
    /// Epoch milliseconds.
    pub updated_at: i64,
    /// Distinct profiles ingested by the last successful run (0 once the data expired).
    pub profile_count: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_successful_run_id: Option<Uuid>,
    /// Epoch milliseconds when the ingested data expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_expires_at: Option<i64>,
    /// Present with `dataExpiresAt`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_expired: Option<bool>,
}

impl From<external::ExternalAudience> for ExternalAudience {
    fn from(e: external::ExternalAudience) -> Self {
        ExternalAudience {
            audience_id: e.id,
            definition: e.spec,
            created_by: e.created_by,
            created_at: e.created_at.timestamp_millis(),
            updated_by: e.updated_by,
            updated_at: e.updated_at.timestamp_millis(),
            profile_count: e.profile_count,
            last_successful_run_id: e.last_success_run_id,
            data_expires_at: e.expires_at.map(|t| t.timestamp_millis()),
            data_expired: e.expires_at.map(|_| e.expired),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub run_id: Uuid,
    pub audience_id: Uuid,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: RunKind,
    pub status: RunStatus,
    /// Epoch seconds.
    pub data_filter_start_time: i64,
    /// Epoch seconds.
    pub data_filter_end_time: i64,
    pub created_by: String,
    /// Epoch milliseconds.
    pub created_at: i64,
    /// Epoch milliseconds.
    pub updated_at: i64,
    pub details: RunDetails,
    /// Why the run failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl From<run::Run> for Run {
    fn from(r: run::Run) -> Self {
        Run {
            run_id: r.id,
            audience_id: r.audience_id,
            name: r.name,
            kind: r.kind,
            status: r.status,
            data_filter_start_time: r.window.0,
            data_filter_end_time: r.window.1,
            created_by: r.created_by,
            created_at: r.created_at.timestamp_millis(),
            updated_at: r.updated_at.timestamp_millis(),
            details: r.details,
            message: r.message,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunPage {
    pub limit: i64,
    pub count: usize,
    pub total_count: i64,
}

#[derive(Serialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<Run>,
    #[serde(rename = "_page")]
    pub page: RunPage,
}

impl RunList {
    pub fn new(runs: Vec<run::Run>, limit: i64, total_count: i64) -> Self {
        RunList {
            page: RunPage {
                limit,
                count: runs.len(),
                total_count,
            },
            runs: runs.into_iter().map(Run::from).collect(),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExtendTtlResponse {
    pub audience_id: Uuid,
    pub name: String,
}
