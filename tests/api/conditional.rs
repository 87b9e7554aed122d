//! Conditional requests and concurrent writers.

use std::sync::Arc;

use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::Barrier;

use crate::helpers::*;

#[tokio::test]
async fn if_none_match_gives_304_with_the_etag() {
    let app = TestApp::spawn().await;
    let a = app.created(platform_audience()).await;
    let (id, etag) = (a["id"].as_str().unwrap(), a["_etag"].as_str().unwrap());
    let res = app
        .ups(Method::GET, &format!("/audiences/{id}"))
        .header("If-None-Match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    assert_eq!(res.headers()["etag"], etag);
    assert!(res.bytes().await.unwrap().is_empty());
    let res = app
        .ups(Method::GET, &format!("/audiences/{id}"))
        .header("If-None-Match", "\"stale\", W/\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = app
        .ups(Method::GET, &format!("/audiences/{id}"))
        .header("If-None-Match", format!("\"x\", {etag}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    // After a write the old tag no longer matches.
    app.patch_audience(
        id,
        &json!([{"op": "add", "path": "/description", "value": "new"}]),
    )
    .await;
    let res = app
        .ups(Method::GET, &format!("/audiences/{id}"))
        .header("If-None-Match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn stale_if_match_is_412_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let a = app.created(platform_audience()).await;
    let id = a["id"].as_str().unwrap().to_owned();
    let etag = a["_etag"].as_str().unwrap().to_owned();
    let path = format!("/audiences/{id}");
    let stale = "\"00000000-0000-0200-0000-000000000000\"";
    let patch = json!([{"op": "add", "path": "/description", "value": "x"}]);
    let put = json!({"name": "replaced"});
    assert_error(
        app.ups(Method::PATCH, &path)
            .header("If-Match", stale)
            .json(&patch)
            .send()
            .await
            .unwrap(),
        412,
        "UPAPI-113412-412",
    )
    .await;
    assert_error(
        app.ups(Method::PUT, &path)
            .header("If-Match", stale)
            .json(&put)
            .send()
            .await
            .unwrap(),
        412,
        "UPAPI-113412-412",
    )
    .await;
    assert_error(
        app.ups(Method::DELETE, &path)
            .header("If-Match", stale)
            .send()
            .await
            .unwrap(),
        412,
        "UPAPI-113412-412",
    )
    .await;
    let now: Value = app.get_audience(&id).await.json().await.unwrap();
    assert_eq!(now, a, "nothing changed");

    // The current tag (with or without quotes) goes through and yields a new one.
    let res = app
        .ups(Method::PATCH, &path)
        .header("If-Match", &etag)
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let b: Value = res.json().await.unwrap();
    let unquoted = b["_etag"].as_str().unwrap().trim_matches('"').to_owned();
    let res = app
        .ups(Method::PUT, &path)
        .header("If-Match", unquoted)
        .json(&put)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The tag read before the PUT is now stale.
    assert_error(
        app.ups(Method::PATCH, &path)
            .header("If-Match", b["_etag"].as_str().unwrap())
            .json(&patch)
            .send()
            .await
            .unwrap(),
        412,
        "UPAPI-113412-412",
    )
    .await;
    // `*` matches any existing audience, and none that does not exist.
    assert_eq!(
        app.ups(Method::PATCH, &path)
            .header("If-Match", "*")
            .json(&patch)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.ups(Method::DELETE, &path)
            .header("If-Match", "*")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_error(
        app.ups(Method::DELETE, &path)
            .header("If-Match", "*")
            .send()
            .await
            .unwrap(),
        404,
        "UPAPI-113430-404",
    )
    .await;
}

/// Two writers with the same `If-Match` race: both requests leave at once (a barrier) for a server
/// with two workers; one wins, the other is refused, and what is stored is the winner's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_of_two_writers_with_the_same_tag_wins() {
    let app = TestApp::spawn_with(|s| s.http_workers = Some(2)).await;
    let a = app.created(platform_audience()).await;
    let id = a["id"].as_str().unwrap().to_owned();
    let etag = a["_etag"].as_str().unwrap().to_owned();
    let barrier = Arc::new(Barrier::new(2));
    let writers = ["x", "y"].map(|value| {
        let request = app
            .ups(Method::PATCH, &format!("/audiences/{id}"))
            .header("If-Match", &etag)
            .json(&json!([{"op": "replace", "path": "/name", "value": value}]));
        let barrier = barrier.clone();
        tokio::spawn(async move {
            barrier.wait().await;
            let res = request.send().await.unwrap();
            let status = res.status().as_u16();
            (value, status, res.json::<Value>().await.unwrap())
        })
    });
    let mut outcomes = Vec::new();
    for writer in writers {
        outcomes.push(writer.await.unwrap());
    }
    let mut statuses: Vec<u16> = outcomes.iter().map(|(_, status, _)| *status).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 412], "{outcomes:?}");
    let (winner, _, answer) = outcomes
        .iter()
        .find(|(_, status, _)| *status == 200)
        .unwrap();
    let stored: Value = app.get_audience(&id).await.json().await.unwrap();
    assert_eq!(stored["name"], *winner);
    assert_eq!(&stored, answer, "the winner's answer is what is stored");
    assert_ne!(stored["_etag"], a["_etag"]);
}

/// Twenty writers without `If-Match` append to one list at once (released together by a
/// barrier): the database decides the order, and no update is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_patches_lose_nothing() {
    let app = TestApp::spawn_with(|s| s.http_workers = Some(2)).await;
    let a = app.created(json!({"name": "counter", "labels": []})).await;
    let id = a["id"].as_str().unwrap().to_owned();
    let barrier = Arc::new(Barrier::new(20));
    let patches: Vec<_> = (0..20)
        .map(|i| {
            let request = app
                .ups(Method::PATCH, &format!("/audiences/{id}"))
                .json(&json!([{"op": "add", "path": "/labels/-", "value": format!("l{i}")}]));
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                request.send().await.unwrap().status().as_u16()
            })
        })
        .collect();
    for patch in patches {
        assert_eq!(patch.await.unwrap(), 200);
    }
    let final_: Value = app.get_audience(&id).await.json().await.unwrap();
    let mut labels: Vec<String> = serde_json::from_value(final_["labels"].clone()).unwrap();
    labels.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("l{i}")).collect();
    want.sort();
    assert_eq!(labels, want);
}

