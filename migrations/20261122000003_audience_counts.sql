-- Per-sandbox audience counts by lifecycle state, kept by a trigger in the same transaction as
-- every write, so the default list's totalCount is a sum of a few rows instead of a count of the
-- sandbox's audiences. Each connection adds to its own slot, so concurrent writers in one sandbox
-- do not queue on one counter row.
CREATE TABLE audience_counts (
    sandbox_id      uuid NOT NULL,
    lifecycle_state text NOT NULL,
    slot            smallint NOT NULL,
    n               bigint NOT NULL,
    PRIMARY KEY (sandbox_id, lifecycle_state, slot)
);

CREATE FUNCTION audience_counts_add(p_sandbox uuid, p_state text, p_delta bigint) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO audience_counts (sandbox_id, lifecycle_state, slot, n)
    VALUES (p_sandbox, p_state, (pg_backend_pid() % 16)::smallint, p_delta)
    ON CONFLICT (sandbox_id, lifecycle_state, slot) DO UPDATE SET n = audience_counts.n + EXCLUDED.n
$$;

CREATE FUNCTION audience_counts_track() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM audience_counts_add(NEW.sandbox_id, NEW.lifecycle_state, 1);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM audience_counts_add(OLD.sandbox_id, OLD.lifecycle_state, -1);
    ELSIF OLD.lifecycle_state IS DISTINCT FROM NEW.lifecycle_state OR OLD.sandbox_id <> NEW.sandbox_id THEN
        PERFORM audience_counts_add(OLD.sandbox_id, OLD.lifecycle_state, -1);
        PERFORM audience_counts_add(NEW.sandbox_id, NEW.lifecycle_state, 1);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER audiences_counted
    AFTER INSERT OR DELETE OR UPDATE OF lifecycle_state, sandbox_id ON audiences
    FOR EACH ROW EXECUTE FUNCTION audience_counts_track();

INSERT INTO audience_counts (sandbox_id, lifecycle_state, slot, n)
SELECT sandbox_id, lifecycle_state, 0, count(*) FROM audiences GROUP BY sandbox_id, lifecycle_state;
