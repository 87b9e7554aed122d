//! The steps of an ingestion job, one per stage of its run: DATASET_INGEST reads the files and
//! stages the identities of good rows; PROFILE_STORE_INGEST moves them into the run's member set
//! and points the audience at it. What a stage's end means for the run is the domain's
//! (`RunDetails`); these steps read, stream and commit.

use std::time::{Duration as StdDuration, Instant};

use anyhow::anyhow;
use chrono::{DateTime, Utc};

use super::{
    ingest::{self, Scan},
    write_metrics, Worker,
};
use crate::{
    domain::{
        external::ExternalAudienceSpec,
        job::JobStep,
        run::{Counts, DatasetReport, Run, RunStatus, StageName, StageTiming},
        Tenant,
    },
    landing::Zone,
    storage::{
        self,
        ais::Staging,
        jobs::{self, Job},
    },
};

/// Staged rows moved into the member set per transaction of the profile step.
pub const MOVE_BATCH: i64 = 50_000;

/// DATASET_INGEST shows its counts at most this often (the first report at once).
const PROGRESS_EVERY: StdDuration = StdDuration::from_millis(500);

/// What a DATASET_INGEST works on, read when it starts.
struct Ingestion {
    tenant: Tenant,
    run: Run,
    spec: ExternalAudienceSpec,
    /// The run's own sandbox's landing zone (`None`: the sandbox never asked for one).
    zone: Option<Zone>,
    started: DateTime<Utc>,
    clock_start: Instant,
}

/// How the streaming of a scan into the store ended.
enum Streamed {
    Scanned(Scan),
    /// The job is no longer this worker's, or the scan was stopped: nothing more to do.
    Stopped,
    /// The run was deleted or has ended: the job ends.
    RunGone,
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Worker {
    /// DATASET_INGEST: selects the files, parses them streaming, stages the identities of good
    /// rows under this claim, and either moves the job on or fails the run saying why.
    pub(super) async fn dataset_ingest(&self, job: &Job) -> anyhow::Result<()> {
        let Some(mut ingestion) = self.open_ingestion(job).await? else {
            return self.close(job).await;
        };
        // What earlier attempts staged under other claims is left to the maintenance sweep.
        let details = &mut ingestion.run.details;
        details.start_dataset(ingestion.started.timestamp_millis());
        if !self
            .progress(&ingestion.tenant, job, ingestion.run.id, details)
            .await?
        {
            return Ok(());
        }
        // A fault the sandbox asked for (test control) fails the stage without reading.
        let audience_id = ingestion.run.audience_id;
        let fault = self
            .take_run_fault(&ingestion.tenant, audience_id, StageName::DatasetIngest)
            .await?;
        if let Some(message) = fault {
            let scan = Scan {
                failure: Some(message),
                ..Scan::default()
            };
            return self.end_dataset(job, ingestion, scan).await;
        }
        let source = &ingestion.spec.source_spec.params;
        let selected = ingest::select_files(ingestion.zone.take(), source, ingestion.run.window);
        let scan = match selected {
            Ok((zone, files)) => match self.stream(job, &mut ingestion, zone, files).await? {
                Streamed::Scanned(scan) => scan,
                Streamed::Stopped => return Ok(()),
                Streamed::RunGone => return self.close(job).await,
            },
            Err(message) => Scan {
                failure: Some(message),
                ..Scan::default()
            },
        };
        self.end_dataset(job, ingestion, scan).await
    }

    /// The run of a dataset job, if it is still in progress, with what it reads.
    async fn open_ingestion(&self, job: &Job) -> anyhow::Result<Option<Ingestion>> {
        let started = self.sandbox_now(job.sandbox_id).await?;
        let clock_start = Instant::now();
        let mut conn = self.pool.acquire().await?;
        let tenant = self.tenant(&mut conn, job.sandbox_id).await?;
        let run = storage::ais::run_by_id(&mut conn, &tenant, job.target_id).await?;
        let Some(run) = run.filter(|r| r.status == RunStatus::Processing) else {
            return Ok(None);
        };
        let Some(ext) = storage::ais::external(&mut conn, &tenant, run.audience_id).await? else {
            return Ok(None);
        };
        // A run reads its own sandbox's zone and nothing else.
        let zone = storage::landing::account_of(&mut conn, &tenant)
            .await?
            .and_then(|account| Zone::new(&self.cfg.landing_dir, &account));
        Ok(Some(Ingestion {
            tenant,
            run,
            spec: ext.spec,
            zone,
            started,
            clock_start,
        }))
    }

    /// Scans the files on a blocking thread and stages each batch of identities as it comes,
    /// showing the counts (and renewing the lease) as it goes.
    async fn stream(
        &self,
        job: &Job,
        ingestion: &mut Ingestion,
        zone: Zone,
        files: Vec<String>,
    ) -> anyhow::Result<Streamed> {
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<(Vec<String>, Counts)>(2);
        let fields = ingestion.spec.fields.clone();
        let limits = self.cfg.limits;
        let scanning = tokio::task::spawn_blocking(move || {
            ingest::scan_files(&files, &zone, &fields, limits, &mut |batch, counts| {
                sender.blocking_send((batch, counts.clone())).is_ok()
            })
        });
        let (tenant, run) = (&ingestion.tenant, &mut ingestion.run);
        let mut shown: Option<Instant> = None;
        while let Some((batch, counts)) = receiver.recv().await {
            if !batch.is_empty() {
                let staging = {
                    let mut conn = self.pool.acquire().await?;
                    storage::ais::stage_members(&mut conn, tenant, job, run.id, &batch).await?
                };
                match staging {
                    Staging::Staged => {}
                    Staging::NotOurs => return Ok(Streamed::Stopped),
                    Staging::RunGone => {
                        drop(receiver);
                        let _ = scanning.await;
                        return Ok(Streamed::RunGone);
                    }
                }
            }
            if shown.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY) {
                shown = Some(Instant::now());
                run.details.show_progress(&counts);
                if !self.progress(tenant, job, run.id, &run.details).await? {
                    return Ok(Streamed::Stopped);
                }
            }
        }
        let scan = scanning.await?;
        Ok(match scan.cancelled {
            true => Streamed::Stopped,
            false => Streamed::Scanned(scan),
        })
    }

