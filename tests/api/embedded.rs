//! The embedded default: with no DATABASE_URL the binary starts its own PostgreSQL, keeps the data
//! across restarts, and stops it when it stops (also when it is killed).

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_audience-server");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(data_dir: &Path, port: u16, as_user: Option<&str>) -> Child {
    let mut cmd = match as_user {
        // setpriv execs the server itself, so signals reach it and not a wrapper.
        Some(user) => {
            let id = |flag: &str| {
                let out = Command::new("id").args([flag, user]).output().unwrap();
                String::from_utf8(out.stdout).unwrap().trim().to_owned()
            };
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={}", id("-u")),
                &format!("--regid={}", id("-g")),
                "--clear-groups",
                BIN,
            ]);
            c
        }
        None => Command::new(BIN),
    };
    cmd.env_remove("DATABASE_URL")
        .env("DATA_DIR", data_dir)
        .env("PORT", port.to_string())
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the server binary starts")
}

async fn wait_healthy(client: &reqwest::Client, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(res) = client
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
        {
            if res.status() == 200 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the server did not become healthy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn postgres_running_on(data_dir: &Path) -> bool {
    let out = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let pgdata = data_dir.join("pg");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.contains("postgres -D") && l.contains(pgdata.to_str().unwrap()))
}

async fn wait_postgres_gone(data_dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while postgres_running_on(data_dir) {
        assert!(
            Instant::now() < deadline,
            "the embedded PostgreSQL outlived the server"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn signal(child: &Child, sig: &str) {
    Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
}

async fn exercise(as_user: Option<&str>) {
    let dir = std::env::temp_dir().join(format!(
        "audtest-embedded-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    if let Some(user) = as_user {
        Command::new("chown")
            .args([user, dir.to_str().unwrap()])
            .status()
            .unwrap();
    }
    let client = reqwest::Client::new();
    let headers = |rb: reqwest::RequestBuilder| {
        rb.header("Authorization", "Bearer t")
            .header("x-api-key", "k")
            .header("x-gw-ims-org-id", "ORG@AdobeOrg")
            .header("x-sandbox-name", "prod")
    };

    // First start initialises the cluster; an audience is written.
    let port = free_port();
    let mut server = start(&dir, port, as_user);
    wait_healthy(&client, port).await;
    let created: Value =
        headers(client.post(format!("http://127.0.0.1:{port}/data/core/ups/audiences")))
            .json(&json!({"name": "kept"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    // Killed without warning: the kernel stops its PostgreSQL too.
    signal(&server, "-KILL");
    server.wait().unwrap();
    wait_postgres_gone(&dir).await;

    // Started again on the same folder: the data is there.
    let port = free_port();
    let mut server = start(&dir, port, as_user);
    wait_healthy(&client, port).await;
    let res = headers(client.get(format!(
        "http://127.0.0.1:{port}/data/core/ups/audiences/{id}"
    )))
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    // A graceful stop stops PostgreSQL as well.
    signal(&server, "-TERM");
    assert!(server.wait().unwrap().success());
    wait_postgres_gone(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn embedded_postgres_survives_restarts_and_dies_with_the_server() {
    exercise(None).await;
}

/// As root the cluster runs as the `postgres` account; a normal user runs it as itself.
#[tokio::test]
async fn embedded_postgres_runs_as_a_normal_user() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let tools = Command::new("id")
        .arg("nobody")
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("setpriv")
            .arg("--version")
            .status()
            .is_ok_and(|s| s.success());
    if !is_root || !tools {
        // Not root: the other test already runs as a normal user.
        return exercise(None).await;
    }
    exercise(Some("nobody")).await;
}
