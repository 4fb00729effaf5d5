-- Central storage schema. Portable SQL: the same statements run on SQLite and PostgreSQL
-- (central/db.py); no AUTOINCREMENT, no SQLite-only types.

CREATE TABLE IF NOT EXISTS packs_seen (
    gateway     TEXT    NOT NULL,
    epoch       BIGINT  NOT NULL,
    seq         BIGINT  NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    n_records   INTEGER NOT NULL,
    replayed    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (gateway, epoch, seq)
);

CREATE TABLE IF NOT EXISTS readings (
    gateway   TEXT NOT NULL,
    device    TEXT NOT NULL,
    quantity  TEXT NOT NULL,
    t         DOUBLE PRECISION NOT NULL,
    v         DOUBLE PRECISION,
    vs        TEXT,
    vb        INTEGER,
    unit      TEXT,
    ut        DOUBLE PRECISION,
    q         INTEGER,
    epoch     BIGINT NOT NULL,
    seq       BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_by_series ON readings (gateway, device, quantity, t);
-- Retention walks the oldest rows in bounded chunks (central/retention.py).
CREATE INDEX IF NOT EXISTS readings_by_time ON readings (t);

-- A gateway that was unsynchronised tells central how far off its readings were.
CREATE TABLE IF NOT EXISTS clock_corrections (
    gateway  TEXT NOT NULL,
    epoch    BIGINT NOT NULL,
    offset_s DOUBLE PRECISION NOT NULL,
    since    DOUBLE PRECISION NOT NULL,  -- gateway time (unsynchronised scale)
    until    DOUBLE PRECISION NOT NULL,  -- gateway time (unsynchronised scale) at sync
    PRIMARY KEY (gateway, epoch, until)
);

CREATE TABLE IF NOT EXISTS gateways (
    gateway    TEXT PRIMARY KEY,
    site       TEXT NOT NULL,
    state      TEXT NOT NULL,
    epoch      BIGINT,
    last_seen  DOUBLE PRECISION NOT NULL,
    birth      TEXT
);

CREATE TABLE IF NOT EXISTS device_stats (
    gateway    TEXT NOT NULL,
    device     TEXT NOT NULL,
    received   BIGINT NOT NULL DEFAULT 0,
    stored     BIGINT NOT NULL DEFAULT 0,
    duplicates BIGINT NOT NULL DEFAULT 0,
    last_time  DOUBLE PRECISION,
    PRIMARY KEY (gateway, device)
);

CREATE TABLE IF NOT EXISTS rejections (
    gateway TEXT NOT NULL,
    reason  TEXT NOT NULL,
    count   BIGINT NOT NULL DEFAULT 0,
    last_detail TEXT,
    PRIMARY KEY (gateway, reason)
);

CREATE TABLE IF NOT EXISTS alerts (
    identifier  TEXT PRIMARY KEY,
    sender      TEXT NOT NULL,
    sent        TEXT NOT NULL,
    msg_type    TEXT NOT NULL,
    level       TEXT NOT NULL,
    asset       TEXT NOT NULL,
    warning_type TEXT NOT NULL,
    event_time  DOUBLE PRECISION NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    xml         TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS warnings (
    asset        TEXT NOT NULL,
    warning_type TEXT NOT NULL,
    level        TEXT NOT NULL,
    active       INTEGER NOT NULL,
    raised_event_time   DOUBLE PRECISION NOT NULL,
    updated_event_time  DOUBLE PRECISION NOT NULL,
    cleared_event_time  DOUBLE PRECISION,
    message_chain TEXT NOT NULL,  -- JSON list of [sender, identifier, sent]
    id           TEXT PRIMARY KEY
);
CREATE INDEX IF NOT EXISTS warnings_active ON warnings (asset, warning_type, active);

-- Several workers (workers.mode: shared): packs stored by any worker, not yet judged by the
-- one evaluator (the leader). A row leaves in the same transaction as the CAP it caused.
CREATE TABLE IF NOT EXISTS pack_queue (
    gateway     TEXT   NOT NULL,
    epoch       BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    pack        TEXT   NOT NULL,  -- the pack as decoded, re-encoded as SenML JSON
    PRIMARY KEY (gateway, epoch, seq)
);

-- Downsampled numeric readings (central/retention.py): kept after the raw rows expire.
-- bucket is the window's start (POSIX seconds); avg = vsum / n.
CREATE TABLE IF NOT EXISTS readings_1m (
    gateway  TEXT NOT NULL,
    device   TEXT NOT NULL,
    quantity TEXT NOT NULL,
    bucket   DOUBLE PRECISION NOT NULL,
    n        BIGINT NOT NULL,
    vmin     DOUBLE PRECISION NOT NULL,
    vmax     DOUBLE PRECISION NOT NULL,
    vsum     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (gateway, device, quantity, bucket)
);
CREATE INDEX IF NOT EXISTS readings_1m_by_bucket ON readings_1m (bucket);

CREATE TABLE IF NOT EXISTS readings_1h (
    gateway  TEXT NOT NULL,
    device   TEXT NOT NULL,
    quantity TEXT NOT NULL,
    bucket   DOUBLE PRECISION NOT NULL,
    n        BIGINT NOT NULL,
    vmin     DOUBLE PRECISION NOT NULL,
    vmax     DOUBLE PRECISION NOT NULL,
    vsum     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (gateway, device, quantity, bucket)
);
CREATE INDEX IF NOT EXISTS readings_1h_by_bucket ON readings_1h (bucket);

-- Several workers: the leader's fencing token. Each new leader takes the next term; every
-- transaction in which a leader issues warnings first checks that its term is still current.
CREATE TABLE IF NOT EXISTS leader_term (
    id   INTEGER PRIMARY KEY,
    term BIGINT NOT NULL
);
