//! Test control (`/_local`, docs/CONTROL.md), used the way a client suite would: reset a sandbox
//! between tests, drain its jobs instead of polling.

use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::helpers::{
    ais::{named, Ais, TUTORIAL_CSV},
    assert_error, platform_audience, TestApp, ORG,
};

const OTHER_ORG: &str = "OTHERORG0000000000000000@AdobeOrg";

async fn local(app: &TestApp, method: Method, path: &str) -> Response {
    app.request(method, &format!("/_local{path}"))
        .send()
        .await
        .unwrap()
}

/// A control call that must answer 200; its body.
async fn local_ok(app: &TestApp, method: Method, path: &str) -> Value {
    let res = local(app, method, path).await;
    let status = res.status();
    let text = res.text().await.unwrap();
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// How many audiences a tenant's list counts.
async fn audience_total(app: &TestApp, org: &str, sandbox: &str) -> i64 {
    let res = app
        .as_tenant(org, sandbox)
        .ups(Method::GET, "/audiences")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let page: Value = res.json().await.unwrap();
    page["_page"]["totalCount"].as_i64().unwrap()
}

/// Rows of `table` that belong to the sandbox `name` of `org`.
async fn rows_of(app: &TestApp, table: &str, org: &str, name: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {table} t JOIN sandboxes s USING (sandbox_id)
         WHERE s.org_id = $1 AND s.name = $2"
    )))
    .bind(org)
    .bind(name)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn reset_removes_everything_of_the_sandbox_and_nothing_else() {
    let t = Ais::spawn().await;
    let app = &t.app;
    // This sandbox: two UPS audiences, one depending on the other; an external audience with a
    // finished run and its members; an external audience still being created; a file.
    let parent = app.created(platform_audience()).await;
    let mut child = platform_audience();
    child["name"] = json!("child");
    child["expression"]["value"] =
        json!(format!("inSegment(\"{}\")", parent["id"].as_str().unwrap()));
    app.created(child).await;
    t.write("DLZ", "suite/people.csv", TUTORIAL_CSV);
    let body = named("suite/people.csv", "ingested");
    local_ok(app, Method::POST, "/worker/drain").await;
    let op = t.accept(body).await;
    local_ok(app, Method::POST, "/worker/drain").await;
    let external = t.operation(&op).await["audienceId"]
        .as_str()
        .unwrap()
        .to_owned();
    t.start_run(&external, json!({"dataFilterStartTime": 0}))
        .await;
    local_ok(app, Method::POST, "/worker/drain").await;
    let members = t.members(&external).await;
    assert!(members > 0);
    t.accept(named("suite/people.csv", "pending")).await;
    // Other tenants: another sandbox of the org, and another org's sandbox of the same name.
    for (org, sandbox) in [(ORG, "dev"), (OTHER_ORG, "prod")] {
        let res = app
            .as_tenant(org, sandbox)
            .ups(Method::POST, "/audiences")
            .json(&platform_audience())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let res = app
            .as_tenant(org, sandbox)
            .request(Method::POST, "/data/core/ais/external-audience/")
            .json(&named("suite/people.csv", "theirs"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
    }

    let removed = local_ok(app, Method::POST, "/sandbox/reset").await;
    assert_eq!(
        removed,
        json!({
            "audiences": 3, "externalAudiences": 2, "operations": 2, "runs": 1, "jobs": 3,
            "members": members, "stagedRows": 0, "clockOffset": false, "zoneFiles": 1
        })
    );

    assert_eq!(audience_total(app, ORG, "prod").await, 0);
    let res = t
        .send(Method::GET, &format!("/external-audience/{external}"), None)
        .await;
    assert_error(res, 404, "100940-404").await;
    let res = t
        .send(
            Method::GET,
            &format!("/external-audience/operations/{op}"),
            None,
        )
        .await;
    assert_eq!(res.status(), 404);
    // The other tenants keep their audience and their external audience being created.
    for (table, theirs) in [
        ("audiences", 1),
        ("external_audiences", 1),
        ("ais_operations", 1),
        ("ais_runs", 0),
        ("ais_jobs", 1),
    ] {
        assert_eq!(rows_of(app, table, ORG, "prod").await, 0, "{table}");
        assert_eq!(rows_of(app, table, ORG, "dev").await, theirs, "{table}");
        assert_eq!(
            rows_of(app, table, OTHER_ORG, "prod").await,
            theirs,
            "{table}"
        );
    }
    assert_eq!(t.member_rows().await, 0);
    assert!(!t.zone.join("DLZ/suite/people.csv").exists());
    for (org, sandbox) in [(ORG, "dev"), (OTHER_ORG, "prod")] {
        assert_eq!(audience_total(app, org, sandbox).await, 1);
    }

    // The sandbox works as new: the same names may be used again, the zone takes files.
    app.created(platform_audience()).await;
    t.write("DLZ", "suite/people.csv", TUTORIAL_CSV);
    t.accept(named("suite/people.csv", "ingested")).await;
    let drained = local_ok(app, Method::POST, "/worker/drain").await;
    assert_eq!(drained["steps"], 1);
    // A second reset finds only what was made since.
    let removed = local_ok(app, Method::POST, "/sandbox/reset").await;
    assert_eq!(removed["audiences"], 2);
    assert_eq!(removed["externalAudiences"], 1);
}

#[tokio::test]
async fn a_drained_run_has_finished_without_polling() {
    let t = Ais::spawn().await;
    let app = &t.app;
    t.write("DLZ", "suite/people.csv", TUTORIAL_CSV);
    let op = t.accept(named("suite/people.csv", "people")).await;
    // Another sandbox's drain leaves this sandbox's jobs alone.
    let res = app
        .as_tenant(ORG, "dev")
        .request(Method::POST, "/_local/worker/drain")
        .send()
        .await
        .unwrap();
    let other: Value = res.json().await.unwrap();
    assert_eq!(other["steps"], 0);
    assert_eq!(t.operation(&op).await["status"], "PROCESSING");

    let drained = local_ok(app, Method::POST, "/worker/drain?timeout=10").await;
    assert_eq!(drained["steps"], 1);
    let op = t.operation(&op).await;
    assert_eq!(op["status"], "SUCCESS", "{op}");
    let audience = op["audienceId"].as_str().unwrap();
    let run = t
        .start_run(audience, json!({"dataFilterStartTime": 0}))
        .await;
    let drained = local_ok(app, Method::POST, "/worker/drain").await;
    assert_eq!(drained["steps"], 2, "the run's two stages");
    let run = t.run(audience, &run).await;
    assert_eq!(run["status"], "SUCCESS", "{run}");
    assert_eq!(t.open_jobs().await, 0);
    // Nothing left: a drain answers at once.
    let drained = local_ok(app, Method::POST, "/worker/drain").await;
    assert_eq!(drained["steps"], 0);
}

#[tokio::test]
async fn a_drain_is_bounded_by_its_timeout() {
    let t = Ais::spawn().await;
    let app = &t.app;
    for bad in ["0", "121", "x", "1.5"] {
        let res = local(app, Method::POST, &format!("/worker/drain?timeout={bad}")).await;
        let message = assert_error(res, 400, "UPAPI-113401-400").await;
        assert!(
            message.contains("'timeout'") && message.contains("120"),
            "{message}"
        );
    }
    // A job another worker holds (and never finishes) keeps the sandbox from draining.
    t.accept(named("suite/people.csv", "held")).await;
    let holder = t.worker("holder").await;
    assert!(holder.claim().await.unwrap().is_some());
    let started = std::time::Instant::now();
    let res = local(app, Method::POST, "/worker/drain?timeout=1").await;
    let message = assert_error(res, 408, "UPAPI-113408-408").await;
    assert!(message.contains("after 1 s"), "{message}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn the_control_api_is_absent_when_off() {
    let app = TestApp::spawn_with(|s| s.control_api = Some(false)).await;
    for path in ["/sandbox/reset", "/worker/drain"] {
        let res = local(&app, Method::POST, path).await;
        assert_error(res, 404, "UPAPI-113404-404").await;
    }
    // The rest of the API is unaffected.
    app.created(platform_audience()).await;
}

#[tokio::test]
async fn in_verify_mode_the_control_api_needs_the_control_token() {
    use audience_server::config::{AuthMode, Secret};
    let app = TestApp::spawn_with(|s| {
        s.auth_mode = AuthMode::Verify;
        s.jwt_secret = Some(Secret("staging-secret-of-at-least-32-bytes".into()));
        s.control_api = Some(true);
        s.control_token = Some(Secret("suite-control-token".into()));
    })
    .await;
    let call = |token: &'static str| {
        app.request_with_token(Method::POST, "/_local/sandbox/reset", token)
            .send()
    };
    let refused = call("not-the-token").await.unwrap();
    assert_eq!(refused.status(), 401);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error_code"], "401013");
    assert!(body["message"].as_str().unwrap().contains("CONTROL_TOKEN"));
    assert_eq!(call("suite-control-token").await.unwrap().status(), 200);
    // The control token is not a token of the API.
    let res = app
        .request_with_token(
            Method::GET,
            "/data/core/ups/audiences",
            "suite-control-token",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // The usual header checks still apply.
    let res = app
        .client
        .post(format!("{}/_local/sandbox/reset", app.address))
        .header("Authorization", "Bearer suite-control-token")
        .header("x-api-key", "k")
        .header("x-gw-ims-org-id", ORG)
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "UPAPI-113400-400").await;
}
