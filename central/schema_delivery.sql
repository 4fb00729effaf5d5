-- Delivery tables (central/delivery): webhook subscriptions and their outstanding deliveries.
-- Portable SQL, as schema.sql; loaded (idempotently) by central/delivery/webhooks.py.

CREATE TABLE IF NOT EXISTS webhook_subscriptions (
    id          TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    secret      TEXT NOT NULL,   -- HMAC key; never returned by the API after creation
    levels      TEXT,            -- JSON list, NULL: every level
    types       TEXT,            -- JSON list of warning types, NULL: every type
    sites       TEXT,            -- JSON list of site ids, NULL: every site
    active      INTEGER NOT NULL DEFAULT 1,
    created_at  DOUBLE PRECISION NOT NULL
);

-- One row per (subscription, CAP message); its id is the receiver's idempotency key.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id              TEXT PRIMARY KEY,
    subscription    TEXT NOT NULL,
    alert           TEXT NOT NULL,
    body            TEXT NOT NULL,
    state           TEXT NOT NULL,  -- pending | delivered | dead
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    last_error      TEXT,
    created_at      DOUBLE PRECISION NOT NULL,
    finished_at     DOUBLE PRECISION,
    UNIQUE (subscription, alert)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);

-- How far the alerts table has been turned into deliveries (created_at of the last alert).
CREATE TABLE IF NOT EXISTS delivery_cursor (
    name  TEXT PRIMARY KEY,
    value DOUBLE PRECISION NOT NULL
);
