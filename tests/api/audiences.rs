//! UPS audiences: create, get, replace, patch, delete, as the seed documents them.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

fn etag_header(res: &reqwest::Response) -> String {
    res.headers()["etag"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn platform_audience_seed_round_trip() {
    let app = TestApp::spawn().await;
    let res = app.create_audience(&platform_audience()).await;
    assert_eq!(res.status(), 200);
    let etag = etag_header(&res);
    let a: Value = res.json().await.unwrap();
    let id = a["id"].as_str().unwrap();
    uuid::Uuid::parse_str(id).unwrap();
    assert_eq!(a["audienceId"], id);
    assert_eq!(a["namespace"], "AEPSegments");
    assert_eq!(a["type"], "SegmentDefinition");
    assert_eq!(a["originName"], "REAL_TIME_CUSTOMER_PROFILE");
    assert_eq!(a["lifecycleState"], "published");
    assert_eq!(a["schema"], json!({"name": "_xdm.context.profile"}));
    assert_eq!(a["ttlInDays"], 60);
    assert_eq!(a["profileInstanceId"], "ups");
    assert_eq!(a["labels"], json!(["core/C1"]));
    assert_eq!(a["isSystem"], false);
    assert_eq!(a["dependents"], json!([]));
    assert_eq!(a["dependencies"], json!([]));
    assert_eq!(
        a["definedOn"][0]["$ref"],
        "https://ns.adobe.com/xdm/context/profile__union"
    );
    assert_eq!(a["evaluationInfo"]["batch"]["enabled"], true);
    assert_eq!(a["imsOrgId"], ORG);
    let (ct, ut) = (
        a["creationTime"].as_i64().unwrap(),
        a["updateTime"].as_i64().unwrap(),
    );
    assert!(ct > 1_700_000_000_000, "milliseconds");
    assert_eq!(a["createEpoch"].as_i64().unwrap(), ct / 1000);
    assert_eq!(a["updateEpoch"].as_i64().unwrap(), ut / 1000);
    let body_etag = a["_etag"].as_str().unwrap();
    assert!(body_etag.starts_with('"') && body_etag.ends_with('"'));
    assert_eq!(etag, body_etag);

    let res = app.get_audience(id).await;
    assert_eq!(res.status(), 200);
    assert_eq!(etag_header(&res), etag);
    let got: Value = res.json().await.unwrap();
    assert_eq!(got, a);
}

#[tokio::test]
async fn external_audience_seed_round_trip() {
    let app = TestApp::spawn().await;
    let a = app.created(external_audience()).await;
    assert_ne!(a["id"], a["audienceId"]);
    assert_eq!(a["audienceId"], "test-external-audience-id");
    assert_eq!(a["namespace"], "aam");
    assert_eq!(a["type"], "ExternalSegment");
    assert_eq!(a["originName"], "CUSTOM_UPLOAD");
    assert_eq!(a["datasetId"], "6254cf3c97f8e31b639fb14d");
    assert_eq!(
        a["linkedAudienceRef"],
        json!({"flowId": "4685ea90-d2b6-11ec-9d64-0242ac120002"})
    );
    assert!(a.get("definedOn").is_none());
    // The type is inferred from an audienceId without an expression.
    let b = app
        .created(json!({"name": "inferred", "audienceId": "ext-2", "namespace": "aam"}))
        .await;
    assert_eq!(b["type"], "ExternalSegment");
    // An external audience without an audienceId gets one.
    let c = app
        .created(json!({"name": "no id", "type": "ExternalSegment"}))
        .await;
    assert!(c["audienceId"].as_str().is_some_and(|s| !s.is_empty()));
}

#[tokio::test]
async fn duplicate_namespace_and_audience_id_is_a_conflict() {
    let app = TestApp::spawn().await;
    app.created(external_audience()).await;
    let msg = assert_error(
        app.create_audience(&external_audience()).await,
        409,
        "UPAPI-113409-409",
    )
    .await;
    assert_eq!(
        msg,
        "An audience with namespace 'aam' and audienceId 'test-external-audience-id' already exists in this sandbox."
    );
    // Another namespace, or another sandbox, is fine.
    let mut other = external_audience();
    other["namespace"] = json!("other");
    assert_eq!(app.create_audience(&other).await.status(), 200);
    let dev = app.as_tenant(ORG, "dev");
    let res = dev
        .ups(Method::POST, "/audiences")
        .json(&external_audience())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn system_fields_are_ignored_and_unknown_fields_kept() {
    let app = TestApp::spawn().await;
    let mut body = platform_audience();
    body["id"] = json!("not-mine");
    body["creationTime"] = json!(1);
    body["_etag"] = json!("\"forged\"");
    body["createdBy"] = json!("mallory");
    body["imsOrgId"] = json!("OTHER@AdobeOrg");
    body["customField"] = json!({"nested": [1, 2]});
    let a = app.created(body).await;
    assert_ne!(a["id"], "not-mine");
    assert_ne!(a["creationTime"], 1);
    assert_ne!(a["_etag"], "\"forged\"");
    assert_ne!(a["createdBy"], "mallory");
    assert_eq!(a["imsOrgId"], ORG);
    assert_eq!(a["customField"], json!({"nested": [1, 2]}));
    let got: Value = app
        .get_audience(a["id"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["customField"], json!({"nested": [1, 2]}));
}

#[tokio::test]
async fn create_refuses_bad_fields_naming_them() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            json!({"description": "no name"}),
            400,
            "UPLIB-101206-500",
            "'name'",
        ),
        (json!({"name": ""}), 400, "UPLIB-101206-500", "'name'"),
        (
            json!({"name": "n", "labels": "core/C1"}),
            400,
            "UPLIB-101206-500",
            "'labels'",
        ),
        (
            json!({"name": "n", "ttlInDays": "sixty"}),
            400,
            "UPLIB-101206-500",
            "'ttlInDays'",
        ),
        (
            json!({"name": "n", "expression": "x = 1"}),
            400,
            "UPLIB-101206-500",
            "'expression'",
        ),
        (
            json!({"name": "n", "schema": 5}),
            400,
            "UPLIB-101206-500",
            "'schema'",
        ),
        (
            json!({"name": "n", "evaluationInfo": true}),
            400,
            "UPLIB-101206-500",
            "'evaluationInfo'",
        ),
        (
            json!({"name": "n", "type": "Segment"}),
            400,
            "UPAPI-113434-400",
            "'type'",
        ),
        (
            json!({"name": "n", "lifecycleState": "deleted"}),
            400,
            "UPAPI-113434-400",
            "'lifecycleState'",
        ),
        (
            json!({"name": "n", "lifecycleState": "archived"}),
            400,
            "UPAPI-113434-400",
            "'lifecycleState'",
        ),
        (
            json!({"name": "n", "lifecycleState": "live"}),
            400,
            "UPAPI-113434-400",
            "'lifecycleState'",
        ),
        (json!(["not an object"]), 400, "UPLIB-101206-500", "object"),
    ];
    for (body, status, code, needle) in cases {
        let msg = assert_error(app.create_audience(&body).await, status, code).await;
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    // Nothing was written.
    let list: Value = app.list("property=name!=x").await.json().await.unwrap();
    assert_eq!(list["_page"]["totalCount"], 0);
}

#[tokio::test]
async fn create_accepts_lenient_forms() {
    let app = TestApp::spawn().await;
    let a = app.created(json!({"name": "n", "schema": "_xdm.context.experienceevent", "lifecycleState": "active"})).await;
    assert_eq!(a["schema"], json!({"name": "_xdm.context.experienceevent"}));
    assert_eq!(a["lifecycleState"], "published");
    let d = app
        .created(json!({"name": "d", "lifecycleState": "draft"}))
        .await;
    assert_eq!(d["lifecycleState"], "draft");
}

#[tokio::test]
async fn put_replaces_client_fields() {
    let app = TestApp::spawn().await;
    let a = app.created(external_audience()).await;
    let id = a["id"].as_str().unwrap();
    // The seed's PUT body.
    let res = app
        .put_audience(
            id,
            &json!({
                "audienceId": "test-external-audience-id",
                "name": "New external audience",
                "namespace": "aam",
                "description": "Last 30 days",
                "type": "ExternalSegment",
                "lifecycleState": "published",
                "datasetId": "6254cf3c97f8e31b639fb14d",
                "labels": ["core/C1"]
            }),
        )
        .await;
    assert_eq!(res.status(), 200);
    let etag = etag_header(&res);
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["name"], "New external audience");
    assert_eq!(b["id"], a["id"]);
    assert_eq!(b["creationTime"], a["creationTime"]);
    assert_ne!(b["_etag"], a["_etag"]);
    assert_eq!(b["_etag"], etag.as_str());
    assert!(b["updateTime"].as_i64() >= a["updateTime"].as_i64());
    assert!(
        b.get("linkedAudienceRef").is_none(),
        "a full replace drops fields left out"
    );

    // PUT of the whole object just read works: system fields are ignored.
    let mut read_back: Value = app.get_audience(id).await.json().await.unwrap();
    read_back["description"] = json!("changed");
    let res = app.put_audience(id, &read_back).await;
    assert_eq!(res.status(), 200);
    let c: Value = res.json().await.unwrap();
    assert_eq!(c["description"], "changed");

    // Immutable fields: absent is kept, changed is refused.
    let c2: Value = app
        .put_audience(id, &json!({"name": "only a name"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            c2["namespace"].clone(),
            c2["audienceId"].clone(),
            c2["type"].clone()
        ),
        (
            json!("aam"),
            json!("test-external-audience-id"),
            json!("ExternalSegment")
        )
    );
    for (field, value) in [
        ("namespace", "other"),
        ("audienceId", "other"),
        ("type", "SegmentDefinition"),
    ] {
        let mut body = json!({"name": "x"});
        body[field] = json!(value);
        let msg = assert_error(app.put_audience(id, &body).await, 400, "UPAPI-113434-400").await;
        assert!(msg.contains(field), "{msg}");
    }
    let unchanged: Value = app.get_audience(id).await.json().await.unwrap();
    assert_eq!(unchanged["name"], "only a name");

    assert_error(
        app.put_audience(id, &json!({"description": "no name"}))
            .await,
        400,
        "UPLIB-101206-500",
    )
    .await;
    assert_error(
        app.put_audience(&uuid::Uuid::new_v4().to_string(), &json!({"name": "x"}))
            .await,
        404,
        "UPAPI-113430-404",
    )
    .await;
}

#[tokio::test]
async fn patch_applies_the_seed_add() {
    let app = TestApp::spawn().await;
    let a = app.created(platform_audience()).await;
    let id = a["id"].as_str().unwrap();
    let res = app
        .patch_audience(
            id,
            &json!([{ "op": "add", "path": "/expression", "value": {"type": "PQL", "format": "pql/text", "value": "workAddress.country = \"CA\""} }]),
        )
        .await;
    assert_eq!(res.status(), 200);
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["expression"]["value"], "workAddress.country = \"CA\"");
    assert_ne!(b["_etag"], a["_etag"]);
    assert_eq!(b["name"], a["name"]);
    let res = app
        .patch_audience(
            id,
            &json!([{"op": "replace", "path": "/name", "value": "Renamed"}]),
        )
        .await;
    assert_eq!(res.json::<Value>().await.unwrap()["name"], "Renamed");
}

#[tokio::test]
async fn patch_refuses_immutable_and_system_paths() {
    let app = TestApp::spawn().await;
    let a = app.created(platform_audience()).await;
    let id = a["id"].as_str().unwrap();
    for path in [
        "/namespace",
        "/audienceId",
        "/type",
        "/id",
        "/_etag",
        "/creationTime",
        "/sandbox/sandboxName",
    ] {
        let res = app
            .patch_audience(id, &json!([{"op": "add", "path": path, "value": "x"}]))
            .await;
        let msg = assert_error(res, 400, "UPAPI-113434-400").await;
        assert!(
            msg.contains(path.trim_start_matches('/').split('/').next().unwrap()),
            "{msg}"
        );
    }
    for body in [
        json!({"op": "add"}),
        json!([{"op": "jump", "path": "/name"}]),
        json!([{"op": "add", "path": "/name"}]),
    ] {
        assert_error(app.patch_audience(id, &body).await, 400, "UPLIB-101206-500").await;
    }
    // A patch that leaves an invalid audience is refused as a whole.
    assert_error(
        app.patch_audience(id, &json!([{"op": "remove", "path": "/name"}]))
            .await,
        400,
        "UPLIB-101206-500",
    )
    .await;
    let after: Value = app.get_audience(id).await.json().await.unwrap();
    assert_eq!(after, a, "nothing changed");
}

#[tokio::test]
async fn delete_then_not_found() {
    let app = TestApp::spawn().await;
    let a = app.created(platform_audience()).await;
    let id = a["id"].as_str().unwrap();
    let res = app.delete_audience(id).await;
    assert_eq!(res.status(), 204);
    assert!(res.bytes().await.unwrap().is_empty());
    let msg = assert_error(app.get_audience(id).await, 404, "UPAPI-113430-404").await;
    assert!(msg.contains(id));
    assert_error(app.delete_audience(id).await, 404, "UPAPI-113430-404").await;
    assert_error(
        app.get_audience("not-a-uuid").await,
        404,
        "UPAPI-113430-404",
    )
    .await;
}

/// PostgreSQL text cannot hold U+0000; a body or query that carries it is the client's error,
/// not a 500 (found by schemathesis).
#[tokio::test]
async fn nul_characters_are_client_errors() {
    let app = TestApp::spawn().await;
    let res = app
        .create_audience(&json!({"name": "a\u{0}b", "description": "x"}))
        .await;
    let message = assert_error(res, 400, "UPLIB-101206-500").await;
    assert!(message.contains("U+0000"), "{message}");
    let res = app
        .create_audience(&json!({"name": "ok", "extra": {"k\u{0}": 1}}))
        .await;
    assert_error(res, 400, "UPLIB-101206-500").await;
    for query in [
        "name=%00",
        "description=a%00",
        "entityType=%00",
        "property=name==a%00b",
    ] {
        let res = app.list(query).await;
        let message = assert_error(res, 400, "UPAPI-113401-400").await;
        assert!(message.contains("U+0000"), "{query}: {message}");
    }
    let created = app.created(platform_audience()).await;
    let id = created["id"].as_str().unwrap();
    let res = app
        .patch_audience(
            id,
            &json!([{"op": "add", "path": "/description", "value": "\u{0}"}]),
        )
        .await;
    assert_error(res, 400, "UPLIB-101206-500").await;
    let res = app.list("").await;
    assert_eq!(res.status(), 200);
}
