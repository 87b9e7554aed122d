//! Another tenant's resources do not exist for the caller: every route that takes an id answers
//! an id of another tenant exactly as it answers an id that exists nowhere (the whole error body,
//! request id included), changes nothing, and a bulk-get treats a foreign id like a missing one.

use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::helpers::{
    ais::{tutorial_body, Ais, TUTORIAL_CSV},
    *,
};

/// The tenants that must not see the default tenant's resources: another sandbox of the same
/// organisation, and the same sandbox name in another organisation.
const OTHERS: [(&str, &str); 2] = [(ORG, "dev"), ("OTHER@AdobeOrg", SANDBOX)];

/// The error body of `code` with `message`, as the service answers it to `request_id`.
fn error_body(request_id: &str, status: u16, code: &str, message: &str) -> Value {
    json!({
        "requestId": request_id,
        "type": format!("https://ns.adobe.com/aep/errors/{code}"),
        "title": message,
        "status": status,
        "errors": {status.to_string(): [{"code": code, "message": message}]},
    })
}

/// Asserts that `res` is exactly the 404 body of `code` with `message`, for the request id the
/// caller sent.
async fn assert_not_found(res: Response, request_id: &str, code: &str, message: &str) {
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["x-request-id"], request_id);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, error_body(request_id, 404, code, message));
}

/// One call of a route that takes an id, with what it answers when that id is unknown.
struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
    message: String,
}

fn external_not_found(id: &str) -> String {
    format!("The external audience {id} is not found. Use a valid id and try again.")
}

/// Every AIS route that takes an id of the external audience, its operation or its run.
fn ais_calls(audience: &str, operation: &str, run: &str) -> Vec<Call> {
    let call = |method: Method, path: String, body: Option<Value>, message: String| Call {
        method,
        path: format!("/data/core/ais{path}"),
        body,
        message,
    };
    let external = external_not_found(audience);
    vec![
        call(
            Method::GET,
            format!("/external-audience/operations/{operation}"),
            None,
            format!("The operation {operation} is not found. Use a valid id and try again."),
        ),
        call(
            Method::GET,
            format!("/external-audience/{audience}"),
            None,
            external.clone(),
        ),
        call(
            Method::PATCH,
            format!("/external-audience/{audience}"),
            Some(json!({"description": "taken over"})),
            external.clone(),
        ),
        call(
            Method::POST,
            format!("/external-audience/{audience}/runs"),
            Some(json!({"dataFilterStartTime": 0})),
            external.clone(),
        ),
        call(
            Method::GET,
            format!("/external-audience/{audience}/runs"),
            None,
            external.clone(),
        ),
        call(
            Method::GET,
            format!("/external-audience/{audience}/runs/{run}"),
            None,
            external.clone(),
        ),
        call(
            Method::POST,
            format!("/external-audience/extend-ttl/{audience}"),
            None,
            external.clone(),
        ),
        call(
            Method::DELETE,
            format!("/external-audience/{audience}"),
            None,
            external,
        ),
    ]
}

/// What the owner can read of an external audience and everything that hangs off it.
async fn owner_view(t: &Ais, audience: &str, operation: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    for path in [
        format!("/external-audience/operations/{operation}"),
        format!("/external-audience/{audience}"),
        format!("/external-audience/{audience}/runs"),
    ] {
        seen.push(t.json(Method::GET, &path, None, 200).await);
    }
    let ups = t.app.get_audience(audience).await;
    assert_eq!(ups.status(), 200);
    seen.push(ups.json().await.unwrap());
    seen
}

