//! The background worker: claims due jobs from Postgres (`FOR UPDATE SKIP LOCKED` with a lease,
//! fairly across sandboxes), carries out one step of one job per [`Worker::run_once`], and on its
//! own schedule runs [`Worker::maintain`] (TTL expiry, purges, the sweep of bulk rows). Every
//! transaction of a step commits only while the job is still held under the same claim, so a step
//! is applied at most once even when a lease runs out and another process takes the job over.
//! See docs/AIS.md for the state machine and the numbers.

pub mod ingest;
pub mod maintenance;

use std::{path::PathBuf, sync::Arc, time::Instant};

use anyhow::anyhow;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Map, Value};
use sqlx::{Acquire, PgConnection, PgPool};
use tokio::sync::watch;
use uuid::Uuid;

use crate::{
    config::Settings,
    domain::{
        audience::{self, new_etag, Audience, EXTERNAL_SEGMENT},
        clock::Clock,
        external::IngestSpec,
        Caller, Tenant,
    },
    error::ApiError,
    landing::{self, Zone},
    monitoring::{Monitoring, StepOutcome},
    service::ais::{epoch_ms, ttl_after},
    storage::{
        self,
        ais::{RunRow, Staging},
        jobs::{self, Job},
        Conflict, StoreError,
    },
};

use ingest::{Counts, IngestLimits, Scan};

/// Staged rows moved into the member set per transaction of the profile step.
pub const MOVE_BATCH: i64 = 50_000;

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Names this worker in `ais_jobs.locked_by`.
    pub id: String,
    pub landing_dir: PathBuf,
    /// How long a file stays in a landing zone (`LANDING_TTL_DAYS`).
    pub landing_ttl: std::time::Duration,
    pub clock: Clock,
    /// How long a claim holds without renewal.
    pub lease: Duration,
    /// Attempts (claims) of one step before the job's operation or run is failed.
    pub max_attempts: i32,
    /// Pause between polls when there is nothing to do.
    pub poll: std::time::Duration,
    /// What one ingestion run may read.
    pub limits: IngestLimits,
    /// Time between maintenance passes.
    pub maintenance_every: std::time::Duration,
    /// How long finished jobs and operations are kept.
    pub retention: Duration,
}

impl WorkerConfig {
    pub fn from_settings(settings: &Settings) -> Self {
        WorkerConfig {
            // The process id shows in `ais_jobs.locked_by` which process holds a job.
            id: format!("worker-{}-{}", std::process::id(), Uuid::new_v4().simple()),
            landing_dir: settings.landing_dir(),
            landing_ttl: std::time::Duration::from_secs(
                u64::try_from(settings.landing_ttl_days).unwrap_or(7) * 24 * 3600,
            ),
            clock: settings.clock.clone(),
            lease: Duration::seconds(settings.worker_lease_secs),
            max_attempts: settings.worker_max_attempts,
            poll: std::time::Duration::from_millis(settings.worker_poll_ms.max(10)),
            limits: settings.ingest_limits(),
            maintenance_every: std::time::Duration::from_secs(settings.maintenance_interval_secs),
            retention: Duration::hours(settings.job_retention_hours),
        }
    }
}

#[derive(Clone)]
pub struct Worker {
    pool: PgPool,
    cfg: Arc<WorkerConfig>,
    monitoring: Arc<Monitoring>,
}

/// The delay before retry `attempt` (1-based): 2, 4, 8, ... seconds, at most 5 minutes.
pub fn backoff(attempt: i32) -> Duration {
    Duration::seconds(2i64.saturating_pow(attempt.clamp(1, 20) as u32).min(300))
}

impl Worker {
    pub fn new(pool: PgPool, cfg: WorkerConfig) -> Self {
        Worker {
            pool,
            cfg: Arc::new(cfg),
            monitoring: Monitoring::new(),
        }
    }

    /// Records this worker's steps in the server's metrics.
    pub fn with_monitoring(mut self, monitoring: Arc<Monitoring>) -> Self {
        self.monitoring = monitoring;
        self
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.cfg
    }

    fn now(&self) -> DateTime<Utc> {
        self.cfg.clock.now()
    }

