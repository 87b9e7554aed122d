//! The background worker: claims due jobs from Postgres (`FOR UPDATE SKIP LOCKED` with a lease,
//! fairly across sandboxes), carries out one step of one job per [`Worker::run_once`], and on its
//! own schedule runs [`Worker::maintain`] (TTL expiry, purges, the sweep of bulk rows). Every
//! transaction of a step commits only while the job is still held under the same claim, so a step
//! is applied at most once even when a lease runs out and another process takes the job over.
//!
//! The worker decides nothing about audiences or runs itself: a step reads rows (storage), asks
//! the domain what they become (`domain::external`, `domain::run`), and writes that back in the
//! step's transactions. The steps are in [`create`] (the UPS audience of an external audience)
//! and [`stages`] (the two stages of a run); reading files is [`ingest`]. See docs/AIS.md for the
//! state machine, the lock order and the numbers.

mod create;
pub mod ingest;
pub mod maintenance;
mod stages;

use std::{path::PathBuf, sync::Arc};

use anyhow::anyhow;
use chrono::{DateTime, Duration, Utc};
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use uuid::Uuid;

use crate::{
    config::Settings,
    domain::{
        clock::Clock,
        external::{self, ExternalState, OperationStatus},
        job::{JobKind, JobStep},
        run::{self, RunDetails, RunStatus},
        Tenant,
    },
    landing,
    monitoring::{Monitoring, StepOutcome},
    storage::{
        self,
        jobs::{self, Job},
    },
};

use crate::config::IngestLimits;

pub use stages::MOVE_BATCH;

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

