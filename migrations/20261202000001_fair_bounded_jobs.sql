-- Jobs that are fair across sandboxes, count every attempt, and never hold a transaction or a lock
-- sized by a file; member sets swapped by a pointer; finished work purged. See docs/AIS.md.

-- Which sandbox the worker served last. A claim goes to the sandbox with due work whose turn is
-- the oldest (a sandbox never served first), so one tenant's queue cannot starve another's.
CREATE SEQUENCE ais_job_turn_seq;
CREATE TABLE ais_job_turns (
    sandbox_id uuid PRIMARY KEY REFERENCES sandboxes (sandbox_id) ON DELETE CASCADE,
    turn       bigint NOT NULL
);
CREATE INDEX ais_jobs_due_by_sandbox ON ais_jobs (sandbox_id, run_after) WHERE done_at IS NULL;
-- Open jobs by what they work on: the maintenance sweep asks whether a row set is still wanted.
CREATE INDEX ais_jobs_open_target ON ais_jobs (target_id) WHERE done_at IS NULL;
-- Retention: finished jobs and operations are purged oldest first.
CREATE INDEX ais_jobs_finished ON ais_jobs (done_at) WHERE done_at IS NOT NULL;
CREATE INDEX ais_operations_finished ON ais_operations (updated_at) WHERE status <> 'PROCESSING';

-- Members the profile step has stored so far. Its batches commit one by one, so a worker that
-- takes the step over carries on from this count.
ALTER TABLE ais_jobs ADD COLUMN members_stored bigint NOT NULL DEFAULT 0;

-- An audience's members are the rows of one run: `members_run_id` points at that run (NULL when
-- the data expired or was never ingested). A run writes its set beside the current one and the
-- pointer moves in one small transaction; sets nobody points at are deleted in batches by the
-- maintenance sweep.
ALTER TABLE external_audiences ADD COLUMN members_run_id uuid;
UPDATE external_audiences SET members_run_id = last_success_run_id
WHERE NOT expired AND last_success_run_id IS NOT NULL;
ALTER TABLE ais_members DROP CONSTRAINT ais_members_pkey;
ALTER TABLE ais_members ADD PRIMARY KEY (audience_id, run_id, identity);
