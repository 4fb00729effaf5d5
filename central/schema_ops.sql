-- Operations tables (registry, access, acknowledgements, incidents, delivery).
-- Portable SQL, as schema.sql: runs unchanged on SQLite and PostgreSQL; ids come from Python.

-- Registry -------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS sites (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    meta       TEXT NOT NULL,  -- JSON object
    updated_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE IF NOT EXISTS assets (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    type       TEXT NOT NULL,
    site       TEXT,
    lat        DOUBLE PRECISION,
    lon        DOUBLE PRECISION,
    radius_km  DOUBLE PRECISION NOT NULL,
    geometry   TEXT,           -- JSON [[lat, lon], ...] polygon ring, or NULL
    meta       TEXT NOT NULL,  -- JSON object: rated speed, warning levels, control values, ...
    source     TEXT NOT NULL,  -- config | api | import
    updated_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE IF NOT EXISTS asset_bindings (
    gateway TEXT NOT NULL,
    device  TEXT NOT NULL,
    asset   TEXT NOT NULL,
    PRIMARY KEY (gateway, device)
);
CREATE INDEX IF NOT EXISTS asset_bindings_by_asset ON asset_bindings (asset);

-- Bumped on every registry change, so other processes' caches know to reload.
CREATE TABLE IF NOT EXISTS registry_version (
    id      INTEGER PRIMARY KEY,
    version BIGINT NOT NULL
);

-- Access ---------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS api_tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,  -- sha256 hex of the token; the token is never stored
    created_at  DOUBLE PRECISION NOT NULL,
    revoked_at  DOUBLE PRECISION
);

CREATE TABLE IF NOT EXISTS audit_log (
    id           TEXT PRIMARY KEY,
    at_time      DOUBLE PRECISION NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    target       TEXT NOT NULL,
    before_state TEXT,  -- JSON or NULL
    after_state  TEXT   -- JSON or NULL
);
CREATE INDEX IF NOT EXISTS audit_log_by_time ON audit_log (at_time);

-- Warning lifecycle ----------------------------------------------------------------------
-- Operator state of a warning (central/warnings.py keeps the CAP side in `warnings`).
CREATE TABLE IF NOT EXISTS warning_ops (
    warning_id      TEXT PRIMARY KEY,
    acknowledged_by TEXT,
    acknowledged_at DOUBLE PRECISION,
    assignee        TEXT,
    assigned_at     DOUBLE PRECISION,
    cleared_by      TEXT,
    incident        TEXT
);

CREATE TABLE IF NOT EXISTS incidents (
    id                 TEXT PRIMARY KEY,
    site               TEXT,
    level              TEXT,  -- highest level of the active members; NULL when closed
    peak_level         TEXT NOT NULL,
    active             INTEGER NOT NULL,
    opened_event_time  DOUBLE PRECISION NOT NULL,
    last_event_time    DOUBLE PRECISION NOT NULL,
    closed_event_time  DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS incidents_active ON incidents (active, site);

CREATE TABLE IF NOT EXISTS incident_members (
    incident     TEXT NOT NULL,
    warning_id   TEXT NOT NULL,
    asset        TEXT NOT NULL,
    warning_type TEXT NOT NULL,
    level        TEXT NOT NULL,
    active       INTEGER NOT NULL,
    joined_event_time DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (incident, warning_id)
);
CREATE INDEX IF NOT EXISTS incident_members_by_warning ON incident_members (warning_id);
