-- Every state the AIS side reads back is checked by the database too, as the code's enums spell
-- them (src/domain/external.rs, run.rs, job.rs): a row the code could not decode cannot be
-- written. The states of `external_audiences`, `ais_operations` and `ais_runs` and the kind of
-- `ais_jobs` had their CHECKs from the start; these are the ones that were missing.
-- Adding them scans each table once, in this migration's transaction: the job and operation
-- tables are kept small by the retention purge, the runs by RUNS_PER_AUDIENCE.

-- A job's step belongs to its kind: a creation has one step, an ingestion one per run stage.
ALTER TABLE ais_jobs ADD CONSTRAINT ais_jobs_step_check CHECK (
    (kind = 'create_audience' AND step = 'create')
    OR (kind = 'ingest' AND step IN ('dataset', 'profile'))
);

-- A run's details are its two stages, in order, each with a known status.
ALTER TABLE ais_runs ADD CONSTRAINT ais_runs_details_check CHECK (
    CASE WHEN json_typeof(details) = 'array' THEN
        json_array_length(details) = 2
        AND details -> 0 ->> 'stage' = 'DATASET_INGEST'
        AND details -> 1 ->> 'stage' = 'PROFILE_STORE_INGEST'
        AND details -> 0 ->> 'status' IN ('PENDING', 'PROCESSING', 'SUCCESS', 'FAILED', 'SKIPPED')
        AND details -> 1 ->> 'status' IN ('PENDING', 'PROCESSING', 'SUCCESS', 'FAILED', 'SKIPPED')
    ELSE false END
);

-- The definitions kept with external audiences and operations are objects.
ALTER TABLE external_audiences ADD CONSTRAINT external_audiences_spec_check
    CHECK (json_typeof(spec) = 'object');
ALTER TABLE ais_operations ADD CONSTRAINT ais_operations_details_check
    CHECK (json_typeof(details) = 'object');