#[tokio::test]
async fn every_ais_route_answers_another_tenants_ids_as_unknown_ones() {
    let t = Ais::spawn().await;
    let w = t.worker("w").await;
    t.write("DLZ", "x.csv", TUTORIAL_CSV);
    let operation = t.accept(tutorial_body("x.csv")).await;
    assert!(w.run_once().await.unwrap());
    let op = t
        .json(
            Method::GET,
            &format!("/external-audience/operations/{operation}"),
            None,
            200,
        )
        .await;
    let audience = op["audienceId"].as_str().unwrap().to_owned();
    // A finished run, so that extend-ttl would have data to extend.
    let run = t
        .start_run(&audience, json!({"dataFilterStartTime": 0}))
        .await;
    let run = run["runId"].as_str().unwrap().to_owned();
    w.drain().await.unwrap();
    let before = owner_view(&t, &audience, &operation).await;

    let mut n = 0;
    for (org, sandbox) in OTHERS {
        let other = t.app.as_tenant(org, sandbox);
        for call in ais_calls(&audience, &operation, &run) {
            n += 1;
            let request_id = format!("cross-tenant-{n}");
            let mut request = other
                .request(call.method.clone(), &call.path)
                .header("x-request-id", &request_id);
            if let Some(body) = &call.body {
                request = request.json(body);
            }
            let res = request.send().await.unwrap();
            assert_not_found(res, &request_id, "100940-404", &call.message).await;
        }
    }
    // Nothing the other tenants sent changed anything, and no job was queued for them.
    assert_eq!(owner_view(&t, &audience, &operation).await, before);
    assert!(!w.run_once().await.unwrap());

    // The answers are those of ids that exist nowhere: the owner asking for unknown ids.
    let unknown = uuid::Uuid::new_v4().to_string();
    for call in ais_calls(&unknown, &unknown, &unknown) {
        n += 1;
        let request_id = format!("unknown-{n}");
        let mut request = t
            .app
            .request(call.method.clone(), &call.path)
            .header("x-request-id", &request_id);
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let res = request.send().await.unwrap();
        assert_not_found(res, &request_id, "100940-404", &call.message).await;
    }
    // A run of the owner's asked for under another audience id is not found either.
    let res = t
        .app
        .request(
            Method::GET,
            &format!("/data/core/ais/external-audience/{unknown}/runs/{run}"),
        )
        .header("x-request-id", "run-elsewhere")
        .send()
        .await
        .unwrap();
    assert_not_found(
        res,
        "run-elsewhere",
        "100940-404",
        &external_not_found(&unknown),
    )
    .await;
}

#[tokio::test]
async fn every_ups_route_answers_another_tenants_ids_as_unknown_ones() {
    let app = TestApp::spawn().await;
    let mine = app.created(platform_audience()).await;
    let id = mine["id"].as_str().unwrap();
    let message =
        format!("The audience entity {id} is not found. Use a valid entity and try again.");
    let mut n = 0;
    for (org, sandbox) in OTHERS {
        let other = app.as_tenant(org, sandbox);
        for (method, body) in [
            (Method::GET, None),
            (Method::PUT, Some(json!({"name": "taken over"}))),
            (
                Method::PATCH,
                Some(json!([{"op": "replace", "path": "/name", "value": "taken over"}])),
            ),
            (Method::DELETE, None),
        ] {
            n += 1;
            let request_id = format!("cross-tenant-{n}");
            let mut request = other
                .ups(method, &format!("/audiences/{id}"))
                .header("x-request-id", &request_id);
            if let Some(body) = &body {
                request = request.json(body);
            }
            let res = request.send().await.unwrap();
            assert_not_found(res, &request_id, "UPAPI-113430-404", &message).await;
        }
    }
    let now: Value = app.get_audience(id).await.json().await.unwrap();
    assert_eq!(now, mine, "nothing changed");
}

/// A bulk-get holding another tenant's id answers that entry with the 404 body an unknown id
/// gets, and the caller's own audience whole; with only foreign ids it is a 404 like none found.
#[tokio::test]
async fn a_foreign_id_in_a_bulk_get_is_a_missing_one() {
    let app = TestApp::spawn().await;
    let theirs = app.created(platform_audience()).await;
    let foreign = theirs["id"].as_str().unwrap();
    let (org, sandbox) = OTHERS[1];
    let other = app.as_tenant(org, sandbox);
    let own: Value = other
        .ups(Method::POST, "/audiences")
        .json(&json!({"name": "mine"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let own_id = own["id"].as_str().unwrap();
    let res = other
        .ups(Method::POST, "/audiences/bulk-get")
        .header("x-request-id", "bulk-1")
        .json(&json!({"ids": [{"id": own_id}, {"id": foreign}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 207);
    let body: Value = res.json().await.unwrap();
    let message =
        format!("The audience entity {foreign} is not found. Use a valid entity and try again.");
    assert_eq!(
        body,
        json!({"results": {
            own_id: own,
            foreign: error_body("bulk-1", 404, "UPAPI-113430-404", &message),
        }})
    );
    let res = other
        .ups(Method::POST, "/audiences/bulk-get")
        .header("x-request-id", "bulk-2")
        .json(&json!({"ids": [foreign]}))
        .send()
        .await
        .unwrap();
    assert_not_found(
        res,
        "bulk-2",
        "UPAPI-113000-404",
        "None of the requested audiences was found.",
    )
    .await;
}
