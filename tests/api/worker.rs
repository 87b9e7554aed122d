//! The worker over a real database: leases and takeover after a crash (including a process killed
//! with SIGKILL), retries with backoff, several workers sharing the work, the server's own loop.

use std::time::Duration as StdDuration;

use audience_server::{
    config::{DbTimeouts, Settings},
    domain::{clock::Clock, job::JobStep},
    storage,
    worker::{Worker, WorkerConfig},
};
use chrono::Duration;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{
    ais::{named, tutorial_body, write_large, Ais, TUTORIAL_CSV},
    *,
};

#[tokio::test]
async fn a_worker_that_dies_holding_a_job_is_replaced_after_its_lease_once() {
    let t = Ais::spawn().await;
    let a = t.worker("dies").await;
    let b = t.worker("survives").await;
    t.write("DLZ", "x.csv", TUTORIAL_CSV);
    let audience = t.ready_audience(&b, tutorial_body("x.csv")).await;
    let run = t
        .start_run(&audience, json!({"dataFilterStartTime": 0}))
        .await;

    // A claims the dataset step and dies without a word.
    let stale = a.claim().await.unwrap().expect("a due job");
    assert_eq!(stale.step, JobStep::Dataset);
    // Within the lease nobody else takes it.
    assert!(!b.run_once().await.unwrap());
    assert_eq!(t.run(&audience, &run).await["status"], "PROCESSING");
    // After the lease, B takes over and finishes.
    t.clock.advance(Duration::seconds(31));
    assert_eq!(b.drain().await.unwrap(), 2);
    let done = t.run(&audience, &run).await;
    assert_eq!(done["status"], "SUCCESS", "{done}");
    assert_eq!(t.members(&audience).await, 3);

    // A comes back and carries out what it had claimed: nothing changes.
    a.execute(stale).await.unwrap();
    assert_eq!(t.run(&audience, &run).await, done);
    assert_eq!(t.members(&audience).await, 3);
    assert_eq!(t.staged_rows().await, 0);

    // The same with a death in the profile step.
    let run = t
        .start_run(&audience, json!({"dataFilterStartTime": 0}))
        .await;
    assert!(b.run_once().await.unwrap());
    let stale = a.claim().await.unwrap().expect("the profile step");
    assert_eq!(stale.step, JobStep::Profile);
    t.clock.advance(Duration::seconds(31));
    assert_eq!(b.drain().await.unwrap(), 1);
    a.execute(stale).await.unwrap();
    let done = t.run(&audience, &run).await;
    assert_eq!(done["status"], "SUCCESS");
    assert_eq!(t.members(&audience).await, 3);
}

#[tokio::test]
async fn a_failing_step_is_retried_with_backoff_then_the_run_fails() {
    let t = Ais::spawn().await;
    let w = t.worker("w").await;
    let (audience, run) = t.tutorial_run(&w).await;
    // From now on the database refuses every staged batch: the dataset step fails every attempt.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_staging() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'staging-refused-by-the-test'; END $$;
         CREATE TRIGGER refuse_staging BEFORE INSERT ON ais_staged_members
             FOR EACH STATEMENT EXECUTE FUNCTION refuse_staging();",
    )
    .execute(&t.app.pool)
    .await
    .unwrap();
    for attempt in 1..=4 {
        assert!(w.run_once().await.unwrap());
        let (attempts, error): (i32, Option<String>) =
            sqlx::query_as("SELECT attempts, last_error FROM ais_jobs WHERE done_at IS NULL")
                .fetch_one(&t.app.pool)
                .await
                .unwrap();
        assert_eq!(attempts, attempt);
        assert!(error.unwrap().contains("staging-refused-by-the-test"));
        // Not due again before its backoff.
        assert!(!w.run_once().await.unwrap());
        t.clock
            .advance(Duration::seconds(2i64.pow(attempt as u32) + 1));
        assert_eq!(t.run(&audience, &run).await["status"], "PROCESSING");
    }
    assert!(w.run_once().await.unwrap());
    let out = t.run(&audience, &run).await;
    assert_eq!(out["status"], "FAILED");
    assert!(
        out["message"]
            .as_str()
            .unwrap()
            .contains("Gave up after 5 attempts"),
        "{out}"
    );
    assert_eq!(out["details"][0]["status"], "FAILED");
    // Tenants read which stage and which job; the cause stays internal.
    let message = out["details"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("the DATASET_INGEST stage did not complete (job "),
        "{message}"
    );
    assert!(!message.contains("staging-refused"), "{message}");
    assert_eq!(out["message"].as_str().unwrap(), message);
    let last_error: String = sqlx::query_scalar(
        "SELECT last_error FROM ais_jobs WHERE done_at IS NOT NULL AND kind = 'ingest'",
    )
    .fetch_one(&t.app.pool)
    .await
    .unwrap();
    assert!(
        last_error.contains("staging-refused-by-the-test"),
        "{last_error}"
    );
    assert_eq!(out["details"][1]["status"], "SKIPPED");
    assert!(!w.run_once().await.unwrap());
}

