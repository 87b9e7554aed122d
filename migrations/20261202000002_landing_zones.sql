-- Data Landing Zones: one per sandbox, created on first use. `account_name` routes the Azure Blob
-- URLs (`<PUBLIC_URL>/<account_name>/dlz-user-container/...`) and names the zone's folder under
-- LANDING_DIR. The current credential is `credential_id` (signed into SAS tokens as
-- `si=dlz-<credential_id>`); refreshing replaces it, which revokes every older token.
CREATE TABLE landing_zones (
    sandbox_id            uuid PRIMARY KEY REFERENCES sandboxes (sandbox_id),
    account_name          text NOT NULL CHECK (account_name ~ '^[a-z0-9]{3,24}$'),
    credential_id         uuid NOT NULL,
    credential_expires_at timestamptz NOT NULL,
    created_at            timestamptz NOT NULL,
    rotated_at            timestamptz NOT NULL,
    CONSTRAINT landing_zones_account_name_key UNIQUE (account_name)
);

-- The key that signs SAS tokens: one row, created by the first server that needs it, shared by
-- every replica and kept across restarts.
CREATE TABLE landing_secret (
    id         smallint PRIMARY KEY CHECK (id = 1),
    secret     bytea NOT NULL CHECK (length(secret) >= 32),
    created_at timestamptz NOT NULL DEFAULT now()
);
