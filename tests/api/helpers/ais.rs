//! The AIS harness: a server with its worker off, a landing folder of its own and an adjustable
//! clock; workers the test drives step by step; one helper per AIS call; the tutorial's request
//! and file.

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration as StdDuration,
};

use audience_server::{
    config::{DbTimeouts, Settings},
    domain::clock::Clock,
    storage,
    worker::{Worker, WorkerConfig},
};
use chrono::Duration;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{json, Value};

use super::{TestApp, TOKEN};

pub const META_ACCEPT: &str = "application/vnd.adobe.external.audiences+json; version=2";

/// A server with its worker off, a landing folder of its own and an adjustable clock shared with
/// the workers the test makes. `zone` is the container folder of the default tenant's landing
/// zone, where `write` drops files as someone with a shell on a single-team server would.
pub struct Ais {
    pub app: TestApp,
    pub landing: PathBuf,
    pub zone: PathBuf,
    pub clock: Clock,
}

static NEXT_LANDING: AtomicUsize = AtomicUsize::new(0);

impl Ais {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> Self {
        let landing = std::env::temp_dir().join(format!(
            "ais-landing-{}-{}",
            std::process::id(),
            NEXT_LANDING.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&landing);
        std::fs::create_dir_all(&landing).unwrap();
        let clock = Clock::adjustable();
        let (l, c) = (landing.clone(), clock.clone());
        let app = TestApp::spawn_with(move |s| {
            s.landing_dir = Some(l);
            s.worker_enabled = false;
            s.clock = c;
            tweak(s);
        })
        .await;
        let zone = zone_folder(&app, &landing).await;
        Ais {
            app,
            landing,
            zone,
            clock,
        }
    }

    /// A worker on the same database, landing folder and clock.
    pub async fn worker(&self, id: &str) -> Worker {
        self.worker_with(id, |_| {}).await
    }

    /// A worker with its configuration adjusted by `tweak`.
    pub async fn worker_with(&self, id: &str, tweak: impl FnOnce(&mut WorkerConfig)) -> Worker {
        let pool = storage::connect(&self.app.database_url, 3, &DbTimeouts::none())
            .await
            .unwrap();
        let mut cfg = WorkerConfig {
            id: id.into(),
            landing_dir: self.landing.clone(),
            landing_ttl: StdDuration::from_secs(7 * 24 * 3600),
            clock: self.clock.clone(),
            lease: Duration::seconds(30),
            max_attempts: 5,
            poll: StdDuration::from_millis(20),
            ..WorkerConfig::from_settings(&Settings::for_database(&self.app.database_url))
        };
        tweak(&mut cfg);
        Worker::new(pool, cfg)
    }

    pub fn ais(&self, method: Method, path: &str) -> RequestBuilder {
        self.app.request(method, &format!("/data/core/ais{path}"))
    }

    /// An AIS request of another sandbox of the same org.
    pub fn ais_in(&self, sandbox: &str, method: Method, path: &str) -> RequestBuilder {
        self.app
            .client
            .request(method, format!("{}/data/core/ais{path}", self.app.address))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .header("x-api-key", "test-key")
            .header("x-gw-ims-org-id", &self.app.org)
            .header("x-sandbox-name", sandbox)
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Response {
        let mut req = self.ais(method, path);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap()
    }

    /// An AIS call that must answer `status`; its body.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        status: u16,
    ) -> Value {
        let res = self.send(method, path, body).await;
        let got = res.status().as_u16();
        let text = res.text().await.unwrap();
        assert_eq!(got, status, "{path}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// Writes a file as `<cloud>/<path>` in the default tenant's landing zone.
    pub fn write(&self, cloud: &str, path: &str, content: &str) -> PathBuf {
        let full = self.zone.join(cloud).join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, content).unwrap();
        full
    }

    /// Asks for an external audience (202); its operationId.
    pub async fn accept(&self, body: Value) -> String {
        let accepted = self
            .json(Method::POST, "/external-audience/", Some(body), 202)
            .await;
        accepted["operationId"].as_str().unwrap().to_owned()
    }

    /// A creation operation as the API shows it.
    pub async fn operation(&self, id: &str) -> Value {
        self.json(
            Method::GET,
            &format!("/external-audience/operations/{id}"),
            None,
            200,
        )
        .await
    }

    /// The tutorial file as `x.csv`, a ready external audience that reads it, and a run of it
    /// started over every file time: the audienceId and the run as answered.
    pub async fn tutorial_run(&self, worker: &Worker) -> (String, Value) {
        self.write("DLZ", "x.csv", TUTORIAL_CSV);
        let audience = self.ready_audience(worker, tutorial_body("x.csv")).await;
        let run = self
            .start_run(&audience, json!({"dataFilterStartTime": 0}))
            .await;
        (audience, run)
    }

    /// Creates an external audience and lets the worker finish the operation; its audienceId.
    pub async fn ready_audience(&self, worker: &Worker, body: Value) -> String {
        let op_id = self.accept(body).await;
        assert!(worker.run_once().await.unwrap());
        let op = self.operation(&op_id).await;
        assert_eq!(op["status"], "SUCCESS", "{op}");
        op["audienceId"].as_str().unwrap().to_owned()
    }

    /// An external audience as the API shows it.
    pub async fn external(&self, audience: &str) -> Value {
        self.json(
            Method::GET,
            &format!("/external-audience/{audience}"),
            None,
            200,
        )
        .await
    }

    pub async fn start_run(&self, audience: &str, body: Value) -> Value {
        self.json(
            Method::POST,
            &format!("/external-audience/{audience}/runs"),
            Some(body),
            200,
        )
        .await
    }

    pub async fn run(&self, audience: &str, run: &Value) -> Value {
        let id = run["runId"].as_str().unwrap();
        self.json(
            Method::GET,
            &format!("/external-audience/{audience}/runs/{id}"),
            None,
            200,
        )
        .await
    }

    /// The audience's members: the rows of the member set it points at (no API lists them).
    pub async fn members(&self, audience: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM ais_members m JOIN external_audiences a
                 ON a.id = m.audience_id AND a.members_run_id = m.run_id
             WHERE a.id = $1::uuid",
        )
        .bind(audience)
        .fetch_one(&self.app.pool)
        .await
        .unwrap()
    }

