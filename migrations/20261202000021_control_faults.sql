-- Test control (/_local, docs/CONTROL.md): faults a sandbox asked for. A 'run' fault makes the
-- next runs of an audience that reach `stage` fail with `message`; a 'request' fault makes the
-- next requests of the sandbox matching `method` and `path` answer `status`. `remaining` is
-- decremented atomically by whoever consumes one (UPDATE ... RETURNING).
CREATE TABLE control_faults (
    id          uuid PRIMARY KEY,
    sandbox_id  uuid NOT NULL REFERENCES sandboxes (sandbox_id),
    kind        text NOT NULL CHECK (kind IN ('run', 'request')),
    audience_id uuid,
    stage       text CHECK (stage IN ('DATASET_INGEST', 'PROFILE_STORE_INGEST')),
    message     text,
    method      text,
    path        text,
    status      integer CHECK (status BETWEEN 400 AND 599),
    count       integer NOT NULL CHECK (count >= 1),
    remaining   integer NOT NULL CHECK (remaining BETWEEN 0 AND count),
    created_at  timestamptz NOT NULL,
    CHECK (CASE kind
        WHEN 'run' THEN audience_id IS NOT NULL AND stage IS NOT NULL AND message IS NOT NULL
        ELSE method IS NOT NULL AND path IS NOT NULL AND status IS NOT NULL END)
);
-- What the request gate asks on every request of a sandbox when CONTROL_API is on: only faults
-- with something left are in the index, so a sandbox without any costs one empty index probe.
CREATE INDEX control_faults_live ON control_faults (sandbox_id, kind, created_at) WHERE remaining > 0;
