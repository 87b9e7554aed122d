//! The fleet test: three server processes (the built binary, workers on) on one private
//! PostgreSQL cluster, directly or through pgbouncer in transaction-pooling mode, under a load of
//! creates, conditional PATCHes on shared audiences, bulk-gets, lists and 30 ingestion runs over
//! three tenants. Meanwhile one replica is killed with SIGKILL, another gets SIGTERM and is started
//! again, and PostgreSQL is restarted. Then every acknowledged write, every PATCH, every run and
//! every 5xx is checked, and the results are printed.
//!
//! It starts its own cluster (initdb and pg_ctl from the PostgreSQL 15 binaries, as the `postgres`
//! account when run as root), so it never touches a shared one. Run by `.ci/run`:
//!
//! ```sh
//! cargo test --test fleet -- --ignored --nocapture --test-threads=1
//! ```

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    fmt::Write as _,
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime},
};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

const BIN: &str = env!("CARGO_BIN_EXE_audience-server");
const REPLICAS: usize = 3;
const ORG_A: &str = "1BD6382559DF0C130A49422D@AdobeOrg";
const ORG_B: &str = "5A2E0F1B62C3D4E5F6A7B8C9@AdobeOrg";
/// Load clients issuing UPS calls.
const CLIENTS: usize = 10;
/// Audiences every client PATCHes (conditionally).
const SHARED: usize = 10;
/// External audiences per tenant; each gets two runs: 3 tenants x 5 x 2 = 30 runs.
const AUDIENCES_PER_TENANT: usize = 5;
const RUNS_PER_AUDIENCE: usize = 2;
/// The session timeouts the servers ask for in their startup packet (the defaults of
/// `DB_STATEMENT_TIMEOUT_MS`, `DB_LOCK_TIMEOUT_MS`, `DB_IDLE_IN_TRANSACTION_TIMEOUT_MS`), set by
/// pgbouncer on its server connections instead.
const PGBOUNCER_TIMEOUTS: &str = "SET statement_timeout = 10000; SET lock_timeout = 3000; \
     SET idle_in_transaction_session_timeout = 15000";
/// How long after PostgreSQL is back every replica must serve again.
const RECOVERY_LIMIT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Tenant {
    org: &'static str,
    sandbox: &'static str,
}

const TENANTS: [Tenant; 3] = [
    Tenant {
        org: ORG_A,
        sandbox: "fleet-one",
    },
    Tenant {
        org: ORG_A,
        sandbox: "fleet-two",
    },
    Tenant {
        org: ORG_B,
        sandbox: "prod",
    },
];

// ------------------------------------------------------------------------------------------------
// The private PostgreSQL cluster, pgbouncer and the replicas.

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The uid and gid of `postgres` when running as root (initdb refuses root).
fn postgres_account() -> Option<(u32, u32)> {
    let id = |args: &[&str]| {
        let out = Command::new("id").args(args).output().ok()?;
        String::from_utf8(out.stdout)
            .ok()?
            .trim()
            .parse::<u32>()
            .ok()
    };
    if id(&["-u"])? != 0 {
        return None;
    }
    Some((id(&["-u", "postgres"])?, id(&["-g", "postgres"])?))
}