/// What [`Worker::drain_sandbox`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    /// Job steps carried out here.
    pub steps: u64,
    /// Audiences whose data expired.
    pub expired: u64,
    /// Whether no job of the sandbox was left (false: the deadline passed first).
    pub drained: bool,
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

    /// The server's time: the job queue's (due times, leases, retention).
    fn now(&self) -> DateTime<Utc> {
        self.cfg.clock.now()
    }

    /// The time of a sandbox (its test-control clock offset applied): what its runs, operations
    /// and data expiry are written with.
    async fn sandbox_now(&self, sandbox_id: Uuid) -> anyhow::Result<DateTime<Utc>> {
        let offset = storage::control::clock_offset(&self.pool, sandbox_id).await?;
        Ok(crate::domain::control::sandbox_time(self.now(), offset))
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

    /// Carries out every open job of one sandbox now, waiting for the steps other workers hold,
    /// until none is left or `deadline` passes (test control, `POST /_local/worker/drain`), then
    /// expires the sandbox's audiences whose TTL has passed by its time. Jobs waiting for a
    /// retry's backoff are taken at once. A step still running at the deadline is abandoned and
    /// its job handed back, as at shutdown.
    pub async fn drain_sandbox(
        &self,
        sandbox_id: Uuid,
        deadline: tokio::time::Instant,
    ) -> anyhow::Result<Drain> {
        let mut drain = Drain::default();
        let past_deadline = || tokio::time::Instant::now() >= deadline;
        loop {
            if past_deadline() {
                return Ok(drain);
            }
            let now = self.now();
            let due_by = now + Duration::days(365 * 100);
            let lease_until = now + self.cfg.lease;
            let claimed = jobs::claim_in(
                &self.pool,
                sandbox_id,
                &self.cfg.id,
                now,
                due_by,
                lease_until,
            )
            .await?;
            let Some(job) = claimed else {
                if jobs::open_in(&self.pool, sandbox_id).await? == 0 {
                    break;
                }
                // Another worker holds a step of this sandbox: wait for it.
                let pause = tokio::time::Instant::now() + std::time::Duration::from_millis(20);
                tokio::time::sleep_until(deadline.min(pause)).await;
                continue;
            };
            match tokio::time::timeout_at(deadline, self.execute(job.clone())).await {
                Ok(done) => done?,
                Err(_) => {
                    self.hand_back(&job).await;
                    return Ok(drain);
                }
            }
            drain.steps += 1;
        }
        while !past_deadline() && self.expire_one(Some(sandbox_id)).await? {
            drain.expired += 1;
        }
        drain.drained = !past_deadline();
        Ok(drain)
    }

    /// Claims the next due job without working on it (public so tests can play a worker that
    /// dies holding a claim).
    pub async fn claim(&self) -> Result<Option<Job>, storage::StoreError> {
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
        let outcome = match job.step {
            JobStep::Create => self.create_audience(&job).await,
            JobStep::Dataset => self.dataset_ingest(&job).await,
            JobStep::Profile => self.profile_ingest(&job).await,
        };
        let Err(error) = outcome else {
            self.record(&job, StepOutcome::Done);
            return Ok(());
        };
        let cause = format!("{error:#}");
        tracing::warn!(job = %job.id, attempt = job.attempts, error = %cause, "job step failed");
        if job.attempts >= self.cfg.max_attempts {
            self.record(&job, StepOutcome::GaveUp);
            self.give_up(&job, &cause).await
        } else {
            self.record(&job, StepOutcome::Retry);
            jobs::retry_later(&self.pool, &job, self.now() + backoff(job.attempts), &cause).await?;
            Ok(())
        }
    }

    /// Deletes the landing-zone files older than the zone TTL, by each zone's sandbox time (one task
    /// of [`Worker::maintain`]).
    pub async fn expire_landing_files(&self) -> anyhow::Result<landing::Expired> {
        let (root, ttl) = (self.cfg.landing_dir.clone(), self.cfg.landing_ttl);
        let now = self.now();
        // Zones of sandboxes with a test-control clock offset live at their sandbox's time.
        let offsets = {
            let mut conn = self.pool.acquire().await?;
            storage::control::zone_clock_offsets(&mut conn).await?
        };
        let now_of = move |account: &str| {
            let offset = offsets.get(account).copied().unwrap_or(0);
            std::time::SystemTime::from(crate::domain::control::sandbox_time(now, offset))
        };
        let expired =
            tokio::task::spawn_blocking(move || landing::expire_files_at(&root, now_of, ttl))
                .await??;
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
                    self.record(job, StepOutcome::Released);
                }
                tracing::info!(job = %job.id, released, "job handed back on shutdown");
            }
            // The lease still runs out: another process takes the job over after it.
            Err(e) => tracing::warn!(job = %job.id, error = %e, "could not hand the job back"),
        }
    }

    fn record(&self, job: &Job, outcome: StepOutcome) {
        self.monitoring
            .job_step(job.kind.as_str(), job.step.as_str(), outcome);
    }

    async fn tenant(&self, conn: &mut PgConnection, sandbox_id: Uuid) -> anyhow::Result<Tenant> {
        storage::ais::tenant_of(conn, sandbox_id)
            .await?
            .ok_or_else(|| anyhow!("sandbox {sandbox_id} does not exist"))
    }

    /// Ends a job whose operation or run is gone or already final.
    async fn close(&self, job: &Job) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        if jobs::lock_claimed(&mut tx, job).await? {
            jobs::finish(&mut tx, job, self.now()).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Ends a job that kept failing (or kept killing its worker): its operation or run fails.
    /// Tenants read a reason that names the stage and the job; `cause` (database or file-system
    /// text) goes only to the log and to the job's internal `last_error`.
    async fn give_up(&self, job: &Job, cause: &str) -> anyhow::Result<()> {
        // The sandbox's time for the operation or run; the server's for the job.
        let at = self.sandbox_now(job.sandbox_id).await?;
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        if !jobs::lock_claimed(&mut tx, job).await? {
            return Ok(());
        }
        tracing::error!(job = %job.id, kind = %job.kind, step = %job.step, cause, "giving up a job");
        let tenant = self.tenant(&mut tx, job.sandbox_id).await?;
        let attempts = self.cfg.max_attempts;
        match job.kind {
            // Lock order: job, operation, external audience.
            JobKind::CreateAudience => {
                let op = storage::ais::lock_operation(&mut tx, &tenant, job.target_id).await?;
                if let Some(op) = op {
                    let ext = storage::ais::lock_external(&mut tx, &tenant, op.audience_id).await?;
                    if ext.is_some_and(|e| e.state == ExternalState::Creating) {
                        storage::ais::delete_external(&mut tx, &tenant, op.audience_id).await?;
                    }
                    let reason = external::gave_up_creating_reason(attempts, job.id);
                    storage::ais::finish_operation(
                        &mut tx,
                        &tenant,
                        op.id,
                        OperationStatus::Failed,
                        Some(&reason),
                        at,
                    )
                    .await?;
                }
            }
            JobKind::Ingest => {
                let reason = |stage| run::gave_up_reason(attempts, stage, job.id);
                fail_run(&mut tx, &tenant, job.target_id, reason, at).await?;
            }
        }
        jobs::finish_with(&mut tx, job, now, Some(cause)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Renews the lease and shows a run's details while it is in progress; `false` when the job
    /// is no longer this worker's.
    async fn progress(
        &self,
        tenant: &Tenant,
        job: &Job,
        run_id: Uuid,
        details: &RunDetails,
    ) -> anyhow::Result<bool> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        if !jobs::lock_claimed(&mut tx, job).await? {
            return Ok(false);
        }
        jobs::renew(&mut tx, job, now + self.cfg.lease).await?;
        storage::ais::update_run_details(&mut tx, tenant, run_id, details, now).await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// Fails a run at its open stage (and skips the stage after it) with the reason `reason` gives
/// for that stage; a run gone or already ended is left alone.
async fn fail_run(
    conn: &mut PgConnection,
    tenant: &Tenant,
    run_id: Uuid,
    reason: impl Fn(run::StageName) -> String,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let Some(mut run) = storage::ais::run_by_id(conn, tenant, run_id).await? else {
        return Ok(());
    };
    if let Some(stage) = run.details.open_stage() {
        let reason = reason(stage);
        run.details.fail_open_stage(&reason);
        storage::ais::finish_run(
            conn,
            tenant,
            run.id,
            RunStatus::Failed,
            &run.details,
            Some(&reason),
            now,
        )
        .await?;
    }
    Ok(())
}

/// Writes a profile count into the UPS audience through the audience's update rule and storage,
/// so its body and columns stay in step. An audience deleted through UPS is skipped.
async fn write_metrics(
    conn: &mut PgConnection,
    tenant: &Tenant,
    id: Uuid,
    profiles: i64,
    expired: bool,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let Some(ups) = storage::audiences::lock(conn, tenant, id).await? else {
        return Ok(());
    };
    let counted = external::with_profile_count(&ups, profiles, expired, now);
    storage::audiences::update(conn, tenant, &counted).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::seconds(2));
        assert_eq!(backoff(2), Duration::seconds(4));
        assert_eq!(backoff(4), Duration::seconds(16));
        assert_eq!(backoff(30), Duration::seconds(300));
    }
}
