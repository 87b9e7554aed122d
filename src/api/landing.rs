//! Adobe's Data Landing Zone endpoints of the Connectors API: the sandbox's container and its SAS
//! credentials. Files then go in with any Azure Blob client (`api::blob`).

#![allow(dead_code)] // the wire types exist for the document

use actix_web::{get, http::StatusCode, post, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{respond, schemas::ErrorBody, AppState};
use crate::{domain::Tenant, error::ApiError, service::landing as service};

const TAG: &str = "Data Landing Zone";

/// The only landing-zone type served: the sandbox's own upload container.
#[derive(Serialize, Deserialize, ToSchema)]
pub enum ZoneType {
    #[serde(rename = "user_drop_zone")]
    UserDropZone,
}

/// The only action of the credentials POST.
#[derive(Serialize, Deserialize, ToSchema)]
pub enum CredentialsAction {
    #[serde(rename = "refresh")]
    Refresh,
}

/// The sandbox's landing zone.
#[derive(Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"containerName": "dlz-user-container", "containerTTL": "7"}))]
pub struct LandingZone {
    /// Always `dlz-user-container`, as on Adobe's platform.
    #[serde(rename = "containerName")]
    pub container_name: String,
    /// Days a file stays in the zone after it arrived (`LANDING_TTL_DAYS`), as a string like Adobe's.
    #[serde(rename = "containerTTL")]
    pub container_ttl: String,
}

/// SAS credentials of the sandbox's landing zone.
#[derive(Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "containerName": "dlz-user-container",
    "SASToken": "sv=2020-04-08&si=dlz-ed86a61d-201f-4b50-b10f-a1bf173066fd&sr=c&sp=racwdlm&se=2026-03-02T10%3A00%3A00Z&sig=4yTba8voU3L0wlcLAv9mZLdZ7NlMahbfYYPTMkQ6ZGU%3D",
    "storageAccountName": "dlblobstore99hh25i3dflek",
    "SASUri": "http://127.0.0.1:8080/dlblobstore99hh25i3dflek/dlz-user-container?sv=2020-04-08&si=dlz-ed86a61d-201f-4b50-b10f-a1bf173066fd&sr=c&sp=racwdlm&se=2026-03-02T10%3A00%3A00Z&sig=4yTba8voU3L0wlcLAv9mZLdZ7NlMahbfYYPTMkQ6ZGU%3D",
    "expiryDate": "2026-03-02"
}))]
pub struct LandingZoneCredentials {
    #[serde(rename = "containerName")]
    pub container_name: String,
    /// The shared access signature: append it to a blob URL as its query string.
    #[serde(rename = "SASToken")]
    pub sas_token: String,
    /// The zone's storage account: the first path segment of its URLs, and its folder under
    /// `LANDING_DIR`.
    #[serde(rename = "storageAccountName")]
    pub storage_account_name: String,
    /// The container URL with the token: `<PUBLIC_URL>/<storageAccountName>/dlz-user-container?<SASToken>`.
    /// Azure SDKs take it as it is (`ContainerClient.from_container_url`).
    #[serde(rename = "SASUri")]
    pub sas_uri: String,
    /// The day (UTC) the token expires, 90 days after it was issued.
    #[serde(rename = "expiryDate")]
    pub expiry_date: String,
}

fn query_param(req: &HttpRequest, name: &str) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn ok(body: serde_json::Value) -> HttpResponse {
    respond::json_text(StatusCode::OK, body.to_string())
}

/// Retrieve the sandbox's landing zone.
#[utoipa::path(
    tag = TAG,
    operation_id = "getLandingZone",
    summary = "Retrieve a usable landing zone",
    description = "The sandbox's Data Landing Zone container and the days its files are kept. Every sandbox has exactly one zone, created on first use; a run of `POST /data/core/ais/external-audience/{audienceId}/runs` reads only its own sandbox's zone.",
    params(("type" = inline(ZoneType), Query, description = "`user_drop_zone`")),
    responses(
        (status = 200, description = "The landing zone", body = LandingZone),
        (status = 400, description = "`type` is missing or not `user_drop_zone` (`1100-400`)", body = ErrorBody),
    )
)]
#[get("/landingzone")]
pub async fn get_landing_zone(
    state: web::Data<AppState>,
    tenant: Tenant,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let zone_type = query_param(&req, "type");
    let out =
        service::landing_zone(&state.pool, &state.landing, &tenant, zone_type.as_deref()).await?;
    Ok(ok(out))
}

/// Retrieve the landing zone's credentials.
#[utoipa::path(
    tag = TAG,
    operation_id = "getLandingZoneCredentials",
    summary = "Retrieve Data Landing Zone credentials",
    description = "A SAS token for the sandbox's container and the container URL with it. Upload with any Azure Blob client, e.g. `curl -X PUT -H \"x-ms-blob-type: BlockBlob\" --data-binary @file \"<PUBLIC_URL>/<storageAccountName>/dlz-user-container/<path>?<SASToken>\"`. The token grants read, write, delete and list on this container only, expires after 90 days (a read after the expiry issues a new one, as Adobe does), and stops working when the credentials are refreshed. The blob API itself (Azure's Put Blob, Put Block, Put Block List, Get Blob, Get Blob Properties, Delete Blob, List Blobs) is described in the project's docs/LANDING.md: it answers in Azure's XML, not in this document.",
    params(("type" = inline(ZoneType), Query, description = "`user_drop_zone`")),
    responses(
        (status = 200, description = "The current credentials", body = LandingZoneCredentials),
        (status = 400, description = "`type` is missing or not `user_drop_zone` (`1100-400`)", body = ErrorBody),
    )
)]
#[get("/landingzone/credentials")]
pub async fn get_credentials(
    state: web::Data<AppState>,
    tenant: Tenant,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let zone_type = query_param(&req, "type");
    let out = service::credentials(
        &state.pool,
        &state.landing_keys,
        &state.landing,
        &tenant,
        zone_type.as_deref(),
    )
    .await?;
    Ok(ok(out))
}

/// Refresh the landing zone's credentials.
#[utoipa::path(
    tag = TAG,
    operation_id = "refreshLandingZoneCredentials",
    summary = "Update Data Landing Zone credentials",
    description = "Issues a new SAS token (valid 90 days) and revokes every earlier one of this sandbox: requests with an old token answer 403 `AuthenticationFailed`.",
    params(
        ("type" = inline(ZoneType), Query, description = "`user_drop_zone`"),
        ("action" = inline(CredentialsAction), Query, description = "`refresh`"),
    ),
    responses(
        (status = 200, description = "The new credentials", body = LandingZoneCredentials),
        (status = 400, description = "`type` is not `user_drop_zone` or `action` is not `refresh` (`1100-400`)", body = ErrorBody),
    )
)]
#[post("/landingzone/credentials")]
pub async fn refresh_credentials(
    state: web::Data<AppState>,
    tenant: Tenant,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let zone_type = query_param(&req, "type");
    let action = query_param(&req, "action");
    let out = service::refresh_credentials(
        &state.pool,
        &state.landing_keys,
        &state.landing,
        &tenant,
        zone_type.as_deref(),
        action.as_deref(),
    )
    .await?;
    Ok(ok(out))
}