    /// Ends DATASET_INGEST in one transaction holding the claim: the run fails (the job ends),
    /// or its details are written and the job moves on to the profile step.
    async fn end_dataset(&self, job: &Job, ingestion: Ingestion, scan: Scan) -> anyhow::Result<()> {
        // The sandbox's time for the run; the server's for the job queue.
        let now = self.sandbox_now(job.sandbox_id).await?;
        let server_now = self.now();
        let Ingestion {
            tenant,
            mut run,
            started,
            clock_start,
            ..
        } = ingestion;
        let (good, bad) = (scan.counts.good, scan.counts.bad);
        let failed = run.details.end_dataset(
            DatasetReport {
                files: scan.files,
                counts: scan.counts,
                errors: scan.errors,
                failure: scan.failure,
            },
            StageTiming {
                started_at: started.timestamp_millis(),
                completed_at: now.timestamp_millis(),
                duration_ms: elapsed_ms(clock_start),
            },
        );
        let mut tx = self.pool.begin().await?;
        if !jobs::lock_claimed(&mut tx, job).await? {
            return Ok(());
        }
        match &failed {
            Some(message) => {
                // What was staged is left to the maintenance sweep: the job ends here.
                storage::ais::finish_run(
                    &mut tx,
                    &tenant,
                    run.id,
                    RunStatus::Failed,
                    &run.details,
                    Some(message),
                    now,
                )
                .await?;
                jobs::finish(&mut tx, job, server_now).await?;
            }
            None => {
                storage::ais::update_run_details(&mut tx, &tenant, run.id, &run.details, now)
                    .await?;
                jobs::advance(&mut tx, job, JobStep::Profile, Some(job.claim), server_now).await?;
            }
        }
        tx.commit().await?;
        self.monitoring.stage(
            StageName::DatasetIngest.as_str(),
            run.details.dataset.status.as_str(),
            clock_start.elapsed().as_secs_f64(),
        );
        self.monitoring.rows_ingested(good, bad);
        Ok(())
    }

    /// PROFILE_STORE_INGEST: moves the distinct identities the dataset stage staged into the
    /// run's own member set, then points the audience at it.
    pub(super) async fn profile_ingest(&self, job: &Job) -> anyhow::Result<()> {
        let started = self.sandbox_now(job.sandbox_id).await?;
        let clock_start = Instant::now();
        let staged = job.staged_claim.ok_or_else(|| {
            anyhow!(
                "job {} reached the profile step without staged rows",
                job.id
            )
        })?;
        let (tenant, run) = {
            let mut conn = self.pool.acquire().await?;
            let tenant = self.tenant(&mut conn, job.sandbox_id).await?;
            let run = storage::ais::run_by_id(&mut conn, &tenant, job.target_id).await?;
            (tenant, run)
        };
        if let Some(run) = run.filter(|r| r.status == RunStatus::Processing) {
            let stage = StageName::ProfileStoreIngest;
            if let Some(message) = self.take_run_fault(&tenant, run.audience_id, stage).await? {
                return self.fail_by_fault(job, &tenant, &message).await;
            }
        }
        let Some(stored) = self.store_members(job, &tenant, staged).await? else {
            return Ok(());
        };
        let timing = |now: DateTime<Utc>| StageTiming {
            started_at: started.timestamp_millis(),
            completed_at: now.timestamp_millis(),
            duration_ms: elapsed_ms(clock_start),
        };
        if self.switch_members(job, &tenant, stored, timing).await? {
            let seconds = clock_start.elapsed().as_secs_f64();
            self.monitoring.stage(
                StageName::ProfileStoreIngest.as_str(),
                RunStatus::Success.as_str(),
                seconds,
            );
        }
        Ok(())
    }

