-- The per-sandbox audience counts (20261122000003) were added to the slot `pg_backend_pid() % 16`.
-- Two connections whose pids share that remainder update one row, so one waits for the other's
-- commit (a WAL flush): under a load of concurrent creates, a third of each insert's time was
-- spent waiting there. Each writer now takes a slot nobody else is writing: it tries the
-- transaction-scoped advisory lock of slot pid % 64, then the next ones, and adds to the first it
-- gets (a transaction that already holds one gets the same one again). Only when all 64 are held
-- does it wait on the last one tried. The totals are unchanged: the list still sums the slots.
CREATE OR REPLACE FUNCTION audience_counts_add(p_sandbox uuid, p_state text, p_delta bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    first int := pg_backend_pid() % 64;
    key int := hashtext(p_sandbox::text || '/' || p_state);
    slot_no smallint;
BEGIN
    FOR i IN 0..63 LOOP
        slot_no := ((first + i) % 64)::smallint;
        -- Two-key advisory locks (class 11, then the sandbox and state) share no keys with the
        -- one-key locks the server takes elsewhere.
        EXIT WHEN pg_try_advisory_xact_lock(11, key # (slot_no::int << 24));
    END LOOP;
    INSERT INTO audience_counts (sandbox_id, lifecycle_state, slot, n)
    VALUES (p_sandbox, p_state, slot_no, p_delta)
    ON CONFLICT (sandbox_id, lifecycle_state, slot) DO UPDATE SET n = audience_counts.n + EXCLUDED.n;
END
$$;
