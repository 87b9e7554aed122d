//! Deleting an external audience while one of its runs has staged rows, through either family.
//! What the design promises (docs/AIS.md, "Maintenance, retention and the sweep"): the delete
//! commits at once whatever the size of the data, and from that commit the audience has no
//! members and its runs do not exist; the bulk rows themselves (the member set, the staged rows)
//! are nobody's and go with the worker's maintenance sweep, the staged ones once the run's job,
//! which still holds them, has ended.

use audience_server::worker::Worker;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{
    ais::{tutorial_body, Ais, TUTORIAL_CSV},
    *,
};

/// Identities `TUTORIAL_CSV` stages: every valid row (a, b, a, d), repeats included.
const STAGED: i64 = 4;
/// Its distinct valid identities: the members of a finished run.
const MEMBERS: i64 = 3;

/// An external audience with the members of one finished run, and a second run stopped between
/// its steps: DATASET_INGEST has staged the file's identities, PROFILE_STORE_INGEST has not moved
/// them. Returns the audience and both runs.
async fn audience_with_staged_rows(t: &Ais, w: &Worker) -> (String, Value, Value) {
    t.write("DLZ", "x.csv", TUTORIAL_CSV);
    let audience = t.ready_audience(w, tutorial_body("x.csv")).await;
    let finished = t
        .start_run(&audience, json!({"dataFilterStartTime": 0}))
        .await;
    w.drain().await.unwrap();
    assert_eq!(t.run(&audience, &finished).await["status"], "SUCCESS");
    let staging = t
        .start_run(&audience, json!({"dataFilterStartTime": 0}))
        .await;
    // One step of the run's job: the dataset step.
    let job = w.claim().await.unwrap().expect("the run's job is due");
    w.execute(job).await.unwrap();
    let run = t.run(&audience, &staging).await;
    assert_eq!(run["status"], "PROCESSING", "{run}");
    assert_eq!(run["details"][0]["status"], "SUCCESS", "{run}");
    assert_eq!(t.staged_rows().await, STAGED);
    assert_eq!(t.members(&audience).await, MEMBERS);
    assert_eq!(t.member_rows().await, MEMBERS);
    (audience, finished, staging)
}

/// After the delete, while the rows are still staged: nothing of the audience can be reached,
/// and the bulk rows go with the sweep, the staged ones only once their job has ended.
async fn assert_deleted_with_staged_rows(t: &Ais, w: &Worker, audience: &str, runs: [&Value; 2]) {
    assert_error(t.app.get_audience(audience).await, 404, "UPAPI-113430-404").await;
    for path in [
        format!("/external-audience/{audience}"),
        format!("/external-audience/{audience}/runs"),
        format!(
            "/external-audience/{audience}/runs/{}",
            runs[0]["runId"].as_str().unwrap()
        ),
        format!(
            "/external-audience/{audience}/runs/{}",
            runs[1]["runId"].as_str().unwrap()
        ),
    ] {
        let res = t.send(Method::GET, &path, None).await;
        assert_error(res, 404, "100940-404").await;
    }
    // The delete was not sized by the data: the rows are still there, and no audience has them.
    assert_eq!(t.members(audience).await, 0);
    assert_eq!(t.member_rows().await, MEMBERS);
    assert_eq!(t.staged_rows().await, STAGED);
    let runs_left: i64 = sqlx::query_scalar("SELECT count(*) FROM ais_runs")
        .fetch_one(&t.app.pool)
        .await
        .unwrap();
    assert_eq!(runs_left, 0);

    // The member set is nobody's: swept at once. The staged rows still belong to the run's open
    // job (a worker may be moving them): kept.
    assert_eq!(w.maintain().await.unwrap().rows_swept, MEMBERS as u64);
    assert_eq!(t.member_rows().await, 0);
    assert_eq!(t.staged_rows().await, STAGED);

    // The profile step finds its run gone and ends without moving a row.
    assert!(w.run_once().await.unwrap());
    assert!(!w.run_once().await.unwrap());
    assert_eq!(t.member_rows().await, 0);
    assert_eq!(t.staged_rows().await, STAGED);

    // Then the staged rows are nobody's either.
    assert_eq!(w.maintain().await.unwrap().rows_swept, STAGED as u64);
    assert_eq!(t.staged_rows().await, 0);
    assert_eq!(w.maintain().await.unwrap().rows_swept, 0);
}

#[tokio::test]
async fn an_ais_delete_while_rows_are_staged() {
    let t = Ais::spawn().await;
    let w = t.worker("w").await;
    let (audience, finished, staging) = audience_with_staged_rows(&t, &w).await;
    let res = t
        .send(
            Method::DELETE,
            &format!("/external-audience/{audience}"),
            None,
        )
        .await;
    assert_eq!(res.status(), 204);
    assert_deleted_with_staged_rows(&t, &w, &audience, [&finished, &staging]).await;
}

#[tokio::test]
async fn a_ups_delete_while_rows_are_staged() {
    let t = Ais::spawn().await;
    let w = t.worker("w").await;
    let (audience, finished, staging) = audience_with_staged_rows(&t, &w).await;
    assert_eq!(t.app.delete_audience(&audience).await.status(), 204);
    assert_deleted_with_staged_rows(&t, &w, &audience, [&finished, &staging]).await;
}