    /// Moves the staged rows into the run's member set, [`MOVE_BATCH`] per transaction (each
    /// holding the claim, renewing the lease and adding to the job's count, so a takeover
    /// carries on where the last commit left off). Returns the identities stored in all, or
    /// `None` when the job is no longer this worker's or has ended (its run gone or final).
    async fn store_members(
        &self,
        job: &Job,
        tenant: &Tenant,
        staged: uuid::Uuid,
    ) -> anyhow::Result<Option<i64>> {
        loop {
            let mut tx = self.pool.begin().await?;
            if !jobs::lock_claimed(&mut tx, job).await? {
                return Ok(None);
            }
            let run = storage::ais::run_by_id(&mut tx, tenant, job.target_id).await?;
            let Some(run) = run.filter(|r| r.status == RunStatus::Processing) else {
                // Deleted or ended meanwhile: the set written so far is left to the sweep.
                jobs::finish(&mut tx, job, self.now()).await?;
                tx.commit().await?;
                return Ok(None);
            };
            let moved = storage::ais::move_staged_batch(
                &mut tx,
                tenant,
                run.audience_id,
                run.id,
                staged,
                MOVE_BATCH,
            )
            .await?;
            let lease_until = self.now() + self.cfg.lease;
            let stored = jobs::add_members_stored(&mut tx, job, moved.stored, lease_until).await?;
            tx.commit().await?;
            if moved.taken < MOVE_BATCH {
                return Ok(Some(stored));
            }
        }
    }

    /// The run's member set becomes the audience's members, in one small transaction: the count
    /// and the expiry recorded, the UPS metrics written, PROFILE_STORE_INGEST and the run ended.
    /// Readers see the old members until it commits. `false` when there was nothing to end.
    /// Lock order: job, external audience, UPS audience, run (see
    /// `service::audiences::delete_cascade`).
    async fn switch_members(
        &self,
        job: &Job,
        tenant: &Tenant,
        stored: i64,
        timing: impl Fn(DateTime<Utc>) -> StageTiming,
    ) -> anyhow::Result<bool> {
        // The sandbox's time for the run and the data's expiry; the server's for the job queue.
        let now = self.sandbox_now(job.sandbox_id).await?;
        let server_now = self.now();
        let mut tx = self.pool.begin().await?;
        if !jobs::lock_claimed(&mut tx, job).await? {
            return Ok(false);
        }
        let run = storage::ais::run_by_id(&mut tx, tenant, job.target_id).await?;
        let ext = match &run {
            Some(r) if r.status == RunStatus::Processing => {
                storage::ais::lock_external(&mut tx, tenant, r.audience_id).await?
            }
            _ => None,
        };
        let (Some(mut run), Some(ext)) = (run, ext) else {
            jobs::finish(&mut tx, job, server_now).await?;
            tx.commit().await?;
            return Ok(false);
        };
        let expires_at = ext.spec.data_expiry(now);
        storage::ais::switch_members(&mut tx, tenant, ext.id, run.id, stored, expires_at).await?;
        write_metrics(&mut tx, tenant, ext.id, stored, false, now).await?;
        run.details
            .end_profile(u64::try_from(stored).unwrap_or(0), timing(now));
        storage::ais::finish_run(
            &mut tx,
            tenant,
            run.id,
            RunStatus::Success,
            &run.details,
            None,
            now,
        )
        .await?;
        jobs::finish(&mut tx, job, server_now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Uses one run of a fault the sandbox asked for (test control, `POST /_local/faults`) for
    /// this audience at `stage`, if any; its message.
    async fn take_run_fault(
        &self,
        tenant: &Tenant,
        audience_id: uuid::Uuid,
        stage: StageName,
    ) -> anyhow::Result<Option<String>> {
        let mut conn = self.pool.acquire().await?;
        Ok(storage::control::take_run_fault(&mut conn, tenant, audience_id, stage).await?)
    }

    /// Fails the job's run at its open stage with a fault's message and ends the job, holding
    /// the claim.
    async fn fail_by_fault(&self, job: &Job, tenant: &Tenant, message: &str) -> anyhow::Result<()> {
        let now = self.sandbox_now(job.sandbox_id).await?;
        let mut tx = self.pool.begin().await?;
        if !jobs::lock_claimed(&mut tx, job).await? {
            return Ok(());
        }
        super::fail_run(&mut tx, tenant, job.target_id, |_| message.to_owned(), now).await?;
        jobs::finish(&mut tx, job, self.now()).await?;
        tx.commit().await?;
        Ok(())
    }
}
