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

/// A UPS audience and another that depends on it.
async fn parent_with_a_child(app: &TestApp) {
    let parent = app.created(platform_audience()).await;
    let mut child = platform_audience();
    child["name"] = json!("child");
    child["expression"]["value"] =
        json!(format!("inSegment(\"{}\")", parent["id"].as_str().unwrap()));
    app.created(child).await;
}

#[tokio::test]
async fn reset_removes_everything_of_the_sandbox_and_nothing_else() {
    let t = Ais::spawn().await;
    let app = &t.app;
    // This sandbox: two UPS audiences, one depending on the other; an external audience with a
    // finished run and its members; an external audience still being created; a file.
    parent_with_a_child(app).await;
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
            "members": members, "stagedRows": 0, "clockOffset": false, "faults": 0,
            "zoneFiles": 1
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

/// Drains run on the HTTP pool: a process runs at most CONTROL_MAX_CONCURRENT_DRAINS at once, and
/// a drain that cannot get its turn within its timeout answers 408 without running anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drains_beyond_the_concurrent_bound_wait_their_turn_within_their_timeout() {
    let t = Ais::spawn_with(|s| s.control_max_concurrent_drains = 1).await;
    let app = &t.app;
    t.accept(named("suite/people.csv", "held")).await;
    let holder = t.worker("holder").await;
    assert!(holder.claim().await.unwrap().is_some());
    // The first drain waits 3 s on the held job, keeping the only turn.
    let first = app
        .request(Method::POST, "/_local/worker/drain?timeout=3")
        .send();
    let first = tokio::spawn(first);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // Another sandbox's drain, with nothing to run, still has to wait for the turn.
    let started = std::time::Instant::now();
    let other = app
        .as_tenant(OTHER_ORG, "prod")
        .request(Method::POST, "/_local/worker/drain?timeout=1")
        .send()
        .await
        .unwrap();
    let message = assert_error(other, 408, "UPAPI-113408-408").await;
    assert!(
        message.contains("CONTROL_MAX_CONCURRENT_DRAINS"),
        "{message}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_error(first.await.unwrap().unwrap(), 408, "UPAPI-113408-408").await;
    // With the turn free again, it drains at once.
    let res = app
        .as_tenant(OTHER_ORG, "prod")
        .request(Method::POST, "/_local/worker/drain?timeout=1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
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

const DAY_SECS: i64 = 86_400;

/// Sets up an external audience with a finished run in the sandbox `sandbox` of the app's org,
/// its file dropped in the sandbox's zone; returns its id.
async fn ingested_in(t: &Ais, sandbox: &str, name: &str) -> String {
    let tenant = t.app.as_tenant(ORG, sandbox);
    let send = |method: Method, path: &str, body: Option<Value>| {
        let mut req = tenant.request(method, path);
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let res = req.send().await.unwrap();
            let status = res.status();
            let text = res.text().await.unwrap();
            assert_eq!(status, 200, "{text}");
            serde_json::from_str::<Value>(&text).unwrap()
        }
    };
    let creds = send(
        Method::GET,
        "/data/foundation/connectors/landingzone/credentials?type=user_drop_zone",
        None,
    )
    .await;
    let account = creds["storageAccountName"].as_str().unwrap();
    let file = t
        .landing
        .join(account)
        .join("dlz-user-container/DLZ/suite/people.csv");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, TUTORIAL_CSV).unwrap();
    let accepted = tenant
        .request(Method::POST, "/data/core/ais/external-audience/")
        .json(&named("suite/people.csv", name))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    let op = accepted.json::<Value>().await.unwrap()["operationId"]
        .as_str()
        .unwrap()
        .to_owned();
    send(Method::POST, "/_local/worker/drain", None).await;
    let path = format!("/data/core/ais/external-audience/operations/{op}");
    let audience = send(Method::GET, &path, None).await["audienceId"]
        .as_str()
        .unwrap()
        .to_owned();
    let runs = format!("/data/core/ais/external-audience/{audience}/runs");
    send(Method::POST, &runs, Some(json!({"dataFilterStartTime": 0}))).await;
    send(Method::POST, "/_local/worker/drain", None).await;
    audience
}

#[tokio::test]
async fn a_sandbox_clock_moves_its_ttl_runs_credentials_and_files_and_no_other() {
    let t = Ais::spawn().await;
    let app = &t.app;
    let ours = ingested_in(&t, "prod", "ours").await;
    let theirs = ingested_in(&t, "dev", "theirs").await;
    assert!(t.members(&ours).await > 0 && t.members(&theirs).await > 0);
    let dev = app.as_tenant(ORG, "dev");

    // Bounds.
    for (body, code) in [
        (json!({"offsetSeconds": -1}), "UPAPI-113414-400"),
        (
            json!({"offsetSeconds": 3661 * DAY_SECS}),
            "UPAPI-113414-400",
        ),
        (json!({"offsetSeconds": "soon"}), "UPLIB-101206-500"),
        (json!({}), "UPLIB-101206-500"),
    ] {
        let res = app
            .request(Method::PUT, "/_local/clock")
            .json(&body)
            .send()
            .await
            .unwrap();
        let message = assert_error(res, 400, code).await;
        assert!(message.contains("'offsetSeconds'"), "{message}");
    }

    // 91 days on: past the audience's 40-day TTL, the zone's 7 days and the credential's 90.
    let offset = 91 * DAY_SECS;
    let res = app
        .request(Method::PUT, "/_local/clock")
        .json(&json!({"offsetSeconds": offset}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let clock = local_ok(app, Method::GET, "/clock").await;
    assert_eq!(clock["offsetSeconds"], offset);
    let shown: chrono::DateTime<chrono::Utc> = clock["now"].as_str().unwrap().parse().unwrap();
    assert!(((shown - chrono::Utc::now()).num_seconds() - offset).abs() < 60);
    let res = dev
        .request(Method::GET, "/_local/clock")
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["offsetSeconds"], 0);

    // The drain expires our audience's data at once; the other sandbox's stays, even through a
    // maintenance pass over every sandbox.
    let drained = local_ok(app, Method::POST, "/worker/drain").await;
    assert_eq!(drained["expired"], 1);
    let expired = t.external(&ours).await;
    assert_eq!(expired["dataExpired"], true);
    assert_eq!(expired["profileCount"], 0);
    assert_eq!(t.members(&ours).await, 0);
    let worker = t.worker("maintenance").await;
    let pass = worker.maintain().await.unwrap();
    assert_eq!(pass.expired, 0);
    assert!(t.members(&theirs).await > 0);
    // Zone files: ours are past the zone's TTL by our time, theirs are not.
    assert_eq!(pass.landing.files, 1);
    assert!(!t.zone.join("DLZ/suite/people.csv").exists());

    // A run started now is stamped with the sandbox's time.
    let run = t.start_run(&ours, json!({"dataFilterStartTime": 0})).await;
    let stamped = run["createdAt"].as_i64().unwrap() / 1000;
    let expected = chrono::Utc::now().timestamp() + offset;
    assert!((stamped - expected).abs() < 60, "{run}");

    // Our credential expired by our time and is issued again; theirs holds.
    let expiry = |tenant: &'static str| async move {
        let res = app
            .as_tenant(ORG, tenant)
            .request(
                Method::GET,
                "/data/foundation/connectors/landingzone/credentials?type=user_drop_zone",
            )
            .send()
            .await
            .unwrap();
        let creds: Value = res.json().await.unwrap();
        creds["expiryDate"].as_str().unwrap().to_owned()
    };
    let date = |days: i64| {
        (chrono::Utc::now() + chrono::Duration::days(days))
            .format("%Y-%m-%d")
            .to_string()
    };
    assert_eq!(expiry("prod").await, date(91 + 90));
    assert_eq!(expiry("dev").await, date(90));

    // DELETE gives the sandbox the server's clock again.
    let cleared = local_ok(app, Method::DELETE, "/clock").await;
    assert_eq!(cleared["offsetSeconds"], 0);
    assert_eq!(
        local_ok(app, Method::GET, "/clock").await["offsetSeconds"],
        0
    );
    // A reset removes an offset too.
    let res = app
        .request(Method::PUT, "/_local/clock")
        .json(&json!({"offsetSeconds": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let removed = local_ok(app, Method::POST, "/sandbox/reset").await;
    assert_eq!(removed["clockOffset"], true);
    assert_eq!(
        local_ok(app, Method::GET, "/clock").await["offsetSeconds"],
        0
    );
}

async fn add_fault(app: &TestApp, body: Value) -> Response {
    app.request(Method::POST, "/_local/faults")
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn faults_fail_runs_and_requests_of_their_sandbox_only() {
    let t = Ais::spawn_with(|s| s.control_max_faults = 3).await;
    let app = &t.app;
    t.write("DLZ", "suite/people.csv", TUTORIAL_CSV);
    let op = t.accept(named("suite/people.csv", "people")).await;
    local_ok(app, Method::POST, "/worker/drain").await;
    let audience = t.operation(&op).await["audienceId"]
        .as_str()
        .unwrap()
        .to_owned();
    let start = json!({"dataFilterStartTime": 0});

    // The next run fails at PROFILE_STORE_INGEST with the message asked for; the one after it
    // succeeds.
    let res = add_fault(
        app,
        json!({"audienceId": audience, "stage": "PROFILE_STORE_INGEST",
               "message": "The profile store is down.", "count": 1}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let fault: Value = res.json().await.unwrap();
    assert_eq!(
        (fault["count"].as_i64(), fault["remaining"].as_i64()),
        (Some(1), Some(1))
    );
    let run = t.start_run(&audience, start.clone()).await;
    local_ok(app, Method::POST, "/worker/drain").await;
    let failed = t.run(&audience, &run).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert_eq!(failed["message"], "The profile store is down.");
    assert_eq!(failed["details"][0]["status"], "SUCCESS");
    assert_eq!(failed["details"][1]["status"], "FAILED");
    assert_eq!(
        failed["details"][1]["message"],
        "The profile store is down."
    );
    let listed = local_ok(app, Method::GET, "/faults").await;
    assert_eq!(listed["faults"][0]["remaining"], 0);
    let run = t.start_run(&audience, start.clone()).await;
    local_ok(app, Method::POST, "/worker/drain").await;
    assert_eq!(t.run(&audience, &run).await["status"], "SUCCESS");

    // At DATASET_INGEST: nothing is read, the profile stage is skipped.
    let res = add_fault(
        app,
        json!({"audienceId": audience, "stage": "DATASET_INGEST", "message": "Unreadable."}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let run = t.start_run(&audience, start.clone()).await;
    local_ok(app, Method::POST, "/worker/drain").await;
    let failed = t.run(&audience, &run).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert_eq!(failed["details"][0]["message"], "Unreadable.");
    assert_eq!(failed["details"][1]["status"], "SKIPPED");

    // Requests: the next two GETs of the list answer 503 with Retry-After, in this sandbox only.
    let res = add_fault(
        app,
        json!({"method": "get", "path": "/data/core/ups/audiences", "status": 503, "count": 2}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let dev = app.as_tenant(ORG, "dev");
    let res = dev.ups(Method::GET, "/audiences").send().await.unwrap();
    assert_eq!(res.status(), 200, "another sandbox is not affected");
    let res = dev
        .request(Method::GET, "/_local/faults")
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"faults": []}));
    for _ in 0..2 {
        let res = app.list("").await;
        assert_eq!(res.headers()["retry-after"], "2");
        let message = assert_error(res, 503, "UPAPI-113503-503").await;
        assert!(message.contains("Injected fault"), "{message}");
    }
    assert_eq!(app.list("").await.status(), 200);
    // Other methods and paths are not matched.
    let res = add_fault(
        app,
        json!({"method": "POST", "path": "/data/core/ups/audiences", "status": 429}),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.list("").await.status(), 200);
    let res = app.create_audience(&platform_audience()).await;
    assert!(res.headers().contains_key("retry-after"));
    assert_error(res, 429, "UPAPI-113429-429").await;

    // Counts are taken atomically: of ten concurrent requests, exactly `count` fail.
    local(app, Method::DELETE, "/faults").await;
    let res = add_fault(
        app,
        json!({"method": "GET", "path": "/data/core/ups/audiences", "status": 500, "count": 4}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let answers = futures_util::future::join_all((0..10).map(|_| app.list(""))).await;
    let failed = answers.iter().filter(|r| r.status() == 500).count();
    assert_eq!(failed, 4);
    assert_eq!(answers.iter().filter(|r| r.status() == 200).count(), 6);

    // Refusals name the field; the sandbox holds at most CONTROL_MAX_FAULTS live faults.
    for (body, field) in [
        (
            json!({"method": "GET", "path": "/x", "status": 418}),
            "'status'",
        ),
        (
            json!({"method": "TRACE", "path": "/x", "status": 500}),
            "'method'",
        ),
        (
            json!({"method": "GET", "path": "/_local/clock", "status": 500}),
            "'path'",
        ),
        (
            json!({"method": "GET", "path": "x", "status": 500}),
            "'path'",
        ),
        (
            json!({"method": "GET", "path": "/x", "status": 500, "count": 0}),
            "'count'",
        ),
        (
            json!({"audienceId": audience, "stage": "ANY", "message": "m"}),
            "'stage'",
        ),
        (
            json!({"audienceId": audience, "stage": "DATASET_INGEST", "message": ""}),
            "'message'",
        ),
        (
            json!({"audienceId": uuid::Uuid::new_v4(), "stage": "DATASET_INGEST", "message": "m"}),
            "'audienceId'",
        ),
        (json!({"audienceId": audience, "method": "GET"}), "either"),
        (json!({"unknown": 1}), "unknown"),
    ] {
        let message = assert_error(add_fault(app, body).await, 400, "UPLIB-101206-500").await;
        assert!(message.contains(field), "{field}: {message}");
    }
    local(app, Method::DELETE, "/faults").await;
    for _ in 0..3 {
        let res = add_fault(app, json!({"method": "GET", "path": "/x", "status": 500})).await;
        assert_eq!(res.status(), 200);
    }
    let res = add_fault(app, json!({"method": "GET", "path": "/x", "status": 500})).await;
    let message = assert_error(res, 400, "UPAPI-113414-400").await;
    assert!(message.contains("CONTROL_MAX_FAULTS"), "{message}");
    assert_eq!(local(app, Method::DELETE, "/faults").await.status(), 204);
    assert_eq!(
        local_ok(app, Method::GET, "/faults").await,
        json!({"faults": []})
    );
}

#[tokio::test]
async fn an_exported_sandbox_loads_back_the_same_after_a_reset() {
    let t = Ais::spawn().await;
    let app = &t.app;
    parent_with_a_child(app).await;
    t.write("DLZ", "suite/people.csv", TUTORIAL_CSV);
    let binary = t.zone.join("DLZ/suite/blob.bin");
    std::fs::write(&binary, [0xff_u8, 0x00, 0xfe]).unwrap();
    t.accept(named("suite/people.csv", "people")).await;
    local_ok(app, Method::POST, "/worker/drain").await;

    let exported = local_ok(app, Method::GET, "/sandbox/export").await;
    assert_eq!(exported["orgId"], ORG);
    assert_eq!(exported["sandboxName"], "prod");
    assert_eq!(exported["audiences"].as_array().unwrap().len(), 3);
    assert_eq!(exported["externalAudiences"].as_array().unwrap().len(), 1);
    assert_eq!(
        exported["zoneFiles"],
        json!([
            {"path": "DLZ/suite/blob.bin", "contentBase64": "/wD+"},
            {"path": "DLZ/suite/people.csv", "content": TUTORIAL_CSV}
        ])
    );

    // The document, saved in FIXTURES_DIR, is what a restart loads.
    let dir = t.landing.join("fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("prod.json"), exported.to_string()).unwrap();
    let removed = local_ok(app, Method::POST, "/sandbox/reset").await;
    assert_eq!(removed["audiences"], 3);
    assert_eq!(audience_total(app, ORG, "prod").await, 0);
    let mut settings = audience_server::config::Settings::for_database(&app.database_url);
    settings.fixtures_dir = Some(dir.clone());
    settings.landing_dir = Some(t.landing.clone());
    settings.clock = t.clock.clone();
    // Two replicas starting at once, then a restart: one copy.
    let (a, b) = tokio::join!(
        audience_server::startup::load_fixtures(&settings, &app.pool),
        audience_server::startup::load_fixtures(&settings, &app.pool)
    );
    a.unwrap();
    b.unwrap();
    audience_server::startup::load_fixtures(&settings, &app.pool)
        .await
        .unwrap();
    assert_eq!(
        local_ok(app, Method::GET, "/sandbox/export").await,
        exported
    );
    assert_eq!(audience_total(app, ORG, "prod").await, 3);

    // The loaded external audience is ready: a run ingests the loaded file.
    let audience = exported["externalAudiences"][0]["id"].as_str().unwrap();
    let run = t
        .start_run(audience, json!({"dataFilterStartTime": 0}))
        .await;
    local_ok(app, Method::POST, "/worker/drain").await;
    assert_eq!(t.run(audience, &run).await["status"], "SUCCESS");

    // A document that does not read stops the start, naming the file.
    std::fs::write(dir.join("zz-broken.json"), r#"{"orgId": "x"}"#).unwrap();
    let error = audience_server::startup::load_fixtures(&settings, &app.pool)
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("zz-broken.json"), "{error:#}");
}

#[tokio::test]
async fn a_request_fault_added_on_one_replica_is_used_on_the_next_request_to_another() {
    let a = TestApp::spawn().await;
    let b = TestApp::spawn_on(a.database_url.clone(), |_| {}).await;
    assert_eq!(b.list("").await.status(), 200);
    let res = add_fault(
        &a,
        json!({"method": "GET", "path": "/data/core/ups/audiences", "status": 503}),
    )
    .await;
    assert_eq!(res.status(), 200);
    // The add answered once every process knows of the fault: the next request, on the other
    // replica, takes it; the one after finds it used up.
    assert_error(b.list("").await, 503, "UPAPI-113503-503").await;
    assert_eq!(a.list("").await.status(), 200);
}
