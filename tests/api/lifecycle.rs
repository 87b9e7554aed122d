//! Lifecycle transitions and dependency bookkeeping.

use serde_json::{json, Value};

use crate::helpers::*;

async fn set_state(app: &TestApp, id: &str, state: &str) -> reqwest::Response {
    app.patch_audience(
        id,
        &json!([{"op": "replace", "path": "/lifecycleState", "value": state}]),
    )
    .await
}

#[tokio::test]
async fn transitions_allowed_and_refused() {
    let app = TestApp::spawn().await;
    let a = app
        .created(json!({"name": "life", "lifecycleState": "draft"}))
        .await;
    let id = a["id"].as_str().unwrap();
    // draft -> inactive is refused, draft -> draft a no-op, draft -> published allowed.
    let msg = assert_error(
        set_state(&app, id, "inactive").await,
        400,
        "UPAPI-113434-400",
    )
    .await;
    assert!(msg.contains("draft") && msg.contains("inactive"), "{msg}");
    assert_eq!(set_state(&app, id, "draft").await.status(), 200);
    assert_eq!(set_state(&app, id, "published").await.status(), 200);
    // published -> draft refused; published -> inactive -> published allowed; active is published.
    assert_error(set_state(&app, id, "draft").await, 400, "UPAPI-113434-400").await;
    assert_eq!(set_state(&app, id, "inactive").await.status(), 200);
    assert_error(set_state(&app, id, "draft").await, 400, "UPAPI-113434-400").await;
    let res = set_state(&app, id, "active").await;
    assert_eq!(
        res.json::<Value>().await.unwrap()["lifecycleState"],
        "published"
    );
    // deleted and archived are never set by a client.
    for state in ["deleted", "archived"] {
        assert_error(set_state(&app, id, state).await, 400, "UPAPI-113434-400").await;
        assert_error(
            app.put_audience(id, &json!({"name": "x", "lifecycleState": state}))
                .await,
            400,
            "UPAPI-113434-400",
        )
        .await;
    }
    // PUT follows the same rules and keeps the state when it is left out.
    assert_error(
        app.put_audience(id, &json!({"name": "x", "lifecycleState": "draft"}))
            .await,
        400,
        "UPAPI-113434-400",
    )
    .await;
    let kept: Value = app
        .put_audience(id, &json!({"name": "x"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(kept["lifecycleState"], "published");
}

fn referencing(ids: &[&str]) -> Value {
    let value = ids
        .iter()
        .map(|id| format!("inSegment(\"{id}\")"))
        .collect::<Vec<_>>()
        .join(" and ");
    json!({"name": "composite", "expression": {"type": "PQL", "format": "pql/text", "value": value}})
}

#[tokio::test]
async fn dependencies_and_dependents_are_kept_in_step() {
    let app = TestApp::spawn().await;
    let a = app.created(json!({"name": "a"})).await;
    let b = app.created(json!({"name": "b"})).await;
    let (ida, idb) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let c = app.created(referencing(&[ida, idb])).await;
    let idc = c["id"].as_str().unwrap();
    assert_eq!(c["dependencies"], json!([ida, idb]));
    let dependents = |id: &str| {
        let app = &app;
        let id = id.to_owned();
        async move { app.get_audience(&id).await.json::<Value>().await.unwrap()["dependents"].clone() }
    };
    assert_eq!(dependents(ida).await, json!([idc]));
    assert_eq!(dependents(idb).await, json!([idc]));
    // The referenced audience's etag does not move for this.
    let a_now: Value = app.get_audience(ida).await.json().await.unwrap();
    assert_eq!(a_now["_etag"], a["_etag"]);

    // PATCH drops b and keeps a.
    let res = app.patch_audience(idc, &json!([{"op": "replace", "path": "/expression/value", "value": format!("inSegment(\"{ida}\")")}])).await;
    assert_eq!(
        res.json::<Value>().await.unwrap()["dependencies"],
        json!([ida])
    );
    assert_eq!(dependents(idb).await, json!([]));
    // PUT moves it to b.
    let res = app.put_audience(idc, &referencing(&[idb])).await;
    assert_eq!(
        res.json::<Value>().await.unwrap()["dependencies"],
        json!([idb])
    );
    assert_eq!(dependents(ida).await, json!([]));
    assert_eq!(dependents(idb).await, json!([idc]));

    // b cannot be deactivated or deleted while c is live.
    let msg = assert_error(
        set_state(&app, idb, "inactive").await,
        400,
        "UPAPI-113631-403",
    )
    .await;
    assert!(msg.contains(idc));
    assert_error(app.delete_audience(idb).await, 400, "UPAPI-113631-403").await;
    // Once c is inactive, b may go inactive; c cannot be published again while b is not.
    assert_eq!(set_state(&app, idc, "inactive").await.status(), 200);
    assert_eq!(set_state(&app, idb, "inactive").await.status(), 200);
    let msg = assert_error(
        set_state(&app, idc, "published").await,
        400,
        "UPAPI-113434-400",
    )
    .await;
    assert!(msg.contains(idb), "{msg}");
    // Deleting c clears b's dependents; then b can be deleted.
    assert_eq!(app.delete_audience(idc).await.status(), 204);
    assert_eq!(dependents(idb).await, json!([]));
    assert_eq!(app.delete_audience(idb).await.status(), 204);
}

#[tokio::test]
async fn unknown_self_and_cyclic_references_are_refused() {
    let app = TestApp::spawn().await;
    let missing = uuid::Uuid::new_v4().to_string();
    for r in [missing.as_str(), "not-a-uuid"] {
        let msg = assert_error(
            app.create_audience(&referencing(&[r])).await,
            400,
            "UPAPI-113434-400",
        )
        .await;
        assert!(msg.contains(r) && msg.contains("expression"), "{msg}");
    }
    // Another tenant's audience does not exist for this one.
    let other = app.as_tenant(ORG, "dev");
    let theirs: Value = other
        .ups(reqwest::Method::POST, "/audiences")
        .json(&json!({"name": "t"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_error(
        app.create_audience(&referencing(&[theirs["id"].as_str().unwrap()]))
            .await,
        400,
        "UPAPI-113434-400",
    )
    .await;
    // Publishing needs published dependencies.
    let draft = app
        .created(json!({"name": "d", "lifecycleState": "draft"}))
        .await;
    let idd = draft["id"].as_str().unwrap();
    assert_error(
        app.create_audience(&referencing(&[idd])).await,
        400,
        "UPAPI-113434-400",
    )
    .await;
    let mut as_draft = referencing(&[idd]);
    as_draft["lifecycleState"] = json!("draft");
    let e = app.created(as_draft).await;
    let ide = e["id"].as_str().unwrap();
    // Self reference and cycles.
    let own = json!([{"op": "replace", "path": "/expression/value", "value": format!("inSegment(\"{ide}\")")}]);
    assert_error(app.patch_audience(ide, &own).await, 400, "UPAPI-113434-400").await;
    let back = json!([{"op": "add", "path": "/expression", "value": {"type": "PQL", "format": "pql/text", "value": format!("inSegment(\"{ide}\")")}}]);
    let msg = assert_error(
        app.patch_audience(idd, &back).await,
        400,
        "UPAPI-113434-400",
    )
    .await;
    assert!(msg.contains("cycle"), "{msg}");
}
