//! The test harness: a real server on port 0 with its own database, cloned from a migrated
//! template. The database is `TEST_DATABASE_URL`, else `DATABASE_URL`, else a local PostgreSQL on
//! 127.0.0.1:5432, else a container started with testcontainers; with none of these the tests fail
//! saying what to set.
//!
//! Several runs may share one PostgreSQL (other checkouts, other machines). Each run names its
//! databases `audtest_<pid>_<random>_...` and, before it creates any, opens a session whose
//! `application_name` is `audtest-run <pid>_<random>`, held as long as the process lives. A run
//! drops the databases of earlier runs only when their run has no such session left and nobody
//! is connected to them; its own are left for inspection.

use std::{
    net::TcpStream,
    sync::{
        atomic::{AtomicUsize, Ordering},
        OnceLock,
    },
    time::Duration,
};

use audience_server::{
    config::{DbTimeouts, Settings},
    startup::Application,
    storage,
};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use sqlx::{postgres::PgConnectOptions, ConnectOptions, Connection, PgConnection, PgPool};

pub mod ais;

pub const ORG: &str = "1BD6382559DF0C130A49422D@AdobeOrg";
pub const SANDBOX: &str = "prod";
pub const TOKEN: &str = "test-token";

/// The server's URL of the maintenance database, this run's id and the name of its migrated
/// template.
struct Cluster {
    admin_url: String,
    run: String,
    template: String,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

/// What a run's keep-alive session calls itself, followed by the run's id.
const RUN_SESSION: &str = "audtest-run ";

fn admin_url() -> String {
    for var in ["TEST_DATABASE_URL", "DATABASE_URL"] {
        if let Ok(url) = std::env::var(var) {
            if !url.is_empty() {
                return url;
            }
        }
    }
    if TcpStream::connect_timeout(
        &"127.0.0.1:5432".parse().unwrap(),
        Duration::from_millis(300),
    )
    .is_ok()
    {
        return "postgres://postgres@127.0.0.1:5432/postgres".into();
    }
    if docker_answers() {
        return start_container();
    }
    panic!(
        "The integration tests need PostgreSQL. Set TEST_DATABASE_URL (or DATABASE_URL) to a server \
         whose user may create databases, e.g. postgres://postgres@127.0.0.1:5432/postgres, or run \
         PostgreSQL on 127.0.0.1:5432, or start a Docker engine so testcontainers can start one."
    );
}

fn docker_answers() -> bool {
    std::process::Command::new("docker")
        .arg("info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One container for the whole test binary, owned by a thread that lives as long as the process.
fn start_container() -> String {
    use testcontainers_modules::{
        postgres::Postgres,
        testcontainers::{runners::AsyncRunner, ImageExt},
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let container = Postgres::default()
                .with_tag("16-alpine")
                .start()
                .await
                .expect("starting a PostgreSQL container");
            let port = container.get_host_port_ipv4(5432).await.unwrap();
            tx.send(format!(
                "postgres://postgres:postgres@127.0.0.1:{port}/postgres"
            ))
            .unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().expect("the container thread died")
}

fn with_database(url: &str, db: &str) -> String {
    let opts: PgConnectOptions = url.parse().expect("a valid database URL");
    opts.database(db).to_url_lossy().to_string()
}

/// Opens this run's keep-alive session and holds it, on a thread of its own, until the process
/// ends (the server sees the session close with the process, on whichever machine it ran).
fn advertise_run(admin_url: &str, run: &str) {
    let options: PgConnectOptions = admin_url.parse().expect("a valid database URL");
    let options = options.application_name(&format!("{RUN_SESSION}{run}"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let session = PgConnection::connect_with(&options).await;
            let connected = session.as_ref().map(|_| ()).map_err(|e| e.to_string());
            tx.send(connected).unwrap();
            let _held = session;
            std::future::pending::<()>().await;
        });
    });
    if let Err(e) = rx.recv().expect("the run's session thread died") {
        panic!("cannot open the test run's session: {e}");
    }
}

/// The run a database belongs to, `<pid>_<random>`, for names this harness makes; `None` for
/// anything else.
fn run_of(db: &str) -> Option<&str> {
    let rest = db.strip_prefix("audtest_")?;
    let mut parts = rest.splitn(3, '_');
    let (pid, random) = (parts.next()?, parts.next()?);
    let named = pid.parse::<u32>().is_ok()
        && random.len() == 8
        && random.bytes().all(|b| b.is_ascii_hexdigit())
        && parts.next().is_some();
    named.then(|| &rest[..pid.len() + 1 + random.len()])
}

/// Drops the test databases that no run wants any more: databases nobody is connected to, made by
/// a run whose session is gone. (Databases named by older versions of this harness,
/// `audtest_tpl_<pid>` and `audtest_<pid>_<n>`, carry no run: they are dropped when nobody is
/// connected and no process of that id runs on this machine.) `DROP DATABASE` without `FORCE`
/// refuses a database someone connected to meanwhile.
async fn drop_abandoned_databases(admin: &mut PgConnection) {
    let live_runs: Vec<String> = sqlx::query_scalar(
        "SELECT substr(application_name, length($1) + 1) FROM pg_stat_activity
         WHERE starts_with(application_name, $1)",
    )
    .bind(RUN_SESSION)
    .fetch_all(&mut *admin)
    .await
    .unwrap();
    let unused: Vec<String> = sqlx::query_scalar(
        "SELECT d.datname FROM pg_database d
         WHERE d.datname LIKE 'audtest\\_%'
           AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)",
    )
    .fetch_all(&mut *admin)
    .await
    .unwrap();
    for db in unused {
        let abandoned = match run_of(&db) {
            Some(run) => !live_runs.iter().any(|live| live == run),
            None => !legacy_owner_alive(&db),
        };
        if abandoned {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{db}\""
            )))
            .execute(&mut *admin)
            .await;
        }
    }
}