    /// Member rows of every set of any audience, wanted or not.
    pub async fn member_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM ais_members")
            .fetch_one(&self.app.pool)
            .await
            .unwrap()
    }

    /// Staged identity rows of every run, of any audience.
    pub async fn staged_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM ais_staged_members")
            .fetch_one(&self.app.pool)
            .await
            .unwrap()
    }

    /// Jobs not done yet (the queue is internal: no API shows it).
    pub async fn open_jobs(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM ais_jobs WHERE done_at IS NULL")
            .fetch_one(&self.app.pool)
            .await
            .unwrap()
    }

    pub async fn ups_metrics(&self, audience: &str) -> Value {
        let res = self.app.get_audience(audience).await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        body["metrics"].clone()
    }
}

impl Drop for Ais {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.landing);
    }
}

/// The container folder of the app's default tenant's landing zone, as the credentials name it:
/// `<LANDING_DIR>/<storageAccountName>/dlz-user-container`.
pub async fn zone_folder(app: &TestApp, landing: &Path) -> PathBuf {
    let res = app
        .request(
            Method::GET,
            "/data/foundation/connectors/landingzone/credentials?type=user_drop_zone",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let creds: Value = res.json().await.unwrap();
    let account = creds["storageAccountName"].as_str().unwrap();
    let folder = landing.join(account).join("dlz-user-container");
    assert!(
        folder.is_dir(),
        "the zone's folder exists once credentials are issued"
    );
    folder
}

/// The tutorial's create request, reading `path` (a file under DLZ).
pub fn tutorial_body(path: &str) -> Value {
    json!({
        "name": "Sample external audience",
        "description": "A sample version of an external audience",
        "fields": [
            {"name": "ppid", "type": "string", "identityNs": "email"},
            {"name": "list_id", "type": "string", "labels": ["core/C2", "custom/deep"]},
            {"name": "delete", "type": "number"},
            {"name": "process_consent", "type": "string"}
        ],
        "sourceSpec": {"params": {
            "path": path,
            "type": "file",
            "sourceType": "Cloud Storage",
            "baseConnectionId": "1d1d4bc5-b527-46a3-9863-530246a61b2b"
        }},
        "ttlInDays": "40",
        "labels": ["core/C1"],
        "audienceType": "people",
        "originName": "CUSTOM_UPLOAD"
    })
}

/// The tutorial's request under another name.
pub fn named(path: &str, name: &str) -> Value {
    let mut b = tutorial_body(path);
    b["name"] = json!(name);
    b
}

pub const TUTORIAL_CSV: &str = "ppid,list_id,delete,process_consent\n\
a@example.com,l1,0,yes\n\
b@example.com,l1,1,yes\n\
a@example.com,l2,0,no\n\
c@example.com,l1,not-a-number,yes\n\
,l1,0,yes\n\
d@example.com,l3,2.5,yes\n";

/// Writes a CSV of `rows` distinct identities under DLZ, streaming.
pub fn write_large(zone: &Path, name: &str, rows: usize) -> PathBuf {
    let path = zone.join("DLZ").join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(out, "ppid,list_id,delete,process_consent").unwrap();
    for i in 0..rows {
        writeln!(
            out,
            "user{i:08}@example.com,list-{},{}.5,yes",
            i % 7,
            i % 100
        )
        .unwrap();
    }
    out.flush().unwrap();
    path
}

/// This process's peak resident size, in kB.
pub fn vm_hwm_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// Runs one ignored test of this binary in a child process (so the peak memory it measures is
/// its own) and returns its output once it passed.
pub fn run_in_child(test: &str, env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{stdout}");
    stdout
}
