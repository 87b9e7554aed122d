//! AIS over HTTP: meta-only create, external audiences, operations, runs that really read CSV
//! files from a landing zone, TTL, guardrails. The worker is disabled in the server and driven
//! step by step from the tests (the harness is `helpers::ais`).

use std::{io::Write, path::Path, time::Duration as StdDuration, time::SystemTime};

use audience_server::worker::Worker;
use chrono::Duration;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{
    ais::{named, run_in_child, tutorial_body, vm_hwm_kb, Ais, META_ACCEPT, TUTORIAL_CSV},
    *,
};

#[tokio::test]
async fn the_tutorial_works_as_written() {
    let t = Ais::spawn().await;
    let w = t.worker("w1").await;
    t.write("DLZ", "activation/sample-source/example.csv", TUTORIAL_CSV);

    // Create: 202 with the operation id and the normalised request.
    let accepted = t
        .json(
            Method::POST,
            "/external-audience/",
            Some(tutorial_body("activation/sample-source/example.csv")),
            202,
        )
        .await;
    let op_id = accepted["operationId"].as_str().unwrap().to_owned();
    assert_eq!(accepted["operationDetails"]["ttlInDays"], 40);
    assert_eq!(
        accepted["operationDetails"]["namespace"],
        "CustomerAudienceUpload"
    );
    assert_eq!(
        accepted["operationDetails"]["fields"][1]["labels"],
        json!(["core/C2", "custom/deep"])
    );

    // Retrieve the audience id: processing until the worker has run.
    let op_path = format!("/external-audience/operations/{op_id}");
    let op = t.json(Method::GET, &op_path, None, 200).await;
    assert_eq!(op["status"], "PROCESSING");
    assert!(op.get("audienceId").is_none());
    assert!(w.run_once().await.unwrap());
    let op = t.json(Method::GET, &op_path, None, 200).await;
    assert_eq!(op["status"], "SUCCESS", "{op}");
    assert_eq!(op["audienceName"], "Sample external audience");
    assert!(
        op["createdBy"].is_string() && op["createdAt"].is_i64(),
        "{op}"
    );
    let audience = op["audienceId"].as_str().unwrap().to_owned();

    // The UPS audience exists under the same id.
    let ups: Value = t.app.get_audience(&audience).await.json().await.unwrap();
    assert_eq!(ups["id"], audience.as_str());
    assert_eq!(ups["type"], "ExternalSegment");
    assert_eq!(ups["originName"], "CUSTOM_UPLOAD");
    assert_eq!(ups["lifecycleState"], "published");
    assert_eq!(ups["namespace"], "CustomerAudienceUpload");
    assert_eq!(ups["ttlInDays"], 40);
    assert_eq!(ups["metrics"]["data"]["totalProfiles"], 0);

    // Start ingestion, as the tutorial sends it.
    // curl -d without a Content-Type header sends application/x-www-form-urlencoded.
    let res = t
        .ais(Method::POST, &format!("/external-audience/{audience}/runs"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("{\n    \"dataFilterStartTime\": 764245635\n }")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let run: Value = res.json().await.unwrap();
    assert_eq!(run["status"], "PROCESSING");
    assert_eq!(run["dataFilterStartTime"], 764245635);
    assert_eq!(run["details"][0]["stage"], "DATASET_INGEST");
    assert_eq!(run["details"][1]["stage"], "PROFILE_STORE_INGEST");
    assert!(run["details"][0]["flowRunId"].is_string());

    // Monitor: one worker step per stage.
    assert!(w.run_once().await.unwrap());
    let mid = t.run(&audience, &run).await;
    assert_eq!(mid["status"], "PROCESSING");
    let ds = &mid["details"][0];
    assert_eq!(ds["status"], "SUCCESS", "{mid}");
    assert_eq!(ds["recordsRead"], 6);
    assert_eq!(ds["recordsSucceeded"], 4);
    assert_eq!(ds["recordsFailed"], 2);
    assert_eq!(
        ds["files"],
        json!(["DLZ/activation/sample-source/example.csv"])
    );
    assert_eq!(
        ds["errors"][0],
        json!({"file": "DLZ/activation/sample-source/example.csv", "row": 4, "column": "delete", "reason": "'not-a-number' is not a number"})
    );
    assert_eq!(ds["errors"][1]["row"], 5);
    assert_eq!(ds["errors"][1]["column"], "ppid");
    assert_eq!(mid["details"][1]["status"], "PENDING");

    assert!(w.run_once().await.unwrap());
    let done = t.run(&audience, &run).await;
    assert_eq!(done["status"], "SUCCESS", "{done}");
    let ps = &done["details"][1];
    assert_eq!(ps["status"], "SUCCESS");
    assert_eq!(ps["recordsReceived"], 4);
    assert_eq!(ps["profilesStored"], 3);
    assert_eq!(ps["duplicatesMerged"], 1);
    assert!(ps["durationMs"].is_u64());
    assert_eq!(t.members(&audience).await, 3);
    assert!(!w.run_once().await.unwrap(), "nothing left to do");

    // The profile count is readable through UPS and on the external audience.
    assert_eq!(t.ups_metrics(&audience).await["data"]["totalProfiles"], 3);
    let ext = t.external(&audience).await;
    assert_eq!(ext["profileCount"], 3);
    assert_eq!(ext["lastSuccessfulRunId"], run["runId"]);

    // The /core/ais alias and the run list.
    let res = t
        .app
        .request(
            Method::GET,
            &format!("/core/ais/external-audience/{audience}/runs/"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let list: Value = res.json().await.unwrap();
    assert_eq!(
        list["_page"],
        json!({"limit": 20, "count": 1, "totalCount": 1})
    );
    assert_eq!(list["runs"][0]["runId"], run["runId"]);
}

#[tokio::test]
async fn meta_only_create() {
    let t = Ais::spawn().await;
    let body = json!({"name": "Sample audience name", "description": "A sample description for the audience.", "namespace": "agora", "originName": "Agora_Collaboration"});
    let post = |path: &str, accept: Option<&str>, body: Value| {
        let mut req = t.app.request(Method::POST, path).json(&body);
        if let Some(a) = accept {
            req = req.header("Accept", a);
        }
        req.send()
    };
    let res = post(
        "/core/ais/audiences?createAudienceMetaOnly=true",
        None,
        body.clone(),
    )
    .await
    .unwrap();
    let msg = assert_error(res, 406, "100906-406").await;
    assert!(msg.contains("Accept"), "{msg}");
    let res = post("/core/ais/audiences", Some(META_ACCEPT), body.clone())
        .await
        .unwrap();
    let msg = assert_error(res, 400, "100910-400").await;
    assert!(msg.contains("createAudienceMetaOnly"), "{msg}");
    let res = post(
        "/core/ais/audiences?createAudienceMetaOnly=true",
        Some(META_ACCEPT),
        json!({"name": "x", "originName": "o"}),
    )
    .await
    .unwrap();
    let msg = assert_error(res, 400, "100910-400").await;
    assert!(msg.contains("'namespace'"), "{msg}");

    for (bad, needle) in [
        (
            json!({"namespace": "n", "originName": "o"}),
            "'name' is required",
        ),
        (
            json!({"name": "n", "namespace": "n"}),
            "'originName' is required",
        ),
        (
            json!({"name": 5, "namespace": "n", "originName": "o"}),
            "'name'",
        ),
        (
            json!({"name": "n", "namespace": "", "originName": "o"}),
            "'namespace'",
        ),
        (
            json!({"name": "n", "namespace": "n", "originName": "o", "audienceId": 7}),
            "'audienceId'",
        ),
        (json!("text"), "JSON object"),
    ] {
        let res = post(
            "/core/ais/audiences?createAudienceMetaOnly=true",
            Some(META_ACCEPT),
            bad,
        )
        .await
        .unwrap();
        let msg = assert_error(res, 400, "100910-400").await;
        assert!(msg.contains(needle), "{needle}: {msg}");
    }
    let res = post(
        "/core/ais/audiences?createAudienceMetaOnly=true",
        Some(META_ACCEPT),
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["name"], "Sample audience name");
    let id = created["id"].as_str().unwrap();
    let ups: Value = t.app.get_audience(id).await.json().await.unwrap();
    assert_eq!(ups["type"], "ExternalSegment");
    assert_eq!(ups["lifecycleState"], "published");
    assert_eq!(ups["namespace"], "agora");
    assert_eq!(ups["originName"], "Agora_Collaboration");
    assert_eq!(ups["audienceId"], created["audienceId"]);

    let mut again = body.clone();
    again["audienceId"] = created["audienceId"].clone();
    let res = post(
        "/data/core/ais/audiences?createAudienceMetaOnly=true",
        Some(META_ACCEPT),
        again,
    )
    .await
    .unwrap();
    assert_error(res, 409, "100950-409").await;
}

fn drop_field(body: &mut Value, key: &str) {
    body.as_object_mut().unwrap().remove(key);
}

#[tokio::test]
async fn every_create_rule_is_a_400_naming_the_field() {
    let t = Ais::spawn().await;
    type Edit = fn(&mut Value);
    let cases: Vec<(Edit, &str)> = vec![
        (|b| drop_field(b, "name"), "'name' is required"),
        (|b| b["name"] = json!(" "), "'name'"),
        (|b| b["fields"] = json!([]), "'fields'"),
        (|b| drop_field(b, "fields"), "'fields' is required"),
        (|b| b["fields"] = json!({"name": "ppid"}), "'fields'"),
        (
            |b| b["fields"][2]["type"] = json!("float"),
            "'fields[2].type'",
        ),
        (
            |b| b["fields"][1]["identityNs"] = json!("crm"),
            "exactly one",
        ),
        (
            |b| b["fields"][1]["name"] = json!("ppid"),
            "'fields[1].name'",
        ),
        (|b| drop_field(b, "sourceSpec"), "'sourceSpec'"),
        (
            |b| b["sourceSpec"]["params"]["path"] = json!("Example CSV File.csv"),
            "'sourceSpec.params.path'",
        ),
        (
            |b| b["sourceSpec"]["params"]["path"] = json!("../../etc/passwd"),
            "'sourceSpec.params.path'",
        ),
        (
            |b| b["sourceSpec"]["params"] = json!({"type": "file"}),
            "'sourceSpec.params.path' is required",
        ),
        (
            |b| b["sourceSpec"]["params"]["type"] = json!("bucket"),
            "'sourceSpec.params.type'",
        ),
        (
            |b| b["sourceSpec"]["params"]["sourceType"] = json!("Database"),
            "'sourceSpec.params.sourceType'",
        ),
        (
            |b| b["sourceSpec"]["params"]["cloudType"] = json!("Dropbox"),
            "'sourceSpec.params.cloudType'",
        ),
        (
            |b| b["sourceSpec"] = json!({"path": "a.csv", "cloudType": "GCS"}),
            "'sourceSpec.baseConnectionId'",
        ),
        (|b| b["ttlInDays"] = json!(0), "'ttlInDays'"),
        (|b| b["ttlInDays"] = json!("91"), "'ttlInDays'"),
        (|b| b["audienceType"] = json!("accounts"), "'audienceType'"),
        (|b| drop_field(b, "originName"), "'originName' is required"),
        (|b| b["originName"] = json!("AAM"), "'originName'"),
        (|b| b["labels"] = json!([1]), "'labels[0]'"),
        (|b| b["tags"] = json!("t"), "'tags'"),
        (|b| b["expressActivation"] = json!(1), "'expressActivation'"),
        (|b| b["customAudienceId"] = json!(""), "'customAudienceId'"),
        (|b| *b = json!([1, 2]), "JSON object"),
    ];
    for (edit, needle) in cases {
        let mut body = tutorial_body("a/b.csv");
        edit(&mut body);
        let res = t.send(Method::POST, "/external-audience", Some(body)).await;
        let msg = assert_error(res, 400, "100910-400").await;
        assert!(msg.contains(needle), "{needle} not in: {msg}");
    }
    let mut flat = tutorial_body("a/b.csv");
    drop_field(&mut flat["sourceSpec"], "params");
    flat["sourceSpec"]["path"] = json!(7);
    let res = t.send(Method::POST, "/external-audience", Some(flat)).await;
    let msg = assert_error(res, 400, "100910-400").await;
    assert!(msg.starts_with("Field 'sourceSpec.path': "), "{msg}");
    let res = t
        .ais(Method::POST, "/external-audience")
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "100910-400").await;

    // Nothing was written by any of them: the name they all carried is free. Duplicates are
    // refused at once (same name, or same customAudienceId), before the worker ran.
    let mut first = tutorial_body("a/b.csv");
    first["customAudienceId"] = json!("crm-42");
    t.accept(first).await;
    let res = t
        .send(
            Method::POST,
            "/external-audience",
            Some(tutorial_body("a/b.csv")),
        )
        .await;
    let msg = assert_error(res, 409, "100950-409").await;
    assert!(msg.contains("Sample external audience"), "{msg}");
    let mut other = named("a/b.csv", "another");
    other["customAudienceId"] = json!("crm-42");
    let res = t
        .send(Method::POST, "/external-audience", Some(other))
        .await;
    let msg = assert_error(res, 409, "100950-409").await;
    assert!(msg.contains("crm-42"), "{msg}");
}

#[tokio::test]
async fn unknown_ids_are_404_and_other_tenants_see_nothing() {
    let t = Ais::spawn().await;
    let w = t.worker("w").await;
    let audience = t.ready_audience(&w, tutorial_body("x.csv")).await;
    for path in [
        "/external-audience/operations/00000000-0000-0000-0000-000000000000".to_owned(),
        "/external-audience/operations/not-an-id".to_owned(),
        "/external-audience/00000000-0000-0000-0000-000000000000/runs".to_owned(),
        format!("/external-audience/{audience}/runs/00000000-0000-0000-0000-000000000000"),
        format!("/external-audience/{audience}/runs/nope"),
    ] {
        let res = t.send(Method::GET, &path, None).await;
        assert_error(res, 404, "100940-404").await;
    }
    let res = t
        .app
        .client
        .get(format!(
            "{}/data/core/ais/external-audience/{audience}",
            t.app.address
        ))
        .header("Authorization", "Bearer x")
        .header("x-api-key", "k")
        .header("x-gw-ims-org-id", ORG)
        .header("x-sandbox-name", "dev")
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "100940-404").await;
    // A known path with a method it does not serve.
    let res = t
        .send(
            Method::PUT,
            &format!("/external-audience/{audience}"),
            Some(json!({})),
        )
        .await;
    assert_error(res, 405, "UPAPI-113405-405").await;
    // The header gate applies to AIS too.
    let res = t
        .app
        .client
        .get(format!(
            "{}/data/core/ais/external-audience/{audience}",
            t.app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn patch_merges_fields_and_refuses_immutables() {
    let t = Ais::spawn().await;
    let w = t.worker("w").await;
    let audience = t.ready_audience(&w, tutorial_body("x.csv")).await;
    let path = format!("/external-audience/{audience}");
    let out = t
        .json(
            Method::PATCH,
            &path,
            Some(json!({"description": "new", "labels": ["core/C9"], "ttlInDays": 10,
                        "fields": [{"name": "delete", "type": "long"}, {"name": "extra", "type": "date"}]})),
            200,
        )
        .await;
    assert_eq!(out["description"], "new");
    assert_eq!(out["ttlInDays"], 10);
    assert_eq!(out["fields"].as_array().unwrap().len(), 5);
    assert_eq!(out["fields"][2], json!({"name": "delete", "type": "long"}));
    let ups: Value = t.app.get_audience(&audience).await.json().await.unwrap();
    assert_eq!(ups["description"], "new");
    assert_eq!(ups["labels"], json!(["core/C9"]));
    assert_eq!(ups["ttlInDays"], 10);

    for (body, needle) in [
        (json!({"name": "renamed"}), "'name' is immutable"),
        (
            json!({"expressActivation": true}),
            "'expressActivation' is immutable",
        ),
        (
            json!({"sourceSpec": {"params": {"path": "y.csv"}}}),
            "'sourceSpec'",
        ),
        (json!({"ttlInDays": 100}), "'ttlInDays'"),
        (
            json!({"fields": [{"name": "extra", "type": "string", "identityNs": "crm"}]}),
            "exactly one",
        ),
        (json!([{"op": "add"}]), "JSON object"),
        (json!({}), "at least one"),
    ] {
        let res = t.send(Method::PATCH, &path, Some(body)).await;
        let msg = assert_error(res, 400, "100910-400").await;
        assert!(msg.contains(needle), "{needle}: {msg}");
    }
    let unchanged = t.json(Method::GET, &path, None, 200).await;
    assert_eq!(unchanged["ttlInDays"], 10);
    assert_eq!(unchanged["name"], "Sample external audience");
}

#[tokio::test]
async fn run_requests_and_list_parameters_are_validated() {
    let t = Ais::spawn().await;
    let w = t.worker("w").await;
    let audience = t.ready_audience(&w, tutorial_body("x.csv")).await;
    let runs = format!("/external-audience/{audience}/runs");
    for (body, needle) in [
        (json!({}), "'dataFilterStartTime' is required"),
        (
            json!({"dataFilterStartTime": "yesterday"}),
            "'dataFilterStartTime'",
        ),
        (
            json!({"dataFilterStartTime": 100, "dataFilterEndTime": 50}),
            "'dataFilterEndTime'",
        ),
        (json!({"dataFilterStartTime": -1}), "'dataFilterStartTime'"),
    ] {
        let res = t.send(Method::POST, &runs, Some(body)).await;
        let msg = assert_error(res, 400, "100910-400").await;
        assert!(msg.contains(needle), "{needle}: {msg}");
    }
    for (query, needle) in [
        ("limit=0", "'limit'"),
        ("limit=41", "'limit'"),
        ("limit=x", "'limit'"),
        ("sortBy=updatedAt", "'sortBy'"),
    ] {
        let res = t.send(Method::GET, &format!("{runs}?{query}"), None).await;
        let msg = assert_error(res, 400, "100910-400").await;
        assert!(msg.contains(needle), "{needle}: {msg}");
    }
}

async fn failed_run(t: &Ais, w: &Worker, body: Value, run_body: Value) -> Value {
    let audience = t.ready_audience(w, body).await;
    let run = t.start_run(&audience, run_body).await;
    w.drain().await.unwrap();
    let out = t.run(&audience, &run).await;
    assert_eq!(out["status"], "FAILED", "{out}");
    assert_eq!(out["details"][0]["status"], "FAILED");
    assert_eq!(out["details"][1]["status"], "SKIPPED");
    assert_eq!(t.members(&audience).await, 0);
    out
}

#[tokio::test]
async fn failed_runs_say_why() {
    let t = Ais::spawn().await;
    let w = t.worker("w").await;
    let start = json!({"dataFilterStartTime": 0});

    let out = failed_run(&t, &w, named("missing/file.csv", "a1"), start.clone()).await;
    let msg = out["details"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains("DLZ/missing/file.csv") && msg.contains("does not exist"),
        "{msg}"
    );
    assert!(out["message"].as_str().unwrap().contains("DATASET_INGEST"));

    t.write("DLZ", "bad/header.csv", "email,list_id,delete\nx,y,1\n");
    let out = failed_run(&t, &w, named("bad/header.csv", "a2"), start.clone()).await;
    let msg = out["details"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains("ppid") && msg.contains("process_consent"),
        "{msg}"
    );

    t.write(
        "DLZ",
        "bad/rows.csv",
        "ppid,list_id,delete,process_consent\n,l,1,y\nx,l,NaN?,y\n",
    );
    let out = failed_run(&t, &w, named("bad/rows.csv", "a3"), start.clone()).await;
    let ds = &out["details"][0];
    assert!(
        ds["message"].as_str().unwrap().contains("No valid row"),
        "{ds}"
    );
    assert_eq!(ds["recordsRead"], 2);
    assert_eq!(ds["recordsFailed"], 2);
    assert_eq!(ds["errors"].as_array().unwrap().len(), 2);

    t.write("DLZ", "empty.csv", "ppid,list_id,delete,process_consent\n");
    let out = failed_run(&t, &w, named("empty.csv", "a4"), start.clone()).await;
    assert!(out["details"][0]["message"]
        .as_str()
        .unwrap()
        .contains("no data row"));

    // A file outside the filter window is not read.
    t.write("DLZ", "old.csv", TUTORIAL_CSV);
    let out = failed_run(&t, &w, named("old.csv", "a5"), json!({"dataFilterStartTime": 4_000_000_000u64 - 10, "dataFilterEndTime": 4_000_000_000u64})).await;
    assert!(out["details"][0]["message"]
        .as_str()
        .unwrap()
        .contains("No file"));

    // A file source whose path is a folder.
    let out = failed_run(&t, &w, named("bad", "a7"), start.clone()).await;
    assert!(out["details"][0]["message"]
        .as_str()
        .unwrap()
        .contains("not a file"));

    // A folder source whose path is a file.
    let mut folder = named("old.csv", "a6");
    folder["sourceSpec"]["params"]["type"] = json!("folder");
    let out = failed_run(&t, &w, folder, start).await;
    assert!(out["details"][0]["message"]
        .as_str()
        .unwrap()
        .contains("not a folder"));
}

fn set_mtime(path: &Path, epoch_s: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + StdDuration::from_secs(epoch_s))
        .unwrap();
}

#[tokio::test]
async fn folder_sources_read_every_csv_in_the_window_of_their_cloud_type() {
    let t = Ais::spawn().await;
    let w = t.worker("w").await;
    let header = "ppid,list_id,delete,process_consent\n";
    t.write("S3", "drop/one.csv", &format!("{header}a,l,1,y\nb,l,1,y\n"));
    t.write("S3", "drop/two.csv", &format!("{header}b,l,1,y\nc,l,1,y\n"));
    let old = t.write("S3", "drop/old.csv", &format!("{header}z,l,1,y\n"));
    set_mtime(&old, 1_000_000);
    t.write("S3", "drop/notes.txt", "not a csv");
    t.write(
        "DLZ",
        "drop/one.csv",
        &format!("{header}wrong-cloud,l,1,y\n"),
    );
    let mut body = named("drop", "folder audience");
    body["sourceSpec"]["params"]["type"] = json!("folder");
    body["sourceSpec"]["params"]["cloudType"] = json!("S3");
    let audience = t.ready_audience(&w, body).await;
    let run = t
        .start_run(&audience, json!({"dataFilterStartTime": 2_000_000}))
        .await;
    w.drain().await.unwrap();
    let out = t.run(&audience, &run).await;
    assert_eq!(out["status"], "SUCCESS", "{out}");
    assert_eq!(
        out["details"][0]["files"],
        json!(["S3/drop/one.csv", "S3/drop/two.csv"])
    );
    assert_eq!(out["details"][0]["recordsSucceeded"], 4);
    assert_eq!(out["details"][1]["profilesStored"], 3);
    assert_eq!(t.members(&audience).await, 3);
}

#[tokio::test]
async fn one_run_at_a_time_and_the_guardrails() {
    let t = Ais::spawn_with(|s| {
        s.runs_per_audience = 2;
        s.runs_per_sandbox_per_day = 3;
    })
    .await;
    // The sandbox's runs are counted by UTC day: start mid-day, far from its end.
    to_next_midday(&t.clock);
    let w = t.worker("w").await;
    t.write("DLZ", "x.csv", TUTORIAL_CSV);
    let a = t.ready_audience(&w, named("x.csv", "a")).await;
    let b = t.ready_audience(&w, named("x.csv", "b")).await;
    let start = json!({"dataFilterStartTime": 0});

    t.start_run(&a, start.clone()).await;
    let res = t
        .send(
            Method::POST,
            &format!("/external-audience/{a}/runs"),
            Some(start.clone()),
        )
        .await;
    let msg = assert_error(res, 422, "100960-422").await;
    assert!(msg.contains("PROCESSING"), "{msg}");
    w.drain().await.unwrap();
    // A second later, so that the runs' creation times tell them apart.
    t.clock.advance(Duration::seconds(1));
    t.start_run(&a, start.clone()).await;
    w.drain().await.unwrap();
    // Per audience: 2.
    let res = t
        .send(
            Method::POST,
            &format!("/external-audience/{a}/runs"),
            Some(start.clone()),
        )
        .await;
    let msg = assert_error(res, 422, "100960-422").await;
    assert!(msg.contains("limit of 2 runs"), "{msg}");
    // Per sandbox per UTC day: 3.
    t.start_run(&b, start.clone()).await;
    w.drain().await.unwrap();
    let res = t
        .send(
            Method::POST,
            &format!("/external-audience/{b}/runs"),
            Some(start.clone()),
        )
        .await;
    let msg = assert_error(res, 422, "100960-422").await;
    assert!(msg.contains("per UTC day"), "{msg}");
    // The next day the sandbox may run again.
    t.clock.advance(Duration::days(1));
    let run = t.start_run(&b, start.clone()).await;
    assert_eq!(run["status"], "PROCESSING");

    let list = t
        .json(
            Method::GET,
            &format!("/external-audience/{a}/runs?limit=1&sortBy=createdAt"),
            None,
            200,
        )
        .await;
    assert_eq!(
        list["_page"],
        json!({"limit": 1, "count": 1, "totalCount": 2})
    );
    assert_eq!(list["runs"][0]["name"], "a run 1");
    let list = t
        .json(
            Method::GET,
            &format!("/external-audience/{a}/runs?sortBy=-name"),
            None,
            200,
        )
        .await;
    assert_eq!(list["runs"][0]["name"], "a run 2");
}

#[tokio::test]
async fn delete_removes_the_ups_audience_and_the_runs() {
    let t = Ais::spawn().await;
    let w = t.worker("w").await;
    let (audience, run) = t.tutorial_run(&w).await;
    w.drain().await.unwrap();
    assert_eq!(t.members(&audience).await, 3);
    let res = t
        .send(
            Method::DELETE,
            &format!("/external-audience/{audience}/"),
            None,
        )
        .await;
    assert_eq!(res.status(), 204);
    assert_eq!(t.app.get_audience(&audience).await.status(), 404);
    let run_id = run["runId"].as_str().unwrap();
    let res = t
        .send(
            Method::GET,
            &format!("/external-audience/{audience}/runs/{run_id}"),
            None,
        )
        .await;
    assert_error(res, 404, "100940-404").await;
    let res = t
        .send(
            Method::DELETE,
            &format!("/external-audience/{audience}"),
            None,
        )
        .await;
    assert_error(res, 404, "100940-404").await;
    assert_eq!(t.members(&audience).await, 0);
    // Its member rows are left to the maintenance sweep, which removes every one.
    assert_eq!(t.member_rows().await, 3);
    assert_eq!(w.maintain().await.unwrap().rows_swept, 3);
    assert_eq!(t.member_rows().await, 0);
    assert_eq!(t.staged_rows().await, 0);
    // The name is free again.
    t.json(
        Method::POST,
        "/external-audience",
        Some(tutorial_body("x.csv")),
        202,
    )
    .await;
}

/// Both families name one audience: deleting it through UPS removes the external audience too.
#[tokio::test]
async fn a_ups_delete_removes_the_external_audience() {
    let t = Ais::spawn().await;
    let w = t.worker("w").await;
    let (audience, run) = t.tutorial_run(&w).await;
    w.drain().await.unwrap();
    assert_eq!(t.members(&audience).await, 3);
    assert_eq!(t.app.delete_audience(&audience).await.status(), 204);
    let run_id = run["runId"].as_str().unwrap();
    for path in [
        format!("/external-audience/{audience}"),
        format!("/external-audience/{audience}/runs/{run_id}"),
    ] {
        let res = t.send(Method::GET, &path, None).await;
        assert_error(res, 404, "100940-404").await;
    }
    assert_eq!(t.members(&audience).await, 0);
    assert_eq!(w.maintain().await.unwrap().rows_swept, 3);
    assert_eq!(t.member_rows().await, 0);
    assert_eq!(t.staged_rows().await, 0);
    // The name is free again.
    t.json(
        Method::POST,
        "/external-audience",
        Some(tutorial_body("x.csv")),
        202,
    )
    .await;
}

#[tokio::test]
async fn a_run_of_a_deleted_audience_ends_quietly() {
    let t = Ais::spawn().await;
    let w = t.worker("w").await;
    t.write("DLZ", "x.csv", TUTORIAL_CSV);
    let audience = t.ready_audience(&w, tutorial_body("x.csv")).await;
    t.start_run(&audience, json!({"dataFilterStartTime": 0}))
        .await;
    assert!(w.run_once().await.unwrap());
    let res = t
        .send(
            Method::DELETE,
            &format!("/external-audience/{audience}"),
            None,
        )
        .await;
    assert_eq!(res.status(), 204);
    assert!(w.run_once().await.unwrap());
    assert!(!w.run_once().await.unwrap());
    assert_eq!(t.open_jobs().await, 0);
}

#[tokio::test]
async fn a_failed_creation_reports_why_and_frees_the_name() {
    let t = Ais::spawn().await;
    let w = t.worker("w").await;
    // A UPS audience already holds (namespace, audienceId) the external audience would take.
    t.app
        .created(json!({"name": "taken", "type": "ExternalSegment", "namespace": "CustomerAudienceUpload", "audienceId": "crm-1"}))
        .await;
    let mut body = tutorial_body("x.csv");
    body["customAudienceId"] = json!("crm-1");
    let accepted = t
        .json(Method::POST, "/external-audience", Some(body.clone()), 202)
        .await;
    w.drain().await.unwrap();
    let op = t
        .json(
            Method::GET,
            &format!(
                "/external-audience/operations/{}",
                accepted["operationId"].as_str().unwrap()
            ),
            None,
            200,
        )
        .await;
    assert_eq!(op["status"], "FAILED");
    assert!(op["reason"].as_str().unwrap().contains("crm-1"), "{op}");
    assert!(op.get("audienceId").is_none());
    body["customAudienceId"] = json!("crm-2");
    t.json(Method::POST, "/external-audience", Some(body), 202)
        .await;
}

/// Every time an audience carries comes from the server's clock (an adjustable one here, 30 days
/// ahead of the system's): UPS creates and edits, the UPS audience an external audience creates,
/// the AIS PATCH it follows, and the profile count a run writes.
#[tokio::test]
async fn audience_times_come_from_the_servers_clock() {
    let t = Ais::spawn().await;
    t.clock.advance(Duration::days(30));
    let w = t.worker("w").await;
    let near_clock = |ms: &Value| {
        let ms = ms.as_i64().unwrap();
        let now = t.clock.now().timestamp_millis();
        assert!(
            (now - 60_000..=now).contains(&ms),
            "{ms} is not the clock's {now}"
        );
    };
    let ups = t.app.created(json!({"name": "clocked"})).await;
    near_clock(&ups["creationTime"]);
    let id = ups["id"].as_str().unwrap();
    let res = t
        .app
        .patch_audience(
            id,
            &json!([{"op": "add", "path": "/description", "value": "d"}]),
        )
        .await;
    let patched: Value = res.json().await.unwrap();
    near_clock(&patched["updateTime"]);

    t.write("DLZ", "x.csv", TUTORIAL_CSV);
    let audience = t.ready_audience(&w, tutorial_body("x.csv")).await;
    let created: Value = t.app.get_audience(&audience).await.json().await.unwrap();
    near_clock(&created["creationTime"]);
    near_clock(&created["metrics"]["updateTime"]);
    t.clock.advance(Duration::days(1));
    t.json(
        Method::PATCH,
        &format!("/external-audience/{audience}"),
        Some(json!({"description": "new"})),
        200,
    )
    .await;
    let followed: Value = t.app.get_audience(&audience).await.json().await.unwrap();
    near_clock(&followed["updateTime"]);
    t.clock.advance(Duration::days(1));
    t.start_run(&audience, json!({"dataFilterStartTime": 0}))
        .await;
    w.drain().await.unwrap();
    let counted: Value = t.app.get_audience(&audience).await.json().await.unwrap();
    assert_eq!(counted["metrics"]["data"]["totalProfiles"], 3);
    near_clock(&counted["metrics"]["updateTime"]);
    near_clock(&counted["updateTime"]);
    assert_ne!(counted["_etag"], followed["_etag"]);
}

/// The states the AIS side stores are checked by the database as the code spells them, and a
/// stored document the code cannot read is a fault of the store (500), never a client's error.
#[tokio::test]
async fn stored_states_are_checked_and_decoded() {
    let t = Ais::spawn().await;
    let w = t.worker("w").await;
    let (audience, run) = t.tutorial_run(&w).await;
    let pool = &t.app.pool;
    let refused = |sql: &'static str| async move {
        let err = sqlx::query(sql).execute(pool).await.unwrap_err();
        storage_constraint(&err)
    };
    assert_eq!(
        refused("UPDATE ais_jobs SET step = 'profile' WHERE kind = 'create_audience'").await,
        "ais_jobs_step_check"
    );
    assert_eq!(
        refused("UPDATE ais_jobs SET step = 'unknown-step'").await,
        "ais_jobs_step_check"
    );
    assert_eq!(
        refused(
            "UPDATE ais_runs SET details = json_build_array(
                 json_build_object('stage', 'DATASET_INGEST', 'status', 'DONE'),
                 details -> 1)"
        )
        .await,
        "ais_runs_details_check"
    );
    assert_eq!(
        refused("UPDATE ais_runs SET details = '[]'").await,
        "ais_runs_details_check"
    );
    assert_eq!(
        refused("UPDATE external_audiences SET spec = '[1]'").await,
        "external_audiences_spec_check"
    );
    // Untouched by the refusals, the run goes on.
    w.drain().await.unwrap();
    assert_eq!(t.run(&audience, &run).await["status"], "SUCCESS");
    // A definition the code cannot read (an object, so the schema lets it pass).
    sqlx::query("UPDATE external_audiences SET spec = '{\"name\": 5}'")
        .execute(&t.app.pool)
        .await
        .unwrap();
    let res = t
        .send(Method::GET, &format!("/external-audience/{audience}"), None)
        .await;
    assert_error(res, 500, "UPAPI-113500-500").await;
}

fn storage_constraint(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.constraint().unwrap_or_default().to_owned(),
        other => panic!("not a constraint violation: {other}"),
    }
}

#[tokio::test]
async fn ttl_expiry_and_extension() {
    let t = Ais::spawn().await;
    // The landing zone keeps the file through the 80 days this test spans (its own expiry is
    // tested in landing.rs), so that extend-ttl can read it again.
    let w = t
        .worker_with("w", |c| {
            c.landing_ttl = StdDuration::from_secs(365 * 24 * 3600)
        })
        .await;
    t.write("DLZ", "x.csv", TUTORIAL_CSV);
    let audience = t.ready_audience(&w, tutorial_body("x.csv")).await;
    let extend = format!("/external-audience/extend-ttl/{audience}");
    let res = t.send(Method::POST, &extend, None).await;
    let msg = assert_error(res, 422, "100960-422").await;
    assert!(msg.contains("no successful run"), "{msg}");

    t.start_run(&audience, json!({"dataFilterStartTime": 0}))
        .await;
    w.drain().await.unwrap();
    assert_eq!(t.members(&audience).await, 3);
    let before = t.external(&audience).await;
    let expires = before["dataExpiresAt"].as_i64().unwrap();

    // 39 days later nothing has expired; extending restarts the 40 days.
    t.clock.advance(Duration::days(39));
    assert_eq!(w.maintain().await.unwrap().expired, 0);
    let out = t.json(Method::POST, &extend, None, 200).await;
    assert_eq!(
        out,
        json!({"audienceId": audience, "name": "Sample external audience"})
    );
    w.drain().await.unwrap();
    let after = t.external(&audience).await;
    assert!(after["dataExpiresAt"].as_i64().unwrap() >= expires + 39 * 86_400_000);
    assert_eq!(after["profileCount"], 3);
    let runs = t
        .json(
            Method::GET,
            &format!("/external-audience/{audience}/runs"),
            None,
            200,
        )
        .await;
    assert_eq!(runs["runs"][0]["type"], "TTL_EXTENSION");
    assert_eq!(runs["runs"][0]["status"], "SUCCESS");

    // The extension wrote a new member set; the first one is swept.
    assert_eq!(t.member_rows().await, 6);
    assert_eq!(w.maintain().await.unwrap().rows_swept, 3);
    assert_eq!(t.member_rows().await, 3);

    // Past the new expiry the members go and the count is 0, in AIS and in UPS.
    t.clock.advance(Duration::days(2));
    assert_eq!(
        w.maintain().await.unwrap().expired,
        0,
        "the first expiry date no longer applies"
    );
    assert_eq!(t.members(&audience).await, 3);
    t.clock.advance(Duration::days(39));
    let pass = w.maintain().await.unwrap();
    assert_eq!((pass.expired, pass.rows_swept), (1, 3));
    assert_eq!(t.members(&audience).await, 0);
    assert_eq!(t.member_rows().await, 0);
    let expired = t.external(&audience).await;
    assert_eq!(expired["profileCount"], 0);
    assert_eq!(expired["dataExpired"], true);
    let metrics = t.ups_metrics(&audience).await;
    assert_eq!(metrics["data"]["totalProfiles"], 0);
    assert_eq!(metrics["data"]["dataExpired"], true);
    assert_eq!(
        w.maintain().await.unwrap().expired,
        0,
        "expiry happens once"
    );
}

const LARGE_ROWS: usize = 400_000;

/// Runs in a process of its own (see `a_large_file_streams_in_bounded_memory`), so the peak
/// resident size it measures is its own.
#[tokio::test]
#[ignore = "run by a_large_file_streams_in_bounded_memory in a separate process"]
async fn large_file_child() {
    let t = Ais::spawn().await;
    let w = t.worker("w").await;
    let path = t.zone.join("DLZ").join("big.csv");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        writeln!(out, "ppid,list_id,delete,process_consent").unwrap();
        for i in 0..LARGE_ROWS {
            writeln!(
                out,
                "user{:08}@example.com,list-{},{}.5,yes",
                i % (LARGE_ROWS - 1000),
                i % 7,
                i % 100
            )
            .unwrap();
        }
    }
    let size = std::fs::metadata(&path).unwrap().len();
    let audience = t.ready_audience(&w, tutorial_body("big.csv")).await;
    let run = t
        .start_run(&audience, json!({"dataFilterStartTime": 0}))
        .await;
    let before = vm_hwm_kb();
    let working = tokio::spawn(async move { w.drain().await.unwrap() });
    // Progress is visible while the run processes.
    let mut seen = None;
    while !working.is_finished() {
        let now = t.run(&audience, &run).await;
        let read = now["details"][0]["recordsRead"].as_u64().unwrap_or(0);
        if now["status"] == "PROCESSING" && read > 0 && (read as usize) < LARGE_ROWS {
            seen = Some(read);
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    working.await.unwrap();
    let growth_kb = vm_hwm_kb().saturating_sub(before);
    let seen = seen.expect("counts were visible while the run was processing");
    println!("progress seen mid-run: {seen} rows read");
    let out = t.run(&audience, &run).await;
    assert_eq!(out["status"], "SUCCESS", "{out}");
    assert_eq!(out["details"][0]["recordsSucceeded"], LARGE_ROWS as u64);
    assert_eq!(
        out["details"][1]["profilesStored"],
        (LARGE_ROWS - 1000) as u64
    );
    println!("file {} kB, peak RSS growth {growth_kb} kB", size / 1024);
    assert!(
        growth_kb * 1024 < size / 2,
        "peak memory grew by {growth_kb} kB reading a {} kB file",
        size / 1024
    );
}

#[test]
fn a_large_file_streams_in_bounded_memory() {
    let stdout = run_in_child("ais::large_file_child", &[]);
    assert!(stdout.contains("peak RSS growth"), "{stdout}");
}
