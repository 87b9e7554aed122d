-- Sandboxes are registered on first use; (org, name) is the tenant every resource belongs to.
CREATE TABLE sandboxes (
    sandbox_id   uuid PRIMARY KEY,
    org_id       text NOT NULL,
    name         text NOT NULL,
    sandbox_type text NOT NULL CHECK (sandbox_type IN ('production', 'development')),
    is_default   boolean NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sandboxes_org_name_key UNIQUE (org_id, name)
);

-- One row per UPS audience. `body` is the audience exactly as the API renders it, so reads send it
-- without decoding; the other columns are copies of the fields that filters, sorts and rules need.
CREATE TABLE audiences (
    id              uuid PRIMARY KEY,
    sandbox_id      uuid NOT NULL REFERENCES sandboxes (sandbox_id),
    audience_id     text NOT NULL,
    namespace       text NOT NULL,
    name            text NOT NULL,
    description     text,
    audience_type   text NOT NULL,
    origin_name     text,
    lifecycle_state text NOT NULL CHECK (lifecycle_state IN ('draft', 'published', 'inactive')),
    dataset_id      text,
    created_by      text,
    schema_name     text NOT NULL,
    creation_time   bigint NOT NULL,
    update_time     bigint NOT NULL,
    etag            text NOT NULL,
    dependencies    uuid[] NOT NULL DEFAULT '{}',
    body            json NOT NULL,
    CONSTRAINT audiences_namespace_audience_id_key UNIQUE (sandbox_id, namespace, audience_id)
);

-- Every list query is scoped to one sandbox and ordered by one whitelisted column then id; these
-- indexes keep both the page and its offset inside that sandbox's rows. `lifecycle_state` is
-- included so the default "hide inactive" filter can be checked from the index alone.
CREATE INDEX audiences_by_update_time ON audiences (sandbox_id, update_time, id) INCLUDE (lifecycle_state);
CREATE INDEX audiences_by_creation_time ON audiences (sandbox_id, creation_time, id) INCLUDE (lifecycle_state);
CREATE INDEX audiences_by_name ON audiences (sandbox_id, name, id) INCLUDE (lifecycle_state);
CREATE INDEX audiences_by_lifecycle_state ON audiences (sandbox_id, lifecycle_state, id);
CREATE INDEX audiences_by_audience_id ON audiences (sandbox_id, audience_id, id) INCLUDE (lifecycle_state);
CREATE INDEX audiences_by_namespace ON audiences (sandbox_id, namespace, id) INCLUDE (lifecycle_state);
-- Who depends on an audience: `dependencies @> ARRAY[id]`. Most audiences reference none; leaving
-- them out keeps inserts cheap.
CREATE INDEX audiences_dependencies ON audiences USING gin (dependencies) WHERE dependencies <> '{}';