/// Whether the process that named an older harness's database (`audtest_tpl_<pid>`,
/// `audtest_<pid>_<n>`) still runs on this machine.
fn legacy_owner_alive(db: &str) -> bool {
    let rest = db.trim_start_matches("audtest_").trim_start_matches("tpl_");
    rest.split('_')
        .next()
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
}

fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        // A runtime of its own: each test has its own, and this one outlives none of them.
        std::thread::spawn(|| {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let admin_url = admin_url();
                let random = &uuid::Uuid::new_v4().simple().to_string()[..8];
                let run = format!("{}_{random}", std::process::id());
                // Alive before anything of this run exists, so no other run takes it for stale.
                advertise_run(&admin_url, &run);
                let template = format!("audtest_{run}_tpl");
                let mut admin = PgConnection::connect(&admin_url)
                    .await
                    .unwrap_or_else(|e| panic!("cannot connect to {admin_url}: {e}"));
                drop_abandoned_databases(&mut admin).await;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "CREATE DATABASE \"{template}\""
                )))
                .execute(&mut admin)
                .await
                .unwrap();
                let pool = PgPool::connect(&with_database(&admin_url, &template))
                    .await
                    .unwrap();
                storage::MIGRATOR
                    .run(&pool)
                    .await
                    .expect("migrations apply");
                pool.close().await;
                Cluster {
                    admin_url,
                    run,
                    template,
                }
            })
        })
        .join()
        .expect("preparing the test database failed")
    })
}