#[tokio::test]
async fn a_late_worker_cannot_undo_the_work_of_the_one_that_took_over() {
    let t = Ais::spawn().await;
    let a = t.worker("late").await;
    let b = t.worker("took-over").await;
    t.write("DLZ", "x.csv", TUTORIAL_CSV);
    let audience = t.ready_audience(&b, tutorial_body("x.csv")).await;
    let run = t
        .start_run(&audience, json!({"dataFilterStartTime": 0}))
        .await;
    let stale = a.claim().await.unwrap().expect("the dataset step");
    t.clock.advance(Duration::seconds(31));
    // B redoes DATASET_INGEST and stages its rows; then A wakes up and runs its stale step.
    let fresh = b.claim().await.unwrap().expect("the expired claim");
    assert_eq!(fresh.step, JobStep::Dataset);
    b.execute(fresh).await.unwrap();
    a.execute(stale).await.unwrap();
    assert_eq!(b.drain().await.unwrap(), 1);
    let done = t.run(&audience, &run).await;
    assert_eq!(done["status"], "SUCCESS", "{done}");
    assert_eq!(done["details"][1]["profilesStored"], 3);
    assert_eq!(t.members(&audience).await, 3);
}

#[tokio::test]
async fn two_workers_on_one_database_do_each_job_once() {
    let t = Ais::spawn().await;
    let w1 = t.worker("one").await;
    let w2 = t.worker("two").await;
    let n = 6;
    let mut expected = Vec::new();
    let mut ops = Vec::new();
    for i in 0..n {
        let mut csv = String::from("ppid,list_id,delete,process_consent\n");
        for j in 0..(i + 1) * 10 {
            csv.push_str(&format!("user{j}@x,l,1,y\n"));
        }
        t.write("DLZ", &format!("f{i}.csv"), &csv);
        let accepted = t
            .json(
                Method::POST,
                "/external-audience",
                Some(named(&format!("f{i}.csv"), &format!("aud{i}"))),
                202,
            )
            .await;
        ops.push(accepted["operationId"].as_str().unwrap().to_owned());
        expected.push((i + 1) * 10);
    }
    let (r1, r2) = tokio::join!(w1.drain(), w2.drain());
    assert_eq!(r1.unwrap() + r2.unwrap(), n);
    let mut audiences = Vec::new();
    for op in &ops {
        let op = t.operation(op).await;
        assert_eq!(op["status"], "SUCCESS");
        audiences.push(op["audienceId"].as_str().unwrap().to_owned());
    }
    let mut runs = Vec::new();
    for a in &audiences {
        runs.push(t.start_run(a, json!({"dataFilterStartTime": 0})).await);
    }
    let (r1, r2) = tokio::join!(w1.drain(), w2.drain());
    // Two steps per run, each done by exactly one of the workers.
    assert_eq!(r1.unwrap() + r2.unwrap(), 2 * n);
    for ((a, run), want) in audiences.iter().zip(&runs).zip(&expected) {
        let out = t.run(a, run).await;
        assert_eq!(out["status"], "SUCCESS", "{out}");
        assert_eq!(out["details"][1]["profilesStored"], *want as i64);
        assert_eq!(t.members(a).await, *want as i64);
    }
    // Each step was claimed once (a claim counts an attempt) and never failed.
    let (jobs, retried): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE attempts <> 1 OR last_error IS NOT NULL) FROM ais_jobs WHERE done_at IS NOT NULL",
    )
    .fetch_one(&t.app.pool)
    .await
    .unwrap();
    assert_eq!((jobs, retried), (2 * n as i64, 0));
}

