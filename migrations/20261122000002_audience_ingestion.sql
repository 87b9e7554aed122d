-- AIS: external audiences, their creation operations, ingestion runs, members, and the jobs the
-- background worker carries out. Times that rules compare (expiry, guardrail days, leases) are
-- written from the application's clock, never from now(), so tests can move time.

-- An external audience. `id` is also the id of the UPS audience it creates (written by the worker
-- when the creation operation succeeds); until then `state` is 'creating' and the API does not
-- show it. Name and customAudienceId are reserved at request time, so duplicates are refused
-- synchronously with 409.
CREATE TABLE external_audiences (
    id                  uuid PRIMARY KEY,
    sandbox_id          uuid NOT NULL REFERENCES sandboxes (sandbox_id),
    name                text NOT NULL,
    custom_audience_id  text,
    state               text NOT NULL CHECK (state IN ('creating', 'ready')),
    spec                json NOT NULL,
    created_by          text NOT NULL,
    created_at          timestamptz NOT NULL,
    updated_by          text NOT NULL,
    updated_at          timestamptz NOT NULL,
    run_count           integer NOT NULL DEFAULT 0,
    last_success_run_id uuid,
    profile_count       bigint NOT NULL DEFAULT 0,
    expires_at          timestamptz,
    expired             boolean NOT NULL DEFAULT false,
    CONSTRAINT external_audiences_name_key UNIQUE (sandbox_id, name),
    CONSTRAINT external_audiences_custom_id_key UNIQUE (sandbox_id, custom_audience_id)
);
CREATE INDEX external_audiences_expiry ON external_audiences (expires_at) WHERE NOT expired;

-- The creation operation of an external audience. Kept after the audience is deleted.
CREATE TABLE ais_operations (
    id            uuid PRIMARY KEY,
    sandbox_id    uuid NOT NULL REFERENCES sandboxes (sandbox_id),
    audience_id   uuid NOT NULL,
    audience_name text NOT NULL,
    status        text NOT NULL CHECK (status IN ('PROCESSING', 'SUCCESS', 'FAILED')),
    details       json NOT NULL,
    reason        text,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_by    text NOT NULL,
    updated_at    timestamptz NOT NULL
);

-- An ingestion run. `kind` 'run' is a client's run, 'extend' the re-ingestion of extend-ttl.
CREATE TABLE ais_runs (
    id            uuid PRIMARY KEY,
    sandbox_id    uuid NOT NULL REFERENCES sandboxes (sandbox_id),
    audience_id   uuid NOT NULL REFERENCES external_audiences (id) ON DELETE CASCADE,
    name          text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('run', 'extend')),
    status        text NOT NULL CHECK (status IN ('PROCESSING', 'SUCCESS', 'FAILED')),
    filter_start  bigint NOT NULL,
    filter_end    bigint NOT NULL,
    details       json NOT NULL,
    message       text,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
-- At most one run in progress per audience: the database has the last word.
CREATE UNIQUE INDEX ais_runs_one_processing ON ais_runs (audience_id) WHERE status = 'PROCESSING';
CREATE INDEX ais_runs_by_sandbox_day ON ais_runs (sandbox_id, created_at);
CREATE INDEX ais_runs_by_audience ON ais_runs (audience_id, created_at);

-- Identities read by a run's DATASET_INGEST, tagged with the claim that wrote them so a worker
-- that lost its lease can never mix its rows into the result.
-- The two bulk tables below carry no foreign keys: a key is checked row by row, which made a
-- million-row file spend most of its time in those checks. The code checks the run or audience
-- once per batch, and deleting an external audience deletes their rows explicitly
-- (storage::ais::delete_external).
CREATE TABLE ais_staged_members (
    run_id   uuid NOT NULL,
    claim    uuid NOT NULL,
    identity text NOT NULL
);
CREATE INDEX ais_staged_members_run ON ais_staged_members (run_id, claim);

-- The members of an external audience: one row per distinct identity value.
CREATE TABLE ais_members (
    audience_id uuid NOT NULL,
    identity    text NOT NULL,
    run_id      uuid NOT NULL,
    PRIMARY KEY (audience_id, identity)
);

-- Durable work. A job is claimed by setting `claim` and a lease (`locked_until`); every step ends
-- with a transaction that only commits while the claim is still the job's.
CREATE TABLE ais_jobs (
    id           uuid PRIMARY KEY,
    sandbox_id   uuid NOT NULL REFERENCES sandboxes (sandbox_id),
    kind         text NOT NULL CHECK (kind IN ('create_audience', 'ingest')),
    target_id    uuid NOT NULL,
    step         text NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    run_after    timestamptz NOT NULL,
    claim        uuid,
    locked_by    text,
    locked_until timestamptz,
    staged_claim uuid,
    last_error   text,
    created_at   timestamptz NOT NULL,
    done_at      timestamptz
);
CREATE INDEX ais_jobs_due ON ais_jobs (run_after) WHERE done_at IS NULL;
