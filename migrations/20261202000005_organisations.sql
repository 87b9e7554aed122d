-- Organisations, registered with their first sandbox, so that the server can cap how many there
-- are (MAX_ORGANISATIONS): in the open auth mode any caller names any organisation, and each new
-- name would otherwise be a new tenant.
CREATE TABLE organisations (
    org_id        text PRIMARY KEY,
    registered_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO organisations (org_id)
SELECT DISTINCT org_id FROM sandboxes
ON CONFLICT DO NOTHING;

ALTER TABLE sandboxes
    ADD CONSTRAINT sandboxes_org_registered
    FOREIGN KEY (org_id) REFERENCES organisations (org_id);
