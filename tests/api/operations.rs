//! What operators see: `/metrics` (route templates, error codes, pool and queue), `/ready`
//! (database, migrations, draining) and the graceful shutdown (in-flight requests finish, the
//! worker hands its job back at once).

use std::time::{Duration as StdDuration, Instant};

use audience_server::{
    config::{DbTimeouts, Settings},
    startup::Application,
    storage,
};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{
    ais::{tutorial_body, write_large, Ais},
    *,
};

async fn scrape(app: &TestApp) -> String {
    let res = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    res.text().await.unwrap()
}

/// The value of one sample line, `name{labels} value`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_errors_by_code() {
    let app = TestApp::spawn().await;
    let created = app.created(platform_audience()).await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(app.get_audience(id).await.status(), 200);
    let unknown: Vec<String> = (0..3).map(|_| Uuid::new_v4().to_string()).collect();
    for u in &unknown[..2] {
        assert_eq!(app.get_audience(u).await.status(), 404);
    }
    // An alias counts under the canonical template.
    let alias = format!("/core/ups/audiences/{}/", unknown[2]);
    let res = app.request(Method::GET, &alias).send().await.unwrap();
    assert_eq!(res.status(), 404);
    // Unknown paths and invented methods land in one bucket each.
    for p in [
        "/nothing/here",
        "/data/core/ups/nothing",
        "/another/unknown/path",
    ] {
        let res = app.request(Method::GET, p).send().await.unwrap();
        assert_eq!(res.status(), 404);
    }
    let brew = Method::from_bytes(b"BREW").unwrap();
    app.request(brew, "/data/core/ups/audiences")
        .send()
        .await
        .unwrap();
    // A gate refusal is an error by code too.
    app.client
        .get(format!("{}/data/core/ups/audiences", app.address))
        .send()
        .await
        .unwrap();

    let text = scrape(&app).await;
    let route = "/data/core/ups/audiences/{id}";
    assert_eq!(
        sample(
            &text,
            &format!("http_requests_total{{route=\"{route}\",method=\"GET\",status=\"404\"}}")
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!("http_requests_total{{route=\"{route}\",method=\"GET\",status=\"200\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "http_requests_total{route=\"/data/core/ups/audiences\",method=\"POST\",status=\"200\"}"
        ),
        Some(1.0)
    );
    let unmatched: f64 = text
        .lines()
        .filter(|l| l.starts_with("http_requests_total{route=\"unmatched\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(unmatched, 3.0, "{text}");
    assert!(text.contains("method=\"OTHER\""), "{text}");
    // No id, raw path or method name a client invented becomes a label.
    for raw in unknown
        .iter()
        .map(String::as_str)
        .chain([id, "nothing", "BREW"])
    {
        assert!(!text.contains(raw), "{raw} leaked into the metrics");
    }
    assert_eq!(
        sample(
            &text,
            "audience_errors_total{code=\"UPAPI-113430-404\",status=\"404\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            "audience_errors_total{code=\"403010\",status=\"401\"}"
        ),
        Some(1.0)
    );
    assert!(sample(
        &text,
        &format!("http_request_duration_seconds_count{{route=\"{route}\",method=\"GET\"}}")
    )
    .is_some_and(|n| n == 4.0));
    // The pool and the queue, read at scrape time.
    assert_eq!(sample(&text, "db_pool_max_connections"), Some(4.0));
    assert!(sample(&text, "db_pool_connections{state=\"open\"}").is_some_and(|n| n >= 1.0));
    assert!(sample(&text, "db_pool_acquire_probe_seconds").is_some());
    assert_eq!(sample(&text, "audience_database_up"), Some(1.0));
    for kind in ["create_audience", "ingest"] {
        for state in ["queued", "running", "retrying"] {
            assert_eq!(
                sample(
                    &text,
                    &format!("audience_jobs{{kind=\"{kind}\",state=\"{state}\"}}")
                ),
                Some(0.0),
                "{text}"
            );
        }
    }
    assert_eq!(
        sample(&text, "audience_oldest_due_job_age_seconds"),
        Some(0.0)
    );
    assert!(text.contains("# TYPE http_request_duration_seconds histogram"));
}

#[tokio::test]
async fn the_queue_the_stages_and_the_ingested_rows_are_measured() {
    let t = Ais::spawn().await;
    let w = t.worker("metrics").await;
    t.write(
        "DLZ",
        "m.csv",
        "ppid,list_id,delete,process_consent\na@x,l,0,y\nb@x,l,1,n\n,l,1,n\n",
    );
    let audience = t.ready_audience(&w, tutorial_body("m.csv")).await;
    t.start_run(&audience, json!({"dataFilterStartTime": 0}))
        .await;
    t.clock.advance(chrono::Duration::seconds(7));
    let text = scrape(&t.app).await;
    assert_eq!(
        sample(&text, "audience_jobs{kind=\"ingest\",state=\"queued\"}"),
        Some(1.0),
        "{text}"
    );
    let age = sample(&text, "audience_oldest_due_job_age_seconds").unwrap();
    assert!((7.0..60.0).contains(&age), "{age}");

    // The server's own worker records what it does in the server's metrics.
    let monitoring_worker = w.with_monitoring(t.app.monitoring.clone());
    assert_eq!(monitoring_worker.drain().await.unwrap(), 2);
    let text = scrape(&t.app).await;
    assert_eq!(
        sample(&text, "audience_jobs{kind=\"ingest\",state=\"queued\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "audience_ingested_rows_total{result=\"good\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "audience_ingested_rows_total{result=\"bad\"}"),
        Some(1.0)
    );
    for (stage, step) in [
        ("DATASET_INGEST", "dataset"),
        ("PROFILE_STORE_INGEST", "profile"),
    ] {
        assert_eq!(
            sample(
                &text,
                &format!(
                    "audience_run_stage_duration_seconds_count{{stage=\"{stage}\",status=\"SUCCESS\"}}"
                )
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                &format!(
                    "audience_job_steps_total{{kind=\"ingest\",step=\"{step}\",outcome=\"done\"}}"
                )
            ),
            Some(1.0)
        );
    }
}

#[tokio::test]
async fn metrics_may_require_a_token() {
    let app = TestApp::spawn_with(|s| s.metrics_token = Some("s3cret".parse().unwrap())).await;
    let url = format!("{}/metrics", app.address);
    let res = app.client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"error_code": "403010", "message": "Oauth token is missing."})
    );
    let res = app
        .client
        .get(&url)
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = app
        .client
        .get(&url)
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("http_requests_total"));
}

async fn ready(client: &reqwest::Client, address: &str) -> (u16, Value) {
    let res = client.get(format!("{address}/ready")).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test]
async fn ready_needs_the_database_and_every_migration() {
    let app = TestApp::spawn().await;
    assert_eq!(
        ready(&app.client, &app.address).await,
        (
            200,
            json!({"status": "ready", "database": "up", "migrations": "applied"})
        )
    );

    // A server started without migrating, on an empty database, is alive but not ready until
    // `migrate` has run.
    let url = fresh_database().await;
    let pool = storage::connect(&url, 2, &DbTimeouts::none())
        .await
        .unwrap();
    sqlx::raw_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        .execute(&pool)
        .await
        .unwrap();
    let mut settings = Settings::for_database(&url);
    settings.migrate_on_start = false;
    settings.worker_enabled = false;
    let app2 = Application::build(settings).await.unwrap();
    let address = format!("http://127.0.0.1:{}", app2.port());
    let handle = app2.handle();
    tokio::spawn(app2.run_until_stopped());
    assert_eq!(
        ready(&app.client, &address).await,
        (
            503,
            json!({"status": "unavailable", "database": "up", "migrations": "pending"})
        )
    );
    let health = app
        .client
        .get(format!("{address}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    storage::MIGRATOR.run(&pool).await.unwrap();
    assert_eq!(ready(&app.client, &address).await.0, 200);
    handle.stop(false).await;

    // No database: 503, database down.
    let dead = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(StdDuration::from_millis(300))
        .connect_lazy("postgres://postgres@127.0.0.1:1/none")
        .unwrap();
    let down =
        Application::with_pool(Settings::for_database("postgres://unused"), dead, None).unwrap();
    let address = format!("http://127.0.0.1:{}", down.port());
    let handle = down.handle();
    tokio::spawn(down.run_until_stopped());
    assert_eq!(
        ready(&app.client, &address).await,
        (
            503,
            json!({"status": "unavailable", "database": "down", "migrations": "unknown"})
        )
    );
    handle.stop(false).await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_turns_ready_off() {
    let app = TestApp::spawn().await;
    let created = app.created(platform_audience()).await;
    let id = created["id"].as_str().unwrap().to_owned();

    // A second server on the same database, shut down while a PATCH waits for a row lock.
    let database_url = app.database_url.clone();
    let mut settings = Settings::for_database(&database_url);
    settings.shutdown_grace_secs = 20;
    settings.shutdown_delay_secs = 3;
    settings.worker_enabled = false;
    let pool = storage::connect(&database_url, 4, &DbTimeouts::none())
        .await
        .unwrap();
    let server = Application::with_pool(settings, pool, None).unwrap();
    let address = format!("http://127.0.0.1:{}", server.port());
    let shutdown = server.shutdown_handle();
    let stopped = tokio::spawn(server.run_until_stopped());

    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM audiences WHERE id = $1 FOR UPDATE")
        .bind(Uuid::parse_str(&id).unwrap())
        .execute(&mut *blocker)
        .await
        .unwrap();
    let client = reqwest::Client::new();
    assert_eq!(ready(&client, &address).await.0, 200);
    let patch = {
        let client = reqwest::Client::new();
        let url = format!("{address}/data/core/ups/audiences/{id}");
        tokio::spawn(async move {
            client
                .patch(url)
                .header("Authorization", "Bearer t")
                .header("x-api-key", "k")
                .header("x-gw-ims-org-id", ORG)
                .header("x-sandbox-name", SANDBOX)
                .json(&json!([{"op": "add", "path": "/description", "value": "drained"}]))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    shutdown.shut_down();
    let asked = Instant::now();
    // Draining, within SHUTDOWN_DELAY_SECS: not ready, everything else still served.
    let body = loop {
        let (status, body) = ready(&reqwest::Client::new(), &address).await;
        if status == 503 {
            break body;
        }
        assert!(
            asked.elapsed() < StdDuration::from_secs(2),
            "still ready: {body}"
        );
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    };
    assert_eq!(body["status"], "draining", "{body}");
    let health = client
        .get(format!("{address}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // After the delay new connections are refused; the PATCH is still waiting for its lock.
    loop {
        let fresh = reqwest::Client::new()
            .get(format!("{address}/health"))
            .timeout(StdDuration::from_secs(2))
            .send()
            .await;
        if fresh.is_err() {
            break;
        }
        assert!(
            asked.elapsed() < StdDuration::from_secs(10),
            "new connections still accepted"
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    assert!(
        asked.elapsed() >= StdDuration::from_secs(3),
        "refused before the delay"
    );
    assert!(!patch.is_finished());
    assert!(!stopped.is_finished());

    // The in-flight PATCH completes once the lock goes, then the server stops.
    blocker.rollback().await.unwrap();
    assert_eq!(patch.await.unwrap().unwrap(), 200);
    tokio::time::timeout(StdDuration::from_secs(15), stopped)
        .await
        .expect("the server stopped after its in-flight request")
        .unwrap()
        .unwrap();
    let after = app.get_audience(&id).await.json::<Value>().await.unwrap();
    assert_eq!(after["description"], "drained");
}

/// Clients that keep their pooled connections busy do not hold the shutdown: while draining, every
/// answer closes its connection, so the clients' next requests need a new connection, which the
/// draining server no longer accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn busy_keep_alive_clients_do_not_hold_the_shutdown() {
    let app = TestApp::spawn().await;
    let mut settings = Settings::for_database(&app.database_url);
    settings.shutdown_grace_secs = 30;
    settings.worker_enabled = false;
    let pool = storage::connect(&app.database_url, 4, &DbTimeouts::none())
        .await
        .unwrap();
    let server = Application::with_pool(settings, pool, None).unwrap();
    let url = format!("http://127.0.0.1:{}/health", server.port());
    let shutdown = server.shutdown_handle();
    let stopped = tokio::spawn(server.run_until_stopped());

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answers = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (url, stop, answers) = (url.clone(), stop.clone(), answers.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let Ok(res) = client.get(&url).send().await else {
                        tokio::time::sleep(StdDuration::from_millis(5)).await;
                        continue;
                    };
                    let closes = res
                        .headers()
                        .get("connection")
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                    answers.lock().await.push((Instant::now(), closes));
                }
            })
        })
        .collect();
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    let asked = Instant::now();
    shutdown.shut_down();
    tokio::time::timeout(StdDuration::from_secs(10), stopped)
        .await
        .expect("the server stopped though its clients kept their connections busy")
        .unwrap()
        .unwrap();
    let took = asked.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let answers = answers.lock().await;
    let before = answers.iter().filter(|(at, _)| *at < asked).count();
    assert!(before > 50, "the clients hardly ran: {before} answers");
    assert!(
        answers
            .iter()
            .filter(|(at, _)| *at < asked)
            .all(|(_, closes)| !closes),
        "a connection was closed before the shutdown"
    );
    assert!(
        answers.iter().any(|(at, closes)| *at >= asked && *closes),
        "no answer while draining said `Connection: close`"
    );
    assert!(
        took < StdDuration::from_secs(5),
        "the shutdown took {took:?}"
    );
}

#[tokio::test]
async fn on_shutdown_the_worker_hands_its_job_back_at_once() {
    const ROWS: usize = 300_000;
    let t = Ais::spawn().await;
    let w = t.worker("helper").await;
    write_large(&t.zone, "big.csv", ROWS);
    let audience = t.ready_audience(&w, tutorial_body("big.csv")).await;
    let run = t
        .start_run(&audience, json!({"dataFilterStartTime": 0}))
        .await;

    // A server with its worker on takes the run and is shut down in the middle of it.
    let landing = t.landing.clone();
    let clock = t.clock.clone();
    let mut settings = Settings::for_database(&t.app.database_url);
    settings.landing_dir = Some(landing);
    settings.clock = clock;
    settings.worker_poll_ms = 20;
    let pool = storage::connect(&t.app.database_url, 4, &DbTimeouts::none())
        .await
        .unwrap();
    let server = Application::with_pool(settings, pool, None).unwrap();
    let shutdown = server.shutdown_handle();
    let stopped = tokio::spawn(server.run_until_stopped());
    let deadline = Instant::now() + StdDuration::from_secs(60);
    loop {
        let now = t.run(&audience, &run).await;
        if now["details"][0]["recordsRead"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server's worker never started: {now}"
        );
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    shutdown.shut_down();
    tokio::time::timeout(StdDuration::from_secs(10), stopped)
        .await
        .expect("the server stopped promptly")
        .unwrap()
        .unwrap();
    let (held, attempts, done): (bool, i32, bool) = sqlx::query_as(
        "SELECT claim IS NOT NULL OR locked_until IS NOT NULL OR locked_by IS NOT NULL,
                attempts, done_at IS NOT NULL
         FROM ais_jobs WHERE kind = 'ingest'",
    )
    .fetch_one(&t.app.pool)
    .await
    .unwrap();
    assert_eq!((held, attempts, done), (false, 0, false));
    assert_eq!(t.run(&audience, &run).await["status"], "PROCESSING");

    // Another worker continues at once, without the clock moving past any lease.
    assert_eq!(w.drain().await.unwrap(), 2);
    let done = t.run(&audience, &run).await;
    assert_eq!(done["status"], "SUCCESS", "{done}");
    assert_eq!(done["details"][0]["recordsRead"], ROWS as u64);
    assert_eq!(t.members(&audience).await, ROWS as i64);
    // What the abandoned step had staged under its claim goes with the maintenance sweep.
    w.maintain().await.unwrap();
    assert_eq!(t.staged_rows().await, 0);
}