#[tokio::test]
async fn the_server_runs_its_own_worker_in_the_background() {
    let t = Ais::spawn().await;
    t.write("DLZ", "x.csv", TUTORIAL_CSV);
    // A second server process on the same database, with its worker on.
    let (landing, clock) = (t.landing.clone(), t.clock.clone());
    let second = TestApp::spawn_on(t.app.database_url.clone(), move |s| {
        s.landing_dir = Some(landing);
        s.clock = clock;
        s.worker_enabled = true;
        s.worker_poll_ms = 20;
    })
    .await;
    let accepted = t
        .json(
            Method::POST,
            "/external-audience",
            Some(tutorial_body("x.csv")),
            202,
        )
        .await;
    let op_path = format!(
        "/data/core/ais/external-audience/operations/{}",
        accepted["operationId"].as_str().unwrap()
    );
    let deadline = std::time::Instant::now() + StdDuration::from_secs(20);
    let audience = loop {
        let op: Value = second
            .request(Method::GET, &op_path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if op["status"] == "SUCCESS" {
            break op["audienceId"].as_str().unwrap().to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the background worker never ran: {op}"
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    };
    let run = t
        .start_run(&audience, json!({"dataFilterStartTime": 0}))
        .await;
    loop {
        let out = t.run(&audience, &run).await;
        if out["status"] != "PROCESSING" {
            assert_eq!(out["status"], "SUCCESS", "{out}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run never ended: {out}"
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    assert_eq!(t.members(&audience).await, 3);
}

#[tokio::test]
async fn the_worker_loop_stops_when_asked_and_when_its_owner_is_gone() {
    let t = Ais::spawn().await;
    let w = t.worker("loop").await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(w.clone().run(stopped));
    let accepted = t
        .json(
            Method::POST,
            "/external-audience",
            Some(tutorial_body("x.csv")),
            202,
        )
        .await;
    let op_path = format!(
        "/external-audience/operations/{}",
        accepted["operationId"].as_str().unwrap()
    );
    let deadline = std::time::Instant::now() + StdDuration::from_secs(20);
    while t.json(Method::GET, &op_path, None, 200).await["status"] != "SUCCESS" {
        assert!(
            std::time::Instant::now() < deadline,
            "the loop never ran the job"
        );
        tokio::time::sleep(StdDuration::from_millis(30)).await;
    }
    stop.send(true).unwrap();
    tokio::time::timeout(StdDuration::from_secs(5), task)
        .await
        .expect("the loop stops when asked")
        .unwrap();
    let (owner, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(w.run(stopped));
    drop(owner);
    tokio::time::timeout(StdDuration::from_secs(5), task)
        .await
        .expect("the loop ends when nobody can stop it")
        .unwrap();
}

/// A worker in a process of its own, killed with SIGKILL by `a_killed_worker_loses_nothing`.
#[tokio::test]
#[ignore = "run by a_killed_worker_loses_nothing in a separate process"]
async fn worker_child() {
    // Only meaningful when started by the parent test (e.g. not under --include-ignored).
    let (Ok(url), Ok(landing)) = (
        std::env::var("AIS_CHILD_DATABASE"),
        std::env::var("AIS_CHILD_LANDING"),
    ) else {
        eprintln!("worker_child runs only as the child of a_killed_worker_loses_nothing");
        return;
    };
    let pool = storage::connect(&url, 3, &DbTimeouts::none())
        .await
        .unwrap();
    let w = Worker::new(
        pool,
        WorkerConfig {
            id: "child".into(),
            landing_dir: landing.into(),
            landing_ttl: StdDuration::from_secs(7 * 24 * 3600),
            clock: Clock::system(),
            lease: Duration::seconds(30),
            max_attempts: 5,
            poll: StdDuration::from_millis(20),
            ..WorkerConfig::from_settings(&Settings::for_database(&url))
        },
    );
    w.drain().await.unwrap();
}

#[tokio::test]
async fn a_killed_worker_loses_nothing() {
    const ROWS: usize = 200_000;
    let t = Ais::spawn().await;
    let w = t.worker("parent").await;
    write_large(&t.zone, "kill.csv", ROWS);
    let audience = t.ready_audience(&w, tutorial_body("kill.csv")).await;
    let run = t
        .start_run(&audience, json!({"dataFilterStartTime": 0}))
        .await;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "worker::worker_child",
            "--exact",
            "--ignored",
            "--test-threads=1",
        ])
        .env("AIS_CHILD_DATABASE", &t.app.database_url)
        .env("AIS_CHILD_LANDING", &t.landing)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the child is visibly in the middle of DATASET_INGEST, then kill -9 it.
    let deadline = std::time::Instant::now() + StdDuration::from_secs(60);
    loop {
        let now = t.run(&audience, &run).await;
        let read = now["details"][0]["recordsRead"].as_u64().unwrap_or(0);
        if now["details"][0]["status"] == "PROCESSING" && read > 0 {
            assert!((read as usize) < ROWS);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the child never started: {now}"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child ended early: {now}"
        );
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let staged = t.staged_rows().await;
    assert!(staged > 0, "the child had staged rows when it died");
    assert_eq!(t.run(&audience, &run).await["status"], "PROCESSING");

    // Its lease holds the job until it runs out; then another worker finishes the run, once.
    assert!(!w.run_once().await.unwrap());
    t.clock.advance(Duration::seconds(31));
    assert_eq!(w.drain().await.unwrap(), 2);
    let done = t.run(&audience, &run).await;
    assert_eq!(done["status"], "SUCCESS", "{done}");
    assert_eq!(done["details"][0]["recordsRead"], ROWS as u64);
    assert_eq!(done["details"][1]["profilesStored"], ROWS as u64);
    assert_eq!(t.members(&audience).await, ROWS as i64);
    // What the dead child staged is no longer wanted: the maintenance sweep removes it (a batch
    // it had sent just before it died may have committed after the count above).
    let swept = w.maintain().await.unwrap().rows_swept;
    assert!(swept >= staged as u64, "{swept} < {staged}");
    assert_eq!(t.staged_rows().await, 0);
}
