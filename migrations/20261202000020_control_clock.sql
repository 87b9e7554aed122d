-- Test control (/_local, docs/CONTROL.md): a sandbox's clock offset. Every replica reads it from
-- here, so they agree on the sandbox's time. No row: no offset.
CREATE TABLE control_clocks (
    sandbox_id     uuid PRIMARY KEY REFERENCES sandboxes (sandbox_id),
    offset_seconds bigint NOT NULL,
    updated_at     timestamptz NOT NULL
);
