"""The gateway's durable outbox: SQLite (WAL) holding sealed SenML packs until their PUBACK.

Why packs and not readings: the dedup key (gateway, epoch, seq) names a pack. Sealing the
pack at append time — records grouped, sequence assigned, bytes encoded — means a pack
re-sent after a crash or reconnect is byte-for-byte the same message, so central can drop it
as a duplicate. Each open of the outbox starts a new boot epoch (persisted), so sequence
numbers never collide across restarts even when the previous run crashed mid-epoch.

Eviction policy (stated, counted): when the file's payload bytes exceed ``max_bytes``, the
oldest packs of the *lowest* priority go first (telemetry before events/warnings); packs older
than ``max_age_s`` expire. Nothing else ever deletes a pack except :meth:`Outbox.ack`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from cloud_bridge.senml import Pack, Record, WireFormat, encode_pack

PRIORITY_TELEMETRY = 0
PRIORITY_EVENT = 5
PRIORITY_WARNING = 9

_SCHEMA = """
CREATE TABLE IF NOT EXISTS packs (
    id         INTEGER PRIMARY KEY,
    epoch      INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    priority   INTEGER NOT NULL,
    created    REAL    NOT NULL,
    n_records  INTEGER NOT NULL,
    first_time REAL    NOT NULL,
    payload    BLOB    NOT NULL,
    UNIQUE (epoch, seq)
);
CREATE INDEX IF NOT EXISTS packs_evict ON packs (priority, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

_COUNTERS = (
    "epoch",
    "packs_appended",
    "records_appended",
    "packs_acked",
    "records_acked",
    "packs_evicted",
    "records_evicted",
    "packs_expired",
    "records_expired",
)


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    id: int
    epoch: int
    seq: int
    priority: int
    created: float
    n_records: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class OutboxStats:
    epoch: int
    depth_packs: int
    depth_records: int
    payload_bytes: int
    file_bytes: int
    oldest_age_s: float | None
    packs_appended: int
    records_appended: int
    packs_acked: int
    records_acked: int
    packs_evicted: int
    records_evicted: int
    packs_expired: int
    records_expired: int

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


class Outbox:
    def __init__(
        self,
        path: str | Path,
        gateway: str,
        *,
        max_bytes: int = 256 * 1024 * 1024,
        max_age_s: float | None = None,
        wire_format: WireFormat = "json",
        synchronous: str = "NORMAL",
        clock: Callable[[], float] = time.time,
        new_epoch: bool = True,
    ) -> None:
        self.path = Path(path)
        self.gateway = gateway
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.wire_format: WireFormat = wire_format
        self._clock = clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.executescript(_SCHEMA)
        with self._tx():
            for key in _COUNTERS:
                self._db.execute("INSERT OR IGNORE INTO meta VALUES (?, 0)", (key,))
            if new_epoch:
                self._db.execute("UPDATE meta SET value = value + 1 WHERE key = 'epoch'")
        self.epoch = self._counter("epoch")
        row = self._db.execute(
            "SELECT COALESCE(MAX(seq) + 1, 0) FROM packs WHERE epoch = ?", (self.epoch,)
        ).fetchone()
        self._next_seq: int = row[0]
        self._payload_bytes: int = self._db.execute(
            "SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM packs"
        ).fetchone()[0]
        self._listeners: list[Callable[[], None]] = []

    # -- plumbing -----------------------------------------------------------------------
    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    def _counter(self, key: str) -> int:
        return self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    def _bump(self, **deltas: int) -> None:
        self._db.executemany(
            "UPDATE meta SET value = value + ? WHERE key = ?",
            [(delta, key) for key, delta in deltas.items() if delta],
        )

    def add_listener(self, callback: Callable[[], None]) -> None:
        """``callback`` runs after every append (the uplink uses it to wake up)."""
        self._listeners.append(callback)

    # -- writing ------------------------------------------------------------------------
    def append(
        self, batches: Iterable[Sequence[Record]], priority: int = PRIORITY_TELEMETRY
    ) -> list[tuple[int, int]]:
        """Seal each batch of records into one pack and store them all in one transaction.

        Returns the (epoch, seq) of each pack. Eviction for the byte bound runs in the same
        transaction, so the file never stays above its bound.
        """
        now = self._clock()
        rows = []
        keys = []
        n_records = 0
        for records in batches:
            if not records:
                continue
            pack = Pack(self.gateway, self.epoch, self._next_seq, tuple(records))
            payload = encode_pack(pack, self.wire_format)
            first_time = min(r.time for r in records)
            rows.append(
                (self.epoch, self._next_seq, priority, now, len(records), first_time, payload)
            )
            keys.append((self.epoch, self._next_seq))
            self._next_seq += 1
            n_records += len(records)
        if not rows:
            return []
        payload_bytes = self._payload_bytes
        try:
            with self._tx():
                self._db.executemany(
                    "INSERT INTO packs (epoch, seq, priority, created, n_records, first_time,"
                    " payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._payload_bytes += sum(len(r[-1]) for r in rows)
                self._bump(packs_appended=len(rows), records_appended=n_records)
                if self._payload_bytes > self.max_bytes:
                    self._evict_to_bound()
        except BaseException:
            # Rolled back (disk full, ...): the cached byte count must not keep the lost
            # packs, or every later eviction would delete more than needed.
            self._payload_bytes = payload_bytes
            raise
        for callback in self._listeners:
            callback()
        return keys

    def _evict_to_bound(self) -> None:
        # Oldest of the lowest priority first; chunks keep each DELETE small.
        packs = records = 0
        while self._payload_bytes > self.max_bytes:
            victims = self._db.execute(
                "SELECT id, n_records, LENGTH(payload) FROM packs ORDER BY priority, id LIMIT 64"
            ).fetchall()
            if not victims:
                break
            chosen = []
            for pack_id, n, size in victims:
                if self._payload_bytes <= self.max_bytes:
                    break
                chosen.append((pack_id,))
                self._payload_bytes -= size
                packs += 1
                records += n
            self._db.executemany("DELETE FROM packs WHERE id = ?", chosen)
        self._bump(packs_evicted=packs, records_evicted=records)

    def expire(self) -> int:
        """Drop packs older than ``max_age_s``; returns how many records expired."""
        if self.max_age_s is None:
            return 0
        cutoff = self._clock() - self.max_age_s
        with self._tx():
            row = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(n_records), 0), COALESCE(SUM(LENGTH(payload)), 0)"
                " FROM packs WHERE created < ?",
                (cutoff,),
            ).fetchone()
            if row[0]:
                self._db.execute("DELETE FROM packs WHERE created < ?", (cutoff,))
                self._payload_bytes -= row[2]
                self._bump(packs_expired=row[0], records_expired=row[1])
        return int(row[1])

    # -- reading and acknowledging --------------------------------------------------------
    def peek(self, limit: int, exclude: Iterable[int] = ()) -> list[OutboxEntry]:
        """The next packs to send: highest priority first, then oldest."""
        excluded = tuple(exclude)
        where = f"WHERE id NOT IN ({','.join('?' * len(excluded))})" if excluded else ""
        rows = self._db.execute(
            "SELECT id, epoch, seq, priority, created, n_records, payload FROM packs "
            f"{where} ORDER BY priority DESC, id LIMIT ?",
            (*excluded, limit),
        ).fetchall()
        return [OutboxEntry(*row) for row in rows]

    def ack(self, ids: Sequence[int]) -> int:
        """Delete packs whose PUBACK arrived. Returns how many records that removed."""
        if not ids:
            return 0
        marks = ",".join("?" * len(ids))
        with self._tx():
            row = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(n_records), 0), COALESCE(SUM(LENGTH(payload)), 0)"
                f" FROM packs WHERE id IN ({marks})",
                tuple(ids),
            ).fetchone()
            self._db.execute(f"DELETE FROM packs WHERE id IN ({marks})", tuple(ids))
            self._payload_bytes -= row[2]
            self._bump(packs_acked=row[0], records_acked=row[1])
        return int(row[1])

    def depth(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM packs").fetchone()[0]

    def stats(self) -> OutboxStats:
        depth_packs, depth_records, oldest = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(n_records), 0), MIN(created) FROM packs"
        ).fetchone()
        counters = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        file_bytes = sum(
            p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists()
        )
        return OutboxStats(
            epoch=self.epoch,
            depth_packs=depth_packs,
            depth_records=depth_records,
            payload_bytes=self._payload_bytes,
            file_bytes=file_bytes,
            oldest_age_s=None if oldest is None else max(0.0, self._clock() - oldest),
            **{k: counters.get(k, 0) for k in _COUNTERS if k != "epoch"},
        )

    def close(self) -> None:
        self._db.close()


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on error (the connection is in autocommit)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
                return
            except BaseException:
                self._rollback()  # a failed COMMIT (disk full, I/O) can leave it open
                raise
        self._rollback()

    def _rollback(self) -> None:
        # SQLite may already have rolled back on its own (SQLITE_FULL, SQLITE_IOERR, ...):
        # a second ROLLBACK would fail and hide the original error.
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")


def open_readonly_stats(path: str | Path) -> OutboxStats:
    """Stats of an outbox file without starting a new epoch (for the CLI)."""
    box = Outbox(path, gateway="-", new_epoch=False)
    try:
        return box.stats()
    finally:
        box.close()