/// A fresh, migrated database for one test; returns its URL.
pub async fn fresh_database() -> String {
    let cluster = cluster();
    let name = format!(
        "audtest_{}_{}",
        cluster.run,
        NEXT_DB.fetch_add(1, Ordering::SeqCst)
    );
    let mut admin = PgConnection::connect(&cluster.admin_url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE \"{name}\" TEMPLATE \"{}\"",
        cluster.template
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
    with_database(&cluster.admin_url, &name)
}

pub struct TestApp {
    pub address: String,
    pub database_url: String,
    pub pool: PgPool,
    pub client: reqwest::Client,
    pub org: String,
    pub sandbox: String,
    /// The server's metrics, for workers a test drives itself.
    pub monitoring: std::sync::Arc<audience_server::monitoring::Monitoring>,
    handle: actix_web::dev::ServerHandle,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// A server on its own database, with settings adjusted by `tweak`.
    pub async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> Self {
        let database_url = fresh_database().await;
        Self::spawn_on(database_url, tweak).await
    }

    /// A server on an existing database (a second process on the same data).
    pub async fn spawn_on(database_url: String, tweak: impl FnOnce(&mut Settings)) -> Self {
        if std::env::var_os("TEST_LOG").is_some() {
            audience_server::telemetry::init("info", audience_server::config::LogFormat::Text);
        }
        let mut settings = Settings::for_database(&database_url);
        settings.http_workers = Some(1);
        settings.db_pool_size = 4;
        tweak(&mut settings);
        let pool = storage::connect(&database_url, 2, &DbTimeouts::none())
            .await
            .unwrap();
        let server_pool = storage::connect(&database_url, 4, &settings.db_timeouts)
            .await
            .unwrap();
        let app = Application::with_pool(settings, server_pool, None).expect("the server builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        let handle = app.handle();
        let monitoring = app.monitoring();
        tokio::spawn(app.run_until_stopped());
        TestApp {
            address,
            database_url,
            pool,
            client: reqwest::Client::new(),
            org: ORG.into(),
            sandbox: SANDBOX.into(),
            monitoring,
            handle,
        }
    }

    /// A request with every header the API requires.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.request_with_token(method, path, TOKEN)
    }

    /// A request with every required header and this bearer token.
    pub fn request_with_token(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.address))
            .header("Authorization", format!("Bearer {token}"))
            .header("x-api-key", "test-key")
            .header("x-gw-ims-org-id", &self.org)
            .header("x-sandbox-name", &self.sandbox)
    }

    /// The same server seen from another tenant.
    pub fn as_tenant(&self, org: &str, sandbox: &str) -> TenantView<'_> {
        TenantView {
            app: self,
            org: org.into(),
            sandbox: sandbox.into(),
        }
    }

    pub fn ups(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, &format!("/data/core/ups{path}"))
    }

    pub async fn create_audience(&self, body: &Value) -> Response {
        self.ups(Method::POST, "/audiences")
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Creates an audience that must succeed and returns its body.
    pub async fn created(&self, body: Value) -> Value {
        let res = self.create_audience(&body).await;
        assert_eq!(res.status(), 200, "create failed");
        res.json().await.unwrap()
    }

    pub async fn get_audience(&self, id: &str) -> Response {
        self.ups(Method::GET, &format!("/audiences/{id}"))
            .send()
            .await
            .unwrap()
    }

    pub async fn put_audience(&self, id: &str, body: &Value) -> Response {
        self.ups(Method::PUT, &format!("/audiences/{id}"))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn patch_audience(&self, id: &str, ops: &Value) -> Response {
        self.ups(Method::PATCH, &format!("/audiences/{id}"))
            .json(ops)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete_audience(&self, id: &str) -> Response {
        self.ups(Method::DELETE, &format!("/audiences/{id}"))
            .send()
            .await
            .unwrap()
    }

    pub async fn list(&self, query: &str) -> Response {
        self.ups(Method::GET, &format!("/audiences?{query}"))
            .send()
            .await
            .unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop the server's worker threads so their connections go back before the next test.
        let stop = self.handle.stop(false);
        drop(stop);
    }
}

pub struct TenantView<'a> {
    app: &'a TestApp,
    org: String,
    sandbox: String,
}

impl TenantView<'_> {
    pub fn ups(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, &format!("/data/core/ups{path}"))
    }

    /// A request to any path, with this tenant's headers.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.app
            .client
            .request(method, format!("{}{path}", self.app.address))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .header("x-api-key", "test-key")
            .header("x-gw-ims-org-id", &self.org)
            .header("x-sandbox-name", &self.sandbox)
    }
}

/// Asserts that a response is an error in the service's shape with this status and code, and
/// returns its message.
pub async fn assert_error(res: Response, status: u16, code: &str) -> String {
    let got = res.status().as_u16();
    let request_id = res
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .expect("every response has x-request-id");
    let body: Value = res.json().await.expect("error bodies are JSON");
    assert_eq!(got, status, "status; body: {body}");
    assert_eq!(body["status"], status, "body: {body}");
    assert_eq!(
        body["type"],
        format!("https://ns.adobe.com/aep/errors/{code}"),
        "body: {body}"
    );
    assert_eq!(body["requestId"], request_id.as_str());
    let detail = &body["errors"][status.to_string()][0];
    assert_eq!(detail["code"], code);
    assert_eq!(detail["message"], body["title"]);
    body["title"].as_str().unwrap().to_owned()
}