fn pg_bindir() -> PathBuf {
    let preferred = PathBuf::from("/usr/lib/postgresql/15/bin");
    if preferred.join("initdb").exists() {
        return preferred;
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server binaries are installed (/usr/lib/postgresql/*/bin)")
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

fn run_as(account: Option<(u32, u32)>, program: &Path, args: &[&str]) {
    let mut cmd = Command::new(program);
    cmd.args(args).stdout(Stdio::null());
    if let Some((uid, gid)) = account {
        cmd.uid(uid).gid(gid);
    }
    let status = cmd.status().unwrap_or_else(|e| panic!("{program:?}: {e}"));
    assert!(status.success(), "{program:?} {args:?} failed");
}

fn chown(path: &Path, account: Option<(u32, u32)>) {
    if let Some((uid, gid)) = account {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
}

struct Cluster {
    dir: PathBuf,
    bindir: PathBuf,
    port: u16,
    account: Option<(u32, u32)>,
}

impl Cluster {
    fn start(root: &Path) -> Self {
        let dir = root.join("pg");
        std::fs::create_dir_all(&dir).unwrap();
        let account = postgres_account();
        chown(root, account);
        chown(&dir, account);
        let bindir = pg_bindir();
        run_as(
            account,
            &bindir.join("initdb"),
            &[
                "-D",
                dir.join("data").to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
        );
        let cluster = Cluster {
            dir,
            bindir,
            port: free_port(),
            account,
        };
        cluster.pg_ctl("start");
        cluster
    }

    fn pg_ctl(&self, action: &str) {
        let data = self.dir.join("data");
        let log = self.dir.join("postgres.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let mut args = vec!["-D", data.to_str().unwrap(), "-w", "-t", "60"];
        if action == "stop" {
            args.extend(["-m", "fast"]);
        } else {
            args.extend(["-l", log.to_str().unwrap(), "-o", &options]);
        }
        args.push(action);
        run_as(self.account, &self.bindir.join("pg_ctl"), &args);
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let mut cmd = Command::new(self.bindir.join("pg_ctl"));
        cmd.args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = self.account {
            cmd.uid(uid).gid(gid);
        }
        let _ = cmd.status();
    }
}

/// pgbouncer in front of the cluster.
struct Bouncer {
    child: Child,
    port: u16,
}

impl Bouncer {
    /// The pool mode: `FLEET_PGBOUNCER_MODE`, `transaction` unless set. Transaction pooling needs
    /// pgbouncer 1.21 or later (docs/OPERATIONS.md, "Behind pgbouncer").
    fn mode() -> &'static str {
        match std::env::var("FLEET_PGBOUNCER_MODE").as_deref() {
            Ok("transaction") | Err(_) => "transaction",
            Ok("session") => "session",
            Ok(other) => panic!("FLEET_PGBOUNCER_MODE must be session or transaction, not {other}"),
        }
    }

    fn start(root: &Path, cluster: &Cluster) -> Self {
        let mode = Self::mode();
        let program = std::env::var("FLEET_PGBOUNCER")
            .ok()
            .or_else(|| {
                ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
                    .into_iter()
                    .find(|p| Path::new(p).exists())
                    .map(str::to_owned)
            })
            .expect("pgbouncer is installed (scripts/fleet-test.sh installs Debian's package)");
        let version = Command::new(&program)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let numbers: Vec<u32> = version
            .split_whitespace()
            .nth(1)
            .unwrap_or("0")
            .split('.')
            .filter_map(|n| n.parse().ok())
            .collect();
        assert!(
            mode == "session" || numbers[..] >= [1, 21][..],
            "transaction pooling needs pgbouncer 1.21 or later, {program} is {version:?}: \
             run scripts/fleet-test.sh (it builds one) or set FLEET_PGBOUNCER"
        );
        // pgbouncer refuses the `options` startup parameter the server sends its session timeouts
        // in, so it is ignored and pgbouncer sets the same timeouts on each server connection it
        // opens (docs/OPERATIONS.md, "Behind pgbouncer").
        // pgbouncer 1.21+ keeps prepared statements across the server connections it hands out.
        let prepared = if mode == "transaction" {
            "max_prepared_statements = 200\n"
        } else {
            ""
        };
        let port = free_port();
        let dir = root.join("pgbouncer");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").unwrap();
        let config = format!(
            "[databases]\n\
             fleet = host=127.0.0.1 port={pg} dbname=fleet connect_query='{timeouts}'\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {dir}/users.txt\n\
             pool_mode = {mode}\n\
             default_pool_size = 40\n\
             max_client_conn = 500\n\
             ignore_startup_parameters = extra_float_digits, options\n\
             server_login_retry = 1\n\
             query_wait_timeout = 10\n\
             logfile = {dir}/pgbouncer.log\n\
             {prepared}",
            pg = cluster.port,
            dir = dir.display(),
            timeouts = PGBOUNCER_TIMEOUTS,
        );
        std::fs::write(dir.join("pgbouncer.ini"), config).unwrap();
        chown(&dir, cluster.account);
        for f in ["users.txt", "pgbouncer.ini"] {
            chown(&dir.join(f), cluster.account);
        }
        let mut cmd = Command::new(program);
        cmd.arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = cluster.account {
            cmd.uid(uid).gid(gid);
        }
        let child = cmd.spawn().expect("pgbouncer starts");
        Bouncer { child, port }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/fleet", self.port)
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Replica {
    port: u16,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Replica {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(BIN)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("PORT", self.port.to_string())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the server binary starts");
        self.child = Some(child);
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn signal(&self, sig: &str) {
        let pid = self.pid().expect("a running replica").to_string();
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }

    /// Waits for the process to end; its exit status, or None after `limit`.
    fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn wait_ready(client: &reqwest::Client, base: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(res) = client.get(format!("{base}/ready")).send().await {
            if res.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{base} did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ------------------------------------------------------------------------------------------------
// Landing files: the ONE place that puts a run's source where the servers read it.

/// Puts `content` where the servers read `<cloud>/<path>` for `tenant`'s runs: an upload into the
/// tenant's landing zone through the Azure Blob API, the way a client fills it. The zone's
/// credentials come from any replica; the blob is sent to the replicas in turn until one stores it
/// (one may be down, or PostgreSQL restarting).
async fn place_source_file(fleet: &Fleet, tenant: Tenant, cloud: &str, path: &str, content: &[u8]) {
    const CREDENTIALS: &str =
        "/data/foundation/connectors/landingzone/credentials?type=user_drop_zone";
    let creds = fleet.read(tenant, CREDENTIALS, "zone credentials").await;
    assert_eq!(creds.status, StatusCode::OK, "credentials: {}", creds.body);
    let token = creds.body["SASToken"].as_str().unwrap().to_owned();
    let sas_uri = creds.body["SASUri"].as_str().unwrap();
    let container = reqwest::Url::parse(sas_uri).unwrap().path().to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    for replica in 0.. {
        let url = format!(
            "{}{container}/{cloud}/{path}?{token}",
            fleet.bases[replica % REPLICAS]
        );
        let sent = fleet
            .client
            .put(url)
            .header("x-ms-blob-type", "BlockBlob")
            .body(content.to_vec())
            .send()
            .await;
        if let Ok(res) = sent {
            if res.status() == StatusCode::CREATED {
                return;
            }
            let status = res.status();
            assert!(
                status == StatusCode::SERVICE_UNAVAILABLE,
                "upload of {cloud}/{path}: {status} {}",
                res.text().await.unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no replica stored {cloud}/{path}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ------------------------------------------------------------------------------------------------
// Requests, and the record of every answer.

#[derive(Debug, Clone)]
struct Answer {
    at: Instant,
    status: Option<u16>,
    retry_after: bool,
    what: &'static str,
}

struct Fleet {
    client: reqwest::Client,
    bases: Vec<String>,
    answers: Mutex<Vec<Answer>>,
    started: Instant,
}

struct Reply {
    status: StatusCode,
    etag: Option<String>,
    body: Value,
}

impl Fleet {
    /// One request to one replica; `None` when the replica could not be reached.
    #[allow(clippy::too_many_arguments)]
    async fn call(
        &self,
        replica: usize,
        tenant: Tenant,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
        what: &'static str,
    ) -> Option<Reply> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.bases[replica % REPLICAS]))
            .header("Authorization", "Bearer fleet-token")
            .header("x-api-key", "fleet")
            .header("x-gw-ims-org-id", tenant.org)
            .header("x-sandbox-name", tenant.sandbox);
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(etag) = if_match {
            req = req.header("If-Match", etag);
        }
        let result = req.send().await;
        let at = Instant::now();
        let reply = match result {
            Ok(res) => {
                let status = res.status();
                let retry_after = res.headers().contains_key("retry-after");
                let etag = res
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let text = res.text().await.unwrap_or_default();
                let body = serde_json::from_str(&text).unwrap_or(Value::Null);
                self.answers.lock().unwrap().push(Answer {
                    at,
                    status: Some(status.as_u16()),
                    retry_after,
                    what,
                });
                Some(Reply { status, etag, body })
            }
            Err(_) => {
                self.answers.lock().unwrap().push(Answer {
                    at,
                    status: None,
                    retry_after: false,
                    what,
                });
                None
            }
        };
        reply
    }

    /// Retries a read on the replicas in turn until one answers something other than 503.
    async fn read(&self, tenant: Tenant, path: &str, what: &'static str) -> Reply {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut replica = 0;
        loop {
            if let Some(r) = self
                .call(replica, tenant, Method::GET, path, None, None, what)
                .await
            {
                if r.status != StatusCode::SERVICE_UNAVAILABLE {
                    return r;
                }
            }
            assert!(Instant::now() < deadline, "no replica answered GET {path}");
            replica += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn elapsed(&self, at: Instant) -> f64 {
        at.duration_since(self.started).as_secs_f64()
    }
}

// ------------------------------------------------------------------------------------------------
// The UPS load.

/// An acknowledged create: its tenant, name and description.
type Written = (Tenant, String, String);

#[derive(Default)]
struct Ledger {
    /// Creates answered 200: id -> what was written.
    created: HashMap<String, Written>,
    /// Label a PATCH added -> the shared audience it was for.
    patch_ok: HashMap<String, String>,
    patch_412: HashMap<String, String>,
    patch_unknown: HashMap<String, String>,
    bulk_gets: usize,
    lists: usize,
    read_problems: Vec<String>,
}

async fn client_loop(
    fleet: Arc<Fleet>,
    ledger: Arc<Mutex<Ledger>>,
    shared: Arc<Vec<String>>,
    client: usize,
    stop: Arc<AtomicBool>,
) {
    let mut n = 0usize;
    let owner = TENANTS[0];
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let replica = client + n;
        let pick = (client * 7 + n * 13) % 100;
        if pick < 30 {
            let tenant = TENANTS[n % TENANTS.len()];
            let name = format!("fleet c{client} n{n}");
            let description = format!("written by client {client}, request {n}");
            let body =
                json!({"name": name, "description": description, "labels": [format!("c{client}")]});
            let reply = fleet
                .call(
                    replica,
                    tenant,
                    Method::POST,
                    "/data/core/ups/audiences",
                    Some(&body),
                    None,
                    "create",
                )
                .await;
            if let Some(r) = reply.filter(|r| r.status == 200) {
                let id = r.body["id"].as_str().unwrap().to_owned();
                ledger
                    .lock()
                    .unwrap()
                    .created
                    .insert(id, (tenant, name, description));
            }
        } else if pick < 70 {
            let target = &shared[(client + n * 3) % shared.len()];
            let path = format!("/data/core/ups/audiences/{target}");
            let Some(current) = fleet
                .call(replica, owner, Method::GET, &path, None, None, "get")
                .await
            else {
                continue;
            };
            let Some(etag) = current.etag.filter(|_| current.status == 200) else {
                continue;
            };
            let label = format!("p-{client}-{n}");
            let ops = json!([{"op": "add", "path": "/labels/-", "value": label}]);
            let reply = fleet
                .call(
                    replica + 1,
                    owner,
                    Method::PATCH,
                    &path,
                    Some(&ops),
                    Some(&etag),
                    "patch",
                )
                .await;
            let mut ledger = ledger.lock().unwrap();
            let target = target.clone();
            match reply.map(|r| r.status.as_u16()) {
                Some(200) => ledger.patch_ok.insert(label, target),
                Some(412) => ledger.patch_412.insert(label, target),
                _ => ledger.patch_unknown.insert(label, target),
            };
        } else if pick < 85 {
            let ids: Vec<Value> = (0..1 + n % 8)
                .map(|i| json!({"id": shared[(n + i) % shared.len()]}))
                .collect();
            let wanted: BTreeSet<String> = ids
                .iter()
                .map(|v| v["id"].as_str().unwrap().to_owned())
                .collect();
            let reply = fleet
                .call(
                    replica,
                    owner,
                    Method::POST,
                    "/data/core/ups/audiences/bulk-get",
                    Some(&json!({ "ids": ids })),
                    None,
                    "bulk-get",
                )
                .await;
            if let Some(r) = reply {
                let mut ledger = ledger.lock().unwrap();
                if r.status == 207 {
                    ledger.bulk_gets += 1;
                    let found: BTreeSet<String> = r.body["results"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .filter(|(_, v)| v["id"].is_string())
                                .map(|(k, _)| k.clone())
                                .collect()
                        })
                        .unwrap_or_default();
                    if found != wanted {
                        ledger
                            .read_problems
                            .push(format!("bulk-get {wanted:?} found {found:?}"));
                    }
                }
            }
        } else {
            let tenant = TENANTS[n % TENANTS.len()];
            let query = if n.is_multiple_of(2) {
                "/data/core/ups/audiences?limit=7&sort=name:asc"
            } else {
                "/data/core/ups/audiences?limit=3&start=2&sort=updateTime:desc"
            };
            let reply = fleet
                .call(replica, tenant, Method::GET, query, None, None, "list")
                .await;
            if let Some(r) = reply {
                if r.status == 200 {
                    let mut ledger = ledger.lock().unwrap();
                    ledger.lists += 1;
                    if !r.body["children"].is_array() {
                        ledger.read_problems.push(format!("list body {}", r.body));
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Ingestion: external audiences, their files and runs.

/// One run's file and what it must come to.
struct Source {
    csv: String,
    read: u64,
    good: u64,
    bad: u64,
    members: BTreeSet<String>,
}

/// A CSV of `rows` rows for the tutorial's fields: some identities repeat, every 97th row has a
/// bad number and every 89th an empty identity.
fn make_source(seed: usize, rows: usize) -> Source {
    let mut csv = String::from("ppid,list_id,delete,process_consent\n");
    let (mut good, mut bad) = (0, 0);
    let mut members = BTreeSet::new();
    for i in 0..rows {
        let identity = format!("s{seed}-u{}@example.com", i % (rows - rows / 10));
        if i % 97 == 5 {
            writeln!(csv, "{identity},l,not-a-number,yes").unwrap();
            bad += 1;
        } else if i % 89 == 7 {
            writeln!(csv, ",l,1,yes").unwrap();
            bad += 1;
        } else {
            writeln!(csv, "{identity},l,{},yes", i % 2).unwrap();
            good += 1;
            members.insert(identity);
        }
    }
    Source {
        csv,
        read: rows as u64,
        good,
        bad,
        members,
    }
}

#[derive(Debug, Default, Clone)]
struct RunResult {
    tenant: String,
    audience: String,
    run_id: String,
    problems: Vec<String>,
    /// Seconds since the test started: when the run was started and when it was seen ended.
    span: (f64, f64),
}

/// Creates one external audience and carries out its runs one after the other, checking each.
async fn ingestion_flow(
    fleet: Arc<Fleet>,
    db_url: String,
    tenant: Tenant,
    index: usize,
) -> Vec<RunResult> {
    let name = format!("fleet external {index}");
    let path = format!("fleet/{}/{index}.csv", tenant.sandbox);
    let body = json!({
        "name": name,
        "fields": [
            {"name": "ppid", "type": "string", "identityNs": "email"},
            {"name": "list_id", "type": "string"},
            {"name": "delete", "type": "number"},
            {"name": "process_consent", "type": "string"}
        ],
        "sourceSpec": {"params": {"path": path, "type": "file", "sourceType": "Cloud Storage", "cloudType": "DLZ"}},
        "ttlInDays": 30, "audienceType": "people", "originName": "CUSTOM_UPLOAD"
    });
    // Staggered, so that runs are in flight at every fault.
    tokio::time::sleep(Duration::from_millis(700 * index as u64)).await;
    let audience = create_external(&fleet, tenant, &name, &body, index).await;
    let mut results = Vec::new();
    for run in 0..RUNS_PER_AUDIENCE {
        // Sizes from 5,000 to 115,000 rows, so runs are in the middle of a stage at the faults.
        let rows = 5_000 + ((index * 7 + run * 11) % 12) * 10_000;
        let source = make_source(index * 10 + run, rows);
        place_source_file(&fleet, tenant, "DLZ", &path, source.csv.as_bytes()).await;
        let begun = fleet.elapsed(Instant::now());
        let run_id = start_run(&fleet, tenant, &audience, index).await;
        let done = wait_run(&fleet, tenant, &audience, &run_id).await;
        let span = (begun, fleet.elapsed(Instant::now()));
        let mut problems = Vec::new();
        check_run(&done, &source, &mut problems);
        let members = members_of(&db_url, &audience).await;
        if members != source.members {
            problems.push(format!(
                "members: {} stored, {} expected",
                members.len(),
                source.members.len()
            ));
        }
        results.push(RunResult {
            tenant: tenant.sandbox.into(),
            audience: audience.clone(),
            run_id,
            problems,
            span,
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    results
}

/// The identities stored for an audience, read on a connection of its own (PostgreSQL restarts
/// during the test).
async fn members_of(db_url: &str, audience: &str) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let read = async {
            let mut db = PgConnection::connect(db_url).await?;
            // The audience's members are the rows of the set it points at (older sets wait for
            // the maintenance sweep).
            sqlx::query_scalar::<_, String>(
                "SELECT m.identity FROM ais_members m JOIN external_audiences a
                     ON a.id = m.audience_id AND a.members_run_id = m.run_id
                 WHERE a.id = $1::uuid",
            )
            .bind(audience)
            .fetch_all(&mut db)
            .await
        };
        match read.await {
            Ok(rows) => return rows.into_iter().collect(),
            Err(e) => assert!(Instant::now() < deadline, "cannot read members: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn check_run(run: &Value, source: &Source, problems: &mut Vec<String>) {
    let expect = [
        ("status", &run["status"], json!("SUCCESS")),
        (
            "DATASET_INGEST",
            &run["details"][0]["status"],
            json!("SUCCESS"),
        ),
        (
            "recordsRead",
            &run["details"][0]["recordsRead"],
            json!(source.read),
        ),
        (
            "recordsSucceeded",
            &run["details"][0]["recordsSucceeded"],
            json!(source.good),
        ),
        (
            "recordsFailed",
            &run["details"][0]["recordsFailed"],
            json!(source.bad),
        ),
        (
            "PROFILE_STORE_INGEST",
            &run["details"][1]["status"],
            json!("SUCCESS"),
        ),
        (
            "recordsReceived",
            &run["details"][1]["recordsReceived"],
            json!(source.good),
        ),
        (
            "profilesStored",
            &run["details"][1]["profilesStored"],
            json!(source.members.len()),
        ),
        (
            "duplicatesMerged",
            &run["details"][1]["duplicatesMerged"],
            json!(source.good - source.members.len() as u64),
        ),
    ];
    for (what, got, want) in expect {
        if *got != want {
            problems.push(format!("{what}: {got}, expected {want}"));
        }
    }
}

/// Creates the external audience (again on an unknown outcome) and waits for its operation; the
/// audience id. A 409 after an unknown outcome means the first attempt went through.
async fn create_external(
    fleet: &Fleet,
    tenant: Tenant,
    name: &str,
    body: &Value,
    index: usize,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut replica = index;
    let operation = loop {
        assert!(Instant::now() < deadline, "cannot create {name}");
        replica += 1;
        let reply = fleet
            .call(
                replica,
                tenant,
                Method::POST,
                "/data/core/ais/external-audience/",
                Some(body),
                None,
                "ais-create",
            )
            .await;
        match reply {
            Some(r) if r.status == 202 => {
                break Some(r.body["operationId"].as_str().unwrap().to_owned())
            }
            Some(r) if r.status == 409 => break None,
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    };
    loop {
        assert!(
            Instant::now() < deadline,
            "the creation of {name} never ended"
        );
        if let Some(op) = &operation {
            let r = fleet
                .read(
                    tenant,
                    &format!("/data/core/ais/external-audience/operations/{op}"),
                    "ais-operation",
                )
                .await;
            match r.body["status"].as_str() {
                Some("SUCCESS") => return r.body["audienceId"].as_str().unwrap().to_owned(),
                Some("PROCESSING") => {}
                other => panic!("the creation of {name} ended {other:?}: {}", r.body),
            }
        } else {
            let query = format!(
                "/data/core/ups/audiences?property=name=={}",
                name.replace(' ', "+")
            );
            let r = fleet.read(tenant, &query, "list").await;
            if let Some(id) = r.body["children"][0]["id"].as_str() {
                return id.to_owned();
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Starts a run (again on an unknown outcome: a 422 then means one is in progress, found in the
/// list); its id.
async fn start_run(fleet: &Fleet, tenant: Tenant, audience: &str, index: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    let path = format!("/data/core/ais/external-audience/{audience}/runs");
    let mut replica = index;
    loop {
        assert!(
            Instant::now() < deadline,
            "cannot start a run of {audience}"
        );
        replica += 1;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let body = json!({"dataFilterStartTime": 0, "dataFilterEndTime": now + 5});
        let reply = fleet
            .call(
                replica,
                tenant,
                Method::POST,
                &path,
                Some(&body),
                None,
                "run-start",
            )
            .await;
        match reply {
            Some(r) if r.status == 200 => return r.body["runId"].as_str().unwrap().to_owned(),
            Some(r) if r.status == 422 => {
                let runs = fleet.read(tenant, &path, "run-list").await;
                let processing = runs.body["runs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["status"] == "PROCESSING");
                if let Some(run) = processing {
                    return run["runId"].as_str().unwrap().to_owned();
                }
                panic!("a run of {audience} was refused: {}", r.body);
            }
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

async fn wait_run(fleet: &Fleet, tenant: Tenant, audience: &str, run: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(240);
    let path = format!("/data/core/ais/external-audience/{audience}/runs/{run}");
    loop {
        let r = fleet.read(tenant, &path, "run-get").await;
        if r.status == 200 && r.body["status"] != "PROCESSING" {
            return r.body;
        }
        assert!(
            Instant::now() < deadline,
            "run {run} still processing: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// ------------------------------------------------------------------------------------------------
// The test.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path2Db {
    Direct,
    PgBouncer,
}

struct Report {
    lines: Vec<(bool, String)>,
}

impl Report {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        self.lines.push((ok, what.into()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "starts its own PostgreSQL and three servers; run by .ci/run (scripts/fleet-test.sh)"]
async fn fleet_direct() {
    fleet(Path2Db::Direct).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "starts its own PostgreSQL, pgbouncer and three servers; run by .ci/run (scripts/fleet-test.sh)"]
async fn fleet_through_pgbouncer() {
    fleet(Path2Db::PgBouncer).await;
}

async fn fleet(via: Path2Db) {
    let started = Instant::now();
    let label = match via {
        Path2Db::Direct => "direct".to_owned(),
        Path2Db::PgBouncer => format!("through pgbouncer ({} pooling)", Bouncer::mode()),
    };
    let root = std::env::temp_dir().join(format!(
        "audience-fleet-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let cluster = Cluster::start(&root);
    let mut admin = PgConnection::connect(&cluster.url("postgres"))
        .await
        .unwrap();
    sqlx::query("CREATE DATABASE fleet")
        .execute(&mut admin)
        .await
        .unwrap();
    drop(admin);
    let direct_url = cluster.url("fleet");
    let bouncer = (via == Path2Db::PgBouncer).then(|| Bouncer::start(&root, &cluster));
    let landing = root.join("landing");
    std::fs::create_dir_all(&landing).unwrap();

    // FLEET_LOG_LEVEL=info shows each replica's shutdown phases in its log.
    let log_level = std::env::var("FLEET_LOG_LEVEL").unwrap_or_else(|_| "warn".into());
    let mut common: Vec<(String, String)> = [
        ("HOST", "127.0.0.1"),
        ("LOG_LEVEL", log_level.as_str()),
        ("WORKER_POLL_MS", "100"),
        ("WORKER_LEASE_SECS", "6"),
        ("DB_POOL_SIZE", "6"),
        ("HTTP_WORKERS", "2"),
        ("SHUTDOWN_GRACE_SECS", "15"),
        ("RUNS_PER_SANDBOX_PER_DAY", "1000"),
        // Rows a killed replica had staged are swept by the maintenance pass; often, here.
        ("MAINTENANCE_INTERVAL_SECS", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    common.push(("LANDING_DIR".into(), landing.display().to_string()));
    match &bouncer {
        None => common.push(("DATABASE_URL".into(), direct_url.clone())),
        Some(b) => {
            // Migrations take a session advisory lock: they run on a direct connection.
            let status = Command::new(BIN)
                .arg("migrate")
                .env("DATABASE_URL", &direct_url)
                .env("LOG_LEVEL", "warn")
                .status()
                .unwrap();
            assert!(status.success(), "audience-server migrate failed");
            common.push(("DATABASE_URL".into(), b.url()));
            common.push(("MIGRATE_ON_START".into(), "false".into()));
            if let Ok(cache) = std::env::var("FLEET_DB_STATEMENT_CACHE") {
                common.push(("DB_STATEMENT_CACHE".into(), cache));
            }
        }
    }
    let mut replicas: Vec<Replica> = (0..REPLICAS)
        .map(|i| Replica {
            port: free_port(),
            env: common.clone(),
            log: root.join(format!("replica-{i}.log")),
            child: None,
        })
        .collect();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    // The first one migrates; then the others start.
    replicas[0].start();
    wait_ready(&client, &replicas[0].base(), Duration::from_secs(60)).await;
    for r in replicas.iter_mut().skip(1) {
        r.start();
    }
    for r in &replicas {
        wait_ready(&client, &r.base(), Duration::from_secs(60)).await;
    }
    let fleet = Arc::new(Fleet {
        client: client.clone(),
        bases: replicas.iter().map(Replica::base).collect(),
        answers: Mutex::new(Vec::new()),
        started,
    });

    // The shared audiences every client PATCHes.
    let mut shared = Vec::new();
    for i in 0..SHARED {
        let body = json!({"name": format!("shared {i}"), "labels": []});
        let r = fleet
            .call(
                i,
                TENANTS[0],
                Method::POST,
                "/data/core/ups/audiences",
                Some(&body),
                None,
                "create",
            )
            .await
            .expect("a replica answers");
        assert_eq!(r.status, 200, "{}", r.body);
        shared.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let shared = Arc::new(shared);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let load_started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            tokio::spawn(client_loop(
                fleet.clone(),
                ledger.clone(),
                shared.clone(),
                c,
                stop.clone(),
            ))
        })
        .collect();
    let flows: Vec<_> = TENANTS
        .iter()
        .flat_map(|t| (0..AUDIENCES_PER_TENANT).map(move |i| (*t, i)))
        .enumerate()
        .map(|(n, (tenant, _))| {
            tokio::spawn(ingestion_flow(fleet.clone(), direct_url.clone(), tenant, n))
        })
        .collect();

    // The faults.
    let mut timeline = Vec::new();
    let mut report = Report { lines: Vec::new() };
    let note = |timeline: &mut Vec<String>, what: String| {
        let line = format!("{:6.1}s  {what}", started.elapsed().as_secs_f64());
        println!("fleet: {line}");
        timeline.push(line);
    };
    let mut watch = PgConnection::connect(&direct_url).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pid = replicas[1].pid().unwrap();
    let killed_jobs = wait_holding(&mut watch, pid).await;
    note(
        &mut timeline,
        format!("kill -9 replica-1, holding job(s) {killed_jobs:?}"),
    );
    let kill_at = Instant::now();
    replicas[1].signal("-KILL");
    replicas[1].wait(Duration::from_secs(5));
    let lease_ran_out = until_let_go(&mut watch, pid, &killed_jobs, kill_at).await;
    note(
        &mut timeline,
        format!(
            "replica-1's jobs free again after {:.1}s (its lease)",
            lease_ran_out.as_secs_f64()
        ),
    );
    report.check(
        !killed_jobs.is_empty(),
        format!("kill -9 hit replica-1 while it held {} job(s); free for others {:.1}s later (the lease, 6s; sooner when its step had just committed)", killed_jobs.len(), lease_ran_out.as_secs_f64()),
    );

    let pid = replicas[2].pid().unwrap();
    let handed_jobs = wait_holding(&mut watch, pid).await;
    note(
        &mut timeline,
        format!("SIGTERM replica-2, holding job(s) {handed_jobs:?}"),
    );
    let term_at = Instant::now();
    replicas[2].signal("-TERM");
    let handed_back = until_let_go(&mut watch, pid, &handed_jobs, term_at).await;
    let exit = replicas[2].wait(Duration::from_secs(30));
    let drained_in = term_at.elapsed();
    report.check(
        !handed_jobs.is_empty() && handed_back < Duration::from_secs(2),
        format!(
            "SIGTERM: replica-2 handed its {} job(s) back {:.2}s after the signal (lease 6s)",
            handed_jobs.len(),
            handed_back.as_secs_f64()
        ),
    );
    note(
        &mut timeline,
        format!(
            "replica-2 exited {exit:?} after {:.1}s; started again",
            drained_in.as_secs_f64()
        ),
    );
    report.check(
        exit.is_some_and(|s| s.success()),
        format!(
            "SIGTERM: replica-2 drained and exited cleanly in {:.1}s ({exit:?})",
            drained_in.as_secs_f64()
        ),
    );
    replicas[2].start();
    wait_ready(&client, &replicas[2].base(), Duration::from_secs(60)).await;
    note(&mut timeline, "replica-2 ready again".into());

    tokio::time::sleep(Duration::from_secs(3)).await;
    replicas[1].start();
    wait_ready(&client, &replicas[1].base(), Duration::from_secs(60)).await;
    note(
        &mut timeline,
        "replica-1 started again after its kill, ready".into(),
    );

    tokio::time::sleep(Duration::from_secs(3)).await;
    let pids: Vec<Option<u32>> = replicas.iter().map(Replica::pid).collect();
    let running: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ais_jobs WHERE locked_until > now() AND done_at IS NULL",
    )
    .fetch_one(&mut watch)
    .await
    .unwrap();
    drop(watch);
    note(&mut timeline, format!("{running} job(s) running"));
    let down_at = Instant::now();
    note(&mut timeline, "PostgreSQL stopping (fast)".into());
    cluster.pg_ctl("stop");
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.pg_ctl("start");
    let up_at = Instant::now();
    note(
        &mut timeline,
        "PostgreSQL accepting connections again".into(),
    );
    // Every replica serves an API call again, without a restart.
    let recoveries = futures_recoveries(&fleet, up_at).await;
    for (i, took) in recoveries.iter().enumerate() {
        let same = replicas[i].pid() == pids[i];
        report.check(
            took.is_some_and(|t| t <= RECOVERY_LIMIT) && same,
            format!(
                "replica-{i} served again {} after PostgreSQL came back (limit {}s), same process: {same}",
                took.map_or("never".into(), |t| format!("{:.2}s", t.as_secs_f64())),
                RECOVERY_LIMIT.as_secs()
            ),
        );
    }
    note(&mut timeline, "every replica serves again".into());

    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let load_secs = load_started.elapsed().as_secs_f64();
    note(
        &mut timeline,
        "UPS load stopped; waiting for the runs".into(),
    );
    let mut runs = Vec::new();
    for f in flows {
        runs.extend(f.await.expect("an ingestion flow panicked"));
    }
    note(&mut timeline, "every run ended".into());

    // ---- checks -------------------------------------------------------------------------------
    let ledger = Arc::try_unwrap(ledger).ok().unwrap().into_inner().unwrap();
    // Acknowledged creates: present and as written, in their own tenant only.
    let mut missing = Vec::new();
    let by_tenant: BTreeMap<Tenant, Vec<(&String, &Written)>> =
        ledger.created.iter().fold(BTreeMap::new(), |mut m, e| {
            m.entry(e.1 .0).or_default().push(e);
            m
        });
    for (tenant, entries) in &by_tenant {
        for chunk in entries.chunks(100) {
            let ids: Vec<Value> = chunk.iter().map(|(id, _)| json!({ "id": id })).collect();
            let mut found = Value::Null;
            for attempt in 0..20 {
                if let Some(r) = fleet
                    .call(
                        attempt,
                        *tenant,
                        Method::POST,
                        "/data/core/ups/audiences/bulk-get",
                        Some(&json!({"ids": ids})),
                        None,
                        "final",
                    )
                    .await
                {
                    if r.status == 207 {
                        found = r.body["results"].clone();
                        break;
                    }
                }
            }
            for (id, (_, name, description)) in chunk {
                let a = &found[id.as_str()];
                if a["name"] != json!(name) || a["description"] != json!(description) {
                    missing.push(format!("{id}: {a}"));
                }
            }
        }
    }
    report.check(
        missing.is_empty(),
        format!(
            "{} acknowledged creates present and correct{}",
            ledger.created.len(),
            if missing.is_empty() {
                String::new()
            } else {
                format!("; wrong or missing: {:?}", &missing[..missing.len().min(5)])
            }
        ),
    );
    // PATCHes: every 200 visible, no 412 visible, nothing that was never sent.
    let mut final_labels: HashMap<String, HashSet<String>> = HashMap::new();
    for id in shared.iter() {
        let r = fleet
            .read(
                TENANTS[0],
                &format!("/data/core/ups/audiences/{id}"),
                "final",
            )
            .await;
        let labels = r.body["labels"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        final_labels.insert(id.clone(), labels);
    }
    let lost: Vec<&String> = ledger
        .patch_ok
        .iter()
        .filter(|(label, id)| !final_labels[*id].contains(*label))
        .map(|(l, _)| l)
        .collect();
    let applied_412: Vec<&String> = ledger
        .patch_412
        .iter()
        .filter(|(label, id)| final_labels[*id].contains(*label))
        .map(|(l, _)| l)
        .collect();
    let phantom: Vec<&String> = final_labels
        .iter()
        .flat_map(|(id, labels)| labels.iter().map(move |l| (id, l)))
        .filter(|(id, l)| {
            ledger.patch_ok.get(*l) != Some(id) && ledger.patch_unknown.get(*l) != Some(id)
        })
        .map(|(_, l)| l)
        .collect();
    let unknown_applied = ledger
        .patch_unknown
        .iter()
        .filter(|(l, id)| final_labels[*id].contains(*l))
        .count();
    report.check(
        lost.is_empty() && applied_412.is_empty() && phantom.is_empty() && !ledger.patch_ok.is_empty(),
        format!(
            "conditional PATCHes: {} answered 200 all visible (lost: {lost:?}), {} answered 412 none applied ({applied_412:?}), {} without an answer ({unknown_applied} of them applied), no phantom label ({phantom:?})",
            ledger.patch_ok.len(),
            ledger.patch_412.len(),
            ledger.patch_unknown.len()
        ),
    );
    report.check(
        ledger.read_problems.is_empty(),
        format!(
            "{} bulk-gets found every shared audience, {} lists answered a page{}",
            ledger.bulk_gets,
            ledger.lists,
            if ledger.read_problems.is_empty() {
                String::new()
            } else {
                format!(
                    "; problems: {:?}",
                    &ledger.read_problems[..ledger.read_problems.len().min(5)]
                )
            }
        ),
    );
    // Runs: each SUCCESS with exact counts and members (checked as it ended), exactly once.
    let mut db = PgConnection::connect(&direct_url).await.unwrap();
    let in_flight = |t: f64| {
        runs.iter()
            .filter(|r| r.span.0 <= t && t <= r.span.1)
            .count()
    };
    let at = |i: Instant| fleet.elapsed(i);
    note(
        &mut timeline,
        format!(
            "runs in flight: {} at the kill, {} at the SIGTERM, {} at the PostgreSQL stop; run times {:.1}s to {:.1}s",
            in_flight(at(kill_at)),
            in_flight(at(term_at)),
            in_flight(at(down_at)),
            runs.iter().map(|r| r.span.1 - r.span.0).fold(f64::MAX, f64::min),
            runs.iter().map(|r| r.span.1 - r.span.0).fold(0.0, f64::max),
        ),
    );
    let run_problems: Vec<String> = runs
        .iter()
        .filter(|r| !r.problems.is_empty())
        .map(|r| {
            format!(
                "{} run {} of {}: {:?}",
                r.tenant, r.run_id, r.audience, r.problems
            )
        })
        .collect();
    report.check(
        runs.len() == TENANTS.len() * AUDIENCES_PER_TENANT * RUNS_PER_AUDIENCE
            && run_problems.is_empty(),
        format!(
            "{} runs over {} tenants SUCCESS with exact counts and members{}",
            runs.len(),
            TENANTS.len(),
            if run_problems.is_empty() {
                String::new()
            } else {
                format!("; {run_problems:?}")
            }
        ),
    );
    let (jobs, open_jobs, done_once): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE done_at IS NULL),
                (SELECT count(*) FROM (SELECT target_id FROM ais_jobs WHERE kind = 'ingest'
                                       GROUP BY target_id HAVING count(*) = 1) o)
         FROM ais_jobs WHERE kind = 'ingest'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    // What a killed replica had staged is garbage for the maintenance sweep (every second here):
    // give the surviving workers a few passes.
    let swept_by = Instant::now() + Duration::from_secs(10);
    let (finished_runs, staged) = loop {
        let (finished_runs, staged): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM ais_runs WHERE status = 'SUCCESS'),
                    (SELECT count(*) FROM ais_staged_members)",
        )
        .fetch_one(&mut db)
        .await
        .unwrap();
        if staged == 0 || Instant::now() >= swept_by {
            break (finished_runs, staged);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    report.check(
        jobs == runs.len() as i64 && open_jobs == 0 && done_once == jobs && finished_runs == jobs && staged == 0,
        format!(
            "exactly once: {finished_runs} SUCCESS runs in the database, one job each ({jobs} jobs, {open_jobs} open), {staged} staged rows left"
        ),
    );

    // 5xx: none, except 503 with Retry-After while PostgreSQL was down (and the 5 s after).
    let answers = fleet.answers.lock().unwrap().clone();
    let window = (down_at, up_at + RECOVERY_LIMIT);
    let in_window = |a: &Answer| a.at >= window.0 && a.at <= window.1;
    let bad_outside: Vec<String> = answers
        .iter()
        .filter(|a| a.status.is_some_and(|s| s >= 500) && !in_window(a))
        .map(|a| format!("{} {:?} at {:.1}s", a.what, a.status, fleet.elapsed(a.at)))
        .collect();
    let in_outage: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.status.is_some_and(|s| s >= 500) && in_window(a))
        .collect();
    let not_503: Vec<String> = in_outage
        .iter()
        .filter(|a| a.status != Some(503))
        .map(|a| format!("{} {:?}", a.what, a.status))
        .collect();
    let without_retry_after = in_outage
        .iter()
        .filter(|a| a.status == Some(503) && !a.retry_after)
        .count();
    report.check(
        bad_outside.is_empty(),
        format!(
            "no 5xx outside the database outage{}",
            if bad_outside.is_empty() {
                String::new()
            } else {
                format!(
                    ": {} ({:?})",
                    bad_outside.len(),
                    &bad_outside[..bad_outside.len().min(8)]
                )
            }
        ),
    );
    report.check(
        not_503.is_empty(),
        format!(
            "during the outage every 5xx is a 503: {} 5xx, of them not 503: {} {:?}",
            in_outage.len(),
            not_503.len(),
            &not_503[..not_503.len().min(8)]
        ),
    );
    report.check(
        without_retry_after == 0,
        format!("every 503 carries Retry-After ({without_retry_after} without)"),
    );

    // ---- the printout ---------------------------------------------------------------------------
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for a in &answers {
        let key = a
            .status
            .map_or("no answer (replica down)".into(), |s| s.to_string());
        *by_status.entry(key).or_default() += 1;
    }
    let mut out = String::new();
    writeln!(out, "\n==== fleet test, {label} ====").unwrap();
    writeln!(
        out,
        "{REPLICAS} replicas, {CLIENTS} UPS clients for {load_secs:.0}s, {} answers ({:.0}/s), {} ingestion runs",
        answers.len(),
        answers.len() as f64 / load_secs,
        runs.len()
    )
    .unwrap();
    writeln!(out, "answers by status: {by_status:?}").unwrap();
    let mut other: BTreeMap<(u16, &str), usize> = BTreeMap::new();
    for a in &answers {
        if let Some(s) = a.status.filter(|s| ![200, 202, 207, 412].contains(s)) {
            *other.entry((s, a.what)).or_default() += 1;
        }
    }
    writeln!(out, "other answers by (status, call): {other:?}").unwrap();
    writeln!(out, "timeline:").unwrap();
    for line in &timeline {
        writeln!(out, "  {line}").unwrap();
    }
    writeln!(out, "checks:").unwrap();
    for (ok, line) in &report.lines {
        writeln!(out, "  [{}] {line}", if *ok { "PASS" } else { "FAIL" }).unwrap();
    }
    writeln!(out, "duration: {:.0}s", started.elapsed().as_secs_f64()).unwrap();
    println!("{out}");
    let failed_checks: Vec<&str> = report
        .lines
        .iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, line)| line.as_str())
        .collect();
    let failed = failed_checks.len();
    if failed == 0 {
        let _ = std::fs::remove_dir_all(&root);
    } else {
        println!("logs kept in {}", root.display());
    }
    drop(replicas);
    drop(bouncer);
    drop(cluster);
    // The failed checks again, last: a CI log that keeps only the tail still says what broke.
    assert_eq!(
        failed, 0,
        "{failed} fleet check(s) failed: {failed_checks:#?}; see the printout above"
    );
}

/// Jobs the process `pid` holds under a live lease.
async fn held_by(db: &mut PgConnection, pid: u32) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT id::text FROM ais_jobs
         WHERE locked_by LIKE $1 AND locked_until > now() AND done_at IS NULL",
    )
    .bind(format!("worker-{pid}-%"))
    .fetch_all(db)
    .await
    .unwrap()
}

/// Waits (up to 30 s) until process `pid` holds a job; the jobs it holds then.
async fn wait_holding(db: &mut PgConnection, pid: u32) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let held = held_by(db, pid).await;
        if !held.is_empty() || Instant::now() > deadline {
            return held;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long until process `pid` no longer holds any of `jobs` (its claim handed back, its lease
/// run out, or the job done), measured from `since`.
async fn until_let_go(
    db: &mut PgConnection,
    pid: u32,
    jobs: &[String],
    since: Instant,
) -> Duration {
    loop {
        let held = held_by(db, pid).await;
        if !jobs.iter().any(|j| held.contains(j)) || since.elapsed() > Duration::from_secs(60) {
            return since.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// For each replica, how long after `up_at` it first answered an API call with 200.
async fn futures_recoveries(fleet: &Arc<Fleet>, up_at: Instant) -> Vec<Option<Duration>> {
    let tasks: Vec<_> = (0..REPLICAS)
        .map(|i| {
            let fleet = fleet.clone();
            tokio::spawn(async move {
                let deadline = up_at + Duration::from_secs(30);
                while Instant::now() < deadline {
                    let r = fleet
                        .call(
                            i,
                            TENANTS[0],
                            Method::GET,
                            "/data/core/ups/audiences?limit=1",
                            None,
                            None,
                            "recovery",
                        )
                        .await;
                    if r.is_some_and(|r| r.status == 200) {
                        return Some(up_at.elapsed());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                None
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}