    /// Does one step of one due job. Returns whether there was anything to do. (Expiry and the
    /// other housekeeping are [`Worker::maintain`]'s, on their own schedule.)
    pub async fn run_once(&self) -> anyhow::Result<bool> {
        if let Some(job) = self.claim().await? {
            self.execute(job).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Runs [`Worker::run_once`] until nothing is due; returns how many units were done.
    pub async fn drain(&self) -> anyhow::Result<usize> {
        let mut done = 0;
        while done < 100_000 && self.run_once().await? {
            done += 1;
        }
        Ok(done)
    }

    /// Claims the next due job without working on it (public so tests can play a worker that
    /// dies holding a claim).
    pub async fn claim(&self) -> sqlx::Result<Option<Job>> {
        let now = self.now();
        jobs::claim(&self.pool, &self.cfg.id, now, now + self.cfg.lease).await
    }

    /// Carries out one step of a claimed job. A failure is retried later with backoff; after
    /// `max_attempts` claims the operation or run fails. A job claimed more often than that has
    /// killed or stalled the workers that claimed it before: it is given up without running.
    pub async fn execute(&self, job: Job) -> anyhow::Result<()> {
        if job.attempts > self.cfg.max_attempts {
            tracing::error!(
                job = %job.id, kind = %job.kind, step = %job.step, attempts = job.attempts - 1,
                "job step never completed: giving up"
            );
            return self
                .give_up(
                    &job,
                    "the step never completed (its worker stopped or lost its lease)",
                )
                .await;
        }
        let outcome = match (job.kind.as_str(), job.step.as_str()) {
            (jobs::CREATE_AUDIENCE, _) => self.create_audience(&job).await,
            (jobs::INGEST, "dataset") => self.dataset_ingest(&job).await,
            (jobs::INGEST, "profile") => self.profile_ingest(&job).await,
            (kind, step) => Err(anyhow!("unknown job {kind}/{step}")),
        };
        let Err(error) = outcome else {
            self.monitoring
                .job_step(&job.kind, &job.step, StepOutcome::Done);
            return Ok(());
        };
        let cause = format!("{error:#}");
        tracing::warn!(job = %job.id, attempt = job.attempts, error = %cause, "job step failed");
        if job.attempts >= self.cfg.max_attempts {
            self.monitoring
                .job_step(&job.kind, &job.step, StepOutcome::GaveUp);
            self.give_up(&job, &cause).await
        } else {
            self.monitoring
                .job_step(&job.kind, &job.step, StepOutcome::Retry);
            jobs::retry_later(&self.pool, &job, self.now() + backoff(job.attempts), &cause).await?;
            Ok(())
        }
    }

    /// Deletes the landing-zone files older than the zone TTL, by this worker's clock (one task
    /// of [`Worker::maintain`]).
    pub async fn expire_landing_files(&self) -> anyhow::Result<landing::Expired> {
        let (root, ttl) = (self.cfg.landing_dir.clone(), self.cfg.landing_ttl);
        let now = std::time::SystemTime::from(self.now());
        let expired =
            tokio::task::spawn_blocking(move || landing::expire_files(&root, now, ttl)).await??;
        if expired != landing::Expired::default() {
            tracing::info!(
                files = expired.files,
                staged = expired.staged,
                "landing-zone files expired"
            );
        }
        Ok(expired)
    }

    /// Runs the job loop and the maintenance loop until `stop` says so.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        tokio::join!(self.job_loop(stop.clone()), self.maintenance_loop(stop));
        tracing::info!(worker = %self.cfg.id, "worker stopped");
    }

    /// Polls for jobs until `stop` says so. A step in progress when it does is abandoned and its
    /// job handed back at once (claim and lease cleared), so another process continues it without
    /// waiting for the lease; only a step's closing transaction changes anything, and it is fenced
    /// by the claim, so an abandoned step leaves nothing half done.
    async fn job_loop(&self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                break;
            }
            let round = tokio::select! {
                biased;
                _ = stop.changed() => break,
                claimed = self.claim() => claimed,
            };
            match round {
                Ok(Some(job)) => {
                    tokio::select! {
                        biased;
                        _ = stop.changed() => {
                            self.hand_back(&job).await;
                            break;
                        }
                        done = self.execute(job.clone()) => {
                            if let Err(e) = done {
                                tracing::warn!(error = %e, "worker round failed");
                            }
                        }
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "worker round failed"),
            }
            tokio::select! {
                changed = stop.changed() => {
                    // The owner is gone: nobody can stop this loop any more, so it ends now.
                    if changed.is_err() {
                        break;
                    }
                }
                _ = tokio::time::sleep(self.cfg.poll) => {}
            }
        }
    }