#[tokio::test]
async fn every_json_patch_operation() {
    let app = TestApp::spawn().await;
    let a = app
        .created(json!({"name": "ops", "labels": ["a", "b"], "audienceMeta": {"k": 1}}))
        .await;
    let id = a["id"].as_str().unwrap();
    let res = app
        .patch_audience(
            id,
            &json!([
                {"op": "test", "path": "/name", "value": "ops"},
                {"op": "add", "path": "/labels/1", "value": "inserted"},
                {"op": "remove", "path": "/labels/0"},
                {"op": "replace", "path": "/audienceMeta/k", "value": 2},
                {"op": "copy", "from": "/name", "path": "/description"},
                {"op": "move", "from": "/audienceMeta", "path": "/linkedAudienceRef"},
                {"op": "test", "path": "/id", "value": id}
            ]),
        )
        .await;
    assert_eq!(res.status(), 200);
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["labels"], json!(["inserted", "b"]));
    assert_eq!(b["description"], "ops");
    assert_eq!(b["linkedAudienceRef"], json!({"k": 2}));
    assert!(b.get("audienceMeta").is_none());
    // A failed test refuses the whole patch.
    let res = app
        .patch_audience(id, &json!([{"op": "replace", "path": "/name", "value": "changed"}, {"op": "test", "path": "/labels/0", "value": "nope"}]))
        .await;
    let msg = assert_error(res, 400, "UPAPI-113434-400").await;
    assert!(msg.contains("test failed"), "{msg}");
    // A path that does not exist, a move out of a system field.
    assert_error(
        app.patch_audience(id, &json!([{"op": "remove", "path": "/nothing"}]))
            .await,
        400,
        "UPAPI-113434-400",
    )
    .await;
    assert_error(
        app.patch_audience(
            id,
            &json!([{"op": "move", "from": "/createdBy", "path": "/description"}]),
        )
        .await,
        400,
        "UPAPI-113434-400",
    )
    .await;
    // The patched document is validated as a whole.
    assert_error(
        app.patch_audience(
            id,
            &json!([{"op": "replace", "path": "/labels", "value": "x"}]),
        )
        .await,
        400,
        "UPLIB-101206-500",
    )
    .await;
    let after: Value = app.get_audience(id).await.json().await.unwrap();
    assert_eq!(after, b);
}