/// Moves an adjustable clock to 12:00 UTC of the next day: a test that counts by UTC day then has
/// twelve hours before its day ends, whatever the time it runs at.
pub fn to_next_midday(clock: &audience_server::domain::clock::Clock) {
    let now = clock.now();
    let noon = (now.date_naive() + chrono::Days::new(1))
        .and_hms_opt(12, 0, 0)
        .unwrap()
        .and_utc();
    clock.advance(noon - now);
}

/// The seed's platform-generated audience.
pub fn platform_audience() -> Value {
    serde_json::json!({
        "name": "People who ordered in the last 30 days",
        "profileInstanceId": "ups",
        "description": "Last 30 days",
        "type": "SegmentDefinition",
        "expression": {"type": "PQL", "format": "pql/text", "value": "workAddress.country = \"US\""},
        "schema": {"name": "_xdm.context.profile"},
        "labels": ["core/C1"],
        "ttlInDays": 60
    })
}

/// The seed's externally generated audience.
pub fn external_audience() -> Value {
    serde_json::json!({
        "audienceId": "test-external-audience-id",
        "name": "externalAudience",
        "namespace": "aam",
        "description": "Last 30 days",
        "type": "ExternalSegment",
        "originName": "CUSTOM_UPLOAD",
        "lifecycleState": "published",
        "datasetId": "6254cf3c97f8e31b639fb14d",
        "labels": ["core/C1"],
        "linkedAudienceRef": {"flowId": "4685ea90-d2b6-11ec-9d64-0242ac120002"}
    })
}

/// The clean-up of earlier runs' databases drops only databases of a run whose session is gone
/// and to which nobody is connected: not a live run's, not one someone still uses.
#[tokio::test]
async fn only_abandoned_test_databases_are_dropped() {
    let cluster = cluster();
    let mut admin = PgConnection::connect(&cluster.admin_url).await.unwrap();
    let random = || uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let (dead, live) = (format!("1_{}", random()), format!("2_{}", random()));
    let abandoned = format!("audtest_{dead}_tpl");
    let in_use = format!("audtest_{dead}_0");
    let alive = format!("audtest_{live}_tpl");
    for db in [&abandoned, &in_use, &alive] {
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\"")))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    // A run that is alive (its session open, maybe on another machine), and a connection to a
    // dead run's database.
    let options: PgConnectOptions = cluster.admin_url.parse().unwrap();
    let session =
        PgConnection::connect_with(&options.application_name(&format!("{RUN_SESSION}{live}")))
            .await
            .unwrap();
    let user = PgConnection::connect(&with_database(&cluster.admin_url, &in_use))
        .await
        .unwrap();
    drop_abandoned_databases(&mut admin).await;
    let exists = |db: String| {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
        )
        .bind(db)
    };
    assert!(!exists(abandoned.clone())
        .fetch_one(&mut admin)
        .await
        .unwrap());
    assert!(exists(in_use.clone()).fetch_one(&mut admin).await.unwrap());
    assert!(exists(alive.clone()).fetch_one(&mut admin).await.unwrap());
    // Once the run's session and the connection are gone, both go.
    session.close().await.unwrap();
    user.close().await.unwrap();
    // The server notices a closed session at once, but let it finish with the backend.
    for _ in 0..50 {
        drop_abandoned_databases(&mut admin).await;
        let left = exists(in_use.clone()).fetch_one(&mut admin).await.unwrap()
            || exists(alive.clone()).fetch_one(&mut admin).await.unwrap();
        if !left {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!exists(in_use).fetch_one(&mut admin).await.unwrap());
    assert!(!exists(alive).fetch_one(&mut admin).await.unwrap());
    // This run's own databases are never taken for abandoned.
    assert!(exists(cluster.template.clone())
        .fetch_one(&mut admin)
        .await
        .unwrap());
    assert_eq!(run_of(&cluster.template), Some(cluster.run.as_str()));
    assert_eq!(run_of("audtest_tpl_123"), None);
    assert_eq!(run_of("audtest_123_4"), None);
}