    /// Maintenance every `maintenance_every`, the first pass at once, however busy the jobs are.
    /// A pass in progress at shutdown is abandoned: each of its transactions stands alone.
    async fn maintenance_loop(&self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.cfg.maintenance_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *stop.borrow() {
                break;
            }
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                _ = tick.tick() => {}
            }
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                pass = self.maintain() => {
                    if let Err(e) = pass {
                        tracing::warn!(error = %format!("{e:#}"), "maintenance failed");
                    }
                }
            }
        }
    }

    /// Clears this worker's claim on `job` (shutdown).
    async fn hand_back(&self, job: &Job) {
        match jobs::release(&self.pool, job).await {
            Ok(released) => {
                if released {
                    self.monitoring
                        .job_step(&job.kind, &job.step, StepOutcome::Released);
                }
                tracing::info!(job = %job.id, released, "job handed back on shutdown");
            }
            // The lease still runs out: another process takes the job over after it.
            Err(e) => tracing::warn!(job = %job.id, error = %e, "could not hand the job back"),
        }
    }

    async fn tenant(&self, conn: &mut PgConnection, sandbox_id: Uuid) -> anyhow::Result<Tenant> {
        storage::ais::tenant_of(conn, sandbox_id)
            .await?
            .ok_or_else(|| anyhow!("sandbox {sandbox_id} does not exist"))
    }

    /// Creates the UPS audience of an external audience and ends its operation.
    async fn create_audience(&self, job: &Job) -> anyhow::Result<()> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        if !jobs::hold(&mut tx, job).await? {
            return Ok(());
        }
        let tenant = self.tenant(&mut tx, job.sandbox_id).await?;
        let Some(op) = storage::ais::get_operation_on(&mut tx, &tenant, job.target_id).await?
        else {
            jobs::finish(&mut tx, job, now).await?;
            tx.commit().await?;
            return Ok(());
        };
        let ext = storage::ais::get_external(&mut tx, &tenant, op.audience_id, true).await?;
        match ext {
            None => {
                storage::ais::finish_operation(
                    &mut tx,
                    &tenant,
                    op.id,
                    "FAILED",
                    Some("The external audience was deleted before it was created."),
                    now,
                )
                .await?;
            }
            Some(row) if row.state == "ready" => {
                storage::ais::finish_operation(&mut tx, &tenant, op.id, "SUCCESS", None, now)
                    .await?;
            }
            Some(row) => {
                let spec: Map<String, Value> = serde_json::from_str(&row.spec)?;
                let mut doc = Map::new();
                doc.insert("name".into(), json!(row.name));
                for key in ["description", "labels", "ttlInDays", "namespace"] {
                    if let Some(v) = spec.get(key) {
                        doc.insert(key.into(), v.clone());
                    }
                }
                doc.insert("type".into(), json!(EXTERNAL_SEGMENT));
                doc.insert("originName".into(), json!("CUSTOM_UPLOAD"));
                doc.insert("lifecycleState".into(), json!("published"));
                let external_id = row
                    .custom_audience_id
                    .clone()
                    .unwrap_or_else(|| row.id.to_string());
                doc.insert("audienceId".into(), json!(external_id));
                doc.insert("metrics".into(), metrics(0, false, now));
                let fields = audience::new_fields(Value::Object(doc), row.id)?;
                let caller = Caller {
                    user_id: row.created_by.clone(),
                };
                let created = Audience::create(row.id, fields, &caller, Vec::new());
                let mut savepoint = (&mut *tx).begin().await?;
                match storage::audiences::insert(&mut savepoint, &tenant, &created).await {
                    Ok(_) => {
                        savepoint.commit().await?;
                        storage::ais::mark_ready(&mut tx, &tenant, row.id).await?;
                        storage::ais::finish_operation(
                            &mut tx, &tenant, op.id, "SUCCESS", None, now,
                        )
                        .await?;
                    }
                    Err(StoreError::Conflict(Conflict::AudienceKeyTaken)) => {
                        let e = ApiError::audience_key_taken(
                            created.fields.namespace(),
                            created.fields.audience_id(),
                        );
                        savepoint.rollback().await?;
                        storage::ais::delete_external(&mut tx, &tenant, row.id).await?;
                        storage::ais::finish_operation(
                            &mut tx,
                            &tenant,
                            op.id,
                            "FAILED",
                            Some(&e.message),
                            now,
                        )
                        .await?;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        jobs::finish(&mut tx, job, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends a job whose run is gone or already final.
    async fn close(&self, job: &Job) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        if jobs::hold(&mut tx, job).await? {
            jobs::finish(&mut tx, job, self.now()).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Renews the lease and shows the run's details; `false` when the job is no longer ours.
    async fn progress(
        &self,
        tenant: &Tenant,
        job: &Job,
        run_id: Uuid,
        details: &Value,
    ) -> anyhow::Result<bool> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        if !jobs::hold(&mut tx, job).await? {
            return Ok(false);
        }
        jobs::renew(&mut tx, job, now + self.cfg.lease).await?;
        storage::ais::update_run_details(&mut tx, tenant, run_id, &details.to_string(), now)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// DATASET_INGEST: selects the files, parses them streaming, stages the identities of good
    /// rows under this claim, and either moves the job on or fails the run saying why.
    async fn dataset_ingest(&self, job: &Job) -> anyhow::Result<()> {
        let started = self.now();
        let clock_start = Instant::now();
        let mut conn = self.pool.acquire().await?;
        let tenant = self.tenant(&mut conn, job.sandbox_id).await?;
        let Some(run) = storage::ais::get_run_by_id(&mut conn, &tenant, job.target_id).await?
        else {
            drop(conn);
            return self.close(job).await;
        };
        let ext = storage::ais::get_external(&mut conn, &tenant, run.audience_id, false).await?;
        let (Some(ext), true) = (ext, run.status == "PROCESSING") else {
            drop(conn);
            return self.close(job).await;
        };
        let spec = IngestSpec::from_doc(&serde_json::from_str(&ext.spec)?)?;
        // A run reads its own sandbox's zone and nothing else.
        let zone = storage::landing::account_of(&mut conn, &tenant)
            .await?
            .and_then(|account| Zone::new(&self.cfg.landing_dir, &account));
        drop(conn);
        // What earlier attempts staged under other claims is left to the maintenance sweep.
        let mut details: Value = serde_json::from_str(&run.details)?;
        let flow = details[0]["flowRunId"].clone();
        details[0] = json!({
            "stage": "DATASET_INGEST", "status": "PROCESSING", "flowRunId": flow,
            "startedAt": epoch_ms(started),
        });
        if !self.progress(&tenant, job, run.id, &details).await? {
            return Ok(());
        }

        let window = (run.filter_start, run.filter_end);
        let (zone, files) = match ingest::select_files(zone, &spec, window) {
            Ok(selected) => selected,
            Err(message) => {
                let scan = Scan {
                    failure: Some(message),
                    ..Scan::default()
                };
                return self
                    .end_dataset(job, &tenant, &run, details, scan, started, clock_start)
                    .await;
            }
        };

        let (sender, mut receiver) = tokio::sync::mpsc::channel::<(Vec<String>, Counts)>(2);
        let scan_spec = spec.clone();
        let limits = self.cfg.limits;
        let scanning = tokio::task::spawn_blocking(move || {
            ingest::scan_files(&files, &zone, &scan_spec, limits, &mut |batch, counts| {
                sender.blocking_send((batch, counts.clone())).is_ok()
            })
        });
        // The first report is shown at once, later ones at most every 0.5 s.
        let mut shown: Option<Instant> = None;
        while let Some((batch, counts)) = receiver.recv().await {
            if !batch.is_empty() {
                let staging = {
                    let mut conn = self.pool.acquire().await?;
                    storage::ais::stage_members(&mut conn, &tenant, job, run.id, &batch).await?
                };
                match staging {
                    Staging::Staged => {}
                    Staging::NotOurs => return Ok(()),
                    Staging::RunGone => {
                        drop(receiver);
                        let _ = scanning.await;
                        return self.close(job).await;
                    }
                }
            }
            if shown.is_none_or(|at| at.elapsed() >= std::time::Duration::from_millis(500)) {
                shown = Some(Instant::now());
                details[0]["recordsRead"] = json!(counts.read);
                details[0]["recordsSucceeded"] = json!(counts.good);
                details[0]["recordsFailed"] = json!(counts.bad);
                if !self.progress(&tenant, job, run.id, &details).await? {
                    return Ok(());
                }
            }
        }
        let scan = scanning.await?;
        if scan.cancelled {
            return Ok(());
        }
        self.end_dataset(job, &tenant, &run, details, scan, started, clock_start)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn end_dataset(
        &self,
        job: &Job,
        tenant: &Tenant,
        run: &RunRow,
        mut details: Value,
        scan: Scan,
        started: DateTime<Utc>,
        clock_start: Instant,
    ) -> anyhow::Result<()> {
        let now = self.now();
        let failure = scan.failure.clone().or_else(|| {
            (scan.counts.good == 0).then(|| {
                format!(
                    "No valid row: {} rows read, all rejected{}.",
                    scan.counts.read,
                    if scan.counts.read == 0 {
                        " (the files hold no data row)"
                    } else {
                        ""
                    }
                )
            })
        });
        let stage = &mut details[0];
        stage["status"] = json!(if failure.is_some() {
            "FAILED"
        } else {
            "SUCCESS"
        });
        stage["startedAt"] = json!(epoch_ms(started));
        stage["completedAt"] = json!(epoch_ms(now));
        stage["durationMs"] = json!(clock_start.elapsed().as_millis() as u64);
        stage["files"] = json!(scan.files);
        stage["recordsRead"] = json!(scan.counts.read);
        stage["recordsSucceeded"] = json!(scan.counts.good);
        stage["recordsFailed"] = json!(scan.counts.bad);
        stage["errors"] = json!(scan.errors.iter().map(|e| e.to_json()).collect::<Vec<_>>());
        if let Some(message) = &failure {
            stage["message"] = json!(message);
            details[1]["status"] = json!("SKIPPED");
        }
        let mut tx = self.pool.begin().await?;
        if !jobs::hold(&mut tx, job).await? {
            return Ok(());
        }
        match &failure {
            Some(message) => {
                // What was staged is left to the maintenance sweep: the job ends here.
                storage::ais::finish_run(
                    &mut tx,
                    tenant,
                    run.id,
                    "FAILED",
                    &details.to_string(),
                    Some(&format!("DATASET_INGEST failed: {message}")),
                    now,
                )
                .await?;
                jobs::finish(&mut tx, job, now).await?;
            }
            None => {
                storage::ais::update_run_details(
                    &mut tx,
                    tenant,
                    run.id,
                    &details.to_string(),
                    now,
                )
                .await?;
                jobs::advance(&mut tx, job, "profile", Some(job.claim), now).await?;
            }
        }
        tx.commit().await?;
        let status = if failure.is_some() {
            "FAILED"
        } else {
            "SUCCESS"
        };
        let m = &self.monitoring;
        m.stage(
            "DATASET_INGEST",
            status,
            clock_start.elapsed().as_secs_f64(),
        );
        m.rows_ingested(scan.counts.good, scan.counts.bad);
        Ok(())
    }

    /// PROFILE_STORE_INGEST: moves the distinct identities the dataset stage staged into the run's
    /// own member set, [`MOVE_BATCH`] rows per transaction (each holding the claim, renewing the
    /// lease and adding to the job's count, so a takeover carries on where the last commit left
    /// off); then one small transaction points the audience at the new set, records the count
    /// and the expiry and ends the run. No transaction and no lock is sized by the file.
    async fn profile_ingest(&self, job: &Job) -> anyhow::Result<()> {
        let started = self.now();
        let clock_start = Instant::now();
        let staged = job.staged_claim.ok_or_else(|| {
            anyhow!(
                "job {} reached the profile step without staged rows",
                job.id
            )
        })?;
        let tenant = {
            let mut conn = self.pool.acquire().await?;
            self.tenant(&mut conn, job.sandbox_id).await?
        };
        let stored = loop {
            let mut tx = self.pool.begin().await?;
            if !jobs::hold(&mut tx, job).await? {
                return Ok(());
            }
            let run = storage::ais::get_run_by_id(&mut tx, &tenant, job.target_id).await?;
            let Some(run) = run.filter(|r| r.status == "PROCESSING") else {
                // Deleted or ended meanwhile: the set written so far is left to the sweep.
                jobs::finish(&mut tx, job, self.now()).await?;
                tx.commit().await?;
                return Ok(());
            };
            let moved = storage::ais::move_staged_batch(
                &mut tx,
                &tenant,
                run.audience_id,
                run.id,
                staged,
                MOVE_BATCH,
            )
            .await?;
            let stored =
                jobs::add_members_stored(&mut tx, job, moved.stored, self.now() + self.cfg.lease)
                    .await?;
            tx.commit().await?;
            if moved.taken < MOVE_BATCH {
                break stored;
            }
        };

        // Lock order: job, external audience, UPS audience, run (see
        // `service::audiences::delete_cascade`).
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        if !jobs::hold(&mut tx, job).await? {
            return Ok(());
        }
        let run = storage::ais::get_run_by_id(&mut tx, &tenant, job.target_id).await?;
        let ext = match &run {
            Some(r) if r.status == "PROCESSING" => {
                storage::ais::get_external(&mut tx, &tenant, r.audience_id, true).await?
            }
            _ => None,
        };
        let (Some(run), Some(ext)) = (run, ext) else {
            jobs::finish(&mut tx, job, now).await?;
            tx.commit().await?;
            return Ok(());
        };
        let spec = IngestSpec::from_doc(&serde_json::from_str(&ext.spec)?)?;
        storage::ais::switch_members(
            &mut tx,
            &tenant,
            ext.id,
            run.id,
            stored,
            ttl_after(now, spec.ttl_in_days),
        )
        .await?;
        write_metrics(&mut tx, &tenant, ext.id, stored, false, now).await?;
        let mut details: Value = serde_json::from_str(&run.details)?;
        let received = details[0]["recordsSucceeded"].as_u64().unwrap_or(0);
        let flow = details[1]["flowRunId"].clone();
        details[1] = json!({
            "stage": "PROFILE_STORE_INGEST", "status": "SUCCESS", "flowRunId": flow,
            "startedAt": epoch_ms(started), "completedAt": epoch_ms(now),
            "durationMs": clock_start.elapsed().as_millis() as u64,
            "recordsReceived": received,
            "profilesStored": stored,
            "duplicatesMerged": received.saturating_sub(stored as u64),
        });
        storage::ais::finish_run(
            &mut tx,
            &tenant,
            run.id,
            "SUCCESS",
            &details.to_string(),
            None,
            now,
        )
        .await?;
        jobs::finish(&mut tx, job, now).await?;
        tx.commit().await?;
        let seconds = clock_start.elapsed().as_secs_f64();
        self.monitoring
            .stage("PROFILE_STORE_INGEST", "SUCCESS", seconds);
        Ok(())
    }

    /// Ends a job that kept failing (or kept killing its worker): its operation or run fails.
    /// Tenants read a reason that names the stage and the job; `cause` (database or file-system
    /// text) goes only to the log and to the job's internal `last_error`.
    async fn give_up(&self, job: &Job, cause: &str) -> anyhow::Result<()> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        if !jobs::hold(&mut tx, job).await? {
            return Ok(());
        }
        tracing::error!(job = %job.id, kind = %job.kind, step = %job.step, cause, "giving up a job");
        let tenant = self.tenant(&mut tx, job.sandbox_id).await?;
        let attempts = self.cfg.max_attempts;
        if job.kind == jobs::CREATE_AUDIENCE {
            if let Some(op) =
                storage::ais::get_operation_on(&mut tx, &tenant, job.target_id).await?
            {
                let ext =
                    storage::ais::get_external(&mut tx, &tenant, op.audience_id, true).await?;
                if ext.is_some_and(|e| e.state == "creating") {
                    storage::ais::delete_external(&mut tx, &tenant, op.audience_id).await?;
                }
                let reason = format!(
                    "Gave up after {attempts} attempts: the audience could not be created (job {}; the cause is in the server log).",
                    job.id
                );
                storage::ais::finish_operation(
                    &mut tx,
                    &tenant,
                    op.id,
                    "FAILED",
                    Some(&reason),
                    now,
                )
                .await?;
            }
        } else if let Some(run) =
            storage::ais::get_run_by_id(&mut tx, &tenant, job.target_id).await?
        {
            let stage = match job.step.as_str() {
                "profile" => "PROFILE_STORE_INGEST",
                _ => "DATASET_INGEST",
            };
            let reason = format!(
                "Gave up after {attempts} attempts: the {stage} stage did not complete (job {}; the cause is in the server log).",
                job.id
            );
            let mut details: Value = serde_json::from_str(&run.details)?;
            fail_open_stages(&mut details, &reason);
            storage::ais::finish_run(
                &mut tx,
                &tenant,
                run.id,
                "FAILED",
                &details.to_string(),
                Some(&reason),
                now,
            )
            .await?;
        }
        jobs::finish_with(&mut tx, job, now, Some(cause)).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Marks the first stage that had not ended as FAILED with `reason`, and the ones after it SKIPPED.
fn fail_open_stages(details: &mut Value, reason: &str) {
    let Some(stages) = details.as_array_mut() else {
        return;
    };
    let mut failed = false;
    for stage in stages {
        if !matches!(stage["status"].as_str(), Some("PENDING" | "PROCESSING")) {
            continue;
        }
        if failed {
            stage["status"] = json!("SKIPPED");
        } else {
            stage["status"] = json!("FAILED");
            stage["message"] = json!(reason);
            failed = true;
        }
    }
}

/// The `metrics` field of the UPS audience: where the profile count is readable through UPS.
fn metrics(profiles: i64, expired: bool, now: DateTime<Utc>) -> Value {
    json!({
        "type": "profileCount",
        "data": { "totalProfiles": profiles, "dataExpired": expired },
        "updateTime": epoch_ms(now),
    })
}

/// Writes the profile count into the UPS audience through the audience storage, so its body and
/// columns stay in step. An audience deleted through UPS is skipped.
async fn write_metrics(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
    profiles: i64,
    expired: bool,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let Some(mut ups) = storage::audiences::lock(conn, tenant, id).await? else {
        return Ok(());
    };
    ups.fields
        .doc
        .insert("metrics".into(), metrics(profiles, expired, now));
    ups.update_time = now.timestamp_millis().max(ups.update_time);
    ups.etag = new_etag(ups.update_time);
    storage::audiences::update(conn, tenant, &ups).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_up_run_fails_its_open_stage_and_skips_the_rest() {
        let mut d = json!([
            {"stage": "DATASET_INGEST", "status": "SUCCESS"},
            {"stage": "PROFILE_STORE_INGEST", "status": "PENDING"},
        ]);
        fail_open_stages(&mut d, "why");
        assert_eq!(d[0]["status"], "SUCCESS");
        assert_eq!(d[1]["status"], "FAILED");
        assert_eq!(d[1]["message"], "why");
        let mut d = json!([
            {"stage": "DATASET_INGEST", "status": "PROCESSING"},
            {"stage": "PROFILE_STORE_INGEST", "status": "PENDING"},
        ]);
        fail_open_stages(&mut d, "why");
        assert_eq!(
            (d[0]["status"].as_str(), d[1]["status"].as_str()),
            (Some("FAILED"), Some("SKIPPED"))
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::seconds(2));
        assert_eq!(backoff(2), Duration::seconds(4));
        assert_eq!(backoff(4), Duration::seconds(16));
        assert_eq!(backoff(30), Duration::seconds(300));
    }
}
