"""Central storage: idempotent ingest keyed by (gateway, epoch, seq), alerts, warnings, stats.

SQLite (one process) or PostgreSQL (one or several workers), through ``central/db.py``: the
same schema files and statements on both (``ON CONFLICT … DO …``, ``RETURNING``); the few
dialect differences branch on ``db.dialect`` where they are written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from central.db import Database, PostgresDatabase, SqliteDatabase, open_database
from central.timecheck import (
    EARLIEST_PLAUSIBLE,
    FUTURE_TOLERANCE_S,
    TIME_CORRECTED,
    TIME_IMPLAUSIBLE,
    TIME_OK,
    TIME_UNSYNCED,
)
from cloud_bridge.senml import Pack, decode_pack, encode_pack


@dataclass(frozen=True, slots=True)
class IngestResult:
    new: list[Pack]
    duplicates: list[Pack]


@dataclass(frozen=True, slots=True)
class QueuedPack:
    """A stored pack waiting for the evaluator (several workers)."""

    pack: Pack
    received_at: float


class QueueClaimLost(RuntimeError):
    """Another evaluator took queued packs first: this one is no longer the leader."""


@dataclass(frozen=True, slots=True)
class AlertRow:
    identifier: str
    sender: str
    sent: str
    msg_type: str
    level: str
    asset: str
    warning_type: str
    event_time: float
    created_at: float
    xml: bytes
    late: bool = False


@dataclass(slots=True)
class WarningRow:
    id: str
    asset: str
    warning_type: str
    level: str
    active: bool
    raised_event_time: float
    updated_event_time: float
    cleared_event_time: float | None
    message_chain: list[tuple[str, str, str]]
    late: bool = False


_SCHEMA_LOCK = 0x5E47_5C00  # advisory lock key (with the schema's name) for schema changes
_READING_COLUMNS = (
    "gateway",
    "device",
    "quantity",
    "t",
    "v",
    "vs",
    "vb",
    "unit",
    "ut",
    "q",
    "epoch",
    "seq",
    "tq",
)
# Rows per multi-row VALUES statement (SQLite allows 32,766 parameters; PostgreSQL 65,535).
_VALUES_CHUNK = 400


def open_store_database(target: str | Path | Database) -> Database:
    """A Database from a URL (``sqlite:///PATH``, ``postgresql://…``), a path, or as given."""
    if isinstance(target, str) and "://" in target:
        return open_database(target)
    if isinstance(target, str | Path):
        return SqliteDatabase(target)
    return target


class Store:
    def __init__(self, target: str | Path | Database, *, queue_packs: bool = False) -> None:
        # The shared interface (central/db.py); other modules keep their tables through it.
        self.db = open_store_database(target)
        self.dialect = self.db.dialect
        # Several workers: every new pack is also queued (pack_queue) for the one evaluator.
        self.queue_packs = queue_packs
        if self.dialect == "postgresql":
            with self.db.transaction():
                # Workers starting together: one creates and migrates, the others wait
                # (concurrent CREATE TABLE IF NOT EXISTS can fail on PostgreSQL).
                self.db.execute(
                    "SELECT pg_advisory_xact_lock(?, hashtext(current_schema()))",
                    (_SCHEMA_LOCK,),
                )
                self._create_schema()
        else:
            self._create_schema()  # executescript commits by itself: no outer transaction
        greatest = "MAX" if self.dialect == "sqlite" else "GREATEST"
        self._device_stats_sql = (
            "INSERT INTO device_stats (gateway, device, received, stored, duplicates, last_time)"
            " VALUES {values} ON CONFLICT (gateway, device) DO UPDATE SET"
            " received = device_stats.received + excluded.received,"
            " stored = device_stats.stored + excluded.stored,"
            " duplicates = device_stats.duplicates + excluded.duplicates,"
            f" last_time = {greatest}(COALESCE(device_stats.last_time, 0),"
            " COALESCE(excluded.last_time, 0))"
        )

    def _create_schema(self) -> None:
        schemas = resources.files("central")
        for name in ("schema.sql", "schema_ops.sql", "schema_delivery.sql"):
            self.db.script(schemas.joinpath(name).read_text())
        self._migrate()

    def _columns(self, table: str) -> set[str]:
        if self.dialect == "sqlite":
            return self.db.columns(table)
        rows = self.db.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ?",
            (table,),
        )
        return {r[0] for r in rows}

    def _migrate(self) -> None:
        """Columns added after the first schema, for files created before them."""
        added = (
            # Alerts not yet confirmed on MQTT are re-published after a reconnect or restart.
            ("alerts", "published", "INTEGER NOT NULL DEFAULT 0"),
            # Warnings judged from a replayed backlog, reported late.
            ("alerts", "late", "INTEGER NOT NULL DEFAULT 0"),
            ("warnings", "late", "INTEGER NOT NULL DEFAULT 0"),
            # Time quality (central/timecheck.py): 0 ok, 1 unsynced, 2 corrected, 3 implausible.
            ("readings", "tq", "INTEGER NOT NULL DEFAULT 0"),
        )
        for table, column, ddl in added:
            if column not in self._columns(table):
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}")
        self.db.execute(
            "CREATE INDEX IF NOT EXISTS readings_time_flags ON readings (gateway, epoch, tq)"
            " WHERE tq <> 0"
        )
        # Publishing looks for unpublished alerts after every warning: no scan of them all.
        self.db.execute(
            "CREATE INDEX IF NOT EXISTS alerts_unpublished ON alerts (created_at)"
            " WHERE published = 0"
        )

    def close(self) -> None:
        self.db.close()

    # -- ingest --------------------------------------------------------------------------
    def ingest(self, packs: Sequence[Pack], received_at: float) -> IngestResult:
        """Store every pack not seen before, in one transaction; report the duplicates."""
        with self.db.transaction():
            fresh = self._claim(packs, received_at)
            new: list[Pack] = []
            duplicates: list[Pack] = []
            for pack in packs:
                if pack.key in fresh:
                    fresh.discard(pack.key)  # a pack twice in one batch: the second is a repeat
                    new.append(pack)
                else:
                    duplicates.append(pack)
            rows: list[tuple] = []
            corrections = []
            known: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
            # (gateway, device) -> [received, stored, duplicates, last time stored]
            tally: dict[tuple[str, str], list] = {}
            earliest, latest = EARLIEST_PLAUSIBLE, received_at + FUTURE_TOLERANCE_S
            for pack in new:
                corrections += _corrections_in(pack)
                gateway, epoch, seq = pack.key
                for r in pack.records:
                    # The hot loop (every reading): time_flag and Record.device inlined.
                    device, _, quantity = r.name.rpartition("/")
                    v = vs = vb = None
                    value = r.value
                    if value.__class__ is float:
                        v = value
                    elif isinstance(value, bool):
                        vb = int(value)
                    elif isinstance(value, str):
                        vs = value
                    else:
                        v = value
                    t = r.time
                    if t < earliest or t > latest:
                        tq = TIME_IMPLAUSIBLE
                    elif r.clock_synced:
                        tq = TIME_OK
                    else:
                        if (gateway, epoch) not in known:
                            known[gateway, epoch] = self._corrections(gateway, epoch)
                        t, tq = _corrected(t, known[gateway, epoch])
                    rows.append(
                        (
                            gateway,
                            device,
                            quantity,
                            t,
                            v,
                            vs,
                            vb,
                            r.unit,
                            r.update_time,
                            r.quality,
                            epoch,
                            seq,
                            tq,
                        )
                    )
                    entry = tally.get((gateway, device))
                    if entry is None:
                        tally[gateway, device] = [1, 1, 0, r.time]
                    else:
                        entry[0] += 1
                        entry[1] += 1
                        if r.time > entry[3]:
                            entry[3] = r.time
            for pack in duplicates:
                for r in pack.records:
                    entry = tally.setdefault((pack.gateway, r.device), [0, 0, 0, None])
                    entry[0] += 1
                    entry[2] += 1
            if rows and isinstance(self.db, PostgresDatabase):
                # COPY: a batch of readings in one stream (executemany pipelines one INSERT
                # per row and was most of the PostgreSQL ingest time in bench.central_ingest).
                self.db.copy_rows("readings", _READING_COLUMNS, rows)
            elif rows:
                self.db.executemany(
                    f"INSERT INTO readings ({', '.join(_READING_COLUMNS)})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
            for gateway, epoch, offset, since, until in corrections:
                self.db.execute(
                    "INSERT INTO clock_corrections (gateway, epoch, offset_s, since, until)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (gateway, epoch, offset, since, until),
                )
                self.db.execute(
                    "UPDATE readings SET t = t + ?, tq = ? WHERE gateway = ? AND epoch = ?"
                    " AND tq = ? AND t BETWEEN ? AND ?",
                    (offset, TIME_CORRECTED, gateway, epoch, TIME_UNSYNCED, since, until),
                )
            self._count_devices([(gw, dev, *counts) for (gw, dev), counts in tally.items()])
            if self.queue_packs and new:
                self._queue(new, received_at)
        return IngestResult(new, duplicates)

    def _count_devices(self, rows: list[tuple]) -> None:
        """One multi-row upsert per chunk (each (gateway, device) once: PostgreSQL refuses
        to update a row twice in one statement)."""
        for start in range(0, len(rows), _VALUES_CHUNK):
            chunk = rows[start : start + _VALUES_CHUNK]
            values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk))
            self.db.execute(
                self._device_stats_sql.format(values=values), [x for row in chunk for x in row]
            )

    def _claim(self, packs: Sequence[Pack], received_at: float) -> set[tuple[str, int, int]]:
        """Insert the packs' keys into packs_seen; the keys that were new (multi-row VALUES
        with RETURNING: one statement per chunk instead of one round trip per pack)."""
        fresh: set[tuple[str, int, int]] = set()
        for start in range(0, len(packs), _VALUES_CHUNK):
            chunk = packs[start : start + _VALUES_CHUNK]
            params: list = []
            for pack in chunk:
                params += (*pack.key, received_at, len(pack.records), int(pack.replayed))
            values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk))
            rows = self.db.execute(
                "INSERT INTO packs_seen (gateway, epoch, seq, received_at, n_records, replayed)"
                f" VALUES {values} ON CONFLICT DO NOTHING RETURNING gateway, epoch, seq",
                params,
            ).fetchall()
            fresh.update((gw, int(ep), int(sq)) for gw, ep, sq in rows)
        return fresh

    def _corrections(self, gateway: str, epoch: int) -> list[tuple[float, float, float]]:
        return self.db.execute(
            "SELECT offset_s, since, until FROM clock_corrections WHERE gateway = ? AND epoch = ?",
            (gateway, epoch),
        ).fetchall()

    # -- evaluation queue (several workers, central/evaluator.py) ------------------------------
    def _queue(self, packs: Sequence[Pack], received_at: float) -> None:
        self.db.executemany(
            "INSERT INTO pack_queue (gateway, epoch, seq, received_at, pack)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(*p.key, received_at, encode_pack(p).decode()) for p in packs],
        )

    def queued_packs(self, limit: int) -> list[QueuedPack]:
        """The oldest queued packs (by the time a worker took them off MQTT)."""
        rows = self.db.execute(
            "SELECT pack, received_at FROM pack_queue ORDER BY received_at, gateway, epoch, seq"
            " LIMIT ?",
            (limit,),
        ).fetchall()
        return [QueuedPack(decode_pack(text.encode()), received_at) for text, received_at in rows]

    def queue_depth(self) -> int:
        (n,) = self.db.execute("SELECT COUNT(*) FROM pack_queue").fetchone()
        return int(n)

    def dequeue(self, keys: Sequence[tuple[str, int, int]]) -> None:
        """Remove judged packs; call inside the transaction that saves what they caused.

        Every key must still be queued: if another evaluator deleted one first (a leader that
        lost its lock but did not notice yet), :class:`QueueClaimLost` rolls everything back.
        On PostgreSQL the row locks make the second evaluator wait for the first to commit.
        """
        removed = 0
        for start in range(0, len(keys), _VALUES_CHUNK):
            chunk = keys[start : start + _VALUES_CHUNK]
            params = [x for key in chunk for x in key]
            values = ", ".join(["(?, ?, ?)"] * len(chunk))
            cursor = self.db.execute(
                f"DELETE FROM pack_queue WHERE (gateway, epoch, seq) IN (VALUES {values})",
                params,
            )
            removed += cursor.rowcount
        if removed != len(keys):
            raise QueueClaimLost(f"{len(keys) - removed} of {len(keys)} packs judged elsewhere")

    def begin_term(self) -> int:
        """A new leader's fencing token: the next term (central/leader.py)."""
        with self.db.transaction():
            (term,) = self.db.execute(
                "INSERT INTO leader_term (id, term) VALUES (1, 1) ON CONFLICT (id)"
                " DO UPDATE SET term = leader_term.term + 1 RETURNING term"
            ).fetchone()
        return int(term)

    def check_term(self, term: int) -> None:
        """Inside the transaction that issues warnings: is ``term`` still the current one?

        On PostgreSQL the row is share-locked until that transaction ends, so a successor's
        ``begin_term`` waits for it, and everything after sees the new term.
        """
        lock = " FOR SHARE" if self.dialect == "postgresql" else ""
        row = self.db.execute(f"SELECT term FROM leader_term WHERE id = 1{lock}").fetchone()
        current = int(row[0]) if row else None
        if current != term:
            raise QueueClaimLost(f"leader term {term} superseded by {current}")

    def record_rejection(self, gateway: str, reason: str, detail: str) -> None:
        self.db.execute(
            "INSERT INTO rejections (gateway, reason, count, last_detail) VALUES (?, ?, 1, ?)"
            " ON CONFLICT (gateway, reason) DO UPDATE SET count = rejections.count + 1,"
            " last_detail = excluded.last_detail",
            (gateway, reason, detail[:500]),
        )

    def update_gateway(
        self,
        gateway: str,
        site: str,
        state: str,
        epoch: int | None,
        birth: dict | None,
        when: float,
    ) -> None:
        self.db.execute(
            "INSERT INTO gateways (gateway, site, state, epoch, last_seen, birth)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (gateway) DO UPDATE SET"
            " site = excluded.site, state = excluded.state,"
            " epoch = COALESCE(excluded.epoch, gateways.epoch), last_seen = excluded.last_seen,"
            " birth = COALESCE(excluded.birth, gateways.birth)",
            (gateway, site, state, epoch, when, json.dumps(birth) if birth else None),
        )

    def gateway_births(self) -> dict[str, dict]:
        rows = self.db.execute("SELECT gateway, birth FROM gateways WHERE birth IS NOT NULL")
        return {gw: json.loads(birth) for gw, birth in rows}

    # -- alerts and warnings --------------------------------------------------------------
    def save_alert(self, alert: AlertRow, warning: WarningRow) -> None:
        """The CAP message and the warning's new state, atomically (joins an outer
        transaction: the evaluator commits its queue position with them)."""
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO alerts (identifier, sender, sent, msg_type, level, asset,"
                " warning_type, event_time, created_at, xml, late)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    alert.identifier,
                    alert.sender,
                    alert.sent,
                    alert.msg_type,
                    alert.level,
                    alert.asset,
                    alert.warning_type,
                    alert.event_time,
                    alert.created_at,
                    alert.xml.decode(),
                    int(alert.late),
                ),
            )
            self.db.execute(
                "INSERT INTO warnings (id, asset, warning_type, level, active, raised_event_time,"
                " updated_event_time, cleared_event_time, message_chain, late)"
                " VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET"
                " level = excluded.level, active = excluded.active,"
                " updated_event_time = excluded.updated_event_time,"
                " cleared_event_time = excluded.cleared_event_time,"
                " message_chain = excluded.message_chain",
                (
                    warning.id,
                    warning.asset,
                    warning.warning_type,
                    warning.level,
                    int(warning.active),
                    warning.raised_event_time,
                    warning.updated_event_time,
                    warning.cleared_event_time,
                    json.dumps(warning.message_chain),
                    int(warning.late),
                ),
            )

    def mark_published(self, identifiers: Sequence[str]) -> None:
        with self.db.transaction():
            if self.dialect == "postgresql":
                # No wait for the WAL flush: a mark lost in a crash only re-publishes the same
                # CAP message (same identifier), and the wait sat in every warning's path.
                self.db.execute("SET LOCAL synchronous_commit TO OFF")
            self.db.executemany(
                "UPDATE alerts SET published = 1 WHERE identifier = ?",
                [(i,) for i in identifiers],
            )

    def unpublished_alerts(self) -> list[tuple[str, bytes]]:
        rows = self.db.execute(
            "SELECT identifier, xml FROM alerts WHERE published = 0 ORDER BY created_at"
        )
        return [(ident, xml.encode()) for ident, xml in rows]

    def active_warnings(self) -> list[WarningRow]:
        rows = self.db.execute(
            "SELECT id, asset, warning_type, level, active, raised_event_time, updated_event_time,"
            " cleared_event_time, message_chain, late FROM warnings WHERE active = 1"
        ).fetchall()
        return [
            WarningRow(
                r[0],
                r[1],
                r[2],
                r[3],
                bool(r[4]),
                r[5],
                r[6],
                r[7],
                [tuple(x) for x in json.loads(r[8])],
                bool(r[9]),
            )
            for r in rows
        ]

    def list_alerts(self, limit: int = 1000) -> list[dict]:
        rows = self.db.execute(
            "SELECT identifier, sender, sent, msg_type, level, asset, warning_type, event_time,"
            " late FROM alerts ORDER BY created_at, identifier LIMIT ?",
            (limit,),
        ).fetchall()
        keys = (
            "identifier",
            "sender",
            "sent",
            "msgType",
            "level",
            "asset",
            "type",
            "event_time",
            "late",
        )
        return [dict(zip(keys, row, strict=True)) | {"late": bool(row[8])} for row in rows]

    def alert_xml(self, identifier: str) -> bytes | None:
        row = self.db.execute(
            "SELECT xml FROM alerts WHERE identifier = ?", (identifier,)
        ).fetchone()
        return row[0].encode() if row else None

    def list_warnings(self) -> list[dict]:
        rows = self.db.execute(
            "SELECT id, asset, warning_type, level, active, raised_event_time,"
            " cleared_event_time, late FROM warnings ORDER BY raised_event_time"
        ).fetchall()
        keys = (
            "id",
            "asset",
            "type",
            "level",
            "active",
            "event_time",
            "cleared_event_time",
            "late",
        )
        return [
            dict(zip(keys, row, strict=True)) | {"active": bool(row[4]), "late": bool(row[7])}
            for row in rows
        ]

    def live_warning_covered(self, asset: str, warning_type: str, t: float) -> bool:
        """Was a live (not late) warning of this kind active at event time ``t``?"""
        row = self.db.execute(
            "SELECT 1 FROM warnings WHERE asset = ? AND warning_type = ? AND late = 0"
            " AND raised_event_time <= ? AND (cleared_event_time IS NULL"
            " OR cleared_event_time >= ?) LIMIT 1",
            (asset, warning_type, t, t),
        ).fetchone()
        return row is not None

    # -- stats ---------------------------------------------------------------------------
    def stats(self) -> dict:
        gateways: dict[str, dict] = {}
        for gw, site, state, epoch, last_seen in self.db.execute(
            "SELECT gateway, site, state, epoch, last_seen FROM gateways"
        ):
            gateways[gw] = {"site": site, "state": state, "epoch": epoch, "last_seen": last_seen}

        def entry(gw: str) -> dict:
            return gateways.setdefault(gw, {"site": None, "state": "unknown"}) | {}

        totals = {"received": 0, "stored": 0, "duplicates": 0, "rejected": 0}
        for gw, dev, received, stored, dups, last_time in self.db.execute(
            "SELECT gateway, device, received, stored, duplicates, last_time FROM device_stats"
        ):
            g = gateways.setdefault(gw, entry(gw))
            g.setdefault("devices", {})[dev] = {
                "received": received,
                "stored": stored,
                "duplicates": dups,
                "last_time": last_time,
            }
            for key, value in (("received", received), ("stored", stored), ("duplicates", dups)):
                g[key] = g.get(key, 0) + value
                totals[key] += value
        for gw, reason, count in self.db.execute("SELECT gateway, reason, count FROM rejections"):
            g = gateways.setdefault(gw, entry(gw))
            g.setdefault("rejected", {})[reason] = count
            totals["rejected"] += count
        for g in gateways.values():
            g.setdefault("devices", {})
            g.setdefault("rejected", {})
            g.setdefault("time_flags", {})
            g.setdefault("status", {})
            for key in ("received", "stored", "duplicates"):
                g.setdefault(key, 0)
        flag_names = {
            TIME_UNSYNCED: "unsynced",
            TIME_CORRECTED: "corrected",
            TIME_IMPLAUSIBLE: "implausible",
        }
        for gw, tq, count in self.db.execute(
            "SELECT gateway, tq, COUNT(*) FROM readings WHERE tq <> 0 GROUP BY gateway, tq"
        ):
            g = gateways.setdefault(gw, entry(gw))
            g.setdefault("time_flags", {})[flag_names.get(tq, str(tq))] = count
        # The gateways' own status records (device "gateway"): the latest value of each.
        for gw, quantity, v, vb, t in self.db.execute(
            "SELECT r.gateway, r.quantity, r.v, r.vb, r.t FROM readings r JOIN ("
            " SELECT gateway, quantity, MAX(t) AS t FROM readings WHERE device = 'gateway'"
            " GROUP BY gateway, quantity) latest ON r.gateway = latest.gateway"
            " AND r.quantity = latest.quantity AND r.t = latest.t WHERE r.device = 'gateway'"
        ):
            g = gateways.setdefault(gw, entry(gw))
            status = g.setdefault("status", {})
            status[quantity] = bool(vb) if vb is not None else v
            status["time"] = max(t, status.get("time", 0.0))
        (n_readings,) = self.db.execute("SELECT COUNT(*) FROM readings").fetchone()
        return {"totals": totals | {"readings_rows": n_readings}, "gateways": gateways}


def _corrections_in(pack: Pack) -> list[tuple[str, int, float, float, float]]:
    """Clock corrections a gateway sent: (gateway, epoch, offset, since, until)."""
    by_name = {
        r.name: r
        for r in pack.records
        if r.name.startswith("gateway/") and r.device == "gateway"  # startswith: cheap first
    }
    offset = by_name.get("gateway/clock_offset")
    since = by_name.get("gateway/clock_unsynced_since")
    if offset is None or since is None:
        return []
    if not isinstance(offset.value, float) or not isinstance(since.value, float):
        return []
    until = offset.time - offset.value  # the sync moment on the unsynchronised scale
    return [(pack.gateway, pack.epoch, offset.value, since.value - 1.0, until + 1.0)]


def _corrected(t: float, known: list[tuple[float, float, float]]) -> tuple[float, int]:
    for offset, since, until in known:
        if since <= t <= until:
            return t + offset, TIME_CORRECTED
    return t, TIME_UNSYNCED
