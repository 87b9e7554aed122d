//! Examples for the OpenAPI document, taken from the audiences guide of the seeds
//! (`seeds/003`), with the values this server really answers (ms timestamps, `published`).
//! `definedOn` is left out of them: its items hold a `"$ref"` key, which tools that resolve
//! references (schemathesis among them) mistake for a reference to fetch.

use serde_json::{json, Value};

const ORG: &str = "1BD6382559DF0C130A49422D@AdobeOrg";
const CREATED_BY: &str = "3b0d8a1f2c4e5d6a7b8c9d0e@AdobeID";

fn sandbox() -> Value {
    json!({
        "sandboxId": "6ed34f6f-fe21-4a30-934f-6ffe21fa3075",
        "sandboxName": "prod",
        "type": "production",
        "default": true
    })
}

/// The body of a create of a platform-generated audience.
pub fn create_platform_request() -> Value {
    json!({
        "name": "People who ordered in the last 30 days",
        "profileInstanceId": "ups",
        "description": "Last 30 days",
        "type": "SegmentDefinition",
        "expression": {"type": "PQL", "format": "pql/text", "value": "workAddress.country = \"US\""},
        "schema": {"name": "_xdm.context.profile"},
        "labels": ["core/C1"],
        "ttlInDays": 60
    })
}

/// The body of a create of an externally generated audience.
pub fn create_external_request() -> Value {
    json!({
        "audienceId": "test-external-audience-id",
        "name": "externalAudience",
        "namespace": "aam",
        "description": "Last 30 days",
        "type": "ExternalSegment",
        "originName": "CUSTOM_UPLOAD",
        "lifecycleState": "published",
        "datasetId": "6254cf3c97f8e31b639fb14d",
        "labels": ["core/C1"],
        "linkedAudienceRef": {"flowId": "4685ea90-d2b6-11ec-9d64-0242ac120002"}
    })
}

/// A platform-generated audience as the server answers it.
pub fn platform_audience() -> Value {
    json!({
        "id": "60ccea95-1435-4180-97a5-58af4aa285ab",
        "imsOrgId": ORG,
        "sandbox": sandbox(),
        "name": "People who ordered in the last 30 days",
        "profileInstanceId": "ups",
        "description": "Last 30 days",
        "type": "SegmentDefinition",
        "expression": {"type": "PQL", "format": "pql/text", "value": "workAddress.country = \"US\""},
        "schema": {"name": "_xdm.context.profile"},
        "labels": ["core/C1"],
        "ttlInDays": 60,
        "audienceId": "60ccea95-1435-4180-97a5-58af4aa285ab",
        "namespace": "AEPSegments",
        "originName": "REAL_TIME_CUSTOMER_PROFILE",
        "evaluationInfo": {
            "batch": {"enabled": true},
            "continuous": {"enabled": false},
            "synchronous": {"enabled": false}
        },
        "lifecycleState": "published",
        "isSystem": false,
        "dependencies": [],
        "dependents": [],
        "createdBy": CREATED_BY,
        "creationTime": 1650374572000_i64,
        "updateTime": 1650374573000_i64,
        "createEpoch": 1650374572,
        "updateEpoch": 1650374573,
        "_etag": "\"33120d7c-0000-0200-0000-625eb7ad0000\""
    })
}

/// An externally generated audience as the server answers it.
pub fn external_audience() -> Value {
    json!({
        "id": "322f9f62-cd27-11ec-9d64-0242ac120002",
        "imsOrgId": ORG,
        "sandbox": sandbox(),
        "audienceId": "test-external-audience-id",
        "name": "externalAudience",
        "namespace": "aam",
        "description": "Last 30 days",
        "type": "ExternalSegment",
        "originName": "CUSTOM_UPLOAD",
        "lifecycleState": "published",
        "datasetId": "6254cf3c97f8e31b639fb14d",
        "labels": ["core/C1"],
        "linkedAudienceRef": {"flowId": "4685ea90-d2b6-11ec-9d64-0242ac120002"},
        "isSystem": false,
        "dependencies": [],
        "dependents": [],
        "createdBy": CREATED_BY,
        "creationTime": 1650251290000_i64,
        "updateTime": 1650251290000_i64,
        "createEpoch": 1650251290,
        "updateEpoch": 1650251290,
        "_etag": "\"f4102699-0000-0200-0000-625cd61a0000\""
    })
}

/// The body of a PUT that renames the external audience.
pub fn replace_request() -> Value {
    json!({
        "audienceId": "test-external-audience-id",
        "name": "New external audience",
        "namespace": "aam",
        "description": "Last 30 days",
        "type": "ExternalSegment",
        "lifecycleState": "published",
        "datasetId": "6254cf3c97f8e31b639fb14d",
        "labels": ["core/C1"]
    })
}

/// The PATCH of the guide: a new expression.
pub fn patch_request() -> Value {
    json!([{
        "op": "add",
        "path": "/expression",
        "value": {"type": "PQL", "format": "pql/text", "value": "workAddress.country = \"CA\""}
    }])
}

/// A first page of two audiences out of three.
pub fn audience_list() -> Value {
    json!({
        "children": [platform_audience(), external_audience()],
        "_page": {
            "totalCount": 3,
            "totalPages": 2,
            "sortField": "updateTime",
            "sort": "desc",
            "pageSize": 2,
            "limit": 2,
            "start": 0,
            "next": 2
        },
        "_links": {"next": {"href": "@/audiences?start=2&limit=2&sort=updateTime:desc"}}
    })
}

/// A bulk-get of two ids, one of which does not exist.
pub fn bulk_get_response() -> Value {
    let missing = "72c393ea-caed-441a-9eb6-5f66bb1bd6cd";
    let message =
        format!("The audience entity {missing} is not found. Use a valid entity and try again.");
    json!({
        "results": {
            "322f9f62-cd27-11ec-9d64-0242ac120002": external_audience(),
            missing: {
                "requestId": "YrgXiqvCobA9neOmrzCP7kQLi4yIizoP",
                "type": "https://ns.adobe.com/aep/errors/UPAPI-113430-404",
                "title": message,
                "status": 404,
                "errors": {"404": [{"code": "UPAPI-113430-404", "message": message}]}
            }
        }
    })
}
