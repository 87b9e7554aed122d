//! A PostgreSQL of the server's own, for when no `DATABASE_URL` is given: started from the server
//! binaries installed on the machine, data kept in a folder that survives restarts, stopped with
//! the server (and by the kernel if the server dies: `PR_SET_PDEATHSIG`).
//!
//! `initdb` refuses to run as root, so as root both it and the server run as the `postgres`
//! account, which owns the data folder.

#![allow(unsafe_code)]

use std::{
    fs,
    net::{TcpListener, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context};

pub const DATABASE_NAME: &str = "audience_server";

const NO_BINARIES: &str = "No DATABASE_URL is set and no PostgreSQL server binaries were found \
(looked at PG_BINDIR, `pg_config --bindir` and /usr/lib/postgresql/*/bin). Either set DATABASE_URL \
to a PostgreSQL 13+ database, or start the compose database with `docker compose up -d db` and set \
DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432/audiences, or install PostgreSQL \
(Debian/Ubuntu: `apt-get install postgresql`).";

pub struct EmbeddedPostgres {
    pgdata: PathBuf,
    port: u16,
    pid: u32,
    supervisor: Option<JoinHandle<()>>,
}

impl EmbeddedPostgres {
    /// The URL of the server's maintenance database; [`DATABASE_NAME`] is created in it.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{DATABASE_NAME}",
            self.port
        )
    }

    /// Starts (initialising on first use) a PostgreSQL keeping its data in `<data_dir>/pg`.
    pub fn start(data_dir: &Path) -> anyhow::Result<Self> {
        let bindir = find_bindir().ok_or_else(|| anyhow!(NO_BINARIES))?;
        fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        let data_dir = fs::canonicalize(data_dir)?;
        let pgdata = data_dir.join("pg");
        let account = if is_root() {
            Some(postgres_account()?)
        } else {
            None
        };
        if !pgdata.join("PG_VERSION").exists() {
            init(&bindir, &pgdata, account)?;
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("postgres.log"))?;
        if let Some((uid, gid)) = account {
            std::os::unix::fs::chown(data_dir.join("postgres.log"), Some(uid), Some(gid))?;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let port = free_port()?;
            let mut cmd = Command::new(bindir.join("postgres"));
            cmd.arg("-D")
                .arg(&pgdata)
                .args(["-p", &port.to_string()])
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args(["-c", "unix_socket_directories="])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log.try_clone()?);
            if let Some((uid, gid)) = account {
                cmd.uid(uid).gid(gid);
            }
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let (pid, supervisor) = spawn_supervised(cmd)?;
            let mut pg = EmbeddedPostgres {
                pgdata: pgdata.clone(),
                port,
                pid,
                supervisor: Some(supervisor),
            };
            match pg.wait_ready(Duration::from_secs(20)) {
                Ok(()) => return Ok(pg),
                // A previous server of this folder may still be shutting down: try again.
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(error = %e, "embedded PostgreSQL did not start; retrying");
                    pg.stop();
                    thread::sleep(Duration::from_millis(500));
                }
                Err(e) => {
                    pg.stop();
                    return Err(e.context(format!(
                        "embedded PostgreSQL did not start; see {}",
                        data_dir.join("postgres.log").display()
                    )));
                }
            }
        }
    }

    fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self
                .supervisor
                .as_ref()
                .is_some_and(JoinHandle::is_finished)
            {
                bail!("postgres exited during start");
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        bail!("postgres did not accept connections within {limit:?}")
    }

    /// Fast shutdown: open sessions are ended, the data is flushed.
    pub fn stop(&mut self) {
        if let Some(supervisor) = self.supervisor.take() {
            // SAFETY: sends a signal to the child this process started; no memory is touched.
            unsafe {
                libc::kill(self.pid as libc::pid_t, libc::SIGINT);
            }
            let _ = supervisor.join();
            tracing::info!(data = %self.pgdata.display(), "embedded PostgreSQL stopped");
        }
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `cmd` from a thread that lives as long as the child: the parent-death signal is tied to
/// the thread that forked, not to the process.
fn spawn_supervised(mut cmd: Command) -> anyhow::Result<(u32, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel();
    let handle = thread::Builder::new()
        .name("embedded-postgres".into())
        .spawn(move || match cmd.spawn() {
            Ok(mut child) => {
                let _ = tx.send(Ok(child.id()));
                let _ = child.wait();
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        })?;
    let pid = rx.recv()?.context("starting postgres")?;
    Ok((pid, handle))
}

fn init(bindir: &Path, pgdata: &Path, account: Option<(u32, u32)>) -> anyhow::Result<()> {
    fs::create_dir_all(pgdata)?;
    if let Some((uid, gid)) = account {
        std::os::unix::fs::chown(pgdata, Some(uid), Some(gid))?;
    }
    let mut cmd = Command::new(bindir.join("initdb"));
    cmd.arg("-D")
        .arg(pgdata)
        .args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-instructions",
        ])
        .stdin(Stdio::null());
    if let Some((uid, gid)) = account {
        cmd.uid(uid).gid(gid);
    }
    let out = cmd.output().context("running initdb")?;
    if !out.status.success() {
        bail!(
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn find_bindir() -> Option<PathBuf> {
    let has_server = |dir: &Path| dir.join("postgres").is_file() && dir.join("initdb").is_file();
    if let Some(dir) = std::env::var_os("PG_BINDIR").map(PathBuf::from) {
        return has_server(&dir).then_some(dir);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_server(&dir) {
            return Some(dir);
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| has_server(dir))
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, dir)| dir)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of the `postgres` account, which runs the server when we are root.
fn postgres_account() -> anyhow::Result<(u32, u32)> {
    let id = |flag: &str| -> anyhow::Result<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output()?;
        if !out.status.success() {
            bail!("running as root needs a `postgres` account to run PostgreSQL (initdb refuses root); create one or set DATABASE_URL");
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    };
    Ok((id("-u")?, id("-g")?))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}
